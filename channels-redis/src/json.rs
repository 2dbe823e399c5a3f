//! The `serializer_format="json"` body: byte-exact with Python's
//! `json.dumps(message)` defaults (`", "` and `": "` separators, ASCII-only
//! output with `\uXXXX` escapes, Python float repr).

use std::fmt::Write as _;

use channels_core::{LayerError, Message, RESERVED_CHANNEL_KEY, Value};

use crate::wire::{self, Route, Unpacked};

/// Writes `message` (and its route) as Python's `json.dumps` would.
///
/// # Errors
/// [`LayerError::InvalidMessage`] for values JSON cannot hold (bytes, ext
/// values, non-string map keys).
pub(crate) fn dump(message: &Message, route: Route<'_>) -> Result<Vec<u8>, LayerError> {
    let mut out = String::with_capacity(64);
    out.push('{');
    let mut first = true;
    for (key, value) in message.iter() {
        if !first {
            out.push_str(", ");
        }
        first = false;
        write_str(&mut out, key);
        out.push_str(": ");
        write_value(&mut out, value, 2)?;
    }
    let channels: Vec<Value> = match route {
        Route::None => Vec::new(),
        Route::Channel(channel) => vec![Value::from(channel)],
        Route::Channels(channels) => channels.iter().map(|c| Value::from(*c)).collect(),
        Route::Prefixed { prefix, locals } => locals
            .iter()
            .map(|local| Value::from(format!("{prefix}{local}")))
            .collect(),
    };
    if !matches!(route, Route::None) {
        if !first {
            out.push_str(", ");
        }
        write_str(&mut out, RESERVED_CHANNEL_KEY);
        out.push_str(": ");
        match route {
            Route::Channel(_) => write_value(&mut out, &channels[0], 2)?,
            _ => write_value(&mut out, &Value::Array(channels), 2)?,
        }
    }
    out.push('}');
    Ok(out.into_bytes())
}

/// Parses a JSON body into a message and its route.
///
/// # Errors
/// [`LayerError::InvalidMessage`] when it is not a JSON object message.
pub(crate) fn load(bytes: &[u8]) -> Result<Unpacked, LayerError> {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(error) => with_non_finite_floats(bytes).ok_or_else(|| {
            LayerError::invalid_message(format!("cannot decode JSON message: {error}"))
        })?,
    };
    wire::from_value(&value)
}

/// Parses JSON holding Python's `NaN`, `Infinity` and `-Infinity` (which
/// `json.dumps` writes for those floats and `json.loads` reads; serde_json
/// does not): each one outside a string becomes a placeholder string, and
/// the placeholders become floats again after parsing. A placeholder that
/// some real string happens to equal is noticed (the counts differ) and
/// another one is tried.
fn with_non_finite_floats(bytes: &[u8]) -> Option<Value> {
    const LITERALS: [(&[u8], u8, f64); 3] = [
        (b"-Infinity", b'-', f64::NEG_INFINITY),
        (b"Infinity", b'+', f64::INFINITY),
        (b"NaN", b'n', f64::NAN),
    ];
    for attempt in 0..4u8 {
        let tag = format!("\\u0001channels-non-finite-{attempt}-");
        let mut text = Vec::with_capacity(bytes.len() + 32);
        let mut replaced = 0usize;
        let (mut in_string, mut escaped) = (false, false);
        let mut i = 0;
        'scan: while i < bytes.len() {
            let byte = bytes[i];
            if in_string {
                if escaped {
                    escaped = false;
                } else if byte == b'\\' {
                    escaped = true;
                } else if byte == b'"' {
                    in_string = false;
                }
            } else if byte == b'"' {
                in_string = true;
            } else {
                for (literal, mark, _) in LITERALS {
                    if bytes[i..].starts_with(literal) {
                        text.push(b'"');
                        text.extend_from_slice(tag.as_bytes());
                        text.push(mark);
                        text.push(b'"');
                        replaced += 1;
                        i += literal.len();
                        continue 'scan;
                    }
                }
            }
            text.push(byte);
            i += 1;
        }
        if replaced == 0 {
            return None;
        }
        let mut value: Value = serde_json::from_slice(&text).ok()?;
        let placeholder = tag.replace("\\u0001", "\u{1}");
        let mut restored = 0usize;
        restore_non_finite(&mut value, &placeholder, &LITERALS, &mut restored);
        if restored == replaced {
            return Some(value);
        }
    }
    None
}

/// Turns the placeholder strings [`with_non_finite_floats`] wrote back into floats.
fn restore_non_finite(
    value: &mut Value,
    placeholder: &str,
    literals: &[(&[u8], u8, f64)],
    restored: &mut usize,
) {
    match value {
        Value::String(s) => {
            let float = s
                .as_str()
                .and_then(|s| s.strip_prefix(placeholder))
                .and_then(|mark| {
                    literals
                        .iter()
                        .find(|(_, m, _)| mark.as_bytes() == [*m])
                        .map(|(_, _, float)| *float)
                });
            if let Some(float) = float {
                *value = Value::F64(float);
                *restored += 1;
            }
        }
        Value::Array(items) => {
            for item in items {
                restore_non_finite(item, placeholder, literals, restored);
            }
        }
        Value::Map(entries) => {
            for (_, item) in entries {
                restore_non_finite(item, placeholder, literals, restored);
            }
        }
        _ => {}
    }
}

fn unsupported(what: &str) -> LayerError {
    LayerError::invalid_message(format!(
        "the JSON serializer cannot encode {what}; use msgpack"
    ))
}

/// Deepest nesting of arrays and maps written: serde_json (and so every
/// reader of ours) refuses deeper JSON, so such a message fails when it is
/// sent, not when it is received.
const MAX_DEPTH: usize = 127;

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<(), LayerError> {
    if depth > MAX_DEPTH && matches!(value, Value::Array(_) | Value::Map(_)) {
        return Err(LayerError::invalid_message(format!(
            "the JSON serializer cannot encode arrays and maps nested deeper than {MAX_DEPTH} levels"
        )));
    }
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(true) => out.push_str("true"),
        Value::Boolean(false) => out.push_str("false"),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F32(f) => write_float(out, f64::from(*f)),
        Value::F64(f) => write_float(out, *f),
        Value::String(s) => {
            let s = s
                .as_str()
                .ok_or_else(|| LayerError::invalid_message("a string is not valid UTF-8"))?;
            write_str(out, s);
        }
        Value::Binary(_) => return Err(unsupported("bytes")),
        Value::Ext(..) => return Err(unsupported("msgpack ext values")),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let Some(key) = key.as_str() else {
                    return Err(unsupported("non-string map keys"));
                };
                write_str(out, key);
                out.push_str(": ");
                write_value(out, item, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Python's `float.__repr__`: shortest round-trip digits, scientific notation
/// outside `1e-4 <= |x| < 1e16`, `.0` on integral values.
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "1.5e-5".
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    out.push_str(sign);
    if (-4..16).contains(&exponent) {
        if exponent < 0 {
            out.push_str("0.");
            for _ in 0..(-exponent - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = usize::try_from(exponent).unwrap_or(0) + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        );
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_non_finite_floats_are_read() {
        // json.dumps({"type": "x", "f": float("nan"), "g": [float("inf"), -float("inf")],
        //             "s": 'NaN " Infinity'})
        let text =
            br#"{"type": "x", "f": NaN, "g": [Infinity, -Infinity], "s": "NaN \" Infinity"}"#;
        let message = load(text).unwrap().message;
        assert!(message.get("f").and_then(Value::as_f64).unwrap().is_nan());
        assert_eq!(
            message.get("g"),
            Some(&Value::Array(vec![
                Value::F64(f64::INFINITY),
                Value::F64(f64::NEG_INFINITY)
            ]))
        );
        assert_eq!(
            message.get("s").and_then(Value::as_str),
            Some("NaN \" Infinity")
        );
        assert_eq!(dump(&message, Route::None).unwrap(), text);
        // A string that equals the placeholder stays a string.
        let tricky = br#"{"type": "\u0001channels-non-finite-0-n", "f": NaN}"#;
        let message = load(tricky).unwrap().message;
        assert_eq!(message.message_type(), Some("\u{1}channels-non-finite-0-n"));
        assert!(message.get("f").and_then(Value::as_f64).unwrap().is_nan());
        // Not JSON either way.
        assert!(load(b"{\"type\": \"x\", \"f\": NaNa}").is_err());
        assert!(load(b"{\"type\": \"x\", \"f\": -NaN}").is_err());
    }

    fn text(message: &Message, route: Route<'_>) -> String {
        String::from_utf8(dump(message, route).unwrap()).unwrap()
    }

    #[test]
    fn r7_python_json_dumps_layout() {
        let message = Message::new("x")
            .with("a", true)
            .with("b", Value::Nil)
            .with(
                "c",
                Value::Map(vec![(Value::from("d"), Value::Array(vec![]))]),
            );
        assert_eq!(
            text(&message, Route::None),
            r#"{"type": "x", "a": true, "b": null, "c": {"d": []}}"#
        );
        assert_eq!(
            text(&Message::new("x"), Route::Channels(&["a!b", "c"])),
            r#"{"type": "x", "__asgi_channel__": ["a!b", "c"]}"#
        );
        assert_eq!(
            text(&Message::new("x"), Route::Channel("a!b")),
            r#"{"type": "x", "__asgi_channel__": "a!b"}"#
        );
    }

    #[test]
    fn ascii_escapes_and_floats_like_python() {
        let message = Message::new("é\"\n\u{7f}😀");
        assert_eq!(
            text(&message, Route::None),
            r#"{"type": "\u00e9\"\n\u007f\ud83d\ude00"}"#
        );
        let cases = [
            (1.5, "1.5"),
            (100.0, "100.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123_456_789_012_345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (1e300, "1e+300"),
        ];
        for (f, expected) in cases {
            let mut out = String::new();
            write_float(&mut out, f);
            assert_eq!(out, expected, "{f}");
        }
    }

    #[test]
    fn load_round_trips_and_rejects_bytes_on_dump() {
        let message = Message::new("x")
            .with("n", -3)
            .with("l", Value::Array(vec![Value::from(1.5)]));
        let bytes = dump(&message, Route::Channel("a!b")).unwrap();
        let unpacked = load(&bytes).unwrap();
        assert_eq!(unpacked.message, message);
        assert_eq!(unpacked.route, Some(vec!["a!b".to_owned()]));
        assert!(dump(&Message::new("x").with("b", vec![1u8]), Route::None).is_err());
        assert!(load(b"[1]").is_err());
    }
}
