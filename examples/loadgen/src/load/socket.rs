//! The load client's WebSocket, read frame by frame straight out of its read buffer.
//!
//! The receive path is the load generator's hot loop, and a load generator that costs as much
//! per delivery as the server it measures cannot show that it is not the bottleneck. With
//! `tokio_tungstenite` every frame was one pass through the stream adapter (two waker
//! registrations, a zeroed read buffer, a `Bytes` split and a UTF-8 re-check) and one pass
//! through the client's `select!`; here one `read` takes every frame the kernel has for the
//! socket and [`ClientSocket::frames`] hands each text frame to the caller as a `&str` slice of
//! the buffer, so the select and the clock read happen once per read, not per frame.
//!
//! Only what a load client needs is here: the opening handshake (request written by hand,
//! response parsed by `httparse`, key and accept value from tungstenite), unmasked server
//! frames in (text, binary, fragments, ping, pong, close; frame headers parsed by
//! tungstenite's [`FrameHeader`]), masked text and close frames out, pongs for pings. Other
//! tools of the load generator keep `tokio_tungstenite` ([`crate::load::connect`]).

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Bytes the buffer has room for before each read (the first read allocates it).
const READ_CHUNK: usize = 4096;
/// Largest message accepted (tungstenite's default); a bigger one is a protocol error.
const MAX_MESSAGE: usize = 16 << 20;
/// Largest handshake response accepted.
const MAX_RESPONSE: usize = 8192;
/// Headers the handshake response may have.
const MAX_HEADERS: usize = 32;

/// Why a connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol (the reason says how).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server closed the connection (close frame or end of stream).
    #[error("closed by the server")]
    Closed,
}

/// One client connection after the opening handshake.
#[derive(Debug)]
pub(crate) struct ClientSocket {
    stream: TcpStream,
    /// Bytes read and not yet parsed start at `start`.
    buf: Vec<u8>,
    start: usize,
    /// A fragmented message being put together: its opcode and the bytes so far.
    partial: Option<(Data, Vec<u8>)>,
    /// Pings answered at the next [`ClientSocket::flush_pongs`].
    pongs: Vec<Vec<u8>>,
    /// Frames written go through this buffer (masked in place).
    out: Vec<u8>,
}

/// Opens the TCP connection (from `source_ip` when given) and runs the opening handshake.
pub(crate) async fn connect(url: &str, source_ip: Option<IpAddr>) -> Result<ClientSocket, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    if uri.scheme_str() != Some("ws") {
        return Err(format!("only ws:// urls are supported, not {url}"));
    }
    let stream = open_tcp(&uri, source_ip).await?;
    let authority = uri.authority().map_or("", |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut socket = ClientSocket {
        stream,
        buf: Vec::new(),
        start: 0,
        partial: None,
        pongs: Vec::new(),
        out: Vec::new(),
    };
    socket
        .handshake(authority, path)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(socket)
}

/// Connects to `uri`'s host and port (from `source_ip` when given), with Nagle off.
pub(crate) async fn open_tcp(uri: &Uri, source_ip: Option<IpAddr>) -> Result<TcpStream, String> {
    let host = uri.host().ok_or("url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("resolve: {e}"))?
        .next()
        .ok_or("host resolves to nothing")?;
    let stream = match source_ip {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
            socket.connect(addr).await
        }
    }
    .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    Ok(stream)
}

impl ClientSocket {
    /// Writes the upgrade request and reads the response up to its blank line; bytes after it
    /// (frames the server sent at once) stay in the buffer.
    async fn handshake(&mut self, authority: &str, path: &str) -> Result<(), SocketError> {
        let key = generate_key();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        );
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response
                .parse(&self.buf)
                .map_err(|e| SocketError::Protocol(format!("bad response: {e}")))?;
            if let httparse::Status::Complete(length) = parsed {
                if response.code != Some(101) {
                    return Err(SocketError::Protocol(format!(
                        "status {:?}, not 101",
                        response.code
                    )));
                }
                let accept = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| h.value);
                if accept != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
                    return Err(SocketError::Protocol("wrong Sec-WebSocket-Accept".into()));
                }
                self.start = length;
                return Ok(());
            }
            if self.buf.len() >= MAX_RESPONSE {
                return Err(SocketError::Protocol("response too long".into()));
            }
            self.read().await?;
        }
    }

    /// Reads what the socket has (at least one byte, or an error; end of stream is
    /// [`SocketError::Closed`]). Cancel safe: dropped before it completes, it read nothing.
    pub(crate) async fn read(&mut self) -> Result<(), SocketError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.buf).await? {
            0 => Err(SocketError::Closed),
            _ => Ok(()),
        }
    }

    /// Hands every complete text message in the buffer to `on_text`, in order, and queues a
    /// pong for every ping; binary messages and pongs are skipped. A close frame from the
    /// server ends the connection ([`SocketError::Closed`]) after the messages before it.
    pub(crate) fn frames(&mut self, mut on_text: impl FnMut(&str)) -> Result<(), SocketError> {
        loop {
            let mut cursor = Cursor::new(&self.buf[self.start..]);
            let Some((header, length)) = FrameHeader::parse(&mut cursor)
                .map_err(|e| SocketError::Protocol(format!("frame header: {e}")))?
            else {
                return Ok(());
            };
            let length = usize::try_from(length)
                .ok()
                .filter(|l| *l <= MAX_MESSAGE)
                .ok_or_else(|| SocketError::Protocol(format!("frame of {length} bytes")))?;
            let header_len = usize::try_from(cursor.position())
                .map_err(|_| SocketError::Protocol("frame header too long".into()))?;
            let body = self.start + header_len;
            let Some(end) = body
                .checked_add(length)
                .filter(|end| *end <= self.buf.len())
            else {
                return Ok(());
            };
            if header.mask.is_some() || header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(SocketError::Protocol(
                    "masked or extended server frame".into(),
                ));
            }
            if matches!(header.opcode, OpCode::Control(_)) && (!header.is_final || length > 125) {
                return Err(SocketError::Protocol(
                    "fragmented or long control frame".into(),
                ));
            }
            self.start = end;
            let payload = &self.buf[body..end];
            match header.opcode {
                OpCode::Data(Data::Continue) => {
                    let Some((_, bytes)) = self.partial.as_mut() else {
                        return Err(SocketError::Protocol("continuation of nothing".into()));
                    };
                    if bytes.len() + payload.len() > MAX_MESSAGE {
                        return Err(SocketError::Protocol("message too long".into()));
                    }
                    bytes.extend_from_slice(payload);
                    // The last fragment ends the message: a text one is handed
                    // over, a binary one dropped.
                    if header.is_final
                        && let Some((Data::Text, bytes)) = self.partial.take()
                    {
                        on_text(text(&bytes)?);
                    }
                }
                OpCode::Data(_) if self.partial.is_some() => {
                    return Err(SocketError::Protocol(
                        "new message inside a fragmented one".into(),
                    ));
                }
                OpCode::Data(Data::Text) if header.is_final => on_text(text(payload)?),
                OpCode::Data(data) if !header.is_final => {
                    self.partial = Some((data, payload.to_vec()));
                }
                OpCode::Data(_) | OpCode::Control(Control::Pong) => {}
                OpCode::Control(Control::Ping) => self.pongs.push(payload.to_vec()),
                OpCode::Control(Control::Close) => return Err(SocketError::Closed),
                OpCode::Control(Control::Reserved(_)) => {
                    return Err(SocketError::Protocol("reserved control opcode".into()));
                }
            }
        }
    }

    /// Answers the pings [`ClientSocket::frames`] found.
    pub(crate) async fn flush_pongs(&mut self) -> Result<(), SocketError> {
        for payload in std::mem::take(&mut self.pongs) {
            self.write_frame(OpCode::Control(Control::Pong), &payload)
                .await?;
        }
        Ok(())
    }

    /// Writes one text message (one masked frame).
    pub(crate) async fn send_text(&mut self, text: &str) -> Result<(), SocketError> {
        self.write_frame(OpCode::Data(Data::Text), text.as_bytes())
            .await
    }

    /// Sends a close frame with `code` and `reason`, then reads until the server's close
    /// frame or the end of the stream (callers bound this with a timeout).
    pub(crate) async fn close(&mut self, code: u16, reason: &str) -> Result<(), SocketError> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.write_frame(OpCode::Control(Control::Close), &payload)
            .await?;
        loop {
            self.frames(|_| {})?;
            self.read().await?;
        }
    }

    async fn write_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SocketError> {
        let mask: [u8; 4] = rand::random();
        let header = FrameHeader {
            opcode,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        self.out.clear();
        header
            .format(payload.len() as u64, &mut self.out)
            .map_err(|e| SocketError::Protocol(format!("frame header: {e}")))?;
        let body = self.out.len();
        self.out.extend_from_slice(payload);
        for (i, byte) in self.out[body..].iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        self.stream.write_all(&self.out).await?;
        Ok(())
    }
}

/// A text message's bytes as `&str`; invalid UTF-8 is a protocol error.
fn text(bytes: &[u8]) -> Result<&str, SocketError> {
    std::str::from_utf8(bytes).map_err(|_| SocketError::Protocol("text frame is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    /// A tungstenite server on a free port that runs `serve` on the first connection.
    async fn server<F, Fut>(serve: F) -> String
    where
        F: FnOnce(tokio_tungstenite::WebSocketStream<TcpStream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
            serve(ws).await;
        });
        format!("ws://{addr}/ws")
    }

    /// Reads until `want` text messages arrived (or the connection ends).
    async fn texts(socket: &mut ClientSocket, want: usize) -> (Vec<String>, Option<SocketError>) {
        let mut got = Vec::new();
        loop {
            if let Err(e) = socket.frames(|t| got.push(t.to_owned())) {
                return (got, Some(e));
            }
            if got.len() >= want {
                return (got, None);
            }
            if let Err(e) = socket.read().await {
                return (got, Some(e));
            }
        }
    }

    #[tokio::test]
    async fn reads_texts_fragments_and_answers_pings_then_sees_the_close() {
        let url = server(|mut ws| async move {
            for text in ["one", "two"] {
                ws.send(Message::text(text)).await.expect("send");
            }
            ws.send(Message::binary(vec![1, 2, 3]))
                .await
                .expect("binary");
            ws.send(Message::Ping(b"are you there".to_vec().into()))
                .await
                .expect("ping");
            // A text message in three fragments, a pong between two of them.
            ws.feed(Message::Frame(Frame::message(
                "thr",
                OpCode::Data(Data::Text),
                false,
            )))
            .await
            .expect("first fragment");
            ws.feed(Message::Pong(Vec::new().into()))
                .await
                .expect("pong");
            for (part, last) in [("e", false), ("e ✓", true)] {
                let frame = Frame::message(part, OpCode::Data(Data::Continue), last);
                ws.feed(Message::Frame(frame)).await.expect("fragment");
            }
            ws.flush().await.expect("flush");
            // The client's answer to the ping, then its text.
            let mut seen = Vec::new();
            while seen.len() < 2 {
                match ws.next().await.expect("open").expect("frame") {
                    Message::Pong(p) => seen.push(format!("pong {}", String::from_utf8_lossy(&p))),
                    Message::Text(t) => seen.push(format!("text {t}")),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(seen, ["pong are you there", "text reply"]);
            ws.close(None).await.expect("close");
        })
        .await;
        let mut socket = connect(&url, None).await.expect("connect");
        let (got, error) = texts(&mut socket, 3).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(got, ["one", "two", "three ✓"]);
        socket.flush_pongs().await.expect("pong");
        socket.send_text("reply").await.expect("send");
        let (more, error) = texts(&mut socket, 1).await;
        assert!(more.is_empty(), "{more:?}");
        assert!(matches!(error, Some(SocketError::Closed)), "{error:?}");
    }

    #[tokio::test]
    async fn invalid_utf8_and_non_websocket_servers_are_errors() {
        let url = server(|mut ws| async move {
            let frame = Frame::message(vec![0xff, 0xfe], OpCode::Data(Data::Text), true);
            ws.send(Message::Frame(frame)).await.expect("send");
            // Wait for the client to hang up.
            while ws.next().await.is_some_and(|m| m.is_ok()) {}
        })
        .await;
        let mut socket = connect(&url, None).await.expect("connect");
        let (got, error) = texts(&mut socket, 1).await;
        assert!(got.is_empty());
        assert!(matches!(error, Some(SocketError::Protocol(_))), "{error:?}");

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 1024];
            let _read = tcp.read(&mut request).await;
            let response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            tcp.write_all(response.as_bytes()).await.expect("write");
        });
        let error = connect(&format!("ws://{addr}/ws"), None)
            .await
            .expect_err("a 200 is not an upgrade");
        assert!(error.contains("not 101"), "{error}");
    }

    #[tokio::test]
    async fn close_waits_for_the_servers_close() {
        let url = server(|mut ws| async move {
            // tungstenite answers the client's close frame with its own.
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        let mut socket = connect(&url, None).await.expect("connect");
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            socket.close(1000, "done"),
        )
        .await
        .expect("the server answers in time");
        assert!(matches!(closed, Err(SocketError::Closed)), "{closed:?}");
    }
}
