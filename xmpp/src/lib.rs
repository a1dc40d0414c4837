//! beamline-xmpp: the XMPP server (streams, sessions, routing, modules).
//!
//! Not built yet: this crate holds the place of the server described in
//! `ARCHITECTURE.md`. It sits on top of `beamline-storage`,
//! `beamline-supervision` and `beamline-runtime`.
