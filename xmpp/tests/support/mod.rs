//! Shared helpers of the c2s end-to-end tests: a server on port-0
//! listeners with a tempdir, clients over a TCP stream whose end can still
//! be observed after the XMPP stream closed, and assertions on stream
//! errors.
// Helpers of tests: a step that fails fails the test, as in a #[test].
#![allow(dead_code, clippy::unwrap_used)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use beamline_xmpp::client::{Client, ClientConfig, ClientError, RawConnection, TrustMode};
use beamline_xmpp::config::{Config, ListenerConfig, ListenerKind};
use beamline_xmpp::sasl::Mechanism;
use beamline_xmpp::sasl::client::ClientCredentials;
use beamline_xmpp::server::{Server, ServerOptions};
use beamline_xmpp::{BareJid, Element, FullJid, StreamEvent, ns};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The domain every test serves.
pub const DOMAIN: &str = "localhost";

/// Limit of one wait for the server (generous: the machine may be loaded).
pub const T: Duration = Duration::from_secs(20);

/// A running server with its data directory.
pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

fn listener(kind: ListenerKind) -> ListenerConfig {
    ListenerConfig::new(kind, IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
}

impl TestServer {
    /// A server with a `c2s` (STARTTLS required) and a `c2s_tls` listener
    /// on port 0, everything in memory, no modules; `tweak` may change the
    /// config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        config.listeners = vec![listener(ListenerKind::C2s), listener(ListenerKind::C2sTls)];
        // The tests exercise channel binding: offer every mechanism (the
        // default list leaves the -PLUS ones out).
        config.auth.mechanisms = beamline_xmpp::config::SaslMechanism::ALL.to_vec();
        // The core server only (no offline storage, no IQ handlers): what
        // these tests check is routing and the stream as such. A test that
        // wants modules adds them in `tweak`.
        config.modules.clear();
        tweak(&mut config);
        // Actor names are process-wide: one node name per server.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let options = ServerOptions::in_memory().node_name(format!("test{n}@localhost"));
        let server = tokio::time::timeout(T, Server::start(config, options))
            .await
            .expect("server start timed out")
            .expect("server start");
        TestServer { server, dir }
    }

    /// [`TestServer::start_with`] the defaults.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// The `c2s` listener's address.
    pub fn c2s(&self) -> SocketAddr {
        self.server.listener_addr(ListenerKind::C2s).unwrap()
    }

    /// The `c2s_tls` listener's address.
    pub fn c2s_tls(&self) -> SocketAddr {
        self.server.listener_addr(ListenerKind::C2sTls).unwrap()
    }

    /// Registers `user@localhost` with `password`.
    pub async fn register(&self, user: &str, password: &str) {
        self.server.register(user, DOMAIN, password).await.unwrap();
    }

    /// A client configuration for `user@localhost` on the `c2s` listener.
    pub fn config(&self, user: &str, password: &str) -> ClientConfig {
        // Without TCP listeners (in-memory tests) the address is unused.
        let addr = self
            .server
            .listener_addr(ListenerKind::C2s)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1)));
        let mut c =
            ClientConfig::new(bare(user), password, addr).with_trust(TrustMode::AcceptAnyForTests);
        c.step_timeout = T;
        c.close_timeout = T;
        c
    }

    /// Logs `user` in over TCP with STARTTLS and SCRAM.
    pub async fn login(&self, user: &str, password: &str, resource: Option<&str>) -> Client {
        let mut c = self.config(user, password);
        c.resource = resource.map(str::to_owned);
        Client::connect(c).await.unwrap()
    }

    /// Logs in like [`TestServer::login`], over a [`ProbedTcp`] kept for
    /// checking that the server closes the connection.
    pub async fn login_probed(
        &self,
        user: &str,
        password: &str,
        resource: Option<&str>,
    ) -> (Client, ProbedTcp) {
        let tcp = ProbedTcp::connect(self.c2s()).await;
        let mut c = self.config(user, password);
        c.resource = resource.map(str::to_owned);
        let client = Client::connect_with_stream(tcp.clone(), c).await.unwrap();
        (client, tcp)
    }

    /// Stops the server (bounded).
    pub async fn stop(self) {
        tokio::time::timeout(T * 2, self.server.stop(T))
            .await
            .expect("server stop timed out")
            .unwrap();
    }
}

/// `user@localhost`.
pub fn bare(user: &str) -> BareJid {
    BareJid::new(&format!("{user}@{DOMAIN}")).unwrap()
}

/// A TCP stream shared between a [`RawConnection`] (or a [`Client`]) and
/// the test: after the XMPP stream ended, the test reads the socket itself
/// to see the connection's end, which `RawConnection` does not report
/// once it has seen `</stream:stream>`. Under TLS the test reads the
/// encrypted bytes (the `close_notify`), then the end.
#[derive(Clone)]
pub struct ProbedTcp(Arc<Mutex<TcpStream>>);

impl ProbedTcp {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> ProbedTcp {
        let s = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect");
        s.set_nodelay(true).unwrap();
        ProbedTcp(Arc::new(Mutex::new(s)))
    }

    /// A raw connection over this stream.
    pub fn raw(&self) -> RawConnection {
        RawConnection::from_stream(self.clone())
    }

    /// Reads the socket until the server closes it; panics if it stays
    /// open. A reset counts as closed (the server may close with unread
    /// input, which makes the kernel send RST).
    pub async fn expect_eof(&self) {
        let r = tokio::time::timeout(T, async {
            let mut buf = [0u8; 4096];
            loop {
                let n = std::future::poll_fn(|cx| {
                    let mut rb = ReadBuf::new(&mut buf);
                    let mut s = self.0.lock().unwrap();
                    match Pin::new(&mut *s).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await;
                match n {
                    Ok(0) => return,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
                    Err(e) => panic!("reading to the end of the connection: {e}"),
                }
            }
        })
        .await;
        assert!(r.is_ok(), "the server did not close the connection");
    }
}

impl AsyncRead for ProbedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = self.0.lock().unwrap();
        Pin::new(&mut *s).poll_read(cx, buf)
    }
}

impl AsyncWrite for ProbedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.0.lock().unwrap();
        Pin::new(&mut *s).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.0.lock().unwrap();
        Pin::new(&mut *s).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.0.lock().unwrap();
        Pin::new(&mut *s).poll_shutdown(cx)
    }
}

/// The condition name of a `<stream:error/>`.
fn condition_of(el: &Element) -> String {
    el.children()
        .find(|c| c.ns() == ns::XMPP_STREAMS && c.name() != "text")
        .map_or_else(|| "<none>".to_owned(), |c| c.name().to_owned())
}

/// Reads until a stream error, skipping stream headers and features only
/// (anything else first is a failure); asserts its condition is
/// `condition`, that `</stream:stream>` follows at once, and that the
/// server then closes the connection.
pub async fn expect_stream_error(conn: &mut RawConnection, tcp: &ProbedTcp, condition: &str) {
    loop {
        match conn.next_event_timeout(T).await {
            Ok(StreamEvent::StreamOpen(_)) => {}
            Ok(StreamEvent::Stanza(el)) if el.is("features", ns::STREAM) => {}
            Ok(StreamEvent::Stanza(el)) if el.is("error", ns::STREAM) => {
                assert_eq!(
                    condition_of(&el),
                    condition,
                    "stream error {}",
                    String::from_utf8_lossy(&el.to_bytes())
                );
                break;
            }
            other => panic!("expected stream error {condition}, got {other:?}"),
        }
    }
    expect_close_then_eof(conn, tcp).await;
}

/// Asserts that the next event is the server's `</stream:stream>` and that
/// the connection then ends.
pub async fn expect_close_then_eof(conn: &mut RawConnection, tcp: &ProbedTcp) {
    match conn.next_event_timeout(T).await {
        Ok(StreamEvent::StreamClose) => {}
        other => panic!("expected </stream:stream>, got {other:?}"),
    }
    tcp.expect_eof().await;
}

/// For a logged-in [`Client`]: the next thing it reads is the stream error
/// `condition`, then the close tag, then the end of the connection.
pub async fn expect_client_stream_error(client: &mut Client, tcp: &ProbedTcp, condition: &str) {
    match client.recv_timeout(T).await {
        Err(ClientError::StreamError(e)) => assert_eq!(e.condition.name(), condition, "{e:?}"),
        other => panic!("expected stream error {condition}, got {other:?}"),
    }
    expect_close_then_eof(client.raw(), tcp).await;
}

/// Opens a stream to `localhost` over a new probed connection and reads
/// the features.
pub async fn open_raw(addr: SocketAddr) -> (RawConnection, ProbedTcp, Element) {
    let tcp = ProbedTcp::connect(addr).await;
    let mut conn = tcp.raw();
    conn.open_stream(DOMAIN).await.unwrap();
    let features = conn.read_features(T).await.unwrap();
    (conn, tcp, features)
}

/// STARTTLS on an open stream (features already read), then the new
/// stream's features.
pub async fn starttls(conn: &mut RawConnection) -> Element {
    let tls = beamline_xmpp::client::tls_client_config(
        &TrustMode::AcceptAnyForTests,
        beamline_xmpp::client::TlsMode::StartTls,
    )
    .unwrap();
    conn.starttls(DOMAIN, tls, T).await.unwrap();
    conn.open_stream(DOMAIN).await.unwrap();
    conn.read_features(T).await.unwrap()
}

/// A raw connection taken through STARTTLS, SCRAM and binding by hand:
/// the connection, its socket, the bound JID and the mechanism used.
pub async fn raw_login(
    addr: SocketAddr,
    user: &str,
    password: &str,
    mechanisms: &[Mechanism],
    resource: Option<&str>,
) -> (RawConnection, ProbedTcp, FullJid, Mechanism) {
    let (mut conn, tcp, _) = open_raw(addr).await;
    let features = starttls(&mut conn).await;
    let mech = conn
        .authenticate(
            &features,
            ClientCredentials::new(user, password),
            mechanisms,
            T,
        )
        .await
        .unwrap();
    conn.open_stream(DOMAIN).await.unwrap();
    let features = conn.read_features(T).await.unwrap();
    assert!(features.has_child("bind", ns::BIND));
    let jid = conn.bind(resource, T).await.unwrap();
    (conn, tcp, jid, mech)
}

/// Names of the SASL mechanisms in `features`.
pub fn mechanisms(features: &Element) -> Vec<String> {
    features
        .get_child("mechanisms", ns::SASL)
        .map(|m| {
            m.children()
                .filter(|c| c.is("mechanism", ns::SASL))
                .map(|c| c.text().trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `<message type='chat' to=... id=...><body>...</body></message>`.
pub fn message(to: &str, id: &str, body: &str) -> Element {
    Element::builder("message", ns::JABBER_CLIENT)
        .attr("to", to)
        .attr("type", "chat")
        .attr("id", id)
        .append(
            Element::builder("body", ns::JABBER_CLIENT)
                .text(body)
                .build(),
        )
        .build()
}

/// The stanza error condition of an error reply, with a check that it is
/// one.
pub fn error_condition(stanza: &Element) -> String {
    assert_eq!(
        stanza.attr("type"),
        Some("error"),
        "not an error: {}",
        String::from_utf8_lossy(&stanza.to_bytes())
    );
    beamline_xmpp::StanzaError::from_stanza(stanza)
        .unwrap_or_else(|| {
            panic!(
                "no stanza error in {}",
                String::from_utf8_lossy(&stanza.to_bytes())
            )
        })
        .condition
        .name()
        .to_owned()
}

/// Waits (bounded) until the server reports `n` local sessions.
pub async fn wait_sessions(server: &Server, n: usize) {
    let r = tokio::time::timeout(T, async {
        while server.sessions().local_count() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "expected {n} sessions, have {}",
        server.sessions().local_count()
    );
}

/// A round trip through the client's own session: an IQ to the server
/// that it answers (with an error); when the reply is in, everything the
/// client sent before has been handled by its session.
pub async fn sync(client: &mut Client) {
    let iq = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .attr("to", DOMAIN)
        .append(Element::new("query", "urn:beamline:test:sync"))
        .build();
    let reply = client.iq(iq).await.unwrap();
    assert!(matches!(reply.attr("type"), Some("result" | "error")));
}
