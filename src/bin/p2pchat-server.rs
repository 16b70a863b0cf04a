//! `p2pchat-server`: parses flags, opens the users file, binds, and runs the server until
//! Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use p2pchat::broker::{QueueLimits, DEFAULT_SEND_QUEUE_BYTES, DEFAULT_SEND_QUEUE_LINES};
use p2pchat::login_throttle::{
    ThrottleConfig, DEFAULT_BASE_DELAY, DEFAULT_FREE_FAILURES, DEFAULT_MAX_DELAY,
};
use p2pchat::runtime::{self, TcpListener};
use p2pchat::server::{self, FloodLimit, ServerConfig};
use p2pchat::server::{
    DEFAULT_AUTH_TIMEOUT, DEFAULT_FLOOD_BURST, DEFAULT_FLOOD_RATE, DEFAULT_FLOOD_STRIKES,
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_PENDING_PER_IP, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT,
};
use p2pchat::user_store::{
    self, UserStore, DEFAULT_LOG_N, DEFAULT_P, DEFAULT_R, MAX_LOG_N, MAX_P, MAX_R, MIN_LOG_N,
    MIN_P, MIN_R,
};

/// The p2pchat server: accounts, the list of who is online, and the chat room.
///
/// Prints `listening on IP:PORT` as its first line on stdout, then logs events on stderr
/// (set RUST_LOG=debug|info|warn|error to choose how much; default info). Ctrl-C or SIGTERM tells
/// the clients and exits 0.
#[derive(Parser, Debug)]
#[command(name = "p2pchat-server", version)]
struct Args {
    /// Address and TCP port to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:12000")]
    bind: SocketAddr,

    /// The users file (JSON, mode 0600, created if missing).
    #[arg(long, value_name = "PATH", default_value = "users.json")]
    users: PathBuf,

    /// Connections served at once, logged in or not; more are refused with `server_full`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CLIENTS as u32,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    max_clients: u32,

    /// Connections from one address that have not logged in yet; more are refused with
    /// `too_many_connections`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PENDING_PER_IP as u32,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    max_pending_per_ip: u32,

    /// Seconds a connection has to log in or register; then `auth_timeout` and close.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_AUTH_TIMEOUT.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    auth_timeout: f64,

    /// Seconds of silence from a logged-in client before the server sends it `ping`.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_PING_INTERVAL.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    ping_interval: f64,

    /// Seconds a client has to answer `ping`; then it is dropped and announced as gone.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_PING_TIMEOUT.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    ping_timeout: f64,

    /// Lines a client may send at once before flood control starts dropping them.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FLOOD_BURST,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    flood_burst: u32,

    /// Lines per second a client may send once its burst is spent.
    #[arg(long, value_name = "PER_SEC", default_value_t = DEFAULT_FLOOD_RATE,
          value_parser = rate, help_heading = "Limits")]
    flood_rate: f64,

    /// Lines dropped for flooding (without a pause) before the client is disconnected.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FLOOD_STRIKES,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    flood_strikes: u32,

    /// Lines that may wait to be sent to one client; a client that does not read is
    /// disconnected when its queue is full.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SEND_QUEUE_LINES as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), help_heading = "Limits")]
    send_queue_lines: u32,

    /// Bytes that may wait to be sent to one client.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SEND_QUEUE_BYTES as u32,
          value_parser = clap::value_parser!(u32).range(1..=1 << 30), help_heading = "Limits")]
    send_queue_bytes: u32,

    /// Failed logins (per account and per address) before further attempts are delayed.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FREE_FAILURES, help_heading = "Limits")]
    login_free_failures: u32,

    /// Seconds of delay after the first failure beyond the free ones; doubles per failure.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_BASE_DELAY.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    login_delay: f64,

    /// The longest delay before a login attempt is checked, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MAX_DELAY.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    login_delay_max: f64,

    /// scrypt cost for new password hashes: log2 of N (17 = 128 MiB per hash with r = 8; at most
    /// 20, and at most 1 GiB = 128 * r * 2^LN bytes per hash). Existing hashes keep the cost they
    /// were made with until their owner logs in, which re-hashes a weaker one at this cost.
    #[arg(long, value_name = "LN", default_value_t = DEFAULT_LOG_N,
          value_parser = clap::value_parser!(u8).range(MIN_LOG_N as i64..=MAX_LOG_N as i64))]
    scrypt_log_n: u8,

    /// scrypt block size r for new password hashes (at most 32).
    #[arg(long, value_name = "R", default_value_t = DEFAULT_R,
          value_parser = clap::value_parser!(u32).range(MIN_R as i64..=MAX_R as i64))]
    scrypt_r: u32,

    /// scrypt parallelism p for new password hashes (at most 16).
    #[arg(long, value_name = "P", default_value_t = DEFAULT_P,
          value_parser = clap::value_parser!(u32).range(MIN_P as i64..=MAX_P as i64))]
    scrypt_p: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Each flag is in range; together they must also fit the memory bound and scrypt's rules.
    let params = match user_store::scrypt_params(args.scrypt_log_n, args.scrypt_r, args.scrypt_p) {
        Ok(params) => params,
        Err(why) => Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--scrypt-log-n {} --scrypt-r {} --scrypt-p {} is not an allowed cost: {why}",
                    args.scrypt_log_n, args.scrypt_r, args.scrypt_p
                ),
            )
            .exit(),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    match runtime::block_on(serve(args, params)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("p2pchat-server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, params: scrypt::Params) -> Result<(), String> {
    let store = UserStore::open(&args.users, params).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(args.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let signal = runtime::termination_signal()
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
    log::info!(
        "listening on {addr}; users file {} ({} accounts); scrypt ln={} r={} p={}; at most {} connections",
        store.path().display(),
        store.len(),
        args.scrypt_log_n,
        args.scrypt_r,
        args.scrypt_p,
        args.max_clients
    );
    let config = ServerConfig {
        max_clients: args.max_clients as usize,
        max_pending_per_ip: args.max_pending_per_ip as usize,
        auth_timeout: Duration::from_secs_f64(args.auth_timeout),
        ping_interval: Duration::from_secs_f64(args.ping_interval),
        ping_timeout: Duration::from_secs_f64(args.ping_timeout),
        flood: FloodLimit {
            burst: args.flood_burst,
            per_second: args.flood_rate,
            strikes: args.flood_strikes,
        },
        send_queue: QueueLimits {
            lines: args.send_queue_lines as usize,
            bytes: args.send_queue_bytes as usize,
        },
        login_throttle: ThrottleConfig {
            free_failures: args.login_free_failures,
            base_delay: Duration::from_secs_f64(args.login_delay),
            max_delay: Duration::from_secs_f64(args.login_delay_max),
        },
    };
    let shutdown = async move {
        let name = signal.await;
        log::info!("received {name}");
    };
    server::run(listener, Arc::new(store), config, shutdown).await;
    log::info!("stopped");
    Ok(())
}

/// A flag's number of seconds: more than 0, at most a day.
fn seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if secs > 0.0 && secs <= 86_400.0 {
        Ok(secs)
    } else {
        Err("must be more than 0 and at most 86400 seconds".into())
    }
}

/// A flag's rate per second: more than 0.
fn rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if rate > 0.0 && rate.is_finite() {
        Ok(rate)
    } else {
        Err("must be a number more than 0".into())
    }
}
