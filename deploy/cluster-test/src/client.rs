//! [`WsClient`]: a real WebSocket client (tokio-tungstenite) that knows which
//! server the load balancer sent it to.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// The header the local cluster's nginx adds: the server that took the upgrade.
pub const UPSTREAM_HEADER: &str = "x-channels-upstream";

/// How long a WebSocket handshake through nginx may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client read next.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    /// A text frame holding JSON.
    Json(serde_json::Value),
    /// The connection ended: `Some(code)` from the server's close frame,
    /// `None` when the socket ended without one.
    Closed(Option<u16>),
}

/// A WebSocket connection opened through the load balancer.
#[derive(Debug)]
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    upstream: SocketAddr,
}

impl WsClient {
    /// Opens `ws://{lb}{path}` and reads which server took it from the
    /// handshake's `X-Channels-Upstream` header.
    ///
    /// # Errors
    /// When the handshake fails, times out (5 s) or lacks the header.
    pub async fn connect(lb: SocketAddr, path: &str) -> anyhow::Result<Self> {
        let request = format!("ws://{lb}{path}").into_client_request()?;
        let (ws, response) = timeout(CONNECT_TIMEOUT, connect_async(request))
            .await
            .with_context(|| {
                format!("WebSocket handshake with {lb}{path} took over {CONNECT_TIMEOUT:?}")
            })?
            .with_context(|| format!("WebSocket handshake with {lb}{path} failed"))?;
        let upstream = response
            .headers()
            .get(UPSTREAM_HEADER)
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("no {UPSTREAM_HEADER} header in the handshake response"))?;
        // After a refused upstream nginx lists every one it tried: "a, b".
        let last = upstream.rsplit(',').next().unwrap_or(upstream).trim();
        let upstream = last
            .parse()
            .with_context(|| format!("{UPSTREAM_HEADER} {upstream:?} is not an address"))?;
        Ok(Self { ws, upstream })
    }

    /// Opens the gateway (`ws://{lb}/ws`, docs/protocol.md) anonymously, as
    /// the servers run in development mode, and subscribes to `group`.
    ///
    /// # Errors
    /// As [`WsClient::connect`], or when `connected` / `subscribed` does not
    /// come.
    pub async fn join(lb: SocketAddr, group: &str) -> anyhow::Result<Self> {
        let mut client = Self::connect(lb, "/ws").await?;
        client
            .send_json(&serde_json::json!({"type": "connect"}))
            .await?;
        client.expect_answer("connected").await?;
        client
            .send_json(&serde_json::json!({"type": "subscribe", "group": group}))
            .await?;
        client.expect_answer("subscribed").await?;
        Ok(client)
    }

    /// Opens the gateway with a token (`/ws?token=...`) and returns the
    /// client with its `connected` frame, or the close code the server
    /// answered with instead.
    ///
    /// # Errors
    /// As [`WsClient::connect`], or when neither `connected` nor a close
    /// comes.
    pub async fn connect_with_token(
        lb: SocketAddr,
        token: &str,
    ) -> anyhow::Result<Result<(Self, serde_json::Value), Option<u16>>> {
        let mut client = Self::connect(lb, &format!("/ws?token={token}")).await?;
        match client.next_event(CONNECT_TIMEOUT).await? {
            WsEvent::Json(value) if value["type"] == "connected" => Ok(Ok((client, value))),
            WsEvent::Closed(code) => Ok(Err(code)),
            other => bail!(
                "{} answered {other:?}, expected `connected`",
                client.upstream
            ),
        }
    }

    /// Sends a `subscribe` request and returns the answer (`subscribed`, or
    /// an `error` frame).
    ///
    /// # Errors
    /// When nothing comes or the connection ends.
    pub async fn subscribe(&mut self, group: &str) -> anyhow::Result<serde_json::Value> {
        self.send_json(&serde_json::json!({"type": "subscribe", "group": group}))
            .await?;
        match self.next_event(CONNECT_TIMEOUT).await? {
            WsEvent::Json(value) => Ok(value),
            other => bail!("{} answered {other:?} to subscribe", self.upstream),
        }
    }

    /// Publishes `{"type": "chat.message", "message": text}` to `group`
    /// (its `published` answer is left to [`WsClient::next_event`]).
    ///
    /// # Errors
    /// As [`WsClient::send_json`].
    pub async fn say(&mut self, group: &str, text: &str) -> anyhow::Result<()> {
        let data = serde_json::json!({"type": "chat.message", "message": text});
        self.send_json(&serde_json::json!({"type": "publish", "group": group, "data": data}))
            .await
    }

    /// The next frame must be a protocol answer of type `kind`.
    async fn expect_answer(&mut self, kind: &str) -> anyhow::Result<()> {
        match self.next_event(CONNECT_TIMEOUT).await? {
            WsEvent::Json(value) if value["type"] == kind => Ok(()),
            other => bail!("{} answered {other:?}, expected `{kind}`", self.upstream),
        }
    }

    /// The server this connection landed on.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Sends `value` as one text frame.
    ///
    /// # Errors
    /// When the connection is closed or the write fails.
    pub async fn send_json(&mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        timeout(
            CONNECT_TIMEOUT,
            self.ws.send(Message::text(value.to_string())),
        )
        .await
        .context("WebSocket send took over 5 s")?
        .context("WebSocket send failed")
    }

    /// The next JSON text frame or the end of the connection, skipping pings
    /// and pongs.
    ///
    /// # Errors
    /// After `wait` with nothing read, or on a frame that is not JSON text.
    pub async fn next_event(&mut self, wait: Duration) -> anyhow::Result<WsEvent> {
        let read = async {
            loop {
                match self.ws.next().await {
                    None => return Ok(WsEvent::Closed(None)),
                    Some(Err(_)) => return Ok(WsEvent::Closed(None)),
                    Some(Ok(Message::Close(frame))) => {
                        return Ok(WsEvent::Closed(frame.map(|f| u16::from(f.code))));
                    }
                    Some(Ok(Message::Text(text))) => {
                        let value = serde_json::from_str(text.as_str())
                            .with_context(|| format!("text frame is not JSON: {text}"))?;
                        return Ok(WsEvent::Json(value));
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        bail!("unexpected binary frame of {} bytes", bytes.len())
                    }
                    Some(Ok(_)) => {}
                }
            }
        };
        timeout(wait, read)
            .await
            .with_context(|| format!("nothing from {} within {wait:?}", self.upstream))?
    }

    /// Closes the connection politely (1000), waiting at most a second.
    pub async fn close(mut self) {
        // The test is done with this client; a failed close changes nothing.
        let _ = timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}
