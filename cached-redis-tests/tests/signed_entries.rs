//! Signed entries against a real Redis: entries carry the MAC documented in
//! docs/FORMAT.md; a tampered, unsigned or foreign-signed entry is a miss
//! counted in `errors`, never decoded, and replaced; an entry signed with a
//! key accepted for rotation is a hit.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cached_redis::cached;
use redis::Commands;

const NEW_SECRET: &[u8] = b"the key this process writes with";
const OLD_SECRET: &[u8] = b"the key it is rotating away from";
const MAC_LEN: usize = 32;

fn setup() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        cached_redis::init(
            cached_redis::Config::builder()
                .redis_url(common::redis_url())
                .namespace(common::namespace("signed_entries"))
                .signing_key(NEW_SECRET)
                .signing_keys_accepted([OLD_SECRET])
                .build()
                .unwrap(),
        )
        .unwrap();
    });
}

/// The MAC as docs/FORMAT.md specifies it, computed without the library.
fn mac(secret: &[u8], redis_key: &str, entry: &[u8]) -> [u8; 32] {
    let key = blake3::derive_key("cached-redis entry MAC v1", secret);
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(&(redis_key.len() as u64).to_le_bytes());
    h.update(redis_key.as_bytes());
    h.update(entry);
    *h.finalize().as_bytes()
}

fn signed(secret: &[u8], redis_key: &str, entry: &[u8]) -> Vec<u8> {
    let mut bytes = entry.to_vec();
    bytes.extend_from_slice(&mac(secret, redis_key, entry));
    bytes
}

fn stored(key: &str) -> Vec<u8> {
    let bytes: Option<Vec<u8>> = common::raw().get(key).unwrap();
    bytes.expect("an entry is stored")
}

fn put(key: &str, bytes: &[u8]) {
    let _: () = common::raw().set(key, bytes).unwrap();
}

/// The entry (header and payload) inside `bytes`, checking its MAC.
fn verified_entry(key: &str, bytes: &[u8]) -> Vec<u8> {
    let (entry, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    assert_eq!(tag, mac(NEW_SECRET, key, entry), "signed with the new key");
    entry.to_vec()
}

fn errors(prefix: &str) -> u64 {
    cached_redis::local_stats(prefix).map_or(0, |s| s.errors)
}

static ROUND_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "signed_round")]
async fn round(x: u32) -> String {
    ROUND_RUNS.fetch_add(1, SeqCst);
    format!("value {x}")
}

#[tokio::test]
async fn signed_round_trip() {
    setup();
    assert_eq!(round(1).await, "value 1");
    assert_eq!(round(1).await, "value 1");
    assert_eq!(ROUND_RUNS.load(SeqCst), 1, "the signed entry was read back");
    let key = round_cache_key(1).unwrap();
    let entry = verified_entry(&key, &stored(&key));
    // Header (20 bytes) and an uncompressed bincode string: length, bytes.
    assert_eq!(&entry[20..], b"\x07value 1");
    assert_eq!(errors("signed_round"), 0);
}

static TAMPER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "signed_tamper")]
async fn tamper(x: u32) -> String {
    TAMPER_RUNS.fetch_add(1, SeqCst);
    format!("genuine {x}")
}

#[tokio::test]
async fn a_tampered_entry_is_a_miss_an_error_and_replaced() {
    setup();
    assert_eq!(tamper(2).await, "genuine 2");
    let key = tamper_cache_key(2).unwrap();
    let good = stored(&key);
    // Same length, different value: decodable, but not signed by us.
    let mut forged = good.clone();
    let at = forged.len() - MAC_LEN - 1;
    forged[at] = b'X';
    put(&key, &forged);

    assert_eq!(tamper(2).await, "genuine 2", "the forged value never shows");
    assert_eq!(TAMPER_RUNS.load(SeqCst), 2, "a miss: the body ran");
    assert_eq!(errors("signed_tamper"), 1);
    let replaced = stored(&key);
    assert_ne!(replaced, forged);
    verified_entry(&key, &replaced);
    assert_eq!(tamper(2).await, "genuine 2");
    assert_eq!(TAMPER_RUNS.load(SeqCst), 2, "the replacement is a hit");
}

static UNSIGNED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "signed_unsigned")]
async fn unsigned(x: u32) -> String {
    UNSIGNED_RUNS.fetch_add(1, SeqCst);
    format!("computed {x}")
}

#[tokio::test]
async fn an_unsigned_or_foreign_entry_is_a_miss() {
    setup();
    assert_eq!(unsigned(3).await, "computed 3");
    let key = unsigned_cache_key(3).unwrap();
    let entry = verified_entry(&key, &stored(&key));

    // A well-formed entry without a MAC (as a process without the key
    // writes it), holding another value.
    let mut planted = entry.clone();
    planted.truncate(20);
    planted.extend_from_slice(b"\x07planted");
    planted[16..20].copy_from_slice(&8u32.to_le_bytes());
    put(&key, &planted);
    assert_eq!(unsigned(3).await, "computed 3");
    assert_eq!(UNSIGNED_RUNS.load(SeqCst), 2);
    assert_eq!(errors("signed_unsigned"), 1);
    verified_entry(&key, &stored(&key));

    // The same, signed with a key this process does not accept.
    put(
        &key,
        &signed(b"someone else's key, long enough", &key, &planted),
    );
    assert_eq!(unsigned(3).await, "computed 3");
    assert_eq!(UNSIGNED_RUNS.load(SeqCst), 3);
    assert_eq!(errors("signed_unsigned"), 2);

    // A valid entry moved from another key does not verify either.
    let other = unsigned_cache_key(4).unwrap();
    put(&other, &stored(&key));
    assert_eq!(unsigned(4).await, "computed 4");
    assert_eq!(UNSIGNED_RUNS.load(SeqCst), 4);
    assert_eq!(errors("signed_unsigned"), 3);
}

static ROTATE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "signed_rotate")]
async fn rotate(x: u32) -> String {
    ROTATE_RUNS.fetch_add(1, SeqCst);
    format!("fresh {x}")
}

#[tokio::test]
async fn an_entry_signed_with_the_old_key_is_accepted_during_rotation() {
    setup();
    assert_eq!(rotate(5).await, "fresh 5");
    let key = rotate_cache_key(5).unwrap();
    let entry = verified_entry(&key, &stored(&key));
    // What a process still on the old key writes: another value, to tell
    // them apart.
    let mut old_value = entry.clone();
    old_value.truncate(20);
    old_value.extend_from_slice(b"\x08by old 5");
    old_value[16..20].copy_from_slice(&9u32.to_le_bytes());
    put(&key, &signed(OLD_SECRET, &key, &old_value));

    assert_eq!(rotate(5).await, "by old 5", "accepted, served as a hit");
    assert_eq!(ROTATE_RUNS.load(SeqCst), 1);
    assert_eq!(errors("signed_rotate"), 0);
}

static REPLAY_RUNS: AtomicUsize = AtomicUsize::new(0);
static REVOKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cached(ttl = 1, prefix = "signed_replay")]
async fn role(user: u32) -> String {
    REPLAY_RUNS.fetch_add(1, SeqCst);
    let role = if REVOKED.load(SeqCst) {
        "revoked"
    } else {
        "admin"
    };
    format!("{role} {user}")
}

/// Bytes saved while an entry was valid and put back after it expired,
/// with an expiry of the writer's choosing, carry a valid MAC: their
/// signed creation time gives them away.
#[tokio::test]
async fn a_signed_entry_put_back_after_its_end_is_a_miss() {
    setup();
    assert_eq!(role(7).await, "admin 7");
    let key = role_cache_key(7).unwrap();
    let mut entry = verified_entry(&key, &stored(&key));
    // The saved entry as it is two minutes later (ttl 1 s): its creation
    // time (header bytes 4..12, ms, little-endian) two minutes back.
    let created = u64::from_le_bytes(entry[4..12].try_into().unwrap());
    entry[4..12].copy_from_slice(&(created - 120_000).to_le_bytes());
    REVOKED.store(true, SeqCst);
    put(&key, &signed(NEW_SECRET, &key, &entry));
    assert_eq!(
        role(7).await,
        "revoked 7",
        "the replayed entry is not served"
    );
    assert_eq!(REPLAY_RUNS.load(SeqCst), 2);
    assert_eq!(errors("signed_replay"), 1);
    // Its replacement is served.
    assert_eq!(role(7).await, "revoked 7");
    assert_eq!(REPLAY_RUNS.load(SeqCst), 2);
}

static NONE_REPLAY_RUNS: AtomicUsize = AtomicUsize::new(0);
static CREATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cached(ttl = 600, cache_none = 1, prefix = "signed_replay_none")]
async fn account(id: u32) -> Option<String> {
    NONE_REPLAY_RUNS.fetch_add(1, SeqCst);
    CREATED.load(SeqCst).then(|| format!("account {id}"))
}

/// A cached `None` is stored for its `cache_none`, not for the function's
/// `ttl`: put back later than that (two minutes, with `cache_none = 1` and
/// `ttl = 600`), its signed creation time gives it away too.
#[tokio::test]
async fn a_signed_none_put_back_after_its_cache_none_is_a_miss() {
    setup();
    assert_eq!(account(3).await, None);
    let key = account_cache_key(3).unwrap();
    let mut entry = verified_entry(&key, &stored(&key));
    let created = u64::from_le_bytes(entry[4..12].try_into().unwrap());
    entry[4..12].copy_from_slice(&(created - 120_000).to_le_bytes());
    CREATED.store(true, SeqCst);
    put(&key, &signed(NEW_SECRET, &key, &entry));
    assert_eq!(
        account(3).await.as_deref(),
        Some("account 3"),
        "the replayed None is not served"
    );
    assert_eq!(NONE_REPLAY_RUNS.load(SeqCst), 2);
    assert_eq!(errors("signed_replay_none"), 1);
}
