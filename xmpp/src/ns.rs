//! Every XML namespace the server knows, in one place (as xmpp-rs does).
//!
//! [`intern`] maps a namespace read from the wire onto the `'static`
//! constant when it is one of these, so that the element tree of a typical
//! stanza allocates no namespace strings.

use std::borrow::Cow;

/// The client-to-server content namespace (RFC 6120 §4.8.3).
pub const JABBER_CLIENT: &str = "jabber:client";
/// The server-to-server content namespace (RFC 6120 §4.8.3).
pub const JABBER_SERVER: &str = "jabber:server";
/// The external component content namespace (XEP-0114).
pub const COMPONENT_ACCEPT: &str = "jabber:component:accept";
/// The stream namespace, bound to the `stream` prefix (RFC 6120 §4.8.1).
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// The namespace bound to the reserved `xml` prefix (`xml:lang`).
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of the `xmlns` attributes themselves (reserved, never declared).
pub const XMLNS: &str = "http://www.w3.org/2000/xmlns/";
/// Stream error conditions (RFC 6120 §4.9.3).
pub const XMPP_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Stanza error conditions (RFC 6120 §8.3.3).
pub const XMPP_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// STARTTLS (RFC 6120 §5).
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL (RFC 6120 §6).
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding (RFC 6120 §7).
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// The legacy session establishment (RFC 3921, draft-cridland-xmpp-session).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// Server dialback (XEP-0220).
pub const DIALBACK: &str = "jabber:server:dialback";
/// Stream management (XEP-0198).
pub const SM: &str = "urn:xmpp:sm:3";
/// Stream compression features (XEP-0138), advertised but not offered.
pub const COMPRESS_FEATURE: &str = "http://jabber.org/features/compress";
/// Roster (RFC 6121 §2).
pub const ROSTER: &str = "jabber:iq:roster";
/// Service discovery, info (XEP-0030).
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Service discovery, items (XEP-0030).
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XMPP ping (XEP-0199).
pub const PING: &str = "urn:xmpp:ping";
/// Message carbons (XEP-0280).
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// Stanza forwarding (XEP-0297).
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// Delayed delivery (XEP-0203).
pub const DELAY: &str = "urn:xmpp:delay";
/// Message archive management (XEP-0313).
pub const MAM: &str = "urn:xmpp:mam:2";
/// Multi-user chat (XEP-0045).
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// Multi-user chat, user extension (XEP-0045).
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Chat state notifications (XEP-0085).
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// Message delivery receipts (XEP-0184).
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// Entity capabilities (XEP-0115).
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// Unique and stable stanza ids (XEP-0359).
pub const SID: &str = "urn:xmpp:sid:0";
/// Private XML storage (XEP-0049).
pub const PRIVATE: &str = "jabber:iq:private";
/// vCard-temp (XEP-0054).
pub const VCARD: &str = "vcard-temp";
/// Blocking command (XEP-0191).
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// Last activity (XEP-0012).
pub const LAST: &str = "jabber:iq:last";
/// Software version (XEP-0092).
pub const VERSION: &str = "jabber:iq:version";
/// In-band registration (XEP-0077).
pub const REGISTER: &str = "jabber:iq:register";
/// Client state indication (XEP-0352).
pub const CSI: &str = "urn:xmpp:csi:0";
/// Entity time (XEP-0202).
pub const TIME: &str = "urn:xmpp:time";
/// The in-band registration stream feature (XEP-0077 §4).
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// The roster versioning stream feature (XEP-0237).
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// The subscription pre-approval stream feature (RFC 6121 §3.4).
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";

/// Every constant above, for [`intern`]. Ordered by how often a stanza
/// carries it, since the lookup is linear.
const KNOWN: &[&str] = &[
    JABBER_CLIENT,
    JABBER_SERVER,
    STREAM,
    COMPONENT_ACCEPT,
    XMPP_STANZAS,
    XMPP_STREAMS,
    CHATSTATES,
    RECEIPTS,
    SID,
    CAPS,
    SM,
    CARBONS,
    FORWARD,
    DELAY,
    MAM,
    MUC,
    MUC_USER,
    PING,
    DISCO_INFO,
    DISCO_ITEMS,
    ROSTER,
    TLS,
    SASL,
    BIND,
    SESSION,
    DIALBACK,
    COMPRESS_FEATURE,
    PRIVATE,
    VCARD,
    BLOCKING,
    LAST,
    VERSION,
    REGISTER,
    CSI,
    TIME,
    REGISTER_FEATURE,
    ROSTER_VER,
    PRE_APPROVAL,
    XML,
];

/// Returns the `'static` constant equal to `ns` when there is one, else an
/// owned copy: namespaces of parsed elements go through here.
pub fn intern(ns: &str) -> Cow<'static, str> {
    match KNOWN.iter().find(|k| **k == ns) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(ns.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intern_borrows_known_namespaces() {
        assert!(matches!(intern(JABBER_CLIENT), Cow::Borrowed(_)));
        assert!(matches!(intern("urn:example:x"), Cow::Owned(_)));
        assert_eq!(intern("urn:example:x"), "urn:example:x");
    }
}
