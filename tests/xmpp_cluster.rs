//! The XMPP server on a cluster of three `beamline serve` processes, as
//! users see it: accounts registered on one node log in on any; users on
//! different nodes chat in both directions with every message in order;
//! when a node is killed (-9) the others go on, its sessions leave their
//! tables, and its users log in again elsewhere at once; a restarted node
//! rejoins by itself; a session replaced from another node is closed with
//! `conflict`; modules started and stopped at runtime follow on every node;
//! what modules keep for a user (vCard, private XML, roster, block list)
//! is the same through every node, a block made through one node holds on
//! the others, and every node lists the same disco features.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use beamline::xmpp::Element;
use beamline::xmpp::client::{Client, ClientConfig, TlsMode, TrustMode};
use beamline::xmpp::jid::parse_bare;
use beamline::xmpp::ns;
use support::free_port;

fn beamline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_beamline"))
}

/// One `beamline serve` process, killed (by PID) on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node of the test cluster: its config file, ports and process.
struct TestNode {
    name: String,
    config: PathBuf,
    c2s: u16,
    cluster: u16,
    proc: Option<Proc>,
}

impl TestNode {
    fn start(&mut self) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = beamline()
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn beamline serve");
        self.proc = Some(Proc(child));
    }

    /// Sends `sig` (`STOP`, `CONT`) to the process, by PID.
    fn signal(&self, sig: &str) {
        let pid = self.proc.as_ref().expect("running").0.id();
        let status = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {pid}");
    }

    /// What the node logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> String {
        format!(
            "{}/xmpp-cluster-{}-{}.log",
            env!("CARGO_TARGET_TMPDIR"),
            self.name,
            self.c2s
        )
    }

    fn kill9(&mut self) {
        // Drop kills with SIGKILL and reaps.
        self.proc = None;
    }

    async fn ctl(&self, args: &[&str]) -> Output {
        let config = self.config.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let mut child = beamline()
                .arg("ctl")
                .arg("--config")
                .arg(&config)
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run beamline ctl");
            let _ = child.stdin.take().unwrap().write_all(b"");
            child.wait_with_output().expect("wait for ctl")
        })
        .await
        .unwrap()
    }

    /// `ctl ARGS` that must succeed; its output.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args).await;
        assert!(
            out.status.success(),
            "{}: ctl {args:?}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `cluster_sessions` counter (sessions in this node's table), or
    /// `None` when the node does not answer.
    async fn cluster_sessions(&self) -> Option<u64> {
        let out = self.ctl(&["stats"]).await;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("cluster_sessions "))
            .and_then(|v| v.trim().parse().ok())
    }

    fn login(&self, user: &str, resource: &str) -> ClientConfig {
        ClientConfig::new(
            parse_bare(&format!("{user}@localhost")).unwrap(),
            "secret",
            ([127, 0, 0, 1], self.c2s).into(),
        )
        .with_resource(resource)
        .with_tls(TlsMode::StartTls)
        .with_trust(TrustMode::AcceptAnyForTests)
    }
}

/// One three-node cluster at a time: seven clusters of three processes
/// starting together on two cores made a node miss its join now and then.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Polls `f` every 100 ms until it holds; panics after `timeout`.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node `name` serving `hosts`, with its config under `dir`, joining
/// through the cluster port `seed` (none: the first node); not started.
fn node_config(dir: &Path, name: &str, hosts: &str, seed: Option<u16>) -> TestNode {
    let c2s = free_port();
    let cluster = free_port();
    let data = dir.join(name);
    let seeds = seed.map_or_else(String::new, |p| format!("\"127.0.0.1:{p}\""));
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "hosts = [{hosts}]\n\
             [[listeners]]\nkind = \"c2s\"\nport = {c2s}\nstarttls = \"optional\"\n\
             [storage]\ndata_dir = {:?}\n\
             [cluster]\nnode_name = \"{name}\"\ncookie = \"test-cookie\"\n\
             listen = \"127.0.0.1:{cluster}\"\nseeds = [{seeds}]\n",
            data.display().to_string(),
        ),
    )
    .unwrap();
    TestNode {
        name: name.to_owned(),
        config,
        c2s,
        cluster,
        proc: None,
    }
}

/// Three nodes under `dir` (the second and third join through the
/// first), started, each seeing the two others.
async fn three_nodes(dir: &Path, prefix: &str) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..3 {
        let seed = nodes.first().map(|n| n.cluster);
        let mut n = node_config(dir, &format!("{prefix}{}", i + 1), "\"localhost\"", seed);
        n.start();
        nodes.push(n);
    }
    for n in &nodes {
        let others: Vec<&str> = nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| o.name.as_str())
            .collect();
        let want = format!("cluster peers up: [{}]", others.join(", "));
        wait_for(
            &format!("{} sees the others", n.name),
            Duration::from_secs(60),
            || async {
                let out = n.ctl(&["status"]).await;
                String::from_utf8_lossy(&out.stdout).contains(&want)
            },
        )
        .await;
    }
    nodes
}

fn body_of(el: &Element) -> Option<String> {
    if el.name() != "message" {
        return None;
    }
    el.child_text("body", ns::JABBER_CLIENT)
}

/// A logged-in client and the stanzas it read but nobody asked for yet.
struct User {
    c: Client,
    unread: Vec<Element>,
}

impl User {
    async fn login(node: &TestNode, user: &str, resource: &str) -> User {
        let c = Client::connect(node.login(user, resource))
            .await
            .unwrap_or_else(|e| panic!("{user}/{resource} logs in on {}: {e}", node.name));
        User {
            c,
            unread: Vec::new(),
        }
    }

    fn jid(&self) -> String {
        self.c.jid().to_string()
    }

    /// The first stanza (kept or new) that `f` accepts; the others are
    /// kept for later.
    async fn next_where(&mut self, what: &str, f: impl Fn(&Element) -> bool) -> Element {
        if let Some(i) = self.unread.iter().position(&f) {
            return self.unread.remove(i);
        }
        loop {
            let el = self
                .c
                .recv_timeout(Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("{} waited for {what}: {e}", self.jid()));
            if f(&el) {
                return el;
            }
            self.unread.push(el);
        }
    }

    /// The next `n` message bodies from `from`, in arrival order.
    async fn bodies(&mut self, from: &str, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let el = self
                .next_where(&format!("message {i} from {from}"), |el| {
                    el.attr("from") == Some(from) && body_of(el).is_some()
                })
                .await;
            out.extend(body_of(&el));
        }
        out
    }

    /// The next presence from `from` of `kind` (`None`: available).
    async fn presence(&mut self, from: &str, kind: Option<&str>) -> Element {
        self.next_where(&format!("presence {kind:?} from {from}"), |el| {
            el.name() == "presence" && el.attr("from") == Some(from) && el.attr("type") == kind
        })
        .await
    }

    async fn send_presence(&mut self, to: Option<&str>, kind: Option<&str>) {
        let mut p = Element::builder("presence", ns::JABBER_CLIENT);
        if let Some(to) = to {
            p = p.attr("to", to);
        }
        if let Some(kind) = kind {
            p = p.attr("type", kind);
        }
        self.c.send(&p.build()).await.unwrap();
    }
}

/// One round of chat: `a` and `b` each send `n` messages to the other,
/// then each checks it got exactly the other's, in order.
async fn chat_round(a: &mut User, b: &mut User, tag: &str, n: usize) {
    let (ja, jb) = (a.jid(), b.jid());
    for i in 0..n {
        a.c.send_message(&jb, &format!("{tag} a{i}")).await.unwrap();
        b.c.send_message(&ja, &format!("{tag} b{i}")).await.unwrap();
    }
    let want_a: Vec<String> = (0..n).map(|i| format!("{tag} a{i}")).collect();
    let want_b: Vec<String> = (0..n).map(|i| format!("{tag} b{i}")).collect();
    assert_eq!(b.bodies(&ja, n).await, want_a, "{ja} -> {jb} in order");
    assert_eq!(a.bodies(&jb, n).await, want_b, "{jb} -> {ja} in order");
}

/// `a` and `b` subscribe to each other's presence (both approve).
async fn befriend(a: &mut User, b: &mut User) {
    let (ja, jb) = (a.jid(), b.jid());
    let (ba, bb) = (bare(&ja), bare(&jb));
    a.send_presence(Some(&bb), Some("subscribe")).await;
    b.presence(&ba, Some("subscribe")).await;
    b.send_presence(Some(&ba), Some("subscribed")).await;
    b.send_presence(Some(&ba), Some("subscribe")).await;
    a.presence(&bb, Some("subscribe")).await;
    a.send_presence(Some(&bb), Some("subscribed")).await;
    // Each now sees the other's available presence.
    a.presence(&jb, None).await;
    b.presence(&ja, None).await;
}

fn bare(full: &str) -> String {
    full.split('/').next().unwrap_or(full).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_three_nodes_chat_and_survive_a_killed_node() {
    let _one_cluster_at_a_time = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut nodes = three_nodes(dir.path(), "xa").await;
    eprintln!("three nodes up in {:?}", started.elapsed());

    // Accounts registered through one node log in on every node.
    for user in ["alice", "bob", "carol"] {
        nodes[0]
            .ok(&["register", user, "localhost", "secret"])
            .await;
    }
    let mut alice = User::login(&nodes[0], "alice", "r").await;
    let mut bob = User::login(&nodes[1], "bob", "r").await;
    let mut carol = User::login(&nodes[2], "carol", "r").await;
    for u in [&mut alice, &mut bob, &mut carol] {
        u.send_presence(None, None).await;
    }
    // Every node sees every session.
    for n in &nodes {
        wait_for(
            &format!("{} sees 3 sessions", n.name),
            Duration::from_secs(10),
            || async { n.cluster_sessions().await == Some(3) },
        )
        .await;
    }
    // Alice (node 1) and carol (node 3) become contacts across nodes.
    befriend(&mut alice, &mut carol).await;

    // Both directions, three pairs of nodes, in order.
    let t = Instant::now();
    chat_round(&mut alice, &mut bob, "ab", 200).await;
    eprintln!("400 messages between two nodes in {:?}", t.elapsed());
    chat_round(&mut bob, &mut carol, "bc", 100).await;
    chat_round(&mut carol, &mut alice, "ca", 100).await;
    // To the bare JID too (the available resource gets it).
    alice
        .c
        .send_message("carol@localhost", "bare")
        .await
        .unwrap();
    assert_eq!(carol.bodies("alice@localhost/r", 1).await, ["bare"]);

    // kill -9 of carol's node while alice and bob chat.
    chat_round(&mut alice, &mut bob, "before", 50).await;
    let killed = Instant::now();
    nodes[2].kill9();
    drop(carol);
    chat_round(&mut alice, &mut bob, "during", 100).await;
    for n in &nodes[..2] {
        wait_for(
            &format!("{} drops the lost node's session", n.name),
            Duration::from_secs(10),
            || async { n.cluster_sessions().await == Some(2) },
        )
        .await;
        eprintln!(
            "{}: lost session gone by {:?} after the kill",
            n.name,
            killed.elapsed()
        );
    }
    // Her contact sees her go offline (as if she had logged out).
    alice
        .presence("carol@localhost/r", Some("unavailable"))
        .await;
    eprintln!(
        "alice saw carol unavailable {:?} after the kill",
        killed.elapsed()
    );
    // A message to her meanwhile is kept offline (no error comes back).
    alice
        .c
        .send_message("carol@localhost", "while you were away")
        .await
        .unwrap();

    // Carol logs in again on another node at once, gets the message kept
    // for her, and chats.
    let mut carol = User::login(&nodes[1], "carol", "r").await;
    carol.send_presence(None, None).await;
    assert_eq!(
        carol.bodies("alice@localhost/r", 1).await,
        ["while you were away"]
    );
    alice.presence("carol@localhost/r", None).await;
    chat_round(&mut carol, &mut alice, "again", 50).await;
    chat_round(&mut alice, &mut bob, "after", 50).await;
    assert!(
        !alice.unread.iter().any(|e| e.attr("type") == Some("error")),
        "alice got errors: {:?}",
        alice.unread
    );

    // The killed node comes back (same config) and rejoins by itself.
    nodes[2].start();
    let n3 = &nodes[2];
    wait_for(
        "the restarted node sees the others",
        Duration::from_secs(60),
        || async {
            let out = n3.ctl(&["status"]).await;
            String::from_utf8_lossy(&out.stdout).contains("cluster peers up: [xa1, xa2]")
        },
    )
    .await;
    wait_for(
        "the restarted node has the cluster's sessions",
        Duration::from_secs(10),
        || async { n3.cluster_sessions().await == Some(3) },
    )
    .await;
    let mut bob2 = User::login(&nodes[2], "bob", "other").await;
    bob2.send_presence(None, None).await;
    chat_round(&mut bob2, &mut carol, "back", 50).await;

    for u in [alice, bob, carol, bob2] {
        let _ = u.c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_sessions_and_modules_reach_every_node() {
    let _one_cluster_at_a_time = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), "xb").await;
    nodes[1]
        .ok(&["register", "erin", "localhost", "secret"])
        .await;

    // The same full JID on another node replaces the first session.
    let mut first = Client::connect(nodes[0].login("erin", "desk"))
        .await
        .unwrap();
    first.send_presence().await.unwrap();
    wait_for(
        "erin's session everywhere",
        Duration::from_secs(10),
        || async { nodes[2].cluster_sessions().await == Some(1) },
    )
    .await;
    let mut second = Client::connect(nodes[2].login("erin", "desk"))
        .await
        .unwrap();
    let err = loop {
        match first.recv_timeout(Duration::from_secs(10)).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(
        err.stream_error().map(|e| e.condition.name()),
        Some("conflict"),
        "{err:?}"
    );
    for n in &nodes {
        wait_for(
            &format!("{} keeps one session of erin", n.name),
            Duration::from_secs(10),
            || async { n.cluster_sessions().await == Some(1) },
        )
        .await;
    }
    // An admin's kick on another node reaches it.
    let out = nodes[0]
        .ok(&["kick", "erin@localhost", "--reason", "bye"])
        .await;
    assert!(out.contains("Kicked 1 session"), "{out}");
    let err = loop {
        match second.recv_timeout(Duration::from_secs(10)).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(
        err.stream_error().map(|e| e.condition.name()),
        Some("policy-violation"),
        "{err:?}"
    );

    // A module stopped through one node stops on all; started again with
    // options, it runs with them everywhere.
    nodes[0].ok(&["stop-module", "mod_version"]).await;
    for n in &nodes {
        let m = n.ok(&["modules", "localhost"]).await;
        assert!(!m.contains("mod_version"), "{}: {m}", n.name);
    }
    nodes[2]
        .ok(&[
            "start-module",
            "mod_version",
            "--options",
            r#"{"show_os": true}"#,
        ])
        .await;
    for n in &nodes {
        let m = n.ok(&["modules", "localhost"]).await;
        assert!(
            m.contains(r#"mod_version {"show_os":true}"#),
            "{}: {m}",
            n.name
        );
    }

    // A node configured with other hosts joins, and both sides say so in
    // their logs (every node must read the same configuration).
    let mut odd = node_config(
        dir.path(),
        "xb9",
        "\"other.example\"",
        Some(nodes[0].cluster),
    );
    odd.start();
    let said = "serves other hosts than this node";
    wait_for(
        "both logs name the hosts mismatch",
        Duration::from_secs(30),
        || async { odd.log().contains(said) && nodes[0].log().contains(said) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_dropped_then_merged_back_when_it_continues() {
    let _one_cluster_at_a_time = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), "xc").await;
    for user in ["frank", "grace"] {
        nodes[0]
            .ok(&["register", user, "localhost", "secret"])
            .await;
    }
    let mut frank = User::login(&nodes[0], "frank", "r").await;
    let mut grace = User::login(&nodes[2], "grace", "r").await;
    for u in [&mut frank, &mut grace] {
        u.send_presence(None, None).await;
    }
    befriend(&mut frank, &mut grace).await;
    chat_round(&mut frank, &mut grace, "warm", 20).await;

    // Grace's node stops answering: after the heartbeat timeout (3 s)
    // the others drop its sessions, and frank sees her go offline.
    let frozen = Instant::now();
    nodes[2].signal("STOP");
    frank
        .presence("grace@localhost/r", Some("unavailable"))
        .await;
    eprintln!("grace unavailable {:?} after SIGSTOP", frozen.elapsed());
    for n in &nodes[..2] {
        wait_for(
            &format!("{} drops the frozen node's session", n.name),
            Duration::from_secs(10),
            || async { n.cluster_sessions().await == Some(1) },
        )
        .await;
    }

    // It continues: it rejoins by itself, its session rows come back
    // everywhere, and grace (still connected) chats again.
    let cont = Instant::now();
    nodes[2].signal("CONT");
    for n in &nodes {
        wait_for(
            &format!("{} has both sessions again", n.name),
            Duration::from_secs(30),
            || async { n.cluster_sessions().await == Some(2) },
        )
        .await;
    }
    eprintln!("rows merged back {:?} after SIGCONT", cont.elapsed());
    // Frank is told her presence again (she sent nothing).
    frank.presence("grace@localhost/r", None).await;
    eprintln!(
        "frank saw grace available {:?} after SIGCONT",
        cont.elapsed()
    );
    chat_round(&mut frank, &mut grace, "thawed", 50).await;
    // Her node may have lost frank's node the same way (its connections
    // were cut) and then been the one to clean up: if she was told he went
    // offline, she was also told that he is back.
    let said: Vec<Option<&str>> = grace
        .unread
        .iter()
        .filter(|e| e.name() == "presence" && e.attr("from") == Some("frank@localhost/r"))
        .map(|e| e.attr("type"))
        .collect();
    eprintln!("grace was told of frank: {said:?}");
    if let Some(i) = said.iter().rposition(|t| *t == Some("unavailable")) {
        if !said[i..].contains(&None) {
            let from_frank =
                |e: &Element| e.name() == "presence" && e.attr("from") == Some("frank@localhost/r");
            grace.unread.retain(|e| !from_frank(e));
            grace.presence("frank@localhost/r", None).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_node_dies_and_exactly_one_survivor_tells_the_contacts() {
    let _one_cluster_at_a_time = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), "xd").await;
    for user in ["heidi", "ivan", "judy"] {
        nodes[1]
            .ok(&["register", user, "localhost", "secret"])
            .await;
    }
    // Heidi is on the seed (smallest name, the one that would clean up);
    // her contacts are on the two other nodes.
    let mut heidi = User::login(&nodes[0], "heidi", "r").await;
    let mut ivan = User::login(&nodes[1], "ivan", "r").await;
    let mut judy = User::login(&nodes[2], "judy", "r").await;
    for u in [&mut heidi, &mut ivan, &mut judy] {
        u.send_presence(None, None).await;
    }
    befriend(&mut heidi, &mut ivan).await;
    befriend(&mut heidi, &mut judy).await;
    // Whatever her node sent them before is in: then forget it.
    for u in [&mut ivan, &mut judy] {
        heidi.c.send_message(&u.jid(), "bye").await.unwrap();
        assert_eq!(u.bodies("heidi@localhost/r", 1).await, ["bye"]);
        u.unread
            .retain(|e| e.attr("from") != Some("heidi@localhost/r"));
    }

    nodes[0].kill9();
    drop(heidi);
    for u in [&mut ivan, &mut judy] {
        u.presence("heidi@localhost/r", Some("unavailable")).await;
    }
    // Told once, by one survivor: nothing more comes from her.
    ivan.c
        .send_message("judy@localhost/r", "sync")
        .await
        .unwrap();
    assert_eq!(judy.bodies("ivan@localhost/r", 1).await, ["sync"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    judy.c
        .send_message("ivan@localhost/r", "sync")
        .await
        .unwrap();
    assert_eq!(ivan.bodies("judy@localhost/r", 1).await, ["sync"]);
    for u in [&ivan, &judy] {
        let again = u
            .unread
            .iter()
            .filter(|e| e.attr("from") == Some("heidi@localhost/r"))
            .count();
        assert_eq!(again, 0, "{}: {:?}", u.jid(), u.unread);
    }
    // Messages to her go offline; she logs in on another node and gets
    // them, and the two survivors chat on.
    ivan.c
        .send_message("heidi@localhost", "are you there?")
        .await
        .unwrap();
    wait_for(
        "the lost session is gone",
        Duration::from_secs(10),
        || async { nodes[2].cluster_sessions().await == Some(2) },
    )
    .await;
    let mut heidi = User::login(&nodes[2], "heidi", "r").await;
    heidi.send_presence(None, None).await;
    assert_eq!(
        heidi.bodies("ivan@localhost/r", 1).await,
        ["are you there?"]
    );
    chat_round(&mut ivan, &mut judy, "on", 50).await;

    // The seed restarts with no seeds of its own: the others redial it.
    nodes[0].start();
    let n1 = &nodes[0];
    wait_for(
        "the restarted seed is back in the cluster",
        Duration::from_secs(60),
        || async {
            let out = n1.ctl(&["status"]).await;
            String::from_utf8_lossy(&out.stdout).contains("cluster peers up: [xd2, xd3]")
        },
    )
    .await;
    let mut heidi2 = User::login(&nodes[0], "heidi", "back").await;
    heidi2.send_presence(None, None).await;
    chat_round(&mut heidi2, &mut judy, "home", 20).await;

    // Judy's node is stopped the polite way (SIGTERM): her session gets
    // `system-shutdown`, and heidi hears she went offline once, from
    // judy's own session (the others see the node leave, with no rows of
    // it left to clean up).
    nodes[2].signal("TERM");
    let err = loop {
        match judy.c.recv_timeout(Duration::from_secs(10)).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(
        err.stream_error().map(|e| e.condition.name()),
        Some("system-shutdown"),
        "{err:?}"
    );
    heidi2
        .presence("judy@localhost/r", Some("unavailable"))
        .await;
    let n1 = &nodes[0];
    wait_for("judy's node left", Duration::from_secs(20), || async {
        let out = n1.ctl(&["status"]).await;
        String::from_utf8_lossy(&out.stdout).contains("cluster peers up: [xd2]")
    })
    .await;
    ivan.c
        .send_message("heidi@localhost/back", "sync")
        .await
        .unwrap();
    assert_eq!(heidi2.bodies("ivan@localhost/r", 1).await, ["sync"]);
    let again = heidi2
        .unread
        .iter()
        .filter(|e| {
            e.attr("from") == Some("judy@localhost/r") && e.attr("type") == Some("unavailable")
        })
        .count();
    assert_eq!(again, 0, "told twice: {:?}", heidi2.unread);
}

/// Parses an IQ written as XML (in the `jabber:client` namespace).
fn iq_xml(xml: &str) -> Element {
    Element::parse(xml.as_bytes()).unwrap_or_else(|| panic!("bad test XML: {xml}"))
}

/// Sends `xml` (an IQ) and returns the reply, which must be a result.
async fn iq_ok(u: &mut User, xml: &str) -> Element {
    let reply = u.c.iq(iq_xml(xml)).await.unwrap();
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}: {xml} -> {reply:?}",
        u.jid()
    );
    reply
}

/// The text of `<FN/>` in a vCard reply.
fn vcard_fn(reply: &Element) -> Option<String> {
    reply
        .get_child("vCard", ns::VCARD)
        .and_then(|v| v.child_text("FN", ns::VCARD))
}

/// The features of a disco#info reply, sorted.
fn features(reply: &Element) -> Vec<String> {
    let mut out: Vec<String> = reply
        .get_child("query", ns::DISCO_INFO)
        .map(|q| {
            q.children()
                .filter(|c| c.name() == "feature")
                .filter_map(|c| c.attr("var").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The JIDs of the items of a roster or block list reply's `<child/>`.
fn item_jids(reply: &Element, child: &str, child_ns: &str) -> Vec<String> {
    reply
        .get_child(child, child_ns)
        .map(|q| {
            q.children()
                .filter(|c| c.name() == "item")
                .filter_map(|c| c.attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

const GET_ROSTER: &str =
    "<iq xmlns='jabber:client' type='get'><query xmlns='jabber:iq:roster'/></iq>";
const GET_BLOCKLIST: &str =
    "<iq xmlns='jabber:client' type='get'><blocklist xmlns='urn:xmpp:blocking'/></iq>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vcard_private_and_roster_follow_the_user_to_every_node() {
    let _one_cluster_at_a_time = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), "xe").await;
    for user in ["alice", "bob", "carol"] {
        nodes[0]
            .ok(&["register", user, "localhost", "secret"])
            .await;
    }
    let mut alice = User::login(&nodes[0], "alice", "a").await;
    let mut bob = User::login(&nodes[1], "bob", "b").await;

    // vCard (XEP-0054): set on node 1, read by bob on node 2.
    iq_ok(
        &mut alice,
        "<iq xmlns='jabber:client' type='set'><vCard xmlns='vcard-temp'>\
         <FN>Alice Liddell</FN><NICKNAME>al</NICKNAME></vCard></iq>",
    )
    .await;
    let reply = iq_ok(
        &mut bob,
        "<iq xmlns='jabber:client' type='get' to='alice@localhost'>\
         <vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(vcard_fn(&reply).as_deref(), Some("Alice Liddell"));

    // Private XML storage (XEP-0049): set on node 1.
    iq_ok(
        &mut alice,
        "<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:private'>\
         <prefs xmlns='test:prefs'><color>blue</color></prefs></query></iq>",
    )
    .await;

    // Roster: an item set on node 1 (a resource on node 2 asked for the
    // roster first, so it is interested in pushes).
    let mut alice_b = User::login(&nodes[1], "alice", "b").await;
    iq_ok(&mut alice_b, GET_ROSTER).await;
    iq_ok(&mut alice, GET_ROSTER).await;
    iq_ok(
        &mut alice,
        "<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:roster'>\
         <item jid='carol@localhost' name='Carol'><group>Friends</group></item>\
         </query></iq>",
    )
    .await;
    // The setting resource gets the push (RFC 6121 §2.3.2).
    let push = alice
        .next_where("roster push on node 1", |el| {
            el.attr("type") == Some("set") && el.has_child("query", ns::ROSTER)
        })
        .await;
    assert_eq!(item_jids(&push, "query", ns::ROSTER), ["carol@localhost"]);

    // On node 2: the private data and the roster item are there.
    let reply = iq_ok(
        &mut alice_b,
        "<iq xmlns='jabber:client' type='get'><query xmlns='jabber:iq:private'>\
         <prefs xmlns='test:prefs'/></query></iq>",
    )
    .await;
    let color = reply
        .get_child("query", ns::PRIVATE)
        .and_then(|q| q.get_child("prefs", "test:prefs"))
        .and_then(|p| p.child_text("color", "test:prefs"));
    assert_eq!(color.as_deref(), Some("blue"), "{reply:?}");
    let reply = iq_ok(&mut alice_b, GET_ROSTER).await;
    assert_eq!(item_jids(&reply, "query", ns::ROSTER), ["carol@localhost"]);
    let item = reply
        .get_child("query", ns::ROSTER)
        .and_then(|q| q.children().next())
        .unwrap();
    assert_eq!(item.attr("name"), Some("Carol"));
    assert_eq!(
        item.child_text("group", ns::ROSTER).as_deref(),
        Some("Friends")
    );

    // Alice leaves node 1 and logs in on node 3: her vCard is there.
    alice.c.close().await.unwrap();
    let mut alice_c = User::login(&nodes[2], "alice", "c").await;
    let reply = iq_ok(
        &mut alice_c,
        "<iq xmlns='jabber:client' type='get'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(vcard_fn(&reply).as_deref(), Some("Alice Liddell"));
    let reply = iq_ok(&mut alice_c, GET_ROSTER).await;
    assert_eq!(item_jids(&reply, "query", ns::ROSTER), ["carol@localhost"]);

    for u in [alice_b, alice_c, bob] {
        let _ = u.c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_push_reaches_an_interested_resource_on_another_node() {
    let _one_cluster_at_a_time = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), "xg").await;
    nodes[0]
        .ok(&["register", "alice", "localhost", "secret"])
        .await;
    let mut alice = User::login(&nodes[0], "alice", "a").await;
    let mut alice_b = User::login(&nodes[1], "alice", "b").await;
    iq_ok(&mut alice_b, GET_ROSTER).await;
    iq_ok(&mut alice, GET_ROSTER).await;
    iq_ok(
        &mut alice,
        "<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:roster'>\
         <item jid='carol@localhost'/></query></iq>",
    )
    .await;
    let push = alice_b
        .next_where("roster push on node 2", |el| {
            el.attr("type") == Some("set") && el.has_child("query", ns::ROSTER)
        })
        .await;
    assert_eq!(item_jids(&push, "query", ns::ROSTER), ["carol@localhost"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_and_disco_agree_on_every_node() {
    let _one_cluster_at_a_time = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), "xf").await;
    for user in ["alice", "bob"] {
        nodes[0]
            .ok(&["register", user, "localhost", "secret"])
            .await;
    }
    let mut alice = User::login(&nodes[0], "alice", "a").await;
    let mut bob = User::login(&nodes[1], "bob", "b").await;
    let mut alice_c = User::login(&nodes[2], "alice", "c").await;
    for u in [&mut alice, &mut bob, &mut alice_c] {
        u.send_presence(None, None).await;
    }
    for n in &nodes {
        wait_for(
            &format!("{} sees 3 sessions", n.name),
            Duration::from_secs(10),
            || async { n.cluster_sessions().await == Some(3) },
        )
        .await;
    }
    // Node 3 has read her (empty) list before the block.
    let reply = iq_ok(&mut alice_c, GET_BLOCKLIST).await;
    assert!(item_jids(&reply, "blocklist", ns::BLOCKING).is_empty());

    // Alice blocks bob through node 1: both her resources get the push.
    iq_ok(
        &mut alice,
        "<iq xmlns='jabber:client' type='set'><block xmlns='urn:xmpp:blocking'>\
         <item jid='bob@localhost'/></block></iq>",
    )
    .await;
    for u in [&mut alice, &mut alice_c] {
        let push = u
            .next_where("block push", |el| {
                el.attr("type") == Some("set") && el.has_child("block", ns::BLOCKING)
            })
            .await;
        assert_eq!(item_jids(&push, "block", ns::BLOCKING), ["bob@localhost"]);
    }
    // Node 3 reads the new list.
    let reply = iq_ok(&mut alice_c, GET_BLOCKLIST).await;
    assert_eq!(
        item_jids(&reply, "blocklist", ns::BLOCKING),
        ["bob@localhost"]
    );

    // Bob (node 2) writes to each of her resources: refused with
    // service-unavailable (XEP-0191 §3.5), nothing delivered.
    for to in ["alice@localhost/a", "alice@localhost/c"] {
        bob.c.send_message(to, "blocked?").await.unwrap();
        let err = bob
            .next_where(&format!("error from {to}"), |el| {
                el.name() == "message" && el.attr("from") == Some(to)
            })
            .await;
        assert_eq!(err.attr("type"), Some("error"), "{err:?}");
        let e = err.get_child("error", ns::JABBER_CLIENT).unwrap();
        assert!(
            e.has_child("service-unavailable", ns::XMPP_STANZAS),
            "{err:?}"
        );
    }
    // Alice (node 3) writing to bob is refused with not-acceptable and
    // <blocked/> (§3.4).
    alice_c
        .c
        .send_message("bob@localhost/b", "hi bob")
        .await
        .unwrap();
    let err = alice_c
        .next_where("error from bob", |el| {
            el.name() == "message" && el.attr("from") == Some("bob@localhost/b")
        })
        .await;
    let e = err.get_child("error", ns::JABBER_CLIENT).unwrap();
    assert!(e.has_child("not-acceptable", ns::XMPP_STANZAS), "{err:?}");
    assert!(
        e.has_child("blocked", "urn:xmpp:blocking:errors"),
        "{err:?}"
    );

    // Unblocked through node 3: messages pass again both ways, and the
    // first ones that arrive are the new ones.
    iq_ok(
        &mut alice_c,
        "<iq xmlns='jabber:client' type='set'><unblock xmlns='urn:xmpp:blocking'>\
         <item jid='bob@localhost'/></unblock></iq>",
    )
    .await;
    for u in [&mut alice, &mut alice_c] {
        u.next_where("unblock push", |el| {
            el.attr("type") == Some("set") && el.has_child("unblock", ns::BLOCKING)
        })
        .await;
    }
    let reply = iq_ok(&mut alice, GET_BLOCKLIST).await;
    assert!(item_jids(&reply, "blocklist", ns::BLOCKING).is_empty());
    bob.c
        .send_message("alice@localhost/a", "again a")
        .await
        .unwrap();
    bob.c
        .send_message("alice@localhost/c", "again c")
        .await
        .unwrap();
    assert_eq!(alice.bodies("bob@localhost/b", 1).await, ["again a"]);
    assert_eq!(alice_c.bodies("bob@localhost/b", 1).await, ["again c"]);
    alice
        .c
        .send_message("bob@localhost/b", "hello bob")
        .await
        .unwrap();
    assert_eq!(bob.bodies("alice@localhost/a", 1).await, ["hello bob"]);

    // Disco: the server lists the same features through every node.
    const DISCO: &str = "<iq xmlns='jabber:client' type='get' to='localhost'>\
                         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
    let mut users = [alice, bob, alice_c];
    let mut seen = Vec::new();
    for u in users.iter_mut() {
        seen.push(features(&iq_ok(u, DISCO).await));
    }
    assert!(seen[0].iter().any(|f| f == ns::VERSION), "{:?}", seen[0]);
    assert!(seen[0].iter().any(|f| f == ns::BLOCKING), "{:?}", seen[0]);
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    // mod_version stopped through node 2: no node lists it any more, and
    // the rest is unchanged.
    nodes[1].ok(&["stop-module", "mod_version"]).await;
    let want: Vec<String> = seen[0]
        .iter()
        .filter(|f| *f != ns::VERSION)
        .cloned()
        .collect();
    for u in users.iter_mut() {
        assert_eq!(features(&iq_ok(u, DISCO).await), want, "{}", u.jid());
    }
    for u in users {
        let _ = u.c.close().await;
    }
}
