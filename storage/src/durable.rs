//! A [`Db`] whose disc tables live in a data directory: the glue between
//! the commit path and the [`disc`](crate::disc) log.
//!
//! - Every commit that writes a disc table is one log frame
//!   ([`Frame::Commit`](crate::Frame)), queued under the commit locks (so the
//!   log order is the commit order) and acknowledged to the writer once the
//!   log says it is durable.
//! - [`DurableDb::checkpoint`] writes a snapshot of every disc table and
//!   drops the log segments they make redundant; [`DurableDb::open`] loads
//!   the snapshots and replays the frames after them. A table's frames are
//!   replayed only above the commit sequence its snapshot holds, so a
//!   snapshot taken while other tables kept committing is still exact.
//! - Replay happens when the code declares a table
//!   ([`Db::create_table`]), because tables are typed.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::db::{CommitLog, Db};
use crate::disc::{DiscLog, DiscOptions};
use crate::error::StorageError;

/// A table's snapshot file holds the commit sequence the rows reflect (8
/// bytes, little endian), then the table's dump. Not one codec value: a big
/// table would exceed the codec's per-value limit.
fn snapshot_body(seq: u64, rows: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + rows.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&rows);
    out
}

fn parse_snapshot(bytes: &[u8]) -> Result<(u64, Vec<u8>), StorageError> {
    let (seq, rows) = bytes
        .split_first_chunk::<8>()
        .ok_or(StorageError::CorruptDump(
            "snapshot shorter than its header",
        ))?;
    Ok((u64::from_le_bytes(*seq), rows.to_vec()))
}

struct LogAdapter(Arc<DiscLog>);

impl CommitLog for LogAdapter {
    fn submit(&self, frame: Vec<u8>) -> BoxFuture<'static, Result<(), StorageError>> {
        let durable = self.0.submit(frame);
        Box::pin(async move {
            durable
                .await
                .map(|_| ())
                .map_err(|e| StorageError::Disc(e.to_string()))
        })
    }
}

/// A database with a data directory. Derefs to [`Db`].
pub struct DurableDb {
    db: Db,
    log: Arc<DiscLog>,
}

impl std::fmt::Debug for DurableDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableDb")
            .field("dir", &self.log.dir())
            .field("db", &self.db)
            .finish()
    }
}

impl std::ops::Deref for DurableDb {
    type Target = Db;
    fn deref(&self) -> &Db {
        &self.db
    }
}

fn disc_err(e: crate::disc::DiscError) -> StorageError {
    StorageError::Disc(e.to_string())
}

impl DurableDb {
    /// Opens (or creates) the data directory `dir`, recovering what it
    /// holds. A torn last frame is dropped (and logged); damage anywhere
    /// else is an error.
    pub async fn open(
        dir: impl AsRef<Path>,
        options: DiscOptions,
    ) -> Result<DurableDb, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let (log, recovery) = tokio::task::spawn_blocking(move || DiscLog::open(dir, options))
            .await
            .map_err(|e| StorageError::Disc(e.to_string()))?
            .map_err(disc_err)?;
        if let Some(tail) = &recovery.dropped_tail {
            tracing::warn!(
                segment = %tail.segment.display(),
                offset = tail.offset,
                bytes = tail.bytes,
                reason = tail.reason,
                "dropped a torn last log frame (its commit was never acknowledged)"
            );
        }
        let mut snapshots = Vec::with_capacity(recovery.snapshots.len());
        for s in &recovery.snapshots {
            let (seq, rows) = parse_snapshot(&s.bytes)?;
            snapshots.push((s.table.clone(), seq, rows));
        }
        // Segments are dropped whole, so frames a snapshot already holds may
        // still be here: the per-table seq filter in `Db` skips them.
        let frames: Vec<Vec<u8>> = recovery.frames.iter().map(|f| f.payload.clone()).collect();
        let log = Arc::new(log);
        let db = Db::with_log(Arc::new(LogAdapter(log.clone())), snapshots, frames)?;
        Ok(DurableDb { db, log })
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Writes a snapshot of every disc table and truncates the log before
    /// them. Commits continue meanwhile; each table is dumped under its own
    /// commit lock.
    pub async fn checkpoint(&self) -> Result<(), StorageError> {
        // Everything queued before this sync is durable and numbered; the
        // dumps below are taken after it, so they hold every such frame.
        self.log.sync().await.map_err(disc_err)?;
        let lsn = self.log.last_lsn() + 1;
        for (table, seq, rows) in self.db.dump_tables()? {
            let body = snapshot_body(seq, rows);
            self.log
                .write_snapshot(&table, lsn, body)
                .await
                .map_err(disc_err)?;
        }
        let undeclared = self.db.undeclared_recovered_tables();
        if !undeclared.is_empty() {
            // Their data is only in the log until the code declares them.
            tracing::warn!(
                ?undeclared,
                "recovered tables not declared yet; log kept whole"
            );
            return Ok(());
        }
        let dropped = self.log.truncate_before(lsn).await.map_err(disc_err)?;
        tracing::debug!(lsn, dropped, "checkpoint written");
        Ok(())
    }

    /// Makes everything committed so far durable (useful with
    /// `SyncPolicy::None`).
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.log.sync().await.map_err(disc_err)
    }
}
