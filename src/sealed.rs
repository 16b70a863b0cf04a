//! Sealing and opening direct-message datagrams, and nothing else: the session key pair, the
//! pairwise keys, the header, seal and open. Small and boring on purpose (WireGuard's rule): the
//! primitives are RustCrypto's (`x25519-dalek`, `hkdf` + `sha2`, `chacha20poly1305`), and every
//! choice is written down here and in docs/protocol.md.
//!
//! - Each client makes a fresh X25519 key pair per session ([`SessionKey`]) and announces the
//!   public half in `login`/`register`; the server passes it on in peer entries.
//! - Two sessions derive their pairwise keys ([`PairKeys`]): X25519 between their keys, through
//!   HKDF-SHA256 whose info binds both names and both public keys in a canonical order (sorted by
//!   public key), giving one ChaCha20-Poly1305 key per direction.
//! - A sealed datagram is an 18-byte [`Header`] (version, kind, the sender's [`KeyId`], a 64-bit
//!   counter) followed by the ciphertext and its 16-byte tag. The header is the AEAD's associated
//!   data, and the nonce is the counter, so nothing in the header can be changed and no nonce is
//!   ever used twice under one key (a sender never reuses a counter in a session).
//!
//! - Proof of possession ([`KeyChallenge`], [`KeyProof`]): the server's `hello` carries a fresh
//!   X25519 public key of its own, made for that connection alone; the client announces its
//!   session key with an HMAC-SHA256 over the server's key, its own key and its name, keyed by
//!   HKDF-SHA256 of X25519(session secret, server's key). Only the holder of the session secret
//!   can make it, so a key copied from the peer list cannot be announced by anyone else.
//!
//! This module never does I/O, never keeps a replay window (the inbox does: a counter is only
//! checked for freshness *after* [`PairKeys::open`] has authenticated it), and never logs a key.

use std::fmt;

use base64ct::{Base64, Encoding};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use x25519_dalek::ReusableSecret;

/// The first byte of every sealed datagram. A clear JSON datagram starts with `{` (0x7b), so the
/// two are told apart by their first byte.
pub const VERSION: u8 = 1;

/// Bytes of a [`KeyId`]: the first 8 bytes of SHA-256 of the sender's public key.
pub const KEY_ID_BYTES: usize = 8;

/// Bytes of the header: version (1), kind (1), key id (8), counter (8, big-endian).
pub const HEADER_BYTES: usize = 1 + 1 + KEY_ID_BYTES + 8;

/// Bytes of the Poly1305 tag after the ciphertext.
pub const TAG_BYTES: usize = 16;

/// What sealing adds to a plaintext: the header and the tag.
pub const OVERHEAD: usize = HEADER_BYTES + TAG_BYTES;

/// Bytes of an X25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;

/// HKDF's salt: names the protocol and its version, so these keys are good for nothing else.
const HKDF_SALT: &[u8] = b"p2pchat sealed direct messages v1";

/// Bytes of a [`KeyProof`]: an HMAC-SHA256 tag.
pub const KEY_PROOF_BYTES: usize = 32;

/// HKDF's salt for the proof of possession: other keys than the direct messages' from the same
/// secret, good for nothing else.
const PROOF_SALT: &[u8] = b"p2pchat session key proof v1";

/// HKDF's salt for the root of a pair's file-transfer keys (src/transfer/): other keys than the
/// direct messages' from the same secret and info, good for nothing else.
const TRANSFER_SALT: &[u8] = b"p2pchat file transfer v1";

/// What a sealed datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A direct message: the JSON of a `direct` datagram (`from`, `id`, `text`).
    Message = 1,
    /// An acknowledgement: the 8-byte big-endian id of the message received.
    Ack = 2,
    /// A file transfer's offer or answer (offer, accept, decline, cancel, resume): the JSON of a
    /// [`FileMessage`](crate::protocol::file::FileMessage), acknowledged like a message. A kind
    /// of its own, so a capture tells a file's negotiation from chat by this clear byte alone.
    File = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Message),
            2 => Some(Kind::Ack),
            3 => Some(Kind::File),
            _ => None,
        }
    }
}

/// An X25519 public key: a session's, as announced to the server and passed on in peer entries.
/// In JSON it is the standard base64 of its 32 bytes; anything else does not decode.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_BYTES]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_BYTES]) -> Self {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.0
    }

    /// The id that names this key in a datagram's header.
    pub fn key_id(&self) -> KeyId {
        let digest = Sha256::digest(self.0);
        let mut id = [0; KEY_ID_BYTES];
        id.copy_from_slice(&digest[..KEY_ID_BYTES]);
        KeyId(id)
    }

    /// The base64 form used in JSON.
    pub fn to_base64(&self) -> String {
        Base64::encode_string(&self.0)
    }

    /// Parses the base64 form; `None` unless it is exactly 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = Base64::decode_vec(text).ok()?;
        Some(PublicKey(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // The error never quotes the text: it is a key, not something to echo.
        PublicKey::from_base64(&text).ok_or_else(|| {
            serde::de::Error::custom("a public key is the base64 of exactly 32 bytes")
        })
    }
}

/// Names a session's public key in a datagram's header: the first 8 bytes of its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_BYTES]);

/// Lower-case hex, as in docs and `/stats` warnings.
impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The clear header in front of every sealed datagram (and its associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// The sender's session key.
    pub key_id: KeyId,
    /// The sender's counter for this pair of sessions: the nonce, and what the replay window
    /// checks once the datagram is authentic.
    pub counter: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0; HEADER_BYTES];
        bytes[0] = VERSION;
        bytes[1] = self.kind as u8;
        bytes[2..2 + KEY_ID_BYTES].copy_from_slice(&self.key_id.0);
        bytes[2 + KEY_ID_BYTES..].copy_from_slice(&self.counter.to_be_bytes());
        bytes
    }

    /// Reads the header of a sealed datagram, without any key: enough to find the sender and
    /// its counter. Nothing in it is to be believed before [`PairKeys::open`] succeeds.
    ///
    /// # Errors
    /// [`OpenError::Truncated`] when the datagram cannot hold a header and a tag;
    /// [`OpenError::UnknownVersion`] or [`OpenError::UnknownKind`] for a byte this version does
    /// not know.
    pub fn parse(datagram: &[u8]) -> Result<Header, OpenError> {
        if datagram.len() < OVERHEAD {
            return Err(OpenError::Truncated {
                size: datagram.len(),
            });
        }
        if datagram[0] != VERSION {
            return Err(OpenError::UnknownVersion(datagram[0]));
        }
        let kind = Kind::from_byte(datagram[1]).ok_or(OpenError::UnknownKind(datagram[1]))?;
        let mut key_id = [0; KEY_ID_BYTES];
        key_id.copy_from_slice(&datagram[2..2 + KEY_ID_BYTES]);
        let mut counter = [0; 8];
        counter.copy_from_slice(&datagram[2 + KEY_ID_BYTES..HEADER_BYTES]);
        Ok(Header {
            kind,
            key_id: KeyId(key_id),
            counter: u64::from_be_bytes(counter),
        })
    }
}

/// Why a datagram could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("{size} bytes: too short for a sealed datagram's header and tag ({OVERHEAD} bytes)")]
    Truncated { size: usize },
    #[error("sealed-datagram version {0} is not known (this client speaks {VERSION})")]
    UnknownVersion(u8),
    #[error("sealed-datagram kind {0} is not known")]
    UnknownKind(u8),
    /// The tag does not match: not sealed under the key its header names, or changed on the way.
    #[error("it does not decrypt under the sender's key: forged or corrupted")]
    Forged,
}

/// Why two sessions cannot have pairwise keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// The peer's public key is a low-order point: every secret would agree with it on the same
    /// shared value, which an eavesdropper knows too.
    #[error("the peer's public key is a low-order point and gives no shared secret")]
    NonContributory,
}

/// Why a login's proof of possession of its session key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// A key announced without a proof: a client older than proofs, or a copied key.
    #[error("a session key was announced without a proof of possession (update the client, or use --plaintext)")]
    Missing,
    /// The proof does not match the key, the name and this connection's challenge.
    #[error("the proof of possession does not match the announced session key")]
    Wrong,
    /// The announced key is a low-order point: no secret stands behind it.
    #[error("the announced session key is a low-order point")]
    NonContributory,
}

/// The server's side of the proof of possession, for one connection: a fresh X25519 key pair
/// whose public half goes out in `hello`. Fresh per connection, it is the challenge's nonce too: a
/// proof made for one connection is worth nothing on another. Never stored, never logged.
#[derive(Clone)]
pub struct KeyChallenge {
    secret: ReusableSecret,
    public: PublicKey,
}

impl KeyChallenge {
    /// A fresh challenge from the operating system's random source.
    pub fn generate() -> Self {
        let secret = ReusableSecret::random();
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        KeyChallenge { secret, public }
    }

    /// What `hello` announces.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Checks that whoever announced `key` for `name` holds its secret.
    ///
    /// # Errors
    /// [`ProofError::Missing`] without a proof, [`ProofError::NonContributory`] for a low-order
    /// key, [`ProofError::Wrong`] when the tag does not match (checked in constant time).
    pub fn check(
        &self,
        name: &str,
        key: &PublicKey,
        proof: Option<&KeyProof>,
    ) -> Result<(), ProofError> {
        let proof = proof.ok_or(ProofError::Missing)?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(key.0));
        if !shared.was_contributory() {
            return Err(ProofError::NonContributory);
        }
        proof_mac(shared.as_bytes(), &self.public, key, name)
            .verify_slice(&proof.0)
            .map_err(|_| ProofError::Wrong)
    }
}

/// Never prints the secret.
impl fmt::Debug for KeyChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyChallenge")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The HMAC of a proof: keyed by HKDF-SHA256 of the shared secret, over the server's challenge
/// key, the session key and the name (its length first, so no two inputs read alike).
fn proof_mac(
    shared: &[u8; 32],
    challenge: &PublicKey,
    key: &PublicKey,
    name: &str,
) -> Hmac<Sha256> {
    let mut mac_key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(PROOF_SALT), shared)
        .expand(b"p2pchat proof mac key", &mut mac_key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let mac = <Hmac<Sha256>>::new_from_slice(&mac_key).expect("HMAC takes a key of any length");
    mac_key.fill(0);
    mac.chain_update(challenge.0)
        .chain_update(key.0)
        .chain_update((name.len() as u32).to_be_bytes())
        .chain_update(name.as_bytes())
}

/// A proof that the announcer of a session key holds its secret (see [`KeyChallenge`]). In JSON
/// it is the standard base64 of its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyProof([u8; KEY_PROOF_BYTES]);

impl KeyProof {
    pub fn from_bytes(bytes: [u8; KEY_PROOF_BYTES]) -> Self {
        KeyProof(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_PROOF_BYTES] {
        &self.0
    }
}

impl fmt::Debug for KeyProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyProof({})", Base64::encode_string(&self.0))
    }
}

impl Serialize for KeyProof {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&Base64::encode_string(&self.0))
    }
}

impl<'de> Deserialize<'de> for KeyProof {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = Base64::decode_vec(&text)
            .ok()
            .and_then(|b| b.try_into().ok());
        bytes.map(KeyProof).ok_or_else(|| {
            serde::de::Error::custom("a key proof is the base64 of exactly 32 bytes")
        })
    }
}

/// This client's key pair for one session. Made fresh at every login and never stored, so a
/// session's direct messages cannot be opened with anything found later on disk.
pub struct SessionKey {
    secret: ReusableSecret,
    public: PublicKey,
}

impl SessionKey {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        let secret = ReusableSecret::random();
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        SessionKey { secret, public }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Proves to the server that announced `challenge` in its `hello` that this session holds
    /// its secret, for a login or registration as `my_name` (as sent).
    ///
    /// # Errors
    /// [`PairError::NonContributory`] for a low-order challenge key (a broken server).
    pub fn prove(&self, challenge: &PublicKey, my_name: &str) -> Result<KeyProof, PairError> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(challenge.0));
        if !shared.was_contributory() {
            return Err(PairError::NonContributory);
        }
        let tag = proof_mac(shared.as_bytes(), challenge, &self.public, my_name).finalize();
        let mut proof = [0u8; KEY_PROOF_BYTES];
        proof.copy_from_slice(&tag.into_bytes());
        Ok(KeyProof(proof))
    }

    /// The pairwise keys between this session (`my_name`) and a peer's (`peer_name`, `peer_key`).
    /// Both sides compute the same two keys, each using one to seal and the other to open.
    ///
    /// # Errors
    /// [`PairError::NonContributory`] for a low-order peer key.
    pub fn pair(
        &self,
        my_name: &str,
        peer_name: &str,
        peer_key: &PublicKey,
    ) -> Result<PairKeys, PairError> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer_key.0));
        if !shared.was_contributory() {
            return Err(PairError::NonContributory);
        }
        let me = (self.public.as_bytes(), my_name.as_bytes());
        let peer = (peer_key.as_bytes(), peer_name.as_bytes());
        // Canonical order: both sides build the same info, and know which half is whose.
        let (low, high, i_am_low) = if me <= peer {
            (me, peer, true)
        } else {
            (peer, me, false)
        };
        let mut info = b"p2pchat dm keys".to_vec();
        for (key, name) in [low, high] {
            info.extend_from_slice(&(name.len() as u32).to_be_bytes());
            info.extend_from_slice(name);
            info.extend_from_slice(key);
        }
        let mut okm = [0u8; 64];
        Hkdf::<Sha256>::new(Some(HKDF_SALT), shared.as_bytes())
            .expand(&info, &mut okm)
            .expect("64 bytes is a valid HKDF-SHA256 output length");
        let (low_to_high, high_to_low) = okm.split_at(32);
        let (seal, open) = if i_am_low {
            (low_to_high, high_to_low)
        } else {
            (high_to_low, low_to_high)
        };
        let mut transfer_root = [0u8; 32];
        Hkdf::<Sha256>::new(Some(TRANSFER_SALT), shared.as_bytes())
            .expand(&info, &mut transfer_root)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let keys = PairKeys {
            seal: ChaCha20Poly1305::new_from_slice(seal).expect("a 32-byte key"),
            open: ChaCha20Poly1305::new_from_slice(open).expect("a 32-byte key"),
            my_id: self.public.key_id(),
            transfer_root,
        };
        okm.fill(0);
        Ok(keys)
    }
}

/// Never prints the secret.
impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// One pair of sessions' keys: one to seal what this side sends, one to open what it receives.
#[derive(Clone)]
pub struct PairKeys {
    seal: ChaCha20Poly1305,
    open: ChaCha20Poly1305,
    my_id: KeyId,
    /// The same on both sides: the root of every transfer's key ([`PairKeys::transfer_key`]).
    transfer_root: [u8; 32],
}

impl PairKeys {
    /// The key of one file transfer between this pair of sessions, the same on both sides:
    /// HKDF-SHA256 of the pair's transfer root (its own salt) with the transfer's id, so each
    /// transfer has its own key and a key is good for that transfer alone.
    pub fn transfer_key(&self, id: &crate::transfer::TransferId) -> crate::transfer::TransferKey {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::from_prk(&self.transfer_root)
            .expect("a 32-byte PRK")
            .expand_multi_info(&[b"p2pchat transfer key", &id.0], &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        crate::transfer::TransferKey::from_bytes(key)
    }
}

/// Never prints a key.
impl fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairKeys")
            .field("my_id", &self.my_id)
            .finish_non_exhaustive()
    }
}

/// The nonce for a counter: four zero bytes and the counter little-endian (WireGuard's layout).
fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(bytes)
}

impl PairKeys {
    /// Seals `plaintext` as a datagram of `kind` with `counter`, which the caller must never use
    /// twice with these keys.
    pub fn seal(&self, kind: Kind, counter: u64, plaintext: &[u8]) -> Vec<u8> {
        let header = Header {
            kind,
            key_id: self.my_id,
            counter,
        }
        .encode();
        let ciphertext = self
            .seal
            .encrypt(
                &nonce(counter),
                Payload {
                    msg: plaintext,
                    aad: &header,
                },
            )
            .expect("a datagram's plaintext is far below ChaCha20-Poly1305's limit");
        let mut datagram = Vec::with_capacity(HEADER_BYTES + ciphertext.len());
        datagram.extend_from_slice(&header);
        datagram.extend_from_slice(&ciphertext);
        datagram
    }

    /// Opens a datagram whose header (`header`, from [`Header::parse`] of the same bytes) names
    /// the peer's key: its plaintext, if the tag matches header and ciphertext.
    ///
    /// # Errors
    /// [`OpenError::Forged`] when it does not authenticate.
    pub fn open(&self, header: &Header, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        if datagram.len() < OVERHEAD {
            return Err(OpenError::Truncated {
                size: datagram.len(),
            });
        }
        let (aad, ciphertext) = datagram.split_at(HEADER_BYTES);
        self.open
            .decrypt(
                &nonce(header.counter),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (SessionKey, SessionKey, PairKeys, PairKeys) {
        let (alice, bob) = (SessionKey::generate(), SessionKey::generate());
        let a = alice.pair("alice", "bob", &bob.public_key()).unwrap();
        let b = bob.pair("bob", "alice", &alice.public_key()).unwrap();
        (alice, bob, a, b)
    }

    fn open(keys: &PairKeys, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        keys.open(&Header::parse(datagram)?, datagram)
    }

    #[test]
    fn each_side_opens_what_the_other_sealed_and_the_header_reads_back() {
        let (alice, _, a, b) = pair();
        let sealed = a.seal(Kind::Message, 7, b"psst");
        assert_eq!(sealed.len(), 4 + OVERHEAD);
        assert_eq!(sealed[0], VERSION);
        let header = Header::parse(&sealed).unwrap();
        assert_eq!(
            header,
            Header {
                kind: Kind::Message,
                key_id: alice.public_key().key_id(),
                counter: 7
            }
        );
        assert_eq!(open(&b, &sealed).unwrap(), b"psst");
        let ack = b.seal(Kind::Ack, 1, &7u64.to_be_bytes());
        assert_eq!(open(&a, &ack).unwrap(), 7u64.to_be_bytes());
    }

    #[test]
    fn the_text_is_not_in_the_datagram() {
        let (_, _, a, _) = pair();
        let sealed = a.seal(Kind::Message, 1, b"the secret plan");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn a_direction_key_does_not_open_its_own_seal() {
        // alice's sealing key is not her opening key: a datagram reflected back to its sender
        // does not open.
        let (_, _, a, _) = pair();
        let sealed = a.seal(Kind::Message, 1, b"hi");
        assert_eq!(open(&a, &sealed), Err(OpenError::Forged));
    }

    #[test]
    fn every_changed_bit_is_a_forgery() {
        let (_, _, a, b) = pair();
        let sealed = a.seal(Kind::Message, 3, b"hello bob");
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut changed = sealed.clone();
                changed[i] ^= 1 << bit;
                let result = open(&b, &changed);
                assert!(result.is_err(), "byte {i} bit {bit} still opened");
                if i >= 2 {
                    // Version and kind bytes fail parsing instead (or name the other kind).
                    assert!(
                        matches!(result, Err(OpenError::Forged)),
                        "byte {i}: {result:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_message_relabelled_as_an_ack_does_not_open() {
        let (_, _, a, b) = pair();
        let mut sealed = a.seal(Kind::Message, 3, &9u64.to_be_bytes());
        sealed[1] = Kind::Ack as u8;
        assert_eq!(open(&b, &sealed), Err(OpenError::Forged));
    }

    #[test]
    fn a_third_session_cannot_seal_for_the_pair_nor_open_it() {
        let (alice, bob, a, b) = pair();
        let mallory = SessionKey::generate();
        // mallory, with her own key, seals in alice's name (alice's key id in the header).
        let m = mallory.pair("alice", "bob", &bob.public_key()).unwrap();
        let mut forged = m.seal(Kind::Message, 1, b"it is me");
        forged[2..2 + KEY_ID_BYTES].copy_from_slice(&alice.public_key().key_id().0);
        assert_eq!(open(&b, &forged), Err(OpenError::Forged));
        // And she cannot read alice's message to bob.
        let sealed = a.seal(Kind::Message, 1, b"secret");
        let m_as_bob = mallory.pair("bob", "alice", &alice.public_key()).unwrap();
        assert_eq!(open(&m_as_bob, &sealed), Err(OpenError::Forged));
        assert_eq!(open(&b, &sealed).unwrap(), b"secret");
    }

    #[test]
    fn keys_are_bound_to_both_names() {
        // The same two key pairs under other names give other keys: the server cannot take
        // alice's key and introduce it as carol's to make her messages read as carol's.
        let (alice, bob) = (SessionKey::generate(), SessionKey::generate());
        let a = alice.pair("alice", "bob", &bob.public_key()).unwrap();
        let b_thinks_carol = bob.pair("bob", "carol", &alice.public_key()).unwrap();
        let sealed = a.seal(Kind::Message, 1, b"hi");
        assert_eq!(open(&b_thinks_carol, &sealed), Err(OpenError::Forged));
    }

    #[test]
    fn a_new_session_does_not_open_the_old_ones_datagrams() {
        let (alice, bob, a, _) = pair();
        let old = a.seal(Kind::Message, 1, b"from the old session");
        let bob_again = SessionKey::generate();
        let b2 = bob_again.pair("bob", "alice", &alice.public_key()).unwrap();
        assert_eq!(open(&b2, &old), Err(OpenError::Forged));
        drop(bob);
    }

    #[test]
    fn short_garbage_and_unknown_bytes_are_told_apart() {
        let (_, _, _, b) = pair();
        assert_eq!(
            open(&b, &[VERSION; OVERHEAD - 1]),
            Err(OpenError::Truncated { size: OVERHEAD - 1 })
        );
        assert_eq!(open(&b, b""), Err(OpenError::Truncated { size: 0 }));
        let mut unknown = vec![0u8; 64];
        unknown[0] = 2;
        assert_eq!(open(&b, &unknown), Err(OpenError::UnknownVersion(2)));
        unknown[0] = VERSION;
        unknown[1] = 9;
        assert_eq!(open(&b, &unknown), Err(OpenError::UnknownKind(9)));
        unknown[1] = Kind::Message as u8;
        assert_eq!(open(&b, &unknown), Err(OpenError::Forged));
        let json = br#"{"type":"direct","from":"alice","id":1,"text":"hi"}"#;
        assert!(Header::parse(json).is_err());
    }

    #[test]
    fn a_low_order_public_key_is_refused() {
        let me = SessionKey::generate();
        for point in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert_eq!(
                me.pair("me", "eve", &PublicKey::from_bytes(point))
                    .unwrap_err(),
                PairError::NonContributory
            );
        }
    }

    #[test]
    fn a_public_key_is_32_bytes_of_base64_in_json() {
        let key = SessionKey::generate().public_key();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json.len(), 2 + 44);
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
        for bad in [
            "\"\"",
            "\"AAAA\"",
            "\"not base64 at all!\"",
            "7",
            &format!("\"{}\"", Base64::encode_string(&[0u8; 33])),
        ] {
            let err = serde_json::from_str::<PublicKey>(bad).unwrap_err();
            assert!(!err.to_string().contains("AAAA"), "{err}");
        }
    }

    #[test]
    fn a_proof_holds_for_its_key_name_and_challenge_only() {
        let (alice, mallory) = (SessionKey::generate(), SessionKey::generate());
        let challenge = KeyChallenge::generate();
        let key = alice.public_key();
        let proof = alice.prove(&challenge.public_key(), "alice").unwrap();
        assert_eq!(challenge.check("alice", &key, Some(&proof)), Ok(()));
        // Another name, another key, another connection's challenge, no proof: refused.
        assert_eq!(
            challenge.check("mallory", &key, Some(&proof)),
            Err(ProofError::Wrong)
        );
        let theirs = mallory.public_key();
        assert_eq!(
            challenge.check("alice", &theirs, Some(&proof)),
            Err(ProofError::Wrong)
        );
        assert_eq!(
            KeyChallenge::generate().check("alice", &key, Some(&proof)),
            Err(ProofError::Wrong)
        );
        assert_eq!(
            challenge.check("alice", &key, None),
            Err(ProofError::Missing)
        );
        // mallory, announcing alice's key, can only prove her own.
        let copied = mallory.prove(&challenge.public_key(), "mallory").unwrap();
        assert_eq!(
            challenge.check("mallory", &key, Some(&copied)),
            Err(ProofError::Wrong)
        );
        assert_eq!(
            challenge.check("alice", &PublicKey::from_bytes([0; 32]), Some(&proof)),
            Err(ProofError::NonContributory)
        );
        let json = serde_json::to_string(&proof).unwrap();
        assert_eq!(serde_json::from_str::<KeyProof>(&json).unwrap(), proof);
        assert!(serde_json::from_str::<KeyProof>("\"AAAA\"").is_err());
    }

    #[test]
    fn secrets_never_reach_debug_output() {
        let (alice, _, a, _) = pair();
        let shown = format!("{alice:?} {a:?}");
        assert!(
            shown.contains("SessionKey") && shown.contains("PairKeys"),
            "{shown}"
        );
        assert!(!shown.contains("secret:"), "{shown}");
    }
}
