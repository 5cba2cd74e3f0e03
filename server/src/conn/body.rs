//! Request and response bodies as the connection layer sees them: a
//! deadline for the whole request body, and a guard that counts the
//! response as in progress until hyper is done with it.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::stream::IoState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that must arrive whole before a deadline.
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Incoming,
    deadline: Option<Deadline>,
}

#[derive(Debug)]
struct Deadline {
    at: Instant,
    /// Made at the first wait: bodies that arrive at once never arm a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
    limit: Duration,
}

/// The request body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs_f64().ceil())]
pub(crate) struct BodyTimeout(Duration);

impl RequestBody {
    /// `body` with a deadline `limit` from now, unless it is empty; the
    /// flag turns true if the deadline passes before its end.
    pub(crate) fn new(body: Incoming, limit: Duration) -> (Self, Option<Arc<AtomicBool>>) {
        if body.is_end_stream() {
            return (
                Self {
                    inner: body,
                    deadline: None,
                },
                None,
            );
        }
        let expired = Arc::new(AtomicBool::new(false));
        let deadline = Deadline {
            at: Instant::now() + limit,
            sleep: None,
            expired: expired.clone(),
            limit,
        };
        (
            Self {
                inner: body,
                deadline: Some(deadline),
            },
            Some(expired),
        )
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(deadline) = &this.deadline {
            if deadline.expired.load(Relaxed) {
                return Poll::Ready(Some(Err(BodyTimeout(deadline.limit).into())));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let Some(deadline) = &mut this.deadline else {
                    return Poll::Pending;
                };
                let at = deadline.at;
                let sleep = deadline
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                deadline.expired.store(true, Relaxed);
                Poll::Ready(Some(Err(BodyTimeout(deadline.limit).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request as in progress ([`IoState::in_flight`]) until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<IoState>);

impl InFlight {
    /// Counts a new request on the connection of `io`.
    pub(crate) fn start(io: &Arc<IoState>) -> Self {
        io.requests.fetch_add(1, Relaxed);
        io.in_flight.fetch_add(1, Relaxed);
        Self(io.clone())
    }

    /// The connection's state.
    pub(crate) fn io(&self) -> &Arc<IoState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A response body that keeps its request counted as in progress until
/// hyper drops it (after its last frame).
#[derive(Debug)]
pub(crate) struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
