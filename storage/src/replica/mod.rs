//! Replicated tables: copies of a table on several nodes of a
//! `beamline_runtime::cluster` cluster, kept identical by a primary per
//! table (the design and its guarantees: `docs/storage.md`, "Replication").
//!
//! - [`Replication::start`] attaches replication to a node's [`Db`]: a
//!   dynamic supervisor with one node actor (process group `storage`/`dbs`)
//!   and one replica actor per local table copy (group
//!   `storage`/`table:<name>`, joined once the copy is in sync).
//! - [`Replication::create_table`] declares a table that this node holds a
//!   copy of; it returns once the copy is loaded from the table's primary.
//!   [`Replication::declare_table`] declares it without a copy (reads and
//!   writes then go to other nodes). Every node declares the tables it uses
//!   (tables are typed), and their definitions and copy holders form the
//!   replicated schema ([`Replication::schema`]).
//! - Commits (dirty or transactional, through the usual [`Table`] and
//!   [`Db::transaction`]) on a replicated table go to its primary, the
//!   smallest-named node whose copy is in sync; it validates, applies,
//!   sends the ops to every other in-sync copy and answers once all acked.
//!   A late replica is marked stale and copies the table again. A
//!   transaction over tables with different primaries commits by
//!   two-phase commit (`twophase.rs`).
//! - Node-owned tables ([`TableDef::node_owned`](crate::TableDef)) have no
//!   primary: see `owned.rs`.

mod actor;
mod commit;
mod msg;
mod owned;
mod partition;
mod state;
mod sync;
mod twophase;
mod types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use beamline_runtime::cluster::{ClusterEvent, Node};
use beamline_runtime::codec;
use beamline_supervision::{ChildSpec, DynamicSpec, DynamicSupervisor, Intensity};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::db::{Db, Table};
use crate::error::StorageError;
use crate::record::{CopyType, Record, TableDef};

pub use state::{
    Branch, ConflictWinner, Epoch, PartitionDecider, ReplicationConfig, ReplicationEvent,
    TableSchema,
};

use actor::{ReplActor, Role};
use state::{ReplMsg, Shared, TableState, Typed};

/// Replication of a node's [`Db`] across the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Replication {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("node", &self.shared.me)
            .finish()
    }
}

fn repl_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Replication(e.to_string())
}

impl Replication {
    /// Starts replication for `db` on `node`: the supervisor, the node
    /// actor and the commit hook. One per `Db`.
    pub async fn start(
        db: Db,
        node: Node,
        config: ReplicationConfig,
    ) -> Result<Replication, StorageError> {
        // Replica actors hold no state of their own (it is in `Shared`),
        // so restarts are cheap: allow a burst before escalating.
        let spec = DynamicSpec {
            intensity: Intensity {
                max_restarts: 10,
                period: Duration::from_secs(10),
            },
            ..DynamicSpec::default()
        };
        let (sup, _) = DynamicSupervisor::start(None, spec)
            .await
            .map_err(repl_err)?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            me: node.name().to_string(),
            db: db.clone(),
            node: node.clone(),
            cfg: config,
            tables: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            schema: Mutex::new(Default::default()),
            events,
            sup,
            db_actor: Mutex::new(None),
            rows_sent: Mutex::new(HashSet::new()),
            prepared: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
            next_txid: Default::default(),
            crash_after_prepare: Default::default(),
        });
        db.set_hook(Arc::new(commit::Hook(shared.clone())))?;
        let spec = ChildSpec::from_actor(
            "storage.node",
            ReplActor {
                shared: shared.clone(),
                role: Role::Node,
            },
            (),
        );
        shared.sup.start_child(spec).await.map_err(repl_err)?;
        let deadline = Instant::now() + config.call_timeout;
        while shared.db_of(&shared.me).is_none() {
            if Instant::now() >= deadline {
                return Err(repl_err("node actor did not join its group"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut cluster = node.subscribe();
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            loop {
                let ev = match cluster.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(s) = weak.upgrade() else { return };
                match ev {
                    ClusterEvent::NodeUp { node } => {
                        for t in s.tables.lock().values_mut() {
                            if t.holds && !t.def.node_owned {
                                t.awaiting.insert(node.clone(), Instant::now());
                            }
                        }
                        s.cast_db(ReplMsg::NodeUp(node));
                    }
                    ClusterEvent::NodeDown { node, .. } => {
                        // At once, not behind the node actor's queue:
                        // commits waiting for this node's acks go on.
                        s.ack(None, &node);
                        for t in s.tables.lock().values_mut() {
                            t.followers.remove(&node);
                            t.stale.remove(&node);
                            t.awaiting.remove(&node);
                            t.status_from.remove(&node);
                            if t.handed_over.as_ref().is_some_and(|(n, _)| *n == node) {
                                t.handed_over = None;
                            }
                        }
                        s.cast_db(ReplMsg::NodeDown(node));
                    }
                    _ => {}
                }
            }
        });
        Ok(Replication { shared })
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.shared.me
    }

    /// Test hook: make this node exit (status 9) in the middle of the next
    /// two-phase commit it coordinates, after every participant prepared
    /// and before any is told the outcome.
    #[doc(hidden)]
    pub fn crash_after_prepare(&self) {
        self.shared
            .crash_after_prepare
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test hook: the current replica actor of `table` (or, with `None`,
    /// the node actor), to crash it on purpose.
    #[doc(hidden)]
    pub fn actor_cell(&self, table: Option<&str>) -> Option<ractor::ActorCell> {
        match table {
            Some(t) => self
                .shared
                .tables
                .lock()
                .get(t)
                .and_then(|s| s.replica.as_ref().map(|r| r.get_cell())),
            None => self.shared.db_actor.lock().as_ref().map(|r| r.get_cell()),
        }
    }

    /// Declares table `def` with a copy on this node (of type `def.copy`)
    /// and returns once the copy is in sync (copied from the primary, or
    /// this node's own data when no other copy is up).
    pub async fn create_table<R: Record>(&self, def: TableDef) -> Result<Table<R>, StorageError> {
        let table = self.declare::<R>(def.clone(), true)?;
        self.start_replica_checked(&def.name).await?;
        self.shared.wait_in_sync(&def.name).await?;
        Ok(table)
    }

    /// Declares table `def` without a copy here: reads go to a live copy
    /// ([`Replication::read`]), commits to the primary. A copy can be added
    /// later with [`Replication::add_table_copy`].
    pub fn declare_table<R: Record>(&self, def: TableDef) -> Result<Table<R>, StorageError> {
        let t = self.declare::<R>(def, false)?;
        self.shared.publish_schema();
        Ok(t)
    }

    fn declare<R: Record>(&self, def: TableDef, holds: bool) -> Result<Table<R>, StorageError> {
        let table = self.shared.db.create_table::<R>(def.clone())?;
        let mut tables = self.shared.tables.lock();
        if let Some(t) = tables.get_mut(&def.name) {
            t.holds |= holds;
            return Ok(table);
        }
        tables.insert(
            def.name.clone(),
            TableState {
                def,
                holds,
                in_sync: false,
                epoch: (0, String::new()),
                followers: Default::default(),
                stale: Default::default(),
                handed_over: None,
                owners: HashMap::new(),
                replica: None,
                child: None,
                helper: Arc::new(Typed(table.clone())),
                resolver: None,
                history: Vec::new(),
                decider: None,
                awaiting: HashMap::new(),
                status_from: HashSet::new(),
                prepared: None,
            },
        );
        Ok(table)
    }

    async fn start_replica_checked(&self, table: &str) -> Result<(), StorageError> {
        let running = self
            .shared
            .tables
            .lock()
            .get(table)
            .is_some_and(|t| t.replica.is_some());
        if running {
            return Ok(());
        }
        self.shared.publish_schema();
        self.shared.start_replica(table).await
    }

    /// Makes `node` hold a copy of `table` (of type `copy`, which must be
    /// the type `node` declared it with) and returns once that copy is in
    /// sync. Writes may continue meanwhile: the primary dumps the table
    /// under its commit lock and streams every later commit to the copy.
    pub async fn add_table_copy(
        &self,
        table: &str,
        node: &str,
        copy: CopyType,
    ) -> Result<(), StorageError> {
        let db = self
            .shared
            .db_of(node)
            .ok_or_else(|| repl_err(format!("node {node} is not up")))?;
        let t = table.to_string();
        db.call(
            |r| ReplMsg::AddCopy {
                table: t,
                copy,
                reply: r,
            },
            self.shared.cfg.commit_timeout + self.shared.cfg.call_timeout,
        )
        .await
        .map_err(repl_err)?
        .map_err(repl_err)
    }

    /// Removes `node`'s copy of `table` (its rows there are cleared).
    pub async fn del_table_copy(&self, table: &str, node: &str) -> Result<(), StorageError> {
        let db = self
            .shared
            .db_of(node)
            .ok_or_else(|| repl_err(format!("node {node} is not up")))?;
        let t = table.to_string();
        db.call(
            |r| ReplMsg::DelCopy { table: t, reply: r },
            self.shared.cfg.call_timeout,
        )
        .await
        .map_err(repl_err)?
        .map_err(repl_err)
    }

    /// The records with `key`: from the local copy when it is in sync,
    /// otherwise from a live in-sync copy on another node.
    pub async fn read<R: Record>(
        &self,
        table: &Table<R>,
        key: &R::Key,
    ) -> Result<Vec<R>, StorageError> {
        if self.local_in_sync(&table.def().name) {
            return Ok(table.read(key));
        }
        let key = codec::encode(key)?;
        let name = table.def().name.clone();
        let bytes = self
            .remote(&name, |reply| ReplMsg::Read {
                table: name.clone(),
                key,
                reply,
            })
            .await?;
        Ok(codec::decode(&bytes)?)
    }

    /// Every record of the table, from the local copy when it is in sync,
    /// otherwise from a live copy elsewhere.
    pub async fn all<R: Record>(&self, table: &Table<R>) -> Result<Vec<R>, StorageError> {
        if self.local_in_sync(&table.def().name) {
            return Ok(table.all());
        }
        let name = table.def().name.clone();
        let bytes = self
            .remote(&name, |reply| ReplMsg::Dump {
                table: name.clone(),
                reply,
            })
            .await?;
        state::decode_dump(&bytes)
    }

    fn local_in_sync(&self, table: &str) -> bool {
        self.shared
            .tables
            .lock()
            .get(table)
            .is_some_and(|t| t.holds && t.in_sync)
    }

    async fn remote(
        &self,
        table: &str,
        build: impl FnOnce(beamline_runtime::cluster::ReplyTo<Result<Vec<u8>, String>>) -> ReplMsg,
    ) -> Result<Vec<u8>, StorageError> {
        self.shared.call_copy(table, build).await
    }

    /// The node that commits to `table` now, as this node sees it.
    pub fn primary(&self, table: &str) -> Option<String> {
        self.shared.primary(table).map(|g| g.node().to_string())
    }

    /// True when this node's copy of `table` is loaded and follows the
    /// primary.
    pub fn is_in_sync(&self, table: &str) -> bool {
        self.local_in_sync(table)
    }

    /// Waits until this node's copy of each table is in sync (Mnesia's
    /// `wait_for_tables`).
    pub async fn wait_for_tables(
        &self,
        tables: &[&str],
        timeout: Duration,
    ) -> Result<(), StorageError> {
        let deadline = Instant::now() + timeout;
        for t in tables {
            while !self.local_in_sync(t) {
                if Instant::now() >= deadline {
                    return Err(repl_err(format!("{t} not in sync after {timeout:?}")));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// The replicated schema: every table declared on a live (or once
    /// seen) node, with the nodes holding copies.
    pub fn schema(&self) -> Vec<TableSchema> {
        self.shared.schema()
    }

    /// Replication events (stale replicas, copies, node-owned purges,
    /// merges and conflicts). The channel holds 1024 events; a receiver
    /// that falls behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<ReplicationEvent> {
        self.shared.events.subscribe()
    }

    /// Delivers every replication event to `actor` until it stops (events
    /// a slow actor's forwarder falls 1024 behind on are skipped, with a
    /// warning).
    pub fn subscribe_actor<M>(&self, actor: ractor::ActorRef<M>)
    where
        M: ractor::Message + From<ReplicationEvent>,
    {
        let mut rx = self.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if actor.send_message(M::from(ev)).is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "replication events skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Sets how a node-owned table settles a key owned by two nodes when
    /// they meet: `f(key, first, second)` gets each owner's node and rows,
    /// `first` being the smaller node name, and names the winner. Without
    /// it, `First` wins. Set the same rule on every node.
    pub fn on_conflict<R: Record>(
        &self,
        table: &Table<R>,
        f: impl Fn(&R::Key, (&str, &[R]), (&str, &[R])) -> ConflictWinner + Send + Sync + 'static,
    ) {
        let resolver: state::Resolver = Arc::new(move |key, a, b| {
            let decode = |rows: &[Vec<u8>]| -> Vec<R> {
                rows.iter().filter_map(|r| codec::decode(r).ok()).collect()
            };
            match codec::decode::<R::Key>(key) {
                Ok(k) => f(&k, (a.0, &decode(a.1)), (b.0, &decode(b.1))),
                Err(_) => ConflictWinner::First,
            }
        });
        if let Some(t) = self.shared.tables.lock().get_mut(&table.def().name) {
            t.resolver = Some(resolver);
        }
    }
}

impl Replication {
    /// Sets who wins when `table` diverged in a partition (both sides
    /// committed): `decide(first, second)` gets both sides' branches,
    /// `first` being the one whose primary has the smaller name, and names
    /// the winner. Without it the side whose commits reached more copies
    /// wins, and a tie goes to `first`. Set the same rule on every node.
    /// The losing side's copies report the rows they lose
    /// ([`ReplicationEvent::PartitionLost`]) and copy the winner's table.
    pub fn on_partition(
        &self,
        table: &str,
        decide: impl Fn(&Branch, &Branch) -> ConflictWinner + Send + Sync + 'static,
    ) {
        if let Some(t) = self.shared.tables.lock().get_mut(table) {
            t.decider = Some(Arc::new(decide));
        }
    }
}

impl Shared {
    /// Starts the replica actor of `table` under the supervisor.
    pub(crate) async fn start_replica(self: &Arc<Self>, table: &str) -> Result<(), StorageError> {
        let spec = ChildSpec::from_actor(
            format!("storage.table.{table}"),
            ReplActor {
                shared: self.clone(),
                role: Role::Table(table.to_string()),
            },
            (),
        );
        self.sup.start_child(spec).await.map_err(repl_err)?;
        Ok(())
    }

    /// Waits until the local copy of `table` is in sync.
    pub(crate) async fn wait_in_sync(&self, table: &str) -> Result<(), StorageError> {
        let deadline = Instant::now() + self.cfg.commit_timeout + self.cfg.call_timeout;
        loop {
            if self
                .tables
                .lock()
                .get(table)
                .is_some_and(|t| t.holds && t.in_sync)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(repl_err(format!("copy of {table} not in sync in time")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The local in-sync copy's version of `table` and its dump, under
    /// its commit lock so that they match (serving a remote scan).
    pub(crate) fn serve_scan(&self, table: &str) -> Result<(u64, Vec<u8>), String> {
        let ok = self
            .tables
            .lock()
            .get(table)
            .is_some_and(|t| t.holds && t.in_sync);
        if !ok {
            return Err(format!("{} has no in-sync copy of {table}", self.me));
        }
        let t = self
            .db
            .any_table(table)
            .ok_or_else(|| format!("no table {table}"))?;
        let _guard = t.commit_lock().lock();
        Ok((t.version(), t.dump().map_err(|e| e.to_string())?))
    }

    /// A call to a live in-sync copy of `table` (the primary first: its
    /// rows are the newest, so what a transaction reads there is the most
    /// likely to validate).
    pub(crate) async fn call_copy<T>(
        &self,
        table: &str,
        build: impl FnOnce(beamline_runtime::cluster::ReplyTo<Result<T, String>>) -> ReplMsg,
    ) -> Result<T, StorageError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let member = self
            .members(table)
            .into_iter()
            .next()
            .ok_or_else(|| repl_err(format!("no live copy of {table}")))?;
        member
            .call(build, self.cfg.call_timeout)
            .await
            .map_err(repl_err)?
            .map_err(repl_err)
    }

    /// Runs `f` on the local in-sync copy of `table` (serving a remote
    /// read).
    pub(crate) fn serve(
        &self,
        table: &str,
        f: impl FnOnce(&dyn crate::table::AnyTable) -> Result<Vec<u8>, StorageError>,
    ) -> Result<Vec<u8>, String> {
        let ok = self
            .tables
            .lock()
            .get(table)
            .is_some_and(|t| t.holds && t.in_sync);
        if !ok {
            return Err(format!("{} has no in-sync copy of {table}", self.me));
        }
        let t = self
            .db
            .any_table(table)
            .ok_or_else(|| format!("no table {table}"))?;
        f(t.as_ref()).map_err(|e| e.to_string())
    }
}
