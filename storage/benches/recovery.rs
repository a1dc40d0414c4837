//! Recovery time of a disc table with 1,000,000 records: from the log
//! alone, and from a snapshot (after a checkpoint). Prints figures.
//!
//! Run: `cargo bench -p beamline-storage --bench recovery`

use std::time::{Duration, Instant};

use beamline_storage::disc::{DiscOptions, SyncPolicy};
use beamline_storage::{CopyType, DurableDb, Record, TableDef};
use serde::{Deserialize, Serialize};

const N: u64 = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Roster {
    owner: String,
    contact: String,
    name: String,
    subscription: u8,
}

impl Record for Roster {
    type Key = (String, String);
    fn key(&self) -> (String, String) {
        (self.owner.clone(), self.contact.clone())
    }
}

fn rec(i: u64) -> Roster {
    Roster {
        owner: format!("user{}@example.org", i / 20),
        contact: format!("contact{i}@example.org"),
        name: format!("Contact {i}"),
        subscription: 3,
    }
}

fn def() -> TableDef {
    TableDef::new("roster").copy(CopyType::Disc)
}

fn opts() -> DiscOptions {
    DiscOptions::default()
        .with_sync(SyncPolicy::None)
        .with_lock_wait(Duration::from_secs(30))
}

async fn fill(dir: &std::path::Path) {
    let db = DurableDb::open(dir, opts()).await.expect("open");
    let t = db.create_table::<Roster>(def()).expect("table");
    // Many writers so that the log's group path stays busy.
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < N {
                t.dirty_write(rec(i)).await.expect("write");
                i += 64;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    db.sync().await.expect("sync");
}

async fn recover(dir: &std::path::Path) -> (Duration, usize) {
    let began = Instant::now();
    let db = DurableDb::open(dir, opts()).await.expect("open");
    let t = db.create_table::<Roster>(def()).expect("table");
    (began.elapsed(), t.count())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test` runs benches without --bench: stay quick.
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let began = Instant::now();
        fill(dir.path()).await;
        println!("wrote {N} records in {:.1?}", began.elapsed());
        let (took, n) = recover(dir.path()).await;
        println!("recovery from the log alone: {took:.2?} ({n} records)");
        {
            let db = DurableDb::open(dir.path(), opts()).await.expect("open");
            db.create_table::<Roster>(def()).expect("table");
            db.checkpoint().await.expect("checkpoint");
        }
        let (took, n) = recover(dir.path()).await;
        println!("recovery from a snapshot: {took:.2?} ({n} records)");
    });
}
