//! Real handshakes on 127.0.0.1 between a tokio-rustls server using the
//! module's ServerConfig and a tokio-rustls client: SNI, ALPN, channel
//! binding data on both sides.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use beamline_xmpp::sasl::{
    ChannelBindingType, TLS_EXPORTER_LABEL, TLS_EXPORTER_LENGTH, tls_server_end_point,
};
use beamline_xmpp::tls::{ALPN_XMPP_CLIENT, ServerCertificates, TlsMode, load_certified_key};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

fn pair(
    dir: &Path,
    stem: &str,
    name: &str,
) -> (rustls::sign::CertifiedKey, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key generation");
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    fs::write(&cert_path, cert.pem()).expect("write cert");
    fs::write(&key_path, key.serialize_pem()).expect("write key");
    let certified = load_certified_key(&cert_path, &key_path).expect("load");
    (certified, cert.der().clone())
}

struct Outcome {
    /// The certificate the client got.
    peer_cert: CertificateDer<'static>,
    client_alpn: Option<Vec<u8>>,
    server_alpn: Option<Vec<u8>>,
    client_exporter: Option<Vec<u8>>,
    server_cb: beamline_xmpp::sasl::ChannelBinding,
    version: rustls::ProtocolVersion,
}

fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: bool,
    tls12_only: bool,
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
    }
    Arc::new(config)
}

async fn handshake(
    certs: &ServerCertificates,
    mode: TlsMode,
    client: Arc<rustls::ClientConfig>,
    sni: &str,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = certs.acceptor(mode).expect("acceptor");
    let certs2 = certs.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        let cb = certs2.stream_channel_binding(&tls);
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        // One byte each way so both ends have finished the handshake.
        let mut buf = [0u8; 1];
        tls.read_exact(&mut buf).await.expect("read");
        tls.write_all(&buf).await.expect("write");
        tls.flush().await.expect("flush");
        (cb, alpn)
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let mut tls = TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .expect("client handshake");
    tls.write_all(b"x").await.expect("write");
    let mut buf = [0u8; 1];
    tls.read_exact(&mut buf).await.expect("read");
    let conn = tls.get_ref().1;
    let version = conn.protocol_version().expect("version");
    let client_exporter = conn
        .export_keying_material(vec![0u8; TLS_EXPORTER_LENGTH], TLS_EXPORTER_LABEL, None)
        .ok();
    let peer_cert = conn.peer_certificates().expect("peer certs")[0].clone();
    let client_alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let (server_cb, server_alpn) = server.await.expect("server task");
    Outcome {
        peer_cert,
        client_alpn,
        server_alpn,
        client_exporter,
        server_cb,
        version,
    }
}

fn two_hosts(
    dir: &Path,
) -> (
    ServerCertificates,
    CertificateDer<'static>,
    CertificateDer<'static>,
) {
    let (a, a_der) = pair(dir, "a", "a.example");
    let (b, b_der) = pair(dir, "b", "b.example");
    // a.example has its own; b's is the default.
    let certs = ServerCertificates::from_keys([("a.example".to_owned(), a)], Some(b));
    (certs, a_der, b_der)
}

#[tokio::test]
async fn sni_selects_each_hosts_certificate_and_exporters_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (certs, a_der, b_der) = two_hosts(dir.path());
    let roots = [a_der.clone(), b_der.clone()];

    for (host, expected) in [("a.example", &a_der), ("b.example", &b_der)] {
        let out = handshake(
            &certs,
            TlsMode::StartTls,
            client_config(&roots, false, false),
            host,
        )
        .await;
        assert_eq!(&out.peer_cert, expected, "{host} got its own certificate");
        assert_eq!(out.version, rustls::ProtocolVersion::TLSv1_3);
        let server_exporter = out
            .server_cb
            .data(ChannelBindingType::TlsExporter)
            .expect("tls-exporter on TLS 1.3");
        assert_eq!(server_exporter.len(), 32);
        assert_eq!(
            Some(server_exporter),
            out.client_exporter.as_deref(),
            "both sides compute the same tls-exporter"
        );
        let end_point = tls_server_end_point(expected).expect("ECDSA-SHA256 has a hash");
        assert_eq!(
            out.server_cb.data(ChannelBindingType::TlsServerEndPoint),
            Some(end_point.as_slice()),
            "tls-server-end-point of the certificate sent"
        );
        assert_eq!(out.server_alpn, None, "STARTTLS offers no ALPN");
    }
}

#[tokio::test]
async fn tls12_offers_only_server_end_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (certs, a_der, _) = two_hosts(dir.path());
    let out = handshake(
        &certs,
        TlsMode::StartTls,
        client_config(std::slice::from_ref(&a_der), false, true),
        "a.example",
    )
    .await;
    assert_eq!(out.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(
        out.server_cb.types(),
        vec![ChannelBindingType::TlsServerEndPoint],
        "no tls-exporter on TLS 1.2"
    );
}

#[tokio::test]
async fn direct_tls_negotiates_xmpp_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (certs, a_der, _) = two_hosts(dir.path());
    let out = handshake(
        &certs,
        TlsMode::DirectTls,
        client_config(std::slice::from_ref(&a_der), true, false),
        "a.example",
    )
    .await;
    assert_eq!(out.client_alpn.as_deref(), Some(ALPN_XMPP_CLIENT));
    assert_eq!(out.server_alpn.as_deref(), Some(ALPN_XMPP_CLIENT));
    assert_eq!(out.peer_cert, a_der);
}

#[tokio::test]
async fn self_signed_default_handshake_on_localhost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = beamline_xmpp::config::Config::default();
    config.storage.data_dir = dir.path().to_owned();
    let certs = ServerCertificates::from_config(&config).expect("self-signed");
    let generated = beamline_xmpp::tls::self_signed(dir.path(), &config.hosts).expect("reuse");
    assert!(!generated.generated);
    let pem = fs::read(&generated.certificate).expect("cert.pem");
    let root = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).expect("pem");
    for name in ["localhost", "127.0.0.1"] {
        let out = handshake(
            &certs,
            TlsMode::DirectTls,
            client_config(std::slice::from_ref(&root), true, false),
            name,
        )
        .await;
        assert_eq!(out.peer_cert, root, "{name}");
        assert_eq!(
            beamline_xmpp::tls::fingerprint_sha256(&out.peer_cert),
            generated.fingerprint
        );
    }
}
