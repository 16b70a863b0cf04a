//! Reading the DNS messages of a capture (RFC 1035 §4): the lab's clients ask its DNS server for
//! `chat.lab` before their first TCP segment, and the diagram names each query and answer. Also
//! multicast DNS (RFC 6762, port 5353), the same format on another port: a p2pchat server's
//! announcement of `_p2pchat._tcp.local.` and a client looking for it ([`DnsMessage::parse_mdns`]),
//! each shown as what it does — a probe, a query, an answer naming the service found, a goodbye.
//!
//! Parsed here rather than with a crate: the part a diagram needs is small — the 12-byte header,
//! the questions, and the answer section's records, with name compression (§4.1.4) — and the
//! crates that parse DNS (hickory-proto, domain) bring a resolver's worth of code for it. Only
//! what is read is checked: a name's pointers may only go backwards (so a loop is impossible),
//! names stop at 255 bytes, and every count is bounded by the bytes that are there.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use thiserror::Error;

/// The port a DNS server listens on (RFC 1035 §4.2.1).
pub const DNS_PORT: u16 = 53;

/// The port of multicast DNS (RFC 6762 §3): queries and answers both go to 224.0.0.251:5353.
pub const MDNS_PORT: u16 = 5353;

/// Length of the fixed header.
const HEADER_BYTES: usize = 12;
/// The longest name, in wire bytes (RFC 1035 §2.3.4).
const MAX_NAME_BYTES: usize = 255;

/// What makes bytes not a DNS message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DnsError {
    #[error("{0} bytes: shorter than a DNS header")]
    TooShort(usize),
    #[error("the message ends inside {0}")]
    Truncated(&'static str),
    #[error("a name's compression pointer at byte {0} does not point backwards")]
    BadPointer(usize),
    #[error("a name is longer than 255 bytes")]
    NameTooLong,
    #[error("label type {0:#04x} is not a length or a pointer")]
    BadLabel(u8),
}

/// One DNS message: a query or a response, with its questions and answer records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsMessage {
    pub id: u16,
    /// The QR bit: a response (true) or a query.
    pub response: bool,
    /// The AA bit: the answering server is authoritative for the name.
    pub authoritative: bool,
    /// RCODE: 0 no error, 3 the name does not exist (NXDOMAIN), …
    pub rcode: u8,
    pub questions: Vec<Question>,
    /// The answer section (not the authority or additional sections).
    pub answers: Vec<Record>,
    /// Multicast DNS (port 5353): shown as mDNS, its records read whole.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mdns: bool,
    /// mDNS only: the authority and additional sections' records (a probe's proposed records,
    /// the SRV, TXT and addresses sent along with an answer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_records: Vec<Record>,
    /// mDNS only: a query with proposed records in its authority section, a probe (RFC 6762
    /// §8.1): "is anyone using these names?".
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Question {
    pub name: String,
    /// QTYPE: 1 A, 28 AAAA, … (`type_name` spells it).
    pub qtype: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    pub ttl: u32,
    /// The address of an A or AAAA record, the name of a CNAME, NS or PTR; `PRIORITY WEIGHT PORT
    /// TARGET` of an SRV and the quoted strings of a TXT (as dig writes them) in mDNS; otherwise
    /// the data's length.
    pub data: String,
}

/// The mnemonic of a record type (RFC 1035 §3.2.2, RFC 3596), or `TYPE<n>` (RFC 3597's spelling).
pub fn type_name(rtype: u16) -> String {
    match rtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

impl DnsMessage {
    /// Parses a DNS message carried in one UDP datagram.
    ///
    /// # Errors
    /// Bytes that end early, names with a forward or looping pointer, names over 255 bytes.
    pub fn parse(bytes: &[u8]) -> Result<DnsMessage, DnsError> {
        DnsMessage::parse_as(bytes, false)
    }

    /// Parses a multicast DNS message (RFC 6762): the same format, every section read, SRV and
    /// TXT data spelt out.
    ///
    /// # Errors
    /// As [`DnsMessage::parse`].
    pub fn parse_mdns(bytes: &[u8]) -> Result<DnsMessage, DnsError> {
        DnsMessage::parse_as(bytes, true)
    }

    fn parse_as(bytes: &[u8], mdns: bool) -> Result<DnsMessage, DnsError> {
        if bytes.len() < HEADER_BYTES {
            return Err(DnsError::TooShort(bytes.len()));
        }
        let word = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let flags = word(2);
        let (qdcount, ancount, nscount, arcount) = (word(4), word(6), word(8), word(10));
        let mut at = HEADER_BYTES;
        // Each question takes at least 5 bytes, each record 11: counts beyond what the bytes can
        // hold fail as truncated without allocating for them.
        let mut questions = Vec::new();
        for _ in 0..qdcount {
            let name = read_name(bytes, &mut at)?;
            let fixed = take(bytes, &mut at, 4, "a question")?;
            questions.push(Question {
                name,
                qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
            });
        }
        let mut answers = Vec::new();
        for _ in 0..ancount {
            answers.push(read_record(bytes, &mut at, mdns)?);
        }
        let mut other_records = Vec::new();
        if mdns {
            for _ in 0..u32::from(nscount) + u32::from(arcount) {
                other_records.push(read_record(bytes, &mut at, mdns)?);
            }
        }
        Ok(DnsMessage {
            id: word(0),
            response: flags & 0x8000 != 0,
            authoritative: flags & 0x0400 != 0,
            rcode: (flags & 0x000f) as u8,
            questions,
            answers,
            mdns,
            other_records,
            probe: mdns && flags & 0x8000 == 0 && nscount > 0,
        })
    }
}

/// Reads one resource record at `*at`; `mdns`: SRV and TXT data spelt out.
fn read_record(bytes: &[u8], at: &mut usize, mdns: bool) -> Result<Record, DnsError> {
    let name = read_name(bytes, at)?;
    let fixed = take(bytes, at, 10, "a record")?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let start = *at;
    let rdata = take(bytes, at, rdlength, "a record's data")?;
    let data = match (rtype, rdata.len()) {
        (1, 4) => Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string(),
        (28, 16) => {
            let octets: [u8; 16] = rdata.try_into().expect("16 bytes");
            Ipv6Addr::from(octets).to_string()
        }
        (5 | 2 | 12, _) => read_name(bytes, &mut start.clone())?,
        // PRIORITY WEIGHT PORT TARGET (RFC 2782), the target possibly compressed.
        (33, 7..) if mdns => {
            let word = |i: usize| u16::from_be_bytes([rdata[i], rdata[i + 1]]);
            let target = read_name(bytes, &mut (start + 6))?;
            format!("{} {} {} {target}", word(0), word(2), word(4))
        }
        (16, _) if mdns => txt_strings(rdata)?,
        (_, n) => format!("{n} bytes"),
    };
    Ok(Record {
        name,
        rtype,
        ttl,
        data,
    })
}

/// A TXT record's strings (RFC 1035 §3.3.14: each a length byte and that many bytes), quoted and
/// separated by spaces as dig writes them.
fn txt_strings(rdata: &[u8]) -> Result<String, DnsError> {
    let mut strings = Vec::new();
    let mut at = 0;
    while at < rdata.len() {
        let len = usize::from(rdata[at]);
        let text = rdata
            .get(at + 1..at + 1 + len)
            .ok_or(DnsError::Truncated("a TXT string"))?;
        strings.push(format!("{:?}", String::from_utf8_lossy(text)));
        at += 1 + len;
    }
    Ok(strings.join(" "))
}

impl DnsMessage {
    /// The A records' addresses, in order (what tshark calls `dns.a`).
    pub fn a_records(&self) -> Vec<String> {
        self.answers
            .iter()
            .filter(|r| r.rtype == 1)
            .map(|r| r.data.clone())
            .collect()
    }
}

impl fmt::Display for DnsMessage {
    /// `DNS query A chat.lab`, `DNS response A chat.lab: A 10.20.30.3 (authoritative)`,
    /// `DNS response AAAA chat.lab: no record (NOERROR)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mdns {
            return self.fmt_mdns(f);
        }
        let asked: Vec<String> = self
            .questions
            .iter()
            .map(|q| format!("{} {}", type_name(q.qtype), q.name))
            .collect();
        let asked = if asked.is_empty() {
            "(no question)".to_string()
        } else {
            asked.join(", ")
        };
        if !self.response {
            return write!(f, "DNS query {asked}");
        }
        write!(f, "DNS response {asked}: ")?;
        if self.answers.is_empty() {
            write!(f, "no record ({})", rcode_name(self.rcode))?;
        } else {
            let records: Vec<String> = self
                .answers
                .iter()
                .map(|r| format!("{} {}", type_name(r.rtype), r.data))
                .collect();
            f.write_str(&records.join(", "))?;
            if self.rcode != 0 {
                write!(f, " ({})", rcode_name(self.rcode))?;
            }
        }
        if self.authoritative {
            f.write_str(" (authoritative)")?;
        }
        Ok(())
    }
}

impl DnsMessage {
    /// `mDNS query PTR _p2pchat._tcp.local`; `mDNS probe ANY labpc:12000._p2pchat._tcp.local`;
    /// `mDNS answer: service labpc:12000._p2pchat._tcp.local found (PTR _p2pchat._tcp.local), SRV
    /// … port 12000 on labpc.local, TXT "tls=1" …, A labpc.local 10.20.30.3`; `mDNS goodbye: …`
    /// when every record's TTL is 0 (RFC 6762 §10.1: forget it now).
    fn fmt_mdns(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let asked: Vec<String> = self
            .questions
            .iter()
            .map(|q| format!("{} {}", type_name(q.qtype), q.name))
            .collect();
        if !self.response {
            let kind = if self.probe { "probe" } else { "query" };
            return write!(f, "mDNS {kind} {}", asked.join(", "));
        }
        let records: Vec<&Record> = self.answers.iter().chain(&self.other_records).collect();
        let goodbye = !records.is_empty() && records.iter().all(|r| r.ttl == 0);
        let said: Vec<String> = records
            .iter()
            .map(|r| match r.rtype {
                // A service type's PTR names an instance of it: the service found.
                12 if r.name.starts_with('_') => {
                    let what = if goodbye { "withdrawn" } else { "found" };
                    format!("service {} {what} (PTR {})", r.data, r.name)
                }
                33 => match r.data.splitn(4, ' ').collect::<Vec<_>>()[..] {
                    [_, _, port, target] => format!("SRV {} port {port} on {target}", r.name),
                    _ => format!("SRV {} {}", r.name, r.data),
                },
                rtype => format!("{} {} {}", type_name(rtype), r.name, r.data),
            })
            .collect();
        let kind = if goodbye { "goodbye" } else { "answer" };
        write!(f, "mDNS {kind}: {}", said.join(", "))
    }
}

fn take<'a>(
    bytes: &'a [u8],
    at: &mut usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], DnsError> {
    let slice = bytes.get(*at..*at + len).ok_or(DnsError::Truncated(what))?;
    *at += len;
    Ok(slice)
}

/// Reads a name at `*at`, following compression pointers; leaves `*at` after the name's bytes
/// in place (after the first pointer, if any).
fn read_name(bytes: &[u8], at: &mut usize) -> Result<String, DnsError> {
    let mut labels: Vec<String> = Vec::new();
    let mut wire_len = 0usize;
    let mut pos = *at;
    let mut resume: Option<usize> = None;
    loop {
        let len = *bytes.get(pos).ok_or(DnsError::Truncated("a name"))?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                pos += 1;
                break;
            }
            0x00 => {
                let label = bytes
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or(DnsError::Truncated("a name"))?;
                wire_len += 1 + label.len();
                if wire_len > MAX_NAME_BYTES {
                    return Err(DnsError::NameTooLong);
                }
                labels.push(String::from_utf8_lossy(label).into_owned());
                pos += 1 + usize::from(len);
            }
            0xc0 => {
                let low = *bytes.get(pos + 1).ok_or(DnsError::Truncated("a name"))?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                // Only backwards, to the start of an earlier name: every jump makes progress
                // towards the start of the message, so there is no loop.
                if target >= pos {
                    return Err(DnsError::BadPointer(pos));
                }
                resume.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(DnsError::BadLabel(len)),
        }
    }
    *at = resume.unwrap_or(pos);
    Ok(if labels.is_empty() {
        ".".into()
    } else {
        labels.join(".")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnsmasq's answer to client1's query for chat.lab in the lab (newclient.pcap), byte for byte.
    fn answer() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x04chat\x03lab\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 20, 30, 3]);
        m
    }

    #[test]
    fn a_query_and_its_answer_are_read_with_compressed_names() {
        let query =
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04chat\x03lab\x00\x00\x1c\x00\x01";
        let query = DnsMessage::parse(query).unwrap();
        assert!(!query.response);
        assert_eq!(query.to_string(), "DNS query AAAA chat.lab");

        let answer = DnsMessage::parse(&answer()).unwrap();
        assert!(answer.response && answer.authoritative);
        assert_eq!(answer.answers[0].name, "chat.lab");
        assert_eq!(answer.a_records(), vec!["10.20.30.3".to_string()]);
        assert_eq!(
            answer.to_string(),
            "DNS response A chat.lab: A 10.20.30.3 (authoritative)"
        );
    }

    #[test]
    fn an_empty_answer_names_its_rcode() {
        let mut m = answer();
        m[7] = 0; // no answer record
        m[3] = 0x83; // NXDOMAIN
        m.truncate(26);
        assert_eq!(
            DnsMessage::parse(&m).unwrap().to_string(),
            "DNS response A chat.lab: no record (NXDOMAIN) (authoritative)"
        );
    }

    /// An mDNS answer as mdns-sd sends it for a p2pchat server: PTR, then SRV, TXT and A.
    fn mdns_answer(ttl: u32) -> Vec<u8> {
        let ttl = ttl.to_be_bytes();
        let mut m = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 3];
        // At 12: _p2pchat._tcp.local ("local" at 26), the PTR's name; its data at 43.
        m.extend_from_slice(b"\x08_p2pchat\x04_tcp\x05local\x00\x00\x0c\x00\x01");
        m.extend_from_slice(&ttl);
        m.extend_from_slice(&[0, 14]);
        m.extend_from_slice(b"\x0blabpc:12000\xc0\x0c");
        assert_eq!(m.len(), 57);
        // SRV of the instance (at 43): 0 0 12000, target labpc.local (at 75).
        m.extend_from_slice(&[0xc0, 43, 0, 33, 0x80, 1]);
        m.extend_from_slice(&ttl);
        m.extend_from_slice(&[0, 14, 0, 0, 0, 0, 0x2e, 0xe0]);
        assert_eq!(m.len(), 75);
        m.extend_from_slice(b"\x05labpc\xc0\x1a");
        // TXT of the instance.
        m.extend_from_slice(&[0xc0, 43, 0, 16, 0x80, 1]);
        m.extend_from_slice(&ttl);
        m.extend_from_slice(&[0, 12]);
        m.extend_from_slice(b"\x05tls=1\x05fp=SH");
        // A of labpc.local.
        m.extend_from_slice(&[0xc0, 75, 0, 1, 0x80, 1]);
        m.extend_from_slice(&ttl);
        m.extend_from_slice(&[0, 4, 10, 20, 30, 3]);
        m
    }

    #[test]
    fn an_mdns_answer_names_the_service_found_and_where_it_is() {
        let answer = DnsMessage::parse_mdns(&mdns_answer(120)).unwrap();
        assert!(answer.mdns && answer.response);
        assert_eq!(
            answer.to_string(),
            "mDNS answer: service labpc:12000._p2pchat._tcp.local found (PTR \
             _p2pchat._tcp.local), SRV labpc:12000._p2pchat._tcp.local port 12000 on \
             labpc.local, TXT labpc:12000._p2pchat._tcp.local \"tls=1\" \"fp=SH\", A \
             labpc.local 10.20.30.3"
        );
        let goodbye = DnsMessage::parse_mdns(&mdns_answer(0)).unwrap();
        assert!(goodbye
            .to_string()
            .starts_with("mDNS goodbye: service labpc:12000._p2pchat._tcp.local withdrawn"));
        // Read as plain DNS it keeps today's shape: the answer section only, no SRV spelt out.
        let plain = DnsMessage::parse(&mdns_answer(120)).unwrap();
        assert!(!plain.mdns && plain.other_records.is_empty());
        // Every prefix fails cleanly.
        let full = mdns_answer(120);
        for end in 0..full.len() {
            assert!(
                DnsMessage::parse_mdns(&full[..end]).is_err(),
                "prefix of {end}"
            );
        }
    }

    #[test]
    fn an_mdns_query_and_a_probe_are_told_apart() {
        let mut query = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(b"\x08_p2pchat\x04_tcp\x05local\x00\x00\x0c\x00\x01");
        assert_eq!(
            DnsMessage::parse_mdns(&query).unwrap().to_string(),
            "mDNS query PTR _p2pchat._tcp.local"
        );
        // A probe: a question for the name, the proposed record in the authority section.
        let mut probe = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0];
        probe.extend_from_slice(b"\x05labpc\x05local\x00\x00\xff\x00\x01");
        probe.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 120, 0, 4, 10, 20, 30, 3]);
        let probe = DnsMessage::parse_mdns(&probe).unwrap();
        assert!(probe.probe);
        assert_eq!(probe.to_string(), "mDNS probe ANY labpc.local");
    }

    #[test]
    fn forward_pointers_truncation_and_huge_counts_are_refused_without_panic() {
        let mut looping = answer();
        looping[27] = 40; // the answer's name points beyond itself
        assert!(matches!(
            DnsMessage::parse(&looping),
            Err(DnsError::BadPointer(_))
        ));
        let full = answer();
        for end in 0..full.len() {
            assert!(DnsMessage::parse(&full[..end]).is_err(), "prefix of {end}");
        }
        let mut counts = answer();
        counts[4..8].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(DnsMessage::parse(&counts).is_err());
        let mut too_long = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            too_long.push(63);
            too_long.extend_from_slice(&[b'a'; 63]);
        }
        too_long.push(0);
        assert_eq!(DnsMessage::parse(&too_long), Err(DnsError::NameTooLong));
    }
}
