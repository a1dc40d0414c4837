//! `beamline ctl` against a running `beamline serve`, as an operator uses it
//! (in the manner of `ejabberdctl`): account commands, the session list,
//! status and stats over the node's admin socket, and clear errors when the
//! command fails or no node runs.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use beamline::xmpp::client::{Client, ClientConfig, TlsMode, TrustMode};
use beamline::xmpp::jid::parse_bare;
use support::{free_port, wait_until};

fn beamline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_beamline"))
}

/// Kills the node on drop (by PID), so a failed assertion leaves no process.
struct Node(std::process::Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config file `name` under `dir` with a c2s listener on a free port and
/// the data directory `dir/data`.
fn write_config_named(dir: &Path, name: &str) -> (PathBuf, PathBuf, u16) {
    let data = dir.join("data");
    let file = dir.join(name);
    let port = free_port();
    std::fs::write(
        &file,
        format!(
            "hosts = [\"localhost\"]\n\
             [[listeners]]\nkind = \"c2s\"\nport = {}\nstarttls = \"optional\"\n\
             [storage]\ndata_dir = {:?}\n",
            port,
            data.display().to_string()
        ),
    )
    .expect("write config");
    (file, data, port)
}

fn write_config(dir: &Path) -> (PathBuf, PathBuf, u16) {
    write_config_named(dir, "beamline.toml")
}

/// `beamline ctl --config FILE args...`, with `stdin` as its input.
fn ctl_with_stdin(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = beamline()
        .arg("ctl")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run beamline ctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for beamline ctl")
}

fn ctl(config: &Path, args: &[&str]) -> Output {
    ctl_with_stdin(config, args, "")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts `ctl` succeeded and returns what it printed.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts `ctl` failed with exit code 1 and returns its stderr.
fn fails(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

fn serve(config: &Path) -> Node {
    Node(
        beamline()
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn beamline serve"),
    )
}

#[test]
fn ctl_administers_a_running_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, data, _) = write_config(dir.path());

    // No node yet: a clear error naming the data directory.
    let err = fails(ctl(&config, &["status"]));
    assert!(err.contains("no node is running with data dir"), "{err}");

    let mut node = serve(&config);
    wait_until(
        "the node answers ctl status",
        Duration::from_secs(30),
        || ctl(&config, &["status"]).status.success(),
    );
    let socket = data.join("admin.sock");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket)
            .expect("admin socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let status = ok(ctl(&config, &["status"]));
    assert!(status.contains("started"), "{status}");
    assert!(status.contains("localhost"), "{status}");

    let out = ok(ctl(&config, &["register", "alice", "localhost", "secret"]));
    assert!(out.contains("alice@localhost"), "{out}");
    let err = fails(ctl(&config, &["register", "alice", "localhost", "other"]));
    assert!(err.contains("already exists"), "{err}");
    let err = fails(ctl(&config, &["register", "bob", "nowhere.example", "pw"]));
    assert!(err.contains("nowhere.example"), "{err}");

    // The password from stdin, so that it is not in the process list.
    ok(ctl_with_stdin(
        &config,
        &["change-password", "alice", "localhost", "-"],
        "new secret\n",
    ));

    let users = ok(ctl(&config, &["connected-users"]));
    assert!(users.trim().is_empty(), "nobody is connected: {users}");

    let stats = ok(ctl(&config, &["stats"]));
    assert!(!stats.trim().is_empty());
    for line in stats.lines() {
        let (name, value) = line.rsplit_once(' ').expect("`name value` lines");
        assert!(!name.is_empty(), "{stats}");
        assert!(value.parse::<u64>().is_ok(), "{stats}");
    }

    // --data-dir reaches the same node as --config.
    let by_dir = beamline()
        .args(["ctl", "--data-dir"])
        .arg(&data)
        .arg("status")
        .output()
        .expect("run beamline ctl");
    assert_eq!(ok(by_dir), status);

    // Modules at runtime: the defaults run; stop one, start it with
    // options, reload it, and unknown names are refused.
    let modules = ok(ctl(&config, &["modules", "localhost"]));
    assert!(modules.contains("mod_version"), "{modules}");
    ok(ctl(&config, &["stop-module", "mod_version"]));
    let modules = ok(ctl(&config, &["modules", "localhost"]));
    assert!(!modules.contains("mod_version"), "{modules}");
    ok(ctl(
        &config,
        &[
            "start-module",
            "mod_version",
            "--host",
            "localhost",
            "--options",
            r#"{"show_os": true}"#,
        ],
    ));
    let modules = ok(ctl(&config, &["modules", "localhost"]));
    assert!(
        modules.contains(r#"mod_version {"show_os":true}"#),
        "{modules}"
    );
    ok(ctl(
        &config,
        &[
            "reload-module",
            "mod_version",
            "--options",
            r#"{"show_os": false}"#,
        ],
    ));
    let err = fails(ctl(&config, &["start-module", "mod_nonesuch"]));
    assert!(err.contains("mod_nonesuch"), "{err}");
    let err = fails(ctl(
        &config,
        &["start-module", "mod_time", "--options", "[1]"],
    ));
    assert!(err.contains("JSON object"), "{err}");

    let out = ok(ctl(&config, &["unregister", "alice", "localhost"]));
    assert!(out.contains("alice@localhost"), "{out}");
    let err = fails(ctl(
        &config,
        &["change-password", "alice", "localhost", "x"],
    ));
    assert!(err.contains("no user"), "{err}");

    // Stop the node by its PID (SIGTERM): the socket goes away with it.
    let status = Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    wait_until("the node exits", Duration::from_secs(30), || {
        node.0.try_wait().expect("try_wait").is_some()
    });
    assert!(!socket.exists(), "the admin socket is removed on stop");
    let err = fails(ctl(&config, &["status"]));
    assert!(err.contains("no node is running with data dir"), "{err}");
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, data, _) = write_config(dir.path());
    let socket = data.join("admin.sock");
    let _first = serve(&config);
    wait_until(
        "the node answers ctl status",
        Duration::from_secs(30),
        || ctl(&config, &["status"]).status.success(),
    );
    // Another port, the same data directory.
    let (other, _, _) = write_config_named(dir.path(), "other.toml");
    let mut second = Node(
        beamline()
            .args(["serve", "--config"])
            .arg(&other)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a second beamline serve"),
    );
    wait_until("the second node gives up", Duration::from_secs(30), || {
        second.0.try_wait().expect("try_wait").is_some()
    });
    let status = second.0.wait().expect("wait");
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    // The data directory's lock (or, failing that, the admin socket) refuses
    // it, naming the directory.
    assert!(err.contains(&data.display().to_string()), "{err}");
    assert!(socket.exists(), "the first node's socket is left alone");
    // The first node still answers.
    ok(ctl(&config, &["status"]));
}

/// `ctl` (with `stdin` as its input) off the async runtime's threads.
async fn ctl_async_with_stdin(config: &Path, args: &[&str], stdin: &str) -> Output {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl_with_stdin(&config, &args, &stdin)
    })
    .await
    .expect("ctl task")
}

async fn ctl_async(config: &Path, args: &[&str]) -> Output {
    ctl_async_with_stdin(config, args, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_and_kicks_connected_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _data, port) = write_config(dir.path());
    let _node = serve(&config);
    let probe = config.clone();
    tokio::task::spawn_blocking(move || {
        wait_until(
            "the node answers ctl status",
            Duration::from_secs(30),
            || ctl(&probe, &["status"]).status.success(),
        )
    })
    .await
    .expect("wait task");
    // The password read from stdin is the one the client logs in with.
    ok(ctl_async_with_stdin(
        &config,
        &["register", "alice", "localhost", "-"],
        "secret\n",
    )
    .await);

    let login = |resource: &str| {
        ClientConfig::new(
            parse_bare("alice@localhost").expect("jid"),
            "secret",
            ([127, 0, 0, 1], port).into(),
        )
        .with_resource(resource)
        .with_tls(TlsMode::StartTls)
        .with_trust(TrustMode::AcceptAnyForTests)
    };
    let mut phone = Client::connect(login("phone"))
        .await
        .expect("phone logs in");
    let mut desk = Client::connect(login("desk")).await.expect("desk logs in");

    let users = ok(ctl_async(&config, &["connected-users"]).await);
    assert_eq!(users, "alice@localhost/desk\nalice@localhost/phone\n");

    // A full JID: that session only.
    let out = ok(ctl_async(&config, &["kick", "alice@localhost/phone"]).await);
    assert!(out.contains("Kicked 1 session"), "{out}");
    assert!(
        phone.recv_timeout(Duration::from_secs(10)).await.is_err(),
        "the kicked session is closed"
    );
    let users = ok(ctl_async(&config, &["connected-users"]).await);
    assert_eq!(users, "alice@localhost/desk\n");

    // A bare JID: every session of the user.
    let mut phone = Client::connect(login("phone"))
        .await
        .expect("phone logs in again");
    let out = ok(ctl_async(
        &config,
        &["kick", "alice@localhost", "--reason", "maintenance"],
    )
    .await);
    assert!(out.contains("Kicked 2 sessions"), "{out}");
    assert!(phone.recv_timeout(Duration::from_secs(10)).await.is_err());
    assert!(desk.recv_timeout(Duration::from_secs(10)).await.is_err());
    let users = ok(ctl_async(&config, &["connected-users"]).await);
    assert!(users.trim().is_empty(), "{users}");
}
