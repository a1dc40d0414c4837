//! End-to-end tests of client sessions over real TCP: login (STARTTLS,
//! SCRAM, binding, direct TLS), authentication failures, message and IQ
//! routing as a user sees it, session replacement, and the in-memory
//! transport. Each test runs its own server on port-0 listeners.

mod support;

use std::time::Duration;

use beamline_xmpp::client::{Client, ClientError, TlsMode};
use beamline_xmpp::config::StartTls;
use beamline_xmpp::sasl::Mechanism;
use beamline_xmpp::sasl::client::ClientCredentials;
use beamline_xmpp::{Element, ns};

use support::*;

fn body(stanza: &Element) -> Option<String> {
    stanza.child_text("body", ns::JABBER_CLIENT)
}

/// Asserts that nothing arrives for `client` within a short while (the
/// client's own round trip through its session first, so that nothing
/// the server already routed is missed).
async fn expect_nothing(client: &mut Client) {
    sync(client).await;
    match client.recv_timeout(Duration::from_millis(300)).await {
        Err(ClientError::Timeout(_)) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
}

// ---- 1. login --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_then_each_scram_variant_logs_in() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    for mech in [
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha512Plus,
    ] {
        let (mut conn, tcp, jid, used) =
            raw_login(s.c2s(), "alice", "wonderland", &[mech], Some("r1")).await;
        assert_eq!(used, mech);
        assert!(conn.is_tls());
        assert_eq!(jid.to_string(), "alice@localhost/r1");
        conn.send_close().await.unwrap();
        expect_close_then_eof(&mut conn, &tcp).await;
    }
    // The client's default picks a -PLUS variant: TLS gives binding data.
    let client = s.login("alice", "wonderland", None).await;
    assert!(client.connection().channel_binding().is_supported());
    client.close().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_chosen_and_server_generated_resources_and_legacy_session() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    let mut chosen = s.login("alice", "wonderland", Some("laptop")).await;
    assert_eq!(chosen.jid().to_string(), "alice@localhost/laptop");
    let mut generated = s.login("alice", "wonderland", None).await;
    let jid = generated.jid().clone();
    assert_eq!(jid.to_bare().to_string(), "alice@localhost");
    assert!(!jid.resource().as_str().is_empty());
    assert_ne!(jid.resource().as_str(), "laptop");
    // Both are bound at once.
    let mut users = s.server.connected_users();
    users.sort();
    let mut want = vec!["alice@localhost/laptop".to_owned(), jid.to_string()];
    want.sort();
    assert_eq!(users, want);
    // RFC 3921 session establishment still gets a result.
    for c in [&mut chosen, &mut generated] {
        let iq = Element::builder("iq", ns::JABBER_CLIENT)
            .attr("type", "set")
            .append(Element::new("session", ns::SESSION))
            .build();
        let reply = c.iq(iq).await.unwrap();
        assert_eq!(reply.attr("type"), Some("result"));
    }
    // A message between the two resources of one account.
    chosen
        .send_message(&jid.to_string(), "to myself")
        .await
        .unwrap();
    let got = generated.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("to myself"));
    assert_eq!(got.attr("from"), Some("alice@localhost/laptop"));
    chosen.close().await.unwrap();
    generated.close().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_login() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    // Channel binding works on direct TLS too.
    let mut cfg = s
        .config("alice", "wonderland")
        .with_tls(TlsMode::DirectTls)
        .with_mechanisms([Mechanism::ScramSha256Plus]);
    cfg.server = s.c2s_tls();
    let mut alice = Client::connect(cfg).await.unwrap();
    assert!(alice.connection().is_tls());
    let mut bob = s.login("bob", "builder", Some("home")).await;
    alice
        .send_message("bob@localhost/home", "over direct TLS")
        .await
        .unwrap();
    let got = bob.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("over direct TLS"));
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

// ---- 4. authentication failures ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_are_not_authorized() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    let err = Client::connect(s.config("alice", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.sasl_condition(), Some("not-authorized"), "{err:?}");
    let err = Client::connect(s.config("nobody", "x")).await.unwrap_err();
    assert_eq!(err.sasl_condition(), Some("not-authorized"), "{err:?}");
    // Every mechanism answers the same way.
    for mech in [
        Mechanism::ScramSha1,
        Mechanism::ScramSha256Plus,
        Mechanism::Plain,
    ] {
        let err = Client::connect(s.config("alice", "wrong").with_mechanisms([mech]))
            .await
            .unwrap_err();
        assert_eq!(err.sasl_condition(), Some("not-authorized"), "{mech}");
    }
    // The stream stays usable after a failure: the right password next.
    let (mut conn, tcp, _) = open_raw(s.c2s()).await;
    let features = starttls(&mut conn).await;
    let err = conn
        .authenticate(
            &features,
            ClientCredentials::new("alice", "wrong"),
            &[Mechanism::ScramSha256],
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(err.sasl_condition(), Some("not-authorized"));
    conn.authenticate(
        &features,
        ClientCredentials::new("alice", "wonderland"),
        &[Mechanism::ScramSha256],
        T,
    )
    .await
    .unwrap();
    conn.open_stream(DOMAIN).await.unwrap();
    conn.read_features(T).await.unwrap();
    conn.send_close().await.unwrap();
    expect_close_then_eof(&mut conn, &tcp).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_is_offered_only_after_tls() {
    let s = TestServer::start_with(|c| {
        c.listeners[0].starttls = Some(StartTls::Optional);
    })
    .await;
    s.register("alice", "wonderland").await;
    // STARTTLS optional: SCRAM without -PLUS and without PLAIN before TLS.
    let (mut conn, _tcp, features) = open_raw(s.c2s()).await;
    let starttls_el = features.get_child("starttls", ns::TLS).unwrap();
    assert!(!starttls_el.has_child("required", ns::TLS));
    let before = mechanisms(&features);
    assert!(before.iter().any(|m| m == "SCRAM-SHA-256"), "{before:?}");
    assert!(!before.iter().any(|m| m == "PLAIN"), "{before:?}");
    assert!(!before.iter().any(|m| m.ends_with("-PLUS")), "{before:?}");
    // PLAIN asked for anyway: invalid-mechanism.
    let auth = Element::builder("auth", ns::SASL)
        .attr("mechanism", "PLAIN")
        .text(&beamline_xmpp::sasl::encode_payload(b"\0alice\0wonderland"))
        .build();
    conn.send(&auth).await.unwrap();
    let failure = conn.next_element_timeout(T).await.unwrap();
    assert!(failure.is("failure", ns::SASL));
    assert!(failure.has_child("invalid-mechanism", ns::SASL));
    // After TLS: PLAIN and the -PLUS variants are offered, and PLAIN works.
    let after = starttls(&mut conn).await;
    let after = mechanisms(&after);
    assert!(after.iter().any(|m| m == "PLAIN"), "{after:?}");
    assert!(after.iter().any(|m| m.ends_with("-PLUS")), "{after:?}");
    let c = Client::connect(
        s.config("alice", "wonderland")
            .with_mechanisms([Mechanism::Plain]),
    )
    .await
    .unwrap();
    c.close().await.unwrap();
    // STARTTLS required (the other server's default): no mechanisms at
    // all before TLS.
    let s2 = TestServer::start().await;
    let (_conn, _tcp, features) = open_raw(s2.c2s()).await;
    assert!(
        features
            .get_child("starttls", ns::TLS)
            .unwrap()
            .has_child("required", ns::TLS)
    );
    assert!(mechanisms(&features).is_empty());
    s.stop().await;
    s2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_before_required_starttls_is_refused() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    let (mut conn, tcp, _) = open_raw(s.c2s()).await;
    let auth = Element::builder("auth", ns::SASL)
        .attr("mechanism", "SCRAM-SHA-1")
        .text(&beamline_xmpp::sasl::encode_payload(
            b"n,,n=alice,r=abcdefgh",
        ))
        .build();
    conn.send(&auth).await.unwrap();
    let failure = conn.next_element_timeout(T).await.unwrap();
    assert!(failure.is("failure", ns::SASL), "{failure:?}");
    assert!(failure.has_child("encryption-required", ns::SASL));
    expect_stream_error(&mut conn, &tcp, "policy-violation").await;
    // A client that does not do TLS cannot log in at all.
    let err = Client::connect(s.config("alice", "wonderland").with_tls(TlsMode::Plain))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::NoMechanism { .. }),
        "unexpected {err:?}"
    );
    s.stop().await;
}

// ---- 2. messages and IQs -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_full_and_bare_jid_follows_priorities() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    let mut alice = s.login("alice", "wonderland", Some("a")).await;
    let mut high1 = s.login("bob", "builder", Some("high1")).await;
    let mut high2 = s.login("bob", "builder", Some("high2")).await;
    let mut low = s.login("bob", "builder", Some("low")).await;
    let mut negative = s.login("bob", "builder", Some("negative")).await;
    let mut silent = s.login("bob", "builder", Some("silent")).await;
    let presence = |p: i8| {
        Element::builder("presence", ns::JABBER_CLIENT)
            .append(
                Element::builder("priority", ns::JABBER_CLIENT)
                    .text(&p.to_string())
                    .build(),
            )
            .build()
    };
    for (c, p) in [
        (&mut high1, 5),
        (&mut high2, 5),
        (&mut low, 1),
        (&mut negative, -1),
    ] {
        c.send(&presence(p)).await.unwrap();
        sync(c).await;
    }
    // `silent` sent no presence: it gets nothing for the bare JID either.

    // Full JID: exactly that resource, whatever its priority or presence.
    for (c, r) in [
        (&mut negative, "negative"),
        (&mut silent, "silent"),
        (&mut low, "low"),
    ] {
        alice
            .send_message(&format!("bob@localhost/{r}"), r)
            .await
            .unwrap();
        let got = c.recv_timeout(T).await.unwrap();
        assert_eq!(body(&got).as_deref(), Some(r));
        assert_eq!(got.attr("from"), Some("alice@localhost/a"));
        assert_eq!(got.attr("to"), Some(format!("bob@localhost/{r}").as_str()));
    }

    // Bare JID: both resources of the highest priority, no one else.
    alice.send_message("bob@localhost", "bare").await.unwrap();
    for c in [&mut high1, &mut high2] {
        let got = c.recv_timeout(T).await.unwrap();
        assert_eq!(body(&got).as_deref(), Some("bare"));
        assert_eq!(got.attr("to"), Some("bob@localhost"));
    }
    for c in [&mut low, &mut negative, &mut silent] {
        expect_nothing(c).await;
    }

    // The highest go unavailable: the next best (priority 1) gets it.
    for c in [&mut high1, &mut high2] {
        c.send(
            &Element::builder("presence", ns::JABBER_CLIENT)
                .attr("type", "unavailable")
                .build(),
        )
        .await
        .unwrap();
        sync(c).await;
    }
    alice.send_message("bob@localhost", "second").await.unwrap();
    let got = low.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("second"));
    for c in [&mut high1, &mut high2, &mut negative, &mut silent] {
        expect_nothing(c).await;
    }

    // Only a negative priority left: not delivered, and (no offline
    // storage yet) bounced to the sender.
    low.send(&presence(-5)).await.unwrap();
    sync(&mut low).await;
    alice.send_message("bob@localhost", "third").await.unwrap();
    let bounce = alice.recv_timeout(T).await.unwrap();
    assert_eq!(error_condition(&bounce), "service-unavailable");
    assert_eq!(bounce.attr("from"), Some("bob@localhost"));
    for c in [&mut low, &mut negative] {
        expect_nothing(c).await;
    }

    for c in [alice, high1, high2, low, negative, silent] {
        c.close().await.unwrap();
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_stanzas_bounce_with_the_right_errors() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("carol", "offline").await;
    let mut alice = s.login("alice", "wonderland", Some("a")).await;

    // An existing user with no session.
    alice
        .send(&message("carol@localhost", "m1", "anyone there?"))
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("m1"));
    assert_eq!(error_condition(&r), "service-unavailable");
    assert_eq!(r.attr("from"), Some("carol@localhost"));
    assert_eq!(r.attr("to"), Some("alice@localhost/a"));
    // Its full JID.
    alice
        .send(&message("carol@localhost/phone", "m2", "hello"))
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("m2"));
    assert_eq!(error_condition(&r), "service-unavailable");

    // A user who does not exist.
    alice
        .send(&message("nobody@localhost", "m3", "hello"))
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("m3"));
    assert_eq!(error_condition(&r), "service-unavailable");

    // An IQ to the server in a namespace nothing handles.
    let iq = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .attr("to", DOMAIN)
        .attr("id", "q1")
        .append(Element::new("query", "urn:example:unknown"))
        .build();
    let r = alice.iq(iq).await.unwrap();
    assert_eq!(error_condition(&r), "service-unavailable");
    assert_eq!(r.attr("from"), Some(DOMAIN));
    // To a user who does not exist, and to an offline user's full JID.
    for (to, id) in [("nobody@localhost", "q2"), ("carol@localhost/phone", "q3")] {
        let iq = Element::builder("iq", ns::JABBER_CLIENT)
            .attr("type", "get")
            .attr("to", to)
            .attr("id", id)
            .append(Element::new("query", "urn:example:unknown"))
            .build();
        let r = alice.iq(iq).await.unwrap();
        assert_eq!(error_condition(&r), "service-unavailable", "{to}");
    }

    // A message to a domain this server does not serve.
    alice
        .send(&message("someone@elsewhere.example", "m4", "hello"))
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("m4"));
    assert_eq!(error_condition(&r), "remote-server-not-found");
    assert_eq!(r.attr("from"), Some("someone@elsewhere.example"));

    // The session is still fine.
    sync(&mut alice).await;
    alice.close().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_iqs_get_bad_request() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    let mut alice = s.login("alice", "wonderland", Some("a")).await;
    // No id.
    alice
        .send_raw(b"<iq type='get' to='localhost'><query xmlns='urn:example:x'/></iq>")
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert!(r.is("iq", ns::JABBER_CLIENT));
    assert_eq!(error_condition(&r), "bad-request");
    // A type that does not exist.
    alice
        .send_raw(b"<iq type='fetch' id='bt1' to='localhost'><query xmlns='urn:example:x'/></iq>")
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("bt1"));
    assert_eq!(error_condition(&r), "bad-request");
    // No type at all.
    alice
        .send_raw(b"<iq id='bt2' to='localhost'><query xmlns='urn:example:x'/></iq>")
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("bt2"));
    assert_eq!(error_condition(&r), "bad-request");
    // A get with no payload.
    alice
        .send_raw(b"<iq type='get' id='bt3' to='localhost'/>")
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("bt3"));
    assert_eq!(error_condition(&r), "bad-request");
    sync(&mut alice).await;
    alice.close().await.unwrap();
    s.stop().await;
}

// ---- 3. session replacement ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_session_on_the_same_full_jid_replaces_the_first() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    let (mut first, tcp) = s.login_probed("alice", "wonderland", Some("desk")).await;
    let mut second = s.login("alice", "wonderland", Some("desk")).await;
    expect_client_stream_error(&mut first, &tcp, "conflict").await;
    assert_eq!(
        s.server.connected_users(),
        vec!["alice@localhost/desk".to_owned()]
    );
    // The new session is the one that gets the messages.
    let mut bob = s.login("bob", "builder", Some("b")).await;
    bob.send_message("alice@localhost/desk", "to the new one")
        .await
        .unwrap();
    let got = second.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("to the new one"));
    second.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

// ---- 8. in-memory transport ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_transport_logs_in_and_exchanges_messages() {
    let s = TestServer::start_with(|c| c.listeners.clear()).await;
    assert!(s.server.listeners().is_empty());
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    let connect = |user: &'static str, pw: &'static str| {
        let s = &s;
        async move {
            let stream = s.server.connect_in_memory().await.unwrap();
            let mut cfg = s.config(user, pw).with_resource("mem");
            // The memory listener offers STARTTLS; use it like TCP does.
            cfg.tls = TlsMode::StartTls;
            Client::connect_with_stream(stream, cfg).await.unwrap()
        }
    };
    let mut alice = connect("alice", "wonderland").await;
    let mut bob = connect("bob", "builder").await;
    assert_eq!(alice.jid().to_string(), "alice@localhost/mem");
    alice
        .send_message("bob@localhost/mem", "through memory")
        .await
        .unwrap();
    let got = bob.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("through memory"));
    assert_eq!(got.attr("from"), Some("alice@localhost/mem"));
    bob.send_message("alice@localhost/mem", "and back")
        .await
        .unwrap();
    let got = alice.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("and back"));
    // Without TLS too (STARTTLS is optional on the memory listener).
    let stream = s.server.connect_in_memory().await.unwrap();
    let cfg = s
        .config("bob", "builder")
        .with_resource("plain")
        .with_tls(TlsMode::Plain);
    let mut plain = Client::connect_with_stream(stream, cfg).await.unwrap();
    alice
        .send_message("bob@localhost/plain", "no TLS")
        .await
        .unwrap();
    let got = plain.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("no TLS"));
    for c in [alice, bob, plain] {
        c.close().await.unwrap();
    }
    s.stop().await;
}

// ---- more of what a user notices ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_to_an_unbound_resource_goes_to_the_bare_jid_and_headlines_are_dropped() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    let mut alice = s.login("alice", "wonderland", Some("a")).await;
    let mut bob = s.login("bob", "builder", Some("home")).await;
    bob.send_presence().await.unwrap();
    sync(&mut bob).await;
    // RFC 6121 §8.5.3.2.1: chat or normal to a resource that is not bound
    // is handled as if sent to the bare JID.
    alice
        .send_message("bob@localhost/gone", "to the account")
        .await
        .unwrap();
    let got = bob.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("to the account"));
    // A headline to it is dropped without an error.
    let mut headline = message("bob@localhost/gone", "h1", "news");
    headline.set_attr("type", "headline");
    alice.send(&headline).await.unwrap();
    expect_nothing(&mut alice).await;
    expect_nothing(&mut bob).await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_never_answered_and_bad_addresses_are_jid_malformed() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    let mut alice = s.login("alice", "wonderland", Some("a")).await;
    // A message of type error to nobody: no bounce (no error loops).
    let mut m = message("nobody@localhost", "e1", "err");
    m.set_attr("type", "error");
    alice.send(&m).await.unwrap();
    let mut m = message("someone@elsewhere.example", "e2", "err");
    m.set_attr("type", "error");
    alice.send(&m).await.unwrap();
    // An IQ result to nobody: nothing either.
    alice
        .send_raw(b"<iq type='result' id='r1' to='nobody@localhost'/>")
        .await
        .unwrap();
    expect_nothing(&mut alice).await;
    // An address that is not a JID.
    alice
        .send(&message("a@b@c", "j1", "bad address"))
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("j1"));
    assert_eq!(error_condition(&r), "jid-malformed");
    alice.close().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_keepalives_are_ignored() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    // Before authentication.
    let (mut conn, _tcp, _) = open_raw(s.c2s()).await;
    conn.send_raw(b" \n \r\n\t ").await.unwrap();
    let features = starttls(&mut conn).await;
    conn.send_raw(b"\n\n").await.unwrap();
    conn.authenticate(
        &features,
        ClientCredentials::new("alice", "wonderland"),
        &[Mechanism::ScramSha256],
        T,
    )
    .await
    .unwrap();
    // After: between and around stanzas.
    let mut alice = s.login("alice", "wonderland", Some("a")).await;
    let mut bob = s.login("bob", "builder", Some("b")).await;
    for _ in 0..3 {
        alice.send_raw(b" ").await.unwrap();
    }
    alice
        .send_raw(
            b"\n<message to='bob@localhost/b' type='chat'><body>after spaces</body></message>\n ",
        )
        .await
        .unwrap();
    let got = bob.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("after spaces"));
    sync(&mut alice).await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_ends_its_session() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    let mut alice = s.login("alice", "wonderland", Some("a")).await;
    let bob = s.login("bob", "builder", Some("b")).await;
    wait_sessions(&s.server, 2).await;
    // Gone without closing the stream.
    drop(bob);
    wait_sessions(&s.server, 1).await;
    assert_eq!(
        s.server.connected_users(),
        vec!["alice@localhost/a".to_owned()]
    );
    alice
        .send(&message("bob@localhost/b", "d1", "still there?"))
        .await
        .unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(error_condition(&r), "service-unavailable");
    // The same resource can log in again.
    let mut bob = s.login("bob", "builder", Some("b")).await;
    alice
        .send_message("bob@localhost/b", "welcome back")
        .await
        .unwrap();
    let got = bob.recv_timeout(T).await.unwrap();
    assert_eq!(body(&got).as_deref(), Some("welcome back"));
    // A connection dropped during negotiation leaves nothing behind.
    let (conn, tcp, _) = open_raw(s.c2s()).await;
    drop(conn);
    drop(tcp);
    wait_sessions(&s.server, 2).await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    wait_sessions(&s.server, 0).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sessions_of_one_user_replace_the_oldest() {
    let s = TestServer::start_with(|c| {
        c.limits.max_sessions_per_user = beamline_xmpp::config::LimitRule::fixed(2);
    })
    .await;
    s.register("alice", "wonderland").await;
    let (mut first, tcp) = s.login_probed("alice", "wonderland", Some("1")).await;
    let mut second = s.login("alice", "wonderland", Some("2")).await;
    sync(&mut second).await;
    let mut third = s.login("alice", "wonderland", Some("3")).await;
    expect_client_stream_error(&mut first, &tcp, "conflict").await;
    wait_sessions(&s.server, 2).await;
    sync(&mut second).await;
    sync(&mut third).await;
    second.close().await.unwrap();
    third.close().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_gets_a_complete_header_with_a_fresh_id() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    let mut ids = Vec::new();
    let (mut conn, tcp, _) = open_raw(s.c2s()).await;
    let check = |conn: &beamline_xmpp::client::RawConnection, ids: &mut Vec<String>| {
        let h = conn.server_header().unwrap();
        assert_eq!(h.from.as_deref(), Some(DOMAIN));
        assert_eq!(h.version.as_deref(), Some("1.0"));
        assert_eq!(h.content_ns, ns::JABBER_CLIENT);
        assert!(h.lang.is_some());
        ids.push(h.id.clone().unwrap());
    };
    check(&conn, &mut ids);
    let features = starttls(&mut conn).await;
    check(&conn, &mut ids);
    conn.authenticate(
        &features,
        ClientCredentials::new("alice", "wonderland"),
        &[Mechanism::ScramSha1],
        T,
    )
    .await
    .unwrap();
    conn.open_stream(DOMAIN).await.unwrap();
    let features = conn.read_features(T).await.unwrap();
    check(&conn, &mut ids);
    // After authentication: binding, and no SASL or STARTTLS any more.
    assert!(features.has_child("bind", ns::BIND));
    assert!(!features.has_child("mechanisms", ns::SASL));
    assert!(!features.has_child("starttls", ns::TLS));
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ids:?}");
    conn.send_close().await.unwrap();
    expect_close_then_eof(&mut conn, &tcp).await;
    s.stop().await;
}

/// RFC 6121 §8.5.2.1.1, messages to a bare JID with available resources,
/// by type: headline to every non-negative one, groupchat refused with
/// `service-unavailable`, error silently dropped, a type nobody knows
/// handled as normal (§5.2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_types_to_a_bare_jid_follow_rfc_6121() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    let mut alice = s.login("alice", "wonderland", Some("a")).await;
    let mut high = s.login("bob", "builder", Some("high")).await;
    let mut low = s.login("bob", "builder", Some("low")).await;
    let mut negative = s.login("bob", "builder", Some("negative")).await;
    for (c, p) in [(&mut high, "3"), (&mut low, "0"), (&mut negative, "-1")] {
        let presence = Element::builder("presence", ns::JABBER_CLIENT)
            .append(
                Element::builder("priority", ns::JABBER_CLIENT)
                    .text(p)
                    .build(),
            )
            .build();
        c.send(&presence).await.unwrap();
        sync(c).await;
    }
    let typed = |ty: &str, id: &str| {
        let mut m = message("bob@localhost", id, ty);
        m.set_attr("type", ty);
        m
    };
    // headline: every resource of non-negative priority.
    alice.send(&typed("headline", "t1")).await.unwrap();
    for c in [&mut high, &mut low] {
        let got = c.recv_timeout(T).await.unwrap();
        assert_eq!(body(&got).as_deref(), Some("headline"));
    }
    expect_nothing(&mut negative).await;
    // groupchat: not delivered, refused.
    alice.send(&typed("groupchat", "t2")).await.unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("t2"));
    assert_eq!(error_condition(&r), "service-unavailable");
    // error: silently dropped.
    alice.send(&typed("error", "t3")).await.unwrap();
    // Unknown type: as normal, the highest priority only.
    alice.send(&typed("shout", "t4")).await.unwrap();
    let got = high.recv_timeout(T).await.unwrap();
    assert_eq!(got.attr("id"), Some("t4"));
    for c in [&mut alice, &mut high, &mut low, &mut negative] {
        expect_nothing(c).await;
    }
    // With no resource available: headline dropped, unknown type bounced
    // as normal is (no offline storage).
    for c in [&mut high, &mut low, &mut negative] {
        c.send(
            &Element::builder("presence", ns::JABBER_CLIENT)
                .attr("type", "unavailable")
                .build(),
        )
        .await
        .unwrap();
        sync(c).await;
    }
    alice.send(&typed("headline", "t5")).await.unwrap();
    alice.send(&typed("shout", "t6")).await.unwrap();
    let r = alice.recv_timeout(T).await.unwrap();
    assert_eq!(r.attr("id"), Some("t6"));
    assert_eq!(error_condition(&r), "service-unavailable");
    for c in [&mut alice, &mut high, &mut low, &mut negative] {
        expect_nothing(c).await;
    }
    for c in [alice, high, low, negative] {
        c.close().await.unwrap();
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authzid_of_another_user_is_refused() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    for mech in [Mechanism::Plain, Mechanism::ScramSha256] {
        // Alice's password, asking to be bob.
        let (mut conn, _tcp, _) = open_raw(s.c2s()).await;
        let features = starttls(&mut conn).await;
        let creds = ClientCredentials::new("alice", "wonderland").with_authzid("bob@localhost");
        let err = conn
            .authenticate(&features, creds, &[mech], T)
            .await
            .unwrap_err();
        assert_eq!(err.sasl_condition(), Some("invalid-authzid"), "{mech}");
        // Her own bare JID as authzid is fine.
        let creds = ClientCredentials::new("alice", "wonderland").with_authzid("alice@localhost");
        conn.authenticate(&features, creds, &[mech], T)
            .await
            .unwrap();
        conn.open_stream(DOMAIN).await.unwrap();
        conn.read_features(T).await.unwrap();
        let jid = conn.bind(Some("r"), T).await.unwrap();
        assert_eq!(jid.to_string(), "alice@localhost/r");
    }
    s.stop().await;
}

/// Plaintext pipelined after `<starttls/>` must not be taken into the
/// encrypted stream (the STARTTLS command injection of CVE-2011-0411).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_after_starttls_is_discarded() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    let (mut conn, tcp, _) = open_raw(s.c2s()).await;
    conn.send_raw(
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
          <iq type='get' id='injected' to='localhost'><query xmlns='urn:example:x'/></iq>",
    )
    .await
    .unwrap();
    let proceed = conn.next_element_timeout(T).await.unwrap();
    assert!(proceed.is("proceed", ns::TLS));
    let tls = beamline_xmpp::client::tls_client_config(
        &beamline_xmpp::client::TrustMode::AcceptAnyForTests,
        TlsMode::StartTls,
    )
    .unwrap();
    conn.tls_handshake(DOMAIN, tls, T).await.unwrap();
    conn.open_stream(DOMAIN).await.unwrap();
    let features = conn.read_features(T).await.unwrap();
    conn.authenticate(
        &features,
        ClientCredentials::new("alice", "wonderland"),
        &[Mechanism::ScramSha1],
        T,
    )
    .await
    .unwrap();
    conn.open_stream(DOMAIN).await.unwrap();
    conn.read_features(T).await.unwrap();
    conn.bind(Some("r"), T).await.unwrap();
    // A round trip: the answer to ours, nothing about the injected one.
    conn.send_raw(b"<iq type='get' id='mine' to='localhost'><query xmlns='urn:example:x'/></iq>")
        .await
        .unwrap();
    let reply = conn.next_element_timeout(T).await.unwrap();
    assert_eq!(reply.attr("id"), Some("mine"));
    conn.send_close().await.unwrap();
    expect_close_then_eof(&mut conn, &tcp).await;
    s.stop().await;
}

/// RFC 6120 §6.4.2: `<auth/>` without an initial response gets an empty
/// challenge (`=`), and the client-first message comes as a response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_without_an_initial_response() {
    use beamline_xmpp::sasl::client::{ClientSession, Gs2Flag};
    use beamline_xmpp::sasl::{decode_payload, encode_payload};
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    let (mut conn, tcp, _) = open_raw(s.c2s()).await;
    starttls(&mut conn).await;
    let mut sasl = ClientSession::new(
        Mechanism::ScramSha256,
        ClientCredentials::new("alice", "wonderland"),
        Gs2Flag::NotSupported,
    )
    .unwrap();
    conn.send_raw(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'/>")
        .await
        .unwrap();
    let empty = conn.next_element_timeout(T).await.unwrap();
    assert!(empty.is("challenge", ns::SASL), "{empty:?}");
    assert_eq!(empty.text().trim(), "=");
    let response = |data: &[u8]| {
        Element::builder("response", ns::SASL)
            .text(&encode_payload(data))
            .build()
    };
    let first = sasl.initial_response().unwrap();
    conn.send(&response(&first)).await.unwrap();
    let challenge = conn.next_element_timeout(T).await.unwrap();
    assert!(challenge.is("challenge", ns::SASL), "{challenge:?}");
    let last = sasl
        .challenge(&decode_payload(challenge.text().trim()).unwrap())
        .unwrap();
    conn.send(&response(&last)).await.unwrap();
    let success = conn.next_element_timeout(T).await.unwrap();
    assert!(success.is("success", ns::SASL), "{success:?}");
    sasl.success(Some(&decode_payload(success.text().trim()).unwrap()))
        .unwrap();
    // Authenticated. (`RawConnection` has no public way to restart its
    // decoder outside `authenticate`, so the test stops here.)
    drop((conn, tcp));
    s.stop().await;
}
