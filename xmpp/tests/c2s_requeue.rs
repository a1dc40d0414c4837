//! Stanzas already queued for a session when it is closed are not lost:
//! they are routed again once it has left the session table (ejabberd's
//! bounce_message_queue) — here, to the user's other resource.

#![allow(clippy::unwrap_used)] // a test: a failed set-up step should fail it

mod support;

use std::time::Duration;

use beamline_runtime::hooks::{Flow, Scope};
use beamline_xmpp::hooks::USER_RECEIVE_PACKET;
use beamline_xmpp::ns;
use support::{T, TestServer, message, sync, wait_sessions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stanzas_queued_for_a_closing_session_go_to_another_resource() {
    let s = TestServer::start().await;
    s.register("alice", "wonderland").await;
    s.register("bob", "builder").await;
    let mut alice = s.login("alice", "wonderland", Some("a")).await;
    let mut r1 = s.login("bob", "builder", Some("r1")).await;
    let mut r2 = s.login("bob", "builder", Some("r2")).await;
    wait_sessions(&s.server, 3).await;
    // r2 is available: messages for bob's bare JID may go there.
    r2.send_presence().await.unwrap();
    sync(&mut r2).await;
    // r1 is slow to take its first message, so what follows queues up.
    s.server
        .hooks()
        .subscribe_fn(
            &USER_RECEIVE_PACKET,
            Scope::Host("localhost"),
            10,
            None,
            |info, stanza: Option<beamline_xmpp::Element>| async move {
                let first = stanza
                    .as_ref()
                    .and_then(|s| s.child_text("body", ns::JABBER_CLIENT))
                    .is_some_and(|b| b == "first");
                if first && info.jid.resource().as_str() == "r1" {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Flow::Continue(stanza)
            },
        )
        .unwrap();
    alice
        .send(&message("bob@localhost/r1", "m0", "first"))
        .await
        .unwrap();
    sync(&mut alice).await;
    // While r1 is busy: the kick, then five more messages for r1.
    assert_eq!(s.server.kick("bob@localhost/r1", "bye").await.unwrap(), 1);
    for i in 1..=5 {
        alice
            .send(&message(
                "bob@localhost/r1",
                &format!("m{i}"),
                &format!("queued {i}"),
            ))
            .await
            .unwrap();
    }
    sync(&mut alice).await;
    // r1 got the first one, then the stream error.
    let first = r1.recv_timeout(T).await.unwrap();
    assert_eq!(
        first.child_text("body", ns::JABBER_CLIENT).as_deref(),
        Some("first")
    );
    let err = r1.recv_timeout(T).await.unwrap_err();
    assert_eq!(
        err.stream_error().map(|e| e.condition.name()),
        Some("policy-violation"),
        "{err:?}"
    );
    // The five queued ones reach bob's other resource, in order.
    for i in 1..=5 {
        let m = r2.recv_timeout(T).await.unwrap();
        assert_eq!(
            m.child_text("body", ns::JABBER_CLIENT),
            Some(format!("queued {i}")),
            "{m:?}"
        );
    }
    s.stop().await;
}
