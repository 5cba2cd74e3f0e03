//! A socket wrapper that notices when writes stop making progress.
//!
//! Hyper stops polling a response body while the client is not reading
//! (its buffers are full), so a stuck stream cannot notice on its own. The
//! socket can: a write that stays `Pending` marks the connection blocked,
//! and the [`Watchdog`](super::Watchdog) closes connections blocked longer
//! than the write timeout.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Instant,
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Milliseconds on a process-wide monotonic clock, never 0.
pub(crate) fn monotonic_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Write progress, request accounting and the kill switch of one TCP
/// connection.
#[derive(Debug, Default)]
pub(crate) struct IoState {
    /// [`monotonic_millis`] when a write first returned `Pending`; 0 while
    /// writes go through.
    blocked_since: AtomicU64,
    /// Cancelled to close the connection.
    pub(crate) kill: CancellationToken,
    /// Requests handed to the application so far.
    pub(crate) requests: AtomicU64,
    /// Requests whose response has not ended yet.
    pub(crate) in_flight: AtomicUsize,
    /// Set when the connection closes after refusing a request whose bytes
    /// may still be arriving: read and discard them for a moment before
    /// closing, so the client reads the answer instead of a reset.
    pub(crate) linger: AtomicBool,
    /// HTTP/2: the connection this stream is on. An HTTP/2 request gets an
    /// `IoState` of its own (its `kill` ends that stream only), whose parent
    /// is the connection's (whose `kill` ends them all).
    parent: Option<Arc<IoState>>,
    /// HTTP/2: the kill switch of the stream whose service was just called,
    /// taken by the executor that spawns that stream's task.
    pub(crate) next_stream: parking_lot::Mutex<Option<CancellationToken>>,
}

impl IoState {
    /// The state of one HTTP/2 stream on the connection of `parent`.
    pub(crate) fn for_stream(parent: &Arc<IoState>) -> Arc<Self> {
        Arc::new(Self {
            parent: Some(parent.clone()),
            ..Self::default()
        })
    }

    /// Milliseconds the socket has refused writes, at `now`.
    pub(crate) fn blocked_for(&self, now: u64) -> u64 {
        let own = match self.blocked_since.load(Relaxed) {
            0 => 0,
            since => now.saturating_sub(since),
        };
        own.max(self.parent.as_ref().map_or(0, |p| p.blocked_for(now)))
    }

    /// Closes what is stuck: the whole connection if its socket has
    /// refused writes for `timeout_ms`, else this stream (the connection
    /// on HTTP/1, one stream on HTTP/2).
    pub(crate) fn kill_stuck(&self, now: u64, timeout_ms: u64) {
        match &self.parent {
            Some(parent) if parent.blocked_for(now) >= timeout_ms => parent.kill.cancel(),
            _ => self.kill.cancel(),
        }
    }
}

/// What the server knows about the connection a request came on; in the
/// request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    pub(crate) io: Arc<IoState>,
}

impl ConnectionInfo {
    pub(crate) fn new(peer: SocketAddr, io: Arc<IoState>) -> Self {
        Self { peer, io }
    }
}

/// An IO object that records write stalls in an [`IoState`].
#[derive(Debug)]
pub(crate) struct WatchedIo<T> {
    inner: T,
    state: Arc<IoState>,
}

impl<T> WatchedIo<T> {
    pub(crate) fn new(inner: T, state: Arc<IoState>) -> Self {
        Self { inner, state }
    }

    /// The wrapped IO object.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    fn track<R>(&self, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match &poll {
            Poll::Pending => {
                let _ = self.state.blocked_since.compare_exchange(
                    0,
                    monotonic_millis(),
                    Relaxed,
                    Relaxed,
                );
            }
            Poll::Ready(_) => {
                if self.state.blocked_since.load(Relaxed) != 0 {
                    self.state.blocked_since.store(0, Relaxed);
                }
            }
        }
        poll
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
