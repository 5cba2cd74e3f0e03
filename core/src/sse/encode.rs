//! SSE frame encoder: events, comments and `retry:` frames into a caller's buffer.
//!
//! Every function here appends one complete frame that ends with a blank
//! line, so frames can be concatenated in any order and each one is decoded
//! on its own by any conforming parser. Nothing is written when a function
//! returns an error.
//!
//! A published message is meant to be encoded once ([`Event::to_vec`]) and
//! the bytes shared by every subscriber.

use alloc::vec::Vec;
use core::fmt;

/// A heartbeat: an empty comment and a blank line.
///
/// Parsers ignore it, but it keeps proxies and idle timers from closing the
/// connection.
///
/// ```
/// use tidings_core::sse::{Decoder, HEARTBEAT};
///
/// let mut decoder = Decoder::default();
/// assert_eq!(decoder.feed(HEARTBEAT).count(), 0);
/// ```
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Why an [`Event`] cannot be encoded.
///
/// Writing such an event would let its author end the current line and forge
/// fields or whole events, so the encoder refuses it and writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// The `id` contains a CR or LF.
    IdContainsLineBreak,
    /// The `id` contains a NUL character, which parsers ignore.
    IdContainsNul,
    /// The event type contains a CR or LF.
    EventTypeContainsLineBreak,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IdContainsLineBreak => {
                "event id contains a line break (CR or LF); use an id without line breaks"
            }
            Self::IdContainsNul => {
                "event id contains a NUL character, which clients ignore; use an id without NUL"
            }
            Self::EventTypeContainsLineBreak => {
                "event type contains a line break (CR or LF); use a type without line breaks"
            }
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// One event to encode: optional `id`, optional event type, `data` and an
/// optional `retry` (reconnection time in milliseconds).
///
/// A conforming parser decodes the bytes back to the same event, with one
/// exception the format imposes: line breaks in `data` (CR, LF or CRLF) come
/// back as LF. An absent or empty event type is received as `"message"`.
///
/// ```
/// use tidings_core::sse::Event;
///
/// let frame = Event::new(r#"{"state":"shipped"}"#)
///     .with_id("42")
///     .with_event("status")
///     .to_vec()?;
/// assert_eq!(frame, b"id: 42\nevent: status\ndata: {\"state\":\"shipped\"}\n\n");
/// # Ok::<(), tidings_core::sse::EncodeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Event<'a> {
    /// The event id (`id:` field); `None` writes no `id` line. `Some("")`
    /// resets the client's last event id.
    pub id: Option<&'a str>,
    /// The event type (`event:` field); `None` means `"message"`.
    pub event: Option<&'a str>,
    /// The payload; may contain line breaks.
    pub data: &'a str,
    /// A new reconnection time in milliseconds (`retry:` field).
    pub retry: Option<u64>,
}

impl<'a> Event<'a> {
    /// An event with this data and no id, type or retry.
    #[must_use]
    pub const fn new(data: &'a str) -> Self {
        Self {
            id: None,
            event: None,
            data,
            retry: None,
        }
    }

    /// Sets the event id.
    #[must_use]
    pub const fn with_id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the event type.
    #[must_use]
    pub const fn with_event(mut self, event: &'a str) -> Self {
        self.event = Some(event);
        self
    }

    /// Sets the reconnection time in milliseconds.
    #[must_use]
    pub const fn with_retry(mut self, millis: u64) -> Self {
        self.retry = Some(millis);
        self
    }

    /// Checks that the id and event type can be written safely.
    ///
    /// ```
    /// use tidings_core::sse::{EncodeError, Event};
    ///
    /// let forged = Event::new("x").with_event("a\n\ndata: evil");
    /// assert_eq!(forged.validate(), Err(EncodeError::EventTypeContainsLineBreak));
    /// ```
    pub fn validate(&self) -> Result<(), EncodeError> {
        if let Some(id) = self.id {
            if has_line_break(id.as_bytes()) {
                return Err(EncodeError::IdContainsLineBreak);
            }
            if id.contains('\0') {
                return Err(EncodeError::IdContainsNul);
            }
        }
        if let Some(event) = self.event {
            if has_line_break(event.as_bytes()) {
                return Err(EncodeError::EventTypeContainsLineBreak);
            }
        }
        Ok(())
    }

    /// Appends the encoded event to `out`; on error `out` is left unchanged.
    ///
    /// Allocates only to grow `out` (at most once when the data has no line
    /// break).
    ///
    /// ```
    /// use tidings_core::sse::Event;
    ///
    /// let mut out = Vec::new();
    /// Event::new("line one\r\nline two").encode(&mut out)?;
    /// assert_eq!(out, b"data: line one\ndata: line two\n\n");
    /// # Ok::<(), tidings_core::sse::EncodeError>(())
    /// ```
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.validate()?;
        out.reserve(self.header_len() + DATA.len() + self.data.len() + 2);
        if let Some(id) = self.id {
            write_field(out, ID, id.as_bytes());
        }
        if let Some(event) = self.event {
            write_field(out, EVENT, event.as_bytes());
        }
        if let Some(retry) = self.retry {
            write_field(out, RETRY, Decimal::new(retry).as_bytes());
        }
        for_each_line(self.data.as_bytes(), |line| write_field(out, DATA, line));
        out.push(b'\n');
        Ok(())
    }

    /// Encodes the event into a new buffer of exactly the right size.
    ///
    /// ```
    /// use tidings_core::sse::Event;
    ///
    /// let frame = Event::new("hi").with_retry(1500).to_vec()?;
    /// assert_eq!(frame, b"retry: 1500\ndata: hi\n\n");
    /// # Ok::<(), tidings_core::sse::EncodeError>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len()?);
        self.encode(&mut out)?;
        Ok(out)
    }

    /// The exact number of bytes [`encode`](Self::encode) appends.
    ///
    /// Costs one scan of `data` for line breaks.
    ///
    /// ```
    /// use tidings_core::sse::Event;
    ///
    /// let event = Event::new("a\nb").with_id("7");
    /// let mut out = Vec::new();
    /// event.encode(&mut out)?;
    /// assert_eq!(event.encoded_len()?, out.len());
    /// # Ok::<(), tidings_core::sse::EncodeError>(())
    /// ```
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.validate()?;
        let mut len = self.header_len() + 1;
        for_each_line(self.data.as_bytes(), |line| {
            len += DATA.len() + line.len() + 1;
        });
        Ok(len)
    }

    /// Length of the `id`, `event` and `retry` lines.
    fn header_len(&self) -> usize {
        self.id.map_or(0, |id| ID.len() + id.len() + 1)
            + self.event.map_or(0, |ev| EVENT.len() + ev.len() + 1)
            + self
                .retry
                .map_or(0, |ms| RETRY.len() + Decimal::new(ms).as_bytes().len() + 1)
    }
}

/// Appends a comment frame: each line of `text` as a `: ` comment line, then
/// a blank line. Parsers ignore comments; line breaks in `text` are safe.
///
/// ```
/// use tidings_core::sse::encode_comment;
///
/// let mut out = Vec::new();
/// encode_comment("ping\nstill here", &mut out);
/// assert_eq!(out, b": ping\n: still here\n\n");
/// ```
pub fn encode_comment(text: &str, out: &mut Vec<u8>) {
    out.reserve(text.len() + 4);
    for_each_line(text.as_bytes(), |line| {
        if line.is_empty() {
            out.push(b':');
        } else {
            out.extend_from_slice(b": ");
            out.extend_from_slice(line);
        }
        out.push(b'\n');
    });
    out.push(b'\n');
}

/// Appends a frame that only sets the client's reconnection time (ms).
///
/// ```
/// use tidings_core::sse::encode_retry;
///
/// let mut out = Vec::new();
/// encode_retry(3000, &mut out);
/// assert_eq!(out, b"retry: 3000\n\n");
/// ```
pub fn encode_retry(millis: u64, out: &mut Vec<u8>) {
    write_field(out, RETRY, Decimal::new(millis).as_bytes());
    out.push(b'\n');
}

const ID: &[u8] = b"id: ";
const EVENT: &[u8] = b"event: ";
const DATA: &[u8] = b"data: ";
const RETRY: &[u8] = b"retry: ";

/// Writes `prefix` (field name, colon, space), `value` and LF.
///
/// The space after the colon is always written, so a value that itself
/// starts with a space keeps it (parsers strip exactly one).
#[inline]
fn write_field(out: &mut Vec<u8>, prefix: &[u8], value: &[u8]) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Whether `bytes` contains a CR or LF.
#[inline]
fn has_line_break(bytes: &[u8]) -> bool {
    // Ids and event types are short: a plain loop beats a SIMD search there.
    if bytes.len() < 32 {
        bytes.iter().any(|&b| b == b'\n' || b == b'\r')
    } else {
        memchr::memchr2(b'\n', b'\r', bytes).is_some()
    }
}

/// Calls `f` with each line of `text`, split at CRLF, LF or CR.
///
/// An empty text, and text ending in a line break, yield an empty last line:
/// `"a\n"` is the lines `"a"` and `""`, which decode back to `"a\n"`.
#[inline]
fn for_each_line(text: &[u8], mut f: impl FnMut(&[u8])) {
    let mut rest = text;
    while let Some(i) = memchr::memchr2(b'\n', b'\r', rest) {
        f(&rest[..i]);
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[i + skip..];
    }
    f(rest);
}

/// A `u64` formatted in base ten without allocating.
struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut n: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { buf, start }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn encoded(event: Event<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        event.encode(&mut out).unwrap();
        assert_eq!(out.len(), event.encoded_len().unwrap());
        out
    }

    #[test]
    fn single_line_event_with_all_fields() {
        let event = Event::new("{}").with_id("1").with_event("t").with_retry(10);
        assert_eq!(encoded(event), b"id: 1\nevent: t\nretry: 10\ndata: {}\n\n");
    }

    #[test]
    fn every_line_break_style_starts_a_new_data_line() {
        assert_eq!(
            encoded(Event::new("a\nb\rc\r\nd")),
            b"data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(encoded(Event::new("\n")), b"data: \ndata: \n\n");
        assert_eq!(encoded(Event::new("\r\r\n")), b"data: \ndata: \ndata: \n\n");
    }

    #[test]
    fn empty_data_is_one_empty_data_line() {
        assert_eq!(encoded(Event::new("")), b"data: \n\n");
    }

    #[test]
    fn leading_space_in_a_value_survives() {
        assert_eq!(
            encoded(Event::new(" x").with_id(" y")),
            b"id:  y\ndata:  x\n\n"
        );
    }

    #[test]
    fn unsafe_id_or_type_is_refused_and_nothing_is_written() {
        let cases = [
            (
                Event::new("x").with_id("1\n"),
                EncodeError::IdContainsLineBreak,
            ),
            (
                Event::new("x").with_id("\r1"),
                EncodeError::IdContainsLineBreak,
            ),
            (Event::new("x").with_id("1\0"), EncodeError::IdContainsNul),
            (
                Event::new("x").with_event("a\r\nb"),
                EncodeError::EventTypeContainsLineBreak,
            ),
        ];
        for (event, error) in cases {
            let mut out = vec![b'!'];
            assert_eq!(event.encode(&mut out), Err(error));
            assert_eq!(out, b"!");
            assert_eq!(event.encoded_len(), Err(error));
            assert_eq!(event.to_vec(), Err(error));
        }
    }

    #[test]
    fn nul_is_fine_in_event_type_and_data() {
        assert_eq!(
            encoded(Event::new("\0").with_event("\0")),
            b"event: \0\ndata: \0\n\n"
        );
    }

    #[test]
    fn comments_split_lines_and_end_with_a_blank_line() {
        let mut out = Vec::new();
        encode_comment("", &mut out);
        assert_eq!(out, b":\n\n");
        out.clear();
        encode_comment("a\r\nb\r", &mut out);
        assert_eq!(out, b": a\n: b\n:\n\n");
    }

    #[test]
    fn retry_frames_print_every_u64() {
        let mut out = Vec::new();
        encode_retry(0, &mut out);
        encode_retry(u64::MAX, &mut out);
        assert_eq!(out, b"retry: 0\n\nretry: 18446744073709551615\n\n");
    }
}
