//! Cost of running a hook point with 0, 1 and 3 subscribers.
//!
//! Run with `cargo bench -p beamline-runtime --bench hooks`; the figures are
//! in docs/hooks.md. Subscribers are real ractor actors, on a two-worker
//! tokio runtime (`mt2`) and on a current-thread one (`ct`), so each one
//! costs an actor hop and a reply; closures are measured too, for
//! comparison.

use std::hint::black_box;

use beamline_runtime::hooks::{Flow, HookCall, HookPoint, Hooks, Scope};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::runtime::Runtime;

const FOLD: HookPoint<u64, u64> = HookPoint::new("bench_fold");
const NOTIFY: HookPoint<u64, ()> = HookPoint::new("bench_notify");
const HOST: Scope<'static> = Scope::Host("bench.example");

/// Adds the argument to the accumulator; passes notifications on.
struct Adder;

enum AdderMsg {
    Fold(HookCall<u64, u64>),
    Notify(HookCall<u64, ()>),
}

impl ractor::Message for AdderMsg {}

impl From<HookCall<u64, u64>> for AdderMsg {
    fn from(call: HookCall<u64, u64>) -> Self {
        AdderMsg::Fold(call)
    }
}

impl From<HookCall<u64, ()>> for AdderMsg {
    fn from(call: HookCall<u64, ()>) -> Self {
        AdderMsg::Notify(call)
    }
}

impl Actor for Adder {
    type Msg = AdderMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<AdderMsg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<AdderMsg>,
        message: AdderMsg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AdderMsg::Fold(call) => {
                let _ = call.reply.send(Flow::Continue(call.acc + call.arg));
            }
            AdderMsg::Notify(call) => call.pass(),
        }
        Ok(())
    }
}

/// A registry with `n` actor subscribers on both points, for `HOST`.
fn with_actors(runtime: &Runtime, n: usize) -> (Hooks, Vec<ActorRef<AdderMsg>>) {
    runtime.block_on(async {
        let hooks = Hooks::new();
        let mut actors = Vec::new();
        for priority in 0..n {
            let (actor, _) = Actor::spawn(None, Adder, ())
                .await
                .expect("bench actor starts");
            let priority = i32::try_from(priority).expect("few subscribers");
            hooks
                .subscribe(&FOLD, HOST, priority, &actor)
                .expect("subscribe to fold");
            hooks
                .subscribe(&NOTIFY, HOST, priority, &actor)
                .expect("subscribe to notify");
            actors.push(actor);
        }
        (hooks, actors)
    })
}

/// What the async bench loop itself costs, to subtract from the others.
fn bench_baseline(c: &mut Criterion, runtime: &Runtime) {
    c.bench_function("baseline/empty_async", |b| {
        b.to_async(runtime).iter(|| async { black_box(0u64) });
    });
}

/// `flavor` names the runtime in the group names.
fn bench_actors(c: &mut Criterion, runtime: &Runtime, flavor: &str) {
    let mut fold = c.benchmark_group(format!("run_fold/actors_{flavor}"));
    for n in [0usize, 1, 3] {
        let (hooks, actors) = with_actors(runtime, n);
        fold.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(runtime)
                .iter(|| async { black_box(hooks.run_fold(&FOLD, HOST, 0, black_box(1)).await) });
        });
        actors.iter().for_each(|actor| actor.stop(None));
    }
    fold.finish();

    let mut run = c.benchmark_group(format!("run/actors_{flavor}"));
    for n in [0usize, 1, 3] {
        let (hooks, actors) = with_actors(runtime, n);
        run.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(runtime)
                .iter(|| async { black_box(hooks.run(&NOTIFY, HOST, black_box(1)).await) });
        });
        actors.iter().for_each(|actor| actor.stop(None));
    }
    run.finish();
}

fn bench_misses_and_closures(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("run_fold/other");
    // The point has subscribers, but on another host: one more map lookup.
    let (hooks, actors) = with_actors(runtime, 1);
    group.bench_function("0 (other host subscribed)", |b| {
        b.to_async(runtime).iter(|| async {
            black_box(
                hooks
                    .run_fold(&FOLD, Scope::Host("elsewhere.example"), 0, black_box(1))
                    .await,
            )
        });
    });
    actors.iter().for_each(|actor| actor.stop(None));

    for n in [1usize, 3] {
        let hooks = Hooks::new();
        for priority in 0..n {
            let priority = i32::try_from(priority).expect("few subscribers");
            hooks
                .subscribe_fn(&FOLD, HOST, priority, None, |arg, acc| async move {
                    Flow::Continue(acc + arg)
                })
                .expect("subscribe closure");
        }
        group.bench_with_input(BenchmarkId::new("closures", n), &n, |b, _| {
            b.to_async(runtime)
                .iter(|| async { black_box(hooks.run_fold(&FOLD, HOST, 0, black_box(1)).await) });
        });
    }
    group.finish();
}

fn hooks(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    bench_baseline(c, &runtime);
    bench_actors(c, &runtime, "mt2");
    bench_misses_and_closures(c, &runtime);
    // One thread: an actor hop is a task switch, with no OS wake-up, so
    // these figures show the hooks' own cost and depend less on the load.
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    bench_actors(c, &current, "ct");
}

criterion_group!(benches, hooks);
criterion_main!(benches);
