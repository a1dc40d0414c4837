//! Hostile input in CI (the cargo-fuzz target does the same at length):
//! random bytes and mutated streams, in random chunkings, never panic, and
//! every stanza that comes out survives a round trip.

use beamline_xmpp::stream::{StreamDecoder, StreamEvent, StreamHeader, StreamLimits};
use beamline_xmpp::{Element, ns};
use proptest::prelude::*;

const SAMPLE: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>\
    <message to='a@b' id='x&amp;y' xml:lang='en'><body>caf\u{e9} &lt;&#x263A;<![CDATA[<c>]]></body>\
    <p:x xmlns:p='urn:p' p:a='1'><p:y/></p:x></message><stream:features/>\
    <iq type='get' id='2'><query xmlns='jabber:iq:roster'/></iq></stream:stream>";

/// Decodes with small limits; checks the round trip of each stanza.
fn run(input: &[u8], chunks: &[usize]) {
    let limits = StreamLimits {
        max_stanza_size: 2048,
        max_stanza_size_unauthenticated: 512,
        max_depth: 8,
        max_attributes: 8,
        max_header_size: 512,
        idle_buffer_capacity: 64,
    };
    let mut dec = StreamDecoder::new(limits);
    let mut content_ns = None;
    let mut rest = input;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().expect("cycle")).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        dec.feed(piece);
        loop {
            match dec.next_event() {
                Ok(Some(StreamEvent::StreamOpen(h))) => content_ns = Some(h.content_ns),
                Ok(Some(StreamEvent::Stanza(el))) => {
                    let ns = content_ns.as_deref().expect("stanza after a header");
                    round_trip(&el, ns);
                }
                Ok(Some(StreamEvent::StreamClose)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = e.stream_error().to_element();
                    return;
                }
            }
        }
    }
}

fn round_trip(el: &Element, content_ns: &str) {
    let mut bytes = Vec::new();
    StreamHeader::new(content_ns.to_owned()).write_to(&mut bytes);
    el.write_in_stream(content_ns, &mut bytes);
    let mut dec = StreamDecoder::new(StreamLimits {
        max_stanza_size: 1 << 20,
        max_attributes: 1 << 10,
        ..StreamLimits::default()
    });
    dec.set_authenticated(true);
    dec.feed(&bytes);
    let mut got = None;
    while let Some(ev) = dec.next_event().expect("our own output decodes") {
        if let StreamEvent::Stanza(e) = ev {
            got = Some(e);
        }
    }
    assert_eq!(got.as_ref(), Some(el));
}

#[derive(Clone, Debug)]
enum Mutation {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(b"<>/!?&;'\"=:[]-# x\n\x00\xff".to_vec()),
        1 => any::<u8>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(
        with_header in any::<bool>(),
        body in prop::collection::vec(interesting_byte(), 0..400),
        chunks in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut input = Vec::new();
        if with_header {
            input.extend_from_slice(SAMPLE.split("<message").next().expect("header").as_bytes());
        }
        input.extend_from_slice(&body);
        run(&input, &chunks);
    }

    #[test]
    fn mutated_streams_never_panic(
        muts in prop::collection::vec(mutation(), 1..6),
        chunks in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut input = SAMPLE.as_bytes().to_vec();
        for m in muts {
            let len = input.len();
            match m {
                Mutation::Insert(i, b) => input.insert(i % (len + 1), b),
                Mutation::Delete(i) if len > 0 => {
                    input.remove(i % len);
                }
                Mutation::Replace(i, b) if len > 0 => input[i % len] = b,
                _ => {}
            }
        }
        run(&input, &chunks);
    }
}

#[test]
fn sample_decodes_whole() {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    dec.feed(SAMPLE.as_bytes());
    let mut n = 0;
    while let Some(ev) = dec.next_event().expect("valid sample") {
        if let StreamEvent::Stanza(el) = &ev {
            round_trip(el, ns::JABBER_CLIENT);
        }
        n += 1;
    }
    assert_eq!(n, 5);
}
