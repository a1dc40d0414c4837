//! `mod_disco`: Service discovery (XEP-0030) and the server's entity
//! capabilities (XEP-0115), as ejabberd's `mod_disco` and `mod_caps` do
//! them.
//!
//! - `disco#info` to the server: the identity `server/im` (named by the
//!   `name` option) and the features `iq`, `presence`, `disco#info`,
//!   `disco#items` plus what the running modules announce in the
//!   [`DiscoRegistry`](super::DiscoRegistry) (read at each request, so a
//!   module stopped or started at runtime shows at once);
//!   and, when the `server_info` option is set, its contact addresses as a
//!   XEP-0157 form (`FORM_TYPE` `http://jabber.org/network/serverinfo`,
//!   e.g. `abuse-addresses`), as ejabberd's `server_info`;
//! - `disco#items` to the server: the `extra_domains` option's JIDs;
//! - to an account's bare JID, from that account itself: the identity
//!   `account/registered`, the features `disco#info` and `disco#items`
//!   plus those other modules announce with [`account_feature`],
//!   and as items the account's online resources (ejabberd's
//!   `get_sm_identity`/`get_sm_features`/`get_sm_items`); from anyone
//!   else `service-unavailable` (ejabberd answers so to whoever has no
//!   presence subscription; this server does not look at the roster);
//! - a node other than the capabilities node (`node#ver`) is
//!   `item-not-found`;
//! - after authentication the stream features carry
//!   `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node=… ver=…/>`
//!   (XEP-0115 §6.3), the verification string computed at each login from
//!   the current identity and features.

use std::sync::Arc;

use base64::Engine as _;
use beamline_runtime::hooks::{Flow, Scope};
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use super::{Services, holder_tree, opt_str};
use super::{iq_error, iq_result, to_account};
use crate::hooks::C2S_STREAM_FEATURES;
use crate::jid;
use crate::ns;
use crate::stanza_error::StanzaErrorCondition;
use crate::xml::Element;

/// The `node` of the server's entity capabilities (XEP-0115 §4): names
/// the software.
pub const CAPS_NODE: &str = "https://github.com/beamline-im/beamline";

/// The features every server answers with besides those of the modules
/// (as ejabberd's `mod_disco` lists them).
const BASE_FEATURES: [&str; 4] = ["iq", "presence", ns::DISCO_INFO, ns::DISCO_ITEMS];

/// A disco identity (XEP-0030 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    /// `category` attribute.
    pub category: String,
    /// `type` attribute.
    pub kind: String,
    /// `xml:lang` attribute (empty: none).
    pub lang: String,
    /// `name` attribute (empty: none).
    pub name: String,
}

impl Identity {
    /// An identity without a language.
    pub fn new(category: &str, kind: &str, name: &str) -> Self {
        Identity {
            category: category.to_owned(),
            kind: kind.to_owned(),
            lang: String::new(),
            name: name.to_owned(),
        }
    }

    /// The `<identity/>` element.
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("identity", ns::DISCO_INFO);
        el.set_attr("category", self.category.clone());
        el.set_attr("type", self.kind.clone());
        if !self.lang.is_empty() {
            el.set_attr("xml:lang", self.lang.clone());
        }
        if !self.name.is_empty() {
            el.set_attr("name", self.name.clone());
        }
        el
    }
}

/// The key under which the [`DiscoRegistry`](super::DiscoRegistry) keeps
/// the features of `host`'s accounts (ejabberd's `disco_sm_features`),
/// apart from the host's own.
fn account_scope(host: &str) -> String {
    format!("{host}\u{0}accounts")
}

/// Announces `feature` on the bare JIDs of the host's accounts (as
/// ejabberd's `disco_sm_features` subscribers do: `msgoffline`, MAM, PEP),
/// until the module that calls this stops. The host's own features are
/// announced with [`Services::feature`].
pub fn account_feature(services: &Services, ctx: &ModuleContext, feature: &'static str) {
    let key = account_scope(ctx.host());
    services.disco.add_feature(&key, feature);
    let disco = services.disco.clone();
    ctx.on_stop(move || disco.remove_feature(&key, feature));
}

/// The namespace of data forms (XEP-0004).
const DATA_FORMS: &str = "jabber:x:data";

/// The `FORM_TYPE` of contact addresses (XEP-0157).
pub const SERVER_INFO: &str = "http://jabber.org/network/serverinfo";

/// An extended information form (XEP-0128) of a disco#info result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoForm {
    /// The value of the hidden `FORM_TYPE` field.
    pub form_type: String,
    /// The other fields: `var` and values.
    pub fields: Vec<(String, Vec<String>)>,
}

impl InfoForm {
    /// The `<x xmlns='jabber:x:data' type='result'/>` element.
    pub fn to_element(&self) -> Element {
        let value = |v: &str| Element::builder("value", DATA_FORMS).text(v).build();
        let mut x = Element::new("x", DATA_FORMS);
        x.set_attr("type", "result");
        x.append_child(
            Element::builder("field", DATA_FORMS)
                .attr("var", "FORM_TYPE")
                .attr("type", "hidden")
                .append(value(&self.form_type))
                .build(),
        );
        for (var, values) in &self.fields {
            let mut f = Element::new("field", DATA_FORMS);
            f.set_attr("var", var.clone());
            for v in values {
                f.append_child(value(v));
            }
            x.append_child(f);
        }
        x
    }
}

/// The verification string of XEP-0115 §5.1: sorted identities as
/// `category/type/lang/name<`, sorted features as `feature<`, then the
/// extended forms sorted by `FORM_TYPE` (its value `<`, then each field
/// sorted by `var` as `var<` and its sorted values `value<`); SHA-1,
/// base64.
pub fn caps_ver(identities: &[Identity], features: &[String], forms: &[InfoForm]) -> String {
    let mut ids: Vec<&Identity> = identities.iter().collect();
    ids.sort();
    let mut feats: Vec<&String> = features.iter().collect();
    feats.sort();
    feats.dedup();
    let mut s = String::new();
    for i in ids {
        s.push_str(&format!("{}/{}/{}/{}<", i.category, i.kind, i.lang, i.name));
    }
    for f in feats {
        s.push_str(f);
        s.push('<');
    }
    let mut forms: Vec<&InfoForm> = forms.iter().collect();
    forms.sort_by(|a, b| a.form_type.cmp(&b.form_type));
    for form in forms {
        s.push_str(&form.form_type);
        s.push('<');
        let mut fields: Vec<&(String, Vec<String>)> = form.fields.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for (var, values) in fields {
            s.push_str(var);
            s.push('<');
            let mut values: Vec<&String> = values.iter().collect();
            values.sort();
            for v in values {
                s.push_str(v);
                s.push('<');
            }
        }
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// The `mod_disco` module.
pub struct Mod {
    services: Services,
}

/// The module, for the module manager.
pub fn module(services: &Services) -> Arc<dyn Module> {
    Arc::new(Mod {
        services: services.clone(),
    })
}

/// What the handlers need: services, the host, the options.
struct Disco {
    services: Services,
    host: String,
    name: String,
    extra_domains: Vec<String>,
    /// The `server_info` option as a XEP-0157 form (`None` when empty).
    server_info: Option<InfoForm>,
}

impl Disco {
    fn identities(&self) -> Vec<Identity> {
        vec![Identity::new("server", "im", &self.name)]
    }

    fn features(&self) -> Vec<String> {
        let mut f: Vec<String> = BASE_FEATURES.iter().map(|s| (*s).to_owned()).collect();
        f.extend(self.services.disco.features(&self.host));
        f.sort();
        f.dedup();
        f
    }

    fn forms(&self) -> Vec<InfoForm> {
        self.server_info.iter().cloned().collect()
    }

    fn ver(&self) -> String {
        caps_ver(&self.identities(), &self.features(), &self.forms())
    }

    fn caps_element(&self) -> Element {
        Element::builder("c", ns::CAPS)
            .attr("hash", "sha-1")
            .attr("node", CAPS_NODE)
            .attr("ver", self.ver())
            .build()
    }

    fn info_query(
        node: Option<&str>,
        ids: &[Identity],
        features: &[String],
        forms: &[InfoForm],
    ) -> Element {
        let mut q = Element::new("query", ns::DISCO_INFO);
        if let Some(node) = node {
            q.set_attr("node", node);
        }
        for i in ids {
            q.append_child(i.to_element());
        }
        for f in features {
            q.append_child(
                Element::builder("feature", ns::DISCO_INFO)
                    .attr("var", f.clone())
                    .build(),
            );
        }
        for form in forms {
            q.append_child(form.to_element());
        }
        q
    }

    /// The query child, if it is the only child and in `ns` (`None` for a
    /// malformed request).
    fn query<'a>(req: &'a Element, namespace: &str) -> Option<&'a Element> {
        let mut children = req.children();
        let q = children.next()?;
        (q.is("query", namespace) && children.next().is_none()).then_some(q)
    }

    async fn info(&self, req: Element) -> Option<Element> {
        if req.attr("type") != Some("get") {
            return iq_error(&req, StanzaErrorCondition::NotAllowed);
        }
        let Some(q) = Self::query(&req, ns::DISCO_INFO) else {
            return iq_error(&req, StanzaErrorCondition::BadRequest);
        };
        let node = q.attr("node").filter(|n| !n.is_empty());
        if to_account(&req) {
            return self.account_info(&req, node).await;
        }
        if let Some(node) = node {
            // XEP-0115 §6.2: the capabilities node answers as the entity.
            let caps_node = format!("{CAPS_NODE}#{}", self.ver());
            if node != caps_node {
                return iq_error(&req, StanzaErrorCondition::ItemNotFound);
            }
        }
        let q = Self::info_query(node, &self.identities(), &self.features(), &self.forms());
        Some(iq_result(&req, Some(q)))
    }

    /// The account and whether the sender is that account.
    fn account_of(req: &Element) -> Option<(jid::BareJid, bool)> {
        let to = jid::parse(req.attr("to")?).ok()?.to_bare();
        let from = jid::parse(req.attr("from")?).ok()?.to_bare();
        let own = to == from;
        Some((to, own))
    }

    async fn account_info(&self, req: &Element, node: Option<&str>) -> Option<Element> {
        let Some((account, own)) = Self::account_of(req) else {
            return iq_error(req, StanzaErrorCondition::BadRequest);
        };
        if !own {
            return iq_error(req, StanzaErrorCondition::ServiceUnavailable);
        }
        if node.is_some() {
            return iq_error(req, StanzaErrorCondition::ItemNotFound);
        }
        let user = account.node().map(|n| n.to_string()).unwrap_or_default();
        let exists = matches!(
            self.services.backend.credentials(&self.host, &user).await,
            Ok(Some(_))
        );
        let ids = if exists {
            vec![Identity::new("account", "registered", "")]
        } else {
            Vec::new()
        };
        let mut features = vec![ns::DISCO_INFO.to_owned(), ns::DISCO_ITEMS.to_owned()];
        features.extend(self.services.disco.features(&account_scope(&self.host)));
        features.sort();
        features.dedup();
        let q = Self::info_query(None, &ids, &features, &[]);
        Some(iq_result(req, Some(q)))
    }

    async fn items(&self, req: Element) -> Option<Element> {
        if req.attr("type") != Some("get") {
            return iq_error(&req, StanzaErrorCondition::NotAllowed);
        }
        let Some(q) = Self::query(&req, ns::DISCO_ITEMS) else {
            return iq_error(&req, StanzaErrorCondition::BadRequest);
        };
        if q.attr("node").is_some_and(|n| !n.is_empty()) {
            return iq_error(&req, StanzaErrorCondition::ItemNotFound);
        }
        let mut out = Element::new("query", ns::DISCO_ITEMS);
        if to_account(&req) {
            let Some((account, own)) = Self::account_of(&req) else {
                return iq_error(&req, StanzaErrorCondition::BadRequest);
            };
            if !own {
                return iq_error(&req, StanzaErrorCondition::ServiceUnavailable);
            }
            let user = account.node().map(|n| n.to_string()).unwrap_or_default();
            let mut jids: Vec<String> = self
                .services
                .sm
                .sessions_of(&self.host, &user)
                .iter()
                .filter_map(|s| s.full_jid())
                .map(|j| j.to_string())
                .collect();
            jids.sort();
            for j in jids {
                out.append_child(
                    Element::builder("item", ns::DISCO_ITEMS)
                        .attr("jid", j)
                        .attr("name", user.clone())
                        .build(),
                );
            }
        } else {
            for d in &self.extra_domains {
                out.append_child(
                    Element::builder("item", ns::DISCO_ITEMS)
                        .attr("jid", d.clone())
                        .build(),
                );
            }
        }
        Some(iq_result(&req, Some(out)))
    }
}

fn extra_domains(opts: &ModuleOptions) -> Vec<String> {
    opts.get("extra_domains")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The `server_info` option (a table of field name → addresses) as a
/// XEP-0157 form; `None` when it is empty.
fn server_info(opts: &ModuleOptions) -> Option<InfoForm> {
    let table = opts.get("server_info")?.as_object()?;
    let fields: Vec<(String, Vec<String>)> = table
        .iter()
        .map(|(k, v)| {
            let urls = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            (k.clone(), urls)
        })
        .collect();
    (!fields.is_empty()).then(|| InfoForm {
        form_type: SERVER_INFO.to_owned(),
        fields,
    })
}

impl Module for Mod {
    fn name(&self) -> &str {
        "mod_disco"
    }

    fn default_options(&self) -> ModuleOptions {
        let mut o = ModuleOptions::new();
        o.insert("name".into(), json!("beamline"));
        o.insert("extra_domains".into(), json!([]));
        o.insert("server_info".into(), json!({}));
        o
    }

    fn validate_options(&self, opts: &ModuleOptions) -> Result<(), String> {
        if opt_str(opts, "name").is_none() {
            return Err("`name` must be a string".into());
        }
        let Some(list) = opts.get("extra_domains").and_then(Value::as_array) else {
            return Err("`extra_domains` must be a list of JIDs".into());
        };
        for d in list {
            let Some(s) = d.as_str() else {
                return Err("`extra_domains` must be a list of JIDs".into());
            };
            if jid::parse(s).is_err() {
                return Err(format!("`extra_domains`: `{s}` is not a JID"));
            }
        }
        let Some(info) = opts.get("server_info").and_then(Value::as_object) else {
            return Err("`server_info` must be a table of lists of addresses".into());
        };
        for (k, v) in info {
            let ok = v
                .as_array()
                .is_some_and(|a| a.iter().all(|u| u.as_str().is_some()));
            if !ok {
                return Err(format!("`server_info.{k}` must be a list of addresses"));
            }
        }
        Ok(())
    }

    fn start(&self, ctx: &ModuleContext, opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let disco = Arc::new(Disco {
            services: self.services.clone(),
            host: ctx.host().to_owned(),
            name: opt_str(opts, "name").unwrap_or("beamline").to_owned(),
            extra_domains: extra_domains(opts),
            server_info: server_info(opts),
        });
        let d = disco.clone();
        self.services.iq_handler(
            ctx,
            ns::DISCO_INFO,
            true,
            Arc::new(move |req| {
                let d = d.clone();
                Box::pin(async move { d.info(req).await })
            }),
        );
        let d = disco.clone();
        self.services.iq_handler(
            ctx,
            ns::DISCO_ITEMS,
            true,
            Arc::new(move |req| {
                let d = d.clone();
                Box::pin(async move { d.items(req).await })
            }),
        );
        let services = self.services.clone();
        let host = ctx.host().to_owned();
        Ok(holder_tree(
            ctx.module(),
            Arc::new(move |cell| {
                let d = disco.clone();
                services
                    .hooks
                    .subscribe_fn(
                        &C2S_STREAM_FEATURES,
                        Scope::Host(&host),
                        50,
                        Some(cell),
                        move |_host: String, mut acc: Vec<Element>| {
                            let d = d.clone();
                            async move {
                                acc.push(d.caps_element());
                                Flow::Continue(acc)
                            }
                        },
                    )
                    .map_err(|e| e.to_string())?;
                Ok(())
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.2: the simple generation example.
    #[test]
    fn ver_of_the_xep_simple_example() {
        let ids = [Identity::new("client", "pc", "Exodus 0.9.1")];
        let features: Vec<String> = [
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "http://jabber.org/protocol/muc",
            "http://jabber.org/protocol/caps",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            caps_ver(&ids, &features, &[]),
            "QgayPKawpkPSDYmwT/WM94uAlu0="
        );
    }

    /// XEP-0115 §5.3: the complex example (two identities with
    /// languages, an extended form).
    #[test]
    fn ver_of_the_xep_complex_example() {
        let ids = [
            Identity {
                category: "client".into(),
                kind: "pc".into(),
                lang: "en".into(),
                name: "Psi 0.11".into(),
            },
            Identity {
                category: "client".into(),
                kind: "pc".into(),
                lang: "el".into(),
                name: "Ψ 0.11".into(),
            },
        ];
        let features: Vec<String> = [
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "http://jabber.org/protocol/muc",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let form = InfoForm {
            form_type: "urn:xmpp:dataforms:softwareinfo".into(),
            fields: vec![
                ("software_version".into(), v(&["0.11"])),
                ("ip_version".into(), v(&["ipv6", "ipv4"])),
                ("os".into(), v(&["Mac"])),
                ("os_version".into(), v(&["10.5.1"])),
                ("software".into(), v(&["Psi"])),
            ],
        };
        assert_eq!(
            caps_ver(&ids, &features, &[form]),
            "q07IKJEyjvHSyhy//CH0CxmKi8w="
        );
    }

    /// Identities sort by category, type, lang, name; features sort too.
    #[test]
    fn ver_does_not_depend_on_order() {
        let a = [
            Identity::new("server", "im", "x"),
            Identity::new("pubsub", "pep", ""),
        ];
        let b = [a[1].clone(), a[0].clone()];
        let f1 = vec!["b".to_owned(), "a".to_owned()];
        let f2 = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(caps_ver(&a, &f1, &[]), caps_ver(&b, &f2, &[]));
        assert_ne!(caps_ver(&a, &f1, &[]), caps_ver(&a, &f2[..1], &[]));
    }
}
