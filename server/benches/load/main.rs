//! Load benchmark of `tidings-server` against a hand-written baseline
//! (axum `Sse` + one `tokio::sync::broadcast` channel per topic), both run as
//! separate processes on 127.0.0.1 and measured by the same load generator.
//!
//! ```text
//! cargo bench -p tidings-server --bench load -- [--scenario NAME|all]
//!     [--redis URL] [--quick] [--out FILE] [--servers baseline,tidings]
//!     [--batch N] [--window N] [--server-bin PATH] [--server-arg ARG]...
//!     [--baseline-capacity N] [--runs N]
//! ```
//!
//! Scenarios: `burst` (100 subscribers × 10,000 messages, as fast as
//! possible), `rate` (1 topic × 1,000 subscribers at 200 messages/s for
//! 10 s), `topics` (100 topics × 10 subscribers × 1,000 messages, as fast as
//! possible), `idle` (5,000 idle connections: server RSS per connection).
//! Every subscriber checks that it gets every message exactly once and in
//! order; any loss, duplicate or reordering makes the program exit 1.

mod baseline;
mod client;
mod floor;
mod process;
mod replay;
mod report;
mod scenario;
mod sse;
mod stream;

use std::path::PathBuf;
use std::time::Duration;

use process::ServerProcess;
use report::Row;
use scenario::{Pace, Shape};

/// Command-line options.
struct Options {
    scenarios: Vec<String>,
    redis: Option<String>,
    /// NATS URLs (tidings only: `--nats`, a stream of the run's own).
    nats: Option<String>,
    quick: bool,
    out: Option<PathBuf>,
    servers: Vec<String>,
    batch: usize,
    window: u64,
    server_bin: Option<PathBuf>,
    server_args: Vec<String>,
    baseline_capacity: usize,
    runs: usize,
}

const ALL: [&str; 10] = [
    "burst", "rate", "topics", "idle", "burst-1", "topics-1", "rate-1", "scale", "slow", "replay",
];

/// Publishing connections in flight in the one-message-per-POST scenarios.
const IN_FLIGHT: usize = 16;

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench -p tidings-server --bench load -- [--scenario NAME[,NAME...]|all] \
         [--redis URL] [--nats URL[,URL...]] [--quick] [--out FILE] [--servers baseline,tidings] [--batch N] [--window N] \
         [--server-bin PATH] [--server-arg ARG]... [--baseline-capacity N] [--runs N]"
    );
    std::process::exit(2)
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Options {
    let mut o = Options {
        scenarios: ALL.iter().map(|s| s.to_string()).collect(),
        redis: None,
        nats: None,
        quick: false,
        out: None,
        servers: vec!["baseline".into(), "tidings".into()],
        batch: 64,
        window: 512,
        server_bin: std::env::var_os("TIDINGS_SERVER_BIN").map(PathBuf::from),
        server_args: Vec::new(),
        baseline_capacity: baseline::CHANNEL_CAPACITY,
        runs: 1,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--scenario" => {
                let v = value();
                o.scenarios = if v == "all" {
                    ALL.iter().map(|s| s.to_string()).collect()
                } else {
                    v.split(',').map(str::to_owned).collect()
                };
                if o.scenarios.iter().any(|s| !ALL.contains(&s.as_str())) {
                    usage();
                }
            }
            "--redis" => o.redis = Some(value()),
            "--nats" => o.nats = Some(value()),
            "--quick" => o.quick = true,
            "--runs" => o.runs = value().parse::<usize>().unwrap_or_else(|_| usage()).max(1),
            "--out" => o.out = Some(PathBuf::from(value())),
            "--servers" => o.servers = value().split(',').map(str::to_owned).collect(),
            "--batch" => o.batch = value().parse().unwrap_or_else(|_| usage()),
            "--window" => o.window = value().parse().unwrap_or_else(|_| usage()),
            "--server-bin" => o.server_bin = Some(PathBuf::from(value())),
            "--server-arg" => o.server_args.push(value()),
            // A smaller channel makes the baseline lose messages on purpose:
            // shows that the checks catch a loss.
            "--baseline-capacity" => {
                o.baseline_capacity = value().parse().unwrap_or_else(|_| usage())
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    o
}

/// The shape of scenario `name`, full size or `--quick`.
fn shape(name: &str, o: &Options, prefix: String) -> Shape {
    let burst = Pace::Burst {
        batch: o.batch,
        window: o.window,
    };
    let q = o.quick;
    let posts = |per_sec| Pace::Posts {
        in_flight: IN_FLIGHT,
        window: o.window,
        per_sec,
    };
    let (mut source_addresses, mut non_readers, mut pad_bytes) = (1, 0, 0);
    let mut timeout = Duration::from_secs(if q { 15 } else { 120 });
    let (topics, subs_per_topic, messages_per_topic, pace, idle) = match name {
        "burst" => (
            1,
            if q { 50 } else { 100 },
            if q { 2_000 } else { 10_000 },
            burst,
            false,
        ),
        "rate" => (
            1,
            if q { 200 } else { 1_000 },
            if q { 300 } else { 2_000 },
            Pace::Rate { per_sec: 200.0 },
            false,
        ),
        "topics" => (
            if q { 20 } else { 100 },
            if q { 5 } else { 10 },
            if q { 200 } else { 1_000 },
            burst,
            false,
        ),
        "idle" => (1, if q { 500 } else { 10_000 }, 1, burst, true),
        "burst-1" => (
            1,
            if q { 50 } else { 100 },
            if q { 2_000 } else { 10_000 },
            posts(None),
            false,
        ),
        "topics-1" => (
            if q { 20 } else { 100 },
            if q { 5 } else { 10 },
            if q { 200 } else { 1_000 },
            posts(None),
            false,
        ),
        "rate-1" => (
            1,
            if q { 200 } else { 1_000 },
            if q { 300 } else { 1_000 },
            posts(Some(200.0)),
            false,
        ),
        "scale" => {
            // One address has ~28 k ephemeral ports towards one server.
            // 19,500, not 20,000: the open-file limit here is a hard
            // 20,000 per process, and the server keeps 128 files spare
            // plus a reserve for refusals (its TCP cap fits at 19,616).
            source_addresses = 4;
            (1, if q { 2_000 } else { 19_500 }, 1, burst, true)
        }
        "slow" => {
            // One checked reader; the others stop reading (issue 11 item 1).
            non_readers = if q { 8 } else { 24 };
            pad_bytes = 60_000;
            let pace = Pace::Posts {
                in_flight: 1,
                window: 4,
                per_sec: None,
            };
            (1, 1, if q { 100 } else { 300 }, pace, false)
        }
        "replay" => {
            // The others' traffic; the flood is added by `replay::run`.
            // Paced at 200/s with one POST in flight, so the run takes as
            // long as the flood makes each POST: its deadline is a loss
            // check, not a speed one (the slow-down is the ratio reported).
            // 15 s failed a CI run whose flooded POSTs took 87 ms each.
            timeout = Duration::from_secs(if q { 90 } else { 300 });
            let pace = Pace::Posts {
                in_flight: 1,
                window: o.window,
                per_sec: Some(200.0),
            };
            (1, 10, if q { 200 } else { 600 }, pace, false)
        }
        _ => unreachable!("checked by parse_options"),
    };
    Shape {
        topics,
        subs_per_topic,
        messages_per_topic,
        pace,
        measure_idle_rss: idle,
        source_addresses,
        non_readers,
        pad_bytes,
        prefix,
        timeout,
    }
}

/// A server to measure.
struct ServerSpec {
    /// `baseline` or `tidings`.
    name: &'static str,
    /// `memory` or `redis`.
    broker: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

/// Where the tidings-server binary is: `--server-bin`, `TIDINGS_SERVER_BIN`,
/// the binary cargo built beside this benchmark, or `target/release`.
fn tidings_binary(o: &Options) -> Option<PathBuf> {
    if let Some(bin) = &o.server_bin {
        return Some(bin.clone());
    }
    if let Some(bin) = option_env!("CARGO_BIN_EXE_tidings-server") {
        return Some(PathBuf::from(bin));
    }
    let release =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tidings-server");
    release.exists().then_some(release)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--serve-baseline") {
        args.next();
        let (mut listen, mut capacity) = ("127.0.0.1:0".to_owned(), baseline::CHANNEL_CAPACITY);
        let mut redis = None;
        while let (Some(flag), Some(value)) = (args.next(), args.next()) {
            match flag.as_str() {
                "--listen" => listen = value,
                "--redis" => redis = Some(value),
                "--capacity" => capacity = value.parse().unwrap_or_else(|_| usage()),
                _ => usage(),
            }
        }
        baseline::serve(&listen, capacity, redis.as_deref());
    }
    let o = parse_options(args);
    // 5,000 connections need 5,000 descriptors here and in the servers,
    // which inherit this limit.
    // 20,000 streams need more than the usual 20,000 descriptors in both
    // the generator and the server; raising the hard limit needs root.
    let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, 65_536, 65_536);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => eprintln!("open files limit: {limit}"),
        Err(e) => eprintln!("cannot raise the open files limit: {e}"),
    }
    // The physical floor: one small write to a loopback socket.
    let floor = floor::measure(96, 200_000).unwrap_or_else(|e| {
        eprintln!("cannot measure the loopback write floor: {e}");
        floor::Floor::default()
    });
    eprintln!(
        "floor: one {}-byte write to a loopback TCP socket costs {:.2} µs of CPU (the reader {:.2} µs per write)",
        floor.bytes, floor.write_us, floor.read_us
    );
    let load_before = load_average();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let rows = runtime.block_on(run_all(&o));
    let machine = format!(
        "{} CPUs shared by the servers and the load generator; load average {} before, {} after (other work on the machine shows here)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_average()
    );
    let text = report::markdown(&rows, &o.scenarios, command_line(), &machine, &floor);
    println!("{text}");
    if let Some(out) = &o.out
        && let Err(e) = std::fs::write(out, &text)
    {
        eprintln!("cannot write {out:?}: {e}");
        std::process::exit(1);
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.failed()).collect();
    if !failed.is_empty() {
        eprintln!(
            "FAILED: {} run(s) lost, duplicated or reordered messages or could not run",
            failed.len()
        );
        std::process::exit(1);
    }
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    format!(
        "cargo bench -p tidings-server --bench load -- {}",
        args.join(" ")
    )
}

async fn run_all(o: &Options) -> Vec<Row> {
    let me = std::env::current_exe().expect("current exe");
    let mut specs = Vec::new();
    let tidings = tidings_binary(o);
    if o.servers.iter().any(|s| s == "baseline") {
        let mut brokers = vec![None];
        if let Some(url) = &o.redis {
            brokers.push(Some(url.clone()));
        }
        for redis in brokers {
            let mut args: Vec<String> = vec![
                "--serve-baseline".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--capacity".into(),
                o.baseline_capacity.to_string(),
            ];
            let broker = if redis.is_some() { "redis" } else { "memory" };
            if let Some(url) = redis {
                args.extend(["--redis".to_owned(), url]);
            }
            specs.push(ServerSpec {
                name: "baseline",
                broker,
                program: me.clone(),
                args,
            });
        }
    }
    let mut pending = Vec::new();
    if o.servers.iter().any(|s| s == "tidings") {
        let mut brokers = vec![None];
        if let Some(url) = &o.redis {
            brokers.push(Some(url.clone()));
        }
        let nats = o.nats.as_ref().map(|url| {
            let stream = format!("BENCH_{}", std::process::id());
            vec![
                "--nats".to_owned(),
                url.clone(),
                "--nats-stream".to_owned(),
                stream.clone(),
                "--nats-subject-prefix".to_owned(),
                stream.to_lowercase(),
            ]
        });
        let mut engines: Vec<(&'static str, Vec<String>)> = brokers
            .into_iter()
            .map(|redis| match redis {
                Some(url) => ("redis", vec!["--redis".to_owned(), url]),
                None => ("memory", Vec::new()),
            })
            .collect();
        engines.extend(nats.map(|args| ("nats", args)));
        for (broker, engine_args) in engines {
            let Some(program) = tidings.clone() else {
                pending.push((broker, "no tidings-server binary yet".to_owned()));
                continue;
            };
            // The benchmark's topics are public, and every connection comes
            // from 127.0.0.1, so the per-IP limit (256 by default) is lifted.
            let mut args: Vec<String> = [
                "--listen",
                "127.0.0.1:0",
                "--public",
                "bench:>",
                "--max-connections",
                "30000",
                "--max-connections-per-ip",
                "30000",
            ]
            .map(str::to_owned)
            .to_vec();
            args.extend(engine_args);
            args.extend(o.server_args.iter().cloned());
            specs.push(ServerSpec {
                name: "tidings",
                broker,
                program,
                args,
            });
        }
    }

    // Redis mode may not be built yet: a server that cannot start with
    // `--redis` (or never turns healthy) makes its rows "pending", not a
    // failure. A failing in-memory server is a failure.
    let mut ready = Vec::new();
    for spec in specs {
        if spec.name == "tidings"
            && spec.broker != "memory"
            && let Err(why) = probe(&spec).await
        {
            eprintln!("tidings with {} is not ready: {why}", spec.broker);
            pending.push((spec.broker, why));
            continue;
        }
        ready.push(spec);
    }
    let specs = ready;

    // The engines' server processes on this machine, whose CPU is
    // reported beside the server's: Redis by `INFO server`, the NATS nodes
    // by the ports of the `--nats` URLs (list every node to count them all).
    let redis_pids: Vec<u32> = match &o.redis {
        Some(url) => redis_server_pid(url).await.into_iter().collect(),
        None => Vec::new(),
    };
    let nats_pids: Vec<u32> = o
        .nats
        .iter()
        .flat_map(|urls| urls.split(','))
        .filter_map(|url| {
            url.trim()
                .rsplit(':')
                .next()?
                .trim_end_matches('/')
                .parse()
                .ok()
        })
        .flat_map(process::listening_pids)
        .collect();
    let mut rows = Vec::new();
    for name in &o.scenarios {
        // Runs alternate between the servers, so that both see the same
        // machine; the median run of each server is reported.
        let mut runs: Vec<Vec<Row>> = specs.iter().map(|_| Vec::new()).collect();
        for run in 0..o.runs {
            for (spec, runs) in specs.iter().zip(&mut runs) {
                if name == "replay" && spec.name == "baseline" {
                    continue; // The baseline keeps no history to resume from.
                }
                let prefix = format!(
                    "bench:r{}:{name}:{}{}:{run}",
                    std::process::id(),
                    spec.name,
                    spec.broker
                );
                let shape = shape(name, o, prefix);
                eprintln!(
                    "== {name} on {} ({}), run {} of {} ...",
                    spec.name,
                    spec.broker,
                    run + 1,
                    o.runs
                );
                let engine_pids = match spec.broker {
                    "redis" => &redis_pids[..],
                    "nats" => &nats_pids[..],
                    _ => &[],
                };
                let row = run_one(spec, name, &shape, engine_pids, o.quick).await;
                eprintln!("   {}", row.summary());
                runs.push(row);
            }
        }
        for runs in runs.into_iter().filter(|r| !r.is_empty()) {
            rows.push(report::median(runs));
        }
        for (broker, why) in &pending {
            rows.push(Row::pending(name, "tidings", broker, why));
        }
    }
    rows
}

async fn run_one(
    spec: &ServerSpec,
    scenario_name: &str,
    shape: &Shape,
    engine_pids: &[u32],
    quick: bool,
) -> Row {
    let label = format!("{}-{}-{scenario_name}", spec.name, spec.broker);
    let mut server = match ServerProcess::start(&label, &spec.program, &spec.args) {
        Ok(server) => server,
        Err(e) => return Row::error(scenario_name, spec.name, spec.broker, shape, e),
    };
    if spec.name == "tidings"
        && let Err(e) = wait_healthy(&server).await
    {
        return Row::error(scenario_name, spec.name, spec.broker, shape, e);
    }
    let outcome = if scenario_name == "replay" {
        let flood = replay::Flood {
            history_topics: 100,
            per_topic: if quick { 100 } else { 1_000 },
            flooders: 4,
        };
        replay::run(server.addr, server.pid(), shape, &flood).await
    } else {
        scenario::run(server.addr, server.pid(), engine_pids, shape).await
    };
    let mut row = Row::new(scenario_name, spec.name, spec.broker, shape, outcome);
    if !server.is_running() {
        row.outcome.failures.push(format!(
            "the server exited during the run (log: {:?})",
            server.log
        ));
    }
    row
}

/// The process id of the Redis server at `url` (`INFO server`), if it runs
/// on this machine, so that its CPU time can be read too.
async fn redis_server_pid(url: &str) -> Option<u32> {
    let client = redis::Client::open(url).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .ok()?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))?
        .trim()
        .parse()
        .ok()?;
    process::cpu_seconds(pid).map(|_| pid)
}

/// Starts `spec` once and checks that it turns healthy.
async fn probe(spec: &ServerSpec) -> Result<(), String> {
    let label = format!("{}-{}-probe", spec.name, spec.broker);
    let server = ServerProcess::start(&label, &spec.program, &spec.args)?;
    wait_healthy(&server).await
}

/// Waits up to 10 s for `GET /healthz` to answer 200 (ready, Redis connected).
async fn wait_healthy(server: &ServerProcess) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..100 {
        match client::Publisher::connect(server.addr).await {
            Ok(mut c) => match c.get_status("/healthz").await {
                Ok(s) if s.is_success() => return Ok(()),
                Ok(s) => last = format!("GET /healthz answered {s}"),
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "server not healthy after 10 s: {last} (log: {:?})",
        server.log
    ))
}
