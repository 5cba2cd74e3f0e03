use alloc::{boxed::Box, string::String, sync::Arc, vec::Vec};

use crate::message::{ConnectionId, MessageId};
use crate::topic::Topic;

/// A published message as every subscriber sees it: stored once, shared
/// through an [`Arc`].
#[derive(Debug)]
pub struct Message<M> {
    pub(super) id: MessageId,
    pub(super) topic: Topic,
    pub(super) payload: M,
    pub(super) weight: usize,
    /// The stream that must not receive it (boxed: most messages name
    /// none, and history keeps it for streams that page their replay).
    pub(super) exclude: Option<Box<ConnectionId>>,
}

impl<M> Message<M> {
    /// The message's id, increasing in publish order.
    pub fn id(&self) -> MessageId {
        self.id
    }
    /// The topic it was published to.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }
    /// The payload given to publish (the server stores the SSE frame here).
    pub fn payload(&self) -> &M {
        &self.payload
    }
}

/// A shared, immutable published message.
pub type SharedMessage<M> = Arc<Message<M>>;

/// How many bytes a payload keeps alive, for the history's byte bound.
///
/// ```
/// use tidings_core::broker::Weigh;
/// assert_eq!(b"abc".to_vec().weight(), 3);
/// ```
pub trait Weigh {
    /// Bytes retained by this value (an estimate is fine).
    fn weight(&self) -> usize;
}

impl Weigh for Vec<u8> {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl Weigh for String {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl Weigh for Box<[u8]> {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl Weigh for Arc<[u8]> {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl Weigh for Arc<str> {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl Weigh for &'static str {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl Weigh for &'static [u8] {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl Weigh for () {
    fn weight(&self) -> usize {
        0
    }
}
impl Weigh for u64 {
    fn weight(&self) -> usize {
        8
    }
}
impl Weigh for u32 {
    fn weight(&self) -> usize {
        4
    }
}
impl Weigh for bytes::Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}
