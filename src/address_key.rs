//! What "one address" means for every per-address limit (connections per address, connections not
//! logged in yet, the registration quota, the login throttle's address table): an IPv4 address;
//! an IPv6 address on the server's own networks; any other IPv6 address's /64.
//!
//! One IPv6 host is routinely given a whole /64 (SLAAC, privacy addresses), so an attacker with
//! one machine far away can pick a fresh /128 for every connection; counting by /128 would give
//! them 2^64 "addresses". But on the server's own segment the /64 is not one host, it is the whole
//! LAN: counting it as one let 8 connections from one host lock every other host on the segment
//! out, and one host's wrong passwords delay everyone's logins. So an IPv6 address on one of the
//! server's own networks — the prefix of an address on one of its interfaces, or link-local
//! `fe80::/10` — counts alone, as an IPv4 address does; any other counts by its /64.
//! `--ipv6-prefix N` ([`Ipv6Grouping::Prefix`]) groups every IPv6 address by its /N instead, for
//! an operator who knows their network better. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
//! what a dual-stack listener reports for an IPv4 client) is the IPv4 address it maps.
//!
//! The server's networks are read from the system (`/proc/net/if_inet6`) when first needed and
//! again at most every [`OWN_NETWORKS_REFRESH`], so a server started before the network was
//! configured, or a renumbered LAN, is seen within that time. This module only computes the key;
//! the limits that count by it live with their own concepts.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Length of the IPv6 prefix that counts as one address off the server's own networks: one
/// host's usual allotment.
pub const DEFAULT_IPV6_PREFIX_BITS: u8 = 64;

/// How long the server's networks, once read, are used before they are read again: interfaces
/// gain and lose addresses (DHCPv6, router advertisements) while the server runs, and a read is
/// a small file, so twice a minute costs nothing and sees a renumbered LAN soon.
pub const OWN_NETWORKS_REFRESH: Duration = Duration::from_secs(30);

/// Where Linux lists the addresses of the interfaces in the reader's network namespace, one a
/// line: the address (32 hex digits), the interface index, the prefix length, the scope and the
/// flags (hex), the interface's name.
const IF_INET6: &str = "/proc/net/if_inet6";

/// Link-local unicast: always on the link the packet came in on.
const LINK_LOCAL: Ipv6Network = Ipv6Network {
    prefix: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
    bits: 10,
};

/// One address as the per-address limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKey {
    V4(Ipv4Addr),
    /// An IPv6 network, host bits zeroed: one address (`bits` 128) or a prefix.
    V6 {
        network: Ipv6Addr,
        bits: u8,
    },
}

/// `127.0.0.1`, `fd00::2`, or `2001:db8:1:2::/64`: how the log names an address.
impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressKey::V4(v4) => write!(f, "{v4}"),
            AddressKey::V6 { network, bits: 128 } => write!(f, "{network}"),
            AddressKey::V6 { network, bits } => write!(f, "{network}/{bits}"),
        }
    }
}

/// An IPv6 network: a prefix and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Network {
    /// Host bits zeroed.
    prefix: Ipv6Addr,
    /// 0 to 128.
    bits: u8,
}

impl Ipv6Network {
    /// The network of `bits` bits that holds `address`; `None` past 128 bits.
    pub fn new(address: Ipv6Addr, bits: u8) -> Option<Ipv6Network> {
        (bits <= 128).then(|| Ipv6Network {
            prefix: Ipv6Addr::from(u128::from(address) & mask(bits)),
            bits,
        })
    }

    pub fn contains(&self, address: Ipv6Addr) -> bool {
        u128::from(address) & mask(self.bits) == u128::from(self.prefix)
    }
}

/// `fd00:1::/64`.
impl fmt::Display for Ipv6Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.prefix, self.bits)
    }
}

/// A network written as `fd00:1::/64` was not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv6 network (an address, `/`, and a prefix length of 0 to 128)")]
pub struct NotANetwork(String);

impl FromStr for Ipv6Network {
    type Err = NotANetwork;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wrong = || NotANetwork(text.to_string());
        let (address, bits) = text.split_once('/').ok_or_else(wrong)?;
        let address: Ipv6Addr = address.parse().map_err(|_| wrong())?;
        let bits: u8 = bits.parse().map_err(|_| wrong())?;
        Ipv6Network::new(address, bits).ok_or_else(wrong)
    }
}

/// The mask of a prefix of `bits` bits (0 to 128).
fn mask(bits: u8) -> u128 {
    match bits {
        0 => 0,
        bits => u128::MAX << (128 - u32::from(bits.min(128))),
    }
}

/// How IPv6 addresses are grouped into one address: the rule `--ipv6-prefix` picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ipv6Grouping {
    /// An address on the server's own networks (its interfaces' prefixes, link-local) counts
    /// alone; any other by its /64 ([`DEFAULT_IPV6_PREFIX_BITS`]).
    #[default]
    OwnNetworksByAddress,
    /// Every IPv6 address by its prefix of this many bits (1 to 128), wherever it is.
    Prefix(u8),
}

impl Ipv6Grouping {
    /// The key of `ip` when the server's own networks are `own`.
    pub fn key(self, ip: IpAddr, own: &[Ipv6Network]) -> AddressKey {
        let v6 = match ip.to_canonical() {
            IpAddr::V4(v4) => return AddressKey::V4(v4),
            IpAddr::V6(v6) => v6,
        };
        let bits = match self {
            Ipv6Grouping::Prefix(bits) => bits.min(128),
            // Only an own network of a LAN's size or smaller: a shorter prefix on an interface (a
            // /48 configured whole, a 6to4 /16, Teredo's /32) reaches hosts anywhere, which could
            // each pick a fresh address per connection.
            Ipv6Grouping::OwnNetworksByAddress
                if LINK_LOCAL.contains(v6)
                    || own
                        .iter()
                        .any(|n| n.bits >= DEFAULT_IPV6_PREFIX_BITS && n.contains(v6)) =>
            {
                128
            }
            Ipv6Grouping::OwnNetworksByAddress => DEFAULT_IPV6_PREFIX_BITS,
        };
        AddressKey::V6 {
            network: Ipv6Addr::from(u128::from(v6) & mask(bits)),
            bits,
        }
    }
}

/// What a server's limits count by: the rule, and the server's own networks as last read. Clones
/// share the networks, so every limit of one server reads them once per refresh and counts an
/// address alike.
#[derive(Debug, Clone)]
pub struct AddressGrouping {
    rule: Ipv6Grouping,
    own: Arc<Mutex<OwnNetworks>>,
}

/// The server's own networks and where they come from.
#[derive(Debug)]
enum OwnNetworks {
    /// Read from the system; `read` is when (`None`: not yet).
    System {
        networks: Vec<Ipv6Network>,
        read: Option<Instant>,
    },
    /// Given, never read (tests, and a caller that knows them).
    Fixed(Vec<Ipv6Network>),
}

impl Default for AddressGrouping {
    /// [`Ipv6Grouping::OwnNetworksByAddress`] on the system's networks.
    fn default() -> Self {
        AddressGrouping::new(Ipv6Grouping::default())
    }
}

impl AddressGrouping {
    /// `rule` on the networks of this system's interfaces, read when first needed.
    pub fn new(rule: Ipv6Grouping) -> AddressGrouping {
        AddressGrouping {
            rule,
            own: Arc::new(Mutex::new(OwnNetworks::System {
                networks: Vec::new(),
                read: None,
            })),
        }
    }

    /// `rule` on the networks `own`, never read from the system.
    pub fn fixed(rule: Ipv6Grouping, own: Vec<Ipv6Network>) -> AddressGrouping {
        AddressGrouping {
            rule,
            own: Arc::new(Mutex::new(OwnNetworks::Fixed(own))),
        }
    }

    /// The key of `ip`.
    pub fn key(&self, ip: IpAddr) -> AddressKey {
        let needs_networks = matches!(
            (self.rule, ip.to_canonical()),
            (Ipv6Grouping::OwnNetworksByAddress, IpAddr::V6(_))
        );
        match needs_networks {
            true => self.with_own_networks(|own| self.rule.key(ip, own)),
            false => self.rule.key(ip, &[]),
        }
    }

    /// The server's own networks now (read again if the last read is older than
    /// [`OWN_NETWORKS_REFRESH`]); the server calls it at start, so that its log says them.
    pub fn own_networks(&self) -> Vec<Ipv6Network> {
        self.with_own_networks(<[Ipv6Network]>::to_vec)
    }

    fn with_own_networks<R>(&self, f: impl FnOnce(&[Ipv6Network]) -> R) -> R {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *own {
            OwnNetworks::Fixed(networks) => f(networks),
            OwnNetworks::System { networks, read } => {
                let now = Instant::now();
                if read.is_none_or(|at| now.saturating_duration_since(at) >= OWN_NETWORKS_REFRESH) {
                    refresh(networks, read.is_none());
                    *read = Some(now);
                }
                f(networks)
            }
        }
    }
}

/// Reads the system's networks into `networks`, and logs them the `first` time and whenever they
/// changed. A system without the list (IPv6 disabled, not Linux) has none: every IPv6 address
/// counts by its /64.
fn refresh(networks: &mut Vec<Ipv6Network>, first: bool) {
    let read = match std::fs::read_to_string(IF_INET6) {
        Ok(text) => parse_if_inet6(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            log::warn!("cannot read this host's IPv6 networks from {IF_INET6}: {e}; every IPv6 client counts by its /{DEFAULT_IPV6_PREFIX_BITS}");
            Vec::new()
        }
    };
    if first || read != *networks {
        let list: Vec<String> = read.iter().map(ToString::to_string).collect();
        log::info!(
            "IPv6 clients on this host's networks ({}) and link-local ones count one by one for the per-address limits, others by their /{DEFAULT_IPV6_PREFIX_BITS} (--ipv6-prefix)",
            match list.is_empty() {
                true => "none".to_string(),
                false => list.join(", "),
            }
        );
        *networks = read;
    }
}

/// The networks of the addresses listed in `/proc/net/if_inet6`'s format, each once; lines that
/// do not parse and prefixes of length 0 (which would make the whole Internet "own") are skipped.
fn parse_if_inet6(text: &str) -> Vec<Ipv6Network> {
    let mut networks = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(address), Some(_index), Some(bits)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(address) = u128::from_str_radix(address, 16) else {
            continue;
        };
        let Ok(bits) = u8::from_str_radix(bits, 16) else {
            continue;
        };
        if address == 0 || bits == 0 {
            continue;
        }
        if let Some(network) = Ipv6Network::new(Ipv6Addr::from(address), bits) {
            if !networks.contains(&network) {
                networks.push(network);
            }
        }
    }
    networks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> Ipv6Network {
        text.parse().unwrap()
    }

    /// The default rule on a server whose own networks are `own`.
    fn key_on(own: &[&str], address: &str) -> AddressKey {
        let own: Vec<Ipv6Network> = own.iter().map(|n| net(n)).collect();
        Ipv6Grouping::OwnNetworksByAddress.key(ip(address), &own)
    }

    #[test]
    fn off_the_servers_networks_an_ipv6_64_is_one_address() {
        let own = ["fd19:6::/64"];
        let a = key_on(&own, "2001:db8:1:2::1");
        assert_eq!(a, key_on(&own, "2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(a, key_on(&own, "2001:db8:1:2:dead:beef:0:42"));
        assert_ne!(a, key_on(&own, "2001:db8:1:3::1"), "the next /64");
        assert_ne!(a, key_on(&own, "2001:db8:2:2::1"));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            key_on(&own, "fd19:7::2"),
            key_on(&own, "fd19:7::3"),
            "a ULA on another site's prefix is not on the server's networks"
        );
    }

    #[test]
    fn on_the_servers_networks_every_ipv6_address_is_its_own() {
        let own = ["fd19:6::/64", "2001:db8:aa::/48", "::1/128"];
        let two = key_on(&own, "fd19:6::2");
        assert_ne!(two, key_on(&own, "fd19:6::3"), "a ULA on an own prefix");
        assert_eq!(two, key_on(&own, "fd19:6::2"));
        assert_eq!(two.to_string(), "fd19:6::2");
        // A prefix of the server's shorter than a LAN's /64 (a /48 configured whole, 6to4,
        // Teredo) reaches hosts anywhere: by /64 there, as off the server's networks.
        assert_eq!(
            key_on(&own, "2001:db8:aa:1::1"),
            key_on(&own, "2001:db8:aa:1::2"),
            "a prefix of the server's shorter than /64"
        );
        assert_ne!(
            key_on(&own, "2001:db8:aa:1::1"),
            key_on(&own, "2001:db8:aa:2::1")
        );
        assert_ne!(
            key_on(&[], "fe80::2"),
            key_on(&[], "fe80::3"),
            "link-local is always on the server's link"
        );
        assert_eq!(key_on(&own, "::1").to_string(), "::1");
        // Without the prefix among its own, the same addresses are one /64 again.
        assert_eq!(key_on(&[], "fd19:6::2"), key_on(&[], "fd19:6::3"));
    }

    #[test]
    fn ipv6_prefix_groups_every_ipv6_address_by_its_prefix_wherever_it_is() {
        let own = [net("fd19:6::/64")];
        let by = |bits: u8, address: &str| Ipv6Grouping::Prefix(bits).key(ip(address), &own);
        assert_eq!(by(64, "fd19:6::2"), by(64, "fd19:6::3"), "own networks too");
        assert_eq!(by(64, "fe80::2"), by(64, "fe80::3"), "link-local too");
        assert_eq!(by(48, "2001:db8:1:1::1"), by(48, "2001:db8:1:2::1"));
        assert_ne!(by(48, "2001:db8:1::1"), by(48, "2001:db8:2::1"));
        assert_eq!(by(48, "2001:db8:1::1").to_string(), "2001:db8:1::/48");
        assert_ne!(by(128, "2001:db8::1"), by(128, "2001:db8::2"));
        assert_eq!(by(1, "2001:db8::1"), by(1, "::1"));
    }

    #[test]
    fn ipv4_addresses_are_themselves_mapped_or_not_under_every_rule() {
        for rule in [Ipv6Grouping::OwnNetworksByAddress, Ipv6Grouping::Prefix(64)] {
            let key = |address: &str| rule.key(ip(address), &[]);
            let v4 = key("192.0.2.7");
            assert_eq!(v4, AddressKey::V4(Ipv4Addr::new(192, 0, 2, 7)));
            assert_eq!(
                v4,
                key("::ffff:192.0.2.7"),
                "IPv4-mapped IPv6 is the IPv4 address"
            );
            assert_ne!(v4, key("192.0.2.8"), "every IPv4 address is its own");
            assert_ne!(
                key("::ffff:192.0.2.7"),
                key("::ffff:192.0.2.8"),
                "mapped addresses are not lumped into one /64"
            );
            assert_eq!(v4.to_string(), "192.0.2.7");
        }
    }

    #[test]
    fn the_systems_list_gives_each_interface_prefix_once() {
        let text = "\
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
fd190006000000000000000000000001 04 40 00 82     eth0
fd190006000000000000000000000009 04 40 00 82     eth0
20010db800aa00000000000000000005 05 30 00 80     eth1
00000000000000000000000000000000 06 00 00 80     odd0
not a line
";
        assert_eq!(
            parse_if_inet6(text),
            [
                net("::1/128"),
                net("fe80::/64"),
                net("fd19:6::/64"),
                net("2001:db8:aa::/48"),
            ]
        );
    }

    #[test]
    fn a_fixed_grouping_uses_its_networks_and_clones_count_alike() {
        let grouping =
            AddressGrouping::fixed(Ipv6Grouping::OwnNetworksByAddress, vec![net("fd19:6::/64")]);
        let clone = grouping.clone();
        assert_ne!(grouping.key(ip("fd19:6::2")), clone.key(ip("fd19:6::3")));
        assert_eq!(grouping.key(ip("fd19:6::2")), clone.key(ip("fd19:6::2")));
        assert_eq!(
            grouping.key(ip("2001:db8::2")),
            clone.key(ip("2001:db8::3"))
        );
    }

    #[test]
    fn networks_parse_from_text_and_refuse_what_is_not_one() {
        assert_eq!(net("fd19:6::9/64").to_string(), "fd19:6::/64");
        assert!(net("fd19:6::/64").contains("fd19:6::ffff".parse().unwrap()));
        assert!(!net("fd19:6::/64").contains("fd19:7::1".parse().unwrap()));
        assert!(net("::/0").contains("2001:db8::1".parse().unwrap()));
        for wrong in ["fd19:6::", "fd19:6::/129", "10.0.0.0/8", "fd19:6::/x"] {
            assert!(wrong.parse::<Ipv6Network>().is_err(), "{wrong} accepted");
        }
    }
}
