//! TLS records in one direction of a TCP stream: what an eavesdropper can still read of a TLS
//! connection. Every record starts with a clear 5-byte header (content type, the legacy record
//! version, the length: RFC 8446 §5.1); a handshake record sent before encryption starts also shows
//! its handshake messages' types (ClientHello, ServerHello). TLS 1.3 encrypts everything after the
//! ServerHello, so those records all say `application_data` (the "opaque type") whatever they hold.
//!
//! The reader is fed the stream's bytes in order and never keeps a record's body, except a handshake
//! record's (at most [`MAX_RECORD_LENGTH`] bytes), to read the types of the messages in it.

use serde::{Serialize, Serializer};

/// Bytes of a record header: content type (1), version (2), length (2).
pub const RECORD_HEADER_BYTES: usize = 5;

/// The longest record body a peer may send: TLS 1.2's ciphertext limit, 2^14 + 2048 (TLS 1.3's
/// is 2^14 + 256). A longer length means the bytes are not TLS.
pub const MAX_RECORD_LENGTH: usize = (1 << 14) + 2048;

/// Bytes of a handshake message's header inside a handshake record: type (1), length (3).
const HANDSHAKE_HEADER_BYTES: usize = 4;

/// One TLS record, as its clear header (and, for a clear handshake record, its messages) shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsRecord {
    /// 20 change_cipher_spec, 21 alert, 22 handshake, 23 application_data, 24 heartbeat.
    pub content_type: u8,
    /// The content type's name, as the RFC spells it.
    pub content: &'static str,
    /// The legacy record version: 0x0301 on a ClientHello, 0x0303 on every other record, TLS 1.3
    /// included (the real version is negotiated inside the hellos).
    #[serde(serialize_with = "hex_version")]
    pub version: u16,
    /// The length field: bytes of the body after the header.
    pub length: u16,
    /// The types of the handshake messages that start in this record (1 ClientHello, 2
    /// ServerHello, …); empty for every other record, and for handshake messages TLS 1.3 encrypts.
    pub handshake_types: Vec<u8>,
}

fn hex_version<S: Serializer>(version: &u16, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("0x{version:04x}"))
}

impl TlsRecord {
    /// `handshake ClientHello [0x0301, 209 bytes]`, `application_data [0x0303, 69 bytes]`.
    pub fn label(&self) -> String {
        let mut label = self.content.to_string();
        for kind in &self.handshake_types {
            label.push(' ');
            label.push_str(&handshake_name(*kind));
        }
        let unit = if self.length == 1 { "byte" } else { "bytes" };
        format!("{label} [0x{:04x}, {} {unit}]", self.version, self.length)
    }
}

/// The name of a record's content type (RFC 8446 §5.1, RFC 6520); `None` for a byte that no TLS
/// version uses.
pub fn content_name(content_type: u8) -> Option<&'static str> {
    match content_type {
        20 => Some("change_cipher_spec"),
        21 => Some("alert"),
        22 => Some("handshake"),
        23 => Some("application_data"),
        24 => Some("heartbeat"),
        _ => None,
    }
}

/// The name of a handshake message type (RFC 8446 §4, RFC 5246 §7.4).
pub fn handshake_name(kind: u8) -> String {
    let name = match kind {
        0 => "HelloRequest",
        1 => "ClientHello",
        2 => "ServerHello",
        4 => "NewSessionTicket",
        5 => "EndOfEarlyData",
        8 => "EncryptedExtensions",
        11 => "Certificate",
        12 => "ServerKeyExchange",
        13 => "CertificateRequest",
        14 => "ServerHelloDone",
        15 => "CertificateVerify",
        16 => "ClientKeyExchange",
        20 => "Finished",
        24 => "KeyUpdate",
        other => return format!("handshake type {other}"),
    };
    name.to_string()
}

/// Whether a stream that starts with these bytes looks like TLS: a known content type, then major
/// version 3. A p2pchat line starts with `{`, which is none of them.
pub fn looks_like_tls(start: &[u8]) -> bool {
    match start {
        [] => false,
        [first] => content_name(*first).is_some(),
        [first, major, ..] => content_name(*first).is_some() && *major == 3,
    }
}

/// The bytes are not a sequence of TLS records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not TLS: a record header with content type {content_type}, version 0x{version:04x}, length {length}")]
pub struct NotTls {
    pub content_type: u8,
    pub version: u16,
    pub length: usize,
}

/// Reads the records of one direction of a TCP stream, from its first byte on.
#[derive(Debug, Default)]
pub struct RecordReader {
    header: Vec<u8>,
    /// The record whose body is being read.
    open: Option<TlsRecord>,
    /// Body bytes of the open record still to come.
    remaining: usize,
    /// The open record's body, kept only for a handshake record.
    body: Vec<u8>,
}

impl RecordReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; returns the records they finish, in order.
    ///
    /// # Errors
    /// [`NotTls`] when a record header is not TLS's; the reader is then of no further use.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<TlsRecord>, NotTls> {
        let mut finished = Vec::new();
        loop {
            if self.open.is_some() {
                let take = self.remaining.min(bytes.len());
                if self.open.as_ref().is_some_and(|r| r.content_type == 22) {
                    self.body.extend_from_slice(&bytes[..take]);
                }
                bytes = &bytes[take..];
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(finished);
                }
                if let Some(mut record) = self.open.take() {
                    if record.content_type == 22 {
                        record.handshake_types = handshake_types(&self.body);
                        self.body.clear();
                    }
                    finished.push(record);
                }
                continue;
            }
            if bytes.is_empty() {
                return Ok(finished);
            }
            let take = (RECORD_HEADER_BYTES - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() < RECORD_HEADER_BYTES {
                return Ok(finished);
            }
            let header = std::mem::take(&mut self.header);
            let content_type = header[0];
            let version = u16::from_be_bytes([header[1], header[2]]);
            let length = u16::from_be_bytes([header[3], header[4]]);
            let content = match content_name(content_type) {
                Some(name) if header[1] == 3 && usize::from(length) <= MAX_RECORD_LENGTH => name,
                _ => {
                    return Err(NotTls {
                        content_type,
                        version,
                        length: length.into(),
                    })
                }
            };
            self.open = Some(TlsRecord {
                content_type,
                content,
                version,
                length,
                handshake_types: Vec::new(),
            });
            self.remaining = length.into();
        }
    }
}

/// The types of the handshake messages that start in a clear handshake record's body; a message
/// continued in the next record is named where it starts.
fn handshake_types(mut body: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while body.len() >= HANDSHAKE_HEADER_BYTES {
        types.push(body[0]);
        let length = u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize;
        body = &body[(HANDSHAKE_HEADER_BYTES + length).min(body.len())..];
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content_type: u8, version: u16, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![content_type];
        bytes.extend_from_slice(&version.to_be_bytes());
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn records_are_read_across_any_split_and_named_where_they_end() {
        // A ServerHello, a change_cipher_spec and an encrypted record, as a TLS 1.3 server's
        // first flight.
        let hello = [2, 0, 0, 3, 0xaa, 0xbb, 0xcc];
        let mut stream = record(22, 0x0303, &hello);
        stream.extend(record(20, 0x0303, &[1]));
        stream.extend(record(23, 0x0303, &[0x55; 300]));
        for split in 0..stream.len() {
            let mut reader = RecordReader::new();
            let (a, b) = stream.split_at(split);
            let mut records = reader.push(a).unwrap();
            records.extend(reader.push(b).unwrap());
            let summary: Vec<(u8, u16, Vec<u8>)> = records
                .iter()
                .map(|r| (r.content_type, r.length, r.handshake_types.clone()))
                .collect();
            assert_eq!(
                summary,
                [(22, 7, vec![2]), (20, 1, vec![]), (23, 300, vec![])],
                "split at {split}"
            );
        }
        let mut reader = RecordReader::new();
        let first = reader.push(&stream[..20]).unwrap();
        assert_eq!(first[0].label(), "handshake ServerHello [0x0303, 7 bytes]");
    }

    #[test]
    fn two_handshake_messages_in_one_record_are_both_named() {
        let body = [2, 0, 0, 1, 9, 11, 0, 0, 0];
        let records = RecordReader::new()
            .push(&record(22, 0x0303, &body))
            .unwrap();
        assert_eq!(records[0].handshake_types, [2, 11]);
        assert_eq!(
            records[0].label(),
            "handshake ServerHello Certificate [0x0303, 9 bytes]"
        );
    }

    #[test]
    fn what_is_not_tls_is_refused() {
        assert!(!looks_like_tls(b"{\"type\":\"hello\"}"));
        assert!(!looks_like_tls(b""));
        assert!(looks_like_tls(&[22, 3, 1]));
        assert!(!looks_like_tls(&[22, 4]));
        assert!(RecordReader::new().push(&[99, 3, 3, 0, 1, 0]).is_err());
        assert!(RecordReader::new().push(&[23, 3, 3, 0xff, 0xff]).is_err());
        assert!(RecordReader::new().push(&[23, 2, 0, 0, 1]).is_err());
    }
}
