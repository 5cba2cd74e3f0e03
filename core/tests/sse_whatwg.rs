//! One test per rule of the WHATWG HTML standard's event stream
//! interpretation (section 9.2.6), quoted where it helps. Every stream is
//! decoded whole, byte by byte and cut at every offset (`decode_every_way`),
//! and the result is also checked against the naive reference interpreter.

mod sse_support;

use sse_support::reference::{RefItem, interpret};
use sse_support::{as_ref_items, decode_every_way, event};
use tidings_core::sse::{Decoded, Decoder};

/// Decodes every way, checks against the reference, returns the items.
fn check(stream: &[u8]) -> Vec<Decoded> {
    let items = decode_every_way(stream);
    assert_eq!(
        as_ref_items(&items),
        interpret(stream).0,
        "reference disagrees"
    );
    items
}

// "The UTF-8 decode algorithm strips one leading UTF-8 Byte Order Mark (BOM),
// if any."
#[test]
fn one_leading_bom_is_stripped() {
    assert_eq!(
        check(b"\xEF\xBB\xBFdata: a\n\n"),
        [event("message", "a", "")]
    );
}

#[test]
fn only_one_bom_is_stripped() {
    // The second BOM is part of the field name "\u{FEFF}data": ignored.
    assert_eq!(check(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"), []);
}

#[test]
fn a_bom_later_in_the_stream_is_text() {
    assert_eq!(
        check(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"),
        [event("message", "a", "")]
    );
}

#[test]
fn the_start_of_a_bom_is_not_dropped() {
    // EF BB then "d" is no BOM: the bytes become U+FFFD in the field name.
    assert_eq!(check(b"\xEF\xBBdata: a\n\n"), []);
    assert_eq!(check(b"\xEFdata: a\n\n"), []);
    assert_eq!(
        check(b"\xEF\xBB:comment\ndata: a\n\n"),
        [event("message", "a", "")]
    );
}

#[test]
fn a_stream_of_only_a_bom_or_part_of_one_yields_nothing() {
    assert_eq!(check(b"\xEF\xBB\xBF"), []);
    assert_eq!(check(b"\xEF\xBB"), []);
}

// "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE
// FEED (CRLF) character pair, a single U+000A LINE FEED (LF) character, or a
// single U+000D CARRIAGE RETURN (CR) character."
#[test]
fn lf_cr_and_crlf_all_end_lines() {
    for stream in [
        &b"data: a\ndata: b\n\n"[..],
        b"data: a\rdata: b\r\r",
        b"data: a\r\ndata: b\r\n\r\n",
        b"data: a\r\ndata: b\r\r\n",
        b"data: a\ndata: b\r\n\r",
    ] {
        assert_eq!(check(stream), [event("message", "a\nb", "")], "{stream:?}");
    }
}

#[test]
fn cr_followed_by_cr_is_two_line_ends() {
    assert_eq!(
        check(b"data: a\r\rdata: b\r\n\r\n"),
        [event("message", "a", ""), event("message", "b", "")]
    );
}

#[test]
fn lf_cr_is_two_line_ends() {
    // LF then CR is not a CRLF pair: the CR ends an empty line.
    assert_eq!(
        check(b"data: a\n\rdata: b\n\n"),
        [event("message", "a", ""), event("message", "b", "")]
    );
}

#[test]
fn a_cr_at_the_end_of_a_chunk_dispatches_at_once() {
    let mut decoder = Decoder::default();
    assert_eq!(decoder.feed(b"data: a\r").count(), 0);
    assert_eq!(
        decoder.feed(b"\r").collect::<Vec<_>>(),
        [Ok(event("message", "a", ""))]
    );
    // The LF that completes the CRLF is swallowed, not an empty line.
    assert_eq!(decoder.feed(b"\ndata: b\r").count(), 0);
    assert_eq!(decoder.feed(b"\n").count(), 0);
    assert_eq!(
        decoder.feed(b"\n").collect::<Vec<_>>(),
        [Ok(event("message", "b", ""))]
    );
}

// "If the line starts with a U+003A COLON character (:) — Ignore the line."
#[test]
fn comments_are_ignored() {
    assert_eq!(
        check(b": hello\n:\ndata: a\n: between\ndata: b\n\n"),
        [event("message", "a\nb", "")]
    );
    assert_eq!(check(b":only a comment\n\n"), []);
}

// "Otherwise, the string is not empty but does not contain a U+003A COLON
// character (:) — Process the field using the whole line as the field name,
// and the empty string as the field value."
//
// The standard's example: "data\n\ndata\ndata\n\ndata:" fires two events, the
// first with empty data, the second with a single newline; the last block is
// discarded because it is not followed by a blank line.
#[test]
fn a_field_without_colon_has_an_empty_value() {
    assert_eq!(
        check(b"data\n\ndata\ndata\n\ndata:"),
        [event("message", "", ""), event("message", "\n", "")]
    );
}

// "If there is a U+0020 SPACE character after the colon, remove it": one
// space only. The standard's example: "data:test" and "data: test" are
// identical events.
#[test]
fn exactly_one_leading_space_is_removed_from_the_value() {
    assert_eq!(
        check(b"data:test\n\ndata: test\n\ndata:  test\n\ndata:\ttest\n\n"),
        [
            event("message", "test", ""),
            event("message", "test", ""),
            event("message", " test", ""),
            event("message", "\ttest", "")
        ]
    );
}

#[test]
fn only_the_first_colon_separates_name_and_value() {
    assert_eq!(check(b"data: a:b: c\n\n"), [event("message", "a:b: c", "")]);
}

// "If the field name is "data": Append the field value to the data buffer,
// then append a single U+000A LINE FEED (LF) character"; at dispatch "If the
// data buffer's last character is a U+000A LINE FEED (LF) character, then
// remove the last character". The standard's example: YHOO / +2 / 10.
#[test]
fn data_lines_are_joined_with_lf() {
    assert_eq!(
        check(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
        [event("message", "YHOO\n+2\n10", "")]
    );
    assert_eq!(
        check(b"data:\ndata:\ndata: x\n\n"),
        [event("message", "\n\nx", "")]
    );
}

// "If the field name is "event": Set the event type buffer to field value";
// "Initialize event's type attribute to "message"" unless the buffer is not
// empty; then "Set the data buffer and the event type buffer to the empty
// string". The standard's add/remove example.
#[test]
fn event_type_applies_to_one_event_then_resets() {
    assert_eq!(
        check(b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\ndata: plain\n\n"),
        [
            event("add", "73857293", ""),
            event("remove", "2153", ""),
            event("add", "113411", ""),
            event("message", "plain", "")
        ]
    );
}

#[test]
fn the_last_event_field_wins_and_an_empty_type_means_message() {
    assert_eq!(
        check(b"event: a\nevent: b\ndata: x\n\nevent\ndata: y\n\nevent: z\nevent:\ndata: w\n\n"),
        [
            event("b", "x", ""),
            event("message", "y", ""),
            event("message", "w", "")
        ]
    );
}

#[test]
fn the_event_type_resets_even_when_nothing_is_dispatched() {
    // "If the data buffer is an empty string, set the data buffer and the
    // event type buffer to the empty string and return."
    assert_eq!(
        check(b"event: lost\n\ndata: x\n\n"),
        [event("message", "x", "")]
    );
}

// The standard's example: ": test stream / data: first event / id: 1 /
// data:second event / id / data:  third event". The first event has last
// event id "1", the second resets it to "", the third has data " third event"
// (one space removed) and an empty id.
#[test]
fn the_standards_last_event_id_example() {
    assert_eq!(
        check(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"),
        [
            event("message", "first event", "1"),
            event("message", "second event", ""),
            event("message", " third event", "")
        ]
    );
}

#[test]
fn the_last_event_id_persists_across_events() {
    assert_eq!(
        check(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n"),
        [
            event("message", "a", "7"),
            event("message", "b", "7"),
            event("message", "c", "8")
        ]
    );
}

// "If the field value does not contain U+0000 NULL, then set the last event
// ID buffer to the field value. Otherwise, ignore the field."
#[test]
fn an_id_with_nul_is_ignored() {
    assert_eq!(
        check(b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\nid: \0\ndata: c\n\n"),
        [
            event("message", "a", "1"),
            event("message", "b", "1"),
            event("message", "c", "1")
        ]
    );
}

#[test]
fn nul_elsewhere_is_kept() {
    assert_eq!(check(b"event: \0\ndata: \0\n\n"), [event("\0", "\0", "")]);
}

// Dispatch step 1 sets the event source's last event ID string before the
// empty-data check, so an id takes effect at its blank line even without
// data, and not before.
#[test]
fn the_reported_last_event_id_changes_at_each_blank_line() {
    let mut decoder = Decoder::default();
    let _ = decoder.feed(b"id: 1\n");
    assert_eq!(decoder.last_event_id(), "");
    let _ = decoder.feed(b"\n");
    assert_eq!(decoder.last_event_id(), "1");
    let _ = decoder.feed(b"id\n\n");
    assert_eq!(decoder.last_event_id(), "");
}

// "If the field value consists of only ASCII digits, then interpret the field
// value as an integer in base ten, and set the event stream's reconnection
// time to that integer. Otherwise, ignore the field."
#[test]
fn retry_is_taken_only_when_all_ascii_digits() {
    assert_eq!(
        check(b"retry: 1000\nretry:0\nretry: 10a\nretry: -1\nretry: 1.5\nretry:  5\nretry\nretry:\nretry: \xD9\xA1\n"),
        [Decoded::Retry(1000), Decoded::Retry(0)]
    );
}

#[test]
fn retry_does_not_need_an_event_and_is_remembered() {
    let mut decoder = Decoder::default();
    assert_eq!(
        decoder.feed(b"retry: 50\ndata: x\n\n").collect::<Vec<_>>(),
        [Ok(Decoded::Retry(50)), Ok(event("message", "x", ""))]
    );
    let _ = decoder.feed(b"retry: nope\n");
    assert_eq!(decoder.retry(), Some(50));
}

#[test]
fn a_huge_retry_saturates() {
    assert_eq!(
        check(b"retry: 99999999999999999999999\n"),
        [Decoded::Retry(u64::MAX)]
    );
}

// "Otherwise: The field is ignored." Field names are case-sensitive.
#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        check(b"foo: bar\nData: no\nDATA: no\n data: no\ndata : no\ndata: yes\n\n"),
        [event("message", "yes", "")]
    );
}

// "If the data buffer is an empty string, set the data buffer and the event
// type buffer to the empty string and return."
#[test]
fn nothing_is_dispatched_without_data() {
    assert_eq!(
        check(b"id: 1\nevent: x\nretry: 5\n\n\n\n"),
        [Decoded::Retry(5)]
    );
}

// "Once the end of the file is reached, any pending data must be discarded.
// (If the file ends in the middle of an event, before the final empty line,
// the incomplete event is not dispatched.)"
#[test]
fn an_unfinished_event_at_the_end_is_discarded() {
    assert_eq!(check(b"data: a\n\ndata: b\n"), [event("message", "a", "")]);
    assert_eq!(check(b"data: a\n\ndata: b"), [event("message", "a", "")]);
    assert_eq!(
        check(b"data: a\n\ndata: b\n\r"),
        [event("message", "a", ""), event("message", "b", "")]
    );
}

#[test]
fn an_unterminated_last_line_is_not_interpreted() {
    let mut decoder = Decoder::default();
    assert_eq!(decoder.feed(b"retry: 10").count(), 0);
    decoder.finish();
    assert_eq!(decoder.poll(), None);
    assert_eq!(decoder.retry(), None);
}

#[test]
fn after_finish_a_new_stream_starts_clean_but_keeps_the_last_event_id() {
    let mut decoder = Decoder::default();
    let _ = decoder.feed(b"id: 1\ndata: a\n\nevent: t\nid: 2\ndata: b");
    decoder.finish();
    let items: Vec<_> = std::iter::from_fn(|| decoder.poll()).collect();
    assert_eq!(items, [Ok(event("message", "a", "1"))]);
    // A new stream may start with a BOM again; the unfinished event is gone.
    let items: Vec<_> = decoder.feed(b"\xEF\xBB\xBFdata: c\n\n").collect();
    assert_eq!(items, [Ok(event("message", "c", "1"))]);
}

// Streams are decoded as UTF-8 with replacement: each maximal invalid
// subpart becomes one U+FFFD.
#[test]
fn invalid_utf8_becomes_replacement_characters() {
    assert_eq!(
        check(b"data: a\xFFb\n\n"),
        [event("message", "a\u{FFFD}b", "")]
    );
    assert_eq!(
        check(b"data: \xC3\n\nevent: \xE2\x82\ndata: \xF0\x9F\x98\xC3\xA9\n\n"),
        [
            event("message", "\u{FFFD}", ""),
            event("\u{FFFD}", "\u{FFFD}\u{e9}", "")
        ]
    );
    assert_eq!(
        check(b"id: \xED\xA0\x80\ndata: \xC0\xAF\n\n"),
        [event(
            "message",
            "\u{FFFD}\u{FFFD}",
            "\u{FFFD}\u{FFFD}\u{FFFD}"
        )]
    );
}

#[test]
fn a_multibyte_character_split_across_chunks_survives() {
    // decode_every_way cuts inside each of these characters.
    assert_eq!(
        check("event: é\ndata: 日本 🦀\nid: ü\n\n".as_bytes()),
        [event("é", "日本 🦀", "ü")]
    );
}

#[test]
fn reference_and_decoder_agree_on_a_mixed_stream() {
    let stream = b"\xEF\xBB\xBF: hi\r\nretry: 3000\r\nid: a\rdata\r\n\rdata: x\r\n\r\nevent: e\ndata: y\ndata:z\n\nid: \x00\n\n";
    let items = check(stream);
    assert_eq!(
        as_ref_items(&items),
        [
            RefItem::Retry(3000),
            RefItem::Event("message".into(), "".into(), "a".into()),
            RefItem::Event("message".into(), "x".into(), "a".into()),
            RefItem::Event("e".into(), "y\nz".into(), "a".into()),
        ]
    );
}
