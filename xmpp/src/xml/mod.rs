//! The element tree that stanzas are parsed into, and its serializer.
//!
//! An [`Element`] owns its name, its resolved namespace, its attributes in
//! document order and its child [`Node`]s (elements and text). Text is held
//! unescaped; the serializer escapes it again. Namespace declarations are not
//! attributes: an element carries its namespace, and the serializer writes an
//! `xmlns` only where the namespace differs from the parent's. Prefix
//! declarations (`xmlns:p`) read from the wire are kept as attributes so that
//! prefixed attributes stay bound when the element is written back out.

pub(crate) mod escape;
mod write;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub use escape::{escape_attr, escape_text, is_valid_name};

/// A child of an [`Element`]: another element, or a run of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data, unescaped (entities and character references decoded).
    Text(String),
}

impl Node {
    /// The element, if this node is one.
    pub fn as_element(&self) -> Option<&Element> {
        match self {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        }
    }

    /// The text, if this node is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Node::Element(_) => None,
            Node::Text(t) => Some(t),
        }
    }
}

/// An XML element with its resolved namespace.
///
/// Invariant kept by the parser and by [`Element::append_text`]: no two text
/// nodes are adjacent and no text node is empty, so that a tree serialized
/// and parsed again compares equal. [`Element::nodes_mut`] can break it.
///
/// Cloning is cheap: the data is shared, and copied on the first change
/// of a shared element. A stanza passes through several hook subscribers
/// and may go to several resources; each used to get a deep copy.
#[derive(Clone, PartialEq, Eq)]
pub struct Element(Arc<Data>);

/// What an [`Element`] holds.
#[derive(Clone, PartialEq, Eq)]
struct Data {
    name: String,
    ns: Cow<'static, str>,
    attrs: Vec<(String, String)>,
    nodes: Vec<Node>,
}

impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Element")
            .field("name", &self.0.name)
            .field("ns", &self.0.ns)
            .field("attrs", &self.0.attrs)
            .field("nodes", &self.0.nodes)
            .finish()
    }
}

impl Element {
    /// A new empty element. `name` is the local name (no prefix) and must be
    /// a valid XML name; `ns` its namespace (`""` for none).
    pub fn new(name: impl Into<String>, ns: impl Into<Cow<'static, str>>) -> Self {
        Element(Arc::new(Data {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            nodes: Vec::new(),
        }))
    }

    /// Starts a builder for an element; see [`ElementBuilder`].
    pub fn builder(name: impl Into<String>, ns: impl Into<Cow<'static, str>>) -> ElementBuilder {
        ElementBuilder(Element::new(name, ns))
    }

    /// The data, to change: copied first if another clone shares it.
    fn data(&mut self) -> &mut Data {
        Arc::make_mut(&mut self.0)
    }

    /// The local name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The namespace (`""` when the element is in no namespace).
    pub fn ns(&self) -> &str {
        &self.0.ns
    }

    /// Replaces the namespace (of this element only, not of its children).
    pub fn set_ns(&mut self, ns: impl Into<Cow<'static, str>>) {
        self.data().ns = ns.into();
    }

    /// Whether this element has this local name and namespace.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.0.name == name && self.0.ns == ns
    }

    /// The value of an attribute, by its qualified name as written
    /// (`"to"`, `"xml:lang"`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.0
            .attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The attributes in document order, as (qualified name, unescaped value).
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.attrs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Sets an attribute, replacing its value in place if it exists, else
    /// appending it. `xmlns` is not an attribute (use [`Element::set_ns`])
    /// and the `stream` prefix is the serializer's: it skips both `xmlns`
    /// and `xmlns:stream`.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.data().attrs.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.data().attrs.push((name, value)),
        }
    }

    /// Removes an attribute and returns its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let i = self.0.attrs.iter().position(|(n, _)| n == name)?;
        Some(self.data().attrs.remove(i).1)
    }

    /// All child nodes, elements and text, in document order.
    pub fn nodes(&self) -> &[Node] {
        &self.0.nodes
    }

    /// Mutable access to the child nodes. Keep text nodes non-empty and
    /// non-adjacent if the tree must round-trip to an equal tree.
    pub fn nodes_mut(&mut self) -> &mut Vec<Node> {
        &mut self.data().nodes
    }

    /// The child elements, in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.0.nodes.iter().filter_map(Node::as_element)
    }

    /// The child elements, mutable.
    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.data().nodes.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|e| e.is(name, ns))
    }

    /// The first child element with this name and namespace, mutable.
    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children_mut().find(|e| e.is(name, ns))
    }

    /// Whether a child element with this name and namespace exists.
    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    /// Removes the first child element with this name and namespace.
    pub fn remove_child(&mut self, name: &str, ns: &str) -> Option<Element> {
        let i = self
            .0
            .nodes
            .iter()
            .position(|n| n.as_element().is_some_and(|e| e.is(name, ns)))?;
        match self.data().nodes.remove(i) {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        }
    }

    /// Appends a child element and returns it for further changes.
    pub fn append_child(&mut self, child: Element) -> &mut Element {
        self.data().nodes.push(Node::Element(child));
        match self.data().nodes.last_mut() {
            Some(Node::Element(e)) => e,
            // Just pushed an element; kept total without a panic path.
            _ => unreachable_element(),
        }
    }

    /// Appends text, merging it into a preceding text node; empty text is
    /// ignored (both keep the round-trip invariant).
    pub fn append_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        match self.data().nodes.last_mut() {
            Some(Node::Text(t)) => t.push_str(text),
            _ => self.data().nodes.push(Node::Text(text.to_owned())),
        }
    }

    /// The concatenation of the direct text children (not of descendants).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.0.nodes {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// The text of the first child element with this name and namespace
    /// (e.g. a message's `body`).
    pub fn child_text(&self, name: &str, ns: &str) -> Option<String> {
        self.get_child(name, ns).map(Element::text)
    }

    /// Writes the element as a standalone document fragment: the root always
    /// declares its namespace.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write::write_element(self, out, None, false);
    }

    /// Writes the element as a top-level child of a stream whose content
    /// namespace is `content_ns` (`jabber:client`, ...): the root's `xmlns`
    /// is left out when it equals `content_ns`, and elements of the stream
    /// namespace use the `stream:` prefix bound by the stream header.
    pub fn write_in_stream(&self, content_ns: &str, out: &mut Vec<u8>) {
        write::write_element(self, out, Some(content_ns), true);
    }

    /// The standalone serialization ([`Element::write_to`]) as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_to(&mut out);
        out
    }

    /// Parses one element serialized by [`Element::to_bytes`] (or any
    /// standalone element in the `jabber:client` default namespace), e.g.
    /// a stanza kept in storage. `None` if `bytes` does not hold exactly
    /// one complete, well-formed element. Limits: `bytes.len()` in size,
    /// depth 64.
    pub fn parse(bytes: &[u8]) -> Option<Element> {
        use crate::stream::{StreamDecoder, StreamEvent, StreamLimits};
        let limits = StreamLimits {
            max_stanza_size: bytes.len() + 1,
            max_stanza_size_unauthenticated: bytes.len() + 1,
            max_depth: 64,
            max_attributes: 1024,
            ..StreamLimits::default()
        };
        let mut dec = StreamDecoder::new(limits);
        dec.set_authenticated(true);
        dec.feed(
            b"<stream:stream xmlns='jabber:client' \
              xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        );
        dec.feed(bytes);
        let mut found = None;
        loop {
            match dec.next_event() {
                Ok(Some(StreamEvent::StreamOpen(_))) => {}
                Ok(Some(StreamEvent::Stanza(el))) if found.is_none() => found = Some(el),
                Ok(None) => return found,
                _ => return None,
            }
        }
    }

    /// An element as the parser builds it: attributes already checked.
    pub(crate) fn from_parsed(
        name: String,
        ns: Cow<'static, str>,
        attrs: Vec<(String, String)>,
    ) -> Self {
        Element(Arc::new(Data {
            name,
            ns,
            attrs,
            nodes: Vec::new(),
        }))
    }
}

// Unreachable by construction; a function so that the match arm above is an
// expression without `unreachable!` (which clippy treats as a panic path).
#[cold]
fn unreachable_element() -> ! {
    unreachable!("append_child pushed an element")
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        // The serializer only ever writes UTF-8.
        f.write_str(&String::from_utf8_lossy(&bytes))
    }
}

/// Builds an [`Element`] by chaining:
/// `Element::builder("message", ns::JABBER_CLIENT).attr("to", "a@b").append(body).build()`.
#[derive(Clone, Debug)]
#[must_use]
pub struct ElementBuilder(Element);

impl ElementBuilder {
    /// Sets an attribute (see [`Element::set_attr`]).
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.set_attr(name, value);
        self
    }

    /// Sets an attribute when `value` is `Some`.
    pub fn attr_opt(self, name: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    /// Appends a child element.
    pub fn append(mut self, child: Element) -> Self {
        self.0.append_child(child);
        self
    }

    /// Appends every element of `children`.
    pub fn append_all(mut self, children: impl IntoIterator<Item = Element>) -> Self {
        for c in children {
            self.0.append_child(c);
        }
        self
    }

    /// Appends text (see [`Element::append_text`]).
    pub fn text(mut self, text: &str) -> Self {
        self.0.append_text(text);
        self
    }

    /// The finished element.
    pub fn build(self) -> Element {
        self.0
    }
}

impl From<ElementBuilder> for Element {
    fn from(b: ElementBuilder) -> Element {
        b.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns;

    fn sample() -> Element {
        Element::builder("message", ns::JABBER_CLIENT)
            .attr("to", "juliet@example.com")
            .attr("type", "chat")
            .append(
                Element::builder("body", ns::JABBER_CLIENT)
                    .text("hi & <bye>")
                    .build(),
            )
            .append(Element::new("active", ns::CHATSTATES))
            .build()
    }

    #[test]
    fn accessors() {
        let m = sample();
        assert_eq!(m.attr("to"), Some("juliet@example.com"));
        assert_eq!(m.attr("from"), None);
        assert_eq!(
            m.child_text("body", ns::JABBER_CLIENT).as_deref(),
            Some("hi & <bye>")
        );
        assert!(m.has_child("active", ns::CHATSTATES));
        assert!(!m.has_child("active", ns::JABBER_CLIENT));
        assert_eq!(m.children().count(), 2);
    }

    #[test]
    fn set_attr_replaces_in_place() {
        let mut m = sample();
        m.set_attr("to", "romeo@example.net");
        assert_eq!(m.attrs().next(), Some(("to", "romeo@example.net")));
        assert_eq!(m.remove_attr("type").as_deref(), Some("chat"));
        assert_eq!(m.attrs().count(), 1);
    }

    #[test]
    fn text_merges_and_ignores_empty() {
        let mut e = Element::new("body", "");
        e.append_text("a");
        e.append_text("");
        e.append_text("b");
        assert_eq!(e.nodes(), &[Node::Text("ab".into())]);
    }

    #[test]
    fn serializes_with_xmlns_only_where_it_changes() {
        let m = sample();
        assert_eq!(
            m.to_string(),
            "<message xmlns='jabber:client' to='juliet@example.com' type='chat'>\
             <body>hi &amp; &lt;bye&gt;</body>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        );
        let mut out = Vec::new();
        m.write_in_stream(ns::JABBER_CLIENT, &mut out);
        assert!(out.starts_with(b"<message to="));
    }

    #[test]
    fn stream_namespace_uses_the_stream_prefix() {
        let f = Element::builder("features", ns::STREAM)
            .append(Element::new("starttls", ns::TLS))
            .build();
        let mut out = Vec::new();
        f.write_in_stream(ns::JABBER_CLIENT, &mut out);
        assert_eq!(
            out,
            b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>"
        );
        assert_eq!(
            f.to_string(),
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
             <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>"
        );
    }

    #[test]
    fn escapes_attribute_values() {
        let e = Element::builder("x", "urn:x")
            .attr("a", "'\"&<>\t\n\r")
            .build();
        assert_eq!(
            e.to_string(),
            "<x xmlns='urn:x' a='&apos;&quot;&amp;&lt;&gt;&#x9;&#xA;&#xD;'/>"
        );
    }

    #[test]
    fn no_namespace_child_undeclares_default() {
        let e = Element::builder("x", "urn:x")
            .append(Element::new("y", ""))
            .build();
        assert_eq!(e.to_string(), "<x xmlns='urn:x'><y xmlns=''/></x>");
    }
}

#[cfg(test)]
mod parse_tests {
    use super::Element;

    #[test]
    fn parse_reads_back_what_to_bytes_wrote() {
        let el = Element::builder("message", crate::ns::JABBER_CLIENT)
            .attr("to", "a@b")
            .append(
                Element::builder("body", crate::ns::JABBER_CLIENT)
                    .text("1 < 2 & 3")
                    .build(),
            )
            .build();
        assert_eq!(Element::parse(&el.to_bytes()), Some(el));
    }

    #[test]
    fn parse_refuses_anything_but_one_whole_element() {
        assert!(Element::parse(b"<a><b></a>").is_none());
        assert!(Element::parse(b"<a>").is_none());
        assert!(Element::parse(b"<a/><b/>").is_none());
        assert!(Element::parse(b"").is_none());
    }
}
