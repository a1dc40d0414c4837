//! Errors of the cluster API, one enum per operation.

use crate::codec::CodecError;

use super::envelope::Fault;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// A node already runs in this process (ractor's pg is process-global,
    /// so there is one node per process, as in Erlang).
    #[error("a node is already running in this process")]
    AlreadyRunning,
    /// The listener or an internal actor did not start.
    #[error("node did not start: {0}")]
    Spawn(String),
    /// TLS set-up failed.
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] super::tls::TlsError),
}

/// Why joining through a seed failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The seed closed the connection before authentication completed: the
    /// cookies differ (ractor_cluster gives no reason; this is the only one
    /// that closes a fresh connection to a live node).
    #[error("cookie rejected by {seed}: the connection closed during authentication")]
    AuthFailed {
        /// The seed address.
        seed: String,
    },
    /// No seed answered within the join timeout.
    #[error("no answer from {seed} within the join timeout (last error: {last_error})")]
    Timeout {
        /// The seed address.
        seed: String,
        /// The last connect error seen, if any.
        last_error: String,
    },
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopped,
    /// No seed was given.
    #[error("no seed given")]
    NoSeeds,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The name is held already (by the node named).
    #[error("name {name:?} is already registered on node {node}")]
    AlreadyRegistered {
        /// The name.
        name: String,
        /// The holder's node.
        node: String,
    },
    /// The name is not registered by this node.
    #[error("name {0:?} is not registered on this node")]
    NotRegistered(String),
    /// The actor is not running.
    #[error("the actor is not running")]
    ActorNotRunning,
    /// The actor is not in that group.
    #[error("the actor is not a member of that group")]
    NotAMember,
    /// The helper actor could not be spawned.
    #[error("spawn failed: {0}")]
    Spawn(String),
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopped,
}

/// Why a cast could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message could not be encoded.
    #[error("encode failed: {0}")]
    Encode(#[from] CodecError),
    /// The target's node is down.
    #[error("node {0} is down")]
    NodeDown(String),
    /// The target actor is not running.
    #[error("the target actor is not running")]
    Gone,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No reply within the timeout.
    #[error("no reply within the timeout")]
    Timeout,
    /// The target's node went down before replying.
    #[error("node {0} went down before replying")]
    NodeDown(String),
    /// The request could not be encoded.
    #[error("encode failed: {0}")]
    Encode(CodecError),
    /// The reply could not be decoded (the responder's reply type differs).
    #[error("reply decode failed: {0}")]
    ReplyDecode(CodecError),
    /// The receiving side refused the request (for example it could not
    /// decode it); the receiving actor is unaffected.
    #[error("refused by the receiver: {0}")]
    Refused(Fault),
    /// The target dropped the reply handle without answering.
    #[error("the target dropped the call without replying")]
    NoReply,
    /// The target actor is not running.
    #[error("the target actor is not running")]
    Gone,
}
