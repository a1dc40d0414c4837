//! The project's own XMPP client: what end-to-end tests, examples and the
//! load generator log in with.
//!
//! [`Client::connect`] opens a TCP connection (or
//! [`Client::connect_with_stream`] takes any byte stream, such as an
//! in-memory `tokio::io::duplex`) and negotiates, each step within
//! [`ClientConfig::step_timeout`]:
//!
//! 1. stream header to the JID's domain, stream features;
//! 2. STARTTLS and a TLS handshake with SNI = the domain, per
//!    [`TlsMode`] and [`TrustMode`], then a new stream (or TLS from the
//!    first byte with [`TlsMode::DirectTls`]);
//! 3. SASL with the first of [`ClientConfig::mechanisms`] the server
//!    offers (by default the strongest SCRAM, -PLUS where the TLS session
//!    gives binding data; PLAIN only if asked for), then a new stream;
//! 4. resource binding (the configured resource or the server's), and the
//!    legacy session IQ if the server advertises it as mandatory.
//!
//! Failures are typed ([`ClientError`]): a wrong password is
//! [`ClientError::SaslFailure`] with condition `not-authorized`, a stream
//! error from the server [`ClientError::StreamError`].
//!
//! After login, [`Client::send`] writes a stanza (buffered per call, then
//! flushed) and [`Client::recv`] reads the next one; nothing runs in the
//! background, the caller drives every read, so one client costs one
//! socket, its TLS state, a decoder buffer (512 bytes idle) and a few
//! strings. [`RawConnection`] is the same connection driven by hand, for
//! protocol tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), beamline_xmpp::client::ClientError> {
//! use beamline_xmpp::client::{Client, ClientConfig, TrustMode};
//!
//! let jid = "juliet@localhost".parse().expect("JID");
//! let mut config = ClientConfig::new(jid, "secret", "127.0.0.1:5222".parse().expect("addr"));
//! config.trust = TrustMode::AcceptAnyForTests; // the test server's self-signed certificate
//! let mut client = Client::connect(config).await?;
//! client.send_presence().await?;
//! client.send_message("romeo@localhost", "hi").await?;
//! let stanza = client.recv().await?;
//! client.close().await?;
//! # let _ = stanza; Ok(()) }
//! ```
//!
//! Passwords and SASL payloads are never logged, and no type here prints
//! one in its `Debug` output.

mod raw;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub use raw::{RawConnection, Transport, client_limits};
pub use tls::{TrustMode, tls_client_config, tls_client_config_classical};

use crate::jid::{BareJid, FullJid};
use crate::ns;
use crate::sasl::Mechanism;
use crate::sasl::client::{ClientCredentials, SaslClientError, ScramCache};
use crate::stanza_error::StanzaError;
use crate::stream::{DecodeError, StreamLimits};
use crate::stream_error::StreamError;
use crate::xml::Element;

/// How the connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// Plain TCP first, then STARTTLS (RFC 6120 §5), which the server must
    /// offer (the default).
    StartTls,
    /// TLS from the first byte (XEP-0368), with ALPN `xmpp-client`.
    DirectTls,
    /// No TLS at all (a server that requires it refuses the login).
    Plain,
}

/// Everything a [`Client`] needs to log in. Its `Debug` output leaves the
/// password out.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The account, `user@domain`; the domain is the stream's `to` and the
    /// TLS server name.
    pub jid: BareJid,
    /// The password.
    pub password: String,
    /// The resource to bind; `None` lets the server make one.
    pub resource: Option<String>,
    /// The server address for [`Client::connect`] (unused by
    /// [`Client::connect_with_stream`]).
    pub server: SocketAddr,
    /// STARTTLS (default), direct TLS, or none.
    pub tls: TlsMode,
    /// Which certificates to accept. The default trusts nothing: set
    /// [`TrustMode::Roots`] or [`TrustMode::Fingerprint`], or for tests
    /// against the self-signed certificate [`TrustMode::AcceptAnyForTests`].
    pub trust: TrustMode,
    /// A prebuilt rustls configuration, used instead of building one from
    /// `trust` per connection (build it once with [`tls_client_config`]
    /// when opening many).
    pub tls_client_config: Option<Arc<rustls::ClientConfig>>,
    /// SASL mechanisms in order of preference; the first one the server
    /// offers is used (a -PLUS one only with channel binding data). The
    /// default: every SCRAM, strongest first, -PLUS before the plain
    /// variants; no PLAIN.
    pub mechanisms: Vec<Mechanism>,
    /// Limit for the TCP connect.
    pub connect_timeout: Duration,
    /// Limit for each wait for the server during negotiation and
    /// [`Client::iq`].
    pub step_timeout: Duration,
    /// How long [`Client::close`] waits for the server's close.
    pub close_timeout: Duration,
    /// Limits on what the server may send ([`client_limits`] by default).
    pub limits: StreamLimits,
    /// Shared salted-password cache, to skip PBKDF2 on repeated logins.
    /// Without it every SCRAM login runs PBKDF2 (the server's iteration
    /// count, 4096 by default) on the calling task: milliseconds of CPU,
    /// which a load generator logging in thousands of users should share.
    pub scram_cache: Option<ScramCache>,
}

impl ClientConfig {
    /// A configuration with the defaults: STARTTLS, resource chosen by the
    /// server, SCRAM only, 10 s to connect, 10 s per negotiation step, 5 s
    /// to close. Set [`ClientConfig::trust`] before connecting with TLS.
    pub fn new(jid: BareJid, password: impl Into<String>, server: SocketAddr) -> ClientConfig {
        ClientConfig {
            jid,
            password: password.into(),
            resource: None,
            server,
            tls: TlsMode::StartTls,
            trust: TrustMode::default(),
            tls_client_config: None,
            mechanisms: Mechanism::ALL
                .into_iter()
                .filter(|m| *m != Mechanism::Plain)
                .collect(),
            connect_timeout: Duration::from_secs(10),
            step_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            limits: client_limits(),
            scram_cache: None,
        }
    }

    /// Binds this resource.
    pub fn with_resource(mut self, resource: impl Into<String>) -> ClientConfig {
        self.resource = Some(resource.into());
        self
    }

    /// Sets the TLS mode.
    pub fn with_tls(mut self, tls: TlsMode) -> ClientConfig {
        self.tls = tls;
        self
    }

    /// Sets which certificates to accept.
    pub fn with_trust(mut self, trust: TrustMode) -> ClientConfig {
        self.trust = trust;
        self
    }

    /// Sets the SASL mechanisms, in order of preference.
    pub fn with_mechanisms(mut self, mechanisms: impl Into<Vec<Mechanism>>) -> ClientConfig {
        self.mechanisms = mechanisms.into();
        self
    }

    /// Shares a salted-password cache.
    pub fn with_scram_cache(mut self, cache: ScramCache) -> ClientConfig {
        self.scram_cache = Some(cache);
        self
    }

    fn credentials(&self) -> ClientCredentials {
        let user = self.jid.node().map_or("", |n| n.as_str());
        let c = ClientCredentials::new(user, &self.password);
        match &self.scram_cache {
            Some(cache) => c.with_cache(cache.clone()),
            None => c,
        }
    }

    fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        match &self.tls_client_config {
            Some(c) => Ok(c.clone()),
            None => tls_client_config(&self.trust, self.tls),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("jid", &self.jid)
            .field("resource", &self.resource)
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("trust", &self.trust)
            .field("mechanisms", &self.mechanisms)
            .finish_non_exhaustive()
    }
}

/// Why connecting, logging in or a later read or write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed (certificate not trusted, no common
    /// version, ...); the rustls error is inside.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The server did not answer in time; names what was awaited.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The server sent a stream error (its stream is over).
    #[error("stream error {}{}", .0.condition.name(), .0.text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
    StreamError(StreamError),
    /// The server closed its stream (`</stream:stream>`).
    #[error("the server closed the stream")]
    StreamClosed,
    /// The connection ended without the server closing its stream.
    #[error("the connection was closed")]
    Disconnected,
    /// SASL `<failure/>`: the condition's element name (`not-authorized`
    /// for a wrong password or unknown user) and the server's text.
    #[error("SASL failure {condition}")]
    SaslFailure {
        /// The condition, e.g. `not-authorized`.
        condition: String,
        /// The server's `<text/>`, if any.
        text: Option<String>,
    },
    /// The client side of SASL failed, e.g. the server's SCRAM signature
    /// did not verify.
    #[error("SASL: {0}")]
    Sasl(#[from] SaslClientError),
    /// None of the configured mechanisms is offered.
    #[error("no acceptable SASL mechanism among {offered:?}")]
    NoMechanism {
        /// What the server offered.
        offered: Vec<String>,
    },
    /// Resource binding was refused.
    #[error("resource binding failed: {}", .0.condition.name())]
    Bind(StanzaError),
    /// Session establishment was refused.
    #[error("session establishment failed: {}", .0.condition.name())]
    Session(StanzaError),
    /// The server's XML broke the stream rules or the client's limits.
    #[error("bad XML from the server: {0}")]
    Decode(DecodeError),
    /// The server did something out of protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The configuration cannot work (bad TLS server name, bad trust
    /// anchor, ...).
    #[error("configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The SASL failure condition, if this is one (`"not-authorized"`).
    pub fn sasl_condition(&self) -> Option<&str> {
        match self {
            ClientError::SaslFailure { condition, .. } => Some(condition),
            _ => None,
        }
    }

    /// The stream error, if this is one.
    pub fn stream_error(&self) -> Option<&StreamError> {
        match self {
            ClientError::StreamError(e) => Some(e),
            _ => None,
        }
    }
}

/// A logged-in client: a bound resource on an open stream. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Client {
    conn: RawConnection,
    jid: FullJid,
    mechanism: Mechanism,
    /// Stanzas read while [`Client::iq`] waited for its reply.
    pending: VecDeque<Element>,
    step_timeout: Duration,
    close_timeout: Duration,
}

impl Client {
    /// Connects over TCP to [`ClientConfig::server`] and logs in.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let conn = RawConnection::connect_with_limits(
            config.server,
            config.connect_timeout,
            config.limits.clone(),
        )
        .await?;
        Client::login(conn, &config).await
    }

    /// Logs in over an already connected stream (e.g. one end of
    /// `tokio::io::duplex`); with [`TlsMode::DirectTls`] the handshake runs
    /// on it first.
    pub async fn connect_with_stream<S>(
        stream: S,
        config: ClientConfig,
    ) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = RawConnection::from_stream_with_limits(stream, config.limits.clone());
        Client::login(conn, &config).await
    }

    async fn login(mut conn: RawConnection, config: &ClientConfig) -> Result<Client, ClientError> {
        let domain = config.jid.domain().as_str().to_owned();
        let t = config.step_timeout;
        if config.tls == TlsMode::DirectTls {
            conn.tls_handshake(&domain, config.rustls_config()?, t)
                .await?;
        }
        conn.open_stream(&domain).await?;
        let mut features = conn.read_features(t).await?;
        if config.tls == TlsMode::StartTls {
            if !features.has_child("starttls", ns::TLS) {
                return Err(ClientError::Protocol(
                    "the server does not offer STARTTLS".into(),
                ));
            }
            conn.starttls(&domain, config.rustls_config()?, t).await?;
            conn.open_stream(&domain).await?;
            features = conn.read_features(t).await?;
        }
        let mechanism = conn
            .authenticate(&features, config.credentials(), &config.mechanisms, t)
            .await?;
        conn.open_stream(&domain).await?;
        let features = conn.read_features(t).await?;
        if !features.has_child("bind", ns::BIND) {
            return Err(ClientError::Protocol(
                "the server does not offer resource binding".into(),
            ));
        }
        let jid = conn.bind(config.resource.as_deref(), t).await?;
        if let Some(s) = features.get_child("session", ns::SESSION)
            && !s.has_child("optional", ns::SESSION)
        {
            conn.establish_session(t).await?;
        }
        Ok(Client {
            conn,
            jid,
            mechanism,
            pending: VecDeque::new(),
            step_timeout: config.step_timeout,
            close_timeout: config.close_timeout,
        })
    }

    /// The bound full JID.
    pub fn jid(&self) -> &FullJid {
        &self.jid
    }

    /// The SASL mechanism the login used.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The connection underneath, to look at (TLS, binding data, the
    /// server's stream header).
    pub fn connection(&self) -> &RawConnection {
        &self.conn
    }

    /// The connection underneath, for tests that go on by hand after the
    /// login (raw writes, reading events).
    pub fn raw(&mut self) -> &mut RawConnection {
        &mut self.conn
    }

    /// Sends a stanza (written with `jabber:client` as the default
    /// namespace) and flushes.
    pub async fn send(&mut self, stanza: &Element) -> Result<(), ClientError> {
        self.conn.send(stanza).await
    }

    /// Buffers a stanza without writing it; [`Client::flush`] writes
    /// everything buffered at once (pipelining, as clients do when they
    /// have several stanzas to send).
    pub fn queue(&mut self, stanza: &Element) {
        self.conn.queue(stanza);
    }

    /// Writes the stanzas [`Client::queue`] buffered, and flushes.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.conn.flush().await
    }

    /// Sends bytes as they are and flushes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.conn.send_raw(bytes).await
    }

    /// Sends `<message type='chat' to=...><body>...</body></message>`.
    pub async fn send_message(&mut self, to: &str, body: &str) -> Result<(), ClientError> {
        let id = self.conn.next_id();
        let m = Element::builder("message", ns::JABBER_CLIENT)
            .attr("to", to)
            .attr("type", "chat")
            .attr("id", id)
            .append(
                Element::builder("body", ns::JABBER_CLIENT)
                    .text(body)
                    .build(),
            )
            .build();
        self.send(&m).await
    }

    /// Sends the initial presence, `<presence/>`.
    pub async fn send_presence(&mut self) -> Result<(), ClientError> {
        self.send(&Element::new("presence", ns::JABBER_CLIENT))
            .await
    }

    /// The next stanza. A stream error from the server is
    /// [`ClientError::StreamError`], its close [`ClientError::StreamClosed`],
    /// the connection's end [`ClientError::Disconnected`]. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Element, ClientError> {
        if let Some(el) = self.pending.pop_front() {
            return Ok(el);
        }
        self.conn.next_element().await
    }

    /// [`Client::recv`] within `timeout`, else [`ClientError::Timeout`].
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Element, ClientError> {
        raw::within(timeout, "waiting for a stanza", self.recv()).await
    }

    /// Sends an IQ (an `id` is added if it has none) and returns the reply
    /// with its id, of type `result` or `error`, within the step timeout.
    /// Stanzas that arrive meanwhile are kept for [`Client::recv`].
    pub async fn iq(&mut self, mut iq: Element) -> Result<Element, ClientError> {
        let id = match iq.attr("id") {
            Some(id) => id.to_owned(),
            None => {
                let id = self.conn.next_id();
                iq.set_attr("id", id.clone());
                id
            }
        };
        self.send(&iq).await?;
        let pending = &mut self.pending;
        let conn = &mut self.conn;
        raw::within(self.step_timeout, "waiting for the IQ reply", async {
            loop {
                let el = conn.next_element().await?;
                if el.is("iq", ns::JABBER_CLIENT)
                    && el.attr("id") == Some(id.as_str())
                    && matches!(el.attr("type"), Some("result" | "error"))
                {
                    return Ok(el);
                }
                pending.push_back(el);
            }
        })
        .await
    }

    /// Closes: sends `</stream:stream>`, then waits (up to the close
    /// timeout) for the server's close or the end of the connection,
    /// dropping stanzas that still arrive, and shuts the socket down.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.conn.send_close().await?;
        self.conn.expect_closed(self.close_timeout).await?;
        // The peer may be gone already; nothing more to do then.
        let _ = self.conn.shutdown().await;
        Ok(())
    }
}
