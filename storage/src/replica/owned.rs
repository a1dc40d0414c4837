//! Node-owned tables (MongooseIM's CETS model): every row belongs to the
//! node that wrote it. There is no primary: a node commits locally and
//! broadcasts the ops to the other copies (the commit returns once they
//! applied them); a node that goes down loses its rows everywhere; a node
//! that comes up sends its rows to the others, which merge them, settling
//! a key owned by two nodes with the table's conflict callback.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::db::{CommitFail, RawTx};
use crate::table::RawOp;

use super::state::{ConflictWinner, Pending, ReplMsg, ReplicationEvent, SchemaEntry, Shared};

impl Shared {
    /// Commits `tx` (node-owned tables only) here and broadcasts it.
    pub(crate) async fn owned_commit(self: &Arc<Self>, tx: RawTx) -> Result<(), CommitFail> {
        for name in tx.tables() {
            let holds = self.tables.lock().get(&name).is_some_and(|t| t.holds);
            if !holds {
                return Err(CommitFail::Error(crate::StorageError::Replication(
                    format!("node-owned table {name} has no copy on {}", self.me),
                )));
            }
        }
        let (done_tx, done_rx) = oneshot::channel();
        let me = self.clone();
        let (seq, durable) =
            self.db
                .commit_raw(&tx, || Ok(()), |seq, _| me.send_owned(seq, &tx, done_tx))?;
        durable.await.map_err(CommitFail::Error)?;
        self.wait_acks(seq, done_rx).await;
        Ok(())
    }

    fn note_owners(&self, owner: &str, writes: &[(String, Vec<RawOp>)]) {
        let mut tables = self.tables.lock();
        for (name, ops) in writes {
            let Some(t) = tables.get_mut(name) else {
                continue;
            };
            for op in ops {
                match op {
                    RawOp::Write(rec) => {
                        if let Ok(k) = t.helper.key_of(rec) {
                            t.owners.insert(k, owner.to_string());
                        }
                    }
                    RawOp::Delete(k) => {
                        t.owners.remove(k);
                    }
                    RawOp::DeleteObject(_) => {}
                }
            }
        }
    }

    /// Under the commit locks: note ourselves as owner, send the ops to
    /// every other copy, and wait for their acks.
    fn send_owned(&self, seq: u64, tx: &RawTx, done: oneshot::Sender<()>) {
        self.note_owners(&self.me, &tx.writes);
        let mut per_node: BTreeMap<String, Vec<(String, Vec<RawOp>)>> = BTreeMap::new();
        for (name, ops) in &tx.writes {
            for node in self.owned_targets(name) {
                per_node
                    .entry(node)
                    .or_default()
                    .push((name.clone(), ops.clone()));
            }
        }
        let mut sends = Vec::new();
        for (node, tables) in per_node {
            if let Some(db) = self.db_of(&node) {
                sends.push((node, db, tables));
            }
        }
        if sends.is_empty() {
            let _ = done.send(());
            return;
        }
        self.pending.lock().insert(
            seq,
            Pending {
                tables: tx.writes.iter().map(|(n, _)| n.clone()).collect(),
                waiting: sends.iter().map(|(n, _, _)| n.clone()).collect(),
                done: Some(done),
            },
        );
        for (node, db, tables) in sends {
            let msg = ReplMsg::Owned {
                from: self.me.clone(),
                seq,
                tables,
            };
            if db.cast(msg).is_err() {
                self.ack(Some(seq), &node);
            }
        }
    }

    /// Other live nodes holding `table`: its group, and the nodes whose
    /// schema says so (a new copy is in the schema before our view of the
    /// group shows it; its schema message is also what makes us send it
    /// our rows, so every row reaches it one way or the other).
    fn owned_targets(&self, table: &str) -> std::collections::BTreeSet<String> {
        let mut out: std::collections::BTreeSet<String> = self
            .members(table)
            .iter()
            .map(|g| g.node().to_string())
            .collect();
        for (node, entries) in self.schema.lock().iter() {
            if entries.iter().any(|e| e.holds && e.def.name == table) {
                out.insert(node.clone());
            }
        }
        out.remove(&self.me);
        out.retain(|n| self.node.is_up(n));
        out
    }

    /// Node actor: apply another node's rows and ack.
    pub(crate) async fn on_owned(
        self: &Arc<Self>,
        from: String,
        seq: u64,
        tables: Vec<(String, Vec<RawOp>)>,
    ) {
        let held: Vec<(String, Vec<RawOp>)> = {
            let st = self.tables.lock();
            tables
                .into_iter()
                .filter(|(n, _)| st.get(n).is_some_and(|t| t.holds && t.def.node_owned))
                .collect()
        };
        if !held.is_empty() {
            // Owners first: a purge of `from` racing with this commit then
            // finds its keys.
            self.note_owners(&from, &held);
            match self.db.apply_remote(seq, &held, false) {
                Ok(durable) => {
                    if let Err(e) = durable.await {
                        tracing::warn!(%from, error = %e, "node-owned commit not durable");
                    }
                }
                Err(e) => tracing::warn!(%from, error = %e, "cannot apply node-owned commit"),
            }
        }
        self.cast_when_up(
            &from,
            vec![ReplMsg::Ack {
                seq,
                node: self.me.clone(),
            }],
        );
    }

    /// Commits `writes` on this node only (purges and merges: every node
    /// computes its own).
    async fn local_commit(&self, writes: Vec<(String, Vec<RawOp>)>) {
        let tx = RawTx {
            reads: Vec::new(),
            writes,
        };
        match self.db.commit_raw(&tx, || Ok(()), |_, _| {}) {
            Ok((_, durable)) => {
                if let Err(e) = durable.await {
                    tracing::warn!(error = %e, "local node-owned change not durable");
                }
            }
            Err(_) => tracing::warn!("local node-owned change failed"),
        }
    }

    /// Node actor: `node` went down; remove its rows of node-owned tables.
    pub(crate) async fn purge_rows_of(&self, node: &str) {
        let mut purged = Vec::new();
        {
            let mut tables = self.tables.lock();
            for (name, t) in tables.iter_mut() {
                if !t.def.node_owned || !t.holds {
                    continue;
                }
                let keys: Vec<Vec<u8>> = t
                    .owners
                    .iter()
                    .filter(|(_, o)| o.as_str() == node)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &keys {
                    t.owners.remove(k);
                }
                purged.push((name.clone(), keys));
            }
        }
        for (name, keys) in purged {
            let n = keys.len();
            if n > 0 {
                let ops = keys.into_iter().map(RawOp::Delete).collect();
                self.local_commit(vec![(name.clone(), ops)]).await;
            }
            self.emit(ReplicationEvent::RowsPurged {
                table: name,
                node: node.to_string(),
                keys: n,
            });
        }
    }

    /// Node actor: `node` told us its schema; send it our rows of the
    /// node-owned tables we both hold, once per time it comes up.
    pub(crate) fn send_rows_to(self: &Arc<Self>, node: &str, entries: &[SchemaEntry]) {
        let mut msgs = Vec::new();
        for e in entries {
            if !e.holds || !e.def.node_owned {
                continue;
            }
            let rows = {
                let tables = self.tables.lock();
                let Some(t) = tables.get(&e.def.name) else {
                    continue;
                };
                if !t.holds {
                    continue;
                }
                let pair = (node.to_string(), e.def.name.clone());
                if !self.rows_sent.lock().insert(pair) {
                    continue;
                }
                t.owners
                    .iter()
                    .filter(|(_, o)| o.as_str() == self.me)
                    .filter_map(|(k, _)| t.helper.rows_of(k).ok().map(|r| (k.clone(), r)))
                    .collect::<Vec<_>>()
            };
            msgs.push(ReplMsg::OwnedRows {
                from: self.me.clone(),
                table: e.def.name.clone(),
                rows,
            });
        }
        if msgs.is_empty() {
            return;
        }
        // Its schema can arrive before our view of pg shows its node actor.
        self.cast_when_up(node, msgs);
    }

    /// Node actor: merge `from`'s rows of `table`.
    pub(crate) async fn on_owned_rows(
        &self,
        from: String,
        table: String,
        rows: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    ) {
        let mut ops = Vec::new();
        let mut conflicts = Vec::new();
        let merged = rows.len();
        {
            let mut tables = self.tables.lock();
            let Some(t) = tables.get_mut(&table) else {
                return;
            };
            if !t.holds || !t.def.node_owned {
                return;
            }
            // Rows `from` no longer has (deleted while we were apart).
            let gone: Vec<Vec<u8>> = t
                .owners
                .iter()
                .filter(|(k, o)| o.as_str() == from && !rows.iter().any(|(rk, _)| rk == *k))
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                t.owners.remove(&k);
                ops.push(RawOp::Delete(k));
            }
            for (key, recs) in rows {
                let take = match t.owners.get(&key) {
                    None => true,
                    Some(o) if *o == from => true,
                    Some(other) => {
                        let local = t.helper.rows_of(&key).unwrap_or_default();
                        let (first, second) = if other.as_str() < from.as_str() {
                            ((other.as_str(), &local[..]), (from.as_str(), &recs[..]))
                        } else {
                            ((from.as_str(), &recs[..]), (other.as_str(), &local[..]))
                        };
                        let winner = match &t.resolver {
                            Some(f) => f(&key, first, second),
                            None => ConflictWinner::First,
                        };
                        let winner = match winner {
                            ConflictWinner::First => first.0.to_string(),
                            ConflictWinner::Second => second.0.to_string(),
                        };
                        let loser = if winner == from {
                            other.clone()
                        } else {
                            from.clone()
                        };
                        conflicts.push(ReplicationEvent::OwnerConflict {
                            table: table.clone(),
                            key: key.clone(),
                            winner: winner.clone(),
                            loser,
                        });
                        winner == from
                    }
                };
                if take {
                    t.owners.insert(key.clone(), from.clone());
                    ops.push(RawOp::Delete(key));
                    ops.extend(recs.into_iter().map(RawOp::Write));
                }
            }
        }
        if !ops.is_empty() {
            self.local_commit(vec![(table.clone(), ops)]).await;
        }
        for c in conflicts {
            self.emit(c);
        }
        self.emit(ReplicationEvent::RowsMerged {
            table,
            node: from,
            keys: merged,
        });
    }

    /// Node actor: a peer came up: tell it our schema (it answers with its
    /// own, which triggers the exchange of node-owned rows).
    pub(crate) async fn on_node_up(self: &Arc<Self>, node: String) {
        // Our histories as they are now, before its own status can make us
        // copy its side: the peer must see what we did while apart.
        let mut msgs = vec![ReplMsg::Schema {
            node: self.me.clone(),
            tables: self.own_schema(),
        }];
        msgs.extend(self.statuses());
        // Its node actor shows up in the group shortly after the connection.
        self.cast_when_up(&node, msgs);
    }
}
