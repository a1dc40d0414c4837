//! Arbitrary bytes as SASL messages, on both sides: the server state
//! machine gets them as initial response and responses (credentials
//! provided whenever it asks), the client as challenges and the success
//! payload. Neither may panic, and the server must never report success
//! for input that did not prove the password.
//!
//! `cargo +nightly fuzz run sasl` from `/work/main/fuzz`.

#![no_main]

use std::sync::OnceLock;

use beamline_xmpp::sasl::client::{ClientCredentials, ClientSession, Gs2Flag};
use beamline_xmpp::sasl::{
    self, ChannelBinding, Mechanism, SaslConfig, ScramCredential, ServerSession, Step,
};
use libfuzzer_sys::fuzz_target;

fn credentials() -> &'static [ScramCredential] {
    static CREDS: OnceLock<Vec<ScramCredential>> = OnceLock::new();
    CREDS.get_or_init(|| sasl::account_credentials("pencil", 4096).expect("credentials"))
}

const MECHS: [Mechanism; 7] = Mechanism::ALL;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mech = MECHS[usize::from(control) % MECHS.len()];
    // Messages are separated by a 0xFF byte (never in valid SASL text).
    let messages: Vec<&[u8]> = rest.split(|b| *b == 0xff).collect();
    if control & 0x80 == 0 {
        let cb = ChannelBinding::none().with_tls_exporter(vec![7; 32]);
        let config = SaslConfig::new("example.com", [9; 32]);
        let Ok(mut server) = ServerSession::new(mech, cb, &config) else {
            return;
        };
        for m in messages {
            let mut step = server.step(m);
            while let Ok(Step::NeedCredentials { .. }) = step {
                step = server.provide(Some(credentials()));
            }
            match step {
                Ok(Step::Success { .. }) => {
                    // Only PLAIN with the right password can get here from
                    // fuzzed bytes (SCRAM needs the proof).
                    assert!(
                        mech == Mechanism::Plain,
                        "{mech:?} succeeded on fuzzed input"
                    );
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    } else {
        let creds = ClientCredentials::new("user", "pencil");
        let Ok(mut client) = ClientSession::new(mech, creds, Gs2Flag::NotSupported) else {
            return;
        };
        let _ = client.initial_response();
        let mut it = messages.into_iter();
        for m in it.by_ref().take(2) {
            if client.challenge(m).is_err() {
                return;
            }
        }
        if let Some(last) = it.next() {
            let _ = client.success(Some(last));
        }
    }
});
