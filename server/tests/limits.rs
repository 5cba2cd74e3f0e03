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
