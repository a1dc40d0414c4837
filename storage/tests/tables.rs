//! Tables on one node: kinds, indexes, dirty operations, transactions and
//! subscriptions.

use std::collections::BTreeSet;

use beamline_storage::{Db, Record, StorageError, TableDef, TableEvent, TableKind, index_value};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct User {
    name: String,
    city: String,
    age: u32,
}

impl Record for User {
    type Key = String;
    fn key(&self) -> String {
        self.name.clone()
    }
    fn index_value(&self, index: &str) -> Option<Vec<u8>> {
        (index == "city").then(|| index_value(&self.city))
    }
}

fn user(name: &str, city: &str, age: u32) -> User {
    User {
        name: name.into(),
        city: city.into(),
        age,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Counter {
    id: u32,
    value: u64,
}

impl Record for Counter {
    type Key = u32;
    fn key(&self) -> u32 {
        self.id
    }
}

#[tokio::test]
async fn set_replaces_and_index_follows() {
    let db = Db::in_memory();
    let t = db
        .create_table::<User>(TableDef::new("users").index("city"))
        .expect("create");
    t.dirty_write(user("ann", "paris", 30))
        .await
        .expect("write");
    t.dirty_write(user("bob", "paris", 40))
        .await
        .expect("write");
    t.dirty_write(user("ann", "oslo", 31)).await.expect("write");
    assert_eq!(t.count(), 2);
    assert_eq!(t.get(&"ann".into()), Some(user("ann", "oslo", 31)));
    let paris: Vec<String> = t
        .index_read("city", "paris")
        .expect("index")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(paris, ["bob"]);
    assert_eq!(t.index_read("city", "oslo").expect("index").len(), 1);
    t.dirty_delete("bob".into()).await.expect("delete");
    assert!(t.index_read("city", "paris").expect("index").is_empty());
    assert!(matches!(
        t.index_read("age", &3),
        Err(StorageError::NoSuchIndex { .. })
    ));
    assert!(matches!(
        t.range("a".to_string()..),
        Err(StorageError::NotOrdered { .. })
    ));
}

#[tokio::test]
async fn bag_keeps_distinct_records_per_key() {
    let db = Db::in_memory();
    let t = db
        .create_table::<User>(TableDef::new("visits").kind(TableKind::Bag).index("city"))
        .expect("create");
    t.dirty_write(user("ann", "paris", 1)).await.expect("w");
    t.dirty_write(user("ann", "oslo", 2)).await.expect("w");
    t.dirty_write(user("ann", "paris", 1))
        .await
        .expect("duplicate is a no-op");
    assert_eq!(t.read(&"ann".into()).len(), 2);
    assert_eq!(t.count(), 2);
    t.dirty_delete_object(user("ann", "paris", 1))
        .await
        .expect("d");
    assert_eq!(t.read(&"ann".into()), [user("ann", "oslo", 2)]);
    assert!(t.index_read("city", "paris").expect("i").is_empty());
    assert_eq!(t.index_read("city", "oslo").expect("i").len(), 1);
    t.dirty_delete("ann".into()).await.expect("d");
    assert_eq!(t.count(), 0);
}

#[tokio::test]
async fn ordered_set_scans_in_key_order() {
    let db = Db::in_memory();
    let t = db
        .create_table::<Counter>(TableDef::new("c").kind(TableKind::OrderedSet))
        .expect("create");
    for id in [5, 1, 9, 3, 7] {
        t.dirty_write(Counter { id, value: 0 }).await.expect("w");
    }
    let ids: Vec<u32> = t.range(3..8).expect("range").iter().map(|c| c.id).collect();
    assert_eq!(ids, [3, 5, 7]);
    let all: Vec<u32> = t.all().iter().map(|c| c.id).collect();
    assert_eq!(all, [1, 3, 5, 7, 9]);
}

#[tokio::test]
async fn declaring_a_table_twice() {
    let db = Db::in_memory();
    db.create_table::<User>(TableDef::new("u")).expect("create");
    db.create_table::<User>(TableDef::new("u"))
        .expect("same def is fine");
    assert!(matches!(
        db.create_table::<User>(TableDef::new("u").kind(TableKind::Bag)),
        Err(StorageError::TableExists(_))
    ));
    assert!(matches!(
        db.table::<Counter>("u"),
        Err(StorageError::WrongType(_))
    ));
    assert!(matches!(
        db.table::<User>("nope"),
        Err(StorageError::NoSuchTable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_count_exactly() {
    let db = Db::in_memory();
    let t = db
        .create_table::<Counter>(TableDef::new("counter"))
        .expect("create");
    t.dirty_write(Counter { id: 1, value: 0 })
        .await
        .expect("init");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let db = db.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                db.transaction(|tx| {
                    let c = tx.get(&t, &1)?.expect("counter exists");
                    tx.write(
                        &t,
                        Counter {
                            id: 1,
                            value: c.value + 1,
                        },
                    )
                })
                .await
                .expect("commit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(t.get(&1).expect("counter").value, 2000);
}

#[tokio::test]
async fn aborted_transaction_leaves_nothing() {
    let db = Db::in_memory();
    let a = db.create_table::<Counter>(TableDef::new("a")).expect("a");
    let b = db.create_table::<Counter>(TableDef::new("b")).expect("b");
    let result: Result<(), StorageError> = db
        .transaction(|tx| {
            tx.write(&a, Counter { id: 1, value: 1 })?;
            tx.write(&b, Counter { id: 1, value: 1 })?;
            tx.abort("changed my mind")
        })
        .await;
    assert!(matches!(result, Err(StorageError::Aborted(ref r)) if r == "changed my mind"));
    assert_eq!((a.count(), b.count()), (0, 0));
}

#[tokio::test]
async fn transaction_sees_its_own_writes_and_commits_atomically() {
    let db = Db::in_memory();
    let users = db
        .create_table::<User>(TableDef::new("users").index("city"))
        .expect("users");
    let counts = db
        .create_table::<Counter>(TableDef::new("counts"))
        .expect("c");
    users.dirty_write(user("old", "rome", 1)).await.expect("w");
    let mut events = users.subscribe_channel();
    let seen = db
        .transaction(|tx| {
            tx.write(&users, user("new", "rome", 2))?;
            tx.delete(&users, "old".to_string())?;
            let in_rome = tx.index_read(&users, "city", "rome")?;
            tx.write(
                &counts,
                Counter {
                    id: 0,
                    value: in_rome.len() as u64,
                },
            )?;
            Ok(in_rome.into_iter().map(|u| u.name).collect::<Vec<_>>())
        })
        .await
        .expect("commit");
    assert_eq!(seen, ["new"]);
    assert_eq!(counts.get(&0).map(|c| c.value), Some(1));
    assert!(users.get(&"old".into()).is_none());
    // Both changes reach the subscriber, in commit order, with one seq.
    let e1 = events.recv().await.expect("event");
    let e2 = events.recv().await.expect("event");
    match (e1, e2) {
        (TableEvent::Write { seq: s1, new, .. }, TableEvent::Delete { seq: s2, key, .. }) => {
            assert_eq!(new.name, "new");
            assert_eq!(key, "old");
            assert_eq!(s1, s2);
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_commit_order() {
    let db = Db::in_memory();
    let t = db
        .create_table::<Counter>(TableDef::new("seq").kind(TableKind::OrderedSet))
        .expect("t");
    let mut rx = t.subscribe_channel();
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100u32 {
                t.dirty_write(Counter {
                    id: w * 1000 + i,
                    value: 0,
                })
                .await
                .expect("w");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let mut last = 0;
    let mut per_writer_last: [Option<u32>; 4] = [None; 4];
    let mut ids = BTreeSet::new();
    for _ in 0..400 {
        let TableEvent::Write { seq, new, .. } = rx.recv().await.expect("event") else {
            panic!("only writes");
        };
        assert!(seq > last, "commit order");
        last = seq;
        let w = (new.id / 1000) as usize;
        assert!(
            per_writer_last[w].is_none_or(|p| p < new.id),
            "per-writer order"
        );
        per_writer_last[w] = Some(new.id);
        ids.insert(new.id);
    }
    assert_eq!(ids.len(), 400);
}

#[tokio::test]
async fn scans_conflict_with_concurrent_inserts() {
    // A transaction that counted the table must not commit if another
    // commit changed the table in between (no phantoms).
    let db = Db::in_memory();
    let t = db.create_table::<Counter>(TableDef::new("t")).expect("t");
    let sum = db
        .create_table::<Counter>(TableDef::new("sum"))
        .expect("sum");
    let mut attempts = 0;
    let t2 = t.clone();
    db.transaction(|tx| {
        attempts += 1;
        let n = tx.count(&t)?;
        if attempts == 1 {
            // Sneak in a commit between the read and the commit.
            futures::executor::block_on(t2.dirty_write(Counter { id: 99, value: 0 }))?;
        }
        tx.write(
            &sum,
            Counter {
                id: 0,
                value: n as u64,
            },
        )
    })
    .await
    .expect("commit");
    assert_eq!(attempts, 2, "first attempt conflicted");
    assert_eq!(sum.get(&0).map(|c| c.value), Some(1));
}
