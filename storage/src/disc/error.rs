//! The error type of the disc layer.

use std::io;
use std::path::PathBuf;

use super::Lsn;

/// What went wrong in the disc layer. Every variant that comes from a file
/// names that file; I/O failures keep their `io::Error` as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscError {
    /// An operating-system call on `path` failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process (or another `DiscLog` in this one) holds the
    /// directory's lock file.
    #[error("data directory is locked by another user: {path}")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The directory was written by a newer (or unknown) format version.
    #[error(
        "{path}: format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedFormat {
        /// The `FORMAT` file.
        path: PathBuf,
        /// The version found there.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The directory is not a disc directory: its `FORMAT` file is unreadable
    /// or missing while log segments exist.
    #[error("{path}: not a beamline disc directory: {reason}")]
    NotADiscDirectory {
        /// The file or directory at fault.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The log is damaged somewhere other than its last frame; recovery
    /// refuses to skip it.
    #[error("{path}: corrupt log at byte {offset}: {reason}")]
    CorruptLog {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad frame within the segment.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// A snapshot file fails its checks.
    #[error("{path}: corrupt snapshot: {reason}")]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A snapshot older than the one already stored for the table.
    #[error(
        "snapshot of table {table:?} at LSN {lsn} is older than the stored one at LSN {newest}"
    )]
    StaleSnapshot {
        /// The table.
        table: String,
        /// The LSN offered.
        lsn: Lsn,
        /// The LSN of the stored snapshot.
        newest: Lsn,
    },
    /// An append larger than [`DiscOptions::max_payload`](super::DiscOptions::max_payload).
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Options that cannot work (a zero queue capacity, say).
    #[error("invalid disc options: {0}")]
    InvalidOptions(String),
    /// An earlier write or fsync failed; the writer stopped accepting appends
    /// because what reached the disk is no longer known. Reopen the
    /// directory to recover.
    #[error("the log writer stopped after an earlier failure: {0}")]
    WriterFailed(String),
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
}

impl DiscError {
    /// Wraps an `io::Error` with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        DiscError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Short for `Result<T, DiscError>`.
pub type DiscResult<T> = Result<T, DiscError>;
