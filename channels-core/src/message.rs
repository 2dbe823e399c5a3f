//! [`Message`]: what travels through a channel layer.
//!
//! A message is a map with string keys and a string `type` field, holding any
//! msgpack value: strings, integers, floats, booleans, null, lists, maps and
//! **bytes**. That is exactly what Python's `channels_redis` writes, so a message
//! survives a trip through Python unchanged. Values are [`rmpv::Value`]
//! (re-exported as [`Value`]).
//!
//! Cloning a message is one reference-count increment: a broadcast to a
//! thousand members shares one copy. Changing a clone copies it first, so a
//! message mutated after `send` never changes what the receiver gets.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::consumer::Frame;
use crate::error::LayerError;

/// A msgpack value: the type of every field of a [`Message`].
pub use rmpv::Value;

/// The key a message's type is stored under.
pub const TYPE_KEY: &str = "type";

/// The routing key channels_redis adds on the wire; a message must not carry it.
pub const RESERVED_CHANNEL_KEY: &str = "__asgi_channel__";

/// A channel layer message: an ordered map of string keys to [`Value`]s with a
/// string `type`.
///
/// # Examples
/// ```
/// use channels_core::Message;
///
/// let message = Message::new("chat.message")
///     .with("text", "hello")
///     .with("id", 7)
///     .with("raw", vec![0u8, 255]);
/// assert_eq!(message.message_type(), Some("chat.message"));
/// assert_eq!(message.get("text").and_then(|v| v.as_str()), Some("hello"));
/// assert_eq!(message.get("raw").and_then(|v| v.as_slice()), Some(&[0u8, 255][..]));
/// ```
#[derive(Clone, PartialEq, Default)]
pub struct Message {
    fields: Arc<Fields>,
}

/// A message's storage: its fields, plus the frame built from it once and
/// shared by every member of a broadcast ([`Message::shared_frame`]).
///
/// Aligned to its own cache lines, apart from the `Arc`'s counts: a broadcast
/// clones and drops a message on every core at once, and the members read
/// its type and frame meanwhile, which must not share a line with counts
/// being written.
#[derive(Default)]
#[repr(align(128))]
struct Fields {
    entries: Vec<(String, Value)>,
    frame: OnceLock<(&'static str, Frame)>,
}

impl Clone for Fields {
    /// A copy is about to be changed, so the frame built from the original
    /// does not carry over.
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            frame: OnceLock::new(),
        }
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Fields {
    fn new(entries: Vec<(String, Value)>) -> Self {
        Self {
            entries,
            frame: OnceLock::new(),
        }
    }
}

impl Message {
    /// Creates a message holding only its `type`.
    pub fn new(message_type: impl Into<String>) -> Self {
        Self {
            fields: Arc::new(Fields::new(vec![(
                TYPE_KEY.to_owned(),
                Value::String(message_type.into().into()),
            )])),
        }
    }

    /// Returns the message with `key` set to `value` (replacing an earlier
    /// value in place, or appending a new key).
    ///
    /// Setting `type` to a non-string or adding `__asgi_channel__` is not
    /// refused here; [`Message::validate`] (run by every `send`) reports it.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        let fields = &mut Arc::make_mut(&mut self.fields).entries;
        if let Some(slot) = fields.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(&mut slot.1, value));
        }
        fields.push((key, value));
        None
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let index = self.fields.entries.iter().position(|(k, _)| k == key)?;
        Some(Arc::make_mut(&mut self.fields).entries.remove(index).1)
    }

    /// Returns the value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields
            .entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Returns the message's `type`, if it is present and a string.
    pub fn message_type(&self) -> Option<&str> {
        self.get(TYPE_KEY).and_then(Value::as_str)
    }

    /// Iterates over the fields in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.fields.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Returns the number of fields (including `type`).
    pub fn len(&self) -> usize {
        self.fields.entries.len()
    }

    /// Returns whether the message has no fields at all (only possible for
    /// [`Message::default`], which is not a valid message).
    pub fn is_empty(&self) -> bool {
        self.fields.entries.is_empty()
    }

    /// Returns whether two messages share the same storage (a clone that was
    /// not changed since). Used to check that broadcasts do not copy.
    pub fn shares_storage_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.fields, &other.fields)
    }

    /// Returns the frame `build` makes from this message, building it only
    /// once per message: every clone (each member of one `group_send` holds
    /// one) gets the same shared bytes. `purpose` names the kind of frame
    /// (`build` must always make the same frame for the same purpose); a
    /// different purpose builds a fresh frame that is not kept.
    ///
    /// # Examples
    /// ```
    /// use channels_core::Message;
    /// use channels_core::consumer::Frame;
    ///
    /// let message = Message::new("chat.message").with("text", "hi");
    /// let member = message.clone();
    /// let render = |m: &Message| Frame::from(m.get("text").and_then(|v| v.as_str()).unwrap_or(""));
    /// let first = message.shared_frame("chat", render);
    /// let second = member.shared_frame("chat", render);
    /// assert_eq!(first, second); // built once, shared
    /// ```
    pub fn shared_frame(&self, purpose: &'static str, build: impl FnOnce(&Self) -> Frame) -> Frame {
        if let Some((kept, frame)) = self.fields.frame.get() {
            if *kept == purpose {
                return frame.clone();
            }
            return build(self);
        }
        let frame = build(self);
        // Another member may have built it meanwhile; either copy is right.
        let _ = self.fields.frame.set((purpose, frame.clone()));
        frame
    }

    /// Checks what every layer requires of a message it sends: a string
    /// `type`, and no reserved `__asgi_channel__` key.
    ///
    /// # Errors
    /// [`LayerError::InvalidMessage`] saying what is wrong.
    pub fn validate(&self) -> Result<(), LayerError> {
        let mut message_type = None;
        for (key, value) in &self.fields.entries {
            if key == RESERVED_CHANNEL_KEY {
                return Err(LayerError::invalid_message(format!(
                    "the `{RESERVED_CHANNEL_KEY}` key is reserved for the layer's routing; remove it"
                )));
            }
            if key == TYPE_KEY {
                message_type = Some(value);
            }
        }
        match message_type {
            Some(Value::String(s)) if s.is_str() => Ok(()),
            Some(other) => Err(LayerError::invalid_message(format!(
                "`type` must be a string, got {other}"
            ))),
            None => Err(LayerError::invalid_message(
                "a message needs a string `type` field, e.g. {\"type\": \"chat.message\"}",
            )),
        }
    }

    /// Builds a message from a msgpack map with string keys.
    ///
    /// # Errors
    /// [`LayerError::InvalidMessage`] when `value` is not such a map or fails
    /// [`Message::validate`].
    pub fn from_value(value: Value) -> Result<Self, LayerError> {
        let Value::Map(entries) = value else {
            return Err(LayerError::invalid_message(format!(
                "a message must be a map, got {value}"
            )));
        };
        let mut fields = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Value::String(key) = key else {
                return Err(LayerError::invalid_message(format!(
                    "message keys must be strings, got {key}"
                )));
            };
            let key = key
                .into_str()
                .ok_or_else(|| LayerError::invalid_message("a message key is not valid UTF-8"))?;
            fields.push((key, value));
        }
        let message = Self {
            fields: Arc::new(Fields::new(fields)),
        };
        message.validate()?;
        Ok(message)
    }

    /// Builds a message from fields already known to have string keys, without
    /// validating them. For decoders that check the result themselves.
    pub fn from_fields_unchecked(fields: Vec<(String, Value)>) -> Self {
        Self {
            fields: Arc::new(Fields::new(fields)),
        }
    }

    /// Returns the message as a msgpack map value (a copy).
    pub fn to_value(&self) -> Value {
        Value::Map(
            self.fields
                .entries
                .iter()
                .map(|(k, v)| (Value::String(k.as_str().into()), v.clone()))
                .collect(),
        )
    }

    /// Builds a message from any serializable struct or map; struct fields
    /// become keys, in declaration order. Use `serde_bytes` on `Vec<u8>` fields
    /// so they travel as msgpack bytes rather than lists of integers.
    ///
    /// # Errors
    /// [`LayerError::InvalidMessage`] when `value` does not serialize to a map
    /// with string keys and a string `type`.
    ///
    /// # Examples
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Chat { r#type: String, text: String }
    ///
    /// let chat = Chat { r#type: "chat.message".into(), text: "hi".into() };
    /// let message = channels_core::Message::from_serializable(&chat)?;
    /// assert_eq!(message.message_type(), Some("chat.message"));
    /// assert_eq!(message.decode::<Chat>()?, chat);
    /// # Ok::<(), channels_core::LayerError>(())
    /// ```
    pub fn from_serializable<T: Serialize + ?Sized>(value: &T) -> Result<Self, LayerError> {
        let bytes = rmp_serde::to_vec_named(value)
            .map_err(|e| LayerError::invalid_message(format!("cannot serialize message: {e}")))?;
        let value = rmpv::decode::read_value(&mut bytes.as_slice())
            .map_err(|e| LayerError::invalid_message(format!("cannot serialize message: {e}")))?;
        Self::from_value(value)
    }

    /// Decodes the message into a typed struct.
    ///
    /// # Errors
    /// [`LayerError::InvalidMessage`] when the fields do not fit `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, LayerError> {
        rmpv::ext::from_value(self.to_value()).map_err(|e| {
            LayerError::invalid_message(format!(
                "cannot decode `{}` message: {e}",
                self.message_type().unwrap_or("?")
            ))
        })
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.fields
                    .entries
                    .iter()
                    .map(|(k, v)| (k, DisplayValue(v))),
            )
            .finish()
    }
}

struct DisplayValue<'a>(&'a Value);

impl fmt::Debug for DisplayValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0, f)
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.fields.entries.len()))?;
        for (key, value) in &self.fields.entries {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<Value> for Message {
    type Error = LayerError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_shares_until_changed() {
        let original = Message::new("a").with("n", 1);
        let mut copy = original.clone();
        assert!(copy.shares_storage_with(&original));
        copy.insert("n", 2);
        assert!(!copy.shares_storage_with(&original));
        assert_eq!(original.get("n").and_then(Value::as_i64), Some(1));
    }

    #[test]
    fn insert_replaces_in_place() {
        let message = Message::new("a").with("x", 1).with("y", 2).with("x", 3);
        let keys: Vec<_> = message.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["type", "x", "y"]);
        assert_eq!(message.get("x").and_then(Value::as_i64), Some(3));
    }

    #[test]
    fn validate_rejects_missing_or_non_string_type_and_reserved_key() {
        assert!(Message::new("ok").validate().is_ok());
        assert!(Message::default().with("text", "x").validate().is_err());
        assert!(Message::new("x").with("type", 3).validate().is_err());
        let error = Message::new("x")
            .with(RESERVED_CHANNEL_KEY, "c")
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("reserved"), "{error}");
    }

    #[test]
    fn from_value_rejects_non_maps_and_non_string_keys() {
        assert!(Message::from_value(Value::from(3)).is_err());
        let map = Value::Map(vec![(Value::from(1), Value::from(2))]);
        assert!(Message::from_value(map).is_err());
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Payload {
        r#type: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        count: Option<i64>,
        nested: std::collections::BTreeMap<String, f64>,
    }

    #[test]
    fn serde_round_trip_keeps_bytes_as_bytes() {
        let payload = Payload {
            r#type: "blob".into(),
            data: vec![0, 1, 255],
            count: None,
            nested: [("pi".to_owned(), 3.5)].into(),
        };
        let message = Message::from_serializable(&payload).unwrap();
        assert!(matches!(message.get("data"), Some(Value::Binary(b)) if b == &[0, 1, 255]));
        assert_eq!(message.get("count"), Some(&Value::Nil));
        assert_eq!(message.decode::<Payload>().unwrap(), payload);
    }

    #[test]
    fn json_round_trip() {
        let message: Message = serde_json::from_str(
            r#"{"type":"chat.message","text":"hé","n":-3,"f":1.5,"l":[1,null,true]}"#,
        )
        .unwrap();
        assert_eq!(message.message_type(), Some("chat.message"));
        assert_eq!(message.get("n").and_then(Value::as_i64), Some(-3));
        let json = serde_json::to_string(&message).unwrap();
        assert_eq!(
            json,
            r#"{"type":"chat.message","text":"hé","n":-3,"f":1.5,"l":[1,null,true]}"#
        );
        assert!(serde_json::from_str::<Message>(r#"{"text":"no type"}"#).is_err());
    }
}
