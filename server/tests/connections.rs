//! The connection layer on raw sockets: slow or idle clients are cut,
//! the number of open TCP connections is capped (in total and per
//! address) without starving new clients, and every rejection a client can
//! get, including those of the HTTP parser, carries the JSON error body.

mod support;

use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use support::*;
use tidings_server::{config::StreamWriter, limits::refusal_reserve};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// A connection to `server` from the loopback address `from` (any of
/// 127.0.0.0/8 reaches the server on Linux), so one test can play several
/// clients.
async fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    patiently("the connection", socket.connect(server))
        .await
        .unwrap()
}

/// One HTTP response read from a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?} (status {})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }

    /// Asserts the contract's error shape and returns the code.
    fn error_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let body = self.json();
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "an error message: {body}");
        body["error"]["code"].as_str().unwrap_or("").to_owned()
    }
}

/// Reads one response (head and `Content-Length` body) within the
/// patience, and not a byte more; panics if the connection ends first.
async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> Answer {
    patiently("a response", async {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => buf.push(byte[0]),
                Ok(_) => panic!(
                    "connection closed before a whole response: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
                Err(e) => panic!(
                    "read failed ({e}) after {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        assert!(response.parse(&buf).unwrap().is_complete());
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0u8; length];
        if let Err(e) = stream.read_exact(&mut body).await {
            panic!(
                "body cut short ({e}) after {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        Answer {
            status: response.code.unwrap(),
            headers,
            body,
        }
    })
    .await
}

/// Waits until the server closes the connection (end of file or reset).
async fn closed(stream: &mut (impl AsyncRead + Unpin), what: &str) {
    closed_within(stream, what, PATIENCE).await;
}

async fn closed_within(stream: &mut (impl AsyncRead + Unpin), what: &str, patience: Duration) {
    let mut extra = Vec::new();
    let closing = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => extra.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(patience, closing).await.is_err() {
        panic!(
            "the server did not close {what}; it sent {:?}",
            String::from_utf8_lossy(&extra)
        );
    }
}

/// Sends a request and reads the answer.
async fn ask(stream: &mut TcpStream, request: &[u8]) -> Answer {
    stream.write_all(request).await.unwrap();
    read_answer(stream).await
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";
const HEALTHZ_CLOSE: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";

/// A client that sends `head`, then one more byte every `pause`, and reads
/// what the server answers meanwhile: returns the answer once the server
/// has also closed the connection.
async fn slow_client(mut stream: TcpStream, head: &'static [u8], pause: Duration) -> Answer {
    let (mut reader, mut writer) = stream.split();
    writer.write_all(head).await.unwrap();
    let dribble = async {
        // The attack of issue 11 sends a byte every few seconds; here every
        // `pause`, far slower than a client that means it, for a long time.
        for _ in 0..1000 {
            tokio::time::sleep(pause).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    let answer = tokio::select! {
        answer = read_answer(&mut reader) => answer,
        _ = dribble => unreachable!(),
    };
    closed(&mut reader, "the slow client's connection").await;
    answer
}

#[tokio::test]
async fn a_publish_body_that_trickles_in_gets_408_and_the_socket_is_closed() {
    let t = start_with(|a| a.body_timeout = Duration::from_millis(500)).await;
    let stream = connect_from("127.0.0.1", t.server.local_addr()).await;
    let head = b"POST /publish HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n{";
    let answer = slow_client(stream, head, Duration::from_millis(200)).await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.error_code(), "request_timeout");
    assert_eq!(answer.header("connection"), Some("close"));

    // The server still publishes for clients that send their body at once.
    t.publish_one("demo:after", serde_json::json!(1)).await;
}

#[tokio::test]
async fn headers_that_trickle_in_get_408_and_the_socket_is_closed() {
    let t = start_with(|a| a.header_timeout = Duration::from_millis(500)).await;
    let stream = connect_from("127.0.0.1", t.server.local_addr()).await;
    let head = b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-slow: ";
    let answer = slow_client(stream, head, Duration::from_millis(200)).await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.error_code(), "request_timeout");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let t = start_with(|a| {
        a.keepalive_timeout = Duration::from_millis(500);
        a.header_timeout = Duration::from_secs(60);
    })
    .await;
    let mut stream = connect_from("127.0.0.1", t.server.local_addr()).await;
    // Keep-alive works: two requests on one connection.
    assert_eq!(ask(&mut stream, HEALTHZ).await.status, 200);
    assert_eq!(ask(&mut stream, HEALTHZ).await.status, 200);
    // Then, idle, it is closed, and with nothing unanswered no 408 is sent.
    // (Without a keep-alive timeout hyper would close it only after its
    // own 30 s header timeout: this wait gives up before that.)
    let mut rest = Vec::new();
    let reading = stream.read_to_end(&mut rest);
    match tokio::time::timeout(Duration::from_secs(20), reading).await {
        Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
        Err(_) => panic!("the idle keep-alive connection was not closed"),
    }
    eventually("the connection to be forgotten", async || {
        t.server.open_tcp_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn open_streams_are_not_cut_by_the_idle_or_header_timeouts() {
    let t = start_with(|a| {
        a.keepalive_timeout = Duration::from_millis(200);
        a.header_timeout = Duration::from_millis(200);
        a.heartbeat = Duration::from_secs(60);
    })
    .await;
    let mut s = t.subscribe(&["demo:quiet"]).await.unwrap();
    s.connected().await;
    // Well past both timeouts, with nothing written, the stream is still open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = t.publish_one("demo:quiet", serde_json::json!("late")).await;
    assert_eq!(s.event().await.last_event_id, id);
}

#[tokio::test]
async fn over_the_tcp_caps_new_clients_get_429_or_503_with_json_then_are_closed_at_accept() {
    let (total, per_ip) = (6, 3);
    let t = start_with(|a| {
        a.max_tcp_connections = Some(total);
        a.max_tcp_connections_per_ip = Some(per_ip);
    })
    .await;
    let addr = t.server.local_addr();

    // One address takes its share with connections that say nothing.
    let mut held = Vec::new();
    for _ in 0..per_ip {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    eventually("the held connections to be counted", async || {
        t.server.open_tcp_connections() == per_ip
    })
    .await;

    // Its next connection is refused with 429, the JSON body and Retry-After...
    let mut extra = connect_from("127.0.0.1", addr).await;
    let answer = ask(&mut extra, HEALTHZ).await;
    assert_eq!(answer.status, 429, "{answer:?}");
    assert_eq!(answer.error_code(), "too_many_connections");
    assert_eq!(answer.header("retry-after"), Some("5"));
    closed(&mut extra, "the refused connection").await;

    // ...while a client from another address is served.
    let mut other = connect_from("127.0.0.2", addr).await;
    let answer = ask(&mut other, HEALTHZ_CLOSE).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    closed(&mut other, "a connection: close exchange").await;

    // Fill the total from a third address: then everyone gets 503.
    for _ in 0..total - per_ip {
        held.push(connect_from("127.0.0.3", addr).await);
    }
    eventually("the total to be reached", async || {
        t.server.open_tcp_connections() == total
    })
    .await;
    let mut late = connect_from("127.0.0.4", addr).await;
    let answer = ask(&mut late, HEALTHZ).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.error_code(), "server_full");
    assert_eq!(answer.header("retry-after"), Some("5"));
    closed(&mut late, "the refused connection").await;

    // Refusals cost a socket too: past a small reserve of them, connections
    // are closed at accept without an answer.
    let mut refusing = Vec::new();
    for i in 0..refusal_reserve(total) {
        refusing.push(connect_from(&format!("127.0.1.{}", i + 1), addr).await);
    }
    eventually("the reserve to be in use", async || {
        t.server.open_tcp_connections() == total + refusal_reserve(total)
    })
    .await;
    let mut dropped = connect_from("127.0.0.5", addr).await;
    let _ = dropped.write_all(HEALTHZ).await;
    let mut rest = Vec::new();
    let _ = patiently("the drop at accept", dropped.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // Closing held connections frees their places.
    drop(held);
    drop(refusing);
    eventually("the places to be freed", async || {
        t.server.open_tcp_connections() == 0
    })
    .await;
    let mut again = connect_from("127.0.0.1", addr).await;
    assert_eq!(ask(&mut again, HEALTHZ).await.status, 200);
}

#[tokio::test]
async fn slowloris_connections_are_cut_while_new_clients_are_served() {
    let per_ip = 4;
    let mut t = start_with(|a| {
        a.max_tcp_connections = Some(100);
        a.max_tcp_connections_per_ip = Some(per_ip);
        a.header_timeout = Duration::from_millis(700);
    })
    .await;
    let addr = t.server.local_addr();
    // The well-behaved HTTP client comes from another address.
    t.http = reqwest::Client::builder()
        .local_address("127.0.0.3".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();

    // An attacker fills its address's share with headers that never end.
    let mut slow = Vec::new();
    for _ in 0..per_ip {
        let stream = connect_from("127.0.0.1", addr).await;
        let head = b"POST /publish HTTP/1.1\r\nhost: test\r\nx-slow: ";
        slow.push(tokio::spawn(slow_client(
            stream,
            head,
            Duration::from_millis(100),
        )));
    }
    eventually("the attack to hold its share", async || {
        t.server.open_tcp_connections() == per_ip
    })
    .await;

    // Meanwhile another address is served at once...
    let mut healthz = connect_from("127.0.0.2", addr).await;
    assert_eq!(ask(&mut healthz, HEALTHZ).await.status, 200);
    let mut s = t.subscribe(&["demo:ok"]).await.unwrap();
    s.connected().await;

    // ...and the slow connections are cut (408) and closed, which frees the
    // attacker's address for a well-behaved request.
    for client in slow {
        let answer = client.await.unwrap();
        assert_eq!(answer.status, 408, "{answer:?}");
    }
    let mut fresh = connect_from("127.0.0.1", addr).await;
    assert_eq!(ask(&mut fresh, HEALTHZ).await.status, 200);
}

/// Requests the HTTP parser refuses before any handler runs.
async fn refused_by_the_parser(request: &[u8]) -> Answer {
    let t = start().await;
    let mut stream = connect_from("127.0.0.1", t.server.local_addr()).await;
    // Written whole and at once: the answer may come before the last byte.
    let _ = stream.write_all(request).await;
    let answer = read_answer(&mut stream).await;
    closed(&mut stream, "the connection after a parse error").await;
    // The server is fine afterwards.
    let mut next = connect_from("127.0.0.1", t.server.local_addr()).await;
    assert_eq!(ask(&mut next, HEALTHZ).await.status, 200);
    answer
}

#[tokio::test]
async fn a_raw_angle_bracket_in_the_url_is_400_with_the_json_body() {
    let answer =
        refused_by_the_parser(b"GET /events?topic=demo:> HTTP/1.1\r\nhost: test\r\n\r\n").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.error_code(), "bad_request");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("percent-encode"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_url_too_long_is_414_with_the_json_body() {
    let mut request = b"GET /events?topic=demo:".to_vec();
    request.extend(std::iter::repeat_n(b'a', 70_000));
    request.extend_from_slice(b" HTTP/1.1\r\nhost: test\r\n\r\n");
    let answer = refused_by_the_parser(&request).await;
    assert_eq!(answer.status, 414, "{answer:?}");
    assert_eq!(answer.error_code(), "uri_too_long");
}

#[tokio::test]
async fn headers_too_large_are_431_with_the_json_body() {
    let mut request = b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 500_000));
    request.extend_from_slice(b"\r\n\r\n");
    let answer = refused_by_the_parser(&request).await;
    assert_eq!(answer.status, 431, "{answer:?}");
    assert_eq!(answer.error_code(), "headers_too_large");

    // Too many headers, each small.
    let mut request = b"GET /healthz HTTP/1.1\r\nhost: test\r\n".to_vec();
    for i in 0..200 {
        request.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let answer = refused_by_the_parser(&request).await;
    assert_eq!(answer.status, 431, "{answer:?}");
    assert_eq!(answer.error_code(), "headers_too_large");
}

#[tokio::test]
async fn a_malformed_header_is_400_with_the_json_body() {
    let answer =
        refused_by_the_parser(b"GET /healthz HTTP/1.1\r\nhost: test\r\nbad header: x\r\n\r\n")
            .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.error_code(), "bad_request");
}

#[tokio::test]
async fn pipelined_chunked_and_expect_continue_requests_still_work() {
    let t = start_with(|a| {
        a.header_timeout = Duration::from_millis(300);
        a.keepalive_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stream = connect_from("127.0.0.1", t.server.local_addr()).await;
    // Two requests in one write: two answers, in order.
    let mut two = HEALTHZ.to_vec();
    two.extend_from_slice(b"GET /nowhere HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(&two).await.unwrap();
    assert_eq!(read_answer(&mut stream).await.status, 200);
    let answer = read_answer(&mut stream).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );

    // A chunked publish on the same connection.
    let body = r#"{"topic":"demo:chunked","data":1}"#;
    let request = format!(
        "POST /publish HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let answer = ask(&mut stream, request.as_bytes()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.json()["id"].is_string());

    // Expect: 100-continue, the body sent after the interim answer.
    let request = format!(
        "POST /publish HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let answer = ask(&mut stream, body.as_bytes()).await;
    assert_eq!(answer.status, 200, "{answer:?}");

    // A request slower than the timeouts in total, but each part in time,
    // passes: the head timer runs from its first byte, the idle timer from
    // the end of the last response.
    tokio::time::sleep(Duration::from_millis(150)).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let answer = ask(&mut stream, b"host: test\r\n\r\n").await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// Reads one chunk of a chunked body: its data, or `None` for the last
/// (empty) chunk.
async fn read_chunk(stream: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    patiently("a chunk", async {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            stream
                .read_exact(&mut byte)
                .await
                .expect("a chunk size line");
            line.push(byte[0]);
        }
        let size = std::str::from_utf8(&line[..line.len() - 2]).unwrap();
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        let mut data = vec![0u8; size + 2];
        stream
            .read_exact(&mut data)
            .await
            .expect("the chunk's data");
        assert!(data.ends_with(b"\r\n"), "a chunk ends with CRLF");
        data.truncate(size);
        (size > 0).then_some(data)
    })
    .await
}

/// Reads chunks until one contains `needle`.
async fn chunk_with(stream: &mut (impl AsyncRead + Unpin), needle: &str) -> String {
    loop {
        let chunk = read_chunk(stream)
            .await
            .unwrap_or_else(|| panic!("the stream ended before {needle:?}"));
        let text = String::from_utf8(chunk).unwrap();
        if text.contains(needle) {
            return text;
        }
    }
}

/// A token that may read `topic` for about two seconds.
fn two_second_token(topic: &str) -> String {
    let grants = tidings_server::auth::Grants {
        publish: vec![],
        subscribe: vec![topic.to_owned()],
        info: None,
    };
    sign(tidings_server::auth::Claims::new(
        grants,
        Duration::from_secs(2),
        None,
    ))
}

/// The same exchange over both writers of HTTP/1.1 streams: the head says
/// `text/event-stream` in chunked coding, events arrive as chunks, a
/// request sent ahead while the stream is open is answered once the stream
/// ends (here, its token expires), on the same connection.
async fn stream_then_keep_alive(writer: StreamWriter) {
    let t = start_with(|a| {
        a.stream_writer = writer;
        a.jwt_leeway = Duration::ZERO;
        a.heartbeat = Duration::from_secs(60);
    })
    .await;
    let mut stream = connect_from("127.0.0.1", t.server.local_addr()).await;
    let short = two_second_token("secure:lean");
    let request = format!(
        "GET /events?topic=secure:lean HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {short}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_answer(&mut stream).await;
    assert_eq!(head.status, 200, "{writer:?}: {head:?}");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(head.header("content-length"), None);
    assert!(head.header("date").is_some(), "{writer:?}: {head:?}");
    assert!(
        head.header("cache-control").is_some(),
        "{writer:?}: {head:?}"
    );
    chunk_with(&mut stream, "event: tidings.connected").await;

    let writer_token = token(&["secure:>"], &[]);
    let id = t
        .publish(
            &serde_json::json!({"topic": "secure:lean", "data": "over the wire"}),
            Some(&writer_token),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = chunk_with(&mut stream, "over the wire").await;
    assert!(
        event.contains(&format!("id: {id}")),
        "{writer:?}: {event:?}"
    );

    // Sent ahead, while the stream is still open.
    stream.write_all(HEALTHZ).await.unwrap();
    chunk_with(&mut stream, "event: tidings.expired").await;
    assert_eq!(
        read_chunk(&mut stream).await,
        None,
        "{writer:?}: the last chunk"
    );
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 200, "{writer:?}: {answer:?}");
    // And the connection still serves.
    assert_eq!(ask(&mut stream, HEALTHZ_CLOSE).await.status, 200);
}

#[tokio::test]
async fn http1_streams_are_the_same_on_the_wire_with_every_writer() {
    tokio::join!(
        stream_then_keep_alive(StreamWriter::Direct),
        stream_then_keep_alive(StreamWriter::Lean),
        stream_then_keep_alive(StreamWriter::Hyper),
    );
}

#[tokio::test]
async fn a_refused_stream_answers_json_and_the_connection_serves_on() {
    let t = start().await;
    let mut stream = connect_from("127.0.0.1", t.server.local_addr()).await;
    let answer = ask(&mut stream, b"GET /events HTTP/1.1\r\nhost: test\r\n\r\n").await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "bad_request")
    );
    let answer = ask(
        &mut stream,
        b"GET /events?topic=secret:x HTTP/1.1\r\nhost: test\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    answer.error_code();
    // A stream after two refusals, then a publish, on the one connection.
    stream
        .write_all(b"GET /events?topic=demo:after HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut stream).await.status, 200);
    chunk_with(&mut stream, "tidings.connected").await;
    t.publish_one("demo:after", serde_json::json!("after"))
        .await;
    chunk_with(&mut stream, "\"after\"").await;

    // A client that asks to close is told so, and the connection closes.
    let mut stream = connect_from("127.0.0.1", t.server.local_addr()).await;
    let answer = ask(
        &mut stream,
        b"GET /events HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"));
    closed(&mut stream, "a connection whose client asked to close").await;
}

#[tokio::test]
async fn a_stream_whose_client_goes_away_ends_at_once_not_at_the_next_heartbeat() {
    for writer in [
        StreamWriter::Direct,
        StreamWriter::Lean,
        StreamWriter::Hyper,
    ] {
        let t = start_with(|a| {
            a.stream_writer = writer;
            a.heartbeat = Duration::from_secs(60);
        })
        .await;
        let mut stream = connect_from("127.0.0.1", t.server.local_addr()).await;
        stream
            .write_all(b"GET /events?topic=demo:gone HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_answer(&mut stream).await.status, 200);
        chunk_with(&mut stream, "tidings.connected").await;
        assert_eq!(t.metric("tidings_connections").await, 1.0, "{writer:?}");
        drop(stream);
        eventually(&format!("{writer:?}: the stream to end"), async || {
            t.metric("tidings_connections").await == 0.0
        })
        .await;
    }
}

#[tokio::test]
async fn absolute_form_and_http_1_0_stream_requests_are_served_too() {
    let t = start().await;
    // Absolute form (some clients send it): the lean writer takes it.
    let mut stream = connect_from("127.0.0.1", t.server.local_addr()).await;
    stream
        .write_all(b"GET http://test/events?topic=demo:abs HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let head = read_answer(&mut stream).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    chunk_with(&mut stream, "tidings.connected").await;
    t.publish_one("demo:abs", serde_json::json!("absolute"))
        .await;
    chunk_with(&mut stream, "\"absolute\"").await;

    // HTTP/1.0 has no chunked coding: hyper serves it, the body ends with
    // the connection.
    let mut old = connect_from("127.0.0.1", t.server.local_addr()).await;
    old.write_all(b"GET /events?topic=demo:old HTTP/1.0\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let head = read_answer(&mut old).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("transfer-encoding"), None, "{head:?}");
    t.publish_one("demo:old", serde_json::json!("one-point-oh"))
        .await;
    let mut body = Vec::new();
    patiently("the HTTP/1.0 event", async {
        let mut chunk = [0u8; 1024];
        while !String::from_utf8_lossy(&body).contains("one-point-oh") {
            let n = old.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&body));
            body.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(String::from_utf8_lossy(&body).contains("event: tidings.connected"));
}

/// Opens a stream on `stream` (already connected) and reads up to
/// `tidings.connected`.
async fn open_stream_on(stream: &mut TcpStream, topic: &str) {
    let request = format!("GET /events?topic={topic} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_answer(stream).await;
    assert_eq!(head.status, 200, "{head:?}");
    chunk_with(stream, "tidings.connected").await;
}

#[tokio::test]
async fn a_connection_that_served_other_requests_first_still_gets_the_lean_writer() {
    let t = start().await;
    // What a browser does: page and assets, then `EventSource` on the same
    // keep-alive connection.
    let mut browser = connect_from("127.0.0.1", t.server.local_addr()).await;
    for _ in 0..3 {
        assert_eq!(ask(&mut browser, HEALTHZ).await.status, 200);
    }
    // A refused stream goes through the lean path and back, too.
    let refused = ask(&mut browser, b"GET /events HTTP/1.1\r\nhost: test\r\n\r\n").await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(ask(&mut browser, HEALTHZ).await.status, 200);
    open_stream_on(&mut browser, "demo:reused").await;
    assert_eq!(t.metric("tidings_connections").await, 1.0);
    assert_eq!(
        t.metric("tidings_lean_streams").await,
        1.0,
        "the lean writer"
    );
    t.publish_one("demo:reused", serde_json::json!("reused"))
        .await;
    chunk_with(&mut browser, "\"reused\"").await;

    // After a publish with a `Content-Length` body (a page's `fetch`), too.
    let mut page = connect_from("127.0.0.1", t.server.local_addr()).await;
    let body = r#"{"topic":"demo:other","data":1}"#;
    let post = format!(
        "POST /publish HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(ask(&mut page, post.as_bytes()).await.status, 200);
    open_stream_on(&mut page, "demo:reused").await;
    assert_eq!(
        t.metric("tidings_lean_streams").await,
        2.0,
        "the lean writer"
    );

    // After a chunked body, the end of the body is hyper's to find, and it
    // may hold bytes of the next request: the connection stays with hyper,
    // and its stream works the same.
    let mut chunked = connect_from("127.0.0.1", t.server.local_addr()).await;
    let post = format!(
        "POST /publish HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    assert_eq!(ask(&mut chunked, post.as_bytes()).await.status, 200);
    open_stream_on(&mut chunked, "demo:reused").await;
    assert_eq!(t.metric("tidings_connections").await, 3.0);
    assert_eq!(t.metric("tidings_lean_streams").await, 2.0, "hyper's");
    t.publish_one("demo:reused", serde_json::json!("all")).await;
    for stream in [&mut browser, &mut page, &mut chunked] {
        chunk_with(stream, "\"all\"").await;
    }

    drop(browser);
    eventually("its lean stream to end", async || {
        t.metric("tidings_lean_streams").await == 1.0
    })
    .await;
}
