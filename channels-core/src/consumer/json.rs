//! The JSON consumer flavour (Django's `JsonWebsocketConsumer`): frames are
//! decoded into a typed value before they reach `receive_json`.

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use super::context::ConsumerContext;
use super::error::ConsumerError;
use super::frame::Frame;
use super::{Connect, WebsocketConsumer};
use crate::error::LayerError;
use crate::message::Message;

/// What a [`JsonConsumer`] does with a frame that is not valid JSON (or does
/// not fit its `Inbound` type).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InvalidJson {
    /// Answer with a text frame `{"error": "invalid JSON: ..."}` and keep the
    /// connection open (the default).
    #[default]
    ErrorFrame,
    /// Close the connection with this code (1007 is the usual one).
    Close(u16),
}

/// A consumer that speaks JSON. Wrap it in [`Json`] to get a
/// [`WebsocketConsumer`]. Text and binary frames are both parsed as JSON into
/// `Inbound`; one that does not parse is handled as [`Self::invalid_json`]
/// says, never a crash.
#[async_trait]
pub trait JsonConsumer: Send + 'static {
    /// The type frames decode into (`serde_json::Value` for anything).
    type Inbound: DeserializeOwned + Send;

    /// Groups joined before `connect` and left on disconnect.
    fn groups(&self) -> Vec<String> {
        Vec::new()
    }

    /// What to do with a frame that does not decode.
    fn invalid_json(&self) -> InvalidJson {
        InvalidJson::default()
    }

    /// As [`WebsocketConsumer::connect`].
    ///
    /// # Errors
    /// Any error rejects the connection.
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let _ = ctx;
        Ok(Connect::accept())
    }

    /// A frame arrived and decoded. Reply with [`ConsumerContext::send_json`].
    ///
    /// # Errors
    /// Any error is logged and closes the connection with 1011.
    async fn receive_json(
        &mut self,
        ctx: &mut ConsumerContext,
        content: Self::Inbound,
    ) -> Result<(), ConsumerError>;

    /// As [`WebsocketConsumer::dispatch`].
    ///
    /// # Errors
    /// The default returns [`ConsumerError::NoHandler`].
    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        let _ = (ctx, message);
        Err(ConsumerError::NoHandler {
            message_type: message_type.to_owned(),
        })
    }

    /// As [`WebsocketConsumer::layer_error`].
    ///
    /// # Errors
    /// Any error closes the connection with 1011.
    async fn layer_error(
        &mut self,
        ctx: &mut ConsumerContext,
        error: &LayerError,
    ) -> Result<(), ConsumerError> {
        let _ = (ctx, error);
        Ok(())
    }

    /// As [`WebsocketConsumer::wake`].
    ///
    /// # Errors
    /// Any error closes the connection with 1011.
    async fn wake(&mut self, ctx: &mut ConsumerContext) -> Result<(), ConsumerError> {
        let _ = ctx;
        Ok(())
    }

    /// As [`WebsocketConsumer::disconnect`].
    ///
    /// # Errors
    /// Any error is logged.
    async fn disconnect(
        &mut self,
        ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        let _ = (ctx, code);
        Ok(())
    }
}

/// Adapts a [`JsonConsumer`] into a [`WebsocketConsumer`].
#[derive(Debug, Clone, Default)]
pub struct Json<C>(pub C);

#[async_trait]
impl<C: JsonConsumer> WebsocketConsumer for Json<C> {
    fn groups(&self) -> Vec<String> {
        self.0.groups()
    }

    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        self.0.connect(ctx).await
    }

    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
    ) -> Result<(), ConsumerError> {
        let decoded = match &frame {
            Frame::Text(text) => serde_json::from_str::<C::Inbound>(text),
            Frame::Binary(bytes) => serde_json::from_slice::<C::Inbound>(bytes),
        };
        match decoded {
            Ok(content) => self.0.receive_json(ctx, content).await,
            Err(error) => {
                tracing::debug!(%error, "invalid JSON frame");
                match self.0.invalid_json() {
                    InvalidJson::ErrorFrame => ctx.send_json(&serde_json::json!({
                        "error": format!("invalid JSON: {error}"),
                    })),
                    InvalidJson::Close(code) => {
                        ctx.close(code, "invalid JSON");
                        Ok(())
                    }
                }
            }
        }
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        self.0.dispatch(ctx, message_type, message).await
    }

    async fn layer_error(
        &mut self,
        ctx: &mut ConsumerContext,
        error: &LayerError,
    ) -> Result<(), ConsumerError> {
        self.0.layer_error(ctx, error).await
    }

    async fn wake(&mut self, ctx: &mut ConsumerContext) -> Result<(), ConsumerError> {
        self.0.wake(ctx).await
    }

    async fn disconnect(
        &mut self,
        ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        self.0.disconnect(ctx, code).await
    }
}
