//! Several processes: when one process cannot hold every TCP session (file
//! descriptors), the parent runs this binary again as workers, each with a
//! slice of the users. Protocol, one JSON object per line: the parent
//! writes the worker's [`Args`] and then commands on its stdin
//! (`{"cmd":"login"}`, `{"cmd":"messaging","offline":[..],"local_peers":b}`,
//! `{"cmd":"logout"}`); the worker writes `{"progress":{..}}` twice a
//! second and `{"report":{..}}` after each command on its stdout.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::args::Args;
use crate::engine::{Connector, Engine, MsgRaw, Progress, SessionPhaseRaw};

/// The worker side: reads its arguments and commands from stdin, runs
/// them, answers on stdout.
pub async fn run_worker() -> Result<(), String> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no arguments on stdin")?;
    let args: Args = serde_json::from_str(&first).map_err(|e| format!("worker arguments: {e}"))?;
    let args = Arc::new(args);
    let mut engine = Engine::new(args.clone(), Connector::tcp(&args))?;
    let counters = engine.counters();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            emit(&json!({ "progress": counters.snapshot() }));
        }
    });
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        let cmd: Value = serde_json::from_str(&line).map_err(|e| format!("command: {e}"))?;
        let report = match cmd["cmd"].as_str() {
            Some("login") => serde_json::to_value(engine.login().await),
            Some("messaging") => {
                let offline: HashSet<u64> = cmd["offline"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                let local = cmd["local_peers"].as_bool().unwrap_or(false);
                serde_json::to_value(engine.messaging(&offline, local).await)
            }
            Some("logout") => serde_json::to_value(engine.logout().await),
            _ => return Err(format!("unknown command {line}")),
        }
        .map_err(|e| e.to_string())?;
        emit(&json!({ "report": report }));
        if cmd["cmd"] == "logout" {
            break;
        }
    }
    ticker.abort();
    Ok(())
}

fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The parent's handle on its workers.
pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    reports: mpsc::UnboundedReceiver<(usize, Value)>,
    progress: Arc<Mutex<Vec<Progress>>>,
}

impl Workers {
    /// Starts `ceil(users / sessions_per_process)` workers.
    pub async fn start(args: &Args) -> Result<Workers, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let per = args.sessions_per_process.max(1);
        let count = args.users.div_ceil(per) as usize;
        let progress = Arc::new(Mutex::new(vec![Progress::default(); count]));
        let (tx, reports) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for w in 0..count {
            let start = w as u64 * per;
            let mut wa = args.clone();
            wa.worker = true;
            wa.total_users = Some(args.users);
            wa.slice_start = start;
            wa.users = per.min(args.users - start);
            // Login rate and concurrency are for the whole run: each worker
            // gets its share.
            let share = wa.users as f64 / args.users as f64;
            wa.login_rate = args.login_rate * share;
            wa.login_concurrency = ((args.login_concurrency as f64 * share).ceil() as usize).max(1);
            wa.json = None;
            wa.svg = None;
            wa.server_pid = Vec::new();
            wa.quiet = true;
            let mut child = tokio::process::Command::new(&exe)
                .arg("--worker")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting worker {w}: {e}"))?;
            let mut stdin = child.stdin.take().ok_or("worker stdin")?;
            let stdout = child.stdout.take().ok_or("worker stdout")?;
            let line = serde_json::to_string(&wa).map_err(|e| e.to_string())?;
            stdin
                .write_all(format!("{line}\n").as_bytes())
                .await
                .map_err(|e| format!("worker {w}: {e}"))?;
            let (tx, progress) = (tx.clone(), progress.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if let Ok(p) = serde_json::from_value::<Progress>(v["progress"].take()) {
                        if let Ok(mut all) = progress.lock() {
                            all[w] = p;
                        }
                    } else if !v["report"].is_null() {
                        let _ = tx.send((w, v["report"].take()));
                    }
                }
            });
            children.push(child);
            stdins.push(stdin);
        }
        Ok(Workers {
            children,
            stdins,
            reports,
            progress,
        })
    }

    /// How many workers.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// The sum of the workers' last progress reports.
    pub fn progress(&self) -> Progress {
        let mut p = Progress::default();
        if let Ok(all) = self.progress.lock() {
            for w in all.iter() {
                p.add(w);
            }
        }
        p
    }

    /// The shared progress, for the progress line.
    pub fn progress_source(&self) -> Arc<Mutex<Vec<Progress>>> {
        self.progress.clone()
    }

    async fn command(&mut self, cmd: &Value, limit: Duration) -> Result<Vec<Value>, String> {
        for (w, stdin) in self.stdins.iter_mut().enumerate() {
            stdin
                .write_all(format!("{cmd}\n").as_bytes())
                .await
                .map_err(|e| format!("worker {w}: {e}"))?;
        }
        let mut out = vec![Value::Null; self.children.len()];
        let deadline = tokio::time::Instant::now() + limit;
        for _ in 0..out.len() {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some((w, v))) => out[w] = v,
                Ok(None) => return Err("a worker ended".into()),
                Err(_) => return Err(format!("workers did not report {cmd} in time")),
            }
        }
        Ok(out)
    }

    /// Login on every worker, merged.
    pub async fn login(&mut self, limit: Duration) -> Result<SessionPhaseRaw, String> {
        let mut raw = SessionPhaseRaw::default();
        for v in self.command(&json!({"cmd": "login"}), limit).await? {
            raw.merge(serde_json::from_value(v).map_err(|e| e.to_string())?);
        }
        Ok(raw)
    }

    /// Messaging on every worker, merged.
    pub async fn messaging(
        &mut self,
        offline: &[u64],
        local_peers: bool,
        limit: Duration,
    ) -> Result<MsgRaw, String> {
        let cmd = json!({"cmd": "messaging", "offline": offline, "local_peers": local_peers});
        let mut raw = MsgRaw::default();
        for v in self.command(&cmd, limit).await? {
            raw.merge(serde_json::from_value(v).map_err(|e| e.to_string())?);
        }
        Ok(raw)
    }

    /// Logout on every worker, merged; then waits for them to exit.
    pub async fn logout(&mut self, limit: Duration) -> Result<SessionPhaseRaw, String> {
        let mut raw = SessionPhaseRaw::default();
        for v in self.command(&json!({"cmd": "logout"}), limit).await? {
            raw.merge(serde_json::from_value(v).map_err(|e| e.to_string())?);
        }
        self.stdins.clear();
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
        Ok(raw)
    }
}
