//! The websocket-shootout frames, and the payload the load generator puts inside them.
//!
//! The load generator's payload `P` is `{"r":RUN,"k":KEY,"t":MICROS,"w":WARM,"p":"xxx…"}`:
//! `r` identifies the load generator process (frames of other runs are counted, not measured),
//! `k` is the broadcast id or the sender's echo sequence number (for loss and duplicate
//! detection), `t` the send time in microseconds since the run's start (for latency), `w` marks
//! warm-up traffic that is not measured, and `p` pads the payload to `--payload-bytes`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The `type` of a shootout frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Kind {
    /// `echo`: sent back to the sender only.
    #[serde(rename = "echo")]
    Echo,
    /// `broadcast`: delivered to every connected client.
    #[serde(rename = "broadcast")]
    Broadcast,
    /// `broadcastResult`: the sender's acknowledgement of a broadcast.
    #[serde(rename = "broadcastResult")]
    BroadcastResult,
    /// Any other type; ignored by the load generator and the ceiling servers.
    #[serde(other)]
    Other,
}

/// The load generator's payload, as it travels inside a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Run id: a random number per load generator process.
    pub r: u64,
    /// Key: broadcast id (broadcast mode) or the sender's echo sequence number (echo mode).
    pub k: u64,
    /// Send time in microseconds since the run's time base.
    pub t: u64,
    /// Warm-up traffic, not measured.
    #[serde(default)]
    pub w: bool,
}

/// A frame as the load generator reads it; the padding is skipped, not copied.
#[derive(Debug, Deserialize)]
pub struct Incoming {
    /// The frame's `type`.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The payload, when it is one of ours.
    pub payload: Option<Payload>,
}

impl Incoming {
    /// Parses a text frame; `None` when it is not a shootout frame carrying our payload shape.
    ///
    /// The frame the load generator wrote comes back byte for byte from a server that splices
    /// the payload (as the shootout servers do), so [`Incoming::scan`] reads it without a JSON
    /// parser; any other spelling of the same JSON falls back to `serde_json`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::scan(text).or_else(|| serde_json::from_str(text).ok())
    }

    /// Reads a frame in exactly the layout [`client_frame`] writes, slicing the three numbers
    /// out and checking the padding, with no allocation; `None` for any other layout.
    pub fn scan(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("{\"type\":\"")?;
        let (kind, rest) = rest.split_once('"')?;
        let kind = match kind {
            "broadcast" => Kind::Broadcast,
            "broadcastResult" => Kind::BroadcastResult,
            "echo" => Kind::Echo,
            _ => return None,
        };
        let rest = rest.strip_prefix(",\"payload\":{\"r\":")?;
        let (r, rest) = scan_u64(rest)?;
        let (k, rest) = scan_u64(rest.strip_prefix(",\"k\":")?)?;
        let (t, rest) = scan_u64(rest.strip_prefix(",\"t\":")?)?;
        let rest = rest.strip_prefix(",\"w\":")?;
        let (w, rest) = if let Some(rest) = rest.strip_prefix("true") {
            (true, rest)
        } else {
            (false, rest.strip_prefix("false")?)
        };
        let pad = rest.strip_prefix(",\"p\":\"")?.strip_suffix("\"}}")?;
        if pad.bytes().any(|b| b == b'"' || b == b'\\') {
            return None;
        }
        Some(Self {
            kind,
            payload: Some(Payload { r, k, t, w }),
        })
    }
}

/// Reads the decimal digits at the start of `text` (a `u64` has at most 20; overflow is `None`).
fn scan_u64(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 20 || (digits > 1 && text.starts_with('0')) {
        return None;
    }
    let (number, rest) = text.split_at(digits);
    let mut value = 0u64;
    for d in number.bytes() {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((value, rest))
}

/// Builds the text of a `{"type":kind,"payload":{...}}` frame from the load generator.
///
/// `pad_to` is the minimum length of the payload object in bytes; `p` is filled with `x`.
pub fn client_frame(kind: &str, payload: &Payload, pad_to: usize) -> String {
    let head = format!(
        "{{\"type\":\"{kind}\",\"payload\":{{\"r\":{},\"k\":{},\"t\":{},\"w\":{},\"p\":\"",
        payload.r, payload.k, payload.t, payload.w
    );
    // The payload object starts at `{"r"`; its length so far plus the closing `"}`.
    let payload_len = head.len() - (kind.len() + 21) + 2;
    let pad = pad_to.saturating_sub(payload_len);
    let mut frame = String::with_capacity(head.len() + pad + 3);
    frame.push_str(&head);
    frame.extend(std::iter::repeat_n('x', pad));
    frame.push_str("\"}}");
    frame
}

/// A frame as a ceiling server reads it: the payload stays raw JSON and is never re-encoded.
#[derive(Debug, Deserialize)]
pub struct Request<'a> {
    /// The frame's `type`.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The payload exactly as the client wrote it.
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

impl<'a> Request<'a> {
    /// Parses a client frame; `None` when it is not valid shootout JSON.
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// Builds `{"type":"<kind>","payload":<raw>}` by splicing, serializing the payload zero times.
pub fn server_frame(kind: &str, payload: &RawValue) -> String {
    let raw = payload.get();
    let mut frame = String::with_capacity(raw.len() + kind.len() + 24);
    frame.push_str("{\"type\":\"");
    frame.push_str(kind);
    frame.push_str("\",\"payload\":");
    frame.push_str(raw);
    frame.push('}');
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frame_round_trips_and_pads() {
        let payload = Payload {
            r: 7,
            k: 42,
            t: 123_456,
            w: false,
        };
        for pad_to in [0, 10, 100, 1000] {
            let text = client_frame("broadcast", &payload, pad_to);
            let value: serde_json::Value = serde_json::from_str(&text).expect("valid json");
            let payload_len = value["payload"].to_string().len();
            assert!(payload_len >= pad_to, "{payload_len} < {pad_to}");
            if pad_to > 100 {
                assert_eq!(payload_len, pad_to);
            }
            let parsed = Incoming::parse(&text).expect("parses");
            assert_eq!(parsed.kind, Kind::Broadcast);
            assert_eq!(parsed.payload, Some(payload.clone()));
        }
    }

    #[test]
    fn scan_agrees_with_serde_and_declines_other_layouts() {
        for (kind, r, k, t, w) in [
            ("broadcast", 0, 0, 0, false),
            ("broadcastResult", u64::MAX, 7, 123, true),
            ("echo", 18_446_744_073_709, 1 << 40, 9, false),
        ] {
            let payload = Payload { r, k, t, w };
            let text = client_frame(kind, &payload, 80);
            let scanned = Incoming::scan(&text).expect("our own layout scans");
            let parsed: Incoming = serde_json::from_str(&text).expect("valid json");
            assert_eq!(scanned.kind, parsed.kind);
            assert_eq!(scanned.payload, parsed.payload);
        }
        // Same JSON, other spelling: the scan declines, the parse falls back to serde.
        let spaced = r#"{"type": "broadcast", "payload": {"r": 1, "k": 2, "t": 3}}"#;
        assert!(Incoming::scan(spaced).is_none());
        let parsed = Incoming::parse(spaced).expect("serde fallback");
        assert_eq!(
            parsed.payload.map(|p| (p.r, p.k, p.t, p.w)),
            Some((1, 2, 3, false))
        );
        for bad in [
            r#"{"type":"broadcast","payload":{"r":01,"k":2,"t":3,"w":false,"p":""}}"#,
            r#"{"type":"broadcast","payload":{"r":1,"k":2,"t":3,"w":false,"p":"a"b"}}"#,
            r#"{"type":"broadcast","payload":{"r":99999999999999999999,"k":2,"t":3,"w":false,"p":""}}"#,
            r#"{"type":"other","payload":{"r":1,"k":2,"t":3,"w":false,"p":""}}"#,
            r#"{"type":"broadcast","payload":{"r":1,"k":2,"t":3,"w":false,"p":""}"#,
        ] {
            assert!(Incoming::scan(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn server_frame_splices_the_raw_payload() {
        let request =
            Request::parse(r#"{"type":"broadcast","payload":{"a": [1, "x"]}}"#).expect("parses");
        assert_eq!(request.kind, Kind::Broadcast);
        let frame = server_frame("broadcastResult", request.payload);
        assert_eq!(
            frame,
            r#"{"type":"broadcastResult","payload":{"a": [1, "x"]}}"#
        );
        assert!(Request::parse("{\"type\":\"echo\"}").is_none());
        let other = Request::parse(r#"{"type":"nope","payload":1}"#).expect("parses");
        assert_eq!(other.kind, Kind::Other);
    }
}
