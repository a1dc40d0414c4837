//! The dynamic supervisor: many children, random crashes, counts, limits.

mod common;

use std::time::Duration;

use beamline_supervision::{
    ChildSpec, DynamicSpec, DynamicSupervisor, Intensity, Restart, StartError,
};
use common::{Cmd, Journal, kill_with, worker};
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus};

const T: Duration = Duration::from_secs(30);

/// A child with no journal, so 10,000 of them stay cheap.
#[derive(Clone)]
struct Quiet;

impl Actor for Quiet {
    type Msg = Cmd;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Cmd>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Cmd>,
        msg: Cmd,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Cmd::Panic => panic!("told to"),
            _ => Ok(()),
        }
    }
}

/// Deterministic pseudo-random numbers (xorshift), so a failure replays.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_children_with_random_crashes() {
    const N: usize = 10_000;
    const CRASHES: usize = 300;
    let spec = DynamicSpec {
        intensity: Intensity {
            max_restarts: 10_000,
            period: Duration::from_secs(60),
        },
        ..DynamicSpec::default()
    };
    let (sup, _) = DynamicSupervisor::start(None, spec).await.expect("start");
    let mut handles = Vec::with_capacity(N);
    for i in 0..N {
        // Every third child is temporary, like a client session.
        let restart = if i % 3 == 0 {
            Restart::Temporary
        } else {
            Restart::Permanent
        };
        let spec = ChildSpec::from_actor("session", Quiet, ()).restart(restart);
        handles.push(sup.start_child(spec).await.expect("child starts"));
    }
    let counts = sup.count_children().await.expect("count");
    assert_eq!((counts.specs, counts.active), (N, N));

    let first_ids: Vec<_> = handles
        .iter()
        .map(|h| h.get().expect("running").get_id())
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut crashed = vec![false; N];
    for _ in 0..CRASHES {
        let i = rng.below(N);
        let Some(cell) = handles[i].get() else {
            continue;
        };
        kill_with(&cell, Cmd::Panic).await;
        crashed[i] = true;
    }
    let temporaries_crashed = (0..N).filter(|&i| crashed[i] && i % 3 == 0).count();
    let counts = sup.count_children().await.expect("count");
    assert_eq!(counts.specs, N - temporaries_crashed);
    assert_eq!(counts.active, N - temporaries_crashed);

    for i in 0..N {
        if !crashed[i] {
            // Untouched: same actor, first generation.
            assert_eq!(handles[i].generation(), 1, "child {i} was disturbed");
            assert_eq!(handles[i].get().map(|c| c.get_id()), Some(first_ids[i]));
        } else if i % 3 == 0 {
            assert!(handles[i].slot().closed, "temporary child {i} is gone");
        } else {
            let cell = handles[i].wait_running(T).await.expect("restarted");
            assert_ne!(cell.get_id(), first_ids[i]);
        }
    }

    sup.shutdown(Some(T)).await.expect("shutdown");
    assert!(handles.iter().all(|h| h.get().is_none()));
}

#[tokio::test]
async fn max_children_is_enforced_and_frees_up() {
    let j = Journal::default();
    let spec = DynamicSpec {
        max_children: Some(2),
        ..DynamicSpec::default()
    };
    let (sup, _) = DynamicSupervisor::start(None, spec).await.expect("start");
    let a = sup
        .start_child(worker("a", &j).restart(Restart::Temporary))
        .await
        .expect("a");
    sup.start_child(worker("b", &j)).await.expect("b");
    assert!(matches!(
        sup.start_child(worker("c", &j)).await,
        Err(StartError::MaxChildren(2))
    ));
    kill_with(&a.get().expect("running"), Cmd::Stop(None)).await;
    sup.start_child(worker("c", &j)).await.expect("room again");
    assert_eq!(sup.count_children().await.expect("count").active, 2);
}

#[tokio::test]
async fn terminate_child_stops_it_for_good() {
    let j = Journal::default();
    let (sup, _) = DynamicSupervisor::start(None, DynamicSpec::default())
        .await
        .expect("start");
    let h = sup.start_child(worker("a", &j)).await.expect("a");
    let cell = h.get().expect("running");
    sup.terminate_child(cell.get_id()).await.expect("terminate");
    assert_eq!(cell.get_status(), ActorStatus::Stopped);
    assert_eq!(j.entries(), ["start:a", "stop:a"]);
    assert_eq!(sup.count_children().await.expect("count").specs, 0);
    assert!(h.slot().closed);
}

#[tokio::test]
async fn intensity_exceeded_stops_all_children() {
    let j = Journal::default();
    let spec = DynamicSpec {
        intensity: Intensity {
            max_restarts: 1,
            period: Duration::from_secs(60),
        },
        ..DynamicSpec::default()
    };
    let (sup, join) = DynamicSupervisor::start(None, spec).await.expect("start");
    let a = sup.start_child(worker("a", &j)).await.expect("a");
    sup.start_child(worker("b", &j)).await.expect("b");
    kill_with(&a.get().expect("running"), Cmd::Panic).await;
    kill_with(&a.wait_running(T).await.expect("restarted"), Cmd::Panic).await;
    tokio::time::timeout(T, join)
        .await
        .expect("supervisor exits")
        .expect("join");
    assert_eq!(j.count("stop:b"), 1);
}
