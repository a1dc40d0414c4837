//! beamline-runtime: the Erlang-like layer under everything else.
//!
//! What is inside:
//! - [`codec`]: the one place where values become bytes (for the wire between
//!   nodes and for disc logs). Everything else calls [`codec::encode`] and
//!   [`codec::decode`], so the format can change in one file.
//! - [`telemetry`]: tracing set-up shared by the binary, examples and tests.
//! - [`cluster`]: nodes and membership (heartbeat failure detector, redial),
//!   the global registry and process groups on pg, typed casts and calls
//!   between nodes in one codec envelope, optional TLS.
//!
//! Nothing in this crate knows about XMPP.

pub mod cluster;
pub mod codec;
pub mod telemetry;

pub use ractor;
