//! Helpers for the cluster tests: real `tidings-server` processes sharing a
//! real Redis, a private `redis-server` for restart tests, an HTTP client
//! and an SSE reader on the core decoder.
#![allow(dead_code)]

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings_core::sse::{Decoded, Decoder, HEARTBEAT, MessageEvent};

#[path = "../support/wait.rs"]
mod wait;
#[allow(unused_imports)] // each test binary uses its own subset
pub use wait::{PATIENCE, eventually, patiently};

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tidings-server");
/// The HS256 secret of every instance (HS256 needs at least 32 bytes).
pub const SECRET: &str = "cluster-test-secret-0123456789abcdef";
/// The shared Redis of the test run (`scripts/test` sets
/// `TIDINGS_TEST_REDIS_URL`; a local default otherwise).
pub fn redis_url() -> String {
    std::env::var("TIDINGS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A stream key no other test uses.
pub fn unique_key(test: &str) -> String {
    format!("tidings:test:cluster:{test}:{:016x}", rand::random::<u64>())
}

/// Deletes a stream key and every key under it (`KEY:*`: meta,
/// idempotency keys, presence) when dropped (best effort).
pub struct KeyGuard {
    pub url: String,
    pub key: String,
}

impl KeyGuard {
    pub fn new(test: &str) -> Self {
        Self {
            url: redis_url(),
            key: unique_key(test),
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let _ = redis_cli(&self.url, &["DEL", &self.key]);
        for key in keys_under(&self.url, &self.key) {
            let _ = redis_cli(&self.url, &["DEL", &key]);
        }
    }
}

/// Every key named `prefix:...` (SCAN, so it never blocks Redis).
pub fn keys_under(url: &str, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}:*");
    let mut cursor = "0".to_owned();
    let mut keys = Vec::new();
    loop {
        let Ok(redis::Value::Array(reply)) =
            redis_cli(url, &["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"])
        else {
            return keys;
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        cursor = reply.first().map(text).unwrap_or_default();
        if let Some(redis::Value::Array(found)) = reply.get(1) {
            keys.extend(found.iter().map(text));
        }
        if cursor == "0" || cursor.is_empty() {
            return keys;
        }
    }
}

/// Runs one command on `url` with the blocking client.
pub fn redis_cli(url: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut con)
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of this test alone, on its own port, without
/// persistence: stopping and starting it again is a restart that loses
/// every key.
pub struct PrivateRedis {
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Started with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut redis = Self {
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        let url = self.url();
        for _ in 0..400 {
            if redis_cli(&url, &["PING"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills it at once (SIGKILL: no save, no goodbye) and waits.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Stops it by its pid and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` (`"STOP"`, `"CONT"`, …) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// One `tidings-server` process in cluster mode.
pub struct Instance {
    pub base: String,
    pub http: reqwest::Client,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Instance {
    /// Starts the binary on port 0 against `redis_url` and `key`, with
    /// extra flags; waits for its `listening on` line.
    pub fn start(redis_url: &str, key: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--redis", redis_url, "--redis-stream-key", key];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// Starts the binary on port 0 with `args` (the engine's flags and
    /// more); waits for its `listening on` line.
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.wait();
                panic!(
                    "the server exited before listening:\n{}",
                    log.lock().unwrap()
                );
            }
            if let Some(addr) = line.trim().strip_prefix("listening on http://") {
                break addr.to_owned();
            }
        };
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stdout.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL, no goodbye to its streams).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /events` for `topics`, optionally resuming with `Last-Event-ID`.
    pub async fn subscribe(&self, topics: &[&str], last_event_id: Option<&str>) -> SseStream {
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for topic in topics {
                query.append_pair("topic", topic);
            }
            query.finish()
        };
        let mut request = self.http.get(self.url(&format!("/events?{query}")));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = patiently("the /events answer", request.send())
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "GET /events");
        SseStream::new(response)
    }

    /// `GET /events?QUERY` (topics and any other parameter, URL-encoded).
    pub async fn subscribe_query(&self, query: &str) -> SseStream {
        let response = patiently(
            "the /events answer",
            self.http.get(self.url(&format!("/events?{query}"))).send(),
        )
        .await
        .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "GET /events?{query}");
        SseStream::new(response)
    }

    /// `GET PATH_AND_QUERY` with an optional bearer token: the status and
    /// the parsed answer.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = patiently("the answer", request.send()).await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /publish` with `body`: the status and the parsed answer.
    pub async fn post(&self, body: &Value) -> (StatusCode, Value) {
        let response = patiently(
            "the /publish answer",
            self.http
                .post(self.url("/publish"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send(),
        )
        .await
        .expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Publishes one message (public topic) and returns its id.
    pub async fn publish(&self, topic: &str, data: Value) -> String {
        self.publish_as(topic, data, None).await
    }

    /// Publishes one message excluding `exclude`; returns its id.
    pub async fn publish_as(&self, topic: &str, data: Value, exclude: Option<&str>) -> String {
        let mut body = json!({"topic": topic, "data": data});
        if let Some(exclude) = exclude {
            body["exclude"] = json!(exclude);
        }
        let (status, answer) = self.post(&body).await;
        assert_eq!(status, StatusCode::OK, "publish refused: {answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }

    /// Publishes a batch; returns the ids in order.
    pub async fn publish_batch(&self, messages: &[(&str, Value)]) -> Vec<String> {
        let body: Vec<Value> = messages
            .iter()
            .map(|(topic, data)| json!({"topic": topic, "data": data}))
            .collect();
        let (status, answer) = self.post(&Value::Array(body)).await;
        assert_eq!(status, StatusCode::OK, "publish refused: {answer}");
        answer["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect()
    }

    /// The `/healthz` status.
    pub async fn health(&self) -> StatusCode {
        match self.http.get(self.url("/healthz")).send().await {
            Ok(response) => response.status(),
            Err(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The value of an unlabelled metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = patiently("/metrics", async {
            self.http
                .get(self.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- log of the instance at {} ---\n{}",
                self.base,
                self.log()
            );
        }
        self.kill();
    }
}

/// An open SSE response read with the core decoder.
pub struct SseStream {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    decoder: Decoder,
    ready: VecDeque<MessageEvent>,
    /// Heartbeat comments received so far.
    pub heartbeats: usize,
    pub ended: bool,
}

impl SseStream {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            decoder: Decoder::default(),
            ready: VecDeque::new(),
            heartbeats: 0,
            ended: false,
        }
    }

    /// Reads one more chunk; false once the stream has ended.
    pub async fn read_chunk(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match patiently("a chunk of the stream", self.body.next()).await {
            Some(Ok(bytes)) => {
                // Heartbeats are whole frames written on their own.
                self.heartbeats += bytes
                    .windows(HEARTBEAT.len())
                    .filter(|w| *w == HEARTBEAT)
                    .count();
                for item in self.decoder.feed(&bytes) {
                    if let Decoded::Event(event) = item.expect("well-formed SSE") {
                        self.ready.push_back(event);
                    }
                }
                true
            }
            Some(Err(_)) | None => {
                self.ended = true;
                false
            }
        }
    }

    /// The next event, or `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<MessageEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if !self.read_chunk().await {
                return None;
            }
        }
    }

    /// The next event; panics if the stream ends.
    pub async fn event(&mut self) -> MessageEvent {
        self.next_event().await.expect("stream ended early")
    }

    /// Reads `tidings.connected`; returns the connection id.
    pub async fn connected(&mut self) -> String {
        let event = self.event().await;
        assert_eq!(event.event_type, "tidings.connected", "{event:?}");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        data["connectionId"].as_str().unwrap().to_owned()
    }

    /// The next `n` events' ids.
    pub async fn ids(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.event().await.last_event_id);
        }
        ids
    }

    /// Reads until `n` more heartbeats have arrived.
    pub async fn heartbeats(&mut self, n: usize) {
        let target = self.heartbeats + n;
        while self.heartbeats < target {
            assert!(self.read_chunk().await, "the stream ended");
        }
    }
}
