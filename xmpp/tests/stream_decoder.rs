//! The stream decoder against RFC 6120 streams: events, namespaces,
//! chunking, restarts, limits, and the exact stream error for each bad input.

use beamline_xmpp::stream::{StreamDecoder, StreamEvent, StreamHeader, StreamLimits};
use beamline_xmpp::{DecodeError, Element, Node, StreamErrorCondition as C, ns};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' \
    from='juliet@example.com' version='1.0' xml:lang='en'>";

/// Feeds `input` in chunks of `chunk` bytes, draining after each; stops at
/// the first error.
fn decode_chunked(
    dec: &mut StreamDecoder,
    input: &[u8],
    chunk: usize,
) -> (Vec<StreamEvent>, Option<DecodeError>) {
    let mut events = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        dec.feed(piece);
        loop {
            match dec.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

fn decode(input: &str) -> (Vec<StreamEvent>, Option<DecodeError>) {
    decode_chunked(
        &mut StreamDecoder::new(StreamLimits::default()),
        input.as_bytes(),
        usize::MAX,
    )
}

fn stanzas(events: &[StreamEvent]) -> Vec<&Element> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Stanza(el) => Some(el),
            _ => None,
        })
        .collect()
}

/// The condition the input fails with, `None` if it does not fail.
fn condition_of(input: &str) -> Option<C> {
    decode(input).1.map(|e| e.condition())
}

fn in_stream(body: &str) -> String {
    format!("{HEADER}{body}")
}

#[test]
fn header_attributes_and_namespaces() {
    let (events, err) = decode(HEADER);
    assert!(err.is_none(), "{err:?}");
    let StreamEvent::StreamOpen(h) = &events[0] else {
        panic!("expected a header, got {events:?}");
    };
    assert_eq!(h.to.as_deref(), Some("example.com"));
    assert_eq!(h.from.as_deref(), Some("juliet@example.com"));
    assert_eq!(h.id, None);
    assert_eq!(h.version.as_deref(), Some("1.0"));
    assert_eq!(h.lang.as_deref(), Some("en"));
    assert_eq!(h.content_ns, ns::JABBER_CLIENT);
    assert_eq!(h.stream_prefix, "stream");
    assert!(h.prefixes.is_empty());
}

#[test]
fn written_header_decodes_to_the_same_fields() {
    let mut h = StreamHeader::new(ns::JABBER_SERVER);
    h.from = Some("example.com".into());
    h.id = Some("s'1&".into());
    h.version = Some("1.0".into());
    h.lang = Some("fr".into());
    h.prefixes.push(("db".into(), ns::DIALBACK.into()));
    let mut out = Vec::new();
    h.write_to(&mut out);
    let (events, err) = decode(std::str::from_utf8(&out).expect("utf-8"));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events, vec![StreamEvent::StreamOpen(h)]);
}

#[test]
fn stanzas_get_resolved_namespaces() {
    let input = in_stream(
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
         </stream:features>\
         <message to='romeo@example.net' xml:lang='fr'><body>salut</body>\
         <x xmlns='urn:example:x'><y/></x></message>\
         <iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let (events, err) = decode(&input);
    assert!(err.is_none(), "{err:?}");
    let s = stanzas(&events);
    assert_eq!(s.len(), 3);
    assert!(s[0].is("features", ns::STREAM));
    let tls = s[0].get_child("starttls", ns::TLS).expect("starttls");
    assert!(
        tls.has_child("required", ns::TLS),
        "children inherit the default namespace"
    );
    assert!(s[1].is("message", ns::JABBER_CLIENT));
    assert_eq!(s[1].attr("xml:lang"), Some("fr"));
    assert_eq!(
        s[1].child_text("body", ns::JABBER_CLIENT).as_deref(),
        Some("salut")
    );
    let x = s[1].get_child("x", "urn:example:x").expect("x");
    assert!(x.has_child("y", "urn:example:x"));
    assert!(s[2].get_child("ping", ns::PING).is_some());
}

#[test]
fn prefixed_elements_and_attributes() {
    let input = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
        xmlns:db='jabber:server:dialback' version='1.0'>\
        <db:result from='a.example' to='b.example' db:x='1'>key</db:result>\
        <p:q xmlns:p='urn:p' p:a='v'><p:r/></p:q><q stream:a='1'/>";
    let (events, err) = decode(input);
    assert!(err.is_none(), "{err:?}");
    let StreamEvent::StreamOpen(h) = &events[0] else {
        panic!("no header");
    };
    assert_eq!(h.content_ns, ns::JABBER_SERVER);
    assert_eq!(h.prefixes, vec![("db".to_owned(), ns::DIALBACK.to_owned())]);
    let s = stanzas(&events);
    assert!(s[0].is("result", ns::DIALBACK));
    assert_eq!(s[0].text(), "key");
    // The header's binding is copied onto the element so it stands alone.
    assert_eq!(s[0].attr("xmlns:db"), Some(ns::DIALBACK));
    assert!(s[1].is("q", "urn:p"));
    assert_eq!(s[1].attr("p:a"), Some("v"));
    assert!(s[1].has_child("r", "urn:p"));
    assert_eq!(s[2].attr("stream:a"), Some("1"));
    assert_eq!(
        s[2].to_string(),
        "<q xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server' stream:a='1'/>"
    );
    // Written out alone and decoded again inside a client stream: equal.
    let mut again = String::from(HEADER);
    for el in &s {
        again.push_str(&el.to_string());
    }
    let (events2, err) = decode(&again);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(stanzas(&events2), s);
}

#[test]
fn entities_and_character_references_are_decoded() {
    let input = in_stream(
        "<message id='a&amp;b&#x3C;&apos;&quot;'><body>x &lt; y &amp;&amp; z &gt; w &#9731;&#x1F600;\
         <![CDATA[<raw> & stuff]]></body></message>",
    );
    let (events, err) = decode(&input);
    assert!(err.is_none(), "{err:?}");
    let m = stanzas(&events)[0];
    assert_eq!(m.attr("id"), Some("a&b<'\""));
    let body = m.get_child("body", ns::JABBER_CLIENT).expect("body");
    // Pieces (text, references, CDATA) are merged into one text node.
    assert_eq!(
        body.nodes(),
        &[Node::Text(
            "x < y && z > w \u{2603}\u{1F600}<raw> & stuff".into()
        )]
    );
}

#[test]
fn whitespace_handling() {
    let input = in_stream("\n \t <message>\r\n <body a='x\ty\r\nz'>a\r\nb\rc</body></message>\n\n");
    let (events, err) = decode(&input);
    assert!(err.is_none(), "{err:?}");
    let m = stanzas(&events)[0];
    let body = m.get_child("body", ns::JABBER_CLIENT).expect("body");
    // End-of-line normalization in text, attribute-value normalization.
    assert_eq!(body.text(), "a\nb\nc");
    assert_eq!(body.attr("a"), Some("x y z"));
    assert_eq!(m.nodes()[0], Node::Text("\n ".into()));
}

#[test]
fn many_stanzas_in_one_chunk_and_close() {
    let mut input = String::from(HEADER);
    for i in 0..50 {
        input.push_str(&format!("<message id='m{i}'><body>{i}</body></message> "));
    }
    input.push_str("</stream:stream>");
    let (events, err) = decode(&input);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.len(), 52);
    assert_eq!(events.last(), Some(&StreamEvent::StreamClose));
    let s = stanzas(&events);
    assert_eq!(s[49].attr("id"), Some("m49"));
}

#[test]
fn split_at_every_byte() {
    let input = in_stream(
        "<message to='a@b' id='x&amp;y'><body>caf\u{e9} &lt;&#x263A;<![CDATA[]]>]]></body>\
         <thread>t</thread></message><stream:features/> <iq type='get' id='2'/></stream:stream>",
    );
    let bytes = input.as_bytes();
    let (expected, err) = decode(&input);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(expected.len(), 5);
    for i in 0..=bytes.len() {
        let mut dec = StreamDecoder::new(StreamLimits::default());
        let mut events = Vec::new();
        for part in [&bytes[..i], &bytes[i..]] {
            dec.feed(part);
            while let Some(ev) = dec.next_event().expect("no error") {
                events.push(ev);
            }
        }
        assert_eq!(events, expected, "split at {i}");
    }
    let (one_by_one, err) =
        decode_chunked(&mut StreamDecoder::new(StreamLimits::default()), bytes, 1);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(one_by_one, expected);
}

#[test]
fn reset_after_starttls_discards_buffered_input() {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    let (events, err) = decode_chunked(
        &mut dec,
        in_stream("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message>injected")
            .as_bytes(),
        usize::MAX,
    );
    assert!(err.is_none());
    assert_eq!(events.len(), 2);
    dec.reset();
    assert_eq!(dec.buffered_len(), 0);
    let (events, err) = decode_chunked(
        &mut dec,
        in_stream("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>").as_bytes(),
        7,
    );
    assert!(err.is_none(), "{err:?}");
    assert!(matches!(events[0], StreamEvent::StreamOpen(_)));
    assert!(stanzas(&events)[0].is("auth", ns::SASL));
}

#[test]
fn reset_keep_input_after_sasl_success_keeps_a_pipelined_header() {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    let input = format!(
        "{}{}<iq type='set' id='b'/>",
        in_stream(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
        ),
        HEADER
    );
    dec.feed(input.as_bytes());
    assert!(matches!(
        dec.next_event(),
        Ok(Some(StreamEvent::StreamOpen(_)))
    ));
    let Ok(Some(StreamEvent::Stanza(auth))) = dec.next_event() else {
        panic!("auth expected");
    };
    assert_eq!(auth.text(), "AGEAYg==");
    // The server sends <success/>, authenticates, restarts.
    dec.set_authenticated(true);
    dec.reset_keep_input();
    assert!(matches!(
        dec.next_event(),
        Ok(Some(StreamEvent::StreamOpen(_)))
    ));
    let Ok(Some(StreamEvent::Stanza(iq))) = dec.next_event() else {
        panic!("iq expected");
    };
    assert_eq!(iq.attr("id"), Some("b"));
    assert!(dec.is_authenticated());
}

#[test]
fn whitespace_before_the_declaration_of_a_restarted_stream() {
    // go-xmpp (go-sendxmpp) ends `</auth>` with a newline; after <success/>
    // that newline is still buffered, before the new stream's declaration,
    // or it arrives after the restart.
    let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>";
    for (before, after) in [("\n", ""), ("", "\n"), ("\r\n ", " \n")] {
        let mut dec = StreamDecoder::new(StreamLimits::default());
        dec.feed(format!("{}{before}", in_stream(auth)).as_bytes());
        assert!(matches!(
            dec.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        // As the server does: no read past <auth/> before the restart.
        assert!(matches!(dec.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
        dec.set_authenticated(true);
        dec.reset_keep_input();
        let (events, err) = decode_chunked(&mut dec, format!("{after}{HEADER}").as_bytes(), 3);
        assert!(err.is_none(), "{before:?} {after:?}: {err:?}");
        assert!(
            matches!(events[..], [StreamEvent::StreamOpen(_)]),
            "{events:?}"
        );
    }
    // Still only whitespace, and still only before the first header.
    let mut dec = StreamDecoder::new(StreamLimits::default());
    dec.feed(in_stream(auth).as_bytes());
    while let Ok(Some(_)) = dec.next_event() {}
    dec.reset_keep_input();
    let (_, err) = decode(&format!("x{HEADER}"));
    assert!(err.is_some());
    let (_, err) = decode_chunked(&mut dec, format!("<a/>{HEADER}").as_bytes(), usize::MAX);
    assert!(err.is_some());
}

#[test]
fn idle_decoder_is_small() {
    // The struct itself, before any input: no heap at all.
    let dec = StreamDecoder::new(StreamLimits::default());
    assert_eq!(dec.buffer_capacity(), 0);
    println!(
        "size_of::<StreamDecoder>() = {}",
        std::mem::size_of::<StreamDecoder>()
    );
    assert!(std::mem::size_of::<StreamDecoder>() <= 256);
}

#[test]
fn debug_output_does_not_show_buffered_input() {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    dec.feed(in_stream("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>c2VjcmV0").as_bytes());
    while dec.next_event().expect("ok").is_some() {}
    let shown = format!("{dec:?}");
    assert!(
        !shown.contains("c2VjcmV0") && !shown.contains("99, 50"),
        "{shown}"
    );
    assert!(shown.contains("buffered_len"));
}

#[test]
fn whitespace_keepalives_are_not_buffered() {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    decode_chunked(&mut dec, HEADER.as_bytes(), usize::MAX);
    for _ in 0..1000 {
        dec.feed(b" \n");
        assert_eq!(dec.next_event().expect("ok"), None);
    }
    assert_eq!(dec.buffered_len(), 0);
}

#[test]
fn partial_stanza_costs_its_bytes_and_buffer_shrinks_after() {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    dec.set_authenticated(true);
    decode_chunked(&mut dec, HEADER.as_bytes(), usize::MAX);
    let big = format!("<message><body>{}</body></message>", "x".repeat(60_000));
    let (head, tail) = big.as_bytes().split_at(30_000);
    for piece in head.chunks(1000) {
        dec.feed(piece);
        assert_eq!(dec.next_event().expect("ok"), None);
    }
    assert_eq!(dec.buffered_len(), 30_000);
    assert!(dec.buffer_capacity() < 2 * 30_000 + 1000);
    dec.feed(tail);
    let Some(StreamEvent::Stanza(m)) = dec.next_event().expect("ok") else {
        panic!("message expected");
    };
    assert_eq!(
        m.child_text("body", ns::JABBER_CLIENT).map(|b| b.len()),
        Some(60_000)
    );
    assert_eq!(dec.next_event().expect("ok"), None);
    assert_eq!(dec.buffered_len(), 0);
    // Everything consumed: an idle stream holds no input buffer at all.
    assert_eq!(dec.buffer_capacity(), 0);
}

#[test]
fn idle_stream_keeps_no_buffer_but_a_partial_stanza_keeps_its_bytes() {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    dec.set_authenticated(true);
    decode_chunked(&mut dec, HEADER.as_bytes(), usize::MAX);
    dec.feed(b"<message><body>hi</body></message><presence");
    assert!(matches!(
        dec.next_event().expect("ok"),
        Some(StreamEvent::Stanza(_))
    ));
    assert_eq!(dec.next_event().expect("ok"), None);
    assert_eq!(dec.buffered_len(), "<presence".len());
    assert!(dec.buffer_capacity() > 0);
    dec.feed(b"/>");
    assert!(matches!(
        dec.next_event().expect("ok"),
        Some(StreamEvent::Stanza(_))
    ));
    assert_eq!(dec.next_event().expect("ok"), None);
    assert_eq!(dec.buffer_capacity(), 0);
}

#[test]
fn events_after_close_or_error_are_none() {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    let (events, err) = decode_chunked(
        &mut dec,
        in_stream("</stream:stream><message/>").as_bytes(),
        3,
    );
    assert!(err.is_none());
    assert_eq!(events.last(), Some(&StreamEvent::StreamClose));
    assert!(dec.is_closed());
    dec.feed(b"<iq/>");
    assert_eq!(dec.next_event().expect("closed"), None);

    let mut dec = StreamDecoder::new(StreamLimits::default());
    let (_, err) = decode_chunked(&mut dec, in_stream("<a><!-- x --></a>").as_bytes(), 4);
    assert_eq!(err.map(|e| e.condition()), Some(C::RestrictedXml));
    dec.feed(b"<iq/>");
    assert_eq!(dec.next_event().expect("failed"), None);
    assert_eq!(dec.buffer_capacity(), 0);
}

// ---- the exact error for each bad input ----

#[test]
fn dtd_is_restricted_xml() {
    assert_eq!(
        condition_of("<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY a 'b'>]><stream:stream/>"),
        Some(C::RestrictedXml)
    );
    assert_eq!(
        condition_of(&in_stream("<message><!DOCTYPE x></message>")),
        Some(C::RestrictedXml)
    );
}

#[test]
fn processing_instructions_are_restricted_xml() {
    assert_eq!(
        condition_of(&in_stream("<?php echo 1; ?>")),
        Some(C::RestrictedXml)
    );
    assert_eq!(
        condition_of(&in_stream("<message><?x y?></message>")),
        Some(C::RestrictedXml)
    );
    assert_eq!(
        condition_of("<?xml-stylesheet href='x'?><stream:stream/>"),
        Some(C::RestrictedXml)
    );
    // A second declaration, or one after whitespace, is a PI too.
    assert_eq!(
        condition_of(&format!("<?xml version='1.0'?>{HEADER}")),
        Some(C::RestrictedXml)
    );
    assert_eq!(condition_of(&format!(" {HEADER}")), Some(C::RestrictedXml));
    // The declaration alone is fine, and optional.
    assert_eq!(condition_of(HEADER), None);
    assert_eq!(
        condition_of(HEADER.trim_start_matches("<?xml version='1.0'?>")),
        None
    );
}

#[test]
fn comments_are_restricted_xml() {
    assert_eq!(
        condition_of("<!-- hi --><stream:stream/>"),
        Some(C::RestrictedXml)
    );
    assert_eq!(
        condition_of(&in_stream("<!-- hi -->")),
        Some(C::RestrictedXml)
    );
    assert_eq!(
        condition_of(&in_stream("<message><body><!--x--></body></message>")),
        Some(C::RestrictedXml)
    );
}

#[test]
fn undefined_entities_are_not_well_formed() {
    assert_eq!(
        condition_of(&in_stream("<message><body>&lol;</body></message>")),
        Some(C::NotWellFormed)
    );
    assert_eq!(
        condition_of(&in_stream("<message id='&lol;'/>")),
        Some(C::NotWellFormed)
    );
    assert_eq!(
        condition_of(&in_stream("<message><body>&nbsp;</body></message>")),
        Some(C::NotWellFormed)
    );
    let (_, err) = decode(&in_stream("<message><body>&lol;</body></message>"));
    assert!(
        matches!(err, Some(DecodeError::UndefinedEntity(ref n)) if n == "lol"),
        "{err:?}"
    );
}

#[test]
fn bad_references_and_characters_are_not_well_formed() {
    for body in [
        "&#0;", "&#1;", "&#xFFFE;", "&#xD800;", "&amp", "& x", "\u{1}",
    ] {
        let input = in_stream(&format!("<message><body>{body}</body></message>"));
        assert_eq!(condition_of(&input), Some(C::NotWellFormed), "{body:?}");
    }
    let mut bad_utf8 = in_stream("<message><body>").into_bytes();
    bad_utf8.extend_from_slice(b"\xff\xfe</body></message>");
    let (_, err) = decode_chunked(
        &mut StreamDecoder::new(StreamLimits::default()),
        &bad_utf8,
        usize::MAX,
    );
    assert_eq!(err.map(|e| e.condition()), Some(C::NotWellFormed));
}

#[test]
fn malformed_xml_is_not_well_formed() {
    for body in [
        "<message></iq>",
        "<message><body></message></body>",
        "<message id=x/>",
        "<message id='1' id='2'/>",
        "<message id='<'/>",
        "<1message/>",
        "<message a b/>",
        "<message><![CDAX[x]]></message>",
        "<message><!ELEMENT x></message>",
        "</stream:features>",
    ] {
        assert_eq!(
            condition_of(&in_stream(body)),
            Some(C::NotWellFormed),
            "{body}"
        );
    }
    assert_eq!(condition_of("hello"), Some(C::NotWellFormed));
    assert_eq!(condition_of("</stream:stream>"), Some(C::NotWellFormed));
    assert_eq!(
        condition_of(&in_stream("</stream>")),
        Some(C::NotWellFormed)
    );
}

#[test]
fn oversized_stanza_is_policy_violation() {
    let limits = StreamLimits::default();
    let big = |n: usize| {
        in_stream(&format!(
            "<message><body>{}</body></message>",
            "a".repeat(n)
        ))
    };
    // Before authentication: 10 KiB.
    assert_eq!(
        condition_of(&big(limits.max_stanza_size_unauthenticated)),
        Some(C::PolicyViolation)
    );
    assert_eq!(
        condition_of(&big(limits.max_stanza_size_unauthenticated - 100)),
        None
    );
    // After: 64 KiB.
    let mut dec = StreamDecoder::new(limits.clone());
    dec.set_authenticated(true);
    let (_, err) = decode_chunked(&mut dec, big(60_000).as_bytes(), 4096);
    assert!(err.is_none(), "{err:?}");
    let mut dec = StreamDecoder::new(limits.clone());
    dec.set_authenticated(true);
    let (_, err) = decode_chunked(&mut dec, big(limits.max_stanza_size).as_bytes(), 4096);
    assert!(
        matches!(err, Some(DecodeError::StanzaTooLarge { limit: 65_536 })),
        "{err:?}"
    );
}

#[test]
fn size_limit_applies_before_the_stanza_ends() {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    decode_chunked(&mut dec, HEADER.as_bytes(), usize::MAX);
    dec.feed(b"<message><body>");
    assert_eq!(dec.next_event().expect("ok"), None);
    let mut err = None;
    for _ in 0..20 {
        dec.feed(&[b'a'; 1024]);
        if let Err(e) = dec.next_event() {
            err = Some(e);
            break;
        }
    }
    assert!(
        matches!(err, Some(DecodeError::StanzaTooLarge { limit: 10_240 })),
        "{err:?}"
    );
    // Also inside a start tag that never ends.
    let mut dec = StreamDecoder::new(StreamLimits::default());
    let (_, err) = decode_chunked(
        &mut dec,
        in_stream(&format!("<message a='{}", "b".repeat(20_000))).as_bytes(),
        1000,
    );
    assert_eq!(err.map(|e| e.condition()), Some(C::PolicyViolation));
}

#[test]
fn oversized_header_is_policy_violation() {
    let header = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        "a".repeat(5000)
    );
    assert_eq!(condition_of(&header), Some(C::PolicyViolation));
    assert_eq!(condition_of(&" ".repeat(5000)), Some(C::PolicyViolation));
}

#[test]
fn too_deep_is_policy_violation() {
    let nest = |n: usize| in_stream(&format!("{}{}", "<a>".repeat(n), "</a>".repeat(n)));
    assert_eq!(condition_of(&nest(32)), None);
    assert_eq!(condition_of(&nest(33)), Some(C::PolicyViolation));
    // An empty element at the 33rd level, too.
    let deep_empty = in_stream(&format!("{}<b/>{}", "<a>".repeat(32), "</a>".repeat(32)));
    let (_, err) = decode(&deep_empty);
    assert!(
        matches!(err, Some(DecodeError::TooDeep { limit: 32 })),
        "{err:?}"
    );
}

#[test]
fn too_many_attributes_is_policy_violation() {
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}='v'")).collect::<String>();
    assert_eq!(
        condition_of(&in_stream(&format!("<message{}/>", attrs(64)))),
        None
    );
    assert_eq!(
        condition_of(&in_stream(&format!("<message{}/>", attrs(65)))),
        Some(C::PolicyViolation)
    );
    assert_eq!(
        condition_of(&in_stream(&format!(
            "<message><body{}/></message>",
            attrs(65)
        ))),
        Some(C::PolicyViolation)
    );
    let header = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'{}>",
        attrs(63)
    );
    assert_eq!(condition_of(&header), Some(C::PolicyViolation));
}

#[test]
fn wrong_stream_namespace_is_invalid_namespace() {
    assert_eq!(
        condition_of(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://example.com/streams'>"
        ),
        Some(C::InvalidNamespace)
    );
    assert_eq!(
        condition_of("<stream xmlns='http://etherx.jabber.org/streams'>"),
        Some(C::InvalidNamespace)
    );
    assert_eq!(
        condition_of(
            "<stream:stream xmlns='urn:nope' xmlns:stream='http://etherx.jabber.org/streams'>"
        ),
        Some(C::InvalidNamespace)
    );
    assert_eq!(
        condition_of("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"),
        Some(C::InvalidNamespace)
    );
    // Another prefix is accepted (RFC 6120 §4.8.5 lets us), and its close tag must match.
    let other = "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'>\
        <s:features/></s:stream>";
    let (events, err) = decode(other);
    assert!(err.is_none(), "{err:?}");
    assert!(stanzas(&events)[0].is("features", ns::STREAM));
    assert_eq!(events.last(), Some(&StreamEvent::StreamClose));
    assert_eq!(
        condition_of(
            "<stream:foo xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ),
        Some(C::BadFormat)
    );
}

#[test]
fn unbound_prefix_is_bad_namespace_prefix() {
    assert_eq!(
        condition_of(&in_stream("<foo:message/>")),
        Some(C::BadNamespacePrefix)
    );
    assert_eq!(
        condition_of(&in_stream("<message foo:a='1'/>")),
        Some(C::BadNamespacePrefix)
    );
    assert_eq!(
        condition_of(&in_stream("<message xmlns:xml='urn:x'/>")),
        Some(C::BadNamespacePrefix)
    );
    assert_eq!(
        condition_of(&in_stream("<message xmlns:p=''/>")),
        Some(C::BadNamespacePrefix)
    );
    assert_eq!(
        condition_of(&in_stream("<message xmlns:stream='urn:not-streams'/>")),
        Some(C::BadNamespacePrefix)
    );
    assert_eq!(
        condition_of("<stream:stream xmlns='jabber:client'>"),
        Some(C::BadNamespacePrefix)
    );
    // A prefix bound on an ancestor is not bound on the sibling after it.
    assert_eq!(
        condition_of(&in_stream("<m><a xmlns:p='urn:p'/><p:b/></m>")),
        Some(C::BadNamespacePrefix)
    );
}

#[test]
fn character_data_at_stream_level_is_bad_format() {
    assert_eq!(condition_of(&in_stream("hello")), Some(C::BadFormat));
    assert_eq!(
        condition_of(&in_stream("<![CDATA[x]]>")),
        Some(C::BadFormat)
    );
    assert_eq!(condition_of(&in_stream("&amp;")), Some(C::BadFormat));
}

#[test]
fn non_utf8_declaration_is_unsupported_encoding() {
    assert_eq!(
        condition_of("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream/>"),
        Some(C::UnsupportedEncoding)
    );
    assert_eq!(
        condition_of(&HEADER.replace("version='1.0'?>", "version='1.0' encoding='utf-8'?>")),
        None
    );
}

#[test]
fn decode_error_becomes_a_stream_error() {
    let (_, err) = decode(&in_stream("<a><!-- x --></a>"));
    let se = err.expect("error").stream_error();
    assert_eq!(se.condition, C::RestrictedXml);
    let mut out = Vec::new();
    se.write_to(ns::JABBER_CLIENT, &mut out);
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.starts_with(
        "<stream:error><restricted-xml xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text"
    ));
}
