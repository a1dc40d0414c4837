//! mod_offline end to end (XEP-0160): messages to an offline user are kept
//! and come, with a delay stamp, in order and once, at the next available
//! presence of non-negative priority; the queue has a cap.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use beamline_xmpp::client::{Client, ClientError};
use beamline_xmpp::config::{Config, LimitRule};
use beamline_xmpp::{Element, ns};
use support::{DOMAIN, T, TestServer, error_condition, message, sync};

/// Runs only `names` of the modules.
fn modules(config: &mut Config, names: &[&str]) {
    config.modules.clear();
    for n in names {
        config.modules.insert((*n).to_owned(), toml::Table::new());
    }
}

async fn server() -> TestServer {
    TestServer::start_with(|c| modules(c, &["mod_offline"])).await
}

/// The next message the client gets (presence is skipped).
async fn next_message(c: &mut Client) -> Element {
    loop {
        let el = c.recv_timeout(T).await.unwrap();
        if el.name() == "message" {
            return el;
        }
    }
}

/// Asserts that no message arrives within a short while.
async fn no_message(c: &mut Client) {
    loop {
        match c.recv_timeout(Duration::from_millis(500)).await {
            Err(ClientError::Timeout(_)) => return,
            Ok(el) if el.name() != "message" => continue,
            other => panic!("expected nothing, got {other:?}"),
        }
    }
}

fn presence(priority: Option<i8>) -> Element {
    let mut b = Element::builder("presence", ns::JABBER_CLIENT);
    if let Some(p) = priority {
        b = b.append(
            Element::builder("priority", ns::JABBER_CLIENT)
                .text(&p.to_string())
                .build(),
        );
    }
    b.build()
}

fn body(m: &Element) -> String {
    m.child_text("body", ns::JABBER_CLIENT).unwrap_or_default()
}

#[tokio::test]
async fn offline_messages_arrive_at_login_with_delay_in_order_and_once() {
    let s = server().await;
    s.register("alice", "pw").await;
    s.register("bob", "pw").await;
    assert!(
        s.server
            .services()
            .disco
            .features(DOMAIN)
            .contains(&"msgoffline".to_owned())
    );
    let mut bob = s.login("bob", "pw", Some("r")).await;
    for i in 0..3 {
        bob.send(&message(
            "alice@localhost",
            &format!("m{i}"),
            &format!("hello {i}"),
        ))
        .await
        .unwrap();
    }
    // To a resource that is not online: kept as for the bare JID.
    bob.send(&message("alice@localhost/gone", "m3", "hello 3"))
        .await
        .unwrap();
    sync(&mut bob).await;
    // Stored, so no error came back.
    no_message(&mut bob).await;

    let mut alice = s.login("alice", "pw", Some("phone")).await;
    // Nothing before the first presence.
    no_message(&mut alice).await;
    alice.send_presence().await.unwrap();
    for i in 0..4 {
        let m = next_message(&mut alice).await;
        assert_eq!(body(&m), format!("hello {i}"));
        assert_eq!(m.attr("id"), Some(format!("m{i}").as_str()));
        assert_eq!(m.attr("from"), Some("bob@localhost/r"));
        assert_eq!(m.attr("to"), Some("alice@localhost/phone"));
        assert_eq!(m.attr("type"), Some("chat"));
        let delay = m.get_child("delay", ns::DELAY).expect("delay");
        assert_eq!(delay.attr("from"), Some(DOMAIN));
        let stamp = delay.attr("stamp").unwrap();
        assert!(stamp.ends_with('Z') && stamp.len() >= 20, "{stamp}");
        assert_eq!(&stamp[4..5], "-");
        assert_eq!(&stamp[10..11], "T");
    }
    no_message(&mut alice).await;
    alice.close().await.unwrap();

    // Delivered once: not again at the next login.
    let mut alice = s.login("alice", "pw", Some("laptop")).await;
    alice.send_presence().await.unwrap();
    // Anything delivered at this presence is in before the reply.
    sync(&mut alice).await;
    no_message(&mut alice).await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_full_queue_refuses_with_an_error_to_the_sender() {
    let s = TestServer::start_with(|c| {
        modules(c, &["mod_offline"]);
        c.limits.max_offline_messages = LimitRule::fixed(2);
    })
    .await;
    s.register("alice", "pw").await;
    s.register("bob", "pw").await;
    let mut bob = s.login("bob", "pw", Some("r")).await;
    for i in 0..3 {
        bob.send(&message(
            "alice@localhost",
            &format!("m{i}"),
            &format!("hello {i}"),
        ))
        .await
        .unwrap();
    }
    let err = next_message(&mut bob).await;
    assert_eq!(error_condition(&err), "resource-constraint");
    assert_eq!(err.attr("id"), Some("m2"));
    assert_eq!(err.attr("from"), Some("alice@localhost"));

    let mut alice = s.login("alice", "pw", None).await;
    alice.send_presence().await.unwrap();
    assert_eq!(body(&next_message(&mut alice).await), "hello 0");
    assert_eq!(body(&next_message(&mut alice).await), "hello 1");
    no_message(&mut alice).await;
    alice.close().await.unwrap();

    // Emptied by the delivery: room again.
    bob.send(&message("alice@localhost", "m4", "again"))
        .await
        .unwrap();
    sync(&mut bob).await;
    no_message(&mut bob).await;
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn headlines_and_bare_chat_states_are_not_stored() {
    let s = server().await;
    s.register("alice", "pw").await;
    s.register("bob", "pw").await;
    let mut bob = s.login("bob", "pw", Some("r")).await;
    let headline = Element::builder("message", ns::JABBER_CLIENT)
        .attr("to", "alice@localhost")
        .attr("type", "headline")
        .attr("id", "h")
        .append(
            Element::builder("body", ns::JABBER_CLIENT)
                .text("news")
                .build(),
        )
        .build();
    bob.send(&headline).await.unwrap();
    let composing = Element::builder("message", ns::JABBER_CLIENT)
        .attr("to", "alice@localhost")
        .attr("type", "chat")
        .attr("id", "cs")
        .append(Element::new("composing", ns::CHATSTATES))
        .build();
    bob.send(&composing).await.unwrap();
    // The chat state is not kept: the sender hears so, as from ejabberd.
    let err = next_message(&mut bob).await;
    assert_eq!(err.attr("id"), Some("cs"));
    assert_eq!(error_condition(&err), "service-unavailable");
    bob.send(&message("alice@localhost", "m", "kept"))
        .await
        .unwrap();
    sync(&mut bob).await;

    let mut alice = s.login("alice", "pw", None).await;
    alice.send_presence().await.unwrap();
    let m = next_message(&mut alice).await;
    assert_eq!(m.attr("id"), Some("m"));
    no_message(&mut alice).await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn negative_priority_gets_nothing_until_it_turns_non_negative() {
    let s = server().await;
    s.register("alice", "pw").await;
    s.register("bob", "pw").await;
    let mut alice = s.login("alice", "pw", Some("bot")).await;
    alice.send(&presence(Some(-1))).await.unwrap();
    sync(&mut alice).await;
    let mut bob = s.login("bob", "pw", Some("r")).await;
    // Alice has only a negative-priority resource: the message is stored.
    bob.send(&message("alice@localhost", "m", "later"))
        .await
        .unwrap();
    sync(&mut bob).await;
    no_message(&mut bob).await;
    no_message(&mut alice).await;
    alice.send(&presence(Some(1))).await.unwrap();
    let m = next_message(&mut alice).await;
    assert_eq!(body(&m), "later");
    assert_eq!(m.attr("to"), Some("alice@localhost/bot"));
    // A later presence update finds nothing more.
    alice.send(&presence(Some(2))).await.unwrap();
    // Anything delivered at this presence is in before the reply.
    sync(&mut alice).await;
    no_message(&mut alice).await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn removing_the_account_drops_its_offline_messages() {
    let s = server().await;
    s.register("alice", "pw").await;
    s.register("bob", "pw").await;
    let mut bob = s.login("bob", "pw", Some("r")).await;
    bob.send(&message("alice@localhost", "m", "lost"))
        .await
        .unwrap();
    sync(&mut bob).await;
    s.server.unregister("alice", DOMAIN).await.unwrap();
    s.register("alice", "pw").await;
    let mut alice = s.login("alice", "pw", None).await;
    alice.send_presence().await.unwrap();
    // Anything delivered at this presence is in before the reply.
    sync(&mut alice).await;
    no_message(&mut alice).await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn with_the_default_modules_offline_messages_still_arrive_once() {
    let s = TestServer::start_with(|c| {
        modules(c, &beamline_xmpp::modules::DEFAULT_MODULES);
    })
    .await;
    s.register("alice", "pw").await;
    s.register("bob", "pw").await;
    let mut bob = s.login("bob", "pw", Some("r")).await;
    bob.send_presence().await.unwrap();
    for i in 0..2 {
        bob.send(&message(
            "alice@localhost",
            &format!("m{i}"),
            &format!("hello {i}"),
        ))
        .await
        .unwrap();
    }
    sync(&mut bob).await;
    no_message(&mut bob).await;
    let mut alice = s.login("alice", "pw", Some("phone")).await;
    alice.send_presence().await.unwrap();
    for i in 0..2 {
        let m = next_message(&mut alice).await;
        assert_eq!(body(&m), format!("hello {i}"));
        assert!(m.has_child("delay", ns::DELAY));
    }
    // A second resource coming online gets nothing more.
    let mut tablet = s.login("alice", "pw", Some("tablet")).await;
    tablet.send_presence().await.unwrap();
    sync(&mut tablet).await;
    no_message(&mut tablet).await;
    no_message(&mut alice).await;
    for c in [alice, tablet, bob] {
        c.close().await.unwrap();
    }
    s.stop().await;
}
