//! The log: recovery at open, then one writer thread that owns the active
//! segment and serves appends, syncs and truncations in arrival order.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::error::{DiscError, DiscResult};
use super::frame::{self, HEADER_LEN};
use super::layout::{self, Layout, sync_dir};
use super::{DiscOptions, DroppedTail, Lsn, Recovery, Snapshot, SyncPolicy, snapshot};

/// What the writer thread and the handle share.
#[derive(Debug)]
struct Shared {
    /// Holds the directory lock until the last user (handle, writer thread,
    /// snapshot task) lets go.
    layout: Layout,
    /// The highest LSN acknowledged to an appender.
    last_lsn: AtomicU64,
    /// Serialises snapshot writes and reads against each other.
    snapshots: Mutex<()>,
}

enum Request {
    Append {
        payload: Vec<u8>,
        reply: oneshot::Sender<DiscResult<Lsn>>,
        /// Room in the queue, given back once the writer has taken the
        /// request (`None`: queued by [`DiscLog::submit`]).
        _permit: Option<OwnedSemaphorePermit>,
    },
    Sync {
        reply: oneshot::Sender<DiscResult<()>>,
    },
    Truncate {
        before: Lsn,
        reply: oneshot::Sender<DiscResult<usize>>,
    },
}

/// An open data directory: the log plus the snapshots. See the
/// [module docs](super).
///
/// Dropping it lets the writer finish what is queued and release the
/// directory lock shortly after; [`DiscLog::close`] waits for that.
#[derive(Debug)]
pub struct DiscLog {
    shared: Arc<Shared>,
    requests: Sender<Request>,
    permits: Arc<Semaphore>,
    max_payload: usize,
    writer: Option<JoinHandle<DiscResult<()>>>,
}

impl DiscLog {
    /// Opens (creating if needed) the data directory `dir`, locks it, and
    /// recovers its contents. Blocking: call it from `spawn_blocking` or
    /// before the runtime is busy.
    ///
    /// Errors: the directory is locked ([`DiscError::Locked`]), of an
    /// unknown format version ([`DiscError::UnsupportedFormat`]), damaged
    /// anywhere but in its last frame ([`DiscError::CorruptLog`],
    /// [`DiscError::CorruptSnapshot`]), or unreadable ([`DiscError::Io`]).
    pub fn open(dir: impl AsRef<Path>, options: DiscOptions) -> DiscResult<(DiscLog, Recovery)> {
        options.validate()?;
        let layout = Layout::open(dir.as_ref(), options.lock_wait)?;
        let snapshots = snapshot::load(&layout.snap_dir, true)?;
        let recovered = recover_log(&layout, &snapshots)?;
        let shared = Arc::new(Shared {
            layout,
            last_lsn: AtomicU64::new(recovered.next_lsn - 1),
            snapshots: Mutex::new(()),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            policy: options.sync,
            segment_size: options.segment_size,
            segments: recovered.segments,
            file: recovered.file,
            file_len: recovered.file_len,
            next_lsn: recovered.next_lsn,
            buf: Vec::new(),
            failed: None,
        };
        let (requests, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("beamline-disc-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| DiscError::io(&shared.layout.root, e))?;
        let log = DiscLog {
            shared: Arc::clone(&shared),
            requests,
            permits: Arc::new(Semaphore::new(options.queue_capacity)),
            max_payload: options.max_payload,
            writer: Some(handle),
        };
        let recovery = Recovery {
            snapshots,
            frames: recovered.frames,
            log_start: recovered.log_start,
            next_lsn: recovered.next_lsn,
            dropped_tail: recovered.dropped_tail,
        };
        Ok((log, recovery))
    }

    /// Appends one frame and returns its LSN once it is durable as the sync
    /// policy says. Appends are numbered in the order they are queued.
    ///
    /// Waits for room while `queue_capacity` appends are already queued.
    /// If the future is dropped after the frame was queued, the frame may
    /// still be written.
    pub async fn append(&self, payload: Vec<u8>) -> DiscResult<Lsn> {
        self.reserve().await?.submit(payload).await
    }

    /// Waits for room in the queue and holds it: the returned slot's
    /// [`AppendSlot::submit`] then queues without waiting. Lets a caller
    /// wait for room before taking its own locks, and queue under them.
    pub async fn reserve(&self) -> DiscResult<AppendSlot<'_>> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| DiscError::Closed)?;
        Ok(AppendSlot { log: self, permit })
    }

    /// Queues `payload` now, before returning, without waiting for room (so
    /// the LSN order is the order of `submit` calls); the returned future
    /// resolves to its LSN once the frame is durable. The queue is then
    /// bounded only by how many callers are waiting on these futures;
    /// prefer [`DiscLog::append`] or [`DiscLog::reserve`] where possible.
    pub fn submit(
        &self,
        payload: Vec<u8>,
    ) -> impl Future<Output = DiscResult<Lsn>> + Send + 'static {
        let answer = self.enqueue(payload, None);
        async move { answer?.await.map_err(|_| DiscError::Closed)? }
    }

    fn enqueue(
        &self,
        payload: Vec<u8>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> DiscResult<oneshot::Receiver<DiscResult<Lsn>>> {
        if payload.len() > self.max_payload {
            return Err(DiscError::PayloadTooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Append {
                payload,
                reply,
                _permit: permit,
            })
            .map_err(|_| DiscError::Closed)?;
        Ok(answer)
    }

    /// fsyncs whatever was appended so far; with [`SyncPolicy::None`] this
    /// is how to make earlier appends durable.
    pub async fn sync(&self) -> DiscResult<()> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Sync { reply })
            .map_err(|_| DiscError::Closed)?;
        answer.await.map_err(|_| DiscError::Closed)?
    }

    /// Deletes every segment all of whose frames have an LSN below `lsn`;
    /// the segment being written is always kept. Call it once every table
    /// has a snapshot at `lsn` or later. Returns how many segments went.
    pub async fn truncate_before(&self, lsn: Lsn) -> DiscResult<usize> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Truncate { before: lsn, reply })
            .map_err(|_| DiscError::Closed)?;
        answer.await.map_err(|_| DiscError::Closed)?
    }

    /// Stores `bytes` as the snapshot of `table` at `lsn` (holding every
    /// frame below `lsn`), atomically: after a crash either the old snapshot
    /// or the new one is there, whole. Older snapshots of the table are
    /// deleted once the new one is durable. A snapshot older than the stored
    /// one is refused ([`DiscError::StaleSnapshot`]).
    ///
    /// The log is fsynced first, so that (whatever the sync policy) a
    /// snapshot never survives a crash that the frames it holds do not.
    pub async fn write_snapshot(&self, table: &str, lsn: Lsn, bytes: Vec<u8>) -> DiscResult<()> {
        self.sync().await?;
        let shared = Arc::clone(&self.shared);
        let table = table.to_string();
        run_blocking(&self.shared.layout.snap_dir, move || {
            let _guard = shared.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            snapshot::write(&shared.layout.snap_dir, &table, lsn, &bytes)
        })
        .await
    }

    /// Reads the newest snapshot of every table, sorted by table.
    pub async fn load_snapshots(&self) -> DiscResult<Vec<Snapshot>> {
        let shared = Arc::clone(&self.shared);
        run_blocking(&self.shared.layout.snap_dir, move || {
            let _guard = shared.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            snapshot::load(&shared.layout.snap_dir, false)
        })
        .await
    }

    /// The highest LSN acknowledged to an appender so far (0: none yet), as
    /// of recovery plus this session's appends.
    pub fn last_lsn(&self) -> Lsn {
        self.shared.last_lsn.load(Ordering::Acquire)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.layout.root
    }

    /// Lets the writer finish every queued request, fsyncs, and waits until
    /// it has stopped and the directory lock is released.
    pub async fn close(mut self) -> DiscResult<()> {
        let Some(handle) = self.writer.take() else {
            return Ok(());
        };
        let root = self.shared.layout.root.clone();
        // Dropping the handle's sender and Arc is what lets the writer stop
        // and the lock go.
        drop(self);
        let joined = tokio::task::spawn_blocking(move || handle.join())
            .await
            .map_err(|e| DiscError::io(&root, io::Error::other(e)))?;
        joined.map_err(|_| DiscError::WriterFailed("the writer thread panicked".into()))?
    }
}

/// Room for one append in the queue of a [`DiscLog`], from
/// [`DiscLog::reserve`].
#[derive(Debug)]
pub struct AppendSlot<'a> {
    log: &'a DiscLog,
    permit: OwnedSemaphorePermit,
}

impl AppendSlot<'_> {
    /// Queues `payload` now, in the room held; the future resolves to its
    /// LSN once the frame is durable.
    pub fn submit(
        self,
        payload: Vec<u8>,
    ) -> impl Future<Output = DiscResult<Lsn>> + Send + 'static {
        let answer = self.log.enqueue(payload, Some(self.permit));
        async move { answer?.await.map_err(|_| DiscError::Closed)? }
    }
}

async fn run_blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> DiscResult<T> + Send + 'static,
) -> DiscResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DiscError::io(path, io::Error::other(e)))?
}

/// What reading the log back produced, plus the open active segment.
struct RecoveredLog {
    frames: Vec<super::Frame>,
    segments: VecDeque<(Lsn, PathBuf)>,
    file: File,
    file_len: u64,
    log_start: Lsn,
    next_lsn: Lsn,
    dropped_tail: Option<DroppedTail>,
}

fn recover_log(layout: &Layout, snapshots: &[Snapshot]) -> DiscResult<RecoveredLog> {
    let newest_snapshot = snapshots.iter().map(|s| s.lsn).max().unwrap_or(1);
    let mut segments: VecDeque<(Lsn, PathBuf)> = layout::list_segments(&layout.log_dir)?.into();
    if segments.is_empty() {
        // A new log starts where the snapshots end, so that no new frame is
        // mistaken for one a snapshot already holds.
        let first = newest_snapshot.max(1);
        let path = layout.segment_path(first);
        File::create_new(&path).map_err(|e| DiscError::io(&path, e))?;
        sync_dir(&layout.log_dir)?;
        segments.push_back((first, path));
    }
    let log_start = segments.front().map(|(lsn, _)| *lsn).unwrap_or(1);
    let mut frames = Vec::new();
    let mut next_lsn = log_start;
    let mut dropped_tail = None;
    let mut active_len = 0;
    let count = segments.len();
    for (i, (first, path)) in segments.iter().enumerate() {
        let corrupt = |offset: usize, reason: String| DiscError::CorruptLog {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        if *first != next_lsn {
            return Err(corrupt(
                0,
                format!(
                    "segment starts at LSN {first} but the log before it ends at {}",
                    next_lsn - 1
                ),
            ));
        }
        let buf = fs::read(path).map_err(|e| DiscError::io(path, e))?;
        let scan = frame::scan_segment(&buf, *first, &mut frames).map_err(|m| {
            corrupt(
                m.offset,
                format!(
                    "frame has LSN {} where {} was expected",
                    m.found, m.expected
                ),
            )
        })?;
        next_lsn = scan.next_lsn;
        if let Some(fault) = scan.fault {
            let last = i + 1 == count;
            if !last {
                // Older segments were fsynced whole before the next one was
                // created, so a crash cannot have torn them.
                return Err(corrupt(
                    scan.valid_len,
                    format!("{} in a segment that is not the last", fault.describe()),
                ));
            }
            if let Some(good) = frame::find_good_frame_after(&buf, scan.valid_len, next_lsn) {
                return Err(corrupt(
                    scan.valid_len,
                    format!(
                        "{}, and a good frame follows at byte {good}",
                        fault.describe()
                    ),
                ));
            }
            truncate_file(path, scan.valid_len as u64)?;
            dropped_tail = Some(DroppedTail {
                segment: path.clone(),
                offset: scan.valid_len as u64,
                bytes: (buf.len() - scan.valid_len) as u64,
                reason: fault.describe(),
            });
        }
        active_len = scan.valid_len as u64;
    }
    if next_lsn < newest_snapshot {
        return Err(DiscError::CorruptLog {
            path: layout.log_dir.clone(),
            offset: 0,
            reason: format!(
                "a snapshot holds frames up to LSN {} but the log ends at {}",
                newest_snapshot - 1,
                next_lsn - 1
            ),
        });
    }
    let active = segments.back().map(|(_, p)| p.clone()).unwrap_or_default();
    let file = OpenOptions::new()
        .append(true)
        .open(&active)
        .map_err(|e| DiscError::io(&active, e))?;
    Ok(RecoveredLog {
        frames,
        segments,
        file,
        file_len: active_len,
        log_start,
        next_lsn,
        dropped_tail,
    })
}

fn truncate_file(path: &Path, len: u64) -> DiscResult<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| DiscError::io(path, e))?;
    // Durable before any new frame lands behind it.
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| DiscError::io(path, e))
}

/// `io::Error` is not `Clone`; keep the OS error code where there is one.
fn copy_io_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// The writer thread's state: the only code that writes segments.
struct Writer {
    shared: Arc<Shared>,
    policy: SyncPolicy,
    segment_size: u64,
    /// All live segments, oldest first; the last is being written.
    segments: VecDeque<(Lsn, PathBuf)>,
    file: File,
    /// Bytes in the active segment, not counting `buf`.
    file_len: u64,
    next_lsn: Lsn,
    /// Frames encoded but not yet written.
    buf: Vec<u8>,
    /// Set by the first failed write or fsync; every later request fails.
    failed: Option<String>,
}

/// An append that is written but not yet acknowledged.
type Pending = Vec<(Lsn, oneshot::Sender<DiscResult<Lsn>>)>;

impl Writer {
    fn run(mut self, rx: Receiver<Request>) -> DiscResult<()> {
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            self.gather(&rx, &mut batch);
            self.process(&mut batch);
        }
        // Every handle is gone: leave everything on disk.
        match &self.failed {
            Some(why) => Err(DiscError::WriterFailed(why.clone())),
            None => self.file.sync_all().map_err(|e| self.io_error(e)),
        }
    }

    /// Adds to `batch` what the policy lets one fsync cover.
    fn gather(&self, rx: &Receiver<Request>, batch: &mut Vec<Request>) {
        let (max, delay) = match self.policy {
            // One frame per fsync, as promised.
            SyncPolicy::EveryCommit => return,
            SyncPolicy::Group {
                max_delay,
                max_batch,
            } => (max_batch, max_delay),
            SyncPolicy::None => (1024, std::time::Duration::ZERO),
        };
        while batch.len() < max {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let deadline = Instant::now() + delay;
        while batch.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(request) => batch.push(request),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn process(&mut self, batch: &mut Vec<Request>) {
        let sync = self.policy != SyncPolicy::None;
        let mut pending: Pending = Vec::new();
        for request in batch.drain(..) {
            match request {
                Request::Append { payload, reply, .. } => {
                    if let Some(why) = &self.failed {
                        let _ = reply.send(Err(DiscError::WriterFailed(why.clone())));
                        continue;
                    }
                    match self.stage(&payload) {
                        Ok(lsn) => pending.push((lsn, reply)),
                        Err(e) => {
                            let _ = reply.send(Err(self.fail(e, &mut pending)));
                        }
                    }
                }
                Request::Sync { reply } => {
                    self.commit(&mut pending, true);
                    let _ = reply.send(self.check());
                }
                Request::Truncate { before, reply } => {
                    self.commit(&mut pending, sync);
                    let result = self.check().and_then(|()| self.truncate(before));
                    let _ = reply.send(result);
                }
            }
        }
        self.commit(&mut pending, sync);
    }

    fn check(&self) -> DiscResult<()> {
        match &self.failed {
            Some(why) => Err(DiscError::WriterFailed(why.clone())),
            None => Ok(()),
        }
    }

    /// Encodes one frame into the buffer, first rolling over to a new
    /// segment if the active one is full.
    fn stage(&mut self, payload: &[u8]) -> io::Result<Lsn> {
        let size = self.file_len + self.buf.len() as u64;
        if size > 0 && size + (HEADER_LEN + payload.len()) as u64 > self.segment_size {
            self.roll()?;
        }
        let lsn = self.next_lsn;
        frame::encode_into(&mut self.buf, lsn, payload);
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Closes the active segment durably, whatever the policy (recovery
    /// relies on every segment but the last being whole), and starts the
    /// next one, named after the next LSN.
    fn roll(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()?;
        let path = self.shared.layout.segment_path(self.next_lsn);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        File::open(&self.shared.layout.log_dir)?.sync_all()?;
        self.file = file;
        self.file_len = 0;
        self.segments.push_back((self.next_lsn, path));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.file_len += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes the buffer, fsyncs if asked, and acknowledges `pending`.
    fn commit(&mut self, pending: &mut Pending, sync: bool) {
        if self.failed.is_some() {
            return;
        }
        let written = self
            .flush()
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            self.fail(e, pending);
            return;
        }
        if let Some((last, _)) = pending.last() {
            self.shared.last_lsn.store(*last, Ordering::Release);
        }
        for (lsn, reply) in pending.drain(..) {
            let _ = reply.send(Ok(lsn));
        }
    }

    /// Records a write failure, fails every pending append with it (they
    /// were in the write or fsync that failed), and returns it for the
    /// request that hit it. Later requests get [`DiscError::WriterFailed`].
    fn fail(&mut self, e: io::Error, pending: &mut Pending) -> DiscError {
        let path = self.active_path();
        self.failed = Some(format!("{}: {e}", path.display()));
        self.buf.clear();
        for (_, reply) in pending.drain(..) {
            let _ = reply.send(Err(DiscError::io(&path, copy_io_error(&e))));
        }
        DiscError::io(path, e)
    }

    fn io_error(&self, e: io::Error) -> DiscError {
        DiscError::io(self.active_path(), e)
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .back()
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    }

    /// Deletes whole segments below `before`, oldest first, each deletion
    /// made durable before the next, so a crash never leaves a gap.
    fn truncate(&mut self, before: Lsn) -> DiscResult<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].0 <= before {
            let Some((_, path)) = self.segments.pop_front() else {
                break;
            };
            fs::remove_file(&path).map_err(|e| DiscError::io(&path, e))?;
            sync_dir(&self.shared.layout.log_dir)?;
            removed += 1;
        }
        Ok(removed)
    }
}
