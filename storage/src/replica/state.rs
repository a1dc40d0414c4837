//! What replication knows on one node: per-table state, pending acks,
//! the schema, typed helpers, and small lookups.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use beamline_runtime::cluster::{GlobalRef, Node};
use beamline_runtime::codec;
use beamline_supervision::DynamicSupervisorRef;
use parking_lot::Mutex;
use ractor::{ActorId, ActorRef};
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

use crate::db::{Db, Table};
use crate::error::StorageError;
use crate::record::{Record, TableDef};
use crate::table::RawOp;

pub(crate) use super::msg::{
    ApplyTable, CommitReply, HistEntry, ReplMsg, SchemaEntry, SyncReply, note_history,
};
pub use super::types::{
    Branch, ConflictWinner, Epoch, PartitionDecider, ReplicationConfig, ReplicationEvent,
    TableSchema,
};

/// Process-group scope of every replication actor.
pub(crate) const SCOPE: &str = "storage";
/// Group of the per-node actors (one per node running replication).
pub(crate) const DBS: &str = "dbs";

/// Group of the in-sync replicas of `table`.
pub(crate) fn table_group(table: &str) -> String {
    format!("table:{table}")
}

/// Typed help for one table, behind a trait object.
pub(crate) trait Helper: Send + Sync {
    /// Ops that turn the local copy into the `dump`'s content.
    fn replace_ops(&self, dump: &[u8]) -> Result<Vec<RawOp>, StorageError>;
    /// The encoded key of an encoded record.
    fn key_of(&self, record: &[u8]) -> Result<Vec<u8>, StorageError>;
    /// The local records under an encoded key, each encoded.
    fn rows_of(&self, key: &[u8]) -> Result<Vec<Vec<u8>>, StorageError>;
    /// Local rows that `dump` lacks or holds differently: (encoded key,
    /// local encoded records).
    #[allow(clippy::type_complexity)]
    fn lost_rows(&self, dump: &[u8]) -> Result<Vec<(Vec<u8>, Vec<Vec<u8>>)>, StorageError>;
}

pub(crate) struct Typed<R: Record>(pub(crate) Table<R>);

impl<R: Record> Helper for Typed<R> {
    fn replace_ops(&self, dump: &[u8]) -> Result<Vec<RawOp>, StorageError> {
        let records: Vec<R> = decode_dump(dump)?;
        let mut ops = Vec::new();
        let mut keys: Vec<R::Key> = self.0.all().iter().map(Record::key).collect();
        keys.dedup();
        for k in keys {
            ops.push(RawOp::Delete(codec::encode(&k)?));
        }
        for r in &records {
            ops.push(RawOp::Write(codec::encode(r)?));
        }
        Ok(ops)
    }

    fn key_of(&self, record: &[u8]) -> Result<Vec<u8>, StorageError> {
        let r: R = codec::decode(record)?;
        Ok(codec::encode(&r.key())?)
    }

    fn lost_rows(&self, dump: &[u8]) -> Result<Vec<(Vec<u8>, Vec<Vec<u8>>)>, StorageError> {
        let theirs: Vec<R> = decode_dump(dump)?;
        let mut by_key: BTreeMap<R::Key, Vec<Vec<u8>>> = BTreeMap::new();
        for r in &theirs {
            by_key.entry(r.key()).or_default().push(codec::encode(r)?);
        }
        let mut mine: BTreeMap<R::Key, Vec<Vec<u8>>> = BTreeMap::new();
        for r in self.0.all() {
            mine.entry(r.key()).or_default().push(codec::encode(&r)?);
        }
        let mut out = Vec::new();
        for (k, recs) in &mine {
            if by_key.get(k) != Some(recs) {
                out.push((codec::encode(k)?, recs.clone()));
            }
        }
        Ok(out)
    }

    fn rows_of(&self, key: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let k: R::Key = codec::decode(key)?;
        self.0
            .read(&k)
            .iter()
            .map(|r| Ok(codec::encode(r)?))
            .collect()
    }
}

pub(crate) use crate::db::decode_dump;

/// Decides a node-owned conflict on encoded rows (built from a typed
/// callback by `Replication::on_conflict`).
pub(crate) type Resolver =
    Arc<dyn Fn(&[u8], (&str, &[Vec<u8>]), (&str, &[Vec<u8>])) -> ConflictWinner + Send + Sync>;

/// Replication's view of one declared table on this node.
pub(crate) struct TableState {
    pub(crate) def: TableDef,
    /// This node holds (or wants) a copy.
    pub(crate) holds: bool,
    /// The copy is loaded and follows the primary: it may serve reads and
    /// be primary.
    pub(crate) in_sync: bool,
    /// The history this copy follows.
    pub(crate) epoch: Epoch,
    /// Nodes that copied the table from us and receive our commits even
    /// before they show up in the table's group.
    pub(crate) followers: BTreeSet<String>,
    /// Replicas that missed an ack: no commits go to them until they copy
    /// the table again.
    pub(crate) stale: BTreeSet<String>,
    /// We handed the primary role to this (smaller-named) node that just
    /// copied the table; refuse commits until it is seen or gone.
    pub(crate) handed_over: Option<(String, Instant)>,
    /// Node-owned tables: owner of each encoded key.
    pub(crate) owners: HashMap<Vec<u8>, String>,
    /// The local replica actor.
    pub(crate) replica: Option<ActorRef<ReplMsg>>,
    /// Its id under the supervisor.
    pub(crate) child: Option<ActorId>,
    pub(crate) helper: Arc<dyn Helper>,
    pub(crate) resolver: Option<Resolver>,
    /// Epochs this copy went through (to find partitions).
    pub(crate) history: Vec<HistEntry>,
    /// Who wins after a partition; `None`: the majority.
    pub(crate) decider: Option<PartitionDecider>,
    /// Peers that came up and whose history we have not compared yet: we
    /// do not commit as primary meanwhile (a frozen or cut-off primary
    /// that comes back must not commit on its stale copy).
    pub(crate) awaiting: HashMap<String, Instant>,
    /// Peers whose history arrived since they last came up.
    pub(crate) status_from: HashSet<String>,
    /// Reserved by this prepared two-phase transaction (id, since): other
    /// commits wait until it is decided.
    pub(crate) prepared: Option<(String, Instant)>,
}

/// How long a primary waits for the history of a peer that came up
/// before it commits again (a peer without replication never sends one).
pub(crate) const STATUS_WAIT: Duration = Duration::from_secs(1);

/// A commit waiting for acks.
pub(crate) struct Pending {
    pub(crate) tables: Vec<String>,
    pub(crate) waiting: BTreeSet<String>,
    pub(crate) done: Option<oneshot::Sender<()>>,
}

/// Everything replication shares between the API, the hook and the actors.
pub(crate) struct Shared {
    pub(crate) db: Db,
    pub(crate) node: Node,
    pub(crate) me: String,
    pub(crate) cfg: ReplicationConfig,
    pub(crate) tables: Mutex<HashMap<String, TableState>>,
    pub(crate) pending: Mutex<HashMap<u64, Pending>>,
    pub(crate) schema: Mutex<BTreeMap<String, Vec<SchemaEntry>>>,
    pub(crate) events: broadcast::Sender<ReplicationEvent>,
    pub(crate) sup: DynamicSupervisorRef,
    pub(crate) db_actor: Mutex<Option<ActorRef<ReplMsg>>>,
    /// (node, node-owned table) pairs we sent our rows to since it came up.
    pub(crate) rows_sent: Mutex<HashSet<(String, String)>>,
    /// Two-phase transactions prepared here, by id.
    pub(crate) prepared: Mutex<HashMap<String, super::twophase::Prepared>>,
    /// Outcomes of two-phase transactions: decided here as coordinator, or
    /// learnt as participant (true: commit), with when.
    pub(crate) decisions: Mutex<HashMap<String, (bool, Instant)>>,
    /// Number of the next two-phase transaction coordinated here.
    pub(crate) next_txid: std::sync::atomic::AtomicU64,
    /// Test hook: exit the process between the two phases.
    pub(crate) crash_after_prepare: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn emit(&self, ev: ReplicationEvent) {
        tracing::info!(node = %self.me, event = ?ev, "replication");
        let _ = self.events.send(ev);
    }

    /// In-sync replicas of `table` on nodes that are up, sorted by node.
    pub(crate) fn members(&self, table: &str) -> Vec<GlobalRef<ReplMsg>> {
        self.node.members_of::<ReplMsg>(SCOPE, &table_group(table))
    }

    /// The node actor of `node`.
    pub(crate) fn db_of(&self, node: &str) -> Option<GlobalRef<ReplMsg>> {
        self.node
            .members_of::<ReplMsg>(SCOPE, DBS)
            .into_iter()
            .find(|g| g.node() == node)
    }

    /// Node actors of every other node that is up.
    pub(crate) fn other_dbs(&self) -> Vec<GlobalRef<ReplMsg>> {
        self.node
            .members_of::<ReplMsg>(SCOPE, DBS)
            .into_iter()
            .filter(|g| g.node() != self.me)
            .collect()
    }

    /// The primary of `table`: the smallest-named in-sync replica up.
    pub(crate) fn primary(&self, table: &str) -> Option<GlobalRef<ReplMsg>> {
        self.members(table).into_iter().next()
    }

    /// True when this node may commit to `table` now.
    pub(crate) fn am_primary(&self, table: &str) -> bool {
        let members: Vec<String> = self
            .members(table)
            .iter()
            .map(|g| g.node().to_string())
            .collect();
        let mut tables = self.tables.lock();
        let Some(t) = tables.get_mut(table) else {
            return false;
        };
        if let Some((to, since)) = &t.handed_over {
            // The handover is over once the new primary is seen in the
            // group (or it never showed up).
            if members.contains(to) || since.elapsed() > self.cfg.call_timeout * 2 {
                t.handed_over = None;
            }
        }
        if !t.in_sync || t.handed_over.is_some() {
            return false;
        }
        let seen = &t.status_from;
        t.awaiting
            .retain(|n, since| !seen.contains(n) && since.elapsed() < STATUS_WAIT);
        if !t.awaiting.is_empty() {
            return false;
        }
        let first = members.first();
        // Our own join is visible to us at once; a missing group view
        // (right after joining) means we are not primary yet.
        first == Some(&self.me)
    }

    /// Starts our own epoch for `table` if the last one was another node's.
    pub(crate) fn ensure_epoch(&self, table: &str) -> Epoch {
        let mut tables = self.tables.lock();
        match tables.get_mut(table) {
            Some(t) => {
                if t.epoch.1 != self.me {
                    t.epoch = (t.epoch.0 + 1, self.me.clone());
                }
                t.epoch.clone()
            }
            None => (0, self.me.clone()),
        }
    }

    /// Forgets `node` in every pending commit; completes those with nobody
    /// left to wait for.
    pub(crate) fn ack(&self, seq: Option<u64>, node: &str) {
        let mut pending = self.pending.lock();
        let seqs: Vec<u64> = match seq {
            Some(s) => vec![s],
            None => pending.keys().copied().collect(),
        };
        for s in seqs {
            if let Some(p) = pending.get_mut(&s) {
                p.waiting.remove(node);
                if p.waiting.is_empty() {
                    if let Some(done) = p.done.take() {
                        let _ = done.send(());
                    }
                    pending.remove(&s);
                }
            }
        }
    }

    /// The merged schema.
    pub(crate) fn schema(&self) -> Vec<TableSchema> {
        let mut out: BTreeMap<String, TableSchema> = BTreeMap::new();
        for (node, entries) in self.schema.lock().iter() {
            for e in entries {
                let s = out
                    .entry(e.def.name.clone())
                    .or_insert_with(|| TableSchema {
                        def: e.def.clone(),
                        copies: BTreeMap::new(),
                    });
                if e.holds {
                    s.copies.insert(node.clone(), e.def.copy);
                }
            }
        }
        out.into_values().collect()
    }

    /// Our part of the schema, from the declared tables.
    pub(crate) fn own_schema(&self) -> Vec<SchemaEntry> {
        let mut v: Vec<SchemaEntry> = self
            .tables
            .lock()
            .values()
            .map(|t| SchemaEntry {
                def: t.def.clone(),
                holds: t.holds,
            })
            .collect();
        v.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        v
    }

    /// Records our part of the schema and sends it to every node, with our
    /// histories (a table declared after a peer came up gets its status
    /// there this way; the peer may be waiting for it).
    pub(crate) fn publish_schema(&self) {
        let tables = self.own_schema();
        self.schema.lock().insert(self.me.clone(), tables.clone());
        let statuses = self.statuses();
        for db in self.other_dbs() {
            let _ = db.cast(ReplMsg::Schema {
                node: self.me.clone(),
                tables: tables.clone(),
            });
            for s in &statuses {
                if let ReplMsg::Status {
                    from,
                    table,
                    history,
                } = s
                {
                    let _ = db.cast(ReplMsg::Status {
                        from: from.clone(),
                        table: table.clone(),
                        history: history.clone(),
                    });
                }
            }
        }
    }

    /// Casts `msgs` to `node`'s node actor once our view of the cluster
    /// shows it (a peer's messages can arrive before its pg entries do),
    /// giving up after `call_timeout`.
    pub(crate) fn cast_when_up(self: &Arc<Self>, node: &str, msgs: Vec<ReplMsg>) {
        if msgs.is_empty() {
            return;
        }
        if let Some(db) = self.db_of(node) {
            for m in msgs {
                let _ = db.cast(m);
            }
            return;
        }
        let (me, node) = (self.clone(), node.to_string());
        tokio::spawn(async move {
            let deadline = Instant::now() + me.cfg.call_timeout;
            loop {
                if let Some(db) = me.db_of(&node) {
                    for m in msgs {
                        let _ = db.cast(m);
                    }
                    return;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(%node, "node actor not found; messages not sent");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }

    pub(crate) fn cast_db(&self, msg: ReplMsg) {
        if let Some(a) = self.db_actor.lock().as_ref() {
            let _ = a.cast(msg);
        }
    }
}
