//! Everything the chat loop ([`session`](super::session)) waits for, as one stream of [`Input`]s,
//! and the tasks that feed it: each connection's lines, read by a task of its own that tags them
//! with the connection's number (so that a late line from a connection already given up is told
//! apart and ignored); the outcome of each reconnect try; datagrams from peers; the person's
//! commands; retransmission timers; file transfers' progress, ends and connections; and a
//! housekeeping tick.
//!
//! Tasks feed the loop through a bounded channel: a reader waits while the loop is behind. This
//! module never acts on an input; what each one means is the chat loop's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::stream::{self, Stream, StreamExt};
use futures::SinkExt;

use super::command::Command;
use super::direct::TimerFired;
use super::error::ClientError;
use super::reconnect::{redial_once, Redial, Relinked};
use super::transfers::input::TransferInput;
use crate::connection::{LineReader, ReadError, StreamReader};
use crate::runtime::{self, UdpSocket};

/// Receive buffer for datagrams: any UDP payload fits, so an oversized one is seen whole and
/// refused rather than silently cut.
const DATAGRAM_BUFFER: usize = 65_536;

/// How often the chat loop wakes up with nothing to do: to give out a due summary of dropped
/// datagrams even when no more arrive, and to say how many lines still wait to be sent.
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);

/// Lines (and reconnect results) read ahead of the chat loop; a reader waits when it is full.
const SERVER_INPUTS: usize = 64;

/// Everything the chat loop waits for.
pub(super) enum Input {
    /// A line (or the end) from connection number `link`.
    Server {
        link: u64,
        line: Result<Option<Vec<u8>>, ReadError>,
    },
    /// The outcome of reconnect try number `attempt`.
    Relinked {
        attempt: u64,
        result: Box<Result<Relinked, ClientError>>,
    },
    Datagram(io::Result<(Vec<u8>, SocketAddr)>),
    Command(Command),
    EndOfCommands,
    /// Time passed (every [`HOUSEKEEPING_TICK`]).
    Tick,
    /// A sealed direct message's retransmission timer fired.
    Retransmit(TimerFired),
    /// A file transfer's progress or end, or a connection to the transfer port.
    Transfer(TransferInput),
}

/// Where the tasks started later (connection readers, reconnect tries) send their inputs.
pub(super) type Feed = mpsc::Sender<Input>;

/// Every input of the chat as one stream: what is fed through the returned [`Feed`], datagrams
/// received on `udp`, the person's `commands` (then [`Input::EndOfCommands`]), the `timers`,
/// the file `transfers`' inputs, and the tick.
pub(super) fn merge(
    udp: Arc<UdpSocket>,
    commands: impl Stream<Item = Command> + Unpin,
    timers: impl Stream<Item = TimerFired>,
    transfers: impl Stream<Item = TransferInput>,
) -> (Feed, impl Stream<Item = Input> + Unpin) {
    let (feed, fed) = mpsc::channel(SERVER_INPUTS);
    let from_peers = stream::unfold(udp, |udp: Arc<UdpSocket>| async move {
        let mut buf = vec![0; DATAGRAM_BUFFER];
        let received = udp.recv_from(&mut buf).await.map(|(n, source)| {
            buf.truncate(n);
            (buf, source)
        });
        Some((Input::Datagram(received), udp))
    });
    let from_person = commands
        .map(Input::Command)
        .chain(stream::iter([Input::EndOfCommands]));
    let from_timers = stream::select(
        timers.map(Input::Retransmit),
        transfers.map(Input::Transfer),
    );
    let ticks = stream::unfold((), |()| async {
        runtime::sleep(HOUSEKEEPING_TICK).await;
        Some((Input::Tick, ()))
    });
    // Pinned on the heap: the unfold streams hold futures that must not move.
    let inputs = Box::pin(stream::select(
        stream::select(fed, stream::select(ticks, from_timers)),
        stream::select(from_peers, from_person),
    ));
    (feed, inputs)
}

/// Reads connection `id`'s lines into the chat loop until its end (or the loop's).
pub(super) fn spawn_reader(mut reader: LineReader<StreamReader>, id: u64, mut feed: Feed) {
    runtime::spawn(async move {
        loop {
            let line = reader.next_line().await;
            let last = !matches!(line, Ok(Some(_)));
            if feed.send(Input::Server { link: id, line }).await.is_err() || last {
                break;
            }
        }
    });
}

/// Reconnect try number `attempt`, after `wait`; its outcome comes back as [`Input::Relinked`].
pub(super) fn spawn_redial(redial: Redial, wait: Duration, attempt: u64, mut feed: Feed) {
    runtime::spawn(async move {
        runtime::sleep(wait).await;
        let result = Box::new(redial_once(redial).await);
        let _ = feed.send(Input::Relinked { attempt, result }).await;
    });
}

/// Hands connection `id`'s lines to `on_line` until it ends (or the inputs do), once the chat
/// is over: every other input is dropped.
pub(super) async fn until_closed(
    inputs: &mut (impl Stream<Item = Input> + Unpin),
    id: u64,
    mut on_line: impl FnMut(&[u8]),
) {
    while let Some(input) = inputs.next().await {
        let Input::Server { link, line } = input else {
            continue;
        };
        if link != id {
            continue;
        }
        match line {
            Ok(Some(line)) => on_line(&line),
            Ok(None) | Err(_) => break,
        }
    }
}
