//! Embedding the server in an application: a configuration built in code,
//! the node started inside the application's own tokio runtime, hooks
//! answered by application code, and a clean stop.
//!
//! ```text
//! cargo run --example embed                  # demo: one login, then stop
//! cargo run --example embed -- --port 5222   # also listen for real clients until Ctrl-C
//! ```
//!
//! Data (accounts, certificate) goes to `./data-embed`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use beamline::runtime::hooks::{Flow, Scope};
use beamline::xmpp::client::{Client, ClientConfig, TlsMode};
use beamline::xmpp::config::{Config, ListenerConfig, ListenerKind, StartTls};
use beamline::xmpp::hooks::{SM_REGISTER_CONNECTION, SM_REMOVE_CONNECTION, USER_SEND_PACKET};
use beamline::xmpp::sasl::Mechanism;
use beamline::xmpp::server::{Server, ServerOptions};
use beamline::xmpp::{BareJid, Element};
use clap::Parser;

/// Flags.
#[derive(Parser, Debug)]
struct Args {
    /// Also listen for clients on this port (STARTTLS) until Ctrl-C.
    #[arg(long)]
    port: Option<u16>,
}

/// The application's part: what it does when the server tells it things.
async fn run(args: Args) -> anyhow::Result<()> {
    // The configuration, built in code instead of read from a file.
    let mut config = Config::default();
    config.hosts = vec!["chat.example".into()];
    config.storage.data_dir = "./data-embed".into();
    config.listeners = match args.port {
        Some(port) => {
            let mut l =
                ListenerConfig::new(ListenerKind::C2s, IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            l.starttls = Some(StartTls::Required);
            vec![l]
        }
        None => Vec::new(),
    };
    config.validate()?;

    let server = Server::start(config, ServerOptions::default().node_name("embedded")).await?;
    match server.register("demo", "chat.example", "demo-pw").await {
        Ok(()) => println!("app: created demo@chat.example"),
        Err(e) => println!("app: {e} (kept from an earlier run)"),
    }

    // React to hooks from application code: closures run in the caller's
    // task, so keep them short (or send the work to an actor).
    let online = Arc::new(AtomicU64::new(0));
    let counter = online.clone();
    server.hooks().subscribe_fn(
        &SM_REGISTER_CONNECTION,
        Scope::Host("chat.example"),
        50,
        None,
        move |session, ()| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            println!("app: {} came online ({n} online)", session.jid);
            async { Flow::Continue(()) }
        },
    )?;
    let counter = online.clone();
    server.hooks().subscribe_fn(
        &SM_REMOVE_CONNECTION,
        Scope::Host("chat.example"),
        50,
        None,
        move |session, ()| {
            counter.fetch_sub(1, Ordering::Relaxed);
            println!("app: {} went offline", session.jid);
            async { Flow::Continue(()) }
        },
    )?;
    server.hooks().subscribe_fn(
        &USER_SEND_PACKET,
        Scope::Host("chat.example"),
        50,
        None,
        |session, stanza: Option<Element>| {
            if let Some(s) = &stanza {
                println!("app: {} sent <{}>", session.jid, s.name());
            }
            async move { Flow::Continue(stanza) }
        },
    )?;

    // One login through the in-memory transport, to show the hooks firing.
    let stream = server.connect_in_memory().await?;
    let config = ClientConfig::new(
        BareJid::new("demo@chat.example")?,
        "demo-pw",
        ([127, 0, 0, 1], 0).into(),
    )
    .with_tls(TlsMode::Plain)
    .with_mechanisms(vec![Mechanism::ScramSha256]);
    let mut client = Client::connect_with_stream(stream, config).await?;
    client.send_presence().await?;
    client
        .send_message("demo@chat.example", "note to self")
        .await?;
    // Its own presence comes back first (RFC 6121 §4.2.2), then the note.
    loop {
        let stanza = client.recv_timeout(Duration::from_secs(5)).await?;
        println!("app: the client got <{}>", stanza.name());
        if stanza.name() == "message" {
            break;
        }
    }
    client.close().await?;

    if let Some(addr) = server.listener_addr(ListenerKind::C2s) {
        println!("app: listening on {addr} (demo@chat.example / demo-pw); Ctrl-C stops");
        tokio::signal::ctrl_c().await?;
    }
    server.stop(Duration::from_secs(10)).await?;
    println!("app: server stopped");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    beamline::runtime::telemetry::init_tracing();
    let args = Args::parse();
    // The application's own runtime: the server runs on it, beside
    // whatever else the application does.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("app")
        .build()?;
    runtime.block_on(run(args))
}
