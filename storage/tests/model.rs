//! Property tests: an ordered_set against a BTreeMap, a set against a
//! HashMap-like model, and a bag against a list-of-distinct-records model.

use std::collections::BTreeMap;

use beamline_storage::{Db, Record, TableDef, TableKind};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Row {
    k: u8,
    v: u8,
}

impl Record for Row {
    type Key = u8;
    fn key(&self) -> u8 {
        self.k
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(u8, u8),
    Delete(u8),
    DeleteObject(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..32, 0u8..4).prop_map(|(k, v)| Op::Write(k, v)),
        1 => (0u8..32).prop_map(Op::Delete),
        1 => (0u8..32, 0u8..4).prop_map(|(k, v)| Op::DeleteObject(k, v)),
    ]
}

async fn run(kind: TableKind, ops: Vec<Op>, lo: u8, hi: u8) {
    let db = Db::in_memory();
    let t = db
        .create_table::<Row>(TableDef::new("t").kind(kind))
        .expect("create");
    // key -> records (sorted distinct for bags)
    let mut model: BTreeMap<u8, Vec<Row>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Write(k, v) => {
                t.dirty_write(Row { k, v }).await.expect("w");
                let e = model.entry(k).or_default();
                if kind == TableKind::Bag {
                    if !e.contains(&Row { k, v }) {
                        e.push(Row { k, v });
                    }
                } else {
                    *e = vec![Row { k, v }];
                }
            }
            Op::Delete(k) => {
                t.dirty_delete(k).await.expect("d");
                model.remove(&k);
            }
            Op::DeleteObject(k, v) => {
                t.dirty_delete_object(Row { k, v }).await.expect("d");
                if let Some(e) = model.get_mut(&k) {
                    e.retain(|r| r != &Row { k, v });
                    if e.is_empty() {
                        model.remove(&k);
                    }
                }
            }
        }
    }
    let expected: Vec<Row> = model.values().flatten().cloned().collect();
    assert_eq!(t.all(), expected);
    assert_eq!(t.count(), expected.len());
    for k in 0..32 {
        assert_eq!(t.read(&k), model.get(&k).cloned().unwrap_or_default());
    }
    if kind == TableKind::OrderedSet && lo <= hi {
        let want: Vec<Row> = model.range(lo..hi).flat_map(|(_, v)| v.clone()).collect();
        assert_eq!(t.range(lo..hi).expect("range"), want);
        // From `lo` while the key is below `hi`: the same records.
        let keep = |r: &Row| r.k < hi;
        let got = t
            .range_while(std::ops::Bound::Included(lo), keep)
            .expect("range_while");
        assert_eq!(got, want);
        // The same, mapped to the values, without copies of the rows.
        let values = t
            .range_map_while(std::ops::Bound::Included(lo), |r| (r.k < hi).then_some(r.v))
            .expect("range_map_while");
        assert_eq!(values, want.iter().map(|r| r.v).collect::<Vec<_>>());
    }
}

fn block_on(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f);
}

proptest! {
    #[test]
    fn ordered_set_matches_btreemap(ops in proptest::collection::vec(op(), 0..64), lo in 0u8..32, hi in 0u8..32) {
        block_on(run(TableKind::OrderedSet, ops, lo, hi));
    }

    #[test]
    fn set_matches_model(ops in proptest::collection::vec(op(), 0..64)) {
        block_on(run(TableKind::Set, ops, 0, 0));
    }

    #[test]
    fn bag_matches_model(ops in proptest::collection::vec(op(), 0..64)) {
        block_on(run(TableKind::Bag, ops, 0, 0));
    }
}
