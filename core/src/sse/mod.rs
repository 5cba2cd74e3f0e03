//! Server-Sent Events: frame encoder and incremental decoder (WHATWG rules).
//!
//! - [`Event`], [`encode_comment`], [`encode_retry`] and [`HEARTBEAT`] write
//!   frames into a caller's `Vec<u8>`; each frame ends with a blank line, so
//!   frames concatenate freely.
//! - [`Decoder`] turns bytes arriving in arbitrary chunks into
//!   [`MessageEvent`]s and reconnection times, exactly as the HTML standard's
//!   "event stream interpretation" says, with bounded memory ([`Limits`]).
//!
//! ```
//! use tidings_core::sse::{Decoded, Decoder, Event};
//!
//! let frame = Event::new("line 1\nline 2").with_id("9").with_event("note").to_vec()?;
//!
//! let mut decoder = Decoder::default();
//! let items: Vec<_> = frame.chunks(3).flat_map(|c| decoder.feed(c).collect::<Vec<_>>()).collect();
//! let [Ok(Decoded::Event(event))] = &items[..] else { panic!("{items:?}") };
//! assert_eq!((event.event_type.as_str(), event.data.as_str()), ("note", "line 1\nline 2"));
//! assert_eq!(event.last_event_id, "9");
//! # Ok::<(), tidings_core::sse::EncodeError>(())
//! ```
//!
//! # Driving the decoder
//!
//! The decoder never reads: the adapter moves bytes in. From any stream of
//! byte chunks (a hyper/reqwest body in tokio, or `Uint8Array`s read from a
//! browser `ReadableStream` and copied with `to_vec()`):
//!
//! ```
//! use futures::StreamExt;
//! use tidings_core::sse::{Decoded, Decoder};
//!
//! # futures::executor::block_on(async {
//! let mut body = futures::stream::iter([&b"retry: 1000\nda"[..], b"ta: hi\n\n"]);
//! let mut decoder = Decoder::default();
//! let mut received = Vec::new();
//! while let Some(chunk) = body.next().await {
//!     for item in decoder.feed(chunk) {
//!         match item {
//!             Ok(Decoded::Event(event)) => received.push(event.data),
//!             Ok(Decoded::Retry(_millis)) => { /* next reconnection delay */ }
//!             Ok(_) => {}
//!             Err(_limit) => { /* log it; the event was dropped */ }
//!         }
//!     }
//! }
//! decoder.finish(); // end of body: an unfinished event is dropped
//! // Reconnect with `Last-Event-ID: decoder.last_event_id()`.
//! assert_eq!(received, ["hi"]);
//! # });
//! ```

mod decode;
mod encode;

pub use decode::{DecodeError, Decoded, Decoder, Drain, Limits, MessageEvent};
pub use encode::{EncodeError, Event, HEARTBEAT, encode_comment, encode_retry};
