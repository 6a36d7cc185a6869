//! Signed entries (opt-in, [`crate::ConfigBuilder::signing_key`]): every
//! entry written carries a keyed BLAKE3 MAC after its payload, and an entry
//! read is decoded only once its MAC checks out. This protects a service
//! whose Redis is shared or exposed: bytes that someone else put under a
//! key never reach its deserializer.
//!
//! The codec knows nothing of this: [`seal`] appends the MAC to an encoded
//! entry, [`open`] checks and strips it before the entry is decoded. The
//! MAC also covers the Redis key, so a valid entry copied under another key
//! (another argument, another function) does not verify either. The layout
//! is in `docs/FORMAT.md` ("Signed entries").

use std::fmt;

/// Bytes of the MAC trailer.
pub(crate) const MAC_LEN: usize = 32;

/// Turns a user's secret (any length) into a BLAKE3 key; documented in
/// `docs/FORMAT.md`, so other readers can verify entries.
const KEY_CONTEXT: &str = "cached-redis entry MAC v1";

/// Shortest secret accepted: less is too easy to guess.
pub(crate) const MIN_SECRET_LEN: usize = 16;

/// The key entries are signed with, and older keys still accepted while
/// every process moves to the new one. `Debug` never shows a key.
#[derive(Clone, Default)]
pub(crate) struct SigningKeys {
    /// `None`: signing is off (then `accepted` is empty once validated).
    current: Option<[u8; 32]>,
    accepted: Vec<[u8; 32]>,
    /// A secret shorter than [`MIN_SECRET_LEN`] was given: its length.
    too_short: Option<usize>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.current {
            None => f.write_str("off"),
            Some(_) => write!(
                f,
                "on (key redacted, {} older key(s) accepted, redacted)",
                self.accepted.len()
            ),
        }
    }
}

/// Why an entry was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignatureError {
    #[error("entry of {0} bytes is too short to carry a MAC")]
    Missing(usize),
    #[error("entry MAC does not verify with any accepted key")]
    Mismatch,
}

impl SigningKeys {
    fn derive(&mut self, secret: &[u8]) -> [u8; 32] {
        if secret.len() < MIN_SECRET_LEN {
            self.too_short = Some(secret.len());
        }
        blake3::derive_key(KEY_CONTEXT, secret)
    }

    /// Signs with `secret` from now on (and accepts entries signed with it).
    pub(crate) fn sign_with(&mut self, secret: &[u8]) {
        self.current = Some(self.derive(secret));
    }

    /// Also accepts entries signed with `secret` (rotation).
    pub(crate) fn accept(&mut self, secret: &[u8]) {
        let key = self.derive(secret);
        if !self.accepted.contains(&key) {
            self.accepted.push(key);
        }
    }

    /// The keys, when signing is on.
    pub(crate) fn active(&self) -> Option<&SigningKeys> {
        self.current.is_some().then_some(self)
    }

    /// What is wrong with these settings, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        if let Some(len) = self.too_short {
            return Some(format!(
                "signing key of {len} bytes: use at least {MIN_SECRET_LEN} random bytes"
            ));
        }
        if self.current.is_none() && !self.accepted.is_empty() {
            return Some(
                "signing_keys_accepted without signing_key: set the key to write with".into(),
            );
        }
        None
    }

    fn current(&self) -> &[u8; 32] {
        self.current.as_ref().expect("signing is on")
    }

    fn all(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.current.iter().chain(&self.accepted)
    }
}

fn mac(key: &[u8; 32], redis_key: &str, entry: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&(redis_key.len() as u64).to_le_bytes());
    hasher.update(redis_key.as_bytes());
    hasher.update(entry);
    hasher.finalize()
}

/// Appends the MAC of `entry` (header and payload), stored under
/// `redis_key`, made with the current key.
pub(crate) fn seal(keys: &SigningKeys, redis_key: &str, entry: &mut Vec<u8>) {
    let tag = mac(keys.current(), redis_key, entry);
    entry.extend_from_slice(tag.as_bytes());
}

/// The entry (header and payload) inside `bytes` read from `redis_key`, if
/// its MAC verifies with the current key or an accepted one.
pub(crate) fn open<'a>(
    keys: &SigningKeys,
    redis_key: &str,
    bytes: &'a [u8],
) -> Result<&'a [u8], SignatureError> {
    let Some(split) = bytes.len().checked_sub(MAC_LEN) else {
        return Err(SignatureError::Missing(bytes.len()));
    };
    let (entry, tag) = bytes.split_at(split);
    let tag: [u8; MAC_LEN] = tag.try_into().expect("split at MAC_LEN");
    // `Hash == [u8; 32]` compares in constant time.
    let verifies = keys.all().any(|key| mac(key, redis_key, entry) == tag);
    if verifies {
        Ok(entry)
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a secret of at least sixteen bytes";
    const KEY: &str = "cached:users:AAAAAAAAAAAAAAAAAAAAAA";

    fn signer(secret: &[u8]) -> SigningKeys {
        let mut keys = SigningKeys::default();
        keys.sign_with(secret);
        keys
    }

    fn sealed(keys: &SigningKeys, entry: &[u8]) -> Vec<u8> {
        let mut bytes = entry.to_vec();
        seal(keys, KEY, &mut bytes);
        bytes
    }

    #[test]
    fn round_trip() {
        let keys = signer(SECRET);
        let bytes = sealed(&keys, b"header and payload");
        assert_eq!(bytes.len(), 18 + MAC_LEN);
        assert_eq!(open(&keys, KEY, &bytes).unwrap(), b"header and payload");
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let keys = signer(SECRET);
        let bytes = sealed(&keys, b"header and payload");
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(open(&keys, KEY, &bad).is_err(), "bit {i}");
        }
    }

    #[test]
    fn unsigned_short_and_moved_entries_are_refused() {
        let keys = signer(SECRET);
        let entry = [7u8; 64];
        assert!(matches!(
            open(&keys, KEY, &entry),
            Err(SignatureError::Mismatch)
        ));
        assert!(matches!(
            open(&keys, KEY, &entry[..5]),
            Err(SignatureError::Missing(5))
        ));
        let bytes = sealed(&keys, &entry);
        assert!(
            open(&keys, "cached:users:BBBBBBBBBBBBBBBBBBBBBB", &bytes).is_err(),
            "the MAC binds the key"
        );
        let other = signer(b"another secret, sixteen or more");
        assert!(open(&other, KEY, &bytes).is_err());
    }

    #[test]
    fn rotation_accepts_the_old_key_and_writes_with_the_new() {
        let old = signer(b"the old secret, long enough");
        let mut new = signer(b"the new secret, long enough");
        assert!(new.problem().is_none());
        new.accept(b"the old secret, long enough");
        let by_old = sealed(&old, b"entry");
        assert_eq!(open(&new, KEY, &by_old).unwrap(), b"entry");
        let by_new = sealed(&new, b"entry");
        assert!(
            open(&old, KEY, &by_new).is_err(),
            "written with the new key"
        );
        assert_eq!(open(&new, KEY, &by_new).unwrap(), b"entry");
    }

    #[test]
    fn debug_shows_no_key() {
        let mut both = signer(SECRET);
        both.accept(b"the old secret, long enough");
        let keys = both;
        let shown = format!("{keys:?}");
        assert!(shown.contains("redacted"), "{shown}");
        for key in keys.all() {
            let hex: String = key[..4].iter().map(|b| format!("{b:02x}")).collect();
            assert!(!shown.contains(&hex));
        }
        assert!(!shown.contains('['), "no byte array: {shown}");
        assert_eq!(format!("{:?}", SigningKeys::default()), "off");
    }

    #[test]
    fn bad_settings_are_named() {
        let mut short = SigningKeys::default();
        short.sign_with(b"short");
        assert!(short.problem().unwrap().contains("5 bytes"));
        let mut orphan = SigningKeys::default();
        orphan.accept(SECRET);
        assert!(orphan.problem().unwrap().contains("signing_key"));
        assert!(orphan.active().is_none());
    }
}
