//! The msgpack codec, byte-exact with Python's `msgpack.packb(use_bin_type=True)`
//! and `msgpack.unpackb(raw=False, strict_map_key=True)` as channels_redis uses
//! them (WIRE.md §4).
//!
//! Encoding rules: integers in their smallest form (unsigned forms for
//! non-negative values), floats always as float64, strings in the str family,
//! bytes as bin, maps in insertion order, no ext types. The routing key
//! `__asgi_channel__` is appended as the last map entry.

use channels_core::{LayerError, Message, RESERVED_CHANNEL_KEY, Value};
use rmp::encode;
use rmpv::ValueRef;

/// Where a message is going, written into it as `__asgi_channel__`.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// No routing key (plain `send`, and every pub/sub payload).
    None,
    /// One process-local channel, written as a string (core `send` to a `!` name).
    Channel(&'a str),
    /// The channels sharing one key, written as a list (core `group_send`).
    Channels(&'a [&'a str]),
    /// The same list, each channel given as `prefix` followed by one of
    /// `locals` (the process-local channels of one instance share the part
    /// up to `!`): written byte for byte as [`Route::Channels`] of the
    /// joined names, without joining them first.
    Prefixed {
        /// What every channel starts with.
        prefix: &'a str,
        /// The rest of each channel.
        locals: &'a [&'a str],
    },
}

/// A decoded message and the routing key it carried, if any.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The message without `__asgi_channel__`.
    pub message: Message,
    /// The destination channels: one for a string route, several for a list.
    pub route: Option<Vec<String>>,
}

fn write_error(error: impl std::fmt::Display) -> LayerError {
    LayerError::invalid_message(format!("cannot encode message: {error}"))
}

/// Encodes `message` (plus its route) as msgpack, byte for byte as Python does.
///
/// # Errors
/// [`LayerError::InvalidMessage`] when the message holds something Python's
/// msgpack could not read back: an ext value, a map key that is not a string
/// or bytes, or a string that is not valid UTF-8.
pub fn pack(message: &Message, route: Route<'_>) -> Result<Vec<u8>, LayerError> {
    let mut out = Vec::with_capacity(64);
    let extra = usize::from(!matches!(route, Route::None));
    let len = u32::try_from(message.len() + extra).map_err(write_error)?;
    encode::write_map_len(&mut out, len).map_err(write_error)?;
    for (key, value) in message.iter() {
        encode::write_str(&mut out, key).map_err(write_error)?;
        write_value(&mut out, value)?;
    }
    match route {
        Route::None => {}
        Route::Channel(channel) => {
            encode::write_str(&mut out, RESERVED_CHANNEL_KEY).map_err(write_error)?;
            encode::write_str(&mut out, channel).map_err(write_error)?;
        }
        Route::Channels(channels) => write_channel_list(&mut out, "", channels)?,
        Route::Prefixed { prefix, locals } => write_channel_list(&mut out, prefix, locals)?,
    }
    Ok(out)
}

/// Writes the routing key and its list of channels, each `prefix` followed
/// by one of `rests`, as strings in their smallest form (as Python does).
fn write_channel_list(out: &mut Vec<u8>, prefix: &str, rests: &[&str]) -> Result<(), LayerError> {
    encode::write_str(out, RESERVED_CHANNEL_KEY).map_err(write_error)?;
    let len = u32::try_from(rests.len()).map_err(write_error)?;
    encode::write_array_len(out, len).map_err(write_error)?;
    for rest in rests {
        let len = u32::try_from(prefix.len() + rest.len()).map_err(write_error)?;
        encode::write_str_len(out, len).map_err(write_error)?;
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(rest.as_bytes());
    }
    Ok(())
}

/// Encodes one value with Python's choices of forms.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), LayerError> {
    match value {
        Value::Nil => encode::write_nil(out).map_err(write_error)?,
        Value::Boolean(b) => encode::write_bool(out, *b).map_err(write_error)?,
        Value::Integer(i) => {
            if let Some(i) = i.as_i64() {
                encode::write_sint(out, i).map_err(write_error)?;
            } else if let Some(u) = i.as_u64() {
                encode::write_u64(out, u).map_err(write_error)?;
            }
        }
        // Python has only doubles: a float32 read from elsewhere goes back as float64.
        Value::F32(f) => encode::write_f64(out, f64::from(*f)).map_err(write_error)?,
        Value::F64(f) => encode::write_f64(out, *f).map_err(write_error)?,
        Value::String(s) => {
            let s = s
                .as_str()
                .ok_or_else(|| LayerError::invalid_message("a string is not valid UTF-8"))?;
            encode::write_str(out, s).map_err(write_error)?;
        }
        Value::Binary(b) => encode::write_bin(out, b).map_err(write_error)?,
        Value::Array(items) => {
            let len = u32::try_from(items.len()).map_err(write_error)?;
            encode::write_array_len(out, len).map_err(write_error)?;
            for item in items {
                write_value(out, item)?;
            }
        }
        Value::Map(entries) => {
            let len = u32::try_from(entries.len()).map_err(write_error)?;
            encode::write_map_len(out, len).map_err(write_error)?;
            for (key, item) in entries {
                if !matches!(key, Value::String(_) | Value::Binary(_)) {
                    return Err(LayerError::invalid_message(format!(
                        "map keys must be strings or bytes (Python's strict_map_key), got {key}"
                    )));
                }
                write_value(out, key)?;
                write_value(out, item)?;
            }
        }
        Value::Ext(tag, _) => {
            return Err(LayerError::invalid_message(format!(
                "msgpack ext values (type {tag}) are not supported"
            )));
        }
    }
    Ok(())
}

fn read_error(error: impl std::fmt::Display) -> LayerError {
    LayerError::invalid_message(format!("cannot decode message: {error}"))
}

/// Decodes msgpack bytes into a message and its route, rejecting what Python's
/// `unpackb(raw=False, strict_map_key=True)` rejects.
///
/// # Errors
/// [`LayerError::InvalidMessage`] on malformed or trailing bytes, invalid
/// UTF-8, a map key that is not a string or bytes, a non-map top level, a
/// top-level key that is not a string, or a route that is not a string or a
/// list of strings.
pub fn unpack(bytes: &[u8]) -> Result<Unpacked, LayerError> {
    let (message, route) = unpack_borrowed(bytes)?;
    Ok(Unpacked {
        message,
        route: route.map(|names| names.into_iter().map(str::to_owned).collect()),
    })
}

/// [`unpack`], with the route's channel names borrowed from `bytes` instead
/// of copied: a group message names every member of its key, and the
/// receive loop only needs each name long enough to find its mailbox.
///
/// # Errors
/// As [`unpack`].
pub fn unpack_borrowed(bytes: &[u8]) -> Result<(Message, Option<Vec<&str>>), LayerError> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value_ref(&mut reader).map_err(read_error)?;
    if !reader.is_empty() {
        return Err(read_error(format!("{} trailing bytes", reader.len())));
    }
    split(value)
}

/// Splits a decoded map into message and route (the JSON format's decoder).
pub(crate) fn from_value(value: &Value) -> Result<Unpacked, LayerError> {
    let (message, route) = split(value.as_ref())?;
    Ok(Unpacked {
        message,
        route: route.map(|names| names.into_iter().map(str::to_owned).collect()),
    })
}

/// The message (every entry but `__asgi_channel__`, checked as Python's
/// `unpackb(raw=False, strict_map_key=True)` checks) and the route, whose
/// names stay borrowed.
fn split(value: ValueRef<'_>) -> Result<(Message, Option<Vec<&str>>), LayerError> {
    let ValueRef::Map(entries) = value else {
        return Err(read_error(format!(
            "a message must be a map, got {}",
            value.to_owned()
        )));
    };
    let mut fields = Vec::with_capacity(entries.len());
    let mut route = None;
    for (key, value) in entries {
        let key = match key {
            ValueRef::String(s) => s
                .into_str()
                .ok_or_else(|| read_error("a key is not valid UTF-8"))?,
            other => {
                return Err(read_error(format!(
                    "message keys must be strings, got {}",
                    other.to_owned()
                )));
            }
        };
        if key == RESERVED_CHANNEL_KEY {
            route = Some(decode_route(value)?);
        } else {
            let value = value.to_owned();
            check_value(&value)?;
            fields.push((key.to_owned(), value));
        }
    }
    let message = Message::from_fields_unchecked(fields);
    message.validate()?;
    Ok((message, route))
}

fn bad_route() -> LayerError {
    read_error("`__asgi_channel__` must be a string or a list of strings")
}

fn decode_route(value: ValueRef<'_>) -> Result<Vec<&str>, LayerError> {
    match value {
        ValueRef::String(s) => Ok(vec![s.into_str().ok_or_else(bad_route)?]),
        ValueRef::Array(items) => items
            .into_iter()
            .map(|item| match item {
                ValueRef::String(s) => s.into_str().ok_or_else(bad_route),
                _ => Err(bad_route()),
            })
            .collect(),
        _ => Err(bad_route()),
    }
}

/// Applies `raw=False` (valid UTF-8) and `strict_map_key=True` to every level.
fn check_value(value: &Value) -> Result<(), LayerError> {
    match value {
        Value::String(s) if !s.is_str() => Err(read_error("a string is not valid UTF-8")),
        Value::Array(items) => items.iter().try_for_each(check_value),
        Value::Map(entries) => entries.iter().try_for_each(|(key, item)| {
            if !matches!(key, Value::String(_) | Value::Binary(_)) {
                return Err(read_error(format!(
                    "map keys must be strings or bytes (strict_map_key), got {key}"
                )));
            }
            check_value(key)?;
            check_value(item)
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn wire_message() -> Message {
        Message::new("chat.message")
            .with("text", "hi")
            .with("n", -3)
            .with("f", 1.5)
            .with("b", vec![0u8, 0xff])
            .with(
                "l",
                Value::Array(vec![Value::from(1), Value::Nil, Value::from(true)]),
            )
            .with("m", Value::Map(vec![(Value::from("k"), Value::from("v"))]))
    }

    const BODY: &str = "a474797065ac636861742e6d657373616765a474657874a26869a16efda166cb3ff8000000000000a162c40200ffa16c9301c0c3a16d81a16ba176";

    #[test]
    fn wire_section_8_vector_without_route() {
        let packed = pack(&wire_message(), Route::None).unwrap();
        assert_eq!(hex(&packed), format!("87{BODY}"));
    }

    #[test]
    fn wire_section_8_vector_with_string_route() {
        let packed = pack(&wire_message(), Route::Channel("specific.abc!def")).unwrap();
        assert_eq!(
            hex(&packed),
            format!("88{BODY}b05f5f617367695f6368616e6e656c5f5fb073706563696669632e61626321646566")
        );
        let unpacked = unpack(&packed).unwrap();
        assert_eq!(unpacked.message, wire_message());
        assert_eq!(unpacked.route, Some(vec!["specific.abc!def".to_owned()]));
    }

    #[test]
    fn a_prefixed_route_packs_as_the_list_of_joined_names() {
        // Short, 31/32 bytes (fixstr/str8 boundary) and long names.
        let prefix = "specific.0123456789abcdef0123456789abcdef!";
        let locals = ["", "a", "bcdefghijklmnopqrstuvwxyz", &"x".repeat(300)];
        let joined: Vec<String> = locals.iter().map(|l| format!("{prefix}{l}")).collect();
        let joined: Vec<&str> = joined.iter().map(String::as_str).collect();
        let short = (
            "specific.ab!",
            ["0123456789abcdefghi", "0123456789abcdefghij"],
        );
        let short_joined = short.1.map(|l| format!("{}{l}", short.0));
        let short_joined: Vec<&str> = short_joined.iter().map(String::as_str).collect();
        for (prefix, locals, joined) in [
            (prefix, &locals[..], &joined[..]),
            (short.0, &short.1[..], &short_joined[..]),
        ] {
            assert_eq!(
                pack(&wire_message(), Route::Prefixed { prefix, locals }).unwrap(),
                pack(&wire_message(), Route::Channels(joined)).unwrap()
            );
            let text = Message::new("chat.message").with("text", "hi");
            assert_eq!(
                crate::json::dump(&text, Route::Prefixed { prefix, locals }).unwrap(),
                crate::json::dump(&text, Route::Channels(joined)).unwrap()
            );
        }
    }

    #[test]
    fn wire_section_8_vector_with_list_route() {
        let packed = pack(&wire_message(), Route::Channels(&["specific.abc!def"])).unwrap();
        assert_eq!(
            hex(&packed),
            format!(
                "88{BODY}b05f5f617367695f6368616e6e656c5f5f91b073706563696669632e61626321646566"
            )
        );
        let unpacked = unpack(&packed).unwrap();
        assert_eq!(unpacked.route, Some(vec!["specific.abc!def".to_owned()]));
        assert!(unpacked.message.get(RESERVED_CHANNEL_KEY).is_none());
    }

    #[test]
    fn r2_serializer_vector() {
        // R2: {"a": True, "b": None, "c": {"d": []}}; our messages need a `type`,
        // so check the value encoder and the decoder on the exact bytes.
        let value = Value::Map(vec![
            (Value::from("a"), Value::from(true)),
            (Value::from("b"), Value::Nil),
            (
                Value::from("c"),
                Value::Map(vec![(Value::from("d"), Value::Array(vec![]))]),
            ),
        ]);
        let mut out = Vec::new();
        write_value(&mut out, &value).unwrap();
        assert_eq!(hex(&out), "83a161c3a162c0a16381a16490");
        let decoded =
            rmpv::decode::read_value(&mut &unhex("83a161c3a162c0a16381a16490")[..]).unwrap();
        assert_eq!(decoded, value);
        // Without a `type` it is not a valid channel message.
        assert!(unpack(&unhex("83a161c3a162c0a16381a16490")).is_err());
    }

    #[test]
    fn scalars_use_python_forms() {
        let cases: &[(Value, &str)] = &[
            (Value::from(127), "7f"),
            (Value::from(128), "cc80"),
            (Value::from(256), "cd0100"),
            (Value::from(65536), "ce00010000"),
            (Value::from(1u64 << 32), "cf0000000100000000"),
            (Value::from(u64::MAX), "cfffffffffffffffff"),
            (Value::from(-1), "ff"),
            (Value::from(-32), "e0"),
            (Value::from(-33), "d0df"),
            (Value::from(-129), "d1ff7f"),
            (Value::from(i64::MIN), "d38000000000000000"),
            (Value::from(1.5), "cb3ff8000000000000"),
            (Value::F32(1.5), "cb3ff8000000000000"),
            (Value::Binary(vec![]), "c400"),
            (
                Value::from("a".repeat(32)),
                &format!("d920{}", "61".repeat(32)),
            ),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            write_value(&mut out, value).unwrap();
            assert_eq!(&hex(&out), expected, "{value}");
        }
        let mut out = Vec::new();
        write_value(&mut out, &Value::from("a".repeat(74))).unwrap();
        assert_eq!(&hex(&out[..2]), "d94a");
    }

    #[test]
    fn decode_rejects_what_python_rejects() {
        // invalid UTF-8 in a value: a1 ff
        assert!(unpack(&unhex("82a474797065a178a178a1ff")).is_err());
        // integer map key at the top level and nested
        assert!(unpack(&unhex("82a474797065a1780102")).is_err());
        assert!(unpack(&unhex("82a474797065a178a178810101")).is_err());
        assert!(unpack(&unhex("82a474797065a178a1788101c0")).is_err());
        // trailing bytes, truncated input, non-map
        assert!(unpack(&unhex("81a474797065a17800")).is_err());
        assert!(unpack(&unhex("81a474797065a1")).is_err());
        assert!(unpack(&unhex("93010203")).is_err());
        // bad route type
        assert!(
            unpack(&unhex(
                "82a474797065a178b05f5f617367695f6368616e6e656c5f5f01"
            ))
            .is_err()
        );
        // bytes keys in nested maps are fine (Python accepts them)
        let ok = unpack(&unhex("82a474797065a178a16d81c4016b01")).unwrap();
        assert!(ok.route.is_none());
    }

    #[test]
    fn encode_rejects_ext_and_non_string_nested_keys() {
        let ext = Message::new("x").with("e", Value::Ext(1, vec![0]));
        assert!(pack(&ext, Route::None).is_err());
        let int_key = Message::new("x").with("m", Value::Map(vec![(Value::from(1), Value::Nil)]));
        assert!(pack(&int_key, Route::None).is_err());
    }

    #[test]
    fn round_trip_extremes() {
        let message = Message::new("t")
            .with("min", i64::MIN)
            .with("umax", u64::MAX)
            .with("empty", "")
            .with("uni", "hé ツ")
            .with("bytes", (0u8..=255).collect::<Vec<u8>>())
            .with(
                "nested",
                Value::Map(vec![(Value::from("x"), Value::Array(vec![Value::Nil]))]),
            );
        let unpacked = unpack(&pack(&message, Route::None).unwrap()).unwrap();
        assert_eq!(unpacked.message, message);
        assert!(unpacked.route.is_none());
    }
}
