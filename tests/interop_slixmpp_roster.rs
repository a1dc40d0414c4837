//! Interoperability of the roster and presence modules with slixmpp
//! (Debian's `python3-slixmpp`): slixmpp (alice) adds the project's client
//! (bob) to its roster, asks for his presence, answers his request with
//! its own roster logic, sees his presence, and at its next login finds
//! the roster as it was and a message bob sent while it was offline
//! (`mod_offline`).
//!
//! `tests/interop/slixmpp_roster.py` prints what it saw as JSON lines.
//! Like `interop_slixmpp.rs`, this test needs `/usr/bin/python3` with
//! slixmpp and fails without it. The script's traffic log is written to
//! `target/tmp/slixmpp-roster-<phase>.log`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use beamline::node::Node;
use beamline::xmpp::client::{Client, ClientConfig, TrustMode};
use beamline::xmpp::config::{Config, ListenerKind};
use beamline::xmpp::server::ServerOptions;
use beamline::xmpp::{BareJid, Element, ns};
use serde_json::Value;
use support::free_port;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, timeout_at};

const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/slixmpp_roster.py"
);
const TEST_LIMIT: Duration = Duration::from_secs(120);
const SCRIPT_LIMIT_SECS: u32 = 40;

fn require_slixmpp() {
    match std::process::Command::new(PYTHON)
        .args(["-c", "import slixmpp"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "this interop test needs Debian's python3-slixmpp \
             (`apt-get install -y --no-install-recommends python3-slixmpp`): {other:?}"
        ),
    }
}

/// The script as a child process, killed (by PID) when dropped.
struct Script {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    events: Vec<Value>,
    log: PathBuf,
}

impl Script {
    fn spawn(phase: &str, cert: &Path, server: std::net::SocketAddr, extra: &[&str]) -> Self {
        let log =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("slixmpp-roster-{phase}.log"));
        let stderr = std::fs::File::create(&log).expect("create the script's log");
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .args(["--jid", "alice@localhost", "--peer", "bob@localhost"])
            .args(["--phase", phase])
            .arg("--server")
            .arg(server.to_string())
            .arg("--ca-cert")
            .arg(cert)
            .args(extra)
            .args(["--timeout", &SCRIPT_LIMIT_SECS.to_string(), "--debug"])
            .env("XMPP_PASSWORD", "slix-pass-1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PYTHON} {SCRIPT}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        Script {
            child,
            lines: BufReader::new(stdout).lines(),
            events: Vec::new(),
            log,
        }
    }

    fn report(&self, what: &str) -> String {
        let traffic = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = traffic.lines().rev().take(60).collect();
        format!(
            "{what}\nscript events: {:#?}\nlast lines of {}:\n{}",
            self.events,
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// Reads lines until an event named `event` (returned).
    async fn wait_for(&mut self, event: &str, deadline: Instant) -> Value {
        loop {
            let line = match timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => {
                    panic!("{}", self.report(&format!("script ended before `{event}`")))
                }
                Ok(Err(e)) => panic!("{}", self.report(&format!("reading the script: {e}"))),
                Err(_) => panic!(
                    "{}",
                    self.report(&format!("timed out waiting for `{event}`"))
                ),
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                panic!("{}", self.report(&format!("not a JSON line: {line}")));
            };
            self.events.push(v.clone());
            if v["event"] == "error" {
                panic!("{}", self.report("the script failed"));
            }
            if v["event"] == event {
                return v;
            }
        }
    }

    /// Reads the rest and waits for a successful exit.
    async fn finish(&mut self, deadline: Instant) {
        let rest = async {
            while let Some(line) = self.lines.next_line().await? {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    self.events.push(v);
                }
            }
            self.child.wait().await
        };
        match timeout_at(deadline, rest).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => panic!("{}", self.report(&format!("script exited with {status}"))),
            Ok(Err(e)) => panic!("{}", self.report(&format!("waiting for the script: {e}"))),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                panic!(
                    "{}",
                    self.report("the script did not exit in time (killed)")
                );
            }
        }
    }

    fn all(&self, name: &str) -> Vec<&Value> {
        self.events.iter().filter(|v| v["event"] == name).collect()
    }
}

fn presence(to: &str, kind: &str) -> Element {
    Element::builder("presence", ns::JABBER_CLIENT)
        .attr("to", to)
        .attr("type", kind)
        .build()
}

/// Reads bob's stanzas until one matches `pred`.
async fn bob_waits(
    bob: &mut Client,
    what: &str,
    deadline: Instant,
    pred: impl Fn(&Element) -> bool,
) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match bob.recv_timeout(left).await {
            Ok(el) if pred(&el) => return,
            Ok(_) => {}
            Err(e) => panic!("bob never got {what}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slixmpp_subscribes_sees_presence_and_gets_offline_message() {
    require_slixmpp();
    let deadline = Instant::now() + TEST_LIMIT;
    let dir = tempfile::tempdir().expect("tempdir");
    // The default modules: roster, presence, offline, ...
    let toml = format!(
        "hosts = [\"localhost\"]\n\
         [[listeners]]\nkind = \"c2s\"\nport = {}\nstarttls = \"required\"\n\
         [storage]\ndata_dir = {:?}\n",
        free_port(),
        dir.path().join("data").display().to_string()
    );
    let config = Config::from_str(&toml, "interop roster test").expect("valid config");
    let options = ServerOptions::default().node_name("interop-roster@localhost");
    let node = Node::start(config, options).await.expect("start node");
    let server = node.server();
    server
        .register("alice", "localhost", "slix-pass-1")
        .await
        .expect("register alice");
    server
        .register("bob", "localhost", "own-pass-2")
        .await
        .expect("register bob");
    let addr = server.listener_addr(ListenerKind::C2s).expect("c2s");
    let cert = dir.path().join("data/tls/cert.pem");

    let mut bob = Client::connect(
        ClientConfig::new(
            BareJid::new("bob@localhost").expect("JID"),
            "own-pass-2",
            addr,
        )
        .with_trust(TrustMode::AcceptAnyForTests)
        .with_resource("desk"),
    )
    .await
    .expect("bob logs in");
    let get = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .append(Element::new("query", ns::ROSTER))
        .build();
    bob.iq(get).await.expect("bob's roster");
    bob.send_presence().await.expect("bob's presence");

    // Phase 1: slixmpp adds bob and asks; bob approves and asks back;
    // slixmpp's roster logic approves.
    let mut script = Script::spawn("subscribe", &cert, addr, &[]);
    let ready = script.wait_for("ready", deadline).await;
    assert_eq!(ready["rosterver"], true, "{ready}");
    bob_waits(&mut bob, "alice's request", deadline, |el| {
        el.attr("type") == Some("subscribe") && el.attr("from") == Some("alice@localhost")
    })
    .await;
    bob.send(&presence("alice@localhost", "subscribed"))
        .await
        .expect("bob approves");
    bob.send(&presence("alice@localhost", "subscribe"))
        .await
        .expect("bob asks");
    bob_waits(&mut bob, "alice's approval", deadline, |el| {
        el.attr("type") == Some("subscribed") && el.attr("from") == Some("alice@localhost")
    })
    .await;
    script.wait_for("done", deadline).await;
    script.finish(deadline).await;

    let presences: Vec<&str> = script
        .all("presence")
        .iter()
        .filter_map(|v| v["from"].as_str())
        .collect();
    assert!(
        presences.contains(&"bob@localhost/desk"),
        "slixmpp never saw bob's presence: {presences:?}"
    );
    let subscribed = script.all("subscribed");
    assert!(
        subscribed.iter().any(|v| v["from"] == "bob@localhost"),
        "{}",
        script.report("no subscribed from bob")
    );
    let roster = script.all("roster");
    let last = roster.last().expect("a roster event");
    let item = &last["items"]["bob@localhost"];
    assert_eq!(item["subscription"], "both", "{last}");
    assert_eq!(item["name"], "Bob", "{last}");
    assert_eq!(item["groups"], serde_json::json!(["Friends"]), "{last}");

    // alice is gone: bob sees her unavailable, and writes to her.
    bob_waits(&mut bob, "alice unavailable", deadline, |el| {
        el.attr("type") == Some("unavailable")
            && el
                .attr("from")
                .is_some_and(|f| f.starts_with("alice@localhost/"))
    })
    .await;
    bob.send_message("alice@localhost", "while you were away")
        .await
        .expect("bob writes");

    // Phase 2: the roster is as it was, the message waits, bob's presence
    // comes with the probe answer.
    let mut script = Script::spawn("offline", &cert, addr, &["--expect", "while you were away"]);
    let ready = script.wait_for("ready", deadline).await;
    assert!(ready["jid"].as_str().is_some(), "{ready}");
    let roster = script.wait_for("roster", deadline).await;
    assert_eq!(
        roster["items"]["bob@localhost"]["subscription"], "both",
        "{roster}"
    );
    script.wait_for("done", deadline).await;
    script.finish(deadline).await;
    let msg = script.all("message");
    let msg = msg.first().expect("the offline message");
    assert_eq!(
        msg["from"]
            .as_str()
            .map(|f| f.starts_with("bob@localhost/")),
        Some(true),
        "{msg}"
    );
    assert_eq!(msg["delayed"], true, "{msg}");

    bob.close().await.expect("bob closes");
    node.stop(Duration::from_secs(10))
        .await
        .expect("node stops");
}
