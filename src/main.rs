//! The `beamline` binary: parses flags, sets up logging, runs a node.
//!
//! `beamline serve` loads and validates the configuration (a file, or the
//! defaults), starts the XMPP server ([`beamline::node::Node`]: disc
//! tables, certificates, supervision tree, listeners, admin socket) and
//! runs until Ctrl-C or SIGTERM, then stops it: listeners first, streams
//! closed with `system-shutdown`, disc log flushed.
//! `beamline check-config FILE` only validates a configuration file;
//! `beamline ctl COMMAND` runs an admin command on the running node.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use beamline::admin::{CtlCommand, run_ctl, socket_path};
use beamline::node::Node;
use beamline::supervision::{DynamicMsg, DynamicSupervisorRef, SupervisorMsg, SupervisorRef};
use beamline::xmpp::config::Config;
use beamline::xmpp::server::{ServerOptions, check_module_options};
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
        /// Configuration file (TOML); without it the defaults apply
        /// (host `localhost`, c2s on 127.0.0.1:5222 and 5223, data under
        /// ./data).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Node name, shown in logs and kept in the session table (with
        /// `[cluster]` in the configuration, its `node_name` instead).
        #[arg(long, default_value = "beamline@localhost")]
        name: String,
        /// Most client sessions this node accepts.
        #[arg(long, default_value_t = 1_000_000)]
        max_sessions: usize,
        /// How long shutdown may take before the process exits anyway.
        #[arg(long, default_value = "30", value_name = "SECONDS")]
        shutdown_timeout: u64,
    },
    /// Validate a configuration file and exit (0: valid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Run an admin command on the node running on this machine (found
    /// through the admin socket in its data directory).
    Ctl {
        /// The node's configuration file (for its data directory).
        #[arg(long, short, conflicts_with = "data_dir")]
        config: Option<PathBuf>,
        /// The node's data directory (default: ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    // The error already reads `file:line:col: key: message`.
    let config = match path {
        Some(p) => Config::from_file(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Config::default(),
    };
    // Module names and options too, before anything starts.
    check_module_options(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(config)
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

async fn serve(
    config: Option<PathBuf>,
    name: String,
    max_sessions: usize,
    shutdown_timeout: u64,
) -> anyhow::Result<()> {
    let config = load_config(config.as_ref())?;
    // Logging starts here, at the file's level (`RUST_LOG` wins).
    beamline::runtime::telemetry::init_tracing_at(config.log_level.as_str());
    tracing::info!(origin = config.origin(), hosts = ?config.hosts, "configuration valid");
    if let Some(c) = &config.cluster {
        // The cluster's node name is the node's name (sessions, logs).
        tracing::info!(node = %c.node_name, listen = %c.listen, seeds = ?c.seeds, "clustered node");
    }
    let mut options = ServerOptions::default().node_name(name.clone());
    options.max_sessions = max_sessions;
    let node = Node::start(config, options).await?;
    let server = node.server();
    let mut lines = vec![format!("root ({})", server.supervisor().cell().get_id())];
    describe(server.supervisor().clone(), 1, &mut lines).await;
    tracing::info!(node = %name, "node started; supervision tree:\n{}", lines.join("\n"));
    for (kind, addr) in server.listeners() {
        tracing::info!(?kind, %addr, "accepting clients");
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    node.stop(Duration::from_secs(shutdown_timeout))
        .await
        .context("shutting down")?;
    tracing::info!("stopped");
    Ok(())
}

async fn ctl(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    command: CtlCommand,
) -> anyhow::Result<()> {
    let data_dir = match (config, data_dir) {
        (_, Some(d)) => d,
        (Some(c), None) => load_config(Some(&c))?.storage.data_dir,
        (None, None) => Config::default().storage.data_dir,
    };
    let out = run_ctl(&socket_path(&data_dir), command).await?;
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command;
    if !matches!(command, Command::Serve { .. }) {
        beamline::runtime::telemetry::init_tracing();
    }
    let result = match command {
        Command::Serve {
            config,
            name,
            max_sessions,
            shutdown_timeout,
        } => serve(config, name, max_sessions, shutdown_timeout).await,
        Command::CheckConfig { file } => load_config(Some(&file)).map(|c| {
            println!("{}: valid ({} host(s))", c.origin(), c.hosts.len());
        }),
        Command::Ctl {
            config,
            data_dir,
            command,
        } => {
            return match ctl(config, data_dir, command).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("beamline: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beamline: {e:#}");
            ExitCode::from(2)
        }
    }
}
