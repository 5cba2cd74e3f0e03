//! An outside client: the npm `eventsource` package (WHATWG EventSource for
//! Node) must receive every event. Needs `node` and `npm`; installs the
//! locked package into `tests/node/node_modules` on first run.

mod support;

use std::path::Path;

use support::*;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_eventsource_receives_every_event() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !dir.join("node_modules/eventsource").exists() {
        let status = patiently(
            "npm ci",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status(),
        )
        .await
        .expect("npm runs (install Node.js 20+ and npm)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let t = start().await;
    let out = patiently(
        "the node check",
        Command::new("node")
            .arg("eventsource-check.mjs")
            .arg(&t.base)
            .current_dir(&dir)
            .output(),
    )
    .await
    .expect("node runs (install Node.js 20+)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node check failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.starts_with("ok: 5 live events and 2 resumed events"),
        "{stdout}"
    );
}
