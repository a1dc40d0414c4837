//! Interoperability with a client not written here: slixmpp (Debian's
//! `python3-slixmpp`) chats with the project's own client through a node
//! started in-process, over STARTTLS with SCRAM.
//!
//! `tests/interop/slixmpp_chat.py` logs in as alice, sends presence, waits
//! for bob's message, replies to it and sends one more; bob is
//! [`Client`]. The script prints what it saw as JSON lines, and the test
//! checks both directions, the bodies, and that the mechanism was SCRAM.
//!
//! These tests need `/usr/bin/python3` with slixmpp and fail (they do not
//! skip) without it: `apt-get install -y python3-slixmpp` (CI does).
//! The script's own traffic log is written to
//! `target/tmp/slixmpp-<test>.log`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use beamline::node::Node;
use beamline::xmpp::client::{Client, ClientConfig, TrustMode};
use beamline::xmpp::config::{Config, ListenerKind};
use beamline::xmpp::server::ServerOptions;
use beamline::xmpp::{BareJid, Element};
use serde_json::Value;
use support::free_port;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, timeout_at};

/// Debian's interpreter, where `python3-slixmpp` installs (not a pyenv
/// `python3` that may come first on PATH).
const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/slixmpp_chat.py");
const NS_CLIENT: &str = "jabber:client";

/// Everything in one test must be over by then (a loaded 2-core machine
/// needs a few seconds; a hang fails instead of blocking the run).
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// The script's own overall limit, below [`TEST_LIMIT`].
const SCRIPT_LIMIT_SECS: u32 = 60;

/// Panics, with what to install, unless slixmpp imports.
fn require_slixmpp() {
    let hint = "these interop tests need Debian's python3-slixmpp: \
                run `apt-get install -y --no-install-recommends python3-slixmpp` \
                (CI's .ci/run installs it)";
    match std::process::Command::new(PYTHON)
        .args(["-c", "import slixmpp"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{PYTHON} -c 'import slixmpp'` failed ({}): {}\n{hint}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run {PYTHON}: {e}\n{hint}"),
    }
}

/// A node named `name` (actor names are per process, so one per test) with
/// one host, `localhost`, a STARTTLS-required c2s listener on a free port
/// and its data (and self-signed certificate) under `dir`.
async fn start_node(name: &str, dir: &Path, auth: &str) -> Node {
    let toml = format!(
        "hosts = [\"localhost\"]\n\
         [[listeners]]\nkind = \"c2s\"\nport = {}\nstarttls = \"required\"\n\
         {auth}\n\
         [storage]\ndata_dir = {:?}\n",
        free_port(),
        dir.join("data").display().to_string()
    );
    let config = Config::from_str(&toml, "interop test").expect("valid config");
    let options = ServerOptions::default().node_name(format!("interop-{name}@localhost"));
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
    node
}

/// The script as a child process: killed (by PID) when dropped.
struct Script {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every JSON line read so far.
    events: Vec<Value>,
    log: PathBuf,
}

impl Script {
    fn spawn(name: &str, cert: &Path, server: std::net::SocketAddr, channel_binding: &str) -> Self {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("slixmpp-{name}.log"));
        let stderr = std::fs::File::create(&log).expect("create the script's log");
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .args(["--jid", "alice@localhost", "--peer", "bob@localhost"])
            .arg("--server")
            .arg(server.to_string())
            .arg("--ca-cert")
            .arg(cert)
            .args(["--channel-binding", channel_binding])
            .args(["--expect", "hello from beamline ✓"])
            .args(["--reply", "reply from slixmpp <&>"])
            .args(["--send", "one more from slixmpp"])
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

    /// What went wrong, with the script's output so far, for a panic.
    fn report(&self, what: &str) -> String {
        let traffic = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = traffic.lines().rev().take(40).collect();
        format!(
            "{what}\nscript events: {:#?}\nlast lines of {}:\n{}",
            self.events,
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// Reads lines until an event named `event` (returned), the end of
    /// the output, or `deadline`.
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

    /// Reads the rest of the output and waits for the exit; kills the
    /// script (by PID) if it is not over by `deadline`.
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

    fn event(&self, name: &str) -> Option<&Value> {
        self.events.iter().find(|v| v["event"] == name)
    }
}

/// The chat messages with a body that `bob` receives, until `n` of them or
/// `deadline`; other stanzas (presence) are skipped.
async fn receive_messages(bob: &mut Client, n: usize, deadline: Instant) -> Vec<Element> {
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match bob.recv_timeout(left).await {
            Ok(el) if el.is("message", NS_CLIENT) && el.child_text("body", NS_CLIENT).is_some() => {
                got.push(el);
            }
            Ok(_) => {}
            Err(e) => panic!(
                "bob got {} of {n} messages: {e}; so far: {:?}",
                got.len(),
                got.iter().map(|m| m.to_string()).collect::<Vec<_>>()
            ),
        }
    }
    got
}

/// One chat between slixmpp (alice) and the project's client (bob) on a
/// node with `auth` as its `[auth]` section; returns the mechanism
/// slixmpp authenticated with.
async fn chat(name: &str, auth: &str, channel_binding: &str) -> String {
    require_slixmpp();
    let deadline = Instant::now() + TEST_LIMIT;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(name, dir.path(), auth).await;
    let addr = node
        .server()
        .listener_addr(ListenerKind::C2s)
        .expect("c2s listener");
    let cert = dir.path().join("data/tls/cert.pem");
    assert!(cert.is_file(), "no self-signed certificate at {cert:?}");

    let bob_jid = BareJid::new("bob@localhost").expect("JID");
    let mut bob = Client::connect(
        ClientConfig::new(bob_jid, "own-pass-2", addr).with_trust(TrustMode::AcceptAnyForTests),
    )
    .await
    .expect("bob logs in");
    bob.send_presence().await.expect("bob's presence");

    let mut script = Script::spawn(name, &cert, addr, channel_binding);
    // `ready`: logged in, presence sent and handled (an IQ round trip
    // after it), so alice's bare JID now reaches her.
    let ready = script.wait_for("ready", deadline).await;
    assert_eq!(ready["tls"], "TLSv1.3", "{ready}");
    let alice_full = ready["jid"].as_str().expect("jid").to_owned();
    assert!(alice_full.starts_with("alice@localhost/"), "{ready}");

    bob.send_message("alice@localhost", "hello from beamline ✓")
        .await
        .expect("bob sends");
    let got = receive_messages(&mut bob, 2, deadline).await;
    script.finish(deadline).await;

    // slixmpp -> beamline: the reply and the fresh message, from alice's
    // full JID, with their bodies intact (escaping included).
    let mut bodies: Vec<String> = got
        .iter()
        .map(|m| {
            assert_eq!(m.attr("from"), Some(alice_full.as_str()), "{m}");
            assert_eq!(m.attr("type"), Some("chat"), "{m}");
            m.child_text("body", NS_CLIENT).unwrap_or_default()
        })
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["one more from slixmpp", "reply from slixmpp <&>"]);

    // beamline -> slixmpp: bob's message as slixmpp parsed it.
    let seen = script
        .event("message")
        .unwrap_or_else(|| panic!("{}", script.report("slixmpp saw no message")));
    assert_eq!(seen["body"], "hello from beamline ✓", "{seen}");
    assert_eq!(seen["type"], "chat", "{seen}");
    let from = seen["from"].as_str().unwrap_or_default();
    assert!(from.starts_with("bob@localhost/"), "{seen}");
    assert!(
        script.event("done").is_some(),
        "{}",
        script.report("no `done`")
    );

    let mechanism = script
        .event("auth")
        .and_then(|v| v["mechanism"].as_str())
        .unwrap_or_else(|| panic!("{}", script.report("no `auth` event")))
        .to_owned();
    assert!(
        mechanism.starts_with("SCRAM-"),
        "slixmpp authenticated with {mechanism}, not SCRAM"
    );
    assert_eq!(ready["mechanism"], mechanism.as_str());

    bob.close().await.expect("bob closes");
    node.stop(Duration::from_secs(10))
        .await
        .expect("node stops");
    mechanism
}

/// The default configuration (every mechanism, -PLUS included): slixmpp
/// without channel binding (gs2 flag `n`) picks the strongest SCRAM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slixmpp_chats_with_the_project_client_over_starttls_and_scram() {
    let mechanism = chat("default", "", "none").await;
    assert_eq!(mechanism, "SCRAM-SHA-512");
}

/// With the -PLUS mechanisms left out of `auth.mechanisms`, slixmpp as it
/// comes (TLS binding data at hand, so gs2 flag `y`) logs in: RFC 5802 §6
/// has the server refuse `y` only when it offered -PLUS. The project's
/// client sends `y` here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slixmpp_logs_in_with_flag_y_when_no_plus_mechanism_is_offered() {
    let auth = "[auth]\nmechanisms = [\"SCRAM-SHA-512\", \"SCRAM-SHA-256\", \"SCRAM-SHA-1\"]";
    let mechanism = chat("no-plus", auth, "slixmpp").await;
    assert_eq!(mechanism, "SCRAM-SHA-512");
}
