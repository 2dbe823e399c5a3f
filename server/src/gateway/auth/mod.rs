//! Token verification without a backend round trip: JWTs ([`jwt`]: HS256,
//! RS256/ES256 from a PEM key, or keys of a JWKS file chosen by `kid`) and
//! Django's `signing.dumps` tokens ([`django`]). Both yield the same
//! [`Claims`]. With no verifier configured the gateway runs in development
//! mode (anonymous connections, any group).

mod claims;
mod django;
mod jwt;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use claims::{Claims, Patterns};

use crate::config::GatewayConfig;
use crate::error::ServerError;

/// Why a token was refused: the label of `channels_gateway_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// No token where one is required.
    Missing,
    /// Not a token of a configured kind, or undecodable.
    Malformed,
    /// The signature does not match (forged, or another key).
    Signature,
    /// `exp` (or Django's `--django-max-age`) has passed.
    Expired,
    /// The JWT names a key (`kid`) or algorithm no configured key has.
    UnknownKey,
    /// The claims are missing or of the wrong kind (`sub`, `groups`, ...).
    Claims,
    /// No `connect` frame within the handshake timeout.
    Timeout,
    /// A `refresh` token for another `sub`.
    WrongUser,
}

impl Reason {
    /// Every reason, for metrics.
    pub(crate) const ALL: [Self; 8] = [
        Self::Missing,
        Self::Malformed,
        Self::Signature,
        Self::Expired,
        Self::UnknownKey,
        Self::Claims,
        Self::Timeout,
        Self::WrongUser,
    ];

    /// The metric label.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::UnknownKey => "unknown_key",
            Self::Claims => "claims",
            Self::Timeout => "timeout",
            Self::WrongUser => "wrong_user",
        }
    }
}

/// A token the gateway refused, and why (a verdict, not a failure of the
/// server: it becomes a close code or an error frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenRejection {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

impl TokenRejection {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The configured token verifiers.
#[derive(Debug)]
pub(crate) struct Verifier {
    jwt: Option<jwt::JwtVerifier>,
    django: Option<django::DjangoVerifier>,
}

impl Verifier {
    /// Builds the verifiers `config` names, reading key files now.
    pub(crate) fn new(config: &GatewayConfig) -> Result<Self, ServerError> {
        let jwt = jwt::JwtVerifier::new(
            config.jwt_secret.as_deref(),
            config.jwt_public_key.as_deref(),
            config.jwks_file.as_deref(),
        )?;
        let django = config.django_secret_key.as_deref().map(|key| {
            django::DjangoVerifier::new(key, &config.django_salt, config.django_max_age)
        });
        Ok(Self { jwt, django })
    }

    /// Returns whether no verifier is configured (development mode).
    pub(crate) fn is_development(&self) -> bool {
        self.jwt.is_none() && self.django.is_none()
    }

    /// Verifies `token` now.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, TokenRejection> {
        self.verify_at(token, unix_now())
    }

    /// Verifies `token` as of `now` (Unix seconds). A Django token has `:`
    /// separators, a JWT has none (its parts are joined with `.`).
    pub(crate) fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenRejection> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenRejection::new(Reason::Missing, "the token is empty"));
        }
        let payload = match (&self.jwt, &self.django, token.contains(':')) {
            (_, Some(django), true) => django.verify(token, now)?,
            (Some(jwt), _, false) => jwt.verify(token)?,
            (None, Some(_), false) => {
                return Err(TokenRejection::new(
                    Reason::Malformed,
                    "not a Django signed token (only --django-secret-key is configured)",
                ));
            }
            (Some(_), None, true) => {
                return Err(TokenRejection::new(
                    Reason::Malformed,
                    "not a JWT (only JWT verification is configured)",
                ));
            }
            (None, None, _) => {
                return Err(TokenRejection::new(
                    Reason::Malformed,
                    "no token verifier is configured",
                ));
            }
        };
        Claims::from_payload(&payload, now)
    }
}

/// The current time in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
