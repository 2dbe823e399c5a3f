//! Publishing: `POST /api/groups/{group}` (`group_send`),
//! `POST /api/channels/{channel}` (`send`) and `POST /api/broadcast` (one
//! `group_send` per group, concurrently). A publish to a group adds the
//! reserved key `_group` naming it, as docs/protocol.md says.

use std::collections::HashSet;

use axum::extract::State;
use channels_core::{Message, validate_group_name};
use futures_util::future::join_all;
use serde::Deserialize;
use utoipa::ToSchema;

use super::ApiState;
use super::error::ApiError;
use super::extract::{Authorized, ChannelPath, Expected, GroupPath, JsonBody};
use super::openapi::{Accepted, GroupName, PublishResponses};
use crate::control::GROUP_KEY;
use channels_core::consumer::{Backpressure, PUBLISH_BACKPRESSURE};

/// Most groups one `POST /api/broadcast` may name: enough for a fan-out to
/// the rooms of a page, few enough that one request stays one short burst
/// of layer work (about 100 Redis round trips at most, run concurrently).
pub(crate) const MAX_BROADCAST_GROUPS: usize = 100;

/// A message from a request body: a JSON object with a string `type`,
/// checked by [`Message`]'s own rules (its schema is in `openapi.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct MessageBody(pub(crate) Message);

impl Expected for MessageBody {
    const EXPECTED: &'static str = "body must be a JSON object with a string `type`";
}

/// The body of `POST /api/broadcast`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastBody {
    /// The groups to send to: 1 to 100 names; a name listed twice is sent once.
    #[schema(min_items = 1, max_items = 100)]
    groups: Vec<GroupName>,
    /// The message every group gets (each copy with `_group` naming its group).
    #[schema(value_type = super::openapi::MessageSchema)]
    message: MessageBody,
}

impl Expected for BroadcastBody {
    const EXPECTED: &'static str =
        "body must be {\"groups\": [\"name\", ...], \"message\": {\"type\": \"...\"}}";
}

/// `message` with `_group` set to `group`.
pub(crate) fn addressed(mut message: Message, group: &str) -> Message {
    message.insert(GROUP_KEY, group);
    message
}

/// Send a message to a group
///
/// `group_send`: every channel in the group gets the message, with `_group`
/// set to the group's name. Python `channels_redis` consumers in the group
/// get it too.
#[utoipa::path(
    post,
    path = "/api/groups/{group}",
    tag = "publish",
    operation_id = "publish_group",
    params(GroupPath),
    request_body(content = super::openapi::MessageSchema, content_type = "application/json"),
    responses(PublishResponses),
)]
pub(crate) async fn group(
    _: Authorized,
    GroupPath(group): GroupPath,
    State(state): State<ApiState>,
    JsonBody(MessageBody(message)): JsonBody<MessageBody>,
) -> Result<Accepted, ApiError> {
    admit(&state).await?;
    state
        .layer
        .group_send(&group, addressed(message, &group))
        .await?;
    Ok(Accepted::new())
}

/// Back-pressure for publishers: while this server is overloaded (an eighth
/// of its connections held back because it writes slower than messages
/// arrive), a publish waits up to [`PUBLISH_BACKPRESSURE`]; still overloaded
/// then, it is refused with 503 and `Retry-After` (nothing was sent).
pub(crate) async fn admit(state: &ApiState) -> Result<(), ApiError> {
    match state
        .metrics
        .consumers
        .wait_while_overloaded(PUBLISH_BACKPRESSURE)
        .await
    {
        Backpressure::TimedOut => Err(ApiError::Overloaded),
        Backpressure::None | Backpressure::Waited => Ok(()),
    }
}

/// Send a message to a channel
///
/// `send`: the one reader of the channel gets the message as it is (a
/// worker's channel, or a connection's `specific...!...` channel).
#[utoipa::path(
    post,
    path = "/api/channels/{channel}",
    tag = "publish",
    operation_id = "publish_channel",
    params(ChannelPath),
    request_body(content = super::openapi::MessageSchema, content_type = "application/json"),
    responses(PublishResponses),
)]
pub(crate) async fn channel(
    _: Authorized,
    ChannelPath(channel): ChannelPath,
    State(state): State<ApiState>,
    JsonBody(MessageBody(message)): JsonBody<MessageBody>,
) -> Result<Accepted, ApiError> {
    state.layer.send(&channel, message).await?;
    Ok(Accepted::new())
}

/// Send a message to several groups
///
/// One `group_send` per group, run concurrently, after every name was
/// checked (one bad name and nothing is sent). At most 100 groups per call.
/// When some sends fail the answer is 503 and says how many; the others
/// were delivered.
#[utoipa::path(
    post,
    path = "/api/broadcast",
    tag = "publish",
    operation_id = "broadcast",
    request_body(content = BroadcastBody, content_type = "application/json"),
    responses(PublishResponses),
)]
pub(crate) async fn broadcast(
    _: Authorized,
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<BroadcastBody>,
) -> Result<Accepted, ApiError> {
    let BroadcastBody {
        groups,
        message: MessageBody(message),
    } = body;
    if groups.is_empty() {
        return Err(ApiError::BadRequest(
            "`groups` is empty; name at least one group".to_owned(),
        ));
    }
    if groups.len() > MAX_BROADCAST_GROUPS {
        return Err(ApiError::BadRequest(format!(
            "{} groups in one broadcast, more than the limit of {MAX_BROADCAST_GROUPS}; split it",
            groups.len()
        )));
    }
    for GroupName(group) in &groups {
        validate_group_name(group).map_err(ApiError::InvalidName)?;
    }
    let mut seen = HashSet::with_capacity(groups.len());
    let unique: Vec<&str> = groups
        .iter()
        .map(|GroupName(group)| group.as_str())
        .filter(|group| seen.insert(*group))
        .collect();
    admit(&state).await?;
    let layer = &state.layer;
    let sends = unique
        .iter()
        .map(|group| layer.group_send(group, addressed(message.clone(), group)));
    let results = join_all(sends).await;
    let total = results.len();
    let mut errors = results.into_iter().filter_map(Result::err);
    match errors.next() {
        None => Ok(Accepted::new()),
        Some(first) => Err(ApiError::PartlyFailed {
            failed: 1 + errors.count(),
            total,
            first,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_publish_names_its_group_in_place() {
        let message = Message::new("x").with(GROUP_KEY, "old").with("n", 1);
        let sent = addressed(message, "news");
        let keys: Vec<&str> = sent.iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["type", GROUP_KEY, "n"]);
        assert_eq!(sent.get(GROUP_KEY).and_then(|v| v.as_str()), Some("news"));
    }
}
