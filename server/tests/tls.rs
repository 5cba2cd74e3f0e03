//! HTTPS and HTTP/2: the contract behaves the same over HTTP/1.1 and
//! HTTP/2, with and without TLS (a real rustls client against a CA made
//! in the test); certificates reload without dropping streams; a stuck
//! HTTP/2 stream is closed alone.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, Version, body::Incoming, client::conn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName},
};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A certificate authority and a server certificate for 127.0.0.1, in
/// files the server reads.
struct Pki {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca: CertificateDer<'static>,
    ca_pem: PathBuf,
}

impl Pki {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tidings-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pki = Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca_pem: dir.join("ca.pem"),
            dir,
            ca: CertificateDer::from(Vec::new()),
        };
        pki.issue("first");
        pki
    }

    /// A new CA and a server certificate signed by it, written over the
    /// files; clients must trust the new CA from now on.
    fn issue(&mut self, name: &str) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("tidings test CA {name}"));
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        // Key first, then certificate: a reload between the two writes
        // fails (mismatch) and keeps the previous pair.
        std::fs::write(&self.key, leaf_key.serialize_pem()).unwrap();
        std::fs::write(&self.cert, leaf.pem()).unwrap();
        std::fs::write(&self.ca_pem, ca.pem()).unwrap();
        self.ca = ca.der().clone();
    }

    fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        client_config(&self.ca, alpn)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn client_config(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn start_tls(
    pki: &Pki,
    configure: impl FnOnce(&mut tidings_server::config::ServeArgs),
) -> TestServer {
    start_with(|a| {
        a.tls_cert = Some(pki.cert.clone());
        a.tls_key = Some(pki.key.clone());
        configure(a);
    })
    .await
}

/// How a test client reaches the server.
#[derive(Clone)]
enum Transport {
    /// Cleartext HTTP/1.1.
    H1,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
    /// TLS, offering these ALPN protocols.
    Tls(Arc<ClientConfig>),
}

/// A minimal HTTP client over one [`Transport`]: HTTP/2 requests share one
/// connection; HTTP/1.1 requests get one each (a stream holds its own).
struct Client {
    addr: SocketAddr,
    transport: Transport,
    h2: Option<conn::http2::SendRequest<Full<Bytes>>>,
}

impl Client {
    async fn new(addr: SocketAddr, transport: Transport) -> Self {
        let mut client = Self {
            addr,
            transport,
            h2: None,
        };
        // Learn the protocol from a first connection.
        if let (io, true) = client.connect().await {
            client.h2 = Some(h2_handshake(io, None).await);
        }
        client
    }

    /// A new connection and whether it speaks HTTP/2.
    async fn connect(&self) -> (Io, bool) {
        match &self.transport {
            Transport::H1 | Transport::H2c => {
                let tcp = patiently("the connection", TcpStream::connect(self.addr))
                    .await
                    .unwrap();
                (Io::Plain(tcp), matches!(self.transport, Transport::H2c))
            }
            Transport::Tls(config) => connect_tls(self.addr, config).await,
        }
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        if let Some(h2) = &mut self.h2 {
            return patiently("the response", h2.send_request(request))
                .await
                .unwrap();
        }
        let (io, _) = self.connect().await;
        let (mut sender, connection) = conn::http1::handshake(TokioIo::new(io)).await.unwrap();
        tokio::spawn(connection);
        patiently("the response", sender.send_request(request))
            .await
            .unwrap()
    }

    fn url(&self, path_and_query: &str) -> String {
        let scheme = match self.transport {
            Transport::Tls(_) => "https",
            Transport::H1 | Transport::H2c => "http",
        };
        format!("{scheme}://127.0.0.1{path_and_query}")
    }

    async fn get(&mut self, path_and_query: &str) -> Response<Incoming> {
        let request = Request::get(self.url(path_and_query))
            .header("host", "127.0.0.1")
            .body(Full::default())
            .unwrap();
        self.send(request).await
    }

    async fn post(&mut self, path: &str, body: &Value) -> Response<Incoming> {
        let request = Request::post(self.url(path))
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.send(request).await
    }
}

/// A TLS connection offering `config`'s ALPN protocols, and whether the
/// server chose HTTP/2.
async fn connect_tls(addr: SocketAddr, config: &Arc<ClientConfig>) -> (Io, bool) {
    let tcp = patiently("the connection", TcpStream::connect(addr))
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = patiently(
        "the TLS handshake",
        TlsConnector::from(config.clone()).connect(name, tcp),
    )
    .await
    .expect("the server's certificate is trusted");
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    (Io::Tls(Box::new(tls)), h2)
}

async fn h2_handshake(io: Io, stream_window: Option<u32>) -> conn::http2::SendRequest<Full<Bytes>> {
    let mut builder = conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    if let Some(window) = stream_window {
        builder.initial_stream_window_size(window);
    }
    let (sender, connection) = builder.handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// A client socket.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn sse(response: Response<Incoming>) -> SseStream {
    let headers = response.headers().clone();
    let body = response.into_body().into_data_stream().map_err(Into::into);
    SseStream::from_parts(headers, Box::pin(body))
}

async fn json_of(response: Response<Incoming>) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = patiently("the body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

/// Subscribe, publish, receive, and two refusals: the same answers on
/// every protocol. Returns the HTTP version the server answered with.
async fn contract_holds(client: &mut Client, name: &str) -> Version {
    let topic = format!("demo:proto:{name}");
    let response = client.get(&format!("/events?topic={topic}")).await;
    assert_eq!(response.status(), 200);
    let version = response.version();
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache, no-transform");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    let mut stream = sse(response);
    let connection = stream.connected().await;
    assert!(!connection.is_empty());

    let (status, body) = json_of(
        client
            .post(
                "/publish",
                &json!({"topic": topic, "type": "note", "data": {"n": 1}}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let event = stream.event().await;
    assert_eq!(
        (event.event_type.as_str(), event.last_event_id.as_str()),
        ("note", id.as_str())
    );
    assert_eq!(data(&event), json!({"n": 1}));

    let (status, body) = json_of(client.get("/events").await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, body) = json_of(
        client
            .post("/publish", &json!({"topic": "private:x", "data": 1}))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    version
}

#[tokio::test]
async fn the_contract_is_the_same_over_https_h2_https_http11_h2c_and_http11() {
    let pki = Pki::new();
    let t = start_tls(&pki, |_| {}).await;
    assert_eq!(t.server.scheme(), "https");
    let addr = t.server.local_addr();

    let mut h2 = Client::new(addr, Transport::Tls(pki.client(&[b"h2", b"http/1.1"]))).await;
    assert!(h2.h2.is_some(), "ALPN chose h2");
    assert_eq!(contract_holds(&mut h2, "tls-h2").await, Version::HTTP_2);

    let mut h1 = Client::new(addr, Transport::Tls(pki.client(&[b"http/1.1"]))).await;
    assert!(h1.h2.is_none());
    assert_eq!(contract_holds(&mut h1, "tls-h1").await, Version::HTTP_11);

    // Without ALPN a TLS client gets HTTP/1.1.
    let mut plain_tls = Client::new(addr, Transport::Tls(pki.client(&[]))).await;
    assert_eq!(
        contract_holds(&mut plain_tls, "tls-no-alpn").await,
        Version::HTTP_11
    );

    // An untrusted certificate is refused by the client, of course.
    let other = Pki::new();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = TlsConnector::from(other.client(&[b"h2"]))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await;
    assert!(refused.is_err());

    // Cleartext on another server: HTTP/2 with prior knowledge and HTTP/1.1.
    let t = start().await;
    let mut h2c = Client::new(t.server.local_addr(), Transport::H2c).await;
    assert_eq!(contract_holds(&mut h2c, "h2c").await, Version::HTTP_2);
    let mut h1 = Client::new(t.server.local_addr(), Transport::H1).await;
    assert_eq!(contract_holds(&mut h1, "h1").await, Version::HTTP_11);
}

#[tokio::test]
async fn a_new_certificate_is_used_for_new_connections_and_open_streams_go_on() {
    let mut pki = Pki::new();
    let t = start_tls(&pki, |_| {}).await;
    let addr = t.server.local_addr();
    let first_ca = pki.ca.clone();
    let mut old = Client::new(addr, Transport::Tls(pki.client(&[b"h2"]))).await;
    let response = old.get("/events?topic=demo:reload").await;
    let mut stream = sse(response);
    stream.connected().await;

    // The files change: the server notices (it checks every 2 s).
    pki.issue("second");
    let new_config = pki.client(&[b"h2"]);
    eventually("the new certificate to be served", async || {
        let tcp = TcpStream::connect(addr).await.unwrap();
        TlsConnector::from(new_config.clone())
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .is_ok()
    })
    .await;
    // New handshakes no longer present the old one.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stale = TlsConnector::from(client_config(&first_ca, &[b"h2"]))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await;
    assert!(stale.is_err());

    // The stream opened before the reload still delivers, on its old
    // connection and certificate.
    let mut new = Client::new(addr, Transport::Tls(new_config)).await;
    let (status, body) = json_of(
        new.post(
            "/publish",
            &json!({"topic": "demo:reload", "data": "after"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        stream.event().await.last_event_id,
        body["id"].as_str().unwrap()
    );

    // A broken file does not replace a working certificate.
    std::fs::write(&pki.key, "not a key").unwrap();
    let error = t.server.reload_tls().unwrap_err();
    assert!(error.to_string().contains("key"), "{error}");
    let mut again = Client::new(addr, Transport::Tls(pki.client(&[b"h2"]))).await;
    assert_eq!(again.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn starting_with_a_key_that_does_not_match_the_certificate_fails_clearly() {
    let mut pki = Pki::new();
    let first_key = std::fs::read(&pki.key).unwrap();
    pki.issue("second");
    std::fs::write(&pki.key, first_key).unwrap();
    let mut args = args();
    args.tls_cert = Some(pki.cert.clone());
    args.tls_key = Some(pki.key.clone());
    let error = tidings_server::start(args).await.unwrap_err().to_string();
    assert!(
        error.contains("cannot be used with the certificate"),
        "{error}"
    );
    let mut args = support::args();
    args.tls_cert = Some(pki.dir.join("missing.pem"));
    args.tls_key = Some(pki.key.clone());
    let error = tidings_server::start(args).await.unwrap_err().to_string();
    assert!(error.contains("missing.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_http2_stream_is_reset_while_the_others_on_its_connection_go_on() {
    let t = start_with(|a| {
        a.write_timeout = Duration::from_millis(300);
        a.heartbeat = Duration::from_millis(100);
        a.max_body_bytes = 1 << 20;
    })
    .await;
    // One HTTP/2 connection with small stream windows: a stream whose body
    // the client does not read stops the server's writes to it after 16 KiB.
    let tcp = TcpStream::connect(t.server.local_addr()).await.unwrap();
    let mut sender = h2_handshake(Io::Plain(tcp), Some(16 * 1024)).await;
    let open = |topic: &str| {
        Request::get(format!("http://127.0.0.1/events?topic={topic}"))
            .body(Full::default())
            .unwrap()
    };
    let mut good = sse(sender.send_request(open("demo:h2")).await.unwrap());
    good.connected().await;
    let stuck = sender.send_request(open("demo:h2")).await.unwrap();
    eventually("both streams open", async || t.server.open_streams() == 2).await;

    let payload = "x".repeat(4 * 1024);
    let mut sent = Vec::new();
    let mut received = Vec::new();
    for round in 0..200 {
        let batch: Vec<_> = (0..10)
            .map(|i| json!({"topic": "demo:h2", "data": {"n": round * 10 + i, "pad": payload}}))
            .collect();
        let answer = t
            .publish(&json!(batch), None)
            .await
            .expect("publish accepted");
        for id in answer["ids"].as_array().unwrap() {
            sent.push(id.as_str().unwrap().to_owned());
        }
        while received.len() < sent.len() {
            received.push(good.event().await.last_event_id);
        }
        if t.server.open_streams() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("the stuck stream to be closed", async || {
        t.server.open_streams() == 1
    })
    .await;
    assert_eq!(received, sent, "the reading stream got every message");
    assert_eq!(
        t.server
            .metrics()
            .drops(tidings_server::metrics::DropReason::WriteTimeout),
        1
    );
    // The stuck stream was reset, not left hanging...
    let mut body = stuck.into_body();
    let ended = patiently("the stuck stream's end", async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    ended.await;
    // ...and the connection still carries the other one.
    let id = t.publish_one("demo:h2", json!("after")).await;
    assert_eq!(good.event().await.last_event_id, id);

    // The stuck client resumes on the same connection, like a browser
    // would: what it missed is replayed in order (after `tidings.gap` if
    // the history no longer reaches back that far), then live messages.
    let from = &sent[sent.len() - 3];
    let resume = Request::get("http://127.0.0.1/events?topic=demo:h2")
        .header("last-event-id", from.as_str())
        .body(Full::default())
        .unwrap();
    let mut resumed = sse(sender.send_request(resume).await.unwrap());
    resumed.connected().await;
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let event = resumed.event().await;
        if event.event_type != "tidings.gap" {
            ids.push(event.last_event_id);
        }
    }
    assert_eq!(
        ids,
        [
            sent[sent.len() - 2].clone(),
            sent[sent.len() - 1].clone(),
            id
        ]
    );
    let live = t.publish_one("demo:h2", json!("live")).await;
    assert_eq!(resumed.event().await.last_event_id, live);
    assert_eq!(good.event().await.last_event_id, live);
}

/// Runs curl (Debian's, with nghttp2; `scripts/test` installs it) with `args`.
fn curl(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("curl");
    command.args(["-sS", "--max-time", "20"]).args(args);
    command.kill_on_drop(true);
    command
}

/// Subscribes with curl, publishes with curl, and checks what curl printed.
async fn curl_round_trip(base: &str, tls: &[&str], protocol: &str) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let topic = format!("demo:curl:{}", protocol.trim_start_matches("--"));
    let mut child = curl(tls)
        .args([
            "-i",
            "-N",
            protocol,
            &format!("{base}/events?topic={topic}"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs (apt-get install curl)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut head = Vec::new();
    let mut next = async || {
        patiently("a line from curl", lines.next_line())
            .await
            .unwrap()
            .expect("curl's stream ended")
    };
    loop {
        let line = next().await;
        if line.starts_with("event: tidings.connected") {
            break;
        }
        head.push(line.trim_end().to_owned());
    }
    assert_eq!(head[0], "HTTP/2 200", "{head:?}");
    assert!(
        head.contains(&"content-type: text/event-stream".to_owned()),
        "{head:?}"
    );
    assert!(head.iter().any(|l| l.starts_with("retry: ")), "{head:?}");

    let out = curl(tls)
        .args([
            protocol,
            "-H",
            "content-type: application/json",
            "-w",
            "\n%{http_version}",
        ])
        .args([
            "-d",
            &format!(r#"{{"topic":"{topic}","data":{{"via":"curl"}}}}"#),
        ])
        .arg(format!("{base}/publish"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, version) = text.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "{text}");
    let id = serde_json::from_str::<Value>(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut event = Vec::new();
    while event.last().is_none_or(|l: &String| !l.is_empty()) {
        let line = next().await;
        if line.starts_with(':') {
            continue;
        }
        event.push(line);
    }
    if event
        .first()
        .is_some_and(|l| l.starts_with("data: {\"connectionId\""))
    {
        // The rest of tidings.connected.
        event.clear();
        while event.last().is_none_or(|l: &String| !l.is_empty()) {
            event.push(next().await);
        }
    }
    assert!(event.contains(&format!("id: {id}")), "{event:?}");
    assert!(
        event.contains(&r#"data: {"via":"curl"}"#.to_owned()),
        "{event:?}"
    );
    let _ = child.kill().await;

    // A refusal over HTTP/2 has the JSON body too.
    let out = curl(tls)
        .args([protocol, &format!("{base}/events")])
        .output()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn curl_speaks_http2_over_tls_and_with_prior_knowledge() {
    let pki = Pki::new();
    let t = start_tls(&pki, |_| {}).await;
    let base = format!("https://127.0.0.1:{}", t.server.local_addr().port());
    let ca = pki.ca_pem.to_str().unwrap();
    curl_round_trip(&base, &["--cacert", ca], "--http2").await;

    let t = start().await;
    curl_round_trip(&t.base, &[], "--http2-prior-knowledge").await;
}

/// Needs Chromium, which `cargo test` does not install: scripts/test-web.sh
/// installs it and runs this test (`--ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium; scripts/test-web.sh runs it"]
async fn chromium_subscribes_over_https_with_http2() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !dir.join("node_modules/playwright-core").exists() {
        let status = patiently(
            "npm ci",
            tokio::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status(),
        )
        .await
        .expect("npm runs (install Node.js 20+ and npm)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let pki = Pki::new();
    let t = start_tls(&pki, |_| {}).await;
    let base = format!("https://127.0.0.1:{}", t.server.local_addr().port());
    let out = patiently(
        "the Chromium check",
        tokio::process::Command::new("node")
            .arg("https-eventsource-check.mjs")
            .arg(&base)
            .current_dir(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node runs (install Node.js 20+; scripts/lib/ensure-chromium.sh installs Chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Chromium check failed:\n{stdout}\n{stderr}"
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(seen["connected"]["connectionId"].is_string(), "{seen}");
    let ids: Vec<&str> = seen["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let published: Vec<&str> = seen["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    assert_eq!(ids, published, "{seen}");
    assert_eq!(seen["events"][2]["data"], json!({"n": 3}));
    assert_eq!(seen["errors"], 0, "{seen}");
    assert_eq!(seen["refusal"]["status"], 400);
    assert_eq!(seen["refusal"]["body"]["error"]["code"], "bad_request");
    assert_eq!(seen["headers"]["contentType"], "text/event-stream");
    assert_eq!(seen["headers"]["cacheControl"], "no-cache, no-transform");
    assert!(
        seen["firstChunk"].as_str().unwrap().starts_with("retry:"),
        "{seen}"
    );
    let protocols = seen["protocols"].as_array().unwrap();
    assert!(
        !protocols.is_empty() && protocols.iter().all(|p| p == "h2"),
        "{seen}"
    );
}

/// The binary reloads its certificate on SIGHUP: new connections get the
/// new one, a stream opened before goes on delivering.
#[tokio::test]
async fn sighup_reloads_the_certificate_in_the_binary_and_open_streams_go_on() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut pki = Pki::new();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings-server"))
        .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = patiently("the address line", stdout.next_line())
        .await
        .unwrap()
        .unwrap_or_default();
    let addr: SocketAddr = first
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("{first}"))
        .parse()
        .unwrap();
    let (log_tx, mut log) = tokio::sync::mpsc::unbounded_channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if log_tx.send(line).is_err() {
                return;
            }
        }
    });

    let first_ca = pki.ca.clone();
    let mut old = Client::new(addr, Transport::Tls(pki.client(&[b"h2"]))).await;
    let mut stream = sse(old.get("/events?topic=demo:sighup").await);
    stream.connected().await;

    // New files, then the signal at once (the file check, every 2 s, may
    // also notice them; the SIGHUP reload is logged either way).
    pki.issue("second");
    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let mut seen = Vec::new();
    patiently("the SIGHUP reload in the log", async {
        while let Some(line) = log.recv().await {
            if line.contains("reloaded the TLS certificate (SIGHUP)") {
                return;
            }
            seen.push(line);
        }
        panic!("the server's log ended:\n{}", seen.join("\n"));
    })
    .await;

    // New handshakes get the new certificate only.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stale = TlsConnector::from(client_config(&first_ca, &[b"h2"]))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await;
    assert!(stale.is_err(), "the old certificate is no longer served");
    let mut new = Client::new(addr, Transport::Tls(pki.client(&[b"h2"]))).await;
    let (status, body) = json_of(
        new.post(
            "/publish",
            &json!({"topic": "demo:sighup", "data": "after"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The stream opened before the reload still delivers.
    let event = stream.event().await;
    assert_eq!(event.last_event_id, body["id"].as_str().unwrap());
    assert_eq!(data(&event), json!("after"));

    let _ = tokio::process::Command::new("kill")
        .arg(&pid)
        .status()
        .await;
    let _ = patiently("the server to exit", child.wait()).await;
}

/// Publishes one message with `client`; its id.
async fn publish(client: &mut Client, topic: &str, data: Value) -> String {
    let (status, body) = json_of(
        client
            .post("/publish", &json!({"topic": topic, "data": data}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Reads until the peer closes (or resets); returns what arrived.
async fn until_closed(io: &mut (impl tokio::io::AsyncRead + Unpin), what: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    patiently(what, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_timeouts_and_caps_hold_over_tls_and_http2() {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new();
    let t = start_tls(&pki, |a| {
        a.header_timeout = Duration::from_millis(500);
        a.keepalive_timeout = Duration::from_millis(500);
        a.body_timeout = Duration::from_millis(500);
        a.max_tcp_connections_per_ip = Some(2);
        a.heartbeat = Duration::from_secs(60);
    })
    .await;
    let addr = t.server.local_addr();
    let h2_config = pki.client(&[b"h2"]);
    let h1 = Client::new(addr, Transport::Tls(pki.client(&[b"http/1.1"]))).await;

    // A TCP connection that never starts its TLS handshake is closed.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        until_closed(&mut silent, "the silent connection's end")
            .await
            .is_empty()
    );

    // HTTP/1.1 over TLS: a head that stops midway gets 408 with the JSON body.
    let (mut io, _) = h1.connect().await;
    io.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-slow: ")
        .await
        .unwrap();
    let answer = String::from_utf8(until_closed(&mut io, "the 408").await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");

    // HTTP/2 over TLS: a stream outlives the keep-alive and header timeouts...
    let mut streams = Client::new(addr, Transport::Tls(h2_config.clone())).await;
    let mut stream = sse(streams.get("/events?topic=demo:limits").await);
    stream.connected().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = publish(&mut streams, "demo:limits", json!("late")).await;
    assert_eq!(stream.event().await.last_event_id, id);

    // ...a body that stops midway gets 408 with the JSON body...
    let (io, _) = connect_tls(addr, &h2_config).await;
    let (mut sender, connection) = conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(hyper::body::Frame::data(
        Bytes::from_static(b"{\"topic\""),
    ))])
    .chain(futures_util::stream::pending());
    let request = Request::post("https://127.0.0.1/publish")
        .header("content-type", "application/json")
        .header("content-length", "100")
        .body(http_body_util::StreamBody::new(stalled))
        .unwrap();
    let (status, body) = json_of(
        patiently("the 408", sender.send_request(request))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (408, Some("request_timeout"))
    );
    // ...and a connection left idle is closed after the keep-alive timeout.
    drop(sender);
    patiently("the client to close that connection", connection)
        .await
        .unwrap()
        .unwrap();
    eventually("only the stream's connection left", async || {
        t.server.open_tcp_connections() == 1
    })
    .await;
    let (io, _) = connect_tls(addr, &h2_config).await;
    let (mut idle, connection) = conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let healthz = Request::get("https://127.0.0.1/healthz")
        .body(Full::default())
        .unwrap();
    assert_eq!(idle.send_request(healthz).await.unwrap().status(), 200);
    patiently("the idle HTTP/2 connection's end", connection)
        .await
        .unwrap()
        .expect("closed with GOAWAY, not an error");

    // Over the per-address TCP cap, an HTTP/2 client is answered 429 with
    // the JSON body and Retry-After, then the connection ends.
    eventually("only the stream's connection left", async || {
        t.server.open_tcp_connections() == 1
    })
    .await;
    let _held = TcpStream::connect(addr).await.unwrap();
    eventually("the cap reached", async || {
        t.server.open_tcp_connections() == 2
    })
    .await;
    let mut over = Client::new(addr, Transport::Tls(h2_config.clone())).await;
    let response = over.get("/healthz").await;
    assert_eq!(response.headers()["retry-after"], "5");
    let (status, body) = json_of(response).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_connections"))
    );
    // The stream is untouched by all this.
    let id = publish(&mut streams, "demo:limits", json!("end")).await;
    assert_eq!(stream.event().await.last_event_id, id);
}

#[tokio::test]
async fn shutdown_tells_http2_streams_to_retry_soon_then_ends_them() {
    let pki = Pki::new();
    let t = start_tls(&pki, |_| {}).await;
    let mut client = Client::new(t.server.local_addr(), Transport::Tls(pki.client(&[b"h2"]))).await;
    let mut first = sse(client.get("/events?topic=demo:bye").await);
    let mut second = sse(client.get("/events?topic=demo:bye").await);
    first.connected().await;
    second.connected().await;
    let id = publish(&mut client, "demo:bye", json!(1)).await;
    patiently("the shutdown", t.server.shutdown()).await;
    for stream in [&mut first, &mut second] {
        let rest = stream.rest().await;
        assert!(
            matches!(&rest[0], Item::Event(e) if e.last_event_id == id),
            "{rest:?}"
        );
        assert_eq!(rest[1..], [Item::Retry(tidings_server::SHUTDOWN_RETRY_MS)]);
    }
}
