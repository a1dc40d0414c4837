//! Node-owned tables and late replicas, with real node processes: rows
//! vanish with their node and come back merged (a key owned on both sides
//! of a partition is settled by the table's conflict callback); a replica
//! that does not ack in time is marked stale and copies the table again.

mod support;

use std::time::Duration;

use support::{three_nodes, wait_until};

#[test]
fn node_owned_rows_are_purged_on_node_down_and_merged_on_rejoin() {
    let (mut n1, mut n2, mut n3) = three_nodes("ro");
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("create sess ram owned");
    }
    n1.ok("put sess u1 1");
    n2.ok("put sess u2 2");
    n3.ok("put sess u3 3");
    for n in [&mut n1, &mut n2, &mut n3] {
        assert_eq!(n.ok("keys sess"), "u1=1,u2=2,u3=3", "{}", n.name);
    }

    // Cut ro3 off: each side drops the other's rows.
    n1.ok("block ro3");
    n2.ok("block ro3");
    n3.ok("block ro1");
    n3.ok("block ro2");
    wait_until("partitioned", Duration::from_secs(10), || {
        n1.members() == "ro2" && n3.members().is_empty()
    });
    wait_until("ro3's rows purged", Duration::from_secs(5), || {
        n1.ok("keys sess") == "u1=1,u2=2" && n2.ok("keys sess") == "u1=1,u2=2"
    });
    wait_until(
        "ro1 and ro2 rows purged on ro3",
        Duration::from_secs(5),
        || n3.ok("keys sess") == "u3=3",
    );
    assert!(n1.events().iter().any(|e| e == "event purged sess ro3 1"));

    // Both sides write while apart, one key on both sides.
    n1.ok("put sess both 10");
    n3.ok("put sess both 20");
    n3.ok("put sess u5 5");
    n2.ok("del sess u2");

    // Heal: rows merge; `both` goes to the larger value (the test node's
    // conflict rule), on every node.
    n1.ok("unblock ro3");
    n2.ok("unblock ro3");
    n3.ok("unblock ro1");
    n3.ok("unblock ro2");
    let want = "both=20,u1=1,u3=3,u5=5";
    for n in [&mut n1, &mut n2, &mut n3] {
        wait_until("merged", Duration::from_secs(15), || {
            n.ok("keys sess") == want
        });
    }
    wait_until("conflict reported", Duration::from_secs(5), || {
        n1.events()
            .iter()
            .any(|e| e == "event conflict sess ro3 ro1")
    });
    // Rows keep their owner after the merge: ro3's go with ro3.
    n3.kill9();
    for n in [&mut n1, &mut n2] {
        wait_until("ro3's rows gone", Duration::from_secs(5), || {
            n.ok("keys sess") == "u1=1"
        });
    }
}

#[test]
fn a_replica_that_misses_an_ack_is_marked_stale_and_resyncs() {
    // Acks are due within 300 ms; a peer is declared down after 2 s.
    let p1 = support::free_port();
    let extra = ["--ack-ms", "300"];
    let mut n1 = support::TestNode::start_with("rs1", p1, &[], &extra);
    let mut n2 = support::TestNode::start_with("rs2", support::free_port(), &[p1], &extra);
    let mut n3 = support::TestNode::start_with("rs3", support::free_port(), &[p1], &extra);
    wait_until("mesh", Duration::from_secs(15), || {
        n1.members() == "rs2,rs3" && n3.members() == "rs1,rs2"
    });
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("create kv ram");
    }
    n2.ok("put kv a 1");

    n3.signal("STOP");
    n2.ok("put kv b 2");
    n1.ok("put kv c 3");
    n3.signal("CONT");
    wait_until("stale reported", Duration::from_secs(5), || {
        n1.events().iter().any(|e| e == "event stale kv rs3")
    });
    let want = n1.ok("digest kv");
    wait_until("rs3 resynced", Duration::from_secs(10), || {
        n3.ok("digest kv") == want && n3.ok("insync kv") == "true"
    });
    // And it follows the primary again.
    n2.ok("put kv d 4");
    assert_eq!(n3.ok("keys kv"), "a=1,b=2,c=3,d=4");
}
