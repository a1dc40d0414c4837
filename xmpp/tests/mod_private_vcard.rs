//! mod_private (XEP-0049) and mod_vcard (XEP-0054) end to end: what a
//! user stores comes back, only the owner may write, the server's own
//! vCard, the size cap, and account removal.
#![allow(clippy::unwrap_used)]

mod support;

use beamline_xmpp::client::Client;
use beamline_xmpp::config::Config;
use beamline_xmpp::{Element, ns};
use support::{DOMAIN, TestServer, error_condition};

fn modules(config: &mut Config) {
    config.modules.clear();
    config
        .modules
        .insert("mod_private".to_owned(), toml::Table::new());
    let mut vcard = toml::Table::new();
    vcard.insert("max_size".to_owned(), toml::Value::Integer(2048));
    config.modules.insert("mod_vcard".to_owned(), vcard);
}

async fn server() -> TestServer {
    let s = TestServer::start_with(modules).await;
    s.register("alice", "pw").await;
    s.register("bob", "pw").await;
    s
}

fn iq(kind: &str, to: Option<&str>, child: Element) -> Element {
    let mut b = Element::builder("iq", ns::JABBER_CLIENT).attr("type", kind);
    if let Some(to) = to {
        b = b.attr("to", to);
    }
    b.append(child).build()
}

fn query(children: Vec<Element>) -> Element {
    Element::builder("query", ns::PRIVATE)
        .append_all(children)
        .build()
}

fn bookmarks(room: &str) -> Element {
    Element::builder("storage", "storage:bookmarks")
        .append(
            Element::builder("conference", "storage:bookmarks")
                .attr("jid", room)
                .attr("autojoin", "true")
                .build(),
        )
        .build()
}

async fn private_get(c: &mut Client, child: Element) -> Element {
    let r = c.iq(iq("get", None, query(vec![child]))).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    r.get_child("query", ns::PRIVATE)
        .unwrap()
        .children()
        .next()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn private_storage_round_trip_and_rules() {
    let s = server().await;
    let features = s.server.services().disco.features(DOMAIN);
    assert!(features.contains(&ns::PRIVATE.to_owned()));
    let mut alice = s.login("alice", "pw", Some("a")).await;

    // Nothing stored yet: the empty element comes back.
    let empty = private_get(&mut alice, Element::new("storage", "storage:bookmarks")).await;
    assert_eq!(empty, Element::new("storage", "storage:bookmarks"));

    let r = alice
        .iq(iq("set", None, query(vec![bookmarks("room@muc.example")])))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    // Another namespace is kept apart.
    let prefs = Element::builder("exodus", "exodus:prefs")
        .append(
            Element::builder("defaultnick", "exodus:prefs")
                .text("Hamlet")
                .build(),
        )
        .build();
    let r = alice
        .iq(iq(
            "set",
            Some("alice@localhost"),
            query(vec![prefs.clone()]),
        ))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));

    let mut again = s.login("alice", "pw", Some("b")).await;
    let got = private_get(&mut again, Element::new("storage", "storage:bookmarks")).await;
    assert_eq!(got, bookmarks("room@muc.example"));
    let got = private_get(&mut again, Element::new("exodus", "exodus:prefs")).await;
    assert_eq!(got, prefs);
    // Replaced by the next set of the namespace.
    let r = again
        .iq(iq("set", None, query(vec![bookmarks("other@muc.example")])))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    let got = private_get(&mut alice, Element::new("storage", "storage:bookmarks")).await;
    assert_eq!(got, bookmarks("other@muc.example"));

    // A reserved namespace, an empty query: not-acceptable.
    let r = alice
        .iq(iq(
            "set",
            None,
            query(vec![Element::new("query", "jabber:iq:roster")]),
        ))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "not-acceptable");
    let r = alice.iq(iq("get", None, query(vec![]))).await.unwrap();
    assert_eq!(error_condition(&r), "not-acceptable");

    // Someone else's storage, or the server's: forbidden.
    let mut bob = s.login("bob", "pw", Some("b")).await;
    for to in ["alice@localhost", DOMAIN] {
        let r = bob
            .iq(iq(
                "get",
                Some(to),
                query(vec![Element::new("storage", "storage:bookmarks")]),
            ))
            .await
            .unwrap();
        assert_eq!(error_condition(&r), "forbidden", "to {to}");
    }
    let r = bob
        .iq(iq(
            "set",
            Some("alice@localhost"),
            query(vec![bookmarks("evil@muc.example")]),
        ))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "forbidden");
    // Bob's own storage is separate.
    let got = private_get(&mut bob, Element::new("storage", "storage:bookmarks")).await;
    assert_eq!(got, Element::new("storage", "storage:bookmarks"));
    for c in [alice, again, bob] {
        c.close().await.unwrap();
    }
    s.stop().await;
}

fn vcard(name: &str) -> Element {
    Element::builder("vCard", ns::VCARD)
        .append(Element::builder("FN", ns::VCARD).text(name).build())
        .append(
            Element::builder("NICKNAME", ns::VCARD)
                .text("<&'\">")
                .build(),
        )
        .build()
}

async fn vcard_get(c: &mut Client, to: Option<&str>) -> Element {
    let r = c
        .iq(iq("get", to, Element::new("vCard", ns::VCARD)))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    r.get_child("vCard", ns::VCARD).unwrap().clone()
}

#[tokio::test]
async fn vcards_are_public_to_read_and_private_to_write() {
    let s = server().await;
    assert!(
        s.server
            .services()
            .disco
            .features(DOMAIN)
            .contains(&ns::VCARD.to_owned())
    );
    let mut alice = s.login("alice", "pw", Some("a")).await;
    let mut bob = s.login("bob", "pw", Some("b")).await;

    // None stored: an empty vCard.
    assert_eq!(
        vcard_get(&mut bob, Some("alice@localhost")).await,
        Element::new("vCard", ns::VCARD)
    );
    let r = alice
        .iq(iq("set", None, vcard("Alice Liddell")))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        vcard_get(&mut bob, Some("alice@localhost")).await,
        vcard("Alice Liddell")
    );
    assert_eq!(vcard_get(&mut alice, None).await, vcard("Alice Liddell"));

    // Only the owner writes.
    let r = bob
        .iq(iq("set", Some("alice@localhost"), vcard("Mallory")))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "forbidden");
    assert_eq!(
        vcard_get(&mut bob, Some("alice@localhost")).await,
        vcard("Alice Liddell")
    );
    // The server's vCard cannot be set.
    let r = alice
        .iq(iq("set", Some(DOMAIN), vcard("Server")))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "not-allowed");
    let server = vcard_get(&mut alice, Some(DOMAIN)).await;
    assert!(server.child_text("FN", ns::VCARD).is_some());

    // Over max_size (2048 here): refused, the old one stays.
    let big = Element::builder("vCard", ns::VCARD)
        .append(
            Element::builder("DESC", ns::VCARD)
                .text(&"x".repeat(4000))
                .build(),
        )
        .build();
    let r = alice.iq(iq("set", None, big)).await.unwrap();
    assert_eq!(error_condition(&r), "not-acceptable");
    assert_eq!(vcard_get(&mut alice, None).await, vcard("Alice Liddell"));

    // An account that does not exist: service-unavailable.
    let r = bob
        .iq(iq(
            "get",
            Some("nobody@localhost"),
            Element::new("vCard", ns::VCARD),
        ))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "service-unavailable");
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn removing_the_account_removes_vcard_and_private_data() {
    let s = server().await;
    let mut alice = s.login("alice", "pw", Some("a")).await;
    let r = alice.iq(iq("set", None, vcard("Alice"))).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    let r = alice
        .iq(iq("set", None, query(vec![bookmarks("room@muc.example")])))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    alice.close().await.unwrap();
    s.server.unregister("alice", DOMAIN).await.unwrap();
    s.register("alice", "pw").await;
    let mut alice = s.login("alice", "pw", Some("a")).await;
    assert_eq!(
        vcard_get(&mut alice, None).await,
        Element::new("vCard", ns::VCARD)
    );
    let got = private_get(&mut alice, Element::new("storage", "storage:bookmarks")).await;
    assert_eq!(got, Element::new("storage", "storage:bookmarks"));
    alice.close().await.unwrap();
    s.stop().await;
}
