//! The socket wrapper below hyper's HTTP/1 connection: idle and header
//! timeouts, and the JSON body for the parser's own refusals.
//!
//! Hyper's HTTP/1 server has one timer for both waits (its header read
//! timeout, restarted whenever it waits for a head) and, when it fires,
//! closes without an answer. Here the wrapper tells the two apart by the
//! bytes it passes up: with no request in progress and nothing received,
//! the connection is *idle* (closed quietly after the keep-alive timeout);
//! once the first byte of a head arrived, the head must be complete within
//! the header timeout, or the client gets `408` with the JSON body. A
//! request "in progress" is one handed to the application whose response
//! has not ended (counted in [`IoState`] by the service); streams are never
//! cut by these timers.
//!
//! Hyper also answers requests it cannot parse (a raw `>` in the URL, a URL
//! or headers over its limits) by itself, with an empty body. Those answers
//! are recognised when hyper writes them ([`parser_refusal`]) and replaced
//! by the same status with the contract's JSON body: the exact cases and
//! statuses of hyper's own parser, at no cost for other writes.
//!
//! HTTP/2 connections (ALPN `h2`, or the prior-knowledge preface) pass
//! through untouched: frames, not heads.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

use super::{
    lean,
    reject::{LINGER, LINGER_BYTES, parser_refusal, raw_response},
};
use crate::{error::ApiError, stream::IoState};

/// The HTTP/2 connection preface a prior-knowledge client starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long heads and idle connections may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadTimeouts {
    /// From the first byte of a head to its end.
    pub header: Duration,
    /// With no request in progress and nothing received.
    pub keepalive: Duration,
}

/// The protocol seen on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Not known yet: the bytes so far are a prefix of the HTTP/2 preface
    /// (`matched` of them).
    Unknown {
        matched: usize,
    },
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request since then.
    Idle(Instant),
    /// A head started arriving then.
    Head(Instant),
    /// A request is in progress.
    Busy,
}

/// What the wrapper does on its own once it takes the connection over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Hyper drives the connection.
    No,
    /// Writing our answer, then shutting down, then lingering.
    Closing,
    /// Reading and discarding until the client closes or the linger ends.
    Lingering { discarded: usize },
    /// Done: reads see the end of the stream.
    Done,
}

/// Whether the connection can be taken back from hyper for a lean stream
/// (see [`GuardedIo::watch_for_streams`]).
#[derive(Debug)]
enum TakeBack {
    /// Not asked, or no longer provable on this connection.
    Off,
    /// Every byte hyper got so far ended a request head or its
    /// `Content-Length` body, so hyper holds nothing unread between
    /// requests; `head` is the head arriving now, `body` the bytes of its
    /// body still to come (both empty between requests).
    Watching { head: Vec<u8>, body: u64 },
    /// The next request could be a stream: its first bytes are kept back
    /// and hyper sees the end of the stream.
    Taken,
}

/// A socket wrapper applying the idle and header timeouts and rewriting
/// the parser's bare refusals (see the module documentation).
#[derive(Debug)]
pub(crate) struct GuardedIo<T> {
    inner: T,
    state: Arc<IoState>,
    timeouts: HeadTimeouts,
    protocol: Protocol,
    phase: Phase,
    seen_requests: u64,
    timer: Option<Pin<Box<Sleep>>>,
    timer_deadline: Option<Instant>,
    /// Bytes of our own to write before anything else.
    out: Vec<u8>,
    out_written: usize,
    ending: Ending,
    /// Bytes read ahead (to learn the protocol, or a head the lean stream
    /// path did not take), given back to the next reader.
    replay: Vec<u8>,
    replay_pos: usize,
    take_back: TakeBack,
}

impl<T> GuardedIo<T> {
    /// Wraps `inner`; `protocol` is known with TLS (ALPN), else detected.
    pub(crate) fn new(
        inner: T,
        state: Arc<IoState>,
        timeouts: HeadTimeouts,
        http2: Option<bool>,
    ) -> Self {
        Self {
            inner,
            state,
            timeouts,
            protocol: match http2 {
                Some(true) => Protocol::Http2,
                Some(false) => Protocol::Http1,
                None => Protocol::Unknown { matched: 0 },
            },
            phase: Phase::Idle(Instant::now()),
            seen_requests: 0,
            timer: None,
            timer_deadline: None,
            out: Vec::new(),
            out_written: 0,
            ending: Ending::No,
            replay: Vec::new(),
            replay_pos: 0,
            take_back: TakeBack::Off,
        }
    }

    /// The wrapped socket.
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Gives `bytes` back: the next reads return them first (before any
    /// bytes still waiting to be given back).
    pub(crate) fn unread(&mut self, mut bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        bytes.extend_from_slice(&self.replay[self.replay_pos..]);
        self.replay = bytes;
        self.replay_pos = 0;
    }

    /// From now on, while hyper serves the connection: when a request that
    /// could be a stream starts between requests, keep its bytes back and
    /// show hyper the end of the stream, so that hyper finishes and the
    /// connection returns to the lean path ([`taken_back`](Self::taken_back)).
    /// Only while it is provable that hyper holds no unread bytes: every
    /// read so far ended a head or its `Content-Length` body (what browsers
    /// send before they reuse a connection for `EventSource`). Anything
    /// else (a chunked body, bytes sent ahead, a head over
    /// [`lean::LEAN_HEAD_MAX`]) stops the watch for the connection's life.
    pub(crate) fn watch_for_streams(&mut self) {
        self.take_back = TakeBack::Watching {
            head: Vec::new(),
            body: 0,
        };
    }

    /// True (once) if a stream's first bytes were kept back from hyper; the
    /// next reads return them.
    pub(crate) fn taken_back(&mut self) -> bool {
        matches!(
            std::mem::replace(&mut self.take_back, TakeBack::Off),
            TakeBack::Taken
        )
    }

    /// Follows the bytes given to hyper (see [`TakeBack::Watching`]).
    fn track(&mut self, got: &[u8]) {
        let TakeBack::Watching { head, body } = &mut self.take_back else {
            return;
        };
        if *body > 0 {
            // Bytes after the body (sent ahead) may stay in hyper's buffer.
            match body.checked_sub(got.len() as u64) {
                Some(left) => *body = left,
                None => self.take_back = TakeBack::Off,
            }
            return;
        }
        head.extend_from_slice(got);
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            if head.len() > lean::LEAN_HEAD_MAX {
                self.take_back = TakeBack::Off;
            }
            return;
        };
        let after = (head.len() - end - 4) as u64;
        match lean::body_length(&head[..end + 4]) {
            Some(length) if after <= length => {
                head.clear();
                *body = length - after;
            }
            // A chunked body, or bytes past the body: not provable.
            _ => self.take_back = TakeBack::Off,
        }
    }

    /// Between requests, with the watch on: keeps `got` back if it can
    /// start a stream.
    fn keep_back(&mut self, got: &[u8]) -> bool {
        let between = matches!(
            &self.take_back,
            TakeBack::Watching { head, body: 0 } if head.is_empty()
        );
        if !(between && matches!(self.phase, Phase::Idle(_)) && lean::may_be_stream(got)) {
            return false;
        }
        self.unread(got.to_vec());
        self.take_back = TakeBack::Taken;
        true
    }

    /// Notices requests handed to the application and responses ended
    /// since the last look.
    fn update_phase(&mut self) {
        let requests = self.state.requests.load(Relaxed);
        if requests != self.seen_requests {
            self.seen_requests = requests;
            self.phase = Phase::Busy;
        }
        if matches!(self.phase, Phase::Busy) {
            if self.state.in_flight.load(Relaxed) == 0 {
                self.phase = Phase::Idle(Instant::now());
            } else if self.timer.is_some() {
                // Long-lived streams keep no timer.
                self.timer = None;
                self.timer_deadline = None;
            }
        }
    }

    /// Polls a timer for `deadline`, (re)arming it as needed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        if self.timer_deadline != Some(deadline) {
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.timer_deadline = Some(deadline);
        }
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// Takes the connection over to answer `error` and close.
    fn answer_and_close(&mut self, error: &ApiError) {
        self.out = raw_response(error);
        self.out_written = 0;
        self.ending = Ending::Closing;
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedIo<T> {
    /// Writes what is left of our own bytes.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_written < self.out.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_written += n;
        }
        if !self.out.is_empty() {
            self.out = Vec::new();
            self.out_written = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Drives [`Ending`] to `Done`: our answer, shutdown, linger.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.ending {
                Ending::No | Ending::Done => return Poll::Ready(Ok(())),
                Ending::Closing => {
                    ready!(self.poll_drain(cx))?;
                    ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                    ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
                    self.ending = Ending::Lingering { discarded: 0 };
                    // The linger has its own deadline.
                    self.timer_deadline = None;
                    let until = Instant::now() + LINGER;
                    let _ = self.poll_deadline(cx, until);
                }
                Ending::Lingering { discarded } => {
                    let mut scratch = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            let discarded = discarded + buf.filled().len();
                            self.ending = if discarded >= LINGER_BYTES {
                                Ending::Done
                            } else {
                                Ending::Lingering { discarded }
                            };
                        }
                        Poll::Ready(_) => self.ending = Ending::Done,
                        Poll::Pending => {
                            let until = self.timer_deadline.unwrap_or_else(Instant::now);
                            ready!(self.poll_deadline(cx, until));
                            self.ending = Ending::Done;
                        }
                    }
                }
            }
        }
    }

    /// Reads the first bytes (at most the HTTP/2 preface's 24) until the
    /// protocol is known; they are given back to the reader afterwards.
    /// True for HTTP/2 (prior knowledge, or known from ALPN).
    pub(crate) async fn detect_protocol(&mut self) -> io::Result<bool> {
        std::future::poll_fn(|cx| self.poll_detect(cx)).await
    }

    fn poll_detect(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            let matched = match self.protocol {
                Protocol::Http1 => return Poll::Ready(Ok(false)),
                Protocol::Http2 => return Poll::Ready(Ok(true)),
                Protocol::Unknown { matched } => matched,
            };
            let mut scratch = [0u8; H2_PREFACE.len()];
            let mut buf = ReadBuf::new(&mut scratch[matched..]);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
            let got = buf.filled();
            if got.is_empty() {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            self.replay.extend_from_slice(got);
            self.detect(got);
        }
    }

    /// The bytes of a head arrived in `got`: learn the protocol.
    fn detect(&mut self, got: &[u8]) {
        if let Protocol::Unknown { matched } = self.protocol {
            let expected = &H2_PREFACE[matched..];
            let n = got.len().min(expected.len());
            self.protocol = if got[..n] != expected[..n] {
                Protocol::Http1
            } else if matched + n == H2_PREFACE.len() {
                Protocol::Http2
            } else {
                Protocol::Unknown {
                    matched: matched + n,
                }
            };
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ending != Ending::No {
            // Ours now: hyper sees the end of the stream once we are done.
            return this.poll_finish(cx);
        }
        if let TakeBack::Taken = this.take_back {
            // Kept back for the lean path: hyper sees the end of the stream.
            return Poll::Ready(Ok(()));
        }
        if this.replay_pos < this.replay.len() {
            let n = (this.replay.len() - this.replay_pos).min(buf.remaining());
            buf.put_slice(&this.replay[this.replay_pos..this.replay_pos + n]);
            let given = this.replay_pos..this.replay_pos + n;
            if !matches!(this.take_back, TakeBack::Off) {
                let given = this.replay[given].to_vec();
                this.track(&given);
            }
            this.replay_pos += n;
            if this.replay_pos == this.replay.len() {
                // Read ahead bytes are kept only until given back.
                this.replay = Vec::new();
                this.replay_pos = 0;
            }
            if let Phase::Idle(_) = this.phase {
                this.phase = Phase::Head(Instant::now());
            }
            return Poll::Ready(Ok(()));
        }
        if this.protocol == Protocol::Http2 {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        this.update_phase();
        let before = buf.filled().len();
        if matches!(this.phase, Phase::Busy) {
            let read = Pin::new(&mut this.inner).poll_read(cx, buf);
            // A request's body (or, rarely, bytes sent ahead).
            this.track(&buf.filled()[before..]);
            return read;
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    this.detect(got);
                    if this.keep_back(got) {
                        buf.set_filled(before);
                        return Poll::Ready(Ok(()));
                    }
                    this.track(got);
                    if let Phase::Idle(_) = this.phase {
                        this.phase = Phase::Head(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if matches!(this.protocol, Protocol::Http2) {
                    return Poll::Pending;
                }
                let (deadline, idle) = match this.phase {
                    Phase::Idle(since) => (since + this.timeouts.keepalive, true),
                    Phase::Head(since) => (since + this.timeouts.header, false),
                    Phase::Busy => return Poll::Pending,
                };
                ready!(this.poll_deadline(cx, deadline));
                if idle {
                    // Nothing unanswered: close quietly (end of stream).
                    tracing::debug!("closed an idle connection");
                    this.ending = Ending::Done;
                    return Poll::Ready(Ok(()));
                }
                tracing::debug!("a request head did not arrive in time: 408");
                this.state.linger.store(true, Relaxed);
                this.answer_and_close(&ApiError::RequestTimeout {
                    part: "headers",
                    secs: this.timeouts.header.as_secs_f64().ceil() as u64,
                });
                this.poll_finish(cx)
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedIo<T> {
    /// Replaces a parser refusal at the start of `first` (see
    /// [`parser_refusal`]); the bytes of hyper's answer that it consumed.
    fn rewrite(&mut self, cx: &mut Context<'_>, first: &[u8]) -> Option<io::Result<usize>> {
        if self.protocol == Protocol::Http2 || self.state.in_flight.load(Relaxed) != 0 {
            return None;
        }
        let (len, error) = parser_refusal(first)?;
        tracing::debug!(code = error.code(), "the HTTP parser refused a request");
        self.out = raw_response(&error);
        self.out_written = 0;
        self.state.linger.store(true, Relaxed);
        // Hyper flushes and shuts down next; both write our bytes first.
        Some(match self.poll_drain(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(len),
        })
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.ending != Ending::No {
            // We answered on our own; whatever hyper adds is not sent.
            return Poll::Ready(Ok(buf.len()));
        }
        if let Some(result) = this.rewrite(cx, buf) {
            return Poll::Ready(result);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.ending != Ending::No {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(result) = this.rewrite(cx, first) {
                return Poll::Ready(result);
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ending == Ending::No {
            if !this.state.linger.load(Relaxed) {
                ready!(this.poll_drain(cx))?;
                return Pin::new(&mut this.inner).poll_shutdown(cx);
            }
            // A refusal: shut down, then let the client's last bytes in.
            this.ending = Ending::Closing;
        }
        this.poll_finish(cx)
    }
}
