//! Who the client is: the TCP peer, unless that peer is a trusted proxy, in which case the
//! address the proxy reports in `Forwarded` or `X-Forwarded-For`. Only trusted proxies'
//! headers are read, so a client cannot choose its own rate-limit bucket.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::conn_limits::client_network;

/// Most forwarding hops looked at in one header (a longer chain is cut at the left, the
/// part a client could have written).
const MAX_HOPS: usize = 16;

/// The proxies whose forwarding headers are believed (`PRIVCOMM_TRUSTED_PROXIES`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// A `PRIVCOMM_TRUSTED_PROXIES` entry that is neither an address nor a network.
#[derive(Debug, thiserror::Error)]
#[error("not an IP address or network: {0:?}")]
pub struct BadProxy(String);

impl FromStr for TrustedProxies {
    type Err = BadProxy;

    /// Comma-separated addresses and networks (`10.0.0.5, 10.1.0.0/16, fd00::/8`).
    fn from_str(list: &str) -> Result<Self, BadProxy> {
        let mut nets = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = match IpNet::from_str(entry) {
                Ok(net) => net,
                Err(_) => IpAddr::from_str(entry)
                    .map(IpNet::from)
                    .map_err(|_| BadProxy(entry.chars().take(64).collect()))?,
            };
            nets.push(net);
        }
        Ok(Self { nets })
    }
}

impl TrustedProxies {
    /// True if `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The client's address: `peer`, or, when `peer` is a trusted proxy, the nearest
    /// untrusted hop its `Forwarded` (preferred) or `X-Forwarded-For` header names.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops = forwarded_hops(headers).or_else(|| x_forwarded_for_hops(headers));
        let Some(hops) = hops else { return peer };
        // Right to left: each trusted proxy appended the address it saw.
        hops.into_iter()
            .rev()
            .find(|hop| !self.contains(*hop))
            .unwrap_or(peer)
    }

    /// The key a per-client limit counts under: the client's network (IPv4 address or
    /// IPv6 /64).
    pub fn client_key(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_network(self.client_ip(peer, headers))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The `for=` addresses of every `Forwarded` header (RFC 7239), left to right. `None` if
/// there is no such header or any element is not an address (obfuscated or `unknown`), in
/// which case nothing in it can be relied on.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    let mut seen = false;
    for value in headers.get_all("forwarded") {
        seen = true;
        let value = value.to_str().ok()?;
        for element in value.split(',') {
            let ip = element.split(';').find_map(|pair| {
                let (name, v) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(v.trim().trim_matches('"')))
            })??;
            hops.push(ip);
        }
    }
    seen.then(|| keep_last(hops))
}

/// The addresses of every `X-Forwarded-For` header, left to right.
fn x_forwarded_for_hops(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    let mut seen = false;
    for value in headers.get_all("x-forwarded-for") {
        seen = true;
        for hop in value.to_str().ok()?.split(',') {
            hops.push(parse_node(hop.trim())?);
        }
    }
    seen.then(|| keep_last(hops))
}

fn keep_last(mut hops: Vec<IpAddr>) -> Vec<IpAddr> {
    if hops.len() > MAX_HOPS {
        hops.drain(..hops.len() - MAX_HOPS);
    }
    hops
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]`, `[2001:db8::1]:443` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    let (host, _port) = node.rsplit_once(':')?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let proxies: TrustedProxies = "10.0.0.1, 192.168.0.0/16".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.7"));
        assert_eq!(proxies.client_ip(ip("192.168.4.4"), &h), ip("203.0.113.7"));
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &h), ip("10.0.0.2"));
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        // The client wrote the first entry itself; the proxies appended the rest.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.9")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.7"));
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8:1:2::5]:443\";proto=https",
        )]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &h), ip("2001:db8:1:2::5"));
        // Forwarded wins over X-Forwarded-For; garbage means the proxy itself.
        let h = headers(&[
            ("forwarded", "for=198.51.100.1:4711"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.1"));
        let h = headers(&[("x-forwarded-for", "not an address")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let proxies: TrustedProxies = "::1".parse().unwrap();
        let a = headers(&[("x-forwarded-for", "2001:db8:1:2::1")]);
        let b = headers(&[("x-forwarded-for", "2001:db8:1:2:ffff::9")]);
        let c = headers(&[("x-forwarded-for", "2001:db8:1:3::1")]);
        let peer = ip("::1");
        assert_eq!(proxies.client_key(peer, &a), proxies.client_key(peer, &b));
        assert_ne!(proxies.client_key(peer, &a), proxies.client_key(peer, &c));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!("10.0.0.1, nonsense".parse::<TrustedProxies>().is_err());
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert!("::ffff:10.0.0.1"
            .parse::<TrustedProxies>()
            .is_ok_and(|p| !p.is_empty()));
    }
}
