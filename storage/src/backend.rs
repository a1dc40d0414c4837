//! The persistence layer the XMPP server keeps its data through.
//!
//! [`Backend`] is deliberately small and shaped after what a SQL schema can
//! hold (so that a PostgreSQL backend fits behind the same trait): accounts
//! with SCRAM credentials, and per-user *maps* (a roster: contact → item),
//! *queues* (offline messages, capped) and *documents* (a vCard, private
//! XML storage by namespace). Values are opaque bytes or strings to this
//! crate; the XMPP crate decides what they mean. [`TablesBackend`] is the
//! embedded default, on this crate's tables.

use std::ops::Bound;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::db::{Db, Table};
use crate::error::StorageError;
use crate::record::{CopyType, Record, TableDef, TableKind};

/// The hash function of a SCRAM credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScramHash {
    /// SCRAM-SHA-1.
    Sha1,
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

/// One SCRAM credential (RFC 5802): what the server keeps instead of a
/// password. Its `Debug` output leaves the keys out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// Hash function.
    pub hash: ScramHash,
    /// Salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys let anyone who reads them log in as the user (ServerKey)
        // or check password guesses offline: never print them.
        f.debug_struct("ScramCredential")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The account exists already.
    #[error("user {0} already exists")]
    UserExists(String),
    /// No such account.
    #[error("no user {0}")]
    NoSuchUser(String),
    /// A queue is at its cap; the item was not stored.
    #[error("queue {queue} of {user} is full ({max} items)")]
    QueueFull {
        /// user@host.
        user: String,
        /// Queue name.
        queue: String,
        /// The cap.
        max: usize,
    },
    /// The storage below failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

type Fut<'a, T> = BoxFuture<'a, Result<T, BackendError>>;

/// Where the server keeps its persistent data. Every method is scoped by
/// virtual host and user name (both already normalised by the caller).
pub trait Backend: Send + Sync + 'static {
    /// Creates an account; `UserExists` if it exists.
    fn create_user<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        creds: Vec<ScramCredential>,
    ) -> Fut<'a, ()>;
    /// The account's credentials, or `None` if there is no such account.
    fn credentials<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
    ) -> Fut<'a, Option<Vec<ScramCredential>>>;
    /// Replaces the credentials (password change); `NoSuchUser` if absent.
    fn set_credentials<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        creds: Vec<ScramCredential>,
    ) -> Fut<'a, ()>;
    /// Removes the account and all its maps, queues and documents.
    fn remove_user<'a>(&'a self, host: &'a str, user: &'a str) -> Fut<'a, ()>;
    /// Account names of a host, sorted.
    fn users<'a>(&'a self, host: &'a str) -> Fut<'a, Vec<String>>;

    /// One entry of a per-user map.
    fn map_get<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        map: &'a str,
        key: &'a str,
    ) -> Fut<'a, Option<Vec<u8>>>;
    /// Sets one entry of a per-user map.
    fn map_put<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        map: &'a str,
        key: &'a str,
        value: Vec<u8>,
    ) -> Fut<'a, ()>;
    /// Removes one entry of a per-user map.
    fn map_delete<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        map: &'a str,
        key: &'a str,
    ) -> Fut<'a, ()>;
    /// Every entry of a per-user map, sorted by key.
    fn map_all<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        map: &'a str,
    ) -> Fut<'a, Vec<(String, Vec<u8>)>>;

    /// Appends to a per-user queue unless it already holds `max` items.
    fn queue_push<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        queue: &'a str,
        item: Vec<u8>,
        max: usize,
    ) -> Fut<'a, ()>;
    /// Removes and returns every item of a queue, oldest first.
    fn queue_take<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        queue: &'a str,
    ) -> Fut<'a, Vec<Vec<u8>>>;
    /// Items in a queue.
    fn queue_len<'a>(&'a self, host: &'a str, user: &'a str, queue: &'a str) -> Fut<'a, usize>;

    /// A per-user document (e.g. a vCard, or private storage by namespace).
    fn doc_get<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        name: &'a str,
    ) -> Fut<'a, Option<Vec<u8>>>;
    /// Stores a per-user document.
    fn doc_put<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        name: &'a str,
        value: Vec<u8>,
    ) -> Fut<'a, ()>;
    /// Removes a per-user document.
    fn doc_delete<'a>(&'a self, host: &'a str, user: &'a str, name: &'a str) -> Fut<'a, ()>;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Account {
    host: String,
    user: String,
    creds: Vec<ScramCredential>,
}

impl Record for Account {
    type Key = (String, String);
    fn key(&self) -> Self::Key {
        (self.host.clone(), self.user.clone())
    }
}

/// (host, user, kind-specific name, key or sequence): one ordered table per
/// kind, so that "everything of one user" is a range scan.
type EntryKey = (String, String, String, String);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: EntryKey,
    value: Vec<u8>,
}

impl Record for Entry {
    type Key = EntryKey;
    fn key(&self) -> EntryKey {
        self.key.clone()
    }
}

/// Table names used by [`TablesBackend`].
pub const BACKEND_TABLES: [&str; 4] = ["accounts", "user_maps", "user_queues", "user_docs"];

/// The embedded backend: four disc tables in a [`Db`] (ordered, so that
/// everything of one user is one range scan).
#[derive(Clone, Debug)]
pub struct TablesBackend {
    db: Db,
    accounts: Table<Account>,
    maps: Table<Entry>,
    queues: Table<Entry>,
    docs: Table<Entry>,
}

fn k(host: &str, user: &str, name: &str, key: &str) -> EntryKey {
    (host.into(), user.into(), name.into(), key.into())
}

/// Range of entries of one user (and, if given, one name).
fn user_range(host: &str, user: &str, name: Option<&str>) -> (Bound<EntryKey>, Bound<EntryKey>) {
    match name {
        Some(n) => (
            Bound::Included(k(host, user, n, "")),
            // "name\0" sorts after every key under `name` and before every
            // longer name ("roster" < "roster\0" < "rosterx").
            Bound::Excluded(k(host, user, &format!("{n}\u{0}"), "")),
        ),
        None => (
            Bound::Included(k(host, user, "", "")),
            Bound::Excluded(k(host, &format!("{user}\u{0}"), "", "")),
        ),
    }
}

/// Queue items are keyed by a zero-padded sequence so that keys sort in
/// push order.
fn seq_key(n: u64) -> String {
    format!("{n:020}")
}

impl TablesBackend {
    /// Declares the backend's tables in `db` (disc copies).
    pub fn new(db: Db) -> Result<Self, StorageError> {
        let def = |name: &str, kind| TableDef::new(name).kind(kind).copy(CopyType::Disc);
        Ok(TablesBackend {
            accounts: db.create_table(def("accounts", TableKind::Set))?,
            maps: db.create_table(def("user_maps", TableKind::OrderedSet))?,
            queues: db.create_table(def("user_queues", TableKind::OrderedSet))?,
            docs: db.create_table(def("user_docs", TableKind::OrderedSet))?,
            db,
        })
    }

    /// Replicates the four tables through `repl` (a copy of each on this
    /// node, declared with the same definitions as [`TablesBackend::new`];
    /// returns once every copy is in sync). Every node of a cluster calls
    /// it, so that accounts and user data are the same on every node.
    pub async fn replicate(&self, repl: &crate::replica::Replication) -> Result<(), StorageError> {
        let def = |name: &str, kind| TableDef::new(name).kind(kind).copy(CopyType::Disc);
        repl.create_table::<Account>(def("accounts", TableKind::Set))
            .await?;
        for name in ["user_maps", "user_queues", "user_docs"] {
            repl.create_table::<Entry>(def(name, TableKind::OrderedSet))
                .await?;
        }
        Ok(())
    }
}

fn jid(host: &str, user: &str) -> String {
    format!("{user}@{host}")
}

impl Backend for TablesBackend {
    fn create_user<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        creds: Vec<ScramCredential>,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let created = self
                .db
                .transaction(|tx| {
                    let key = (host.to_string(), user.to_string());
                    if tx.get(&self.accounts, &key)?.is_some() {
                        return Ok(false);
                    }
                    tx.write(
                        &self.accounts,
                        Account {
                            host: host.into(),
                            user: user.into(),
                            creds: creds.clone(),
                        },
                    )?;
                    Ok(true)
                })
                .await?;
            if created {
                Ok(())
            } else {
                Err(BackendError::UserExists(jid(host, user)))
            }
        })
    }

    fn credentials<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
    ) -> Fut<'a, Option<Vec<ScramCredential>>> {
        Box::pin(async move {
            Ok(self
                .accounts
                .get(&(host.to_string(), user.to_string()))
                .map(|a| a.creds))
        })
    }

    fn set_credentials<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        creds: Vec<ScramCredential>,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let found = self
                .db
                .transaction(|tx| {
                    let key = (host.to_string(), user.to_string());
                    let Some(mut acc) = tx.get(&self.accounts, &key)? else {
                        return Ok(false);
                    };
                    acc.creds = creds.clone();
                    tx.write(&self.accounts, acc)?;
                    Ok(true)
                })
                .await?;
            if found {
                Ok(())
            } else {
                Err(BackendError::NoSuchUser(jid(host, user)))
            }
        })
    }

    fn remove_user<'a>(&'a self, host: &'a str, user: &'a str) -> Fut<'a, ()> {
        Box::pin(async move {
            self.db
                .transaction(|tx| {
                    tx.delete(&self.accounts, (host.to_string(), user.to_string()))?;
                    for table in [&self.maps, &self.queues, &self.docs] {
                        for e in tx.range(table, user_range(host, user, None))? {
                            tx.delete(table, e.key)?;
                        }
                    }
                    Ok(())
                })
                .await?;
            Ok(())
        })
    }

    fn users<'a>(&'a self, host: &'a str) -> Fut<'a, Vec<String>> {
        Box::pin(async move {
            let mut users: Vec<String> = self
                .accounts
                .all()
                .into_iter()
                .filter(|a| a.host == host)
                .map(|a| a.user)
                .collect();
            users.sort();
            Ok(users)
        })
    }

    fn map_get<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        map: &'a str,
        key: &'a str,
    ) -> Fut<'a, Option<Vec<u8>>> {
        Box::pin(async move { Ok(self.maps.get(&k(host, user, map, key)).map(|e| e.value)) })
    }

    fn map_put<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        map: &'a str,
        key: &'a str,
        value: Vec<u8>,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            self.maps
                .dirty_write(Entry {
                    key: k(host, user, map, key),
                    value,
                })
                .await?;
            Ok(())
        })
    }

    fn map_delete<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        map: &'a str,
        key: &'a str,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            self.maps.dirty_delete(k(host, user, map, key)).await?;
            Ok(())
        })
    }

    fn map_all<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        map: &'a str,
    ) -> Fut<'a, Vec<(String, Vec<u8>)>> {
        Box::pin(async move {
            Ok(self
                .maps
                .range(user_range(host, user, Some(map)))?
                .into_iter()
                .map(|e| (e.key.3, e.value))
                .collect())
        })
    }

    fn queue_push<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        queue: &'a str,
        item: Vec<u8>,
        max: usize,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let pushed = self
                .db
                .transaction(|tx| {
                    let items = tx.range(&self.queues, user_range(host, user, Some(queue)))?;
                    if items.len() >= max {
                        return Ok(false);
                    }
                    let next = items
                        .last()
                        .and_then(|e| e.key.3.parse::<u64>().ok())
                        .map_or(0, |n| n + 1);
                    tx.write(
                        &self.queues,
                        Entry {
                            key: k(host, user, queue, &seq_key(next)),
                            value: item.clone(),
                        },
                    )?;
                    Ok(true)
                })
                .await?;
            if pushed {
                Ok(())
            } else {
                Err(BackendError::QueueFull {
                    user: jid(host, user),
                    queue: queue.into(),
                    max,
                })
            }
        })
    }

    fn queue_take<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        queue: &'a str,
    ) -> Fut<'a, Vec<Vec<u8>>> {
        Box::pin(async move {
            Ok(self
                .db
                .transaction(|tx| {
                    let items = tx.range(&self.queues, user_range(host, user, Some(queue)))?;
                    let mut out = Vec::with_capacity(items.len());
                    for e in items {
                        tx.delete(&self.queues, e.key)?;
                        out.push(e.value);
                    }
                    Ok(out)
                })
                .await?)
        })
    }

    fn queue_len<'a>(&'a self, host: &'a str, user: &'a str, queue: &'a str) -> Fut<'a, usize> {
        Box::pin(async move {
            Ok(self
                .queues
                .range(user_range(host, user, Some(queue)))?
                .len())
        })
    }

    fn doc_get<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        name: &'a str,
    ) -> Fut<'a, Option<Vec<u8>>> {
        Box::pin(async move { Ok(self.docs.get(&k(host, user, name, "")).map(|e| e.value)) })
    }

    fn doc_put<'a>(
        &'a self,
        host: &'a str,
        user: &'a str,
        name: &'a str,
        value: Vec<u8>,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            self.docs
                .dirty_write(Entry {
                    key: k(host, user, name, ""),
                    value,
                })
                .await?;
            Ok(())
        })
    }

    fn doc_delete<'a>(&'a self, host: &'a str, user: &'a str, name: &'a str) -> Fut<'a, ()> {
        Box::pin(async move {
            self.docs.dirty_delete(k(host, user, name, "")).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred() -> Vec<ScramCredential> {
        vec![ScramCredential {
            hash: ScramHash::Sha256,
            salt: vec![1, 2, 3],
            iterations: 4096,
            stored_key: vec![4; 32],
            server_key: vec![5; 32],
        }]
    }

    #[test]
    fn debug_output_hides_the_keys() {
        let shown = format!("{:?}", cred()[0]);
        assert!(
            shown.contains("Sha256") && !shown.contains("stored_key"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn accounts_lifecycle() {
        let b = TablesBackend::new(Db::in_memory()).expect("backend");
        b.create_user("h", "ann", cred()).await.expect("create");
        assert!(matches!(
            b.create_user("h", "ann", cred()).await,
            Err(BackendError::UserExists(_))
        ));
        assert_eq!(b.credentials("h", "ann").await.expect("c"), Some(cred()));
        assert_eq!(b.credentials("other", "ann").await.expect("c"), None);
        assert!(matches!(
            b.set_credentials("h", "bob", cred()).await,
            Err(BackendError::NoSuchUser(_))
        ));
        b.create_user("h", "bob", cred()).await.expect("create");
        assert_eq!(b.users("h").await.expect("users"), ["ann", "bob"]);
    }

    #[tokio::test]
    async fn maps_queues_docs_and_removal() {
        let b = TablesBackend::new(Db::in_memory()).expect("backend");
        b.create_user("h", "ann", cred()).await.expect("create");
        b.create_user("h", "annie", cred()).await.expect("create");
        b.map_put("h", "ann", "roster", "bob@h", b"item-b".to_vec())
            .await
            .expect("put");
        b.map_put("h", "ann", "roster", "al@h", b"item-a".to_vec())
            .await
            .expect("put");
        b.map_put("h", "ann", "rosterx", "zed@h", b"other map".to_vec())
            .await
            .expect("put");
        b.map_put("h", "annie", "roster", "x@h", b"not ann's".to_vec())
            .await
            .expect("put");
        let roster = b.map_all("h", "ann", "roster").await.expect("all");
        assert_eq!(
            roster,
            [
                ("al@h".to_string(), b"item-a".to_vec()),
                ("bob@h".to_string(), b"item-b".to_vec())
            ]
        );
        for i in 0..3u8 {
            b.queue_push("h", "ann", "offline", vec![i], 3)
                .await
                .expect("push");
        }
        assert!(matches!(
            b.queue_push("h", "ann", "offline", vec![9], 3).await,
            Err(BackendError::QueueFull { max: 3, .. })
        ));
        assert_eq!(b.queue_len("h", "ann", "offline").await.expect("len"), 3);
        assert_eq!(
            b.queue_take("h", "ann", "offline").await.expect("take"),
            [vec![0], vec![1], vec![2]]
        );
        assert_eq!(b.queue_len("h", "ann", "offline").await.expect("len"), 0);
        b.queue_push("h", "ann", "offline", vec![7], 3)
            .await
            .expect("push");
        b.doc_put("h", "ann", "vcard", b"<vCard/>".to_vec())
            .await
            .expect("doc");
        assert_eq!(
            b.doc_get("h", "ann", "vcard").await.expect("doc"),
            Some(b"<vCard/>".to_vec())
        );

        b.remove_user("h", "ann").await.expect("remove");
        assert!(
            b.map_all("h", "ann", "roster")
                .await
                .expect("all")
                .is_empty()
        );
        assert!(
            b.map_all("h", "ann", "rosterx")
                .await
                .expect("all")
                .is_empty()
        );
        assert_eq!(b.queue_len("h", "ann", "offline").await.expect("len"), 0);
        assert_eq!(b.doc_get("h", "ann", "vcard").await.expect("doc"), None);
        // The other user, whose name shares a prefix, keeps everything.
        assert_eq!(
            b.map_all("h", "annie", "roster").await.expect("all").len(),
            1
        );
        assert_eq!(b.users("h").await.expect("users"), ["annie"]);
    }
}
