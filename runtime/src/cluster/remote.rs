//! [`GlobalRef`]: cast and call an actor found by global name or group, on
//! this node or another, with the shape of ractor's own `cast` and `call`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef, MessagingErr};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;

use super::envelope::{Envelope, RemoteMessage, ReplyFrame, ReplyTo};
use super::error::{CallError, SendError};
use super::event::ClusterEvent;
use super::node::{NodeInner, typed_ref};

/// A handle to an actor anywhere in the cluster whose messages are `M`.
///
/// On the same node it sends straight to the actor's `ActorRef<M>` (no
/// encoding). Across nodes the message is encoded with the codec and sent in
/// an [`Envelope`]; messages from one sender to one destination arrive in the
/// order sent (one connection per pair of nodes, FIFO mailboxes on the way).
pub struct GlobalRef<M> {
    inner: Arc<NodeInner>,
    cell: ActorCell,
    node: String,
    local: Option<ActorRef<M>>,
    _msg: PhantomData<fn(M)>,
}

impl<M> Clone for GlobalRef<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cell: self.cell.clone(),
            node: self.node.clone(),
            local: self.local.clone(),
            _msg: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for GlobalRef<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalRef")
            .field("node", &self.node)
            .field("id", &self.cell.get_id())
            .finish()
    }
}

impl<M: RemoteMessage> GlobalRef<M> {
    pub(crate) fn new(inner: Arc<NodeInner>, cell: ActorCell, node: String) -> Self {
        let local = if cell.get_id().is_local() {
            typed_ref::<M>(&inner, &cell)
        } else {
            None
        };
        Self {
            inner,
            cell,
            node,
            local,
            _msg: PhantomData,
        }
    }

    /// The node the actor runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// True when the actor runs on this node.
    pub fn is_local(&self) -> bool {
        self.cell.get_id().is_local()
    }

    /// The local `ActorRef<M>`, when the actor runs on this node.
    pub fn local_ref(&self) -> Option<&ActorRef<M>> {
        self.local.as_ref()
    }

    fn envelope_ref(&self) -> ActorRef<Envelope> {
        ActorRef::from(self.cell.clone())
    }

    /// Sends `msg` without waiting (ractor's `cast`). A payload the receiver
    /// cannot decode is logged there and dropped; the receiving actor is not
    /// affected.
    pub fn cast(&self, msg: M) -> Result<(), SendError> {
        if let Some(local) = &self.local {
            return local.cast(msg).map_err(|_| SendError::Gone);
        }
        if !self.inner.is_up(&self.node) {
            return Err(SendError::NodeDown(self.node.clone()));
        }
        let bytes = codec::encode(&msg)?;
        self.envelope_ref()
            .cast(Envelope::Cast(bytes))
            .map_err(|_| SendError::NodeDown(self.node.clone()))
    }

    /// Sends several messages at once, in order: across nodes they travel in
    /// one frame (one envelope), which raises throughput for bulk senders.
    /// Order with other casts and calls from the same sender is kept. An
    /// element the receiver cannot decode is dropped alone (and logged).
    pub fn cast_batch(&self, msgs: Vec<M>) -> Result<(), SendError> {
        if let Some(local) = &self.local {
            for msg in msgs {
                local.cast(msg).map_err(|_| SendError::Gone)?;
            }
            return Ok(());
        }
        if !self.inner.is_up(&self.node) {
            return Err(SendError::NodeDown(self.node.clone()));
        }
        let items = msgs
            .iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = codec::encode(&items)?;
        self.envelope_ref()
            .cast(Envelope::Batch(bytes))
            .map_err(|_| SendError::NodeDown(self.node.clone()))
    }

    /// Sends a request built by `build` around a [`ReplyTo`] and waits up to
    /// `timeout` for the answer (ractor's `call`). Fails at once with
    /// [`CallError::NodeDown`] when the target's node is lost meanwhile, and
    /// with [`CallError::Refused`] when the receiver cannot decode the
    /// request (the receiving actor lives on).
    pub async fn call<R, F>(&self, build: F, timeout: Duration) -> Result<R, CallError>
    where
        R: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(ReplyTo<R>) -> M,
    {
        if let Some(local) = &self.local {
            return match local
                .call(|port| build(ReplyTo::local(port)), Some(timeout))
                .await
            {
                Ok(CallResult::Success(v)) => Ok(v),
                Ok(CallResult::Timeout) => Err(CallError::Timeout),
                Ok(CallResult::SenderError) => Err(CallError::NoReply),
                Err(_) => Err(CallError::Gone),
            };
        }
        if !self.inner.is_up(&self.node) {
            return Err(CallError::NodeDown(self.node.clone()));
        }
        let bytes = codec::encode(&build(ReplyTo::outgoing())).map_err(CallError::Encode)?;
        let result = self
            .envelope_ref()
            .call(|port| Envelope::Call(bytes, port), Some(timeout))
            .await;
        match result {
            Ok(CallResult::Success(frame)) => match codec::decode::<ReplyFrame>(&frame) {
                Ok(ReplyFrame::Ok(value)) => {
                    codec::decode::<R>(&value).map_err(CallError::ReplyDecode)
                }
                Ok(ReplyFrame::Fault(fault)) => Err(CallError::Refused(fault)),
                Err(e) => Err(CallError::ReplyDecode(e)),
            },
            Ok(CallResult::Timeout) => Err(CallError::Timeout),
            Ok(CallResult::SenderError) | Err(MessagingErr::ChannelClosed) => {
                Err(self.lost().await)
            }
            Err(_) => Err(self.lost().await),
        }
    }

    /// The reply port was dropped: the connection died (node down) or the
    /// remote actor went away. The membership task may take a moment to
    /// register a dead connection, so wait a little for its verdict.
    async fn lost(&self) -> CallError {
        let mut events = self.inner.events.subscribe();
        if !self.inner.is_up(&self.node) {
            return CallError::NodeDown(self.node.clone());
        }
        let node = self.node.clone();
        let verdict = tokio::time::timeout(Duration::from_millis(500), async move {
            loop {
                match events.recv().await {
                    Ok(ClusterEvent::NodeDown { node: down, .. }) if down == node => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        })
        .await;
        if verdict.is_ok() || !self.inner.is_up(&self.node) {
            CallError::NodeDown(self.node.clone())
        } else {
            CallError::NoReply
        }
    }

    /// Test hook: casts raw bytes as if they were an encoded `M`, to exercise
    /// the receiver's handling of corrupt payloads.
    #[doc(hidden)]
    pub fn cast_raw(&self, bytes: Vec<u8>) -> Result<(), SendError> {
        self.envelope_ref()
            .cast(Envelope::Cast(bytes))
            .map_err(|_| SendError::NodeDown(self.node.clone()))
    }
}
