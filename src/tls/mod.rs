//! TLS between client and server, trusted the way SSH trusts hosts: the server's identity (a key
//! and a self-signed certificate, made on first start and kept in two PEM files), its
//! [`Fingerprint`] (SSH's format: `SHA256:` and the unpadded base64 of the SHA-256 of the DER
//! certificate), the server's rustls configuration, and the client's, whose verifier accepts a
//! certificate by its fingerprint alone.
//!
//! TLS 1.3 only, with rustls' `ring` provider. There is no certificate authority: a client trusts
//! a server because it has seen (and pinned) its fingerprint before, or was told it (`--trust`);
//! which of the two is [`crate::client::secure`]'s business. This module never decides whom to
//! trust, never opens a socket, and reads or writes no file but the server's two identity files.

mod handshake;
mod records;

pub use handshake::accept;
pub use records::{RecordReader, RecordWriter};

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use base64ct::{Base64Unpadded, Encoding};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The key file's name beside the users file, when `--tls-key` does not name one.
pub const DEFAULT_KEY_FILE: &str = "tls-key.pem";

/// The certificate file's name beside the users file, when `--tls-cert` does not name one.
pub const DEFAULT_CERT_FILE: &str = "tls-cert.pem";

/// The name in the certificate and in the client's SNI. Nothing checks it: a server is known by
/// its fingerprint, not by a name a certificate authority vouched for.
pub const SERVER_NAME: &str = "p2pchat";

/// The first byte of every TLS record that starts a handshake (content type 22). A TLS client
/// always sends one first; a plaintext p2pchat client sends nothing before the server's `hello`.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Written before the base64 of a fingerprint, as SSH writes it.
const FINGERPRINT_PREFIX: &str = "SHA256:";

/// The SHA-256 of a server's DER certificate, shown as `SHA256:<base64 without padding>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_certificate(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{FINGERPRINT_PREFIX}{}",
            Base64Unpadded::encode_string(&self.0)
        )
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text that is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a fingerprint: expected SHA256: and 43 base64 characters, as the server prints it")]
pub struct NotAFingerprint(String);

impl FromStr for Fingerprint {
    type Err = NotAFingerprint;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wrong = || NotAFingerprint(text.to_string());
        let encoded = text.strip_prefix(FINGERPRINT_PREFIX).ok_or_else(wrong)?;
        // SSH prints no padding; accept it anyway, for fingerprints copied from other tools.
        let mut bytes = [0u8; 32];
        let decoded = Base64Unpadded::decode(encoded.trim_end_matches('='), &mut bytes)
            .map_err(|_| wrong())?;
        if decoded.len() != bytes.len() {
            return Err(wrong());
        }
        Ok(Fingerprint(bytes))
    }
}

/// Why the server's identity could not be loaded or made. Each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create {}: {source}", .path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("the TLS key file {} can be read by others (mode {mode:04o}); run: chmod 600 {}", .path.display(), .path.display())]
    KeyReadableByOthers { path: PathBuf, mode: u32 },
    #[error("{} holds no PEM {what}", .path.display())]
    NotPem { path: PathBuf, what: &'static str },
    #[error("{} exists but {} does not; give both (--tls-key, --tls-cert) or move the one away to make a new pair", .present.display(), .missing.display())]
    HalfAPair { present: PathBuf, missing: PathBuf },
    #[error("cannot make a TLS key and certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the TLS key does not fit the certificate, or cannot be used: {0}")]
    Unusable(#[from] rustls::Error),
}

/// The server's identity: its certificate, its key, and the fingerprint clients pin.
pub struct ServerIdentity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    fingerprint: Fingerprint,
    created: bool,
}

/// Where the key and certificate live when no flag names them: beside the users file.
pub fn default_paths(users: &Path) -> (PathBuf, PathBuf) {
    let folder = users.parent().unwrap_or(Path::new(""));
    (
        folder.join(DEFAULT_KEY_FILE),
        folder.join(DEFAULT_CERT_FILE),
    )
}

impl ServerIdentity {
    /// Loads the key and certificate, or makes both when neither file exists. The key file is
    /// created with mode 0600 (never over an existing file) and refused when it can be read by
    /// its group or others.
    ///
    /// # Errors
    /// A file that cannot be read or created, a key readable by others, a file that is not PEM,
    /// one of the two files without the other, a key that does not fit the certificate.
    pub fn load_or_create(key_path: &Path, cert_path: &Path) -> Result<Self, IdentityError> {
        let identity = match (key_path.exists(), cert_path.exists()) {
            (false, false) => Self::create(key_path, cert_path)?,
            (true, true) => Self::load(key_path, cert_path)?,
            (true, false) => {
                return Err(IdentityError::HalfAPair {
                    present: key_path.into(),
                    missing: cert_path.into(),
                })
            }
            (false, true) => {
                return Err(IdentityError::HalfAPair {
                    present: cert_path.into(),
                    missing: key_path.into(),
                })
            }
        };
        // Checks now, at start, that the key fits the certificate.
        identity.server_config()?;
        Ok(identity)
    }

    fn load(key_path: &Path, cert_path: &Path) -> Result<Self, IdentityError> {
        let read_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Read { path, source }
        };
        let mut file = File::open(key_path).map_err(read_error(key_path))?;
        let mode = file.metadata().map_err(read_error(key_path))?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::KeyReadableByOthers {
                path: key_path.into(),
                mode,
            });
        }
        let mut key_pem = Vec::new();
        file.read_to_end(&mut key_pem)
            .map_err(read_error(key_path))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| IdentityError::NotPem {
            path: key_path.into(),
            what: "private key",
        })?;
        let cert_pem = fs::read(cert_path).map_err(read_error(cert_path))?;
        let cert =
            CertificateDer::from_pem_slice(&cert_pem).map_err(|_| IdentityError::NotPem {
                path: cert_path.into(),
                what: "certificate",
            })?;
        Ok(ServerIdentity {
            fingerprint: Fingerprint::of_certificate(&cert),
            cert,
            key,
            created: false,
        })
    }

    fn create(key_path: &Path, cert_path: &Path) -> Result<Self, IdentityError> {
        let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
        let key_pem = made.signing_key.serialize_pem();
        write_new(key_path, key_pem.as_bytes(), 0o600)?;
        if let Err(e) = write_new(cert_path, made.cert.pem().as_bytes(), 0o644) {
            // Half a pair would refuse the next start: take the key back.
            let _ = fs::remove_file(key_path);
            return Err(e);
        }
        let cert = made.cert.der().clone();
        Ok(ServerIdentity {
            fingerprint: Fingerprint::of_certificate(&cert),
            cert,
            key: PrivateKeyDer::try_from(made.signing_key.serialize_der())
                .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?,
            created: true,
        })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Whether this start made the key and certificate (rather than loading them).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The server side of TLS with this identity: TLS 1.3 only, no client certificates, no
    /// session tickets and no session cache (a chat connection lives long and is made rarely;
    /// resumption would only add state).
    ///
    /// rustls gives every configuration a cache of 256 sessions for stateful resumption
    /// (~25 KB, measured with heaptrack); with no ticket ever sent no session can be resumed
    /// from it, so it is replaced by the storage that keeps nothing.
    ///
    /// # Errors
    /// The key does not fit the certificate, or its kind is not supported.
    pub fn server_config(&self) -> Result<ServerTls, IdentityError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())?;
        config.send_tls13_tickets = 0;
        // The record layer after the handshake is this crate's ([`records`]), with rustls's keys.
        config.enable_secret_extraction = true;
        // The server's order (AES-256-GCM first, as ring lists it), not the client's: Go's and
        // the browsers' clients put AES-128-GCM first, whose 16-byte keys the record layer cannot
        // put at rest (~1 KiB more per idle connection). Every TLS 1.3 client offers AES-256-GCM.
        config.ignore_client_order = true;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint: self.fingerprint,
        })
    }
}

/// Writes a file that must not exist yet (`O_EXCL`), with `mode` from its creation on, and
/// syncs it: a key is never readable by others, not even for a moment.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let create_error = |source| IdentityError::Create {
        path: path.into(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(create_error)?;
    file.write_all(contents).map_err(create_error)?;
    file.sync_all().map_err(create_error)
}

/// The server's TLS settings, as [`crate::server::ServerConfig`] carries them.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: Fingerprint,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerTls({})", self.fingerprint)
    }
}

/// Two settings are the same when they present the same certificate.
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The fingerprint the server presented in a handshake, filled in by the client's verifier so
/// that the client can say which one it saw even when the handshake was refused.
pub type Presented = Arc<Mutex<Option<Fingerprint>>>;

/// The client side of TLS: TLS 1.3 only, no resumption; the server's certificate is accepted
/// when its fingerprint is `expected`, or — with `expected` `None`, a first contact — accepted
/// for the handshake to complete, so that the caller can decide before sending anything. Either
/// way the server must prove it holds the certificate's key (the handshake signature is
/// verified), and the fingerprint it presented is written to `presented`.
pub fn client_config(expected: Option<Fingerprint>, presented: Presented) -> rustls::ClientConfig {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer {
            expected,
            presented,
            algorithms,
        }))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config
}

/// The name the client sends (and ignores): [`SERVER_NAME`].
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// Accepts a server certificate by its fingerprint: SSH's trust, not a certificate authority's.
#[derive(Debug)]
struct PinnedServer {
    expected: Option<Fingerprint>,
    presented: Presented,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint = Fingerprint::of_certificate(end_entity);
        *self.presented.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
        match self.expected {
            Some(expected) if expected != fingerprint => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is never negotiated (the config offers 1.3 alone).
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    #[test]
    fn a_fingerprint_reads_back_as_ssh_prints_it() {
        let fingerprint = Fingerprint::of_certificate(b"not really a certificate");
        let text = fingerprint.to_string();
        assert!(text.starts_with("SHA256:"), "{text}");
        assert_eq!(text.len(), "SHA256:".len() + 43, "{text}");
        assert!(!text.ends_with('='), "{text}");
        assert_eq!(text.parse::<Fingerprint>(), Ok(fingerprint));
        assert_eq!(format!("{text}=").parse::<Fingerprint>(), Ok(fingerprint));
    }

    #[test]
    fn text_that_is_not_a_fingerprint_is_refused() {
        for bad in [
            "",
            "SHA256:",
            "MD5:aa",
            "SHA256:not base64!",
            "SHA256:AAAA",
            "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?} accepted");
        }
        // The SHA-256 of nothing, as `ssh-keygen -l` would print it.
        assert_eq!(
            Fingerprint::of_certificate(b"").to_string(),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn a_new_identity_is_made_once_private_and_loaded_the_same_after() {
        let dir = TempDir::new().unwrap();
        let (key, cert) = default_paths(&dir.path().join("users.json"));
        let made = ServerIdentity::load_or_create(&key, &cert).unwrap();
        assert!(made.created());
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        let loaded = ServerIdentity::load_or_create(&key, &cert).unwrap();
        assert!(!loaded.created());
        assert_eq!(loaded.fingerprint(), made.fingerprint());
        let other = TempDir::new().unwrap();
        let (key2, cert2) = default_paths(&other.path().join("users.json"));
        let another = ServerIdentity::load_or_create(&key2, &cert2).unwrap();
        assert_ne!(another.fingerprint(), made.fingerprint());
    }

    /// The configuration of a server whose identity is made in a folder of its own.
    fn a_server_config() -> ServerTls {
        let dir = TempDir::new().unwrap();
        let (key, cert) = default_paths(&dir.path().join("users.json"));
        ServerIdentity::load_or_create(&key, &cert)
            .unwrap()
            .server_config()
            .unwrap()
    }

    #[test]
    fn the_server_keeps_no_resumption_state() {
        let tls = a_server_config();
        assert_eq!(tls.config.send_tls13_tickets, 0);
        assert!(!tls.config.session_storage.can_cache());
    }

    #[test]
    fn the_server_picks_the_cipher_suite_in_its_own_order_aes_256_first() {
        let tls = a_server_config();
        assert!(tls.config.ignore_client_order);
        let first = tls.config.crypto_provider().cipher_suites[0].suite();
        assert_eq!(first, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    }

    #[test]
    fn a_key_readable_by_others_or_half_a_pair_is_refused() {
        let dir = TempDir::new().unwrap();
        let (key, cert) = default_paths(&dir.path().join("users.json"));
        ServerIdentity::load_or_create(&key, &cert).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        let error = ServerIdentity::load_or_create(&key, &cert)
            .err()
            .expect("refused");
        assert!(
            matches!(
                error,
                IdentityError::KeyReadableByOthers { mode: 0o640, .. }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("chmod 600"), "{error}");
        fs::remove_file(&cert).unwrap();
        let error = ServerIdentity::load_or_create(&key, &cert)
            .err()
            .expect("refused");
        assert!(matches!(error, IdentityError::HalfAPair { .. }), "{error}");
    }
}
