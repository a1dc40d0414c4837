//! `[tls]`, `[auth]`, `[storage]`, `[cluster]` and `log_level`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::Config;
use super::error::{ConfigError, KeyPath, Source};

/// `[tls]`: certificates. A host uses its entry in `hosts`, else the
/// default `certificate`/`key`, else (when `self_signed`) a self-signed
/// certificate generated into the data directory at first start. The
/// files are read at start, not here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM certificate chain for hosts without their own. Default: none.
    /// Must be given together with `key`.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`. Default: none.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Per-host certificates, `[tls.hosts."example.org"]`; each name must be
    /// one of `hosts`. Default empty.
    #[serde(default)]
    pub hosts: BTreeMap<String, CertificateConfig>,
    /// Generate a self-signed certificate into `storage.data_dir` for hosts
    /// that have none. Default `true`; when `false`, every host needs a
    /// certificate if any listener uses TLS.
    #[serde(default = "yes")]
    pub self_signed: bool,
}

fn yes() -> bool {
    true
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            certificate: None,
            key: None,
            hosts: BTreeMap::new(),
            self_signed: true,
        }
    }
}

/// A certificate and its key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CertificateConfig {
    /// PEM certificate chain. Required.
    pub certificate: PathBuf,
    /// PEM private key. Required.
    pub key: PathBuf,
}

/// SASL mechanisms the server may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// SCRAM-SHA-1 (RFC 5802).
    #[serde(rename = "SCRAM-SHA-1")]
    ScramSha1,
    /// SCRAM-SHA-1 with channel binding.
    #[serde(rename = "SCRAM-SHA-1-PLUS")]
    ScramSha1Plus,
    /// SCRAM-SHA-256 (RFC 7677).
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-256 with channel binding.
    #[serde(rename = "SCRAM-SHA-256-PLUS")]
    ScramSha256Plus,
    /// SCRAM-SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// SCRAM-SHA-512 with channel binding.
    #[serde(rename = "SCRAM-SHA-512-PLUS")]
    ScramSha512Plus,
    /// PLAIN (RFC 4616): offered only over TLS, or on loopback when
    /// `plain_on_loopback_without_tls` is set.
    #[serde(rename = "PLAIN")]
    Plain,
}

impl From<SaslMechanism> for crate::sasl::Mechanism {
    /// The SASL layer's mechanism for a configured one (both name the same
    /// IANA mechanisms; the config's type exists for its serde names).
    fn from(m: SaslMechanism) -> Self {
        use crate::sasl::Mechanism as M;
        match m {
            SaslMechanism::ScramSha1 => M::ScramSha1,
            SaslMechanism::ScramSha1Plus => M::ScramSha1Plus,
            SaslMechanism::ScramSha256 => M::ScramSha256,
            SaslMechanism::ScramSha256Plus => M::ScramSha256Plus,
            SaslMechanism::ScramSha512 => M::ScramSha512,
            SaslMechanism::ScramSha512Plus => M::ScramSha512Plus,
            SaslMechanism::Plain => M::Plain,
        }
    }
}

impl SaslMechanism {
    /// Every mechanism, strongest first: the default list.
    pub const ALL: [SaslMechanism; 7] = [
        Self::ScramSha512Plus,
        Self::ScramSha256Plus,
        Self::ScramSha1Plus,
        Self::ScramSha512,
        Self::ScramSha256,
        Self::ScramSha1,
        Self::Plain,
    ];

    /// The IANA name, as on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::ScramSha1 => "SCRAM-SHA-1",
            Self::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha512Plus => "SCRAM-SHA-512-PLUS",
            Self::Plain => "PLAIN",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[auth]`: how clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Mechanisms offered, in this order. Default: all of them, strongest
    /// first (`SCRAM-SHA-512-PLUS`, `SCRAM-SHA-256-PLUS`,
    /// `SCRAM-SHA-1-PLUS`, `SCRAM-SHA-512`, `SCRAM-SHA-256`,
    /// `SCRAM-SHA-1`, `PLAIN`). Not empty, no repeats.
    #[serde(default = "default_mechanisms")]
    pub mechanisms: Vec<SaslMechanism>,
    /// Offer PLAIN on a connection without TLS when the peer is on a
    /// loopback address (for local tools and tests). Default `false`.
    #[serde(default)]
    pub plain_on_loopback_without_tls: bool,
    /// PBKDF2 iterations for newly stored SCRAM credentials. Default 4096
    /// (the minimum RFC 7677 recommends); 4096–10,000,000.
    #[serde(default = "default_scram_iterations")]
    pub scram_iterations: u32,
}

/// Every mechanism but the -PLUS ones, strongest first. -PLUS is left out
/// of the default because a client that can bind only with a type the
/// server lacks (tls-unique, which TLS 1.3 does not have: slixmpp 1.8,
/// for one) answers an offered -PLUS with the `y` flag, which the server
/// must then refuse as a downgrade (RFC 5802 §6). List them to enable them.
fn default_mechanisms() -> Vec<SaslMechanism> {
    SaslMechanism::ALL
        .into_iter()
        .filter(|m| !m.name().ends_with("-PLUS"))
        .collect()
}
fn default_scram_iterations() -> u32 {
    4096
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mechanisms: default_mechanisms(),
            plain_on_loopback_without_tls: false,
            scram_iterations: default_scram_iterations(),
        }
    }
}

/// When the disc log counts a write as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncMode {
    /// fsync after every commit, before it is acknowledged (the default).
    #[default]
    EveryCommit,
    /// Group commit: commits waiting together share one fsync; each is
    /// still acknowledged only once durable.
    Group,
}

/// `[storage]`: where and how data is kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StorageConfig {
    /// Directory for tables, logs and a generated certificate. Default
    /// `./data` (relative to the working directory).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `every_commit` or `group`. Default `every_commit`.
    #[serde(default)]
    pub sync: SyncMode,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            sync: SyncMode::default(),
        }
    }
}

/// The cluster's shared secret. Its `Debug` never shows it (there is no
/// `Display`), and a wrongly typed value is refused without echoing it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(String);

impl Cookie {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the node handshake. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Cookie {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through `toml::Value` so that serde's "invalid type: integer `…`"
        // (which quotes the value) never sees the secret.
        match toml::Value::deserialize(d) {
            Ok(toml::Value::String(s)) => Ok(Self(s)),
            Ok(other) => Err(de::Error::custom(format!(
                "expected a string, found {} (value not shown: the cookie is a secret)",
                other.type_str()
            ))),
            Err(_) => Err(de::Error::custom(
                "expected a string (value not shown: the cookie is a secret)",
            )),
        }
    }
}

/// `[cluster]`: joining other nodes. Without this section the node runs
/// alone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster: letters, digits, `-`, `_`
    /// and `.`, at most 64 characters. Default `beamline`.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// Shared secret; nodes with another cookie are refused. Required when
    /// the section is present; never printed.
    #[serde(default)]
    pub cookie: Option<Cookie>,
    /// Address the node listens on for other nodes. Default
    /// `127.0.0.1:4370`; port 1–65535.
    #[serde(default = "default_cluster_listen")]
    pub listen: SocketAddr,
    /// Nodes to join at start, as `ip:port`. Default empty (this node
    /// starts a cluster, others join it).
    #[serde(default)]
    pub seeds: Vec<SocketAddr>,
}

fn default_node_name() -> String {
    "beamline".to_owned()
}
fn default_cluster_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4370))
}

impl ClusterConfig {
    /// A cluster section with this name and cookie and defaults elsewhere.
    pub fn new(node_name: impl Into<String>, cookie: Cookie) -> Self {
        Self {
            node_name: node_name.into(),
            cookie: Some(cookie),
            listen: default_cluster_listen(),
            seeds: Vec::new(),
        }
    }
}

/// How much the server logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Per-connection detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The name `tracing` filters use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

pub(crate) fn validate(config: &Config, src: &Source) -> Result<(), ConfigError> {
    let tls = KeyPath::root().key("tls");
    match (&config.tls.certificate, &config.tls.key) {
        (Some(_), None) => {
            return Err(src.invalid(&tls.key("certificate"), "`certificate` needs `key`"));
        }
        (None, Some(_)) => return Err(src.invalid(&tls.key("key"), "`key` needs `certificate`")),
        _ => {}
    }
    for name in config.tls.hosts.keys() {
        if !config.hosts.iter().any(|h| h == &name.to_lowercase()) {
            return Err(src.invalid(
                &tls.key("hosts").key(name),
                format!("`{name}` is not one of `hosts`"),
            ));
        }
    }
    let needs_tls = config.listeners.iter().any(|l| l.uses_tls());
    if needs_tls && !config.tls.self_signed && config.tls.certificate.is_none() {
        if let Some(host) = config
            .hosts
            .iter()
            .find(|h| !config.tls.hosts.keys().any(|k| &k.to_lowercase() == *h))
        {
            return Err(src.invalid(
                &tls.key("self_signed"),
                format!("host `{host}` has no certificate and self_signed is false"),
            ));
        }
    }

    let auth = KeyPath::root().key("auth");
    if config.auth.mechanisms.is_empty() {
        return Err(src.invalid(&auth.key("mechanisms"), "at least one mechanism is needed"));
    }
    for (i, m) in config.auth.mechanisms.iter().enumerate() {
        if config.auth.mechanisms[..i].contains(m) {
            return Err(src.invalid(
                &auth.key("mechanisms").index(i),
                format!("{m} is listed twice"),
            ));
        }
    }
    if !(4096..=10_000_000).contains(&config.auth.scram_iterations) {
        return Err(src.invalid(
            &auth.key("scram_iterations"),
            format!(
                "{} is out of range 4096–10000000",
                config.auth.scram_iterations
            ),
        ));
    }

    if config.storage.data_dir.as_os_str().is_empty() {
        return Err(src.invalid(
            &KeyPath::root().key("storage").key("data_dir"),
            "must not be empty",
        ));
    }

    if let Some(cluster) = &config.cluster {
        let path = KeyPath::root().key("cluster");
        let name = &cluster.node_name;
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err(src.invalid(
                &path.key("node_name"),
                format!("`{name}`: use 1–64 letters, digits, `-`, `_` or `.`"),
            ));
        }
        match &cluster.cookie {
            None => {
                return Err(src.invalid(&path, "a cluster needs a `cookie` (a shared secret)"));
            }
            Some(c) if c.expose().is_empty() => {
                return Err(src.invalid(&path.key("cookie"), "the cookie must not be empty"));
            }
            Some(_) => {}
        }
        if cluster.listen.port() == 0 {
            return Err(src.invalid(&path.key("listen"), "port must be 1–65535, not 0"));
        }
        for (i, seed) in cluster.seeds.iter().enumerate() {
            if seed.port() == 0 {
                return Err(src.invalid(&path.key("seeds").index(i), "port must be 1–65535, not 0"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod mechanism_tests {
    use super::SaslMechanism;

    #[test]
    fn configured_mechanisms_map_to_the_same_sasl_names() {
        for m in SaslMechanism::ALL {
            assert_eq!(crate::sasl::Mechanism::from(m).name(), m.name());
        }
    }
}
