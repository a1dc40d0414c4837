//! mod_disco end to end: service discovery of the server and of an
//! account (XEP-0030), the server's entity capabilities in the stream
//! features (XEP-0115), and features following modules started and
//! stopped at runtime.
#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use beamline_supervision::module::ModuleContext;
use beamline_xmpp::client::Client;
use beamline_xmpp::config::Config;
use beamline_xmpp::modules::disco::account_feature;
use beamline_xmpp::sasl::Mechanism;
use beamline_xmpp::sasl::client::ClientCredentials;
use beamline_xmpp::{Element, ns};
use sha1::{Digest, Sha1};
use support::{DOMAIN, T, TestServer, error_condition, open_raw, starttls};

fn with_modules(config: &mut Config, modules: &[&str]) {
    for m in modules {
        config.modules.insert((*m).to_owned(), toml::Table::new());
    }
}

async fn server() -> TestServer {
    let s = TestServer::start_with(|c| {
        with_modules(c, &["mod_disco", "mod_ping", "mod_version", "mod_time"]);
    })
    .await;
    s.register("alice", "secret").await;
    s.register("bob", "secret").await;
    s
}

fn disco(kind: &str, to: Option<&str>, node: Option<&str>) -> Element {
    let ns = if kind == "info" {
        ns::DISCO_INFO
    } else {
        ns::DISCO_ITEMS
    };
    let mut q = Element::new("query", ns);
    if let Some(n) = node {
        q.set_attr("node", n);
    }
    Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .attr_opt("to", to)
        .append(q)
        .build()
}

fn features(reply: &Element) -> Vec<String> {
    reply
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .filter(|c| c.name() == "feature")
        .map(|c| c.attr("var").unwrap().to_owned())
        .collect()
}

fn identities(reply: &Element) -> Vec<(String, String, String)> {
    reply
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .filter(|c| c.name() == "identity")
        .map(|c| {
            (
                c.attr("category").unwrap().to_owned(),
                c.attr("type").unwrap().to_owned(),
                c.attr("name").unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn info(client: &mut Client, to: Option<&str>, node: Option<&str>) -> Element {
    client.iq(disco("info", to, node)).await.unwrap()
}

#[tokio::test]
async fn server_info_lists_identity_and_module_features() {
    let s = server().await;
    let mut alice = s.login("alice", "secret", Some("r")).await;
    let reply = info(&mut alice, Some(DOMAIN), None).await;
    assert_eq!(reply.attr("type"), Some("result"));
    assert_eq!(reply.attr("from"), Some(DOMAIN));
    assert_eq!(
        identities(&reply),
        vec![("server".into(), "im".into(), "beamline".into())]
    );
    let f = features(&reply);
    for want in [
        "iq",
        "presence",
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::PING,
        ns::VERSION,
        ns::TIME,
    ] {
        assert!(f.iter().any(|x| x == want), "{want} missing from {f:?}");
    }
    let mut sorted = f.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(f, sorted, "features are listed once each");

    let items = alice.iq(disco("items", Some(DOMAIN), None)).await.unwrap();
    assert_eq!(items.attr("type"), Some("result"));
    assert_eq!(
        items
            .get_child("query", ns::DISCO_ITEMS)
            .unwrap()
            .children()
            .count(),
        0
    );

    // An unknown node is item-not-found, on info and on items.
    let r = info(&mut alice, Some(DOMAIN), Some("urn:example:nothing")).await;
    assert_eq!(error_condition(&r), "item-not-found");
    let r = alice
        .iq(disco("items", Some(DOMAIN), Some("urn:example:nothing")))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "item-not-found");
    alice.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn name_and_extra_domains_from_options() {
    let s = TestServer::start_with(|c| {
        let mut t = toml::Table::new();
        t.insert("name".into(), "Chat Service".into());
        t.insert(
            "extra_domains".into(),
            toml::Value::Array(vec!["conference.example.org".into()]),
        );
        let mut info = toml::Table::new();
        info.insert(
            "abuse-addresses".into(),
            toml::Value::Array(vec!["mailto:abuse@example.org".into()]),
        );
        t.insert("server_info".into(), toml::Value::Table(info));
        c.modules.insert("mod_disco".into(), t);
    })
    .await;
    s.register("alice", "secret").await;
    let mut alice = s.login("alice", "secret", Some("r")).await;
    let reply = info(&mut alice, Some(DOMAIN), None).await;
    assert_eq!(
        identities(&reply),
        vec![("server".into(), "im".into(), "Chat Service".into())]
    );
    // XEP-0157 contact addresses as an extended info form (XEP-0128).
    let x = reply
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .get_child("x", "jabber:x:data")
        .expect("server_info form");
    assert_eq!(x.attr("type"), Some("result"));
    let fields: Vec<(String, String)> = x
        .children()
        .map(|f| {
            (
                f.attr("var").unwrap().to_owned(),
                f.child_text("value", "jabber:x:data").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        vec![
            (
                "FORM_TYPE".to_owned(),
                "http://jabber.org/network/serverinfo".to_owned()
            ),
            (
                "abuse-addresses".to_owned(),
                "mailto:abuse@example.org".to_owned()
            ),
        ]
    );
    // The caps ver covers the form.
    let (stream_features, reply2) = caps_and_info(&s).await;
    assert_eq!(
        stream_features
            .get_child("c", ns::CAPS)
            .unwrap()
            .attr("ver"),
        Some(ver_of(&reply2).as_str())
    );
    let items = alice.iq(disco("items", Some(DOMAIN), None)).await.unwrap();
    let jids: Vec<&str> = items
        .get_child("query", ns::DISCO_ITEMS)
        .unwrap()
        .children()
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert_eq!(jids, vec!["conference.example.org"]);
    alice.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn account_info_and_items_for_the_owner_only() {
    let s = server().await;
    let mut alice = s.login("alice", "secret", Some("phone")).await;
    let alice2 = s.login("alice", "secret", Some("laptop")).await;
    let mut bob = s.login("bob", "secret", Some("r")).await;

    // To her own bare JID, and with no `to` at all (the same thing).
    for to in [Some("alice@localhost"), None] {
        let reply = info(&mut alice, to, None).await;
        assert_eq!(reply.attr("type"), Some("result"), "{to:?}");
        assert_eq!(
            identities(&reply),
            vec![("account".into(), "registered".into(), String::new())]
        );
        let f = features(&reply);
        assert!(f.contains(&ns::DISCO_INFO.to_owned()));
        assert!(f.contains(&ns::DISCO_ITEMS.to_owned()));
        // Server-only features are not the account's.
        assert!(!f.contains(&ns::VERSION.to_owned()), "{f:?}");
    }
    let items = alice
        .iq(disco("items", Some("alice@localhost"), None))
        .await
        .unwrap();
    let jids: Vec<&str> = items
        .get_child("query", ns::DISCO_ITEMS)
        .unwrap()
        .children()
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert_eq!(
        jids,
        vec!["alice@localhost/laptop", "alice@localhost/phone"]
    );
    let r = info(&mut alice, Some("alice@localhost"), Some("urn:example:x")).await;
    assert_eq!(error_condition(&r), "item-not-found");

    // A module announces a feature of accounts: shown on the account, not
    // on the server.
    let ctx = ModuleContext::new(DOMAIN, "mod_example");
    account_feature(s.server.services(), &ctx, "urn:example:account");
    let has = |r: &Element| features(r).contains(&"urn:example:account".to_owned());
    assert!(has(&info(&mut alice, None, None).await));
    assert!(!has(&info(&mut alice, Some(DOMAIN), None).await));

    // Someone else learns nothing about alice's account.
    let r = info(&mut bob, Some("alice@localhost"), None).await;
    assert_eq!(error_condition(&r), "service-unavailable");
    let r = bob
        .iq(disco("items", Some("alice@localhost"), None))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "service-unavailable");

    alice.close().await.unwrap();
    alice2.close().await.unwrap();
    bob.close().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn features_follow_modules_stopped_and_started() {
    let s = server().await;
    let mut alice = s.login("alice", "secret", Some("r")).await;
    let has_version = |r: &Element| features(r).contains(&ns::VERSION.to_owned());
    let before = info(&mut alice, Some(DOMAIN), None).await;
    assert!(has_version(&before));

    s.server
        .stop_module(Some(DOMAIN), "mod_version")
        .await
        .unwrap();
    let after = info(&mut alice, Some(DOMAIN), None).await;
    assert!(!has_version(&after), "{:?}", features(&after));
    // And the IQ is no longer answered.
    let v = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .attr("to", DOMAIN)
        .append(Element::new("query", ns::VERSION))
        .build();
    let r = alice.iq(v.clone()).await.unwrap();
    assert_eq!(error_condition(&r), "service-unavailable");

    s.server
        .start_module(Some(DOMAIN), "mod_version", Default::default())
        .await
        .unwrap();
    let again = info(&mut alice, Some(DOMAIN), None).await;
    assert!(has_version(&again));
    let r = alice.iq(v).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    alice.close().await.unwrap();
    s.stop().await;
}

/// An extended form: its FORM_TYPE and its other fields with values.
type Form = (String, Vec<(String, Vec<String>)>);

/// XEP-0115 §5.1 computed here, independently of the server's code
/// (identities without xml:lang, as the server's are).
fn ver_of(reply: &Element) -> String {
    let mut ids: Vec<String> = identities(reply)
        .into_iter()
        .map(|(c, t, n)| format!("{c}/{t}//{n}<"))
        .collect();
    ids.sort();
    let mut f = features(reply);
    f.sort();
    let mut s = ids.concat();
    for x in f {
        s.push_str(&x);
        s.push('<');
    }
    let query = reply.get_child("query", ns::DISCO_INFO).unwrap();
    let mut forms: Vec<Form> = query
        .children()
        .filter(|c| c.is("x", "jabber:x:data"))
        .map(|x| {
            let mut form_type = String::new();
            let mut fields = Vec::new();
            for field in x.children() {
                let var = field.attr("var").unwrap().to_owned();
                let mut values: Vec<String> = field.children().map(|v| v.text()).collect();
                values.sort();
                if var == "FORM_TYPE" {
                    form_type = values.concat();
                } else {
                    fields.push((var, values));
                }
            }
            fields.sort();
            (form_type, fields)
        })
        .collect();
    forms.sort();
    for (form_type, fields) in forms {
        s.push_str(&form_type);
        s.push('<');
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// Logs in by hand and returns the post-authentication features and the
/// ver of a disco#info to the server, asked on the same stream.
async fn caps_and_info(s: &TestServer) -> (Element, Element) {
    let (mut conn, _tcp, _) = open_raw(s.c2s()).await;
    let features = starttls(&mut conn).await;
    conn.authenticate(
        &features,
        ClientCredentials::new("alice", "secret"),
        &[Mechanism::ScramSha256],
        T,
    )
    .await
    .unwrap();
    conn.open_stream(DOMAIN).await.unwrap();
    let features = conn.read_features(T).await.unwrap();
    conn.bind(Some("caps"), T).await.unwrap();
    let mut iq = disco("info", Some(DOMAIN), None);
    iq.set_attr("id", "d1");
    conn.send(&iq).await.unwrap();
    let reply = loop {
        let el = conn.next_element_timeout(T).await.unwrap();
        if el.attr("id") == Some("d1") {
            break el;
        }
    };
    (features, reply)
}

#[tokio::test]
async fn caps_in_stream_features_match_disco_info() {
    let s = server().await;
    let (stream_features, reply) = caps_and_info(&s).await;
    let c = stream_features
        .get_child("c", ns::CAPS)
        .expect("caps in the post-auth features");
    assert_eq!(c.attr("hash"), Some("sha-1"));
    let node = c.attr("node").unwrap().to_owned();
    assert!(!node.is_empty());
    let ver = c.attr("ver").unwrap().to_owned();
    assert_eq!(ver, ver_of(&reply));

    // The caps node answers with the same information (XEP-0115 §6.2).
    let mut alice = s.login("alice", "secret", Some("r")).await;
    let r = info(&mut alice, Some(DOMAIN), Some(&format!("{node}#{ver}"))).await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        r.get_child("query", ns::DISCO_INFO).unwrap().attr("node"),
        Some(format!("{node}#{ver}").as_str())
    );
    assert_eq!(features(&r), features(&reply));

    // Stopping a module changes the ver announced to the next login.
    s.server
        .stop_module(Some(DOMAIN), "mod_time")
        .await
        .unwrap();
    let (features2, reply2) = caps_and_info(&s).await;
    let ver2 = features2
        .get_child("c", ns::CAPS)
        .unwrap()
        .attr("ver")
        .unwrap()
        .to_owned();
    assert_ne!(ver2, ver);
    assert_eq!(ver2, ver_of(&reply2));
    // The old caps node is now unknown.
    let r = info(&mut alice, Some(DOMAIN), Some(&format!("{node}#{ver}"))).await;
    assert_eq!(error_condition(&r), "item-not-found");
    alice.close().await.unwrap();
    s.stop().await;
}
