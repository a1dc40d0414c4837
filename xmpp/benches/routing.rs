//! Routing cost per message between two local sessions, end to end.
//!
//! `cargo bench -p beamline-xmpp --bench routing`; figures in
//! `docs/xmpp-server.md`.
//!
//! Each iteration sends a batch of 256 chat messages and waits until all
//! have arrived; the time per message is reported. Cases, all in one run:
//!
//! - `codec_pipe` (baseline): each message serialized, written through an
//!   in-memory pipe and decoded on the other side — the I/O and XML work a
//!   message costs at each end, without any server logic;
//! - `router_to_session`: `Router::route` called from code (from alice's
//!   full JID to bob's), through the session table, bob's session actor,
//!   `user_receive_packet`, the stream writer, to bob's client decoder;
//! - `client_to_client`: alice's client writes the messages into her
//!   session (decode, checks, `from` stamping, `user_send_packet`,
//!   routing), then as above: the whole path of `ARCHITECTURE.md`.
//!
//! Both clients use the in-memory transport, so the figures exclude the
//! kernel's TCP cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use beamline_xmpp::client::{Client, ClientConfig, TlsMode};
use beamline_xmpp::config::Config;
use beamline_xmpp::sasl::Mechanism;
use beamline_xmpp::server::{Server, ServerOptions};
use beamline_xmpp::stream::{StreamDecoder, StreamEvent, StreamHeader, StreamLimits};
use beamline_xmpp::{BareJid, Element, ns};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

const BATCH: u64 = 256;

fn message(from: Option<&str>, to: &str, n: u64) -> Element {
    Element::builder("message", ns::JABBER_CLIENT)
        .attr_opt("from", from)
        .attr("to", to)
        .attr("type", "chat")
        .attr("id", format!("m{n}"))
        .append(
            Element::builder("body", ns::JABBER_CLIENT)
                .text("Wherefore art thou, Romeo? Deny thy father and refuse thy name.")
                .build(),
        )
        .build()
}

/// Counts what a client receives, and wakes the bench at each target.
struct Counter {
    received: AtomicU64,
    notify: Notify,
}

impl Counter {
    async fn wait_for(&self, target: u64) {
        loop {
            let notified = self.notify.notified();
            if self.received.load(Ordering::Acquire) >= target {
                return;
            }
            notified.await;
        }
    }
}

async fn login(server: &Server, user: &str) -> Client {
    let stream = server
        .connect_in_memory()
        .await
        .expect("in-memory connection");
    let config = ClientConfig::new(
        BareJid::new(&format!("{user}@localhost")).expect("jid"),
        "pw",
        ([127, 0, 0, 1], 0).into(),
    )
    .with_tls(TlsMode::Plain)
    .with_resource("bench")
    .with_mechanisms(vec![Mechanism::ScramSha256]);
    Client::connect_with_stream(stream, config)
        .await
        .expect("login")
}

struct Setup {
    server: Server,
    alice: tokio::sync::Mutex<Client>,
    counter: Arc<Counter>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.listeners = Vec::new();
    let server = Server::start(config, ServerOptions::in_memory())
        .await
        .expect("server");
    server
        .register("alice", "localhost", "pw")
        .await
        .expect("alice");
    server
        .register("bob", "localhost", "pw")
        .await
        .expect("bob");
    let alice = login(&server, "alice").await;
    let mut bob = login(&server, "bob").await;
    bob.send_presence().await.expect("presence");
    let counter = Arc::new(Counter {
        received: AtomicU64::new(0),
        notify: Notify::new(),
    });
    let c = counter.clone();
    tokio::spawn(async move {
        while let Ok(el) = bob.recv().await {
            if el.name() == "message" {
                c.received.fetch_add(1, Ordering::AcqRel);
                c.notify.notify_waiters();
            }
        }
    });
    Setup {
        server,
        alice: tokio::sync::Mutex::new(alice),
        counter,
        _dir: dir,
    }
}

/// Baseline: serialize, pipe, decode.
async fn codec_pipe(iters: u64) -> Duration {
    let (mut a, mut b) = tokio::io::duplex(64 * 1024);
    let total = iters * BATCH;
    let reader = tokio::spawn(async move {
        let mut dec = StreamDecoder::new(StreamLimits::default());
        dec.set_authenticated(true);
        let mut buf = vec![0u8; 2048];
        let mut n = 0;
        while n < total {
            match dec.next_event() {
                Ok(Some(StreamEvent::Stanza(_))) => n += 1,
                Ok(Some(_)) => {}
                Ok(None) => {
                    let r = b.read(&mut buf).await.expect("read");
                    dec.feed(&buf[..r]);
                }
                Err(e) => panic!("decode: {e}"),
            }
        }
    });
    let start = Instant::now();
    let mut out = Vec::new();
    StreamHeader::new(ns::JABBER_CLIENT).write_to(&mut out);
    a.write_all(&out).await.expect("write");
    for i in 0..total {
        out.clear();
        message(Some("alice@localhost/bench"), "bob@localhost", i)
            .write_in_stream(ns::JABBER_CLIENT, &mut out);
        a.write_all(&out).await.expect("write");
    }
    reader.await.expect("reader");
    start.elapsed()
}

fn routing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt.block_on(setup());
    let mut g = c.benchmark_group("routing_per_message");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);

    g.bench_function("codec_pipe", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| async move { codec_pipe(iters).await / BATCH as u32 })
    });

    g.bench_function("router_to_session", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let s = &s;
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let base = s.counter.received.load(Ordering::Acquire);
                    for i in 0..BATCH {
                        s.server
                            .router()
                            .route(message(
                                Some("alice@localhost/bench"),
                                "bob@localhost/bench",
                                i,
                            ))
                            .await;
                    }
                    s.counter.wait_for(base + BATCH).await;
                }
                start.elapsed() / BATCH as u32
            }
        })
    });

    g.bench_function("client_to_client", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let s = &s;
            async move {
                let mut alice = s.alice.lock().await;
                let start = Instant::now();
                for _ in 0..iters {
                    let base = s.counter.received.load(Ordering::Acquire);
                    for i in 0..BATCH {
                        alice
                            .send(&message(None, "bob@localhost/bench", i))
                            .await
                            .expect("send");
                    }
                    s.counter.wait_for(base + BATCH).await;
                }
                start.elapsed() / BATCH as u32
            }
        })
    });
    g.finish();
    rt.block_on(async { s.server.stop(Duration::from_secs(5)).await.ok() });
}

criterion_group!(benches, routing);
criterion_main!(benches);
