//! The replication actors: one node actor per node (group `dbs`: the
//! ordered stream of applied commits, acks, schema, copies, node-owned
//! rows) and one replica actor per table copy (group `table:<name>` once in
//! sync: commits, reads and copies served to other nodes). Both run under
//! the `Replication`'s dynamic supervisor.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::state::{DBS, ReplMsg, SCOPE, Shared, table_group};

/// What an actor stands for.
#[derive(Clone)]
pub(crate) enum Role {
    /// The node actor.
    Node,
    /// The replica of one table.
    Table(String),
}

/// A replication actor; its state lives in [`Shared`] so that a restarted
/// actor carries on.
#[derive(Clone)]
pub(crate) struct ReplActor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) role: Role,
}

impl Actor for ReplActor {
    type Msg = ReplMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<ReplMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        myself.cast(ReplMsg::Start)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ReplMsg>,
        msg: ReplMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let s = &self.shared;
        match msg {
            ReplMsg::Start => self.start(myself).await?,
            ReplMsg::Commit(tx, reply) => {
                let s = s.clone();
                // Waiting for acks must not hold up the next commit.
                tokio::spawn(async move {
                    let r = s.primary_commit(&tx).await;
                    let _ = reply.send(r);
                });
            }
            ReplMsg::Read { table, key, reply } => {
                let r = s.serve(&table, |t| t.read_encoded(&key));
                let _ = reply.send(r);
            }
            ReplMsg::Dump { table, reply } => {
                let r = s.serve(&table, |t| t.dump());
                let _ = reply.send(r);
            }
            ReplMsg::Prepare {
                txid,
                coordinator,
                participants,
                tx,
                reply,
            } => {
                let r = s.on_prepare(txid, coordinator, participants, tx);
                let _ = reply.send(r);
            }
            ReplMsg::Decide {
                txid,
                commit,
                reply,
            } => {
                let s = s.clone();
                // The commit waits for acks: not in the actor.
                tokio::spawn(async move {
                    let r = s.on_decide(&txid, commit).await;
                    let _ = reply.send(r);
                });
            }
            ReplMsg::Outcome { txid, reply } => {
                let _ = reply.send(s.on_outcome(&txid));
            }
            ReplMsg::Scan { table, reply } => {
                let _ = reply.send(s.serve_scan(&table));
            }
            ReplMsg::SyncFrom { table, node, reply } => {
                let s = s.clone();
                tokio::spawn(async move {
                    let r = s.on_sync_from(&table, &node).await;
                    let _ = reply.send(r);
                });
            }
            ReplMsg::Apply { from, seq, tables } => s.on_apply(from, seq, tables).await,
            ReplMsg::Copy { table, reply } => {
                let _ = reply.send(s.on_copy(&table));
            }
            ReplMsg::Status {
                from,
                table,
                history,
            } => s.on_status(from, table, history).await,
            ReplMsg::Ack { seq, node } => s.ack(Some(seq), &node),
            ReplMsg::Stale { table } | ReplMsg::SyncTable { table } => s.sync_table(&table).await,
            ReplMsg::Schema { node, tables } => {
                s.schema.lock().insert(node.clone(), tables.clone());
                s.send_rows_to(&node, &tables);
            }
            ReplMsg::AddCopy { table, copy, reply } => {
                let r = s.on_add_copy(&table, copy).await;
                if r.is_err() {
                    let _ = reply.send(r);
                } else {
                    // The copy is made by a SyncTable queued behind us.
                    let s = s.clone();
                    tokio::spawn(async move {
                        let r = s.wait_in_sync(&table).await.map_err(|e| e.to_string());
                        let _ = reply.send(r);
                    });
                }
            }
            ReplMsg::DelCopy { table, reply } => {
                let r = s.on_del_copy(&table).await;
                let _ = reply.send(r);
            }
            ReplMsg::Owned { from, seq, tables } => s.on_owned(from, seq, tables).await,
            ReplMsg::OwnedRows { from, table, rows } => s.on_owned_rows(from, table, rows).await,
            ReplMsg::NodeUp(node) => s.on_node_up(node).await,
            ReplMsg::NodeDown(node) => {
                s.rows_sent.lock().retain(|(n, _)| *n != node);
                s.purge_rows_of(&node).await;
                s.take_over_after(&node);
            }
        }
        Ok(())
    }
}

impl ReplActor {
    async fn start(&self, myself: ActorRef<ReplMsg>) -> Result<(), ActorProcessingErr> {
        let s = &self.shared;
        match &self.role {
            Role::Node => {
                *s.db_actor.lock() = Some(myself.clone());
                s.node.join_group(SCOPE, DBS, &myself).await?;
                s.publish_schema();
            }
            Role::Table(table) => {
                let (owned, in_sync) = {
                    let mut tables = s.tables.lock();
                    let Some(t) = tables.get_mut(table) else {
                        return Ok(());
                    };
                    t.replica = Some(myself.clone());
                    t.child = Some(myself.get_id());
                    if t.def.node_owned {
                        // No primary, nothing to copy: its rows arrive from
                        // each owner.
                        t.in_sync = true;
                    }
                    (t.def.node_owned, t.in_sync)
                };
                if in_sync {
                    // A new node-owned copy, or a restarted replica actor
                    // whose table copy stayed in sync.
                    s.node
                        .join_group(SCOPE, &table_group(table), &myself)
                        .await?;
                    if owned {
                        s.publish_schema();
                    }
                } else {
                    s.cast_db(ReplMsg::SyncTable {
                        table: table.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}
