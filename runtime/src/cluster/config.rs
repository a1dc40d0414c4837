//! Node configuration and the timings of the failure detector.

use std::net::SocketAddr;
use std::time::Duration;

use super::tls::TlsConfig;

/// How a node starts: identity, secret, address and timings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The node's name: its stable identity in the cluster (ractor's node ids
    /// change on every reconnect, the name does not). Letters, digits, `-`,
    /// `_` and `.`; at most 64 characters. Unique within the cluster.
    pub name: String,
    /// Shared secret; a peer with another cookie is refused.
    pub cookie: String,
    /// Address the node listens on. Port 0 picks a free port at start.
    pub listen: SocketAddr,
    /// IP address other nodes dial to reach this one. Default: the listen IP,
    /// or 127.0.0.1 when listening on an unspecified address.
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Failure detector and redial timings.
    pub timings: Timings,
    /// TLS between nodes; `None` (the default) means plain TCP.
    pub tls: Option<TlsConfig>,
    /// Capacity of the event broadcast channel (default 1024). A subscriber
    /// that falls further behind loses the oldest events and is told so
    /// (`RecvError::Lagged`).
    pub event_capacity: usize,
}

impl NodeConfig {
    /// A configuration with default timings, no TLS.
    pub fn new(name: impl Into<String>, cookie: impl Into<String>, listen: SocketAddr) -> Self {
        Self {
            name: name.into(),
            cookie: cookie.into(),
            listen,
            advertise_ip: None,
            timings: Timings::default(),
            tls: None,
            event_capacity: 1024,
        }
    }

    /// Sets the timings.
    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// Turns on TLS between nodes.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the address other nodes dial.
    pub fn with_advertise_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.advertise_ip = Some(ip);
        self
    }
}

/// Timings of heartbeat, failure detection, authentication and redial.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Timings {
    /// How often a node sends a heartbeat to each peer. Default 500 ms.
    pub heartbeat_interval: Duration,
    /// A peer silent this long is declared down and its connection cut.
    /// Default 3 s.
    pub heartbeat_timeout: Duration,
    /// A connection not authenticated and synchronised within this time is
    /// cut (a frozen peer still accepts TCP). Default 2 s.
    pub auth_timeout: Duration,
    /// First redial delay after a peer is lost. Default 200 ms.
    pub redial_min: Duration,
    /// Redial delay cap (the delay doubles up to it). Default 2 s.
    pub redial_max: Duration,
    /// How long `join` waits for a seed to answer. Default 10 s.
    pub join_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(3),
            auth_timeout: Duration::from_secs(2),
            redial_min: Duration::from_millis(200),
            redial_max: Duration::from_secs(2),
            join_timeout: Duration::from_secs(10),
        }
    }
}

impl Timings {
    /// Sets the heartbeat interval and timeout.
    pub fn with_heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }

    /// Sets the redial backoff bounds.
    pub fn with_redial(mut self, min: Duration, max: Duration) -> Self {
        self.redial_min = min;
        self.redial_max = max;
        self
    }

    /// Sets how long `join` waits.
    pub fn with_join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }
}
