//! The `beamline` binary as a user meets it: configuration errors name the
//! file, line and key; `serve` opens its data directory and starts.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn beamline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_beamline"))
}

#[test]
fn check_config_names_file_line_and_key_of_an_unknown_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "hosts = [\"example.org\"]\n\n[storage]\nprot = 1\n").expect("write");
    let out = beamline()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run beamline");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:1"), "{err}");
    assert!(err.contains("storage.prot"), "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn check_config_checks_module_names_and_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[modules.mod_vcard]\nmax_sise = 10\n",
            "bad.toml:2:",
            "modules.mod_vcard.max_sise",
        ),
        (
            "[modules.mod_roster]\nversioning = 1\n",
            "bad.toml:1:",
            "versioning must be true or false",
        ),
        (
            "[modules.mod_pong]\n",
            "bad.toml:1:",
            "unknown module `mod_pong`",
        ),
    ];
    for (text, place, what) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).expect("write");
        let out = beamline()
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run beamline");
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(place), "{err}");
        assert!(err.contains(what), "{err}");
    }
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/beamline.example.toml");
    let out = beamline()
        .args(["check-config", example])
        .output()
        .expect("run beamline");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the child on drop, so a failed assertion leaves no process.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_logs_at_the_level_of_its_config_file() {
    for (level, info_expected) in [("info", true), ("warn", false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let file = dir.path().join("beamline.toml");
        std::fs::write(
            &file,
            format!(
                "hosts = [\"localhost\"]\nlog_level = \"{level}\"\n\
                 [[listeners]]\nkind = \"c2s\"\nport = {port}\n\
                 [storage]\ndata_dir = {:?}\n",
                dir.path().join("data").display().to_string()
            ),
        )
        .expect("write");
        let mut child = Child(
            beamline()
                .args(["serve", "--config"])
                .arg(&file)
                .env_remove("RUST_LOG")
                .env("NO_COLOR", "1")
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn beamline serve"),
        );
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "no listener in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.0.kill();
        let _ = child.0.wait();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert_eq!(
            stderr.contains("INFO"),
            info_expected,
            "log_level {level}:\n{stderr}"
        );
    }
}

#[test]
fn serve_opens_its_data_directory_and_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = dir.path().join("beamline.toml");
    std::fs::write(
        &file,
        format!(
            "hosts = [\"localhost\"]\n[storage]\ndata_dir = {:?}\n",
            data.display().to_string()
        ),
    )
    .expect("write");
    let mut child = Child(
        beamline()
            .args(["serve", "--config"])
            .arg(&file)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn beamline serve"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let began = Instant::now();
    let mut started = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains("node started") {
            started = true;
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "no start in time"
        );
    }
    assert!(started, "serve did not start");
    assert!(
        data.join("tls/cert.pem").exists(),
        "self-signed certificate"
    );
    assert!(data.join("db/FORMAT").exists(), "disc tables");
}
