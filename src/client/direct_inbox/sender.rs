//! Who sent a datagram, as the inbox keys its per-sender state (the rate limit, the replay
//! memory). Its own module so that those parts and the inbox all depend on it, and it on none.

use std::net::SocketAddr;

/// Who sent a datagram that passed the source check: the online peer it names (lower-cased, as
/// the peer list looks names up) and the address it came from (an IPv4-mapped IPv6 address as
/// its IPv4 address). The rate limit and the replay memory are kept per sender.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Sender {
    pub(super) name: String,
    address: SocketAddr,
}

impl Sender {
    pub(super) fn new(name: &str, address: SocketAddr) -> Self {
        Sender {
            name: name.to_ascii_lowercase(),
            address: SocketAddr::new(address.ip().to_canonical(), address.port()),
        }
    }
}
