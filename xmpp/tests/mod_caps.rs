//! mod_caps end to end: the server learns a client's features from the
//! caps in its presence (XEP-0115) by asking it `disco#info`, keeps only
//! what verifies, and does not ask again for a `ver` it knows; and the
//! router's server requests (`Router::request`) underneath.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use beamline_xmpp::client::{Client, ClientError};
use beamline_xmpp::modules::caps::features_of;
use beamline_xmpp::modules::disco::{Identity, caps_ver};
use beamline_xmpp::router::RequestError;
use beamline_xmpp::{Element, ns};
use support::{DOMAIN, T, TestServer, sync};

const NODE: &str = "https://example.org/client";

fn features() -> Vec<String> {
    vec![
        ns::DISCO_INFO.to_owned(),
        ns::CAPS.to_owned(),
        "urn:xmpp:mam:2".to_owned(),
        "urn:xmpp:avatar:metadata+notify".to_owned(),
    ]
}

fn identity() -> Identity {
    Identity::new("client", "pc", "Test client")
}

fn good_ver() -> String {
    caps_ver(&[identity()], &features(), &[])
}

async fn server() -> TestServer {
    let s = TestServer::start_with(|c| {
        for m in ["mod_roster", "mod_presence", "mod_disco", "mod_caps"] {
            c.modules.insert(m.to_owned(), toml::Table::new());
        }
    })
    .await;
    s.register("alice", "secret").await;
    s.register("bob", "secret").await;
    s
}

fn caps_presence(ver: &str) -> Element {
    Element::builder("presence", ns::JABBER_CLIENT)
        .append(
            Element::builder("c", ns::CAPS)
                .attr("hash", "sha-1")
                .attr("node", NODE)
                .attr("ver", ver)
                .build(),
        )
        .build()
}

/// The next `disco#info` query the server sends the client within `wait`
/// (other stanzas skipped), or `None`.
async fn disco_query(client: &mut Client, wait: Duration) -> Option<Element> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.recv_timeout(left).await {
            Ok(el) => {
                if el.name() == "iq"
                    && el.attr("type") == Some("get")
                    && el.get_child("query", ns::DISCO_INFO).is_some()
                {
                    return Some(el);
                }
            }
            Err(ClientError::Timeout(_)) => return None,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The client's answer to `query` with `features`.
fn answer(query: &Element, features: &[String]) -> Element {
    let node = query
        .get_child("query", ns::DISCO_INFO)
        .and_then(|q| q.attr("node"))
        .unwrap()
        .to_owned();
    Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "result")
        .attr("id", query.attr("id").unwrap())
        .attr("to", query.attr("from").unwrap())
        .append(
            Element::builder("query", ns::DISCO_INFO)
                .attr("node", node)
                .append(identity().to_element())
                .append_all(features.iter().map(|f| {
                    Element::builder("feature", ns::DISCO_INFO)
                        .attr("var", f.clone())
                        .build()
                }))
                .build(),
        )
        .build()
}

async fn wait_features(s: &TestServer, client: &Client) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(f) = features_of(s.server.services(), client.jid()) {
            return f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "features never learned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn the_server_learns_a_clients_features_once_per_ver() {
    let s = server().await;
    let mut alice = s.login("alice", "secret", Some("phone")).await;
    let ver = good_ver();
    assert!(features_of(s.server.services(), alice.jid()).is_none());
    alice.send(&caps_presence(&ver)).await.unwrap();

    let q = disco_query(&mut alice, T)
        .await
        .expect("no disco#info query");
    assert_eq!(q.attr("from"), Some(DOMAIN));
    assert_eq!(q.attr("to"), Some(alice.jid().to_string().as_str()));
    let node = q
        .get_child("query", ns::DISCO_INFO)
        .and_then(|q| q.attr("node"));
    assert_eq!(node, Some(format!("{NODE}#{ver}").as_str()));
    alice.send(&answer(&q, &features())).await.unwrap();
    assert_eq!(wait_features(&s, &alice).await, sorted(features()));

    // Bob's client has the same ver: known, not asked.
    let mut bob = s.login("bob", "secret", Some("desk")).await;
    bob.send(&caps_presence(&ver)).await.unwrap();
    sync(&mut bob).await;
    assert_eq!(
        features_of(s.server.services(), bob.jid()),
        Some(sorted(features()))
    );
    assert!(
        disco_query(&mut bob, Duration::from_millis(500))
            .await
            .is_none(),
        "a known ver was queried again"
    );

    // Unavailable: no features any more.
    alice
        .send(
            &Element::builder("presence", ns::JABBER_CLIENT)
                .attr("type", "unavailable")
                .build(),
        )
        .await
        .unwrap();
    sync(&mut alice).await;
    assert!(features_of(s.server.services(), alice.jid()).is_none());
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn an_answer_that_does_not_hash_to_the_ver_is_not_kept() {
    let s = server().await;
    let mut alice = s.login("alice", "secret", Some("phone")).await;
    let bogus = "bm90IHRoZSByaWdodCBoYXNoISE=";
    alice.send(&caps_presence(bogus)).await.unwrap();
    let q = disco_query(&mut alice, T)
        .await
        .expect("no disco#info query");
    alice.send(&answer(&q, &features())).await.unwrap();
    sync(&mut alice).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(features_of(s.server.services(), alice.jid()).is_none());

    // Not cached: the next presence with that ver is asked again.
    alice.send(&caps_presence(bogus)).await.unwrap();
    let q = disco_query(&mut alice, T).await;
    assert!(q.is_some(), "an unverified ver was cached");

    // Caps with a hash the server does not check are ignored.
    let mut other = caps_presence("whatever");
    if let Some(c) = other.get_child_mut("c", ns::CAPS) {
        c.set_attr("hash", "md5");
    }
    alice.send(&other).await.unwrap();
    assert!(
        disco_query(&mut alice, Duration::from_millis(500))
            .await
            .is_none()
    );
    alice.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn server_requests_get_their_answers_or_time_out() {
    let s = server().await;
    let router = s.server.router();
    let ping = |to: &str| {
        Element::builder("iq", ns::JABBER_CLIENT)
            .attr("type", "get")
            .attr("to", to)
            .append(Element::new("ping", ns::PING))
            .build()
    };

    // Nobody there: the router's own error is the answer.
    let reply = router
        .request(ping("alice@localhost/gone"), T)
        .await
        .unwrap();
    assert_eq!(reply.attr("type"), Some("error"));
    assert_eq!(reply.attr("from"), Some("alice@localhost/gone"));

    // A client that answers.
    let mut alice = s.login("alice", "secret", Some("phone")).await;
    let to = alice.jid().to_string();
    let req = tokio::spawn({
        let router = router.clone();
        let to = to.clone();
        async move { router.request(ping(&to), T).await }
    });
    let got = alice.recv_timeout(T).await.unwrap();
    assert_eq!(got.attr("from"), Some(DOMAIN));
    let result = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "result")
        .attr("id", got.attr("id").unwrap())
        .attr("to", DOMAIN)
        .build();
    // A result with another id is not taken for the answer.
    let mut wrong = result.clone();
    wrong.set_attr("id", "not-it");
    alice.send(&wrong).await.unwrap();
    alice.send(&result).await.unwrap();
    let reply = tokio::time::timeout(T, req)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    assert_eq!(reply.attr("from"), Some(to.as_str()));

    // A client that does not answer: timeout, and nothing left waiting.
    let r = router.request(ping(&to), Duration::from_millis(300)).await;
    assert_eq!(r, Err(RequestError::Timeout));
    assert_eq!(router.pending_requests(), 0);

    // Not a request.
    let mut result = ping(&to);
    result.set_attr("type", "result");
    assert_eq!(
        router.request(result, T).await,
        Err(RequestError::NotRequest)
    );
    alice.close().await.unwrap();
    s.stop().await;
}
