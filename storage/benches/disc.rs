//! Throughput of the disc log against redb, and recovery time.
//!
//! Run with `cargo bench -p beamline-storage --bench disc`; the figures are
//! in docs/storage-disc.md. Every write is a ~100-byte payload in a
//! directory under the system temp dir (a real disk here, so fsync costs
//! what it costs). Cases:
//!
//! - `log/every_commit/1`: one appender, an fsync per append (the default);
//! - `log/group/64`: 64 concurrent appenders, group commit taking what is
//!   queued (`max_delay` 0);
//! - `log/group_100us/64`: the same, but a group waits up to 100 µs for
//!   company, up to 64 appends;
//! - `log/none/1`: no fsync, for the cost of the rest of the path;
//! - `redb/commit_per_write`: one insert per write transaction, redb's
//!   default durability (fsync per commit), the anchor;
//! - `redb/batch_64`: 64 inserts per write transaction;
//! - `recovery/1M`: opening a directory whose log holds 1,000,000 frames.
//!
//! Throughput is per write (element), whatever the batching.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beamline_storage::disc::{DiscLog, DiscOptions, SyncPolicy};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redb::{Database, TableDefinition};
use tokio::runtime::Runtime;

const PAYLOAD: usize = 100;
const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bench");

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `iters` appends from `appenders` concurrent tasks; returns the wall time.
fn log_run(rt: &Runtime, log: &Arc<DiscLog>, appenders: u64, iters: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|a| {
                let log = Arc::clone(log);
                // Spread iters over the tasks, the remainder to the first.
                let n = iters / appenders + u64::from(a < iters % appenders);
                tokio::spawn(async move {
                    for _ in 0..n {
                        log.append(vec![0x5a; PAYLOAD]).await.expect("append");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("appender");
        }
        start.elapsed()
    })
}

fn log_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    let cases = [
        ("every_commit/1", SyncPolicy::EveryCommit, 1),
        (
            "group/64",
            SyncPolicy::Group {
                max_delay: Duration::ZERO,
                max_batch: 256,
            },
            64,
        ),
        (
            "group_100us/64",
            SyncPolicy::Group {
                max_delay: Duration::from_micros(100),
                max_batch: 64,
            },
            64,
        ),
        ("none/1", SyncPolicy::None, 1),
    ];
    for (name, sync, appenders) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (log, _) =
            DiscLog::open(tmp.path(), DiscOptions::default().with_sync(sync)).expect("open");
        let log = Arc::new(log);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| log_run(&rt, &log, appenders, iters));
        });
    }
    group.finish();
}

fn redb_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("redb");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for (name, per_txn) in [("commit_per_write", 1u64), ("batch_64", 64)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = Database::create(tmp.path().join("bench.redb")).expect("redb create");
        let mut key = 0u64;
        let value = vec![0x5a; PAYLOAD];
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(per_txn);
                    let txn = db.begin_write().expect("begin");
                    {
                        let mut table = txn.open_table(TABLE).expect("table");
                        for _ in 0..n {
                            table.insert(key, value.as_slice()).expect("insert");
                            key += 1;
                        }
                    }
                    txn.commit().expect("commit");
                    left -= n;
                }
                start.elapsed()
            });
        });
    }
    group.finish();
}

fn recovery(c: &mut Criterion) {
    const FRAMES: u64 = 1_000_000;
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Fill the log once, without fsync (only recovery is measured), from
    // several tasks so the writer batches.
    let (log, _) = DiscLog::open(
        tmp.path(),
        DiscOptions::default().with_sync(SyncPolicy::None),
    )
    .expect("open");
    let log = Arc::new(log);
    log_run(&rt, &log, 16, FRAMES);
    let log = Arc::into_inner(log).expect("sole owner");
    rt.block_on(async {
        log.sync().await.expect("sync");
        log.close().await.expect("close");
    });

    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("1M", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let (log, recovery) =
                    DiscLog::open(tmp.path(), DiscOptions::default()).expect("reopen");
                total += start.elapsed();
                assert_eq!(recovery.frames.len() as u64, FRAMES);
                drop(recovery);
                // Not timed: waiting for the writer to let go of the lock.
                rt.block_on(log.close()).expect("close");
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, log_throughput, redb_throughput, recovery);
criterion_main!(benches);
