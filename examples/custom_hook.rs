//! A user-written actor subscribed to the `filter_packet` hook: it drops
//! messages that contain "spam" and rewrites "darn" to "d**n" in the rest.
//!
//! ```text
//! cargo run --example custom_hook            # runs a demo and exits
//! cargo run --example custom_hook -- --serve # keeps serving on 127.0.0.1:5222
//! ```
//!
//! The demo starts a server with its data in memory, registers alice and
//! bob, logs both in through the in-memory transport (the same stream and
//! session code as TCP) and shows what bob receives. With `--serve`, the
//! server also listens on `--port` (STARTTLS, self-signed certificate in
//! `./data-custom-hook/tls`) so that a real client can try it: log in as
//! alice or bob (passwords `alice-pw`, `bob-pw`).
//!
//! One actor sees every stanza here, which is fine for a demo. A filter on
//! a busy server should be a pool of actors keyed by sender (ractor's
//! factory with key-sticky routing), so that per-user order holds and
//! every core works: see `ARCHITECTURE.md`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use beamline::runtime::hooks::{Flow, HookCall, Scope};
use beamline::xmpp::client::{Client, ClientConfig};
use beamline::xmpp::config::{Config, ListenerConfig, ListenerKind};
use beamline::xmpp::hooks::FILTER_PACKET;
use beamline::xmpp::sasl::Mechanism;
use beamline::xmpp::server::{Server, ServerOptions};
use beamline::xmpp::{BareJid, Element, ns};
use clap::Parser;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// Flags.
#[derive(Parser, Debug)]
struct Args {
    /// Keep serving (TCP listener on --port) after the demo, until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Port of the c2s listener with --serve.
    #[arg(long, default_value_t = 5222)]
    port: u16,
}

/// The filter: one hook call per routed stanza.
struct Censor;

/// Rewrites or drops a message; anything else passes unchanged.
fn censor(stanza: Element) -> Option<Element> {
    if stanza.name() != "message" {
        return Some(stanza);
    }
    let Some(body) = stanza.child_text("body", ns::JABBER_CLIENT) else {
        return Some(stanza);
    };
    if body.to_lowercase().contains("spam") {
        println!("censor: dropped a message from {:?}", stanza.attr("from"));
        return None;
    }
    if !body.contains("darn") {
        return Some(stanza);
    }
    let mut stanza = stanza;
    stanza.remove_child("body", ns::JABBER_CLIENT);
    let mut new_body = Element::new("body", ns::JABBER_CLIENT);
    new_body.append_text(&body.replace("darn", "d**n"));
    stanza.append_child(new_body);
    Some(stanza)
}

impl Actor for Censor {
    type Msg = HookCall<(), Option<Element>>;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        call: Self::Msg,
        seen: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *seen += 1;
        let HookCall { acc, reply, .. } = call;
        let answer = match acc.map(censor) {
            // Dropped: stop the fold, nothing is routed.
            Some(None) => Flow::Stop(None),
            Some(Some(stanza)) => Flow::Continue(Some(stanza)),
            None => Flow::Continue(None),
        };
        let _ = reply.send(answer);
        Ok(())
    }
}

async fn login(server: &Server, user: &str, password: &str) -> anyhow::Result<Client> {
    let jid = BareJid::new(&format!("{user}@localhost"))?;
    let stream = server.connect_in_memory().await?;
    // The in-memory transport is local: no TLS, SCRAM over the plain pipe.
    let config = ClientConfig::new(jid, password, ([127, 0, 0, 1], 0).into())
        .with_tls(beamline::xmpp::client::TlsMode::Plain)
        .with_mechanisms(vec![Mechanism::ScramSha256]);
    Ok(Client::connect_with_stream(stream, config).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    beamline::runtime::telemetry::init_tracing();
    let args = Args::parse();
    let mut config = Config::default();
    config.storage.data_dir = "./data-custom-hook".into();
    config.listeners = if args.serve {
        vec![ListenerConfig::new(
            ListenerKind::C2s,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            args.port,
        )]
    } else {
        Vec::new()
    };
    let server = Server::start(config, ServerOptions::in_memory()).await?;
    server.register("alice", "localhost", "alice-pw").await?;
    server.register("bob", "localhost", "bob-pw").await?;

    // Subscribe the actor: every stanza the router routes passes it.
    let (censor, _) = Actor::spawn(None, Censor, ()).await?;
    server
        .hooks()
        .subscribe(&FILTER_PACKET, Scope::Global, 50, &censor)?;

    let mut alice = login(&server, "alice", "alice-pw").await?;
    let mut bob = login(&server, "bob", "bob-pw").await?;
    bob.send_presence().await?;
    // The presence is in the session table once bob's session handled it;
    // a round trip to the server makes sure of that.
    bob.iq(Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .attr("to", "localhost")
        .append(Element::new("query", "urn:example:nothing"))
        .build())
        .await
        .ok();
    for body in ["hello bob", "buy cheap SPAM now", "darn, it rains"] {
        alice.send_message("bob@localhost", body).await?;
    }
    // A marker after the three: everything before it has been routed.
    alice.send_message("bob@localhost", "bye").await?;
    loop {
        let stanza = bob.recv_timeout(Duration::from_secs(5)).await?;
        if let Some(body) = stanza.child_text("body", ns::JABBER_CLIENT) {
            println!("bob received: {body}");
            if body == "bye" {
                break;
            }
        }
    }
    alice.close().await?;
    bob.close().await?;

    if args.serve {
        if let Some(addr) = server.listener_addr(ListenerKind::C2s) {
            println!("serving on {addr}; log in as alice/alice-pw or bob/bob-pw; Ctrl-C stops");
        }
        tokio::signal::ctrl_c().await?;
    }
    server.stop(Duration::from_secs(10)).await?;
    Ok(())
}
