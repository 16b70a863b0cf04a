//! `p2pchat-trace`: answers the lab's questions from a capture file (pcap or pcapng) that tcpdump
//! wrote: TCP handshakes, UDP headers, and a sequence diagram of every packet (of one capture, or
//! of several merged into one timeline).

#![deny(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use p2pchat::trace::diagram::{self, Diagram};
use p2pchat::trace::{self, handshake, svg, udp, Capture, Frame};
use serde_json::json;

/// Reads a packet capture (pcap or pcapng; Ethernet, Linux cooked v1/v2 or raw IP) of p2pchat
/// traffic and answers the networking lab's questions.
///
/// Exit status: 0 done; 1 the file could not be read (missing, not a capture, truncated, malformed,
/// unsupported link type); 2 bad arguments.
#[derive(Parser, Debug)]
#[command(name = "p2pchat-trace", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The number of packets in the capture (checks that the whole file reads).
    Count {
        /// The capture file.
        file: PathBuf,
        /// One JSON object on stdout (format, link types, packets), for programs.
        #[arg(long)]
        json: bool,
    },
    /// Every TCP three-way handshake with absolute numbers (SYN seq, SYN-ACK seq and ack) and how
    /// each connection ended.
    Handshakes {
        /// The capture file.
        file: PathBuf,
        /// Only connections with this host at either end.
        #[arg(long, value_name = "IP")]
        host: Option<IpAddr>,
        /// One JSON object on stdout, for programs.
        #[arg(long)]
        json: bool,
    },
    /// Every UDP datagram's header fields, and the lab's UDP questions answered.
    Udp {
        /// The capture file.
        file: PathBuf,
        /// Only datagrams with this host as source or destination.
        #[arg(long, value_name = "IP")]
        host: Option<IpAddr>,
        /// One JSON object on stdout, for programs.
        #[arg(long)]
        json: bool,
    },
    /// A sequence diagram of every packet between the hosts, in time order. Several captures of
    /// the same minutes on one machine (the server's interface and a client's) are merged into one
    /// timeline, each packet once, numbered from 1; one capture's arrows keep its frame numbers.
    Diagram {
        /// The capture file(s).
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Names a host in the diagram, e.g. 10.20.30.3=webserver; repeatable.
        #[arg(long = "name", value_name = "IP=NAME", value_parser = diagram::parse_name)]
        names: Vec<(IpAddr, String)>,
        /// Mermaid source (for docs), text columns (for the terminal) or an SVG picture (for
        /// the report's PDF).
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
        /// One JSON object on stdout (participants, steps, and the Mermaid source), for programs.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Mermaid,
    Text,
    Svg,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.command) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("p2pchat-trace: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A short description of the capture, shared by every JSON answer.
fn capture_json(capture: &Capture) -> serde_json::Value {
    let mut links: Vec<String> = capture.packets.iter().map(|p| p.link.to_string()).collect();
    links.dedup();
    json!({
        "file": capture.path.display().to_string(),
        "format": capture.format,
        "packets": capture.packets.len(),
        "link_types": links,
    })
}

fn run(command: Command) -> Result<String, trace::CaptureError> {
    match command {
        Command::Count { file, json } => {
            let capture = Capture::open(&file)?;
            Ok(if json {
                to_json(capture_json(&capture))
            } else {
                format!("{}\n", capture.packets.len())
            })
        }
        Command::Handshakes { file, host, json } => {
            let (capture, frames) = trace::load(&file)?;
            let mut found = handshake::handshakes(&frames);
            if let Some(host) = host {
                found.retain(|h| h.client.ip() == host || h.server.ip() == host);
            }
            Ok(if json {
                to_json(json!({ "capture": capture_json(&capture), "handshakes": found }))
            } else {
                format!("{}\n{}", heading(&capture), handshake::render_text(&found))
            })
        }
        Command::Udp { file, host, json } => {
            let (capture, frames) = trace::load(&file)?;
            let mut datagrams = udp::datagrams(&frames);
            if let Some(host) = host {
                datagrams.retain(|d| d.src.ip() == host || d.dst.ip() == host);
            }
            let answers = udp::answers(&datagrams);
            Ok(if json {
                to_json(json!({
                    "capture": capture_json(&capture),
                    "datagrams": datagrams,
                    "answers": answers,
                }))
            } else {
                format!(
                    "{}\n{}",
                    heading(&capture),
                    udp::render_text(&datagrams, &answers)
                )
            })
        }
        Command::Diagram {
            files,
            names,
            format,
            json,
        } => {
            let mut captures: Vec<(Capture, Vec<Frame>)> = Vec::new();
            for file in &files {
                captures.push(trace::load(file)?);
            }
            let names: HashMap<IpAddr, String> = names.into_iter().collect();
            let frames: Vec<&[Frame]> = captures.iter().map(|(_, f)| f.as_slice()).collect();
            let diagram = Diagram::merge(&frames, &names);
            Ok(if json {
                to_json(json!({
                    "capture": capture_json(&captures[0].0),
                    "captures": captures.iter().map(|(c, _)| capture_json(c)).collect::<Vec<_>>(),
                    "participants": diagram.participants,
                    "steps": diagram.steps,
                    "omitted": diagram.omitted,
                    "mermaid": diagram.to_mermaid(),
                }))
            } else {
                match format {
                    Format::Mermaid => diagram.to_mermaid(),
                    Format::Svg => svg::render(&diagram),
                    Format::Text => {
                        let headings: Vec<String> =
                            captures.iter().map(|(c, _)| heading(c)).collect();
                        format!("{}\n{}", headings.join("\n"), diagram.to_text())
                    }
                }
            })
        }
    }
}

fn heading(capture: &Capture) -> String {
    let link = capture
        .packets
        .first()
        .map(|p| p.link.to_string())
        .unwrap_or_else(|| "no packets".into());
    format!(
        "{}: {} capture, {}, {} packet(s)",
        capture.path.display(),
        capture.format,
        link,
        capture.packets.len()
    )
}

fn to_json(value: serde_json::Value) -> String {
    serde_json::to_string_pretty(&value).expect("JSON values always serialize") + "\n"
}
