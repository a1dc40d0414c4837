//! Child specifications: what a supervisor needs to know to start, restart
//! and stop one child (OTP's `child_spec()`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, SpawnErr};

/// When a child that exited is started again (OTP's `restart` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always restarted, whatever the exit reason.
    Permanent,
    /// Restarted only after an abnormal exit (a panic, a handler error, a
    /// kill, or a stop with a reason other than `normal` / `shutdown`).
    Transient,
    /// Never restarted; removed from the supervisor once it exits.
    Temporary,
}

/// How a supervisor stops a child (OTP's `shutdown` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// Ask the child to stop, wait up to this long for it to finish its
    /// current message and `post_stop`, then kill it.
    Timeout(Duration),
    /// Ask the child to stop and wait as long as it takes. Meant for children
    /// that are supervisors themselves and stop their own children first.
    Infinity,
    /// Kill the child at once: its current handler is cancelled and
    /// `post_stop` does not run.
    BrutalKill,
}

/// Whether a child is a worker or a supervisor (OTP's `type` key). It only
/// changes the defaults and what introspection reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    /// A plain actor.
    Worker,
    /// A supervisor with children of its own.
    Supervisor,
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The actor's `pre_start` returned an error or panicked, or its name was
    /// taken.
    #[error("child {id:?} failed to start: {source}")]
    Spawn {
        /// The child's id in its supervisor.
        id: String,
        /// What ractor reported.
        #[source]
        source: SpawnErr,
    },
    /// A dynamic supervisor is at its `max_children` limit.
    #[error("supervisor is at its limit of {0} children")]
    MaxChildren(usize),
    /// A static supervisor already has a child with this id.
    #[error("a child with id {0:?} already exists")]
    AlreadyPresent(String),
    /// The supervisor could not be reached (it stopped, or did not answer).
    #[error("supervisor unreachable: {0}")]
    Unreachable(String),
    /// Starting the children of a new supervisor failed; the children that
    /// had started were stopped again.
    #[error("supervisor failed to start its children: {0}")]
    Children(Box<StartError>),
}

/// The function that starts a child. It is given the supervisor's cell and
/// must spawn the child *linked* to it (`Actor::spawn_linked`), so that the
/// supervisor hears when the child exits.
pub type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// Everything a supervisor needs to run one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique id among the supervisor's children; used by introspection and
    /// by `terminate_child` / `restart_child`.
    pub id: String,
    /// Starts (and restarts) the child.
    pub start: StartFn,
    /// When to restart. Default: [`Restart::Permanent`].
    pub restart: Restart,
    /// How to stop. Default: 5 s then kill for workers, `Infinity` for
    /// supervisors.
    pub shutdown: Shutdown,
    /// Worker or supervisor. Default: [`ChildKind::Worker`].
    pub kind: ChildKind,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Shutdown timeout given to workers unless the spec says otherwise
/// (OTP's default of 5000 ms).
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(5);

impl ChildSpec {
    /// A permanent worker started by `start`, which receives the supervisor's
    /// cell and must spawn the child linked to it.
    pub fn new<F, Fut>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        ChildSpec {
            id: id.into(),
            start: Arc::new(move |sup| Box::pin(start(sup))),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(DEFAULT_WORKER_SHUTDOWN),
            kind: ChildKind::Worker,
        }
    }

    /// A permanent, unnamed worker running `actor` with `args`; both are
    /// cloned for every (re)start.
    pub fn from_actor<A>(id: impl Into<String>, actor: A, args: A::Arguments) -> Self
    where
        A: Actor + Clone,
        A::Arguments: Clone + Sync,
    {
        ChildSpec::new(id, move |sup| {
            let actor = actor.clone();
            let args = args.clone();
            async move {
                let (actor_ref, _) = Actor::spawn_linked(None, actor, args, sup).await?;
                Ok(actor_ref.get_cell())
            }
        })
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown behaviour.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Marks the child as a supervisor, which also sets its shutdown to
    /// [`Shutdown::Infinity`] (a supervisor needs time to stop its own tree).
    pub fn supervisor(mut self) -> Self {
        self.kind = ChildKind::Supervisor;
        self.shutdown = Shutdown::Infinity;
        self
    }

    pub(crate) async fn start_linked(
        &self,
        supervisor: ActorCell,
    ) -> Result<ActorCell, StartError> {
        (self.start)(supervisor)
            .await
            .map_err(|source| StartError::Spawn {
                id: self.id.clone(),
                source,
            })
    }
}

/// Restart intensity: at most `max_restarts` within `period` (OTP's
/// `intensity` and `period`). One more restart than that makes the
/// supervisor stop all its children and fail, so that its own supervisor
/// sees the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// OTP's default: 1 restart in 5 seconds.
    fn default() -> Self {
        Intensity {
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }
}

/// Optional delay before a restart, doubling with each restart still inside
/// the intensity window, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart in a window.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
}

impl Backoff {
    /// Delay before a restart when `recent` restarts already happened in the
    /// current window.
    pub fn delay(&self, recent: usize) -> Duration {
        let factor = 1u32.checked_shl(recent.min(16) as u32).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}
