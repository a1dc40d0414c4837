//! The server's hook points, declared together as ejabberd's are.
//!
//! Each is a [`HookPoint`] of the runtime's hook registry; the server runs
//! it through the [`Hooks`](beamline_runtime::hooks::Hooks) instance that
//! [`Server::hooks`](crate::server::Server::hooks) returns. Points that
//! carry a stanza are folds over `Option<Element>`: a subscriber passes the
//! stanza on, changes it, or answers `None` to drop it. Per-host points run
//! in [`Scope::Host`](beamline_runtime::hooks::Scope::Host) of the virtual
//! host concerned; the others in `Scope::Global`.
//!
//! | point | scope | when | fold |
//! |---|---|---|---|
//! | [`USER_SEND_PACKET`] | host of the sender | a client sent a stanza (stamped `from`) | `Option<Element>` |
//! | [`USER_RECEIVE_PACKET`] | host of the recipient | a stanza is about to be written to a client | `Option<Element>` |
//! | [`FILTER_PACKET`] | global | every stanza the router routes | `Option<Element>` |
//! | [`SM_REGISTER_CONNECTION`] | host | a session was bound | `()` |
//! | [`SM_REMOVE_CONNECTION`] | host | a session ended | `()` |
//! | [`C2S_STREAM_FEATURES`] | host | features are offered after authentication | `Vec<Element>` |
//! | [`C2S_AUTH_RESULT`] | host | a SASL attempt ended | `()` |
//! | [`OFFLINE_MESSAGE`] | host | a message found no available session of an existing user | `bool` (handled) |
//! | [`REGISTER_USER`], [`REMOVE_USER`] | host | an account was created or removed | `()` |
//! | [`USER_AVAILABLE`] | host | a session sent its first available presence | `()` |
//! | [`PRESENCE_IN`] | host of the recipient | a presence reaches a local user (before delivery) | `Option<Element>` |
//! | [`C2S_PRE_AUTH_FEATURES`] | host | features are offered before authentication | `Vec<Element>` |
//! | [`C2S_UNAUTHENTICATED_IQ`] | host | an IQ arrives before authentication | `Option<Element>` (the reply) |
//!
//! A hook point with no subscriber costs a lookup of a few nanoseconds.
//! Subscribers to the per-stanza points should be pools keyed by user
//! (see `ARCHITECTURE.md`), not one actor for all traffic.

use std::net::IpAddr;
use std::sync::Arc;

use beamline_runtime::hooks::HookPoint;

use crate::jid::FullJid;
use crate::xml::Element;

/// Who a stanza passes through: the session's full JID and peer address.
/// Hooks get it in an `Arc`: a run hands a copy to every subscriber, and
/// the hottest points run for every stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's bound full JID.
    pub jid: FullJid,
    /// The client's address (`None` for the in-memory transport).
    pub ip: Option<IpAddr>,
}

/// The result of a SASL attempt, for [`C2S_AUTH_RESULT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResult {
    /// The virtual host.
    pub host: String,
    /// The user name the client gave (normalised), if it got that far.
    pub user: Option<String>,
    /// Whether authentication succeeded.
    pub success: bool,
    /// The mechanism used.
    pub mechanism: &'static str,
    /// The client's address.
    pub ip: Option<IpAddr>,
}

/// An account, for [`REGISTER_USER`] and [`REMOVE_USER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The (normalised) local part.
    pub user: String,
    /// The virtual host.
    pub host: String,
}

/// A client sent a stanza; runs in the sender's session, after `from` is
/// stamped, before routing. ejabberd's `user_send_packet`.
pub const USER_SEND_PACKET: HookPoint<Arc<SessionInfo>, Option<Element>> =
    HookPoint::new("user_send_packet");

/// A stanza reached a session and is about to be written to its client.
/// ejabberd's `user_receive_packet`.
pub const USER_RECEIVE_PACKET: HookPoint<Arc<SessionInfo>, Option<Element>> =
    HookPoint::new("user_receive_packet");

/// Every stanza the router routes, before it looks at the recipient.
/// ejabberd's `filter_packet`. The argument is unit: the stanza carries
/// `from` and `to`.
pub const FILTER_PACKET: HookPoint<(), Option<Element>> = HookPoint::new("filter_packet");

/// A session was bound and is in the session table. ejabberd's
/// `sm_register_connection_hook`.
pub const SM_REGISTER_CONNECTION: HookPoint<Arc<SessionInfo>, ()> =
    HookPoint::new("sm_register_connection");

/// A session left the session table (logout, kick, lost connection).
/// ejabberd's `sm_remove_connection_hook`.
pub const SM_REMOVE_CONNECTION: HookPoint<Arc<SessionInfo>, ()> =
    HookPoint::new("sm_remove_connection");

/// The features offered to an authenticated client, after bind and
/// session; a module appends its own. The argument is the host.
/// ejabberd's `c2s_post_auth_features`/`c2s_stream_features`.
pub const C2S_STREAM_FEATURES: HookPoint<String, Vec<Element>> =
    HookPoint::new("c2s_stream_features");

/// A SASL attempt ended. ejabberd's `c2s_auth_result`.
pub const C2S_AUTH_RESULT: HookPoint<AuthResult, ()> = HookPoint::new("c2s_auth_result");

/// A `chat` or `normal` message for an existing user with no available
/// session. A subscriber that stores it answers `true`; when nobody does,
/// the router answers the sender `service-unavailable` (RFC 6121 §8.5.2).
/// ejabberd's `offline_message_hook`. The argument is the message.
pub const OFFLINE_MESSAGE: HookPoint<Element, bool> = HookPoint::new("offline_message_hook");

/// An account was created. ejabberd's `register_user`.
pub const REGISTER_USER: HookPoint<Account, ()> = HookPoint::new("register_user");

/// An account is being removed: its sessions are closed, its data is
/// still there (a module may tell contacts), and is deleted right after.
/// Modules delete what they kept elsewhere. ejabberd's `remove_user`.
pub const REMOVE_USER: HookPoint<Account, ()> = HookPoint::new("remove_user");

/// A session sent its first available presence (after it was handled and
/// broadcast). ejabberd's `user_available_hook`; offline messages are
/// delivered here.
pub const USER_AVAILABLE: HookPoint<Arc<SessionInfo>, ()> = HookPoint::new("user_available_hook");

/// A presence stanza addressed to a local user (bare or full JID), before
/// the router delivers it: a subscriber handles probes and subscription
/// requests (ejabberd's `roster_in_subscription` and presence probes) and
/// answers `None` when the stanza must not be delivered as it is.
pub const PRESENCE_IN: HookPoint<(), Option<Element>> = HookPoint::new("presence_in");

/// Who is negotiating, before authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreAuth {
    /// The virtual host the stream is for.
    pub host: String,
    /// The client's address (`None` for the in-memory transport).
    pub ip: Option<IpAddr>,
    /// Whether the connection is encrypted.
    pub tls: bool,
}

/// Features offered before authentication, after STARTTLS and SASL; a
/// module appends its own (in-band registration's `<register/>`).
pub const C2S_PRE_AUTH_FEATURES: HookPoint<PreAuth, Vec<Element>> =
    HookPoint::new("c2s_pre_auth_features");

/// An IQ before authentication (in-band registration, XEP-0077). A
/// subscriber that handles it answers `Some(reply)`; the accumulator
/// starts as `None`, and if it stays so the stream ends with
/// `not-authorized`. ejabberd's `c2s_unauthenticated_iq`. The argument is
/// the connection and the IQ.
pub const C2S_UNAUTHENTICATED_IQ: HookPoint<(PreAuth, Element), Option<Element>> =
    HookPoint::new("c2s_unauthenticated_iq");
