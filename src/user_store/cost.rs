//! scrypt costs and hashes. Every hash is a PHC string, `$scrypt$ln=17,r=8,p=1$<salt>$<hash>`
//! (16-byte random salt, 32-byte output), so each carries its own cost: [`check_password`] takes
//! it from the string, so callers check it first ([`usable_cost`]).

use std::fmt;

use scrypt::password_hash::phc::{PasswordHash, SaltString};
use scrypt::password_hash::{CustomizedPasswordHasher, PasswordVerifier};
use scrypt::Scrypt;

/// Default scrypt cost: OWASP's recommendation (N = 2^17, r = 8, p = 1; 128 MiB per hash).
pub const DEFAULT_LOG_N: u8 = 17;
pub const DEFAULT_R: u32 = 8;
pub const DEFAULT_P: u32 = 1;

// The allowed costs, for new hashes (`--scrypt-*`) and stored ones. The upper bounds keep one
// verification within what a login may ask for: a stored hash beyond them is never verified, so
// no entry in a users file can make a login allocate more than MAX_HASH_MEMORY_BYTES. The lower
// bounds are scrypt's own; weak stored hashes are re-hashed at login rather than refused.
pub const MIN_LOG_N: u8 = 1;
/// 2^20: 1 GiB per hash at r = 8.
pub const MAX_LOG_N: u8 = 20;
pub const MIN_R: u32 = 1;
/// OWASP's settings all use 8.
pub const MAX_R: u32 = 32;
pub const MIN_P: u32 = 1;
/// Time grows linearly with p (OWASP's settings go up to 10).
pub const MAX_P: u32 = 16;
/// 128 · r · 2^ln bytes: 1 GiB (the default cost takes 128 MiB).
pub const MAX_HASH_MEMORY_BYTES: u64 = 1 << 30;

/// Length of a new hash's output, in bytes.
const HASH_LEN: usize = 32;

/// An scrypt cost: log2 N, r and p.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

/// Which bound of the allowed cost range a cost breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostOutOfRange {
    #[error("ln={0} is outside {MIN_LOG_N}..={MAX_LOG_N}")]
    LogN(u8),
    #[error("r={0} is outside {MIN_R}..={MAX_R}")]
    R(u32),
    #[error("p={0} is outside {MIN_P}..={MAX_P}")]
    P(u32),
    #[error(
        "ln={log_n} with r={r} needs {mib} MiB per hash (128 * r * 2^ln bytes), more than the {} MiB allowed",
        MAX_HASH_MEMORY_BYTES >> 20
    )]
    Memory { log_n: u8, r: u32, mib: u128 },
}

/// Why a cost cannot be used for new hashes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCost {
    #[error(transparent)]
    OutOfRange(#[from] CostOutOfRange),
    /// Within the range, but against scrypt's rule N < 2^(16 · r).
    #[error("{0} is not a valid scrypt cost (scrypt needs ln < 16 * r)")]
    NotScrypt(HashCost),
}

/// Why a stored hash is not an scrypt hash this store can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredHashError {
    #[error("is not a PHC string: {0}")]
    NotPhc(scrypt::password_hash::phc::Error),
    #[error("uses {0:?}, not scrypt")]
    NotScrypt(String),
    #[error("has bad scrypt parameters: {0}")]
    BadParams(scrypt::password_hash::Error),
    /// Parameters the scrypt crate reads, but against scrypt's rule N < 2^(16 · r).
    #[error("has bad scrypt parameters: {0} breaks scrypt's rule ln < 16 * r")]
    BreaksScryptRule(HashCost),
    #[error("lacks a salt or a hash")]
    LacksSaltOrHash,
}

/// Why a stored hash is never verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnusableHash {
    #[error(transparent)]
    Invalid(#[from] StoredHashError),
    #[error(transparent)]
    OutOfRange(#[from] CostOutOfRange),
}

/// A new hash could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hashing failed: {0}")]
pub struct HashingError(scrypt::password_hash::Error);

impl HashCost {
    pub fn of_params(params: &scrypt::Params) -> HashCost {
        HashCost {
            log_n: params.log_n(),
            r: params.r(),
            p: params.p(),
        }
    }

    /// Bytes of memory one hash at this cost takes: 128 · r · 2^ln (saturating).
    pub fn memory_bytes(&self) -> u128 {
        let block = 128 * u128::from(self.r); // at most 2^39
        if self.log_n >= 88 {
            u128::MAX
        } else {
            block << self.log_n
        }
    }

    /// Checks the cost against the allowed range; the error says which bound is broken.
    pub fn check_range(&self) -> Result<(), CostOutOfRange> {
        if !(MIN_LOG_N..=MAX_LOG_N).contains(&self.log_n) {
            return Err(CostOutOfRange::LogN(self.log_n));
        }
        if !(MIN_R..=MAX_R).contains(&self.r) {
            return Err(CostOutOfRange::R(self.r));
        }
        if !(MIN_P..=MAX_P).contains(&self.p) {
            return Err(CostOutOfRange::P(self.p));
        }
        if self.memory_bytes() > u128::from(MAX_HASH_MEMORY_BYTES) {
            return Err(CostOutOfRange::Memory {
                log_n: self.log_n,
                r: self.r,
                mib: self.memory_bytes() >> 20,
            });
        }
        Ok(())
    }

    /// Whether the cost keeps scrypt's rule N < 2^(16 · r) (RFC 7914). scrypt 0.12 stopped
    /// enforcing it; this store still does, so the costs it accepts, new and stored, are the ones
    /// it always accepted.
    fn keeps_scrypt_rule(&self) -> bool {
        u64::from(self.log_n) < 16 * u64::from(self.r)
    }

    /// Whether a hash at this cost is cheaper to attack than one at `target`: less memory
    /// (128 · r · 2^ln) or less work (2^ln · r · p). Comparing the products, not each parameter,
    /// keeps a re-hash from trading memory for parallelism (ln=18,p=1 is not weaker than ln=17,p=2).
    pub fn is_weaker_than(&self, target: &HashCost) -> bool {
        let work = |c: &HashCost| c.memory_bytes().saturating_mul(u128::from(c.p));
        self.memory_bytes() < target.memory_bytes() || work(self) < work(target)
    }
}

impl fmt::Display for HashCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ln={},r={},p={}", self.log_n, self.r, self.p)
    }
}

/// The scrypt parameters for new hashes at cost `log_n`, `r`, `p`, if that cost is within the
/// allowed range and valid for scrypt (scrypt needs ln < 16 · r).
pub fn scrypt_params(log_n: u8, r: u32, p: u32) -> Result<scrypt::Params, InvalidCost> {
    let cost = HashCost { log_n, r, p };
    cost.check_range()?;
    if !cost.keeps_scrypt_rule() {
        return Err(InvalidCost::NotScrypt(cost));
    }
    scrypt::Params::new(log_n, r, p).map_err(|_| InvalidCost::NotScrypt(cost))
}

/// Hashes `password` with a new random salt at `params`: the PHC string to store.
pub fn hash_password(password: &str, params: scrypt::Params) -> Result<String, HashingError> {
    let salt = scrypt::password_hash::generate_salt();
    Scrypt::default()
        .hash_password_with_params(password.as_bytes(), &salt, params)
        .map(|hash| hash.to_string())
        .map_err(HashingError)
}

/// Checks that a stored hash is an scrypt PHC string with parameters scrypt accepts, and returns
/// its cost. Computes nothing: the cost may still be out of range ([`HashCost::check_range`]).
pub fn stored_cost(phc: &str) -> Result<HashCost, StoredHashError> {
    let hash = PasswordHash::new(phc).map_err(StoredHashError::NotPhc)?;
    if hash.algorithm.as_str() != "scrypt" {
        return Err(StoredHashError::NotScrypt(
            hash.algorithm.as_str().to_string(),
        ));
    }
    let params = scrypt::Params::try_from(&hash).map_err(StoredHashError::BadParams)?;
    let cost = HashCost::of_params(&params);
    if !cost.keeps_scrypt_rule() {
        return Err(StoredHashError::BreaksScryptRule(cost));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(StoredHashError::LacksSaltOrHash);
    }
    Ok(cost)
}

/// The cost of a stored hash that may be verified: readable ([`stored_cost`]) and within the
/// allowed range ([`HashCost::check_range`]).
pub fn usable_cost(phc: &str) -> Result<HashCost, UnusableHash> {
    let cost = stored_cost(phc)?;
    cost.check_range()?;
    Ok(cost)
}

/// Verifies `password` against a PHC string; the cost parameters come from the string, so the
/// caller must have checked them ([`usable_cost`]).
pub fn check_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Scrypt::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// The hash verified when there is no real one to check (unknown user, stored hash out of
/// range), so that those logins take the time of a wrong password: at `cost`, the store's current
/// cost, with a random salt and an all-zero output, which no password matches. Accounts at an
/// older cost differ in time until their next login re-hashes them at the current one.
pub fn dummy_hash(cost: &HashCost) -> String {
    let salt = SaltString::generate();
    // HASH_LEN zero bytes in the PHC's unpadded base64: 4 characters per 3 bytes, rounded up.
    let zeros = "A".repeat((HASH_LEN * 4).div_ceil(3));
    format!("$scrypt${cost}${}${zeros}", &*salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(log_n: u8, r: u32, p: u32) -> HashCost {
        HashCost { log_n, r, p }
    }

    #[test]
    fn the_cost_range_has_inclusive_bounds_and_a_memory_bound() {
        for ok in [
            cost(1, 1, 1),
            cost(17, 8, 1),
            cost(20, 8, 1),
            cost(18, 32, 16),
        ] {
            assert_eq!(ok.check_range(), Ok(()), "{ok}");
        }
        for (bad, complaint) in [
            (cost(0, 8, 1), "ln=0"),
            (cost(21, 8, 1), "ln=21"),
            (cost(255, 32, 16), "ln=255"),
            (cost(17, 0, 1), "r=0"),
            (cost(17, 33, 1), "r=33"),
            (cost(17, 8, 0), "p=0"),
            (cost(17, 8, 17), "p=17"),
            (cost(20, 16, 1), "2048 MiB"),
            (cost(19, 32, 1), "2048 MiB"),
        ] {
            let why = bad.check_range().expect_err(&bad.to_string()).to_string();
            assert!(why.contains(complaint), "{bad}: {why}");
        }
        assert_eq!(cost(17, 8, 1).memory_bytes(), 128 << 20);
        assert_eq!(cost(200, 8, 1).memory_bytes(), u128::MAX);
    }

    #[test]
    fn the_range_messages_are_the_ones_administrators_read() {
        let message = |c: HashCost| c.check_range().unwrap_err().to_string();
        assert_eq!(message(cost(21, 8, 1)), "ln=21 is outside 1..=20");
        assert_eq!(message(cost(17, 33, 1)), "r=33 is outside 1..=32");
        assert_eq!(message(cost(17, 8, 17)), "p=17 is outside 1..=16");
        assert_eq!(
            message(cost(20, 16, 1)),
            "ln=20 with r=16 needs 2048 MiB per hash (128 * r * 2^ln bytes), more than the 1024 MiB allowed"
        );
        assert_eq!(
            scrypt_params(16, 1, 1).unwrap_err().to_string(),
            "ln=16,r=1,p=1 is not a valid scrypt cost (scrypt needs ln < 16 * r)"
        );
    }

    #[test]
    fn new_hash_costs_must_be_in_range_and_valid_for_scrypt() {
        assert!(scrypt_params(17, 8, 1).is_ok());
        assert!(scrypt_params(21, 8, 1)
            .unwrap_err()
            .to_string()
            .contains("ln=21"));
        assert!(scrypt_params(16, 1, 1)
            .unwrap_err()
            .to_string()
            .contains("16 * r"));
        assert!(scrypt_params(15, 1, 1).is_ok());
    }

    #[test]
    fn a_cost_is_weaker_if_it_needs_less_memory_or_less_work() {
        let current = cost(11, 8, 2);
        assert!(cost(10, 8, 2).is_weaker_than(&current));
        assert!(cost(11, 4, 2).is_weaker_than(&current), "less memory");
        assert!(cost(11, 8, 1).is_weaker_than(&current), "less work");
        assert!(cost(12, 8, 1).is_weaker_than(&cost(12, 8, 2)));
        assert!(!cost(11, 8, 2).is_weaker_than(&current));
        assert!(!cost(12, 16, 3).is_weaker_than(&current));
        // More memory, the same work: kept rather than traded for parallelism.
        assert!(!cost(12, 8, 1).is_weaker_than(&current));
    }

    #[test]
    fn a_new_hash_is_a_phc_string_at_its_cost_that_only_its_password_matches() {
        let phc = hash_password("correct horse", scrypt_params(4, 8, 1).unwrap()).unwrap();
        assert!(phc.starts_with("$scrypt$ln=4,r=8,p=1$"), "{phc}");
        let fields: Vec<&str> = phc.split('$').collect();
        // 16-byte salt and 32-byte output in unpadded base64.
        assert_eq!(
            (fields.len(), fields[3].len(), fields[4].len()),
            (5, 22, 43)
        );
        assert_eq!(stored_cost(&phc), Ok(cost(4, 8, 1)));
        assert!(check_password("correct horse", &phc));
        assert!(!check_password("wrong horse", &phc));
        let again = hash_password("correct horse", scrypt_params(4, 8, 1).unwrap()).unwrap();
        assert_ne!(phc, again, "a new salt for every hash");
    }

    /// Hashes written by scrypt 0.11 (`alice` in fixtures/users-ln10.json) and by passlib keep
    /// verifying: the same PHC layout, and the salt is the base64-decoded bytes, as before.
    #[test]
    fn hashes_from_earlier_versions_and_other_tools_verify() {
        let written_by_0_11 = "$scrypt$ln=10,r=8,p=1$l8Ayv2cCpyuzUGrBFrqMvQ$1Mwv91Pod0NISxnn0/G1VTjc4TbGnr8ZFSCo+C5C2is";
        assert_eq!(stored_cost(written_by_0_11), Ok(cost(10, 8, 1)));
        assert!(check_password("alice-password", written_by_0_11));
        assert!(!check_password("bob-password", written_by_0_11));
        let passlib = "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E";
        assert_eq!(stored_cost(passlib), Ok(cost(16, 8, 1)));
        assert!(check_password("password", passlib));
        assert!(!check_password("passwore", passlib));
    }

    #[test]
    fn stored_hashes_that_are_not_readable_scrypt_are_refused() {
        for (phc, complaint) in [
            ("plain", "is not a PHC string"),
            (
                "$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                "not scrypt",
            ),
            (
                "$scrypt$ln=4,r=8,p=1,x=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                "bad scrypt parameters",
            ),
            (
                "$scrypt$ln=16,r=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                "ln < 16 * r",
            ),
            ("$scrypt$ln=4,r=8,p=1", "lacks a salt or a hash"),
        ] {
            let why = stored_cost(phc).expect_err(phc).to_string();
            assert!(why.contains(complaint), "{phc}: {why}");
        }
    }

    #[test]
    fn the_dummy_hash_is_readable_at_its_cost_and_matches_no_password() {
        let dummy = dummy_hash(&cost(4, 8, 1));
        assert_eq!(usable_cost(&dummy), Ok(cost(4, 8, 1)));
        for password in ["", "not-a-password-of-anyone", "correct horse"] {
            assert!(!check_password(password, &dummy));
        }
    }
}
