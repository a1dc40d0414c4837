//! The `beamline` binary: parses flags, sets up logging, runs a node.
//!
//! `beamline serve` starts a node's supervision tree and runs until Ctrl-C or
//! SIGTERM, then shuts the tree down in reverse start order. Until the XMPP
//! server lands, the tree holds the module manager and the (empty) session
//! supervisor, and the node logs its shape at start.

use std::time::Duration;

use anyhow::Context;
use beamline::supervision::module::ModuleManager;
use beamline::supervision::{
    DynamicMsg, DynamicSpec, DynamicSupervisor, DynamicSupervisorRef, Strategy, Supervisor,
    SupervisorMsg, SupervisorRef, SupervisorSpec,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "beamline",
    version,
    about = "Erlang/OTP-style runtime and XMPP server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until Ctrl-C or SIGTERM.
    Serve {
        /// Node name, shown in logs.
        #[arg(long, default_value = "beamline@localhost")]
        name: String,
        /// Most client sessions this node accepts.
        #[arg(long, default_value_t = 1_000_000)]
        max_sessions: usize,
        /// How long shutdown may take before the process exits anyway.
        #[arg(long, default_value = "30", value_name = "SECONDS")]
        shutdown_timeout: u64,
    },
}

/// One line per child, indented by depth: child ids from supervisors, and
/// child counts from dynamic supervisors.
async fn describe(sup: SupervisorRef, depth: usize, out: &mut Vec<String>) {
    let Ok(children) = sup.which_children().await else {
        return;
    };
    for child in children {
        let pad = "  ".repeat(depth);
        let Some(cell) = child.cell else {
            out.push(format!("{pad}{} (down)", child.id));
            continue;
        };
        out.push(format!(
            "{pad}{} {:?} ({})",
            child.id,
            child.kind,
            cell.get_id()
        ));
        if cell.is_message_type_of::<SupervisorMsg>() == Some(true) {
            Box::pin(describe(
                SupervisorRef::from_ref(cell.into()),
                depth + 1,
                out,
            ))
            .await;
        } else if cell.is_message_type_of::<DynamicMsg>() == Some(true) {
            let dynamic = DynamicSupervisorRef::from_ref(cell.into());
            if let Ok(c) = dynamic.count_children().await {
                out.push(format!("{pad}  [{} dynamic children]", c.active));
            }
        }
    }
}

async fn serve(name: String, max_sessions: usize, shutdown_timeout: u64) -> anyhow::Result<()> {
    let sessions = DynamicSpec {
        max_children: Some(max_sessions),
        ..DynamicSpec::default()
    };
    let spec = SupervisorSpec::new(
        Strategy::OneForOne,
        vec![
            ModuleManager::child_spec("modules", Vec::new()),
            DynamicSupervisor::child_spec("c2s_sessions", sessions),
        ],
    )
    .intensity(10, Duration::from_secs(10));
    let (root, join) = Supervisor::start(Some(format!("{name}/root")), spec)
        .await
        .context("starting the root supervisor")?;
    let mut lines = vec![format!("root ({})", root.cell().get_id())];
    describe(root.clone(), 1, &mut lines).await;
    tracing::info!(node = %name, "node started; supervision tree:\n{}", lines.join("\n"));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut join = join;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = &mut join => anyhow::bail!("root supervisor exited: the node gave up"),
    }
    root.shutdown(Some(Duration::from_secs(shutdown_timeout)))
        .await
        .context("shutting down")?;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    beamline::runtime::telemetry::init_tracing();
    match Cli::parse().command {
        Command::Serve {
            name,
            max_sessions,
            shutdown_timeout,
        } => serve(name, max_sessions, shutdown_timeout).await,
    }
}
