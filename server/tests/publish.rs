//! `POST /publish` over real HTTP: answers, defaults and every error code;
//! the server keeps serving after each bad request.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

async fn post_raw(
    t: &TestServer,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = t.http.post(t.url("/publish")).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn still_serving(t: &TestServer) {
    let health = t.http.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    t.publish_one("demo:alive", json!(true)).await;
}

#[tokio::test]
async fn single_and_batch_answers_with_ids_in_order() {
    let t = start().await;
    let mut s = t.subscribe(&["demo:>"]).await.unwrap();
    s.connected().await;
    let one = t
        .publish(&json!({"topic": "demo:a", "data": {"n": 1}}), None)
        .await
        .unwrap();
    let one = one["id"].as_str().unwrap().to_owned();
    let batch = json!([
        {"topic": "demo:b", "type": "created", "data": [1]},
        {"topic": "demo:c"},
        {"topic": "demo:d", "data": null, "type": "x.y"}
    ]);
    let many = t.publish(&batch, None).await.unwrap();
    let ids: Vec<String> = many["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let mut all = vec![one.clone()];
    all.extend(ids.iter().cloned());
    let parsed: Vec<tidings_core::message::MessageId> =
        all.iter().map(|i| i.parse().unwrap()).collect();
    assert!(
        parsed
            .windows(2)
            .all(|w| w[0].epoch == w[1].epoch && w[0].seq + 1 == w[1].seq),
        "one epoch, numbered without holes: {all:?}"
    );

    let e = s.event().await;
    assert_eq!(
        (
            e.last_event_id.as_str(),
            e.event_type.as_str(),
            e.data.as_str()
        ),
        (one.as_str(), "message", r#"{"n":1}"#)
    );
    let e = s.event().await;
    assert_eq!((e.event_type.as_str(), e.data.as_str()), ("created", "[1]"));
    let e = s.event().await;
    assert_eq!(
        (e.event_type.as_str(), e.data.as_str()),
        ("message", "null")
    );
    let e = s.event().await;
    assert_eq!(
        (e.last_event_id.as_str(), e.event_type.as_str()),
        (ids[2].as_str(), "x.y")
    );
}

#[tokio::test]
async fn every_bad_request_gets_its_code_and_the_server_keeps_serving() {
    let t = start_with(|a| {
        a.max_batch = 3;
        a.max_body_bytes = 1000;
    })
    .await;
    let json_ct = Some("application/json");
    let long_topic = format!("demo:{}", "x".repeat(300));
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        ("not json", json_ct, "{nope".into(), 400, "bad_request"),
        ("wrong shape", json_ct, "42".into(), 400, "bad_request"),
        (
            "missing topic",
            json_ct,
            r#"{"data":1}"#.into(),
            400,
            "bad_request",
        ),
        (
            "unknown field",
            json_ct,
            r#"{"topic":"demo:a","event":"x"}"#.into(),
            400,
            "bad_request",
        ),
        ("empty batch", json_ct, "[]".into(), 400, "bad_request"),
        (
            "wildcard topic",
            json_ct,
            r#"{"topic":"demo:*"}"#.into(),
            400,
            "bad_topic",
        ),
        (
            "tail topic",
            json_ct,
            r#"{"topic":"demo:>"}"#.into(),
            400,
            "bad_topic",
        ),
        (
            "empty segment",
            json_ct,
            r#"{"topic":"demo::a"}"#.into(),
            400,
            "bad_topic",
        ),
        (
            "space",
            json_ct,
            r#"{"topic":"demo:a b"}"#.into(),
            400,
            "bad_topic",
        ),
        (
            "empty topic",
            json_ct,
            r#"{"topic":""}"#.into(),
            400,
            "bad_topic",
        ),
        (
            "long topic",
            json_ct,
            json!({"topic": long_topic}).to_string(),
            400,
            "bad_topic",
        ),
        (
            "reserved type",
            json_ct,
            r#"{"topic":"demo:a","type":"tidings.gap"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "line break in type",
            json_ct,
            r#"{"topic":"demo:a","type":"a\nb"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "batch too long",
            json_ct,
            json!([{"topic":"demo:a"},{"topic":"demo:a"},{"topic":"demo:a"},{"topic":"demo:a"}])
                .to_string(),
            413,
            "batch_too_large",
        ),
        (
            "body too big",
            json_ct,
            json!({"topic":"demo:a","data":"x".repeat(2000)}).to_string(),
            413,
            "payload_too_large",
        ),
        (
            "no content type",
            None,
            r#"{"topic":"demo:a"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            "form content type",
            Some("text/plain"),
            r#"{"topic":"demo:a"}"#.into(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (name, ct, body, status, code) in cases {
        let (got, _, answer) = post_raw(&t, ct, body).await;
        assert_eq!(got.as_u16(), status, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{name}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        still_serving(&t).await;
    }
    // The topic error says what is wrong.
    let (_, _, answer) = post_raw(&t, json_ct, r#"{"topic":"demo:*"}"#).await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only allowed in subscription patterns"),
        "{answer}"
    );

    // A chunked body without Content-Length over the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 100])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (got, _, answer) = post_raw(&t, json_ct, body).await;
    assert_eq!(got, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
    still_serving(&t).await;

    // `charset` is fine.
    let (got, _, _) = post_raw(
        &t,
        Some("application/json; charset=utf-8"),
        r#"{"topic":"demo:a"}"#,
    )
    .await;
    assert_eq!(got, 200);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let t = start().await;
    let r = t.http.get(t.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let r = t.http.get(t.url("/publish")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    still_serving(&t).await;
}

#[tokio::test]
async fn healthz_and_metrics() {
    let t = start().await;
    let r = t.http.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut s = t.subscribe(&["demo:m", "demo:n:*"]).await.unwrap();
    s.connected().await;
    t.publish_one("demo:m", json!(1)).await;
    s.event().await;
    assert_eq!(t.metric("tidings_connections").await, 1.0);
    assert_eq!(t.metric("tidings_subscriptions").await, 2.0);
    assert_eq!(t.metric("tidings_messages_published_total").await, 1.0);
    eventually("a delivery counted", async || {
        t.metric("tidings_messages_delivered_total").await == 1.0
    })
    .await;
    assert_eq!(
        t.metric("tidings_publish_to_write_seconds_count").await,
        1.0
    );
    let text = t.metrics().await;
    assert!(text.contains("# TYPE tidings_publish_to_write_seconds histogram"));
    assert!(text.contains("tidings_stream_drops_total{reason=\"lagged\"} 0"));
    drop(s);
    // The client went away: cleanup runs once (seen at the next write).
    eventually("the stream to be cleaned up", async || {
        t.publish_one("demo:m", json!(2)).await;
        t.metric("tidings_connections").await == 0.0
    })
    .await;
    assert_eq!(t.metric("tidings_subscriptions").await, 0.0);
    assert_eq!(
        t.metric("tidings_stream_drops_total{reason=\"closed\"}")
            .await,
        1.0
    );
}
