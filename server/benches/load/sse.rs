//! A small incremental Server-Sent Events parser for the load generator.
//!
//! It keeps only what the benchmark needs (the event name and its data) and
//! copies as little as it can: complete lines are read straight from the
//! received chunk; only a line split across two chunks is buffered.

/// Incremental SSE parser: feed it body chunks, it calls back once per event.
#[derive(Default)]
pub struct SseParser {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The `event:` field of the event being built (empty means `message`).
    event: Vec<u8>,
    /// The joined `data:` lines of the event being built.
    data: Vec<u8>,
    /// Whether the event being built has at least one `data:` line.
    has_data: bool,
}

impl SseParser {
    /// Parses `chunk`, calling `on_event(name, data)` for each complete event.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8], &[u8])) {
        let mut rest = chunk;
        if !self.partial.is_empty() {
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                self.partial.extend_from_slice(rest);
                return;
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..nl]);
            self.line(&line, &mut on_event);
            line.clear();
            self.partial = line;
            rest = &rest[nl + 1..];
        }
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.line(&rest[..nl], &mut on_event);
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                let name: &[u8] = if self.event.is_empty() {
                    b"message"
                } else {
                    &self.event
                };
                on_event(name, &self.data);
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // heartbeat comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {} // id, retry: not needed by the benchmark
        }
    }
}

/// Reads the unsigned integer that follows `key` in `hay` (e.g. `"seq":`).
pub fn find_u64(hay: &[u8], key: &[u8]) -> Option<u64> {
    let start = hay.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = hay[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold((0u64, 0usize), |(n, len), &b| {
            (n * 10 + u64::from(b - b'0'), len + 1)
        });
    (digits.1 > 0).then_some(digits.0)
}
