//! The simulated clients and the one thread that drives them all: non-blocking sockets, each bound
//! to its own 127.x.y.z source address (all of 127.0.0.0/8 is loopback on Linux, so the server's
//! per-address limits never bite), one edge-triggered epoll set, and a timerfd for sub-millisecond
//! waits. Reads are streamed through a small per-client line head (the first `HEAD_CAP` bytes of a
//! line, enough for every line the generator must read) so 10,000 clients receiving 600 KB peer
//! lists hold no large buffers.
//!
//! With `--tls` each client is a rustls client connection over its socket, driven by the same
//! reactor: raw bytes read from the socket are fed to rustls (`read_tls`, `process_new_packets`)
//! and the plaintext it gives back goes through the same line head; what a client says is handed
//! to rustls and its records written out (`write_tls`) as the socket takes them. The server's
//! certificate is pinned by its fingerprint (p2pchat's own verifier, [`p2pchat::tls`]).
//!
//! Counts what the workloads check: who is in the room, the `joined` lines still owed, every
//! delivery (count per receiver, order per sender, latency from the text's timestamp) and every
//! connection the server closed.
//!
//! A delivery's latency ends when its bytes reached the receiver's socket, by the kernel's
//! receive timestamp (`SO_TIMESTAMPNS`; on loopback, stamped during the server's write), not when
//! this one thread got round to reading that client: a wave of lines to 1,000 clients takes the
//! generator milliseconds to read (and, over TLS, decrypt), and timing each line at its parse
//! would add that queue, which is the generator's, to the server's figure. The time to the
//! parse is kept beside it ([`Reactor::read_latency`]).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection};

use socket2::{Domain, Socket, Type};

use crate::dialect::{parse_text, Dialect, Incoming};
use crate::histogram::Histogram;

/// The first bytes of a line kept for classifying it; longer lines (p2pchat's peer lists) are
/// counted, not kept. IRC lines are at most 512 bytes.
const HEAD_CAP: usize = 1024;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// Plaintext taken from rustls at a time (TLS clients): rustls holds at most one record's worth
/// of decrypted bytes per `process_new_packets`, so a few records' worth is plenty.
const PLAIN_CHUNK: usize = 64 * 1024;
/// epoll events taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// The epoll token of the timer.
const TIMER: u64 = u64::MAX;
/// An output buffer larger than this is given back once drained.
const OUT_KEEP: usize = 64 * 1024;
/// The start of p2pchat's `welcome` line.
const WELCOME: &[u8] = b"{\"type\":\"welcome\"";
/// How far a receive timestamp may fall outside its delivery's send and parse (the realtime and
/// monotonic clocks are read one after the other when the reactor is made) before it counts as
/// no timestamp.
const CLOCK_SLACK_MICROS: u64 = 1000;
/// Every simulated account's password.
pub const PASSWORD: &str = "bench-password";

/// Where a simulated client is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    /// Connected; waiting for `hello` (p2pchat) or 001 (IRC).
    Greeting,
    /// Login, registration or JOIN sent; waiting for `welcome` or 366.
    Entering,
    InRoom,
    Closed,
}

pub struct Client {
    stream: Option<TcpStream>,
    /// With `--tls`: the TLS session over `stream` (boxed: a rustls connection is ~1 KiB, and
    /// plaintext runs should not carry it in every client).
    tls: Option<Box<ClientConnection>>,
    /// A probe (the handshake storm) says nothing to enter: IRC's `PING` instead of NICK/USER.
    probe: bool,
    pub name: String,
    register: bool,
    pub phase: Phase,
    head: Vec<u8>,
    /// `{` in the current line: p2pchat's `welcome` has one per peer plus its own.
    braces: u32,
    out: Vec<u8>,
    out_pos: usize,
    /// IRC: names seen in 353 lines.
    names: u32,
    joined_expected: u64,
    pub joined_seen: u64,
    /// Room messages received since the last [`Reactor::start_measuring`].
    pub received: u64,
    pub entered_at: Option<Instant>,
    pub welcomed_at: Option<Instant>,
    /// When the connect was started, and when the server's greeting arrived (`hello`; IRC's
    /// first line), after the TLS handshake with `--tls`.
    pub connected_at: Instant,
    pub greeted_at: Option<Instant>,
}

/// Totals over all clients.
#[derive(Default, Debug, Clone)]
pub struct Counters {
    pub bytes_in: u64,
    pub deliveries: u64,
    /// A message whose sequence number was not the one after the previous from its sender.
    pub out_of_order: u64,
    pub malformed: u64,
    /// Deliveries whose bytes came without the kernel's receive timestamp, or with one outside
    /// the send and the parse: not in [`Reactor::latency`] (a measure that must not happen; the
    /// workloads count it as a loss).
    pub unstamped: u64,
    pub welcomed: u64,
    pub entering: u64,
    pub joined_expected: u64,
    pub joined_seen: u64,
    /// Connections the server closed (not the generator).
    pub closed_by_server: u64,
    /// Of those, clients that were in the room.
    pub dropped_in_room: u64,
    pub rate_limited: u64,
    pub left: u64,
    /// Clients that received the server's greeting.
    pub greeted: u64,
    pub errors: BTreeMap<String, u64>,
    /// The cipher suite the first TLS client negotiated.
    pub negotiated: Option<String>,
}

pub struct Reactor {
    epoll: OwnedFd,
    timer: OwnedFd,
    pub dialect: Dialect,
    server: SocketAddr,
    /// The clients' TLS settings, `None` for plaintext.
    tls: Option<Arc<ClientConfig>>,
    pub clients: Vec<Client>,
    /// Clients in the room when it is full: each is owed a `joined` for everyone after it.
    pub room_size: u64,
    pub counters: Counters,
    /// Per receiver, per sender: the last sequence number received.
    last_seq: Vec<u32>,
    senders: usize,
    /// Each delivery, from the text's timestamp (taken just before the sender's write) to the
    /// kernel's receive timestamp of the bytes that carried it to the receiver's socket: the
    /// server's latency, without the generator's own time to read the wave (see
    /// [`Reactor::read_latency`]).
    pub latency: Histogram,
    /// The same deliveries, to when the generator parsed them: the socket's latency plus the
    /// generator's time to get to that client. In a wave of 1,000 receivers the last is read
    /// after the 999 before it (each read, over TLS decrypted, and its lines parsed), so this
    /// grows with the generator's CPU per wave and with the machine's load, not the server's.
    pub read_latency: Histogram,
    /// The kernel's receive timestamp of the bytes being handled, in the clock of
    /// [`Reactor::now_micros`]; `None` when the kernel gave none. TCP stamps a read with its
    /// newest segment, so lines of an earlier wave read together with a later one (the generator
    /// behind) count the later arrival: the figure errs high, never low.
    arrived_at: Option<u64>,
    /// The realtime clock (the kernel's timestamps are in it) when the reactor was made, the
    /// same instant as `start`: a timestamp minus this is in the clock of the messages' own.
    start_real: std::time::SystemTime,
    /// Connect (IRC) or login/registration sent (p2pchat) to welcome.
    pub entry_latency: Histogram,
    pub last_delivery: Option<Instant>,
    pub last_progress: Instant,
    start: Instant,
    scratch: Vec<u8>,
    /// Plaintext out of rustls (TLS clients only; empty otherwise).
    plain: Vec<u8>,
    ready: Ready,
}

/// The events of the last `epoll_wait`, handed out in order. A poll may stop at its deadline
/// between two of them (see [`Reactor::poll`]); edge-triggered, the kernel reports each event
/// once, so those not handled yet wait here for the next poll, which takes them before waiting
/// for new ones.
struct Ready {
    events: Vec<libc::epoll_event>,
    handled: usize,
    reported: usize,
}

impl Ready {
    fn new(capacity: usize) -> Ready {
        Ready {
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
            handled: 0,
            reported: 0,
        }
    }

    /// Whether every reported event was handed out: only then may the kernel be asked again.
    fn is_drained(&self) -> bool {
        self.handled == self.reported
    }

    /// Room for the kernel to report into (only once drained: what is left would be lost).
    fn buffer(&mut self) -> &mut [libc::epoll_event] {
        assert!(self.is_drained(), "events not handled yet would be lost");
        self.handled = 0;
        self.reported = 0;
        &mut self.events
    }

    /// The kernel reported `n` events into [`Ready::buffer`].
    fn reported(&mut self, n: usize) {
        self.reported = n.min(self.events.len());
    }

    /// The next event not handed out yet.
    fn next(&mut self) -> Option<libc::epoll_event> {
        let event = self.events[self.handled..self.reported].first().copied()?;
        self.handled += 1;
        Some(event)
    }
}

impl Reactor {
    pub fn new(
        dialect: Dialect,
        server: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
        room_size: u64,
    ) -> io::Result<Reactor> {
        // SAFETY: plain syscalls; each returned descriptor is checked and owned at once.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let timer = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if timer < 0 {
            return Err(io::Error::last_os_error());
        }
        let timer = unsafe { OwnedFd::from_raw_fd(timer) };
        let reactor = Reactor {
            epoll,
            timer,
            dialect,
            server,
            plain: if tls.is_some() {
                vec![0; PLAIN_CHUNK]
            } else {
                Vec::new()
            },
            tls,
            clients: Vec::new(),
            room_size,
            counters: Counters::default(),
            last_seq: Vec::new(),
            senders: 0,
            latency: Histogram::new(),
            read_latency: Histogram::new(),
            arrived_at: None,
            start_real: std::time::SystemTime::now(),
            entry_latency: Histogram::new(),
            last_delivery: None,
            last_progress: Instant::now(),
            start: Instant::now(),
            scratch: vec![0; READ_CHUNK],
            ready: Ready::new(EVENTS),
        };
        reactor.watch(reactor.timer.as_raw_fd(), TIMER, libc::EPOLLIN as u32)?;
        Ok(reactor)
    }

    fn watch(&self, fd: i32, token: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `fd` is open; the kernel copies `event`.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the clients speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Microseconds since the reactor was made: the clock of the messages' timestamps.
    pub fn now_micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Opens a connection for a new client, from its own loopback address; returns its index.
    pub fn connect(&mut self, name: String, register: bool) -> io::Result<usize> {
        self.open(name, register, false)
    }

    /// Opens a connection that only waits for the server's first line (`hello`; IRC's answer
    /// to a `PING`), after the TLS handshake with `--tls`: the handshake storm.
    pub fn probe(&mut self, name: String) -> io::Result<usize> {
        self.open(name, false, true)
    }

    fn open(&mut self, name: String, register: bool, probe: bool) -> io::Result<usize> {
        let index = self.clients.len();
        let connected_at = Instant::now();
        let tls = match &self.tls {
            Some(config) => Some(Box::new(
                ClientConnection::new(config.clone(), p2pchat::tls::server_name())
                    .map_err(io::Error::other)?,
            )),
            None => None,
        };
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        enable_receive_timestamps(&socket)?;
        socket.bind(&SocketAddr::V4(SocketAddrV4::new(source(index), 0)).into())?;
        match socket.connect(&self.server.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let stream: TcpStream = socket.into();
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        self.watch(stream.as_raw_fd(), index as u64, events)?;
        self.clients.push(Client {
            stream: Some(stream),
            tls,
            probe,
            name,
            register,
            phase: Phase::Connecting,
            head: Vec::with_capacity(HEAD_CAP),
            braces: 0,
            out: Vec::new(),
            out_pos: 0,
            names: 0,
            joined_expected: 0,
            joined_seen: 0,
            received: 0,
            entered_at: None,
            welcomed_at: None,
            connected_at,
            greeted_at: None,
        });
        self.last_seq
            .extend(std::iter::repeat_n(0, self.senders.max(1)));
        self.counters.entering += 1;
        Ok(index)
    }

    /// Closes a client's connection from the generator's side.
    pub fn close(&mut self, index: usize) {
        let client = &mut self.clients[index];
        if client.phase != Phase::InRoom && client.phase != Phase::Closed {
            self.counters.entering -= 1;
        }
        client.phase = Phase::Closed;
        client.stream = None;
        client.tls = None;
    }

    /// Forgets the deliveries so far and tracks `senders` senders' order from here on.
    pub fn start_measuring(&mut self, senders: usize) {
        self.senders = senders.max(1);
        self.last_seq = vec![0; self.clients.len() * self.senders];
        for client in &mut self.clients {
            client.received = 0;
        }
        self.counters.deliveries = 0;
        self.counters.out_of_order = 0;
        self.counters.malformed = 0;
        self.counters.unstamped = 0;
        self.latency = Histogram::new();
        self.read_latency = Histogram::new();
        self.last_delivery = None;
        self.last_progress = Instant::now();
    }

    /// Queues room message `seq` of sender number `sender` on client `index` and writes what the
    /// socket takes.
    pub fn say(&mut self, index: usize, sender: usize, seq: u32) {
        let micros = self.now_micros();
        let client = &mut self.clients[index];
        if client.stream.is_none() {
            return;
        }
        self.dialect.say(&mut client.out, sender, seq, micros);
        self.flush(index);
    }

    /// Waits for socket events or `until`, whichever is first, and handles what arrived, but
    /// stops at `until` even with events left, which the next poll handles first (without
    /// waiting). A wave of lines to 1,000 clients takes this thread milliseconds to read: the
    /// paced senders' next line must not wait for the end of it, as no real client's send waits
    /// for a thousand others' reads (the lines would reach the server in bursts, a load the
    /// workload does not describe).
    pub fn poll(&mut self, until: Instant) -> io::Result<()> {
        if self.ready.is_drained() {
            let wait = until.saturating_duration_since(Instant::now());
            self.arm_timer(wait.max(Duration::from_micros(1)))?;
            let buffer = self.ready.buffer();
            // SAFETY: `buffer` has room for `buffer.len()` entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    buffer.as_mut_ptr(),
                    buffer.len() as i32,
                    -1,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                return if error.kind() == io::ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(error)
                };
            }
            self.ready.reported(n as usize);
        }
        while let Some(libc::epoll_event { events, u64: token }) = self.ready.next() {
            if token == TIMER {
                let mut expirations = [0u8; 8];
                // SAFETY: reads 8 bytes into the array; a non-blocking timerfd may have none.
                unsafe { libc::read(self.timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
                continue;
            }
            self.handle(token as usize, events);
            if Instant::now() >= until {
                break;
            }
        }
        Ok(())
    }

    /// A kernel (realtime) timestamp in the clock of [`Reactor::now_micros`].
    fn real_micros(&self, at: std::time::SystemTime) -> u64 {
        at.duration_since(self.start_real)
            .map_or(0, |d| d.as_micros() as u64)
    }

    fn arm_timer(&self, after: Duration) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn handle(&mut self, index: usize, events: u32) {
        if self.clients[index].stream.is_none() {
            return;
        }
        if self.clients[index].phase == Phase::Connecting {
            if events & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                return;
            }
            let failed = match &self.clients[index].stream {
                Some(stream) => !matches!(stream.take_error(), Ok(None)),
                None => true,
            };
            if failed {
                self.closed_by_server(index);
                return;
            }
            let client = &mut self.clients[index];
            client.phase = Phase::Greeting;
            let greeting = if client.probe {
                self.dialect.probe()
            } else {
                self.dialect.on_connect(&client.name)
            };
            if let Some(greeting) = greeting {
                client.out.extend_from_slice(&greeting);
                client.entered_at = Some(Instant::now());
            }
        }
        self.flush(index);
        // With the peer's FIN already in the event, read on to the end of the stream: no later
        // edge would report it.
        let hung_up = events & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        self.read(index, hung_up);
    }

    fn read(&mut self, index: usize, hung_up: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(stream) = self.clients[index].stream.as_mut() {
            let (result, stamp) = receive(stream, &mut scratch);
            self.arrived_at = stamp.map(|at| self.real_micros(at));
            match result {
                Ok(0) => {
                    self.closed_by_server(index);
                    break;
                }
                Ok(n) => {
                    self.counters.bytes_in += n as u64;
                    self.last_progress = Instant::now();
                    if self.clients[index].tls.is_some() {
                        self.decrypt(index, &scratch[..n]);
                    } else {
                        self.absorb(index, &scratch[..n]);
                    }
                    // A short read emptied the socket's queue; data or a FIN arriving later
                    // raises a new edge. Stopping here saves the read that would only say EAGAIN:
                    // half the generator's syscalls when the server writes one line at a time.
                    if n < scratch.len() && !hung_up {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed_by_server(index);
                    break;
                }
            }
        }
        self.scratch = scratch;
        if self.clients[index].tls.is_some() {
            // What rustls wants to send after what it read: the handshake's last flight, the
            // plaintext queued while it ran.
            self.flush(index);
        }
    }

    /// Feeds raw bytes from the socket to the client's TLS session and the plaintext it gives
    /// back to the line head. A TLS failure (a certificate that is not the pinned one, a bad
    /// record) closes the client and is counted as an error.
    fn decrypt(&mut self, index: usize, mut raw: &[u8]) {
        let mut plain = std::mem::take(&mut self.plain);
        loop {
            let (filled, failure, handshaking) = {
                let Some(tls) = self.clients[index].tls.as_mut() else {
                    break;
                };
                let mut failure = None;
                if !raw.is_empty() {
                    match tls.read_tls(&mut raw) {
                        Ok(_) => {
                            if let Err(e) = tls.process_new_packets() {
                                failure = Some(format!("tls: {e}"));
                            }
                        }
                        Err(e) => failure = Some(format!("tls: {e}")),
                    }
                }
                let mut filled = 0;
                while filled < plain.len() {
                    match tls.reader().read(&mut plain[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        // WouldBlock: nothing more decrypted yet.
                        Err(_) => break,
                    }
                }
                (filled, failure, tls.is_handshaking())
            };
            if !handshaking && self.counters.negotiated.is_none() {
                // Every client offers TLS 1.3 alone: the suite without its TLS13_ prefix.
                self.counters.negotiated = self.clients[index]
                    .tls
                    .as_ref()
                    .and_then(|tls| tls.negotiated_cipher_suite())
                    .map(|suite| {
                        let name = format!("{:?}", suite.suite());
                        name.trim_start_matches("TLS13_").to_owned()
                    });
            }
            if filled > 0 {
                self.absorb(index, &plain[..filled]);
            }
            if let Some(failure) = failure {
                *self.counters.errors.entry(failure).or_default() += 1;
                self.closed_by_server(index);
                break;
            }
            if (raw.is_empty() && filled < plain.len()) || self.clients[index].stream.is_none() {
                break;
            }
        }
        self.plain = plain;
    }

    /// Splits a chunk into lines through the client's line head.
    fn absorb(&mut self, index: usize, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let end = find_newline(chunk);
            let piece = &chunk[..end.unwrap_or(chunk.len())];
            let client = &mut self.clients[index];
            let room = HEAD_CAP - client.head.len();
            client
                .head
                .extend_from_slice(&piece[..piece.len().min(room)]);
            // Only a `welcome` is counted, by its braces; a head too short to tell may be one.
            if self.dialect == Dialect::P2pchat
                && (client.head.len() < WELCOME.len() || client.head.starts_with(WELCOME))
            {
                client.braces += piece.iter().filter(|&&b| b == b'{').count() as u32;
            }
            match end {
                Some(end) => {
                    let head = std::mem::take(&mut self.clients[index].head);
                    self.line(index, &head);
                    let client = &mut self.clients[index];
                    client.head = head;
                    client.head.clear();
                    client.braces = 0;
                    chunk = &chunk[end + 1..];
                }
                None => break,
            }
        }
    }

    fn line(&mut self, index: usize, line: &[u8]) {
        let dialect = self.dialect;
        let client = &mut self.clients[index];
        if client.greeted_at.is_none() {
            // A probe is greeted by p2pchat's `hello` (an error such as `server_full` is counted
            // as one), by any answer to IRC's `PING` (ngircd answers 451, not registered).
            let greeting = match dialect {
                Dialect::P2pchat => dialect.classify(line) == Incoming::Hello,
                Dialect::Irc => true,
            };
            if greeting {
                client.greeted_at = Some(Instant::now());
                self.counters.greeted += 1;
                if client.probe {
                    return;
                }
            }
        }
        match dialect.classify(line) {
            Incoming::Message(text) => {
                let Some((sender, seq, micros)) = parse_text(text) else {
                    self.counters.malformed += 1;
                    return;
                };
                let now = self.now_micros();
                self.read_latency.record(now.saturating_sub(micros));
                // A stamp before the send or after the parse is a clock that moved (the
                // realtime clock stepped): no measure rather than a wrong one.
                match self.arrived_at {
                    Some(arrived)
                        if arrived + CLOCK_SLACK_MICROS >= micros
                            && arrived <= now + CLOCK_SLACK_MICROS =>
                    {
                        self.latency.record(arrived.saturating_sub(micros))
                    }
                    _ => self.counters.unstamped += 1,
                }
                self.counters.deliveries += 1;
                self.last_delivery = Some(Instant::now());
                self.clients[index].received += 1;
                if sender >= self.senders {
                    self.counters.malformed += 1;
                    return;
                }
                let last = &mut self.last_seq[index * self.senders + sender];
                if seq != *last + 1 {
                    self.counters.out_of_order += 1;
                }
                *last = seq;
            }
            Incoming::Joined => {
                let client = &mut self.clients[index];
                if client.phase == Phase::InRoom {
                    client.joined_seen += 1;
                    self.counters.joined_seen += 1;
                }
            }
            Incoming::Hello => {
                let client = &mut self.clients[index];
                if client.phase == Phase::Greeting && !client.probe {
                    let login = dialect.enter(&client.name, PASSWORD, client.register);
                    client.out.extend_from_slice(&login);
                    client.phase = Phase::Entering;
                    client.entered_at = Some(Instant::now());
                    self.flush(index);
                }
            }
            Incoming::Registered => {
                let client = &mut self.clients[index];
                if client.phase == Phase::Greeting {
                    let join = dialect.enter(&client.name, PASSWORD, client.register);
                    client.out.extend_from_slice(&join);
                    client.phase = Phase::Entering;
                    self.flush(index);
                }
            }
            Incoming::Names(count) => self.clients[index].names += count,
            Incoming::Welcome => {
                let room_size = self.room_size;
                let client = &mut self.clients[index];
                if client.phase != Phase::Entering {
                    return;
                }
                let present = match dialect {
                    // `{"type":"welcome",...,"peers":[{...},...]}`: one brace per peer, plus one.
                    Dialect::P2pchat => client.braces.saturating_sub(1),
                    Dialect::Irc => client.names,
                };
                client.phase = Phase::InRoom;
                client.joined_expected = room_size.saturating_sub(present as u64);
                let now = Instant::now();
                client.welcomed_at = Some(now);
                if let Some(at) = client.entered_at {
                    self.entry_latency
                        .record(now.duration_since(at).as_micros() as u64);
                }
                self.counters.joined_expected += client.joined_expected;
                self.counters.welcomed += 1;
                self.counters.entering -= 1;
            }
            Incoming::Ping(token) => {
                let pong = dialect.pong(token);
                self.clients[index].out.extend_from_slice(&pong);
                self.flush(index);
            }
            Incoming::RateLimited => self.counters.rate_limited += 1,
            Incoming::Error(code) => {
                let code = String::from_utf8_lossy(code).into_owned();
                *self.counters.errors.entry(code).or_default() += 1;
            }
            Incoming::Left => self.counters.left += 1,
            Incoming::Other => {}
        }
    }

    fn flush(&mut self, index: usize) {
        let client = &mut self.clients[index];
        let Some(stream) = client.stream.as_mut() else {
            return;
        };
        if client.phase == Phase::Connecting {
            return;
        }
        if let Some(tls) = client.tls.as_mut() {
            // Plaintext into the session (it holds what it cannot send before the handshake
            // ends, up to its buffer limit), records out to the socket, until neither moves.
            loop {
                let mut moved = false;
                if client.out_pos < client.out.len() {
                    match tls.writer().write(&client.out[client.out_pos..]) {
                        Ok(n) => {
                            client.out_pos += n;
                            moved |= n > 0;
                        }
                        Err(_) => return,
                    }
                }
                while tls.wants_write() {
                    match tls.write_tls(stream) {
                        Ok(_) => moved = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // The read side sees the close and counts it.
                        Err(_) => return,
                    }
                }
                if client.out_pos == client.out.len() || !moved {
                    break;
                }
            }
            if client.out_pos < client.out.len() {
                return;
            }
        } else {
            while client.out_pos < client.out.len() {
                match stream.write(&client.out[client.out_pos..]) {
                    Ok(n) => client.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The read side sees the close and counts it.
                    Err(_) => return,
                }
            }
        }
        client.out.clear();
        client.out_pos = 0;
        if client.out.capacity() > OUT_KEEP {
            client.out.shrink_to(OUT_KEEP);
        }
    }

    fn closed_by_server(&mut self, index: usize) {
        let client = &mut self.clients[index];
        match client.phase {
            Phase::Closed => return,
            Phase::InRoom => self.counters.dropped_in_room += 1,
            _ => self.counters.entering -= 1,
        }
        client.phase = Phase::Closed;
        client.stream = None;
        client.tls = None;
        self.counters.closed_by_server += 1;
    }
}

/// Asks the kernel to timestamp what the socket receives (`SO_TIMESTAMPNS`): when the bytes
/// reached the socket, which on loopback is when the server's write put them there.
fn enable_receive_timestamps(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid int for the option's length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `recvmsg` into `buf`: what `read` would return, and the kernel's receive timestamp of the
/// last bytes read (TCP gives that of the newest segment), if it gave one.
fn receive(
    stream: &TcpStream,
    buf: &mut [u8],
) -> (io::Result<usize>, Option<std::time::SystemTime>) {
    // Room for one `SCM_TIMESTAMPNS` control message (a `timespec`), aligned for `cmsghdr`.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; its pointers are set below to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `buf` and `control`, both alive and writable for the call.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return (Err(io::Error::last_os_error()), None);
    }
    let mut stamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(
                    std::time::UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32),
                );
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    (Ok(n as usize), stamp)
}

/// The first `\n` in `bytes`, eight bytes at a time (the generator reads gigabytes of peer lists
/// on the cores the server runs on; a byte-at-a-time scan cost it several times more).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ NEWLINES;
        // Has a zero byte: the classic test; exact about which byte is the first.
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return Some(offset + zero.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

/// Checked by the smoke run.
pub fn self_check() {
    // A poll that stops after the first of three events leaves the other two for the next, in
    // order, before the kernel is asked again.
    let mut ready = Ready::new(4);
    for (slot, token) in ready.buffer().iter_mut().zip([7, 8, 9]) {
        slot.u64 = token;
    }
    ready.reported(3);
    let token = |event: Option<libc::epoll_event>| event.map(|e| e.u64);
    assert_eq!(token(ready.next()), Some(7));
    assert!(!ready.is_drained(), "two events are not handled yet");
    assert_eq!(token(ready.next()), Some(8));
    assert_eq!(token(ready.next()), Some(9));
    assert_eq!(token(ready.next()), None);
    assert!(ready.is_drained());
    assert_eq!(ready.buffer().len(), 4);
    assert_eq!(
        token(ready.next()),
        None,
        "a new buffer holds nothing until reported"
    );
    for text in [
        &b""[..],
        b"\n",
        b"abc",
        b"abcdefgh\n",
        b"abcdefghijk\nl\n",
        b"\x8a\x0a",
    ] {
        assert_eq!(
            find_newline(text),
            text.iter().position(|&b| b == b'\n'),
            "{text:?}"
        );
    }
}

/// Client `index`'s source address: 127.a.b.c with c in 1..=250, never 127.0.0.1 (the server's).
pub fn source(index: usize) -> Ipv4Addr {
    let c = 1 + index % 250;
    let b = (index / 250) % 250;
    let a = 1 + index / (250 * 250);
    Ipv4Addr::new(127, a as u8, b as u8, c as u8)
}
