//! Serving accepted connections: the TLS handshake, the protocol (HTTP/2
//! by ALPN or by the prior-knowledge preface, else HTTP/1.1), the
//! connection's task, refusals over the caps, and graceful shutdown.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::Request};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{ConnSettings, GuardedIo, MAX_HEAD_BYTES, handle, lean, reject};
use crate::{
    error::ApiError,
    limits::SocketPermit,
    metrics::Metrics,
    stream::{ConnectionInfo, IoState, WatchedIo},
    tls::ALPN_H2,
};

/// Most concurrent streams (requests) on one HTTP/2 connection. The
/// per-address and total stream limits apply on top, whatever the protocol.
pub(crate) const H2_MAX_STREAMS: u32 = 256;

/// A client socket, with or without TLS.
#[derive(Debug)]
pub(crate) enum Socket {
    /// Cleartext.
    Plain(TcpStream),
    /// After a TLS handshake.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    /// The descriptor of a cleartext socket (`None` under TLS, whose bytes
    /// only rustls may write).
    pub(crate) fn plain_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Self::Plain(tcp) => Some(std::os::fd::AsRawFd::as_raw_fd(tcp)),
            Self::Tls(_) => None,
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Spawns HTTP/2 stream tasks; a stream with a kill switch (see
/// [`handle`]) ends when the watchdog pulls it, which resets that stream
/// only.
#[derive(Clone)]
struct StreamExecutor(Arc<IoState>);

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        // Hyper calls the service, then spawns that request's task at once,
        // on this task: the switch left by the service is this stream's.
        match self.0.next_stream.lock().take() {
            Some(kill) => tokio::spawn(async move {
                tokio::select! {
                    _ = fut => {}
                    _ = kill.cancelled() => {
                        tracing::info!("closed an HTTP/2 stream that stopped reading");
                    }
                }
            }),
            None => tokio::spawn(fut),
        };
    }
}

/// Everything the connection tasks share.
struct Shared {
    app: Router,
    settings: ConnSettings,
    tls: Option<TlsAcceptor>,
    http1: http1::Builder,
    tracker: TaskTracker,
    closing: CancellationToken,
    metrics: Arc<Metrics>,
}

/// The server's connections: spawns one task per accepted connection and
/// shuts them all down gracefully.
pub(crate) struct Connections {
    shared: Arc<Shared>,
}

impl Connections {
    /// Connections served by `app`, over TLS with `tls` when given.
    pub(crate) fn new(
        app: Router,
        settings: ConnSettings,
        tls: Option<Arc<rustls::ServerConfig>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut http1 = http1::Builder::new();
        http1.timer(TokioTimer::new());
        http1.max_header_size(MAX_HEAD_BYTES);
        // The guard closes idle connections and answers slow heads; hyper's
        // own head timer (which closes without an answer) is a backstop.
        http1.header_read_timeout(
            settings.head.keepalive + settings.head.header + Duration::from_secs(1),
        );
        Self {
            shared: Arc::new(Shared {
                app,
                settings,
                tls: tls.map(TlsAcceptor::from),
                http1,
                tracker: TaskTracker::new(),
                closing: CancellationToken::new(),
                metrics,
            }),
        }
    }

    /// Serves a connection in its own task.
    pub(crate) fn serve(&self, tcp: TcpStream, peer: SocketAddr, permit: SocketPermit) {
        let shared = self.shared.clone();
        self.shared.tracker.spawn(async move {
            shared.metrics.tcp_connections.fetch_add(1, Relaxed);
            shared.clone().run(tcp, peer).await;
            shared.metrics.tcp_connections.fetch_sub(1, Relaxed);
            drop(permit);
        });
    }

    /// Answers a connection over the caps with `error`, then closes it.
    pub(crate) fn refuse(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        permit: SocketPermit,
        error: ApiError,
    ) {
        let shared = self.shared.clone();
        self.shared.tracker.spawn(async move {
            let wait = shared
                .settings
                .head
                .header
                .min(shared.settings.head.keepalive);
            let work = async {
                let Some((socket, http2)) = shared.handshake(tcp, peer).await else {
                    return;
                };
                if http2 == Some(true) {
                    refuse_http2(socket, &error, wait).await;
                } else {
                    reject::refuse(socket, error, wait).await;
                }
            };
            tokio::select! {
                _ = work => {}
                _ = shared.closing.cancelled() => {}
            }
            drop(permit);
        });
    }

    /// Asks every connection to finish (idle ones close, HTTP/2 ones get
    /// `GOAWAY`) and waits until all have.
    pub(crate) async fn shutdown(&self) {
        self.shared.closing.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }
}

impl Shared {
    /// The TLS handshake when configured (within the header timeout):
    /// the socket and whether ALPN chose HTTP/2.
    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<(Socket, Option<bool>)> {
        let _ = tcp.set_nodelay(true);
        let Some(acceptor) = &self.tls else {
            return Some((Socket::Plain(tcp), None));
        };
        match tokio::time::timeout(self.settings.head.header, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let http2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
                Some((Socket::Tls(Box::new(tls)), Some(http2)))
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }

    async fn run(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let head = self.settings.head;
        let io_state = Arc::new(IoState::default());
        // Boxed, like the HTTP/2 branch below: a task's future is as large
        // as its largest state, and every idle HTTP/1 stream would otherwise
        // carry room for a TLS handshake and an HTTP/2 connection.
        let start = Box::pin(async {
            let (socket, alpn_http2) = self.handshake(tcp, peer).await?;
            let mut io = GuardedIo::new(socket, io_state.clone(), head, alpn_http2);
            match tokio::time::timeout(head.keepalive, io.detect_protocol()).await {
                Ok(Ok(http2)) => Some((io, http2)),
                // Closed, or silent for the keep-alive timeout: nothing to answer.
                _ => None,
            }
        });
        let started = tokio::select! {
            started = start => started,
            // Still in the handshake or silent when the server stops.
            _ = self.closing.cancelled() => None,
        };
        let Some((io, http2)) = started else {
            return;
        };
        let info = ConnectionInfo::new(peer, io_state.clone());
        let mut io = WatchedIo::new(io, io_state.clone());
        let lean = !http2 && self.settings.lean_streams;
        loop {
            if lean {
                let lean = lean::serve(
                    &mut io,
                    &self.app,
                    &info,
                    &self.closing,
                    &self.metrics,
                    self.settings.direct_writes,
                );
                tokio::select! {
                    biased;
                    // Pulled by the watchdog: a stream that stopped reading.
                    _ = io_state.kill.cancelled() => {
                        tracing::info!(%peer, "closed a connection that stopped reading");
                        return;
                    }
                    next = lean => if next == lean::Next::Close {
                        return;
                    },
                }
                // A request that may be a stream, later on this connection,
                // brings it back here.
                io.get_mut().watch_for_streams();
            }
            match self.clone().serve_hyper(io, info.clone(), http2).await {
                Some(back) => io = back,
                None => return,
            }
        }
    }

    /// Serves a connection through hyper until it ends, or (HTTP/1, lean
    /// path on) until a request that may be a stream starts between
    /// requests: then hyper has finished cleanly and the connection comes
    /// back. Boxed: a connection served by the lean path carries no room
    /// for hyper's state.
    fn serve_hyper(
        self: Arc<Self>,
        io: lean::ConnIo,
        info: ConnectionInfo,
        http2: bool,
    ) -> Pin<Box<dyn Future<Output = Option<lean::ConnIo>> + Send>> {
        Box::pin(async move { self.serve_hyper_inner(io, info, http2).await })
    }

    async fn serve_hyper_inner(
        self: Arc<Self>,
        io: lean::ConnIo,
        info: ConnectionInfo,
        http2: bool,
    ) -> Option<lean::ConnIo> {
        let head = self.settings.head;
        let peer = info.peer;
        let io_state = info.io.clone();
        let app = self.app.clone();
        let body_timeout = self.settings.body;
        // Boxed futures: hyper hands the socket back (`poll_without_shutdown`)
        // only for a service whose futures are `Unpin`.
        let service = service_fn(move |request: Request<Incoming>| {
            Box::pin(handle(&app, &info, body_timeout, request))
        });
        let io = TokioIo::new(io);
        if http2 {
            let mut builder = http2::Builder::new(StreamExecutor(io_state.clone()));
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(H2_MAX_STREAMS)
                .max_header_list_size(MAX_HEAD_BYTES as u32);
            let connection = builder.serve_connection(io, service);
            let idle = idle_http2(&io_state, head.keepalive);
            drive(
                connection,
                |c| c.graceful_shutdown(),
                &io_state,
                &self.closing,
                idle,
                peer,
            )
            .await;
            None
        } else {
            let connection = self.http1.serve_connection(io, service);
            drive_http1(connection, &io_state, &self.closing, peer).await
        }
    }
}

/// Runs a hyper HTTP/1 connection like [`drive`], and gives the socket
/// back if the guard kept a stream's first bytes from hyper
/// ([`GuardedIo::taken_back`]); otherwise shuts it down as hyper would.
async fn drive_http1<S>(
    mut connection: http1::Connection<TokioIo<lean::ConnIo>, S>,
    io: &IoState,
    closing: &CancellationToken,
    peer: SocketAddr,
) -> Option<lean::ConnIo>
where
    S: hyper::service::HttpService<Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                    return None;
                }
                break;
            }
            _ = io.kill.cancelled() => {
                tracing::info!(%peer, "closed a connection that stopped reading");
                return None;
            }
            _ = closing.cancelled(), if !shutting_down => {
                Pin::new(&mut connection).graceful_shutdown();
                shutting_down = true;
            }
        }
    }
    let parts = connection.into_parts();
    let mut socket = parts.io.into_inner();
    if !socket.get_mut().taken_back() || shutting_down {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut socket).await;
        return None;
    }
    // Nothing was left unread by hyper (the guard proved it); should
    // anything be, it goes first.
    socket.get_mut().unread(parts.read_buf.to_vec());
    Some(socket)
}

/// Runs a hyper connection until it ends or its kill switch is pulled;
/// shuts it down gracefully when the server stops or `idle` resolves.
async fn drive<C, G>(
    connection: C,
    graceful: G,
    io: &IoState,
    closing: &CancellationToken,
    idle: impl Future<Output = ()>,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), hyper::Error>>,
    G: Fn(Pin<&mut C>),
{
    let mut connection = pin!(connection);
    let mut idle = pin!(idle);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = io.kill.cancelled() => {
                tracing::info!(%peer, "closed a connection that stopped reading");
                return;
            }
            _ = closing.cancelled(), if !shutting_down => {
                graceful(connection.as_mut());
                shutting_down = true;
            }
            _ = idle.as_mut(), if !shutting_down => {
                tracing::debug!(%peer, "closing an idle HTTP/2 connection");
                graceful(connection.as_mut());
                shutting_down = true;
            }
        }
    }
}

/// Resolves once an HTTP/2 connection has had no request in progress and
/// no new request for the keep-alive timeout (checked at that period).
async fn idle_http2(io: &IoState, keepalive: Duration) {
    loop {
        let before = io.requests.load(Relaxed);
        tokio::time::sleep(keepalive).await;
        if io.in_flight.load(Relaxed) == 0 && io.requests.load(Relaxed) == before {
            return;
        }
    }
}

/// Answers every request of an HTTP/2 connection over the caps with
/// `error`, and says goodbye after the first (or after `wait`).
async fn refuse_http2(socket: Socket, error: &ApiError, wait: Duration) {
    let answered = Arc::new(tokio::sync::Notify::new());
    let (status, body) = (error.status(), reject::json_body(error));
    let retry = error.retry_after();
    let notify = answered.clone();
    let service = service_fn(move |_request: Request<Incoming>| {
        let mut response = axum::http::Response::new(Full::new(Bytes::from(body.clone())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        if let Some(retry) = retry {
            headers.insert(axum::http::header::RETRY_AFTER, retry.into());
        }
        notify.notify_one();
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(socket), service);
    let mut connection = pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = answered.notified() => {}
        _ = tokio::time::sleep(wait) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(wait, connection).await;
}
