//! [`Node`]: start, join, leave, membership queries and events.

use std::any::Any;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use ractor::{Actor, ActorCell, ActorId, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::actors::Agent;
use super::config::{NodeConfig, Timings};
use super::envelope::{Envelope, NameLostFn};
use super::error::{JoinError, StartError};
use super::event::ClusterEvent;
use super::membership::{self, Dialer, MgrMsg};
use super::names;
use super::tls;

/// Set while a node runs in this process: ractor's pg is process-global.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// A local holder of a global name.
pub(crate) struct LocalName {
    pub(crate) stub: ActorCell,
    pub(crate) on_lost: Option<NameLostFn>,
}

/// What the handle, the registry and the membership task share.
pub(crate) struct NodeInner {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) timings: Timings,
    pub(crate) server: ActorRef<NodeServerMessage>,
    pub(crate) agent: ActorRef<Envelope>,
    pub(crate) events: broadcast::Sender<ClusterEvent>,
    /// Nodes up now: name -> listen address. Written by the membership task.
    pub(crate) up: DashMap<String, String>,
    pub(crate) mgr: mpsc::UnboundedSender<MgrMsg>,
    /// Typed refs of local stubs (stub id -> `ActorRef<M>`), for the
    /// same-node fast path that skips encoding.
    pub(crate) typed: DashMap<ActorId, Arc<dyn Any + Send + Sync>>,
    pub(crate) local_names: DashMap<String, LocalName>,
    /// The stub of each local actor that has a global name or is in a group.
    pub(crate) stubs: DashMap<ActorId, ActorCell>,
    pub(crate) seq: AtomicU64,
    pub(crate) register_lock: tokio::sync::Mutex<()>,
    pub(crate) stopped: AtomicBool,
}

impl NodeInner {
    pub(crate) fn emit(&self, event: ClusterEvent) {
        tracing::debug!(?event, node = %self.name, "cluster event");
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    pub(crate) fn is_up(&self, node: &str) -> bool {
        node == self.name || self.up.contains_key(node)
    }
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::SeqCst);
    }
}

/// A running node: a cheap handle (clone it freely).
///
/// One node per process: ractor's process groups, on which the registry is
/// built, are process-global.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// Forwards ractor_cluster's session events into the membership task.
struct Subscription(mpsc::UnboundedSender<MgrMsg>);

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(MgrMsg::Opened(ses));
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(MgrMsg::Disconnected(ses));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(MgrMsg::Authenticated(ses));
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(MgrMsg::Ready(ses));
    }
}

pub(crate) fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn pick_port(listen: SocketAddr) -> Result<SocketAddr, StartError> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    // ractor_cluster does not report the port it bound; choose one first.
    let probe = std::net::TcpListener::bind(listen)
        .map_err(|e| StartError::Spawn(format!("cannot bind {listen}: {e}")))?;
    probe
        .local_addr()
        .map_err(|e| StartError::Spawn(format!("cannot read bound address: {e}")))
}

impl Node {
    /// Starts the node: the ractor_cluster `NodeServer` listening on
    /// `config.listen`, the agent, and the membership task (heartbeat,
    /// failure detection, redial). The node is alone until [`Node::join`].
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        if !names::valid_node_name(&config.name) {
            return Err(StartError::Config(format!(
                "node name {:?} must be 1-64 of [A-Za-z0-9._-]",
                config.name
            )));
        }
        if config.cookie.is_empty() {
            return Err(StartError::Config("the cookie must not be empty".into()));
        }
        let t = config.timings;
        if t.heartbeat_interval.is_zero() || t.heartbeat_timeout <= t.heartbeat_interval {
            return Err(StartError::Config(
                "heartbeat_timeout must exceed a non-zero heartbeat_interval".into(),
            ));
        }
        if RUNNING.swap(true, Ordering::SeqCst) {
            return Err(StartError::AlreadyRunning);
        }
        match Self::start_inner(config).await {
            Ok(node) => Ok(node),
            Err(e) => {
                RUNNING.store(false, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    async fn start_inner(config: NodeConfig) -> Result<Node, StartError> {
        let listen = pick_port(config.listen)?;
        let advertise_ip = config
            .advertise_ip
            .unwrap_or(if listen.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                listen.ip()
            });
        let addr = SocketAddr::new(advertise_ip, listen.port());

        let (encryption, dialer) = match &config.tls {
            Some(tls_config) => {
                tls::install_crypto_provider();
                let acceptor = tls_config.acceptor()?;
                let (connector, server_name) = tls_config.connector()?;
                (
                    IncomingEncryptionMode::Tls(acceptor),
                    Dialer::Tls(connector, server_name),
                )
            }
            None => (IncomingEncryptionMode::Raw, Dialer::Raw),
        };

        // Isolated: our own gossip finds the other nodes, with TLS too
        // (ractor_cluster's transitive mode always dials in plain TCP).
        let server = NodeServer::new(
            listen.port(),
            config.cookie.clone(),
            config.name.clone(),
            advertise_ip.to_string(),
            Some(encryption),
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen.ip());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| StartError::Spawn(format!("node server on {listen}: {e}")))?;

        let (mgr_tx, mgr_rx) = mpsc::unbounded_channel();
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "beamline.membership".into(),
                subscription: Box::new(Subscription(mgr_tx.clone())),
            })
            .map_err(|e| StartError::Spawn(format!("subscribe: {e}")))?;

        let incarnation = now_nanos();
        let (agent, _) = Actor::spawn(
            Some(names::agent_name(&config.name, incarnation)),
            Agent,
            mgr_tx.clone(),
        )
        .await
        .map_err(|e| {
            server.stop(None);
            StartError::Spawn(format!("agent: {e}"))
        })?;
        ractor::pg::join_scoped(
            names::SYS_SCOPE.to_string(),
            names::AGENTS_GROUP.to_string(),
            vec![agent.get_cell()],
        );

        let (events, _) = broadcast::channel(config.event_capacity.max(16));
        let inner = Arc::new(NodeInner {
            name: config.name.clone(),
            addr,
            timings: config.timings,
            server,
            agent,
            events,
            up: DashMap::new(),
            mgr: mgr_tx,
            typed: DashMap::new(),
            local_names: DashMap::new(),
            stubs: DashMap::new(),
            seq: AtomicU64::new(0),
            register_lock: tokio::sync::Mutex::new(()),
            stopped: AtomicBool::new(false),
        });
        tokio::spawn(membership::run(inner.clone(), mgr_rx, dialer));
        tracing::info!(node = %config.name, %addr, tls = config.tls.is_some(), "node started");
        Ok(Node { inner })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The address other nodes dial to reach this node.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Joins the cluster through `seeds`; every other member is then found
    /// through them (gossip), and lost members are redialled for as long as
    /// this node runs. Returns the names of the seeds reached; fails only if
    /// none was reached, with [`JoinError::AuthFailed`] when a seed refused
    /// our cookie.
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<Vec<String>, JoinError> {
        if seeds.is_empty() {
            return Err(JoinError::NoSeeds);
        }
        let mut waits = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let (tx, rx) = oneshot::channel();
            self.inner
                .mgr
                .send(MgrMsg::Join {
                    seed: *seed,
                    reply: tx,
                })
                .map_err(|_| JoinError::Stopped)?;
            waits.push(rx);
        }
        let mut joined = Vec::new();
        let mut first_error = None;
        for wait in waits {
            match wait.await {
                Ok(Ok(name)) => joined.push(name),
                Ok(Err(e)) => {
                    tracing::error!(node = %self.inner.name, error = %e, "join failed");
                    // A refused cookie says more than a timeout.
                    if first_error.is_none() || matches!(e, JoinError::AuthFailed { .. }) {
                        first_error = Some(e);
                    }
                }
                Err(_) => first_error = Some(JoinError::Stopped),
            }
        }
        match first_error {
            Some(e) if joined.is_empty() => Err(e),
            _ => Ok(joined),
        }
    }

    /// Leaves the cluster: tells the peers (so they do not redial), waits up
    /// to one second for them to close, then stops the node server and agent.
    /// Local actors keep running; their names and group memberships vanish
    /// from the other nodes.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.mgr.send(MgrMsg::Leave(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
    }

    /// Names of the other nodes that are up now (sorted).
    pub fn members(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.up.iter().map(|e| e.key().clone()).collect();
        v.sort();
        v
    }

    /// True when `node` is this node or a node that is up now.
    pub fn is_up(&self, node: &str) -> bool {
        self.inner.is_up(node)
    }

    /// Subscribes to cluster events (node up/down, names, groups). The
    /// channel holds `NodeConfig::event_capacity` events (default 1024); a
    /// receiver that falls further behind gets `RecvError::Lagged` and
    /// misses the oldest ones.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.inner.events.subscribe()
    }

    /// Forwards every cluster event to `actor` (built with `wrap`) until the
    /// actor stops or the node leaves. Same bound as [`Node::subscribe`].
    pub fn subscribe_actor<M: ractor::Message>(
        &self,
        actor: ActorRef<M>,
        wrap: impl Fn(ClusterEvent) -> M + Send + 'static,
    ) {
        let mut rx = self.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if actor.cast(wrap(ev)).is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "cluster event subscriber lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// Fault injection for tests: cut this node off from `peer` (or reconnect
    /// it when `blocked` is false). While blocked, every session with the
    /// peer is closed as soon as it authenticates and the peer is not
    /// redialled, which makes a partition without touching the network.
    pub fn set_blocked(&self, peer: &str, blocked: bool) {
        let _ = self
            .inner
            .mgr
            .send(MgrMsg::Block(peer.to_string(), blocked));
    }
}

/// Parses the stable node name out of ractor_cluster's `name@host`.
pub(crate) fn node_name_of(full: &str) -> String {
    match full.rsplit_once('@') {
        Some((name, _)) => name.to_string(),
        None => full.to_string(),
    }
}

/// Typed fast path: the local `ActorRef<M>` behind a local stub.
pub(crate) fn typed_ref<M: ractor::Message>(
    inner: &NodeInner,
    stub: &ActorCell,
) -> Option<ActorRef<M>> {
    inner
        .typed
        .get(&stub.get_id())
        .and_then(|e| e.value().downcast_ref::<ActorRef<M>>().cloned())
}

pub(crate) use names::StubMeta;

/// Returns the metadata of a pg member, if it is one of ours.
pub(crate) fn meta_of(cell: &ActorCell) -> Option<StubMeta> {
    cell.get_name().as_deref().and_then(names::parse)
}

/// Stops the server and agent; used by the membership task when leaving.
pub(crate) fn shutdown(inner: &NodeInner) {
    inner.stopped.store(true, Ordering::SeqCst);
    inner.agent.stop(None);
    inner.server.stop(None);
    for e in inner.stubs.iter() {
        e.value().stop(None);
    }
    inner.up.clear();
    // pg is free again once our stubs and sessions are gone: another node
    // may start in this process.
    RUNNING.store(false, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterEvent, RegistryError, ReplyTo};
    use ractor::ActorProcessingErr;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    enum Msg {
        Add(u64),
        Get(ReplyTo<u64>),
    }
    impl ractor::Message for Msg {}

    struct Counter;
    impl Actor for Counter {
        type Msg = Msg;
        type State = u64;
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
            Ok(0)
        }
        async fn handle(
            &self,
            _: ActorRef<Msg>,
            msg: Msg,
            n: &mut u64,
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                Msg::Add(k) => *n += k,
                Msg::Get(r) => {
                    let _ = r.send(*n);
                }
            }
            Ok(())
        }
    }

    /// Collects the cluster events forwarded by `subscribe_actor`.
    struct Collector;
    struct Collected(ClusterEvent);
    impl ractor::Message for Collected {}
    impl Actor for Collector {
        type Msg = Collected;
        type State = Arc<parking_lot::Mutex<Vec<ClusterEvent>>>;
        type Arguments = Arc<parking_lot::Mutex<Vec<ClusterEvent>>>;
        async fn pre_start(
            &self,
            _: ActorRef<Collected>,
            seen: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(seen)
        }
        async fn handle(
            &self,
            _: ActorRef<Collected>,
            Collected(ev): Collected,
            seen: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            seen.lock().push(ev);
            Ok(())
        }
    }

    fn config(name: &str) -> NodeConfig {
        NodeConfig::new(name, "cookie", SocketAddr::from(([127, 0, 0, 1], 0)))
            .with_timings(Timings::default().with_join_timeout(Duration::from_millis(300)))
    }

    #[tokio::test]
    async fn bad_configs_are_refused_before_anything_starts() {
        for name in ["", "a|b", "a@b"] {
            assert!(matches!(
                Node::start(config(name)).await,
                Err(StartError::Config(_))
            ));
        }
        let mut c = config("ok");
        c.cookie.clear();
        assert!(matches!(Node::start(c).await, Err(StartError::Config(_))));
    }

    // The only in-process test that starts a node: one node per process.
    #[tokio::test]
    async fn single_node_registry_groups_and_local_calls() {
        let node = Node::start(config("solo")).await.expect("start");
        assert!(matches!(
            Node::start(config("second")).await,
            Err(StartError::AlreadyRunning)
        ));
        let mut events = node.subscribe();
        let collected = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (collector, _) = Actor::spawn(None, Collector, collected.clone())
            .await
            .expect("spawn");
        node.subscribe_actor(collector, Collected);
        let (counter, _) = Actor::spawn(None, Counter, ()).await.expect("spawn");
        let (other, _) = Actor::spawn(None, Counter, ()).await.expect("spawn");

        node.register("counter", &counter).await.expect("register");
        assert!(matches!(
            node.register("counter", &other).await,
            Err(RegistryError::AlreadyRegistered { .. })
        ));
        let r = node.whereis::<Msg>("counter").expect("registered");
        assert!(r.is_local());
        assert_eq!(r.node(), "solo");
        r.cast(Msg::Add(2)).expect("cast");
        let n = r
            .call(Msg::Get, Duration::from_secs(1))
            .await
            .expect("call");
        assert_eq!(n, 2);
        assert_eq!(node.registered(), vec![("counter".into(), "solo".into())]);

        // One stub per actor, shared by its names and groups.
        node.join_group("s", "g", &counter).await.expect("join");
        node.join_group("s", "g", &other).await.expect("join");
        assert_eq!(node.inner.stubs.len(), 2);
        assert_eq!(node.members_of::<Msg>("s", "g").len(), 2);
        assert_eq!(node.local_members_of::<Msg>("s", "g").len(), 2);
        assert_eq!(node.groups("s"), vec!["g".to_string()]);
        node.leave_group("s", "g", &other).expect("leave");
        assert_eq!(node.members_of::<Msg>("s", "g").len(), 1);

        node.unregister("counter").expect("unregister");
        assert!(node.whereis::<Msg>("counter").is_none());
        assert!(matches!(
            node.unregister("counter"),
            Err(RegistryError::NotRegistered(_))
        ));

        // A dead actor's names and groups go away by themselves.
        node.register("other", &other).await.expect("register");
        other.stop(None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while node.whereis::<Msg>("other").is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "dead actor still registered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Events were published.
        let mut seen = Vec::new();
        while let Ok(ev) = events.try_recv() {
            seen.push(ev);
        }
        assert!(seen.contains(&ClusterEvent::NameRegistered {
            name: "counter".into(),
            node: "solo".into()
        }));

        // An actor can subscribe too.
        let expected = ClusterEvent::NameRegistered {
            name: "counter".into(),
            node: "solo".into(),
        };
        while !collected.lock().contains(&expected) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "actor got no events"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Nobody listens on the seed: a timeout, not a hang.
        let dead = SocketAddr::from(([127, 0, 0, 1], 9));
        assert!(matches!(
            node.join(&[dead]).await,
            Err(JoinError::Timeout { .. })
        ));
        node.leave().await;
        assert!(matches!(
            node.register("late", &counter).await,
            Err(RegistryError::Stopped)
        ));
    }
}
