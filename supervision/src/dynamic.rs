//! The dynamic supervisor: many children of one kind, added and removed at
//! runtime (OTP's `simple_one_for_one`, Elixir's `DynamicSupervisor`). The
//! XMPP server keeps one client session per child.

use std::collections::HashMap;

use futures::StreamExt;
use ractor::concurrency::JoinHandle;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, Message, RpcReplyPort,
    SupervisionEvent,
};
use tokio::sync::watch;

use crate::exit::{RestartWindow, exit_of, shutdown_child};
use crate::handle::{ChildHandle, ChildSlot};
use crate::spec::{Backoff, ChildKind, ChildSpec, Intensity, Restart, StartError};
use crate::supervisor::{ChildCounts, ChildInfo, SupervisorError, ask};

/// How many children are stopped at once when a dynamic supervisor shuts
/// down (they have no order among themselves, so they stop concurrently).
const SHUTDOWN_CONCURRENCY: usize = 1024;

/// Settings of a [`DynamicSupervisor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DynamicSpec {
    /// Restart intensity across all children (default: 1 in 5 s, as OTP).
    pub intensity: Intensity,
    /// Refuse `start_child` beyond this many children; `None` (the default)
    /// for no limit.
    pub max_children: Option<usize>,
    /// Delay before restarts; `None` (the default) restarts at once.
    pub backoff: Option<Backoff>,
}

/// Messages a [`DynamicSupervisor`] handles; use [`DynamicSupervisorRef`].
pub enum DynamicMsg {
    /// Starts a new child from `spec`.
    StartChild(ChildSpec, RpcReplyPort<Result<ChildHandle, StartError>>),
    /// Stops the child whose current actor has this id and forgets it.
    TerminateChild(ActorId, RpcReplyPort<Result<(), SupervisorError>>),
    /// `which_children`.
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
    /// `count_children`.
    CountChildren(RpcReplyPort<ChildCounts>),
    /// A backoff delay ran out (internal).
    #[doc(hidden)]
    DelayedRestart(u64),
}

impl Message for DynamicMsg {}

/// The dynamic supervisor actor; its arguments are a [`DynamicSpec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DynamicSupervisor;

struct DynChild {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    /// `None` for a temporary child once started: it is never restarted,
    /// so its handles need no updates (they see the actor stop through
    /// its status), and a dynamic supervisor of a million temporary
    /// children (client sessions) keeps no channel for each.
    tx: Option<watch::Sender<ChildSlot>>,
}

impl DynChild {
    fn set_running(&mut self, cell: ActorCell) {
        self.cell = Some(cell.clone());
        if let Some(tx) = &self.tx {
            tx.send_modify(|s| {
                s.cell = Some(cell);
                s.generation += 1;
            });
        }
        if self.spec.restart == Restart::Temporary {
            self.tx = None;
        }
    }

    fn close(&mut self) -> Option<ActorCell> {
        if let Some(tx) = &self.tx {
            tx.send_modify(|s| {
                s.cell = None;
                s.closed = true;
            });
        }
        self.cell.take()
    }
}

/// A running dynamic supervisor's state.
pub struct DynamicState {
    spec: DynamicSpec,
    children: HashMap<u64, DynChild>,
    by_actor: HashMap<ActorId, u64>,
    next_key: u64,
    window: RestartWindow,
}

impl DynamicState {
    async fn stop_all(&mut self) {
        self.by_actor.clear();
        let cells: Vec<(ActorCell, crate::Shutdown)> = self
            .children
            .drain()
            .filter_map(|(_, mut c)| c.close().map(|cell| (cell, c.spec.shutdown)))
            .collect();
        futures::stream::iter(cells)
            .for_each_concurrent(SHUTDOWN_CONCURRENCY, |(cell, shutdown)| async move {
                shutdown_child(&cell, shutdown).await;
            })
            .await;
    }

    async fn give_up(&mut self) -> ActorProcessingErr {
        let msg = format!(
            "reached max restart intensity ({} restarts in {:?}); shutting down",
            self.spec.intensity.max_restarts, self.spec.intensity.period
        );
        tracing::error!("{msg}");
        self.stop_all().await;
        msg.into()
    }

    /// Restarts child `key`, retrying failed starts until the intensity is
    /// exceeded (returned as an error) or a backoff defers the next try.
    async fn restart(&mut self, myself: &ActorCell, key: u64) -> Result<(), ActorProcessingErr> {
        loop {
            if !self.window.allow(&self.spec.intensity) {
                return Err(self.give_up().await);
            }
            if let Some(b) = self.spec.backoff {
                let delay = b.delay(self.window.recent());
                let me: ActorRef<DynamicMsg> = myself.clone().into();
                me.send_after(delay, move || DynamicMsg::DelayedRestart(key));
                return Ok(());
            }
            if self.try_start(myself, key).await {
                return Ok(());
            }
        }
    }

    /// One start attempt of an existing child; true when it runs.
    async fn try_start(&mut self, myself: &ActorCell, key: u64) -> bool {
        let Some(child) = self.children.get_mut(&key) else {
            return true;
        };
        match child.spec.start_linked(myself.clone()).await {
            Ok(cell) => {
                self.by_actor.insert(cell.get_id(), key);
                child.set_running(cell);
                true
            }
            Err(e) => {
                tracing::error!(child = %child.spec.id, error = %e, "restart failed");
                false
            }
        }
    }

    fn counts(&self) -> ChildCounts {
        let supervisors = self
            .children
            .values()
            .filter(|c| c.spec.kind == ChildKind::Supervisor)
            .count();
        ChildCounts {
            specs: self.children.len(),
            active: self.by_actor.len(),
            supervisors,
            workers: self.children.len() - supervisors,
        }
    }
}

impl Actor for DynamicSupervisor {
    type Msg = DynamicMsg;
    type State = DynamicState;
    type Arguments = DynamicSpec;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        spec: DynamicSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DynamicState {
            spec,
            children: HashMap::new(),
            by_actor: HashMap::new(),
            next_key: 0,
            window: RestartWindow::default(),
        })
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
        match msg {
            DynamicMsg::StartChild(spec, reply) => {
                if let Some(max) = state.spec.max_children
                    && state.children.len() >= max
                {
                    let _ = reply.send(Err(StartError::MaxChildren(max)));
                    return Ok(());
                }
                let result = match spec.start_linked(myself.get_cell()).await {
                    Ok(cell) => {
                        let key = state.next_key;
                        state.next_key += 1;
                        let (tx, handle) = ChildHandle::new(spec.id.clone());
                        let mut child = DynChild {
                            spec,
                            cell: None,
                            tx: Some(tx),
                        };
                        state.by_actor.insert(cell.get_id(), key);
                        child.set_running(cell);
                        state.children.insert(key, child);
                        Ok(handle)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            DynamicMsg::TerminateChild(id, reply) => {
                let result = match state.by_actor.remove(&id) {
                    None => Err(SupervisorError::NotFound(id.to_string())),
                    Some(key) => {
                        if let Some(mut child) = state.children.remove(&key)
                            && let Some(cell) = child.close()
                        {
                            shutdown_child(&cell, child.spec.shutdown).await;
                        }
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            DynamicMsg::WhichChildren(reply) => {
                let info = state
                    .children
                    .values()
                    .map(|c| ChildInfo {
                        id: c.spec.id.clone(),
                        cell: c
                            .cell
                            .clone()
                            .filter(|x| x.get_status() < ActorStatus::Stopping),
                        kind: c.spec.kind,
                        restart: c.spec.restart,
                    })
                    .collect();
                let _ = reply.send(info);
            }
            DynamicMsg::CountChildren(reply) => {
                let _ = reply.send(state.counts());
            }
            DynamicMsg::DelayedRestart(key) => {
                let running = state.children.get(&key).is_none_or(|c| c.cell.is_some());
                if !running && !state.try_start(&myself.get_cell(), key).await {
                    state.restart(&myself.get_cell(), key).await?;
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
        let Some(key) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        let Some(child) = state.children.get_mut(&key) else {
            return Ok(());
        };
        child.cell = None;
        if let Some(tx) = &child.tx {
            tx.send_modify(|s| s.cell = None);
        }
        if !exit.restarts(child.spec.restart) {
            // A temporary child, or a transient one that ended normally, is
            // done: forget it (a simple_one_for_one supervisor in OTP keeps
            // no spec for either).
            if let Some(mut c) = state.children.remove(&key) {
                c.close();
            }
            return Ok(());
        }
        tracing::warn!(child = %child.spec.id, ?exit, "child exited; restarting");
        state.restart(&myself.get_cell(), key).await
    }
}

/// A typed handle to a running [`DynamicSupervisor`].
#[derive(Debug, Clone)]
pub struct DynamicSupervisorRef {
    actor: ActorRef<DynamicMsg>,
}

impl DynamicSupervisor {
    /// Starts a top-level dynamic supervisor with no children.
    pub async fn start(
        name: Option<String>,
        spec: DynamicSpec,
    ) -> Result<(DynamicSupervisorRef, JoinHandle<()>), StartError> {
        let (actor, join) =
            Actor::spawn(name, DynamicSupervisor, spec)
                .await
                .map_err(|source| StartError::Spawn {
                    id: "dynamic_supervisor".into(),
                    source,
                })?;
        Ok((DynamicSupervisorRef { actor }, join))
    }

    /// A child spec that runs a dynamic supervisor under another supervisor.
    pub fn child_spec(id: impl Into<String>, spec: DynamicSpec) -> ChildSpec {
        ChildSpec::new(id, move |parent| async move {
            let (sup, _) = Actor::spawn_linked(None, DynamicSupervisor, spec, parent).await?;
            Ok(sup.get_cell())
        })
        .supervisor()
    }
}

impl DynamicSupervisorRef {
    /// Wraps a reference to an actor known to be a [`DynamicSupervisor`].
    pub fn from_ref(actor: ActorRef<DynamicMsg>) -> Self {
        DynamicSupervisorRef { actor }
    }

    /// The underlying actor reference.
    pub fn actor(&self) -> &ActorRef<DynamicMsg> {
        &self.actor
    }

    /// The supervisor's cell.
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Starts a child; its handle follows it across restarts.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<ChildHandle, StartError> {
        ask(&self.actor, |r| DynamicMsg::StartChild(spec, r))
            .await
            .map_err(StartError::Unreachable)?
    }

    /// Stops the child whose current actor is `child` and forgets it.
    pub async fn terminate_child(&self, child: ActorId) -> Result<(), SupervisorError> {
        ask(&self.actor, |r| DynamicMsg::TerminateChild(child, r))
            .await
            .map_err(SupervisorError::Unreachable)?
    }

    /// Every child (in no particular order).
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        ask(&self.actor, DynamicMsg::WhichChildren)
            .await
            .map_err(SupervisorError::Unreachable)
    }

    /// Counts of children.
    pub async fn count_children(&self) -> Result<ChildCounts, SupervisorError> {
        ask(&self.actor, DynamicMsg::CountChildren)
            .await
            .map_err(SupervisorError::Unreachable)
    }

    /// Stops the supervisor and all its children.
    pub async fn shutdown(
        &self,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), SupervisorError> {
        self.actor
            .stop_and_wait(Some(crate::exit::SHUTDOWN_REASON.into()), timeout)
            .await
            .map_err(|e| SupervisorError::Unreachable(e.to_string()))
    }
}
