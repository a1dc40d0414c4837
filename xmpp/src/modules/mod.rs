//! The server's features as modules (ejabberd's `gen_mod`s): each is a
//! [`Module`] of the supervision crate, started per virtual host by the
//! module manager with its options from `[modules.NAME]`, and stopped or
//! reloaded at runtime (`beamline ctl start-module/stop-module/...`).
//!
//! A module's tree is usually one holder actor ([`holder_tree`]) whose
//! start subscribes the module's hooks with the holder as owner (so they
//! end with it) and registers its IQ handlers and disco features; the
//! cleanups for those go to [`ModuleContext::on_stop`]. Everything a
//! module may use is in [`Services`].
//!
//! Each module lives in its own file in this directory and is listed in
//! [`builtin_modules`].

pub mod blocking;
pub mod caps;
pub mod disco;
pub mod offline;
pub mod ping;
pub mod presence;
pub mod private;
pub mod register;
pub mod roster;
pub mod time;
pub mod vcard;
pub mod version;

use std::collections::BTreeSet;
use std::sync::Arc;

use beamline_runtime::hooks::Hooks;
use beamline_storage::backend::Backend;
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};
use dashmap::DashMap;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use crate::access::Access;
use crate::config::Config;
use crate::jid;
use crate::ns;
use crate::router::{IqHandler, Router};
use crate::sm::SessionManager;
use crate::stanza_error::{StanzaError, StanzaErrorCondition, error_reply};
use crate::xml::Element;

/// What a module may use: the server's shared services. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    /// The router: route stanzas, register IQ handlers.
    pub router: Router,
    /// The hook registry.
    pub hooks: Hooks,
    /// The session manager: who is online where.
    pub sm: SessionManager,
    /// Persistent data (accounts, per-user maps, queues, documents).
    pub backend: Arc<dyn Backend>,
    /// The configuration the server runs with.
    pub config: Arc<Config>,
    /// ACLs, access rules and limits.
    pub access: Access,
    /// Service discovery features per host.
    pub disco: DiscoRegistry,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("hosts", &self.config.hosts)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Registers `handler` for IQ requests in namespace `ns` to `host` (or
    /// its accounts' bare JIDs), announces `ns` as a disco feature of the
    /// host when `feature` is set, and undoes both when the module stops.
    pub fn iq_handler(&self, ctx: &ModuleContext, ns: &'static str, feature: bool, h: IqHandler) {
        let host = ctx.host().to_owned();
        self.router.register_iq_handler(&host, ns, h);
        if feature {
            self.disco.add_feature(&host, ns);
        }
        let router = self.router.clone();
        let disco = self.disco.clone();
        ctx.on_stop(move || {
            router.unregister_iq_handler(&host, ns);
            if feature {
                disco.remove_feature(&host, ns);
            }
        });
    }

    /// Announces `feature` on the host until the module stops.
    pub fn feature(&self, ctx: &ModuleContext, feature: &'static str) {
        let host = ctx.host().to_owned();
        self.disco.add_feature(&host, feature);
        let disco = self.disco.clone();
        ctx.on_stop(move || disco.remove_feature(&host, feature));
    }
}

/// The service discovery features of each host (XEP-0030), kept by the
/// modules that provide them: the disco module lists them.
#[derive(Debug, Clone, Default)]
pub struct DiscoRegistry {
    features: Arc<DashMap<String, BTreeSet<String>>>,
}

impl DiscoRegistry {
    /// Adds a feature of `host`.
    pub fn add_feature(&self, host: &str, feature: &str) {
        self.features
            .entry(host.to_owned())
            .or_default()
            .insert(feature.to_owned());
    }

    /// Removes a feature of `host`.
    pub fn remove_feature(&self, host: &str, feature: &str) {
        if let Some(mut set) = self.features.get_mut(host) {
            set.remove(feature);
        }
    }

    /// The features of `host`, sorted.
    pub fn features(&self, host: &str) -> Vec<String> {
        self.features
            .get(host)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// What a holder's start does: subscribe hooks (with the holder's cell as
/// owner), register handlers. Runs again at each restart of the holder.
pub type Setup = Arc<dyn Fn(ActorCell) -> Result<(), String> + Send + Sync>;

/// An actor that only holds a module's registrations: they are owned by
/// it and end when it stops.
#[derive(Debug, Clone, Copy)]
pub struct Holder;

impl Actor for Holder {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// A module tree of one [`Holder`] named `id`; `setup` runs once the
/// holder is alive, with its cell.
pub fn holder_tree(id: &str, setup: Setup) -> ChildSpec {
    ChildSpec::new(id.to_owned(), move |sup| {
        let setup = setup.clone();
        async move {
            let (holder, _) = Actor::spawn_linked(None, Holder, (), sup).await?;
            let cell = holder.get_cell();
            if let Err(e) = setup(cell.clone()) {
                holder.stop(None);
                return Err(ractor::SpawnErr::StartupFailed(e.into()));
            }
            Ok(cell)
        }
    })
}

/// Reads a boolean option.
pub fn opt_bool(opts: &ModuleOptions, key: &str) -> Option<bool> {
    opts.get(key).and_then(|v| v.as_bool())
}

/// Reads an unsigned integer option.
pub fn opt_u64(opts: &ModuleOptions, key: &str) -> Option<u64> {
    opts.get(key).and_then(|v| v.as_u64())
}

/// Reads a string option.
pub fn opt_str<'a>(opts: &'a ModuleOptions, key: &str) -> Option<&'a str> {
    opts.get(key).and_then(|v| v.as_str())
}

/// A `result` reply to an IQ request: `to` the request's `from`, `from`
/// its `to`, same `id`, with `payload` as child if any.
pub fn iq_result(req: &Element, payload: Option<Element>) -> Element {
    let mut reply = Element::new("iq", ns::JABBER_CLIENT);
    if let Some(from) = req.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = req.attr("to") {
        reply.set_attr("from", to);
    }
    reply.set_attr("type", "result");
    if let Some(id) = req.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(p) = payload {
        reply.append_child(p);
    }
    reply
}

/// An error reply to an IQ request with `condition`.
pub fn iq_error(req: &Element, condition: StanzaErrorCondition) -> Option<Element> {
    error_reply(req, &StanzaError::new(condition), false)
}

/// An error reply with a descriptive text.
pub fn iq_error_text(
    req: &Element,
    condition: StanzaErrorCondition,
    text: &str,
) -> Option<Element> {
    error_reply(
        req,
        &StanzaError::new(condition).with_text(text, Some("en")),
        false,
    )
}

/// Whether the IQ is addressed to an account (its `to` has a local part).
pub fn to_account(req: &Element) -> bool {
    req.attr("to")
        .and_then(|t| jid::parse(t).ok())
        .is_some_and(|j| j.node().is_some())
}

/// [`iq_error`] as an element (an IQ request is never an error, so there
/// always is a reply; the fallback is unreachable).
pub fn iq_error_reply(req: &Element, condition: StanzaErrorCondition) -> Element {
    iq_error(req, condition).unwrap_or_else(|| req.clone())
}

/// Every module this build has, ready for the module manager.
pub fn builtin_modules(services: &Services) -> Vec<Arc<dyn Module>> {
    vec![
        roster::module(services),
        presence::module(services),
        offline::module(services),
        disco::module(services),
        ping::module(services),
        version::module(services),
        time::module(services),
        vcard::module(services),
        private::module(services),
        blocking::module(services),
        register::module(services),
        caps::module(services),
    ]
}

/// The modules a configuration without `[modules]` runs: the ones a
/// chat client expects (in-band registration is left out: it lets anyone
/// create accounts).
pub const DEFAULT_MODULES: [&str; 11] = [
    "mod_roster",
    "mod_presence",
    "mod_offline",
    "mod_disco",
    "mod_ping",
    "mod_version",
    "mod_time",
    "mod_vcard",
    "mod_private",
    "mod_blocking",
    "mod_caps",
];

/// The names of [`builtin_modules`], for checking `[modules]`.
pub fn builtin_names(services: &Services) -> Vec<String> {
    builtin_modules(services)
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}
