//! TLS for the client: which server certificates to trust, the rustls
//! client configuration (aws-lc-rs), and the channel binding data of a
//! finished handshake.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, ProtocolVersion, SignatureScheme};
use sha2::{Digest, Sha256};

use super::{ClientError, TlsMode};
use crate::sasl::{ChannelBinding, TLS_EXPORTER_LABEL, TLS_EXPORTER_LENGTH, tls_server_end_point};
use crate::tls::ALPN_XMPP_CLIENT;

/// Which server certificates the client accepts.
#[derive(Clone)]
#[non_exhaustive]
pub enum TrustMode {
    /// Certificates that chain to one of these trust anchors (a CA, or the
    /// server's self-signed certificate itself, e.g. `data_dir/tls/cert.pem`
    /// read with [`crate::tls::load_certificates`]), and whose names
    /// match the domain. The default, with no anchors, trusts nothing:
    /// connecting with TLS is then [`ClientError::Config`].
    Roots(Vec<CertificateDer<'static>>),
    /// Exactly the certificate with this SHA-256 fingerprint (of its DER),
    /// whatever its names and dates: pinning, as for the fingerprint the
    /// server logs for its self-signed certificate.
    Fingerprint([u8; 32]),
    /// Any certificate at all: FOR TESTS ONLY. The handshake signature is
    /// still checked, but anyone on the path can pose as the server.
    AcceptAnyForTests,
}

impl Default for TrustMode {
    fn default() -> Self {
        TrustMode::Roots(Vec::new())
    }
}

impl fmt::Debug for TrustMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustMode::Roots(r) => write!(f, "Roots({} certificates)", r.len()),
            TrustMode::Fingerprint(_) => f.write_str("Fingerprint"),
            TrustMode::AcceptAnyForTests => f.write_str("AcceptAnyForTests"),
        }
    }
}

impl TrustMode {
    /// Pins a fingerprint written as hex, with or without `:` between the
    /// pairs (the form [`crate::tls::fingerprint_sha256`] prints); `None`
    /// if it is not 32 bytes of hex.
    pub fn fingerprint_hex(hex: &str) -> Option<TrustMode> {
        let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(TrustMode::Fingerprint(out))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls client configuration for `trust` and `mode`: aws-lc-rs,
/// TLS 1.3 and 1.2, ALPN `xmpp-client` for direct TLS (XEP-0368). Build it
/// once and share it ([`super::ClientConfig::tls_client_config`]) when
/// opening many connections: it also holds the session resumption cache.
pub fn tls_client_config(
    trust: &TrustMode,
    mode: TlsMode,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    config_with(provider(), trust, mode)
}

/// As [`tls_client_config`], but offering only classical key exchanges
/// (X25519, P-256, P-384) and not the post-quantum hybrid X25519MLKEM768
/// that rustls offers first: for a client that must make every server do
/// the same handshake, such as a load generator comparing a server with
/// ML-KEM against one without.
pub fn tls_client_config_classical(
    trust: &TrustMode,
    mode: TlsMode,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![
        rustls::crypto::aws_lc_rs::kx_group::X25519,
        rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
        rustls::crypto::aws_lc_rs::kx_group::SECP384R1,
    ];
    config_with(Arc::new(p), trust, mode)
}

fn config_with(
    provider: Arc<CryptoProvider>,
    trust: &TrustMode,
    mode: TlsMode,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Config(format!("TLS versions: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        TrustMode::Roots(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                store
                    .add(r.clone())
                    .map_err(|e| ClientError::Config(format!("trust anchor: {e}")))?;
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| ClientError::Config(format!("certificate verifier: {e}")))?
        }
        TrustMode::Fingerprint(fp) => Arc::new(Lenient {
            provider: provider.clone(),
            pinned: Some(*fp),
        }),
        TrustMode::AcceptAnyForTests => Arc::new(Lenient {
            provider: provider.clone(),
            pinned: None,
        }),
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    if mode == TlsMode::DirectTls {
        config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
    }
    Ok(Arc::new(config))
}

/// The server name for SNI and certificate checks.
pub(super) fn server_name(domain: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(domain.to_owned())
        .map_err(|_| ClientError::Config(format!("{domain:?} is not a valid TLS server name")))
}

/// The channel binding data of a finished client handshake: `tls-exporter`
/// on TLS 1.3, `tls-server-end-point` of the server's certificate where
/// RFC 5929 defines it.
pub(super) fn channel_binding(conn: &ClientConnection) -> ChannelBinding {
    let mut cb = ChannelBinding::none();
    if conn.is_handshaking() {
        return cb;
    }
    if conn.protocol_version() == Some(ProtocolVersion::TLSv1_3)
        && let Ok(data) =
            conn.export_keying_material(vec![0u8; TLS_EXPORTER_LENGTH], TLS_EXPORTER_LABEL, None)
    {
        cb = cb.with_tls_exporter(data);
    }
    if let Some(data) = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| tls_server_end_point(c))
    {
        cb = cb.with_tls_server_end_point(data);
    }
    cb
}

/// Accepts any certificate, or exactly the pinned one; handshake
/// signatures are checked either way.
#[derive(Debug)]
struct Lenient {
    provider: Arc<CryptoProvider>,
    pinned: Option<[u8; 32]>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pinned {
            None => Ok(ServerCertVerified::assertion()),
            Some(fp) if Sha256::digest(end_entity.as_ref()).as_slice() == fp => {
                Ok(ServerCertVerified::assertion())
            }
            Some(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(c: &rustls::ClientConfig) -> Vec<rustls::NamedGroup> {
        c.crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect()
    }

    #[test]
    fn classical_config_offers_no_ml_kem() {
        let trust = TrustMode::AcceptAnyForTests;
        let default = tls_client_config(&trust, TlsMode::StartTls).unwrap();
        let classical = tls_client_config_classical(&trust, TlsMode::StartTls).unwrap();
        assert_eq!(groups(&default)[0], rustls::NamedGroup::X25519MLKEM768);
        assert_eq!(groups(&classical)[0], rustls::NamedGroup::X25519);
        assert!(!groups(&classical).contains(&rustls::NamedGroup::X25519MLKEM768));
    }
}
