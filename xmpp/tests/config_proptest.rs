//! Property tests of configuration errors: whatever the layout, a bad port
//! or an unknown key is reported at its own line with its own key path.

use beamline_xmpp::config::Config;
use proptest::prelude::*;

/// `n` c2s listeners on ports 6000.., each preceded by `gap` blank lines;
/// listener `bad` gets `extra` as an additional line. Returns the text and
/// the 1-based line of that extra line.
fn listeners(n: usize, gap: usize, bad: usize, extra: &str) -> (String, usize) {
    let mut text = String::from("hosts = [\"localhost\"]\n");
    let mut bad_line = 0;
    for i in 0..n {
        text.push_str(&"\n".repeat(gap));
        text.push_str(&format!(
            "[[listeners]]\nkind = \"c2s\"\nport = {}\n",
            6000 + i
        ));
        if i == bad {
            bad_line = text.matches('\n').count() + 1;
            text.push_str(extra);
            text.push('\n');
        }
    }
    (text, bad_line)
}

proptest! {
    #[test]
    fn unknown_key_is_found_in_any_listener(n in 1usize..6, gap in 0usize..4, pick in 0usize..6, key in "[a-z]{1,8}") {
        prop_assume!(!["kind", "ip", "port", "starttls", "shaper", "access"].contains(&key.as_str()));
        let bad = pick % n;
        let (text, line) = listeners(n, gap, bad, &format!("{key} = 1"));
        let err = Config::from_str(&text, "p.toml").expect_err("unknown key");
        let want = format!("p.toml:{line}:1: listeners[{bad}].{key}: unknown field `{key}`");
        prop_assert!(err.to_string().starts_with(&want), "{} vs {}", err, want);
    }

    #[test]
    fn ports_are_accepted_exactly_in_range(port in 0i64..70_000) {
        let text = format!("[[listeners]]\nkind = \"c2s_tls\"\nport = {port}\n");
        match Config::from_str(&text, "p.toml") {
            Ok(c) => prop_assert!((1..=65_535).contains(&port) && i64::from(c.listeners[0].port) == port),
            Err(e) => {
                prop_assert!(!(1..=65_535).contains(&port));
                prop_assert!(e.to_string().starts_with("p.toml:3:8: listeners[0].port: "), "{}", e);
            }
        }
    }

    #[test]
    fn any_text_gives_a_result_not_a_panic(text in "[\\[\\]a-z0-9=\". \n{}_,]{0,80}") {
        if let Err(e) = Config::from_str(&text, "p.toml") {
            prop_assert!(e.to_string().starts_with("p.toml"));
        }
    }
}
