//! Module options from the configuration file: an unknown option or a bad
//! value stops the start with the file, line and key.

#![allow(clippy::unwrap_used)] // a test: a failed set-up step should fail it

use beamline_xmpp::config::Config;
use beamline_xmpp::server::{Server, ServerOptions};

async fn start_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listeners = []\n[storage]\ndata_dir = \"{}\"\n{text}",
        dir.path().display()
    );
    let config = Config::from_str(&text, "beamline.toml").unwrap();
    Server::start(config, ServerOptions::in_memory())
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_module_option_names_file_line_and_key() {
    let e = start_error("[modules.mod_vcard]\nmax_sise = 10\n").await;
    assert!(e.starts_with("beamline.toml:5:"), "{e}");
    assert!(e.contains("modules.mod_vcard.max_sise"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_module_option_value_names_the_module() {
    let e = start_error("[modules.mod_roster]\nversioning = \"yes\"\n").await;
    assert!(e.starts_with("beamline.toml:4:"), "{e}");
    assert!(e.contains("versioning must be true or false"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_module_is_refused() {
    let e = start_error("[modules.mod_pong]\n").await;
    assert!(e.contains("unknown module `mod_pong`"), "{e}");
}
