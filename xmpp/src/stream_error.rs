//! Stream errors (RFC 6120 §4.9): what the peer sees before its stream is
//! closed. Internal decoder errors map onto these through
//! [`DecodeError::stream_error`](crate::stream::DecodeError::stream_error).

use crate::ns;
use crate::xml::Element;

/// A defined stream error condition (RFC 6120 §4.9.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamErrorCondition {
    /// §4.9.3.1: XML that cannot be processed.
    BadFormat,
    /// §4.9.3.2: an unsupported namespace prefix, or an unbound one.
    BadNamespacePrefix,
    /// §4.9.3.3: a new stream from the same entity replaced this one.
    Conflict,
    /// §4.9.3.4: the peer was silent for too long.
    ConnectionTimeout,
    /// §4.9.3.5: the `to` domain is no longer served here.
    HostGone,
    /// §4.9.3.6: the `to` domain is not served here.
    HostUnknown,
    /// §4.9.3.7: a stanza without required `to` or `from`.
    ImproperAddressing,
    /// §4.9.3.8: a misconfiguration or internal failure.
    InternalServerError,
    /// §4.9.3.9: a `from` that does not match an authorized JID.
    InvalidFrom,
    /// §4.9.3.10: wrong stream or content namespace.
    InvalidNamespace,
    /// §4.9.3.11: XML that fails validation.
    InvalidXml,
    /// §4.9.3.12: data sent before the stream was authenticated.
    NotAuthorized,
    /// §4.9.3.13: XML that is not well-formed.
    NotWellFormed,
    /// §4.9.3.14: a local policy was broken (here: size, depth, attribute limits).
    PolicyViolation,
    /// §4.9.3.15: a connection needed for this stream failed.
    RemoteConnectionFailed,
    /// §4.9.3.16: the stream must be restarted (e.g. credentials changed).
    Reset,
    /// §4.9.3.17: the server lacks resources to serve the stream.
    ResourceConstraint,
    /// §4.9.3.18: a comment, processing instruction, DTD or entity reference.
    RestrictedXml,
    /// §4.9.3.19: reconnect to this other host (`host`, `host:port` or `[ip6]:port`).
    SeeOtherHost(String),
    /// §4.9.3.20: the server is shutting down.
    SystemShutdown,
    /// §4.9.3.21: none of the others; an application condition should follow.
    UndefinedCondition,
    /// §4.9.3.22: an encoding other than UTF-8.
    UnsupportedEncoding,
    /// §4.9.3.23: a mandatory-to-negotiate feature the receiver lacks.
    UnsupportedFeature,
    /// §4.9.3.24: a top-level element the receiver does not understand.
    UnsupportedStanzaType,
    /// §4.9.3.25: an unsupported stream `version`.
    UnsupportedVersion,
}

impl StreamErrorCondition {
    /// The element name of the condition, e.g. `"not-well-formed"`.
    pub fn name(&self) -> &'static str {
        use StreamErrorCondition::*;
        match self {
            BadFormat => "bad-format",
            BadNamespacePrefix => "bad-namespace-prefix",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostGone => "host-gone",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            InvalidXml => "invalid-xml",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            RemoteConnectionFailed => "remote-connection-failed",
            Reset => "reset",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SeeOtherHost(_) => "see-other-host",
            SystemShutdown => "system-shutdown",
            UndefinedCondition => "undefined-condition",
            UnsupportedEncoding => "unsupported-encoding",
            UnsupportedFeature => "unsupported-feature",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
    }

    /// The condition for an element name; `see-other-host` takes `text` as
    /// its host. `None` for an unknown name.
    pub fn from_name(name: &str, text: &str) -> Option<Self> {
        use StreamErrorCondition::*;
        Some(match name {
            "bad-format" => BadFormat,
            "bad-namespace-prefix" => BadNamespacePrefix,
            "conflict" => Conflict,
            "connection-timeout" => ConnectionTimeout,
            "host-gone" => HostGone,
            "host-unknown" => HostUnknown,
            "improper-addressing" => ImproperAddressing,
            "internal-server-error" => InternalServerError,
            "invalid-from" => InvalidFrom,
            "invalid-namespace" => InvalidNamespace,
            "invalid-xml" => InvalidXml,
            "not-authorized" => NotAuthorized,
            "not-well-formed" => NotWellFormed,
            "policy-violation" => PolicyViolation,
            "remote-connection-failed" => RemoteConnectionFailed,
            "reset" => Reset,
            "resource-constraint" => ResourceConstraint,
            "restricted-xml" => RestrictedXml,
            "see-other-host" => SeeOtherHost(text.to_owned()),
            "system-shutdown" => SystemShutdown,
            "undefined-condition" => UndefinedCondition,
            "unsupported-encoding" => UnsupportedEncoding,
            "unsupported-feature" => UnsupportedFeature,
            "unsupported-stanza-type" => UnsupportedStanzaType,
            "unsupported-version" => UnsupportedVersion,
            _ => return None,
        })
    }
}

/// A stream error as sent on the wire: a condition, an optional
/// human-readable text, and an optional application-specific element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    /// The defined condition.
    pub condition: StreamErrorCondition,
    /// Descriptive text for humans (never for protocol decisions).
    pub text: Option<String>,
    /// The `xml:lang` of `text`.
    pub lang: Option<String>,
    /// An application-specific condition element (RFC 6120 §4.9.4).
    pub app: Option<Box<Element>>,
}

impl StreamError {
    /// A stream error with just a condition.
    pub fn new(condition: StreamErrorCondition) -> Self {
        StreamError {
            condition,
            text: None,
            lang: None,
            app: None,
        }
    }

    /// Adds descriptive text.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>, lang: Option<&str>) -> Self {
        self.text = Some(text.into());
        self.lang = lang.map(str::to_owned);
        self
    }

    /// The `<stream:error/>` element: the condition, then `<text/>`, then
    /// the application condition.
    pub fn to_element(&self) -> Element {
        let mut cond = Element::new(self.condition.name(), ns::XMPP_STREAMS);
        if let StreamErrorCondition::SeeOtherHost(host) = &self.condition {
            cond.append_text(host);
        }
        let mut el = Element::builder("error", ns::STREAM).append(cond).build();
        if let Some(text) = &self.text {
            let mut t = Element::new("text", ns::XMPP_STREAMS);
            if let Some(lang) = &self.lang {
                t.set_attr("xml:lang", lang.clone());
            }
            t.append_text(text);
            el.append_child(t);
        }
        if let Some(app) = &self.app {
            el.append_child((**app).clone());
        }
        el
    }

    /// Writes `<stream:error>...</stream:error>` for a stream whose content
    /// namespace is `content_ns`; follow it with
    /// [`write_stream_close`](crate::stream::write_stream_close).
    pub fn write_to(&self, content_ns: &str, out: &mut Vec<u8>) {
        self.to_element().write_in_stream(content_ns, out);
    }

    /// Reads a received `<stream:error/>`; `None` if `el` is not one or has
    /// no known condition.
    pub fn from_element(el: &Element) -> Option<Self> {
        if !el.is("error", ns::STREAM) {
            return None;
        }
        let mut condition = None;
        let mut text = None;
        let mut lang = None;
        let mut app = None;
        for child in el.children() {
            if child.ns() == ns::XMPP_STREAMS {
                if child.name() == "text" {
                    text = Some(child.text());
                    lang = child.attr("xml:lang").map(str::to_owned);
                } else if condition.is_none() {
                    condition = StreamErrorCondition::from_name(child.name(), &child.text());
                }
            } else if app.is_none() {
                app = Some(Box::new(child.clone()));
            }
        }
        Some(StreamError {
            condition: condition?,
            text,
            lang,
            app,
        })
    }
}

impl From<StreamErrorCondition> for StreamError {
    fn from(c: StreamErrorCondition) -> Self {
        StreamError::new(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_rfc6120_shows() {
        let e = StreamError::new(StreamErrorCondition::NotWellFormed).with_text("bad", Some("en"));
        let mut out = Vec::new();
        e.write_to(ns::JABBER_CLIENT, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>bad</text>\
             </stream:error>"
        );
        assert_eq!(StreamError::from_element(&e.to_element()), Some(e));
    }

    #[test]
    fn see_other_host_carries_the_host() {
        let e = StreamError::new(StreamErrorCondition::SeeOtherHost(
            "[2001:db8::1]:5222".into(),
        ));
        let el = e.to_element();
        assert_eq!(
            el.child_text("see-other-host", ns::XMPP_STREAMS).as_deref(),
            Some("[2001:db8::1]:5222")
        );
        assert_eq!(StreamError::from_element(&el), Some(e));
    }

    #[test]
    fn every_name_round_trips() {
        let names = [
            "bad-format",
            "bad-namespace-prefix",
            "conflict",
            "connection-timeout",
            "host-gone",
            "host-unknown",
            "improper-addressing",
            "internal-server-error",
            "invalid-from",
            "invalid-namespace",
            "invalid-xml",
            "not-authorized",
            "not-well-formed",
            "policy-violation",
            "remote-connection-failed",
            "reset",
            "resource-constraint",
            "restricted-xml",
            "see-other-host",
            "system-shutdown",
            "undefined-condition",
            "unsupported-encoding",
            "unsupported-feature",
            "unsupported-stanza-type",
            "unsupported-version",
        ];
        for n in names {
            let c = StreamErrorCondition::from_name(n, "h").expect("defined condition");
            assert_eq!(c.name(), n);
        }
        assert_eq!(StreamErrorCondition::from_name("nope", ""), None);
    }
}
