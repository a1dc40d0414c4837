//! Errors of the storage crate.

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// No table of that name.
    #[error("no table {0:?}")]
    NoSuchTable(String),
    /// A table of that name exists already (with another definition).
    #[error("table {0:?} already exists")]
    TableExists(String),
    /// The table holds records of another type than the one asked for.
    #[error("table {0:?} holds another record type")]
    WrongType(String),
    /// The operation needs another table kind (e.g. a range scan on a set).
    #[error("table {table:?}: {op} needs an ordered_set")]
    NotOrdered {
        /// Table.
        table: String,
        /// The operation.
        op: &'static str,
    },
    /// The table has no index of that name.
    #[error("table {table:?} has no index {index:?}")]
    NoSuchIndex {
        /// Table.
        table: String,
        /// Index.
        index: String,
    },
    /// A record or frame could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] beamline_runtime::codec::CodecError),
    /// The transaction kept conflicting with others and gave up.
    #[error("transaction aborted after {0} conflicting attempts")]
    TooManyRetries(usize),
    /// The transaction function aborted with this reason; nothing was
    /// written.
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// A record encodes to more than 4 GiB.
    #[error("record too large to store ({0} bytes)")]
    RecordTooLarge(usize),
    /// A table dump (snapshot or copy) is damaged.
    #[error("damaged table dump: {0}")]
    CorruptDump(&'static str),
    /// The durable log failed; the commit may not be durable.
    #[error("disc log: {0}")]
    Disc(String),
    /// A read in a transaction needs rows of a table that has no in-sync
    /// copy on this node; they are being fetched from another node and
    /// the transaction function runs again. [`Db::transaction`]
    /// handles it (pass it on with `?`); it never returns it.
    ///
    /// [`Db::transaction`]: crate::Db::transaction
    #[error("transaction read waits for rows from another node")]
    RemoteReadPending,
    /// Replication failed (no live replica, a call to another node failed,
    /// a two-phase commit's outcome is unknown on a participant, ...).
    #[error("replication: {0}")]
    Replication(String),
}
