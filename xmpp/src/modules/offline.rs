//! `mod_offline`: offline message storage and delivery (XEP-0160), as
//! ejabberd's `mod_offline`.
//!
//! - **Storing** ([`OFFLINE_MESSAGE`]): a `chat` or `normal` message to an
//!   existing user with no available resource is kept in the user's
//!   backend queue `offline`, with `<delay xmlns='urn:xmpp:delay'
//!   from='host' stamp='…'>Offline Storage</delay>` (XEP-0203, UTC) added.
//!   What is worth keeping is decided as ejabberd does
//!   (`store_empty_body = unless_chat_state`): a `<no-store/>` hint
//!   (XEP-0334) keeps it out, a `<store/>` hint in; otherwise a message
//!   without `<body/>` or `<subject/>` whose children are all chat states,
//!   delays, hints, `jabber:x:event` or `<thread/>` (a "standalone chat
//!   state", or an empty message) is not stored. A message not stored is
//!   left to the router, which answers the sender `service-unavailable`.
//! - **Cap**: the queue holds at most `[limits] max_offline_messages` (by
//!   ACL) messages. When it is full the sender gets
//!   `<resource-constraint/>` ("Your contact offline message queue is full.
//!   The message has been discarded.", as ejabberd's
//!   `discard_warn_sender`) and the message is dropped.
//! - **Delivery**: when a session sends available presence of
//!   non-negative priority (its first, or a change from a negative
//!   priority — XEP-0160 §3: a resource of negative priority gets no
//!   offline messages, as ejabberd's `c2s_self_presence`), the queue is
//!   taken and each message routed, in the order stored, to that session's
//!   full JID. Taking empties the queue in one transaction: each message
//!   is delivered once, to one session. This runs in `user_send_packet` on
//!   the client's own presence (the session table already has the new
//!   priority); `user_available_hook` alone would miss the change from a
//!   negative priority.
//! - **Removal** ([`REMOVE_USER`]): the queue is deleted.
//! - Disco feature `msgoffline` (XEP-0160 §4).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use beamline_runtime::hooks::{Answer, Flow, Scope};
use beamline_storage::backend::BackendError;
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};

use super::private::decode_stored;
use super::{Services, holder_tree};
use crate::hooks::{OFFLINE_MESSAGE, REMOVE_USER, SessionInfo, USER_SEND_PACKET};
use crate::ns;
use crate::stanza_error::{StanzaError, StanzaErrorCondition, error_reply};
use crate::xml::Element;

/// The backend queue of each user's offline messages.
const QUEUE: &str = "offline";

/// XEP-0334 message processing hints.
const NS_HINTS: &str = "urn:xmpp:hints";
/// Legacy message events (XEP-0022).
const NS_EVENT: &str = "jabber:x:event";

/// Priority of the subscriptions: ejabberd's usual 50.
const PRIORITY: i32 = 50;

/// The `mod_offline` module.
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
        "mod_offline"
    }

    fn start(&self, ctx: &ModuleContext, _opts: &ModuleOptions) -> Result<ChildSpec, String> {
        let services = self.services.clone();
        services.feature(ctx, "msgoffline");
        let host = ctx.host().to_owned();
        Ok(holder_tree(
            ctx.module(),
            Arc::new(move |cell| {
                let hooks = &services.hooks;
                let s = services.clone();
                hooks
                    .subscribe_fn(
                        &OFFLINE_MESSAGE,
                        Scope::Host(&host),
                        PRIORITY,
                        Some(cell.clone()),
                        move |msg, stored| {
                            let s = s.clone();
                            async move {
                                if stored {
                                    return Flow::Continue(true);
                                }
                                store(&s, msg).await
                            }
                        },
                    )
                    .map_err(|e| e.to_string())?;
                // An `Arc`: the closure runs for every stanza a client sends.
                let s = Arc::new(services.clone());
                hooks
                    .subscribe_answer(
                        &USER_SEND_PACKET,
                        Scope::Host(&host),
                        PRIORITY,
                        Some(cell.clone()),
                        move |info: Arc<SessionInfo>, acc: Option<Element>| {
                            if !acc.as_ref().is_some_and(available_presence) {
                                return Answer::Now(Flow::Continue(acc));
                            }
                            let s = s.clone();
                            Answer::later(async move {
                                deliver_to(&s, &info).await;
                                Flow::Continue(acc)
                            })
                        },
                    )
                    .map_err(|e| e.to_string())?;
                let backend = services.backend.clone();
                hooks
                    .subscribe_fn(
                        &REMOVE_USER,
                        Scope::Host(&host),
                        PRIORITY,
                        Some(cell),
                        move |account, ()| {
                            let backend = backend.clone();
                            async move {
                                let _ = backend
                                    .queue_take(&account.host, &account.user, QUEUE)
                                    .await;
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

/// A client's own available presence (no `to`, no `type`) with a
/// non-negative priority.
fn available_presence(el: &Element) -> bool {
    el.name() == "presence"
        && el.attr("to").is_none()
        && el.attr("type").is_none()
        && el
            .child_text("priority", ns::JABBER_CLIENT)
            .and_then(|p| p.trim().parse::<i8>().ok())
            .unwrap_or(0)
            >= 0
}

/// Whether a message is worth storing (ejabberd's `need_to_store` with
/// `store_empty_body = unless_chat_state`).
pub(crate) fn worth_storing(msg: &Element) -> bool {
    // The router offers chat and normal messages (a type it does not
    // understand counts as normal); the others are never stored.
    if matches!(msg.attr("type"), Some("groupchat" | "headline" | "error")) {
        return false;
    }
    if msg.has_child("no-store", NS_HINTS) {
        return false;
    }
    if msg.has_child("store", NS_HINTS) {
        return true;
    }
    msg.children().any(|c| {
        let ns = c.ns();
        if ns == ns::JABBER_CLIENT {
            return c.name() != "thread";
        }
        !matches!(ns, ns::CHATSTATES | ns::DELAY | NS_HINTS | NS_EVENT)
    })
}

/// The XEP-0082 UTC timestamp of `t`, with milliseconds:
/// `2026-12-05T00:30:28.123Z`.
pub(crate) fn utc_stamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// (year, month, day) of a day counted from 1970-01-01 (H. Hinnant's
/// civil-from-days).
fn civil_from_days(days: u64) -> (i64, i64, i64) {
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// OFFLINE_MESSAGE: stores `msg` if it is worth it and there is room.
async fn store(services: &Services, mut msg: Element) -> Flow<bool> {
    let Some((user, host)) = msg.attr("to").and_then(super::private::account_of) else {
        return Flow::Continue(false);
    };
    if !worth_storing(&msg) {
        return Flow::Continue(false);
    }
    let delay = Element::builder("delay", ns::DELAY)
        .attr("from", host.clone())
        .attr("stamp", utc_stamp(SystemTime::now()))
        .text("Offline Storage")
        .build();
    msg.append_child(delay);
    let max = services.access.max_offline_messages(&user, &host);
    match services
        .backend
        .queue_push(&host, &user, QUEUE, msg.to_bytes(), max)
        .await
    {
        Ok(()) => Flow::Continue(true),
        Err(BackendError::QueueFull { .. }) => {
            let error = StanzaError::new(StanzaErrorCondition::ResourceConstraint).with_text(
                "Your contact offline message queue is full. The message has been discarded.",
                Some("en"),
            );
            msg.remove_child("delay", ns::DELAY);
            if let Some(reply) = error_reply(&msg, &error, false) {
                services.router.route(reply).await;
            }
            // Handled: the sender has its error, the router adds none.
            Flow::Stop(true)
        }
        Err(e) => {
            tracing::warn!(%user, %host, error = %e, "offline storage failed");
            Flow::Continue(false)
        }
    }
}

/// Delivers the stored messages of `info`'s user to that session.
async fn deliver_to(services: &Services, info: &SessionInfo) {
    let jid = &info.jid;
    let Some(user) = jid.node().map(|n| n.to_string()) else {
        return;
    };
    let host = jid.domain().to_string();
    let backend = &services.backend;
    // Cheap check first: most presence updates find nothing waiting.
    if !matches!(backend.queue_len(&host, &user, QUEUE).await, Ok(n) if n > 0) {
        return;
    }
    let items = match backend.queue_take(&host, &user, QUEUE).await {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!(%user, %host, error = %e, "offline messages: read failed");
            return;
        }
    };
    let to = jid.to_string();
    for bytes in items {
        let Some(mut msg) = decode_stored(&bytes) else {
            tracing::warn!(%user, %host, "offline messages: unreadable entry dropped");
            continue;
        };
        msg.set_attr("to", to.clone());
        services.router.route(msg).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(children: Vec<Element>) -> Element {
        Element::builder("message", ns::JABBER_CLIENT)
            .attr("type", "chat")
            .append_all(children)
            .build()
    }

    #[test]
    fn what_is_stored() {
        let body = Element::builder("body", ns::JABBER_CLIENT)
            .text("hi")
            .build();
        let active = Element::new("active", ns::CHATSTATES);
        let thread = Element::builder("thread", ns::JABBER_CLIENT)
            .text("t")
            .build();
        assert!(worth_storing(&msg(vec![body.clone(), active.clone()])));
        assert!(!worth_storing(&msg(vec![active.clone(), thread])));
        assert!(!worth_storing(&msg(vec![])));
        assert!(worth_storing(&msg(vec![Element::new(
            "request",
            ns::RECEIPTS
        )])));
        assert!(!worth_storing(&msg(vec![
            body.clone(),
            Element::new("no-store", NS_HINTS)
        ])));
        assert!(worth_storing(&msg(vec![
            active,
            Element::new("store", NS_HINTS)
        ])));
        let mut headline = msg(vec![body]);
        headline.set_attr("type", "headline");
        assert!(!worth_storing(&headline));
    }

    #[test]
    fn stamps_are_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_031_699_305_042);
        assert_eq!(utc_stamp(t), "2002-09-10T23:08:25.042Z");
        assert_eq!(utc_stamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(utc_stamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
