//! mod_blocking end to end (XEP-0191): the block list protocol with its
//! pushes, and what a block does to stanzas both ways, to presence and to
//! offline messages.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use beamline_xmpp::client::{Client, ClientError};
use beamline_xmpp::config::Config;
use beamline_xmpp::{Element, ns};
use support::{DOMAIN, T, TestServer, error_condition, message, sync};

const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

fn modules(config: &mut Config, names: &[&str]) {
    config.modules.clear();
    for n in names {
        config.modules.insert((*n).to_owned(), toml::Table::new());
    }
}

async fn server() -> TestServer {
    let s = TestServer::start_with(|c| {
        modules(
            c,
            &["mod_roster", "mod_presence", "mod_offline", "mod_blocking"],
        )
    })
    .await;
    for u in ["alice", "bob", "carol"] {
        s.register(u, "pw").await;
    }
    s
}

/// The next stanza named `name` (others are skipped).
async fn next_named(c: &mut Client, name: &str) -> Element {
    loop {
        let el = c.recv_timeout(T).await.unwrap();
        if el.name() == name {
            return el;
        }
    }
}

/// Asserts that no stanza named `name` arrives within a short while.
async fn none_named(c: &mut Client, name: &str) {
    loop {
        match c.recv_timeout(Duration::from_millis(500)).await {
            Err(ClientError::Timeout(_)) => return,
            Ok(el) if el.name() != name => continue,
            Ok(el) => panic!(
                "expected no {name}, got {}",
                String::from_utf8_lossy(&el.to_bytes())
            ),
            Err(e) => panic!("{e}"),
        }
    }
}

fn iq(kind: &str, to: Option<&str>, child: Element) -> Element {
    let mut b = Element::builder("iq", ns::JABBER_CLIENT).attr("type", kind);
    if let Some(to) = to {
        b = b.attr("to", to);
    }
    b.append(child).build()
}

fn items(name: &str, jids: &[&str]) -> Element {
    Element::builder(name, ns::BLOCKING)
        .append_all(jids.iter().map(|j| {
            Element::builder("item", ns::BLOCKING)
                .attr("jid", *j)
                .build()
        }))
        .build()
}

fn item_jids(el: &Element) -> Vec<String> {
    el.children()
        .filter(|c| c.is("item", ns::BLOCKING))
        .filter_map(|c| c.attr("jid").map(str::to_owned))
        .collect()
}

async fn blocklist(c: &mut Client) -> Vec<String> {
    let r = c
        .iq(iq("get", None, Element::new("blocklist", ns::BLOCKING)))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    item_jids(r.get_child("blocklist", ns::BLOCKING).unwrap())
}

async fn set(c: &mut Client, name: &str, jids: &[&str]) {
    let r = c.iq(iq("set", None, items(name, jids))).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"), "{name} {jids:?}");
}

/// The next push of `name` (`block`/`unblock`) to `c`: its items.
async fn push(c: &mut Client, name: &str) -> Vec<String> {
    let p = next_named(c, "iq").await;
    assert_eq!(p.attr("type"), Some("set"));
    assert_eq!(p.attr("from"), Some("alice@localhost"));
    item_jids(
        p.get_child(name, ns::BLOCKING)
            .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&p.to_bytes()))),
    )
}

#[tokio::test]
async fn block_list_get_set_and_pushes() {
    let s = server().await;
    assert!(
        s.server
            .services()
            .disco
            .features(DOMAIN)
            .contains(&ns::BLOCKING.to_owned())
    );
    let mut a1 = s.login("alice", "pw", Some("a1")).await;
    let mut a2 = s.login("alice", "pw", Some("a2")).await;
    assert!(blocklist(&mut a1).await.is_empty());

    set(&mut a1, "block", &["Bob@LocalHost", "example.org"]).await;
    let want = vec!["bob@localhost".to_owned(), "example.org".to_owned()];
    assert_eq!(push(&mut a2, "block").await, want);
    assert_eq!(push(&mut a1, "block").await, want);
    assert_eq!(blocklist(&mut a2).await, want);

    // No items, or a bad JID: refused, nothing changes.
    let r = a1.iq(iq("set", None, items("block", &[]))).await.unwrap();
    assert_eq!(error_condition(&r), "bad-request");
    let r = a1
        .iq(iq("set", None, items("block", &["a@b@c"])))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "jid-malformed");
    // Someone else's list: forbidden.
    let r = a1
        .iq(iq(
            "get",
            Some("carol@localhost"),
            Element::new("blocklist", ns::BLOCKING),
        ))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "forbidden");

    set(&mut a1, "unblock", &["bob@localhost"]).await;
    assert_eq!(push(&mut a2, "unblock").await, ["bob@localhost"]);
    assert_eq!(blocklist(&mut a1).await, ["example.org"]);
    set(&mut a1, "block", &["carol@localhost"]).await;
    assert_eq!(push(&mut a2, "block").await, ["carol@localhost"]);
    // Unblock everything: a push without items.
    set(&mut a1, "unblock", &[]).await;
    assert!(push(&mut a2, "unblock").await.is_empty());
    assert!(blocklist(&mut a2).await.is_empty());

    // Kept across sessions.
    set(&mut a1, "block", &["bob@localhost"]).await;
    a1.close().await.unwrap();
    a2.close().await.unwrap();
    let mut a3 = s.login("alice", "pw", Some("a3")).await;
    assert_eq!(blocklist(&mut a3).await, ["bob@localhost"]);
    a3.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn blocked_stanzas_are_refused_both_ways() {
    let s = server().await;
    let mut alice = s.login("alice", "pw", Some("a")).await;
    let mut bob = s.login("bob", "pw", Some("b")).await;
    let mut carol = s.login("carol", "pw", Some("c")).await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.send_presence().await.unwrap();
        sync(c).await;
    }
    set(&mut alice, "block", &["bob@localhost"]).await;

    // Bob to alice: refused with service-unavailable, alice sees nothing.
    bob.send(&message("alice@localhost", "b1", "hi"))
        .await
        .unwrap();
    let e = next_named(&mut bob, "message").await;
    assert_eq!(e.attr("id"), Some("b1"));
    assert_eq!(error_condition(&e), "service-unavailable");
    bob.send(&message("alice@localhost/a", "b2", "hi"))
        .await
        .unwrap();
    let e = next_named(&mut bob, "message").await;
    assert_eq!(error_condition(&e), "service-unavailable");
    let ping = iq(
        "get",
        Some("alice@localhost/a"),
        Element::new("ping", "urn:xmpp:ping"),
    );
    let r = bob.iq(ping).await.unwrap();
    assert_eq!(error_condition(&r), "service-unavailable");
    // Directed presence: dropped, no error.
    bob.send(
        &Element::builder("presence", ns::JABBER_CLIENT)
            .attr("to", "alice@localhost")
            .build(),
    )
    .await
    .unwrap();
    carol
        .send(&message("alice@localhost", "c1", "from carol"))
        .await
        .unwrap();
    let m = next_named(&mut alice, "message").await;
    assert_eq!(m.attr("id"), Some("c1"), "alice got bob's message");

    // Alice to bob: not-acceptable with <blocked/>, bob sees nothing.
    alice
        .send(&message("bob@localhost/b", "a1", "hi"))
        .await
        .unwrap();
    let e = next_named(&mut alice, "message").await;
    assert_eq!(e.attr("id"), Some("a1"));
    assert_eq!(error_condition(&e), "not-acceptable");
    assert!(
        e.get_child("error", ns::JABBER_CLIENT)
            .unwrap()
            .has_child("blocked", BLOCKING_ERRORS)
    );
    carol
        .send(&message("bob@localhost", "c2", "from carol"))
        .await
        .unwrap();
    let m = next_named(&mut bob, "message").await;
    assert_eq!(m.attr("id"), Some("c2"), "bob got alice's message");

    // A full JID blocks that resource only.
    let mut carol2 = s.login("carol", "pw", Some("c2")).await;
    set(&mut alice, "block", &["carol@localhost/c2"]).await;
    carol2
        .send(&message("alice@localhost", "x", "blocked"))
        .await
        .unwrap();
    let e = next_named(&mut carol2, "message").await;
    assert_eq!(error_condition(&e), "service-unavailable");
    carol
        .send(&message("alice@localhost", "y", "passes"))
        .await
        .unwrap();
    let m = next_named(&mut alice, "message").await;
    assert_eq!(m.attr("id"), Some("y"));

    // Unblocked: messages flow again.
    set(&mut alice, "unblock", &[]).await;
    bob.send(&message("alice@localhost", "b3", "again"))
        .await
        .unwrap();
    let m = next_named(&mut alice, "message").await;
    assert_eq!(m.attr("id"), Some("b3"));
    for c in [alice, bob, carol, carol2] {
        c.close().await.unwrap();
    }
    s.stop().await;
}

#[tokio::test]
async fn a_blocked_sender_is_not_stored_offline() {
    let s = server().await;
    let mut alice = s.login("alice", "pw", Some("a")).await;
    set(&mut alice, "block", &["localhost/x", "bob@localhost"]).await;
    alice.close().await.unwrap();

    let mut bob = s.login("bob", "pw", Some("b")).await;
    bob.send(&message("alice@localhost", "b1", "hi"))
        .await
        .unwrap();
    let e = next_named(&mut bob, "message").await;
    assert_eq!(error_condition(&e), "service-unavailable");
    let mut carol = s.login("carol", "pw", Some("c")).await;
    carol
        .send(&message("alice@localhost", "c1", "kept"))
        .await
        .unwrap();
    sync(&mut carol).await;

    let mut alice = s.login("alice", "pw", Some("a")).await;
    alice.send_presence().await.unwrap();
    let m = next_named(&mut alice, "message").await;
    assert_eq!(m.attr("id"), Some("c1"));
    none_named(&mut alice, "message").await;
    for c in [alice, bob, carol] {
        c.close().await.unwrap();
    }
    s.stop().await;
}

/// Presence from alice's resource `a` seen by `c` (roster pushes and
/// other stanzas are skipped).
async fn presence_from_alice(c: &mut Client) -> Element {
    loop {
        let p = next_named(c, "presence").await;
        if p.attr("from") == Some("alice@localhost/a") {
            return p;
        }
    }
}

#[tokio::test]
async fn blocking_a_subscriber_sends_unavailable_and_stops_presence() {
    let s = server().await;
    let mut alice = s.login("alice", "pw", Some("a")).await;
    let mut bob = s.login("bob", "pw", Some("b")).await;
    alice.send_presence().await.unwrap();
    bob.send_presence().await.unwrap();
    sync(&mut alice).await;
    sync(&mut bob).await;
    // Bob subscribes to alice's presence, alice approves.
    bob.send(
        &Element::builder("presence", ns::JABBER_CLIENT)
            .attr("to", "alice@localhost")
            .attr("type", "subscribe")
            .build(),
    )
    .await
    .unwrap();
    loop {
        let p = next_named(&mut alice, "presence").await;
        if p.attr("type") == Some("subscribe") {
            break;
        }
    }
    alice
        .send(
            &Element::builder("presence", ns::JABBER_CLIENT)
                .attr("to", "bob@localhost")
                .attr("type", "subscribed")
                .build(),
        )
        .await
        .unwrap();
    let p = presence_from_alice(&mut bob).await;
    assert_eq!(p.attr("type"), None);

    set(&mut alice, "block", &["bob@localhost"]).await;
    let p = presence_from_alice(&mut bob).await;
    assert_eq!(p.attr("type"), Some("unavailable"));
    // A presence update no longer reaches bob.
    alice
        .send(
            &Element::builder("presence", ns::JABBER_CLIENT)
                .append(
                    Element::builder("status", ns::JABBER_CLIENT)
                        .text("busy")
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    sync(&mut alice).await;
    none_named(&mut bob, "presence").await;

    // Unblocked: bob gets alice's current presence again.
    set(&mut alice, "unblock", &["bob@localhost"]).await;
    let p = presence_from_alice(&mut bob).await;
    assert_eq!(p.attr("type"), None);
    assert_eq!(
        p.child_text("status", ns::JABBER_CLIENT).as_deref(),
        Some("busy")
    );
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}
