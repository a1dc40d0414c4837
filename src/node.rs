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
