//! Property test: random crash and stop sequences against a small model of
//! OTP's supervisor semantics. After every event the real supervisor must
//! agree with the model on which children exist, which run, how often each
//! has started, and whether the supervisor itself is still alive.

mod common;

use std::time::Duration;

use beamline_supervision::{Restart, Strategy, Supervisor, SupervisorSpec};
use common::{Cmd, Journal, kill_with, worker};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

#[derive(Debug, Clone)]
struct ModelChild {
    id: String,
    restart: Restart,
    running: bool,
    starts: usize,
}

#[derive(Debug, Clone)]
struct Model {
    strategy: Strategy,
    max_restarts: usize,
    restarts: usize,
    alive: bool,
    children: Vec<ModelChild>,
}

impl Model {
    /// Child at `idx` exits; `abnormal` says how.
    fn exit(&mut self, idx: usize, abnormal: bool) {
        let c = &mut self.children[idx];
        c.running = false;
        let restart = match c.restart {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        if !restart {
            if c.restart == Restart::Temporary {
                self.children.remove(idx);
            }
            return;
        }
        self.restarts += 1;
        if self.restarts > self.max_restarts {
            self.alive = false;
            self.children.iter_mut().for_each(|c| c.running = false);
            return;
        }
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![idx],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (idx..self.children.len()).collect(),
        };
        let group_ids: Vec<String> = group.iter().map(|&i| self.children[i].id.clone()).collect();
        // Temporary siblings stopped by the strategy are dropped.
        let failed = self.children[idx].id.clone();
        self.children.retain(|c| {
            c.id == failed || c.restart != Restart::Temporary || !group_ids.contains(&c.id)
        });
        for c in &mut self.children {
            if group_ids.contains(&c.id) {
                c.running = true;
                c.starts += 1;
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Crash (panic) the n-th child, if running.
    Crash(usize),
    /// Normal stop of the n-th child, if running.
    StopNormal(usize),
}

fn restart_type() -> impl proptest::strategy::Strategy<Value = Restart> {
    prop_oneof![
        Just(Restart::Permanent),
        Just(Restart::Transient),
        Just(Restart::Temporary)
    ]
}

fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop_oneof![
        Just(Strategy::OneForOne),
        Just(Strategy::OneForAll),
        Just(Strategy::RestForOne)
    ]
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..6).prop_map(Op::Crash),
        1 => (0usize..6).prop_map(Op::StopNormal),
    ]
}

async fn run_case(strategy: Strategy, restarts: Vec<Restart>, max_restarts: usize, ops: Vec<Op>) {
    let j = Journal::default();
    let ids: Vec<String> = (0..restarts.len()).map(|i| format!("c{i}")).collect();
    let specs = ids
        .iter()
        .zip(&restarts)
        .map(|(id, r)| worker(id, &j).restart(*r))
        .collect();
    let spec = SupervisorSpec::new(strategy, specs)
        .intensity(max_restarts as u32, Duration::from_secs(3600));
    let (sup, _) = Supervisor::start(None, spec).await.expect("start");
    let mut model = Model {
        strategy,
        max_restarts,
        restarts: 0,
        alive: true,
        children: ids
            .iter()
            .zip(&restarts)
            .map(|(id, r)| ModelChild {
                id: id.clone(),
                restart: *r,
                running: true,
                starts: 1,
            })
            .collect(),
    };
    for op in ops {
        if !model.alive {
            break;
        }
        let (n, cmd, abnormal) = match op {
            Op::Crash(n) => (n, Cmd::Panic, true),
            Op::StopNormal(n) => (n, Cmd::Stop(None), false),
        };
        if model.children.is_empty() {
            break;
        }
        let idx = n % model.children.len();
        if !model.children[idx].running {
            continue;
        }
        let handle = sup.child(&model.children[idx].id).await.expect("handle");
        let cell = handle.get().expect("model says running");
        kill_with(&cell, cmd).await;
        model.exit(idx, abnormal);
        if !model.alive {
            sup.cell()
                .wait(Some(Duration::from_secs(10)))
                .await
                .expect("supervisor gave up");
            break;
        }
        let real = sup.which_children().await.expect("which_children");
        let real_view: Vec<(String, bool)> = real
            .iter()
            .map(|c| (c.id.clone(), c.cell.is_some()))
            .collect();
        let model_view: Vec<(String, bool)> = model
            .children
            .iter()
            .map(|c| (c.id.clone(), c.running))
            .collect();
        assert_eq!(real_view, model_view, "after {op:?}");
    }
    for c in &model.children {
        assert_eq!(
            j.count(&format!("start:{}", c.id)),
            c.starts,
            "starts of {}",
            c.id
        );
    }
    let mut handles = Vec::new();
    if model.alive {
        for c in &model.children {
            handles.push(sup.child(&c.id).await.expect("handle"));
        }
        sup.shutdown(Some(Duration::from_secs(10)))
            .await
            .expect("shutdown");
    }
    // Whatever happened, nothing is left running.
    assert!(handles.iter().all(|h| h.get().is_none()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn supervisor_matches_otp_model(
        strategy in strategy(),
        restarts in proptest::collection::vec(restart_type(), 1..5),
        max_restarts in 0usize..8,
        ops in proptest::collection::vec(op(), 0..16),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run_case(strategy, restarts, max_restarts, ops));
    }
}
