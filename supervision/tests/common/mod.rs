//! Test actors for the supervision tests: workers that log their life to a
//! shared journal and crash, stop or hang on command.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use beamline_supervision::ChildSpec;
use parking_lot::Mutex;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, Message};

/// What happened, in order: "start:a", "stop:a" (post_stop ran).
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn push(&self, s: String) {
        self.0.lock().push(s);
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().clone()
    }
    pub fn clear(&self) {
        self.0.lock().clear();
    }
    pub fn count(&self, entry: &str) -> usize {
        self.0.lock().iter().filter(|e| *e == entry).count()
    }
}

/// Commands a test worker obeys.
pub enum Cmd {
    /// Panic in the handler.
    Panic,
    /// Return an error from the handler.
    Fail,
    /// Stop with this reason (None = normal).
    Stop(Option<String>),
    /// Block in the handler for this long (ignores stop meanwhile).
    Hang(Duration),
}

impl Message for Cmd {}

#[derive(Clone)]
pub struct Worker {
    pub id: String,
    pub journal: Journal,
    /// Fail in pre_start.
    pub fail_start: bool,
}

impl Actor for Worker {
    type Msg = Cmd;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Cmd>, _: ()) -> Result<(), ActorProcessingErr> {
        if self.fail_start {
            self.journal.push(format!("failstart:{}", self.id));
            return Err("refusing to start".into());
        }
        self.journal.push(format!("start:{}", self.id));
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<Cmd>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        self.journal.push(format!("stop:{}", self.id));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Cmd>,
        msg: Cmd,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Cmd::Panic => panic!("worker {} told to panic", self.id),
            Cmd::Fail => Err(format!("worker {} told to fail", self.id).into()),
            Cmd::Stop(reason) => {
                myself.stop(reason);
                Ok(())
            }
            Cmd::Hang(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

pub fn worker(id: &str, journal: &Journal) -> ChildSpec {
    ChildSpec::from_actor(
        id,
        Worker {
            id: id.to_string(),
            journal: journal.clone(),
            fail_start: false,
        },
        (),
    )
}

pub fn failing_worker(id: &str, journal: &Journal) -> ChildSpec {
    ChildSpec::from_actor(
        id,
        Worker {
            id: id.to_string(),
            journal: journal.clone(),
            fail_start: true,
        },
        (),
    )
}

/// Sends `cmd` to `cell` and waits until the actor has exited, so that its
/// supervisor has the exit event queued (ractor sends it before marking the
/// actor stopped).
pub async fn kill_with(cell: &ActorCell, cmd: Cmd) {
    cell.send_message(cmd).expect("send to child");
    cell.wait(Some(Duration::from_secs(10)))
        .await
        .expect("child did not exit");
}

/// Polls `cond` until true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
