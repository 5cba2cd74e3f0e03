//! Tidings browser client: one Server-Sent Events stream for several topics,
//! with reconnection (exponential backoff, full jitter), resume by last event
//! id, duplicate dropping and typed handlers.
//!
//! The rules live in [`reconnect`], pure Rust tested on the host; the browser
//! adapter moves bytes and time in and out of them.
#![warn(missing_docs)]

extern crate alloc;

pub mod reconnect;
