//! The chat loop, from `welcome` to leaving: serves lines from the server, datagrams from peers,
//! what the person types and the timers at once, sends the server what the pace allows
//! ([`Outgoing`]), and — with reconnecting on — survives losing the server.
//!
//! Losing the server (end of stream, a broken link, `shutdown`, a fatal error): without a way to
//! connect again ([`Start::redial`]: none with [`Reconnect::Never`](super::Reconnect)) the chat
//! ends (`Err`, exit 5, as scripts expect). Otherwise it says "reconnecting in N s", and tries
//! again after a backoff (1 s doubling to 30 s, ±20 % jitter so that every client of a restarted
//! server does not come back in the same instant): connect, check that the server presents the
//! fingerprint this session trusted (a changed one ends the chat, exit 6), and log in with this
//! session's name and password, under a new session key. Meanwhile direct messages flow (they never
//! touch the server), and lines for the server wait, in order: each is reported as the person's
//! own line marked queued, and once they have all gone, `queued_sent` says so (lines shown as
//! said but still waiting for the pace when the server was lost count among them). A direct
//! message is reported as the person's own only once it has left. A login refused for good (password
//! changed, account gone) ends the chat with its usual status; `already_online` (the server has not
//! yet noticed the old connection is gone), `endpoint_in_use` and `busy` are tried again. The waits
//! and one try are in [`reconnect`](super::reconnect).
//!
//! Leaving sends what is still queued (at the pace), then `quit`, and shows what the server
//! still sends until it closes (the answer to a `:l` just before `:q`, say), all bounded.
//! What the loop waits for, and the tasks that feed it, are [`inputs`](super::inputs)'.

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{self, Either};
use futures::stream::{Stream, StreamExt};

use super::command::{self, Command};
use super::config::DirectLimits;
use super::config::FileSettings;
use super::direct::{summary_event, Courier, IdentityCommand, Sent};
use super::direct_inbox::DirectInbox;
use super::error::{ClientError, Disconnect};
use super::event::ClientEvent;
use super::inbound::{self, on_server_message};
use super::inputs::{self, Feed, Input};
use super::link::{send, Link, LoggedIn};
use super::outgoing::{Outgoing, ServerPace};
use super::pairs::Pairs;
use super::peer_identities::PeerIdentities;
use super::peer_list::PeerList;
use super::reconnect::{worth_reconnecting, worth_trying_again, Backoff, Redial, Relinked};
use super::transfers::{came_online, FilesOff, Net, Transfers};
use crate::connection::{self, StreamWriter};
use crate::protocol::{decode_server, encode_line, ClientMessage, ServerMessage, MAX_LINE_BYTES};
use crate::runtime::{self, TcpListener, TcpStream, UdpSocket};

/// After `quit`, how long to wait for the server to close its side, so that everything sent
/// before `quit` is known to have been read (and its answers shown).
const QUIT_DRAIN: Duration = Duration::from_secs(2);

/// The connection the loop writes to; its reader is a task of its own.
struct Current {
    id: u64,
    tcp: TcpStream,
    writer: StreamWriter,
}

/// What the chat starts from: a logged-in link, and how to get it back.
pub(super) struct Start {
    pub(super) link: Link,
    pub(super) pace: ServerPace,
    pub(super) udp: Arc<UdpSocket>,
    pub(super) p2p_addr: SocketAddr,
    pub(super) username: String,
    pub(super) peers: PeerList,
    pub(super) direct_limits: DirectLimits,
    /// This session's keys; `None` with `--plaintext`.
    pub(super) pairs: Option<Pairs>,
    /// The peers' identities and their pins; `None` with `--plaintext`.
    pub(super) identities: Option<PeerIdentities>,
    /// How to connect and log in again; `None` to end the chat when the server is lost.
    pub(super) redial: Option<Redial>,
    /// How many lines may wait for the server (and its pace) at most.
    pub(super) max_queued: usize,
    /// Files: the settings, and the transfer port (`Err`: why files are off).
    pub(super) files: FileSettings,
    pub(super) listener: Result<Arc<TcpListener>, FilesOff>,
}

/// The chat's state between inputs.
struct Chat {
    current: Option<Current>,
    next_link: u64,
    /// The reconnect try in flight (its number), if any.
    attempt: u64,
    backoff: Backoff,
    redial: Option<Redial>,
    outgoing: Outgoing,
    peers: PeerList,
    inbox: DirectInbox,
    courier: Courier,
    username: String,
    p2p_addr: SocketAddr,
    inputs: Feed,
    quitting: bool,
    /// Offers and transfers of files, both ways.
    transfers: Transfers,
    /// Peers the last server line said came online, for the transfers.
    came_online: Vec<String>,
}

/// The loan the transfers' table acts with: disjoint fields of the chat.
macro_rules! net {
    ($chat:expr) => {
        Net {
            courier: &mut $chat.courier,
            peers: &$chat.peers,
            me: &$chat.username,
        }
    };
}

pub(super) async fn run(
    start: Start,
    commands: impl Stream<Item = Command> + Unpin,
    emit: &mut dyn FnMut(ClientEvent),
) -> Result<(), ClientError> {
    let Start {
        link,
        pace,
        udp,
        p2p_addr,
        username,
        peers,
        direct_limits,
        pairs,
        identities,
        redial,
        max_queued,
        files,
        listener,
    } = start;
    let (courier, timers) = Courier::new(udp.clone(), pairs, identities);
    let (transfers, from_transfers, said) = Transfers::start(files, &username, listener);
    for event in said {
        emit(event);
    }
    let (feed, mut inputs) = inputs::merge(udp, commands, timers, from_transfers);
    let mut chat = Chat {
        current: None,
        next_link: 0,
        attempt: 0,
        backoff: Backoff::new(),
        redial,
        outgoing: Outgoing::new(pace, max_queued, Instant::now()),
        peers,
        inbox: DirectInbox::new(direct_limits),
        courier,
        username,
        p2p_addr,
        inputs: feed,
        quitting: false,
        transfers,
        came_online: Vec::new(),
    };
    chat.attach(link);
    // The welcome's peers, checked as every later list is: until then no key is admitted.
    let welcome = ServerMessage::Welcome {
        username: chat.username.clone(),
        peers: chat.peers.to_vec(),
    };
    chat.courier
        .track_sessions(&mut chat.inbox, &welcome, &mut chat.peers, emit);
    // Transfers interrupted by a restart resume with whoever is online already.
    let online: Vec<String> = chat
        .peers
        .to_vec()
        .into_iter()
        .map(|p| p.username)
        .collect();
    chat.transfers.online(&online, net!(chat), emit).await;

    loop {
        chat.send_ready(emit).await?;
        if chat.quitting {
            if chat.current.is_none() {
                if !chat.outgoing.is_empty() {
                    emit(ClientEvent::Warning {
                        message: format!(
                            "{} line(s) were not sent: not connected to the server",
                            chat.outgoing.len()
                        ),
                    });
                }
                return Ok(());
            }
            if chat.outgoing.is_empty() {
                break;
            }
        }
        let pace = match chat.current {
            Some(_) => chat.outgoing.next_in(Instant::now()),
            None => None,
        };
        let paced = Box::pin(async move {
            match pace {
                Some(wait) => runtime::sleep(wait).await,
                None => future::pending::<()>().await,
            }
        });
        let input = match future::select(inputs.next(), paced).await {
            Either::Left((Some(input), _)) => input,
            Either::Left((None, _)) => break,
            Either::Right(_) => continue,
        };
        chat.handle(input, emit).await?;
    }
    if let Some(current) = chat.current.take() {
        quit(current, &mut inputs, &mut chat.peers, emit).await;
    }
    Ok(())
}

impl Chat {
    /// Makes `link` the current connection: its lines are read by a task of its own.
    fn attach(&mut self, link: Link) {
        let Link {
            tcp,
            writer,
            reader,
            ..
        } = link;
        self.next_link += 1;
        let id = self.next_link;
        inputs::spawn_reader(reader, id, self.inputs.clone());
        self.current = Some(Current { id, tcp, writer });
    }

    async fn handle(
        &mut self,
        input: Input,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), ClientError> {
        match input {
            Input::Server { link, line } => {
                if self.current.as_ref().map(|c| c.id) != Some(link) {
                    return Ok(()); // From a connection already given up.
                }
                match line {
                    Ok(Some(line)) => {
                        self.on_line(&line, emit)?;
                        self.peers_came_online(emit).await;
                    }
                    Ok(None) => self.lose(Disconnect::Closed, emit)?,
                    Err(e) => self.lose(Disconnect::Unreadable(e), emit)?,
                }
            }
            Input::Relinked { attempt, result } => {
                if attempt == self.attempt && self.current.is_none() {
                    self.relinked(*result, emit)?;
                    self.peers_came_online(emit).await;
                }
            }
            Input::Datagram(Ok((payload, source))) => {
                let now = Instant::now();
                if let Some(event) = self
                    .courier
                    .receive(&mut self.inbox, &payload, source, &self.peers, now)
                    .await
                {
                    emit(event);
                }
                self.file_news(emit).await;
                if let Some(summary) = self.inbox.summary(now) {
                    emit(summary_event(summary));
                }
            }
            Input::Datagram(Err(e)) => emit(ClientEvent::Warning {
                message: format!("receiving a direct message failed: {e}"),
            }),
            Input::Retransmit(fired) => {
                if let Some(event) = self.courier.timer_fired(fired, &self.peers).await {
                    emit(event);
                }
                self.file_news(emit).await;
            }
            Input::Transfer(input) => self.transfers.input(input, net!(self), emit).await,
            Input::Tick => {
                self.transfers.tick(net!(self), emit);
                if let Some(summary) = self.inbox.summary(Instant::now()) {
                    emit(summary_event(summary));
                }
                if self.current.is_some() && !self.outgoing.is_empty() {
                    emit(ClientEvent::Queued {
                        lines: self.outgoing.len(),
                    });
                }
            }
            Input::Command(_) | Input::EndOfCommands if self.quitting => {}
            Input::Command(command) => self.on_command(command, emit).await,
            Input::EndOfCommands => self.quitting = true,
        }
        Ok(())
    }

    /// Acts on one command (parsed where it was typed, once).
    async fn on_command(&mut self, command: Command, emit: &mut dyn FnMut(ClientEvent)) {
        let message = match command {
            Command::Quit => {
                self.quitting = true;
                return;
            }
            Command::Help => {
                emit(ClientEvent::Help {
                    text: command::help(),
                });
                return;
            }
            Command::Stats => {
                let stats = self.inbox.stats().with_sent(self.courier.sent_counts());
                emit(ClientEvent::DirectStats(stats));
                return;
            }
            // The terminal clears its screen itself; piped input has none.
            Command::Clear => return,
            Command::Transfer(command) => {
                self.transfers.command(command, net!(self), emit).await;
                return;
            }
            Command::Direct { to, text } => {
                let sent = self
                    .courier
                    .send(&self.peers, &self.username, to, text.clone())
                    .await;
                match sent {
                    // Shown as said only once it has left, and then as it left.
                    Ok(Sent {
                        to,
                        id,
                        destination,
                    }) => {
                        emit(ClientEvent::OwnDirect {
                            from: self.username.clone(),
                            to: to.clone(),
                            text,
                        });
                        emit(ClientEvent::DirectSent {
                            to,
                            id,
                            destination,
                        });
                    }
                    Err(not_sent) => emit(ClientEvent::error(not_sent.to_string())),
                }
                return;
            }
            Command::Verify { name, confirm } => {
                let command = match confirm {
                    false => IdentityCommand::Show(name),
                    true => IdentityCommand::Trust {
                        name,
                        verified: true,
                    },
                };
                emit(self.courier.identity_command(command, &mut self.peers));
                return;
            }
            Command::Trust { name } => {
                let command = IdentityCommand::Trust {
                    name,
                    verified: false,
                };
                emit(self.courier.identity_command(command, &mut self.peers));
                return;
            }
            Command::Peers => ClientMessage::List,
            // Every kind of room line alike: the server relays it as it is.
            Command::Room(line) => ClientMessage::Say(line),
        };
        let away = self.current.is_none();
        if encode_line(&message).len() > MAX_LINE_BYTES {
            emit(ClientEvent::error(format!(
                "message too long: the server takes lines of at most {MAX_LINE_BYTES} bytes"
            )));
            return;
        }
        let own = match &message {
            ClientMessage::Say(line) => Some(line.clone()),
            _ => None,
        };
        match self.outgoing.push(message, away) {
            Err(full) => emit(ClientEvent::error(full.to_string())),
            // Shown once taken, marked when it waits for the server (not merely the pace).
            Ok(()) => {
                if let Some(line) = own {
                    emit(ClientEvent::OwnLine {
                        from: self.username.clone(),
                        line,
                        queued: away,
                    });
                }
            }
        }
    }

    fn on_line(
        &mut self,
        line: &[u8],
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), ClientError> {
        // Names go into files and onto the screen: one that breaks the rules breaks the message.
        let message = match decode_server(line).and_then(|m| inbound::check_names(&m).map(|()| m)) {
            Ok(message) => message,
            Err(e) => return self.lose(Disconnect::BadMessage(e), emit),
        };
        if message == ServerMessage::Ping {
            self.outgoing.push_front(ClientMessage::Pong);
            return Ok(());
        }
        self.courier
            .track_sessions(&mut self.inbox, &message, &mut self.peers, emit);
        self.came_online = came_online(&message);
        match on_server_message(message, &mut self.peers, emit) {
            Ok(()) => Ok(()),
            Err(gone) => self.lose(gone, emit),
        }
    }

    /// Sends what the pace allows now; a connection that breaks meanwhile is lost, and the line
    /// goes back first in line. Once the last line that waited for the server has gone, says
    /// so.
    async fn send_ready(&mut self, emit: &mut dyn FnMut(ClientEvent)) -> Result<(), ClientError> {
        while let Some(current) = self.current.as_mut() {
            let Some(waiting) = self.outgoing.pop_ready(Instant::now()) else {
                break;
            };
            if let Err(e) = send(&mut current.writer, &waiting.message).await {
                self.outgoing.put_back(waiting);
                self.lose(e, emit)?;
            }
        }
        if self.current.is_some() {
            if let Some(lines) = self.outgoing.released() {
                emit(ClientEvent::QueuedSent { lines });
            }
        }
        Ok(())
    }

    /// The server is gone: the end (without reconnecting, or while leaving), or the first wait
    /// before connecting again.
    fn lose(
        &mut self,
        why: Disconnect,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), ClientError> {
        if let Some(current) = self.current.take() {
            let _ = current.tcp.shutdown(Shutdown::Both);
        }
        // Lines shown as said but not yet sent now wait for the server, and are reported
        // with those typed meanwhile once they have gone.
        self.outgoing.hold_all();
        if self.redial.is_none() || !worth_reconnecting(&why) {
            return Err(why.into());
        }
        if self.quitting {
            return Ok(()); // The loop sees no connection and ends.
        }
        self.backoff = Backoff::new();
        self.try_again(why.to_string(), emit);
        Ok(())
    }

    /// Schedules the next reconnect try after the backoff's wait.
    fn try_again(&mut self, why: String, emit: &mut dyn FnMut(ClientEvent)) {
        let Some(redial) = self.redial.clone() else {
            return;
        };
        let wait = self.backoff.take();
        self.attempt += 1;
        let attempt = self.attempt;
        emit(ClientEvent::Reconnecting {
            in_secs: wait.as_secs_f64().round().max(1.0) as u64,
            reason: why,
        });
        inputs::spawn_redial(redial, wait, attempt, self.inputs.clone());
    }

    fn relinked(
        &mut self,
        result: Result<Relinked, ClientError>,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), ClientError> {
        let relinked = match result {
            Ok(relinked) => relinked,
            Err(error) if worth_trying_again(&error) => {
                self.try_again(error.to_string(), emit);
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let Relinked {
            opened,
            logged_in:
                LoggedIn {
                    username,
                    peers,
                    pairs,
                },
        } = relinked;
        self.outgoing.repace(opened.pace, Instant::now());
        self.attach(opened.link);
        self.backoff = Backoff::new();
        self.username = username.clone();
        self.courier.replace_pairs(pairs);
        let welcome = ServerMessage::Welcome {
            username: username.clone(),
            peers: peers.clone(),
        };
        self.courier
            .track_sessions(&mut self.inbox, &welcome, &mut self.peers, emit);
        self.peers.replace(peers.clone());
        emit(ClientEvent::Connected {
            server: opened.addr,
            p2p_addr: self.p2p_addr,
        });
        self.came_online = peers.iter().map(|p| p.username.clone()).collect();
        emit(ClientEvent::Welcome { username, peers });
        Ok(())
    }

    /// Hands what became of file messages to the transfers' table.
    async fn file_news(&mut self, emit: &mut dyn FnMut(ClientEvent)) {
        for news in self.courier.take_file_news() {
            self.transfers.news(news, net!(self), emit).await;
        }
    }

    /// Tells the transfers' table who came online, if anyone did.
    async fn peers_came_online(&mut self, emit: &mut dyn FnMut(ClientEvent)) {
        if self.came_online.is_empty() {
            return;
        }
        let names = std::mem::take(&mut self.came_online);
        self.transfers.online(&names, net!(self), emit).await;
    }
}

/// Says `quit`, closes the sending side (with TLS, `close_notify` first), and shows what the
/// server still sends until it closes (all bounded by [`QUIT_DRAIN`]): the answers to the last
/// requests, and closing with unread data would reset the connection and could destroy the last
/// messages sent.
async fn quit(
    current: Current,
    inputs: &mut (impl Stream<Item = Input> + Unpin),
    peers: &mut PeerList,
    emit: &mut dyn FnMut(ClientEvent),
) {
    let Current {
        id,
        tcp,
        mut writer,
    } = current;
    let say_quit = async move {
        let _ = send(&mut writer, &ClientMessage::Quit).await;
        let _ = futures::io::AsyncWriteExt::close(&mut writer).await;
    };
    let until_closed = inputs::until_closed(inputs, id, |line| {
        if let Ok(message) = decode_server(line) {
            let _ = on_server_message(message, peers, emit);
        }
    });
    let close = connection::close_gracefully(&tcp, QUIT_DRAIN, say_quit, until_closed);
    let _ = runtime::timeout(QUIT_DRAIN, close).await;
}
