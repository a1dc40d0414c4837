//! Two-phase commit: a transaction over tables whose primaries are on
//! different nodes. The node that runs the transaction coordinates:
//!
//! 1. **prepare**: each participant (the primary of some of the tables)
//!    gets its part (reads and writes of its tables), validates the reads
//!    under the tables' commit locks and *reserves* the tables (other
//!    commits to them wait) for up to `prepare_lease`;
//! 2. the coordinator **decides**: commit if every participant prepared,
//!    else abort (a conflict re-runs the transaction); the decision is
//!    recorded first, then sent to every participant, which commits its
//!    part as an ordinary replicated commit (to all its copies) or drops
//!    the reservation.
//!
//! A participant whose lease runs out without a decision asks the
//! coordinator, which decides abort if it had not decided yet (so it can
//! no longer commit), or, if the coordinator is down, the other
//! participants: commit if one of them was told to commit, else abort.
//! What this does not cover is in `docs/storage.md` ("Two-phase commit").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use crate::db::{CommitFail, RawTx};

use super::commit::err;
use super::state::{CommitReply, ReplMsg, Shared};

/// A participant's prepared part of a two-phase transaction.
pub(crate) struct Prepared {
    tx: RawTx,
    tables: Vec<String>,
    coordinator: String,
    participants: Vec<String>,
}

/// How long outcomes are remembered (answers to late `Outcome` queries).
const KEEP_OUTCOMES: Duration = Duration::from_secs(120);

impl Shared {
    /// Records `commit` as the outcome of `txid` unless one is recorded
    /// already; returns the recorded outcome.
    fn record_outcome(&self, txid: &str, commit: bool) -> bool {
        let mut d = self.decisions.lock();
        if d.len() > 1024 {
            d.retain(|_, (_, at)| at.elapsed() < KEEP_OUTCOMES);
        }
        d.entry(txid.to_string())
            .or_insert((commit, Instant::now()))
            .0
    }

    /// Coordinator: commits `tx`, whose tables have different primaries,
    /// with two-phase commit.
    pub(crate) async fn two_phase(
        self: &Arc<Self>,
        tx: &RawTx,
        names: &[String],
    ) -> Result<(), CommitFail> {
        // Each table's part, grouped by its primary.
        let mut parts: BTreeMap<String, RawTx> = BTreeMap::new();
        for n in names {
            if !self.tables.lock().contains_key(n) {
                return Err(err(format!(
                    "table {n} is of this node only: it cannot join a transaction \
                     across primaries ({names:?})"
                )));
            }
            let Some(p) = self.primary(n) else {
                return Err(CommitFail::Retry);
            };
            let part = parts.entry(p.node().to_string()).or_default();
            part.reads
                .extend(tx.reads.iter().filter(|r| r.table() == n).cloned());
            part.writes
                .extend(tx.writes.iter().filter(|(t, _)| t == n).cloned());
        }
        let txid = format!(
            "{}:{}",
            self.me,
            self.next_txid.fetch_add(1, Ordering::Relaxed)
        );
        let participants: Vec<String> = parts.keys().cloned().collect();
        let prepares = parts.iter().map(|(node, part)| {
            let (txid, participants) = (txid.clone(), participants.clone());
            async move {
                if *node == self.me {
                    return Ok(self.on_prepare(txid, self.me.clone(), participants, part.clone()));
                }
                let Some(db) = self.db_of(node) else {
                    return Err(format!("participant {node} is not up"));
                };
                db.call(
                    |reply| ReplMsg::Prepare {
                        txid,
                        coordinator: self.me.clone(),
                        participants,
                        tx: part.clone(),
                        reply,
                    },
                    self.cfg.call_timeout,
                )
                .await
                .map_err(|e| format!("prepare at {node}: {e}"))
            }
        });
        let prepared: Vec<(String, Result<CommitReply, String>)> = participants
            .iter()
            .cloned()
            .zip(join_all(prepares).await)
            .collect();
        let all_ok = prepared
            .iter()
            .all(|(_, r)| matches!(r, Ok(CommitReply::Ok)));
        if self.crash_after_prepare.load(Ordering::SeqCst) {
            tracing::warn!(%txid, "test hook: exiting between the two phases");
            std::process::exit(9);
        }
        // A participant whose lease ran out may have made us decide abort.
        let commit = self.record_outcome(&txid, all_ok);
        let told: Vec<&String> = prepared
            .iter()
            .filter(|(_, r)| commit || matches!(r, Ok(CommitReply::Ok)))
            .map(|(n, _)| n)
            .collect();
        let decides = told.iter().map(|node| {
            let txid = txid.clone();
            async move {
                if **node == self.me {
                    return Ok(self.on_decide(&txid, commit).await);
                }
                let Some(db) = self.db_of(node) else {
                    return Err(format!("participant {node} is not up"));
                };
                db.call(
                    |reply| ReplMsg::Decide {
                        txid,
                        commit,
                        reply,
                    },
                    self.cfg.call_timeout + self.cfg.ack_timeout,
                )
                .await
                .map_err(|e| format!("decision at {node}: {e}"))
            }
        });
        let decided = join_all(decides).await;
        if commit {
            let failed: Vec<String> = told
                .iter()
                .zip(&decided)
                .filter(|(_, r)| !matches!(r, Ok(CommitReply::Ok)))
                .map(|(n, r)| format!("{n}: {r:?}"))
                .collect();
            if failed.is_empty() {
                return Ok(());
            }
            return Err(err(format!(
                "two-phase transaction {txid} was decided commit but failed on {failed:?}; \
                 outcome unknown there"
            )));
        }
        // Aborted: say why, the way a single-primary commit would. A
        // participant that is no longer primary or did not answer (or, with
        // every prepare fine, a lease that ran out first): try again.
        for (node, r) in &prepared {
            match r {
                Ok(CommitReply::Conflict) => return Err(CommitFail::Conflict),
                Ok(CommitReply::Error(e)) => return Err(err(format!("prepare at {node}: {e}"))),
                _ => {}
            }
        }
        Err(CommitFail::Retry)
    }

    /// Participant: validate our part of `txid` and reserve its tables.
    pub(crate) fn on_prepare(
        self: &Arc<Self>,
        txid: String,
        coordinator: String,
        participants: Vec<String>,
        tx: RawTx,
    ) -> CommitReply {
        let tables = tx.tables();
        for n in &tables {
            let replicated = self.tables.lock().get(n).is_some_and(|t| !t.def.node_owned);
            if !replicated || !self.am_primary(n) {
                return CommitReply::NotPrimary;
            }
        }
        if self.decisions.lock().contains_key(&txid) {
            return CommitReply::Error(format!("transaction {txid} is decided already"));
        }
        let me = self.clone();
        let reserved = self.db.validate_raw(&tx, || {
            let mut st = me.tables.lock();
            for n in &tables {
                match st.get(n) {
                    Some(t) if t.in_sync && t.handed_over.is_none() => {
                        // Another prepared transaction holds it: give way
                        // (the transaction runs again) rather than wait.
                        if t.prepared.is_some() {
                            return Err(CommitFail::Conflict);
                        }
                    }
                    _ => return Err(CommitFail::Retry),
                }
            }
            for n in &tables {
                if let Some(t) = st.get_mut(n) {
                    t.prepared = Some((txid.clone(), Instant::now()));
                }
            }
            Ok(())
        });
        match reserved {
            Ok(()) => {}
            Err(CommitFail::Conflict) => return CommitReply::Conflict,
            Err(CommitFail::Retry) => return CommitReply::NotPrimary,
            Err(CommitFail::Error(e)) => return CommitReply::Error(e.to_string()),
        }
        self.prepared.lock().insert(
            txid.clone(),
            Prepared {
                tx,
                tables,
                coordinator,
                participants,
            },
        );
        // No decision within the lease: find it out.
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(me.cfg.prepare_lease).await;
            if me.prepared.lock().contains_key(&txid) {
                let commit = me.find_outcome(&txid).await;
                tracing::warn!(%txid, commit, "two-phase lease ran out; outcome found");
                let r = me.on_decide(&txid, commit).await;
                if !matches!(r, CommitReply::Ok) {
                    tracing::warn!(%txid, ?r, "two-phase outcome not applied");
                }
            }
        });
        CommitReply::Ok
    }

    /// Participant: apply the outcome of `txid` to our part.
    pub(crate) async fn on_decide(self: &Arc<Self>, txid: &str, commit: bool) -> CommitReply {
        // Recorded first: other participants asking learn it.
        let before = self.decisions.lock().get(txid).map(|(c, _)| *c);
        let commit = self.record_outcome(txid, commit);
        let Some(p) = self.prepared.lock().remove(txid) else {
            // Not prepared (any more): fine for an abort, and for a commit
            // this node already learnt and applied (its lease ran out and
            // it asked the coordinator before the decision arrived).
            return if !commit || before == Some(true) {
                CommitReply::Ok
            } else {
                CommitReply::Error(format!("transaction {txid} is not prepared here"))
            };
        };
        let r = if commit {
            self.primary_commit_as(&p.tx, Some(txid)).await
        } else {
            CommitReply::Ok
        };
        let mut st = self.tables.lock();
        for n in &p.tables {
            if let Some(t) = st.get_mut(n)
                && t.prepared.as_ref().is_some_and(|(id, _)| id == txid)
            {
                t.prepared = None;
            }
        }
        r
    }

    /// Anyone: what became of `txid`. A coordinator that has not decided
    /// yet decides abort now (it can no longer commit it).
    pub(crate) fn on_outcome(&self, txid: &str) -> Option<bool> {
        if txid
            .rsplit_once(':')
            .is_some_and(|(coord, _)| coord == self.me)
        {
            return Some(self.record_outcome(txid, false));
        }
        self.decisions.lock().get(txid).map(|(c, _)| *c)
    }

    /// Participant whose lease ran out: the outcome, from the coordinator,
    /// or else the other participants (commit only if one was told so).
    async fn find_outcome(&self, txid: &str) -> bool {
        let (coordinator, participants) = match self.prepared.lock().get(txid) {
            Some(p) => (p.coordinator.clone(), p.participants.clone()),
            None => return false,
        };
        for node in std::iter::once(&coordinator).chain(participants.iter()) {
            if *node == self.me {
                continue;
            }
            let Some(db) = self.db_of(node) else {
                continue;
            };
            let t = txid.to_string();
            let asked = db
                .call(
                    |reply| ReplMsg::Outcome { txid: t, reply },
                    self.cfg.call_timeout,
                )
                .await;
            if let Ok(Some(commit)) = asked {
                return commit;
            }
        }
        false
    }
}
