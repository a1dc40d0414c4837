//! The database handle, typed table handles, dirty operations and the
//! commit path shared by dirty writes and transactions.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use beamline_runtime::codec;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::record::{CopyType, IndexValue, Record, TableDef, index_value};
use crate::table::{AnyTable, Op, RawOp, TableCore, TableEvent};

/// Where committed frames go to become durable (the node's disc log).
///
/// `submit` must enqueue the frame *before it returns*, in call order (the
/// commit path calls it while holding the commit locks, so log order is
/// commit order); the returned future resolves once the frame is durable.
pub trait CommitLog: Send + Sync {
    /// Enqueues `frame`; the future resolves when it is durable.
    fn submit(&self, frame: Vec<u8>) -> BoxFuture<'static, Result<(), StorageError>>;
}

/// What the log holds: one frame per commit (or schema change).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Frame {
    /// A commit: its sequence number and the ops per table.
    Commit {
        /// Commit sequence number.
        seq: u64,
        /// Table name and its ops, in the order they were applied.
        tables: Vec<(String, Vec<RawOp>)>,
    },
}

/// How many times a transaction is retried after conflicts by default.
pub const DEFAULT_MAX_RETRIES: usize = 64;

/// How many runs in a row a transaction may need new rows from other
/// nodes (each run stops at its first read of a row not fetched yet).
const MAX_REMOTE_ROUNDS: usize = 256;

/// A recovered commit's ops for one table: (seq, ops).
type PendingCommit = (u64, Vec<RawOp>);

/// A transaction's buffered ops and overlay for one table.
type WritesOf<'a, R> = (
    &'a mut Vec<Op<R>>,
    &'a mut BTreeMap<<R as Record>::Key, Vec<R>>,
);

struct DbInner {
    tables: RwLock<HashMap<String, Arc<dyn AnyTable>>>,
    seq: AtomicU64,
    log: Option<Arc<dyn CommitLog>>,
    /// Recovered commits not yet applied because their table has not been
    /// declared yet (tables are typed, so code must declare them first).
    pending: Mutex<HashMap<String, Vec<PendingCommit>>>,
    /// Recovered snapshots, likewise.
    snapshots: Mutex<HashMap<String, (u64, Vec<u8>)>>,
    max_retries: usize,
    /// Replication's hook into the commit path (see `replica`).
    hook: OnceLock<Arc<dyn CommitHook>>,
}

/// A node's database: its tables and their commit path. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field(
                "tables",
                &self.inner.tables.read().keys().collect::<Vec<_>>(),
            )
            .field("seq", &self.inner.seq.load(Ordering::Relaxed))
            .finish()
    }
}

impl Db {
    /// A database with no durable log: every table behaves as a RAM copy.
    pub fn in_memory() -> Db {
        Db::build(None, Vec::new(), Vec::new())
    }

    /// A database whose disc tables commit through `log`, starting from the
    /// recovered `snapshots` (table, seq, bytes) and log `frames` (in log
    /// order). Recovered data is applied to each table when the code
    /// declares it with [`Db::create_table`].
    pub fn with_log(
        log: Arc<dyn CommitLog>,
        snapshots: Vec<(String, u64, Vec<u8>)>,
        frames: Vec<Vec<u8>>,
    ) -> Result<Db, StorageError> {
        let mut decoded = Vec::with_capacity(frames.len());
        for f in frames {
            decoded.push(codec::decode::<Frame>(&f)?);
        }
        Ok(Db::build(Some(log), snapshots, decoded))
    }

    fn build(
        log: Option<Arc<dyn CommitLog>>,
        snapshots: Vec<(String, u64, Vec<u8>)>,
        frames: Vec<Frame>,
    ) -> Db {
        let mut max_seq = 0;
        let mut snaps = HashMap::new();
        for (table, seq, bytes) in snapshots {
            max_seq = max_seq.max(seq);
            snaps.insert(table, (seq, bytes));
        }
        let mut pending: HashMap<String, Vec<PendingCommit>> = HashMap::new();
        for frame in frames {
            match frame {
                Frame::Commit { seq, tables } => {
                    max_seq = max_seq.max(seq);
                    for (table, ops) in tables {
                        pending.entry(table).or_default().push((seq, ops));
                    }
                }
            }
        }
        Db {
            inner: Arc::new(DbInner {
                tables: RwLock::new(HashMap::new()),
                seq: AtomicU64::new(max_seq),
                log,
                pending: Mutex::new(pending),
                snapshots: Mutex::new(snaps),
                max_retries: DEFAULT_MAX_RETRIES,
                hook: OnceLock::new(),
            }),
        }
    }

    /// Declares a table of records `R` (or returns the existing one if it
    /// was declared with the same definition and type). A disc table gets
    /// its recovered snapshot and log applied now.
    pub fn create_table<R: Record>(&self, def: TableDef) -> Result<Table<R>, StorageError> {
        let mut tables = self.inner.tables.write();
        if let Some(existing) = tables.get(&def.name) {
            if existing.def() != &def {
                return Err(StorageError::TableExists(def.name));
            }
            return Table::from_any(self.clone(), existing.clone());
        }
        let core = Arc::new(TableCore::<R>::new(def.clone()));
        if let Some((seq, bytes)) = self.inner.snapshots.lock().remove(&def.name) {
            core.load(&bytes, seq)?;
        }
        let snap_seq = core.version();
        if let Some(commits) = self.inner.pending.lock().remove(&def.name) {
            for (seq, ops) in commits {
                // The snapshot already holds commits up to its seq.
                if seq > snap_seq {
                    core.apply_raw(&ops, seq)?;
                }
            }
        }
        let any: Arc<dyn AnyTable> = core.clone();
        tables.insert(def.name.clone(), any);
        Ok(Table {
            db: self.clone(),
            core,
        })
    }

    /// The table named `name`, if it was declared with record type `R`.
    pub fn table<R: Record>(&self, name: &str) -> Result<Table<R>, StorageError> {
        let any = self
            .inner
            .tables
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::NoSuchTable(name.to_string()))?;
        Table::from_any(self.clone(), any)
    }

    /// Tables with recovered data (snapshot or log frames) that the code
    /// has not declared yet; their data lives only in the log until then.
    pub fn undeclared_recovered_tables(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.pending.lock().keys().cloned().collect();
        names.extend(self.inner.snapshots.lock().keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// Names and definitions of the declared tables.
    pub fn tables(&self) -> Vec<TableDef> {
        self.inner
            .tables
            .read()
            .values()
            .map(|t| t.def().clone())
            .collect()
    }

    /// The sequence number of the last commit.
    pub fn last_seq(&self) -> u64 {
        self.inner.seq.load(Ordering::Acquire)
    }

    /// Every declared table's contents, encoded, with the seq it reflects:
    /// what a snapshot writer stores (see `disc`).
    pub fn dump_tables(&self) -> Result<Vec<(String, u64, Vec<u8>)>, StorageError> {
        let tables: Vec<Arc<dyn AnyTable>> = self.inner.tables.read().values().cloned().collect();
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            if t.def().copy != CopyType::Disc {
                continue;
            }
            let _g = t.commit_lock().lock();
            out.push((t.def().name.clone(), t.version(), t.dump()?));
        }
        Ok(out)
    }

    /// Runs `f` as a transaction: atomic, serializable, over any tables.
    /// On a conflict with a concurrent commit, `f` runs again (up to 64
    /// times); if `f` returns an error, nothing is written and the error is
    /// returned.
    ///
    /// With replication, a read of a table that has no in-sync copy on
    /// this node is served by a live copy elsewhere: the read returns
    /// [`StorageError::RemoteReadPending`] (let `?` pass it on), the rows
    /// are fetched, and `f` runs again with them (validated at the primary
    /// like local reads). So on such a node `f` runs once more per
    /// round of new remote reads.
    pub async fn transaction<T, F>(&self, mut f: F) -> Result<T, StorageError>
    where
        F: FnMut(&mut Tx) -> Result<T, StorageError>,
    {
        let mut remote = RemoteReads::default();
        for attempt in 0..self.inner.max_retries {
            let mut rounds = 0;
            let (value, tx) = loop {
                let mut tx = Tx::new(self.clone());
                tx.remote = std::mem::take(&mut remote);
                let value = f(&mut tx);
                remote = std::mem::take(&mut tx.remote);
                if !remote.missing() {
                    break (value?, tx);
                }
                // The run read rows this node does not hold: whatever it
                // returned was computed without them. Fetch, run again.
                rounds += 1;
                if rounds > MAX_REMOTE_ROUNDS {
                    return Err(StorageError::Replication(format!(
                        "transaction kept reading new rows of tables without a local copy \
                         ({MAX_REMOTE_ROUNDS} runs)"
                    )));
                }
                match self.inner.hook.get() {
                    Some(hook) => remote.fetch(hook.as_ref()).await?,
                    None => return Err(StorageError::RemoteReadPending),
                }
            };
            match self.commit_routed(tx).await {
                Ok(()) => return Ok(value),
                Err(CommitFail::Error(e)) => return Err(e),
                Err(CommitFail::Conflict | CommitFail::Retry) => {
                    // Rows read from other nodes are stale now.
                    remote = RemoteReads::default();
                    // Let the winner finish before trying again.
                    if attempt > 2 {
                        tokio::time::sleep(std::time::Duration::from_micros(50 << attempt.min(8)))
                            .await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
        Err(StorageError::TooManyRetries(self.inner.max_retries))
    }

    /// Commits `tx` locally, or hands it to replication when it touches a
    /// replicated table.
    async fn commit_routed(&self, tx: Tx) -> Result<(), CommitFail> {
        if let Some(hook) = self.inner.hook.get()
            && tx
                .writes
                .iter()
                .map(|w| w.table.def())
                .chain(tx.reads.iter().map(|r| r.table().def()))
                .any(|d| hook.takes(&d.name))
        {
            let raw = tx.encode().map_err(CommitFail::Error)?;
            return hook.commit(raw).await;
        }
        match self.commit(tx) {
            Ok(durable) => durable.await.map_err(CommitFail::Error),
            Err(Conflict) => Err(CommitFail::Conflict),
        }
    }

    /// Installs replication's commit hook (once per database).
    pub(crate) fn set_hook(&self, hook: Arc<dyn CommitHook>) -> Result<(), StorageError> {
        self.inner
            .hook
            .set(hook)
            .map_err(|_| StorageError::Replication("replication already started".into()))
    }

    /// The untyped table named `name`.
    pub(crate) fn any_table(&self, name: &str) -> Option<Arc<dyn AnyTable>> {
        self.inner.tables.read().get(name).cloned()
    }

    /// Raises the commit counter to at least `seq` (commits applied from
    /// other nodes), so that this node's next seq is above every seq seen.
    pub(crate) fn observe_seq(&self, seq: u64) {
        self.inner.seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// The tables an encoded transaction reads or writes, by name (the
    /// order in which their commit locks are taken).
    fn raw_involved<'t>(
        &self,
        tx: &'t RawTx,
    ) -> Result<BTreeMap<&'t str, Arc<dyn AnyTable>>, CommitFail> {
        let mut involved = BTreeMap::new();
        for name in tx
            .writes
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(tx.reads.iter().map(RawRead::table))
        {
            let t = self
                .any_table(name)
                .ok_or_else(|| CommitFail::Error(StorageError::NoSuchTable(name.to_string())))?;
            involved.insert(name, t);
        }
        Ok(involved)
    }

    /// Validates and applies an encoded transaction (on a table's primary):
    /// under the commit locks, in name order, checks the reads, assigns a
    /// seq, logs disc tables, applies, then calls `under_lock(seq)` while
    /// the locks are still held (replication sends to replicas there, so
    /// that they receive commits in seq order) with each written table's
    /// version before this commit. `check` runs first under the locks and
    /// may refuse the commit. Returns the seq and the future of local
    /// durability.
    pub(crate) fn commit_raw(
        &self,
        tx: &RawTx,
        check: impl FnOnce() -> Result<(), CommitFail>,
        under_lock: impl FnOnce(u64, &[(String, u64)]),
    ) -> Result<(u64, BoxFuture<'static, Result<(), StorageError>>), CommitFail> {
        let involved = self.raw_involved(tx)?;
        // Decode before locking: a bad op must not leave half a commit.
        let mut decoded = Vec::with_capacity(tx.writes.len());
        for (name, ops) in &tx.writes {
            let t = &involved[name.as_str()];
            decoded.push((t.clone(), t.decode_ops(ops).map_err(CommitFail::Error)?));
        }
        let _guards: Vec<_> = involved.values().map(|t| t.commit_lock().lock()).collect();
        check()?;
        for r in &tx.reads {
            let ok = match r {
                RawRead::Key { table, key, seen } => involved[table.as_str()]
                    .read_encoded(key)
                    .is_ok_and(|now| &now == seen),
                RawRead::Version { table, version } => {
                    involved[table.as_str()].version() == *version
                }
            };
            if !ok {
                return Err(CommitFail::Conflict);
            }
        }
        let seq = self.inner.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let durable = self.log_raw(seq, &tx.writes).map_err(CommitFail::Error)?;
        let prevs: Vec<(String, u64)> = decoded
            .iter()
            .map(|(t, _)| (t.def().name.clone(), t.version()))
            .collect();
        for (t, ops) in &decoded {
            t.apply_typed(ops.as_ref(), seq);
        }
        under_lock(seq, &prevs);
        Ok((seq, durable))
    }

    /// Validates an encoded transaction without applying it (a two-phase
    /// commit's prepare): decodes its ops, takes the commit locks of its
    /// tables in name order, checks its reads, and calls `reserve` while
    /// still holding the locks (the participant reserves the tables there,
    /// so that no other commit changes what was validated until the
    /// decision).
    pub(crate) fn validate_raw(
        &self,
        tx: &RawTx,
        reserve: impl FnOnce() -> Result<(), CommitFail>,
    ) -> Result<(), CommitFail> {
        let involved = self.raw_involved(tx)?;
        for (name, ops) in &tx.writes {
            involved[name.as_str()]
                .decode_ops(ops)
                .map_err(CommitFail::Error)?;
        }
        let _guards: Vec<_> = involved.values().map(|t| t.commit_lock().lock()).collect();
        for r in &tx.reads {
            let ok = match r {
                RawRead::Key { table, key, seen } => involved[table.as_str()]
                    .read_encoded(key)
                    .is_ok_and(|now| &now == seen),
                RawRead::Version { table, version } => {
                    involved[table.as_str()].version() == *version
                }
            };
            if !ok {
                return Err(CommitFail::Conflict);
            }
        }
        reserve()
    }

    /// Applies a commit made on another node (a replica applying its
    /// primary's stream): decodes, locks the tables in name order, logs
    /// disc tables and applies with the primary's `seq`. With `skip_old`,
    /// a table whose version is already at or past `seq` is left alone
    /// (the commit is already in a dump it loaded).
    pub(crate) fn apply_remote(
        &self,
        seq: u64,
        tables: &[(String, Vec<RawOp>)],
        skip_old: bool,
    ) -> Result<BoxFuture<'static, Result<(), StorageError>>, StorageError> {
        let mut decoded = BTreeMap::new();
        for (name, ops) in tables {
            let t = self
                .any_table(name)
                .ok_or_else(|| StorageError::NoSuchTable(name.clone()))?;
            let typed = t.decode_ops(ops)?;
            decoded.insert(name.as_str(), (t, typed, ops));
        }
        let _guards: Vec<_> = decoded
            .values()
            .map(|(t, _, _)| t.commit_lock().lock())
            .collect();
        let live: Vec<_> = decoded
            .values()
            .filter(|(t, _, _)| !(skip_old && t.version() >= seq))
            .collect();
        self.observe_seq(seq);
        if live.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let logged: Vec<(String, Vec<RawOp>)> = live
            .iter()
            .map(|(t, _, ops)| (t.def().name.clone(), (*ops).clone()))
            .collect();
        let durable = self.log_raw(seq, &logged)?;
        for (t, typed, _) in &live {
            t.apply_typed(typed.as_ref(), seq);
        }
        Ok(durable)
    }

    /// Submits the disc tables among `tables` to the log as commit `seq`.
    fn log_raw(
        &self,
        seq: u64,
        tables: &[(String, Vec<RawOp>)],
    ) -> Result<BoxFuture<'static, Result<(), StorageError>>, StorageError> {
        let Some(log) = &self.inner.log else {
            return Ok(Box::pin(async { Ok(()) }));
        };
        let disc: Vec<(String, Vec<RawOp>)> = tables
            .iter()
            .filter(|(n, _)| {
                self.any_table(n)
                    .is_some_and(|t| t.def().copy == CopyType::Disc)
            })
            .cloned()
            .collect();
        if disc.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        Ok(log.submit(codec::encode(&Frame::Commit { seq, tables: disc })?))
    }

    /// Validates and applies `tx` under the commit locks of every table it
    /// touched; returns the future of its durability.
    fn commit(&self, tx: Tx) -> Result<BoxFuture<'static, Result<(), StorageError>>, Conflict> {
        let done: BoxFuture<'static, Result<(), StorageError>> = Box::pin(async { Ok(()) });
        if tx.writes.is_empty() && tx.reads.is_empty() {
            return Ok(done);
        }
        let mut involved: BTreeMap<&str, &Arc<dyn AnyTable>> = BTreeMap::new();
        for w in &tx.writes {
            involved.insert(w.table.def().name.as_str(), &w.table);
        }
        for r in &tx.reads {
            involved.insert(r.table().def().name.as_str(), r.table());
        }
        // Locks in name order: no deadlock between transactions.
        let _guards: Vec<_> = involved.values().map(|t| t.commit_lock().lock()).collect();
        for r in &tx.reads {
            if !r.still_valid() {
                return Err(Conflict);
            }
        }
        if tx.writes.is_empty() {
            return Ok(done);
        }
        let seq = self.inner.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let mut durable = done;
        if let Some(log) = &self.inner.log
            && tx
                .writes
                .iter()
                .any(|w| w.table.def().copy == CopyType::Disc)
        {
            let mut tables = Vec::new();
            for w in &tx.writes {
                if w.table.def().copy == CopyType::Disc {
                    match w.table.encode_ops(w.ops.as_ref()) {
                        Ok(ops) => tables.push((w.table.def().name.clone(), ops)),
                        Err(e) => return Ok(Box::pin(async move { Err(e) })),
                    }
                }
            }
            match codec::encode(&Frame::Commit { seq, tables }) {
                Ok(frame) => durable = log.submit(frame),
                Err(e) => return Ok(Box::pin(async move { Err(e.into()) })),
            }
        }
        for w in &tx.writes {
            w.table.apply_typed(w.ops.as_ref(), seq);
        }
        Ok(durable)
    }
}

struct Conflict;

/// Why a routed commit did not happen.
pub(crate) enum CommitFail {
    /// A read check failed: run the transaction again.
    Conflict,
    /// Not applied (e.g. the node is no longer the primary): replication
    /// tries again after a pause; never reaches the caller.
    Retry,
    /// Any other failure: give up with this error.
    Error(StorageError),
}

/// A read check in encoded form, to be validated on another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RawRead {
    /// A point read saw `seen` (encoded records) under `key`.
    Key {
        /// Table.
        table: String,
        /// Encoded key.
        key: Vec<u8>,
        /// Encoded records seen.
        seen: Vec<u8>,
    },
    /// A scan saw the table at `version`.
    Version {
        /// Table.
        table: String,
        /// Version seen.
        version: u64,
    },
}

impl RawRead {
    pub(crate) fn table(&self) -> &str {
        match self {
            RawRead::Key { table, .. } | RawRead::Version { table, .. } => table,
        }
    }
}

/// A transaction in encoded form: its read checks and its ops per table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RawTx {
    /// Read checks.
    pub(crate) reads: Vec<RawRead>,
    /// Ops per table, in the order written.
    pub(crate) writes: Vec<(String, Vec<RawOp>)>,
}

impl RawTx {
    /// Names of every table read or written (sorted, distinct).
    pub(crate) fn tables(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .writes
            .iter()
            .map(|(n, _)| n.clone())
            .chain(self.reads.iter().map(|r| r.table().to_string()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Replication's entry into the commit path.
pub(crate) trait CommitHook: Send + Sync {
    /// True when commits touching `table` go through replication.
    fn takes(&self, table: &str) -> bool;
    /// Commits `tx` through replication.
    fn commit(&self, tx: RawTx) -> BoxFuture<'static, Result<(), CommitFail>>;
    /// True when reads of `table` are served here (not replicated, or an
    /// in-sync copy here).
    fn reads_locally(&self, table: &str) -> bool;
    /// The encoded records under an encoded key, from a live copy.
    fn read_remote(
        &self,
        table: &str,
        key: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, StorageError>>;
    /// A live copy's version and dump of `table`, taken together.
    fn scan_remote(&self, table: &str) -> BoxFuture<'static, Result<(u64, Vec<u8>), StorageError>>;
}

/// Rows a transaction read from other nodes (tables without an in-sync
/// copy here), kept across the runs of one attempt.
#[derive(Default)]
struct RemoteReads {
    /// (table, encoded key) → encoded records, as a live copy had them.
    keys: HashMap<(String, Vec<u8>), Vec<u8>>,
    /// Table → version and dump of a live copy.
    tables: HashMap<String, (u64, Vec<u8>)>,
    /// What the last run needed and did not have.
    missing_keys: Vec<(String, Vec<u8>)>,
    missing_tables: Vec<String>,
}

impl RemoteReads {
    fn missing(&self) -> bool {
        !self.missing_keys.is_empty() || !self.missing_tables.is_empty()
    }

    async fn fetch(&mut self, hook: &dyn CommitHook) -> Result<(), StorageError> {
        for (table, key) in std::mem::take(&mut self.missing_keys) {
            let rows = hook.read_remote(&table, key.clone()).await?;
            self.keys.insert((table, key), rows);
        }
        for table in std::mem::take(&mut self.missing_tables) {
            let scan = hook.scan_remote(&table).await?;
            self.tables.insert(table, scan);
        }
        Ok(())
    }
}

/// Decodes a table dump (`AnyTable::dump`: length-prefixed records).
pub(crate) fn decode_dump<R: Record>(bytes: &[u8]) -> Result<Vec<R>, StorageError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(StorageError::CorruptDump("truncated length"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(StorageError::CorruptDump("truncated record"));
        }
        let (rec, tail) = tail.split_at(len);
        out.push(codec::decode(rec)?);
        rest = tail;
    }
    Ok(out)
}

/// A typed handle to one table. Reads are served from the local copy;
/// writes go through the commit path. Cheap to clone.
pub struct Table<R: Record> {
    db: Db,
    core: Arc<TableCore<R>>,
}

impl<R: Record> Clone for Table<R> {
    fn clone(&self) -> Self {
        Table {
            db: self.db.clone(),
            core: self.core.clone(),
        }
    }
}

impl<R: Record> std::fmt::Debug for Table<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("def", &self.core.def)
            .finish()
    }
}

impl<R: Record> Table<R> {
    fn from_any(db: Db, any: Arc<dyn AnyTable>) -> Result<Table<R>, StorageError> {
        let name = any.def().name.clone();
        if any.as_any().downcast_ref::<TableCore<R>>().is_none() {
            return Err(StorageError::WrongType(name));
        }
        // The Arc<dyn AnyTable> was made from an Arc<TableCore<R>>; find
        // that Arc again through the registry's typed clone.
        let core = any_to_core::<R>(any).ok_or(StorageError::WrongType(name))?;
        Ok(Table { db, core })
    }

    /// The table's definition.
    pub fn def(&self) -> &TableDef {
        &self.core.def
    }

    /// The records with `key` (none or one for sets, any number for bags).
    pub fn read(&self, key: &R::Key) -> Vec<R> {
        self.core.read(key)
    }

    /// The record with `key`, for sets and ordered sets.
    pub fn get(&self, key: &R::Key) -> Option<R> {
        self.core.read(key).into_iter().next()
    }

    /// Records whose index `index` has `value`.
    pub fn index_read<V: Serialize + ?Sized>(
        &self,
        index: &str,
        value: &V,
    ) -> Result<Vec<R>, StorageError> {
        self.core.index_read(index, &index_value(value))
    }

    /// Records with keys in `range`, in key order (ordered sets only).
    pub fn range(&self, range: impl RangeBounds<R::Key>) -> Result<Vec<R>, StorageError> {
        self.core.range(range)
    }

    /// Records from `start` on, in key order, until `keep` is false for
    /// one (ordered sets only). Cheaper than [`Table::range`] for a key
    /// prefix: the tree is searched once.
    pub fn range_while(
        &self,
        start: std::ops::Bound<R::Key>,
        keep: impl FnMut(&R) -> bool,
    ) -> Result<Vec<R>, StorageError> {
        self.core.range_while(start, keep)
    }

    /// `f` of each record from `start` on, in key order, until `f` answers
    /// `None` (ordered sets only): [`Table::range_while`] for a caller that
    /// needs a few fields, not copies of the records. `f` runs under the
    /// table's read lock: keep it short.
    pub fn range_map_while<T>(
        &self,
        start: std::ops::Bound<R::Key>,
        f: impl FnMut(&R) -> Option<T>,
    ) -> Result<Vec<T>, StorageError> {
        self.core.scan("range_map_while", start, f)
    }

    /// Every record (in key order).
    pub fn all(&self) -> Vec<R> {
        self.core.all()
    }

    /// Number of records.
    pub fn count(&self) -> usize {
        self.core.count()
    }

    async fn dirty(&self, op: Op<R>) -> Result<(), StorageError> {
        let mut tx = Tx::new(self.db.clone());
        tx.push_op(self, op);
        match self.db.commit_routed(tx).await {
            Ok(()) => Ok(()),
            Err(CommitFail::Error(e)) => Err(e),
            // A transaction without reads cannot conflict.
            Err(CommitFail::Conflict | CommitFail::Retry) => Err(StorageError::TooManyRetries(0)),
        }
    }

    /// Writes `rec` without a transaction (Mnesia's `dirty_write`): no
    /// read validation, but still atomic and in the durable log.
    pub async fn dirty_write(&self, rec: R) -> Result<(), StorageError> {
        self.dirty(Op::Write(rec)).await
    }

    /// Deletes every record with `key` without a transaction.
    pub async fn dirty_delete(&self, key: R::Key) -> Result<(), StorageError> {
        self.dirty(Op::Delete(key)).await
    }

    /// Deletes the exact record `rec` without a transaction.
    pub async fn dirty_delete_object(&self, rec: R) -> Result<(), StorageError> {
        self.dirty(Op::DeleteObject(rec)).await
    }

    /// Calls `f` with every change, in commit order, while it returns true.
    /// `f` runs inside the commit path: keep it short (send it on).
    pub fn subscribe(&self, f: impl Fn(&TableEvent<R>) -> bool + Send + Sync + 'static) {
        self.core.subscribers.lock().push(Box::new(f));
    }

    /// Delivers every change to `actor`, in commit order, until it stops.
    pub fn subscribe_actor<M>(&self, actor: ractor::ActorRef<M>)
    where
        M: ractor::Message + From<TableEvent<R>>,
    {
        self.subscribe(move |e| actor.send_message(M::from(e.clone())).is_ok());
    }

    /// A channel that receives every change, in commit order, until it is
    /// dropped. Unbounded: the reader must keep up.
    pub fn subscribe_channel(&self) -> tokio::sync::mpsc::UnboundedReceiver<TableEvent<R>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.subscribe(move |e| tx.send(e.clone()).is_ok());
        rx
    }
}

fn any_to_core<R: Record>(any: Arc<dyn AnyTable>) -> Option<Arc<TableCore<R>>> {
    any.into_any().downcast::<TableCore<R>>().ok()
}

enum ReadCheck {
    /// A point read saw these encoded records under this encoded key.
    Key {
        table: Arc<dyn AnyTable>,
        key: Vec<u8>,
        seen: Vec<u8>,
    },
    /// A scan saw the table at this version.
    Table {
        table: Arc<dyn AnyTable>,
        version: u64,
    },
}

impl ReadCheck {
    fn table(&self) -> &Arc<dyn AnyTable> {
        match self {
            ReadCheck::Key { table, .. } | ReadCheck::Table { table, .. } => table,
        }
    }

    fn still_valid(&self) -> bool {
        match self {
            ReadCheck::Key { table, key, seen } => {
                table.read_encoded(key).is_ok_and(|now| &now == seen)
            }
            ReadCheck::Table { table, version } => table.version() == *version,
        }
    }
}

struct TableWrites {
    table: Arc<dyn AnyTable>,
    /// `Vec<Op<R>>`.
    ops: Box<dyn Any + Send + Sync>,
    /// `BTreeMap<R::Key, Vec<R>>`: the records under each key this
    /// transaction wrote, as they will be after commit.
    overlay: Box<dyn Any + Send + Sync>,
}

/// A transaction in progress: reads see the transaction's own writes;
/// writes are buffered until commit.
pub struct Tx {
    db: Db,
    writes: Vec<TableWrites>,
    reads: Vec<ReadCheck>,
    remote: RemoteReads,
    /// Per table touched: whether its reads go to another node (decided
    /// once per run).
    remote_of: Vec<(String, bool)>,
}

impl Tx {
    fn new(db: Db) -> Tx {
        Tx {
            db,
            writes: Vec::new(),
            reads: Vec::new(),
            remote: RemoteReads::default(),
            remote_of: Vec::new(),
        }
    }

    /// True when `table` has no in-sync copy here (its reads are fetched).
    fn reads_remotely(&mut self, table: &str) -> bool {
        let Some(hook) = self.db.inner.hook.get() else {
            return false;
        };
        if let Some((_, r)) = self.remote_of.iter().find(|(n, _)| n == table) {
            return *r;
        }
        let r = !hook.reads_locally(table);
        self.remote_of.push((table.to_string(), r));
        r
    }

    /// A point read of a table without a local copy: from the rows fetched
    /// so far, or recorded as missing.
    fn read_fetched<R: Record>(
        &mut self,
        table: &Table<R>,
        key: &R::Key,
    ) -> Result<Vec<R>, StorageError> {
        let name = &table.core.def.name;
        let enc = codec::encode(key)?;
        let seen = match self.remote.keys.get(&(name.clone(), enc.clone())) {
            Some(b) => b.clone(),
            None => match self.remote.tables.get(name) {
                Some((_, dump)) => {
                    let recs: Vec<R> = decode_dump::<R>(dump)?
                        .into_iter()
                        .filter(|r| &r.key() == key)
                        .collect();
                    codec::encode(&recs)?
                }
                None => {
                    self.remote.missing_keys.push((name.clone(), enc));
                    return Err(StorageError::RemoteReadPending);
                }
            },
        };
        let recs: Vec<R> = codec::decode(&seen)?;
        self.reads.push(ReadCheck::Key {
            table: Tx::any(table),
            key: enc,
            seen,
        });
        Ok(recs)
    }

    /// The transaction in encoded form (for a commit on another node).
    fn encode(&self) -> Result<RawTx, StorageError> {
        let mut raw = RawTx::default();
        for r in &self.reads {
            raw.reads.push(match r {
                ReadCheck::Key { table, key, seen } => RawRead::Key {
                    table: table.def().name.clone(),
                    key: key.clone(),
                    seen: seen.clone(),
                },
                ReadCheck::Table { table, version } => RawRead::Version {
                    table: table.def().name.clone(),
                    version: *version,
                },
            });
        }
        for w in &self.writes {
            raw.writes.push((
                w.table.def().name.clone(),
                w.table.encode_ops(w.ops.as_ref())?,
            ));
        }
        Ok(raw)
    }

    fn any<R: Record>(table: &Table<R>) -> Arc<dyn AnyTable> {
        table.core.clone()
    }

    fn writes_of<R: Record>(&mut self, table: &Table<R>) -> WritesOf<'_, R> {
        let name = &table.core.def.name;
        let pos = match self.writes.iter().position(|w| &w.table.def().name == name) {
            Some(p) => p,
            None => {
                self.writes.push(TableWrites {
                    table: Tx::any(table),
                    ops: Box::new(Vec::<Op<R>>::new()),
                    overlay: Box::new(BTreeMap::<R::Key, Vec<R>>::new()),
                });
                self.writes.len() - 1
            }
        };
        let w = &mut self.writes[pos];
        // Both boxes were created above with exactly these types.
        let ops = w
            .ops
            .downcast_mut::<Vec<Op<R>>>()
            .expect("ops box holds Vec<Op<R>> for this table");
        let overlay = w
            .overlay
            .downcast_mut::<BTreeMap<R::Key, Vec<R>>>()
            .expect("overlay box holds BTreeMap for this table");
        (ops, overlay)
    }

    fn overlay_of<R: Record>(&self, table: &Table<R>) -> Option<&BTreeMap<R::Key, Vec<R>>> {
        self.writes
            .iter()
            .find(|w| w.table.def().name == table.core.def.name)
            .and_then(|w| w.overlay.downcast_ref::<BTreeMap<R::Key, Vec<R>>>())
    }

    fn push_op<R: Record>(&mut self, table: &Table<R>, op: Op<R>) {
        let (ops, _) = self.writes_of(table);
        ops.push(op);
    }

    /// Reads `key` from the committed table, recording what was seen.
    fn read_base<R: Record>(
        &mut self,
        table: &Table<R>,
        key: &R::Key,
    ) -> Result<Vec<R>, StorageError> {
        if self.reads_remotely(&table.core.def.name) {
            return self.read_fetched(table, key);
        }
        let recs = table.core.read(key);
        self.reads.push(ReadCheck::Key {
            table: Tx::any(table),
            key: codec::encode(key)?,
            seen: codec::encode(&recs)?,
        });
        Ok(recs)
    }

    /// The records with `key`, including this transaction's own writes.
    pub fn read<R: Record>(
        &mut self,
        table: &Table<R>,
        key: &R::Key,
    ) -> Result<Vec<R>, StorageError> {
        if let Some(recs) = self.overlay_of(table).and_then(|o| o.get(key)) {
            return Ok(recs.clone());
        }
        self.read_base(table, key)
    }

    /// The record with `key` (sets), including this transaction's writes.
    pub fn get<R: Record>(
        &mut self,
        table: &Table<R>,
        key: &R::Key,
    ) -> Result<Option<R>, StorageError> {
        Ok(self.read(table, key)?.into_iter().next())
    }

    /// Writes `rec` at commit.
    pub fn write<R: Record>(&mut self, table: &Table<R>, rec: R) -> Result<(), StorageError> {
        let key = rec.key();
        let after = match table.core.def.kind {
            crate::TableKind::Bag => {
                let mut now = self.read(table, &key)?;
                let enc = codec::encode(&rec)?;
                if !now.iter().any(|r| codec::encode(r).is_ok_and(|b| b == enc)) {
                    now.push(rec.clone());
                }
                now
            }
            _ => vec![rec.clone()],
        };
        let (ops, overlay) = self.writes_of(table);
        ops.push(Op::Write(rec));
        overlay.insert(key, after);
        Ok(())
    }

    /// Deletes every record with `key` at commit.
    pub fn delete<R: Record>(&mut self, table: &Table<R>, key: R::Key) -> Result<(), StorageError> {
        let (ops, overlay) = self.writes_of(table);
        ops.push(Op::Delete(key.clone()));
        overlay.insert(key, Vec::new());
        Ok(())
    }

    /// Deletes the exact record `rec` at commit.
    pub fn delete_object<R: Record>(
        &mut self,
        table: &Table<R>,
        rec: R,
    ) -> Result<(), StorageError> {
        let key = rec.key();
        let enc = codec::encode(&rec)?;
        let mut now = self.read(table, &key)?;
        now.retain(|r| codec::encode(r).map_or(true, |b| b != enc));
        let (ops, overlay) = self.writes_of(table);
        ops.push(Op::DeleteObject(rec));
        overlay.insert(key, now);
        Ok(())
    }

    /// A scan: the committed records that `scan` returns, patched with this
    /// transaction's writes that `keep` accepts; records the table version
    /// so that any concurrent commit to the table is a conflict.
    fn scan<R: Record>(
        &mut self,
        table: &Table<R>,
        scan: impl FnOnce(&TableCore<R>) -> Result<Vec<R>, StorageError>,
        keep: impl Fn(&R) -> bool,
    ) -> Result<Vec<R>, StorageError> {
        let (version, base) = if self.reads_remotely(&table.core.def.name) {
            match self.remote.tables.get(&table.core.def.name) {
                Some((version, dump)) => {
                    let all: Vec<R> = decode_dump(dump)?;
                    (*version, all.into_iter().filter(|r| keep(r)).collect())
                }
                None => {
                    self.remote.missing_tables.push(table.core.def.name.clone());
                    return Err(StorageError::RemoteReadPending);
                }
            }
        } else {
            let version = table.core.version.load(Ordering::Acquire);
            (version, scan(&table.core)?)
        };
        self.reads.push(ReadCheck::Table {
            table: Tx::any(table),
            version,
        });
        let Some(overlay) = self.overlay_of(table) else {
            return Ok(base);
        };
        let mut merged: BTreeMap<R::Key, Vec<R>> = BTreeMap::new();
        for r in base {
            if !overlay.contains_key(&r.key()) {
                merged.entry(r.key()).or_default().push(r);
            }
        }
        for (k, recs) in overlay {
            let kept: Vec<R> = recs.iter().filter(|r| keep(r)).cloned().collect();
            if !kept.is_empty() {
                merged.insert(k.clone(), kept);
            }
        }
        Ok(merged.into_values().flatten().collect())
    }

    /// Every record of the table, including this transaction's writes.
    pub fn all<R: Record>(&mut self, table: &Table<R>) -> Result<Vec<R>, StorageError> {
        self.scan(table, |c| Ok(c.all()), |_| true)
    }

    /// Number of records, including this transaction's writes.
    pub fn count<R: Record>(&mut self, table: &Table<R>) -> Result<usize, StorageError> {
        Ok(self.all(table)?.len())
    }

    /// Records whose index `index` has `value`, including this
    /// transaction's writes.
    pub fn index_read<R: Record, V: Serialize + ?Sized>(
        &mut self,
        table: &Table<R>,
        index: &str,
        value: &V,
    ) -> Result<Vec<R>, StorageError> {
        if !table.core.def.indexes.iter().any(|i| i == index) {
            return Err(StorageError::NoSuchIndex {
                table: table.core.def.name.clone(),
                index: index.to_string(),
            });
        }
        let v: IndexValue = index_value(value);
        let index_name = index.to_string();
        let v2 = v.clone();
        self.scan(
            table,
            move |c| c.index_read(&index_name, &v2),
            |r| r.index_value(index).as_ref() == Some(&v),
        )
    }

    /// Records with keys in `range` (ordered sets), including this
    /// transaction's writes.
    pub fn range<R: Record>(
        &mut self,
        table: &Table<R>,
        range: impl RangeBounds<R::Key> + Clone,
    ) -> Result<Vec<R>, StorageError> {
        table.core.require_ordered("range")?;
        let r2 = range.clone();
        self.scan(table, move |c| c.range(r2), |r| range.contains(&r.key()))
    }

    /// Aborts the transaction with `reason`: nothing is written.
    pub fn abort<T>(&self, reason: impl Into<String>) -> Result<T, StorageError> {
        Err(StorageError::Aborted(reason.into()))
    }

    /// The database this transaction runs in.
    pub fn db(&self) -> &Db {
        &self.db
    }
}
