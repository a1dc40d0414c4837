//! Hooks: named extension points that actors subscribe to, in the manner of
//! `ejabberd_hooks`.
//!
//! A [`HookPoint<A, R>`] is a typed name. Actors (or closures) subscribe to
//! it in a [`Hooks`] registry, for the whole node or for one virtual host
//! ([`Scope`]), with a priority. The code that owns the extension point then
//! calls:
//!
//! - [`Hooks::run`] (`R = ()`): each subscriber in turn, until one answers
//!   [`Flow::Stop`];
//! - [`Hooks::run_fold`]: an accumulator passed through the subscribers in
//!   turn, each answering `Continue(next)` or `Stop(last)`.
//!
//! What is guaranteed (docs/hooks.md says more):
//!
//! - Order: lower priority first; equal priorities in subscription order.
//! - A run is sequential, in the caller's task: the next subscriber gets the
//!   previous one's answer. A run never waits more than the call timeout
//!   ([`HooksConfig::call_timeout`], 5 s by default) per subscriber; a
//!   subscriber that times out, crashes or drops its reply port is skipped
//!   with a warning and counted ([`Hooks::stats`]), and the run goes on
//!   with the accumulator it had. A subscriber that timed out is skipped at
//!   once by later runs until it has answered that call.
//! - A subscription ends with its actor: runs skip stopped actors and remove
//!   their subscriptions. [`Hooks::unsubscribe`] and
//!   [`Hooks::unsubscribe_all_of`] remove them explicitly.
//! - A point with no subscribers costs a lookup in a per-thread cache keyed
//!   by a hash computed at compile time: no lock, no allocation, no actor
//!   hop, no write to shared memory (about 12-15 ns, see docs/hooks.md).
//!
//! Subscriber lists are immutable snapshots replaced on each write; a run
//! clones the `Arc` of one list and iterates it with no lock held, so runs
//! on many cores do not serialise behind one lock or actor. Writes bump a
//! generation that tells the per-thread caches to refetch.

mod cache;
mod list;
mod types;

#[cfg(test)]
mod tests;

use std::any::TypeId;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use futures::FutureExt;
use ractor::{ActorCell, ActorId, ActorRef, ActorStatus, Message};

pub use types::{
    Answer, Flow, HookCall, HookError, HookPoint, HookStats, HooksConfig, Scope, SubscriptionId,
};

use cache::PointMap;
use list::{Entry, List, Meta, PointKey, PointTable, Target};

/// A registry of hook subscriptions. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

struct Inner {
    config: HooksConfig,
    points: PointMap,
    /// Where each subscription lives, for unsubscribing by id or by owner
    /// without scanning every point.
    index: DashMap<SubscriptionId, Location>,
    next_id: AtomicU64,
    totals: Counters,
    /// Touched only when something goes wrong, never on a clean run.
    per_point: DashMap<&'static str, Arc<Counters>>,
}

#[derive(Clone)]
struct Location {
    key: PointKey,
    host: Option<Arc<str>>,
    owner: Option<ActorId>,
}

#[derive(Default)]
struct Counters {
    skipped: AtomicU64,
    timed_out: AtomicU64,
    failed: AtomicU64,
    pruned: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> HookStats {
        HookStats {
            skipped: self.skipped.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            pruned: self.pruned.load(Ordering::Relaxed),
        }
    }
}

/// Why one delivery produced no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The actor was gone before the call could be sent.
    Gone,
    /// No answer within the call timeout.
    TimedOut,
    /// The reply port was dropped unanswered (the actor crashed or forgot).
    Dropped,
    /// A closure subscriber panicked.
    Panicked,
    /// An earlier call to this subscriber timed out and is still unanswered.
    Stalled,
}

impl Default for Hooks {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("config", &self.inner.config)
            .field("points", &self.inner.points.map().len())
            .field("subscriptions", &self.inner.index.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Hooks {
    /// An empty registry with the default configuration.
    pub fn new() -> Self {
        Self::with_config(HooksConfig::default())
    }

    /// An empty registry.
    pub fn with_config(config: HooksConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                points: PointMap::new(),
                index: DashMap::new(),
                next_id: AtomicU64::new(1),
                totals: Counters::default(),
                per_point: DashMap::new(),
            }),
        }
    }

    /// The registry's configuration.
    pub fn config(&self) -> &HooksConfig {
        &self.inner.config
    }

    /// Subscribes `actor` to `point` in `scope`; lower `priority` runs
    /// first. The actor receives a [`HookCall<A, R>`] converted into its own
    /// message type and answers through its reply port.
    ///
    /// The subscription lasts until [`Hooks::unsubscribe`],
    /// [`Hooks::unsubscribe_all_of`] or the actor's end. Fails if the actor
    /// is remote or not running, or if `point`'s name is in use with other
    /// types.
    pub fn subscribe<A, R, M>(
        &self,
        point: &HookPoint<A, R>,
        scope: Scope<'_>,
        priority: i32,
        actor: &ActorRef<M>,
    ) -> Result<SubscriptionId, HookError>
    where
        A: Clone + Send + 'static,
        R: Clone + Send + 'static,
        M: Message + From<HookCall<A, R>>,
    {
        let cell = actor.get_cell();
        let id = cell.get_id();
        if !id.is_local() {
            return Err(HookError::RemoteActor {
                hook: point.name(),
                actor: id,
            });
        }
        self.insert(
            point,
            scope,
            priority,
            Some(cell),
            Target::Actor(Box::new(actor.clone())),
        )
    }

    /// Subscribes an async closure, called in the running task itself (no
    /// actor hop, so cheaper; but it shares the caller's task, so keep it
    /// short). It is subject to the same call timeout; a panic in it is
    /// caught and counted as a failure.
    ///
    /// With an `owner`, the subscription ends when that actor stops (a
    /// module passes its supervisor or main actor) and
    /// [`Hooks::unsubscribe_all_of`] on the owner removes it.
    pub fn subscribe_fn<A, R, F, Fut>(
        &self,
        point: &HookPoint<A, R>,
        scope: Scope<'_>,
        priority: i32,
        owner: Option<ActorCell>,
        f: F,
    ) -> Result<SubscriptionId, HookError>
    where
        A: Clone + Send + 'static,
        R: Clone + Send + 'static,
        F: Fn(A, R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Flow<R>> + Send + 'static,
    {
        self.subscribe_answer(point, scope, priority, owner, move |arg, acc| {
            Answer::Later(f(arg, acc).boxed())
        })
    }

    /// As [`Hooks::subscribe_fn`], for a closure that usually answers at
    /// once: it returns [`Answer::Now`] then, and [`Answer::Later`] with a
    /// future only when it has to wait. No future is boxed on the first
    /// path, which makes it the cheapest subscriber of a hot point (one
    /// that runs for every stanza).
    pub fn subscribe_answer<A, R, F>(
        &self,
        point: &HookPoint<A, R>,
        scope: Scope<'_>,
        priority: i32,
        owner: Option<ActorCell>,
        f: F,
    ) -> Result<SubscriptionId, HookError>
    where
        A: Clone + Send + 'static,
        R: Clone + Send + 'static,
        F: Fn(A, R) -> Answer<R> + Send + Sync + 'static,
    {
        self.insert(point, scope, priority, owner, Target::Func(Box::new(f)))
    }

    fn insert<A, R>(
        &self,
        point: &HookPoint<A, R>,
        scope: Scope<'_>,
        priority: i32,
        owner: Option<ActorCell>,
        target: Target<A, R>,
    ) -> Result<SubscriptionId, HookError>
    where
        A: Clone + Send + 'static,
        R: Clone + Send + 'static,
    {
        if let Some(cell) = &owner {
            if matches!(
                cell.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            ) {
                return Err(HookError::NotRunning {
                    hook: point.name(),
                    actor: cell.get_id(),
                });
            }
        }
        let key = key_of(point);
        let id = SubscriptionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let owner_id = owner.as_ref().map(ActorCell::get_id);
        let entry = Arc::new(Entry {
            meta: Meta {
                id,
                priority,
                owner,
                stalled: AtomicBool::new(false),
            },
            target,
        });
        let mut removed = Vec::new();
        {
            let mut published = self
                .inner
                .points
                .map()
                .entry(key)
                .or_insert_with(|| Arc::new(PointTable::new::<A, R>()));
            if published.types != TypeId::of::<(A, R)>() {
                return Err(HookError::TypeMismatch {
                    hook: point.name(),
                    existing: published.type_name,
                    requested: std::any::type_name::<(A, R)>(),
                });
            }
            let mut table = PointTable::clone(&published);
            let host: Option<Arc<str>> = scope
                .host()
                .map(|h| table.host_key(h).unwrap_or_else(|| Arc::from(h)));
            let list = List::with_entry(table.list(host.as_deref()), entry, &mut removed);
            table.set(host.as_ref(), list);
            *published = Arc::new(table);
            // Indexed while the point is still locked, so that pruning and
            // unsubscribing (which lock the point) see both or neither. The
            // index is never locked first anywhere, so this cannot deadlock.
            self.inner.index.insert(
                id,
                Location {
                    key,
                    host,
                    owner: owner_id,
                },
            );
        }
        self.inner.points.changed();
        self.forget_pruned(point.name(), &removed);
        Ok(id)
    }

    /// Removes one subscription. Returns whether it was there.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let Some((_, location)) = self.inner.index.remove(&id) else {
            return false;
        };
        self.rebuild(&location, |meta| meta.id != id);
        true
    }

    /// Removes every subscription of `owner`: actors it subscribed and
    /// closures it owns. Returns how many. Meant for a module manager
    /// stopping a module.
    pub fn unsubscribe_all_of(&self, owner: ActorId) -> usize {
        // Collect first: removing while iterating a dashmap would deadlock.
        let ids: Vec<SubscriptionId> = self
            .inner
            .index
            .iter()
            .filter(|item| item.value().owner == Some(owner))
            .map(|item| *item.key())
            .collect();
        ids.into_iter().filter(|id| self.unsubscribe(*id)).count()
    }

    /// Removes the subscriptions of every stopped actor now, rather than
    /// at the next run of their points. Returns how many.
    pub fn prune_dead(&self) -> usize {
        let mut scopes: Vec<Location> = Vec::new();
        for table in self.inner.points.map().iter() {
            let key = *table.key();
            if table.global.is_some() {
                scopes.push(Location {
                    key,
                    host: None,
                    owner: None,
                });
            }
            for host in table.hosts.keys() {
                scopes.push(Location {
                    key,
                    host: Some(Arc::clone(host)),
                    owner: None,
                });
            }
        }
        scopes
            .iter()
            .map(|location| self.rebuild(location, |_| true))
            .sum()
    }

    /// Number of subscriptions of `point` in `scope`. One whose actor has
    /// stopped counts until a run of the point or [`Hooks::prune_dead`]
    /// removes it.
    pub fn subscriber_count<A, R>(&self, point: &HookPoint<A, R>, scope: Scope<'_>) -> usize {
        let Some(table) = self.inner.points.map().get(&key_of(point)) else {
            return 0;
        };
        table.list(scope.host()).map_or(0, |list| list.len())
    }

    /// Counters of the whole registry.
    pub fn stats(&self) -> HookStats {
        self.inner.totals.snapshot()
    }

    /// Counters of one hook point (all scopes).
    pub fn point_stats<A, R>(&self, point: &HookPoint<A, R>) -> HookStats {
        self.inner
            .per_point
            .get(point.name())
            .map(|counters| counters.snapshot())
            .unwrap_or_default()
    }

    /// Deliveries skipped so far (timeouts, crashes, stalled subscribers):
    /// [`HookStats::skipped`] of [`Hooks::stats`].
    pub fn skipped_count(&self) -> u64 {
        self.inner.totals.skipped.load(Ordering::Relaxed)
    }

    /// Runs `point` in `scope`: each subscriber in order gets a clone of
    /// `arg`, until one answers [`Flow::Stop`]. Returns `Flow::Stop(())` if
    /// one did, `Flow::Continue(())` otherwise (also with no subscribers).
    pub async fn run<A>(&self, point: &HookPoint<A, ()>, scope: Scope<'_>, arg: A) -> Flow<()>
    where
        A: Clone + Send + 'static,
    {
        self.fold(point, scope, (), arg).await
    }

    /// Runs `point` in `scope` as a fold: the first subscriber gets `acc`,
    /// each next one the value the previous answered, until one answers
    /// [`Flow::Stop`]. Returns the last value. A skipped subscriber (timeout,
    /// crash) leaves the value as it was.
    pub async fn run_fold<A, R>(
        &self,
        point: &HookPoint<A, R>,
        scope: Scope<'_>,
        acc: R,
        arg: A,
    ) -> R
    where
        A: Clone + Send + 'static,
        R: Clone + Send + 'static,
    {
        self.fold(point, scope, acc, arg).await.into_inner()
    }

    async fn fold<A, R>(&self, point: &HookPoint<A, R>, scope: Scope<'_>, acc: R, arg: A) -> Flow<R>
    where
        A: Clone + Send + 'static,
        R: Clone + Send + 'static,
    {
        // No lock and no shared write unless there are subscribers: then
        // one `Arc` clone of the list, which the run iterates.
        let found = self.inner.points.with(key_of(point), |table| {
            let table = table?;
            if table.types != TypeId::of::<(A, R)>() {
                return Some(Err(table.type_name));
            }
            let found = match scope.host() {
                None => table.global.clone().map(|list| (list, None)),
                Some(host) => table
                    .hosts
                    .get_key_value(host)
                    .map(|(host, list)| (Arc::clone(list), Some(Arc::clone(host)))),
            };
            found.map(Ok)
        });
        let (erased, host) = match found {
            None => return Flow::Continue(acc),
            Some(Ok(found)) => found,
            Some(Err(existing)) => {
                tracing::error!(
                    hook = point.name(),
                    existing,
                    requested = std::any::type_name::<(A, R)>(),
                    "hook run with other types than its subscriptions; nothing runs"
                );
                return Flow::Continue(acc);
            }
        };
        let Some(list) = erased.as_any().downcast_ref::<List<A, R>>() else {
            // Unreachable: the point's TypeId was checked above.
            return Flow::Continue(acc);
        };

        let mut acc = acc;
        let mut saw_dead = false;
        let mut stopped = false;
        for entry in &list.entries {
            if !entry.meta.is_alive() {
                saw_dead = true;
                continue;
            }
            match self
                .deliver(point.name(), &host, entry, arg.clone(), acc.clone())
                .await
            {
                Ok(Flow::Continue(next)) => acc = next,
                Ok(Flow::Stop(last)) => {
                    acc = last;
                    stopped = true;
                    break;
                }
                Err(Failure::Gone) => saw_dead = true,
                Err(failure) => self.note_skip(point.name(), &host, &entry.meta, failure),
            }
        }
        if saw_dead {
            self.rebuild(
                &Location {
                    key: key_of(point),
                    host,
                    owner: None,
                },
                |_| true,
            );
        }
        if stopped {
            Flow::Stop(acc)
        } else {
            Flow::Continue(acc)
        }
    }

    /// One subscriber, one call, at most one call timeout.
    async fn deliver<A, R>(
        &self,
        hook: &'static str,
        host: &Option<Arc<str>>,
        entry: &Arc<Entry<A, R>>,
        arg: A,
        acc: R,
    ) -> Result<Flow<R>, Failure>
    where
        A: Send + 'static,
        R: Send + 'static,
    {
        let timeout = self.inner.config.call_timeout;
        match &entry.target {
            Target::Actor(sink) => {
                if entry.meta.stalled.load(Ordering::Acquire) {
                    return Err(Failure::Stalled);
                }
                let (tx, mut rx) = ractor::concurrency::oneshot();
                let call = HookCall {
                    hook,
                    host: host.clone(),
                    arg,
                    acc,
                    reply: (tx, timeout).into(),
                };
                if !sink.send(call) {
                    return Err(Failure::Gone);
                }
                // Boxed here and below: the timer makes these waits large,
                // and a run whose subscribers answer at once (the usual
                // case) should not carry that size in its future.
                match Box::pin(tokio::time::timeout(timeout, &mut rx)).await {
                    Ok(Ok(flow)) => Ok(flow),
                    Ok(Err(_dropped)) => Err(Failure::Dropped),
                    Err(_elapsed) => {
                        if !entry.meta.stalled.swap(true, Ordering::AcqRel) {
                            watch_stalled(hook, Arc::clone(entry), rx);
                        }
                        Err(Failure::TimedOut)
                    }
                }
            }
            Target::Func(f) => {
                // Catch a panic both in the call and in the future it returns.
                let future = match std::panic::catch_unwind(AssertUnwindSafe(|| f(arg, acc))) {
                    Ok(Answer::Now(flow)) => return Ok(flow),
                    Ok(Answer::Later(future)) => future,
                    Err(_panic) => return Err(Failure::Panicked),
                };
                let mut call = AssertUnwindSafe(future).catch_unwind();
                // Most subscribers answer without waiting: those need no
                // timer, which would cost a clock read and a handle to the
                // runtime's timer on every stanza.
                if let std::task::Poll::Ready(done) = futures::poll!(&mut call) {
                    return done.map_err(|_panic| Failure::Panicked);
                }
                match Box::pin(tokio::time::timeout(timeout, call)).await {
                    Ok(Ok(flow)) => Ok(flow),
                    Ok(Err(_panic)) => Err(Failure::Panicked),
                    Err(_elapsed) => Err(Failure::TimedOut),
                }
            }
        }
    }

    fn note_skip(
        &self,
        hook: &'static str,
        host: &Option<Arc<str>>,
        meta: &Meta,
        failure: Failure,
    ) {
        // A read lock in the usual case: a stalled subscriber is skipped on
        // every run, which must not take a write lock every time.
        let existing = self
            .inner
            .per_point
            .get(hook)
            .map(|c| Arc::clone(c.value()));
        let per_point = existing
            .unwrap_or_else(|| Arc::clone(self.inner.per_point.entry(hook).or_default().value()));
        for counters in [&self.inner.totals, &*per_point] {
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            match failure {
                Failure::TimedOut => {
                    counters.timed_out.fetch_add(1, Ordering::Relaxed);
                }
                Failure::Dropped | Failure::Panicked => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                Failure::Gone | Failure::Stalled => {}
            }
        }
        let host = host.as_deref().unwrap_or("");
        let actor = meta.owner.as_ref().map(ActorCell::get_id);
        match failure {
            // Once per stall (the first timeout), not once per run: a hot
            // hook would otherwise flood the log.
            Failure::Stalled => tracing::debug!(
                hook,
                host,
                subscription = %meta.id,
                ?actor,
                "hook subscriber still busy with a timed-out call; skipped"
            ),
            _ => tracing::warn!(
                hook,
                host,
                subscription = %meta.id,
                ?actor,
                ?failure,
                timeout = ?self.inner.config.call_timeout,
                "hook subscriber skipped"
            ),
        }
    }

    /// Rewrites one scope's list keeping the live entries `keep` accepts,
    /// then forgets the others. Returns how many stopped actors it pruned.
    fn rebuild(&self, location: &Location, mut keep: impl FnMut(&Meta) -> bool) -> usize {
        let mut dropped: Vec<(SubscriptionId, bool)> = Vec::new();
        let now_empty = {
            let Some(mut published) = self.inner.points.map().get_mut(&location.key) else {
                return 0;
            };
            let Some(current) = published.list(location.host.as_deref()) else {
                return 0;
            };
            let next = current.retain(&mut |meta| {
                let alive = meta.is_alive();
                let kept = alive && keep(meta);
                if !kept {
                    dropped.push((meta.id, !alive));
                }
                kept
            });
            let mut table = PointTable::clone(&published);
            table.set(location.host.as_ref(), next);
            let now_empty = table.is_empty();
            *published = Arc::new(table);
            now_empty
        };
        if now_empty {
            // Re-checked under the write lock: a subscribe may have come in.
            self.inner
                .points
                .map()
                .remove_if(&location.key, |_, table| table.is_empty());
        }
        self.inner.points.changed();
        let pruned: Vec<SubscriptionId> = dropped
            .iter()
            .filter(|(_, dead)| *dead)
            .map(|(id, _)| *id)
            .collect();
        self.forget_pruned(location.key.name, &pruned);
        pruned.len()
    }

    /// Drops pruned subscriptions from the index and counts them.
    fn forget_pruned(&self, hook: &'static str, pruned: &[SubscriptionId]) {
        if pruned.is_empty() {
            return;
        }
        for id in pruned {
            self.inner.index.remove(id);
            tracing::debug!(hook, subscription = %id, "hook subscriber stopped; unsubscribed");
        }
        let count = pruned.len() as u64;
        self.inner.totals.pruned.fetch_add(count, Ordering::Relaxed);
        self.inner
            .per_point
            .entry(hook)
            .or_default()
            .pruned
            .fetch_add(count, Ordering::Relaxed);
    }
}

fn key_of<A, R>(point: &HookPoint<A, R>) -> PointKey {
    PointKey {
        hash: point.hash(),
        name: point.name(),
    }
}

/// Waits for the answer to a timed-out call and then lets runs deliver to
/// the subscriber again. One such task exists per stalled subscriber; it
/// ends when the actor answers, drops the call or stops.
fn watch_stalled<A, R>(
    hook: &'static str,
    entry: Arc<Entry<A, R>>,
    rx: ractor::concurrency::OneshotReceiver<Flow<R>>,
) where
    A: Send + 'static,
    R: Send + 'static,
{
    tokio::spawn(async move {
        // The late answer itself is of no use: its run has moved on.
        let _ = rx.await;
        entry.meta.stalled.store(false, Ordering::Release);
        tracing::info!(
            hook,
            subscription = %entry.meta.id,
            "hook subscriber answered its timed-out call; delivering to it again"
        );
    });
}
