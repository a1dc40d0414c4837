//! The whole server of one node, started from a [`Config`]: what
//! `beamline serve` runs, and what an application embeds.
//!
//! [`Server::start`] opens the storage, loads or makes the certificates and
//! starts the node's supervision tree:
//!
//! ```text
//! root (one_for_one)
//! ├── sm_shard_0 … sm_shard_N      session manager shards
//! ├── delivery_shard_0 … _K        (cluster) stanzas from other nodes
//! ├── cluster_service              (cluster) module commands from others
//! ├── modules                      module manager (per-host modules)
//! ├── c2s_sessions_0 … _M          dynamic supervisors of session actors
//! └── listener_<kind>_<addr> …     one acceptor per configured listener
//! ```
//!
//! Listeners are started last, so they are stopped first: a shutdown
//! stops accepting, then closes every stream with `system-shutdown`,
//! then the rest, and [`Server::stop`] finally flushes the disc log.
//!
//! With `[cluster]`, the node joins the other nodes first and its session
//! table and backend tables are replicated: see [`crate::cluster`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use beamline_runtime::hooks::{Hooks, Scope};
use beamline_storage::backend::{Backend, BackendError, TablesBackend};
use beamline_storage::disc::{DiscOptions, SyncPolicy};
use beamline_storage::{Db, DurableDb};
use beamline_supervision::module::{
    ModuleError, ModuleManager, ModuleManagerRef, ModuleOptions, merge_options,
};
use beamline_supervision::{
    ChildHandle, ChildSpec, DynamicMsg, DynamicSpec, DynamicSupervisor, Restart, Strategy,
    Supervisor, SupervisorRef, SupervisorSpec,
};
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpListener;

use crate::access::{Access, Subject};
use crate::c2s::{BoxIo, C2sArgs, C2sMsg, C2sSession, IpGuard, ListenerSettings, Peer};
use crate::cluster::{self, Cluster, LocalModules, ModuleCmd};
use crate::config::{Config, ConfigError, ListenerConfig, ListenerKind, StartTls, SyncMode};
use crate::hooks::{Account, REGISTER_USER, REMOVE_USER};
use crate::modules::{DiscoRegistry, Services, builtin_modules, builtin_names};
use crate::router::Router;
use crate::sasl::{self, SaslConfig};
use crate::sm::SessionManager;
use crate::stream_error::StreamErrorCondition;
use crate::tls::{ServerCertificates, TlsMode};

/// Errors of starting or running a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory or the disc tables could not be opened.
    #[error("storage: {0}")]
    Storage(String),
    /// Certificates could not be loaded or made.
    #[error("TLS: {0}")]
    Tls(String),
    /// The supervision tree (or a listener in it) did not start.
    #[error("{0}")]
    Start(String),
    /// An account operation failed.
    #[error(transparent)]
    Account(#[from] AccountError),
}

/// Errors of account operations (the admin commands).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The account exists already.
    #[error("user {0} already exists")]
    UserExists(String),
    /// No such account.
    #[error("no user {0}")]
    NoSuchUser(String),
    /// The host is not served here.
    #[error("unknown host {0}")]
    UnknownHost(String),
    /// The user name or password is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The storage failed.
    #[error("{0}")]
    Failed(String),
}

/// Where a server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageMode {
    /// Disc tables under the configuration's `data_dir/db`.
    Durable,
    /// Everything in memory (tests, benchmarks, throwaway embedding);
    /// certificates still go to `data_dir/tls`.
    InMemory,
}

/// How to run a server, beyond its configuration file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// This node's name (in the session table and logs); with
    /// `[cluster]` the cluster's `node_name` is used instead.
    pub node_name: String,
    /// Disc or memory.
    pub storage: StorageMode,
    /// Most client sessions on this node.
    pub max_sessions: usize,
    /// Most stanzas queued for one session before it is cut off.
    pub max_queue: u32,
    /// Session manager shards.
    pub sm_shards: usize,
    /// Dynamic supervisors the sessions are spread over.
    pub c2s_supervisors: usize,
    /// Delivery shards (stanzas from other nodes) when in a cluster; the
    /// same on every node (a recipient's shard is its hash modulo this).
    pub delivery_shards: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ServerOptions {
            node_name: "beamline@localhost".into(),
            storage: StorageMode::Durable,
            max_sessions: 1_000_000,
            max_queue: 10_000,
            sm_shards: (cores * 2).max(4),
            c2s_supervisors: (cores * 2).max(4),
            delivery_shards: 8,
        }
    }
}

impl ServerOptions {
    /// Options with everything in memory (for tests and embedding).
    pub fn in_memory() -> Self {
        ServerOptions {
            storage: StorageMode::InMemory,
            ..ServerOptions::default()
        }
    }

    /// Sets the node name.
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self
    }
}

/// Counters of the server, for `stats`.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Successful SASL authentications.
    pub logins: AtomicU64,
    /// Failed SASL attempts.
    pub auth_failures: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused (per-IP limit, access rule, full node).
    pub refused: AtomicU64,
}

/// What every session, listener and admin command of a node shares.
pub(crate) struct ServerCtx {
    pub node: String,
    pub config: Arc<Config>,
    pub hooks: Hooks,
    pub sm: SessionManager,
    pub router: Router,
    pub backend: Arc<dyn Backend>,
    pub certs: Option<ServerCertificates>,
    pub sasl: HashMap<String, SaslConfig>,
    pub stats: ServerStats,
    pub started: Instant,
    pub services: Services,
    sessions: Mutex<Vec<ChildHandle>>,
    next_sup: AtomicUsize,
}

impl ServerCtx {
    /// The first configured host (for errors before the client named one).
    pub fn default_host(&self) -> &str {
        self.config
            .hosts
            .first()
            .map_or("localhost", String::as_str)
    }

    /// The session limit of `user@host` (`[limits]`, by ACL).
    pub fn max_sessions_per_user(&self, user: &str, host: &str) -> usize {
        self.services.access.max_sessions(user, host)
    }

    /// Starts a session actor for `io` under one of the c2s supervisors.
    async fn start_session(
        self: &Arc<Self>,
        listener: Arc<ListenerSettings>,
        io: BoxIo,
        peer: Peer,
        guard: Option<IpGuard>,
    ) -> Result<ActorRef<C2sMsg>, String> {
        let sup = {
            let sups = self.sessions.lock();
            if sups.is_empty() {
                return Err("no session supervisor".into());
            }
            let i = self.next_sup.fetch_add(1, Ordering::Relaxed) % sups.len();
            sups[i].actor_ref::<DynamicMsg>()
        };
        let Some(sup) = sup else {
            return Err("session supervisor restarting".into());
        };
        let args = Arc::new(C2sArgs {
            ctx: self.clone(),
            listener,
            io: Mutex::new(Some(io)),
            peer,
            guard: Mutex::new(guard),
        });
        let spec = ChildSpec::new("c2s", move |sup| {
            let args = args.clone();
            async move {
                let (r, _) = Actor::spawn_linked(None, C2sSession, args, sup).await?;
                Ok(r.get_cell())
            }
        })
        .restart(Restart::Temporary);
        let handle = beamline_supervision::DynamicSupervisorRef::from_ref(sup)
            .start_child(spec)
            .await
            .map_err(|e| e.to_string())?;
        handle
            .actor_ref::<C2sMsg>()
            .ok_or_else(|| "session ended at once".to_owned())
    }
}

/// Whether the listener's access rule lets `ip` connect. Before
/// authentication only address ACLs (and `all`) can match.
fn ip_allowed(access: &Access, rule: Option<&str>, ip: std::net::IpAddr) -> bool {
    access.allow_or_default(rule, &Subject::ip(Some(ip)))
}

/// A module's `[modules.NAME]` table as the module manager's options.
pub(crate) fn module_options(table: &toml::Table) -> Result<ModuleOptions, String> {
    match serde_json::to_value(table) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("options must be a table".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Checks the `[modules]` of `config` without starting anything: known
/// names, and each module's options merged over its defaults and
/// validated. Errors name the file, line and key, as at start.
pub fn check_module_options(config: &Config) -> Result<(), ConfigError> {
    let db = Db::in_memory();
    let (Ok(sm), Ok(backend)) = (
        SessionManager::new(&db, "check", 1),
        TablesBackend::new(Db::in_memory()),
    ) else {
        return Err(config.error_at(&["modules"], "cannot build the modules to check them"));
    };
    let hooks = Hooks::new();
    let config_arc = Arc::new(config.clone());
    let router = Router::new(
        config.hosts.iter().cloned(),
        sm.clone(),
        hooks.clone(),
        Arc::new(backend.clone()),
        1,
    );
    let services = Services {
        router,
        hooks,
        sm,
        backend: Arc::new(backend),
        config: config_arc.clone(),
        access: Access::new(config_arc),
        disco: DiscoRegistry::default(),
    };
    let all = builtin_modules(&services);
    let names: Vec<&str> = all.iter().map(|m| m.name()).collect();
    config.check_modules(&names)?;
    for (name, table) in &config.modules {
        let Some(module) = all.iter().find(|m| m.name() == name.as_str()) else {
            continue;
        };
        let opts = module_options(table).map_err(|e| config.error_at(&["modules", name], e))?;
        if let Err(e) = merge_options(module.as_ref(), opts) {
            let key: Vec<&str> = match &e {
                ModuleError::UnknownOption { option, .. } => {
                    vec!["modules", name.as_str(), option.as_str()]
                }
                _ => vec!["modules", name.as_str()],
            };
            return Err(config.error_at(&key, e.to_string()));
        }
    }
    Ok(())
}

/// Starts the modules of `[modules]` on every host, each after the
/// configured modules it depends on (so that those get their options).
async fn start_configured_modules(
    config: &Config,
    services: &Services,
    modules: &ModuleManagerRef,
) -> Result<(), ServerError> {
    let all = builtin_modules(services);
    let mut pending: Vec<&String> = config.modules.keys().collect();
    let mut started: Vec<&str> = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|name| {
            all.iter()
                .find(|m| m.name() == name.as_str())
                .is_none_or(|m| {
                    m.dependencies()
                        .iter()
                        .all(|d| started.contains(&d.as_str()) || !config.modules.contains_key(d))
                })
        });
        // A cycle among configured modules: the manager reports it.
        let name = pending.remove(ready.unwrap_or(0));
        let table = &config.modules[name];
        let opts = module_options(table)
            .map_err(|e| ServerError::Start(format!("modules.{name}: {e}")))?;
        for host in &config.hosts {
            modules
                .start_module(host, name, opts.clone())
                .await
                .map_err(|e| {
                    // Point at the line of the module's table (or option).
                    let key: Vec<&str> = match &e {
                        ModuleError::UnknownOption { option, .. } => {
                            vec!["modules", name.as_str(), option.as_str()]
                        }
                        _ => vec!["modules", name.as_str()],
                    };
                    ServerError::Start(config.error_at(&key, format!("on {host}: {e}")).to_string())
                })?;
        }
        started.push(name);
    }
    Ok(())
}

/// Backlog of a listening socket: a burst of logins waits in the kernel
/// instead of being dropped (tokio's default is 1,024; the kernel caps it
/// at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 8192;

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// An acceptor: binds its address when it starts, accepts until stopped.
#[derive(Debug, Clone, Copy)]
struct Listener;

#[derive(Clone)]
struct ListenerArgs {
    ctx: Arc<ServerCtx>,
    config: ListenerConfig,
    settings: Arc<ListenerSettings>,
    bound: Arc<Mutex<Option<SocketAddr>>>,
}

impl Actor for Listener {
    type Msg = ();
    type State = tokio::task::JoinHandle<()>;
    type Arguments = ListenerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        args: ListenerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let addr = args.config.addr();
        let listener = bind_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        *args.bound.lock() = Some(local);
        tracing::info!(kind = ?args.config.kind, addr = %local, "listening");
        let per_ip = Arc::new(dashmap::DashMap::new());
        Ok(tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, most likely: wait, go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let ctx = &args.ctx;
                ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
                if !ip_allowed(
                    &ctx.services.access,
                    args.config.access.as_deref(),
                    peer.ip(),
                ) {
                    ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, "connection refused by the access rule");
                    continue;
                }
                let Some(guard) =
                    IpGuard::acquire(&per_ip, peer.ip(), args.config.max_connections_per_ip)
                else {
                    ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, "connection refused: too many from this address");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                let settings = args.settings.clone();
                tokio::spawn(async move {
                    let peer = Peer { addr: Some(peer) };
                    if let Err(e) = ctx
                        .start_session(settings, Box::new(stream), peer, Some(guard))
                        .await
                    {
                        ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "could not start a session");
                    }
                });
            }
        }))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        task: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        task.abort();
        Ok(())
    }
}

fn listener_settings(
    config: &Config,
    l: &ListenerConfig,
    certs: Option<&ServerCertificates>,
) -> Result<ListenerSettings, ServerError> {
    let tls = match (TlsMode::of_listener(l.kind), certs) {
        (Some(mode), Some(certs)) => Some(
            certs
                .acceptor(mode)
                .map_err(|e| ServerError::Tls(e.to_string()))?,
        ),
        _ => None,
    };
    let shaper = l
        .shaper
        .as_ref()
        .and_then(|name| config.shapers.get(name))
        .map(|s| (s.rate, s.burst_size()));
    Ok(ListenerSettings {
        kind: l.kind,
        starttls: l.starttls_policy(),
        limits: l.stream_limits(),
        auth_timeout: l.auth_timeout(),
        tls,
        shaper,
        access: l.access.clone(),
    })
}

/// The secret that keys the fake salts of unknown users: kept in the data
/// directory so that answers do not change across restarts.
fn sasl_secret(data_dir: Option<&Path>) -> [u8; 32] {
    let mut secret = [0u8; 32];
    let path = data_dir.map(|d| d.join("sasl.secret"));
    if let Some(p) = &path {
        if let Ok(bytes) = std::fs::read(p) {
            if let Ok(s) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return s;
            }
        }
    }
    if getrandom::fill(&mut secret).is_err() {
        tracing::warn!("no system randomness for the SASL secret");
    }
    if let Some(p) = &path {
        if let Err(e) = write_private(p, &secret) {
            tracing::warn!(error = %e, path = %p.display(), "could not keep the SASL secret");
        }
    }
    secret
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

struct Inner {
    ctx: Arc<ServerCtx>,
    root: SupervisorRef,
    durable: Option<DurableDb>,
    listeners: Vec<(ListenerKind, SocketAddr)>,
    memory_listener: Arc<ListenerSettings>,
    modules: ModuleManagerRef,
    cluster: Option<Arc<Cluster>>,
    stopped: tokio::sync::Mutex<bool>,
}

/// A running server. Cheap to clone; [`Server::stop`] stops it.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("node", &self.inner.ctx.node)
            .field("listeners", &self.inner.listeners)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts a server with `config` (already validated: `Config::from_file`
    /// does that; a config built in code may also use port 0 to let the
    /// system pick, see [`Server::listeners`]).
    pub async fn start(config: Config, options: ServerOptions) -> Result<Server, ServerError> {
        let config = Arc::new(config);
        let data_dir = config.storage.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| ServerError::Storage(format!("creating {}: {e}", data_dir.display())))?;
        let (db, durable) = match options.storage {
            StorageMode::Durable => {
                let sync = match config.storage.sync {
                    SyncMode::Group => SyncPolicy::Group {
                        max_delay: Duration::ZERO,
                        max_batch: 256,
                    },
                    _ => SyncPolicy::EveryCommit,
                };
                let dir = data_dir.join("db");
                let durable = DurableDb::open(&dir, DiscOptions::default().with_sync(sync))
                    .await
                    .map_err(|e| ServerError::Storage(format!("opening {}: {e}", dir.display())))?;
                (durable.db().clone(), Some(durable))
            }
            StorageMode::InMemory => (Db::in_memory(), None),
        };
        let tables = TablesBackend::new(db.clone())
            .map_err(|e| ServerError::Storage(format!("declaring backend tables: {e}")))?;
        // With [cluster]: join, then replicate the tables (the copies are
        // loaded from the other nodes before anything is served).
        let joined = match &config.cluster {
            Some(c) => Some(
                cluster::start_node(c, &db)
                    .await
                    .map_err(|e| ServerError::Start(e.to_string()))?,
            ),
            None => None,
        };
        let node_name = config
            .cluster
            .as_ref()
            .map_or_else(|| options.node_name.clone(), |c| c.node_name.clone());
        let sm = match &joined {
            Some((node, repl)) => {
                let r = async {
                    tables.replicate(repl).await?;
                    cluster::session_table(repl).await
                }
                .await;
                match r {
                    Ok(table) => {
                        SessionManager::with_table(table, node_name.clone(), options.sm_shards)
                    }
                    Err(e) => {
                        node.leave().await;
                        return Err(ServerError::Storage(format!("replicating the tables: {e}")));
                    }
                }
            }
            None => SessionManager::new(&Db::in_memory(), node_name.clone(), options.sm_shards)
                .map_err(|e| ServerError::Storage(e.to_string()))?,
        };
        let backend: Arc<dyn Backend> = Arc::new(tables);
        let certs = ServerCertificates::from_config(&config)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        let secret = sasl_secret(durable.as_ref().map(|_| data_dir.as_path()));
        let sasl = config
            .hosts
            .iter()
            .map(|h| {
                (
                    h.clone(),
                    SaslConfig::new(h.clone(), secret)
                        .with_fake_iterations(config.auth.scram_iterations),
                )
            })
            .collect();
        let hooks = Hooks::new();
        let router = Router::new(
            config.hosts.iter().cloned(),
            sm.clone(),
            hooks.clone(),
            backend.clone(),
            options.max_queue,
        );
        let services = Services {
            router: router.clone(),
            hooks: hooks.clone(),
            sm: sm.clone(),
            backend: backend.clone(),
            config: config.clone(),
            access: Access::new(config.clone()),
            disco: DiscoRegistry::default(),
        };
        let known = builtin_names(&services);
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        if let Err(e) = config.check_modules(&known) {
            if let Some((node, _)) = &joined {
                node.leave().await;
            }
            return Err(ServerError::Start(e.to_string()));
        }
        let (cluster, cluster_specs) = match joined {
            Some((node, repl)) => {
                let (c, specs) = Cluster::new(
                    node,
                    repl,
                    options.delivery_shards,
                    &sm,
                    &router,
                    &hooks,
                    config.hosts.clone(),
                );
                (Some(Arc::new(c)), specs)
            }
            None => (None, Vec::new()),
        };
        let ctx = Arc::new(ServerCtx {
            node: node_name.clone(),
            config: config.clone(),
            hooks,
            sm: sm.clone(),
            router,
            backend,
            certs: Some(certs.clone()),
            sasl,
            stats: ServerStats::default(),
            started: Instant::now(),
            services: services.clone(),
            sessions: Mutex::new(Vec::new()),
            next_sup: AtomicUsize::new(0),
        });

        let mut children = sm.shard_specs();
        children.extend(cluster_specs);
        children.push(ModuleManager::child_spec(
            "modules",
            builtin_modules(&services),
        ));
        let per_sup = options
            .max_sessions
            .div_ceil(options.c2s_supervisors.max(1));
        let sup_ids: Vec<String> = (0..options.c2s_supervisors.max(1))
            .map(|i| format!("c2s_sessions_{i}"))
            .collect();
        for id in &sup_ids {
            children.push(DynamicSupervisor::child_spec(
                id.clone(),
                DynamicSpec {
                    max_children: Some(per_sup),
                    ..DynamicSpec::default()
                },
            ));
        }
        let spec = SupervisorSpec::new(Strategy::OneForOne, children)
            .intensity(10, Duration::from_secs(10));
        // Unnamed: ractor names are process-wide, and an application or a
        // test may run several servers in one process.
        let (root, _join) = match Supervisor::start(None, spec).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(c) = &cluster {
                    c.leave().await;
                }
                return Err(ServerError::Start(format!(
                    "starting the supervision tree: {e}"
                )));
            }
        };
        // From here on, a failed start stops the tree and leaves the
        // cluster.
        let abort = |root: SupervisorRef, cluster: Option<Arc<Cluster>>| async move {
            let _ = root.shutdown(Some(Duration::from_secs(5))).await;
            if let Some(c) = cluster {
                c.leave().await;
            }
        };
        let mut handles = Vec::new();
        for id in &sup_ids {
            match root.child(id).await {
                Ok(h) => handles.push(h),
                Err(e) => {
                    abort(root, cluster).await;
                    return Err(ServerError::Start(e.to_string()));
                }
            }
        }
        *ctx.sessions.lock() = handles;
        let modules = match root.child("modules").await.map(|h| h.actor_ref()) {
            Ok(Some(m)) => ModuleManagerRef::from_ref(m),
            _ => {
                abort(root, cluster).await;
                return Err(ServerError::Start(
                    "the module manager did not start".into(),
                ));
            }
        };
        if let Some(c) = &cluster {
            c.set_modules(LocalModules {
                manager: modules.clone(),
                hosts: config.hosts.clone(),
            });
        }
        if let Err(e) = start_configured_modules(&config, &services, &modules).await {
            abort(root, cluster).await;
            return Err(e);
        }

        let mut listeners = Vec::new();
        for l in &config.listeners {
            if !matches!(l.kind, ListenerKind::C2s | ListenerKind::C2sTls) {
                tracing::warn!(kind = ?l.kind, port = l.port, "listener kind not built yet: skipped");
                continue;
            }
            let settings = Arc::new(listener_settings(&config, l, Some(&certs))?);
            let bound = Arc::new(Mutex::new(None));
            let args = ListenerArgs {
                ctx: ctx.clone(),
                config: l.clone(),
                settings,
                bound: bound.clone(),
            };
            let id = format!("listener_{:?}_{}", l.kind, l.addr()).to_lowercase();
            if let Err(e) = root
                .start_child(ChildSpec::from_actor(id, Listener, args))
                .await
            {
                abort(root, cluster).await;
                return Err(ServerError::Start(format!("{e}")));
            }
            if let Some(addr) = *bound.lock() {
                listeners.push((l.kind, addr));
            }
        }
        let mut memory = ListenerConfig::new(
            ListenerKind::C2s,
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            1,
        );
        memory.starttls = Some(StartTls::Optional);
        let memory_listener = match listener_settings(&config, &memory, Some(&certs)) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                abort(root, cluster).await;
                return Err(e);
            }
        };
        tracing::info!(node = %node_name, hosts = ?config.hosts, "server started");
        Ok(Server {
            inner: Arc::new(Inner {
                ctx,
                root,
                durable,
                listeners,
                memory_listener,
                modules,
                cluster,
                stopped: tokio::sync::Mutex::new(false),
            }),
        })
    }

    /// The hook registry: subscribe to the points of [`crate::hooks`].
    pub fn hooks(&self) -> &Hooks {
        &self.inner.ctx.hooks
    }

    /// The router (to route a stanza from code, or register IQ handlers).
    pub fn router(&self) -> &Router {
        &self.inner.ctx.router
    }

    /// The session manager.
    pub fn sessions(&self) -> &SessionManager {
        &self.inner.ctx.sm
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.inner.ctx.config
    }

    /// The node's root supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.inner.root
    }

    /// What modules use: router, hooks, sessions, backend, access, disco.
    pub fn services(&self) -> &Services {
        &self.inner.ctx.services
    }

    /// Starts module `name` on `host` (every configured host when `None`)
    /// with `options` merged over its defaults; in a cluster, on every
    /// node.
    pub async fn start_module(
        &self,
        host: Option<&str>,
        name: &str,
        options: ModuleOptions,
    ) -> Result<(), ServerError> {
        for h in self.module_hosts(host)? {
            self.inner
                .modules
                .start_module(&h, name, options.clone())
                .await
                .map_err(|e| ServerError::Start(e.to_string()))?;
        }
        self.module_everywhere(ModuleCmd::Start {
            host: host.map(str::to_owned),
            name: name.to_owned(),
            options: cluster::options_json(&options),
        })
        .await
    }

    /// Stops module `name` on `host` (every host when `None`): its hooks,
    /// IQ handlers and disco features go with it; in a cluster, on every
    /// node.
    pub async fn stop_module(&self, host: Option<&str>, name: &str) -> Result<(), ServerError> {
        for h in self.module_hosts(host)? {
            self.inner
                .modules
                .stop_module(&h, name)
                .await
                .map_err(|e| ServerError::Start(e.to_string()))?;
        }
        self.module_everywhere(ModuleCmd::Stop {
            host: host.map(str::to_owned),
            name: name.to_owned(),
        })
        .await
    }

    /// Gives module `name` on `host` (every host when `None`) new options;
    /// in a cluster, on every node.
    pub async fn reload_module(
        &self,
        host: Option<&str>,
        name: &str,
        options: ModuleOptions,
    ) -> Result<(), ServerError> {
        for h in self.module_hosts(host)? {
            self.inner
                .modules
                .reload_module(&h, name, options.clone())
                .await
                .map_err(|e| ServerError::Start(e.to_string()))?;
        }
        self.module_everywhere(ModuleCmd::Reload {
            host: host.map(str::to_owned),
            name: name.to_owned(),
            options: cluster::options_json(&options),
        })
        .await
    }

    /// Sends a module command (applied here already) to every other node
    /// of the cluster; fails naming the nodes where it failed.
    async fn module_everywhere(&self, cmd: ModuleCmd) -> Result<(), ServerError> {
        let Some(c) = &self.inner.cluster else {
            return Ok(());
        };
        let errors = c.link().module_everywhere(&cmd).await;
        if errors.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = errors
            .into_iter()
            .map(|(node, e)| format!("{node}: {e}"))
            .collect();
        Err(ServerError::Start(format!(
            "applied on this node, failed on {}",
            list.join("; ")
        )))
    }

    /// The cluster this node is part of (`[cluster]`), if any.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.as_deref()
    }

    /// The modules running on `host`, in start order, with their options.
    pub async fn running_modules(
        &self,
        host: &str,
    ) -> Result<Vec<(String, ModuleOptions)>, ServerError> {
        let host = self.module_hosts(Some(host))?.remove(0);
        self.inner
            .modules
            .running(&host)
            .await
            .map_err(|e| ServerError::Start(e.to_string()))
    }

    fn module_hosts(&self, host: Option<&str>) -> Result<Vec<String>, ServerError> {
        match host {
            None => Ok(self.inner.ctx.config.hosts.clone()),
            Some(h) => {
                let h = crate::config::normalize_host(h);
                if self.inner.ctx.router.serves(&h) {
                    Ok(vec![h])
                } else {
                    Err(ServerError::Account(AccountError::UnknownHost(h)))
                }
            }
        }
    }

    /// The server's counters.
    pub fn server_stats(&self) -> &ServerStats {
        &self.inner.ctx.stats
    }

    /// The addresses the listeners are bound to (with the ports the system
    /// picked for port 0).
    pub fn listeners(&self) -> &[(ListenerKind, SocketAddr)] {
        &self.inner.listeners
    }

    /// The bound address of the first listener of `kind`.
    pub fn listener_addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.inner
            .listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
    }

    /// A client connection through memory instead of a socket (the
    /// in-memory transport): the returned stream is the client's end; the
    /// server runs the same codec and session code on the other end, as a
    /// `c2s` listener with STARTTLS optional and no peer address (PLAIN
    /// without TLS needs `plain_on_loopback_without_tls`).
    pub async fn connect_in_memory(&self) -> Result<crate::memory::MemoryStream, ServerError> {
        let (client, server) = crate::memory::pair(8192);
        self.inner
            .ctx
            .start_session(
                self.inner.memory_listener.clone(),
                Box::new(server),
                Peer { addr: None },
                None,
            )
            .await
            .map_err(ServerError::Start)?;
        Ok(client)
    }

    fn check_account(&self, user: &str, host: &str) -> Result<(String, String), AccountError> {
        let host = crate::config::normalize_host(host);
        if !self.inner.ctx.router.serves(&host) {
            return Err(AccountError::UnknownHost(host));
        }
        let user = jid::NodePart::new(user)
            .map_err(|e| AccountError::Invalid(format!("bad user name `{user}`: {e}")))?
            .to_string();
        Ok((user, host))
    }

    fn credentials(&self, password: &str) -> Result<Vec<sasl::ScramCredential>, AccountError> {
        if password.is_empty() {
            return Err(AccountError::Invalid(
                "the password must not be empty".into(),
            ));
        }
        sasl::account_credentials(password, self.inner.ctx.config.auth.scram_iterations)
            .map_err(|e| AccountError::Invalid(format!("password not acceptable: {e}")))
    }

    /// Creates an account with `password` (kept as SCRAM keys only).
    pub async fn register(
        &self,
        user: &str,
        host: &str,
        password: &str,
    ) -> Result<(), AccountError> {
        let creds = self.credentials(password)?;
        self.register_with_credentials(user, host, creds).await
    }

    /// Creates an account from SCRAM credentials made beforehand (with
    /// [`sasl::account_credentials`] and the configured iteration count):
    /// for bulk provisioning, where deriving the keys (thousands of hash
    /// iterations) per account would dominate. Accounts given the same
    /// credentials share a salt, which a load test may accept and real
    /// accounts should not.
    pub async fn register_with_credentials(
        &self,
        user: &str,
        host: &str,
        creds: Vec<sasl::ScramCredential>,
    ) -> Result<(), AccountError> {
        let (user, host) = self.check_account(user, host)?;
        match self
            .inner
            .ctx
            .backend
            .create_user(&host, &user, creds)
            .await
        {
            Ok(()) => {}
            Err(BackendError::UserExists(_)) => {
                return Err(AccountError::UserExists(format!("{user}@{host}")));
            }
            Err(e) => return Err(AccountError::Failed(e.to_string())),
        }
        let _ = self
            .hooks()
            .run(
                &REGISTER_USER,
                Scope::Host(&host),
                Account {
                    user,
                    host: host.clone(),
                },
            )
            .await;
        Ok(())
    }

    /// Removes an account and closes its sessions.
    pub async fn unregister(&self, user: &str, host: &str) -> Result<(), AccountError> {
        let (user, host) = self.check_account(user, host)?;
        match self.inner.ctx.backend.credentials(&host, &user).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(AccountError::NoSuchUser(format!("{user}@{host}"))),
            Err(e) => return Err(AccountError::Failed(e.to_string())),
        }
        // Sessions first, then the modules (which still see the user's
        // data: the roster module tells contacts), then the data itself.
        self.kick(&format!("{user}@{host}"), "Account removed")
            .await?;
        let _ = self
            .hooks()
            .run(
                &REMOVE_USER,
                Scope::Host(&host),
                Account {
                    user: user.clone(),
                    host: host.clone(),
                },
            )
            .await;
        match self.inner.ctx.backend.remove_user(&host, &user).await {
            Ok(()) => Ok(()),
            Err(BackendError::NoSuchUser(_)) => {
                Err(AccountError::NoSuchUser(format!("{user}@{host}")))
            }
            Err(e) => Err(AccountError::Failed(e.to_string())),
        }
    }

    /// Sets a new password.
    pub async fn change_password(
        &self,
        user: &str,
        host: &str,
        password: &str,
    ) -> Result<(), AccountError> {
        let (user, host) = self.check_account(user, host)?;
        let creds = self.credentials(password)?;
        match self
            .inner
            .ctx
            .backend
            .set_credentials(&host, &user, creds)
            .await
        {
            Ok(()) => Ok(()),
            Err(BackendError::NoSuchUser(_)) => {
                Err(AccountError::NoSuchUser(format!("{user}@{host}")))
            }
            Err(e) => Err(AccountError::Failed(e.to_string())),
        }
    }

    /// Account names of `host`.
    pub async fn users(&self, host: &str) -> Result<Vec<String>, AccountError> {
        let (_, host) = self.check_account("x", host)?;
        self.inner
            .ctx
            .backend
            .users(&host)
            .await
            .map_err(|e| AccountError::Failed(e.to_string()))
    }

    /// Full JIDs of this node's sessions, sorted.
    pub fn connected_users(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .ctx
            .sm
            .local_jids()
            .into_iter()
            .map(|j| j.to_string())
            .collect();
        v.sort();
        v
    }

    /// Closes the session of a full JID, or every session of a bare JID,
    /// with the stream error `policy-violation` and `reason`; returns how
    /// many.
    pub async fn kick(&self, jid: &str, reason: &str) -> Result<usize, AccountError> {
        let target = crate::jid::parse(jid)
            .map_err(|_| AccountError::Invalid(format!("`{jid}` is not a JID")))?;
        let mut n = 0;
        for (_, s) in self.inner.ctx.sm.local_sessions() {
            let hit = match target.try_as_full() {
                Ok(f) => s.jid == *f,
                Err(b) => s.jid.to_bare() == *b,
            };
            if hit {
                let _ = s.actor.cast(C2sMsg::Kick {
                    condition: StreamErrorCondition::PolicyViolation,
                    text: Some(reason.to_owned()),
                });
                n += 1;
            }
        }
        // Sessions of the other nodes: through their delivery shards.
        if let (Some(c), Some(user)) = (&self.inner.cluster, target.node()) {
            let sm = &self.inner.ctx.sm;
            for r in sm.sessions_of(target.domain().as_str(), user.as_str()) {
                let hit = r.node != sm.node()
                    && target
                        .resource()
                        .is_none_or(|res| res.as_str() == r.resource);
                if hit {
                    c.link().kick_remote(&r, false, reason);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Named counters: users per host, sessions, uptime, traffic.
    pub async fn stats(&self) -> Vec<(String, u64)> {
        let ctx = &self.inner.ctx;
        let mut out = Vec::new();
        let mut total = 0u64;
        for host in &ctx.config.hosts {
            let n = ctx.backend.users(host).await.map_or(0, |u| u.len() as u64);
            total += n;
            out.push((format!("registered_users.{host}"), n));
        }
        out.push(("registered_users".into(), total));
        out.push(("online_sessions".into(), ctx.sm.local_count() as u64));
        out.push(("cluster_sessions".into(), ctx.sm.count() as u64));
        out.push(("uptime_seconds".into(), ctx.started.elapsed().as_secs()));
        let r = ctx.router.stats();
        out.push(("stanzas_routed".into(), r.routed.load(Ordering::Relaxed)));
        out.push(("stanzas_bounced".into(), r.bounced.load(Ordering::Relaxed)));
        out.push((
            "stanzas_filtered".into(),
            r.filtered.load(Ordering::Relaxed),
        ));
        out.push((
            "sessions_overflowed".into(),
            r.overflowed.load(Ordering::Relaxed),
        ));
        out.push(("logins".into(), ctx.stats.logins.load(Ordering::Relaxed)));
        out.push((
            "auth_failures".into(),
            ctx.stats.auth_failures.load(Ordering::Relaxed),
        ));
        out.push((
            "connections_accepted".into(),
            ctx.stats.connections.load(Ordering::Relaxed),
        ));
        out.push((
            "connections_refused".into(),
            ctx.stats.refused.load(Ordering::Relaxed),
        ));
        out
    }

    /// One line: node, state, version, hosts (and, in a cluster, the
    /// other nodes up).
    pub fn status(&self) -> String {
        let ctx = &self.inner.ctx;
        let mut line = format!(
            "node {} is started; beamline {}; hosts: {}; {} session(s)",
            ctx.node,
            env!("CARGO_PKG_VERSION"),
            ctx.config.hosts.join(", "),
            ctx.sm.local_count()
        );
        if let Some(c) = &self.inner.cluster {
            let mut peers = c.node().members();
            peers.sort();
            line.push_str(&format!("; cluster peers up: [{}]", peers.join(", ")));
        }
        line
    }

    /// Stops the server: listeners first, then every session (closed with
    /// `system-shutdown`), then the rest; flushes the disc log. Waits at
    /// most `timeout` for the tree. A second call does nothing.
    pub async fn stop(&self, timeout: Duration) -> Result<(), ServerError> {
        let mut stopped = self.inner.stopped.lock().await;
        if *stopped {
            return Ok(());
        }
        *stopped = true;
        let r = self
            .inner
            .root
            .shutdown(Some(timeout))
            .await
            .map_err(|e| ServerError::Start(format!("shutting down: {e}")));
        if let Some(c) = &self.inner.cluster {
            c.leave().await;
        }
        if let Some(d) = &self.inner.durable {
            d.sync()
                .await
                .map_err(|e| ServerError::Storage(format!("flushing the disc log: {e}")))?;
        }
        tracing::info!(node = %self.inner.ctx.node, "server stopped");
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_access_rules_match_on_the_peer_address() {
        let config = Config::from_str(
            r#"
            [acl.local]
            ips = ["127.0.0.0/8"]
            [acl.blocked]
            ips = ["127.0.0.2"]
            [access_rules]
            c2s = [{ deny = "blocked" }, { allow = "local" }]
            "#,
            "test.toml",
        )
        .expect("valid config");
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let access = Access::new(Arc::new(config));
        assert!(ip_allowed(&access, None, ip("10.1.1.1")));
        assert!(ip_allowed(&access, Some("c2s"), ip("127.0.0.1")));
        assert!(!ip_allowed(&access, Some("c2s"), ip("127.0.0.2")));
        // No step matches: denied.
        assert!(!ip_allowed(&access, Some("c2s"), ip("10.1.1.1")));
    }
}
