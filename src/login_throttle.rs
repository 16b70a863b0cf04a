//! Login throttling: failed logins slow down further attempts on the same account and from the
//! same address, with a delay that doubles per failure up to a cap.
//!
//! There is no lockout: a correct password always gets in, at worst after the capped delay, so
//! an attacker who guesses at someone's account can slow them down but never lock them out.
//! Attempts on one key are also spaced out (each waits for the previous one's slot), but never
//! booked more than the capped delay ahead, so that many attempts at once cannot push the owner's
//! login into the far future: several connections at once get one guess each per capped delay,
//! and the per-address limit on connections not logged in yet bounds how many that is.
//!
//! Registrations wait for the address's slot like logins do, and a registration refused because
//! the name is taken (an answer that tells an account exists, as a name check's can) counts in the
//! address table like a failed login (never in the account table: the name is not the caller's).
//! A registration that makes an account does not count: a class registering from one lab machine
//! or one NAT address is never slowed down, and the hard cap on registrations is the hourly quota
//! (`server::registration_quota`). A successful login from the address starts it afresh. An
//! address is an [`AddressKey`], as the server's [`AddressGrouping`] computes it.
//!
//! Pure: the caller passes the time and does the waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::address_key::{AddressGrouping, AddressKey};

/// Default: failed logins allowed without any delay (typing mistakes).
pub const DEFAULT_FREE_FAILURES: u32 = 3;
/// Default: the delay after the first failure beyond the free ones; it doubles per failure.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(500);
/// Default: the longest delay. It stays well below the client's 30 s wait for an answer.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures are forgotten once an account or address has had none for this long.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Accounts or addresses remembered at most (each table); the stalest are forgotten first, so a
/// flood of made-up names cannot grow the server's memory.
pub const MAX_TRACKED: usize = 10_000;

/// The throttle's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    pub free_failures: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            free_failures: DEFAULT_FREE_FAILURES,
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }
}

impl ThrottleConfig {
    /// The delay before the next attempt after `failures` recent failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let Some(beyond) = failures.checked_sub(self.free_failures) else {
            return Duration::ZERO;
        };
        let factor = 2u32.saturating_pow(beyond.min(30));
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    /// The earliest time the next attempt may be checked.
    next_slot: Instant,
    last_seen: Instant,
}

/// Failure counts for one kind of key (account names or addresses).
#[derive(Debug)]
struct Table<K> {
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            records: HashMap::new(),
        }
    }

    fn get(&mut self, key: &K, now: Instant) -> Option<&mut Record> {
        let stale = self
            .records
            .get(key)
            .is_some_and(|r| now.saturating_duration_since(r.last_seen) >= FORGET_AFTER);
        if stale {
            self.records.remove(key);
        }
        self.records.get_mut(key)
    }

    /// Books the next attempt: returns when it may be checked, and the recent failures.
    fn book(&mut self, key: &K, config: &ThrottleConfig, now: Instant) -> (Instant, u32) {
        let Some(record) = self.get(key, now) else {
            return (now, 0);
        };
        // Attempts are spaced by the delay, but never booked more than `max_delay` ahead: many
        // attempts at once must not push the owner's login into the far future (a lockout).
        let start = record.next_slot.max(now).min(now + config.max_delay);
        record.next_slot = start + config.delay(record.failures);
        record.last_seen = now;
        (start, record.failures)
    }

    fn failed(&mut self, key: &K, config: &ThrottleConfig, now: Instant) -> u32 {
        if self.get(key, now).is_none() {
            self.make_room(config, now);
            self.records.insert(
                key.clone(),
                Record {
                    failures: 0,
                    next_slot: now,
                    last_seen: now,
                },
            );
        }
        let record = self.records.get_mut(key).expect("just inserted");
        record.failures = record.failures.saturating_add(1);
        record.last_seen = now;
        record.next_slot = record.next_slot.max(now + config.delay(record.failures));
        record.failures
    }

    /// Forgets stale entries, then, if the table is still full, the half that matters least:
    /// those not delayed yet before those that are, the stalest first. So a flood of failures
    /// on made-up names cannot wipe out the count on a real account under attack.
    fn make_room(&mut self, config: &ThrottleConfig, now: Instant) {
        if self.records.len() < MAX_TRACKED {
            return;
        }
        self.records
            .retain(|_, r| now.saturating_duration_since(r.last_seen) < FORGET_AFTER);
        if self.records.len() >= MAX_TRACKED {
            let rank = |r: &Record| (config.delay(r.failures) > Duration::ZERO, r.last_seen);
            let mut ranks: Vec<_> = self.records.values().map(rank).collect();
            ranks.sort_unstable();
            let cutoff = ranks[ranks.len() / 2];
            self.records.retain(|_, r| rank(r) > cutoff);
        }
    }
}

/// Which table's slot holds a login back: the account's failures, or the address's (a tie goes
/// to the account, whose owner is the one to tell that someone guessed at it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayedBy {
    Account,
    Address,
}

/// The server's login throttle, shared by all connections.
#[derive(Debug)]
pub struct LoginThrottle {
    config: ThrottleConfig,
    /// What one address is.
    addresses: AddressGrouping,
    tables: Mutex<(Table<String>, Table<AddressKey>)>,
}

impl LoginThrottle {
    /// A throttle that counts addresses by the default grouping on this system's networks.
    pub fn new(config: ThrottleConfig) -> LoginThrottle {
        LoginThrottle::with_addresses(config, AddressGrouping::default())
    }

    /// A throttle that counts addresses as `addresses` says (the server's, shared by its limits).
    pub fn with_addresses(config: ThrottleConfig, addresses: AddressGrouping) -> LoginThrottle {
        LoginThrottle {
            config,
            addresses,
            tables: Mutex::new((Table::new(), Table::new())),
        }
    }

    /// Books an attempt to log into `account` from `ip`: returns when the password may be
    /// checked (now, unless there were recent failures on the account or from the address),
    /// the larger of the two failure counts, and which of the two sets the time.
    pub fn book(&self, account: &str, ip: IpAddr, now: Instant) -> (Instant, u32, DelayedBy) {
        let key = self.addresses.key(ip);
        let mut tables = self.lock();
        let (accounts, ips) = &mut *tables;
        let by_account = accounts.book(&account.to_ascii_lowercase(), &self.config, now);
        let by_ip = ips.book(&key, &self.config, now);
        let by = match by_account.0 >= by_ip.0 {
            true => DelayedBy::Account,
            false => DelayedBy::Address,
        };
        (by_account.0.max(by_ip.0), by_account.1.max(by_ip.1), by)
    }

    /// Records a failed attempt; returns the failure counts (account, address).
    pub fn failed(&self, account: &str, ip: IpAddr, now: Instant) -> (u32, u32) {
        let key = self.addresses.key(ip);
        let mut tables = self.lock();
        let (accounts, ips) = &mut *tables;
        (
            accounts.failed(&account.to_ascii_lowercase(), &self.config, now),
            ips.failed(&key, &self.config, now),
        )
    }

    /// Books a registration from `ip`: returns when it may be hashed (now, unless the address has
    /// failed logins or registrations recently), and the address's count.
    pub fn book_registration(&self, ip: IpAddr, now: Instant) -> (Instant, u32) {
        let key = self.addresses.key(ip);
        self.lock().1.book(&key, &self.config, now)
    }

    /// Records a registration (or a name check) from `ip` that told a name is taken; returns the
    /// address's count of failures and such refusals.
    pub fn registered(&self, ip: IpAddr, now: Instant) -> u32 {
        let key = self.addresses.key(ip);
        self.lock().1.failed(&key, &self.config, now)
    }

    /// Records a successful login: the account and the address start afresh.
    pub fn succeeded(&self, account: &str, ip: IpAddr) {
        let key = self.addresses.key(ip);
        let mut tables = self.lock();
        tables.0.records.remove(&account.to_ascii_lowercase());
        tables.1.records.remove(&key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Table<String>, Table<AddressKey>)> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            free_failures: 2,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_delay_doubles_after_the_free_failures_up_to_the_cap() {
        let delays: Vec<u64> = (0..8).map(|f| config().delay(f).as_secs()).collect();
        assert_eq!(delays, [0, 0, 1, 2, 4, 5, 5, 5]);
        assert_eq!(config().delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn failures_on_an_account_delay_it_from_any_address_until_a_success() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        let attacker: IpAddr = "10.0.0.66".parse().unwrap();
        let owner: IpAddr = "10.0.0.7".parse().unwrap();
        for _ in 0..2 {
            throttle.failed("Alice", attacker, t0);
        }
        // Two failures (the free ones): the next attempt on alice waits 1 s, whoever makes it.
        assert_eq!(
            throttle.book("alice", owner, t0),
            (t0 + Duration::from_secs(1), 2, DelayedBy::Account)
        );
        // A second attempt at once is spaced after the first one's slot.
        assert_eq!(
            throttle.book("alice", owner, t0).0,
            t0 + Duration::from_secs(2)
        );
        // Other accounts from the attacker's address are delayed too.
        let (slot, _, by) = throttle.book("bob", attacker, t0);
        assert!(slot > t0);
        assert_eq!(by, DelayedBy::Address);
        assert_eq!(throttle.book("bob", owner, t0), (t0, 0, DelayedBy::Account));
        throttle.succeeded("alice", owner);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            throttle.book("alice", owner, later),
            (later, 0, DelayedBy::Account)
        );
    }

    #[test]
    fn many_attempts_at_once_never_push_the_owner_past_the_longest_delay() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        for i in 0..4 {
            throttle.failed("alice", format!("10.0.0.{i}").parse().unwrap(), t0);
        }
        for i in 0..64 {
            throttle.book("alice", format!("10.0.1.{i}").parse().unwrap(), t0);
        }
        let owner: IpAddr = "10.0.0.7".parse().unwrap();
        let (slot, ..) = throttle.book("alice", owner, t0);
        assert!(slot <= t0 + config().max_delay, "{:?}", slot - t0);
    }

    #[test]
    fn a_flood_of_made_up_names_does_not_erase_a_real_accounts_failures() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        for i in 0..3 {
            throttle.failed("alice", format!("10.0.0.{i}").parse().unwrap(), t0);
        }
        let later = t0 + Duration::from_secs(1);
        for i in 0..(2 * MAX_TRACKED) {
            let ip = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            throttle.failed(&format!("made-up{i}"), ip, later);
        }
        let (slot, failures, _) = throttle.book("alice", "10.0.0.9".parse().unwrap(), later);
        assert_eq!(failures, 3);
        assert!(slot > later);
    }

    #[test]
    fn taken_names_delay_their_address_like_failures_and_never_the_owners_account() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        let flooder: IpAddr = "2001:db8:1:2::66".parse().unwrap();
        for i in 0..2 {
            assert_eq!(throttle.book_registration(flooder, t0), (t0, i));
            throttle.registered(flooder, t0);
        }
        // Past the free ones: the next registration from that /64 waits, from any of its hosts.
        let neighbour: IpAddr = "2001:db8:1:2::9".parse().unwrap();
        assert_eq!(
            throttle.book_registration(neighbour, t0),
            (t0 + Duration::from_secs(1), 2)
        );
        assert!(throttle.book("alice", neighbour, t0).0 > t0, "logins too");
        // Another /64, and the account from elsewhere, are not delayed at all.
        let elsewhere: IpAddr = "2001:db8:1:3::9".parse().unwrap();
        assert_eq!(
            throttle.book("alice", elsewhere, t0),
            (t0, 0, DelayedBy::Account)
        );
        assert_eq!(throttle.book_registration(elsewhere, t0), (t0, 0));
        // However many at once, never booked past the longest delay: no lockout.
        for _ in 0..64 {
            throttle.registered(flooder, t0);
            throttle.book_registration(flooder, t0);
        }
        assert!(throttle.book("alice", flooder, t0).0 <= t0 + config().max_delay);
        // A login that succeeds from the address starts it afresh.
        throttle.succeeded("alice", neighbour);
        assert_eq!(throttle.book_registration(flooder, t0), (t0, 0));
    }

    #[test]
    fn failures_are_forgotten_and_the_tables_stay_bounded() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.66".parse().unwrap();
        for _ in 0..5 {
            throttle.failed("alice", ip, t0);
        }
        let much_later = t0 + FORGET_AFTER;
        assert_eq!(
            throttle.book("alice", ip, much_later),
            (much_later, 0, DelayedBy::Account)
        );
        for i in 0..(MAX_TRACKED + 10) {
            throttle.failed(&format!("user{i}"), ip, t0);
        }
        assert!(throttle.lock().0.records.len() <= MAX_TRACKED);
    }
}
