//! The points map, read through a per-thread cache: a run takes no lock and
//! writes no shared memory on its way to "nobody subscribed", so callers on
//! many cores do not contend on the hook point they all run.
//!
//! Every write to the map bumps a generation counter; a thread's cached copy
//! of a point's table is used while the generation is unchanged and fetched
//! again from the map otherwise. Writes are rare (subscribe, unsubscribe,
//! pruning), reads are every stanza.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::list::{PassThrough, PointHasher, PointKey, PointTable};

/// Past this many cached points on one thread (registries that come and go,
/// as in tests) the thread's cache starts over.
const MAX_CACHED: usize = 4096;

static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, PartialEq, Eq)]
struct CacheKey {
    registry: u64,
    point: PointKey,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.point.hash ^ self.registry.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
}

struct Cached {
    generation: u64,
    /// `None`: the point had no subscribers at that generation.
    table: Option<Arc<PointTable>>,
}

thread_local! {
    static CACHE: RefCell<HashMap<CacheKey, Cached, BuildHasherDefault<PassThrough>>> =
        const { RefCell::new(HashMap::with_hasher(BuildHasherDefault::new())) };
}

/// The points of one registry: a concurrent map of immutable tables (each
/// write replaces a point's table) plus the generation that tells thread
/// caches they are stale.
pub(super) struct PointMap {
    registry: u64,
    generation: AtomicU64,
    map: DashMap<PointKey, Arc<PointTable>, PointHasher>,
}

impl PointMap {
    pub(super) fn new() -> Self {
        Self {
            registry: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            map: DashMap::with_hasher(PointHasher::default()),
        }
    }

    /// The map itself, for writes (call [`PointMap::changed`] after each)
    /// and for reads off the hot path.
    pub(super) fn map(&self) -> &DashMap<PointKey, Arc<PointTable>, PointHasher> {
        &self.map
    }

    /// Invalidates every thread's cached tables of this registry.
    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Calls `f` with the point's current table (`None` if the point has
    /// no subscribers), from this thread's cache when it is fresh.
    pub(super) fn with<T>(
        &self,
        point: PointKey,
        mut f: impl FnMut(Option<&PointTable>) -> T,
    ) -> T {
        // Loaded before any read of the map: a write that lands after this
        // load bumps the generation past it, so the next run refetches.
        let generation = self.generation.load(Ordering::Acquire);
        let key = CacheKey {
            registry: self.registry,
            point,
        };
        let cached = CACHE.try_with(|cache| {
            // Busy only if `f` re-entered; then read the map directly.
            let mut cache = cache.try_borrow_mut().ok()?;
            if let Some(hit) = cache.get(&key) {
                if hit.generation == generation {
                    return Some(f(hit.table.as_deref()));
                }
            }
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            let table = self.map.get(&point).map(|table| Arc::clone(table.value()));
            let out = f(table.as_deref());
            cache.insert(key, Cached { generation, table });
            Some(out)
        });
        match cached {
            Ok(Some(out)) => out,
            // The thread is shutting down (no thread-locals) or re-entered.
            _ => {
                let table = self.map.get(&point).map(|table| Arc::clone(table.value()));
                f(table.as_deref())
            }
        }
    }
}
