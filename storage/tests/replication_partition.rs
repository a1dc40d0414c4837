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
