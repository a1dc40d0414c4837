//! Typed messages between real node processes: cast and call by global name
//! and by group, per-sender order, refused bad payloads that leave the actor
//! alive, NodeDown for a call in flight, and a cluster over TLS.

mod support;

use std::time::{Duration, Instant};

use support::{TestNode, free_port, three_nodes, wait_until};

#[test]
fn cast_and_call_by_name_and_group_keep_order() {
    let (mut n1, mut n2, mut n3) = three_nodes("msg");
    n1.ok("register echo");
    for n in [&mut n1, &mut n2, &mut n3] {
        n.ok("join_group s all");
    }
    wait_until("echo and group visible", Duration::from_secs(10), || {
        n2.ok("whereis echo") == "msg1" && n3.ok("members_of s all") == "msg1,msg2,msg3"
    });

    assert_eq!(n2.ok("call echo hello"), "echo:hello");
    // The same API reaches a local actor.
    assert_eq!(n1.ok("call echo local"), "echo:local");

    n2.ok("castmany echo 2000");
    let expected: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
    let expected = expected.join("|");
    wait_until("2000 casts in order", Duration::from_secs(20), || {
        n1.ok("notes") == expected
    });

    // Batches keep the order too, also between a single cast and a batch.
    n1.ok("clear_notes");
    n2.ok("cast echo first");
    n2.ok("castbatch echo 1000");
    n2.ok("cast echo last");
    let mut expected: Vec<String> = vec!["first".into()];
    expected.extend((0..1000).map(|i| i.to_string()));
    expected.push("last".into());
    let expected = expected.join("|");
    wait_until("batched casts in order", Duration::from_secs(20), || {
        n1.ok("notes") == expected
    });

    // Order holds per destination actor, whichever handle is used.
    n1.ok("clear_notes");
    n3.ok("castmix echo s all 1000");
    let expected: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let expected = expected.join("|");
    wait_until("mixed casts in order", Duration::from_secs(20), || {
        n1.ok("notes") == expected
    });

    n1.ok("clear_notes");
    assert_eq!(n3.ok("cast_group s all fanout"), "3");
    for n in [&mut n1, &mut n2, &mut n3] {
        wait_until("group cast delivered", Duration::from_secs(10), || {
            n.ok("notes").split('|').any(|x| x == "fanout")
        });
    }
}

#[test]
fn undecodable_payloads_are_refused_and_the_actor_lives_on() {
    let p1 = free_port();
    let mut n1 = TestNode::start("bad1", p1, &[]);
    let mut n2 = TestNode::start("bad2", free_port(), &[p1]);
    n1.ok("register target");
    wait_until("target visible", Duration::from_secs(10), || {
        n2.ok("whereis target") == "bad1"
    });

    // A call with a variant the receiver does not know: an error for the caller.
    let reply = n2.cmd("badcall target");
    assert!(
        reply.starts_with("err refused by the receiver") && reply.contains("could not decode"),
        "{reply}"
    );
    // Casts of a newer variant and of garbage bytes: dropped and logged there.
    n2.ok("badcast target");
    n2.ok("rawcast target");
    // The actor is alive and still serves, in order.
    n2.ok("cast target after");
    assert_eq!(n2.ok("call target still-here"), "echo:still-here");
    assert_eq!(n1.ok("notes"), "after");
    assert_eq!(n1.ok("whereis target"), "bad1");
}

#[test]
fn call_in_flight_fails_with_node_down_when_the_peer_dies() {
    let p1 = free_port();
    let mut n1 = TestNode::start("down1", p1, &[]);
    let mut n2 = TestNode::start("down2", free_port(), &[p1]);
    n2.ok("register slow");
    wait_until("slow visible", Duration::from_secs(10), || {
        n1.ok("whereis slow") == "down2"
    });

    n1.send("callslow slow 20000");
    wait_until(
        "the call reached the actor",
        Duration::from_secs(10),
        || n2.ok("notes") == "sleeping",
    );
    let killed_at = Instant::now();
    n2.kill9();
    let reply = n1.recv(Duration::from_secs(10));
    let after = killed_at.elapsed();
    assert!(
        reply.starts_with("err node down2 went down before replying"),
        "{reply}"
    );
    assert!(after < Duration::from_secs(2), "NodeDown took {after:?}");
}

#[test]
fn nodes_talk_over_mutual_tls() {
    let dir = format!("{}/tls-{}", env!("CARGO_TARGET_TMPDIR"), free_port());
    std::fs::create_dir_all(&dir).expect("tls dir");
    let tls = beamline::runtime::cluster::TlsConfig::self_signed("localhost").expect("certs");
    std::fs::write(format!("{dir}/cert.pem"), &tls.cert_chain_pem).expect("write cert");
    std::fs::write(format!("{dir}/key.pem"), &tls.key_pem).expect("write key");
    std::fs::write(format!("{dir}/ca.pem"), &tls.ca_pem).expect("write ca");

    let p1 = free_port();
    let mut n1 = TestNode::start_with("tls1", p1, &[], "secret", &["--tls-dir", &dir]);
    let n2 = TestNode::start_with("tls2", free_port(), &[p1], "secret", &["--tls-dir", &dir]);
    let mut n3 = TestNode::start_with(
        "tls3",
        free_port(),
        &[n2.port],
        "secret",
        &["--tls-dir", &dir],
    );
    wait_until("TLS mesh", Duration::from_secs(15), || {
        n1.members() == "tls2,tls3" && n3.members() == "tls1,tls2"
    });
    n1.ok("register secure");
    wait_until("name over TLS", Duration::from_secs(10), || {
        n3.ok("whereis secure") == "tls1"
    });
    assert_eq!(n3.ok("call secure hi"), "echo:hi");

    // A plain-TCP node cannot join a TLS cluster.
    let plain = TestNode::start_with(
        "plain",
        free_port(),
        &[p1],
        "secret",
        &["--join-timeout-ms", "2000"],
    );
    assert!(
        plain.first_line.starts_with("joinerr"),
        "{}",
        plain.first_line
    );
}

#[test]
fn call_to_a_frozen_node_fails_with_node_down_after_the_heartbeat_timeout() {
    let p1 = free_port();
    let mut n1 = TestNode::start("froz1", p1, &[]);
    let mut n2 = TestNode::start("froz2", free_port(), &[p1]);
    n2.ok("register frozen");
    wait_until("frozen visible", Duration::from_secs(10), || {
        n1.ok("whereis frozen") == "froz2"
    });

    n2.signal("STOP");
    let sent_at = Instant::now();
    n1.send("call frozen hello");
    let reply = n1.recv(Duration::from_secs(10));
    let after = sent_at.elapsed();
    assert!(
        reply.starts_with("err node froz2 went down before replying"),
        "{reply}"
    );
    assert!(
        after < support::HB_TIMEOUT + Duration::from_secs(1),
        "NodeDown took {after:?}"
    );
    n2.signal("CONT");
    wait_until("froz2 back", Duration::from_secs(15), || {
        n1.members() == "froz2"
    });
    assert_eq!(n1.ok("call frozen again"), "echo:again");
}
