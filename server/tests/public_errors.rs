//! Public answers never show internal addresses or OS error text: with its
//! Redis gone, an instance's `/healthz` and 503 bodies say what to do, and
//! the detail (with the address) goes to its log.

mod support_cluster;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support_cluster::*;

/// Text that must not reach a client.
fn assert_no_internals(what: &str, body: &str, redis: &PrivateRedis) {
    for leak in [
        format!(":{}", redis.port),
        "127.0.0.1".to_owned(),
        "refused".to_owned(),
        "os error".to_owned(),
        "redis://".to_owned(),
    ] {
        assert!(
            !body.to_lowercase().contains(&leak),
            "{what} shows `{leak}`: {body}"
        );
    }
}

#[tokio::test]
async fn healthz_and_503_bodies_name_no_address_and_the_log_has_the_detail() {
    let mut redis = PrivateRedis::start();
    let key = unique_key("public-errors");
    let instance = Instance::start(&redis.url(), &key, &[]);
    assert_eq!(instance.health().await, StatusCode::OK);

    redis.stop();
    eventually("healthz 503", async || {
        instance.health().await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let health = instance
        .http
        .get(instance.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = health.text().await.unwrap();
    assert_no_internals("/healthz", &body, &redis);
    let parsed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["status"], "unavailable", "{body}");
    assert_eq!(
        parsed["reason"],
        tidings_server::error::ENGINE_UNAVAILABLE,
        "{body}"
    );

    let (status, answer) = instance.post(&json!({"topic": "demo:x", "data": 1})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable");
    let message = answer["error"]["message"].as_str().unwrap();
    assert_no_internals("the publish 503", message, &redis);
    // Refused before it was sent, or sent on a connection that then broke
    // (retry with the same Idempotency-Key): either way it says what to do.
    assert!(
        message.ends_with("retry later") || message.contains("Idempotency-Key"),
        "{message}"
    );

    // The operator still learns where and why, from the log.
    let address = format!("127.0.0.1:{}", redis.port);
    eventually("the detail in the log", async || {
        instance
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&address))
    })
    .await;
}
