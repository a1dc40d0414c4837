//! SASL server: RFC test vectors, round trips with a small client, and the
//! failure cases (wrong password, unknown user, malformed messages, channel
//! binding, downgrade, authzid, PLAIN).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use beamline_xmpp::sasl::{
    ChannelBinding, ChannelBindingType, CredentialError, Mechanism, SaslCondition, SaslConfig,
    ScramCredential, ScramHash, ServerSession, Step, account_credentials, advertised_mechanisms,
    channel_binding_element, decode_payload, encode_payload, scram_credential,
    scram_credential_with_salt,
};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

const DOMAIN: &str = "example.com";

fn config() -> SaslConfig {
    SaslConfig::new(DOMAIN, [7u8; 32])
}

fn mech(hash: ScramHash, plus: bool) -> Mechanism {
    match (hash, plus) {
        (ScramHash::Sha1, false) => Mechanism::ScramSha1,
        (ScramHash::Sha1, true) => Mechanism::ScramSha1Plus,
        (ScramHash::Sha256, false) => Mechanism::ScramSha256,
        (ScramHash::Sha256, true) => Mechanism::ScramSha256Plus,
        (ScramHash::Sha512, false) => Mechanism::ScramSha512,
        (ScramHash::Sha512, true) => Mechanism::ScramSha512Plus,
    }
}

// ---- a small SCRAM client, written from RFC 5802 independently of the server

fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => {
            let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        ScramHash::Sha256 => {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        ScramHash::Sha512 => {
            let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

fn h(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        ScramHash::Sha512 => Sha512::digest(data).to_vec(),
    }
}

fn salted_password(hash: ScramHash, password: &str, salt: &[u8], i: u32) -> Vec<u8> {
    let len = h(hash, b"").len();
    let mut out = vec![0u8; len];
    match hash {
        ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, i, &mut out),
        ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, i, &mut out),
        ScramHash::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, i, &mut out),
    }
    out
}

#[derive(Debug)]
enum ClientError {
    Malformed(#[allow(dead_code, reason = "read through Debug when a test fails")] &'static str),
    BadIterations,
    BadNonce,
    BadServerSignature,
}

struct Client {
    hash: ScramHash,
    password: String,
    gs2_header: String,
    cb_data: Vec<u8>,
    client_nonce: String,
    client_first_bare: String,
    auth_message: String,
    server_key: Vec<u8>,
}

impl Client {
    fn new(hash: ScramHash, user: &str, password: &str, nonce: &str, gs2_header: &str) -> Client {
        Client {
            hash,
            password: password.to_owned(),
            gs2_header: gs2_header.to_owned(),
            cb_data: Vec::new(),
            client_nonce: nonce.to_owned(),
            client_first_bare: format!(
                "n={},r={nonce}",
                user.replace('=', "=3D").replace(',', "=2C")
            ),
            auth_message: String::new(),
            server_key: Vec::new(),
        }
    }

    fn with_cb_data(mut self, data: &[u8]) -> Client {
        self.cb_data = data.to_vec();
        self
    }

    fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    fn last(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ClientError> {
        let sf = std::str::from_utf8(server_first).map_err(|_| ClientError::Malformed("utf8"))?;
        let mut r = None;
        let mut s = None;
        let mut i = None;
        for a in sf.split(',') {
            match a.split_at_checked(2) {
                Some(("r=", v)) => r = Some(v),
                Some(("s=", v)) => s = Some(v),
                Some(("i=", v)) => i = Some(v),
                _ => {}
            }
        }
        let r = r.ok_or(ClientError::Malformed("no r"))?;
        let salt = B64
            .decode(s.ok_or(ClientError::Malformed("no s"))?)
            .map_err(|_| ClientError::Malformed("bad salt"))?;
        let i: u32 = i
            .ok_or(ClientError::Malformed("no i"))?
            .parse()
            .map_err(|_| ClientError::BadIterations)?;
        // A client bounds the work a server can make it do.
        if !(1..=1_000_000).contains(&i) {
            return Err(ClientError::BadIterations);
        }
        if !r.starts_with(&self.client_nonce) || r.len() == self.client_nonce.len() {
            return Err(ClientError::BadNonce);
        }
        let mut c = self.gs2_header.as_bytes().to_vec();
        c.extend_from_slice(&self.cb_data);
        let without_proof = format!("c={},r={r}", B64.encode(&c));
        self.auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let sp = salted_password(self.hash, &self.password, &salt, i);
        let client_key = hmac(self.hash, &sp, b"Client Key");
        let stored_key = h(self.hash, &client_key);
        self.server_key = hmac(self.hash, &sp, b"Server Key");
        let sig = hmac(self.hash, &stored_key, self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    fn verify(&self, server_final: &[u8]) -> Result<(), ClientError> {
        let expected = hmac(self.hash, &self.server_key, self.auth_message.as_bytes());
        let sf = std::str::from_utf8(server_final).map_err(|_| ClientError::Malformed("utf8"))?;
        let v = sf
            .strip_prefix("v=")
            .ok_or(ClientError::Malformed("no v"))?;
        if B64.decode(v).map_err(|_| ClientError::Malformed("b64"))? == expected {
            Ok(())
        } else {
            Err(ClientError::BadServerSignature)
        }
    }
}

fn creds(password: &str) -> Vec<ScramCredential> {
    // Few iterations: the tests run in debug builds.
    account_credentials(password, 64).expect("valid password")
}

fn challenge(step: Step) -> Vec<u8> {
    match step {
        Step::Challenge(c) => c,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn need(step: Step, user: &str) {
    match step {
        Step::NeedCredentials { username } => assert_eq!(username, user),
        other => panic!("expected NeedCredentials, got {other:?}"),
    }
}

/// Runs a full SCRAM exchange; returns the server's result of the last step
/// and the client for checking the server-final.
fn scram_exchange(
    mechanism: Mechanism,
    cb: ChannelBinding,
    mut client: Client,
    user: &str,
    stored: Option<&[ScramCredential]>,
) -> (Result<Step, SaslCondition>, Client, Vec<u8>) {
    let mut s = ServerSession::new(mechanism, cb, &config()).expect("mechanism offered");
    need(s.step(&client.first()).expect("client-first"), user);
    let sf = challenge(s.provide(stored).expect("server-first"));
    let cf = client.last(&sf).expect("client-final");
    let r = s.step(&cf).map_err(|e| e.condition());
    assert!(s.is_finished());
    (r, client, sf)
}

fn success(r: Result<Step, SaslCondition>) -> (String, Option<String>, Option<Vec<u8>>) {
    match r {
        Ok(Step::Success {
            authcid,
            authzid,
            additional_data,
        }) => (authcid, authzid, additional_data),
        other => panic!("expected success, got {other:?}"),
    }
}

// ---- RFC test vectors

#[test]
fn rfc5802_sha1_vector() {
    let salt = B64.decode("QSXCR+Q6sek8bf92").expect("b64");
    let cred =
        scram_credential_with_salt(ScramHash::Sha1, "pencil", &salt, 4096).expect("credential");
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBinding::none(), &config())
        .expect("session");
    s.set_server_nonce_for_tests("3rfcNHYJY1ZVvWVs7j");
    need(
        s.step(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .expect("first"),
        "user",
    );
    let sf = challenge(s.provide(Some(&[cred])).expect("server-first"));
    assert_eq!(
        sf,
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    );
    let r = s.step(
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    );
    let (authcid, authzid, data) = success(r.map_err(|e| e.condition()));
    assert_eq!(authcid, "user");
    assert_eq!(authzid, None);
    assert_eq!(
        data.as_deref(),
        Some(&b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="[..])
    );
}

#[test]
fn rfc7677_sha256_vector() {
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("b64");
    let cred =
        scram_credential_with_salt(ScramHash::Sha256, "pencil", &salt, 4096).expect("credential");
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBinding::none(), &config())
        .expect("session");
    s.set_server_nonce_for_tests("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    need(
        s.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("first"),
        "user",
    );
    let sf = challenge(s.provide(Some(&[cred])).expect("server-first"));
    assert_eq!(
        sf,
        &b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
            [..]
    );
    let r = s.step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    let (authcid, _, data) = success(r.map_err(|e| e.condition()));
    assert_eq!(authcid, "user");
    assert_eq!(
        data.as_deref(),
        Some(&b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="[..])
    );
}

// ---- round trips

const HASHES: [ScramHash; 3] = [ScramHash::Sha1, ScramHash::Sha256, ScramHash::Sha512];

#[test]
fn round_trip_all_hashes() {
    let stored = creds("pencil");
    for hash in HASHES {
        let client = Client::new(hash, "Juliet", "pencil", "abcdefgh", "n,,");
        let (r, client, _) = scram_exchange(
            mech(hash, false),
            ChannelBinding::none(),
            client,
            "juliet",
            Some(&stored),
        );
        let (authcid, _, data) = success(r);
        assert_eq!(authcid, "juliet", "{hash:?}: name is nodeprep'd");
        client
            .verify(&data.expect("server-final"))
            .expect("server signature");
    }
}

#[test]
fn round_trip_with_authzid() {
    let stored = creds("pencil");
    let client = Client::new(
        ScramHash::Sha256,
        "juliet",
        "pencil",
        "nonce1",
        "n,a=Juliet@Example.com,",
    );
    let (r, _, _) = scram_exchange(
        Mechanism::ScramSha256,
        ChannelBinding::none(),
        client,
        "juliet",
        Some(&stored),
    );
    let (_, authzid, _) = success(r);
    assert_eq!(authzid.as_deref(), Some("Juliet@Example.com"));
}

#[test]
fn foreign_authzid_is_invalid_authzid() {
    for mechanism in [Mechanism::ScramSha1, Mechanism::ScramSha512] {
        let mut s =
            ServerSession::new(mechanism, ChannelBinding::none(), &config()).expect("session");
        let e = s
            .step(b"n,a=romeo@example.com,n=juliet,r=abc")
            .expect_err("other user's JID");
        assert_eq!(e.condition(), SaslCondition::InvalidAuthzid);
        let mut s =
            ServerSession::new(mechanism, ChannelBinding::none(), &config()).expect("session");
        let e = s
            .step(b"n,a=juliet@example.com/balcony,n=juliet,r=abc")
            .expect_err("full JID");
        assert_eq!(e.condition(), SaslCondition::InvalidAuthzid);
    }
}

#[test]
fn password_is_saslprepped() {
    // U+00A0 (no-break space) maps to a space under SASLprep (RFC 4013).
    let stored = account_credentials("pen\u{a0}cil", 64).expect("valid");
    let client = Client::new(ScramHash::Sha256, "juliet", "pen cil", "n", "n,,");
    let (r, _, _) = scram_exchange(
        Mechanism::ScramSha256,
        ChannelBinding::none(),
        client,
        "juliet",
        Some(&stored),
    );
    success(r);
    let mut s =
        ServerSession::new(Mechanism::Plain, ChannelBinding::none(), &config()).expect("session");
    need(
        s.step(b"\0juliet\0pen\xc2\xa0cil").expect("plain"),
        "juliet",
    );
    success(s.provide(Some(&stored)).map_err(|e| e.condition()));
}

// ---- failures

#[test]
fn wrong_password_is_not_authorized() {
    let stored = creds("pencil");
    for hash in HASHES {
        let client = Client::new(hash, "juliet", "pen", "xyz", "n,,");
        let (r, _, _) = scram_exchange(
            mech(hash, false),
            ChannelBinding::none(),
            client,
            "juliet",
            Some(&stored),
        );
        assert_eq!(r.expect_err("wrong password"), SaslCondition::NotAuthorized);
    }
}

#[test]
fn unknown_user_looks_like_a_known_one_until_the_proof() {
    let stored = account_credentials("pencil", 4096).expect("valid");
    for hash in HASHES {
        let (r_known, _, sf_known) = scram_exchange(
            mech(hash, false),
            ChannelBinding::none(),
            Client::new(hash, "juliet", "pencil", "nnn", "n,,"),
            "juliet",
            Some(&stored),
        );
        success(r_known);
        let (r_unknown, _, sf_unknown) = scram_exchange(
            mech(hash, false),
            ChannelBinding::none(),
            Client::new(hash, "nobody", "pencil", "nnn", "n,,"),
            "nobody",
            None,
        );
        assert_eq!(
            r_unknown.expect_err("no such user"),
            SaslCondition::NotAuthorized
        );
        let shape = |sf: &[u8]| {
            let s = String::from_utf8(sf.to_vec()).expect("utf8");
            let parts: Vec<String> = s.split(',').map(str::to_owned).collect();
            assert_eq!(parts.len(), 3);
            let salt = B64.decode(&parts[1][2..]).expect("salt");
            (parts[0].len(), salt.len(), parts[2].clone())
        };
        assert_eq!(shape(&sf_known), shape(&sf_unknown), "{hash:?}");

        // The fake salt is stable for a name: asking twice shows no change.
        let (_, _, again) = scram_exchange(
            mech(hash, false),
            ChannelBinding::none(),
            Client::new(hash, "nobody", "pencil", "nnn", "n,,"),
            "nobody",
            None,
        );
        let salt = |sf: &[u8]| {
            String::from_utf8(sf.to_vec())
                .expect("utf8")
                .split(',')
                .nth(1)
                .map(str::to_owned)
        };
        assert_eq!(salt(&sf_unknown), salt(&again));
    }
}

#[test]
fn user_without_credential_of_this_hash_is_not_authorized() {
    let only256 = vec![scram_credential(ScramHash::Sha256, "pencil", 64).expect("valid")];
    let (r, _, _) = scram_exchange(
        Mechanism::ScramSha1,
        ChannelBinding::none(),
        Client::new(ScramHash::Sha1, "juliet", "pencil", "n", "n,,"),
        "juliet",
        Some(&only256),
    );
    assert_eq!(r.expect_err("no sha1 cred"), SaslCondition::NotAuthorized);
}

#[test]
fn corrupt_credential_is_temporary_failure() {
    let mut bad = creds("pencil");
    for c in &mut bad {
        c.iterations = 0;
    }
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBinding::none(), &config())
        .expect("session");
    need(s.step(b"n,,n=juliet,r=abc").expect("first"), "juliet");
    let e = s.provide(Some(&bad)).expect_err("iterations 0");
    assert_eq!(e.condition(), SaslCondition::TemporaryAuthFailure);
}

fn first_error(mechanism: Mechanism, cb: ChannelBinding, msg: &[u8]) -> SaslCondition {
    let mut s = ServerSession::new(mechanism, cb, &config()).expect("session");
    let e = s.step(msg).expect_err("must fail");
    assert!(s.is_finished());
    e.condition()
}

#[test]
fn malformed_client_first() {
    use SaslCondition::MalformedRequest as M;
    let cases: &[&[u8]] = &[
        b"",
        b"n",
        b"n,",
        b"x,,n=user,r=abc",         // bad GS2 flag
        b"n,b=x,n=user,r=abc",      // bad authzid attribute
        b"n,a=,n=user,r=abc",       // empty authzid
        b"n,,m=ext,n=user,r=abc",   // mandatory extension
        b"n,,r=abc",                // no user name
        b"n,,n=user",               // no nonce
        b"n,,n=user,r=",            // empty nonce
        b"n,,n=us=er,r=abc",        // bad saslname escape
        b"n,,n=user=2,r=abc",       // truncated escape
        b"n,,n=,r=abc",             // empty user name
        b"n,,n=user,r=a\x7fb",      // non-printable nonce
        b"n,,n=user,r=abc,xyz",     // bad extension
        b"n,,n=\xff\xfe,r=abc",     // not UTF-8
        b"p=tls-exporter,,n=u,r=a", // channel binding with a non-PLUS mechanism
    ];
    for c in cases {
        assert_eq!(
            first_error(Mechanism::ScramSha256, ChannelBinding::none(), c),
            M,
            "{}",
            String::from_utf8_lossy(c)
        );
    }
}

/// Drives to the client-final step and feeds `last`.
fn final_error(last: &[u8]) -> SaslCondition {
    let stored = creds("pencil");
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBinding::none(), &config())
        .expect("session");
    s.set_server_nonce_for_tests("SRV");
    need(s.step(b"n,,n=user,r=CLI").expect("first"), "user");
    challenge(s.provide(Some(&stored)).expect("server-first"));
    let e = s.step(last).expect_err("must fail");
    assert!(s.is_finished());
    e.condition()
}

#[test]
fn malformed_client_final() {
    use SaslCondition::{MalformedRequest as M, NotAuthorized as N};
    let cases: &[(&[u8], SaslCondition)] = &[
        (b"", M),
        (b"c=biws,r=CLISRV", M),                                // no proof
        (b"r=CLISRV,p=AAAA", M),                                // no c=
        (b"c=biws,p=AAAA", M),                                  // no r=
        (b"c=b!ws,r=CLISRV,p=AAAA", M),                         // bad base64 in c=
        (b"c=biws,r=CLISRV,p=A!AA", M),                         // bad base64 in p=
        (b"c=biws,r=CLISRV,x,p=AAAA", M),                       // bad extension
        (b"c=biws,r=CLIXXX,p=AAAA", N),                         // wrong nonce
        (b"c=biws,r=XCLISRV,p=AAAA", N),                        // wrong nonce prefix
        (b"c=biws,r=CLI,p=AAAA", N),                            // client nonce only
        (b"c=eSws,r=CLISRV,p=AAAA", N),                         // c= says y,, (not what was sent)
        (b"c=biws,r=CLISRV,p=AAAA", N),                         // short proof
        (b"c=biws,r=CLISRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", N), // wrong proof
        (b"c=biws,r=CLISRV,p=\xff", M),                         // not UTF-8
    ];
    for (c, want) in cases {
        assert_eq!(final_error(c), *want, "{}", String::from_utf8_lossy(c));
    }
}

#[test]
fn calls_out_of_order_fail() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBinding::none(), &config())
        .expect("session");
    assert_eq!(
        s.provide(None).expect_err("too early").condition(),
        SaslCondition::MalformedRequest
    );
    assert!(s.is_finished());
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBinding::none(), &config())
        .expect("session");
    need(s.step(b"n,,n=a,r=b").expect("first"), "a");
    assert_eq!(
        s.step(b"n,,n=a,r=b")
            .expect_err("no credentials yet")
            .condition(),
        SaslCondition::MalformedRequest
    );
    let mut s =
        ServerSession::new(Mechanism::Plain, ChannelBinding::none(), &config()).expect("session");
    assert_eq!(s.abort().condition(), SaslCondition::Aborted);
    assert!(s.step(b"\0a\0b").is_err());
}

// ---- channel binding

fn cb_both() -> ChannelBinding {
    ChannelBinding::none()
        .with_tls_exporter(vec![1u8; 32])
        .with_tls_server_end_point(vec![2u8; 32])
}

#[test]
fn plus_with_matching_binding_data() {
    let stored = creds("pencil");
    for hash in HASHES {
        for (ty, data) in [
            ("tls-exporter", [1u8; 32]),
            ("tls-server-end-point", [2u8; 32]),
        ] {
            let client = Client::new(hash, "juliet", "pencil", "cb", &format!("p={ty},,"))
                .with_cb_data(&data);
            let (r, client, _) =
                scram_exchange(mech(hash, true), cb_both(), client, "juliet", Some(&stored));
            let (_, _, d) = success(r);
            client.verify(&d.expect("server-final")).expect("signature");
        }
    }
}

#[test]
fn plus_with_mismatching_binding_data() {
    let stored = creds("pencil");
    // The client sees another TLS session (a man in the middle).
    let client = Client::new(
        ScramHash::Sha256,
        "juliet",
        "pencil",
        "cb",
        "p=tls-exporter,,",
    )
    .with_cb_data(&[9u8; 32]);
    let (r, _, _) = scram_exchange(
        Mechanism::ScramSha256Plus,
        cb_both(),
        client,
        "juliet",
        Some(&stored),
    );
    assert_eq!(r.expect_err("mismatch"), SaslCondition::NotAuthorized);
    // Data of the other type.
    let client = Client::new(
        ScramHash::Sha256,
        "juliet",
        "pencil",
        "cb",
        "p=tls-exporter,,",
    )
    .with_cb_data(&[2u8; 32]);
    let (r, _, _) = scram_exchange(
        Mechanism::ScramSha256Plus,
        cb_both(),
        client,
        "juliet",
        Some(&stored),
    );
    assert_eq!(r.expect_err("mismatch"), SaslCondition::NotAuthorized);
}

#[test]
fn plus_gs2_header_checks() {
    use SaslCondition::MalformedRequest as M;
    let only_endpoint = ChannelBinding::none().with_tls_server_end_point(vec![2u8; 32]);
    assert_eq!(
        first_error(Mechanism::ScramSha256Plus, cb_both(), b"n,,n=u,r=a"),
        M
    );
    assert_eq!(
        first_error(Mechanism::ScramSha256Plus, cb_both(), b"y,,n=u,r=a"),
        M
    );
    assert_eq!(
        first_error(
            Mechanism::ScramSha256Plus,
            cb_both(),
            b"p=tls-unique,,n=u,r=a"
        ),
        M
    );
    assert_eq!(
        first_error(
            Mechanism::ScramSha256Plus,
            only_endpoint,
            b"p=tls-exporter,,n=u,r=a"
        ),
        M
    );
    // -PLUS cannot even start without binding data: it was not offered.
    let e = ServerSession::new(Mechanism::ScramSha1Plus, ChannelBinding::none(), &config())
        .expect_err("not offered");
    assert_eq!(e.condition(), SaslCondition::InvalidMechanism);
}

#[test]
fn y_flag_is_refused_when_plus_is_offered() {
    // Downgrade: an attacker stripped -PLUS from the list the client saw.
    assert_eq!(
        first_error(Mechanism::ScramSha256, cb_both(), b"y,,n=juliet,r=abc"),
        SaslCondition::NotAuthorized
    );
    // Without binding support on our side, y is fine.
    let stored = creds("pencil");
    let (r, _, _) = scram_exchange(
        Mechanism::ScramSha256,
        ChannelBinding::none(),
        Client::new(ScramHash::Sha256, "juliet", "pencil", "y", "y,,"),
        "juliet",
        Some(&stored),
    );
    success(r);
}

#[test]
fn non_plus_with_n_flag_while_plus_offered_is_fine() {
    let stored = creds("pencil");
    let (r, _, _) = scram_exchange(
        Mechanism::ScramSha1,
        cb_both(),
        Client::new(ScramHash::Sha1, "juliet", "pencil", "n", "n,,"),
        "juliet",
        Some(&stored),
    );
    success(r);
}

#[test]
fn advertising() {
    let names = |v: Vec<Mechanism>| v.into_iter().map(Mechanism::name).collect::<Vec<_>>();
    assert_eq!(
        names(advertised_mechanisms(&ChannelBinding::none(), false)),
        ["SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1"]
    );
    assert_eq!(
        names(advertised_mechanisms(&cb_both(), true)),
        [
            "SCRAM-SHA-512-PLUS",
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-512",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1",
            "PLAIN"
        ]
    );
    for m in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(m.name()), Some(m));
    }
    assert_eq!(Mechanism::from_name("scram-sha-1"), None);
    assert_eq!(
        cb_both().types(),
        [
            ChannelBindingType::TlsExporter,
            ChannelBindingType::TlsServerEndPoint
        ]
    );
    assert!(channel_binding_element(&ChannelBinding::none()).is_none());
    let el = channel_binding_element(&cb_both()).expect("element");
    let xml = String::from_utf8(el.to_bytes()).expect("utf8");
    assert!(xml.contains("urn:xmpp:sasl-cb:0"), "{xml}");
    assert!(xml.contains("type=\"tls-exporter\"") || xml.contains("type='tls-exporter'"));
    // Binding data never shows in Debug.
    let dbg = format!("{:?}", cb_both());
    assert!(!dbg.contains("1, 1"), "{dbg}");
}

#[test]
fn conditions_and_payloads() {
    for name in [
        "aborted",
        "account-disabled",
        "credentials-expired",
        "encryption-required",
        "incorrect-encoding",
        "invalid-authzid",
        "invalid-mechanism",
        "malformed-request",
        "mechanism-too-weak",
        "not-authorized",
        "temporary-auth-failure",
    ] {
        let c = SaslCondition::from_element_name(name).expect(name);
        assert_eq!(c.element_name(), name);
    }
    let f = SaslCondition::NotAuthorized.failure_element(None);
    assert!(
        f.get_child("not-authorized", "urn:ietf:params:xml:ns:xmpp-sasl")
            .is_some()
    );
    assert_eq!(decode_payload("=").expect("empty"), b"");
    assert_eq!(decode_payload(" biws\n").expect("b64"), b"n,,");
    assert_eq!(
        decode_payload("b!ws").expect_err("bad").condition(),
        SaslCondition::IncorrectEncoding
    );
    assert_eq!(encode_payload(b""), "=");
    assert_eq!(encode_payload(b"n,,"), "biws");
}

#[test]
fn credentials() {
    let all = account_credentials("pencil", 10).expect("valid");
    assert_eq!(
        all.iter().map(|c| c.hash).collect::<Vec<_>>(),
        [ScramHash::Sha1, ScramHash::Sha256, ScramHash::Sha512]
    );
    for c in &all {
        assert!(c.salt.len() >= 16);
        assert_eq!(c.iterations, 10);
        assert_eq!(c.stored_key.len(), h(c.hash, b"").len());
    }
    // Fresh salts.
    let again = account_credentials("pencil", 10).expect("valid");
    assert_ne!(all[0].salt, again[0].salt);
    assert_eq!(
        scram_credential(ScramHash::Sha1, "", 10),
        Err(CredentialError::InvalidPassword)
    );
    // U+0007 (a control character) is prohibited by SASLprep.
    assert_eq!(
        scram_credential(ScramHash::Sha1, "a\u{7}b", 10),
        Err(CredentialError::InvalidPassword)
    );
    assert_eq!(
        scram_credential(ScramHash::Sha1, "pencil", 0),
        Err(CredentialError::InvalidIterations)
    );
}

#[test]
fn client_rejects_bad_iteration_counts() {
    // The test client's own checks (a client library will need the same).
    for sf in [
        &b"r=abcSRV,s=QSXCR+Q6sek8bf92,i=0"[..],
        b"r=abcSRV,s=QSXCR+Q6sek8bf92,i=-1",
        b"r=abcSRV,s=QSXCR+Q6sek8bf92,i=99999999999",
        b"r=abcSRV,s=QSXCR+Q6sek8bf92,i=x",
    ] {
        let mut c = Client::new(ScramHash::Sha1, "u", "p", "abc", "n,,");
        assert!(matches!(c.last(sf), Err(ClientError::BadIterations)));
    }
    let mut c = Client::new(ScramHash::Sha1, "u", "p", "abc", "n,,");
    assert!(matches!(
        c.last(b"r=xyzSRV,s=QSXCR+Q6sek8bf92,i=4096"),
        Err(ClientError::BadNonce)
    ));
}

// ---- PLAIN

fn plain(msg: &[u8], stored: Option<&[ScramCredential]>) -> Result<Step, SaslCondition> {
    let mut s =
        ServerSession::new(Mechanism::Plain, ChannelBinding::none(), &config()).expect("session");
    match s.step(msg).map_err(|e| e.condition())? {
        Step::NeedCredentials { .. } => s.provide(stored).map_err(|e| e.condition()),
        other => panic!("expected NeedCredentials, got {other:?}"),
    }
}

#[test]
fn plain_success_with_and_without_authzid() {
    let stored = creds("pencil");
    let (authcid, authzid, data) = success(plain(b"\0Juliet\0pencil", Some(&stored)));
    assert_eq!((authcid.as_str(), authzid, data), ("juliet", None, None));
    let (_, authzid, _) = success(plain(b"juliet@example.com\0juliet\0pencil", Some(&stored)));
    assert_eq!(authzid.as_deref(), Some("juliet@example.com"));
    // Any one stored hash will do.
    let only1 = vec![scram_credential(ScramHash::Sha1, "pencil", 64).expect("valid")];
    success(plain(b"\0juliet\0pencil", Some(&only1)));
}

#[test]
fn plain_failures() {
    let stored = creds("pencil");
    assert_eq!(
        plain(b"\0juliet\0pencil2", Some(&stored)).expect_err("wrong"),
        SaslCondition::NotAuthorized
    );
    assert_eq!(
        plain(b"\0nobody\0pencil", None).expect_err("unknown"),
        SaslCondition::NotAuthorized
    );
    assert_eq!(
        plain(b"romeo@example.com\0juliet\0pencil", Some(&stored)).expect_err("authzid"),
        SaslCondition::InvalidAuthzid
    );
    use SaslCondition::MalformedRequest as M;
    for bad in [
        &b""[..],
        b"juliet",
        b"\0juliet",
        b"\0juliet\0",
        b"\0\0pencil",
        b"\0juliet\0pencil\0",
        b"\0jul\xffiet\0pencil",
        b"\0juliet\0pen\xffcil",
        b"\xff\0juliet\0pencil",
    ] {
        let mut s = ServerSession::new(Mechanism::Plain, ChannelBinding::none(), &config())
            .expect("session");
        assert_eq!(
            s.step(bad).expect_err("malformed").condition(),
            M,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // A password SASLprep refuses cannot match anything.
    assert_eq!(
        plain(b"\0juliet\0pen\x07cil", Some(&stored)).expect_err("prohibited"),
        SaslCondition::NotAuthorized
    );
}

#[test]
fn debug_shows_no_secrets() {
    let mut s =
        ServerSession::new(Mechanism::Plain, ChannelBinding::none(), &config()).expect("session");
    need(s.step(b"\0juliet\0hunter2").expect("step"), "juliet");
    let d = format!("{s:?}");
    assert!(!d.contains("hunter2"), "{d}");
    let d = format!("{:?}", config());
    assert!(!d.contains("7, 7"), "{d}");
    let d = format!("{:?}", Step::Challenge(b"r=secret".to_vec()));
    assert!(!d.contains("secret"), "{d}");
}

// ---- tls-server-end-point

/// A skeleton certificate: SEQUENCE { SEQUENCE {}, SEQUENCE { OID }, BIT STRING }.
fn cert_with_oid(oid: &[u8]) -> Vec<u8> {
    let mut alg = vec![0x06, oid.len() as u8];
    alg.extend_from_slice(oid);
    let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
    body.extend_from_slice(&alg);
    body.extend_from_slice(&[0x03, 0x01, 0x00]);
    let mut der = vec![0x30, body.len() as u8];
    der.extend_from_slice(&body);
    der
}

#[test]
fn tls_server_end_point_hashes() {
    use beamline_xmpp::sasl::tls_server_end_point;
    let rsa = |x: u8| cert_with_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, x]);
    let ecdsa = |x: &[u8]| {
        let mut o = vec![0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
        o.extend_from_slice(x);
        cert_with_oid(&o)
    };
    for der in [rsa(5), rsa(11), rsa(4), ecdsa(&[3, 2]), ecdsa(&[1])] {
        assert_eq!(
            tls_server_end_point(&der),
            Some(Sha256::digest(&der).to_vec())
        );
    }
    let der = ecdsa(&[3, 3]);
    assert_eq!(
        tls_server_end_point(&der),
        Some(sha2::Sha384::digest(&der).to_vec())
    );
    let der = rsa(13);
    assert_eq!(
        tls_server_end_point(&der),
        Some(Sha512::digest(&der).to_vec())
    );
    // Ed25519 has no hash; PSS keeps it in parameters; garbage is no cert.
    assert_eq!(
        tls_server_end_point(&cert_with_oid(&[0x2b, 0x65, 0x70])),
        None
    );
    assert_eq!(tls_server_end_point(&rsa(10)), None);
    for bad in [
        &b""[..],
        b"\x30",
        b"\x30\x85\x00\x00\x00\x00\x01",
        b"\x30\x02\x30\x05",
    ] {
        assert_eq!(tls_server_end_point(bad), None);
    }
}

#[test]
fn bare_jid_as_user_name() {
    let stored = creds("pencil");
    let client = Client::new(
        ScramHash::Sha256,
        "Juliet@Example.COM",
        "pencil",
        "j",
        "n,,",
    );
    let (r, client, _) = scram_exchange(
        Mechanism::ScramSha256,
        ChannelBinding::none(),
        client,
        "juliet",
        Some(&stored),
    );
    let (authcid, _, d) = success(r);
    assert_eq!(authcid, "juliet");
    client.verify(&d.expect("server-final")).expect("signature");
    let (authcid, _, _) = success(plain(b"\0juliet@example.com\0pencil", Some(&stored)));
    assert_eq!(authcid, "juliet");
    // Another domain's user is nobody here.
    let mut s =
        ServerSession::new(Mechanism::Plain, ChannelBinding::none(), &config()).expect("session");
    assert_eq!(
        s.step(b"\0juliet@example.org\0pencil")
            .expect_err("foreign domain")
            .condition(),
        SaslCondition::NotAuthorized
    );
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBinding::none(), &config())
        .expect("session");
    // SCRAM answers as for an absent user.
    challenge(
        s.step(b"n,,n=juliet@example.org,r=abc")
            .expect("fake challenge"),
    );
}
