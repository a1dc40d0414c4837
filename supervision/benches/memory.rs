//! Memory per supervised child against a bare ractor actor, at 100,000
//! children. Each variant runs in a fresh process (this binary re-executes
//! itself), and the figure is the growth of resident memory divided by the
//! number of actors.
//!
//! Run: `cargo bench -p beamline-supervision --bench memory`

use std::process::Command;
use std::time::Duration;

use beamline_supervision::{ChildSpec, DynamicSpec, DynamicSupervisor, Restart};
use ractor::{Actor, ActorProcessingErr, ActorRef, Message};

const N: usize = 100_000;

#[derive(Clone)]
struct Idle;
struct Never;
impl Message for Never {}

impl Actor for Idle {
    type Msg = Never;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Never>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn measure(variant: &str) -> (f64, f64) {
    // Warm the runtime and allocator a little so the first actor's fixed
    // costs don't count.
    let (warm, _) = Actor::spawn(None, Idle, ()).await.expect("warm");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = rss_bytes();
    let mut keep = Vec::with_capacity(N);
    let mut handles = Vec::with_capacity(N);
    let began = std::time::Instant::now();
    match variant {
        "bare" => {
            for _ in 0..N {
                keep.push(
                    Actor::spawn(None, Idle, ())
                        .await
                        .expect("spawn")
                        .0
                        .get_cell(),
                );
            }
        }
        "dynamic" => {
            let (sup, _) = DynamicSupervisor::start(None, DynamicSpec::default())
                .await
                .expect("sup");
            let spec = ChildSpec::from_actor("child", Idle, ()).restart(Restart::Temporary);
            for _ in 0..N {
                handles.push(sup.start_child(spec.clone()).await.expect("child"));
            }
            keep.push(sup.cell());
        }
        other => panic!("unknown variant {other}"),
    }
    let rate = N as f64 / began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes();
    drop(warm);
    ((after.saturating_sub(before)) as f64 / N as f64, rate)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--variant") {
        let variant = args.get(pos + 1).cloned().unwrap_or_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (per, rate) = rt.block_on(measure(&variant));
        println!("{per:.0} {rate:.0}");
        return;
    }
    // `cargo bench` passes `--bench`; a `cargo test` run of benches passes
    // nothing useful and should stay quick.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let mut results = Vec::new();
    for variant in ["bare", "dynamic"] {
        let out = Command::new(&exe)
            .args(["--variant", variant])
            .output()
            .expect("run variant");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut fields = text
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(f64::NAN));
        let per: f64 = fields.next().unwrap_or(f64::NAN);
        let rate: f64 = fields.next().unwrap_or(f64::NAN);
        results.push((variant, per, rate));
    }
    println!("memory per actor at {N} actors (RSS growth / N), and start rate:");
    for (variant, per, rate) in &results {
        let label = match *variant {
            "bare" => "bare ractor actor (baseline)",
            _ => "child of a DynamicSupervisor, with ChildHandle",
        };
        println!("  {label:<48} {per:>7.0} bytes  {rate:>8.0} starts/s");
    }
    if let [(_, bare, _), (_, dynamic, _)] = results[..] {
        println!(
            "  supervision overhead per child: {:.0} bytes",
            dynamic - bare
        );
    }
}
