//! Presence events: the internal group a group's join and leave events go
//! to, the layer message that carries one, and the `presence` frame a
//! client gets (docs/protocol.md, "Presence").
//!
//! Events do not go to the group itself: every member, Python consumers
//! included, would get messages it never asked for. A client asks for them
//! with `{"type": "subscribe", "group": G, "presence": true}`, which also
//! joins its connection to [`events_group`]`(G)`.

use channels_core::consumer::Text;
use channels_core::presence::PresenceEntry;
use channels_core::{MAX_NAME_LENGTH, Message, Value};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The layer message type of a join or leave event.
pub(crate) const EVENT: &str = "gateway.presence";

/// The start of every events group's name.
const EVENTS_PREFIX: &str = "gateway.presence.";

/// The internal group that gets `group`'s join and leave events:
/// `gateway.presence.<group>`, or `gateway.presence.x` and the first 32 hex
/// digits of SHA-256(`group`) when that would reach Django's 100-character
/// limit. A (theoretical) collision is harmless: a connection only passes on
/// events whose `group` it asked for.
pub(crate) fn events_group(group: &str) -> String {
    if EVENTS_PREFIX.len() + group.len() < MAX_NAME_LENGTH {
        return format!("{EVENTS_PREFIX}{group}");
    }
    let digest = Sha256::digest(group.as_bytes());
    let mut name = format!("{EVENTS_PREFIX}x");
    for byte in &digest[..16] {
        use std::fmt::Write as _;
        let _ = write!(name, "{byte:02x}");
    }
    name
}

/// Whether a connection joined or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// It joined the group.
    Join,
    /// It left (or its process died and a reader removed its entry).
    Leave,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }
}

/// The layer message of one event.
pub(crate) fn event_message(
    group: &str,
    change: Change,
    channel: &str,
    user: Option<&str>,
) -> Message {
    Message::new(EVENT)
        .with("group", group)
        .with("event", change.as_str())
        .with("channel", channel)
        .with("user", user.map_or(Value::Nil, Value::from))
}

/// The `presence` frame of an event message; `None` when the message is not
/// one.
pub(crate) fn event_frame(message: &Message) -> Option<(String, Text)> {
    let text = |key| message.get(key).and_then(Value::as_str);
    let group = text("group")?;
    let event = text("event").filter(|e| matches!(*e, "join" | "leave"))?;
    let frame = EventFrame {
        kind: "presence",
        group,
        event,
        channel: text("channel")?,
        user: text("user"),
    };
    let json = serde_json::to_string(&frame).ok()?;
    Some((group.to_owned(), json.into()))
}

#[derive(Serialize)]
struct EventFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    group: &'a str,
    event: &'a str,
    channel: &'a str,
    user: Option<&'a str>,
}

/// The `presence` frame with the `members` of `group`, sent after a
/// `subscribed` that asked for presence.
pub(crate) fn members_frame(group: &str, members: &[PresenceEntry]) -> Text {
    #[derive(Serialize)]
    struct Members<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        group: &'a str,
        event: &'static str,
        members: Vec<Member>,
    }
    let frame = Members {
        kind: "presence",
        group,
        event: "members",
        members: members.iter().map(Member::from).collect(),
    };
    serde_json::to_string(&frame).unwrap_or_default().into()
}

/// One connection as the API and the `members` frame show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Member {
    /// The connection's channel.
    channel: String,
    /// Its user (the token's `sub`); `null` when anonymous.
    user: Option<String>,
    /// The server process holding it (its `/api/info` `node_id`).
    node: String,
    /// When it joined, in seconds since the Unix epoch.
    joined_at: f64,
}

impl From<&PresenceEntry> for Member {
    fn from(entry: &PresenceEntry) -> Self {
        Self {
            channel: entry.channel.clone(),
            user: entry.user.clone(),
            node: entry.node.clone(),
            joined_at: entry.joined_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_groups_are_valid_and_long_names_are_hashed() {
        assert_eq!(events_group("room"), "gateway.presence.room");
        let long = "g".repeat(99);
        let hashed = events_group(&long);
        assert_eq!(hashed.len(), EVENTS_PREFIX.len() + 1 + 32);
        assert_ne!(hashed, events_group(&"h".repeat(99)));
        for group in ["room", &"a".repeat(82), &"a".repeat(83), &long] {
            channels_core::validate_group_name(&events_group(group)).unwrap();
        }
    }

    #[test]
    fn an_event_becomes_a_presence_frame() {
        let message = event_message("room", Change::Leave, "specific.a!b", None);
        let (group, frame) = event_frame(&message).unwrap();
        assert_eq!(group, "room");
        assert_eq!(
            frame.to_string(),
            r#"{"type":"presence","group":"room","event":"leave","channel":"specific.a!b","user":null}"#
        );
        let joined = event_message("room", Change::Join, "c", Some("ann"));
        assert!(event_frame(&joined).unwrap().1.contains(r#""user":"ann""#));
        assert!(event_frame(&Message::new(EVENT).with("group", "room")).is_none());
    }
}
