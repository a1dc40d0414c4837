//! `mod_presence` end to end (RFC 6121 §3–4): subscriptions between two
//! users over TCP, pre-approval, requests kept for an offline contact,
//! presence broadcast, probes at login, unavailable at logout and when the
//! connection drops; and the subscription state machine against the
//! tables of RFC 6121 Appendix A (exhaustively, and as a property of two
//! rosters that talk to each other).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use beamline_xmpp::client::Client;
use beamline_xmpp::modules::presence::{Direction, SubKind, SubState, transition};
use beamline_xmpp::{Element, ns};
use proptest::prelude::*;
use support::{DOMAIN, T, TestServer, sync};

async fn start() -> TestServer {
    let ts = TestServer::start_with(|c| {
        c.modules.insert("mod_roster".into(), toml::Table::new());
        c.modules.insert("mod_presence".into(), toml::Table::new());
    })
    .await;
    for u in ["alice", "bob", "carol"] {
        ts.register(u, "pw").await;
    }
    ts
}

fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

fn show(el: &Element) -> String {
    String::from_utf8_lossy(&el.to_bytes()).into_owned()
}

/// A logged-in client and what it received but no check has taken yet.
struct Peer {
    c: Client,
    seen: Vec<Element>,
}

impl Peer {
    fn jid(&self) -> String {
        self.c.jid().to_string()
    }

    async fn send(&mut self, el: &Element) {
        self.c.send(el).await.unwrap();
    }

    async fn iq(&mut self, el: Element) -> Element {
        self.c.iq(el).await.unwrap()
    }

    async fn sync(&mut self) {
        sync(&mut self.c).await;
    }

    /// Forgets what was received so far (after the checks on it),
    /// including what the client kept while waiting for IQ replies.
    async fn forget(&mut self) {
        self.seen.clear();
        while self
            .c
            .recv_timeout(Duration::from_millis(100))
            .await
            .is_ok()
        {}
    }

    async fn close(self) {
        self.c.close().await.unwrap();
    }
}

/// Logs in, asks for the roster (so that pushes come) and, if
/// `available`, sends initial presence.
async fn login(ts: &TestServer, user: &str, resource: &str, available: bool) -> Peer {
    let c = ts.login(user, "pw", Some(resource)).await;
    let mut p = Peer {
        c,
        seen: Vec::new(),
    };
    let get = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .append(Element::new("query", ns::ROSTER))
        .build();
    let r = p.iq(get).await;
    assert_eq!(r.attr("type"), Some("result"));
    if available {
        p.send(&Element::new("presence", ns::JABBER_CLIENT)).await;
        p.sync().await;
    }
    p
}

async fn send_sub(c: &mut Peer, to: &str, kind: &str) {
    let p = Element::builder("presence", ns::JABBER_CLIENT)
        .attr("to", to)
        .attr("type", kind)
        .build();
    c.send(&p).await;
    c.sync().await;
}

/// The first stanza received (before or within `T`) that matches `pred`;
/// the others stay for later checks.
async fn wait_for(c: &mut Peer, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
    if let Some(i) = c.seen.iter().position(&pred) {
        return c.seen.remove(i);
    }
    let jid = c.jid();
    let seen = &mut c.seen;
    let client = &mut c.c;
    let r = tokio::time::timeout(T, async {
        loop {
            let el = client.recv().await.unwrap();
            if pred(&el) {
                return el;
            }
            seen.push(el);
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("{jid} never got {what}"))
}

/// Asserts that nothing matching `pred` was received or arrives within a
/// short while.
async fn none_of(c: &mut Peer, what: &str, pred: impl Fn(&Element) -> bool) {
    if let Some(el) = c.seen.iter().find(|e| pred(e)) {
        panic!("{} got {what}: {}", c.jid(), show(el));
    }
    let seen = &mut c.seen;
    let client = &mut c.c;
    let r = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            let el = client.recv().await.unwrap();
            if pred(&el) {
                return el;
            }
            seen.push(el);
        }
    })
    .await;
    if let Ok(el) = r {
        panic!("{} got {what}: {}", c.jid(), show(&el));
    }
}

fn presence_of(el: &Element, from: &str, kind: Option<&str>) -> bool {
    el.is("presence", ns::JABBER_CLIENT) && el.attr("from") == Some(from) && el.attr("type") == kind
}

/// A presence of `kind` whose sender's bare JID is `from`.
fn presence_from_bare(el: &Element, from: &str, kind: Option<&str>) -> bool {
    el.is("presence", ns::JABBER_CLIENT)
        && el
            .attr("from")
            .is_some_and(|f| f == from || f.starts_with(&format!("{from}/")))
        && el.attr("type") == kind
}

/// (subscription, ask, approved) of `contact` in a roster push.
fn push_of(el: &Element, contact: &str) -> Option<(String, Option<String>, bool)> {
    if !(el.is("iq", ns::JABBER_CLIENT) && el.attr("type") == Some("set")) {
        return None;
    }
    let item = el
        .get_child("query", ns::ROSTER)?
        .get_child("item", ns::ROSTER)?;
    (item.attr("jid") == Some(contact)).then(|| {
        (
            item.attr("subscription").unwrap_or("none").to_owned(),
            item.attr("ask").map(str::to_owned),
            item.attr("approved") == Some("true"),
        )
    })
}

async fn wait_push(c: &mut Peer, contact: &str, sub: &str, ask: bool) {
    let want = format!("push {contact} {sub} ask={ask}");
    wait_for(c, &want, |el| {
        push_of(el, contact).is_some_and(|(s, a, _)| s == sub && a.is_some() == ask)
    })
    .await;
}

/// The subscription of `contact` in `c`'s roster (via a roster get).
async fn sub_in_roster(c: &mut Peer, contact: &str) -> Option<(String, Option<String>)> {
    let get = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .append(Element::new("query", ns::ROSTER))
        .build();
    let r = c.iq(get).await;
    let q = r.get_child("query", ns::ROSTER)?;
    q.children()
        .find(|i| i.attr("jid") == Some(contact))
        .map(|i| {
            (
                i.attr("subscription").unwrap_or("none").to_owned(),
                i.attr("ask").map(str::to_owned),
            )
        })
}

/// Makes `a` and `b` (both online, roster requested) subscribed both ways.
async fn befriend(a: &mut Peer, an: &str, b: &mut Peer, bn: &str) {
    send_sub(a, &jid(bn), "subscribe").await;
    wait_for(b, "subscribe", |el| {
        presence_of(el, &jid(an), Some("subscribe"))
    })
    .await;
    send_sub(b, &jid(an), "subscribed").await;
    wait_push(a, &jid(bn), "to", false).await;
    send_sub(b, &jid(an), "subscribe").await;
    wait_for(a, "subscribe", |el| {
        presence_of(el, &jid(bn), Some("subscribe"))
    })
    .await;
    send_sub(a, &jid(bn), "subscribed").await;
    wait_push(b, &jid(an), "both", false).await;
    wait_push(a, &jid(bn), "both", false).await;
    a.sync().await;
    b.sync().await;
    a.forget().await;
    b.forget().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_handshake_ends_in_both() {
    let ts = start().await;
    let mut a = login(&ts, "alice", "a", true).await;
    let mut b = login(&ts, "bob", "b", true).await;
    let (alice, bob) = (jid("alice"), jid("bob"));

    // alice asks: her roster shows bob as none + ask; bob gets the request
    // from alice's bare JID, and bob's roster does not show alice yet.
    send_sub(&mut a, &bob, "subscribe").await;
    wait_push(&mut a, &bob, "none", true).await;
    let req = wait_for(&mut b, "subscribe", |el| {
        el.attr("type") == Some("subscribe")
    })
    .await;
    assert_eq!(req.attr("from"), Some(alice.as_str()));
    assert_eq!(sub_in_roster(&mut b, &alice).await, None);
    // alice's presence does not reach bob yet (no subscription).
    assert_eq!(
        sub_in_roster(&mut a, &bob).await,
        Some(("none".into(), Some("subscribe".into())))
    );

    // bob approves: bob sees alice as from; alice as to, gets the
    // `subscribed` and bob's current presence.
    send_sub(&mut b, &alice, "subscribed").await;
    wait_push(&mut b, &alice, "from", false).await;
    wait_push(&mut a, &bob, "to", false).await;
    wait_for(&mut a, "subscribed", |el| {
        presence_of(el, &bob, Some("subscribed"))
    })
    .await;
    wait_for(&mut a, "bob's presence", |el| {
        presence_of(el, &format!("{bob}/b"), None)
    })
    .await;

    // The other way.
    send_sub(&mut b, &alice, "subscribe").await;
    wait_push(&mut b, &alice, "from", true).await;
    wait_for(&mut a, "subscribe", |el| {
        presence_of(el, &bob, Some("subscribe"))
    })
    .await;
    send_sub(&mut a, &bob, "subscribed").await;
    wait_push(&mut a, &bob, "both", false).await;
    wait_push(&mut b, &alice, "both", false).await;
    wait_for(&mut b, "alice's presence", |el| {
        presence_of(el, &format!("{alice}/a"), None)
    })
    .await;
    assert_eq!(
        sub_in_roster(&mut a, &bob).await,
        Some(("both".into(), None))
    );
    assert_eq!(
        sub_in_roster(&mut b, &alice).await,
        Some(("both".into(), None))
    );

    // Now a presence change of alice reaches bob.
    let away = Element::builder("presence", ns::JABBER_CLIENT)
        .append(
            Element::builder("show", ns::JABBER_CLIENT)
                .text("away")
                .build(),
        )
        .build();
    a.send(&away).await;
    let p = wait_for(&mut b, "alice away", |el| {
        presence_of(el, &format!("{alice}/a"), None)
    })
    .await;
    assert_eq!(
        p.child_text("show", ns::JABBER_CLIENT).as_deref(),
        Some("away")
    );

    a.close().await;
    b.close().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_and_unsubscribed() {
    let ts = start().await;
    let mut a = login(&ts, "alice", "a", true).await;
    let mut b = login(&ts, "bob", "b", true).await;
    let (alice, bob) = (jid("alice"), jid("bob"));
    befriend(&mut a, "alice", &mut b, "bob").await;

    // alice no longer wants bob's presence: alice from, bob to; bob's
    // resources go unavailable for alice (§3.3.3).
    send_sub(&mut a, &bob, "unsubscribe").await;
    wait_push(&mut a, &bob, "from", false).await;
    wait_for(&mut b, "unsubscribe", |el| {
        presence_of(el, &alice, Some("unsubscribe"))
    })
    .await;
    wait_push(&mut b, &alice, "to", false).await;
    wait_for(&mut a, "bob unavailable", |el| {
        presence_of(el, &format!("{bob}/b"), Some("unavailable"))
    })
    .await;

    // bob cancels alice's subscription to him, which she already
    // dropped: nothing changes, and alice is told nothing.
    a.forget().await;
    send_sub(&mut b, &alice, "unsubscribed").await;
    none_of(&mut a, "a useless unsubscribed", |el| {
        presence_of(el, &bob, Some("unsubscribed")) || push_of(el, &bob).is_some()
    })
    .await;

    // alice cancels bob's subscription to her: both none; bob hears it
    // and sees alice go unavailable.
    send_sub(&mut a, &bob, "unsubscribed").await;
    wait_push(&mut a, &bob, "none", false).await;
    wait_for(&mut b, "unsubscribed", |el| {
        presence_of(el, &alice, Some("unsubscribed"))
    })
    .await;
    wait_push(&mut b, &alice, "none", false).await;
    wait_for(&mut b, "alice unavailable", |el| {
        presence_of(el, &format!("{alice}/a"), Some("unavailable"))
    })
    .await;
    // A `subscribed` nobody asked for changes nothing on alice's side.
    send_sub(&mut b, &alice, "subscribed").await;
    none_of(&mut a, "an unrequested subscribed", |el| {
        presence_of(el, &bob, Some("subscribed"))
    })
    .await;

    // Presence no longer flows.
    a.send(&Element::new("presence", ns::JABBER_CLIENT)).await;
    none_of(&mut b, "alice's presence", |el| {
        presence_from_bare(el, &alice, None)
    })
    .await;

    a.close().await;
    b.close().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_approval() {
    let ts = start().await;
    let mut a = login(&ts, "alice", "a", true).await;
    let mut b = login(&ts, "bob", "b", true).await;
    let (alice, bob) = (jid("alice"), jid("bob"));

    // bob approves in advance: an item with approved='true', nothing sent.
    send_sub(&mut b, &alice, "subscribed").await;
    wait_for(&mut b, "approved push", |el| {
        push_of(el, &alice).is_some_and(|(s, _, approved)| s == "none" && approved)
    })
    .await;
    none_of(&mut a, "the pre-approval", |el| {
        presence_from_bare(el, &bob, Some("subscribed"))
    })
    .await;

    // alice asks: approved at once, bob is not asked.
    send_sub(&mut a, &bob, "subscribe").await;
    wait_for(&mut a, "subscribed", |el| {
        presence_of(el, &bob, Some("subscribed"))
    })
    .await;
    wait_push(&mut a, &bob, "to", false).await;
    wait_for(&mut a, "bob's presence", |el| {
        presence_of(el, &format!("{bob}/b"), None)
    })
    .await;
    wait_push(&mut b, &alice, "from", false).await;
    none_of(&mut b, "the request", |el| {
        presence_of(el, &alice, Some("subscribe"))
    })
    .await;

    // carol pre-approves alice, then takes it back: the cancellation is
    // not routed (§3.2.2), and alice's request then reaches carol.
    let carol = jid("carol");
    let mut c = login(&ts, "carol", "c", true).await;
    send_sub(&mut c, &alice, "subscribed").await;
    wait_for(&mut c, "approved push", |el| {
        push_of(el, &alice).is_some_and(|(_, _, approved)| approved)
    })
    .await;
    send_sub(&mut c, &alice, "unsubscribed").await;
    wait_for(&mut c, "approval withdrawn", |el| {
        push_of(el, &alice).is_some_and(|(s, _, approved)| s == "none" && !approved)
    })
    .await;
    none_of(&mut a, "carol's unsubscribed", |el| {
        presence_from_bare(el, &carol, Some("unsubscribed"))
    })
    .await;
    send_sub(&mut a, &carol, "subscribe").await;
    wait_for(&mut c, "the request", |el| {
        presence_of(el, &alice, Some("subscribe"))
    })
    .await;

    a.close().await;
    b.close().await;
    c.close().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_to_offline_contact_is_delivered_at_login() {
    let ts = start().await;
    let mut a = login(&ts, "alice", "a", true).await;
    let (alice, bob) = (jid("alice"), jid("bob"));
    send_sub(&mut a, &bob, "subscribe").await;
    wait_push(&mut a, &bob, "none", true).await;

    // bob logs in: the roster does not list alice, the request comes with
    // the initial presence.
    let mut b = login(&ts, "bob", "b", false).await;
    assert_eq!(sub_in_roster(&mut b, &alice).await, None);
    b.send(&Element::new("presence", ns::JABBER_CLIENT)).await;
    wait_for(&mut b, "the stored request", |el| {
        presence_of(el, &alice, Some("subscribe"))
    })
    .await;
    // Not answered: it comes again at the next login.
    b.close().await;
    let mut b = login(&ts, "bob", "b2", true).await;
    wait_for(&mut b, "the request again", |el| {
        presence_of(el, &alice, Some("subscribe"))
    })
    .await;
    send_sub(&mut b, &alice, "subscribed").await;
    wait_push(&mut a, &bob, "to", false).await;
    wait_for(&mut a, "bob's presence", |el| {
        presence_of(el, &format!("{bob}/b2"), None)
    })
    .await;
    b.close().await;
    // Answered: no more.
    let mut b = login(&ts, "bob", "b3", true).await;
    none_of(&mut b, "an answered request", |el| {
        presence_of(el, &alice, Some("subscribe"))
    })
    .await;

    // A request to an account that does not exist is answered
    // `unsubscribed`, and alice's pending state is cleared.
    send_sub(&mut a, &jid("nobody"), "subscribe").await;
    wait_for(&mut a, "unsubscribed", |el| {
        presence_of(el, &jid("nobody"), Some("unsubscribed"))
    })
    .await;
    wait_push(&mut a, &jid("nobody"), "none", false).await;

    a.close().await;
    b.close().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_at_login_and_unavailable_at_logout_and_drop() {
    let ts = start().await;
    let mut a = login(&ts, "alice", "a", true).await;
    let mut b = login(&ts, "bob", "b", true).await;
    let (alice, bob) = (jid("alice"), jid("bob"));
    befriend(&mut a, "alice", &mut b, "bob").await;
    b.close().await;
    wait_for(&mut a, "bob unavailable", |el| {
        presence_of(el, &format!("{bob}/b"), Some("unavailable"))
    })
    .await;

    // alice sets a status; bob logs in later and learns it from the probe
    // answer; alice hears bob's initial presence.
    let status = Element::builder("presence", ns::JABBER_CLIENT)
        .append(
            Element::builder("status", ns::JABBER_CLIENT)
                .text("reading")
                .build(),
        )
        .build();
    a.send(&status).await;
    a.sync().await;
    let mut b = login(&ts, "bob", "b", true).await;
    let p = wait_for(&mut b, "alice's presence", |el| {
        presence_of(el, &format!("{alice}/a"), None)
    })
    .await;
    assert_eq!(
        p.child_text("status", ns::JABBER_CLIENT).as_deref(),
        Some("reading")
    );
    wait_for(&mut a, "bob's presence", |el| {
        presence_of(el, &format!("{bob}/b"), None)
    })
    .await;

    // carol, no contact, sees none of it; directed presence reaches her.
    let mut c = login(&ts, "carol", "c", true).await;
    a.send(&Element::new("presence", ns::JABBER_CLIENT)).await;
    none_of(&mut c, "alice's broadcast", |el| {
        presence_from_bare(el, &alice, None)
    })
    .await;
    let directed = Element::builder("presence", ns::JABBER_CLIENT)
        .attr("to", jid("carol"))
        .build();
    a.send(&directed).await;
    wait_for(&mut c, "directed presence", |el| {
        presence_of(el, &format!("{alice}/a"), None)
    })
    .await;

    // bob's second connection drops: alice, his contact, hears him go.
    let (mut b2, tcp) = ts.login_probed("bob", "pw", Some("phone")).await;
    b2.send_presence().await.unwrap();
    sync(&mut b2).await;
    // Killed without a word: the TCP connection just goes.
    wait_for(&mut a, "bob/phone", |el| {
        presence_of(el, &format!("{bob}/phone"), None)
    })
    .await;
    drop(b2);
    drop(tcp);
    wait_for(&mut a, "bob/phone unavailable", |el| {
        presence_of(el, &format!("{bob}/phone"), Some("unavailable"))
    })
    .await;
    // bob/b, his other resource, heard it too.
    wait_for(&mut b, "own other resource unavailable", |el| {
        presence_of(el, &format!("{bob}/phone"), Some("unavailable"))
    })
    .await;

    // A probe from a non-contact is not delivered and answered with
    // nothing carol's client sees (the `unsubscribed` it gets changes
    // nothing in her roster, so it is not delivered).
    let probe = Element::builder("presence", ns::JABBER_CLIENT)
        .attr("to", alice.clone())
        .attr("type", "probe")
        .build();
    c.send(&probe).await;
    c.sync().await;
    none_of(&mut c, "alice's presence", |el| {
        presence_from_bare(el, &alice, None)
    })
    .await;
    none_of(&mut a, "a probe", |el| el.attr("type") == Some("probe")).await;

    a.close().await;
    b.close().await;
    c.close().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_between_own_resources() {
    let ts = start().await;
    let alice = jid("alice");
    let mut one = login(&ts, "alice", "one", true).await;
    // The sender hears its own presence back.
    wait_for(&mut one, "own presence", |el| {
        presence_of(el, &format!("{alice}/one"), None)
    })
    .await;
    let mut two = login(&ts, "alice", "two", false).await;
    two.send(&Element::new("presence", ns::JABBER_CLIENT)).await;
    wait_for(&mut one, "two's presence", |el| {
        presence_of(el, &format!("{alice}/two"), None)
    })
    .await;
    wait_for(&mut two, "one's presence", |el| {
        presence_of(el, &format!("{alice}/one"), None)
    })
    .await;
    two.close().await;
    wait_for(&mut one, "two unavailable", |el| {
        presence_of(el, &format!("{alice}/two"), Some("unavailable"))
    })
    .await;
    one.close().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_contact_cancels_both_ways() {
    let ts = start().await;
    let mut a = login(&ts, "alice", "a", true).await;
    let mut b = login(&ts, "bob", "b", true).await;
    let (alice, bob) = (jid("alice"), jid("bob"));
    befriend(&mut a, "alice", &mut b, "bob").await;
    let rm = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "set")
        .append(
            Element::builder("query", ns::ROSTER)
                .append(
                    Element::builder("item", ns::ROSTER)
                        .attr("jid", bob.clone())
                        .attr("subscription", "remove")
                        .build(),
                )
                .build(),
        )
        .build();
    let r = a.iq(rm).await;
    assert_eq!(r.attr("type"), Some("result"));
    wait_push(&mut a, &bob, "remove", false).await;
    // bob's side: unsubscribe then unsubscribed → none, alice unavailable.
    wait_for(&mut b, "unsubscribe", |el| {
        presence_of(el, &alice, Some("unsubscribe"))
    })
    .await;
    wait_for(&mut b, "unsubscribed", |el| {
        presence_of(el, &alice, Some("unsubscribed"))
    })
    .await;
    wait_push(&mut b, &alice, "none", false).await;
    assert_eq!(
        sub_in_roster(&mut b, &alice).await,
        Some(("none".into(), None))
    );
    assert_eq!(sub_in_roster(&mut a, &bob).await, None);
    a.close().await;
    b.close().await;
    ts.stop().await;
}

// ---------------------------------------------------------------------
// The state machine against RFC 6121 Appendix A.

/// The nine states of Appendix A, by their names there.
fn states() -> Vec<(&'static str, SubState)> {
    let s = |to, from, pending_out, pending_in| SubState {
        to,
        from,
        pending_out,
        pending_in,
        approved: false,
    };
    vec![
        ("None", s(false, false, false, false)),
        ("None + Pending Out", s(false, false, true, false)),
        ("None + Pending In", s(false, false, false, true)),
        ("None + Pending Out/In", s(false, false, true, true)),
        ("To", s(true, false, false, false)),
        ("To + Pending In", s(true, false, false, true)),
        ("From", s(false, true, false, false)),
        ("From + Pending Out", s(false, true, true, false)),
        ("Both", s(true, true, false, false)),
    ]
}

fn named(name: &str) -> SubState {
    states().into_iter().find(|(n, _)| *n == name).unwrap().1
}

/// Appendix A, transcribed: (direction, type, existing state) → (new
/// state, or `None` for "no state change"; delivered, for inbound).
fn rfc_table(dir: Direction, kind: SubKind, state: &str) -> (Option<&'static str>, bool) {
    use Direction::*;
    use SubKind::*;
    match (dir, kind, state) {
        // A.2.1 outbound subscribe
        (Outbound, Subscribe, "None") => (Some("None + Pending Out"), false),
        (Outbound, Subscribe, "None + Pending In") => (Some("None + Pending Out/In"), false),
        (Outbound, Subscribe, "From") => (Some("From + Pending Out"), false),
        (Outbound, Subscribe, _) => (None, false),
        // A.2.2 outbound unsubscribe
        (Outbound, Unsubscribe, "None + Pending Out") => (Some("None"), false),
        (Outbound, Unsubscribe, "None + Pending Out/In") => (Some("None + Pending In"), false),
        (Outbound, Unsubscribe, "To") => (Some("None"), false),
        (Outbound, Unsubscribe, "To + Pending In") => (Some("None + Pending In"), false),
        (Outbound, Unsubscribe, "From + Pending Out") => (Some("From"), false),
        (Outbound, Unsubscribe, "Both") => (Some("From"), false),
        (Outbound, Unsubscribe, _) => (None, false),
        // A.2.3 outbound subscribed (no pre-approval in this table)
        (Outbound, Subscribed, "None + Pending In") => (Some("From"), false),
        (Outbound, Subscribed, "None + Pending Out/In") => (Some("From + Pending Out"), false),
        (Outbound, Subscribed, "To + Pending In") => (Some("Both"), false),
        (Outbound, Subscribed, _) => (None, false),
        // A.2.4 outbound unsubscribed
        (Outbound, Unsubscribed, "None + Pending In") => (Some("None"), false),
        (Outbound, Unsubscribed, "None + Pending Out/In") => (Some("None + Pending Out"), false),
        (Outbound, Unsubscribed, "To + Pending In") => (Some("To"), false),
        (Outbound, Unsubscribed, "From") => (Some("None"), false),
        (Outbound, Unsubscribed, "From + Pending Out") => (Some("None + Pending Out"), false),
        (Outbound, Unsubscribed, "Both") => (Some("To"), false),
        (Outbound, Unsubscribed, _) => (None, false),
        // A.3.1 inbound subscribe
        (Inbound, Subscribe, "None") => (Some("None + Pending In"), true),
        (Inbound, Subscribe, "None + Pending Out") => (Some("None + Pending Out/In"), true),
        (Inbound, Subscribe, "To") => (Some("To + Pending In"), true),
        (Inbound, Subscribe, _) => (None, false),
        // A.3.2 inbound unsubscribe
        (Inbound, Unsubscribe, "None + Pending In") => (Some("None"), true),
        (Inbound, Unsubscribe, "None + Pending Out/In") => (Some("None + Pending Out"), true),
        (Inbound, Unsubscribe, "To + Pending In") => (Some("To"), true),
        (Inbound, Unsubscribe, "From") => (Some("None"), true),
        (Inbound, Unsubscribe, "From + Pending Out") => (Some("None + Pending Out"), true),
        (Inbound, Unsubscribe, "Both") => (Some("To"), true),
        (Inbound, Unsubscribe, _) => (None, false),
        // A.3.3 inbound subscribed
        (Inbound, Subscribed, "None + Pending Out") => (Some("To"), true),
        (Inbound, Subscribed, "None + Pending Out/In") => (Some("To + Pending In"), true),
        (Inbound, Subscribed, "From + Pending Out") => (Some("Both"), true),
        (Inbound, Subscribed, _) => (None, false),
        // A.3.4 inbound unsubscribed
        (Inbound, Unsubscribed, "None + Pending Out") => (Some("None"), true),
        (Inbound, Unsubscribed, "None + Pending Out/In") => (Some("None + Pending In"), true),
        (Inbound, Unsubscribed, "To") => (Some("None"), true),
        (Inbound, Unsubscribed, "To + Pending In") => (Some("None + Pending In"), true),
        (Inbound, Unsubscribed, "From + Pending Out") => (Some("From"), true),
        (Inbound, Unsubscribed, "Both") => (Some("From"), true),
        (Inbound, Unsubscribed, _) => (None, false),
    }
}

const KINDS: [SubKind; 4] = [
    SubKind::Subscribe,
    SubKind::Subscribed,
    SubKind::Unsubscribe,
    SubKind::Unsubscribed,
];

#[test]
fn every_transition_of_appendix_a() {
    for dir in [Direction::Outbound, Direction::Inbound] {
        for kind in KINDS {
            for (name, state) in states() {
                let (want, deliver) = rfc_table(dir, kind, name);
                let o = transition(state, dir, kind);
                let want_state = want.map_or(state, named);
                let mut next = o.next;
                // Pre-approval (§3.4) is outside Appendix A's states.
                let pre_approval = dir == Direction::Outbound
                    && kind == SubKind::Subscribed
                    && !state.from
                    && !state.pending_in;
                assert_eq!(next.approved, pre_approval, "{dir:?} {kind:?} {name}");
                next.approved = false;
                assert_eq!(next, want_state, "{dir:?} {kind:?} from {name}");
                if dir == Direction::Inbound {
                    assert_eq!(o.forward, deliver, "delivery of {kind:?} in {name}");
                    // Already subscribed: the server answers for the user.
                    let auto = kind == SubKind::Subscribe && state.from;
                    assert_eq!(o.auto_reply, auto, "auto-reply of {kind:?} in {name}");
                } else {
                    // Routed: all but a `subscribed` that approves nothing.
                    let routed = kind != SubKind::Subscribed || want.is_some();
                    assert_eq!(o.forward, routed, "routing of {kind:?} in {name}");
                }
            }
        }
    }
}

#[test]
fn cancelling_a_pre_approval_is_not_routed() {
    for (name, mut state) in states() {
        if state.from || state.pending_in {
            continue;
        }
        state.approved = true;
        let o = transition(state, Direction::Outbound, SubKind::Unsubscribed);
        assert!(!o.forward && !o.next.approved, "{name}");
        // A second `subscribed` keeps it, routing nothing.
        let o = transition(state, Direction::Outbound, SubKind::Subscribed);
        assert!(!o.forward && o.next == state, "{name}");
    }
}

/// One user's action in the two-roster simulation.
#[derive(Debug, Clone, Copy)]
struct Action {
    alice_acts: bool,
    kind: SubKind,
}

fn action() -> impl Strategy<Value = Action> {
    (any::<bool>(), 0..4usize).prop_map(|(alice_acts, k)| Action {
        alice_acts,
        kind: KINDS[k],
    })
}

/// `actor` sends `kind`; the other side processes what is routed, and the
/// actor processes an automatic reply. Returns what each side delivered.
fn step(actor: &mut SubState, other: &mut SubState, kind: SubKind) {
    let out = transition(*actor, Direction::Outbound, kind);
    *actor = out.next;
    if !out.forward {
        return;
    }
    let inb = transition(*other, Direction::Inbound, kind);
    *other = inb.next;
    if inb.auto_reply {
        *actor = transition(*actor, Direction::Inbound, SubKind::Subscribed).next;
    }
}

proptest! {
    /// Two rosters that exchange every subscription stanza reliably stay
    /// in agreement: alice receives bob's presence exactly when bob sends
    /// it to her, a pending request on one side is pending on the other,
    /// and both stay in the states of Appendix A.
    #[test]
    fn two_rosters_stay_consistent(actions in proptest::collection::vec(action(), 0..40)) {
        let mut alice = SubState::default();
        let mut bob = SubState::default();
        for a in actions {
            if a.alice_acts {
                step(&mut alice, &mut bob, a.kind);
            } else {
                step(&mut bob, &mut alice, a.kind);
            }
            prop_assert!(alice.is_valid(), "{alice:?}");
            prop_assert!(bob.is_valid(), "{bob:?}");
            prop_assert_eq!(alice.to, bob.from);
            prop_assert_eq!(alice.from, bob.to);
            prop_assert_eq!(alice.pending_out, bob.pending_in);
            prop_assert_eq!(alice.pending_in, bob.pending_out);
        }
    }

    /// From any valid state, any stanza leads to a valid state, and a
    /// `subscribe` answered by `subscribed` ends with the subscription.
    #[test]
    fn request_then_approval_subscribes(a in 0..9usize, b in 0..9usize, pre in any::<bool>()) {
        let mut alice = states()[a].1;
        let mut bob = states()[b].1;
        if pre && !bob.from && !bob.pending_in {
            bob.approved = true;
        }
        step(&mut alice, &mut bob, SubKind::Subscribe);
        if bob.pending_in {
            step(&mut bob, &mut alice, SubKind::Subscribed);
        }
        prop_assert!(bob.from && !bob.pending_in);
        prop_assert!(alice.is_valid() && bob.is_valid());
    }
}
