//! Reading a capture file: the pcap or pcapng container, its link type, and its packets' bytes.
//!
//! The containers are parsed by `pcap-file`; this module only tells the formats apart by their magic
//! number, keeps track of where in the file each record starts (so an error can name the byte
//! offset and the packet number), and refuses link types the dissector cannot read. It never looks
//! inside a packet: that is [`super::packet`]'s job.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError};
use serde::Serialize;

/// The first four bytes of a pcap file, in either byte order, microsecond or nanosecond stamps.
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];

/// The block type of a pcapng Section Header Block, the first block of every pcapng file.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// The container a capture came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    Pcap,
    Pcapng,
}

impl fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaptureFormat::Pcap => "pcap",
            CaptureFormat::Pcapng => "pcapng",
        })
    }
}

/// The link-layer header every packet of an interface starts with: the ones the dissector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkType {
    /// DLT_EN10MB (1): an Ethernet II header (what tcpdump writes for `-i eth0`).
    Ethernet,
    /// DLT_LINUX_SLL (113): Linux "cooked" capture v1 (tcpdump `-i any` before libpcap 1.10,
    /// or `-y LINUX_SLL`).
    LinuxSll,
    /// DLT_LINUX_SLL2 (276): Linux "cooked" capture v2 (tcpdump `-i any` with libpcap ≥ 1.10).
    LinuxSll2,
    /// DLT_RAW (101) or LINKTYPE_IPV4/IPV6 (228/229): the packet starts with its IP header.
    RawIp,
}

impl LinkType {
    fn from_datalink(datalink: DataLink) -> Option<Self> {
        match datalink {
            DataLink::ETHERNET => Some(LinkType::Ethernet),
            DataLink::LINUX_SLL => Some(LinkType::LinuxSll),
            DataLink::LINUX_SLL2 => Some(LinkType::LinuxSll2),
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(LinkType::RawIp),
            _ => None,
        }
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkType::Ethernet => "Ethernet",
            LinkType::LinuxSll => "Linux cooked v1 (SLL)",
            LinkType::LinuxSll2 => "Linux cooked v2 (SLL2)",
            LinkType::RawIp => "raw IP",
        })
    }
}

/// One captured packet, as the container holds it.
#[derive(Debug, Clone)]
pub struct RawPacket {
    /// 1-based, in file order: Wireshark's `frame.number`.
    pub number: usize,
    /// Since the Unix epoch, as stamped by the capturing machine.
    pub timestamp: Duration,
    /// How long the packet was on the wire; more than `data.len()` when the snapshot length cut it.
    pub original_len: u32,
    pub link: LinkType,
    pub data: Vec<u8>,
}

/// A whole capture file, read into memory.
#[derive(Debug, Clone)]
pub struct Capture {
    pub path: PathBuf,
    pub format: CaptureFormat,
    pub packets: Vec<RawPacket>,
}

/// Why a capture could not be read. Every variant names the file; those about its content name the
/// byte offset of the record that failed and, for packets, the packet's number.
#[derive(Debug)]
pub enum CaptureError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Neither a pcap nor a pcapng magic number at the start.
    NotACapture { path: PathBuf, first_bytes: Vec<u8> },
    /// The file ends inside a header or a record.
    Truncated {
        path: PathBuf,
        offset: usize,
        record: Record,
    },
    /// A header or record whose fields make no sense.
    Malformed {
        path: PathBuf,
        offset: usize,
        record: Record,
        reason: String,
    },
    /// An interface (or the whole pcap file) whose link type the dissector cannot read.
    UnknownLinkType {
        path: PathBuf,
        offset: usize,
        link: u32,
        name: String,
    },
}

/// What was being read when an error occurred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The pcap global header or the first pcapng section header.
    FileHeader,
    /// The record of this packet (1-based) in a pcap file.
    Packet(usize),
    /// A pcapng block: its index in the file (1-based, the section header is 1) and how many
    /// packets came before it.
    Block { index: usize, after_packets: usize },
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::FileHeader => f.write_str("the file header"),
            Record::Packet(n) => write!(f, "the record of packet {n}"),
            Record::Block {
                index,
                after_packets,
            } => write!(
                f,
                "pcapng block {index} (the block after packet {after_packets})"
            ),
        }
    }
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Io { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            CaptureError::NotACapture { path, first_bytes } => {
                let hex: Vec<String> = first_bytes.iter().map(|b| format!("{b:02x}")).collect();
                write!(
                    f,
                    "{}: not a capture file (pcap or pcapng): it starts with [{}]",
                    path.display(),
                    hex.join(" ")
                )
            }
            CaptureError::Truncated {
                path,
                offset,
                record,
            } => write!(
                f,
                "{}: truncated: the file ends inside {record}, which starts at byte offset {offset}",
                path.display()
            ),
            CaptureError::Malformed {
                path,
                offset,
                record,
                reason,
            } => write!(
                f,
                "{}: malformed {record} at byte offset {offset}: {reason}",
                path.display()
            ),
            CaptureError::UnknownLinkType {
                path,
                offset,
                link,
                name,
            } => write!(
                f,
                "{}: unsupported link type {link} ({name}) declared at byte offset {offset}; \
                 p2pchat-trace reads Ethernet (1), Linux cooked v1 (113) and v2 (276), raw IP (101)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CaptureError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Capture {
    /// Reads and parses the capture at `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not a pcap/pcapng file, is cut short, is malformed, or uses a
    /// link type the dissector does not read.
    pub fn open(path: impl AsRef<Path>) -> Result<Capture, CaptureError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| CaptureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Capture::from_bytes(path, &bytes)
    }

    /// Parses a capture already in memory; `path` only names it in errors.
    ///
    /// # Errors
    /// As [`Capture::open`], but for the file's content.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Capture, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let magic: Option<[u8; 4]> = bytes.get(..4).and_then(|m| m.try_into().ok());
        match magic {
            Some(m) if PCAP_MAGICS.contains(&m) => read_pcap(path, bytes),
            Some(m) if m == PCAPNG_MAGIC => read_pcapng(path, bytes),
            _ => Err(CaptureError::NotACapture {
                path,
                first_bytes: bytes.iter().take(8).copied().collect(),
            }),
        }
    }
}

/// Turns a pcap-file error at `offset` into ours.
fn container_error(path: &Path, offset: usize, record: Record, error: PcapError) -> CaptureError {
    match error {
        PcapError::IncompleteBuffer => CaptureError::Truncated {
            path: path.to_path_buf(),
            offset,
            record,
        },
        other => CaptureError::Malformed {
            path: path.to_path_buf(),
            offset,
            record,
            reason: other.to_string(),
        },
    }
}

fn read_pcap(path: PathBuf, bytes: &[u8]) -> Result<Capture, CaptureError> {
    let (mut rest, parser) =
        PcapParser::new(bytes).map_err(|e| container_error(&path, 0, Record::FileHeader, e))?;
    let header = parser.header();
    let link = LinkType::from_datalink(header.datalink).ok_or_else(|| {
        let code = u32::from(header.datalink);
        CaptureError::UnknownLinkType {
            path: path.clone(),
            offset: 0,
            link: code,
            name: format!("{:?}", header.datalink),
        }
    })?;
    let mut packets = Vec::new();
    while !rest.is_empty() {
        let number = packets.len() + 1;
        let offset = bytes.len() - rest.len();
        let (next, packet) = parser
            .next_packet(rest)
            .map_err(|e| container_error(&path, offset, Record::Packet(number), e))?;
        packets.push(RawPacket {
            number,
            timestamp: packet.timestamp,
            original_len: packet.orig_len,
            link,
            data: packet.data.into_owned(),
        });
        rest = next;
    }
    Ok(Capture {
        path,
        format: CaptureFormat::Pcap,
        packets,
    })
}

fn read_pcapng(path: PathBuf, bytes: &[u8]) -> Result<Capture, CaptureError> {
    let (mut rest, mut parser) =
        PcapNgParser::new(bytes).map_err(|e| container_error(&path, 0, Record::FileHeader, e))?;
    let mut packets = Vec::new();
    let mut index = 1;
    while !rest.is_empty() {
        index += 1;
        let number = packets.len() + 1;
        let offset = bytes.len() - rest.len();
        let record = Record::Block {
            index,
            after_packets: packets.len(),
        };
        let (next, block) = parser
            .next_block(rest)
            .map_err(|e| container_error(&path, offset, record, e))?;
        // Which interface a packet came from decides its link type; a Simple Packet Block has no
        // interface field and belongs to the first interface.
        // Timestamps count units of the interface's resolution; pcap-file hands the raw count back
        // as nanoseconds whatever the resolution, so it is converted below.
        let (interface, units, original_len, data) = match block {
            Block::EnhancedPacket(epb) => (
                epb.interface_id,
                u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX),
                epb.original_len,
                epb.data.into_owned(),
            ),
            Block::SimplePacket(spb) => (0, 0, spb.original_len, spb.data.into_owned()),
            Block::Packet(pb) => (
                u32::from(pb.interface_id),
                pb.timestamp,
                pb.original_len,
                pb.data.into_owned(),
            ),
            Block::InterfaceDescription(idb) => {
                if LinkType::from_datalink(idb.linktype).is_none() {
                    return Err(CaptureError::UnknownLinkType {
                        path,
                        offset,
                        link: u32::from(idb.linktype),
                        name: format!("{:?}", idb.linktype),
                    });
                }
                rest = next;
                continue;
            }
            // Section headers, statistics, name resolution, journal and unknown blocks carry no
            // packet.
            _ => {
                rest = next;
                continue;
            }
        };
        let idb = parser.interfaces().get(interface as usize);
        let timestamp = idb.map_or(Duration::ZERO, |idb| {
            let resolution = idb.options.iter().find_map(|option| match option {
                InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                _ => None,
            });
            timestamp_of(units, resolution)
        });
        let link = idb
            .and_then(|idb| LinkType::from_datalink(idb.linktype))
            .ok_or_else(|| CaptureError::Malformed {
                path: path.clone(),
                offset,
                record,
                reason: format!(
                    "packet of interface {interface}, which no interface block declares"
                ),
            })?;
        packets.push(RawPacket {
            number,
            timestamp,
            original_len,
            link,
            data,
        });
        rest = next;
    }
    Ok(Capture {
        path,
        format: CaptureFormat::Pcapng,
        packets,
    })
}

/// A pcapng timestamp: `units` since the epoch, in the resolution of the interface's `if_tsresol`
/// option (absent: microseconds; high bit clear: 10^-n seconds; set: 2^-n seconds).
fn timestamp_of(units: u64, if_tsresol: Option<u8>) -> Duration {
    let resolution = if_tsresol.unwrap_or(6);
    let exponent = u32::from(resolution & 0x7f);
    let per_second: u128 = if resolution & 0x80 == 0 {
        10u128.checked_pow(exponent)
    } else {
        2u128.checked_pow(exponent)
    }
    .unwrap_or(u128::MAX)
    .max(1);
    let units = u128::from(units);
    let nanos = (units % per_second) * 1_000_000_000 / per_second;
    let secs = u64::try_from(units / per_second).unwrap_or(u64::MAX);
    Duration::new(secs, nanos as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap global header (little-endian, microseconds, snaplen 65535) for `link`.
    fn pcap_header(link: u32) -> Vec<u8> {
        let mut h = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&link.to_le_bytes());
        h
    }

    fn pcap_record(data: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&1u32.to_le_bytes());
        r.extend_from_slice(&2u32.to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(data);
        r
    }

    #[test]
    fn a_pcap_file_gives_its_packets_numbered_from_one() {
        let mut file = pcap_header(1);
        file.extend(pcap_record(&[1, 2, 3]));
        file.extend(pcap_record(&[4, 5]));
        let capture = Capture::from_bytes("x.pcap", &file).unwrap();
        assert_eq!(capture.format, CaptureFormat::Pcap);
        assert_eq!(capture.packets.len(), 2);
        assert_eq!(capture.packets[0].number, 1);
        assert_eq!(capture.packets[1].data, vec![4, 5]);
        assert_eq!(capture.packets[1].link, LinkType::Ethernet);
        assert_eq!(capture.packets[0].timestamp, Duration::new(1, 2_000));
    }

    #[test]
    fn pcapng_timestamps_follow_the_interfaces_resolution() {
        assert_eq!(timestamp_of(1_500_000, None), Duration::from_millis(1_500));
        assert_eq!(
            timestamp_of(1_500_000_000, Some(9)),
            Duration::from_millis(1_500)
        );
        assert_eq!(
            timestamp_of(3 * 1024 + 512, Some(0x80 | 10)),
            Duration::from_millis(3_500)
        );
        // Nonsense resolutions never panic.
        let _ = timestamp_of(u64::MAX, Some(0x7f));
        let _ = timestamp_of(u64::MAX, Some(0xff));
        let _ = timestamp_of(u64::MAX, Some(0));
    }

    #[test]
    fn text_is_not_a_capture() {
        let err = Capture::from_bytes("notes.txt", b"hello world").unwrap_err();
        assert!(matches!(err, CaptureError::NotACapture { .. }), "{err}");
        assert!(err.to_string().contains("notes.txt"), "{err}");
        let empty = Capture::from_bytes("empty", b"").unwrap_err();
        assert!(matches!(empty, CaptureError::NotACapture { .. }));
    }

    #[test]
    fn a_cut_record_names_its_offset_and_packet() {
        let mut file = pcap_header(1);
        file.extend(pcap_record(&[1, 2, 3]));
        let second = file.len();
        file.extend(pcap_record(&[9; 40]));
        file.truncate(file.len() - 5);
        match Capture::from_bytes("cut.pcap", &file).unwrap_err() {
            CaptureError::Truncated { offset, record, .. } => {
                assert_eq!(offset, second);
                assert_eq!(record, Record::Packet(2));
            }
            other => panic!("expected Truncated, got {other}"),
        }
    }

    #[test]
    fn every_prefix_of_a_capture_is_an_error_or_a_shorter_capture_never_a_panic() {
        let mut file = pcap_header(113);
        for n in 0..3 {
            file.extend(pcap_record(&[n; 30]));
        }
        for len in 0..file.len() {
            let _ = Capture::from_bytes("prefix", &file[..len]);
        }
    }

    #[test]
    fn an_unknown_link_type_is_refused_by_name() {
        let file = pcap_header(105); // IEEE 802.11
        let err = Capture::from_bytes("wifi.pcap", &file).unwrap_err();
        assert!(
            matches!(err, CaptureError::UnknownLinkType { link: 105, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("105"), "{err}");
    }
}
