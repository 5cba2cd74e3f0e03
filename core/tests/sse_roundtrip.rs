//! Property tests: whatever the encoder writes, the decoder gives back, under
//! any split of the bytes into chunks; and on arbitrary bytes the decoder
//! agrees with the naive reference interpreter of the standard.

mod sse_support;

use proptest::prelude::*;
use sse_support::reference::interpret;
use sse_support::{UNLIMITED, as_ref_items, decode_cut, event};
use tidings_core::sse::{Decoded, Event, HEARTBEAT, encode_comment, encode_retry};

/// Characters that stress the format: line breaks, colon, space, NUL, BOM,
/// multi-byte characters, and anything else.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'z'),
        2 => Just('\n'),
        2 => Just('\r'),
        1 => Just(':'),
        1 => Just(' '),
        1 => Just('\0'),
        1 => Just('\u{FEFF}'),
        1 => Just('é'),
        1 => Just('🦀'),
        2 => any::<char>(),
    ]
}

fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(tricky_char(), 0..max).prop_map(|c| c.into_iter().collect())
}

/// A string the encoder accepts as an id (no CR, LF or NUL).
fn safe_id() -> impl Strategy<Value = String> {
    tricky_string(12).prop_map(|s| s.replace(['\r', '\n', '\0'], "_"))
}

/// A string the encoder accepts as an event type (no CR or LF).
fn safe_type() -> impl Strategy<Value = String> {
    tricky_string(12).prop_map(|s| s.replace(['\r', '\n'], "_"))
}

#[derive(Debug, Clone)]
struct OwnedEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
    retry: Option<u64>,
}

impl OwnedEvent {
    fn as_event(&self) -> Event<'_> {
        Event {
            id: self.id.as_deref(),
            event: self.event.as_deref(),
            data: &self.data,
            retry: self.retry,
        }
    }
}

fn owned_event() -> impl Strategy<Value = OwnedEvent> {
    (
        proptest::option::of(safe_id()),
        proptest::option::of(safe_type()),
        tricky_string(40),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(id, event, data, retry)| OwnedEvent {
            id,
            event,
            data,
            retry,
        })
}

#[derive(Debug, Clone)]
enum Frame {
    Event(OwnedEvent),
    Comment(String),
    Retry(u64),
    Heartbeat,
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        6 => owned_event().prop_map(Frame::Event),
        1 => tricky_string(20).prop_map(Frame::Comment),
        1 => any::<u64>().prop_map(Frame::Retry),
        1 => Just(Frame::Heartbeat),
    ]
}

/// Encodes frames; returns the bytes and the items a decoder must produce.
fn encode_frames(frames: &[Frame]) -> (Vec<u8>, Vec<Decoded>, String) {
    let mut out = Vec::new();
    let mut expected = Vec::new();
    let mut last_id = String::new();
    for frame in frames {
        match frame {
            Frame::Event(e) => {
                e.as_event().encode(&mut out).expect("safe event");
                if let Some(retry) = e.retry {
                    expected.push(Decoded::Retry(retry));
                }
                if let Some(id) = &e.id {
                    last_id.clone_from(id);
                }
                let event_type = match e.event.as_deref() {
                    None | Some("") => "message",
                    Some(t) => t,
                };
                // The format carries line breaks as separate lines: CRLF and
                // CR come back as LF.
                let data = e.data.replace("\r\n", "\n").replace('\r', "\n");
                expected.push(event(event_type, &data, &last_id));
            }
            Frame::Comment(text) => encode_comment(text, &mut out),
            Frame::Retry(millis) => {
                encode_retry(*millis, &mut out);
                expected.push(Decoded::Retry(*millis));
            }
            Frame::Heartbeat => out.extend_from_slice(HEARTBEAT),
        }
    }
    (out, expected, last_id)
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..4096, 0..24)
}

fn ok_items(stream: &[u8], cuts: &[usize]) -> (Vec<Decoded>, String) {
    let (items, last_id) = decode_cut(UNLIMITED, stream, cuts);
    (items.into_iter().map(Result::unwrap).collect(), last_id)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_event_round_trips_under_any_chunking(e in owned_event(), cuts in cuts()) {
        let (bytes, expected, last_id) = encode_frames(&[Frame::Event(e.clone())]);
        prop_assert_eq!(e.as_event().encoded_len().unwrap(), bytes.len());
        prop_assert_eq!(ok_items(&bytes, &cuts), (expected, last_id));
    }

    #[test]
    fn any_event_round_trips_byte_by_byte(e in owned_event()) {
        let (bytes, expected, last_id) = encode_frames(&[Frame::Event(e)]);
        let every: Vec<usize> = (1..bytes.len()).collect();
        prop_assert_eq!(ok_items(&bytes, &every), (expected, last_id));
    }

    #[test]
    fn any_sequence_round_trips_under_any_chunking(
        frames in proptest::collection::vec(frame(), 0..12),
        cuts in cuts(),
    ) {
        let (bytes, expected, last_id) = encode_frames(&frames);
        prop_assert_eq!(ok_items(&bytes, &cuts), (expected, last_id));
    }

    #[test]
    fn a_forging_id_or_type_is_refused(
        prefix in safe_id(),
        suffix in safe_id(),
        bad in prop_oneof![Just("\n"), Just("\r"), Just("\r\n"), Just("\0")],
        in_type in any::<bool>(),
    ) {
        let field = format!("{prefix}{bad}{suffix}");
        let event = if in_type && bad != "\0" {
            Event::new("x").with_event(&field)
        } else {
            Event::new("x").with_id(&field)
        };
        let mut out = b"kept".to_vec();
        prop_assert!(event.encode(&mut out).is_err());
        prop_assert_eq!(out, b"kept");
    }

    #[test]
    fn arbitrary_bytes_decode_as_the_reference_says(
        stream in proptest::collection::vec(
            prop_oneof![
                3 => proptest::sample::select(&b"\r\n: dataeventidretry0123456789"[..]),
                1 => proptest::sample::select(&[0xEFu8, 0xBB, 0xBF, 0xC3, 0xA9, 0xFF, 0x80, 0][..]),
                1 => any::<u8>(),
            ],
            0..300,
        ),
        cuts in proptest::collection::vec(0usize..300, 0..20),
    ) {
        let (items, last_id) = ok_items(&stream, &cuts);
        prop_assert_eq!((as_ref_items(&items), last_id), interpret(&stream));
    }

    #[test]
    fn sse_shaped_text_decodes_as_the_reference_says(
        lines in proptest::collection::vec(
            (
                proptest::sample::select(vec!["data", "data:", "data: ", "event:", "id:", "id: ", "retry:", "retry: ", ":", "", "x:", "data:  "]),
                tricky_string(6),
                proptest::sample::select(vec!["\n", "\r", "\r\n", "\n\n", "\r\n\r\n", "\r\r"]),
            ),
            0..30,
        ),
        bom in any::<bool>(),
        cuts in proptest::collection::vec(0usize..600, 0..20),
    ) {
        let mut stream = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
        for (field, value, end) in lines {
            stream.extend_from_slice(field.as_bytes());
            stream.extend_from_slice(value.as_bytes());
            stream.extend_from_slice(end.as_bytes());
        }
        let (items, last_id) = ok_items(&stream, &cuts);
        prop_assert_eq!((as_ref_items(&items), last_id), interpret(&stream));
    }
}
