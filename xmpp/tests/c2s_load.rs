//! Many concurrent clients over real TCP (STARTTLS + SCRAM) exchanging
//! messages: every message arrives exactly once, and those of one sender
//! to one recipient in the order sent.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use beamline_xmpp::client::{Client, ClientError, TlsMode, TrustMode, tls_client_config};
use beamline_xmpp::config::ListenerKind;
use beamline_xmpp::ns;
use beamline_xmpp::sasl::client::ScramCache;
use tokio::sync::{Barrier, Semaphore};

use support::*;

const CLIENTS: usize = 200;
const MESSAGES: usize = 25;
const PASSWORD: &str = "load-test-password";

/// xorshift64*: a fixed plan without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// For each sender, the recipient of each of its messages.
fn plan() -> Vec<Vec<usize>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..CLIENTS)
        .map(|i| {
            (0..MESSAGES)
                .map(|_| {
                    let r = rng.below(CLIENTS - 1);
                    if r >= i { r + 1 } else { r }
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_exchange_messages_exactly_once_and_in_order() {
    let s = TestServer::start_with(|c| {
        c.listeners.retain(|l| l.kind == ListenerKind::C2s);
        c.listeners[0].max_connections_per_ip = 10 * CLIENTS as u32;
    })
    .await;
    let server = s.server.clone();
    let register = futures::future::join_all((0..CLIENTS).map(|i| {
        let server = server.clone();
        async move {
            server
                .register(&format!("user{i}"), DOMAIN, PASSWORD)
                .await
                .unwrap();
        }
    }));
    tokio::time::timeout(Duration::from_secs(120), register)
        .await
        .expect("registering the users timed out");

    let plan = Arc::new(plan());
    // Who sends what to whom: each recipient's expected (sender, seq).
    let mut expected: Vec<HashSet<(usize, usize)>> = vec![HashSet::new(); CLIENTS];
    for (i, targets) in plan.iter().enumerate() {
        for (k, r) in targets.iter().enumerate() {
            expected[*r].insert((i, k));
        }
    }
    let expected = Arc::new(expected);

    let tls = tls_client_config(&TrustMode::AcceptAnyForTests, TlsMode::StartTls).unwrap();
    let cache = ScramCache::new();
    let logins = Arc::new(Semaphore::new(16));
    let logged_in = Arc::new(Barrier::new(CLIENTS));
    let received_all = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let mut cfg = s
            .config(&format!("user{i}"), PASSWORD)
            .with_resource("load")
            .with_scram_cache(cache.clone());
        cfg.tls_client_config = Some(tls.clone());
        let (plan, expected) = (plan.clone(), expected.clone());
        let (logins, logged_in, received_all) =
            (logins.clone(), logged_in.clone(), received_all.clone());
        tasks.spawn(async move {
            let mut client = {
                let _permit = logins.acquire().await.unwrap();
                Client::connect(cfg).await.unwrap()
            };
            // Available, so that messages to the bare JID reach it.
            client.send_presence().await.unwrap();
            sync(&mut client).await;
            logged_in.wait().await;

            // Half to the full JID, half to the bare JID.
            for (k, r) in plan[i].iter().enumerate() {
                let to = if k % 2 == 0 {
                    format!("user{r}@{DOMAIN}/load")
                } else {
                    format!("user{r}@{DOMAIN}")
                };
                client
                    .send(&message(&to, &format!("{i}-{k}"), &format!("{i}:{k}")))
                    .await
                    .unwrap();
            }

            let want = &expected[i];
            let mut got = HashSet::with_capacity(want.len());
            let mut last: HashMap<usize, usize> = HashMap::new();
            while got.len() < want.len() {
                let m = client.recv_timeout(T).await.unwrap_or_else(|e| {
                    panic!("user{i}: {} of {} arrived: {e}", got.len(), want.len())
                });
                assert!(m.is("message", ns::JABBER_CLIENT), "user{i} got {m:?}");
                assert_ne!(m.attr("type"), Some("error"), "user{i} got {m:?}");
                let body = m.child_text("body", ns::JABBER_CLIENT).unwrap();
                let (from, seq) = body.split_once(':').unwrap();
                let (from, seq): (usize, usize) = (from.parse().unwrap(), seq.parse().unwrap());
                assert_eq!(
                    m.attr("from"),
                    Some(format!("user{from}@{DOMAIN}/load").as_str())
                );
                assert!(want.contains(&(from, seq)), "user{i}: unexpected {body}");
                assert!(got.insert((from, seq)), "user{i}: {body} arrived twice");
                if let Some(prev) = last.insert(from, seq) {
                    assert!(prev < seq, "user{i}: {from}:{seq} after {from}:{prev}");
                }
            }
            received_all.wait().await;
            // Everything was sent and delivered: nothing more may come.
            sync(&mut client).await;
            match client.recv_timeout(Duration::from_millis(200)).await {
                Err(ClientError::Timeout(_)) => {}
                other => panic!("user{i}: extra {other:?}"),
            }
            client.close().await.unwrap();
            got.len()
        });
    }
    let total = tokio::time::timeout(Duration::from_secs(300), async {
        let mut total = 0;
        while let Some(r) = tasks.join_next().await {
            total += r.unwrap();
        }
        total
    })
    .await
    .expect("the clients did not finish in time");
    assert_eq!(total, CLIENTS * MESSAGES);
    wait_sessions(&s.server, 0).await;
    s.stop().await;
}

/// A shutdown with many clients connected: every one gets
/// `system-shutdown`, then the close tag, then the end of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_a_hundred_clients_closes_every_stream() {
    const N: usize = 100;
    let s = TestServer::start_with(|c| {
        c.listeners.retain(|l| l.kind == ListenerKind::C2s);
        c.listeners[0].max_connections_per_ip = 10 * N as u32;
    })
    .await;
    let server = s.server.clone();
    let register = futures::future::join_all((0..N).map(|i| {
        let server = server.clone();
        async move {
            server
                .register(&format!("user{i}"), DOMAIN, PASSWORD)
                .await
                .unwrap();
        }
    }));
    tokio::time::timeout(Duration::from_secs(120), register)
        .await
        .expect("registering the users timed out");
    let tls = tls_client_config(&TrustMode::AcceptAnyForTests, TlsMode::StartTls).unwrap();
    let cache = ScramCache::new();
    let logins = Arc::new(Semaphore::new(16));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..N {
        let mut cfg = s
            .config(&format!("user{i}"), PASSWORD)
            .with_scram_cache(cache.clone());
        cfg.tls_client_config = Some(tls.clone());
        let addr = s.c2s();
        let logins = logins.clone();
        set.spawn(async move {
            let _permit = logins.acquire().await.unwrap();
            let tcp = ProbedTcp::connect(addr).await;
            let client = Client::connect_with_stream(tcp.clone(), cfg).await.unwrap();
            (client, tcp)
        });
    }
    let clients = tokio::time::timeout(Duration::from_secs(120), async {
        let mut v = Vec::new();
        while let Some(r) = set.join_next().await {
            v.push(r.unwrap());
        }
        v
    })
    .await
    .expect("logging in timed out");
    wait_sessions(&s.server, N).await;
    // A few more still negotiating.
    let mut pending = Vec::new();
    for _ in 0..5 {
        pending.push(open_raw(s.c2s()).await);
    }
    let stop = tokio::spawn(async move { s.stop().await });
    let mut checks = tokio::task::JoinSet::new();
    for (mut client, tcp) in clients {
        checks.spawn(async move {
            expect_client_stream_error(&mut client, &tcp, "system-shutdown").await;
        });
    }
    for (mut conn, tcp, _) in pending {
        checks.spawn(async move {
            expect_stream_error(&mut conn, &tcp, "system-shutdown").await;
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = checks.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("closing the clients timed out");
    tokio::time::timeout(Duration::from_secs(120), stop)
        .await
        .expect("stop timed out")
        .unwrap();
}
