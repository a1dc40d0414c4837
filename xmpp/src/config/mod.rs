//! The server's configuration file: one typed TOML document, every table
//! `deny_unknown_fields`, validated completely before anything binds.
//!
//! - [`Config`]: the whole file. [`Config::from_file`] and
//!   [`Config::from_str`] parse and validate; [`Config::default`] is what
//!   `beamline serve` runs with no file.
//! - [`ConfigError`]: every refusal names the file, the line and column, and
//!   the key path (`beamline.toml:12:3: listeners[1]: unknown field
//!   `prot`, ...`). Lines come from the TOML parser's byte spans; errors
//!   found after parsing find their line again from the key path.
//! - Sections: [`ListenerConfig`] (`listener.rs`); [`AclConfig`],
//!   [`AccessRuleEntry`], [`ShaperConfig`], [`LimitsConfig`] (`access.rs`,
//!   shaped like ejabberd's acl, access_rules, shapers and shaper_rules);
//!   [`TlsConfig`], [`AuthConfig`], [`StorageConfig`], [`ClusterConfig`],
//!   [`LogLevel`] (`sections.rs`).
//! - `[modules]` is passed through as a [`toml::Table`] per module; a module
//!   reads its options with [`Config::module_options`] (errors still carry
//!   file and line), and the caller checks module names with
//!   [`Config::check_modules`].
//!
//! Every option and its default is listed in `docs/configuration.md`.

mod access;
mod error;
mod listener;
mod sections;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::de::{DeTable, ValueDeserializer};

pub use access::{
    AccessRuleEntry, AclConfig, AclParseError, AclRegex, BUILTIN_ACLS, Cidr, LimitEntry, LimitRule,
    LimitsConfig, ShaperConfig,
};
pub use error::{ConfigError, Location};
pub use listener::{ListenerConfig, ListenerKind, StartTls};
pub use sections::{
    AuthConfig, CertificateConfig, ClusterConfig, Cookie, LogLevel, SaslMechanism, StorageConfig,
    SyncMode, TlsConfig,
};

use error::{KeyPath, Source};

/// Origin named in errors about a configuration built in code.
const DEFAULT_ORIGIN: &str = "<default>";

/// The whole configuration file. Every section may be left out, and then
/// takes its default; [`Config::default`] is an empty file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Virtual hosts served, lowercased when read. Default `["localhost"]`;
    /// at least one, no repeats.
    #[serde(default = "default_hosts")]
    pub hosts: Vec<String>,
    /// What to listen on, `[[listeners]]`. Default: `c2s` on
    /// `127.0.0.1:5222` (STARTTLS required) and `c2s_tls` on
    /// `127.0.0.1:5223`. An explicit empty list listens on nothing
    /// (embedded use).
    #[serde(default = "default_listeners")]
    pub listeners: Vec<ListenerConfig>,
    /// Certificates. Default: a self-signed certificate generated into the
    /// data directory.
    #[serde(default)]
    pub tls: TlsConfig,
    /// SASL. Default: every mechanism, 4096 SCRAM iterations.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Named ACLs, `[acl.NAME]`. Default empty; `all` and `none` always
    /// exist.
    #[serde(default)]
    pub acl: BTreeMap<String, AclConfig>,
    /// Named access rules, `NAME = [{ allow = "acl" }, { deny = "acl" }]`:
    /// first matching step decides, no match denies. Default empty.
    #[serde(default)]
    pub access_rules: BTreeMap<String, Vec<AccessRuleEntry>>,
    /// Named shapers, `[shapers.NAME]`. Default empty.
    #[serde(default)]
    pub shapers: BTreeMap<String, ShaperConfig>,
    /// Per-user limits. Default: 10 sessions, 1000 offline messages.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Data directory and durability. Default `./data`, `every_commit`.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Clustering. Default: none (a single node).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Modules to start, `[modules.NAME]` with that module's options.
    /// Default (no `[modules]` at all): the modules of
    /// [`DEFAULT_MODULES`](crate::modules::DEFAULT_MODULES) with their
    /// default options; a `[modules]` section lists every module to run.
    /// Names are checked by [`Config::check_modules`],
    /// options by each module through [`Config::module_options`].
    #[serde(default = "default_modules")]
    pub modules: BTreeMap<String, toml::Table>,
    /// `error`, `warn`, `info`, `debug` or `trace`. Default `info`.
    #[serde(default)]
    pub log_level: LogLevel,
    /// Kept for errors found after parsing.
    #[serde(skip, default = "default_source")]
    source: Source,
}

fn default_modules() -> BTreeMap<String, toml::Table> {
    crate::modules::DEFAULT_MODULES
        .iter()
        .map(|m| ((*m).to_owned(), toml::Table::new()))
        .collect()
}

fn default_hosts() -> Vec<String> {
    vec!["localhost".to_owned()]
}

fn default_listeners() -> Vec<ListenerConfig> {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    vec![
        ListenerConfig::new(ListenerKind::C2s, lo, 5222),
        ListenerConfig::new(ListenerKind::C2sTls, lo, 5223),
    ]
}

/// A host name as JIDs carry it: nameprep'd (which lowercases), or just
/// lowercased when it is not a valid domain (validation then refuses it).
pub(crate) fn normalize_host(host: &str) -> String {
    jid::DomainPart::new(host).map_or_else(|_| host.to_lowercase(), |d| d.to_string())
}

/// A domain a JID may have (RFC 7622 domainpart, via the `jid` crate), and
/// not a dotted name with an empty label at either end.
pub(crate) fn check_domain(host: &str) -> Result<(), String> {
    let plain = !host.starts_with('.')
        && !host.ends_with('.')
        && !host
            .chars()
            .any(|c| c.is_whitespace() || "@/\"&'<>".contains(c));
    match jid::DomainPart::new(host) {
        Ok(_) if plain => Ok(()),
        Ok(_) => Err(format!("`{host}` is not a domain name")),
        Err(e) => Err(format!("`{host}` is not a domain name: {e}")),
    }
}

fn default_source() -> Source {
    Source::new(DEFAULT_ORIGIN, None)
}

impl Default for Config {
    /// What `beamline serve` uses without a file: host `localhost`, `c2s`
    /// on 127.0.0.1:5222 with STARTTLS required, `c2s_tls` on
    /// 127.0.0.1:5223, a self-signed certificate, data under `./data`.
    fn default() -> Self {
        Self {
            hosts: default_hosts(),
            listeners: default_listeners(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            acl: BTreeMap::new(),
            access_rules: BTreeMap::new(),
            shapers: BTreeMap::new(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            cluster: None,
            modules: default_modules(),
            log_level: LogLevel::default(),
            source: default_source(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a file. Errors name the file as given.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_str(&text, &path.display().to_string())
    }

    /// Parses and validates a TOML text; `origin` (a file name) is what
    /// errors call it.
    #[allow(clippy::should_implement_trait)] // FromStr has no origin
    pub fn from_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let src = Source::new(origin, Some(text));
        let doc = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
            location: src.location_at(e.span().map(|s| s.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        let mut config = Config::deserialize(toml::de::Deserializer::from(doc))
            .map_err(|e| src.schema_error(&e))?;
        for host in &mut config.hosts {
            *host = normalize_host(host);
        }
        config.source = src;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that does not depend on which modules exist:
    /// hosts, listeners (ports 1–65535, no address bound twice, shapers
    /// and access rules that exist), TLS, auth, ACLs (CIDRs and regexps
    /// are checked when read), access rules, shapers, limits, storage and
    /// cluster. [`Config::from_file`] and [`Config::from_str`] call it;
    /// call it again after changing a configuration in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let src = &self.source;
        let hosts = KeyPath::root().key("hosts");
        if self.hosts.is_empty() {
            return Err(src.invalid(&hosts, "at least one host is needed"));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if let Err(why) = check_domain(host) {
                return Err(src.invalid(&hosts.index(i), why));
            }
            let norm = normalize_host(host);
            if let Some(j) = self.hosts[..i]
                .iter()
                .position(|h| normalize_host(h) == norm)
            {
                return Err(src.invalid(
                    &hosts.index(i),
                    format!("host `{norm}` is listed twice (also hosts[{j}])"),
                ));
            }
        }
        access::validate(self, src)?;
        listener::validate(self, src)?;
        sections::validate(self, src)?;
        Ok(())
    }

    /// Refuses a `[modules.NAME]` whose name is not in `known` (the
    /// modules this build has).
    pub fn check_modules(&self, known: &[&str]) -> Result<(), ConfigError> {
        for name in self.modules.keys() {
            if !known.contains(&name.as_str()) {
                return Err(self.source.invalid(
                    &KeyPath::root().key("modules").key(name),
                    format!(
                        "unknown module `{name}`, expected one of: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Deserialises module `name`'s options into the module's own type
    /// (absent section: an empty table, so its defaults apply). Errors
    /// carry the file, line and key path as parse errors do; use
    /// `deny_unknown_fields` on `T`. When the configuration came from a
    /// text, the options are read from that text (for its spans), so
    /// changes made in code to [`Config::modules`] after parsing are seen
    /// only for modules the text does not configure.
    pub fn module_options<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        let path = KeyPath::root().key("modules").key(name);
        // From the text when there is one, so that errors have spans.
        if let Some(text) = self.source.text.as_deref() {
            if let Ok(doc) = DeTable::parse(text) {
                let value = doc
                    .get_ref()
                    .get("modules")
                    .and_then(|m| m.get_ref().as_table())
                    .and_then(|m| m.get(name))
                    .cloned();
                if let Some(value) = value {
                    return T::deserialize(ValueDeserializer::from(value))
                        .map_err(|e| self.source.schema_error(&e));
                }
            }
        }
        let table = self.modules.get(name).cloned().unwrap_or_default();
        table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                location: self.source.location_of(&path),
                path: path.to_string(),
                message: e.message().trim_end().to_owned(),
            })
    }

    /// An error at a key path of this configuration (such as
    /// `modules.mod_mam.default`), located in its file when it has one: for
    /// checks a module makes on its own options.
    pub fn error_at(&self, key_path: &[&str], message: impl Into<String>) -> ConfigError {
        let path = key_path.iter().fold(KeyPath::root(), |p, k| p.key(k));
        self.source.invalid(&path, message)
    }

    /// The file name (or origin) the configuration was read from;
    /// `<default>` when built in code.
    pub fn origin(&self) -> &str {
        &self.source.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_the_default() {
        let c = Config::from_str("", "empty.toml").expect("valid");
        let d = Config::default();
        assert_eq!(c.hosts, d.hosts);
        assert_eq!(c.listeners, d.listeners);
        assert_eq!(c.tls, d.tls);
        assert_eq!(c.auth, d.auth);
        assert_eq!(c.limits, d.limits);
        assert_eq!(c.storage, d.storage);
        assert_eq!(c.cluster, d.cluster);
        assert_eq!(c.log_level, d.log_level);
        assert_eq!(c.origin(), "empty.toml");
        d.validate().expect("the default validates");
    }

    #[test]
    fn debug_never_shows_the_cookie() {
        let text = "[cluster]\nnode_name = \"n1\"\ncookie = \"hunter2-secret\"\n";
        let c = Config::from_str(text, "c.toml").expect("valid");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            c.cluster
                .as_ref()
                .and_then(|c| c.cookie.as_ref())
                .map(Cookie::expose),
            Some("hunter2-secret")
        );
    }
}
