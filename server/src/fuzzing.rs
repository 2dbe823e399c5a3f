//! Entry points for the fuzz targets in `fuzz/` and their seed regression
//! tests: thin wrappers over crate-private parsers. Not API: hidden from the
//! docs, and free to change with the targets.

use std::path::Path;

use crate::config::Args;
use crate::config::Settings;
use crate::config::file::FileConfig;
use crate::gateway::{auth, protocol};
use crate::{GatewayConfig, ServerError};

/// Parses one client text frame as the gateway does (`protocol::parse`).
/// `Ok` holds the request's `Debug` text and, for a `publish`, the
/// `message` push its data becomes; `Err` holds the error code the client
/// would be answered with.
pub fn gateway_frame(text: &str) -> Result<(String, Option<String>), &'static str> {
    match protocol::parse(text) {
        protocol::Parsed::Request(_, request) => {
            let push = match &request {
                protocol::Request::Publish { data, .. } => {
                    Some(protocol::message_frame(data).to_string())
                }
                _ => None,
            };
            Ok((format!("{request:?}"), push))
        }
        protocol::Parsed::Invalid(..) => Err(protocol::ErrorCode::BadRequest.as_str()),
        protocol::Parsed::Other(code, _) => Err(code.as_str()),
    }
}

/// Parses `text` as a `--config` TOML file and resolves it as the server
/// would with no flags set.
///
/// # Errors
/// What the server would report for that file.
pub fn config_file(text: &str) -> Result<Settings, ServerError> {
    let file = FileConfig::parse(text, Path::new("fuzz.toml"))?;
    Settings::resolve_file(&Args::default(), file)
}

/// The gateway's token verifiers (`--jwt-secret`, `--django-secret-key`...).
#[derive(Debug)]
pub struct TokenVerifier(auth::Verifier);

impl TokenVerifier {
    /// The verifiers `config` names.
    ///
    /// # Errors
    /// As the server's start-up when the settings are wrong.
    pub fn new(config: &GatewayConfig) -> Result<Self, ServerError> {
        auth::Verifier::new(config).map(Self)
    }

    /// Verifies `token` as of `now` (Unix seconds); `Ok` holds the user
    /// (`sub`), `Err` the rejection's message.
    ///
    /// # Errors
    /// When the token is refused.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<String, String> {
        self.0
            .verify_at(token, now)
            .map(|claims| claims.sub)
            .map_err(|rejection| rejection.to_string())
    }
}
