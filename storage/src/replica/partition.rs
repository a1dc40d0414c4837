//! Partitions: when copies of a table meet again (a node came up, or a
//! commit arrives from another epoch), they compare histories (the epochs
//! each went through, with the last version seen in each). If both sides
//! committed after their last common point, the table diverged: the
//! winner side is chosen (by the table's decider, or the side whose
//! commits reached more copies; a tie goes to the side whose primary has
//! the smaller name), and every copy on the losing side reports the rows
//! it is about to lose (`ReplicationEvent::PartitionLost`) and copies the
//! winner's table. If only one side committed, the other side copies it:
//! nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use super::state::{
    Branch, ConflictWinner, HistEntry, ReplMsg, ReplicationEvent, SCOPE, Shared, SyncReply,
    table_group,
};

/// How two histories relate.
#[derive(Debug)]
pub(crate) enum Cmp {
    /// Nothing to do: same history, or only we committed since we met, or
    /// they are merely behind on our own history.
    Keep,
    /// Only they committed after the last common point (in a later epoch):
    /// copy theirs.
    Adopt,
    /// Both committed after the last common point.
    Diverged { mine: Branch, theirs: Branch },
}

/// What one side did after the last common epoch `common`: whether it has
/// epochs the other lacks, and its branch if it committed at all.
fn branch(
    h: &[HistEntry],
    other: &[HistEntry],
    common: Option<&super::Epoch>,
) -> (bool, Option<Branch>) {
    let mut extra = false;
    let mut replicas = 0;
    let mut primary: Option<String> = None;
    for e in h {
        match common {
            Some(c) if e.epoch < *c => {}
            Some(c) if e.epoch == *c => {
                let theirs = other
                    .iter()
                    .find(|o| o.epoch == *c)
                    .map_or(0, |o| o.version);
                if e.version > theirs {
                    replicas = replicas.max(e.replicas);
                    primary.get_or_insert_with(|| e.epoch.1.clone());
                }
            }
            _ => {
                extra = true;
                replicas = replicas.max(e.replicas);
                primary.get_or_insert_with(|| e.epoch.1.clone());
            }
        }
    }
    let version = h.last().map_or(0, |e| e.version);
    (
        extra,
        primary.map(|primary| Branch {
            primary,
            replicas,
            version,
        }),
    )
}

/// The last epoch both histories went through.
fn common_epoch(mine: &[HistEntry], theirs: &[HistEntry]) -> Option<super::Epoch> {
    mine.iter()
        .rev()
        .find(|m| theirs.iter().any(|t| t.epoch == m.epoch))
        .map(|m| m.epoch.clone())
}

/// True when `mine` holds commits that `theirs` lacks (a copy with this
/// history that takes a copy with theirs drops them): it committed after
/// the last common point, or went further in the common epoch.
pub(crate) fn has_own_commits(mine: &[HistEntry], theirs: &[HistEntry]) -> bool {
    let common = common_epoch(mine, theirs);
    branch(mine, theirs, common.as_ref()).1.is_some()
}

/// Compares our history with theirs.
pub(crate) fn compare(mine: &[HistEntry], theirs: &[HistEntry]) -> Cmp {
    let common = common_epoch(mine, theirs);
    let (_, my) = branch(mine, theirs, common.as_ref());
    let (their_extra, their) = branch(theirs, mine, common.as_ref());
    match (my, their) {
        (Some(mine), Some(theirs)) => Cmp::Diverged { mine, theirs },
        (None, Some(_)) if their_extra => Cmp::Adopt,
        _ => Cmp::Keep,
    }
}

/// True when `mine` wins over `theirs`.
fn wins(mine: &Branch, theirs: &Branch, decider: Option<&super::PartitionDecider>) -> bool {
    let mine_first = (mine.primary.as_str(), 0) < (theirs.primary.as_str(), 1);
    let (first, second) = if mine_first {
        (mine, theirs)
    } else {
        (theirs, mine)
    };
    let w = match decider {
        Some(d) => d(first, second),
        None if first.replicas >= second.replicas => ConflictWinner::First,
        None => ConflictWinner::Second,
    };
    (w == ConflictWinner::First) == mine_first
}

impl Shared {
    /// Node actor: `from`'s history of `table` arrived (it came up).
    pub(crate) async fn on_status(
        self: &Arc<Self>,
        from: String,
        table: String,
        theirs: Vec<HistEntry>,
    ) {
        self.reconcile(&from, &table, &theirs).await;
        // Only now may we commit as primary again (see `awaiting`).
        if let Some(t) = self.tables.lock().get_mut(&table) {
            t.status_from.insert(from);
        }
    }

    /// Decides what to do about `from`'s history; returns true when the
    /// histories were reconciled here (adopted, or a partition settled).
    pub(crate) async fn reconcile(
        self: &Arc<Self>,
        from: &str,
        table: &str,
        theirs: &[HistEntry],
    ) -> bool {
        let (mine, decider) = {
            let st = self.tables.lock();
            match st.get(table) {
                Some(t) if t.holds && t.in_sync && !t.def.node_owned => {
                    (t.history.clone(), t.decider.clone())
                }
                _ => return false,
            }
        };
        match compare(&mine, theirs) {
            Cmp::Keep => false,
            Cmp::Adopt => {
                tracing::info!(%table, %from, "copying a history made while we were apart");
                self.adopt(from, table).await
            }
            Cmp::Diverged {
                mine: my,
                theirs: their,
            } => {
                let won = wins(&my, &their, decider.as_ref());
                tracing::warn!(%table, %from, ?my, ?their, won, "partition detected");
                self.emit(ReplicationEvent::PartitionDetected {
                    table: table.to_string(),
                    peer: from.to_string(),
                    won,
                });
                if won {
                    true
                } else {
                    // Our side's history, before we copy theirs: the peer
                    // may have missed it (its status and ours cross).
                    self.cast_when_up(
                        from,
                        vec![ReplMsg::Status {
                            from: self.me.clone(),
                            table: table.to_string(),
                            history: mine,
                        }],
                    );
                    self.adopt(from, table).await
                }
            }
        }
    }

    /// A commit from an older epoch arrived from `from`: fetch its history
    /// and reconcile; false when that settled nothing (then resync).
    pub(crate) async fn reconcile_with(self: &Arc<Self>, from: &str, table: &str) -> bool {
        let Some(db) = self.db_of(from) else {
            return false;
        };
        let t = table.to_string();
        match db
            .call(
                |r| ReplMsg::Copy { table: t, reply: r },
                self.cfg.call_timeout,
            )
            .await
        {
            Ok(Ok(reply)) => self.reconcile(from, table, &reply.history).await,
            _ => false,
        }
    }

    /// Replaces our copy of `table` with `from`'s, then follows its history
    /// (`load` reports the rows of ours it lacks).
    async fn adopt(self: &Arc<Self>, from: &str, table: &str) -> bool {
        let replica = {
            let mut st = self.tables.lock();
            let Some(t) = st.get_mut(table) else {
                return false;
            };
            t.in_sync = false;
            t.replica.clone()
        };
        if let Some(r) = &replica {
            let _ = self.node.leave_group(SCOPE, &table_group(table), r);
        }
        let mut copied = None;
        for _ in 0..50 {
            if let Some(db) = self.db_of(from) {
                let t = table.to_string();
                match db
                    .call(
                        |r| ReplMsg::Copy { table: t, reply: r },
                        self.cfg.call_timeout,
                    )
                    .await
                {
                    Ok(Ok(reply)) => {
                        copied = Some(reply);
                        break;
                    }
                    Ok(Err(e)) => tracing::debug!(%table, %from, error = %e, "copy refused"),
                    Err(e) => tracing::debug!(%table, %from, error = %e, "copy failed"),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let Some(reply) = copied else {
            // Fall back to the primary: better a copy than a divergent one.
            self.sync_table(table).await;
            return false;
        };
        let next_primary = self
            .members(table)
            .into_iter()
            .map(|g| g.node().to_string())
            .find(|n| *n != self.me);
        if next_primary.is_some_and(|p| self.me < p) {
            // Once in sync we would be the primary (smallest name) while
            // the current one may still have commits in flight that
            // `from`'s copy lacks: report what we lose against the
            // winner's copy, then take the table from the current primary
            // with a handover (it stops committing and waits for its acks
            // first), as a restarted node does.
            if let Err(e) = self.report_lost(table, from, &reply, true) {
                tracing::warn!(%table, error = %e, "cannot compute the lost rows");
            }
            self.sync_table(table).await;
            return true;
        }
        self.install(table, from, reply).await;
        true
    }

    /// Loads `reply` as our copy and rejoins the table's group.
    pub(crate) async fn install(self: &Arc<Self>, table: &str, from: &str, reply: SyncReply) {
        if let Err(e) = self.load(table, from, &reply).await {
            tracing::warn!(%table, error = %e, "cannot load table copy; resyncing");
            self.sync_table(table).await;
            return;
        }
        if let Some(t) = self.tables.lock().get_mut(table) {
            t.history = reply.history.clone();
        }
        self.become_in_sync(table, Some((from.to_string(), reply.epoch)), reply.version)
            .await;
    }

    /// Any in-sync copy: the table with its version, epoch and history
    /// (no follower registration: for reconciling histories).
    pub(crate) fn on_copy(&self, table: &str) -> Result<SyncReply, String> {
        let any = self
            .db
            .any_table(table)
            .ok_or_else(|| format!("no table {table}"))?;
        let _guard = any.commit_lock().lock();
        let st = self.tables.lock();
        let t = st
            .get(table)
            .filter(|t| t.holds && t.in_sync)
            .ok_or_else(|| format!("{} has no in-sync copy of {table}", self.me))?;
        Ok(SyncReply {
            version: any.version(),
            dump: any.dump().map_err(|e| e.to_string())?,
            epoch: t.epoch.clone(),
            history: t.history.clone(),
        })
    }

    /// Our history of every replicated table we declared, as `Status`
    /// messages (empty where we hold no in-sync copy: the peer then has
    /// nothing to compare, but knows it need not wait for us).
    pub(crate) fn statuses(&self) -> Vec<ReplMsg> {
        let statuses: Vec<(String, Vec<HistEntry>)> = self
            .tables
            .lock()
            .iter()
            .filter(|(_, t)| !t.def.node_owned)
            .map(|(n, t)| {
                let h = if t.holds && t.in_sync {
                    t.history.clone()
                } else {
                    Vec::new()
                };
                (n.clone(), h)
            })
            .collect();
        statuses
            .into_iter()
            .map(|(table, history)| ReplMsg::Status {
                from: self.me.clone(),
                table,
                history,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(entries: &[(u64, &str, u64, u32)]) -> Vec<HistEntry> {
        entries
            .iter()
            .map(|(e, p, v, r)| HistEntry {
                epoch: (*e, p.to_string()),
                version: *v,
                replicas: *r,
            })
            .collect()
    }

    #[test]
    fn same_or_behind_is_kept() {
        let a = h(&[(1, "a", 10, 3)]);
        assert!(matches!(compare(&a, &a), Cmp::Keep));
        let behind = h(&[(1, "a", 7, 3)]);
        assert!(matches!(compare(&behind, &a), Cmp::Keep));
        assert!(matches!(compare(&a, &behind), Cmp::Keep));
    }

    #[test]
    fn only_the_other_side_moved_on_is_adopted() {
        let a = h(&[(1, "a", 10, 3)]);
        let c = h(&[(1, "a", 10, 3), (2, "c", 12, 1)]);
        assert!(matches!(compare(&a, &c), Cmp::Adopt));
        assert!(matches!(compare(&c, &a), Cmp::Keep));
    }

    #[test]
    fn both_sides_moved_on_diverged_and_the_majority_wins() {
        let a = h(&[(1, "a", 14, 2)]);
        let c = h(&[(1, "a", 10, 3), (2, "c", 12, 1)]);
        let Cmp::Diverged { mine, theirs } = compare(&a, &c) else {
            panic!("not diverged");
        };
        assert_eq!((mine.primary.as_str(), mine.replicas), ("a", 2));
        assert_eq!((theirs.primary.as_str(), theirs.replicas), ("c", 1));
        assert!(wins(&mine, &theirs, None));
        assert!(!wins(&theirs, &mine, None));
        // A tie goes to the smaller primary name, on both sides.
        let t1 = Branch {
            primary: "b".into(),
            replicas: 1,
            version: 5,
        };
        let t2 = Branch {
            primary: "a".into(),
            replicas: 1,
            version: 9,
        };
        assert!(!wins(&t1, &t2, None));
        assert!(wins(&t2, &t1, None));
    }

    #[test]
    fn a_decider_overrides_the_majority_the_same_way_on_both_sides() {
        let big = Branch {
            primary: "a".into(),
            replicas: 3,
            version: 5,
        };
        let small = Branch {
            primary: "b".into(),
            replicas: 1,
            version: 9,
        };
        // The side with the higher version wins, whatever its size.
        let d: crate::replica::PartitionDecider = Arc::new(|first: &Branch, second: &Branch| {
            if second.version > first.version {
                ConflictWinner::Second
            } else {
                ConflictWinner::First
            }
        });
        assert!(!wins(&big, &small, Some(&d)));
        assert!(wins(&small, &big, Some(&d)));
    }
}
