//! The seam between p2pchat and its async runtime.
//!
//! Every use of `async-std` (and of its signal-hook adapter) in the crate goes through this
//! module, so moving to its successor (`smol`) or another runtime means editing this file alone.
//! The rest of the crate speaks only `futures`' traits (`AsyncRead`, `AsyncWrite`, `Stream`) and
//! channels (`futures::channel`), which are runtime independent. It holds no p2pchat logic.

use std::future::Future;
use std::time::Duration;

pub use async_std::net::{TcpListener, TcpStream, UdpSocket};

/// The address types of the runtime's resolver (`to_socket_addrs` runs the system resolver off the
/// executor).
pub use async_std::net::ToSocketAddrs;

/// Runs a future to completion on the current thread; the entry point of the binaries.
pub fn block_on<F: Future>(future: F) -> F::Output {
    async_std::task::block_on(future)
}

/// Spawns a task on the executor. The task runs detached; the handle may be awaited for its result.
pub fn spawn<F, T>(future: F) -> async_std::task::JoinHandle<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    async_std::task::spawn(future)
}

/// Runs CPU-heavy or blocking work (scrypt, fsync) on the runtime's blocking thread pool, so that
/// it never stalls the executor threads that serve the chat.
pub async fn spawn_blocking<F, T>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    async_std::task::spawn_blocking(work).await
}

/// Waits for `duration`.
pub async fn sleep(duration: Duration) {
    async_std::task::sleep(duration).await
}

/// Runs `future` with a deadline: `None` when the deadline passed first.
///
/// A future of its own rather than async-std's `timeout`, which is an `async fn` and so keeps a
/// second copy of `future` in its state (rustc does not overlap an argument with the future that
/// is awaited on it): every connection waits for its next line inside one of these.
pub fn timeout<F: Future>(
    duration: Duration,
    future: F,
) -> impl Future<Output = Option<F::Output>> {
    Timeout {
        future,
        timer: sleep(duration),
    }
}

pin_project_lite::pin_project! {
    /// `future`, or `None` once `timer` has fired.
    struct Timeout<F, T> {
        #[pin]
        future: F,
        #[pin]
        timer: T,
    }
}

impl<F: Future, T: Future<Output = ()>> Future for Timeout<F, T> {
    type Output = Option<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(output) = this.future.poll(cx) {
            return std::task::Poll::Ready(Some(output));
        }
        this.timer.poll(cx).map(|()| None)
    }
}

/// Completes with the signal's name at the first SIGINT (Ctrl-C) or SIGTERM.
pub fn termination_signal() -> std::io::Result<impl Future<Output = &'static str> + Send> {
    use futures::StreamExt;
    use signal_hook::consts::{SIGINT, SIGTERM};

    let mut signals = signal_hook_async_std::Signals::new([SIGINT, SIGTERM])?;
    Ok(async move {
        match signals.next().await {
            Some(SIGTERM) => "SIGTERM",
            _ => "SIGINT",
        }
    })
}

/// Yields once for every SIGHUP from now on (which then no longer ends the process): the server's
/// signal to read the users file again, as IRC servers re-read their configuration.
pub fn hangup_signals() -> std::io::Result<impl futures::Stream<Item = ()> + Send + Unpin> {
    use futures::StreamExt;

    let signals = signal_hook_async_std::Signals::new([signal_hook::consts::SIGHUP])?;
    Ok(signals.map(|_| ()))
}
