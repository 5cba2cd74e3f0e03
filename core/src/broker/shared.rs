//! One broker shared between threads or tasks, with RAII subscriptions.

use alloc::{sync::Arc, vec::Vec};
use core::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use lock_api::{Mutex, MutexGuard, RawMutex};

use super::{
    Broker, Drain, Placement, Published, SharedMessage, Subscribed, SubscriptionId, Weigh,
};
use crate::{
    message::ConnectionId,
    topic::{Pattern, Topic},
};

/// A [`Broker`] behind one lock, cloneable and shareable between threads.
///
/// The lock type is any [`lock_api::RawMutex`]: parking_lot's on a server
/// (see [`SyncBroker`]), a spin lock or a critical section on bare metal.
/// Critical sections are short: publish does one fan-out over the matching
/// subscriptions and never waits for a reader.
pub struct SharedBroker<M, R: RawMutex> {
    inner: Arc<Mutex<R, Broker<M>>>,
}

/// A [`SharedBroker`] locked by parking_lot's mutex.
///
/// ```
/// use tidings_core::broker::{Broker, BrokerConfig, Placement, SyncBroker};
/// use tidings_core::message::Epoch;
/// use tidings_core::topic::{Pattern, Topic};
///
/// let broker = SyncBroker::new(Broker::new(BrokerConfig::default(), Epoch::from_random(1), 0));
/// let (mut sub, _) = broker.subscribe(&[Pattern::new("news:>")?], Placement::Live, None);
/// std::thread::scope(|s| {
///     s.spawn(|| broker.publish(Topic::new("news:eu").unwrap(), "hello", None));
/// });
/// let mut got = Vec::new();
/// assert_eq!(sub.try_recv_many(&mut got, 8), Ok(1));
/// assert_eq!(*got[0].payload(), "hello");
/// drop(sub); // unsubscribes
/// assert_eq!(broker.lock().stats().subscriptions, 0);
/// # Ok::<(), tidings_core::topic::TopicError>(())
/// ```
#[cfg(feature = "std")]
pub type SyncBroker<M> = SharedBroker<M, parking_lot::RawMutex>;

impl<M, R: RawMutex> Clone for SharedBroker<M, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<M, R: RawMutex> fmt::Debug for SharedBroker<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBroker").finish_non_exhaustive()
    }
}

impl<M, R: RawMutex> SharedBroker<M, R> {
    /// Shares `broker`.
    pub fn new(broker: Broker<M>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(broker)),
        }
    }

    /// Locks the broker for direct use (stats, `publish_at`, ...).
    /// Keep the guard briefly: every publish and receive waits for it.
    pub fn lock(&self) -> MutexGuard<'_, R, Broker<M>> {
        self.inner.lock()
    }

    /// Subscribes; the returned handle unsubscribes when dropped. See
    /// [`Broker::subscribe`].
    pub fn subscribe(
        &self,
        patterns: &[Pattern],
        placement: Placement,
        connection: Option<ConnectionId>,
    ) -> (Subscription<M, R>, Subscribed)
    where
        M: Weigh,
    {
        let subscribed = self.inner.lock().subscribe(patterns, placement, connection);
        let handle = Subscription {
            broker: self.clone(),
            id: subscribed.id,
            open: true,
        };
        (handle, subscribed)
    }
}

impl<M: Weigh, R: RawMutex> SharedBroker<M, R> {
    /// Publishes; see [`Broker::publish`].
    pub fn publish(&self, topic: Topic, payload: M, exclude: Option<ConnectionId>) -> Published {
        self.inner.lock().publish(topic, payload, exclude)
    }
}

/// Why a [`Subscription`] delivers nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscriber fell behind its queue bound. Close the stream; the
    /// client resumes from history with its last event id.
    Lagged,
    /// The subscription was closed (shutdown, or `close` on the handle).
    Closed,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lagged => {
                "subscriber fell behind its queue bound; reconnect with the last event id to resume"
            }
            Self::Closed => "subscription closed",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RecvError {}

/// A subscription to a [`SharedBroker`]. Dropping it (or [`close`]) removes
/// it from the broker, once.
///
/// It is a [`Stream`](futures_core::Stream) of messages; servers that write
/// many frames at once use [`poll_recv_many`](Self::poll_recv_many).
///
/// [`close`]: Self::close
pub struct Subscription<M, R: RawMutex> {
    broker: SharedBroker<M, R>,
    id: SubscriptionId,
    open: bool,
}

impl<M, R: RawMutex> fmt::Debug for Subscription<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("open", &self.open)
            .finish()
    }
}

impl<M, R: RawMutex> Subscription<M, R> {
    /// The subscription's id in the broker.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// Moves up to `max` waiting messages into `out`, or registers the
    /// task's waker and returns `Pending` when none is waiting.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<SharedMessage<M>>,
        max: usize,
    ) -> Poll<Result<usize, RecvError>> {
        if !self.open {
            return Poll::Ready(Err(RecvError::Closed));
        }
        let mut broker = self.broker.inner.lock();
        match broker.drain(self.id, out, max) {
            Drain::Ready(0) => {
                // A replay page held only messages excluded for this
                // stream: come back for the next one.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Drain::Ready(n) => Poll::Ready(Ok(n)),
            Drain::Empty => {
                broker.register_waker(self.id, cx.waker());
                Poll::Pending
            }
            Drain::Lagged => Poll::Ready(Err(RecvError::Lagged)),
            Drain::Closed => Poll::Ready(Err(RecvError::Closed)),
        }
    }

    /// Moves up to `max` waiting messages into `out` and, when none is left
    /// waiting, leaves `waker` to be woken by the next one, under one lock
    /// (where [`poll_recv_many`](Self::poll_recv_many) takes a second call
    /// to register). Returns how many it moved and whether `waker` is left.
    ///
    /// ```
    /// # use tidings_core::broker::{Broker, BrokerConfig, Placement, SyncBroker};
    /// # use tidings_core::message::Epoch;
    /// # use tidings_core::topic::{Pattern, Topic};
    /// # let broker = SyncBroker::new(Broker::new(BrokerConfig::default(), Epoch::from_random(1), 0));
    /// let (mut sub, _) = broker.subscribe(&[Pattern::new("news:>")?], Placement::Live, None);
    /// broker.publish(Topic::new("news:eu")?, "hello", None);
    /// let mut got = Vec::new();
    /// let waker = std::task::Waker::noop();
    /// assert_eq!(sub.recv_many_then_listen(waker, &mut got, 8), Ok((1, true)));
    /// # Ok::<(), tidings_core::topic::TopicError>(())
    /// ```
    pub fn recv_many_then_listen(
        &mut self,
        waker: &Waker,
        out: &mut Vec<SharedMessage<M>>,
        max: usize,
    ) -> Result<(usize, bool), RecvError> {
        if !self.open {
            return Err(RecvError::Closed);
        }
        let mut broker = self.broker.inner.lock();
        let moved = match broker.drain(self.id, out, max) {
            Drain::Ready(n) => n,
            Drain::Empty => 0,
            Drain::Lagged => return Err(RecvError::Lagged),
            Drain::Closed => return Err(RecvError::Closed),
        };
        let listening = broker.pending(self.id) == 0 && !broker.is_replaying(self.id);
        if listening {
            broker.register_waker(self.id, waker);
        }
        Ok((moved, listening))
    }

    /// Waits for messages and moves up to `max` of them into `out`.
    pub fn recv_many<'a>(
        &'a mut self,
        out: &'a mut Vec<SharedMessage<M>>,
        max: usize,
    ) -> impl Future<Output = Result<usize, RecvError>> + 'a {
        core::future::poll_fn(move |cx| self.poll_recv_many(cx, out, max))
    }

    /// Moves up to `max` waiting messages into `out` without waiting;
    /// `Ok(0)` when none is waiting.
    pub fn try_recv_many(
        &mut self,
        out: &mut Vec<SharedMessage<M>>,
        max: usize,
    ) -> Result<usize, RecvError> {
        if !self.open {
            return Err(RecvError::Closed);
        }
        match self.broker.inner.lock().drain(self.id, out, max) {
            Drain::Ready(n) => Ok(n),
            Drain::Empty => Ok(0),
            Drain::Lagged => Err(RecvError::Lagged),
            Drain::Closed => Err(RecvError::Closed),
        }
    }

    /// True while the subscription catches up from history (see
    /// [`Broker::subscribe`]); false once it is live or closed.
    pub fn is_replaying(&self) -> bool {
        self.open && self.broker.inner.lock().is_replaying(self.id)
    }

    /// Unsubscribes now. Later calls, and the drop, do nothing.
    pub fn close(&mut self) {
        if core::mem::replace(&mut self.open, false) {
            self.broker.inner.lock().unsubscribe(self.id);
        }
    }
}

impl<M, R: RawMutex> Drop for Subscription<M, R> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<M, R: RawMutex> Unpin for Subscription<M, R> {}

impl<M, R: RawMutex> futures_core::Stream for Subscription<M, R> {
    type Item = Result<SharedMessage<M>, RecvError>;

    /// Yields messages; a lag yields one `Err(Lagged)`, then the stream ends.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.open {
            return Poll::Ready(None);
        }
        let mut one = Vec::with_capacity(1);
        match this.poll_recv_many(cx, &mut one, 1) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(_)) => Poll::Ready(one.pop().map(Ok)),
            Poll::Ready(Err(RecvError::Closed)) => {
                this.close();
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.close();
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}
