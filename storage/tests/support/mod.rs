//! Shared helpers for the replication tests (after the root package's
//! `tests/support`): start real node processes
//! (`beamline-storage-testnode`) on free ports, drive them with line
//! commands, poll for conditions with deadlines, and always kill what was
//! started (by PID, in `Drop`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Heartbeat timeout the test nodes run with (see `beamline-testnode`).
pub const HB_TIMEOUT: Duration = Duration::from_millis(2000);

#[path = "../../../tests/support/port.rs"]
mod port;
pub use port::free_port;

/// Polls `f` every 20 ms until it holds; panics with `what` after `timeout`.
/// Returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One node process.
pub struct TestNode {
    /// Node name.
    pub name: String,
    /// Listen port.
    pub port: u16,
    /// The first line it printed: `ready ADDR` or `joinerr ERROR`.
    pub first_line: String,
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
    events: Arc<Mutex<Vec<String>>>,
}

impl TestNode {
    /// Starts a node joining through `seeds` (ports).
    pub fn start(name: &str, port: u16, seeds: &[u16]) -> Self {
        Self::start_with(name, port, seeds, &[])
    }

    /// Starts a node with extra flags.
    pub fn start_with(name: &str, port: u16, seeds: &[u16], extra: &[&str]) -> Self {
        let seeds = seeds
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let log =
            std::fs::File::create(format!("{}/{name}-{port}.log", env!("CARGO_TARGET_TMPDIR")))
                .expect("create log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_beamline-storage-testnode"))
            .args(["--name", name, "--port", &port.to_string()])
            .args(["--seeds", &seeds])
            .args(extra)
            .env("RUST_LOG", "info,beamline_storage=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn beamline-storage-testnode");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, replies) = channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("event ") {
                    ev.lock().expect("events lock").push(line);
                } else if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = TestNode {
            name: name.to_string(),
            port,
            first_line: String::new(),
            child,
            stdin,
            replies,
            events,
        };
        node.first_line = node.recv(Duration::from_secs(20));
        node
    }

    /// Sends one command line without waiting for the reply.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write command");
        self.stdin.flush().expect("flush command");
    }

    /// Waits for the next reply line.
    pub fn recv(&mut self, timeout: Duration) -> String {
        match self.replies.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("{}: no reply within {timeout:?}", self.name),
            Err(RecvTimeoutError::Disconnected) => panic!("{}: process output closed", self.name),
        }
    }

    /// Sends a command and returns its reply line.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.recv(Duration::from_secs(30))
    }

    /// Sends a command that must succeed and returns what follows `ok `.
    pub fn ok(&mut self, line: &str) -> String {
        let reply = self.cmd(line);
        match reply.strip_prefix("ok") {
            Some(rest) => rest.trim().to_string(),
            None => panic!("{}: `{line}` failed: {reply}", self.name),
        }
    }

    /// The other nodes this node sees up, comma-separated and sorted.
    pub fn members(&mut self) -> String {
        self.ok("members")
    }

    /// Events printed so far.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().expect("events lock").clone()
    }

    /// Sends a signal (`STOP`, `CONT`) to this process by PID.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts n1, n2, n3 (n2 and n3 join through n1) and waits for a full mesh.
pub fn three_nodes(prefix: &str) -> (TestNode, TestNode, TestNode) {
    let p1 = free_port();
    let mut n1 = TestNode::start(&format!("{prefix}1"), p1, &[]);
    let mut n2 = TestNode::start(&format!("{prefix}2"), free_port(), &[p1]);
    let mut n3 = TestNode::start(&format!("{prefix}3"), free_port(), &[n2.port]);
    for n in [&n1, &n2, &n3] {
        assert!(
            n.first_line.starts_with("ready"),
            "{}: {}",
            n.name,
            n.first_line
        );
    }
    let (a, b, c) = (n1.name.clone(), n2.name.clone(), n3.name.clone());
    wait_until("full mesh of three nodes", Duration::from_secs(15), || {
        n1.members() == format!("{b},{c}")
            && n2.members() == format!("{a},{c}")
            && n3.members() == format!("{a},{b}")
    });
    (n1, n2, n3)
}
