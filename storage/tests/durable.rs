//! Disc tables survive restarts: recovery from the log, from snapshots
//! plus the log, and after kill -9 in the middle of a storm of writes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use beamline_storage::disc::{DiscOptions, SyncPolicy};
use beamline_storage::{CopyType, DurableDb, Record, TableDef, TableKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    id: u64,
    body: String,
}

impl Record for Item {
    type Key = u64;
    fn key(&self) -> u64 {
        self.id
    }
}

fn def(name: &str) -> TableDef {
    TableDef::new(name)
        .kind(TableKind::OrderedSet)
        .copy(CopyType::Disc)
}

/// Reopening right after dropping waits for the old writer thread to let
/// go of the directory lock.
fn opts() -> DiscOptions {
    DiscOptions::default().with_lock_wait(Duration::from_secs(10))
}

fn item(id: u64) -> Item {
    Item {
        id,
        body: format!("item number {id}"),
    }
}

#[tokio::test]
async fn writes_deletes_and_transactions_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = DurableDb::open(dir.path(), opts()).await.expect("open");
        let t = db.create_table::<Item>(def("items")).expect("table");
        let ram = db
            .create_table::<Item>(TableDef::new("scratch"))
            .expect("ram table");
        for id in 0..50 {
            t.dirty_write(item(id)).await.expect("write");
            ram.dirty_write(item(id)).await.expect("write");
        }
        t.dirty_delete(7).await.expect("delete");
        db.transaction(|tx| {
            tx.write(&t, item(100))?;
            tx.delete(&t, 8)
        })
        .await
        .expect("tx");
    }
    let db = DurableDb::open(dir.path(), opts()).await.expect("reopen");
    let t = db.create_table::<Item>(def("items")).expect("table");
    let ram = db
        .create_table::<Item>(TableDef::new("scratch"))
        .expect("ram");
    assert_eq!(t.count(), 49);
    assert!(t.get(&7).is_none() && t.get(&8).is_none());
    assert_eq!(t.get(&100), Some(item(100)));
    assert_eq!(ram.count(), 0, "RAM copies are not kept");
    // Commits keep numbering after the recovered ones.
    let before = db.last_seq();
    t.dirty_write(item(101)).await.expect("write");
    assert!(db.last_seq() > before);
}

#[tokio::test]
async fn checkpoint_then_more_commits_recover_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = opts().with_segment_size(4096);
    {
        let db = DurableDb::open(dir.path(), opts.clone())
            .await
            .expect("open");
        let a = db.create_table::<Item>(def("a")).expect("a");
        let b = db.create_table::<Item>(def("b")).expect("b");
        for id in 0..200 {
            a.dirty_write(item(id)).await.expect("w");
        }
        db.checkpoint().await.expect("checkpoint");
        for id in 200..300 {
            a.dirty_write(item(id)).await.expect("w");
            b.dirty_write(item(id)).await.expect("w");
        }
        a.dirty_delete(0).await.expect("d");
    }
    let segments = std::fs::read_dir(dir.path().join("log"))
        .expect("log dir")
        .count();
    let db = DurableDb::open(dir.path(), opts).await.expect("reopen");
    let a = db.create_table::<Item>(def("a")).expect("a");
    let b = db.create_table::<Item>(def("b")).expect("b");
    assert_eq!(a.count(), 299);
    assert_eq!(b.count(), 100);
    assert_eq!(a.all().first().map(|i| i.id), Some(1));
    assert!(
        segments < 20,
        "old segments were truncated ({segments} left)"
    );
}

#[tokio::test]
async fn checkpoint_keeps_the_log_of_undeclared_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = DurableDb::open(dir.path(), opts()).await.expect("open");
        let a = db.create_table::<Item>(def("old")).expect("a");
        a.dirty_write(item(1)).await.expect("w");
    }
    {
        // This run does not declare "old"; its checkpoint must not lose it.
        let db = DurableDb::open(dir.path(), opts()).await.expect("open");
        let n = db.create_table::<Item>(def("new")).expect("n");
        n.dirty_write(item(2)).await.expect("w");
        db.checkpoint().await.expect("checkpoint");
    }
    let db = DurableDb::open(dir.path(), opts()).await.expect("open");
    assert_eq!(
        db.create_table::<Item>(def("old")).expect("old").get(&1),
        Some(item(1))
    );
}

const CHILD_DIR: &str = "BEAMLINE_DURABLE_CHILD_DIR";
const CHILD_POLICY: &str = "BEAMLINE_DURABLE_CHILD_POLICY";

/// The child: writes as fast as it can from 16 tasks, checkpointing now and
/// then, printing the id of every acknowledged write.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let group = std::env::var(CHILD_POLICY).is_ok_and(|p| p == "group");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut opts = opts().with_segment_size(64 * 1024);
        if group {
            opts = opts.with_sync(SyncPolicy::Group {
                max_delay: Duration::ZERO,
                max_batch: 256,
            });
        }
        let db = std::sync::Arc::new(DurableDb::open(&dir, opts).await.expect("open"));
        let t = db.create_table::<Item>(def("storm")).expect("table");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        for w in 0..16u64 {
            let t = t.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let id = w * 1_000_000 + i;
                    t.dirty_write(item(id)).await.expect("write");
                    if tx.send(id).is_err() {
                        return;
                    }
                }
            });
        }
        let db2 = db.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(150)).await;
                db2.checkpoint().await.expect("checkpoint");
            }
        });
        println!("ready");
        while let Some(id) = rx.recv().await {
            println!("{id}");
        }
    });
}

fn crash_and_check(policy: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_POLICY, policy)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    let began = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Ok(id) = line.trim().parse::<u64>() {
            acked.push(id);
        }
        if began.elapsed() > Duration::from_millis(1200) || acked.len() > 200_000 {
            break;
        }
    }
    // kill -9 of the process this test started, mid-storm.
    child.kill().expect("kill");
    let _ = child.wait();
    assert!(acked.len() > 100, "child wrote too little: {}", acked.len());
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let db = DurableDb::open(dir.path(), opts()).await.expect("recover");
        let t = db.create_table::<Item>(def("storm")).expect("table");
        for id in &acked {
            assert_eq!(t.get(id), Some(item(*id)), "acknowledged write {id} lost");
        }
        // Nothing torn: every record present is whole and well-formed.
        for rec in t.all() {
            assert_eq!(rec, item(rec.id));
        }
        eprintln!(
            "{policy}: {} acknowledged before kill -9, {} recovered",
            acked.len(),
            t.count()
        );
    });
}

#[test]
fn kill_9_during_write_storm_loses_no_acknowledged_write() {
    crash_and_check("every");
}

#[test]
fn kill_9_during_group_commit_storm_loses_no_acknowledged_write() {
    crash_and_check("group");
}
