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

// Smaller than the default dlmalloc; talc offers it only without the
// `atomics` target feature (no threads), which is how the package is built.
#[cfg(all(
    feature = "small-allocator",
    target_arch = "wasm32",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

mod client;
mod error;
mod event;
pub mod js;
pub mod reconnect;
mod transport;

pub use client::{
    Client, ClientBuilder, EventStream, Presence, PresenceClient, PresenceEvent, PresenceQuery,
    Subscription, TokenHook,
};
pub use error::Error;
pub use event::Event;
pub use reconnect::State;
pub use transport::Transport;
