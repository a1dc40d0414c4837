//! The session manager (ejabberd's `ejabberd_sm`): which full JIDs are
//! online, on which node, with which presence priority.
//!
//! - The session table is a node-owned ordered table of the storage crate,
//!   keyed by `(bucket, host, user, node, sid)`: one [`SessionRecord`] per bound
//!   resource, and every key belongs to the node that holds the session
//!   (so that replication can purge a lost node's rows by key, see
//!   [`crate::cluster`]). Reads ([`SessionManager::sessions_of`], one range
//!   scan of the user's keys) go straight to the local copy, with no actor
//!   hop: that is what the router does for every stanza.
//! - Writes go through shard actors ([`SmShard`]): the user's bare JID
//!   picks the shard, which is the single writer of that user's records,
//!   so that "a second session on the same full JID replaces the first"
//!   and the per-user session limit are decided in one place without a
//!   lock. Shards keep no state of their own, so a restarted shard goes on
//!   where the crashed one stopped.
//! - Sessions of this node are also in a local map from session id to the
//!   session actor and its queue counter ([`LocalSession`]); the router
//!   casts to the actor found there.

use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use beamline_storage::{CopyType, Db, Record, StorageError, Table, TableDef, TableKind};
use beamline_supervision::ChildSpec;
use dashmap::DashMap;
use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::c2s::C2sMsg;
use crate::cluster::ClusterLink;
use crate::jid::FullJid;
use crate::stream_error::StreamErrorCondition;

/// Name of the session table.
pub const SESSION_TABLE: &str = "sessions";

/// One bound resource in the session table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Virtual host (domain part).
    pub host: String,
    /// Local part.
    pub user: String,
    /// Resource.
    pub resource: String,
    /// Name of the node that holds the session.
    pub node: String,
    /// Session id: unique on its node, and, being drawn from a random
    /// start, in practice across the cluster and across restarts.
    pub sid: u64,
    /// Presence priority while available; `None` before the first
    /// available presence and after unavailable (RFC 6121 §8.5: such a
    /// resource gets no messages sent to the bare JID).
    pub priority: Option<i8>,
    /// The session's last available presence as sent (serialized, `from`
    /// stamped), for probes and for contacts coming online; `None` while
    /// unavailable.
    pub presence: Option<String>,
    /// Milliseconds since the Unix epoch when the session was bound.
    pub started_ms: u64,
}

impl Record for SessionRecord {
    /// `(bucket, host, user, node, sid)`: unique per session, owned by its
    /// node; `bucket` is [`user_bucket`] of host and user.
    type Key = (u64, String, String, String, u64);
    fn key(&self) -> Self::Key {
        (
            user_bucket(&self.host, &self.user),
            self.host.clone(),
            self.user.clone(),
            self.node.clone(),
            self.sid,
        )
    }
}

/// The first part of a session's key: a hash of `host` and `user` that
/// every node computes alike (FNV-1a). The router looks up a user's
/// sessions for every stanza; with an integer first, the tree's search
/// compares integers at almost every step instead of two strings. A
/// user's sessions stay next to each other in the table.
pub(crate) fn user_bucket(host: &str, user: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // 0xff never occurs in UTF-8: "ab"+"c" and "a"+"bc" differ.
    for b in host.bytes().chain([0xff]).chain(user.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl SessionRecord {
    /// The session's full JID; `None` if the stored parts do not form one.
    pub fn full_jid(&self) -> Option<FullJid> {
        FullJid::new(&format!("{}@{}/{}", self.user, self.host, self.resource)).ok()
    }
}

/// A session of this node, as the router reaches it.
#[derive(Debug, Clone)]
pub struct LocalSession {
    /// The session actor.
    pub actor: ActorRef<C2sMsg>,
    /// Stanzas cast to the actor and not yet handled: the router refuses
    /// to queue more than the limit (a client that does not read is cut
    /// off instead of growing the node's memory).
    pub queued: Arc<AtomicU32>,
    /// The bound full JID.
    pub jid: FullJid,
}

/// Errors of the session manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmError {
    /// The shard was not running or did not answer.
    #[error("session manager shard unavailable: {0}")]
    Unavailable(String),
    /// The table write failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Messages of a session manager shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// Adds a session (replacing one on the same full JID, and the oldest
    /// one beyond `max_sessions`).
    Register {
        /// The record to write.
        record: SessionRecord,
        /// The local actor.
        local: LocalSession,
        /// The user's session limit.
        max_sessions: usize,
        /// Answered once the record is in the table.
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// Removes a session, if it is still there.
    Unregister {
        /// Host of the session.
        host: String,
        /// User of the session.
        user: String,
        /// Its id.
        sid: u64,
        /// Answered once removed.
        reply: Option<RpcReplyPort<()>>,
    },
    /// Sets a session's presence priority and last presence.
    SetPresence {
        /// Host of the session.
        host: String,
        /// User of the session.
        user: String,
        /// Its id.
        sid: u64,
        /// The new priority (`None`: unavailable).
        priority: Option<i8>,
        /// The presence stanza, serialized (`None`: unavailable).
        presence: Option<String>,
        /// Answered once written.
        reply: Option<RpcReplyPort<()>>,
    },
}

impl ractor::Message for ShardMsg {}

struct SmInner {
    node: String,
    table: Table<SessionRecord>,
    local: DashMap<u64, LocalSession>,
    shards: RwLock<Vec<Option<ActorRef<ShardMsg>>>>,
    next_sid: AtomicU64,
    /// Set when the node runs in a cluster: how sessions of other nodes
    /// are reached.
    cluster: OnceLock<ClusterLink>,
}

/// The session manager: cheap to clone, shared by the c2s sessions, the
/// router and the admin commands.
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<SmInner>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("node", &self.inner.node)
            .field("local_sessions", &self.inner.local.len())
            .finish()
    }
}

/// Where this process's session ids start: random, so that ids are
/// unique across the nodes of a cluster and across restarts of a node (a
/// stale record of another node, or of an earlier run of this one, never
/// names a session of this one).
fn first_sid() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return now_ms() << 20;
    }
    // Headroom: counting up never wraps.
    (u64::from_le_bytes(b) >> 2).max(1)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SessionManager {
    /// The session table's definition (RAM only, node-owned, ordered by
    /// `(bucket, host, user, node, sid)`: see [`SessionRecord`]'s key).
    pub fn table_def() -> TableDef {
        TableDef::new(SESSION_TABLE)
            .kind(TableKind::OrderedSet)
            .copy(CopyType::Ram)
            .node_owned()
    }

    /// A session manager of node `node` with `shards` shards, its table
    /// declared in `db` (RAM only, node-owned).
    pub fn new(db: &Db, node: impl Into<String>, shards: usize) -> Result<Self, StorageError> {
        let table = db.create_table(Self::table_def())?;
        Ok(Self::with_table(table, node, shards))
    }

    /// A session manager on a session table declared already (a
    /// replicated one: [`crate::cluster`]).
    pub fn with_table(table: Table<SessionRecord>, node: impl Into<String>, shards: usize) -> Self {
        SessionManager {
            inner: Arc::new(SmInner {
                node: node.into(),
                table,
                local: DashMap::new(),
                shards: RwLock::new(vec![None; shards.max(1)]),
                next_sid: AtomicU64::new(first_sid()),
                cluster: OnceLock::new(),
            }),
        }
    }

    /// Connects the session manager to the cluster (once).
    pub(crate) fn set_cluster(&self, link: ClusterLink) {
        let _ = self.inner.cluster.set(link);
    }

    /// How sessions of other nodes are reached; `None` on a single node.
    pub(crate) fn cluster(&self) -> Option<&ClusterLink> {
        self.inner.cluster.get()
    }

    /// The session table (its local copy).
    pub fn table(&self) -> &Table<SessionRecord> {
        &self.inner.table
    }

    /// Closes local session `sid` with a stream error (replaced by a
    /// session elsewhere, kicked): gone from the local map at once, its
    /// record removed by the session when it ends. Returns whether it
    /// was here.
    pub(crate) fn kick_local(
        &self,
        sid: u64,
        condition: StreamErrorCondition,
        text: Option<String>,
    ) -> bool {
        match self.inner.local.remove(&sid) {
            Some((_, s)) => {
                let _ = s.actor.cast(C2sMsg::Kick { condition, text });
                true
            }
            None => false,
        }
    }

    /// The child specs of the shards, for the node's supervisor.
    pub fn shard_specs(&self) -> Vec<ChildSpec> {
        let n = self.inner.shards.read().len();
        (0..n)
            .map(|i| {
                ChildSpec::from_actor(
                    format!("sm_shard_{i}"),
                    SmShard,
                    ShardArgs {
                        sm: self.clone(),
                        index: i,
                    },
                )
            })
            .collect()
    }

    /// This node's name, as session records carry it.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// A fresh session id.
    pub fn next_sid(&self) -> u64 {
        self.inner.next_sid.fetch_add(1, Ordering::Relaxed)
    }

    fn shard_for(&self, host: &str, user: &str) -> Result<ActorRef<ShardMsg>, SmError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (host, user).hash(&mut h);
        let shards = self.inner.shards.read();
        let i = (h.finish() % shards.len() as u64) as usize;
        shards[i]
            .clone()
            .ok_or_else(|| SmError::Unavailable(format!("shard {i} is not running")))
    }

    /// Adds a bound session: replaces a session on the same full JID (it
    /// is closed with `conflict`) and, beyond `max_sessions`, the oldest
    /// session of the user.
    pub async fn register(
        &self,
        jid: &FullJid,
        sid: u64,
        local: LocalSession,
        max_sessions: usize,
    ) -> Result<(), SmError> {
        let record = SessionRecord {
            host: jid.domain().to_string(),
            user: jid.node().map(|n| n.to_string()).unwrap_or_default(),
            resource: jid.resource().to_string(),
            node: self.inner.node.clone(),
            sid,
            priority: None,
            presence: None,
            started_ms: now_ms(),
        };
        let shard = self.shard_for(&record.host, &record.user)?;
        let r = ractor::call!(shard, |reply| ShardMsg::Register {
            record,
            local,
            max_sessions,
            reply,
        })
        .map_err(|e| SmError::Unavailable(e.to_string()))?;
        r.map_err(SmError::Unavailable)
    }

    /// Removes a session (no-op if it was replaced already) and waits for
    /// it.
    pub async fn unregister(&self, host: &str, user: &str, sid: u64) {
        // Gone from the local map at once, whatever the shard does.
        self.inner.local.remove(&sid);
        if let Ok(shard) = self.shard_for(host, user) {
            let _ = ractor::call!(shard, |reply| ShardMsg::Unregister {
                host: host.to_owned(),
                user: user.to_owned(),
                sid,
                reply: Some(reply),
            });
        }
    }

    /// Sets a session's presence priority (`None`: unavailable), keeping
    /// no presence stanza.
    pub async fn set_priority(&self, host: &str, user: &str, sid: u64, priority: Option<i8>) {
        self.set_presence(host, user, sid, priority, None).await;
    }

    /// Sets a session's presence: priority (`None`: unavailable) and the
    /// last available presence stanza, serialized.
    pub async fn set_presence(
        &self,
        host: &str,
        user: &str,
        sid: u64,
        priority: Option<i8>,
        presence: Option<String>,
    ) {
        if let Ok(shard) = self.shard_for(host, user) {
            let _ = ractor::call!(shard, |reply| ShardMsg::SetPresence {
                host: host.to_owned(),
                user: user.to_owned(),
                sid,
                priority,
                presence,
                reply: Some(reply),
            });
        }
    }

    /// The sessions of `user@host`, on every node, read from the local
    /// table copy.
    pub fn sessions_of(&self, host: &str, user: &str) -> Vec<SessionRecord> {
        user_sessions(&self.inner.table, host, user)
    }

    /// The sessions of `user@host` as the router sees them
    /// ([`SessionManager::sessions_of`] without copies of local records),
    /// each marked whether its resource is `resource`.
    pub(crate) fn hops_of(&self, host: &str, user: &str, resource: Option<&str>) -> Vec<Hop> {
        let node = self.node();
        self.inner
            .table
            .range_map_while(Bound::Included(user_key(host, user)), |r| {
                (r.host == host && r.user == user).then(|| Hop {
                    sid: r.sid,
                    priority: r.priority,
                    started_ms: r.started_ms,
                    resource_matches: resource == Some(r.resource.as_str()),
                    remote: (r.node != node).then(|| r.clone()),
                })
            })
            .unwrap_or_default()
    }

    /// The local session with id `sid`.
    pub fn local(&self, sid: u64) -> Option<LocalSession> {
        self.inner.local.get(&sid).map(|s| s.value().clone())
    }

    /// Runs `f` on the local session with id `sid`, without cloning it
    /// (the router's path for every delivered stanza). `f` runs under a
    /// read lock of the table of local sessions: it must not block.
    pub(crate) fn with_local<T>(&self, sid: u64, f: impl FnOnce(&LocalSession) -> T) -> Option<T> {
        self.inner.local.get(&sid).map(|s| f(s.value()))
    }

    /// Full JIDs of this node's sessions.
    pub fn local_jids(&self) -> Vec<FullJid> {
        self.inner
            .local
            .iter()
            .map(|s| s.value().jid.clone())
            .collect()
    }

    /// Number of this node's sessions.
    pub fn local_count(&self) -> usize {
        self.inner.local.len()
    }

    /// Every local session, with its id.
    pub fn local_sessions(&self) -> Vec<(u64, LocalSession)> {
        self.inner
            .local
            .iter()
            .map(|s| (*s.key(), s.value().clone()))
            .collect()
    }

    /// Number of sessions in the table (every node).
    pub fn count(&self) -> usize {
        self.inner.table.count()
    }
}

/// One session of a user as the router needs it: a session of this node
/// costs no copy of its record's strings.
#[derive(Debug, Clone)]
pub(crate) struct Hop {
    pub(crate) sid: u64,
    pub(crate) priority: Option<i8>,
    pub(crate) started_ms: u64,
    /// Whether its resource is the one asked for.
    pub(crate) resource_matches: bool,
    /// The record of a session of another node; `None` for this node's.
    pub(crate) remote: Option<SessionRecord>,
}

/// Every session of `user@host` in `table`: the keys from
/// `(host, user, "", 0)` on, while they are the user's. It runs for every
/// stanza routed to an account.
fn user_sessions(table: &Table<SessionRecord>, host: &str, user: &str) -> Vec<SessionRecord> {
    table
        .range_while(Bound::Included(user_key(host, user)), |r| {
            r.host == host && r.user == user
        })
        .unwrap_or_default()
}

/// The lowest key a session of `user@host` can have.
fn user_key(host: &str, user: &str) -> <SessionRecord as Record>::Key {
    (
        user_bucket(host, user),
        host.to_owned(),
        user.to_owned(),
        String::new(),
        0,
    )
}

/// A shard of the session manager: the single writer of its users'
/// session records.
#[derive(Debug, Clone, Copy)]
pub struct SmShard;

/// Arguments of [`SmShard`].
#[derive(Clone)]
pub struct ShardArgs {
    sm: SessionManager,
    index: usize,
}

impl SmShard {
    async fn register(
        sm: &SessionManager,
        record: SessionRecord,
        local: LocalSession,
        max_sessions: usize,
    ) -> Result<(), StorageError> {
        let inner = &sm.inner;
        let mut existing = user_sessions(&inner.table, &record.host, &record.user);
        // Same resource: the new session replaces the old one.
        let mut kept = Vec::with_capacity(existing.len());
        for old in existing.drain(..) {
            if old.resource == record.resource {
                Self::close(sm, old, "Replaced by new connection").await?;
            } else {
                kept.push(old);
            }
        }
        // Beyond the limit: the oldest sessions go (as ejabberd's
        // max_user_sessions).
        kept.sort_by_key(|r| (r.started_ms, r.sid));
        let max = max_sessions.max(1);
        let excess = (kept.len() + 1).saturating_sub(max);
        for old in kept.into_iter().take(excess) {
            Self::close(sm, old, "Too many sessions: replaced by a new one").await?;
        }
        inner.local.insert(record.sid, local);
        let sid = record.sid;
        if let Err(e) = inner.table.dirty_write(record).await {
            inner.local.remove(&sid);
            return Err(e);
        }
        Ok(())
    }

    /// Closes a replaced session with `conflict`: a local one here (and
    /// its record goes at once), one of another node through that node's
    /// delivery shard (its node removes the record when the session
    /// ends; the row is that node's).
    async fn close(
        sm: &SessionManager,
        old: SessionRecord,
        text: &str,
    ) -> Result<(), StorageError> {
        if old.node != sm.inner.node {
            match sm.cluster() {
                Some(c) => c.kick_remote(&old, true, text),
                None => {
                    // A row of a node this one cannot reach: stale.
                    sm.inner.table.dirty_delete_object(old).await?;
                }
            }
            return Ok(());
        }
        sm.kick_local(
            old.sid,
            StreamErrorCondition::Conflict,
            Some(text.to_owned()),
        );
        sm.inner.table.dirty_delete_object(old).await
    }

    async fn find(
        sm: &SessionManager,
        host: String,
        user: String,
        sid: u64,
    ) -> Option<SessionRecord> {
        sm.inner
            .table
            .read(&(
                user_bucket(&host, &user),
                host,
                user,
                sm.inner.node.clone(),
                sid,
            ))
            .into_iter()
            .next()
    }
}

impl Actor for SmShard {
    type Msg = ShardMsg;
    type State = ShardArgs;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardArgs, ActorProcessingErr> {
        args.sm.inner.shards.write()[args.index] = Some(myself);
        Ok(args)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<ShardMsg>,
        state: &mut ShardArgs,
    ) -> Result<(), ActorProcessingErr> {
        let mut shards = state.sm.inner.shards.write();
        if shards[state.index]
            .as_ref()
            .is_some_and(|s| s.get_id() == myself.get_id())
        {
            shards[state.index] = None;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardArgs,
    ) -> Result<(), ActorProcessingErr> {
        let sm = &state.sm;
        match msg {
            ShardMsg::Register {
                record,
                local,
                max_sessions,
                reply,
            } => {
                let r = Self::register(sm, record, local, max_sessions)
                    .await
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            ShardMsg::Unregister {
                host,
                user,
                sid,
                reply,
            } => {
                sm.inner.local.remove(&sid);
                if let Some(rec) = Self::find(sm, host, user, sid).await {
                    sm.inner.table.dirty_delete_object(rec).await?;
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            ShardMsg::SetPresence {
                host,
                user,
                sid,
                priority,
                presence,
                reply,
            } => {
                if let Some(old) = Self::find(sm, host, user, sid).await {
                    if old.priority != priority || old.presence != presence {
                        // One write replaces the record (one key per
                        // session): a reader never sees the user without
                        // this session in between.
                        let new = SessionRecord {
                            priority,
                            presence,
                            ..old
                        };
                        sm.inner.table.dirty_write(new).await?;
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
        }
        Ok(())
    }
}
