//! pg scopes and the metadata carried in the actor names of stubs.
//!
//! ractor_cluster synchronises pg membership and each member's actor name,
//! nothing else; so a stub's actor name carries what other nodes need to know
//! about it: its node and when it was created (the actor's first registration
//! or group join on this node), which orders conflicting names.

/// pg scope of the node agents (heartbeat and gossip).
pub(crate) const SYS_SCOPE: &str = "beamline.sys";
/// pg group of the node agents inside [`SYS_SCOPE`].
pub(crate) const AGENTS_GROUP: &str = "agents";
/// pg scope of unique global names; the group is the name.
pub(crate) const GLOBAL_SCOPE: &str = "beamline.global";
/// Prefix of pg scopes that hold user process groups.
pub(crate) const GROUP_SCOPE_PREFIX: &str = "beamline.pg.";

/// The pg scope that holds the user scope `scope`.
pub(crate) fn group_scope(scope: &str) -> String {
    format!("{GROUP_SCOPE_PREFIX}{scope}")
}

/// What an actor name of ours says about its actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StubMeta {
    /// A node's agent.
    Agent {
        /// Its node.
        node: String,
    },
    /// The stub of a user actor (the one pg member for all its names and
    /// groups, so that all messages to the actor take one path).
    Stub {
        /// Node of the actor.
        node: String,
        /// Creation time of the stub, nanoseconds since the Unix epoch.
        at: u128,
        /// Tie-breaker within one node.
        seq: u64,
    },
}

impl StubMeta {
    /// The node this stub lives on.
    pub(crate) fn node(&self) -> &str {
        match self {
            StubMeta::Agent { node } | StubMeta::Stub { node, .. } => node,
        }
    }
}

pub(crate) fn agent_name(node: &str, incarnation: u128) -> String {
    format!("bl|a|{node}|{incarnation}")
}

pub(crate) fn stub_name(node: &str, at: u128, seq: u64) -> String {
    format!("bl|s|{node}|{at}|{seq}")
}

/// Parses an actor name written by one of the functions above.
pub(crate) fn parse(actor_name: &str) -> Option<StubMeta> {
    let mut parts = actor_name.split('|');
    if parts.next()? != "bl" {
        return None;
    }
    let kind = parts.next()?;
    let node = parts.next()?.to_string();
    match kind {
        "a" => Some(StubMeta::Agent { node }),
        "s" => {
            let at = parts.next()?.parse().ok()?;
            let seq = parts.next()?.parse().ok()?;
            Some(StubMeta::Stub { node, at, seq })
        }
        _ => None,
    }
}

/// The order that picks the one holder of a name seen on several nodes: the
/// earliest stub (the actor's first registration or group join) wins; equal
/// times go to the smaller node name. Every
/// node computes it from the same pg data, so all agree without talking.
pub(crate) fn winner_key(meta: &StubMeta) -> (u128, String, u64) {
    match meta {
        StubMeta::Stub { node, at, seq } => (*at, node.clone(), *seq),
        other => (u128::MAX, other.node().to_string(), u64::MAX),
    }
}

/// True when `name` may be used as a node name (it ends up inside actor names
/// and host strings, so keep it to a safe alphabet).
pub(crate) fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(
            parse(&stub_name("n1", 42, 3)),
            Some(StubMeta::Stub {
                node: "n1".into(),
                at: 42,
                seq: 3
            })
        );
        assert_eq!(
            parse(&agent_name("n2", 1)),
            Some(StubMeta::Agent { node: "n2".into() })
        );
        assert_eq!(parse("other"), None);
    }

    #[test]
    fn earliest_then_smallest_node_wins() {
        let a = StubMeta::Stub {
            node: "b".into(),
            at: 1,
            seq: 0,
        };
        let b = StubMeta::Stub {
            node: "a".into(),
            at: 2,
            seq: 0,
        };
        let c = StubMeta::Stub {
            node: "a".into(),
            at: 1,
            seq: 0,
        };
        let all = [a, b, c.clone()];
        let w = all.iter().min_by_key(|m| winner_key(m)).expect("one");
        assert_eq!(w, &c);
    }

    #[test]
    fn node_names_are_checked() {
        assert!(valid_node_name("node-1.a_b"));
        assert!(!valid_node_name("a|b"));
        assert!(!valid_node_name("a@b"));
        assert!(!valid_node_name(""));
    }
}
