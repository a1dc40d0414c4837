//! The static supervisor: a fixed, ordered list of children and a restart
//! strategy (OTP's `one_for_one`, `one_for_all`, `rest_for_one`).

use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, Message, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::sync::watch;

use crate::exit::{RestartWindow, exit_of, shutdown_child};
use crate::handle::{ChildHandle, ChildSlot};
use crate::spec::{Backoff, ChildKind, ChildSpec, Intensity, Restart, StartError};

/// Which children are restarted when one exits and must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// All children: the others are stopped (in reverse order), then all are
    /// started again in order.
    OneForAll,
    /// The child that exited and every child after it in the list: those
    /// after it are stopped in reverse order, then all of them are started
    /// again in order.
    RestForOne,
}

/// How long introspection and control calls wait for the supervisor.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything needed to start a [`Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity (default: 1 restart in 5 s, as OTP).
    pub intensity: Intensity,
    /// Delay between restarts; `None` (the default) restarts at once.
    pub backoff: Option<Backoff>,
    /// Children, started in this order and stopped in the reverse order.
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A spec with `strategy`, OTP's default intensity, no backoff and the
    /// given children.
    pub fn new(strategy: Strategy, children: Vec<ChildSpec>) -> Self {
        SupervisorSpec {
            strategy,
            intensity: Intensity::default(),
            backoff: None,
            children,
        }
    }

    /// Sets the restart intensity: at most `max_restarts` in `period`.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Sets a backoff between restarts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Turns this spec into a child spec, so a supervisor can be a child of
    /// another one (kind supervisor, shutdown infinity, permanent).
    pub fn into_child_spec(self, id: impl Into<String>) -> ChildSpec {
        ChildSpec::new(id, move |parent| {
            let spec = self.clone();
            async move {
                let (sup, _) = Actor::spawn_linked(None, Supervisor, spec, parent).await?;
                Ok(sup.get_cell())
            }
        })
        .supervisor()
    }
}

/// What introspection reports of one child (OTP's `which_children`).
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// The child's id.
    pub id: String,
    /// Its running actor, or `None` while it is down.
    pub cell: Option<ActorCell>,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its restart type.
    pub restart: Restart,
}

/// Counts of a supervisor's children (OTP's `count_children`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildCounts {
    /// Child specs held, running or not.
    pub specs: usize,
    /// Children running now.
    pub active: usize,
    /// Specs of kind supervisor.
    pub supervisors: usize,
    /// Specs of kind worker.
    pub workers: usize,
}

/// Errors of supervisor control calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// No child has this id (or actor).
    #[error("no such child: {0}")]
    NotFound(String),
    /// The child is running, so it cannot be deleted or restarted.
    #[error("child {0:?} is running")]
    Running(String),
    /// The child could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The supervisor did not answer (stopped, or timed out).
    #[error("supervisor unreachable: {0}")]
    Unreachable(String),
}

/// Messages a [`Supervisor`] handles. Use [`SupervisorRef`] rather than
/// sending these by hand.
pub enum SupervisorMsg {
    /// `which_children`.
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
    /// `count_children`.
    CountChildren(RpcReplyPort<ChildCounts>),
    /// The handle of the child with this id.
    Handle(String, RpcReplyPort<Option<ChildHandle>>),
    /// Adds and starts a child at the end of the list.
    StartChild(ChildSpec, RpcReplyPort<Result<ChildHandle, StartError>>),
    /// Stops a child; its spec stays (unless temporary) until deleted.
    TerminateChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// Starts a stopped child again.
    RestartChild(String, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Removes the spec of a stopped child.
    DeleteChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// A backoff delay ran out (internal).
    #[doc(hidden)]
    DelayedRestart(Vec<String>, u64),
}

impl Message for SupervisorMsg {}

/// The supervisor actor. Its arguments are a [`SupervisorSpec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    tx: watch::Sender<ChildSlot>,
    handle: ChildHandle,
    /// Waiting out a backoff before its restart.
    pending: bool,
}

impl Child {
    fn new(spec: ChildSpec) -> Child {
        let (tx, handle) = ChildHandle::new(spec.id.clone());
        Child {
            spec,
            cell: None,
            tx,
            handle,
            pending: false,
        }
    }

    fn set_running(&mut self, cell: ActorCell) {
        self.cell = Some(cell.clone());
        self.pending = false;
        self.tx.send_modify(|s| {
            s.cell = Some(cell);
            s.generation += 1;
        });
    }

    fn set_down(&mut self) -> Option<ActorCell> {
        self.tx.send_modify(|s| s.cell = None);
        self.cell.take()
    }

    fn close(&mut self) {
        self.cell = None;
        self.tx.send_modify(|s| {
            s.cell = None;
            s.closed = true;
        });
    }

    fn is_running(&self) -> bool {
        self.cell
            .as_ref()
            .is_some_and(|c| c.get_status() < ActorStatus::Stopping)
    }
}

/// A running supervisor's state.
pub struct SupervisorState {
    strategy: Strategy,
    intensity: Intensity,
    backoff: Option<Backoff>,
    children: Vec<Child>,
    window: RestartWindow,
    /// Bumped whenever pending backoff restarts become stale.
    epoch: u64,
}

impl SupervisorState {
    fn index(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    fn index_of_cell(&self, cell: &ActorCell) -> Option<usize> {
        let id = cell.get_id();
        self.children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|x| x.get_id() == id))
    }

    /// Stops the children at `indices` (given in start order) in reverse
    /// order, each with its own shutdown.
    async fn stop_children(&mut self, indices: &[usize]) {
        for &i in indices.iter().rev() {
            let Some(child) = self.children.get_mut(i) else {
                continue;
            };
            child.pending = false;
            if let Some(cell) = child.set_down() {
                shutdown_child(&cell, child.spec.shutdown).await;
            }
        }
    }

    async fn stop_all(&mut self) {
        let all: Vec<usize> = (0..self.children.len()).collect();
        self.stop_children(&all).await;
        for c in &mut self.children {
            c.close();
        }
        self.epoch += 1;
    }

    /// Starts the children with these ids in order. A start that fails
    /// counts as a restart and is retried (or delayed by the backoff) until
    /// the intensity is exceeded, which is returned as an error.
    async fn start_ids(
        &mut self,
        myself: &ActorCell,
        ids: Vec<String>,
    ) -> Result<(), ActorProcessingErr> {
        let mut queue = std::collections::VecDeque::from(ids);
        while let Some(id) = queue.pop_front() {
            let Some(i) = self.index(&id) else { continue };
            if self.children[i].is_running() {
                continue;
            }
            match self.children[i].spec.start_linked(myself.clone()).await {
                Ok(cell) => self.children[i].set_running(cell),
                Err(e) => {
                    tracing::error!(child = %id, error = %e, "restart failed");
                    queue.push_front(id);
                    if !self.window.allow(&self.intensity) {
                        return Err(self.give_up().await);
                    }
                    if let Some(b) = self.backoff {
                        self.schedule(myself, queue.into_iter().collect(), b);
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    fn schedule(&mut self, myself: &ActorCell, ids: Vec<String>, backoff: Backoff) {
        let delay = backoff.delay(self.window.recent());
        for id in &ids {
            if let Some(i) = self.index(id) {
                self.children[i].pending = true;
            }
        }
        let epoch = self.epoch;
        let me: ActorRef<SupervisorMsg> = myself.clone().into();
        tracing::debug!(?ids, ?delay, "restart delayed by backoff");
        me.send_after(delay, move || SupervisorMsg::DelayedRestart(ids, epoch));
    }

    async fn give_up(&mut self) -> ActorProcessingErr {
        let msg = format!(
            "reached max restart intensity ({} restarts in {:?}); shutting down",
            self.intensity.max_restarts, self.intensity.period
        );
        tracing::error!("{msg}");
        self.stop_all().await;
        msg.into()
    }

    /// Child `idx` exited and must be restarted: apply the strategy.
    async fn restart(&mut self, myself: &ActorCell, idx: usize) -> Result<(), ActorProcessingErr> {
        if !self.window.allow(&self.intensity) {
            return Err(self.give_up().await);
        }
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![idx],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (idx..self.children.len()).collect(),
        };
        let siblings: Vec<usize> = group.iter().copied().filter(|&i| i != idx).collect();
        self.stop_children(&siblings).await;
        // Siblings that are temporary are not restarted, even though they
        // only stopped because of the strategy (as in OTP).
        let ids: Vec<String> = group
            .iter()
            .filter(|&&i| i == idx || self.children[i].spec.restart != Restart::Temporary)
            .map(|&i| self.children[i].spec.id.clone())
            .collect();
        let temporaries: Vec<String> = siblings
            .iter()
            .filter(|&&i| self.children[i].spec.restart == Restart::Temporary)
            .map(|&i| self.children[i].spec.id.clone())
            .collect();
        for id in temporaries {
            self.remove(&id);
        }
        match self.backoff {
            Some(b) => {
                self.schedule(myself, ids, b);
                Ok(())
            }
            None => self.start_ids(myself, ids).await,
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(i) = self.index(id) {
            let mut child = self.children.remove(i);
            child.close();
        }
    }

    fn counts(&self) -> ChildCounts {
        let supervisors = self
            .children
            .iter()
            .filter(|c| c.spec.kind == ChildKind::Supervisor)
            .count();
        ChildCounts {
            specs: self.children.len(),
            active: self.children.iter().filter(|c| c.is_running()).count(),
            supervisors,
            workers: self.children.len() - supervisors,
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        spec: SupervisorSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            strategy: spec.strategy,
            intensity: spec.intensity,
            backoff: spec.backoff,
            children: Vec::with_capacity(spec.children.len()),
            window: RestartWindow::default(),
            epoch: 0,
        };
        for child_spec in spec.children {
            if state.index(&child_spec.id).is_some() {
                let err = StartError::AlreadyPresent(child_spec.id);
                state.stop_all().await;
                return Err(Box::new(StartError::Children(Box::new(err))));
            }
            let mut child = Child::new(child_spec);
            match child.spec.start_linked(myself.get_cell()).await {
                Ok(cell) => child.set_running(cell),
                Err(e) => {
                    state.stop_all().await;
                    return Err(Box::new(StartError::Children(Box::new(e))));
                }
            }
            state.children.push(child);
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_all().await;
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
            SupervisorMsg::WhichChildren(reply) => {
                let info = state
                    .children
                    .iter()
                    .map(|c| ChildInfo {
                        id: c.spec.id.clone(),
                        cell: c.cell.clone().filter(|_| c.is_running()),
                        kind: c.spec.kind,
                        restart: c.spec.restart,
                    })
                    .collect();
                let _ = reply.send(info);
            }
            SupervisorMsg::CountChildren(reply) => {
                let _ = reply.send(state.counts());
            }
            SupervisorMsg::Handle(id, reply) => {
                let _ = reply.send(state.index(&id).map(|i| state.children[i].handle.clone()));
            }
            SupervisorMsg::StartChild(spec, reply) => {
                if state.index(&spec.id).is_some() {
                    let _ = reply.send(Err(StartError::AlreadyPresent(spec.id)));
                    return Ok(());
                }
                let mut child = Child::new(spec);
                let result = match child.spec.start_linked(me).await {
                    Ok(cell) => {
                        child.set_running(cell);
                        let handle = child.handle.clone();
                        state.children.push(child);
                        Ok(handle)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let result = match state.index(&id) {
                    None => Err(SupervisorError::NotFound(id)),
                    Some(i) => {
                        state.stop_children(&[i]).await;
                        if state.children[i].spec.restart == Restart::Temporary {
                            state.remove(&id);
                        }
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let result = match state.index(&id) {
                    None => Err(SupervisorError::NotFound(id)),
                    Some(i) if state.children[i].is_running() => Err(SupervisorError::Running(id)),
                    Some(i) => match state.children[i].spec.start_linked(me).await {
                        Ok(cell) => {
                            state.children[i].set_running(cell.clone());
                            Ok(cell)
                        }
                        Err(e) => Err(e.into()),
                    },
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let result = match state.index(&id) {
                    None => Err(SupervisorError::NotFound(id)),
                    Some(i) if state.children[i].is_running() || state.children[i].pending => {
                        Err(SupervisorError::Running(id))
                    }
                    Some(_) => {
                        state.remove(&id);
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::DelayedRestart(ids, epoch) => {
                if epoch == state.epoch {
                    let ids = ids
                        .into_iter()
                        .filter(|id| state.index(id).is_some_and(|i| state.children[i].pending))
                        .collect();
                    state.start_ids(&me, ids).await?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, exit)) = exit_of(&evt) else {
            return Ok(());
        };
        // Events from children we stopped on purpose, or from an earlier
        // incarnation, no longer match a current child: ignore them.
        let Some(idx) = state.index_of_cell(&cell) else {
            return Ok(());
        };
        state.children[idx].set_down();
        let spec = &state.children[idx].spec;
        if !exit.restarts(spec.restart) {
            tracing::debug!(child = %spec.id, ?exit, "child exited; not restarted");
            if spec.restart == Restart::Temporary {
                let id = spec.id.clone();
                state.remove(&id);
            }
            return Ok(());
        }
        tracing::warn!(child = %spec.id, ?exit, "child exited; restarting");
        state.restart(&myself.get_cell(), idx).await
    }
}

/// A typed handle to a running [`Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorRef {
    actor: ActorRef<SupervisorMsg>,
}

fn spawn_error(e: SpawnErr) -> StartError {
    match e {
        SpawnErr::StartupFailed(inner) => match inner.downcast::<StartError>() {
            Ok(start) => *start,
            Err(other) => StartError::Spawn {
                id: "supervisor".into(),
                source: SpawnErr::StartupFailed(other),
            },
        },
        other => StartError::Spawn {
            id: "supervisor".into(),
            source: other,
        },
    }
}

impl Supervisor {
    /// Starts a top-level supervisor (optionally registered under `name`)
    /// and all its children in order. If a child fails to start, those
    /// already started are stopped and the error is returned.
    pub async fn start(
        name: Option<String>,
        spec: SupervisorSpec,
    ) -> Result<(SupervisorRef, JoinHandle<()>), StartError> {
        let (actor, join) = Actor::spawn(name, Supervisor, spec)
            .await
            .map_err(spawn_error)?;
        Ok((SupervisorRef { actor }, join))
    }

    /// Starts a supervisor linked to `parent`, which is told when it fails.
    pub async fn start_linked(
        name: Option<String>,
        spec: SupervisorSpec,
        parent: ActorCell,
    ) -> Result<SupervisorRef, StartError> {
        let (actor, _) = Actor::spawn_linked(name, Supervisor, spec, parent)
            .await
            .map_err(spawn_error)?;
        Ok(SupervisorRef { actor })
    }
}

/// Sends a request to an actor and waits up to [`CALL_TIMEOUT`] for the
/// reply; any failure to get one becomes a string.
pub(crate) async fn ask<M: Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, String> {
    match actor.call(msg, Some(CALL_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
        Ok(ractor::rpc::CallResult::Timeout) => Err("timed out".into()),
        Ok(ractor::rpc::CallResult::SenderError) => Err("no reply".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl SupervisorRef {
    /// Wraps a reference to an actor known to be a [`Supervisor`].
    pub fn from_ref(actor: ActorRef<SupervisorMsg>) -> Self {
        SupervisorRef { actor }
    }

    /// The underlying actor reference.
    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.actor
    }

    /// The supervisor's cell (to link, monitor or stop it).
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Every child in start order, with its current actor if running.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        ask(&self.actor, SupervisorMsg::WhichChildren)
            .await
            .map_err(SupervisorError::Unreachable)
    }

    /// Counts of specs, running children, supervisors and workers.
    pub async fn count_children(&self) -> Result<ChildCounts, SupervisorError> {
        ask(&self.actor, SupervisorMsg::CountChildren)
            .await
            .map_err(SupervisorError::Unreachable)
    }

    /// A handle that follows the child `id` across restarts.
    pub async fn child(&self, id: &str) -> Result<ChildHandle, SupervisorError> {
        let key = id.to_string();
        ask(&self.actor, |r| SupervisorMsg::Handle(key, r))
            .await
            .map_err(SupervisorError::Unreachable)?
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))
    }

    /// Adds `spec` at the end of the child list and starts it.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<ChildHandle, StartError> {
        ask(&self.actor, |r| SupervisorMsg::StartChild(spec, r))
            .await
            .map_err(StartError::Unreachable)?
    }

    /// Stops child `id` (its spec stays unless it is temporary).
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        ask(&self.actor, |r| SupervisorMsg::TerminateChild(id, r))
            .await
            .map_err(SupervisorError::Unreachable)?
    }

    /// Starts the stopped child `id` again.
    pub async fn restart_child(&self, id: &str) -> Result<ActorCell, SupervisorError> {
        let id = id.to_string();
        ask(&self.actor, |r| SupervisorMsg::RestartChild(id, r))
            .await
            .map_err(SupervisorError::Unreachable)?
    }

    /// Removes the spec of the stopped child `id`.
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        ask(&self.actor, |r| SupervisorMsg::DeleteChild(id, r))
            .await
            .map_err(SupervisorError::Unreachable)?
    }

    /// Stops the supervisor: its children stop in reverse start order, each
    /// with its shutdown setting, then the supervisor exits.
    pub async fn shutdown(&self, timeout: Option<Duration>) -> Result<(), SupervisorError> {
        self.actor
            .stop_and_wait(Some(crate::exit::SHUTDOWN_REASON.into()), timeout)
            .await
            .map_err(|e| SupervisorError::Unreachable(e.to_string()))
    }
}
