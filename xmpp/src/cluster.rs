//! The XMPP server across a cluster of nodes (ejabberd's clustering on
//! Mnesia, here on `beamline_runtime::cluster` and the storage crate's
//! replication). What it does, in one place:
//!
//! - **Membership.** With `[cluster]` in the configuration,
//!   [`crate::server::Server::start`] starts this process's cluster
//!   [`Node`] (its name is the `node` of the session records), joins the
//!   seeds (bounded wait; the runtime keeps redialling them and every
//!   known peer for as long as the node runs, so a node alone is fine and
//!   a node that comes back rejoins by itself) and attaches
//!   [`Replication`] to the node's [`beamline_storage::Db`].
//! - **Sessions.** The session table ([`crate::sm`]) is a node-owned
//!   replicated table: each node commits its own rows locally and
//!   broadcasts them to every other node, so every node has every session
//!   in its local copy and the router reads it without a hop or a lock.
//!   When a node goes down every other node purges its rows; when it comes
//!   back the nodes exchange their rows. Keys are `(host, user, node,
//!   sid)`, so a row always has exactly one owner.
//! - **Delivery.** Each node runs [`ServerOptions::delivery_shards`]
//!   delivery shard actors, registered under the global names
//!   `xmpp.delivery.<node>.<i>`. The router sends a stanza for a session
//!   of node B (serialized, with the target session id) to B's shard
//!   chosen by a hash of the recipient's full JID; the shard parses it
//!   and hands it to the local session with the same queue bound as local
//!   delivery. One sender routes its stanzas one after another, one
//!   connection links two nodes, one shard serves a recipient and every
//!   mailbox is FIFO: stanzas from one sender to one recipient arrive in
//!   the order sent across nodes too. Replacing or kicking a session of
//!   another node goes the same way ([`DeliveryMsg::Kick`]).
//! - **Node down.** Every node sees the lost node's sessions leave its
//!   table (the purge). Exactly one survivor — the one with the smallest
//!   name among the nodes up — then does for each of them what a logout
//!   does: `<presence type='unavailable'/>` through `user_send_packet`
//!   (where the presence module tells the contacts) for those that were
//!   available, and `sm_remove_connection` for all. The lost node's users
//!   can log in anywhere at once (their rows are gone). If the node was
//!   only cut off and its rows come back when it rejoins, the node that
//!   logged them out announces them again (their last presence).
//! - **Modules.** Starting, stopping or reloading a module at runtime is
//!   applied locally and sent to every other node's service
//!   (`xmpp.node.<name>`), which applies it there. Every node reads the
//!   same configuration file (hosts, modules); at node up the nodes
//!   compare their hosts and log an error when they differ.
//!
//! On a partition each side purges the other's sessions (and tells the
//! contacts that those users went offline); when it heals the rows come
//! back, the users stayed connected, and the contacts are told their last
//! presence again (see docs/xmpp-server.md, "Cluster").
//!
//! [`ServerOptions::delivery_shards`]: crate::server::ServerOptions::delivery_shards

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use beamline_runtime::cluster::{
    ClusterEvent, GlobalRef, JoinError, Node, NodeConfig, RegistryError, ReplyTo, Timings,
};
use beamline_runtime::hooks::{Hooks, Scope};
use beamline_storage::replica::{Replication, ReplicationConfig};
use beamline_storage::{Db, StorageError, TableEvent};
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{ModuleManagerRef, ModuleOptions};
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::hooks::{SM_REGISTER_CONNECTION, SM_REMOVE_CONNECTION, SessionInfo, USER_SEND_PACKET};
use crate::jid::FullJid;
use crate::ns;
use crate::router::Router;
use crate::sm::{SessionManager, SessionRecord};
use crate::stream::{StreamDecoder, StreamEvent, StreamLimits};
use crate::stream_error::StreamErrorCondition;
use crate::xml::Element;

/// How long [`start_node`] waits for a seed before it goes on alone (the
/// runtime keeps dialling the seeds afterwards).
pub const JOIN_WAIT: Duration = Duration::from_secs(5);

/// How long a module command waits for each other node.
pub const MODULE_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Global name of delivery shard `index` of `node`.
pub fn delivery_name(node: &str, index: usize) -> String {
    format!("xmpp.delivery.{node}.{index}")
}

/// Global name of the server service of `node` (module commands, hosts
/// check).
pub fn service_name(node: &str) -> String {
    format!("xmpp.node.{node}")
}

/// What a delivery shard gets from other nodes.
#[derive(Debug, Serialize, Deserialize)]
pub enum DeliveryMsg {
    /// Hand a stanza to local session `sid`.
    Route {
        /// The session id (on the receiving node).
        sid: u64,
        /// The stanza, serialized (standalone, with its `xmlns`); a
        /// string, which the codec copies in one piece.
        stanza: String,
    },
    /// Close local session `sid` with a stream error.
    Kick {
        /// Host of the session.
        host: String,
        /// User of the session.
        user: String,
        /// The session id.
        sid: u64,
        /// `conflict` (replaced by another session) when true, else
        /// `policy-violation` (an admin's kick).
        conflict: bool,
        /// The error's text.
        text: String,
    },
}

impl ractor::Message for DeliveryMsg {}

/// A runtime module command, as sent to every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ModuleCmd {
    /// Start `name` on `host` (every host when `None`) with `options`
    /// (a JSON object).
    Start {
        /// Host, or every configured host.
        host: Option<String>,
        /// Module name.
        name: String,
        /// Options as JSON.
        options: String,
    },
    /// Stop `name` on `host` (every host when `None`).
    Stop {
        /// Host, or every configured host.
        host: Option<String>,
        /// Module name.
        name: String,
    },
    /// Reload `name` on `host` (every host when `None`) with `options`.
    Reload {
        /// Host, or every configured host.
        host: Option<String>,
        /// Module name.
        name: String,
        /// Options as JSON.
        options: String,
    },
}

/// What a node's server service gets from other nodes.
#[derive(Debug, Serialize, Deserialize)]
pub enum ServiceMsg {
    /// Apply a module command here (only here: the sender tells every
    /// node itself).
    Module {
        /// The command.
        cmd: ModuleCmd,
        /// `Err(text)` when it failed here.
        reply: ReplyTo<Result<(), String>>,
    },
    /// The sender's configured hosts, compared with ours at node up.
    Hosts {
        /// The sender.
        from: String,
        /// Its hosts.
        hosts: Vec<String>,
    },
}

impl ractor::Message for ServiceMsg {}

/// How the router and the session manager reach other nodes. Cheap to
/// clone.
#[derive(Clone)]
pub struct ClusterLink {
    node: Node,
    shards: usize,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("node", &self.node.name())
            .field("shards", &self.shards)
            .finish()
    }
}

/// The shard of a recipient: a hash of its full JID's parts (the same on
/// every node: a fixed hasher, no random keys).
fn shard_of(rec: &SessionRecord, shards: usize) -> usize {
    // FNV-1a: the same on every node and every build.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&rec.host, &rec.user, &rec.resource] {
        for b in part.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h % shards.max(1) as u64) as usize
}

impl ClusterLink {
    /// The cluster node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    fn shard(&self, rec: &SessionRecord) -> Option<GlobalRef<DeliveryMsg>> {
        let i = shard_of(rec, self.shards);
        self.node
            .whereis::<DeliveryMsg>(&delivery_name(&rec.node, i))
            // A node with fewer shards (misconfigured): its first.
            .or_else(|| {
                self.node
                    .whereis::<DeliveryMsg>(&delivery_name(&rec.node, 0))
            })
    }

    /// Sends `stanza` to session `rec` of another node, through that
    /// node's delivery shard for the recipient. Dropped (logged) when the
    /// node is gone: its sessions are being purged.
    pub(crate) fn route_remote(&self, rec: &SessionRecord, stanza: &Element) {
        let Some(shard) = self.shard(rec) else {
            tracing::debug!(node = %rec.node, "no delivery shard for a session of another node");
            return;
        };
        let stanza = String::from_utf8(stanza.to_bytes())
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let msg = DeliveryMsg::Route {
            sid: rec.sid,
            stanza,
        };
        if let Err(e) = shard.cast(msg) {
            tracing::debug!(node = %rec.node, error = %e, "stanza to another node dropped");
        }
    }

    /// Closes session `rec` of another node (replaced: `conflict`; else
    /// `policy-violation`).
    pub(crate) fn kick_remote(&self, rec: &SessionRecord, conflict: bool, text: &str) {
        let Some(shard) = self.shard(rec) else {
            tracing::debug!(node = %rec.node, "no delivery shard to close a session of another node");
            return;
        };
        let msg = DeliveryMsg::Kick {
            host: rec.host.clone(),
            user: rec.user.clone(),
            sid: rec.sid,
            conflict,
            text: text.to_owned(),
        };
        if let Err(e) = shard.cast(msg) {
            tracing::debug!(node = %rec.node, error = %e, "kick to another node dropped");
        }
    }

    /// Applies `cmd` on every other node up; the errors, by node.
    pub(crate) async fn module_everywhere(&self, cmd: &ModuleCmd) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let me = self.node.name().to_owned();
        let mut calls = Vec::new();
        for peer in self.node.members() {
            if peer == me {
                continue;
            }
            let Some(svc) = self.node.whereis::<ServiceMsg>(&service_name(&peer)) else {
                errors.push((peer, "its server service is not registered".to_owned()));
                continue;
            };
            let cmd = cmd.clone();
            calls.push(async move {
                let r = svc
                    .call(
                        |reply| ServiceMsg::Module { cmd, reply },
                        MODULE_CALL_TIMEOUT,
                    )
                    .await;
                (peer, r)
            });
        }
        for (peer, r) in futures::future::join_all(calls).await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push((peer, e)),
                Err(e) => errors.push((peer, e.to_string())),
            }
        }
        errors
    }
}

fn new_decoder(max_stanza_size: usize) -> StreamDecoder {
    let limits = StreamLimits {
        max_stanza_size,
        ..StreamLimits::default()
    };
    let mut d = StreamDecoder::new(limits);
    d.set_authenticated(true);
    d.feed(
        format!(
            "<stream:stream xmlns='{}' xmlns:stream='{}'>",
            ns::JABBER_CLIENT,
            ns::STREAM
        )
        .as_bytes(),
    );
    d
}

/// Parses one stanza sent by another node, reusing the shard's decoder
/// (a stream opened once, stanzas fed one after another). The size was
/// checked by the sending node's session.
fn decode(dec: &mut Option<StreamDecoder>, bytes: &[u8]) -> Option<Element> {
    let standard = StreamLimits::default().max_stanza_size;
    if bytes.len() >= standard {
        // Larger than what clients may send here: a decoder of its own.
        let mut one = Some(new_decoder(bytes.len() + 1));
        return decode_with(&mut one, bytes);
    }
    if dec.is_none() {
        *dec = Some(new_decoder(standard));
    }
    decode_with(dec, bytes)
}

fn decode_with(dec: &mut Option<StreamDecoder>, bytes: &[u8]) -> Option<Element> {
    let d = dec.as_mut()?;
    d.feed(bytes);
    loop {
        match d.next_event() {
            Ok(Some(StreamEvent::StreamOpen(_))) => continue,
            Ok(Some(StreamEvent::Stanza(el))) => return Some(el),
            Ok(Some(StreamEvent::StreamClose)) | Ok(None) | Err(_) => {
                // Incomplete or bad: start afresh next time.
                *dec = None;
                return None;
            }
        }
    }
}

/// A delivery shard: hands stanzas from other nodes to local sessions.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryShard;

/// Arguments of [`DeliveryShard`].
#[derive(Clone)]
pub struct DeliveryArgs {
    node: Node,
    index: usize,
    router: Router,
    sm: SessionManager,
}

/// Registers `name` for `actor`, retrying while an earlier holder (a
/// crashed predecessor whose stub is still being removed) has it.
async fn register_retrying<M: beamline_runtime::cluster::RemoteMessage>(
    node: &Node,
    name: &str,
    actor: &ActorRef<M>,
) -> Result<(), ActorProcessingErr> {
    let mut last = None;
    for _ in 0..100 {
        match node.register(name, actor).await {
            Ok(()) => return Ok(()),
            Err(e @ RegistryError::AlreadyRegistered { .. }) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("registering {name}: {e}").into()),
        }
    }
    Err(format!(
        "registering {name}: {}",
        last.map_or_else(String::new, |e| e.to_string())
    )
    .into())
}

impl Actor for DeliveryShard {
    type Msg = DeliveryMsg;
    type State = (DeliveryArgs, Option<StreamDecoder>);
    type Arguments = DeliveryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DeliveryMsg>,
        args: DeliveryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let name = delivery_name(args.node.name(), args.index);
        register_retrying(&args.node, &name, &myself).await?;
        Ok((args, None))
    }

    async fn handle(
        &self,
        _myself: ActorRef<DeliveryMsg>,
        msg: DeliveryMsg,
        (args, dec): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeliveryMsg::Route { sid, stanza } => match decode(dec, stanza.as_bytes()) {
                Some(el) => args.router.deliver_local(sid, el),
                None => tracing::warn!("a stanza from another node did not parse: dropped"),
            },
            DeliveryMsg::Kick {
                host,
                user,
                sid,
                conflict,
                text,
            } => {
                let condition = if conflict {
                    StreamErrorCondition::Conflict
                } else {
                    StreamErrorCondition::PolicyViolation
                };
                if !args.sm.kick_local(sid, condition, Some(text)) {
                    // Not here (any more): make sure its row is gone.
                    let sm = args.sm.clone();
                    tokio::spawn(async move { sm.unregister(&host, &user, sid).await });
                }
            }
        }
        Ok(())
    }
}

/// Applies module commands to this node's module manager.
#[derive(Clone)]
pub(crate) struct LocalModules {
    pub(crate) manager: ModuleManagerRef,
    pub(crate) hosts: Vec<String>,
}

impl LocalModules {
    fn hosts(&self, host: Option<&str>) -> Result<Vec<String>, String> {
        match host {
            None => Ok(self.hosts.clone()),
            Some(h) => {
                let h = crate::config::normalize_host(h);
                if self.hosts.contains(&h) {
                    Ok(vec![h])
                } else {
                    Err(format!("unknown host {h}"))
                }
            }
        }
    }

    /// Applies `cmd` here.
    pub(crate) async fn apply(&self, cmd: &ModuleCmd) -> Result<(), String> {
        match cmd {
            ModuleCmd::Start {
                host,
                name,
                options,
            } => {
                let opts = parse_options(options)?;
                for h in self.hosts(host.as_deref())? {
                    self.manager
                        .start_module(&h, name, opts.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            ModuleCmd::Stop { host, name } => {
                for h in self.hosts(host.as_deref())? {
                    self.manager
                        .stop_module(&h, name)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            ModuleCmd::Reload {
                host,
                name,
                options,
            } => {
                let opts = parse_options(options)?;
                for h in self.hosts(host.as_deref())? {
                    self.manager
                        .reload_module(&h, name, opts.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }
}

/// Module options as sent between nodes (a JSON object).
pub(crate) fn options_json(options: &ModuleOptions) -> String {
    serde_json::Value::Object(options.clone()).to_string()
}

fn parse_options(json: &str) -> Result<ModuleOptions, String> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("module options must be an object".into()),
        Err(e) => Err(format!("module options: {e}")),
    }
}

/// The server service of a node: module commands from other nodes, and
/// the hosts check.
#[derive(Debug, Clone, Copy)]
pub struct ServerService;

/// Arguments of [`ServerService`].
#[derive(Clone)]
pub struct ServiceArgs {
    node: Node,
    modules: Arc<Mutex<Option<LocalModules>>>,
    hosts: Vec<String>,
}

impl Actor for ServerService {
    type Msg = ServiceMsg;
    type State = ServiceArgs;
    type Arguments = ServiceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ServiceMsg>,
        args: ServiceArgs,
    ) -> Result<ServiceArgs, ActorProcessingErr> {
        register_retrying(&args.node, &service_name(args.node.name()), &myself).await?;
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ServiceMsg>,
        msg: ServiceMsg,
        state: &mut ServiceArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ServiceMsg::Module { cmd, reply } => {
                let modules = state.modules.lock().clone();
                let r = match modules {
                    Some(m) => m.apply(&cmd).await,
                    None => Err("the module manager is not running yet".into()),
                };
                if let Err(e) = &r {
                    tracing::error!(?cmd, error = %e, "module command from another node failed here");
                }
                let _ = reply.send(r);
            }
            ServiceMsg::Hosts { from, hosts } => {
                check_hosts(&state.hosts, &from, &hosts);
            }
        }
        Ok(())
    }
}

/// Logs an error when `peer`'s hosts are not ours: every node must read
/// the same configuration.
fn check_hosts(ours: &[String], peer: &str, theirs: &[String]) -> bool {
    let a: BTreeSet<&String> = ours.iter().collect();
    let b: BTreeSet<&String> = theirs.iter().collect();
    if a != b {
        tracing::error!(
            %peer,
            ours = ?a,
            theirs = ?b,
            "node {peer} serves other hosts than this node: every node of a cluster must \
             read the same configuration (hosts, modules)"
        );
        return false;
    }
    true
}

/// This process's cluster membership, as the server runs it.
pub struct Cluster {
    node: Node,
    repl: Replication,
    link: ClusterLink,
    modules: Arc<Mutex<Option<LocalModules>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node.name())
            .finish_non_exhaustive()
    }
}

/// Errors of joining the cluster at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The node did not start (bad name, port taken, ...).
    #[error("cluster node: {0}")]
    Start(String),
    /// Replication or the replicated tables did not start.
    #[error("replication: {0}")]
    Storage(#[from] StorageError),
}

/// Starts this process's cluster node from `[cluster]`, joins the seeds
/// (waiting at most [`JOIN_WAIT`]; afterwards the runtime keeps dialling
/// them) and attaches replication to `db`.
pub async fn start_node(
    config: &ClusterConfig,
    db: &Db,
) -> Result<(Node, Replication), ClusterError> {
    let cookie = config
        .cookie
        .as_ref()
        .map(|c| c.expose().to_owned())
        .unwrap_or_default();
    let node_config = NodeConfig::new(config.node_name.clone(), cookie, config.listen)
        .with_timings(Timings::default().with_join_timeout(JOIN_WAIT));
    let node = Node::start(node_config)
        .await
        .map_err(|e| ClusterError::Start(e.to_string()))?;
    join_seeds(&node, &config.seeds).await;
    match Replication::start(db.clone(), node.clone(), ReplicationConfig::default()).await {
        Ok(repl) => Ok((node, repl)),
        Err(e) => {
            node.leave().await;
            Err(e.into())
        }
    }
}

async fn join_seeds(node: &Node, seeds: &[SocketAddr]) {
    if seeds.is_empty() {
        tracing::info!(node = %node.name(), "cluster node started alone (no seeds)");
        return;
    }
    match node.join(seeds).await {
        Ok(joined) => tracing::info!(node = %node.name(), ?joined, "joined the cluster"),
        Err(JoinError::AuthFailed { seed }) => tracing::error!(
            node = %node.name(), %seed,
            "a seed refused this node's cookie; going on alone"
        ),
        Err(e) => tracing::warn!(
            node = %node.name(), error = %e,
            "no seed reached yet; going on alone and dialling them in the background"
        ),
    }
}

/// The session table, replicated (node-owned) through `repl`.
pub async fn session_table(
    repl: &Replication,
) -> Result<beamline_storage::Table<SessionRecord>, StorageError> {
    repl.create_table::<SessionRecord>(SessionManager::table_def())
        .await
}

impl Cluster {
    /// Wires the cluster into a server's parts: the session manager gets
    /// its link to other nodes; the returned child specs (delivery shards,
    /// server service) go under the server's root supervisor; the
    /// node-down and node-up watchers start.
    pub(crate) fn new(
        node: Node,
        repl: Replication,
        shards: usize,
        sm: &SessionManager,
        router: &Router,
        hooks: &Hooks,
        hosts: Vec<String>,
    ) -> (Cluster, Vec<ChildSpec>) {
        let link = ClusterLink {
            node: node.clone(),
            shards: shards.max(1),
        };
        sm.set_cluster(link.clone());
        let modules = Arc::new(Mutex::new(None));
        let mut specs = Vec::new();
        for index in 0..shards.max(1) {
            specs.push(ChildSpec::from_actor(
                format!("delivery_shard_{index}"),
                DeliveryShard,
                DeliveryArgs {
                    node: node.clone(),
                    index,
                    router: router.clone(),
                    sm: sm.clone(),
                },
            ));
        }
        specs.push(ChildSpec::from_actor(
            "cluster_service",
            ServerService,
            ServiceArgs {
                node: node.clone(),
                modules: modules.clone(),
                hosts: hosts.clone(),
            },
        ));
        let tasks = vec![
            watch_lost_sessions(node.clone(), sm, hooks.clone()),
            watch_node_up(node.clone(), hosts),
        ];
        (
            Cluster {
                node,
                repl,
                link,
                modules,
                tasks: Mutex::new(tasks),
            },
            specs,
        )
    }

    /// The cluster node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Replication of the node's tables.
    pub fn replication(&self) -> &Replication {
        &self.repl
    }

    pub(crate) fn link(&self) -> &ClusterLink {
        &self.link
    }

    /// Gives the server service the module manager (once it runs).
    pub(crate) fn set_modules(&self, modules: LocalModules) {
        *self.modules.lock() = Some(modules);
    }

    /// Leaves the cluster (the others do not wait for a timeout) and stops
    /// the watchers.
    pub(crate) async fn leave(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.node.leave().await;
    }
}

/// Whether this node is the one that cleans up after lost nodes: the
/// smallest name among the nodes up (every survivor computes the same).
fn is_cleaner(node: &Node) -> bool {
    let me = node.name();
    node.members().iter().all(|m| m.as_str() >= me)
}

/// What the session table watcher sees of other nodes' rows.
enum Seen {
    /// A row of a node that is down was purged.
    Lost(SessionRecord),
    /// A row of another node appeared (a login there, or a row merged
    /// back when its node came up again).
    Appeared(SessionRecord),
}

/// How long a logged-out lost session is remembered, to be announced
/// again if its node comes back with it (a partition that healed).
const ANNOUNCED_TTL: Duration = Duration::from_secs(3600);

/// Watches the session table for rows of a lost node being purged and,
/// on one survivor, runs the logout path for them; if such a row comes
/// back (its node was cut off, not dead, and the rows were merged when it
/// rejoined), the node that logged it out announces it again: its last
/// presence through `user_send_packet` and `sm_register_connection`.
fn watch_lost_sessions(
    node: Node,
    sm: &SessionManager,
    hooks: Hooks,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
    let me = node.name().to_owned();
    let watcher = node.clone();
    sm.table().subscribe(move |ev| {
        match ev {
            TableEvent::Delete { old, .. } => old
                .iter()
                // A row of another node that is down: purged, not a logout
                // (a logout is deleted while its node is up).
                .filter(|rec| rec.node != me && !watcher.is_up(&rec.node))
                .all(|rec| tx.send(Seen::Lost(rec.clone())).is_ok()),
            TableEvent::Write { new, old, .. } if old.is_empty() && new.node != me => {
                tx.send(Seen::Appeared(new.clone())).is_ok()
            }
            TableEvent::Write { .. } => true,
        }
    });
    tokio::spawn(async move {
        let mut announced: std::collections::HashMap<(String, u64), std::time::Instant> =
            std::collections::HashMap::new();
        while let Some(seen) = rx.recv().await {
            match seen {
                Seen::Lost(rec) => {
                    if !is_cleaner(&node) {
                        continue;
                    }
                    let Some(jid) = rec.full_jid() else { continue };
                    logout_lost(&hooks, &rec, jid).await;
                    announced.retain(|_, at| at.elapsed() < ANNOUNCED_TTL);
                    announced.insert((rec.node.clone(), rec.sid), std::time::Instant::now());
                }
                Seen::Appeared(rec) => {
                    if announced.remove(&(rec.node.clone(), rec.sid)).is_none() {
                        continue;
                    }
                    let Some(jid) = rec.full_jid() else { continue };
                    login_back(&hooks, &rec, jid).await;
                }
            }
        }
    })
}

/// A session logged out by [`logout_lost`] is back (its node rejoined):
/// `sm_register_connection`, then its last available presence through
/// `user_send_packet`, so that the contacts told it went offline see it
/// again.
async fn login_back(hooks: &Hooks, rec: &SessionRecord, jid: FullJid) {
    tracing::debug!(%jid, node = %rec.node, "session of a lost node is back");
    let info = Arc::new(SessionInfo {
        jid: jid.clone(),
        ip: None,
    });
    let _ = hooks
        .run(
            &SM_REGISTER_CONNECTION,
            Scope::Host(&rec.host),
            info.clone(),
        )
        .await;
    if rec.priority.is_none() {
        return;
    }
    let mut dec = None;
    let Some(mut el) = rec
        .presence
        .as_deref()
        .and_then(|p| decode(&mut dec, p.as_bytes()))
    else {
        return;
    };
    el.set_attr("from", jid.to_string());
    let _ = hooks
        .run_fold(&USER_SEND_PACKET, Scope::Host(&rec.host), Some(el), info)
        .await;
}

/// What a logout does, for a session whose node is gone: unavailable
/// presence through `user_send_packet` (if it was available), then
/// `sm_remove_connection`.
async fn logout_lost(hooks: &Hooks, rec: &SessionRecord, jid: FullJid) {
    tracing::debug!(%jid, node = %rec.node, "session of a lost node: logged out");
    let info = Arc::new(SessionInfo {
        jid: jid.clone(),
        ip: None,
    });
    if rec.priority.is_some() {
        let el = Element::builder("presence", ns::JABBER_CLIENT)
            .attr("type", "unavailable")
            .attr("from", jid.to_string())
            .build();
        let _ = hooks
            .run_fold(
                &USER_SEND_PACKET,
                Scope::Host(&rec.host),
                Some(el),
                info.clone(),
            )
            .await;
    }
    let _ = hooks
        .run(&SM_REMOVE_CONNECTION, Scope::Host(&rec.host), info)
        .await;
}

/// Tells `peer`'s server service our hosts (it logs an error if they
/// differ from its own), waiting a little for the service to register.
fn send_hosts(node: &Node, peer: String, hosts: Vec<String>) {
    let node = node.clone();
    tokio::spawn(async move {
        for _ in 0..50 {
            if let Some(svc) = node.whereis::<ServiceMsg>(&service_name(&peer)) {
                let _ = svc.cast(ServiceMsg::Hosts {
                    from: node.name().to_owned(),
                    hosts,
                });
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// At each node up (and for the nodes up already, joined through the
/// seeds before this started): tell it our hosts.
fn watch_node_up(node: Node, hosts: Vec<String>) -> tokio::task::JoinHandle<()> {
    let mut events = node.subscribe();
    for peer in node.members() {
        send_hosts(&node, peer, hosts.clone());
    }
    tokio::spawn(async move {
        loop {
            let ev = match events.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            match ev {
                ClusterEvent::NodeUp { node: peer } => {
                    tracing::info!(%peer, "cluster node up");
                    send_hosts(&node, peer, hosts.clone());
                }
                ClusterEvent::NodeDown { node: peer, reason } => {
                    tracing::warn!(%peer, ?reason, "cluster node down");
                }
                _ => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_cross_nodes_intact_and_in_a_row() {
        let mut dec = None;
        for i in 0..3 {
            let el = Element::builder("message", ns::JABBER_CLIENT)
                .attr("to", "a@localhost/r")
                .attr("from", "b@localhost/s")
                .attr("type", "chat")
                .append(
                    Element::builder("body", ns::JABBER_CLIENT)
                        .text(&format!("<é & {i}>"))
                        .build(),
                )
                .build();
            let back = decode(&mut dec, &el.to_bytes()).expect("parses");
            assert_eq!(back, el);
        }
        assert!(decode(&mut dec, b"<message").is_none());
        // A broken stanza does not spoil the next one.
        let el = Element::builder("presence", ns::JABBER_CLIENT).build();
        assert_eq!(decode(&mut dec, &el.to_bytes()), Some(el));
    }

    #[test]
    fn a_recipient_always_gets_the_same_shard() {
        let rec = SessionRecord {
            host: "localhost".into(),
            user: "u".into(),
            resource: "r".into(),
            node: "n".into(),
            sid: 1,
            priority: None,
            presence: None,
            started_ms: 0,
        };
        let a = shard_of(&rec, 8);
        let other_sid = SessionRecord {
            sid: 9,
            ..rec.clone()
        };
        assert_eq!(shard_of(&other_sid, 8), a);
        assert!(a < 8);
    }

    #[test]
    fn differing_hosts_are_reported() {
        let a = vec!["a.example".to_owned(), "b.example".to_owned()];
        let b = vec!["b.example".to_owned(), "a.example".to_owned()];
        assert!(check_hosts(&a, "n2", &b));
        assert!(!check_hosts(&a, "n2", &b[..1]));
    }
}
