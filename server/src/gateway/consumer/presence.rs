//! Presence of a gateway connection (`--presence`, docs/protocol.md
//! "Presence"): its entry in every group it is in, and the events of the
//! groups it watches (`subscribe` with `"presence": true`).

use channels_core::Message;
use channels_core::consumer::{ConsumerContext, ConsumerError};

use super::GatewayConsumer;
use crate::gateway::protocol::ErrorCode;
use crate::presence::events::{event_frame, events_group, members_frame};

/// The error of a `subscribe` asking for presence on a server without it.
pub(super) const PRESENCE_OFF: &str =
    "presence is off on this server; it must be started with --presence";

impl GatewayConsumer {
    /// Records the connection in `group` (once, however often it joins).
    pub(super) async fn presence_join(&mut self, ctx: &ConsumerContext, group: &str) {
        let Some(presence) = self.shared.presence.clone() else {
            return;
        };
        if self.presence_groups.iter().any(|g| g == group) {
            return;
        }
        presence.join(group, ctx.channel_name(), self.user()).await;
        self.presence_groups.push(group.to_owned());
    }

    /// Removes the connection's entry in `group`, and stops watching it.
    pub(super) async fn presence_leave(&mut self, ctx: &mut ConsumerContext, group: &str) {
        let Some(presence) = self.shared.presence.clone() else {
            return;
        };
        if self.presence_groups.iter().any(|g| g == group) {
            self.presence_groups.retain(|g| g != group);
            presence.leave(group, ctx.channel_name(), self.user()).await;
        }
        if self.watching.iter().any(|g| g == group) {
            self.watching.retain(|g| g != group);
            presence.unwatch(group);
            if let Err(error) = ctx.group_discard(&events_group(group)).await {
                tracing::warn!(%group, %error, "leaving a presence events group failed");
            }
        }
    }

    /// Sends `group`'s join and leave events to this client from now on,
    /// then the group's members as they are now.
    pub(super) async fn presence_watch(
        &mut self,
        ctx: &mut ConsumerContext,
        group: &str,
    ) -> Result<(), ConsumerError> {
        let Some(presence) = self.shared.presence.clone() else {
            return Ok(());
        };
        if !self.watching.iter().any(|g| g == group) {
            if let Err(error) = ctx.group_add(&events_group(group)).await {
                tracing::warn!(%group, %error, "joining a presence events group failed");
                return self.error(
                    ctx,
                    None,
                    ErrorCode::Unavailable,
                    &format!("presence events of `{group}` unavailable; subscribe again"),
                );
            }
            presence.watch(group);
            self.watching.push(group.to_owned());
        }
        // After joining the events group: nothing between this read and
        // the next event is missed (an event may repeat what it shows).
        match presence.members(group).await {
            Ok(members) => ctx.send_text(members_frame(group, &members)),
            Err(_) => self.error(
                ctx,
                None,
                ErrorCode::Unavailable,
                &format!("presence of `{group}` could not be read; events still follow"),
            ),
        }
    }

    /// A presence event from the layer: pushed when this client watches
    /// its group.
    pub(super) fn presence_event(
        &self,
        ctx: &mut ConsumerContext,
        message: &Message,
    ) -> Result<(), ConsumerError> {
        match event_frame(message) {
            Some((group, frame)) if self.watching.contains(&group) => ctx.send_text(frame),
            _ => Ok(()),
        }
    }

    /// The connection is closing: its entries go, its watches end (the
    /// runtime leaves the layer groups itself).
    pub(super) async fn presence_disconnect(&mut self, ctx: &ConsumerContext) {
        let Some(presence) = self.shared.presence.clone() else {
            return;
        };
        for group in std::mem::take(&mut self.watching) {
            presence.unwatch(&group);
        }
        for group in std::mem::take(&mut self.presence_groups) {
            presence
                .leave(&group, ctx.channel_name(), self.user())
                .await;
        }
    }
}
