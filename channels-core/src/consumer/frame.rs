//! The events a connection exchanges with its transport: [`Frame`]s,
//! [`Inbound`] events from the client, [`Outbound`] items to it, close codes.
//!
//! Frame payloads are shared, not copied: [`Text`] and binary payloads are
//! reference-counted bytes, so a broadcast serialized once sits in every
//! member's outbound queue as the same buffer, down to the socket write.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

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
    /// The client kept sending frames far faster than its rate limit.
    pub const FLOOD: u16 = 4029;
}

/// The payload of a text frame: UTF-8 in shared, reference-counted bytes.
/// Cloning it is one reference-count increment.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(ByteString);

impl Text {
    /// A text from a static string (no allocation).
    pub const fn from_static(text: &'static str) -> Self {
        Self(ByteString::from_static(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UTF-8 bytes, shared (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// Wraps bytes that must be UTF-8 (checked).
    ///
    /// # Errors
    /// The UTF-8 error when they are not.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        ByteString::try_from(bytes).map(Self)
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Self(ByteString::from(text))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Self(ByteString::from(text))
    }
}

impl From<&String> for Text {
    fn from(text: &String) -> Self {
        Self(ByteString::from(text.as_str()))
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        text.as_str().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A data frame: text or binary.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (always valid UTF-8).
    Text(Text),
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
        Self::Text(text.into())
    }
}

impl From<&str> for Frame {
    fn from(text: &str) -> Self {
        Self::Text(text.into())
    }
}

impl From<Text> for Frame {
    fn from(text: Text) -> Self {
        Self::Text(text)
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
