//! Certificates: the self-signed one in the data directory (made, reused,
//! remade) and user-provided PEM files with each error case.

use std::fs;
use std::path::{Path, PathBuf};

use beamline_xmpp::config::Config;
use beamline_xmpp::tls::{
    ServerCertificates, TlsError, load_certified_key, self_signed, self_signed_names,
};

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// A certificate for `names` and its key, written as PEM into `dir`.
fn write_pair(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key generation");
    let params = rcgen::CertificateParams::new(hosts(names)).expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    fs::write(&cert_path, cert.pem()).expect("write cert");
    fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

#[test]
fn self_signed_is_made_once_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = self_signed(dir.path(), &hosts(&["localhost"])).expect("first start");
    assert!(first.generated);
    assert_eq!(first.certificate, dir.path().join("tls").join("cert.pem"));
    assert_eq!(first.key, dir.path().join("tls").join("key.pem"));
    assert_eq!(first.names, vec!["127.0.0.1", "::1", "localhost"]);
    assert_eq!(first.fingerprint.len(), 32 * 3 - 1, "AB:CD:… form");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&first.key)
            .expect("key.pem")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key.pem is private");
    }
    // The files are a valid pair.
    load_certified_key(&first.certificate, &first.key).expect("loadable");

    let again = self_signed(dir.path(), &hosts(&["localhost"])).expect("restart");
    assert!(!again.generated, "reused on restart");
    assert_eq!(again.fingerprint, first.fingerprint);

    // Same set, other order and case: still reused.
    let same = self_signed(dir.path(), &hosts(&["LOCALHOST"])).expect("restart");
    assert!(!same.generated);
}

#[test]
fn changed_hosts_regenerate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = self_signed(dir.path(), &hosts(&["localhost"])).expect("first");
    let second =
        self_signed(dir.path(), &hosts(&["localhost", "example.org"])).expect("more hosts");
    assert!(second.generated);
    assert_ne!(second.fingerprint, first.fingerprint);
    assert!(second.names.contains(&"example.org".to_owned()));
    let third = self_signed(dir.path(), &hosts(&["example.org", "localhost"])).expect("same");
    assert!(!third.generated);
    assert_eq!(third.fingerprint, second.fingerprint);
}

#[test]
fn expired_or_tampered_regenerate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = self_signed(dir.path(), &hosts(&["example.org"])).expect("first");
    assert_eq!(first.names, vec!["example.org"], "no loopback names");
    let meta = dir.path().join("tls").join("self-signed.txt");
    let text = fs::read_to_string(&meta).expect("meta");
    let expired: String = text
        .lines()
        .map(|l| {
            if l.starts_with("not_after") {
                "not_after = 1000".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(&meta, expired).expect("write meta");
    let second = self_signed(dir.path(), &hosts(&["example.org"])).expect("expired");
    assert!(second.generated);
    assert_ne!(second.fingerprint, first.fingerprint);

    // A key that no longer matches: made again rather than failing.
    let (_, other_key) = write_pair(dir.path(), "other", &["x.example"]);
    fs::copy(&other_key, &second.key).expect("replace key");
    let third = self_signed(dir.path(), &hosts(&["example.org"])).expect("mismatch");
    assert!(third.generated);
}

#[test]
fn self_signed_names_add_loopback_only_for_localhost() {
    assert_eq!(
        self_signed_names(&hosts(&["b.org", "A.org."])),
        vec!["a.org", "b.org"]
    );
    assert!(self_signed_names(&hosts(&["localhost"])).contains(&"127.0.0.1".to_owned()));
}

#[test]
fn user_pem_files_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_pair(dir.path(), "host", &["example.org"]);
    let certified = load_certified_key(&cert, &key).expect("valid pair");
    assert_eq!(certified.cert.len(), 1);
}

fn message(e: &TlsError) -> String {
    e.to_string()
}

#[test]
fn user_pem_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_pair(dir.path(), "a", &["a.example"]);
    let (_, other_key) = write_pair(dir.path(), "b", &["b.example"]);

    // Missing certificate file.
    let missing = dir.path().join("nope.crt");
    let e = load_certified_key(&missing, &key).expect_err("missing");
    assert!(
        matches!(&e, TlsError::Missing { path } if path == &missing),
        "{e:?}"
    );
    assert!(message(&e).contains("nope.crt"));

    // Missing key file.
    let missing_key = dir.path().join("nope.key");
    let e = load_certified_key(&cert, &missing_key).expect_err("missing key");
    assert!(
        matches!(&e, TlsError::Missing { path } if path == &missing_key),
        "{e:?}"
    );

    // A certificate file holding only a key.
    let e = load_certified_key(&key, &key).expect_err("no certificate");
    assert!(
        matches!(&e, TlsError::NoCertificate { path } if path == &key),
        "{e:?}"
    );
    assert!(message(&e).contains("a.key"));

    // A key file holding only a certificate.
    let e = load_certified_key(&cert, &cert).expect_err("no key");
    assert!(
        matches!(&e, TlsError::NoKey { path } if path == &cert),
        "{e:?}"
    );
    assert!(message(&e).contains("a.crt"));

    // A key of another certificate.
    let e = load_certified_key(&cert, &other_key).expect_err("mismatch");
    assert!(
        matches!(&e, TlsError::KeyMismatch { certificate, key } if certificate == &cert && key == &other_key),
        "{e:?}"
    );
    assert!(message(&e).contains("b.key") && message(&e).contains("a.crt"));

    // Broken base64 inside a certificate block.
    let broken = dir.path().join("broken.crt");
    fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let e = load_certified_key(&broken, &key).expect_err("bad pem");
    assert!(
        matches!(&e, TlsError::BadPem { path, .. } if path == &broken),
        "{e:?}"
    );

    // A PEM block whose bytes are no certificate.
    let garbage = dir.path().join("garbage.crt");
    fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let e = load_certified_key(&garbage, &key).expect_err("bad certificate");
    assert!(
        matches!(&e, TlsError::BadCertificate { path, .. } if path == &garbage),
        "{e:?}"
    );

    // An empty file.
    let empty = dir.path().join("empty.key");
    fs::write(&empty, "").expect("write");
    let e = load_certified_key(&cert, &empty).expect_err("empty key");
    assert!(matches!(&e, TlsError::NoKey { .. }), "{e:?}");
}

#[test]
fn errors_never_show_key_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_pair(dir.path(), "a", &["a.example"]);
    let (_, other_key) = write_pair(dir.path(), "b", &["b.example"]);
    let key_text = fs::read_to_string(&other_key).expect("key");
    let body = key_text.lines().nth(1).expect("a base64 line");
    let e = load_certified_key(&cert, &other_key).expect_err("mismatch");
    assert!(!format!("{e} {e:?}").contains(body));
    let certs = ServerCertificates::from_keys(
        [(
            "a.example".to_owned(),
            load_certified_key(&cert, &key).expect("pair"),
        )],
        None,
    );
    let shown = format!("{certs:?}");
    assert!(shown.contains("a.example") && !shown.contains(body));
}

fn config(toml: &str, data_dir: &Path) -> Config {
    let mut config = Config::from_str(toml, "test.toml").expect("config");
    config.storage.data_dir = data_dir.to_owned();
    config
}

#[test]
fn default_config_uses_self_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = config("", dir.path());
    let certs = ServerCertificates::from_config(&c).expect("self-signed");
    assert!(certs.certificate_for(Some("localhost")).is_some());
    assert!(certs.certificate_for(None).is_some());
    assert!(dir.path().join("tls").join("cert.pem").exists());
}

#[test]
fn per_host_and_default_certificates_from_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_cert, a_key) = write_pair(dir.path(), "a", &["a.example"]);
    let (d_cert, d_key) = write_pair(dir.path(), "d", &["b.example"]);
    let toml = format!(
        "hosts = [\"a.example\", \"b.example\"]\n\
         [tls]\ncertificate = {d_cert:?}\nkey = {d_key:?}\n\
         [tls.hosts.\"a.example\"]\ncertificate = {a_cert:?}\nkey = {a_key:?}\n"
    );
    let c = config(&toml, dir.path());
    let certs = ServerCertificates::from_config(&c).expect("load");
    let a = certs.certificate_for(Some("A.example")).expect("a");
    let b = certs.certificate_for(Some("b.example")).expect("b");
    assert_ne!(a.cert[0], b.cert[0]);
    assert_eq!(
        certs.certificate_for(None).expect("default").cert[0],
        b.cert[0]
    );
    // Nothing generated: every host has a certificate.
    assert!(!dir.path().join("tls").exists());

    // A broken per-host file is reported with its name.
    fs::write(&a_key, "").expect("truncate");
    let e = ServerCertificates::from_config(&c).expect_err("broken");
    assert!(e.to_string().contains("a.key"), "{e}");
}

#[test]
fn no_certificate_without_self_signed_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_cert, a_key) = write_pair(dir.path(), "a", &["a.example"]);
    let toml = format!(
        "hosts = [\"a.example\", \"b.example\"]\nlisteners = []\n\
         [tls]\nself_signed = false\n\
         [tls.hosts.\"a.example\"]\ncertificate = {a_cert:?}\nkey = {a_key:?}\n"
    );
    let c = config(&toml, dir.path());
    let e = ServerCertificates::from_config(&c).expect_err("b has none");
    assert!(
        matches!(&e, TlsError::NoCertificateForHost { host } if host == "b.example"),
        "{e:?}"
    );
}

#[test]
fn without_default_the_first_host_answers_unknown_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_cert, a_key) = write_pair(dir.path(), "a", &["a.example"]);
    let (b_cert, b_key) = write_pair(dir.path(), "b", &["b.example"]);
    let a = load_certified_key(&a_cert, &a_key).expect("a");
    let b = load_certified_key(&b_cert, &b_key).expect("b");
    let a_der = a.cert[0].clone();
    let certs = ServerCertificates::from_keys(
        [("b.example".to_owned(), b), ("a.example".to_owned(), a)],
        None,
    );
    assert_eq!(
        certs.certificate_for(None).expect("fallback").cert[0],
        a_der
    );
    assert_eq!(
        certs
            .certificate_for(Some("zzz.example"))
            .expect("fallback")
            .cert[0],
        a_der
    );
    assert!(
        ServerCertificates::from_keys([], None)
            .certificate_for(None)
            .is_none()
    );
}
