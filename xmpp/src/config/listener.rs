//! `[[listeners]]`: what the server listens on, and the limits of each
//! listener's connections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::Config;
use super::error::{ConfigError, KeyPath, Source};
use crate::stream::StreamLimits;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ListenerKind {
    /// Client-to-server XMPP on plain TCP, upgraded with STARTTLS
    /// (RFC 6120), usually port 5222.
    C2s,
    /// Client-to-server XMPP over direct TLS (XEP-0368), usually port 5223.
    C2sTls,
    /// HTTP services (WebSocket, BOSH, admin API, upload), usually port
    /// 5280. Accepted by the configuration; served once those land.
    Http,
}

/// Whether a `c2s` listener insists on STARTTLS before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StartTls {
    /// The client must upgrade before it may authenticate (the default).
    #[default]
    Required,
    /// STARTTLS is offered; a client may go on without it (and then only
    /// mechanisms allowed without TLS are offered).
    Optional,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// `c2s`, `c2s_tls` or `http`. Required.
    pub kind: ListenerKind,
    /// Address to bind. Default `127.0.0.1`, so a fresh server is not
    /// reachable from the network until told; `0.0.0.0` or `::` for all.
    #[serde(default = "default_ip")]
    pub ip: IpAddr,
    /// TCP port, 1–65535. Required.
    pub port: u16,
    /// `required` or `optional`; `c2s` listeners only. Default (absent):
    /// `required`. See [`ListenerConfig::starttls_policy`].
    #[serde(default)]
    pub starttls: Option<StartTls>,
    /// Largest stanza, in bytes, once authenticated. Default 65536
    /// (as ejabberd's `max_stanza_size`). At least 1024.
    #[serde(default = "default_max_stanza_size")]
    pub max_stanza_size: u32,
    /// Largest stanza, in bytes, before authentication. Default 10240. At
    /// least 512, at most `max_stanza_size`.
    #[serde(default = "default_max_stanza_size_pre_auth")]
    pub max_stanza_size_pre_auth: u32,
    /// Most concurrent connections from one IP address. Default 100; 0 is
    /// refused.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: u32,
    /// Seconds a connection may take to authenticate before it is closed.
    /// Default 30; 1–3600.
    #[serde(default = "default_auth_timeout_secs")]
    pub auth_timeout_secs: u32,
    /// Name of a shaper in `[shapers]` that limits each connection's
    /// incoming bytes. Default: none (no shaping).
    #[serde(default)]
    pub shaper: Option<String>,
    /// Name of an access rule in `[access_rules]` that decides who may
    /// connect (matched on the peer's IP; JID-based ACLs match no one
    /// before authentication). Default: none (everyone).
    #[serde(default)]
    pub access: Option<String>,
}

fn default_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
fn default_max_stanza_size() -> u32 {
    65_536
}
fn default_max_stanza_size_pre_auth() -> u32 {
    10_240
}
fn default_max_connections_per_ip() -> u32 {
    100
}
fn default_auth_timeout_secs() -> u32 {
    30
}

impl ListenerConfig {
    /// A listener of `kind` on `ip:port` with every other field at its
    /// default.
    pub fn new(kind: ListenerKind, ip: IpAddr, port: u16) -> Self {
        Self {
            kind,
            ip,
            port,
            starttls: None,
            max_stanza_size: default_max_stanza_size(),
            max_stanza_size_pre_auth: default_max_stanza_size_pre_auth(),
            max_connections_per_ip: default_max_connections_per_ip(),
            auth_timeout_secs: default_auth_timeout_secs(),
            shaper: None,
            access: None,
        }
    }

    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The STARTTLS policy of a `c2s` listener: `starttls`, or `required`
    /// when absent.
    pub fn starttls_policy(&self) -> StartTls {
        self.starttls.unwrap_or_default()
    }

    /// The stream decoder's limits for this listener's connections: its
    /// stanza sizes, the decoder's defaults for the rest.
    pub fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            max_stanza_size: self.max_stanza_size as usize,
            max_stanza_size_unauthenticated: self.max_stanza_size_pre_auth as usize,
            ..StreamLimits::default()
        }
    }

    /// `auth_timeout_secs` as a duration.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.auth_timeout_secs))
    }

    /// Whether the listener's connections use TLS from the first byte or
    /// may upgrade to it (so a certificate is needed).
    pub fn uses_tls(&self) -> bool {
        matches!(self.kind, ListenerKind::C2s | ListenerKind::C2sTls)
    }

    fn validate(&self, config: &Config, src: &Source, path: &KeyPath) -> Result<(), ConfigError> {
        if self.port == 0 {
            return Err(src.invalid(&path.key("port"), "port must be 1–65535, not 0"));
        }
        if self.starttls.is_some() && self.kind != ListenerKind::C2s {
            return Err(src.invalid(
                &path.key("starttls"),
                "`starttls` applies to `c2s` listeners only",
            ));
        }
        if self.max_stanza_size < 1024 {
            return Err(src.invalid(
                &path.key("max_stanza_size"),
                format!("{} is too small (at least 1024)", self.max_stanza_size),
            ));
        }
        if self.max_stanza_size_pre_auth < 512
            || self.max_stanza_size_pre_auth > self.max_stanza_size
        {
            return Err(src.invalid(
                &path.key("max_stanza_size_pre_auth"),
                format!(
                    "{} must be between 512 and max_stanza_size ({})",
                    self.max_stanza_size_pre_auth, self.max_stanza_size
                ),
            ));
        }
        if self.max_connections_per_ip == 0 {
            return Err(src.invalid(&path.key("max_connections_per_ip"), "must be at least 1"));
        }
        if !(1..=3600).contains(&self.auth_timeout_secs) {
            return Err(src.invalid(
                &path.key("auth_timeout_secs"),
                format!("{} is out of range 1–3600", self.auth_timeout_secs),
            ));
        }
        if let Some(shaper) = &self.shaper {
            if !config.shapers.contains_key(shaper) {
                return Err(src.invalid(
                    &path.key("shaper"),
                    format!("no shaper named `{shaper}` in [shapers]"),
                ));
            }
        }
        if let Some(rule) = &self.access {
            if !config.access_rules.contains_key(rule) {
                return Err(src.invalid(
                    &path.key("access"),
                    format!("no access rule named `{rule}` in [access_rules]"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks every listener, and that no two bind the same address (an
/// unspecified IP such as `0.0.0.0` clashes with any IP of its family on
/// the same port).
pub(crate) fn validate(config: &Config, src: &Source) -> Result<(), ConfigError> {
    let base = KeyPath::root().key("listeners");
    let mut seen: Vec<(SocketAddr, usize)> = Vec::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let path = base.index(i);
        listener.validate(config, src, &path)?;
        let addr = listener.addr();
        let clash = seen.iter().find(|(other, _)| {
            other.port() == addr.port()
                && other.is_ipv4() == addr.is_ipv4()
                && (other.ip() == addr.ip()
                    || other.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        if let Some((other, j)) = clash {
            return Err(src.invalid(
                &path.key("port"),
                format!("{addr} is already bound by listeners[{j}] ({other})"),
            ));
        }
        seen.push((addr, i));
    }
    Ok(())
}
