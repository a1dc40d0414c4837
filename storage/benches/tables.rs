//! Dirty reads and writes, and transaction commits, on one node's RAM
//! tables, against a plain `RwLock<BTreeMap>` doing the same (the floor any
//! table layer sits on).
//!
//! Run: `cargo bench -p beamline-storage --bench tables`

use std::collections::BTreeMap;
use std::time::Duration;

use beamline_storage::{Db, Record, TableDef};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    jid: String,
    node: String,
    priority: i8,
}

impl Record for Session {
    type Key = String;
    fn key(&self) -> String {
        self.jid.clone()
    }
}

const KEYS: usize = 10_000;

fn session(i: usize) -> Session {
    Session {
        jid: format!("user{i}@example.org/phone"),
        node: "node1".into(),
        priority: 0,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = Db::in_memory();
    let t = db
        .create_table::<Session>(TableDef::new("sessions"))
        .expect("table");
    rt.block_on(async {
        for i in 0..KEYS {
            t.dirty_write(session(i)).await.expect("write");
        }
    });
    let baseline: RwLock<BTreeMap<String, Session>> =
        RwLock::new((0..KEYS).map(|i| (session(i).jid, session(i))).collect());
    let keys: Vec<String> = (0..KEYS).map(|i| session(i).jid).collect();

    let mut g = c.benchmark_group("tables");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("baseline_rwlock_btreemap_read", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            baseline.read().get(&keys[i]).cloned()
        })
    });
    g.bench_function("dirty_read", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            t.get(&keys[i])
        })
    });
    g.bench_function("baseline_rwlock_btreemap_write", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            let s = session(i);
            baseline.write().insert(s.jid.clone(), s);
        })
    });
    g.bench_function("dirty_write", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 7919) % KEYS;
            let t = t.clone();
            async move { t.dirty_write(session(i)).await.expect("write") }
        })
    });
    g.bench_function("transaction_read_modify_write", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 7919) % KEYS;
            let (db, t, key) = (db.clone(), t.clone(), keys[i].clone());
            async move {
                db.transaction(|tx| {
                    let mut s = tx.get(&t, &key)?.expect("present");
                    s.priority = s.priority.wrapping_add(1);
                    tx.write(&t, s)
                })
                .await
                .expect("commit")
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
