//! `mod_register`: In-band registration (XEP-0077), as ejabberd's
//! `mod_register`. Not among the default modules: it lets strangers create
//! accounts.
//!
//! Before authentication (only where SASL is offered, so never before a
//! required STARTTLS):
//! - the stream features carry `<register
//!   xmlns='http://jabber.org/features/iq-register'/>` when the `access`
//!   rule allows the client's address;
//! - `get` answers the form (instructions, username, password);
//! - `set` with username and password creates the account (SCRAM keys
//!   only) and runs `register_user`. Errors: `not-acceptable` (a field
//!   missing or empty, a user name that fails nodeprep, a password that
//!   fails SASLprep), `not-allowed` (the `access` rule denies the address,
//!   or a `<remove/>` before authentication), `resource-constraint` (this
//!   address registered an account less than `registration_timeout`
//!   seconds ago), `conflict` (the account exists).
//!
//! After authentication (`jabber:iq:register` to the server or to the
//! user's own bare JID, or without `to`):
//! - `get` answers the form with `<registered/>` and the user name;
//! - `set` with the user's own name and a new password changes it
//!   (another name: `not-allowed`; a field missing or empty:
//!   `bad-request`, XEP-0077 §3.3);
//! - `set` with `<remove/>` alone (else `bad-request`), if `access_remove`
//!   allows the user (else `forbidden`), answers the result, removes the
//!   account and its data, closes its sessions with the stream error
//!   `not-authorized` (XEP-0077 §3.2; text "Account removed") and runs
//!   `remove_user`, as `beamline ctl unregister` does.
//!
//! Access rules: `access` (default `"register"`) and `access_remove`
//! (default `"all"`); the names `all` and `none` mean allow and deny
//! everyone, another name is an `[access_rules]` rule, and a rule that is
//! not defined denies. `access` is evaluated on the requested account
//! (`user@host`) and the client's address; the `<register/>` feature is
//! offered when it allows the address and host alone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beamline_runtime::hooks::{Flow, Scope};
use beamline_storage::backend::BackendError;
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};
use parking_lot::Mutex;
use serde_json::json;

use super::{Services, holder_tree, opt_str, opt_u64};
use super::{iq_error, iq_error_text, iq_result};
use crate::access::Subject;
use crate::c2s::C2sMsg;
use crate::hooks::{
    Account, C2S_PRE_AUTH_FEATURES, C2S_UNAUTHENTICATED_IQ, PreAuth, REGISTER_USER, REMOVE_USER,
};
use crate::jid::{self, NodePart};
use crate::ns;
use crate::stanza_error::StanzaErrorCondition;
use crate::stream_error::StreamErrorCondition;
use crate::xml::Element;

/// The instructions of the registration form (ejabberd's wording).
pub const INSTRUCTIONS: &str = "Choose a username and password to register with this server";

/// The `mod_register` module.
pub struct Mod {
    services: Services,
}

/// The module, for the module manager.
pub fn module(services: &Services) -> Arc<dyn Module> {
    Arc::new(Mod {
        services: services.clone(),
    })
}

/// The state of the module on one host.
struct Register {
    services: Services,
    host: String,
    access: String,
    access_remove: String,
    /// One registration per address per this long (`None`: no limit).
    timeout: Option<Duration>,
    /// When each address last registered an account.
    recent: Mutex<HashMap<IpAddr, Instant>>,
}

/// The registration form: instructions (before registering), user name,
/// empty password, and `<registered/>` for an existing account.
fn form(registered_as: Option<&str>) -> Element {
    let mut q = Element::new("query", ns::REGISTER);
    match registered_as {
        Some(user) => {
            q.append_child(Element::new("registered", ns::REGISTER));
            q.append_child(
                Element::builder("username", ns::REGISTER)
                    .text(user)
                    .build(),
            );
        }
        None => {
            q.append_child(
                Element::builder("instructions", ns::REGISTER)
                    .text(INSTRUCTIONS)
                    .build(),
            );
            q.append_child(Element::new("username", ns::REGISTER));
        }
    }
    q.append_child(Element::new("password", ns::REGISTER));
    q
}

/// The `<query/>` of a register IQ when it is the IQ's only child.
fn query(req: &Element) -> Option<&Element> {
    let mut children = req.children();
    let q = children.next()?;
    (q.is("query", ns::REGISTER) && children.next().is_none()).then_some(q)
}

/// A field's text, when present and not empty.
fn field(q: &Element, name: &str) -> Option<String> {
    q.child_text(name, ns::REGISTER).filter(|s| !s.is_empty())
}

impl Register {
    fn allowed(&self, rule: &str, s: &Subject<'_>) -> bool {
        match rule {
            "all" => true,
            "none" => false,
            r => self.services.access.allow(r, s),
        }
    }

    fn may_register(&self, ip: Option<IpAddr>) -> bool {
        self.allowed(&self.access, &Subject::ip(ip).with_server(&self.host))
    }

    /// Reserves the address's registration slot; `false` if it registered
    /// too recently. No address (in-memory transport): no limit.
    fn reserve(&self, ip: Option<IpAddr>) -> bool {
        let (Some(ip), Some(timeout)) = (ip, self.timeout) else {
            return true;
        };
        let now = Instant::now();
        let mut recent = self.recent.lock();
        recent.retain(|_, t| now.duration_since(*t) < timeout);
        if recent.contains_key(&ip) {
            return false;
        }
        recent.insert(ip, now);
        true
    }

    fn release(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.recent.lock().remove(&ip);
        }
    }

    async fn credentials(
        &self,
        password: String,
    ) -> Option<Vec<beamline_storage::backend::ScramCredential>> {
        let iterations = self.services.config.auth.scram_iterations;
        tokio::task::spawn_blocking(move || {
            crate::sasl::account_credentials(&password, iterations).ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// An IQ before authentication (`None`: not ours).
    async fn pre_auth(&self, pa: &PreAuth, req: &Element) -> Option<Element> {
        let q = query(req)?;
        match req.attr("type") {
            Some("get") => Some(iq_result(req, Some(form(None)))),
            Some("set") => {
                if q.has_child("remove", ns::REGISTER) {
                    return iq_error_text(
                        req,
                        StanzaErrorCondition::NotAllowed,
                        "Authenticate first to cancel a registration",
                    );
                }
                Some(self.create(pa.ip, req, q).await)
            }
            _ => iq_error(req, StanzaErrorCondition::BadRequest),
        }
    }

    async fn create(&self, ip: Option<IpAddr>, req: &Element, q: &Element) -> Element {
        let err =
            |c, text: &str| iq_error_text(req, c, text).unwrap_or_else(|| iq_result(req, None));
        let (Some(username), Some(password)) = (field(q, "username"), field(q, "password")) else {
            return err(
                StanzaErrorCondition::NotAcceptable,
                "A username and a password are required",
            );
        };
        let Ok(user) = NodePart::new(&username).map(|n| n.to_string()) else {
            return err(StanzaErrorCondition::NotAcceptable, "Malformed username");
        };
        // The account asked for and the address, as ejabberd matches
        // `access` on the new JID (and `ip_access` on the address).
        let subject = Subject::user(&user, &self.host).with_ip(ip);
        if !self.allowed(&self.access, &subject) {
            return err(
                StanzaErrorCondition::NotAllowed,
                "Access denied by service policy",
            );
        }
        if !self.reserve(ip) {
            return err(
                StanzaErrorCondition::ResourceConstraint,
                "Users are not allowed to register accounts so quickly",
            );
        }
        // A taken name is refused before the costly key derivation: a
        // conflict does not use up the address's slot, so it must stay
        // cheap to answer.
        if matches!(
            self.services.backend.credentials(&self.host, &user).await,
            Ok(Some(_))
        ) {
            self.release(ip);
            return err(StanzaErrorCondition::Conflict, "The username is taken");
        }
        let Some(creds) = self.credentials(password).await else {
            self.release(ip);
            return err(
                StanzaErrorCondition::NotAcceptable,
                "The password is not acceptable",
            );
        };
        match self
            .services
            .backend
            .create_user(&self.host, &user, creds)
            .await
        {
            Ok(()) => {}
            Err(BackendError::UserExists(_)) => {
                self.release(ip);
                return err(StanzaErrorCondition::Conflict, "The username is taken");
            }
            Err(e) => {
                self.release(ip);
                tracing::warn!(error = %e, "in-band registration failed");
                return err(StanzaErrorCondition::InternalServerError, "Storage failed");
            }
        }
        tracing::info!(user, host = self.host, ip = ?ip, "account registered in-band");
        let _ = self
            .services
            .hooks
            .run(
                &REGISTER_USER,
                Scope::Host(&self.host),
                Account {
                    user,
                    host: self.host.clone(),
                },
            )
            .await;
        iq_result(req, None)
    }

    /// An IQ from an authenticated user.
    async fn post_auth(&self, req: Element) -> Option<Element> {
        let from = req.attr("from").and_then(|f| jid::parse(f).ok())?;
        let user = from.node().map(|n| n.to_string()).unwrap_or_default();
        if let Some(to) = req.attr("to").and_then(|t| jid::parse(t).ok()) {
            if to.node().is_some() && to.to_bare() != from.to_bare() {
                return iq_error(&req, StanzaErrorCondition::ServiceUnavailable);
            }
        }
        let Some(q) = query(&req) else {
            return iq_error(&req, StanzaErrorCondition::BadRequest);
        };
        match req.attr("type") {
            Some("get") => Some(iq_result(&req, Some(form(Some(&user))))),
            Some("set") if q.has_child("remove", ns::REGISTER) => {
                // XEP-0077 §3.2: `<remove/>` must be the only child.
                if q.children().count() != 1 {
                    return iq_error(&req, StanzaErrorCondition::BadRequest);
                }
                self.remove(&req, &user).await
            }
            Some("set") => self.change_password(&req, q, &user).await,
            _ => iq_error(&req, StanzaErrorCondition::BadRequest),
        }
    }

    async fn change_password(&self, req: &Element, q: &Element, user: &str) -> Option<Element> {
        // XEP-0077 §3.3: incomplete information is bad-request, and an
        // empty password never replaces the current one.
        let (Some(username), Some(password)) = (field(q, "username"), field(q, "password")) else {
            return iq_error_text(
                req,
                StanzaErrorCondition::BadRequest,
                "A username and a password are required",
            );
        };
        if NodePart::new(&username)
            .map(|n| n.to_string())
            .ok()
            .as_deref()
            != Some(user)
        {
            return iq_error_text(
                req,
                StanzaErrorCondition::NotAllowed,
                "Only the account's own password can be changed",
            );
        }
        let Some(creds) = self.credentials(password).await else {
            return iq_error_text(
                req,
                StanzaErrorCondition::NotAcceptable,
                "The password is not acceptable",
            );
        };
        match self
            .services
            .backend
            .set_credentials(&self.host, user, creds)
            .await
        {
            Ok(()) => Some(iq_result(req, None)),
            Err(e) => {
                tracing::warn!(error = %e, "password change failed");
                iq_error(req, StanzaErrorCondition::InternalServerError)
            }
        }
    }

    /// Cancels the registration: the result first (the client must see
    /// it before its stream closes), then the removal.
    async fn remove(&self, req: &Element, user: &str) -> Option<Element> {
        if !self.allowed(&self.access_remove, &Subject::user(user, &self.host)) {
            return iq_error_text(
                req,
                StanzaErrorCondition::Forbidden,
                "Access denied by service policy",
            );
        }
        match self.services.backend.remove_user(&self.host, user).await {
            Ok(()) | Err(BackendError::NoSuchUser(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "account removal failed");
                return iq_error(req, StanzaErrorCondition::InternalServerError);
            }
        }
        tracing::info!(user, host = self.host, "account removed in-band");
        self.services.router.route(iq_result(req, None)).await;
        for s in self.services.sm.sessions_of(&self.host, user) {
            // Sessions on other nodes are closed by their node (they leave
            // when the account's data is gone there too).
            if s.node != self.services.sm.node() {
                continue;
            }
            if let Some(local) = self.services.sm.local(s.sid) {
                // XEP-0077 §3.2: a `<not-authorized/>` stream error.
                let _ = local.actor.cast(C2sMsg::Kick {
                    condition: StreamErrorCondition::NotAuthorized,
                    text: Some("Account removed".to_owned()),
                });
            }
        }
        let _ = self
            .services
            .hooks
            .run(
                &REMOVE_USER,
                Scope::Host(&self.host),
                Account {
                    user: user.to_owned(),
                    host: self.host.clone(),
                },
            )
            .await;
        None
    }
}

fn check_rule(opts: &ModuleOptions, key: &str) -> Result<(), String> {
    match opt_str(opts, key) {
        Some(s) if !s.is_empty() => Ok(()),
        _ => Err(format!("`{key}` must be the name of an access rule")),
    }
}

impl Module for Mod {
    fn name(&self) -> &str {
        "mod_register"
    }

    fn default_options(&self) -> ModuleOptions {
        let mut o = ModuleOptions::new();
        o.insert("access".into(), json!("register"));
        o.insert("access_remove".into(), json!("all"));
        o.insert("registration_timeout".into(), json!(600));
        o
    }

    fn validate_options(&self, opts: &ModuleOptions) -> Result<(), String> {
        check_rule(opts, "access")?;
        check_rule(opts, "access_remove")?;
        match opts.get("registration_timeout") {
            Some(v) if v.as_u64().is_some() || v.as_str() == Some("infinity") => Ok(()),
            _ => Err(
                "`registration_timeout` must be a number of seconds (0 or \"infinity\": no limit)"
                    .into(),
            ),
        }
    }

    fn start(&self, ctx: &ModuleContext, opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let timeout = opt_u64(opts, "registration_timeout")
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let reg = Arc::new(Register {
            services: self.services.clone(),
            host: ctx.host().to_owned(),
            access: opt_str(opts, "access").unwrap_or("register").to_owned(),
            access_remove: opt_str(opts, "access_remove").unwrap_or("all").to_owned(),
            timeout,
            recent: Mutex::new(HashMap::new()),
        });
        let r = reg.clone();
        self.services.iq_handler(
            ctx,
            ns::REGISTER,
            true,
            Arc::new(move |req| {
                let r = r.clone();
                Box::pin(async move { r.post_auth(req).await })
            }),
        );
        let services = self.services.clone();
        let host = ctx.host().to_owned();
        Ok(holder_tree(
            ctx.module(),
            Arc::new(move |cell| {
                let r = reg.clone();
                services
                    .hooks
                    .subscribe_fn(
                        &C2S_PRE_AUTH_FEATURES,
                        Scope::Host(&host),
                        50,
                        Some(cell.clone()),
                        move |pa: PreAuth, mut acc: Vec<Element>| {
                            if r.may_register(pa.ip) {
                                acc.push(Element::new("register", ns::REGISTER_FEATURE));
                            }
                            async move { Flow::Continue(acc) }
                        },
                    )
                    .map_err(|e| e.to_string())?;
                let r = reg.clone();
                services
                    .hooks
                    .subscribe_fn(
                        &C2S_UNAUTHENTICATED_IQ,
                        Scope::Host(&host),
                        50,
                        Some(cell),
                        move |(pa, iq): (PreAuth, Element), acc: Option<Element>| {
                            let r = r.clone();
                            async move {
                                if acc.is_some() {
                                    return Flow::Continue(acc);
                                }
                                match r.pre_auth(&pa, &iq).await {
                                    Some(reply) => Flow::Stop(Some(reply)),
                                    None => Flow::Continue(None),
                                }
                            }
                        },
                    )
                    .map_err(|e| e.to_string())?;
                Ok(())
            }),
        ))
    }
}
