//! Helpers shared by the SSE integration tests.
#![allow(dead_code)]

pub mod reference;

use reference::RefItem;
use tidings_core::sse::{DecodeError, Decoded, Decoder, Limits};

/// Limits no test stream reaches.
pub const UNLIMITED: Limits = Limits::new(usize::MAX / 4, usize::MAX / 4);

/// Decodes `stream` fed in pieces cut at `cuts` (byte offsets, any order),
/// then ends it. Returns the items and the final last event id.
pub fn decode_cut(
    limits: Limits,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<Result<Decoded, DecodeError>>, String) {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    cuts.sort_unstable();
    let mut decoder = Decoder::new(limits);
    let mut items = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        items.extend(decoder.feed(&stream[start..cut]));
        start = cut;
    }
    decoder.finish();
    items.extend(std::iter::from_fn(|| decoder.poll()));
    (items, decoder.last_event_id().to_string())
}

/// Decodes `stream` in one chunk without limits.
pub fn decode(stream: &[u8]) -> Vec<Decoded> {
    decode_cut(UNLIMITED, stream, &[])
        .0
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Decodes `stream` in one chunk, one byte at a time, and at every single
/// cut point; checks all agree and returns the one-chunk result.
pub fn decode_every_way(stream: &[u8]) -> Vec<Decoded> {
    let whole = decode_cut(UNLIMITED, stream, &[]);
    let bytewise: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(
        decode_cut(UNLIMITED, stream, &bytewise),
        whole,
        "byte by byte"
    );
    for cut in 1..stream.len() {
        assert_eq!(decode_cut(UNLIMITED, stream, &[cut]), whole, "cut at {cut}");
    }
    whole.0.into_iter().map(Result::unwrap).collect()
}

/// The decoder's items in the reference interpreter's shape.
pub fn as_ref_items(items: &[Decoded]) -> Vec<RefItem> {
    items
        .iter()
        .map(|item| match item {
            Decoded::Event(e) => RefItem::Event(
                e.event_type.clone(),
                e.data.clone(),
                e.last_event_id.clone(),
            ),
            Decoded::Retry(n) => RefItem::Retry(*n),
            other => panic!("unexpected item {other:?}"),
        })
        .collect()
}

/// Shorthand for an expected event.
pub fn event(event_type: &str, data: &str, last_event_id: &str) -> Decoded {
    Decoded::Event(tidings_core::sse::MessageEvent {
        event_type: event_type.into(),
        data: data.into(),
        last_event_id: last_event_id.into(),
    })
}
