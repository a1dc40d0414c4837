//! Test helper (not a user tool): one cluster node with a replicated
//! `Db`, driven by line commands on stdin, printing replies (`ok ...` /
//! `err ...`) and replication events (`event ...`) on stdout. The tests in
//! `storage/tests/replication_*.rs` and the replication bench start several
//! of these as real processes.
//!
//! Flags: `--name N --port P [--seeds ip:port,...] [--hb-ms 250]
//! [--hb-timeout-ms 2000] [--ack-ms 2000] [--lease-ms 5000] [--dir DATA_DIR]` (with `--dir`
//! the database is a `DurableDb` there, and `create T disc` makes a disc
//! copy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beamline_runtime::cluster::{Node, NodeConfig, Timings};
use beamline_storage::disc::DiscOptions;
use beamline_storage::replica::{ConflictWinner, Replication, ReplicationConfig, ReplicationEvent};
use beamline_storage::{CopyType, Db, DurableDb, Record, Table, TableDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// The test record: a string key and a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Kv {
    key: String,
    val: i64,
}

impl Record for Kv {
    type Key = String;
    fn key(&self) -> String {
        self.key.clone()
    }
}

struct Args {
    name: String,
    port: u16,
    seeds: Vec<SocketAddr>,
    hb_ms: u64,
    hb_timeout_ms: u64,
    ack_ms: u64,
    lease_ms: u64,
    dir: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        name: String::new(),
        port: 0,
        seeds: Vec::new(),
        hb_ms: 250,
        hb_timeout_ms: 2000,
        ack_ms: 2000,
        lease_ms: 5000,
        dir: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = &argv[i + 1];
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{}: {e}", argv[i]));
        match argv[i].as_str() {
            "--name" => a.name = v.clone(),
            "--port" => a.port = num(v)? as u16,
            "--seeds" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    a.seeds
                        .push(s.parse().map_err(|e| format!("seed {s}: {e}"))?);
                }
            }
            "--hb-ms" => a.hb_ms = num(v)?,
            "--hb-timeout-ms" => a.hb_timeout_ms = num(v)?,
            "--ack-ms" => a.ack_ms = num(v)?,
            "--lease-ms" => a.lease_ms = num(v)?,
            "--dir" => a.dir = Some(v.clone()),
            other => return Err(format!("unknown flag {other}")),
        }
        i += 2;
    }
    if a.name.is_empty() {
        return Err("--name is required".into());
    }
    Ok(a)
}

fn event_line(ev: &ReplicationEvent) -> String {
    match ev {
        ReplicationEvent::ReplicaStale { table, node } => format!("event stale {table} {node}"),
        ReplicationEvent::Synced {
            table,
            from,
            version,
        } => format!("event synced {table} {from} {version}"),
        ReplicationEvent::RowsPurged { table, node, keys } => {
            format!("event purged {table} {node} {keys}")
        }
        ReplicationEvent::RowsMerged { table, node, keys } => {
            format!("event merged {table} {node} {keys}")
        }
        ReplicationEvent::OwnerConflict {
            table,
            winner,
            loser,
            ..
        } => format!("event conflict {table} {winner} {loser}"),
        ReplicationEvent::PartitionDetected { table, peer, won } => {
            let how = if *won { "won" } else { "lost" };
            format!("event partition {table} {how} {peer}")
        }
        ReplicationEvent::PartitionLost {
            table,
            winner,
            lost,
        } => {
            let mut keys: Vec<String> = lost
                .iter()
                .map(|(k, _)| beamline_runtime::codec::decode::<String>(k).unwrap_or_default())
                .collect();
            keys.sort();
            format!("event lostrows {table} {winner} {}", keys.join(","))
        }
        other => format!("event other {other:?}"),
    }
}

/// A background load: writes acknowledged, and the error that stopped it.
type LoadResult = (i64, Option<String>);

struct Ctx {
    node: Node,
    db: Db,
    /// Keeps the data directory's log open.
    _durable: Option<DurableDb>,
    repl: Replication,
    loads: Mutex<Vec<JoinHandle<LoadResult>>>,
    /// `loadall` loads: the keys whose writes were acknowledged.
    acked_loads: Mutex<Vec<JoinHandle<Vec<String>>>>,
}

#[tokio::main]
async fn main() {
    beamline_runtime::telemetry::init_tracing();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            println!("argerr {e}");
            return;
        }
    };
    let timings = Timings::default()
        .with_heartbeat(
            Duration::from_millis(args.hb_ms),
            Duration::from_millis(args.hb_timeout_ms),
        )
        .with_redial(Duration::from_millis(100), Duration::from_millis(1000))
        .with_join_timeout(Duration::from_secs(5));
    let listen: SocketAddr = ([127, 0, 0, 1], args.port).into();
    let config = NodeConfig::new(&args.name, "secret", listen).with_timings(timings);
    let node = match Node::start(config).await {
        Ok(n) => n,
        Err(e) => {
            println!("starterr {e}");
            return;
        }
    };
    if !args.seeds.is_empty()
        && let Err(e) = node.join(&args.seeds).await
    {
        println!("joinerr {e}");
        return;
    }
    let durable = match &args.dir {
        Some(dir) => match DurableDb::open(dir, DiscOptions::default()).await {
            Ok(d) => Some(d),
            Err(e) => {
                println!("diskerr {e}");
                return;
            }
        },
        None => None,
    };
    let db = durable
        .as_ref()
        .map_or_else(Db::in_memory, |d| d.db().clone());
    let config = ReplicationConfig {
        ack_timeout: Duration::from_millis(args.ack_ms),
        prepare_lease: Duration::from_millis(args.lease_ms),
        ..ReplicationConfig::default()
    };
    let repl = match Replication::start(db.clone(), node.clone(), config).await {
        Ok(r) => r,
        Err(e) => {
            println!("replerr {e}");
            return;
        }
    };
    let mut events = repl.subscribe();
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            println!("{}", event_line(&ev));
        }
    });
    println!("ready {}", node.addr());

    let ctx = Arc::new(Ctx {
        node,
        db,
        _durable: durable,
        repl,
        loads: Mutex::new(Vec::new()),
        acked_loads: Mutex::new(Vec::new()),
    });
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
        let reply = match command(&ctx, line.trim()).await {
            Ok(s) => format!("ok {s}"),
            Err(e) => format!("err {e}"),
        };
        println!("{reply}");
    }
}

fn table(ctx: &Ctx, name: &str) -> Result<Table<Kv>, String> {
    ctx.db.table::<Kv>(name).map_err(|e| e.to_string())
}

async fn incr(db: &Db, t: &Table<Kv>, key: &str, by: i64) -> Result<(), String> {
    db.transaction(|tx| {
        let now = tx.get(t, &key.to_string())?.map_or(0, |r| r.val);
        tx.write(
            t,
            Kv {
                key: key.to_string(),
                val: now + by,
            },
        )
    })
    .await
    .map_err(|e| e.to_string())
}

async fn command(ctx: &Arc<Ctx>, line: &str) -> Result<String, String> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let arg = |i: usize| parts.get(i).copied().unwrap_or("");
    let num = |i: usize| arg(i).parse::<i64>().map_err(|e| format!("arg {i}: {e}"));
    let e = |e: beamline_storage::StorageError| e.to_string();
    match arg(0) {
        "members" => Ok(ctx.node.members().join(",")),
        "block" => {
            ctx.node.set_blocked(arg(1), true);
            Ok(String::new())
        }
        "unblock" => {
            ctx.node.set_blocked(arg(1), false);
            Ok(String::new())
        }
        // create TABLE ram|none [owned]
        "create" => {
            let mut def = TableDef::new(arg(1));
            if arg(2) == "disc" {
                def = def.copy(CopyType::Disc);
            }
            if arg(3) == "owned" {
                def = def.node_owned();
            }
            if arg(2) == "none" {
                ctx.repl.declare_table::<Kv>(def).map_err(e)?;
            } else {
                let t = ctx.repl.create_table::<Kv>(def).await.map_err(e)?;
                if arg(3) == "owned" {
                    // Larger value wins a conflict; same rule on every node.
                    ctx.repl.on_conflict(&t, |_, a, b| {
                        let va = a.1.first().map_or(0, |r| r.val);
                        let vb = b.1.first().map_or(0, |r| r.val);
                        if vb > va {
                            ConflictWinner::Second
                        } else {
                            ConflictWinner::First
                        }
                    });
                }
            }
            Ok(String::new())
        }
        // A table of this node only, outside replication.
        "createlocal" => {
            ctx.db
                .create_table::<Kv>(TableDef::new(arg(1)))
                .map_err(e)?;
            Ok(String::new())
        }
        "put" => {
            let t = table(ctx, arg(1))?;
            t.dirty_write(Kv {
                key: arg(2).into(),
                val: num(3)?,
            })
            .await
            .map_err(e)?;
            Ok(String::new())
        }
        "del" => {
            let t = table(ctx, arg(1))?;
            t.dirty_delete(arg(2).into()).await.map_err(e)?;
            Ok(String::new())
        }
        "get" => {
            let t = table(ctx, arg(1))?;
            let recs = ctx.repl.read(&t, &arg(2).to_string()).await.map_err(e)?;
            Ok(recs
                .first()
                .map_or_else(|| "none".to_string(), |r| r.val.to_string()))
        }
        "count" => {
            let t = table(ctx, arg(1))?;
            Ok(ctx.repl.all(&t).await.map_err(e)?.len().to_string())
        }
        // Local copy only: "count:sum:keys-hash", to compare copies.
        "digest" => {
            let t = table(ctx, arg(1))?;
            let all = t.all();
            let sum: i64 = all.iter().map(|r| r.val).sum();
            let mut h: u64 = 0xcbf29ce484222325;
            for r in &all {
                for b in format!("{}={};", r.key, r.val).bytes() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
                }
            }
            Ok(format!("{}:{sum}:{h:x}", all.len()))
        }
        "keys" => {
            let t = table(ctx, arg(1))?;
            Ok(t.all()
                .iter()
                .map(|r| format!("{}={}", r.key, r.val))
                .collect::<Vec<_>>()
                .join(","))
        }
        // incr TABLE KEY N: N transactions, each adding 1 to KEY.
        "incr" => {
            let t = table(ctx, arg(1))?;
            for _ in 0..num(3)? {
                incr(&ctx.db, &t, arg(2), 1).await?;
            }
            Ok(String::new())
        }
        // txsum TABLE KEY: one transaction that scans the table and writes
        // KEY = the sum of every other row's value (also checks `count`).
        "txsum" => {
            let t = table(ctx, arg(1))?;
            let key = arg(2).to_string();
            let sum = ctx
                .db
                .transaction(|tx| {
                    let rows = tx.all(&t)?;
                    if tx.count(&t)? != rows.len() {
                        return tx.abort("count differs from all");
                    }
                    let sum: i64 = rows.iter().filter(|r| r.key != key).map(|r| r.val).sum();
                    tx.write(
                        &t,
                        Kv {
                            key: key.clone(),
                            val: sum,
                        },
                    )?;
                    Ok(sum)
                })
                .await
                .map_err(e)?;
            Ok(sum.to_string())
        }
        // txabort TABLE KEY: reads KEY, writes KEY+1000, then aborts.
        "txabort" => {
            let t = table(ctx, arg(1))?;
            let key = arg(2).to_string();
            ctx.db
                .transaction(|tx| {
                    let now = tx.get(&t, &key)?.map_or(0, |r| r.val);
                    tx.write(
                        &t,
                        Kv {
                            key: key.clone(),
                            val: now + 1000,
                        },
                    )?;
                    tx.abort::<()>(format!("saw {now}"))
                })
                .await
                .map_err(e)?;
            Ok(String::new())
        }
        // incr2 T1 T2 KEY N: N transactions, each adding 1 to KEY in both
        // tables.
        "incr2" => {
            let (t1, t2) = (table(ctx, arg(1))?, table(ctx, arg(2))?);
            let key = arg(3).to_string();
            for _ in 0..num(4)? {
                ctx.db
                    .transaction(|tx| {
                        for t in [&t1, &t2] {
                            let now = tx.get(t, &key)?.map_or(0, |r| r.val);
                            tx.write(
                                t,
                                Kv {
                                    key: key.clone(),
                                    val: now + 1,
                                },
                            )?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(e)?;
            }
            Ok(String::new())
        }
        // crash2pc: exit in the middle of the next two-phase commit this
        // node coordinates (after the prepares, before the decision).
        "crash2pc" => {
            ctx.repl.crash_after_prepare();
            Ok(String::new())
        }
        // tx2 T1 T2 KEY VAL: one transaction writing KEY=VAL to both tables.
        "tx2" => {
            let (t1, t2) = (table(ctx, arg(1))?, table(ctx, arg(2))?);
            let rec = Kv {
                key: arg(3).into(),
                val: num(4)?,
            };
            ctx.db
                .transaction(|tx| {
                    tx.write(&t1, rec.clone())?;
                    tx.write(&t2, rec.clone())
                })
                .await
                .map_err(e)?;
            Ok(String::new())
        }
        // load TABLE PREFIX N: background dirty writes PREFIX0..N; stops
        // at the first error.
        "load" => {
            let t = table(ctx, arg(1))?;
            let prefix = arg(2).to_string();
            let n = num(3)?;
            let h = tokio::spawn(async move {
                let mut done = 0;
                for i in 0..n {
                    let w = t
                        .dirty_write(Kv {
                            key: format!("{prefix}{i}"),
                            val: i,
                        })
                        .await;
                    if let Err(e) = w {
                        return (done, Some(format!("write {i}: {e}")));
                    }
                    done += 1;
                }
                (done, None)
            });
            ctx.loads.lock().push(h);
            Ok(String::new())
        }
        // loadall TABLE PREFIX N PAUSE_MS: background dirty writes
        // PREFIX0..N, one every PAUSE_MS (a steady trickle, not a wait),
        // going on past errors; `loadacked` lists the acknowledged keys.
        "loadall" => {
            let t = table(ctx, arg(1))?;
            let prefix = arg(2).to_string();
            let n = num(3)?;
            let pause = Duration::from_millis(num(4)?.max(0) as u64);
            let h = tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..n {
                    let key = format!("{prefix}{i}");
                    let w = t
                        .dirty_write(Kv {
                            key: key.clone(),
                            val: i,
                        })
                        .await;
                    if w.is_ok() {
                        acked.push(key);
                    }
                    tokio::time::sleep(pause).await;
                }
                acked
            });
            ctx.acked_loads.lock().push(h);
            Ok(String::new())
        }
        // loadacked: waits for the `loadall` loads; their acknowledged
        // keys, comma-separated.
        "loadacked" => {
            let hs: Vec<_> = ctx.acked_loads.lock().drain(..).collect();
            let mut keys = Vec::new();
            for h in hs {
                keys.extend(h.await.map_err(|e| e.to_string())?);
            }
            Ok(keys.join(","))
        }
        // loadwait: acknowledged writes of all loads, then their errors.
        "loadwait" => {
            let hs: Vec<_> = ctx.loads.lock().drain(..).collect();
            let mut total = 0;
            let mut errs = Vec::new();
            for h in hs {
                let (done, err) = h.await.map_err(|e| e.to_string())?;
                total += done;
                errs.extend(err);
            }
            Ok(format!("{total} {}", errs.join("; ")).trim().to_string())
        }
        // has TABLE PREFIX N: how many of PREFIX0..N the local copy holds.
        "has" => {
            let t = table(ctx, arg(1))?;
            let n = num(3)?;
            let found = (0..n)
                .filter(|i| t.get(&format!("{}{i}", arg(2))).is_some())
                .count();
            Ok(found.to_string())
        }
        "addcopy" => {
            ctx.repl
                .add_table_copy(arg(1), arg(2), CopyType::Ram)
                .await
                .map_err(e)?;
            Ok(String::new())
        }
        "delcopy" => {
            ctx.repl.del_table_copy(arg(1), arg(2)).await.map_err(e)?;
            Ok(String::new())
        }
        // The rows this node's copy holds, without waiting for sync.
        "localkeys" => Ok(ctx
            .db
            .table::<Kv>(arg(1))
            .map(|t| t.all().len().to_string())
            .unwrap_or_else(|_| "undeclared".into())),
        "primary" => Ok(ctx.repl.primary(arg(1)).unwrap_or_else(|| "none".into())),
        "insync" => Ok(ctx.repl.is_in_sync(arg(1)).to_string()),
        "schema" => Ok(ctx
            .repl
            .schema()
            .iter()
            .map(|s| {
                let copies: Vec<String> = s.copies.keys().cloned().collect();
                format!("{}:{}", s.def.name, copies.join("+"))
            })
            .collect::<Vec<_>>()
            .join(";")),
        // bench TABLE N CONC: N transactions over CONC tasks, each task
        // incrementing its own key; prints commits/s.
        "bench" => {
            let t = table(ctx, arg(1))?;
            let n = num(2)?;
            let conc = num(3)?.max(1);
            let start = Instant::now();
            let mut hs = Vec::new();
            for c in 0..conc {
                let (db, t) = (ctx.db.clone(), t.clone());
                let per = n / conc;
                hs.push(tokio::spawn(async move {
                    let key = format!("bench{c}");
                    for _ in 0..per {
                        incr(&db, &t, &key, 1).await?;
                    }
                    Ok::<_, String>(())
                }));
            }
            for h in hs {
                h.await.map_err(|e| e.to_string())??;
            }
            let secs = start.elapsed().as_secs_f64();
            Ok(format!("{:.0}", (n / conc * conc) as f64 / secs))
        }
        other => Err(format!("unknown command {other:?}")),
    }
}
