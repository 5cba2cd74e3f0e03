//! `GET /events` over real HTTP: headers, preface, matching, resume, gap,
//! exclude, heartbeats, the write delays and shutdown.

mod support;

use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn stream_starts_at_once_with_exact_headers_retry_and_connected() {
    let t = start_with(|a| a.retry_ms = 1234).await;
    // Ask for compression: the stream must never be compressed.
    let mut s = t
        .subscribe_with(&["demo:a", "demo:b:*"], &[], |r| {
            r.header("accept-encoding", "gzip, br, deflate")
        })
        .await
        .expect("subscribed");
    assert_eq!(s.headers["content-type"], "text/event-stream");
    assert_eq!(s.headers["cache-control"], "no-cache, no-transform");
    assert_eq!(s.headers["x-accel-buffering"], "no");
    assert!(s.headers.get("content-encoding").is_none());

    assert_eq!(s.next_item().await, Some(Item::Retry(1234)));
    let connected = s.event().await;
    assert_eq!(connected.event_type, "tidings.connected");
    // The first frame carries an id: a stream cut before its first message
    // resumes from it without loss.
    let position = connected.last_event_id.clone();
    assert!(
        position.ends_with("-0"),
        "a fresh server stands at 0: {position}"
    );
    let data = data(&connected);
    let id = data["connectionId"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(data["topics"], json!(["demo:a", "demo:b:*"]));
    // The raw bytes start with the retry field.
    assert!(s.raw.starts_with(b"retry: 1234\n"));
    drop(s);
    let published = t.publish_one("demo:a", json!(1)).await;
    let mut resumed = t
        .subscribe_with(&["demo:a"], &[("lastEventId", position.as_str())], |r| r)
        .await
        .unwrap();
    resumed.connected().await;
    assert_eq!(resumed.event().await.last_event_id, published);
}

#[tokio::test]
async fn multi_topic_and_wildcards_deliver_exactly_the_matching_messages_in_order() {
    let t = start().await;
    let mut s = t
        .subscribe(&["demo:exact", "demo:star:*", "demo:tail:>", "demo:exact"])
        .await
        .unwrap();
    s.connected().await;
    let mut expected = Vec::new();
    for (topic, matches) in [
        ("demo:exact", true),
        ("demo:exact:more", false),
        ("demo:star:1", true),
        ("demo:star:1:2", false),
        ("demo:star", false),
        ("demo:tail:1", true),
        ("demo:tail:1:2:3", true),
        ("demo:tail", false),
        ("demo:other", false),
    ] {
        let id = t.publish_one(topic, json!({"topic": topic})).await;
        if matches {
            expected.push((id, topic));
        }
    }
    for (id, topic) in expected {
        let e = s.event().await;
        assert_eq!(e.last_event_id, id);
        assert_eq!(e.event_type, "message");
        assert_eq!(data(&e), json!({"topic": topic}));
    }
    // Nothing else was queued: the next message is the marker.
    let marker = t.publish_one("demo:exact", json!("marker")).await;
    assert_eq!(s.event().await.last_event_id, marker);
}

#[tokio::test]
async fn message_fields_type_and_compact_data() {
    let t = start().await;
    let mut s = t.subscribe(&["demo:>"]).await.unwrap();
    s.connected().await;
    let body = r#"{"topic":"demo:x","type":"status","data":{ "big": 123456789012345678901234567890, "s": "a\nb" } }"#;
    let answer = t
        .http
        .post(t.url("/publish"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    let id = answer["id"].as_str().unwrap().to_owned();
    let e = s.event().await;
    assert_eq!(e.event_type, "status");
    assert_eq!(e.last_event_id, id);
    assert_eq!(
        e.data,
        r#"{"big":123456789012345678901234567890,"s":"a\nb"}"#
    );
    // One frame: id, event, one data line.
    let frame = format!("id: {id}\nevent: status\ndata: {}\n\n", e.data);
    assert!(s.raw.windows(frame.len()).any(|w| w == frame.as_bytes()));
}

#[tokio::test]
async fn resume_after_reconnect_replays_without_gap_or_duplicate() {
    let t = start().await;
    let mut s = t.subscribe(&["demo:r:>"]).await.unwrap();
    s.connected().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(t.publish_one("demo:r:1", json!(i)).await);
    }
    for id in &ids {
        assert_eq!(&s.event().await.last_event_id, id);
    }
    drop(s);
    // Published while the client is away.
    for i in 3..6 {
        ids.push(t.publish_one(&format!("demo:r:{i}"), json!(i)).await);
    }
    t.publish_one("demo:elsewhere", json!("not for us")).await;

    // Header resume (what browsers send), with a query id that loses.
    let mut s = t
        .subscribe_with(&["demo:r:>"], &[("lastEventId", "1-0")], |r| {
            r.header("last-event-id", ids[2].as_str())
        })
        .await
        .unwrap();
    s.connected().await;
    for (i, id) in ids[3..].iter().enumerate() {
        let e = s.event().await;
        assert_eq!(&e.last_event_id, id, "no gap event, no duplicate");
        assert_eq!(data(&e), json!(i + 3));
    }
    let live = t.publish_one("demo:r:9", json!("live")).await;
    assert_eq!(s.event().await.last_event_id, live);

    // Query resume, when no header is sent.
    let mut s = t
        .subscribe_with(&["demo:r:>"], &[("lastEventId", ids[4].as_str())], |r| r)
        .await
        .unwrap();
    s.connected().await;
    assert_eq!(s.event().await.last_event_id, ids[5]);
    assert_eq!(s.event().await.last_event_id, live);
}

#[tokio::test]
async fn resume_older_than_history_sends_gap_first() {
    let t = start_with(|a| a.history = 2).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(t.publish_one("demo:g", json!(i)).await);
    }
    let mut s = t
        .subscribe_with(&["demo:g"], &[], |r| {
            r.header("last-event-id", ids[0].as_str())
        })
        .await
        .unwrap();
    s.connected().await;
    let gap = s.event().await;
    assert_eq!(gap.event_type, "tidings.gap");
    assert_eq!(data(&gap)["lastEventId"], json!(ids[0]));
    assert_eq!(s.event().await.last_event_id, ids[3]);
    assert_eq!(s.event().await.last_event_id, ids[4]);

    // An id this server never issued (garbage, an earlier process's): a gap
    // too, then what is retained (all of it came after), then live.
    let mut s = t
        .subscribe_with(&["demo:g"], &[], |r| r.header("last-event-id", "not-an-id"))
        .await
        .unwrap();
    s.connected().await;
    let gap = s.event().await;
    assert_eq!(gap.event_type, "tidings.gap");
    assert_eq!(data(&gap)["reason"], "unknown_id");
    assert_eq!(s.event().await.last_event_id, ids[3]);
    assert_eq!(s.event().await.last_event_id, ids[4]);
    let live = t.publish_one("demo:g", json!("live")).await;
    assert_eq!(s.event().await.last_event_id, live);
}

#[tokio::test]
async fn exclude_skips_only_the_named_connection() {
    let t = start().await;
    let mut sender = t.subscribe(&["demo:chat"]).await.unwrap();
    let me = sender.connected().await;
    let mut other = t.subscribe(&["demo:chat"]).await.unwrap();
    other.connected().await;

    let echo = json!({"topic": "demo:chat", "data": "hi", "exclude": me});
    let echo_id = t.publish(&echo, None).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let next = t.publish_one("demo:chat", json!("second")).await;

    assert_eq!(other.event().await.last_event_id, echo_id);
    assert_eq!(other.event().await.last_event_id, next);
    // The sender's first message is the second one: the echo was skipped.
    assert_eq!(sender.event().await.last_event_id, next);
}

#[tokio::test]
async fn idle_streams_get_heartbeat_comments() {
    let t = start_with(|a| a.heartbeat = std::time::Duration::from_millis(50)).await;
    let mut s = t.subscribe(&["demo:quiet"]).await.unwrap();
    s.connected().await;
    let preface = s.raw.len();
    patiently("a heartbeat", async {
        while !s.raw[preface..].windows(3).any(|w| w == b":\n\n") {
            assert!(s.read_chunk().await, "stream ended");
        }
    })
    .await;
}

/// Publishes `n` on `topic`, reads it from `s` (its next event) and
/// returns how long that took from before the publish.
async fn time_one(t: &TestServer, s: &mut SseStream, topic: &str, n: i32) -> std::time::Duration {
    let sent = std::time::Instant::now();
    t.publish_one(topic, json!(n)).await;
    assert_eq!(data(&s.event().await), json!(n));
    sent.elapsed()
}

/// `--write-delay`: what reaches a stream less than the delay after its
/// last write waits for the rest of the delay and goes out in one write;
/// a stream quiet for longer writes at once.
#[tokio::test]
async fn a_write_delay_joins_what_follows_a_write_and_spares_quiet_streams() {
    use std::time::{Duration, Instant};
    let delay = Duration::from_millis(400);
    let t = start_with(|a| a.write_delay = delay).await;
    let mut s = t.subscribe(&["demo:d"]).await.unwrap();
    s.connected().await;
    // The preface was a write: let the stream be quiet for longer.
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    let took = time_one(&t, &mut s, "demo:d", 1).await;
    assert!(
        took < delay / 2,
        "a quiet stream writes at once, took {took:?}"
    );
    let written = Instant::now();
    t.publish_one("demo:d", json!(2)).await;
    t.publish_one("demo:d", json!(3)).await;
    let before = s.raw.len();
    assert!(s.read_chunk().await, "stream ended");
    let waited = written.elapsed();
    // The first write went out before the client read it: allow that.
    assert!(
        waited >= delay - Duration::from_millis(60),
        "the next write came {waited:?} after the last, before the delay"
    );
    let chunk = String::from_utf8_lossy(&s.raw[before..]).into_owned();
    assert!(
        chunk.contains("data: 2\n") && chunk.contains("data: 3\n"),
        "both messages in one write: {chunk:?}"
    );
    assert_eq!(data(&s.event().await), json!(2));
    assert_eq!(data(&s.event().await), json!(3));
}

/// `--busy-write-delay`: without a write delay, a busy stream (its last
/// two writes less than twice the delay apart) waits that long after a
/// write before the next; a stream written after a quiet spell, or whose
/// writes are far apart, writes at once.
#[tokio::test]
async fn a_busy_stream_waits_after_its_last_write_and_a_calm_one_does_not() {
    use std::time::Duration;
    let delay = Duration::from_millis(400);
    let t = start_with(|a| a.busy_write_delay = delay).await;
    let mut s = t.subscribe(&["demo:b"]).await.unwrap();
    s.connected().await;
    // Right after the preface: its second write, not delayed.
    let took = time_one(&t, &mut s, "demo:b", 1).await;
    assert!(took < delay / 2, "took {took:?}");
    // Two writes close together: the third waits out the delay.
    let waited = time_one(&t, &mut s, "demo:b", 2).await;
    // The write before went out before the client read it: allow that.
    assert!(
        waited >= delay - Duration::from_millis(60),
        "a busy stream wrote again {waited:?} after its last write"
    );
    // Quiet for longer than twice the delay: the next write goes at once,
    // and so does the one after it (the two before it were far apart).
    tokio::time::sleep(2 * delay + Duration::from_millis(100)).await;
    for n in [3, 4] {
        let took = time_one(&t, &mut s, "demo:b", n).await;
        assert!(
            took < delay / 2,
            "message {n} of a calm stream waited {took:?}"
        );
    }
}

#[tokio::test]
async fn shutdown_tells_streams_to_retry_soon_then_closes_them() {
    let t = start().await;
    let mut s = t.subscribe(&["demo:bye"]).await.unwrap();
    s.connected().await;
    let id = t.publish_one("demo:bye", json!(1)).await;
    t.server.shutdown().await;
    let rest = s.rest().await;
    assert!(
        matches!(&rest[0], Item::Event(e) if e.last_event_id == id),
        "{rest:?}"
    );
    assert_eq!(rest[1..], [Item::Retry(tidings_server::SHUTDOWN_RETRY_MS)]);
    assert!(s.ended);
}
