//! The publisher's HTTP/1.1 client: one keep-alive connection (hyper's
//! low-level client API, no pool).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Opens one HTTP/1.1 connection and drives it on its own task.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (send, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Reads a whole response body as text (for error messages).
async fn body_text(body: Incoming) -> String {
    match body.collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(e) => format!("<body error: {e}>"),
    }
}

/// A keep-alive connection for `POST /publish`.
pub struct Publisher {
    addr: SocketAddr,
    send: SendRequest<Full<Bytes>>,
}

impl Publisher {
    /// Connects to the server at `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        Ok(Publisher {
            addr,
            send: connect(addr).await?,
        })
    }

    /// Posts one JSON body (a message or an array of them) and waits for `200`.
    pub async fn publish(&mut self, body: Bytes) -> Result<(), String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("publish connection: {e}"))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri("/publish")
            .header(HOST, self.addr.to_string())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = self
            .send
            .send_request(request)
            .await
            .map_err(|e| format!("POST /publish: {e}"))?;
        let status = response.status();
        let text = body_text(response.into_body()).await;
        if status != StatusCode::OK {
            return Err(format!("POST /publish answered {status}: {text}"));
        }
        Ok(())
    }

    /// `GET path` on this connection; returns the status.
    pub async fn get_status(&mut self, path: &str) -> Result<StatusCode, String> {
        self.get(path).await.map(|(status, _)| status)
    }

    /// `GET path` on this connection; returns the status and the body.
    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, String), String> {
        self.send.ready().await.map_err(|e| e.to_string())?;
        let request = Request::get(path)
            .header(HOST, self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = self
            .send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = body_text(response.into_body()).await;
        Ok((status, text))
    }
}
