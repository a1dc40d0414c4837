//! Replication actors are supervised: a crashed replica actor or node
//! actor is restarted and takes its place in its process group again (one
//! node, in this process).

use std::time::Duration;

use beamline_runtime::cluster::{Node, NodeConfig};
use beamline_storage::replica::{Replication, ReplicationConfig};
use beamline_storage::{Db, Record, TableDef};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Kv {
    key: String,
    val: i64,
}

impl Record for Kv {
    type Key = String;
    fn key(&self) -> String {
        self.key.clone()
    }
}

fn kv(key: &str, val: i64) -> Kv {
    Kv {
        key: key.into(),
        val,
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_replication_actors_are_restarted_and_rejoin_their_groups() {
    let addr = "127.0.0.1:0".parse().expect("addr");
    let node = Node::start(NodeConfig::new("sv1", "secret", addr))
        .await
        .expect("node");
    let db = Db::in_memory();
    let repl = Replication::start(db.clone(), node.clone(), ReplicationConfig::default())
        .await
        .expect("replication");
    let t = repl
        .create_table::<Kv>(TableDef::new("kv"))
        .await
        .expect("create");
    t.dirty_write(kv("a", 1)).await.expect("write");
    assert_eq!(repl.primary("kv").as_deref(), Some("sv1"));

    // The replica actor crashes: restarted, back in `table:kv`, serving.
    let old = repl.actor_cell(Some("kv")).expect("replica actor");
    old.kill();
    until("replica restarted", || {
        repl.actor_cell(Some("kv"))
            .is_some_and(|c| c.get_id() != old.get_id())
    })
    .await;
    until("back in its group", || {
        repl.primary("kv").as_deref() == Some("sv1")
    })
    .await;
    t.dirty_write(kv("b", 2))
        .await
        .expect("write after restart");
    assert_eq!(
        repl.read(&t, &"b".to_string()).await.expect("read"),
        [kv("b", 2)]
    );

    // The node actor crashes: restarted and back in `dbs` (the schema it
    // publishes on start names our copy again).
    let old = repl.actor_cell(None).expect("node actor");
    old.kill();
    until("node actor restarted", || {
        repl.actor_cell(None)
            .is_some_and(|c| c.get_id() != old.get_id())
    })
    .await;
    until("schema back", || {
        repl.schema()
            .iter()
            .any(|s| s.def.name == "kv" && s.copies.contains_key("sv1"))
    })
    .await;
    t.dirty_write(kv("c", 3))
        .await
        .expect("write after restart");
    assert_eq!(t.count(), 3);
    node.leave().await;
}
