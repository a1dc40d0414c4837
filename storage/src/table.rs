//! One table's local copy: typed rows, secondary indexes, subscribers.
//!
//! Reads take a short read lock on the rows; writes are applied by the
//! commit path (see `db.rs`) while it holds the table's commit lock, so the
//! commit path is the single writer and readers never wait for I/O.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use beamline_runtime::codec;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::record::{IndexValue, Record, TableDef, TableKind};

/// One change inside a commit, typed.
#[derive(Debug, Clone)]
pub enum Op<R: Record> {
    /// Write a record (replaces the key's record in a set; adds to a bag).
    Write(R),
    /// Delete every record with this key.
    Delete(R::Key),
    /// Delete this exact record (bags; for sets, only if equal).
    DeleteObject(R),
}

/// One change inside a commit, encoded (for the log and for replicas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RawOp {
    /// Encoded record.
    Write(Vec<u8>),
    /// Encoded key.
    Delete(Vec<u8>),
    /// Encoded record.
    DeleteObject(Vec<u8>),
}

/// A change to a table, as delivered to subscribers, in commit order.
#[derive(Debug, Clone)]
pub enum TableEvent<R: Record> {
    /// A record was written; `old` holds the records it replaced (sets).
    Write {
        /// Commit sequence number.
        seq: u64,
        /// The new record.
        new: R,
        /// Records with the same key before the write (set: at most one).
        old: Vec<R>,
    },
    /// Records were deleted.
    Delete {
        /// Commit sequence number.
        seq: u64,
        /// The key.
        key: R::Key,
        /// The records removed.
        old: Vec<R>,
    },
}

/// A subscriber: gets every event of the table, in commit order, until it
/// returns false (its receiver is gone).
pub type Subscriber<R> = Box<dyn Fn(&TableEvent<R>) -> bool + Send + Sync>;

pub(crate) struct Rows<R: Record> {
    pub(crate) map: BTreeMap<R::Key, Vec<R>>,
    /// index name -> index value -> keys having a record with that value.
    pub(crate) indexes: HashMap<String, HashMap<IndexValue, BTreeSet<R::Key>>>,
    pub(crate) len: usize,
}

impl<R: Record> Rows<R> {
    fn index_remove(&mut self, rec: &R) {
        for (name, idx) in self.indexes.iter_mut() {
            if let Some(v) = rec.index_value(name)
                && let Some(keys) = idx.get_mut(&v)
            {
                keys.remove(&rec.key());
                if keys.is_empty() {
                    idx.remove(&v);
                }
            }
        }
    }

    fn index_add(&mut self, rec: &R) {
        for (name, idx) in self.indexes.iter_mut() {
            if let Some(v) = rec.index_value(name) {
                idx.entry(v).or_default().insert(rec.key());
            }
        }
    }

    /// Re-adds index entries of the records still under `key` (a bag may
    /// hold several records with the same index value).
    fn index_refresh(&mut self, key: &R::Key) {
        let recs = self.map.get(key).cloned().unwrap_or_default();
        for r in &recs {
            self.index_add(r);
        }
    }
}

fn same<R: Record>(a: &R, b: &R) -> bool {
    match (codec::encode(a), codec::encode(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// A table's local copy, typed.
pub struct TableCore<R: Record> {
    pub(crate) def: TableDef,
    pub(crate) rows: RwLock<Rows<R>>,
    pub(crate) subscribers: Mutex<Vec<Subscriber<R>>>,
    /// Seq of the last commit that changed this table (for scan validation).
    pub(crate) version: AtomicU64,
    /// Held by the commit path while it validates and applies.
    pub(crate) commit_lock: Mutex<()>,
}

impl<R: Record> TableCore<R> {
    pub(crate) fn new(def: TableDef) -> Self {
        let indexes = def
            .indexes
            .iter()
            .map(|i| (i.clone(), HashMap::new()))
            .collect();
        TableCore {
            def,
            rows: RwLock::new(Rows {
                map: BTreeMap::new(),
                indexes,
                len: 0,
            }),
            subscribers: Mutex::new(Vec::new()),
            version: AtomicU64::new(0),
            commit_lock: Mutex::new(()),
        }
    }

    pub(crate) fn read(&self, key: &R::Key) -> Vec<R> {
        self.rows.read().map.get(key).cloned().unwrap_or_default()
    }

    pub(crate) fn index_read(
        &self,
        index: &str,
        value: &IndexValue,
    ) -> Result<Vec<R>, StorageError> {
        let rows = self.rows.read();
        let idx = rows
            .indexes
            .get(index)
            .ok_or_else(|| StorageError::NoSuchIndex {
                table: self.def.name.clone(),
                index: index.to_string(),
            })?;
        let Some(keys) = idx.get(value) else {
            return Ok(Vec::new());
        };
        Ok(keys
            .iter()
            .filter_map(|k| rows.map.get(k))
            .flatten()
            .filter(|r| r.index_value(index).as_ref() == Some(value))
            .cloned()
            .collect())
    }

    /// `NotOrdered` naming `op` unless this is an ordered set (the only
    /// kind with key ranges).
    pub(crate) fn require_ordered(&self, op: &'static str) -> Result<(), StorageError> {
        if self.def.kind != TableKind::OrderedSet {
            return Err(StorageError::NotOrdered {
                table: self.def.name.clone(),
                op,
            });
        }
        Ok(())
    }

    pub(crate) fn range(&self, range: impl RangeBounds<R::Key>) -> Result<Vec<R>, StorageError> {
        self.require_ordered("range")?;
        Ok(self
            .rows
            .read()
            .map
            .range(range)
            .flat_map(|(_, v)| v.iter().cloned())
            .collect())
    }

    /// Records from `start` on, in key order, until `keep` is false for
    /// one. One descent of the tree: a bounded range makes two, and each
    /// compares keys all the way down.
    pub(crate) fn range_while(
        &self,
        start: std::ops::Bound<R::Key>,
        mut keep: impl FnMut(&R) -> bool,
    ) -> Result<Vec<R>, StorageError> {
        self.scan("range_while", start, |r| keep(r).then(|| r.clone()))
    }

    /// `f` of the records from `start` on, in key order, until `f`
    /// answers `None`: [`TableCore::range_while`] without cloning records.
    pub(crate) fn scan<T>(
        &self,
        op: &'static str,
        start: std::ops::Bound<R::Key>,
        mut f: impl FnMut(&R) -> Option<T>,
    ) -> Result<Vec<T>, StorageError> {
        self.require_ordered(op)?;
        let rows = self.rows.read();
        let mut out = Vec::new();
        for (_, v) in rows.map.range((start, std::ops::Bound::Unbounded)) {
            for r in v {
                match f(r) {
                    Some(t) => out.push(t),
                    None => return Ok(out),
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn all(&self) -> Vec<R> {
        self.rows
            .read()
            .map
            .values()
            .flat_map(|v| v.iter().cloned())
            .collect()
    }

    pub(crate) fn count(&self) -> usize {
        self.rows.read().len
    }

    /// Applies `ops` as commit `seq`; caller holds `commit_lock`.
    pub(crate) fn apply(&self, ops: &[Op<R>], seq: u64) {
        // Events cost clones: build them only for someone.
        let notify = !self.subscribers.lock().is_empty();
        let mut events = Vec::with_capacity(if notify { ops.len() } else { 0 });
        {
            let mut rows = self.rows.write();
            for op in ops {
                match op {
                    Op::Write(rec) => {
                        let key = rec.key();
                        let old = rows.map.get(&key).cloned().unwrap_or_default();
                        match self.def.kind {
                            TableKind::Set | TableKind::OrderedSet => {
                                for o in &old {
                                    rows.index_remove(o);
                                }
                                rows.len = rows.len - old.len() + 1;
                                rows.map.insert(key, vec![rec.clone()]);
                                rows.index_add(rec);
                                if notify {
                                    events.push(TableEvent::Write {
                                        seq,
                                        new: rec.clone(),
                                        old,
                                    });
                                }
                            }
                            TableKind::Bag => {
                                if old.iter().any(|o| same(o, rec)) {
                                    continue;
                                }
                                rows.map.entry(key).or_default().push(rec.clone());
                                rows.len += 1;
                                rows.index_add(rec);
                                if notify {
                                    events.push(TableEvent::Write {
                                        seq,
                                        new: rec.clone(),
                                        old: Vec::new(),
                                    });
                                }
                            }
                        }
                    }
                    Op::Delete(key) => {
                        if let Some(old) = rows.map.remove(key) {
                            rows.len -= old.len();
                            for o in &old {
                                rows.index_remove(o);
                            }
                            if notify {
                                events.push(TableEvent::Delete {
                                    seq,
                                    key: key.clone(),
                                    old,
                                });
                            }
                        }
                    }
                    Op::DeleteObject(rec) => {
                        let key = rec.key();
                        let Some(list) = rows.map.get_mut(&key) else {
                            continue;
                        };
                        let before = list.len();
                        list.retain(|o| !same(o, rec));
                        let removed = before - list.len();
                        if removed == 0 {
                            continue;
                        }
                        if list.is_empty() {
                            rows.map.remove(&key);
                        }
                        rows.len -= removed;
                        rows.index_remove(rec);
                        rows.index_refresh(&key);
                        if notify {
                            events.push(TableEvent::Delete {
                                seq,
                                key,
                                old: vec![rec.clone()],
                            });
                        }
                    }
                }
            }
        }
        self.version.store(seq, Ordering::Release);
        if !events.is_empty() {
            let mut subs = self.subscribers.lock();
            subs.retain(|s| events.iter().all(s));
        }
    }
}

/// A table seen without its record type: what the commit path, the log and
/// replicas need.
pub(crate) trait AnyTable: Send + Sync {
    fn def(&self) -> &TableDef;
    fn commit_lock(&self) -> &Mutex<()>;
    fn version(&self) -> u64;
    /// The current records under an encoded key, encoded (for validation).
    fn read_encoded(&self, key: &[u8]) -> Result<Vec<u8>, StorageError>;
    /// Applies typed ops (a `Vec<Op<R>>` behind `Any`).
    fn apply_typed(&self, ops: &dyn Any, seq: u64);
    /// Encodes typed ops for the log.
    fn encode_ops(&self, ops: &dyn Any) -> Result<Vec<RawOp>, StorageError>;
    /// Decodes encoded ops into typed ops for [`AnyTable::apply_typed`].
    fn decode_ops(&self, ops: &[RawOp]) -> Result<Box<dyn Any + Send + Sync>, StorageError>;
    /// Decodes and applies encoded ops (recovery, replicas).
    fn apply_raw(&self, ops: &[RawOp], seq: u64) -> Result<(), StorageError>;
    /// The whole table, encoded (snapshots, copying to a new replica).
    fn dump(&self) -> Result<Vec<u8>, StorageError>;
    /// Replaces the whole table from [`AnyTable::dump`]'s bytes.
    fn load(&self, bytes: &[u8], seq: u64) -> Result<(), StorageError>;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

fn ops_of<R: Record>(ops: &dyn Any) -> &[Op<R>] {
    ops.downcast_ref::<Vec<Op<R>>>()
        .map(|v| v.as_slice())
        .unwrap_or(&[])
}

impl<R: Record> AnyTable for TableCore<R> {
    fn def(&self) -> &TableDef {
        &self.def
    }

    fn commit_lock(&self) -> &Mutex<()> {
        &self.commit_lock
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn read_encoded(&self, key: &[u8]) -> Result<Vec<u8>, StorageError> {
        let key: R::Key = codec::decode(key)?;
        Ok(codec::encode(&self.read(&key))?)
    }

    fn apply_typed(&self, ops: &dyn Any, seq: u64) {
        self.apply(ops_of::<R>(ops), seq);
    }

    fn encode_ops(&self, ops: &dyn Any) -> Result<Vec<RawOp>, StorageError> {
        ops_of::<R>(ops)
            .iter()
            .map(|op| {
                Ok(match op {
                    Op::Write(r) => RawOp::Write(codec::encode(r)?),
                    Op::Delete(k) => RawOp::Delete(codec::encode(k)?),
                    Op::DeleteObject(r) => RawOp::DeleteObject(codec::encode(r)?),
                })
            })
            .collect()
    }

    fn decode_ops(&self, ops: &[RawOp]) -> Result<Box<dyn Any + Send + Sync>, StorageError> {
        let typed = ops
            .iter()
            .map(|op| {
                Ok(match op {
                    RawOp::Write(b) => Op::Write(codec::decode(b)?),
                    RawOp::Delete(b) => Op::Delete(codec::decode(b)?),
                    RawOp::DeleteObject(b) => Op::DeleteObject(codec::decode(b)?),
                })
            })
            .collect::<Result<Vec<Op<R>>, StorageError>>()?;
        Ok(Box::new(typed))
    }

    fn apply_raw(&self, ops: &[RawOp], seq: u64) -> Result<(), StorageError> {
        // Decode everything first: a bad op must not leave half a commit.
        let typed = ops
            .iter()
            .map(|op| {
                Ok(match op {
                    RawOp::Write(b) => Op::Write(codec::decode(b)?),
                    RawOp::Delete(b) => Op::Delete(codec::decode(b)?),
                    RawOp::DeleteObject(b) => Op::DeleteObject(codec::decode(b)?),
                })
            })
            .collect::<Result<Vec<Op<R>>, StorageError>>()?;
        let _guard = self.commit_lock.lock();
        self.apply(&typed, seq);
        Ok(())
    }

    fn dump(&self) -> Result<Vec<u8>, StorageError> {
        // Length-prefixed records, one after another, rather than one
        // encoded Vec: a big table stays under the codec's per-value limit
        // and can be read back one record at a time.
        let mut out = Vec::new();
        for rec in self.all() {
            let bytes = codec::encode(&rec)?;
            let len = u32::try_from(bytes.len())
                .map_err(|_| StorageError::RecordTooLarge(bytes.len()))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    fn load(&self, bytes: &[u8], seq: u64) -> Result<(), StorageError> {
        let records: Vec<R> = crate::db::decode_dump(bytes)?;
        let _guard = self.commit_lock.lock();
        {
            let mut rows = self.rows.write();
            rows.map.clear();
            rows.len = 0;
            for idx in rows.indexes.values_mut() {
                idx.clear();
            }
        }
        let ops: Vec<Op<R>> = records.into_iter().map(Op::Write).collect();
        self.apply(&ops, seq);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
