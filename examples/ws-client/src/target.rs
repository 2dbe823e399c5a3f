//! Only servers on this machine, unless the user opts out.

use std::net::IpAddr;

use tokio_tungstenite::tungstenite::http::Uri;

/// Checks that `url` is a ws:// or wss:// URL on a loopback host (or `allow_remote`).
pub(crate) fn check(url: &str, allow_remote: bool) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("cannot parse url `{url}`"))?;
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) {
        return Err(format!("url `{url}` must start with ws:// or wss://"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("url `{url}` has no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "url `{url}` is not a loopback address; pass --allow-remote to connect anyway"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_allowed() {
        assert!(check("ws://127.0.0.1:8000/ws/chat/lobby", false).is_ok());
        assert!(check("ws://[::1]:8000/ws", false).is_ok());
        assert!(check("ws://example.com/ws", false).is_err());
        assert!(check("ws://example.com/ws", true).is_ok());
        assert!(check("http://127.0.0.1/ws", false).is_err());
    }
}
