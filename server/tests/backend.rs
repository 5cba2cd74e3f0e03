//! The backend seam: a backend that cannot accept publishes makes them 503
//! (never a silent loss) and `/healthz` 503, while streams stay open.

mod support;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering::SeqCst},
};

use serde_json::json;
use support::*;
use tidings_core::broker::MessageId;
use tidings_server::backend::{Backend, BackendError, BoxFuture, Fanout, MemoryBackend, Outgoing};

/// The in-memory backend with an on/off switch, like a cluster whose Redis
/// goes away and comes back.
struct Flaky {
    inner: MemoryBackend,
    up: Arc<AtomicBool>,
}

impl Backend for Flaky {
    fn publish(&self, batch: Vec<Outgoing>) -> BoxFuture<'_, Result<Vec<MessageId>, BackendError>> {
        if self.up.load(SeqCst) {
            self.inner.publish(batch)
        } else {
            Box::pin(async { Err(BackendError("the shared log is unreachable".into())) })
        }
    }
    fn fanout(&self) -> &Arc<Fanout> {
        self.inner.fanout()
    }
    fn ready(&self) -> Result<(), BackendError> {
        if self.up.load(SeqCst) {
            Ok(())
        } else {
            Err(BackendError("the shared log is unreachable".into()))
        }
    }
}

#[tokio::test]
async fn publishes_are_refused_with_503_while_the_backend_is_down() {
    let a = args();
    let up = Arc::new(AtomicBool::new(true));
    let fanout = Arc::new(Fanout::new(
        tidings_server::broker_config(&a),
        MessageId::new(1, 0),
    ));
    let backend = Flaky {
        inner: MemoryBackend::new(fanout),
        up: up.clone(),
    };
    let server = tidings_server::start_with_backend(a, Arc::new(backend))
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
