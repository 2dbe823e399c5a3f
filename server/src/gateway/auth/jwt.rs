//! JWT verification with `jsonwebtoken`: an HS256 secret
//! (`--jwt-secret`), an RSA or EC public key in PEM (`--jwt-public-key`,
//! RS256 or ES256), and the keys of a JWKS file (`--jwks-file`), chosen by
//! the token's `kid`. The signature and the algorithm are checked here;
//! `exp` and the other claims by [`super::Claims`], the same way for every
//! kind of token.

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::{Reason, TokenRejection};
use crate::error::ServerError;

/// One verification key and the one algorithm it accepts.
struct Key {
    key: DecodingKey,
    algorithm: Algorithm,
    /// The JWKS `kid`, for keys from a JWKS file.
    kid: Option<String>,
}

/// The configured JWT keys.
pub(super) struct JwtVerifier {
    keys: Vec<Key>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|key| (key.algorithm, key.kid.as_deref()))
            .collect();
        f.debug_struct("JwtVerifier").field("keys", &keys).finish()
    }
}

impl JwtVerifier {
    /// The verifier of the given settings, `None` when none is set.
    pub(super) fn new(
        secret: Option<&str>,
        public_key: Option<&Path>,
        jwks_file: Option<&Path>,
    ) -> Result<Option<Self>, ServerError> {
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            if secret.is_empty() {
                return Err(ServerError::config("--jwt-secret is empty"));
            }
            keys.push(Key {
                key: DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| ServerError::config(format!("--jwt-secret: {e}")))?,
                algorithm: Algorithm::HS256,
                kid: None,
            });
        }
        if let Some(path) = public_key {
            keys.push(pem_key(path)?);
        }
        if let Some(path) = jwks_file {
            keys.extend(jwks_keys(path)?);
        }
        Ok((!keys.is_empty()).then_some(Self { keys }))
    }

    /// Checks the signature of `token` and returns its payload.
    pub(super) fn verify(&self, token: &str) -> Result<serde_json::Value, TokenRejection> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenRejection::new(Reason::Malformed, format!("not a valid JWT: {e}")))?;
        let key = self.choose(header.alg, header.kid.as_deref())?;
        let mut validation = Validation::new(key.algorithm);
        // `exp` is checked with the other claims, for every kind of token.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        // `nbf` is checked when the token has one.
        validation.validate_nbf = true;
        validation.leeway = 0;
        match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(error) => Err(match error.kind() {
                ErrorKind::InvalidSignature => {
                    TokenRejection::new(Reason::Signature, "the token's signature does not match")
                }
                ErrorKind::ImmatureSignature => {
                    TokenRejection::new(Reason::Claims, "the token is not valid yet (`nbf`)")
                }
                ErrorKind::InvalidAlgorithm => TokenRejection::new(
                    Reason::UnknownKey,
                    format!("no configured key accepts {:?}", header.alg),
                ),
                _ => TokenRejection::new(Reason::Malformed, format!("not a valid JWT: {error}")),
            }),
        }
    }

    /// The key for a token signed with `algorithm`: by `kid` among JWKS keys
    /// when the token names one, else the one key of that algorithm.
    fn choose(&self, algorithm: Algorithm, kid: Option<&str>) -> Result<&Key, TokenRejection> {
        if let Some(kid) = kid
            && self.keys.iter().any(|key| key.kid.is_some())
        {
            return self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .filter(|key| key.algorithm == algorithm)
                .ok_or_else(|| {
                    TokenRejection::new(
                        Reason::UnknownKey,
                        format!("no key `{kid}` for {algorithm:?} in the JWKS file"),
                    )
                });
        }
        let mut candidates = self.keys.iter().filter(|key| key.algorithm == algorithm);
        match (candidates.next(), candidates.next()) {
            (Some(key), None) => Ok(key),
            (Some(_), Some(_)) => Err(TokenRejection::new(
                Reason::UnknownKey,
                format!("several keys accept {algorithm:?}: the token must name one with `kid`"),
            )),
            (None, _) => Err(TokenRejection::new(
                Reason::UnknownKey,
                format!("no configured key accepts {algorithm:?}"),
            )),
        }
    }
}

/// An RSA (RS256) or EC P-256 (ES256) public key from a PEM file.
fn pem_key(path: &Path) -> Result<Key, ServerError> {
    let pem = std::fs::read(path)
        .map_err(|e| ServerError::config(format!("--jwt-public-key {}: {e}", path.display())))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(Key {
            key,
            algorithm: Algorithm::RS256,
            kid: None,
        });
    }
    match DecodingKey::from_ec_pem(&pem) {
        Ok(key) => Ok(Key {
            key,
            algorithm: Algorithm::ES256,
            kid: None,
        }),
        Err(error) => Err(ServerError::config(format!(
            "--jwt-public-key {}: not an RSA or EC public key in PEM ({error})",
            path.display()
        ))),
    }
}

/// Every key of a JWKS file, each with its `kid` and algorithm (its `alg`,
/// or RS256 / ES256 / HS256 by key type).
fn jwks_keys(path: &Path) -> Result<Vec<Key>, ServerError> {
    let named =
        |what: String| ServerError::config(format!("--jwks-file {}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| named(format!("not a JWKS: {e}")))?;
    if set.keys.is_empty() {
        return Err(named("no keys".to_owned()));
    }
    set.keys
        .iter()
        .enumerate()
        .map(|(index, jwk)| {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| named(format!("key {index}: {e}")))?;
            let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(alg), _) => {
                    Algorithm::try_from(*alg).map_err(|e| named(format!("key {index}: {e}")))?
                }
                (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, AlgorithmParameters::EllipticCurve(ec))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (None, AlgorithmParameters::OctetKey(_)) => Algorithm::HS256,
                (None, _) => {
                    return Err(named(format!(
                        "key {index}: give it an `alg` (RS256, ES256 or HS256)"
                    )));
                }
            };
            Ok(Key {
                key,
                algorithm,
                kid: jwk.common.key_id.clone(),
            })
        })
        .collect()
}
