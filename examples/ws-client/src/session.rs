//! One connection's life: stdin lines out, frames in, until quit or the connection drops.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::frame::FrameTemplate;

/// How long a closing client waits for the server's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Stdin ended or Ctrl-C: closed with 1000, exit.
    Quit,
    /// The connection failed; reconnect, and send `unsent` first.
    Dropped {
        reason: String,
        unsent: Option<String>,
    },
}

/// A connected socket plus the inputs it serves.
pub(crate) struct Session<'a> {
    ws: Socket,
    template: &'a FrameTemplate,
    lines: &'a mut mpsc::Receiver<String>,
    quit: &'a mut watch::Receiver<bool>,
    pending: Option<String>,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        ws: Socket,
        template: &'a FrameTemplate,
        lines: &'a mut mpsc::Receiver<String>,
        quit: &'a mut watch::Receiver<bool>,
        pending: Option<String>,
    ) -> Self {
        Self {
            ws,
            template,
            lines,
            quit,
            pending,
        }
    }

    pub(crate) async fn run(&mut self) -> End {
        if let Some(line) = self.pending.take()
            && let Err(e) = self.send_line(&line).await
        {
            return dropped(e, Some(line));
        }
        loop {
            tokio::select! {
                _ = self.quit.changed() => return self.close().await,
                line = self.lines.recv() => {
                    let Some(line) = line else { return self.close().await };
                    if let Err(e) = self.send_line(&line).await {
                        return dropped(e, Some(line));
                    }
                }
                message = self.ws.next() => match message {
                    Some(Ok(message)) => {
                        if let Some(reason) = print(message) {
                            return End::Dropped { reason, unsent: None };
                        }
                    }
                    Some(Err(e)) => return dropped(e, None),
                    None => return dropped("stream ended", None),
                },
            }
        }
    }

    async fn send_line(&mut self, line: &str) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let frame = self.template.render(line);
        self.ws.send(Message::Text(frame.into())).await
    }

    /// Sends close 1000, then prints what still arrives until the server's close (bounded).
    async fn close(&mut self) -> End {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        if self.ws.send(Message::Close(Some(frame))).await.is_err() {
            return End::Quit;
        }
        let drain = async {
            while let Some(Ok(message)) = self.ws.next().await {
                if print(message).is_some() {
                    break;
                }
            }
        };
        if timeout(CLOSE_TIMEOUT, drain).await.is_err() {
            eprintln!("ws-client: server did not answer the close frame");
        }
        End::Quit
    }
}

fn dropped(reason: impl std::fmt::Display, unsent: Option<String>) -> End {
    End::Dropped {
        reason: reason.to_string(),
        unsent,
    }
}

/// Prints one incoming frame; returns the reason when it is a close frame.
fn print(message: Message) -> Option<String> {
    match message {
        Message::Text(text) => println!("{}", text.as_str()),
        Message::Binary(bytes) => println!("<binary frame, {} bytes>", bytes.len()),
        Message::Close(frame) => {
            return Some(match frame {
                Some(f) => format!(
                    "server closed with {} {}",
                    u16::from(f.code),
                    f.reason.as_str()
                ),
                None => "server closed".to_owned(),
            });
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
    }
    None
}
