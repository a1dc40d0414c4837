//! Restart strategies, restart types, intensity, shutdown and handles, with
//! real actors that panic, fail and hang.

mod common;

use std::time::{Duration, Instant};

use beamline_supervision::{
    Backoff, ChildSpec, Restart, Shutdown, StartError, Strategy, Supervisor, SupervisorSpec,
};
use common::{Cmd, Journal, eventually, failing_worker, kill_with, worker};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

const T: Duration = Duration::from_secs(10);

async fn start(
    strategy: Strategy,
    journal: &Journal,
    ids: &[&str],
) -> beamline_supervision::SupervisorRef {
    let children = ids.iter().map(|id| worker(id, journal)).collect();
    let spec = SupervisorSpec::new(strategy, children).intensity(100, Duration::from_secs(60));
    Supervisor::start(None, spec).await.expect("start").0
}

async fn cell_ids(sup: &beamline_supervision::SupervisorRef) -> Vec<Option<ractor::ActorId>> {
    sup.which_children()
        .await
        .expect("which_children")
        .iter()
        .map(|c| c.cell.as_ref().map(|c| c.get_id()))
        .collect()
}

async fn child_cell(sup: &beamline_supervision::SupervisorRef, id: &str) -> ractor::ActorCell {
    sup.child(id).await.expect("child").get().expect("running")
}

#[tokio::test]
async fn children_start_in_order_and_stop_in_reverse() {
    let j = Journal::default();
    let sup = start(Strategy::OneForOne, &j, &["a", "b", "c"]).await;
    assert_eq!(j.entries(), ["start:a", "start:b", "start:c"]);
    sup.shutdown(Some(T)).await.expect("shutdown");
    assert_eq!(
        j.entries(),
        [
            "start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"
        ]
    );
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let j = Journal::default();
    let sup = start(Strategy::OneForOne, &j, &["a", "b", "c"]).await;
    let before = cell_ids(&sup).await;
    j.clear();
    kill_with(&child_cell(&sup, "b").await, Cmd::Panic).await;
    let after = cell_ids(&sup).await;
    assert_eq!(j.entries(), ["start:b"]);
    assert_eq!(before[0], after[0]);
    assert_ne!(before[1], after[1]);
    assert_eq!(before[2], after[2]);
}

#[tokio::test]
async fn one_for_all_restarts_everyone_in_order() {
    let j = Journal::default();
    let sup = start(Strategy::OneForAll, &j, &["a", "b", "c"]).await;
    let before = cell_ids(&sup).await;
    j.clear();
    kill_with(&child_cell(&sup, "b").await, Cmd::Fail).await;
    let after = cell_ids(&sup).await;
    // b is already dead; the others stop in reverse order, then all start.
    assert_eq!(
        j.entries(),
        ["stop:c", "stop:a", "start:a", "start:b", "start:c"]
    );
    for (x, y) in before.iter().zip(&after) {
        assert_ne!(x, y);
    }
}

#[tokio::test]
async fn rest_for_one_restarts_the_child_and_those_after_it() {
    let j = Journal::default();
    let sup = start(Strategy::RestForOne, &j, &["a", "b", "c", "d"]).await;
    let before = cell_ids(&sup).await;
    j.clear();
    kill_with(&child_cell(&sup, "b").await, Cmd::Panic).await;
    let after = cell_ids(&sup).await;
    assert_eq!(
        j.entries(),
        ["stop:d", "stop:c", "start:b", "start:c", "start:d"]
    );
    assert_eq!(before[0], after[0]);
    assert!(before[1..].iter().zip(&after[1..]).all(|(x, y)| x != y));
}

#[tokio::test]
async fn transient_restarts_only_after_abnormal_exit() {
    let j = Journal::default();
    let spec = SupervisorSpec::new(
        Strategy::OneForOne,
        vec![
            worker("t1", &j).restart(Restart::Transient),
            worker("t2", &j).restart(Restart::Transient),
            worker("t3", &j).restart(Restart::Transient),
        ],
    )
    .intensity(10, Duration::from_secs(60));
    let (sup, _) = Supervisor::start(None, spec).await.expect("start");
    kill_with(&child_cell(&sup, "t1").await, Cmd::Stop(None)).await;
    kill_with(
        &child_cell(&sup, "t2").await,
        Cmd::Stop(Some("shutdown".into())),
    )
    .await;
    kill_with(&child_cell(&sup, "t3").await, Cmd::Panic).await;
    let children = sup.which_children().await.expect("which");
    let running: Vec<_> = children.iter().map(|c| c.cell.is_some()).collect();
    assert_eq!(running, [false, false, true]);
    assert_eq!(j.count("start:t1"), 1);
    assert_eq!(j.count("start:t3"), 2);
    // The spec of a transient child that ended normally stays, like OTP's.
    assert_eq!(sup.count_children().await.expect("count").specs, 3);
    // A stop with a reason other than normal/shutdown is abnormal.
    kill_with(
        &child_cell(&sup, "t3").await,
        Cmd::Stop(Some("lost my socket".into())),
    )
    .await;
    assert_eq!(j.count("start:t3"), 3);
}

#[tokio::test]
async fn temporary_is_never_restarted_and_is_removed() {
    let j = Journal::default();
    let spec = SupervisorSpec::new(
        Strategy::OneForOne,
        vec![
            worker("p", &j),
            worker("tmp", &j).restart(Restart::Temporary),
        ],
    );
    let (sup, _) = Supervisor::start(None, spec).await.expect("start");
    kill_with(&child_cell(&sup, "tmp").await, Cmd::Panic).await;
    let ids: Vec<String> = sup
        .which_children()
        .await
        .expect("which")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["p"]);
    assert_eq!(j.count("start:tmp"), 1);
}

#[tokio::test]
async fn temporary_sibling_is_not_restarted_by_one_for_all() {
    let j = Journal::default();
    let spec = SupervisorSpec::new(
        Strategy::OneForAll,
        vec![
            worker("a", &j),
            worker("tmp", &j).restart(Restart::Temporary),
        ],
    );
    let (sup, _) = Supervisor::start(None, spec).await.expect("start");
    kill_with(&child_cell(&sup, "a").await, Cmd::Panic).await;
    let counts = sup.count_children().await.expect("count");
    assert_eq!((counts.specs, counts.active), (1, 1));
    assert_eq!(j.count("stop:tmp"), 1);
    assert_eq!(j.count("start:tmp"), 1);
}

/// Records the supervision events of the supervisor it parents.
struct Parent;

impl Actor for Parent {
    type Msg = ();
    type State = tokio::sync::mpsc::UnboundedSender<String>;
    type Arguments = tokio::sync::mpsc::UnboundedSender<String>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        evt: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(_, e) = evt {
            let _ = tx.send(e.to_string());
        }
        Ok(())
    }
}

#[tokio::test]
async fn exceeding_intensity_stops_children_and_escalates_to_the_parent() {
    let j = Journal::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (parent, _) = Actor::spawn(None, Parent, tx).await.expect("parent");
    let spec = SupervisorSpec::new(Strategy::OneForOne, vec![worker("a", &j), worker("b", &j)])
        .intensity(2, Duration::from_secs(60));
    let sup = Supervisor::start_linked(None, spec, parent.get_cell())
        .await
        .expect("start");
    for _ in 0..2 {
        kill_with(&child_cell(&sup, "a").await, Cmd::Panic).await;
    }
    assert_eq!(j.count("start:a"), 3);
    // The third restart within the period is one too many.
    kill_with(&child_cell(&sup, "a").await, Cmd::Panic).await;
    let failure = tokio::time::timeout(T, rx.recv())
        .await
        .expect("parent told in time")
        .expect("event");
    assert!(failure.contains("max restart intensity"), "{failure}");
    sup.cell().wait(Some(T)).await.expect("supervisor stopped");
    assert_eq!(j.count("stop:b"), 1, "surviving sibling was shut down");
    assert_eq!(j.count("start:a"), 3);
}

#[tokio::test]
async fn nested_supervisor_failure_is_restarted_by_its_parent() {
    let j = Journal::default();
    let inner = SupervisorSpec::new(Strategy::OneForOne, vec![worker("w", &j)])
        .intensity(0, Duration::from_secs(60))
        .into_child_spec("inner");
    let outer =
        SupervisorSpec::new(Strategy::OneForOne, vec![inner]).intensity(5, Duration::from_secs(60));
    let (sup, _) = Supervisor::start(None, outer).await.expect("start");
    let inner_handle = sup.child("inner").await.expect("inner");
    let inner_ref = beamline_supervision::SupervisorRef::from_ref(
        inner_handle.actor_ref().expect("inner running"),
    );
    kill_with(&child_cell(&inner_ref, "w").await, Cmd::Panic).await;
    let new_inner = inner_handle
        .wait_generation(2, T)
        .await
        .expect("inner restarted");
    assert_ne!(new_inner.get_id(), inner_ref.cell().get_id());
    assert_eq!(j.count("start:w"), 2);
}

#[tokio::test]
async fn child_that_ignores_shutdown_is_killed_after_its_timeout() {
    let j = Journal::default();
    let spec = SupervisorSpec::new(
        Strategy::OneForOne,
        vec![worker("stubborn", &j).shutdown(Shutdown::Timeout(Duration::from_millis(200)))],
    );
    let (sup, _) = Supervisor::start(None, spec).await.expect("start");
    let cell = child_cell(&sup, "stubborn").await;
    cell.send_message(Cmd::Hang(Duration::from_secs(3600)))
        .expect("send");
    let began = Instant::now();
    sup.shutdown(Some(T)).await.expect("shutdown");
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(cell.get_status(), ractor::ActorStatus::Stopped);
    // Killed, so post_stop never ran.
    assert_eq!(j.count("stop:stubborn"), 0);
}

#[tokio::test]
async fn failed_start_is_an_error_and_started_children_are_stopped() {
    let j = Journal::default();
    let spec = SupervisorSpec::new(
        Strategy::OneForOne,
        vec![worker("a", &j), failing_worker("bad", &j), worker("c", &j)],
    );
    let err = Supervisor::start(None, spec).await.expect_err("must fail");
    assert!(matches!(err, StartError::Children(_)), "{err}");
    assert!(err.to_string().contains("bad"), "{err}");
    assert_eq!(j.entries(), ["start:a", "failstart:bad", "stop:a"]);
}

#[tokio::test]
async fn start_child_failure_is_returned_and_duplicate_ids_refused() {
    let j = Journal::default();
    let sup = start(Strategy::OneForOne, &j, &["a"]).await;
    assert!(matches!(
        sup.start_child(failing_worker("bad", &j)).await,
        Err(StartError::Spawn { .. })
    ));
    assert!(matches!(
        sup.start_child(worker("a", &j)).await,
        Err(StartError::AlreadyPresent(_))
    ));
    sup.start_child(worker("b", &j)).await.expect("b starts");
    assert_eq!(sup.count_children().await.expect("count").active, 2);
}

#[tokio::test]
async fn terminate_restart_and_delete_child() {
    let j = Journal::default();
    let sup = start(Strategy::OneForOne, &j, &["a", "b"]).await;
    sup.terminate_child("a").await.expect("terminate");
    let counts = sup.count_children().await.expect("count");
    assert_eq!((counts.specs, counts.active), (2, 1));
    // terminate_child is not a crash: no automatic restart.
    assert_eq!(j.count("start:a"), 1);
    sup.restart_child("a").await.expect("restart");
    assert_eq!(j.count("start:a"), 2);
    assert!(sup.delete_child("a").await.is_err(), "running child");
    sup.terminate_child("a").await.expect("terminate");
    sup.delete_child("a").await.expect("delete");
    assert_eq!(sup.count_children().await.expect("count").specs, 1);
}

#[tokio::test]
async fn handle_follows_restarts_and_never_gives_a_dead_ref() {
    let j = Journal::default();
    let sup = start(Strategy::OneForOne, &j, &["a"]).await;
    let handle = sup.child("a").await.expect("handle");
    assert_eq!(handle.generation(), 1);
    let first = handle.get().expect("running");
    kill_with(&first, Cmd::Panic).await;
    let second = handle.wait_generation(2, T).await.expect("restarted");
    assert_ne!(first.get_id(), second.get_id());
    let typed: ActorRef<Cmd> = handle.actor_ref().expect("typed ref");
    assert_eq!(typed.get_id(), second.get_id());
    // A handle never hands out the dead actor.
    assert!(handle.get().is_none_or(|c| c.get_id() != first.get_id()));
}

#[tokio::test]
async fn backoff_delays_restart() {
    let j = Journal::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne, vec![worker("a", &j)])
        .intensity(10, Duration::from_secs(60))
        .backoff(Backoff {
            initial: Duration::from_millis(150),
            max: Duration::from_secs(1),
        });
    let (sup, _) = Supervisor::start(None, spec).await.expect("start");
    let handle = sup.child("a").await.expect("handle");
    let began = Instant::now();
    kill_with(&handle.get().expect("running"), Cmd::Panic).await;
    assert!(handle.get().is_none(), "down during backoff");
    handle.wait_generation(2, T).await.expect("restarted");
    assert!(began.elapsed() >= Duration::from_millis(150));
    // Second restart in the window waits twice as long.
    let began = Instant::now();
    kill_with(&handle.get().expect("running"), Cmd::Panic).await;
    handle.wait_generation(3, T).await.expect("restarted");
    assert!(began.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn restart_that_fails_to_start_counts_toward_intensity() {
    // A child that starts once, then refuses: its restarts fail until the
    // supervisor gives up.
    let j = Journal::default();
    let starts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let jj = j.clone();
    let s2 = starts.clone();
    let flaky = ChildSpec::new("flaky", move |sup| {
        let n = s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let w = common::Worker {
            id: "flaky".into(),
            journal: jj.clone(),
            fail_start: n > 0,
        };
        async move { Ok(Actor::spawn_linked(None, w, (), sup).await?.0.get_cell()) }
    });
    let spec =
        SupervisorSpec::new(Strategy::OneForOne, vec![flaky]).intensity(3, Duration::from_secs(60));
    let (sup, _) = Supervisor::start(None, spec).await.expect("start");
    kill_with(&child_cell(&sup, "flaky").await, Cmd::Panic).await;
    assert!(
        eventually(T, async || sup.cell().get_status()
            == ractor::ActorStatus::Stopped)
        .await,
        "supervisor gave up"
    );
    // 1 real start, then 3 failed restarts allowed + the one that tripped.
    assert_eq!(j.count("failstart:flaky"), 3);
}
