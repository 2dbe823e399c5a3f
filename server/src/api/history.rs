//! `GET /api/groups/{group}/history`: what a group's history keeps now, for
//! backends (docs/protocol.md, "History and recovery").

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use super::error::ApiError;
use super::extract::{Authorized, GroupPath};
use super::openapi::HistoryResponses;
use crate::gateway::protocol::{Data, Publication};

/// What `GET /api/groups/{group}/history` answers.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "group": "news", "epoch": "5d41402abc4b2a76b9719d911017c592", "offset": 20, "first": 19,
    "publications": [
        {"offset": 19, "data": {"type": "news.item", "title": "a"}},
        {"offset": 20, "data": {"type": "news.item", "title": "b"}}
    ]
}))]
#[allow(dead_code)] // only describes the answer for the document
pub(crate) struct History {
    /// The group.
    group: String,
    /// The history's epoch: it changes when the history is lost (Redis
    /// restarted empty, flushed), so an offset is only meaningful with it.
    epoch: String,
    /// The offset of the newest message kept in this epoch (0: none yet).
    offset: u64,
    /// The offset of the oldest message still kept (`offset + 1` when none).
    first: u64,
    /// The kept messages, oldest first: `{"offset": N, "data": {...}}`.
    publications: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct HistoryBody<'a> {
    group: &'a str,
    epoch: &'a str,
    offset: u64,
    first: u64,
    publications: Vec<Publication<'a>>,
}

/// A group's history
///
/// The messages the group's history keeps now, in order, each with its
/// offset, and the epoch. A client subscribing with `recover` gets the ones
/// after its position the same way.
#[utoipa::path(
    get,
    path = "/api/groups/{group}/history",
    tag = "history",
    operation_id = "group_history",
    params(GroupPath),
    responses(HistoryResponses)
)]
pub(crate) async fn history(
    _: Authorized,
    GroupPath(group): GroupPath,
    State(state): State<ApiState>,
) -> Result<Response, ApiError> {
    let no_history = || ApiError::NoHistory {
        group: group.clone(),
    };
    let histories = state.histories.as_ref().ok_or_else(no_history)?;
    let snapshot = histories.read(&group).await?.ok_or_else(no_history)?;
    let body = HistoryBody {
        group: &group,
        epoch: &snapshot.epoch,
        offset: snapshot.top,
        first: snapshot.first,
        publications: snapshot
            .entries
            .iter()
            .map(|(offset, message)| Publication {
                offset: *offset,
                data: Data(message),
            })
            .collect(),
    };
    Ok(Json(body).into_response())
}
