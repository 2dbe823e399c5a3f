//! [`BlockingLayer`]: the layer's methods for code outside the async runtime,
//! the counterpart of Django's `async_to_sync(channel_layer.group_send)`.

use std::future::Future;

use tokio::runtime::Handle;

use crate::error::LayerError;
use crate::layer::SharedLayer;
use crate::message::Message;

/// A blocking facade over a shared layer, for threads that are not async: a
/// CLI, a synchronous web handler, a thread pool.
///
/// Each call runs the async method on the runtime given at construction and
/// waits for it. That runtime must be a multi-threaded one that keeps running
/// (the server's, or one you own). Called from inside any async runtime, a
/// method returns [`LayerError::BlockingInRuntime`] instead of deadlocking.
#[derive(Debug, Clone)]
pub struct BlockingLayer {
    layer: SharedLayer,
    runtime: Handle,
}

impl BlockingLayer {
    /// Wraps `layer`, running its futures on `runtime`.
    pub fn new(layer: SharedLayer, runtime: Handle) -> Self {
        Self { layer, runtime }
    }

    fn run<T>(&self, future: impl Future<Output = Result<T, LayerError>>) -> Result<T, LayerError> {
        if Handle::try_current().is_ok() {
            return Err(LayerError::BlockingInRuntime);
        }
        self.runtime.block_on(future)
    }

    /// Blocking [`crate::ChannelLayer::send`].
    ///
    /// # Errors
    /// As the async method, plus [`LayerError::BlockingInRuntime`].
    pub fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        self.run(self.layer.send(channel, message))
    }

    /// Blocking [`crate::ChannelLayer::receive`].
    ///
    /// # Errors
    /// As the async method, plus [`LayerError::BlockingInRuntime`].
    pub fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        self.run(self.layer.receive(channel))
    }

    /// Blocking [`crate::ChannelLayer::new_channel`].
    ///
    /// # Errors
    /// As the async method, plus [`LayerError::BlockingInRuntime`].
    pub fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        self.run(self.layer.new_channel(prefix))
    }

    /// Blocking [`crate::ChannelLayer::group_add`].
    ///
    /// # Errors
    /// As the async method, plus [`LayerError::BlockingInRuntime`].
    pub fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.run(self.layer.group_add(group, channel))
    }

    /// Blocking [`crate::ChannelLayer::group_discard`].
    ///
    /// # Errors
    /// As the async method, plus [`LayerError::BlockingInRuntime`].
    pub fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.run(self.layer.group_discard(group, channel))
    }

    /// Blocking [`crate::ChannelLayer::group_send`].
    ///
    /// # Errors
    /// As the async method, plus [`LayerError::BlockingInRuntime`].
    pub fn group_send(&self, group: &str, message: Message) -> Result<(), LayerError> {
        self.run(self.layer.group_send(group, message))
    }

    /// Blocking [`crate::ChannelLayer::flush`].
    ///
    /// # Errors
    /// As the async method, plus [`LayerError::BlockingInRuntime`].
    pub fn flush(&self) -> Result<(), LayerError> {
        self.run(self.layer.flush())
    }
}
