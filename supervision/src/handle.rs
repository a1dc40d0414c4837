//! [`ChildHandle`]: a reference to "whatever actor currently fills this child
//! slot", that follows restarts.

use std::time::Duration;

use ractor::{ActorCell, ActorRef, ActorStatus, Message};
use tokio::sync::watch;

/// What a child slot holds at one moment.
#[derive(Debug, Clone, Default)]
pub struct ChildSlot {
    /// The running actor, or `None` while the child is down (exited, being
    /// restarted, waiting out a backoff, or removed).
    pub cell: Option<ActorCell>,
    /// How many times the slot has been (re)started; bumps on each start.
    pub generation: u64,
    /// True once the supervisor gave up on the slot for good (a temporary
    /// child exited, the child was deleted, or the supervisor stopped).
    pub closed: bool,
}

/// A handle to a supervised child that always resolves to its *current*
/// actor. Callers keep this instead of an `ActorRef`, so that after a
/// restart they reach the new actor rather than a dead one; while the child
/// is down, [`ChildHandle::get`] returns `None` instead of a stale reference.
#[derive(Debug, Clone)]
pub struct ChildHandle {
    id: String,
    rx: watch::Receiver<ChildSlot>,
}

/// Why [`ChildHandle::wait_running`] returned without an actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The child was not running when the timeout ran out.
    #[error("child {0:?} not running before the timeout")]
    Timeout(String),
    /// The supervisor will never start this child again.
    #[error("child {0:?} is gone for good")]
    Closed(String),
}

impl ChildHandle {
    pub(crate) fn new(id: String) -> (watch::Sender<ChildSlot>, ChildHandle) {
        let (tx, rx) = watch::channel(ChildSlot::default());
        (tx, ChildHandle { id, rx })
    }

    /// The child's id in its supervisor.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current actor, if one is running now.
    pub fn get(&self) -> Option<ActorCell> {
        let slot = self.rx.borrow();
        slot.cell
            .as_ref()
            .filter(|c| c.get_status() < ActorStatus::Stopping)
            .cloned()
    }

    /// The current actor as a typed reference, if one is running and it
    /// takes messages of type `M`.
    pub fn actor_ref<M: Message>(&self) -> Option<ActorRef<M>> {
        let cell = self.get()?;
        (cell.is_message_type_of::<M>() != Some(false)).then(|| cell.into())
    }

    /// How many times the child has been started so far.
    pub fn generation(&self) -> u64 {
        self.rx.borrow().generation
    }

    /// A snapshot of the slot.
    pub fn slot(&self) -> ChildSlot {
        let mut slot = self.rx.borrow().clone();
        // A dynamic supervisor stops updating a temporary child's slot once
        // it started (it is never restarted): it is closed once its actor
        // has stopped.
        if self.rx.has_changed().is_err()
            && slot
                .cell
                .as_ref()
                .is_none_or(|c| c.get_status() >= ActorStatus::Stopping)
        {
            slot.cell = None;
            slot.closed = true;
        }
        slot
    }

    /// Waits until the slot holds a running actor whose generation is at
    /// least `min_generation`, for at most `timeout`.
    pub async fn wait_generation(
        &self,
        min_generation: u64,
        timeout: Duration,
    ) -> Result<ActorCell, HandleError> {
        let mut rx = self.rx.clone();
        let wait = rx.wait_for(|s| {
            s.closed
                || (s.generation >= min_generation
                    && s.cell
                        .as_ref()
                        .is_some_and(|c| c.get_status() < ActorStatus::Stopping))
        });
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(slot)) => match (&slot.cell, slot.closed) {
                (Some(cell), false) => Ok(cell.clone()),
                _ => Err(HandleError::Closed(self.id.clone())),
            },
            Ok(Err(_)) => Err(HandleError::Closed(self.id.clone())),
            Err(_) => Err(HandleError::Timeout(self.id.clone())),
        }
    }

    /// Waits until a running actor fills the slot, for at most `timeout`.
    pub async fn wait_running(&self, timeout: Duration) -> Result<ActorCell, HandleError> {
        self.wait_generation(0, timeout).await
    }
}
