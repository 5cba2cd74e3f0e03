//! Direct writes (`--stream-writer direct`, the default): a lean stream
//! waiting for its next message is written by the publisher itself. Over
//! real HTTP: every message still arrives once and in order, under
//! concurrent publishers and when a client's socket stops taking bytes in
//! the middle of a chunk.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tidings_core::sse::{Decoded, Decoder, Limits};
use tidings_server::config::StreamWriter;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
};

/// Eight publishers at once, three streams (one by a wildcard), each
/// message published while the streams wait for it: every stream gets
/// exactly its messages, in id order. With `direct` the publishers wrote
/// them; with `lean` the streams' tasks did (and nothing counts as direct).
/// (Redis mode's reader writes directly too: `cluster.rs`.)
#[tokio::test]
async fn concurrent_publishers_write_waiting_streams_in_order() {
    for writer in [StreamWriter::Direct, StreamWriter::Lean] {
        let t = start_with(|a| a.stream_writer = writer).await;
        let mut a = t.subscribe(&["demo:dw:a"]).await.unwrap();
        let mut b = t.subscribe(&["demo:dw:b"]).await.unwrap();
        let mut all = t.subscribe(&["demo:dw:*"]).await.unwrap();
        for s in [&mut a, &mut b, &mut all] {
            s.connected().await;
        }
        let publishers = (0..8).map(|p| {
            let t = &t;
            async move {
                let mut ids = Vec::new();
                for n in 0..25 {
                    let topic = if (p + n) % 2 == 0 {
                        "demo:dw:a"
                    } else {
                        "demo:dw:b"
                    };
                    let body = json!({"topic": topic, "data": {"p": p, "n": n}});
                    let answer = t.publish(&body, None).await.unwrap();
                    ids.push((topic, answer["id"].as_str().unwrap().to_owned()));
                    // Some space between publishes: streams go back to waiting.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                ids
            }
        });
        let published: Vec<(&str, String)> = futures_util::future::join_all(publishers)
            .await
            .into_iter()
            .flatten()
            .collect();
        let mut published = published;
        let seq = |id: &str| -> u64 { id.rsplit('-').next().unwrap().parse().unwrap() };
        published.sort_by_key(|(_, id)| seq(id));
        for (stream, want) in [
            (&mut a, Some("demo:dw:a")),
            (&mut b, Some("demo:dw:b")),
            (&mut all, None),
        ] {
            let expected: Vec<&str> = published
                .iter()
                .filter(|(topic, _)| want.is_none_or(|w| w == *topic))
                .map(|(_, id)| id.as_str())
                .collect();
            let mut got = Vec::new();
            while got.len() < expected.len() {
                got.push(stream.event().await.last_event_id);
            }
            assert_eq!(got, expected, "{writer:?}: one each, in id order");
        }
        let direct = t.metric("tidings_direct_writes_total").await;
        match writer {
            StreamWriter::Direct => assert!(direct > 0.0, "no direct write happened"),
            _ => assert_eq!(direct, 0.0, "{writer:?} wrote directly"),
        }
    }
}

/// A publish to more streams than one call writes itself (256): the rest
/// go to tasks on the runtime, and every stream gets every message once,
/// in order, each written directly.
#[tokio::test]
async fn a_publish_to_many_streams_reaches_every_one_of_them() {
    const STREAMS: usize = 300;
    let t = start_with(|a| {
        a.max_connections_per_ip = 1000;
        a.max_tcp_connections_per_ip = Some(1000);
    })
    .await;
    let mut streams = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let mut s = t.subscribe(&["demo:dw:many"]).await.unwrap();
        s.connected().await;
        streams.push(s);
    }
    let first = t.publish_one("demo:dw:many", json!(1)).await;
    // Far enough apart that no stream counts as busy.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = t.publish_one("demo:dw:many", json!(2)).await;
    for s in &mut streams {
        assert_eq!(s.event().await.last_event_id, first);
        assert_eq!(s.event().await.last_event_id, second);
    }
    let direct = t.metric("tidings_direct_writes_total").await;
    assert_eq!(
        direct,
        (2 * STREAMS) as f64,
        "every delivery written directly"
    );
}

/// A client whose socket stops taking bytes: a direct write that the
/// socket takes only part of leaves the rest to the stream's writer, which
/// sends it before anything else. The client then reads a little (room in
/// the socket, though not enough to wake the writer) and more messages
/// come: none of their bytes may land inside the unfinished chunk. The
/// body decodes as well-formed chunks holding every message once, in order.
#[tokio::test]
async fn a_chunk_the_socket_took_only_part_of_is_finished_first() {
    let t = start_with(|a| {
        a.max_body_bytes = 256 * 1024;
        a.queue_bytes = 64 << 20;
        a.heartbeat = Duration::from_secs(60);
        // A stream that is behind stays eligible for direct writes.
        a.busy_write_delay = Duration::ZERO;
    })
    .await;
    let socket = TcpSocket::new_v4().unwrap();
    // A small window: the server's socket fills after a few messages.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(t.server.local_addr()).await.unwrap();
    client
        .write_all(b"GET /events?topic=demo:dw:slow HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !String::from_utf8_lossy(&received).contains("tidings.connected") {
        let n = patiently("the preface", client.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "closed before the preface");
        received.extend_from_slice(&buf[..n]);
    }
    // Large messages, far enough apart that the stream waits for each:
    // direct writes, until one meets the full socket.
    let pad = "x".repeat(100 * 1024);
    let publish = |n: usize| t.publish_one("demo:dw:slow", json!({"n": n, "pad": pad}));
    let mut ids = Vec::new();
    while t.metric("tidings_direct_short_writes_total").await == 0.0 {
        assert!(ids.len() < 400, "no direct write was ever short");
        ids.push(publish(ids.len()).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A little room, then another message, a few times over.
    for _ in 0..10 {
        let mut room = 0;
        while room < 256 * 1024 {
            let n = patiently("some of the stream", client.read(&mut buf))
                .await
                .unwrap();
            assert!(n > 0, "the stream ended");
            received.extend_from_slice(&buf[..n]);
            room += n;
        }
        ids.push(publish(ids.len()).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Read everything: chunks, then events.
    let mut decoder = Decoder::new(Limits::new(1 << 20, 1 << 20));
    let mut events = Vec::new();
    let mut body = Chunks::new(&received);
    while events.len() < ids.len() + 1 {
        for chunk in body.take_chunks() {
            for item in decoder.feed(&chunk) {
                if let Decoded::Event(e) = item.expect("well-formed SSE") {
                    events.push(e);
                }
            }
        }
        if events.len() > ids.len() {
            break;
        }
        let n = patiently("the rest of the stream", client.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "the stream ended after {} events", events.len());
        body.push(&buf[..n]);
    }
    assert_eq!(events[0].event_type, "tidings.connected");
    let got: Vec<&str> = events[1..]
        .iter()
        .map(|e| e.last_event_id.as_str())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for (n, event) in events[1..].iter().enumerate() {
        let value: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(value["n"], json!(n));
        assert_eq!(value["pad"].as_str().unwrap().len(), pad.len());
    }
}

/// An HTTP/1.1 chunked body decoder that fails the test on any framing
/// error (a direct write's bytes between another chunk's would be one).
struct Chunks {
    pending: Vec<u8>,
}

impl Chunks {
    /// Starts after the response head in `received`.
    fn new(received: &[u8]) -> Self {
        let head_end = received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head")
            + 4;
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        Self {
            pending: received[head_end..].to_vec(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The whole chunks received so far.
    fn take_chunks(&mut self) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        loop {
            let Some(line_end) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return chunks;
            };
            let size = std::str::from_utf8(&self.pending[..line_end]).expect("a size line");
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("a hex chunk size, got {size:?}"));
            assert!(size > 0, "the body ended early");
            let start = line_end + 2;
            if self.pending.len() < start + size + 2 {
                return chunks;
            }
            assert_eq!(
                &self.pending[start + size..start + size + 2],
                b"\r\n",
                "a chunk ends with CRLF"
            );
            chunks.push(self.pending[start..start + size].to_vec());
            self.pending.drain(..start + size + 2);
        }
    }
}
