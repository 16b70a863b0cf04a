//! The library's API in one process: `server::run` on a listener bound to port 0 with a shutdown
//! future, and two `Client`s driven through command channels. Checks that the pieces the binaries
//! wire together work as a library too (over TLS, the client trusting the server's fingerprint),
//! and that `run` returns once shutdown is triggered.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use p2pchat::client::error::Disconnect;
use p2pchat::client::event::RoomMessage;
use p2pchat::client::{AuthMode, Client, ClientError, ClientEvent, Command, Transport, Trust};
use p2pchat::protocol::RoomLine;
use p2pchat::runtime::{self, TcpListener};
use p2pchat::server::{self, ServerConfig};
use p2pchat::tls::{self, Fingerprint, ServerIdentity};
use p2pchat::user_store::UserStore;

const DEADLINE: Duration = Duration::from_secs(30);

/// Waits for an event that satisfies `wanted`, skipping others.
async fn expect(
    events: &mut mpsc::UnboundedReceiver<ClientEvent>,
    what: &str,
    wanted: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    let found = runtime::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if wanted(&event) {
                return Some(event);
            }
        }
        None
    })
    .await;
    found.flatten().unwrap_or_else(|| panic!("no {what}"))
}

async fn logged_in(addr: &str, fingerprint: Fingerprint, name: &str) -> Client {
    let transport = Transport::Tls(Trust::Required(fingerprint));
    let mut client = Client::connect(addr, 0, transport).await.expect("connect");
    let mut welcomed = false;
    client
        .authenticate(AuthMode::Register, name, "long-enough-pw", &mut |e| {
            welcomed |= matches!(e, ClientEvent::Welcome { .. })
        })
        .await
        .expect("register");
    assert!(welcomed);
    client
}

#[test]
fn server_and_clients_run_as_a_library_and_stop_on_shutdown() {
    runtime::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let params = scrypt::Params::new(4, 8, 1).unwrap();
        let store = UserStore::open(&dir.path().join("users.json"), params).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (key, cert) = tls::default_paths(&dir.path().join("users.json"));
        let identity = ServerIdentity::load_or_create(&key, &cert).unwrap();
        let fingerprint = identity.fingerprint();
        let config = ServerConfig {
            tls: Some(identity.server_config().unwrap()),
            ..ServerConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = runtime::spawn(server::run(listener, Arc::new(store), config, async move {
            let _ = stopped.await;
        }));

        let alice = logged_in(&addr, fingerprint, "alice").await;
        let bob = logged_in(&addr, fingerprint, "bob").await;
        let bob_udp = bob.p2p_addr();
        let (mut to_alice, alice_commands) = mpsc::channel(8);
        let (to_bob, bob_commands) = mpsc::channel(8);
        let (alice_tx, mut alice_events) = mpsc::unbounded();
        let (bob_tx, mut bob_events) = mpsc::unbounded();

        let script = async move {
            expect(
                &mut alice_events,
                "bob joining",
                |e| matches!(e, ClientEvent::Joined { peer } if peer.username == "bob"),
            )
            .await;
            to_alice
                .send(Command::Room(RoomLine::say("hello bob")))
                .await
                .unwrap();
            let said = expect(&mut bob_events, "the room message", |e| {
                matches!(e, ClientEvent::Message { .. })
            })
            .await;
            assert_eq!(
                said,
                ClientEvent::Message(RoomMessage::new("alice", RoomLine::say("hello bob")))
            );
            to_alice
                .send(Command::Direct {
                    to: "bob".into(),
                    text: "just you".into(),
                })
                .await
                .unwrap();
            let direct = expect(&mut bob_events, "the direct message", |e| {
                matches!(e, ClientEvent::Direct { .. })
            })
            .await;
            assert!(
                matches!(&direct, ClientEvent::Direct { from, text, .. } if from == "alice" && text == "just you")
            );
            let sent = expect(&mut alice_events, "direct_sent", |e| {
                matches!(e, ClientEvent::DirectSent { .. })
            })
            .await;
            assert!(
                matches!(sent, ClientEvent::DirectSent { destination, .. } if destination == bob_udp)
            );
            // Alice leaves; Bob sees it. Then the server is stopped while Bob is online.
            to_alice.send(Command::Quit).await.unwrap();
            expect(
                &mut bob_events,
                "alice leaving",
                |e| matches!(e, ClientEvent::Left { username } if username == "alice"),
            )
            .await;
            stop.send(()).unwrap();
            expect(&mut bob_events, "shutdown", |e| {
                matches!(e, ClientEvent::Shutdown { .. })
            })
            .await;
            // Bob's commands stay open until now, so Bob left because of the shutdown alone.
            drop(to_bob);
        };
        let mut alice_emit = |e| {
            let _ = alice_tx.unbounded_send(e);
        };
        let mut bob_emit = |e| {
            let _ = bob_tx.unbounded_send(e);
        };
        let alice_run = alice.run(alice_commands, &mut alice_emit);
        let bob_run = bob.run(bob_commands, &mut bob_emit);
        let (alice_result, bob_result, ()) = futures::join!(alice_run, bob_run, script);
        assert!(alice_result.is_ok(), "{alice_result:?}");
        assert!(
            matches!(
                bob_result,
                Err(ClientError::Disconnected(Disconnect::Shutdown { ref reason }))
                    if reason.contains("shutting down")
            ),
            "{bob_result:?}"
        );
        runtime::timeout(DEADLINE, server)
            .await
            .expect("server::run returned after shutdown");
    });
}
