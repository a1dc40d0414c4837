//! Crash consistency: a child process appends as fast as it can and prints
//! every LSN the log acknowledged; the test kills it with SIGKILL mid-stream,
//! reopens the directory, and checks that every acknowledged frame is there,
//! intact, and that the log reads back without a hole or a damaged frame.
//!
//! The child is this same test binary, re-run with `CRASH_CHILD_DIR` set;
//! without that variable the `crash_child` test does nothing.
//!
//! A second child runs under a file-size limit (`ulimit -f`, with SIGXFSZ
//! ignored so that the write fails with EFBIG instead of killing it): the
//! writer must report the failure, refuse everything after it, and the
//! partial frame it left must be cut off at the next open.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use beamline_storage::disc::{DiscError, DiscLog, DiscOptions, SyncPolicy};

const DIR_VAR: &str = "CRASH_CHILD_DIR";
const POLICY_VAR: &str = "CRASH_CHILD_POLICY";
const FULL_DIR_VAR: &str = "FULL_DISC_CHILD_DIR";

/// The payload appender `task` sends as its `seq`-th frame: about 100 bytes,
/// and recomputable by the parent from the line the child printed.
fn payload(task: u64, seq: u64) -> Vec<u8> {
    let mut p = format!("task {task} seq {seq} ").into_bytes();
    p.resize(100, b'a' + (seq % 26) as u8);
    p
}

fn policy(name: &str) -> (SyncPolicy, u64) {
    match name {
        "group" => (
            SyncPolicy::Group {
                max_delay: Duration::ZERO,
                max_batch: 256,
            },
            32,
        ),
        _ => (SyncPolicy::EveryCommit, 1),
    }
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let (sync, tasks) = policy(&std::env::var(POLICY_VAR).unwrap_or_default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (log, _) =
            DiscLog::open(&dir, DiscOptions::default().with_sync(sync)).expect("child open");
        let log = Arc::new(log);
        let appenders: Vec<_> = (0..tasks)
            .map(|task| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    for seq in 0.. {
                        let lsn = log.append(payload(task, seq)).await.expect("append");
                        // println! takes stdout's lock and writes whole lines.
                        println!("ack {lsn} {task} {seq}");
                    }
                })
            })
            .collect();
        for a in appenders {
            a.await.expect("appender");
        }
    });
}

/// Runs the child until it has acknowledged appends for about a second,
/// kills it, and returns what it acknowledged: LSN → (task, seq).
fn run_and_kill(dir: &Path, policy: &str) -> BTreeMap<u64, (u64, u64)> {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env(POLICY_VAR, policy)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acked = BTreeMap::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut first_ack: Option<Instant> = None;
    // Poll the child's output with a deadline: run for ~1 s after the first
    // acknowledgement, so the kill lands mid-stream.
    loop {
        let now = Instant::now();
        assert!(now < deadline, "child acknowledged nothing within 60 s");
        if first_ack.is_some_and(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            break;
        }
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => record(&mut acked, &line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("child exited early"),
        }
        if first_ack.is_none() && !acked.is_empty() {
            first_ack = Some(Instant::now());
        }
    }
    // Child::kill is SIGKILL on Unix, sent to the PID this test spawned.
    child.kill().expect("kill child");
    child.wait().expect("reap child");
    for line in lines.iter() {
        record(&mut acked, &line);
    }
    reader.join().expect("reader");
    acked
}

fn record(acked: &mut BTreeMap<u64, (u64, u64)>, line: &str) {
    let parts: Vec<&str> = line.split_whitespace().collect();
    if let ["ack", lsn, task, seq] = parts[..] {
        // A line cut short by the kill fails to parse and is ignored: that
        // append was acknowledged but never claimed.
        if let (Ok(lsn), Ok(task), Ok(seq)) = (lsn.parse(), task.parse(), seq.parse()) {
            acked.insert(lsn, (task, seq));
        }
    }
}

fn crash_and_check(policy: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let acked = run_and_kill(tmp.path(), policy);
    assert!(!acked.is_empty());

    // The killed process's lock died with it.
    let (_log, recovery) = DiscLog::open(tmp.path(), DiscOptions::default()).expect("reopen");
    // Recovery read every frame back with a good checksum and contiguous
    // LSNs (or it would have failed); the torn tail, if any, is gone.
    let frames: BTreeMap<u64, &[u8]> = recovery
        .frames
        .iter()
        .map(|f| (f.lsn, f.payload.as_slice()))
        .collect();
    assert!(
        recovery
            .frames
            .iter()
            .enumerate()
            .all(|(i, f)| f.lsn == i as u64 + 1)
    );
    for (lsn, (task, seq)) in &acked {
        let got = frames.get(lsn).unwrap_or_else(|| {
            panic!(
                "acknowledged LSN {lsn} lost ({} frames recovered)",
                frames.len()
            )
        });
        assert_eq!(*got, payload(*task, *seq).as_slice(), "LSN {lsn}");
    }
    // Every recovered frame is one the child sent (acknowledged or not).
    for f in &recovery.frames {
        let text = String::from_utf8_lossy(&f.payload);
        assert!(text.starts_with("task "), "LSN {}: {text:?}", f.lsn);
    }
    eprintln!(
        "{policy}: {} acknowledged, {} recovered, torn tail: {:?}",
        acked.len(),
        recovery.frames.len(),
        recovery.dropped_tail.map(|t| t.bytes)
    );
}

#[test]
fn kill_9_during_every_commit_appends_loses_nothing_acknowledged() {
    crash_and_check("every");
}

#[test]
fn kill_9_during_group_commit_appends_loses_nothing_acknowledged() {
    crash_and_check("group");
}

#[test]
fn full_disc_child() {
    let Ok(dir) = std::env::var(FULL_DIR_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (log, _) = DiscLog::open(&dir, DiscOptions::default()).expect("child open");
        let mut seq = 0;
        let failure = loop {
            match log.append(payload(0, seq)).await {
                Ok(lsn) => println!("ack {lsn} 0 {seq}"),
                Err(e) => break e,
            }
            seq += 1;
            assert!(seq < 1_000_000, "the file-size limit never hit");
        };
        match &failure {
            DiscError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(27)), // EFBIG
            other => panic!("expected the I/O error, got {other}"),
        }
        assert!(matches!(
            log.append(payload(0, seq + 1)).await,
            Err(DiscError::WriterFailed(_))
        ));
        assert!(matches!(log.sync().await, Err(DiscError::WriterFailed(_))));
        println!("writer stopped");
    });
}

#[test]
fn a_failed_write_stops_the_writer_and_its_partial_frame_is_cut_off() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    // Ignored signals stay ignored across exec; 64 blocks is 32 to 64 KiB
    // depending on the shell, a few hundred frames.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 64 && exec \"$0\" --exact full_disc_child --nocapture",
        ])
        .arg(exe)
        .env(FULL_DIR_VAR, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    // stdout closed: the child is exiting; reap it, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().expect("kill");
            panic!("child did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "child failed: {status}");
    assert!(lines.iter().any(|l| l == "writer stopped"));
    let mut acked = BTreeMap::new();
    for line in &lines {
        record(&mut acked, line);
    }
    assert!(acked.len() > 10, "only {} appends fit", acked.len());

    let (_log, recovery) = DiscLog::open(tmp.path(), DiscOptions::default()).expect("reopen");
    // Exactly the acknowledged frames: the one that failed half-written is
    // gone, and nothing before it.
    assert_eq!(recovery.frames.len(), acked.len());
    // 116-byte frames do not divide 32 or 64 KiB: the last write was cut.
    assert!(recovery.dropped_tail.is_some());
    for (f, (lsn, (task, seq))) in recovery.frames.iter().zip(&acked) {
        assert_eq!(f.lsn, *lsn);
        assert_eq!(f.payload, payload(*task, *seq));
    }
}
