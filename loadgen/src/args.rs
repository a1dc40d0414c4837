//! Command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// SASL mechanism the clients log in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Mech {
    /// SCRAM-SHA-256 (RFC 7677), salted passwords cached per process.
    ScramSha256,
    /// PLAIN (RFC 4616): the server offers it only over TLS, or without TLS
    /// on loopback where it is configured to.
    Plain,
}

/// How the users come to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Provision {
    /// They exist already.
    None,
    /// `--provision-ctl CMD register USER DOMAIN -` per user (password on
    /// stdin).
    Ctl,
    /// In-band registration (XEP-0077) before login; "conflict" counts as
    /// already there.
    Inband,
}

/// Drives many XMPP client sessions against a server and measures logins,
/// idle memory, messaging throughput and one-way latency.
#[derive(Debug, Clone, Parser, Serialize, Deserialize)]
#[command(name = "beamline-loadgen", version)]
pub struct Args {
    /// The server's client (c2s) address. Several (repeat the flag or
    /// separate them with commas) spread the sessions over the nodes of a
    /// cluster: user number `i` connects to address `i mod k`.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:5222")]
    pub server: Vec<SocketAddr>,
    /// Run our own server inside this process and connect every client
    /// through its in-memory transport (no sockets); `--server` is unused.
    #[arg(long)]
    pub in_memory: bool,
    /// With `--in-memory`: drop each client as soon as it has logged in and
    /// sent its presence, keeping only its end of the in-memory connection
    /// open, so that the process's memory growth is the server's sessions
    /// (plus the transport buffers) alone. No messaging then; logout drops
    /// the connections.
    #[arg(long, requires = "in_memory")]
    pub detach_clients: bool,
    /// The XMPP domain of the users.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// How many users (sessions).
    #[arg(long, default_value_t = 100)]
    pub users: u64,
    /// User names are PREFIX0 .. PREFIX(N-1).
    #[arg(long, default_value = "load")]
    pub user_prefix: String,
    /// The first user's number (for splitting users between load generators).
    #[arg(long, default_value_t = 0)]
    pub user_offset: u64,
    /// Every user's password.
    #[arg(long, default_value = "pw")]
    pub password: String,
    /// The resource every session binds.
    #[arg(long, default_value = "load")]
    pub resource: String,
    /// STARTTLS before authenticating (any certificate is accepted: this is
    /// a load generator, not a client to trust).
    #[arg(long)]
    pub starttls: bool,
    /// Offer the post-quantum hybrid key exchange X25519MLKEM768 with
    /// STARTTLS (rustls's first choice). Off by default so that every
    /// server does the same classical handshake (X25519): ejabberd 23.01
    /// with Debian's OpenSSL 3.0 has no ML-KEM.
    #[arg(long)]
    pub tls_pq: bool,
    /// Keep SCRAM salted passwords in this file across runs: loaded at
    /// start if it exists, new entries added after the login phase, as a
    /// client that saved its salted password logs in again without PBKDF2.
    /// The file is as good as the passwords for the server's salts.
    #[arg(long)]
    pub scram_cache: Option<PathBuf>,
    /// SASL mechanism.
    #[arg(long, value_enum, default_value = "scram-sha256")]
    pub mechanism: Mech,
    /// Connect from this many source addresses 127.0.0.1, 127.0.0.2, ...
    /// (TCP to an IPv4 loopback server only). Default: one per 10,000
    /// sessions, at most 250.
    #[arg(long)]
    pub source_addrs: Option<u32>,
    /// Most sessions per process over TCP; more users are split over worker
    /// processes (this binary again). Keep it below the open-files limit
    /// (`ulimit -n`) with some margin.
    #[arg(long, default_value_t = 15_000)]
    pub sessions_per_process: u64,
    /// Provisioning of the users.
    #[arg(long, value_enum, default_value = "none")]
    pub provision: Provision,
    /// The admin command for `--provision ctl`, e.g.
    /// `"beamline ctl --data-dir /var/lib/beamline"`.
    #[arg(long)]
    pub provision_ctl: Option<String>,
    /// Provision the users (`--provision`) and stop: no login, no
    /// measurement; the summary holds the provisioning only. For a server
    /// that is restarted between provisioning and the measured run, so
    /// that its memory before login owes nothing to the registrations.
    #[arg(long)]
    pub provision_only: bool,
    /// Logins started per second (0: as fast as the concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub login_rate: f64,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 200)]
    pub login_concurrency: usize,
    /// Time limit of the login phase, seconds.
    #[arg(long, default_value_t = 300.0)]
    pub login_timeout: f64,
    /// Idle hold after login, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Senders in the messaging phase (0: no messaging).
    #[arg(long, default_value_t = 0)]
    pub senders: u64,
    /// Messages per second over all senders; 0 for closed loop (each sender
    /// keeps `--window` messages in flight).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Messages in flight per sender in closed loop.
    #[arg(long, default_value_t = 1)]
    pub window: u32,
    /// How long senders send, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Longest wait after the last send for messages still in flight,
    /// seconds (a message not arrived by then is lost).
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Time limit of the logout phase, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub logout_timeout: f64,
    /// Limit of each step of a login (connect, TLS, SASL, bind), seconds.
    #[arg(long, default_value_t = 30.0)]
    pub step_timeout: f64,
    /// Sample this process's RSS and CPU time at the phase boundaries.
    /// Several (repeated or comma-separated: the nodes of a cluster) are
    /// summed.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Write the JSON summary here instead of stdout.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of throughput and latency per second here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Internal: run as a worker of a parent load generator.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Internal: users of the whole run (a worker holds a slice of them).
    #[arg(long, hide = true)]
    pub total_users: Option<u64>,
    /// Internal: the first user of this worker's slice, counted from
    /// `--user-offset`.
    #[arg(long, hide = true, default_value_t = 0)]
    pub slice_start: u64,
}

impl Args {
    /// Users of the whole run.
    pub fn total(&self) -> u64 {
        self.total_users.unwrap_or(self.users)
    }

    /// The server address of user number `g` (counted from
    /// `--user-offset`): address `g mod k` of the `k` given.
    pub fn server_for(&self, g: u64) -> SocketAddr {
        server_for(&self.server, g)
    }

    /// The source addresses to spread TCP connections over.
    pub fn sources(&self) -> u32 {
        self.source_addrs
            .unwrap_or_else(|| self.total().div_ceil(10_000) as u32)
            .clamp(1, 250)
    }
}

/// Address `g mod k` of `servers` (the default address if there is none).
pub fn server_for(servers: &[SocketAddr], g: u64) -> SocketAddr {
    if servers.is_empty() {
        return SocketAddr::from(([127, 0, 0, 1], 5222));
    }
    servers[(g % servers.len() as u64) as usize]
}
