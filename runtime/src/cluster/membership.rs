//! The membership task: sessions, node up/down, heartbeat failure detector,
//! redial with backoff, join/leave, and the registry's reactions to pg
//! changes (events, conflict resolution).
//!
//! One tokio task owns all of this state; everything reaches it as a
//! [`MgrMsg`] (ractor_cluster session events, agent traffic, API calls), so
//! there are no locks around the membership tables.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::pg::GroupChangeMessage;
use ractor::{ActorId, ActorRef, ActorStatus};
use ractor_cluster::NodeSessionMessage;
use ractor_cluster::node::NodeServerSessionInformation;
use rustls::pki_types::ServerName;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::codec;

use super::envelope::{Envelope, SysMsg};
use super::error::JoinError;
use super::event::{ClusterEvent, DownReason, NameLost};
use super::names::{self, StubMeta};
use super::node::{NodeInner, meta_of, node_name_of, shutdown};

/// Everything the membership task reacts to.
pub(crate) enum MgrMsg {
    Opened(NodeServerSessionInformation),
    Authenticated(NodeServerSessionInformation),
    Ready(NodeServerSessionInformation),
    Disconnected(NodeServerSessionInformation),
    Sys(SysMsg),
    Pg(GroupChangeMessage),
    Join {
        seed: SocketAddr,
        reply: oneshot::Sender<Result<String, JoinError>>,
    },
    DialFailed {
        addr: SocketAddr,
        error: String,
    },
    Block(String, bool),
    Leave(oneshot::Sender<()>),
}

/// How outgoing connections are made.
pub(crate) enum Dialer {
    Raw,
    Tls(TlsConnector, ServerName<'static>),
}

struct Session {
    actor: ActorRef<NodeSessionMessage>,
    peer_addr: String,
    is_server: bool,
    opened: Instant,
    authenticated: bool,
    ready: bool,
    name: Option<String>,
    /// Cut by us (timeout, block, down): its close is not an auth failure.
    killed: bool,
}

struct Up {
    addr: String,
    last_heard: Instant,
    session: ActorId,
}

struct Target {
    name: Option<String>,
    /// Since when the peer is unreachable (the larger name lets the smaller
    /// one dial first; see `redial`).
    lost_since: Instant,
    next_try: Instant,
    backoff: Duration,
    dialing_since: Option<Instant>,
}

struct PendingJoin {
    seed: SocketAddr,
    deadline: Instant,
    reply: oneshot::Sender<Result<String, JoinError>>,
    auth_failed_at: Option<Instant>,
    last_error: String,
}

struct State {
    inner: Arc<NodeInner>,
    dialer: Arc<Dialer>,
    sessions: HashMap<ActorId, Session>,
    up: HashMap<String, Up>,
    targets: HashMap<SocketAddr, Target>,
    joins: Vec<PendingJoin>,
    blocked: HashSet<String>,
    /// Nodes that left on purpose, and when: gossip about them is ignored
    /// for a while so that nobody redials them.
    left: HashMap<String, Instant>,
    last_tick: Instant,
    next_heartbeat: Instant,
    leaving: Option<(Instant, oneshot::Sender<()>)>,
}

const TICK: Duration = Duration::from_millis(50);
const LEFT_TOMBSTONE: Duration = Duration::from_secs(30);
/// After a seed closed a connection before authentication, wait this long for
/// another connection to the same seed before calling it a cookie failure
/// (a duplicate-connection election also closes one connection early).
const AUTH_FAIL_GRACE: Duration = Duration::from_millis(300);

pub(crate) async fn run(
    inner: Arc<NodeInner>,
    mut rx: mpsc::UnboundedReceiver<MgrMsg>,
    dialer: Dialer,
) {
    let now = Instant::now();
    let mut st = State {
        inner,
        dialer: Arc::new(dialer),
        sessions: HashMap::new(),
        up: HashMap::new(),
        targets: HashMap::new(),
        joins: Vec::new(),
        blocked: HashSet::new(),
        left: HashMap::new(),
        last_tick: now,
        next_heartbeat: now,
        leaving: None,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => st.handle(msg),
                None => break,
            },
            _ = tick.tick() => {
                if st.tick() {
                    break;
                }
            }
        }
    }
    tracing::info!(node = %st.inner.name, "membership task stopped");
}

fn jitter(d: Duration) -> Duration {
    // Spread redials so two nodes that lost each other do not dial in step.
    let n = super::node::now_nanos() as u64;
    d + Duration::from_millis(n % (d.as_millis() as u64 / 4 + 1))
}

impl State {
    fn timings(&self) -> super::config::Timings {
        self.inner.timings
    }

    fn handle(&mut self, msg: MgrMsg) {
        match msg {
            MgrMsg::Opened(ses) => self.on_opened(ses),
            MgrMsg::Authenticated(ses) => self.on_authenticated(ses),
            MgrMsg::Ready(ses) => self.on_ready(ses),
            MgrMsg::Disconnected(ses) => self.on_disconnected(ses),
            MgrMsg::Sys(sys) => self.on_sys(sys),
            MgrMsg::Pg(change) => self.on_pg(change),
            MgrMsg::Join { seed, reply } => self.on_join(seed, reply),
            MgrMsg::DialFailed { addr, error } => {
                if let Some(t) = self.targets.get_mut(&addr) {
                    t.dialing_since = None;
                }
                for j in self.joins.iter_mut().filter(|j| j.seed == addr) {
                    j.last_error = error.clone();
                }
                tracing::debug!(node = %self.inner.name, %addr, %error, "dial failed");
            }
            MgrMsg::Block(peer, on) => {
                if on {
                    self.blocked.insert(peer.clone());
                    self.declare_down(&peer, DownReason::Blocked);
                } else {
                    self.blocked.remove(&peer);
                    let now = Instant::now();
                    for t in self.targets.values_mut() {
                        if t.name.as_deref() == Some(peer.as_str()) {
                            t.next_try = now;
                            t.backoff = self.inner.timings.redial_min;
                            t.lost_since = now;
                        }
                    }
                }
            }
            MgrMsg::Leave(reply) => self.on_leave(reply),
        }
    }

    fn on_opened(&mut self, ses: NodeServerSessionInformation) {
        if !ses.is_server
            && let Ok(addr) = ses.peer_addr.parse::<SocketAddr>()
            && let Some(t) = self.targets.get_mut(&addr)
        {
            t.dialing_since = None;
        }
        self.sessions.insert(
            ses.actor.get_id(),
            Session {
                actor: ses.actor,
                peer_addr: ses.peer_addr,
                is_server: ses.is_server,
                opened: Instant::now(),
                authenticated: false,
                ready: false,
                name: None,
                killed: false,
            },
        );
    }

    fn kill_session(s: &mut Session, why: &str) {
        if !s.killed {
            tracing::debug!(peer = ?s.name, addr = %s.peer_addr, why, "cutting node session");
            s.killed = true;
            s.actor.kill();
        }
    }

    fn on_authenticated(&mut self, ses: NodeServerSessionInformation) {
        let name = ses.peer_name.as_ref().map(|n| node_name_of(&n.name));
        let blocked = name.as_ref().is_some_and(|n| self.blocked.contains(n));
        if let Some(s) = self.sessions.get_mut(&ses.actor.get_id()) {
            s.authenticated = true;
            s.name = name;
            if blocked {
                Self::kill_session(s, "peer blocked");
            }
        }
    }

    fn on_ready(&mut self, ses: NodeServerSessionInformation) {
        let id = ses.actor.get_id();
        let Some(peer) = ses.peer_name.as_ref() else {
            return;
        };
        let name = node_name_of(&peer.name);
        let listen = peer.connection_string.clone();
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.authenticated = true;
        s.ready = true;
        s.name = Some(name.clone());
        if self.blocked.contains(&name) || self.leaving.is_some() {
            Self::kill_session(s, "peer blocked or leaving");
            return;
        }
        let peer_addr = s.peer_addr.clone();
        let is_server = s.is_server;
        let now = Instant::now();
        match self.up.get_mut(&name) {
            Some(up) => up.session = id,
            None => {
                self.up.insert(
                    name.clone(),
                    Up {
                        addr: listen.clone(),
                        last_heard: now,
                        session: id,
                    },
                );
                self.inner.up.insert(name.clone(), listen.clone());
                self.left.remove(&name);
                tracing::info!(node = %self.inner.name, peer = %name, addr = %listen, "node up");
                self.inner.emit(ClusterEvent::NodeUp { node: name.clone() });
                // ractor_cluster syncs pg before it reports the session ready,
                // so the new node's names arrived while it was not yet up and
                // were left out of conflict resolution: look again.
                for global in ractor::pg::which_scoped_groups(&names::GLOBAL_SCOPE.to_string()) {
                    self.resolve_conflict(&global);
                }
            }
        }
        let min = self.timings().redial_min;
        if let Ok(listen_addr) = listen.parse::<SocketAddr>() {
            // One target per node: a restarted node may listen elsewhere.
            self.targets
                .retain(|a, t| *a == listen_addr || t.name.as_deref() != Some(name.as_str()));
            let t = self.targets.entry(listen_addr).or_insert(Target {
                name: None,
                next_try: now,
                backoff: min,
                dialing_since: None,
                lost_since: now,
            });
            t.name = Some(name.clone());
            t.backoff = min;
        }
        let mut i = 0;
        while i < self.joins.len() {
            let j = &self.joins[i];
            let seed = j.seed.to_string();
            if (!is_server && peer_addr == seed) || listen == seed {
                let j = self.joins.swap_remove(i);
                let _ = j.reply.send(Ok(name.clone()));
            } else {
                i += 1;
            }
        }
    }

    fn on_disconnected(&mut self, ses: NodeServerSessionInformation) {
        let id = ses.actor.get_id();
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        let now = Instant::now();
        if !s.authenticated && !s.killed {
            if s.is_server {
                tracing::warn!(
                    node = %self.inner.name,
                    from = %s.peer_addr,
                    "incoming node connection closed before authentication (wrong cookie, or the peer gave up)"
                );
            } else {
                let mut matched = false;
                for j in self
                    .joins
                    .iter_mut()
                    .filter(|j| j.seed.to_string() == s.peer_addr)
                {
                    j.auth_failed_at.get_or_insert(now);
                    matched = true;
                }
                if matched {
                    tracing::error!(
                        node = %self.inner.name,
                        peer = %s.peer_addr,
                        "seed closed the connection during authentication: cookie rejected?"
                    );
                } else {
                    // Also the fate of the losing half of a simultaneous dial.
                    tracing::warn!(
                        node = %self.inner.name,
                        peer = %s.peer_addr,
                        "node connection closed during authentication (cookie rejected, or a duplicate connection)"
                    );
                }
            }
        }
        let Some(name) = s.name else {
            return;
        };
        let Some(up) = self.up.get_mut(&name) else {
            return;
        };
        if up.session != id {
            return;
        }
        // Another ready connection to the same node (election) takes over.
        if let Some((other, _)) = self
            .sessions
            .iter()
            .find(|(_, o)| o.ready && !o.killed && o.name.as_deref() == Some(name.as_str()))
        {
            up.session = *other;
            return;
        }
        // ractor_cluster's election closes a ready connection when a newer
        // one to the same node wins; that one is authenticated but not yet
        // ready. Wait for it (the auth timeout cuts it if it stalls).
        if let Some((other, _)) = self
            .sessions
            .iter()
            .find(|(_, o)| o.authenticated && !o.killed && o.name.as_deref() == Some(name.as_str()))
        {
            up.session = *other;
            return;
        }
        self.declare_down(&name, DownReason::ConnectionClosed);
    }

    /// Marks `name` down (if it was up) and cuts every session with it.
    fn declare_down(&mut self, name: &str, reason: DownReason) {
        for s in self.sessions.values_mut() {
            if s.name.as_deref() == Some(name) {
                Self::kill_session(s, "node down");
            }
        }
        if self.up.remove(name).is_some() {
            self.inner.up.remove(name);
            tracing::warn!(node = %self.inner.name, peer = %name, ?reason, "node down");
            self.inner.emit(ClusterEvent::NodeDown {
                node: name.to_string(),
                reason,
            });
            let (min, now) = (self.timings().redial_min, Instant::now());
            for t in self.targets.values_mut() {
                if t.name.as_deref() == Some(name) {
                    t.backoff = min;
                    t.next_try = now + jitter(min);
                    t.lost_since = now;
                }
            }
        }
    }

    fn on_sys(&mut self, sys: SysMsg) {
        match sys {
            SysMsg::Heartbeat { from, addr, peers } => {
                if let Some(up) = self.up.get_mut(&from) {
                    up.last_heard = Instant::now();
                }
                if self.leaving.is_some() {
                    return;
                }
                let now = Instant::now();
                let min = self.timings().redial_min;
                for (name, addr) in peers.into_iter().chain(std::iter::once((from, addr))) {
                    if name == self.inner.name
                        || self.up.contains_key(&name)
                        || self.blocked.contains(&name)
                        || self
                            .left
                            .get(&name)
                            .is_some_and(|at| now.duration_since(*at) < LEFT_TOMBSTONE)
                    {
                        continue;
                    }
                    let Ok(addr) = addr.parse::<SocketAddr>() else {
                        continue;
                    };
                    if addr == self.inner.addr {
                        continue;
                    }
                    self.targets.entry(addr).or_insert_with(|| Target {
                        name: Some(name),
                        next_try: now,
                        backoff: min,
                        dialing_since: None,
                        lost_since: now,
                    });
                }
            }
            SysMsg::Leaving { from } => {
                tracing::info!(node = %self.inner.name, peer = %from, "peer leaves the cluster");
                self.left.insert(from.clone(), Instant::now());
                self.targets
                    .retain(|_, t| t.name.as_deref() != Some(from.as_str()));
                self.declare_down(&from, DownReason::Left);
            }
        }
    }

    fn on_join(&mut self, seed: SocketAddr, reply: oneshot::Sender<Result<String, JoinError>>) {
        if self.leaving.is_some() {
            let _ = reply.send(Err(JoinError::Stopped));
            return;
        }
        if seed == self.inner.addr {
            let _ = reply.send(Ok(self.inner.name.clone()));
            return;
        }
        let seed_str = seed.to_string();
        if let Some((name, _)) = self.up.iter().find(|(_, u)| u.addr == seed_str) {
            let _ = reply.send(Ok(name.clone()));
            return;
        }
        let now = Instant::now();
        let min = self.timings().redial_min;
        let t = self.targets.entry(seed).or_insert(Target {
            name: None,
            next_try: now,
            backoff: min,
            dialing_since: None,
            lost_since: now,
        });
        t.next_try = now;
        self.joins.push(PendingJoin {
            seed,
            deadline: now + self.timings().join_timeout,
            reply,
            auth_failed_at: None,
            last_error: "no connection attempt finished".into(),
        });
    }

    fn on_leave(&mut self, reply: oneshot::Sender<()>) {
        tracing::info!(node = %self.inner.name, "leaving the cluster");
        let bytes = codec::encode(&SysMsg::Leaving {
            from: self.inner.name.clone(),
        });
        if let Ok(bytes) = bytes {
            for (_, agent) in self.peer_agents() {
                let _ = agent.cast(Envelope::Cast(bytes.clone()));
            }
        }
        for j in self.joins.drain(..) {
            let _ = j.reply.send(Err(JoinError::Stopped));
        }
        self.targets.clear();
        self.leaving = Some((Instant::now() + Duration::from_secs(1), reply));
    }

    /// The agents of other nodes, by node name, as pg sees them now.
    fn peer_agents(&self) -> Vec<(String, ActorRef<Envelope>)> {
        ractor::pg::get_scoped_members(
            &names::SYS_SCOPE.to_string(),
            &names::AGENTS_GROUP.to_string(),
        )
        .into_iter()
        .filter(|c| !c.get_id().is_local())
        .filter_map(|c| match meta_of(&c) {
            Some(StubMeta::Agent { node }) => Some((node, ActorRef::from(c))),
            _ => None,
        })
        .collect()
    }

    /// Periodic work. Returns true when the task should end.
    fn tick(&mut self) -> bool {
        let now = Instant::now();
        let t = self.timings();

        if let Some((deadline, _)) = &self.leaving {
            let open = self.sessions.values().any(|s| !s.killed);
            if !open || now >= *deadline {
                if let Some((_, reply)) = self.leaving.take() {
                    shutdown(&self.inner);
                    let _ = reply.send(());
                }
                return true;
            }
            return false;
        }

        // Our own clock jumped (SIGSTOP/SIGCONT, starved runtime): the
        // silence was ours, not the peers'. Give them a fresh period; if
        // they cut us off meanwhile, their sessions are closing anyway.
        if now.duration_since(self.last_tick) > t.heartbeat_timeout / 2 {
            tracing::warn!(node = %self.inner.name, gap = ?now.duration_since(self.last_tick), "membership task was paused; resetting heartbeat clocks");
            for up in self.up.values_mut() {
                up.last_heard = now;
            }
        }
        self.last_tick = now;

        if now >= self.next_heartbeat {
            self.next_heartbeat = now + t.heartbeat_interval;
            self.send_heartbeats();
        }

        let silent: Vec<String> = self
            .up
            .iter()
            .filter(|(_, u)| now.duration_since(u.last_heard) > t.heartbeat_timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for name in silent {
            self.declare_down(&name, DownReason::HeartbeatTimeout);
        }

        for s in self.sessions.values_mut() {
            if !s.ready && now.duration_since(s.opened) > t.auth_timeout {
                Self::kill_session(s, "not ready within the auth timeout");
            }
        }

        self.left
            .retain(|_, at| now.duration_since(*at) < LEFT_TOMBSTONE);
        self.redial(now);
        self.expire_joins(now);
        false
    }

    fn send_heartbeats(&self) {
        if self.up.is_empty() {
            return;
        }
        let peers: Vec<(String, String)> = self
            .up
            .iter()
            .map(|(n, u)| (n.clone(), u.addr.clone()))
            .collect();
        let msg = SysMsg::Heartbeat {
            from: self.inner.name.clone(),
            addr: self.inner.addr.to_string(),
            peers,
        };
        let Ok(bytes) = codec::encode(&msg) else {
            return;
        };
        for (node, agent) in self.peer_agents() {
            if self.up.contains_key(&node) {
                let _ = agent.cast(Envelope::Cast(bytes.clone()));
            }
        }
    }

    fn redial(&mut self, now: Instant) {
        let t = self.timings();
        let up_addrs: HashSet<&str> = self.up.values().map(|u| u.addr.as_str()).collect();
        let in_flight: HashSet<&str> = self
            .sessions
            .values()
            .filter(|s| !s.is_server && !s.ready && !s.killed)
            .map(|s| s.peer_addr.as_str())
            .collect();
        let mut to_dial = Vec::new();
        for (addr, target) in self.targets.iter_mut() {
            if let Some(since) = target.dialing_since {
                if now.duration_since(since) < t.auth_timeout {
                    continue;
                }
                target.dialing_since = None;
            }
            let addr_s = addr.to_string();
            let connected = up_addrs.contains(addr_s.as_str())
                || target
                    .name
                    .as_ref()
                    .is_some_and(|n| self.up.contains_key(n));
            let blocked = target
                .name
                .as_ref()
                .is_some_and(|n| self.blocked.contains(n));
            // Both ends redial a lost peer; dialing at once makes two
            // connections and ractor_cluster's election then drops one that
            // may already carry traffic. The smaller name dials first, the
            // larger waits one `redial_max` for that connection.
            let defer = target
                .name
                .as_ref()
                .is_some_and(|n| n.as_str() < self.inner.name.as_str())
                && now.duration_since(target.lost_since) < t.redial_max;
            // A connection to it (either direction) is being set up already.
            let pending = target.name.as_ref().is_some_and(|n| {
                self.sessions
                    .values()
                    .any(|s| !s.killed && s.name.as_deref() == Some(n.as_str()))
            });
            if connected
                || blocked
                || defer
                || pending
                || in_flight.contains(addr_s.as_str())
                || now < target.next_try
            {
                continue;
            }
            target.dialing_since = Some(now);
            target.next_try = now + jitter(target.backoff);
            target.backoff = (target.backoff * 2).min(t.redial_max);
            to_dial.push(*addr);
        }
        for addr in to_dial {
            let server = self.inner.server.clone();
            let dialer = self.dialer.clone();
            let mgr = self.inner.mgr.clone();
            tokio::spawn(async move {
                let result = match &*dialer {
                    Dialer::Raw => ractor_cluster::client_connect(&server, addr).await,
                    Dialer::Tls(connector, name) => {
                        ractor_cluster::client_connect_enc(
                            &server,
                            addr,
                            connector.clone(),
                            name.clone(),
                        )
                        .await
                    }
                };
                if let Err(e) = result {
                    let _ = mgr.send(MgrMsg::DialFailed {
                        addr,
                        error: e.to_string(),
                    });
                }
            });
        }
    }

    fn expire_joins(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.joins.len() {
            let j = &self.joins[i];
            let failed = j
                .auth_failed_at
                .is_some_and(|at| now.duration_since(at) > AUTH_FAIL_GRACE);
            if failed || now >= j.deadline {
                let j = self.joins.swap_remove(i);
                let seed = j.seed.to_string();
                let err = if failed {
                    // Do not keep knocking with a cookie the seed refuses.
                    if self.targets.get(&j.seed).is_some_and(|t| t.name.is_none()) {
                        self.targets.remove(&j.seed);
                    }
                    JoinError::AuthFailed { seed }
                } else {
                    JoinError::Timeout {
                        seed,
                        last_error: j.last_error,
                    }
                };
                let _ = j.reply.send(Err(err));
            } else {
                i += 1;
            }
        }
    }

    /// pg changed: registry events, and conflict resolution for names.
    fn on_pg(&mut self, change: GroupChangeMessage) {
        let (joined, scope, group, cells) = match change {
            GroupChangeMessage::Join(s, g, c) => (true, s, g, c),
            GroupChangeMessage::Leave(s, g, c) => (false, s, g, c),
        };
        if scope == names::GLOBAL_SCOPE {
            for cell in &cells {
                let Some(meta) = meta_of(cell) else { continue };
                let node = meta.node().to_string();
                if joined {
                    self.inner.emit(ClusterEvent::NameRegistered {
                        name: group.clone(),
                        node,
                    });
                } else {
                    if cell.get_id().is_local() {
                        self.inner
                            .local_names
                            .remove_if(&group, |_, l| l.stub.get_id() == cell.get_id());
                        self.forget_if_dead(cell);
                    }
                    self.inner.emit(ClusterEvent::NameUnregistered {
                        name: group.clone(),
                        node,
                    });
                }
            }
            if joined {
                self.resolve_conflict(&group);
            }
        } else if let Some(user_scope) = scope.strip_prefix(names::GROUP_SCOPE_PREFIX) {
            for cell in &cells {
                let Some(meta) = meta_of(cell) else { continue };
                if !joined && cell.get_id().is_local() {
                    self.forget_if_dead(cell);
                }
                let (scope, group, node) = (
                    user_scope.to_string(),
                    group.clone(),
                    meta.node().to_string(),
                );
                self.inner.emit(if joined {
                    ClusterEvent::GroupJoined { scope, group, node }
                } else {
                    ClusterEvent::GroupLeft { scope, group, node }
                });
            }
        }
    }

    /// Drops the bookkeeping of a local stub whose actor died.
    fn forget_if_dead(&self, cell: &ractor::ActorCell) {
        if matches!(
            cell.get_status(),
            ActorStatus::Stopping | ActorStatus::Stopped
        ) {
            let id = cell.get_id();
            self.inner.typed.remove(&id);
            self.inner.stubs.retain(|_, stub| stub.get_id() != id);
        }
    }

    /// When a name has several holders, every node picks the same winner
    /// (earliest stub creation, then smallest node name); the node of each
    /// loser removes it and tells its actor.
    fn resolve_conflict(&mut self, name: &str) {
        let holders: Vec<_> =
            ractor::pg::get_scoped_members(&names::GLOBAL_SCOPE.to_string(), &name.to_string())
                .into_iter()
                .filter(|c| !matches!(c.get_status(), ActorStatus::Stopping | ActorStatus::Stopped))
                .filter_map(|c| meta_of(&c).map(|m| (c, m)))
                // A dying node's entries linger in pg for a moment: ignore them.
                .filter(|(_, m)| self.inner.is_up(m.node()))
                .collect();
        if holders.len() < 2 {
            return;
        }
        let Some((winner, winner_meta)) = holders.iter().min_by_key(|(_, m)| names::winner_key(m))
        else {
            return;
        };
        let winner_id = winner.get_id();
        let winner_node = winner_meta.node().to_string();
        for (cell, _) in holders
            .iter()
            .filter(|(c, _)| c.get_id() != winner_id && c.get_id().is_local())
        {
            let lost = NameLost {
                name: name.to_string(),
                winner_node: winner_node.clone(),
            };
            tracing::warn!(node = %self.inner.name, name, winner = %winner_node, "global name conflict lost; unregistering the local holder");
            ractor::pg::leave_scoped(
                names::GLOBAL_SCOPE.to_string(),
                name.to_string(),
                vec![cell.clone()],
            );
            // The stub stays: the actor may hold other names and groups.
            if let Some((_, local)) = self
                .inner
                .local_names
                .remove_if(name, |_, l| l.stub.get_id() == cell.get_id())
                && let Some(tell) = &local.on_lost
            {
                tell(lost.clone());
            }
            self.inner.emit(ClusterEvent::NameLost(lost));
        }
    }
}
