//! `p2pchat-server`: parses flags, opens the users file, binds, and runs the server until
//! Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use p2pchat::runtime::{self, TcpListener};
use p2pchat::server::{self, ServerConfig, DEFAULT_MAX_CLIENTS};
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
          value_parser = clap::value_parser!(u32).range(1..))]
    max_clients: u32,

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
    };
    let shutdown = async move {
        let name = signal.await;
        log::info!("received {name}");
    };
    server::run(listener, Arc::new(store), config, shutdown).await;
    log::info!("stopped");
    Ok(())
}
