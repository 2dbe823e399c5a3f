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
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
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
