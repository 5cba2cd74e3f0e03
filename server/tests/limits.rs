//! Connection and subscription limits over real HTTP.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test]
async fn too_many_topics_is_400() {
    let t = start_with(|a| a.max_topics = 3).await;
    let r = t
        .subscribe(&["demo:1", "demo:2", "demo:3", "demo:4"])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "too_many_topics");
    t.subscribe(&["demo:1", "demo:2", "demo:3"])
        .await
        .unwrap()
        .connected()
        .await;
    let r = t.subscribe(&[]).await.err().unwrap();
    assert_eq!((r.status.as_u16(), r.code()), (400, "bad_request"));
    let r = t.subscribe(&["demo:>:x"]).await.err().unwrap();
    assert_eq!((r.status.as_u16(), r.code()), (400, "bad_topic"));
    assert!(r.message().contains("last segment"), "{}", r.message());
}

fn from(ip: &str) -> impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder + '_ {
    move |r| r.header("x-forwarded-for", format!("203.0.113.9, {ip}"))
}

#[tokio::test]
async fn per_ip_limit_is_429_with_retry_after_and_frees_on_close() {
    let t = start_with(|a| {
        a.max_connections_per_ip = 2;
        a.trust_forwarded_for = true;
        a.heartbeat = Duration::from_millis(50);
    })
    .await;
    let mut first = t
        .subscribe_with(&["demo:a"], &[], from("10.0.0.1"))
        .await
        .unwrap();
    first.connected().await;
    let mut second = t
        .subscribe_with(&["demo:a"], &[], from("10.0.0.1"))
        .await
        .unwrap();
    second.connected().await;
    let r = t
        .subscribe_with(&["demo:a"], &[], from("10.0.0.1"))
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "too_many_connections");
    assert_eq!(r.headers["retry-after"], "5");
    // Another address is not affected.
    t.subscribe_with(&["demo:a"], &[], from("10.0.0.2"))
        .await
        .unwrap()
        .connected()
        .await;
    // Closing one frees its place (found at the next heartbeat write).
    drop(first);
    eventually("the place to be freed", async || {
        t.subscribe_with(&["demo:a"], &[], from("10.0.0.1"))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn global_limit_is_503_with_retry_after() {
    let t = start_with(|a| a.max_connections = 2).await;
    let mut a = t.subscribe(&["demo:a"]).await.unwrap();
    a.connected().await;
    let mut b = t.subscribe(&["demo:a"]).await.unwrap();
    b.connected().await;
    let r = t.subscribe(&["demo:a"]).await.err().unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.code(), "server_full");
    assert_eq!(r.headers["retry-after"], "5");
    // Publishing is not a stream and still works; the open streams still get it.
    let id = t.publish_one("demo:a", json!(1)).await;
    assert_eq!(a.event().await.last_event_id, id);
    assert_eq!(b.event().await.last_event_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replays_per_ip_are_limited_with_429_and_freed_when_live() {
    let t = start_with(|a| {
        a.max_replays_per_ip = 1;
        a.max_body_bytes = 1 << 20;
    })
    .await;
    // 15 MB of history over 20 topics: more than a stuck socket buffers.
    let first = t.publish_one("demo:r:0", json!(0)).await;
    let pad = "x".repeat(1500);
    for round in 0..100 {
        let batch: Vec<_> = (0..100)
            .map(|i| json!({"topic": format!("demo:r:{}", i % 20), "data": {"n": round * 100 + i, "pad": pad}}))
            .collect();
        t.publish(&json!(batch), None).await.unwrap();
    }

    // A resume that does not read: it stays behind, replaying.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(t.server.local_addr()).await.unwrap();
    let request = format!(
        "GET /events?topic=demo%3Ar%3A*&lastEventId={first} HTTP/1.1\r\nhost: test\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut stuck, request.as_bytes())
        .await
        .unwrap();
    eventually("the stuck resume to be replaying", async || {
        t.metric("tidings_replays").await == 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.metric("tidings_replays").await, 1.0, "still replaying");

    // A second resume from the same address is refused, typed.
    let r = t
        .subscribe_with(&["demo:r:*"], &[("lastEventId", first.as_str())], |r| r)
        .await
        .err()
        .expect("over the replay limit");
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "too_many_replays");
    assert_eq!(r.headers["retry-after"], "5");
    assert!(r.message().contains("limit 1"), "{}", r.message());
    assert_eq!(
        t.metric("tidings_connections").await,
        1.0,
        "refused: no stream left"
    );

    // Live streams, and resumes with nothing to replay, are not replays.
    let mut live = t.subscribe(&["demo:r:*"]).await.unwrap();
    live.connected().await;
    let newest = t.publish_one("demo:r:1", json!("newest")).await;
    let mut caught_up = t
        .subscribe_with(&["demo:r:*"], &[("lastEventId", newest.as_str())], |r| r)
        .await
        .unwrap();
    caught_up.connected().await;

    // The stuck client goes away: its place is free again.
    drop(stuck);
    eventually("the replay place to be freed", async || {
        t.metric("tidings_replays").await == 0.0
    })
    .await;
    let mut again = t
        .subscribe_with(&["demo:r:*"], &[("lastEventId", first.as_str())], |r| r)
        .await
        .unwrap();
    again.connected().await;
    for n in 0..10_000 {
        let event = again.event().await;
        assert_eq!(data(&event)["n"], n, "in order, no gap");
    }
    eventually("the replay to end once live", async || {
        t.metric("tidings_replays").await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_draw_from_the_replay_rate_and_live_messages_are_not_paced() {
    let t = start_with(|a| a.replay_rate = 100).await;
    let first = t.publish_one("demo:p:0", json!(0)).await;
    for round in 0..3 {
        let batch: Vec<_> = (1..=100)
            .map(|i| json!({"topic": "demo:p:1", "data": round * 100 + i}))
            .collect();
        t.publish(&json!(batch), None).await.unwrap();
    }
    let mut live = t.subscribe(&["demo:p:*"]).await.unwrap();
    live.connected().await;

    // 300 to replay at 100 a second, in pages of 64: over two seconds (so
    // the checks below, made right after the first page, find it replaying
    // even on a slow machine).
    let started = std::time::Instant::now();
    let mut resume = t
        .subscribe_with(&["demo:p:*"], &[("lastEventId", first.as_str())], |r| r)
        .await
        .unwrap();
    resume.connected().await;
    for n in 1..=64 {
        assert_eq!(data(&resume.event().await), n, "the first burst, in order");
    }
    // Meanwhile live messages go out at once, to live streams and after
    // the replay to the resuming one.
    let now = t.publish_one("demo:p:2", json!("live")).await;
    assert_eq!(live.event().await.last_event_id, now);
    assert_eq!(t.metric("tidings_replays").await, 1.0, "still replaying");
    for n in 65..=300 {
        assert_eq!(data(&resume.event().await), n, "in order, no gap");
    }
    assert_eq!(resume.event().await.last_event_id, now);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2_300),
        "236 paced messages at 100/s took {took:?}"
    );
    eventually("the replay to end once live", async || {
        t.metric("tidings_replays").await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_of_one_address_share_its_rate_and_another_address_has_its_own() {
    let t = start_with(|a| {
        a.replay_rate = 0; // only the per-address rate paces here
        a.replay_rate_per_ip = 200; // bursts of a page (256)
        a.trust_forwarded_for = true;
    })
    .await;
    let first = t.publish_one("demo:q:0", json!(0)).await;
    let mut ids: Vec<String> = Vec::new();
    for round in 0..3 {
        let batch: Vec<_> = (1..=100)
            .map(|i| json!({"topic": "demo:q:1", "data": round * 100 + i}))
            .collect();
        let answer = t.publish(&json!(batch), None).await.unwrap();
        ids.extend(
            answer["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_owned()),
        );
    }
    let resume = |from_id: &str, ip: &'static str| {
        let from_id = from_id.to_owned();
        let t = &t;
        async move {
            let mut s = t
                .subscribe_with(
                    &["demo:q:*"],
                    &[("lastEventId", from_id.as_str())],
                    from(ip),
                )
                .await
                .unwrap();
            s.connected().await;
            s
        }
    };
    // One address resumes twice (600 messages to replay between them),
    // then another once (200, within its own burst).
    let started = std::time::Instant::now();
    let mut a1 = resume(&first, "198.51.100.1").await;
    let mut a2 = resume(&first, "198.51.100.1").await;
    let b_started = std::time::Instant::now();
    let mut b = resume(&ids[99], "198.51.100.2").await;
    for n in 101..=300 {
        assert_eq!(data(&b.event().await), n, "in order, no gap");
    }
    let b_took = b_started.elapsed();
    for stream in [&mut a1, &mut a2] {
        for n in 1..=300 {
            assert_eq!(data(&stream.event().await), n, "in order, no gap");
        }
    }
    let a_took = started.elapsed();
    // 600 at 200 a second after a burst of 256, in whole pages of 256:
    // three more pages' worth of tokens (1.28 s each) at least twice.
    assert!(
        a_took >= Duration::from_millis(2_400),
        "one address's 600 replayed messages took {a_took:?}"
    );
    assert!(
        b_took < Duration::from_millis(1_000),
        "another address's 200 took {b_took:?}"
    );
}

#[tokio::test]
async fn a_client_looping_resumes_is_refused_before_it_is_placed_and_may_resume_again_later() {
    let t = start_with(|a| a.replay_starts_per_ip = 2).await;
    let first = t.publish_one("demo:s:1", json!(1)).await;
    let newest = t.publish_one("demo:s:1", json!(2)).await;
    let resume = async |from: &str| {
        t.subscribe_with(&["demo:s:>"], &[("lastEventId", from)], |r| r)
            .await
    };

    // Resumes with nothing to replay do not count.
    for _ in 0..5 {
        resume(newest.as_str()).await.unwrap().connected().await;
    }
    // Two replays a second, then the address is told to wait.
    for _ in 0..2 {
        let mut replay = resume(first.as_str()).await.unwrap();
        replay.connected().await;
        assert_eq!(data(&replay.event().await), json!(2));
    }
    let r = resume(first.as_str()).await.err().expect("over the rate");
    assert_eq!((r.status.as_u16(), r.code()), (429, "too_many_replays"));
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.message().contains("limit 2 a second"), "{}", r.message());
    // Any resume waits now, even one with nothing to replay; live
    // streams do not.
    assert_eq!(resume(newest.as_str()).await.err().unwrap().status, 429);
    t.subscribe(&["demo:s:>"]).await.unwrap().connected().await;

    // Half a second gives one replay back.
    tokio::time::sleep(Duration::from_millis(550)).await;
    let mut replay = resume(first.as_str()).await.unwrap();
    replay.connected().await;
    assert_eq!(data(&replay.event().await), json!(2));
    assert_eq!(resume(first.as_str()).await.err().unwrap().status, 429);
}
