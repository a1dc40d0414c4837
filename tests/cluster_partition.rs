//! A partition between real node processes (made with the block-peer test
//! hook) in which both sides register the same global name: after healing,
//! every node agrees on one deterministic winner and the loser is told.

mod support;

use std::time::Duration;

use support::{TestNode, free_port, wait_until};

#[test]
fn same_name_on_both_sides_resolves_to_one_winner_after_healing() {
    let p1 = free_port();
    let mut n1 = TestNode::start("part1", p1, &[]);
    let mut n2 = TestNode::start("part2", free_port(), &[p1]);
    let mut n3 = TestNode::start("part3", free_port(), &[p1]);
    wait_until("mesh", Duration::from_secs(15), || {
        n1.members() == "part2,part3" && n2.members() == "part1,part3"
    });

    // Partition {part1, part3} | {part2}.
    n2.ok("block part1");
    n2.ok("block part3");
    n1.ok("block part2");
    n3.ok("block part2");
    wait_until("partitioned", Duration::from_secs(10), || {
        n1.members() == "part3" && n2.members().is_empty() && n3.members() == "part1"
    });

    // Both sides register the same name; part1 does it first, so it wins.
    n1.ok("register leader");
    wait_until("part3 sees part1's leader", Duration::from_secs(10), || {
        n3.ok("whereis leader") == "part1"
    });
    n2.ok("register leader");
    assert_eq!(n2.ok("whereis leader"), "part2");

    // Heal.
    for (n, peers) in [(&mut n1, ["part2"]), (&mut n3, ["part2"])] {
        for p in peers {
            n.ok(&format!("unblock {p}"));
        }
    }
    n2.ok("unblock part1");
    n2.ok("unblock part3");
    wait_until("healed", Duration::from_secs(15), || {
        n1.members() == "part2,part3"
            && n2.members() == "part1,part3"
            && n3.members() == "part1,part2"
    });

    for n in [&mut n1, &mut n2, &mut n3] {
        wait_until("one winner everywhere", Duration::from_secs(10), || {
            n.ok("registered") == "leader@part1"
        });
    }
    // The loser's actor was told, and the loser's node reported it.
    let told = std::time::Instant::now();
    while n2.ok("lost") != "leader" {
        assert!(
            told.elapsed() < Duration::from_secs(10),
            "loser not told; events of part2: {:?}",
            n2.events()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        n2.events()
            .iter()
            .any(|e| e == "event name_lost leader part1")
    );
    assert_eq!(n1.ok("lost"), "");
    // Messages to the name reach the winner.
    assert_eq!(n2.ok("call leader x"), "echo:x");
    assert_eq!(n2.ok("whereis leader"), "part1");
}
