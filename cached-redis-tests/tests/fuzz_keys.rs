//! Property tests of the canonical key: two calls share a key exactly when
//! their arguments are equal. Arguments are generated as a random type
//! (options, sequences, maps, tuples over every scalar kind, nested) and
//! two values of it; equal means equal as values, with maps compared as
//! sets (their iteration order never matters) and floats compared bit for
//! bit (`0.0` and `-0.0` are different arguments).
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 by default;
//! `scripts/fuzz-long.sh` runs a million).

use cached_redis::cached;
use proptest::prelude::*;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeTuple, Serializer};

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A type of argument.
#[derive(Debug, Clone)]
enum Ty {
    Unit,
    Bool,
    I64,
    U64,
    I128,
    U128,
    F64,
    Str,
    Opt(Box<Ty>),
    Seq(Box<Ty>),
    Map(Box<Ty>),
    Tuple(Vec<Ty>),
}

/// A value of a `Ty`, serialized through serde's data model as the Rust
/// value of that type would be (`Opt` as `Option`, `Map` as a map with
/// string keys, written in the order of its entries rotated by `rotate`).
#[derive(Debug, Clone)]
enum Val {
    Unit,
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Str(String),
    Opt(Option<Box<Val>>),
    Seq(Vec<Val>),
    Map(Vec<(String, Val)>, usize),
    Tuple(Vec<Val>),
}

impl Serialize for Val {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Unit => s.serialize_unit(),
            Val::Bool(v) => s.serialize_bool(*v),
            Val::I64(v) => s.serialize_i64(*v),
            Val::U64(v) => s.serialize_u64(*v),
            Val::I128(v) => s.serialize_i128(*v),
            Val::U128(v) => s.serialize_u128(*v),
            Val::F64(v) => s.serialize_f64(*v),
            Val::Str(v) => s.serialize_str(v),
            Val::Opt(None) => s.serialize_none(),
            Val::Opt(Some(v)) => s.serialize_some(v),
            Val::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Val::Map(entries, rotate) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                let n = entries.len().max(1);
                for i in 0..entries.len() {
                    let (k, v) = &entries[(i + rotate) % n];
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Val::Tuple(items) => {
                let mut tup = s.serialize_tuple(items.len())?;
                for item in items {
                    tup.serialize_element(item)?;
                }
                tup.end()
            }
        }
    }
}

/// Equality of arguments: maps as sets of entries, floats by their bits.
fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Unit, Val::Unit) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::I64(x), Val::I64(y)) => x == y,
        (Val::U64(x), Val::U64(y)) => x == y,
        (Val::I128(x), Val::I128(y)) => x == y,
        (Val::U128(x), Val::U128(y)) => x == y,
        (Val::F64(x), Val::F64(y)) => x.to_bits() == y.to_bits(),
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Opt(None), Val::Opt(None)) => true,
        (Val::Opt(Some(x)), Val::Opt(Some(y))) => same(x, y),
        (Val::Seq(x), Val::Seq(y)) | (Val::Tuple(x), Val::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Val::Map(x, _), Val::Map(y, _)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| k == k2 && same(v, v2)))
        }
        _ => false,
    }
}

fn ty() -> impl Strategy<Value = Ty> {
    let leaf = prop_oneof![
        Just(Ty::Unit),
        Just(Ty::Bool),
        Just(Ty::I64),
        Just(Ty::U64),
        Just(Ty::I128),
        Just(Ty::U128),
        Just(Ty::F64),
        Just(Ty::Str),
    ];
    leaf.prop_recursive(4, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| Ty::Opt(Box::new(t))),
            inner.clone().prop_map(|t| Ty::Seq(Box::new(t))),
            inner.clone().prop_map(|t| Ty::Map(Box::new(t))),
            prop::collection::vec(inner, 1..4).prop_map(Ty::Tuple),
        ]
    })
}

/// Small domains mixed with the extremes, so that equal values come up
/// often enough to test both directions.
fn val(ty: &Ty) -> BoxedStrategy<Val> {
    const FLOATS: &[f64] = &[
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        1e15,
        1e16,
        18446744073709551615.0,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        f64::EPSILON,
        5e-324,
    ];
    match ty {
        Ty::Unit => Just(Val::Unit).boxed(),
        Ty::Bool => any::<bool>().prop_map(Val::Bool).boxed(),
        Ty::I64 => prop_oneof![-2i64..2, Just(i64::MIN), Just(i64::MAX), any::<i64>()]
            .prop_map(Val::I64)
            .boxed(),
        Ty::U64 => prop_oneof![0u64..3, Just(u64::MAX), any::<u64>()]
            .prop_map(Val::U64)
            .boxed(),
        Ty::I128 => prop_oneof![
            -2i128..2,
            Just(i128::MIN),
            Just(i128::MAX),
            Just(i128::from(u64::MAX)),
            Just(i128::from(u64::MAX) + 1),
            Just(i128::from(i64::MIN) - 1),
            any::<i128>(),
        ]
        .prop_map(Val::I128)
        .boxed(),
        Ty::U128 => prop_oneof![
            0u128..3,
            Just(u128::MAX),
            Just(u128::from(u64::MAX)),
            Just(u128::from(u64::MAX) + 1),
            any::<u128>(),
        ]
        .prop_map(Val::U128)
        .boxed(),
        Ty::F64 => prop_oneof![
            prop::sample::select(FLOATS),
            prop::num::f64::POSITIVE
                | prop::num::f64::NEGATIVE
                | prop::num::f64::NORMAL
                | prop::num::f64::SUBNORMAL
                | prop::num::f64::ZERO,
        ]
        .prop_map(Val::F64)
        .boxed(),
        Ty::Str => prop_oneof![
            // Escapes, quotes, NUL, non-ASCII, and what looks like JSON.
            "[a\"\\\\\u{0}\u{1f}é😀]{0,3}",
            prop::sample::select(&["null", "1", "1.0", "true", "[]", "{}", "\"a\""][..])
                .prop_map(str::to_owned),
            ".{0,24}",
            // Long strings, the same but for one character.
            (200usize..3000, any::<char>()).prop_map(|(n, c)| {
                let mut s = "k".repeat(n);
                s.push(c);
                s
            }),
        ]
        .prop_map(Val::Str)
        .boxed(),
        Ty::Opt(t) => prop_oneof![
            1 => Just(Val::Opt(None)),
            3 => val(t).prop_map(|v| Val::Opt(Some(Box::new(v)))),
        ]
        .boxed(),
        Ty::Seq(t) => prop::collection::vec(val(t), 0..3)
            .prop_map(Val::Seq)
            .boxed(),
        Ty::Map(t) => (
            prop::collection::btree_map("[ab\"é]{0,2}", val(t), 0..3),
            any::<usize>(),
        )
            .prop_map(|(m, rotate)| Val::Map(m.into_iter().collect(), rotate))
            .boxed(),
        Ty::Tuple(ts) => ts
            .iter()
            .map(val)
            .collect::<Vec<_>>()
            .prop_map(Val::Tuple)
            .boxed(),
    }
}

/// The same value with every map written in another order.
fn rotated(v: &Val, by: usize) -> Val {
    match v {
        Val::Opt(Some(x)) => Val::Opt(Some(Box::new(rotated(x, by)))),
        Val::Seq(xs) => Val::Seq(xs.iter().map(|x| rotated(x, by)).collect()),
        Val::Tuple(xs) => Val::Tuple(xs.iter().map(|x| rotated(x, by)).collect()),
        Val::Map(es, r) => Val::Map(
            es.iter()
                .map(|(k, x)| (k.clone(), rotated(x, by)))
                .collect(),
            r.wrapping_add(by),
        ),
        other => other.clone(),
    }
}

#[cached(prefix = "fuzz_keys")]
fn keyed(arg: &Val) -> u8 {
    let _ = arg;
    0
}

#[cached(prefix = "fuzz_keys_json")]
fn keyed_json(arg: &serde_json::Value) -> u8 {
    let _ = arg;
    0
}

#[cached(prefix = "fuzz_keys_memo")]
fn keyed_memo(arg: &Val) -> u8 {
    let _ = arg;
    0
}

/// The deep-argument test's own function, so that other tests' new
/// arguments do not close its memo gate.
#[cached(prefix = "fuzz_keys_deep_json")]
fn keyed_deep_json(arg: &serde_json::Value) -> u8 {
    let _ = arg;
    0
}

#[cached(prefix = "fuzz_keys_memo_json")]
fn keyed_memo_json(arg: &serde_json::Value) -> u8 {
    let _ = arg;
    0
}

fn key(v: &Val) -> String {
    keyed_cache_key(v).unwrap_or_else(|e| panic!("{v:?} has no key: {e}"))
}

/// A cache configured like the default one but without the key memo
/// (`key_memo_max_bytes(0)`): every key written as canonical JSON.
fn unmemoized() -> &'static cached_redis::Cache {
    static CACHE: std::sync::OnceLock<cached_redis::Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        let config = cached_redis::Config::builder()
            .embedded()
            .key_memo_max_bytes(0)
            .build()
            .expect("config");
        cached_redis::Cache::new(config).expect("cache")
    })
}

/// The hash segment of a key (the namespaces of the two caches may differ).
fn hash_of(key: &str) -> &str {
    key.rsplit(':').next().unwrap_or(key)
}

/// Equality of JSON values with numbers compared by kind and bits.
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => {
            (
                x.as_u64(),
                x.as_i64(),
                x.as_f64().filter(|_| x.is_f64()).map(f64::to_bits),
            ) == (
                y.as_u64(),
                y.as_i64(),
                y.as_f64().filter(|_| y.is_f64()).map(f64::to_bits),
            )
        }
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|v2| same_json(v, v2)))
        }
        _ => a == b,
    }
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as J;
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        prop_oneof![0u64..3, Just(u64::MAX), any::<u64>()].prop_map(J::from),
        prop_oneof![-2i64..0, Just(i64::MIN)].prop_map(J::from),
        prop::sample::select(&[0.0, -0.0, 1.0, -1.0, 18446744073709551615.0, 0.5][..])
            .prop_map(J::from),
        "[a1\"é]{0,2}".prop_map(J::String),
    ];
    leaf.prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(J::Array),
            prop::collection::btree_map("[ab]{0,2}", inner, 0..3)
                .prop_map(|m| J::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn equal_arguments_and_only_they_share_a_key(
        (a, b) in ty().prop_flat_map(|t| (val(&t), val(&t)))
    ) {
        let (ka, kb) = (key(&a), key(&b));
        prop_assert_eq!(ka == kb, same(&a, &b), "{:?} / {:?}: {} / {}", a, b, ka, kb);
    }

    #[test]
    fn map_order_never_changes_the_key(
        (v, by) in ty().prop_flat_map(|t| (val(&t), 1usize..8))
    ) {
        prop_assert_eq!(key(&v), key(&rotated(&v, by)));
    }

    /// The default cache keys through its memo: the first call with an
    /// argument (recorded, replayed) and the next ones (found in the shared
    /// memo, then in the thread's own front of recent inputs) get the key
    /// a cache without the memo writes as canonical JSON. Each argument is
    /// keyed four times, by functions of this test alone, so that three
    /// lookups in four hit and the memo stays in use.
    #[test]
    fn the_key_memo_never_changes_a_key(
        (v, j) in (ty().prop_flat_map(|t| val(&t)), json())
    ) {
        let plain = unmemoized().in_scope(|| keyed_memo_cache_key(&v)).unwrap();
        for call in 0..4 {
            if call < 3 {
                cached_redis::__private::forget_thread_front();
            }
            let memoized = keyed_memo_cache_key(&v).unwrap();
            prop_assert_eq!(hash_of(&plain), hash_of(&memoized), "{:?}", v);
        }
        let plain = unmemoized().in_scope(|| keyed_memo_json_cache_key(&j)).unwrap();
        for call in 0..4 {
            if call < 3 {
                cached_redis::__private::forget_thread_front();
            }
            let memoized = keyed_memo_json_cache_key(&j).unwrap();
            prop_assert_eq!(hash_of(&plain), hash_of(&memoized), "{}", j);
        }
    }

    #[test]
    fn json_arguments_share_a_key_only_when_equal((a, b) in (json(), json())) {
        let ka = keyed_json_cache_key(&a).unwrap();
        let kb = keyed_json_cache_key(&b).unwrap();
        prop_assert_eq!(ka == kb, same_json(&a, &b), "{} / {}", a, b);
    }
}

/// Arguments nested more than 128 levels deep are not keyed, with the key
/// memo or without it: the call runs, uncached.
#[test]
fn arguments_nested_too_deep_run_uncached() {
    let nest =
        |depth: usize| (0..depth).fold(serde_json::json!("leaf"), |v, _| serde_json::json!([v]));
    // The argument tuple is one level: 128 in all.
    let at_limit = nest(127);
    let memoized = keyed_deep_json_cache_key(&at_limit).unwrap();
    let plain = unmemoized()
        .in_scope(|| keyed_deep_json_cache_key(&at_limit))
        .unwrap();
    assert_eq!(hash_of(&memoized), hash_of(&plain));
    let deep = nest(128);
    let err = keyed_deep_json_cache_key(&deep).unwrap_err();
    assert!(err.to_string().contains("128 levels"), "{err}");
    let err = unmemoized()
        .in_scope(|| keyed_deep_json_cache_key(&deep))
        .unwrap_err();
    assert!(err.to_string().contains("128 levels"), "{err}");
    assert_eq!(keyed_deep_json(&deep), 0, "the function still runs");
}

#[test]
fn non_finite_floats_are_refused_anywhere_in_the_arguments() {
    for f in [f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for v in [
            Val::F64(f),
            Val::Opt(Some(Box::new(Val::F64(f)))),
            Val::Seq(vec![Val::F64(1.0), Val::F64(f)]),
            Val::Map(vec![("a".into(), Val::F64(f))], 0),
            Val::Tuple(vec![Val::Unit, Val::F64(f)]),
        ] {
            assert!(keyed_cache_key(&v).is_err(), "{v:?} was keyed");
        }
    }
}

/// The cases the properties draw from, spelled out: each pair differs.
#[test]
fn named_lookalikes_have_distinct_keys() {
    use serde_json::json;
    let some = |v: Val| Val::Opt(Some(Box::new(v)));
    let typed: &[(&str, Val, Val)] = &[
        ("0.0 / -0.0", Val::F64(0.0), Val::F64(-0.0)),
        ("None / Some(None)", Val::Opt(None), some(Val::Opt(None))),
        (
            "Some(None) / Some(Some(None))",
            some(Val::Opt(None)),
            some(some(Val::Opt(None))),
        ),
        ("None / Some(())", Val::Opt(None), some(Val::Unit)),
        (
            "u64::MAX / u64::MAX + 1 (i128)",
            Val::I128(u64::MAX.into()),
            Val::I128(i128::from(u64::MAX) + 1),
        ),
        (
            "i128::MIN / i128::MAX",
            Val::I128(i128::MIN),
            Val::I128(i128::MAX),
        ),
        (
            "long strings one char apart",
            Val::Str("x".repeat(5000) + "a"),
            Val::Str("x".repeat(5000) + "b"),
        ),
        (
            "é / e\u{301}",
            Val::Str("é".into()),
            Val::Str("e\u{301}".into()),
        ),
    ];
    for (what, a, b) in typed {
        assert_ne!(key(a), key(b), "{what}");
    }
    let dynamic = [
        json!(null),
        json!(0),
        json!(false),
        json!(""),
        json!("null"),
        json!(1),
        json!(1.0),
        json!("1"),
        json!(u64::MAX),
        json!(u64::MAX as f64),
        json!(-0.0),
        json!(0.0),
        json!([]),
        json!({}),
        json!([null]),
        json!({"a": null}),
        json!({"a": 1, "b": 2}),
        json!({"a": 2, "b": 1}),
    ];
    for (i, a) in dynamic.iter().enumerate() {
        for b in &dynamic[i + 1..] {
            assert_ne!(
                keyed_json_cache_key(a).unwrap(),
                keyed_json_cache_key(b).unwrap(),
                "{a} / {b}"
            );
        }
    }
    // Maps in any order: one key.
    let mut fwd = serde_json::Map::new();
    let mut rev = serde_json::Map::new();
    for k in ["x", "a", "m"] {
        fwd.insert(k.into(), json!(k));
    }
    for k in ["m", "a", "x"] {
        rev.insert(k.into(), json!(k));
    }
    assert_eq!(
        keyed_json_cache_key(&serde_json::Value::Object(fwd)).unwrap(),
        keyed_json_cache_key(&serde_json::Value::Object(rev)).unwrap()
    );
    let map = Val::Map(
        vec![("b".into(), Val::U64(1)), ("a".into(), Val::U64(2))],
        0,
    );
    assert_eq!(key(&map), key(&rotated(&map, 1)));
}
