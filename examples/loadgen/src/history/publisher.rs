//! The one publishing connection: WebSocket `publish` frames with a bounded number in flight.

use std::ops::Range;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::gateway::{ANSWER_TIMEOUT, Socket, publish_frame};

/// Publishes bench messages `seqs` to `group` over `ws`, keeping at most `in_flight` publishes
/// without their `published` answer; returns when every one is answered.
///
/// `sent_us` in each message is its send time since `base`. The request `id` is the `seq`.
///
/// # Errors
///
/// A write or read failure, an `error` answer (e.g. `rate_limited`: start the server with
/// `--client-rate-limit 0`), or an answer that takes longer than [`ANSWER_TIMEOUT`].
pub async fn publish_range(
    ws: &mut Socket,
    group: &str,
    seqs: Range<u64>,
    in_flight: u64,
    data_bytes: usize,
    base: Instant,
) -> Result<(), String> {
    let in_flight = in_flight.max(1);
    let (mut next, end) = (seqs.start, seqs.end);
    let mut answered = seqs.start;
    while answered < end {
        let mut wrote = false;
        while next < end && next - answered < in_flight {
            let sent_us = base.elapsed().as_micros() as u64;
            let frame = publish_frame(group, next, next, sent_us, data_bytes);
            ws.feed(Message::text(frame))
                .await
                .map_err(|e| format!("publish: {e}"))?;
            next += 1;
            wrote = true;
        }
        if wrote {
            ws.flush().await.map_err(|e| format!("publish: {e}"))?;
        }
        let frame = timeout(ANSWER_TIMEOUT, ws.next())
            .await
            .map_err(|_| format!("no `published` within {ANSWER_TIMEOUT:?}"))?;
        match frame {
            Some(Ok(Message::Text(text))) => {
                let text = text.as_str();
                if text.starts_with("{\"type\":\"published\"") {
                    answered += 1;
                } else if text.starts_with("{\"type\":\"error\"") {
                    return Err(format!("publish refused: {text}"));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("publisher read: {e}")),
            None => return Err("publisher socket ended".to_owned()),
        }
    }
    Ok(())
}
