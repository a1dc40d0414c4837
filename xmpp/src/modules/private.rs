//! `mod_private`: Private XML Storage (XEP-0049), as ejabberd's
//! `mod_private`.
//!
//! A user stores and reads back XML fragments on the server, one entry per
//! namespace of the fragment's root (bookmarks, client preferences):
//! `<iq type='set'><query xmlns='jabber:iq:private'><exodus
//! xmlns='exodus:prefs'>...</exodus></query></iq>`.
//!
//! Rules:
//! - only the user's own account (`to` absent, which c2s turns into the
//!   user's bare JID, or that bare JID); anything else is `forbidden`
//!   (XEP-0049 prefers it to `service-unavailable`), the server's domain
//!   too;
//! - a query without a child element is `not-acceptable` (XEP-0049 §2.3);
//! - a namespace that starts with `jabber:` is reserved: `not-acceptable`
//!   (the optional error of XEP-0049);
//! - a set may hold several elements, also of one namespace: the elements
//!   of one namespace replace what was stored for it, together;
//! - a get answers, for each child asked for, what is stored for its
//!   namespace, or the empty element asked for when nothing is.
//!
//! Storage: the per-user map `private` of the backend, keyed by namespace,
//! the value being `<query xmlns='jabber:iq:private'>` with the stored
//! elements, as UTF-8 XML. `remove_user` deletes the map.

use std::sync::Arc;

use beamline_runtime::hooks::{Flow, Scope};
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};

use super::{Services, holder_tree};
use super::{iq_error_reply, iq_result};
use crate::hooks::REMOVE_USER;
use crate::ns;
use crate::stanza_error::StanzaErrorCondition;
use crate::xml::Element;

/// The backend map that holds the stored fragments, keyed by namespace.
const MAP: &str = "private";

/// The `mod_private` module.
pub struct Mod {
    services: Services,
}

/// The module, for the module manager.
pub fn module(services: &Services) -> Arc<dyn Module> {
    Arc::new(Mod {
        services: services.clone(),
    })
}

impl Module for Mod {
    fn name(&self) -> &str {
        "mod_private"
    }

    fn start(&self, ctx: &ModuleContext, _opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let services = self.services.clone();
        let handler_services = services.clone();
        services.iq_handler(
            ctx,
            ns::PRIVATE,
            true,
            Arc::new(move |iq| {
                let services = handler_services.clone();
                Box::pin(async move { Some(handle(&services, iq).await) })
            }),
        );
        let host = ctx.host().to_owned();
        Ok(holder_tree(
            ctx.module(),
            Arc::new(move |cell| {
                let backend = services.backend.clone();
                services
                    .hooks
                    .subscribe_fn(
                        &REMOVE_USER,
                        Scope::Host(&host),
                        50,
                        Some(cell),
                        move |account, ()| {
                            let backend = backend.clone();
                            async move {
                                if let Ok(entries) =
                                    backend.map_all(&account.host, &account.user, MAP).await
                                {
                                    for (key, _) in entries {
                                        let _ = backend
                                            .map_delete(&account.host, &account.user, MAP, &key)
                                            .await;
                                    }
                                }
                                Flow::Continue(())
                            }
                        },
                    )
                    .map_err(|e| e.to_string())?;
                Ok(())
            }),
        ))
    }
}

/// The `(user, host)` of a JID string that names an account, if it does.
pub(crate) fn account_of(jid: &str) -> Option<(String, String)> {
    let jid = crate::jid::parse(jid).ok()?;
    let node = jid.node()?;
    Some((node.to_string(), jid.domain().to_string()))
}

/// Whether the sender (`from`) is the account the IQ is addressed to
/// (`to`, a bare JID): the account's `(user, host)` if so.
pub(crate) fn own_account(iq: &Element) -> Option<(String, String)> {
    let from = account_of(iq.attr("from")?)?;
    let to = crate::jid::parse(iq.attr("to")?).ok()?;
    if to.resource().is_some() {
        return None;
    }
    let to = (to.node()?.to_string(), to.domain().to_string());
    (from == to).then_some(from)
}

/// Parses XML this server stored (written by [`Element::to_bytes`]) back
/// into an element; `None` if it is not one well-formed element.
pub(crate) fn decode_stored(bytes: &[u8]) -> Option<Element> {
    Element::parse(bytes)
}

/// Whether a namespace is reserved (XEP-0049 §2.3): `jabber:*`.
fn reserved(namespace: &str) -> bool {
    namespace.starts_with("jabber:")
}

async fn handle(services: &Services, iq: Element) -> Element {
    let Some((user, host)) = own_account(&iq) else {
        return iq_error_reply(&iq, StanzaErrorCondition::Forbidden);
    };
    let Some(query) = iq.get_child("query", ns::PRIVATE) else {
        return iq_error_reply(&iq, StanzaErrorCondition::BadRequest);
    };
    let items: Vec<&Element> = query.children().collect();
    if items.is_empty() {
        return iq_error_reply(&iq, StanzaErrorCondition::NotAcceptable);
    }
    if items.iter().any(|e| reserved(e.ns())) {
        return iq_error_reply(&iq, StanzaErrorCondition::NotAcceptable);
    }
    let backend = &services.backend;
    if iq.attr("type") == Some("set") {
        // Group by namespace, in order of first appearance.
        let mut groups: Vec<(String, Element)> = Vec::new();
        for item in items {
            let namespace = item.ns().to_owned();
            match groups.iter_mut().find(|(n, _)| *n == namespace) {
                Some((_, q)) => {
                    q.append_child(item.clone());
                }
                None => {
                    let mut q = Element::new("query", ns::PRIVATE);
                    q.append_child(item.clone());
                    groups.push((namespace, q));
                }
            }
        }
        for (namespace, q) in groups {
            if let Err(e) = backend
                .map_put(&host, &user, MAP, &namespace, q.to_bytes())
                .await
            {
                tracing::warn!(%user, %host, error = %e, "private storage: write failed");
                return iq_error_reply(&iq, StanzaErrorCondition::InternalServerError);
            }
        }
        return iq_result(&iq, None);
    }
    let mut out = Element::new("query", ns::PRIVATE);
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        if seen.contains(&item.ns()) {
            continue;
        }
        seen.push(item.ns());
        match backend.map_get(&host, &user, MAP, item.ns()).await {
            Ok(Some(bytes)) => match decode_stored(&bytes) {
                Some(stored) => {
                    for child in stored.children() {
                        out.append_child(child.clone());
                    }
                }
                None => {
                    tracing::warn!(%user, %host, "private storage: unreadable entry");
                    out.append_child(Element::new(item.name().to_owned(), ns::intern(item.ns())));
                }
            },
            Ok(None) => {
                out.append_child(Element::new(item.name().to_owned(), ns::intern(item.ns())));
            }
            Err(e) => {
                tracing::warn!(%user, %host, error = %e, "private storage: read failed");
                return iq_error_reply(&iq, StanzaErrorCondition::InternalServerError);
            }
        }
    }
    let mut reply = iq_result(&iq, None);
    reply.append_child(out);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_xml_reads_back() {
        let el = Element::builder("query", ns::PRIVATE)
            .append(
                Element::builder("storage", "storage:bookmarks")
                    .append(
                        Element::builder("conference", "storage:bookmarks")
                            .attr("jid", "room@muc.example")
                            .attr("name", "a <b> & 'c'")
                            .build(),
                    )
                    .build(),
            )
            .build();
        let back = decode_stored(&el.to_bytes()).expect("parses");
        assert_eq!(back, el);
        assert!(decode_stored(b"<a><b></a>").is_none());
        assert!(decode_stored(b"").is_none());
    }

    #[test]
    fn jabber_namespaces_are_reserved() {
        assert!(reserved("jabber:iq:roster"));
        assert!(!reserved("storage:bookmarks"));
    }
}
