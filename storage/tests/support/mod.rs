//! Shared helpers for the replication tests: start
//! `beamline-storage-testnode` processes on free ports and drive them with
//! line commands (the harness is the root package's `tests/support/node.rs`).

#![allow(dead_code)]

use std::time::Duration;

#[path = "../../../tests/support/node.rs"]
mod node;
pub use node::*;

/// Heartbeat timeout the test nodes run with (see `beamline-testnode`).
pub const HB_TIMEOUT: Duration = Duration::from_millis(2000);

impl TestNode {
    /// Starts a node joining through `seeds` (ports).
    pub fn start(name: &str, port: u16, seeds: &[u16]) -> Self {
        Self::start_with(name, port, seeds, &[])
    }

    /// Starts a node with extra flags.
    pub fn start_with(name: &str, port: u16, seeds: &[u16], extra: &[&str]) -> Self {
        let mut args: Vec<String> = ["--name", name, "--port", &port.to_string()]
            .map(String::from)
            .to_vec();
        args.extend(["--seeds".to_string(), seeds_arg(seeds)]);
        args.extend(extra.iter().map(|s| s.to_string()));
        TestNode::spawn(
            env!("CARGO_BIN_EXE_beamline-storage-testnode"),
            name,
            port,
            &args,
            "info,beamline_storage=debug",
            Duration::from_secs(30),
        )
    }
}

/// Starts n1, n2, n3 (n2 joins through n1, n3 through n2) and waits for a
/// full mesh.
pub fn three_nodes(prefix: &str) -> (TestNode, TestNode, TestNode) {
    three_nodes_with(prefix, TestNode::start)
}
