//! The session actor: resource binding, stanza checks, `from` stamping,
//! hooks, routing, and writing what is delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use beamline_runtime::hooks::{HookPoint, Hooks, Scope};
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::negotiate::{ListenerSettings, WRITE_TIMEOUT};
use super::{BoxIo, C2sMsg, IpGuard, Peer};
use crate::hooks::{
    SM_REGISTER_CONNECTION, SM_REMOVE_CONNECTION, SessionInfo, USER_AVAILABLE, USER_RECEIVE_PACKET,
    USER_SEND_PACKET,
};
use crate::jid::{BareJid, FullJid};
use crate::ns;
use crate::server::ServerCtx;
use crate::sm::LocalSession;
use crate::stanza_error::{StanzaError, StanzaErrorCondition, error_reply};
use crate::stream::write_stream_close;
use crate::stream_error::{StreamError, StreamErrorCondition};
use crate::xml::Element;

/// Bytes of routed stanzas buffered for one write while more wait in the
/// mailbox (see `C2sState::deliver`).
const COALESCE_LIMIT: usize = 16 * 1024;

/// Runs `user_send_packet` or `user_receive_packet` for a stanza of the
/// session `info`, in the session's host; `None`: dropped.
async fn packet_hook(
    hooks: &Hooks,
    point: &HookPoint<Arc<SessionInfo>, Option<Element>>,
    info: &Arc<SessionInfo>,
    el: Element,
) -> Option<Element> {
    hooks
        .run_fold(
            point,
            Scope::Host(info.jid.domain().as_str()),
            Some(el),
            info.clone(),
        )
        .await
}

/// A client session; see the [module docs](super).
#[derive(Debug, Clone, Copy, Default)]
pub struct C2sSession;

/// What a session starts with: the connection, taken once.
pub struct C2sArgs {
    pub(crate) ctx: Arc<ServerCtx>,
    pub(crate) listener: Arc<ListenerSettings>,
    pub(crate) io: Mutex<Option<BoxIo>>,
    pub(crate) peer: Peer,
    pub(crate) guard: Mutex<Option<IpGuard>>,
}

impl std::fmt::Debug for C2sArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2sArgs")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// State of a bound session. Its full JID is `info.jid`: one copy per
/// session, shared with the hooks.
struct Bound {
    bare: BareJid,
    sid: u64,
    info: Arc<SessionInfo>,
}

/// State of a session actor.
pub struct C2sState {
    ctx: Arc<ServerCtx>,
    peer: Peer,
    io_task: Option<AbortHandle>,
    /// The pending `BindTimeout`, until a resource is bound.
    bind_timer: Option<AbortHandle>,
    stop_negotiation: Option<oneshot::Sender<StreamError>>,
    writer: Option<WriteHalf<BoxIo>>,
    out: Vec<u8>,
    /// user, host once authenticated.
    account: Option<(String, String)>,
    bound: Option<Bound>,
    queued: Arc<AtomicU32>,
    /// Whether the session sent available presence (and not unavailable
    /// since).
    available: bool,
    /// JIDs that got directed available presence from this session.
    directed: std::collections::BTreeSet<String>,
    /// The stream's end was written (or the connection is gone).
    closed: bool,
    /// The listener's deadline to authenticate and bind a resource.
    deadline: tokio::time::Instant,
    _guard: Option<IpGuard>,
}

impl C2sState {
    async fn write_bytes(&mut self) -> bool {
        let Some(w) = self.writer.as_mut() else {
            self.out.clear();
            return false;
        };
        let out = &self.out;
        let mut write = std::pin::pin!(async move {
            w.write_all(out).await?;
            w.flush().await
        });
        // A socket with room takes the bytes at once: no timer for that
        // (the usual case, and one per delivered stanza).
        let r = match futures::poll!(write.as_mut()) {
            std::task::Poll::Ready(r) => Ok(r),
            std::task::Poll::Pending => tokio::time::timeout(WRITE_TIMEOUT, write).await,
        };
        self.out.clear();
        // Shrink a buffer a large stanza grew.
        if self.out.capacity() > 4096 {
            self.out = Vec::new();
        }
        matches!(r, Ok(Ok(())))
    }

    /// Writes one element; false if the connection failed.
    async fn send(&mut self, el: &Element) -> bool {
        el.write_in_stream(ns::JABBER_CLIENT, &mut self.out);
        self.write_bytes().await
    }

    /// Ends the stream: an optional error, the close tag, shutdown.
    async fn close(&mut self, error: Option<StreamError>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(tx) = self.stop_negotiation.take() {
            // Still negotiating: the I/O task owns the connection.
            let _ = tx.send(error.unwrap_or_else(|| StreamErrorCondition::SystemShutdown.into()));
            return;
        }
        if let Some(e) = error {
            e.write_to(ns::JABBER_CLIENT, &mut self.out);
        }
        write_stream_close(&mut self.out);
        self.write_bytes().await;
        if let Some(w) = self.writer.as_mut() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), w.shutdown()).await;
        }
        self.writer = None;
    }

    fn stream_error(condition: StreamErrorCondition, text: &str) -> StreamError {
        StreamError::new(condition).with_text(text, Some("en"))
    }

    /// Answers `stanza` with a stanza error, straight to this client.
    async fn reply_error(&mut self, stanza: &Element, condition: StanzaErrorCondition) -> bool {
        let mut e = stanza.clone();
        // The reply goes back to the client: `to` is the client.
        if let Some(b) = &self.bound {
            e.set_attr("from", b.info.jid.to_string());
        }
        match error_reply(&e, &StanzaError::new(condition), false) {
            Some(reply) => self.send(&reply).await,
            None => true,
        }
    }

    async fn bind(&mut self, myself: &ActorRef<C2sMsg>, iq: &Element) -> Result<(), StreamError> {
        let Some((user, host)) = self.account.clone() else {
            return Err(Self::stream_error(
                StreamErrorCondition::NotAuthorized,
                "not authenticated",
            ));
        };
        let requested = iq
            .get_child("bind", ns::BIND)
            .and_then(|b| b.child_text("resource", ns::BIND))
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        let resource = requested.unwrap_or_else(|| {
            let mut raw = [0u8; 8];
            let _ = getrandom::fill(&mut raw);
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            format!("beamline-{hex}")
        });
        let Ok(jid) = FullJid::new(&format!("{user}@{host}/{resource}")) else {
            self.reply_error(iq, StanzaErrorCondition::BadRequest).await;
            return Ok(());
        };
        let sid = self.ctx.sm.next_sid();
        let local = LocalSession {
            actor: myself.clone(),
            queued: self.queued.clone(),
            jid: jid.clone(),
        };
        let max = self.ctx.max_sessions_per_user(&user, &host);
        if let Err(e) = self.ctx.sm.register(&jid, sid, local, max).await {
            tracing::warn!(error = %e, "session registration failed");
            self.reply_error(iq, StanzaErrorCondition::InternalServerError)
                .await;
            return Ok(());
        }
        let info = Arc::new(SessionInfo {
            jid: jid.clone(),
            ip: self.peer.addr.map(|a| a.ip()),
        });
        if let Some(t) = self.bind_timer.take() {
            t.abort();
        }
        self.bound = Some(Bound {
            bare: jid.to_bare(),
            sid,
            info: info.clone(),
        });
        let reply = Element::builder("iq", ns::JABBER_CLIENT)
            .attr("type", "result")
            .attr_opt("id", iq.attr("id"))
            .append(
                Element::builder("bind", ns::BIND)
                    .append(
                        Element::builder("jid", ns::BIND)
                            .text(&jid.to_string())
                            .build(),
                    )
                    .build(),
            )
            .build();
        if !self.send(&reply).await {
            return Err(StreamErrorCondition::ConnectionTimeout.into());
        }
        let _ = self
            .ctx
            .hooks
            .run(&SM_REGISTER_CONNECTION, Scope::Host(&host), info)
            .await;
        Ok(())
    }

    /// A top-level element from the client. `Err`: close with that error.
    async fn client_element(
        &mut self,
        myself: &ActorRef<C2sMsg>,
        mut el: Element,
    ) -> Result<(), StreamError> {
        if el.ns() != ns::JABBER_CLIENT || !matches!(el.name(), "iq" | "message" | "presence") {
            return Err(Self::stream_error(
                StreamErrorCondition::UnsupportedStanzaType,
                "only message, presence and iq are accepted",
            ));
        }
        let is_iq = el.name() == "iq";
        // Copied out as flags: `el` is changed below.
        let iq_type = el.attr("type");
        let is_set = is_iq && iq_type == Some("set");
        if is_iq {
            let valid_type = matches!(iq_type, Some("get" | "set" | "result" | "error"));
            let request = matches!(iq_type, Some("get" | "set"));
            let children = el.children().count();
            if el.attr("id").is_none()
                || !valid_type
                || (request && children != 1)
                || (iq_type == Some("result") && children > 1)
            {
                if self.bound.is_none() && self.account.is_none() {
                    return Err(StreamErrorCondition::NotAuthorized.into());
                }
                if !self
                    .reply_error(&el, StanzaErrorCondition::BadRequest)
                    .await
                {
                    return Err(StreamErrorCondition::ConnectionTimeout.into());
                }
                return Ok(());
            }
        }
        if self.bound.is_none() {
            if is_set && el.has_child("bind", ns::BIND) {
                return Box::pin(self.bind(myself, &el)).await;
            }
            return Err(Self::stream_error(
                StreamErrorCondition::NotAuthorized,
                "bind a resource first",
            ));
        }
        if is_set && el.has_child("session", ns::SESSION) {
            // RFC 3921's session establishment: nothing left to do.
            let reply = Element::builder("iq", ns::JABBER_CLIENT)
                .attr("type", "result")
                .attr_opt("id", el.attr("id"))
                .build();
            if !self.send(&reply).await {
                return Err(StreamErrorCondition::ConnectionTimeout.into());
            }
            return Ok(());
        }
        if is_set && el.has_child("bind", ns::BIND) {
            // A second bind on one stream is not allowed (RFC 6120 §7.7).
            self.reply_error(&el, StanzaErrorCondition::NotAllowed)
                .await;
            return Ok(());
        }
        let Some(bound) = self.bound.as_ref() else {
            return Ok(());
        };
        // `from`, if given, must be this session's JID or its bare JID.
        if let Some(from) = el.attr("from") {
            let ok = match crate::jid::parse(from) {
                Ok(j) => match j.try_into_full() {
                    Ok(f) => f == bound.info.jid,
                    Err(b) => b == bound.bare,
                },
                Err(_) => false,
            };
            if !ok {
                return Err(Self::stream_error(
                    StreamErrorCondition::InvalidFrom,
                    "`from` is not this session's address",
                ));
            }
        }
        el.set_attr("from", bound.info.jid.as_str());
        match el.attr("to").map(crate::jid::parse) {
            Some(Err(e)) => {
                self.reply_error(&el, e.condition).await;
                return Ok(());
            }
            Some(Ok(_)) => {}
            None => {
                if el.name() == "presence" {
                    Box::pin(self.own_presence(el)).await;
                    return Ok(());
                }
                // RFC 6120 §10.3: no `to` means the account itself.
                el.set_attr("to", bound.bare.to_string());
            }
        }
        let info = bound.info.clone();
        let Some(el) = packet_hook(&self.ctx.hooks, &USER_SEND_PACKET, &info, el).await else {
            return Ok(());
        };
        if el.name() == "presence" {
            // Directed presence (RFC 6121 §4.6): remembered, so that the
            // recipient hears `unavailable` when this session ends.
            if let Some(to) = el.attr("to") {
                match el.attr("type") {
                    None => {
                        self.directed.insert(to.to_owned());
                    }
                    Some("unavailable") => {
                        self.directed.remove(to);
                    }
                    _ => {}
                }
            }
        }
        self.ctx.router.route(el).await;
        Ok(())
    }

    /// Initial, updated or unavailable presence (no `to`, `from` stamped):
    /// kept in the session table (priority and the stanza, for probes),
    /// passed to `user_send_packet` (where the presence module broadcasts
    /// it to contacts), then, for the first available presence,
    /// `user_available_hook` (offline messages). Unavailable also goes to
    /// every JID that got directed presence.
    async fn own_presence(&mut self, el: Element) {
        let Some(b) = &self.bound else { return };
        let host = b.info.jid.domain().to_string();
        let user = b.info.jid.node().map(|n| n.to_string()).unwrap_or_default();
        let sid = b.sid;
        let info = b.info.clone();
        let from = b.info.jid.to_string();
        let available = match el.attr("type") {
            None => true,
            Some("unavailable") => false,
            // Subscription types without `to` mean nothing: to the hooks.
            Some(_) => {
                let _ = packet_hook(&self.ctx.hooks, &USER_SEND_PACKET, &info, el).await;
                return;
            }
        };
        if available {
            let priority = el
                .child_text("priority", ns::JABBER_CLIENT)
                .and_then(|p| p.trim().parse::<i8>().ok())
                .unwrap_or(0);
            let xml = String::from_utf8_lossy(&el.to_bytes()).into_owned();
            self.ctx
                .sm
                .set_presence(&host, &user, sid, Some(priority), Some(xml))
                .await;
        } else {
            self.ctx
                .sm
                .set_presence(&host, &user, sid, None, None)
                .await;
        }
        let first = available && !self.available;
        self.available = available;
        let passed = packet_hook(&self.ctx.hooks, &USER_SEND_PACKET, &info, el).await;
        if !available {
            if let Some(el) = passed {
                self.unavailable_to_directed(&from, &el).await;
            }
        }
        if first {
            let _ = self
                .ctx
                .hooks
                .run(&USER_AVAILABLE, Scope::Host(&host), info)
                .await;
        }
    }

    /// Leaves the session table (after unavailable presence, if the
    /// session was available) and runs `sm_remove_connection`. Idempotent.
    async fn leave(&mut self) {
        self.end_presence().await;
        if let Some(b) = self.bound.take() {
            let host = b.info.jid.domain().to_string();
            let user = b.info.jid.node().map(|n| n.to_string()).unwrap_or_default();
            self.ctx.sm.unregister(&host, &user, b.sid).await;
            let _ = self
                .ctx
                .hooks
                .run(&SM_REMOVE_CONNECTION, Scope::Host(&host), b.info)
                .await;
        }
    }

    /// Ends the session once the stream is closed: leaves the session
    /// table, then stops after the stanzas already in the mailbox, which
    /// are routed again (see `C2sMsg::Route`) instead of being lost.
    async fn finish(&mut self, myself: &ActorRef<C2sMsg>) {
        self.closed = true;
        self.stop_negotiation = None;
        self.leave().await;
        if myself.cast(C2sMsg::Finish).is_err() {
            myself.stop(None);
        }
    }

    /// Sends `unavailable` (a copy of `el`) to every JID that got directed
    /// presence from this session, and forgets them.
    async fn unavailable_to_directed(&mut self, from: &str, el: &Element) {
        for to in std::mem::take(&mut self.directed) {
            let mut u = el.clone();
            u.set_attr("from", from);
            u.set_attr("to", to);
            u.set_attr("type", "unavailable");
            self.ctx.router.route(u).await;
        }
    }

    /// The session ends while available: as if the client had sent
    /// unavailable presence (ejabberd does the same), so that contacts and
    /// directed-presence recipients hear of it.
    async fn end_presence(&mut self) {
        if !self.available {
            return;
        }
        let Some(b) = &self.bound else { return };
        let unavailable = Element::builder("presence", ns::JABBER_CLIENT)
            .attr("type", "unavailable")
            .attr("from", b.info.jid.to_string())
            .build();
        self.own_presence(unavailable).await;
    }

    /// Passes a routed stanza through `user_receive_packet` and writes it
    /// to the client; with `more` (other stanzas wait in the mailbox),
    /// only buffers it, up to [`COALESCE_LIMIT`] bytes, so that a burst
    /// goes out in one write. False if the connection failed.
    async fn deliver(&mut self, el: Element, more: bool) -> bool {
        if let Some(b) = &self.bound {
            let info = b.info.clone();
            if let Some(el) = packet_hook(&self.ctx.hooks, &USER_RECEIVE_PACKET, &info, el).await {
                el.write_in_stream(ns::JABBER_CLIENT, &mut self.out);
            }
        }
        if self.out.is_empty() || (more && self.out.len() < COALESCE_LIMIT) {
            return true;
        }
        self.write_bytes().await
    }

    /// A stanza from the client.
    async fn on_client(&mut self, myself: ActorRef<C2sMsg>, el: Element) {
        if let Err(e) = self.client_element(&myself, el).await {
            // Boxed: rare, and large.
            Box::pin(async {
                self.close(Some(e)).await;
                self.finish(&myself).await;
            })
            .await;
        }
    }

    /// A stanza routed to this session.
    async fn on_route(&mut self, myself: ActorRef<C2sMsg>, el: Element) {
        // Routed stanzas still in the mailbox after this one: the router
        // counts them before it casts.
        let more = self.queued.fetch_sub(1, Ordering::AcqRel) > 1;
        if self.closed {
            // Queued before this session left the table: routed again, to
            // another resource, offline storage or a bounce (ejabberd's
            // bounce_message_queue).
            Box::pin(self.ctx.router.route(el)).await;
        } else if !self.deliver(el, more).await {
            self.closed = true;
            Box::pin(self.finish(&myself)).await;
        }
    }

    /// One message of the session's mailbox.
    async fn on_message(&mut self, myself: ActorRef<C2sMsg>, msg: C2sMsg) {
        tracing::trace!(?msg, "session message");
        match msg {
            C2sMsg::Authenticated { writer, user, host } => {
                self.stop_negotiation = None;
                self.writer = Some(writer);
                self.account = Some((user, host));
                // The deadline also covers binding: a client that
                // authenticated holds no session until it binds.
                let left = self
                    .deadline
                    .saturating_duration_since(tokio::time::Instant::now());
                // Cancelled at bind: a pending timer task per session
                // would be memory held by every login of the last
                // `auth_timeout` seconds.
                self.bind_timer = Some(
                    myself
                        .send_after(left, || C2sMsg::BindTimeout)
                        .abort_handle(),
                );
            }
            C2sMsg::BindTimeout => {
                if self.bound.is_none() && !self.closed {
                    self.close(Some(C2sState::stream_error(
                        StreamErrorCondition::ConnectionTimeout,
                        "no resource bound in time",
                    )))
                    .await;
                    self.finish(&myself).await;
                }
            }
            C2sMsg::FromClient(el) => self.on_client(myself, el).await,
            C2sMsg::ClientClosed => {
                self.close(None).await;
                self.finish(&myself).await;
            }
            C2sMsg::StreamFailed(e) => {
                self.close(Some(e)).await;
                self.finish(&myself).await;
            }
            C2sMsg::Disconnected => {
                self.closed = true;
                self.stop_negotiation = None;
                self.finish(&myself).await;
            }
            C2sMsg::Route(el) => self.on_route(myself, el).await,
            C2sMsg::Finish => myself.stop(None),
            C2sMsg::Kick { condition, text } => {
                let mut e = StreamError::new(condition);
                if let Some(t) = text {
                    e = e.with_text(t, Some("en"));
                }
                self.close(Some(e)).await;
                self.finish(&myself).await;
            }
        }
    }

    /// The actor stops, whatever the reason: leave the table, close the
    /// stream, end the I/O task.
    async fn stopped(&mut self) {
        if let Some(t) = self.bind_timer.take() {
            t.abort();
        }
        self.leave().await;
        let negotiating = self.stop_negotiation.is_some();
        // Stopped from outside (supervisor shutdown, crash): say so.
        self.close(Some(StreamErrorCondition::SystemShutdown.into()))
            .await;
        match self.io_task.take() {
            // The reader must not outlive the session.
            Some(t) if !negotiating => t.abort(),
            // Still negotiating: the task writes the error itself and
            // ends; it is aborted only if it hangs.
            Some(t) => {
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    t.abort();
                });
            }
            None => {}
        }
    }
}

impl Actor for C2sSession {
    type Msg = C2sMsg;
    type State = C2sState;
    type Arguments = Arc<C2sArgs>;

    async fn pre_start(
        &self,
        myself: ActorRef<C2sMsg>,
        args: Arc<C2sArgs>,
    ) -> Result<C2sState, ActorProcessingErr> {
        let Some(io) = args.io.lock().take() else {
            return Err("a session's connection can be used once".into());
        };
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(super::negotiate::run(
            myself,
            args.ctx.clone(),
            args.listener.clone(),
            io,
            args.peer,
            rx,
        ));
        Ok(C2sState {
            ctx: args.ctx.clone(),
            peer: args.peer,
            io_task: Some(task.abort_handle()),
            bind_timer: None,
            stop_negotiation: Some(tx),
            writer: None,
            out: Vec::new(),
            account: None,
            bound: None,
            queued: Arc::new(AtomicU32::new(0)),
            available: false,
            directed: std::collections::BTreeSet::new(),
            closed: false,
            deadline: tokio::time::Instant::now() + args.listener.auth_timeout,
            _guard: args.guard.lock().take(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<C2sMsg>,
        msg: C2sMsg,
        state: &mut C2sState,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed: the handler's state machine is large, and an unboxed one
        // would be part of every idle session's actor task. The two
        // messages of every stanza get boxes of their own, smaller size,
        // which the allocator serves from its per-thread cache (the whole
        // handler's would not fit it).
        match msg {
            C2sMsg::Route(el) => Box::pin(state.on_route(myself, el)).await,
            C2sMsg::FromClient(el) => Box::pin(state.on_client(myself, el)).await,
            msg => Box::pin(state.on_message(myself, msg)).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<C2sMsg>,
        state: &mut C2sState,
    ) -> Result<(), ActorProcessingErr> {
        Box::pin(state.stopped()).await;
        Ok(())
    }
}
