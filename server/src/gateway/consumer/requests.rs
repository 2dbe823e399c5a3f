//! The protocol requests of a client (`subscribe`, `unsubscribe`,
//! `publish`, `refresh`, `ping`, and `connect` before it is connected) and
//! their answers.

use channels_core::Message;
use channels_core::consumer::{ConsumerContext, ConsumerError};
use channels_core::validate_group_name;
use serde_json::value::RawValue;

use super::{GatewayConsumer, deadline_of};
use crate::control;
use crate::gateway::auth::{Reason, TokenRejection};
use crate::gateway::protocol::{Data, ErrorCode, Publication, Request, answer_frame};
use crate::history::Position;

/// The `reason` of a `subscribed` answer for a group that keeps no history.
const NO_HISTORY: &str = "no_history";
const NO_POSITION: &str = "no_position";

impl GatewayConsumer {
    /// Handles one protocol request.
    pub(super) async fn handle(
        &mut self,
        ctx: &mut ConsumerContext,
        id: Option<&RawValue>,
        request: Request,
    ) -> Result<(), ConsumerError> {
        let Some(session) = &self.session else {
            return match request {
                Request::Connect { token } => {
                    let token = token.filter(|t| !t.is_empty());
                    self.start_session(ctx, id, token.as_deref()).await
                }
                _ => self.error(
                    ctx,
                    id,
                    ErrorCode::BadRequest,
                    "send a `connect` frame first",
                ),
            };
        };
        match request {
            Request::Connect { .. } => {
                self.error(ctx, id, ErrorCode::BadRequest, "already connected")
            }
            Request::Ping => ctx.send_text(answer_frame("pong", id, Empty {})),
            Request::Subscribe {
                group,
                recover,
                presence,
            } => {
                if let Err(error) = validate_group_name(&group) {
                    return self.error(ctx, id, ErrorCode::InvalidName, &error.to_string());
                }
                if !self.server_groups.contains(&group) && !session.may(|c| &c.allow, &group) {
                    return self.error(
                        ctx,
                        id,
                        ErrorCode::Forbidden,
                        &format!("group `{group}` is not allowed by your token"),
                    );
                }
                if presence && self.shared.presence.is_none() {
                    return self.error(
                        ctx,
                        id,
                        ErrorCode::BadRequest,
                        super::presence::PRESENCE_OFF,
                    );
                }
                let position = recover.clone().map(|r| Position {
                    offset: r.offset,
                    epoch: r.epoch,
                });
                let joined = match self.join(ctx, &group, position).await {
                    Ok(joined) => joined,
                    Err(error) => return self.join_failed(ctx, id, &error),
                };
                self.presence_join(ctx, &group).await;
                self.shared.metrics.gateway.subscribed();
                let answer = match &joined {
                    Some(joined) => Subscribed {
                        group: &group,
                        recovered: joined.recovered,
                        reason: joined.reason,
                        offset: Some(joined.offset),
                        epoch: Some(&joined.epoch),
                        publications: (joined.recovered || !joined.publications.is_empty()).then(
                            || {
                                joined
                                    .publications
                                    .iter()
                                    .map(|(offset, message)| Publication {
                                        offset: *offset,
                                        data: Data(message),
                                    })
                                    .collect()
                            },
                        ),
                    },
                    None => Subscribed {
                        group: &group,
                        recovered: false,
                        reason: Some(if recover.is_some() {
                            NO_HISTORY
                        } else {
                            NO_POSITION
                        }),
                        offset: None,
                        epoch: None,
                        publications: None,
                    },
                };
                ctx.send_text(answer_frame("subscribed", id, answer))?;
                if presence {
                    self.presence_watch(ctx, &group).await?;
                }
                Ok(())
            }
            Request::Unsubscribe { group } => {
                if self.server_groups.contains(&group) {
                    return self.error(
                        ctx,
                        id,
                        ErrorCode::Forbidden,
                        &format!(
                            "group `{group}` was joined by the server; only the server can leave it"
                        ),
                    );
                }
                if !self.is_in(ctx, &group) {
                    return self.error(
                        ctx,
                        id,
                        ErrorCode::NotSubscribed,
                        &format!("not subscribed to `{group}`"),
                    );
                }
                if let Err(error) = self.leave(ctx, &group).await {
                    return self.join_failed(ctx, id, &error);
                }
                self.presence_leave(ctx, &group).await;
                ctx.send_text(answer_frame(
                    "unsubscribed",
                    id,
                    GroupOnly { group: &group },
                ))
            }
            Request::Publish { group, data } => {
                if let Err(error) = validate_group_name(&group) {
                    return self.error(ctx, id, ErrorCode::InvalidName, &error.to_string());
                }
                if !session.may(|c| &c.publish, &group) {
                    return self.error(
                        ctx,
                        id,
                        ErrorCode::Forbidden,
                        &format!("publishing to `{group}` is not allowed by your token"),
                    );
                }
                let data = match check_publish(data, &group) {
                    Ok(data) => data,
                    Err((code, message)) => return self.error(ctx, id, code, &message),
                };
                if let Err(error) = ctx.group_send(&group, data).await {
                    return self.layer_failed(ctx, id, &error);
                }
                self.shared.metrics.gateway.published();
                ctx.send_text(answer_frame("published", id, GroupOnly { group: &group }))
            }
            Request::Refresh { token } => self.refresh(ctx, id, &token),
        }
    }

    /// `refresh`: a valid token for the same `sub` moves the expiry and
    /// replaces the `allow` and `publish` claims (groups stay as joined).
    fn refresh(
        &mut self,
        ctx: &mut ConsumerContext,
        id: Option<&RawValue>,
        token: &str,
    ) -> Result<(), ConsumerError> {
        let Some(session) = &mut self.session else {
            return Ok(());
        };
        let Some(current) = &mut session.claims else {
            // Development mode: nothing expires.
            return ctx.send_text(answer_frame(
                "refreshed",
                id,
                Refreshed { expires_at: None },
            ));
        };
        let refused = match self.shared.verifier.verify(token) {
            Ok(claims) if claims.sub == current.sub => {
                current.exp = claims.exp;
                current.allow = claims.allow;
                current.publish = claims.publish;
                match claims.exp {
                    Some(exp) => ctx.wake_at(deadline_of(exp)),
                    None => ctx.cancel_wake(),
                }
                return ctx.send_text(answer_frame(
                    "refreshed",
                    id,
                    Refreshed {
                        expires_at: claims.exp,
                    },
                ));
            }
            Ok(claims) => TokenRejection::new(
                Reason::WrongUser,
                format!(
                    "the new token is for `{}`, not `{}`",
                    claims.sub, current.sub
                ),
            ),
            Err(rejection) => rejection,
        };
        self.shared
            .metrics
            .gateway
            .auth_failed(refused.reason.label());
        self.error(ctx, id, ErrorCode::Unauthorized, &refused.message)
    }

    /// Answers a subscribe or unsubscribe the layer (or history) failed:
    /// `unavailable`.
    fn join_failed(
        &self,
        ctx: &mut ConsumerContext,
        id: Option<&RawValue>,
        error: &str,
    ) -> Result<(), ConsumerError> {
        static LIMIT: channels_core::LogLimiter = channels_core::LogLimiter::per_second();
        if let Some(held_back) = LIMIT.allow() {
            tracing::warn!(held_back, %error, "gateway subscribe or unsubscribe failed");
        }
        self.error(
            ctx,
            id,
            ErrorCode::Unavailable,
            "channel layer unavailable; retry",
        )
    }

    /// Answers a request the layer failed: `unavailable`.
    fn layer_failed(
        &self,
        ctx: &mut ConsumerContext,
        id: Option<&RawValue>,
        error: &ConsumerError,
    ) -> Result<(), ConsumerError> {
        static LIMIT: channels_core::LogLimiter = channels_core::LogLimiter::per_second();
        if let Some(held_back) = LIMIT.allow() {
            tracing::warn!(held_back, %error, "gateway request failed in the channel layer");
        }
        self.error(
            ctx,
            id,
            ErrorCode::Unavailable,
            "channel layer unavailable; retry",
        )
    }
}

/// Checks the `data` of a client's publish and marks it with its group.
fn check_publish(mut data: Message, group: &str) -> Result<Message, (ErrorCode, String)> {
    let kind = data.message_type().unwrap_or_default();
    if kind.starts_with("websocket.") || kind.starts_with("gateway.") {
        return Err((
            ErrorCode::Forbidden,
            format!("message type `{kind}` is reserved for backends"),
        ));
    }
    if kind.starts_with('_') {
        return Err((
            ErrorCode::BadRequest,
            format!("message type `{kind}` starts with `_`: such messages are never delivered"),
        ));
    }
    for key in [control::GROUP_KEY, control::OFFSET_KEY, control::EPOCH_KEY] {
        if data.get(key).is_some() {
            return Err((
                ErrorCode::BadRequest,
                format!("`{key}` is reserved: the server sets it"),
            ));
        }
    }
    data.insert(control::GROUP_KEY, group);
    Ok(data)
}

#[derive(serde::Serialize)]
struct Empty {}

#[derive(serde::Serialize)]
struct GroupOnly<'a> {
    group: &'a str,
}

#[derive(serde::Serialize)]
struct Subscribed<'a> {
    group: &'a str,
    recovered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publications: Option<Vec<Publication<'a>>>,
}

#[derive(serde::Serialize)]
struct Refreshed {
    expires_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use channels_core::Value;

    use super::*;

    #[test]
    fn publishes_are_checked_and_marked_with_their_group() {
        let marked = check_publish(Message::new("chat.message").with("text", "hi"), "g").unwrap();
        assert_eq!(
            marked.get(control::GROUP_KEY).and_then(Value::as_str),
            Some("g")
        );
        for (data, code) in [
            (Message::new("websocket.close"), ErrorCode::Forbidden),
            (Message::new("gateway.disconnect"), ErrorCode::Forbidden),
            (Message::new("_private"), ErrorCode::BadRequest),
            (
                Message::new("x").with("_group", "other"),
                ErrorCode::BadRequest,
            ),
            (Message::new("x").with("_offset", 1), ErrorCode::BadRequest),
        ] {
            assert_eq!(check_publish(data, "g").unwrap_err().0, code);
        }
    }
}
