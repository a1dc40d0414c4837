//! `mod_ping`: XMPP ping (XEP-0199), as ejabberd's `mod_ping`.
//!
//! - A ping (`<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>`) to the
//!   server or to an account's bare JID is answered with an empty result;
//!   anything else in the namespace is `bad-request`.
//! - With `send_pings = true` the server pings its clients: a local
//!   session that sent nothing for `ping_interval` seconds gets a ping
//!   from the server's domain; if it answers neither with a result nor an
//!   error within `ping_ack_timeout` seconds, `timeout_action = "kill"`
//!   closes its stream (`connection-timeout`, "Ping timeout"), `"none"`
//!   only stops waiting. Every stanza a client sends counts as activity
//!   (`user_send_packet`), where the answer to the ping is also seen: the
//!   router drops IQ results addressed to the server.
//!
//! Options (ejabberd's names): `send_pings` (false), `ping_interval`
//! (60 s), `ping_ack_timeout` (32 s), `timeout_action` (`"none"`);
//! `interval_secs`, if given, is read as `ping_interval` (the name the
//! example configuration used first).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use beamline_runtime::hooks::{Answer, Flow, Scope};
use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};
use dashmap::DashMap;
use ractor::{ActorCell, ActorStatus};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Services, holder_tree, opt_bool, opt_str, opt_u64};
use super::{iq_error, iq_result};
use crate::c2s::C2sMsg;
use crate::hooks::{SM_REGISTER_CONNECTION, SM_REMOVE_CONNECTION, SessionInfo, USER_SEND_PACKET};
use crate::jid::FullJid;
use crate::ns;
use crate::stanza_error::StanzaErrorCondition;
use crate::stream_error::StreamErrorCondition;
use crate::xml::Element;

/// The `mod_ping` module.
pub struct Mod {
    services: Services,
}

/// The module, for the module manager.
pub fn module(services: &Services) -> Arc<dyn Module> {
    Arc::new(Mod {
        services: services.clone(),
    })
}

/// What is known of a session's liveness.
#[derive(Debug, Clone)]
struct Track {
    /// When the client last sent anything (or the session started).
    last: Instant,
    /// The id and send time of a ping not answered yet.
    pending: Option<(String, Instant)>,
}

/// The server-to-client pinger of one host (one per start of the module's
/// holder).
struct Pinger {
    services: Services,
    host: String,
    interval: Duration,
    ack_timeout: Duration,
    kill: bool,
    sessions: DashMap<FullJid, Track>,
    next_id: AtomicU64,
}

impl Pinger {
    /// Notes activity of a tracked session (sessions are added when they
    /// bind, so a stanza racing with the session's end adds nothing back).
    fn touch(&self, jid: &FullJid, stanza: &Element) {
        if let Some(mut t) = self.sessions.get_mut(jid) {
            t.last = Instant::now();
            let answered = stanza.name() == "iq"
                && matches!(stanza.attr("type"), Some("result" | "error"))
                && t.pending
                    .as_ref()
                    .is_some_and(|(id, _)| stanza.attr("id") == Some(id.as_str()));
            if answered {
                t.pending = None;
            }
        }
    }

    /// One pass: pings the idle, acts on the silent.
    async fn tick(&self) {
        let now = Instant::now();
        let mut to_ping = Vec::new();
        let mut timed_out = Vec::new();
        for mut e in self.sessions.iter_mut() {
            let jid = e.key().clone();
            let t = e.value_mut();
            match &t.pending {
                Some((_, sent)) if now.duration_since(*sent) >= self.ack_timeout => {
                    t.pending = None;
                    t.last = now;
                    timed_out.push(jid);
                }
                Some(_) => {}
                None if now.duration_since(t.last) >= self.interval => {
                    let id = format!("ping-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
                    t.pending = Some((id.clone(), now));
                    to_ping.push((jid, id));
                }
                None => {}
            }
        }
        for (jid, id) in to_ping {
            let ping = Element::builder("iq", ns::JABBER_CLIENT)
                .attr("from", self.host.clone())
                .attr("to", jid.to_string())
                .attr("type", "get")
                .attr("id", id)
                .append(Element::new("ping", ns::PING))
                .build();
            self.services.router.route(ping).await;
        }
        for jid in timed_out {
            tracing::info!(jid = %jid, kill = self.kill, "client did not answer a ping");
            if self.kill {
                self.sessions.remove(&jid);
                self.kill_session(&jid);
            }
        }
    }

    fn kill_session(&self, jid: &FullJid) {
        let user = jid.node().map(|n| n.to_string()).unwrap_or_default();
        for s in self.services.sm.sessions_of(&self.host, &user) {
            if s.resource != jid.resource().as_str() || s.node != self.services.sm.node() {
                continue;
            }
            if let Some(local) = self.services.sm.local(s.sid) {
                let _ = local.actor.cast(C2sMsg::Kick {
                    condition: StreamErrorCondition::ConnectionTimeout,
                    text: Some("Ping timeout".to_owned()),
                });
            }
        }
    }

    /// Subscribes the hooks with `cell` as owner, seeds the sessions
    /// already there and runs the ticker until `cell` stops.
    fn run(self: Arc<Self>, cell: ActorCell) -> Result<(), String> {
        let hooks = &self.services.hooks;
        let scope = Scope::Host(&self.host);
        let p = self.clone();
        hooks
            .subscribe_answer(
                &USER_SEND_PACKET,
                scope,
                // Early, so that a later subscriber dropping the stanza
                // does not hide the client's activity.
                10,
                Some(cell.clone()),
                move |info: Arc<SessionInfo>, acc: Option<Element>| {
                    if let Some(st) = &acc {
                        p.touch(&info.jid, st);
                    }
                    Answer::Now(Flow::Continue(acc))
                },
            )
            .map_err(|e| e.to_string())?;
        let p = self.clone();
        hooks
            .subscribe_fn(
                &SM_REGISTER_CONNECTION,
                scope,
                50,
                Some(cell.clone()),
                move |info: Arc<SessionInfo>, acc: ()| {
                    p.sessions.insert(
                        info.jid.clone(),
                        Track {
                            last: Instant::now(),
                            pending: None,
                        },
                    );
                    async move { Flow::Continue(acc) }
                },
            )
            .map_err(|e| e.to_string())?;
        let p = self.clone();
        hooks
            .subscribe_fn(
                &SM_REMOVE_CONNECTION,
                scope,
                50,
                Some(cell.clone()),
                move |info: Arc<SessionInfo>, acc: ()| {
                    p.sessions.remove(&info.jid);
                    async move { Flow::Continue(acc) }
                },
            )
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        for (_, s) in self.services.sm.local_sessions() {
            if s.jid.domain().as_str() == self.host {
                self.sessions.insert(
                    s.jid,
                    Track {
                        last: now,
                        pending: None,
                    },
                );
            }
        }
        let period = (self.interval.min(self.ack_timeout) / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if !matches!(cell.get_status(), ActorStatus::Running) {
                    break;
                }
                self.tick().await;
            }
        });
        Ok(())
    }
}

/// The ping interval: `interval_secs` when given, else `ping_interval`.
fn interval_of(opts: &ModuleOptions) -> Option<u64> {
    opt_u64(opts, "interval_secs").or_else(|| opt_u64(opts, "ping_interval"))
}

fn handle_ping(req: &Element) -> Option<Element> {
    let mut children = req.children();
    let ok = req.attr("type") == Some("get")
        && children.next().is_some_and(|c| c.is("ping", ns::PING))
        && children.next().is_none();
    if ok {
        Some(iq_result(req, None))
    } else {
        iq_error(req, StanzaErrorCondition::BadRequest)
    }
}

impl Module for Mod {
    fn name(&self) -> &str {
        "mod_ping"
    }

    fn default_options(&self) -> ModuleOptions {
        let mut o = ModuleOptions::new();
        o.insert("send_pings".into(), json!(false));
        o.insert("ping_interval".into(), json!(60));
        o.insert("ping_ack_timeout".into(), json!(32));
        o.insert("timeout_action".into(), json!("none"));
        o.insert("interval_secs".into(), Value::Null);
        o
    }

    fn validate_options(&self, opts: &ModuleOptions) -> Result<(), String> {
        if opt_bool(opts, "send_pings").is_none() {
            return Err("`send_pings` must be true or false".into());
        }
        if !opts.get("interval_secs").is_none_or(Value::is_null)
            && opt_u64(opts, "interval_secs").is_none()
        {
            return Err("`interval_secs` must be a number of seconds".into());
        }
        if interval_of(opts).is_none_or(|s| s < 1) {
            return Err("`ping_interval` must be a number of seconds, at least 1".into());
        }
        if opt_u64(opts, "ping_ack_timeout").is_none_or(|s| s < 1) {
            return Err("`ping_ack_timeout` must be a number of seconds, at least 1".into());
        }
        match opt_str(opts, "timeout_action") {
            Some("none" | "kill") => Ok(()),
            _ => Err("`timeout_action` must be \"none\" or \"kill\"".into()),
        }
    }

    fn start(&self, ctx: &ModuleContext, opts: &ModuleOptions) -> Result<ChildSpec, String> {
        self.services.iq_handler(
            ctx,
            ns::PING,
            true,
            Arc::new(|req| Box::pin(async move { handle_ping(&req) })),
        );
        if !opt_bool(opts, "send_pings").unwrap_or(false) {
            return Ok(holder_tree(ctx.module(), Arc::new(|_| Ok(()))));
        }
        let services = self.services.clone();
        let host = ctx.host().to_owned();
        let interval = Duration::from_secs(interval_of(opts).unwrap_or(60));
        let ack_timeout = Duration::from_secs(opt_u64(opts, "ping_ack_timeout").unwrap_or(32));
        let kill = opt_str(opts, "timeout_action") == Some("kill");
        Ok(holder_tree(
            ctx.module(),
            Arc::new(move |cell| {
                let pinger = Arc::new(Pinger {
                    services: services.clone(),
                    host: host.clone(),
                    interval,
                    ack_timeout,
                    kill,
                    sessions: DashMap::new(),
                    next_id: AtomicU64::new(1),
                });
                pinger.run(cell)
            }),
        ))
    }
}
