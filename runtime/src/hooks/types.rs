//! The public vocabulary of hooks: points, scopes, answers, calls, ids,
//! configuration, statistics and errors.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorId, RpcReplyPort};

/// A named hook point whose subscribers take an argument `A` and pass along
/// an accumulator `R`.
///
/// It is a typed key and holds no state, so points are declared as
/// constants, one place per subsystem (as MongooseIM's `mongoose_hooks`):
///
/// ```
/// use beamline_runtime::hooks::HookPoint;
///
/// /// Runs for every stanza a user sends; a subscriber may change or drop it.
/// pub const USER_SEND_PACKET: HookPoint<u64, Option<String>> =
///     HookPoint::new("user_send_packet");
/// /// Runs when a session closes; a plain notification.
/// pub const SESSION_CLOSED: HookPoint<String, ()> = HookPoint::new("session_closed");
/// ```
///
/// A point for [`Hooks::run`](super::Hooks::run) has `R = ()`; one for
/// [`Hooks::run_fold`](super::Hooks::run_fold) has the accumulator's type.
/// Two points with the same name must have the same types: subscribing with
/// other types fails with [`HookError::TypeMismatch`].
pub struct HookPoint<A, R> {
    name: &'static str,
    /// Hash of the name, computed at compile time so that a run does not
    /// hash the string again (see `list::PointKey`).
    hash: u64,
    // fn(A) -> R: the point neither owns an A nor an R, so it is Send,
    // Sync and Copy whatever they are.
    types: PhantomData<fn(A) -> R>,
}

impl<A, R> HookPoint<A, R> {
    /// Declares a hook point called `name`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            hash: name_hash(name),
            types: PhantomData,
        }
    }

    /// The hook point's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    pub(super) const fn hash(&self) -> u64 {
        self.hash
    }
}

impl<A, R> Clone for HookPoint<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for HookPoint<A, R> {}

impl<A, R> fmt::Debug for HookPoint<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookPoint")
            .field("name", &self.name)
            .field("arg", &std::any::type_name::<A>())
            .field("acc", &std::any::type_name::<R>())
            .finish()
    }
}

/// FNV-1a then the splitmix64 finaliser, so that every bit of the result
/// depends on the name (dashmap picks shards with the high bits, hashbrown
/// buckets with the low ones).
pub(super) const fn name_hash(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Where a hook runs: for the whole node, or for one virtual host.
///
/// Scopes are separate, as in ejabberd: running a point for
/// `Scope::Host("a.example")` reaches only the subscribers of that host, and
/// running it for `Scope::Global` only the global ones. A caller that wants
/// both runs the point twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope<'a> {
    /// Not tied to a host.
    Global,
    /// One virtual host; the string is opaque to this crate.
    Host(&'a str),
}

impl<'a> From<&'a str> for Scope<'a> {
    fn from(host: &'a str) -> Self {
        Scope::Host(host)
    }
}

impl Scope<'_> {
    /// The host, or `None` for the global scope.
    pub fn host(&self) -> Option<&str> {
        match self {
            Scope::Global => None,
            Scope::Host(host) => Some(host),
        }
    }
}

/// A subscriber's answer: go on to the next subscriber, or stop here. Both
/// carry the accumulator (`()` for [`Hooks::run`](super::Hooks::run)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Flow<R> {
    /// Hand this value to the next subscriber.
    Continue(R),
    /// Stop the run; this value is its result.
    Stop(R),
}

impl<R> Flow<R> {
    /// The value carried, whichever way the run goes.
    pub fn into_inner(self) -> R {
        match self {
            Flow::Continue(value) | Flow::Stop(value) => value,
        }
    }

    /// Whether this answer stops the run.
    pub fn is_stop(&self) -> bool {
        matches!(self, Flow::Stop(_))
    }
}

/// What a [`Hooks::subscribe_answer`](super::Hooks::subscribe_answer)
/// subscriber returns: its answer at once, or a future of it when it has
/// to wait. A subscriber that usually has nothing to do (most stanzas
/// concern it not at all) answers [`Answer::Now`] on that path and costs
/// no allocation.
#[must_use]
pub enum Answer<R> {
    /// The answer, with nothing to wait for.
    Now(Flow<R>),
    /// The answer once this future is done (subject to the call timeout).
    Later(futures::future::BoxFuture<'static, Flow<R>>),
}

impl<R> Answer<R> {
    /// [`Answer::Later`] of `future`, boxed.
    pub fn later(future: impl std::future::Future<Output = Flow<R>> + Send + 'static) -> Self {
        Answer::Later(Box::pin(future))
    }
}

impl<R> std::fmt::Debug for Answer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Now(flow) => f
                .debug_tuple("Now")
                .field(&if flow.is_stop() { "stop" } else { "continue" })
                .finish(),
            Answer::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// What a subscriber actor receives for one run of a hook point.
///
/// The subscriber answers through `reply`, once, with [`Flow::Continue`] and
/// the (possibly changed) accumulator, or with [`Flow::Stop`]. An actor
/// receives it inside its own message type, which converts from it:
///
/// ```
/// use beamline_runtime::hooks::{Flow, HookCall};
///
/// enum MyMsg {
///     /// A run of `user_send_packet`.
///     SendPacket(HookCall<u64, Option<String>>),
///     /// Other work of the actor.
///     Tick,
/// }
/// impl beamline_runtime::ractor::Message for MyMsg {}
/// impl From<HookCall<u64, Option<String>>> for MyMsg {
///     fn from(call: HookCall<u64, Option<String>>) -> Self {
///         MyMsg::SendPacket(call)
///     }
/// }
///
/// // in the actor's handle():
/// fn on_send_packet(call: HookCall<u64, Option<String>>) {
///     let HookCall { arg: _user, acc: packet, reply, .. } = call;
///     let answer = match packet {
///         Some(text) if text.contains("spam") => Flow::Stop(None),
///         other => Flow::Continue(other),
///     };
///     // The caller may have given up (timeout); nothing to do then.
///     let _ = reply.send(answer);
/// }
/// ```
///
/// `HookCall` is itself a [`ractor::Message`], so an actor may also use it
/// as its whole message type. Hook calls never cross nodes: the reply port
/// cannot be serialised, and subscribers must be local actors.
#[derive(Debug)]
pub struct HookCall<A, R> {
    /// The hook point's name (one actor may subscribe to several points of
    /// the same types).
    pub hook: &'static str,
    /// The host the hook runs for, `None` for the global scope.
    pub host: Option<Arc<str>>,
    /// The argument, a clone of the caller's for each subscriber.
    pub arg: A,
    /// The accumulator as the previous subscriber left it.
    pub acc: R,
    /// Where the answer goes. Its timeout is the registry's call timeout;
    /// [`RpcReplyPort::is_closed`] tells whether the caller stopped waiting.
    pub reply: RpcReplyPort<Flow<R>>,
}

impl<A, R> HookCall<A, R> {
    /// Answers [`Flow::Continue`] with the accumulator unchanged.
    pub fn pass(self) {
        // A closed port means the caller gave up; there is no one to tell.
        let _ = self.reply.send(Flow::Continue(self.acc));
    }
}

// The workspace builds ractor with `cluster`, which has no blanket impl.
impl<A: Send + 'static, R: Send + 'static> ractor::Message for HookCall<A, R> {}

/// Identifies one subscription, for [`Hooks::unsubscribe`](super::Hooks::unsubscribe).
///
/// Ids grow with each subscription, which is how equal priorities keep
/// subscription order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(pub(super) u64);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hooksub#{}", self.0)
    }
}

/// Settings of a [`Hooks`](super::Hooks) registry.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HooksConfig {
    /// How long a run waits for one subscriber's answer before it skips that
    /// subscriber. Default: 5 seconds.
    pub call_timeout: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(5),
        }
    }
}

impl HooksConfig {
    /// Sets [`HooksConfig::call_timeout`].
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }
}

/// Counters of what went wrong while running hooks, for a whole registry
/// ([`Hooks::stats`](super::Hooks::stats)) or one point
/// ([`Hooks::point_stats`](super::Hooks::point_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookStats {
    /// Deliveries skipped because the subscriber timed out, crashed, dropped
    /// its reply port, panicked (closures), or had not yet answered an
    /// earlier call that timed out.
    pub skipped: u64,
    /// Of `skipped`: those that waited the whole call timeout.
    pub timed_out: u64,
    /// Of `skipped`: those whose subscriber crashed, dropped the reply port
    /// or panicked.
    pub failed: u64,
    /// Subscriptions removed because their actor had stopped.
    pub pruned: u64,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The name is already in use by a point with other argument or
    /// accumulator types.
    #[error("hook `{hook}` carries {existing}, not {requested}")]
    TypeMismatch {
        /// The hook point's name.
        hook: &'static str,
        /// `(A, R)` of the subscriptions already there.
        existing: &'static str,
        /// `(A, R)` of the refused subscription.
        requested: &'static str,
    },
    /// Hook calls carry a reply port and run on this node only.
    #[error("hook `{hook}`: actor {actor} is on another node; subscribers must be local")]
    RemoteActor {
        /// The hook point's name.
        hook: &'static str,
        /// The remote actor.
        actor: ActorId,
    },
    /// The actor (or a closure's owner) is stopping or stopped.
    #[error("hook `{hook}`: actor {actor} is not running")]
    NotRunning {
        /// The hook point's name.
        hook: &'static str,
        /// The actor.
        actor: ActorId,
    },
}
