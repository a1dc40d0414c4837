//! mod_ping (XEP-0199), mod_version (XEP-0092) and mod_time (XEP-0202) end
//! to end.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use beamline_xmpp::client::Client;
use beamline_xmpp::{Element, ns};
use support::{DOMAIN, TestServer, error_condition, expect_client_stream_error};

fn table(pairs: &[(&str, toml::Value)]) -> toml::Table {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

async fn server_with(modules: Vec<(&str, toml::Table)>) -> TestServer {
    let s = TestServer::start_with(move |c| {
        for (m, t) in modules {
            c.modules.insert(m.to_owned(), t);
        }
    })
    .await;
    s.register("alice", "secret").await;
    s
}

async fn server() -> TestServer {
    server_with(vec![
        ("mod_ping", toml::Table::new()),
        ("mod_version", toml::Table::new()),
        ("mod_time", toml::Table::new()),
    ])
    .await
}

fn iq(kind: &str, to: Option<&str>, child: Element) -> Element {
    Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", kind)
        .attr_opt("to", to)
        .append(child)
        .build()
}

#[tokio::test]
async fn ping_the_server_and_an_account() {
    let s = server().await;
    let mut alice = s.login("alice", "secret", Some("r")).await;
    let r = alice
        .iq(iq("get", Some(DOMAIN), Element::new("ping", ns::PING)))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(r.attr("from"), Some(DOMAIN));
    assert_eq!(r.children().count(), 0, "an empty result");
    // The server answers for the account's bare JID too (as ejabberd).
    let r = alice
        .iq(iq(
            "get",
            Some("alice@localhost"),
            Element::new("ping", ns::PING),
        ))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    let r = alice
        .iq(iq("set", Some(DOMAIN), Element::new("ping", ns::PING)))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "bad-request");
    alice.close().await.unwrap();
    s.stop().await;
}

fn version_of(r: &Element) -> (String, String, Option<String>) {
    let q = r.get_child("query", ns::VERSION).unwrap();
    (
        q.child_text("name", ns::VERSION).unwrap(),
        q.child_text("version", ns::VERSION).unwrap(),
        q.child_text("os", ns::VERSION),
    )
}

#[tokio::test]
async fn version_without_and_with_os() {
    let s = server().await;
    let mut alice = s.login("alice", "secret", Some("r")).await;
    let get = iq("get", Some(DOMAIN), Element::new("query", ns::VERSION));
    let r = alice.iq(get.clone()).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        version_of(&r),
        (
            "beamline".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
            None
        )
    );
    let r = alice
        .iq(iq("set", Some(DOMAIN), Element::new("query", ns::VERSION)))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "not-allowed");
    // Not the server's to answer for an account.
    let r = alice
        .iq(iq(
            "get",
            Some("alice@localhost"),
            Element::new("query", ns::VERSION),
        ))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "service-unavailable");

    // show_os = true, by reloading the module with the option.
    s.server
        .stop_module(Some(DOMAIN), "mod_version")
        .await
        .unwrap();
    let mut opts = serde_json::Map::new();
    opts.insert("show_os".into(), true.into());
    s.server
        .start_module(Some(DOMAIN), "mod_version", opts)
        .await
        .unwrap();
    let r = alice.iq(get).await.unwrap();
    let (_, _, os) = version_of(&r);
    assert!(
        os.unwrap().starts_with(std::env::consts::OS),
        "the os element names the OS"
    );
    alice.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn time_is_utc_now() {
    let s = server().await;
    let mut alice = s.login("alice", "secret", Some("r")).await;
    let r = alice
        .iq(iq("get", Some(DOMAIN), Element::new("time", ns::TIME)))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    let t = r.get_child("time", ns::TIME).unwrap();
    assert_eq!(t.child_text("tzo", ns::TIME).as_deref(), Some("+00:00"));
    let utc = t.child_text("utc", ns::TIME).unwrap();
    // XEP-0082: CCYY-MM-DDThh:mm:ss[.sss]Z
    let re = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$").unwrap();
    assert!(re.is_match(&utc), "{utc}");
    // Same date and hour as this machine's clock (allowing a boundary).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (h, m, sec): (u64, u64, u64) = (
        utc[11..13].parse().unwrap(),
        utc[14..16].parse().unwrap(),
        utc[17..19].parse().unwrap(),
    );
    let server_secs_of_day = h * 3600 + m * 60 + sec;
    let diff = (now % 86_400).abs_diff(server_secs_of_day);
    assert!(diff <= 5 || diff >= 86_400 - 5, "{utc} vs now {now}");

    let r = alice
        .iq(iq("set", Some(DOMAIN), Element::new("time", ns::TIME)))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "not-allowed");
    alice.close().await.unwrap();
    s.stop().await;
}

fn pinging(action: &str) -> Vec<(&'static str, toml::Table)> {
    vec![(
        "mod_ping",
        table(&[
            ("send_pings", true.into()),
            ("ping_interval", 1.into()),
            ("ping_ack_timeout", 1.into()),
            ("timeout_action", action.into()),
        ]),
    )]
}

/// Waits for a ping from the server and returns it.
async fn next_ping(client: &mut Client) -> Element {
    let el = client.recv_timeout(Duration::from_secs(10)).await.unwrap();
    assert!(
        el.is("iq", ns::JABBER_CLIENT)
            && el.attr("type") == Some("get")
            && el.attr("from") == Some(DOMAIN)
            && el.has_child("ping", ns::PING),
        "expected a ping, got {}",
        String::from_utf8_lossy(&el.to_bytes())
    );
    el
}

fn pong(ping: &Element) -> Element {
    Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "result")
        .attr("to", DOMAIN)
        .attr("id", ping.attr("id").unwrap())
        .build()
}

#[tokio::test]
async fn idle_clients_are_pinged_and_silent_ones_killed() {
    let s = server_with(pinging("kill")).await;
    let (mut alice, tcp) = s.login_probed("alice", "secret", Some("r")).await;
    // An idle client that answers stays connected, pinged again and again.
    for _ in 0..2 {
        let ping = next_ping(&mut alice).await;
        alice.send(&pong(&ping)).await.unwrap();
    }
    // One that does not answer is cut off.
    let _ = next_ping(&mut alice).await;
    expect_client_stream_error(&mut alice, &tcp, "connection-timeout").await;
    s.stop().await;
}

#[tokio::test]
async fn with_timeout_action_none_silent_clients_stay() {
    let s = server_with(pinging("none")).await;
    let mut alice = s.login("alice", "secret", Some("r")).await;
    let first = next_ping(&mut alice).await;
    // Unanswered: after the ack timeout the server pings again, and the
    // session is still there.
    let second = next_ping(&mut alice).await;
    assert_ne!(first.attr("id"), second.attr("id"));
    assert_eq!(s.server.sessions().local_count(), 1);
    alice.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn active_clients_are_not_pinged() {
    let s = server_with(pinging("kill")).await;
    let mut alice = s.login("alice", "secret", Some("r")).await;
    // Traffic every 300 ms for 3 s: no ping arrives.
    for _ in 0..10 {
        support::sync(&mut alice).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    match alice.recv_timeout(Duration::from_millis(200)).await {
        Err(_) => {}
        Ok(el) => panic!(
            "unexpected stanza {}",
            String::from_utf8_lossy(&el.to_bytes())
        ),
    }
    alice.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn ping_options_checked_and_interval_secs_accepted() {
    // The example configuration's key.
    let s = server_with(vec![("mod_ping", table(&[("interval_secs", 60.into())]))]).await;
    let bad = serde_json::Map::from_iter([("timeout_action".to_owned(), "explode".into())]);
    s.server
        .stop_module(Some(DOMAIN), "mod_ping")
        .await
        .unwrap();
    assert!(
        s.server
            .start_module(Some(DOMAIN), "mod_ping", bad)
            .await
            .is_err()
    );
    let bad = serde_json::Map::from_iter([("ping_interval".to_owned(), 0.into())]);
    assert!(
        s.server
            .start_module(Some(DOMAIN), "mod_ping", bad)
            .await
            .is_err()
    );
    s.stop().await;
}

#[tokio::test]
async fn pings_start_for_sessions_already_there() {
    let s = server().await;
    let mut alice = s.login("alice", "secret", Some("r")).await;
    s.server
        .stop_module(Some(DOMAIN), "mod_ping")
        .await
        .unwrap();
    let opts = serde_json::Map::from_iter([
        ("send_pings".to_owned(), true.into()),
        ("ping_interval".to_owned(), 1.into()),
        ("ping_ack_timeout".to_owned(), 1.into()),
    ]);
    s.server
        .start_module(Some(DOMAIN), "mod_ping", opts)
        .await
        .unwrap();
    let ping = next_ping(&mut alice).await;
    alice.send(&pong(&ping)).await.unwrap();
    // Stopped: no more pings.
    s.server
        .stop_module(Some(DOMAIN), "mod_ping")
        .await
        .unwrap();
    // A ping may have been on its way when the module stopped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(el) = alice.recv_timeout(Duration::from_millis(100)).await {
        assert!(el.has_child("ping", ns::PING));
    }
    assert!(alice.recv_timeout(Duration::from_secs(3)).await.is_err());
    alice.close().await.unwrap();
    s.stop().await;
}
