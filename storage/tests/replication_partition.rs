//! A partition of three real node processes (made with the block-peer test
//! hook) in which both sides write to one replicated table: when it heals,
//! every node reports the partition, the majority side's data wins
//! everywhere, and the minority node reports the rows it lost.

mod support;

use std::time::Duration;

use support::{three_nodes, wait_until};

#[test]
fn a_healed_partition_keeps_the_majority_side_and_reports_the_losses() {
    let (mut n1, mut n2, mut n3) = three_nodes("pp");
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("create kv ram");
    }
    n2.ok("put kv a 1");
    n3.ok("put kv z 26");

    // {pp1, pp2} | {pp3}.
    n1.ok("block pp3");
    n2.ok("block pp3");
    n3.ok("block pp1");
    n3.ok("block pp2");
    wait_until("partitioned", Duration::from_secs(10), || {
        n1.members() == "pp2" && n2.members() == "pp1" && n3.members().is_empty()
    });
    wait_until("pp3 is its own primary", Duration::from_secs(10), || {
        n3.ok("primary kv") == "pp3"
    });

    // Both sides write.
    n3.ok("put kv a 30");
    n3.ok("put kv b 2");
    n1.ok("put kv a 10");
    n2.ok("put kv c 3");
    n2.ok("del kv z");
    assert_eq!(n3.ok("keys kv"), "a=30,b=2,z=26");
    assert_eq!(n1.ok("keys kv"), "a=10,c=3");

    // Heal.
    n1.ok("unblock pp3");
    n2.ok("unblock pp3");
    n3.ok("unblock pp1");
    n3.ok("unblock pp2");
    wait_until("healed", Duration::from_secs(15), || {
        n1.members() == "pp2,pp3" && n3.members() == "pp1,pp2"
    });

    // The minority side lost: it says so, with the rows it lost.
    wait_until("pp3 reports the loss", Duration::from_secs(10), || {
        n3.events()
            .iter()
            .any(|e| e.starts_with("event partition kv lost pp"))
    });
    wait_until("pp3 lists its lost rows", Duration::from_secs(10), || {
        n3.events()
            .iter()
            .any(|e| e.starts_with("event lostrows kv pp") && e.ends_with(" a,b,z"))
    });
    wait_until(
        "the majority reports its win",
        Duration::from_secs(10),
        || {
            n1.events()
                .iter()
                .chain(n2.events().iter())
                .any(|e| e == "event partition kv won pp3")
        },
    );
    for n in [&mut n1, &mut n2, &mut n3] {
        wait_until("majority data everywhere", Duration::from_secs(10), || {
            n.ok("keys kv") == "a=10,c=3"
        });
    }

    // One primary again; writes reach every copy.
    wait_until("one primary", Duration::from_secs(10), || {
        n3.ok("primary kv") == "pp1" && n2.ok("primary kv") == "pp1"
    });
    n3.ok("put kv d 4");
    for n in [&mut n1, &mut n2, &mut n3] {
        assert_eq!(n.ok("keys kv"), "a=10,c=3,d=4", "{}", n.name);
    }
}

/// Keys of every `lostrows` event of `table` a node printed.
fn lost_keys(n: &support::TestNode, table: &str) -> Vec<String> {
    let prefix = format!("event lostrows {table} ");
    n.events()
        .iter()
        .filter_map(|e| e.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once(' ').map(|(_, keys)| keys.to_string()))
        .flat_map(|keys| {
            keys.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn writes_racing_the_heal_are_kept_or_reported_lost() {
    let (mut n1, mut n2, mut n3) = three_nodes("ph");
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("create kv ram");
    }
    // {ph1} | {ph2, ph3}: the minority holds the old primary, which keeps
    // committing alone; ph2 takes over on the majority side in a newer
    // epoch. When they meet, ph1 is the smallest name again and both
    // sides' commits are in flight to each other.
    n1.ok("block ph2");
    n1.ok("block ph3");
    n2.ok("block ph1");
    n3.ok("block ph1");
    wait_until("partitioned", Duration::from_secs(10), || {
        n1.members().is_empty() && n2.members() == "ph3" && n3.members() == "ph2"
    });
    wait_until(
        "ph2 is primary of its side",
        Duration::from_secs(10),
        || n2.ok("primary kv") == "ph2" && n3.ok("primary kv") == "ph2",
    );

    // Both sides keep writing, before, during and after the heal.
    n1.ok("loadall kv m 600 5");
    n2.ok("loadall kv w 600 5");
    wait_until("both sides wrote", Duration::from_secs(10), || {
        n1.ok("localkeys kv").parse::<usize>().unwrap_or(0) >= 50
            && n2.ok("localkeys kv").parse::<usize>().unwrap_or(0) >= 50
    });
    n1.ok("unblock ph2");
    n1.ok("unblock ph3");
    n2.ok("unblock ph1");
    n3.ok("unblock ph1");
    wait_until("healed", Duration::from_secs(15), || {
        n1.members() == "ph2,ph3" && n2.members() == "ph1,ph3"
    });

    let mut acked: Vec<String> = Vec::new();
    for n in [&mut n1, &mut n2] {
        acked.extend(
            n.ok("loadacked")
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string),
        );
    }
    let d1 = n1.ok("digest kv");
    wait_until("copies identical", Duration::from_secs(15), || {
        let d = n1.ok("digest kv");
        d == n2.ok("digest kv") && d == n3.ok("digest kv")
    });
    let present: std::collections::HashSet<String> = n1
        .ok("keys kv")
        .split(',')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    let lost: std::collections::HashSet<String> = [&n1, &n2, &n3]
        .iter()
        .flat_map(|n| lost_keys(n, "kv"))
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| !present.contains(*k) && !lost.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes neither kept nor reported lost: {missing:?} \
         (acked {}, present {}, reported lost {}, digest {d1})",
        acked.len(),
        present.len(),
        lost.len()
    );
    // The minority side's writes made while apart were reported.
    assert!(lost.iter().any(|k| k.starts_with('m')), "{lost:?}");
    // Every write of the majority side was kept.
    assert!(
        acked
            .iter()
            .filter(|k| k.starts_with('w'))
            .all(|k| present.contains(k))
    );
}
