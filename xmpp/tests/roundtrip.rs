//! Property: any element tree, serialized and fed back through the decoder
//! in arbitrary chunk sizes, parses to an equal tree.

use beamline_xmpp::stream::{StreamDecoder, StreamEvent, StreamLimits};
use beamline_xmpp::{Element, ns};
use proptest::prelude::*;

const HEADER: &str = "<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

fn xml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        // Weight the characters that need escaping or normalization.
        4 => prop::sample::select(vec!['&', '<', '>', '"', '\'', '\t', '\n', '\r', ' ', ';', '#', ']']),
        4 => prop::char::range('a', 'z'),
        2 => any::<char>().prop_filter("XML 1.0 Char", |c| {
            matches!(*c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        }),
    ]
}

fn xml_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(xml_char(), 0..max).prop_map(|v| v.into_iter().collect())
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_.-]{0,6}".prop_filter("not xmlns", |n| n != "xmlns")
}

fn namespace() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        ns::JABBER_CLIENT,
        ns::STREAM,
        ns::CHATSTATES,
        "urn:example:a",
        "urn:example:b?x=&<'\"",
        "",
    ])
    .prop_map(str::to_owned)
}

fn attrs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop_oneof![4 => name(), 1 => Just("xml:lang".to_owned())],
            xml_string(12),
        ),
        0..5,
    )
}

#[derive(Clone, Debug)]
enum Child {
    El(Element),
    Text(String),
}

fn leaf() -> impl Strategy<Value = Element> {
    (name(), namespace(), attrs()).prop_map(|(n, ns, attrs)| {
        let mut e = Element::new(n, ns);
        for (k, v) in attrs {
            e.set_attr(k, v);
        }
        e
    })
}

fn tree() -> impl Strategy<Value = Element> {
    leaf().prop_recursive(6, 48, 6, |inner| {
        (
            leaf(),
            prop::collection::vec(
                prop_oneof![
                    inner.prop_map(Child::El),
                    xml_string(16).prop_map(Child::Text)
                ],
                0..6,
            ),
        )
            .prop_map(|(mut e, children)| {
                for c in children {
                    match c {
                        Child::El(el) => {
                            e.append_child(el);
                        }
                        // Merges with a preceding text and drops empty text,
                        // as the parser's output does.
                        Child::Text(t) => e.append_text(&t),
                    }
                }
                e
            })
    })
}

fn decode_all(input: &[u8], chunks: &[usize]) -> Vec<Element> {
    let limits = StreamLimits {
        max_stanza_size: 1 << 24,
        ..StreamLimits::default()
    };
    let mut dec = StreamDecoder::new(limits);
    dec.set_authenticated(true);
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().expect("non-empty cycle")).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        dec.feed(piece);
        while let Some(ev) = dec.next_event().expect("decodes") {
            if let StreamEvent::Stanza(el) = ev {
                out.push(el);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn serialize_then_parse_is_identity(
        el in tree(),
        chunks in prop::collection::vec(1usize..40, 1..20),
    ) {
        // In-stream form and standalone form, back to back.
        let mut input = HEADER.as_bytes().to_vec();
        el.write_in_stream(ns::JABBER_CLIENT, &mut input);
        el.write_to(&mut input);
        let got = decode_all(&input, &chunks);
        prop_assert_eq!(got.len(), 2);
        prop_assert_eq!(&got[0], &el);
        prop_assert_eq!(&got[1], &el);
    }
}
