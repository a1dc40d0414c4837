//! Arbitrary bytes fed to every step of every mechanism never panic.

use beamline_xmpp::sasl::{
    ChannelBinding, Mechanism, SaslConfig, ScramCredential, ScramHash, ServerSession, Step,
    account_credentials,
};
use proptest::prelude::*;
use std::sync::OnceLock;

fn stored() -> &'static [ScramCredential] {
    static C: OnceLock<Vec<ScramCredential>> = OnceLock::new();
    C.get_or_init(|| account_credentials("pencil", 2).expect("valid"))
}

fn cb() -> ChannelBinding {
    ChannelBinding::none()
        .with_tls_exporter(vec![1; 32])
        .with_tls_server_end_point(vec![2; 32])
}

/// Feeds `msgs` in turn, providing credentials (or none) when asked.
fn drive(mechanism: Mechanism, msgs: &[Vec<u8>], known: bool) {
    let config = SaslConfig::new("example.com", [3; 32]).with_fake_iterations(2);
    let Ok(mut s) = ServerSession::new(mechanism, cb(), &config) else {
        return;
    };
    for m in msgs {
        let mut r = s.step(m);
        while let Ok(Step::NeedCredentials { .. }) = r {
            r = s.provide(known.then(stored));
        }
        if r.is_err() || s.is_finished() {
            return;
        }
    }
}

/// Messages that get past the first step, so that later steps see fuzz.
fn prefix(mechanism: Mechanism) -> Vec<u8> {
    if mechanism == Mechanism::Plain {
        b"\0user\0pencil".to_vec()
    } else if mechanism.is_plus() {
        b"p=tls-exporter,,n=user,r=abc".to_vec()
    } else {
        b"n,,n=user,r=abc".to_vec()
    }
}

proptest! {
    #[test]
    fn arbitrary_first_message(m in 0usize..7, bytes in proptest::collection::vec(any::<u8>(), 0..200), known in any::<bool>()) {
        drive(Mechanism::ALL[m], &[bytes], known);
    }

    #[test]
    fn arbitrary_final_message(m in 0usize..7, bytes in proptest::collection::vec(any::<u8>(), 0..200), known in any::<bool>()) {
        let mechanism = Mechanism::ALL[m];
        drive(mechanism, &[prefix(mechanism), bytes.clone(), bytes], known);
    }

    #[test]
    fn structured_final_message(
        m in 0usize..6,
        c in "[a-zA-Z0-9+/=!,]{0,12}",
        r in "[a-zA-Z0-9+/=,]{0,40}",
        p in "[a-zA-Z0-9+/=,]{0,90}",
        known in any::<bool>(),
    ) {
        let mechanism = Mechanism::ALL[m];
        let last = format!("c={c},r={r},p={p}").into_bytes();
        drive(mechanism, &[prefix(mechanism), last], known);
    }

    #[test]
    fn structured_first_message(
        m in 0usize..7,
        flag in "(n|y|p=[a-z-]{0,22}|[a-z=]{0,3})",
        a in "(a=[a-zA-Z@.=0-9]{0,12})?",
        rest in "[a-zA-Z0-9=,@.]{0,40}",
    ) {
        let first = format!("{flag},{a},{rest}").into_bytes();
        drive(Mechanism::ALL[m], &[first], true);
    }
}

proptest! {
    /// Whatever storage hands back (corrupt lengths, zero iterations, an
    /// empty salt), the session answers or fails, and never panics.
    #[test]
    fn arbitrary_stored_credentials(
        m in 0usize..7,
        hash in 0usize..3,
        salt in proptest::collection::vec(any::<u8>(), 0..20),
        iterations in 0u32..3,
        stored_key in proptest::collection::vec(any::<u8>(), 0..70),
        server_key in proptest::collection::vec(any::<u8>(), 0..70),
        last in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let mechanism = Mechanism::ALL[m];
        let hash = [ScramHash::Sha1, ScramHash::Sha256, ScramHash::Sha512][hash];
        let cred = ScramCredential { hash, salt, iterations, stored_key, server_key };
        let config = SaslConfig::new("example.com", [3; 32]);
        let Ok(mut s) = ServerSession::new(mechanism, cb(), &config) else {
            return Ok(());
        };
        if let Ok(Step::NeedCredentials { .. }) = s.step(&prefix(mechanism))
            && let Ok(Step::Challenge(_)) = s.provide(Some(std::slice::from_ref(&cred)))
        {
            let _ = s.step(&last);
        }
    }
}
