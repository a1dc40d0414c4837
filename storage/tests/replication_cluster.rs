//! Replicated tables across real node processes
//! (`beamline-storage-testnode` on free ports of 127.0.0.1): writes on any
//! node are on every copy when the commit returns; the primary can be
//! killed and writes go on; a restarted node catches up before it serves;
//! a copy added under load ends identical; transactions from three nodes
//! on one counter lose no increment.

mod support;

use std::time::Duration;

use support::{TestNode, free_port, three_nodes, wait_until};

fn digest(n: &mut TestNode) -> String {
    n.ok("digest kv")
}

#[test]
fn write_anywhere_kill_the_primary_restart_and_add_a_copy_under_load() {
    let (mut n1, mut n2, mut n3) = three_nodes("ra");
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("create kv ram");
    }
    for n in [&mut n1, &mut n2, &mut n3] {
        wait_until("primary is ra1", Duration::from_secs(10), || {
            n.ok("primary kv") == "ra1"
        });
    }

    // A write on a replica: on every copy as soon as it returns.
    n2.ok("put kv a 1");
    n3.ok("put kv b 2");
    n1.ok("put kv c 3");
    for n in [&mut n1, &mut n2, &mut n3] {
        assert_eq!(n.ok("keys kv"), "a=1,b=2,c=3", "{}", n.name);
    }
    n2.ok("del kv c");
    assert_eq!(n3.ok("keys kv"), "a=1,b=2");

    // Kill the primary: writes continue on the others (ra2 takes over).
    n1.kill9();
    wait_until("ra2 is primary", Duration::from_secs(10), || {
        n2.ok("primary kv") == "ra2" && n3.ok("primary kv") == "ra2"
    });
    wait_until("write after failover", Duration::from_secs(10), || {
        n3.cmd("put kv d 4").starts_with("ok")
    });
    n2.ok("put kv e 5");
    for n in [&mut n2, &mut n3] {
        assert_eq!(n.ok("keys kv"), "a=1,b=2,d=4,e=5", "{}", n.name);
    }

    // Restart ra1 (RAM copy: empty): `create` returns once it caught up,
    // and it takes the primary role back.
    let mut n1 = TestNode::start("ra1", free_port(), &[n2.port]);
    assert!(n1.first_line.starts_with("ready"), "{}", n1.first_line);
    n1.ok("create kv ram");
    assert_eq!(n1.ok("keys kv"), "a=1,b=2,d=4,e=5");
    wait_until("ra1 primary again", Duration::from_secs(10), || {
        n2.ok("primary kv") == "ra1" && n3.ok("primary kv") == "ra1"
    });
    n3.ok("put kv f 6");
    for n in [&mut n1, &mut n2, &mut n3] {
        assert_eq!(n.ok("keys kv"), "a=1,b=2,d=4,e=5,f=6", "{}", n.name);
    }

    // A fourth node, without a copy: location-transparent reads and writes.
    let mut n4 = TestNode::start("ra4", free_port(), &[n1.port]);
    n4.ok("create kv none");
    assert_eq!(n4.ok("get kv f"), "6");
    n4.ok("put kv g 7");
    assert_eq!(n2.ok("get kv g"), "7");
    assert_eq!(n4.ok("digest kv"), "0:0:cbf29ce484222325");

    // Add a copy on it while two nodes write.
    n2.ok("load kv x 400");
    n3.ok("load kv y 400");
    n1.ok("addcopy kv ra4");
    assert_eq!(n4.ok("insync kv"), "true");
    assert_eq!(n2.ok("loadwait"), "400");
    assert_eq!(n3.ok("loadwait"), "400");
    let d = digest(&mut n1);
    assert!(d.starts_with("806:159625:"), "{d}");
    for n in [&mut n2, &mut n3, &mut n4] {
        assert_eq!(digest(n), d, "{}", n.name);
    }
    assert!(n1.ok("schema").contains("kv:ra1+ra2+ra3+ra4"));

    // And drop it again.
    n1.ok("delcopy kv ra4");
    assert_eq!(n4.ok("insync kv"), "false");
    n2.ok("put kv h 8");
    assert_eq!(n4.ok("get kv h"), "8");
    assert_eq!(n4.ok("digest kv"), "0:0:cbf29ce484222325");
}

#[test]
fn transactions_from_four_nodes_one_without_a_copy_are_exact() {
    let (mut n1, mut n2, mut n3) = three_nodes("rt");
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("create kv ram");
    }
    // rt4 holds no copy: its transactions read through the others.
    let mut n4 = TestNode::start("rt4", free_port(), &[n1.port]);
    assert!(n4.first_line.starts_with("ready"), "{}", n4.first_line);
    n4.ok("create kv none");
    for n in [&mut n1, &mut n2, &mut n3, &mut n4] {
        n.send("incr kv ctr 120");
    }
    for n in [&mut n1, &mut n2, &mut n3, &mut n4] {
        let r = n.recv(Duration::from_secs(60));
        assert_eq!(r, "ok ", "{}", n.name);
    }
    for n in [&mut n1, &mut n2, &mut n3] {
        assert_eq!(n.ok("get kv ctr"), "480", "{}", n.name);
        assert_eq!(n.ok("keys kv"), "ctr=480", "{}", n.name);
    }
    assert_eq!(n4.ok("get kv ctr"), "480");
    // Scans in a transaction on rt4 (all and count): the sum of every row
    // but `sum`, written as `sum`, while rt1 keeps adding rows.
    n1.ok("put kv a 5");
    n1.ok("load kv x 200");
    n4.ok("txsum kv sum");
    assert_eq!(n1.ok("loadwait"), "200");
    let sum: i64 = n4.ok("txsum kv sum").parse().expect("sum");
    // 480 + 5 + (0 + 1 + ... + 199), with the count of rows summed.
    assert_eq!(sum, 480 + 5 + 19900);
    assert_eq!(n2.ok("get kv sum"), sum.to_string());
    // Nothing is written by a transaction that aborts after a remote read.
    let r = n4.cmd("txabort kv ctr");
    assert!(r.contains("aborted: saw 480"), "{r}");
    assert_eq!(n3.ok("get kv ctr"), "480");
}

#[test]
fn multi_table_transactions_across_primaries_commit_with_two_phase_commit() {
    let p1 = free_port();
    let lease = ["--lease-ms", "800"];
    let mut n1 = TestNode::start_with("rm1", p1, &[], &lease);
    let mut n2 = TestNode::start_with("rm2", free_port(), &[p1], &lease);
    let mut n3 = TestNode::start_with("rm3", free_port(), &[n2.port], &lease);
    wait_until("full mesh", Duration::from_secs(15), || {
        n1.members() == "rm2,rm3" && n2.members() == "rm1,rm3" && n3.members() == "rm1,rm2"
    });
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("create kv ram");
        n.ok("create kv2 ram");
    }
    // `narrow` lives on rm2 and rm3 only: its primary is rm2, not rm1.
    n1.ok("create narrow none");
    n2.ok("create narrow ram");
    n3.ok("create narrow ram");
    wait_until("primaries", Duration::from_secs(10), || {
        n3.ok("primary kv") == "rm1" && n3.ok("primary narrow") == "rm2"
    });

    // Same primary: atomic, on every copy when it returns.
    n3.ok("tx2 kv kv2 k 7");
    for n in [&mut n1, &mut n2, &mut n3] {
        assert_eq!(n.ok("keys kv"), "k=7", "{}", n.name);
        assert_eq!(n.ok("keys kv2"), "k=7", "{}", n.name);
    }
    // Different primaries: two-phase commit, on every copy of both.
    n1.ok("tx2 kv narrow j 1");
    for n in [&mut n1, &mut n2, &mut n3] {
        assert_eq!(n.ok("get kv j"), "1", "{}", n.name);
        assert_eq!(n.ok("get narrow j"), "1", "{}", n.name);
    }
    // Read-modify-write on both tables from three nodes at once (rm1
    // reads `narrow` through rm2): every increment on both, none twice.
    for n in [&mut n1, &mut n2, &mut n3] {
        n.send("incr2 kv narrow c 40");
    }
    for n in [&mut n1, &mut n2, &mut n3] {
        let r = n.recv(Duration::from_secs(60));
        assert_eq!(r, "ok ", "{}", n.name);
    }
    for n in [&mut n2, &mut n3] {
        assert_eq!(n.ok("keys narrow"), "c=120,j=1", "{}", n.name);
        assert_eq!(n.ok("get kv c"), "120", "{}", n.name);
    }
    // A table of one node only cannot join a transaction across
    // primaries; with the others' primary here it can.
    n1.ok("createlocal mine");
    n2.ok("createlocal mine");
    n1.ok("tx2 kv mine m 1");
    assert_eq!(n3.ok("get kv m"), "1");
    assert_eq!(n1.ok("keys mine"), "m=1");
    let r = n2.cmd("tx2 kv mine m 2");
    assert!(r.contains("across primaries"), "{r}");
    assert_eq!(n3.ok("get kv m"), "1");

    // The coordinator dies between the phases: both participants (rm1 for
    // kv, rm2 for narrow) hold their reservation until the lease runs
    // out, find the coordinator gone and nobody told to commit, and abort.
    n3.ok("crash2pc");
    n3.send("tx2 kv narrow z 9");
    wait_until("rm3 is down", Duration::from_secs(10), || {
        n1.members() == "rm2" && n2.members() == "rm1"
    });
    n3.kill9();
    // Writes to both tables go on once the reservations are released.
    n1.ok("put kv after 1");
    n2.ok("put narrow after 1");
    for n in [&mut n1, &mut n2] {
        assert_eq!(n.ok("get kv z"), "none", "{}", n.name);
        assert_eq!(n.ok("get narrow z"), "none", "{}", n.name);
        assert_eq!(n.ok("get kv after"), "1", "{}", n.name);
    }
    // The table without a copy on rm1 is still written and read from rm1.
    n1.ok("put narrow n 5");
    assert_eq!(n1.ok("get narrow n"), "5");
    assert_eq!(n2.ok("get narrow n"), "5");
}
