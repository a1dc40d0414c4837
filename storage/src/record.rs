//! What a table holds: records with a key, a kind, indexes and copies.

use std::fmt::Debug;
use std::hash::Hash;

use serde::{Serialize, de::DeserializeOwned};

/// How a table treats records with equal keys (Mnesia's table types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum TableKind {
    /// One record per key; a write replaces it.
    Set,
    /// Several distinct records per key; writing an equal record again is a
    /// no-op.
    Bag,
    /// One record per key, iterated and range-scanned in key order.
    OrderedSet,
}

/// Where a node keeps its copy of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum CopyType {
    /// In memory only; lost when the node stops.
    Ram,
    /// In memory, with every commit in the node's durable log and periodic
    /// snapshots; survives restarts.
    Disc,
}

/// The encoded value of a secondary index (see [`index_value`]).
pub type IndexValue = Vec<u8>;

/// Encodes `value` as an index value. Records and queries must both use
/// this, so that equal values give equal bytes.
pub fn index_value<T: Serialize + ?Sized>(value: &T) -> IndexValue {
    // Encoding plain data cannot fail; an empty value would only make the
    // index match nothing.
    beamline_runtime::codec::encode(value).unwrap_or_default()
}

/// A record type stored in a table (Mnesia's record definition).
///
/// The record is encoded with the workspace codec for the durable log and
/// for replicas; equality of records (for bags) is equality of encodings.
pub trait Record: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// The primary key.
    type Key: Ord + Hash + Eq + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// This record's key.
    fn key(&self) -> Self::Key;

    /// This record's value for the secondary index named `index` (one of the
    /// table definition's `indexes`), or `None` to stay out of that index.
    fn index_value(&self, _index: &str) -> Option<IndexValue> {
        None
    }
}

/// The definition of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TableDef {
    /// Unique name.
    pub name: String,
    /// Set, bag or ordered set.
    pub kind: TableKind,
    /// Names of secondary indexes; see [`Record::index_value`].
    pub indexes: Vec<String>,
    /// This node's copy: RAM or disc.
    pub copy: CopyType,
    /// Rows belong to the node that wrote them (the CETS model, for tables
    /// such as sessions): with replication, such a table has no primary,
    /// each node writes its own rows and broadcasts them, and a node's rows
    /// vanish everywhere when it goes down (see `replica`).
    pub node_owned: bool,
}

impl TableDef {
    /// A RAM set table with no indexes.
    pub fn new(name: impl Into<String>) -> Self {
        TableDef {
            name: name.into(),
            kind: TableKind::Set,
            indexes: Vec::new(),
            copy: CopyType::Ram,
            node_owned: false,
        }
    }

    /// Makes rows belong to the node that wrote them (sets the
    /// `node_owned` field).
    pub fn node_owned(mut self) -> Self {
        self.node_owned = true;
        self
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: TableKind) -> Self {
        self.kind = kind;
        self
    }

    /// Adds a secondary index.
    pub fn index(mut self, name: impl Into<String>) -> Self {
        self.indexes.push(name.into());
        self
    }

    /// Sets the copy type.
    pub fn copy(mut self, copy: CopyType) -> Self {
        self.copy = copy;
        self
    }
}
