//! Waiting in tests without hanging; shared by every integration-test
//! helper module (`support`, `support_cluster`).

use std::{future::Future, time::Duration};

/// How long any single wait in a test may take before it fails (a hang
/// guard, not a timing assertion; Redis restarts need the longest).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Fails the test instead of hanging forever.
pub async fn patiently<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("gave up waiting for {what}"),
    }
}

/// Retries `check` until it returns true.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    patiently(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
