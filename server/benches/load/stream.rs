//! The subscriber's side of `GET /events`, on a plain `TcpStream`: one task
//! per connection reads the socket, undoes HTTP/1.1 chunked framing in place
//! and hands the bytes to the SSE parser. No second task per connection, no
//! channel between connection and body, so the load generator spends little
//! of the two cores it shares with the server.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// An open event stream whose response head was `200`.
pub struct EventStream {
    tcp: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` left over after the response head, not yet returned.
    pending: std::ops::Range<usize>,
    body: Framing,
}

/// How the response body is framed.
enum Framing {
    /// No framing: the body runs until the connection closes.
    Raw,
    Chunked(Chunked),
}

/// In-place decoder of HTTP/1.1 chunked transfer coding.
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum ChunkState {
    /// Reading the hex size.
    #[default]
    Size,
    /// Skipping a chunk extension up to the line end.
    Extension,
    /// Expecting the LF of the size line.
    SizeLf,
    /// Copying `size` more data bytes.
    Data,
    /// Expecting the CR after the data.
    DataCr,
    /// Expecting the LF after the data.
    DataLf,
    /// The last chunk was read: the body is over.
    End,
}

impl Chunked {
    /// Decodes `bytes` in place; returns how many data bytes now start it.
    fn decode(&mut self, bytes: &mut [u8]) -> Result<usize, String> {
        let (mut read, mut written) = (0, 0);
        while read < bytes.len() {
            let b = bytes[read];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).expect("hex digit") as u64;
                        self.size = self.size.checked_mul(16).ok_or("chunk size overflow")? + digit;
                    }
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(format!("bad chunk size byte {b:#x}")),
                },
                ChunkState::Extension => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err("bad chunk size line".into());
                    }
                    self.state = if self.size == 0 {
                        ChunkState::End
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let n = (self.size as usize).min(bytes.len() - read);
                    bytes.copy_within(read..read + n, written);
                    written += n;
                    read += n;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err("chunk data longer than its size".into());
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err("chunk data longer than its size".into());
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::End => return Ok(written),
            }
            read += 1;
        }
        Ok(written)
    }
}

impl EventStream {
    /// Sends `GET /events?topic=...` and reads the response head.
    pub async fn open(addr: SocketAddr, topics: &[&str]) -> Result<Self, String> {
        Self::open_with(addr, None, topics, None).await
    }

    /// [`open`](Self::open) from the local address `source` (any port).
    pub async fn open_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        topics: &[&str],
    ) -> Result<Self, String> {
        Self::open_with(addr, source, topics, None).await
    }

    /// [`open_from`](Self::open_from), resuming after `last_event_id`.
    pub async fn open_with(
        addr: SocketAddr,
        source: Option<IpAddr>,
        topics: &[&str],
        last_event_id: Option<&str>,
    ) -> Result<Self, String> {
        let mut tcp = match source {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .map_err(|e| format!("bind {ip}: {e}"))?;
                socket.connect(addr).await
            }
        }
        .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        // Topics here are made of [a-z0-9:>*-] only; fine in a query.
        let mut query: Vec<String> = topics
            .iter()
            .map(|t| format!("topic={}", t.replace('>', "%3E")))
            .collect();
        if let Some(id) = last_event_id {
            query.push(format!("lastEventId={id}"));
        }
        let request = format!(
            "GET /events?{} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
            query.join("&")
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("GET /events: {e}"))?;
        let mut buf = vec![0u8; 8192];
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                return Err("response head over 8 KiB".into());
            }
            let n = tcp
                .read(&mut buf[filled..])
                .await
                .map_err(|e| format!("GET /events: {e}"))?;
            if n == 0 {
                return Err("GET /events: connection closed before the response".into());
            }
            filled += n;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = match response.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => continue,
                Err(e) => return Err(format!("GET /events: bad response: {e}")),
            };
            let status = response.code.unwrap_or(0);
            if status != 200 {
                let body = String::from_utf8_lossy(&buf[head_len..filled]);
                return Err(format!("GET /events answered {status}: {body}"));
            }
            let chunked = response.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    && String::from_utf8_lossy(h.value)
                        .to_ascii_lowercase()
                        .contains("chunked")
            });
            return Ok(EventStream {
                tcp,
                buf,
                pending: head_len..filled,
                body: if chunked {
                    Framing::Chunked(Chunked::default())
                } else {
                    Framing::Raw
                },
            });
        }
    }

    /// The next piece of the body, or `None` once the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<&[u8]>, String> {
        loop {
            let range = if self.pending.is_empty() {
                if matches!(&self.body, Framing::Chunked(c) if c.state == ChunkState::End) {
                    return Ok(None);
                }
                let n = self
                    .tcp
                    .read(&mut self.buf)
                    .await
                    .map_err(|e| format!("reading the stream: {e}"))?;
                if n == 0 {
                    return Ok(None);
                }
                0..n
            } else {
                std::mem::replace(&mut self.pending, 0..0)
            };
            let bytes = &mut self.buf[range.clone()];
            let len = match &mut self.body {
                Framing::Raw => bytes.len(),
                Framing::Chunked(c) => c.decode(bytes)?,
            };
            if len > 0 {
                return Ok(Some(&self.buf[range.start..range.start + len]));
            }
        }
    }
}
