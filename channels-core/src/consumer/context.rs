//! [`ConsumerContext`]: what a consumer acts through.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::Accept;
use super::error::ConsumerError;
use super::frame::{CloseFrame, Frame, Outbound, Text};
use super::outbox::Outbox;
use super::scope::Scope;
use crate::layer::SharedLayer;
use crate::message::Message;
use crate::receiver::LocalSender;

/// The longest a consumer's `group_send` waits for an overloaded server
/// ([`ConsumerStats::wait_while_overloaded`](super::ConsumerStats::wait_while_overloaded)).
pub const PUBLISH_BACKPRESSURE: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest a discard spawned by `Drop` may take.
const DROP_DISCARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The consumer's handle on its connection and the channel layer: send
/// frames, close, join and leave groups (remembered, and left automatically on
/// disconnect), send to any channel, read the scope.
///
/// Sending a frame never waits: frames go to the connection's bounded
/// outbound queue. If the client does not read and the queue is full, the
/// frame is dropped, the connection is closed with 1013, and the send returns
/// [`ConsumerError::SlowClient`].
#[derive(Debug)]
pub struct ConsumerContext {
    layer: SharedLayer,
    channel: Arc<str>,
    local: LocalSender,
    scope: Arc<Scope>,
    groups: Vec<String>,
    outbox: Outbox,
    close_request: Option<CloseFrame>,
    /// When the consumer asked to be woken (`wake_at`), until the runtime
    /// takes the request.
    wake_request: Option<WakeRequest>,
    /// Set while a deferred connect waits for its decision.
    deferring: bool,
    /// The decision of a deferred connect, until the runtime takes it (boxed:
    /// most connections never defer).
    decision: Option<Box<Decision>>,
}

/// How a deferred connect ([`Connect::Defer`](super::Connect::Defer)) was
/// decided, besides a close.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Answer 101 with this.
    Accept(Accept),
    /// Answer with this HTTP status.
    Fail(u16),
}

/// A change to the consumer's one timer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WakeRequest {
    At(tokio::time::Instant),
    Cancel,
}

impl ConsumerContext {
    pub(crate) fn new(
        layer: SharedLayer,
        channel: Arc<str>,
        local: LocalSender,
        scope: Arc<Scope>,
        outbox: Outbox,
    ) -> Self {
        Self {
            layer,
            channel,
            local,
            scope,
            groups: Vec::new(),
            outbox,
            close_request: None,
            wake_request: None,
            deferring: false,
            decision: None,
        }
    }

    /// The channel layer.
    pub fn layer(&self) -> &SharedLayer {
        &self.layer
    }

    /// This connection's own channel (Django's `self.channel_name`): send a
    /// message there to reach this consumer's `dispatch`.
    pub fn channel_name(&self) -> &str {
        &self.channel
    }

    /// A handle that queues messages straight into this connection's own
    /// mailbox from elsewhere in this process (they reach `dispatch` like
    /// layer messages, with no layer round trip).
    pub fn local_sender(&self) -> LocalSender {
        self.local.clone()
    }

    /// The connection's scope.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The groups this connection is in now.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Returns whether the connection is closing (after [`Self::close`], a
    /// slow-client close, or shutdown); sends then fail with
    /// [`ConsumerError::Closed`].
    pub fn is_closing(&self) -> bool {
        self.close_request.is_some() || self.outbox.is_closed()
    }

    /// Sends a frame to the client.
    ///
    /// # Errors
    /// [`ConsumerError::SlowClient`] when the outbound queue is full (the
    /// connection is being closed), [`ConsumerError::Closed`] after a close.
    pub fn send(&mut self, frame: impl Into<Frame>) -> Result<(), ConsumerError> {
        if self.close_request.is_some() {
            return Err(ConsumerError::Closed);
        }
        self.outbox.push(Outbound::Frame(frame.into()))
    }

    /// Sends a text frame.
    ///
    /// # Errors
    /// As [`Self::send`].
    pub fn send_text(&mut self, text: impl Into<Text>) -> Result<(), ConsumerError> {
        self.send(Frame::Text(text.into()))
    }

    /// Sends a binary frame.
    ///
    /// # Errors
    /// As [`Self::send`].
    pub fn send_binary(&mut self, bytes: impl Into<Bytes>) -> Result<(), ConsumerError> {
        self.send(Frame::Binary(bytes.into()))
    }

    /// Sends `value` encoded as JSON in a text frame.
    ///
    /// # Errors
    /// [`ConsumerError::Json`] when it cannot be encoded, else as [`Self::send`].
    pub fn send_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConsumerError> {
        let text = serde_json::to_string(value)?;
        self.send(Frame::Text(text.into()))
    }

    pub(crate) fn push_outbound(&mut self, item: Outbound) -> Result<(), ConsumerError> {
        self.outbox.push(item)
    }

    /// Closes the connection with `code` and `reason` once the frames already
    /// sent are out (Django's `close(code)`). Called in `connect` after
    /// accepting, the close follows the handshake. The runtime then calls
    /// `disconnect(code)`. Later calls do nothing.
    pub fn close(&mut self, code: u16, reason: impl Into<String>) {
        if self.close_request.is_none() {
            self.close_request = Some(CloseFrame::new(code, reason));
        }
    }

    pub(crate) fn take_close_request(&mut self) -> Option<CloseFrame> {
        self.close_request.take()
    }

    /// Accepts a deferred connect ([`Connect::Defer`](super::Connect::Defer)):
    /// the upgrade is answered 101 with `accept`'s subprotocol and headers.
    /// Does nothing outside a deferred connect or after its first decision.
    pub fn accept(&mut self, accept: Accept) {
        if self.deferring && self.decision.is_none() {
            self.decision = Some(Box::new(Decision::Accept(accept)));
        }
    }

    /// Answers a deferred connect's upgrade with HTTP `status` instead of
    /// 101: a 5xx when the application behind it failed ([`Self::close`]
    /// before a decision answers 403). A close asked for as well gives the
    /// code `disconnect` is called with. Does nothing outside a deferred
    /// connect or after its first decision.
    pub fn fail_handshake(&mut self, status: u16) {
        if self.deferring && self.decision.is_none() {
            self.decision = Some(Box::new(Decision::Fail(status)));
        }
    }

    /// Returns whether a deferred connect is waiting for its decision
    /// ([`Connect::Defer`](super::Connect::Defer)).
    pub fn is_deferring(&self) -> bool {
        self.deferring
    }

    pub(crate) fn set_deferring(&mut self, deferring: bool) {
        self.deferring = deferring;
    }

    pub(crate) fn take_decision(&mut self) -> Option<Decision> {
        self.decision.take().map(|decision| *decision)
    }

    /// Asks the runtime to call the consumer's
    /// [`wake`](super::WebsocketConsumer::wake) at `at` (a deadline: a token
    /// expiry, a handshake timeout). One timer per connection: a later call
    /// replaces the earlier one. It costs nothing until it is used.
    pub fn wake_at(&mut self, at: tokio::time::Instant) {
        self.wake_request = Some(WakeRequest::At(at));
    }

    /// Cancels the timer set with [`ConsumerContext::wake_at`].
    pub fn cancel_wake(&mut self) {
        self.wake_request = Some(WakeRequest::Cancel);
    }

    pub(crate) fn has_wake_request(&self) -> bool {
        self.wake_request.is_some()
    }

    pub(crate) fn take_wake_request(&mut self) -> Option<WakeRequest> {
        self.wake_request.take()
    }

    pub(crate) fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Joins `group` (Django's `channel_layer.group_add(group,
    /// self.channel_name)`); the membership is discarded on disconnect.
    ///
    /// # Errors
    /// [`ConsumerError::Layer`] with the layer's error (invalid name, backend).
    pub async fn group_add(&mut self, group: &str) -> Result<(), ConsumerError> {
        self.layer.group_add(group, &self.channel).await?;
        if !self.groups.iter().any(|g| g == group) {
            self.groups.push(group.to_owned());
        }
        Ok(())
    }

    /// Leaves `group`.
    ///
    /// # Errors
    /// [`ConsumerError::Layer`] with the layer's error.
    pub async fn group_discard(&mut self, group: &str) -> Result<(), ConsumerError> {
        self.groups.retain(|g| g != group);
        self.layer.group_discard(group, &self.channel).await?;
        Ok(())
    }

    /// Sends `message` to every channel in `group`. While the server is
    /// overloaded (an eighth of its connections held back because it writes
    /// slower than messages arrive), it first waits, up to
    /// [`PUBLISH_BACKPRESSURE`], so publishers slow down instead of readers
    /// losing messages.
    ///
    /// # Errors
    /// [`ConsumerError::Layer`] with the layer's error.
    pub async fn group_send(&self, group: &str, message: Message) -> Result<(), ConsumerError> {
        // Back-pressure: while the server cannot keep up with what it has
        // to write, the publisher slows down rather than the server
        // dropping its readers' messages.
        self.outbox
            .stats()
            .wait_while_overloaded(PUBLISH_BACKPRESSURE)
            .await;
        Ok(self.layer.group_send(group, message).await?)
    }

    /// Sends `message` to `channel` (another connection's channel, or a
    /// worker's named channel).
    ///
    /// # Errors
    /// [`ConsumerError::Layer`] with the layer's error (for example
    /// `ChannelFull`).
    pub async fn send_to(&self, channel: &str, message: Message) -> Result<(), ConsumerError> {
        Ok(self.layer.send(channel, message).await?)
    }

    /// Takes the remembered groups (for the runtime to discard them).
    pub(crate) fn take_groups(&mut self) -> Vec<String> {
        std::mem::take(&mut self.groups)
    }
}

impl Drop for ConsumerContext {
    /// A safety net: if the connection is dropped without the runtime leaving
    /// its groups (the handshake was cancelled mid-way, the task was aborted),
    /// leave them in a background task rather than until group expiry.
    fn drop(&mut self) {
        if self.groups.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let layer = self.layer.clone();
        let channel = self.channel.clone();
        let groups = std::mem::take(&mut self.groups);
        runtime.spawn(async move {
            for group in groups {
                let discard = layer.group_discard(&group, &channel);
                match tokio::time::timeout(DROP_DISCARD_TIMEOUT, discard).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%group, %error, "group discard after drop failed")
                    }
                    Err(_) => tracing::warn!(%group, "group discard after drop timed out"),
                }
            }
        });
    }
}
