//! The servers under test, each a private child process on a loopback port: p2pchat's release
//! server with its limits raised for the run (only the flags its `--help` lists, so the generator
//! keeps working while those flags change), or ngircd with its own config file in a temporary
//! folder, in the foreground. Either over TLS (`--tls`): p2pchat with a key and certificate made
//! in its folder before it starts (what it would make itself on a first start), ngircd with an
//! `[SSL]` section and a throw-away key and certificate; the generator's clients pin each
//! server's certificate by its fingerprint. Also what /proc says about them: CPU time (utime + stime), RSS now
//! and at its peak (VmRSS, VmHWM).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use p2pchat::tls::{Fingerprint, ServerIdentity};
use rustls::ClientConfig;
use tempfile::TempDir;

use crate::dialect::Dialect;
use crate::reactor::PASSWORD;
use crate::LoadError;

/// Longest wait for a server to start listening (loading 100,000 accounts included).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Interval between two looks at ngircd's log while it starts: it has no other signal.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The scrypt cost of the benchmark's accounts: logins must be cheap, the benchmark measures
/// fan-out, not hashing.
pub const BENCH_LOG_N: &str = "4";

/// What /proc says about a process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// utime + stime of all its threads, living and dead, in seconds.
    pub cpu: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

pub fn sample(pid: u32) -> ProcSample {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis start at field 3 (state); utime and stime
    // are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    ProcSample {
        cpu: (ticks(11) + ticks(12)) as f64 / per_second,
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    }
}

/// The generator's own CPU time, in seconds.
pub fn own_cpu() -> f64 {
    sample(std::process::id()).cpu
}

pub struct Target {
    pub dialect: Dialect,
    pub addr: SocketAddr,
    /// The clients' TLS settings (the server's certificate pinned), `None` in plaintext.
    pub tls: Option<Arc<ClientConfig>>,
    child: Child,
    log: PathBuf,
    /// Holds the users file or ngircd's config; removed when the target is dropped.
    _dir: TempDir,
}

impl Target {
    /// Starts p2pchat's server on `users` with `flags` (name, value; an empty value for a switch),
    /// passing only the flags `--help` lists. With `tls`, its key and certificate are made
    /// beside the users file first (where the server looks for them) and the clients pin them;
    /// `flags` must then not hold `--plaintext`.
    pub fn p2pchat(
        bin: &Path,
        dir: TempDir,
        flags: &[(&str, String)],
        tls: bool,
    ) -> Result<Target, LoadError> {
        let help = server_flags(bin)?;
        let users = dir.path().join("users.json");
        let tls = if tls {
            let (key, cert) = p2pchat::tls::default_paths(&users);
            let identity = ServerIdentity::load_or_create(&key, &cert)
                .map_err(|e| LoadError::Tls(e.to_string()))?;
            Some(pinned(identity.fingerprint()))
        } else {
            None
        };
        let log = dir.path().join("server.log");
        let mut command = Command::new(bin);
        command
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--users")
            .arg(&users);
        for (flag, value) in flags {
            if help.iter().any(|h| h == flag) {
                command.arg(flag);
                if !value.is_empty() {
                    command.arg(value);
                }
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).map_err(LoadError::io("create the server log"))?)
            .spawn()
            .map_err(LoadError::io("start p2pchat-server"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            // Keep the pipe open for whatever else it prints.
            for _ in lines {}
        });
        let first = rx.recv_timeout(START_DEADLINE).ok().flatten();
        let addr = first
            .as_deref()
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|a| a.trim().parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(&log).unwrap_or_default();
            return Err(LoadError::NotListening("p2pchat-server", log));
        };
        Ok(Target {
            dialect: Dialect::P2pchat,
            addr,
            tls,
            child,
            log,
            _dir: dir,
        })
    }

    /// Starts a private ngircd on a free loopback port, limits raised and penalties off; with
    /// `tls`, an `[SSL]` port too (which the clients use), with a throw-away key and
    /// certificate made here.
    pub fn ngircd(bin: &Path, tls: bool) -> Result<Target, LoadError> {
        let dir = TempDir::new().map_err(LoadError::io("make a temporary folder"))?;
        // ngircd started as root drops to "nobody", which must still read its config.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(LoadError::io("open the temporary folder"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(LoadError::io("find a free port"))?
            .port();
        let conf = dir.path().join("ngircd.conf");
        let log = dir.path().join("ngircd.log");
        let (ssl, client_tls, tls_port) = if tls {
            let (section, fingerprint, tls_port) = ngircd_ssl(dir.path())?;
            (section, Some(pinned(fingerprint)), Some(tls_port))
        } else {
            (String::new(), None, None)
        };
        fs::write(
            &conf,
            format!(
                "[Global]\n\
                 Name = bench.invalid\n\
                 Info = p2pchat load benchmark\n\
                 AdminInfo1 = bench\nAdminInfo2 = bench\nAdminEMail = bench@bench.invalid\n\
                 Listen = 127.0.0.1\n\
                 Ports = {port}\n\
                 PidFile = {pid}\n\
                 MotdPhrase = bench\n\
                 [Limits]\n\
                 MaxConnections = 0\n\
                 MaxConnectionsIP = 0\n\
                 MaxJoins = 0\n\
                 MaxNickLength = 20\n\
                 MaxPenaltyTime = 0\n\
                 PingTimeout = 3600\n\
                 PongTimeout = 3600\n\
                 [Options]\n\
                 DNS = no\n\
                 Ident = no\n\
                 PAM = no\n\
                 {ssl}",
                pid = dir.path().join("ngircd.pid").display()
            ),
        )
        .map_err(LoadError::io("write ngircd's config"))?;
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o644))
            .map_err(LoadError::io("open ngircd's config"))?;
        let out = fs::File::create(&log).map_err(LoadError::io("create ngircd's log"))?;
        let err = out
            .try_clone()
            .map_err(LoadError::io("create ngircd's log"))?;
        let mut child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(LoadError::io("start ngircd"))?;
        let deadline = Instant::now() + START_DEADLINE;
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Now listening on")
        {
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                let log = fs::read_to_string(&log).unwrap_or_default();
                return Err(LoadError::NotListening("ngircd", log));
            }
            thread::sleep(POLL_INTERVAL);
        }
        Ok(Target {
            dialect: Dialect::Irc,
            addr: SocketAddr::from(([127, 0, 0, 1], tls_port.unwrap_or(port))),
            tls: client_tls,
            child,
            log,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sample(&self) -> ProcSample {
        sample(self.pid())
    }

    /// Lines of the server's log that contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ngircd's `[SSL]` section: a throw-away ECDSA P-256 key and self-signed certificate (the kind
/// p2pchat makes for itself, so both servers sign the same way) written in `dir`, and a port of
/// its own. Returns the section, the certificate's fingerprint and the TLS port.
fn ngircd_ssl(dir: &Path) -> Result<(String, Fingerprint, u16), LoadError> {
    let made = rcgen::generate_simple_self_signed(vec![p2pchat::tls::SERVER_NAME.to_string()])
        .map_err(|e| LoadError::Tls(e.to_string()))?;
    let key = dir.join("ngircd-key.pem");
    let cert = dir.join("ngircd-cert.pem");
    fs::write(&key, made.signing_key.serialize_pem())
        .map_err(LoadError::io("write ngircd's TLS key"))?;
    // ngircd reads its key after it dropped root for "nobody" (when started as root); the
    // key is a throw-away for this run, in a folder removed at the end.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644))
        .map_err(LoadError::io("open ngircd's TLS key"))?;
    fs::write(&cert, made.cert.pem()).map_err(LoadError::io("write ngircd's certificate"))?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(LoadError::io("find a free port"))?
        .port();
    let section = format!(
        "[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {port}\n",
        cert.display(),
        key.display()
    );
    Ok((section, Fingerprint::of_certificate(made.cert.der()), port))
}

/// Whether `bin` (ngircd) was built with TLS: its `--version` lists `+SSL`.
pub fn ngircd_has_tls(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("+SSL"))
}

/// The generator's TLS settings for a server whose certificate has `fingerprint`: p2pchat's own
/// client configuration (TLS 1.3, no resumption), pinned, so the handshake verifies the server's
/// signature as a real client's does.
fn pinned(fingerprint: Fingerprint) -> Arc<ClientConfig> {
    let presented = Arc::new(Mutex::new(None));
    Arc::new(p2pchat::tls::client_config(Some(fingerprint), presented))
}

/// The `--flags` that `p2pchat-server --help` lists.
pub fn server_flags(bin: &Path) -> Result<Vec<String>, LoadError> {
    let output = Command::new(bin)
        .arg("--help")
        .output()
        .map_err(LoadError::io("run p2pchat-server --help"))?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(['.', ':', ')']).to_owned())
        .collect())
}

/// A valid password hash at the benchmark's cost, for [`PASSWORD`]: taken from one real
/// registration on a throw-away server, so the users files the workloads generate hold what
/// the server itself writes.
pub fn bench_hash(bin: &Path) -> Result<String, LoadError> {
    let dir = TempDir::new().map_err(LoadError::io("make a temporary folder"))?;
    let users = dir.path().join("users.json");
    let server = Target::p2pchat(
        bin,
        dir,
        &[
            ("--scrypt-log-n", BENCH_LOG_N.into()),
            ("--plaintext", String::new()),
        ],
        false,
    )?;
    let io = LoadError::io("register the seed account");
    let mut stream = TcpStream::connect(server.addr).map_err(io)?;
    stream
        .set_read_timeout(Some(START_DEADLINE))
        .map_err(LoadError::io("register the seed account"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(LoadError::io("clone"))?);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(LoadError::io("read hello"))?;
    stream
        .write_all(&Dialect::P2pchat.enter("seed", PASSWORD, true))
        .map_err(LoadError::io("send the registration"))?;
    line.clear();
    reader
        .read_line(&mut line)
        .map_err(LoadError::io("read welcome"))?;
    if !line.contains("\"welcome\"") {
        return Err(LoadError::Seed(line));
    }
    // The registration is in the users journal; the server folds it into the users file once
    // registrations pause (~0.1 s).
    let journal = users.with_file_name("users.json.journal");
    let waited = Instant::now();
    while journal.exists() && waited.elapsed() < START_DEADLINE {
        thread::sleep(Duration::from_millis(10));
    }
    let mut text = String::new();
    fs::File::open(&users)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(LoadError::io("read the users file"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| LoadError::Seed(e.to_string()))?;
    json["users"][0]["password_hash"]
        .as_str()
        .map(str::to_owned)
        .ok_or(LoadError::Seed(text))
}

/// Writes a users file of `names`, all with `hash` (mode 0600, as the server writes it).
pub fn write_users(path: &Path, names: impl Iterator<Item = String>, hash: &str) -> io::Result<()> {
    let users: Vec<serde_json::Value> = names
        .map(|name| serde_json::json!({ "username": name, "password_hash": hash }))
        .collect();
    let text = serde_json::to_string(&serde_json::json!({ "version": 1, "users": users }))?;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}
