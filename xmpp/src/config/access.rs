//! `[acl]`, `[access_rules]`, `[shapers]` and `[limits]`, shaped like
//! ejabberd's `acl`, `access_rules`, `shapers` and `shaper_rules`: named
//! ACLs say who, access rules map who to allow or deny in order, shapers
//! bound the bytes a connection may send, limits map who to a number.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::error::{ConfigError, KeyPath, Source};
use super::{Config, check_domain};

/// ACL names every configuration has: `all` matches everyone, `none` no one.
pub const BUILTIN_ACLS: [&str; 2] = ["all", "none"];

/// Compiled regular expressions in ACLs are capped at this size, so that a
/// pattern cannot make each match expensive.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One named ACL under `[acl.NAME]`: it matches a peer when any of its lists
/// does. Every list defaults to empty.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AclConfig {
    /// Users: `user@host` for one account, or a bare `user` for that
    /// localpart on every virtual host. Default empty.
    #[serde(default)]
    pub users: Vec<String>,
    /// Whole servers (domains): every account of these hosts. Default empty.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Source addresses in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare
    /// address means that one address. Default empty.
    #[serde(default)]
    pub ips: Vec<Cidr>,
    /// Regular expressions (Rust `regex` syntax, unanchored: write `^…$`)
    /// matched against the bare JID `user@host`. Default empty.
    #[serde(default)]
    pub user_regexps: Vec<AclRegex>,
    /// Regular expressions, unanchored, matched against the domain.
    /// Default empty.
    #[serde(default)]
    pub server_regexps: Vec<AclRegex>,
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address as written (host bits are ignored when matching).
    pub addr: IpAddr,
    /// The prefix length: 0–32 for IPv4, 0–128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network (an IPv4 address never matches an
    /// IPv6 network nor the reverse; IPv4-mapped IPv6 addresses are
    /// compared as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A CIDR network or ACL regular expression that does not parse; its
/// message names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AclParseError(String);

impl FromStr for Cidr {
    type Err = AclParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| AclParseError(format!("`{s}` is not an IP address or CIDR network")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix =
            match prefix {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    AclParseError(format!("`{s}`: prefix length must be 0–{max}"))
                })?,
            };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseVisitor("an IP address or CIDR network", |s| s.parse()))
    }
}

/// Parses a string inside the visitor, not after it: the TOML deserializer
/// gives an error its span only while the visitor runs, so this is what
/// puts a bad element's own line and index (`ips[1]`) in the error.
struct ParseVisitor<T>(&'static str, fn(&str) -> Result<T, AclParseError>);

impl<T> Visitor<'_> for ParseVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
}

/// A regular expression in an ACL, compiled when the file is read.
#[derive(Debug, Clone)]
pub struct AclRegex(regex::Regex);

impl AclRegex {
    /// Compiles `pattern` as an ACL does (with its size cap).
    pub fn new(pattern: &str) -> Result<Self, AclParseError> {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Self)
            .map_err(|e| {
                // regex's syntax errors draw a caret over several lines; the
                // last line says what is wrong, and the file position is ours.
                let text = e.to_string();
                let why = text
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                AclParseError(format!("bad regular expression `{pattern}`: {why}"))
            })
    }

    /// The compiled expression.
    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }
}

impl PartialEq for AclRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl<'de> Deserialize<'de> for AclRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseVisitor("a regular expression", Self::new))
    }
}

/// One step of an access rule: the first step whose ACL matches decides.
/// Written `{ allow = "acl" }` or `{ deny = "acl" }`; a peer no step
/// matches is denied.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AccessRuleEntry {
    /// Allow when the named ACL matches.
    Allow(String),
    /// Deny when the named ACL matches.
    Deny(String),
}

impl AccessRuleEntry {
    /// The ACL this step tests.
    pub fn acl(&self) -> &str {
        match self {
            Self::Allow(a) | Self::Deny(a) => a,
        }
    }
}

/// A shaper under `[shapers.NAME]`: a token bucket on incoming bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ShaperConfig {
    /// Sustained rate in bytes per second. Required, at least 1.
    pub rate: u32,
    /// Bucket size in bytes: how much may arrive at once after a quiet
    /// spell. Default (absent): equal to `rate`. At least `rate`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl ShaperConfig {
    /// The bucket size: `burst`, or `rate` when absent.
    pub fn burst_size(&self) -> u32 {
        self.burst.unwrap_or(self.rate)
    }
}

/// `[limits]`: numbers that may differ per ACL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// Most simultaneous sessions (resources) of one account. Default 10.
    #[serde(default = "default_max_sessions")]
    pub max_sessions_per_user: LimitRule,
    /// Most messages kept offline for one account. Default 1000.
    #[serde(default = "default_max_offline")]
    pub max_offline_messages: LimitRule,
}

fn default_max_sessions() -> LimitRule {
    LimitRule::fixed(10)
}
fn default_max_offline() -> LimitRule {
    LimitRule::fixed(1000)
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions_per_user: default_max_sessions(),
            max_offline_messages: default_max_offline(),
        }
    }
}

/// A number that may depend on who asks: written either as a plain number
/// (`max_sessions_per_user = 10`) or as
/// `{ default = 10, rules = [{ acl = "admin", value = 100 }] }`, where the
/// first rule whose ACL matches gives the value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitRule {
    /// The value when no rule matches.
    pub default: u32,
    /// Per-ACL values, first match wins.
    pub rules: Vec<LimitEntry>,
}

impl LimitRule {
    /// The same value for everyone.
    pub fn fixed(value: u32) -> Self {
        Self {
            default: value,
            rules: Vec::new(),
        }
    }

    /// The value for a peer, given which ACLs it matches.
    pub fn value_for(&self, matches: impl Fn(&str) -> bool) -> u32 {
        self.rules
            .iter()
            .find(|r| matches(&r.acl))
            .map_or(self.default, |r| r.value)
    }
}

/// One `{ acl = "...", value = N }` of a [`LimitRule`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitEntry {
    /// The ACL to match.
    pub acl: String,
    /// The value for peers it matches.
    pub value: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitRuleTable {
    default: u32,
    #[serde(default)]
    rules: Vec<LimitEntry>,
}

impl<'de> Deserialize<'de> for LimitRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LimitRule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or a table { default, rules }")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LimitRule, E> {
                u32::try_from(v)
                    .map(LimitRule::fixed)
                    .map_err(|_| E::custom(format!("{v} is out of range 0–{}", u32::MAX)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LimitRule, E> {
                u32::try_from(v)
                    .map(LimitRule::fixed)
                    .map_err(|_| E::custom(format!("{v} is out of range 0–{}", u32::MAX)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LimitRule, A::Error> {
                let t = LimitRuleTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(LimitRule {
                    default: t.default,
                    rules: t.rules,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn acl_known(config: &Config, name: &str) -> bool {
    BUILTIN_ACLS.contains(&name) || config.acl.contains_key(name)
}

/// Checks ACLs, access rules, shapers and limits, and every reference
/// between them.
pub(crate) fn validate(config: &Config, src: &Source) -> Result<(), ConfigError> {
    let acl = KeyPath::root().key("acl");
    for (name, entry) in &config.acl {
        let path = acl.key(name);
        if BUILTIN_ACLS.contains(&name.as_str()) {
            return Err(src.invalid(
                &path,
                format!("`{name}` is a built-in ACL and cannot be redefined"),
            ));
        }
        for (i, user) in entry.users.iter().enumerate() {
            let ok = match user.split_once('@') {
                Some((local, host)) => {
                    jid::NodePart::new(local).is_ok() && check_domain(host).is_ok()
                }
                None => jid::NodePart::new(user).is_ok(),
            };
            if !ok {
                return Err(src.invalid(
                    &path.key("users").index(i),
                    format!("`{user}` is neither `user@host` nor `user`"),
                ));
            }
        }
        for (i, server) in entry.servers.iter().enumerate() {
            if let Err(why) = check_domain(server) {
                return Err(src.invalid(&path.key("servers").index(i), why));
            }
        }
    }
    let rules = KeyPath::root().key("access_rules");
    for (name, steps) in &config.access_rules {
        for (i, step) in steps.iter().enumerate() {
            if !acl_known(config, step.acl()) {
                return Err(src.invalid(
                    &rules.key(name).index(i),
                    format!(
                        "no ACL named `{}` (define it in [acl], or use `all`/`none`)",
                        step.acl()
                    ),
                ));
            }
        }
    }
    let shapers = KeyPath::root().key("shapers");
    for (name, shaper) in &config.shapers {
        let path = shapers.key(name);
        if shaper.rate == 0 {
            return Err(src.invalid(&path.key("rate"), "rate must be at least 1 byte/s"));
        }
        if shaper.burst_size() < shaper.rate {
            return Err(src.invalid(
                &path.key("burst"),
                format!(
                    "burst ({}) must be at least rate ({})",
                    shaper.burst_size(),
                    shaper.rate
                ),
            ));
        }
    }
    let limits = KeyPath::root().key("limits");
    for (key, rule) in [
        (
            "max_sessions_per_user",
            &config.limits.max_sessions_per_user,
        ),
        ("max_offline_messages", &config.limits.max_offline_messages),
    ] {
        for (i, entry) in rule.rules.iter().enumerate() {
            if !acl_known(config, &entry.acl) {
                return Err(src.invalid(
                    &limits.key(key).key("rules").index(i).key("acl"),
                    format!("no ACL named `{}`", entry.acl),
                ));
            }
        }
    }
    if config.limits.max_sessions_per_user.default == 0 {
        return Err(src.invalid(&limits.key("max_sessions_per_user"), "must be at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_matches() {
        let net: Cidr = "10.1.0.0/16".parse().expect("valid");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let one: Cidr = "::1".parse().expect("valid");
        assert_eq!(one.prefix, 128);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
        assert!("fe80::/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn limit_rule_first_match_wins() {
        let rule = LimitRule {
            default: 5,
            rules: vec![
                LimitEntry {
                    acl: "admin".into(),
                    value: 50,
                },
                LimitEntry {
                    acl: "all".into(),
                    value: 7,
                },
            ],
        };
        assert_eq!(rule.value_for(|a| a == "admin" || a == "all"), 50);
        assert_eq!(rule.value_for(|a| a == "all"), 7);
        assert_eq!(rule.value_for(|_| false), 5);
    }
}
