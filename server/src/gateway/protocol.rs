//! The frames of docs/protocol.md: [`parse`] reads a client's text frame
//! into a [`Request`] (or says why it is not one), and the `*_frame`
//! functions write the server's answers, errors and pushes as JSON text
//! with `type` first.

use std::collections::HashMap;

use channels_core::Message;
use channels_core::consumer::Text;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;

use super::json::AsJson;
use crate::control::{EPOCH_KEY, GROUP_KEY, OFFSET_KEY};

/// The protocol version in `connected`.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// A request's `id`: a JSON number or string, repeated in its answer.
pub(crate) type Id = Box<RawValue>;

/// The error codes of the protocol's `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ErrorCode {
    /// Not valid JSON, a missing or wrong field.
    BadRequest,
    /// A `type` the server does not know (and no forward channel is set).
    UnknownFrame,
    /// A group name that breaks Django's rules.
    InvalidName,
    /// The token does not allow that group (or the group was joined by the server).
    Forbidden,
    /// `unsubscribe` of a group the connection is not in.
    NotSubscribed,
    /// `refresh` with a bad token, or for another `sub`.
    Unauthorized,
    /// The forward channel is full: the frame was not delivered.
    WorkerBusy,
    /// The channel layer failed.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for metrics.
    pub(crate) const ALL: [Self; 8] = [
        Self::BadRequest,
        Self::UnknownFrame,
        Self::InvalidName,
        Self::Forbidden,
        Self::NotSubscribed,
        Self::Unauthorized,
        Self::WorkerBusy,
        Self::Unavailable,
    ];

    /// The code as the protocol writes it.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownFrame => "unknown_frame",
            Self::InvalidName => "invalid_name",
            Self::Forbidden => "forbidden",
            Self::NotSubscribed => "not_subscribed",
            Self::Unauthorized => "unauthorized",
            Self::WorkerBusy => "worker_busy",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A history position a client asks to recover from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Recover {
    /// The last offset the client saw.
    pub(crate) offset: u64,
    /// The epoch of that offset.
    pub(crate) epoch: String,
}

/// A protocol request from the client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    Connect {
        token: Option<String>,
    },
    Subscribe {
        group: String,
        recover: Option<Recover>,
        /// Also send the group's presence events (`"presence": true`).
        presence: bool,
    },
    Unsubscribe {
        group: String,
    },
    Publish {
        group: String,
        data: Message,
    },
    Refresh {
        token: String,
    },
    Ping,
}

/// What a client's text frame is.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A protocol request.
    Request(Option<Id>, Request),
    /// A reserved `type` with a missing or wrong field: answered with
    /// `bad_request`, never forwarded.
    Invalid(Option<Id>, String),
    /// Not a protocol frame (not JSON, not an object, no string `type`, or a
    /// type that is not reserved): forwarded when a forward channel is set,
    /// else answered with this code and message.
    Other(ErrorCode, String),
}

/// The reserved frame types.
const RESERVED: [&str; 6] = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "refresh",
    "ping",
];

/// Reads one text frame from the client.
pub(crate) fn parse(text: &str) -> Parsed {
    let fields: HashMap<String, &RawValue> = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(error) if error.is_data() => {
            return Parsed::Other(
                ErrorCode::BadRequest,
                "a frame must be a JSON object with a string `type`".to_owned(),
            );
        }
        Err(error) => {
            return Parsed::Other(ErrorCode::BadRequest, format!("invalid JSON: {error}"));
        }
    };
    let Some(Ok(kind)) = fields
        .get("type")
        .map(|raw| serde_json::from_str::<String>(raw.get()))
    else {
        return Parsed::Other(
            ErrorCode::BadRequest,
            "a frame must be a JSON object with a string `type`".to_owned(),
        );
    };
    if !RESERVED.contains(&kind.as_str()) {
        return Parsed::Other(
            ErrorCode::UnknownFrame,
            format!(
                "unknown frame type `{kind}`; expected one of {}",
                RESERVED.join(", ")
            ),
        );
    }
    let id = match fields.get("id") {
        None => None,
        Some(raw)
            if raw.get().starts_with(['"', '-'])
                || raw.get().starts_with(|c: char| c.is_ascii_digit()) =>
        {
            Some(RawValue::from_string(raw.get().to_owned()).expect("a RawValue is valid JSON"))
        }
        Some(_) => return Parsed::Invalid(None, "`id` must be a number or a string".to_owned()),
    };
    match request(&kind, &fields) {
        Ok(request) => Parsed::Request(id, request),
        Err(message) => Parsed::Invalid(id, message),
    }
}

/// Builds the request of reserved type `kind` from its fields.
fn request(kind: &str, fields: &HashMap<String, &RawValue>) -> Result<Request, String> {
    Ok(match kind {
        "connect" => Request::Connect {
            token: optional(fields, "token")?,
        },
        "subscribe" => Request::Subscribe {
            group: required(fields, "group", "a string")?,
            recover: optional(fields, "recover")?,
            presence: optional(fields, "presence")?.unwrap_or(false),
        },
        "unsubscribe" => Request::Unsubscribe {
            group: required(fields, "group", "a string")?,
        },
        "publish" => {
            let group = required(fields, "group", "a string")?;
            let raw = fields
                .get("data")
                .ok_or("`data` is missing: a JSON object with a string `type`")?;
            // Straight into a message, so field order survives.
            let data: Message = serde_json::from_str(raw.get()).map_err(|error| {
                format!("`data` must be a JSON object with a string `type`: {error}")
            })?;
            Request::Publish { group, data }
        }
        "refresh" => Request::Refresh {
            token: required(fields, "token", "a string")?,
        },
        _ => Request::Ping,
    })
}

fn required<T: serde::de::DeserializeOwned>(
    fields: &HashMap<String, &RawValue>,
    name: &str,
    what: &str,
) -> Result<T, String> {
    let raw = fields
        .get(name)
        .ok_or_else(|| format!("`{name}` is missing: {what}"))?;
    serde_json::from_str(raw.get()).map_err(|_| format!("`{name}` must be {what}"))
}

fn optional<T: serde::de::DeserializeOwned>(
    fields: &HashMap<String, &RawValue>,
    name: &str,
) -> Result<Option<T>, String> {
    match fields.get(name) {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|error| format!("`{name}`: {error}")),
    }
}

/// An answer or error: `type`, then `id` when the request had one, then the
/// body's fields.
#[derive(Serialize)]
struct Answer<'a, B: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    #[serde(flatten)]
    body: B,
}

/// Writes an answer frame of `kind` with the fields of `body`.
pub(crate) fn answer_frame(kind: &str, id: Option<&RawValue>, body: impl Serialize) -> Text {
    // Serializing plain structs and strings into a String cannot fail.
    serde_json::to_string(&Answer { kind, id, body })
        .unwrap_or_default()
        .into()
}

/// Writes an `error` frame.
pub(crate) fn error_frame(id: Option<&RawValue>, code: ErrorCode, message: &str) -> Text {
    #[derive(Serialize)]
    struct Error<'a> {
        code: &'static str,
        message: &'a str,
    }
    answer_frame(
        "error",
        id,
        Error {
            code: code.as_str(),
            message,
        },
    )
}

/// The body of `connected`.
#[derive(Debug, Serialize)]
pub(crate) struct Connected<'a> {
    pub(crate) protocol: u32,
    pub(crate) channel: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) groups: &'a [String],
    pub(crate) expires_at: Option<u64>,
    pub(crate) ping_interval: Option<u64>,
}

/// Writes the `message` push for a layer message: its reserved keys
/// (`_group`, `_offset`, `_epoch`) move into the envelope, the rest is
/// `data`, in order.
pub(crate) fn message_frame(message: &Message) -> Text {
    let group = message.get(GROUP_KEY).and_then(|v| v.as_str());
    let offset = message.get(OFFSET_KEY).and_then(rmpv::Value::as_u64);
    let epoch = message.get(EPOCH_KEY).and_then(|v| v.as_str());
    let push = Push {
        kind: "message",
        group,
        offset,
        epoch,
        data: Data(message),
    };
    serde_json::to_string(&push).unwrap_or_default().into()
}

#[derive(Serialize)]
struct Push<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    data: Data<'a>,
}

/// The `lost` frame of a history relay's notice (`gateway.history_lost`):
/// the client may have missed messages of `group`; `offset`/`epoch` is its
/// position now.
pub(crate) fn lost_frame(notice: &Message) -> Text {
    let lost = Lost {
        kind: "lost",
        group: notice.get("group").and_then(|v| v.as_str()).unwrap_or(""),
        reason: notice.get("reason").and_then(|v| v.as_str()).unwrap_or(""),
        offset: notice
            .get("offset")
            .and_then(rmpv::Value::as_u64)
            .unwrap_or(0),
        epoch: notice.get("epoch").and_then(|v| v.as_str()).unwrap_or(""),
    };
    serde_json::to_string(&lost).unwrap_or_default().into()
}

#[derive(Serialize)]
struct Lost<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    group: &'a str,
    reason: &'a str,
    offset: u64,
    epoch: &'a str,
}

/// A kept message as `subscribed` and the history API list it:
/// `{"offset": N, "data": {...}}`.
#[derive(Serialize)]
pub(crate) struct Publication<'a> {
    pub(crate) offset: u64,
    pub(crate) data: Data<'a>,
}

/// A message's fields without the reserved keys the envelope carries.
pub(crate) struct Data<'a>(pub(crate) &'a Message);

impl Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self
            .0
            .iter()
            .filter(|(key, _)| ![GROUP_KEY, OFFSET_KEY, EPOCH_KEY].contains(key));
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields {
            map.serialize_entry(key, &AsJson(value))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_of(text: &str) -> (Option<String>, Request) {
        match parse(text) {
            Parsed::Request(id, request) => (id.map(|id| id.get().to_owned()), request),
            other => panic!("{text}: {other:?}"),
        }
    }

    fn code_of(text: &str) -> ErrorCode {
        match parse(text) {
            Parsed::Other(code, _) => code,
            Parsed::Invalid(..) => ErrorCode::BadRequest,
            Parsed::Request(..) => panic!("{text} parsed as a request"),
        }
    }

    #[test]
    fn requests_parse_with_their_ids() {
        assert_eq!(
            request_of(r#"{"type":"subscribe","id":1,"group":"chat.lobby"}"#),
            (
                Some("1".to_owned()),
                Request::Subscribe {
                    group: "chat.lobby".into(),
                    recover: None,
                    presence: false,
                }
            )
        );
        assert_eq!(
            request_of(r#"{"type":"subscribe","id":"a","group":"g","recover":{"offset":17,"epoch":"k3j9"}}"#).1,
            Request::Subscribe {
                group: "g".into(),
                recover: Some(Recover {
                    offset: 17,
                    epoch: "k3j9".into()
                }),
                presence: false,
            }
        );
        assert_eq!(
            request_of(r#"{"type":"subscribe","group":"g","presence":true}"#).1,
            Request::Subscribe {
                group: "g".into(),
                recover: None,
                presence: true,
            }
        );
        assert_eq!(request_of(r#"{"type":"ping"}"#), (None, Request::Ping));
        assert_eq!(
            request_of(r#"{"type":"connect"}"#).1,
            Request::Connect { token: None }
        );
        assert_eq!(
            request_of(r#"{"type":"connect","token":"t"}"#).1,
            Request::Connect {
                token: Some("t".into())
            }
        );
        let (_, publish) =
            request_of(r#"{"type":"publish","group":"g","data":{"type":"x","z":1,"a":2}}"#);
        let Request::Publish { data, .. } = publish else {
            panic!("{publish:?}")
        };
        let keys: Vec<_> = data.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["type", "z", "a"]);
    }

    #[test]
    fn non_protocol_frames_and_bad_fields_get_their_codes() {
        assert_eq!(code_of("{oops"), ErrorCode::BadRequest);
        assert_eq!(code_of("[1]"), ErrorCode::BadRequest);
        assert_eq!(code_of(r#"{"text":"hi"}"#), ErrorCode::BadRequest);
        assert_eq!(code_of(r#"{"type":5}"#), ErrorCode::BadRequest);
        assert_eq!(code_of(r#"{"type":"dance"}"#), ErrorCode::UnknownFrame);
        assert!(matches!(parse(r#"{"type":"dance"}"#), Parsed::Other(..)));
        for invalid in [
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","group":5}"#,
            r#"{"type":"subscribe","group":"g","recover":{"offset":"x","epoch":"e"}}"#,
            r#"{"type":"publish","group":"g"}"#,
            r#"{"type":"publish","group":"g","data":{"no":"type"}}"#,
            r#"{"type":"publish","group":"g","data":[1]}"#,
            r#"{"type":"refresh"}"#,
            r#"{"type":"ping","id":{"a":1}}"#,
        ] {
            assert!(
                matches!(parse(invalid), Parsed::Invalid(..)),
                "{invalid}: {:?}",
                parse(invalid)
            );
        }
        // The id of an invalid request is still repeated.
        let Parsed::Invalid(Some(id), _) = parse(r#"{"type":"subscribe","id":9}"#) else {
            panic!()
        };
        assert_eq!(id.get(), "9");
    }

    #[test]
    fn answers_put_type_and_id_first() {
        let id = RawValue::from_string("3".to_owned()).unwrap();
        assert_eq!(
            error_frame(Some(&id), ErrorCode::Forbidden, "no"),
            r#"{"type":"error","id":3,"code":"forbidden","message":"no"}"#
        );
        assert_eq!(
            answer_frame("pong", None, serde_json::json!({})),
            r#"{"type":"pong"}"#
        );
    }

    #[test]
    fn pushes_move_reserved_keys_into_the_envelope() {
        let message = Message::new("chat.message")
            .with("text", "hi")
            .with(GROUP_KEY, "chat.lobby")
            .with(OFFSET_KEY, 17)
            .with(EPOCH_KEY, "k3j9")
            .with("raw", rmpv::Value::Binary(vec![1, 2]));
        assert_eq!(
            message_frame(&message),
            r#"{"type":"message","group":"chat.lobby","offset":17,"epoch":"k3j9","data":{"type":"chat.message","text":"hi","raw":"AQI="}}"#
        );
        assert_eq!(
            message_frame(&Message::new("plain").with("n", 1)),
            r#"{"type":"message","data":{"type":"plain","n":1}}"#
        );
    }
}
