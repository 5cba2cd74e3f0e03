//! Typed events as a `futures::Stream`.

use core::pin::Pin;
use core::task::{Context, Poll};
use futures_channel::mpsc::UnboundedReceiver;
use futures_core::Stream;

use super::Subscription;
use crate::error::Error;
use crate::event::Event;

/// Events of one type decoded as `T`; see [`Client::stream`](super::Client::stream).
#[must_use = "streams do nothing unless polled"]
pub struct EventStream<T> {
    _subscription: Subscription,
    receiver: UnboundedReceiver<Result<Event<T>, Error>>,
}

impl<T> EventStream<T> {
    pub(super) fn new(
        subscription: Subscription,
        receiver: UnboundedReceiver<Result<Event<T>, Error>>,
    ) -> Self {
        Self {
            _subscription: subscription,
            receiver,
        }
    }
}

impl<T> Stream for EventStream<T> {
    type Item = Result<Event<T>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.receiver).poll_next(cx)
    }
}
impl<T> Unpin for EventStream<T> {}
