//! beamline-storage: Mnesia-style tables.
//!
//! What is inside:
//! - [`Db`]: a node's database, its tables and the commit path;
//! - [`Table`]: a typed handle to one table of [`Record`]s — set, bag or
//!   ordered_set ([`TableKind`]), with secondary indexes; reads are served
//!   from the local copy; dirty writes and deletes;
//! - [`Tx`] via [`Db::transaction`]: atomic, serializable transactions over
//!   several tables, retried on conflict (optimistic: reads are validated
//!   at commit, under the commit locks of every table touched, taken in
//!   name order);
//! - subscriptions to a table's changes, delivered in commit order;
//! - [`CommitLog`]: where commits of disc tables go to become durable;
//! - [`replica::Replication`]: copies of tables on several cluster nodes —
//!   replica actors, a primary per table, copies added under load,
//!   node-owned tables, partition healing;
//! - [`backend`]: the small trait the XMPP server keeps its persistent data
//!   through (accounts with SCRAM credentials, per-user maps, queues and
//!   documents), with [`backend::TablesBackend`] as the embedded default.
//!
//! Guarantees and design: `docs/storage.md`. Nothing here knows XMPP.

pub mod backend;
mod db;
pub mod disc;
pub mod durable;
mod error;
mod record;
pub mod replica;
mod table;

pub use db::{CommitLog, DEFAULT_MAX_RETRIES, Db, Frame, Table, Tx};
pub use durable::DurableDb;
pub use error::StorageError;
pub use record::{CopyType, IndexValue, Record, TableDef, TableKind, index_value};
pub use table::{Op, RawOp, TableEvent};
