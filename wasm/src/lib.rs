//! Tidings browser client: one Server-Sent Events stream for several topics,
//! with reconnection (exponential backoff, full jitter), resume by last event
//! id, duplicate dropping and typed handlers.
//!
//! The rules live in [`reconnect`], pure Rust tested on the host; the browser
//! adapter ([`Client`] and its transports) moves bytes and time in and out of
//! them. JavaScript gets the same client through [`js`] (the `tidings` npm
//! package).
#![warn(missing_docs)]

extern crate alloc;

mod client;
mod error;
mod event;
pub mod js;
pub mod reconnect;
mod transport;

pub use client::{Client, ClientBuilder, EventStream, Subscription, TokenHook};
pub use error::Error;
pub use event::Event;
pub use reconnect::State;
pub use transport::Transport;
