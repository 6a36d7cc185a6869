//! Every value type a JSON API returns is cached and read back equal,
//! against a real Redis: each case runs its body once over two calls, the
//! second a hit. Also: the codec each entry was written with, forcing one,
//! and a Python reader (docs/FORMAT.md) decoding a JSON entry written here.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cached_redis::cached;
use redis::Commands;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

fn setup() {
    common::init_once("values");
}

/// The codec id (header byte 1) of the entry under `key`.
fn stored_codec(key: &str) -> u8 {
    let bytes: Vec<u8> = common::raw().get(key).unwrap();
    assert!(bytes.len() > 20, "no entry under {key}");
    assert_eq!(bytes[0], 2, "format version");
    bytes[1]
}

const BINCODE: u8 = 1;
const JSON: u8 = 2;

/// Calls `f` twice and checks: equal values, one body run, one hit.
macro_rules! twice {
    ($runs:ident, $prefix:literal, $call:expr) => {{
        let first = $call;
        let second = $call;
        assert_eq!(first, second, "{}: read back equal", $prefix);
        assert_eq!($runs.load(SeqCst), 1, "{}: the body ran once", $prefix);
        let s = cached_redis::local_stats($prefix).unwrap_or_default();
        assert_eq!(
            (s.hits, s.misses, s.stores, s.errors),
            (1, 1, 1, 0),
            "{}",
            $prefix
        );
        first
    }};
}

#[derive(Debug)]
pub struct EsError;

static ES_RUNS: AtomicUsize = AtomicUsize::new(0);

/// The seed scenario, as Rust users write it.
#[cached(ttl = 300, prefix = "es_search_items")]
async fn get_items_from_es(query_body: &Value) -> Result<Value, EsError> {
    ES_RUNS.fetch_add(1, SeqCst);
    Ok(json!({
        "took": 3,
        "hits": {"total": {"value": 2}, "hits": [
            {"_id": "a", "_score": 1.5, "_source": {"title": query_body["q"], "tags": ["x", null]}},
            {"_id": "b", "_score": null, "_source": {}}
        ]}
    }))
}

#[tokio::test]
async fn serde_json_value() {
    setup();
    let q = json!({"q": "rust"});
    let v = twice!(
        ES_RUNS,
        "es_search_items",
        get_items_from_es(&q).await.unwrap()
    );
    assert_eq!(v["hits"]["hits"][0]["_source"]["title"], "rust");
    assert_eq!(
        stored_codec(&get_items_from_es_cache_key(&q).unwrap()),
        JSON
    );
}

static MAP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_map")]
fn map_of_values(id: u32) -> HashMap<String, Value> {
    MAP_RUNS.fetch_add(1, SeqCst);
    (0..20)
        .map(|i| (format!("k{i}"), json!({"id": id, "i": i, "list": [i, "x"]})))
        .collect()
}

#[test]
fn hashmap_of_values() {
    setup();
    let m = twice!(MAP_RUNS, "vt_map", map_of_values(1));
    assert_eq!(m.len(), 20);
    assert_eq!(stored_codec(&map_of_values_cache_key(1).unwrap()), JSON);
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Audit {
    created_by: String,
    version: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct FlatStruct {
    id: u64,
    #[serde(flatten)]
    audit: Audit,
}

static FLAT_STRUCT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_flat_struct")]
fn flat_struct(id: u64) -> FlatStruct {
    FLAT_STRUCT_RUNS.fetch_add(1, SeqCst);
    FlatStruct {
        id,
        audit: Audit {
            created_by: "ann".into(),
            version: 3,
        },
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct FlatMap {
    id: u64,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

static FLAT_MAP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_flat_map")]
fn flat_map(id: u64) -> FlatMap {
    FLAT_MAP_RUNS.fetch_add(1, SeqCst);
    FlatMap {
        id,
        extra: BTreeMap::from([("color".into(), json!("red")), ("n".into(), json!(7))]),
    }
}

#[test]
fn flatten_of_a_struct_and_of_a_map() {
    setup();
    assert_eq!(
        twice!(FLAT_STRUCT_RUNS, "vt_flat_struct", flat_struct(5)).audit,
        Audit {
            created_by: "ann".into(),
            version: 3
        }
    );
    assert_eq!(
        twice!(FLAT_MAP_RUNS, "vt_flat_map", flat_map(5)).extra["n"],
        7
    );
    assert_eq!(stored_codec(&flat_struct_cache_key(5).unwrap()), JSON);
    assert_eq!(stored_codec(&flat_map_cache_key(5).unwrap()), JSON);
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
#[serde(untagged)]
enum Untagged {
    Count(u64),
    Named { name: String },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
#[serde(tag = "kind")]
enum Internal {
    Circle { r: f64 },
    Square { side: f64 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
#[serde(tag = "t", content = "c")]
enum Adjacent {
    Text(String),
    Pair(i32, i32),
    Empty,
}

static UNTAGGED_RUNS: AtomicUsize = AtomicUsize::new(0);
static INTERNAL_RUNS: AtomicUsize = AtomicUsize::new(0);
static ADJACENT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_untagged")]
async fn untagged(id: u32) -> Vec<Untagged> {
    UNTAGGED_RUNS.fetch_add(1, SeqCst);
    vec![
        Untagged::Count(id.into()),
        Untagged::Named { name: "n".into() },
    ]
}

#[cached(prefix = "vt_internal")]
async fn internal(id: u32) -> Vec<Internal> {
    INTERNAL_RUNS.fetch_add(1, SeqCst);
    vec![
        Internal::Circle { r: f64::from(id) },
        Internal::Square { side: 2.5 },
    ]
}

#[cached(prefix = "vt_adjacent")]
async fn adjacent(id: i32) -> Vec<Adjacent> {
    ADJACENT_RUNS.fetch_add(1, SeqCst);
    vec![
        Adjacent::Text("t".into()),
        Adjacent::Pair(id, -id),
        Adjacent::Empty,
    ]
}

#[tokio::test]
async fn untagged_internally_and_adjacently_tagged_enums() {
    setup();
    twice!(UNTAGGED_RUNS, "vt_untagged", untagged(1).await);
    twice!(INTERNAL_RUNS, "vt_internal", internal(1).await);
    let a = twice!(ADJACENT_RUNS, "vt_adjacent", adjacent(4).await);
    assert_eq!(a[1], Adjacent::Pair(4, -4));
    for key in [
        untagged_cache_key(1).unwrap(),
        internal_cache_key(1).unwrap(),
        adjacent_cache_key(4).unwrap(),
    ] {
        assert_eq!(stored_codec(&key), JSON, "{key}");
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Sparse {
    id: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    nickname: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    tags: Vec<String>,
    score: u32,
}

static SPARSE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_sparse")]
fn sparse(id: u32) -> Sparse {
    SPARSE_RUNS.fetch_add(1, SeqCst);
    Sparse {
        id,
        nickname: None,
        tags: vec![],
        score: 9,
    }
}

#[test]
fn skip_serializing_if() {
    setup();
    let s = twice!(SPARSE_RUNS, "vt_sparse", sparse(3));
    assert_eq!((s.nickname, s.score), (None, 9));
    assert_eq!(stored_codec(&sparse_cache_key(3).unwrap()), JSON);
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Flags {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    archived: bool,
    ids: Vec<u32>,
}

static FLAGS_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_flags")]
fn flags(id: u32) -> Flags {
    FLAGS_RUNS.fetch_add(1, SeqCst);
    Flags {
        archived: false,
        ids: vec![id],
    }
}

/// A skipped field whose absence bincode would fill with the next field's
/// bytes, which here parse (`ids` = `[0]` reads as `archived: true` and
/// `ids: []`): the hit returns the very value, stored as JSON.
#[test]
fn a_skipped_field_reads_back_equal() {
    setup();
    let first = flags(0);
    let hit = flags(0);
    assert_eq!(FLAGS_RUNS.load(SeqCst), 1, "the second call is a hit");
    assert_eq!(hit, first);
    assert_eq!(
        hit,
        Flags {
            archived: false,
            ids: vec![0]
        }
    );
    assert_eq!(stored_codec(&flags_cache_key(0).unwrap()), JSON);
}

static OPT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_opt_value")]
async fn opt_value(id: u32) -> Option<Value> {
    OPT_RUNS.fetch_add(1, SeqCst);
    Some(json!({"id": id, "nested": {"ok": true}}))
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Doc {
    id: u32,
    extra: Option<Value>,
}

static DOC_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Whether bincode reads a `Doc` back depends on the value: `extra: None`
/// does, `Some(..)` does not.
#[cached(prefix = "vt_doc")]
fn doc(id: u32) -> Doc {
    DOC_RUNS.fetch_add(1, SeqCst);
    Doc {
        id,
        extra: (id % 2 == 1).then(|| json!(["x", 1])),
    }
}

#[tokio::test]
async fn option_of_value() {
    setup();
    twice!(OPT_RUNS, "vt_opt_value", opt_value(1).await);
    assert_eq!(stored_codec(&opt_value_cache_key(1).unwrap()), JSON);
    // A value-dependent type: `None` first (stored as bincode), then
    // `Some` (stored as JSON, and JSON from then on); every one a hit.
    for id in 0..4 {
        let before = DOC_RUNS.load(SeqCst);
        assert_eq!(doc(id), doc(id));
        assert_eq!(DOC_RUNS.load(SeqCst), before + 1, "doc({id}) ran once");
    }
    let s = cached_redis::local_stats("vt_doc").unwrap();
    assert_eq!((s.hits, s.misses, s.errors), (4, 4, 0));
    assert_eq!(stored_codec(&doc_cache_key(0).unwrap()), BINCODE);
    assert_eq!(stored_codec(&doc_cache_key(1).unwrap()), JSON);
    assert_eq!(stored_codec(&doc_cache_key(2).unwrap()), JSON);
}

static NULL_RUNS: AtomicUsize = AtomicUsize::new(0);

/// `Some(Value::Null)` inside a value: JSON writes it as it writes `None`.
#[cached(prefix = "vt_some_null")]
fn some_null(id: u32) -> Doc {
    NULL_RUNS.fetch_add(1, SeqCst);
    Doc {
        id,
        extra: Some(Value::Null),
    }
}

#[test]
fn what_json_writes_alike_is_not_cached_as_another_value() {
    setup();
    let expected = Doc {
        id: 1,
        extra: Some(Value::Null),
    };
    assert_eq!(some_null(1), expected);
    assert_eq!(some_null(1), expected, "not read back as `extra: None`");
    assert_eq!(NULL_RUNS.load(SeqCst), 2, "returned, not stored");
    let s = cached_redis::local_stats("vt_some_null").unwrap();
    assert_eq!((s.hits, s.stores, s.errors), (0, 0, 2));
}

static WIDE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_wide")]
fn wide(id: u32) -> (u128, i128) {
    WIDE_RUNS.fetch_add(1, SeqCst);
    (u128::MAX - u128::from(id), i128::MIN + i128::from(id))
}

#[test]
fn u128_and_i128() {
    setup();
    assert_eq!(
        twice!(WIDE_RUNS, "vt_wide", wide(1)),
        (u128::MAX - 1, i128::MIN + 1)
    );
    // bincode reads these back: the fast path stays.
    assert_eq!(stored_codec(&wide_cache_key(1).unwrap()), BINCODE);
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Mixed {
    id: u128,
    payload: Value,
    shapes: Vec<Internal>,
    maybe: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    comment: Option<String>,
    #[serde(flatten)]
    labels: HashMap<String, String>,
    choice: Untagged,
}

static MIXED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_mixed")]
async fn mixed(id: u32) -> Result<Mixed, EsError> {
    MIXED_RUNS.fetch_add(1, SeqCst);
    Ok(Mixed {
        id: u128::from(id) << 100,
        payload: json!({"a": [1, 2.5, "three", null, {"b": false}]}),
        shapes: vec![Internal::Square { side: 1.0 }],
        maybe: None,
        comment: None,
        labels: HashMap::from([("env".into(), "prod".into())]),
        choice: Untagged::Named { name: "z".into() },
    })
}

#[tokio::test]
async fn a_struct_mixing_them() {
    setup();
    let m = twice!(MIXED_RUNS, "vt_mixed", mixed(2).await.unwrap());
    assert_eq!(m.id, 2u128 << 100);
    assert_eq!(m.labels["env"], "prod");
    assert_eq!(stored_codec(&mixed_cache_key(2).unwrap()), JSON);
}

static FORCED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "vt_forced_json", codec = "json")]
fn forced_json(n: u32) -> Vec<u32> {
    FORCED_RUNS.fetch_add(1, SeqCst);
    (0..n).collect()
}

#[cached(prefix = "vt_forced_bincode", codec = "bincode")]
fn forced_bincode(n: u32) -> Vec<u32> {
    (0..n).collect()
}

#[test]
fn a_codec_can_be_forced() {
    setup();
    twice!(FORCED_RUNS, "vt_forced_json", forced_json(3));
    assert_eq!(stored_codec(&forced_json_cache_key(3).unwrap()), JSON);
    assert_eq!(forced_bincode(3), forced_bincode(3));
    assert_eq!(stored_codec(&forced_bincode_cache_key(3).unwrap()), BINCODE);
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Article {
    id: u32,
    title: String,
    body: String,
    meta: Value,
}

#[cached(prefix = "vt_python", codec = "json")]
fn article(id: u32) -> Article {
    Article {
        id,
        title: "Caching in Rust, read from Python".into(),
        // Long enough to be compressed: the reader inflates too.
        body: "lorem ipsum dolor sit amet ".repeat(40),
        meta: json!({"tags": ["rust", "redis"], "score": 0.75, "draft": false, "big": 12345678901234u64}),
    }
}

/// The `python` block of docs/FORMAT.md's JSON section.
fn python_reader() -> String {
    let doc = include_str!("../../docs/FORMAT.md");
    let section = doc
        .split("## The JSON codec, and a reader for it in Python")
        .nth(1)
        .expect("FORMAT.md has the JSON section");
    let block = section
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the JSON section has a python block");
    block.to_owned()
}

/// Runs the FORMAT.md reader on `entry`: its output, or `None` without
/// python3.
fn run_python_reader(entry: &[u8]) -> Option<std::process::Output> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let hex: String = entry.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = match Command::new("python3")
        .arg("-c")
        .arg(python_reader())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: python3 is not installed; the FORMAT.md reader was not run");
            return None;
        }
        Err(e) => panic!("python3: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hex.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

#[test]
fn python_reads_a_json_entry_written_by_rust() {
    setup();
    let value = article(7);
    let key = article_cache_key(7).unwrap();
    let entry: Vec<u8> = common::raw().get(&key).unwrap();
    assert_eq!(
        (entry[0], entry[1], entry[2]),
        (2, JSON, 1),
        "compressed JSON"
    );
    let Some(out) = run_python_reader(&entry) else {
        return;
    };
    assert!(
        out.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read, serde_json::to_value(&value).unwrap());
    assert_eq!(read["meta"]["big"], 12_345_678_901_234u64);

    // The same value as an LZ4 entry: read where Python has the `lz4`
    // package, refused by name where it has not; never misread.
    use cached_redis::__private::fuzz;
    let lz4 = fuzz::encode_entry(
        &value,
        fuzz::Codec::Json,
        fuzz::Compression::Lz4,
        0,
        8 << 20,
    )
    .unwrap();
    assert_eq!((lz4[0], lz4[1], lz4[2]), (2, JSON, 2), "LZ4 JSON");
    let out = run_python_reader(&lz4).expect("python3 ran above");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let read: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(read, serde_json::to_value(&value).unwrap());
    } else {
        assert!(
            stderr.contains("reading it needs the lz4 package"),
            "python reader failed otherwise: {stderr}"
        );
        eprintln!("python has no lz4 package: the reader refused the LZ4 entry, as documented");
    }
}
