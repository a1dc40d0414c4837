//! Copying a table to a replica: at start, after a restart, when a replica
//! went stale, when the primary changed, and for `add_table_copy`.
//!
//! The primary dumps the table under its commit lock and, in the same
//! critical section, adds the copier to the nodes its later commits go to;
//! the copier loads the dump inside its node actor, which is also where
//! those later commits arrive, so it applies them after the dump (skipping
//! any the dump already holds).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::partition::has_own_commits;
use super::state::{ReplMsg, ReplicationEvent, SCOPE, Shared, SyncReply, table_group};

impl Shared {
    /// Node actor: copy `table` from its primary (or serve our own copy
    /// when no other replica shows up within `settle`), then join the
    /// table's group. Retries until it has a copy or stops holding one.
    pub(crate) async fn sync_table(self: &Arc<Self>, table: &str) {
        let replica = {
            let mut tables = self.tables.lock();
            let Some(t) = tables.get_mut(table) else {
                return;
            };
            if t.def.node_owned {
                return;
            }
            t.in_sync = false;
            t.replica.clone()
        };
        if let Some(r) = &replica {
            let _ = self.node.leave_group(SCOPE, &table_group(table), r);
        }
        let settle_until = Instant::now() + self.cfg.settle;
        let mut pause = Duration::from_millis(10);
        loop {
            let holds = self.tables.lock().get(table).is_some_and(|t| t.holds);
            if !holds {
                return;
            }
            let source = self
                .members(table)
                .into_iter()
                .find(|g| g.node() != self.me);
            let Some(source) = source else {
                if Instant::now() >= settle_until {
                    let version = self.db.any_table(table).map_or(0, |t| t.version());
                    self.become_in_sync(table, None, version).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let from = source.node().to_string();
            let reply = source
                .call(
                    |r| ReplMsg::SyncFrom {
                        table: table.to_string(),
                        node: self.me.clone(),
                        reply: r,
                    },
                    self.cfg.call_timeout + self.cfg.ack_timeout * 2,
                )
                .await;
            match reply {
                Ok(Ok(reply)) => match self.load(table, &from, &reply).await {
                    Ok(()) => {
                        if let Some(t) = self.tables.lock().get_mut(table) {
                            t.history = reply.history.clone();
                        }
                        self.become_in_sync(table, Some((from, reply.epoch)), reply.version)
                            .await;
                        return;
                    }
                    Err(e) => tracing::warn!(%table, error = %e, "cannot load table copy"),
                },
                Ok(Err(e)) => tracing::debug!(%table, %from, error = %e, "copy refused"),
                Err(e) => tracing::debug!(%table, %from, error = %e, "copy failed"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Replaces the local copy with `from`'s dump, as one logged commit.
    ///
    /// Every replacement of a copy goes through here (partition healing,
    /// a newer primary, a stale copy, a restart), so this is where no
    /// commit may vanish silently: when our history holds commits that
    /// `from`'s lacks (we were on the losing side of a partition, or got a
    /// commit a dead primary never acknowledged), the rows we drop are
    /// reported as `PartitionLost` first. Callers cleared `in_sync`, so
    /// no primary commit can start here any more; the commit lock taken
    /// below waits for one that already passed that check, so the rows and
    /// history compared include every commit this copy ever acknowledged.
    pub(crate) async fn load(
        &self,
        table: &str,
        from: &str,
        reply: &SyncReply,
    ) -> Result<(), crate::StorageError> {
        let ops = self.report_lost(table, from, reply, false)?;
        self.db
            .apply_remote(reply.version, &[(table.to_string(), ops)], false)?
            .await
    }

    /// Under the table's commit lock: emits `PartitionLost` when our
    /// history holds commits that `reply`'s lacks (with our rows its dump
    /// lacks or holds differently), and returns the ops that replace our
    /// copy by the dump. With `take_history`, our history becomes
    /// `reply`'s (the loss is reported; a later copy must not report it
    /// again).
    pub(crate) fn report_lost(
        &self,
        table: &str,
        from: &str,
        reply: &SyncReply,
        take_history: bool,
    ) -> Result<Vec<crate::table::RawOp>, crate::StorageError> {
        let no_table = || crate::StorageError::NoSuchTable(table.to_string());
        let any = self.db.any_table(table).ok_or_else(no_table)?;
        let (ops, lost) = {
            let _guard = any.commit_lock().lock();
            // Not under `tables` (every commit's hook takes it): decoding
            // a big dump must not stall the other tables.
            let (helper, history) = self
                .tables
                .lock()
                .get(table)
                .map(|t| (t.helper.clone(), t.history.clone()))
                .ok_or_else(no_table)?;
            let lost = if has_own_commits(&history, &reply.history) {
                Some(helper.lost_rows(&reply.dump)?)
            } else {
                None
            };
            if take_history && let Some(t) = self.tables.lock().get_mut(table) {
                t.history = reply.history.clone();
            }
            (helper.replace_ops(&reply.dump)?, lost)
        };
        if let Some(lost) = lost {
            tracing::warn!(%table, %from, rows = lost.len(), "dropping commits the source lacks");
            self.emit(ReplicationEvent::PartitionLost {
                table: table.to_string(),
                winner: from.to_string(),
                lost,
            });
        }
        Ok(ops)
    }

    pub(crate) async fn become_in_sync(
        &self,
        table: &str,
        from: Option<(String, super::state::Epoch)>,
        version: u64,
    ) {
        let replica = {
            let mut tables = self.tables.lock();
            let Some(t) = tables.get_mut(table) else {
                return;
            };
            if let Some((_, epoch)) = &from {
                t.epoch = epoch.clone();
            }
            t.in_sync = true;
            t.replica.clone()
        };
        if let Some(r) = replica
            && let Err(e) = self.node.join_group(SCOPE, &table_group(table), &r).await
        {
            tracing::warn!(%table, error = %e, "cannot join the table's group");
        }
        self.emit(ReplicationEvent::Synced {
            table: table.to_string(),
            from: from.map_or_else(|| self.me.clone(), |(n, _)| n),
            version,
        });
    }

    /// Primary: a copy of `table` for `node`. If `node` has a smaller name
    /// it becomes the primary: we stop committing, wait for our commits in
    /// flight to be acked, and hand it the next epoch.
    pub(crate) async fn on_sync_from(&self, table: &str, node: &str) -> Result<SyncReply, String> {
        if !self.am_primary(table) {
            return Err(format!("{} is not the primary of {table}", self.me));
        }
        let handover = node < self.me.as_str();
        if handover {
            if let Some(t) = self.tables.lock().get_mut(table) {
                t.handed_over = Some((node.to_string(), Instant::now()));
            }
            let deadline = Instant::now() + self.cfg.ack_timeout * 2;
            while Instant::now() < deadline
                && self
                    .pending
                    .lock()
                    .values()
                    .any(|p| p.tables.iter().any(|t| t == table))
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let any = self
            .db
            .any_table(table)
            .ok_or_else(|| format!("no table {table}"))?;
        let _guard = any.commit_lock().lock();
        let version = any.version();
        let dump = any.dump().map_err(|e| e.to_string())?;
        let mut tables = self.tables.lock();
        let t = tables
            .get_mut(table)
            .ok_or_else(|| format!("no table {table}"))?;
        t.stale.remove(node);
        let epoch = if handover {
            (t.epoch.0 + 1, node.to_string())
        } else {
            if t.epoch.1 != self.me {
                t.epoch = (t.epoch.0 + 1, self.me.clone());
            }
            t.followers.insert(node.to_string());
            t.epoch.clone()
        };
        Ok(SyncReply {
            version,
            dump,
            epoch,
            history: t.history.clone(),
        })
    }

    /// Node actor: hold a copy of `table` from now on.
    pub(crate) async fn on_add_copy(
        self: &Arc<Self>,
        table: &str,
        copy: crate::CopyType,
    ) -> Result<(), String> {
        {
            let mut tables = self.tables.lock();
            let t = tables
                .get_mut(table)
                .ok_or_else(|| format!("{}: table {table} is not declared here", self.me))?;
            if t.def.copy != copy {
                return Err(format!(
                    "{}: table {table} was declared with {:?} copies",
                    self.me, t.def.copy
                ));
            }
            if t.holds {
                return Ok(());
            }
            t.holds = true;
        }
        self.publish_schema();
        self.start_replica(table).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Node actor: drop our copy of `table` (its rows are cleared here).
    pub(crate) async fn on_del_copy(&self, table: &str) -> Result<(), String> {
        let (replica, child, helper) = {
            let mut tables = self.tables.lock();
            let t = tables
                .get_mut(table)
                .ok_or_else(|| format!("{}: table {table} is not declared here", self.me))?;
            t.holds = false;
            t.in_sync = false;
            (t.replica.take(), t.child.take(), t.helper.clone())
        };
        if let Some(r) = &replica {
            let _ = self.node.leave_group(SCOPE, &table_group(table), r);
        }
        if let Some(id) = child {
            let _ = self.sup.terminate_child(id).await;
        }
        // An empty dump: no records.
        let ops = helper.replace_ops(&[]).map_err(|e| e.to_string())?;
        let durable = self
            .db
            .apply_remote(self.db.last_seq() + 1, &[(table.to_string(), ops)], false)
            .map_err(|e| e.to_string())?;
        durable.await.map_err(|e| e.to_string())?;
        self.publish_schema();
        Ok(())
    }
}
