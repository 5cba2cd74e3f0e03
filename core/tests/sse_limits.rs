//! The decoder's memory is bounded by its `Limits`: an oversized line or
//! event gets a typed error, is discarded, and the stream goes on.

mod sse_support;

use sse_support::{decode_cut, event};
use tidings_core::sse::{DecodeError, Decoder, Limits};

const LINE_TOO_LONG: DecodeError = DecodeError::LineTooLong { limit: 16 };

fn limits() -> Limits {
    Limits::new(16, 32)
}

/// Decodes `stream` in one chunk, byte by byte and cut at every offset, and
/// checks all agree.
fn decode_every_way(
    limits: Limits,
    stream: &[u8],
) -> Vec<Result<tidings_core::sse::Decoded, DecodeError>> {
    let whole = decode_cut(limits, stream, &[]);
    let bytewise: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(decode_cut(limits, stream, &bytewise), whole, "byte by byte");
    for cut in 1..stream.len() {
        assert_eq!(decode_cut(limits, stream, &[cut]), whole, "cut at {cut}");
    }
    whole.0
}

#[test]
fn a_line_at_the_limit_is_accepted() {
    // "data: " + 10 bytes = 16 bytes.
    assert_eq!(
        decode_every_way(limits(), b"data: 0123456789\r\n\r\n"),
        [Ok(event("message", "0123456789", ""))]
    );
}

#[test]
fn a_line_over_the_limit_discards_its_event_and_the_stream_goes_on() {
    assert_eq!(
        decode_every_way(
            limits(),
            b"id: 1\ndata: a\ndata: 0123456789X\ndata: b\n\ndata: next\n\n"
        ),
        [Err(LINE_TOO_LONG), Ok(event("message", "next", "1"))]
    );
}

#[test]
fn any_long_line_counts_even_a_comment() {
    assert_eq!(
        decode_every_way(limits(), b":0123456789abcdefghij\rdata: x\r\rdata: y\r\r"),
        [Err(LINE_TOO_LONG), Ok(event("message", "y", ""))]
    );
}

#[test]
fn an_overlong_unfinished_line_is_reported_once() {
    let mut decoder = Decoder::new(limits());
    let mut errors = 0;
    for _ in 0..1000 {
        errors += decoder.feed(b"0123456789").filter(Result::is_err).count();
        assert!(decoder.buffered_len() <= 16);
    }
    assert_eq!(errors, 1);
    assert_eq!(
        decoder.feed(b"\n\ndata: ok\n\n").collect::<Vec<_>>(),
        [Ok(event("message", "ok", ""))]
    );
}

#[test]
fn event_data_at_the_limit_is_accepted() {
    // 3 lines of 10 bytes joined by 2 LFs: exactly 32 bytes.
    assert_eq!(
        decode_every_way(
            limits(),
            b"data: 0123456789\ndata: 0123456789\ndata: 0123456789\n\n"
        ),
        [Ok(event(
            "message",
            "0123456789\n0123456789\n0123456789",
            ""
        ))]
    );
}

#[test]
fn event_data_over_the_limit_discards_the_event() {
    assert_eq!(
        decode_every_way(
            limits(),
            b"event: big\ndata: 0123456789\ndata: 0123456789\ndata: 0123456\ndata: more\nid: 5\n\ndata: small\n\n"
        ),
        [
            Err(DecodeError::EventTooLarge { limit: 32 }),
            Ok(event("message", "small", "5"))
        ]
    );
}

#[test]
fn memory_stays_bounded_under_a_flood_of_data_lines() {
    let mut decoder = Decoder::new(limits());
    let mut errors = Vec::new();
    for _ in 0..10_000 {
        errors.extend(decoder.feed(b"data: 0123456789\n").filter_map(Result::err));
        assert!(decoder.buffered_len() <= 16 + 32 + 1);
    }
    assert_eq!(errors, [DecodeError::EventTooLarge { limit: 32 }]);
}

#[test]
fn errors_tell_the_user_what_to_do() {
    assert_eq!(
        LINE_TOO_LONG.to_string(),
        "event stream line longer than 16 bytes; the event was discarded \
         (raise Limits::max_line_len if the server sends longer lines)"
    );
}

mod chunking {
    use super::sse_support::{UNLIMITED, decode_cut};
    use proptest::prelude::*;
    use tidings_core::sse::Limits;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Under limits too, the result does not depend on the chunking,
        /// and a stream that reports no error decodes as without limits.
        #[test]
        fn limits_do_not_depend_on_chunking(
            lines in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["data:", "data: ", "data", "event: ", "id: ", ":", "retry: 1", ""]),
                    proptest::collection::vec(proptest::sample::select(&b"ab \r\n"[..]), 0..40),
                    proptest::sample::select(vec!["\n", "\r", "\r\n"]),
                ),
                0..20,
            ),
            max_line in 1usize..48,
            max_event in 1usize..96,
            cuts in proptest::collection::vec(0usize..800, 0..30),
        ) {
            let mut stream = Vec::new();
            for (field, value, end) in lines {
                stream.extend_from_slice(field.as_bytes());
                stream.extend_from_slice(&value);
                stream.extend_from_slice(end.as_bytes());
            }
            let limits = Limits::new(max_line, max_event);
            let whole = decode_cut(limits, &stream, &[]);
            prop_assert_eq!(&decode_cut(limits, &stream, &cuts), &whole);
            let bytewise: Vec<usize> = (1..stream.len()).collect();
            prop_assert_eq!(&decode_cut(limits, &stream, &bytewise), &whole);
            if whole.0.iter().all(Result::is_ok) {
                prop_assert_eq!(&whole, &decode_cut(UNLIMITED, &stream, &[]));
            }
        }
    }
}
