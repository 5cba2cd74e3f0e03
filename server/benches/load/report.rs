//! The results table (markdown), with each Tidings figure as a ratio of the
//! baseline's figure from the same run, and the goals checked.

use std::fmt::Write as _;

use crate::floor::Floor;
use crate::scenario::{Outcome, Pace, Shape};

/// One server measured in one scenario.
pub struct Row {
    pub scenario: String,
    pub server: &'static str,
    pub broker: String,
    pub load: String,
    pub outcome: Outcome,
    /// Why the row has no numbers (the server could not start, or is not built yet).
    pub error: Option<String>,
    pub pending: bool,
    /// How many runs this row is the median of.
    pub runs: usize,
    /// Failures seen in the other runs of the same server and scenario.
    pub other_failures: Vec<String>,
}

fn describe(shape: &Shape, outcome: &Outcome) -> String {
    let pace = match shape.pace {
        Pace::Burst { batch, window } => format!(
            "max rate ({:.0} msg/s), batches of {batch}, window {window}",
            outcome.publish_rate
        ),
        Pace::Rate { per_sec } => format!(
            "{per_sec} msg/s asked, {:.0} achieved, 1 per POST",
            outcome.publish_rate
        ),
        Pace::Posts {
            in_flight,
            window,
            per_sec: None,
        } => format!(
            "max rate ({:.0} msg/s), 1 per POST, {in_flight} in flight, window {window}",
            outcome.publish_rate
        ),
        Pace::Posts {
            in_flight,
            per_sec: Some(per_sec),
            ..
        } => format!(
            "{per_sec} msg/s asked, {:.0} achieved, 1 per POST, {in_flight} in flight",
            outcome.publish_rate
        ),
    };
    if shape.measure_idle_rss {
        let from = if shape.source_addresses > 1 {
            format!(" from {} source addresses", shape.source_addresses)
        } else {
            String::new()
        };
        return format!(
            "{} idle conns on 1 topic{from}, then 1 msg",
            shape.subs_per_topic
        );
    }
    if shape.non_readers > 0 {
        return format!(
            "{} streams that stop reading + {} checked reader(s), {} msgs of {} KB, {pace}",
            shape.non_readers,
            shape.topics * shape.subs_per_topic,
            shape.messages_per_topic,
            shape.pad_bytes / 1000
        );
    }
    format!(
        "{} topic(s) × {} subs × {} msgs, {pace}",
        shape.topics, shape.subs_per_topic, shape.messages_per_topic
    )
}

impl Row {
    /// A measured row.
    pub fn new(
        scenario: &str,
        server: &'static str,
        broker: &str,
        shape: &Shape,
        outcome: Outcome,
    ) -> Row {
        Row {
            scenario: scenario.to_owned(),
            server,
            broker: broker.to_owned(),
            load: describe(shape, &outcome),
            outcome,
            error: None,
            pending: false,
            runs: 1,
            other_failures: Vec::new(),
        }
    }

    /// A row for a server that could not be run.
    pub fn error(
        scenario: &str,
        server: &'static str,
        broker: &str,
        shape: &Shape,
        error: String,
    ) -> Row {
        let mut row = Row::new(scenario, server, broker, shape, Outcome::default());
        row.error = Some(error);
        row
    }

    /// A row for a server that is not available yet (not a failure).
    pub fn pending(scenario: &str, server: &'static str, broker: &str, why: &str) -> Row {
        Row {
            scenario: scenario.to_owned(),
            server,
            broker: broker.to_owned(),
            load: String::new(),
            outcome: Outcome::default(),
            error: Some(format!("pending: {why}")),
            pending: true,
            runs: 1,
            other_failures: Vec::new(),
        }
    }

    /// Whether the run lost, duplicated or reordered a message, or did not run.
    pub fn failed(&self) -> bool {
        !self.pending
            && (self.error.is_some()
                || !self.outcome.failures.is_empty()
                || !self.other_failures.is_empty())
    }

    /// The figure runs are ranked by: the scenario's headline number.
    fn key(&self) -> f64 {
        let o = &self.outcome;
        match self.scenario.as_str() {
            "idle" | "scale" => o.rss_per_conn.unwrap_or(f64::NAN),
            "rate" | "rate-1" => o.p99_us as f64,
            "slow" => o.rss_per_non_reader.unwrap_or(f64::NAN),
            "replay" => o.post_p99_us as f64,
            _ => -o.rate(),
        }
    }

    fn idle(&self) -> bool {
        self.scenario == "idle" || self.scenario == "scale"
    }

    /// One line for the progress log.
    pub fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let o = &self.outcome;
        let mut s = format!(
            "{} deliveries in {:.2} s = {:.0}/s, p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms, {:.3} CPU-s/M (generator {:.3})",
            o.deliveries,
            o.seconds,
            o.rate(),
            ms(o.p50_us),
            ms(o.p99_us),
            ms(o.p999_us),
            o.cpu_per_million(),
            o.generator_cpu_per_million()
        );
        if let Some(rss) = o.rss_per_conn {
            let _ = write!(
                s,
                ", {:.1} KiB RSS per idle connection ({:.1} → {:.1} MiB)",
                rss / 1024.0,
                o.rss_mib.0,
                o.rss_mib.1
            );
        }
        if self.scenario == "scale" {
            let _ = write!(s, ", time-to-all {:.1} ms", ms(o.max_us));
        }
        if o.post_p99_us > 0 {
            let _ = write!(
                s,
                ", POST p50 {:.2} ms p99 {:.2} ms",
                ms(o.post_p50_us),
                ms(o.post_p99_us)
            );
        }
        if let Some(extra) = &o.extra {
            let _ = write!(s, "\n   {extra}");
        }
        for f in &o.failures {
            let _ = write!(s, "\n   FAIL: {f}");
        }
        s
    }
}

/// The median of several runs of one server in one scenario (ranked by
/// [`Row::key`]), keeping every failure of the others.
pub fn median(mut runs: Vec<Row>) -> Row {
    let failed: Vec<String> = runs
        .iter()
        .flat_map(|r| r.error.iter().chain(&r.outcome.failures).cloned())
        .collect();
    runs.sort_by(|a, b| a.key().total_cmp(&b.key()));
    let n = runs.len();
    let mut row = runs.swap_remove(n / 2);
    row.runs = n;
    let own: Vec<String> = row
        .error
        .iter()
        .chain(&row.outcome.failures)
        .cloned()
        .collect();
    row.other_failures = failed.into_iter().filter(|f| !own.contains(f)).collect();
    row
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "–".into()
    }
}

/// The report: a markdown table plus the goals of issue 3.
pub fn markdown(
    rows: &[Row],
    scenarios: &[String],
    command: String,
    machine: &str,
    floor: &Floor,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Command: `{command}`\n");
    let _ = writeln!(s, "Machine: {machine}\n");
    let _ = writeln!(
        s,
        "Floor: one {}-byte `write` to a loopback TCP socket costs {:.2} µs of the writer's CPU ({:.2} µs for the reader); \"× floor\" is server CPU per delivery divided by it.\n",
        floor.bytes, floor.write_us, floor.read_us
    );
    let _ = writeln!(
        s,
        "| scenario | server | broker | load | deliveries | deliveries/s | p50 ms | p99 ms | p99.9 ms | server CPU-s / M deliveries | generator CPU-s / M | server RSS / idle conn | vs baseline (same run) | check |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for scenario in scenarios {
        for r in rows.iter().filter(|r| &r.scenario == scenario) {
            // Compared with the baseline on the same broker, else in memory.
            let brokers = if r.server == "baseline" {
                vec!["memory"]
            } else {
                vec![r.broker.as_str(), "memory"]
            };
            let base = brokers
                .iter()
                .filter_map(|broker| {
                    rows.iter().find(|b| {
                        &b.scenario == scenario
                            && b.server == "baseline"
                            && &b.broker == broker
                            && b.error.is_none()
                    })
                })
                .next();
            if let Some(e) = &r.error {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | | | | | | | | | | {} |",
                    r.scenario,
                    r.server,
                    r.broker,
                    r.load,
                    e.replace('|', "/").replace('\n', " ")
                );
                continue;
            }
            let o = &r.outcome;
            let mut versus = match (base, r.server) {
                (_, "baseline") if r.broker == "memory" => "1.00x".to_owned(),
                (Some(b), _) if r.idle() => format!(
                    "RSS {}",
                    ratio(
                        o.rss_per_conn.unwrap_or(f64::NAN),
                        b.outcome.rss_per_conn.unwrap_or(f64::NAN)
                    )
                ),
                (Some(b), _) => format!(
                    "{}deliveries/s {}, CPU/M {}, p99 {}",
                    if b.broker != r.broker || r.server == "baseline" {
                        format!("vs {} baseline: ", b.broker)
                    } else {
                        String::new()
                    },
                    ratio(o.rate(), b.outcome.rate()),
                    ratio(o.cpu_per_million(), b.outcome.cpu_per_million()),
                    ratio(o.p99_us as f64, b.outcome.p99_us as f64)
                ),
                (None, _) => "no baseline".to_owned(),
            };
            if r.scenario == "scale" {
                versus = format!("{versus}; time-to-all {:.0} ms", ms(o.max_us));
            }
            if o.post_p99_us > 0 {
                versus = format!(
                    "{versus}; POST p50 {:.2} ms, p99 {:.2} ms",
                    ms(o.post_p50_us),
                    ms(o.post_p99_us)
                );
            }
            if let Some(extra) = &o.extra {
                versus = format!("{versus}; {extra}");
            }
            let all: Vec<&String> = o.failures.iter().chain(&r.other_failures).collect();
            let mut check = if all.is_empty() {
                "ok: none lost, duplicated or reordered".to_owned()
            } else {
                let all: Vec<&str> = all.iter().map(|f| f.as_str()).collect();
                format!("FAIL: {}", all.join("; ").replace('|', "/"))
            };
            if r.runs > 1 {
                check = format!("median of {} runs; {check}", r.runs);
            }
            let rss = o
                .rss_per_conn
                .map(|b| {
                    format!(
                        "{:.1} KiB ({:.0} → {:.0} MiB)",
                        b / 1024.0,
                        o.rss_mib.0,
                        o.rss_mib.1
                    )
                })
                .unwrap_or_default();
            // The idle scenario's one message per connection only checks that
            // every stream is alive: its rate, latency and CPU mean nothing.
            let measures = if r.idle() {
                " | | | | | ".to_owned()
            } else {
                let engine = match r.broker.as_str() {
                    "nats" => "NATS",
                    _ => "Redis",
                };
                let engine = o
                    .engine_cpu_per_million()
                    .map(|c| format!(" (+{c:.3} {engine})"))
                    .unwrap_or_default();
                let multiple = if floor.write_us > 0.0 {
                    format!(" ({:.1}× floor)", o.cpu_per_million() / floor.write_us)
                } else {
                    String::new()
                };
                format!(
                    "{:.0} | {:.2} | {:.2} | {:.2} | {:.3}{multiple}{engine} | {:.3}",
                    o.rate(),
                    ms(o.p50_us),
                    ms(o.p99_us),
                    ms(o.p999_us),
                    o.cpu_per_million(),
                    o.generator_cpu_per_million()
                )
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {measures} | {rss} | {versus} | {check} |",
                r.scenario, r.server, r.broker, r.load, o.deliveries,
            );
        }
    }
    let _ = writeln!(
        s,
        "\nLatency is from just before the `POST /publish` that carries a message to the moment its SSE event is parsed by the subscriber (same clock). CPU is the server process's utime+stime from /proc over the publishing phase (with Redis, the Redis server's own CPU over the same phase is shown apart; that Redis is shared with other work on the machine); RSS per idle connection is the server's VmRSS growth divided by the connections (its RSS before and after in brackets: memory the server had already touched and freed before the streams opened is reused by them and not counted)."
    );
    goals(&mut s, rows);
    lean_goals(&mut s, rows);
    s
}

/// Checks the Tidings rows against the goals of issues 12 and 11.
fn lean_goals(s: &mut String, rows: &[Row]) {
    let find = |scenario: &str, server: &str, broker: &str| {
        rows.iter().find(|r| {
            r.scenario == scenario && r.server == server && r.broker == broker && r.error.is_none()
        })
    };
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let mut lines = Vec::new();
    for broker in ["memory", "redis"] {
        let pair = |name: &str| {
            let base = find(name, "baseline", broker).or(find(name, "baseline", "memory"))?;
            Some((find(name, "tidings", broker)?, base))
        };
        if let Some((t, b)) = pair("burst-1") {
            let r = t.outcome.rate() / b.outcome.rate();
            let c = t.outcome.cpu_per_million();
            lines.push(format!(
                "burst-1 ({broker}): deliveries/s {r:.2}x the baseline (goal ≥ 2.5x): {}; {c:.3} server CPU-s per M (goal ≤ 0.35): {}",
                verdict(r >= 2.5),
                verdict(c <= 0.35)
            ));
        }
        if let Some((t, b)) = pair("topics-1") {
            let r = t.outcome.rate() / b.outcome.rate();
            let p = t.outcome.p99_us as f64 / b.outcome.p99_us.max(1) as f64;
            lines.push(format!(
                "topics-1 ({broker}): deliveries/s {r:.2}x the baseline (goal ≥ 2x): {}; p99 {p:.2}x (goal ≤ 0.5x): {}",
                verdict(r >= 2.0),
                verdict(p <= 0.5)
            ));
        }
        if let Some((t, b)) = pair("rate-1") {
            let c = t.outcome.cpu_per_million() / b.outcome.cpu_per_million();
            let p = t.outcome.p99_us as f64 / b.outcome.p99_us.max(1) as f64;
            lines.push(format!(
                "rate-1 ({broker}): CPU per delivery {c:.2}x the baseline (goal ≤ 0.6x): {}; p99 {p:.2}x (goal ≤ 0.3x): {}",
                verdict(c <= 0.6),
                verdict(p <= 0.3)
            ));
        }
        if let Some(t) = find("idle", "tidings", broker) {
            let k = t.outcome.rss_per_conn.unwrap_or(f64::NAN) / 1024.0;
            lines.push(format!(
                "idle ({broker}): {k:.1} KiB per idle stream (goal ≤ 6 KiB): {}",
                verdict(k <= 6.0)
            ));
        }
        if let Some(t) = find("scale", "tidings", broker) {
            lines.push(format!(
                "scale ({broker}): {} streams, one broadcast reached all in {:.0} ms, {:.1} KiB RSS each",
                t.outcome.deliveries,
                ms(t.outcome.max_us),
                t.outcome.rss_per_conn.unwrap_or(f64::NAN) / 1024.0
            ));
        }
        if let Some(t) = find("slow", "tidings", broker) {
            let m = t.outcome.rss_per_non_reader.unwrap_or(f64::NAN) / 1048576.0;
            lines.push(format!(
                "slow ({broker}): {m:.2} MiB of server RSS per stream that stopped reading (issue 11 goal: under a few MiB; 4 MiB taken): {}",
                verdict(m <= 4.0)
            ));
        }
        if let Some(t) = find("replay", "tidings", broker) {
            lines.push(format!(
                "replay ({broker}): {}",
                t.outcome.extra.as_deref().unwrap_or("")
            ));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(
            s,
            "\nGoals of issue 12 (one message per POST, memory) and issue 11 (slow readers, replay floods):\n"
        );
        for l in lines {
            let _ = writeln!(s, "- {l}");
        }
    }
}

/// Checks the Tidings rows against the goals of issue 3.
fn goals(s: &mut String, rows: &[Row]) {
    let find = |scenario: &str, server: &str, broker: &str| {
        rows.iter().find(|r| {
            r.scenario == scenario && r.server == server && r.broker == broker && r.error.is_none()
        })
    };
    let mut lines = Vec::new();
    for broker in ["memory", "redis"] {
        let base = find("burst", "baseline", broker).or(find("burst", "baseline", "memory"));
        if let (Some(t), Some(b)) = (find("burst", "tidings", broker), base) {
            let r = t.outcome.rate() / b.outcome.rate();
            lines.push(format!(
                "burst ({broker}): deliveries/s {r:.2}x the {} baseline (goal ≥ 1.50x): {}",
                b.broker,
                if r >= 1.5 { "met" } else { "missed" }
            ));
        }
        if let Some(t) = find("burst", "tidings", broker) {
            let c = t.outcome.cpu_per_million();
            lines.push(format!(
                "burst ({broker}): {c:.3} server CPU-s per million deliveries (goal ≤ 0.3): {}",
                if c <= 0.3 { "met" } else { "missed" }
            ));
        }
        if broker == "redis"
            && let Some(t) = find("burst", "tidings", broker)
        {
            // The Node/Express + Redis gateway of issue 3: 131 k deliveries/s.
            let r = t.outcome.rate() / 131_000.0;
            lines.push(format!(
                "burst (redis): {:.0} deliveries/s = {r:.1}x the Node/Express + Redis gateway's 131 k measured elsewhere (goal ≥ 8x): {}",
                t.outcome.rate(),
                if r >= 8.0 { "met" } else { "missed" }
            ));
        }
        if let Some(t) = find("rate", "tidings", broker) {
            let p = ms(t.outcome.p99_us);
            lines.push(format!(
                "rate ({broker}): p99 {p:.2} ms (goal ≤ 3 ms): {}",
                if p <= 3.0 { "met" } else { "missed" }
            ));
        }
        if let Some(t) = find("idle", "tidings", broker) {
            let k = t.outcome.rss_per_conn.unwrap_or(f64::NAN) / 1024.0;
            let before = t.outcome.rss_mib.0;
            let caveat = if before > 32.0 {
                format!(
                    " (doubtful: the server already had {before:.0} MiB resident before the streams opened, and memory it had freed is reused uncounted)"
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "idle ({broker}): {k:.1} KiB per idle connection (goal ≤ 8 KiB): {}{caveat}",
                if k <= 8.0 { "met" } else { "missed" }
            ));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(
            s,
            "\nGoals of issue 3 (they are set for the full sizes; a `--quick` run only hints):\n"
        );
        for l in lines {
            let _ = writeln!(s, "- {l}");
        }
    }
}
