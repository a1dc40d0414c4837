//! SCRAM (RFC 5802, RFC 7677), server side, and the stored credentials.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::{
    ChannelBinding, ChannelBindingType, SaslCondition, SaslConfig, SaslError, ScramCredential,
    ScramHash, Step, check_authzid, normalize_username,
};

/// The PBKDF2 iteration count accounts are created with by default (the
/// common XMPP value; RFC 7677 asks for at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length of new credentials and of the answers for absent users
/// (the same, so that the two cannot be told apart).
const SALT_LEN: usize = 16;

/// Why a credential could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The password is empty or SASLprep (RFC 4013) rejects it.
    #[error("password is empty or not allowed by SASLprep")]
    InvalidPassword,
    /// The iteration count is 0.
    #[error("iteration count must be at least 1")]
    InvalidIterations,
    /// The system's random source failed.
    #[error("random source failed")]
    Random,
}

/// Makes a SCRAM credential from a password: a random 16-byte salt,
/// `SaltedPassword = PBKDF2(HMAC-H, SASLprep(password), salt, iterations)`,
/// `StoredKey = H(HMAC(SaltedPassword, "Client Key"))`,
/// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
pub fn scram_credential(
    hash: ScramHash,
    password: &str,
    iterations: u32,
) -> Result<ScramCredential, CredentialError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|_| CredentialError::Random)?;
    scram_credential_with_salt(hash, password, &salt, iterations)
}

/// [`scram_credential`] with a given salt (for imports and test vectors).
pub fn scram_credential_with_salt(
    hash: ScramHash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Result<ScramCredential, CredentialError> {
    if iterations == 0 {
        return Err(CredentialError::InvalidIterations);
    }
    let prepped = stringprep::saslprep(password).map_err(|_| CredentialError::InvalidPassword)?;
    if prepped.is_empty() {
        return Err(CredentialError::InvalidPassword);
    }
    let keys = derive_keys(hash, prepped.as_bytes(), salt, iterations)
        .ok_or(CredentialError::InvalidIterations)?;
    Ok(ScramCredential {
        hash,
        salt: salt.to_vec(),
        iterations,
        stored_key: keys.stored_key,
        server_key: keys.server_key,
    })
}

/// The credentials of a new account: one per hash (SHA-1, SHA-256,
/// SHA-512), each with its own salt.
pub fn account_credentials(
    password: &str,
    iterations: u32,
) -> Result<Vec<ScramCredential>, CredentialError> {
    [ScramHash::Sha1, ScramHash::Sha256, ScramHash::Sha512]
        .into_iter()
        .map(|h| scram_credential(h, password, iterations))
        .collect()
}

pub(super) struct Keys {
    pub(super) stored_key: Vec<u8>,
    pub(super) server_key: Vec<u8>,
}

/// PBKDF2 and the two keys; `None` only if the crypto crates refuse (they
/// do not for HMAC, which takes any key length).
pub(super) fn derive_keys(
    hash: ScramHash,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Option<Keys> {
    let mut salted = vec![0u8; out_len(hash)];
    match hash {
        ScramHash::Sha1 => pbkdf2::pbkdf2::<Hmac<Sha1>>(password, salt, iterations, &mut salted),
        ScramHash::Sha256 => {
            pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, iterations, &mut salted)
        }
        ScramHash::Sha512 => {
            pbkdf2::pbkdf2::<Hmac<Sha512>>(password, salt, iterations, &mut salted)
        }
    }
    .ok()?;
    let client_key = hmac(hash, &salted, b"Client Key")?;
    let server_key = hmac(hash, &salted, b"Server Key")?;
    // The salted password is as good as the password: do not leave it.
    salted.fill(0);
    std::hint::black_box(&salted);
    Some(Keys {
        stored_key: digest(hash, &client_key),
        server_key,
    })
}

pub(super) fn out_len(hash: ScramHash) -> usize {
    match hash {
        ScramHash::Sha1 => 20,
        ScramHash::Sha256 => 32,
        ScramHash::Sha512 => 64,
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let mut m = <M as KeyInit>::new_from_slice(key).ok()?;
    m.update(data);
    Some(m.finalize().into_bytes().to_vec())
}

pub(super) fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    match hash {
        ScramHash::Sha1 => mac::<Hmac<Sha1>>(key, data),
        ScramHash::Sha256 => mac::<Hmac<Sha256>>(key, data),
        ScramHash::Sha512 => mac::<Hmac<Sha512>>(key, data),
    }
}

pub(super) fn digest(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        ScramHash::Sha512 => Sha512::digest(data).to_vec(),
    }
}

fn hash_name(hash: ScramHash) -> &'static [u8] {
    match hash {
        ScramHash::Sha1 => b"SHA-1",
        ScramHash::Sha256 => b"SHA-256",
        ScramHash::Sha512 => b"SHA-512",
    }
}

/// The salt answered for a user that does not exist: the same for the same
/// name every time (an attacker asking twice must see no change), keyed by
/// the server secret (so it cannot be predicted and compared).
pub(super) fn fake_salt(secret: &[u8; 32], hash: ScramHash, username: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(64 + username.len());
    data.extend_from_slice(b"beamline fake SCRAM salt\0");
    data.extend_from_slice(hash_name(hash));
    data.push(0);
    data.extend_from_slice(username.as_bytes());
    let mut out = hmac(ScramHash::Sha256, secret, &data).unwrap_or_default();
    out.truncate(SALT_LEN);
    if out.len() < SALT_LEN {
        // Unreachable (HMAC takes any key); a fixed fallback keeps it total.
        out.resize(SALT_LEN, 0);
    }
    out
}

/// Whether a stored credential can be used at all (a corrupt one is the
/// server's fault: temporary-auth-failure, not not-authorized).
pub(super) fn credential_usable(c: &ScramCredential) -> bool {
    c.iterations >= 1
        && !c.salt.is_empty()
        && c.stored_key.len() == out_len(c.hash)
        && c.server_key.len() == out_len(c.hash)
}

pub(super) fn corrupt_credential() -> SaslError {
    SaslError::new(
        SaslCondition::TemporaryAuthFailure,
        "stored credential is unusable",
    )
}

fn crypto_failure() -> SaslError {
    SaslError::new(SaslCondition::TemporaryAuthFailure, "crypto failure")
}

/// What the client-first message established.
struct First {
    /// `gs2-header` as sent, e.g. `n,,` or `p=tls-exporter,a=x@y,`.
    gs2_header: String,
    /// The binding data the client must have used (empty without `p=`).
    cb_data: Vec<u8>,
    client_first_bare: String,
    client_nonce: String,
    /// Normalized user name, or the raw one if it cannot be normalized
    /// (then the exchange runs on as for an absent user).
    username: String,
    authzid: Option<String>,
}

struct Final {
    first: First,
    nonce: String,
    server_first: String,
    cred: ScramCredential,
    /// The user does not exist (or has no credential of this hash): the
    /// proof is refused whatever it is.
    fake: bool,
}

enum State {
    Start,
    NeedCredentials(First),
    NeedFinal(Box<Final>),
    Done,
}

pub(super) struct ScramServer {
    hash: ScramHash,
    plus: bool,
    cb: ChannelBinding,
    domain: String,
    secret: [u8; 32],
    fake_iterations: u32,
    server_nonce: Option<String>,
    state: State,
}

impl ScramServer {
    pub(super) fn new(
        hash: ScramHash,
        plus: bool,
        cb: ChannelBinding,
        config: &SaslConfig,
    ) -> ScramServer {
        ScramServer {
            hash,
            plus,
            cb,
            domain: config.domain.clone(),
            secret: config.secret,
            fake_iterations: config.fake_iterations,
            server_nonce: None,
            state: State::Start,
        }
    }

    pub(super) fn set_server_nonce(&mut self, nonce: &str) {
        self.server_nonce = Some(nonce.to_owned());
    }

    pub(super) fn state_name(&self) -> &'static str {
        match self.state {
            State::Start => "start",
            State::NeedCredentials(_) => "need-credentials",
            State::NeedFinal(_) => "need-client-final",
            State::Done => "done",
        }
    }

    pub(super) fn step(&mut self, input: &[u8]) -> Result<Step, SaslError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => {
                let first = self.client_first(input)?;
                if first.username.is_empty() {
                    return Err(SaslError::malformed("empty user name"));
                }
                match normalize_username(&first.username, &self.domain) {
                    Some(u) => {
                        if let Some(a) = &first.authzid {
                            check_authzid(a, &u, &self.domain)?;
                        }
                        let username = u.clone();
                        self.state = State::NeedCredentials(First {
                            username: u,
                            ..first
                        });
                        Ok(Step::NeedCredentials { username })
                    }
                    // No such account can exist; answer as for an absent
                    // user so the name's validity shows only at the proof.
                    None => self.server_first(first, None),
                }
            }
            State::NeedCredentials(_) => Err(SaslError::malformed(
                "client message while waiting for credentials",
            )),
            State::NeedFinal(f) => self.client_final(*f, input),
            State::Done => Err(SaslError::malformed("exchange is over")),
        }
    }

    pub(super) fn provide(
        &mut self,
        credentials: Option<&[ScramCredential]>,
    ) -> Result<Step, SaslError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::NeedCredentials(first) => {
                let cred = credentials.and_then(|cs| cs.iter().find(|c| c.hash == self.hash));
                if let Some(c) = cred
                    && !credential_usable(c)
                {
                    return Err(corrupt_credential());
                }
                self.server_first(first, cred.cloned())
            }
            _ => Err(SaslError::malformed("credentials not expected now")),
        }
    }

    fn client_first(&self, input: &[u8]) -> Result<First, SaslError> {
        let s = std::str::from_utf8(input).map_err(|_| SaslError::malformed("not UTF-8"))?;
        let mut parts = s.splitn(3, ',');
        let flag = parts.next().unwrap_or_default();
        let authz = parts
            .next()
            .ok_or_else(|| SaslError::malformed("no GS2 header"))?;
        let bare = parts
            .next()
            .ok_or_else(|| SaslError::malformed("no GS2 header"))?;

        let cb_data = match flag {
            "n" => {
                if self.plus {
                    return Err(SaslError::malformed("-PLUS without channel binding"));
                }
                Vec::new()
            }
            "y" => {
                if self.plus {
                    return Err(SaslError::malformed("-PLUS without channel binding"));
                }
                // RFC 5802 §6: the client could bind but believes the
                // server cannot; we offered -PLUS, so -PLUS was stripped
                // on the way (downgrade).
                if self.cb.is_supported() {
                    return Err(SaslError::not_authorized(
                        "client flag y while channel binding is offered",
                    ));
                }
                Vec::new()
            }
            f => {
                let name = f
                    .strip_prefix("p=")
                    .ok_or_else(|| SaslError::malformed("bad GS2 channel binding flag"))?;
                if !self.plus {
                    return Err(SaslError::malformed(
                        "channel binding requested with a non-PLUS mechanism",
                    ));
                }
                let ty = ChannelBindingType::from_name(name)
                    .ok_or_else(|| SaslError::malformed("unsupported channel binding type"))?;
                self.cb
                    .data(ty)
                    .ok_or_else(|| SaslError::malformed("unsupported channel binding type"))?
                    .to_vec()
            }
        };
        let authzid = match authz {
            "" => None,
            a => {
                let v = a
                    .strip_prefix("a=")
                    .ok_or_else(|| SaslError::malformed("bad GS2 authzid"))?;
                let v = decode_saslname(v)?;
                if v.is_empty() {
                    return Err(SaslError::malformed("empty authzid"));
                }
                Some(v)
            }
        };
        let gs2_header = format!("{flag},{authz},");

        let mut attrs = bare.split(',');
        let user_attr = attrs.next().unwrap_or_default();
        if user_attr.starts_with("m=") {
            return Err(SaslError::malformed("mandatory extension not supported"));
        }
        let username = user_attr
            .strip_prefix("n=")
            .ok_or_else(|| SaslError::malformed("no user name"))?;
        let username = decode_saslname(username)?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| SaslError::malformed("no nonce"))?;
        if !valid_nonce(nonce) {
            return Err(SaslError::malformed("bad nonce"));
        }
        for ext in attrs {
            if !valid_extension(ext) {
                return Err(SaslError::malformed("bad attribute"));
            }
        }
        Ok(First {
            gs2_header,
            cb_data,
            client_first_bare: bare.to_owned(),
            client_nonce: nonce.to_owned(),
            username,
            authzid,
        })
    }

    fn server_first(
        &mut self,
        first: First,
        cred: Option<ScramCredential>,
    ) -> Result<Step, SaslError> {
        let (cred, fake) = match cred {
            Some(c) => (c, false),
            None => (
                ScramCredential {
                    hash: self.hash,
                    salt: fake_salt(&self.secret, self.hash, &first.username),
                    iterations: self.fake_iterations,
                    stored_key: vec![0; out_len(self.hash)],
                    server_key: vec![0; out_len(self.hash)],
                },
                true,
            ),
        };
        let server_nonce = match self.server_nonce.take() {
            Some(n) => n,
            None => {
                let mut raw = [0u8; 24];
                getrandom::fill(&mut raw).map_err(|_| {
                    SaslError::new(SaslCondition::TemporaryAuthFailure, "random source failed")
                })?;
                B64.encode(raw)
            }
        };
        let nonce = format!("{}{}", first.client_nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&cred.salt),
            cred.iterations
        );
        let challenge = server_first.clone().into_bytes();
        self.state = State::NeedFinal(Box::new(Final {
            first,
            nonce,
            server_first,
            cred,
            fake,
        }));
        Ok(Step::Challenge(challenge))
    }

    fn client_final(&mut self, f: Final, input: &[u8]) -> Result<Step, SaslError> {
        let s = std::str::from_utf8(input).map_err(|_| SaslError::malformed("not UTF-8"))?;
        // The proof is the last attribute (RFC 5802 §7).
        let at = s
            .rfind(",p=")
            .ok_or_else(|| SaslError::malformed("no proof"))?;
        let without_proof = &s[..at];
        let proof_b64 = &s[at + 3..];

        let mut attrs = without_proof.split(',');
        let c = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| SaslError::malformed("no channel binding attribute"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| SaslError::malformed("no nonce"))?;
        for ext in attrs {
            if !valid_extension(ext) {
                return Err(SaslError::malformed("bad attribute"));
            }
        }
        let c = B64
            .decode(c)
            .map_err(|_| SaslError::malformed("bad base64 in c="))?;
        let proof = B64
            .decode(proof_b64)
            .map_err(|_| SaslError::malformed("bad base64 in p="))?;

        let mut expected_c = f.first.gs2_header.as_bytes().to_vec();
        expected_c.extend_from_slice(&f.first.cb_data);
        if !bool::from(c.ct_eq(&expected_c)) {
            return Err(SaslError::not_authorized("channel binding mismatch"));
        }
        if nonce != f.nonce {
            return Err(SaslError::not_authorized("nonce mismatch"));
        }

        let hash = f.cred.hash;
        let auth_message = format!(
            "{},{},{}",
            f.first.client_first_bare, f.server_first, without_proof
        );
        let client_signature =
            hmac(hash, &f.cred.stored_key, auth_message.as_bytes()).ok_or_else(crypto_failure)?;
        if proof.len() != client_signature.len() {
            return Err(SaslError::not_authorized("bad proof"));
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let ok = digest(hash, &client_key).ct_eq(&f.cred.stored_key);
        if !bool::from(ok) || f.fake {
            return Err(SaslError::not_authorized("bad proof"));
        }
        let server_signature =
            hmac(hash, &f.cred.server_key, auth_message.as_bytes()).ok_or_else(crypto_failure)?;
        let server_final = format!("v={}", B64.encode(server_signature));
        Ok(Step::Success {
            authcid: f.first.username,
            authzid: f.first.authzid,
            additional_data: Some(server_final.into_bytes()),
        })
    }
}

/// `saslname` (RFC 5802 §7): `,` and `=` are sent as `=2C` and `=3D`; any
/// other `=` is malformed.
fn decode_saslname(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3);
        match esc {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError::malformed("bad escape in saslname")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `printable` except `,` (RFC 5802 §7).
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An extension attribute: a letter, `=`, anything.
fn valid_extension(a: &str) -> bool {
    let b = a.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'='
}
