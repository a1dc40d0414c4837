//! What replication actors say to each other (and keep about histories).

use beamline_runtime::cluster::ReplyTo;
use serde::{Deserialize, Serialize};

use crate::db::RawTx;
use crate::record::{CopyType, TableDef};
use crate::table::RawOp;

use super::types::Epoch;

/// One epoch in a table copy's history: the last commit seen in it and
/// how many copies (primary included) that commit went to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HistEntry {
    pub(crate) epoch: Epoch,
    pub(crate) version: u64,
    pub(crate) replicas: u32,
}

/// How many epochs a copy remembers.
const HISTORY: usize = 64;

/// Records commit `version` of `epoch` (sent to `replicas` copies).
pub(crate) fn note_history(h: &mut Vec<HistEntry>, epoch: &Epoch, version: u64, replicas: u32) {
    match h.last_mut() {
        Some(l) if l.epoch == *epoch => {
            l.version = version;
            l.replicas = replicas;
        }
        _ => h.push(HistEntry {
            epoch: epoch.clone(),
            version,
            replicas,
        }),
    }
    if h.len() > HISTORY {
        h.remove(0);
    }
}

/// One node's part of the schema: the tables it declared and whether it
/// holds a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SchemaEntry {
    pub(crate) def: TableDef,
    pub(crate) holds: bool,
}

/// What a primary sends a replica that copies a table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SyncReply {
    pub(crate) version: u64,
    pub(crate) dump: Vec<u8>,
    pub(crate) epoch: Epoch,
    pub(crate) history: Vec<HistEntry>,
}

/// One table's part of a replicated commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ApplyTable {
    pub(crate) name: String,
    /// The table's epoch at the primary.
    pub(crate) epoch: Epoch,
    /// The table's version before this commit (a gap means a missed one).
    pub(crate) prev: u64,
    /// Copies this commit goes to, primary included.
    pub(crate) replicas: u32,
    /// The epoch before `epoch` in the primary's history and its last
    /// version: a copy that ended that epoch at that version holds exactly
    /// the primary's state and follows the new epoch without a copy.
    pub(crate) base: Option<(Epoch, u64)>,
    pub(crate) ops: Vec<RawOp>,
}

/// A primary's answer to a forwarded commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum CommitReply {
    Ok,
    Conflict,
    /// Not applied: the receiver is not (or no longer) the primary.
    NotPrimary,
    Error(String),
}

/// Messages of replication actors (per node: `Db` role; per table copy:
/// `Table` role). Remote ones cross nodes in the runtime's envelope.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ReplMsg {
    /// To a table's primary: validate and apply, replicate, then answer.
    Commit(RawTx, ReplyTo<CommitReply>),
    /// Two-phase commit, coordinator to a participant primary (node
    /// actor): validate `tx` (its part of the transaction) and reserve its
    /// tables until `Decide`.
    Prepare {
        txid: String,
        coordinator: String,
        participants: Vec<String>,
        tx: RawTx,
        reply: ReplyTo<CommitReply>,
    },
    /// Two-phase commit: the outcome of `txid` (commit or abort).
    Decide {
        txid: String,
        commit: bool,
        reply: ReplyTo<CommitReply>,
    },
    /// Two-phase commit: what became of `txid`? A coordinator that has
    /// not decided yet decides abort; a participant answers what it was
    /// told (`None`: nothing yet).
    Outcome {
        txid: String,
        reply: ReplyTo<Option<bool>>,
    },
    /// To any in-sync replica: the encoded records under an encoded key.
    Read {
        table: String,
        key: Vec<u8>,
        reply: ReplyTo<Result<Vec<u8>, String>>,
    },
    /// To any in-sync replica: every record, encoded.
    Dump {
        table: String,
        reply: ReplyTo<Result<Vec<u8>, String>>,
    },
    /// To any in-sync replica: its version of the table and every record,
    /// taken together (a transaction's scan on a node without a copy).
    Scan {
        table: String,
        reply: ReplyTo<Result<(u64, Vec<u8>), String>>,
    },
    /// To the primary: a copy of the table for `node`, which then receives
    /// every later commit.
    SyncFrom {
        table: String,
        node: String,
        reply: ReplyTo<Result<SyncReply, String>>,
    },
    /// Primary to replica (node actor): apply commit `seq`.
    Apply {
        from: String,
        seq: u64,
        tables: Vec<ApplyTable>,
    },
    /// To any in-sync copy: the table with its epoch and history (for
    /// reconciling histories; the caller does not become a follower).
    Copy {
        table: String,
        reply: ReplyTo<Result<SyncReply, String>>,
    },
    /// A copy's history, sent to a node that came up, to find partitions.
    Status {
        from: String,
        table: String,
        history: Vec<HistEntry>,
    },
    /// Replica to the committing node: commit `seq` is applied.
    Ack { seq: u64, node: String },
    /// Primary to replica: you missed an ack; copy the table again.
    Stale { table: String },
    /// Local: (re)load `table` from its primary and join its group.
    SyncTable { table: String },
    /// A node's part of the schema.
    Schema {
        node: String,
        tables: Vec<SchemaEntry>,
    },
    /// To a node: hold a copy of `table`.
    AddCopy {
        table: String,
        copy: CopyType,
        reply: ReplyTo<Result<(), String>>,
    },
    /// To a node: drop its copy of `table`.
    DelCopy {
        table: String,
        reply: ReplyTo<Result<(), String>>,
    },
    /// A node-owned commit of `from`'s rows, broadcast by their owner.
    Owned {
        from: String,
        seq: u64,
        tables: Vec<(String, Vec<RawOp>)>,
    },
    /// All of `from`'s rows of a node-owned table: (encoded key, encoded
    /// records).
    OwnedRows {
        from: String,
        table: String,
        rows: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    },
    /// Local: a peer came up.
    NodeUp(String),
    /// Local: a peer went down.
    NodeDown(String),
    /// Local: start-up work of the actor (group joins).
    Start,
}

impl ractor::Message for ReplMsg {}
