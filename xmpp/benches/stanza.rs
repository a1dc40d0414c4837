//! Cost of one typical message stanza (~300 bytes) through the stream
//! codec, against raw quick-xml event reading of the same bytes.
//!
//! `cargo bench -p beamline-xmpp --bench stanza`; figures in
//! `docs/xml-stream.md`.

use std::hint::black_box;

use beamline_xmpp::ns;
use beamline_xmpp::stream::{StreamDecoder, StreamEvent, StreamLimits};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quick_xml::events::Event;
use quick_xml::reader::Reader;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

const MESSAGE: &str = "<message from='juliet@example.com/balcony' to='romeo@example.net' \
    type='chat' id='5f1d3c2a-8b7e-4c1d-9a2b'><body>Wherefore art thou, Romeo? Deny thy \
    father &amp; refuse thy name.</body><active xmlns='http://jabber.org/protocol/chatstates'/>\
    <request xmlns='urn:xmpp:receipts'/><origin-id xmlns='urn:xmpp:sid:0' \
    id='de305d54-75b4-431b-adb2'/></message>";

fn open_decoder() -> StreamDecoder {
    let mut dec = StreamDecoder::new(StreamLimits::default());
    dec.set_authenticated(true);
    dec.feed(HEADER);
    match dec.next_event() {
        Ok(Some(StreamEvent::StreamOpen(_))) => dec,
        other => panic!("header not accepted: {other:?}"),
    }
}

fn decode_one(dec: &mut StreamDecoder, bytes: &[u8]) -> beamline_xmpp::Element {
    dec.feed(bytes);
    match dec.next_event() {
        Ok(Some(StreamEvent::Stanza(el))) => el,
        other => panic!("stanza not decoded: {other:?}"),
    }
}

fn stanza(c: &mut Criterion) {
    let bytes = MESSAGE.as_bytes();
    let mut g = c.benchmark_group(format!("message_{}B", bytes.len()));
    g.throughput(Throughput::Elements(1));

    g.bench_function("quick_xml_raw_events", |b| {
        b.iter(|| {
            let mut r = Reader::from_str(black_box(MESSAGE));
            let mut n = 0usize;
            loop {
                match r.read_event() {
                    Ok(Event::Eof) => break,
                    Ok(ev) => {
                        black_box(&ev);
                        n += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            n
        })
    });

    let mut dec = open_decoder();
    g.bench_function("decode", |b| {
        b.iter(|| decode_one(&mut dec, black_box(bytes)))
    });

    let el = decode_one(&mut open_decoder(), bytes);
    let mut out = Vec::with_capacity(512);
    g.bench_function("serialize", |b| {
        b.iter(|| {
            out.clear();
            black_box(&el).write_in_stream(ns::JABBER_CLIENT, &mut out);
            out.len()
        })
    });

    let mut dec = open_decoder();
    g.bench_function("decode_serialize", |b| {
        b.iter(|| {
            let el = decode_one(&mut dec, black_box(bytes));
            out.clear();
            el.write_in_stream(ns::JABBER_CLIENT, &mut out);
            out.len()
        })
    });

    // The same stanza delivered in 64-byte reads, as from a small socket buffer.
    let mut dec = open_decoder();
    g.bench_function("decode_in_64B_chunks", |b| {
        b.iter(|| {
            let mut got = None;
            for chunk in bytes.chunks(64) {
                dec.feed(chunk);
                if let Ok(Some(StreamEvent::Stanza(el))) = dec.next_event() {
                    got = Some(el);
                }
            }
            got.expect("stanza decoded")
        })
    });
    g.finish();

    // Many stanzas in one read.
    let batch: Vec<u8> = bytes.repeat(100);
    let mut g = c.benchmark_group("batch_100_messages");
    g.throughput(Throughput::Elements(100));
    let mut dec = open_decoder();
    dec.feed(&[]);
    g.bench_function("decode", |b| {
        b.iter(|| {
            dec.feed(black_box(&batch));
            let mut n = 0;
            while let Ok(Some(StreamEvent::Stanza(el))) = dec.next_event() {
                black_box(el);
                n += 1;
            }
            assert_eq!(n, 100);
        })
    });
    g.finish();
}

criterion_group!(benches, stanza);
criterion_main!(benches);
