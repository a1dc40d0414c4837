//! One process's share of the sessions: logs them in, holds them, runs
//! the messaging phase and logs them out. Each phase returns a raw report
//! (counts, histograms, per-second figures) that merges with the reports
//! of other worker processes before it is summarised.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use beamline_xmpp::client::{Client, ClientConfig, ClientError, TlsMode};
use beamline_xmpp::sasl::Mechanism;
use beamline_xmpp::sasl::client::ScramCache;
use beamline_xmpp::server::Server;
use beamline_xmpp::{BareJid, Element, ns};
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::task::{Context, Poll};

use beamline_xmpp::memory::MemoryStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::args::{Args, Mech};
use crate::hist::Histogram;

/// A closed-loop sender whose message has not arrived within this long
/// sends the next one anyway (the late one is counted lost if it never
/// comes).
const STALL: Duration = Duration::from_secs(5);

/// Seconds as a [`Duration`], negative or NaN as zero.
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

/// Microseconds since the Unix epoch: the timestamp in each message body,
/// comparable across the processes of one machine.
fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    logged_in: AtomicU64,
    login_failed: AtomicU64,
    sent: AtomicU64,
    delivered: AtomicU64,
    logged_out: AtomicU64,
}

/// A snapshot of [`Counters`], also what workers send their parent.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Progress {
    /// Sessions logged in so far.
    pub logged_in: u64,
    /// Logins failed so far.
    pub login_failed: u64,
    /// Messages sent so far.
    pub sent: u64,
    /// Messages received (first copy) so far.
    pub delivered: u64,
    /// Sessions closed so far.
    pub logged_out: u64,
}

impl Progress {
    /// Adds another snapshot (of another worker).
    pub fn add(&mut self, o: &Progress) {
        self.logged_in += o.logged_in;
        self.login_failed += o.login_failed;
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.logged_out += o.logged_out;
    }
}

impl Counters {
    /// The current values.
    pub fn snapshot(&self) -> Progress {
        Progress {
            logged_in: self.logged_in.load(Ordering::Relaxed),
            login_failed: self.login_failed.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            logged_out: self.logged_out.load(Ordering::Relaxed),
        }
    }
}

/// What happened in one second of a phase.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Second {
    /// Logins completed, messages delivered or sessions closed.
    pub count: u64,
    /// Messages sent (messaging phase).
    pub sent: u64,
    /// Latencies of what completed in this second, µs.
    pub latency: Histogram,
}

fn second(v: &mut Vec<Second>, at: Duration) -> &mut Second {
    let s = at.as_secs() as usize;
    if v.len() <= s {
        v.resize_with(s + 1, Second::default);
    }
    &mut v[s]
}

fn merge_seconds(a: &mut Vec<Second>, b: Vec<Second>) {
    if a.len() < b.len() {
        a.resize_with(b.len(), Second::default);
    }
    for (x, y) in a.iter_mut().zip(b) {
        x.count += y.count;
        x.sent += y.sent;
        x.latency.merge(&y.latency);
    }
}

/// Raw figures of a login or logout phase.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SessionPhaseRaw {
    /// Sessions tried.
    pub attempted: u64,
    /// Sessions that succeeded.
    pub ok: u64,
    /// Failures by reason (sessions not even tried within the phase's time
    /// limit included).
    pub failures: BTreeMap<String, u64>,
    /// Latency of the successful ones, µs.
    pub latency: Histogram,
    /// Per second from the phase's start.
    pub per_second: Vec<Second>,
    /// The phase's wall time, ms.
    pub elapsed_ms: u64,
    /// Users (global numbers from 0) left without a session.
    pub offline: Vec<u64>,
}

impl SessionPhaseRaw {
    /// Adds another worker's figures (elapsed: the longest).
    pub fn merge(&mut self, o: SessionPhaseRaw) {
        self.attempted += o.attempted;
        self.ok += o.ok;
        for (k, v) in o.failures {
            *self.failures.entry(k).or_default() += v;
        }
        self.latency.merge(&o.latency);
        merge_seconds(&mut self.per_second, o.per_second);
        self.elapsed_ms = self.elapsed_ms.max(o.elapsed_ms);
        self.offline.extend(o.offline);
    }

    fn fail(&mut self, reason: String) {
        *self.failures.entry(reason).or_default() += 1;
    }
}

/// Raw figures of the messaging phase.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct MsgRaw {
    /// Senders that sent.
    pub senders: u64,
    /// Messages written to the server.
    pub sent: u64,
    /// Messages received, first copy of each (sender, sequence number).
    pub delivered: u64,
    /// Further copies of a message already received.
    pub duplicated: u64,
    /// Messages of type `error` that came back.
    pub bounced: u64,
    /// Sessions whose connection failed during the phase.
    pub session_errors: u64,
    /// One-way latency, µs.
    pub latency: Histogram,
    /// Per second from the phase's start (count = delivered).
    pub per_second: Vec<Second>,
    /// How long senders sent, ms.
    pub send_ms: u64,
    /// The phase's wall time including the drain, ms.
    pub elapsed_ms: u64,
}

impl MsgRaw {
    /// Adds another worker's figures.
    pub fn merge(&mut self, o: MsgRaw) {
        self.senders += o.senders;
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.duplicated += o.duplicated;
        self.bounced += o.bounced;
        self.session_errors += o.session_errors;
        self.latency.merge(&o.latency);
        merge_seconds(&mut self.per_second, o.per_second);
        self.send_ms = self.send_ms.max(o.send_ms);
        self.elapsed_ms = self.elapsed_ms.max(o.elapsed_ms);
    }
}

/// Where sessions connect.
pub enum Connector {
    /// TCP to these addresses (user `g` to address `g mod k`), from these
    /// source addresses in turn (none: the system's choice).
    Tcp {
        /// The server's addresses (one per node of a cluster).
        addrs: Vec<SocketAddr>,
        /// Source addresses.
        sources: Vec<IpAddr>,
    },
    /// Our own server's in-memory transport.
    Memory(Server),
}

impl Connector {
    /// TCP to `args.server`, over `args.sources()` loopback addresses when
    /// every server address is on IPv4 loopback.
    pub fn tcp(args: &Args) -> Connector {
        let all_v4_loopback = args
            .server
            .iter()
            .all(|a| matches!(a.ip(), IpAddr::V4(ip) if ip.is_loopback()));
        let sources = if all_v4_loopback {
            (1..=args.sources())
                .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k as u8)))
                .collect()
        } else {
            Vec::new()
        };
        Connector::Tcp {
            addrs: args.server.clone(),
            sources,
        }
    }
}

/// What every task of an [`Engine`] shares.
struct Ctx {
    args: Arc<Args>,
    connector: Connector,
    /// `--detach-clients`: where the transports of dropped clients stay
    /// open.
    kept: Option<Arc<Mutex<Vec<MemoryStream>>>>,
    /// Salted passwords, shared by every session (and `--scram-cache`).
    cache: ScramCache,
    tls: Option<Arc<rustls::ClientConfig>>,
    counters: Arc<Counters>,
}

/// One process's sessions and the phases run on them.
pub struct Engine {
    ctx: Arc<Ctx>,
    /// Boxed: a `Client` is some hundreds of bytes, and with
    /// `--detach-clients` every slot is empty but would still cost that
    /// much per session in the memory measured.
    sessions: Vec<Option<Box<Client>>>,
    /// Users of this slice with a session (with or without a client).
    online: Vec<bool>,
}

/// The client's end of an in-memory connection that, when the client is
/// dropped, stays open in a keeper instead of closing: the server's
/// session lives on without any client state (`--detach-clients`).
struct Kept {
    inner: Option<MemoryStream>,
    keeper: Arc<Mutex<Vec<MemoryStream>>>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(s) = self.inner.take()
            && let Ok(mut k) = self.keeper.lock()
        {
            k.push(s);
        }
    }
}

impl AsyncRead for Kept {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Kept {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// A short reason for a failed login or logout, to count failures by.
pub fn reason(e: &ClientError) -> String {
    match e {
        ClientError::Io(e) => format!("io: {}", e.kind()),
        ClientError::Tls(_) => "tls handshake".into(),
        ClientError::Timeout(what) => format!("timeout {what}"),
        ClientError::StreamError(se) => format!("stream error {}", se.condition.name()),
        ClientError::StreamClosed => "stream closed by server".into(),
        ClientError::Disconnected => "disconnected".into(),
        ClientError::SaslFailure { condition, .. } => format!("sasl failure {condition}"),
        ClientError::Sasl(_) => "sasl (client side)".into(),
        ClientError::NoMechanism { .. } => "no acceptable sasl mechanism".into(),
        ClientError::Bind(e) => format!("bind {}", e.condition.name()),
        ClientError::Session(e) => format!("session {}", e.condition.name()),
        ClientError::Decode(_) => "bad xml from server".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Config(_) => "configuration".into(),
        _ => "other".into(),
    }
}

/// The name of user number `g` (counted from `--user-offset`).
pub fn user_name(args: &Args, g: u64) -> String {
    format!("{}{}", args.user_prefix, args.user_offset + g)
}

/// A TCP connection from source address number `k` (round robin).
pub async fn tcp_connect(
    addr: SocketAddr,
    sources: &[IpAddr],
    k: u64,
    limit: Duration,
) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !sources.is_empty() {
        let ip = sources[(k % sources.len() as u64) as usize];
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = tokio::time::timeout(limit, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// xorshift64*: peers and jitter without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

impl Ctx {
    fn client_config(&self, g: u64) -> Result<ClientConfig, String> {
        let a = &self.args;
        let jid: BareJid = format!("{}@{}", user_name(a, g), a.domain)
            .parse()
            .map_err(|e| format!("bad JID: {e}"))?;
        let mechanisms = match a.mechanism {
            Mech::ScramSha256 => vec![Mechanism::ScramSha256],
            Mech::Plain => vec![Mechanism::Plain],
        };
        let tls = if a.starttls {
            TlsMode::StartTls
        } else {
            TlsMode::Plain
        };
        let mut c = ClientConfig::new(jid, a.password.clone(), a.server_for(g))
            .with_resource(a.resource.clone())
            .with_tls(tls)
            .with_mechanisms(mechanisms)
            .with_scram_cache(self.cache.clone());
        c.tls_client_config = self.tls.clone();
        c.step_timeout = secs(a.step_timeout);
        c.connect_timeout = secs(a.step_timeout);
        c.close_timeout = secs(a.step_timeout);
        Ok(c)
    }

    /// Connects, logs in and sends the initial presence; `None` when the
    /// client was detached.
    async fn login_one(&self, g: u64) -> Result<Option<Client>, String> {
        let cfg = self.client_config(g)?;
        let client = match &self.connector {
            Connector::Memory(server) => {
                let s = server
                    .connect_in_memory()
                    .await
                    .map_err(|e| format!("in-memory connect: {e}"))?;
                match &self.kept {
                    Some(keeper) => {
                        let s = Kept {
                            inner: Some(s),
                            keeper: keeper.clone(),
                        };
                        Client::connect_with_stream(s, cfg).await
                    }
                    None => Client::connect_with_stream(s, cfg).await,
                }
            }
            Connector::Tcp { addrs, sources } => {
                let addr = crate::args::server_for(addrs, g);
                let s = tcp_connect(addr, sources, g, cfg.connect_timeout)
                    .await
                    .map_err(|e| format!("connect: {}", e.kind()))?;
                Client::connect_with_stream(s, cfg).await
            }
        };
        let mut client = client.map_err(|e| reason(&e))?;
        client.send_presence().await.map_err(|e| reason(&e))?;
        // Detached: the client goes, its connection stays (in `kept`).
        Ok(self.kept.is_none().then_some(client))
    }
}

/// The messaging phase's shared state.
struct Msg {
    ctx: Arc<Ctx>,
    start: Instant,
    send_end: Instant,
    /// Time between two messages of one sender; `None`: closed loop.
    interval: Option<Duration>,
    /// Closed loop: a sender's window, released by the receiver.
    windows: HashMap<u64, Arc<Semaphore>>,
    /// Users a sender may pick (online).
    peers: Vec<u64>,
    /// Their full JIDs, in the same order (made once, not per message).
    peer_jids: Vec<String>,
    raw: Mutex<MsgRaw>,
    /// Senders still sending (their sending time not over): while one is,
    /// a message may be on its way out and not yet counted as sent, so
    /// the drain must not end on `delivered >= sent`.
    sending: AtomicU64,
}

/// A sender's place in [`Msg::sending`], given up once (when its sending
/// time is over, or when its session ends for any reason).
struct Sending<'a> {
    msg: &'a Msg,
    active: bool,
}

impl Sending<'_> {
    fn done(&mut self) {
        if std::mem::take(&mut self.active) {
            self.msg.sending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

impl Msg {
    fn raw(&self) -> std::sync::MutexGuard<'_, MsgRaw> {
        // A panicking session task cannot leave the figures half-updated
        // in a way that matters: go on with them.
        self.raw.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A random online peer other than `me`: its index in `peers`.
    fn pick_peer(&self, me: u64, rng: &mut Rng) -> Option<usize> {
        if self.peers.len() < 2 {
            return None;
        }
        loop {
            let i = rng.below(self.peers.len() as u64) as usize;
            if self.peers[i] != me {
                return Some(i);
            }
        }
    }

    /// Message `seq` of `from` to the peer at index `to`.
    fn message(&self, from: u64, to: usize, seq: u64) -> Element {
        Element::builder("message", ns::JABBER_CLIENT)
            .attr("to", self.peer_jids[to].clone())
            .attr("type", "chat")
            .attr("id", format!("lg{seq}"))
            .append(
                Element::builder("body", ns::JABBER_CLIENT)
                    .text(&format!("lg {from} {seq} {}", unix_micros()))
                    .build(),
            )
            .build()
    }

    fn received(&self, el: &Element, seen: &mut Seen) {
        if !el.is("message", ns::JABBER_CLIENT) {
            return;
        }
        if el.attr("type") == Some("error") {
            self.raw().bounced += 1;
            return;
        }
        let Some(body) = el.child_text("body", ns::JABBER_CLIENT) else {
            return;
        };
        let Some((from, seq, ts)) = parse_body(&body) else {
            return;
        };
        let latency = unix_micros().saturating_sub(ts);
        if seen.insert(u128::from(from) << 64 | u128::from(seq)) {
            {
                let mut raw = self.raw();
                raw.delivered += 1;
                raw.latency.record(latency);
                let s = second(&mut raw.per_second, self.start.elapsed());
                s.count += 1;
                s.latency.record(latency);
            }
            self.ctx.counters.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(w) = self.windows.get(&from) {
                w.add_permits(1);
            }
        } else {
            self.raw().duplicated += 1;
        }
    }

    fn sent(&self) {
        let mut raw = self.raw();
        raw.sent += 1;
        second(&mut raw.per_second, self.start.elapsed()).sent += 1;
        drop(raw);
        self.ctx.counters.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Adds the entries of the cache file at `path`, if there is one.
fn load_cache(cache: &ScramCache, path: &std::path::Path) -> Result<(), String> {
    match std::fs::File::open(path) {
        Ok(f) => cache
            .load(std::io::BufReader::new(f))
            .map(|_| ())
            .map_err(|e| format!("SCRAM cache {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("SCRAM cache {}: {e}", path.display())),
    }
}

/// Merges `cache` into the file at `path`. Worker processes of one run
/// share the file: each takes `PATH.lock` (made with `create_new`, removed
/// after; one still there after a minute of waiting is taken as left by a
/// process that died) and the new content replaces the old by a rename,
/// so a reader never sees half of it.
fn save_cache(cache: &ScramCache, path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let with_suffix = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    let lock = with_suffix(".lock");
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if std::time::Instant::now() >= give_up {
                    // Left by a process that died: take it over.
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    let result = (|| {
        // Entries other processes saved meanwhile are kept.
        let _ = load_cache(cache, path);
        let tmp = with_suffix(".tmp");
        let mut out = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?,
        );
        cache.save(&mut out)?;
        out.flush()?;
        drop(out);
        std::fs::rename(&tmp, path)
    })();
    let _ = std::fs::remove_file(&lock);
    result
}

/// The (sender, sequence) pairs a session received, as `sender << 64 |
/// seq`: one insert per delivered message, so a cheap hash (the keys are
/// not chosen by anyone hostile).
type Seen = HashSet<u128, std::hash::BuildHasherDefault<SeenHasher>>;

/// A multiply-xorshift hash of a [`Seen`] key.
#[derive(Default)]
struct SeenHasher(u64);

impl std::hash::Hasher for SeenHasher {
    fn finish(&self) -> u64 {
        let x = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^ (x >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
}

/// `lg SENDER SEQ MICROS`.
fn parse_body(body: &str) -> Option<(u64, u64, u64)> {
    let mut it = body.strip_prefix("lg ")?.split(' ');
    let from = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let ts = it.next()?.parse().ok()?;
    Some((from, seq, ts))
}

/// Most stanzas a closed-loop sender writes at once (its free window
/// slots, up to this).
const MAX_BATCH: usize = 8;

/// Waits for a sender's next turn: its time (fixed rate) or a free slot
/// in its window (closed loop, at most until `stall_at`). False when the
/// sending time is over first.
async fn turn(at: Instant, window: Option<&Semaphore>, stall_at: Instant, end: Instant) -> bool {
    // A free slot at once (the usual case at saturation): no timers.
    if let Some(p) = window.and_then(|w| w.try_acquire().ok()) {
        p.forget();
        return Instant::now() < end;
    }
    let wait = async {
        match window {
            Some(w) => {
                if let Ok(Ok(p)) = timeout_at(stall_at, w.acquire()).await {
                    p.forget();
                }
            }
            None => sleep_until(at).await,
        }
    };
    tokio::select! {
        _ = wait => Instant::now() < end,
        _ = sleep_until(end) => false,
    }
}

/// One session during the messaging phase: reads everything that comes,
/// and sends when it is a sender and its turn comes.
async fn session_loop(
    mut client: Client,
    me: u64,
    sender: bool,
    msg: Arc<Msg>,
    mut stop: watch::Receiver<bool>,
) -> Option<Client> {
    let mut seen = Seen::default();
    let mut rng = Rng::new(me + 1);
    let window = msg.windows.get(&me).cloned();
    let mut sending = sender && msg.peers.len() >= 2;
    // Counted in `msg.sending` by `Engine::messaging` before this task began.
    let mut place = Sending {
        msg: &msg,
        active: sending,
    };
    // Spread the first messages over one interval.
    let mut next = msg.start
        + msg.interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(rng.below(1000) as f64 / 1000.0)
        });
    let mut stall_at = msg.start + STALL;
    let mut seq = 0u64;
    // Both futures live across iterations: made anew on every message
    // received, they would register and drop a waiter and two timers each
    // time.
    let mut stopped = std::pin::pin!(stop.changed());
    let mut my_turn = Box::pin(turn(next, window.as_deref(), stall_at, msg.send_end));
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return Some(client),
            r = client.recv() => match r {
                Ok(el) => msg.received(&el, &mut seen),
                Err(_) => {
                    msg.raw().session_errors += 1;
                    return None;
                }
            },
            go = &mut my_turn, if sending => {
                if !go {
                    sending = false;
                    place.done();
                    continue;
                }
                let Some(to) = msg.pick_peer(me, &mut rng) else {
                    sending = false;
                    place.done();
                    continue;
                };
                client.queue(&msg.message(me, to, seq));
                msg.sent();
                seq += 1;
                // Closed loop: the slots free already go out in the same
                // write, as a client pipelines what it has to send.
                if let Some(w) = window.as_deref() {
                    let mut batch = 1;
                    while batch < MAX_BATCH && Instant::now() < msg.send_end {
                        let Ok(p) = w.try_acquire() else { break };
                        p.forget();
                        let Some(to) = msg.pick_peer(me, &mut rng) else { break };
                        client.queue(&msg.message(me, to, seq));
                        msg.sent();
                        seq += 1;
                        batch += 1;
                    }
                }
                if client.flush().await.is_err() {
                    msg.raw().session_errors += 1;
                    return None;
                }
                let now = Instant::now();
                stall_at = now + STALL;
                if let Some(i) = msg.interval {
                    // Catch up after a stall, but by at most a second.
                    next = (next + i).max(now - Duration::from_secs(1).min(now - msg.start));
                }
                my_turn = Box::pin(turn(next, window.as_deref(), stall_at, msg.send_end));
            }
        }
    }
}

impl Engine {
    /// An engine for `args.users` sessions starting at user
    /// `args.slice_start`.
    pub fn new(args: Arc<Args>, connector: Connector) -> Result<Engine, String> {
        let tls = if args.starttls {
            let make = if args.tls_pq {
                beamline_xmpp::client::tls_client_config
            } else {
                beamline_xmpp::client::tls_client_config_classical
            };
            Some(
                make(
                    &beamline_xmpp::client::TrustMode::AcceptAnyForTests,
                    TlsMode::StartTls,
                )
                .map_err(|e| format!("TLS client configuration: {e}"))?,
            )
        } else {
            None
        };
        let cache = ScramCache::new();
        if let Some(path) = &args.scram_cache {
            load_cache(&cache, path)?;
        }
        Ok(Engine {
            ctx: Arc::new(Ctx {
                kept: (args.in_memory && args.detach_clients)
                    .then(|| Arc::new(Mutex::new(Vec::new()))),
                // In memory, every account shares one salt (see
                // `provision::in_process`): one entry serves all logins.
                cache,
                args,
                connector,
                tls,
                counters: Arc::new(Counters::default()),
            }),
            sessions: Vec::new(),
            online: Vec::new(),
        })
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.ctx.counters.clone()
    }

    /// The login phase: every session connects, authenticates, binds and
    /// sends its initial presence, at most `login_concurrency` at once and
    /// `login_rate` started per second, within `login_timeout`.
    pub async fn login(&mut self) -> SessionPhaseRaw {
        let a = self.ctx.args.clone();
        let n = a.users;
        let start = Instant::now();
        let deadline = start + secs(a.login_timeout);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sem = Arc::new(Semaphore::new(a.login_concurrency.max(1)));
        let ctx = self.ctx.clone();
        let spawner = tokio::spawn(async move {
            for i in 0..n {
                if a.login_rate > 0.0 {
                    sleep_until(start + secs(i as f64 / a.login_rate)).await;
                }
                let permit = tokio::select! {
                    p = sem.clone().acquire_owned() => p,
                    _ = sleep_until(deadline) => break,
                };
                let Ok(permit) = permit else { break };
                let (ctx, tx) = (ctx.clone(), tx.clone());
                let g = a.slice_start + i;
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let r = timeout_at(deadline, ctx.login_one(g))
                        .await
                        .unwrap_or_else(|_| Err("phase time limit".into()));
                    drop(permit);
                    match &r {
                        Ok(_) => ctx.counters.logged_in.fetch_add(1, Ordering::Relaxed),
                        Err(_) => ctx.counters.login_failed.fetch_add(1, Ordering::Relaxed),
                    };
                    let _ = tx.send((i, r, t0.elapsed()));
                });
            }
        });
        let mut raw = SessionPhaseRaw::default();
        self.sessions = (0..n).map(|_| None).collect();
        self.online = vec![false; n as usize];
        while let Some((i, r, latency)) = rx.recv().await {
            raw.attempted += 1;
            match r {
                Ok(client) => {
                    raw.ok += 1;
                    let us = latency.as_micros() as u64;
                    raw.latency.record(us);
                    let s = second(&mut raw.per_second, start.elapsed());
                    s.count += 1;
                    s.latency.record(us);
                    self.sessions[i as usize] = client.map(Box::new);
                    self.online[i as usize] = true;
                }
                Err(reason) => raw.fail(reason),
            }
        }
        let _ = spawner.await;
        let not_started = n - raw.attempted;
        if not_started > 0 {
            *raw.failures
                .entry("not started within the phase time limit".into())
                .or_default() += not_started;
        }
        raw.elapsed_ms = start.elapsed().as_millis() as u64;
        if let Some(path) = &self.ctx.args.scram_cache {
            // The run's figures stand without it: say so and go on.
            if let Err(e) = save_cache(&self.ctx.cache, path) {
                eprintln!(
                    "beamline-loadgen: saving the SCRAM cache {}: {e}",
                    path.display()
                );
            }
        }
        raw.offline = self
            .online
            .iter()
            .enumerate()
            .filter(|(_, s)| !**s)
            .map(|(i, _)| self.ctx.args.slice_start + i as u64)
            .collect();
        raw
    }

    /// The messaging phase: `senders` of all users (spread evenly over the
    /// user numbers) send to random online peers, at `rate` messages/s in
    /// all or closed loop, for `duration`; every session reads what comes,
    /// until everything sent arrived (one process) or `drain` passed.
    /// `offline`: users of the whole run without a session. `local_peers`:
    /// pick peers in this process only (closed loop over several
    /// processes, where the window is released by the receiver).
    pub async fn messaging(&mut self, offline: &HashSet<u64>, local_peers: bool) -> MsgRaw {
        let a = self.ctx.args.clone();
        let total = a.total();
        let k = a.senders.min(total);
        let lo = a.slice_start;
        let hi = lo + a.users;
        let senders: HashSet<u64> = (0..k)
            .map(|j| j * total / k.max(1))
            .filter(|g| (lo..hi).contains(g))
            .collect();
        let closed = a.rate <= 0.0;
        let peers: Vec<u64> = if local_peers {
            (lo..hi)
                .filter(|g| self.sessions[(g - lo) as usize].is_some())
                .collect()
        } else {
            (0..total).filter(|g| !offline.contains(g)).collect()
        };
        let windows = if closed {
            senders
                .iter()
                .map(|g| (*g, Arc::new(Semaphore::new(a.window.max(1) as usize))))
                .collect()
        } else {
            HashMap::new()
        };
        let start = Instant::now();
        let msg = Arc::new(Msg {
            ctx: self.ctx.clone(),
            start,
            send_end: start + secs(a.duration),
            interval: (!closed).then(|| secs(k as f64 / a.rate)),
            windows,
            peer_jids: peers
                .iter()
                .map(|g| format!("{}@{}/{}", user_name(&a, *g), a.domain, a.resource))
                .collect(),
            peers,
            raw: Mutex::new(MsgRaw::default()),
            sending: AtomicU64::new(0),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let mut active_senders = 0;
        for (i, slot) in self.sessions.iter_mut().enumerate() {
            if let Some(client) = slot.take() {
                let g = lo + i as u64;
                let sender = senders.contains(&g);
                active_senders += u64::from(sender);
                if sender && msg.peers.len() >= 2 {
                    msg.sending.fetch_add(1, Ordering::AcqRel);
                }
                let (msg, stop) = (msg.clone(), stop_rx.clone());
                tasks.spawn(async move { (i, session_loop(*client, g, sender, msg, stop).await) });
            }
        }
        sleep_until(msg.send_end).await;
        let drain_end = msg.send_end + secs(a.drain);
        // Within one process, done as soon as every message sent arrived.
        let whole_run_here = a.users == total;
        while Instant::now() < drain_end {
            // Every sender done first: one may be writing a message that
            // is not counted as sent yet.
            if whole_run_here && msg.sending.load(Ordering::Acquire) == 0 {
                let raw = msg.raw();
                if raw.delivered >= raw.sent {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        while let Some(r) = tasks.join_next().await {
            if let Ok((i, client)) = r {
                self.sessions[i] = client.map(Box::new);
            }
        }
        let mut raw = std::mem::take(&mut *msg.raw());
        raw.senders = active_senders;
        raw.send_ms = secs(a.duration).as_millis() as u64;
        raw.elapsed_ms = start.elapsed().as_millis() as u64;
        raw
    }

    /// The logout phase: every session closes its stream and waits for the
    /// server's close, within `logout_timeout`.
    pub async fn logout(&mut self) -> SessionPhaseRaw {
        let a = self.ctx.args.clone();
        let start = Instant::now();
        let deadline = start + secs(a.logout_timeout);
        if let (Some(kept), Connector::Memory(server)) = (&self.ctx.kept, &self.ctx.connector) {
            return detached_logout(kept, server, &self.ctx.counters, start, deadline).await;
        }
        let sem = Arc::new(Semaphore::new(a.login_concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for client in self.sessions.drain(..).flatten() {
            let (sem, counters) = (sem.clone(), self.ctx.counters.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let t0 = Instant::now();
                let r = match timeout_at(deadline, client.close()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(reason(&e)),
                    Err(_) => Err("phase time limit".into()),
                };
                counters.logged_out.fetch_add(1, Ordering::Relaxed);
                (r, t0.elapsed(), Instant::now())
            });
        }
        let mut raw = SessionPhaseRaw::default();
        while let Some(r) = tasks.join_next().await {
            raw.attempted += 1;
            match r {
                Ok((Ok(()), latency, at)) => {
                    raw.ok += 1;
                    let us = latency.as_micros() as u64;
                    raw.latency.record(us);
                    let s = second(&mut raw.per_second, at - start);
                    s.count += 1;
                    s.latency.record(us);
                }
                Ok((Err(reason), _, _)) => raw.fail(reason),
                Err(_) => raw.fail("task failed".into()),
            }
        }
        raw.elapsed_ms = start.elapsed().as_millis() as u64;
        raw
    }
}

impl Engine {
    /// With `--detach-clients`: reads and drops what the server has sent
    /// to the detached clients since (their presence echoes), as a client
    /// would, so that the memory sampled next holds no unread transport
    /// buffers (the in-memory transport frees a buffer once it is read).
    pub fn drain_detached(&self) {
        let Some(kept) = &self.ctx.kept else { return };
        let mut streams = kept.lock().unwrap_or_else(|e| e.into_inner());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut scratch = [0u8; 4096];
        for s in streams.iter_mut() {
            loop {
                let mut rb = ReadBuf::new(&mut scratch);
                match Pin::new(&mut *s).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) if !rb.filled().is_empty() => {}
                    _ => break,
                }
            }
        }
    }
}

/// Logout of detached sessions: their connections end (no stream close:
/// there is no client to send it) and the server cleans up; done when it
/// holds no session, or at `deadline`.
async fn detached_logout(
    kept: &Mutex<Vec<MemoryStream>>,
    server: &Server,
    counters: &Counters,
    start: Instant,
    deadline: Instant,
) -> SessionPhaseRaw {
    let streams = std::mem::take(&mut *kept.lock().unwrap_or_else(|e| e.into_inner()));
    let n = streams.len() as u64;
    drop(streams);
    while server.sessions().local_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = server.sessions().local_count() as u64;
    counters.logged_out.fetch_add(n, Ordering::Relaxed);
    let mut raw = SessionPhaseRaw {
        attempted: n,
        ok: n.saturating_sub(left),
        elapsed_ms: start.elapsed().as_millis() as u64,
        ..SessionPhaseRaw::default()
    };
    if left > 0 {
        raw.failures.insert(
            "session still on the server at the phase time limit".into(),
            left,
        );
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache file line for salt `salt` (the other fields fixed).
    fn line(salt: &str) -> String {
        use base64::Engine as _;
        let b = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        format!(
            "sha256 4096 {} {} {}\n",
            b(salt.as_bytes()),
            b(&[1; 32]),
            b(&[2; 32])
        )
    }

    #[test]
    fn scram_cache_file_merges_what_each_process_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scram.cache");
        // No file yet: nothing to load, no error.
        let first = ScramCache::new();
        load_cache(&first, &path).unwrap();
        first.load(line("a").as_bytes()).unwrap();
        save_cache(&first, &path).unwrap();
        // Another process with another entry: the file keeps both.
        let second = ScramCache::new();
        second.load(line("b").as_bytes()).unwrap();
        save_cache(&second, &path).unwrap();
        let next_run = ScramCache::new();
        load_cache(&next_run, &path).unwrap();
        assert_eq!(next_run.len(), 2);
        assert!(!dir.path().join("scram.cache.lock").exists());
        // A damaged file is an error that names it.
        std::fs::write(&path, "sha256 x\n").unwrap();
        let e = load_cache(&ScramCache::new(), &path).unwrap_err();
        assert!(e.contains("scram.cache") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn body_round_trip() {
        assert_eq!(parse_body("lg 12 3 456"), Some((12, 3, 456)));
        assert_eq!(parse_body("hello"), None);
        assert_eq!(parse_body("lg 1 x 2"), None);
    }

    #[test]
    fn rng_stays_below() {
        let mut r = Rng::new(7);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }
}
