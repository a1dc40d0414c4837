//! `mod_presence`: presence subscriptions, broadcast and probes (RFC 6121
//! §3–4), on the rosters of `mod_roster`.
//!
//! **Subscriptions.** [`transition`] is the state machine of RFC 6121
//! Appendix A as a pure function: a state (none/to/from/both, pending out,
//! pending in, pre-approved), a direction and a stanza type give the next
//! state, whether the stanza goes on (routed when outbound, delivered when
//! inbound) and whether the server answers `subscribed` itself. Outbound
//! subscription stanzas (`user_send_packet`, presence with `to`) are
//! stamped with the user's bare JID (§3.1.2) and routed by this module;
//! inbound ones (`presence_in`) change the recipient's roster and are
//! delivered only when the table says so. Every visible change is a
//! roster push. A `subscribe` that is not delivered at once is kept as
//! "pending in" and delivered again at each initial presence of the
//! contact until answered (§3.1.3). A `subscribed` sent with no request
//! pending pre-approves (§3.4, stream feature
//! `<sub xmlns='urn:xmpp:features:pre-approval'/>`).
//!
//! Choices where the RFC leaves room (as ejabberd, unless said):
//! - outbound `subscribe`, `unsubscribe` and `unsubscribed` are routed
//!   also when they change nothing here (the contact's server ignores
//!   what changes nothing there), except an `unsubscribed` that cancels a
//!   pre-approval (§3.2.2); outbound `subscribed` only when it approves a
//!   pending request (§3.1.5, §3.4);
//! - approving (`subscribed`, also the automatic one for a pre-approved
//!   or already subscribed contact) is followed by the current presence
//!   of each of the approver's available resources (§3.1.5); cancelling
//!   a subscription (`unsubscribed` that removes `from`, inbound
//!   `unsubscribe` that removes `from`) comes with `unavailable` from
//!   each (§3.2.2: before the `unsubscribed`; §3.3.3);
//! - a subscription stanza to an account that does not exist: `subscribe`
//!   is answered `unsubscribed` (§3.1.3), the others are dropped.
//!
//! **Presence.** The client's own presence (no `to`) goes to every contact
//! with subscription `from`/`both` and to the user's available resources
//! (the sender included for available presence, §4.2.2 and §4.4.2), from
//! the full JID. At initial presence (`user_available_hook`) the new
//! resource gets the presence of the contacts it is subscribed to (a
//! local contact is answered directly, as a probe would be; a remote one
//! gets a probe from the bare JID, §4.3.1), the presence of the user's
//! other available resources, and the pending subscription requests.
//! Unavailable (also the one c2s makes when a session ends) goes to the
//! same contacts and the user's other resources. Directed presence passes.
//!
//! **Probes** (§4.3.2) are never delivered. The prober gets the last
//! presence of each available resource if it has a `from`/`both`
//! subscription (or is the user), nothing if the contact has no available
//! resource (option b); `unsubscribed` if the account does not exist or
//! the prober is not subscribed — except while the prober's own request
//! is pending, which that would cancel.

use std::sync::Arc;

use beamline_runtime::hooks::{Answer, Flow, Scope};
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};

use super::roster::{self, RosterItem, Subscription};
use super::{Services, holder_tree};
use crate::hooks::{
    C2S_STREAM_FEATURES, PRESENCE_IN, SessionInfo, USER_AVAILABLE, USER_SEND_PACKET,
};
use crate::jid::{self, BareJid, Jid};
use crate::ns;
use crate::xml::Element;

// ---------------------------------------------------------------------
// The state machine (RFC 6121 Appendix A).

/// Which way a subscription stanza goes, seen from the roster's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The owner sent it (Appendix A.2).
    Outbound,
    /// The owner receives it (Appendix A.3).
    Inbound,
}

/// The four subscription stanza types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubKind {
    /// `subscribe`: a request for the recipient's presence.
    Subscribe,
    /// `subscribed`: the sender approves.
    Subscribed,
    /// `unsubscribe`: the sender no longer wants the recipient's presence.
    Unsubscribe,
    /// `unsubscribed`: the sender denies or cancels.
    Unsubscribed,
}

impl SubKind {
    /// From a presence `type`.
    pub fn parse(t: &str) -> Option<SubKind> {
        match t {
            "subscribe" => Some(SubKind::Subscribe),
            "subscribed" => Some(SubKind::Subscribed),
            "unsubscribe" => Some(SubKind::Unsubscribe),
            "unsubscribed" => Some(SubKind::Unsubscribed),
            _ => None,
        }
    }
}

/// The subscription state of one contact in one roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubState {
    /// The owner receives the contact's presence.
    pub to: bool,
    /// The contact receives the owner's presence.
    pub from: bool,
    /// The owner asked and the contact has not answered ("Pending Out").
    pub pending_out: bool,
    /// The contact asked and the owner has not answered ("Pending In").
    pub pending_in: bool,
    /// The owner pre-approved the contact's request (§3.4).
    pub approved: bool,
}

impl SubState {
    /// The state an item holds (`None`: no item, state "None").
    pub fn of(item: Option<&RosterItem>) -> SubState {
        item.map_or_else(SubState::default, |i| SubState {
            to: i.subscription.has_to(),
            from: i.subscription.has_from(),
            pending_out: i.ask,
            pending_in: i.pending_in.is_some(),
            approved: i.approved,
        })
    }

    /// Whether this is one of the nine states of Appendix A (pending out
    /// only without `to`, pending in only without `from`) and pre-approval
    /// only while the contact neither has nor asks for a subscription.
    pub fn is_valid(self) -> bool {
        let out_ok = !self.to || !self.pending_out;
        let in_ok = !self.from || !self.pending_in;
        let approved_ok = !self.approved || !(self.from || self.pending_in);
        out_ok && in_ok && approved_ok
    }
}

/// What a subscription stanza does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The state afterwards.
    pub next: SubState,
    /// Outbound: route it to the contact. Inbound: deliver it to the
    /// owner's available resources.
    pub forward: bool,
    /// Inbound `subscribe` only: the server answers `subscribed` on the
    /// owner's behalf (already subscribed, or pre-approved).
    pub auto_reply: bool,
}

/// The state machine: RFC 6121 Appendix A.2 (outbound) and A.3 (inbound),
/// with pre-approval (§3.4) and the routing choices of the module docs.
pub fn transition(s: SubState, dir: Direction, kind: SubKind) -> Outcome {
    let mut n = s;
    let (forward, auto_reply) = match (dir, kind) {
        (Direction::Outbound, SubKind::Subscribe) => {
            if !s.to {
                n.pending_out = true;
            }
            (true, false)
        }
        (Direction::Outbound, SubKind::Unsubscribe) => {
            n.to = false;
            n.pending_out = false;
            (true, false)
        }
        (Direction::Outbound, SubKind::Subscribed) => {
            if s.pending_in {
                n.from = true;
                n.pending_in = false;
                n.approved = false;
                (true, false)
            } else {
                if !s.from {
                    n.approved = true;
                }
                (false, false)
            }
        }
        (Direction::Outbound, SubKind::Unsubscribed) => {
            n.from = false;
            n.pending_in = false;
            n.approved = false;
            // §3.2.2: cancelling a pre-approval is not routed.
            (!s.approved, false)
        }
        (Direction::Inbound, SubKind::Subscribe) => {
            if s.from {
                (false, true)
            } else if s.approved {
                n.from = true;
                n.approved = false;
                (false, true)
            } else if s.pending_in {
                (false, false)
            } else {
                n.pending_in = true;
                (true, false)
            }
        }
        (Direction::Inbound, SubKind::Subscribed) => {
            if s.pending_out {
                n.to = true;
                n.pending_out = false;
                (true, false)
            } else {
                (false, false)
            }
        }
        (Direction::Inbound, SubKind::Unsubscribe) => {
            if s.from || s.pending_in {
                n.from = false;
                n.pending_in = false;
                (true, false)
            } else {
                (false, false)
            }
        }
        (Direction::Inbound, SubKind::Unsubscribed) => {
            if s.to || s.pending_out {
                n.to = false;
                n.pending_out = false;
                (true, false)
            } else {
                (false, false)
            }
        }
    };
    Outcome {
        next: n,
        forward,
        auto_reply,
    }
}

/// Writes `next` into the item (created hidden when absent, unless the
/// state is unchanged); `request` is the `subscribe` kept when the state
/// becomes pending in.
fn apply(item: &mut Option<RosterItem>, jid: &str, next: SubState, request: Option<&Element>) {
    if SubState::of(item.as_ref()) == next {
        return;
    }
    let i = item.get_or_insert_with(|| RosterItem::new(jid));
    i.subscription = Subscription::from_parts(next.to, next.from);
    i.ask = next.pending_out;
    i.approved = next.approved;
    if !next.pending_in {
        i.pending_in = None;
    } else if i.pending_in.is_none() {
        let xml = request.map(|r| String::from_utf8_lossy(&r.to_bytes()).into_owned());
        i.pending_in = Some(xml.unwrap_or_default());
    }
}

// ---------------------------------------------------------------------
// Helpers.

fn presence(from: &str, to: &str, kind: &str) -> Element {
    Element::builder("presence", ns::JABBER_CLIENT)
        .attr("from", from)
        .attr("to", to)
        .attr("type", kind)
        .build()
}

fn user_of(j: &Jid) -> (String, String) {
    (
        j.node().map(|n| n.to_string()).unwrap_or_default(),
        j.domain().to_string(),
    )
}

/// Routes the last presence of each available resource of `user@host`
/// to `to`.
async fn send_current_presence(s: &Services, host: &str, user: &str, to: &str) {
    for r in s.sm.sessions_of(host, user) {
        if r.priority.is_none() {
            continue;
        }
        let Some(mut p) = r.presence.as_deref().and_then(roster::parse_stanza) else {
            continue;
        };
        p.set_attr("from", format!("{user}@{host}/{}", r.resource));
        p.set_attr("to", to);
        s.router.route(p).await;
    }
}

/// Routes `unavailable` from each available resource of `user@host` to
/// `to`.
async fn send_unavailable(s: &Services, host: &str, user: &str, to: &str) {
    for r in s.sm.sessions_of(host, user) {
        if r.priority.is_none() {
            continue;
        }
        let from = format!("{user}@{host}/{}", r.resource);
        s.router.route(presence(&from, to, "unavailable")).await;
    }
}

async fn exists(s: &Services, host: &str, user: &str) -> bool {
    matches!(s.backend.credentials(host, user).await, Ok(Some(_)))
}

// ---------------------------------------------------------------------
// Outbound.

/// A subscription stanza the user sent (`to` set, `from` the full JID).
async fn outbound_subscription(s: &Services, info: &SessionInfo, mut el: Element, kind: SubKind) {
    let Some(Ok(to)) = el.attr("to").map(jid::parse) else {
        return;
    };
    let contact = to.to_bare().to_string();
    let me = info.jid.to_bare().to_string();
    let user = info.jid.node().map(|n| n.to_string()).unwrap_or_default();
    let host = info.jid.domain().to_string();
    let (outcome, before, _) = roster::update_item(s, &host, &user, &contact, |item| {
        let o = transition(SubState::of(item.as_ref()), Direction::Outbound, kind);
        apply(item, &contact, o.next, None);
        let shown = match kind {
            SubKind::Subscribe => true,
            SubKind::Subscribed => o.forward || o.next.approved,
            _ => false,
        };
        if shown {
            item.get_or_insert_with(|| RosterItem::new(contact.clone()))
                .in_roster = true;
        }
        o
    })
    .await;
    if !outcome.forward {
        return;
    }
    el.set_attr("from", me.clone());
    el.set_attr("to", contact.clone());
    // §3.2.2: unavailable while the contact is still subscribed, then the
    // cancellation.
    if kind == SubKind::Unsubscribed && SubState::of(before.as_ref()).from {
        send_unavailable(s, &host, &user, &contact).await;
    }
    s.router.route(el).await;
    if kind == SubKind::Subscribed {
        send_current_presence(s, &host, &user, &contact).await;
    }
}

/// The user's own presence (no `to`): to the contacts subscribed to it
/// and to the user's resources.
async fn broadcast(s: &Services, info: &SessionInfo, el: &Element) {
    let user = info.jid.node().map(|n| n.to_string()).unwrap_or_default();
    let host = info.jid.domain().to_string();
    for item in roster::items(s, &host, &user).await {
        if item.subscription.has_from() {
            let mut p = el.clone();
            p.set_attr("to", item.jid.clone());
            s.router.route(p).await;
        }
    }
    let mut own = el.clone();
    own.set_attr("to", info.jid.to_bare().to_string());
    s.router.route(own).await;
}

/// A session's first available presence: what it should now know.
async fn initial_presence(s: &Services, info: &SessionInfo) {
    let user = info.jid.node().map(|n| n.to_string()).unwrap_or_default();
    let host = info.jid.domain().to_string();
    let me = info.jid.to_bare().to_string();
    let full = info.jid.to_string();
    let items = roster::items(s, &host, &user).await;
    for item in items.iter().filter(|i| i.subscription.has_to()) {
        let Ok(contact) = BareJid::new(&item.jid) else {
            continue;
        };
        match contact.node() {
            Some(node) if s.router.serves(contact.domain().as_str()) => {
                answer_probe(s, contact.domain().as_str(), node.as_str(), &me, &full).await;
            }
            _ => s.router.route(presence(&me, &item.jid, "probe")).await,
        }
    }
    let sessions = s.sm.sessions_of(&host, &user);
    for r in &sessions {
        if r.resource == info.jid.resource().as_str() || r.priority.is_none() {
            continue;
        }
        if let Some(mut p) = r.presence.as_deref().and_then(roster::parse_stanza) {
            p.set_attr("from", format!("{me}/{}", r.resource));
            p.set_attr("to", full.clone());
            s.router.route(p).await;
        }
    }
    let Some(sid) = sessions
        .iter()
        .find(|r| r.resource == info.jid.resource().as_str())
        .map(|r| r.sid)
    else {
        return;
    };
    for item in &items {
        let Some(xml) = &item.pending_in else {
            continue;
        };
        let mut req =
            roster::parse_stanza(xml).unwrap_or_else(|| presence(&item.jid, &me, "subscribe"));
        req.set_attr("from", item.jid.clone());
        req.set_attr("to", full.clone());
        req.set_attr("type", "subscribe");
        roster::deliver_to_session(s, sid, req);
    }
}

// ---------------------------------------------------------------------
// Inbound.

/// A probe of `user@host` (the contact) by `prober` (a bare JID); the
/// answers go to `reply_to`.
async fn answer_probe(s: &Services, host: &str, user: &str, prober: &str, reply_to: &str) {
    let contact = format!("{user}@{host}");
    if prober == contact {
        send_current_presence(s, host, user, reply_to).await;
        return;
    }
    if !exists(s, host, user).await {
        s.router
            .route(presence(&contact, prober, "unsubscribed"))
            .await;
        return;
    }
    let item = roster::get_item(s, host, user, prober).await;
    let state = SubState::of(item.as_ref());
    if state.from {
        send_current_presence(s, host, user, reply_to).await;
    } else if !state.pending_in {
        s.router
            .route(presence(&contact, prober, "unsubscribed"))
            .await;
    }
}

/// A presence for a local user: subscriptions and probes are handled
/// here; `None` = not delivered.
async fn inbound(s: &Services, el: Element) -> Option<Element> {
    let kind = match el.attr("type") {
        Some("probe") => None,
        Some(t) => match SubKind::parse(t) {
            Some(k) => Some(k),
            None => return Some(el),
        },
        None => return Some(el),
    };
    let (Some(Ok(to)), Some(Ok(from))) = (
        el.attr("to").map(jid::parse),
        el.attr("from").map(jid::parse),
    ) else {
        return Some(el);
    };
    let (user, host) = user_of(&to);
    let contact_bare = to.to_bare().to_string();
    let sender = from.to_bare().to_string();
    let Some(kind) = kind else {
        answer_probe(s, &host, &user, &sender, &from.to_string()).await;
        return None;
    };
    if !exists(s, &host, &user).await {
        if kind == SubKind::Subscribe {
            s.router
                .route(presence(&contact_bare, &sender, "unsubscribed"))
                .await;
        }
        return None;
    }
    let mut el = el;
    el.set_attr("from", sender.clone());
    el.set_attr("to", contact_bare.clone());
    let request = el.clone();
    let (outcome, before, _) = roster::update_item(s, &host, &user, &sender, |item| {
        let o = transition(SubState::of(item.as_ref()), Direction::Inbound, kind);
        apply(item, &sender, o.next, Some(&request));
        o
    })
    .await;
    if outcome.auto_reply {
        s.router
            .route(presence(&contact_bare, &sender, "subscribed"))
            .await;
        send_current_presence(s, &host, &user, &sender).await;
        return None;
    }
    if kind == SubKind::Unsubscribe && SubState::of(before.as_ref()).from && !outcome.next.from {
        send_unavailable(s, &host, &user, &sender).await;
    }
    outcome.forward.then_some(el)
}

// ---------------------------------------------------------------------
// The module.

/// The `mod_presence` module.
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
        "mod_presence"
    }

    fn dependencies(&self) -> Vec<String> {
        vec!["mod_roster".to_owned()]
    }

    fn start(&self, ctx: &ModuleContext, _opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let services = self.services.clone();
        let host = ctx.host().to_owned();
        let setup = Arc::new(move |cell: ractor::ActorCell| {
            let hooks = &services.hooks;
            let scope = Scope::Host(&host);
            hooks
                .subscribe_fn(
                    &C2S_STREAM_FEATURES,
                    scope,
                    50,
                    Some(cell.clone()),
                    |_host: String, mut acc: Vec<Element>| async move {
                        acc.push(Element::new("sub", ns::PRE_APPROVAL));
                        Flow::Continue(acc)
                    },
                )
                .map_err(|e| e.to_string())?;
            // An `Arc`: the closure runs for every stanza a client sends.
            let s = Arc::new(services.clone());
            hooks
                .subscribe_answer(
                    &USER_SEND_PACKET,
                    scope,
                    80,
                    Some(cell.clone()),
                    move |info: Arc<SessionInfo>, acc: Option<Element>| {
                        let Some(el) = acc else {
                            return Answer::Now(Flow::Continue(None));
                        };
                        if el.name() != "presence" {
                            return Answer::Now(Flow::Continue(Some(el)));
                        }
                        let s = s.clone();
                        Answer::later(async move {
                            let kind = el.attr("type").and_then(SubKind::parse);
                            match (el.attr("to").is_some(), kind, el.attr("type")) {
                                (true, Some(kind), _) => {
                                    outbound_subscription(&s, &info, el, kind).await;
                                    Flow::Continue(None)
                                }
                                (false, None, None | Some("unavailable")) => {
                                    broadcast(&s, &info, &el).await;
                                    Flow::Continue(Some(el))
                                }
                                _ => Flow::Continue(Some(el)),
                            }
                        })
                    },
                )
                .map_err(|e| e.to_string())?;
            let s = services.clone();
            hooks
                .subscribe_fn(
                    &USER_AVAILABLE,
                    scope,
                    50,
                    Some(cell.clone()),
                    move |info: Arc<SessionInfo>, acc: ()| {
                        let s = s.clone();
                        async move {
                            initial_presence(&s, &info).await;
                            Flow::Continue(acc)
                        }
                    },
                )
                .map_err(|e| e.to_string())?;
            let s = services.clone();
            hooks
                .subscribe_fn(
                    &PRESENCE_IN,
                    scope,
                    50,
                    Some(cell),
                    move |(), acc: Option<Element>| {
                        let s = s.clone();
                        async move {
                            match acc {
                                Some(el) => Flow::Continue(inbound(&s, el).await),
                                None => Flow::Continue(None),
                            }
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

    #[test]
    fn pre_approval_then_request_is_approved_at_once() {
        let s = SubState::default();
        let o = transition(s, Direction::Outbound, SubKind::Subscribed);
        assert!(o.next.approved && !o.forward);
        let o = transition(o.next, Direction::Inbound, SubKind::Subscribe);
        assert!(o.auto_reply && o.next.from && !o.next.approved && !o.forward);
    }
}
