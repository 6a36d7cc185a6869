//! Entry points for the property tests and fuzzers of the stored format
//! (reached as `__private::fuzz`). The codec itself stays crate-private;
//! these wrappers expose exactly what a fuzzer needs: write a valid entry
//! with a given codec, and read arbitrary bytes back as a given type, under
//! given limits.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, CodecLimits};
pub use crate::config::Compression;

/// A value codec of the stored format, named by the id it writes in the
/// header's byte 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Codec id 1: bincode 2, serde API, `config::standard()`.
    Bincode,
    /// Codec id 2: serde_json, for types bincode cannot read back.
    Json,
}

impl Codec {
    /// The codec id this codec writes in the header's byte 1.
    pub fn id(self) -> u8 {
        match self {
            Codec::Bincode => 1,
            Codec::Json => 2,
        }
    }
}

/// Length of the header in front of every entry's payload.
pub const HEADER_LEN: usize = codec::HEADER_LEN;

/// Every codec the decoder reads: the fuzz tests run over each, so a new
/// codec is covered by adding it here.
pub const CODECS: &[Codec] = &[Codec::Bincode, Codec::Json];

/// Every compression the decoder reads (header flag bits 0 and 1), for the
/// same purpose.
pub const COMPRESSIONS: &[Compression] = &[Compression::Zlib, Compression::Lz4];

/// Encodes `value` as a complete stored entry (header and payload) with
/// `codec`, compressed with `compression` when the payload reaches
/// `compress_min_bytes`.
///
/// # Errors
///
/// The codec's refusal (a value over `max_value_bytes`, a `Serialize`
/// failure), as text.
pub fn encode_entry<T: Serialize + ?Sized>(
    value: &T,
    codec: Codec,
    compression: Compression,
    compress_min_bytes: usize,
    max_value_bytes: usize,
) -> Result<Vec<u8>, String> {
    let limits = CodecLimits {
        compress_min_bytes,
        compression,
        zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
        max_value_bytes,
    };
    let codec = match codec {
        Codec::Bincode => codec::Codec::Bincode,
        Codec::Json => codec::Codec::Json,
    };
    codec::encode_with(codec, value, Duration::from_micros(1234), limits)
        .map(|e| e.bytes)
        .map_err(|e| e.to_string())
}

/// Decodes `bytes` as a stored entry holding a `T`, as a lookup in the
/// store would, under `max_value_bytes`.
///
/// # Errors
///
/// Why the bytes are not a valid entry of a `T`, as text.
pub fn decode_entry<T: DeserializeOwned>(
    bytes: &[u8],
    max_value_bytes: usize,
) -> Result<T, String> {
    let limits = CodecLimits {
        // Decoding reads the header's flag, never this threshold.
        compress_min_bytes: usize::MAX,
        compression: Compression::Zlib,
        zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
        max_value_bytes,
    };
    codec::decode::<T>(bytes, limits)
        .map(|(value, _header)| value)
        .map_err(|e| e.to_string())
}
