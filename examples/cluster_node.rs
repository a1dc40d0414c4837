//! A cluster node started from flags: it registers a global name, joins a
//! process group, greets every member of the group and calls every
//! registered name every two seconds, and prints cluster events.
//!
//! Three nodes (see docs/cluster.md):
//! ```text
//! cargo run --example cluster_node -- --name a --port 7001
//! cargo run --example cluster_node -- --name b --port 7002 --seeds 127.0.0.1:7001
//! cargo run --example cluster_node -- --name c --port 7003 --seeds 127.0.0.1:7002
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use beamline::runtime::cluster::serde::{Deserialize, Serialize};
use beamline::runtime::cluster::{Node, NodeConfig, ReplyTo};
use clap::Parser;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// Flags of one node.
#[derive(Parser, Debug)]
struct Args {
    /// Node name (stable identity in the cluster).
    #[arg(long)]
    name: String,
    /// TCP port to listen on (127.0.0.1 unless --ip is given).
    #[arg(long)]
    port: u16,
    /// IP address to listen on and advertise.
    #[arg(long, default_value = "127.0.0.1")]
    ip: std::net::IpAddr,
    /// Comma-separated seed nodes, e.g. 127.0.0.1:7001.
    #[arg(long, default_value = "")]
    seeds: String,
    /// Shared secret of the cluster.
    #[arg(long, default_value = "beamline-demo")]
    cookie: String,
}

/// What a greeter understands, from any node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "beamline::runtime::cluster::serde")]
enum GreeterMsg {
    /// A one-way greeting.
    Hello { from: String, text: String },
    /// A request answered with this node's name.
    WhoAreYou(ReplyTo<String>),
}
impl ractor::Message for GreeterMsg {}

struct Greeter;

impl Actor for Greeter {
    type Msg = GreeterMsg;
    type State = String;
    type Arguments = String;

    async fn pre_start(
        &self,
        _me: ActorRef<GreeterMsg>,
        name: String,
    ) -> Result<String, ActorProcessingErr> {
        Ok(name)
    }

    async fn handle(
        &self,
        _me: ActorRef<GreeterMsg>,
        msg: GreeterMsg,
        name: &mut String,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GreeterMsg::Hello { from, text } => println!("[{name}] hello from {from}: {text}"),
            GreeterMsg::WhoAreYou(reply) => {
                let _ = reply.send(format!("greeter on {name}"));
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    beamline::runtime::telemetry::init_tracing();
    let args = Args::parse();
    let listen = SocketAddr::new(args.ip, args.port);
    let node = Node::start(NodeConfig::new(&args.name, &args.cookie, listen)).await?;
    println!("[{}] listening on {}", node.name(), node.addr());

    let mut events = node.subscribe();
    let me = args.name.clone();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            println!("[{me}] event: {event:?}");
        }
    });

    let (greeter, _) = Actor::spawn(None, Greeter, args.name.clone()).await?;
    node.register(&format!("greeter.{}", args.name), &greeter)
        .await?;
    node.join_group("demo", "greeters", &greeter).await?;

    let seeds: Vec<SocketAddr> = args
        .seeds
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if !seeds.is_empty() {
        let reached = node.join(&seeds).await?;
        println!("[{}] joined through {reached:?}", node.name());
    }

    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        round += 1;
        println!("[{}] members: {:?}", node.name(), node.members());
        for member in node.members_of::<GreeterMsg>("demo", "greeters") {
            let hello = GreeterMsg::Hello {
                from: args.name.clone(),
                text: format!("round {round}"),
            };
            if let Err(e) = member.cast(hello) {
                println!("[{}] cast to {} failed: {e}", node.name(), member.node());
            }
        }
        for (name, _) in node.registered() {
            if let Some(target) = node.whereis::<GreeterMsg>(&name) {
                let started = Instant::now();
                match target
                    .call(GreeterMsg::WhoAreYou, Duration::from_secs(1))
                    .await
                {
                    Ok(answer) => println!(
                        "[{}] {name} -> {answer:?} in {:?}",
                        node.name(),
                        started.elapsed()
                    ),
                    Err(e) => println!("[{}] call {name} failed: {e}", node.name()),
                }
            }
        }
    }
    node.leave().await;
    println!("[{}] left the cluster", args.name);
    Ok(())
}
