//! Which URLs a run may target: loopback only, unless the operator opts out.

use std::net::IpAddr;

use tokio_tungstenite::tungstenite::http::Uri;

use crate::LoadError;

/// Checks that `url` is a `ws://` URL whose host is on this machine (the clients open plain
/// TCP connections themselves, to choose their source address; TLS is not measured here).
///
/// Loopback means `localhost`, `127.0.0.0/8` or `::1`. With `allow_remote` any host passes.
///
/// # Errors
///
/// [`LoadError::InvalidUrl`] for a malformed URL, [`LoadError::RemoteTarget`] for another host.
pub fn check_target(url: &str, allow_remote: bool) -> Result<(), LoadError> {
    let invalid = |problem: &str| LoadError::InvalidUrl {
        url: url.to_owned(),
        problem: problem.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| invalid("cannot parse"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        _ => return Err(invalid("scheme must be ws://")),
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    if allow_remote || is_loopback_host(host) {
        Ok(())
    } else {
        Err(LoadError::RemoteTarget {
            url: url.to_owned(),
        })
    }
}

/// Checks every `--url` of a run with [`check_target`]; there must be at least one.
///
/// # Errors
/// [`LoadError::InvalidOption`] for none, else as [`check_target`].
pub fn check_targets(urls: &[String], allow_remote: bool) -> Result<(), LoadError> {
    if urls.is_empty() {
        return Err(LoadError::InvalidOption {
            reason: "give at least one --url".to_owned(),
        });
    }
    urls.iter()
        .try_for_each(|url| check_target(url, allow_remote))
}

/// True for `localhost` and loopback IP literals (IPv6 with or without brackets).
fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_pass() {
        for url in [
            "ws://127.0.0.1:8000/ws",
            "ws://localhost/ws",
            "ws://127.3.2.1:1/",
            "ws://[::1]:8000/ws",
        ] {
            assert!(check_target(url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn remote_and_malformed_targets_fail() {
        assert!(matches!(
            check_target("ws://10.0.0.1:8000/ws", false),
            Err(LoadError::RemoteTarget { .. })
        ));
        assert!(matches!(
            check_target("ws://example.com/ws", false),
            Err(LoadError::RemoteTarget { .. })
        ));
        assert!(check_target("ws://example.com/ws", true).is_ok());
        assert!(matches!(
            check_target("http://127.0.0.1/ws", false),
            Err(LoadError::InvalidUrl { .. })
        ));
        assert!(matches!(
            check_target("wss://127.0.0.1/ws", false),
            Err(LoadError::InvalidUrl { .. })
        ));
        assert!(matches!(
            check_target("not a url", false),
            Err(LoadError::InvalidUrl { .. })
        ));
    }
}
