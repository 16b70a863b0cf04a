//! `p2pchat-server`: parses flags, binds, opens the users file, and runs the server until
//! Ctrl-C or SIGTERM. Every limit's flag, default and doc is the library's
//! ([`p2pchat::server::ServerFlags`]); this file only wires things up.

#![deny(unsafe_code)]

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Weak};

use clap::{CommandFactory, Parser};
use futures::{Stream, StreamExt};
use p2pchat::discovery::{self, Announcement, Offer};
use p2pchat::runtime::{self, TcpListener};
use p2pchat::server::{self, ServerFlags};
use p2pchat::tls::{self, IdentityError, ServerIdentity};
use p2pchat::user_store::{StoreError, UnsafeFile, UserStore};

/// The p2pchat server: accounts, the list of who is online, and the chat room.
///
/// Prints `listening on IP:PORT` as its first line on stdout and, with TLS (the default),
/// `fingerprint SHA256:…` on the next (what clients pin; compare it with what they show at first
/// contact), then logs events on stderr (set RUST_LOG=debug|info|warn|error to choose how much;
/// default info). Ctrl-C or SIGTERM tells the clients and exits 0. A start-up error (users file,
/// TLS key or certificate, address in use, another server on the same users file) exits 1.
///
/// Accounts: stop the server and edit the users file, or edit it while the server runs and send
/// SIGHUP (`kill -HUP PID`) to have it read again; until then, registrations are refused rather
/// than write over the edit. One server per users file (a lock beside it: users.json.lock).
#[derive(Parser, Debug)]
#[command(name = "p2pchat-server", version, help_template = p2pchat::HELP_TEMPLATE)]
struct Args {
    /// Address and TCP port to listen on: ADDR:PORT, HOST:PORT (a name, resolved; the first
    /// address that can be bound), or PORT alone (every IPv4 address); port 0 picks a free port.
    #[arg(long, value_name = "ADDR:PORT|PORT", default_value = "0.0.0.0:12000",
          value_parser = parse_bind)]
    bind: String,

    /// The users file (JSON, mode 0600, created if missing). Edit it with the server stopped, or
    /// edit it and send the server SIGHUP.
    #[arg(long, value_name = "PATH", default_value = "users.json")]
    users: PathBuf,

    /// Start even if someone other than this user (and root) could replace the users file: the
    /// file or one of its folders belongs to another user, or others may write to a folder
    /// without the sticky bit. Each reason is still logged as a warning.
    #[arg(long)]
    allow_unsafe_users_file: bool,
    /// The TLS private key (PEM; mode 0600, refused if others may read it). Made, with the
    /// certificate, when neither file exists. [default: tls-key.pem beside the users file]
    #[arg(long, value_name = "PATH", help_heading = "TLS")]
    tls_key: Option<PathBuf>,

    /// The TLS certificate (PEM, self-signed); its SHA-256 is the fingerprint clients pin.
    /// [default: tls-cert.pem beside the users file]
    #[arg(long, value_name = "PATH", help_heading = "TLS")]
    tls_cert: Option<PathBuf>,

    /// Speak the plaintext protocol, without TLS: anyone on the network reads passwords and
    /// messages. For the lab's teaching capture; clients must use --plaintext too.
    #[arg(long, conflicts_with_all = ["tls_key", "tls_cert"], help_heading = "TLS")]
    plaintext: bool,

    /// Do not announce the server on the LAN. By default it announces _p2pchat._tcp over
    /// multicast DNS (DNS-SD) with its port, TLS or not and its fingerprint, on the interfaces
    /// it listens on (0.0.0.0: every one but loopback, unless loopback is all there is), so that
    /// a client started without --server finds it; a server bound to a loopback address is
    /// never announced (only this host can reach it).
    #[arg(long)]
    no_announce: bool,

    #[command(flatten)]
    server: ServerFlags,
}

/// A `--bind` that is neither PORT nor HOST:PORT.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not PORT or HOST:PORT (PORT a number from 0 to 65535; an IPv6 address is written [ADDRESS]:PORT)")]
struct BadBind(String);

/// `PORT` alone means every IPv4 address; `HOST:PORT` is kept for resolving at start. Checked
/// here so that a typo is a usage error (exit 2).
fn parse_bind(text: &str) -> Result<String, BadBind> {
    let bad = || BadBind(text.to_string());
    if let Ok(port) = text.parse::<u16>() {
        return Ok(format!("0.0.0.0:{port}"));
    }
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text.to_string());
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(':') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(text.to_string())
}

/// Why the server could not start (each is printed after `p2pchat-server: `, exit status 1).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    #[error("cannot read the listening address: {0}")]
    LocalAddr(io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

/// `path` from the root (the working folder joined in front when it is relative), so that what
/// the server prints and logs names the very file to open, whatever folder it is read from;
/// as given if the working folder cannot be known.
fn full_path(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    args.users = full_path(&args.users);
    args.tls_key = args.tls_key.as_deref().map(full_path);
    args.tls_cert = args.tls_cert.as_deref().map(full_path);
    let params = match args.server.hash_params() {
        Ok(params) => params,
        Err(rejected) => Args::command()
            .error(clap::error::ErrorKind::ValueValidation, rejected)
            .exit(),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    match runtime::block_on(serve(args, params)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("p2pchat-server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, params: scrypt::Params) -> Result<(), StartError> {
    let unsafe_file = match args.allow_unsafe_users_file {
        true => UnsafeFile::Allow,
        false => UnsafeFile::Refuse,
    };
    // Bound before the users file is opened: a second server started on the same port says so.
    // (On another port, the users file's lock stops it.) A host name binds the first of its
    // addresses that can be bound, in the resolver's order.
    let listener = TcpListener::bind(args.bind.as_str())
        .await
        .map_err(|source| StartError::Listen {
            addr: args.bind.clone(),
            source,
        })?;
    let store = UserStore::open_with(&args.users, params, unsafe_file)?;
    let mut config = args.server.config();
    let identity = if args.plaintext {
        None
    } else {
        let (default_key, default_cert) = tls::default_paths(&args.users);
        let key = args.tls_key.clone().unwrap_or(default_key);
        let cert = args.tls_cert.clone().unwrap_or(default_cert);
        let identity = ServerIdentity::load_or_create(&key, &cert)?;
        config.tls = Some(identity.server_config()?);
        Some((identity, key, cert))
    };
    let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
    let signal = runtime::termination_signal().map_err(StartError::Signals)?;
    let hangups = runtime::hangup_signals().map_err(StartError::Signals)?;
    let store = Arc::new(store);
    runtime::spawn(reload_on_hangup(hangups, Arc::downgrade(&store)));
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {addr}");
    if let Some((identity, _, _)) = &identity {
        let _ = writeln!(stdout, "fingerprint {}", identity.fingerprint());
    }
    let _ = stdout.flush();
    let flags = &args.server;
    log::info!(
        "listening on {addr}; users file {} ({} accounts); scrypt ln={} r={} p={}; at most {} connections",
        store.path().display(),
        store.len(),
        flags.scrypt_log_n,
        flags.scrypt_r,
        flags.scrypt_p,
        flags.max_clients
    );
    match &identity {
        Some((identity, key, cert)) => log::info!(
            "TLS 1.3; fingerprint {}; key {}, certificate {}{}",
            identity.fingerprint(),
            key.display(),
            cert.display(),
            if identity.created() {
                " (made now)"
            } else {
                ""
            }
        ),
        None => log::warn!(
            "plaintext (--plaintext): passwords and messages cross the network readable by anyone"
        ),
    }
    let announcement = announce(
        &args,
        addr,
        identity.as_ref().map(|(i, _, _)| i.fingerprint()),
    );
    let shutdown = async move {
        let name = signal.await;
        log::info!("received {name}");
    };
    server::run(listener, store, config, shutdown).await;
    if let Some(announcement) = announcement {
        // Goodbye packets, so that browsers forget the server now rather than in minutes.
        runtime::spawn_blocking(move || announcement.withdraw()).await;
        log::info!("withdrawn from the LAN (mDNS goodbye sent)");
    }
    log::info!("stopped");
    Ok(())
}

/// Announces the server on the LAN unless `--no-announce` or it listens on loopback only; a
/// failure is logged and the server runs on: clients can still be given `--server`.
fn announce(
    args: &Args,
    addr: SocketAddr,
    fingerprint: Option<tls::Fingerprint>,
) -> Option<Announcement> {
    if args.no_announce {
        log::info!("not announced on the LAN (--no-announce)");
        return None;
    }
    if addr.ip().is_loopback() {
        log::info!("not announced on the LAN: {addr} is reachable from this host only");
        return None;
    }
    let offer = Offer {
        name: discovery::instance_name(addr.port()),
        listening: addr,
        fingerprint,
    };
    match Announcement::start(&offer) {
        Ok(announcement) => {
            let on: Vec<String> = announcement
                .interfaces
                .iter()
                .map(|a| format!("{} ({})", a.interface, a.ip))
                .collect();
            log::info!(
                "announced on the LAN as {:?} ({}) on {}",
                offer.name,
                discovery::SERVICE_TYPE,
                on.join(", ")
            );
            Some(announcement)
        }
        Err(error) => {
            log::warn!("not announced on the LAN: {error}");
            None
        }
    }
}

/// Reads the users file again at each SIGHUP, while the server runs (a weak reference: the
/// store, and with it the users file's lock, goes when the server stops).
async fn reload_on_hangup(mut hangups: impl Stream<Item = ()> + Unpin, store: Weak<UserStore>) {
    while hangups.next().await.is_some() {
        let Some(store) = store.upgrade() else { return };
        log::info!(
            "received SIGHUP: reading users file {} again",
            store.path().display()
        );
        if let Err(error) = runtime::spawn_blocking(move || store.reload()).await {
            log::error!("{error}");
        }
    }
}
