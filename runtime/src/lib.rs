//! beamline-runtime: the Erlang-like layer under everything else.
//!
//! What is inside:
//! - [`codec`]: the one place where values become bytes (for the wire between
//!   nodes and for disc logs). Everything else calls [`codec::encode`] and
//!   [`codec::decode`], so the format can change in one file.
//! - [`telemetry`]: tracing set-up shared by the binary, examples and tests.
//!
//! Nothing in this crate knows about XMPP.

pub mod codec;
pub mod telemetry;

pub use ractor;
