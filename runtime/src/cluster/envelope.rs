//! The one message type that crosses nodes, and the reply handle of calls.
//!
//! Every remote cast or call travels as an [`Envelope`] whose bytes are the
//! [`codec`](crate::codec) encoding of the user's message. ractor_cluster only
//! ever sees opaque bytes: [`Envelope`]'s own `deserialize` cannot fail, so a
//! payload that does not decode is refused by our code (per message) instead
//! of panicking the receiving actor inside ractor.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::Mutex;
use ractor::RpcReplyPort;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;

/// Variant tag of a cast envelope on the wire (versioned so a future format
/// can be told apart).
const CAST_TAG: &str = "bl1.c";
/// Variant tag of a call envelope on the wire.
const CALL_TAG: &str = "bl1.q";
/// Variant tag of a batch of casts on the wire.
const BATCH_TAG: &str = "bl1.b";

/// A message type that can be sent to actors on other nodes.
///
/// Blanket-implemented for every `ractor::Message` that serde can encode and
/// decode; the actor receiving it keeps its ordinary `ActorRef<M>`.
pub trait RemoteMessage: ractor::Message + Serialize + DeserializeOwned {}

impl<T: ractor::Message + Serialize + DeserializeOwned> RemoteMessage for T {}

/// The envelope carried between nodes: encoded payload bytes and, for a call,
/// the port the encoded reply goes back through.
#[derive(Debug)]
pub enum Envelope {
    /// A one-way message; the bytes are a codec-encoded user message.
    Cast(Vec<u8>),
    /// Several one-way messages to one actor in one frame; the bytes are the
    /// codec encoding of a `Vec<Vec<u8>>`, each element an encoded message
    /// (so one bad element does not spoil the others).
    Batch(Vec<u8>),
    /// A request; the bytes are a codec-encoded user message, the port takes a
    /// codec-encoded reply frame (the value, or a [`Fault`]).
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A frame with an unknown variant tag (a newer or foreign sender). Only
    /// produced on the receiving side; refused without harm.
    Unknown {
        /// The tag that was not understood.
        variant: String,
        /// The reply port, when the frame was a call.
        reply: Option<RpcReplyPort<Vec<u8>>>,
    },
}

impl ractor::Message for Envelope {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            Envelope::Cast(args) => Ok(SerializedMessage::Cast {
                variant: CAST_TAG.to_string(),
                args,
                metadata: None,
            }),
            Envelope::Batch(args) => Ok(SerializedMessage::Cast {
                variant: BATCH_TAG.to_string(),
                args,
                metadata: None,
            }),
            Envelope::Call(args, reply) => Ok(SerializedMessage::Call {
                variant: CALL_TAG.to_string(),
                args,
                reply,
                metadata: None,
            }),
            Envelope::Unknown { .. } => Err(BoxedDowncastErr),
        }
    }

    // Never fails: ractor kills the receiving actor on a deserialize error.
    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(match bytes {
            SerializedMessage::Cast { variant, args, .. } if variant == CAST_TAG => {
                Envelope::Cast(args)
            }
            SerializedMessage::Cast { variant, args, .. } if variant == BATCH_TAG => {
                Envelope::Batch(args)
            }
            SerializedMessage::Call {
                variant,
                args,
                reply,
                ..
            } if variant == CALL_TAG => Envelope::Call(args, reply),
            SerializedMessage::Cast { variant, .. } => Envelope::Unknown {
                variant,
                reply: None,
            },
            SerializedMessage::Call { variant, reply, .. } => Envelope::Unknown {
                variant,
                reply: Some(reply),
            },
            SerializedMessage::CallReply(..) => Envelope::Unknown {
                variant: "call-reply".to_string(),
                reply: None,
            },
        })
    }
}

/// What the receiving side could not do with a call; travels back to the
/// caller inside the reply frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// The request payload did not decode as the receiver's message type.
    #[error("the receiver could not decode the request: {0}")]
    Decode(String),
    /// The request decoded but holds no [`ReplyTo`], so nobody can answer.
    #[error("the request holds no reply port")]
    NotACall,
    /// The envelope itself was not understood (unknown variant tag).
    #[error("unknown envelope variant {0:?}")]
    UnknownVariant(String),
    /// The reply value could not be encoded by the responder.
    #[error("the responder could not encode its reply: {0}")]
    Encode(String),
    /// The target actor is gone.
    #[error("the target actor is not running")]
    Gone,
}

/// The encoded answer to a remote call.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ReplyFrame {
    /// The codec-encoded reply value.
    Ok(Vec<u8>),
    /// The request failed on the receiving side.
    Fault(Fault),
}

impl ReplyFrame {
    pub(crate) fn fault_bytes(fault: Fault) -> Vec<u8> {
        // An enum of strings always encodes; an empty frame decodes as an error.
        codec::encode(&ReplyFrame::Fault(fault)).unwrap_or_default()
    }
}

/// The slot a decoded [`ReplyTo`] shares with the stub that decoded it, so
/// that the stub can still answer with a decode error when the rest of the
/// message fails to decode.
pub(crate) type SharedPort = Arc<Mutex<Option<RpcReplyPort<Vec<u8>>>>>;

thread_local! {
    // Set only while a stub decodes one call payload (decoding is synchronous).
    static DECODING_PORT: RefCell<Option<SharedPort>> = const { RefCell::new(None) };
}

/// Runs `f` (a decode) with `port` visible to [`ReplyTo`]'s deserializer.
pub(crate) fn with_reply_port<T>(port: Option<SharedPort>, f: impl FnOnce() -> T) -> T {
    DECODING_PORT.with(|slot| *slot.borrow_mut() = port);
    let out = f();
    DECODING_PORT.with(|slot| *slot.borrow_mut() = None);
    out
}

enum ReplyInner<R> {
    /// Same node: ractor's own typed port.
    Local(RpcReplyPort<R>),
    /// Reached us from another node: the reply is encoded and sent back.
    Remote(SharedPort),
    /// Built by a remote `call` on the sending side; encodes as a marker.
    Outgoing,
    /// Decoded outside a call (e.g. inside a cast): nobody waits.
    Detached,
}

/// Where the answer to a call goes: ractor's `RpcReplyPort` for messages that
/// can cross nodes.
///
/// Put it in a message variant exactly as one puts an `RpcReplyPort` there
/// for local calls; `GlobalRef::call` builds it, the receiving actor calls
/// [`ReplyTo::send`]. Across nodes the reply value is encoded with the codec.
pub struct ReplyTo<R> {
    inner: ReplyInner<R>,
    _reply: PhantomData<fn(R)>,
}

impl<R> std::fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            ReplyInner::Local(_) => "local",
            ReplyInner::Remote(_) => "remote",
            ReplyInner::Outgoing => "outgoing",
            ReplyInner::Detached => "detached",
        };
        write!(f, "ReplyTo({kind})")
    }
}

/// Why a reply could not be delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The caller stopped waiting (timeout, or its node went away).
    #[error("the caller is no longer waiting")]
    CallerGone,
    /// The reply value could not be encoded for the wire.
    #[error("reply encode failed: {0}")]
    Encode(#[from] codec::CodecError),
    /// This handle was never attached to a waiting caller.
    #[error("this reply handle has no caller")]
    Detached,
}

impl<R> ReplyTo<R> {
    pub(crate) fn local(port: RpcReplyPort<R>) -> Self {
        Self {
            inner: ReplyInner::Local(port),
            _reply: PhantomData,
        }
    }

    pub(crate) fn outgoing() -> Self {
        Self {
            inner: ReplyInner::Outgoing,
            _reply: PhantomData,
        }
    }
}

impl<R: Serialize + Send + 'static> ReplyTo<R> {
    /// Sends the answer to the caller, wherever it runs.
    pub fn send(self, value: R) -> Result<(), ReplyError> {
        match self.inner {
            ReplyInner::Local(port) => port.send(value).map_err(|_| ReplyError::CallerGone),
            ReplyInner::Remote(slot) => {
                let port = slot.lock().take().ok_or(ReplyError::CallerGone)?;
                let frame = match codec::encode(&value) {
                    Ok(bytes) => ReplyFrame::Ok(bytes),
                    Err(e) => {
                        let _ = port.send(ReplyFrame::fault_bytes(Fault::Encode(e.to_string())));
                        return Err(ReplyError::Encode(e));
                    }
                };
                let bytes = codec::encode(&frame)?;
                port.send(bytes).map_err(|_| ReplyError::CallerGone)
            }
            ReplyInner::Outgoing | ReplyInner::Detached => Err(ReplyError::Detached),
        }
    }

    /// True when nobody waits for the answer any more.
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            ReplyInner::Local(port) => port.is_closed(),
            ReplyInner::Remote(slot) => slot.lock().as_ref().is_none_or(|p| p.is_closed()),
            ReplyInner::Outgoing | ReplyInner::Detached => true,
        }
    }
}

impl<R> Serialize for ReplyTo<R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.inner {
            // The port itself stays home; the receiver gets it from the envelope.
            ReplyInner::Outgoing => serializer.serialize_unit(),
            _ => Err(serde::ser::Error::custom(
                "a ReplyTo can only cross nodes inside the call that created it",
            )),
        }
    }
}

impl<'de, R> Deserialize<'de> for ReplyTo<R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <()>::deserialize(deserializer)?;
        let port = DECODING_PORT.with(|slot| slot.borrow().clone());
        Ok(Self {
            inner: match port {
                Some(shared) => ReplyInner::Remote(shared),
                None => ReplyInner::Detached,
            },
            _reply: PhantomData,
        })
    }
}

/// Control traffic between the agents of two nodes (heartbeat, gossip).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum SysMsg {
    /// "I am alive", plus the peers the sender currently sees up, so that
    /// every node learns every other transitively.
    Heartbeat {
        /// Sender's node name.
        from: String,
        /// Sender's listen address, as others should dial it.
        addr: String,
        /// (name, address) of the nodes the sender sees up.
        peers: Vec<(String, String)>,
    },
    /// The sender leaves the cluster on purpose: do not redial it.
    Leaving {
        /// Sender's node name.
        from: String,
    },
}

/// Tells a local actor that its global name lost a conflict.
pub(crate) type NameLostFn = Box<dyn Fn(super::event::NameLost) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    enum Msg {
        Ask(u32, ReplyTo<u32>),
    }

    #[test]
    fn outgoing_reply_encodes_and_decodes_attached_to_the_port() {
        let bytes = codec::encode(&Msg::Ask(7, ReplyTo::outgoing())).expect("encode");
        let (tx, rx) = ractor::concurrency::oneshot();
        let shared: SharedPort = Arc::new(Mutex::new(Some(tx.into())));
        let msg: Msg = with_reply_port(Some(shared), || codec::decode(&bytes)).expect("decode");
        let Msg::Ask(n, reply) = msg;
        reply.send(n + 1).expect("send");
        let frame: ReplyFrame = codec::decode(&rx.blocking_recv().expect("reply")).expect("frame");
        match frame {
            ReplyFrame::Ok(b) => assert_eq!(codec::decode::<u32>(&b).expect("u32"), 8),
            ReplyFrame::Fault(f) => panic!("fault {f}"),
        }
    }

    #[test]
    fn local_reply_port_refuses_to_cross_nodes() {
        let (tx, _rx) = ractor::concurrency::oneshot::<u32>();
        assert!(codec::encode(&Msg::Ask(1, ReplyTo::local(tx.into()))).is_err());
    }

    #[test]
    fn batch_envelope_round_trips_through_ractor_serialization() {
        let bytes = codec::encode(&vec![vec![1u8], vec![2u8, 3]]).expect("encode");
        let wire = ractor::Message::serialize(Envelope::Batch(bytes.clone())).expect("serialize");
        match <Envelope as ractor::Message>::deserialize(wire) {
            Ok(Envelope::Batch(b)) => assert_eq!(b, bytes),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn envelope_deserialize_never_fails() {
        let odd = SerializedMessage::Cast {
            variant: "v9".into(),
            args: vec![1, 2, 3],
            metadata: None,
        };
        assert!(matches!(
            <Envelope as ractor::Message>::deserialize(odd),
            Ok(Envelope::Unknown { .. })
        ));
    }
}
