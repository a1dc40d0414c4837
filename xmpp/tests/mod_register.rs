//! mod_register (XEP-0077) end to end: registration before authentication
//! (form, creation, errors, access rule, rate limit per address, not
//! before STARTTLS), then password change and cancellation once logged in.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use beamline_runtime::hooks::{Flow, Scope};
use beamline_xmpp::client::{Client, RawConnection};
use beamline_xmpp::config::{AccessRuleEntry, AclConfig, Config};
use beamline_xmpp::hooks::{Account, REGISTER_USER, REMOVE_USER};
use beamline_xmpp::modules::DEFAULT_MODULES;
use beamline_xmpp::sasl::Mechanism;
use beamline_xmpp::sasl::client::ClientCredentials;
use beamline_xmpp::{Element, ns};
use support::{
    DOMAIN, T, TestServer, error_condition, expect_client_stream_error, expect_stream_error,
    open_raw, starttls,
};

/// A server with mod_register; `rule` is the `register` access rule
/// (`None`: not defined), `timeout` the registration timeout.
async fn server(rule: Option<AccessRuleEntry>, timeout: i64) -> TestServer {
    TestServer::start_with(move |c: &mut Config| {
        if let Some(r) = rule {
            c.access_rules.insert("register".into(), vec![r]);
        }
        let mut t = toml::Table::new();
        t.insert("registration_timeout".into(), timeout.into());
        c.modules.insert("mod_register".into(), t);
    })
    .await
}

fn allow_all() -> Option<AccessRuleEntry> {
    Some(AccessRuleEntry::Allow("all".into()))
}

fn register_iq(kind: &str, id: &str, fields: &[(&str, &str)], remove: bool) -> Element {
    let mut q = Element::new("query", ns::REGISTER);
    for (k, v) in fields {
        q.append_child(Element::builder(*k, ns::REGISTER).text(v).build());
    }
    if remove {
        q.append_child(Element::new("remove", ns::REGISTER));
    }
    Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", kind)
        .attr("id", id)
        .append(q)
        .build()
}

async fn ask(conn: &mut RawConnection, iq: Element) -> Element {
    conn.send(&iq).await.unwrap();
    let el = conn.next_element_timeout(T).await.unwrap();
    assert_eq!(el.attr("id"), iq.attr("id"), "{el:?}");
    el
}

/// A new connection past STARTTLS: the connection, its socket and the
/// pre-authentication features.
async fn pre_auth(s: &TestServer) -> (RawConnection, support::ProbedTcp, Element) {
    let (mut conn, tcp, _) = open_raw(s.c2s()).await;
    let features = starttls(&mut conn).await;
    (conn, tcp, features)
}

/// Registers `user` with `password` on a new connection; the reply.
async fn try_register(s: &TestServer, user: &str, password: &str) -> Element {
    let (mut conn, _tcp, _) = pre_auth(s).await;
    ask(
        &mut conn,
        register_iq(
            "set",
            "r1",
            &[("username", user), ("password", password)],
            false,
        ),
    )
    .await
}

fn counter(
    s: &TestServer,
    point: &'static beamline_runtime::hooks::HookPoint<Account, ()>,
) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    s.server
        .hooks()
        .subscribe_fn(
            point,
            Scope::Host(DOMAIN),
            50,
            None,
            move |_: Account, acc: ()| {
                m.fetch_add(1, Ordering::SeqCst);
                async move { Flow::Continue(acc) }
            },
        )
        .unwrap();
    n
}

#[tokio::test]
async fn not_a_default_module() {
    assert!(!DEFAULT_MODULES.contains(&"mod_register"));
    assert!(!Config::default().modules.contains_key("mod_register"));
}

#[tokio::test]
async fn register_then_log_in() {
    let s = server(allow_all(), 0).await;
    let registered = counter(&s, &REGISTER_USER);
    let (mut conn, _tcp, features) = pre_auth(&s).await;
    assert!(
        features.has_child("register", ns::REGISTER_FEATURE),
        "the register stream feature is offered"
    );
    let form = ask(&mut conn, register_iq("get", "g1", &[], false)).await;
    assert_eq!(form.attr("type"), Some("result"));
    let q = form.get_child("query", ns::REGISTER).unwrap();
    assert!(q.has_child("username", ns::REGISTER));
    assert!(q.has_child("password", ns::REGISTER));
    assert!(q.has_child("instructions", ns::REGISTER));
    assert!(!q.has_child("registered", ns::REGISTER));

    let r = ask(
        &mut conn,
        register_iq(
            "set",
            "s1",
            &[("username", "Carol"), ("password", "s3cret")],
            false,
        ),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    assert_eq!(registered.load(Ordering::SeqCst), 1, "register_user ran");
    // The user name was nodeprep'd.
    assert_eq!(s.server.users(DOMAIN).await.unwrap(), vec!["carol"]);

    // The new account logs in, on the same stream (as clients do after
    // registering) and on a new connection.
    conn.authenticate(
        &features,
        ClientCredentials::new("carol", "s3cret"),
        &[Mechanism::ScramSha256],
        T,
    )
    .await
    .unwrap();
    conn.open_stream(DOMAIN).await.unwrap();
    conn.read_features(T).await.unwrap();
    conn.bind(Some("first"), T).await.unwrap();
    let carol = s.login("carol", "s3cret", Some("r")).await;
    carol.close().await.unwrap();

    // Taken: conflict.
    let r = try_register(&s, "carol", "other").await;
    assert_eq!(error_condition(&r), "conflict");
    // Missing or empty fields, a bad user name: not-acceptable.
    let r = try_register(&s, "dave", "").await;
    assert_eq!(error_condition(&r), "not-acceptable");
    let (mut conn, _tcp, _) = pre_auth(&s).await;
    let r = ask(
        &mut conn,
        register_iq("set", "s2", &[("username", "dave")], false),
    )
    .await;
    assert_eq!(error_condition(&r), "not-acceptable");
    let r = try_register(&s, "da ve@x", "pw").await;
    assert_eq!(error_condition(&r), "not-acceptable");
    // Cancelling before authentication is refused.
    let r = ask(&mut conn, register_iq("set", "s3", &[], true)).await;
    assert_eq!(error_condition(&r), "not-allowed");
    assert_eq!(s.server.users(DOMAIN).await.unwrap(), vec!["carol"]);
    assert_eq!(registered.load(Ordering::SeqCst), 1);
    s.stop().await;
}

#[tokio::test]
async fn denied_by_the_access_rule() {
    // The rule is not defined: nobody may register.
    let s = server(None, 0).await;
    let (mut conn, _tcp, features) = pre_auth(&s).await;
    assert!(!features.has_child("register", ns::REGISTER_FEATURE));
    let r = ask(
        &mut conn,
        register_iq(
            "set",
            "s1",
            &[("username", "eve"), ("password", "pw")],
            false,
        ),
    )
    .await;
    assert_eq!(error_condition(&r), "not-allowed");
    s.stop().await;

    // Defined, denying everyone.
    let s = server(Some(AccessRuleEntry::Deny("all".into())), 0).await;
    let (_, _, features) = pre_auth(&s).await;
    assert!(!features.has_child("register", ns::REGISTER_FEATURE));
    let r = try_register(&s, "eve", "pw").await;
    assert_eq!(error_condition(&r), "not-allowed");
    assert!(s.server.users(DOMAIN).await.unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn access_rule_by_account_and_by_address() {
    // Reserved names are refused, others allowed.
    let s = TestServer::start_with(|c: &mut Config| {
        let mut reserved = AclConfig::default();
        reserved.users = vec!["admin".into()];
        c.acl.insert("reserved".into(), reserved);
        c.access_rules.insert(
            "register".into(),
            vec![
                AccessRuleEntry::Deny("reserved".into()),
                AccessRuleEntry::Allow("all".into()),
            ],
        );
        let mut t = toml::Table::new();
        t.insert("registration_timeout".into(), 0.into());
        c.modules.insert("mod_register".into(), t);
    })
    .await;
    let (_, _, features) = pre_auth(&s).await;
    assert!(features.has_child("register", ns::REGISTER_FEATURE));
    let r = try_register(&s, "admin", "pw").await;
    assert_eq!(error_condition(&r), "not-allowed");
    let r = try_register(&s, "karl", "pw").await;
    assert_eq!(r.attr("type"), Some("result"));
    s.stop().await;

    // Only from another network: this client (127.0.0.1) may not, and is
    // not offered registration.
    let s = TestServer::start_with(|c: &mut Config| {
        let mut lan = AclConfig::default();
        lan.ips = vec!["10.0.0.0/8".parse().unwrap()];
        c.acl.insert("lan".into(), lan);
        c.access_rules.insert(
            "register".into(),
            vec![AccessRuleEntry::Allow("lan".into())],
        );
        c.modules.insert("mod_register".into(), toml::Table::new());
    })
    .await;
    let (_, _, features) = pre_auth(&s).await;
    assert!(!features.has_child("register", ns::REGISTER_FEATURE));
    let r = try_register(&s, "karl", "pw").await;
    assert_eq!(error_condition(&r), "not-allowed");
    s.stop().await;
}

#[tokio::test]
async fn one_registration_per_address_per_timeout() {
    let s = server(allow_all(), 600).await;
    let r = try_register(&s, "frank", "pw").await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = try_register(&s, "grace", "pw").await;
    assert_eq!(error_condition(&r), "resource-constraint");
    assert_eq!(s.server.users(DOMAIN).await.unwrap(), vec!["frank"]);
    s.stop().await;

    // A failed attempt does not use up the address's slot.
    let s = server(allow_all(), 600).await;
    s.register("taken", "pw").await;
    let r = try_register(&s, "taken", "pw").await;
    assert_eq!(error_condition(&r), "conflict");
    let r = try_register(&s, "heidi", "pw").await;
    assert_eq!(r.attr("type"), Some("result"));
    s.stop().await;
}

#[tokio::test]
async fn not_offered_before_required_starttls() {
    let s = server(allow_all(), 0).await;
    let (mut conn, tcp, features) = open_raw(s.c2s()).await;
    assert!(features.has_child("starttls", ns::TLS));
    assert!(!features.has_child("register", ns::REGISTER_FEATURE));
    conn.send(&register_iq(
        "set",
        "s1",
        &[("username", "ivan"), ("password", "pw")],
        false,
    ))
    .await
    .unwrap();
    expect_stream_error(&mut conn, &tcp, "not-authorized").await;
    assert!(s.server.users(DOMAIN).await.unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn change_password_then_cancel() {
    let s = server(allow_all(), 0).await;
    let removed = counter(&s, &REMOVE_USER);
    s.register("judy", "old").await;
    let mut judy = s.login("judy", "old", Some("r")).await;

    let form = judy.iq(register_iq("get", "g1", &[], false)).await.unwrap();
    let q = form.get_child("query", ns::REGISTER).unwrap();
    assert!(q.has_child("registered", ns::REGISTER));
    assert_eq!(
        q.child_text("username", ns::REGISTER).as_deref(),
        Some("judy")
    );

    // Someone else's password: not-allowed.
    s.register("mallory", "pw").await;
    let r = judy
        .iq(register_iq(
            "set",
            "p0",
            &[("username", "mallory"), ("password", "x")],
            false,
        ))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "not-allowed");

    // Her own, to the server.
    let mut change = register_iq(
        "set",
        "p1",
        &[("username", "judy"), ("password", "new")],
        false,
    );
    change.set_attr("to", DOMAIN);
    let r = judy.iq(change).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    let old = Client::connect(s.config("judy", "old").with_resource("x")).await;
    assert!(old.is_err(), "old password refused");
    let other = s.login("judy", "new", Some("other")).await;

    // Incomplete: bad-request, and the password stays.
    let r = judy
        .iq(register_iq(
            "set",
            "p2",
            &[("username", "judy"), ("password", "")],
            false,
        ))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "bad-request");
    // `<remove/>` with other children: bad-request.
    let r = judy
        .iq(register_iq("set", "c0", &[("username", "judy")], true))
        .await
        .unwrap();
    assert_eq!(error_condition(&r), "bad-request");

    // Cancel: the result, then every session ends and the account is gone.
    let (mut judy2, tcp) = s.login_probed("judy", "new", Some("r2")).await;
    let r = judy2.iq(register_iq("set", "c1", &[], true)).await.unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    expect_client_stream_error(&mut judy2, &tcp, "not-authorized").await;
    assert_eq!(s.server.users(DOMAIN).await.unwrap(), vec!["mallory"]);
    assert_eq!(removed.load(Ordering::SeqCst), 1, "remove_user ran");
    support::wait_sessions(&s.server, 0).await;
    assert!(
        Client::connect(s.config("judy", "new").with_resource("y"))
            .await
            .is_err()
    );
    drop((judy, other));
    s.stop().await;
}
