//! Test helper (not a user tool): one cluster node driven by line commands
//! on stdin, printing replies (`ok ...` / `err ...`) and cluster events
//! (`event ...`) on stdout. The integration tests in `tests/cluster_*.rs`
//! start several of these as real processes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beamline::runtime::cluster::serde::{Deserialize, Serialize};
use beamline::runtime::cluster::{
    ClusterEvent, GlobalRef, NameLost, Node, NodeConfig, ReplyTo, Timings, TlsConfig,
};
use clap::Parser;
use ractor::{Actor, ActorProcessingErr, ActorRef};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    name: String,
    #[arg(long)]
    port: u16,
    #[arg(long, default_value = "secret")]
    cookie: String,
    /// Comma-separated seed addresses.
    #[arg(long, default_value = "")]
    seeds: String,
    #[arg(long, default_value_t = 250)]
    hb_ms: u64,
    #[arg(long, default_value_t = 2000)]
    hb_timeout_ms: u64,
    #[arg(long, default_value_t = 1000)]
    redial_max_ms: u64,
    #[arg(long, default_value_t = 5000)]
    join_timeout_ms: u64,
    /// Directory with cert.pem, key.pem, ca.pem: turns TLS on.
    #[arg(long)]
    tls_dir: Option<String>,
}

/// Messages of the test worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "beamline::runtime::cluster::serde")]
enum TestMsg {
    Note(String),
    Echo(String, ReplyTo<String>),
    Sleep(u64, ReplyTo<String>),
    Lost(NameLost),
}
impl ractor::Message for TestMsg {}

/// A newer sender's view of the same actor: two variants the worker does
/// not know, to produce payloads it cannot decode.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "beamline::runtime::cluster::serde")]
enum TestMsgV2 {
    Note(String),
    Echo(String, ReplyTo<String>),
    Sleep(u64, ReplyTo<String>),
    Lost(NameLost),
    NewThing(u64),
    NewCall(u64, ReplyTo<String>),
}
impl ractor::Message for TestMsgV2 {}

#[derive(Default)]
struct Seen {
    notes: Vec<String>,
    lost: Vec<String>,
}

struct Worker;

impl Actor for Worker {
    type Msg = TestMsg;
    type State = Arc<Mutex<Seen>>;
    type Arguments = Arc<Mutex<Seen>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<TestMsg>,
        seen: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(seen)
    }

    async fn handle(
        &self,
        _myself: ActorRef<TestMsg>,
        msg: TestMsg,
        seen: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TestMsg::Note(text) => lock(seen).notes.push(text),
            TestMsg::Echo(text, reply) => {
                let _ = reply.send(format!("echo:{text}"));
            }
            TestMsg::Sleep(ms, reply) => {
                lock(seen).notes.push("sleeping".into());
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = reply.send("slept".into());
            }
            TestMsg::Lost(lost) => lock(seen).lost.push(lost.name),
        }
        Ok(())
    }
}

fn lock(seen: &Arc<Mutex<Seen>>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

fn event_line(ev: &ClusterEvent) -> String {
    match ev {
        ClusterEvent::NodeUp { node } => format!("event node_up {node}"),
        ClusterEvent::NodeDown { node, reason } => format!("event node_down {node} {reason:?}"),
        ClusterEvent::NameRegistered { name, node } => {
            format!("event name_registered {name} {node}")
        }
        ClusterEvent::NameUnregistered { name, node } => {
            format!("event name_unregistered {name} {node}")
        }
        ClusterEvent::NameLost(l) => format!("event name_lost {} {}", l.name, l.winner_node),
        ClusterEvent::GroupJoined { scope, group, node } => {
            format!("event group_joined {scope} {group} {node}")
        }
        ClusterEvent::GroupLeft { scope, group, node } => {
            format!("event group_left {scope} {group} {node}")
        }
        other => format!("event other {other:?}"),
    }
}

fn tls_from_dir(dir: &str) -> anyhow::Result<TlsConfig> {
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}"));
    Ok(TlsConfig {
        cert_chain_pem: read("cert.pem")?,
        key_pem: read("key.pem")?,
        ca_pem: read("ca.pem")?,
        server_name: "localhost".into(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    beamline::runtime::telemetry::init_tracing();
    let args = Args::parse();
    let timings = Timings::default()
        .with_heartbeat(
            Duration::from_millis(args.hb_ms),
            Duration::from_millis(args.hb_timeout_ms),
        )
        .with_redial(
            Duration::from_millis(100),
            Duration::from_millis(args.redial_max_ms),
        )
        .with_join_timeout(Duration::from_millis(args.join_timeout_ms));
    let listen: SocketAddr = ([127, 0, 0, 1], args.port).into();
    let mut config = NodeConfig::new(&args.name, &args.cookie, listen).with_timings(timings);
    if let Some(dir) = &args.tls_dir {
        config = config.with_tls(tls_from_dir(dir)?);
    }
    let node = Node::start(config).await?;

    let mut events = node.subscribe();
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            println!("{}", event_line(&ev));
        }
    });

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (worker, _) = Actor::spawn(None, Worker, seen.clone()).await?;

    let seeds: Vec<SocketAddr> = args
        .seeds
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    if seeds.is_empty() {
        println!("ready {}", node.addr());
    } else {
        match node.join(&seeds).await {
            Ok(_) => println!("ready {}", node.addr()),
            Err(e) => println!("joinerr {e}"),
        }
    }

    // tokio's io-std feature is off in this workspace: read stdin on a thread.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let reply = command(&node, &worker, &seen, line.trim()).await;
        println!("{reply}");
        if line.trim() == "leave" {
            break;
        }
    }
    Ok(())
}

async fn command(
    node: &Node,
    worker: &ActorRef<TestMsg>,
    seen: &Arc<Mutex<Seen>>,
    line: &str,
) -> String {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let arg = |i: usize| parts.get(i).copied().unwrap_or("");
    let timeout = Duration::from_secs(5);
    let target = |name: &str| node.whereis::<TestMsg>(name);
    let r: Result<String, String> = match parts.first().copied().unwrap_or("") {
        "members" => Ok(node.members().join(",")),
        "register" => node
            .register_with(arg(1), worker, TestMsg::Lost)
            .await
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
        "unregister" => node
            .unregister(arg(1))
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
        "whereis" => Ok(node.whereis_node(arg(1)).unwrap_or_else(|| "none".into())),
        "registered" => Ok(node
            .registered()
            .into_iter()
            .map(|(n, at)| format!("{n}@{at}"))
            .collect::<Vec<_>>()
            .join(",")),
        "join_group" => node
            .join_group(arg(1), arg(2), worker)
            .await
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
        "leave_group" => node
            .leave_group(arg(1), arg(2), worker)
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
        "members_of" => Ok(node
            .members_of::<TestMsg>(arg(1), arg(2))
            .iter()
            .map(|m| m.node().to_string())
            .collect::<Vec<_>>()
            .join(",")),
        "cast" => match target(arg(1)) {
            Some(t) => t
                .cast(TestMsg::Note(arg(2).into()))
                .map(|_| String::new())
                .map_err(|e| e.to_string()),
            None => Err("no such name".into()),
        },
        "castmany" => match target(arg(1)) {
            // castmany NAME COUNT: notes 0..COUNT, to check ordering.
            Some(t) => {
                let n: u64 = arg(2).parse().unwrap_or(0);
                let mut res = Ok(String::new());
                for i in 0..n {
                    if let Err(e) = t.cast(TestMsg::Note(i.to_string())) {
                        res = Err(e.to_string());
                        break;
                    }
                }
                res
            }
            None => Err("no such name".into()),
        },
        "castbatch" => match target(arg(1)) {
            // castbatch NAME COUNT: notes 0..COUNT in batches of 64.
            Some(t) => {
                let n: u64 = arg(2).parse().unwrap_or(0);
                let mut res = Ok(String::new());
                let ids: Vec<u64> = (0..n).collect();
                for chunk in ids.chunks(64) {
                    let batch = chunk.iter().map(|i| TestMsg::Note(i.to_string())).collect();
                    if let Err(e) = t.cast_batch(batch) {
                        res = Err(e.to_string());
                        break;
                    }
                }
                res
            }
            None => Err("no such name".into()),
        },
        "castmix" => {
            // castmix NAME SCOPE GROUP COUNT: notes 0..COUNT, alternately through
            // the name and through the group membership of the same actor.
            let by_name = target(arg(1));
            let by_group = by_name.as_ref().and_then(|t| {
                node.members_of::<TestMsg>(arg(2), arg(3))
                    .into_iter()
                    .find(|m| m.node() == t.node())
            });
            match (by_name, by_group) {
                (Some(a), Some(b)) => {
                    let n: u64 = arg(4).parse().unwrap_or(0);
                    let mut res = Ok(String::new());
                    for i in 0..n {
                        let via = if i % 2 == 0 { &a } else { &b };
                        if let Err(e) = via.cast(TestMsg::Note(i.to_string())) {
                            res = Err(e.to_string());
                            break;
                        }
                    }
                    res
                }
                _ => Err("no such name or member".into()),
            }
        }
        "cast_group" => {
            let members: Vec<GlobalRef<TestMsg>> = node.members_of(arg(1), arg(2));
            let mut res = Ok(members.len().to_string());
            for m in members {
                if let Err(e) = m.cast(TestMsg::Note(arg(3).into())) {
                    res = Err(e.to_string());
                }
            }
            res
        }
        "notes" => Ok(lock(seen).notes.join("|")),
        "clear_notes" => {
            lock(seen).notes.clear();
            Ok(String::new())
        }
        "lost" => Ok(lock(seen).lost.join(",")),
        "call" => match target(arg(1)) {
            Some(t) => t
                .call(|r| TestMsg::Echo(arg(2).into(), r), timeout)
                .await
                .map_err(|e| e.to_string()),
            None => Err("no such name".into()),
        },
        "callslow" => match target(arg(1)) {
            Some(t) => {
                let ms: u64 = arg(2).parse().unwrap_or(0);
                let started = std::time::Instant::now();
                let r = t
                    .call(|r| TestMsg::Sleep(ms, r), Duration::from_secs(30))
                    .await;
                r.map_err(|e| format!("{e} after_ms={}", started.elapsed().as_millis()))
            }
            None => Err("no such name".into()),
        },
        "badcast" => match node.whereis::<TestMsgV2>(arg(1)) {
            Some(t) => t
                .cast(TestMsgV2::NewThing(7))
                .map(|_| String::new())
                .map_err(|e| e.to_string()),
            None => Err("no such name".into()),
        },
        "rawcast" => match target(arg(1)) {
            Some(t) => t
                .cast_raw(vec![0xff, 0xfe, 0x01])
                .map(|_| String::new())
                .map_err(|e| e.to_string()),
            None => Err("no such name".into()),
        },
        "badcall" => match node.whereis::<TestMsgV2>(arg(1)) {
            Some(t) => t
                .call(|r| TestMsgV2::NewCall(7, r), timeout)
                .await
                .map_err(|e| e.to_string()),
            None => Err("no such name".into()),
        },
        "block" => {
            node.set_blocked(arg(1), true);
            Ok(String::new())
        }
        "unblock" => {
            node.set_blocked(arg(1), false);
            Ok(String::new())
        }
        "stop_worker" => {
            worker.stop(None);
            Ok(String::new())
        }
        "leave" => {
            node.leave().await;
            Ok(String::new())
        }
        other => Err(format!("unknown command {other:?}")),
    };
    match r {
        Ok(s) => format!("ok {s}"),
        Err(e) => format!("err {e}"),
    }
}
