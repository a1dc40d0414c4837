//! `mod_blocking`: Blocking Command (XEP-0191), as ejabberd's
//! `mod_blocking`.
//!
//! Each user has a block list of JIDs (the per-user backend map
//! `blocklist`, keyed by the normalised JID). A blocked item matches as
//! XEP-0191 §3.1 says (the JID rules of XEP-0016): `user@domain/resource`
//! only that resource, `user@domain` any resource of it, `domain/resource`
//! only that JID, `domain` the domain and every JID at it.
//!
//! Protocol (IQ to one's own bare JID, else `forbidden` as ejabberd):
//! - `get <blocklist/>`: the items;
//! - `set <block>` with one or more items (none is `bad-request`, a bad JID
//!   `jid-malformed`); `set <unblock>` with items removes those, without
//!   items empties the list. The result comes first; then the same
//!   `<block/>`/`<unblock/>` is pushed (IQ set from the bare JID) to every
//!   session of the user, as ejabberd does.
//! - When a contact becomes blocked, each available resource of the user
//!   sends it `unavailable` presence (§3.3), if the contact is in the
//!   user's roster with a subscription to the user's presence (`from` or
//!   `both`): to its bare JID, or to the blocked full JID when the item is
//!   one. When it is unblocked, those contacts get the current presence of
//!   each available resource again, and the user's bare JID probes the
//!   contacts it is subscribed to (their presence was dropped meanwhile).
//!
//! Enforcement:
//! - outbound, a stanza the user sends to a blocked JID
//!   (`user_send_packet`) is dropped and answered with `not-acceptable`
//!   plus `<blocked xmlns='urn:xmpp:blocking:errors'/>` (§3.4); presence
//!   the server sends on the user's behalf (broadcasts, in
//!   `filter_packet`) is dropped silently;
//! - inbound, from a blocked JID (§3.5): presence is dropped (in
//!   `presence_in`, before subscriptions and probes are handled, as
//!   ejabberd's privacy check in `ejabberd_sm`), a message for a user
//!   with no available resource is neither stored nor delivered (before
//!   `mod_offline` in `offline_message_hook`; the router then answers
//!   `service-unavailable`), and what reaches a session
//!   (`user_receive_packet`) is dropped: a message or an IQ get/set is
//!   answered `service-unavailable`, the rest silently. IQs the server
//!   answers on the user's behalf (vCard, ...) are not blocked, as in
//!   ejabberd. Stanzas from the user's own account are never blocked.
//!
//! The lists of users with sessions on this node are cached in memory (a
//! map per host, filled at first use, dropped when the user's last session
//! on this node ends); changes go through this module, which writes the
//! backend then the cache under one lock. In a cluster the change is made
//! on one node (the one the user's IQ came through) and the backend table
//! is replicated before the write returns; the other nodes where the user
//! has sessions learn of it from the `<block/>`/`<unblock/>` push, which
//! reaches each session of the user: when it passes `user_receive_packet`
//! the node drops its cached list, and the next check reads the backend.
//! Feature `urn:xmpp:blocking`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use beamline_runtime::hooks::{Answer, Flow, Scope};
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};
use dashmap::DashMap;

use super::private::own_account;
use super::roster::{self, Subscription};
use super::{Services, holder_tree};
use super::{iq_error_reply, iq_result};
use crate::hooks::{
    FILTER_PACKET, OFFLINE_MESSAGE, PRESENCE_IN, REMOVE_USER, SM_REMOVE_CONNECTION, SessionInfo,
    USER_RECEIVE_PACKET, USER_SEND_PACKET,
};
use crate::jid::Jid;
use crate::ns;
use crate::stanza_error::{StanzaError, StanzaErrorCondition, error_reply};
use crate::xml::Element;

/// The application-specific error condition of §3.4.
pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

/// The backend map of each user's block list.
const MAP: &str = "blocklist";

/// Priority of the enforcing subscriptions: before the usual 50, so that
/// presence from a blocked JID never reaches the presence module and
/// messages never reach `mod_offline`.
const PRIORITY: i32 = 10;

/// A block list: normalised JIDs.
type List = Arc<BTreeSet<String>>;

/// The `mod_blocking` module.
pub struct Mod {
    services: Services,
}

/// The module, for the module manager.
pub fn module(services: &Services) -> Arc<dyn Module> {
    Arc::new(Mod {
        services: services.clone(),
    })
}

/// The module's state on one host.
#[derive(Clone)]
struct State {
    services: Services,
    host: Arc<str>,
    /// Block lists of users with sessions, by user name.
    cache: Arc<DashMap<String, List>>,
    /// Serialises changes of lists.
    write: Arc<tokio::sync::Mutex<()>>,
    /// Bumped when a cached list is dropped because another node changed
    /// it: a backend read that started before does not cache its result.
    epoch: Arc<AtomicU64>,
}

impl State {
    /// The list of `user`, from the cache or the backend; `keep` caches
    /// what was read (for users with sessions).
    async fn list(&self, user: &str, keep: bool) -> List {
        if let Some(l) = self.cache.get(user) {
            return l.value().clone();
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let list: List = match self.services.backend.map_all(&self.host, user, MAP).await {
            Ok(entries) => Arc::new(entries.into_iter().map(|(k, _)| k).collect()),
            Err(e) => {
                tracing::warn!(%user, host = %self.host, error = %e, "block list: read failed");
                Arc::default()
            }
        };
        if keep && self.epoch.load(Ordering::Acquire) == epoch {
            // A change made meanwhile wins: it inserted the newer list.
            return self
                .cache
                .entry(user.to_owned())
                .or_insert(list)
                .value()
                .clone();
        }
        list
    }

    /// Whether `user`'s list blocks `jid`, if the list is cached; `None`
    /// when it must be read (see [`State::blocks`]). The hooks' path for
    /// every stanza, which must not allocate a future.
    fn blocks_now(&self, user: &str, jid: &str) -> Option<bool> {
        Some(list_blocks(self.cache.get(user)?.value(), jid))
    }

    /// Whether `user`'s list blocks `jid` (a JID string, unparsed).
    async fn blocks(&self, user: &str, jid: &str, keep: bool) -> bool {
        list_blocks(&self.list(user, keep).await, jid)
    }
}

/// Whether `list` blocks `jid` (a JID string, unparsed): the list first,
/// it is usually empty and parsing is the cost.
fn list_blocks(list: &List, jid: &str) -> bool {
    !list.is_empty() && crate::jid::parse(jid).is_ok_and(|j| matches(list, &j))
}

/// XEP-0191 §3.1 / XEP-0016 matching of `jid` against `list`.
fn matches(list: &BTreeSet<String>, jid: &Jid) -> bool {
    list.contains(&jid.to_string())
        || list.contains(&jid.to_bare().to_string())
        || list.contains(jid.domain().as_str())
}

/// The local part of `jid` if it is an account of `host`.
fn local_user(jid: &str, host: &str) -> Option<(String, Jid)> {
    let j = crate::jid::parse(jid).ok()?;
    if j.domain().as_str() != host {
        return None;
    }
    let user = j.node()?.to_string();
    Some((user, j))
}

/// Whether `from` is `user@host` itself (any resource).
fn is_self(from: &str, user: &str, host: &str) -> bool {
    crate::jid::parse(from).ok().is_some_and(|j| {
        j.domain().as_str() == host && j.node().is_some_and(|n| n.as_str() == user)
    })
}

/// Whether `el` is this module's push of a changed list (an IQ set of
/// `<block/>` or `<unblock/>` from `user@host` itself).
fn is_list_push(el: &Element, user: &str, host: &str) -> bool {
    el.name() == "iq"
        && el.attr("type") == Some("set")
        && el.attr("from") == Some(format!("{user}@{host}").as_str())
        && (el.has_child("block", ns::BLOCKING) || el.has_child("unblock", ns::BLOCKING))
}

/// Whether an error carries the `<blocked/>` condition of §3.4 (the
/// server's own answer to an outbound stanza, which must reach the user).
fn is_blocked_error(el: &Element) -> bool {
    el.attr("type") == Some("error")
        && el
            .get_child("error", el.ns())
            .is_some_and(|e| e.has_child("blocked", NS_BLOCKING_ERRORS))
}

impl Module for Mod {
    fn name(&self) -> &str {
        "mod_blocking"
    }

    fn start(&self, ctx: &ModuleContext, _opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let state = State {
            services: self.services.clone(),
            host: ctx.host().into(),
            cache: Arc::default(),
            write: Arc::default(),
            epoch: Arc::default(),
        };
        let st = state.clone();
        self.services.iq_handler(
            ctx,
            ns::BLOCKING,
            true,
            Arc::new(move |iq| {
                let st = st.clone();
                Box::pin(async move {
                    let reply = handle(&st, iq).await;
                    st.services.router.route(reply.0).await;
                    if let Some((user, event)) = reply.1 {
                        push(&st, &user, event).await;
                    }
                    None
                })
            }),
        );
        Ok(holder_tree(
            ctx.module(),
            Arc::new(move |cell| subscribe(&state, &cell).map_err(|e| e.to_string())),
        ))
    }
}

fn subscribe(
    state: &State,
    cell: &ractor::ActorCell,
) -> Result<(), beamline_runtime::hooks::HookError> {
    let hooks = &state.services.hooks;
    let host = state.host.to_string();
    let scope = Scope::Host(&host);

    // Outbound, sent by the client: refused with <blocked/>.
    let st = Arc::new(state.clone());
    hooks.subscribe_answer(
        &USER_SEND_PACKET,
        scope,
        PRIORITY,
        Some(cell.clone()),
        move |info: Arc<SessionInfo>, acc: Option<Element>| {
            let Some(el) = acc else {
                return Answer::Now(Flow::Continue(None));
            };
            let Some(to) = el.attr("to") else {
                return Answer::Now(Flow::Continue(Some(el)));
            };
            let user = info.jid.node().map(|n| n.as_str()).unwrap_or_default();
            if st.blocks_now(user, to) == Some(false) {
                return Answer::Now(Flow::Continue(Some(el)));
            }
            let st = st.clone();
            Answer::later(async move {
                let user = info.jid.node().map(|n| n.to_string()).unwrap_or_default();
                let Some(to) = el.attr("to") else {
                    return Flow::Continue(Some(el));
                };
                if !st.blocks(&user, to, true).await {
                    return Flow::Continue(Some(el));
                }
                let error = StanzaError::new(StanzaErrorCondition::NotAcceptable);
                if let Some(mut reply) = error_reply(&el, &error, false) {
                    if let Some(e) = reply.get_child_mut("error", el.ns()) {
                        e.append_child(Element::new("blocked", NS_BLOCKING_ERRORS));
                    }
                    st.services.router.route(reply).await;
                }
                Flow::Stop(None)
            })
        },
    )?;

    // Outbound presence sent on the user's behalf: dropped silently.
    let st = Arc::new(state.clone());
    hooks.subscribe_answer(
        &FILTER_PACKET,
        Scope::Global,
        50,
        Some(cell.clone()),
        move |(), acc: Option<Element>| {
            let Some(el) = acc else {
                return Answer::Now(Flow::Continue(None));
            };
            if el.name() != "presence" {
                return Answer::Now(Flow::Continue(Some(el)));
            }
            let st = st.clone();
            Answer::later(async move {
                let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
                    return Flow::Continue(Some(el));
                };
                let Some((user, _)) = local_user(from, &st.host) else {
                    return Flow::Continue(Some(el));
                };
                if is_self(to, &user, &st.host) {
                    return Flow::Continue(Some(el));
                }
                let keep = st.cache.contains_key(&user);
                if st.blocks(&user, to, keep).await {
                    return Flow::Stop(None);
                }
                Flow::Continue(Some(el))
            })
        },
    )?;

    // Inbound presence (before subscriptions and probes are handled).
    let st = state.clone();
    hooks.subscribe_fn(
        &PRESENCE_IN,
        scope,
        PRIORITY,
        Some(cell.clone()),
        move |(), acc: Option<Element>| {
            let st = st.clone();
            async move {
                let Some(el) = acc else {
                    return Flow::Continue(None);
                };
                if inbound_blocked(&st, &el).await {
                    return Flow::Stop(None);
                }
                Flow::Continue(Some(el))
            }
        },
    )?;

    // Messages for a user without available resource: not stored.
    let st = state.clone();
    hooks.subscribe_fn(
        &OFFLINE_MESSAGE,
        scope,
        PRIORITY,
        Some(cell.clone()),
        move |msg: Element, stored: bool| {
            let st = st.clone();
            async move {
                if !stored && inbound_blocked(&st, &msg).await {
                    // Not stored: the router answers service-unavailable.
                    return Flow::Stop(false);
                }
                Flow::Continue(stored)
            }
        },
    )?;

    // Inbound, reaching a session.
    let st = Arc::new(state.clone());
    hooks.subscribe_answer(
        &USER_RECEIVE_PACKET,
        scope,
        PRIORITY,
        Some(cell.clone()),
        move |info: Arc<SessionInfo>, acc: Option<Element>| {
            let Some(el) = acc else {
                return Answer::Now(Flow::Continue(None));
            };
            let Some(from) = el.attr("from") else {
                return Answer::Now(Flow::Continue(Some(el)));
            };
            let user = info.jid.node().map(|n| n.as_str()).unwrap_or_default();
            if is_list_push(&el, user, &st.host) {
                // The list changed, maybe through another node.
                st.epoch.fetch_add(1, Ordering::AcqRel);
                st.cache.remove(user);
                return Answer::Now(Flow::Continue(Some(el)));
            }
            // The list first: it is usually empty, and the other checks
            // parse JIDs.
            if st.blocks_now(user, from) == Some(false) {
                return Answer::Now(Flow::Continue(Some(el)));
            }
            let st = st.clone();
            Answer::later(async move {
                let user = info.jid.node().map(|n| n.to_string()).unwrap_or_default();
                let Some(from) = el.attr("from") else {
                    return Flow::Continue(Some(el));
                };
                if !st.blocks(&user, from, true).await
                    || is_self(from, &user, &st.host)
                    || is_blocked_error(&el)
                {
                    return Flow::Continue(Some(el));
                }
                let answer = match el.name() {
                    "message" => true,
                    "iq" => matches!(el.attr("type"), Some("get" | "set")),
                    _ => false,
                };
                if answer {
                    let mut el = el;
                    // The error comes from the address it was sent to.
                    if el.attr("to").is_none() {
                        el.set_attr("to", info.jid.to_string());
                    }
                    if let Some(reply) =
                        error_reply(&el, &StanzaErrorCondition::ServiceUnavailable.into(), false)
                    {
                        st.services.router.route(reply).await;
                    }
                }
                Flow::Stop(None)
            })
        },
    )?;

    // The cache holds users with sessions only.
    let st = state.clone();
    hooks.subscribe_fn(
        &SM_REMOVE_CONNECTION,
        scope,
        PRIORITY,
        Some(cell.clone()),
        move |info: Arc<SessionInfo>, ()| {
            let st = st.clone();
            async move {
                let here = st.services.sm.node();
                if let Some(user) = info.jid.node().map(|n| n.to_string())
                    && !st
                        .services
                        .sm
                        .sessions_of(&st.host, &user)
                        .iter()
                        .any(|s| s.node == here)
                {
                    st.cache.remove(&user);
                }
                Flow::Continue(())
            }
        },
    )?;

    let st = state.clone();
    hooks.subscribe_fn(
        &REMOVE_USER,
        scope,
        50,
        Some(cell.clone()),
        move |account: crate::hooks::Account, ()| {
            let st = st.clone();
            async move {
                let _guard = st.write.lock().await;
                let list = st.list(&account.user, false).await;
                for jid in list.iter() {
                    let _ = st
                        .services
                        .backend
                        .map_delete(&account.host, &account.user, MAP, jid)
                        .await;
                }
                st.cache.remove(&account.user);
                Flow::Continue(())
            }
        },
    )?;
    Ok(())
}

/// Whether `el` (to a local user of the host) comes from a JID that user
/// blocks.
async fn inbound_blocked(st: &State, el: &Element) -> bool {
    let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
        return false;
    };
    let Some((user, _)) = local_user(to, &st.host) else {
        return false;
    };
    if is_self(from, &user, &st.host) {
        return false;
    }
    let keep = st.cache.contains_key(&user);
    st.blocks(&user, from, keep).await
}

/// The items of a `<block/>`/`<unblock/>`, normalised; `Err` with the
/// reply's condition for a bad JID.
fn items(el: &Element) -> Result<Vec<Jid>, StanzaErrorCondition> {
    el.children()
        .filter(|c| c.is("item", ns::BLOCKING))
        .map(|c| {
            c.attr("jid")
                .ok_or(StanzaErrorCondition::BadRequest)
                .and_then(|j| crate::jid::parse(j).map_err(|e| e.condition))
        })
        .collect()
}

/// A `<block/>`/`<unblock/>`/`<blocklist/>` with `jids` as items.
fn with_items<'a>(name: &str, jids: impl IntoIterator<Item = &'a String>) -> Element {
    Element::builder(name.to_owned(), ns::BLOCKING)
        .append_all(jids.into_iter().map(|j| {
            Element::builder("item", ns::BLOCKING)
                .attr("jid", j.clone())
                .build()
        }))
        .build()
}

/// Answers a blocking IQ: the reply, and the push to send after it.
async fn handle(st: &State, iq: Element) -> (Element, Option<(String, Element)>) {
    let Some((user, _)) = own_account(&iq) else {
        return (iq_error_reply(&iq, StanzaErrorCondition::Forbidden), None);
    };
    let Some(child) = iq.children().next() else {
        return (iq_error_reply(&iq, StanzaErrorCondition::BadRequest), None);
    };
    let set = iq.attr("type") == Some("set");
    match (set, child.name()) {
        (false, "blocklist") => {
            let list = st.list(&user, true).await;
            let mut reply = iq_result(&iq, None);
            reply.append_child(with_items("blocklist", list.iter()));
            (reply, None)
        }
        (true, "block") => match items(child) {
            Ok(jids) if jids.is_empty() => {
                (iq_error_reply(&iq, StanzaErrorCondition::BadRequest), None)
            }
            Ok(jids) => {
                let jids: Vec<String> = jids.iter().map(|j| j.to_string()).collect();
                if let Err(c) = block(st, &user, &jids).await {
                    return (iq_error_reply(&iq, c), None);
                }
                (
                    iq_result(&iq, None),
                    Some((user, with_items("block", jids.iter()))),
                )
            }
            Err(c) => (iq_error_reply(&iq, c), None),
        },
        (true, "unblock") => match items(child) {
            Ok(jids) => {
                let jids: Vec<String> = jids.iter().map(|j| j.to_string()).collect();
                if let Err(c) = unblock(st, &user, &jids).await {
                    return (iq_error_reply(&iq, c), None);
                }
                (
                    iq_result(&iq, None),
                    Some((user, with_items("unblock", jids.iter()))),
                )
            }
            Err(c) => (iq_error_reply(&iq, c), None),
        },
        _ => (iq_error_reply(&iq, StanzaErrorCondition::BadRequest), None),
    }
}

/// Adds `jids` to the list; the user's available resources send
/// `unavailable` to the newly blocked contacts first.
async fn block(st: &State, user: &str, jids: &[String]) -> Result<(), StanzaErrorCondition> {
    let _guard = st.write.lock().await;
    let old = st.list(user, true).await;
    let added: Vec<&String> = jids.iter().filter(|j| !old.contains(*j)).collect();
    if added.is_empty() {
        return Ok(());
    }
    // §3.3: before the list changes, so that the filter lets them pass.
    let added_set: BTreeSet<String> = added.iter().map(|j| (*j).clone()).collect();
    let targets = contacts_of(st, user, &added_set, |sub| sub.has_from()).await;
    if !targets.is_empty() {
        for s in st.services.sm.sessions_of(&st.host, user) {
            if s.priority.is_none() {
                continue;
            }
            let Some(from) = s.full_jid() else { continue };
            for to in &targets {
                let presence = Element::builder("presence", ns::JABBER_CLIENT)
                    .attr("type", "unavailable")
                    .attr("from", from.to_string())
                    .attr("to", to.as_str())
                    .build();
                st.services.router.route(presence).await;
            }
        }
    }
    let mut new = (*old).clone();
    for jid in added {
        if let Err(e) = st
            .services
            .backend
            .map_put(&st.host, user, MAP, jid, Vec::new())
            .await
        {
            tracing::warn!(%user, host = %st.host, error = %e, "block list: write failed");
            st.cache.remove(user);
            return Err(StanzaErrorCondition::InternalServerError);
        }
        new.insert(jid.clone());
    }
    st.cache.insert(user.to_owned(), Arc::new(new));
    Ok(())
}

/// The roster contacts of `user` whose subscription passes `sub` and that
/// `entries` (block list items) match: their bare JID, or the item itself
/// when it is a full JID of the contact.
async fn contacts_of(
    st: &State,
    user: &str,
    entries: &BTreeSet<String>,
    sub: impl Fn(Subscription) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for item in roster::items(&st.services, &st.host, user).await {
        if !sub(item.subscription) {
            continue;
        }
        let Ok(contact) = crate::jid::parse(&item.jid) else {
            continue;
        };
        if matches(entries, &contact) {
            out.push(item.jid.clone());
            continue;
        }
        for e in entries {
            if let Ok(j) = crate::jid::parse(e)
                && j.resource().is_some()
                && j.to_bare() == contact.to_bare()
            {
                out.push(e.clone());
            }
        }
    }
    out
}

/// Removes `jids` from the list, or everything when `jids` is empty.
async fn unblock(st: &State, user: &str, jids: &[String]) -> Result<(), StanzaErrorCondition> {
    let _guard = st.write.lock().await;
    let old = st.list(user, true).await;
    let gone: Vec<String> = if jids.is_empty() {
        old.iter().cloned().collect()
    } else {
        jids.iter().filter(|j| old.contains(*j)).cloned().collect()
    };
    let mut new = (*old).clone();
    let mut removed = BTreeSet::new();
    for jid in gone {
        if let Err(e) = st
            .services
            .backend
            .map_delete(&st.host, user, MAP, &jid)
            .await
        {
            tracing::warn!(%user, host = %st.host, error = %e, "block list: write failed");
            st.cache.remove(user);
            return Err(StanzaErrorCondition::InternalServerError);
        }
        new.remove(&jid);
        removed.insert(jid);
    }
    st.cache.insert(user.to_owned(), Arc::new(new));
    if removed.is_empty() {
        return Ok(());
    }
    // §3.3 in reverse: contacts subscribed to the user's presence get it
    // again from each available resource; the user probes the contacts
    // it is subscribed to, whose presence was dropped meanwhile.
    for to in contacts_of(st, user, &removed, |sub| sub.has_from()).await {
        for s in st.services.sm.sessions_of(&st.host, user) {
            let (Some(from), Some(xml)) = (s.full_jid(), s.presence.as_deref()) else {
                continue;
            };
            if let Some(mut p) = roster::parse_stanza(xml) {
                p.set_attr("from", from.to_string());
                p.set_attr("to", to.clone());
                st.services.router.route(p).await;
            }
        }
    }
    let bare = format!("{user}@{}", st.host);
    for to in contacts_of(st, user, &removed, |sub| sub.has_to()).await {
        let probe = Element::builder("presence", ns::JABBER_CLIENT)
            .attr("type", "probe")
            .attr("from", bare.clone())
            .attr("to", to)
            .build();
        st.services.router.route(probe).await;
    }
    Ok(())
}

/// Sends `event` (a `<block/>` or `<unblock/>`) to every session of
/// `user`, from the user's bare JID.
async fn push(st: &State, user: &str, event: Element) {
    let bare = format!("{user}@{}", st.host);
    for (i, s) in st
        .services
        .sm
        .sessions_of(&st.host, user)
        .iter()
        .enumerate()
    {
        let Some(to) = s.full_jid() else { continue };
        let iq = Element::builder("iq", ns::JABBER_CLIENT)
            .attr("type", "set")
            .attr("id", format!("push-{}-{i}", s.sid))
            .attr("from", bare.clone())
            .attr("to", to.to_string())
            .append(event.clone())
            .build();
        st.services.router.route(iq).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn jid(s: &str) -> Jid {
        crate::jid::parse(s).expect("valid")
    }

    #[test]
    fn matching_rules_of_xep_0016() {
        let l = list(&["romeo@montague.net"]);
        assert!(matches(&l, &jid("romeo@montague.net")));
        assert!(matches(&l, &jid("romeo@montague.net/orchard")));
        assert!(!matches(&l, &jid("montague.net")));
        assert!(!matches(&l, &jid("benvolio@montague.net")));

        let l = list(&["romeo@montague.net/orchard"]);
        assert!(matches(&l, &jid("romeo@montague.net/orchard")));
        assert!(!matches(&l, &jid("romeo@montague.net/garden")));
        assert!(!matches(&l, &jid("romeo@montague.net")));

        let l = list(&["montague.net"]);
        assert!(matches(&l, &jid("romeo@montague.net/orchard")));
        assert!(matches(&l, &jid("montague.net")));
        assert!(matches(&l, &jid("montague.net/res")));
        assert!(!matches(&l, &jid("capulet.net")));

        let l = list(&["montague.net/res"]);
        assert!(matches(&l, &jid("montague.net/res")));
        assert!(!matches(&l, &jid("romeo@montague.net/res")));
        assert!(!matches(&l, &jid("montague.net")));
    }
}
