//! SASL, client side: SCRAM-SHA-1/256/512 and their -PLUS variants (RFC
//! 5802, RFC 7677, channel binding per RFC 5929 and RFC 9266), and PLAIN
//! (RFC 4616). Used by the client library (`crate::client`); a pure state machine like the
//! server side, without I/O and without logging of payloads.
//!
//! 1. [`ClientSession::new`] with the mechanism, the [`ClientCredentials`]
//!    and the GS2 channel binding choice ([`Gs2Flag`]).
//! 2. [`ClientSession::initial_response`]: the bytes for `<auth/>`.
//! 3. [`ClientSession::challenge`] for each `<challenge/>`: the bytes for
//!    `<response/>`. SCRAM answers the server-first message with the
//!    client-final one; a server that sends its server-final message in a
//!    challenge (older servers) gets an empty response.
//! 4. [`ClientSession::success`] with the `<success/>` payload: SCRAM
//!    checks the server signature there (or checks that it was checked in
//!    step 3). A wrong server signature is an error: the server does not
//!    know the credentials, whatever it said.
//!
//! PBKDF2 is the expensive part (thousands of HMAC rounds). A client that
//! logs in many times keeps the [`SaltedPassword`] for a (salt, iteration
//! count), as real clients do: pass it with
//! [`ClientCredentials::with_salted_password`], or share a [`ScramCache`]
//! between sessions.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::Hmac;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::scram::{digest, hmac, out_len};
use super::{ChannelBindingType, Mechanism, ScramHash};

/// The largest iteration count accepted from a server: more would let a
/// hostile server make the client burn seconds of CPU per login.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Why the client side of an exchange failed (the server's own
/// `<failure/>` is reported by the caller, not here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslClientError {
    /// The user name is empty or SASLprep (RFC 4013) rejects it.
    #[error("user name is empty or not allowed by SASLprep")]
    InvalidUsername,
    /// The password is empty or SASLprep rejects it.
    #[error("password is empty or not allowed by SASLprep")]
    InvalidPassword,
    /// A -PLUS mechanism without channel binding data, or binding data with
    /// a mechanism that is not -PLUS.
    #[error("channel binding does not fit the mechanism")]
    ChannelBinding,
    /// The server's message does not parse.
    #[error("malformed server message: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend ours.
    #[error("server nonce does not start with the client nonce")]
    NonceMismatch,
    /// The iteration count is 0 or above [`MAX_ITERATIONS`].
    #[error("iteration count {0} out of range")]
    Iterations(u32),
    /// The server signature is wrong: the server does not hold the
    /// credentials (or the exchange was tampered with).
    #[error("server signature does not verify")]
    ServerSignature,
    /// The server ended the exchange with `e=` (RFC 5802 §7).
    #[error("server error: {0}")]
    ServerError(String),
    /// The server claims success without having proved itself.
    #[error("success without a server signature")]
    MissingServerSignature,
    /// A message at a point where none is expected.
    #[error("unexpected message in this state")]
    UnexpectedMessage,
    /// The random source or the crypto crates failed.
    #[error("crypto failure")]
    Crypto,
}

/// Bytes zeroed when dropped (passwords and salted passwords).
#[derive(Clone)]
struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keep the zeroing from being optimized away as a dead store.
        std::hint::black_box(&self.0);
    }
}

/// `SaltedPassword = Hi(Normalize(password), salt, i)` (RFC 5802 §3) for
/// one hash, salt and iteration count: what a client caches to skip PBKDF2
/// on the next login. As good as the password; its `Debug` leaves it out.
#[derive(Clone)]
pub struct SaltedPassword {
    hash: ScramHash,
    salt: Vec<u8>,
    iterations: u32,
    key: Secret,
}

impl SaltedPassword {
    /// Runs PBKDF2 over a password (SASLprep'd here).
    pub fn derive(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<SaltedPassword, SaslClientError> {
        let prepped = prep_password(password)?;
        derive_salted(hash, &prepped.0, salt, iterations)
    }

    /// The hash function.
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// The salt it was made with.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The iteration count it was made with.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Whether it is the one for this server-first message's parameters.
    pub fn matches(&self, hash: ScramHash, salt: &[u8], iterations: u32) -> bool {
        self.hash == hash && self.iterations == iterations && self.salt == salt
    }
}

impl fmt::Debug for SaltedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaltedPassword")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn prep_password(password: &str) -> Result<Secret, SaslClientError> {
    let prepped = stringprep::saslprep(password).map_err(|_| SaslClientError::InvalidPassword)?;
    if prepped.is_empty() {
        return Err(SaslClientError::InvalidPassword);
    }
    Ok(Secret(prepped.into_owned().into_bytes()))
}

fn derive_salted(
    hash: ScramHash,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<SaltedPassword, SaslClientError> {
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return Err(SaslClientError::Iterations(iterations));
    }
    let mut key = Secret(vec![0u8; out_len(hash)]);
    match hash {
        ScramHash::Sha1 => pbkdf2::pbkdf2::<Hmac<Sha1>>(password, salt, iterations, &mut key.0),
        ScramHash::Sha256 => pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, iterations, &mut key.0),
        ScramHash::Sha512 => pbkdf2::pbkdf2::<Hmac<Sha512>>(password, salt, iterations, &mut key.0),
    }
    .map_err(|_| SaslClientError::Crypto)?;
    Ok(SaltedPassword {
        hash,
        salt: salt.to_vec(),
        iterations,
        key,
    })
}

/// A cache of salted passwords shared by many sessions (a load generator
/// logging in thousands of users): keyed by hash, salt, iteration count
/// and a digest of the password, so a wrong password never finds the
/// right one's entry. Cheap to clone (one `Arc`); unbounded, so meant for
/// a known set of accounts.
#[derive(Clone, Default)]
pub struct ScramCache {
    inner: Arc<Mutex<HashMap<CacheKey, SaltedPassword>>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    hash: ScramHash,
    salt: Vec<u8>,
    iterations: u32,
    password: [u8; 32],
}

impl ScramCache {
    /// An empty cache.
    pub fn new() -> ScramCache {
        ScramCache::default()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |m| m.len())
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> CacheKey {
        let mut d = Sha256::new();
        d.update(b"beamline scram cache\0");
        d.update(password);
        CacheKey {
            hash,
            salt: salt.to_vec(),
            iterations,
            password: d.finalize().into(),
        }
    }

    /// The salted password of a prepped password, from the cache or made
    /// (and stored).
    fn get_or_derive(
        &self,
        hash: ScramHash,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<SaltedPassword, SaslClientError> {
        let key = ScramCache::key(hash, password, salt, iterations);
        if let Some(sp) = self.inner.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(sp);
        }
        // Derived outside the lock: PBKDF2 takes milliseconds.
        let sp = derive_salted(hash, password, salt, iterations)?;
        if let Ok(mut m) = self.inner.lock() {
            m.insert(key, sp.clone());
        }
        Ok(sp)
    }
}

/// Why [`ScramCache::load`] refused its input.
#[derive(Debug, thiserror::Error)]
pub enum ScramCacheError {
    /// Reading failed.
    #[error("reading the cache: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not one that [`ScramCache::save`] writes.
    #[error("line {line}: {what}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        what: &'static str,
    },
}

fn hash_name(hash: ScramHash) -> &'static str {
    match hash {
        ScramHash::Sha1 => "sha1",
        ScramHash::Sha256 => "sha256",
        ScramHash::Sha512 => "sha512",
    }
}

impl ScramCache {
    /// Writes every entry, one line each (hash, iteration count, then
    /// salt, password digest and salted password in base64), so that a
    /// later process can [`load`](ScramCache::load) them: a client that
    /// logs in again skips PBKDF2, as real clients that keep the salted
    /// password do. What is written is as good as the passwords for these
    /// salts: keep the file private.
    pub fn save(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let entries: Vec<(CacheKey, SaltedPassword)> = match self.inner.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        };
        for (k, v) in entries {
            writeln!(
                out,
                "{} {} {} {} {}",
                hash_name(k.hash),
                k.iterations,
                B64.encode(&k.salt),
                B64.encode(k.password),
                B64.encode(&v.key.0)
            )?;
        }
        Ok(())
    }

    /// Adds the entries written by [`save`](ScramCache::save); returns how
    /// many lines were read. Nothing is added if a line is malformed.
    pub fn load(&self, input: impl std::io::BufRead) -> Result<usize, ScramCacheError> {
        let mut read = Vec::new();
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |what| ScramCacheError::Malformed { line: i + 1, what };
            let f: Vec<&str> = line.split(' ').collect();
            let [hash, iterations, salt, password, key] = f[..] else {
                return Err(bad("expected 5 fields"));
            };
            let hash = match hash {
                "sha1" => ScramHash::Sha1,
                "sha256" => ScramHash::Sha256,
                "sha512" => ScramHash::Sha512,
                _ => return Err(bad("unknown hash")),
            };
            let iterations: u32 = iterations.parse().map_err(|_| bad("bad iteration count"))?;
            let salt = B64.decode(salt).map_err(|_| bad("bad salt"))?;
            let password: [u8; 32] = B64
                .decode(password)
                .ok()
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| bad("bad password digest"))?;
            let key = B64.decode(key).map_err(|_| bad("bad salted password"))?;
            if key.len() != out_len(hash) {
                return Err(bad("salted password of the wrong length"));
            }
            read.push((
                CacheKey {
                    hash,
                    salt: salt.clone(),
                    iterations,
                    password,
                },
                SaltedPassword {
                    hash,
                    salt,
                    iterations,
                    key: Secret(key),
                },
            ));
        }
        let n = read.len();
        if let Ok(mut m) = self.inner.lock() {
            m.extend(read);
        }
        Ok(n)
    }
}

impl fmt::Debug for ScramCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCache")
            .field("len", &self.len())
            .finish()
    }
}

/// What the client authenticates with: a user name (the local part of the
/// JID), a password, an optional authorization identity, and optionally a
/// salted password or a cache to skip PBKDF2. Its `Debug` shows the user
/// name only.
#[derive(Clone)]
pub struct ClientCredentials {
    username: String,
    password: Secret,
    authzid: Option<String>,
    salted: Option<SaltedPassword>,
    cache: Option<ScramCache>,
}

impl ClientCredentials {
    /// Credentials for `username` (the JID's local part) and `password`.
    pub fn new(username: impl Into<String>, password: &str) -> ClientCredentials {
        ClientCredentials {
            username: username.into(),
            password: Secret(password.as_bytes().to_vec()),
            authzid: None,
            salted: None,
            cache: None,
        }
    }

    /// Sends an authorization identity (the user's bare JID; a server
    /// refuses any other).
    pub fn with_authzid(mut self, authzid: impl Into<String>) -> ClientCredentials {
        self.authzid = Some(authzid.into());
        self
    }

    /// Uses this salted password when the server's salt and iteration
    /// count match it (else PBKDF2 runs as usual).
    pub fn with_salted_password(mut self, salted: SaltedPassword) -> ClientCredentials {
        self.salted = Some(salted);
        self
    }

    /// Looks salted passwords up in (and adds them to) `cache`.
    pub fn with_cache(mut self, cache: ScramCache) -> ClientCredentials {
        self.cache = Some(cache);
        self
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("username", &self.username)
            .field("authzid", &self.authzid)
            .finish_non_exhaustive()
    }
}

/// The GS2 channel binding flag of a SCRAM client-first message (RFC 5802
/// §6).
#[derive(Clone, PartialEq, Eq)]
pub enum Gs2Flag {
    /// `n`: the client does not support channel binding (or the server
    /// offered -PLUS and the client chose not to use it).
    NotSupported,
    /// `y`: the client could bind but the server offered no -PLUS
    /// mechanism; a server that did offer one takes this as a downgrade.
    ServerNotSupported,
    /// `p=<type>`: bind to the connection with this type's data (only with
    /// a -PLUS mechanism).
    Bind(ChannelBindingType, Vec<u8>),
}

// By hand: the binding data is key material of the TLS session.
impl fmt::Debug for Gs2Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gs2Flag::NotSupported => f.write_str("NotSupported"),
            Gs2Flag::ServerNotSupported => f.write_str("ServerNotSupported"),
            Gs2Flag::Bind(t, _) => write!(f, "Bind({t})"),
        }
    }
}

enum ScramState {
    /// Before the initial response.
    Start,
    /// Client-first sent; waiting for server-first.
    SentFirst,
    /// Client-final sent; waiting for server-final.
    SentFinal {
        server_signature: Vec<u8>,
    },
    /// Server signature verified; only `<success/>` may follow.
    Verified,
    Done,
}

struct Scram {
    hash: ScramHash,
    gs2_header: String,
    cb_data: Vec<u8>,
    client_first_bare: String,
    client_nonce: String,
    state: ScramState,
    salted: Option<SaltedPassword>,
}

enum Inner {
    Scram(Box<Scram>),
    Plain { sent: bool },
}

/// One client-side authentication attempt. See the [module docs](self).
pub struct ClientSession {
    mechanism: Mechanism,
    credentials: ClientCredentials,
    inner: Inner,
}

impl ClientSession {
    /// Starts an attempt. A -PLUS mechanism needs [`Gs2Flag::Bind`]; a
    /// mechanism that is not -PLUS must not have it. PLAIN ignores `gs2`.
    pub fn new(
        mechanism: Mechanism,
        credentials: ClientCredentials,
        gs2: Gs2Flag,
    ) -> Result<ClientSession, SaslClientError> {
        let username = stringprep::saslprep(&credentials.username)
            .map_err(|_| SaslClientError::InvalidUsername)?;
        if username.is_empty() {
            return Err(SaslClientError::InvalidUsername);
        }
        let inner = match mechanism.scram_hash() {
            None => Inner::Plain { sent: false },
            Some(hash) => {
                let binds = matches!(gs2, Gs2Flag::Bind(..));
                if binds != mechanism.is_plus() {
                    return Err(SaslClientError::ChannelBinding);
                }
                let authz = match &credentials.authzid {
                    Some(a) => format!("a={}", encode_saslname(a)),
                    None => String::new(),
                };
                let (gs2_header, cb_data) = match gs2 {
                    Gs2Flag::NotSupported => (format!("n,{authz},"), Vec::new()),
                    Gs2Flag::ServerNotSupported => (format!("y,{authz},"), Vec::new()),
                    Gs2Flag::Bind(ty, data) => (format!("p={ty},{authz},"), data),
                };
                let mut raw = [0u8; 24];
                getrandom::fill(&mut raw).map_err(|_| SaslClientError::Crypto)?;
                let client_nonce = B64.encode(raw);
                Inner::Scram(Box::new(Scram {
                    hash,
                    gs2_header,
                    cb_data,
                    client_first_bare: format!("n={},r={client_nonce}", encode_saslname(&username)),
                    client_nonce,
                    state: ScramState::Start,
                    salted: None,
                }))
            }
        };
        Ok(ClientSession {
            mechanism,
            credentials,
            inner,
        })
    }

    /// The mechanism of this attempt.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Test hook: fixes the client nonce (to reproduce the RFC test
    /// vectors). Not for production: a fixed nonce allows replay.
    #[doc(hidden)]
    pub fn set_client_nonce_for_tests(&mut self, nonce: &str) {
        if let Inner::Scram(s) = &mut self.inner {
            s.client_first_bare = s
                .client_first_bare
                .replace(&format!("r={}", s.client_nonce), &format!("r={nonce}"));
            s.client_nonce = nonce.to_owned();
        }
    }

    /// The initial response, for `<auth/>`: SCRAM's client-first message,
    /// or PLAIN's `authzid NUL authcid NUL password`.
    pub fn initial_response(&mut self) -> Result<Vec<u8>, SaslClientError> {
        match &mut self.inner {
            Inner::Plain { sent } => {
                if *sent {
                    return Err(SaslClientError::UnexpectedMessage);
                }
                *sent = true;
                let password =
                    prep_password(&String::from_utf8_lossy(&self.credentials.password.0))?;
                let mut out = Vec::with_capacity(64);
                if let Some(a) = &self.credentials.authzid {
                    out.extend_from_slice(a.as_bytes());
                }
                out.push(0);
                out.extend_from_slice(self.credentials.username.as_bytes());
                out.push(0);
                out.extend_from_slice(&password.0);
                Ok(out)
            }
            Inner::Scram(s) => {
                if !matches!(s.state, ScramState::Start) {
                    return Err(SaslClientError::UnexpectedMessage);
                }
                s.state = ScramState::SentFirst;
                Ok(format!("{}{}", s.gs2_header, s.client_first_bare).into_bytes())
            }
        }
    }

    /// Answers a `<challenge/>` payload: the `<response/>` payload.
    pub fn challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, SaslClientError> {
        let credentials = &self.credentials;
        match &mut self.inner {
            Inner::Plain { .. } => Err(SaslClientError::UnexpectedMessage),
            Inner::Scram(s) => match std::mem::replace(&mut s.state, ScramState::Done) {
                ScramState::SentFirst => s.client_final(credentials, data),
                ScramState::SentFinal { server_signature } => {
                    verify_server_final(data, &server_signature)?;
                    s.state = ScramState::Verified;
                    Ok(Vec::new())
                }
                _ => Err(SaslClientError::UnexpectedMessage),
            },
        }
    }

    /// Handles `<success/>` and its payload (`None` or empty when it had
    /// none): SCRAM verifies the server signature here unless a challenge
    /// carried it already.
    pub fn success(&mut self, additional_data: Option<&[u8]>) -> Result<(), SaslClientError> {
        let data = additional_data.filter(|d| !d.is_empty());
        match &mut self.inner {
            Inner::Plain { sent } => {
                if *sent {
                    Ok(())
                } else {
                    Err(SaslClientError::UnexpectedMessage)
                }
            }
            Inner::Scram(s) => match std::mem::replace(&mut s.state, ScramState::Done) {
                ScramState::SentFinal { server_signature } => match data {
                    Some(d) => verify_server_final(d, &server_signature),
                    None => Err(SaslClientError::MissingServerSignature),
                },
                ScramState::Verified => match data {
                    None => Ok(()),
                    Some(_) => Err(SaslClientError::UnexpectedMessage),
                },
                _ => Err(SaslClientError::UnexpectedMessage),
            },
        }
    }

    /// The salted password this exchange used (once the server-first
    /// message was answered), to cache for the next login.
    pub fn salted_password(&self) -> Option<&SaltedPassword> {
        match &self.inner {
            Inner::Scram(s) => s.salted.as_ref(),
            Inner::Plain { .. } => None,
        }
    }
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.inner {
            Inner::Plain { sent: false } => "start",
            Inner::Plain { sent: true } => "sent",
            Inner::Scram(s) => match s.state {
                ScramState::Start => "start",
                ScramState::SentFirst => "sent-client-first",
                ScramState::SentFinal { .. } => "sent-client-final",
                ScramState::Verified => "verified",
                ScramState::Done => "done",
            },
        };
        f.debug_struct("ClientSession")
            .field("mechanism", &self.mechanism)
            .field("username", &self.credentials.username)
            .field("state", &state)
            .finish()
    }
}

impl Scram {
    /// Server-first in, client-final out.
    fn client_final(
        &mut self,
        credentials: &ClientCredentials,
        data: &[u8],
    ) -> Result<Vec<u8>, SaslClientError> {
        let server_first =
            std::str::from_utf8(data).map_err(|_| SaslClientError::Malformed("not UTF-8"))?;
        let mut attrs = server_first.split(',');
        let first = attrs.next().unwrap_or_default();
        if first.starts_with("m=") {
            return Err(SaslClientError::Malformed("mandatory extension"));
        }
        if let Some(e) = first.strip_prefix("e=") {
            return Err(SaslClientError::ServerError(e.to_owned()));
        }
        let nonce = first
            .strip_prefix("r=")
            .ok_or(SaslClientError::Malformed("no nonce"))?;
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .ok_or(SaslClientError::Malformed("no salt"))?;
        let iterations = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .ok_or(SaslClientError::Malformed("no iteration count"))?;
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(SaslClientError::NonceMismatch);
        }
        if !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(SaslClientError::Malformed("bad nonce"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| SaslClientError::Malformed("bad base64 in s="))?;
        if salt.is_empty() {
            return Err(SaslClientError::Malformed("empty salt"));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| SaslClientError::Malformed("bad iteration count"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(SaslClientError::Iterations(iterations));
        }

        let salted = match credentials
            .salted
            .as_ref()
            .filter(|sp| sp.matches(self.hash, &salt, iterations))
        {
            Some(sp) => sp.clone(),
            None => {
                let password = prep_password(&String::from_utf8_lossy(&credentials.password.0))?;
                match &credentials.cache {
                    Some(c) => c.get_or_derive(self.hash, &password.0, &salt, iterations)?,
                    None => derive_salted(self.hash, &password.0, &salt, iterations)?,
                }
            }
        };

        let mut cbind = self.gs2_header.as_bytes().to_vec();
        cbind.extend_from_slice(&self.cb_data);
        let without_proof = format!("c={},r={nonce}", B64.encode(&cbind));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let hash = self.hash;
        let client_key =
            Secret(hmac(hash, &salted.key.0, b"Client Key").ok_or(SaslClientError::Crypto)?);
        let stored_key = digest(hash, &client_key.0);
        let client_signature =
            hmac(hash, &stored_key, auth_message.as_bytes()).ok_or(SaslClientError::Crypto)?;
        let proof: Vec<u8> = client_key
            .0
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(hash, &salted.key.0, b"Server Key").ok_or(SaslClientError::Crypto)?;
        let server_signature =
            hmac(hash, &server_key, auth_message.as_bytes()).ok_or(SaslClientError::Crypto)?;
        self.salted = Some(salted);
        self.state = ScramState::SentFinal { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }
}

/// Checks `v=<signature>` (or reports `e=<error>`).
fn verify_server_final(data: &[u8], expected: &[u8]) -> Result<(), SaslClientError> {
    let s = std::str::from_utf8(data).map_err(|_| SaslClientError::Malformed("not UTF-8"))?;
    let first = s.split(',').next().unwrap_or_default();
    if let Some(e) = first.strip_prefix("e=") {
        return Err(SaslClientError::ServerError(e.to_owned()));
    }
    let v = first
        .strip_prefix("v=")
        .ok_or(SaslClientError::Malformed("no server signature"))?;
    let sig = B64
        .decode(v)
        .map_err(|_| SaslClientError::Malformed("bad base64 in v="))?;
    if sig.len() == expected.len() && bool::from(sig.ct_eq(expected)) {
        Ok(())
    } else {
        Err(SaslClientError::ServerSignature)
    }
}

/// `saslname` (RFC 5802 §7): `=` as `=3D`, `,` as `=2C`.
fn encode_saslname(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '=' => out.push_str("=3D"),
            ',' => out.push_str("=2C"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{
        ChannelBinding, SaslCondition, SaslConfig, ServerSession, Step, account_credentials,
        scram_credential_with_salt,
    };

    const ITER: u32 = 256;

    fn config() -> SaslConfig {
        SaslConfig::new("example.com", [7; 32]).with_fake_iterations(ITER)
    }

    /// Runs `client` against a server session holding `stored`'s
    /// credentials; the server's answer, and the client's verdict.
    fn run(
        mut client: ClientSession,
        server_cb: ChannelBinding,
        stored: &[crate::sasl::ScramCredential],
    ) -> (Result<Step, crate::sasl::SaslError>, ClientSession) {
        let mut server = ServerSession::new(client.mechanism(), server_cb, &config()).unwrap();
        let first = client.initial_response().unwrap();
        let mut step = server.step(&first);
        loop {
            match step {
                Ok(Step::NeedCredentials { ref username }) => {
                    assert_eq!(username, "juliet");
                    step = server.provide(Some(stored));
                }
                Ok(Step::Challenge(c)) => {
                    let resp = client.challenge(&c).unwrap();
                    step = server.step(&resp);
                }
                other => return (other, client),
            }
        }
    }

    fn creds(password: &str) -> ClientCredentials {
        ClientCredentials::new("juliet", password)
    }

    #[test]
    fn scram_all_hashes_right_password() {
        let stored = account_credentials("s3cret", ITER).unwrap();
        for m in [
            Mechanism::ScramSha1,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
        ] {
            let c = ClientSession::new(m, creds("s3cret"), Gs2Flag::NotSupported).unwrap();
            let (r, mut c) = run(c, ChannelBinding::none(), &stored);
            match r {
                Ok(Step::Success {
                    authcid,
                    additional_data,
                    ..
                }) => {
                    assert_eq!(authcid, "juliet");
                    c.success(additional_data.as_deref()).unwrap();
                }
                other => panic!("{m}: {other:?}"),
            }
            let sp = c.salted_password().unwrap();
            assert_eq!(sp.hash(), m.scram_hash().unwrap());
            assert_eq!(sp.iterations(), ITER);
        }
    }

    #[test]
    fn scram_all_hashes_wrong_password() {
        let stored = account_credentials("s3cret", ITER).unwrap();
        for m in [
            Mechanism::ScramSha1,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
        ] {
            let c = ClientSession::new(m, creds("wrong"), Gs2Flag::NotSupported).unwrap();
            let (r, _) = run(c, ChannelBinding::none(), &stored);
            assert_eq!(
                r.unwrap_err().condition(),
                SaslCondition::NotAuthorized,
                "{m}"
            );
        }
    }

    #[test]
    fn scram_plus_with_both_binding_types() {
        let stored = account_credentials("s3cret", ITER).unwrap();
        let cb = ChannelBinding::none()
            .with_tls_exporter(vec![1; 32])
            .with_tls_server_end_point(vec![2; 32]);
        for (ty, data) in [
            (ChannelBindingType::TlsExporter, vec![1; 32]),
            (ChannelBindingType::TlsServerEndPoint, vec![2; 32]),
        ] {
            let c = ClientSession::new(
                Mechanism::ScramSha256Plus,
                creds("s3cret"),
                Gs2Flag::Bind(ty, data),
            )
            .unwrap();
            let (r, mut c) = run(c, cb.clone(), &stored);
            let Ok(Step::Success {
                additional_data, ..
            }) = r
            else {
                panic!("{ty}: {r:?}");
            };
            c.success(additional_data.as_deref()).unwrap();
        }
        // Other binding data than the server's: refused.
        let c = ClientSession::new(
            Mechanism::ScramSha512Plus,
            creds("s3cret"),
            Gs2Flag::Bind(ChannelBindingType::TlsExporter, vec![9; 32]),
        )
        .unwrap();
        let (r, _) = run(c, cb.clone(), &stored);
        assert_eq!(r.unwrap_err().condition(), SaslCondition::NotAuthorized);
        // `y` while the server offers binding: a downgrade, refused.
        let c = ClientSession::new(
            Mechanism::ScramSha256,
            creds("s3cret"),
            Gs2Flag::ServerNotSupported,
        )
        .unwrap();
        let (r, _) = run(c, cb, &stored);
        assert_eq!(r.unwrap_err().condition(), SaslCondition::NotAuthorized);
        // `y` to a server without binding: fine.
        let c = ClientSession::new(
            Mechanism::ScramSha256,
            creds("s3cret"),
            Gs2Flag::ServerNotSupported,
        )
        .unwrap();
        let (r, _) = run(c, ChannelBinding::none(), &stored);
        assert!(matches!(r, Ok(Step::Success { .. })), "{r:?}");
    }

    #[test]
    fn plus_needs_binding_and_plain_scram_refuses_it() {
        assert_eq!(
            ClientSession::new(Mechanism::ScramSha1Plus, creds("x"), Gs2Flag::NotSupported)
                .unwrap_err(),
            SaslClientError::ChannelBinding
        );
        assert_eq!(
            ClientSession::new(
                Mechanism::ScramSha1,
                creds("x"),
                Gs2Flag::Bind(ChannelBindingType::TlsExporter, vec![1])
            )
            .unwrap_err(),
            SaslClientError::ChannelBinding
        );
    }

    #[test]
    fn wrong_server_signature_is_an_error() {
        let stored = account_credentials("s3cret", ITER).unwrap();
        let c = ClientSession::new(
            Mechanism::ScramSha256,
            creds("s3cret"),
            Gs2Flag::NotSupported,
        )
        .unwrap();
        let (r, mut c) = run(c, ChannelBinding::none(), &stored);
        let Ok(Step::Success {
            additional_data: Some(mut data),
            ..
        }) = r
        else {
            panic!("{r:?}");
        };
        // Flip a bit of the signature (keep it valid base64).
        let sig = B64.decode(&data[2..]).unwrap();
        let mut bad = sig.clone();
        bad[0] ^= 1;
        data = format!("v={}", B64.encode(bad)).into_bytes();
        assert_eq!(
            c.success(Some(&data)).unwrap_err(),
            SaslClientError::ServerSignature
        );
    }

    #[test]
    fn success_without_signature_or_with_server_error() {
        let stored = account_credentials("s3cret", ITER).unwrap();
        let c = ClientSession::new(Mechanism::ScramSha1, creds("s3cret"), Gs2Flag::NotSupported)
            .unwrap();
        let (_, mut c) = run(c, ChannelBinding::none(), &stored);
        assert_eq!(
            c.success(None).unwrap_err(),
            SaslClientError::MissingServerSignature
        );

        let mut c =
            ClientSession::new(Mechanism::ScramSha1, creds("s3cret"), Gs2Flag::NotSupported)
                .unwrap();
        c.initial_response().unwrap();
        assert_eq!(
            c.challenge(b"e=unknown-user").unwrap_err(),
            SaslClientError::ServerError("unknown-user".into())
        );
    }

    #[test]
    fn server_final_in_a_challenge() {
        let stored = account_credentials("s3cret", ITER).unwrap();
        let c = ClientSession::new(Mechanism::ScramSha1, creds("s3cret"), Gs2Flag::NotSupported)
            .unwrap();
        let (r, mut c) = run(c, ChannelBinding::none(), &stored);
        let Ok(Step::Success {
            additional_data: Some(data),
            ..
        }) = r
        else {
            panic!("{r:?}");
        };
        assert_eq!(c.challenge(&data).unwrap(), b"");
        c.success(None).unwrap();
    }

    #[test]
    fn bad_server_first_messages() {
        let new = || {
            let mut c =
                ClientSession::new(Mechanism::ScramSha1, creds("pw"), Gs2Flag::NotSupported)
                    .unwrap();
            c.set_client_nonce_for_tests("abc");
            c.initial_response().unwrap();
            c
        };
        assert_eq!(
            new().challenge(b"r=xyzdef,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(SaslClientError::NonceMismatch)
        );
        assert_eq!(
            new().challenge(b"r=abc,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(SaslClientError::NonceMismatch)
        );
        assert_eq!(
            new().challenge(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=0"),
            Err(SaslClientError::Iterations(0))
        );
        assert_eq!(
            new().challenge(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=999999999"),
            Err(SaslClientError::Iterations(999_999_999))
        );
        assert!(matches!(
            new().challenge(b"r=abcdef,s=!!,i=1"),
            Err(SaslClientError::Malformed(_))
        ));
        assert!(matches!(
            new().challenge(b"m=x,r=abcdef,s=QSXCR+Q6sek8bf92,i=1"),
            Err(SaslClientError::Malformed(_))
        ));
        assert!(matches!(
            new().challenge(b"garbage"),
            Err(SaslClientError::Malformed(_))
        ));
    }

    /// RFC 5802 §5 and RFC 7677 §3.
    #[test]
    fn rfc_test_vectors() {
        let vectors = [
            (
                Mechanism::ScramSha1,
                "fyko+d2lbbFgONRv9qkxdawL",
                "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
            ),
            (
                Mechanism::ScramSha256,
                "rOprNGfwEbeRWgbNEkqO",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            ),
        ];
        for (m, cnonce, server_first, client_final, server_final) in vectors {
            let mut c = ClientSession::new(
                m,
                ClientCredentials::new("user", "pencil"),
                Gs2Flag::NotSupported,
            )
            .unwrap();
            c.set_client_nonce_for_tests(cnonce);
            assert_eq!(
                c.initial_response().unwrap(),
                format!("n,,n=user,r={cnonce}").into_bytes()
            );
            let out = c.challenge(server_first.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), client_final);
            c.success(Some(server_final.as_bytes())).unwrap();
        }
    }

    #[test]
    fn cached_salted_password_is_used_and_checked() {
        let salt = b"0123456789abcdef";
        let stored =
            vec![scram_credential_with_salt(ScramHash::Sha256, "s3cret", salt, ITER).unwrap()];
        let sp = SaltedPassword::derive(ScramHash::Sha256, "s3cret", salt, ITER).unwrap();
        // With the cached salted password and a wrong password, it still
        // works: the password is not used.
        let c = ClientSession::new(
            Mechanism::ScramSha256,
            creds("not-used").with_salted_password(sp.clone()),
            Gs2Flag::NotSupported,
        )
        .unwrap();
        let (r, _) = run(c, ChannelBinding::none(), &stored);
        assert!(matches!(r, Ok(Step::Success { .. })), "{r:?}");
        // A salted password for other parameters is ignored.
        let other = SaltedPassword::derive(ScramHash::Sha256, "s3cret", b"other", ITER).unwrap();
        let c = ClientSession::new(
            Mechanism::ScramSha256,
            creds("wrong").with_salted_password(other),
            Gs2Flag::NotSupported,
        )
        .unwrap();
        let (r, _) = run(c, ChannelBinding::none(), &stored);
        assert!(r.is_err());
    }

    #[test]
    fn shared_cache_keys_on_the_password() {
        let stored = account_credentials("s3cret", ITER).unwrap();
        let cache = ScramCache::new();
        for _ in 0..2 {
            let c = ClientSession::new(
                Mechanism::ScramSha512,
                creds("s3cret").with_cache(cache.clone()),
                Gs2Flag::NotSupported,
            )
            .unwrap();
            let (r, _) = run(c, ChannelBinding::none(), &stored);
            assert!(matches!(r, Ok(Step::Success { .. })), "{r:?}");
        }
        assert_eq!(cache.len(), 1);
        let c = ClientSession::new(
            Mechanism::ScramSha512,
            creds("wrong").with_cache(cache.clone()),
            Gs2Flag::NotSupported,
        )
        .unwrap();
        let (r, _) = run(c, ChannelBinding::none(), &stored);
        assert_eq!(r.unwrap_err().condition(), SaslCondition::NotAuthorized);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn cache_saved_and_loaded_serves_the_next_process() {
        let stored = account_credentials("s3cret", ITER).unwrap();
        let cache = ScramCache::new();
        let c = ClientSession::new(
            Mechanism::ScramSha256,
            creds("s3cret").with_cache(cache.clone()),
            Gs2Flag::NotSupported,
        )
        .unwrap();
        assert!(matches!(
            run(c, ChannelBinding::none(), &stored).0,
            Ok(Step::Success { .. })
        ));
        let mut file = Vec::new();
        cache.save(&mut file).unwrap();
        let again = ScramCache::new();
        assert_eq!(again.load(&file[..]).unwrap(), 1);
        assert_eq!(again.len(), 1);
        let login = |cache: &ScramCache| {
            let c = ClientSession::new(
                Mechanism::ScramSha256,
                creds("s3cret").with_cache(cache.clone()),
                Gs2Flag::NotSupported,
            )
            .unwrap();
            matches!(
                run(c, ChannelBinding::none(), &stored).0,
                Ok(Step::Success { .. })
            )
        };
        assert!(login(&again));
        // The loaded entry is the one used, not PBKDF2 again: a file whose
        // salted password was changed makes the right password fail.
        let text = String::from_utf8(file.clone()).unwrap();
        let mut fields: Vec<&str> = text.trim_end().split(' ').collect();
        let other = B64.encode([7u8; 32]);
        fields[4] = &other;
        let forged = ScramCache::new();
        forged.load(fields.join(" ").as_bytes()).unwrap();
        assert!(!login(&forged));
        // A damaged file is refused whole, with its line.
        let mut damaged = file.clone();
        damaged.extend_from_slice(b"sha256 4096 !!! x y\n");
        let fresh = ScramCache::new();
        let e = fresh.load(&damaged[..]).unwrap_err();
        assert!(e.to_string().starts_with("line 2"), "{e}");
        assert!(fresh.is_empty());
    }

    #[test]
    fn plain_right_and_wrong() {
        let stored = account_credentials("s3cret", ITER).unwrap();
        let c =
            ClientSession::new(Mechanism::Plain, creds("s3cret"), Gs2Flag::NotSupported).unwrap();
        let (r, mut c) = run(c, ChannelBinding::none(), &stored);
        assert!(matches!(r, Ok(Step::Success { .. })), "{r:?}");
        c.success(None).unwrap();

        let c =
            ClientSession::new(Mechanism::Plain, creds("wrong"), Gs2Flag::NotSupported).unwrap();
        let (r, _) = run(c, ChannelBinding::none(), &stored);
        assert_eq!(r.unwrap_err().condition(), SaslCondition::NotAuthorized);

        let mut c = ClientSession::new(
            Mechanism::Plain,
            creds("pw").with_authzid("juliet@example.com"),
            Gs2Flag::NotSupported,
        )
        .unwrap();
        assert_eq!(
            c.initial_response().unwrap(),
            b"juliet@example.com\0juliet\0pw"
        );
    }

    #[test]
    fn saslname_escaping_and_authzid() {
        let mut c = ClientSession::new(
            Mechanism::ScramSha1,
            ClientCredentials::new("a,b=c", "pw").with_authzid("a@b"),
            Gs2Flag::NotSupported,
        )
        .unwrap();
        c.set_client_nonce_for_tests("n1");
        assert_eq!(
            c.initial_response().unwrap(),
            b"n,a=a@b,n=a=2Cb=3Dc,r=n1".to_vec()
        );
        assert_eq!(
            ClientSession::new(
                Mechanism::ScramSha1,
                ClientCredentials::new("", "pw"),
                Gs2Flag::NotSupported
            )
            .unwrap_err(),
            SaslClientError::InvalidUsername
        );
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let c = creds("hunter2-secret");
        assert!(!format!("{c:?}").contains("hunter2"));
        let sp = SaltedPassword::derive(ScramHash::Sha1, "pw", b"salt", 1).unwrap();
        assert!(!format!("{sp:?}").contains("key"));
    }
}
