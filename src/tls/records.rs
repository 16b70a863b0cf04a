//! The server's TLS 1.3 record layer once the handshake is over: rustls made the keys
//! ([`super::handshake`]); this module frames, seals and opens the records with them, one half
//! per direction.
//!
//! Why not rustls's own connection: it keeps a 4 KiB receive buffer for every connection
//! whether or not bytes are coming (7.4 KiB of its state per idle client in all, against the
//! 4.3 KiB the rest of a connection costs), and its reading and writing halves must share one
//! session behind a lock. Here the reading half ([`RecordReader`]) owns the receive key and holds
//! a buffer only while a record is arriving, and the writing half ([`RecordWriter`]) owns the send
//! key and holds only records the socket has not taken yet: an idle connection keeps the two keys
//! and nothing else. The cryptography stays rustls's: its AEAD encrypter and decrypter for the
//! negotiated suite seal and open each record (nonce from the sequence number, the header as
//! associated data, the inner content type and padding of RFC 8446 §5.2), and its
//! [`KernelConnection`] derives the next keys at a key update.
//!
//! What the record layer itself must do (RFC 8446 §5, §4.6.3, §6), and does:
//! - refuse a record longer than 2^14 + 256 bytes, an outer type other than application data,
//!   and one that fails authentication;
//! - answer a `KeyUpdate` from the client: new receive keys at once, and when the client asks
//!   (`update_requested`) a `KeyUpdate` of its own before the next record it sends;
//! - update its own send keys before a suite's confidentiality limit (2^24 records for AES-GCM);
//! - end with `close_notify` (or, after a record it refused, the fatal alert saying why), read
//!   `close_notify` as the end of the stream, and a stream cut without it as an error.
//!
//! It never reads a protocol line and never decides when to close.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks,
    OutboundPlainMessage,
};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, ContentType, ProtocolVersion, Tls13CipherSuite,
};

/// A record header: content type, legacy version, length.
const HEADER_BYTES: usize = 5;

/// The most plaintext one record carries (RFC 8446 §5.1).
const MAX_PLAINTEXT: usize = 1 << 14;

/// The longest protected record body a peer may send (RFC 8446 §5.2).
pub(super) const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;

/// At most this much plaintext is sealed per write call (four full records): a long queue goes
/// out in few system calls, and the records not yet written never hold more than this.
const MAX_SEALED_PER_WRITE: usize = 4 * MAX_PLAINTEXT;

/// At most this many of the caller's slices go into one write call.
const MAX_SLICES: usize = 64;

/// Bytes asked of the socket in one read when no record says how many are coming.
const READ_BYTES: usize = 4096;

/// At most this many records that carry no application data (key updates, empty records,
/// warning alerts) in a row — rustls and BoringSSL allow 32 key updates and 32 empty records:
/// past it a client is only making the server work (each key update is three HKDF expansions
/// and a new AES key), and is refused (`unexpected_message`). It also bounds what one read call
/// opens before it returns, so such a client cannot hold an executor thread.
const MAX_RECORDS_WITHOUT_DATA: u32 = 32;

/// At most this many `user_canceled` warnings in a connection (rustls's bound for warnings).
const MAX_WARNING_ALERTS: u32 = 4;

/// A TLS 1.3 handshake message's type: `key_update`.
const KEY_UPDATE: u8 = 24;

/// No alert is owed (alert descriptions are one byte; this one is unassigned).
const NO_ALERT: u8 = 255;

/// What both halves share: rustls's key schedule (touched only at a key update), and what one
/// half owes the other.
pub(super) struct Shared {
    kernel: Mutex<KernelConnection<ServerConnectionData>>,
    suite: &'static Tls13CipherSuite,
    /// The client asked for a key update: the writer sends its own before its next record.
    update_requested: AtomicBool,
    /// The reader refused a record: the writer ends with this alert instead of `close_notify`.
    fatal_alert: AtomicU8,
}

impl Shared {
    pub(super) fn new(
        kernel: KernelConnection<ServerConnectionData>,
        suite: &'static Tls13CipherSuite,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            kernel: Mutex::new(kernel),
            suite,
            update_requested: AtomicBool::new(false),
            fatal_alert: AtomicU8::new(NO_ALERT),
        })
    }

    fn kernel(&self) -> std::sync::MutexGuard<'_, KernelConnection<ServerConnectionData>> {
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A direction's key from the secrets rustls hands over.
    pub(super) fn key<T: Expand + ?Sized>(
        &self,
        secrets: ConnectionTrafficSecrets,
    ) -> io::Result<TrafficKey<T>> {
        let (key, iv) = key_and_iv(secrets)?;
        Ok(TrafficKey::new(self.suite, key, iv))
    }
}

/// rustls's sealing or opening state for one direction, made from a key and an IV.
pub(super) trait Expand {
    fn expand(suite: &'static Tls13CipherSuite, key: AeadKey, iv: Iv) -> Box<Self>;
}

impl Expand for dyn MessageEncrypter {
    fn expand(suite: &'static Tls13CipherSuite, key: AeadKey, iv: Iv) -> Box<Self> {
        suite.aead_alg.encrypter(key, iv)
    }
}

impl Expand for dyn MessageDecrypter {
    fn expand(suite: &'static Tls13CipherSuite, key: AeadKey, iv: Iv) -> Box<Self> {
        suite.aead_alg.decrypter(key, iv)
    }
}

/// One direction's traffic key. Expanded into rustls's AEAD state (ring's AES key schedule and
/// GHASH table: ~0.5 KiB per direction) only while records flow; at rest, the 44 bytes it is
/// made from. Made again at the next record, which costs far less than sealing one (ring's key
/// setup is a few hundred cycles; a record's write is a system call).
///
/// rustls lets a key be made from bytes only at 32 bytes (AES-256-GCM, the suite both our
/// clients and OpenSSL's prefer, and ChaCha20-Poly1305): a 16-byte AES-128-GCM key stays
/// expanded.
pub(super) struct TrafficKey<T: Expand + ?Sized> {
    suite: &'static Tls13CipherSuite,
    /// What the key is made from, when it can be made again.
    secret: Option<(AeadKey, [u8; 12])>,
    expanded: Option<Box<T>>,
}

impl<T: Expand + ?Sized> TrafficKey<T> {
    fn new(suite: &'static Tls13CipherSuite, key: AeadKey, iv: Iv) -> Self {
        let iv_bytes = <[u8; 12]>::try_from(iv.as_ref());
        if let (Ok(_), Ok(iv_bytes)) = (<[u8; 32]>::try_from(key.as_ref()), iv_bytes) {
            TrafficKey {
                suite,
                secret: Some((key, iv_bytes)),
                expanded: None,
            }
        } else {
            TrafficKey {
                suite,
                secret: None,
                expanded: Some(T::expand(suite, key, iv)),
            }
        }
    }

    /// The expanded state, made now if at rest.
    fn get(&mut self) -> &mut T {
        let (suite, secret) = (self.suite, &self.secret);
        self.expanded.get_or_insert_with(|| {
            let (key, iv) = secret
                .as_ref()
                .expect("a key at rest keeps what it is made from");
            let bytes = <[u8; 32]>::try_from(key.as_ref()).expect("checked when made");
            T::expand(suite, AeadKey::from(bytes), Iv::from(*iv))
        })
    }

    /// Nothing to seal or open for now: back to the bytes it is made from.
    fn rest(&mut self) {
        if self.secret.is_some() {
            self.expanded = None;
        }
    }

    #[cfg(test)]
    fn is_expanded(&self) -> bool {
        self.expanded.is_some()
    }
}

fn key_and_iv(secrets: ConnectionTrafficSecrets) -> io::Result<(AeadKey, Iv)> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        #[allow(unreachable_patterns)] // The enum is non-exhaustive.
        _ => Err(io::Error::other(
            "a TLS cipher this server cannot run itself",
        )),
    }
}

pub(super) fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// How the reading half stands.
enum ReadEnd {
    Open,
    /// The client sent `close_notify`: the end of the stream.
    Closed,
    /// A record was refused, or the stream was cut: every read fails the same way.
    Failed(io::ErrorKind, String),
}

/// The reading half: bytes from the socket, application data out.
pub struct RecordReader<R> {
    inner: R,
    shared: Arc<Shared>,
    key: TrafficKey<dyn MessageDecrypter>,
    seq: u64,
    /// Bytes of records not yet opened (the start of the next one); no allocation while empty.
    raw: Vec<u8>,
    /// Opened application data not yet returned, from `ready_at`.
    ready: Vec<u8>,
    ready_at: usize,
    end: ReadEnd,
    /// Records without application data since the last that had some; warning alerts in the
    /// whole connection.
    without_data: u32,
    warnings: u32,
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    /// `raw` holds the bytes that followed the client's Finished in the handshake's last read
    /// (a client may send its first line with it): records not yet opened.
    pub(super) fn new(
        inner: R,
        shared: Arc<Shared>,
        key: TrafficKey<dyn MessageDecrypter>,
        seq: u64,
        raw: Vec<u8>,
    ) -> Self {
        RecordReader {
            inner,
            shared,
            key,
            seq,
            raw,
            ready: Vec::new(),
            ready_at: 0,
            end: ReadEnd::Open,
            without_data: 0,
            warnings: 0,
        }
    }

    /// Refuses the stream from here on, and tells the writer which alert to end with.
    fn fail(&mut self, alert: AlertDescription, what: String) -> io::Error {
        self.shared
            .fatal_alert
            .store(u8::from(alert), Ordering::Relaxed);
        self.end = ReadEnd::Failed(io::ErrorKind::InvalidData, what.clone());
        self.raw = Vec::new();
        io::Error::new(io::ErrorKind::InvalidData, what)
    }

    /// Opens the record at the front of `raw` if it is all there: `Ok(false)` when more bytes
    /// are needed (and how many is then known from its header).
    fn open_front(&mut self) -> io::Result<bool> {
        if self.raw.len() < HEADER_BYTES {
            return Ok(false);
        }
        let length = usize::from(u16::from_be_bytes([self.raw[3], self.raw[4]]));
        if self.raw[0] != u8::from(ContentType::ApplicationData) {
            return Err(self.fail(
                AlertDescription::UnexpectedMessage,
                format!(
                    "a TLS record of type {} after the handshake (only protected records may follow it)",
                    self.raw[0]
                ),
            ));
        }
        if length > MAX_CIPHERTEXT {
            return Err(self.fail(
                AlertDescription::RecordOverflow,
                format!("a TLS record of {length} bytes (at most {MAX_CIPHERTEXT})"),
            ));
        }
        if self.raw.len() < HEADER_BYTES + length {
            return Ok(false);
        }
        let body = &mut self.raw[HEADER_BYTES..HEADER_BYTES + length];
        let message =
            InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, body);
        let opened = match self.key.get().decrypt(message, self.seq) {
            Ok(opened) => opened,
            Err(rustls::Error::DecryptError) => {
                return Err(self.fail(
                    AlertDescription::BadRecordMac,
                    "a TLS record that fails authentication (bad_record_mac)".into(),
                ))
            }
            // RFC 8446 §5.2, §5.4 and §5: each refusal's own alert.
            Err(e @ rustls::Error::PeerSentOversizedRecord) => {
                return Err(self.fail(AlertDescription::RecordOverflow, format!("{e}")))
            }
            Err(e @ rustls::Error::PeerMisbehaved(_)) => {
                return Err(self.fail(AlertDescription::UnexpectedMessage, format!("{e}")))
            }
            Err(e) => return Err(self.fail(AlertDescription::DecodeError, format!("{e}"))),
        };
        self.seq += 1;
        let (kind, payload) = (opened.typ, opened.payload);
        if kind == ContentType::ApplicationData && !payload.is_empty() {
            self.without_data = 0;
        } else {
            self.without_data += 1;
            if self.without_data > MAX_RECORDS_WITHOUT_DATA {
                return Err(self.fail(
                    AlertDescription::UnexpectedMessage,
                    format!(
                        "more than {MAX_RECORDS_WITHOUT_DATA} TLS records in a row without data"
                    ),
                ));
            }
        }
        match kind {
            ContentType::ApplicationData => {
                if self.ready_at == self.ready.len() {
                    self.ready.clear();
                    self.ready_at = 0;
                }
                self.ready.extend_from_slice(payload);
            }
            ContentType::Alert => match payload {
                [_, 0] => self.end = ReadEnd::Closed, // close_notify
                // user_canceled: close_notify follows.
                [_, 90] => {
                    self.warnings += 1;
                    if self.warnings > MAX_WARNING_ALERTS {
                        return Err(self.fail(
                            AlertDescription::UnexpectedMessage,
                            format!("more than {MAX_WARNING_ALERTS} TLS warning alerts"),
                        ));
                    }
                }
                [_, description] => {
                    self.end = ReadEnd::Failed(
                        io::ErrorKind::ConnectionAborted,
                        format!(
                            "the client sent the TLS alert {:?}",
                            AlertDescription::from(*description)
                        ),
                    );
                }
                _ => {
                    return Err(self.fail(
                        AlertDescription::DecodeError,
                        "a TLS alert that is not two bytes".into(),
                    ))
                }
            },
            ContentType::Handshake => {
                let payload = payload.to_vec();
                self.raw.drain(..HEADER_BYTES + length);
                self.key_update(&payload)?;
                return Ok(true);
            }
            other => {
                return Err(self.fail(
                    AlertDescription::UnexpectedMessage,
                    format!("a TLS record of inner type {other:?} after the handshake"),
                ))
            }
        }
        self.raw.drain(..HEADER_BYTES + length);
        if self.raw.is_empty() {
            self.raw = Vec::new();
        }
        Ok(true)
    }

    /// A handshake message after the handshake: only a `KeyUpdate` (the server asked for no
    /// client certificate and the client sends no tickets), alone at the end of its record.
    fn key_update(&mut self, message: &[u8]) -> io::Result<()> {
        let request = match message {
            [KEY_UPDATE, 0, 0, 1, request @ (0 | 1)] => *request,
            [KEY_UPDATE, 0, 0, 1, _] => {
                return Err(self.fail(
                    AlertDescription::IllegalParameter,
                    "a TLS KeyUpdate asking neither for an update nor for none".into(),
                ))
            }
            [KEY_UPDATE, ..] => {
                return Err(self.fail(
                    AlertDescription::DecodeError,
                    "a malformed TLS KeyUpdate".into(),
                ))
            }
            _ => {
                return Err(self.fail(
                    AlertDescription::UnexpectedMessage,
                    "a TLS handshake message after the handshake that is not a KeyUpdate".into(),
                ))
            }
        };
        let updated = self.shared.kernel().update_rx_secret();
        let (seq, secrets) = match updated {
            Ok(updated) => updated,
            Err(e) => return Err(self.fail(AlertDescription::InternalError, format!("{e}"))),
        };
        self.key = self.shared.key(secrets)?;
        self.seq = seq;
        if request == 1 {
            self.shared.update_requested.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reads more of the record at the front of `raw`: `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let missing = if self.raw.len() >= HEADER_BYTES {
            let length = usize::from(u16::from_be_bytes([self.raw[3], self.raw[4]]));
            HEADER_BYTES + length - self.raw.len()
        } else {
            HEADER_BYTES - self.raw.len()
        };
        let want = missing.max(READ_BYTES);
        let filled = self.raw.len();
        self.raw.resize(filled + want, 0);
        let read = Pin::new(&mut self.inner).poll_read(cx, &mut self.raw[filled..]);
        let n = match read {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => {
                self.raw.truncate(filled);
                return Poll::Ready(Err(e));
            }
            Poll::Pending => {
                self.raw.truncate(filled);
                if self.raw.is_empty() {
                    // Idle: no buffer, and the key at rest.
                    self.raw = Vec::new();
                    self.key.rest();
                }
                return Poll::Pending;
            }
        };
        self.raw.truncate(filled + n);
        Poll::Ready(Ok(n > 0))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for RecordReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One call opens at most MAX_RECORDS_WITHOUT_DATA + 1 records before it returns.
        loop {
            if this.ready_at < this.ready.len() {
                let n = out.len().min(this.ready.len() - this.ready_at);
                out[..n].copy_from_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready = Vec::new();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(n));
            }
            match &this.end {
                ReadEnd::Open => {}
                ReadEnd::Closed => return Poll::Ready(Ok(0)),
                ReadEnd::Failed(kind, what) => {
                    return Poll::Ready(Err(io::Error::new(*kind, what.clone())))
                }
            }
            if this.open_front()? {
                continue;
            }
            if !ready!(this.poll_fill(cx))? {
                let what = if this.raw.is_empty() {
                    "the client closed the connection without TLS close_notify"
                } else {
                    "the client closed the connection in the middle of a TLS record"
                };
                this.raw = Vec::new();
                this.end = ReadEnd::Failed(io::ErrorKind::UnexpectedEof, what.into());
            }
        }
    }
}

/// The writing half: application data in, records to the socket.
pub struct RecordWriter<W> {
    inner: W,
    shared: Arc<Shared>,
    key: TrafficKey<dyn MessageEncrypter>,
    seq: u64,
    /// Records to send under one key before updating it (the suite's confidentiality limit).
    limit: u64,
    /// Sealed records the socket has not taken yet, from `sent`; no allocation while empty.
    sealed: Vec<u8>,
    sent: usize,
    /// The last alert (`close_notify` or a fatal one) is sealed: nothing more may follow.
    finished: bool,
}

impl<W: AsyncWrite + Unpin> RecordWriter<W> {
    pub(super) fn new(
        inner: W,
        shared: Arc<Shared>,
        key: TrafficKey<dyn MessageEncrypter>,
        seq: u64,
    ) -> Self {
        let limit = shared.suite.common.confidentiality_limit;
        RecordWriter {
            inner,
            shared,
            key,
            seq,
            limit,
            sealed: Vec::new(),
            sent: 0,
            finished: false,
        }
    }

    /// Seals one record of `kind` holding `payload` onto `sealed`, updating the send keys first
    /// when the client asked for it or the limit is near.
    fn seal(&mut self, kind: ContentType, payload: OutboundChunks<'_>) -> io::Result<()> {
        if self.shared.update_requested.swap(false, Ordering::Relaxed)
            || self.seq.saturating_add(2) >= self.limit
        {
            self.update_keys()?;
        }
        self.seal_under_current_key(kind, payload)
    }

    fn seal_under_current_key(
        &mut self,
        kind: ContentType,
        payload: OutboundChunks<'_>,
    ) -> io::Result<()> {
        let message = OutboundPlainMessage {
            typ: kind,
            version: ProtocolVersion::TLSv1_2,
            payload,
        };
        let record = self
            .key
            .get()
            .encrypt(message, self.seq)
            .map_err(tls_error)?
            .encode();
        self.seq += 1;
        if self.sent == self.sealed.len() {
            self.sealed = record;
            self.sent = 0;
        } else {
            self.sealed.extend_from_slice(&record);
        }
        Ok(())
    }

    /// Sends a `KeyUpdate` (not asking the client for one) under the current key, then takes
    /// the next key (RFC 8446 §4.6.3).
    fn update_keys(&mut self) -> io::Result<()> {
        let message: &[u8] = &[KEY_UPDATE, 0, 0, 1, 0];
        self.seal_under_current_key(ContentType::Handshake, OutboundChunks::Single(message))?;
        let (seq, secrets) = self.shared.kernel().update_tx_secret().map_err(tls_error)?;
        self.key = self.shared.key(secrets)?;
        self.seq = seq;
        Ok(())
    }

    /// Writes sealed records until none is left.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.sealed.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.sealed[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sealed = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for RecordWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Takes up to four records' worth of `bufs` once what was sealed before has gone out, and
    /// starts writing them; the rest follows on the next call or at the flush.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "writing after the TLS session was closed",
            )));
        }
        ready!(this.poll_send(cx))?;
        let mut chunks: [&[u8]; MAX_SLICES] = [&[]; MAX_SLICES];
        let mut count = 0;
        let mut total = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()).take(MAX_SLICES) {
            if total >= MAX_SEALED_PER_WRITE {
                break;
            }
            let take = buf.len().min(MAX_SEALED_PER_WRITE - total);
            chunks[count] = &buf[..take];
            count += 1;
            total += take;
        }
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut rest = OutboundChunks::new(&chunks[..count]);
        while !rest.is_empty() {
            let (record, after) = rest.split_at(MAX_PLAINTEXT);
            this.seal(ContentType::ApplicationData, record)?;
            rest = after;
        }
        // Start sending now; what the socket does not take yet waits for the next call.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(total))
    }

    /// Sends what is sealed. The writer task flushes at the end of each batch, so the key
    /// rests between batches.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        this.key.rest();
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    /// Sends what is sealed, then `close_notify` (or the fatal alert the reader owes the
    /// client), then closes the socket's sending side.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.finished {
            ready!(this.poll_send(cx))?;
            let alert = match this.shared.fatal_alert.load(Ordering::Relaxed) {
                NO_ALERT => [1, u8::from(AlertDescription::CloseNotify)], // warning
                fatal => [2, fatal],
            };
            this.seal_under_current_key(ContentType::Alert, OutboundChunks::Single(&alert))?;
            this.finished = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    //! Each test runs the real handshake ([`super::super::accept`]) against rustls's own client
    //! (blocking, in a thread, so that the test controls every byte it sends) over loopback.

    use std::io::{Read, Write};
    use std::net::TcpStream as StdTcpStream;
    use std::thread;

    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use rustls::ClientConnection;
    use tempfile::TempDir;

    use super::*;
    use crate::runtime::{self, TcpListener, TcpStream};
    use crate::tls::{self, ServerIdentity};

    struct Client {
        tls: ClientConnection,
        tcp: StdTcpStream,
    }

    impl Client {
        /// Sends what rustls holds.
        fn send(&mut self) {
            while self.tls.wants_write() {
                self.tls.write_tls(&mut self.tcp).unwrap();
            }
        }

        /// Application data, as records.
        fn write(&mut self, bytes: &[u8]) {
            // rustls holds at most 64 KiB unsent.
            for piece in bytes.chunks(16 * 1024) {
                self.tls.writer().write_all(piece).unwrap();
                self.send();
            }
        }

        /// Reads until `len` bytes of application data came, or the session ended (the bytes
        /// so far, and how it ended).
        fn read(&mut self, len: usize) -> (Vec<u8>, io::Result<()>) {
            let mut got = Vec::new();
            let mut buffer = [0u8; 8192];
            while got.len() < len {
                match self.tls.reader().read(&mut buffer) {
                    Ok(0) => return (got, Ok(())),
                    Ok(n) => {
                        got.extend_from_slice(&buffer[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return (got, Err(e)),
                }
                match self.tls.read_tls(&mut self.tcp) {
                    Ok(0) => return (got, Err(io::ErrorKind::UnexpectedEof.into())),
                    Ok(_) => {}
                    Err(e) => return (got, Err(e)),
                }
                if let Err(e) = self.tls.process_new_packets() {
                    return (got, Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
                self.send(); // A key update's answer.
            }
            (got, Ok(()))
        }
    }

    type Halves = (RecordReader<TcpStream>, RecordWriter<TcpStream>);

    /// A server's TLS configuration (its identity made in a folder of its own), a client's that
    /// pins it, and a listener on loopback.
    fn endpoints() -> (tls::ServerTls, Arc<rustls::ClientConfig>, TcpListener) {
        let dir = TempDir::new().unwrap();
        let (key, cert) = tls::default_paths(&dir.path().join("users.json"));
        let identity = ServerIdentity::load_or_create(&key, &cert).unwrap();
        let client = tls::client_config(Some(identity.fingerprint()), Arc::new(Mutex::new(None)));
        let listener = runtime::block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        (
            identity.server_config().unwrap(),
            Arc::new(client),
            listener,
        )
    }

    /// A handshake over loopback; `before` is written by the client before the handshake ends,
    /// so that it leaves with the client's Finished.
    fn connect(before: &[u8]) -> (Halves, Client) {
        let before = before.to_vec();
        connect_with(move |tls| tls.writer().write_all(&before).unwrap())
    }

    /// A handshake over loopback where `with_finished` runs on the client once it has the
    /// server's Finished and before it sends its own: what it makes rustls send leaves in the
    /// same write as the client's Finished.
    fn connect_with(
        with_finished: impl FnOnce(&mut ClientConnection) + Send + 'static,
    ) -> (Halves, Client) {
        let (server, config, listener) = endpoints();
        let address = listener.local_addr().unwrap();
        let client = thread::spawn(move || {
            let mut tls = ClientConnection::new(config, tls::server_name()).unwrap();
            let mut tcp = StdTcpStream::connect(address).unwrap();
            while tls.wants_write() {
                tls.write_tls(&mut tcp).unwrap(); // The ClientHello.
            }
            while tls.is_handshaking() {
                tls.read_tls(&mut tcp).unwrap();
                tls.process_new_packets().unwrap();
            }
            with_finished(&mut tls);
            let mut flight = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut flight).unwrap();
            }
            tcp.write_all(&flight).unwrap();
            Client { tls, tcp }
        });
        let halves = runtime::block_on(async {
            let (tcp, _) = listener.accept().await.unwrap();
            tls::accept(tcp, server.config).await.unwrap()
        });
        (halves, client.join().unwrap())
    }

    /// How long a test waits for the server's side before failing (not a timing: a broken
    /// record layer may otherwise wait for bytes that never come).
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

    /// The server's side of a handshake the client spoils: `spoil` gets the client's TCP
    /// stream and its rustls session, sends what it likes, then reads what the server answers.
    /// Returns the server's error and what `spoil` read.
    fn refused_handshake(
        spoil: impl FnOnce(&mut StdTcpStream, ClientConnection) -> Vec<u8> + Send + 'static,
    ) -> (io::Error, Vec<u8>) {
        let (server, config, listener) = endpoints();
        let address = listener.local_addr().unwrap();
        let client = thread::spawn(move || {
            let tls = ClientConnection::new(config, tls::server_name()).unwrap();
            let mut tcp = StdTcpStream::connect(address).unwrap();
            tcp.set_read_timeout(Some(DEADLINE)).unwrap();
            spoil(&mut tcp, tls)
        });
        let error = runtime::block_on(runtime::timeout(DEADLINE, async {
            let (tcp, _) = listener.accept().await.unwrap();
            tls::accept(tcp, server.config).await.err()
        }))
        .expect("the handshake ends within the deadline")
        .expect("the handshake is refused");
        (error, client.join().unwrap())
    }

    fn read_exactly(reader: &mut RecordReader<TcpStream>, len: usize) -> Vec<u8> {
        let mut got = vec![0u8; len];
        runtime::block_on(runtime::timeout(DEADLINE, reader.read_exact(&mut got)))
            .expect("the bytes within the deadline")
            .unwrap();
        got
    }

    /// One read on the server's side, within the deadline.
    fn read_once(reader: &mut RecordReader<TcpStream>) -> io::Result<usize> {
        let mut buffer = [0u8; 64];
        runtime::block_on(runtime::timeout(DEADLINE, reader.read(&mut buffer)))
            .expect("an answer within the deadline")
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn data_crosses_both_ways_and_close_notify_ends_each_direction() {
        let ((mut reader, mut writer), mut client) = connect(b"sent with the Finished\n");
        assert_eq!(read_exactly(&mut reader, 23), b"sent with the Finished\n");

        // Less than loopback's socket buffers take: the server reads only after.
        let up = pattern(120_000, 1);
        client.write(&up);
        assert_eq!(read_exactly(&mut reader, up.len()), up);

        // Vectored, over several records, in pieces cut anywhere.
        let down = pattern(120_000, 7);
        runtime::block_on(async {
            let mut at = 0;
            while at < down.len() {
                let slices: Vec<IoSlice> = down[at..].chunks(9_999).map(IoSlice::new).collect();
                at += writer.write_vectored(&slices).await.unwrap();
            }
            writer.flush().await.unwrap();
        });
        let (got, end) = client.read(down.len());
        end.unwrap();
        assert_eq!(got, down);

        client.tls.send_close_notify();
        client.send();
        assert_eq!(
            read_once(&mut reader).unwrap(),
            0,
            "close_notify ends the stream"
        );

        runtime::block_on(writer.close()).unwrap();
        let (got, end) = client.read(1);
        assert!(got.is_empty());
        end.expect("the client reads close_notify as a clean end");
    }

    #[test]
    fn a_key_update_the_client_asks_for_is_taken_and_answered() {
        let ((mut reader, mut writer), mut client) = connect(b"");
        for round in 0..3u8 {
            client.tls.refresh_traffic_keys().unwrap();
            client.write(&[round; 100]);
            assert_eq!(read_exactly(&mut reader, 100), [round; 100]);
            assert_eq!(
                reader.seq, 1,
                "new receiving keys (sequence from 0) after the update"
            );
            runtime::block_on(async {
                writer.write_all(&[round + 10; 50]).await.unwrap();
                writer.flush().await.unwrap();
            });
            // The client switched its receiving keys only if the server's own KeyUpdate came.
            let (got, end) = client.read(50);
            end.unwrap();
            assert_eq!(got, [round + 10; 50]);
            assert_eq!(
                writer.seq, 1,
                "the answer, then one record under the new keys"
            );
        }
    }

    #[test]
    fn a_key_update_sent_with_the_finished_is_answered_by_the_record_layer() {
        let ((mut reader, mut writer), mut client) = connect_with(|tls| {
            tls.refresh_traffic_keys().unwrap();
            tls.writer().write_all(b"first\n").unwrap();
        });
        assert_eq!(read_exactly(&mut reader, 6), b"first\n");
        assert!(
            reader.shared.update_requested.load(Ordering::Relaxed),
            "the request seen"
        );
        runtime::block_on(async {
            writer.write_all(b"welcome\n").await.unwrap();
            writer.flush().await.unwrap();
        });
        assert!(
            !writer.shared.update_requested.load(Ordering::Relaxed),
            "and answered"
        );
        assert_eq!(
            writer.seq, 1,
            "the answer, then one record under the new keys"
        );
        let (got, end) = client.read(8);
        end.expect("the client follows the server's answer to its KeyUpdate");
        assert_eq!(got, b"welcome\n");
    }

    #[test]
    fn records_without_data_are_refused_past_their_bound() {
        let ((mut reader, _writer), mut client) = connect(b"");
        let mut updates = Vec::new();
        for _ in 0..=MAX_RECORDS_WITHOUT_DATA {
            client.tls.refresh_traffic_keys().unwrap();
            while client.tls.wants_write() {
                client.tls.write_tls(&mut updates).unwrap();
            }
        }
        client.tcp.write_all(&updates).unwrap();
        let error = read_once(&mut reader).unwrap_err();
        assert!(
            error.to_string().contains("in a row without data"),
            "{error}"
        );
        // At the bound itself, and with data between, nothing is refused.
        let ((mut reader, _writer), mut client) = connect(b"");
        for round in 0..3u8 {
            for _ in 0..MAX_RECORDS_WITHOUT_DATA {
                client.tls.refresh_traffic_keys().unwrap();
            }
            client.write(&[round; 3]);
            assert_eq!(read_exactly(&mut reader, 3), [round; 3]);
        }
    }

    #[test]
    fn a_handshake_rustls_refuses_ends_with_its_alert() {
        // The client's Finished changed on the way.
        let (error, answer) = refused_handshake(|tcp, mut tls| {
            while tls.wants_write() {
                tls.write_tls(tcp).unwrap();
            }
            while tls.is_handshaking() {
                tls.read_tls(tcp).unwrap();
                tls.process_new_packets().unwrap();
            }
            let mut flight = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut flight).unwrap();
            }
            let last = flight.len() - 1;
            flight[last] ^= 1;
            tcp.write_all(&flight).unwrap();
            match tls.read_tls(tcp).map(|_| tls.process_new_packets()) {
                Ok(Err(e)) => e.to_string().into_bytes(),
                other => format!("no alert: {other:?}").into_bytes(),
            }
        });
        assert!(error.to_string().contains("decrypt"), "{error}");
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.contains("BadRecordMac"), "{answer}");
    }

    #[test]
    fn a_first_record_that_is_no_client_hello_is_refused_at_once() {
        for (first, alert) in [
            // A length no record may have: refused from its header, with rustls's alert.
            (&b"\x16\x03\x01\xff\xff"[..], true),
            // A handshake record that holds no ClientHello (what tests/slots.rs floods with):
            // rustls queues no alert for it, and asked again it must not be made to index past
            // the bytes it has begun to read.
            (&b"\x16\x03\x01\x00\x05hello"[..], false),
        ] {
            let (error, answer) = refused_handshake(move |tcp, _| {
                tcp.write_all(first).unwrap();
                let mut answer = Vec::new();
                // Within the read timeout: the server closes, it does not wait.
                tcp.read_to_end(&mut answer).unwrap();
                answer
            });
            assert!(!error.to_string().is_empty());
            if alert {
                // An alert record in the clear: type 21, fatal.
                assert_eq!((answer[0], answer[5]), (21, 2), "{answer:?}");
            }
        }
    }

    #[test]
    fn the_server_updates_its_keys_before_the_limit_and_the_client_follows() {
        let ((_reader, mut writer), mut client) = connect(b"");
        writer.limit = 4;
        let mut sent = Vec::new();
        for i in 0..20u8 {
            runtime::block_on(async {
                writer.write_all(&[i; 10]).await.unwrap();
                writer.flush().await.unwrap();
            });
            sent.extend_from_slice(&[i; 10]);
            assert!(writer.seq < 4, "never {} records under one key", writer.seq);
        }
        let (got, end) = client.read(sent.len());
        end.unwrap();
        assert_eq!(got, sent);
    }

    /// Completes `tls`'s pending records into bytes, for tampering.
    fn sealed(client: &mut Client, bytes: &[u8]) -> Vec<u8> {
        client.tls.writer().write_all(bytes).unwrap();
        let mut out = Vec::new();
        while client.tls.wants_write() {
            client.tls.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_record_changed_on_the_way_is_refused_and_the_client_told_why() {
        let ((mut reader, mut writer), mut client) = connect(b"");
        let mut record = sealed(&mut client, b"hello\n");
        let last = record.len() - 1;
        record[last] ^= 1;
        client.tcp.write_all(&record).unwrap();
        let error = read_once(&mut reader).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("bad_record_mac"), "{error}");
        // Every later read fails the same way.
        assert!(read_once(&mut reader).is_err());
        runtime::block_on(writer.close()).unwrap();
        let (_, end) = client.read(1);
        let error = end.unwrap_err().to_string();
        assert!(error.contains("BadRecordMac"), "{error}");
    }

    #[test]
    fn an_oversized_or_unprotected_record_is_refused_from_its_header() {
        for (header, expected) in [
            ([23u8, 3, 3, 0x41, 0x01], "16641 bytes"),
            ([21u8, 3, 3, 0, 2], "type 21"),
            ([22u8, 3, 3, 0, 4], "type 22"),
        ] {
            let ((mut reader, _writer), mut client) = connect(b"");
            // Only the header: the refusal must not wait for a body.
            client.tcp.write_all(&header).unwrap();
            let error = read_once(&mut reader).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn a_stream_cut_without_close_notify_or_inside_a_record_is_an_error() {
        let ((mut reader, _writer), mut client) = connect(b"");
        client.write(b"complete\n");
        assert_eq!(read_exactly(&mut reader, 9), b"complete\n");
        client.tcp.shutdown(std::net::Shutdown::Write).unwrap();
        let error = read_once(&mut reader).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("close_notify"), "{error}");

        let ((mut reader, _writer), mut client) = connect(b"");
        let record = sealed(&mut client, b"cut short\n");
        client.tcp.write_all(&record[..record.len() - 3]).unwrap();
        client.tcp.shutdown(std::net::Shutdown::Write).unwrap();
        let error = read_once(&mut reader).unwrap_err();
        assert!(
            error.to_string().contains("middle of a TLS record"),
            "{error}"
        );
    }

    #[test]
    fn an_idle_connection_keeps_no_buffer_in_either_half() {
        let ((mut reader, mut writer), mut client) = connect(b"first\n");
        assert_eq!(read_exactly(&mut reader, 6), b"first\n");
        client.write(&pattern(40_000, 3));
        assert_eq!(read_exactly(&mut reader, 40_000), pattern(40_000, 3));
        runtime::block_on(async {
            writer.write_all(&pattern(70_000, 5)).await.unwrap();
            writer.flush().await.unwrap();
        });
        let (got, _) = client.read(70_000);
        assert_eq!(got.len(), 70_000);
        // A read that finds nothing waiting (the socket says "not yet") leaves no buffer behind.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut buffer = [0u8; 16];
        assert!(Pin::new(&mut reader)
            .poll_read(&mut cx, &mut buffer)
            .is_pending());
        assert_eq!(reader.raw.capacity(), 0);
        assert_eq!(reader.ready.capacity(), 0);
        assert!(!reader.key.is_expanded(), "the receiving key at rest");
        assert_eq!(writer.sealed.capacity(), 0);
        assert!(!writer.key.is_expanded(), "the sending key at rest");
    }
}
