//! Presence (`--presence`): `GET /api/groups/{group}/presence` (every
//! connection in the group, on every process, and its distinct users) and
//! `GET /api/groups/{group}/presence/count` (just the numbers). Without
//! `--presence` both answer 501.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use super::error::ApiError;
use super::extract::{Authorized, GroupPath};
use super::openapi::{PresenceCountResponses, PresenceResponses};
use crate::presence::Presence;
use crate::presence::events::Member;

/// What `GET /api/groups/{group}/presence` answers.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "group": "chat.lobby",
    "connections": [{"channel": "specific.9f1c!a2", "user": "42",
                     "node": "9f1c2e4b7a0d4c8e9b3f6a5d2c1e0f7a", "joined_at": 1764500000.25}],
    "users": ["42"]
}))]
pub(crate) struct PresenceBody {
    /// The group.
    group: String,
    /// Every connection in it, on every live server process, oldest first.
    connections: Vec<Member>,
    /// The distinct users of those connections (anonymous ones left out), sorted.
    users: Vec<String>,
}

/// What `GET /api/groups/{group}/presence/count` answers.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"group": "chat.lobby", "connections": 3, "users": 2}))]
pub(crate) struct PresenceCountBody {
    /// The group.
    group: String,
    /// Connections in it, on every live server process.
    connections: usize,
    /// Distinct users among them.
    users: usize,
}

fn presence_of(state: &ApiState) -> Result<&Presence, ApiError> {
    state.presence.as_deref().ok_or(ApiError::PresenceOff)
}

/// Who is in a group
///
/// Every connection in the group on every server process sharing this
/// server's channel layer (channel, user, node, when it joined), and the
/// distinct users. Entries of a process that died vanish within 15 s.
#[utoipa::path(
    get,
    path = "/api/groups/{group}/presence",
    tag = "presence",
    operation_id = "group_presence",
    params(GroupPath),
    responses(PresenceResponses)
)]
pub(crate) async fn members(
    _: Authorized,
    GroupPath(group): GroupPath,
    State(state): State<ApiState>,
) -> Result<Json<PresenceBody>, ApiError> {
    let snapshot = presence_of(&state)?.read(&group).await?;
    Ok(Json(PresenceBody {
        connections: snapshot.members.iter().map(Member::from).collect(),
        users: snapshot.users(),
        group,
    }))
}

/// How many are in a group
///
/// The number of connections in the group on every server process, and of
/// distinct users among them.
#[utoipa::path(
    get,
    path = "/api/groups/{group}/presence/count",
    tag = "presence",
    operation_id = "group_presence_count",
    params(GroupPath),
    responses(PresenceCountResponses)
)]
pub(crate) async fn count(
    _: Authorized,
    GroupPath(group): GroupPath,
    State(state): State<ApiState>,
) -> Result<Json<PresenceCountBody>, ApiError> {
    let count = presence_of(&state)?.count(&group).await?;
    Ok(Json(PresenceCountBody {
        group,
        connections: count.connections,
        users: count.users,
    }))
}
