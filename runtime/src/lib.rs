//! beamline-runtime: the Erlang-like layer under everything else.
//!
//! What is inside:
//! - [`codec`]: the one place where values become bytes (for the wire between
//!   nodes and for disc logs). Everything else calls [`codec::encode`] and
//!   [`codec::decode`], so the format can change in one file.
//! - [`telemetry`]: tracing set-up shared by the binary, examples and tests.
//! - [`hooks`]: named hook points (global or per virtual host) that actors
//!   subscribe to with a priority; `run` and `run_fold` call them in order,
//!   skip slow or dead subscribers after a timeout, and cost next to nothing
//!   when nobody subscribed.
//! - [`cluster`]: nodes and membership (heartbeat failure detector, redial),
//!   the global registry and process groups on pg, typed casts and calls
//!   between nodes in one codec envelope, optional TLS.
//!
//! Nothing in this crate knows about XMPP.

pub mod cluster;
pub mod codec;
pub mod hooks;
pub mod telemetry;

pub use ractor;
