//! One measured run: open the subscribers, publish, check every stream, and
//! collect deliveries/s, latency, server CPU and memory.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::client::Publisher;
use crate::process;
use crate::sse::{SseParser, find_u64};
use crate::stream::EventStream;

/// How messages are published.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// As fast as possible: arrays of `batch` messages per `POST /publish`,
    /// never more than `window` messages ahead of the slowest subscriber.
    Burst { batch: usize, window: u64 },
    /// One message per `POST /publish`, `per_sec` of them per second.
    Rate { per_sec: f64 },
    /// One message per `POST /publish` on each of `in_flight` keep-alive
    /// connections at once (what most publishers do), as fast as possible
    /// (never more than `window` messages ahead of the slowest subscriber)
    /// or at `per_sec` messages per second in total. Each connection's
    /// messages keep their order; between connections there is none, so
    /// subscribers check order per connection and loss/duplicates overall.
    Posts {
        in_flight: usize,
        window: u64,
        per_sec: Option<f64>,
    },
}

impl Pace {
    /// Publishing connections used at once.
    pub fn publishers(&self) -> usize {
        match self {
            Pace::Posts { in_flight, .. } => (*in_flight).max(1),
            _ => 1,
        }
    }
}

/// What a run does: `topics` topics, each with `subs_per_topic` subscribers
/// and `messages_per_topic` messages, published at `pace`.
#[derive(Clone, Debug)]
pub struct Shape {
    pub topics: usize,
    pub subs_per_topic: usize,
    pub messages_per_topic: u64,
    pub pace: Pace,
    /// Measure the server's memory per connection before publishing.
    pub measure_idle_rss: bool,
    /// Spread the streams over this many source addresses (127.0.0.1,
    /// 127.0.0.2, ...): one address has ~28 k ephemeral ports per server.
    pub source_addresses: u8,
    /// Extra streams that stop reading after `tidings.connected` (not
    /// checked): the server's RSS growth per such stream is measured.
    pub non_readers: usize,
    /// Bytes of padding in each message's data (0: none).
    pub pad_bytes: usize,
    /// Topic names are `{prefix}:{index}`.
    pub prefix: String,
    /// The run fails if it has not finished by then.
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    pub deliveries: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// The slowest delivery: for one broadcast, the time until every
    /// stream had it.
    pub max_us: u64,
    /// p50 and p99 of the `POST /publish` round trip (one message per POST).
    pub post_p50_us: u64,
    pub post_p99_us: u64,
    pub server_cpu_s: f64,
    /// CPU seconds the load generator itself used over the same phase.
    pub generator_cpu_s: f64,
    /// CPU seconds the engine's servers on this machine (Redis, or the
    /// NATS nodes) used over the same phase (cluster rows).
    pub engine_cpu_s: Option<f64>,
    pub rss_per_conn: Option<f64>,
    /// The server's RSS (MiB) before the idle streams opened and after.
    pub rss_mib: (f64, f64),
    /// Messages published per second, as achieved (not as asked).
    pub publish_rate: f64,
    /// Highest server RSS growth (bytes) over the publishing phase, per
    /// stream that stopped reading (with `non_readers`).
    pub rss_per_non_reader: Option<f64>,
    /// Scenario-specific figures, shown beside the comparison.
    pub extra: Option<String>,
    /// Empty when every subscriber got every message once, in order.
    pub failures: Vec<String>,
}

impl Outcome {
    /// Deliveries per second.
    pub fn rate(&self) -> f64 {
        self.deliveries as f64 / self.seconds.max(1e-9)
    }
    /// Server CPU seconds per million deliveries.
    pub fn cpu_per_million(&self) -> f64 {
        self.server_cpu_s / self.deliveries.max(1) as f64 * 1e6
    }
    /// The engine's servers' CPU seconds per million deliveries (cluster rows).
    pub fn engine_cpu_per_million(&self) -> Option<f64> {
        Some(self.engine_cpu_s? / self.deliveries.max(1) as f64 * 1e6)
    }
    /// Load generator CPU seconds per million deliveries.
    pub fn generator_cpu_per_million(&self) -> f64 {
        self.generator_cpu_s / self.deliveries.max(1) as f64 * 1e6
    }
}

/// Microseconds since the first call in this process: the clock that send
/// times in message data and receipt times share.
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

const SHARDS: usize = 16;

struct Subscriber {
    topic: usize,
    /// Messages this subscriber has received (= the next sequence number it
    /// expects, with one publishing connection).
    next: AtomicU64,
}

struct Shared {
    subs: Vec<Subscriber>,
    expect: u64,
    /// Publishing connections: with more than one, order is checked per
    /// connection.
    publishers: usize,
    /// Bytes of padding per message.
    pad_bytes: usize,
    /// `POST /publish` round trips (one message per POST only).
    posts: Mutex<Histogram<u64>>,
    histograms: Vec<Mutex<Histogram<u64>>>,
    connected: AtomicUsize,
    done: AtomicUsize,
    deliveries: AtomicU64,
    last_receipt_us: AtomicU64,
    problems: AtomicU64,
    failures: Mutex<Vec<String>>,
    progress: Notify,
    stop: AtomicBool,
    /// When the publisher got its last `200` (µs, [`now_us`]).
    published_us: AtomicU64,
}

impl Shared {
    fn fail(&self, message: String) {
        self.problems.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() < 5 {
            failures.push(message);
        }
    }

    fn min_next(&self) -> u64 {
        self.subs
            .iter()
            .map(|s| s.next.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

/// Runs `shape` against the server at `addr` whose process id is `pid`.
/// `engine_pids` are the engine's server processes on this machine (Redis,
/// NATS nodes) whose CPU time is read too.
pub async fn run(addr: SocketAddr, pid: u32, engine_pids: &[u32], shape: &Shape) -> Outcome {
    let topics: Vec<String> = (0..shape.topics)
        .map(|i| format!("{}:{i}", shape.prefix))
        .collect();
    let subs = (0..shape.topics * shape.subs_per_topic)
        .map(|i| Subscriber {
            topic: i % shape.topics,
            next: AtomicU64::new(0),
        })
        .collect();
    let shared = Arc::new(Shared {
        subs,
        expect: shape.messages_per_topic,
        publishers: shape.pace.publishers(),
        pad_bytes: shape.pad_bytes,
        posts: Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3).expect("bounds")),
        histograms: (0..SHARDS)
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3).expect("bounds")))
            .collect(),
        connected: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        deliveries: AtomicU64::new(0),
        last_receipt_us: AtomicU64::new(0),
        problems: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        progress: Notify::new(),
        stop: AtomicBool::new(false),
        published_us: AtomicU64::new(0),
    });
    let n = shared.subs.len();
    let deadline = Instant::now() + shape.timeout;
    let mut outcome = Outcome::default();
    let rss_before = process::rss_bytes(pid).unwrap_or(0);

    // Open every stream (a bounded number of handshakes at a time) and wait
    // for each `tidings.connected` event.
    let mut tasks = JoinSet::new();
    let gate = Arc::new(Semaphore::new(128));
    for i in 0..n {
        let topic = topics[shared.subs[i].topic].clone();
        let (shared, gate) = (shared.clone(), gate.clone());
        let source = source_address(i, shape.source_addresses);
        tasks.spawn(async move { subscriber(addr, source, topic, i, shared, gate).await });
    }
    while shared.connected.load(Ordering::Acquire) < n {
        if shared.problems.load(Ordering::Relaxed) > 0 || Instant::now() > deadline {
            outcome.failures = shared.failures.lock().expect("lock").clone();
            outcome.failures.push(format!(
                "only {} of {n} streams connected",
                shared.connected.load(Ordering::Acquire)
            ));
            tasks.abort_all();
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    if shape.measure_idle_rss {
        // Let allocations settle, then read the server's memory.
        tokio::time::sleep(Duration::from_millis(if n > 1000 { 1000 } else { 300 })).await;
        let rss_after = process::rss_bytes(pid).unwrap_or(0);
        outcome.rss_per_conn = Some(rss_after.saturating_sub(rss_before) as f64 / n as f64);
        outcome.rss_mib = (rss_before as f64 / 1048576.0, rss_after as f64 / 1048576.0);
    } else {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Streams that stop reading once open: what does each one cost the
    // server while it keeps publishing to them?
    let mut non_readers = Vec::with_capacity(shape.non_readers);
    for i in 0..shape.non_readers {
        match open_and_stop_reading(addr, &topics[i % topics.len()]).await {
            Ok(stream) => non_readers.push(stream),
            Err(e) => {
                outcome
                    .failures
                    .push(format!("non-reading stream {i}: {e}"));
                tasks.abort_all();
                return outcome;
            }
        }
    }
    let rss_publish_before = process::rss_bytes(pid).unwrap_or(0);
    let rss_peak = Arc::new(AtomicU64::new(rss_publish_before));
    let sampler = (shape.non_readers > 0).then(|| {
        let peak = rss_peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(rss) = process::rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });

    let cpu_before = process::cpu_seconds(pid).unwrap_or(f64::NAN);
    let own_cpu_before = process::cpu_seconds(std::process::id()).unwrap_or(f64::NAN);
    let engine_cpu_before = process::total_cpu_seconds(engine_pids);
    let started_us = now_us();
    let publisher = {
        let (shared, topics, pace) = (shared.clone(), topics.clone(), shape.pace);
        tokio::spawn(async move { publish(addr, &topics, pace, &shared).await })
    };
    let mut publisher = Some(publisher);
    loop {
        if shared.done.load(Ordering::Acquire) == n {
            break;
        }
        if publisher.as_ref().is_some_and(|p| p.is_finished())
            && let Some(p) = publisher.take()
            && let Ok(Err(e)) = p.await
        {
            shared.fail(e);
        }
        if shared.problems.load(Ordering::Relaxed) > 0 || Instant::now() > deadline {
            let done = shared.done.load(Ordering::Acquire);
            shared.fail(format!(
                "{done} of {n} subscribers received all {} messages (slowest had {})",
                shape.messages_per_topic,
                shared.min_next()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu_after = process::cpu_seconds(pid).unwrap_or(f64::NAN);
    let own_cpu_after = process::cpu_seconds(std::process::id()).unwrap_or(f64::NAN);
    let engine_cpu_after = process::total_cpu_seconds(engine_pids);
    let finished_us = shared
        .last_receipt_us
        .load(Ordering::Acquire)
        .max(started_us + 1);
    // A short grace period: anything arriving now is a duplicate.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(sampler) = sampler {
        sampler.abort();
        if let Some(rss) = process::rss_bytes(pid) {
            rss_peak.fetch_max(rss, Ordering::Relaxed);
        }
        let peak = rss_peak.load(Ordering::Relaxed);
        let growth = peak.saturating_sub(rss_publish_before) as f64;
        outcome.rss_per_non_reader = Some(growth / shape.non_readers as f64);
        let closed = count_closed(&mut non_readers).await;
        outcome.extra = Some(format!(
            "server RSS {:.0} → peak {:.0} MiB with {} streams not reading {} msgs of {} KB: {:.2} MiB per non-reader; {closed} of them cut by the server",
            rss_publish_before as f64 / 1048576.0,
            peak as f64 / 1048576.0,
            shape.non_readers,
            shape.messages_per_topic,
            shape.pad_bytes / 1000,
            growth / shape.non_readers as f64 / 1048576.0,
        ));
    }
    drop(non_readers);
    shared.stop.store(true, Ordering::Release);
    tasks.abort_all();
    if let Some(p) = publisher {
        p.abort();
    }

    let mut all = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
    for h in &shared.histograms {
        all.add(&*h.lock().expect("histogram lock"))
            .expect("same bounds");
    }
    outcome.deliveries = shared.deliveries.load(Ordering::Acquire);
    outcome.seconds = (finished_us - started_us) as f64 / 1e6;
    outcome.p50_us = all.value_at_quantile(0.50);
    outcome.p99_us = all.value_at_quantile(0.99);
    outcome.p999_us = all.value_at_quantile(0.999);
    outcome.max_us = all.max();
    {
        let posts = shared.posts.lock().expect("posts lock");
        outcome.post_p50_us = posts.value_at_quantile(0.50);
        outcome.post_p99_us = posts.value_at_quantile(0.99);
    }
    outcome.server_cpu_s = cpu_after - cpu_before;
    outcome.generator_cpu_s = own_cpu_after - own_cpu_before;
    if let (Some(after), Some(before)) = (engine_cpu_after, engine_cpu_before) {
        outcome.engine_cpu_s = Some(after - before);
    }
    let published_us = shared.published_us.load(Ordering::Acquire);
    if published_us > started_us {
        outcome.publish_rate = (shape.topics as u64 * shape.messages_per_topic) as f64
            / ((published_us - started_us) as f64 / 1e6);
    }
    outcome.failures = shared.failures.lock().expect("lock").clone();
    let expected = shape.messages_per_topic * n as u64;
    if outcome.deliveries != expected && outcome.failures.is_empty() {
        outcome.failures.push(format!(
            "{} deliveries where {expected} were expected",
            outcome.deliveries
        ));
    }
    outcome
}

/// One SSE stream: checks that messages arrive once each, in order.
async fn subscriber(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    topic: String,
    index: usize,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
) {
    let stream = {
        let _permit = gate.acquire().await.expect("semaphore");
        EventStream::open_from(addr, source, &[&topic]).await
    };
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(e) => return shared.fail(format!("subscriber {index}: {e}")),
    };
    let me = &shared.subs[index];
    let mut parser = SseParser::default();
    let mut latencies: Vec<u64> = Vec::with_capacity(256);
    let mut next = 0u64;
    // With several publishing connections: the last sequence number seen
    // from each, and which sequence numbers arrived (duplicates).
    let relaxed = shared.publishers > 1;
    let mut last_from: Vec<Option<u64>> = vec![None; shared.publishers];
    let mut seen: Vec<u64> = if relaxed {
        vec![0; (shared.expect as usize).div_ceil(64)]
    } else {
        Vec::new()
    };
    let mut connected = false;
    let mut finished = shared.expect == 0;
    loop {
        let data = match stream.next().await {
            Ok(Some(data)) => data,
            Err(e) => return shared.fail(format!("subscriber {index}: {e}")),
            Ok(None) => {
                if !shared.stop.load(Ordering::Acquire) {
                    shared.fail(format!("subscriber {index}: server closed the stream"));
                }
                return;
            }
        };
        let now = now_us();
        let was_connected = connected;
        let mut delivered = 0u64;
        parser.feed(data, |name, payload| match name {
            b"bench" => {
                let (Some(seq), Some(sent)) =
                    (find_u64(payload, b"\"seq\":"), find_u64(payload, b"\"t\":"))
                else {
                    return shared.fail(format!(
                        "subscriber {index}: bad data {:?}",
                        String::from_utf8_lossy(payload)
                    ));
                };
                if relaxed {
                    let from = find_u64(payload, b"\"p\":").unwrap_or(0) as usize;
                    let word = seen.get_mut((seq / 64) as usize);
                    let bit = 1u64 << (seq % 64);
                    match (word, last_from.get_mut(from)) {
                        (Some(word), Some(last)) => {
                            if *word & bit != 0 {
                                shared.fail(format!(
                                    "subscriber {index} on {topic}: duplicate: got seq {seq} twice"
                                ));
                            } else if last.is_some_and(|l| l >= seq) {
                                shared.fail(format!(
                                    "subscriber {index} on {topic}: reordered: got seq {seq} from publisher {from} after {}",
                                    last.unwrap_or(0)
                                ));
                            }
                            *word |= bit;
                            *last = Some(seq);
                        }
                        _ => shared.fail(format!(
                            "subscriber {index} on {topic}: seq {seq} from publisher {from} was never sent"
                        )),
                    }
                    next += 1;
                } else {
                    if seq != next {
                        let what = if seq < next {
                            "duplicate or reordered"
                        } else {
                            "gap (lost)"
                        };
                        shared.fail(format!(
                            "subscriber {index} on {topic}: {what}: got seq {seq}, expected {next}"
                        ));
                    }
                    next = next.max(seq + 1);
                }
                delivered += 1;
                latencies.push(now.saturating_sub(sent));
            }
            b"tidings.connected" => connected = true,
            other => shared.fail(format!(
                "subscriber {index}: unexpected event {:?}",
                String::from_utf8_lossy(other)
            )),
        });
        if connected && !was_connected {
            shared.connected.fetch_add(1, Ordering::AcqRel);
        }
        if delivered == 0 {
            continue;
        }
        me.next.store(next, Ordering::Release);
        shared.deliveries.fetch_add(delivered, Ordering::AcqRel);
        shared.last_receipt_us.fetch_max(now, Ordering::AcqRel);
        shared.progress.notify_one();
        let complete = next >= shared.expect;
        if latencies.len() >= 256 || complete {
            let mut h = shared.histograms[index % SHARDS]
                .lock()
                .expect("histogram lock");
            for &l in &latencies {
                h.saturating_record(l.max(1));
            }
            latencies.clear();
        }
        if complete && !finished {
            finished = true;
            shared.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Appends one message (`type` `bench`, data `{"seq":..,"p":..,"t":..}`,
/// `p` the publishing connection) as JSON.
fn push_message(body: &mut String, topic: &str, seq: u64, from: usize, sent_us: u64) {
    let _ = write!(
        body,
        r#"{{"topic":"{topic}","type":"bench","data":{{"seq":{seq},"p":{from},"t":{sent_us}}}}}"#
    );
}

/// [`push_message`] with `pad` bytes of padding in the data.
fn push_padded(body: &mut String, topic: &str, seq: u64, from: usize, sent_us: u64, pad: usize) {
    if pad == 0 {
        return push_message(body, topic, seq, from, sent_us);
    }
    let _ = write!(
        body,
        r#"{{"topic":"{topic}","type":"bench","data":{{"seq":{seq},"p":{from},"t":{sent_us},"pad":""#
    );
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str("\"}}");
}

/// Opens a stream on `topic`, waits for its first bytes (the preface) and
/// then never reads again.
async fn open_and_stop_reading(addr: SocketAddr, topic: &str) -> Result<EventStream, String> {
    let mut stream = EventStream::open(addr, &[topic]).await?;
    match stream.next().await? {
        Some(_) => Ok(stream),
        None => Err("closed before its first event".into()),
    }
}

/// How many of `streams` the server has closed (read what is left, briefly).
async fn count_closed(streams: &mut [EventStream]) -> usize {
    let mut closed = 0;
    for stream in streams {
        let drained = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                match stream.next().await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return true,
                }
            }
        })
        .await;
        if drained == Ok(true) {
            closed += 1;
        }
    }
    closed
}

/// The source address of stream `index` when streams are spread over
/// `count` loopback addresses.
fn source_address(index: usize, count: u8) -> Option<std::net::IpAddr> {
    (count > 1)
        .then(|| std::net::Ipv4Addr::new(127, 0, 0, 1 + (index % count as usize) as u8).into())
}

/// Publishes `messages_per_topic` messages to every topic, round-robin, so
/// message `k` goes to topic `k % topics` with sequence number `k / topics`.
async fn publish(
    addr: SocketAddr,
    topics: &[String],
    pace: Pace,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let mut publisher = Publisher::connect(addr).await?;
    let t = topics.len() as u64;
    let total = t * shared.expect;
    let pad = shared.pad_bytes;
    let mut k = 0u64;
    match pace {
        Pace::Burst { batch, window } => {
            let mut body = String::new();
            while k < total {
                let upto = (k + batch as u64).min(total);
                let highest_seq = (upto - 1) / t;
                // Stay at most `window` messages ahead of the slowest subscriber,
                // so no bounded queue in either server overflows.
                while highest_seq >= shared.min_next() + window {
                    shared.progress.notified().await;
                }
                body.clear();
                body.push('[');
                let sent = now_us();
                for m in k..upto {
                    if m > k {
                        body.push(',');
                    }
                    push_message(&mut body, &topics[(m % t) as usize], m / t, 0, sent);
                }
                body.push(']');
                publisher.publish(Bytes::from(body.clone())).await?;
                k = upto;
            }
        }
        Pace::Rate { per_sec } => {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut body = String::new();
            while k < total {
                ticks.tick().await;
                body.clear();
                push_message(&mut body, &topics[(k % t) as usize], k / t, 0, now_us());
                publisher.publish(Bytes::from(body.clone())).await?;
                k += 1;
            }
        }
        Pace::Posts {
            in_flight,
            window,
            per_sec,
        } => {
            let next = Arc::new(AtomicU64::new(0));
            let started = tokio::time::Instant::now();
            let mut connections = JoinSet::new();
            for from in 0..in_flight.max(1) {
                let mut publisher = Publisher::connect(addr).await?;
                let (next, topics) = (next.clone(), topics.to_vec());
                let shared = shared.clone();
                connections.spawn(async move {
                    let mut body = String::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::AcqRel);
                        if k >= total {
                            return Ok::<(), String>(());
                        }
                        let seq = k / t;
                        if let Some(rate) = per_sec {
                            tokio::time::sleep_until(
                                started + Duration::from_secs_f64(k as f64 / rate),
                            )
                            .await;
                        }
                        while seq >= shared.min_next() + window {
                            // Woken by a delivery, or looks again soon.
                            let _ = tokio::time::timeout(
                                Duration::from_millis(2),
                                shared.progress.notified(),
                            )
                            .await;
                        }
                        body.clear();
                        let topic = &topics[(k % t) as usize];
                        let sent = now_us();
                        push_padded(&mut body, topic, seq, from, sent, pad);
                        publisher.publish(Bytes::from(body.clone())).await?;
                        let took = now_us().saturating_sub(sent).max(1);
                        shared
                            .posts
                            .lock()
                            .expect("posts lock")
                            .saturating_record(took);
                    }
                });
            }
            while let Some(done) = connections.join_next().await {
                done.map_err(|e| e.to_string())??;
            }
        }
    }
    shared.published_us.store(now_us(), Ordering::Release);
    Ok(())
}
