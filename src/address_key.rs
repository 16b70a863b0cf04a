//! What "one address" means for every per-address limit (connections per address, connections not
//! logged in yet, the registration quota, the login throttle's address table): an IPv4 address,
//! or an IPv6 /64.
//!
//! One IPv6 host is routinely given a whole /64 (SLAAC, privacy addresses), so an attacker with
//! one machine can pick a fresh /128 for every connection; counting by /128 would give them
//! 2^64 "addresses". An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack listener
//! reports for an IPv4 client) is the IPv4 address it maps. This module only computes the key;
//! the limits that count by it live with their own concepts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the IPv6 prefix that counts as one address: one host's usual allotment.
pub const IPV6_PREFIX_BITS: u32 = 64;

/// One address as the per-address limits count it: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKey {
    V4(Ipv4Addr),
    /// The /64 prefix, host bits zeroed.
    V6Prefix(Ipv6Addr),
}

impl AddressKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - IPV6_PREFIX_BITS);
                AddressKey::V6Prefix(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

/// The key of `ip` (short for [`AddressKey::of`]).
pub fn address_key(ip: IpAddr) -> AddressKey {
    AddressKey::of(ip)
}

/// `127.0.0.1`, or `2001:db8:1:2::/64`: how the log names an address.
impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressKey::V4(v4) => write!(f, "{v4}"),
            AddressKey::V6Prefix(prefix) => write!(f, "{prefix}/{IPV6_PREFIX_BITS}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> AddressKey {
        address_key(text.parse().unwrap())
    }

    #[test]
    fn two_addresses_in_one_ipv6_64_share_a_key_and_other_64s_do_not() {
        let a = key("2001:db8:1:2::1");
        assert_eq!(a, key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(a, key("2001:db8:1:2:dead:beef:0:42"));
        assert_ne!(a, key("2001:db8:1:3::1"), "the next /64");
        assert_ne!(a, key("2001:db8:2:2::1"));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::1"), key("::2"), "loopback's /64 is one address too");
    }

    #[test]
    fn ipv4_addresses_are_themselves_mapped_or_not() {
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
