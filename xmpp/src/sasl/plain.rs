//! PLAIN (RFC 4616), server side, checked against stored SCRAM
//! credentials (the server keeps no passwords).

use subtle::ConstantTimeEq;

use super::scram::{corrupt_credential, credential_usable, derive_keys, fake_salt};
use super::{
    SaslCondition, SaslConfig, SaslError, ScramCredential, ScramHash, Step, check_authzid,
    normalize_username,
};

/// A password held only until it is checked; zeroed when dropped.
struct Password(Vec<u8>);

impl Drop for Password {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keep the zeroing from being optimized away as a dead store.
        std::hint::black_box(&self.0);
    }
}

enum State {
    Start,
    NeedCredentials {
        username: String,
        password: Password,
        authzid: Option<String>,
    },
    Done,
}

pub(super) struct PlainServer {
    domain: String,
    secret: [u8; 32],
    fake_iterations: u32,
    state: State,
}

/// The hash preferred for checking a PLAIN password when an account has
/// several credentials.
const PREFERENCE: [ScramHash; 3] = [ScramHash::Sha256, ScramHash::Sha512, ScramHash::Sha1];

impl PlainServer {
    pub(super) fn new(config: &SaslConfig) -> PlainServer {
        PlainServer {
            domain: config.domain.clone(),
            secret: config.secret,
            fake_iterations: config.fake_iterations,
            state: State::Start,
        }
    }

    pub(super) fn state_name(&self) -> &'static str {
        match self.state {
            State::Start => "start",
            State::NeedCredentials { .. } => "need-credentials",
            State::Done => "done",
        }
    }

    pub(super) fn step(&mut self, input: &[u8]) -> Result<Step, SaslError> {
        if !matches!(self.state, State::Start) {
            self.state = State::Done;
            return Err(SaslError::malformed("unexpected message"));
        }
        self.state = State::Done;
        // message = [authzid] NUL authcid NUL passwd
        let mut parts = input.split(|b| *b == 0);
        let (Some(authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SaslError::malformed("PLAIN needs exactly two NULs"));
        };
        let password = Password(password.to_vec());
        let authzid =
            std::str::from_utf8(authzid).map_err(|_| SaslError::malformed("authzid not UTF-8"))?;
        let authcid =
            std::str::from_utf8(authcid).map_err(|_| SaslError::malformed("authcid not UTF-8"))?;
        if authcid.is_empty() {
            return Err(SaslError::malformed("empty authcid"));
        }
        if password.0.is_empty() {
            return Err(SaslError::malformed("empty password"));
        }
        std::str::from_utf8(&password.0).map_err(|_| SaslError::malformed("password not UTF-8"))?;
        // A name that cannot be a local part has no account.
        let username = normalize_username(authcid, &self.domain)
            .ok_or_else(|| SaslError::not_authorized("user name cannot be a JID local part"))?;
        let authzid = if authzid.is_empty() {
            None
        } else {
            check_authzid(authzid, &username, &self.domain)?;
            Some(authzid.to_owned())
        };
        self.state = State::NeedCredentials {
            username: username.clone(),
            password,
            authzid,
        };
        Ok(Step::NeedCredentials { username })
    }

    pub(super) fn provide(
        &mut self,
        credentials: Option<&[ScramCredential]>,
    ) -> Result<Step, SaslError> {
        let State::NeedCredentials {
            username,
            password,
            authzid,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(SaslError::malformed("credentials not expected now"));
        };
        let cred = credentials.and_then(|cs| {
            PREFERENCE
                .iter()
                .find_map(|h| cs.iter().find(|c| c.hash == *h))
        });
        if let Some(c) = cred
            && !credential_usable(c)
        {
            return Err(corrupt_credential());
        }
        // Checked in step; a non-UTF-8 password cannot get here.
        let pw = std::str::from_utf8(&password.0).unwrap_or_default();
        let prepped = stringprep::saslprep(pw).ok();
        let prepped_bytes: &[u8] = prepped.as_deref().map(str::as_bytes).unwrap_or(b"");
        let ok = match cred {
            Some(c) => {
                let keys =
                    derive_keys(c.hash, prepped_bytes, &c.salt, c.iterations).ok_or_else(|| {
                        SaslError::new(SaslCondition::TemporaryAuthFailure, "crypto failure")
                    })?;
                prepped.is_some() && bool::from(keys.stored_key.ct_eq(&c.stored_key))
            }
            None => {
                // Spend the same time as for a real account, so that the
                // answer's delay does not tell the user is absent.
                let salt = fake_salt(&self.secret, ScramHash::Sha256, &username);
                let _ = derive_keys(
                    ScramHash::Sha256,
                    prepped_bytes,
                    &salt,
                    self.fake_iterations,
                );
                false
            }
        };
        if !ok {
            return Err(SaslError::not_authorized("bad password"));
        }
        Ok(Step::Success {
            authcid: username,
            authzid,
            additional_data: None,
        })
    }
}
