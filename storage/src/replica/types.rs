//! The public types of replication: settings, events, schema, epochs,
//! partition branches and conflict outcomes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::record::{CopyType, TableDef};

/// Who may commit to a table and since when: (number, primary node).
/// Every change of primary starts a higher epoch; replicas compare epochs
/// to notice that their copy came from another history.
pub type Epoch = (u64, String);

/// One side of a partition, as seen when it heals: the primary it
/// followed, how many copies its last commit reached, and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    /// The primary of the side's first commit after the split.
    pub primary: String,
    /// Copies (primary included) its commits reached after the split.
    pub replicas: u32,
    /// Its table version.
    pub version: u64,
}

/// Chooses the side that wins after a partition; `First` is the branch
/// whose `primary` has the smaller name (both sides decide alike).
pub type PartitionDecider = Arc<dyn Fn(&Branch, &Branch) -> ConflictWinner + Send + Sync>;

/// Timings of replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// How long a primary waits for a replica's ack before marking it
    /// stale (default 2 s).
    pub ack_timeout: Duration,
    /// Timeout of calls between nodes: commits forwarded to the primary,
    /// remote reads, table copies (default 5 s).
    pub call_timeout: Duration,
    /// How long a commit keeps retrying while there is no primary (failover
    /// in progress, no live replica) before it fails (default 10 s).
    pub commit_timeout: Duration,
    /// How long a node that finds no other replica of a table waits for one
    /// to appear before it serves its own copy (default 300 ms).
    pub settle: Duration,
    /// How long a primary keeps tables reserved for a prepared two-phase
    /// commit before it asks the coordinator (and the other participants)
    /// for the outcome itself (default 5 s).
    pub prepare_lease: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            ack_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            commit_timeout: Duration::from_secs(10),
            settle: Duration::from_millis(300),
            prepare_lease: Duration::from_secs(5),
        }
    }
}

/// Which of two conflicting owners keeps a node-owned row; `First` is the
/// node with the smaller name (so both sides decide alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictWinner {
    /// The owner with the smaller node name.
    First,
    /// The owner with the larger node name.
    Second,
}

/// Something replication did that applications may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicationEvent {
    /// The primary gave up waiting for `node`'s ack; the replica resyncs.
    ReplicaStale {
        /// Table.
        table: String,
        /// The late replica.
        node: String,
    },
    /// This node loaded `table` from `from` (join, restart, stale, new
    /// primary) and now serves it at `version`.
    Synced {
        /// Table.
        table: String,
        /// The primary it copied from (itself when it had no peer).
        from: String,
        /// The table version after loading.
        version: u64,
    },
    /// A node went down and its rows of a node-owned table were removed.
    RowsPurged {
        /// Table.
        table: String,
        /// The node that went down.
        node: String,
        /// Keys removed.
        keys: usize,
    },
    /// A node's rows of a node-owned table were merged in (it came up).
    RowsMerged {
        /// Table.
        table: String,
        /// The node whose rows arrived.
        node: String,
        /// Keys merged.
        keys: usize,
    },
    /// This node met `peer` after a partition in which both committed to
    /// `table`; `won` tells whether this node's side kept its writes.
    PartitionDetected {
        /// Table.
        table: String,
        /// The node whose history was compared.
        peer: String,
        /// True when this node's side won.
        won: bool,
    },
    /// This node's side lost a partition: its copy was replaced by
    /// `winner`'s, and these rows (encoded key, this node's encoded
    /// records; empty records: a key the winner has and we did not) were
    /// not in the winner's copy or differed.
    PartitionLost {
        /// Table.
        table: String,
        /// The node it copied from.
        winner: String,
        /// The rows of this side that the winner's copy does not have.
        lost: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    },
    /// Two nodes owned the same key of a node-owned table; `winner` keeps
    /// it, `loser`'s row (`lost`, encoded records) was replaced.
    OwnerConflict {
        /// Table.
        table: String,
        /// Encoded key.
        key: Vec<u8>,
        /// The node that keeps the key.
        winner: String,
        /// The node whose row was dropped.
        loser: String,
    },
}

/// One table in the replicated schema, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// The definition (its `copy` is the declaring node's own).
    pub def: TableDef,
    /// Nodes (up now or seen before) holding a copy, with its type.
    pub copies: BTreeMap<String, CopyType>,
}
