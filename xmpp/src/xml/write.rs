//! Serialization of an element tree to bytes.

use super::escape::{escape_attr, escape_text};
use super::{Element, Node};
use crate::ns;

/// Writes `el`. `parent_default` is the default namespace in scope (`None`
/// when nothing is in scope, as for a standalone fragment);
/// `stream_prefix_bound` says whether `stream:` is already declared.
pub(super) fn write_element(
    el: &Element,
    out: &mut Vec<u8>,
    parent_default: Option<&str>,
    stream_prefix_bound: bool,
) {
    let ns = el.ns();
    // Elements of the stream namespace take the `stream:` prefix, as peers
    // expect `<stream:features/>`, `<stream:error/>`; the default namespace
    // in scope for their children stays what it was.
    let is_stream = ns == ns::STREAM;
    out.push(b'<');
    if is_stream {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(el.name().as_bytes());
    // A fragment written alone must bind `stream` itself where it is first
    // used, by the element name or by an attribute.
    let declare_stream =
        !stream_prefix_bound && (is_stream || el.attrs().any(|(n, _)| n.starts_with("stream:")));
    if declare_stream {
        out.extend_from_slice(b" xmlns:stream='");
        out.extend_from_slice(ns::STREAM.as_bytes());
        out.push(b'\'');
    }
    let child_default = if is_stream {
        parent_default
    } else {
        if parent_default != Some(ns) {
            out.extend_from_slice(b" xmlns='");
            escape_attr(ns, out);
            out.push(b'\'');
        }
        Some(ns)
    };
    for (name, value) in el.attrs() {
        // The namespace is written from `ns`; a stray `xmlns` attribute
        // would contradict it.
        // `stream` is bound by the stream header, or above for a fragment.
        if name == "xmlns" || name == "xmlns:stream" {
            continue;
        }
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        escape_attr(value, out);
        out.push(b'\'');
    }
    if el.nodes().is_empty() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    let bound = stream_prefix_bound || declare_stream;
    for node in el.nodes() {
        match node {
            Node::Element(child) => write_element(child, out, child_default, bound),
            Node::Text(t) => escape_text(t, out),
        }
    }
    out.extend_from_slice(b"</");
    if is_stream {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(el.name().as_bytes());
    out.push(b'>');
}
