//! Incremental, push-based SSE decoder following the WHATWG HTML standard's
//! "event stream interpretation".
//!
//! The caller owns the IO: it [`feed`](Decoder::feed)s bytes in chunks split
//! anywhere, takes the decoded items out, and calls
//! [`finish`](Decoder::finish) at the end of the stream.
//!
//! ```text
//!            feed(chunk)                    poll() / Drain
//!  bytes ──► [BOM] ──► lines (LF, CR, CRLF) ──► fields ──► Decoded::Event
//!                                                     └──► Decoded::Retry
//! ```
//!
//! Work and memory are linear in the input: each byte is scanned once, a
//! line split across chunks is only appended to, and [`Limits`] bound the
//! partial line and the event being assembled.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Size limits that keep a decoder's memory bounded.
///
/// ```
/// use tidings_core::sse::{Decoder, Limits};
///
/// let mut limits = Limits::default();
/// limits.max_line_len = 64 * 1024;
/// let decoder = Decoder::new(limits);
/// # let _ = decoder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest accepted line in bytes, without its line break. Default 1 MiB.
    pub max_line_len: usize,
    /// Largest accepted event data in bytes (the `data` lines joined with
    /// LF). Default 4 MiB.
    pub max_event_len: usize,
}

impl Limits {
    /// Limits with these maximum line and event data lengths in bytes.
    #[must_use]
    pub const fn new(max_line_len: usize, max_event_len: usize) -> Self {
        Self {
            max_line_len,
            max_event_len,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(1 << 20, 4 << 20)
    }
}

/// A stream broke one of the decoder's [`Limits`].
///
/// The decoder recovers by itself: the offending line is skipped up to its
/// line break and the event being assembled is discarded (nothing is
/// dispatched for it). Other events in the stream still come out. A caller
/// that prefers to drop the connection simply stops feeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeError {
    /// A line was longer than [`Limits::max_line_len`] bytes.
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// An event's data grew past [`Limits::max_event_len`] bytes.
    EventTooLarge {
        /// The limit in force.
        limit: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong { limit } => write!(
                f,
                "event stream line longer than {limit} bytes; the event was discarded \
                 (raise Limits::max_line_len if the server sends longer lines)"
            ),
            Self::EventTooLarge { limit } => write!(
                f,
                "event data larger than {limit} bytes; the event was discarded \
                 (raise Limits::max_event_len if the server sends larger events)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// A dispatched event, as a browser's `EventSource` would hand it to a
/// `MessageEvent` listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageEvent {
    /// The event type: the last `event` field, or `"message"`.
    pub event_type: String,
    /// The `data` lines joined with LF.
    pub data: String,
    /// The last event id in force when the event was dispatched (ids persist
    /// across events until changed).
    pub last_event_id: String,
}

/// One item a [`Decoder`] produces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decoded {
    /// An event to dispatch.
    Event(MessageEvent),
    /// The server set the reconnection time, in milliseconds (values past
    /// `u64::MAX` saturate).
    Retry(u64),
}

/// Incremental SSE decoder (sans-IO): bytes in, [`Decoded`] items out.
///
/// Drive it from any byte source: a tokio stream, a browser
/// `ReadableStream`, a test vector.
///
/// ```
/// use tidings_core::sse::{Decoded, Decoder};
///
/// let mut decoder = Decoder::default();
/// let mut events = Vec::new();
/// for chunk in [&b"id: 1\nevent: st"[..], b"atus\ndata: {\"a\"", b":1}\r", b"\n\r\n"] {
///     for item in decoder.feed(chunk) {
///         match item {
///             Ok(Decoded::Event(event)) => events.push(event),
///             Ok(Decoded::Retry(millis)) => println!("reconnect after {millis} ms"),
///             Ok(_) => {}
///             Err(error) => eprintln!("{error}"),
///         }
///     }
/// }
/// decoder.finish();
/// assert_eq!(events[0].event_type, "status");
/// assert_eq!(events[0].data, r#"{"a":1}"#);
/// assert_eq!(decoder.last_event_id(), "1");
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    /// Bytes of a leading byte order mark matched so far, or `BOM_DONE`.
    bom: u8,
    /// The previous chunk ended with CR: an LF at the start of the next one
    /// belongs to that line break.
    after_cr: bool,
    /// The start of a line that has not ended yet.
    line: Vec<u8>,
    /// The unfinished line is a `data` line whose value goes straight into
    /// `data`.
    data_line: Option<DataLine>,
    /// Skipping the rest of a line that broke `max_line_len`.
    skip_line: bool,
    /// Dropping the event being assembled because it broke a limit.
    skip_event: bool,
    data: Vec<u8>,
    event_type: Vec<u8>,
    /// The spec's "last event ID buffer".
    id_buffer: String,
    /// The spec's "last event ID string", set at each dispatch.
    last_event_id: String,
    retry: Option<u64>,
    ready: VecDeque<Result<Decoded, DecodeError>>,
}

/// A `data` line being streamed into the data buffer.
#[derive(Debug, Clone, Copy)]
struct DataLine {
    /// Bytes of the line so far, for `max_line_len`.
    len: usize,
    /// The value went past `max_event_len`; reported when the line ends.
    overflow: bool,
}

const DATA_PREFIX: &[u8] = b"data:";
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
const BOM_DONE: u8 = u8::MAX;

/// Data at least this long is handed over instead of copied at dispatch.
const MOVE_DATA_LEN: usize = 4096;

impl Default for Decoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Decoder {
    /// A decoder at the start of a stream.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            bom: 0,
            after_cr: false,
            line: Vec::new(),
            data_line: None,
            skip_line: false,
            skip_event: false,
            data: Vec::new(),
            event_type: Vec::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry: None,
            ready: VecDeque::new(),
        }
    }

    /// A decoder for a stream resumed after `last_event_id` (what the client
    /// sent as `Last-Event-ID`): events without an `id` field report it, as
    /// browsers do after a reconnection.
    ///
    /// ```
    /// use tidings_core::sse::{Decoded, Decoder, Limits};
    ///
    /// let mut decoder = Decoder::resuming(Limits::default(), "41");
    /// let item = decoder.feed(b"data: x\n\n").next();
    /// let Some(Ok(Decoded::Event(event))) = item else { panic!() };
    /// assert_eq!(event.last_event_id, "41");
    /// ```
    #[must_use]
    pub fn resuming(limits: Limits, last_event_id: &str) -> Self {
        let mut decoder = Self::new(limits);
        decoder.id_buffer.push_str(last_event_id);
        decoder.last_event_id.push_str(last_event_id);
        decoder
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The last event id as of the last dispatch (blank line): the value to
    /// send as `Last-Event-ID` when reconnecting.
    ///
    /// An `id` field takes effect at the end of its event, even when the
    /// event has no data and so is not dispatched.
    ///
    /// ```
    /// use tidings_core::sse::Decoder;
    ///
    /// let mut decoder = Decoder::default();
    /// assert_eq!(decoder.feed(b"id: 7\n\nid: 8\n").count(), 0);
    /// assert_eq!(decoder.last_event_id(), "7");
    /// ```
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The last reconnection time the server set, in milliseconds.
    ///
    /// ```
    /// use tidings_core::sse::Decoder;
    ///
    /// let mut decoder = Decoder::default();
    /// decoder.feed(b"retry: 2500\n").for_each(drop);
    /// assert_eq!(decoder.retry(), Some(2500));
    /// ```
    #[must_use]
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Bytes held for the unfinished line and event: at most about
    /// `max_line_len + max_event_len` (plus an event type and an id, each
    /// within `max_line_len`).
    ///
    /// ```
    /// use tidings_core::sse::Decoder;
    ///
    /// let mut decoder = Decoder::default();
    /// let _ = decoder.feed(b"data: 12345\nda");
    /// assert_eq!(decoder.buffered_len(), 6 + 2);
    /// ```
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.line.len() + self.data.len() + self.event_type.len() + self.id_buffer.len()
    }

    /// Decodes a chunk of the stream and returns the items it completed.
    ///
    /// Items not taken from the returned iterator stay queued for
    /// [`poll`](Self::poll) or the next `feed`. The chunk may end anywhere,
    /// even inside a UTF-8 character or between CR and LF.
    ///
    /// ```
    /// use tidings_core::sse::{Decoded, Decoder};
    ///
    /// let mut decoder = Decoder::default();
    /// assert_eq!(decoder.feed(b"data: hel").count(), 0);
    /// let items: Vec<_> = decoder.feed(b"lo\n\n").collect();
    /// assert!(matches!(&items[..], [Ok(Decoded::Event(e))] if e.data == "hello"));
    /// ```
    pub fn feed(&mut self, chunk: &[u8]) -> Drain<'_> {
        let mut input = chunk;
        while self.bom != BOM_DONE {
            let Some((&byte, rest)) = input.split_first() else {
                break;
            };
            let matched = usize::from(self.bom);
            if byte == BOM[matched] {
                input = rest;
                self.bom += 1;
                if usize::from(self.bom) == BOM.len() {
                    self.bom = BOM_DONE;
                }
            } else {
                // Not a byte order mark: what looked like its start is text.
                self.bom = BOM_DONE;
                self.decode_lines(&BOM[..matched]);
            }
        }
        self.decode_lines(input);
        Drain { decoder: self }
    }

    /// Takes the next decoded item, if any is queued.
    ///
    /// ```
    /// use tidings_core::sse::{Decoded, Decoder};
    ///
    /// let mut decoder = Decoder::default();
    /// let _ = decoder.feed(b"retry: 10\n");
    /// assert_eq!(decoder.poll(), Some(Ok(Decoded::Retry(10))));
    /// assert_eq!(decoder.poll(), None);
    /// ```
    pub fn poll(&mut self) -> Option<Result<Decoded, DecodeError>> {
        self.ready.pop_front()
    }

    /// Ends the stream: an unfinished event (no blank line yet) is discarded,
    /// as the standard says. Queued items stay available through
    /// [`poll`](Self::poll).
    ///
    /// The decoder is then ready for the next stream (a reconnection),
    /// keeping [`last_event_id`](Self::last_event_id) and
    /// [`retry`](Self::retry) as a browser's `EventSource` does.
    ///
    /// ```
    /// use tidings_core::sse::Decoder;
    ///
    /// let mut decoder = Decoder::default();
    /// assert_eq!(decoder.feed(b"id: 1\ndata: never dispatched\n").count(), 0);
    /// decoder.finish();
    /// assert_eq!(decoder.last_event_id(), "");
    /// assert_eq!(decoder.feed(b"data: next stream\n\n").count(), 1);
    /// ```
    pub fn finish(&mut self) {
        self.bom = 0;
        self.after_cr = false;
        self.line.clear();
        self.data_line = None;
        self.skip_line = false;
        self.skip_event = false;
        self.data.clear();
        self.event_type.clear();
        self.id_buffer.clone_from(&self.last_event_id);
    }

    /// Splits `input` into lines, continuing the partial line of earlier
    /// chunks.
    fn decode_lines(&mut self, mut input: &[u8]) {
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while let Some(end) = find_line_end(input) {
            self.end_line(&input[..end]);
            let crlf = input[end] == b'\r';
            input = &input[end + 1..];
            if crlf {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if !input.is_empty() {
            self.continue_line(input);
        }
    }

    /// `part` ends the current line (its line break follows).
    fn end_line(&mut self, part: &[u8]) {
        if self.skip_line {
            self.skip_line = false;
        } else if self.data_line.is_some() {
            if self.stream_data(part) {
                self.end_data_line();
            }
        } else if self.line.is_empty() {
            // The whole line is in this chunk: no copy.
            if part.len() > self.limits.max_line_len {
                self.line_too_long();
            } else {
                self.decode_line(part);
            }
        } else if self.line.len() + part.len() > self.limits.max_line_len {
            self.line.clear();
            self.line_too_long();
        } else {
            let mut line = core::mem::take(&mut self.line);
            line.extend_from_slice(part);
            self.decode_line(&line);
            line.clear();
            self.line = line;
        }
    }

    /// `part` continues the current line, which has not ended yet.
    fn continue_line(&mut self, part: &[u8]) {
        if self.skip_line {
            return;
        }
        if self.data_line.is_some() {
            if !self.stream_data(part) {
                self.skip_line = true;
            }
            return;
        }
        if self.line.len() + part.len() > self.limits.max_line_len {
            self.line.clear();
            self.line_too_long();
            self.skip_line = true;
            return;
        }
        self.line.extend_from_slice(part);
        // A long data line goes straight into the data buffer instead of
        // being copied twice. One byte past the colon must be known, to
        // decide whether it is the space to remove.
        if !self.skip_event
            && self.line.len() > DATA_PREFIX.len()
            && self.line.starts_with(DATA_PREFIX)
        {
            let value = &self.line[DATA_PREFIX.len()..];
            let value = value.strip_prefix(b" ").unwrap_or(value);
            // An oversized event is reported at the end of the line, as
            // when the line arrives whole: it may still turn out too long.
            let overflow = self.data.len() + value.len() > self.limits.max_event_len;
            if !overflow {
                self.data.extend_from_slice(value);
            }
            self.data_line = Some(DataLine {
                len: self.line.len(),
                overflow,
            });
            self.line.clear();
        }
    }

    /// Appends `part` of a data line being streamed into the data buffer;
    /// false if the line broke `max_line_len` (reported, event discarded).
    fn stream_data(&mut self, part: &[u8]) -> bool {
        let Some(line) = &mut self.data_line else {
            return false;
        };
        line.len += part.len();
        if line.len > self.limits.max_line_len {
            self.data_line = None;
            self.line_too_long();
            return false;
        }
        if !line.overflow {
            if self.data.len() + part.len() > self.limits.max_event_len {
                line.overflow = true;
            } else {
                self.data.extend_from_slice(part);
            }
        }
        true
    }

    fn end_data_line(&mut self) {
        match self.data_line.take() {
            Some(DataLine { overflow: true, .. }) => self.event_too_large(),
            Some(_) => self.data.push(b'\n'),
            None => {}
        }
    }

    fn line_too_long(&mut self) {
        self.ready.push_back(Err(DecodeError::LineTooLong {
            limit: self.limits.max_line_len,
        }));
        self.discard_event();
    }

    fn event_too_large(&mut self) {
        self.ready.push_back(Err(DecodeError::EventTooLarge {
            limit: self.limits.max_event_len,
        }));
        self.discard_event();
    }

    fn discard_event(&mut self) {
        self.skip_event = true;
        self.data.clear();
    }

    /// Interprets one complete line (without its line break).
    fn decode_line(&mut self, line: &[u8]) {
        let (name, value) = match memchr::memchr(b':', line) {
            None if line.is_empty() => return self.dispatch(),
            // A comment.
            Some(0) => return,
            Some(colon) => {
                let value = &line[colon + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (&line[..colon], value)
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.skip_event {
                    return;
                }
                // The buffer holds an LF after each line; the last one is dropped
                // at dispatch and does not count.
                if self.data.len() + value.len() > self.limits.max_event_len {
                    return self.event_too_large();
                }
                self.data.reserve(value.len() + 1);
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
            }
            // An id containing NUL is ignored.
            b"id" if memchr::memchr(0, value).is_none() => {
                self.id_buffer.clear();
                push_lossy(&mut self.id_buffer, value);
            }
            // A retry is taken only when it is all ASCII digits.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let millis = value.iter().fold(0u64, |n, digit| {
                    n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
                });
                self.retry = Some(millis);
                self.ready.push_back(Ok(Decoded::Retry(millis)));
            }
            _ => {}
        }
    }

    /// A blank line: dispatch the event being assembled, if it has data.
    fn dispatch(&mut self) {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.skip_event || self.data.is_empty() {
            self.skip_event = false;
            self.data.clear();
            self.event_type.clear();
            return;
        }
        // Drop the LF after the last data line.
        self.data.pop();
        let data = if self.data.len() >= MOVE_DATA_LEN {
            into_string_lossy(core::mem::take(&mut self.data))
        } else {
            let mut data = String::with_capacity(self.data.len());
            push_lossy(&mut data, &self.data);
            self.data.clear();
            data
        };
        let event_type = if self.event_type.is_empty() {
            String::from("message")
        } else {
            let mut event_type = String::with_capacity(self.event_type.len());
            push_lossy(&mut event_type, &self.event_type);
            self.event_type.clear();
            event_type
        };
        self.ready.push_back(Ok(Decoded::Event(MessageEvent {
            event_type,
            data,
            last_event_id: self.last_event_id.clone(),
        })));
    }
}

/// Finds the next CR or LF.
#[inline]
fn find_line_end(input: &[u8]) -> Option<usize> {
    // Most lines of a busy stream are short: a plain loop over the first
    // bytes is cheaper than setting up a SIMD search.
    const SHORT: usize = 16;
    if let Some(end) = input
        .iter()
        .take(SHORT)
        .position(|&b| b == b'\n' || b == b'\r')
    {
        return Some(end);
    }
    let rest = input.get(SHORT..)?;
    memchr::memchr2(b'\n', b'\r', rest).map(|end| end + SHORT)
}

/// Appends `bytes` to `out`, replacing invalid UTF-8 with U+FFFD.
///
/// Lines split only at ASCII bytes, which never belong to a multi-byte
/// sequence, so decoding each field on its own gives the same text as
/// decoding the whole stream first, as the standard does.
fn push_lossy(out: &mut String, bytes: &[u8]) {
    // `from_utf8` has the fast (ASCII, SIMD-friendly) path; `utf8_chunks`
    // only runs on invalid input.
    if let Ok(text) = core::str::from_utf8(bytes) {
        out.push_str(text);
        return;
    }
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

fn into_string_lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let mut text = String::with_capacity(error.as_bytes().len() + 16);
            push_lossy(&mut text, error.as_bytes());
            text
        }
    }
}

/// The items a [`Decoder::feed`] call completed; see [`Decoder::poll`].
#[derive(Debug)]
#[must_use = "items not taken stay queued in the decoder"]
pub struct Drain<'a> {
    decoder: &'a mut Decoder,
}

impl Iterator for Drain<'_> {
    type Item = Result<Decoded, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.decoder.poll()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let queued = self.decoder.ready.len();
        (queued, Some(queued))
    }
}

impl ExactSizeIterator for Drain<'_> {}
