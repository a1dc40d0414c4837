//! The workspace's binary codec.
//!
//! Every value that crosses a node boundary or lands on disk goes through
//! [`encode`] and [`decode`]. Today the format is bincode 2 (standard
//! configuration: little endian, variable-length integers) driven by serde;
//! keeping every caller on these two functions means the format can move
//! (to postcard or wincode, say) by editing this file alone.

use serde::{Serialize, de::DeserializeOwned};

/// Upper bound on the size of one decoded value, so that a corrupt length
/// prefix cannot make the decoder allocate gigabytes.
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be turned into bytes.
    #[error("encode failed: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the expected type.
    #[error("decode failed: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes held a valid value followed by unread bytes.
    #[error("decode left {0} trailing bytes")]
    TrailingBytes(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes `value` into a fresh byte vector.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes one whole value of type `T` from `bytes`; trailing bytes are an
/// error, since they mean the sender and receiver disagree on the type.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        id: u64,
        name: String,
        tags: Vec<String>,
        weight: Option<i32>,
    }

    proptest! {
        #[test]
        fn round_trips(id: u64, name in ".*", tags in proptest::collection::vec(".*", 0..4), weight: Option<i32>) {
            let r = Record { id, name, tags, weight };
            let bytes = encode(&r).expect("encode");
            prop_assert_eq!(decode::<Record>(&bytes).expect("decode"), r);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Record>(&bytes);
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&7u32).expect("encode");
        bytes.push(0);
        assert!(matches!(
            decode::<u32>(&bytes),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    #[test]
    fn huge_length_prefix_is_refused() {
        // A Vec<u8> claiming u64::MAX elements must fail, not allocate.
        let bytes = encode(&u64::MAX).expect("encode");
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
