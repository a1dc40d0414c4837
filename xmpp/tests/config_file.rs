//! The configuration file: the example parses, the default validates, and
//! every kind of refusal names the file, line, column and key path.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use beamline_xmpp::config::{
    AccessRuleEntry, ClusterConfig, Config, ConfigError, Cookie, ListenerConfig, ListenerKind,
    SaslMechanism, StartTls,
};

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../beamline.example.toml")
}

/// Parses `text` as `beamline.toml` and returns the error's display.
fn refused(text: &str) -> String {
    match Config::from_str(text, "beamline.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_example_file_parses_and_validates() {
    let config = Config::from_file(example_path()).expect("the example is valid");
    assert_eq!(config.hosts, ["localhost", "example.org"]);
    assert_eq!(config.listeners.len(), 3);
    assert_eq!(config.listeners[0].kind, ListenerKind::C2s);
    assert_eq!(config.listeners[0].starttls_policy(), StartTls::Required);
    assert_eq!(config.listeners[1].kind, ListenerKind::C2sTls);
    assert_eq!(config.listeners[2].kind, ListenerKind::Http);
    assert_eq!(config.shapers["normal"].burst_size(), 50_000);
    assert_eq!(config.shapers["fast"].burst_size(), 50_000);
    assert_eq!(
        config.access_rules["c2s"],
        [
            AccessRuleEntry::Deny("blocked".into()),
            AccessRuleEntry::Allow("all".into())
        ]
    );
    let ip: IpAddr = "10.2.3.4".parse().expect("ip");
    assert!(config.acl["local_net"].ips.iter().any(|c| c.contains(ip)));
    assert!(
        config.acl["bots"].user_regexps[0]
            .regex()
            .is_match("bot-7@example.org")
    );
    assert_eq!(
        config
            .limits
            .max_offline_messages
            .value_for(|a| a == "admin"),
        5000
    );
    assert_eq!(
        config.limits.max_offline_messages.value_for(|_| false),
        1000
    );
    assert!(config.cluster.is_none());
    config
        .check_modules(&["mod_ping", "mod_offline", "mod_roster"])
        .expect("known modules");
    assert!(config.origin().ends_with("beamline.example.toml"));
}

#[test]
fn the_default_is_what_serve_uses_without_a_file() {
    let config = Config::default();
    config.validate().expect("the default validates");
    assert_eq!(config.hosts, ["localhost"]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(
        config.listeners,
        [
            ListenerConfig::new(ListenerKind::C2s, lo, 5222),
            ListenerConfig::new(ListenerKind::C2sTls, lo, 5223)
        ]
    );
    assert_eq!(config.listeners[0].starttls_policy(), StartTls::Required);
    let limits = config.listeners[0].stream_limits();
    assert_eq!(limits.max_stanza_size, 65_536);
    assert_eq!(limits.max_stanza_size_unauthenticated, 10_240);
    assert_eq!(config.listeners[0].auth_timeout().as_secs(), 30);
    assert!(config.tls.self_signed);
    assert!(config.tls.certificate.is_none());
    assert_eq!(config.storage.data_dir, PathBuf::from("./data"));
    assert_eq!(config.auth.scram_iterations, 4096);
    // -PLUS is opt-in (see docs/configuration.md).
    assert_eq!(
        config.auth.mechanisms,
        SaslMechanism::ALL
            .into_iter()
            .filter(|m| !m.name().ends_with("-PLUS"))
            .collect::<Vec<_>>()
    );
    let mut modules: Vec<&str> = config.modules.keys().map(String::as_str).collect();
    modules.sort_unstable();
    let mut want = beamline_xmpp::modules::DEFAULT_MODULES.to_vec();
    want.sort_unstable();
    assert_eq!(modules, want);
    assert!(!config.auth.plain_on_loopback_without_tls);
    assert!(config.cluster.is_none());
}

#[test]
fn a_missing_file_names_the_file() {
    let err = Config::from_file("/nonexistent/beamline.toml").expect_err("no such file");
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(
        err.to_string().starts_with("/nonexistent/beamline.toml: "),
        "{err}"
    );
}

#[test]
fn unknown_top_level_section() {
    let msg = refused("hosts = [\"a\"]\n\n[listners]\nport = 1\n");
    assert!(
        msg.starts_with(
            "beamline.toml:3:2: listners: unknown field `listners`, expected one of `hosts`"
        ),
        "{msg}"
    );
}

#[test]
fn unknown_top_level_key() {
    let msg = refused("hosts = [\"a\"]\nloglevel = \"info\"\n");
    assert!(
        msg.starts_with("beamline.toml:2:1: loglevel: unknown field `loglevel`"),
        "{msg}"
    );
}

#[test]
fn unknown_nested_key_in_the_second_listener() {
    let text = "hosts = [\"a\"]\n\
                [[listeners]]\n\
                kind = \"c2s\"\n\
                port = 5222\n\
                \n\
                [[listeners]]\n\
                kind = \"c2s_tls\"\n\
                prot = 5223\n";
    let msg = refused(text);
    assert!(
        msg.starts_with("beamline.toml:8:1: listeners[1].prot: unknown field `prot`, expected one of `kind`, `ip`, `port`"),
        "{msg}"
    );
    let err = Config::from_str(text, "beamline.toml").expect_err("refused");
    assert!(matches!(err, ConfigError::Schema { .. }));
    assert_eq!(err.key_path(), Some("listeners[1].prot"));
    let loc = err.location().expect("located");
    assert_eq!(
        (loc.origin.as_str(), loc.line, loc.column),
        ("beamline.toml", Some(8), Some(1))
    );
}

#[test]
fn unknown_key_in_a_deep_table() {
    let msg =
        refused("[tls.hosts.\"localhost\"]\ncertificate = \"a\"\nkey = \"b\"\npassword = \"c\"\n");
    assert!(
        msg.starts_with(
            "beamline.toml:4:1: tls.hosts.localhost.password: unknown field `password`"
        ),
        "{msg}"
    );
}

#[test]
fn wrong_type() {
    let msg = refused("[[listeners]]\nkind = \"c2s\"\nport = \"5222\"\n");
    assert_eq!(
        msg,
        "beamline.toml:3:8: listeners[0].port: invalid type: string \"5222\", expected u16"
    );
    let msg = refused("[auth]\nplain_on_loopback_without_tls = \"yes\"\n");
    assert!(
        msg.starts_with(
            "beamline.toml:2:33: auth.plain_on_loopback_without_tls: invalid type: string"
        ),
        "{msg}"
    );
}

#[test]
fn port_out_of_range() {
    let msg = refused("[[listeners]]\nkind = \"c2s\"\nport = 70000\n");
    assert_eq!(
        msg,
        "beamline.toml:3:8: listeners[0].port: invalid value: integer `70000`, expected u16"
    );
    let msg = refused("[[listeners]]\nkind = \"c2s\"\nport = 0\n");
    assert_eq!(
        msg,
        "beamline.toml:3:8: listeners[0].port: port must be 1–65535, not 0"
    );
    let msg = refused("[[listeners]]\nkind = \"c2s\"\nport = -1\n");
    assert!(
        msg.starts_with("beamline.toml:3:8: listeners[0].port: invalid value"),
        "{msg}"
    );
}

#[test]
fn missing_required_key() {
    let msg = refused("hosts = [\"a\"]\n[[listeners]]\nkind = \"c2s\"\n");
    assert_eq!(msg, "beamline.toml:2:1: listeners[0]: missing field `port`");
}

#[test]
fn unknown_enum_value() {
    let msg = refused("[[listeners]]\nkind = \"s2s\"\nport = 5269\n");
    assert_eq!(
        msg,
        "beamline.toml:2:8: listeners[0].kind: unknown variant `s2s`, expected one of `c2s`, `c2s_tls`, `http`"
    );
    let msg = refused("[auth]\nmechanisms = [\"PLAIN\", \"DIGEST-MD5\"]\n");
    assert!(
        msg.starts_with("beamline.toml:2:24: auth.mechanisms[1]: unknown variant `DIGEST-MD5`"),
        "{msg}"
    );
}

#[test]
fn duplicate_host() {
    let msg = refused("hosts = [\"example.org\", \"chat.example.org\", \"Example.ORG\"]\n");
    assert_eq!(
        msg,
        "beamline.toml:1:45: hosts[2]: host `example.org` is listed twice (also hosts[0])"
    );
}

#[test]
fn hosts_are_lowercased_and_not_empty() {
    let config = Config::from_str("hosts = [\"Example.ORG\"]\n", "b.toml").expect("valid");
    assert_eq!(config.hosts, ["example.org"]);
    let msg = refused("hosts = [\"a..b\"]\n");
    assert!(
        msg.starts_with("beamline.toml:1:10: hosts[0]: `a..b` is not a domain name"),
        "{msg}"
    );
    let msg = refused("[acl.x]\nusers = [\"ok@example.org\", \"a@b@c\"]\n");
    assert!(
        msg.starts_with("beamline.toml:2:28: acl.x.users[1]: `a@b@c` is neither"),
        "{msg}"
    );
    let msg = refused("[acl.x]\nservers = [\"exa mple.org\"]\n");
    assert!(
        msg.starts_with(
            "beamline.toml:2:12: acl.x.servers[0]: `exa mple.org` is not a domain name"
        ),
        "{msg}"
    );
    assert_eq!(
        refused("hosts = []\n"),
        "beamline.toml:1:9: hosts: at least one host is needed"
    );
    assert!(
        refused("hosts = [\"a@b\"]\n")
            .starts_with("beamline.toml:1:10: hosts[0]: `a@b` is not a domain name")
    );
}

#[test]
fn duplicate_listener_address() {
    let text = "[[listeners]]\nkind = \"c2s\"\nport = 5222\n\n\
                [[listeners]]\nkind = \"c2s_tls\"\nip = \"0.0.0.0\"\nport = 5222\n";
    assert_eq!(
        refused(text),
        "beamline.toml:8:8: listeners[1].port: 0.0.0.0:5222 is already bound by listeners[0] (127.0.0.1:5222)"
    );
    // Same port on different specific addresses is fine.
    let ok = "[[listeners]]\nkind = \"c2s\"\nport = 5222\n\n\
              [[listeners]]\nkind = \"c2s\"\nip = \"127.0.0.2\"\nport = 5222\n";
    Config::from_str(ok, "b.toml").expect("distinct addresses");
}

#[test]
fn access_rule_with_an_unknown_acl() {
    let text = "[acl.admin]\nusers = [\"admin@localhost\"]\n\n\
                [access_rules]\nc2s = [{ allow = \"admin\" }, { deny = \"blokked\" }]\n";
    assert_eq!(
        refused(text),
        "beamline.toml:5:29: access_rules.c2s[1]: no ACL named `blokked` (define it in [acl], or use `all`/`none`)"
    );
}

#[test]
fn access_rule_step_must_be_allow_or_deny() {
    let msg = refused("[access_rules]\nc2s = [{ permit = \"all\" }]\n");
    assert!(msg.starts_with("beamline.toml:2:10: access_rules.c2s[0].permit: unknown variant `permit`, expected `allow` or `deny`"), "{msg}");
}

#[test]
fn listener_with_an_unknown_shaper_or_access_rule() {
    let text = "[shapers.normal]\nrate = 1000\n\n[[listeners]]\nkind = \"c2s\"\nport = 5222\nshaper = \"fast\"\n";
    assert_eq!(
        refused(text),
        "beamline.toml:7:10: listeners[0].shaper: no shaper named `fast` in [shapers]"
    );
    let text = "[[listeners]]\nkind = \"c2s\"\nport = 5222\naccess = \"c2s\"\n";
    assert_eq!(
        refused(text),
        "beamline.toml:4:10: listeners[0].access: no access rule named `c2s` in [access_rules]"
    );
}

#[test]
fn bad_cidr_and_bad_regexp() {
    let msg = refused("[acl.lan]\nips = [\"192.168.0.0/24\", \"10.0.0.0/33\"]\n");
    assert_eq!(
        msg,
        "beamline.toml:2:26: acl.lan.ips[1]: `10.0.0.0/33`: prefix length must be 0–32"
    );
    let msg = refused("[acl.lan]\nips = [\"10.0.0\"]\n");
    assert!(
        msg.ends_with("`10.0.0` is not an IP address or CIDR network"),
        "{msg}"
    );
    let msg = refused("\n[acl.bots]\nuser_regexps = [\"^bot-(\"]\n");
    assert_eq!(
        msg,
        "beamline.toml:3:17: acl.bots.user_regexps[0]: bad regular expression `^bot-(`: unclosed group"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn builtin_acl_cannot_be_redefined() {
    let msg = refused("[acl.all]\nusers = [\"a\"]\n");
    assert!(msg.starts_with("beamline.toml:1:"), "{msg}");
    assert!(msg.contains("acl.all: `all` is a built-in ACL"), "{msg}");
}

#[test]
fn shaper_burst_below_rate() {
    let msg = refused("[shapers.s]\nrate = 1000\nburst = 10\n");
    assert_eq!(
        msg,
        "beamline.toml:3:9: shapers.s.burst: burst (10) must be at least rate (1000)"
    );
}

#[test]
fn limits_as_numbers_or_rules() {
    let text = "[acl.admin]\nusers = [\"root\"]\n[limits]\nmax_sessions_per_user = { default = 5, rules = [{ acl = \"admin\", value = 50 }] }\n";
    let config = Config::from_str(text, "b.toml").expect("valid");
    assert_eq!(
        config
            .limits
            .max_sessions_per_user
            .value_for(|a| a == "admin"),
        50
    );
    let msg = refused(
        "[limits]\nmax_sessions_per_user = { default = 5, rules = [{ acl = \"vip\", value = 50 }] }\n",
    );
    assert!(msg.starts_with("beamline.toml:2:"), "{msg}");
    assert!(
        msg.contains("limits.max_sessions_per_user.rules[0].acl: no ACL named `vip`"),
        "{msg}"
    );
    let msg = refused("[limits]\nmax_offline_messages = \"lots\"\n");
    assert!(
        msg.starts_with("beamline.toml:2:24: limits.max_offline_messages: invalid type: string"),
        "{msg}"
    );
}

#[test]
fn cluster_needs_a_cookie_and_never_shows_it() {
    let msg = refused("hosts = [\"a\"]\n\n[cluster]\nnode_name = \"n1\"\n");
    assert_eq!(
        msg,
        "beamline.toml:3:2: cluster: a cluster needs a `cookie` (a shared secret)"
    );
    let msg = refused("[cluster]\ncookie = 918273645\n");
    assert!(
        msg.starts_with("beamline.toml:2:10: cluster.cookie: expected a string"),
        "{msg}"
    );
    assert!(!msg.contains("918273645"), "{msg}");
    let msg = refused("[cluster]\ncookie = \"s3cr3t-value\"\nnode_name = \"bad name\"\n");
    assert!(!msg.contains("s3cr3t"), "{msg}");
    assert!(
        msg.starts_with("beamline.toml:3:13: cluster.node_name:"),
        "{msg}"
    );
    let config = Config::from_str(
        "[cluster]\ncookie = \"s3cr3t-value\"\nseeds = [\"10.0.0.2:4370\"]\n",
        "b.toml",
    )
    .expect("valid");
    assert!(!format!("{config:?}").contains("s3cr3t"));
    let cluster = config.cluster.as_ref().expect("present");
    assert_eq!(
        cluster.cookie.as_ref().map(Cookie::expose),
        Some("s3cr3t-value")
    );
    assert_eq!(cluster.node_name, "beamline");
    assert_eq!(cluster.listen.to_string(), "127.0.0.1:4370");
}

#[test]
fn syntax_errors_are_located() {
    let msg = refused("hosts = [\"a\"]\nlog_level = = \"info\"\n");
    assert!(msg.starts_with("beamline.toml:2:13: "), "{msg}");
}

#[test]
fn starttls_only_on_c2s() {
    let msg = refused("[[listeners]]\nkind = \"c2s_tls\"\nport = 5223\nstarttls = \"optional\"\n");
    assert_eq!(
        msg,
        "beamline.toml:4:12: listeners[0].starttls: `starttls` applies to `c2s` listeners only"
    );
}

#[test]
fn tls_and_auth_checks() {
    let msg = refused("[tls]\ncertificate = \"a.pem\"\n");
    assert_eq!(
        msg,
        "beamline.toml:2:15: tls.certificate: `certificate` needs `key`"
    );
    let msg = refused("[tls.hosts.\"other.org\"]\ncertificate = \"a\"\nkey = \"b\"\n");
    assert!(msg.starts_with("beamline.toml:1:"), "{msg}");
    assert!(
        msg.contains("tls.hosts.\"other.org\": `other.org` is not one of `hosts`"),
        "{msg}"
    );
    let msg = refused("[tls]\nself_signed = false\n");
    assert!(
        msg.contains("host `localhost` has no certificate and self_signed is false"),
        "{msg}"
    );
    let msg = refused("[auth]\nscram_iterations = 100\n");
    assert_eq!(
        msg,
        "beamline.toml:2:20: auth.scram_iterations: 100 is out of range 4096–10000000"
    );
    let msg = refused("[auth]\nmechanisms = [\"PLAIN\", \"PLAIN\"]\n");
    assert_eq!(
        msg,
        "beamline.toml:2:24: auth.mechanisms[1]: PLAIN is listed twice"
    );
}

#[test]
fn module_names_are_checked_against_the_callers_list() {
    let text = "hosts = [\"a\"]\n\n[modules.mod_ping]\ninterval_secs = 60\n\n[modules.mod_pong]\n";
    let config = Config::from_str(text, "beamline.toml").expect("names are not checked here");
    let err = config
        .check_modules(&["mod_ping", "mod_roster"])
        .expect_err("mod_pong is unknown");
    assert_eq!(
        err.to_string(),
        "beamline.toml:6:10: modules.mod_pong: unknown module `mod_pong`, expected one of: mod_ping, mod_roster"
    );
}

#[test]
fn modules_read_their_own_options_with_locations() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Ping {
        #[serde(default)]
        interval_secs: u32,
    }
    let text = "hosts = [\"a\"]\n[modules.mod_ping]\ninterval_secs = 60\n[modules.mod_bad]\ninterval = 3\n";
    let config = Config::from_str(text, "beamline.toml").expect("valid");
    let ping: Ping = config.module_options("mod_ping").expect("valid options");
    assert_eq!(ping.interval_secs, 60);
    let absent: Ping = config.module_options("mod_absent").expect("defaults");
    assert_eq!(absent.interval_secs, 0);
    let err = config
        .module_options::<Ping>("mod_bad")
        .expect_err("unknown option");
    assert_eq!(
        err.to_string(),
        "beamline.toml:5:1: modules.mod_bad.interval: unknown field `interval`, expected `interval_secs`"
    );
    let err = config.error_at(
        &["modules", "mod_ping", "interval_secs"],
        "must be at most 30",
    );
    assert_eq!(
        err.to_string(),
        "beamline.toml:3:17: modules.mod_ping.interval_secs: must be at most 30"
    );
}

#[test]
fn a_config_changed_in_code_is_validated_without_a_file() {
    let mut config = Config::default();
    config.hosts.push("LOCALHOST".into());
    let msg = config.validate().expect_err("duplicate").to_string();
    assert_eq!(
        msg,
        "<default>: hosts[1]: host `localhost` is listed twice (also hosts[0])"
    );
    let mut config = Config::default();
    config.cluster = Some(ClusterConfig::new("n1", Cookie::new("x")));
    config.validate().expect("valid cluster");
}

#[test]
fn a_key_or_table_given_twice_is_a_syntax_error_at_the_second() {
    let err = Config::from_str(
        "[acl.a]\nusers = [\"x\"]\n\n[acl.a]\nservers = [\"y\"]\n",
        "beamline.toml",
    )
    .expect_err("duplicate table");
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().starts_with("beamline.toml:4:"), "{err}");
    let msg = refused("log_level = \"info\"\nlog_level = \"debug\"\n");
    assert!(msg.starts_with("beamline.toml:2:1: "), "{msg}");
}

/// The keys a table accepts, read back from the "expected one of" list of
/// the error for an unknown key in it.
fn accepted_keys(table_header: &str) -> Vec<String> {
    let text = format!("{table_header}\nzzz_unknown = 1\n");
    let msg = refused(&text);
    let (_, list) = msg
        .split_once("unknown field `zzz_unknown`, expected ")
        .unwrap_or_else(|| panic!("no key list in: {msg}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_key_is_documented_and_in_the_example() {
    let docs = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let example = std::fs::read_to_string(example_path()).expect("example");
    let tables = [
        "",
        "[[listeners]]\nkind = \"c2s\"\nport = 5222",
        "[tls]",
        "[tls.hosts.localhost]\ncertificate = \"a\"\nkey = \"b\"",
        "[auth]",
        "[acl.x]",
        "[shapers.x]\nrate = 1",
        "[limits]",
        "[storage]",
        "[cluster]\ncookie = \"c\"",
    ];
    for header in tables {
        let keys = accepted_keys(header);
        assert!(!keys.is_empty(), "{header}");
        for key in keys {
            assert!(
                [format!("`{key}`"), format!("`[{key}"), format!("`[[{key}")]
                    .iter()
                    .any(|form| docs.contains(form.as_str())),
                "docs/configuration.md does not mention `{key}` of {header:?}"
            );
            assert!(
                example.contains(&format!("{key} =")) || example.contains(&format!("[{key}")),
                "beamline.example.toml does not show `{key}` of {header:?}"
            );
        }
    }
}
