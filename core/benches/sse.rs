//! SSE codec throughput, next to the `eventsource-stream` crate's decoder.
//!
//! Run: `cargo bench -p tidings-core --bench sse`
//!
//! Every decoder case feeds the same bytes in the same chunks to both
//! decoders and takes every event out. Chunk sizes: 4 KiB for small events
//! (a typical socket read on a busy stream), 64 KiB for large events, and
//! 16 KiB for one 1 MiB or 8 MiB data line (where a decoder that re-scans
//! the partial line per chunk goes quadratic).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use tidings_core::sse::{Decoded, Decoder, Event, Limits};

/// Room for the largest case (an 8 MiB line).
const LIMITS: Limits = Limits::new(16 << 20, 16 << 20);

/// A typical published message: id, type and compact JSON.
fn small_event(n: usize) -> Vec<u8> {
    let data = format!(
        r#"{{"order":{n},"state":"shipped","carrier":"acme","at":"2026-11-23T12:00:00Z"}}"#
    );
    let id = format!("{n}");
    Event::new(&data)
        .with_id(&id)
        .with_event("status")
        .to_vec()
        .unwrap()
}

/// `count` events whose data is one line of `len` JSON-ish bytes.
fn large_events(count: usize, len: usize) -> Vec<u8> {
    let data: String = "{\"blob\":\""
        .chars()
        .chain((0..len - 11).map(|i| char::from(b'a' + (i % 26) as u8)))
        .chain("\"}".chars())
        .collect();
    let mut out = Vec::new();
    for n in 0..count {
        Event::new(&data)
            .with_id(&n.to_string())
            .encode(&mut out)
            .unwrap();
    }
    out
}

/// Decodes with tidings-core; returns the number of events.
fn decode_tidings(chunks: &[&[u8]]) -> usize {
    let mut decoder = Decoder::new(LIMITS);
    let mut events = 0;
    for chunk in chunks {
        for item in decoder.feed(chunk) {
            if let Decoded::Event(event) = item.unwrap() {
                black_box(&event);
                events += 1;
            }
        }
    }
    decoder.finish();
    events
}

/// Decodes with eventsource-stream; returns the number of events.
fn decode_eventsource_stream(chunks: &[&[u8]]) -> usize {
    let stream = futures::stream::iter(chunks.iter().map(Ok::<_, ()>)).eventsource();
    futures::executor::block_on(stream.fold(0, |events, event| {
        black_box(&event.unwrap());
        async move { events + 1 }
    }))
}

fn decode_case(c: &mut Criterion, name: &str, stream: &[u8], chunk: usize, events: usize) {
    let chunks: Vec<&[u8]> = stream.chunks(chunk).collect();
    assert_eq!(decode_tidings(&chunks), events);
    assert_eq!(decode_eventsource_stream(&chunks), events);
    let mut group = c.benchmark_group(format!("decode/{name}"));
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("tidings-core", |b| b.iter(|| decode_tidings(&chunks)));
    group.bench_function("eventsource-stream", |b| {
        b.iter(|| decode_eventsource_stream(&chunks))
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let small: Vec<u8> = (0..10_000).flat_map(small_event).collect();
    decode_case(c, "small_events_4KiB_chunks", &small, 4 << 10, 10_000);
    decode_case(
        c,
        "64KiB_events_64KiB_chunks",
        &large_events(32, 64 << 10),
        64 << 10,
        32,
    );
    decode_case(
        c,
        "1MiB_events_64KiB_chunks",
        &large_events(4, 1 << 20),
        64 << 10,
        4,
    );
    decode_case(
        c,
        "1MiB_line_16KiB_chunks",
        &large_events(1, 1 << 20),
        16 << 10,
        1,
    );

    // One 8 MiB line in 16 KiB chunks: eventsource-stream re-parses the
    // partial line per chunk and needs seconds per run, too long for
    // criterion's ten samples, so it is timed once here.
    let line = large_events(1, 8 << 20);
    let chunks: Vec<&[u8]> = line.chunks(16 << 10).collect();
    // Set SSE_BENCH_SKIP_SLOW=1 to skip it (when profiling one case).
    if std::env::var_os("SSE_BENCH_SKIP_SLOW").is_none() {
        let start = Instant::now();
        assert_eq!(decode_eventsource_stream(&chunks), 1);
        let elapsed = start.elapsed();
        println!(
            "decode/8MiB_line_16KiB_chunks/eventsource-stream: one run {:.2} s = {:.2} MiB/s",
            elapsed.as_secs_f64(),
            line.len() as f64 / elapsed.as_secs_f64() / f64::from(1 << 20)
        );
    }
    let mut group = c.benchmark_group("decode/8MiB_line_16KiB_chunks");
    group.throughput(Throughput::Bytes(line.len() as u64));
    group.bench_function("tidings-core", |b| b.iter(|| decode_tidings(&chunks)));
    group.finish();

    // Only ours: tiny chunks (eventsource-stream would take many minutes).
    let chunks: Vec<&[u8]> = line.chunks(64).collect();
    let mut group = c.benchmark_group("decode/8MiB_line_64B_chunks");
    group.throughput(Throughput::Bytes(line.len() as u64));
    group.bench_function("tidings-core", |b| b.iter(|| decode_tidings(&chunks)));
    group.finish();
}

fn encode(c: &mut Criterion) {
    let data = r#"{"order":12345,"state":"shipped","carrier":"acme","at":"2026-11-23T12:00:00Z"}"#;
    let small = Event::new(data).with_id("12345").with_event("status");
    let big_data: String = "x".repeat(64 << 10);
    let big = Event::new(&big_data).with_id("1").with_event("blob");
    let lines_data: String =
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n".repeat(1024);
    let lines = Event::new(&lines_data).with_id("1");

    let mut group = c.benchmark_group("encode");
    for (name, event) in [
        ("small_event", small),
        ("64KiB_one_line", big),
        ("64KiB_1024_lines", lines),
    ] {
        group.throughput(Throughput::Bytes(event.encoded_len().unwrap() as u64));
        group.bench_with_input(BenchmarkId::new("to_vec", name), &event, |b, event| {
            b.iter(|| black_box(event.to_vec().unwrap()))
        });
        let mut out = Vec::with_capacity(event.encoded_len().unwrap());
        group.bench_with_input(
            BenchmarkId::new("encode_into_reused_vec", name),
            &event,
            |b, event| {
                b.iter(|| {
                    out.clear();
                    event.encode(&mut out).unwrap();
                    black_box(&out);
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = decode, encode
}
criterion_main!(benches);
