//! [`GatewayConfig`]: how the gateway authenticates connections (JWT or
//! Django-signed tokens; none means development mode) and where it forwards
//! client frames.

use std::path::PathBuf;
use std::time::Duration;

/// The salt Django's `signing.dumps` uses unless told otherwise.
pub const DEFAULT_DJANGO_SALT: &str = "django.core.signing";

/// The gateway's settings (`--jwt-*`, `--django-*`, `--forward-channel`, or
/// the `[auth]` and `[gateway]` sections of the config file). With no
/// verifier set, the gateway runs in development mode: anonymous
/// connections may subscribe and publish to any group.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// HS256 secret of JWTs.
    pub jwt_secret: Option<String>,
    /// PEM file of the RSA (RS256) or EC P-256 (ES256) key that signs JWTs.
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS file whose keys verify JWTs, chosen by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Django's `SECRET_KEY`, to verify `django.core.signing.dumps` tokens.
    pub django_secret_key: Option<String>,
    /// The `salt` those tokens were signed with (default
    /// [`DEFAULT_DJANGO_SALT`]).
    pub django_salt: String,
    /// The oldest a Django token may be when it is used (`signing.loads`'s
    /// `max_age`); `None`: any age.
    pub django_max_age: Option<Duration>,
    /// The channel client frames are forwarded to as ASGI events; `None`:
    /// frames that are not protocol frames get `unknown_frame`.
    pub forward_channel: Option<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key: None,
            jwks_file: None,
            django_secret_key: None,
            django_salt: DEFAULT_DJANGO_SALT.to_owned(),
            django_max_age: None,
            forward_channel: None,
        }
    }
}

impl std::fmt::Debug for GatewayConfig {
    /// Secrets are shown as set or not, never as they are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("GatewayConfig")
            .field("jwt_secret", &secret(&self.jwt_secret))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwks_file", &self.jwks_file)
            .field("django_secret_key", &secret(&self.django_secret_key))
            .field("django_salt", &self.django_salt)
            .field("django_max_age", &self.django_max_age)
            .field("forward_channel", &self.forward_channel)
            .finish()
    }
}

impl GatewayConfig {
    /// Verifies HS256 JWTs with `secret`.
    #[must_use]
    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// Verifies RS256 / ES256 JWTs with the PEM public key in `path`.
    #[must_use]
    pub fn jwt_public_key(mut self, path: impl Into<PathBuf>) -> Self {
        self.jwt_public_key = Some(path.into());
        self
    }

    /// Verifies JWTs with the keys of the JWKS file in `path`.
    #[must_use]
    pub fn jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.jwks_file = Some(path.into());
        self
    }

    /// Verifies Django `signing.dumps(claims, salt=salt)` tokens of this
    /// `SECRET_KEY`.
    #[must_use]
    pub fn django(mut self, secret_key: impl Into<String>, salt: impl Into<String>) -> Self {
        self.django_secret_key = Some(secret_key.into());
        self.django_salt = salt.into();
        self
    }

    /// Refuses Django tokens signed longer ago than `max_age`.
    #[must_use]
    pub fn django_max_age(mut self, max_age: Duration) -> Self {
        self.django_max_age = Some(max_age);
        self
    }

    /// Forwards client frames to `channel` as ASGI events.
    #[must_use]
    pub fn forward_channel(mut self, channel: impl Into<String>) -> Self {
        self.forward_channel = Some(channel.into());
        self
    }

    /// Returns whether no token verifier is set (development mode).
    pub fn is_development(&self) -> bool {
        self.jwt_secret.is_none()
            && self.jwt_public_key.is_none()
            && self.jwks_file.is_none()
            && self.django_secret_key.is_none()
    }
}
