//! The durable disc layer behind disc copies: an append-only log of
//! checksummed frames plus one snapshot per table, in one locked directory.
//!
//! Payloads are opaque bytes here; the table layer encodes them (with
//! `beamline_runtime::codec`) and decides what a frame means.
//!
//! - [`DiscLog::open`] locks the directory, checks its format version, loads
//!   the newest snapshot of every table and reads the log back
//!   ([`Recovery`]). A torn or damaged *last* frame is cut off; damage
//!   anywhere else is an error ([`DiscError::CorruptLog`]), never skipped.
//! - [`DiscLog::append`] gives each payload the next [`Lsn`] and returns
//!   once the frame is as durable as the [`SyncPolicy`] says (by default,
//!   fsynced). Many tasks may append at once; one writer thread owns the
//!   file, and a bounded queue in front of it pushes back on appenders.
//! - [`DiscLog::write_snapshot`] replaces a table's snapshot atomically;
//!   [`DiscLog::truncate_before`] then drops log segments that every
//!   snapshot has made redundant.
//!
//! LSN convention: a snapshot "at `lsn`" holds the effects of every frame
//! with an LSN *below* `lsn`; frames at or above it must be replayed on top.
//! The usual choice is `log.last_lsn() + 1` taken while the table is quiet.
//!
//! The on-disk layout, recovery rules and benchmark figures are in
//! `docs/storage-disc.md`; each file format is also described where it is
//! written (the `layout`, `frame` and `snapshot` modules).

mod error;
mod frame;
mod layout;
mod log;
mod snapshot;

use std::path::PathBuf;
use std::time::Duration;

pub use error::{DiscError, DiscResult};
pub use layout::FORMAT_VERSION;
pub use log::{AppendSlot, DiscLog};

/// Log sequence number: the position of a frame in the log. The first frame
/// of a new directory gets 1; each later frame gets one more than the last.
pub type Lsn = u64;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// fsync (fdatasync) after every frame, before its append returns. The
    /// default: what an append acknowledges survives a power cut.
    #[default]
    EveryCommit,
    /// Group commit: appends waiting together are written together and one
    /// fsync acknowledges them all; each append still returns only once its
    /// frame is durable. The writer waits up to `max_delay` after the first
    /// append of a group for more (zero: take only what is already queued,
    /// which already groups the appends that arrive during an fsync), and
    /// never takes more than `max_batch` into one group.
    Group {
        /// How long the first append of a group waits for company.
        max_delay: Duration,
        /// The most appends one fsync covers.
        max_batch: usize,
    },
    /// No fsync: frames are handed to the OS before the append returns, so
    /// they survive the process dying but not the machine. For RAM-like use
    /// and tests. Segment roll-over and [`DiscLog::sync`] still fsync.
    None,
}

/// How to open a data directory. Build it from `DiscOptions::default()` and
/// the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiscOptions {
    /// Durability of appends. Default: [`SyncPolicy::EveryCommit`].
    pub sync: SyncPolicy,
    /// A segment is closed and a new one started once it holds this many
    /// bytes (a segment may exceed it by one frame). Default: 64 MiB.
    pub segment_size: u64,
    /// Appends that may wait for the writer; more wait in `append` itself
    /// (backpressure). Default: 4096.
    pub queue_capacity: usize,
    /// The largest payload `append` accepts. Default: 64 MiB; at most
    /// `u32::MAX`.
    pub max_payload: usize,
    /// How long `open` waits for the directory lock before giving up with
    /// [`DiscError::Locked`]. Useful when a restarted owner reopens a
    /// directory that a dropped `DiscLog` is still letting go of (its writer
    /// finishes queued work first; [`DiscLog::close`] waits for that).
    /// Default: zero, fail at once.
    pub lock_wait: Duration,
}

impl Default for DiscOptions {
    fn default() -> Self {
        DiscOptions {
            sync: SyncPolicy::EveryCommit,
            segment_size: 64 << 20,
            queue_capacity: 4096,
            max_payload: 64 << 20,
            lock_wait: Duration::ZERO,
        }
    }
}

impl DiscOptions {
    /// Sets [`DiscOptions::sync`].
    pub fn with_sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Sets [`DiscOptions::segment_size`].
    pub fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets [`DiscOptions::queue_capacity`].
    pub fn with_queue_capacity(mut self, appends: usize) -> Self {
        self.queue_capacity = appends;
        self
    }

    /// Sets [`DiscOptions::max_payload`].
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets [`DiscOptions::lock_wait`].
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    fn validate(&self) -> DiscResult<()> {
        let bad = |why: &str| Err(DiscError::InvalidOptions(why.to_string()));
        if self.segment_size == 0 {
            return bad("segment_size must be positive");
        }
        if self.queue_capacity == 0 || self.queue_capacity > tokio::sync::Semaphore::MAX_PERMITS {
            return bad("queue_capacity must be positive and below Semaphore::MAX_PERMITS");
        }
        if u32::try_from(self.max_payload).is_err() {
            return bad("max_payload must fit in 32 bits");
        }
        if let SyncPolicy::Group { max_batch: 0, .. } = self.sync {
            return bad("Group max_batch must be positive");
        }
        Ok(())
    }
}

/// One log record read back by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its position in the log.
    pub lsn: Lsn,
    /// What the appender passed in.
    pub payload: Vec<u8>,
}

/// The stored snapshot of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The table's name.
    pub table: String,
    /// The snapshot holds every frame below this LSN.
    pub lsn: Lsn,
    /// What the caller passed to [`DiscLog::write_snapshot`].
    pub bytes: Vec<u8>,
}

/// What [`DiscLog::open`] found on disk.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovery {
    /// The newest snapshot of every table that has one, sorted by table.
    pub snapshots: Vec<Snapshot>,
    /// Every frame still in the log, in LSN order. Apply a frame to a table
    /// only if its LSN is at or above that table's snapshot LSN (see
    /// [`Recovery::frames_from`]); segments are deleted whole, so frames the
    /// snapshots already hold may still be here.
    pub frames: Vec<Frame>,
    /// The LSN of the oldest frame the log still has (or would have): a
    /// table without a snapshot is complete only if this is 1.
    pub log_start: Lsn,
    /// The LSN the next append will get.
    pub next_lsn: Lsn,
    /// Set when a torn or damaged last frame was cut off.
    pub dropped_tail: Option<DroppedTail>,
}

impl Recovery {
    /// The recovered frames with an LSN at or above `lsn`.
    pub fn frames_from(&self, lsn: Lsn) -> &[Frame] {
        let start = self.frames.partition_point(|f| f.lsn < lsn);
        &self.frames[start..]
    }
}

/// The incomplete or damaged last frame that recovery cut off. Its append
/// never returned success (unless the disk lies about fsync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTail {
    /// The segment it was in.
    pub segment: PathBuf,
    /// Where the segment was truncated.
    pub offset: u64,
    /// How many bytes were cut off.
    pub bytes: u64,
    /// Why the frame was unreadable.
    pub reason: &'static str,
}

#[cfg(test)]
mod tests;
