//! Long-term identities, and nothing else: the account's Ed25519 key pair ([`IdentityKey`]),
//! the binding that ties one session's X25519 key to it ([`Binding`]), and the safety number two
//! people compare ([`SafetyNumber`]). Pure: no I/O, no clock, nothing logged; the file the key
//! lives in is the client's (`client/identity_file.rs`), the pins are `client/known_peers.rs`'.
//!
//! Why: the server passes each peer's session key on, and a server that announced a key of its
//! own for bob could read and forge what alice seals "to bob". With an identity, bob's client
//! signs its session key; alice's client checks the signature against the identity it pinned for
//! bob on first contact, and a server cannot sign a key it invented with bob's identity.
//!
//! - The binding is an Ed25519 signature (RFC 8032, checked with `verify_strict`) over
//!   [`BINDING_LABEL`], the username (lower-cased, its length first) and the session's X25519
//!   public key. The label keeps the signature good for nothing else; the name stops the server
//!   passing alice's entry off as bob's; the session key is what is vouched for. A binding the
//!   server replays from an ended session vouches for that session's key, whose secret was never
//!   written anywhere and is gone: what is sealed to it can be opened by no one (and a client
//!   that saw the session end refuses its key, `client/pairs.rs`).
//! - The safety number is Signal's ("numeric fingerprint", version 0): per side, SHA-512 iterated
//!   [`FINGERPRINT_ITERATIONS`] times over the identity key and the name, its first 30 bytes read
//!   as six 5-byte big-endian numbers, each mod 100000 → 30 digits; the two sides' digits in
//!   ascending order, so both compute the same 60 digits, shown as 12 groups of 5.

use std::fmt;

use base64ct::{Base64, Encoding};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256, Sha512};

use crate::sealed::PublicKey;

/// Bytes of an Ed25519 public key, and of the seed its secret is made from.
pub const IDENTITY_KEY_BYTES: usize = 32;

/// Bytes of a binding: an Ed25519 signature.
pub const BINDING_BYTES: usize = 64;

/// What a binding signs first: names the protocol, the purpose and its version.
pub const BINDING_LABEL: &[u8] = b"p2pchat identity binds session key v1";

/// Signal's iteration count for a safety number's fingerprint: slow enough that finding another
/// key with the same 30 digits costs ~2^99 × 5200 hashes, fast enough (~1 ms) to show at once.
pub const FINGERPRINT_ITERATIONS: usize = 5200;

/// The fingerprint format's version, hashed first (Signal's version 0).
const FINGERPRINT_VERSION: u16 = 0;

/// Digits of one side's half of a safety number.
const HALF_DIGITS: usize = 30;

/// An account's long-term identity: an Ed25519 key pair. Never printed, never sent.
#[derive(Clone)]
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    /// A new identity from the operating system's random source.
    ///
    /// # Errors
    /// The random source failed.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; IDENTITY_KEY_BYTES];
        getrandom::fill(&mut seed)?;
        let key = IdentityKey::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// The identity whose secret is made from `seed` (as kept in the identity file).
    pub fn from_seed(seed: &[u8; IDENTITY_KEY_BYTES]) -> Self {
        IdentityKey(SigningKey::from_bytes(seed))
    }

    /// The seed, for the identity file alone.
    pub fn seed(&self) -> &[u8; IDENTITY_KEY_BYTES] {
        self.0.as_bytes()
    }

    pub fn public(&self) -> IdentityPublic {
        IdentityPublic(self.0.verifying_key().to_bytes())
    }

    /// Vouches that `session` is the session key of `username` holding this identity.
    pub fn bind(&self, username: &str, session: &PublicKey) -> Binding {
        Binding(self.0.sign(&binding_message(username, session)).to_bytes())
    }
}

/// Never prints the secret.
impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// What a binding signs: the label, the name (lower-cased: names are one account whatever their
/// case, and the server spells it its way), its length first so no two inputs read alike, and the
/// session key.
fn binding_message(username: &str, session: &PublicKey) -> Vec<u8> {
    let name = username.to_ascii_lowercase();
    let mut message = Vec::with_capacity(BINDING_LABEL.len() + 4 + name.len() + 32);
    message.extend_from_slice(BINDING_LABEL);
    message.extend_from_slice(&(name.len() as u32).to_be_bytes());
    message.extend_from_slice(name.as_bytes());
    message.extend_from_slice(session.as_bytes());
    message
}

/// An identity's public half, as announced and pinned. In JSON and in files it is the standard
/// base64 of its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityPublic([u8; IDENTITY_KEY_BYTES]);

impl IdentityPublic {
    pub fn from_bytes(bytes: [u8; IDENTITY_KEY_BYTES]) -> Self {
        IdentityPublic(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; IDENTITY_KEY_BYTES] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        Base64::encode_string(&self.0)
    }

    /// Parses the base64 form; `None` unless it is exactly 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = Base64::decode_vec(text).ok()?;
        Some(IdentityPublic(bytes.try_into().ok()?))
    }

    /// A short form for warnings: `SHA256:` and the first 8 bytes of its SHA-256, in hex.
    pub fn short(&self) -> String {
        let digest = Sha256::digest(self.0);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("SHA256:{hex}")
    }
}

impl fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublic({})", self.to_base64())
    }
}

impl Serialize for IdentityPublic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for IdentityPublic {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IdentityPublic::from_base64(&text).ok_or_else(|| {
            serde::de::Error::custom("an identity key is the base64 of exactly 32 bytes")
        })
    }
}

/// A session key's binding to an identity: an Ed25519 signature. In JSON the standard base64 of
/// its 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Binding([u8; BINDING_BYTES]);

impl Binding {
    pub fn from_bytes(bytes: [u8; BINDING_BYTES]) -> Self {
        Binding(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; BINDING_BYTES] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        Base64::encode_string(&self.0)
    }

    /// Parses the base64 form; `None` unless it is exactly 64 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = Base64::decode_vec(text).ok()?;
        Some(Binding(bytes.try_into().ok()?))
    }

    /// Checks that `identity` vouched for `session` as `username`'s session key.
    ///
    /// # Errors
    /// [`BindingError::BadIdentity`] for bytes that are no Ed25519 public key, or a weak
    /// (small-order) one that "verifies" forged signatures; [`BindingError::Forged`] when the
    /// signature does not verify (strictly) for this identity, name and session key.
    pub fn verify(
        &self,
        identity: &IdentityPublic,
        username: &str,
        session: &PublicKey,
    ) -> Result<(), BindingError> {
        let key = VerifyingKey::from_bytes(&identity.0).map_err(|_| BindingError::BadIdentity)?;
        if key.is_weak() {
            return Err(BindingError::BadIdentity);
        }
        key.verify_strict(
            &binding_message(username, session),
            &Signature::from_bytes(&self.0),
        )
        .map_err(|_| BindingError::Forged)
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Binding({})", self.to_base64())
    }
}

impl Serialize for Binding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Binding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Binding::from_base64(&text).ok_or_else(|| {
            serde::de::Error::custom("an identity binding is the base64 of exactly 64 bytes")
        })
    }
}

/// Why a binding does not vouch for a session key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// Announced without an identity key or without a binding (only one of the two).
    #[error("an identity key and its binding come together; one was missing")]
    Incomplete,
    #[error("the identity key is not a usable Ed25519 public key")]
    BadIdentity,
    #[error("the identity binding does not match the identity key, the name and the session key")]
    Forged,
}

/// Checks an announced (identity, binding) pair for `username`'s `session` key, as the server
/// does at login and every client does for every peer entry. `Ok(None)` when neither was
/// announced (an older client).
///
/// # Errors
/// One without the other, or a binding that does not verify ([`Binding::verify`]).
pub fn check_announced(
    identity: Option<&IdentityPublic>,
    binding: Option<&Binding>,
    username: &str,
    session: Option<&PublicKey>,
) -> Result<Option<IdentityPublic>, BindingError> {
    match (identity, binding, session) {
        (None, None, _) => Ok(None),
        (Some(identity), Some(binding), Some(session)) => {
            binding.verify(identity, username, session)?;
            Ok(Some(*identity))
        }
        _ => Err(BindingError::Incomplete),
    }
}

/// The number two people compare to know they hold each other's identity: 60 digits.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber(String);

impl SafetyNumber {
    /// Both sides' safety number: the same whichever side computes it.
    pub fn new(
        my_name: &str,
        my_key: &IdentityPublic,
        their_name: &str,
        their_key: &IdentityPublic,
    ) -> SafetyNumber {
        let mine = half(my_name, my_key);
        let theirs = half(their_name, their_key);
        let (first, second) = if mine <= theirs {
            (mine, theirs)
        } else {
            (theirs, mine)
        };
        SafetyNumber(first + &second)
    }

    /// The 60 digits without spaces.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

/// 12 groups of 5 digits, separated by spaces.
impl fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<&str> = (0..self.0.len())
            .step_by(5)
            .map(|i| &self.0[i..i + 5])
            .collect();
        f.write_str(&groups.join(" "))
    }
}

impl fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyNumber({self})")
    }
}

/// One side's 30 digits: SHA-512 over the version, the key and the lower-cased name, then again
/// over the last hash and the key, [`FINGERPRINT_ITERATIONS`] times in all.
fn half(name: &str, key: &IdentityPublic) -> String {
    let mut hash = Sha512::new()
        .chain_update(FINGERPRINT_VERSION.to_be_bytes())
        .chain_update(key.0)
        .chain_update(name.to_ascii_lowercase().as_bytes())
        .finalize();
    for _ in 0..FINGERPRINT_ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(key.0)
            .finalize();
    }
    let mut digits = String::with_capacity(HALF_DIGITS);
    for chunk in hash[..HALF_DIGITS].chunks(5) {
        let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        digits.push_str(&format!("{:05}", value % 100_000));
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealed::SessionKey;

    fn identity(seed: u8) -> IdentityKey {
        IdentityKey::from_seed(&[seed; IDENTITY_KEY_BYTES])
    }

    #[test]
    fn a_binding_vouches_for_its_name_and_session_key_only() {
        let bob = identity(1);
        let session = SessionKey::generate().public_key();
        let binding = bob.bind("bob", &session);
        assert_eq!(binding.verify(&bob.public(), "bob", &session), Ok(()));
        // The server spells the name its way: case does not matter.
        assert_eq!(binding.verify(&bob.public(), "Bob", &session), Ok(()));
        // Another session key (the server's own), another name, another identity: refused.
        let other = SessionKey::generate().public_key();
        assert_eq!(
            binding.verify(&bob.public(), "bob", &other),
            Err(BindingError::Forged)
        );
        assert_eq!(
            binding.verify(&bob.public(), "alice", &session),
            Err(BindingError::Forged)
        );
        assert_eq!(
            binding.verify(&identity(2).public(), "bob", &session),
            Err(BindingError::Forged)
        );
        // Any changed bit of the signature.
        let mut bytes = *binding.as_bytes();
        bytes[10] ^= 1;
        assert_eq!(
            Binding::from_bytes(bytes).verify(&bob.public(), "bob", &session),
            Err(BindingError::Forged)
        );
    }

    #[test]
    fn a_weak_or_invalid_identity_key_is_refused() {
        let session = SessionKey::generate().public_key();
        let binding = identity(1).bind("bob", &session);
        // The identity point (a small-order point): any "signature" might pass a lax check.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            binding.verify(&IdentityPublic::from_bytes(identity_point), "bob", &session),
            Err(BindingError::BadIdentity)
        );
    }

    #[test]
    fn one_of_identity_and_binding_without_the_other_is_incomplete() {
        let bob = identity(1);
        let session = SessionKey::generate().public_key();
        let binding = bob.bind("bob", &session);
        assert_eq!(check_announced(None, None, "bob", Some(&session)), Ok(None));
        assert_eq!(
            check_announced(Some(&bob.public()), None, "bob", Some(&session)),
            Err(BindingError::Incomplete)
        );
        assert_eq!(
            check_announced(None, Some(&binding), "bob", Some(&session)),
            Err(BindingError::Incomplete)
        );
        assert_eq!(
            check_announced(Some(&bob.public()), Some(&binding), "bob", None),
            Err(BindingError::Incomplete)
        );
        assert_eq!(
            check_announced(Some(&bob.public()), Some(&binding), "bob", Some(&session)),
            Ok(Some(bob.public()))
        );
    }

    #[test]
    fn the_safety_number_is_the_same_on_both_sides_and_changes_with_either_key() {
        let (alice, bob) = (identity(1).public(), identity(2).public());
        let number = SafetyNumber::new("alice", &alice, "bob", &bob);
        assert_eq!(number, SafetyNumber::new("bob", &bob, "alice", &alice));
        assert_eq!(number.digits().len(), 60);
        assert!(number.digits().bytes().all(|b| b.is_ascii_digit()));
        let shown = number.to_string();
        assert_eq!(shown.split(' ').count(), 12);
        assert!(shown.split(' ').all(|group| group.len() == 5));
        let new_bob = identity(3).public();
        let new_alice = identity(4).public();
        assert_ne!(number, SafetyNumber::new("alice", &alice, "bob", &new_bob));
        assert_ne!(number, SafetyNumber::new("alice", &new_alice, "bob", &bob));
        // The name counts too, whatever its case.
        assert_ne!(number, SafetyNumber::new("alice", &alice, "carol", &bob));
        assert_eq!(number, SafetyNumber::new("Alice", &alice, "BOB", &bob));
    }

    #[test]
    fn the_safety_number_is_signals_computation() {
        // Written out by hand from the scheme in docs/protocol.md, independently of `half`.
        let key = identity(7).public();
        let mut hash: Vec<u8> = [&[0u8, 0][..], key.as_bytes(), b"bob"].concat();
        hash = Sha512::digest(&hash).to_vec();
        for _ in 0..5200 {
            hash = Sha512::digest([&hash[..], key.as_bytes()].concat()).to_vec();
        }
        let expected: String = (0..6)
            .map(|i| {
                let mut value = 0u64;
                for b in &hash[i * 5..i * 5 + 5] {
                    value = value * 256 + u64::from(*b);
                }
                format!("{:05}", value % 100_000)
            })
            .collect();
        assert_eq!(half("bob", &key), expected);
    }

    #[test]
    fn keys_and_bindings_round_trip_through_base64_and_refuse_other_lengths() {
        let bob = identity(1);
        let public = bob.public();
        assert_eq!(
            IdentityPublic::from_base64(&public.to_base64()),
            Some(public)
        );
        assert_eq!(IdentityPublic::from_base64("AAAA"), None);
        let binding = bob.bind("bob", &SessionKey::generate().public_key());
        assert_eq!(Binding::from_base64(&binding.to_base64()), Some(binding));
        assert_eq!(Binding::from_base64(&public.to_base64()), None);
        assert_eq!(
            IdentityKey::from_seed(bob.seed()).public(),
            public,
            "the seed is the whole secret"
        );
        assert!(!format!("{bob:?}").contains(&Base64::encode_string(bob.seed())));
    }
}
