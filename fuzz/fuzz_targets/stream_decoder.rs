//! Arbitrary bytes in arbitrary chunkings through the stream decoder: it
//! must never panic, and every stanza it yields must survive a
//! serialize-and-decode round trip unchanged.
//!
//! `cargo +nightly fuzz run stream_decoder` from `/work/main/fuzz`.

#![no_main]

use beamline_xmpp::Element;
use beamline_xmpp::stream::{StreamDecoder, StreamEvent, StreamHeader, StreamLimits};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    // Small limits, so that the limit paths are reached too.
    let limits = StreamLimits {
        max_stanza_size: 2048,
        max_stanza_size_unauthenticated: 512,
        max_depth: 8,
        max_attributes: 8,
        max_header_size: 512,
        idle_buffer_capacity: 64,
    };
    let mut dec = StreamDecoder::new(limits);
    // Half the inputs start inside an open stream, to reach stanza parsing.
    let mut input = Vec::with_capacity(rest.len() + HEADER.len());
    if control & 1 == 1 {
        input.extend_from_slice(HEADER);
    }
    input.extend_from_slice(rest);
    let mut seed = u32::from(control) | 1;
    let mut content_ns = None;
    let mut pos = 0;
    while pos < input.len() {
        // A tiny xorshift picks each chunk size in 1..=64.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (1 + (seed % 64) as usize).min(input.len() - pos);
        dec.feed(&input[pos..pos + n]);
        pos += n;
        loop {
            match dec.next_event() {
                Ok(Some(StreamEvent::StreamOpen(h))) => content_ns = Some(h.content_ns),
                Ok(Some(StreamEvent::Stanza(el))) => {
                    if let Some(ns) = &content_ns {
                        check_round_trip(&el, ns);
                    }
                    if el.name() == "success" {
                        dec.set_authenticated(true);
                        dec.reset_keep_input();
                    } else if el.name() == "proceed" {
                        dec.reset();
                    }
                }
                Ok(Some(StreamEvent::StreamClose)) => {}
                Ok(None) => break,
                Err(e) => {
                    // Every error maps to a stream error that serializes.
                    let mut out = Vec::new();
                    e.stream_error().write_to("jabber:client", &mut out);
                    return;
                }
            }
        }
    }
});

fn check_round_trip(el: &Element, content_ns: &str) {
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
    assert_eq!(got.as_ref(), Some(el), "round trip of {}", el);
}
