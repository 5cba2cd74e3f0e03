//! The topic and pattern rules of docs/PROTOCOL.md, one test per rule.

use tidings_core::topic::{MAX_TOPIC_LEN, Pattern, Topic, TopicError};

fn t(s: &str) -> Result<Topic, TopicError> {
    Topic::new(s)
}
fn p(s: &str) -> Pattern {
    Pattern::new(s).unwrap()
}

#[test]
fn topic_length_is_1_to_256_bytes() {
    assert_eq!(t(""), Err(TopicError::Empty));
    let longest = "a".repeat(MAX_TOPIC_LEN);
    assert!(t(&longest).is_ok());
    assert_eq!(
        t(&(longest + "b")),
        Err(TopicError::TooLong { len: 257, max: 256 })
    );
}

#[test]
fn topic_is_printable_ascii_without_spaces() {
    assert!(t("order:status:acme:42").is_ok());
    assert!(t("a-b_c.d/e@f!~").is_ok());
    assert_eq!(
        t("a b"),
        Err(TopicError::InvalidByte {
            byte: b' ',
            index: 1
        })
    );
    assert_eq!(
        t("a\tb"),
        Err(TopicError::InvalidByte {
            byte: b'\t',
            index: 1
        })
    );
    assert_eq!(
        t("é"),
        Err(TopicError::InvalidByte {
            byte: 0xc3,
            index: 0
        })
    );
    assert_eq!(
        t("a\u{7f}"),
        Err(TopicError::InvalidByte {
            byte: 0x7f,
            index: 1
        })
    );
}

#[test]
fn segments_are_never_empty() {
    assert_eq!(t(":a"), Err(TopicError::EmptySegment { segment: 0 }));
    assert_eq!(t("a:"), Err(TopicError::EmptySegment { segment: 1 }));
    assert_eq!(t("a::b"), Err(TopicError::EmptySegment { segment: 1 }));
    assert_eq!(
        Pattern::new("a::>"),
        Err(TopicError::EmptySegment { segment: 1 })
    );
}

#[test]
fn wildcards_are_refused_in_published_topics() {
    assert_eq!(t("a:*"), Err(TopicError::WildcardInTopic { index: 2 }));
    assert_eq!(t("a:>"), Err(TopicError::WildcardInTopic { index: 2 }));
    assert_eq!(t("a>b"), Err(TopicError::WildcardInTopic { index: 1 }));
}

#[test]
fn wildcards_are_whole_segments_and_tail_is_last() {
    assert!(Pattern::new("*").is_ok());
    assert!(Pattern::new(">").is_ok());
    assert!(Pattern::new("*:*:>").is_ok());
    assert_eq!(
        Pattern::new("a*"),
        Err(TopicError::PartialWildcard { segment: 0 })
    );
    assert_eq!(
        Pattern::new("a:>b"),
        Err(TopicError::PartialWildcard { segment: 1 })
    );
    assert_eq!(
        Pattern::new(">:a"),
        Err(TopicError::TailNotLast { segment: 0 })
    );
    assert_eq!(
        Pattern::new("a:>:>"),
        Err(TopicError::TailNotLast { segment: 1 })
    );
}

#[test]
fn star_matches_exactly_one_segment() {
    let pat = p("order:*:42");
    assert!(pat.matches(&t("order:acme:42").unwrap()));
    assert!(!pat.matches(&t("order:42").unwrap()));
    assert!(!pat.matches(&t("order:acme:x:42").unwrap()));
}

#[test]
fn tail_matches_one_or_more_trailing_segments() {
    let pat = p("order:>");
    assert!(pat.matches(&t("order:a").unwrap()));
    assert!(pat.matches(&t("order:a:b:c").unwrap()));
    assert!(!pat.matches(&t("order").unwrap()));
    assert!(!pat.matches(&t("orders:a").unwrap()));
}

#[test]
fn literal_patterns_match_only_themselves() {
    let pat = p("order:acme");
    assert!(pat.is_literal());
    assert!(pat.matches(&t("order:acme").unwrap()));
    assert!(!pat.matches(&t("order:acme:1").unwrap()));
    assert!(!pat.matches(&t("order:acm").unwrap()));
}

#[test]
fn covers_is_set_inclusion() {
    // Exhaustive over a small alphabet: covers(a, b) iff every topic b
    // matches is matched by a, checked against every topic of up to 4
    // segments over {x, y}.
    let segs = ["x", "y", "*", ">"];
    let mut patterns = Vec::new();
    for len in 1..=3 {
        let mut idx = vec![0usize; len];
        loop {
            let s: Vec<&str> = idx.iter().map(|&i| segs[i]).collect();
            if let Ok(pat) = Pattern::new(&s.join(":")) {
                patterns.push(pat);
            }
            let mut k = 0;
            while k < len {
                idx[k] += 1;
                if idx[k] < segs.len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
            if k == len {
                break;
            }
        }
    }
    let mut topics = Vec::new();
    for len in 1..=4usize {
        for bits in 0..(1u32 << len) {
            let s: Vec<&str> = (0..len)
                .map(|i| if bits >> i & 1 == 0 { "x" } else { "y" })
                .collect();
            topics.push(Topic::new(&s.join(":")).unwrap());
        }
    }
    for a in &patterns {
        for b in &patterns {
            // Topics up to 4 segments are enough to witness any
            // difference between patterns of up to 3 segments.
            let included = topics
                .iter()
                .all(|topic| !b.matches(topic) || a.matches(topic));
            assert_eq!(a.covers(b), included, "{a} covers {b}?");
        }
    }
}
