//! Test node processes driven by line commands, shared by the root
//! package's and the storage crate's multi-process tests: free ports,
//! polling with deadlines, and killing (by PID, in `Drop`) what was started.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port that was free a moment ago, below the kernel's ephemeral range.
pub fn free_port() -> u16 {
    // Not port 0: the kernel hands out ephemeral ports (32768-60999 here),
    // and a port released by this probe can be taken as the source port of
    // an outgoing connection before the node binds it. Ports below that
    // range are never given to outgoing connections.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

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
    reply_timeout: Duration,
}

impl TestNode {
    /// Starts `program` as node `name` on `port` with `args`, logging to a
    /// file under the target dir with `RUST_LOG=log_filter`, and waits up
    /// to `reply_timeout` for its first line (replies wait that long too).
    pub fn spawn(
        program: &str,
        name: &str,
        port: u16,
        args: &[String],
        log_filter: &str,
        reply_timeout: Duration,
    ) -> Self {
        let log =
            std::fs::File::create(format!("{}/{name}-{port}.log", env!("CARGO_TARGET_TMPDIR")))
                .expect("create log file");
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
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
            reply_timeout,
        };
        node.first_line = node.recv(reply_timeout);
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
        self.recv(self.reply_timeout)
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
        if sig == "STOP" {
            // kill(2) returns before every thread of the target has
            // stopped; a request sent right away could still be answered.
            let pid = self.child.id();
            wait_until("process stopped", Duration::from_secs(5), || {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                })
            });
        }
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

/// Starts n1, n2, n3 with `start` (n2 joins through n1, n3 through n2) and
/// waits for a full mesh.
pub fn three_nodes_with(
    prefix: &str,
    start: impl Fn(&str, u16, &[u16]) -> TestNode,
) -> (TestNode, TestNode, TestNode) {
    let p1 = free_port();
    let mut n1 = start(&format!("{prefix}1"), p1, &[]);
    let mut n2 = start(&format!("{prefix}2"), free_port(), &[p1]);
    let mut n3 = start(&format!("{prefix}3"), free_port(), &[n2.port]);
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

/// `--seeds` value for seed ports.
pub fn seeds_arg(seeds: &[u16]) -> String {
    seeds
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}
