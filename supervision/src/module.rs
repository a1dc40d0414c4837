//! Modules in the manner of ejabberd's `gen_mod`: a feature is a [`Module`]
//! that, started on a virtual host with options, runs as a supervised child
//! tree; the [`ModuleManager`] starts, reloads and stops modules per host at
//! runtime.
//!
//! What a module registers (hook subscriptions, IQ handlers, disco
//! features) must go away when it stops. Two mechanisms cover that:
//! registrations owned by an actor of the module's tree disappear when that
//! actor stops (hooks are actor subscriptions), and anything else is handed
//! to [`ModuleContext::on_stop`], which the manager runs after the tree has
//! stopped.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, Message, RpcReplyPort, SupervisionEvent,
};
use serde_json::{Map, Value};

use crate::spec::{ChildSpec, StartError};
use crate::supervisor::{Strategy, Supervisor, SupervisorRef, SupervisorSpec, ask};

/// A module's options: a JSON-like object (the config file's TOML table for
/// the module converts to it losslessly).
pub type ModuleOptions = Map<String, Value>;

/// What a module asks of the manager after [`Module::reload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The running tree took the new options itself; nothing to restart.
    Applied,
    /// Stop the tree and start it again with the new options.
    Restart,
}

/// Errors of the module manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// No module of that name was registered with the manager.
    #[error("unknown module {0:?}")]
    UnknownModule(String),
    /// The module already runs on this host.
    #[error("module {module:?} already runs on host {host:?}")]
    AlreadyRunning {
        /// Host.
        host: String,
        /// Module.
        module: String,
    },
    /// The module does not run on this host.
    #[error("module {module:?} does not run on host {host:?}")]
    NotRunning {
        /// Host.
        host: String,
        /// Module.
        module: String,
    },
    /// Another running module needs this one.
    #[error("module {module:?} is needed by running module {needed_by:?} on host {host:?}")]
    DependedOn {
        /// Host.
        host: String,
        /// The module asked to stop.
        module: String,
        /// A running module that depends on it.
        needed_by: String,
    },
    /// Dependencies form a cycle.
    #[error("dependency cycle: {0}")]
    DependencyCycle(String),
    /// An option the module does not declare in its defaults.
    #[error("module {module:?} has no option {option:?}")]
    UnknownOption {
        /// Module.
        module: String,
        /// The unknown key.
        option: String,
    },
    /// The module rejected its options.
    #[error("invalid options for module {module:?}: {reason}")]
    InvalidOptions {
        /// Module.
        module: String,
        /// Why, in the module's words.
        reason: String,
    },
    /// The module's child tree failed to start.
    #[error("module {module:?} failed to start: {source}")]
    Start {
        /// Module.
        module: String,
        /// The start error.
        #[source]
        source: StartError,
    },
    /// The module's reload failed; the old tree and options stay.
    #[error("module {module:?} failed to reload: {reason}")]
    Reload {
        /// Module.
        module: String,
        /// Why.
        reason: String,
    },
    /// The manager did not answer.
    #[error("module manager unreachable: {0}")]
    Unreachable(String),
}

type Cleanup = Box<dyn FnOnce() + Send>;

/// Given to a module when it starts on a host: the host, and a place to
/// leave cleanups that must run when the module stops.
#[derive(Clone)]
pub struct ModuleContext {
    host: Arc<str>,
    module: Arc<str>,
    cleanups: Arc<Mutex<Vec<Cleanup>>>,
}

impl fmt::Debug for ModuleContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleContext")
            .field("host", &self.host)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

impl ModuleContext {
    /// A context for `module` on `host` (the manager makes these; tests and
    /// embedders may too).
    pub fn new(host: &str, module: &str) -> Self {
        ModuleContext {
            host: host.into(),
            module: module.into(),
            cleanups: Arc::default(),
        }
    }

    /// The virtual host the module runs on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The module's name.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// Registers `f` to run once when the module stops (after its tree has
    /// stopped), e.g. to remove an IQ handler or a disco feature. Cleanups
    /// run in reverse order of registration.
    pub fn on_stop(&self, f: impl FnOnce() + Send + 'static) {
        self.cleanups.lock().push(Box::new(f));
    }

    fn run_cleanups(&self) {
        let cleanups = std::mem::take(&mut *self.cleanups.lock());
        for f in cleanups.into_iter().rev() {
            f();
        }
    }
}

/// A feature that runs per virtual host as a supervised child tree
/// (ejabberd's `gen_mod` behaviour).
pub trait Module: Send + Sync + 'static {
    /// Unique name, e.g. `"mod_roster"`.
    fn name(&self) -> &str;

    /// Modules that must run on the same host before this one starts.
    fn dependencies(&self) -> Vec<String> {
        Vec::new()
    }

    /// Every option the module takes, with its default. Options given at
    /// start are merged over these; a key not listed here is an error.
    fn default_options(&self) -> ModuleOptions {
        ModuleOptions::new()
    }

    /// Checks merged options before start or reload.
    fn validate_options(&self, _opts: &ModuleOptions) -> Result<(), String> {
        Ok(())
    }

    /// The module's child tree for `ctx.host()` with `opts` (already merged
    /// and validated). The manager starts it under the host's module
    /// supervisor and restarts it if it crashes.
    fn start(&self, ctx: &ModuleContext, opts: &ModuleOptions) -> Result<ChildSpec, String>;

    /// New options for a running module. The default asks for a restart;
    /// a module that can apply them in place (e.g. by messaging its tree)
    /// returns [`Reload::Applied`].
    fn reload(
        &self,
        _ctx: &ModuleContext,
        _old: &ModuleOptions,
        _new: &ModuleOptions,
        _tree: Option<ActorCell>,
    ) -> BoxFuture<'static, Result<Reload, String>> {
        Box::pin(async { Ok(Reload::Restart) })
    }

    /// Called after the module's tree stopped and before its cleanups run.
    fn stop(&self, _ctx: &ModuleContext) {}
}

/// How the manager supervises each host's modules: one_for_one, at most
/// this many restarts in [`HOST_RESTART_PERIOD`].
pub const HOST_MAX_RESTARTS: u32 = 10;
/// See [`HOST_MAX_RESTARTS`].
pub const HOST_RESTART_PERIOD: Duration = Duration::from_secs(10);

struct Running {
    opts: ModuleOptions,
    ctx: ModuleContext,
}

struct Host {
    sup: SupervisorRef,
    /// Running modules in start order (dependencies before dependents).
    running: Vec<(String, Running)>,
}

/// The module manager's state.
pub struct ManagerState {
    modules: HashMap<String, Arc<dyn Module>>,
    hosts: HashMap<String, Host>,
}

/// Messages of the [`ModuleManager`]; use [`ModuleManagerRef`].
pub enum ManagerMsg {
    /// Makes a module available for starting.
    Register(Arc<dyn Module>, RpcReplyPort<()>),
    /// Starts a module (and, first, its dependencies with their defaults).
    Start(
        String,
        String,
        ModuleOptions,
        RpcReplyPort<Result<(), ModuleError>>,
    ),
    /// Stops a module.
    Stop(String, String, RpcReplyPort<Result<(), ModuleError>>),
    /// Reloads a module with new options.
    Reload(
        String,
        String,
        ModuleOptions,
        RpcReplyPort<Result<(), ModuleError>>,
    ),
    /// The modules running on a host, in start order, with their options.
    Running(String, RpcReplyPort<Vec<(String, ModuleOptions)>>),
    /// Stops every module of a host, dependents first.
    StopHost(String, RpcReplyPort<()>),
}

impl Message for ManagerMsg {}

/// The module manager actor; its argument is the list of available modules.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModuleManager;

/// `given` merged over `module`'s defaults and validated, as the manager
/// does before a start or reload (an unknown key is
/// [`ModuleError::UnknownOption`], a refused value
/// [`ModuleError::InvalidOptions`]). For checking a configuration without
/// starting anything.
pub fn merge_options(
    module: &dyn Module,
    given: ModuleOptions,
) -> Result<ModuleOptions, ModuleError> {
    let mut opts = module.default_options();
    for (k, v) in given {
        if !opts.contains_key(&k) {
            return Err(ModuleError::UnknownOption {
                module: module.name().to_string(),
                option: k,
            });
        }
        opts.insert(k, v);
    }
    module
        .validate_options(&opts)
        .map_err(|reason| ModuleError::InvalidOptions {
            module: module.name().to_string(),
            reason,
        })?;
    Ok(opts)
}

impl ManagerState {
    fn module(&self, name: &str) -> Result<Arc<dyn Module>, ModuleError> {
        self.modules
            .get(name)
            .cloned()
            .ok_or_else(|| ModuleError::UnknownModule(name.to_string()))
    }

    fn is_running(&self, host: &str, name: &str) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| h.running.iter().any(|(n, _)| n == name))
    }

    /// Modules to start for `name`, dependencies first, skipping those that
    /// already run.
    fn start_order(&self, host: &str, name: &str) -> Result<Vec<String>, ModuleError> {
        fn visit(
            st: &ManagerState,
            host: &str,
            name: &str,
            path: &mut Vec<String>,
            done: &mut HashSet<String>,
            order: &mut Vec<String>,
        ) -> Result<(), ModuleError> {
            if done.contains(name) || st.is_running(host, name) {
                return Ok(());
            }
            if path.iter().any(|p| p == name) {
                path.push(name.to_string());
                return Err(ModuleError::DependencyCycle(path.join(" -> ")));
            }
            let module = st.module(name)?;
            path.push(name.to_string());
            for dep in module.dependencies() {
                visit(st, host, &dep, path, done, order)?;
            }
            path.pop();
            done.insert(name.to_string());
            order.push(name.to_string());
            Ok(())
        }
        let mut order = Vec::new();
        visit(
            self,
            host,
            name,
            &mut Vec::new(),
            &mut HashSet::new(),
            &mut order,
        )?;
        Ok(order)
    }

    async fn host_sup(
        &mut self,
        myself: &ActorCell,
        host: &str,
    ) -> Result<SupervisorRef, ModuleError> {
        if let Some(h) = self.hosts.get(host) {
            return Ok(h.sup.clone());
        }
        let spec = SupervisorSpec::new(Strategy::OneForOne, Vec::new())
            .intensity(HOST_MAX_RESTARTS, HOST_RESTART_PERIOD);
        let sup = Supervisor::start_linked(None, spec, myself.clone())
            .await
            .map_err(|source| ModuleError::Start {
                module: format!("<modules of {host}>"),
                source,
            })?;
        self.hosts.insert(
            host.to_string(),
            Host {
                sup: sup.clone(),
                running: Vec::new(),
            },
        );
        Ok(sup)
    }

    async fn start_one(
        &mut self,
        myself: &ActorCell,
        host: &str,
        module: Arc<dyn Module>,
        opts: ModuleOptions,
    ) -> Result<(), ModuleError> {
        let name = module.name().to_string();
        let ctx = ModuleContext::new(host, &name);
        let spec = module
            .start(&ctx, &opts)
            .map_err(|reason| ModuleError::InvalidOptions {
                module: name.clone(),
                reason,
            })?;
        let mut spec = spec;
        spec.id = name.clone();
        let sup = self.host_sup(myself, host).await?;
        if let Err(source) = sup.start_child(spec).await {
            module.stop(&ctx);
            ctx.run_cleanups();
            return Err(ModuleError::Start {
                module: name,
                source,
            });
        }
        if let Some(h) = self.hosts.get_mut(host) {
            h.running.push((name.clone(), Running { opts, ctx }));
        }
        tracing::info!(host, module = %name, "module started");
        Ok(())
    }

    async fn start(
        &mut self,
        myself: &ActorCell,
        host: &str,
        name: &str,
        opts: ModuleOptions,
    ) -> Result<(), ModuleError> {
        if self.is_running(host, name) {
            return Err(ModuleError::AlreadyRunning {
                host: host.to_string(),
                module: name.to_string(),
            });
        }
        let order = self.start_order(host, name)?;
        // Validate everything before starting anything.
        let mut plan = Vec::with_capacity(order.len());
        for m in &order {
            let module = self.module(m)?;
            let given = if m == name {
                opts.clone()
            } else {
                ModuleOptions::new()
            };
            let merged = merge_options(module.as_ref(), given)?;
            plan.push((module, merged));
        }
        for (module, merged) in plan {
            self.start_one(myself, host, module, merged).await?;
        }
        Ok(())
    }

    /// Stops one module's tree, then runs its stop callback and cleanups.
    async fn stop_one(&mut self, host: &str, name: &str) -> Result<(), ModuleError> {
        let not_running = || ModuleError::NotRunning {
            host: host.to_string(),
            module: name.to_string(),
        };
        let h = self.hosts.get_mut(host).ok_or_else(not_running)?;
        let pos = h
            .running
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(not_running)?;
        let (_, running) = h.running.remove(pos);
        let _ = h.sup.terminate_child(name).await;
        let _ = h.sup.delete_child(name).await;
        if let Some(module) = self.modules.get(name) {
            module.stop(&running.ctx);
        }
        running.ctx.run_cleanups();
        tracing::info!(host, module = %name, "module stopped");
        Ok(())
    }

    async fn stop(&mut self, host: &str, name: &str) -> Result<(), ModuleError> {
        if let Some(h) = self.hosts.get(host) {
            for (other, _) in &h.running {
                if other != name
                    && self
                        .modules
                        .get(other)
                        .is_some_and(|m| m.dependencies().iter().any(|d| d == name))
                {
                    return Err(ModuleError::DependedOn {
                        host: host.to_string(),
                        module: name.to_string(),
                        needed_by: other.clone(),
                    });
                }
            }
        }
        self.stop_one(host, name).await
    }

    async fn reload(
        &mut self,
        myself: &ActorCell,
        host: &str,
        name: &str,
        given: ModuleOptions,
    ) -> Result<(), ModuleError> {
        let module = self.module(name)?;
        let new = merge_options(module.as_ref(), given)?;
        let h = self
            .hosts
            .get(host)
            .ok_or_else(|| ModuleError::NotRunning {
                host: host.to_string(),
                module: name.to_string(),
            })?;
        let Some((_, running)) = h.running.iter().find(|(n, _)| n == name) else {
            return Err(ModuleError::NotRunning {
                host: host.to_string(),
                module: name.to_string(),
            });
        };
        let tree = h.sup.child(name).await.ok().and_then(|c| c.get());
        let outcome = module
            .reload(&running.ctx, &running.opts, &new, tree)
            .await
            .map_err(|reason| ModuleError::Reload {
                module: name.to_string(),
                reason,
            })?;
        match outcome {
            Reload::Applied => {
                if let Some(h) = self.hosts.get_mut(host)
                    && let Some((_, r)) = h.running.iter_mut().find(|(n, _)| n == name)
                {
                    r.opts = new;
                }
            }
            Reload::Restart => {
                // Keep the module's place in the start order, so that a
                // later stop_host still stops dependents first.
                let pos = self
                    .hosts
                    .get(host)
                    .and_then(|h| h.running.iter().position(|(n, _)| n == name));
                self.stop_one(host, name).await?;
                self.start_one(myself, host, module, new).await?;
                if let (Some(pos), Some(h)) = (pos, self.hosts.get_mut(host))
                    && let Some(entry) = h.running.pop()
                {
                    h.running.insert(pos.min(h.running.len()), entry);
                }
            }
        }
        tracing::info!(host, module = %name, ?outcome, "module reloaded");
        Ok(())
    }

    async fn stop_host(&mut self, host: &str) {
        let names: Vec<String> = self
            .hosts
            .get(host)
            .map(|h| h.running.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        for name in names.iter().rev() {
            let _ = self.stop_one(host, name).await;
        }
        if let Some(h) = self.hosts.remove(host) {
            let _ = h.sup.shutdown(None).await;
        }
    }
}

impl Actor for ModuleManager {
    type Msg = ManagerMsg;
    type State = ManagerState;
    type Arguments = Vec<Arc<dyn Module>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        modules: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ManagerState {
            modules: modules
                .into_iter()
                .map(|m| (m.name().to_string(), m))
                .collect(),
            hosts: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let hosts: Vec<String> = state.hosts.keys().cloned().collect();
        for host in hosts {
            state.stop_host(&host).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let me = myself.get_cell();
        match msg {
            ManagerMsg::Register(module, reply) => {
                state.modules.insert(module.name().to_string(), module);
                let _ = reply.send(());
            }
            ManagerMsg::Start(host, name, opts, reply) => {
                let _ = reply.send(state.start(&me, &host, &name, opts).await);
            }
            ManagerMsg::Stop(host, name, reply) => {
                let _ = reply.send(state.stop(&host, &name).await);
            }
            ManagerMsg::Reload(host, name, opts, reply) => {
                let _ = reply.send(state.reload(&me, &host, &name, opts).await);
            }
            ManagerMsg::Running(host, reply) => {
                let list = state
                    .hosts
                    .get(&host)
                    .map(|h| {
                        h.running
                            .iter()
                            .map(|(n, r)| (n.clone(), r.opts.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = reply.send(list);
            }
            ManagerMsg::StopHost(host, reply) => {
                state.stop_host(&host).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A host's module supervisor only exits on its own when its modules
        // crashed past the restart intensity: clean up after them, then fail
        // so that the manager's own supervisor decides what happens next.
        let Some((cell, exit)) = crate::exit::exit_of(&evt) else {
            return Ok(());
        };
        let id = cell.get_id();
        let Some(host) = state
            .hosts
            .iter()
            .find(|(_, h)| h.sup.cell().get_id() == id)
            .map(|(k, _)| k.clone())
        else {
            return Ok(());
        };
        if let Some(h) = state.hosts.remove(&host) {
            for (name, running) in h.running.into_iter().rev() {
                if let Some(m) = state.modules.get(&name) {
                    m.stop(&running.ctx);
                }
                running.ctx.run_cleanups();
            }
        }
        Err(format!("modules of host {host} failed: {exit:?}").into())
    }
}

/// A typed handle to a running [`ModuleManager`].
#[derive(Debug, Clone)]
pub struct ModuleManagerRef {
    actor: ActorRef<ManagerMsg>,
}

impl ModuleManager {
    /// Starts a manager that knows `modules` (more can be registered later).
    pub async fn start(
        name: Option<String>,
        modules: Vec<Arc<dyn Module>>,
    ) -> Result<ModuleManagerRef, StartError> {
        let (actor, _) = Actor::spawn(name, ModuleManager, modules)
            .await
            .map_err(|source| StartError::Spawn {
                id: "module_manager".into(),
                source,
            })?;
        Ok(ModuleManagerRef { actor })
    }

    /// A child spec that runs a module manager under a supervisor.
    pub fn child_spec(id: impl Into<String>, modules: Vec<Arc<dyn Module>>) -> ChildSpec {
        ChildSpec::new(id, move |parent| {
            let modules = modules.clone();
            async move {
                let (m, _) = Actor::spawn_linked(None, ModuleManager, modules, parent).await?;
                Ok(m.get_cell())
            }
        })
        .supervisor()
    }
}

impl ModuleManagerRef {
    /// Wraps a reference to a [`ModuleManager`] actor.
    pub fn from_ref(actor: ActorRef<ManagerMsg>) -> Self {
        ModuleManagerRef { actor }
    }

    /// The manager's cell.
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Makes `module` available for starting.
    pub async fn register(&self, module: Arc<dyn Module>) -> Result<(), ModuleError> {
        ask(&self.actor, |r| ManagerMsg::Register(module, r))
            .await
            .map_err(ModuleError::Unreachable)
    }

    /// Starts module `name` on `host` with `opts` merged over its defaults;
    /// dependencies not yet running start first with their defaults.
    pub async fn start_module(
        &self,
        host: &str,
        name: &str,
        opts: ModuleOptions,
    ) -> Result<(), ModuleError> {
        let (host, name) = (host.to_string(), name.to_string());
        ask(&self.actor, |r| ManagerMsg::Start(host, name, opts, r))
            .await
            .map_err(ModuleError::Unreachable)?
    }

    /// Stops module `name` on `host`; refused while a running module
    /// depends on it.
    pub async fn stop_module(&self, host: &str, name: &str) -> Result<(), ModuleError> {
        let (host, name) = (host.to_string(), name.to_string());
        ask(&self.actor, |r| ManagerMsg::Stop(host, name, r))
            .await
            .map_err(ModuleError::Unreachable)?
    }

    /// Gives module `name` on `host` new options.
    pub async fn reload_module(
        &self,
        host: &str,
        name: &str,
        opts: ModuleOptions,
    ) -> Result<(), ModuleError> {
        let (host, name) = (host.to_string(), name.to_string());
        ask(&self.actor, |r| ManagerMsg::Reload(host, name, opts, r))
            .await
            .map_err(ModuleError::Unreachable)?
    }

    /// Modules running on `host`, in start order, with their options.
    pub async fn running(&self, host: &str) -> Result<Vec<(String, ModuleOptions)>, ModuleError> {
        let host = host.to_string();
        ask(&self.actor, |r| ManagerMsg::Running(host, r))
            .await
            .map_err(ModuleError::Unreachable)
    }

    /// Stops every module on `host`, dependents before dependencies.
    pub async fn stop_host(&self, host: &str) -> Result<(), ModuleError> {
        let host = host.to_string();
        ask(&self.actor, |r| ManagerMsg::StopHost(host, r))
            .await
            .map_err(ModuleError::Unreachable)
    }
}
