//! A free TCP port for test nodes, shared by the root and storage tests.

use std::net::TcpListener;

/// A port that was free a moment ago, below the kernel's ephemeral range.
pub fn free_port() -> u16 {
    // Not port 0: the kernel hands out ephemeral ports (32768-60999 here),
    // and a port released by this probe can be taken as the source port of
    // an outgoing connection before the node binds it. Ports below that
    // range are never given to outgoing connections.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}
