//! Caps on open TCP connections, checked when a connection is accepted: one for the whole
//! relay and one per client network (an IPv4 address, or an IPv6 /64, which one host
//! usually holds whole).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::client_ip::TrustedProxies;

/// The network a client address belongs to, for per-client limits: IPv4 addresses as they
/// are, IPv6 addresses by their /64 prefix (IPv4-mapped ones as IPv4).
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The relay holds its maximum of connections.
    Full,
    /// This client network holds its maximum.
    PerClient,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_network: HashMap<IpAddr, usize>,
}

/// Open connections, globally and per client network.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_client: usize,
    exempt: TrustedProxies,
    counts: Mutex<Counts>,
}

/// One accepted connection's place under the caps, given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    network: Option<IpAddr>,
}

impl ConnectionLimits {
    /// Caps of `max_total` connections, `max_per_client` per client network except for the
    /// addresses in `exempt` (trusted proxies, which carry many clients).
    pub fn new(max_total: usize, max_per_client: usize, exempt: TrustedProxies) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_client,
            exempt,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A permit for a connection from `ip`, or why there is none. The per-network map holds
    /// only networks with open connections, so it is bounded by `max_total`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max_total {
            return Err(Refusal::Full);
        }
        let network = (!self.exempt.contains(ip)).then(|| client_network(ip));
        if let Some(network) = network {
            let open = counts.per_network.entry(network).or_insert(0);
            if *open >= self.max_per_client {
                return Err(Refusal::PerClient);
            }
            *open += 1;
        }
        counts.total += 1;
        Ok(ConnectionPermit {
            limits: self.clone(),
            network,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(network) = self.network {
            if let Some(open) = counts.per_network.get_mut(&network) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    counts.per_network.remove(&network);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_network(a), client_network(b));
        assert_ne!(client_network(a), client_network(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            client_network(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn caps_hold_and_permits_give_their_place_back() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let limits = ConnectionLimits::new(4, 2, "10.0.0.1".parse().unwrap());
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let first = limits.admit(client).unwrap();
        let _second = limits.admit(client).unwrap();
        assert_eq!(limits.admit(client).unwrap_err(), Refusal::PerClient);
        let _p1 = limits.admit(proxy).unwrap();
        let _p2 = limits.admit(proxy).unwrap();
        assert_eq!(limits.admit(proxy).unwrap_err(), Refusal::Full);
        drop(first);
        assert_eq!(limits.open(), 3);
        assert!(limits.admit(client).is_ok());
        assert_eq!(limits.counts.lock().unwrap().per_network.len(), 1);
    }
}
