//! The client address behind trusted proxies: when the peer is a trusted
//! proxy (`--trusted-proxy CIDR`), the address consumers see in
//! [`Scope::client`](channels_core::consumer::Scope::client) is the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy. Anyone can
//! write that header, so entries left of the first untrusted one are ignored.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The header proxies append the address they received from to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The trusted proxy networks.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    networks: Arc<Vec<IpNet>>,
}

impl TrustedProxies {
    pub(crate) fn new(networks: Vec<IpNet>) -> Self {
        Self {
            networks: Arc::new(networks),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|network| network.contains(&ip))
    }

    /// The client of a request from `peer` with these headers. The port of
    /// a forwarded address is unknown, so it is 0 (as Daphne does without
    /// `X-Forwarded-Port`).
    pub(crate) fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.is_trusted(peer.ip()) {
            return peer;
        }
        let entries: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            // An entry we cannot read ends the chain: the nearest address we
            // could read (a trusted proxy) is the best we know.
            let Some(ip) = parse_entry(entry) else { break };
            client = SocketAddr::new(ip, 0);
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:5678`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

/// Middleware: replaces the request's `ConnectInfo` with the resolved
/// client, so the WebSocket scope and the rate limit see it.
pub(crate) async fn resolve_client(
    State(proxies): State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    if let Some(peer) = peer {
        let client = proxies.client(peer, request.headers());
        if client != peer {
            request.extensions_mut().insert(ConnectInfo(client));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(FORWARDED_FOR, value.parse().unwrap());
        }
        map
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let proxies = proxies(&["10.0.0.0/8"]);
        let peer = addr("203.0.113.9:4000");
        assert_eq!(proxies.client(peer, &headers(&["1.1.1.1"])), peer);
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let proxies = proxies(&["10.0.0.0/8", "192.168.0.0/16"]);
        let peer = addr("10.0.0.2:4000");
        // A client spoofs 6.6.6.6; its real address 198.51.100.7 was appended
        // by the first proxy, 192.168.1.1 by the second.
        let forwarded = headers(&["6.6.6.6, 198.51.100.7", "192.168.1.1"]);
        assert_eq!(proxies.client(peer, &forwarded), addr("198.51.100.7:0"));
        // No header: the proxy itself.
        assert_eq!(proxies.client(peer, &HeaderMap::new()), peer);
        // Every hop trusted: the left-most.
        assert_eq!(
            proxies.client(peer, &headers(&["10.1.1.1, 192.168.2.2"])),
            addr("10.1.1.1:0")
        );
        // Garbage ends the chain at the nearest readable hop.
        assert_eq!(
            proxies.client(peer, &headers(&["1.2.3.4, junk, 192.168.3.3"])),
            addr("192.168.3.3:0")
        );
        // Ports and IPv6.
        assert_eq!(
            proxies.client(peer, &headers(&["[2001:db8::1]:5678"])),
            addr("[2001:db8::1]:0")
        );
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let proxies = proxies(&["127.0.0.0/8"]);
        let peer = addr("[::ffff:127.0.0.1]:80");
        assert_eq!(
            proxies.client(peer, &headers(&["198.51.100.1"])),
            addr("198.51.100.1:0")
        );
    }
}
