//! What can go wrong while decoding a stream, and the stream error each
//! cause is answered with.

use crate::stream_error::{StreamError, StreamErrorCondition};

/// A construct that RFC 6120 §11.1 forbids on an XMPP stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restricted {
    /// `<!-- ... -->`
    Comment,
    /// `<?target ...?>` other than the XML declaration before the header.
    ProcessingInstruction,
    /// `<!DOCTYPE ...>` (internal or external subset).
    Doctype,
}

/// Why the decoder stopped. Each cause maps to the stream error the peer
/// is sent ([`DecodeError::stream_error`]); after an error the decoder
/// yields nothing more until [`reset`](super::StreamDecoder::reset).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// quick-xml rejected the markup.
    #[error("XML not well-formed: {0}")]
    Syntax(#[from] quick_xml::Error),
    /// A well-formedness rule that this decoder checks itself.
    #[error("XML not well-formed: {0}")]
    Malformed(&'static str),
    /// Bytes that are not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// An entity other than the five predefined ones (there is no DTD to
    /// define more, and none is ever expanded).
    #[error("undefined entity &{0};")]
    UndefinedEntity(String),
    /// A comment, processing instruction or DTD.
    #[error("restricted XML: {0:?}")]
    Restricted(Restricted),
    /// The stanza in progress grew beyond the limit in force.
    #[error("stanza larger than {limit} bytes")]
    StanzaTooLarge {
        /// The limit in force (before or after authentication).
        limit: usize,
    },
    /// The stream header (with the XML declaration) grew beyond its limit.
    #[error("stream header larger than {limit} bytes")]
    HeaderTooLarge {
        /// [`StreamLimits::max_header_size`](super::StreamLimits::max_header_size).
        limit: usize,
    },
    /// Elements nested deeper than the limit.
    #[error("elements nested deeper than {limit}")]
    TooDeep {
        /// [`StreamLimits::max_depth`](super::StreamLimits::max_depth).
        limit: usize,
    },
    /// An element with more attributes than the limit.
    #[error("more than {limit} attributes on one element")]
    TooManyAttributes {
        /// [`StreamLimits::max_attributes`](super::StreamLimits::max_attributes).
        limit: usize,
    },
    /// The stream namespace, or the content namespace, is wrong or missing.
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
    /// A prefix that is not bound, or a reserved prefix misused.
    #[error("bad namespace prefix {0:?}")]
    BadNamespacePrefix(String),
    /// Well-formed XML that cannot be an XMPP stream (character data at
    /// stream level, a root element other than `stream`, ...).
    #[error("bad format: {0}")]
    BadFormat(&'static str),
    /// The XML declaration names an encoding other than UTF-8.
    #[error("unsupported encoding {0:?}")]
    UnsupportedEncoding(String),
}

impl DecodeError {
    /// The RFC 6120 condition the peer is sent. Size, depth and attribute
    /// limits are `policy-violation`, as in ejabberd.
    pub fn condition(&self) -> StreamErrorCondition {
        use StreamErrorCondition as C;
        match self {
            DecodeError::Syntax(_)
            | DecodeError::Malformed(_)
            | DecodeError::InvalidUtf8
            | DecodeError::UndefinedEntity(_) => C::NotWellFormed,
            DecodeError::Restricted(_) => C::RestrictedXml,
            DecodeError::StanzaTooLarge { .. }
            | DecodeError::HeaderTooLarge { .. }
            | DecodeError::TooDeep { .. }
            | DecodeError::TooManyAttributes { .. } => C::PolicyViolation,
            DecodeError::InvalidNamespace(_) => C::InvalidNamespace,
            DecodeError::BadNamespacePrefix(_) => C::BadNamespacePrefix,
            DecodeError::BadFormat(_) => C::BadFormat,
            DecodeError::UnsupportedEncoding(_) => C::UnsupportedEncoding,
        }
    }

    /// The stream error to send: the condition, with this error's message
    /// as English text (it never quotes more than a name from the input).
    pub fn stream_error(&self) -> StreamError {
        StreamError::new(self.condition()).with_text(self.to_string(), Some("en"))
    }
}
