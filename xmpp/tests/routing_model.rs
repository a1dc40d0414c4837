//! The router against a model of RFC 6121 §8.5 (the table in
//! docs/xmpp-server.md): random session tables (resources with or without
//! presence, with positive, zero and negative priorities), random stanzas
//! (message types, IQ requests and results, presence) to existing users,
//! a missing user, full and bare JIDs. Which sessions receive the stanza,
//! and whether the sender gets an error back, must match the model.

#![allow(clippy::unwrap_used)] // a test: a failed set-up step should fail it

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use beamline_xmpp::c2s::C2sMsg;
use beamline_xmpp::config::Config;
use beamline_xmpp::server::{Server, ServerOptions};
use beamline_xmpp::sm::LocalSession;
use beamline_xmpp::{Element, FullJid, ns};
use proptest::prelude::*;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

/// A stand-in session: reports every routed stanza with its own name.
struct Fake;

impl Actor for Fake {
    type Msg = C2sMsg;
    type State = (String, mpsc::UnboundedSender<(String, Element)>);
    type Arguments = (String, mpsc::UnboundedSender<(String, Element)>);

    async fn pre_start(
        &self,
        _: ActorRef<C2sMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<C2sMsg>,
        msg: C2sMsg,
        (name, tx): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let C2sMsg::Route(el) = msg {
            let _ = tx.send((name.clone(), el));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Case {
    /// Priority of resources r0..r2 of users u0..u2; `None` in the outer
    /// option: no session; `Some(None)`: bound, no presence yet.
    sessions: Vec<Vec<Option<Option<i8>>>>,
    kind: &'static str,
    stanza_type: Option<&'static str>,
    to_user: usize,
    to_resource: Option<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    let prio = prop_oneof![
        Just(None),
        Just(Some(None)),
        Just(Some(Some(-1))),
        Just(Some(Some(0))),
        Just(Some(Some(1))),
        Just(Some(Some(5))),
    ];
    let stanza = prop_oneof![
        Just(("message", None)),
        Just(("message", Some("chat"))),
        Just(("message", Some("normal"))),
        Just(("message", Some("headline"))),
        Just(("message", Some("groupchat"))),
        Just(("message", Some("error"))),
        Just(("iq", Some("get"))),
        Just(("iq", Some("set"))),
        Just(("iq", Some("result"))),
        Just(("presence", None)),
        Just(("presence", Some("unavailable"))),
    ];
    (
        proptest::collection::vec(proptest::collection::vec(prio, 3), 3),
        stanza,
        0usize..4,
        proptest::option::of(0usize..4),
    )
        .prop_map(
            |(sessions, (kind, stanza_type), to_user, to_resource)| Case {
                sessions,
                kind,
                stanza_type,
                to_user,
                to_resource,
            },
        )
}

/// What should happen: the sessions that receive it, and whether the
/// sender gets an error.
fn model(c: &Case) -> (BTreeSet<String>, bool) {
    let t = c
        .stanza_type
        .unwrap_or(if c.kind == "message" { "normal" } else { "" });
    let exists = c.to_user < 3;
    let sessions: Vec<(usize, Option<i8>)> = if exists {
        c.sessions[c.to_user]
            .iter()
            .enumerate()
            .filter_map(|(r, s)| s.map(|p| (r, p)))
            .collect()
    } else {
        Vec::new()
    };
    let name = |r: usize| format!("u{}/r{r}", c.to_user);
    let is_request = c.kind == "iq" && matches!(t, "get" | "set");
    if let Some(res) = c.to_resource {
        if sessions.iter().any(|(r, _)| *r == res) {
            return ([name(res)].into(), false);
        }
        match c.kind {
            "message" if matches!(t, "chat" | "normal") => {}
            "message" if t == "groupchat" => return (BTreeSet::new(), true),
            "iq" if is_request => return (BTreeSet::new(), true),
            _ => return (BTreeSet::new(), false),
        }
    }
    match c.kind {
        // RFC 6121 §8.5.2.1.1: an error is ignored, a groupchat refused, a
        // headline goes to every resource of non-negative priority.
        "message" if t == "error" => (BTreeSet::new(), false),
        "message" if t == "groupchat" => (BTreeSet::new(), true),
        "message" if t == "headline" => (
            sessions
                .iter()
                .filter(|(_, p)| p.is_some_and(|p| p >= 0))
                .map(|(r, _)| name(*r))
                .collect(),
            false,
        ),
        "message" => {
            let best = sessions
                .iter()
                .filter_map(|(_, p)| *p)
                .filter(|p| *p >= 0)
                .max();
            match best {
                Some(b) => (
                    sessions
                        .iter()
                        .filter(|(_, p)| *p == Some(b))
                        .map(|(r, _)| name(*r))
                        .collect(),
                    false,
                ),
                None => (BTreeSet::new(), !matches!(t, "headline" | "error")),
            }
        }
        // No IQ handler is registered: every request is refused.
        "iq" => (BTreeSet::new(), is_request),
        _ => (
            sessions
                .iter()
                .filter(|(_, p)| p.is_some())
                .map(|(r, _)| name(*r))
                .collect(),
            false,
        ),
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: Server,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = rt.block_on(async {
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        config.listeners = Vec::new();
        let server = Server::start(
            config,
            ServerOptions::in_memory().node_name("routing-model"),
        )
        .await
        .unwrap();
        for u in ["u0", "u1", "u2", "sender"] {
            server.register(u, "localhost", "pw").await.unwrap();
        }
        server
    });
    Fixture {
        rt,
        server,
        _dir: dir,
    }
}

async fn add_session(
    server: &Server,
    jid: &str,
    name: &str,
    tx: &mpsc::UnboundedSender<(String, Element)>,
) -> (u64, ActorRef<C2sMsg>) {
    let jid = FullJid::new(jid).unwrap();
    let (actor, _) = Actor::spawn(None, Fake, (name.to_owned(), tx.clone()))
        .await
        .unwrap();
    let sid = server.sessions().next_sid();
    let local = LocalSession {
        actor: actor.clone(),
        queued: Arc::new(AtomicU32::new(0)),
        jid: jid.clone(),
    };
    server
        .sessions()
        .register(&jid, sid, local, 100)
        .await
        .unwrap();
    (sid, actor)
}

async fn run(server: &Server, c: &Case) -> (BTreeSet<String>, bool) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut added = Vec::new();
    added.push((
        "sender".to_owned(),
        add_session(server, "sender@localhost/x", "sender", &tx).await,
    ));
    for (u, resources) in c.sessions.iter().enumerate() {
        for (r, s) in resources.iter().enumerate() {
            let Some(priority) = s else { continue };
            let user = format!("u{u}");
            let (sid, actor) = add_session(
                server,
                &format!("{user}@localhost/r{r}"),
                &format!("{user}/r{r}"),
                &tx,
            )
            .await;
            server
                .sessions()
                .set_priority("localhost", &user, sid, *priority)
                .await;
            added.push((user, (sid, actor)));
        }
    }
    let to = match c.to_resource {
        Some(r) => format!("u{}@localhost/r{r}", c.to_user),
        None => format!("u{}@localhost", c.to_user),
    };
    let mut stanza = Element::builder(c.kind, ns::JABBER_CLIENT)
        .attr("from", "sender@localhost/x")
        .attr("to", to)
        .attr("id", "probe")
        .attr_opt("type", c.stanza_type)
        .build();
    if c.kind == "iq" {
        stanza.append_child(Element::new("query", "urn:example:unknown"));
    }
    server.router().route(stanza).await;
    // A marker to the sender: it arrives after anything the probe caused
    // (one routing task, FIFO mailboxes; the sender's error is routed
    // before the marker).
    server
        .router()
        .route(
            Element::builder("message", ns::JABBER_CLIENT)
                .attr("from", "sender@localhost/x")
                .attr("to", "sender@localhost/x")
                .attr("id", "marker")
                .build(),
        )
        .await;
    let mut got = BTreeSet::new();
    let mut bounced = false;
    loop {
        let (name, el) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("marker never came")
            .expect("channel open");
        if name == "sender" {
            if el.attr("id") == Some("marker") {
                break;
            }
            if el.attr("type") == Some("error") {
                bounced = true;
                continue;
            }
        }
        got.insert(name);
    }
    // Everything else was delivered before the marker only if it went to
    // the sender; give other mailboxes a moment to settle too.
    tokio::time::sleep(Duration::from_millis(5)).await;
    while let Ok((name, _)) = rx.try_recv() {
        got.insert(name);
    }
    for (user, (sid, actor)) in added {
        server.sessions().unregister("localhost", &user, sid).await;
        actor.stop(None);
    }
    (got, bounced)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn routing_matches_the_model(c in case()) {
        thread_local! {
            static F: Fixture = fixture();
        }
        let (got, bounced) = F.with(|f| f.rt.block_on(run(&f.server, &c)));
        let (want, want_bounce) = model(&c);
        prop_assert_eq!(got, want, "delivered to");
        prop_assert_eq!(bounced, want_bounce, "error to the sender");
    }
}
