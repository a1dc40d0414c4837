//! Access control in ejabberd's shape (ejabberd's `acl` and
//! `acl:match_rule`): named ACLs that match users, servers, source
//! addresses and regular expressions; access rules that allow or deny by
//! ACL, first match deciding; and per-user limits chosen by ACL.
//!
//! The definitions come from the configuration (`[acl.NAME]`,
//! `[access_rules]`, `[limits]`, see `docs/configuration.md`); [`Access`]
//! evaluates them.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{AccessRuleEntry, AclConfig, Config, LimitRule};

/// Who is asking: an account (if known yet) and an address (if any).
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// Local part, normalised.
    pub user: Option<&'a str>,
    /// Domain: the account's host, or the virtual host of the stream.
    pub server: Option<&'a str>,
    /// Source address.
    pub ip: Option<IpAddr>,
}

impl<'a> Subject<'a> {
    /// An account `user@server`.
    pub fn user(user: &'a str, server: &'a str) -> Self {
        Subject {
            user: Some(user),
            server: Some(server),
            ip: None,
        }
    }

    /// An address only (before authentication).
    pub fn ip(ip: Option<IpAddr>) -> Self {
        Subject {
            user: None,
            server: None,
            ip,
        }
    }

    /// Adds the address.
    pub fn with_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.ip = ip;
        self
    }

    /// Adds the server (the stream's virtual host) to an address-only
    /// subject.
    pub fn with_server(mut self, server: &'a str) -> Self {
        self.server = Some(server);
        self
    }
}

/// Evaluates the configuration's ACLs, access rules and limits. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Access {
    config: Arc<Config>,
}

fn acl_matches(acl: &AclConfig, s: &Subject<'_>) -> bool {
    if let (Some(user), Some(server)) = (s.user, s.server) {
        let bare = format!("{user}@{server}");
        let user_match = acl.users.iter().any(|u| match u.split_once('@') {
            Some((lu, ls)) => lu == user && ls.eq_ignore_ascii_case(server),
            None => u == user,
        });
        if user_match || acl.user_regexps.iter().any(|r| r.regex().is_match(&bare)) {
            return true;
        }
    }
    if let Some(server) = s.server {
        // `servers` match accounts of the host; before authentication the
        // stream's host counts too (as ejabberd matches the server part).
        if acl.servers.iter().any(|h| h.eq_ignore_ascii_case(server))
            || acl
                .server_regexps
                .iter()
                .any(|r| r.regex().is_match(server))
        {
            return true;
        }
    }
    if let Some(ip) = s.ip {
        if acl.ips.iter().any(|c| c.contains(ip)) {
            return true;
        }
    }
    false
}

impl Access {
    /// Evaluates the definitions of `config`.
    pub fn new(config: Arc<Config>) -> Self {
        Access { config }
    }

    /// Whether the ACL `name` matches (`all` always, `none` never, an
    /// unknown name never).
    pub fn acl(&self, name: &str, s: &Subject<'_>) -> bool {
        match name {
            "all" => true,
            "none" => false,
            _ => self
                .config
                .acl
                .get(name)
                .is_some_and(|acl| acl_matches(acl, s)),
        }
    }

    /// Whether access rule `rule` allows `s`: the first step whose ACL
    /// matches decides; no match, or no such rule, denies.
    pub fn allow(&self, rule: &str, s: &Subject<'_>) -> bool {
        let Some(steps) = self.config.access_rules.get(rule) else {
            return false;
        };
        for step in steps {
            if self.acl(step.acl(), s) {
                return matches!(step, AccessRuleEntry::Allow(_));
            }
        }
        false
    }

    /// Whether `rule` allows `s`, where a rule that is not defined allows
    /// (for optional rules such as a listener's `access`).
    pub fn allow_or_default(&self, rule: Option<&str>, s: &Subject<'_>) -> bool {
        rule.is_none_or(|r| self.allow(r, s))
    }

    /// The value of a limit for `s`: the first rule whose ACL matches,
    /// else the default.
    pub fn limit(&self, limit: &LimitRule, s: &Subject<'_>) -> u32 {
        limit.value_for(|acl| self.acl(acl, s))
    }

    /// Most sessions `user@server` may have (`[limits]
    /// max_sessions_per_user`).
    pub fn max_sessions(&self, user: &str, server: &str) -> usize {
        self.limit(
            &self.config.limits.max_sessions_per_user,
            &Subject::user(user, server),
        ) as usize
    }

    /// Most offline messages kept for `user@server` (`[limits]
    /// max_offline_messages`).
    pub fn max_offline_messages(&self, user: &str, server: &str) -> usize {
        self.limit(
            &self.config.limits.max_offline_messages,
            &Subject::user(user, server),
        ) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        let config = Config::from_str(
            r#"
            hosts = ["localhost", "example.org"]
            [acl.admin]
            users = ["admin@localhost", "root"]
            [acl.bots]
            user_regexps = ["^bot-[0-9]+@example\\.org$"]
            [acl.local]
            ips = ["127.0.0.0/8"]
            [acl.org]
            servers = ["example.org"]
            [access_rules]
            register = [{ deny = "bots" }, { allow = "local" }]
            admin = [{ allow = "admin" }]
            [limits]
            max_sessions_per_user = { default = 3, rules = [{ acl = "admin", value = 20 }] }
            max_offline_messages = 100
            "#,
            "test.toml",
        )
        .expect("valid config");
        Access::new(Arc::new(config))
    }

    #[test]
    fn acls_match_users_servers_regexps_and_addresses() {
        let a = access();
        assert!(a.acl("admin", &Subject::user("admin", "localhost")));
        assert!(!a.acl("admin", &Subject::user("admin", "example.org")));
        // A bare user name matches on every host.
        assert!(a.acl("admin", &Subject::user("root", "example.org")));
        assert!(a.acl("bots", &Subject::user("bot-7", "example.org")));
        assert!(!a.acl("bots", &Subject::user("bot-x", "example.org")));
        assert!(a.acl("org", &Subject::user("anyone", "example.org")));
        let lo = Some("127.0.0.5".parse().expect("ip"));
        assert!(a.acl("local", &Subject::ip(lo)));
        assert!(!a.acl("local", &Subject::ip(Some("10.0.0.1".parse().expect("ip")))));
        assert!(a.acl("all", &Subject::default()));
        assert!(!a.acl("none", &Subject::default()));
        assert!(!a.acl("no-such-acl", &Subject::user("admin", "localhost")));
    }

    #[test]
    fn rules_take_the_first_matching_step_and_deny_otherwise() {
        let a = access();
        let lo = Some("127.0.0.1".parse().expect("ip"));
        assert!(a.allow("register", &Subject::ip(lo)));
        assert!(!a.allow(
            "register",
            &Subject::user("bot-1", "example.org").with_ip(lo)
        ));
        assert!(!a.allow(
            "register",
            &Subject::ip(Some("10.0.0.1".parse().expect("ip")))
        ));
        assert!(!a.allow("undefined", &Subject::ip(lo)));
        assert!(a.allow_or_default(None, &Subject::ip(lo)));
    }

    #[test]
    fn limits_follow_the_first_matching_acl() {
        let a = access();
        assert_eq!(a.max_sessions("admin", "localhost"), 20);
        assert_eq!(a.max_sessions("alice", "localhost"), 3);
        assert_eq!(a.max_offline_messages("alice", "localhost"), 100);
    }
}
