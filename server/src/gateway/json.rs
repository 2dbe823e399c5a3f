//! msgpack values as JSON: [`AsJson`] serializes an [`rmpv::Value`] with
//! serde (into `serde_json` or any other format) without an intermediate
//! `serde_json::Value`, so map keys keep their order and a broadcast is
//! encoded once, straight into its frame.
//!
//! What JSON has no word for is mapped explicitly: bytes (msgpack bin, and
//! the data of an ext value) become standard base64 strings, `NaN` and the
//! infinities become `null` (as JavaScript's `JSON.stringify` does), map
//! keys that are not strings become their JSON text (`1`, `true`), and
//! strings that are not valid UTF-8 are decoded lossily.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rmpv::Value;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// Serializes the msgpack value it wraps as JSON-compatible data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsJson<'a>(pub(crate) &'a Value);

impl Serialize for AsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Nil => serializer.serialize_unit(),
            Value::Boolean(b) => serializer.serialize_bool(*b),
            Value::Integer(n) => match (n.as_i64(), n.as_u64()) {
                (Some(n), _) => serializer.serialize_i64(n),
                (None, Some(n)) => serializer.serialize_u64(n),
                // Every msgpack integer fits one of the two.
                (None, None) => serializer.serialize_unit(),
            },
            Value::F32(f) => float(serializer, f64::from(*f)),
            Value::F64(f) => float(serializer, *f),
            Value::String(s) => match s.as_str() {
                Some(text) => serializer.serialize_str(text),
                None => serializer.serialize_str(&String::from_utf8_lossy(s.as_bytes())),
            },
            Value::Binary(bytes) => serializer.serialize_str(&BASE64.encode(bytes)),
            Value::Ext(_, bytes) => serializer.serialize_str(&BASE64.encode(bytes)),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&AsJson(item))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(&key_text(key), &AsJson(value))?;
                }
                map.end()
            }
        }
    }
}

/// JSON has no NaN or infinity: they are `null`, explicitly (serde_json
/// would write `null` too, other serializers may refuse them).
fn float<S: Serializer>(serializer: S, f: f64) -> Result<S::Ok, S::Error> {
    if f.is_finite() {
        serializer.serialize_f64(f)
    } else {
        serializer.serialize_unit()
    }
}

/// A JSON object key for a msgpack map key: strings as they are, anything
/// else as its JSON text (bytes as base64).
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => match s.as_str() {
            Some(text) => text.to_owned(),
            None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        },
        Value::Binary(bytes) => BASE64.encode(bytes),
        other => serde_json::to_string(&AsJson(other)).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: &Value) -> String {
        serde_json::to_string(&AsJson(value)).unwrap()
    }

    #[test]
    fn every_msgpack_kind_has_a_json_form() {
        let value = Value::Map(vec![
            (Value::from("z"), Value::from(1)),
            (Value::from("a"), Value::from(-2)),
            (Value::from("big"), Value::from(u64::MAX)),
            (Value::from("f"), Value::F64(1.5)),
            (Value::from("f32"), Value::F32(0.25)),
            (Value::from("nan"), Value::F64(f64::NAN)),
            (Value::from("inf"), Value::F64(f64::INFINITY)),
            (Value::from("-inf"), Value::F32(f32::NEG_INFINITY)),
            (Value::from("bytes"), Value::Binary(vec![0, 1, 255])),
            (Value::from("ext"), Value::Ext(3, vec![104, 105])),
            (Value::from("nil"), Value::Nil),
            (
                Value::from("list"),
                Value::Array(vec![Value::from(true), Value::from("x")]),
            ),
            (Value::from(7), Value::from("int key")),
            (Value::from(false), Value::from("bool key")),
        ]);
        assert_eq!(
            json(&value),
            r#"{"z":1,"a":-2,"big":18446744073709551615,"f":1.5,"f32":0.25,"nan":null,"inf":null,"-inf":null,"bytes":"AAH/","ext":"aGk=","nil":null,"list":[true,"x"],"7":"int key","false":"bool key"}"#
        );
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily() {
        // A msgpack str of two bytes, the second not UTF-8: rmpv keeps them raw.
        let raw = rmpv::decode::read_value(&mut &[0xa2, b'a', 0xff][..]).unwrap();
        assert_eq!(json(&raw), "\"a\u{fffd}\"");
    }
}
