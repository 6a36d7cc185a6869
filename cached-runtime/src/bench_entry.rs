//! The stored-entry format (codec and MAC trailer) with the default
//! limits, for the benchmarks (reached as `__private::entry`): the codec is
//! otherwise crate-private. Not a public API.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, CodecLimits};
use crate::signing::{self, SigningKeys};

fn limits() -> CodecLimits {
    let c = crate::Config::default();
    CodecLimits {
        compress_min_bytes: c.compress_min_bytes,
        compression: c.compression,
        zlib_level: c.zlib_level,
        max_value_bytes: c.max_value_bytes,
    }
}

/// `value` as an entry (header and payload), as a miss stores it.
pub fn encode<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    encode_with(value, crate::Compression::Zlib)
}

/// [`encode`] with `compression` instead of the default.
pub fn encode_with<T: Serialize>(value: &T, compression: crate::Compression) -> Option<Vec<u8>> {
    encode_under(
        value,
        CodecLimits {
            compression,
            ..limits()
        },
    )
}

/// [`encode`] with zlib at `level` instead of the default level.
pub fn encode_zlib_at<T: Serialize>(value: &T, level: u32) -> Option<Vec<u8>> {
    encode_under(
        value,
        CodecLimits {
            compression: crate::Compression::Zlib,
            zlib_level: level,
            ..limits()
        },
    )
}

/// `value` as a bincode entry under `limits`.
fn encode_under<T: Serialize>(value: &T, limits: CodecLimits) -> Option<Vec<u8>> {
    codec::encode_with(
        codec::Codec::Bincode,
        value,
        std::time::Duration::ZERO,
        limits,
    )
    .ok()
    .map(|e| e.bytes)
}

/// The value of an entry, as a hit decodes it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    codec::decode(bytes, limits()).ok().map(|(value, _)| value)
}

/// Appends and checks the MAC trailer of signed entries.
#[derive(Debug)]
pub struct Signer(SigningKeys);

impl Signer {
    /// Signs with `secret`, as `ConfigBuilder::signing_key` does.
    pub fn new(secret: &[u8]) -> Self {
        let mut keys = SigningKeys::default();
        keys.sign_with(secret);
        Self(keys)
    }

    /// Appends the MAC of `entry`, stored under `redis_key`.
    pub fn seal(&self, redis_key: &str, entry: &mut Vec<u8>) {
        signing::seal(&self.0, redis_key, entry);
    }

    /// The entry inside `bytes` if its MAC verifies.
    pub fn open<'a>(&self, redis_key: &str, bytes: &'a [u8]) -> Option<&'a [u8]> {
        signing::open(&self.0, redis_key, bytes).ok()
    }
}
