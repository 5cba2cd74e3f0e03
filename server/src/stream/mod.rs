//! Event streams: the SSE body of `GET /events` and the watchdog that
//! sends heartbeats and drops stuck connections.

pub(crate) mod direct;
mod events;
mod io;
mod watchdog;

pub(crate) use direct::DirectHandle;
pub(crate) use events::{EventStream, StreamParts};
pub use io::ConnectionInfo;
pub(crate) use io::{IoState, WatchedIo};
pub(crate) use watchdog::Watchdog;
