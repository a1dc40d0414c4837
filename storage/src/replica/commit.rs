//! The replicated commit path: route a commit to its table's primary,
//! validate and apply it there, stream it to the replicas in seq order and
//! wait for their acks; and the replica's side of that stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use beamline_runtime::cluster::CallError;
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::db::{CommitFail, CommitHook, RawTx};
use crate::error::StorageError;

use super::state::{
    ApplyTable, CommitReply, Epoch, Pending, ReplMsg, ReplicationEvent, Shared, note_history,
};

/// The hook the `Db` calls for commits on replicated tables.
pub(crate) struct Hook(pub(crate) Arc<Shared>);

impl CommitHook for Hook {
    fn takes(&self, table: &str) -> bool {
        self.0.tables.lock().contains_key(table)
    }

    fn commit(&self, tx: RawTx) -> BoxFuture<'static, Result<(), CommitFail>> {
        let shared = self.0.clone();
        Box::pin(async move { shared.route_commit(tx).await })
    }

    fn reads_locally(&self, table: &str) -> bool {
        // Node-owned tables commit only where there is a copy, which
        // holds the rows a transaction there may read.
        self.0
            .tables
            .lock()
            .get(table)
            .is_none_or(|t| t.def.node_owned || (t.holds && t.in_sync))
    }

    fn read_remote(
        &self,
        table: &str,
        key: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, StorageError>> {
        let (shared, table) = (self.0.clone(), table.to_string());
        Box::pin(async move {
            let t = table.clone();
            shared
                .call_copy(&table, |reply| ReplMsg::Read {
                    table: t,
                    key,
                    reply,
                })
                .await
        })
    }

    fn scan_remote(&self, table: &str) -> BoxFuture<'static, Result<(u64, Vec<u8>), StorageError>> {
        let (shared, table) = (self.0.clone(), table.to_string());
        Box::pin(async move {
            let t = table.clone();
            shared
                .call_copy(&table, |reply| ReplMsg::Scan { table: t, reply })
                .await
        })
    }
}

pub(crate) fn err(msg: impl Into<String>) -> CommitFail {
    CommitFail::Error(StorageError::Replication(msg.into()))
}

impl Shared {
    /// Sends `tx` to its primary (or commits it here when we are it),
    /// retrying while there is no primary, up to `commit_timeout`.
    pub(crate) async fn route_commit(self: &Arc<Self>, tx: RawTx) -> Result<(), CommitFail> {
        let names = tx.tables();
        let owned: Vec<bool> = {
            let tables = self.tables.lock();
            names
                .iter()
                .map(|n| tables.get(n).is_some_and(|t| t.def.node_owned))
                .collect()
        };
        if owned.iter().any(|o| *o) {
            if !owned.iter().all(|o| *o) {
                return Err(err("a transaction cannot mix node-owned and other tables"));
            }
            return self.owned_commit(tx).await;
        }
        let deadline = Instant::now() + self.cfg.commit_timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            match self.try_commit(&tx, &names).await {
                Err(CommitFail::Retry) => {
                    if Instant::now() >= deadline {
                        return Err(err(format!(
                            "no primary for {names:?} within {:?}",
                            self.cfg.commit_timeout
                        )));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    async fn try_commit(self: &Arc<Self>, tx: &RawTx, names: &[String]) -> Result<(), CommitFail> {
        let mut primaries = BTreeSet::new();
        let mut replicated = None;
        for n in names {
            if !self.tables.lock().contains_key(n) {
                // A table of this node only: committed here.
                primaries.insert(self.me.clone());
                continue;
            }
            replicated.get_or_insert(n);
            match self.primary(n) {
                Some(p) => primaries.insert(p.node().to_string()),
                None => return Err(CommitFail::Retry),
            };
        }
        if primaries.len() > 1 {
            return self.two_phase(tx, names).await;
        }
        let Some(primary) = primaries.into_iter().next() else {
            return Ok(());
        };
        if primary == self.me {
            return match self.primary_commit(tx).await {
                CommitReply::Ok => Ok(()),
                CommitReply::Conflict => Err(CommitFail::Conflict),
                CommitReply::NotPrimary => Err(CommitFail::Retry),
                CommitReply::Error(e) => Err(err(e)),
            };
        }
        let Some(target) = replicated
            .and_then(|n| self.primary(n))
            .filter(|p| p.node() == primary)
        else {
            return Err(CommitFail::Retry);
        };
        let reply = target
            .call(
                |r| ReplMsg::Commit(tx.clone(), r),
                self.cfg.call_timeout + self.cfg.ack_timeout,
            )
            .await;
        match reply {
            Ok(CommitReply::Ok) => Ok(()),
            Ok(CommitReply::Conflict) => Err(CommitFail::Conflict),
            Ok(CommitReply::NotPrimary) => Err(CommitFail::Retry),
            Ok(CommitReply::Error(e)) => Err(err(e)),
            // The primary may or may not have applied it: say so rather
            // than apply it twice.
            Err(CallError::NodeDown(n)) => Err(err(format!(
                "primary {n} went down during the commit; outcome unknown"
            ))),
            Err(e) => Err(err(format!("commit at primary {primary}: {e}"))),
        }
    }

    /// On the primary: validate and apply `tx`, send it to every live
    /// replica, wait for their acks (a late one is marked stale).
    pub(crate) async fn primary_commit(self: &Arc<Self>, tx: &RawTx) -> CommitReply {
        self.primary_commit_as(tx, None).await
    }

    /// `primary_commit` for the prepared two-phase transaction `owner`:
    /// its own reservation of the tables does not refuse it.
    pub(crate) async fn primary_commit_as(
        self: &Arc<Self>,
        tx: &RawTx,
        owner: Option<&str>,
    ) -> CommitReply {
        let names = tx.tables();
        let local_only = |n: &String| !self.tables.lock().contains_key(n);
        if !names.iter().all(|n| local_only(n) || self.am_primary(n)) {
            return CommitReply::NotPrimary;
        }
        let mut epochs: BTreeMap<String, Epoch> = BTreeMap::new();
        for n in &names {
            epochs.insert(n.clone(), self.ensure_epoch(n));
        }
        let (done_tx, done_rx) = oneshot::channel();
        let me = self.clone();
        let result = self.db.commit_raw(
            tx,
            || {
                // Checked again under the commit locks: a handover takes
                // the same locks, and a copy replaced meanwhile (a healed
                // partition, a newer primary) has another epoch: a commit
                // that started as primary must not land on the new data.
                let tables = me.tables.lock();
                for n in &names {
                    if tables.get(n).is_some_and(|t| {
                        t.handed_over.is_some()
                            || !t.in_sync
                            || epochs.get(n).is_some_and(|e| *e != t.epoch)
                            // Reserved by a prepared two-phase commit: wait
                            // for its decision.
                            || t.prepared.as_ref().is_some_and(|(id, _)| Some(id.as_str()) != owner)
                    }) {
                        return Err(CommitFail::Retry);
                    }
                }
                Ok(())
            },
            |seq, prevs| me.send_applies(seq, prevs, tx, &epochs, done_tx),
        );
        let (seq, durable) = match result {
            Ok(r) => r,
            Err(CommitFail::Conflict) => return CommitReply::Conflict,
            Err(CommitFail::Retry) => return CommitReply::NotPrimary,
            Err(CommitFail::Error(e)) => return CommitReply::Error(e.to_string()),
        };
        if let Err(e) = durable.await {
            return CommitReply::Error(e.to_string());
        }
        self.wait_acks(seq, done_rx).await;
        CommitReply::Ok
    }

    /// Under the commit locks: one `Apply` per replica node with the tables
    /// it holds, and a pending entry for their acks.
    fn send_applies(
        &self,
        seq: u64,
        prevs: &[(String, u64)],
        tx: &RawTx,
        epochs: &BTreeMap<String, Epoch>,
        done: oneshot::Sender<()>,
    ) {
        let mut per_node: BTreeMap<String, Vec<ApplyTable>> = BTreeMap::new();
        {
            let mut tables = self.tables.lock();
            for (name, prev) in prevs {
                let Some(t) = tables.get_mut(name) else {
                    continue;
                };
                let ops = tx
                    .writes
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, o)| o.clone())
                    .unwrap_or_default();
                let epoch = epochs.get(name).cloned().unwrap_or_else(|| t.epoch.clone());
                let mut targets: BTreeSet<String> = self
                    .members(name)
                    .iter()
                    .map(|g| g.node().to_string())
                    .collect();
                targets.extend(t.followers.iter().cloned());
                targets.retain(|n| {
                    *n != self.me
                        && !t.stale.contains(n)
                        && self.node.is_up(n)
                        && self.db_of(n).is_some()
                });
                let replicas = targets.len() as u32 + 1;
                note_history(&mut t.history, &epoch, seq, replicas);
                let n = t.history.len();
                let base = (n >= 2).then(|| {
                    let b = &t.history[n - 2];
                    (b.epoch.clone(), b.version)
                });
                for node in targets {
                    per_node.entry(node).or_default().push(ApplyTable {
                        name: name.clone(),
                        epoch: epoch.clone(),
                        prev: *prev,
                        replicas,
                        base: base.clone(),
                        ops: ops.clone(),
                    });
                }
            }
        }
        let mut waiting = BTreeSet::new();
        let mut msgs = Vec::new();
        for (node, tables) in per_node {
            if let Some(db) = self.db_of(&node) {
                waiting.insert(node.clone());
                msgs.push((
                    node,
                    db,
                    ReplMsg::Apply {
                        from: self.me.clone(),
                        seq,
                        tables,
                    },
                ));
            }
        }
        if waiting.is_empty() {
            let _ = done.send(());
            return;
        }
        self.pending.lock().insert(
            seq,
            Pending {
                tables: tx.writes.iter().map(|(n, _)| n.clone()).collect(),
                waiting,
                done: Some(done),
            },
        );
        for (node, db, msg) in msgs {
            if db.cast(msg).is_err() {
                self.ack(Some(seq), &node);
            }
        }
    }

    /// Waits for the acks of commit `seq`; replicas still silent after
    /// `ack_timeout` are marked stale and told to copy the table again.
    pub(crate) async fn wait_acks(&self, seq: u64, done: oneshot::Receiver<()>) {
        if tokio::time::timeout(self.cfg.ack_timeout, done)
            .await
            .is_ok()
        {
            return;
        }
        let late = self.pending.lock().remove(&seq);
        if let Some(p) = late {
            for node in &p.waiting {
                for table in &p.tables {
                    self.mark_stale(table, node);
                }
            }
        }
    }

    /// `node` went down: for every table we are now the primary of (and
    /// were not), commit an empty barrier in our new epoch. Copies that
    /// are exactly where we are follow it; a copy that got a commit of the
    /// old primary that we did not (never acknowledged) or missed one we
    /// got, copies the table: the copies agree again even if nobody
    /// writes.
    pub(crate) fn take_over_after(self: &Arc<Self>, node: &str) {
        let candidates: Vec<String> = self
            .tables
            .lock()
            .iter()
            .filter(|(_, t)| t.holds && t.in_sync && !t.def.node_owned && t.epoch.1 != self.me)
            .map(|(n, _)| n.clone())
            .collect();
        for table in candidates {
            if self.primary(&table).is_none_or(|p| p.node() != self.me) {
                continue;
            }
            tracing::info!(%table, down = %node, "primary now; committing a barrier");
            let me = self.clone();
            tokio::spawn(async move {
                let barrier = RawTx {
                    reads: Vec::new(),
                    writes: vec![(table.clone(), Vec::new())],
                };
                let deadline = Instant::now() + me.cfg.commit_timeout;
                loop {
                    match me.primary_commit(&barrier).await {
                        CommitReply::NotPrimary if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        CommitReply::Ok => return,
                        other => {
                            tracing::warn!(%table, ?other, "barrier commit failed");
                            return;
                        }
                    }
                }
            });
        }
    }

    /// Stops sending `table`'s commits to `node` and tells it to resync.
    pub(crate) fn mark_stale(&self, table: &str, node: &str) {
        {
            let mut tables = self.tables.lock();
            match tables.get_mut(table) {
                Some(t) if !t.def.node_owned => {
                    if !t.stale.insert(node.to_string()) {
                        return;
                    }
                    t.followers.remove(node);
                }
                _ => return,
            }
        }
        self.emit(ReplicationEvent::ReplicaStale {
            table: table.to_string(),
            node: node.to_string(),
        });
        if let Some(db) = self.db_of(node) {
            let _ = db.cast(ReplMsg::Stale {
                table: table.to_string(),
            });
        }
    }

    /// On a replica (node actor): apply a commit from `from`, or copy a
    /// table again when the commit shows we are on another history or
    /// missed a commit; then ack.
    pub(crate) async fn on_apply(
        self: &Arc<Self>,
        from: String,
        seq: u64,
        tables: Vec<ApplyTable>,
    ) {
        let mut apply = Vec::new();
        let mut resync = Vec::new();
        let mut reconcile = Vec::new();
        {
            let mut st = self.tables.lock();
            for a in tables {
                let Some(t) = st.get_mut(&a.name) else {
                    continue;
                };
                if !t.in_sync || !t.holds {
                    continue;
                }
                let version = self.db.any_table(&a.name).map_or(0, |x| x.version());
                if a.epoch == t.epoch && version >= seq {
                    // Already in a dump we loaded.
                    continue;
                }
                let follows_base = version == a.prev
                    && a.base.is_some()
                    && a.base == t.history.last().map(|h| (h.epoch.clone(), h.version));
                if a.epoch < t.epoch {
                    // An older history than ours: a partition healing.
                    // Never ignore it silently: compare histories.
                    reconcile.push(a.name);
                } else if a.epoch > t.epoch && follows_base {
                    // A new primary (failover, handover) that starts from
                    // exactly our state: follow it without a copy.
                    t.epoch = a.epoch.clone();
                    note_history(&mut t.history, &a.epoch, seq, a.replicas);
                    apply.push((a.name, a.ops));
                } else if a.epoch > t.epoch || version != a.prev {
                    // A newer primary, or a missed commit: copy the table
                    // from the current primary.
                    resync.push(a.name);
                } else {
                    note_history(&mut t.history, &a.epoch, seq, a.replicas);
                    apply.push((a.name, a.ops));
                }
            }
        }
        if !apply.is_empty() {
            match self.db.apply_remote(seq, &apply, true) {
                Ok(durable) => {
                    if let Err(e) = durable.await {
                        tracing::warn!(%seq, error = %e, "replicated commit not durable");
                    }
                }
                Err(e) => {
                    tracing::warn!(%seq, error = %e, "cannot apply replicated commit; resyncing");
                    resync.extend(apply.into_iter().map(|(n, _)| n));
                }
            }
        }
        for name in reconcile {
            if !self.reconcile_with(&from, &name).await {
                resync.push(name);
            }
        }
        for name in resync {
            // The primary applied `seq` before sending it, so its dump
            // holds it: ack after loading.
            self.sync_table(&name).await;
        }
        self.cast_when_up(
            &from,
            vec![ReplMsg::Ack {
                seq,
                node: self.me.clone(),
            }],
        );
    }
}
