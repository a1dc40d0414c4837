//! `mod_caps`: the entity capabilities of the clients (XEP-0115), as
//! ejabberd's `mod_caps` learns them.
//!
//! - A client's own available presence (no `to`, no `type`) carrying
//!   `<c xmlns='http://jabber.org/protocol/caps' hash node ver/>` is seen
//!   on `user_send_packet`; if its `ver` is not known yet, the server asks
//!   that client `disco#info` at `node#ver` ([`Router::request`](crate::router::Router::request),
//!   from the server's domain) and, if the answer hashes to `ver`
//!   (XEP-0115 §5.4: no duplicate identities, features or form types;
//!   forms whose `FORM_TYPE` is missing or not hidden are left out), keeps
//!   its features under `ver`. An answer that does not verify, an error
//!   or no answer within 30 s is not kept, and the next presence with that
//!   `ver` asks again. While one query for a `ver` is under way, other
//!   clients with the same `ver` are not asked.
//! - Only the `sha-1` hash is checked (the one XEP-0115 requires);
//!   presence with another hash, or legacy caps without `hash` (and their
//!   `ext`), is ignored.
//! - The cache is in the memory of each node and holds at most
//!   `cache_size` (1000) verification strings, the oldest learned going
//!   first; it is not replicated (another node learns a `ver` by asking a
//!   client of its own) and is lost at a restart of the module.
//! - [`features_of`] gives the features of a session from its last
//!   available presence (in the session table) and the cache: what
//!   PEP's `+notify` filtering needs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use beamline_runtime::hooks::{Answer, Flow, Scope};
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};
use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::json;

use super::disco::{Identity, InfoForm, caps_ver};
use super::{Services, holder_tree, opt_u64};
use crate::hooks::{SessionInfo, USER_SEND_PACKET};
use crate::jid::FullJid;
use crate::ns;
use crate::xml::Element;

/// How long the server waits for a client's `disco#info` answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The namespace of data forms (XEP-0004).
const DATA_FORMS: &str = "jabber:x:data";

/// The `mod_caps` module.
pub struct Mod {
    services: Services,
}

/// The module, for the module manager.
pub fn module(services: &Services) -> Arc<dyn Module> {
    Arc::new(Mod {
        services: services.clone(),
    })
}

/// The verified features of each `ver`, and the `ver`s being asked.
struct Cache {
    max: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    features: HashMap<String, Arc<Vec<String>>>,
    /// Insertion order, for evicting the oldest.
    order: VecDeque<String>,
    querying: HashSet<String>,
}

impl Cache {
    fn get(&self, ver: &str) -> Option<Arc<Vec<String>>> {
        self.inner.lock().features.get(ver).cloned()
    }

    /// Marks `ver` as being asked, unless it is known or asked already.
    fn start_query(&self, ver: &str) -> bool {
        let mut c = self.inner.lock();
        if c.features.contains_key(ver) || c.querying.contains(ver) {
            return false;
        }
        c.querying.insert(ver.to_owned())
    }

    /// Ends the query of `ver`, keeping `features` if it verified.
    fn end_query(&self, ver: &str, features: Option<Vec<String>>) {
        let mut c = self.inner.lock();
        c.querying.remove(ver);
        let Some(features) = features else { return };
        if self.max == 0 {
            return;
        }
        if c.features
            .insert(ver.to_owned(), Arc::new(features))
            .is_none()
        {
            c.order.push_back(ver.to_owned());
        }
        while c.features.len() > self.max {
            match c.order.pop_front() {
                Some(old) => {
                    c.features.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// The caches of the running instances of the module: per server (the
/// address of its shared configuration, as tests run several servers in
/// one process) and host.
static CACHES: LazyLock<DashMap<(usize, String), Arc<Cache>>> = LazyLock::new(DashMap::new);

fn cache_key(services: &Services, host: &str) -> (usize, String) {
    (Arc::as_ptr(&services.config) as usize, host.to_owned())
}

/// The `sha-1` caps (`node`, `ver`) a presence announces, if any.
fn caps_of(presence: &Element) -> Option<(String, String)> {
    let c = presence.get_child("c", ns::CAPS)?;
    if c.attr("hash") != Some("sha-1") {
        return None;
    }
    let node = c.attr("node")?;
    let ver = c.attr("ver")?;
    if ver.is_empty() {
        return None;
    }
    Some((node.to_owned(), ver.to_owned()))
}

/// The features of the session `jid` (a local account's full JID), as its
/// last available presence announced them (XEP-0115) and this node
/// verified them; `None` if the session is unavailable, announced no
/// (sha-1) caps, or its `ver` is not known (yet), or `mod_caps` does not
/// run on the JID's host.
pub fn features_of(services: &Services, jid: &FullJid) -> Option<Vec<String>> {
    let host = jid.domain().as_str();
    let cache = CACHES.get(&cache_key(services, host))?.value().clone();
    let user = jid.node()?;
    let session = services
        .sm
        .sessions_of(host, user.as_str())
        .into_iter()
        .filter(|s| s.resource == jid.resource().as_str())
        .max_by_key(|s| s.started_ms)?;
    let presence = Element::parse(session.presence?.as_bytes())?;
    let (_, ver) = caps_of(&presence)?;
    cache.get(&ver).map(|f| f.as_ref().clone())
}

/// The features of a `disco#info` answer if it hashes to `ver` under the
/// rules of XEP-0115 §5.4, else `None`.
pub fn verified_features(answer: &Element, ver: &str) -> Option<Vec<String>> {
    if answer.attr("type") != Some("result") {
        return None;
    }
    let query = answer.get_child("query", ns::DISCO_INFO)?;
    let mut identities = Vec::new();
    let mut features = Vec::new();
    let mut forms: Vec<InfoForm> = Vec::new();
    for child in query.children() {
        if child.is("identity", ns::DISCO_INFO) {
            identities.push(Identity {
                category: child.attr("category").unwrap_or_default().to_owned(),
                kind: child.attr("type").unwrap_or_default().to_owned(),
                lang: child.attr("xml:lang").unwrap_or_default().to_owned(),
                name: child.attr("name").unwrap_or_default().to_owned(),
            });
        } else if child.is("feature", ns::DISCO_INFO) {
            features.push(child.attr("var").unwrap_or_default().to_owned());
        } else if child.is("x", DATA_FORMS) {
            if let Some(form) = info_form(child) {
                if forms.iter().any(|f| f.form_type == form.form_type) {
                    // §5.4 3.5: two forms of one FORM_TYPE.
                    return None;
                }
                forms.push(form);
            }
        }
    }
    // §5.4 3.3 and 3.4: duplicate identities or features.
    let mut ids = identities.clone();
    ids.sort();
    ids.dedup();
    let mut feats = features.clone();
    feats.sort();
    feats.dedup();
    if ids.len() != identities.len() || feats.len() != features.len() {
        return None;
    }
    (caps_ver(&identities, &features, &forms) == ver).then_some(feats)
}

/// An extended information form (XEP-0128) for hashing: `None` for a form
/// without a hidden `FORM_TYPE` field (left out, §5.4 3.6).
fn info_form(x: &Element) -> Option<InfoForm> {
    let mut form_type = None;
    let mut fields = Vec::new();
    for field in x.children().filter(|c| c.is("field", DATA_FORMS)) {
        let var = field.attr("var").unwrap_or_default();
        let values: Vec<String> = field
            .children()
            .filter(|v| v.is("value", DATA_FORMS))
            .map(Element::text)
            .collect();
        if var == "FORM_TYPE" {
            if field.attr("type") != Some("hidden") {
                return None;
            }
            form_type = values.into_iter().next();
        } else {
            fields.push((var.to_owned(), values));
        }
    }
    Some(InfoForm {
        form_type: form_type?,
        fields,
    })
}

/// Asks `jid` `disco#info` at `node#ver` and caches what verifies.
async fn query(
    services: Services,
    cache: Arc<Cache>,
    host: String,
    jid: FullJid,
    node: String,
    ver: String,
) {
    let iq = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .attr("from", host)
        .attr("to", jid.to_string())
        .append(
            Element::builder("query", ns::DISCO_INFO)
                .attr("node", format!("{node}#{ver}"))
                .build(),
        )
        .build();
    let features = match services.router.request(iq, QUERY_TIMEOUT).await {
        Ok(answer) => {
            let f = verified_features(&answer, &ver);
            if f.is_none() {
                tracing::debug!(jid = %jid, ver, "caps: the disco#info answer does not verify");
            }
            f
        }
        Err(e) => {
            tracing::debug!(jid = %jid, ver, error = %e, "caps: no disco#info answer");
            None
        }
    };
    cache.end_query(&ver, features);
}

impl Module for Mod {
    fn name(&self) -> &str {
        "mod_caps"
    }

    fn default_options(&self) -> ModuleOptions {
        let mut o = ModuleOptions::new();
        o.insert("cache_size".into(), json!(1000));
        o
    }

    fn validate_options(&self, opts: &ModuleOptions) -> Result<(), String> {
        if opt_u64(opts, "cache_size").is_none() {
            return Err("`cache_size` must be a number of entries".into());
        }
        Ok(())
    }

    fn start(&self, ctx: &ModuleContext, opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let services = self.services.clone();
        let host = ctx.host().to_owned();
        let max =
            usize::try_from(opt_u64(opts, "cache_size").unwrap_or(1000)).unwrap_or(usize::MAX);
        let key = cache_key(&services, &host);
        let cache = Arc::new(Cache {
            max,
            inner: Mutex::new(CacheInner::default()),
        });
        CACHES.insert(key.clone(), cache.clone());
        ctx.on_stop(move || {
            CACHES.remove(&key);
        });
        Ok(holder_tree(
            ctx.module(),
            Arc::new(move |cell| {
                let services = services.clone();
                let cache = cache.clone();
                let host = host.clone();
                let hooks = services.hooks.clone();
                let scope_host = host.clone();
                hooks
                    .subscribe_answer(
                        &USER_SEND_PACKET,
                        Scope::Host(&scope_host),
                        50,
                        Some(cell),
                        move |info: Arc<SessionInfo>, acc: Option<Element>| {
                            if let Some(st) = &acc {
                                let own_available = st.name() == "presence"
                                    && st.attr("to").is_none()
                                    && st.attr("type").is_none();
                                if let Some((node, ver)) =
                                    own_available.then(|| caps_of(st)).flatten()
                                    && cache.start_query(&ver)
                                {
                                    tokio::spawn(query(
                                        services.clone(),
                                        cache.clone(),
                                        host.clone(),
                                        info.jid.clone(),
                                        node,
                                        ver,
                                    ));
                                }
                            }
                            Answer::Now(Flow::Continue(acc))
                        },
                    )
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(var: &str) -> Element {
        Element::builder("feature", ns::DISCO_INFO)
            .attr("var", var)
            .build()
    }

    fn answer(children: Vec<Element>) -> Element {
        Element::builder("iq", ns::JABBER_CLIENT)
            .attr("type", "result")
            .append(
                Element::builder("query", ns::DISCO_INFO)
                    .append_all(children)
                    .build(),
            )
            .build()
    }

    // XEP-0115 §5.2, the simple example.
    const EXAMPLE_VER: &str = "QgayPKawpkPSDYmwT/WM94uAlu0=";

    fn example() -> Vec<Element> {
        vec![
            Element::builder("identity", ns::DISCO_INFO)
                .attr("category", "client")
                .attr("type", "pc")
                .attr("name", "Exodus 0.9.1")
                .build(),
            feature("http://jabber.org/protocol/caps"),
            feature("http://jabber.org/protocol/disco#info"),
            feature("http://jabber.org/protocol/disco#items"),
            feature("http://jabber.org/protocol/muc"),
        ]
    }

    #[test]
    fn the_xep_example_verifies() {
        let f = verified_features(&answer(example()), EXAMPLE_VER).unwrap();
        assert_eq!(f.len(), 4);
        assert!(verified_features(&answer(example()), "wrong=").is_none());
    }

    #[test]
    fn duplicate_features_do_not_verify() {
        let mut children = example();
        children.push(feature("http://jabber.org/protocol/muc"));
        assert!(verified_features(&answer(children), EXAMPLE_VER).is_none());
    }

    #[test]
    fn the_cache_keeps_the_newest() {
        let c = Cache {
            max: 2,
            inner: Mutex::new(CacheInner::default()),
        };
        for v in ["a", "b", "c"] {
            assert!(c.start_query(v));
            assert!(!c.start_query(v));
            c.end_query(v, Some(vec![v.to_owned()]));
        }
        assert!(c.get("a").is_none());
        assert!(c.get("c").is_some());
        assert!(c.start_query("x"));
        c.end_query("x", None);
        assert!(c.get("x").is_none());
        assert!(c.start_query("x"));
    }
}
