//! `beamline-loadgen`: drives many XMPP client sessions against a server
//! (ours, ejabberd, Prosody, ...) or against our own server in this
//! process through its in-memory transport, and measures each phase:
//! login, idle hold, messaging, logout. See `docs/loadgen.md`.
//!
//! [`run`] is the whole run; the binary parses [`args::Args`] and prints
//! what it returns.

pub mod args;
pub mod engine;
pub mod hist;
pub mod procstat;
pub mod provision;
pub mod svg;
pub mod workers;

use std::collections::HashSet;
use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beamline_xmpp::config::Config;
use beamline_xmpp::server::{Server, ServerOptions};
use serde_json::{Value, json};

use crate::args::{Args, Mech, Provision};
use crate::engine::{Connector, Counters, Engine, MsgRaw, Progress, SessionPhaseRaw, secs};
use crate::procstat::ProcSample;
use crate::workers::Workers;

/// Where the sessions live: in this process, or in worker processes.
enum Runner {
    Local(Engine),
    Workers(Workers),
}

/// What the progress line reads.
#[derive(Clone)]
enum ProgressSource {
    Local(Arc<Counters>),
    Workers(Arc<Mutex<Vec<Progress>>>),
}

impl ProgressSource {
    fn get(&self) -> Progress {
        match self {
            ProgressSource::Local(c) => c.snapshot(),
            ProgressSource::Workers(w) => {
                let mut p = Progress::default();
                if let Ok(all) = w.lock() {
                    for x in all.iter() {
                        p.add(x);
                    }
                }
                p
            }
        }
    }
}

/// The progress line on stderr, rewritten in place on a terminal (a new
/// line every 5 s otherwise).
struct ProgressLine {
    phase: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl ProgressLine {
    fn start(source: ProgressSource, total: u64, quiet: bool) -> ProgressLine {
        let phase = Arc::new(Mutex::new(String::from("start")));
        let p = phase.clone();
        let task = tokio::spawn(async move {
            if quiet {
                return;
            }
            let tty = std::io::stderr().is_terminal();
            let every = if tty {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(5)
            };
            let t0 = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                let s = source.get();
                let phase = p.lock().map(|p| p.clone()).unwrap_or_default();
                let line = format!(
                    "[{:>6.1}s] {phase:<10} online {}/{total} failed {} | sent {} delivered {} | closed {}",
                    t0.elapsed().as_secs_f64(),
                    s.logged_in.saturating_sub(s.logged_out),
                    s.login_failed,
                    s.sent,
                    s.delivered,
                    s.logged_out
                );
                let mut err = std::io::stderr().lock();
                let _ = if tty {
                    write!(err, "\r{line}\x1b[K")
                } else {
                    writeln!(err, "{line}")
                };
                let _ = err.flush();
            }
        });
        ProgressLine { phase, task }
    }

    fn phase(&self, name: &str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = name.to_owned();
        }
    }

    fn stop(self, quiet: bool) {
        self.task.abort();
        if !quiet && std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
}

/// A sample of the measured processes (summed) at a phase boundary.
struct Samples {
    /// The server processes; empty: this process.
    pids: Vec<u32>,
    measured: bool,
    at: Vec<(&'static str, ProcSample)>,
}

impl Samples {
    fn take(&mut self, name: &'static str) {
        if !self.measured {
            return;
        }
        let sampled = if self.pids.is_empty() {
            procstat::sample(None)
        } else {
            self.pids.iter().try_fold(
                ProcSample {
                    rss_bytes: 0,
                    cpu_ms: 0,
                },
                |sum, pid| {
                    procstat::sample(Some(*pid)).map(|s| ProcSample {
                        rss_bytes: sum.rss_bytes + s.rss_bytes,
                        cpu_ms: sum.cpu_ms + s.cpu_ms,
                    })
                },
            )
        };
        match sampled {
            Ok(s) => self.at.push((name, s)),
            Err(e) => eprintln!("sampling /proc at {name}: {e}"),
        }
    }

    fn get(&self, name: &str) -> Option<ProcSample> {
        self.at.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// `(b - a) / n`, of RSS or CPU.
    fn delta(&self, a: &str, b: &str, f: fn(ProcSample) -> u64) -> Option<i64> {
        Some(f(self.get(b)?) as i64 - f(self.get(a)?) as i64)
    }
}

fn validate(a: &Args) -> Result<(), String> {
    if a.users == 0 {
        return Err("--users must be at least 1".into());
    }
    if a.provision_only && a.provision == Provision::None && !a.in_memory {
        return Err("--provision-only needs --provision ctl or inband".into());
    }
    if a.provision == Provision::Ctl && a.provision_ctl.is_none() {
        return Err("--provision ctl needs --provision-ctl \"COMMAND\"".into());
    }
    if !(a.login_rate.is_finite() && a.login_rate >= 0.0 && a.rate.is_finite() && a.rate >= 0.0) {
        return Err("rates must be finite and not negative".into());
    }
    Ok(())
}

/// SCRAM iterations of the in-memory server (the minimum RFC 7677 allows).
const IN_MEMORY_SCRAM_ITERATIONS: u32 = 4096;

/// Starts our server in this process for `--in-memory`: no listeners,
/// memory storage, 4096 SCRAM iterations (the minimum), PLAIN allowed
/// without TLS (the in-memory transport counts as loopback), the default
/// modules, `domain` as the only host.
pub async fn start_in_memory_server(args: &Args) -> Result<(Server, std::path::PathBuf), String> {
    // Actor names are process-wide: one node name per server.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("beamline-loadgen-{}-{n}", std::process::id()));
    let mut config = Config::default();
    config.storage.data_dir = dir.clone();
    config.listeners = Vec::new();
    config.hosts = vec![args.domain.clone()];
    config.auth.plain_on_loopback_without_tls = true;
    config.auth.scram_iterations = IN_MEMORY_SCRAM_ITERATIONS;
    let server = Server::start(
        config,
        ServerOptions::in_memory()
            .node_name(format!("loadgen{}-{n}@localhost", std::process::id())),
    )
    .await
    .map_err(|e| format!("starting the in-memory server: {e}"))?;
    Ok((server, dir))
}

/// The whole run; returns the JSON summary (also written to `--json`, with
/// the chart to `--svg`).
pub async fn run(args: Args) -> Result<Value, String> {
    validate(&args)?;
    let args = Arc::new(args);
    let run_start = Instant::now();
    let mut notes: Vec<String> = Vec::new();

    // Where to connect, and the users.
    let mut in_memory: Option<(Server, std::path::PathBuf)> = None;
    let provision_started = Instant::now();
    let (connector, provisioned) = if args.in_memory {
        let (server, dir) = start_in_memory_server(&args).await?;
        let p = provision::in_process(&args, server.clone(), IN_MEMORY_SCRAM_ITERATIONS).await?;
        in_memory = Some((server.clone(), dir));
        (
            Connector::Memory(server),
            Some(p.json("in-process", provision_started.elapsed())),
        )
    } else {
        let c = Connector::tcp(&args);
        let p = match args.provision {
            Provision::None => None,
            Provision::Ctl => {
                let cmd = args.provision_ctl.clone().unwrap_or_default();
                Some(
                    provision::with_ctl(&args, &cmd)
                        .await?
                        .json("ctl", provision_started.elapsed()),
                )
            }
            Provision::Inband => {
                let c = Arc::new(Connector::tcp(&args));
                Some(
                    provision::in_band(&args, c)
                        .await?
                        .json("in-band", provision_started.elapsed()),
                )
            }
        };
        (c, p)
    };

    if args.provision_only {
        if let Some((server, dir)) = in_memory {
            let _ = server.stop(Duration::from_secs(10)).await;
            let _ = std::fs::remove_dir_all(dir);
        }
        let summary = json!({
            "tool": "beamline-loadgen",
            "version": env!("CARGO_PKG_VERSION"),
            "users": args.users,
            "provisioning": provisioned,
            "notes": ["--provision-only: no sessions"],
            "duration_s": run_start.elapsed().as_secs_f64(),
        });
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
            std::fs::write(path, text + "\n")
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        return Ok(summary);
    }

    let multi = !args.in_memory && args.users > args.sessions_per_process;
    let mut runner = if multi {
        Runner::Workers(Workers::start(&args).await?)
    } else {
        Runner::Local(Engine::new(args.clone(), connector)?)
    };
    let processes = match &runner {
        Runner::Local(_) => 1,
        Runner::Workers(w) => w.len(),
    };
    let source = match &runner {
        Runner::Local(e) => ProgressSource::Local(e.counters()),
        Runner::Workers(w) => ProgressSource::Workers(w.progress_source()),
    };
    let progress = ProgressLine::start(source, args.users, args.quiet);

    let mut samples = Samples {
        pids: args.server_pid.clone(),
        measured: !args.server_pid.is_empty() || args.in_memory,
        at: Vec::new(),
    };
    // Let the server settle after provisioning.
    tokio::time::sleep(Duration::from_millis(200)).await;
    samples.take("before_login");

    // Login.
    progress.phase("login");
    let limit = secs(args.login_timeout) + Duration::from_secs(60);
    let login = match &mut runner {
        Runner::Local(e) => e.login().await,
        Runner::Workers(w) => w.login(limit).await?,
    };
    // Sessions settle (the last presences are processed).
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Runner::Local(e) = &runner {
        e.drain_detached();
    }
    samples.take("after_login");

    // Idle hold.
    progress.phase("hold");
    tokio::time::sleep(secs(args.hold)).await;
    if let Runner::Local(e) = &runner {
        e.drain_detached();
    }
    samples.take("after_hold");

    // Messaging.
    let offline: Vec<u64> = login.offline.clone();
    if args.detach_clients && args.senders > 0 {
        notes.push("no messaging with --detach-clients (there are no clients to send)".into());
    }
    let messaging = if args.senders > 0 && !args.detach_clients {
        progress.phase("messaging");
        let closed = args.rate <= 0.0;
        let limit = secs(args.duration + args.drain) + Duration::from_secs(60);
        let raw = match &mut runner {
            Runner::Local(e) => {
                let off: HashSet<u64> = offline.iter().copied().collect();
                e.messaging(&off, false).await
            }
            Runner::Workers(w) => {
                if closed {
                    notes.push("closed loop over several processes: each sender picks peers in its own process".into());
                }
                w.messaging(&offline, closed, limit).await?
            }
        };
        samples.take("after_messaging");
        Some(raw)
    } else {
        None
    };

    // Logout.
    progress.phase("logout");
    let limit = secs(args.logout_timeout) + Duration::from_secs(60);
    let logout = match &mut runner {
        Runner::Local(e) => e.logout().await,
        Runner::Workers(w) => w.logout(limit).await?,
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    samples.take("after_logout");
    progress.stop(args.quiet);

    if let Some((server, dir)) = in_memory {
        let _ = server.stop(Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    let summary = summary(
        &args,
        &SummaryParts {
            processes,
            provisioned,
            login: &login,
            messaging: messaging.as_ref(),
            logout: &logout,
            samples: &samples,
            notes,
            elapsed: run_start.elapsed(),
        },
    );
    if let Some(path) = &args.svg {
        std::fs::write(path, chart(&login, messaging.as_ref()))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(summary)
}

struct SummaryParts<'a> {
    processes: usize,
    provisioned: Option<Value>,
    login: &'a SessionPhaseRaw,
    messaging: Option<&'a MsgRaw>,
    logout: &'a SessionPhaseRaw,
    samples: &'a Samples,
    notes: Vec<String>,
    elapsed: Duration,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn per_s(n: u64, elapsed_ms: u64) -> f64 {
    if elapsed_ms == 0 {
        0.0
    } else {
        n as f64 * 1000.0 / elapsed_ms as f64
    }
}

fn session_phase(raw: &SessionPhaseRaw) -> Value {
    json!({
        "attempted": raw.attempted,
        "ok": raw.ok,
        "failed": raw.failures.values().sum::<u64>(),
        "failures": raw.failures,
        "duration_s": raw.elapsed_ms as f64 / 1000.0,
        "per_s": per_s(raw.ok, raw.elapsed_ms),
        "latency_ms": raw.latency.summary_ms(),
        "per_second": raw.per_second.iter().enumerate().map(|(t, s)| json!({
            "t": t,
            "count": s.count,
            "p50_ms": ms(s.latency.quantile(0.5)),
            "p99_ms": ms(s.latency.quantile(0.99)),
        })).collect::<Vec<_>>(),
    })
}

fn summary(args: &Args, p: &SummaryParts<'_>) -> Value {
    let messaging = p.messaging.map(|m| {
        json!({
            "senders": m.senders,
            "mode": if args.rate > 0.0 { "fixed-rate" } else { "closed-loop" },
            "target_rate_per_s": args.rate,
            "window": args.window,
            "send_duration_s": m.send_ms as f64 / 1000.0,
            "duration_s": m.elapsed_ms as f64 / 1000.0,
            "sent": m.sent,
            "delivered": m.delivered,
            "lost": m.sent.saturating_sub(m.delivered),
            "duplicated": m.duplicated,
            "bounced": m.bounced,
            "session_errors": m.session_errors,
            "sent_per_s": per_s(m.sent, m.send_ms),
            "delivered_per_s": per_s(m.delivered, m.send_ms),
            "latency_ms": m.latency.summary_ms(),
            "per_second": m.per_second.iter().enumerate().map(|(t, s)| json!({
                "t": t,
                "sent": s.sent,
                "delivered": s.count,
                "p50_ms": ms(s.latency.quantile(0.5)),
                "p90_ms": ms(s.latency.quantile(0.9)),
                "p99_ms": ms(s.latency.quantile(0.99)),
            })).collect::<Vec<_>>(),
        })
    });
    let s = p.samples;
    let resources = s.measured.then(|| {
        let online = p.login.ok.max(1) as i64;
        let rss = |a, b| s.delta(a, b, |x| x.rss_bytes);
        let cpu = |a, b| s.delta(a, b, |x| x.cpu_ms);
        let delivered = p.messaging.map_or(0, |m| m.delivered);
        json!({
            "process": match s.pids.as_slice() {
                [pid] => format!("server pid {pid}"),
                [_, _, ..] => format!(
                    "server pids {} (summed)",
                    s.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ),
                [] if args.detach_clients => {
                    "this process: in-memory server, clients detached".to_owned()
                }
                [] => "this process: in-memory server AND its clients".to_owned(),
            },
            "samples": s.at.iter().map(|(n, x)| json!({
                "at": n, "rss_bytes": x.rss_bytes, "cpu_ms": x.cpu_ms,
            })).collect::<Vec<_>>(),
            "rss_bytes_per_session": rss("before_login", "after_login").map(|d| d / online),
            "rss_bytes_per_session_after_hold": rss("before_login", "after_hold").map(|d| d / online),
            "cpu_ms_per_1000_logins": cpu("before_login", "after_login")
                .map(|d| d as f64 * 1000.0 / online as f64),
            "cpu_ms_per_1000_delivered": cpu("after_hold", "after_messaging")
                .filter(|_| delivered > 0)
                .map(|d| d as f64 * 1000.0 / delivered as f64),
        })
    });
    let mut notes = p.notes.clone();
    if args.detach_clients {
        notes.push("in-memory with detached clients: each client was dropped once logged in, its end of the connection kept open, so the per-session RSS is the server's sessions and the in-memory transport buffers (plus at most login_concurrency clients in flight, and allocator slack)".into());
    } else if args.in_memory {
        notes.push("in-memory: RSS and CPU are this whole process, so the client side (one Client per session: decoder and write buffers, JIDs) is included in the per-session figures; they are an upper bound of the server's share".into());
    }
    json!({
        "tool": "beamline-loadgen",
        "version": env!("CARGO_PKG_VERSION"),
        "target": {
            "mode": if args.in_memory { "in-memory" } else { "tcp" },
            "detached_clients": args.detach_clients,
            "server": if args.in_memory {
                Value::Null
            } else if let [one] = args.server.as_slice() {
                json!(one.to_string())
            } else {
                json!(args.server.iter().map(ToString::to_string).collect::<Vec<_>>())
            },
            "domain": args.domain,
            "starttls": args.starttls,
            "mechanism": match args.mechanism { Mech::ScramSha256 => "SCRAM-SHA-256", Mech::Plain => "PLAIN" },
            "processes": p.processes,
            "source_addresses": if args.in_memory { 0 } else { args.sources() },
        },
        "users": args.users,
        "provisioning": p.provisioned,
        "phases": {
            "login": session_phase(p.login),
            "hold": { "duration_s": args.hold },
            "messaging": messaging,
            "logout": session_phase(p.logout),
        },
        "resources": resources,
        "notes": notes,
        "duration_s": p.elapsed.as_secs_f64(),
    })
}

/// The SVG: logins per second and login latency; messages sent and
/// delivered per second; one-way latency p50/p90/p99 per second.
fn chart(login: &SessionPhaseRaw, messaging: Option<&MsgRaw>) -> String {
    use svg::{Panel, Series};
    let q = |h: &hist::Histogram, x: f64| (h.count() > 0).then(|| ms(h.quantile(x)));
    let mut panels = vec![
        Panel {
            title: "login throughput".into(),
            unit: "logins/s".into(),
            series: vec![Series {
                name: "logins/s".into(),
                color: "#1f77b4",
                values: login
                    .per_second
                    .iter()
                    .map(|s| Some(s.count as f64))
                    .collect(),
            }],
        },
        Panel {
            title: "login latency".into(),
            unit: "ms".into(),
            series: vec![
                Series {
                    name: "p50".into(),
                    color: "#2ca02c",
                    values: login
                        .per_second
                        .iter()
                        .map(|s| q(&s.latency, 0.5))
                        .collect(),
                },
                Series {
                    name: "p99".into(),
                    color: "#d62728",
                    values: login
                        .per_second
                        .iter()
                        .map(|s| q(&s.latency, 0.99))
                        .collect(),
                },
            ],
        },
    ];
    if let Some(m) = messaging {
        panels.push(Panel {
            title: "messaging throughput".into(),
            unit: "messages/s".into(),
            series: vec![
                Series {
                    name: "sent/s".into(),
                    color: "#ff7f0e",
                    values: m.per_second.iter().map(|s| Some(s.sent as f64)).collect(),
                },
                Series {
                    name: "delivered/s".into(),
                    color: "#1f77b4",
                    values: m.per_second.iter().map(|s| Some(s.count as f64)).collect(),
                },
            ],
        });
        panels.push(Panel {
            title: "one-way message latency".into(),
            unit: "ms".into(),
            series: vec![
                Series {
                    name: "p50".into(),
                    color: "#2ca02c",
                    values: m.per_second.iter().map(|s| q(&s.latency, 0.5)).collect(),
                },
                Series {
                    name: "p90".into(),
                    color: "#ff7f0e",
                    values: m.per_second.iter().map(|s| q(&s.latency, 0.9)).collect(),
                },
                Series {
                    name: "p99".into(),
                    color: "#d62728",
                    values: m.per_second.iter().map(|s| q(&s.latency, 0.99)).collect(),
                },
            ],
        });
    }
    svg::render(&panels)
}
