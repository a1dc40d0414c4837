//! The distributed registry on ractor's pg: unique global names and scoped
//! process groups, visible on every node, read locally.
//!
//! A user actor is represented in pg by one stub actor (see `actors.rs`) whose
//! message type can cross nodes, for all its names and groups (so that every
//! message to the actor takes one FIFO path); ractor_cluster copies pg
//! membership to every connected node, and a stub stops with its actor, so a
//! dead actor (or every actor of a node that went down) drops out of pg
//! everywhere.

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef, ActorStatus};

use super::actors::{Stub, StubArgs, deliver_to};
use super::envelope::RemoteMessage;
use super::error::RegistryError;
use super::event::NameLost;
use super::names::{self, StubMeta};
use super::node::{LocalName, Node, meta_of, now_nanos};
use super::remote::GlobalRef;

fn running(cell: &ActorCell) -> bool {
    !matches!(
        cell.get_status(),
        ActorStatus::Stopping | ActorStatus::Stopped
    )
}

impl Node {
    fn check_running(&self) -> Result<(), RegistryError> {
        if self.inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            Err(RegistryError::Stopped)
        } else {
            Ok(())
        }
    }

    /// The holder of `name` (and its metadata) as this node sees it: members
    /// on nodes that are not up are ignored; among several, the conflict
    /// winner (earliest stub, then smallest node name).
    fn holder(&self, name: &str) -> Option<(ActorCell, StubMeta)> {
        ractor::pg::get_scoped_members(&names::GLOBAL_SCOPE.to_string(), &name.to_string())
            .into_iter()
            .filter(running)
            .filter_map(|c| meta_of(&c).map(|m| (c, m)))
            .filter(|(_, m)| self.inner.is_up(m.node()))
            .min_by_key(|(_, m)| names::winner_key(m))
    }

    /// Registers `actor` under the cluster-wide unique `name`.
    ///
    /// Fails if any node already holds the name. Two registrations of one
    /// name that did not see each other (partition, or a race) are resolved
    /// when they meet: the holder whose actor entered the registry first
    /// wins (its first name or group on its node; ties: smallest node name),
    /// the other is removed and reported as
    /// [`ClusterEvent::NameLost`](super::ClusterEvent::NameLost). The name
    /// goes away when the actor stops or its node goes down.
    pub async fn register<M: RemoteMessage>(
        &self,
        name: &str,
        actor: &ActorRef<M>,
    ) -> Result<(), RegistryError> {
        self.register_inner(name, actor, None).await
    }

    /// Like [`Node::register`], and if this registration later loses a
    /// conflict, `on_lost` builds a message that is cast to the actor.
    pub async fn register_with<M: RemoteMessage>(
        &self,
        name: &str,
        actor: &ActorRef<M>,
        on_lost: impl Fn(NameLost) -> M + Send + Sync + 'static,
    ) -> Result<(), RegistryError> {
        let target = actor.clone();
        let tell = Box::new(move |lost: NameLost| {
            let _ = target.cast(on_lost(lost));
        });
        self.register_inner(name, actor, Some(tell)).await
    }

    async fn register_inner<M: RemoteMessage>(
        &self,
        name: &str,
        actor: &ActorRef<M>,
        on_lost: Option<super::envelope::NameLostFn>,
    ) -> Result<(), RegistryError> {
        self.check_running()?;
        if !running(&actor.get_cell()) {
            return Err(RegistryError::ActorNotRunning);
        }
        // Serialises check-then-join on this node; across nodes, races are
        // settled by conflict resolution.
        let _guard = self.inner.register_lock.lock().await;
        if let Some((_, meta)) = self.holder(name) {
            return Err(RegistryError::AlreadyRegistered {
                name: name.to_string(),
                node: meta.node().to_string(),
            });
        }
        let stub = self.stub_for(actor).await?;
        self.inner.local_names.insert(
            name.to_string(),
            LocalName {
                stub: stub.clone(),
                on_lost,
            },
        );
        ractor::pg::join_scoped(
            names::GLOBAL_SCOPE.to_string(),
            name.to_string(),
            vec![stub],
        );
        Ok(())
    }

    /// Removes `name` if this node holds it.
    pub fn unregister(&self, name: &str) -> Result<(), RegistryError> {
        let (_, local) = self
            .inner
            .local_names
            .remove(name)
            .ok_or_else(|| RegistryError::NotRegistered(name.to_string()))?;
        ractor::pg::leave_scoped(
            names::GLOBAL_SCOPE.to_string(),
            name.to_string(),
            vec![local.stub.clone()],
        );
        // The stub stays: the actor may hold other names and groups.
        Ok(())
    }

    /// Finds the actor registered as `name`, on any node, from this node's
    /// own copy of pg (no network round trip).
    pub fn whereis<M: RemoteMessage>(&self, name: &str) -> Option<GlobalRef<M>> {
        self.holder(name)
            .map(|(cell, meta)| GlobalRef::new(self.inner.clone(), cell, meta.node().to_string()))
    }

    /// The node that holds `name`, if any.
    pub fn whereis_node(&self, name: &str) -> Option<String> {
        self.holder(name).map(|(_, m)| m.node().to_string())
    }

    /// Every global name with its holder's node (sorted by name).
    pub fn registered(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            ractor::pg::which_scoped_groups(&names::GLOBAL_SCOPE.to_string())
                .into_iter()
                .filter_map(|name| self.whereis_node(&name).map(|node| (name, node)))
                .collect();
        out.sort();
        out
    }

    /// The actor's stub, spawned on first use (call with `register_lock` held).
    async fn stub_for<M: RemoteMessage>(
        &self,
        actor: &ActorRef<M>,
    ) -> Result<ActorCell, RegistryError> {
        let id = actor.get_id();
        if let Some(stub) = self.inner.stubs.get(&id)
            && running(stub.value())
        {
            return Ok(stub.value().clone());
        }
        let seq = self
            .inner
            .seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (stub, _) = Actor::spawn(
            Some(names::stub_name(&self.inner.name, now_nanos(), seq)),
            Stub,
            StubArgs {
                target: actor.get_cell(),
                deliver: deliver_to(actor.clone()),
            },
        )
        .await
        .map_err(|e| RegistryError::Spawn(e.to_string()))?;
        self.inner
            .typed
            .insert(stub.get_id(), Arc::new(actor.clone()));
        self.inner.stubs.insert(id, stub.get_cell());
        Ok(stub.get_cell())
    }

    /// Adds `actor` to `group` within `scope` (Erlang's `pg:join/3`). An
    /// actor may be in many groups; joining twice is a no-op.
    pub async fn join_group<M: RemoteMessage>(
        &self,
        scope: &str,
        group: &str,
        actor: &ActorRef<M>,
    ) -> Result<(), RegistryError> {
        self.check_running()?;
        if !running(&actor.get_cell()) {
            return Err(RegistryError::ActorNotRunning);
        }
        let _guard = self.inner.register_lock.lock().await;
        let stub = self.stub_for(actor).await?;
        ractor::pg::join_scoped(names::group_scope(scope), group.to_string(), vec![stub]);
        Ok(())
    }

    /// Removes `actor` from `group` within `scope`.
    pub fn leave_group<M: ractor::Message>(
        &self,
        scope: &str,
        group: &str,
        actor: &ActorRef<M>,
    ) -> Result<(), RegistryError> {
        let stub = self
            .inner
            .stubs
            .get(&actor.get_id())
            .map(|s| s.value().clone())
            .ok_or(RegistryError::NotAMember)?;
        ractor::pg::leave_scoped(names::group_scope(scope), group.to_string(), vec![stub]);
        Ok(())
    }

    fn group_refs<M: RemoteMessage>(&self, cells: Vec<ActorCell>) -> Vec<GlobalRef<M>> {
        let mut out: Vec<GlobalRef<M>> = cells
            .into_iter()
            .filter(running)
            .filter_map(|c| meta_of(&c).map(|m| (c, m)))
            .filter(|(_, m)| self.inner.is_up(m.node()))
            .map(|(c, m)| GlobalRef::new(self.inner.clone(), c, m.node().to_string()))
            .collect();
        out.sort_by(|a, b| a.node().cmp(b.node()));
        out
    }

    /// Every member of `group` in `scope`, on every node that is up (sorted
    /// by node name), from this node's copy of pg.
    pub fn members_of<M: RemoteMessage>(&self, scope: &str, group: &str) -> Vec<GlobalRef<M>> {
        self.group_refs(ractor::pg::get_scoped_members(
            &names::group_scope(scope),
            &group.to_string(),
        ))
    }

    /// The members of `group` in `scope` that run on this node.
    pub fn local_members_of<M: RemoteMessage>(
        &self,
        scope: &str,
        group: &str,
    ) -> Vec<GlobalRef<M>> {
        self.group_refs(ractor::pg::get_scoped_local_members(
            &names::group_scope(scope),
            &group.to_string(),
        ))
    }

    /// The groups of `scope` that have members (sorted).
    pub fn groups(&self, scope: &str) -> Vec<String> {
        let mut v = ractor::pg::which_scoped_groups(&names::group_scope(scope));
        v.sort();
        v
    }
}
