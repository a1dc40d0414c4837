//! Helpers for the caller that gets channel binding data from rustls.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// The exporter label of `tls-exporter` (RFC 9266 §2): call rustls'
/// `export_keying_material` with it, no context, for
/// [`TLS_EXPORTER_LENGTH`] bytes. Only on TLS 1.3 (on TLS 1.2 the type is
/// defined only with extended master secret; offer `tls-server-end-point`
/// there instead).
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// The length of `tls-exporter` data (RFC 9266 §2).
pub const TLS_EXPORTER_LENGTH: usize = 32;

/// The `tls-server-end-point` data (RFC 5929 §4.1) of the server's
/// certificate (DER, the end-entity one that was sent): its hash with the
/// hash function of its signature algorithm, SHA-256 where that is MD5 or
/// SHA-1. `None` where RFC 5929 defines no hash: a signature without one
/// (Ed25519, Ed448), RSASSA-PSS (hash in parameters, not read here), an
/// unknown algorithm, or bytes that are not a certificate. Then do not
/// offer the type.
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    let oid = signature_algorithm_oid(cert_der)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    const DSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03];
    enum H {
        S224,
        S256,
        S384,
        S512,
    }
    let h = if let Some(rest) = oid.strip_prefix(RSA) {
        match rest {
            // md5WithRSAEncryption, sha1WithRSAEncryption: SHA-256.
            [4] | [5] | [11] => H::S256,
            [12] => H::S384,
            [13] => H::S512,
            [14] => H::S224,
            _ => return None,
        }
    } else if let Some(rest) = oid.strip_prefix(ECDSA) {
        match rest {
            // ecdsa-with-SHA1: SHA-256.
            [1] | [3, 2] => H::S256,
            [3, 1] => H::S224,
            [3, 3] => H::S384,
            [3, 4] => H::S512,
            _ => return None,
        }
    } else if oid == DSA_SHA1 {
        H::S256
    } else {
        return None;
    };
    Some(match h {
        H::S224 => Sha224::digest(cert_der).to_vec(),
        H::S256 => Sha256::digest(cert_der).to_vec(),
        H::S384 => Sha384::digest(cert_der).to_vec(),
        H::S512 => Sha512::digest(cert_der).to_vec(),
    })
}

/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE,
/// signatureAlgorithm SEQUENCE { algorithm OID, ... }, signature BIT STRING }`:
/// the OID's content bytes.
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _tbs, rest) = tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, alg, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = tlv(alg)?;
    (tag == 0x06).then_some(oid)
}

/// One DER tag-length-value: (tag, content, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, after) = rest.split_at(len);
    Some((tag, content, after))
}
