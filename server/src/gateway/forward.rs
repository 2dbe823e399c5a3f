//! Forwarding to a backend worker (`--forward-channel NAME`): the ASGI
//! events of a connection (`websocket.connect`, `websocket.receive`,
//! `websocket.disconnect`) as layer messages with ASGI's field names plus
//! `reply_channel` (the connection's channel, where the worker answers) and
//! `user` (the token's `sub`, `nil` when anonymous). `websocket.connect`
//! also carries the scope: `path`, `query_string`, `headers` as
//! `[[name, value], ...]` strings, `subprotocols` and `client`
//! (`[host, port]`).

use channels_core::consumer::{ConsumerContext, Frame};
use channels_core::{LayerError, Message, Value};

/// The `websocket.connect` event of the connection behind `ctx`.
pub(crate) fn connect_event(ctx: &ConsumerContext, user: Option<&str>) -> Message {
    let scope = ctx.scope();
    let headers: Vec<Value> = scope
        .headers
        .iter()
        .map(|(name, value)| Value::Array(vec![name.into(), value.into()]))
        .collect();
    let subprotocols: Vec<Value> = scope
        .subprotocols
        .iter()
        .map(|p| Value::from(p.as_str()))
        .collect();
    let client = scope.client.map_or(Value::Nil, |address| {
        Value::Array(vec![
            address.ip().to_string().into(),
            Value::from(address.port()),
        ])
    });
    base("websocket.connect", ctx.channel_name(), user)
        .with("path", scope.path.as_str())
        .with("query_string", scope.query_string.as_str())
        .with("headers", Value::Array(headers))
        .with("subprotocols", Value::Array(subprotocols))
        .with("client", client)
}

/// The `websocket.receive` event of one client frame: `text` for a text
/// frame, `bytes` (msgpack bin) for a binary one.
pub(crate) fn receive_event(channel: &str, user: Option<&str>, frame: Frame) -> Message {
    let event = base("websocket.receive", channel, user);
    match frame {
        Frame::Text(text) => event.with("text", text.as_str()),
        Frame::Binary(bytes) => event.with("bytes", Value::Binary(bytes.to_vec())),
    }
}

/// The `websocket.disconnect` event with the close code.
pub(crate) fn disconnect_event(channel: &str, user: Option<&str>, code: u16) -> Message {
    base("websocket.disconnect", channel, user).with("code", code)
}

fn base(kind: &str, channel: &str, user: Option<&str>) -> Message {
    Message::new(kind)
        .with("reply_channel", channel)
        .with("user", user.map_or(Value::Nil, Value::from))
}

/// How a forward went.
#[derive(Debug)]
pub(crate) enum Forwarded {
    /// The worker's channel took it.
    Sent,
    /// The worker's channel is full: the client gets `worker_busy`.
    Busy,
    /// The layer failed: the client gets `unavailable`.
    Failed(LayerError),
}

/// Sends `event` to the forward `channel`.
pub(crate) async fn forward(ctx: &ConsumerContext, channel: &str, event: Message) -> Forwarded {
    match ctx.layer().send(channel, event).await {
        Ok(()) => Forwarded::Sent,
        Err(LayerError::ChannelFull { .. }) => Forwarded::Busy,
        Err(error) => Forwarded::Failed(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_use_asgi_field_names() {
        let text = receive_event("specific.a!b", Some("42"), Frame::from("hi"));
        assert_eq!(text.message_type(), Some("websocket.receive"));
        assert_eq!(
            text.get("reply_channel").and_then(Value::as_str),
            Some("specific.a!b")
        );
        assert_eq!(text.get("user").and_then(Value::as_str), Some("42"));
        assert_eq!(text.get("text").and_then(Value::as_str), Some("hi"));
        let binary = receive_event("c!d", None, Frame::from(vec![0u8, 255]));
        assert_eq!(binary.get("user"), Some(&Value::Nil));
        assert_eq!(
            binary.get("bytes").and_then(Value::as_slice),
            Some(&[0u8, 255][..])
        );
        let gone = disconnect_event("c!d", None, 1000);
        assert_eq!(gone.get("code").and_then(Value::as_u64), Some(1000));
        assert!(gone.validate().is_ok());
    }
}
