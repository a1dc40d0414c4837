//! Administration of a running node, in the manner of `ejabberdctl`.
//!
//! A node serves a local admin endpoint: a Unix domain socket at
//! `<data_dir>/admin.sock` ([`socket_path`]). `beamline ctl <command>`
//! connects to it, sends one command and prints the answer.
//!
//! # Who may administer a node
//!
//! The socket file is created with mode `0600`: only the user that runs the
//! node (and root) may connect, so being able to run `ctl` against a node is
//! the same as being that user. The socket is bound inside a private (`0700`)
//! directory, set to `0600` and only then moved into place, so there is no
//! moment where it is reachable with wider permissions. There is no cookie or
//! password on top: the file permissions are the access control.
//!
//! # Life cycle
//!
//! [`serve_admin`] binds the socket and spawns the accept loop. A socket file
//! left behind by a node that crashed (nothing answers on it) is replaced; if
//! a live node answers on it, start fails with
//! [`AdminStartError::AlreadyRunning`] ("another node is running with data
//! dir X"). [`AdminServer::stop`] (or dropping the handle) stops accepting
//! and removes the socket file.
//!
//! # Protocol
//!
//! One JSON request per line, one JSON response per line:
//!
//! ```text
//! → {"command":"register","args":{"user":"alice","host":"localhost","password":"secret"}}
//! ← {"ok":null}
//! → {"command":"connected_users"}
//! ← {"ok":["alice@localhost/phone"]}
//! → {"command":"unregister","args":{"user":"bob","host":"localhost"}}
//! ← {"error":"no user bob@localhost"}
//! ```
//!
//! Commands and their `ok` values: `register`, `unregister`,
//! `change_password` → `null`; `connected_users` → array of full JIDs;
//! `kick` (`jid`, `reason`) → number of sessions closed; `stats` → array of
//! `[name, value]` pairs; `status` → a string.
//!
//! A request line may hold at most [`AdminServerOptions::max_request_bytes`]
//! bytes (64 KiB by default): a longer one gets an error response and the
//! connection is closed. A line that is not a valid request gets an error
//! response and the connection stays usable. A connection idle for longer
//! than [`AdminServerOptions::idle_timeout`] is closed, and at most
//! [`AdminServerOptions::max_connections`] are served at once (others get an
//! error response and are closed).
//!
//! # Passwords on the command line
//!
//! `register` and `change-password` take the password as an argument, which
//! other users can see in the process list. Give `-` instead and the password
//! is read from the first line of standard input:
//! `echo secret | beamline ctl register alice localhost -`.

use std::fmt;
use std::io::{self, BufRead};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Name of the admin socket file inside a node's data directory.
pub const SOCKET_FILE_NAME: &str = "admin.sock";

/// How long `ctl` waits for a node to answer a command.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The admin socket of the node whose data directory is `data_dir`:
/// `<data_dir>/admin.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE_NAME)
}

// ---------------------------------------------------------------------------
// The node side: the API a server implements.
// ---------------------------------------------------------------------------

/// The admin commands, as the node implements them. The server implements
/// this trait; [`serve_admin`] exposes it on the admin socket.
pub trait AdminApi: Send + Sync + 'static {
    /// Creates an account.
    fn register<'a>(
        &'a self,
        user: &'a str,
        host: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    /// Removes an account (and kicks its sessions).
    fn unregister<'a>(
        &'a self,
        user: &'a str,
        host: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    /// Sets a new password.
    fn change_password<'a>(
        &'a self,
        user: &'a str,
        host: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    /// Full JIDs of the sessions connected to this node, sorted.
    fn connected_users<'a>(&'a self) -> BoxFuture<'a, Result<Vec<String>, AdminError>>;
    /// Closes the sessions of a full JID (one) or a bare JID (all of that
    /// user); returns how many.
    fn kick<'a>(
        &'a self,
        jid: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<usize, AdminError>>;
    /// Named counters: registered users per host, online sessions, uptime
    /// seconds, stanzas routed, ... as (name, value) pairs.
    fn stats<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, u64)>, AdminError>>;
    /// One line of status text: node name, "started", version, hosts.
    fn status<'a>(&'a self) -> BoxFuture<'a, Result<String, AdminError>>;
    /// Starts module `name` on `host` (every host when `None`) with
    /// `options`, a JSON object merged over the module's defaults.
    fn start_module<'a>(
        &'a self,
        _host: Option<&'a str>,
        _name: &'a str,
        _options: &'a serde_json::Map<String, Value>,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async { Err(AdminError::Failed("modules are not managed here".into())) })
    }
    /// Stops module `name` on `host` (every host when `None`).
    fn stop_module<'a>(
        &'a self,
        _host: Option<&'a str>,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async { Err(AdminError::Failed("modules are not managed here".into())) })
    }
    /// Gives module `name` on `host` (every host when `None`) new options.
    fn reload_module<'a>(
        &'a self,
        _host: Option<&'a str>,
        _name: &'a str,
        _options: &'a serde_json::Map<String, Value>,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async { Err(AdminError::Failed("modules are not managed here".into())) })
    }
    /// The modules running on `host`, with their options as JSON text.
    fn modules<'a>(
        &'a self,
        _host: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, AdminError>> {
        Box::pin(async { Err(AdminError::Failed("modules are not managed here".into())) })
    }
}

/// Why an admin command failed on the node. Its message is what `ctl`
/// prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The account to create exists already (holds `user@host`).
    #[error("user {0} already exists")]
    UserExists(String),
    /// The account does not exist (holds `user@host`).
    #[error("no user {0}")]
    NoSuchUser(String),
    /// The host is not served by this node.
    #[error("unknown host {0}")]
    UnknownHost(String),
    /// The arguments are not valid (a malformed JID, an empty password, ...).
    #[error("{0}")]
    Invalid(String),
    /// The command could not be carried out (storage error, ...).
    #[error("{0}")]
    Failed(String),
}

/// A request on the wire: `{"command": ..., "args": {...}}`.
#[derive(Serialize, Deserialize)]
#[serde(
    tag = "command",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
enum Request {
    Register {
        user: String,
        host: String,
        password: String,
    },
    Unregister {
        user: String,
        host: String,
    },
    ChangePassword {
        user: String,
        host: String,
        password: String,
    },
    ConnectedUsers,
    Kick {
        jid: String,
        reason: String,
    },
    Stats,
    Status,
    StartModule {
        host: Option<String>,
        name: String,
        options: serde_json::Map<String, Value>,
    },
    StopModule {
        host: Option<String>,
        name: String,
    },
    ReloadModule {
        host: Option<String>,
        name: String,
        options: serde_json::Map<String, Value>,
    },
    Modules {
        host: String,
    },
}

impl Request {
    /// The command name, for logs (never the arguments: they may hold a
    /// password).
    fn name(&self) -> &'static str {
        match self {
            Request::Register { .. } => "register",
            Request::Unregister { .. } => "unregister",
            Request::ChangePassword { .. } => "change_password",
            Request::ConnectedUsers => "connected_users",
            Request::Kick { .. } => "kick",
            Request::Stats => "stats",
            Request::Status => "status",
            Request::StartModule { .. } => "start_module",
            Request::StopModule { .. } => "stop_module",
            Request::ReloadModule { .. } => "reload_module",
            Request::Modules { .. } => "modules",
        }
    }
}

/// Runs one request against the API; the `ok` value or the error message.
async fn dispatch(api: &dyn AdminApi, request: &Request) -> Result<Value, AdminError> {
    Ok(match request {
        Request::Register {
            user,
            host,
            password,
        } => {
            api.register(user, host, password).await?;
            Value::Null
        }
        Request::Unregister { user, host } => {
            api.unregister(user, host).await?;
            Value::Null
        }
        Request::ChangePassword {
            user,
            host,
            password,
        } => {
            api.change_password(user, host, password).await?;
            Value::Null
        }
        Request::ConnectedUsers => json!(api.connected_users().await?),
        Request::Kick { jid, reason } => json!(api.kick(jid, reason).await?),
        Request::Stats => json!(api.stats().await?),
        Request::Status => json!(api.status().await?),
        Request::StartModule {
            host,
            name,
            options,
        } => {
            api.start_module(host.as_deref(), name, options).await?;
            Value::Null
        }
        Request::StopModule { host, name } => {
            api.stop_module(host.as_deref(), name).await?;
            Value::Null
        }
        Request::ReloadModule {
            host,
            name,
            options,
        } => {
            api.reload_module(host.as_deref(), name, options).await?;
            Value::Null
        }
        Request::Modules { host } => json!(api.modules(host).await?),
    })
}

fn error_response(message: impl fmt::Display) -> Value {
    json!({ "error": message.to_string() })
}

// ---------------------------------------------------------------------------
// The node side: the socket server.
// ---------------------------------------------------------------------------

/// Limits of the admin endpoint. [`Default`] gives the values
/// [`serve_admin`] uses.
#[derive(Debug, Clone)]
pub struct AdminServerOptions {
    /// Longest request line, in bytes, without the newline (64 KiB).
    pub max_request_bytes: usize,
    /// A connection that sends no complete request for this long (or does
    /// not read its response for this long) is closed (30 s).
    pub idle_timeout: Duration,
    /// Most connections served at once (16).
    pub max_connections: usize,
    /// On stop, how long commands in progress may take to finish before
    /// they are cancelled (5 s).
    pub shutdown_grace: Duration,
}

impl Default for AdminServerOptions {
    fn default() -> Self {
        AdminServerOptions {
            max_request_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(30),
            max_connections: 16,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminStartError {
    /// A live node answers on the socket: two nodes must not share a data
    /// directory.
    #[error("another node is running with data dir {} (it answers on {})", data_dir.display(), socket.display())]
    AlreadyRunning {
        /// The data directory (the socket's parent).
        data_dir: PathBuf,
        /// The socket path.
        socket: PathBuf,
    },
    /// Something other than a socket is in the socket's place; it is left
    /// alone.
    #[error("{} exists and is not a socket; remove it to start the node", .0.display())]
    NotASocket(PathBuf),
    /// An I/O error while checking, creating or binding the socket.
    #[error("admin socket {}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn start_io(path: &Path) -> impl FnOnce(io::Error) -> AdminStartError + '_ {
    move |source| AdminStartError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A running admin endpoint. [`stop`](AdminServer::stop) it (or drop it) to
/// stop accepting and remove the socket file.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    /// (device, inode) of the socket file we created: on stop, the file is
    /// removed only if it is still ours.
    identity: (u64, u64),
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    removed: bool,
}

impl AdminServer {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, removes the socket file, and waits for commands in
    /// progress to finish (at most [`AdminServerOptions::shutdown_grace`],
    /// then they are cancelled).
    pub async fn stop(mut self) {
        self.remove_socket();
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn remove_socket(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "removing the admin socket");
                }
            }
            // Gone already, or replaced by someone else: not ours to remove.
            _ => {}
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.remove_socket();
        let _ = self.shutdown.send(true);
    }
}

/// Serves `api` on the Unix socket `socket_path` with the default
/// [`AdminServerOptions`]; see [`serve_admin_with`].
pub async fn serve_admin(
    socket_path: PathBuf,
    api: Arc<dyn AdminApi>,
) -> Result<AdminServer, AdminStartError> {
    serve_admin_with(socket_path, api, AdminServerOptions::default()).await
}

/// Serves `api` on the Unix socket `socket_path` (mode `0600`): replaces a
/// stale socket file, refuses to start if a live node answers on it, then
/// spawns the accept loop on the current tokio runtime (each connection its
/// own task).
pub async fn serve_admin_with(
    socket_path: PathBuf,
    api: Arc<dyn AdminApi>,
    options: AdminServerOptions,
) -> Result<AdminServer, AdminStartError> {
    check_not_running(&socket_path).await?;
    let (listener, identity) = bind_private(&socket_path)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, api, options, shutdown_rx));
    tracing::info!(path = %socket_path.display(), "admin socket listening");
    Ok(AdminServer {
        path: socket_path,
        identity,
        shutdown,
        task: Some(task),
        removed: false,
    })
}

/// Fails if a live node answers on `path`; removes a stale socket file.
async fn check_not_running(path: &Path) -> Result<(), AdminStartError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(start_io(path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(AdminStartError::NotASocket(path.to_owned()));
    }
    let already_running = || AdminStartError::AlreadyRunning {
        data_dir: data_dir_of(path),
        socket: path.to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(2), UnixStream::connect(path)).await {
        Ok(Ok(_)) => Err(already_running()),
        // Connected but not accepted in time: a busy live node.
        Err(_) => Err(already_running()),
        Ok(Err(e))
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            tracing::info!(path = %path.display(), "replacing a stale admin socket");
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(start_io(path)(e)),
            }
        }
        Ok(Err(e)) => Err(start_io(path)(e)),
    }
}

/// Binds the socket in a fresh `0700` directory next to `path`, sets it to
/// `0600` and renames it to `path`, so it is never reachable with the
/// permissions the umask would give. Returns the listener and the file's
/// (device, inode).
fn bind_private(path: &Path) -> Result<(UnixListener, (u64, u64)), AdminStartError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // A short name: socket paths are limited to about 108 bytes.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let private = parent.join(format!(".adm{}.{n}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    if let Err(e) = builder.create(&private) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(start_io(&private)(e));
        }
        // Left by an earlier process with our pid that crashed while
        // starting.
        std::fs::remove_dir_all(&private).map_err(start_io(&private))?;
        builder.create(&private).map_err(start_io(&private))?;
    }
    let result = (|| {
        let tmp = private.join("s");
        let listener = UnixListener::bind(&tmp).map_err(start_io(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(start_io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(start_io(path))?;
        let meta = std::fs::symlink_metadata(path).map_err(start_io(path))?;
        Ok((listener, (meta.dev(), meta.ino())))
    })();
    if let Err(e) = std::fs::remove_dir_all(&private) {
        tracing::warn!(path = %private.display(), error = %e, "removing a temporary directory");
    }
    result
}

fn data_dir_of(socket: &Path) -> PathBuf {
    match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

async fn accept_loop(
    listener: UnixListener,
    api: Arc<dyn AdminApi>,
    options: AdminServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let options = Arc::new(options);
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let mut connections = JoinSet::new();
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let api = api.clone();
                        let options = options.clone();
                        let shutdown = for_connections.clone();
                        connections.spawn(async move {
                            serve_connection(stream, &*api, &options, shutdown).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        // Best effort: a fresh socket's send buffer is empty.
                        let line = format!(
                            "{}\n",
                            error_response(format_args!(
                                "too many admin connections (limit {})",
                                options.max_connections
                            ))
                        );
                        let _ = stream.try_write(line.as_bytes());
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(options.shutdown_grace, drain)
        .await
        .is_err()
    {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Completes once stop is asked for (or the handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// What [`read_line_bounded`] found.
enum LineRead {
    /// A line (without its newline), or the last bytes before end of file.
    Line,
    /// End of file with nothing read.
    Eof,
    /// The line is longer than the limit.
    TooLong,
}

/// Reads up to a newline into `buf` (cleared first), holding at most `max`
/// bytes.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max {
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(LineRead::Line);
        }
    }
}

async fn serve_connection(
    stream: UnixStream,
    api: &dyn AdminApi,
    options: &AdminServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        let read = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            read = tokio::time::timeout(
                options.idle_timeout,
                read_line_bounded(&mut reader, &mut line, options.max_request_bytes),
            ) => read,
        };
        let (response, close) = match read {
            Err(_) => {
                tracing::debug!("admin connection idle, closing");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "admin connection read");
                return;
            }
            Ok(Ok(LineRead::Eof)) => return,
            Ok(Ok(LineRead::TooLong)) => (
                error_response(format_args!(
                    "request too large (limit {} bytes)",
                    options.max_request_bytes
                )),
                true,
            ),
            Ok(Ok(LineRead::Line)) => match serde_json::from_slice::<Request>(&line) {
                Err(e) => (error_response(format_args!("bad request: {e}")), false),
                Ok(request) => {
                    tracing::debug!(command = request.name(), "admin command");
                    match dispatch(api, &request).await {
                        Ok(value) => (json!({ "ok": value }), false),
                        Err(e) => {
                            tracing::debug!(command = request.name(), error = %e, "admin command failed");
                            (error_response(e), false)
                        }
                    }
                }
            },
        };
        let mut out = response.to_string();
        out.push('\n');
        match tokio::time::timeout(options.idle_timeout, write.write_all(out.as_bytes())).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        if close {
            let _ = write.shutdown().await;
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The client side: `beamline ctl`.
// ---------------------------------------------------------------------------

/// An admin command, as `beamline ctl <command>` takes it.
#[derive(Clone, PartialEq, Eq, clap::Subcommand)]
pub enum CtlCommand {
    /// Create an account.
    Register {
        /// User name (the part of the JID before `@`).
        user: String,
        /// Virtual host.
        host: String,
        /// Password, or `-` to read it from the first line of standard
        /// input (so it does not show in the process list).
        password: String,
    },
    /// Remove an account and close its sessions.
    Unregister {
        /// User name.
        user: String,
        /// Virtual host.
        host: String,
    },
    /// Set a new password.
    ChangePassword {
        /// User name.
        user: String,
        /// Virtual host.
        host: String,
        /// New password, or `-` to read it from the first line of standard
        /// input.
        password: String,
    },
    /// List the sessions connected to the node (full JIDs, one per line).
    ConnectedUsers,
    /// Close the sessions of a full JID (one) or a bare JID (all of them).
    Kick {
        /// `user@host/resource` or `user@host`.
        jid: String,
        /// Reason given to the client.
        #[arg(long, default_value = "Kicked by administrator")]
        reason: String,
    },
    /// Print the node's counters, one `name value` per line.
    Stats,
    /// Print the node's status line.
    Status,
    /// Start a module at runtime (on every host unless --host).
    StartModule {
        /// Module name, e.g. `mod_version`.
        name: String,
        /// One virtual host only.
        #[arg(long)]
        host: Option<String>,
        /// Options as a JSON object, merged over the module's defaults.
        #[arg(long, default_value = "{}")]
        options: String,
    },
    /// Stop a module at runtime (on every host unless --host): its hooks,
    /// IQ handlers and disco features go with it.
    StopModule {
        /// Module name.
        name: String,
        /// One virtual host only.
        #[arg(long)]
        host: Option<String>,
    },
    /// Give a running module new options (on every host unless --host).
    ReloadModule {
        /// Module name.
        name: String,
        /// One virtual host only.
        #[arg(long)]
        host: Option<String>,
        /// Options as a JSON object, merged over the module's defaults.
        #[arg(long, default_value = "{}")]
        options: String,
    },
    /// List the modules running on a host, with their options.
    Modules {
        /// The virtual host.
        host: String,
    },
}

/// Passwords are shown as `***`.
impl fmt::Debug for CtlCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlCommand::Register { user, host, .. } => f
                .debug_struct("Register")
                .field("user", user)
                .field("host", host)
                .field("password", &"***")
                .finish(),
            CtlCommand::Unregister { user, host } => f
                .debug_struct("Unregister")
                .field("user", user)
                .field("host", host)
                .finish(),
            CtlCommand::ChangePassword { user, host, .. } => f
                .debug_struct("ChangePassword")
                .field("user", user)
                .field("host", host)
                .field("password", &"***")
                .finish(),
            CtlCommand::ConnectedUsers => f.write_str("ConnectedUsers"),
            CtlCommand::Kick { jid, reason } => f
                .debug_struct("Kick")
                .field("jid", jid)
                .field("reason", reason)
                .finish(),
            CtlCommand::Stats => f.write_str("Stats"),
            CtlCommand::Status => f.write_str("Status"),
            CtlCommand::StartModule { name, host, .. } => f
                .debug_struct("StartModule")
                .field("name", name)
                .field("host", host)
                .finish_non_exhaustive(),
            CtlCommand::StopModule { name, host } => f
                .debug_struct("StopModule")
                .field("name", name)
                .field("host", host)
                .finish(),
            CtlCommand::ReloadModule { name, host, .. } => f
                .debug_struct("ReloadModule")
                .field("name", name)
                .field("host", host)
                .finish_non_exhaustive(),
            CtlCommand::Modules { host } => f.debug_struct("Modules").field("host", host).finish(),
        }
    }
}

/// Why `ctl` failed. The message is what to print.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No node listens on the socket (no file, or nothing accepts on it).
    #[error("no node is running with data dir {} (no admin socket at {})", data_dir.display(), socket.display())]
    NotRunning {
        /// The data directory (the socket's parent).
        data_dir: PathBuf,
        /// The socket path.
        socket: PathBuf,
    },
    /// The socket belongs to another user.
    #[error("permission denied on the admin socket {}: run ctl as the user that runs the node", .0.display())]
    PermissionDenied(PathBuf),
    /// The node refused the command; holds its message.
    #[error("{0}")]
    Command(String),
    /// The password could not be read from standard input.
    #[error("reading the password from standard input: {0}")]
    Password(String),
    /// The node did not answer within [`CTL_TIMEOUT`].
    #[error("the node did not answer within {} s", CTL_TIMEOUT.as_secs())]
    Timeout,
    /// The node's answer is not what the protocol says.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
    /// An I/O error on the socket.
    #[error("admin socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Reads a password from the first line of `input`, without its line end.
fn read_password(mut input: impl BufRead) -> Result<String, CtlError> {
    let mut line = String::new();
    let n = input
        .read_line(&mut line)
        .map_err(|e| CtlError::Password(e.to_string()))?;
    if n == 0 {
        return Err(CtlError::Password("no input".into()));
    }
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(trimmed.to_owned())
}

/// The password argument: itself, or the first line of stdin for `-`.
async fn resolve_password(password: String) -> Result<String, CtlError> {
    if password != "-" {
        return Ok(password);
    }
    tokio::task::spawn_blocking(|| read_password(io::stdin().lock()))
        .await
        .map_err(|e| CtlError::Password(e.to_string()))?
}

/// Sends `cmd` to the node listening on `socket_path` (normally
/// `<data_dir>/admin.sock`, see [`socket_path`]) and returns the text to
/// print: a confirmation for account commands, connected users one per line
/// (empty when there are none), stats as `name value` lines, the status line.
/// A password given as `-` is read from standard input first.
pub async fn run_ctl(socket_path: &Path, cmd: CtlCommand) -> Result<String, CtlError> {
    let request = match cmd {
        CtlCommand::Register {
            user,
            host,
            password,
        } => Request::Register {
            user,
            host,
            password: resolve_password(password).await?,
        },
        CtlCommand::Unregister { user, host } => Request::Unregister { user, host },
        CtlCommand::ChangePassword {
            user,
            host,
            password,
        } => Request::ChangePassword {
            user,
            host,
            password: resolve_password(password).await?,
        },
        CtlCommand::ConnectedUsers => Request::ConnectedUsers,
        CtlCommand::Kick { jid, reason } => Request::Kick { jid, reason },
        CtlCommand::Stats => Request::Stats,
        CtlCommand::Status => Request::Status,
        CtlCommand::StartModule {
            name,
            host,
            options,
        } => Request::StartModule {
            host,
            name,
            options: parse_options(&options)?,
        },
        CtlCommand::StopModule { name, host } => Request::StopModule { host, name },
        CtlCommand::ReloadModule {
            name,
            host,
            options,
        } => Request::ReloadModule {
            host,
            name,
            options: parse_options(&options)?,
        },
        CtlCommand::Modules { host } => Request::Modules { host },
    };
    let value = tokio::time::timeout(CTL_TIMEOUT, call(socket_path, &request))
        .await
        .map_err(|_| CtlError::Timeout)??;
    format_answer(&request, value)
}

/// A module's options given on the command line: a JSON object.
fn parse_options(text: &str) -> Result<serde_json::Map<String, Value>, CtlError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(CtlError::Protocol(
            "--options must be a JSON object, e.g. '{\"send_pings\": true}'".into(),
        )),
        Err(e) => Err(CtlError::Protocol(format!("--options is not JSON: {e}"))),
    }
}

/// Sends one request and returns the `ok` value.
async fn call(socket_path: &Path, request: &Request) -> Result<Value, CtlError> {
    let io_err = |source| CtlError::Io {
        path: socket_path.to_owned(),
        source,
    };
    let stream = match UnixStream::connect(socket_path).await {
        Ok(stream) => stream,
        Err(e) => {
            return Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    CtlError::NotRunning {
                        data_dir: data_dir_of(socket_path),
                        socket: socket_path.to_owned(),
                    }
                }
                io::ErrorKind::PermissionDenied => {
                    CtlError::PermissionDenied(socket_path.to_owned())
                }
                _ => io_err(e),
            });
        }
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request).map_err(|e| CtlError::Protocol(e.to_string()))?;
    line.push('\n');
    write.write_all(line.as_bytes()).await.map_err(io_err)?;
    let mut answer = String::new();
    let n = BufReader::new(read)
        .read_line(&mut answer)
        .await
        .map_err(io_err)?;
    if n == 0 {
        return Err(CtlError::Protocol(
            "the node closed the connection without answering".into(),
        ));
    }
    let answer: Value =
        serde_json::from_str(&answer).map_err(|e| CtlError::Protocol(e.to_string()))?;
    let Value::Object(mut map) = answer else {
        return Err(CtlError::Protocol(answer.to_string()));
    };
    if let Some(error) = map.remove("error") {
        return Err(CtlError::Command(match error {
            Value::String(s) => s,
            other => other.to_string(),
        }));
    }
    map.remove("ok")
        .ok_or_else(|| CtlError::Protocol(Value::Object(map).to_string()))
}

/// The text `ctl` prints for the `ok` value of `request`.
fn format_answer(request: &Request, value: Value) -> Result<String, CtlError> {
    let unexpected = |v: &Value| CtlError::Protocol(v.to_string());
    Ok(match request {
        Request::Register { user, host, .. } => format!("User {user}@{host} registered"),
        Request::Unregister { user, host } => format!("User {user}@{host} unregistered"),
        Request::ChangePassword { user, host, .. } => {
            format!("Password of {user}@{host} changed")
        }
        Request::ConnectedUsers => {
            let users: Vec<String> =
                serde_json::from_value(value.clone()).map_err(|_| unexpected(&value))?;
            users.join("\n")
        }
        Request::Kick { jid, .. } => {
            let n = value.as_u64().ok_or_else(|| unexpected(&value))?;
            let s = if n == 1 { "" } else { "s" };
            format!("Kicked {n} session{s} of {jid}")
        }
        Request::Stats => {
            let stats: Vec<(String, u64)> =
                serde_json::from_value(value.clone()).map_err(|_| unexpected(&value))?;
            stats
                .iter()
                .map(|(name, v)| format!("{name} {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Request::Status => match value {
            Value::String(s) => s,
            other => return Err(unexpected(&other)),
        },
        Request::StartModule { host, name, .. } => {
            format!(
                "Module {name} started on {}",
                host.as_deref().unwrap_or("every host")
            )
        }
        Request::StopModule { host, name } => {
            format!(
                "Module {name} stopped on {}",
                host.as_deref().unwrap_or("every host")
            )
        }
        Request::ReloadModule { host, name, .. } => {
            format!(
                "Module {name} reloaded on {}",
                host.as_deref().unwrap_or("every host")
            )
        }
        Request::Modules { .. } => {
            let modules: Vec<(String, String)> =
                serde_json::from_value(value.clone()).map_err(|_| unexpected(&value))?;
            modules
                .iter()
                .map(|(name, options)| format!("{name} {options}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::io::AsyncReadExt;

    /// Accounts in a map, sessions in a list.
    #[derive(Default)]
    struct FakeApi {
        users: Mutex<HashMap<(String, String), String>>,
        sessions: Mutex<Vec<String>>,
    }

    impl FakeApi {
        fn check_host(host: &str) -> Result<(), AdminError> {
            if host == "localhost" || host == "example.org" {
                Ok(())
            } else {
                Err(AdminError::UnknownHost(host.into()))
            }
        }
    }

    impl AdminApi for FakeApi {
        fn register<'a>(
            &'a self,
            user: &'a str,
            host: &'a str,
            password: &'a str,
        ) -> BoxFuture<'a, Result<(), AdminError>> {
            Box::pin(async move {
                Self::check_host(host)?;
                if password.is_empty() {
                    return Err(AdminError::Invalid("empty password".into()));
                }
                let mut users = self.users.lock().unwrap();
                let key = (user.to_owned(), host.to_owned());
                if users.contains_key(&key) {
                    return Err(AdminError::UserExists(format!("{user}@{host}")));
                }
                users.insert(key, password.to_owned());
                Ok(())
            })
        }

        fn unregister<'a>(
            &'a self,
            user: &'a str,
            host: &'a str,
        ) -> BoxFuture<'a, Result<(), AdminError>> {
            Box::pin(async move {
                let removed = self
                    .users
                    .lock()
                    .unwrap()
                    .remove(&(user.to_owned(), host.to_owned()));
                match removed {
                    Some(_) => Ok(()),
                    None => Err(AdminError::NoSuchUser(format!("{user}@{host}"))),
                }
            })
        }

        fn change_password<'a>(
            &'a self,
            user: &'a str,
            host: &'a str,
            password: &'a str,
        ) -> BoxFuture<'a, Result<(), AdminError>> {
            Box::pin(async move {
                match self
                    .users
                    .lock()
                    .unwrap()
                    .get_mut(&(user.to_owned(), host.to_owned()))
                {
                    Some(p) => {
                        *p = password.to_owned();
                        Ok(())
                    }
                    None => Err(AdminError::NoSuchUser(format!("{user}@{host}"))),
                }
            })
        }

        fn connected_users<'a>(&'a self) -> BoxFuture<'a, Result<Vec<String>, AdminError>> {
            Box::pin(async move {
                let mut s = self.sessions.lock().unwrap().clone();
                s.sort();
                Ok(s)
            })
        }

        fn kick<'a>(
            &'a self,
            jid: &'a str,
            _reason: &'a str,
        ) -> BoxFuture<'a, Result<usize, AdminError>> {
            Box::pin(async move {
                if !jid.contains('@') {
                    return Err(AdminError::Invalid(format!("bad JID {jid}")));
                }
                let mut sessions = self.sessions.lock().unwrap();
                let before = sessions.len();
                sessions.retain(|s| s != jid && s.split('/').next() != Some(jid));
                Ok(before - sessions.len())
            })
        }

        fn stats<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, u64)>, AdminError>> {
            Box::pin(async move {
                let registered = self.users.lock().unwrap().len() as u64;
                let online = self.sessions.lock().unwrap().len() as u64;
                Ok(vec![
                    ("registered_users.localhost".into(), registered),
                    ("online_sessions".into(), online),
                ])
            })
        }

        fn status<'a>(&'a self) -> BoxFuture<'a, Result<String, AdminError>> {
            Box::pin(async move { Ok("node beamline@localhost started, hosts localhost".into()) })
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        api: Arc<FakeApi>,
        server: Option<AdminServer>,
    }

    async fn start_with(options: AdminServerOptions) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let api = Arc::new(FakeApi::default());
        let server = serve_admin_with(path.clone(), api.clone(), options)
            .await
            .unwrap();
        Fixture {
            _dir: dir,
            path,
            api,
            server: Some(server),
        }
    }

    async fn start() -> Fixture {
        start_with(AdminServerOptions::default()).await
    }

    fn register(user: &str, password: &str) -> CtlCommand {
        CtlCommand::Register {
            user: user.into(),
            host: "localhost".into(),
            password: password.into(),
        }
    }

    /// Sends raw lines on one connection and reads one response line each.
    async fn raw_exchange(stream: &mut BufReader<UnixStream>, line: &str) -> Option<Value> {
        stream.get_mut().write_all(line.as_bytes()).await.unwrap();
        let mut answer = String::new();
        if stream.read_line(&mut answer).await.unwrap() == 0 {
            return None;
        }
        Some(serde_json::from_str(&answer).unwrap())
    }

    #[tokio::test]
    async fn every_command_round_trips() {
        let f = start().await;
        let out = run_ctl(&f.path, register("alice", "secret")).await.unwrap();
        assert_eq!(out, "User alice@localhost registered");
        assert_eq!(
            f.api.users.lock().unwrap()[&("alice".into(), "localhost".into())],
            "secret"
        );

        let out = run_ctl(
            &f.path,
            CtlCommand::ChangePassword {
                user: "alice".into(),
                host: "localhost".into(),
                password: "new secret".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(out, "Password of alice@localhost changed");
        assert_eq!(
            f.api.users.lock().unwrap()[&("alice".into(), "localhost".into())],
            "new secret"
        );

        assert_eq!(
            run_ctl(&f.path, CtlCommand::ConnectedUsers).await.unwrap(),
            ""
        );
        *f.api.sessions.lock().unwrap() = vec![
            "bob@localhost/b".into(),
            "alice@localhost/phone".into(),
            "alice@localhost/desk".into(),
        ];
        assert_eq!(
            run_ctl(&f.path, CtlCommand::ConnectedUsers).await.unwrap(),
            "alice@localhost/desk\nalice@localhost/phone\nbob@localhost/b"
        );

        let kick = |jid: &str| CtlCommand::Kick {
            jid: jid.into(),
            reason: "bye".into(),
        };
        assert_eq!(
            run_ctl(&f.path, kick("alice@localhost/desk"))
                .await
                .unwrap(),
            "Kicked 1 session of alice@localhost/desk"
        );
        *f.api.sessions.lock().unwrap() = vec![
            "alice@localhost/a".into(),
            "alice@localhost/b".into(),
            "bob@localhost/b".into(),
        ];
        assert_eq!(
            run_ctl(&f.path, kick("alice@localhost")).await.unwrap(),
            "Kicked 2 sessions of alice@localhost"
        );

        assert_eq!(
            run_ctl(&f.path, CtlCommand::Stats).await.unwrap(),
            "registered_users.localhost 1\nonline_sessions 1"
        );
        assert_eq!(
            run_ctl(&f.path, CtlCommand::Status).await.unwrap(),
            "node beamline@localhost started, hosts localhost"
        );

        let out = run_ctl(
            &f.path,
            CtlCommand::Unregister {
                user: "alice".into(),
                host: "localhost".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(out, "User alice@localhost unregistered");
        assert!(f.api.users.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn api_errors_pass_through() {
        let f = start().await;
        run_ctl(&f.path, register("alice", "secret")).await.unwrap();
        let e = run_ctl(&f.path, register("alice", "other"))
            .await
            .unwrap_err();
        assert!(matches!(e, CtlError::Command(_)), "{e:?}");
        assert_eq!(e.to_string(), "user alice@localhost already exists");

        let e = run_ctl(
            &f.path,
            CtlCommand::Unregister {
                user: "bob".into(),
                host: "localhost".into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "no user bob@localhost");

        let e = run_ctl(
            &f.path,
            CtlCommand::Register {
                user: "x".into(),
                host: "nowhere".into(),
                password: "p".into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "unknown host nowhere");

        let e = run_ctl(
            &f.path,
            CtlCommand::Kick {
                jid: "nojid".into(),
                reason: "r".into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "bad JID nojid");
    }

    #[tokio::test]
    async fn malformed_request_gets_an_error_and_the_connection_stays_usable() {
        let f = start().await;
        let mut conn = BufReader::new(UnixStream::connect(&f.path).await.unwrap());
        for bad in [
            "not json\n",
            "{\"command\":\"no_such\"}\n",
            "{\"command\":\"register\",\"args\":{\"user\":\"a\"}}\n",
            "[1,2,3]\n",
            "\n",
            "\u{0}\u{1}\u{ff}\n",
        ] {
            let answer = raw_exchange(&mut conn, bad).await.unwrap();
            let msg = answer["error"].as_str().unwrap();
            assert!(msg.starts_with("bad request"), "{bad:?}: {msg}");
        }
        let answer = raw_exchange(&mut conn, "{\"command\":\"status\"}\n")
            .await
            .unwrap();
        assert_eq!(
            answer,
            json!({"ok": "node beamline@localhost started, hosts localhost"})
        );
        let answer = raw_exchange(
            &mut conn,
            "{\"command\":\"register\",\"args\":{\"user\":\"a\",\"host\":\"localhost\",\"password\":\"p\"}}\n",
        )
        .await
        .unwrap();
        assert_eq!(answer, json!({"ok": null}));
    }

    #[tokio::test]
    async fn oversized_request_is_refused_and_the_connection_closed() {
        let f = start_with(AdminServerOptions {
            max_request_bytes: 1024,
            ..AdminServerOptions::default()
        })
        .await;
        let mut conn = BufReader::new(UnixStream::connect(&f.path).await.unwrap());
        let big = format!("{}\n", "a".repeat(100_000));
        let (mut read, mut write) = conn.get_mut().split();
        let mut answer = String::new();
        let mut reader = BufReader::new(&mut read);
        // The server may close before all is written: ignore write errors.
        let (_, n) = tokio::join!(write.write_all(big.as_bytes()), async {
            reader.read_line(&mut answer).await.unwrap()
        });
        assert!(n > 0);
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            answer["error"].as_str().unwrap(),
            "request too large (limit 1024 bytes)"
        );
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest).await;
        assert!(rest.is_empty());

        // A request of exactly the limit is read.
        let mut conn = BufReader::new(UnixStream::connect(&f.path).await.unwrap());
        let mut line = "{\"command\":\"status\"}".to_string();
        line.push_str(&" ".repeat(1024 - line.len()));
        line.push('\n');
        let answer = raw_exchange(&mut conn, &line).await.unwrap();
        assert!(answer.get("ok").is_some(), "{answer}");
    }

    #[tokio::test]
    async fn default_limit_is_64_kib() {
        let f = start().await;
        let mut conn = BufReader::new(UnixStream::connect(&f.path).await.unwrap());
        let line = format!(
            "{{\"command\":\"kick\",\"args\":{{\"jid\":\"a@b\",\"reason\":\"{}\"}}}}\n",
            "r".repeat(65 * 1024)
        );
        let answer = raw_exchange(&mut conn, &line).await.unwrap();
        assert_eq!(
            answer["error"].as_str().unwrap(),
            "request too large (limit 65536 bytes)"
        );
    }

    #[tokio::test]
    async fn idle_connection_is_closed() {
        let f = start_with(AdminServerOptions {
            idle_timeout: Duration::from_millis(200),
            ..AdminServerOptions::default()
        })
        .await;
        let mut conn = UnixStream::connect(&f.path).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
            .await
            .expect("closed in time")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_refused() {
        let f = start_with(AdminServerOptions {
            max_connections: 1,
            ..AdminServerOptions::default()
        })
        .await;
        let mut first = BufReader::new(UnixStream::connect(&f.path).await.unwrap());
        // Once answered, the first connection surely holds the permit.
        raw_exchange(&mut first, "{\"command\":\"status\"}\n")
            .await
            .unwrap();
        let e = run_ctl(&f.path, CtlCommand::Status).await.unwrap_err();
        assert_eq!(e.to_string(), "too many admin connections (limit 1)");
        drop(first);
        // The permit comes back once the first connection's task ends.
        let mut ok = false;
        for _ in 0..50 {
            if run_ctl(&f.path, CtlCommand::Status).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok);
    }

    #[tokio::test]
    async fn socket_file_mode_is_0600() {
        let f = start().await;
        let meta = std::fs::symlink_metadata(&f.path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // No temporary directory is left next to it.
        let entries: Vec<_> = std::fs::read_dir(f.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from(SOCKET_FILE_NAME)]);
    }

    #[tokio::test]
    async fn stop_removes_the_socket_and_ctl_says_no_node_runs() {
        let mut f = start().await;
        f.server.take().unwrap().stop().await;
        assert!(!f.path.exists());
        let e = run_ctl(&f.path, CtlCommand::Status).await.unwrap_err();
        assert!(matches!(e, CtlError::NotRunning { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "no node is running with data dir {} (no admin socket at {})",
                f.path.parent().unwrap().display(),
                f.path.display()
            )
        );
    }

    #[tokio::test]
    async fn stop_closes_idle_connections_at_once() {
        let mut f = start().await;
        let mut conn = UnixStream::connect(&f.path).await.unwrap();
        // Make sure the connection was accepted before stopping.
        conn.write_all(b"{\"command\":\"status\"}\n").await.unwrap();
        let mut reader = BufReader::new(&mut conn);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let stop = f.server.take().unwrap().stop();
        tokio::time::timeout(Duration::from_secs(2), stop)
            .await
            .expect("stop waits for no idle connection");
        let mut rest = Vec::new();
        assert_eq!(reader.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn drop_removes_the_socket() {
        let mut f = start().await;
        drop(f.server.take());
        assert!(!f.path.exists());
    }

    #[tokio::test]
    async fn stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        // A socket file nobody listens on, as a crashed node leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let e = run_ctl(&path, CtlCommand::Status).await.unwrap_err();
        assert!(matches!(e, CtlError::NotRunning { .. }), "{e:?}");

        let server = serve_admin(path.clone(), Arc::new(FakeApi::default()))
            .await
            .unwrap();
        assert!(run_ctl(&path, CtlCommand::Status).await.is_ok());
        server.stop().await;
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn second_live_server_on_the_same_path_is_refused() {
        let f = start().await;
        let e = serve_admin(f.path.clone(), Arc::new(FakeApi::default()))
            .await
            .unwrap_err();
        assert!(matches!(e, AdminStartError::AlreadyRunning { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "another node is running with data dir {}",
                f.path.parent().unwrap().display()
            )),
            "{msg}"
        );
        // The first one is untouched.
        assert_eq!(
            run_ctl(&f.path, CtlCommand::Status).await.unwrap(),
            "node beamline@localhost started, hosts localhost"
        );
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        std::fs::write(&path, "precious").unwrap();
        let e = serve_admin(path.clone(), Arc::new(FakeApi::default()))
            .await
            .unwrap_err();
        assert!(matches!(e, AdminStartError::NotASocket(_)), "{e:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }

    #[tokio::test]
    async fn stop_does_not_remove_a_socket_that_is_not_ours() {
        let mut f = start().await;
        let server = f.server.take().unwrap();
        // Someone replaced the file (not a node: ours would refuse).
        std::fs::remove_file(&f.path).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&f.path).unwrap();
        server.stop().await;
        assert!(f.path.exists());
    }

    #[test]
    fn password_from_stdin_is_the_first_line() {
        assert_eq!(
            read_password(&b"s3cret\nrest\n"[..]).unwrap(),
            "s3cret".to_string()
        );
        assert_eq!(read_password(&b"with space\r\n"[..]).unwrap(), "with space");
        assert_eq!(read_password(&b"no newline"[..]).unwrap(), "no newline");
        assert!(matches!(
            read_password(&b""[..]),
            Err(CtlError::Password(_))
        ));
    }

    #[test]
    fn cli_parses_like_ejabberdctl() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: CtlCommand,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).map(|c| c.cmd)
        };
        assert_eq!(
            parse(&["register", "alice", "localhost", "secret"]).unwrap(),
            register("alice", "secret")
        );
        assert_eq!(
            parse(&["change-password", "alice", "localhost", "-"]).unwrap(),
            CtlCommand::ChangePassword {
                user: "alice".into(),
                host: "localhost".into(),
                password: "-".into()
            }
        );
        assert_eq!(
            parse(&["connected-users"]).unwrap(),
            CtlCommand::ConnectedUsers
        );
        assert_eq!(
            parse(&["kick", "a@b"]).unwrap(),
            CtlCommand::Kick {
                jid: "a@b".into(),
                reason: "Kicked by administrator".into()
            }
        );
        assert_eq!(
            parse(&["kick", "a@b/r", "--reason", "spam"]).unwrap(),
            CtlCommand::Kick {
                jid: "a@b/r".into(),
                reason: "spam".into()
            }
        );
        assert!(parse(&["register", "alice", "localhost"]).is_err());
        // Debug output hides passwords.
        let dbg = format!("{:?}", register("alice", "hunter2"));
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}
