//! Tests of the log as a whole: open, append, recover, damage.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn open(dir: &Path, options: DiscOptions) -> (DiscLog, Recovery) {
    DiscLog::open(dir, options).expect("open")
}

/// Appends `payloads` through a fresh session and closes it.
fn append_all(dir: &Path, options: DiscOptions, payloads: &[Vec<u8>]) -> Vec<Lsn> {
    rt().block_on(async {
        let (log, _) = open(dir, options);
        let mut lsns = Vec::new();
        for p in payloads {
            lsns.push(log.append(p.clone()).await.expect("append"));
        }
        log.close().await.expect("close");
        lsns
    })
}

fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("payload number {i}").into_bytes())
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<_> = fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    out.sort();
    out
}

fn reopen_frames(dir: &Path) -> Recovery {
    let (log, recovery) = open(dir, DiscOptions::default());
    drop(log);
    recovery
}

/// Reopens once the previous session's writer thread has let go of the
/// lock (dropping a `DiscLog` releases it asynchronously).
fn open_when_free(dir: &Path) -> DiscResult<(DiscLog, Recovery)> {
    DiscLog::open(
        dir,
        DiscOptions::default().with_lock_wait(Duration::from_secs(10)),
    )
}

#[test]
fn round_trip_and_lsns_continue_after_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lsns = append_all(tmp.path(), DiscOptions::default(), &payloads(5));
    assert_eq!(lsns, vec![1, 2, 3, 4, 5]);
    let more = append_all(tmp.path(), DiscOptions::default(), &payloads(2));
    assert_eq!(more, vec![6, 7]);
    let recovery = reopen_frames(tmp.path());
    assert_eq!(recovery.next_lsn, 8);
    assert_eq!(recovery.log_start, 1);
    assert!(recovery.dropped_tail.is_none());
    let got: Vec<_> = recovery.frames.iter().map(|f| f.payload.clone()).collect();
    let mut want = payloads(5);
    want.extend(payloads(2));
    assert_eq!(got, want);
}

#[test]
fn torn_last_frame_of_every_length_is_dropped_and_earlier_frames_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    append_all(tmp.path(), DiscOptions::default(), &payloads(3));
    let seg = segments(tmp.path()).pop().expect("segment");
    let whole = fs::read(&seg).expect("read");
    let last_start = whole.len() - (frame::HEADER_LEN + payloads(3)[2].len());
    for cut in last_start..whole.len() {
        fs::write(&seg, &whole[..cut]).expect("tear");
        let (log, recovery) = open_when_free(tmp.path()).expect("open torn");
        assert_eq!(recovery.frames.len(), 2, "cut at {cut}");
        assert_eq!(recovery.next_lsn, 3);
        assert_eq!(
            recovery.dropped_tail.is_some(),
            cut > last_start,
            "cut at {cut}"
        );
        assert_eq!(fs::metadata(&seg).expect("meta").len(), last_start as u64);
        drop(log);
    }
    // And the log goes on from there.
    let (log, _) = open_when_free(tmp.path()).expect("open");
    let lsn = rt().block_on(async {
        let lsn = log.append(b"after".to_vec()).await.expect("append");
        log.close().await.expect("close");
        lsn
    });
    assert_eq!(lsn, 3);
    let recovery = reopen_frames(tmp.path());
    assert_eq!(recovery.frames[2].payload, b"after");
}

#[test]
fn flipped_bit_in_the_last_frame_drops_only_that_frame() {
    let tmp = tempfile::tempdir().expect("tempdir");
    append_all(tmp.path(), DiscOptions::default(), &payloads(3));
    let seg = segments(tmp.path()).pop().expect("segment");
    let whole = fs::read(&seg).expect("read");
    let last_start = whole.len() - (frame::HEADER_LEN + payloads(3)[2].len());
    for byte in last_start..whole.len() {
        let mut bad = whole.clone();
        bad[byte] ^= 0x04;
        fs::write(&seg, &bad).expect("flip");
        let (log, recovery) = open_when_free(tmp.path()).expect("open flipped");
        assert_eq!(recovery.frames.len(), 2, "byte {byte}");
        assert!(recovery.dropped_tail.is_some());
        drop(log);
    }
}

#[test]
fn flipped_bit_in_a_middle_frame_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    append_all(tmp.path(), DiscOptions::default(), &payloads(3));
    let seg = segments(tmp.path()).pop().expect("segment");
    let whole = fs::read(&seg).expect("read");
    let second = frame::HEADER_LEN + payloads(3)[0].len();
    let third = second + frame::HEADER_LEN + payloads(3)[1].len();
    for byte in second..third {
        let mut bad = whole.clone();
        bad[byte] ^= 0x80;
        fs::write(&seg, &bad).expect("flip");
        match open_when_free(tmp.path()) {
            Err(DiscError::CorruptLog { offset, .. }) => {
                assert_eq!(offset, second as u64, "byte {byte}");
            }
            other => panic!("byte {byte}: expected CorruptLog, got {other:?}"),
        }
        // Nothing was cut off.
        assert_eq!(fs::read(&seg).expect("read"), bad);
    }
}

#[test]
fn segments_roll_over_and_damage_in_an_older_one_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = DiscOptions::default().with_segment_size(200);
    append_all(tmp.path(), options, &payloads(40));
    let segs = segments(tmp.path());
    assert!(segs.len() > 3, "{} segments", segs.len());
    for seg in &segs {
        // A segment may pass the limit by at most one frame.
        assert!(fs::metadata(seg).expect("meta").len() < 200 + 64);
    }
    let recovery = reopen_frames(tmp.path());
    assert_eq!(recovery.frames.len(), 40);
    assert!(
        recovery
            .frames
            .iter()
            .enumerate()
            .all(|(i, f)| f.lsn == i as u64 + 1)
    );

    // Tearing the end of a segment that is not the last is not a crash
    // pattern: refuse it.
    let first = fs::read(&segs[0]).expect("read");
    fs::write(&segs[0], &first[..first.len() - 1]).expect("tear");
    assert!(matches!(
        open_when_free(tmp.path()),
        Err(DiscError::CorruptLog { .. })
    ));
    fs::write(&segs[0], &first).expect("restore");
    // A missing segment in the middle is a gap.
    fs::remove_file(&segs[1]).expect("remove");
    assert!(matches!(
        open_when_free(tmp.path()),
        Err(DiscError::CorruptLog { .. })
    ));
}

#[test]
fn snapshot_truncate_recover() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = DiscOptions::default().with_segment_size(150);
    rt().block_on(async {
        let (log, _) = open(tmp.path(), options.clone());
        for p in payloads(30) {
            log.append(p).await.expect("append");
        }
        assert_eq!(log.last_lsn(), 30);
        log.write_snapshot("users", 20, b"state up to 19".to_vec())
            .await
            .expect("snapshot users");
        log.write_snapshot("rooms", 20, b"rooms".to_vec())
            .await
            .expect("snapshot rooms");
        let removed = log.truncate_before(20).await.expect("truncate");
        assert!(removed > 0);
        assert!(matches!(
            log.write_snapshot("users", 10, Vec::new()).await,
            Err(DiscError::StaleSnapshot { newest: 20, .. })
        ));
        log.close().await.expect("close");
    });
    let recovery = reopen_frames(tmp.path());
    let tables: Vec<_> = recovery
        .snapshots
        .iter()
        .map(|s| (s.table.as_str(), s.lsn))
        .collect();
    assert_eq!(tables, vec![("rooms", 20), ("users", 20)]);
    assert!(recovery.log_start > 1 && recovery.log_start <= 20);
    assert_eq!(
        recovery.frames.first().map(|f| f.lsn),
        Some(recovery.log_start)
    );
    let replay: Vec<_> = recovery.frames_from(20).iter().map(|f| f.lsn).collect();
    assert_eq!(replay, (20..=30).collect::<Vec<_>>());
    assert_eq!(recovery.next_lsn, 31);
}

#[test]
fn snapshot_beyond_the_end_of_the_log_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let (log, _) = open(tmp.path(), DiscOptions::default());
        log.append(b"one".to_vec()).await.expect("append");
        log.write_snapshot("t", 9, Vec::new())
            .await
            .expect("snapshot");
        log.close().await.expect("close");
    });
    assert!(matches!(
        DiscLog::open(tmp.path(), DiscOptions::default()),
        Err(DiscError::CorruptLog { .. })
    ));
}

#[test]
fn unknown_format_version_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    append_all(tmp.path(), DiscOptions::default(), &payloads(1));
    fs::write(tmp.path().join("FORMAT"), "7\n").expect("write");
    assert!(matches!(
        DiscLog::open(tmp.path(), DiscOptions::default()),
        Err(DiscError::UnsupportedFormat { found: 7, .. })
    ));
}

#[test]
fn second_open_is_locked_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (log, _) = open(tmp.path(), DiscOptions::default());
    assert!(matches!(
        DiscLog::open(tmp.path(), DiscOptions::default()),
        Err(DiscError::Locked { .. })
    ));
    rt().block_on(log.close()).expect("close");
    open(tmp.path(), DiscOptions::default());
}

#[test]
fn oversized_payload_and_bad_options_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        DiscLog::open(tmp.path(), DiscOptions::default().with_queue_capacity(0)),
        Err(DiscError::InvalidOptions(_))
    ));
    rt().block_on(async {
        let (log, _) = open(tmp.path(), DiscOptions::default().with_max_payload(10));
        assert!(matches!(
            log.append(vec![0; 11]).await,
            Err(DiscError::PayloadTooLarge { len: 11, max: 10 })
        ));
        assert_eq!(log.append(vec![0; 10]).await.expect("append"), 1);
    });
}

#[test]
fn group_commit_serves_many_concurrent_appenders() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = DiscOptions::default()
        .with_sync(SyncPolicy::Group {
            max_delay: Duration::from_micros(200),
            max_batch: 32,
        })
        .with_queue_capacity(16)
        .with_segment_size(4096);
    let mut lsns = rt().block_on(async {
        let (log, _) = open(tmp.path(), options);
        let log = Arc::new(log);
        let tasks: Vec<_> = (0..64)
            .map(|task| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for i in 0..20 {
                        let payload = format!("{task}:{i}").into_bytes();
                        mine.push((log.append(payload.clone()).await.expect("append"), payload));
                    }
                    mine
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        Arc::into_inner(log)
            .expect("sole owner")
            .close()
            .await
            .expect("close");
        all
    });
    lsns.sort();
    assert_eq!(lsns.len(), 64 * 20);
    assert!(
        lsns.iter()
            .enumerate()
            .all(|(i, (lsn, _))| *lsn == i as u64 + 1)
    );
    let recovery = reopen_frames(tmp.path());
    let got: Vec<_> = recovery
        .frames
        .into_iter()
        .map(|f| (f.lsn, f.payload))
        .collect();
    assert_eq!(got, lsns);
}

#[test]
fn submit_queues_in_call_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let (log, _) = open(
            tmp.path(),
            DiscOptions::default().with_sync(SyncPolicy::None),
        );
        let futures: Vec<_> = (0..10).map(|i| log.submit(vec![i])).collect();
        for (i, f) in futures.into_iter().enumerate() {
            assert_eq!(f.await.expect("durable"), i as u64 + 1);
        }
        let slot = log.reserve().await.expect("reserve");
        assert_eq!(slot.submit(vec![10]).await.expect("slot"), 11);
        log.sync().await.expect("sync");
    });
}
