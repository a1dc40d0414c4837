//! The module manager: modules started, reloaded and stopped at runtime per
//! host, with dependencies, options and cleanups.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use beamline_supervision::ChildSpec;
use beamline_supervision::module::{
    Module, ModuleContext, ModuleError, ModuleManager, ModuleOptions, Reload,
};
use common::{Cmd, Journal, eventually, kill_with};
use futures::future::BoxFuture;
use serde_json::json;

/// A test module whose tree is one worker logging "start:<host>/<name>".
struct TestModule {
    name: &'static str,
    deps: Vec<String>,
    journal: Journal,
    cleanups: Arc<AtomicUsize>,
    reload_in_place: bool,
}

impl TestModule {
    fn new(name: &'static str, deps: &[&str], journal: &Journal) -> Self {
        TestModule {
            name,
            deps: deps.iter().map(|d| d.to_string()).collect(),
            journal: journal.clone(),
            cleanups: Arc::default(),
            reload_in_place: false,
        }
    }
}

impl Module for TestModule {
    fn name(&self) -> &str {
        self.name
    }

    fn dependencies(&self) -> Vec<String> {
        self.deps.clone()
    }

    fn default_options(&self) -> ModuleOptions {
        let mut o = ModuleOptions::new();
        o.insert("size".into(), json!(10));
        o
    }

    fn validate_options(&self, opts: &ModuleOptions) -> Result<(), String> {
        match opts.get("size").and_then(|v| v.as_u64()) {
            Some(_) => Ok(()),
            None => Err("size must be a non-negative integer".into()),
        }
    }

    fn start(&self, ctx: &ModuleContext, opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let counter = self.cleanups.clone();
        ctx.on_stop(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let id = format!("{}/{}#{}", ctx.host(), self.name, opts["size"]);
        Ok(common::worker(&id, &self.journal))
    }

    fn reload(
        &self,
        _ctx: &ModuleContext,
        _old: &ModuleOptions,
        _new: &ModuleOptions,
        _tree: Option<ractor::ActorCell>,
    ) -> BoxFuture<'static, Result<Reload, String>> {
        let r = if self.reload_in_place {
            Reload::Applied
        } else {
            Reload::Restart
        };
        Box::pin(async move { Ok(r) })
    }
}

fn names(list: &[(String, ModuleOptions)]) -> Vec<&str> {
    list.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn dependencies_start_first_and_block_stop() {
    let j = Journal::default();
    let base = Arc::new(TestModule::new("base", &[], &j));
    let mid = Arc::new(TestModule::new("mid", &["base"], &j));
    let top = Arc::new(TestModule::new("top", &["mid", "base"], &j));
    let base_cleanups = base.cleanups.clone();
    let mgr = ModuleManager::start(None, vec![base, mid, top])
        .await
        .expect("manager");

    mgr.start_module("a.example", "top", ModuleOptions::new())
        .await
        .expect("start top");
    assert_eq!(
        j.entries(),
        [
            "start:a.example/base#10",
            "start:a.example/mid#10",
            "start:a.example/top#10"
        ]
    );
    assert_eq!(
        names(&mgr.running("a.example").await.expect("running")),
        ["base", "mid", "top"]
    );
    // Other hosts are separate.
    assert!(mgr.running("b.example").await.expect("running").is_empty());

    let err = mgr
        .stop_module("a.example", "base")
        .await
        .expect_err("in use");
    assert!(
        matches!(err, ModuleError::DependedOn { ref needed_by, .. } if needed_by == "mid" || needed_by == "top"),
        "{err}"
    );
    mgr.stop_module("a.example", "top").await.expect("stop top");
    mgr.stop_module("a.example", "mid").await.expect("stop mid");
    mgr.stop_module("a.example", "base")
        .await
        .expect("stop base");
    assert_eq!(
        base_cleanups.load(Ordering::SeqCst),
        1,
        "cleanup ran on stop"
    );
    assert!(j.entries().ends_with(&[
        "stop:a.example/top#10".to_string(),
        "stop:a.example/mid#10".to_string(),
        "stop:a.example/base#10".to_string()
    ]));
    assert!(matches!(
        mgr.stop_module("a.example", "base").await,
        Err(ModuleError::NotRunning { .. })
    ));
}

#[tokio::test]
async fn options_are_merged_checked_and_reloaded() {
    let j = Journal::default();
    let m = Arc::new(TestModule::new("m", &[], &j));
    let cleanups = m.cleanups.clone();
    let mgr = ModuleManager::start(None, vec![m]).await.expect("manager");
    let mut bad = ModuleOptions::new();
    bad.insert("colour".into(), json!("red"));
    let err = mgr
        .start_module("h", "m", bad)
        .await
        .expect_err("unknown option");
    assert!(err.to_string().contains("colour"), "{err}");
    let mut bad = ModuleOptions::new();
    bad.insert("size".into(), json!("big"));
    assert!(matches!(
        mgr.start_module("h", "m", bad).await,
        Err(ModuleError::InvalidOptions { .. })
    ));
    assert!(j.entries().is_empty(), "nothing started on bad options");

    let mut opts = ModuleOptions::new();
    opts.insert("size".into(), json!(5));
    mgr.start_module("h", "m", opts).await.expect("start");
    assert!(matches!(
        mgr.start_module("h", "m", ModuleOptions::new()).await,
        Err(ModuleError::AlreadyRunning { .. })
    ));
    let mut opts = ModuleOptions::new();
    opts.insert("size".into(), json!(7));
    mgr.reload_module("h", "m", opts).await.expect("reload");
    assert_eq!(j.entries(), ["start:h/m#5", "stop:h/m#5", "start:h/m#7"]);
    assert_eq!(
        cleanups.load(Ordering::SeqCst),
        1,
        "old tree's cleanups ran"
    );
    let running = mgr.running("h").await.expect("running");
    assert_eq!(running[0].1["size"], json!(7));
}

#[tokio::test]
async fn reload_applied_in_place_keeps_the_tree() {
    let j = Journal::default();
    let mut m = TestModule::new("m", &[], &j);
    m.reload_in_place = true;
    let mgr = ModuleManager::start(None, vec![Arc::new(m)])
        .await
        .expect("manager");
    mgr.start_module("h", "m", ModuleOptions::new())
        .await
        .expect("start");
    let mut opts = ModuleOptions::new();
    opts.insert("size".into(), json!(99));
    mgr.reload_module("h", "m", opts).await.expect("reload");
    assert_eq!(j.entries(), ["start:h/m#10"]);
    assert_eq!(
        mgr.running("h").await.expect("running")[0].1["size"],
        json!(99)
    );
}

#[tokio::test]
async fn crashed_module_tree_is_restarted() {
    let j = Journal::default();
    let mgr = ModuleManager::start(None, vec![Arc::new(TestModule::new("m", &[], &j))])
        .await
        .expect("manager");
    mgr.start_module("h", "m", ModuleOptions::new())
        .await
        .expect("start");
    // Find the module's worker through the actor tree: manager -> host
    // supervisor -> module worker.
    let host_sup = mgr.cell().get_children().pop().expect("host supervisor");
    let worker = host_sup.get_children().pop().expect("module worker");
    kill_with(&worker, Cmd::Panic).await;
    assert!(
        eventually(Duration::from_secs(10), async || j.count("start:h/m#10")
            == 2)
        .await
    );
}

#[tokio::test]
async fn unknown_modules_and_cycles_are_errors() {
    let j = Journal::default();
    let a = Arc::new(TestModule::new("a", &["b"], &j));
    let b = Arc::new(TestModule::new("b", &["a"], &j));
    let c = Arc::new(TestModule::new("c", &["nope"], &j));
    let mgr = ModuleManager::start(None, vec![a, b, c])
        .await
        .expect("manager");
    assert!(matches!(
        mgr.start_module("h", "a", ModuleOptions::new()).await,
        Err(ModuleError::DependencyCycle(_))
    ));
    assert!(matches!(
        mgr.start_module("h", "c", ModuleOptions::new()).await,
        Err(ModuleError::UnknownModule(ref m)) if m == "nope"
    ));
    assert!(j.entries().is_empty());
}

#[tokio::test]
async fn stop_host_stops_dependents_first() {
    let j = Journal::default();
    let base = Arc::new(TestModule::new("base", &[], &j));
    let top = Arc::new(TestModule::new("top", &["base"], &j));
    let mgr = ModuleManager::start(None, vec![base, top])
        .await
        .expect("manager");
    mgr.start_module("h", "top", ModuleOptions::new())
        .await
        .expect("start");
    j.clear();
    mgr.stop_host("h").await.expect("stop host");
    assert_eq!(j.entries(), ["stop:h/top#10", "stop:h/base#10"]);
    assert!(mgr.running("h").await.expect("running").is_empty());
}

/// A module that registers a hook subscription and leaves its removal to
/// the manager, as real feature modules do.
struct HookModule {
    hooks: beamline_runtime::hooks::Hooks,
    journal: Journal,
}

const FILTER: beamline_runtime::hooks::HookPoint<u32, u32> =
    beamline_runtime::hooks::HookPoint::new("test_filter");

impl Module for HookModule {
    fn name(&self) -> &str {
        "hooky"
    }

    fn start(&self, ctx: &ModuleContext, _opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let id =
            self.hooks
                .subscribe_fn(
                    &FILTER,
                    ctx.host().into(),
                    50,
                    None,
                    |_arg: u32, acc: u32| async move {
                        beamline_runtime::hooks::Flow::Continue(acc + 1)
                    },
                )
                .map_err(|e| e.to_string())?;
        let hooks = self.hooks.clone();
        ctx.on_stop(move || {
            hooks.unsubscribe(id);
        });
        Ok(common::worker(
            &format!("{}/hooky", ctx.host()),
            &self.journal,
        ))
    }
}

#[tokio::test]
async fn stopping_a_module_removes_its_hook_subscriptions() {
    let hooks = beamline_runtime::hooks::Hooks::new();
    let j = Journal::default();
    let m = Arc::new(HookModule {
        hooks: hooks.clone(),
        journal: j.clone(),
    });
    let mgr = ModuleManager::start(None, vec![m]).await.expect("manager");
    mgr.start_module("h1", "hooky", ModuleOptions::new())
        .await
        .expect("start");
    assert_eq!(hooks.run_fold(&FILTER, "h1".into(), 0, 0).await, 1);
    assert_eq!(
        hooks.run_fold(&FILTER, "h2".into(), 0, 0).await,
        0,
        "other host"
    );
    mgr.stop_module("h1", "hooky").await.expect("stop");
    assert_eq!(hooks.subscriber_count(&FILTER, "h1".into()), 0);
    assert_eq!(hooks.run_fold(&FILTER, "h1".into(), 0, 0).await, 0);
}
