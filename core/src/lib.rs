//! Tidings' sans-IO core: the topic broker and the Server-Sent Events codec.
//!
//! Nothing here touches a socket, a clock or a thread. The adapters
//! (`tidings-server` on tokio, `tidings-wasm` in the browser) feed bytes and
//! time in and take work out.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod broker;
pub mod sse;
pub mod topic;
