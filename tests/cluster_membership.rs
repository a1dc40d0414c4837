//! Cluster membership and registry across real node processes: three nodes
//! agree on names and groups; a killed, a frozen (SIGSTOP) and a restarted
//! node are noticed and rejoin by themselves; a wrong cookie is reported.

mod support;

use std::time::Duration;

use support::{HB_TIMEOUT, TestNode, free_port, three_nodes, wait_until};

#[test]
fn three_nodes_agree_on_names_and_groups() {
    let (mut n1, mut n2, mut n3) = three_nodes("reg");

    n1.ok("register svc.a");
    n3.ok("register svc.c");
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("join_group chat room");
    }
    n2.ok("join_group chat other");

    let nodes = [&mut n1, &mut n2, &mut n3];
    for n in nodes {
        wait_until(
            "names and groups visible everywhere",
            Duration::from_secs(10),
            || {
                n.ok("registered") == "svc.a@reg1,svc.c@reg3"
                    && n.ok("members_of chat room") == "reg1,reg2,reg3"
                    && n.ok("members_of chat other") == "reg2"
            },
        );
    }

    // Unique: a second holder is refused while the first is visible.
    let reply = n2.cmd("register svc.a");
    assert!(reply.contains("already registered on node reg1"), "{reply}");

    // Unregister and leave_group propagate.
    n3.ok("unregister svc.c");
    n2.ok("leave_group chat other");
    for n in [&mut n1, &mut n2, &mut n3] {
        wait_until(
            "unregister and leave visible",
            Duration::from_secs(10),
            || n.ok("whereis svc.c") == "none" && n.ok("members_of chat other").is_empty(),
        );
    }

    // A dead actor's names and memberships vanish everywhere.
    n1.ok("stop_worker");
    for n in [&mut n2, &mut n3] {
        wait_until("dead actor removed", Duration::from_secs(10), || {
            n.ok("whereis svc.a") == "none" && n.ok("members_of chat room") == "reg2,reg3"
        });
    }

    // Membership changes are events.
    wait_until("group events", Duration::from_secs(5), || {
        let ev = n2.events();
        ev.iter().any(|e| e == "event group_joined chat room reg3")
            && ev.iter().any(|e| e == "event group_left chat room reg1")
            && ev.iter().any(|e| e == "event name_unregistered svc.a reg1")
    });

    // A graceful leave is an event with its reason, and nobody redials.
    n3.ok("leave");
    wait_until("reg3 left", Duration::from_secs(5), || {
        n1.members() == "reg2" && n2.members() == "reg1"
    });
    assert!(n1.events().iter().any(|e| e == "event node_down reg3 Left"));
}

#[test]
fn killed_node_is_down_within_the_heartbeat_timeout_and_a_restart_rejoins() {
    let (mut n1, mut n2, mut n3) = three_nodes("kill");
    n3.ok("register k3");
    n3.ok("join_group s g");
    wait_until("k3 visible", Duration::from_secs(10), || {
        n1.ok("whereis k3") == "kill3" && n2.ok("members_of s g") == "kill3"
    });

    let port3 = n3.port;
    n3.kill9();
    let took = wait_until(
        "kill3 down on both",
        HB_TIMEOUT + Duration::from_secs(1),
        || n1.members() == "kill2" && n2.members() == "kill1",
    );
    eprintln!("kill -9 noticed after {took:?}");
    assert_eq!(n1.ok("whereis k3"), "none");
    assert_eq!(n1.ok("members_of s g"), "");
    assert_eq!(n2.ok("whereis k3"), "none");

    // A new process under the same name and port joins through one seed and
    // is found by everybody (the others also redial it by themselves).
    let mut n3 = TestNode::start("kill3", port3, &[n1.port]);
    assert!(n3.first_line.starts_with("ready"), "{}", n3.first_line);
    n3.ok("register k3");
    wait_until(
        "restarted kill3 back everywhere",
        Duration::from_secs(10),
        || {
            n1.members() == "kill2,kill3"
                && n2.members() == "kill1,kill3"
                && n2.ok("whereis k3") == "kill3"
        },
    );
}

#[test]
fn frozen_node_is_declared_down_and_rejoins_after_sigcont() {
    let (mut n1, mut n2, mut n3) = three_nodes("stop");
    n3.ok("register s3");
    wait_until("s3 visible", Duration::from_secs(10), || {
        n1.ok("whereis s3") == "stop3"
    });

    n3.signal("STOP");
    let took = wait_until(
        "stop3 declared down",
        HB_TIMEOUT + Duration::from_secs(2),
        || n1.members() == "stop2" && n2.members() == "stop1",
    );
    eprintln!("SIGSTOP noticed after {took:?}");
    assert_eq!(n1.ok("whereis s3"), "none");
    assert!(
        n1.events()
            .iter()
            .any(|e| e == "event node_down stop3 HeartbeatTimeout"),
        "{:?}",
        n1.events()
    );

    n3.signal("CONT");
    let took = wait_until("stop3 rejoined by itself", Duration::from_secs(15), || {
        n1.members() == "stop2,stop3"
            && n2.members() == "stop1,stop3"
            && n3.members() == "stop1,stop2"
            && n1.ok("whereis s3") == "stop3"
    });
    eprintln!("rejoined {took:?} after SIGCONT");
}

#[test]
fn wrong_cookie_is_reported_to_the_joiner() {
    let p1 = free_port();
    let mut n1 = TestNode::start("cookie1", p1, &[]);
    let bad = TestNode::start_with("cookie2", free_port(), &[p1], "not-the-cookie", &[]);
    assert!(
        bad.first_line.starts_with("joinerr") && bad.first_line.contains("cookie rejected"),
        "{}",
        bad.first_line
    );
    assert_eq!(n1.members(), "");
}

#[test]
fn restarted_seed_with_no_seeds_is_redialled_by_the_others() {
    let (mut n1, mut n2, mut n3) = three_nodes("seed");
    let port1 = n1.port;
    n1.kill9();
    wait_until("seed1 down", HB_TIMEOUT + Duration::from_secs(1), || {
        n2.members() == "seed3" && n3.members() == "seed2"
    });
    // Same name and port, no seeds: the others find it again by themselves.
    let mut n1 = TestNode::start("seed1", port1, &[]);
    let took = wait_until("seed1 redialled", Duration::from_secs(15), || {
        n1.members() == "seed2,seed3"
            && n2.members() == "seed1,seed3"
            && n3.members() == "seed1,seed2"
    });
    eprintln!("restarted seed back after {took:?}");
}
