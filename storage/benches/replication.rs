//! Replicated transaction commits per second, with real node processes
//! (`beamline-storage-testnode`, built with this bench's profile): a table
//! with 1 copy and a table with 3 copies, committed on the primary and
//! from a replica (forwarded to the primary), by 1 and by 16 concurrent
//! tasks, each task incrementing its own counter in read-modify-write
//! transactions. Run: `cargo bench -p beamline-storage --bench replication`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::{TestNode, free_port, wait_until};

fn main() {
    let p1 = free_port();
    let mut n1 = TestNode::start("bn1", p1, &[]);
    let mut n2 = TestNode::start("bn2", free_port(), &[p1]);
    let mut n3 = TestNode::start("bn3", free_port(), &[p1]);
    wait_until("mesh", Duration::from_secs(15), || {
        n1.members() == "bn2,bn3" && n3.members() == "bn1,bn2"
    });
    n1.ok("create one ram");
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("create three ram");
    }
    n2.ok("create one none");
    // Warm-up (connections, allocations), discarded.
    n1.ok("bench one 2000 16");
    n1.ok("bench three 2000 16");

    println!("replicated read-modify-write transactions, commits/s (3 runs)");
    println!("{:<44} {:>6} {:>24}", "table / where", "tasks", "commits/s");
    let cases: [(&str, usize, &str, i64); 6] = [
        ("1 copy, on its node", 0, "one", 1),
        ("1 copy, on its node", 0, "one", 16),
        ("3 copies, on the primary", 0, "three", 1),
        ("3 copies, on the primary", 0, "three", 16),
        ("3 copies, from a replica (forwarded)", 1, "three", 1),
        ("3 copies, from a replica (forwarded)", 1, "three", 16),
    ];
    for (label, at, table, tasks) in cases {
        let node = match at {
            0 => &mut n1,
            _ => &mut n2,
        };
        let n = if tasks == 1 { 2_000 } else { 16_000 };
        let runs: Vec<String> = (0..3)
            .map(|_| node.ok(&format!("bench {table} {n} {tasks}")))
            .collect();
        println!("{label:<44} {tasks:>6} {:>24}", runs.join(" / "));
    }
    // Every copy agrees after all that.
    let d = n1.ok("digest three");
    assert_eq!(n2.ok("digest three"), d);
    assert_eq!(n3.ok("digest three"), d);
}
