//! Arbitrary bytes from a client into a real session (the in-memory
//! transport of a running server): negotiation, SASL, binding and stanza
//! handling must never panic, and the session must always end or answer.
//!
//! Inputs that start with a valid stream header and authentication reach
//! deeper; seed the corpus with a recorded login (see docs/xml-stream.md).
//!
//! `cargo +nightly fuzz run c2s_session` from `/work/main/fuzz`.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use beamline_xmpp::config::Config;
use beamline_xmpp::server::{Server, ServerOptions};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: Server,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt.block_on(async {
            let dir = std::env::temp_dir().join("beamline-fuzz-c2s");
            let mut config = Config::default();
            config.storage.data_dir = dir;
            config.listeners = Vec::new();
            config.auth.plain_on_loopback_without_tls = true;
            let server = Server::start(config, ServerOptions::in_memory())
                .await
                .expect("server");
            server
                .register("user", "localhost", "pencil")
                .await
                .expect("user");
            server
        });
        Fixture { rt, server }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    f.rt.block_on(async {
        let Ok(mut stream) = f.server.connect_in_memory().await else {
            return;
        };
        // Feed in a few chunks, reading whatever the server answers.
        let mut buf = vec![0u8; 4096];
        for chunk in data.chunks(97) {
            if stream.write_all(chunk).await.is_err() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await;
        }
        let _ = stream.shutdown().await;
        // The session must notice the end and close.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    });
});
