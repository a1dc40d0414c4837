//! The I/O task of a session: stream negotiation up to authentication
//! (RFC 6120 §4–6), then the reader of the authenticated stream.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::{BoxIo, C2sMsg, Peer, ReadEnd, Shaper, next_event};
use crate::access::Subject;
use crate::config::{ListenerKind, StartTls};
use crate::hooks::{
    AuthResult, C2S_AUTH_RESULT, C2S_PRE_AUTH_FEATURES, C2S_STREAM_FEATURES,
    C2S_UNAUTHENTICATED_IQ, PreAuth,
};
use crate::ns;
use crate::sasl::{self, ChannelBinding, Mechanism, SaslCondition, SaslError, ServerSession, Step};
use crate::server::ServerCtx;
use crate::stream::{StreamDecoder, StreamEvent, StreamHeader, StreamLimits, write_stream_close};
use crate::stream_error::{StreamError, StreamErrorCondition};
use crate::xml::Element;
use beamline_runtime::hooks::Scope;

/// How long a write may take before the connection is given up (as
/// ejabberd's `send_timeout`, 15 s): a client that stops reading holds its
/// session actor no longer than this, then is cut off.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// SASL failures tolerated on one connection before it is closed.
const MAX_AUTH_FAILURES: u32 = 3;

/// What a listener tells its sessions.
pub(crate) struct ListenerSettings {
    /// `c2s` (STARTTLS possible) or `c2s_tls` (TLS from the first byte).
    pub kind: ListenerKind,
    /// STARTTLS policy of a `c2s` listener.
    pub starttls: StartTls,
    /// Decoder limits.
    pub limits: StreamLimits,
    /// Time allowed until authentication.
    pub auth_timeout: Duration,
    /// TLS for STARTTLS (`c2s`) or the handshake (`c2s_tls`).
    pub tls: Option<TlsAcceptor>,
    /// Incoming bytes per second and burst.
    pub shaper: Option<(u32, u32)>,
    /// The listener's access rule: checked on the address before the
    /// stream starts, and on the account after authentication.
    pub access: Option<String>,
}

/// The connection while the I/O task owns all of it.
struct Conn {
    io: BoxIo,
    dec: StreamDecoder,
    out: Vec<u8>,
    shaper: Option<Shaper>,
    /// Whether our header was sent for the current stream (a stream error
    /// needs one first, RFC 6120 §4.9.1.2).
    header_sent: bool,
    host: Option<String>,
    tls: bool,
    cb: ChannelBinding,
}

/// How the negotiation ended, when it did not succeed.
enum Fail {
    /// Send this stream error and close.
    Error(StreamError),
    /// The client closed its stream: close ours.
    Closed,
    /// The connection is gone.
    Gone,
}

impl From<StreamErrorCondition> for Fail {
    fn from(c: StreamErrorCondition) -> Self {
        Fail::Error(StreamError::new(c))
    }
}

fn fail(c: StreamErrorCondition, text: &str) -> Fail {
    Fail::Error(StreamError::new(c).with_text(text, Some("en")))
}

impl From<ReadEnd> for Fail {
    fn from(e: ReadEnd) -> Self {
        match e {
            ReadEnd::Eof | ReadEnd::Io(_) => Fail::Gone,
            ReadEnd::Decode(e) => Fail::Error(e.stream_error()),
        }
    }
}

/// An authenticated client.
struct Authed {
    user: String,
    host: String,
}

fn random_id() -> String {
    let mut raw = [0u8; 8];
    if getrandom::fill(&mut raw).is_err() {
        // Stream ids need uniqueness, not secrecy.
        raw = rand_fallback();
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn rand_fallback() -> [u8; 8] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos.to_le_bytes()
}

impl Conn {
    async fn write_out(&mut self) -> Result<(), Fail> {
        let r = tokio::time::timeout(WRITE_TIMEOUT, async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        })
        .await;
        self.out.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            _ => Err(Fail::Gone),
        }
    }

    async fn send(&mut self, el: &Element) -> Result<(), Fail> {
        el.write_in_stream(ns::JABBER_CLIENT, &mut self.out);
        self.write_out().await
    }

    async fn next(&mut self) -> Result<StreamEvent, Fail> {
        Ok(next_event(&mut self.io, &mut self.dec, &mut self.shaper).await?)
    }

    fn write_header(&mut self, host: &str, lang: &str) {
        let mut h = StreamHeader::new(ns::JABBER_CLIENT);
        h.from = Some(host.to_owned());
        h.id = Some(random_id());
        h.version = Some("1.0".into());
        h.lang = Some(lang.to_owned());
        h.write_to(&mut self.out);
        self.header_sent = true;
    }

    /// Writes the error (after a header, if none was sent) and the close
    /// tag, then shuts the connection down.
    async fn close_with(&mut self, error: Option<StreamError>, fallback_host: &str) {
        if let Some(error) = error {
            if !self.header_sent {
                let host = self
                    .host
                    .clone()
                    .unwrap_or_else(|| fallback_host.to_owned());
                self.write_header(&host, "en");
            }
            error.write_to(ns::JABBER_CLIENT, &mut self.out);
        }
        write_stream_close(&mut self.out);
        let _ = self.write_out().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }

    /// Reads and checks a stream header, then answers with ours.
    async fn open_stream(&mut self, ctx: &ServerCtx) -> Result<String, Fail> {
        let header = match self.next().await? {
            StreamEvent::StreamOpen(h) => h,
            StreamEvent::StreamClose => return Err(Fail::Closed),
            StreamEvent::Stanza(_) => {
                return Err(fail(
                    StreamErrorCondition::NotWellFormed,
                    "expected a stream header",
                ));
            }
        };
        let lang = header.lang.clone().unwrap_or_else(|| "en".into());
        let to = header
            .to
            .as_deref()
            .map(|t| crate::config::normalize_host(t.trim()));
        let host = match to {
            Some(h) if ctx.router.serves(&h) => h,
            // As ejabberd: a header without `to` cannot be addressed.
            None => {
                return Err(fail(
                    StreamErrorCondition::ImproperAddressing,
                    "the stream header has no 'to' attribute",
                ));
            }
            Some(_) => {
                return Err(fail(
                    StreamErrorCondition::HostUnknown,
                    "this server does not serve that domain",
                ));
            }
        };
        if let Some(previous) = &self.host {
            if *previous != host {
                return Err(fail(
                    StreamErrorCondition::HostUnknown,
                    "the domain changed on a stream restart",
                ));
            }
        }
        self.host = Some(host.clone());
        self.write_header(&host, &lang);
        if header.content_ns != ns::JABBER_CLIENT {
            return Err(fail(
                StreamErrorCondition::InvalidNamespace,
                "the content namespace must be jabber:client",
            ));
        }
        if !header
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with("1."))
        {
            return Err(fail(
                StreamErrorCondition::UnsupportedVersion,
                "only version 1.0 streams are supported",
            ));
        }
        Ok(host)
    }
}

fn plain_allowed(ctx: &ServerCtx, tls: bool, peer: &Peer) -> bool {
    tls || (ctx.config.auth.plain_on_loopback_without_tls && peer.is_loopback())
}

/// The mechanisms offered on this connection, in the configured order.
fn offered(ctx: &ServerCtx, conn: &Conn, peer: &Peer) -> Vec<Mechanism> {
    let possible = sasl::advertised_mechanisms(&conn.cb, plain_allowed(ctx, conn.tls, peer));
    ctx.config
        .auth
        .mechanisms
        .iter()
        .map(|m| Mechanism::from(*m))
        .filter(|m| possible.contains(m))
        .collect()
}

/// The channel binding this connection offers: none when no -PLUS
/// mechanism is offered (e.g. `auth.mechanisms` leaves them out). Then a
/// client's gs2 flag `y` is no downgrade and is accepted: RFC 5802 §6 has
/// the server fail `y` only if it supports channel binding, i.e. offered
/// a -PLUS mechanism the client could have picked.
fn offered_binding(offered: &[Mechanism], conn: &Conn) -> ChannelBinding {
    if offered.iter().any(|m| m.is_plus()) {
        conn.cb.clone()
    } else {
        ChannelBinding::none()
    }
}

fn tls_required(lst: &ListenerSettings, conn: &Conn) -> bool {
    !conn.tls && lst.kind == ListenerKind::C2s && lst.starttls == StartTls::Required
}

/// The pre-authentication features, and whether SASL is offered (then
/// `c2s_pre_auth_features` subscribers may add theirs).
fn pre_auth_features(
    ctx: &ServerCtx,
    lst: &ListenerSettings,
    conn: &Conn,
    peer: &Peer,
) -> (Element, Option<PreAuth>) {
    let mut features = Element::new("features", ns::STREAM);
    if !conn.tls && lst.tls.is_some() {
        let mut starttls = Element::new("starttls", ns::TLS);
        if lst.starttls == StartTls::Required {
            starttls.append_child(Element::new("required", ns::TLS));
        }
        features.append_child(starttls);
    }
    if !tls_required(lst, conn) {
        let mechs = offered(ctx, conn, peer);
        if !mechs.is_empty() {
            features.append_child(sasl::mechanisms_element(&mechs));
        }
        if let Some(cb) = sasl::channel_binding_element(&offered_binding(&mechs, conn)) {
            features.append_child(cb);
        }
        return (features, Some(pre_auth(conn, peer)));
    }
    (features, None)
}

fn pre_auth(conn: &Conn, peer: &Peer) -> PreAuth {
    PreAuth {
        host: conn.host.clone().unwrap_or_default(),
        ip: peer.addr.map(|a| a.ip()),
        tls: conn.tls,
    }
}

async fn post_auth_features(ctx: &ServerCtx, host: &str) -> Element {
    let mut features = Element::new("features", ns::STREAM);
    features.append_child(Element::new("bind", ns::BIND));
    features.append_child(
        Element::builder("session", ns::SESSION)
            .append(Element::new("optional", ns::SESSION))
            .build(),
    );
    let extra = ctx
        .hooks
        .run_fold(
            &C2S_STREAM_FEATURES,
            Scope::Host(host),
            Vec::new(),
            host.to_owned(),
        )
        .await;
    for el in extra {
        features.append_child(el);
    }
    features
}

fn sasl_el(name: &str, data: Option<&[u8]>) -> Element {
    let mut el = Element::new(name, ns::SASL);
    if let Some(d) = data {
        // RFC 6120 §6.4.2: an empty payload is sent as "=".
        el.append_text(&if d.is_empty() {
            "=".to_owned()
        } else {
            sasl::encode_payload(d)
        });
    }
    el
}

/// Decodes the text of `<auth/>` or `<response/>`.
fn payload(el: &Element) -> Result<Vec<u8>, SaslError> {
    let text = el.text();
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    sasl::decode_payload(text)
}

/// One SASL attempt. `Ok(Some(user))` on success, `Ok(None)` after a
/// failure was reported to the client.
async fn authenticate(
    ctx: &ServerCtx,
    lst: &ListenerSettings,
    conn: &mut Conn,
    peer: &Peer,
    host: &str,
    auth: &Element,
) -> Result<Option<String>, Fail> {
    let offered = offered(ctx, conn, peer);
    let mech = auth.attr("mechanism").and_then(Mechanism::from_name);
    let Some(mech) = mech.filter(|m| offered.contains(m)) else {
        conn.send(&SaslCondition::InvalidMechanism.failure_element(None))
            .await?;
        return Ok(None);
    };
    let Some(sasl_config) = ctx.sasl.get(host) else {
        return Err(StreamErrorCondition::InternalServerError.into());
    };
    let report = |user: Option<String>, success: bool| AuthResult {
        host: host.to_owned(),
        user,
        success,
        mechanism: mech.name(),
        ip: peer.addr.map(|a| a.ip()),
    };
    let mut username = None;
    let result: Result<(String, Option<Vec<u8>>), SaslError> = async {
        let cb = offered_binding(&offered, conn);
        let mut session = ServerSession::new(mech, cb, sasl_config)?;
        let mut step = if auth.text().trim().is_empty() {
            // No initial response: ask for one with an empty challenge.
            Step::Challenge(Vec::new())
        } else {
            session.step(&payload(auth)?)?
        };
        loop {
            step = match step {
                Step::NeedCredentials { username: name } => {
                    let creds = match ctx.backend.credentials(host, &name).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading credentials failed");
                            return Err(SaslError::new(
                                SaslCondition::TemporaryAuthFailure,
                                "storage unavailable",
                            ));
                        }
                    };
                    username = Some(name);
                    session.provide(creds.as_deref())?
                }
                Step::Challenge(data) => {
                    conn.send(&sasl_el("challenge", Some(&data)))
                        .await
                        .map_err(|_| SaslError::new(SaslCondition::Aborted, "connection lost"))?;
                    let ev = conn
                        .next()
                        .await
                        .map_err(|_| SaslError::new(SaslCondition::Aborted, "connection lost"))?;
                    match ev {
                        StreamEvent::Stanza(el) if el.is("response", ns::SASL) => {
                            session.step(&payload(&el)?)?
                        }
                        StreamEvent::Stanza(el) if el.is("abort", ns::SASL) => {
                            return Err(session.abort());
                        }
                        _ => {
                            return Err(SaslError::new(
                                SaslCondition::MalformedRequest,
                                "expected <response/> or <abort/>",
                            ));
                        }
                    }
                }
                Step::Success {
                    authcid,
                    additional_data,
                    ..
                } => return Ok((authcid, additional_data)),
            };
        }
    }
    .await;
    // The listener's access rule, now that the account is known (as
    // ejabberd's c2s `access`): a denied account fails authentication.
    let result = match result {
        Ok((user, _))
            if !ctx.services.access.allow_or_default(
                lst.access.as_deref(),
                &Subject::user(&user, host).with_ip(peer.addr.map(|a| a.ip())),
            ) =>
        {
            Err(SaslError::new(
                SaslCondition::NotAuthorized,
                "access denied by service policy",
            ))
        }
        other => other,
    };
    match result {
        Ok((user, data)) => {
            conn.send(&sasl_el("success", data.as_deref())).await?;
            ctx.stats
                .logins
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = ctx
                .hooks
                .run(
                    &C2S_AUTH_RESULT,
                    Scope::Host(host),
                    report(Some(user.clone()), true),
                )
                .await;
            Ok(Some(user))
        }
        Err(e) => {
            if conn.dec.is_closed() {
                return Err(Fail::Gone);
            }
            ctx.stats
                .auth_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                host,
                mechanism = mech.name(),
                condition = e.condition().element_name(),
                reason = e.reason,
                ip = ?peer.addr.map(|a| a.ip()),
                "authentication failed"
            );
            let _ = ctx
                .hooks
                .run(&C2S_AUTH_RESULT, Scope::Host(host), report(username, false))
                .await;
            conn.send(&e.condition().failure_element(None)).await?;
            Ok(None)
        }
    }
}

/// Negotiates up to an authenticated, reopened stream.
async fn negotiate(
    ctx: &ServerCtx,
    lst: &ListenerSettings,
    conn: &mut Conn,
    peer: &Peer,
) -> Result<Authed, Fail> {
    let mut failures = 0;
    'stream: loop {
        let host = conn.open_stream(ctx).await?;
        let (mut features, sasl_offered) = pre_auth_features(ctx, lst, conn, peer);
        if let Some(pa) = sasl_offered {
            let extra = ctx
                .hooks
                .run_fold(&C2S_PRE_AUTH_FEATURES, Scope::Host(&host), Vec::new(), pa)
                .await;
            for el in extra {
                features.append_child(el);
            }
        }
        conn.send(&features).await?;
        loop {
            let el = match conn.next().await? {
                StreamEvent::Stanza(el) => el,
                StreamEvent::StreamClose => return Err(Fail::Closed),
                StreamEvent::StreamOpen(_) => {
                    return Err(fail(
                        StreamErrorCondition::NotWellFormed,
                        "a second stream header without a restart",
                    ));
                }
            };
            if el.is("starttls", ns::TLS) {
                let Some(acceptor) = lst.tls.as_ref().filter(|_| !conn.tls) else {
                    conn.send(&Element::new("failure", ns::TLS)).await?;
                    return Err(Fail::Closed);
                };
                conn.send(&Element::new("proceed", ns::TLS)).await?;
                let plain = std::mem::replace(&mut conn.io, Box::new(tokio::io::empty()));
                let tls = tokio::time::timeout(Duration::from_secs(15), acceptor.accept(plain))
                    .await
                    .map_err(|_| Fail::Gone)?
                    .map_err(|e| {
                        tracing::debug!(error = %e, "STARTTLS handshake failed");
                        Fail::Gone
                    })?;
                conn.cb = match &ctx.certs {
                    Some(certs) => certs.stream_channel_binding(&tls),
                    None => ChannelBinding::none(),
                };
                conn.io = Box::new(tls);
                conn.tls = true;
                conn.header_sent = false;
                conn.dec.reset();
                continue 'stream;
            }
            if el.is("auth", ns::SASL) {
                if tls_required(lst, conn) {
                    conn.send(&SaslCondition::EncryptionRequired.failure_element(None))
                        .await?;
                    return Err(fail(
                        StreamErrorCondition::PolicyViolation,
                        "STARTTLS is required before authentication",
                    ));
                }
                match authenticate(ctx, lst, conn, peer, &host, &el).await? {
                    Some(user) => {
                        conn.dec.reset_keep_input();
                        conn.dec.set_authenticated(true);
                        conn.header_sent = false;
                        conn.open_stream(ctx).await?;
                        let features = post_auth_features(ctx, &host).await;
                        conn.send(&features).await?;
                        return Ok(Authed { user, host });
                    }
                    None => {
                        failures += 1;
                        if failures >= MAX_AUTH_FAILURES {
                            return Err(fail(
                                StreamErrorCondition::PolicyViolation,
                                "too many authentication failures",
                            ));
                        }
                    }
                }
                continue;
            }
            if el.is("iq", ns::JABBER_CLIENT) && !tls_required(lst, conn) {
                let reply = ctx
                    .hooks
                    .run_fold(
                        &C2S_UNAUTHENTICATED_IQ,
                        Scope::Host(&host),
                        None,
                        (pre_auth(conn, peer), el.clone()),
                    )
                    .await;
                if let Some(reply) = reply {
                    conn.send(&reply).await?;
                    continue;
                }
            }
            if matches!(el.name(), "iq" | "message" | "presence") && el.ns() == ns::JABBER_CLIENT {
                return Err(fail(
                    StreamErrorCondition::NotAuthorized,
                    "authenticate first",
                ));
            }
            return Err(fail(
                StreamErrorCondition::UnsupportedStanzaType,
                "unexpected element before authentication",
            ));
        }
    }
}

/// The whole I/O task of a connection: negotiation, hand-over of the
/// write half to the session actor, then reading.
pub(crate) async fn run(
    myself: ActorRef<C2sMsg>,
    ctx: Arc<ServerCtx>,
    lst: Arc<ListenerSettings>,
    io: BoxIo,
    peer: Peer,
    stop: oneshot::Receiver<StreamError>,
) {
    // The negotiation's state machine (TLS handshake, SASL) is far larger
    // than the reader's; boxed, it is freed once done instead of sizing
    // the task of every idle session.
    let Some((conn, authed)) = Box::pin(negotiate_connection(&ctx, &lst, io, peer, stop)).await
    else {
        let _ = myself.cast(C2sMsg::Disconnected);
        return;
    };
    let Conn {
        io,
        mut dec,
        mut shaper,
        ..
    } = conn;
    let (mut reader, writer) = tokio::io::split(io);
    if myself
        .cast(C2sMsg::Authenticated {
            writer,
            user: authed.user,
            host: authed.host,
        })
        .is_err()
    {
        return;
    }
    loop {
        let msg = match next_event(&mut reader, &mut dec, &mut shaper).await {
            Ok(StreamEvent::Stanza(el)) => C2sMsg::FromClient(el),
            Ok(StreamEvent::StreamClose) => C2sMsg::ClientClosed,
            Ok(StreamEvent::StreamOpen(_)) => C2sMsg::StreamFailed(
                StreamError::new(StreamErrorCondition::NotWellFormed)
                    .with_text("a stream header inside the stream", Some("en")),
            ),
            Err(ReadEnd::Decode(e)) => C2sMsg::StreamFailed(e.stream_error()),
            Err(ReadEnd::Eof) => C2sMsg::Disconnected,
            Err(ReadEnd::Io(e)) => {
                tracing::debug!(error = %e, "connection lost");
                C2sMsg::Disconnected
            }
        };
        let last = !matches!(msg, C2sMsg::FromClient(_));
        if myself.cast(msg).is_err() || last {
            return;
        }
    }
}

/// Direct TLS (for `c2s_tls`), then the negotiation under the listener's
/// deadline; `None` if it failed (the stream error, if any, is written).
async fn negotiate_connection(
    ctx: &ServerCtx,
    lst: &ListenerSettings,
    io: BoxIo,
    peer: Peer,
    stop: oneshot::Receiver<StreamError>,
) -> Option<(Conn, Authed)> {
    let deadline = Instant::now() + lst.auth_timeout;
    let mut conn = Conn {
        io,
        dec: StreamDecoder::new(lst.limits.clone()),
        out: Vec::new(),
        shaper: lst.shaper.map(|(rate, burst)| Shaper::new(rate, burst)),
        header_sent: false,
        host: None,
        tls: false,
        cb: ChannelBinding::none(),
    };
    let fallback_host = ctx.default_host().to_owned();
    // Direct TLS: the handshake comes first.
    if lst.kind == ListenerKind::C2sTls {
        let acceptor = lst.tls.clone()?;
        let plain = std::mem::replace(&mut conn.io, Box::new(tokio::io::empty()));
        match tokio::time::timeout_at(deadline, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                conn.cb = match &ctx.certs {
                    Some(certs) => certs.stream_channel_binding(&tls),
                    None => ChannelBinding::none(),
                };
                conn.io = Box::new(tls);
                conn.tls = true;
            }
            _ => return None,
        }
    }
    let outcome = tokio::select! {
        r = tokio::time::timeout_at(deadline, negotiate(ctx, lst, &mut conn, &peer)) => match r {
            Ok(r) => r,
            Err(_) => Err(fail(StreamErrorCondition::ConnectionTimeout, "authentication took too long")),
        },
        r = stop => Err(Fail::Error(r.unwrap_or_else(|_| StreamErrorCondition::SystemShutdown.into()))),
    };
    match outcome {
        Ok(authed) => {
            // What the negotiation wrote is sent; its buffer goes.
            conn.out = Vec::new();
            Some((conn, authed))
        }
        Err(f) => {
            match f {
                Fail::Error(e) => conn.close_with(Some(e), &fallback_host).await,
                Fail::Closed => conn.close_with(None, &fallback_host).await,
                Fail::Gone => {}
            }
            None
        }
    }
}
