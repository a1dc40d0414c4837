//! The client library against the real server (`server::Server`, in-memory
//! storage, listeners on 127.0.0.1 port 0): STARTTLS and direct TLS, every
//! SCRAM hash with and without channel binding, PLAIN, bind, messages
//! between two clients, wrong passwords, and protocol errors through the
//! raw connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use beamline_xmpp::client::{Client, ClientConfig, ClientError, RawConnection, TlsMode, TrustMode};
use beamline_xmpp::config::SaslMechanism;
use beamline_xmpp::config::{Config, ListenerConfig, ListenerKind};
use beamline_xmpp::sasl::Mechanism;
use beamline_xmpp::server::{Server, ServerOptions};
use beamline_xmpp::{BareJid, StreamErrorCondition, ns};

const T: Duration = Duration::from_secs(10);

struct Env {
    server: Server,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        // Every mechanism, -PLUS included (not in the default list).
        config.auth.mechanisms = SaslMechanism::ALL.to_vec();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        config.listeners = vec![
            ListenerConfig::new(ListenerKind::C2s, lo, 0),
            ListenerConfig::new(ListenerKind::C2sTls, lo, 0),
        ];
        // Actor names are process-wide: one node name per test.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let node = format!("e2e{}@localhost", NEXT.fetch_add(1, Ordering::Relaxed));
        let server = Server::start(config, ServerOptions::in_memory().node_name(node))
            .await
            .expect("server start");
        server
            .register("alice", "localhost", "wonderland")
            .await
            .expect("register alice");
        server
            .register("bob", "localhost", "builder")
            .await
            .expect("register bob");
        Env { server, dir }
    }

    fn addr(&self, kind: ListenerKind) -> SocketAddr {
        self.server.listener_addr(kind).expect("listener")
    }

    fn config(&self, user: &str, password: &str) -> ClientConfig {
        ClientConfig::new(
            BareJid::new(&format!("{user}@localhost")).expect("JID"),
            password,
            self.addr(ListenerKind::C2s),
        )
        .with_trust(TrustMode::AcceptAnyForTests)
    }

    async fn stop(self) {
        self.server
            .stop(Duration::from_secs(5))
            .await
            .expect("server stop");
        drop(self.dir);
    }
}

fn body(el: &beamline_xmpp::Element) -> Option<String> {
    el.child_text("body", ns::JABBER_CLIENT)
}

/// Reads until a message arrives (presence and the like are skipped).
async fn next_message(c: &mut Client) -> beamline_xmpp::Element {
    loop {
        let el = c.recv_timeout(T).await.expect("a stanza");
        if el.name() == "message" {
            return el;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_scram_plus_bind_and_messages_both_ways() {
    let env = Env::start().await;
    let mut alice = Client::connect(env.config("alice", "wonderland"))
        .await
        .unwrap();
    let mut bob = Client::connect(env.config("bob", "builder").with_resource("phone"))
        .await
        .unwrap();
    assert!(alice.connection().is_tls());
    assert_eq!(alice.mechanism(), Mechanism::ScramSha512Plus);
    assert_eq!(bob.jid().to_string(), "bob@localhost/phone");
    assert_eq!(alice.jid().node().map(|n| n.as_str()), Some("alice"));
    assert!(!alice.jid().resource().as_str().is_empty());

    alice.send_presence().await.unwrap();
    bob.send_presence().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    alice
        .send_message("bob@localhost/phone", "hello bob")
        .await
        .unwrap();
    let m = next_message(&mut bob).await;
    assert_eq!(body(&m).as_deref(), Some("hello bob"));
    assert_eq!(m.attr("from"), Some(alice.jid().to_string().as_str()));

    let alice_jid = alice.jid().to_string();
    bob.send_message(&alice_jid, "hello alice").await.unwrap();
    let m = next_message(&mut alice).await;
    assert_eq!(body(&m).as_deref(), Some("hello alice"));

    alice.close().await.unwrap();
    bob.close().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_are_not_authorized() {
    let env = Env::start().await;
    for (user, password) in [("alice", "wrong"), ("nobody", "wonderland")] {
        let e = Client::connect(env.config(user, password))
            .await
            .unwrap_err();
        assert_eq!(e.sasl_condition(), Some("not-authorized"), "{user}: {e}");
    }
    // The right password still works afterwards.
    let c = Client::connect(env.config("alice", "wonderland"))
        .await
        .unwrap();
    c.close().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mechanism_when_asked() {
    let env = Env::start().await;
    for m in [
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha512Plus,
        Mechanism::Plain,
    ] {
        let c = Client::connect(env.config("alice", "wonderland").with_mechanisms(vec![m]))
            .await
            .unwrap_or_else(|e| panic!("{m}: {e}"));
        assert_eq!(c.mechanism(), m);
        c.close().await.unwrap();
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_trusting_the_self_signed_certificate() {
    let env = Env::start().await;
    let cert = env.dir.path().join("tls").join("cert.pem");
    let roots = beamline_xmpp::tls::load_certificates(&cert).unwrap();
    let mut config = env
        .config("bob", "builder")
        .with_tls(TlsMode::DirectTls)
        .with_trust(TrustMode::Roots(roots));
    config.server = env.addr(ListenerKind::C2sTls);
    let c = Client::connect(config).await.unwrap();
    assert!(c.connection().is_tls());
    assert!(c.connection().channel_binding().is_supported());
    c.close().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_transport_with_and_without_starttls() {
    let env = Env::start().await;
    for tls in [TlsMode::StartTls, TlsMode::Plain] {
        let stream = env.server.connect_in_memory().await.unwrap();
        let c =
            Client::connect_with_stream(stream, env.config("alice", "wonderland").with_tls(tls))
                .await
                .unwrap_or_else(|e| panic!("{tls:?}: {e}"));
        assert_eq!(c.connection().is_tls(), tls == TlsMode::StartTls);
        c.close().await.unwrap();
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_wrong_host_is_host_unknown_and_closes() {
    let env = Env::start().await;
    let mut raw = RawConnection::connect(env.addr(ListenerKind::C2s), T)
        .await
        .unwrap();
    raw.open_stream("elsewhere.example").await.unwrap();
    let e = raw.expect_stream_error(T).await.unwrap();
    assert_eq!(e.condition, StreamErrorCondition::HostUnknown);
    raw.expect_closed(T).await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_malformed_xml_is_not_well_formed_and_closes() {
    let env = Env::start().await;
    let mut raw = RawConnection::connect(env.addr(ListenerKind::C2s), T)
        .await
        .unwrap();
    raw.open_stream("localhost").await.unwrap();
    let features = raw.read_features(T).await.unwrap();
    assert!(features.has_child("starttls", ns::TLS));
    raw.send_raw(b"<message><body>&bogus;</body></message>")
        .await
        .unwrap();
    let e = raw.expect_stream_error(T).await.unwrap();
    assert_eq!(e.condition, StreamErrorCondition::NotWellFormed);
    raw.expect_closed(T).await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_stanza_after_login_is_policy_violation() {
    let env = Env::start().await;
    let mut c = Client::connect(env.config("alice", "wonderland"))
        .await
        .unwrap();
    let mut big = b"<message to='bob@localhost'><body>".to_vec();
    big.extend(std::iter::repeat_n(b'x', 70_000));
    big.extend_from_slice(b"</body></message>");
    c.send_raw(&big).await.unwrap();
    let e = c.recv_timeout(T).await.unwrap_err();
    match &e {
        ClientError::StreamError(se) => {
            assert_eq!(se.condition, StreamErrorCondition::PolicyViolation)
        }
        other => panic!("{other:?}"),
    }
    c.raw().expect_closed(T).await.unwrap();
    env.stop().await;
}
