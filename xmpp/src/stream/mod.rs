//! The XML stream codec: bytes in, [`StreamEvent`]s out; headers, stanzas
//! and the close tag written back out.
//!
//! # Reading
//!
//! A session owns one [`StreamDecoder`]. It reads from its socket into a
//! small buffer, hands the bytes to [`StreamDecoder::feed`], then calls
//! [`StreamDecoder::next_event`] until it returns `Ok(None)`:
//!
//! ```
//! use beamline_xmpp::stream::{StreamDecoder, StreamEvent, StreamLimits};
//!
//! let mut dec = StreamDecoder::new(StreamLimits::default());
//! dec.feed(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
//!            xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>");
//! dec.feed(b"<message to='juliet@example.com'><body>hi</body></mess");
//! dec.feed(b"age>");
//! let mut events = Vec::new();
//! while let Some(ev) = dec.next_event().expect("well-formed") {
//!     events.push(ev);
//! }
//! assert!(matches!(&events[0], StreamEvent::StreamOpen(h) if h.to.as_deref() == Some("example.com")));
//! assert!(matches!(&events[1], StreamEvent::Stanza(m) if m.name() == "message"));
//! ```
//!
//! The decoder does not build a tree while a stanza arrives. It scans the
//! bytes for the end of the top-level element, keeping only the unparsed
//! bytes of the stanza in flight; once a stanza is complete, it is parsed in
//! one go with quick-xml's synchronous reader. Nothing is awaited inside, so
//! there is no cancel-safety question: the session may `select!` on its
//! socket and mailbox freely.
//!
//! # Limits
//!
//! [`StreamLimits`] bounds the stanza size (smaller until
//! [`StreamDecoder::set_authenticated`]), the nesting depth, the attributes
//! per element and the header size; breaking one is `policy-violation`.
//! Comments, processing instructions and DTDs are `restricted-xml`; entities
//! are never expanded and any but the five predefined ones is
//! `not-well-formed`.
//!
//! # Writing
//!
//! [`StreamHeader::write_to`], [`Element::write_in_stream`] and
//! [`write_stream_close`]; a stream error is
//! [`StreamError::write_to`](crate::stream_error::StreamError::write_to).

mod decoder;
mod error;
mod parse;

use std::borrow::Cow;

pub use decoder::StreamDecoder;
pub use error::{DecodeError, Restricted};

use crate::ns;
use crate::xml::{Element, escape_attr};

/// What the decoder yields.
// An event is returned and consumed at once, never stored in bulk: the
// size of the rare header variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer opened (or, after a reset, re-opened) the stream.
    StreamOpen(StreamHeader),
    /// A complete top-level element: a stanza (`message`, `presence`,
    /// `iq`) or a stream-level element (`stream:features`, `starttls`,
    /// SASL `auth`, stream management `r`, ...). Its namespace is resolved:
    /// a stanza without its own `xmlns` has the stream's content namespace.
    Stanza(Element),
    /// The peer sent `</stream:stream>`; the decoder yields nothing more.
    StreamClose,
}

/// The attributes and namespaces of a `<stream:stream>` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// The `to` attribute, unparsed (the session validates it).
    pub to: Option<String>,
    /// The `from` attribute, unparsed.
    pub from: Option<String>,
    /// The stream id (set by the receiving entity).
    pub id: Option<String>,
    /// The stream `version` (`"1.0"`); absent means a pre-RFC 3920 peer.
    pub version: Option<String>,
    /// The stream's default language (`xml:lang`).
    pub lang: Option<String>,
    /// The content namespace (the default `xmlns`): [`ns::JABBER_CLIENT`],
    /// [`ns::JABBER_SERVER`] or [`ns::COMPONENT_ACCEPT`].
    pub content_ns: Cow<'static, str>,
    /// The prefix bound to the stream namespace in a received header
    /// (`"stream"` in practice). Headers written by us always use `stream`.
    pub stream_prefix: String,
    /// Other prefix declarations, as (prefix, namespace), e.g. `db` for
    /// dialback on server streams.
    pub prefixes: Vec<(String, String)>,
    /// Any other attributes, as (qualified name, value).
    pub extra: Vec<(String, String)>,
}

impl StreamHeader {
    /// A header with the given content namespace and nothing else set.
    pub fn new(content_ns: impl Into<Cow<'static, str>>) -> Self {
        StreamHeader {
            to: None,
            from: None,
            id: None,
            version: None,
            lang: None,
            content_ns: content_ns.into(),
            stream_prefix: "stream".to_owned(),
            prefixes: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Writes `<?xml version='1.0'?><stream:stream ...>` (the prefix is
    /// always `stream`, which [`Element::write_in_stream`] relies on).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='");
        escape_attr(&self.content_ns, out);
        out.extend_from_slice(b"' xmlns:stream='");
        out.extend_from_slice(ns::STREAM.as_bytes());
        out.push(b'\'');
        let mut attr = |name: &str, value: &str| {
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"='");
            escape_attr(value, out);
            out.push(b'\'');
        };
        for (p, uri) in &self.prefixes {
            if p != "stream" {
                attr(&format!("xmlns:{p}"), uri);
            }
        }
        let fields = [
            ("to", &self.to),
            ("from", &self.from),
            ("id", &self.id),
            ("version", &self.version),
            ("xml:lang", &self.lang),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                attr(name, v);
            }
        }
        for (name, value) in &self.extra {
            attr(name, value);
        }
        out.push(b'>');
    }
}

/// The closing tag of a stream written by [`StreamHeader::write_to`].
pub const STREAM_CLOSE: &[u8] = b"</stream:stream>";

/// Appends [`STREAM_CLOSE`].
pub fn write_stream_close(out: &mut Vec<u8>) {
    out.extend_from_slice(STREAM_CLOSE);
}

/// Limits on what a peer may send, each with its default. Exceeding any of
/// them is a `policy-violation` stream error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Largest top-level element, in bytes of markup, once authenticated
    /// (default 65,536, as ejabberd's `max_stanza_size`).
    pub max_stanza_size: usize,
    /// Largest top-level element before authentication (default 10,240):
    /// an unauthenticated peer needs little more than SASL exchanges.
    pub max_stanza_size_unauthenticated: usize,
    /// Deepest nesting of elements in a stanza, its root being 1
    /// (default 32).
    pub max_depth: usize,
    /// Most attributes on one element, namespace declarations included
    /// (default 64).
    pub max_attributes: usize,
    /// Largest stream header including the XML declaration and whitespace
    /// before it (default 4,096).
    pub max_header_size: usize,
    /// Capacity the input buffer shrinks back to once a large stanza has
    /// been consumed (default 512): when its capacity exceeds twice this
    /// and its content fits in this, it is shrunk to this.
    pub idle_buffer_capacity: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_stanza_size: 65_536,
            max_stanza_size_unauthenticated: 10_240,
            max_depth: 32,
            max_attributes: 64,
            max_header_size: 4_096,
            idle_buffer_capacity: 512,
        }
    }
}
