//! The load generator's functional tests: small runs, in memory and over
//! TCP against a server started here, that must deliver every message
//! exactly once and report what a user of the tool reads.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use beamline_loadgen::args::Args;
use beamline_xmpp::config::{Config, ListenerConfig, ListenerKind, StartTls};
use beamline_xmpp::server::{Server, ServerOptions};
use clap::Parser;
use serde_json::Value;

/// Limit of a whole run.
const RUN: Duration = Duration::from_secs(120);

async fn run(flags: &[&str]) -> Value {
    let mut argv = vec!["beamline-loadgen", "--quiet"];
    argv.extend_from_slice(flags);
    let args = Args::try_parse_from(argv).unwrap();
    tokio::time::timeout(RUN, beamline_loadgen::run(args))
        .await
        .expect("the run took too long")
        .unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Every message arrived once, and the summary says so.
fn assert_all_delivered(s: &Value, senders: u64) {
    let m = &s["phases"]["messaging"];
    assert_eq!(u(&m["senders"]), senders, "{m}");
    assert!(u(&m["sent"]) > 0, "{m}");
    assert_eq!(m["delivered"], m["sent"], "{m}");
    assert_eq!(u(&m["lost"]), 0, "{m}");
    assert_eq!(u(&m["duplicated"]), 0, "{m}");
    assert_eq!(u(&m["bounced"]), 0, "{m}");
    let lat = &m["latency_ms"];
    assert_eq!(lat["count"], m["delivered"]);
    for q in ["p50", "p90", "p99", "max"] {
        assert!(lat[q].as_f64().unwrap() >= 0.0, "{q} in {lat}");
    }
    assert!(lat["p50"].as_f64() <= lat["p99"].as_f64());
    assert!(lat["p99"].as_f64() <= lat["max"].as_f64());
    let per_second = m["per_second"].as_array().unwrap();
    let delivered: u64 = per_second.iter().map(|x| u(&x["delivered"])).sum();
    assert_eq!(delivered, u(&m["delivered"]));
}

fn assert_sessions(s: &Value, users: u64) {
    let login = &s["phases"]["login"];
    assert_eq!(u(&login["attempted"]), users, "{login}");
    assert_eq!(u(&login["ok"]), users, "{login}");
    assert_eq!(u(&login["failed"]), 0, "{login}");
    assert!(login["per_s"].as_f64().unwrap() > 0.0);
    assert!(login["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let logout = &s["phases"]["logout"];
    assert_eq!(u(&logout["ok"]), users, "{logout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_fifty_users_ten_senders_deliver_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("run.svg");
    let json = dir.path().join("run.json");
    let s = run(&[
        "--in-memory",
        "--users",
        "50",
        "--senders",
        "10",
        "--rate",
        "200",
        "--duration",
        "1.5",
        "--hold",
        "0.2",
        "--svg",
        svg.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    assert_eq!(s["target"]["mode"], "in-memory");
    assert_eq!(s["users"], 50);
    assert_eq!(u(&s["provisioning"]["created"]), 50);
    assert_sessions(&s, 50);
    assert_all_delivered(&s, 10);
    assert_eq!(s["phases"]["messaging"]["mode"], "fixed-rate");
    // Memory and CPU of this process, sampled at the phase boundaries.
    let r = &s["resources"];
    assert!(r["rss_bytes_per_session"].is_i64(), "{r}");
    assert!(r["cpu_ms_per_1000_logins"].is_f64(), "{r}");
    assert_eq!(r["samples"].as_array().unwrap().len(), 5);
    // The same summary in the file, and a chart.
    let from_file: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        from_file["phases"]["messaging"]["sent"],
        s["phases"]["messaging"]["sent"]
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("one-way message latency"));
    assert!(chart.contains("<polyline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_closed_loop_with_plain() {
    let s = run(&[
        "--in-memory",
        "--users",
        "20",
        "--senders",
        "5",
        "--window",
        "2",
        "--duration",
        "1",
        "--hold",
        "0",
        "--mechanism",
        "plain",
    ])
    .await;
    assert_eq!(s["target"]["mechanism"], "PLAIN");
    assert_sessions(&s, 20);
    assert_all_delivered(&s, 5);
    assert_eq!(s["phases"]["messaging"]["mode"], "closed-loop");
}

/// A server with one `c2s` listener (STARTTLS optional) on port 0 and
/// in-band registration open to everyone, without a per-address interval.
async fn tcp_server_with_registration() -> (Server, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    let mut l = ListenerConfig::new(ListenerKind::C2s, IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    l.max_connections_per_ip = 1000;
    l.starttls = Some(StartTls::Optional);
    config.listeners = vec![l];
    let mut register = toml::Table::new();
    register.insert("access".into(), toml::Value::String("all".into()));
    register.insert("registration_timeout".into(), toml::Value::Integer(0));
    config.modules.insert("mod_register".into(), register);
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let options = ServerOptions::in_memory().node_name(format!("lgreg{n}@localhost"));
    let server = tokio::time::timeout(RUN, Server::start(config, options))
        .await
        .unwrap()
        .unwrap();
    let addr = server.listener_addr(ListenerKind::C2s).unwrap();
    (server, addr, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_in_band_registration_creates_then_finds_the_users() {
    let (_server, addr, _dir) = tcp_server_with_registration().await;
    let addr = addr.to_string();
    let flags = [
        "--server",
        addr.as_str(),
        "--users",
        "10",
        "--user-prefix",
        "ib",
        "--provision",
        "inband",
        "--starttls",
        "--hold",
        "0",
    ];
    let s = run(&flags).await;
    assert_eq!(
        u(&s["provisioning"]["created"]),
        10,
        "{}",
        s["provisioning"]
    );
    assert_sessions(&s, 10);
    // A second run finds them (`conflict`) and logs in all the same.
    let s = run(&flags).await;
    assert_eq!(
        u(&s["provisioning"]["existing"]),
        10,
        "{}",
        s["provisioning"]
    );
    assert_eq!(u(&s["provisioning"]["failed"]), 0);
    assert_sessions(&s, 10);
}

/// `--provision-only`: the users are made, nobody logs in; a later run
/// finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_provision_only_registers_without_sessions() {
    let (server, addr, _dir) = tcp_server_with_registration().await;
    let addr = addr.to_string();
    let flags = [
        "--server",
        addr.as_str(),
        "--users",
        "5",
        "--user-prefix",
        "po",
        "--provision",
        "inband",
        "--hold",
        "0",
    ];
    let mut only = flags.to_vec();
    only.push("--provision-only");
    let s = run(&only).await;
    assert_eq!(u(&s["provisioning"]["created"]), 5, "{s}");
    assert!(s.get("phases").is_none(), "{s}");
    assert!(server.connected_users().is_empty());
    let s = run(&flags).await;
    assert_eq!(u(&s["provisioning"]["existing"]), 5, "{s}");
    assert_sessions(&s, 5);
}

/// A server with one `c2s` listener (STARTTLS optional, so SCRAM without
/// TLS works too) on port 0, and `users` accounts `tcpN`/`secret`.
async fn tcp_server(users: usize) -> (Server, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    let mut l = ListenerConfig::new(ListenerKind::C2s, IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    l.max_connections_per_ip = 1000;
    l.starttls = Some(StartTls::Optional);
    config.listeners = vec![l];
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let options = ServerOptions::in_memory().node_name(format!("lgtest{n}@localhost"));
    let server = tokio::time::timeout(RUN, Server::start(config, options))
        .await
        .unwrap()
        .unwrap();
    for i in 0..users {
        server
            .register(&format!("tcp{i}"), "localhost", "secret")
            .await
            .unwrap();
    }
    let addr = server.listener_addr(ListenerKind::C2s).unwrap();
    (server, addr, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_twenty_users_with_starttls_and_scram_over_three_source_addresses() {
    let (server, addr, _dir) = tcp_server(20).await;
    let addr = addr.to_string();
    let pid = std::process::id().to_string();
    let s = run(&[
        "--server",
        &addr,
        "--users",
        "20",
        "--user-prefix",
        "tcp",
        "--password",
        "secret",
        "--starttls",
        "--source-addrs",
        "3",
        "--senders",
        "5",
        "--rate",
        "100",
        "--duration",
        "1",
        "--hold",
        "0.2",
        "--server-pid",
        &pid,
    ])
    .await;
    assert_eq!(s["target"]["mode"], "tcp");
    assert_eq!(s["target"]["starttls"], true);
    assert_eq!(s["target"]["source_addresses"], 3);
    assert_sessions(&s, 20);
    assert_all_delivered(&s, 5);
    assert!(s["resources"]["process"].as_str().unwrap().contains(&pid));
    assert!(
        server.connected_users().is_empty(),
        "every session logged out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_wrong_password_is_counted_by_reason() {
    let (_server, addr, _dir) = tcp_server(3).await;
    let addr = addr.to_string();
    let s = run(&[
        "--server",
        &addr,
        "--users",
        "3",
        "--user-prefix",
        "tcp",
        "--password",
        "wrong",
        "--hold",
        "0",
    ])
    .await;
    let login = &s["phases"]["login"];
    assert_eq!(u(&login["ok"]), 0);
    assert_eq!(
        u(&login["failures"]["sasl failure not-authorized"]),
        3,
        "{login}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_users_split_over_worker_processes() {
    let (server, addr, _dir) = tcp_server(20).await;
    let addr = addr.to_string();
    // The binary, which runs itself again as its workers.
    let out = tokio::time::timeout(
        RUN,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_beamline-loadgen"))
            .args([
                "--quiet",
                "--server",
                &addr,
                "--users",
                "20",
                "--user-prefix",
                "tcp",
                "--password",
                "secret",
                "--sessions-per-process",
                "8",
                "--senders",
                "4",
                "--rate",
                "80",
                "--duration",
                "1",
                "--drain",
                "2",
                "--hold",
                "0",
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["target"]["processes"], 3);
    assert_sessions(&s, 20);
    assert_all_delivered(&s, 4);
    assert!(server.connected_users().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_detached_clients_keep_sessions_until_logout() {
    let s = run(&[
        "--in-memory",
        "--detach-clients",
        "--users",
        "30",
        "--senders",
        "5",
        "--hold",
        "0.2",
    ])
    .await;
    assert_eq!(s["target"]["detached_clients"], true);
    assert_sessions(&s, 30);
    // No clients, no messages.
    assert!(s["phases"]["messaging"].is_null());
    assert!(s["resources"]["rss_bytes_per_session"].is_i64());
}

#[test]
fn detaching_needs_in_memory() {
    let r = Args::try_parse_from(["beamline-loadgen", "--detach-clients"]);
    assert!(r.is_err());
}

/// `--server A,B`: user `i` logs in on address `i mod 2` (two separate
/// servers here, each holding every account), and two `--server-pid`s are
/// summed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_users_spread_over_several_server_addresses() {
    let (a, addr_a, _dir_a) = tcp_server(10).await;
    let (b, addr_b, _dir_b) = tcp_server(10).await;
    let servers = format!("{addr_a},{addr_b}");
    let pid = std::process::id().to_string();
    let run = tokio::spawn(async move {
        run(&[
            "--server",
            &servers,
            "--users",
            "10",
            "--user-prefix",
            "tcp",
            "--password",
            "secret",
            "--hold",
            "3",
            "--server-pid",
            &pid,
            "--server-pid",
            &pid,
        ])
        .await
    });
    // During the hold: five sessions on each, the even users on the first.
    let names = |s: &Server| {
        let mut v = s.connected_users();
        v.sort();
        v
    };
    let deadline = tokio::time::Instant::now() + RUN;
    while a.connected_users().len() + b.connected_users().len() < 10 {
        assert!(tokio::time::Instant::now() < deadline, "sessions never up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on_a = names(&a);
    let on_b = names(&b);
    assert_eq!(on_a.len(), 5, "{on_a:?}");
    assert_eq!(on_b.len(), 5, "{on_b:?}");
    let even = ["tcp0@", "tcp2@", "tcp4@", "tcp6@", "tcp8@"];
    assert!(
        on_a.iter().all(|j| even.iter().any(|e| j.starts_with(e))),
        "{on_a:?}"
    );
    let s = run.await.unwrap();
    assert_sessions(&s, 10);
    assert_eq!(
        s["target"]["server"],
        serde_json::json!([addr_a.to_string(), addr_b.to_string()])
    );
    assert!(
        s["resources"]["process"]
            .as_str()
            .unwrap()
            .contains("(summed)"),
        "{}",
        s["resources"]
    );
    assert!(a.connected_users().is_empty() && b.connected_users().is_empty());
}
