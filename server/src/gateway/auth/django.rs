//! Django's signed tokens: what `django.core.signing.dumps(claims,
//! salt=SALT)` writes with the project's `SECRET_KEY`, verified as
//! `signing.loads(token, salt=SALT, max_age=MAX_AGE)` would (Django 5.x:
//! `TimestampSigner`, HMAC-SHA256).
//!
//! A token is `PAYLOAD:TIMESTAMP:SIGNATURE`, where
//! - `PAYLOAD` is the compact JSON of the claims in URL-safe base64 without
//!   padding, prefixed with `.` when it is zlib-compressed (`compress=True`);
//! - `TIMESTAMP` is the signing time in Unix seconds, in base 62
//!   (`0-9A-Za-z`);
//! - `SIGNATURE` is URL-safe base64 (no padding) of
//!   HMAC-SHA256(key = SHA-256(SALT + "signer" + SECRET_KEY),
//!   message = `PAYLOAD:TIMESTAMP`) (Django's `salted_hmac`).

use std::io::Read as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Reason, TokenRejection};

/// The most a compressed payload may inflate to: claims are small, and a
/// token that inflates past this is refused rather than decompressed.
const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;

/// Verifies `signing.dumps` tokens of one secret key and salt.
pub(super) struct DjangoVerifier {
    /// SHA-256(salt + "signer" + secret key): the HMAC key.
    hmac_key: [u8; 32],
    max_age: Option<Duration>,
}

impl std::fmt::Debug for DjangoVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoVerifier")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl DjangoVerifier {
    /// A verifier for tokens signed with `secret_key` and `salt`, refusing
    /// those signed longer than `max_age` ago.
    pub(super) fn new(secret_key: &str, salt: &str, max_age: Option<Duration>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(salt.as_bytes());
        hasher.update(b"signer");
        hasher.update(secret_key.as_bytes());
        Self {
            hmac_key: hasher.finalize().into(),
            max_age,
        }
    }

    /// Checks the signature and age of `token` (as of `now`, Unix seconds)
    /// and returns its decoded payload.
    pub(super) fn verify(
        &self,
        token: &str,
        now: u64,
    ) -> Result<serde_json::Value, TokenRejection> {
        let malformed = |what: &str| {
            TokenRejection::new(
                Reason::Malformed,
                format!("not a Django signed token: {what}"),
            )
        };
        let (signed, signature) = token
            .rsplit_once(':')
            .ok_or_else(|| malformed("no signature"))?;
        let expected = self.signature(signed);
        if !bool::from(signature.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(TokenRejection::new(
                Reason::Signature,
                "the token's signature does not match (another SECRET_KEY or salt?)",
            ));
        }
        let (payload, timestamp) = signed
            .rsplit_once(':')
            .ok_or_else(|| malformed("no timestamp (made with signing.dumps?)"))?;
        let signed_at = base62_decode(timestamp).ok_or_else(|| malformed("bad timestamp"))?;
        if let Some(max_age) = self.max_age {
            let age = i128::from(now) - signed_at;
            if age > i128::from(max_age.as_secs()) {
                return Err(TokenRejection::new(
                    Reason::Expired,
                    format!(
                        "the token is {age} s old; --django-max-age is {} s",
                        max_age.as_secs()
                    ),
                ));
            }
        }
        let (compressed, encoded) = match payload.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, payload),
        };
        let mut data = URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| malformed("the payload is not base64"))?;
        if compressed {
            let mut inflated = Vec::new();
            flate2::read::ZlibDecoder::new(data.as_slice())
                .take(MAX_PAYLOAD_BYTES + 1)
                .read_to_end(&mut inflated)
                .map_err(|_| malformed("the compressed payload does not inflate"))?;
            if inflated.len() as u64 > MAX_PAYLOAD_BYTES {
                return Err(malformed("the compressed payload is too large"));
            }
            data = inflated;
        }
        serde_json::from_slice(&data).map_err(|_| malformed("the payload is not JSON"))
    }

    /// Django's `base64_hmac`: URL-safe base64, no padding, of the HMAC.
    fn signature(&self, value: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.hmac_key).expect("HMAC takes a key of any size");
        mac.update(value.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// Django's `b62_decode` (digits, then `A-Z`, then `a-z`; `-` for negative).
fn base62_decode(text: &str) -> Option<i128> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut value: i128 = 0;
    for c in digits.bytes() {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            b'a'..=b'z' => c - b'a' + 36,
            _ => return None,
        };
        value = value * 62 + i128::from(digit);
    }
    Some(sign * value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real Django tokens are checked end to end in `tests/gateway_django.rs`.
    fn verifier(max_age: Option<Duration>) -> DjangoVerifier {
        DjangoVerifier::new("django-insecure-test", "channels", max_age)
    }

    /// Signs like Django, to test the parts the real Django tests cover end to end.
    fn sign(verifier: &DjangoVerifier, payload: &str, at: u64) -> String {
        let mut stamp = String::new();
        let mut n = at;
        let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        while n > 0 {
            stamp.insert(0, char::from(alphabet[(n % 62) as usize]));
            n /= 62;
        }
        let value = format!("{payload}:{stamp}");
        let signature = verifier.signature(&value);
        format!("{value}:{signature}")
    }

    #[test]
    fn signed_tokens_verify_and_forgeries_do_not() {
        let v = verifier(Some(Duration::from_secs(60)));
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"42"}"#);
        let token = sign(&v, &payload, 1_000_000);
        assert_eq!(
            v.verify(&token, 1_000_030).unwrap(),
            serde_json::json!({"sub": "42"})
        );
        assert_eq!(
            v.verify(&token, 1_000_061).unwrap_err().reason,
            Reason::Expired
        );
        let other = DjangoVerifier::new("another-key", "channels", None);
        assert_eq!(
            other.verify(&token, 1_000_000).unwrap_err().reason,
            Reason::Signature
        );
        let forged = token.replace(&payload, &URL_SAFE_NO_PAD.encode(br#"{"sub":"1"}"#));
        assert_eq!(
            v.verify(&forged, 1_000_000).unwrap_err().reason,
            Reason::Signature
        );
        assert_eq!(
            v.verify("nocolons", 0).unwrap_err().reason,
            Reason::Malformed
        );
        assert_eq!(v.verify("a:b", 0).unwrap_err().reason, Reason::Signature);
    }

    #[test]
    fn compressed_payloads_inflate_with_a_limit() {
        use std::io::Write as _;
        let v = verifier(None);
        let compress = |data: &[u8]| {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            format!(".{}", URL_SAFE_NO_PAD.encode(encoder.finish().unwrap()))
        };
        let claims = format!(
            r#"{{"sub":"7","groups":[{}]}}"#,
            vec!["\"g\""; 100].join(",")
        );
        let token = sign(&v, &compress(claims.as_bytes()), 1);
        assert_eq!(v.verify(&token, 2).unwrap()["sub"], "7");
        let bomb = format!(r#"{{"sub":"{}"}}"#, "x".repeat(200_000));
        let token = sign(&v, &compress(bomb.as_bytes()), 1);
        assert_eq!(v.verify(&token, 2).unwrap_err().reason, Reason::Malformed);
    }

    #[test]
    fn base62_is_djangos() {
        assert_eq!(base62_decode("0"), Some(0));
        assert_eq!(base62_decode("z"), Some(61));
        assert_eq!(base62_decode("10"), Some(62));
        assert_eq!(base62_decode("-A"), Some(-10));
        // Django: b62_encode(1764500000) == "1vPf3Q"
        assert_eq!(base62_decode("1vPf3Q"), Some(1_764_500_000));
        assert_eq!(base62_decode("!"), None);
        assert_eq!(base62_decode(""), None);
    }
}
