//! The distributed part of the runtime: nodes, membership, a global registry,
//! process groups and typed messages between nodes, on ractor_cluster.
//!
//! - [`Node`] (`node.rs`): start a node (a ractor_cluster `NodeServer` with a
//!   name, a cookie and a listen address), [`Node::join`] through seeds,
//!   [`Node::leave`], [`Node::members`], [`Node::subscribe`] to
//!   [`ClusterEvent`]s.
//! - membership (`membership.rs`): one task owns the session table; adds the
//!   heartbeat failure detector and redial with backoff that ractor_cluster
//!   lacks, gossips members so every node finds every other, and turns a
//!   connection closed during authentication into [`JoinError::AuthFailed`].
//! - registry (`registry.rs`): unique global names ([`Node::register`],
//!   [`Node::whereis`], [`Node::unregister`]) and scoped process groups
//!   ([`Node::join_group`], [`Node::members_of`]) on ractor's pg, which
//!   ractor_cluster copies between nodes; lookups read the local copy.
//! - remote messages (`remote.rs`, `envelope.rs`): [`GlobalRef`] casts and
//!   calls any serde message type with ractor's shapes; payloads are encoded
//!   by [`codec`](crate::codec) inside one [`Envelope`] type whose decoding
//!   never fails inside ractor, so a bad payload is refused per message.
//! - [`tls`]: optional mutual TLS between nodes (rustls, aws-lc-rs).
//!
//! Guarantees and timings are in `docs/cluster.md`.

mod actors;
mod config;
mod envelope;
mod error;
mod event;
mod membership;
mod names;
mod node;
mod registry;
mod remote;
pub mod tls;

pub use config::{NodeConfig, Timings};
pub use envelope::{Envelope, Fault, RemoteMessage, ReplyError, ReplyTo};
pub use error::{CallError, JoinError, RegistryError, SendError, StartError};
pub use event::{ClusterEvent, DownReason, NameLost};
pub use node::Node;
pub use remote::GlobalRef;
pub use tls::TlsConfig;

/// The serde this crate encodes with, for `#[serde(crate = "...")]` in
/// crates that do not depend on serde themselves.
pub use serde;
