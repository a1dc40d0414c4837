//! Subscriber lists: immutable, sorted snapshots swapped on every write, so
//! that a run clones one `Arc` and then iterates without any lock.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ractor::{ActorCell, ActorRef, ActorStatus, Message};

use super::types::{Answer, HookCall, SubscriptionId};

/// Key of a hook point in the registry: its name plus the hash computed at
/// compile time by [`HookPoint::new`](super::HookPoint::new).
#[derive(Clone, Copy, Debug)]
pub(super) struct PointKey {
    pub(super) hash: u64,
    pub(super) name: &'static str,
}

impl PartialEq for PointKey {
    fn eq(&self, other: &Self) -> bool {
        // The hash is a function of the name; comparing it first is a cheap
        // way out for different names.
        self.hash == other.hash && self.name == other.name
    }
}

impl Eq for PointKey {}

impl Hash for PointKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hands the precomputed hash of a [`PointKey`] through unchanged.
#[derive(Default)]
pub(super) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only PointKey is hashed with this hasher and it calls write_u64;
        // this fallback keeps any other use correct, if slower.
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The hasher of the points map.
pub(super) type PointHasher = BuildHasherDefault<PassThrough>;

/// What every subscription has, whatever its types.
pub(super) struct Meta {
    pub(super) id: SubscriptionId,
    pub(super) priority: i32,
    /// The actor whose end ends the subscription: the subscriber itself, or
    /// the owner given with a closure.
    pub(super) owner: Option<ActorCell>,
    /// Set when a call timed out and the subscriber has not answered it yet;
    /// runs skip the subscriber meanwhile instead of queueing more calls
    /// behind the stuck one.
    pub(super) stalled: AtomicBool,
}

impl Meta {
    pub(super) fn is_alive(&self) -> bool {
        self.owner.as_ref().is_none_or(|cell| {
            !matches!(
                cell.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            )
        })
    }
}

/// Sends a hook call to an actor of some message type that converts from it.
pub(super) trait ActorSink<A, R>: Send + Sync {
    /// `false` when the actor is gone.
    fn send(&self, call: HookCall<A, R>) -> bool;
}

impl<A, R, M> ActorSink<A, R> for ActorRef<M>
where
    M: Message + From<HookCall<A, R>>,
{
    fn send(&self, call: HookCall<A, R>) -> bool {
        self.send_message(M::from(call)).is_ok()
    }
}

/// A closure subscriber: its answer at once or a boxed future of it
/// (closures are the cheaper path anyway: no actor hop).
pub(super) type BoxedFn<A, R> = Box<dyn Fn(A, R) -> Answer<R> + Send + Sync>;

pub(super) enum Target<A, R> {
    Actor(Box<dyn ActorSink<A, R>>),
    Func(BoxedFn<A, R>),
}

pub(super) struct Entry<A, R> {
    pub(super) meta: Meta,
    pub(super) target: Target<A, R>,
}

/// One (point, scope) list, sorted by (priority, id).
pub(super) struct List<A, R> {
    pub(super) entries: Vec<Arc<Entry<A, R>>>,
}

/// The type-erased face of a [`List`], so that one map holds the lists of
/// every point whatever their types.
pub(super) trait ErasedList: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    fn len(&self) -> usize;
    /// A new list with only the entries `keep` accepts.
    fn retain(&self, keep: &mut dyn FnMut(&Meta) -> bool) -> Arc<dyn ErasedList>;
}

impl<A: 'static, R: 'static> ErasedList for List<A, R> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn retain(&self, keep: &mut dyn FnMut(&Meta) -> bool) -> Arc<dyn ErasedList> {
        let entries = self
            .entries
            .iter()
            .filter(|entry| keep(&entry.meta))
            .cloned()
            .collect();
        Arc::new(List { entries })
    }
}

impl<A: 'static, R: 'static> List<A, R> {
    /// `existing` (if any, and of these types) with dead entries dropped
    /// (reported to `removed`) and `entry` added in its place.
    pub(super) fn with_entry(
        existing: Option<&Arc<dyn ErasedList>>,
        entry: Arc<Entry<A, R>>,
        removed: &mut Vec<SubscriptionId>,
    ) -> Arc<dyn ErasedList> {
        let mut entries: Vec<Arc<Entry<A, R>>> = existing
            .and_then(|list| list.as_any().downcast_ref::<List<A, R>>())
            .map(|list| {
                list.entries
                    .iter()
                    .filter(|old| {
                        let alive = old.meta.is_alive();
                        if !alive {
                            removed.push(old.meta.id);
                        }
                        alive
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        entries.push(entry);
        // Stable order: priority, then subscription order (ids only grow).
        entries.sort_by_key(|e| (e.meta.priority, e.meta.id));
        Arc::new(List { entries })
    }
}

/// All subscriptions of one hook point. Immutable once published: a write
/// clones it (cheap: `Arc`s inside) and replaces it.
#[derive(Clone)]
pub(super) struct PointTable {
    /// `TypeId` of `(A, R)`: every list below is a `List<A, R>`.
    pub(super) types: TypeId,
    pub(super) type_name: &'static str,
    pub(super) global: Option<Arc<dyn ErasedList>>,
    pub(super) hosts: HashMap<Arc<str>, Arc<dyn ErasedList>>,
}

impl PointTable {
    pub(super) fn new<A: 'static, R: 'static>() -> Self {
        Self {
            types: TypeId::of::<(A, R)>(),
            type_name: std::any::type_name::<(A, R)>(),
            global: None,
            hosts: HashMap::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.global.is_none() && self.hosts.is_empty()
    }

    /// The list of one scope.
    pub(super) fn list(&self, host: Option<&str>) -> Option<&Arc<dyn ErasedList>> {
        match host {
            None => self.global.as_ref(),
            Some(host) => self.hosts.get(host),
        }
    }

    /// Stores `list` for a scope, or removes the scope if `list` is empty
    /// (so that a run for it finds nothing and returns at once).
    pub(super) fn set(&mut self, host: Option<&Arc<str>>, list: Arc<dyn ErasedList>) {
        let empty = list.len() == 0;
        match (host, empty) {
            (None, false) => self.global = Some(list),
            (None, true) => self.global = None,
            (Some(host), false) => {
                self.hosts.insert(Arc::clone(host), list);
            }
            (Some(host), true) => {
                self.hosts.remove(host);
            }
        }
    }

    /// The host key as stored, so a scope can be rewritten without a new
    /// allocation for the host name.
    pub(super) fn host_key(&self, host: &str) -> Option<Arc<str>> {
        self.hosts
            .get_key_value(host)
            .map(|(key, _)| Arc::clone(key))
    }
}
