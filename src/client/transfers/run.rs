//! One run of a transfer as a task of its own: the sender serving a connection the listener
//! accepted, or the receiver connecting to the sender's transfer port and fetching into its
//! partial file (the engine's [`serve`] and [`fetch`]). Each reports its progress, at most once per
//! interval and never waiting (a full channel skips one), and its end (always, waiting for room),
//! through the transfers' bounded channel. Cancelling is dropping the task ([`AbortHandle`]):
//! the engine leaves a receiver's partial file a good prefix to resume from.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, Abortable};
use futures::SinkExt;

use super::input::{Outcome, TransferInput};
use crate::protocol::file::TransferId;
use crate::runtime::{self, TcpStream};
use crate::transfer::send::serve_proven;
use crate::transfer::{
    channel, fetch, Limits, Opening, Partial, Progress, Request, Source, TransferError, TransferKey,
};

/// What every run needs to report.
pub(crate) struct Reporting {
    pub(crate) id: TransferId,
    pub(crate) run: u64,
    /// The shortest time between two progress reports.
    pub(crate) every: Duration,
    pub(crate) inputs: mpsc::Sender<TransferInput>,
}

impl Reporting {
    /// The engine's progress callback: a report at most every [`Reporting::every`].
    fn progress(&self) -> impl FnMut(Progress) {
        let (id, run, every) = (self.id, self.run, self.every);
        let mut inputs = self.inputs.clone();
        // The first record is reported at once: it says the handshake passed and bytes flow.
        let mut last: Option<Instant> = None;
        move |progress| {
            if last.is_none_or(|at| at.elapsed() >= every) {
                last = Some(Instant::now());
                // Lossy on purpose: a later report says more, and the loop must not wait.
                let _ = inputs.try_send(TransferInput::Progress { id, run, progress });
            }
        }
    }

    async fn ended(mut self, outcome: Outcome) {
        let _ = self
            .inputs
            .send(TransferInput::Ended {
                id: self.id,
                run: self.run,
                outcome,
            })
            .await;
    }
}

/// Serves `source` on `stream` (its `opening` read), keyed with `key`. The run is the
/// transfer's only once the receiver proved it holds the key: until then it is a candidate, and
/// whatever ran before (a run under way, an offer waiting) stands. Proven, it asks the chat loop
/// ([`TransferInput::Proven`]) and goes on only if told to; a failed handshake says
/// [`TransferInput::Unproven`] and changes nothing. An unproven connection must never end a
/// genuine run: its opening is in the clear, so anyone on the peer's IP can send one.
pub(crate) fn spawn_serve(
    reporting: Reporting,
    mut stream: TcpStream,
    opening: Opening,
    key: TransferKey,
    source: Source,
    limits: Limits,
) {
    let (abort, registration) = AbortHandle::new_pair();
    runtime::spawn(async move {
        let progress = reporting.progress();
        let mut inputs = reporting.inputs.clone();
        let (id, run) = (reporting.id, reporting.run);
        let work = async {
            let records = match channel::accept(&mut stream, &opening, &key, &limits).await {
                Ok(records) => records,
                Err(_) => {
                    let _ = inputs.send(TransferInput::Unproven { id }).await;
                    return None;
                }
            };
            let (go, told) = oneshot::channel();
            let asked = TransferInput::Proven {
                id,
                run,
                abort,
                offset: opening.offset,
                go,
            };
            if inputs.send(asked).await.is_err() || told.await.is_err() {
                return None; // Not wanted (cancelled meanwhile, the chat gone): closed.
            }
            Some(serve_proven(stream, records, &opening, &source, &limits, progress).await)
        };
        if let Ok(Some(result)) = Abortable::new(work, registration).await {
            let outcome = match result {
                Ok(served) => Outcome::Served(served),
                Err(error) => Outcome::Failed(error),
            };
            reporting.ended(outcome).await;
        }
    });
}

/// Connects to the sender's transfer port at `sender` and fetches `request` into `partial`.
pub(crate) fn spawn_fetch(
    reporting: Reporting,
    sender: SocketAddr,
    request: Request,
    key: TransferKey,
    partial: Partial,
    limits: Limits,
) -> AbortHandle {
    let (abort, registration) = AbortHandle::new_pair();
    runtime::spawn(async move {
        let progress = reporting.progress();
        let run = async {
            let stream = match runtime::timeout(limits.handshake, TcpStream::connect(sender)).await
            {
                Some(Ok(stream)) => stream,
                Some(Err(e)) => return Err(TransferError::Connection(e)),
                None => return Err(TransferError::HandshakeTimeout(limits.handshake)),
            };
            let _ = stream.set_nodelay(true);
            fetch(stream, &request, &key, partial, &limits, progress).await
        };
        if let Ok(result) = Abortable::new(run, registration).await {
            let outcome = match result {
                Ok(saved) => Outcome::Saved(saved),
                Err(error) => Outcome::Failed(error),
            };
            reporting.ended(outcome).await;
        }
    });
    abort
}
