//! `mod_roster` end to end (RFC 6121 §2, XEP-0237): real clients over
//! TCP get, add, change and remove roster items, see the pushes, the
//! errors of §2.3.3 and roster versioning.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use beamline_xmpp::client::Client;
use beamline_xmpp::sasl::Mechanism;
use beamline_xmpp::sasl::client::ClientCredentials;
use beamline_xmpp::{Element, ns};
use support::{DOMAIN, T, TestServer, error_condition};

/// A server running `mod_roster` (with `options`) and `mod_presence`.
async fn start(versioning: bool) -> TestServer {
    let ts = TestServer::start_with(|c| {
        let mut roster = toml::Table::new();
        roster.insert("versioning".into(), toml::Value::Boolean(versioning));
        c.modules.insert("mod_roster".into(), roster);
        c.modules.insert("mod_presence".into(), toml::Table::new());
    })
    .await;
    for u in ["alice", "bob"] {
        ts.register(u, "pw").await;
    }
    ts
}

fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

fn query() -> beamline_xmpp::ElementBuilder {
    Element::builder("query", ns::ROSTER)
}

fn iq(kind: &str, q: Element) -> Element {
    Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", kind)
        .append(q)
        .build()
}

fn item(jid: &str, name: Option<&str>, groups: &[&str]) -> Element {
    let mut b = Element::builder("item", ns::ROSTER).attr("jid", jid);
    if let Some(n) = name {
        b = b.attr("name", n);
    }
    for g in groups {
        b = b.append(Element::builder("group", ns::ROSTER).text(g).build());
    }
    b.build()
}

async fn get(c: &mut Client, ver: Option<&str>) -> Element {
    let mut q = query();
    if let Some(v) = ver {
        q = q.attr("ver", v);
    }
    let r = c.iq(iq("get", q.build())).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    r
}

async fn set(c: &mut Client, item: Element) -> Element {
    c.iq(iq("set", query().append(item).build())).await.unwrap()
}

fn show(el: &Element) -> String {
    String::from_utf8_lossy(&el.to_bytes()).into_owned()
}

/// The items of a roster result or push: (jid, subscription, name, groups).
fn items(reply: &Element) -> Vec<(String, String, Option<String>, Vec<String>)> {
    let Some(q) = reply.get_child("query", ns::ROSTER) else {
        return Vec::new();
    };
    q.children()
        .filter(|c| c.is("item", ns::ROSTER))
        .map(|i| {
            (
                i.attr("jid").unwrap_or_default().to_owned(),
                i.attr("subscription").unwrap_or("none").to_owned(),
                i.attr("name").map(str::to_owned),
                i.children()
                    .filter(|g| g.is("group", ns::ROSTER))
                    .map(Element::text)
                    .collect(),
            )
        })
        .collect()
}

fn is_push(el: &Element) -> bool {
    el.is("iq", ns::JABBER_CLIENT)
        && el.attr("type") == Some("set")
        && el.has_child("query", ns::ROSTER)
}

/// The next roster push (other stanzas are skipped), within `T`.
async fn next_push(c: &mut Client) -> Element {
    let r = tokio::time::timeout(T, async {
        loop {
            let el = c.recv().await.unwrap();
            if is_push(&el) {
                return el;
            }
        }
    })
    .await;
    r.expect("no roster push came")
}

/// Asserts that no roster push arrives within a short while.
async fn no_push(c: &mut Client) {
    let r = tokio::time::timeout(Duration::from_millis(400), async {
        loop {
            let el = c.recv().await.unwrap();
            if is_push(&el) {
                return el;
            }
        }
    })
    .await;
    if let Ok(el) = r {
        panic!("unexpected roster push {}", show(&el));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_update_remove_with_pushes_to_interested_resources() {
    let ts = start(true).await;
    let mut a1 = ts.login("alice", "pw", Some("one")).await;
    let mut a2 = ts.login("alice", "pw", Some("two")).await;
    // A third resource never asks for the roster: it gets no pushes.
    let mut a3 = ts.login("alice", "pw", Some("three")).await;

    let empty = get(&mut a1, None).await;
    assert!(items(&empty).is_empty());
    let ver0 = empty
        .get_child("query", ns::ROSTER)
        .and_then(|q| q.attr("ver"))
        .expect("a ver attribute")
        .to_owned();
    get(&mut a2, None).await;

    let r = set(
        &mut a1,
        item(&jid("bob"), Some("Bob"), &["Friends", "Work"]),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    for c in [&mut a1, &mut a2] {
        let p = next_push(c).await;
        assert_eq!(p.attr("from"), Some(jid("alice").as_str()));
        let q = p.get_child("query", ns::ROSTER).unwrap();
        assert!(q.attr("ver").is_some_and(|v| v != ver0), "{}", show(&p));
        assert_eq!(
            items(&p),
            vec![(
                jid("bob"),
                "none".into(),
                Some("Bob".into()),
                vec!["Friends".into(), "Work".into()]
            )]
        );
    }
    no_push(&mut a3).await;

    // Update: new name, one group; the get shows it.
    let r = set(&mut a2, item(&jid("bob"), Some("Robert"), &["Work"])).await;
    assert_eq!(r.attr("type"), Some("result"));
    let p = next_push(&mut a1).await;
    assert_eq!(items(&p)[0].2.as_deref(), Some("Robert"));
    next_push(&mut a2).await;
    let all = get(&mut a1, None).await;
    assert_eq!(
        items(&all),
        vec![(
            jid("bob"),
            "none".into(),
            Some("Robert".into()),
            vec!["Work".into()]
        )]
    );

    // A client may not set the subscription: `both` is ignored.
    let forged = Element::builder("item", ns::ROSTER)
        .attr("jid", jid("carol"))
        .attr("subscription", "both")
        .attr("ask", "subscribe")
        .build();
    let r = set(&mut a1, forged).await;
    assert_eq!(r.attr("type"), Some("result"));
    let p = next_push(&mut a1).await;
    let pushed = p
        .get_child("query", ns::ROSTER)
        .unwrap()
        .children()
        .next()
        .unwrap()
        .clone();
    assert_eq!(pushed.attr("subscription"), Some("none"));
    assert_eq!(pushed.attr("ask"), None);
    next_push(&mut a2).await;

    // Remove: a push with subscription='remove', and it is gone.
    let rm = Element::builder("item", ns::ROSTER)
        .attr("jid", jid("carol"))
        .attr("subscription", "remove")
        .build();
    let r = set(&mut a1, rm.clone()).await;
    assert_eq!(r.attr("type"), Some("result"));
    for c in [&mut a1, &mut a2] {
        let p = next_push(c).await;
        assert_eq!(items(&p)[0].0, jid("carol"));
        assert_eq!(items(&p)[0].1, "remove");
    }
    let all = get(&mut a2, None).await;
    assert_eq!(items(&all).len(), 1);
    // Removing what is not there: item-not-found (§2.5.3).
    let r = set(&mut a1, rm).await;
    assert_eq!(error_condition(&r), "item-not-found");

    // The roster outlives the sessions.
    a1.close().await.unwrap();
    a2.close().await.unwrap();
    a3.close().await.unwrap();
    let mut again = ts.login("alice", "pw", Some("later")).await;
    assert_eq!(items(&get(&mut again, None).await)[0].0, jid("bob"));
    again.close().await.unwrap();
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_errors_and_other_users_roster() {
    let ts = start(true).await;
    let mut a = ts.login("alice", "pw", Some("r")).await;
    let mut b = ts.login("bob", "pw", Some("r")).await;

    let two = query()
        .append(item(&jid("x"), None, &[]))
        .append(item(&jid("y"), None, &[]))
        .build();
    let r = a.iq(iq("set", two)).await.unwrap();
    assert_eq!(error_condition(&r), "bad-request");
    let r = a.iq(iq("set", query().build())).await.unwrap();
    assert_eq!(error_condition(&r), "bad-request");
    let r = set(&mut a, item("not a@@jid", None, &[])).await;
    assert_eq!(error_condition(&r), "jid-malformed");
    let r = set(&mut a, Element::builder("item", ns::ROSTER).build()).await;
    assert_eq!(error_condition(&r), "bad-request");
    let r = set(&mut a, item(&jid("x"), None, &["G", "G"])).await;
    assert_eq!(error_condition(&r), "bad-request");
    let r = set(&mut a, item(&jid("x"), None, &[""])).await;
    assert_eq!(error_condition(&r), "not-acceptable");
    let long = "n".repeat(2000);
    let r = set(&mut a, item(&jid("x"), Some(&long), &[])).await;
    assert_eq!(error_condition(&r), "not-acceptable");
    // Nothing of that was stored.
    assert!(items(&get(&mut a, None).await).is_empty());

    // Bob may neither read nor change alice's roster.
    set(&mut a, item(&jid("carol"), None, &[])).await;
    let mut peek = iq("get", query().build());
    peek.set_attr("to", jid("alice"));
    let r = b.iq(peek).await.unwrap();
    assert_eq!(error_condition(&r), "forbidden");
    let mut change = iq(
        "set",
        query().append(item(&jid("mallory"), None, &[])).build(),
    );
    change.set_attr("to", jid("alice"));
    let r = b.iq(change).await.unwrap();
    assert_eq!(error_condition(&r), "forbidden");
    assert_eq!(items(&get(&mut a, None).await).len(), 1);
    // Explicitly to one's own bare JID is fine.
    let mut own = iq("get", query().build());
    own.set_attr("to", jid("alice"));
    let r = a.iq(own).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"));

    a.close().await.unwrap();
    b.close().await.unwrap();
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioning_empty_result_when_unchanged() {
    let ts = start(true).await;
    let mut a = ts.login("alice", "pw", Some("r")).await;
    set(&mut a, item(&jid("bob"), Some("Bob"), &[])).await;
    let full = get(&mut a, Some("")).await;
    let ver = full
        .get_child("query", ns::ROSTER)
        .and_then(|q| q.attr("ver"))
        .unwrap()
        .to_owned();
    assert_eq!(items(&full).len(), 1);
    // The cached version is current: an empty result (XEP-0237 §2.4).
    let same = get(&mut a, Some(&ver)).await;
    assert!(same.children().next().is_none(), "{}", show(&same));
    // A stale or unknown version: the whole roster.
    let other = get(&mut a, Some("stale")).await;
    assert_eq!(items(&other).len(), 1);
    // After a change the version moves, and the push carries it.
    set(&mut a, item(&jid("carol"), None, &[])).await;
    let p = next_push(&mut a).await;
    let pushed_ver = p
        .get_child("query", ns::ROSTER)
        .and_then(|q| q.attr("ver"))
        .unwrap()
        .to_owned();
    assert_ne!(pushed_ver, ver);
    let now = get(&mut a, Some(&ver)).await;
    assert_eq!(items(&now).len(), 2);
    assert!(
        get(&mut a, Some(&pushed_ver))
            .await
            .children()
            .next()
            .is_none()
    );
    a.close().await.unwrap();

    // The stream feature is offered after authentication.
    let features = post_auth_features(&ts, "alice").await;
    assert!(
        features.has_child("ver", ns::ROSTER_VER),
        "{}",
        show(&features)
    );
    assert!(
        features.has_child("sub", ns::PRE_APPROVAL),
        "{}",
        show(&features)
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioning_off() {
    let ts = start(false).await;
    let mut a = ts.login("alice", "pw", Some("r")).await;
    let r = get(&mut a, Some("")).await;
    assert_eq!(r.get_child("query", ns::ROSTER).unwrap().attr("ver"), None);
    set(&mut a, item(&jid("bob"), None, &[])).await;
    let p = next_push(&mut a).await;
    assert_eq!(p.get_child("query", ns::ROSTER).unwrap().attr("ver"), None);
    a.close().await.unwrap();
    let features = post_auth_features(&ts, "alice").await;
    assert!(
        !features.has_child("ver", ns::ROSTER_VER),
        "{}",
        show(&features)
    );
    ts.stop().await;
}

/// Logs in by hand up to the features after authentication.
async fn post_auth_features(ts: &TestServer, user: &str) -> Element {
    let (mut conn, _tcp, _) = support::open_raw(ts.c2s()).await;
    let features = support::starttls(&mut conn).await;
    conn.authenticate(
        &features,
        ClientCredentials::new(user, "pw"),
        &[Mechanism::ScramSha256],
        T,
    )
    .await
    .unwrap();
    conn.open_stream(DOMAIN).await.unwrap();
    conn.read_features(T).await.unwrap()
}
