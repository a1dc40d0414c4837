//! Stanza errors (RFC 6120 §8.3): recoverable errors carried in a stanza of
//! `type='error'`, and [`error_reply`] that answers a stanza with one.

use crate::ns;
use crate::xml::Element;

/// The `type` attribute of a stanza error (RFC 6120 §8.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry: the error cannot be remedied.
    Cancel,
    /// Proceed: the condition was only a warning.
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting: the error is temporary.
    Wait,
}

impl ErrorType {
    /// The attribute value, e.g. `"cancel"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }

    /// Parses the attribute value.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "auth" => ErrorType::Auth,
            "cancel" => ErrorType::Cancel,
            "continue" => ErrorType::Continue,
            "modify" => ErrorType::Modify,
            "wait" => ErrorType::Wait,
            _ => return None,
        })
    }
}

/// A defined stanza error condition (RFC 6120 §8.3.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StanzaErrorCondition {
    /// §8.3.3.1, default type modify.
    BadRequest,
    /// §8.3.3.2, cancel.
    Conflict,
    /// §8.3.3.3, cancel.
    FeatureNotImplemented,
    /// §8.3.3.4, auth.
    Forbidden,
    /// §8.3.3.5, cancel; may carry the entity's new address (a URI).
    Gone(Option<String>),
    /// §8.3.3.6, cancel.
    InternalServerError,
    /// §8.3.3.7, cancel.
    ItemNotFound,
    /// §8.3.3.8, modify: an address that fails RFC 7622.
    JidMalformed,
    /// §8.3.3.9, modify.
    NotAcceptable,
    /// §8.3.3.10, cancel.
    NotAllowed,
    /// §8.3.3.11, auth.
    NotAuthorized,
    /// §8.3.3.12, modify.
    PolicyViolation,
    /// §8.3.3.13, wait.
    RecipientUnavailable,
    /// §8.3.3.14, modify; may carry the alternate address (a URI).
    Redirect(Option<String>),
    /// §8.3.3.15, auth.
    RegistrationRequired,
    /// §8.3.3.16, cancel.
    RemoteServerNotFound,
    /// §8.3.3.17, wait.
    RemoteServerTimeout,
    /// §8.3.3.18, wait.
    ResourceConstraint,
    /// §8.3.3.19, cancel.
    ServiceUnavailable,
    /// §8.3.3.20, auth.
    SubscriptionRequired,
    /// §8.3.3.21, any type (cancel here).
    UndefinedCondition,
    /// §8.3.3.22, wait.
    UnexpectedRequest,
}

impl StanzaErrorCondition {
    /// The element name, e.g. `"item-not-found"`.
    pub fn name(&self) -> &'static str {
        use StanzaErrorCondition::*;
        match self {
            BadRequest => "bad-request",
            Conflict => "conflict",
            FeatureNotImplemented => "feature-not-implemented",
            Forbidden => "forbidden",
            Gone(_) => "gone",
            InternalServerError => "internal-server-error",
            ItemNotFound => "item-not-found",
            JidMalformed => "jid-malformed",
            NotAcceptable => "not-acceptable",
            NotAllowed => "not-allowed",
            NotAuthorized => "not-authorized",
            PolicyViolation => "policy-violation",
            RecipientUnavailable => "recipient-unavailable",
            Redirect(_) => "redirect",
            RegistrationRequired => "registration-required",
            RemoteServerNotFound => "remote-server-not-found",
            RemoteServerTimeout => "remote-server-timeout",
            ResourceConstraint => "resource-constraint",
            ServiceUnavailable => "service-unavailable",
            SubscriptionRequired => "subscription-required",
            UndefinedCondition => "undefined-condition",
            UnexpectedRequest => "unexpected-request",
        }
    }

    /// The type RFC 6120 gives the condition in its examples.
    pub fn default_type(&self) -> ErrorType {
        use ErrorType::*;
        use StanzaErrorCondition as C;
        match self {
            C::BadRequest
            | C::JidMalformed
            | C::NotAcceptable
            | C::PolicyViolation
            | C::Redirect(_) => Modify,
            C::Forbidden | C::NotAuthorized | C::RegistrationRequired | C::SubscriptionRequired => {
                Auth
            }
            C::RecipientUnavailable
            | C::RemoteServerTimeout
            | C::ResourceConstraint
            | C::UnexpectedRequest => Wait,
            C::Conflict
            | C::FeatureNotImplemented
            | C::Gone(_)
            | C::InternalServerError
            | C::ItemNotFound
            | C::NotAllowed
            | C::RemoteServerNotFound
            | C::ServiceUnavailable
            | C::UndefinedCondition => Cancel,
        }
    }

    /// The condition for an element name; `gone` and `redirect` take a
    /// non-empty `text` as their address.
    pub fn from_name(name: &str, text: &str) -> Option<Self> {
        use StanzaErrorCondition::*;
        let addr = || (!text.is_empty()).then(|| text.to_owned());
        Some(match name {
            "bad-request" => BadRequest,
            "conflict" => Conflict,
            "feature-not-implemented" => FeatureNotImplemented,
            "forbidden" => Forbidden,
            "gone" => Gone(addr()),
            "internal-server-error" => InternalServerError,
            "item-not-found" => ItemNotFound,
            "jid-malformed" => JidMalformed,
            "not-acceptable" => NotAcceptable,
            "not-allowed" => NotAllowed,
            "not-authorized" => NotAuthorized,
            "policy-violation" => PolicyViolation,
            "recipient-unavailable" => RecipientUnavailable,
            "redirect" => Redirect(addr()),
            "registration-required" => RegistrationRequired,
            "remote-server-not-found" => RemoteServerNotFound,
            "remote-server-timeout" => RemoteServerTimeout,
            "resource-constraint" => ResourceConstraint,
            "service-unavailable" => ServiceUnavailable,
            "subscription-required" => SubscriptionRequired,
            "undefined-condition" => UndefinedCondition,
            "unexpected-request" => UnexpectedRequest,
            _ => return None,
        })
    }
}

/// A stanza error: type, condition, optional text, `by` and application
/// condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    /// The `type` attribute.
    pub error_type: ErrorType,
    /// The defined condition.
    pub condition: StanzaErrorCondition,
    /// Descriptive text for humans.
    pub text: Option<String>,
    /// The `xml:lang` of `text`.
    pub lang: Option<String>,
    /// The entity that generated the error (`by` attribute).
    pub by: Option<String>,
    /// An application-specific condition element (RFC 6120 §8.3.4).
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    /// An error with the condition's default type.
    pub fn new(condition: StanzaErrorCondition) -> Self {
        StanzaError {
            error_type: condition.default_type(),
            condition,
            text: None,
            lang: None,
            by: None,
            app: None,
        }
    }

    /// Overrides the type.
    #[must_use]
    pub fn with_type(mut self, error_type: ErrorType) -> Self {
        self.error_type = error_type;
        self
    }

    /// Adds descriptive text.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>, lang: Option<&str>) -> Self {
        self.text = Some(text.into());
        self.lang = lang.map(str::to_owned);
        self
    }

    /// The `<error/>` element, in `content_ns` (the stanza's namespace).
    pub fn to_element(&self, content_ns: &str) -> Element {
        let mut el = Element::new("error", crate::ns::intern(content_ns));
        el.set_attr("type", self.error_type.as_str());
        if let Some(by) = &self.by {
            el.set_attr("by", by.clone());
        }
        let mut cond = Element::new(self.condition.name(), ns::XMPP_STANZAS);
        if let StanzaErrorCondition::Gone(Some(a)) | StanzaErrorCondition::Redirect(Some(a)) =
            &self.condition
        {
            cond.append_text(a);
        }
        el.append_child(cond);
        if let Some(text) = &self.text {
            let mut t = Element::new("text", ns::XMPP_STANZAS);
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

    /// Reads the `<error/>` child of a stanza of `type='error'`; `None` when
    /// there is none or it lacks a known condition or type.
    pub fn from_stanza(stanza: &Element) -> Option<Self> {
        let el = stanza.get_child("error", stanza.ns())?;
        let error_type = ErrorType::from_name(el.attr("type")?)?;
        let mut condition = None;
        let (mut text, mut lang, mut app) = (None, None, None);
        for child in el.children() {
            if child.ns() == ns::XMPP_STANZAS {
                if child.name() == "text" {
                    text = Some(child.text());
                    lang = child.attr("xml:lang").map(str::to_owned);
                } else if condition.is_none() {
                    condition = StanzaErrorCondition::from_name(child.name(), &child.text());
                }
            } else if app.is_none() {
                app = Some(Box::new(child.clone()));
            }
        }
        Some(StanzaError {
            error_type,
            condition: condition?,
            text,
            lang,
            by: el.attr("by").map(str::to_owned),
            app,
        })
    }
}

impl From<StanzaErrorCondition> for StanzaError {
    fn from(c: StanzaErrorCondition) -> Self {
        StanzaError::new(c)
    }
}

/// A JID that fails to parse is `jid-malformed` (RFC 6120 §8.3.3.8).
impl From<jid::Error> for StanzaError {
    fn from(e: jid::Error) -> Self {
        StanzaError::new(StanzaErrorCondition::JidMalformed).with_text(e.to_string(), Some("en"))
    }
}

/// The error reply to `stanza` (RFC 6120 §8.3.1): same element name and
/// namespace, `to` and `from` swapped, `type='error'`, `id` kept, and the
/// `<error/>` child. With `include_original`, the original children come
/// first, as RFC 6120 allows. `None` when `stanza` is itself an error: an
/// error must never be answered with an error.
pub fn error_reply(
    stanza: &Element,
    error: &StanzaError,
    include_original: bool,
) -> Option<Element> {
    if stanza.attr("type") == Some("error") {
        return None;
    }
    let mut reply = Element::new(stanza.name().to_owned(), crate::ns::intern(stanza.ns()));
    if let Some(from) = stanza.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = stanza.attr("to") {
        reply.set_attr("from", to);
    }
    reply.set_attr("type", "error");
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(lang) = stanza.attr("xml:lang") {
        reply.set_attr("xml:lang", lang);
    }
    if include_original {
        for child in stanza.children() {
            reply.append_child(child.clone());
        }
    }
    reply.append_child(error.to_element(stanza.ns()));
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iq() -> Element {
        Element::builder("iq", ns::JABBER_CLIENT)
            .attr("from", "romeo@example.net/orchard")
            .attr("to", "juliet@example.com")
            .attr("type", "get")
            .attr("id", "q1")
            .append(Element::new("query", ns::ROSTER))
            .build()
    }

    #[test]
    fn reply_swaps_addresses_and_keeps_id() {
        let err = StanzaError::new(StanzaErrorCondition::ServiceUnavailable);
        let r = error_reply(&iq(), &err, false).expect("not an error stanza");
        assert_eq!(r.attr("to"), Some("romeo@example.net/orchard"));
        assert_eq!(r.attr("from"), Some("juliet@example.com"));
        assert_eq!(r.attr("type"), Some("error"));
        assert_eq!(r.attr("id"), Some("q1"));
        assert!(!r.has_child("query", ns::ROSTER));
        let mut out = Vec::new();
        r.get_child("error", ns::JABBER_CLIENT)
            .expect("error child")
            .write_in_stream(ns::JABBER_CLIENT, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        );
        assert_eq!(StanzaError::from_stanza(&r), Some(err));
    }

    #[test]
    fn reply_may_include_the_original_payload() {
        let err = StanzaError::new(StanzaErrorCondition::ItemNotFound);
        let r = error_reply(&iq(), &err, true).expect("not an error stanza");
        let names: Vec<_> = r.children().map(Element::name).collect();
        assert_eq!(names, ["query", "error"]);
    }

    #[test]
    fn no_error_in_reply_to_an_error() {
        let mut e = iq();
        e.set_attr("type", "error");
        let err = StanzaError::new(StanzaErrorCondition::BadRequest);
        assert!(error_reply(&e, &err, false).is_none());
    }

    #[test]
    fn bad_jid_is_jid_malformed() {
        let e: StanzaError = jid::Jid::new("@example.com")
            .expect_err("empty localpart")
            .into();
        assert_eq!(e.condition, StanzaErrorCondition::JidMalformed);
        assert_eq!(e.error_type, ErrorType::Modify);
    }

    #[test]
    fn types_and_names() {
        use StanzaErrorCondition as C;
        assert_eq!(C::Forbidden.default_type(), ErrorType::Auth);
        assert_eq!(C::RemoteServerTimeout.default_type(), ErrorType::Wait);
        assert_eq!(
            C::from_name("gone", "xmpp:x@y"),
            Some(C::Gone(Some("xmpp:x@y".into())))
        );
        let text =
            StanzaError::new(C::Redirect(Some("xmpp:a@b".into()))).to_element("jabber:client");
        assert_eq!(
            text.child_text("redirect", ns::XMPP_STANZAS).as_deref(),
            Some("xmpp:a@b")
        );
        for t in ["auth", "cancel", "continue", "modify", "wait"] {
            assert_eq!(ErrorType::from_name(t).map(ErrorType::as_str), Some(t));
        }
    }
}
