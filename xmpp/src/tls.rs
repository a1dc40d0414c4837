//! TLS for the c2s listeners: certificates, the rustls server
//! configuration and channel binding data for SASL -PLUS.
//!
//! - [`ServerCertificates::from_config`] reads the certificates of
//!   `[tls]` (per host, else the default one) and, for hosts left without
//!   one when `self_signed` is on, uses a self-signed certificate kept in
//!   `<data_dir>/tls/` ([`self_signed`]).
//! - [`ServerCertificates::acceptor`] gives a [`TlsAcceptor`] for a
//!   listener kind ([`TlsMode`]): rustls with the aws-lc-rs provider,
//!   TLS 1.2 and 1.3, the certificate chosen by SNI, and ALPN
//!   `xmpp-client` on direct TLS (XEP-0368).
//! - [`ServerCertificates::channel_binding`] gives the [`ChannelBinding`]
//!   of an accepted stream: `tls-exporter` (RFC 9266, TLS 1.3 only) and
//!   `tls-server-end-point` (RFC 5929).
//!
//! Private keys are never logged and no type here prints one.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, ServerConfig};
use sha2::{Digest, Sha256};

pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::server::TlsStream;

use crate::config::{Config, ListenerKind, TlsConfig};
use crate::sasl::{ChannelBinding, TLS_EXPORTER_LABEL, TLS_EXPORTER_LENGTH, tls_server_end_point};

/// The ALPN protocol name of XMPP client connections over direct TLS
/// (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// The directory under `data_dir` holding the self-signed certificate.
pub const SELF_SIGNED_DIR: &str = "tls";

/// How long a generated certificate is valid, in days.
const SELF_SIGNED_DAYS: u64 = 365;

/// A generated certificate this close to its end (seconds) is replaced,
/// so that it does not expire while the server runs.
const RENEW_MARGIN_SECS: u64 = 30 * 86_400;

/// Why certificates could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A configured file does not exist.
    #[error("{}: no such file", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A certificate file holds no `CERTIFICATE` block.
    #[error("{}: no PEM certificate in the file", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key block.
    #[error("{}: no PEM private key in the file", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A PEM block did not parse.
    #[error("{}: bad PEM: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The certificate does not parse as X.509.
    #[error("{}: bad certificate: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// rustls' message.
        reason: String,
    },
    /// The private key is of a kind the crypto provider cannot use.
    #[error("{}: unusable private key: {reason}", path.display())]
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// rustls' message (it never contains key material).
        reason: String,
    },
    /// The private key is not the one of the certificate.
    #[error(
        "{}: the private key does not match the certificate in {}",
        key.display(),
        certificate.display()
    )]
    KeyMismatch {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A host has no certificate and generating one is turned off.
    #[error("host `{host}` has no certificate and tls.self_signed is false")]
    NoCertificateForHost {
        /// The host.
        host: String,
    },
    /// The self-signed certificate could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// rcgen failed to generate a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The kind of TLS a listener does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// STARTTLS on a `c2s` listener: no ALPN.
    StartTls,
    /// Direct TLS on a `c2s_tls` listener (XEP-0368): ALPN `xmpp-client`.
    DirectTls,
}

impl TlsMode {
    /// The mode of a listener kind, `None` for kinds without TLS.
    pub fn of_listener(kind: ListenerKind) -> Option<TlsMode> {
        match kind {
            ListenerKind::C2s => Some(TlsMode::StartTls),
            ListenerKind::C2sTls => Some(TlsMode::DirectTls),
            _ => None,
        }
    }
}

/// The aws-lc-rs provider, named explicitly so that no process-wide
/// default (nor ring) is ever needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// One loaded certificate with its key and precomputed binding data.
struct Entry {
    key: Arc<CertifiedKey>,
    /// RFC 5929 data of the end-entity certificate; `None` where that
    /// certificate's signature algorithm defines none.
    end_point: Option<Vec<u8>>,
}

impl Entry {
    fn new(key: CertifiedKey) -> Entry {
        let end_point = key.cert.first().and_then(|c| tls_server_end_point(c));
        Entry {
            key: Arc::new(key),
            end_point,
        }
    }
}

/// The server's certificates: one per host that has its own and a
/// default. Cheap to clone.
#[derive(Clone)]
pub struct ServerCertificates {
    inner: Arc<Inner>,
}

struct Inner {
    hosts: BTreeMap<String, Entry>,
    default: Option<Entry>,
}

impl fmt::Debug for ServerCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Host names only: never the keys.
        f.debug_struct("ServerCertificates")
            .field("hosts", &self.inner.hosts.keys().collect::<Vec<_>>())
            .field("default", &self.inner.default.is_some())
            .finish()
    }
}

impl ServerCertificates {
    /// The certificates of `config`: `[tls]`, its `hosts` and
    /// `storage.data_dir`. See [`ServerCertificates::load`].
    pub fn from_config(config: &Config) -> Result<ServerCertificates, TlsError> {
        ServerCertificates::load(&config.tls, &config.hosts, &config.storage.data_dir)
    }

    /// Loads the per-host certificates of `tls` and its default one. When
    /// some host of `hosts` is still without one and `tls.self_signed` is
    /// on, the self-signed certificate in `data_dir` (made or reused by
    /// [`self_signed`] for all of `hosts`) becomes the default.
    pub fn load(
        tls: &TlsConfig,
        hosts: &[String],
        data_dir: &Path,
    ) -> Result<ServerCertificates, TlsError> {
        let mut by_host = BTreeMap::new();
        for (host, c) in &tls.hosts {
            let key = load_certified_key(&c.certificate, &c.key)?;
            by_host.insert(normalize(host), Entry::new(key));
        }
        let mut default = match (&tls.certificate, &tls.key) {
            (Some(cert), Some(key)) => Some(Entry::new(load_certified_key(cert, key)?)),
            // The config check rejects one without the other; treat it as
            // absent here rather than guess.
            _ => None,
        };
        if default.is_none() {
            if let Some(host) = hosts.iter().find(|h| !by_host.contains_key(&normalize(h))) {
                if !tls.self_signed {
                    return Err(TlsError::NoCertificateForHost { host: host.clone() });
                }
                let generated = self_signed(data_dir, hosts)?;
                let key = load_certified_key(&generated.certificate, &generated.key)?;
                default = Some(Entry::new(key));
            }
        }
        Ok(ServerCertificates {
            inner: Arc::new(Inner {
                hosts: by_host,
                default,
            }),
        })
    }

    /// Certificates from already loaded keys: `hosts` by lowercased name,
    /// and a default. For embedding and tests.
    pub fn from_keys(
        hosts: impl IntoIterator<Item = (String, CertifiedKey)>,
        default: Option<CertifiedKey>,
    ) -> ServerCertificates {
        ServerCertificates {
            inner: Arc::new(Inner {
                hosts: hosts
                    .into_iter()
                    .map(|(h, k)| (normalize(&h), Entry::new(k)))
                    .collect(),
                default: default.map(Entry::new),
            }),
        }
    }

    fn entry(&self, server_name: Option<&str>) -> Option<&Entry> {
        server_name
            .and_then(|name| self.inner.hosts.get(&normalize(name)))
            .or(self.inner.default.as_ref())
            // Every host has its own and there is no default: a client
            // without SNI (or naming no host here) still gets a
            // certificate, the first host's by name, rather than a
            // handshake failure.
            .or_else(|| self.inner.hosts.values().next())
    }

    /// The certificate sent to a client that asked for `server_name`
    /// (SNI): that host's own, else the default, else the first host's
    /// (by name); `None` only when there are no certificates at all.
    pub fn certificate_for(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.entry(server_name).map(|e| e.key.clone())
    }

    /// A rustls server configuration for `mode`: aws-lc-rs, TLS 1.3 and
    /// 1.2, no client certificates, SNI choosing the certificate, and
    /// ALPN `xmpp-client` for [`TlsMode::DirectTls`] (a client offering
    /// ALPN without it is refused; one offering none is accepted).
    pub fn server_config(&self, mode: TlsMode) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver(self.clone())));
        if mode == TlsMode::DirectTls {
            config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
        }
        Ok(Arc::new(config))
    }

    /// A [`TlsAcceptor`] over [`ServerCertificates::server_config`].
    pub fn acceptor(&self, mode: TlsMode) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(self.server_config(mode)?))
    }

    /// The channel binding data of an accepted connection:
    /// `tls-exporter` on TLS 1.3 only (RFC 9266; on TLS 1.2 it would need
    /// extended master secret, which rustls does not report), and
    /// `tls-server-end-point` of the certificate SNI chose here, where RFC
    /// 5929 defines it. Empty before the handshake is done.
    pub fn channel_binding(&self, conn: &ServerConnection) -> ChannelBinding {
        let mut cb = ChannelBinding::none();
        if conn.is_handshaking() {
            return cb;
        }
        if let Some(data) = tls_exporter(conn) {
            cb = cb.with_tls_exporter(data);
        }
        // The resolver picks by the same lookup, so this is the
        // certificate that was sent.
        if let Some(end_point) = self
            .entry(conn.server_name())
            .and_then(|e| e.end_point.clone())
        {
            cb = cb.with_tls_server_end_point(end_point);
        }
        cb
    }

    /// [`ServerCertificates::channel_binding`] of a tokio-rustls stream.
    pub fn stream_channel_binding<IO>(&self, stream: &TlsStream<IO>) -> ChannelBinding {
        self.channel_binding(stream.get_ref().1)
    }
}

/// The `tls-exporter` data of a connection (RFC 9266): 32 bytes exported
/// with label `EXPORTER-Channel-Binding` and no context. `None` unless the
/// handshake is done with TLS 1.3.
pub fn tls_exporter(conn: &ServerConnection) -> Option<Vec<u8>> {
    if conn.is_handshaking() || conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material(vec![0u8; TLS_EXPORTER_LENGTH], TLS_EXPORTER_LABEL, None)
        .ok()
}

/// SNI lookup for rustls.
struct SniResolver(ServerCertificates);

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SniResolver").field(&self.0).finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certificate_for(client_hello.server_name())
    }
}

/// Host names compare without case and without a final dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_owned(),
        },
        _ => TlsError::Read {
            path: path.to_owned(),
            source,
        },
    })
}

/// Reads a PEM certificate chain (end-entity first).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1: the first found).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        // The pem error names the section, never the key bytes.
        other => TlsError::BadPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// Reads a certificate chain and its key and checks that they belong
/// together.
pub fn load_certified_key(certificate: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certificates(certificate)?;
    let private = load_private_key(key)?;
    let signer = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| TlsError::UnsupportedKey {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public key; rustls
        // accepts it too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            certificate: certificate.to_owned(),
            key: key.to_owned(),
        }),
        Err(other) => Err(TlsError::BadCertificate {
            path: certificate.to_owned(),
            reason: other.to_string(),
        }),
    }
}

/// The SHA-256 fingerprint of a DER certificate, as upper-case hex pairs
/// joined by `:` (the form clients show for pinning).
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    Sha256::digest(cert_der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The self-signed certificate in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SelfSigned {
    /// `<data_dir>/tls/cert.pem`.
    pub certificate: PathBuf,
    /// `<data_dir>/tls/key.pem` (mode 0600 on Unix).
    pub key: PathBuf,
    /// Its SHA-256 fingerprint ([`fingerprint_sha256`]).
    pub fingerprint: String,
    /// The names it is valid for (DNS names and IP addresses).
    pub names: Vec<String>,
    /// Whether it was made now (else an earlier one was reused).
    pub generated: bool,
}

/// The names of a self-signed certificate for `hosts`: each host,
/// lowercased, sorted, and `127.0.0.1` and `::1` when one is `localhost`
/// (a client reaching it by address then still matches).
pub fn self_signed_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = hosts.iter().map(|h| normalize(h)).collect();
    if names.iter().any(|h| h == "localhost") {
        names.push("127.0.0.1".to_owned());
        names.push("::1".to_owned());
    }
    names.sort();
    names.dedup();
    names
}

/// Makes or reuses the self-signed certificate for `hosts` in
/// `<data_dir>/tls/` (`cert.pem`, `key.pem`, and `self-signed.txt` noting
/// its names, end and fingerprint). An existing one is reused unless its
/// names differ, it ends within 30 days, or its files do not match; it is
/// valid for a year. Logs the fingerprint for pinning.
pub fn self_signed(data_dir: &Path, hosts: &[String]) -> Result<SelfSigned, TlsError> {
    let dir = data_dir.join(SELF_SIGNED_DIR);
    let certificate = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let meta = dir.join("self-signed.txt");
    let names = self_signed_names(hosts);
    let now = unix_now();

    match reusable(&certificate, &key, &meta, &names, now) {
        Ok(fingerprint) => {
            tracing::info!(
                certificate = %certificate.display(),
                sha256 = %fingerprint,
                "using the self-signed TLS certificate"
            );
            return Ok(SelfSigned {
                certificate,
                key,
                fingerprint,
                names,
                generated: false,
            });
        }
        Err(why) => tracing::info!(
            certificate = %certificate.display(),
            "generating a self-signed TLS certificate: {why}"
        ),
    }

    let today = now / 86_400;
    let not_before = today.saturating_sub(1);
    let not_after = today + SELF_SIGNED_DAYS;
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(gen_err)?;
    let (y, m, d) = date_of_day(not_before);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = date_of_day(not_after);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("beamline", String::as_str),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "beamline self-signed");
    // ECDSA P-256 with SHA-256: tls-server-end-point is then defined.
    let key_pair = rcgen::KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key_pair).map_err(gen_err)?;
    let fingerprint = fingerprint_sha256(cert.der());

    create_private_dir(&dir)?;
    // Key first, metadata last: the metadata marks a complete set.
    write_file(&key, key_pair.serialize_pem().as_bytes(), true)?;
    write_file(&certificate, cert.pem().as_bytes(), false)?;
    let meta_text = format!(
        "# Written by beamline: the self-signed certificate in this directory is\n\
         # made again when these differ from the configuration or it is near its end.\n\
         names = {}\nnot_after = {}\nsha256 = {}\n",
        names.join(","),
        not_after * 86_400,
        fingerprint
    );
    write_file(&meta, meta_text.as_bytes(), false)?;
    tracing::info!(
        certificate = %certificate.display(),
        sha256 = %fingerprint,
        names = %names.join(","),
        "generated a self-signed TLS certificate; clients may pin this SHA-256 fingerprint"
    );
    Ok(SelfSigned {
        certificate,
        key,
        fingerprint,
        names,
        generated: true,
    })
}

/// The fingerprint of the existing certificate if it can be reused, else
/// why not.
fn reusable(
    certificate: &Path,
    key: &Path,
    meta: &Path,
    names: &[String],
    now: u64,
) -> Result<String, String> {
    let text =
        fs::read_to_string(meta).map_err(|e| format!("no usable {}: {e}", meta.display()))?;
    let field = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    let stored_names = field("names").unwrap_or_default();
    if stored_names != names.join(",") {
        return Err(format!(
            "host names changed (was `{stored_names}`, now `{}`)",
            names.join(",")
        ));
    }
    let not_after: u64 = field("not_after")
        .and_then(|v| v.parse().ok())
        .ok_or("no end date noted")?;
    if not_after <= now.saturating_add(RENEW_MARGIN_SECS) {
        return Err("it has expired or is about to".to_owned());
    }
    let certified = load_certified_key(certificate, key).map_err(|e| e.to_string())?;
    let fingerprint = certified
        .cert
        .first()
        .map(|c| fingerprint_sha256(c))
        .ok_or("no certificate")?;
    if field("sha256").as_deref() != Some(fingerprint.as_str()) {
        return Err("the certificate file was changed".to_owned());
    }
    Ok(fingerprint)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The (year, month, day) of a day counted from 1970-01-01 (H. Hinnant's
/// civil-from-days), for `rcgen::date_time_ymd`: avoids depending on `time`.
fn date_of_day(days: u64) -> (i32, u8, u8) {
    // Days fit an i64 for any clock; the era arithmetic needs signs.
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(9999),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: dir.to_owned(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a crash leaves the
/// old file or the new one; `private` files get mode 0600 before any byte.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A stale temporary file may have other permissions: start afresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)
}
