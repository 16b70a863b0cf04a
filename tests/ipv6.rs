//! IPv6 on one LAN segment, black-box: the server in a network namespace of its own with
//! `fd19:6::1/64`, and two hosts, `fd19:6::2` and `fd19:6::3`, on the same /64 at the other end
//! of a veth pair (a second namespace, where the test's own sockets are made). Each host is one
//! address for every per-address limit: 8 connections from `::2` do not lock `::3` out, wrong
//! logins from `::2` do not delay `::3`, and `::2`'s registrations do not use up `::3`'s quota;
//! each limit still holds for `::2` itself. `--ipv6-prefix 64` makes the segment one address again.
//!
//! Needs root and `ip`; without them the test says "skipped" on stderr and passes, as
//! tests/loss.rs does. The namespaces have names unique to the run and test and are removed on
//! every exit path (a guard's `Drop`), panics included. The addresses are added with `nodad`, so
//! they are usable at once (no duplicate address detection to race). Nothing here depends on
//! timing: a delay is seen as the server's `delayed` line (the delay is 10 min, far longer than
//! any run), a refusal as the server's `error` line.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use common::netns::{in_namespace, missing_tools, report_skipped, run};
use common::{server_bin, DEADLINE, TEST_LOG_N};
use serde_json::{json, Value};

/// The server's address on the segment.
const SERVER: &str = "fd19:6::1";
/// The host that uses up its limits.
const BUSY_HOST: &str = "fd19:6::2";
/// Its neighbour on the same /64.
const NEIGHBOUR: &str = "fd19:6::3";

/// Prints straight to the terminal (cargo's capture does not hide it) why the test did nothing.
/// The server's namespace and the hosts' namespace; dropping it deletes both (and so the veth
/// pair and the addresses).
struct Segment {
    server: String,
    hosts: String,
}

impl Drop for Segment {
    fn drop(&mut self) {
        for name in [&self.server, &self.hosts] {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// The server's namespace and the hosts' one, joined by a veth pair, all on `fd19:6::/64`.
/// `test` tells the namespaces of tests running at once apart.
fn build_segment(test: u32) -> Result<Segment, String> {
    let tag = format!("{}{test}", std::process::id() % 100_000);
    let segment = Segment {
        server: format!("p2p6{tag}s"),
        hosts: format!("p2p6{tag}h"),
    };
    // The guard exists before the first namespace does: any failure below removes them all.
    run("ip", &["netns", "add", &segment.server])?;
    run("ip", &["netns", "add", &segment.hosts])?;
    let ip_in = |ns: &str, args: &[&str]| {
        let mut all = vec!["netns", "exec", ns, "ip"];
        all.extend_from_slice(args);
        run("ip", &all)
    };
    let (server, hosts) = (segment.server.as_str(), segment.hosts.as_str());
    ip_in(
        server,
        &[
            "link", "add", "lan0", "type", "veth", "peer", "name", "lan0", "netns", hosts,
        ],
    )?;
    for (ns, addresses) in [(server, &[SERVER][..]), (hosts, &[BUSY_HOST, NEIGHBOUR])] {
        for address in addresses {
            let address = format!("{address}/64");
            ip_in(ns, &["-6", "addr", "add", &address, "dev", "lan0", "nodad"])?;
        }
        ip_in(ns, &["link", "set", "lan0", "up"])?;
        ip_in(ns, &["link", "set", "lo", "up"])?;
    }
    Ok(segment)
}

/// A `p2pchat-server` in the server's namespace, killed when dropped; its log is printed if the
/// test fails.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a plaintext server on `[fd19:6::1]:0` with `extra` flags; waits for its
    /// `listening on` line.
    fn start(segment: &Segment, users: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &segment.server])
            .arg(server_bin())
            .args(["--bind", &format!("[{SERVER}]:0"), "--users"])
            .arg(users)
            .args(["--plaintext", "--scrypt-log-n", TEST_LOG_N])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start p2pchat-server in its namespace");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("the server's stderr");
        let lines = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().expect("the server's stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([0; 16], 0)),
            log,
        };
        let first = rx
            .recv_timeout(DEADLINE)
            .expect("the server's `listening on` line");
        server.addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("the listening address");
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("the server's log:\n{}", self.log.lock().unwrap().join("\n"));
        }
    }
}

/// A raw protocol connection from one host on the segment.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    /// Connects from `host` and returns the connection and the server's first line (`hello`, or
    /// the refusal for a limit).
    fn open(host: &str, server: SocketAddr) -> (Connection, Value) {
        let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        let local: Ipv6Addr = host.parse().expect("a host address");
        socket
            .bind(&SocketAddr::from((local, 0)).into())
            .unwrap_or_else(|e| panic!("bind {host}: {e}"));
        socket
            .connect(&server.into())
            .unwrap_or_else(|e| panic!("connect from {host} to {server}: {e}"));
        let tcp: TcpStream = socket.into();
        tcp.set_read_timeout(Some(DEADLINE))
            .expect("a read timeout");
        let writer = tcp.try_clone().expect("a second handle");
        let mut connection = Connection {
            reader: BufReader::new(tcp),
            writer,
        };
        let first = connection.read();
        (connection, first)
    }

    /// Connects from `host`; the server must greet it with `hello`.
    fn admitted(host: &str, server: SocketAddr) -> Connection {
        let (connection, first) = Connection::open(host, server);
        assert_eq!(first["type"], "hello", "{host} was not admitted: {first}");
        connection
    }

    /// The server's next line.
    fn read(&mut self) -> Value {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(_) => serde_json::from_str(&line).expect("the server sends JSON"),
            Err(e) => panic!("reading from the server: {e}"),
        }
    }

    /// Sends a `login` or `register` asking to be told of delays; returns the first answer
    /// (`welcome`, `delayed` or an error).
    fn authenticate(&mut self, kind: &str, name: &str, password: &str) -> Value {
        let port = self.writer.local_addr().expect("a local address").port();
        let request = json!({
            "type": kind, "username": name, "password": password, "p2p_port": port,
            "tell_delays": true,
        });
        writeln!(self.writer, "{request}").expect("send to the server");
        self.read()
    }
}

/// Connects from `host` and registers `name`; returns the answer.
fn register(host: &str, server: SocketAddr, name: &str) -> Value {
    Connection::admitted(host, server).authenticate("register", name, "a-good-password")
}

/// Skips the test (returning `None`) where namespaces cannot be made.
fn segment_or_skip(test: &str, number: u32) -> Option<Segment> {
    if let Some(why) = missing_tools(&["ip"]) {
        report_skipped(test, &why);
        return None;
    }
    match build_segment(number) {
        Ok(segment) => Some(segment),
        Err(why) => {
            report_skipped(test, &format!("cannot build the namespaces: {why}"));
            None
        }
    }
}

#[test]
fn eight_connections_from_one_host_do_not_lock_out_its_neighbour_on_the_segment() {
    let test = "eight_connections_from_one_host_do_not_lock_out_its_neighbour_on_the_segment";
    let Some(segment) = segment_or_skip(test, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&segment, &dir.path().join("users.json"), &[]);
    let addr = server.addr;
    in_namespace(&segment.hosts, || {
        // The default --max-per-ip and --max-pending-per-ip: 8.
        let busy: Vec<Connection> = (0..8)
            .map(|_| Connection::admitted(BUSY_HOST, addr))
            .collect();
        let (_, refused) = Connection::open(BUSY_HOST, addr);
        assert_eq!(
            refused["code"], "too_many_connections",
            "the busy host's ninth connection: {refused}"
        );
        let _neighbour = Connection::admitted(NEIGHBOUR, addr);
        drop(busy);
    });
}

#[test]
fn wrong_logins_from_one_host_do_not_delay_its_neighbour_on_the_segment() {
    let test = "wrong_logins_from_one_host_do_not_delay_its_neighbour_on_the_segment";
    let Some(segment) = segment_or_skip(test, 2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Two failures are free; after them an attempt from the address waits 10 minutes: far longer
    // than the test, so a delay is always seen as the server's `delayed` line.
    let throttle = [
        "--login-free-failures",
        "2",
        "--login-delay",
        "600",
        "--login-delay-max",
        "600",
    ];
    let server = Server::start(&segment, &dir.path().join("users.json"), &throttle);
    let addr = server.addr;
    in_namespace(&segment.hosts, || {
        let answer = register(NEIGHBOUR, addr, "carol");
        assert_eq!(answer["type"], "welcome", "{answer}");
        // Each guess at a name of its own, so that only the address's count grows.
        for name in ["guess1", "guess2"] {
            let answer = Connection::admitted(BUSY_HOST, addr).authenticate(
                "login",
                name,
                "not-the-password",
            );
            assert_eq!(answer["code"], "bad_credentials", "{answer}");
        }
        let answer =
            Connection::admitted(NEIGHBOUR, addr).authenticate("login", "carol", "a-good-password");
        assert_eq!(
            answer["type"], "welcome",
            "the neighbour's login was held back: {answer}"
        );
        let answer =
            Connection::admitted(BUSY_HOST, addr).authenticate("login", "guess3", "still-not-it");
        assert_eq!(answer["type"], "delayed", "the guessing host: {answer}");
        assert_eq!(answer["reason"], "address", "{answer}");
    });
}

#[test]
fn registrations_from_one_host_do_not_use_up_its_neighbours_quota() {
    let test = "registrations_from_one_host_do_not_use_up_its_neighbours_quota";
    let Some(segment) = segment_or_skip(test, 3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let quota = ["--register-per-ip-hour", "1"];
    let server = Server::start(&segment, &dir.path().join("users.json"), &quota);
    let addr = server.addr;
    in_namespace(&segment.hosts, || {
        let answer = register(BUSY_HOST, addr, "dave");
        assert_eq!(answer["type"], "welcome", "{answer}");
        let answer = register(BUSY_HOST, addr, "erin");
        assert_eq!(
            answer["code"], "registration_limit",
            "the busy host's second account: {answer}"
        );
        let answer = register(NEIGHBOUR, addr, "carol");
        assert_eq!(
            answer["type"], "welcome",
            "the neighbour's first account: {answer}"
        );
    });
}

#[test]
fn with_ipv6_prefix_64_the_segment_is_one_address_again() {
    let test = "with_ipv6_prefix_64_the_segment_is_one_address_again";
    let Some(segment) = segment_or_skip(test, 4) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--ipv6-prefix", "64"];
    let server = Server::start(&segment, &dir.path().join("users.json"), &flags);
    let addr = server.addr;
    in_namespace(&segment.hosts, || {
        let busy: Vec<Connection> = (0..8)
            .map(|_| Connection::admitted(BUSY_HOST, addr))
            .collect();
        let (_, refused) = Connection::open(NEIGHBOUR, addr);
        assert_eq!(
            refused["code"], "too_many_connections",
            "the neighbour, in the same /64: {refused}"
        );
        drop(busy);
    });
}
