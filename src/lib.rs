//! beamline: an Erlang/OTP-style actor runtime and an XMPP server on it.
//!
//! This facade re-exports the workspace crates so that an application can
//! depend on `beamline` alone:
//! - [`runtime`]: nodes, codec, tracing (and, as it lands, cluster membership,
//!   the global registry, remote messages and hooks);
//! - [`supervision`]: OTP supervisors and the module manager;
//! - [`storage`]: Mnesia-style tables;
//! - [`xmpp`]: the XMPP server;
//! - [`admin`]: the admin socket of a running node and the `ctl` client
//!   (in the manner of `ejabberdctl`);
//! - [`node`]: a whole node (server plus admin socket), as `beamline serve`
//!   runs it and as an application embeds it.

pub mod admin;
pub mod node;

pub use beamline_runtime as runtime;
pub use beamline_storage as storage;
pub use beamline_supervision as supervision;
pub use beamline_xmpp as xmpp;
pub use ractor;
