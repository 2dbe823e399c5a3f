//! Background workers: a consumer bound to a named channel instead of a
//! socket (Django's `runworker`), so HTTP handlers can hand work to it.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::error::ConsumerError;
use super::runtime::check_message_type;
use crate::backoff::Backoff;
use crate::error::LayerError;
use crate::layer::SharedLayer;
use crate::message::Message;
use crate::names::validate_channel_name;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a worker acts through: the layer and its own channel name.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    layer: SharedLayer,
    channel: String,
}

impl WorkerContext {
    /// The channel layer (send results on, `group_send` to notify sockets).
    pub fn layer(&self) -> &SharedLayer {
        &self.layer
    }

    /// The channel this worker reads.
    pub fn channel_name(&self) -> &str {
        &self.channel
    }
}

/// A consumer of a named channel. One message at a time, in order.
#[async_trait]
pub trait Worker: Send + 'static {
    /// Handles one message whose `type` passed the dispatch check.
    ///
    /// # Errors
    /// An error is logged; the worker goes on with the next message.
    async fn handle(
        &mut self,
        ctx: &WorkerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError>;
}

/// Runs `worker` on `channel` until `shutdown` fires. Messages with a missing
/// or private (`_`) type are logged and skipped; layer errors are retried
/// with capped backoff.
///
/// # Errors
/// [`LayerError::InvalidChannelName`] for a bad channel name;
/// [`LayerError::Closed`] when the layer is closed before shutdown.
///
/// # Examples
/// ```no_run
/// # async fn example(layer: channels_core::SharedLayer) -> Result<(), channels_core::LayerError> {
/// use channels_core::consumer::{run_worker, ConsumerError, Worker, WorkerContext};
/// use channels_core::{async_trait, Message};
///
/// struct Thumbnailer;
///
/// #[async_trait]
/// impl Worker for Thumbnailer {
///     async fn handle(&mut self, ctx: &WorkerContext, kind: &str, message: Message) -> Result<(), ConsumerError> {
///         if kind == "thumbnail.make" {
///             let done = Message::new("thumbnail.done").with("id", message.get("id").cloned().unwrap_or(channels_core::Value::Nil));
///             ctx.layer().group_send("thumbnails", done).await?;
///         }
///         Ok(())
///     }
/// }
///
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// run_worker(layer, "thumbnails", Thumbnailer, shutdown).await
/// # }
/// ```
pub async fn run_worker(
    layer: SharedLayer,
    channel: &str,
    mut worker: impl Worker,
    shutdown: CancellationToken,
) -> Result<(), LayerError> {
    validate_channel_name(channel)?;
    let ctx = WorkerContext {
        layer: layer.clone(),
        channel: channel.to_owned(),
    };
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            received = layer.receive(channel) => received,
        };
        let message = match received {
            Ok(message) => {
                backoff.reset();
                message
            }
            Err(LayerError::Closed) => return Err(LayerError::Closed),
            Err(error) => {
                let pause = backoff.next_delay();
                tracing::warn!(%channel, %error, retry_in = ?pause, "worker receive failed");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        let message_type = match check_message_type(&message) {
            Ok(message_type) => message_type.to_owned(),
            Err(error) => {
                tracing::warn!(%channel, %error, "worker dropping message");
                continue;
            }
        };
        if let Err(error) = worker.handle(&ctx, &message_type, message).await {
            tracing::error!(%channel, %message_type, %error, "worker failed to handle message");
        }
    }
}
