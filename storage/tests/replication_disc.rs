//! A disc copy across restarts, with real node processes: a node restarted
//! while the others wrote catches up from them before `create_table`
//! returns; restarted alone, it serves what its disc copy holds (which
//! includes the copy it caught up with).

mod support;

use std::time::Duration;

use support::{TestNode, free_port, wait_until};

#[test]
fn a_disc_copy_catches_up_after_a_restart_and_survives_alone() {
    let dir = format!("{}/replication-disc-rd3", env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::remove_dir_all(&dir);
    let disc = ["--dir", dir.as_str()];

    let p1 = free_port();
    let mut n1 = TestNode::start("rd1", p1, &[]);
    let mut n2 = TestNode::start("rd2", free_port(), &[p1]);
    let mut n3 = TestNode::start_with("rd3", free_port(), &[p1], &disc);
    wait_until("mesh", Duration::from_secs(15), || {
        n1.members() == "rd2,rd3" && n3.members() == "rd1,rd2"
    });
    n1.ok("create kv ram");
    n2.ok("create kv ram");
    n3.ok("create kv disc");
    n1.ok("put kv a 1");
    n2.ok("put kv b 2");
    assert_eq!(n3.ok("keys kv"), "a=1,b=2");

    // Down while the others write.
    n3.kill9();
    n2.ok("put kv c 3");
    n1.ok("del kv a");
    let mut n3 = TestNode::start_with("rd3", free_port(), &[p1], &disc);
    assert!(n3.first_line.starts_with("ready"), "{}", n3.first_line);
    n3.ok("create kv disc");
    assert_eq!(n3.ok("keys kv"), "b=2,c=3");
    n1.ok("put kv d 4");
    assert_eq!(n3.ok("keys kv"), "b=2,c=3,d=4");

    // Everybody down; rd3 comes back alone and serves its disc copy.
    n1.kill9();
    n2.kill9();
    n3.kill9();
    let mut n3 = TestNode::start_with("rd3", free_port(), &[], &disc);
    n3.ok("create kv disc");
    assert_eq!(n3.ok("primary kv"), "rd3");
    assert_eq!(n3.ok("keys kv"), "b=2,c=3,d=4");
    n3.ok("put kv e 5");
    assert_eq!(n3.ok("keys kv"), "b=2,c=3,d=4,e=5");
}
