//! A WebSocket client written by hand over a `TcpStream`: it sends frames a
//! library would refuse to build (unmasked, fragmented past the limit,
//! invalid UTF-8, oversized control frames) and reads the server's frames
//! without answering anything by itself.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Opcodes (RFC 6455 5.2).
pub mod opcode {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// How long any single read or write of these helpers may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The opcode.
    pub opcode: u8,
    /// The payload (servers do not mask).
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame (1005 when it has none).
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE).then(|| match self.payload.as_slice() {
            [high, low, ..] => u16::from_be_bytes([*high, *low]),
            _ => 1005,
        })
    }

    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// The bytes of one frame; `mask` is the client's masking key (`None`
/// sends it unmasked, which a server must refuse).
pub fn frame_bytes(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | u8::try_from(len).unwrap_or(125)),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// The masking key these helpers use.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A hand-made WebSocket connection.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    /// Bytes read past the last frame.
    buffer: Vec<u8>,
}

/// Sends an HTTP request head `head` (ending in `\r\n\r\n`) and reads the
/// response head; returns the status and the stream.
///
/// # Errors
/// When the connection fails or closes before a full head.
pub async fn http_head(
    addr: SocketAddr,
    head: &str,
) -> std::io::Result<(u16, String, TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response head"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response head",
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let rest = buffer[end + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, head, stream, rest))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

impl RawWs {
    /// Opens a WebSocket at `path` with extra request `headers`; `Err`
    /// holds the status of a refusal (0 when the connection failed).
    ///
    /// # Errors
    /// The HTTP status when the upgrade is refused.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, u16> {
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        match http_head(addr, &head).await {
            Ok((101, _, stream, buffer)) => Ok(Self { stream, buffer }),
            Ok((status, _, _, _)) => Err(status),
            Err(_) => Err(0),
        }
    }

    /// Opens the gateway's `/ws` (development mode), sends `connect` and
    /// reads `connected`.
    ///
    /// # Panics
    /// When any step fails.
    pub async fn gateway(addr: SocketAddr) -> Self {
        let mut ws = Self::connect(addr, "/ws", &[])
            .await
            .unwrap_or_else(|status| panic!("upgrade refused with {status}"));
        ws.send_text(r#"{"type":"connect"}"#).await;
        let connected = ws.next_data(WAIT).await.expect("a connected frame");
        assert!(
            connected.text().contains(r#""type":"connected""#),
            "{connected:?}"
        );
        ws
    }

    /// Writes raw bytes.
    ///
    /// # Errors
    /// When the socket write fails (the server closed it).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
    }

    /// Sends one frame, masked or not.
    ///
    /// # Errors
    /// As [`RawWs::write_raw`].
    pub async fn send_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
        masked: bool,
    ) -> std::io::Result<()> {
        let bytes = frame_bytes(fin, opcode, payload, masked.then_some(MASK));
        self.write_raw(&bytes).await
    }

    /// Sends a masked text frame.
    ///
    /// # Panics
    /// When the write fails.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, opcode::TEXT, text.as_bytes(), true)
            .await
            .unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    /// The next frame, or `None` at the end of the stream, on a read error
    /// or after `timeout`.
    pub async fn read_frame(&mut self, timeout: Duration) -> Option<RawFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.parse_buffered() {
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text or binary frame (skipping pings and pongs; a close
    /// frame is returned too).
    pub async fn next_data(&mut self, timeout: Duration) -> Option<RawFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.read_frame(left).await?;
            if !matches!(frame.opcode, opcode::PING | opcode::PONG) {
                return Some(frame);
            }
        }
    }

    /// Reads until the close frame and returns its code.
    ///
    /// # Panics
    /// When the stream ends, fails or times out first.
    pub async fn expect_close(&mut self, timeout: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.read_frame(left).await else {
                panic!("no close frame within {timeout:?} (stream ended or timed out)");
            };
            if let Some(code) = frame.close_code() {
                return code;
            }
        }
    }

    /// Whether the server closed the TCP connection within `timeout`
    /// (reads and discards everything until the end of the stream).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The underlying stream, to tune or to stop reading it.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    fn parse_buffered(&mut self) -> Option<RawFrame> {
        let buffer = &self.buffer;
        if buffer.len() < 2 {
            return None;
        }
        let fin = buffer[0] & 0x80 != 0;
        let opcode = buffer[0] & 0x0F;
        let masked = buffer[1] & 0x80 != 0;
        let (len, mut at) = match buffer[1] & 0x7F {
            126 => (
                usize::from(u16::from_be_bytes([*buffer.get(2)?, *buffer.get(3)?])),
                4,
            ),
            127 => {
                let bytes: [u8; 8] = buffer.get(2..10)?.try_into().ok()?;
                (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
            }
            len => (usize::from(len), 2),
        };
        let key = if masked {
            let key: [u8; 4] = buffer.get(at..at + 4)?.try_into().ok()?;
            at += 4;
            Some(key)
        } else {
            None
        };
        let mut payload = buffer.get(at..at + len)?.to_vec();
        if let Some(key) = key {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= key[i % 4];
            }
        }
        self.buffer.drain(..at + len);
        Some(RawFrame {
            fin,
            opcode,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_encoded_with_the_three_length_forms() {
        assert_eq!(
            frame_bytes(true, opcode::TEXT, b"hi", None),
            [0x81, 2, b'h', b'i']
        );
        let medium = frame_bytes(false, opcode::BINARY, &[0; 300], None);
        assert_eq!(&medium[..4], &[0x02, 126, 1, 44]);
        let large = frame_bytes(true, opcode::TEXT, &[0; 70_000], Some(MASK));
        assert_eq!(large[1], 0x80 | 127);
        assert_eq!(&large[2..10], &70_000u64.to_be_bytes());
        assert_eq!(large.len(), 14 + 70_000);
        // Masking is undone by xor with the same key.
        let masked = frame_bytes(true, opcode::TEXT, b"abcd", Some(MASK));
        let unmasked: Vec<u8> = masked[6..].iter().zip(MASK).map(|(b, k)| b ^ k).collect();
        assert_eq!(unmasked, b"abcd");
    }
}
