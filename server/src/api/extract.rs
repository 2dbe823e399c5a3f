//! The API's extractors, run in argument order so a request is checked in
//! this order: the bearer token ([`Authorized`], 401), the path parameter
//! ([`GroupPath`], [`ChannelPath`], [`UserPath`], 400), then the body
//! ([`JsonBody`], 415, 413, 400). Every rejection is an [`ApiError`], so the
//! answer is JSON.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use channels_core::{validate_channel_name, validate_group_name};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use super::ApiState;
use super::error::ApiError;
use crate::middleware::bearer_token;

/// Longest user id the `/api/users/{user}` endpoints take, in characters.
pub(crate) const MAX_USER_LENGTH: usize = 256;

/// Proof that the request carries `Authorization: Bearer <token>` with the
/// right token (compared in constant time, so timing does not reveal it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authorized;

impl FromRequestParts<ApiState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let authorized = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(state.token.as_bytes())));
        if authorized {
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// The route's one path parameter, percent-decoded.
async fn path_parameter(parts: &mut Parts, state: &ApiState) -> Result<String, ApiError> {
    let Path(value) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::BadPath(rejection.body_text()))?;
    Ok(value)
}

/// A `{group}` path parameter that follows Django's group name rules.
#[derive(Debug, Clone)]
pub(crate) struct GroupPath(pub(crate) String);

impl FromRequestParts<ApiState> for GroupPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let group = path_parameter(parts, state).await?;
        validate_group_name(&group).map_err(ApiError::InvalidName)?;
        Ok(Self(group))
    }
}

/// A `{channel}` path parameter that follows Django's channel name rules.
#[derive(Debug, Clone)]
pub(crate) struct ChannelPath(pub(crate) String);

impl FromRequestParts<ApiState> for ChannelPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let channel = path_parameter(parts, state).await?;
        validate_channel_name(&channel).map_err(ApiError::InvalidName)?;
        Ok(Self(channel))
    }
}

/// A `{user}` path parameter: a token's `sub`, any text of at most
/// [`MAX_USER_LENGTH`] characters.
#[derive(Debug, Clone)]
pub(crate) struct UserPath(pub(crate) String);

impl FromRequestParts<ApiState> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let user = path_parameter(parts, state).await?;
        let length = user.chars().count();
        if length > MAX_USER_LENGTH {
            return Err(ApiError::BadRequest(format!(
                "user id of {length} characters is longer than the limit of {MAX_USER_LENGTH}"
            )));
        }
        Ok(Self(user))
    }
}

/// Whether a `Content-Type` value is JSON: `application/json` or a
/// `+json` type, parameters ignored, any case.
pub(crate) fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype
                .get(subtype.len().saturating_sub(5)..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case("+json")))
}

/// Refuses a body declared as something other than JSON. No `Content-Type`
/// at all is taken as JSON, as the publish API always did.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    if is_json_media_type(&text) {
        Ok(())
    } else {
        Err(ApiError::NotJsonContentType {
            given: text.into_owned(),
        })
    }
}

/// The most of a refused body that is read (and thrown away) so the client
/// gets its 413: a client that sends the whole body before it reads (Python's
/// `requests` does) would otherwise see the connection reset instead.
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
/// How long that reading may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the whole body (the router's `DefaultBodyLimit` refuses a bigger
/// one while it is read). A body whose `Content-Length` is over the limit is
/// read and discarded first (up to [`DRAIN_BYTES`] within [`DRAIN_TIME`]),
/// then refused.
async fn read_body(request: Request, state: &ApiState) -> Result<Bytes, ApiError> {
    check_content_type(request.headers())?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > state.max_body_bytes as u64) {
        if length <= DRAIN_BYTES {
            let mut body = request.into_body().into_data_stream();
            let drain = async { while let Some(Ok(_)) = body.next().await {} };
            // A client that stalls only loses its answer: the limits above
            // bound what this costs.
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        }
        return Err(ApiError::TooLarge {
            limit: state.max_body_bytes,
        });
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge {
                    limit: state.max_body_bytes,
                }
            } else {
                ApiError::UnreadableBody(rejection.body_text())
            }
        })
}

/// A body a type can describe for the error message of a wrong shape.
pub(crate) trait Expected {
    /// What the endpoint takes, e.g. "body must be a JSON object with a
    /// string `type`".
    const EXPECTED: &'static str;
}

/// The body as a `T`. Every body of the API is a JSON object, so an array
/// is refused too, though serde would read a struct from one.
fn parse<T: DeserializeOwned + Expected>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = serde_json::from_slice(bytes).map_err(|error| {
        if error.is_syntax() || error.is_eof() {
            ApiError::NotJson(error)
        } else {
            ApiError::WrongShape {
                expected: T::EXPECTED,
                source: error,
            }
        }
    })?;
    // Valid JSON that starts with `{` is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        Ok(value)
    } else {
        Err(ApiError::NotAnObject {
            expected: T::EXPECTED,
        })
    }
}

/// Whether `bytes` is an empty body or JSON `null`.
fn is_nothing(bytes: &[u8]) -> bool {
    let text = bytes.trim_ascii();
    text.is_empty() || text == b"null"
}

/// A JSON body of type `T`, required.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned + Expected> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let bytes = read_body(request, state).await?;
        parse(&bytes).map(Self)
    }
}

/// A JSON body of type `T`, or none at all (an empty body, or `null`).
#[derive(Debug)]
pub(crate) struct OptionalJsonBody<T>(pub(crate) Option<T>);

impl<T: DeserializeOwned + Expected> FromRequest<ApiState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let bytes = read_body(request, state).await?;
        if is_nothing(&bytes) {
            return Ok(Self(None));
        }
        parse(&bytes).map(|value| Self(Some(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Pair {
        #[allow(dead_code)] // read by serde only
        a: Option<u8>,
    }

    impl Expected for Pair {
        const EXPECTED: &'static str = "an object";
    }

    #[test]
    fn bodies_are_objects_not_arrays_serde_would_take() {
        assert!(parse::<Pair>(br#" {"a": 1}"#).is_ok());
        assert!(matches!(
            parse::<Pair>(b"[1]"),
            Err(ApiError::NotAnObject { .. })
        ));
        assert!(matches!(parse::<Pair>(b"{"), Err(ApiError::NotJson(_))));
        assert!(matches!(
            parse::<Pair>(br#"{"a": "x"}"#),
            Err(ApiError::WrongShape { .. })
        ));
        assert!(is_nothing(b" null\n") && is_nothing(b"") && !is_nothing(b"{}"));
    }

    #[test]
    fn json_media_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            " application/json ",
        ] {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }
}
