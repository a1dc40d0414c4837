//! Shared helpers for the cluster tests: start `beamline-testnode`
//! processes on free ports and drive them (see `node.rs`).

#![allow(dead_code)]

use std::time::Duration;

#[path = "node.rs"]
mod node;
pub use node::*;

/// Heartbeat timeout the test nodes run with (see `beamline-testnode`).
pub const HB_TIMEOUT: Duration = Duration::from_millis(2000);

impl TestNode {
    /// Starts a node with cookie "secret" joining through `seeds` (ports).
    pub fn start(name: &str, port: u16, seeds: &[u16]) -> Self {
        Self::start_with(name, port, seeds, "secret", &[])
    }

    /// Starts a node with every option.
    pub fn start_with(name: &str, port: u16, seeds: &[u16], cookie: &str, extra: &[&str]) -> Self {
        let mut args: Vec<String> = [
            "--name",
            name,
            "--port",
            &port.to_string(),
            "--cookie",
            cookie,
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--seeds".to_string(), seeds_arg(seeds)]);
        args.extend(extra.iter().map(|s| s.to_string()));
        TestNode::spawn(
            env!("CARGO_BIN_EXE_beamline-testnode"),
            name,
            port,
            &args,
            "info",
            Duration::from_secs(20),
        )
    }
}

/// Starts n1, n2, n3 (n2 and n3 join through n1) and waits for a full mesh.
pub fn three_nodes(prefix: &str) -> (TestNode, TestNode, TestNode) {
    three_nodes_with(prefix, TestNode::start)
}
