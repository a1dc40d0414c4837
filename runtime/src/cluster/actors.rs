//! The two small actors behind the cluster: the stub that stands for a user
//! actor in pg (so that ractor_cluster can reach it) and the node agent.

use std::sync::Arc;

use parking_lot::Mutex;
use ractor::pg::GroupChangeMessage;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::codec;

use super::envelope::{
    Envelope, Fault, RemoteMessage, ReplyFrame, SharedPort, SysMsg, with_reply_port,
};
use super::membership::MgrMsg;

/// Hands one encoded payload (and the reply port of a call) to the user actor.
pub(crate) type Deliver = Box<dyn Fn(Vec<u8>, Option<RpcReplyPort<Vec<u8>>>) + Send + Sync>;

/// Builds the [`Deliver`] function for an actor whose messages are `M`.
pub(crate) fn deliver_to<M: RemoteMessage>(target: ActorRef<M>) -> Deliver {
    Box::new(move |bytes, port| {
        let shared: Option<SharedPort> = port.map(|p| Arc::new(Mutex::new(Some(p))));
        match with_reply_port(shared.clone(), || codec::decode::<M>(&bytes)) {
            Ok(msg) => {
                // Checked before the cast: afterwards the actor may already
                // have dropped the ReplyTo it holds.
                if let Some(slot) = &shared
                    && Arc::strong_count(slot) == 1
                    && let Some(p) = slot.lock().take()
                {
                    let _ = p.send(ReplyFrame::fault_bytes(Fault::NotACall));
                    return;
                }
                if target.cast(msg).is_err() {
                    if let Some(p) = shared.and_then(|slot| slot.lock().take()) {
                        let _ = p.send(ReplyFrame::fault_bytes(Fault::Gone));
                    }
                }
            }
            Err(e) => match shared.and_then(|slot| slot.lock().take()) {
                Some(p) => {
                    tracing::warn!(actor = %target.get_id(), error = %e, "refused a remote call whose payload does not decode");
                    let _ = p.send(ReplyFrame::fault_bytes(Fault::Decode(e.to_string())));
                }
                None => {
                    tracing::warn!(actor = %target.get_id(), error = %e, "dropped a remote cast whose payload does not decode");
                }
            },
        }
    })
}

fn refuse_unknown(variant: &str, reply: Option<RpcReplyPort<Vec<u8>>>) {
    tracing::warn!(variant, "dropped an envelope with an unknown variant");
    if let Some(p) = reply {
        let _ = p.send(ReplyFrame::fault_bytes(Fault::UnknownVariant(
            variant.to_string(),
        )));
    }
}

/// Stands in pg for one user actor; decodes and forwards what reaches it.
/// Monitors the user actor and stops with it, so pg forgets it everywhere.
pub(crate) struct Stub;

/// Arguments of [`Stub`].
pub(crate) struct StubArgs {
    pub(crate) target: ActorCell,
    pub(crate) deliver: Deliver,
}

fn is_stopping(cell: &ActorCell) -> bool {
    matches!(
        cell.get_status(),
        ActorStatus::Stopping | ActorStatus::Stopped
    )
}

impl Actor for Stub {
    type Msg = Envelope;
    type State = StubArgs;
    type Arguments = StubArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: StubArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.get_cell().monitor(args.target.clone());
        // The target may have died before the monitor was in place.
        if is_stopping(&args.target) {
            myself.stop(Some("target gone".into()));
        }
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Envelope::Cast(bytes) => (state.deliver)(bytes, None),
            Envelope::Batch(bytes) => match codec::decode::<Vec<Vec<u8>>>(&bytes) {
                // In order, each element on its own: a bad one is dropped alone.
                Ok(items) => items.into_iter().for_each(|b| (state.deliver)(b, None)),
                Err(e) => {
                    tracing::warn!(error = %e, "dropped a batch of casts that does not decode")
                }
            },
            Envelope::Call(bytes, port) => (state.deliver)(bytes, Some(port)),
            Envelope::Unknown { variant, reply } => refuse_unknown(&variant, reply),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let target = state.target.get_id();
        match event {
            SupervisionEvent::ActorTerminated(who, ..) | SupervisionEvent::ActorFailed(who, ..)
                if who.get_id() == target =>
            {
                myself.stop(Some("target stopped".into()));
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.get_cell().unmonitor(state.target.clone());
        Ok(())
    }
}

/// The node's agent: receives heartbeats and gossip from other agents and
/// the pg change notifications of this process, and hands both to the
/// membership task.
pub(crate) struct Agent;

impl Actor for Agent {
    type Msg = Envelope;
    type State = UnboundedSender<MgrMsg>;
    type Arguments = UnboundedSender<MgrMsg>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        mgr: UnboundedSender<MgrMsg>,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::monitor_scope(
            ractor::pg::ALL_SCOPES_NOTIFICATION.to_string(),
            myself.get_cell(),
        );
        Ok(mgr)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        mgr: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Envelope::Cast(bytes) => match codec::decode::<SysMsg>(&bytes) {
                Ok(sys) => {
                    let _ = mgr.send(MgrMsg::Sys(sys));
                }
                Err(e) => tracing::warn!(error = %e, "dropped an undecodable control message"),
            },
            Envelope::Batch(_) => tracing::warn!("dropped a batch sent to a node agent"),
            Envelope::Call(_, port) => {
                let _ = port.send(ReplyFrame::fault_bytes(Fault::NotACall));
            }
            Envelope::Unknown { variant, reply } => refuse_unknown(&variant, reply),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        mgr: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(change) = event {
            let scope = match &change {
                GroupChangeMessage::Join(scope, ..) | GroupChangeMessage::Leave(scope, ..) => scope,
            };
            if scope.starts_with("beamline.") {
                let _ = mgr.send(MgrMsg::Pg(change));
            }
        }
        Ok(())
    }
}
