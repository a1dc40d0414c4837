//! The data directory: its format version, its lock, and where segments and
//! snapshots live.
//!
//! ```text
//! <dir>/FORMAT                      "1\n": the format version, written once
//! <dir>/LOCK                        flock'ed while a DiscLog has the directory
//! <dir>/log/<first-lsn>.log         log segments, 20-digit zero-padded name
//! <dir>/snapshots/<table>.<lsn>.snap  newest snapshot per table
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Lsn;
use super::error::{DiscError, DiscResult};

/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// How often a waiting opener retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(5);

/// Paths inside an opened, locked data directory. Dropping it releases the
/// lock (the flock goes with the file descriptor).
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) snap_dir: PathBuf,
    _lock: File,
}

impl Layout {
    /// Creates the directory if needed, locks it (waiting up to `lock_wait`
    /// for a holder to let go), and checks or writes its format version.
    pub(crate) fn open(root: &Path, lock_wait: Duration) -> DiscResult<Layout> {
        if !root.exists() {
            fs::create_dir_all(root).map_err(|e| DiscError::io(root, e))?;
            // The new directory's own entry must survive a crash too.
            let parent = root
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            sync_dir(parent)?;
        }
        let lock_path = root.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| DiscError::io(&lock_path, e))?;
        let deadline = Instant::now() + lock_wait;
        loop {
            // fs4's trait, called by path: std's inherent File::try_lock is
            // newer than the workspace MSRV.
            match fs4::FileExt::try_lock(&lock) {
                Ok(()) => break,
                Err(fs4::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    // flock has no wake-up to wait on without blocking for
                    // good; poll.
                    std::thread::sleep(LOCK_POLL);
                }
                Err(fs4::TryLockError::WouldBlock) => {
                    return Err(DiscError::Locked { path: lock_path });
                }
                Err(fs4::TryLockError::Error(e)) => return Err(DiscError::io(&lock_path, e)),
            }
        }
        let layout = Layout {
            root: root.to_path_buf(),
            log_dir: root.join("log"),
            snap_dir: root.join("snapshots"),
            _lock: lock,
        };
        let format_path = root.join("FORMAT");
        match fs::read(&format_path) {
            Ok(bytes) => check_format(&format_path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A directory with segments but no FORMAT was not made by us
                // (FORMAT is written before the first segment).
                if layout.log_dir.exists() && !list_segments(&layout.log_dir)?.is_empty() {
                    return Err(DiscError::NotADiscDirectory {
                        path: format_path,
                        reason: "FORMAT file missing but log segments exist".into(),
                    });
                }
                write_atomically(root, "FORMAT", format!("{FORMAT_VERSION}\n").as_bytes())?;
            }
            Err(e) => return Err(DiscError::io(&format_path, e)),
        }
        for dir in [&layout.log_dir, &layout.snap_dir] {
            if !dir.exists() {
                fs::create_dir(dir).map_err(|e| DiscError::io(dir, e))?;
                sync_dir(root)?;
            }
        }
        Ok(layout)
    }

    /// The path of the segment whose first frame has `first_lsn`.
    pub(crate) fn segment_path(&self, first_lsn: Lsn) -> PathBuf {
        self.log_dir.join(format!("{first_lsn:020}.log"))
    }
}

fn check_format(path: &Path, bytes: &[u8]) -> DiscResult<()> {
    let bad = |reason: &str| DiscError::NotADiscDirectory {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("FORMAT is not UTF-8"))?;
    let found: u32 = text
        .trim()
        .parse()
        .map_err(|_| bad("FORMAT does not hold a version number"))?;
    if found == 0 || found > FORMAT_VERSION {
        return Err(DiscError::UnsupportedFormat {
            path: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Lists segments as `(first_lsn, path)`, sorted by LSN. Files that are not
/// segments are ignored; a `.log` file with a bad name is an error, since it
/// may hold frames we would otherwise miss.
pub(crate) fn list_segments(log_dir: &Path) -> DiscResult<Vec<(Lsn, PathBuf)>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(log_dir).map_err(|e| DiscError::io(log_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DiscError::io(log_dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        // LSNs start at 1; a segment named 0 was not written by us.
        let lsn = stem
            .parse::<Lsn>()
            .ok()
            .filter(|lsn| *lsn > 0)
            .ok_or_else(|| DiscError::NotADiscDirectory {
                path: path.clone(),
                reason: "log segment name is not an LSN".into(),
            })?;
        out.push((lsn, path));
    }
    out.sort_by_key(|(lsn, _)| *lsn);
    Ok(out)
}

/// fsyncs a directory so that creations, renames and deletions in it survive
/// a crash.
pub(crate) fn sync_dir(dir: &Path) -> DiscResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DiscError::io(dir, e))
}

/// Writes `dir/name` so that a crash leaves either the old file or the whole
/// new one: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> DiscResult<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dest = dir.join(name);
    let mut file = File::create(&tmp).map_err(|e| DiscError::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| DiscError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, &dest).map_err(|e| DiscError::io(&dest, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directory_gets_format_and_subdirectories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::open(tmp.path(), Duration::ZERO).expect("open");
        assert_eq!(
            fs::read_to_string(tmp.path().join("FORMAT")).expect("FORMAT"),
            "1\n"
        );
        assert!(layout.log_dir.is_dir() && layout.snap_dir.is_dir());
    }

    #[test]
    fn newer_format_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("FORMAT"), "2\n").expect("write");
        match Layout::open(tmp.path(), Duration::ZERO) {
            Err(DiscError::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            }) => {}
            other => panic!("expected UnsupportedFormat, got {other:?}"),
        }
    }

    #[test]
    fn garbage_format_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("FORMAT"), "hello").expect("write");
        assert!(matches!(
            Layout::open(tmp.path(), Duration::ZERO),
            Err(DiscError::NotADiscDirectory { .. })
        ));
    }

    #[test]
    fn second_open_is_locked_out_until_the_first_drops() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = Layout::open(tmp.path(), Duration::ZERO).expect("first open");
        assert!(matches!(
            Layout::open(tmp.path(), Duration::ZERO),
            Err(DiscError::Locked { .. })
        ));
        // A waiting opener gets the lock once the holder lets go.
        let waiter = std::thread::spawn({
            let root = tmp.path().to_path_buf();
            move || Layout::open(&root, Duration::from_secs(30)).map(|_| ())
        });
        drop(first);
        waiter.join().expect("waiter").expect("open after release");
    }
}
