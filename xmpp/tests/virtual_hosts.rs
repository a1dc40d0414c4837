//! Several virtual hosts on one server: accounts are per host, a client
//! logs in to its own host (TLS server name and stream `to`), messages
//! cross between hosts of the same server, and a host the server does not
//! serve is refused.

#![allow(clippy::unwrap_used)] // a test: a failed set-up step should fail it

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use beamline_xmpp::client::{Client, ClientConfig, TrustMode};
use beamline_xmpp::config::{Config, ListenerConfig, ListenerKind};
use beamline_xmpp::server::{AccountError, Server, ServerOptions};
use beamline_xmpp::{BareJid, ns};

/// The next message (presence, e.g. the client's own reflected back to
/// it, is skipped).
async fn next_message(c: &mut Client) -> beamline_xmpp::Element {
    loop {
        let el = c.recv_timeout(Duration::from_secs(5)).await.unwrap();
        if el.name() == "message" {
            return el;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_messages_across_virtual_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.hosts = vec!["a.test".into(), "b.test".into()];
    config.storage.data_dir = dir.path().to_path_buf();
    config.listeners = vec![ListenerConfig::new(
        ListenerKind::C2s,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        0,
    )];
    let server = Server::start(config, ServerOptions::in_memory().node_name("vhosts"))
        .await
        .unwrap();
    server.register("alice", "a.test", "pw-a").await.unwrap();
    server.register("bob", "b.test", "pw-b").await.unwrap();
    // The same name on another host is another account.
    server.register("alice", "b.test", "other").await.unwrap();
    assert!(matches!(
        server.register("carol", "c.test", "x").await,
        Err(AccountError::UnknownHost(_))
    ));
    assert_eq!(server.users("a.test").await.unwrap(), ["alice"]);
    assert_eq!(server.users("b.test").await.unwrap(), ["alice", "bob"]);

    let addr = server.listener_addr(ListenerKind::C2s).unwrap();
    let cfg = |jid: &str, pw: &str| {
        ClientConfig::new(BareJid::new(jid).unwrap(), pw, addr)
            .with_trust(TrustMode::AcceptAnyForTests)
            .with_resource("r")
    };
    let login = |c: ClientConfig| async move {
        tokio::time::timeout(Duration::from_secs(20), Client::connect(c))
            .await
            .expect("login timed out")
    };
    let mut alice = login(cfg("alice@a.test", "pw-a")).await.unwrap();
    let mut bob = login(cfg("bob@b.test", "pw-b")).await.unwrap();
    assert_eq!(alice.jid().to_string(), "alice@a.test/r");
    // alice@a.test's password is not alice@b.test's.
    let err = login(cfg("alice@b.test", "pw-a")).await.unwrap_err();
    assert_eq!(err.sasl_condition(), Some("not-authorized"));
    // An unserved host: the stream is refused.
    let err = login(cfg("alice@c.test", "pw-a")).await.unwrap_err();
    assert_eq!(
        err.stream_error().map(|e| e.condition.name()),
        Some("host-unknown"),
        "{err:?}"
    );

    bob.send_presence().await.unwrap();
    alice.send_presence().await.unwrap();
    // Round trips make sure both presences were handled.
    for c in [&mut alice, &mut bob] {
        let _ = c
            .iq(beamline_xmpp::Element::builder("iq", ns::JABBER_CLIENT)
                .attr("type", "get")
                .attr("to", "a.test")
                .append(beamline_xmpp::Element::new("query", "urn:example:none"))
                .build())
            .await;
    }
    alice
        .send_message("bob@b.test", "from a to b")
        .await
        .unwrap();
    let m = next_message(&mut bob).await;
    assert_eq!(m.attr("from"), Some("alice@a.test/r"));
    assert_eq!(
        m.child_text("body", ns::JABBER_CLIENT).as_deref(),
        Some("from a to b")
    );
    bob.send_message("alice@a.test/r", "and back")
        .await
        .unwrap();
    let m = next_message(&mut alice).await;
    assert_eq!(m.attr("from"), Some("bob@b.test/r"));

    let mut users = server.connected_users();
    users.sort();
    assert_eq!(users, ["alice@a.test/r", "bob@b.test/r"]);
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    server.stop(Duration::from_secs(10)).await.unwrap();
}
