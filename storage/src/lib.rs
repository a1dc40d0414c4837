//! beamline-storage: Mnesia-style replicated tables.
//!
//! Not built yet: this crate holds the place of the data layer described in
//! `ARCHITECTURE.md` (tables, replicas as supervised actors, transactions,
//! disc copies). It depends on `beamline-runtime` and `beamline-supervision`
//! and on nothing XMPP-specific.
