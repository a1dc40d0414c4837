//! A node run from the binary or embedded: the XMPP [`Server`] plus the
//! admin socket, and the [`AdminApi`] of a server.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::admin::{AdminApi, AdminError, AdminServer, serve_admin, socket_path};
use crate::xmpp::config::Config;
use crate::xmpp::server::{AccountError, Server, ServerError, ServerOptions, StorageMode};

impl From<AccountError> for AdminError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::UserExists(u) => AdminError::UserExists(u),
            AccountError::NoSuchUser(u) => AdminError::NoSuchUser(u),
            AccountError::UnknownHost(h) => AdminError::UnknownHost(h),
            AccountError::Invalid(m) => AdminError::Invalid(m),
            other => AdminError::Failed(other.to_string()),
        }
    }
}

/// The admin commands of a running server.
impl AdminApi for Server {
    fn register<'a>(
        &'a self,
        user: &'a str,
        host: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move { Ok(Server::register(self, user, host, password).await?) })
    }

    fn unregister<'a>(
        &'a self,
        user: &'a str,
        host: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move { Ok(Server::unregister(self, user, host).await?) })
    }

    fn change_password<'a>(
        &'a self,
        user: &'a str,
        host: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move { Ok(Server::change_password(self, user, host, password).await?) })
    }

    fn connected_users<'a>(&'a self) -> BoxFuture<'a, Result<Vec<String>, AdminError>> {
        Box::pin(async move { Ok(Server::connected_users(self)) })
    }

    fn kick<'a>(
        &'a self,
        jid: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<usize, AdminError>> {
        Box::pin(async move { Ok(Server::kick(self, jid, reason).await?) })
    }

    fn stats<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, u64)>, AdminError>> {
        Box::pin(async move { Ok(Server::stats(self).await) })
    }

    fn status<'a>(&'a self) -> BoxFuture<'a, Result<String, AdminError>> {
        Box::pin(async move { Ok(Server::status(self)) })
    }

    fn start_module<'a>(
        &'a self,
        host: Option<&'a str>,
        name: &'a str,
        options: &'a serde_json::Map<String, serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            Server::start_module(self, host, name, options.clone())
                .await
                .map_err(server_error)
        })
    }

    fn stop_module<'a>(
        &'a self,
        host: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            Server::stop_module(self, host, name)
                .await
                .map_err(server_error)
        })
    }

    fn reload_module<'a>(
        &'a self,
        host: Option<&'a str>,
        name: &'a str,
        options: &'a serde_json::Map<String, serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            Server::reload_module(self, host, name, options.clone())
                .await
                .map_err(server_error)
        })
    }

    fn modules<'a>(
        &'a self,
        host: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, AdminError>> {
        Box::pin(async move {
            let running = Server::running_modules(self, host)
                .await
                .map_err(server_error)?;
            Ok(running
                .into_iter()
                .map(|(name, opts)| (name, serde_json::Value::Object(opts).to_string()))
                .collect())
        })
    }
}

fn server_error(e: ServerError) -> AdminError {
    match e {
        ServerError::Account(a) => a.into(),
        other => AdminError::Failed(other.to_string()),
    }
}

/// A running node: the server and, with disc storage, its admin socket
/// at `<data_dir>/admin.sock`.
#[derive(Debug)]
pub struct Node {
    server: Server,
    admin: Option<AdminServer>,
}

impl Node {
    /// Starts the server with `config` and `options`; with disc storage
    /// also the admin socket (so that `beamline ctl` reaches it).
    pub async fn start(config: Config, options: ServerOptions) -> Result<Node, ServerError> {
        let data_dir = config.storage.data_dir.clone();
        let durable = options.storage == StorageMode::Durable;
        let server = Server::start(config, options).await?;
        let admin = if durable {
            match serve_admin(socket_path(&data_dir), Arc::new(server.clone())).await {
                Ok(a) => Some(a),
                Err(e) => {
                    let _ = server.stop(Duration::from_secs(5)).await;
                    return Err(ServerError::Start(e.to_string()));
                }
            }
        } else {
            None
        };
        Ok(Node { server, admin })
    }

    /// The XMPP server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Stops the admin socket, then the server (see [`Server::stop`]).
    pub async fn stop(mut self, timeout: Duration) -> Result<(), ServerError> {
        if let Some(a) = self.admin.take() {
            a.stop().await;
        }
        self.server.stop(timeout).await
    }
}
