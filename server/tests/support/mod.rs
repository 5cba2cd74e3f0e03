//! Helpers for the integration tests: a server on 127.0.0.1 port 0, a real
//! HTTP client, and an SSE reader built on the core decoder.
#![allow(dead_code)]

use std::{collections::VecDeque, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{StatusCode, header::HeaderMap};
use serde_json::Value;
use tidings_core::sse::{Decoded, Decoder, MessageEvent};
use tidings_server::{
    RunningServer,
    auth::{Claims, Grants, keys::SigningKey},
    config::ServeArgs,
};

mod wait;
#[allow(unused_imports)] // each test binary uses its own subset
pub use wait::{PATIENCE, eventually, patiently};

/// The HS256 secret test servers use (HS256 needs at least 32 bytes).
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// A server running in this process.
pub struct TestServer {
    pub server: RunningServer,
    pub base: String,
    pub http: reqwest::Client,
}

/// Test defaults: port 0, a known secret, the default public namespace.
pub fn args() -> ServeArgs {
    let mut args = ServeArgs::default();
    args.keys.jwt_secret = Some(SECRET.into());
    args
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

pub async fn start_with(configure: impl FnOnce(&mut ServeArgs)) -> TestServer {
    let mut args = args();
    configure(&mut args);
    let server = tidings_server::start(args).await.expect("server starts");
    let base = format!("http://{}", server.local_addr());
    TestServer {
        server,
        base,
        http: reqwest::Client::new(),
    }
}

/// A token signed with [`SECRET`].
pub fn token(publish: &[&str], subscribe: &[&str]) -> String {
    sign(claims(publish, subscribe))
}

pub fn claims(publish: &[&str], subscribe: &[&str]) -> Claims {
    Claims::new(
        Grants {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            info: None,
        },
        Duration::from_secs(600),
        None,
    )
}

pub fn sign(claims: Claims) -> String {
    SigningKey::secret(SECRET.as_bytes())
        .unwrap()
        .sign(&claims)
        .unwrap()
}

/// `topic=a&topic=b` plus extra pairs, URL-encoded.
pub fn query(topics: &[&str], extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for topic in topics {
        q.append_pair("topic", topic);
    }
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    q.finish()
}

/// An error answer: status, headers and the parsed body.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Refused {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens `/events` for `topics`; `Err` when the server refuses.
    pub async fn subscribe(&self, topics: &[&str]) -> Result<SseStream, Refused> {
        self.subscribe_with(topics, &[], |r| r).await
    }

    pub async fn subscribe_with(
        &self,
        topics: &[&str],
        extra_query: &[(&str, &str)],
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<SseStream, Refused> {
        let url = self.url(&format!("/events?{}", query(topics, extra_query)));
        let response = patiently("the /events answer", build(self.http.get(url)).send())
            .await
            .expect("request sent");
        if response.status() != StatusCode::OK {
            return Err(refused(response).await);
        }
        Ok(SseStream::new(response))
    }

    /// Posts `body` to `/publish` with an optional bearer token.
    pub async fn publish(&self, body: &Value, token: Option<&str>) -> Result<Value, Refused> {
        let mut request = self
            .http
            .post(self.url("/publish"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = patiently("the /publish answer", request.send())
            .await
            .expect("sent");
        if response.status() != StatusCode::OK {
            return Err(refused(response).await);
        }
        Ok(response.json_value().await)
    }

    /// Publishes one message anonymously (public topics) and returns its id.
    pub async fn publish_one(&self, topic: &str, data: Value) -> String {
        let body = serde_json::json!({"topic": topic, "data": data});
        let answer = self.publish(&body, None).await.expect("publish accepted");
        answer["id"].as_str().expect("an id").to_owned()
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of an unlabelled or labelled metric line.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
    }
}

pub async fn refused(response: reqwest::Response) -> Refused {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Refused {
        status,
        headers,
        body,
    }
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        let text = self.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

/// What a stream delivers, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Retry(u64),
    Event(MessageEvent),
}

/// A response body as a stream of chunks, whatever client read it.
pub type BodyChunks = std::pin::Pin<
    Box<dyn Stream<Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> + Send>,
>;

/// An open SSE response read with the core decoder.
pub struct SseStream {
    pub headers: HeaderMap,
    body: BodyChunks,
    decoder: Decoder,
    ready: VecDeque<Item>,
    /// Every byte received so far.
    pub raw: Vec<u8>,
    pub ended: bool,
}

impl SseStream {
    pub fn new(response: reqwest::Response) -> Self {
        let headers = response.headers().clone();
        let body = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(Into::into));
        Self::from_parts(headers, Box::pin(body))
    }

    /// A stream read from any client's body chunks.
    pub fn from_parts(headers: HeaderMap, body: BodyChunks) -> Self {
        Self {
            headers,
            body,
            decoder: Decoder::default(),
            ready: VecDeque::new(),
            raw: Vec::new(),
            ended: false,
        }
    }

    /// Reads one more chunk; false at the end of the stream.
    pub async fn read_chunk(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match patiently("a chunk of the stream", self.body.next()).await {
            Some(Ok(bytes)) => {
                self.raw.extend_from_slice(&bytes);
                for item in self.decoder.feed(&bytes) {
                    match item.expect("well-formed SSE") {
                        Decoded::Event(e) => self.ready.push_back(Item::Event(e)),
                        Decoded::Retry(ms) => self.ready.push_back(Item::Retry(ms)),
                        _ => {}
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

    /// The next item, or `None` when the stream ended.
    pub async fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if !self.read_chunk().await {
                return None;
            }
        }
    }

    /// The next event (skipping `retry:` items), or `None` at the end.
    pub async fn next_event(&mut self) -> Option<MessageEvent> {
        loop {
            match self.next_item().await? {
                Item::Event(e) => return Some(e),
                Item::Retry(_) => {}
            }
        }
    }

    /// The next event; panics at the end of the stream.
    pub async fn event(&mut self) -> MessageEvent {
        self.next_event().await.expect("stream ended early")
    }

    /// Reads `retry` and `tidings.connected`, returns the connection id.
    pub async fn connected(&mut self) -> String {
        let first = self.next_item().await.expect("a first item");
        assert!(
            matches!(first, Item::Retry(_)),
            "stream must start with retry: {first:?}"
        );
        let event = self.event().await;
        assert_eq!(event.event_type, "tidings.connected");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        data["connectionId"].as_str().unwrap().to_owned()
    }

    /// Reads until the stream ends; returns the remaining items.
    pub async fn rest(&mut self) -> Vec<Item> {
        let mut items = Vec::new();
        while let Some(item) = self.next_item().await {
            items.push(item);
        }
        items
    }
}

/// Parsed `data` of an event.
pub fn data(event: &MessageEvent) -> Value {
    serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("data not JSON ({e}): {}", event.data))
}
