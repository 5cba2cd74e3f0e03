//! Tidings server: real-time pub/sub over Server-Sent Events.
//!
//! A tokio + axum adapter around [`tidings_core`]: `GET /events` streams
//! pre-encoded SSE frames from the core broker, `POST /publish` feeds it,
//! with JWT auth, limits, metrics and graceful shutdown. The HTTP contract
//! is `docs/PROTOCOL.md`.
//!
//! ```no_run
//! # async fn run() -> Result<(), tidings_server::StartError> {
//! let server = tidings_server::start(tidings_server::config::ServeArgs::default()).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod auth;
pub mod config;
mod conn;
pub mod engine;
pub mod error;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod presence;
mod server;
pub mod stream;
pub mod tls;

pub use server::{
    RunningServer, SHUTDOWN_RETRY_MS, StartError, hub_config, memory_engine, start,
    start_with_engine,
};
