//! Server memory per idle stream on each protocol: HTTP/1.1 and HTTP/2
//! (one stream per connection, and 100 streams per connection), cleartext
//! (HTTP/2 with prior knowledge) and over TLS (ALPN, a certificate made
//! at start with rcgen).
//!
//! For each case a fresh release `tidings-server` starts, N streams open
//! and read their `tidings.connected`, and the server's VmRSS growth over
//! the N streams is reported per stream (memory it touched and freed
//! before is reused and not counted, as in the load benchmark's `idle`
//! scenario). Then one message is published and every stream must
//! receive it, so the number counts only working streams.
//!
//! ```sh
//! cargo bench -p tidings-server --bench idle_protocols            # 5,000 streams per case
//! cargo bench -p tidings-server --bench idle_protocols -- --quick # 500
//! ```

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Incoming, client::conn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TOPIC: &str = "demo:idle";

/// One way of reaching the server.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    tls: bool,
    http2: bool,
    /// Streams per connection (HTTP/2 only).
    per_connection: usize,
    /// HTTP/1.1: the connection serves a `GET /healthz` before its stream
    /// (as a browser reuses a keep-alive connection for `EventSource`).
    get_first: bool,
}

const CASES: [Case; 7] = [
    Case {
        name: "HTTP/1.1",
        tls: false,
        http2: false,
        per_connection: 1,
        get_first: false,
    },
    Case {
        name: "HTTP/1.1, a GET first on the connection",
        tls: false,
        http2: false,
        per_connection: 1,
        get_first: true,
    },
    Case {
        name: "HTTP/2 (h2c), 1 stream/conn",
        tls: false,
        http2: true,
        per_connection: 1,
        get_first: false,
    },
    Case {
        name: "HTTP/2 (h2c), 100 streams/conn",
        tls: false,
        http2: true,
        per_connection: 100,
        get_first: false,
    },
    Case {
        name: "HTTPS HTTP/1.1",
        tls: true,
        http2: false,
        per_connection: 1,
        get_first: false,
    },
    Case {
        name: "HTTPS HTTP/2, 1 stream/conn",
        tls: true,
        http2: true,
        per_connection: 1,
        get_first: false,
    },
    Case {
        name: "HTTPS HTTP/2, 100 streams/conn",
        tls: true,
        http2: true,
        per_connection: 100,
        get_first: false,
    },
];

/// A certificate for 127.0.0.1 in files, and client configurations that
/// trust it.
struct Pki {
    dir: PathBuf,
    /// Offers only `h2`.
    h2: Arc<ClientConfig>,
    /// Offers only `http/1.1`.
    h1: Arc<ClientConfig>,
}

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tidings-idle-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(cert.der().to_vec()))
            .unwrap();
        let client = |alpn: &[u8]| {
            let mut config = ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(config)
        };
        Self {
            h2: client(b"h2"),
            h1: client(b"http/1.1"),
            dir,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server under test, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(tls: Option<&Pki>, streams: usize) -> Self {
        let limit = (streams + 100).to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidings-server"));
        command
            .args(["--listen", "127.0.0.1:0", "--heartbeat", "300s"])
            .args(["--jwt-secret", "idle-bench-secret-0123456789abcdef0123"])
            .args([
                "--max-connections",
                &limit,
                "--max-connections-per-ip",
                &limit,
            ])
            .args([
                "--max-tcp-connections",
                &limit,
                "--max-tcp-connections-per-ip",
                &limit,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(pki) = tls {
            command
                .arg("--tls-cert")
                .arg(pki.dir.join("cert.pem"))
                .arg("--tls-key")
                .arg(pki.dir.join("key.pem"));
        }
        let mut child = command.spawn().expect("the server starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .rsplit("://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // Keep reading stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in stdout.lines() {});
        Self { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client connection's socket.
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

async fn connect(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> Io {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Io::Plain(tcp),
        Some(config) => Io::Tls(Box::new(
            TlsConnector::from(config.clone())
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap(),
        )),
    }
}

fn subscribe_request(scheme: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{scheme}://127.0.0.1/events?topic={TOPIC}"))
        .header("host", "127.0.0.1")
        .body(Full::default())
        .unwrap()
}

/// Reads `body` until `needle` arrives.
async fn read_until(body: &mut Incoming, needle: &[u8]) {
    let mut seen = Vec::new();
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    seen.extend_from_slice(&data);
                }
            }
            other => panic!("the stream ended early: {other:?}"),
        }
    }
}

/// Opens `count` streams as `case` says; their bodies, each past
/// `tidings.connected`.
async fn open_streams(
    case: Case,
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    count: usize,
) -> Vec<Incoming> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut bodies = Vec::with_capacity(count);
    let mut opening = tokio::task::JoinSet::new();
    let connections = count.div_ceil(case.per_connection);
    let mut left = count;
    for i in 0..connections {
        let n = left.min(case.per_connection);
        left -= n;
        let tls = tls.cloned();
        opening.spawn(async move {
            let io = TokioIo::new(connect(addr, tls.as_ref()).await);
            let mut out = Vec::with_capacity(n);
            if case.http2 {
                let (mut sender, connection) = conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                for _ in 0..n {
                    let response = sender
                        .send_request(subscribe_request(scheme))
                        .await
                        .unwrap();
                    assert_eq!(response.version(), hyper::Version::HTTP_2);
                    out.push(response.into_body());
                }
            } else {
                let (mut sender, connection) = conn::http1::handshake(io).await.unwrap();
                tokio::spawn(connection);
                if case.get_first {
                    let healthz = Request::get(format!("{scheme}://127.0.0.1/healthz"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let answer = sender.send_request(healthz).await.unwrap();
                    assert_eq!(answer.status(), 200);
                    answer.into_body().collect().await.unwrap();
                    sender.ready().await.unwrap();
                }
                let response = sender
                    .send_request(subscribe_request(scheme))
                    .await
                    .unwrap();
                out.push(response.into_body());
            }
            for body in &mut out {
                read_until(body, b"tidings.connected").await;
            }
            out
        });
        // Bounded concurrency of handshakes.
        if opening.len() >= 64 || i + 1 == connections {
            while let Some(done) = opening.join_next().await {
                bodies.extend(done.unwrap());
                if opening.len() < 32 && i + 1 < connections {
                    break;
                }
            }
        }
    }
    bodies
}

async fn publish(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let io = TokioIo::new(connect(addr, tls).await);
    let (mut sender, connection) = conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let request = Request::post(format!("{scheme}://127.0.0.1/publish"))
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"topic":"{TOPIC}","type":"ping","data":1}}"#
        ))))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
}

fn raise_open_files(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let streams = if quick { 500 } else { 5_000 };
    // Client and server sockets (the server inherits the limit).
    raise_open_files(4 * streams as u64 + 1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pki = Pki::new();
    println!(
        "| protocol | streams | connections | server RSS before → after | RSS per idle stream |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for case in CASES {
        let server = Server::start(case.tls.then_some(&pki), streams);
        let tls = case
            .tls
            .then_some(if case.http2 { &pki.h2 } else { &pki.h1 });
        // Publishes go over HTTP/1.1.
        let publish_tls = case.tls.then_some(&pki.h1);
        runtime.block_on(async {
            // One request first, so the per-stream growth excludes what the
            // first connection of a kind sets up once.
            publish(server.addr, publish_tls).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = server.rss_kib();
            let started = Instant::now();
            let mut bodies = open_streams(case, server.addr, tls, streams).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = server.rss_kib();
            let opened = started.elapsed();
            // Every stream is live: one message reaches them all.
            publish(server.addr, publish_tls).await;
            for body in &mut bodies {
                read_until(body, b"event: ping").await;
            }
            let per = (after.saturating_sub(before)) as f64 / streams as f64;
            println!(
                "| {} | {streams} | {} | {:.1} → {:.1} MiB | {per:.1} KiB |",
                case.name,
                streams.div_ceil(case.per_connection),
                before as f64 / 1024.0,
                after as f64 / 1024.0,
            );
            eprintln!(
                "  ({} opened in {:.1} s; all received the broadcast)",
                case.name,
                opened.as_secs_f64()
            );
        });
        drop(server);
    }
}
