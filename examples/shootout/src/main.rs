//! `shootout`: Hashrocket's websocket-shootout protocol as a rust-channels consumer, at `/ws`.
//!
//! Teaches: a [`WebsocketConsumer`] that joins one group, answers some frames itself (`echo`)
//! and fans others out through the channel layer (`broadcast` -> `group_send`), on whichever
//! layer the shared server flags choose. The hot path builds each outgoing frame once: the
//! client's payload is spliced into the reply as raw JSON (never decoded and re-encoded), the
//! broadcast frame travels through the layer as one ready-made string, and the first member to
//! handle it turns it into shared bytes that every member's outbound queue then holds
//! ([`Message::shared_frame`]).
//!
//! Protocol: `{"type":"echo","payload":P}` comes back to its sender unchanged;
//! `{"type":"broadcast","payload":P}` reaches every connected client as
//! `{"type":"broadcast","payload":P}`, and its sender also gets
//! `{"type":"broadcastResult","payload":P}` once the group send is done. Other frames are ignored.
//!
//! ```text
//! # one process, in-memory layer
//! cargo run --release -p shootout -- --bind 127.0.0.1:8000
//! # drive it: 1,000 clients broadcasting as fast as 16 frames in flight allow
//! cargo run --release -p loadgen --bin loadgen -- --url ws://127.0.0.1:8000/ws \
//!     --clients 1000 --mode broadcast --max 16 --duration 10
//! # two processes over Redis (core layer; or --layer redis-pubsub)
//! cargo run --release -p shootout -- --bind 127.0.0.1:8001 --layer redis --redis-url redis://127.0.0.1:6379
//! cargo run --release -p shootout -- --bind 127.0.0.1:8002 --layer redis --redis-url redis://127.0.0.1:6379
//! cargo run --release -p loadgen --bin loadgen -- --url ws://127.0.0.1:8001/ws \
//!     --url ws://127.0.0.1:8002/ws --clients 1000 --mode broadcast --max 16 --duration 10
//! ```
//!
//! The first line on stdout is `listening on ADDR` (handy with `--bind 127.0.0.1:0`).

use std::process::ExitCode;

use channels_core::consumer::{
    ConsumerContext, ConsumerError, ConsumerRouter, Frame, WebsocketConsumer,
};
use channels_core::{Message, Value, async_trait};
use channels_server::{App, Args, ServerError, Settings, shutdown};
use clap::Parser;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The group every connection joins.
const GROUP: &str = "shootout";
/// The layer message type of a broadcast; its `frame` field is the finished text frame.
const BROADCAST: &str = "shootout.broadcast";

/// A websocket-shootout server (`/ws`) on a rust-channels layer.
#[derive(Debug, Parser)]
#[command(name = "shootout", version)]
struct Cli {
    #[command(flatten)]
    server: Args,
}

/// The `type` of a client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Kind {
    #[serde(rename = "echo")]
    Echo,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(other)]
    Other,
}

/// A client frame; the payload is borrowed raw JSON, never decoded.
#[derive(Debug, Deserialize)]
struct Request<'a> {
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// Builds `{"type":"<kind>","payload":<raw>}` by splicing the raw payload in.
fn server_frame(kind: &str, payload: &RawValue) -> String {
    let raw = payload.get();
    let mut frame = String::with_capacity(raw.len() + kind.len() + 24);
    frame.push_str("{\"type\":\"");
    frame.push_str(kind);
    frame.push_str("\",\"payload\":");
    frame.push_str(raw);
    frame.push('}');
    frame
}

/// One shootout connection: a member of [`GROUP`].
#[derive(Debug)]
struct Shootout;

#[async_trait]
impl WebsocketConsumer for Shootout {
    fn groups(&self) -> Vec<String> {
        vec![GROUP.to_owned()]
    }

    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
    ) -> Result<(), ConsumerError> {
        let Frame::Text(text) = frame else {
            return Ok(());
        };
        let Ok(request) = serde_json::from_str::<Request<'_>>(&text) else {
            tracing::debug!("ignoring a frame that is not shootout JSON");
            return Ok(());
        };
        match request.kind {
            // The reply is the request itself: no copy, no re-encoding.
            Kind::Echo => ctx.send(Frame::Text(text)),
            Kind::Broadcast => {
                let broadcast = server_frame("broadcast", request.payload);
                let result = server_frame("broadcastResult", request.payload);
                let message = Message::new(BROADCAST).with("frame", broadcast);
                // A layer failure closes this connection with 1011: a benchmark must not
                // pretend a broadcast went out.
                ctx.group_send(GROUP, message).await?;
                ctx.send_text(result)
            }
            Kind::Other => Ok(()),
        }
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        if message_type != BROADCAST {
            return Err(ConsumerError::NoHandler {
                message_type: message_type.to_owned(),
            });
        }
        // Built once per broadcast, by the first member: every other member
        // queues the same shared bytes.
        let frame = message.shared_frame(BROADCAST, |message| {
            let text = message.get("frame").and_then(Value::as_str).unwrap_or("");
            Frame::Text(text.into())
        });
        if frame.is_empty() {
            tracing::warn!("dropping a broadcast without a string `frame`");
            return Ok(());
        }
        ctx.send(frame)
    }
}

async fn serve(settings: &Settings) -> Result<(), ServerError> {
    let layer = settings.build_layer().await?;
    let listener = settings.listen()?;
    println!("listening on {}", listener.local_addr()?);
    App::new(layer, settings.server.clone())
        .consumers(ConsumerRouter::new().route("/ws", |_| Shootout))
        .serve(listener, shutdown::signal())
        .await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.server.load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("shootout: {error}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = settings.init_logging();
    match serve(&settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shootout: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use channels_core::consumer::Communicator;

    use super::*;

    #[test]
    fn frames_splice_the_raw_payload() {
        let request: Request<'_> =
            serde_json::from_str(r#"{"type":"broadcast","payload":{"a": [1, "x"]}}"#).unwrap();
        assert_eq!(request.kind, Kind::Broadcast);
        assert_eq!(
            server_frame("broadcastResult", request.payload),
            r#"{"type":"broadcastResult","payload":{"a": [1, "x"]}}"#
        );
    }

    #[tokio::test]
    async fn echo_and_broadcast_through_the_layer() {
        let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
        let router = ConsumerRouter::new().route("/ws", |_| Shootout);
        let mut alice = Communicator::from_router(layer.clone(), &router, "/ws").unwrap();
        let mut bob = Communicator::from_router(layer, &router, "/ws").unwrap();
        assert!(alice.connect().await.unwrap().accepted);
        assert!(bob.connect().await.unwrap().accepted);

        let echo = r#"{"type":"echo", "payload":{"k":1}}"#;
        alice.send_text(echo).await.unwrap();
        assert_eq!(alice.receive_text().await.unwrap(), echo);

        alice
            .send_text(r#"{"type":"broadcast","payload":[1, 2]}"#)
            .await
            .unwrap();
        let broadcast = r#"{"type":"broadcast","payload":[1, 2]}"#;
        assert_eq!(bob.receive_text().await.unwrap(), broadcast);
        // The sender hears its result and (through its own channel) the broadcast, in any order.
        let mut heard = vec![
            alice.receive_text().await.unwrap(),
            alice.receive_text().await.unwrap(),
        ];
        heard.sort();
        let result = r#"{"type":"broadcastResult","payload":[1, 2]}"#;
        assert_eq!(heard, [broadcast, result]);

        // Not shootout JSON, or another type: ignored, the connection stays up.
        bob.send_text("not json").await.unwrap();
        bob.send_text(r#"{"type":"other","payload":1}"#)
            .await
            .unwrap();
        bob.send_text(r#"{"type":"echo","payload":2}"#)
            .await
            .unwrap();
        assert_eq!(
            bob.receive_text().await.unwrap(),
            r#"{"type":"echo","payload":2}"#
        );
        assert_eq!(alice.disconnect(1000).await.unwrap(), 1000);
    }
}
