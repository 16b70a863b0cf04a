//! Finding the server on the LAN without typing its address: DNS-SD over multicast DNS
//! (RFC 6762/6763, what printers and AirPlay use). The server announces
//! [`SERVICE_TYPE`] with its port and a TXT record ([`txt`]: protocol version, TLS or not, the
//! certificate's fingerprint); a client browses for [`BROWSE_TIME`] and gets what answered as
//! [`Found`] servers.
//!
//! This module is the only one that names the `mdns-sd` crate: the rest of the code speaks
//! [`Announcement`], [`Found`] and [`browse`]. It decides which interfaces an announcement goes
//! out on ([`interfaces_for`]) and turns what others announce into checked values; it never
//! decides whom to trust. An announced fingerprint is a convenience, not proof: anyone on the LAN
//! can announce anything, so the client only *compares* it at first contact
//! (`client::dialogue::ask_trust`) and never pins it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo, UnregisterStatus};

use crate::protocol::PROTOCOL_VERSION;
use crate::tls::Fingerprint;

/// The DNS-SD service type p2pchat servers announce (RFC 6763 §7: `_name._tcp`, in the
/// `local.` domain of multicast DNS).
pub const SERVICE_TYPE: &str = "_p2pchat._tcp.local.";

/// How long a client listens for announcements before it decides. mDNS responders answer a
/// query within 20–120 ms (RFC 6762 §6), but one that multicast its records less than a second
/// ago (its own announcement, or its answer to another client) waits for the crate's second
/// query, sent a second after the first (measured in the lab: the answer came 1.03 s after the
/// first query). 1.5 s hears that answer with room to spare, and keeps the start of a client
/// short enough not to feel like a wait.
pub const BROWSE_TIME: Duration = Duration::from_millis(1500);

/// How long a stopping server waits for its goodbye packets (records with TTL 0, RFC 6762
/// §10.1) to be sent, so that browsers forget it at once instead of after the records' TTL.
/// Sending takes milliseconds; the bound only keeps a wedged daemon from holding shutdown.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// How long to wait for the daemon's own shutdown to be confirmed (it closes its sockets).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// At most this many servers are kept from one browse: a classroom has a handful; anyone on the
/// LAN can announce thousands, and a list that long helps nobody. The rest are counted.
pub const MAX_FOUND: usize = 32;

/// The keys of the TXT record (RFC 6763 §6: short keys, `key=value`).
pub mod txt {
    /// The TXT record's own format version (RFC 6763 §6.7's convention).
    pub const TXTVERS: &str = "txtvers";
    /// The p2pchat protocol version the server speaks (`protocol::PROTOCOL_VERSION`).
    pub const PROTOCOL: &str = "proto";
    /// `1` when the server speaks TLS, `0` with `--plaintext`.
    pub const TLS: &str = "tls";
    /// The certificate's fingerprint, `SHA256:…`, as the server prints it (TLS only).
    pub const FINGERPRINT: &str = "fp";
}

/// Why announcing or browsing could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot start the mDNS responder: {0}")]
    Daemon(mdns_sd::Error),
    #[error("cannot announce {name:?} over mDNS: {source}")]
    Register {
        name: String,
        source: mdns_sd::Error,
    },
    #[error("cannot browse for {SERVICE_TYPE} over mDNS: {0}")]
    Browse(mdns_sd::Error),
    #[error("cannot read this host's network interfaces: {0}")]
    Interfaces(std::io::Error),
    #[error("no network interface has the address {0} the server listens on")]
    NoInterface(IpAddr),
}

/// One network interface address of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    pub interface: String,
    pub ip: IpAddr,
}

impl HostAddress {
    fn is_loopback(&self) -> bool {
        self.ip.is_loopback()
    }
}

/// Where an announcement goes out, for a server listening on `bind` on a host with these
/// addresses: a specific address → its own interface (that address only); the unspecified
/// address (`0.0.0.0`, or `::` which takes IPv4 too) → every interface but loopback, unless
/// loopback is all there is (a host, or a namespace, on no network: only its own clients can
/// find it). IPv6 link-local addresses are left out: a browser on another link could not use
/// them without knowing the scope.
///
/// # Errors
/// A specific address no interface has.
pub fn interfaces_for(
    bind: IpAddr,
    host: &[HostAddress],
) -> Result<Vec<HostAddress>, DiscoveryError> {
    if !bind.is_unspecified() {
        return match host.iter().find(|a| a.ip == bind) {
            Some(found) => Ok(vec![found.clone()]),
            None => Err(DiscoveryError::NoInterface(bind)),
        };
    }
    let reachable = |a: &&HostAddress| match (bind, a.ip) {
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
        (_, IpAddr::V6(v6)) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        _ => true,
    };
    let usable: Vec<HostAddress> = host.iter().filter(reachable).cloned().collect();
    let outside: Vec<HostAddress> = usable
        .iter()
        .filter(|a| !a.is_loopback())
        .cloned()
        .collect();
    Ok(if outside.is_empty() { usable } else { outside })
}

/// This host's interface addresses (interfaces that are up).
fn host_addresses() -> Result<Vec<HostAddress>, DiscoveryError> {
    let addresses = if_addrs::get_if_addrs().map_err(DiscoveryError::Interfaces)?;
    Ok(addresses
        .into_iter()
        .filter(|a| a.is_oper_up())
        .map(|a| HostAddress {
            ip: a.ip(),
            interface: a.name,
        })
        .collect())
}

/// This host's name, for the announcement's host record and its default instance name.
fn host_name() -> String {
    let name = rustix::system::uname();
    let name = name.nodename().to_string_lossy();
    // A host name is one DNS label here (`name.local.`): what comes after a dot is a domain.
    let label = name.split('.').next().unwrap_or_default();
    if label.is_empty() {
        "p2pchat".to_string()
    } else {
        label.to_string()
    }
}

/// The name a server is listed under: its host and port, which tell servers apart in a list
/// and say where each is.
pub fn instance_name(port: u16) -> String {
    format!("{}:{port}", host_name())
}

/// What a server announces about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The instance name it is listed under.
    pub name: String,
    /// The address and port it listens on (`0.0.0.0` or `::` for every address).
    pub listening: SocketAddr,
    /// With TLS, its certificate's fingerprint; `None` with `--plaintext`.
    pub fingerprint: Option<Fingerprint>,
}

impl Offer {
    /// The TXT record's key/value pairs.
    pub fn txt(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (txt::TXTVERS, "1".to_string()),
            (txt::PROTOCOL, PROTOCOL_VERSION.to_string()),
            (
                txt::TLS,
                if self.fingerprint.is_some() { "1" } else { "0" }.to_string(),
            ),
        ];
        if let Some(fingerprint) = self.fingerprint {
            pairs.push((txt::FINGERPRINT, fingerprint.to_string()));
        }
        pairs
    }
}

/// A server's announcement on the LAN, withdrawn with goodbye packets by
/// [`Announcement::withdraw`] (and, less politely, when dropped: the daemon then stops without
/// them, and browsers forget the server when its records expire).
pub struct Announcement {
    daemon: ServiceDaemon,
    fullname: String,
    /// The interfaces it went out on, for the log.
    pub interfaces: Vec<HostAddress>,
}

impl Announcement {
    /// Announces `offer` on the interfaces [`interfaces_for`] its listening address chooses,
    /// answering queries from then on (the crate's daemon thread).
    ///
    /// # Errors
    /// The interfaces cannot be read, none has the address, or the responder cannot start.
    pub fn start(offer: &Offer) -> Result<Announcement, DiscoveryError> {
        Announcement::start_on(offer, &host_name(), host_addresses()?)
    }

    /// Announces `offer` as host `host` (`host.local.`), on the interfaces of `addresses` that
    /// [`interfaces_for`] chooses. With [`Announcement::start`] the host's own; a test can
    /// announce another host's address (a spoofed announcement).
    ///
    /// # Errors
    /// As [`Announcement::start`].
    pub fn start_on(
        offer: &Offer,
        host: &str,
        addresses: Vec<HostAddress>,
    ) -> Result<Announcement, DiscoveryError> {
        let interfaces = interfaces_for(offer.listening.ip(), &addresses)?;
        let daemon = ServiceDaemon::new().map_err(DiscoveryError::Daemon)?;
        // Only the chosen interfaces send and answer: a server bound to one network is not
        // announced on the others.
        let _ = daemon.disable_interface(IfKind::All);
        let names: Vec<IfKind> = interfaces
            .iter()
            .map(|a| IfKind::Name(a.interface.clone()))
            .collect();
        let _ = daemon.enable_interface(names);
        let ips: Vec<IpAddr> = interfaces.iter().map(|a| a.ip).collect();
        let txt: Vec<(&str, String)> = offer.txt();
        let register = |source| DiscoveryError::Register {
            name: offer.name.clone(),
            source,
        };
        let service = ServiceInfo::new(
            SERVICE_TYPE,
            &offer.name,
            &format!("{host}.local."),
            &ips[..],
            offer.listening.port(),
            &txt[..],
        )
        .map_err(register)?;
        let fullname = service.get_fullname().to_string();
        daemon.register(service).map_err(register)?;
        Ok(Announcement {
            daemon,
            fullname,
            interfaces,
        })
    }

    /// Sends goodbye packets (the records with TTL 0) and stops the responder, waiting at most
    /// [`GOODBYE_WAIT`] for them to go out. Blocks: call it off the async runtime's threads.
    pub fn withdraw(self) {
        if let Ok(status) = self.daemon.unregister(&self.fullname) {
            match status.recv_timeout(GOODBYE_WAIT) {
                Ok(UnregisterStatus::OK) => {}
                Ok(other) => log::debug!("mDNS: withdrawing {}: {other:?}", self.fullname),
                Err(e) => log::warn!("mDNS: no goodbye sent for {}: {e}", self.fullname),
            }
        }
        if let Ok(status) = self.daemon.shutdown() {
            let _ = status.recv_timeout(SHUTDOWN_WAIT);
        }
    }
}

/// What a server found on the LAN announced about itself, as the client carries it to the
/// first-use prompt: anyone on the LAN can announce anything, so it is shown beside the
/// certificate there, never trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The name it was listed under.
    pub name: String,
    /// The fingerprint it announced (none: plaintext, or none that read as one).
    pub fingerprint: Option<Fingerprint>,
}

/// A server found on the LAN, as it announced itself. Everything here is what someone on the
/// LAN *said*: the name may be anything, the fingerprint proves nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its instance name (any text: shown escaped).
    pub name: String,
    /// The host name it announced (`host.local.`).
    pub host: String,
    /// Its addresses, IPv4 first.
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    /// Whether it says it speaks TLS (`tls=1`).
    pub tls: bool,
    /// The fingerprint it announced, if it announced one that reads as a fingerprint.
    pub fingerprint: Option<Fingerprint>,
    /// The protocol version it announced, if any.
    pub protocol: Option<u32>,
}

impl Found {
    /// `ADDRESS:PORT` to connect to: its first address, IPv4 preferred (`[v6]:PORT` for IPv6).
    pub fn server(&self) -> Option<String> {
        let ip = self.addresses.first()?;
        Some(SocketAddr::new(*ip, self.port).to_string())
    }

    /// Reads a resolved service; `None` when it has no usable address or port.
    fn from_resolved(
        name: String,
        host: String,
        addresses: impl IntoIterator<Item = IpAddr>,
        port: u16,
        property: impl Fn(&str) -> Option<String>,
    ) -> Option<Found> {
        let mut addresses: Vec<IpAddr> = addresses
            .into_iter()
            // Loopback is dropped: another host announcing it would aim the client at a
            // listener on the client's own machine (any local user's), and a server on this
            // host announces its LAN addresses (one on loopback alone is the fallback anyway).
            .filter(|ip| !ip.is_loopback())
            .filter(|ip| match ip {
                IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_multicast(),
                // Link-local IPv6 needs a scope the text form would lose.
                IpAddr::V6(v6) => {
                    !v6.is_unspecified()
                        && !v6.is_multicast()
                        && (v6.segments()[0] & 0xffc0) != 0xfe80
                }
            })
            .collect();
        addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        addresses.dedup();
        if addresses.is_empty() || port == 0 {
            return None;
        }
        let fingerprint = property(txt::FINGERPRINT).and_then(|fp| fp.parse().ok());
        Some(Found {
            name,
            host,
            addresses,
            port,
            tls: property(txt::TLS).as_deref() == Some("1"),
            fingerprint,
            protocol: property(txt::PROTOCOL).and_then(|v| v.parse().ok()),
        })
    }
}

impl fmt::Display for Found {
    /// One line for a list: name, address, TLS and fingerprint (the name escaped: it is
    /// anyone's text).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.server().unwrap_or_default();
        let name = self.name.escape_debug();
        match (self.tls, self.fingerprint) {
            (true, Some(fp)) => write!(f, "{name} at {at} (TLS, fingerprint {fp})"),
            (true, None) => write!(f, "{name} at {at} (TLS, no fingerprint announced)"),
            (false, _) => write!(f, "{name} at {at} (plaintext)"),
        }
    }
}

/// What one browse heard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Browsed {
    /// The servers found, by name, at most [`MAX_FOUND`].
    pub found: Vec<Found>,
    /// Servers heard past [`MAX_FOUND`], not kept.
    pub more: usize,
}

/// Listens for `time` for servers announcing [`SERVICE_TYPE`] on every interface of this host
/// (loopback too: a server on this host is found by the LAN addresses it announces; loopback
/// addresses in an announcement are dropped). Blocks for `time`: call it off the async
/// runtime's threads.
///
/// # Errors
/// The mDNS daemon cannot start or browse (no multicast at all, say).
pub fn browse(time: Duration) -> Result<Browsed, DiscoveryError> {
    let daemon = ServiceDaemon::new().map_err(DiscoveryError::Daemon)?;
    let events = daemon
        .browse(SERVICE_TYPE)
        .map_err(DiscoveryError::Browse)?;
    let deadline = Instant::now() + time;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let mut more = 0;
    while let Ok(event) = events.recv_deadline(deadline) {
        match event {
            ServiceEvent::ServiceResolved(service) => {
                let name = instance_of(&service.fullname);
                let known = found.contains_key(&name);
                if !known && found.len() >= MAX_FOUND {
                    more += 1;
                    continue;
                }
                let properties = &service.txt_properties;
                let server = Found::from_resolved(
                    name.clone(),
                    service.host.clone(),
                    service.addresses.iter().map(|a| a.to_ip_addr()),
                    service.port,
                    |key| properties.get_property_val_str(key).map(str::to_string),
                );
                if let Some(server) = server {
                    found.insert(name, server);
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                found.remove(&instance_of(&fullname));
            }
            _ => {}
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    if let Ok(status) = daemon.shutdown() {
        let _ = status.recv_timeout(SHUTDOWN_WAIT);
    }
    Ok(Browsed {
        found: found.into_values().collect(),
        more,
    })
}

/// The instance name of a service's full name (`NAME._p2pchat._tcp.local.`), unescaped the way
/// RFC 6763 §4.3 escapes dots and backslashes in it.
fn instance_of(fullname: &str) -> String {
    let name = fullname
        .strip_suffix(SERVICE_TYPE)
        .map(|n| n.strip_suffix('.').unwrap_or(n))
        .unwrap_or(fullname);
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(interface: &str, ip: &str) -> HostAddress {
        HostAddress {
            interface: interface.into(),
            ip: ip.parse().unwrap(),
        }
    }

    fn host() -> Vec<HostAddress> {
        vec![
            at("lo", "127.0.0.1"),
            at("lo", "::1"),
            at("eth0", "10.0.0.5"),
            at("eth0", "fe80::1"),
            at("eth0", "fd00::5"),
            at("wlan0", "192.168.1.7"),
        ]
    }

    #[test]
    fn every_address_means_every_interface_but_loopback() {
        let chosen = interfaces_for("0.0.0.0".parse().unwrap(), &host()).unwrap();
        assert_eq!(
            chosen,
            vec![at("eth0", "10.0.0.5"), at("wlan0", "192.168.1.7")]
        );
        // `::` takes IPv4 too (dual stack); link-local IPv6 is left out.
        let chosen = interfaces_for("::".parse().unwrap(), &host()).unwrap();
        assert_eq!(
            chosen,
            vec![
                at("eth0", "10.0.0.5"),
                at("eth0", "fd00::5"),
                at("wlan0", "192.168.1.7")
            ]
        );
    }

    #[test]
    fn loopback_is_announced_on_when_it_is_all_there_is() {
        let only = vec![at("lo", "127.0.0.1"), at("lo", "::1")];
        let chosen = interfaces_for("0.0.0.0".parse().unwrap(), &only).unwrap();
        assert_eq!(chosen, vec![at("lo", "127.0.0.1")]);
    }

    #[test]
    fn a_specific_address_means_its_interface_only() {
        let chosen = interfaces_for("192.168.1.7".parse().unwrap(), &host()).unwrap();
        assert_eq!(chosen, vec![at("wlan0", "192.168.1.7")]);
        assert!(matches!(
            interfaces_for("10.9.9.9".parse().unwrap(), &host()),
            Err(DiscoveryError::NoInterface(_))
        ));
    }

    #[test]
    fn the_txt_record_says_version_tls_and_fingerprint() {
        let fp: Fingerprint = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
            .parse()
            .unwrap();
        let offer = Offer {
            name: "lab:12000".into(),
            listening: "0.0.0.0:12000".parse().unwrap(),
            fingerprint: Some(fp),
        };
        let txt = offer.txt();
        assert!(txt.contains(&("tls", "1".into())));
        assert!(txt.contains(&("fp", fp.to_string())));
        assert!(txt.contains(&("proto", PROTOCOL_VERSION.to_string())));
        let plain = Offer {
            fingerprint: None,
            ..offer
        };
        assert!(plain.txt().contains(&("tls", "0".into())));
        assert!(!plain.txt().iter().any(|(k, _)| *k == "fp"));
    }

    #[test]
    fn what_others_announce_is_checked_before_it_is_kept() {
        let props = |tls: &'static str, fp: &'static str| {
            move |key: &str| match key {
                "tls" => Some(tls.to_string()),
                "fp" => Some(fp.to_string()),
                "proto" => Some("1".to_string()),
                _ => None,
            }
        };
        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|s| s.parse().unwrap()).collect() };
        let found = Found::from_resolved(
            "a".into(),
            "a.local.".into(),
            ips(&["fe80::1", "fd00::5", "10.0.0.5"]),
            12000,
            props("1", "not a fingerprint"),
        )
        .unwrap();
        assert_eq!(found.server().as_deref(), Some("10.0.0.5:12000"));
        assert_eq!(found.addresses, ips(&["10.0.0.5", "fd00::5"]));
        assert!(found.tls);
        assert_eq!(
            found.fingerprint, None,
            "a bad fingerprint is no fingerprint"
        );
        assert_eq!(found.protocol, Some(1));
        // No usable address, or no port: not a server one can reach.
        assert!(Found::from_resolved(
            "b".into(),
            "b.".into(),
            ips(&["fe80::1"]),
            1,
            props("0", "")
        )
        .is_none());
        // Loopback in what others announce is dropped: it would aim at this host.
        let found = Found::from_resolved(
            "l".into(),
            "l.local.".into(),
            ips(&["127.0.0.1", "::1", "127.1.2.3", "10.0.0.7"]),
            12000,
            props("1", ""),
        )
        .unwrap();
        assert_eq!(found.addresses, ips(&["10.0.0.7"]));
        assert!(Found::from_resolved(
            "m".into(),
            "m.".into(),
            ips(&["127.0.0.1", "::1"]),
            12000,
            props("1", "")
        )
        .is_none());
        assert!(Found::from_resolved(
            "c".into(),
            "c.".into(),
            ips(&["10.0.0.1"]),
            0,
            props("0", "")
        )
        .is_none());
    }

    #[test]
    fn an_instance_name_is_unescaped_and_listed_escaped() {
        assert_eq!(
            instance_of("lab\\.pc:12000._p2pchat._tcp.local."),
            "lab.pc:12000"
        );
        let found = Found {
            name: "evil\u{1b}[2J".into(),
            host: "x.local.".into(),
            addresses: vec!["10.0.0.1".parse().unwrap()],
            port: 12000,
            tls: false,
            fingerprint: None,
            protocol: None,
        };
        assert_eq!(
            found.to_string(),
            "evil\\u{1b}[2J at 10.0.0.1:12000 (plaintext)"
        );
    }
}
