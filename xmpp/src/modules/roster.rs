//! `mod_roster`: roster management (RFC 6121 §2) and roster versioning
//! (XEP-0237), as ejabberd's `mod_roster`.
//!
//! Each user's roster is the backend map [`ROSTER_MAP`]: contact JID →
//! [`RosterItem`] (JSON). An item keeps the subscription state of RFC 6121
//! Appendix A (`subscription`, `ask` = pending out, the stored inbound
//! `subscribe` = pending in), the pre-approval flag (§3.4) and whether the
//! user sees it at all: a contact that only asked for a subscription is
//! kept hidden (as ejabberd's `ask = in` items) until the user adds it or
//! approves.
//!
//! - `jabber:iq:roster` get: the visible items, with `ver` when versioning
//!   is on; a get whose `ver` is the current one gets an empty result.
//!   The session that asked becomes "interested" and gets roster pushes
//!   (RFC 6121 §2.1.6) until it ends.
//! - set: adds or updates one item (name and groups; `subscription`,
//!   `ask` and `approved` from the client are ignored, §2.1.2); with
//!   `subscription='remove'` removes it and cancels the subscriptions both
//!   ways (§2.5.2). Errors as §2.3.3 and §2.5.3.
//! - Only the user may read or change their roster (`forbidden`
//!   otherwise); a roster IQ to the server's domain is
//!   `service-unavailable` (as ejabberd, which serves it on accounts).
//! - The version is a hash of the visible roster, so it changes with
//!   every change a client could see and survives restarts.
//! - The stream feature `<ver xmlns='urn:xmpp:features:rosterver'/>` is
//!   offered when versioning is on.
//!
//! Options: `versioning` (true).
//!
//! [`update_item`] is what `mod_presence` changes subscriptions with: one
//! read-modify-write per user at a time, then the pushes.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use beamline_runtime::hooks::{Answer, Flow, Scope};
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Services, holder_tree, opt_bool};
use super::{iq_error, iq_result};
use crate::c2s::C2sMsg;
use crate::hooks::{
    Account, C2S_STREAM_FEATURES, REMOVE_USER, SM_REMOVE_CONNECTION, SessionInfo,
    USER_RECEIVE_PACKET,
};
use crate::jid::{self, FullJid, Jid};
use crate::ns;
use crate::sm::SessionRecord;
use crate::stanza_error::StanzaErrorCondition;
use crate::xml::Element;

/// The per-user backend map that holds the roster.
pub const ROSTER_MAP: &str = "roster";

/// Longest item name or group name accepted (bytes); longer is
/// `not-acceptable` (RFC 6121 §2.3.3 lets the server set a limit).
pub const MAX_NAME_LEN: usize = 1024;

/// Most groups on one item.
pub const MAX_GROUPS: usize = 64;

/// A subscription state as RFC 6121 §2.1.2.5 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subscription {
    /// Neither way.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both ways.
    Both,
}

impl Subscription {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Whether the user receives the contact's presence (`to`, `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// Whether the contact receives the user's presence (`from`, `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    /// The state with `to` and `from` as given.
    pub fn from_parts(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// One roster item as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RosterItem {
    /// The contact's JID (normalised; the map key).
    pub jid: String,
    /// The name the user gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's groups for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The subscription state.
    #[serde(default)]
    pub subscription: Subscription,
    /// Pending out: the user asked for the contact's presence.
    #[serde(default)]
    pub ask: bool,
    /// Pending in: the contact's `subscribe` (XML), kept until the user
    /// answers, redelivered at each of the user's initial presences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_in: Option<String>,
    /// Pre-approved (RFC 6121 §3.4): the contact's next `subscribe` is
    /// approved at once.
    #[serde(default)]
    pub approved: bool,
    /// Whether the user sees the item (added with a roster set or by a
    /// subscription exchange); an item that only holds a pending-in
    /// request is hidden.
    #[serde(default)]
    pub in_roster: bool,
}

impl RosterItem {
    /// An empty, hidden item for `jid`.
    pub fn new(jid: impl Into<String>) -> RosterItem {
        RosterItem {
            jid: jid.into(),
            ..RosterItem::default()
        }
    }

    /// Whether the item shows in the roster.
    pub fn visible(&self) -> bool {
        self.in_roster || self.subscription != Subscription::None || self.ask || self.approved
    }

    /// Whether the item still means something (else it is deleted).
    pub fn worth_keeping(&self) -> bool {
        self.visible() || self.pending_in.is_some()
    }

    /// The `<item/>` of a roster result or push.
    pub fn to_element(&self) -> Element {
        let mut b = Element::builder("item", ns::ROSTER)
            .attr("jid", self.jid.clone())
            .attr("subscription", self.subscription.as_str());
        if let Some(n) = &self.name {
            b = b.attr("name", n.clone());
        }
        if self.ask {
            b = b.attr("ask", "subscribe");
        }
        if self.approved {
            b = b.attr("approved", "true");
        }
        for g in &self.groups {
            b = b.append(Element::builder("group", ns::ROSTER).text(g).build());
        }
        b.build()
    }

    fn decode(key: &str, bytes: &[u8]) -> Option<RosterItem> {
        match serde_json::from_slice::<RosterItem>(bytes) {
            Ok(mut i) => {
                i.jid = key.to_owned();
                Some(i)
            }
            Err(e) => {
                tracing::warn!(jid = key, error = %e, "unreadable roster item skipped");
                None
            }
        }
    }
}

// ---------------------------------------------------------------------
// Per-server state shared with mod_presence: keyed by the node name (one
// server per node; tests run several in one process).

/// One lock per user for read-modify-write of roster items.
static LOCKS: LazyLock<DashMap<String, Arc<Mutex<()>>>> = LazyLock::new(DashMap::new);
/// `node|full JID` → session id of the sessions that asked for the roster.
static INTERESTED: LazyLock<DashMap<String, u64>> = LazyLock::new(DashMap::new);
/// Ids of roster pushes.
static PUSH_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// `node|host` → versioning on.
static VERSIONING: LazyLock<DashMap<String, bool>> = LazyLock::new(DashMap::new);

/// Held while one user's roster is changed; other changes of that roster
/// wait. Never held while routing.
pub struct UserLock {
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for UserLock {
    fn drop(&mut self) {
        self.guard.take();
        LOCKS.remove_if(&self.key, |_, m| Arc::strong_count(m) == 1);
    }
}

/// Locks `user@host`'s roster.
pub async fn lock_user(host: &str, user: &str) -> UserLock {
    let key = format!("{user}@{host}");
    let m = LOCKS
        .entry(key.clone())
        .or_insert_with(|| Arc::new(Mutex::new(())))
        .clone();
    let guard = m.lock_owned().await;
    UserLock {
        key,
        guard: Some(guard),
    }
}

fn versioning(services: &Services, host: &str) -> bool {
    VERSIONING
        .get(&format!("{}|{host}", services.sm.node()))
        .map(|v| *v)
        .unwrap_or(true)
}

fn interest_key(services: &Services, full: &str) -> String {
    format!("{}|{full}", services.sm.node())
}

// ---------------------------------------------------------------------
// Reading and writing items.

/// One item of `user@host`'s roster (hidden ones too).
pub async fn get_item(
    services: &Services,
    host: &str,
    user: &str,
    contact: &str,
) -> Option<RosterItem> {
    match services
        .backend
        .map_get(host, user, ROSTER_MAP, contact)
        .await
    {
        Ok(Some(bytes)) => RosterItem::decode(contact, &bytes),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(%host, %user, error = %e, "roster read failed");
            None
        }
    }
}

/// Every item of `user@host`'s roster (hidden ones too), sorted by JID.
pub async fn items(services: &Services, host: &str, user: &str) -> Vec<RosterItem> {
    match services.backend.map_all(host, user, ROSTER_MAP).await {
        Ok(all) => all
            .iter()
            .filter_map(|(k, v)| RosterItem::decode(k, v))
            .collect(),
        Err(e) => {
            tracing::warn!(%host, %user, error = %e, "roster read failed");
            Vec::new()
        }
    }
}

async fn store(
    services: &Services,
    host: &str,
    user: &str,
    contact: &str,
    item: Option<&RosterItem>,
) {
    let r = match item {
        Some(i) if i.worth_keeping() => match serde_json::to_vec(i) {
            Ok(bytes) => {
                services
                    .backend
                    .map_put(host, user, ROSTER_MAP, contact, bytes)
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "roster item not encodable");
                return;
            }
        },
        _ => {
            services
                .backend
                .map_delete(host, user, ROSTER_MAP, contact)
                .await
        }
    };
    if let Err(e) = r {
        tracing::warn!(%host, %user, %contact, error = %e, "roster write failed");
    }
}

/// Changes one item of `user@host`'s roster: `f` gets the item (`None`
/// when absent) and may change, create or remove it (`None`, or an item
/// not worth keeping, deletes it). Runs under the user's lock, as does
/// the roster push to the interested resources if what they see changed.
/// `f` must not block.
/// Returns what `f` returned and the item before and after.
pub async fn update_item<T>(
    services: &Services,
    host: &str,
    user: &str,
    contact: &str,
    f: impl FnOnce(&mut Option<RosterItem>) -> T,
) -> (T, Option<RosterItem>, Option<RosterItem>) {
    // The push is sent under the lock too, so that pushes leave in the
    // order of the changes (routing an IQ to the user's own sessions takes
    // no roster lock).
    let _lock = lock_user(host, user).await;
    let before = get_item(services, host, user, contact).await;
    let mut item = before.clone();
    let out = f(&mut item);
    if let Some(i) = item.as_mut() {
        contact.clone_into(&mut i.jid);
    }
    let after = item.filter(RosterItem::worth_keeping);
    if after != before {
        store(services, host, user, contact, after.as_ref()).await;
    }
    let seen_before = before
        .as_ref()
        .filter(|i| i.visible())
        .map(RosterItem::to_element);
    let seen_after = after
        .as_ref()
        .filter(|i| i.visible())
        .map(RosterItem::to_element);
    if seen_before != seen_after {
        let pushed = seen_after.unwrap_or_else(|| {
            Element::builder("item", ns::ROSTER)
                .attr("jid", contact)
                .attr("subscription", "remove")
                .build()
        });
        push(services, host, user, pushed).await;
    }
    (out, before, after)
}

/// The roster version (XEP-0237) of a list of items: a hash of what the
/// user sees.
pub fn version_of(items: &[RosterItem]) -> String {
    let mut h = Sha256::new();
    for i in items.iter().filter(|i| i.visible()) {
        h.update(i.to_element().to_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    d.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// Sends a roster push of `item` to every interested resource of
/// `user@host` (RFC 6121 §2.1.6), with the new version when versioning is
/// on.
pub async fn push(services: &Services, host: &str, user: &str, item: Element) {
    // Who asked for the roster is known where the session is: local
    // sessions are chosen here, sessions of other nodes get the push and
    // their node drops it unless they asked (see `is_unwanted_push`).
    let targets: Vec<SessionRecord> = services
        .sm
        .sessions_of(host, user)
        .into_iter()
        .filter(|s| {
            let full = format!("{user}@{host}/{}", s.resource);
            s.node != services.sm.node()
                || INTERESTED
                    .get(&interest_key(services, &full))
                    .is_some_and(|sid| *sid == s.sid)
        })
        .collect();
    if targets.is_empty() {
        return;
    }
    let mut query = Element::builder("query", ns::ROSTER);
    if versioning(services, host) {
        query = query.attr("ver", version_of(&items(services, host, user).await));
    }
    let query = query.append(item).build();
    for s in targets {
        let iq = Element::builder("iq", ns::JABBER_CLIENT)
            .attr("type", "set")
            .attr(
                "id",
                format!(
                    "push{}",
                    PUSH_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ),
            )
            .attr("from", format!("{user}@{host}"))
            .attr("to", format!("{user}@{host}/{}", s.resource))
            .append(query.clone())
            .build();
        services.router.route(iq).await;
    }
}

/// Whether `stanza`, about to reach session `jid` of this node, is a
/// roster push that session did not ask for (it never requested the
/// roster): a push sent by another node, which cannot know.
fn is_unwanted_push(services: &Services, jid: &FullJid, stanza: &Element) -> bool {
    // Cheap tests first: this runs for every stanza delivered.
    stanza.name() == "iq"
        && stanza.attr("type") == Some("set")
        && stanza.attr("from") == Some(jid.to_bare().to_string().as_str())
        && stanza.has_child("query", ns::ROSTER)
        && !INTERESTED.contains_key(&interest_key(services, &jid.to_string()))
}

/// Hands `stanza` to the local session `sid` directly, past the router
/// and its hooks (for stored requests that must not be processed again).
pub fn deliver_to_session(services: &Services, sid: u64, stanza: Element) {
    if let Some(local) = services.sm.local(sid) {
        local
            .queued
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if local.actor.cast(C2sMsg::Route(stanza)).is_err() {
            local
                .queued
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// Parses one stanza serialized with [`Element::to_bytes`] (the session
/// table's last presence, a stored request).
pub fn parse_stanza(xml: &str) -> Option<Element> {
    Element::parse(xml.as_bytes())
}

// ---------------------------------------------------------------------
// The IQ handler.

fn bare_of(j: &Jid) -> String {
    j.to_bare().to_string()
}

async fn handle_iq(services: Services, iq: Element) -> Option<Element> {
    let (Some(Ok(from)), Some(Ok(to))) = (
        iq.attr("from").map(jid::parse),
        iq.attr("to").map(jid::parse),
    ) else {
        return iq_error(&iq, StanzaErrorCondition::BadRequest);
    };
    let (Some(user), Some(to_node)) = (from.node(), to.node()) else {
        return iq_error(&iq, StanzaErrorCondition::ServiceUnavailable);
    };
    if bare_of(&from) != bare_of(&to) || to_node != user {
        return iq_error(&iq, StanzaErrorCondition::Forbidden);
    }
    let user = user.to_string();
    let host = from.domain().to_string();
    let Some(query) = iq.get_child("query", ns::ROSTER) else {
        return iq_error(&iq, StanzaErrorCondition::BadRequest);
    };
    match iq.attr("type") {
        Some("get") => {
            if let Some(resource) = from.resource() {
                let sid = services
                    .sm
                    .sessions_of(&host, &user)
                    .into_iter()
                    .find(|s| s.resource == resource.as_str())
                    .map(|s| s.sid);
                if let Some(sid) = sid {
                    INTERESTED.insert(interest_key(&services, &from.to_string()), sid);
                }
            }
            let all = items(&services, &host, &user).await;
            let mut q = Element::builder("query", ns::ROSTER);
            if versioning(&services, &host) {
                let ver = version_of(&all);
                if query.attr("ver") == Some(ver.as_str()) {
                    // XEP-0237 §2.4: nothing changed, no roster.
                    return Some(iq_result(&iq, None));
                }
                q = q.attr("ver", ver);
            }
            let q = q
                .append_all(
                    all.iter()
                        .filter(|i| i.visible())
                        .map(RosterItem::to_element),
                )
                .build();
            Some(iq_result(&iq, Some(q)))
        }
        Some("set") => roster_set(&services, &iq, query, &host, &user).await,
        _ => iq_error(&iq, StanzaErrorCondition::BadRequest),
    }
}

/// What a roster set asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetRequest {
    /// Add or update the item of this JID with this name and groups.
    Update {
        /// The contact.
        jid: String,
        /// Its name (`None`: no name).
        name: Option<String>,
        /// Its groups.
        groups: Vec<String>,
    },
    /// Remove the item of this JID.
    Remove {
        /// The contact.
        jid: String,
    },
}

/// Checks the `<query/>` of a roster set (RFC 6121 §2.3.3): exactly one
/// `<item/>` with a valid `jid`, no group twice, no empty group, names
/// within [`MAX_NAME_LEN`]. `subscription` values other than `remove`,
/// `ask` and `approved` are ignored (§2.1.2).
pub fn parse_set(query: &Element) -> Result<SetRequest, StanzaErrorCondition> {
    let mut it = query.children().filter(|c| c.is("item", ns::ROSTER));
    let (Some(item), None) = (it.next(), it.next()) else {
        return Err(StanzaErrorCondition::BadRequest);
    };
    let Some(j) = item.attr("jid") else {
        return Err(StanzaErrorCondition::BadRequest);
    };
    let j = jid::parse(j).map_err(|_| StanzaErrorCondition::JidMalformed)?;
    let jid = j.to_string();
    if item.attr("subscription") == Some("remove") {
        return Ok(SetRequest::Remove { jid });
    }
    let name = item.attr("name").map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
        return Err(StanzaErrorCondition::NotAcceptable);
    }
    let mut groups = Vec::new();
    let mut seen = BTreeSet::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let text = g.text();
        if text.is_empty() || text.len() > MAX_NAME_LEN {
            return Err(StanzaErrorCondition::NotAcceptable);
        }
        if !seen.insert(text.clone()) {
            return Err(StanzaErrorCondition::BadRequest);
        }
        groups.push(text);
    }
    if groups.len() > MAX_GROUPS {
        return Err(StanzaErrorCondition::NotAcceptable);
    }
    Ok(SetRequest::Update { jid, name, groups })
}

async fn roster_set(
    services: &Services,
    iq: &Element,
    query: &Element,
    host: &str,
    user: &str,
) -> Option<Element> {
    let req = match parse_set(query) {
        Ok(r) => r,
        Err(c) => return iq_error(iq, c),
    };
    match req {
        SetRequest::Update { jid, name, groups } => {
            update_item(services, host, user, &jid, |item| {
                let i = item.get_or_insert_with(|| RosterItem::new(jid.clone()));
                i.name = name;
                i.groups = groups;
                i.in_roster = true;
            })
            .await;
            Some(iq_result(iq, None))
        }
        SetRequest::Remove { jid } => {
            let (_, before, _) = update_item(services, host, user, &jid, |item| {
                if item.as_ref().is_some_and(RosterItem::visible) {
                    *item = None;
                }
            })
            .await;
            let Some(before) = before.filter(RosterItem::visible) else {
                return iq_error(iq, StanzaErrorCondition::ItemNotFound);
            };
            cancel_both_ways(services, host, user, &before).await;
            Some(iq_result(iq, None))
        }
    }
}

/// RFC 6121 §2.5.2: the item is gone; cancel the subscriptions it held:
/// `unsubscribe` if the user was subscribed or asking, `unsubscribed`
/// (after unavailable from the user's resources, §3.2.2) if the contact
/// was subscribed or asking. The contact's server updates its side.
pub async fn cancel_both_ways(services: &Services, host: &str, user: &str, item: &RosterItem) {
    let me = format!("{user}@{host}");
    let presence = |t: &str| {
        Element::builder("presence", ns::JABBER_CLIENT)
            .attr("from", me.clone())
            .attr("to", item.jid.clone())
            .attr("type", t)
            .build()
    };
    if item.subscription.has_to() || item.ask {
        services.router.route(presence("unsubscribe")).await;
    }
    if item.subscription.has_from() {
        for s in services.sm.sessions_of(host, user) {
            if s.priority.is_none() {
                continue;
            }
            let u = Element::builder("presence", ns::JABBER_CLIENT)
                .attr("from", format!("{me}/{}", s.resource))
                .attr("to", item.jid.clone())
                .attr("type", "unavailable")
                .build();
            services.router.route(u).await;
        }
    }
    if item.subscription.has_from() || item.pending_in.is_some() {
        services.router.route(presence("unsubscribed")).await;
    }
}

// ---------------------------------------------------------------------
// The module.

/// The `mod_roster` module.
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
        "mod_roster"
    }

    fn default_options(&self) -> ModuleOptions {
        let mut o = ModuleOptions::new();
        o.insert("versioning".into(), json!(true));
        o
    }

    fn validate_options(&self, opts: &ModuleOptions) -> Result<(), String> {
        match opts.get("versioning") {
            None | Some(Value::Bool(_)) => Ok(()),
            Some(_) => Err("versioning must be true or false".into()),
        }
    }

    fn start(&self, ctx: &ModuleContext, opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let services = self.services.clone();
        let host = ctx.host().to_owned();
        let versioning = opt_bool(opts, "versioning").unwrap_or(true);
        let key = format!("{}|{host}", services.sm.node());
        VERSIONING.insert(key.clone(), versioning);
        ctx.on_stop(move || {
            VERSIONING.remove(&key);
        });
        let s = services.clone();
        services.iq_handler(
            ctx,
            ns::ROSTER,
            false,
            Arc::new(move |iq| Box::pin(handle_iq(s.clone(), iq))),
        );
        let setup = Arc::new(move |cell: ractor::ActorCell| {
            let hooks = &services.hooks;
            let scope = Scope::Host(&host);
            if versioning {
                hooks
                    .subscribe_fn(
                        &C2S_STREAM_FEATURES,
                        scope,
                        50,
                        Some(cell.clone()),
                        |_host: String, mut acc: Vec<Element>| async move {
                            acc.push(Element::new("ver", ns::ROSTER_VER));
                            Flow::Continue(acc)
                        },
                    )
                    .map_err(|e| e.to_string())?;
            }
            let s = services.clone();
            hooks
                .subscribe_answer(
                    &USER_RECEIVE_PACKET,
                    scope,
                    50,
                    Some(cell.clone()),
                    move |info: Arc<SessionInfo>, acc: Option<Element>| {
                        let unwanted = acc
                            .as_ref()
                            .is_some_and(|st| is_unwanted_push(&s, &info.jid, st));
                        Answer::Now(if unwanted {
                            Flow::Stop(None)
                        } else {
                            Flow::Continue(acc)
                        })
                    },
                )
                .map_err(|e| e.to_string())?;
            let s = services.clone();
            hooks
                .subscribe_fn(
                    &SM_REMOVE_CONNECTION,
                    scope,
                    50,
                    Some(cell.clone()),
                    move |info: Arc<SessionInfo>, acc: ()| {
                        let s = s.clone();
                        async move {
                            let key = interest_key(&s, &info.jid.to_string());
                            let host = info.jid.domain().to_string();
                            let user = info.jid.node().map(|n| n.to_string()).unwrap_or_default();
                            let live: Vec<u64> =
                                s.sm.sessions_of(&host, &user)
                                    .iter()
                                    .map(|r| r.sid)
                                    .collect();
                            INTERESTED.remove_if(&key, |_, sid| !live.contains(sid));
                            Flow::Continue(acc)
                        }
                    },
                )
                .map_err(|e| e.to_string())?;
            let s = services.clone();
            hooks
                .subscribe_fn(
                    &REMOVE_USER,
                    scope,
                    50,
                    Some(cell),
                    move |acct: Account, acc: ()| {
                        let s = s.clone();
                        async move {
                            let _lock = lock_user(&acct.host, &acct.user).await;
                            for i in items(&s, &acct.host, &acct.user).await {
                                store(&s, &acct.host, &acct.user, &i.jid, None).await;
                            }
                            Flow::Continue(acc)
                        }
                    },
                )
                .map_err(|e| e.to_string())?;
            Ok(())
        });
        Ok(holder_tree(ctx.module(), setup))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(items: &[Element]) -> Element {
        Element::builder("query", ns::ROSTER)
            .append_all(items.iter().cloned())
            .build()
    }

    fn item(jid: &str) -> crate::xml::ElementBuilder {
        Element::builder("item", ns::ROSTER).attr("jid", jid)
    }

    #[test]
    fn roster_set_is_checked_as_rfc_6121_says() {
        let ok = parse_set(&query(&[item("Bob@Example.COM")
            .attr("name", "Bob")
            .attr("subscription", "both")
            .append(Element::builder("group", ns::ROSTER).text("G").build())
            .build()]));
        assert_eq!(
            ok,
            Ok(SetRequest::Update {
                jid: "bob@example.com".into(),
                name: Some("Bob".into()),
                groups: vec!["G".into()],
            })
        );
        let rm = parse_set(&query(&[item("b@x")
            .attr("subscription", "remove")
            .build()]));
        assert_eq!(rm, Ok(SetRequest::Remove { jid: "b@x".into() }));
        assert_eq!(
            parse_set(&query(&[])),
            Err(StanzaErrorCondition::BadRequest)
        );
        assert_eq!(
            parse_set(&query(&[item("a@x").build(), item("b@x").build()])),
            Err(StanzaErrorCondition::BadRequest)
        );
        assert_eq!(
            parse_set(&query(&[item("@@").build()])),
            Err(StanzaErrorCondition::JidMalformed)
        );
        let g = |t: &str| Element::builder("group", ns::ROSTER).text(t).build();
        assert_eq!(
            parse_set(&query(&[item("a@x").append(g("G")).append(g("G")).build()])),
            Err(StanzaErrorCondition::BadRequest)
        );
        assert_eq!(
            parse_set(&query(&[item("a@x").append(g("")).build()])),
            Err(StanzaErrorCondition::NotAcceptable)
        );
    }

    #[test]
    fn a_request_alone_is_hidden_and_the_version_ignores_it() {
        let mut hidden = RosterItem::new("a@x");
        hidden.pending_in = Some("<presence/>".into());
        assert!(!hidden.visible() && hidden.worth_keeping());
        let shown = RosterItem {
            in_roster: true,
            ..RosterItem::new("b@x")
        };
        assert_eq!(
            version_of(&[hidden.clone(), shown.clone()]),
            version_of(std::slice::from_ref(&shown))
        );
        let mut changed = shown.clone();
        changed.subscription = Subscription::To;
        assert_ne!(version_of(&[changed]), version_of(&[shown]));
        let json = serde_json::to_vec(&hidden).unwrap_or_default();
        assert_eq!(RosterItem::decode("a@x", &json), Some(hidden));
    }

    #[test]
    fn stored_presence_parses_back() {
        let p = Element::builder("presence", ns::JABBER_CLIENT)
            .attr("from", "a@x/r")
            .append(
                Element::builder("status", ns::JABBER_CLIENT)
                    .text("<&>")
                    .build(),
            )
            .build();
        let xml = String::from_utf8_lossy(&p.to_bytes()).into_owned();
        let back = parse_stanza(&xml).map(|e| e.to_bytes());
        assert_eq!(back, Some(p.to_bytes()));
        assert!(parse_stanza("<presence").is_none());
    }
}
