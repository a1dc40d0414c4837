//! Creating the users before the run: through the admin command, or by
//! in-band registration (XEP-0077).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use beamline_xmpp::client::{RawConnection, TlsMode, TrustMode, tls_client_config};
use beamline_xmpp::{Element, ns};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::args::Args;
use crate::engine::{Connector, secs, tcp_connect, user_name};

/// How provisioning went.
#[derive(Debug, Default, Clone, Copy)]
pub struct Provisioned {
    /// Accounts created.
    pub created: u64,
    /// Accounts that were there already.
    pub existing: u64,
    /// Accounts that could not be created.
    pub failed: u64,
}

impl Provisioned {
    /// As JSON for the summary.
    pub fn json(&self, method: &str, elapsed: Duration) -> serde_json::Value {
        serde_json::json!({
            "method": method,
            "created": self.created,
            "existing": self.existing,
            "failed": self.failed,
            "duration_s": elapsed.as_secs_f64(),
        })
    }
}

#[derive(Default)]
struct Tally {
    created: AtomicU64,
    existing: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn get(&self) -> Provisioned {
        Provisioned {
            created: self.created.load(Ordering::Relaxed),
            existing: self.existing.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Runs `f(g)` for every user number `g` of the run, `concurrency` at a
/// time.
async fn for_each_user<F, Fut>(args: &Args, concurrency: usize, f: F) -> Provisioned
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<bool, String>> + Send + 'static,
{
    let tally = Arc::new(Tally::default());
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let f = Arc::new(f);
    let mut tasks = tokio::task::JoinSet::new();
    let mut first_error = true;
    for g in 0..args.total() {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let (f, tally) = (f.clone(), tally.clone());
        tasks.spawn(async move {
            let r = f(g).await;
            drop(permit);
            match &r {
                Ok(true) => tally.created.fetch_add(1, Ordering::Relaxed),
                Ok(false) => tally.existing.fetch_add(1, Ordering::Relaxed),
                Err(_) => tally.failed.fetch_add(1, Ordering::Relaxed),
            };
            r
        });
        while let Some(Ok(r)) = tasks.try_join_next() {
            if let Err(e) = r
                && std::mem::take(&mut first_error)
            {
                eprintln!("provisioning: {e}");
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r
            && std::mem::take(&mut first_error)
        {
            eprintln!("provisioning: {e}");
        }
    }
    tally.get()
}

/// `CMD register USER DOMAIN -` per user, the password on stdin; an
/// "already exists" answer counts as existing.
pub async fn with_ctl(args: &Args, command: &str) -> Result<Provisioned, String> {
    let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    if words.is_empty() {
        return Err("--provision-ctl is empty".into());
    }
    let words = Arc::new(words);
    let (domain, password) = (args.domain.clone(), args.password.clone());
    let args2 = args.clone();
    Ok(for_each_user(args, 4, move |g| {
        let (words, domain, password) = (words.clone(), domain.clone(), password.clone());
        let user = user_name(&args2, g);
        async move {
            let mut child = tokio::process::Command::new(&words[0])
                .args(&words[1..])
                .args(["register", &user, &domain, "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("{}: {e}", words[0]))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(format!("{password}\n").as_bytes())
                    .await
                    .map_err(|e| format!("writing the password: {e}"))?;
            }
            let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                .await
                .map_err(|_| "the admin command took over 60 s".to_owned())?
                .map_err(|e| e.to_string())?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                Ok(true)
            } else if text.contains("already exists") || text.contains("exists") {
                Ok(false)
            } else {
                Err(format!("register {user}: {}", text.trim()))
            }
        }
    })
    .await)
}

/// In-band registration (XEP-0077) of every user, before authentication:
/// stream, STARTTLS when asked for, `<iq type='set'><query
/// xmlns='jabber:iq:register'><username/><password/></query></iq>`. A
/// `conflict` error counts as existing.
pub async fn in_band(args: &Args, connector: Arc<Connector>) -> Result<Provisioned, String> {
    let tls = if args.starttls {
        Some(
            tls_client_config(&TrustMode::AcceptAnyForTests, TlsMode::StartTls)
                .map_err(|e| format!("TLS client configuration: {e}"))?,
        )
    } else {
        None
    };
    let a = Arc::new(args.clone());
    Ok(for_each_user(args, 32, move |g| {
        let (a, connector, tls) = (a.clone(), connector.clone(), tls.clone());
        async move { register_one(&a, &connector, tls, g).await }
    })
    .await)
}

async fn register_one(
    a: &Args,
    connector: &Connector,
    tls: Option<Arc<rustls::ClientConfig>>,
    g: u64,
) -> Result<bool, String> {
    let t = secs(a.step_timeout);
    let user = user_name(a, g);
    let mut conn = match connector {
        Connector::Tcp { addrs, sources } => RawConnection::from_stream(
            tcp_connect(crate::args::server_for(addrs, g), sources, g, t)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        ),
        Connector::Memory(server) => RawConnection::from_stream(
            server
                .connect_in_memory()
                .await
                .map_err(|e| format!("in-memory connect: {e}"))?,
        ),
    };
    let e = |e: beamline_xmpp::client::ClientError| format!("register {user}: {e}");
    conn.open_stream(&a.domain).await.map_err(e)?;
    let mut features = conn.read_features(t).await.map_err(e)?;
    if let Some(tls) = tls {
        conn.starttls(&a.domain, tls, t).await.map_err(e)?;
        conn.open_stream(&a.domain).await.map_err(e)?;
        features = conn.read_features(t).await.map_err(e)?;
    }
    if !features.has_child("register", ns::REGISTER_FEATURE) {
        return Err("the server does not offer in-band registration".into());
    }
    let iq = Element::builder("iq", ns::JABBER_CLIENT)
        .attr("type", "set")
        .attr("id", "reg1")
        .append(
            Element::builder("query", ns::REGISTER)
                .append(
                    Element::builder("username", ns::REGISTER)
                        .text(&user)
                        .build(),
                )
                .append(
                    Element::builder("password", ns::REGISTER)
                        .text(&a.password)
                        .build(),
                )
                .build(),
        )
        .build();
    conn.send(&iq).await.map_err(e)?;
    let reply = loop {
        let el = conn.next_element_timeout(t).await.map_err(e)?;
        if el.is("iq", ns::JABBER_CLIENT) && el.attr("id") == Some("reg1") {
            break el;
        }
    };
    let _ = conn.send_close().await;
    match reply.attr("type") {
        Some("result") => Ok(true),
        _ if reply
            .get_child("error", ns::JABBER_CLIENT)
            .is_some_and(|err| err.has_child("conflict", ns::XMPP_STANZAS)) =>
        {
            Ok(false)
        }
        _ => Err(format!("register {user}: refused")),
    }
}

/// Registers every user directly on an in-process server. The SCRAM
/// keys are derived once and shared by all users (one salt): deriving them
/// per user would make provisioning a million users take longer than
/// anything measured, and clients with a salted-password cache then
/// log in as cheaply as real clients that log in again.
pub async fn in_process(
    args: &Args,
    server: beamline_xmpp::server::Server,
    iterations: u32,
) -> Result<Provisioned, String> {
    let creds = beamline_xmpp::sasl::account_credentials(&args.password, iterations)
        .map_err(|e| format!("password not acceptable: {e}"))?;
    let a = Arc::new(args.clone());
    Ok(for_each_user(args, 64, move |g| {
        let (a, server, creds) = (a.clone(), server.clone(), creds.clone());
        async move {
            match server
                .register_with_credentials(&user_name(&a, g), &a.domain, creds)
                .await
            {
                Ok(()) => Ok(true),
                Err(beamline_xmpp::server::AccountError::UserExists(_)) => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await)
}
