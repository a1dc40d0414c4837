//! The client against a scripted fake server over `tokio::io::duplex`: the
//! server side runs the crate's own decoder, SASL state machine and TLS
//! acceptor, and records what the client sent.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::sasl::{
    ChannelBinding, SaslConfig, ScramCredential, ServerSession, Step, account_credentials,
    advertised_mechanisms, channel_binding_element, decode_payload, encode_payload,
    mechanisms_element,
};
use crate::stream::{StreamDecoder, StreamEvent, StreamHeader, write_stream_close};
use crate::stream_error::StreamErrorCondition;
use crate::tls::ServerCertificates;

const DOMAIN: &str = "example.com";
const T: Duration = Duration::from_secs(5);

/// A self-signed certificate for `example.com`, made once: (server
/// certificates, the DER certificate).
fn certs() -> &'static (
    ServerCertificates,
    rustls::pki_types::CertificateDer<'static>,
) {
    static C: OnceLock<(
        ServerCertificates,
        rustls::pki_types::CertificateDer<'static>,
    )> = OnceLock::new();
    C.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cp = dir.path().join("c.pem");
        let kp = dir.path().join("k.pem");
        std::fs::write(&cp, cert.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        let ck = crate::tls::load_certified_key(&cp, &kp).unwrap();
        (
            ServerCertificates::from_keys([], Some(ck)),
            cert.der().clone(),
        )
    })
}

fn stored() -> &'static Vec<ScramCredential> {
    static S: OnceLock<Vec<ScramCredential>> = OnceLock::new();
    S.get_or_init(|| account_credentials("s3cret", 64).unwrap())
}

/// How the fake server behaves.
#[derive(Clone)]
struct Script {
    /// Offer (and require) STARTTLS.
    starttls: bool,
    /// TLS from the first byte.
    direct_tls: bool,
    /// Also offer PLAIN.
    plain: bool,
    /// Offer only these mechanisms (else what `advertised_mechanisms` says).
    only: Option<Vec<Mechanism>>,
    /// Advertise the legacy session: `Some(optional)`.
    session: Option<bool>,
    /// Corrupt SCRAM's server signature.
    bad_signature: bool,
    /// After bind, what to do with the client's stanzas.
    after: After,
}

#[derive(Clone, Copy, PartialEq)]
enum After {
    /// Answer messages with a message back, IQs with a message then the
    /// result; close when the client closes.
    Echo,
    /// Send a stream error at once.
    StreamError,
    /// Close the stream at once.
    Close,
    /// Drop the connection at once.
    Drop,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            starttls: true,
            direct_tls: false,
            plain: false,
            only: None,
            session: None,
            bad_signature: false,
            after: After::Echo,
        }
    }
}

struct Fake {
    io: Box<dyn Transport>,
    dec: StreamDecoder,
    cb: ChannelBinding,
    got: Vec<Element>,
}

impl Fake {
    async fn event(&mut self) -> Option<StreamEvent> {
        loop {
            if let Some(ev) = self.dec.next_event().unwrap() {
                if let StreamEvent::Stanza(el) = &ev {
                    self.got.push(el.clone());
                }
                return Some(ev);
            }
            let mut buf = [0u8; 4096];
            let n = self.io.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            self.dec.feed(&buf[..n]);
        }
    }

    async fn element(&mut self) -> Element {
        match self.event().await {
            Some(StreamEvent::Stanza(el)) => el,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    async fn send(&mut self, el: &Element) {
        let mut out = Vec::new();
        el.write_in_stream(ns::JABBER_CLIENT, &mut out);
        self.write(&out).await;
    }

    /// Reads the client's header and answers with ours and `features`.
    async fn open(&mut self, features: Element) {
        match self.event().await {
            Some(StreamEvent::StreamOpen(h)) => {
                assert_eq!(h.to.as_deref(), Some(DOMAIN));
                assert_eq!(h.version.as_deref(), Some("1.0"));
            }
            other => panic!("expected a header, got {other:?}"),
        }
        let mut h = StreamHeader::new(ns::JABBER_CLIENT);
        h.from = Some(DOMAIN.to_owned());
        h.id = Some("s1d".to_owned());
        h.version = Some("1.0".to_owned());
        h.lang = Some("en".to_owned());
        let mut out = Vec::new();
        h.write_to(&mut out);
        Element::builder("features", ns::STREAM)
            .append_all(features.children().cloned())
            .build()
            .write_in_stream(ns::JABBER_CLIENT, &mut out);
        self.write(&out).await;
    }

    async fn tls(&mut self) {
        let (certs, _) = certs();
        let acceptor = certs.acceptor(crate::tls::TlsMode::StartTls).unwrap();
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        let tls = acceptor.accept(io).await.unwrap();
        self.cb = certs.stream_channel_binding(&tls);
        self.io = Box::new(tls);
        self.dec.reset();
    }
}

fn features(children: Vec<Element>) -> Element {
    Element::builder("features", ns::STREAM)
        .append_all(children)
        .build()
}

/// Runs the script on the server end; returns every element the client
/// sent.
async fn serve(io: DuplexStream, s: Script) -> Vec<Element> {
    let mut f = Fake {
        io: Box::new(io),
        dec: StreamDecoder::new(StreamLimits::default()),
        cb: ChannelBinding::none(),
        got: Vec::new(),
    };
    if s.direct_tls {
        f.tls().await;
    }
    if s.starttls {
        f.open(features(vec![
            Element::builder("starttls", ns::TLS)
                .append(Element::new("required", ns::TLS))
                .build(),
        ]))
        .await;
        let el = f.element().await;
        assert!(el.is("starttls", ns::TLS));
        f.send(&Element::new("proceed", ns::TLS)).await;
        f.tls().await;
    }
    let mechs = s
        .only
        .clone()
        .unwrap_or_else(|| advertised_mechanisms(&f.cb, s.plain));
    let mut fs = vec![mechanisms_element(&mechs)];
    fs.extend(channel_binding_element(&f.cb));
    f.open(features(fs)).await;

    // SASL
    let config = SaslConfig::new(DOMAIN, [1; 32]);
    let auth = f.element().await;
    assert!(auth.is("auth", ns::SASL));
    let m = Mechanism::from_name(auth.attr("mechanism").unwrap()).unwrap();
    let mut server = ServerSession::new(m, f.cb.clone(), &config).unwrap();
    let mut step = server.step(&decode_payload(&auth.text()).unwrap());
    loop {
        match step {
            Ok(Step::NeedCredentials { .. }) => step = server.provide(Some(stored())),
            Ok(Step::Challenge(c)) => {
                let el = Element::builder("challenge", ns::SASL)
                    .text(&encode_payload(&c))
                    .build();
                f.send(&el).await;
                let resp = f.element().await;
                if resp.is("abort", ns::SASL) {
                    return f.got;
                }
                assert!(resp.is("response", ns::SASL));
                step = server.step(&decode_payload(&resp.text()).unwrap());
            }
            Ok(Step::Success {
                additional_data, ..
            }) => {
                let mut data = additional_data.unwrap_or_default();
                if s.bad_signature {
                    data = b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_vec();
                }
                let mut b = Element::builder("success", ns::SASL);
                if !data.is_empty() {
                    b = b.text(&encode_payload(&data));
                }
                f.send(&b.build()).await;
                break;
            }
            Err(e) => {
                f.send(&e.condition().failure_element(Some("nope"))).await;
                // The client gives up; read until it goes.
                while f.event().await.is_some() {}
                return f.got;
            }
        }
    }
    if s.bad_signature {
        while f.event().await.is_some() {}
        return f.got;
    }
    f.dec.reset_keep_input();
    f.dec.set_authenticated(true);
    let mut fs = vec![Element::new("bind", ns::BIND)];
    if let Some(optional) = s.session {
        let mut b = Element::builder("session", ns::SESSION);
        if optional {
            b = b.append(Element::new("optional", ns::SESSION));
        }
        fs.push(b.build());
    }
    f.open(features(fs)).await;

    // Bind
    let iq = f.element().await;
    let resource = iq
        .get_child("bind", ns::BIND)
        .and_then(|b| b.child_text("resource", ns::BIND))
        .unwrap_or_else(|| "gen-42".to_owned());
    let jid = format!("juliet@{DOMAIN}/{resource}");
    let reply = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "result")
        .attr("id", iq.attr("id").unwrap())
        .append(
            Element::builder("bind", ns::BIND)
                .append(Element::builder("jid", ns::BIND).text(&jid).build())
                .build(),
        )
        .build();
    f.send(&reply).await;

    match s.after {
        After::Echo => {}
        After::StreamError => {
            let mut out = Vec::new();
            StreamError::new(StreamErrorCondition::PolicyViolation)
                .with_text("too big", Some("en"))
                .write_to(ns::JABBER_CLIENT, &mut out);
            write_stream_close(&mut out);
            f.write(&out).await;
            while f.event().await.is_some() {}
            return f.got;
        }
        After::Close => {
            let mut out = Vec::new();
            write_stream_close(&mut out);
            f.write(&out).await;
            while f.event().await.is_some() {}
            return f.got;
        }
        After::Drop => return f.got,
    }
    while let Some(ev) = f.event().await {
        match ev {
            StreamEvent::Stanza(el) if el.name() == "message" => {
                let body = el.child_text("body", ns::JABBER_CLIENT).unwrap_or_default();
                let back = Element::builder("message", ns::JABBER_CLIENT)
                    .attr("from", "romeo@example.com/r")
                    .attr("to", jid.clone())
                    .append(
                        Element::builder("body", ns::JABBER_CLIENT)
                            .text(&format!("re: {body}"))
                            .build(),
                    )
                    .build();
                f.send(&back).await;
            }
            StreamEvent::Stanza(el) if el.has_child("session", ns::SESSION) => {
                let r = Element::builder("iq", ns::JABBER_CLIENT)
                    .attr("type", "result")
                    .attr("id", el.attr("id").unwrap())
                    .build();
                f.send(&r).await;
            }
            StreamEvent::Stanza(el) if el.name() == "iq" => {
                // Something else first, then the answer.
                let noise = Element::builder("message", ns::JABBER_CLIENT)
                    .attr("from", "romeo@example.com/r")
                    .append(
                        Element::builder("body", ns::JABBER_CLIENT)
                            .text("meanwhile")
                            .build(),
                    )
                    .build();
                f.send(&noise).await;
                let r = Element::builder("iq", ns::JABBER_CLIENT)
                    .attr("type", "result")
                    .attr("id", el.attr("id").unwrap())
                    .build();
                f.send(&r).await;
            }
            StreamEvent::StreamClose => {
                f.write(b"</stream:stream>").await;
                break;
            }
            _ => {}
        }
    }
    f.got
}

fn config() -> ClientConfig {
    ClientConfig::new(
        "juliet@example.com".parse().unwrap(),
        "s3cret",
        "127.0.0.1:5222".parse().unwrap(),
    )
    .with_trust(TrustMode::AcceptAnyForTests)
}

async fn run(
    s: Script,
    config: ClientConfig,
) -> (
    Result<Client, ClientError>,
    tokio::task::JoinHandle<Vec<Element>>,
) {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let server = tokio::spawn(serve(b, s));
    let c = Client::connect_with_stream(a, config).await;
    (c, server)
}

fn auth_mechanism(got: &[Element]) -> String {
    got.iter()
        .find(|e| e.is("auth", ns::SASL))
        .and_then(|e| e.attr("mechanism"))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn starttls_scram_plus_bind_message_iq_close() {
    let (c, server) = run(Script::default(), config().with_resource("balcony")).await;
    let mut c = c.unwrap();
    assert_eq!(c.jid().to_string(), "juliet@example.com/balcony");
    assert!(c.connection().is_tls());
    assert_eq!(
        c.connection().server_header().and_then(|h| h.id.as_deref()),
        Some("s1d")
    );
    c.send_presence().await.unwrap();
    c.send_message("romeo@example.com", "hello").await.unwrap();
    let m = c.recv_timeout(T).await.unwrap();
    assert_eq!(
        m.child_text("body", ns::JABBER_CLIENT).as_deref(),
        Some("re: hello")
    );
    let reply = c
        .iq(Element::builder("iq", ns::JABBER_CLIENT)
            .attr("type", "get")
            .append(Element::new("ping", ns::PING))
            .build())
        .await
        .unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    // The message that came before the reply is kept.
    let m = c.recv_timeout(T).await.unwrap();
    assert_eq!(
        m.child_text("body", ns::JABBER_CLIENT).as_deref(),
        Some("meanwhile")
    );
    c.close().await.unwrap();
    let got = server.await.unwrap();
    // Default preference: the strongest -PLUS, with tls-exporter (TLS 1.3).
    assert_eq!(auth_mechanism(&got), "SCRAM-SHA-512-PLUS");
    let auth = got.iter().find(|e| e.is("auth", ns::SASL)).unwrap();
    let first = decode_payload(&auth.text()).unwrap();
    assert!(first.starts_with(b"p=tls-exporter,,n=juliet,r="));
    // No session IQ: none was advertised.
    assert!(!got.iter().any(|e| e.has_child("session", ns::SESSION)));
    let bind = got.iter().find(|e| e.has_child("bind", ns::BIND)).unwrap();
    assert_eq!(bind.attr("type"), Some("set"));
}

#[tokio::test]
async fn plain_tcp_scram_without_plus_and_y_flag_not_used() {
    let s = Script {
        starttls: false,
        ..Script::default()
    };
    let (c, server) = run(s, config().with_tls(TlsMode::Plain)).await;
    let c = c.unwrap();
    assert_eq!(c.jid().to_string(), "juliet@example.com/gen-42");
    assert!(!c.connection().is_tls());
    drop(c);
    let got = server.await.unwrap();
    assert_eq!(auth_mechanism(&got), "SCRAM-SHA-512");
    let auth = got.iter().find(|e| e.is("auth", ns::SASL)).unwrap();
    assert!(
        decode_payload(&auth.text())
            .unwrap()
            .starts_with(b"n,,n=juliet,")
    );
}

#[tokio::test]
async fn only_non_plus_offered_over_tls_sends_y() {
    let s = Script {
        only: Some(vec![Mechanism::ScramSha256]),
        ..Script::default()
    };
    // The server has binding data, yet offers no -PLUS: the client says
    // `y`, and this server (which does support binding) takes it as a
    // downgrade, as RFC 5802 §6 wants.
    let (c, server) = run(s, config()).await;
    assert_eq!(c.unwrap_err().sasl_condition(), Some("not-authorized"));
    let got = server.await.unwrap();
    let auth = got.iter().find(|e| e.is("auth", ns::SASL)).unwrap();
    assert!(decode_payload(&auth.text()).unwrap().starts_with(b"y,,"));
}

#[tokio::test]
async fn wrong_password_is_not_authorized() {
    let mut cfg = config();
    cfg.password = "wrong".into();
    let (c, _server) = run(Script::default(), cfg).await;
    let e = c.unwrap_err();
    assert!(
        matches!(&e, ClientError::SaslFailure { condition, text }
            if condition == "not-authorized" && text.as_deref() == Some("nope")),
        "{e:?}"
    );
}

#[tokio::test]
async fn all_scram_hashes_and_plain_when_asked() {
    for m in [
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256Plus,
        Mechanism::Plain,
    ] {
        let s = Script {
            plain: true,
            ..Script::default()
        };
        let (c, server) = run(s, config().with_mechanisms(vec![m])).await;
        let c = c.unwrap_or_else(|e| panic!("{m}: {e}"));
        drop(c);
        assert_eq!(auth_mechanism(&server.await.unwrap()), m.name());
    }
}

#[tokio::test]
async fn plain_is_not_used_unless_asked() {
    let s = Script {
        only: Some(vec![Mechanism::Plain]),
        ..Script::default()
    };
    let (c, _server) = run(s, config()).await;
    assert!(
        matches!(&c, Err(ClientError::NoMechanism { offered }) if offered == &["PLAIN"]),
        "{c:?}"
    );
}

#[tokio::test]
async fn bad_server_signature_is_an_error_and_aborts() {
    let s = Script {
        bad_signature: true,
        ..Script::default()
    };
    let (c, _server) = run(s, config()).await;
    assert!(
        matches!(c, Err(ClientError::Sasl(SaslClientError::ServerSignature))),
        "{c:?}"
    );
}

#[tokio::test]
async fn mandatory_session_is_established_optional_is_not() {
    for optional in [false, true] {
        let s = Script {
            session: Some(optional),
            ..Script::default()
        };
        let (c, server) = run(s, config()).await;
        c.unwrap().close().await.unwrap();
        let got = server.await.unwrap();
        assert_eq!(
            got.iter().any(|e| e.has_child("session", ns::SESSION)),
            !optional
        );
    }
}

#[tokio::test]
async fn stream_error_close_and_eof_after_login() {
    let s = Script {
        after: After::StreamError,
        ..Script::default()
    };
    let (c, _server) = run(s, config()).await;
    let mut c = c.unwrap();
    let e = c.recv_timeout(T).await.unwrap_err();
    let se = e.stream_error().unwrap();
    assert_eq!(se.condition, StreamErrorCondition::PolicyViolation);
    assert_eq!(se.text.as_deref(), Some("too big"));
    assert!(matches!(
        c.recv_timeout(T).await,
        Err(ClientError::StreamClosed)
    ));

    let s = Script {
        after: After::Close,
        ..Script::default()
    };
    let (c, _server) = run(s, config()).await;
    let mut c = c.unwrap();
    assert!(matches!(
        c.recv_timeout(T).await,
        Err(ClientError::StreamClosed)
    ));

    let s = Script {
        after: After::Drop,
        ..Script::default()
    };
    let (c, _server) = run(s, config()).await;
    let mut c = c.unwrap();
    let r = c.recv_timeout(T).await;
    assert!(matches!(r, Err(ClientError::Disconnected)), "{r:?}");
}

#[tokio::test]
async fn recv_timeout_times_out_and_the_client_goes_on() {
    let (c, _server) = run(Script::default(), config()).await;
    let mut c = c.unwrap();
    assert!(matches!(
        c.recv_timeout(Duration::from_millis(50)).await,
        Err(ClientError::Timeout(_))
    ));
    c.send_message("romeo@example.com", "x").await.unwrap();
    assert!(c.recv_timeout(T).await.is_ok());
}

#[tokio::test]
async fn direct_tls_with_pinned_fingerprint_and_roots() {
    let der = certs().1.clone();
    let fp = crate::tls::fingerprint_sha256(&der);
    for trust in [
        TrustMode::fingerprint_hex(&fp).unwrap(),
        TrustMode::Roots(vec![der.clone()]),
    ] {
        let s = Script {
            starttls: false,
            direct_tls: true,
            ..Script::default()
        };
        let cfg = config().with_tls(TlsMode::DirectTls).with_trust(trust);
        let (c, _server) = run(s, cfg).await;
        let c = c.unwrap();
        assert!(c.connection().is_tls());
        assert!(c.connection().channel_binding().is_supported());
    }
}

#[tokio::test]
async fn untrusted_certificate_fails_the_handshake() {
    let (c, _server) = run(
        Script::default(),
        config().with_trust(TrustMode::Fingerprint([0; 32])),
    )
    .await;
    assert!(matches!(c, Err(ClientError::Tls(_))), "{c:?}");
    // Another certificate as the only root: not ours.
    let key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let trust = TrustMode::Roots(vec![other.der().clone()]);
    let (c, _server) = run(Script::default(), config().with_trust(trust)).await;
    assert!(matches!(c, Err(ClientError::Tls(_))), "{c:?}");
    // No trust set at all: a configuration error, before any handshake.
    let (c, _server) = run(Script::default(), config().with_trust(TrustMode::default())).await;
    assert!(matches!(c, Err(ClientError::Config(_))), "{c:?}");
}

#[tokio::test]
async fn starttls_required_by_config_but_not_offered() {
    let s = Script {
        starttls: false,
        ..Script::default()
    };
    let (c, _server) = run(s, config()).await;
    assert!(matches!(c, Err(ClientError::Protocol(_))), "{c:?}");
}

#[tokio::test]
async fn negotiation_times_out_on_a_silent_server() {
    let (a, _b) = tokio::io::duplex(1024);
    let mut cfg = config();
    cfg.step_timeout = Duration::from_millis(50);
    let r = Client::connect_with_stream(a, cfg).await;
    assert!(matches!(r, Err(ClientError::Timeout(_))), "{r:?}");
}

/// A server that answers the header with features and anything it
/// cannot decode with the stream error, then closes.
async fn strict_server(io: DuplexStream) {
    let mut io = io;
    let mut dec = StreamDecoder::new(StreamLimits::default());
    let mut buf = [0u8; 4096];
    loop {
        let n = io.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        dec.feed(&buf[..n]);
        loop {
            match dec.next_event() {
                Ok(Some(StreamEvent::StreamOpen(_))) => {
                    let mut h = StreamHeader::new(ns::JABBER_CLIENT);
                    h.from = Some(DOMAIN.to_owned());
                    h.id = Some("raw1".to_owned());
                    h.version = Some("1.0".to_owned());
                    let mut out = Vec::new();
                    h.write_to(&mut out);
                    features(vec![]).write_in_stream(ns::JABBER_CLIENT, &mut out);
                    io.write_all(&out).await.unwrap();
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    let mut out = Vec::new();
                    e.stream_error().write_to(ns::JABBER_CLIENT, &mut out);
                    write_stream_close(&mut out);
                    io.write_all(&out).await.unwrap();
                    io.shutdown().await.unwrap();
                    return;
                }
            }
        }
    }
}

#[tokio::test]
async fn raw_connection_reads_stream_errors_and_close() {
    let (a, b) = tokio::io::duplex(4096);
    tokio::spawn(strict_server(b));
    let mut raw = RawConnection::from_stream(a);
    raw.open_stream(DOMAIN).await.unwrap();
    let features = raw.read_features(T).await.unwrap();
    assert!(features.is("features", ns::STREAM));
    let h = raw.server_header().unwrap();
    assert_eq!(h.id.as_deref(), Some("raw1"));
    assert_eq!(h.from.as_deref(), Some(DOMAIN));
    raw.send_raw(b"<message><body>&undefined;</body></message>")
        .await
        .unwrap();
    let e = raw.expect_stream_error(T).await.unwrap();
    assert_eq!(e.condition, StreamErrorCondition::NotWellFormed);
    raw.expect_closed(T).await.unwrap();
}

#[tokio::test]
async fn raw_connection_events_one_by_one() {
    let (a, b) = tokio::io::duplex(4096);
    tokio::spawn(strict_server(b));
    let mut raw = RawConnection::from_stream(a);
    raw.open_stream(DOMAIN).await.unwrap();
    assert!(matches!(
        raw.next_event_timeout(T).await.unwrap(),
        StreamEvent::StreamOpen(_)
    ));
    assert!(matches!(
        raw.next_event_timeout(T).await.unwrap(),
        StreamEvent::Stanza(f) if f.is("features", ns::STREAM)
    ));
    raw.send_raw(b"<!-- comment -->").await.unwrap();
    match raw.next_event_timeout(T).await.unwrap() {
        StreamEvent::Stanza(el) => {
            let e = StreamError::from_element(&el).unwrap();
            assert_eq!(e.condition, StreamErrorCondition::RestrictedXml);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        raw.next_event_timeout(T).await.unwrap(),
        StreamEvent::StreamClose
    ));
    assert!(matches!(
        raw.next_event_timeout(T).await,
        Err(ClientError::StreamClosed)
    ));
}

#[tokio::test]
async fn client_limits_reject_an_oversized_stanza_from_the_server() {
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    let mut limits = client_limits();
    limits.max_stanza_size = 100;
    let mut raw = RawConnection::from_stream_with_limits(a, limits);
    let mut out = Vec::new();
    let mut h = StreamHeader::new(ns::JABBER_CLIENT);
    h.id = Some("x".into());
    h.write_to(&mut out);
    out.extend_from_slice(b"<message><body>");
    out.extend_from_slice(&[b'a'; 200]);
    out.extend_from_slice(b"</body></message>");
    b.write_all(&out).await.unwrap();
    assert!(matches!(
        raw.next_event_timeout(T).await.unwrap(),
        StreamEvent::StreamOpen(_)
    ));
    let r = raw.next_element_timeout(T).await;
    assert!(
        matches!(&r, Err(ClientError::Decode(e)) if e.condition() == StreamErrorCondition::PolicyViolation),
        "{r:?}"
    );
}

#[test]
fn config_debug_has_no_password() {
    let c = config();
    let d = format!("{c:?}");
    assert!(d.contains("juliet@example.com"));
    assert!(!d.contains("s3cret"));
}

#[test]
fn fingerprint_hex_forms() {
    let fp = "AB:".repeat(31) + "AB";
    assert!(matches!(
        TrustMode::fingerprint_hex(&fp),
        Some(TrustMode::Fingerprint(b)) if b == [0xab; 32]
    ));
    assert!(TrustMode::fingerprint_hex(&"ab".repeat(32)).is_some());
    assert!(TrustMode::fingerprint_hex("abcd").is_none());
    assert!(TrustMode::fingerprint_hex(&"zz".repeat(32)).is_none());
}

#[test]
fn mechanism_choice_follows_preference_offer_and_binding_types() {
    use crate::sasl::ChannelBindingType as Cbt;
    use crate::sasl::client::Gs2Flag;

    let offer = |mechs: &[Mechanism], types: Option<&[Cbt]>| {
        let mut fs = vec![mechanisms_element(mechs)];
        if let Some(ts) = types {
            let mut cb = ChannelBinding::none();
            for t in ts {
                cb = match t {
                    Cbt::TlsExporter => cb.with_tls_exporter(vec![1]),
                    _ => cb.with_tls_server_end_point(vec![2]),
                };
            }
            fs.extend(channel_binding_element(&cb));
        }
        features(fs)
    };
    let both = ChannelBinding::none()
        .with_tls_exporter(vec![1])
        .with_tls_server_end_point(vec![2]);
    let default = config().mechanisms;
    let all = Mechanism::ALL;

    // Strongest -PLUS with tls-exporter when the server takes any type.
    let (m, gs2) = raw::choose_mechanism(&offer(&all, None), &default, &both).unwrap();
    assert_eq!(m, Mechanism::ScramSha512Plus);
    assert!(matches!(gs2, Gs2Flag::Bind(Cbt::TlsExporter, _)));
    // Only tls-server-end-point advertised (XEP-0440): that one.
    let f = offer(&all, Some(&[Cbt::TlsServerEndPoint]));
    let (_, gs2) = raw::choose_mechanism(&f, &default, &both).unwrap();
    assert!(matches!(gs2, Gs2Flag::Bind(Cbt::TlsServerEndPoint, _)));
    // No binding data on our side: the strongest plain SCRAM, flag n.
    let (m, gs2) =
        raw::choose_mechanism(&offer(&all, None), &default, &ChannelBinding::none()).unwrap();
    assert_eq!(m, Mechanism::ScramSha512);
    assert_eq!(gs2, Gs2Flag::NotSupported);
    // -PLUS offered but not wanted: flag n, not y.
    let (m, gs2) =
        raw::choose_mechanism(&offer(&all, None), &[Mechanism::ScramSha1], &both).unwrap();
    assert_eq!(m, Mechanism::ScramSha1);
    assert_eq!(gs2, Gs2Flag::NotSupported);
    // PLAIN only when in the preference.
    let plain_only = offer(&[Mechanism::Plain], None);
    assert!(raw::choose_mechanism(&plain_only, &default, &both).is_err());
    let (m, _) = raw::choose_mechanism(&plain_only, &[Mechanism::Plain], &both).unwrap();
    assert_eq!(m, Mechanism::Plain);
}

/// A load generator keeps thousands of clients waiting in `recv`: the
/// waiting must not hold a read buffer.
#[tokio::test]
async fn waiting_client_holds_no_read_buffer() {
    let (a, _b) = tokio::io::duplex(16);
    let mut raw = RawConnection::from_stream(a);
    let f = raw.next_event();
    let size = std::mem::size_of_val(&f);
    assert!(size < 1024, "next_event future is {size} bytes");
    drop(f);
    assert!(std::mem::size_of::<RawConnection>() < 1024);
}
