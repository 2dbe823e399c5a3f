//! Reaching every connection of one user: `POST /api/users/{user}/send`
//! publishes to the user's group ([`control::user_group`]); `subscribe`,
//! `unsubscribe` and `disconnect` send it the gateway's control messages
//! ([`control::SUBSCRIBE`], [`control::UNSUBSCRIBE`], [`control::DISCONNECT`]),
//! which each connection acts on (docs/protocol.md, "Server-side control").

use axum::extract::State;
use channels_core::{Message, validate_group_name};
use serde::Deserialize;
use utoipa::ToSchema;

use super::ApiState;
use super::error::ApiError;
use super::extract::{Authorized, Expected, JsonBody, OptionalJsonBody, UserPath};
use super::openapi::{Accepted, GroupName, PublishResponses};
use super::publish::{MessageBody, addressed};
use crate::control;

/// The longest close reason a WebSocket close frame carries, in bytes
/// (RFC 6455 5.5: a control frame payload is at most 125 bytes, two of which
/// are the code).
pub(crate) const MAX_REASON_BYTES: usize = 123;

/// The body of `subscribe` and `unsubscribe`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembershipBody {
    /// The group every connection of the user joins or leaves.
    group: GroupName,
}

impl Expected for MembershipBody {
    const EXPECTED: &'static str = "body must be {\"group\": \"name\"}";
}

/// The body of `disconnect`, optional as a whole.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectBody {
    /// The close code: 1000, or 3000 to 4999 (default 4004). Any JSON
    /// number with that integer value (`4000.0` too, as JSON Schema counts it).
    #[schema(value_type = Option<super::openapi::CloseCode>)]
    code: Option<serde_json::Number>,
    /// The close reason: at most 123 characters, cut to the 123 bytes of
    /// UTF-8 a close frame carries.
    #[schema(max_length = 123)]
    reason: Option<String>,
}

impl Expected for DisconnectBody {
    const EXPECTED: &'static str =
        "body must be empty or {\"code\": 4004, \"reason\": \"...\"} (both optional)";
}

/// `reason` cut to the bytes a close frame carries, at a character boundary.
pub(crate) fn fit_close_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// The close code `number` stands for, if it is an integer a backend may
/// send (see [`is_allowed_close_code`]).
pub(crate) fn close_code(number: &serde_json::Number) -> Option<u16> {
    let code = match number.as_u64() {
        Some(integer) => u16::try_from(integer).ok()?,
        None => {
            let float = number.as_f64()?;
            if float.fract() != 0.0 || !(0.0..=f64::from(u16::MAX)).contains(&float) {
                return None;
            }
            // In range and integral, checked just above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let integer = float as u16;
            integer
        }
    };
    is_allowed_close_code(code).then_some(code)
}

/// Whether a backend may close connections with `code`: 1000 (normal) or
/// the registered and private ranges 3000-4999 (RFC 6455 7.4.2).
pub(crate) fn is_allowed_close_code(code: u16) -> bool {
    code == 1000 || (3000..=4999).contains(&code)
}

/// Send a message to every connection of a user
///
/// `group_send` to the user's group (`user.<user>`, or `user.x` and a hash
/// when `user` is not a plain name), with `_group` set to that group.
#[utoipa::path(
    post,
    path = "/api/users/{user}/send",
    tag = "users",
    operation_id = "user_send",
    params(UserPath),
    request_body(content = super::openapi::MessageSchema, content_type = "application/json"),
    responses(PublishResponses),
)]
pub(crate) async fn send(
    _: Authorized,
    UserPath(user): UserPath,
    State(state): State<ApiState>,
    JsonBody(MessageBody(message)): JsonBody<MessageBody>,
) -> Result<Accepted, ApiError> {
    let group = control::user_group(&user);
    super::publish::admit(&state).await?;
    state
        .layer
        .group_send(&group, addressed(message, &group))
        .await?;
    Ok(Accepted::new())
}

/// Subscribe every connection of a user to a group
///
/// Sends `{"type": "gateway.subscribe", "group": G}` to the user's group;
/// each of the user's connections then joins `G`.
#[utoipa::path(
    post,
    path = "/api/users/{user}/subscribe",
    tag = "users",
    operation_id = "user_subscribe",
    params(UserPath),
    request_body(content = MembershipBody, content_type = "application/json"),
    responses(PublishResponses),
)]
pub(crate) async fn subscribe(
    _: Authorized,
    UserPath(user): UserPath,
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<MembershipBody>,
) -> Result<Accepted, ApiError> {
    membership(&state, &user, control::SUBSCRIBE, body).await
}

/// Unsubscribe every connection of a user from a group
///
/// Sends `{"type": "gateway.unsubscribe", "group": G}` to the user's group;
/// each of the user's connections then leaves `G`.
#[utoipa::path(
    post,
    path = "/api/users/{user}/unsubscribe",
    tag = "users",
    operation_id = "user_unsubscribe",
    params(UserPath),
    request_body(content = MembershipBody, content_type = "application/json"),
    responses(PublishResponses),
)]
pub(crate) async fn unsubscribe(
    _: Authorized,
    UserPath(user): UserPath,
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<MembershipBody>,
) -> Result<Accepted, ApiError> {
    membership(&state, &user, control::UNSUBSCRIBE, body).await
}

async fn membership(
    state: &ApiState,
    user: &str,
    kind: &str,
    body: MembershipBody,
) -> Result<Accepted, ApiError> {
    let GroupName(group) = body.group;
    validate_group_name(&group).map_err(ApiError::InvalidName)?;
    let control = Message::new(kind).with("group", group);
    state
        .layer
        .group_send(&control::user_group(user), control)
        .await?;
    Ok(Accepted::new())
}

/// Disconnect every connection of a user
///
/// Sends `{"type": "gateway.disconnect", "code": C}` (and `reason` when
/// given) to the user's group; each of the user's connections is closed
/// with that code. The body is optional: the code defaults to 4004.
#[utoipa::path(
    post,
    path = "/api/users/{user}/disconnect",
    tag = "users",
    operation_id = "user_disconnect",
    params(UserPath),
    request_body(content = Option<DisconnectBody>, content_type = "application/json"),
    responses(PublishResponses),
)]
pub(crate) async fn disconnect(
    _: Authorized,
    UserPath(user): UserPath,
    State(state): State<ApiState>,
    OptionalJsonBody(body): OptionalJsonBody<DisconnectBody>,
) -> Result<Accepted, ApiError> {
    let DisconnectBody { code, reason } = body.unwrap_or_default();
    let code = match code {
        None => control::DISCONNECT_CODE,
        Some(number) => close_code(&number).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "close code {number} is not one a backend may send; use 1000 or 3000 to 4999"
            ))
        })?,
    };
    let mut control = Message::new(control::DISCONNECT).with("code", code);
    if let Some(reason) = reason {
        let length = reason.chars().count();
        if length > MAX_REASON_BYTES {
            return Err(ApiError::BadRequest(format!(
                "close reason of {length} characters is longer than the limit of {MAX_REASON_BYTES}"
            )));
        }
        control.insert("reason", fit_close_reason(reason));
    }
    state
        .layer
        .group_send(&control::user_group(&user), control)
        .await?;
    Ok(Accepted::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_a_backend_may_send() {
        for code in [1000, 3000, control::DISCONNECT_CODE, 4999] {
            assert!(is_allowed_close_code(code), "{code}");
        }
        for code in [0, 999, 1001, 1011, 2999, 5000, u16::MAX] {
            assert!(!is_allowed_close_code(code), "{code}");
        }
    }

    #[test]
    fn close_codes_from_json_numbers() {
        let code = |text: &str| close_code(&serde_json::from_str(text).expect("a number"));
        assert_eq!(code("4000"), Some(4000));
        assert_eq!(code("4000.0"), Some(4000));
        assert_eq!(code("1000"), Some(1000));
        for refused in ["4000.5", "-4000", "1001", "70000", "1e300", "5000"] {
            assert_eq!(code(refused), None, "{refused}");
        }
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(fit_close_reason("bye".to_owned()), "bye");
        let cut = fit_close_reason("é".repeat(100));
        assert_eq!(cut.len(), 122);
        assert_eq!(fit_close_reason("x".repeat(123)).len(), 123);
    }
}
