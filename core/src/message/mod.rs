//! Messages from publish to the wire: ids, event types, the checked
//! outgoing message and its SSE frame, encoded once.
//!
//! A message's life: the adapter checks what a publisher sent into an
//! [`Outgoing`] (valid [`Topic`](crate::topic::Topic), [`EventType`],
//! optional `exclude` [`ConnectionId`] and [`IdempotencyKey`]); the log
//! gives it a [`MessageId`] (its [`Epoch`] and sequence number); it is
//! encoded once into a [`Frame`] that every stream shares.

mod connection;
mod event_type;
mod frame;
mod id;
mod idempotency_key;
mod outgoing;

pub use connection::{ConnectionId, ParseConnectionIdError};
pub use event_type::{EventType, EventTypeError, MAX_EVENT_TYPE_LEN, RESERVED_PREFIX};
pub use frame::{CONNECTED_EVENT, Frame, GAP_EVENT};
pub use id::{Epoch, MessageId, ParseMessageIdError};
pub use idempotency_key::{IdempotencyKey, IdempotencyKeyError, MAX_IDEMPOTENCY_KEY_LEN};
pub use outgoing::Outgoing;
