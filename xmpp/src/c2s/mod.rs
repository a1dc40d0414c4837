//! Client-to-server sessions (ejabberd's `ejabberd_c2s`).
//!
//! Every connection is one [`C2sSession`] actor, a `temporary` child of a
//! c2s dynamic supervisor, and one I/O task that the actor owns:
//!
//! 1. Until the client is authenticated and has reopened its stream, the
//!    task runs the negotiation on its own (`negotiate.rs`): stream header,
//!    features, STARTTLS, SASL against the backend's SCRAM credentials,
//!    under the listener's authentication deadline. Failures end in the
//!    stream error RFC 6120 §4.9 names, then the connection closes.
//! 2. Then it splits the connection: the write half goes to the actor
//!    ([`C2sMsg::Authenticated`]), and the task becomes the reader that
//!    decodes stanzas and casts them to the actor one by one.
//! 3. The actor binds the resource (through the session manager, which
//!    replaces a session on the same full JID), still within the
//!    listener's deadline (else `connection-timeout`, as ejabberd's
//!    negotiation timeout); then it stamps `from` on what the client
//!    sends, runs `user_send_packet` and routes; it writes what the
//!    router delivers after `user_receive_packet`.
//!
//! Whatever ends the actor (kick, replaced session, shutdown of its
//! supervisor, crash) leaves the session table and closes the stream: if
//! nothing else was said, with `system-shutdown`.

mod negotiate;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};

use crate::stream::{DecodeError, StreamDecoder, StreamEvent};
use crate::stream_error::StreamErrorCondition;
use crate::xml::Element;

pub use session::{C2sArgs, C2sSession};

pub(crate) use negotiate::ListenerSettings;

/// A byte stream a session runs on: TCP, TLS over TCP, or an in-memory
/// pipe.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Messages of a [`C2sSession`].
pub enum C2sMsg {
    /// From the I/O task: the client authenticated and reopened its
    /// stream; here is the write half.
    Authenticated {
        /// The connection's write half.
        writer: WriteHalf<BoxIo>,
        /// The authenticated user (normalised local part).
        user: String,
        /// The virtual host.
        host: String,
    },
    /// From the I/O task: a top-level element from the client.
    FromClient(Element),
    /// From the I/O task: the client closed its stream.
    ClientClosed,
    /// From the I/O task: the client's bytes broke a rule (bad XML, a
    /// limit); the stream ends with this error.
    StreamFailed(crate::stream_error::StreamError),
    /// From the I/O task: the connection is gone, or the negotiation
    /// ended (its stream error already written).
    Disconnected,
    /// From the router: a stanza for this session's client.
    Route(Element),
    /// The listener's deadline passed: closes the stream with
    /// `connection-timeout` unless a resource is bound by now (as
    /// ejabberd's negotiation timeout, which runs until the session is
    /// established).
    BindTimeout,
    /// To itself, after the stream was closed and the session left the
    /// table: everything queued before it has been routed again; stop.
    Finish,
    /// Close the stream with this error (kick, replaced session, overflow).
    Kick {
        /// The stream error condition.
        condition: StreamErrorCondition,
        /// Its text.
        text: Option<String>,
    },
}

impl std::fmt::Debug for C2sMsg {
    // By hand: elements may carry SASL data or message bodies; the
    // debug form shows only what kind of message it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            C2sMsg::Authenticated { user, host, .. } => write!(f, "Authenticated({user}@{host})"),
            C2sMsg::FromClient(el) => write!(f, "FromClient(<{}>)", el.name()),
            C2sMsg::ClientClosed => f.write_str("ClientClosed"),
            C2sMsg::StreamFailed(e) => write!(f, "StreamFailed({})", e.condition.name()),
            C2sMsg::Disconnected => f.write_str("Disconnected"),
            C2sMsg::Route(el) => write!(f, "Route(<{}>)", el.name()),
            C2sMsg::BindTimeout => f.write_str("BindTimeout"),
            C2sMsg::Finish => f.write_str("Finish"),
            C2sMsg::Kick { condition, .. } => write!(f, "Kick({})", condition.name()),
        }
    }
}

impl ractor::Message for C2sMsg {}

/// Why reading stopped.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The peer closed the connection.
    Eof,
    /// The socket failed.
    Io(std::io::Error),
    /// The bytes broke a rule of the decoder.
    Decode(DecodeError),
}

/// A token bucket on incoming bytes (a listener's shaper).
#[derive(Debug, Clone)]
pub(crate) struct Shaper {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Shaper {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Shaper {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(rate).max(1)),
            tokens: f64::from(burst.max(rate).max(1)),
            last: Instant::now(),
        }
    }

    /// Takes `n` bytes' worth of tokens; returns how long to wait before
    /// reading again.
    pub(crate) fn take(&mut self, n: usize) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Size of the buffer a connection reads into: one per worker thread,
/// shared by all connections (see [`next_event`]).
const READ_CHUNK: usize = 8192;

thread_local! {
    /// The read buffer of the connections polled on this thread. A read
    /// copies what arrived into the decoder before the poll returns, so
    /// no connection holds a read buffer while it waits: an idle session
    /// costs no buffer memory.
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads once from `r` into the thread's buffer and feeds what came into
/// `dec`; the number of bytes (0 at end of stream).
async fn read_into<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    dec: &mut StreamDecoder,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        READ_BUF.with(|cell| {
            // Not borrowed across an await: the borrow ends with this poll.
            let Ok(mut scratch) = cell.try_borrow_mut() else {
                return std::task::Poll::Ready(Err(std::io::Error::other(
                    "read buffer in use on this thread",
                )));
            };
            let mut rb = tokio::io::ReadBuf::new(&mut scratch[..]);
            match std::pin::Pin::new(&mut *r).poll_read(cx, &mut rb) {
                std::task::Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    dec.feed(rb.filled());
                    std::task::Poll::Ready(Ok(n))
                }
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
    })
    .await
}

/// Reads until the decoder yields an event.
pub(crate) async fn next_event<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    dec: &mut StreamDecoder,
    shaper: &mut Option<Shaper>,
) -> Result<StreamEvent, ReadEnd> {
    loop {
        match dec.next_event() {
            Ok(Some(ev)) => return Ok(ev),
            Ok(None) if dec.is_closed() => return Err(ReadEnd::Eof),
            Ok(None) => {}
            Err(e) => return Err(ReadEnd::Decode(e)),
        }
        let n = read_into(r, dec).await.map_err(ReadEnd::Io)?;
        if n == 0 {
            return Err(ReadEnd::Eof);
        }
        if let Some(shaper) = shaper {
            let wait = shaper.take(n);
            if !wait.is_zero() {
                // Boxed: most listeners have no shaper, and an inline timer
                // would enlarge every connection's reader task.
                Box::pin(tokio::time::sleep(wait)).await;
            }
        }
    }
}

/// Where a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client's address; `None` on the in-memory transport.
    pub addr: Option<SocketAddr>,
}

impl Peer {
    /// Whether the peer is on this machine (loopback address, or the
    /// in-memory transport).
    pub fn is_loopback(&self) -> bool {
        self.addr.is_none_or(|a| a.ip().is_loopback())
    }
}

/// Counts the connections of one listener per source address; the count
/// goes down when the guard drops.
pub(crate) struct IpGuard {
    map: Arc<dashmap::DashMap<std::net::IpAddr, u32>>,
    ip: std::net::IpAddr,
}

impl IpGuard {
    /// Counts one more connection from `ip`, or `None` if `ip` already has
    /// `max`.
    pub(crate) fn acquire(
        map: &Arc<dashmap::DashMap<std::net::IpAddr, u32>>,
        ip: std::net::IpAddr,
        max: u32,
    ) -> Option<IpGuard> {
        let mut entry = map.entry(ip).or_insert(0);
        if *entry >= max {
            return None;
        }
        *entry += 1;
        Some(IpGuard {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let remove = match self.map.get_mut(&self.ip) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if remove {
            self.map.remove_if(&self.ip, |_, n| *n == 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaper_lets_a_burst_through_then_paces() {
        let mut s = Shaper::new(1000, 2000);
        assert_eq!(s.take(1500), Duration::ZERO);
        let wait = s.take(1500);
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_millis(1000));
    }

    #[test]
    fn ip_guard_counts_and_releases() {
        let map = Arc::new(dashmap::DashMap::new());
        let ip: std::net::IpAddr = [127, 0, 0, 1].into();
        let a = IpGuard::acquire(&map, ip, 2).expect("first");
        let b = IpGuard::acquire(&map, ip, 2).expect("second");
        assert!(IpGuard::acquire(&map, ip, 2).is_none());
        drop(a);
        let c = IpGuard::acquire(&map, ip, 2).expect("after release");
        drop(b);
        drop(c);
        assert!(map.is_empty());
    }
}
