//! `[serve] trusted_proxies`: running behind a reverse proxy. A request whose TCP peer is one of
//! the listed addresses or networks is taken to come from the client the proxy names: the
//! address from `X-Forwarded-For` (the rightmost entry that is not itself a trusted proxy) and
//! the host from `X-Forwarded-Host`. From any other peer those headers mean nothing (the
//! gateway never passes them on), so a client cannot choose the address that login throttling
//! counts or the host that names its tenant.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Addresses (`10.0.0.5`) or networks (`10.0.0.0/8`, `fd00::/8`); an entry that is neither
    /// is an error naming it.
    pub(crate) fn parse(list: &[String]) -> crate::error::Result<Self> {
        list.iter()
            .enumerate()
            .map(|(i, entry)| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        crate::error::Error::msg(format!(
                            "serve.trusted_proxies[{i}]: {entry:?} is not an IP address or network"
                        ))
                    })
            })
            .collect::<crate::error::Result<_>>()
            .map(Self)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client behind `peer`, given the `X-Forwarded-For` values in order: `peer` itself
    /// unless it is trusted; else, read from the right, the first address that is not a
    /// trusted proxy (or the last readable one when every one is).
    fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The middleware: from a trusted proxy, the request carries the client's address (as its
/// `ConnectInfo`) and host (as its `Host`).
pub(crate) async fn apply(
    State(proxies): State<Arc<TrustedProxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if let Some(peer) = peer.filter(|p| proxies.trusts(p.ip())) {
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let client = proxies.client(peer.ip(), &forwarded);
        let host = req
            .headers()
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .and_then(|h| HeaderValue::from_str(h).ok());
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(client, 0)));
        if let Some(host) = host {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let p = proxies(&["10.0.0.0/8", "192.0.2.7"]);
        // Not from a trusted proxy: the header is the client's own claim, ignored.
        assert_eq!(
            p.client(ip("203.0.113.9"), &["198.51.100.1"]),
            ip("203.0.113.9")
        );
        // From one: the proxy's view of its peer, past further trusted hops.
        assert_eq!(
            p.client(ip("10.1.2.3"), &["203.0.113.9"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.client(ip("10.1.2.3"), &["198.51.100.1, 203.0.113.9, 192.0.2.7"]),
            ip("203.0.113.9"),
            "a forged left part does not count"
        );
        assert_eq!(
            p.client(ip("10.1.2.3"), &["203.0.113.9", "10.9.9.9"]),
            ip("203.0.113.9")
        );
        assert_eq!(p.client(ip("10.1.2.3"), &[]), ip("10.1.2.3"));
        assert_eq!(p.client(ip("10.1.2.3"), &["garbage"]), ip("10.1.2.3"));
        assert_eq!(
            p.client(ip("::ffff:10.1.2.3"), &["203.0.113.9"]),
            ip("203.0.113.9")
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.internal".into()]).is_err());
    }

    proptest! {
        /// Whatever the header says, from an untrusted peer the client is the peer; from a
        /// trusted one it is the peer or an address the header itself names.
        #[test]
        fn any_header_text_is_safe(
            header in "\\PC*",
            named in proptest::collection::vec(any::<[u8; 4]>(), 0..4),
            octet in 0u8..=255,
        ) {
            let p = proxies(&["10.0.0.0/8"]);
            let stranger = IpAddr::from([203, 0, 113, octet]);
            prop_assert_eq!(p.client(stranger, &[header.as_str()]), stranger);
            let listed: Vec<String> = named.iter().map(|o| IpAddr::from(*o).to_string()).collect();
            let text = format!("{header},{}", listed.join(","));
            let peer = IpAddr::from([10, 0, 0, octet]);
            let client = p.client(peer, &[text.as_str()]);
            let from_header = text
                .split(',')
                .any(|h| h.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) == Ok(client));
            prop_assert!(client == peer || from_header, "{client} from {text:?}");
        }
    }
}
