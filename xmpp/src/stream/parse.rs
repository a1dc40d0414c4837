//! Parsing of the pieces the scanner cuts: the XML declaration, the stream
//! header, and one complete top-level element, each with quick-xml's
//! synchronous reader over the whole slice.

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::escape::EscapeError;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::reader::Reader;

use super::error::{DecodeError, Restricted};
use super::{StreamHeader, StreamLimits};
use crate::ns;
use crate::xml::escape::{has_forbidden_chars, is_xml_char};
use crate::xml::{Element, Node, is_valid_name};

/// What stanzas inherit from the stream header.
#[derive(Debug)]
pub(super) struct StreamContext {
    /// The header's qualified name, which the close tag must repeat.
    qname: String,
    /// The content namespace.
    default_ns: Cow<'static, str>,
    /// Every prefix the header declares.
    prefixes: Vec<(String, Cow<'static, str>)>,
}

impl StreamContext {
    pub(super) fn qname(&self) -> &str {
        &self.qname
    }
}

/// UTF-8 and XML character checks on a cut piece.
fn as_xml_str(bytes: &[u8]) -> Result<&str, DecodeError> {
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if has_forbidden_chars(bytes) {
        return Err(DecodeError::Malformed("character not allowed in XML"));
    }
    Ok(s)
}

/// A reader with the checks we rely on: end names must match, empty
/// elements stay `Empty`, text is not trimmed.
fn reader(s: &str) -> Reader<&[u8]> {
    let mut r = Reader::from_str(s);
    let c = r.config_mut();
    c.check_end_names = true;
    c.expand_empty_elements = false;
    c.trim_text(false);
    c.allow_dangling_amp = false;
    c.allow_unmatched_ends = false;
    r
}

fn restricted(ev: &Event<'_>) -> Option<DecodeError> {
    match ev {
        Event::Comment(_) => Some(DecodeError::Restricted(Restricted::Comment)),
        Event::PI(_) | Event::Decl(_) => {
            Some(DecodeError::Restricted(Restricted::ProcessingInstruction))
        }
        Event::DocType(_) => Some(DecodeError::Restricted(Restricted::Doctype)),
        _ => None,
    }
}

/// Checks `<?xml version='1.0' encoding='UTF-8'?>`.
pub(super) fn xml_declaration(bytes: &[u8]) -> Result<(), DecodeError> {
    let s = as_xml_str(bytes)?;
    let mut r = reader(s);
    match r.read_event()? {
        Event::Decl(d) => {
            if d.version()? != "1.0" {
                return Err(DecodeError::BadFormat("XML version other than 1.0"));
            }
            if let Some(enc) = d.encoding() {
                let enc = enc.map_err(quick_xml::Error::InvalidAttr)?;
                if !enc.eq_ignore_ascii_case("utf-8") {
                    return Err(DecodeError::UnsupportedEncoding(enc.into_owned()));
                }
            }
            Ok(())
        }
        // `<?xml-stylesheet ...?>` and the like.
        _ => Err(DecodeError::Restricted(Restricted::ProcessingInstruction)),
    }
}

/// The five predefined entities; nothing else is ever expanded.
fn predefined(name: &str) -> Option<&'static str> {
    Some(match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        _ => return None,
    })
}

/// An attribute's value: references resolved, whitespace normalized as XML
/// 1.0 requires, and checked.
fn attr_value<'a>(a: &Attribute<'a>) -> Result<Cow<'a, str>, DecodeError> {
    if a.value.contains('<') {
        return Err(DecodeError::Malformed("'<' in an attribute value"));
    }
    let v = a
        .normalized_value_with(XmlVersion::Implicit1_0, 1, predefined)
        .map_err(|e| match e {
            quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(_, name)) => {
                DecodeError::UndefinedEntity(name)
            }
            other => DecodeError::Syntax(other),
        })?;
    // Character references can produce what the raw bytes could not hold.
    if matches!(v, Cow::Owned(_)) && !v.chars().all(is_xml_char) {
        return Err(DecodeError::Malformed(
            "character reference to a forbidden character",
        ));
    }
    Ok(v)
}

fn check_prefix_declaration(prefix: &str, uri: &str) -> Result<(), DecodeError> {
    let ok = match prefix {
        "xmlns" => false,
        "xml" => uri == ns::XML,
        _ => !uri.is_empty() && uri != ns::XML && uri != ns::XMLNS,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::BadNamespacePrefix(prefix.to_owned()))
    }
}

/// Parses the `<stream:stream ...>` start tag.
pub(super) fn stream_header(
    bytes: &[u8],
    limits: &StreamLimits,
) -> Result<(StreamHeader, StreamContext), DecodeError> {
    let s = as_xml_str(bytes)?;
    let mut r = reader(s);
    let start = match r.read_event()? {
        Event::Start(e) => e,
        ev => {
            return Err(
                restricted(&ev).unwrap_or(DecodeError::Malformed("expected a stream header"))
            );
        }
    };
    let qname = start.name().0;
    if !is_valid_name(qname) {
        return Err(DecodeError::Malformed("invalid element name"));
    }
    let mut header = StreamHeader::new(Cow::Borrowed(""));
    let mut default_ns: Option<Cow<'static, str>> = None;
    let mut prefixes: Vec<(String, Cow<'static, str>)> = Vec::new();
    let mut attrs: Vec<(String, String)> = Vec::new();
    for (i, a) in start.attributes().enumerate() {
        let a = a.map_err(quick_xml::Error::InvalidAttr)?;
        if i >= limits.max_attributes {
            return Err(DecodeError::TooManyAttributes {
                limit: limits.max_attributes,
            });
        }
        let key = a.key.0;
        if !is_valid_name(key) {
            return Err(DecodeError::Malformed("invalid attribute name"));
        }
        let value = attr_value(&a)?;
        if key == "xmlns" {
            default_ns = Some(ns::intern(&value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            check_prefix_declaration(p, &value)?;
            prefixes.push((p.to_owned(), ns::intern(&value)));
        } else {
            attrs.push((key.to_owned(), value.into_owned()));
        }
    }
    let bound = |p: &str| p == "xml" || prefixes.iter().any(|(q, _)| q == p);
    for (key, value) in attrs {
        if let Some((p, _)) = key.split_once(':')
            && !bound(p)
        {
            return Err(DecodeError::BadNamespacePrefix(p.to_owned()));
        }
        match key.as_str() {
            "to" => header.to = Some(value),
            "from" => header.from = Some(value),
            "id" => header.id = Some(value),
            "version" => header.version = Some(value),
            "xml:lang" => header.lang = Some(value),
            _ => header.extra.push((key, value)),
        }
    }
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, qname),
    };
    let element_ns = match prefix {
        Some(p) => prefixes
            .iter()
            .find(|(q, _)| q == p)
            .map(|(_, u)| u.clone())
            .ok_or_else(|| DecodeError::BadNamespacePrefix(p.to_owned()))?,
        None => default_ns.clone().unwrap_or(Cow::Borrowed("")),
    };
    if element_ns != ns::STREAM {
        return Err(DecodeError::InvalidNamespace(format!(
            "stream element in {element_ns:?}, not {}",
            ns::STREAM
        )));
    }
    if local != "stream" {
        return Err(DecodeError::BadFormat("root element is not <stream>"));
    }
    let content_ns = match default_ns {
        Some(d) if [ns::JABBER_CLIENT, ns::JABBER_SERVER, ns::COMPONENT_ACCEPT].contains(&&*d) => d,
        Some(d) => {
            return Err(DecodeError::InvalidNamespace(format!(
                "content namespace {d:?}"
            )));
        }
        None => {
            return Err(DecodeError::InvalidNamespace(
                "no content namespace".to_owned(),
            ));
        }
    };
    header.content_ns = content_ns.clone();
    header.stream_prefix = prefix.unwrap_or_default().to_owned();
    header.prefixes = prefixes
        .iter()
        .filter(|(p, u)| Some(p.as_str()) != prefix || u != ns::STREAM)
        .map(|(p, u)| (p.clone(), u.to_string()))
        .collect();
    let ctx = StreamContext {
        qname: qname.to_owned(),
        default_ns: content_ns,
        prefixes,
    };
    Ok((header, ctx))
}

/// Namespace bindings of the open elements of one stanza, innermost last,
/// over those of the stream header.
struct Scope<'c> {
    ctx: &'c StreamContext,
    /// (prefix, namespace); `""` is the default namespace.
    stack: Vec<(String, Cow<'static, str>)>,
}

impl Scope<'_> {
    fn resolve(&self, prefix: &str) -> Option<Cow<'static, str>> {
        if let Some((_, u)) = self
            .stack
            .iter()
            .rev()
            // Lengths first, and never a memcmp of two empty strings: on
            // the dangling pointer of `String::new()` the masked load of
            // glibc's AVX-512 memcmp takes a slow microcode assist, which
            // cost 12% of decoding before this.
            .find(|(p, _)| p.len() == prefix.len() && (prefix.is_empty() || p == prefix))
        {
            return Some(u.clone());
        }
        if prefix.is_empty() {
            return Some(self.ctx.default_ns.clone());
        }
        if prefix == "xml" {
            return Some(Cow::Borrowed(ns::XML));
        }
        self.ctx
            .prefixes
            .iter()
            .find(|(q, _)| q == prefix)
            .map(|(_, u)| u.clone())
    }

    fn bound_in_stanza(&self, prefix: &str) -> bool {
        self.stack.iter().any(|(p, _)| p == prefix)
    }
}

/// Builds the element of a start tag, pushing its declarations on `scope`.
fn start_element(
    e: &BytesStart<'_>,
    scope: &mut Scope<'_>,
    limits: &StreamLimits,
) -> Result<Element, DecodeError> {
    let qname = e.name().0;
    if !is_valid_name(qname) {
        return Err(DecodeError::Malformed("invalid element name"));
    }
    let mut attrs: Vec<(String, String)> = Vec::new();
    for (i, a) in e.attributes().enumerate() {
        let a = a.map_err(quick_xml::Error::InvalidAttr)?;
        if i >= limits.max_attributes {
            return Err(DecodeError::TooManyAttributes {
                limit: limits.max_attributes,
            });
        }
        let key = a.key.0;
        if !is_valid_name(key) {
            return Err(DecodeError::Malformed("invalid attribute name"));
        }
        let value = attr_value(&a)?;
        if key == "xmlns" {
            scope.stack.push((String::new(), ns::intern(&value)));
            continue;
        }
        if let Some(p) = key.strip_prefix("xmlns:") {
            check_prefix_declaration(p, &value)?;
            if p == "stream" {
                // The serializer owns the `stream` prefix (bound by every
                // header we write), so it may only be bound to the stream
                // namespace, and the declaration is not kept.
                if value != ns::STREAM {
                    return Err(DecodeError::BadNamespacePrefix(p.to_owned()));
                }
                scope.stack.push((p.to_owned(), Cow::Borrowed(ns::STREAM)));
                continue;
            }
            scope.stack.push((p.to_owned(), ns::intern(&value)));
        }
        // Prefix declarations stay as attributes, so that prefixed
        // attributes remain bound when the element is written out again.
        attrs.push((key.to_owned(), value.into_owned()));
    }
    let mut inherited: Vec<(String, String)> = Vec::new();
    for (key, _) in &attrs {
        let Some((p, _)) = key.split_once(':') else {
            continue;
        };
        // `stream` is the serializer's to declare.
        if p == "xmlns" || p == "xml" || p == "stream" || scope.bound_in_stanza(p) {
            continue;
        }
        // Bound by the stream header only: declare it on the element, so
        // that the element stands alone when routed elsewhere.
        match scope.resolve(p) {
            Some(u) => {
                let decl = format!("xmlns:{p}");
                if !inherited.iter().any(|(k, _)| *k == decl) {
                    inherited.push((decl, u.into_owned()));
                }
            }
            None => return Err(DecodeError::BadNamespacePrefix(p.to_owned())),
        }
    }
    attrs.extend(inherited);
    let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
    if prefix == "xmlns" {
        return Err(DecodeError::BadNamespacePrefix(prefix.to_owned()));
    }
    let element_ns = scope
        .resolve(prefix)
        .ok_or_else(|| DecodeError::BadNamespacePrefix(prefix.to_owned()))?;
    Ok(Element::from_parsed(local.to_owned(), element_ns, attrs))
}

fn push_reference(el: &mut Element, r: &BytesRef<'_>) -> Result<(), DecodeError> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => {
                el.append_text(c.encode_utf8(&mut [0; 4]));
                Ok(())
            }
            _ => Err(DecodeError::Malformed("invalid character reference")),
        };
    }
    match predefined(r) {
        Some(t) => {
            el.append_text(t);
            Ok(())
        }
        None => Err(DecodeError::UndefinedEntity(r.to_string())),
    }
}

/// The root closed: it must end where the scanner's cut ends, or the two
/// disagree about the markup and the input is not what it seems.
fn whole(r: &Reader<&[u8]>, s: &str, el: Element) -> Result<Element, DecodeError> {
    if r.buffer_position() == s.len() as u64 {
        Ok(el)
    } else {
        Err(DecodeError::Malformed("element ends before its end tag"))
    }
}

/// Parses one complete top-level element (the scanner guarantees `bytes`
/// holds exactly one, with no comment, PI or DTD).
pub(super) fn element(
    bytes: &[u8],
    ctx: &StreamContext,
    limits: &StreamLimits,
) -> Result<Element, DecodeError> {
    let s = as_xml_str(bytes)?;
    let mut r = reader(s);
    let mut scope = Scope {
        ctx,
        stack: Vec::new(),
    };
    // Open elements, each with the scope depth to restore when it closes.
    let mut open: Vec<(Element, usize)> = Vec::new();
    loop {
        match r.read_event()? {
            Event::Start(e) => {
                let mark = scope.stack.len();
                let el = start_element(&e, &mut scope, limits)?;
                open.push((el, mark));
            }
            Event::Empty(e) => {
                let mark = scope.stack.len();
                let el = start_element(&e, &mut scope, limits)?;
                scope.stack.truncate(mark);
                match open.last_mut() {
                    Some((parent, _)) => parent.nodes_mut().push(Node::Element(el)),
                    None => return whole(&r, s, el),
                }
            }
            Event::End(_) => {
                let (el, mark) = open
                    .pop()
                    .ok_or(DecodeError::Malformed("unexpected end tag"))?;
                scope.stack.truncate(mark);
                match open.last_mut() {
                    Some((parent, _)) => parent.nodes_mut().push(Node::Element(el)),
                    None => return whole(&r, s, el),
                }
            }
            Event::Text(t) => {
                if let Some((el, _)) = open.last_mut() {
                    el.append_text(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some((el, _)) = open.last_mut() {
                    el.append_text(&t.xml10_content());
                }
            }
            Event::GeneralRef(g) => match open.last_mut() {
                Some((el, _)) => push_reference(el, &g)?,
                None => return Err(DecodeError::Malformed("reference outside an element")),
            },
            Event::Eof => return Err(DecodeError::Malformed("element not closed")),
            ev => {
                return Err(restricted(&ev).unwrap_or(DecodeError::Malformed("unexpected markup")));
            }
        }
    }
}
