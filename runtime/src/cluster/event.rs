//! Cluster events: node up/down, names and group membership.

use serde::{Deserialize, Serialize};

/// Why a node is considered down.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The connection closed (peer killed, network error, peer cut us off).
    ConnectionClosed,
    /// No heartbeat within the heartbeat timeout (peer frozen or cut off).
    HeartbeatTimeout,
    /// The peer left on purpose.
    Left,
    /// A local test hook blocked the peer.
    Blocked,
}

/// Told to the loser when two holders of one global name meet (after a
/// partition heals, or two nodes registered at the same moment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameLost {
    /// The name.
    pub name: String,
    /// The node whose registration won.
    pub winner_node: String,
}

/// Something that changed in the cluster, as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// A node became reachable (first connection, or again after a loss).
    NodeUp {
        /// Its name.
        node: String,
    },
    /// A node is no longer reachable; its names and group members are gone.
    NodeDown {
        /// Its name.
        node: String,
        /// Why.
        reason: DownReason,
    },
    /// A global name appeared (or a further holder of it, during a conflict).
    NameRegistered {
        /// The name.
        name: String,
        /// The node of the holder.
        node: String,
    },
    /// A global name's holder disappeared (unregistered, died, node down,
    /// or lost a conflict).
    NameUnregistered {
        /// The name.
        name: String,
        /// The node of the former holder.
        node: String,
    },
    /// A local registration lost a conflict and was removed.
    NameLost(NameLost),
    /// An actor joined a process group.
    GroupJoined {
        /// The user scope.
        scope: String,
        /// The group.
        group: String,
        /// The member's node.
        node: String,
    },
    /// An actor left a process group (or died, or its node went down).
    GroupLeft {
        /// The user scope.
        scope: String,
        /// The group.
        group: String,
        /// The member's node.
        node: String,
    },
}
