//! `mod_version`: Software version (XEP-0092), as ejabberd's
//! `mod_version`: a `get` to the server answers the name `beamline`, this
//! build's version and, with `show_os = true`, the operating system
//! (default `false`, as ejabberd, so as not to tell attackers more than
//! needed). A `set` is `not-allowed`; a request to an account's bare JID
//! is not the server's to answer (`service-unavailable`).

use std::sync::Arc;

use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};
use serde_json::json;

use super::{Services, holder_tree, opt_bool};
use super::{iq_error, iq_result, to_account};
use crate::ns;
use crate::stanza_error::StanzaErrorCondition;
use crate::xml::Element;

/// The software name the server gives.
pub const NAME: &str = "beamline";

/// The `mod_version` module.
pub struct Mod {
    services: Services,
}

/// The module, for the module manager.
pub fn module(services: &Services) -> Arc<dyn Module> {
    Arc::new(Mod {
        services: services.clone(),
    })
}

/// The operating system as `os/release` (e.g. `linux 6.1.0`), read once.
fn os_description() -> String {
    let os = std::env::consts::OS;
    match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(release) if !release.trim().is_empty() => format!("{os} {}", release.trim()),
        _ => os.to_owned(),
    }
}

/// The `<query xmlns='jabber:iq:version'/>` of the answer.
pub fn version_query(os: Option<&str>) -> Element {
    let mut q = Element::new("query", ns::VERSION);
    q.append_child(Element::builder("name", ns::VERSION).text(NAME).build());
    q.append_child(
        Element::builder("version", ns::VERSION)
            .text(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    if let Some(os) = os {
        q.append_child(Element::builder("os", ns::VERSION).text(os).build());
    }
    q
}

impl Module for Mod {
    fn name(&self) -> &str {
        "mod_version"
    }

    fn default_options(&self) -> ModuleOptions {
        let mut o = ModuleOptions::new();
        o.insert("show_os".into(), json!(false));
        o
    }

    fn validate_options(&self, opts: &ModuleOptions) -> Result<(), String> {
        opt_bool(opts, "show_os")
            .map(|_| ())
            .ok_or_else(|| "`show_os` must be true or false".to_owned())
    }

    fn start(&self, ctx: &ModuleContext, opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let os: Option<Arc<str>> = opt_bool(opts, "show_os")
            .unwrap_or(false)
            .then(|| os_description().into());
        self.services.iq_handler(
            ctx,
            ns::VERSION,
            true,
            Arc::new(move |req| {
                let os = os.clone();
                Box::pin(async move {
                    if to_account(&req) {
                        return iq_error(&req, StanzaErrorCondition::ServiceUnavailable);
                    }
                    if req.attr("type") != Some("get") {
                        return iq_error(&req, StanzaErrorCondition::NotAllowed);
                    }
                    Some(iq_result(&req, Some(version_query(os.as_deref()))))
                })
            }),
        );
        Ok(holder_tree(ctx.module(), Arc::new(|_| Ok(()))))
    }
}
