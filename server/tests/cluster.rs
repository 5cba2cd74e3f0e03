//! Cluster mode over real processes: two or three `tidings-server`
//! instances sharing a real Redis (`TIDINGS_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; each test has its own stream key), and a
//! private `redis-server` for the restart test.

mod support_cluster;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support_cluster::*;

#[tokio::test]
async fn a_message_published_on_either_instance_reaches_both_in_the_same_order() {
    let key = KeyGuard::new("order");
    let a = Instance::start(&key.url, &key.key, &[]);
    let b = Instance::start(&key.url, &key.key, &[]);
    assert_eq!(a.health().await, StatusCode::OK);
    assert_eq!(b.health().await, StatusCode::OK);
    let mut on_a = a.subscribe(&["demo:>"], None).await;
    let mut on_b = b.subscribe(&["demo:>"], None).await;
    on_a.connected().await;
    on_b.connected().await;

    // Interleaved publishes on both instances, single and batched, some
    // concurrent: whatever order the stream took, both deliver it.
    let mut published = Vec::new();
    for round in 0..5 {
        let batch = [
            ("demo:b", json!({"from": "b", "round": round, "n": 0})),
            ("demo:b:deep", json!({"from": "b", "round": round, "n": 1})),
        ];
        let (x, y) = tokio::join!(
            a.publish("demo:a", json!({"from": "a", "round": round})),
            b.publish_batch(&batch),
        );
        published.push(x);
        published.extend(y);
    }
    let n = published.len();
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..n {
        let (ea, eb) = (on_a.event().await, on_b.event().await);
        seen_a.push((ea.last_event_id, ea.event_type, ea.data));
        seen_b.push((eb.last_event_id, eb.event_type, eb.data));
    }
    assert_eq!(seen_a, seen_b, "same events in the same order on both");
    let ids: Vec<String> = seen_a.iter().map(|(id, ..)| id.clone()).collect();
    let parsed: Vec<(String, u64)> = ids.iter().map(|id| parse_id(id)).collect();
    assert!(
        parsed
            .windows(2)
            .all(|w| w[0].0 == w[1].0 && w[0].1 + 1 == w[1].1),
        "one epoch, numbered without holes: {ids:?}"
    );
    let mut sorted_published = published.clone();
    sorted_published.sort_by_key(|id| parse_id(id).1);
    assert_eq!(
        ids, sorted_published,
        "exactly the published ids, once each"
    );
    // A batch keeps its order in the stream.
    let batch_pos = |id: &String| ids.iter().position(|x| x == id).unwrap();
    assert!(batch_pos(&published[1]) < batch_pos(&published[2]));
    // Each instance's reader wrote to its waiting stream itself.
    for instance in [&a, &b] {
        assert!(instance.metric("tidings_direct_writes_total").await > 0.0);
    }
}

#[tokio::test]
async fn exclude_names_a_connection_on_another_instance() {
    let key = KeyGuard::new("exclude");
    let a = Instance::start(&key.url, &key.key, &[]);
    let b = Instance::start(&key.url, &key.key, &[]);
    let mut sender = b.subscribe(&["demo:room"], None).await;
    let sender_id = sender.connected().await;
    let mut neighbour = b.subscribe(&["demo:room"], None).await;
    neighbour.connected().await;
    let mut remote = a.subscribe(&["demo:room"], None).await;
    remote.connected().await;

    // Published through the other instance, naming the sender's connection.
    let echo = a
        .publish_as("demo:room", json!("my own echo"), Some(&sender_id))
        .await;
    let marker = a.publish("demo:room", json!("marker")).await;

    assert_eq!(neighbour.ids(2).await, [echo.clone(), marker.clone()]);
    assert_eq!(remote.ids(2).await, [echo, marker.clone()]);
    let first = sender.event().await;
    assert_eq!(first.last_event_id, marker, "the sender skipped its echo");
}

#[tokio::test]
async fn killing_an_instance_mid_stream_its_client_resumes_on_the_other_with_nothing_lost_or_doubled()
 {
    let key = KeyGuard::new("failover");
    let mut a = Instance::start(&key.url, &key.key, &[]);
    let b = Instance::start(&key.url, &key.key, &[]);
    let mut client = a.subscribe(&["demo:feed:*"], None).await;
    client.connected().await;

    // A publisher keeps publishing through B while A dies.
    const TOTAL: usize = 300;
    let publisher = {
        let b_base = b.base.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ids = Vec::with_capacity(TOTAL);
            for i in 0..TOTAL {
                let text = http
                    .post(format!("{b_base}/publish"))
                    .header("content-type", "application/json")
                    .body(json!({"topic": format!("demo:feed:{}", i % 3), "data": i}).to_string())
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let answer: Value = serde_json::from_str(&text).unwrap();
                ids.push(answer["id"].as_str().unwrap().to_owned());
            }
            ids
        })
    };

    let mut received: Vec<(String, String)> = Vec::new();
    while received.len() < TOTAL / 3 {
        let e = client.event().await;
        received.push((e.last_event_id, e.data));
    }
    a.kill();
    // Whatever A had written before it died is still read, then the end.
    while let Some(e) = client.next_event().await {
        received.push((e.last_event_id, e.data));
    }
    let last = received.last().unwrap().0.clone();

    // The browser reconnects to the other instance with Last-Event-ID.
    let mut resumed = b.subscribe(&["demo:feed:*"], Some(&last)).await;
    resumed.connected().await;
    let published = patiently("the publisher", publisher).await.unwrap();
    while received.len() < TOTAL {
        let e = resumed.event().await;
        assert_ne!(
            e.event_type, "tidings.gap",
            "no gap on a resume within history"
        );
        received.push((e.last_event_id, e.data));
    }
    let ids: Vec<String> = received.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, published, "every message once, in publish order");
    let data: Vec<String> = received.iter().map(|(_, d)| d.clone()).collect();
    let expected: Vec<String> = (0..TOTAL).map(|i| i.to_string()).collect();
    assert_eq!(data, expected);
    // Nothing more is queued for it: the next event is a new marker.
    let marker = b.publish("demo:feed:0", json!("marker")).await;
    assert_eq!(resumed.event().await.last_event_id, marker);
}

#[tokio::test]
async fn a_fresh_instance_replays_what_was_published_before_it_started() {
    let key = KeyGuard::new("fresh");
    let a = Instance::start(&key.url, &key.key, &[]);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(a.publish("demo:log", json!(i)).await);
    }
    let late = Instance::start(&key.url, &key.key, &[]);

    // Resume after the third message on the instance that never saw them.
    let mut s = late.subscribe(&["demo:log"], Some(&ids[2])).await;
    s.connected().await;
    assert_eq!(s.ids(3).await, ids[3..]);
    let live = a.publish("demo:log", json!("live")).await;
    let e = s.event().await;
    assert_eq!((e.last_event_id, e.data), (live, "\"live\"".to_owned()));

    // Without an id: only new messages. With an id of an earlier epoch of
    // the log (or any id it cannot place): a gap first.
    let mut fresh = late.subscribe(&["demo:log"], None).await;
    fresh.connected().await;
    let mut old = late.subscribe(&["demo:log"], Some("3k9xq2m1-4")).await;
    old.connected().await;
    assert_eq!(old.event().await.event_type, "tidings.gap");
    let next = a.publish("demo:log", json!("next")).await;
    assert_eq!(fresh.event().await.last_event_id, next);
}

#[tokio::test]
async fn restarting_redis_mid_stream_publish_and_healthz_answer_503_streams_stay_open_then_resume()
{
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let key = unique_key("restart");
    let fast = ["--heartbeat", "200ms"];
    let a = Instance::start(&url, &key, &fast);
    let b = Instance::start(&url, &key, &fast);
    let mut on_a = a.subscribe(&["demo:>"], None).await;
    let mut on_b = b.subscribe(&["demo:>"], None).await;
    on_a.connected().await;
    on_b.connected().await;
    let before = a.publish("demo:x", json!("before")).await;
    assert_eq!(on_a.event().await.last_event_id, before);
    assert_eq!(on_b.event().await.last_event_id, before);

    redis.stop();
    // Publishing cannot be accepted: 503 with the protocol's error body.
    let (status, body) = b.post(&json!({"topic": "demo:x", "data": "lost?"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // Refused before it was sent ("nothing was published"), or sent on a
    // connection that then broke ("may or may not have been published",
    // retry with the same Idempotency-Key): never a silent answer.
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("nothing was published") || message.contains("Idempotency-Key"),
        "{body}"
    );
    assert!(
        !message.contains("127.0.0.1"),
        "no internal address: {body}"
    );
    // A burst of publishes while it is down: every one refused, none lost
    // silently, none hanging.
    let bodies: Vec<Value> = (0..20)
        .map(|i| json!({"topic": "demo:x", "data": i}))
        .collect();
    let burst = bodies.iter().map(|body| b.post(body));
    for (status, body) in futures_util::future::join_all(burst).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    eventually("healthz 503 on both", async || {
        a.health().await == StatusCode::SERVICE_UNAVAILABLE
            && b.health().await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(b.metric("tidings_redis_up").await, 0.0);
    let refused = b
        .metric("tidings_redis_publish_failures_total{kind=\"unavailable\"}")
        .await
        + b.metric("tidings_redis_publish_failures_total{kind=\"uncertain\"}")
            .await;
    assert_eq!(refused, 21.0);
    // The streams stay open: heartbeats keep coming while Redis is away.
    on_a.heartbeats(2).await;
    on_b.heartbeats(2).await;

    // Redis comes back empty (no persistence): a new epoch of the log.
    redis.restart();
    eventually("healthz 200 on both", async || {
        a.health().await == StatusCode::OK && b.health().await == StatusCode::OK
    })
    .await;
    assert_eq!(a.metric("tidings_redis_up").await, 1.0);
    assert!(a.metric("tidings_redis_reader_connects_total").await >= 2.0);
    let after = a.publish("demo:x", json!("after")).await;
    let batch = b
        .publish_batch(&[("demo:y", json!(1)), ("demo:y", json!(2))])
        .await;
    assert_ne!(parse_id(&after).0, parse_id(&before).0, "a new epoch");
    let mut expected = [after.clone(), batch[0].clone(), batch[1].clone()];
    expected.sort_by_key(|id| parse_id(id).1);
    for stream in [&mut on_a, &mut on_b] {
        // Redis lost what it had: the streams that stayed open are told,
        // then get what is published after.
        let gap = stream.event().await;
        assert_eq!(gap.event_type, "tidings.gap", "{gap:?}");
        assert!(gap.data.contains("engine_restarted"), "{gap:?}");
        let got = stream.ids(3).await;
        assert_eq!(got, expected, "delivered on the stream that stayed open");
    }
    // A client of A resumes on B after the restart from an id before it:
    // told, then what the new epoch holds, then live.
    let mut resumed = b.subscribe(&["demo:x"], Some(&before)).await;
    resumed.connected().await;
    assert_eq!(resumed.event().await.event_type, "tidings.gap");
    let next = a.publish("demo:x", json!("next")).await;
    assert_eq!(resumed.ids(2).await, [after.clone(), next]);
}

#[tokio::test]
async fn a_publish_after_redis_closed_the_idle_publisher_connection_still_succeeds() {
    // Redis drops connections idle for a second (its `timeout` setting).
    let redis = PrivateRedis::start_with(&["--timeout", "1"]);
    let url = redis.url();
    let key = unique_key("idle");
    let a = Instance::start(&url, &key, &[]);
    let mut s = a.subscribe(&["demo:idle"], None).await;
    s.connected().await;
    let first = a.publish("demo:idle", json!(1)).await;
    assert_eq!(s.event().await.last_event_id, first);
    // Quiet for longer than Redis keeps idle connections (this is not a
    // timing assertion: it gives Redis's timeout the chance to act). The
    // engine's probe keeps its connection in use, or replaces it.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let second = a.publish("demo:idle", json!(2)).await;
    assert_eq!(s.event().await.last_event_id, second);
}

#[tokio::test]
async fn sigterm_in_cluster_mode_closes_streams_and_exits_0_while_the_other_instance_goes_on() {
    let key = KeyGuard::new("sigterm");
    let mut a = Instance::start(&key.url, &key.key, &[]);
    let b = Instance::start(&key.url, &key.key, &[]);
    let mut on_a = a.subscribe(&["demo:t"], None).await;
    on_a.connected().await;
    let first = b.publish("demo:t", json!(1)).await;
    assert_eq!(on_a.event().await.last_event_id, first);

    let status = tokio::task::spawn_blocking(move || {
        let status = a.terminate();
        (a, status)
    });
    // The stream ends (the server closes it) and the process exits 0.
    assert!(on_a.next_event().await.is_none());
    let (_a, status) = patiently("the exit", status).await.unwrap();
    assert!(status.success(), "{status:?}");
    // The other instance still publishes and serves.
    let mut on_b = b.subscribe(&["demo:t"], Some(&first)).await;
    on_b.connected().await;
    let second = b.publish("demo:t", json!(2)).await;
    assert_eq!(on_b.event().await.last_event_id, second);
}

#[test]
fn an_unreachable_redis_stops_the_start_with_a_clear_error() {
    let port = free_port();
    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--redis", &format!("redis://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach Redis at 127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// An id's epoch and sequence number.
fn parse_id(id: &str) -> (String, u64) {
    let (epoch, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("not a Tidings id: {id}"));
    (epoch.to_owned(), seq.parse().unwrap())
}

#[tokio::test]
async fn a_fresh_instance_replays_more_than_its_queue_from_the_loaded_history_without_a_gap() {
    let key = KeyGuard::new("paged");
    let a = Instance::start(&key.url, &key.key, &[]);
    let first = a.publish("demo:paged:0", json!(-1)).await;
    let mut ids = Vec::new();
    for round in 0..5 {
        let batch: Vec<(String, Value)> = (0..100)
            .map(|i| (format!("demo:paged:{}", i % 3), json!(round * 100 + i)))
            .collect();
        let batch: Vec<(&str, Value)> =
            batch.iter().map(|(t, v)| (t.as_str(), v.clone())).collect();
        ids.extend(a.publish_batch(&batch).await);
    }
    // A queue of 16 and 500 messages to replay, loaded from Redis at start.
    let late = Instance::start(&key.url, &key.key, &["--queue", "16"]);
    let mut s = late.subscribe(&["demo:paged:*"], Some(&first)).await;
    s.connected().await;
    for (n, id) in ids.iter().enumerate() {
        let e = s.event().await;
        assert_eq!(e.event_type, "message", "no gap: {e:?}");
        assert_eq!((&e.last_event_id, e.data), (id, n.to_string()));
    }
    let live = a.publish("demo:paged:1", json!("live")).await;
    assert_eq!(s.event().await.last_event_id, live);
}
