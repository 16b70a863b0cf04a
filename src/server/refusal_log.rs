//! The log of connections turned away or lost before login — refused at admission, ended by a
//! missing or failed TLS handshake, closed to make room — summarised per address, so that a
//! flood of them costs a few lines a minute, not three lines a connection.
//!
//! In each interval ([`INTERVAL`]) the first [`LINES_PER_ADDRESS`] from an address are logged
//! in full; the rest are counted, and [`RefusalLog::summarise`] logs one line per address
//! ("… and 4211 more from 10.0.0.9 in the last minute") when the interval ends. The table holds
//! at most [`MAX_ADDRESSES`] addresses per interval; those beyond are counted together. This
//! module never decides whether a connection is refused; it only says so.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::address_key::{AddressGrouping, AddressKey};

/// How often the counted lines are summarised.
pub(super) const INTERVAL: Duration = Duration::from_secs(60);

/// Lines logged in full per address and interval; enough to see what an address is doing.
pub(super) const LINES_PER_ADDRESS: u32 = 3;

/// Addresses counted one by one per interval: a flood from more addresses (spoofing is not
/// possible over TCP, but a large network is) is counted in one line, so memory stays bounded.
pub(super) const MAX_ADDRESSES: usize = 1024;

/// The lines of the current interval.
#[derive(Default)]
pub(super) struct RefusalLog {
    /// What one address is: the server's grouping, as its limits count.
    addresses: AddressGrouping,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    addresses: HashMap<AddressKey, Tally>,
    /// Lines not logged from addresses beyond [`MAX_ADDRESSES`].
    elsewhere: u64,
}

#[derive(Default)]
struct Tally {
    logged: u32,
    counted: u64,
}

/// One summary line: the lines not logged from one address (or from the addresses beyond the
/// table) in the interval that ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Summary {
    From { address: AddressKey, more: u64 },
    Elsewhere { more: u64 },
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Summary::From { address, more } => write!(
                f,
                "… and {more} more refused or failed connections from {address} in the last minute"
            ),
            Summary::Elsewhere { more } => write!(
                f,
                "… and {more} more refused or failed connections from other addresses in the last minute (more than {MAX_ADDRESSES} addresses)"
            ),
        }
    }
}

impl RefusalLog {
    /// A log that counts addresses as `addresses` says.
    pub(super) fn new(addresses: AddressGrouping) -> RefusalLog {
        RefusalLog {
            addresses,
            table: Mutex::default(),
        }
    }

    /// Logs `what` about the connection from `remote` at `level` if its address has lines left
    /// in this interval; counts it for the summary otherwise.
    pub(super) fn log(&self, level: log::Level, remote: SocketAddr, what: impl fmt::Display) {
        if self.in_full(self.addresses.key(remote.ip().to_canonical())) {
            log::log!(level, "{remote} {what}");
        }
    }

    /// Whether a line about `address` is logged in full; if not, it is counted.
    fn in_full(&self, address: AddressKey) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let table = &mut *table;
        let known = table.addresses.len();
        match table.addresses.get_mut(&address) {
            Some(tally) if tally.logged < LINES_PER_ADDRESS => {
                tally.logged += 1;
                true
            }
            Some(tally) => {
                tally.counted += 1;
                false
            }
            None if known < MAX_ADDRESSES => {
                table.addresses.insert(
                    address,
                    Tally {
                        logged: 1,
                        counted: 0,
                    },
                );
                true
            }
            None => {
                table.elsewhere += 1;
                false
            }
        }
    }

    /// Ends the interval: the summaries of what was counted, and a fresh table.
    pub(super) fn end_interval(&self) -> Vec<Summary> {
        let table = std::mem::take(&mut *self.table.lock().unwrap_or_else(|p| p.into_inner()));
        let mut summaries: Vec<Summary> = table
            .addresses
            .into_iter()
            .filter(|(_, tally)| tally.counted > 0)
            .map(|(address, tally)| Summary::From {
                address,
                more: tally.counted,
            })
            .collect();
        if table.elsewhere > 0 {
            summaries.push(Summary::Elsewhere {
                more: table.elsewhere,
            });
        }
        summaries
    }

    /// Ends the interval and logs its summaries.
    pub(super) fn summarise(&self) {
        for summary in self.end_interval() {
            log::warn!("{summary}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(last: u8) -> AddressKey {
        AddressGrouping::default().key(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    #[test]
    fn the_first_lines_per_address_are_logged_and_the_rest_counted_once() {
        let log = RefusalLog::default();
        let logged = (0..4214).filter(|_| log.in_full(key(9))).count();
        assert_eq!(logged, LINES_PER_ADDRESS as usize);
        assert!(log.in_full(key(10)), "another address has its own lines");
        let summaries = log.end_interval();
        assert_eq!(
            summaries,
            vec![Summary::From {
                address: key(9),
                more: 4211
            }]
        );
        assert_eq!(
            summaries[0].to_string(),
            "… and 4211 more refused or failed connections from 10.0.0.9 in the last minute"
        );
        // A new interval: the address has its lines again, and nothing is left to summarise.
        assert!(log.in_full(key(9)));
        assert_eq!(log.end_interval(), vec![]);
    }

    #[test]
    fn addresses_beyond_the_table_are_counted_together() {
        let log = RefusalLog::default();
        for i in 0..MAX_ADDRESSES + 5 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
            assert_eq!(
                log.in_full(AddressGrouping::default().key(ip)),
                i < MAX_ADDRESSES
            );
        }
        assert_eq!(
            log.table.lock().unwrap().addresses.len(),
            MAX_ADDRESSES,
            "bounded"
        );
        assert_eq!(log.end_interval(), vec![Summary::Elsewhere { more: 5 }]);
    }
}
