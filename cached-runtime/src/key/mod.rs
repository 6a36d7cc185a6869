//! Cache keys: `{namespace}:{prefix}:{hash}`.
//!
//! `hash` is base64url (no padding) of the first 16 bytes of
//! `BLAKE3(salt_digest || canonical_json(key_args))`, 22 characters.

mod canonical;
mod fingerprint;

use fingerprint::Fingerprint;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32};

use base64::Engine as _;
use serde::Serialize;

pub(crate) use canonical::{to_canonical_json, CanonicalError};

/// Length of the hash segment of a key.
pub(crate) const HASH_LEN: usize = 22;
// The 16-byte digest in unpadded base64 fills the hash segment exactly.
const _: () = assert!(HASH_LEN == (16 * 4usize).div_ceil(3));

/// Everything that salts a key besides the arguments.
#[derive(Debug, Clone, Copy)]
pub struct SaltParts<'a> {
    /// [`crate::ConfigBuilder::salt`].
    pub config_salt: &'a [u8],
    /// The calling crate's name.
    pub crate_name: &'a str,
    /// The calling crate's version.
    pub crate_version: &'a str,
    /// The git commit the calling crate was built from, when known.
    pub git_sha: Option<&'a str>,
    /// The function's `module_path!()`.
    pub module_path: &'a str,
    /// The function's name.
    pub fn_name: &'a str,
    /// The functions it is nested in, below its module
    /// ([`crate::site::nesting`]); `None` for most.
    pub nesting: Option<&'a str>,
    /// The function's return type as written (`stringify!`), empty for none.
    pub return_type: &'a str,
    /// The function's `version` option.
    pub version: &'a str,
    /// Concrete type names of a generic call, in parameter order.
    pub type_names: &'a [&'a str],
}

/// Digest of the salt parts, each length-prefixed so that no two different
/// salts can produce the same byte stream.
pub(crate) fn salt_digest(parts: &SaltParts<'_>) -> [u8; 32] {
    with_type_names(&base_digest(parts), parts.type_names)
}

/// Feeds `bytes` to `h` behind its length, so that neighbouring parts can
/// never trade bytes.
fn put(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The digest of everything but the type names: fixed per function.
fn base_digest(parts: &SaltParts<'_>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    // v2: the function's identity joined the salt (v1 keys are orphaned).
    // v3: an `f32` argument keyed as the `f64` its shortest decimal names
    // (the keys of v2 with an `f32` in their arguments are orphaned, not
    // misread).
    h.update(b"cached-redis salt v3");
    let mut put = |bytes: &[u8]| put(&mut h, bytes);
    put(parts.config_salt);
    put(parts.crate_name.as_bytes());
    put(parts.crate_version.as_bytes());
    match parts.git_sha {
        Some(sha) => {
            put(b"git");
            put(sha.as_bytes());
        }
        None => put(b"nogit"),
    }
    put(parts.module_path.as_bytes());
    put(parts.fn_name.as_bytes());
    put(parts.return_type.as_bytes());
    put(parts.version.as_bytes());
    // Only nested functions add a part, so the salt of every other function
    // is what it was; the tag keeps the two shapes apart.
    if let Some(nesting) = parts.nesting {
        put(b"nested in");
        put(nesting.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// The salt digest of a call with concrete type names, derived from the
/// function's fixed `base` digest (the config salt, possibly large, is not
/// hashed again on every generic call). No type names: `base` itself.
pub(crate) fn with_type_names(base: &[u8; 32], type_names: &[&str]) -> [u8; 32] {
    if type_names.is_empty() {
        return *base;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"cached-redis types v1");
    h.update(base);
    put(&mut h, &(type_names.len() as u64).to_le_bytes());
    for name in type_names {
        put(&mut h, name.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// Whether `type_name` is a closure's or has one among its type arguments:
/// `app::handler::{{closure}}`, `Vec<app::handler::{{closure}}>`, but not a
/// type declared in a closure's body (`app::handler::{{closure}}::Query`,
/// one name per declaration). Every closure of a function has the one name,
/// so a key cannot tell them apart by it.
pub(crate) fn names_a_closure(type_name: &str) -> bool {
    const CLOSURE: &str = "{{closure}}";
    type_name
        .match_indices(CLOSURE)
        .any(|(at, _)| !type_name[at + CLOSURE.len()..].starts_with("::"))
}

/// A cache's key memo and the calling function's gate to it.
pub(crate) type Memo<'a> = (&'a KeyMemo, &'a MemoGate);

/// The first 16 bytes of `BLAKE3(salt_digest || canonical_json(args))`,
/// through the memo when there is one and the function's gate admits it.
fn args_digest<T: Serialize + ?Sized>(
    salt_digest: &[u8; 32],
    args: &T,
    memo: Option<Memo<'_>>,
) -> Result<[u8; 16], CanonicalError> {
    let digest_with = |buffers: &mut Buffers| match memo {
        Some((memo, gate)) if gate.admits() => {
            memoized_digest(salt_digest, args, memo, gate, buffers)
        }
        _ => {
            let json = &mut buffers.json;
            json.clear();
            json.extend_from_slice(salt_digest);
            to_canonical_json(args, json).map(|()| digest(json))
        }
    };
    // Borrowed in place (moving ~300 bytes of buffers out and back cost
    // more than keying a small argument). A key built while this thread's
    // buffers are in use (an argument's `Serialize` that keys another
    // call) or from another thread-local's destructor gets fresh ones.
    BUFFERS
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(buffers) => {
                let mut buffers = SheddingOnDrop(buffers);
                digest_with(&mut buffers.0)
            }
            Err(_) => digest_with(&mut Buffers::default()),
        })
        .unwrap_or_else(|_| digest_with(&mut Buffers::default()))
}

thread_local! {
    /// The buffers of the last key built on this thread, kept for their
    /// capacity (no allocation per key once warm) and their front of
    /// recent memo inputs.
    static BUFFERS: std::cell::RefCell<Buffers> = const {
        std::cell::RefCell::new(Buffers {
            json: Vec::new(),
            input: Vec::new(),
            fingerprint: Fingerprint {
                record: Vec::new(),
                text: String::new(),
                names: Vec::new(),
            },
            recent: Recent::new(),
        })
    };
}

/// This thread's buffers while a key is built. They shed their growth
/// when it is dropped, so a huge argument whose `Serialize` panics midway
/// leaves no oversized buffer on the thread either.
struct SheddingOnDrop<'a>(std::cell::RefMut<'a, Buffers>);

impl Drop for SheddingOnDrop<'_> {
    fn drop(&mut self) {
        self.0.shed_growth();
    }
}

/// Working buffers of [`args_digest`].
#[derive(Default)]
struct Buffers {
    /// The salt digest, then the canonical JSON: the hashed bytes.
    json: Vec<u8>,
    /// The salt digest, then the fingerprint's record and text: the
    /// memo's key.
    input: Vec<u8>,
    /// The arguments' fingerprint.
    fingerprint: Fingerprint,
    /// The memo inputs this thread keyed last.
    recent: Recent,
}

impl Buffers {
    /// Drops buffers grown by a huge argument: they are not kept.
    fn shed_growth(&mut self) {
        if self.json.capacity() > KEEP_MAX {
            self.json = Vec::new();
        }
        if self.input.capacity() > KEEP_MAX {
            self.input = Vec::new();
        }
        if self.fingerprint.capacity() > KEEP_MAX {
            self.fingerprint = Fingerprint::default();
        }
    }
}

/// Whether an open gate learns from this lookup: one in
/// [`MemoGate::SAMPLE`], at random. A counter would line up with a
/// caller's pattern (a function called every eighth time would be counted
/// at every lookup, the one beside it never); a thread's own generator
/// has no pattern to line up with, nor a lock.
fn sampled() -> bool {
    thread_local! {
        static STATE: std::cell::Cell<u32> = const { std::cell::Cell::new(0x9E37_79B9) };
    }
    STATE
        .try_with(|state| {
            // xorshift32; its high bits are the better ones.
            let mut x = state.get();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            state.set(x);
            (x >> 16) % MemoGate::SAMPLE == 0
        })
        .unwrap_or(true)
}

/// Forgets this thread's front of recent memo inputs, so that the next
/// lookups go to the shared memo (tests of the shared memo's own paths).
pub fn forget_thread_front() {
    let _ = BUFFERS.try_with(|cell| {
        if let Ok(mut buffers) = cell.try_borrow_mut() {
            buffers.recent = Recent::new();
        }
    });
}

/// The last few memo inputs a thread keyed, with their digests, in front
/// of the cache's shared memo.
///
/// Why: every lookup in the shared memo takes its shard's read lock, a
/// write to a cache line that all threads calling with the same argument
/// share. A digest is a pure function of its input (salt digest, record,
/// text), so an entry here is never stale, whichever memo or function it
/// came from.
struct Recent {
    slots: [(Vec<u8>, [u8; 16]); Recent::SLOTS],
    /// The slot the next new input takes (round robin).
    next: usize,
}

impl Recent {
    /// Inputs remembered per thread.
    const SLOTS: usize = 4;
    /// Longer inputs are left to the shared memo: this bounds what each
    /// thread holds to `SLOTS` times this.
    const MAX_INPUT: usize = 4 << 10;

    const fn new() -> Self {
        Self {
            slots: [const { (Vec::new(), [0; 16]) }; Self::SLOTS],
            next: 0,
        }
    }

    /// The digest of `input`, if this thread keyed it lately. An empty
    /// slot never matches: an input starts with the 32-byte salt digest.
    fn get(&self, input: &[u8]) -> Option<[u8; 16]> {
        self.slots
            .iter()
            .find(|(kept, _)| kept.as_slice() == input)
            .map(|&(_, digest)| digest)
    }

    fn put(&mut self, input: &[u8], digest: [u8; 16]) {
        if input.len() > Self::MAX_INPUT {
            return;
        }
        let slot = &mut self.slots[self.next];
        // Reused only when it has room: growing it would double it, past
        // `MAX_INPUT`; a new one is allocated exactly.
        if slot.0.capacity() >= input.len() {
            slot.0.clear();
            slot.0.extend_from_slice(input);
        } else {
            slot.0 = input.to_vec();
        }
        slot.1 = digest;
        self.next = (self.next + 1) % Self::SLOTS;
    }
}

impl Default for Recent {
    fn default() -> Self {
        Self::new()
    }
}

/// Largest buffer kept per thread between keys.
const KEEP_MAX: usize = 64 << 10;

/// The digest of `args` from `memo` when their fingerprint is there;
/// otherwise made from the fingerprint (the arguments are serialized once
/// either way) and remembered. `gate` learns which it was.
fn memoized_digest<T: Serialize + ?Sized>(
    salt_digest: &[u8; 32],
    args: &T,
    memo: &KeyMemo,
    gate: &MemoGate,
    buffers: &mut Buffers,
) -> Result<[u8; 16], CanonicalError> {
    let fp = &mut buffers.fingerprint;
    fp.clear();
    fingerprint::record(args, fp)?;
    let input = &mut buffers.input;
    input.clear();
    // Too long to be remembered: neither copied nor looked up.
    let fits = salt_digest.len() + fp.record.len() + fp.text.len() <= KeyMemo::MAX_INPUT;
    let found = if fits {
        // The record decodes from its first byte and says how long each
        // text is: salt, record and text side by side are as exact as the
        // three.
        input.extend_from_slice(salt_digest);
        input.extend_from_slice(&fp.record);
        input.extend_from_slice(fp.text.as_bytes());
        let recent = &mut buffers.recent;
        recent.get(input).or_else(|| {
            let digest = memo.get(input)?;
            recent.put(input, digest);
            Some(digest)
        })
    } else {
        None
    };
    // An open gate learns from a sample: counting every lookup would be
    // two more writes per call to one cache line all threads share. A shut
    // gate counts each of its probes, so that one probe window decides.
    if gate.bypassing() || sampled() {
        gate.record(found.is_some());
    }
    if let Some(digest) = found {
        return Ok(digest);
    }
    let json = &mut buffers.json;
    json.clear();
    json.extend_from_slice(salt_digest);
    fingerprint::replay_canonical_json(&fp.record, &fp.text, &fp.names, json)?;
    let digest = digest(json);
    if fits {
        memo.insert(input, digest);
        buffers.recent.put(input, digest);
    }
    Ok(digest)
}

/// The first 16 bytes of the BLAKE3 of `input` (salt digest, then JSON).
fn digest(input: &[u8]) -> [u8; 16] {
    // Fed in two parts on purpose: the salt digest first, then the rest
    // runs through the chunk state one block at a time, which for a few
    // KB is faster than `blake3::hash`'s wide path (same digest).
    let (salt, json) = input.split_at(32.min(input.len()));
    let mut h = blake3::Hasher::new();
    h.update(salt);
    h.update(json);
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&h.finalize().as_bytes()[..16]);
    digest
}

/// The 22-character hash segment for `args` under `salt_digest`.
pub(crate) fn hash_segment<T: Serialize + ?Sized>(
    salt_digest: &[u8; 32],
    args: &T,
) -> Result<String, CanonicalError> {
    let digest = args_digest(salt_digest, args, None)?;
    let mut segment = String::with_capacity(HASH_LEN);
    push_hash(digest, &mut segment);
    Ok(segment)
}

/// Appends the hash segment of `digest`: its unpadded base64url.
fn push_hash(digest: [u8; 16], out: &mut String) {
    // Encoded on the stack, then copied once: `encode_string` goes through
    // base64's chunked writer, about twice the work for 16 bytes.
    let mut hash = [0u8; HASH_LEN];
    let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(digest, &mut hash)
        .expect("16 bytes are 22 base64 characters");
    out.push_str(std::str::from_utf8(&hash[..written]).expect("base64 is ASCII"));
}

/// The key of `args` under `head` (`{namespace}:{prefix}:`) and
/// `salt_digest`, built in one allocation; the hash through `memo` when
/// the cache has one.
pub(crate) fn cache_key<T: Serialize + ?Sized>(
    head: &str,
    salt_digest: &[u8; 32],
    args: &T,
    memo: Option<Memo<'_>>,
) -> Result<CacheKey, CanonicalError> {
    let digest = args_digest(salt_digest, args, memo)?;
    let mut key = String::with_capacity(head.len() + HASH_LEN);
    key.push_str(head);
    push_hash(digest, &mut key);
    Ok(CacheKey(key))
}

/// The digests of the arguments a cache's functions were called with
/// lately, by salt digest and fingerprint ([`fingerprint`]).
///
/// Why: canonical JSON escapes, formats and sorts, and BLAKE3 then hashes
/// it one block after the other; a fingerprint is a plain append of each
/// serde call. For a 1 KB query seen before, the key costs its fingerprint,
/// one fast hash and one comparison instead. The key is the same either
/// way: fingerprints are injective and the digest is computed from the
/// fingerprint's own replay. One per cache, bounded in bytes
/// ([`crate::ConfigBuilder::key_memo_max_bytes`]); fingerprints over
/// [`KeyMemo::MAX_INPUT`] bytes are not kept.
pub(crate) struct KeyMemo {
    cache: quick_cache::sync::Cache<Box<[u8]>, [u8; 16], InputWeight, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for KeyMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMemo")
            .field("entries", &self.cache.len())
            .field("weight", &self.cache.weight())
            .finish_non_exhaustive()
    }
}

/// An input weighs its bytes, its digest and the memo's own overhead.
#[derive(Clone, Copy)]
struct InputWeight;

impl quick_cache::Weighter<Box<[u8]>, [u8; 16]> for InputWeight {
    fn weight(&self, input: &Box<[u8]>, _digest: &[u8; 16]) -> u64 {
        input.len() as u64 + 16 + KeyMemo::ENTRY_OVERHEAD
    }
}

impl KeyMemo {
    /// Longer fingerprints are keyed every time: one that long costs more
    /// to copy and compare than its hash saves, and would crowd the budget.
    pub(crate) const MAX_INPUT: usize = 16 << 10;

    /// What an entry costs besides its bytes (the box, the slot, the
    /// table), counted against the budget.
    const ENTRY_OVERHEAD: u64 = 48;

    /// Smaller budgets turn the memo off: they would hold a handful of
    /// arguments while every call paid for fingerprints.
    pub(crate) const MIN_BYTES: u64 = 4 << 10;

    /// A memo of at most `max_bytes` bytes.
    pub(crate) fn new(max_bytes: u64) -> Self {
        let max_bytes = max_bytes.max(1);
        // Sized for fingerprints of a few hundred bytes; it grows if
        // they are smaller.
        let estimated = (max_bytes / 512).clamp(16, 1 << 16) as usize;
        let cache = quick_cache::sync::Cache::with_options(
            quick_cache::OptionsBuilder::new()
                .estimated_items_capacity(estimated)
                .weight_capacity(max_bytes)
                // Bounded by bytes alone: no entry count limits the shards.
                .shards(crate::local::shards_for(
                    u64::MAX,
                    max_bytes,
                    Self::MAX_INPUT as u64 + 16 + Self::ENTRY_OVERHEAD,
                ))
                .build()
                .expect("valid cache options"),
            InputWeight,
            Default::default(),
            Default::default(),
        );
        Self { cache }
    }

    fn get(&self, input: &[u8]) -> Option<[u8; 16]> {
        self.cache.get(input)
    }

    fn insert(&self, input: &[u8], digest: [u8; 16]) {
        self.cache.insert(input.into(), digest);
    }

    /// Fingerprints held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cache.len()
    }
}

/// Whether a function's keys go through the key memo.
///
/// A key through the memo is about half the work of one without it when the
/// arguments were seen before, and about 1.8× when they were not (their
/// fingerprint, then its replay): it pays from about 60 % of lookups
/// hitting. So each function measures: over each window of
/// [`MemoGate::WINDOW`] counted lookups (one in [`MemoGate::SAMPLE`], at
/// random, while the gate is open; every probe while it is shut), if fewer
/// than that found their arguments, its next calls are keyed without the
/// memo, but for one whole window of
/// calls in every [`MemoGate::PROBE_EVERY`], whose lookups (and inserts)
/// decide when to come back. A whole window, not one call in eight: an
/// argument used a few times close together hits within it, where single
/// probes would almost never see it twice and the gate would stay shut.
/// The key is the same either way. Counts are relaxed atomics: a racing
/// call may blur a window, which only moves the decision by a call or two.
#[derive(Debug, Default)]
pub(crate) struct MemoGate {
    /// Lookups in the current window.
    lookups: AtomicU32,
    /// Of which found their arguments.
    hits: AtomicU32,
    /// Whether the last window's hits fell short.
    bypass: AtomicBool,
    /// Calls while bypassing, for picking the probe windows.
    calls: AtomicU32,
}

impl MemoGate {
    /// Lookups per decision.
    pub(crate) const WINDOW: u32 = 256;
    /// While bypassing, one window of calls in this many still looks up.
    pub(crate) const PROBE_EVERY: u32 = 8;
    /// While open, one lookup in this many is counted (drawn per thread).
    pub(crate) const SAMPLE: u32 = 8;

    /// Whether this call goes through the memo.
    #[inline]
    fn admits(&self) -> bool {
        !self.bypass.load(Relaxed)
            || (self.calls.fetch_add(1, Relaxed) / Self::WINDOW) % Self::PROBE_EVERY == 0
    }

    /// Counts a lookup, and decides at the end of a window.
    fn record(&self, hit: bool) {
        let hits = if hit {
            self.hits.fetch_add(1, Relaxed) + 1
        } else {
            self.hits.load(Relaxed)
        };
        if self.lookups.fetch_add(1, Relaxed) + 1 == Self::WINDOW {
            self.lookups.store(0, Relaxed);
            self.hits.store(0, Relaxed);
            // Fewer than 60 % hits: bypass, the next probe window seven
            // windows of calls from now.
            let bypass = u64::from(hits) * 5 < u64::from(Self::WINDOW) * 3;
            if bypass {
                self.calls.store(Self::WINDOW, Relaxed);
            }
            self.bypass.store(bypass, Relaxed);
        }
    }

    /// Whether calls are keyed without the memo now (but for probes).
    #[inline]
    pub(crate) fn bypassing(&self) -> bool {
        self.bypass.load(Relaxed)
    }
}

/// A full Redis key of one call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// `head` is `{namespace}:{prefix}:`.
    pub(crate) fn new(head: &str, hash: &str) -> Self {
        let mut s = String::with_capacity(head.len() + hash.len());
        s.push_str(head);
        s.push_str(hash);
        CacheKey(s)
    }

    /// The key as Redis sees it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::{hash_segment, salt_digest, SaltParts};

    const BASE: SaltParts<'static> = SaltParts {
        config_salt: b"cfg",
        crate_name: "demo",
        crate_version: "1.2.3",
        git_sha: Some("abc123"),
        module_path: "demo::users",
        fn_name: "profile",
        nesting: None,
        return_type: "Option < User >",
        version: "v1",
        type_names: &["u8"],
    };

    #[test]
    fn closures_are_named_as_such() {
        use super::names_a_closure;
        assert!(names_a_closure("app::handler::{{closure}}"));
        assert!(names_a_closure(
            "alloc::vec::Vec<app::handler::{{closure}}>"
        ));
        assert!(names_a_closure("(u8, app::{{closure}}::{{closure}})"));
        assert!(!names_a_closure("app::handler::{{closure}}::Query"));
        assert!(!names_a_closure("app::handler::Query"));
    }

    fn is_base64url(s: &str) -> bool {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// Guards the on-Redis key format: if this changes, every entry already
    /// stored becomes unreachable (orphaned until its TTL runs out). Change it
    /// only on purpose, together with the salt's version tag.
    ///
    /// Cross-checked outside Rust (Python `blake3`, following
    /// docs/FORMAT.md): base digest of the length-prefixed salt parts, the
    /// type-name digest over it, then BLAKE3(digest || `[42,"hello"]`),
    /// first 16 bytes, base64url without padding.
    #[test]
    fn fixed_test_vector() {
        let mut json = Vec::new();
        super::to_canonical_json(&(&42u32, &"hello"), &mut json).unwrap();
        assert_eq!(json, br#"[42,"hello"]"#);
        let digest = salt_digest(&BASE);
        let seg = hash_segment(&digest, &(&42u32, &"hello")).unwrap();
        assert_eq!(seg, "uKwQ7OLvsjmxfasBHeQdCg");
    }

    #[test]
    fn segment_is_22_chars_of_base64url() {
        let digest = salt_digest(&BASE);
        for args in [
            serde_json::json!(null),
            serde_json::json!([1, "two", {"b": 3.5, "a": [true]}]),
            serde_json::json!("x".repeat(10_000)),
        ] {
            let seg = hash_segment(&digest, &args).unwrap();
            assert_eq!(seg.len(), 22, "{seg}");
            assert!(is_base64url(&seg), "{seg}");
        }
    }

    #[test]
    fn different_salts_give_different_segments() {
        let a = hash_segment(&salt_digest(&BASE), &1u8).unwrap();
        let other = SaltParts {
            config_salt: b"other",
            ..BASE
        };
        let b = hash_segment(&salt_digest(&other), &1u8).unwrap();
        assert_ne!(a, b);
        // And different arguments under one salt.
        assert_ne!(a, hash_segment(&salt_digest(&BASE), &2u8).unwrap());
    }

    #[test]
    fn each_salt_part_matters() {
        let base = salt_digest(&BASE);
        let variants = [
            SaltParts {
                config_salt: b"cfg2",
                ..BASE
            },
            SaltParts {
                crate_name: "demo2",
                ..BASE
            },
            SaltParts {
                crate_version: "1.2.4",
                ..BASE
            },
            SaltParts {
                git_sha: Some("abc124"),
                ..BASE
            },
            SaltParts {
                git_sha: None,
                ..BASE
            },
            SaltParts {
                version: "v2",
                ..BASE
            },
            SaltParts {
                module_path: "demo::admin",
                ..BASE
            },
            SaltParts {
                fn_name: "profile2",
                ..BASE
            },
            SaltParts {
                nesting: Some("handler"),
                ..BASE
            },
            SaltParts {
                nesting: Some(""),
                ..BASE
            },
            SaltParts {
                return_type: "Option < Admin >",
                ..BASE
            },
            SaltParts {
                type_names: &["u64"],
                ..BASE
            },
            SaltParts {
                type_names: &[],
                ..BASE
            },
            SaltParts {
                type_names: &["u8", "u8"],
                ..BASE
            },
        ];
        let mut seen = vec![base];
        for v in &variants {
            let d = salt_digest(v);
            assert!(!seen.contains(&d), "{v:?} collides");
            seen.push(d);
        }
    }

    #[test]
    fn git_sha_none_differs_from_empty() {
        let none = salt_digest(&SaltParts {
            git_sha: None,
            ..BASE
        });
        let empty = salt_digest(&SaltParts {
            git_sha: Some(""),
            ..BASE
        });
        assert_ne!(none, empty);
    }

    #[test]
    fn type_names_differ() {
        let u8s = salt_digest(&SaltParts {
            type_names: &["u8"],
            ..BASE
        });
        let u64s = salt_digest(&SaltParts {
            type_names: &["u64"],
            ..BASE
        });
        assert_ne!(u8s, u64s);
    }

    /// Length prefixes keep the parts apart: moving bytes from one part to
    /// the next changes the digest.
    #[test]
    fn parts_do_not_run_together() {
        let a = salt_digest(&SaltParts {
            crate_name: "ab",
            crate_version: "c",
            ..BASE
        });
        let b = salt_digest(&SaltParts {
            crate_name: "a",
            crate_version: "bc",
            ..BASE
        });
        assert_ne!(a, b);
        let a = salt_digest(&SaltParts {
            type_names: &["a", "b"],
            ..BASE
        });
        let b = salt_digest(&SaltParts {
            type_names: &["ab"],
            ..BASE
        });
        assert_ne!(a, b);
    }

    #[test]
    fn cache_key_is_head_and_segment() {
        let digest = salt_digest(&BASE);
        let args = serde_json::json!({"b": [1, 2], "a": "x"});
        let key = super::cache_key("ns:p:", &digest, &args, None).unwrap();
        assert_eq!(
            key.as_str(),
            format!("ns:p:{}", hash_segment(&digest, &args).unwrap())
        );
    }

    /// A key through the memo is the key without it, whether the memo
    /// already held the arguments or not, for every salt.
    #[test]
    fn memoized_keys_are_the_same_keys() {
        let (memo, gate) = (super::KeyMemo::new(1 << 20), super::MemoGate::default());
        let digests = [
            salt_digest(&BASE),
            salt_digest(&SaltParts {
                type_names: &["u64"],
                ..BASE
            }),
        ];
        let args = [
            serde_json::json!({"b": [1, 2], "a": "x"}),
            serde_json::json!("y".repeat(20_000)),
            serde_json::json!(null),
            serde_json::json!([1, 2, 3]),
            serde_json::json!({"q": "another"}),
            serde_json::json!(42),
        ];
        for round in 0..3 {
            for digest in &digests {
                for a in &args {
                    let plain = super::cache_key("ns:p:", digest, a, None).unwrap();
                    // Past the first round, the shared memo's own hits.
                    super::forget_thread_front();
                    let memoized =
                        super::cache_key("ns:p:", digest, a, Some((&memo, &gate))).unwrap();
                    assert_eq!(plain, memoized, "round {round}, {a}");
                }
            }
        }
        // Every argument but the 20 KB one, under each salt.
        assert_eq!(memo.len(), 10, "{memo:?}");
        assert!(memo.cache.weight() <= 1 << 20);
    }

    /// An argument whose `Serialize` keys another call while this thread's
    /// buffers are in use: both keys are the keys built alone, and the
    /// thread's buffers are free again afterwards.
    #[test]
    fn a_key_built_inside_an_arguments_serialize_is_its_own_key() {
        /// Serializes as `shown`, after keying `inner` (another value, so
        /// that a digest handed to the wrong call shows).
        struct KeysWhileSerialized<'a> {
            shown: serde_json::Value,
            inner: serde_json::Value,
            memo: super::Memo<'a>,
            seen: std::cell::RefCell<Option<super::CacheKey>>,
        }
        impl serde::Serialize for KeysWhileSerialized<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let key =
                    super::cache_key("ns:in:", &salt_digest(&BASE), &self.inner, Some(self.memo));
                *self.seen.borrow_mut() = key.ok();
                self.shown.serialize(s)
            }
        }
        let (memo, gate) = (super::KeyMemo::new(1 << 20), super::MemoGate::default());
        let digest = salt_digest(&BASE);
        let shown = serde_json::json!({"b": [1, 2], "a": "x"});
        let inner = serde_json::json!({"inner": true});
        for memo_outer in [None, Some((&memo, &gate))] {
            let arg = KeysWhileSerialized {
                shown: shown.clone(),
                inner: inner.clone(),
                memo: (&memo, &gate),
                seen: Default::default(),
            };
            let outer = super::cache_key("ns:out:", &digest, &arg, memo_outer).unwrap();
            assert_eq!(
                outer,
                super::cache_key("ns:out:", &digest, &shown, None).unwrap()
            );
            assert_eq!(
                arg.seen.into_inner(),
                Some(super::cache_key("ns:in:", &digest, &inner, None).unwrap())
            );
            assert!(
                super::BUFFERS.with(|cell| cell.try_borrow_mut().is_ok()),
                "the thread's buffers are left borrowed"
            );
        }
    }

    /// A huge argument whose `Serialize` panics after writing most of
    /// itself leaves no buffer above the kept size on the thread, through
    /// the memo or without it.
    #[test]
    fn a_panicking_argument_leaves_no_grown_buffer() {
        /// A long string, then a panic.
        struct PanicsAfterALongString;
        impl serde::Serialize for PanicsAfterALongString {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element(&"x".repeat(4 * super::KEEP_MAX))?;
                panic!("an argument's Serialize panicked");
            }
        }
        let (memo, gate) = (super::KeyMemo::new(1 << 20), super::MemoGate::default());
        let digest = salt_digest(&BASE);
        for memo in [None, Some((&memo, &gate))] {
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                super::cache_key("ns:p:", &digest, &PanicsAfterALongString, memo)
            }));
            assert!(panicked.is_err());
            let sizes = super::BUFFERS.with(|cell| {
                let buffers = cell.try_borrow_mut().expect("the buffers are free");
                [
                    buffers.json.capacity(),
                    buffers.input.capacity(),
                    buffers.fingerprint.capacity(),
                ]
            });
            assert!(
                sizes.iter().all(|&size| size <= super::KEEP_MAX),
                "memo {}: buffers of {sizes:?} bytes kept",
                memo.is_some()
            );
        }
    }

    /// The sample is not a counter: a function whose calls fall at a fixed
    /// place among another's still gets counted, and its gate closes.
    #[test]
    fn a_gate_closes_whatever_the_pattern_of_calls() {
        use super::MemoGate;
        let memo = super::KeyMemo::new(1 << 20);
        let hot_gate = MemoGate::default();
        let digest = salt_digest(&BASE);
        let hot = serde_json::json!({"q": "hot"});
        let limit = 4 * MemoGate::WINDOW * MemoGate::SAMPLE;
        for pattern in [2, 4, 8] {
            let gate = MemoGate::default();
            let mut calls = 0;
            while !gate.bypassing() {
                let args = serde_json::json!({ "id": calls, "pattern": pattern });
                super::cache_key("ns:p:", &digest, &args, Some((&memo, &gate))).unwrap();
                calls += 1;
                assert!(calls < limit, "pattern {pattern}: the gate never closed");
                for _ in 1..pattern {
                    super::cache_key("ns:p:", &digest, &hot, Some((&memo, &hot_gate))).unwrap();
                }
            }
        }
        assert!(!hot_gate.bypassing(), "a hot argument keeps its gate open");
    }

    /// A thread's repeated argument is answered by its own front without
    /// the shared memo, and the key is still the key.
    #[test]
    fn a_threads_last_inputs_skip_the_shared_memo() {
        let gate = super::MemoGate::default();
        let (first, second) = (super::KeyMemo::new(1 << 20), super::KeyMemo::new(1 << 20));
        let digest = salt_digest(&BASE);
        let args = serde_json::json!({"q": "hot", "size": 10});
        let plain = super::cache_key("ns:p:", &digest, &args, None).unwrap();
        let through_first = super::cache_key("ns:p:", &digest, &args, Some((&first, &gate)));
        assert_eq!(through_first.unwrap(), plain);
        assert_eq!(first.len(), 1);
        // Same salt and argument, another memo: this thread's front has it.
        let through_second = super::cache_key("ns:p:", &digest, &args, Some((&second, &gate)));
        assert_eq!(through_second.unwrap(), plain);
        assert_eq!(second.len(), 0, "the shared memo was asked: {second:?}");
        // Forgotten, the thread's front sends it to the shared memo.
        super::forget_thread_front();
        let after_forgetting = super::cache_key("ns:p:", &digest, &args, Some((&second, &gate)));
        assert_eq!(after_forgetting.unwrap(), plain);
        assert_eq!(second.len(), 1, "the front was not forgotten: {second:?}");
        // Another salt is another input, found in neither.
        let other = salt_digest(&SaltParts {
            fn_name: "other",
            ..BASE
        });
        let plain_other = super::cache_key("ns:p:", &other, &args, None).unwrap();
        assert_ne!(plain_other, plain);
        let through = super::cache_key("ns:p:", &other, &args, Some((&second, &gate)));
        assert_eq!(through.unwrap(), plain_other);
        assert_eq!(second.len(), 2);
    }

    /// The front keeps the last `SLOTS` inputs, round robin, and none
    /// longer than its limit.
    #[test]
    fn the_front_keeps_its_last_inputs_only() {
        let mut recent = super::Recent::new();
        let input = |i: u8| vec![i; 40];
        for i in 0..super::Recent::SLOTS as u8 + 1 {
            recent.put(&input(i), [i; 16]);
        }
        assert_eq!(recent.get(&input(0)), None, "the oldest went first");
        for i in 1..super::Recent::SLOTS as u8 + 1 {
            assert_eq!(recent.get(&input(i)), Some([i; 16]));
        }
        // A longer input shares a prefix with none of them.
        assert_eq!(recent.get(&[1; 41]), None);
        let long = vec![9; super::Recent::MAX_INPUT + 1];
        recent.put(&long, [9; 16]);
        assert_eq!(recent.get(&long), None);
        assert_eq!(
            recent.get(&input(1)),
            Some([1; 16]),
            "a long input evicts nothing"
        );
        // A slot never holds more room than the longest input allowed.
        let mut recent = super::Recent::new();
        for len in [3000, 3100, super::Recent::MAX_INPUT] {
            for i in 0..super::Recent::SLOTS as u8 {
                recent.put(&vec![i; len], [i; 16]);
            }
        }
        for (kept, _) in &recent.slots {
            assert!(
                kept.capacity() <= super::Recent::MAX_INPUT,
                "{}",
                kept.capacity()
            );
        }
    }

    /// A small budget holds few fingerprints, never more than it allows,
    /// and the keys stay right while the memo evicts.
    #[test]
    fn the_memo_keeps_to_its_budget() {
        let budget = 16 << 10;
        let memo = super::KeyMemo::new(budget);
        let digest = salt_digest(&BASE);
        for round in 0..2 {
            for i in 0..500u32 {
                let args = serde_json::json!({"id": i, "pad": "p".repeat(100)});
                let plain = super::cache_key("ns:p:", &digest, &args, None).unwrap();
                // A gate of its own each call: every key goes through the memo.
                let gate = super::MemoGate::default();
                let memoized =
                    super::cache_key("ns:p:", &digest, &args, Some((&memo, &gate))).unwrap();
                assert_eq!(plain, memoized, "round {round}, {i}");
            }
        }
        assert!(memo.cache.weight() <= budget, "{memo:?}");
        assert!(memo.len() > 10 && memo.len() < 500, "{memo:?}");
    }

    /// Arguments nested too deep are an error with the memo and without
    /// it, with the same message; at the limit they are keyed alike.
    #[test]
    fn depth_is_limited_alike_with_and_without_the_memo() {
        let (memo, gate) = (super::KeyMemo::new(1 << 20), super::MemoGate::default());
        let digest = salt_digest(&BASE);
        let nest =
            |depth: u32| (0..depth).fold(serde_json::json!(0), |v, _| serde_json::json!([v]));
        let at_limit = nest(super::canonical::MAX_DEPTH);
        let plain = super::cache_key("ns:p:", &digest, &at_limit, None).unwrap();
        for _ in 0..2 {
            let memoized =
                super::cache_key("ns:p:", &digest, &at_limit, Some((&memo, &gate))).unwrap();
            assert_eq!(plain, memoized);
        }
        let deep = nest(super::canonical::MAX_DEPTH + 1);
        let with = super::cache_key("ns:p:", &digest, &deep, Some((&memo, &gate))).unwrap_err();
        let without = super::cache_key("ns:p:", &digest, &deep, None).unwrap_err();
        assert_eq!(with.to_string(), without.to_string());
        assert!(with.to_string().contains("128 levels"), "{with}");
        assert_eq!(memo.len(), 1, "only the argument at the limit");
    }

    /// New arguments call after call close the gate: only probe windows
    /// look up (and insert) then. Arguments that repeat a few times open it
    /// again. Keys are the same throughout.
    #[test]
    fn the_gate_bypasses_the_memo_while_arguments_are_new() {
        use super::MemoGate;
        let (memo, gate) = (super::KeyMemo::new(1 << 20), MemoGate::default());
        let digest = salt_digest(&BASE);
        let key = |i: u32| {
            let args = serde_json::json!({ "id": i });
            let plain = super::cache_key("ns:p:", &digest, &args, None).unwrap();
            let memoized = super::cache_key("ns:p:", &digest, &args, Some((&memo, &gate))).unwrap();
            assert_eq!(plain, memoized, "{i}");
        };
        let w = MemoGate::WINDOW;
        let mut next = 0;
        let mut fresh = |n: u32| {
            for _ in 0..n {
                key(next);
                next += 1;
            }
        };
        // Open, it counts one lookup in SAMPLE, at random: a window of
        // counted lookups takes about SAMPLE windows of calls.
        fresh(w);
        assert!(!gate.bypassing(), "an open gate samples its lookups");
        let mut calls = w;
        while !gate.bypassing() {
            fresh(1);
            calls += 1;
            assert!(calls < 4 * w * MemoGate::SAMPLE, "the gate never closed");
        }
        let before = memo.len();
        fresh(w * (MemoGate::PROBE_EVERY - 1));
        assert_eq!(
            memo.len(),
            before,
            "bypassed calls neither look up nor insert"
        );
        fresh(w);
        assert_eq!(memo.len(), before + w as usize, "a probe window inserts");
        assert!(
            gate.bypassing(),
            "a probe window without a hit keeps it shut"
        );
        fresh(w * (MemoGate::PROBE_EVERY - 1));
        // Arguments used four times in a row, new ones: three lookups in
        // four hit within the probe window, which opens the gate.
        for i in 0..w / 4 {
            for _ in 0..4 {
                key(1_000_000 + i);
            }
        }
        assert!(
            !gate.bypassing(),
            "a probe window of repeats opens it again"
        );
    }

    #[test]
    fn uncanonical_arguments_are_errors() {
        let digest = salt_digest(&BASE);
        assert!(hash_segment(&digest, &(1u8, f64::NAN)).is_err());
        assert!(hash_segment(&digest, &None::<f64>).is_ok());
    }
}
