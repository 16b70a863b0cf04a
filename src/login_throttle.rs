//! Login throttling: failed logins slow down further attempts on the same account and from the
//! same address, with a delay that doubles per failure up to a cap.
//!
//! **One clock per account.** The account's delay is shared by every connection: a check of the
//! account starts no earlier than the account's next allowed time, and each attempt booked moves
//! that time on by the delay (attempts still being checked count as failures to come, so that
//! many at once are spaced as one after another would be). An attempt whose time would come more
//! than `max_delay` from now is refused at once, told how long to wait ([`Full`]): a few may
//! wait, never a queue, so many connections get no more checks than one would, and a thousand
//! guesses cannot park anyone's login behind them.
//!
//! **No lockout.** An attempt from an address in good standing (fewer failures and attempts in
//! progress than the free ones) is never refused: it waits for the account's clock at most
//! `max_delay`. So the owner, logging in from their usual machine while guessers keep the
//! account's clock full, still gets in within `max_delay`. An address earns at most
//! `free_failures` such attempts before its count decays again.
//!
//! **Counts decay; a success does not reset the address.** Each table forgets one failure per
//! [`DECAY_STEP`]. A correct login clears the account's count (only the password's holder can
//! give it) but never the address's: logging into one's own account between guesses buys
//! nothing. Address attempts are spaced by the address's own delay as well, across accounts.
//!
//! Registrations wait for the address's slot like logins do, and a registration refused because
//! the name is taken (an answer that tells an account exists, as a name check's can) counts in the
//! address table like a failed login (never in the account table: the name is not the caller's).
//! A registration that makes an account does not count: a class registering from one lab machine
//! or one NAT address is never slowed down, and the hard cap on registrations is the hourly quota
//! (`server::registration_quota`). An address is an [`AddressKey`], as the server's
//! [`AddressGrouping`] computes it.
//!
//! The ceiling this gives (docs/security.md): per account, one check per `max_delay` once the
//! delay is at its cap (450 an hour at the defaults), plus, per address, its free attempts and
//! one more per [`DECAY_STEP`] (30 an hour); per address, one check per `max_delay` whatever the
//! accounts.
//!
//! Pure but for the clock the caller passes: the caller does the waiting.

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
/// One failure is forgotten per this long, on an account and from an address: 8 failures (the
/// default delay at its cap) are gone in 16 minutes, about when the whole count used to be.
pub const DECAY_STEP: Duration = Duration::from_secs(2 * 60);
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
    /// Recent failures: one is forgotten per [`DECAY_STEP`] since `decay_from`.
    failures: u32,
    /// Attempts booked and not settled yet (waiting for their time, or being checked).
    in_flight: u32,
    /// The earliest time the next attempt may be checked: the key's clock.
    next_slot: Instant,
    /// Where the current decay step started.
    decay_from: Instant,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            failures: 0,
            in_flight: 0,
            next_slot: now,
            decay_from: now,
        }
    }

    /// Forgets one failure per whole [`DECAY_STEP`] gone by.
    fn decay(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.decay_from);
        let steps = elapsed.as_nanos() / DECAY_STEP.as_nanos();
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_sub(steps);
        self.decay_from = match self.failures {
            // Nothing left to forget: the next failure starts a step of its own.
            0 => now,
            _ => self.decay_from + DECAY_STEP * steps,
        };
    }

    /// Counts a failure: the next attempt waits the delay from now.
    fn fail(&mut self, config: &ThrottleConfig, now: Instant) {
        self.decay(now);
        self.failures = self.failures.saturating_add(1);
        self.next_slot = self.next_slot.max(now + config.delay(self.failures));
    }

    /// Nothing to remember: no failures, nothing in flight, no wait ahead.
    fn idle(&self, now: Instant) -> bool {
        self.failures == 0 && self.in_flight == 0 && self.next_slot <= now
    }
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

    /// The key's record, decayed to `now`; `None` once there is nothing left to remember.
    fn get(&mut self, key: &K, now: Instant) -> Option<&mut Record> {
        let idle = match self.records.get_mut(key) {
            Some(record) => {
                record.decay(now);
                record.idle(now)
            }
            None => return None,
        };
        if idle {
            self.records.remove(key);
        }
        self.records.get_mut(key)
    }

    /// The key's record, made if there was none (making room for it first).
    fn entry(&mut self, key: &K, config: &ThrottleConfig, now: Instant) -> &mut Record {
        if self.get(key, now).is_none() {
            self.make_room(config, now);
        }
        self.records
            .entry(key.clone())
            .or_insert_with(|| Record::new(now))
    }

    /// When the key's next attempt may be checked, its recent failures, and its attempts in
    /// flight.
    fn peek(&mut self, key: &K, now: Instant) -> (Instant, u32, u32) {
        match self.get(key, now) {
            Some(r) => (r.next_slot.max(now), r.failures, r.in_flight),
            None => (now, 0, 0),
        }
    }

    /// Books a registration or name check: returns when it may go ahead, and the recent
    /// failures. Spaced by the delay, never booked more than `max_delay` ahead.
    fn book_capped(&mut self, key: &K, config: &ThrottleConfig, now: Instant) -> (Instant, u32) {
        let Some(record) = self.get(key, now) else {
            return (now, 0);
        };
        let start = record.next_slot.max(now).min(now + config.max_delay);
        record.next_slot = start + config.delay(record.failures);
        (start, record.failures)
    }

    /// Forgets idle entries, then, if the table is still full, the half that matters least:
    /// those neither delayed nor in flight before the others, the stalest first. So a flood of
    /// failures on made-up names cannot wipe out the count on a real account under attack.
    fn make_room(&mut self, config: &ThrottleConfig, now: Instant) {
        if self.records.len() < MAX_TRACKED {
            return;
        }
        self.records.retain(|_, r| {
            r.decay(now);
            !r.idle(now)
        });
        if self.records.len() >= MAX_TRACKED {
            let rank = |r: &Record| {
                let matters = config.delay(r.failures) > Duration::ZERO || r.in_flight > 0;
                (matters, r.decay_from)
            };
            let mut ranks: Vec<_> = self.records.values().map(rank).collect();
            ranks.sort_unstable();
            let cutoff = ranks[ranks.len() / 2];
            self.records.retain(|_, r| rank(r) > cutoff);
        }
    }
}

/// Which table's clock holds a login back: the account's, or the address's (a tie goes to the
/// account, whose owner is the one to tell that someone guessed at it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayedBy {
    Account,
    Address,
}

/// A login refused without a check: its time would come more than `max_delay` from now, as
/// other attempts (on the account, or from the address) hold the nearer ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// How long until the next free time; trying again then may be booked.
    pub wait: Duration,
    pub by: DelayedBy,
}

/// How a booked attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    /// Never checked (busy, shutting down, the connection gone): it counts as nothing.
    Unchecked,
}

/// A login attempt booked on its account's and address's clocks: check the password at `at`,
/// then settle it with [`Booked::failed`] or [`Booked::succeeded`]. Dropped unsettled, it was
/// never checked and counts as nothing.
#[derive(Debug)]
pub struct Booked<'a> {
    /// When the password may be checked.
    pub at: Instant,
    /// The larger of the account's and the address's recent failures.
    pub failures: u32,
    /// Which clock set `at`.
    pub by: DelayedBy,
    throttle: &'a LoginThrottle,
    account: String,
    address: AddressKey,
    settled: bool,
}

impl Booked<'_> {
    /// A wrong password (or an unknown user): counts on the account and the address; returns
    /// their counts.
    pub fn failed(mut self, now: Instant) -> (u32, u32) {
        self.settled = true;
        self.throttle
            .settle(&self.account, &self.address, Outcome::Failed, now)
    }

    /// The right password: the account starts afresh (only its holder could do this), the
    /// address keeps its count, which decays with time.
    pub fn succeeded(mut self, now: Instant) {
        self.settled = true;
        self.throttle
            .settle(&self.account, &self.address, Outcome::Succeeded, now);
    }
}

impl Drop for Booked<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.settle(
                &self.account,
                &self.address,
                Outcome::Unchecked,
                Instant::now(),
            );
        }
    }
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

    /// Books an attempt to log into `account` from `ip`: when the password may be checked (the
    /// later of the account's and the address's clocks), or [`Full`] when that is more than
    /// `max_delay` away. An address in good standing (fewer recent failures and attempts in
    /// flight than the free ones) is never refused: it waits at most `max_delay`, so that the
    /// owner gets in however many guessers hold the account's clock.
    ///
    /// # Errors
    /// [`Full`], with the time until the nearer clock frees up: nothing was booked.
    pub fn book(&self, account: &str, ip: IpAddr, now: Instant) -> Result<Booked<'_>, Full> {
        let account = account.to_ascii_lowercase();
        let address = self.addresses.key(ip);
        let config = &self.config;
        let mut tables = self.lock();
        let (accounts, addresses) = &mut *tables;
        let (account_slot, account_failures, _) = accounts.peek(&account, now);
        let (address_slot, address_failures, address_in_flight) = addresses.peek(&address, now);
        let by = match account_slot >= address_slot {
            true => DelayedBy::Account,
            false => DelayedBy::Address,
        };
        let due = account_slot.max(address_slot);
        let horizon = now + config.max_delay;
        let good_standing =
            address_failures.saturating_add(address_in_flight) < config.free_failures;
        let at = match good_standing {
            true => due.min(horizon),
            false if due > horizon => {
                return Err(Full {
                    wait: due - now,
                    by,
                })
            }
            false => due,
        };
        // The account's clock moves on as if this attempt fails: attempts in flight count, so
        // that many at once are spaced as one after another would be.
        let record = accounts.entry(&account, config, now);
        record.in_flight = record.in_flight.saturating_add(1);
        let expected = record.failures.saturating_add(record.in_flight);
        record.next_slot = record.next_slot.max(at + config.delay(expected));
        // The address's clock by its failures alone: many honest logins at once from one NAT
        // address are not slowed down; its attempts in flight only cost it its good standing.
        let record = addresses.entry(&address, config, now);
        record.in_flight = record.in_flight.saturating_add(1);
        record.next_slot = record.next_slot.max(at + config.delay(record.failures));
        drop(tables);
        Ok(Booked {
            at,
            failures: account_failures.max(address_failures),
            by,
            throttle: self,
            account,
            address,
            settled: false,
        })
    }

    fn settle(
        &self,
        account: &String,
        address: &AddressKey,
        outcome: Outcome,
        now: Instant,
    ) -> (u32, u32) {
        let config = &self.config;
        let mut tables = self.lock();
        let (accounts, addresses) = &mut *tables;
        let account = accounts.entry(account, config, now);
        account.in_flight = account.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Failed => account.fail(config, now),
            Outcome::Succeeded => account.failures = 0,
            Outcome::Unchecked => {}
        }
        let account_failures = account.failures;
        let address = addresses.entry(address, config, now);
        address.in_flight = address.in_flight.saturating_sub(1);
        if outcome == Outcome::Failed {
            address.fail(config, now);
        }
        (account_failures, address.failures)
    }

    /// Books a registration from `ip`: returns when it may be hashed (now, unless the address has
    /// failed logins or registrations recently), and the address's count.
    pub fn book_registration(&self, ip: IpAddr, now: Instant) -> (Instant, u32) {
        let key = self.addresses.key(ip);
        self.lock().1.book_capped(&key, &self.config, now)
    }

    /// Records a registration (or a name check) from `ip` that told a name is taken; returns the
    /// address's count of failures and such refusals.
    pub fn registered(&self, ip: IpAddr, now: Instant) -> u32 {
        let key = self.addresses.key(ip);
        let mut tables = self.lock();
        let record = tables.1.entry(&key, &self.config, now);
        record.fail(&self.config, now);
        record.failures
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Fails `n` attempts on `account` from `from`, one after another from `now`, each checked
    /// at its booked time; returns the time of the last check.
    fn fail(throttle: &LoginThrottle, account: &str, from: &str, n: u32, now: Instant) -> Instant {
        (0..n).fold(now, |now, _| {
            let booked = throttle.book(account, ip(from), now).unwrap();
            let at = booked.at;
            booked.failed(at);
            at
        })
    }

    #[test]
    fn the_delay_doubles_after_the_free_failures_up_to_the_cap() {
        let delays: Vec<u64> = (0..8).map(|f| config().delay(f).as_secs()).collect();
        assert_eq!(delays, [0, 0, 1, 2, 4, 5, 5, 5]);
        assert_eq!(config().delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn failures_on_an_account_delay_it_from_any_address_and_a_success_clears_only_the_account() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        fail(&throttle, "Alice", "10.0.0.66", 2, t0);
        // Two failures (the free ones): the next attempt on alice waits 1 s, whoever makes it.
        let owner = throttle.book("alice", ip("10.0.0.7"), t0).unwrap();
        assert_eq!(
            (owner.at, owner.failures, owner.by),
            (t0 + secs(1), 2, DelayedBy::Account)
        );
        // Other accounts from the attacker's address are delayed too.
        let other = throttle.book("bob", ip("10.0.0.66"), t0).unwrap();
        assert_eq!((other.at > t0, other.by), (true, DelayedBy::Address));
        drop(other);
        owner.succeeded(t0 + secs(1));
        // The owner's success clears the account, not the guesser's address: its next failure
        // (its third) delays its next attempt, whatever the account.
        let later = t0 + secs(10);
        assert_eq!(
            throttle.book("alice", ip("10.0.0.7"), later).unwrap().at,
            later
        );
        let last = fail(&throttle, "carol", "10.0.0.66", 1, later);
        let guess = throttle.book("dave", ip("10.0.0.66"), last).unwrap();
        assert_eq!(
            (guess.at, guess.failures, guess.by),
            (last + secs(2), 3, DelayedBy::Address)
        );
    }

    #[test]
    fn many_attempts_at_once_are_spaced_as_one_connection_would_be_and_the_rest_refused() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        // Eight at once from one address: the two free ones now, then the delays one after
        // another would get (1 s, then 2 s after that), then refused: the next, 4 s after that, is 7 s
        // away, past the 5 s cap.
        let outcomes: Vec<_> = (0..8)
            .map(|_| throttle.book("alice", ip("10.0.0.66"), t0))
            .collect();
        let starts: Vec<_> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok().map(|b| b.at - t0))
            .collect();
        assert_eq!(starts, [secs(0), secs(0), secs(1), secs(3)]);
        for refused in &outcomes[4..] {
            assert_eq!(
                refused.as_ref().map(|b| b.at).unwrap_err(),
                &Full {
                    wait: secs(7),
                    by: DelayedBy::Account
                }
            );
        }
        // From other addresses alike, once those have guessed their free ones.
        fail(&throttle, "bob", "10.0.0.67", 2, t0);
        assert!(throttle.book("alice", ip("10.0.0.67"), t0).is_err());
    }

    #[test]
    fn the_owner_in_good_standing_waits_at_most_the_longest_delay_while_guessers_are_refused() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        let last = fail(&throttle, "alice", "10.0.0.66", 6, t0);
        let waiting = throttle.book("alice", ip("10.0.0.66"), last).unwrap();
        assert_eq!(waiting.at, last + secs(5));
        // Guessers from 64 more addresses, each past its free failures: all refused at once.
        for i in 0..64 {
            let guesser = format!("10.0.1.{i}");
            fail(&throttle, &format!("nobody{i}"), &guesser, 2, last);
            assert!(throttle.book("alice", ip(&guesser), last).is_err());
        }
        // The owner from an address in good standing waits for the account's clock, capped.
        let owner = throttle.book("alice", ip("10.0.0.7"), last).unwrap();
        assert_eq!(owner.at, last + config().max_delay);
    }

    #[test]
    fn a_success_between_guesses_does_not_reset_the_address_and_counts_decay_with_time() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        let from = "10.0.0.66";
        fail(&throttle, "alice", from, 1, t0);
        throttle
            .book("mallory", ip(from), t0)
            .unwrap()
            .succeeded(t0);
        fail(&throttle, "bob", from, 1, t0);
        let third = throttle.book("carol", ip(from), t0).unwrap();
        assert_eq!((third.failures, third.by), (2, DelayedBy::Address));
        assert!(third.at > t0);
        drop(third);
        // One failure forgotten per step: after one step, one left, and no delay.
        let later = t0 + DECAY_STEP;
        let fourth = throttle.book("dave", ip(from), later).unwrap();
        assert_eq!((fourth.at, fourth.failures), (later, 1));
    }

    #[test]
    fn an_attempt_never_checked_counts_as_nothing() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        for _ in 0..8 {
            drop(throttle.book("alice", ip("10.0.0.66"), t0));
        }
        let next = throttle.book("alice", ip("10.0.0.66"), t0).unwrap();
        assert_eq!((next.at, next.failures), (t0, 0));
    }

    #[test]
    fn a_flood_of_made_up_names_does_not_erase_a_real_accounts_failures() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        for i in 0..3 {
            fail(&throttle, "alice", &format!("10.0.0.{i}"), 1, t0);
        }
        let later = t0 + Duration::from_secs(1);
        for i in 0..(2 * MAX_TRACKED) {
            let from = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            if let Ok(booked) = throttle.book(&format!("made-up{i}"), from, later) {
                booked.failed(later);
            }
        }
        let next = throttle.book("alice", ip("10.0.0.9"), later).unwrap();
        assert_eq!(next.failures, 3);
        assert!(next.at > later);
    }

    #[test]
    fn taken_names_delay_their_address_like_failures_and_never_the_owners_account() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        let flooder = ip("2001:db8:1:2::66");
        for i in 0..2 {
            assert_eq!(throttle.book_registration(flooder, t0), (t0, i));
            throttle.registered(flooder, t0);
        }
        // Past the free ones: the next registration from that address waits.
        assert_eq!(throttle.book_registration(flooder, t0), (t0 + secs(1), 2));
        assert!(
            throttle.book("alice", flooder, t0).unwrap().at > t0,
            "logins too"
        );
        // Another address, and the account from elsewhere, are not delayed at all.
        let elsewhere = ip("2001:db8:1:3::9");
        assert_eq!(throttle.book("bob", elsewhere, t0).unwrap().at, t0);
        assert_eq!(throttle.book_registration(elsewhere, t0), (t0, 0));
        // However many at once, never booked past the longest delay: no lockout.
        for _ in 0..64 {
            throttle.registered(flooder, t0);
            throttle.book_registration(flooder, t0);
        }
        assert!(throttle.book_registration(flooder, t0).0 <= t0 + config().max_delay);
        // A login that succeeds from the address does not start it afresh.
        let later = t0 + secs(60);
        throttle
            .book("alice", flooder, later)
            .unwrap()
            .succeeded(later);
        assert!(throttle.book_registration(flooder, later).0 > later);
    }

    #[test]
    fn failures_are_forgotten_and_the_tables_stay_bounded() {
        let throttle = LoginThrottle::new(config());
        let t0 = Instant::now();
        fail(&throttle, "alice", "10.0.0.66", 5, t0);
        let much_later = t0 + DECAY_STEP * 5;
        let next = throttle.book("alice", ip("10.0.0.66"), much_later).unwrap();
        assert_eq!((next.at, next.failures), (much_later, 0));
        drop(next);
        for i in 0..(MAX_TRACKED + 10) {
            throttle.registered(IpAddr::from([10, 2, (i >> 8) as u8, i as u8]), t0);
            throttle.book(&format!("user{i}"), ip("10.0.0.1"), t0).ok();
        }
        assert!(throttle.lock().0.records.len() <= MAX_TRACKED);
        assert!(throttle.lock().1.records.len() <= MAX_TRACKED);
    }
}
