//! A listener's access rule: on the address before the stream starts,
//! and on the account after authentication (as ejabberd's c2s `access`).

#![allow(clippy::unwrap_used)] // a test: a failed set-up step should fail it

mod support;

use beamline_xmpp::client::Client;
use beamline_xmpp::config::Config;
use support::{T, TestServer};

fn rules(config: &mut Config, toml_text: &str) {
    let parsed = Config::from_str(toml_text, "test.toml").unwrap();
    config.acl = parsed.acl;
    config.access_rules = parsed.access_rules;
    for l in &mut config.listeners {
        l.access = Some("c2s".into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_account_fails_authentication() {
    let s = TestServer::start_with(|c| {
        rules(
            c,
            r#"
            [acl.blocked]
            users = ["mallory@localhost"]
            [access_rules]
            c2s = [{ deny = "blocked" }, { allow = "all" }]
            "#,
        )
    })
    .await;
    s.register("alice", "wonderland").await;
    s.register("mallory", "evil").await;
    let alice = tokio::time::timeout(T, Client::connect(s.config("alice", "wonderland")))
        .await
        .unwrap();
    assert!(alice.is_ok(), "{:?}", alice.err());
    let err = tokio::time::timeout(T, Client::connect(s.config("mallory", "evil")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.sasl_condition(), Some("not-authorized"), "{err:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_address_is_not_served() {
    let s = TestServer::start_with(|c| {
        rules(
            c,
            r#"
            [acl.lo]
            ips = ["127.0.0.0/8"]
            [access_rules]
            c2s = [{ deny = "lo" }, { allow = "all" }]
            "#,
        )
    })
    .await;
    s.register("alice", "wonderland").await;
    let err = tokio::time::timeout(T, Client::connect(s.config("alice", "wonderland")))
        .await
        .unwrap();
    assert!(err.is_err(), "a denied address logged in");
    assert_eq!(
        s.server
            .server_stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_shaper_paces_what_a_client_sends() {
    let s = TestServer::start_with(|c| {
        let parsed =
            Config::from_str("[shapers.slow]\nrate = 4000\nburst = 4000\n", "test.toml").unwrap();
        c.shapers = parsed.shapers;
        for l in &mut c.listeners {
            l.shaper = Some("slow".into());
        }
    })
    .await;
    s.register("alice", "wonderland").await;
    let mut alice = tokio::time::timeout(T, Client::connect(s.config("alice", "wonderland")))
        .await
        .unwrap()
        .unwrap();
    // 16 KB at 4 KB/s with a 4 KB burst: the server reads it in no less
    // than 3 s, which the round trip after it shows.
    let body = "x".repeat(1000);
    let start = std::time::Instant::now();
    for i in 0..16 {
        alice
            .send(&support::message(
                "alice@localhost",
                &format!("m{i}"),
                &body,
            ))
            .await
            .unwrap();
    }
    support::sync(&mut alice).await;
    let took = start.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(2500),
        "16 KB through a 4 KB/s shaper took only {took:?}"
    );
    s.stop().await;
}
