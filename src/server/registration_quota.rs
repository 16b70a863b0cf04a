//! The registration quota: how many accounts one address (an [`AddressKey`], as the server's
//! [`AddressGrouping`] computes it) may create per hour (`--register-per-ip-hour`).
//!
//! Each address has an allowance of N that refills evenly over the hour (one every 3600/N s),
//! so N may be spent at once and then one per 3600/N s: a classroom registers at the start of a
//! lesson, a flood from one address makes at most N accounts plus a trickle. A registration takes
//! its place before the password is hashed and gives it back if no account was made (name
//! taken, invalid, not saved), so the quota counts accounts, and registrations at once cannot go
//! past it. The table is bounded ([`MAX_TRACKED`]). Pure: the caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::address_key::{AddressGrouping, AddressKey};

/// Addresses remembered at most. An address whose allowance is whole again carries no
/// information and goes first; then those with the most left.
pub const MAX_TRACKED: usize = 10_000;

const HOUR: Duration = Duration::from_secs(3600);

/// One address's allowance.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: f64,
    updated: Instant,
}

/// The address has used its hourly allowance.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{per_hour} accounts per hour from one address; the next one in {} s", next_in.as_secs())]
pub(super) struct QuotaReached {
    pub(super) per_hour: u32,
    /// When the next registration from the address will be allowed.
    pub(super) next_in: Duration,
}

/// The registration quota, shared by all connections.
#[derive(Debug)]
pub(super) struct RegistrationQuota {
    per_hour: u32,
    /// What one address is.
    addresses: AddressGrouping,
    allowances: Mutex<HashMap<AddressKey, Allowance>>,
}

impl RegistrationQuota {
    pub(super) fn new(per_hour: u32, addresses: AddressGrouping) -> RegistrationQuota {
        RegistrationQuota {
            per_hour,
            addresses,
            allowances: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for a registration from `ip`, or says when the next one is allowed.
    pub(super) fn take(&self, ip: IpAddr, now: Instant) -> Result<(), QuotaReached> {
        let key = self.addresses.key(ip);
        let mut table = self.lock();
        if !table.contains_key(&key) {
            self.make_room(&mut table, now);
        }
        let whole = f64::from(self.per_hour);
        let allowance = table.entry(key).or_insert(Allowance {
            left: whole,
            updated: now,
        });
        self.refill(allowance, now);
        if allowance.left >= 1.0 {
            allowance.left -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - allowance.left;
        Err(QuotaReached {
            per_hour: self.per_hour,
            next_in: Duration::from_secs_f64(missing * self.seconds_per_place())
                .max(Duration::from_secs(1)),
        })
    }

    /// Gives back the place taken for a registration that made no account.
    pub(super) fn give_back(&self, ip: IpAddr, now: Instant) {
        let whole = f64::from(self.per_hour);
        let key = self.addresses.key(ip);
        if let Some(allowance) = self.lock().get_mut(&key) {
            self.refill(allowance, now);
            allowance.left = (allowance.left + 1.0).min(whole);
        }
    }

    fn seconds_per_place(&self) -> f64 {
        HOUR.as_secs_f64() / f64::from(self.per_hour)
    }

    fn refill(&self, allowance: &mut Allowance, now: Instant) {
        let elapsed = now
            .saturating_duration_since(allowance.updated)
            .as_secs_f64();
        allowance.left =
            (allowance.left + elapsed / self.seconds_per_place()).min(f64::from(self.per_hour));
        allowance.updated = allowance.updated.max(now);
    }

    /// Forgets whole allowances, then, if the table is still full, the half with the most left:
    /// a flood from many addresses can at worst hand some of them a fresh allowance early.
    fn make_room(&self, table: &mut HashMap<AddressKey, Allowance>, now: Instant) {
        if table.len() < MAX_TRACKED {
            return;
        }
        let whole = f64::from(self.per_hour);
        for allowance in table.values_mut() {
            self.refill(allowance, now);
        }
        table.retain(|_, a| a.left < whole);
        if table.len() >= MAX_TRACKED {
            let mut left: Vec<f64> = table.values().map(|a| a.left).collect();
            left.sort_unstable_by(f64::total_cmp);
            let cutoff = left[left.len() / 2];
            table.retain(|_, a| a.left < cutoff);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AddressKey, Allowance>> {
        self.allowances.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address_key::Ipv6Grouping;

    #[test]
    fn an_address_gets_its_allowance_at_once_then_one_per_share_of_the_hour() {
        let quota = RegistrationQuota::new(4, AddressGrouping::default());
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.66".parse().unwrap();
        assert!((0..4).all(|_| quota.take(ip, t0).is_ok()));
        let reached = quota.take(ip, t0).unwrap_err();
        assert_eq!(
            reached.next_in,
            Duration::from_secs(900),
            "4 per hour: one per 15 min"
        );
        assert!(
            quota.take("10.0.0.67".parse().unwrap(), t0).is_ok(),
            "others unaffected"
        );
        assert!(quota.take(ip, t0 + Duration::from_secs(899)).is_err());
        assert!(quota.take(ip, t0 + Duration::from_secs(901)).is_ok());
    }

    #[test]
    fn a_place_given_back_can_be_used_again_and_a_64_is_one_address() {
        let quota = RegistrationQuota::new(1, off_the_servers_networks());
        let t0 = Instant::now();
        assert!(quota.take("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(quota.take("2001:db8::2".parse().unwrap(), t0).is_err());
        quota.give_back("2001:db8::3".parse().unwrap(), t0);
        assert!(quota.take("2001:db8::4".parse().unwrap(), t0).is_ok());
        quota.give_back("2001:db8::4".parse().unwrap(), t0);
        quota.give_back("2001:db8::4".parse().unwrap(), t0);
        assert!(quota.take("2001:db8::4".parse().unwrap(), t0).is_ok());
        assert!(
            quota.take("2001:db8::4".parse().unwrap(), t0).is_err(),
            "giving back never raises the allowance past the quota"
        );
    }

    /// The default grouping on a server whose own networks hold none of the test's addresses.
    fn off_the_servers_networks() -> AddressGrouping {
        AddressGrouping::fixed(Ipv6Grouping::OwnNetworksByAddress, Vec::new())
    }

    #[test]
    fn two_hosts_on_the_servers_own_network_each_have_their_allowance() {
        let own = vec!["2001:db8::/64".parse().unwrap()];
        let quota = RegistrationQuota::new(
            1,
            AddressGrouping::fixed(Ipv6Grouping::OwnNetworksByAddress, own),
        );
        let t0 = Instant::now();
        assert!(quota.take("2001:db8::2".parse().unwrap(), t0).is_ok());
        assert!(quota.take("2001:db8::3".parse().unwrap(), t0).is_ok());
        assert!(quota.take("2001:db8::2".parse().unwrap(), t0).is_err());
        assert!(quota.take("2001:db8::3".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_addresses_that_used_the_most() {
        let quota = RegistrationQuota::new(2, AddressGrouping::default());
        let t0 = Instant::now();
        let flooder: IpAddr = "10.255.0.1".parse().unwrap();
        quota.take(flooder, t0).unwrap();
        quota.take(flooder, t0).unwrap();
        for i in 0..(2 * MAX_TRACKED) {
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let _ = quota.take(ip, t0);
        }
        assert!(quota.lock().len() <= MAX_TRACKED);
        assert!(
            quota.take(flooder, t0).is_err(),
            "the spent allowance is kept"
        );
    }
}
