//! The replay-flood scenario (issue 11 item 3): a few clients loop
//! "resume from the very start" (`lastEventId=0-0`) against a server that
//! retains 100,000 messages, while others publish and subscribe. What it
//! costs the others shows in their `POST /publish` p99, quiet vs flooded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::client::Publisher;
use crate::process::cpu_seconds;
use crate::scenario::{self, Outcome, Shape};
use crate::stream::EventStream;

/// Sizes of the scenario.
pub struct Flood {
    /// Topics of retained history (`{prefix}:h:{i}`).
    pub history_topics: usize,
    /// Messages retained per topic.
    pub per_topic: usize,
    /// Clients looping resume-from-zero on `{prefix}:h:>`.
    pub flooders: usize,
}

/// Publishes `history_topics × per_topic` messages, 100 per POST.
async fn seed(addr: SocketAddr, prefix: &str, flood: &Flood) -> Result<(), String> {
    let mut publisher = Publisher::connect(addr).await?;
    let total = flood.history_topics * flood.per_topic;
    let mut body = String::new();
    let mut k = 0;
    while k < total {
        body.clear();
        body.push('[');
        for m in k..(k + 100).min(total) {
            if m > k {
                body.push(',');
            }
            let topic = m % flood.history_topics;
            body.push_str(&format!(
                r#"{{"topic":"{prefix}:h:{topic}","type":"old","data":{{"n":{m}}}}}"#
            ));
        }
        body.push(']');
        publisher.publish(Bytes::from(body.clone())).await?;
        k += 100;
    }
    Ok(())
}

/// Loops: open `{prefix}:h:>` resuming from `0-0`, read the first chunk
/// of the replay, close. Counts the replays started.
async fn flooder(addr: SocketAddr, pattern: String, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) {
    while !stop.load(Ordering::Acquire) {
        if let Ok(mut stream) = EventStream::open_with(addr, None, &[&pattern], Some("0-0")).await {
            count.fetch_add(1, Ordering::Relaxed);
            let _ = stream.next().await;
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// Messages the server has written to streams so far (its
/// `tidings_messages_delivered_total`), if it answers.
async fn delivered(addr: SocketAddr) -> Option<f64> {
    let (_, text) = Publisher::connect(addr)
        .await
        .ok()?
        .get("/metrics")
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("tidings_messages_delivered_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// Seeds the history, then runs `shape` (the others' traffic, one message
/// per POST) once quietly and once while `flood.flooders` clients loop
/// resume-from-zero. Returns the flooded run, with the quiet figures in
/// `extra`; a failed check in either run fails it.
pub async fn run(addr: SocketAddr, pid: u32, shape: &Shape, flood: &Flood) -> Outcome {
    let seeded = Instant::now();
    if let Err(e) = seed(addr, &shape.prefix, flood).await {
        return Outcome {
            failures: vec![format!("seeding the history: {e}")],
            ..Outcome::default()
        };
    }
    let seed_s = seeded.elapsed().as_secs_f64();
    let mut quiet_shape = shape.clone();
    quiet_shape.prefix = format!("{}:quiet", shape.prefix);
    let quiet = scenario::run(addr, pid, &[], &quiet_shape).await;

    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut flooders = JoinSet::new();
    let pattern = format!("{}:h:>", shape.prefix);
    for _ in 0..flood.flooders {
        flooders.spawn(flooder(addr, pattern.clone(), stop.clone(), count.clone()));
    }
    let started = Instant::now();
    let (cpu_before, delivered_before) = (cpu_seconds(pid), delivered(addr).await);
    let mut loud_shape = shape.clone();
    loud_shape.prefix = format!("{}:loud", shape.prefix);
    let mut loud = scenario::run(addr, pid, &[], &loud_shape).await;
    let replays = count.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_after, delivered_after) = (cpu_seconds(pid), delivered(addr).await);
    stop.store(true, Ordering::Release);
    flooders.abort_all();
    // What the flood cost the server: messages it wrote to streams (the
    // others' deliveries taken out) and its CPU over the flooded run.
    let replayed = match (delivered_before, delivered_after) {
        (Some(b), Some(a)) => format!(
            "{:.0}",
            (a - b - loud.deliveries as f64).max(0.0) / seconds.max(1e-9)
        ),
        _ => "?".into(),
    };
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => format!("{:.2}", (a - b) / seconds.max(1e-9)),
        _ => "?".into(),
    };

    let ratio = loud.post_p99_us as f64 / quiet.post_p99_us.max(1) as f64;
    loud.extra = Some(format!(
        "{} retained ({} topics, seeded in {seed_s:.1} s); publish p99 quiet {:.2} ms → {:.2} ms with {} clients looping resume-from-zero ({replays} replays, {:.0}/s, {replayed} replayed messages/s written, server {cpu} CPUs busy): {ratio:.2}x (goal ≤ 2x: {}); delivery p99 quiet {:.2} ms",
        flood.history_topics * flood.per_topic,
        flood.history_topics,
        quiet.post_p99_us as f64 / 1000.0,
        loud.post_p99_us as f64 / 1000.0,
        flood.flooders,
        replays as f64 / seconds.max(1e-9),
        if ratio <= 2.0 { "met" } else { "missed" },
        quiet.p99_us as f64 / 1000.0,
    ));
    loud.failures.extend(
        quiet
            .failures
            .into_iter()
            .map(|f| format!("quiet run: {f}")),
    );
    loud
}
