//! A deliberately naive event stream interpreter written line by line from
//! the WHATWG HTML standard ("9.2.6 Interpreting an event stream"), used as
//! the oracle for the incremental decoder in tests and the fuzz target.
//!
//! It decodes the whole stream first (UTF-8 decode: BOM stripped, invalid
//! bytes replaced), then splits lines and interprets fields, with no limits.

// Nested `if`s mirror the standard's steps ("Otherwise, ignore the field").
#![allow(clippy::collapsible_match)]

/// What the reference interpreter saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefItem {
    /// A dispatched event: type, data, last event id.
    Event(String, String, String),
    /// A `retry` field with only ASCII digits (saturating at `u64::MAX`).
    Retry(u64),
}

/// Interprets a complete stream; returns the items and the event source's
/// last event ID string at the end.
pub fn interpret(stream: &[u8]) -> (Vec<RefItem>, String) {
    // "Streams must be decoded using the UTF-8 decode algorithm", which
    // strips one leading BOM and replaces invalid sequences with U+FFFD.
    let bytes = stream.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(stream);
    let text = String::from_utf8_lossy(bytes);

    // Lines end with CRLF, LF or CR; a last line without an end is not a line.
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(std::mem::take(&mut current));
            }
            '\n' => lines.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }

    let mut items = Vec::new();
    let mut data = String::new();
    let mut event_type = String::new();
    let mut id_buffer = String::new();
    let mut last_event_id = String::new();
    for line in lines {
        if line.is_empty() {
            // Dispatch the event.
            last_event_id = id_buffer.clone();
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            let kind = if event_type.is_empty() {
                "message".to_string()
            } else {
                event_type.clone()
            };
            items.push(RefItem::Event(kind, data.clone(), last_event_id.clone()));
            data.clear();
            event_type.clear();
        } else if line.starts_with(':') {
            // A comment: ignore.
        } else {
            let (name, value) = match line.find(':') {
                Some(i) => {
                    let value = &line[i + 1..];
                    (&line[..i], value.strip_prefix(' ').unwrap_or(value))
                }
                None => (&line[..], ""),
            };
            match name {
                "event" => event_type = value.to_string(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" => {
                    if !value.contains('\0') {
                        id_buffer = value.to_string();
                    }
                }
                "retry" => {
                    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                        let n = value.bytes().fold(0u64, |n, d| {
                            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                        });
                        items.push(RefItem::Retry(n));
                    }
                }
                _ => {}
            }
        }
    }
    (items, last_event_id)
}
