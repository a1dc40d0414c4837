//! Remote messaging between two node processes: cast throughput and call
//! round-trip time through beamline's envelope (`GlobalRef`), and through
//! raw ractor_cluster (a `RactorClusterMessage` actor found in pg) over the
//! same connection, in the same run, as the baseline.
//!
//! Also casts in batches (`GlobalRef::cast_batch`, one frame per batch).
//!
//! `cargo bench -p beamline-runtime --bench remote` (prints a table). The
//! bench re-runs its own executable as the second node.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use beamline_runtime::cluster::{Node, NodeConfig, ReplyTo};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

const CASTS: u64 = 200_000;
const CALLS: usize = 5_000;
const PAYLOAD: usize = 64;
const BATCH: u64 = 100;
const RAW_SCOPE: &str = "bench.raw";

/// beamline side: any serde type.
#[derive(Serialize, Deserialize)]
enum SinkMsg {
    Data(Vec<u8>),
    Ping(Vec<u8>, ReplyTo<Vec<u8>>),
    Count(ReplyTo<u64>),
}
impl ractor::Message for SinkMsg {}

/// Baseline: ractor_cluster's own serialisable message.
#[derive(RactorClusterMessage)]
enum RawMsg {
    Data(Vec<u8>),
    #[rpc]
    Ping(Vec<u8>, RpcReplyPort<Vec<u8>>),
    #[rpc]
    Count(RpcReplyPort<u64>),
}

struct Sink;
impl Actor for Sink {
    type Msg = SinkMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<SinkMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: ActorRef<SinkMsg>,
        msg: SinkMsg,
        n: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Data(_) => *n += 1,
            SinkMsg::Ping(p, r) => {
                let _ = r.send(p);
            }
            SinkMsg::Count(r) => {
                let _ = r.send(*n);
            }
        }
        Ok(())
    }
}

struct RawSink;
impl Actor for RawSink {
    type Msg = RawMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<RawMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: ActorRef<RawMsg>,
        msg: RawMsg,
        n: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RawMsg::Data(_) => *n += 1,
            RawMsg::Ping(p, r) => {
                let _ = r.send(p);
            }
            RawMsg::Count(r) => {
                let _ = r.send(*n);
            }
        }
        Ok(())
    }
}

/// Kills the peer process (by PID) however the bench ends.
struct Peer(Child);
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn serve(port: u16) {
    let node = Node::start(NodeConfig::new(
        "bench-server",
        "bench",
        SocketAddr::from(([127, 0, 0, 1], port)),
    ))
    .await
    .expect("server node");
    let (sink, _) = Actor::spawn(None, Sink, ()).await.expect("sink");
    node.register("sink", &sink).await.expect("register");
    let (raw, _) = Actor::spawn(None, RawSink, ()).await.expect("raw sink");
    ractor::pg::join_scoped(RAW_SCOPE.into(), "sink".into(), vec![raw.get_cell()]);
    // Runs until the parent kills it.
    std::future::pending::<()>().await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(label: &str, casts_per_s: f64, mut rtts: Vec<Duration>) {
    rtts.sort();
    println!(
        "{label:<22} {:>12.0} {:>12?} {:>12?} {:>12?}",
        casts_per_s,
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        rtts.iter().sum::<Duration>() / rtts.len() as u32
    );
}

#[tokio::main]
async fn main() {
    if let Ok(port) = std::env::var("BL_BENCH_SERVER_PORT") {
        serve(port.parse().expect("port")).await;
        return;
    }
    // `cargo test --benches` runs benches with no `--bench` flag: stay quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("remote bench: run with `cargo bench -p beamline-runtime --bench remote`");
        return;
    }
    let port = free_port();
    let _peer = Peer(
        Command::new(std::env::current_exe().expect("current exe"))
            .env("BL_BENCH_SERVER_PORT", port.to_string())
            .spawn()
            .expect("spawn peer"),
    );
    let node = Node::start(NodeConfig::new(
        "bench-client",
        "bench",
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await
    .expect("client node");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (sink, raw) = loop {
        let _ = node.join(&[SocketAddr::from(([127, 0, 0, 1], port))]).await;
        let sink = node.whereis::<SinkMsg>("sink");
        let raw = ractor::pg::get_scoped_members(&RAW_SCOPE.to_string(), &"sink".to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local());
        if let (Some(s), Some(r)) = (sink, raw) {
            break (s, ActorRef::<RawMsg>::from(r));
        }
        assert!(Instant::now() < deadline, "peer did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let payload = vec![7u8; PAYLOAD];
    let timeout = Duration::from_secs(30);

    println!(
        "{CASTS} casts and {CALLS} sequential calls of {PAYLOAD}-byte payloads, two processes on 127.0.0.1"
    );
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>12}",
        "path", "casts/s", "call p50", "call p99", "call mean"
    );
    for round in 0..2 {
        // beamline: envelope + codec + stub.
        let before = sink.call(SinkMsg::Count, timeout).await.expect("count");
        let start = Instant::now();
        for _ in 0..CASTS {
            sink.cast(SinkMsg::Data(payload.clone())).expect("cast");
        }
        let after = sink.call(SinkMsg::Count, timeout).await.expect("count");
        let bl_rate = CASTS as f64 / start.elapsed().as_secs_f64();
        assert_eq!(after - before, CASTS);
        let mut bl_rtts = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let t = Instant::now();
            let _ = sink
                .call(|r| SinkMsg::Ping(payload.clone(), r), timeout)
                .await
                .expect("ping");
            bl_rtts.push(t.elapsed());
        }

        // beamline, batches of BATCH casts per frame.
        let before = sink.call(SinkMsg::Count, timeout).await.expect("count");
        let start = Instant::now();
        for _ in 0..CASTS / BATCH {
            let batch = (0..BATCH).map(|_| SinkMsg::Data(payload.clone())).collect();
            sink.cast_batch(batch).expect("cast batch");
        }
        let after = sink.call(SinkMsg::Count, timeout).await.expect("count");
        let batch_rate = CASTS as f64 / start.elapsed().as_secs_f64();
        assert_eq!(after - before, CASTS);

        // raw ractor_cluster over the same connection.
        let before = ractor::call_t!(raw, RawMsg::Count, 30_000).expect("raw count");
        let start = Instant::now();
        for _ in 0..CASTS {
            raw.cast(RawMsg::Data(payload.clone())).expect("raw cast");
        }
        let after = ractor::call_t!(raw, RawMsg::Count, 30_000).expect("raw count");
        let raw_rate = CASTS as f64 / start.elapsed().as_secs_f64();
        assert_eq!(after - before, CASTS);
        let mut raw_rtts = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let t = Instant::now();
            let _ = ractor::call_t!(raw, RawMsg::Ping, 30_000, payload.clone()).expect("raw ping");
            raw_rtts.push(t.elapsed());
        }
        if round == 0 {
            continue; // warm-up
        }
        report("beamline GlobalRef", bl_rate, bl_rtts);
        println!(
            "{:<22} {:>12.0}",
            format!("beamline batch of {BATCH}"),
            batch_rate
        );
        report("raw ractor_cluster", raw_rate, raw_rtts);
    }
    node.leave().await;
}
