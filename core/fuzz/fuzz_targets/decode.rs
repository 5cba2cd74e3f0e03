//! Fuzzes the SSE decoder: no panic, and these invariants on any input:
//!
//! - the items and last event id do not depend on how the bytes are cut
//!   into chunks (one chunk, byte by byte, fuzzer-chosen cuts);
//! - without limits, the result equals the naive reference interpreter
//!   written from the WHATWG text (`core/tests/sse_support/reference.rs`);
//! - with small limits, the bytes held stay bounded, and a stream that
//!   reports no limit error decodes as it does without limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings_core::sse::{DecodeError, Decoded, Decoder, Limits};

#[path = "../../tests/sse_support/reference.rs"]
mod reference;

use reference::RefItem;

type Items = Vec<Result<Decoded, DecodeError>>;

/// Decodes `stream` cut at the sorted offsets `cuts`; also checks the memory
/// bound after every chunk.
fn decode(limits: Limits, stream: &[u8], cuts: &[usize]) -> (Items, String) {
    let mut decoder = Decoder::new(limits);
    let mut items = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([stream.len()].iter()) {
        items.extend(decoder.feed(&stream[start..cut]));
        start = cut;
        // The id and type are stored decoded: each invalid byte may become a
        // 3-byte U+FFFD.
        let bound = limits.max_line_len * 7 + limits.max_event_len + 1;
        assert!(
            decoder.buffered_len() <= bound,
            "{} > {bound}",
            decoder.buffered_len()
        );
    }
    decoder.finish();
    items.extend(std::iter::from_fn(|| decoder.poll()));
    (items, decoder.last_event_id().to_owned())
}

fn as_ref_items(items: &Items) -> Vec<RefItem> {
    items
        .iter()
        .map(|item| match item {
            Ok(Decoded::Event(e)) => RefItem::Event(
                e.event_type.clone(),
                e.data.clone(),
                e.last_event_id.clone(),
            ),
            Ok(Decoded::Retry(n)) => RefItem::Retry(*n),
            other => panic!("unexpected item {other:?}"),
        })
        .collect()
}

fuzz_target!(|input: &[u8]| {
    // Header: 2 bytes of limits, 1 byte of cut count, then cut offsets.
    let [line, event, ncuts, rest @ ..] = input else {
        return;
    };
    let ncuts = usize::from(*ncuts % 16).min(rest.len() / 2);
    let (cut_bytes, stream) = rest.split_at(ncuts * 2);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let bytewise: Vec<usize> = (1..stream.len()).collect();

    let unlimited = Limits::new(usize::MAX / 8, usize::MAX / 8);
    let whole = decode(unlimited, stream, &[]);
    assert_eq!(decode(unlimited, stream, &cuts), whole, "cuts {cuts:?}");
    assert_eq!(decode(unlimited, stream, &bytewise), whole, "byte by byte");
    assert_eq!(
        (as_ref_items(&whole.0), whole.1.clone()),
        reference::interpret(stream)
    );

    let limits = Limits::new(1 + usize::from(*line % 64), 1 + usize::from(*event % 128));
    let limited = decode(limits, stream, &[]);
    assert_eq!(
        decode(limits, stream, &cuts),
        limited,
        "limited, cuts {cuts:?}"
    );
    assert_eq!(
        decode(limits, stream, &bytewise),
        limited,
        "limited, byte by byte"
    );
    if limited.0.iter().all(Result::is_ok) {
        assert_eq!(limited, whole, "no limit error, yet a different result");
    }
});
