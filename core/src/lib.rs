//! Tidings' sans-IO core: the topic broker, the message log's decisions
//! and the Server-Sent Events codec.
//!
//! Nothing here touches a socket, a clock or a thread. The adapters
//! (`tidings-server` on tokio, `tidings-wasm` in the browser) feed bytes and
//! time in and take work out.
//!
//! - [`topic`]: topic names, patterns and the index that matches them;
//! - [`message`]: ids (epoch and sequence), event types, the outgoing
//!   message and its SSE frame, encoded once;
//! - [`broker`]: subscriptions, bounded queues, fan-out, history, replay;
//! - [`log`]: the follower that proves continuity (or says `tidings.gap`),
//!   idempotency keys;
//! - [`hub`]: the broker and those decisions together, as engines drive them;
//! - [`sse`]: the WHATWG SSE encoder and incremental decoder.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod broker;
pub mod hub;
pub mod log;
pub mod message;
pub mod sse;
pub mod topic;
