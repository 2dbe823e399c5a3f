//! [`Communicator`]: drive a consumer in-process, without a network, on any
//! layer (Django's `WebsocketCommunicator`).

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::error::ConsumerError;
use super::frame::{CloseFrame, Frame, Inbound, Outbound};
use super::outbox::OutboxReceiver;
use super::routing::{ConsumerFactory, ConsumerRouter};
use super::runtime::{Connection, ConnectionSettings, Handshake};
use super::scope::Scope;
use super::shutdown::ShutdownSignal;
use super::{Accept, WebsocketConsumer};
use crate::layer::SharedLayer;

/// How long a `receive_*` waits by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Inbound events the test may queue before the consumer reads them.
const INBOUND_QUEUE: usize = 64;

/// What went wrong while driving a consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommunicatorError {
    /// Nothing arrived in time.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// What the test was waiting for.
        waiting_for: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// Something else arrived than what the test expected.
    #[error("expected {expected}, got {got:?}")]
    Unexpected {
        /// What the test expected.
        expected: &'static str,
        /// What arrived.
        got: Outbound,
    },
    /// Something arrived while the test expected nothing.
    #[error("expected no output, got {0:?}")]
    NotQuiet(Outbound),
    /// The connection ended and its output is drained.
    #[error("the connection is closed and has no more output")]
    OutputClosed,
    /// The call needs `connect` to have accepted first.
    #[error("not connected: call connect first (and it must accept)")]
    NotConnected,
    /// `connect` was called twice.
    #[error("connect was already called")]
    AlreadyConnected,
    /// No route of the router matches the path.
    #[error("no route matches `{path}`")]
    NoRoute {
        /// The path.
        path: String,
    },
    /// The handshake failed in the layer.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// A frame was not the JSON the test expected.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The connection task panicked.
    #[error("the connection task panicked")]
    Panicked,
}

/// The result of [`Communicator::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// Whether `connect` accepted.
    pub accepted: bool,
    /// The subprotocol it accepted with.
    pub subprotocol: Option<String>,
    /// The extra handshake headers it accepted with.
    pub headers: Vec<(String, String)>,
}

/// Drives one consumer the way the server would, with the same runtime, over
/// in-memory queues instead of a socket. Every wait is bounded by a timeout
/// (1 s by default).
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use channels_core::consumer::{Communicator, ConsumerContext, ConsumerError, Frame, Scope, WebsocketConsumer};
/// use channels_core::async_trait;
///
/// struct Echo;
///
/// #[async_trait]
/// impl WebsocketConsumer for Echo {
///     async fn receive(&mut self, ctx: &mut ConsumerContext, frame: Frame) -> Result<(), ConsumerError> {
///         ctx.send(frame)
///     }
/// }
///
/// let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
/// let mut communicator = Communicator::new(layer, Scope::new("/ws/echo"), Echo);
/// assert!(communicator.connect().await?.accepted);
/// communicator.send_text("hello").await?;
/// assert_eq!(communicator.receive_text().await?, "hello");
/// communicator.disconnect(1000).await?;
/// # Ok(())
/// # }
/// ```
pub struct Communicator {
    layer: SharedLayer,
    scope: Scope,
    source: Source,
    settings: ConnectionSettings,
    timeout: Duration,
    shutdown: ShutdownSignal,
    inbound: Option<mpsc::Sender<Inbound>>,
    output: Option<OutboxReceiver>,
    task: Option<JoinHandle<u16>>,
    channel: Option<String>,
}

/// Where the consumer comes from: given, or built from the scope at connect.
enum Source {
    Ready(Box<dyn WebsocketConsumer>),
    Factory(ConsumerFactory),
    Used,
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicator")
            .field("path", &self.scope.path)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Communicator {
    /// Prepares to drive `consumer` with `scope` on `layer`.
    pub fn new(layer: SharedLayer, scope: Scope, consumer: impl WebsocketConsumer) -> Self {
        Self::with_source(layer, scope, Source::Ready(Box::new(consumer)))
    }

    fn with_source(layer: SharedLayer, scope: Scope, source: Source) -> Self {
        Self {
            layer,
            scope,
            source,
            settings: ConnectionSettings::default(),
            timeout: DEFAULT_TIMEOUT,
            shutdown: ShutdownSignal::new(),
            inbound: None,
            output: None,
            task: None,
            channel: None,
        }
    }

    /// Resolves `path` (with an optional `?query`) through `router`, as the
    /// server would; the route's factory builds the consumer at `connect`,
    /// from the scope with the route's parameters. Use [`Self::scope_mut`]
    /// before that to add headers or a user.
    ///
    /// # Errors
    /// [`CommunicatorError::NoRoute`] when no route matches.
    pub fn from_router(
        layer: SharedLayer,
        router: &ConsumerRouter,
        path: &str,
    ) -> Result<Self, CommunicatorError> {
        let found = router
            .resolve(path)
            .ok_or_else(|| CommunicatorError::NoRoute {
                path: path.to_owned(),
            })?;
        let mut scope = Scope::new(path);
        scope.params = found.params;
        let factory = found.route.factory().clone();
        Ok(Self::with_source(layer, scope, Source::Factory(factory)))
    }

    /// The scope, to change before `connect`.
    pub fn scope_mut(&mut self) -> &mut Scope {
        &mut self.scope
    }

    /// Uses these runtime settings (queue length, idle timeout, ...).
    #[must_use]
    pub fn settings(mut self, settings: ConnectionSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Sets how long each `receive_*` and `disconnect` waits (default 1 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connection's channel name, once connected.
    pub fn channel_name(&self) -> Option<&str> {
        self.channel.as_deref()
    }

    /// Runs the handshake (`groups`, `connect`) and, if accepted, starts the
    /// connection task.
    ///
    /// # Errors
    /// [`CommunicatorError::AlreadyConnected`]; [`CommunicatorError::Consumer`]
    /// when the layer fails during the handshake.
    pub async fn connect(&mut self) -> Result<Connected, CommunicatorError> {
        let consumer = match std::mem::replace(&mut self.source, Source::Used) {
            Source::Ready(consumer) => consumer,
            Source::Factory(factory) => factory(&self.scope),
            Source::Used => return Err(CommunicatorError::AlreadyConnected),
        };
        let handshake = Connection::open(
            self.layer.clone(),
            self.scope.clone(),
            consumer,
            std::sync::Arc::new(self.settings.clone()),
            &self.shutdown,
        )
        .await?;
        let accepted = match handshake {
            Handshake::Rejected | Handshake::Failed { .. } => {
                return Ok(Connected {
                    accepted: false,
                    subprotocol: None,
                    headers: Vec::new(),
                });
            }
            Handshake::Accepted(accepted) => accepted,
        };
        let Accept {
            subprotocol,
            headers,
        } = accepted.accept;
        self.channel = Some(accepted.connection.channel_name().to_owned());
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        self.inbound = Some(inbound_tx);
        self.output = Some(accepted.outbox);
        self.task = Some(tokio::spawn(
            accepted.connection.run(inbound_rx, self.shutdown.clone()),
        ));
        Ok(Connected {
            accepted: true,
            subprotocol,
            headers,
        })
    }

    /// Delivers a raw inbound event (a frame, a pong, a close, or a transport
    /// violation such as [`CloseFrame::too_big`]).
    ///
    /// # Errors
    /// [`CommunicatorError::NotConnected`]; [`CommunicatorError::OutputClosed`]
    /// when the connection ended; [`CommunicatorError::Timeout`].
    pub async fn send_inbound(&self, event: Inbound) -> Result<(), CommunicatorError> {
        let inbound = self
            .inbound
            .as_ref()
            .ok_or(CommunicatorError::NotConnected)?;
        match tokio::time::timeout(self.timeout, inbound.send(event)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(CommunicatorError::OutputClosed),
            Err(_) => Err(CommunicatorError::Timeout {
                waiting_for: "room in the inbound queue",
                after: self.timeout,
            }),
        }
    }

    /// Sends a text frame from the "client".
    ///
    /// # Errors
    /// As [`Self::send_inbound`].
    pub async fn send_text(&self, text: impl Into<super::Text>) -> Result<(), CommunicatorError> {
        self.send_inbound(Inbound::Frame(Frame::Text(text.into())))
            .await
    }

    /// Sends a binary frame.
    ///
    /// # Errors
    /// As [`Self::send_inbound`].
    pub async fn send_binary(&self, bytes: impl Into<Bytes>) -> Result<(), CommunicatorError> {
        self.send_inbound(Inbound::Frame(Frame::Binary(bytes.into())))
            .await
    }

    /// Sends `value` as JSON in a text frame.
    ///
    /// # Errors
    /// [`CommunicatorError::Json`], else as [`Self::send_inbound`].
    pub async fn send_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), CommunicatorError> {
        self.send_text(serde_json::to_string(value)?).await
    }

    /// Plays a client whose socket stops taking writes (it does not read):
    /// from now on a full outbound queue closes the connection with 1013, as
    /// it would on a real socket. Without it, frames not yet received count
    /// as a socket with room and a server that is behind (the runtime holds
    /// layer messages back instead).
    ///
    /// # Errors
    /// [`CommunicatorError::NotConnected`].
    pub fn stop_reading(&self) -> Result<(), CommunicatorError> {
        let output = self
            .output
            .as_ref()
            .ok_or(CommunicatorError::NotConnected)?;
        output.socket_state().set_backed_up(true);
        Ok(())
    }

    /// Waits for the next outbound item, pings included.
    ///
    /// # Errors
    /// [`CommunicatorError::Timeout`], [`CommunicatorError::OutputClosed`],
    /// [`CommunicatorError::NotConnected`].
    pub async fn receive_output(&mut self) -> Result<Outbound, CommunicatorError> {
        let timeout = self.timeout;
        let output = self
            .output
            .as_mut()
            .ok_or(CommunicatorError::NotConnected)?;
        match tokio::time::timeout(timeout, output.recv()).await {
            Ok(Some(item)) => Ok(item),
            Ok(None) => Err(CommunicatorError::OutputClosed),
            Err(_) => Err(CommunicatorError::Timeout {
                waiting_for: "output",
                after: timeout,
            }),
        }
    }

    /// Waits for the next frame or close, skipping pings.
    async fn next_non_ping(&mut self) -> Result<Outbound, CommunicatorError> {
        loop {
            match self.receive_output().await? {
                Outbound::Ping(_) => {}
                other => return Ok(other),
            }
        }
    }

    /// Waits for a text frame.
    ///
    /// # Errors
    /// [`CommunicatorError::Unexpected`] for anything else, or as
    /// [`Self::receive_output`].
    pub async fn receive_text(&mut self) -> Result<String, CommunicatorError> {
        match self.next_non_ping().await? {
            Outbound::Frame(Frame::Text(text)) => Ok(text.into()),
            got => Err(CommunicatorError::Unexpected {
                expected: "a text frame",
                got,
            }),
        }
    }

    /// Waits for a binary frame.
    ///
    /// # Errors
    /// As [`Self::receive_text`].
    pub async fn receive_binary(&mut self) -> Result<Bytes, CommunicatorError> {
        match self.next_non_ping().await? {
            Outbound::Frame(Frame::Binary(bytes)) => Ok(bytes),
            got => Err(CommunicatorError::Unexpected {
                expected: "a binary frame",
                got,
            }),
        }
    }

    /// Waits for a text frame and decodes it as JSON.
    ///
    /// # Errors
    /// [`CommunicatorError::Json`], or as [`Self::receive_text`].
    pub async fn receive_json<T: DeserializeOwned>(&mut self) -> Result<T, CommunicatorError> {
        let text = self.receive_text().await?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits for the close frame.
    ///
    /// # Errors
    /// [`CommunicatorError::Unexpected`] when a frame comes first, or as
    /// [`Self::receive_output`].
    pub async fn receive_close(&mut self) -> Result<CloseFrame, CommunicatorError> {
        match self.next_non_ping().await? {
            Outbound::Close(frame) => Ok(frame),
            got => Err(CommunicatorError::Unexpected {
                expected: "a close frame",
                got,
            }),
        }
    }

    /// Checks that nothing (but pings) is sent within `wait` (Django's
    /// `receive_nothing`).
    ///
    /// # Errors
    /// [`CommunicatorError::NotQuiet`] with what arrived.
    pub async fn receive_nothing(&mut self, wait: Duration) -> Result<(), CommunicatorError> {
        let output = self
            .output
            .as_mut()
            .ok_or(CommunicatorError::NotConnected)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, output.recv()).await {
                Err(_) | Ok(None) => return Ok(()),
                Ok(Some(Outbound::Ping(_))) => {}
                Ok(Some(item)) => return Err(CommunicatorError::NotQuiet(item)),
            }
        }
    }

    /// The client closes with `code`; waits for the connection to finish
    /// (groups left, `disconnect` called) and returns the code it ended with.
    ///
    /// # Errors
    /// [`CommunicatorError::Timeout`], [`CommunicatorError::Panicked`].
    pub async fn disconnect(&mut self, code: u16) -> Result<u16, CommunicatorError> {
        if let Some(inbound) = self.inbound.take() {
            // If the connection already ended, there is nobody to tell.
            let _ = inbound
                .send(Inbound::Close(Some(CloseFrame::new(code, ""))))
                .await;
        }
        self.wait_finished().await
    }

    /// Triggers the server-shutdown path (close 1001) and waits for the
    /// connection to finish.
    ///
    /// # Errors
    /// As [`Self::disconnect`].
    pub async fn shutdown(&mut self) -> Result<u16, CommunicatorError> {
        self.shutdown.trigger();
        self.wait_finished().await
    }

    /// Waits for the connection task to end (after a close from either side)
    /// and returns the code it ended with.
    ///
    /// # Errors
    /// [`CommunicatorError::NotConnected`], [`CommunicatorError::Timeout`],
    /// [`CommunicatorError::Panicked`].
    pub async fn wait_finished(&mut self) -> Result<u16, CommunicatorError> {
        let task = self.task.as_mut().ok_or(CommunicatorError::NotConnected)?;
        let code = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(code)) => code,
            Ok(Err(_)) => return Err(CommunicatorError::Panicked),
            Err(_) => {
                return Err(CommunicatorError::Timeout {
                    waiting_for: "the connection to finish",
                    after: self.timeout,
                });
            }
        };
        self.task = None;
        Ok(code)
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        // Let a still-running connection leave its groups and end.
        self.shutdown.trigger();
    }
}
