//! `p2pchat-trace` and the `trace` module on the captures `just lab` made (fixtures/captures/):
//! an Ethernet pcap from the server, a Linux cooked (v2) pcap from client1, and a pcapng of a new
//! client connecting and sending one direct message; and `encrypted.pcap`, alice's session in the
//! default mode (TLS to the server, a sealed direct message and its acknowledgement); and
//! `discovery.pcap`, the server's mDNS announcement and clients looking for it. The expected
//! numbers are tshark's on the same files (`tshark -o tcp.relative_sequence_numbers:FALSE -T fields
//! ...`, `tshark -d tcp.port==12000,tls ...` for TLS records; fixtures/README.md).
//! Needs neither root nor tcpdump.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use p2pchat::trace::diagram::Diagram;
use p2pchat::trace::handshake::{self, Fate, Side};
use p2pchat::trace::{self, udp, CaptureFormat, LinkType};
use serde_json::Value;

const SERVER_PCAP: &str = "captures/webserver.pcap";
const CLIENT1_PCAP: &str = "captures/client1.pcap";
const NEW_CLIENT_PCAPNG: &str = "captures/newclient.pcapng";
const ENCRYPTED_PCAP: &str = "captures/encrypted.pcap";

/// The lab's secrets, the same in its plaintext and its encrypted run (ci/lab.sh).
const PASSWORD: &str = "alice-password";
const ROOM_TEXT: &str = "hello room, alice here";
const DIRECT_TEXT: &str = "lab direct message 1: alice to bob, peer to peer";

fn fixture_capture(name: &str) -> PathBuf {
    common::fixture(name)
}

fn trace_cmd(args: &[&str]) -> Output {
    Command::cargo_bin("p2pchat-trace")
        .expect("p2pchat-trace is built")
        .args(args)
        .output()
        .expect("run p2pchat-trace")
}

fn json_of(args: &[&str]) -> Value {
    let output = trace_cmd(args);
    assert!(
        output.status.success(),
        "p2pchat-trace {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints one JSON value")
}

fn lab_names() -> HashMap<IpAddr, String> {
    [
        ("10.20.30.3", "webserver"),
        ("10.20.30.11", "client1"),
        ("10.20.30.12", "client2"),
        ("10.20.30.13", "client3"),
    ]
    .into_iter()
    .map(|(ip, name)| (ip.parse().unwrap(), name.to_string()))
    .collect()
}

#[test]
fn the_three_fixtures_are_the_three_container_and_link_types() {
    for (name, format, link, packets) in [
        (SERVER_PCAP, CaptureFormat::Pcap, LinkType::Ethernet, 93),
        (CLIENT1_PCAP, CaptureFormat::Pcap, LinkType::LinuxSll2, 46),
        (
            NEW_CLIENT_PCAPNG,
            CaptureFormat::Pcapng,
            LinkType::Ethernet,
            19,
        ),
    ] {
        let (capture, frames) = trace::load(fixture_capture(name)).unwrap();
        assert_eq!(capture.format, format, "{name}");
        assert_eq!(capture.packets.len(), packets, "{name}");
        assert!(capture.packets.iter().all(|p| p.link == link), "{name}");
        assert!(
            frames
                .iter()
                .all(|f| !matches!(f.content, trace::packet::Content::Undecodable { .. })),
            "{name}: every packet of the lab decodes"
        );
        let count = trace_cmd(&["count", fixture_capture(name).to_str().unwrap()]);
        assert_eq!(
            String::from_utf8_lossy(&count.stdout),
            format!("{packets}\n")
        );
    }
}

#[test]
fn handshakes_in_the_servers_capture_have_tsharks_absolute_numbers() {
    let (_, frames) = trace::load(fixture_capture(SERVER_PCAP)).unwrap();
    let found = handshake::handshakes(&frames);
    // (client, SYN packet, SYN seq, SYN-ACK packet, SYN-ACK seq, SYN-ACK ack), from tshark.
    let expected = [
        (
            "10.20.30.11:32928",
            3,
            2_697_066_002u32,
            4,
            49_496_634u32,
            2_697_066_003u32,
        ),
        (
            "10.20.30.12:50610",
            14,
            2_047_499_508,
            15,
            1_871_693_511,
            2_047_499_509,
        ),
        (
            "10.20.30.13:47292",
            27,
            1_225_141_811,
            28,
            1_144_338_765,
            1_225_141_812,
        ),
        (
            "10.20.30.11:55516",
            62,
            2_970_657_367,
            63,
            982_514_559,
            2_970_657_368,
        ),
    ];
    assert_eq!(found.len(), expected.len());
    for (h, (client, syn_packet, syn_seq, sa_packet, sa_seq, sa_ack)) in found.iter().zip(expected)
    {
        assert_eq!(h.client, client.parse().unwrap());
        assert_eq!(h.server, "10.20.30.3:12000".parse().unwrap());
        assert_eq!((h.syn_packet, h.syn_seq), (syn_packet, syn_seq), "{client}");
        assert_eq!(h.syn_ack_packet, Some(sa_packet), "{client}");
        assert_eq!((h.syn_ack_seq, h.syn_ack_ack), (Some(sa_seq), Some(sa_ack)));
        assert_eq!(h.ack_is_syn_seq_plus_one, Some(true));
        assert_eq!(
            h.ack_packet,
            Some(sa_packet + 1),
            "the ACK follows the SYN-ACK"
        );
        assert_eq!(h.syn_retransmissions, 0);
    }
    // Who sent the first FIN, per tshark's FIN list: after `quit` either end may be first.
    let fates: Vec<Fate> = found.iter().map(|h| h.fate).collect();
    let closed = |by, packet| Fate::Closed { by, packet };
    assert_eq!(
        fates,
        [
            closed(Side::Client, 52),
            closed(Side::Server, 87),
            closed(Side::Client, 89),
            closed(Side::Client, 77)
        ]
    );
}

#[test]
fn handshakes_json_and_host_filter() {
    let path = fixture_capture(SERVER_PCAP);
    let all = json_of(&["handshakes", path.to_str().unwrap(), "--json"]);
    assert_eq!(all["capture"]["packets"], 93);
    assert_eq!(all["capture"]["format"], "pcap");
    let first = &all["handshakes"][0];
    assert_eq!(first["client"], "10.20.30.11:32928");
    assert_eq!(first["syn_seq"], 2_697_066_002u64);
    assert_eq!(first["syn_ack_ack"], 2_697_066_003u64);
    assert_eq!(first["fate"]["state"], "closed");
    assert_eq!(first["fate"]["by"], "client");
    let client2 = json_of(&[
        "handshakes",
        path.to_str().unwrap(),
        "--host",
        "10.20.30.12",
        "--json",
    ]);
    assert_eq!(client2["handshakes"].as_array().unwrap().len(), 1);
    let text = trace_cmd(&["handshakes", path.to_str().unwrap()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("seq=49496634 ack=2697066003 = SYN seq + 1"),
        "{text}"
    );
}

#[test]
fn one_connection_seen_from_both_ends_and_in_both_containers_has_the_same_numbers() {
    let numbers = |name: &str| {
        let (_, frames) = trace::load(fixture_capture(name)).unwrap();
        handshake::handshakes(&frames)
            .into_iter()
            .find(|h| h.client == "10.20.30.11:55516".parse().unwrap())
            .map(|h| (h.syn_seq, h.syn_ack_seq, h.syn_ack_ack))
    };
    let expected = Some((2_970_657_367, Some(982_514_559), Some(2_970_657_368)));
    assert_eq!(numbers(SERVER_PCAP), expected);
    assert_eq!(numbers(CLIENT1_PCAP), expected);
    assert_eq!(numbers(NEW_CLIENT_PCAPNG), expected);
}

#[test]
fn udp_datagrams_in_the_linux_cooked_capture_have_tsharks_header_fields() {
    let (_, frames) = trace::load(fixture_capture(CLIENT1_PCAP)).unwrap();
    let datagrams = udp::datagrams(&frames);
    // (packet, length, checksum), from tshark; both client1:40001 -> client2:40002, protocol 17.
    let expected = [(23, 105u16, 0x50b9u16), (42, 100, 0x50b4)];
    assert_eq!(datagrams.len(), expected.len());
    for (d, (packet, length, checksum)) in datagrams.iter().zip(expected) {
        assert_eq!(d.packet, packet);
        assert_eq!(d.src, "10.20.30.11:40001".parse().unwrap());
        assert_eq!(d.dst, "10.20.30.12:40002".parse().unwrap());
        assert_eq!((d.length, d.checksum), (length, checksum));
        assert_eq!(d.payload_len, usize::from(length) - 8);
        assert_eq!(d.ip_protocol, 17);
        assert_eq!(d.p2pchat.as_deref(), Some("direct"));
        let header: Vec<u8> = d
            .header_hex
            .split(' ')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        assert_eq!(header[..2], 40001u16.to_be_bytes());
        assert_eq!(header[2..4], 40002u16.to_be_bytes());
        assert_eq!(header[4..6], length.to_be_bytes());
        assert_eq!(header[6..], checksum.to_be_bytes());
    }
    let answers = udp::answers(&datagrams);
    assert_eq!(answers.header_fields.len(), 4);
    assert!(answers.header_fields.iter().all(|f| f.bytes == 2));
    assert_eq!(answers.header_bytes, 8);
    assert_eq!(answers.max_payload_ipv4, 65_507);
    assert_eq!(answers.max_payload_udp_length_field, 65_527);
    assert_eq!(answers.max_port, 65_535);
    assert_eq!(answers.protocol_number, Some(17));
    assert_eq!(answers.protocol_number_packet, Some(23));
    let largest = answers.largest_payload_seen.unwrap();
    assert_eq!((largest.packet, largest.bytes), (23, 97));
}

#[test]
fn udp_command_answers_the_lab_and_the_server_saw_no_datagram() {
    let client = json_of(&[
        "udp",
        fixture_capture(CLIENT1_PCAP).to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(client["answers"]["protocol_number"], 17);
    assert_eq!(client["answers"]["direct_message"]["packet"], 23);
    assert_eq!(client["answers"]["largest_payload_seen"]["bytes"], 97);
    let text = String::from_utf8(
        trace_cmd(&["udp", fixture_capture(CLIENT1_PCAP).to_str().unwrap()]).stdout,
    )
    .unwrap();
    for needle in [
        "4 fields, 8 bytes of header",
        "65507",
        "65527",
        "65535",
        "protocol number: 17",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let server = json_of(&[
        "udp",
        fixture_capture(SERVER_PCAP).to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(server["datagrams"].as_array().unwrap().len(), 0);
    // The direct message's text is in client1's capture and nowhere in the server's.
    let text = b"lab direct message 1: alice to bob, peer to peer";
    let contains = |name: &str| {
        let bytes = std::fs::read(fixture_capture(name)).unwrap();
        bytes.windows(text.len()).any(|w| w == text)
    };
    assert!(contains(CLIENT1_PCAP));
    assert!(!contains(SERVER_PCAP));
}

#[test]
fn the_diagram_of_a_new_client_shows_every_packet_in_capture_order() {
    let (_, frames) = trace::load(fixture_capture(NEW_CLIENT_PCAPNG)).unwrap();
    let diagram = Diagram::build(&frames, &lab_names());
    let names: Vec<&str> = diagram
        .participants
        .iter()
        .map(|p| p.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["client1", "webserver", "client2"]);
    // Packet 1 is an IGMP report from 0.0.0.0 to 224.0.0.22: not between two hosts.
    assert_eq!(diagram.steps.len(), 18);
    assert_eq!(diagram.omitted, 1);
    let packets: Vec<usize> = diagram.steps.iter().map(|s| s.packet).collect();
    assert_eq!(packets, (2..=19).collect::<Vec<_>>());
    let protocols: String = diagram
        .steps
        .iter()
        .map(|s| s.protocol.chars().next().unwrap())
        .collect();
    assert_eq!(protocols, "AATTTTTTTTTAAUTTTT");
    assert!(diagram.steps[2].label.contains("[SYN] seq=2970657367"));
    assert!(diagram.steps[3]
        .label
        .contains("[SYN,ACK] seq=982514559 ack=2970657368"));
    let messages: Vec<String> = diagram
        .steps
        .iter()
        .flat_map(|s| s.messages.clone())
        .collect();
    assert_eq!(messages, ["hello", "login", "welcome", "direct", "quit"]);
    let direct = &diagram.steps[13];
    assert_eq!(
        (direct.from, direct.to),
        (0, 2),
        "client1 -> client2, not via the server"
    );
    let fins: Vec<usize> = diagram
        .steps
        .iter()
        .filter(|s| s.label.contains("FIN"))
        .map(|s| s.packet)
        .collect();
    assert_eq!(fins, [17, 18]);
}

#[test]
fn diagram_command_prints_mermaid_text_and_json() {
    let path = fixture_capture(NEW_CLIENT_PCAPNG);
    let path = path.to_str().unwrap();
    let names = [
        "--name",
        "10.20.30.3=webserver",
        "--name",
        "10.20.30.11=client1",
    ];
    let mermaid = trace_cmd(&[&["diagram", path][..], &names[..]].concat());
    let mermaid = String::from_utf8(mermaid.stdout).unwrap();
    assert!(mermaid.starts_with("sequenceDiagram\n"), "{mermaid}");
    assert!(mermaid.contains("participant h0 as client1 (10.20.30.11)"));
    assert!(
        mermaid.contains("participant h2 as 10.20.30.12\n"),
        "unnamed hosts keep their IP"
    );
    assert_eq!(mermaid.lines().filter(|l| l.contains("->>")).count(), 18);
    let text = trace_cmd(&[&["diagram", path, "--format", "text"][..], &names[..]].concat());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("|---------------->|"), "{text}");
    assert!(text.contains("UDP 40001→40002 len=92 direct"), "{text}");
    let json = json_of(&[&["diagram", path, "--json"][..], &names[..]].concat());
    assert_eq!(json["steps"].as_array().unwrap().len(), 18);
    assert_eq!(json["mermaid"].as_str().unwrap(), mermaid);
    let bad = trace_cmd(&["diagram", path, "--name", "chat.lab=webserver"]);
    assert_eq!(bad.status.code(), Some(2), "a bad --name is a usage error");
}

#[test]
fn the_reports_diagrams_are_the_ones_generated_from_the_committed_captures() {
    let report =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.md"))
            .expect("docs/report.md");
    let blocks: Vec<&str> = report
        .split("```mermaid\n")
        .skip(1)
        .map(|rest| &rest[..rest.find("```").expect("the block ends")])
        .collect();
    assert_eq!(
        blocks.len(),
        2,
        "the new client's diagram, then the encrypted run's"
    );
    let (_, server) = trace::load(fixture_capture(MERGED_SERVER_PCAP)).unwrap();
    let (_, client1) = trace::load(fixture_capture(MERGED_CLIENT1_PCAP)).unwrap();
    let (_, encrypted) = trace::load(fixture_capture(ENCRYPTED_PCAP)).unwrap();
    let generated = [
        Diagram::merge(&[&server, &client1], &lab_names_with_dns()).to_mermaid(),
        Diagram::build(&encrypted, &lab_names()).to_mermaid(),
    ];
    for (block, generated) in blocks.iter().zip(generated) {
        assert_eq!(
            *block, generated,
            "regenerate it: p2pchat-trace diagram fixtures/captures/... --name ... (docs/report.md says how)"
        );
    }
}

fn assert_refused(path: &Path, expected: &[&str]) {
    for command in ["count", "handshakes", "udp", "diagram"] {
        let output = trace_cmd(&[command, path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
        assert!(output.stdout.is_empty(), "{command}: nothing on stdout");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains(&*path.to_string_lossy()),
            "names the file: {stderr}"
        );
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{command}: {needle:?} missing in {stderr}"
            );
        }
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_exit_status_1() {
    let dir = tempfile::tempdir().unwrap();
    assert_refused(&common::fixture("users-ln10.json"), &["not a capture file"]);
    assert_refused(&dir.path().join("missing.pcap"), &["cannot read"]);

    let server = std::fs::read(fixture_capture(SERVER_PCAP)).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &server[..1000]).unwrap();
    assert_refused(&cut, &["truncated", "byte offset", "packet"]);

    let pcapng = std::fs::read(fixture_capture(NEW_CLIENT_PCAPNG)).unwrap();
    let cut_ng = dir.path().join("cut.pcapng");
    std::fs::write(&cut_ng, &pcapng[..pcapng.len() - 7]).unwrap();
    assert_refused(&cut_ng, &["truncated", "pcapng block", "byte offset"]);

    // The server's capture relabelled as IEEE 802.11 (link type 105).
    let mut wifi = server.clone();
    wifi[20..24].copy_from_slice(&105u32.to_le_bytes());
    let wifi_path = dir.path().join("wifi.pcap");
    std::fs::write(&wifi_path, wifi).unwrap();
    assert_refused(&wifi_path, &["unsupported link type 105"]);
}

#[test]
fn no_prefix_of_a_capture_makes_the_reader_panic() {
    for name in [SERVER_PCAP, CLIENT1_PCAP, NEW_CLIENT_PCAPNG, ENCRYPTED_PCAP] {
        let bytes = std::fs::read(fixture_capture(name)).unwrap();
        for len in (0..bytes.len()).step_by(13) {
            if let Ok(capture) = trace::Capture::from_bytes(name, &bytes[..len]) {
                let frames: Vec<_> = capture.packets.iter().map(trace::Frame::dissect).collect();
                let _ = handshake::handshakes(&frames);
                let _ = Diagram::build(&frames, &HashMap::new());
            }
        }
    }
}

fn contains(name: &str, text: &str) -> bool {
    let bytes = std::fs::read(fixture_capture(name)).unwrap();
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

#[test]
fn an_eavesdropper_reads_the_password_room_text_and_dm_in_the_plaintext_captures_and_none_in_the_encrypted_one(
) {
    assert!(contains(SERVER_PCAP, PASSWORD) && contains(CLIENT1_PCAP, PASSWORD));
    assert!(contains(SERVER_PCAP, ROOM_TEXT) && contains(CLIENT1_PCAP, ROOM_TEXT));
    assert!(contains(CLIENT1_PCAP, DIRECT_TEXT));
    for text in [PASSWORD, ROOM_TEXT, DIRECT_TEXT, "alice", "bob"] {
        assert!(
            !contains(ENCRYPTED_PCAP, text),
            "{text:?} in {ENCRYPTED_PCAP}"
        );
    }
}

#[test]
fn tls_records_in_the_encrypted_capture_have_tsharks_types_versions_and_lengths() {
    let (capture, frames) = trace::load(fixture_capture(ENCRYPTED_PCAP)).unwrap();
    assert_eq!(capture.format, CaptureFormat::Pcap);
    assert_eq!(capture.packets.len(), 25);
    assert!(capture.packets.iter().all(|p| p.link == LinkType::Ethernet));
    let diagram = Diagram::build(&frames, &lab_names());
    // (packet, content type, record version, length, handshake types), from `tshark -d
    // tcp.port==12000,tls -T json`: tls.record.content_type (or opaque_type), .version, .length,
    // tls.handshake.type.
    let expected: [(usize, u8, u16, u16, &[u8]); 13] = [
        (4, 22, 0x0301, 209, &[1]),
        (6, 22, 0x0303, 122, &[2]),
        (6, 20, 0x0303, 1, &[]),
        (6, 23, 0x0303, 523, &[]),
        (8, 20, 0x0303, 1, &[]),
        (9, 23, 0x0303, 69, &[]),
        (11, 23, 0x0303, 74, &[]),
        (12, 23, 0x0303, 161, &[]),
        (13, 23, 0x0303, 297, &[]),
        (15, 23, 0x0303, 64, &[]),
        (18, 23, 0x0303, 33, &[]),
        (20, 23, 0x0303, 19, &[]),
        (23, 23, 0x0303, 19, &[]),
    ];
    let found: Vec<(usize, u8, u16, u16, Vec<u8>)> = diagram
        .steps
        .iter()
        .flat_map(|s| {
            s.tls.iter().map(move |r| {
                (
                    s.packet,
                    r.content_type,
                    r.version,
                    r.length,
                    r.handshake_types.clone(),
                )
            })
        })
        .collect();
    let expected: Vec<(usize, u8, u16, u16, Vec<u8>)> = expected
        .iter()
        .map(|&(p, t, v, l, h)| (p, t, v, l, h.to_vec()))
        .collect();
    assert_eq!(found, expected);
    // No segment is read as p2pchat lines or called garbage.
    for step in &diagram.steps {
        assert!(step.messages.is_empty(), "packet {}", step.packet);
        assert!(!step.label.contains("not p2pchat"), "{}", step.label);
    }
    let label = |packet: usize| {
        let step = diagram.steps.iter().find(|s| s.packet == packet).unwrap();
        step.label.clone()
    };
    assert!(label(4).ends_with("len=214 TLS handshake ClientHello [0x0301, 209 bytes]"));
    assert!(label(6).ends_with(
        "TLS handshake ServerHello [0x0303, 122 bytes] + TLS change_cipher_spec [0x0303, 1 byte] \
         + TLS application_data [0x0303, 523 bytes]"
    ));
    assert!(label(9).ends_with("TLS application_data [0x0303, 69 bytes]"));
}

#[test]
fn sealed_datagrams_in_the_encrypted_capture_are_named_by_their_header() {
    let (_, frames) = trace::load(fixture_capture(ENCRYPTED_PCAP)).unwrap();
    let datagrams = udp::datagrams(&frames);
    // (packet, length, checksum, the first 18 payload bytes), from tshark's udp.length,
    // udp.checksum and udp.payload.
    let expected = [
        (
            16,
            139u16,
            0x50dbu16,
            "01013076fc4dda827dfa0000000000000001",
        ),
        (17, 50, 0x5082, "01024c8d27b0a50b55f10000000000000001"),
    ];
    assert_eq!(datagrams.len(), expected.len());
    for (d, (packet, length, checksum, header)) in datagrams.iter().zip(expected) {
        assert_eq!((d.packet, d.length, d.checksum), (packet, length, checksum));
        let sealed = d.sealed.as_ref().expect("a sealed header");
        assert_eq!(sealed.version, 1);
        assert_eq!(&header[..2], "01");
        let kind = if &header[2..4] == "01" {
            "message"
        } else {
            "acknowledgement"
        };
        assert_eq!(sealed.kind, kind);
        assert_eq!(sealed.key_id, header[4..20]);
        assert_eq!(
            sealed.counter,
            u64::from_str_radix(&header[20..36], 16).unwrap()
        );
        assert_eq!(sealed.sealed_bytes, usize::from(length) - 8 - 18);
    }
    assert_eq!(datagrams[0].src, "10.20.30.11:40001".parse().unwrap());
    assert_eq!(datagrams[1].src, "10.20.30.12:40002".parse().unwrap());
    let answers = udp::answers(&datagrams);
    assert_eq!(
        answers.direct_message.as_ref().map(|d| d.packet),
        Some(16),
        "the sealed message, not its acknowledgement, is the example"
    );
    assert_eq!(answers.protocol_number, Some(17));
}

#[test]
fn the_commands_label_tls_and_sealed_datagrams_on_the_encrypted_capture() {
    let path = fixture_capture(ENCRYPTED_PCAP);
    let path = path.to_str().unwrap();
    let text = trace_cmd(&["diagram", path, "--format", "text"]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    for needle in [
        "TLS handshake ClientHello [0x0301, 209 bytes]",
        "TLS handshake ServerHello [0x0303, 122 bytes]",
        "UDP 40001→40002 len=131 sealed direct message from key id 3076fc4dda827dfa counter 1",
        "UDP 40002→40001 len=42 sealed acknowledgement from key id 4c8d27b0a50b55f1 counter 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("not p2pchat"), "{text}");
    let udp = json_of(&["udp", path, "--json"]);
    let first = &udp["datagrams"][0];
    assert_eq!(first["p2pchat"], "sealed message");
    assert_eq!(first["sealed"]["key_id"], "3076fc4dda827dfa");
    assert_eq!(first["sealed"]["counter"], 1);
    assert_eq!(udp["answers"]["direct_message"]["packet"], 16);
    let udp_text = String::from_utf8(trace_cmd(&["udp", path]).stdout).unwrap();
    assert!(
        udp_text.contains("sealed: version 1, kind message, sender's key id 3076fc4dda827dfa"),
        "{udp_text}"
    );
    let handshakes = json_of(&["handshakes", path, "--json"]);
    let found = handshakes["handshakes"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["syn_seq"], 2_643_854_720u64);
    assert_eq!(found[0]["syn_ack_seq"], 314_306_879u64);
    assert_eq!(found[0]["syn_ack_ack"], 2_643_854_721u64);
    let diagram = json_of(&["diagram", path, "--json"]);
    assert_eq!(diagram["steps"][3]["tls"][0]["content"], "handshake");
    assert_eq!(diagram["steps"][3]["tls"][0]["version"], "0x0301");
    assert_eq!(diagram["steps"][15]["sealed"]["kind"], "message");
}

// ---- the lab's DNS and the merged diagram (merged-webserver.pcap, merged-client1.pcap) ----------
// The new client's minutes as `just lab` captured them on the server's eth0 and on client1's eth0,
// with the lab's DNS server (dnsmasq, 10.20.30.2) answering for chat.lab. Expected numbers are
// tshark's: `tshark -r FILE -Y dns -T fields -e frame.number -e dns.flags.response -e dns.qry.name
// -e dns.qry.type -e dns.a`.

const MERGED_SERVER_PCAP: &str = "captures/merged-webserver.pcap";
const MERGED_CLIENT1_PCAP: &str = "captures/merged-client1.pcap";

fn lab_names_with_dns() -> HashMap<IpAddr, String> {
    let mut names = lab_names();
    names.insert("10.20.30.2".parse().unwrap(), "dns".to_string());
    names
}

#[test]
fn the_new_clients_dns_lookup_has_tsharks_names_types_and_addresses_before_its_syn() {
    let json = json_of(&[
        "diagram",
        fixture_capture(MERGED_CLIENT1_PCAP).to_str().unwrap(),
        "--json",
    ]);
    let dns: Vec<(u64, bool, String, u64, Vec<String>)> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["dns"].is_null())
        .map(|s| {
            let d = &s["dns"];
            let a = d["answers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["rtype"] == 1)
                .map(|r| r["data"].as_str().unwrap().to_string())
                .collect();
            (
                s["packet"].as_u64().unwrap(),
                d["response"].as_bool().unwrap(),
                d["questions"][0]["name"].as_str().unwrap().to_string(),
                d["questions"][0]["qtype"].as_u64().unwrap(),
                a,
            )
        })
        .collect();
    let chat = || "chat.lab".to_string();
    assert_eq!(
        dns,
        vec![
            (3, false, chat(), 1, vec![]),
            (4, true, chat(), 1, vec!["10.20.30.3".to_string()]),
            (5, false, chat(), 28, vec![]),
            (6, true, chat(), 28, vec![]),
        ],
        "tshark: 3 0 chat.lab 1 / 4 1 chat.lab 1 10.20.30.3 / 5 0 chat.lab 28 / 6 1 chat.lab 28"
    );
    let text = String::from_utf8(
        trace_cmd(&[
            "diagram",
            fixture_capture(MERGED_CLIENT1_PCAP).to_str().unwrap(),
            "--format",
            "text",
        ])
        .stdout,
    )
    .unwrap();
    let query = text
        .find("DNS query A chat.lab")
        .expect("the query, labelled");
    let answer = text
        .find("DNS response A chat.lab: A 10.20.30.3 (authoritative)")
        .expect("the answer, labelled");
    let syn = text.find("[SYN]").expect("the SYN");
    assert!(query < answer && answer < syn, "{text}");
    assert!(!text.contains("(not p2pchat)"), "{text}");
    let udp = json_of(&[
        "udp",
        fixture_capture(MERGED_CLIENT1_PCAP).to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        udp["datagrams"][1]["dns"]["answers"][0]["data"], "10.20.30.3",
        "the udp command names DNS too"
    );
}

#[test]
fn the_merged_diagram_shows_each_packet_once_with_joined_to_every_other_client_and_traffic_during_login(
) {
    let (_, server) = trace::load(fixture_capture(MERGED_SERVER_PCAP)).unwrap();
    let (_, client1) = trace::load(fixture_capture(MERGED_CLIENT1_PCAP)).unwrap();
    let names = lab_names_with_dns();
    let alone = |frames: &[trace::Frame]| Diagram::build(frames, &names).steps.len();
    let merged = Diagram::merge(&[&server, &client1], &names);

    // Each packet once: the arrows of both, less the ones both saw, which are exactly client1's
    // packets to and from the server and its broadcast ARP requests (the bridge floods them).
    let both: Vec<_> = merged.steps.iter().filter(|s| s.seen.len() == 2).collect();
    assert_eq!(
        merged.steps.len(),
        alone(&server) + alone(&client1) - both.len()
    );
    let ip = |i: usize| merged.participants[i].ip.to_string();
    for step in &both {
        let ends = (ip(step.from), ip(step.to));
        let client1_server = [ends.0.as_str(), ends.1.as_str()].contains(&"10.20.30.11")
            && [ends.0.as_str(), ends.1.as_str()].contains(&"10.20.30.3");
        let arp_request = step.protocol == "ARP" && step.label.contains("who-has");
        assert!(client1_server || arp_request, "seen twice: {step:?}");
        assert_ne!(step.seen[0].capture, step.seen[1].capture);
    }
    // tshark -Y "tcp && ip.addr == 10.20.30.3" finds 14 in each capture.
    assert_eq!(both.iter().filter(|s| s.protocol == "TCP").count(), 14);
    let numbers: Vec<usize> = merged.steps.iter().map(|s| s.number).collect();
    assert_eq!(numbers, (1..=merged.steps.len()).collect::<Vec<_>>());
    assert!(merged.steps.windows(2).all(|w| w[0].time <= w[1].time));

    let who = |name: &str| {
        merged
            .participants
            .iter()
            .position(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name} is in the diagram"))
    };
    let (server_at, client1_at) = (who("webserver"), who("client1"));
    let first =
        |pred: &dyn Fn(&p2pchat::trace::diagram::Step) -> bool| merged.steps.iter().position(pred);
    let carries = |s: &p2pchat::trace::diagram::Step, m: &str| s.messages.iter().any(|x| x == m);
    assert!(first(&|s| s.dns.is_some() && s.from == client1_at).is_some());
    for other in ["client2", "client3"] {
        let other = who(other);
        let joined = first(&|s| s.from == server_at && s.to == other && carries(s, "joined"))
            .expect("the server's joined to every other client");
        let ack = merged.steps[joined + 1..]
            .iter()
            .position(|s| s.from == other && s.to == server_at && s.label.contains("[ACK]"));
        assert!(ack.is_some(), "its ACK");
        assert!(first(&|s| s.from == server_at && s.to == other && carries(s, "left")).is_some());
    }
    let login = first(&|s| carries(s, "login")).unwrap();
    let welcome = first(&|s| carries(s, "welcome")).unwrap();
    let during: Vec<_> = merged.steps[login + 1..welcome]
        .iter()
        .filter(|s| s.from != client1_at && s.to != client1_at && !s.messages.is_empty())
        .map(|s| s.messages.join("+"))
        .collect();
    assert_eq!(
        during,
        vec!["say", "message"],
        "bob's room message and its fan-out to carol cross while alice's password is checked"
    );
    assert!(merged.steps[welcome].time - merged.steps[login].time > 0.1);
    assert!(first(&|s| s.protocol == "UDP" && carries(s, "direct")).is_some());

    // The command merges the same way and draws the same arrows as SVG.
    let svg = trace_cmd(&[
        "diagram",
        fixture_capture(MERGED_SERVER_PCAP).to_str().unwrap(),
        fixture_capture(MERGED_CLIENT1_PCAP).to_str().unwrap(),
        "--name",
        "10.20.30.13=client3",
        "--format",
        "svg",
    ]);
    assert!(svg.status.success());
    let svg = String::from_utf8(svg.stdout).unwrap();
    assert!(svg.starts_with("<svg"));
    assert_eq!(
        svg.matches("<polygon").count(),
        merged.steps.len(),
        "one arrowhead per packet"
    );
    assert!(svg.contains(">client3<") && svg.contains("DNS query A chat.lab"));
}

/// `just lab`'s discovery run on client1's eth0 (target/lab/discovery.pcap): the server announcing
/// itself as `webserver:12000` over mDNS, client3's `--discover` and client1's client without
/// `--server` asking, the answers, and the goodbye when the server stops.
const DISCOVERY_PCAP: &str = "captures/discovery.pcap";

#[test]
fn mdns_packets_are_named_probe_query_answer_and_goodbye_at_tsharks_frames() {
    let udp = json_of(&[
        "udp",
        fixture_capture(DISCOVERY_PCAP).to_str().unwrap(),
        "--json",
    ]);
    // tshark -Y mdns -T fields -e frame.number -e dns.flags.response -e dns.resp.ttl
    let expected: [(u64, bool, &str); 10] = [
        (3, false, ""),
        (4, false, "4500,120,120"),
        (7, false, "4500,120,120"),
        (8, false, "4500,120,120"),
        (9, true, "4500,120,4500,120"),
        (10, false, "4500"),
        (15, false, ""),
        (17, true, "4500,120,4500,120"),
        (19, false, "4500"),
        (40, true, "0,0,0,0"),
    ];
    let mdns: Vec<(u64, bool, String)> = udp["datagrams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["dns"]["mdns"] == true)
        .map(|d| {
            let dns = &d["dns"];
            let records = dns["answers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(dns["other_records"].as_array().into_iter().flatten());
            let ttls: Vec<String> = records.map(|r| r["ttl"].to_string()).collect();
            (
                d["packet"].as_u64().unwrap(),
                dns["response"].as_bool().unwrap(),
                ttls.join(","),
            )
        })
        .collect();
    let expected: Vec<(u64, bool, String)> = expected
        .iter()
        .map(|(n, r, t)| (*n, *r, t.to_string()))
        .collect();
    assert_eq!(mdns, expected);

    let text = String::from_utf8(
        trace_cmd(&["udp", fixture_capture(DISCOVERY_PCAP).to_str().unwrap()]).stdout,
    )
    .unwrap();
    for label in [
        "mDNS query PTR _p2pchat._tcp.local",
        "mDNS probe ANY webserver:12000._p2pchat._tcp.local, ANY webserver.local",
        "mDNS answer: service webserver:12000._p2pchat._tcp.local found (PTR _p2pchat._tcp.local), \
         SRV webserver:12000._p2pchat._tcp.local port 12000 on webserver.local, TXT \
         webserver:12000._p2pchat._tcp.local \"txtvers=1\" \"proto=1\" \"tls=1\" \"fp=SHA256:",
        "A webserver.local 10.20.30.3",
        "mDNS goodbye: service webserver:12000._p2pchat._tcp.local withdrawn",
    ] {
        assert!(text.contains(label), "{label:?} not in:\n{text}");
    }
}

// ---- a file transfer, in a capture built here ----------------------------------------------
// The packets of one transfer as tcpdump would show them (raw IP, no checksums checked): the
// sealed offer and answer (kind 3) with their acknowledgements, then the data connection from the
// receiver to the sender's transfer port (the number of its UDP port): the clear opening, the
// handshake, sealed records by their clear headers, the receiver's `done`.

/// A pcap (raw IP) of `packets`, one a millisecond.
fn pcap_of(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut file = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&0i32.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&65_535u32.to_le_bytes());
    file.extend_from_slice(&101u32.to_le_bytes());
    for (i, packet) in packets.iter().enumerate() {
        file.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        file.extend_from_slice(&((i as u32) * 1000).to_le_bytes());
        file.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        file.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        file.extend_from_slice(packet);
    }
    file
}

fn ipv4(protocol: u8, from: [u8; 4], to: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    packet.extend_from_slice(&from);
    packet.extend_from_slice(&to);
    packet.extend_from_slice(body);
    packet
}

fn udp_packet(from: ([u8; 4], u16), to: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let mut body = from.1.to_be_bytes().to_vec();
    body.extend_from_slice(&to.1.to_be_bytes());
    body.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(payload);
    ipv4(17, from.0, to.0, &body)
}

/// Flags: 0x02 SYN, 0x10 ACK, 0x18 PSH+ACK, 0x11 FIN+ACK.
fn tcp_packet(
    from: ([u8; 4], u16),
    to: ([u8; 4], u16),
    seq: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = from.1.to_be_bytes().to_vec();
    body.extend_from_slice(&to.1.to_be_bytes());
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&[5 << 4, flags]);
    body.extend_from_slice(&65_535u16.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0]);
    body.extend_from_slice(payload);
    ipv4(6, from.0, to.0, &body)
}

/// A sealed datagram's bytes: version 1, `kind`, a key id, a counter, a ciphertext and tag.
fn sealed(kind: u8, key: u8, counter: u64, body: usize) -> Vec<u8> {
    let mut bytes = vec![1, kind];
    bytes.extend_from_slice(&[key; 8]);
    bytes.extend_from_slice(&counter.to_be_bytes());
    bytes.extend(std::iter::repeat_n(0x77, body + 16));
    bytes
}

fn record(kind: u8, plaintext: usize) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&((plaintext + 16) as u32).to_be_bytes());
    bytes.extend(std::iter::repeat_n(0x99, plaintext + 16));
    bytes
}

#[test]
fn a_file_transfers_packets_are_labelled_offer_answer_handshake_data_and_end() {
    let alice = ([10, 20, 30, 11], 40_001);
    let bob = ([10, 20, 30, 12], 40_002);
    let bob_tcp = ([10, 20, 30, 12], 51_000);
    let mut opening = b"p2pchat-file".to_vec();
    opening.push(1);
    opening.extend_from_slice(&[0x1a, 0x2b, 0x3c, 0x4d]);
    opening.extend_from_slice(&[0; 12 + 16 + 8 + 32]);
    let mut proof_and_data = vec![0x42; 32];
    proof_and_data.extend(record(1, 1000));
    proof_and_data.extend(record(1, 1000));
    let packets = vec![
        udp_packet(alice, bob, &sealed(3, 0xaa, 1, 120)),
        udp_packet(bob, alice, &sealed(2, 0xbb, 1, 8)),
        udp_packet(bob, alice, &sealed(3, 0xbb, 2, 90)),
        udp_packet(alice, bob, &sealed(2, 0xaa, 2, 8)),
        tcp_packet(bob_tcp, alice, 1000, 0x02, b""),
        tcp_packet(alice, bob_tcp, 5000, 0x12, b""),
        tcp_packet(bob_tcp, alice, 1001, 0x10, b""),
        tcp_packet(bob_tcp, alice, 1001, 0x18, &opening),
        tcp_packet(alice, bob_tcp, 5001, 0x18, &[0x01; 33]),
        tcp_packet(bob_tcp, alice, 1086, 0x18, &[0x24; 32]),
        tcp_packet(alice, bob_tcp, 5034, 0x18, &proof_and_data),
        tcp_packet(
            alice,
            bob_tcp,
            5034 + proof_and_data.len() as u32,
            0x18,
            &record(2, 40),
        ),
        tcp_packet(bob_tcp, alice, 1118, 0x18, &record(4, 32)),
        tcp_packet(bob_tcp, alice, 1171, 0x11, b""),
    ];
    let folder = tempfile::TempDir::new().unwrap();
    let path = folder.path().join("transfer.pcap");
    std::fs::write(&path, pcap_of(&packets)).unwrap();
    let path = path.to_str().unwrap();

    let text = trace_cmd(&["diagram", path, "--format", "text"]);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = String::from_utf8(text.stdout).unwrap();
    for needle in [
        "sealed file offer or answer from key id aaaaaaaaaaaaaaaa counter 1",
        "sealed acknowledgement from key id bbbbbbbbbbbbbbbb counter 1",
        "sealed file offer or answer from key id bbbbbbbbbbbbbbbb counter 2",
        "file opening (transfer 1a2b3c4d…, from byte 0)",
        "file handshake: sender's nonce",
        "file handshake: receiver's proof",
        "file handshake: sender's proof + file data ×2",
        "file end (size and SHA-256, sealed)",
        "file done (the receiver's SHA-256, sealed)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("not p2pchat"), "{text}");
    let udp = json_of(&["udp", path, "--json"]);
    assert_eq!(udp["datagrams"][0]["p2pchat"], "sealed file");
    let diagram = json_of(&["diagram", path, "--json"]);
    assert_eq!(
        diagram["steps"][7]["messages"][0],
        "file opening (transfer 1a2b3c4d…, from byte 0)"
    );
}
