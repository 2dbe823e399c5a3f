//! The few frames of the channels-server gateway protocol (docs/protocol.md) the history
//! benchmark speaks: `connect`, `subscribe` (with `recover`), `publish`, and the `message` push.
//!
//! A bench message's `data` is `{"type":"bench.msg","seq":N,"sent_us":T,"pad":"xxx…"}`: `seq`
//! numbers it (loss and duplicate detection), `sent_us` is its publish time in microseconds
//! since the run's time base (latency), and `pad` brings `data` to the asked size.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// A client WebSocket over plain TCP.
pub type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The `type` of every message the benchmark publishes.
pub const BENCH_TYPE: &str = "bench.msg";

/// How long one request (`connect`, `subscribe`, `publish`) may wait for its answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a WebSocket to `url` (`ws://HOST/ws`) and completes the development-mode handshake:
/// `{"type":"connect"}`, answered by `connected`.
///
/// # Errors
///
/// A message naming the step that failed (connect, handshake, answer).
pub async fn open(url: &str) -> Result<Socket, String> {
    let mut ws = crate::load::connect(url, None).await?;
    send(&mut ws, r#"{"type":"connect"}"#.to_owned()).await?;
    let answer = next_json(&mut ws, ANSWER_TIMEOUT).await?;
    if answer["type"] != "connected" {
        return Err(format!("expected `connected`, got {answer}"));
    }
    Ok(ws)
}

/// Sends one text frame.
///
/// # Errors
///
/// The socket's write error, as text.
pub async fn send(ws: &mut Socket, text: String) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Reads the next text frame as JSON, skipping control frames, waiting at most `wait`.
///
/// # Errors
///
/// A timeout, a closed socket, or a frame that is not JSON.
pub async fn next_json(ws: &mut Socket, wait: Duration) -> Result<Value, String> {
    loop {
        let frame = timeout(wait, ws.next())
            .await
            .map_err(|_| format!("no frame within {wait:?}"))?;
        match frame {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).map_err(|e| format!("bad json: {e}"));
            }
            Some(Ok(Message::Close(close))) => return Err(format!("closed by server: {close:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("socket ended".to_owned()),
        }
    }
}

/// Sends `request` and returns the frame answering `id` (an answer or an `error`); frames in
/// between (pushes) are skipped.
///
/// # Errors
///
/// As [`next_json`], or an `error` answer.
pub async fn ask(ws: &mut Socket, id: u64, request: Value) -> Result<Value, String> {
    send(ws, request.to_string()).await?;
    loop {
        let frame = next_json(ws, ANSWER_TIMEOUT).await?;
        if frame["id"] == id {
            if frame["type"] == "error" {
                return Err(format!("error answer: {frame}"));
            }
            return Ok(frame);
        }
    }
}

/// Subscribes to `group`, with `recover: {offset, epoch}` when given; returns `subscribed`.
///
/// # Errors
///
/// As [`ask`], or an answer that is not `subscribed`.
pub async fn subscribe(
    ws: &mut Socket,
    id: u64,
    group: &str,
    recover: Option<(u64, &str)>,
) -> Result<Value, String> {
    let mut request = serde_json::json!({"type": "subscribe", "id": id, "group": group});
    if let Some((offset, epoch)) = recover {
        request["recover"] = serde_json::json!({"offset": offset, "epoch": epoch});
    }
    let answer = ask(ws, id, request).await?;
    if answer["type"] != "subscribed" {
        return Err(format!("expected `subscribed`, got {answer}"));
    }
    Ok(answer)
}

/// The text of a `publish` of bench message `seq` to `group`, request `id`, `data` padded to at
/// least `data_bytes`.
pub fn publish_frame(group: &str, id: u64, seq: u64, sent_us: u64, data_bytes: usize) -> String {
    let head =
        format!("{{\"type\":\"{BENCH_TYPE}\",\"seq\":{seq},\"sent_us\":{sent_us},\"pad\":\"");
    let pad = data_bytes.saturating_sub(head.len() + 2);
    let mut frame = format!("{{\"type\":\"publish\",\"id\":{id},\"group\":\"{group}\",\"data\":");
    frame.reserve(head.len() + pad + 3);
    frame.push_str(&head);
    frame.extend(std::iter::repeat_n('x', pad));
    frame.push_str("\"}}");
    frame
}

/// What the benchmark reads from a `message` push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Push {
    /// The group offset (present when the group keeps history).
    pub offset: Option<u64>,
    /// The bench message's sequence number.
    pub seq: u64,
    /// Its publish time, microseconds since the run's time base.
    pub sent_us: u64,
}

/// Reads a `message` push of a bench message without building a JSON tree (the receive path
/// runs once per delivery); `None` for any other frame.
pub fn scan_push(text: &str) -> Option<Push> {
    if !text.starts_with("{\"type\":\"message\"") {
        return None;
    }
    let data_at = text.find("\"data\":")?;
    let (envelope, data) = text.split_at(data_at);
    Some(Push {
        offset: number_after(envelope, "\"offset\":"),
        seq: number_after(data, "\"seq\":")?,
        sent_us: number_after(data, "\"sent_us\":")?,
    })
}

/// The decimal number right after the first `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_frame_is_valid_json_of_the_asked_size() {
        for size in [0, 100, 1000] {
            let text = publish_frame("bench.g", 7, 42, 1234, size);
            let value: Value = serde_json::from_str(&text).expect("valid json");
            assert_eq!(value["data"]["seq"], 42);
            assert_eq!(value["data"]["type"], BENCH_TYPE);
            let len = value["data"].to_string().len();
            assert!(len >= size && (size < 60 || len == size), "{size} -> {len}");
        }
    }

    #[test]
    fn scans_pushes_with_and_without_offsets() {
        let kept = r#"{"type":"message","group":"g","offset":17,"epoch":"k3j9","data":{"pad":"x","sent_us":9,"seq":3,"type":"bench.msg"}}"#;
        assert_eq!(
            scan_push(kept),
            Some(Push {
                offset: Some(17),
                seq: 3,
                sent_us: 9
            })
        );
        let plain = r#"{"type":"message","group":"g","data":{"type":"bench.msg","seq":4,"sent_us":10,"pad":"x"}}"#;
        assert_eq!(scan_push(plain).map(|p| (p.offset, p.seq)), Some((None, 4)));
        assert_eq!(scan_push(r#"{"type":"published","id":1}"#), None);
    }
}
