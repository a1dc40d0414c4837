//! Property: whatever point a crash cuts the log at, recovery gives back
//! exactly the frames that were whole before the cut, and the log goes on
//! from there; a damaged frame is dropped only when it is the last one.

use std::fs;
use std::path::{Path, PathBuf};

use beamline_storage::disc::{DiscError, DiscLog, DiscOptions, SyncPolicy};
use proptest::prelude::*;

const HEADER_LEN: usize = 16;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn options(segment_size: u64) -> DiscOptions {
    DiscOptions::default()
        .with_sync(SyncPolicy::None)
        .with_segment_size(segment_size)
}

fn write_log(dir: &Path, segment_size: u64, payloads: &[Vec<u8>]) {
    rt().block_on(async {
        let (log, _) = DiscLog::open(dir, options(segment_size)).expect("open");
        for p in payloads {
            log.append(p.clone()).await.expect("append");
        }
        log.close().await.expect("close");
    });
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<_> = fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    out.sort();
    out
}

/// Cuts the log `cut` bytes into its concatenated segments: the segment
/// holding the cut is truncated there, later ones are removed (a crash
/// before they were created).
fn cut_log(dir: &Path, cut: usize) {
    let mut seen = 0;
    let mut cut_done = false;
    for seg in segments(dir) {
        let len = fs::metadata(&seg).expect("meta").len() as usize;
        if cut_done {
            fs::remove_file(&seg).expect("remove");
        } else if seen + len >= cut {
            let bytes = fs::read(&seg).expect("read");
            fs::write(&seg, &bytes[..cut - seen]).expect("cut");
            cut_done = true;
        }
        seen += len;
    }
}

fn payload_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_cut_anywhere_recovers_exactly_the_whole_frames_before_it(
        payloads in payload_strategy(),
        segment_size in 64u64..1024,
        cut_fraction in 0.0f64..=1.0,
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        write_log(tmp.path(), segment_size, &payloads);
        let total: usize = payloads.iter().map(|p| HEADER_LEN + p.len()).sum();
        let cut = ((total as f64) * cut_fraction) as usize;
        cut_log(tmp.path(), cut);

        let mut end = 0;
        let whole: Vec<&Vec<u8>> = payloads
            .iter()
            .take_while(|p| {
                end += HEADER_LEN + p.len();
                end <= cut
            })
            .collect();

        let (log, recovery) = DiscLog::open(tmp.path(), options(segment_size)).expect("reopen");
        let got: Vec<&Vec<u8>> = recovery.frames.iter().map(|f| &f.payload).collect();
        prop_assert_eq!(&got, &whole);
        prop_assert!(recovery.frames.iter().enumerate().all(|(i, f)| f.lsn == i as u64 + 1));
        prop_assert_eq!(recovery.next_lsn, whole.len() as u64 + 1);

        // The log goes on after the cut, and that survives too.
        rt().block_on(async {
            let lsn = log.append(b"after the crash".to_vec()).await.expect("append");
            assert_eq!(lsn, whole.len() as u64 + 1);
            log.close().await.expect("close");
        });
        let (_log, again) = DiscLog::open(tmp.path(), options(segment_size)).expect("third open");
        prop_assert_eq!(again.frames.len(), whole.len() + 1);
        prop_assert!(again.dropped_tail.is_none());
        prop_assert_eq!(
            again.frames.last().map(|f| f.payload.as_slice()),
            Some(&b"after the crash"[..])
        );
    }

    #[test]
    fn a_damaged_frame_is_dropped_only_when_it_is_the_last(
        payloads in payload_strategy(),
        victim_pick in any::<prop::sample::Index>(),
        byte_pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        // One segment, so that the victim's position decides alone.
        write_log(tmp.path(), 1 << 30, &payloads);
        let victim = victim_pick.index(payloads.len());
        let start: usize = payloads[..victim].iter().map(|p| HEADER_LEN + p.len()).sum();
        let byte = start + byte_pick.index(HEADER_LEN + payloads[victim].len());
        let seg = segments(tmp.path()).pop().expect("segment");
        let mut bytes = fs::read(&seg).expect("read");
        bytes[byte] ^= 1 << bit;
        fs::write(&seg, &bytes).expect("flip");

        match DiscLog::open(tmp.path(), options(1 << 30)) {
            Ok((_log, recovery)) => {
                prop_assert_eq!(victim, payloads.len() - 1, "a middle frame was skipped");
                prop_assert_eq!(recovery.frames.len(), victim);
                prop_assert!(recovery.dropped_tail.is_some());
            }
            Err(DiscError::CorruptLog { offset, .. }) => {
                prop_assert!(victim < payloads.len() - 1, "the last frame was refused");
                prop_assert_eq!(offset, start as u64);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any bytes at all in a segment or a snapshot file: open returns Ok or
    /// an error, and never panics.
    #[test]
    fn arbitrary_bytes_never_panic(
        segment in prop::collection::vec(any::<u8>(), 0..600),
        snapshot in prop::collection::vec(any::<u8>(), 0..100),
        with_snapshot in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        write_log(tmp.path(), 1 << 20, &[b"seed".to_vec()]);
        let seg = segments(tmp.path()).pop().expect("segment");
        fs::write(&seg, &segment).expect("garbage segment");
        if with_snapshot {
            let snap = tmp.path().join("snapshots").join("t.00000000000000000001.snap");
            fs::write(snap, &snapshot).expect("garbage snapshot");
        }
        let _ = DiscLog::open(tmp.path(), options(1 << 20));
    }
}
