//! WebSocket clients for tests (tokio-tungstenite): connect, send, read the
//! next text / JSON / close frame. Every wait is bounded by [`WAIT`]; a
//! panic is how a helper reports failure.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// A client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects a WebSocket client.
///
/// # Panics
/// When the connection fails or is not answered with 101 within [`WAIT`].
pub async fn connect(url: &str) -> Client {
    let (client, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect to {url} failed: {e}"));
    assert_eq!(response.status(), 101);
    client
}

/// Tries to connect with extra request headers; returns the HTTP status of
/// a refusal, or the client.
///
/// # Panics
/// On a timeout, an invalid header, or an error that is not an HTTP refusal.
pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
    let mut request = url
        .into_client_request()
        .unwrap_or_else(|e| panic!("bad url {url}: {e}"));
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .unwrap_or_else(|e| panic!("bad header name {name}: {e}")),
            value
                .parse()
                .unwrap_or_else(|e| panic!("bad header value {value}: {e}")),
        );
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
    {
        Ok((client, _)) => Ok(client),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("unexpected connect error: {other}"),
    }
}

/// Sends a text frame.
///
/// # Panics
/// When the send fails or times out.
pub async fn send_text(client: &mut Client, text: &str) {
    tokio::time::timeout(WAIT, client.send(Message::text(text)))
        .await
        .expect("send timed out")
        .unwrap_or_else(|e| panic!("send failed: {e}"));
}

/// Sends `value` as JSON text.
///
/// # Panics
/// As [`send_text`].
pub async fn send_json(client: &mut Client, value: &serde_json::Value) {
    send_text(client, &value.to_string()).await;
}

/// The next data or close message, skipping pings and pongs.
///
/// # Panics
/// On a timeout, an error, or the end of the stream.
pub async fn next_message(client: &mut Client) -> Message {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .unwrap_or_else(|e| panic!("websocket error: {e}"));
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next text frame parsed as JSON.
///
/// # Panics
/// As [`next_message`], or when it is not a JSON text frame.
pub async fn next_json(client: &mut Client) -> serde_json::Value {
    match next_message(client).await {
        Message::Text(text) => {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
        }
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads until the close frame and returns it (frames before it are skipped).
///
/// # Panics
/// When no close frame comes within [`WAIT`].
pub async fn expect_close(client: &mut Client) -> CloseFrame {
    loop {
        let next = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("timed out waiting for the close frame");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("websocket error before the close frame: {error}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Checks that no data frame arrives within `wait`.
///
/// # Panics
/// When one does.
pub async fn expect_quiet(client: &mut Client, wait: Duration) {
    if let Ok(Some(Ok(message))) = tokio::time::timeout(wait, client.next()).await {
        assert!(
            matches!(message, Message::Ping(_) | Message::Pong(_)),
            "expected nothing, got {message:?}"
        );
    }
}
