//! SASL, server side (RFC 6120 §6): SCRAM-SHA-1/256/512 and their -PLUS
//! variants (RFC 5802, RFC 7677, channel binding per RFC 5929 and RFC 9266),
//! and PLAIN (RFC 4616).
//!
//! This is a pure state machine: no I/O, no logging of payloads. The c2s
//! session drives one [`ServerSession`] per `<auth/>`:
//!
//! 1. [`ServerSession::new`] with the mechanism the client chose and the
//!    [`ChannelBinding`] data of its TLS connection.
//! 2. [`ServerSession::step`] with the decoded initial response (if the
//!    `<auth/>` carried none, send an empty `<challenge/>` first and feed
//!    the `<response/>` instead). It answers [`Step::NeedCredentials`]
//!    (SCRAM answers a [`Step::Challenge`] at once for a user name that no
//!    account can have, as if the user were absent: handle every [`Step`]
//!    at every point).
//! 3. The caller looks the user up in storage (async) and hands the result
//!    to [`ServerSession::provide`]; `None` for a user that does not exist.
//!    SCRAM answers a [`Step::Challenge`] (server-first), which looks the
//!    same for a user that does not exist (salt and iteration count derived
//!    from the user name and [`SaslConfig`]'s secret); PLAIN answers
//!    [`Step::Success`] or fails.
//! 4. SCRAM: [`ServerSession::step`] with the client-final message answers
//!    [`Step::Success`] whose `additional_data` (server-final) goes into the
//!    `<success/>` element.
//!
//! Every error is a [`SaslError`] whose [`SaslError::condition`] is the
//! `<failure/>` child to send. After an error or a success the session is
//! finished; any further call fails with `malformed-request`.
//!
//! Stored credentials are [`ScramCredential`]s (no passwords):
//! [`scram_credential`] and [`account_credentials`] make them.

mod channel_binding;
pub mod client;
mod plain;
mod scram;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
pub use beamline_storage::backend::{ScramCredential, ScramHash};

use crate::jid::{BareJid, DomainPart, NodePart};
use crate::ns::SASL as NS_SASL;
use crate::xml::Element;

pub use channel_binding::{TLS_EXPORTER_LABEL, TLS_EXPORTER_LENGTH, tls_server_end_point};
pub use scram::{
    CredentialError, DEFAULT_ITERATIONS, account_credentials, scram_credential,
    scram_credential_with_salt,
};

/// The namespace of XEP-0440 (SASL channel-binding type capability);
/// the SASL one is [`crate::ns::SASL`].
pub const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";

/// A SASL mechanism this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// PLAIN (RFC 4616): only over TLS.
    Plain,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// SCRAM-SHA-1-PLUS, with channel binding.
    ScramSha1Plus,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-256-PLUS, with channel binding.
    ScramSha256Plus,
    /// SCRAM-SHA-512.
    ScramSha512,
    /// SCRAM-SHA-512-PLUS, with channel binding.
    ScramSha512Plus,
}

impl Mechanism {
    /// Every mechanism, strongest first (the order to advertise them in).
    pub const ALL: [Mechanism; 7] = [
        Mechanism::ScramSha512Plus,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha512,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The IANA name, as in `<mechanism/>` and `<auth mechanism=.../>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::ScramSha512Plus => "SCRAM-SHA-512-PLUS",
        }
    }

    /// The mechanism of a name (exact, case-sensitive as SASL names are).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SCRAM hash, or `None` for PLAIN.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            Mechanism::ScramSha512 | Mechanism::ScramSha512Plus => Some(ScramHash::Sha512),
        }
    }

    /// Whether this is a -PLUS (channel binding) variant.
    pub fn is_plus(self) -> bool {
        matches!(
            self,
            Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus | Mechanism::ScramSha512Plus
        )
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The mechanisms to advertise on a connection, strongest first: the -PLUS
/// variants only where `cb` has binding data (the server then refuses a
/// client's `y` flag, RFC 5802 §6), PLAIN only if `allow_plain` (the caller
/// allows it only over TLS).
pub fn advertised_mechanisms(cb: &ChannelBinding, allow_plain: bool) -> Vec<Mechanism> {
    Mechanism::ALL
        .into_iter()
        .filter(|m| !m.is_plus() || cb.is_supported())
        .filter(|m| *m != Mechanism::Plain || allow_plain)
        .collect()
}

/// The `<mechanisms/>` stream feature for `mechanisms`.
pub fn mechanisms_element(mechanisms: &[Mechanism]) -> Element {
    Element::builder("mechanisms", NS_SASL)
        .append_all(mechanisms.iter().map(|m| {
            Element::builder("mechanism", NS_SASL)
                .text(m.name())
                .build()
        }))
        .build()
}

/// A channel binding type (RFC 5056 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelBindingType {
    /// `tls-exporter` (RFC 9266): for TLS 1.3, preferred.
    TlsExporter,
    /// `tls-server-end-point` (RFC 5929): the hash of the server
    /// certificate; works with TLS 1.2 and 1.3.
    TlsServerEndPoint,
}

impl ChannelBindingType {
    /// The name as in a GS2 header `p=` and XEP-0440's `type`.
    pub fn name(self) -> &'static str {
        match self {
            ChannelBindingType::TlsExporter => "tls-exporter",
            ChannelBindingType::TlsServerEndPoint => "tls-server-end-point",
        }
    }

    /// The type of a name; `None` for a type this server does not know
    /// (e.g. `tls-unique`, which TLS 1.3 lacks).
    pub fn from_name(name: &str) -> Option<ChannelBindingType> {
        match name {
            "tls-exporter" => Some(ChannelBindingType::TlsExporter),
            "tls-server-end-point" => Some(ChannelBindingType::TlsServerEndPoint),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelBindingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The channel binding data of one connection, as the caller got it from
/// rustls: `tls-exporter` is the 32-byte exporter keying material with label
/// `EXPORTER-Channel-Binding` and no context (RFC 9266, TLS 1.3 only; see
/// [`TLS_EXPORTER_LABEL`]); `tls-server-end-point` is the hash of the
/// server's certificate (RFC 5929 §4.1; see [`tls_server_end_point`]).
///
/// Without any (no TLS, or data not available) the -PLUS mechanisms are not
/// offered and a client's `y` flag is accepted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChannelBinding {
    tls_exporter: Option<Vec<u8>>,
    tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBinding {
    /// No channel binding (plain TCP, or TLS without binding data).
    pub fn none() -> ChannelBinding {
        ChannelBinding::default()
    }

    /// Adds `tls-exporter` data.
    pub fn with_tls_exporter(mut self, data: Vec<u8>) -> ChannelBinding {
        self.tls_exporter = Some(data);
        self
    }

    /// Adds `tls-server-end-point` data.
    pub fn with_tls_server_end_point(mut self, data: Vec<u8>) -> ChannelBinding {
        self.tls_server_end_point = Some(data);
        self
    }

    /// Whether any binding type is available (then -PLUS is advertised).
    pub fn is_supported(&self) -> bool {
        self.tls_exporter.is_some() || self.tls_server_end_point.is_some()
    }

    /// The types available, preferred first (what XEP-0440 advertises).
    pub fn types(&self) -> Vec<ChannelBindingType> {
        let mut v = Vec::new();
        if self.tls_exporter.is_some() {
            v.push(ChannelBindingType::TlsExporter);
        }
        if self.tls_server_end_point.is_some() {
            v.push(ChannelBindingType::TlsServerEndPoint);
        }
        v
    }

    /// The binding data of one type, if available.
    pub fn data(&self, ty: ChannelBindingType) -> Option<&[u8]> {
        match ty {
            ChannelBindingType::TlsExporter => self.tls_exporter.as_deref(),
            ChannelBindingType::TlsServerEndPoint => self.tls_server_end_point.as_deref(),
        }
    }
}

// By hand: the binding data is key material of the TLS session.
impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBinding")
            .field("types", &self.types())
            .finish()
    }
}

/// The XEP-0440 `<sasl-channel-binding/>` stream feature listing the types
/// of `cb`, or `None` if it has none (then nothing is advertised).
pub fn channel_binding_element(cb: &ChannelBinding) -> Option<Element> {
    let types = cb.types();
    if types.is_empty() {
        return None;
    }
    Some(
        Element::builder("sasl-channel-binding", NS_SASL_CB)
            .append_all(types.into_iter().map(|t| {
                Element::builder("channel-binding", NS_SASL_CB)
                    .attr("type", t.name())
                    .build()
            }))
            .build(),
    )
}

/// A SASL failure condition (RFC 6120 §6.5), the child of `<failure/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaslCondition {
    /// The client aborted (`<abort/>`).
    Aborted,
    /// The account is disabled.
    AccountDisabled,
    /// The credentials have expired.
    CredentialsExpired,
    /// The mechanism needs an encrypted stream.
    EncryptionRequired,
    /// The base64 of the element content is bad.
    IncorrectEncoding,
    /// The authorization identity is not allowed.
    InvalidAuthzid,
    /// The mechanism is not supported (or not offered here).
    InvalidMechanism,
    /// The request is malformed.
    MalformedRequest,
    /// The mechanism is weaker than policy allows.
    MechanismTooWeak,
    /// Authentication failed.
    NotAuthorized,
    /// A temporary error on the server side.
    TemporaryAuthFailure,
}

impl SaslCondition {
    /// The element name, e.g. `not-authorized`.
    pub fn element_name(self) -> &'static str {
        match self {
            SaslCondition::Aborted => "aborted",
            SaslCondition::AccountDisabled => "account-disabled",
            SaslCondition::CredentialsExpired => "credentials-expired",
            SaslCondition::EncryptionRequired => "encryption-required",
            SaslCondition::IncorrectEncoding => "incorrect-encoding",
            SaslCondition::InvalidAuthzid => "invalid-authzid",
            SaslCondition::InvalidMechanism => "invalid-mechanism",
            SaslCondition::MalformedRequest => "malformed-request",
            SaslCondition::MechanismTooWeak => "mechanism-too-weak",
            SaslCondition::NotAuthorized => "not-authorized",
            SaslCondition::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    /// The condition of an element name.
    pub fn from_element_name(name: &str) -> Option<SaslCondition> {
        const ALL: [SaslCondition; 11] = [
            SaslCondition::Aborted,
            SaslCondition::AccountDisabled,
            SaslCondition::CredentialsExpired,
            SaslCondition::EncryptionRequired,
            SaslCondition::IncorrectEncoding,
            SaslCondition::InvalidAuthzid,
            SaslCondition::InvalidMechanism,
            SaslCondition::MalformedRequest,
            SaslCondition::MechanismTooWeak,
            SaslCondition::NotAuthorized,
            SaslCondition::TemporaryAuthFailure,
        ];
        ALL.into_iter().find(|c| c.element_name() == name)
    }

    /// `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><COND/>[<text/>]</failure>`.
    pub fn failure_element(self, text: Option<&str>) -> Element {
        let mut b =
            Element::builder("failure", NS_SASL).append(Element::new(self.element_name(), NS_SASL));
        if let Some(t) = text {
            b = b.append(Element::builder("text", NS_SASL).text(t).build());
        }
        b.build()
    }
}

impl fmt::Display for SaslCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.element_name())
    }
}

/// A failed SASL exchange: the condition to send, and a short reason for
/// the server's own log (never a secret or a payload; not to be sent to
/// the client, which would help an attacker tell cases apart).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SASL {condition}: {reason}")]
#[non_exhaustive]
pub struct SaslError {
    /// The `<failure/>` condition.
    pub condition: SaslCondition,
    /// Why, for the log.
    pub reason: &'static str,
}

impl SaslError {
    /// An error with a condition and a reason.
    pub fn new(condition: SaslCondition, reason: &'static str) -> SaslError {
        SaslError { condition, reason }
    }

    /// The `<failure/>` condition.
    pub fn condition(&self) -> SaslCondition {
        self.condition
    }

    pub(crate) fn malformed(reason: &'static str) -> SaslError {
        SaslError::new(SaslCondition::MalformedRequest, reason)
    }

    pub(crate) fn not_authorized(reason: &'static str) -> SaslError {
        SaslError::new(SaslCondition::NotAuthorized, reason)
    }
}

/// Decodes the base64 content of `<auth/>` or `<response/>` (RFC 6120
/// §6.4.2: `=` stands for an empty response); bad base64 is
/// `incorrect-encoding`. Whitespace around the text is ignored.
pub fn decode_payload(text: &str) -> Result<Vec<u8>, SaslError> {
    let t = text.trim();
    if t == "=" {
        return Ok(Vec::new());
    }
    B64.decode(t)
        .map_err(|_| SaslError::new(SaslCondition::IncorrectEncoding, "bad base64"))
}

/// Encodes a challenge or success payload as element content (`=` for an
/// empty one, RFC 6120 §6.4.2).
pub fn encode_payload(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_owned()
    } else {
        B64.encode(data)
    }
}

/// Server-wide SASL settings, shared by the sessions of a virtual host.
#[derive(Clone)]
pub struct SaslConfig {
    domain: String,
    secret: [u8; 32],
    fake_iterations: u32,
}

impl SaslConfig {
    /// Settings for virtual host `domain`. `secret` keys the salts answered
    /// for users that do not exist: keep it stable across restarts and the
    /// same on every node of the cluster, or an attacker who asks twice sees
    /// the salt change and knows the user is not there.
    pub fn new(domain: impl Into<String>, secret: [u8; 32]) -> SaslConfig {
        SaslConfig {
            domain: domain.into(),
            secret,
            fake_iterations: DEFAULT_ITERATIONS,
        }
    }

    /// The iteration count answered for users that do not exist: set it to
    /// what accounts are created with (default [`DEFAULT_ITERATIONS`]).
    pub fn with_fake_iterations(mut self, iterations: u32) -> SaslConfig {
        self.fake_iterations = iterations.max(1);
        self
    }

    /// The virtual host.
    pub fn domain(&self) -> &str {
        &self.domain
    }
}

// By hand: the secret must not reach a log.
impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("domain", &self.domain)
            .field("fake_iterations", &self.fake_iterations)
            .finish_non_exhaustive()
    }
}

/// What a step of the exchange asks the caller to do next.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Send `<challenge/>` with these bytes and feed the `<response/>` to
    /// [`ServerSession::step`].
    Challenge(Vec<u8>),
    /// Look up this user's credentials (normalized local part) and call
    /// [`ServerSession::provide`].
    NeedCredentials {
        /// The user name, nodeprep'd.
        username: String,
    },
    /// Authenticated: send `<success/>` with `additional_data`, if any.
    Success {
        /// The authenticated user (normalized local part); the bare JID is
        /// `authcid@domain`.
        authcid: String,
        /// The authorization identity the client gave, if any (it was
        /// checked to be the authcid's bare JID).
        authzid: Option<String>,
        /// SCRAM's server-final message, for the `<success/>` element.
        additional_data: Option<Vec<u8>>,
    },
}

// By hand: challenges carry SASL payloads.
impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Challenge(c) => write!(f, "Challenge({} bytes)", c.len()),
            Step::NeedCredentials { username } => f
                .debug_struct("NeedCredentials")
                .field("username", username)
                .finish(),
            Step::Success {
                authcid,
                authzid,
                additional_data,
            } => f
                .debug_struct("Success")
                .field("authcid", authcid)
                .field("authzid", authzid)
                .field(
                    "additional_data_len",
                    &additional_data.as_ref().map(Vec::len),
                )
                .finish(),
        }
    }
}

enum Inner {
    Scram(Box<scram::ScramServer>),
    Plain(plain::PlainServer),
    Finished,
}

/// One server-side authentication attempt. See the [module docs](self).
pub struct ServerSession {
    mechanism: Mechanism,
    inner: Inner,
}

impl ServerSession {
    /// Starts an attempt with `mechanism` on a connection whose binding
    /// data is `cb`. A -PLUS mechanism without binding data is
    /// `invalid-mechanism` (it was not offered).
    pub fn new(
        mechanism: Mechanism,
        cb: ChannelBinding,
        config: &SaslConfig,
    ) -> Result<ServerSession, SaslError> {
        let inner = match mechanism.scram_hash() {
            None => Inner::Plain(plain::PlainServer::new(config)),
            Some(hash) => {
                if mechanism.is_plus() && !cb.is_supported() {
                    return Err(SaslError::new(
                        SaslCondition::InvalidMechanism,
                        "-PLUS without channel binding data",
                    ));
                }
                Inner::Scram(Box::new(scram::ScramServer::new(
                    hash,
                    mechanism.is_plus(),
                    cb,
                    config,
                )))
            }
        };
        Ok(ServerSession { mechanism, inner })
    }

    /// The mechanism of this attempt.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the attempt is over (succeeded or failed).
    pub fn is_finished(&self) -> bool {
        matches!(self.inner, Inner::Finished)
    }

    /// Feeds a client message (the decoded initial response or
    /// `<response/>`).
    pub fn step(&mut self, input: &[u8]) -> Result<Step, SaslError> {
        let r = match &mut self.inner {
            Inner::Scram(s) => s.step(input),
            Inner::Plain(p) => p.step(input),
            Inner::Finished => Err(SaslError::malformed("exchange is over")),
        };
        self.settle(r)
    }

    /// Hands over the user's stored credentials after
    /// [`Step::NeedCredentials`] (`None`: no such user). The credential of
    /// the mechanism's hash is used; a user without one is treated as
    /// absent.
    pub fn provide(&mut self, credentials: Option<&[ScramCredential]>) -> Result<Step, SaslError> {
        let r = match &mut self.inner {
            Inner::Scram(s) => s.provide(credentials),
            Inner::Plain(p) => p.provide(credentials),
            Inner::Finished => Err(SaslError::malformed("exchange is over")),
        };
        self.settle(r)
    }

    /// The client sent `<abort/>`: ends the attempt; send the returned
    /// error's `aborted` condition.
    pub fn abort(&mut self) -> SaslError {
        self.inner = Inner::Finished;
        SaslError::new(SaslCondition::Aborted, "client aborted")
    }

    /// Test hook: fixes the server nonce (to reproduce the RFC test
    /// vectors). Not for production: a fixed nonce allows replay.
    #[doc(hidden)]
    pub fn set_server_nonce_for_tests(&mut self, nonce: &str) {
        if let Inner::Scram(s) = &mut self.inner {
            s.set_server_nonce(nonce);
        }
    }

    fn settle(&mut self, r: Result<Step, SaslError>) -> Result<Step, SaslError> {
        // A failure or a success ends the attempt; the client must start a
        // new <auth/>.
        if matches!(r, Err(_) | Ok(Step::Success { .. })) {
            self.inner = Inner::Finished;
        }
        r
    }
}

// By hand: the state holds proofs, keys and (PLAIN) a password.
impl fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.inner {
            Inner::Scram(s) => s.state_name(),
            Inner::Plain(p) => p.state_name(),
            Inner::Finished => "finished",
        };
        f.debug_struct("ServerSession")
            .field("mechanism", &self.mechanism)
            .field("state", &state)
            .finish()
    }
}

/// Normalizes a SASL user name to the local part of a JID (SASLprep, then
/// nodeprep, which case-folds); `None` if it cannot be one. Some clients
/// send their bare JID instead: accepted when its domain is ours.
fn normalize_username(name: &str, domain: &str) -> Option<String> {
    let prepped = stringprep::saslprep(name).ok()?;
    if prepped.contains('@') {
        let jid = BareJid::new(&prepped).ok()?;
        let ours = DomainPart::new(domain).ok()?;
        if jid.domain().as_str() != ours.as_str() {
            return None;
        }
        return jid.node().map(|n| n.as_str().to_owned());
    }
    let node = NodePart::new(&prepped).ok()?;
    Some(node.as_str().to_owned())
}

/// Checks an authzid: allowed only if it is the bare JID of the user.
fn check_authzid(authzid: &str, username: &str, domain: &str) -> Result<(), SaslError> {
    let given = BareJid::new(authzid);
    let own = BareJid::new(&format!("{username}@{domain}"));
    match (given, own) {
        (Ok(g), Ok(o)) if g == o => Ok(()),
        _ => Err(SaslError::new(
            SaslCondition::InvalidAuthzid,
            "authzid is not the user's bare JID",
        )),
    }
}
