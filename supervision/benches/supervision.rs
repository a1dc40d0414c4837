//! Time from a child's crash to its replacement running, under our
//! supervisors, against a minimal hand-written ractor supervisor that
//! respawns its child from `handle_supervisor_evt` (the baseline: the least
//! work any restart on ractor can do).
//!
//! Run: `cargo bench -p beamline-supervision --bench supervision`

use std::time::{Duration, Instant};

use beamline_supervision::{
    ChildHandle, ChildSpec, DynamicSpec, DynamicSupervisor, Intensity, Strategy, Supervisor,
    SupervisorSpec,
};
use criterion::{Criterion, criterion_group, criterion_main};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, Message, SupervisionEvent};
use tokio::sync::watch;

/// A child that panics when told to.
#[derive(Clone)]
struct Crashy;

struct Crash;
impl Message for Crash {}

impl Actor for Crashy {
    type Msg = Crash;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Crash>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Crash>,
        _: Crash,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Err("crash".into())
    }
}

/// The baseline: respawn the child on any exit and publish it.
struct BareSupervisor;

impl Actor for BareSupervisor {
    type Msg = ();
    type State = watch::Sender<Option<ActorCell>>;
    type Arguments = watch::Sender<Option<ActorCell>>;
    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (c, _) = Actor::spawn_linked(None, Crashy, (), myself.get_cell()).await?;
        tx.send_replace(Some(c.get_cell()));
        Ok(tx)
    }
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        evt: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if matches!(evt, SupervisionEvent::ActorFailed(..)) {
            let (c, _) = Actor::spawn_linked(None, Crashy, (), myself.get_cell()).await?;
            tx.send_replace(Some(c.get_cell()));
        }
        Ok(())
    }
}

fn many() -> Intensity {
    Intensity {
        max_restarts: u32::MAX,
        period: Duration::from_secs(1),
    }
}

/// Crashes the handle's child `iters` times, each time waiting for its
/// replacement; returns the total crash-to-running time.
async fn crash_and_wait(handle: ChildHandle, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let gen_now = handle.generation();
        let cell = handle.get().expect("running");
        let began = Instant::now();
        let _ = cell.send_message(Crash);
        handle
            .wait_generation(gen_now + 1, Duration::from_secs(10))
            .await
            .expect("restarted");
        total += began.elapsed();
    }
    total
}

fn restart_latency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("crash_to_replacement");

    group.bench_function("bare_ractor_respawn", |b| {
        let (tx, rx) = watch::channel(None);
        rt.block_on(async { Actor::spawn(None, BareSupervisor, tx).await.expect("sup") });
        b.to_async(&rt).iter_custom(|iters| {
            let mut rx = rx.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let old = rx.borrow_and_update().clone().expect("child");
                    let began = Instant::now();
                    let _ = old.send_message(Crash);
                    rx.changed().await.expect("respawned");
                    total += began.elapsed();
                }
                total
            }
        });
    });

    for (name, strategy) in [
        ("one_for_one", Strategy::OneForOne),
        ("one_for_all_3", Strategy::OneForAll),
    ] {
        group.bench_function(name, |b| {
            let sup = rt.block_on(async {
                let n = if strategy == Strategy::OneForOne {
                    1
                } else {
                    3
                };
                let children = (0..n)
                    .map(|i| ChildSpec::from_actor(format!("c{i}"), Crashy, ()))
                    .collect();
                let mut spec = SupervisorSpec::new(strategy, children);
                spec.intensity = many();
                Supervisor::start(None, spec).await.expect("sup").0
            });
            let handle = rt.block_on(sup.child("c0")).expect("handle");
            b.to_async(&rt)
                .iter_custom(|iters| crash_and_wait(handle.clone(), iters));
        });
    }

    group.bench_function("dynamic_one_child", |b| {
        let handle = rt.block_on(async {
            let spec = DynamicSpec {
                intensity: many(),
                ..DynamicSpec::default()
            };
            let (sup, _) = DynamicSupervisor::start(None, spec).await.expect("sup");
            sup.start_child(ChildSpec::from_actor("c", Crashy, ()))
                .await
                .expect("child")
        });
        b.to_async(&rt)
            .iter_custom(|iters| crash_and_wait(handle.clone(), iters));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = restart_latency
}
criterion_main!(benches);
