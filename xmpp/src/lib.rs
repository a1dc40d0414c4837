//! beamline-xmpp: the XMPP server (streams, sessions, routing, modules).
//!
//! It will sit on `beamline-storage`, `beamline-supervision` and
//! `beamline-runtime`. Built so far, the bottom of the interface layer
//! described in `ARCHITECTURE.md`:
//!
//! - [`stream`]: the XML stream codec. [`StreamDecoder`] is fed bytes in
//!   chunks of any size and yields [`StreamEvent`]s (header, one element
//!   per stanza, close), enforcing [`StreamLimits`]; it rejects comments,
//!   processing instructions, DTDs and undefined entities, and never
//!   expands an entity. Headers, stanzas and the close tag are written
//!   back with [`StreamHeader::write_to`], [`Element::write_in_stream`] and
//!   [`stream::write_stream_close`]. See `docs/xml-stream.md`.
//! - [`xml`]: the element tree ([`Element`], [`Node`]), its builder and
//!   its serializer with escaping.
//! - [`ns`]: every namespace, in one place.
//! - [`config`]: the configuration file (TOML), typed and validated, with
//!   errors that name file, line and key. See `docs/configuration.md`.
//! - [`sasl`]: SASL, server side (SCRAM-SHA-1/256/512 and -PLUS, PLAIN), a
//!   state machine without I/O that the c2s session drives.
//! - [`jid`]: JIDs (RFC 7622) from the `jid` crate; a bad one is the
//!   stanza error `jid-malformed`.
//! - [`stream_error`]: stream errors (RFC 6120 §4.9), what a peer is sent
//!   before its stream closes; every [`DecodeError`] maps to one.
//! - [`stanza_error`]: stanza errors (RFC 6120 §8.3) and
//!   [`stanza_error::error_reply`].
//! - [`tls`]: certificates (configured or self-signed), the rustls server
//!   configuration per listener kind, and SASL channel binding data.
//! - [`client`]: the project's own XMPP client (STARTTLS or direct TLS,
//!   SCRAM/PLAIN, bind) for tests, examples and the load generator, and a
//!   raw connection for protocol tests.
//!
//! The crate has one XML stack, quick-xml, and parses each complete stanza
//! with its synchronous reader.

pub mod access;
pub mod c2s;
pub mod client;
pub mod cluster;
pub mod config;
pub mod hooks;
pub mod jid;
pub mod memory;
pub mod modules;
pub mod ns;
pub mod router;
pub mod sasl;
pub mod server;
pub mod sm;
pub mod stanza_error;
pub mod stream;
pub mod stream_error;
pub mod tls;
pub mod xml;

pub use crate::jid::{BareJid, FullJid, Jid};
pub use stanza_error::{ErrorType, StanzaError, StanzaErrorCondition};
pub use stream::{DecodeError, StreamDecoder, StreamEvent, StreamHeader, StreamLimits};
pub use stream_error::{StreamError, StreamErrorCondition};
pub use xml::{Element, ElementBuilder, Node};
