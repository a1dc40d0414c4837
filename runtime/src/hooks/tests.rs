//! Tests with real ractor actors as subscribers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::*;

/// A fold point: each subscriber appends its tag to the accumulator.
const TAGS: HookPoint<u32, Vec<String>> = HookPoint::new("test_tags");
/// A run point: each subscriber appends its tag to the shared log.
const NOTIFY: HookPoint<Log, ()> = HookPoint::new("test_notify");

type Log = Arc<Mutex<Vec<String>>>;

#[derive(Clone, Copy, Debug)]
enum Behavior {
    /// Appends its tag and answers Continue.
    Pass,
    /// Appends its tag and answers Stop.
    Stop,
    /// Never answers.
    Hang,
    /// Fails while handling the call (the actor stops).
    Crash,
    /// The first call takes this long; later ones are answered at once.
    SlowOnce(Duration),
}

struct Subscriber;

struct SubState {
    tag: String,
    behavior: Behavior,
    calls: usize,
}

enum SubMsg {
    Tags(HookCall<u32, Vec<String>>),
    Notify(HookCall<Log, ()>),
}

impl ractor::Message for SubMsg {}

impl From<HookCall<u32, Vec<String>>> for SubMsg {
    fn from(call: HookCall<u32, Vec<String>>) -> Self {
        SubMsg::Tags(call)
    }
}

impl From<HookCall<Log, ()>> for SubMsg {
    fn from(call: HookCall<Log, ()>) -> Self {
        SubMsg::Notify(call)
    }
}

impl Actor for Subscriber {
    type Msg = SubMsg;
    type State = SubState;
    type Arguments = (String, Behavior);

    async fn pre_start(
        &self,
        _myself: ActorRef<SubMsg>,
        (tag, behavior): (String, Behavior),
    ) -> Result<SubState, ActorProcessingErr> {
        Ok(SubState {
            tag,
            behavior,
            calls: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SubMsg>,
        message: SubMsg,
        state: &mut SubState,
    ) -> Result<(), ActorProcessingErr> {
        state.calls += 1;
        match state.behavior {
            Behavior::Hang => std::future::pending::<()>().await,
            Behavior::Crash => return Err("subscriber crashed on purpose".into()),
            Behavior::SlowOnce(delay) if state.calls == 1 => tokio::time::sleep(delay).await,
            _ => {}
        }
        let stop = matches!(state.behavior, Behavior::Stop);
        match message {
            SubMsg::Tags(call) => {
                let mut acc = call.acc;
                acc.push(format!("{}:{}", state.tag, call.arg));
                let _ = call.reply.send(if stop {
                    Flow::Stop(acc)
                } else {
                    Flow::Continue(acc)
                });
            }
            SubMsg::Notify(call) => {
                call.arg.lock().unwrap().push(state.tag.clone());
                let _ = call.reply.send(if stop {
                    Flow::Stop(())
                } else {
                    Flow::Continue(())
                });
            }
        }
        Ok(())
    }
}

async fn spawn(tag: &str, behavior: Behavior) -> (ActorRef<SubMsg>, JoinHandle<()>) {
    Actor::spawn(None, Subscriber, (tag.to_string(), behavior))
        .await
        .unwrap()
}

fn short_timeout() -> Hooks {
    Hooks::with_config(HooksConfig::default().with_call_timeout(Duration::from_millis(100)))
}

fn tags(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

#[tokio::test]
async fn run_with_no_subscribers_returns_the_accumulator_unchanged() {
    let hooks = Hooks::new();
    assert_eq!(
        hooks.run_fold(&TAGS, Scope::Global, tags(&["x"]), 1).await,
        tags(&["x"])
    );
    let log = Log::default();
    assert_eq!(
        hooks.run(&NOTIFY, Scope::Host("a"), log.clone()).await,
        Flow::Continue(())
    );
    assert!(log.lock().unwrap().is_empty());
    assert_eq!(hooks.stats(), HookStats::default());
}

// Regression guard for the per-thread cache: a run must see every change
// made before it, on this thread or another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_seen_by_the_next_run() {
    let hooks = Hooks::new();
    let run = || hooks.run_fold(&TAGS, Scope::Host("h"), Vec::new(), 0);
    assert!(run().await.is_empty());
    let (a, _) = spawn("a", Behavior::Pass).await;
    let id = hooks.subscribe(&TAGS, Scope::Host("h"), 0, &a).unwrap();
    assert_eq!(run().await, tags(&["a:0"]));
    // From another task, possibly on the other worker thread.
    let other = hooks.clone();
    let (b, _) = spawn("b", Behavior::Pass).await;
    tokio::spawn(async move { other.subscribe(&TAGS, Scope::Host("h"), 1, &b).unwrap() })
        .await
        .unwrap();
    assert_eq!(run().await, tags(&["a:0", "b:0"]));
    assert!(hooks.unsubscribe(id));
    assert_eq!(run().await, tags(&["b:0"]));
    // A second registry on the same threads has its own subscriptions.
    let fresh = Hooks::new();
    assert!(
        fresh
            .run_fold(&TAGS, Scope::Host("h"), Vec::new(), 0)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn subscribers_run_by_priority_then_subscription_order() {
    let hooks = Hooks::new();
    let mut actors = Vec::new();
    for (tag, priority) in [("c", 50), ("a", 10), ("d", 50), ("b", 20), ("e", 90)] {
        let (actor, _) = spawn(tag, Behavior::Pass).await;
        hooks
            .subscribe(&TAGS, Scope::Global, priority, &actor)
            .unwrap();
        actors.push(actor);
    }
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 7).await;
    assert_eq!(out, tags(&["a:7", "b:7", "c:7", "d:7", "e:7"]));
    assert_eq!(hooks.subscriber_count(&TAGS, Scope::Global), 5);
}

#[tokio::test]
async fn run_stops_at_the_subscriber_that_answers_stop() {
    let hooks = Hooks::new();
    for (tag, behavior, priority) in [
        ("first", Behavior::Pass, 1),
        ("stopper", Behavior::Stop, 2),
        ("never", Behavior::Pass, 3),
    ] {
        let (actor, _) = spawn(tag, behavior).await;
        hooks
            .subscribe(&NOTIFY, Scope::Global, priority, &actor)
            .unwrap();
    }
    let log = Log::default();
    let outcome = hooks.run(&NOTIFY, Scope::Global, log.clone()).await;
    assert_eq!(outcome, Flow::Stop(()));
    assert_eq!(*log.lock().unwrap(), tags(&["first", "stopper"]));
}

#[tokio::test]
async fn run_fold_accumulates_and_a_stop_ends_with_its_value() {
    let hooks = Hooks::new();
    for (tag, behavior, priority) in [
        ("one", Behavior::Pass, 1),
        ("two", Behavior::Pass, 2),
        ("halt", Behavior::Stop, 3),
        ("after", Behavior::Pass, 4),
    ] {
        let (actor, _) = spawn(tag, behavior).await;
        hooks
            .subscribe(&TAGS, Scope::Global, priority, &actor)
            .unwrap();
    }
    let out = hooks
        .run_fold(&TAGS, Scope::Global, tags(&["start"]), 3)
        .await;
    assert_eq!(out, tags(&["start", "one:3", "two:3", "halt:3"]));
}

// Paused time: the timeout elapses on the virtual clock, so timings are exact
// and do not depend on the machine's load.
#[tokio::test(start_paused = true)]
async fn hung_subscriber_is_skipped_after_the_timeout_and_counted() {
    let hooks = short_timeout();
    for (tag, behavior, priority) in [
        ("before", Behavior::Pass, 1),
        ("hung", Behavior::Hang, 2),
        ("after", Behavior::Pass, 3),
    ] {
        let (actor, _) = spawn(tag, behavior).await;
        hooks
            .subscribe(&TAGS, Scope::Global, priority, &actor)
            .unwrap();
    }
    let started = tokio::time::Instant::now();
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 1).await;
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(out, tags(&["before:1", "after:1"]));
    assert_eq!(hooks.skipped_count(), 1);
    let stats = hooks.point_stats(&TAGS);
    assert_eq!((stats.skipped, stats.timed_out, stats.failed), (1, 1, 0));

    // Still stuck on the first call: the next run skips it without waiting.
    let started = tokio::time::Instant::now();
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 2).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(out, tags(&["before:2", "after:2"]));
    assert_eq!(hooks.stats().skipped, 2);
    assert_eq!(hooks.stats().timed_out, 1);
}

#[tokio::test(start_paused = true)]
async fn default_timeout_is_five_seconds() {
    let hooks = Hooks::new();
    assert_eq!(hooks.config().call_timeout, Duration::from_secs(5));
    let (hung, _) = spawn("hung", Behavior::Hang).await;
    let (after, _) = spawn("after", Behavior::Pass).await;
    hooks.subscribe(&TAGS, Scope::Global, 0, &hung).unwrap();
    hooks.subscribe(&TAGS, Scope::Global, 1, &after).unwrap();
    let started = tokio::time::Instant::now();
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 0).await;
    // Paused time: the clock jumps to the timeout instead of waiting 5 s.
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(out, tags(&["after:0"]));
    assert_eq!(hooks.stats().timed_out, 1);
}

#[tokio::test(start_paused = true)]
async fn slow_subscriber_gets_calls_again_once_it_has_answered() {
    let hooks =
        Hooks::with_config(HooksConfig::default().with_call_timeout(Duration::from_millis(50)));
    let (slow, _) = spawn("slow", Behavior::SlowOnce(Duration::from_millis(200))).await;
    hooks.subscribe(&TAGS, Scope::Global, 0, &slow).unwrap();
    assert!(
        hooks
            .run_fold(&TAGS, Scope::Global, Vec::new(), 0)
            .await
            .is_empty()
    );
    assert_eq!(hooks.stats().timed_out, 1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 1).await;
        if out == tags(&["slow:1"]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never delivered again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hooks.stats().timed_out, 1);
}

#[tokio::test]
async fn crashed_subscriber_is_skipped_then_pruned() {
    let hooks = Hooks::new();
    let (crash, crash_handle) = spawn("crash", Behavior::Crash).await;
    let (after, _) = spawn("after", Behavior::Pass).await;
    hooks.subscribe(&TAGS, Scope::Global, 0, &crash).unwrap();
    hooks.subscribe(&TAGS, Scope::Global, 1, &after).unwrap();

    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 0).await;
    assert_eq!(out, tags(&["after:0"]));
    assert_eq!(hooks.stats().failed, 1);
    assert_eq!(hooks.stats().timed_out, 0);

    // The actor has ended once its handle resolves; the next run prunes it.
    crash_handle.await.unwrap();
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 1).await;
    assert_eq!(out, tags(&["after:1"]));
    assert_eq!(hooks.subscriber_count(&TAGS, Scope::Global), 1);
    assert_eq!(hooks.stats().pruned, 1);
    assert_eq!(hooks.stats().skipped, 1);
}

#[tokio::test]
async fn subscription_disappears_when_its_actor_stops() {
    let hooks = Hooks::new();
    let (gone, handle) = spawn("gone", Behavior::Pass).await;
    let (stays, _) = spawn("stays", Behavior::Pass).await;
    hooks.subscribe(&TAGS, Scope::Global, 0, &gone).unwrap();
    hooks.subscribe(&NOTIFY, Scope::Global, 0, &gone).unwrap();
    hooks.subscribe(&TAGS, Scope::Global, 1, &stays).unwrap();

    gone.stop(None);
    handle.await.unwrap();

    // Pruned by a run of the point...
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 0).await;
    assert_eq!(out, tags(&["stays:0"]));
    assert_eq!(hooks.subscriber_count(&TAGS, Scope::Global), 1);
    // ...or by a sweep, for points that do not run.
    assert_eq!(hooks.subscriber_count(&NOTIFY, Scope::Global), 1);
    assert_eq!(hooks.prune_dead(), 1);
    assert_eq!(hooks.subscriber_count(&NOTIFY, Scope::Global), 0);
    assert_eq!(hooks.stats().pruned, 2);
    assert_eq!(hooks.stats().skipped, 0);
    // A stopped actor cannot subscribe.
    assert!(matches!(
        hooks.subscribe(&TAGS, Scope::Global, 0, &gone),
        Err(HookError::NotRunning { .. })
    ));
}

#[tokio::test]
async fn host_scopes_are_separate_from_each_other_and_from_global() {
    let hooks = Hooks::new();
    let (a, _) = spawn("a", Behavior::Pass).await;
    let (b, _) = spawn("b", Behavior::Pass).await;
    let (global, _) = spawn("global", Behavior::Pass).await;
    hooks
        .subscribe(&TAGS, Scope::Host("a.example"), 0, &a)
        .unwrap();
    hooks.subscribe(&TAGS, "b.example".into(), 0, &b).unwrap();
    hooks.subscribe(&TAGS, Scope::Global, 0, &global).unwrap();

    let run = |scope| hooks.run_fold(&TAGS, scope, Vec::new(), 0);
    assert_eq!(run(Scope::Host("a.example")).await, tags(&["a:0"]));
    assert_eq!(run(Scope::Host("b.example")).await, tags(&["b:0"]));
    assert_eq!(run(Scope::Global).await, tags(&["global:0"]));
    assert!(run(Scope::Host("c.example")).await.is_empty());
}

#[tokio::test]
async fn hook_call_carries_the_hook_name_and_host() {
    let hooks = Hooks::new();
    // (hook name, host) of each call seen.
    type Seen = Arc<Mutex<Vec<(&'static str, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<HookCall<u32, Vec<String>>>();
    // The forwarder hands the raw calls to this test to look at.
    let (probe, _) = Actor::spawn(None, Forwarder, tx).await.unwrap();
    hooks.subscribe(&TAGS, Scope::Host("h"), 0, &probe).unwrap();
    let collector = {
        let seen = Arc::clone(&seen);
        let mut rx = rx;
        tokio::spawn(async move {
            while let Some(call) = rx.recv().await {
                seen.lock()
                    .unwrap()
                    .push((call.hook, call.host.as_deref().map(str::to_string)));
                call.pass();
            }
        })
    };
    let out = hooks
        .run_fold(&TAGS, Scope::Host("h"), tags(&["kept"]), 0)
        .await;
    assert_eq!(out, tags(&["kept"]));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("test_tags", Some("h".to_string()))]
    );
    collector.abort();
}

/// An actor whose message type is `HookCall` itself; it hands calls on.
struct Forwarder;

impl Actor for Forwarder {
    type Msg = HookCall<u32, Vec<String>>;
    type State = tokio::sync::mpsc::UnboundedSender<HookCall<u32, Vec<String>>>;
    type Arguments = Self::State;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        tx: Self::State,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        call: Self::Msg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        tx.send(call).map_err(|_| "collector gone")?;
        Ok(())
    }
}

#[tokio::test]
async fn unsubscribe_removes_one_subscription() {
    let hooks = Hooks::new();
    let (a, _) = spawn("a", Behavior::Pass).await;
    let (b, _) = spawn("b", Behavior::Pass).await;
    let id_a = hooks.subscribe(&TAGS, Scope::Global, 0, &a).unwrap();
    hooks.subscribe(&TAGS, Scope::Global, 1, &b).unwrap();
    assert!(hooks.unsubscribe(id_a));
    assert!(!hooks.unsubscribe(id_a));
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 0).await;
    assert_eq!(out, tags(&["b:0"]));
}

#[tokio::test]
async fn unsubscribe_all_of_removes_everything_an_actor_registered() {
    let hooks = Hooks::new();
    let (module, _) = spawn("module", Behavior::Pass).await;
    let (other, _) = spawn("other", Behavior::Pass).await;
    hooks.subscribe(&TAGS, Scope::Global, 0, &module).unwrap();
    hooks
        .subscribe(&TAGS, Scope::Host("x"), 0, &module)
        .unwrap();
    hooks
        .subscribe(&NOTIFY, Scope::Host("x"), 0, &module)
        .unwrap();
    // A closure owned by the module goes with it.
    hooks
        .subscribe_fn(
            &TAGS,
            Scope::Host("x"),
            5,
            Some(module.get_cell()),
            |_, acc| async move { Flow::Continue(acc) },
        )
        .unwrap();
    hooks.subscribe(&TAGS, Scope::Host("x"), 1, &other).unwrap();

    assert_eq!(hooks.unsubscribe_all_of(module.get_id()), 4);
    assert_eq!(hooks.subscriber_count(&TAGS, Scope::Global), 0);
    assert_eq!(hooks.subscriber_count(&NOTIFY, Scope::Host("x")), 0);
    let out = hooks.run_fold(&TAGS, Scope::Host("x"), Vec::new(), 0).await;
    assert_eq!(out, tags(&["other:0"]));
    assert_eq!(hooks.unsubscribe_all_of(module.get_id()), 0);
}

#[tokio::test]
async fn same_name_with_other_types_is_refused() {
    let hooks = Hooks::new();
    const IMPOSTOR: HookPoint<u32, u64> = HookPoint::new("test_tags");
    let (a, _) = spawn("a", Behavior::Pass).await;
    hooks.subscribe(&TAGS, Scope::Global, 0, &a).unwrap();
    let err = hooks
        .subscribe_fn(&IMPOSTOR, Scope::Global, 0, None, |_, acc| async move {
            Flow::Continue(acc)
        })
        .unwrap_err();
    assert!(matches!(
        err,
        HookError::TypeMismatch {
            hook: "test_tags",
            ..
        }
    ));
    // Running it is a no-op rather than a crash.
    assert_eq!(hooks.run_fold(&IMPOSTOR, Scope::Global, 9, 0).await, 9);
}

#[tokio::test]
async fn closures_and_actors_share_one_order() {
    let hooks = Hooks::new();
    let (actor, _) = spawn("actor", Behavior::Pass).await;
    hooks.subscribe(&TAGS, Scope::Global, 10, &actor).unwrap();
    hooks
        .subscribe_fn(
            &TAGS,
            Scope::Global,
            5,
            None,
            |arg, mut acc: Vec<String>| async move {
                acc.push(format!("early:{arg}"));
                Flow::Continue(acc)
            },
        )
        .unwrap();
    hooks
        .subscribe_fn(
            &TAGS,
            Scope::Global,
            20,
            None,
            |arg, mut acc: Vec<String>| async move {
                acc.push(format!("late:{arg}"));
                Flow::Continue(acc)
            },
        )
        .unwrap();
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 4).await;
    assert_eq!(out, tags(&["early:4", "actor:4", "late:4"]));
}

#[tokio::test]
async fn panicking_or_slow_closure_is_skipped() {
    let hooks = short_timeout();
    hooks
        .subscribe_fn(
            &TAGS,
            Scope::Global,
            0,
            None,
            |_, _acc: Vec<String>| async move { panic!("closure subscriber panics on purpose") },
        )
        .unwrap();
    hooks
        .subscribe_fn(
            &TAGS,
            Scope::Global,
            1,
            None,
            |_, acc: Vec<String>| async move {
                std::future::pending::<()>().await;
                Flow::Continue(acc)
            },
        )
        .unwrap();
    hooks
        .subscribe_fn(
            &TAGS,
            Scope::Global,
            2,
            None,
            |_, mut acc: Vec<String>| async move {
                acc.push("last".into());
                Flow::Continue(acc)
            },
        )
        .unwrap();
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 0).await;
    assert_eq!(out, tags(&["last"]));
    let stats = hooks.stats();
    assert_eq!((stats.skipped, stats.failed, stats.timed_out), (2, 1, 1));
}

#[tokio::test]
async fn answer_closures_answer_now_or_later_in_order() {
    let hooks = short_timeout();
    // Odd arguments are answered at once, even ones after a wait.
    for (priority, tag) in [(0, "a"), (1, "b")] {
        hooks
            .subscribe_answer(
                &TAGS,
                Scope::Global,
                priority,
                None,
                move |arg, mut acc: Vec<String>| {
                    if arg % 2 == 1 {
                        acc.push(format!("{tag}:now"));
                        return Answer::Now(Flow::Continue(acc));
                    }
                    Answer::later(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        acc.push(format!("{tag}:later"));
                        Flow::Continue(acc)
                    })
                },
            )
            .unwrap();
    }
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 1).await;
    assert_eq!(out, tags(&["a:now", "b:now"]));
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 2).await;
    assert_eq!(out, tags(&["a:later", "b:later"]));
    // A stop answered at once ends the run.
    hooks
        .subscribe_answer(&TAGS, Scope::Global, -1, None, |_, acc: Vec<String>| {
            Answer::Now(Flow::Stop(acc))
        })
        .unwrap();
    assert!(
        hooks
            .run_fold(&TAGS, Scope::Global, Vec::new(), 1)
            .await
            .is_empty()
    );
    assert_eq!(hooks.stats().skipped, 0);
}

#[tokio::test]
async fn answer_closure_panicking_or_hanging_is_skipped() {
    let hooks = short_timeout();
    hooks
        .subscribe_answer(&TAGS, Scope::Global, 0, None, |_, _acc: Vec<String>| {
            panic!("answer subscriber panics on purpose")
        })
        .unwrap();
    hooks
        .subscribe_answer(&TAGS, Scope::Global, 1, None, |_, acc: Vec<String>| {
            Answer::later(async move {
                std::future::pending::<()>().await;
                Flow::Continue(acc)
            })
        })
        .unwrap();
    hooks
        .subscribe_answer(&TAGS, Scope::Global, 2, None, |_, mut acc: Vec<String>| {
            acc.push("last".into());
            Answer::Now(Flow::Continue(acc))
        })
        .unwrap();
    let out = hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 0).await;
    assert_eq!(out, tags(&["last"]));
    let stats = hooks.stats();
    assert_eq!((stats.skipped, stats.failed, stats.timed_out), (2, 1, 1));
}

#[tokio::test]
async fn closure_owned_by_a_stopped_actor_is_pruned() {
    let hooks = Hooks::new();
    let (owner, handle) = spawn("owner", Behavior::Pass).await;
    hooks
        .subscribe_fn(
            &TAGS,
            Scope::Global,
            0,
            Some(owner.get_cell()),
            |_, mut acc: Vec<String>| async move {
                acc.push("closure".into());
                Flow::Continue(acc)
            },
        )
        .unwrap();
    assert_eq!(
        hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 0).await,
        tags(&["closure"])
    );
    owner.stop(None);
    handle.await.unwrap();
    assert!(
        hooks
            .run_fold(&TAGS, Scope::Global, Vec::new(), 0)
            .await
            .is_empty()
    );
    assert_eq!(hooks.subscriber_count(&TAGS, Scope::Global), 0);
}

/// Actors run hooks from `handle`, whose future must be `Send`.
#[test]
fn registry_and_run_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Hooks>();
    let hooks = Hooks::new();
    let host = String::from("h");
    assert_send(&hooks.run_fold(&TAGS, Scope::Host(&host), Vec::new(), 0));
    assert_send(&hooks.run(&NOTIFY, Scope::Global, Log::default()));
}

#[test]
fn hook_point_hash_depends_on_the_name_only() {
    const A: HookPoint<(), ()> = HookPoint::new("same");
    const B: HookPoint<u8, u8> = HookPoint::new("same");
    const C: HookPoint<(), ()> = HookPoint::new("other");
    assert_eq!(A.hash(), B.hash());
    assert_ne!(A.hash(), C.hash());
    assert_eq!(A.name(), "same");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_priorities_run_in_sorted_order(priorities in prop::collection::vec(-5i32..5, 0..12)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = runtime.block_on(async {
            let hooks = Hooks::new();
            for (index, priority) in priorities.iter().enumerate() {
                hooks
                    .subscribe_fn(&TAGS, Scope::Global, *priority, None, move |_, mut acc: Vec<String>| async move {
                        acc.push(index.to_string());
                        Flow::Continue(acc)
                    })
                    .unwrap();
            }
            hooks.run_fold(&TAGS, Scope::Global, Vec::new(), 0).await
        });
        let mut expected: Vec<usize> = (0..priorities.len()).collect();
        // Stable sort: equal priorities keep subscription order.
        expected.sort_by_key(|&index| priorities[index]);
        let expected: Vec<String> = expected.iter().map(usize::to_string).collect();
        prop_assert_eq!(out, expected);
    }
}
