//! `mod_vcard`: vcard-temp (XEP-0054), as ejabberd's `mod_vcard`.
//!
//! - `get` to an account's bare JID (or no `to`: one's own): the stored
//!   `<vCard xmlns='vcard-temp'/>`, or an empty one when none is stored
//!   (XEP-0054 §3.1 allows either that or `item-not-found`; ejabberd
//!   answers empty). Anyone may read an existing account's vCard; for an
//!   account that does not exist the router answers
//!   `service-unavailable`.
//! - `set`: only on one's own account (`to` absent or one's bare JID),
//!   else `forbidden`; the `<vCard/>` replaces the stored one. A vCard
//!   larger than the option `max_size` (bytes of XML, default 65,536) is
//!   refused with `not-acceptable`. ejabberd has no such option: its
//!   bound is the stanza size (`max_stanza_size`), which the default here
//!   equals.
//! - `get` to the server's domain: the server's own vCard (name, a short
//!   description, the project's address), as ejabberd's; `set` there is
//!   `not-allowed`.
//! - Disco feature `vcard-temp`; [`REMOVE_USER`] deletes the vCard.
//!
//! Storage: the per-user document `vcard`, the `<vCard/>` as UTF-8 XML.

use std::sync::Arc;

use beamline_runtime::hooks::{Flow, Scope};
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};

use super::private::{decode_stored, own_account};
use super::{Services, holder_tree, opt_u64};
use super::{iq_error_reply, iq_result};
use crate::hooks::REMOVE_USER;
use crate::ns;
use crate::stanza_error::{StanzaError, StanzaErrorCondition, error_reply};
use crate::xml::Element;

/// The per-user document that holds the vCard.
const DOC: &str = "vcard";

/// Default of `max_size`: 64 KiB, the default stanza size limit.
const DEFAULT_MAX_SIZE: u64 = 65_536;

/// The `mod_vcard` module.
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
        "mod_vcard"
    }

    fn default_options(&self) -> ModuleOptions {
        let mut o = ModuleOptions::new();
        o.insert("max_size".into(), DEFAULT_MAX_SIZE.into());
        o
    }

    fn validate_options(&self, opts: &ModuleOptions) -> Result<(), String> {
        match opts.get("max_size") {
            Some(v) if v.as_u64().is_some_and(|n| n > 0) => Ok(()),
            _ => Err("max_size must be a positive number of bytes".into()),
        }
    }

    fn start(&self, ctx: &ModuleContext, opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let services = self.services.clone();
        let max_size = usize::try_from(opt_u64(opts, "max_size").unwrap_or(DEFAULT_MAX_SIZE))
            .unwrap_or(usize::MAX);
        let handler_services = services.clone();
        services.iq_handler(
            ctx,
            ns::VCARD,
            true,
            Arc::new(move |iq| {
                let services = handler_services.clone();
                Box::pin(async move { Some(handle(&services, iq, max_size).await) })
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
                                let _ = backend.doc_delete(&account.host, &account.user, DOC).await;
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

/// The server's own vCard.
fn server_vcard() -> Element {
    let field = |name: &str, text: &str| {
        Element::builder(name.to_owned(), ns::VCARD)
            .text(text)
            .build()
    };
    Element::builder("vCard", ns::VCARD)
        .append(field("FN", "beamline"))
        .append(field("DESC", "XMPP server"))
        .build()
}

async fn handle(services: &Services, iq: Element, max_size: usize) -> Element {
    let Some(vcard) = iq.get_child("vCard", ns::VCARD) else {
        return iq_error_reply(&iq, StanzaErrorCondition::BadRequest);
    };
    let to = iq.attr("to").and_then(|t| crate::jid::parse(t).ok());
    let Some(to) = to else {
        return iq_error_reply(&iq, StanzaErrorCondition::BadRequest);
    };
    let set = iq.attr("type") == Some("set");
    let Some(node) = to.node() else {
        // The server itself.
        if set {
            return iq_error_reply(&iq, StanzaErrorCondition::NotAllowed);
        }
        let mut reply = iq_result(&iq, None);
        reply.append_child(server_vcard());
        return reply;
    };
    let (user, host) = (node.to_string(), to.domain().to_string());
    let backend = &services.backend;
    if set {
        if own_account(&iq).is_none() {
            return iq_error_reply(&iq, StanzaErrorCondition::Forbidden);
        }
        let bytes = vcard.to_bytes();
        if bytes.len() > max_size {
            let error = StanzaError::new(StanzaErrorCondition::NotAcceptable).with_text(
                format!("The vCard is larger than {max_size} bytes"),
                Some("en"),
            );
            return error_reply(&iq, &error, false).unwrap_or_else(|| iq.clone());
        }
        if let Err(e) = backend.doc_put(&host, &user, DOC, bytes).await {
            tracing::warn!(%user, %host, error = %e, "vCard: write failed");
            return iq_error_reply(&iq, StanzaErrorCondition::InternalServerError);
        }
        return iq_result(&iq, None);
    }
    let stored = match backend.doc_get(&host, &user, DOC).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%user, %host, error = %e, "vCard: read failed");
            return iq_error_reply(&iq, StanzaErrorCondition::InternalServerError);
        }
    };
    let vcard = stored
        .and_then(|b| decode_stored(&b))
        .unwrap_or_else(|| Element::new("vCard", ns::VCARD));
    let mut reply = iq_result(&iq, None);
    reply.append_child(vcard);
    reply
}
