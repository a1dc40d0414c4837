//! Optional TLS between nodes: rustls with the aws-lc-rs provider only.
//!
//! Both ends present a certificate and both verify the other against the same
//! CA (mutual TLS), on top of ractor_cluster's cookie challenge.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM block did not parse.
    #[error("bad PEM in {what}: {reason}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

/// Certificates and keys of a node, in PEM.
#[derive(Clone)]
pub struct TlsConfig {
    /// This node's certificate chain (leaf first).
    pub cert_chain_pem: String,
    /// This node's private key.
    pub key_pem: String,
    /// The CA that signs every node's certificate.
    pub ca_pem: String,
    /// The name checked in the peer's certificate (DNS name or IP); every
    /// node's certificate must carry it.
    pub server_name: String,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Installs aws-lc-rs as rustls' process-wide provider (once; later calls and
/// an already installed provider are fine).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl TlsConfig {
    /// Generates a throw-away CA and one node certificate for `server_name`
    /// (tests and demos; all nodes may share it).
    pub fn self_signed(server_name: &str) -> Result<Self, TlsError> {
        let err = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "beamline test CA");
        let ca_key = rcgen::KeyPair::generate().map_err(err)?;
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(err)?;
        let leaf_params =
            rcgen::CertificateParams::new(vec![server_name.to_string()]).map_err(err)?;
        let leaf_key = rcgen::KeyPair::generate().map_err(err)?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca).map_err(err)?;
        Ok(Self {
            cert_chain_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            ca_pem: ca.pem(),
            server_name: server_name.to_string(),
        })
    }

    fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "certificate chain",
                reason: e.to_string(),
            })
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            what: "private key",
            reason: e.to_string(),
        })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| TlsError::Pem {
                what: "CA",
                reason: e.to_string(),
            })?;
            roots.add(cert)?;
        }
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// The acceptor for incoming node connections.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            Self::provider(),
        )
        .build()
        .map_err(|e| TlsError::Generate(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs()?, self.key()?)?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The connector for outgoing node connections, and the name to verify.
    pub(crate) fn connector(&self) -> Result<(TlsConnector, ServerName<'static>), TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.certs()?, self.key()?)?;
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|_| TlsError::ServerName(self.server_name.clone()))?;
        Ok((TlsConnector::from(Arc::new(config)), name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_config_builds_both_ends() {
        install_crypto_provider();
        let tls = TlsConfig::self_signed("localhost").expect("generate");
        tls.acceptor().expect("acceptor");
        tls.connector().expect("connector");
    }
}
