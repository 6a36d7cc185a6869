//! Micro benchmarks of cached-redis, through its public paths only, on the
//! embedded store (no Redis: the process configures itself with
//! `Config::builder().embedded()`).
//!
//! - `key/*`: a `#[cached]` function's `name_cache_key(...)` companion
//!   called again and again with the same argument (a small struct, a 1 KB
//!   JSON query, a 100-entry `HashMap`): the key memo's fingerprint and
//!   lookup, base64 and the key's head. `key_first_seen/*`: a new argument
//!   each call, one number changed in place: after a window of misses the
//!   function's gate keys such calls without the memo but for one window of
//!   calls in eight (there: fingerprint, its replay as canonical JSON, BLAKE3, a memo
//!   insert). `key_unmemoized/*`: the same functions in a cache without
//!   the memo (canonical JSON and BLAKE3 every call). `key_floor/*` is the
//!   unmemoized work done the plain way (`serde_json::to_vec`, one BLAKE3,
//!   one base64, no sorting).
//! - `hit/*`: a hit on the embedded store (lookup, `Arc` clone, header
//!   check, inflate, bincode decode) for values of 200 B, 2 KB, 64 KB and
//!   1 MB of JSON, and a one-byte value (`tiny`: the fixed cost of the path).
//! - `refresh/*`: `name_refresh(...)`, which runs the body (a clone of the
//!   fixture), encodes, checks that the value reads back from its encoding
//!   (the automatic codec's verification), compresses and stores;
//!   `clone/*` is the body alone.
//!   The codec is crate-private, so the load binary derives
//!   `decode ≈ hit(v) − hit(tiny)` and
//!   `encode ≈ refresh(v) − clone(v) − refresh(tiny)` from these.
//! - `codec_2kb/*`: the 2 KB search response with each codec forced
//!   (`codec = "bincode"`, `codec = "json"`), a hit (decode) and a
//!   `name_refresh` (encode, compress, store) each, beside `hit/2KB` and
//!   `refresh/2KB`, the automatic choice (bincode, every store verified by
//!   decoding it once more); `hit_lz4`/`store_lz4` are the automatic
//!   choice in a cache configured with `compression(Compression::Lz4)`.
//! - `entry_2kb/*`: the codec alone (no store, no verification) on the 2 KB
//!   response: encode (bincode + compress) and decode (decompress +
//!   bincode), zlib and LZ4.
//! - `signing/*`: decoding the 2 KB entry with and without checking the MAC
//!   trailer of signed entries (`signing_key`) first, and encoding it with
//!   and without appending the MAC.
//! - `embedded_async/search_2kb`: the async `#[cached]` hit the load test
//!   measures as scenario (e), here single-threaded and without a scheduler
//!   in between.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use cached_redis::cached;
use cached_redis_bench::fixtures::{self, Fixtures, RowSet, SearchResponse, UserDoc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use serde::Serialize;

fn fx() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(fixtures::load)
}

/// The small struct of the key benchmark.
#[derive(Debug, Clone, Serialize)]
struct UserKey {
    tenant: u32,
    user_id: u64,
    locale: String,
    include_deleted: bool,
}

#[cached(prefix = "bench_key_user")]
fn user_by_key(key: &UserKey) -> Option<UserDoc> {
    let _ = key;
    None
}

#[cached(prefix = "bench_key_query")]
fn search_by_query(query: &serde_json::Value) -> Option<SearchResponse> {
    let _ = query;
    None
}

#[cached(prefix = "bench_key_map")]
fn by_map(attributes: &HashMap<String, u64>) -> Option<u64> {
    let _ = attributes;
    None
}

#[cached(prefix = "bench_key_user", cache = "nomemo")]
fn user_by_key_nomemo(key: &UserKey) -> Option<UserDoc> {
    let _ = key;
    None
}

#[cached(prefix = "bench_key_query", cache = "nomemo")]
fn search_by_query_nomemo(query: &serde_json::Value) -> Option<SearchResponse> {
    let _ = query;
    None
}

#[cached(prefix = "bench_key_map", cache = "nomemo")]
fn by_map_nomemo(attributes: &HashMap<String, u64>) -> Option<u64> {
    let _ = attributes;
    None
}

#[cached(ttl = 3600, prefix = "bench_v_tiny")]
fn v_tiny(k: u32) -> u8 {
    let _ = k;
    7
}

#[cached(ttl = 3600, prefix = "bench_v_user")]
fn v_user(k: u32) -> UserDoc {
    let _ = k;
    fx().user.clone()
}

#[cached(ttl = 3600, prefix = "bench_v_search")]
fn v_search(k: u32) -> SearchResponse {
    let _ = k;
    fx().search.clone()
}

#[cached(ttl = 3600, prefix = "bench_v_search_bincode", codec = "bincode")]
fn v_search_bincode(k: u32) -> SearchResponse {
    let _ = k;
    fx().search.clone()
}

#[cached(ttl = 3600, prefix = "bench_v_search_json", codec = "json")]
fn v_search_json(k: u32) -> SearchResponse {
    let _ = k;
    fx().search.clone()
}

/// The automatic codec in the cache whose entries are LZ4-compressed.
#[cached(ttl = 3600, prefix = "bench_v_search_lz4", cache = "lz4")]
fn v_search_lz4(k: u32) -> SearchResponse {
    let _ = k;
    fx().search.clone()
}

#[cached(ttl = 3600, prefix = "bench_v_rows64k")]
fn v_rows64k(k: u32) -> RowSet {
    let _ = k;
    fx().rows_64k.clone()
}

#[cached(ttl = 3600, prefix = "bench_v_rows1m")]
fn v_rows1m(k: u32) -> RowSet {
    let _ = k;
    fx().rows_1m.clone()
}

#[cached(ttl = 3600, prefix = "bench_es_search")]
async fn search(query: &serde_json::Value) -> Result<SearchResponse, String> {
    let _ = query;
    Ok(fx().search.clone())
}

fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let config = cached_redis::Config::builder()
            .embedded()
            .build()
            .expect("config");
        cached_redis::init(config).expect("init once");
        let lz4 = cached_redis::Config::builder()
            .embedded()
            .compression(cached_redis::Compression::Lz4)
            .build()
            .expect("config");
        cached_redis::init_named("lz4", lz4).expect("init once");
        let nomemo = cached_redis::Config::builder()
            .embedded()
            .key_memo_max_bytes(0)
            .build()
            .expect("config");
        cached_redis::init_named("nomemo", nomemo).expect("init once");
    });
}

fn floor_key<T: Serialize + ?Sized>(args: &T) -> String {
    let json = serde_json::to_vec(args).expect("json");
    let mut h = blake3::Hasher::new();
    h.update(&[7u8; 32]);
    h.update(&json);
    let hash =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize().as_bytes()[..16]);
    let mut key = String::with_capacity(40);
    key.push_str("cached:bench:");
    key.push_str(&hash);
    key
}

/// The same key through the maintained path: `serde_json::to_value` (its
/// `BTreeMap` sorts object keys at every depth) then `to_writer`, BLAKE3,
/// base64: what the hand-written canonical serializer must beat to stay.
fn serde_value_key<T: Serialize + ?Sized>(args: &T) -> String {
    let value = serde_json::to_value(args).expect("json value");
    let mut json = Vec::with_capacity(256);
    serde_json::to_writer(&mut json, &value).expect("json");
    let mut h = blake3::Hasher::new();
    h.update(&[7u8; 32]);
    h.update(&json);
    let mut key = String::with_capacity(40);
    key.push_str("cached:bench:");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_string(&h.finalize().as_bytes()[..16], &mut key);
    key
}

fn keys(c: &mut Criterion) {
    init();
    let user = UserKey {
        tenant: 7,
        user_id: 1_234_567,
        locale: "en-GB".to_owned(),
        include_deleted: false,
    };
    let query = fx().query.clone();
    let map: HashMap<String, u64> = (0..100u64)
        .map(|i| (format!("attribute_{i:03}"), i * 7919))
        .collect();
    let mut g = c.benchmark_group("key");
    g.bench_function("small_struct", |b| {
        b.iter(|| user_by_key_cache_key(black_box(&user)).unwrap())
    });
    g.bench_function("json_1kb", |b| {
        b.iter(|| search_by_query_cache_key(black_box(&query)).unwrap())
    });
    g.bench_function("hashmap_100", |b| {
        b.iter(|| by_map_cache_key(black_box(&map)).unwrap())
    });
    g.finish();
    // A new argument every call: one number of it changes in place (timed
    // too, a few ns), so the rest stays as warm as in `key/*`.
    let mut g = c.benchmark_group("key_first_seen");
    let mut n = 0u64;
    let mut fresh_user = user.clone();
    g.bench_function("small_struct", |b| {
        b.iter(|| {
            n += 1;
            fresh_user.user_id = n;
            user_by_key_cache_key(black_box(&fresh_user)).unwrap()
        })
    });
    let mut fresh_query = query.clone();
    g.bench_function("json_1kb", |b| {
        b.iter(|| {
            n += 1;
            fresh_query["from"] = n.into();
            search_by_query_cache_key(black_box(&fresh_query)).unwrap()
        })
    });
    let mut fresh_map = map.clone();
    g.bench_function("hashmap_100", |b| {
        b.iter(|| {
            n += 1;
            *fresh_map.get_mut("attribute_000").expect("present") = n;
            by_map_cache_key(black_box(&fresh_map)).unwrap()
        })
    });
    g.finish();
    let mut g = c.benchmark_group("key_unmemoized");
    g.bench_function("small_struct", |b| {
        b.iter(|| user_by_key_nomemo_cache_key(black_box(&user)).unwrap())
    });
    g.bench_function("json_1kb", |b| {
        b.iter(|| search_by_query_nomemo_cache_key(black_box(&query)).unwrap())
    });
    g.bench_function("hashmap_100", |b| {
        b.iter(|| by_map_nomemo_cache_key(black_box(&map)).unwrap())
    });
    g.finish();
    let mut g = c.benchmark_group("key_floor");
    g.bench_function("small_struct", |b| {
        b.iter(|| floor_key(&(black_box(&user),)))
    });
    g.bench_function("json_1kb", |b| b.iter(|| floor_key(&(black_box(&query),))));
    g.bench_function("hashmap_100", |b| b.iter(|| floor_key(&(black_box(&map),))));
    g.finish();
    let mut g = c.benchmark_group("key_serde_value");
    g.bench_function("small_struct", |b| {
        b.iter(|| serde_value_key(&(black_box(&user),)))
    });
    g.bench_function("json_1kb", |b| {
        b.iter(|| serde_value_key(&(black_box(&query),)))
    });
    g.bench_function("hashmap_100", |b| {
        b.iter(|| serde_value_key(&(black_box(&map),)))
    });
    g.finish();
}

/// The 2 KB value with a `local` level (on the embedded store).
#[cached(ttl = 3600, prefix = "micro_local", local = 100)]
fn v_search_local(k: u32) -> SearchResponse {
    let _ = k;
    fx().search.clone()
}

/// The load test's scenario (f) without the scheduler: the async
/// `search` with a `local` level, keyed by the 1 KB query.
#[cached(ttl = 3600, prefix = "micro_search_local", local = 100)]
async fn search_local(query: &serde_json::Value) -> Result<SearchResponse, String> {
    let _ = query;
    Ok(fx().search.clone())
}

fn local_hit(c: &mut Criterion) {
    init();
    v_search_local(1);
    let mut g = c.benchmark_group("local_hit");
    g.bench_function("2KB", |b| b.iter(|| v_search_local(black_box(1))));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let query = fx().query.clone();
    rt.block_on(search_local(&query)).expect("warm");
    g.bench_function("search_2kb", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(search_local(black_box(&query)).await.expect("hit"));
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// Sizes as named in the tables, with the functions that cache them: name,
/// stats prefix, hit, refresh, body alone.
type Case = (&'static str, &'static str, fn(u32), fn(u32), fn());

/// A cached function of the codec table: name, stats prefix, hit, refresh.
type CodecCase = (&'static str, &'static str, fn(u32), fn(u32));

fn cases() -> [Case; 5] {
    [
        (
            "tiny",
            "bench_v_tiny",
            |k| {
                black_box(v_tiny(k));
            },
            |k| {
                black_box(v_tiny_refresh(k));
            },
            || {},
        ),
        (
            "200B",
            "bench_v_user",
            |k| {
                black_box(v_user(k));
            },
            |k| {
                black_box(v_user_refresh(k));
            },
            || {
                black_box(fx().user.clone());
            },
        ),
        (
            "2KB",
            "bench_v_search",
            |k| {
                black_box(v_search(k));
            },
            |k| {
                black_box(v_search_refresh(k));
            },
            || {
                black_box(fx().search.clone());
            },
        ),
        (
            "64KB",
            "bench_v_rows64k",
            |k| {
                black_box(v_rows64k(k));
            },
            |k| {
                black_box(v_rows64k_refresh(k));
            },
            || {
                black_box(fx().rows_64k.clone());
            },
        ),
        (
            "1MB",
            "bench_v_rows1m",
            |k| {
                black_box(v_rows1m(k));
            },
            |k| {
                black_box(v_rows1m_refresh(k));
            },
            || {
                black_box(fx().rows_1m.clone());
            },
        ),
    ]
}

fn codec(c: &mut Criterion) {
    init();
    for (name, prefix, hit, refresh, _) in cases() {
        // The entry the hits read.
        hit(1);
        refresh(1);
        let misses = || cached_redis::local_stats(prefix).expect("stats").misses;
        let before = misses();
        let mut g = c.benchmark_group("hit");
        if name == "1MB" {
            g.sampling_mode(SamplingMode::Flat).sample_size(20);
        }
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| hit(black_box(1)))
        });
        g.finish();
        assert_eq!(misses(), before, "{name}: a hit benchmark missed");
        let mut g = c.benchmark_group("refresh");
        if name == "1MB" || name == "64KB" {
            g.sampling_mode(SamplingMode::Flat).sample_size(20);
        }
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| refresh(black_box(1)))
        });
        g.finish();
    }
    let mut g = c.benchmark_group("clone");
    for (name, _, _, _, clone) in cases().into_iter().skip(1) {
        if name == "1MB" {
            g.sampling_mode(SamplingMode::Flat).sample_size(20);
        }
        g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(clone));
    }
    g.finish();
}

/// The 2 KB value with each codec forced: hits and stores side by side.
fn codecs(c: &mut Criterion) {
    init();
    let cases: [CodecCase; 3] = [
        (
            "bincode",
            "bench_v_search_bincode",
            |k| {
                black_box(v_search_bincode(k));
            },
            |k| {
                black_box(v_search_bincode_refresh(k));
            },
        ),
        (
            "json",
            "bench_v_search_json",
            |k| {
                black_box(v_search_json(k));
            },
            |k| {
                black_box(v_search_json_refresh(k));
            },
        ),
        (
            "lz4",
            "bench_v_search_lz4",
            |k| {
                black_box(v_search_lz4(k));
            },
            |k| {
                black_box(v_search_lz4_refresh(k));
            },
        ),
    ];
    let mut g = c.benchmark_group("codec_2kb");
    for (name, prefix, hit, refresh) in cases {
        hit(1);
        refresh(1);
        let misses = || cached_redis::local_stats(prefix).expect("stats").misses;
        let before = misses();
        g.bench_function(format!("hit_{name}"), |b| b.iter(|| hit(black_box(1))));
        assert_eq!(misses(), before, "{name}: a hit benchmark missed");
        g.bench_function(format!("store_{name}"), |b| {
            b.iter(|| refresh(black_box(1)))
        });
    }
    g.finish();
}

/// The codec alone on the 2 KB response, with each compression: what a
/// store's encoding and a hit's decoding cost without the cache around them.
fn entry_codec(c: &mut Criterion) {
    use cached_redis::__private::entry;
    use cached_redis::Compression;
    let mut g = c.benchmark_group("entry_2kb");
    type Encode = fn(&SearchResponse) -> Option<Vec<u8>>;
    let cases: [(&str, Encode); 3] = [
        ("zlib", |v| entry::encode_with(v, Compression::Zlib)),
        // The level before 1 became the default: smaller entries, more CPU.
        ("zlib3", |v| entry::encode_zlib_at(v, 3)),
        ("lz4", |v| entry::encode_with(v, Compression::Lz4)),
    ];
    for (name, encode) in cases {
        let bytes = encode(&fx().search).expect("encodes");
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| encode(black_box(&fx().search)).expect("encodes"))
        });
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| entry::decode::<SearchResponse>(black_box(&bytes)).expect("decodes"))
        });
    }
    g.finish();
}

fn embedded_async(c: &mut Criterion) {
    init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let query = fx().query.clone();
    rt.block_on(search(&query)).expect("warm");
    let mut g = c.benchmark_group("embedded_async");
    g.bench_function("search_2kb", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(search(black_box(&query)).await.expect("hit"));
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// What the MAC of signed entries (`signing_key`) adds to the 2 KB entry:
/// `signing/decode_2kb` decodes the stored entry of the 2 KB fixture,
/// `signing/verify_decode_2kb` checks its MAC trailer first (one keyed
/// BLAKE3 pass over key, header and payload), as a hit does;
/// `signing/encode_2kb` encodes the value into an entry,
/// `signing/encode_seal_2kb` also appends the MAC, as a store does.
fn signing(c: &mut Criterion) {
    use cached_redis::__private::entry::{self, Signer};
    let key = "cached:bench_v_search:AAAAAAAAAAAAAAAAAAAAAA";
    let plain = entry::encode(&fx().search).expect("encodes");
    let signer = Signer::new(b"a benchmark signing key, 32 byte");
    let mut signed = plain.clone();
    signer.seal(key, &mut signed);
    let mut g = c.benchmark_group("signing");
    g.bench_function("decode_2kb", |b| {
        b.iter(|| entry::decode::<SearchResponse>(black_box(&plain)).expect("decodes"))
    });
    g.bench_function("verify_decode_2kb", |b| {
        b.iter(|| {
            let bytes = signer.open(key, black_box(&signed)).expect("verifies");
            entry::decode::<SearchResponse>(bytes).expect("decodes")
        })
    });
    g.bench_function("encode_2kb", |b| {
        b.iter(|| entry::encode(black_box(&fx().search)).expect("encodes"))
    });
    g.bench_function("encode_seal_2kb", |b| {
        b.iter(|| {
            let mut bytes = entry::encode(black_box(&fx().search)).expect("encodes");
            signer.seal(key, &mut bytes);
            bytes
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = keys, codec, codecs, entry_codec, embedded_async, local_hit, signing
}
criterion_main!(benches);
