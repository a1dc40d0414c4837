//! [`RawConnection`]: one client connection driven step by step, for
//! protocol tests and as the engine under [`super::Client`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::ClientError;
use super::tls::{channel_binding, server_name};
use crate::jid::FullJid;
use crate::ns;
use crate::sasl::client::{ClientCredentials, ClientSession, Gs2Flag};
use crate::sasl::{
    ChannelBinding, ChannelBindingType, Mechanism, NS_SASL_CB, decode_payload, encode_payload,
};
use crate::stanza_error::StanzaError;
use crate::stream::{StreamDecoder, StreamEvent, StreamHeader, StreamLimits, write_stream_close};
use crate::stream_error::StreamError;
use crate::xml::Element;

/// What the client reads per poll, into a buffer on the stack of that poll
/// only (an idle connection holds none of it).
const READ_CHUNK: usize = 4096;

/// A write buffer larger than this is shrunk after a send.
const WRITE_BUFFER_KEEP: usize = 4096;

/// Any byte stream a connection runs over: TCP, TLS over it, or an
/// in-memory duplex.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// The stream limits a client reads with by default: the server's defaults
/// except for stanzas, which may be up to 1 MiB (rosters, archives) before
/// and after authentication.
pub fn client_limits() -> StreamLimits {
    StreamLimits {
        max_stanza_size: 1 << 20,
        max_stanza_size_unauthenticated: 1 << 20,
        ..StreamLimits::default()
    }
}

/// One connection to a server, driven by hand: write any bytes or
/// elements, read [`StreamEvent`]s, and run the negotiation steps
/// (STARTTLS, SASL, bind, session) one at a time. Protocol tests use it to
/// send malformed XML, oversized stanzas or a wrong `to`, and to check the
/// stream error that comes back ([`RawConnection::expect_stream_error`])
/// and that the connection closes ([`RawConnection::expect_closed`]).
///
/// Nothing runs in the background: the caller drives every read. Writes
/// go through one buffer and are flushed per call.
pub struct RawConnection {
    io: Option<Box<dyn Transport>>,
    decoder: StreamDecoder,
    wbuf: Vec<u8>,
    /// The last stream header the server sent.
    header: Option<StreamHeader>,
    /// Binding data of the TLS session, empty without TLS.
    cb: ChannelBinding,
    tls: bool,
    /// The decoder failed: the stream is unusable.
    failed: bool,
    next_id: u64,
}

impl std::fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection")
            .field("tls", &self.tls)
            .field("open", &self.io.is_some())
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

/// Runs `fut` within `d`, else [`ClientError::Timeout`] naming `what`.
pub(super) async fn within<T>(
    d: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(d, fut)
        .await
        .map_err(|_| ClientError::Timeout(what))?
}

impl RawConnection {
    /// Connects over TCP (with `TCP_NODELAY`) within `timeout`, reading
    /// with [`client_limits`].
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<RawConnection, ClientError> {
        RawConnection::connect_with_limits(addr, timeout, client_limits()).await
    }

    /// [`RawConnection::connect`] with other limits on what the server may
    /// send.
    pub async fn connect_with_limits(
        addr: SocketAddr,
        timeout: Duration,
        limits: StreamLimits,
    ) -> Result<RawConnection, ClientError> {
        let tcp = within(timeout, "TCP connect", async {
            Ok(TcpStream::connect(addr).await?)
        })
        .await?;
        tcp.set_nodelay(true)?;
        Ok(RawConnection::from_stream_with_limits(tcp, limits))
    }

    /// A connection over any stream (e.g. `tokio::io::duplex` for an
    /// in-memory transport), read with [`client_limits`].
    pub fn from_stream<S>(stream: S) -> RawConnection
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        RawConnection::from_stream_with_limits(stream, client_limits())
    }

    /// [`RawConnection::from_stream`] with other limits on what the server
    /// may send.
    pub fn from_stream_with_limits<S>(stream: S, limits: StreamLimits) -> RawConnection
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut decoder = StreamDecoder::new(limits);
        // The client's limit does not change with authentication.
        decoder.set_authenticated(true);
        RawConnection {
            io: Some(Box::new(stream)),
            decoder,
            wbuf: Vec::new(),
            header: None,
            cb: ChannelBinding::none(),
            tls: false,
            failed: false,
            next_id: 0,
        }
    }

    /// Whether TLS is on (direct, or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The channel binding data of the TLS session (none without TLS).
    pub fn channel_binding(&self) -> &ChannelBinding {
        &self.cb
    }

    /// The last stream header received from the server (its `id`, `from`,
    /// `version`, ...).
    pub fn server_header(&self) -> Option<&StreamHeader> {
        self.header.as_ref()
    }

    /// A fresh stanza id, unique on this connection.
    pub fn next_id(&mut self) -> String {
        self.next_id += 1;
        format!("c{}", self.next_id)
    }

    fn io(&mut self) -> Result<&mut Box<dyn Transport>, ClientError> {
        self.io.as_mut().ok_or(ClientError::Disconnected)
    }

    /// Writes what is buffered and flushes.
    async fn flush_buffer(&mut self) -> Result<(), ClientError> {
        let mut buf = std::mem::take(&mut self.wbuf);
        let r = async {
            let io = self.io()?;
            io.write_all(&buf).await?;
            io.flush().await?;
            Ok(())
        }
        .await;
        buf.clear();
        if buf.capacity() > WRITE_BUFFER_KEEP {
            buf = Vec::new();
        }
        self.wbuf = buf;
        r
    }

    /// Writes bytes as they are (anything, well-formed or not) and flushes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.wbuf.extend_from_slice(bytes);
        self.flush_buffer().await
    }

    /// Buffers one element as [`RawConnection::send`] writes it, without
    /// writing: [`RawConnection::flush`] (or the next send) writes what
    /// was buffered in one go.
    pub fn queue(&mut self, el: &Element) {
        el.write_in_stream(ns::JABBER_CLIENT, &mut self.wbuf);
    }

    /// Writes what [`RawConnection::queue`] buffered, and flushes.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        self.flush_buffer().await
    }

    /// Writes one element as a top-level child of a `jabber:client`
    /// stream, and flushes.
    pub async fn send(&mut self, el: &Element) -> Result<(), ClientError> {
        el.write_in_stream(ns::JABBER_CLIENT, &mut self.wbuf);
        self.flush_buffer().await
    }

    /// Writes a stream header and flushes.
    pub async fn send_header(&mut self, header: &StreamHeader) -> Result<(), ClientError> {
        header.write_to(&mut self.wbuf);
        self.flush_buffer().await
    }

    /// Opens (or re-opens) the client stream to domain `to`:
    /// `<stream:stream xmlns='jabber:client' to=... version='1.0'>`.
    pub async fn open_stream(&mut self, to: &str) -> Result<(), ClientError> {
        let mut h = StreamHeader::new(ns::JABBER_CLIENT);
        h.to = Some(to.to_owned());
        h.version = Some("1.0".to_owned());
        h.lang = Some("en".to_owned());
        self.send_header(&h).await
    }

    /// Writes `</stream:stream>` and flushes.
    pub async fn send_close(&mut self) -> Result<(), ClientError> {
        write_stream_close(&mut self.wbuf);
        self.flush_buffer().await
    }

    /// Shuts the write side down (TLS `close_notify`, then TCP FIN).
    pub async fn shutdown(&mut self) -> Result<(), ClientError> {
        self.io()?.shutdown().await?;
        Ok(())
    }

    /// The next event from the server, as the decoder yields it: a stream
    /// error arrives as a [`StreamEvent::Stanza`] `<stream:error/>` here.
    /// [`ClientError::Disconnected`] at end of input, and
    /// [`ClientError::StreamClosed`] when called again after the server's
    /// [`StreamEvent::StreamClose`]. Cancel-safe: dropping the future
    /// loses no input.
    pub async fn next_event(&mut self) -> Result<StreamEvent, ClientError> {
        loop {
            if self.failed {
                return Err(ClientError::Protocol(
                    "the server's stream failed to decode earlier".into(),
                ));
            }
            match self.decoder.next_event() {
                Ok(Some(ev)) => {
                    if let StreamEvent::StreamOpen(h) = &ev {
                        self.header = Some(h.clone());
                    }
                    return Ok(ev);
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed = true;
                    return Err(ClientError::Decode(e));
                }
            }
            if self.decoder.is_closed() {
                return Err(ClientError::StreamClosed);
            }
            let io = self.io.as_mut().ok_or(ClientError::Disconnected)?;
            let decoder = &mut self.decoder;
            // The read buffer lives on the stack of one poll only, so a
            // client waiting in `recv` holds no buffer: what is read goes
            // into the decoder before the poll returns.
            let read = std::future::poll_fn(|cx| {
                let mut buf = [0u8; READ_CHUNK];
                let mut rb = ReadBuf::new(&mut buf);
                match Pin::new(io.as_mut()).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        decoder.feed(rb.filled());
                        Poll::Ready(Ok(rb.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            let n = match read {
                Ok(n) => n,
                // TLS without close_notify: the end of the connection all
                // the same (XMPP closes with its own close tag).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(ClientError::Disconnected);
            }
        }
    }

    /// [`RawConnection::next_event`] within `timeout`.
    pub async fn next_event_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<StreamEvent, ClientError> {
        within(timeout, "waiting for the server", self.next_event()).await
    }

    /// The next top-level element, with the stream-level cases made
    /// errors: a `<stream:error/>` is [`ClientError::StreamError`], the
    /// server's close tag [`ClientError::StreamClosed`], a new header
    /// [`ClientError::Protocol`].
    pub async fn next_element(&mut self) -> Result<Element, ClientError> {
        match self.next_event().await? {
            StreamEvent::Stanza(el) => {
                if el.is("error", ns::STREAM) {
                    Err(stream_error(&el))
                } else {
                    Ok(el)
                }
            }
            StreamEvent::StreamClose => Err(ClientError::StreamClosed),
            StreamEvent::StreamOpen(_) => Err(ClientError::Protocol(
                "the server re-opened its stream unasked".into(),
            )),
        }
    }

    /// [`RawConnection::next_element`] within `timeout`.
    pub async fn next_element_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Element, ClientError> {
        within(timeout, "waiting for a stanza", self.next_element()).await
    }

    /// Reads the server's stream header and its `<stream:features/>`.
    pub async fn read_features(&mut self, timeout: Duration) -> Result<Element, ClientError> {
        within(timeout, "waiting for stream features", async {
            match self.next_event().await? {
                StreamEvent::StreamOpen(h) => {
                    if h.content_ns != ns::JABBER_CLIENT {
                        return Err(ClientError::Protocol(format!(
                            "server stream in {:?}, not jabber:client",
                            h.content_ns
                        )));
                    }
                }
                StreamEvent::Stanza(el) if el.is("error", ns::STREAM) => {
                    return Err(stream_error(&el));
                }
                StreamEvent::Stanza(el) => {
                    return Err(ClientError::Protocol(format!(
                        "<{}/> before the stream header",
                        el.name()
                    )));
                }
                StreamEvent::StreamClose => return Err(ClientError::StreamClosed),
            }
            let el = self.next_element().await?;
            if !el.is("features", ns::STREAM) {
                return Err(ClientError::Protocol(format!(
                    "<{}/> instead of stream features",
                    el.name()
                )));
            }
            Ok(el)
        })
        .await
    }

    /// Runs a TLS handshake on the connection as it is (direct TLS, or
    /// after `<proceed/>`), with SNI `domain`; the decoder starts over.
    pub async fn tls_handshake(
        &mut self,
        domain: &str,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let name = server_name(domain)?;
        let io = self.io.take().ok_or(ClientError::Disconnected)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = within(timeout, "TLS handshake", async {
            connector.connect(name, io).await.map_err(ClientError::Tls)
        })
        .await?;
        self.cb = channel_binding(tls.get_ref().1);
        self.tls = true;
        self.io = Some(Box::new(tls));
        self.decoder.reset();
        self.header = None;
        Ok(())
    }

    /// STARTTLS (RFC 6120 §5): sends `<starttls/>`, waits for
    /// `<proceed/>` (a `<failure/>` is [`ClientError::Protocol`]) and runs
    /// the handshake. Re-open the stream next.
    pub async fn starttls(
        &mut self,
        domain: &str,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        self.send(&Element::new("starttls", ns::TLS)).await?;
        let el = self.next_element_timeout(timeout).await?;
        if el.is("failure", ns::TLS) {
            return Err(ClientError::Protocol("the server refused STARTTLS".into()));
        }
        if !el.is("proceed", ns::TLS) {
            return Err(ClientError::Protocol(format!(
                "<{}/> instead of <proceed/>",
                el.name()
            )));
        }
        self.tls_handshake(domain, config, timeout).await
    }

    /// SASL (RFC 6120 §6) with the first of `preference` that `features`
    /// offers (a -PLUS one only where this connection has binding data of
    /// a type the server takes). On success the decoder is ready for the
    /// new stream: re-open it next. A `<failure/>` is
    /// [`ClientError::SaslFailure`]; a server that fails SCRAM's mutual
    /// check is [`ClientError::Sasl`] (after an `<abort/>`).
    pub async fn authenticate(
        &mut self,
        features: &Element,
        credentials: ClientCredentials,
        preference: &[Mechanism],
        timeout: Duration,
    ) -> Result<Mechanism, ClientError> {
        let (mechanism, gs2) = choose_mechanism(features, preference, &self.cb)?;
        let mut session = ClientSession::new(mechanism, credentials, gs2)?;
        let initial = session.initial_response()?;
        let auth = Element::builder("auth", ns::SASL)
            .attr("mechanism", mechanism.name())
            .text(&encode_payload(&initial))
            .build();
        self.send(&auth).await?;
        loop {
            let el = self.next_element_timeout(timeout).await?;
            if el.ns() != ns::SASL {
                return Err(ClientError::Protocol(format!(
                    "<{}/> during SASL",
                    el.name()
                )));
            }
            match el.name() {
                "challenge" => {
                    let data = decode_payload(&el.text())
                        .map_err(|_| ClientError::Protocol("bad base64 in <challenge/>".into()))?;
                    match session.challenge(&data) {
                        Ok(resp) => {
                            let r = Element::builder("response", ns::SASL)
                                .text(&encode_payload(&resp))
                                .build();
                            self.send(&r).await?;
                        }
                        Err(e) => {
                            // Best effort: the exchange is over anyway.
                            let _ = self.send(&Element::new("abort", ns::SASL)).await;
                            return Err(e.into());
                        }
                    }
                }
                "success" => {
                    let text = el.text();
                    let data = if text.trim().is_empty() {
                        None
                    } else {
                        Some(decode_payload(&text).map_err(|_| {
                            ClientError::Protocol("bad base64 in <success/>".into())
                        })?)
                    };
                    session.success(data.as_deref())?;
                    self.decoder.reset_keep_input();
                    self.header = None;
                    return Ok(mechanism);
                }
                "failure" => return Err(sasl_failure(&el)),
                other => {
                    return Err(ClientError::Protocol(format!("<{other}/> during SASL")));
                }
            }
        }
    }

    /// Sends an IQ and waits for the reply with its id (type `result` or
    /// `error`); nothing else may arrive meanwhile (this is for the
    /// negotiation, where nothing else does).
    async fn negotiation_iq(
        &mut self,
        payload: Element,
        timeout: Duration,
    ) -> Result<Element, ClientError> {
        let id = self.next_id();
        let iq = Element::builder("iq", ns::JABBER_CLIENT)
            .attr("type", "set")
            .attr("id", id.clone())
            .append(payload)
            .build();
        self.send(&iq).await?;
        let reply = self.next_element_timeout(timeout).await?;
        if !reply.is("iq", ns::JABBER_CLIENT)
            || reply.attr("id") != Some(&id)
            || !matches!(reply.attr("type"), Some("result" | "error"))
        {
            return Err(ClientError::Protocol(format!(
                "<{}/> instead of the IQ reply",
                reply.name()
            )));
        }
        Ok(reply)
    }

    /// Resource binding (RFC 6120 §7): the client's `resource`, or one the
    /// server makes. The bound full JID.
    pub async fn bind(
        &mut self,
        resource: Option<&str>,
        timeout: Duration,
    ) -> Result<FullJid, ClientError> {
        let mut b = Element::builder("bind", ns::BIND);
        if let Some(r) = resource {
            b = b.append(Element::builder("resource", ns::BIND).text(r).build());
        }
        let reply = self.negotiation_iq(b.build(), timeout).await?;
        if reply.attr("type") == Some("error") {
            return Err(match StanzaError::from_stanza(&reply) {
                Some(e) => ClientError::Bind(e),
                None => ClientError::Protocol("bind error without a condition".into()),
            });
        }
        let jid = reply
            .get_child("bind", ns::BIND)
            .and_then(|b| b.child_text("jid", ns::BIND))
            .ok_or_else(|| ClientError::Protocol("bind result without a JID".into()))?;
        FullJid::new(jid.trim())
            .map_err(|e| ClientError::Protocol(format!("bound JID is not a full JID: {e}")))
    }

    /// The legacy session establishment (RFC 3921 §3), for servers that
    /// advertise it as mandatory.
    pub async fn establish_session(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let reply = self
            .negotiation_iq(Element::new("session", ns::SESSION), timeout)
            .await?;
        if reply.attr("type") == Some("error") {
            return Err(match StanzaError::from_stanza(&reply) {
                Some(e) => ClientError::Session(e),
                None => ClientError::Protocol("session error without a condition".into()),
            });
        }
        Ok(())
    }

    /// Reads until a `<stream:error/>` and returns it, skipping headers,
    /// features and stanzas; [`ClientError::StreamClosed`] or
    /// [`ClientError::Disconnected`] if the stream ends without one.
    pub async fn expect_stream_error(
        &mut self,
        timeout: Duration,
    ) -> Result<StreamError, ClientError> {
        within(timeout, "waiting for a stream error", async {
            loop {
                match self.next_event().await? {
                    StreamEvent::Stanza(el) if el.is("error", ns::STREAM) => {
                        return StreamError::from_element(&el).ok_or_else(|| {
                            ClientError::Protocol("stream error without a known condition".into())
                        });
                    }
                    StreamEvent::StreamClose => return Err(ClientError::StreamClosed),
                    _ => {}
                }
            }
        })
        .await
    }

    /// Reads until the server closes: its `</stream:stream>` or the end of
    /// the connection (a reset counts). Anything before is skipped.
    /// [`ClientError::Timeout`] if it stays open.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Result<(), ClientError> {
        within(timeout, "waiting for the server to close", async {
            loop {
                match self.next_event().await {
                    Ok(StreamEvent::StreamClose)
                    | Err(ClientError::StreamClosed | ClientError::Disconnected) => return Ok(()),
                    Err(ClientError::Io(_)) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await
    }
}

/// The stream error of a `<stream:error/>` (an unknown condition is
/// `undefined-condition`).
pub(super) fn stream_error(el: &Element) -> ClientError {
    ClientError::StreamError(StreamError::from_element(el).unwrap_or_else(|| {
        StreamError::new(crate::stream_error::StreamErrorCondition::UndefinedCondition)
    }))
}

/// The condition and text of a SASL `<failure/>`.
fn sasl_failure(el: &Element) -> ClientError {
    let condition = el
        .children()
        .find(|c| c.ns() == ns::SASL && c.name() != "text")
        .map_or_else(|| "undefined".to_owned(), |c| c.name().to_owned());
    ClientError::SaslFailure {
        condition,
        text: el.child_text("text", ns::SASL),
    }
}

/// The mechanism to use and its GS2 flag.
pub(super) fn choose_mechanism(
    features: &Element,
    preference: &[Mechanism],
    cb: &ChannelBinding,
) -> Result<(Mechanism, Gs2Flag), ClientError> {
    let offered: Vec<String> = features
        .get_child("mechanisms", ns::SASL)
        .map(|m| {
            m.children()
                .filter(|c| c.is("mechanism", ns::SASL))
                .map(|c| c.text().trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    // XEP-0440: the types the server takes; without the feature, any.
    let server_types: Option<Vec<String>> = features
        .get_child("sasl-channel-binding", NS_SASL_CB)
        .map(|f| {
            f.children()
                .filter_map(|c| c.attr("type").map(str::to_owned))
                .collect()
        });
    let server_plus = offered.iter().any(|m| m.ends_with("-PLUS"));
    for &m in preference {
        if !offered.iter().any(|o| o == m.name()) {
            continue;
        }
        if m.is_plus() {
            let ty = [
                ChannelBindingType::TlsExporter,
                ChannelBindingType::TlsServerEndPoint,
            ]
            .into_iter()
            .find(|t| {
                cb.data(*t).is_some()
                    && server_types
                        .as_ref()
                        .is_none_or(|ts| ts.iter().any(|s| s == t.name()))
            });
            match ty.and_then(|t| cb.data(t).map(|d| (t, d.to_vec()))) {
                Some((t, data)) => return Ok((m, Gs2Flag::Bind(t, data))),
                None => continue,
            }
        }
        let gs2 = if cb.is_supported() && !server_plus {
            Gs2Flag::ServerNotSupported
        } else {
            Gs2Flag::NotSupported
        };
        return Ok((m, gs2));
    }
    Err(ClientError::NoMechanism { offered })
}
