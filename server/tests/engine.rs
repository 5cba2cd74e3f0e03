//! The engine seam: an engine that cannot accept publishes makes them 503
//! (never a silent loss) and `/healthz` 503, while streams stay open.

mod support;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering::SeqCst},
};

use serde_json::json;
use support::*;
use tidings_core::message::Outgoing;
use tidings_server::engine::{
    Accepted, BoxFuture, Engine, EngineError, Hub, MemoryEngine, PublishError,
};

/// The in-memory engine with an on/off switch, like a cluster whose Redis
/// goes away and comes back.
struct Flaky {
    inner: MemoryEngine,
    up: Arc<AtomicBool>,
}

impl Engine for Flaky {
    fn hub(&self) -> &Arc<Hub> {
        self.inner.hub()
    }
    fn publish(&self, batch: Vec<Outgoing>) -> BoxFuture<'_, Result<Vec<Accepted>, PublishError>> {
        if self.up.load(SeqCst) {
            self.inner.publish(batch)
        } else {
            Box::pin(async {
                Err(PublishError::Unavailable(EngineError::new(
                    "the shared log at 10.0.0.7:6379 is unreachable",
                )))
            })
        }
    }
    fn ready(&self) -> Result<(), EngineError> {
        if self.up.load(SeqCst) {
            Ok(())
        } else {
            Err(EngineError::new("the shared log is unreachable"))
        }
    }
}

#[tokio::test]
async fn publishes_are_refused_with_503_while_the_engine_is_down() {
    let a = args();
    let up = Arc::new(AtomicBool::new(true));
    let engine = Flaky {
        inner: MemoryEngine::new(tidings_server::hub_config(&a)),
        up: up.clone(),
    };
    let server = tidings_server::start_with_engine(a, Arc::new(engine))
        .await
        .unwrap();
    let t = TestServer {
        base: format!("http://{}", server.local_addr()),
        server,
        http: reqwest::Client::new(),
    };
    let mut s = t.subscribe(&["demo:x"]).await.unwrap();
    s.connected().await;

    up.store(false, SeqCst);
    let r = t
        .publish(&json!({"topic": "demo:x", "data": 1}), None)
        .await
        .unwrap_err();
    assert_eq!(r.status, 503);
    assert_eq!(r.code(), "unavailable");
    assert!(
        !r.message().contains("10.0.0.7"),
        "no internal address in a public error: {}",
        r.message()
    );
    assert!(r.headers.contains_key("retry-after"));
    let health = t.http.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);

    up.store(true, SeqCst);
    assert_eq!(
        t.http.get(t.url("/healthz")).send().await.unwrap().status(),
        200
    );
    // The stream stayed open and gets what is published after recovery.
    let id = t.publish_one("demo:x", json!(2)).await;
    let e = s.event().await;
    assert_eq!(e.last_event_id, id);
    assert_eq!(data(&e), json!(2));
}
