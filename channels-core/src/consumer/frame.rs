//! The events a connection exchanges with its transport: [`Frame`]s,
//! [`Inbound`] events from the client, [`Outbound`] items to it, close codes.

use std::fmt;

use bytes::Bytes;

/// WebSocket close codes (RFC 6455 section 7.4) the runtime and server use.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown) or the connection idled out.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The peer sent a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// The peer closed without a status code (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// The socket dropped without a close frame (never sent on the wire).
    pub const ABNORMAL: u16 = 1006;
    /// A text frame was not valid UTF-8 (or JSON was invalid, if configured).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The peer broke a policy (for example a slow reader).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame was larger than the limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The consumer failed.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The client did not read fast enough (its outbound queue filled).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A data frame: text or binary.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (always valid UTF-8).
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

impl Frame {
    /// Returns the frame's payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) => bytes.len(),
        }
    }

    /// Returns whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the text, if this is a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::Binary(_) => None,
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 120;
        match self {
            Self::Text(text) if text.len() > SHOWN => {
                let end = text
                    .char_indices()
                    .nth(SHOWN)
                    .map_or(text.len(), |(i, _)| i);
                write!(f, "Text({:?}... {} bytes)", &text[..end], text.len())
            }
            Self::Text(text) => write!(f, "Text({text:?})"),
            Self::Binary(bytes) => write!(f, "Binary({} bytes)", bytes.len()),
        }
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Frame {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Self {
        Self::Binary(bytes)
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Binary(Bytes::from(bytes))
    }
}

/// A close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code ([`close_code`]).
    pub code: u16,
    /// A short human-readable reason (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseFrame {
    /// Builds a close frame, cutting `reason` to the 123 bytes a close frame
    /// can carry.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }
}

impl CloseFrame {
    /// 1009: a frame over `limit` bytes.
    pub fn too_big(limit: usize) -> Self {
        Self::new(
            close_code::MESSAGE_TOO_BIG,
            format!("frame larger than {limit} bytes"),
        )
    }

    /// 1007: a text frame that is not valid UTF-8.
    pub fn invalid_utf8() -> Self {
        Self::new(close_code::INVALID_PAYLOAD, "text frame is not valid UTF-8")
    }
}

/// What the transport reports from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A data frame.
    Frame(Frame),
    /// A ping (the transport answers it; it counts as activity).
    Ping(Bytes),
    /// A pong, the answer to our keep-alive ping.
    Pong(Bytes),
    /// The client closed (with its close frame, if it sent one).
    Close(Option<CloseFrame>),
    /// The client broke a rule the transport enforces (a frame over the size
    /// limit, invalid UTF-8 in a text frame, a protocol error); the runtime
    /// closes the connection with this frame.
    Invalid(CloseFrame),
}

/// What the runtime asks the transport to send to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A data frame.
    Frame(Frame),
    /// A keep-alive ping.
    Ping(Bytes),
    /// Close the connection; nothing follows it.
    Close(CloseFrame),
}
