//! One check per fuzz target (`fuzz/fuzz_targets/<name>.rs` calls
//! `fuzz_checks::<name>`), and [`run`] to dispatch by name. Each takes the
//! fuzzer's bytes, feeds them to a parser of outside input, and panics when
//! an invariant breaks; `hostile/tests/fuzz_seeds.rs` runs every committed seed
//! through the same functions on stable.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use channels_core::{MAX_NAME_LENGTH, Message, validate_channel_name, validate_group_name};
use channels_redis::wire::{self, Route, Unpacked};
use channels_redis::{Crypter, Serializer, SerializerFormat};
use channels_server::GatewayConfig;
use channels_server::fuzzing::TokenVerifier;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

/// Every target, by name.
pub const TARGETS: [&str; 9] = [
    "names",
    "msgpack",
    "msgpack_fernet",
    "json_serializer",
    "json_from_msgpack",
    "gateway_frame",
    "chat_frame",
    "config_file",
    "tokens",
];

/// Runs the check of target `name` on `data`.
///
/// # Panics
/// When the check fails, or `name` is not in [`TARGETS`].
pub fn run(name: &str, data: &[u8]) {
    match name {
        "names" => names(data),
        "msgpack" => msgpack(data),
        "msgpack_fernet" => msgpack_fernet(data),
        "json_serializer" => json_serializer(data),
        "json_from_msgpack" => json_from_msgpack(data),
        "gateway_frame" => gateway_frame(data),
        "chat_frame" => chat_frame(data),
        "config_file" => config_file(data),
        "tokens" => tokens(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Django's name rules as its regexes say them (with Rust's `regex`, whose
/// `\d` and `\w` are Unicode as in Python 3), and a length under 100
/// characters: the oracle for the ASCII fast path and its fallback.
static CHANNEL_RULE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?$").expect("valid pattern")
});
static GROUP_RULE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^[a-zA-Z\d\-_.]+$").expect("valid pattern"));

/// Channel and group name validation agrees with Django's rules; a valid
/// group name is a valid channel name.
pub fn names(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let short = name.chars().count() < MAX_NAME_LENGTH;
    let channel = validate_channel_name(name);
    let group = validate_group_name(name);
    assert_eq!(
        channel.is_ok(),
        short && CHANNEL_RULE.is_match(name),
        "channel {name:?}: {channel:?}"
    );
    assert_eq!(
        group.is_ok(),
        short && GROUP_RULE.is_match(name),
        "group {name:?}: {group:?}"
    );
    // Error messages are built without panicking.
    let _ = channel.map_err(|e| e.to_string());
    let _ = group.map_err(|e| e.to_string());
    let _ = channels_core::non_local_name(name);
}

fn route_of(unpacked: &Unpacked) -> Vec<&str> {
    unpacked
        .route
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Packs `unpacked` back with its route (one channel as a string, several
/// as a list).
fn repack(
    unpacked: &Unpacked,
    encode: impl Fn(&Message, Route<'_>) -> Result<Vec<u8>, channels_core::LayerError>,
) -> Result<Vec<u8>, channels_core::LayerError> {
    let channels = route_of(unpacked);
    let route = match (&unpacked.route, channels.as_slice()) {
        (None, _) => Route::None,
        (Some(_), [one]) => Route::Channel(one),
        (Some(_), many) => Route::Channels(many),
    };
    encode(&unpacked.message, route)
}

/// msgpack decode never panics; what decodes and packs again is stable:
/// `pack(unpack(pack(m))) == pack(m)` byte for byte.
pub fn msgpack(data: &[u8]) {
    let Ok(unpacked) = wire::unpack(data) else {
        return;
    };
    let Ok(packed) = repack(&unpacked, wire::pack) else {
        return;
    };
    let again = wire::unpack(&packed)
        .unwrap_or_else(|e| panic!("our own msgpack {packed:?} does not decode: {e}"));
    assert_eq!(
        repack(&again, wire::pack).ok().as_deref(),
        Some(packed.as_slice()),
        "msgpack round trip changed the message"
    );
}

static CRYPTER: LazyLock<Crypter> =
    LazyLock::new(|| Crypter::new(&["fuzz-secret"], None).expect("a crypter"));

/// The encrypted core-layer codec: arbitrary stored bytes never panic;
/// bytes encrypted with the key decode exactly as the plain codec does.
pub fn msgpack_fernet(data: &[u8]) {
    let serializer =
        Serializer::new(SerializerFormat::Msgpack, 12).with_crypter(Some(CRYPTER.clone()));
    let _ = serializer.deserialize(data);
    // The same bytes as a body someone with the key wrote.
    let mut stored = vec![0u8; 12];
    stored.extend_from_slice(&CRYPTER.encrypt(data));
    let decrypted = serializer.deserialize(&stored);
    let plain = wire::unpack(data);
    assert_eq!(
        decrypted.is_ok(),
        plain.is_ok(),
        "decrypting changed the outcome: {decrypted:?} vs {plain:?}"
    );
    if let (Ok(a), Ok(b)) = (decrypted, plain) {
        assert_eq!(
            repack(&a, wire::pack).ok(),
            repack(&b, wire::pack).ok(),
            "decrypted message differs"
        );
    }
}

fn json_codec() -> Serializer {
    Serializer::new(SerializerFormat::Json, 0)
}

/// The `json.dumps`-compatible body, read then written: what it reads and
/// writes back reads again and writes the same bytes.
pub fn json_serializer(data: &[u8]) {
    let codec = json_codec();
    let Ok(unpacked) = codec.deserialize(data) else {
        return;
    };
    let dumped = repack(&unpacked, |m, r| codec.serialize(m, r))
        .unwrap_or_else(|e| panic!("a message read from JSON cannot be written back: {e}"));
    let again = codec.deserialize(&dumped).unwrap_or_else(|e| {
        panic!(
            "our own JSON {:?} does not read back: {e}",
            String::from_utf8_lossy(&dumped)
        )
    });
    let redumped = repack(&again, |m, r| codec.serialize(m, r)).ok();
    assert_eq!(
        redumped.as_deref(),
        Some(dumped.as_slice()),
        "JSON round trip changed the message"
    );
}

/// The other way: any message msgpack can carry (floats such as NaN and
/// the infinities included, which Python's `json.dumps` writes as `NaN`,
/// `Infinity`, `-Infinity` and `json.loads` reads back) is either refused
/// by the JSON writer or written as JSON the reader takes back unchanged.
pub fn json_from_msgpack(data: &[u8]) {
    let Ok(unpacked) = wire::unpack(data) else {
        return;
    };
    let codec = json_codec();
    let Ok(dumped) = repack(&unpacked, |m, r| codec.serialize(m, r)) else {
        return;
    };
    let again = codec.deserialize(&dumped).unwrap_or_else(|e| {
        panic!(
            "JSON written for a message does not read back ({e}): {}",
            String::from_utf8_lossy(&dumped)
        )
    });
    assert_eq!(
        repack(&again, |m, r| codec.serialize(m, r)).ok().as_deref(),
        Some(dumped.as_slice()),
        "JSON written for a message reads back as another"
    );
}

/// Gateway frames: parsing never panics, and the push a `publish` becomes
/// is a JSON object of type `message`.
pub fn gateway_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((_, Some(push))) = channels_server::fuzzing::gateway_frame(text) {
        let value: serde_json::Value = serde_json::from_str(&push)
            .unwrap_or_else(|e| panic!("push {push:?} is not JSON: {e}"));
        assert_eq!(value["type"], "message", "{push}");
        assert!(value["data"]["type"].is_string(), "{push}");
    }
}

/// Chat frames: decoding never panics; what is accepted obeys the limits.
pub fn chat_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match chat::decode_frame_for_fuzzing(text) {
        Ok(("nick", nick)) => {
            assert!(!nick.is_empty() && nick.trim() == nick, "{nick:?}");
            assert!(
                nick.chars().count() <= chat::DEFAULT_MAX_NICK_CHARS,
                "{nick:?}"
            );
            assert!(!nick.chars().any(char::is_control), "{nick:?}");
        }
        Ok((_, message)) => {
            assert!(!message.trim().is_empty(), "{message:?}");
            assert!(message.chars().count() <= chat::DEFAULT_MAX_MESSAGE_CHARS);
        }
        Err(code) => assert!(!code.is_empty()),
    }
}

/// Config files: parsing and resolving never panics; an error names the file.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = channels_server::fuzzing::config_file(text) {
        let _ = error.to_string();
    }
}

const JWT_SECRET: &str = "fuzz-jwt-secret";
const DJANGO_KEY: &str = "fuzz-django-secret-key";
const DJANGO_SALT: &str = "fuzz-salt";
/// The time tokens are checked at.
const NOW: u64 = 1_800_000_000;

static VERIFIER: LazyLock<TokenVerifier> = LazyLock::new(|| {
    TokenVerifier::new(
        &GatewayConfig::default()
            .jwt_secret(JWT_SECRET)
            .django(DJANGO_KEY, DJANGO_SALT),
    )
    .expect("a verifier")
});

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// A JWT over `payload` (any bytes) signed with the test secret.
fn sign_jwt(payload: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(JWT_SECRET.as_bytes(), signed.as_bytes()));
    format!("{signed}.{signature}")
}

/// A Django `signing.dumps` token over `payload` (any bytes) signed at `NOW`.
fn sign_django(payload: &[u8]) -> String {
    let key = Sha256::new()
        .chain_update(DJANGO_SALT)
        .chain_update("signer")
        .chain_update(DJANGO_KEY)
        .finalize();
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut stamp = Vec::new();
    let mut n = NOW;
    while n > 0 {
        stamp.insert(0, alphabet[usize::try_from(n % 62).unwrap_or(0)]);
        n /= 62;
    }
    let signed = format!(
        "{}:{}",
        URL_SAFE_NO_PAD.encode(payload),
        String::from_utf8_lossy(&stamp)
    );
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(&key, signed.as_bytes()));
    format!("{signed}:{signature}")
}

/// Tokens: the first byte picks how the rest is used: as a token as it is
/// (never accepted: nobody can sign without the key), or as the payload of
/// a correctly signed JWT or Django token (accepted exactly when the payload
/// is an object with a usable `sub`, and then that `sub` is the user).
pub fn tokens(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(token) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(user) = VERIFIER.verify_at(token, NOW) {
                panic!("a forged token {token:?} was accepted as {user:?}");
            }
        }
        kind => {
            let token = if kind == 1 {
                sign_jwt(rest)
            } else {
                sign_django(rest)
            };
            let verdict = VERIFIER.verify_at(&token, NOW);
            if let Ok(user) = verdict {
                let payload: serde_json::Value = serde_json::from_slice(rest)
                    .unwrap_or_else(|e| panic!("accepted a payload that is not JSON: {e}"));
                let sub = match &payload["sub"] {
                    serde_json::Value::String(sub) => sub.clone(),
                    serde_json::Value::Number(sub) => sub.to_string(),
                    other => panic!("accepted a token whose sub is {other}"),
                };
                assert_eq!(user, sub, "{token}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_made_here_verify() {
        let payload = br#"{"sub":"alice"}"#;
        assert_eq!(
            VERIFIER.verify_at(&sign_jwt(payload), NOW).as_deref(),
            Ok("alice")
        );
        assert_eq!(
            VERIFIER.verify_at(&sign_django(payload), NOW).as_deref(),
            Ok("alice")
        );
        tokens(b"\x01{\"sub\":\"bob\"}");
        tokens(b"\x02{\"sub\":7}");
    }

    #[test]
    fn every_target_runs_on_empty_and_simple_input() {
        for target in TARGETS {
            run(target, b"");
            run(target, b"{\"type\": \"x\"}");
        }
    }
}
