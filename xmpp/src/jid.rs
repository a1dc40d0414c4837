//! JIDs (RFC 7622 addresses), from the `jid` crate of the xmpp-rs project.
//!
//! Parsing normalizes: the localpart through nodeprep (case-folded), the
//! domain through IDNA/nameprep (lower-cased, a trailing dot removed), the
//! resourcepart through resourceprep (case preserved). Each of localpart and
//! resourcepart is limited to 1023 bytes and must not be empty when its
//! separator is present; the domain is limited by DNS rules (253 bytes).
//! The `jid` crate implements the stringprep profiles of RFC 6122, which
//! RFC 7622 §A allows as a transition; PRECIS would differ only on rare
//! characters.
//!
//! A parse failure converts into the stanza error `jid-malformed` through
//! `From<JidError> for StanzaError`, or [`parse`] does it directly.

pub use jid::{BareJid, DomainPart, Error as JidError, FullJid, Jid, NodePart, ResourcePart};

use crate::stanza_error::StanzaError;

/// Parses and normalizes a JID; a bad one is the stanza error
/// `jid-malformed`.
pub fn parse(s: &str) -> Result<Jid, StanzaError> {
    Jid::new(s).map_err(StanzaError::from)
}

/// Parses a full JID (with resource); anything else is `jid-malformed`.
pub fn parse_full(s: &str) -> Result<FullJid, StanzaError> {
    FullJid::new(s).map_err(StanzaError::from)
}

/// Parses a bare JID (without resource); anything else is `jid-malformed`.
pub fn parse_bare(s: &str) -> Result<BareJid, StanzaError> {
    BareJid::new(s).map_err(StanzaError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza_error::StanzaErrorCondition;

    #[test]
    fn case_folds_localpart_and_domain_keeps_resource() {
        let j = parse("Juliet@Example.COM/Balcony").expect("valid");
        assert_eq!(j.to_string(), "juliet@example.com/Balcony");
        assert_eq!(j.node().map(|n| n.as_str()), Some("juliet"));
        assert_eq!(j.domain().as_str(), "example.com");
        assert_eq!(j.resource().map(|r| r.as_str()), Some("Balcony"));
    }

    #[test]
    fn bare_and_full() {
        let full = parse_full("a@b/c").expect("full");
        assert_eq!(full.to_bare().to_string(), "a@b");
        assert!(parse_full("a@b").is_err());
        assert!(parse_bare("a@b/c").is_err());
        assert_eq!(
            parse("example.com").expect("domain only").to_string(),
            "example.com"
        );
        assert_eq!(
            parse("example.com.").expect("root dot").to_string(),
            "example.com"
        );
    }

    #[test]
    fn empty_parts_rejected() {
        for bad in ["@example.com", "a@example.com/", "", "a@", "a@b@c"] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.condition, StanzaErrorCondition::JidMalformed, "{bad}");
        }
    }

    #[test]
    fn part_length_limits() {
        let ok = "a".repeat(1023);
        let long = "a".repeat(1024);
        assert!(parse(&format!("{ok}@example.com/{ok}")).is_ok());
        assert_eq!(
            Jid::new(&format!("{long}@example.com")),
            Err(JidError::NodeTooLong)
        );
        assert_eq!(
            Jid::new(&format!("a@example.com/{long}")),
            Err(JidError::ResourceTooLong)
        );
        assert!(parse(&format!("a@{}.com", "b".repeat(1024))).is_err());
    }

    #[test]
    fn prohibited_characters() {
        // nodeprep forbids these in a localpart.
        for c in ['"', '&', '\'', ':', '<', '>', ' '] {
            assert!(parse(&format!("a{c}b@example.com")).is_err(), "{c:?}");
        }
    }
}
