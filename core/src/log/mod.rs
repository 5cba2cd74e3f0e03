//! The message log as an instance follows it, without IO.
//!
//! Every engine is a log of messages: one epoch at a time, sequence numbers
//! 1, 2, 3, ... in each (see [`MessageId`](crate::message::MessageId)). The
//! memory engine's log is the local broker; Redis and NATS keep a shared
//! log that each instance follows. This module holds the decisions:
//!
//! - [`Follower`]: from the entries and states an engine reports, whether
//!   an instance can prove it missed nothing, or must tell its streams with
//!   `tidings.gap` ([`GapReason`]);
//! - [`LossWatch`]: a periodic probe of the log's head that finds entries
//!   a live feed lost when nothing after them shows the hole (a topic's
//!   last entry);
//! - [`IdempotencyWindow`]: retries with the same key answer the original
//!   id (memory mode; shared engines keep the keys themselves).
//!
//! Placement of a client's resume id is [`Broker::place`](crate::broker::Broker::place).

mod follower;
mod gap;
mod idempotency;
mod watch;

pub use follower::{Chain, Follower, LogState, Resync, ResyncTicket, Verdict};
pub use gap::GapReason;
pub use idempotency::{IdempotencyWindow, Seen};
pub use watch::{LossWatch, Probe, Walk};
