//! A server that lies: a test-owned TLS listener speaking just enough of the protocol (`hello`,
//! `welcome`, `joined`) to log real clients in, and then says whatever the test wants to each of
//! them — another session key for a peer, another identity, a forged binding. It relays no room
//! line and answers nothing else; direct messages never pass through a server anyway.
//!
//! It accepts the number of clients it is told, on its own thread, which ends then. Clients reach
//! it with `--trust` its fingerprint (the harness's [`trust_flags`](super::trust_flags) gives it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use p2pchat::sealed::SessionKey;
use p2pchat::tls::{Fingerprint, ServerIdentity};
use serde_json::{json, Value};
use tempfile::TempDir;

use super::{modes, DEADLINE};

type Tls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// One client logged in: the entry it announced, and the stream to it.
struct Logged {
    entry: Value,
    stream: Tls,
}

pub struct LyingServer {
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    clients: Arc<Mutex<Vec<Logged>>>,
    /// One message per client logged in.
    logged_in: Receiver<()>,
    expected: usize,
    _accepting: JoinHandle<()>,
    _dir: TempDir,
}

impl LyingServer {
    /// Listens on loopback and logs in the next `clients` connections, each told about the
    /// others honestly (`welcome` with everyone, `joined` to those before).
    pub fn start(clients: usize) -> LyingServer {
        let dir = TempDir::new().expect("a folder for the key and certificate");
        let identity = ServerIdentity::load_or_create(
            &dir.path().join("server.key"),
            &dir.path().join("server.crt"),
        )
        .expect("a TLS identity");
        let config = identity.server_config().expect("a TLS config").config;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        modes()
            .lock()
            .unwrap()
            .insert(addr.port(), Some(identity.fingerprint()));
        let logged: Arc<Mutex<Vec<Logged>>> = Arc::default();
        let list = logged.clone();
        let (tx, logged_in) = mpsc::channel();
        let accepting = thread::spawn(move || {
            for _ in 0..clients {
                let Ok((tcp, _)) = listener.accept() else {
                    return;
                };
                let _ = tcp.set_read_timeout(Some(DEADLINE));
                let connection =
                    rustls::ServerConnection::new(config.clone()).expect("a TLS session");
                let mut stream = rustls::StreamOwned::new(connection, tcp);
                // A challenge the client proves its key against; this server checks nothing.
                let challenge = SessionKey::generate().public_key();
                write_line(
                    &mut stream,
                    &json!({"type": "hello", "version": 1, "auth": ["login", "register"],
                            "key_challenge": challenge}),
                );
                let Some(request) = read_line(&mut stream) else {
                    return;
                };
                let mut entry = json!({
                    "username": request["username"],
                    "ip": "127.0.0.1",
                    "p2p_port": request["p2p_port"],
                });
                for field in ["public_key", "identity_key", "identity_binding"] {
                    if !request[field].is_null() {
                        entry[field] = request[field].clone();
                    }
                }
                let mut list = list.lock().unwrap();
                for other in list.iter_mut() {
                    write_line(&mut other.stream, &json!({"type": "joined", "peer": entry}));
                }
                let mut peers: Vec<Value> = list.iter().map(|c| c.entry.clone()).collect();
                peers.push(entry.clone());
                write_line(
                    &mut stream,
                    &json!({"type": "welcome", "username": request["username"], "peers": peers}),
                );
                list.push(Logged { entry, stream });
                let _ = tx.send(());
            }
        });
        LyingServer {
            addr,
            fingerprint: identity.fingerprint(),
            clients: logged,
            logged_in,
            expected: clients,
            _accepting: accepting,
            _dir: dir,
        }
    }

    /// Waits until every client it was started for has been logged in.
    pub fn wait_for_all(&mut self) {
        while self.expected > 0 {
            self.logged_in
                .recv_timeout(DEADLINE)
                .expect("every client logged in within the deadline");
            self.expected -= 1;
        }
    }

    /// The entry `name` announced at login (as an honest server passes it on).
    pub fn entry(&self, name: &str) -> Value {
        self.clients
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.entry["username"] == name)
            .map(|c| c.entry.clone())
            .unwrap_or_else(|| panic!("{name} has not logged in"))
    }

    /// Sends `message` (one protocol line) to the client logged in as `name`.
    pub fn tell(&self, name: &str, message: &Value) {
        let mut clients = self.clients.lock().unwrap();
        let client = clients
            .iter_mut()
            .find(|c| c.entry["username"] == name)
            .unwrap_or_else(|| panic!("{name} has not logged in"));
        write_line(&mut client.stream, message);
    }
}

fn write_line(stream: &mut Tls, message: &Value) {
    let mut line = message.to_string();
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .expect("write to a client");
    stream.flush().expect("flush to a client");
}

/// One line from the client, as JSON; `None` if it closed or sent no line within the deadline.
fn read_line(stream: &mut Tls) -> Option<Value> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).ok()? == 1 {
        if byte[0] == b'\n' {
            return serde_json::from_slice(&line).ok();
        }
        line.push(byte[0]);
    }
    None
}
