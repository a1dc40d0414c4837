//! The `beamline` binary: parses flags, sets up logging, runs a node.
//!
//! `beamline serve` loads and validates the configuration (a file, or the
//! defaults), opens the node's data directory (disc tables, the
//! self-signed certificate), starts the node's supervision tree and runs
//! until Ctrl-C or SIGTERM, then shuts the tree down in reverse start order.
//! Until the XMPP listeners land, the tree holds the module manager and the
//! (empty) session supervisor, and the node logs its shape at start.
//! `beamline check-config FILE` only validates a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use beamline::storage::DurableDb;
use beamline::storage::backend::TablesBackend;
use beamline::storage::disc::{DiscOptions, SyncPolicy};
use beamline::supervision::module::ModuleManager;
use beamline::supervision::{
    DynamicMsg, DynamicSpec, DynamicSupervisor, DynamicSupervisorRef, Strategy, Supervisor,
    SupervisorMsg, SupervisorRef, SupervisorSpec,
};
use beamline::xmpp::config::{Config, SyncMode};
use beamline::xmpp::tls::ServerCertificates;
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
        /// (host `localhost`, data under ./data).
        #[arg(long, short)]
        config: Option<PathBuf>,
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
    /// Validate a configuration file and exit (0: valid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    // The error already reads `file:line:col: key: message`.
    match path {
        Some(p) => Config::from_file(p).map_err(|e| anyhow::anyhow!("{e}")),
        None => Ok(Config::default()),
    }
}

/// Opens the data directory: the disc tables with the server's backend
/// tables declared, and the TLS certificates (generated on first start).
async fn open_data(config: &Config) -> anyhow::Result<DurableDb> {
    let data_dir = &config.storage.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let sync = match config.storage.sync {
        SyncMode::Group => SyncPolicy::Group {
            max_delay: Duration::ZERO,
            max_batch: 256,
        },
        _ => SyncPolicy::EveryCommit,
    };
    let db_dir = data_dir.join("db");
    let db = DurableDb::open(&db_dir, DiscOptions::default().with_sync(sync))
        .await
        .with_context(|| format!("opening {}", db_dir.display()))?;
    let backend = TablesBackend::new(db.db().clone()).context("declaring the backend tables")?;
    let users: usize = {
        let mut n = 0;
        for host in &config.hosts {
            n += beamline::storage::backend::Backend::users(&backend, host)
                .await
                .map(|u| u.len())
                .unwrap_or(0);
        }
        n
    };
    let certs = ServerCertificates::from_config(config).context("loading TLS certificates")?;
    tracing::info!(
        data_dir = %data_dir.display(),
        users,
        certificates = ?certs,
        "data directory open"
    );
    Ok(db)
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
    tracing::info!(origin = config.origin(), hosts = ?config.hosts, "configuration valid");
    let db = open_data(&config).await?;
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
    db.sync().await.context("flushing the disc log")?;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    beamline::runtime::telemetry::init_tracing();
    let result = match Cli::parse().command {
        Command::Serve {
            config,
            name,
            max_sessions,
            shutdown_timeout,
        } => serve(config, name, max_sessions, shutdown_timeout).await,
        Command::CheckConfig { file } => load_config(Some(&file)).map(|c| {
            println!("{}: valid ({} host(s))", c.origin(), c.hosts.len());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beamline: {e:#}");
            ExitCode::from(2)
        }
    }
}
