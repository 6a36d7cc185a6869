//! A key belongs to one function (its module path, name and return type
//! are in the salt, whatever its `prefix`), the companions agree with the
//! calls, and `invalidate_args` works for methods and for every
//! instantiation of a generic function, one round trip each.
//!
//! This file has a Redis server of its own, so that the commands counted by
//! `INFO commandstats` are only its own.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cached_redis::cached;
use redis::Commands;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

/// This file's own Redis, started once.
static SERVER_URL: OnceLock<String> = OnceLock::new();

/// Initializes against this file's Redis; the guard keeps the tests of
/// this file one at a time (one of them counts commands).
fn setup() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    SERVER_URL.get_or_init(|| {
        let server = common::RedisServer::start();
        let url = server.url();
        // Lives as long as the test process; its watchdog stops it after.
        std::mem::forget(server);
        cached_redis::init(
            cached_redis::Config::builder()
                .redis_url(url.clone())
                .namespace("ident")
                .build()
                .unwrap(),
        )
        .unwrap();
        url
    });
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn raw() -> redis::Connection {
    let url = SERVER_URL.get().expect("setup first");
    redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap()
}

static COUNT_RUNS: AtomicUsize = AtomicUsize::new(0);
static TOTAL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "orders")]
fn count_of(id: u32) -> u32 {
    COUNT_RUNS.fetch_add(1, SeqCst);
    id * 2
}

#[cached(prefix = "orders")]
fn total_of(id: u32) -> u64 {
    TOTAL_RUNS.fetch_add(1, SeqCst);
    u64::from(id) * 1000
}

/// Regression: with one prefix and equal arguments, `total_of` used to read
/// the `6` that `count_of` stored (both layouts are one varint).
#[test]
fn functions_sharing_a_prefix_never_share_an_entry() {
    let _g = setup();
    assert_eq!(count_of(3), 6);
    assert_eq!(total_of(3), 3000);
    assert_eq!(total_of(3), 3000);
    assert_eq!(count_of(3), 6);
    assert_eq!((COUNT_RUNS.load(SeqCst), TOTAL_RUNS.load(SeqCst)), (1, 1));
    let (a, b) = (
        count_of_cache_key(3).unwrap(),
        total_of_cache_key(3).unwrap(),
    );
    assert_ne!(a, b);
    assert!(a.starts_with("ident:orders:") && b.starts_with("ident:orders:"));
    // invalidate_args removes both, as both are named by the prefix.
    assert!(cached_redis::invalidate_args("orders", &json!([3]))
        .await_blocking()
        .unwrap());
    let mut raw = raw();
    assert!(!raw.exists::<_, bool>(&a).unwrap());
    assert!(!raw.exists::<_, bool>(&b).unwrap());
}

/// Two `impl`s in one module with a same-named method: `Self` tells them
/// apart.
pub struct Users;
pub struct Admins;

static USER_RUNS: AtomicUsize = AtomicUsize::new(0);

impl Users {
    #[cached(prefix = "people")]
    fn name(&self, id: u32) -> String {
        USER_RUNS.fetch_add(1, SeqCst);
        format!("user {id}")
    }
}

impl Admins {
    #[cached(prefix = "people")]
    fn name(&self, id: u32) -> String {
        format!("admin {id}")
    }
}

#[test]
fn methods_of_non_generic_impls_invalidate_by_arguments() {
    let _g = setup();
    assert_eq!(Users.name(1), "user 1");
    assert_eq!(Admins.name(1), "admin 1");
    assert_eq!(Users.name(1), "user 1");
    assert_eq!(Admins.name(1), "admin 1");
    assert_eq!(USER_RUNS.load(SeqCst), 1);
    let user_key = Users::name_cache_key(1).unwrap();
    let admin_key = Admins::name_cache_key(1).unwrap();
    assert_ne!(user_key, admin_key);
    let mut raw = raw();
    assert!(raw.exists::<_, bool>(&user_key).unwrap());
    // As a database event names it: the prefix and the key arguments.
    assert!(cached_redis::invalidate_args("people", &json!([1]))
        .await_blocking()
        .unwrap());
    assert!(!raw.exists::<_, bool>(&user_key).unwrap());
    assert!(!raw.exists::<_, bool>(&admin_key).unwrap());
    // The companion agrees with the call.
    assert_eq!(Users.name(1), "user 1");
    assert!(raw.exists::<_, bool>(&user_key).unwrap());
    assert!(Users::name_invalidate(1).unwrap());
    assert!(!raw.exists::<_, bool>(&user_key).unwrap());
}

static GENERIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "generic_lookup")]
fn lookup<T: Serialize + Default + DeserializeOwned>(id: u32) -> T {
    GENERIC_RUNS.fetch_add(1, SeqCst);
    let _ = id;
    T::default()
}

/// A generic type's method: one key per `Self`.
pub struct Repo<T>(std::marker::PhantomData<T>);

impl<T: Serialize + DeserializeOwned + Default> Repo<T> {
    #[cached(prefix = "repo_load")]
    fn load(&self, id: u32) -> T {
        let _ = id;
        T::default()
    }
}

#[test]
fn generic_functions_invalidate_every_instantiation_seen() {
    let _g = setup();
    let _: u8 = lookup(4);
    let _: String = lookup(4);
    let _: Vec<u64> = lookup(4);
    let _: u8 = lookup(4);
    assert_eq!(GENERIC_RUNS.load(SeqCst), 3);
    let keys = [
        lookup_cache_key::<u8>(4).unwrap(),
        lookup_cache_key::<String>(4).unwrap(),
        lookup_cache_key::<Vec<u64>>(4).unwrap(),
    ];
    let mut raw = raw();
    for key in &keys {
        assert!(raw.exists::<_, bool>(key).unwrap(), "{key}");
    }
    // One round trip per instantiation, no more.
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut raw)
        .unwrap();
    assert!(cached_redis::invalidate_args("generic_lookup", &json!([4]))
        .await_blocking()
        .unwrap());
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut raw)
        .unwrap();
    let unlinks = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_unlink:calls="))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("0");
    assert_eq!(unlinks, "3", "{info}");
    for key in &keys {
        assert!(!raw.exists::<_, bool>(key).unwrap(), "{key}");
    }

    let (a, b) = (
        Repo::<u8>(std::marker::PhantomData),
        Repo::<String>(std::marker::PhantomData),
    );
    assert_eq!(a.load(1), 0);
    assert_eq!(b.load(1), "");
    let keys = [
        Repo::<u8>::load_cache_key(1).unwrap(),
        Repo::<String>::load_cache_key(1).unwrap(),
    ];
    assert_ne!(keys[0], keys[1]);
    assert!(cached_redis::invalidate_args("repo_load", &json!([1]))
        .await_blocking()
        .unwrap());
    for key in &keys {
        assert!(!raw.exists::<_, bool>(key).unwrap(), "{key}");
    }
}

/// Runs a future to completion on a fresh runtime (the tests here are
/// sync, the invalidation API async).
trait AwaitBlocking: std::future::Future + Sized {
    fn await_blocking(self) -> Self::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(self)
    }
}
impl<F: std::future::Future> AwaitBlocking for F {}

fn handler_a(x: u32) -> u32 {
    #[cached]
    fn helper(x: u32) -> u32 {
        x + 1
    }
    helper(x)
}

fn handler_b(x: u32) -> u32 {
    #[cached]
    fn helper(x: u32) -> u32 {
        x * 100
    }
    helper(x)
}

/// `module_path!()` does not name an enclosing function: two nested
/// functions of one name in one module once shared their entries (the
/// second answered the first's value) and their stats.
#[test]
fn nested_functions_of_one_name_are_two_functions() {
    let _guard = setup();
    assert_eq!(handler_a(5), 6);
    assert_eq!(handler_b(5), 500, "not the other helper's entry");
    assert_eq!((handler_a(5), handler_b(5)), (6, 500), "hits");
    let entries = entry_keys("ident:function_identity.handler_*.helper:*");
    assert_eq!(
        entries.len(),
        2,
        "one entry each, under its own prefix: {entries:?}"
    );
    for handler in ["handler_a", "handler_b"] {
        let stats = cached_redis::local_stats(&format!("function_identity.{handler}.helper"))
            .unwrap_or_else(|| panic!("{handler}: stats of its own"));
        assert_eq!((stats.hits, stats.misses), (1, 1), "{handler}");
    }
}

static SIZED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "sized")]
fn sized<const N: usize, const LOUD: bool>(b: [u8; 4]) -> usize {
    SIZED_RUNS.fetch_add(1, SeqCst);
    b.len() * N + usize::from(LOUD)
}

/// A const parameter's value is part of the key, as a type parameter's
/// name is.
#[test]
fn const_parameters_are_in_the_key() {
    let _guard = setup();
    let b = [1, 2, 3, 4];
    assert_eq!(sized::<2, false>(b), 8);
    assert_eq!(sized::<3, false>(b), 12);
    assert_eq!(sized::<3, true>(b), 13);
    assert_eq!(sized::<3, true>(b), 13);
    assert_eq!(SIZED_RUNS.load(SeqCst), 3, "one entry each, then a hit");
    let keys = [
        sized_cache_key::<2, false>(b).unwrap(),
        sized_cache_key::<3, false>(b).unwrap(),
        sized_cache_key::<3, true>(b).unwrap(),
    ];
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
}

/// A generic trait whose default method is cached.
trait Named<K> {
    fn label(&self) -> String;

    #[cached(prefix = "trait_default")]
    fn describe(&self, id: u32) -> String {
        format!("{}:{id}", self.label())
    }
}

struct Both;

impl Named<u8> for Both {
    fn label(&self) -> String {
        "as-u8".into()
    }
}

impl Named<u16> for Both {
    fn label(&self) -> String {
        "as-u16".into()
    }
}

/// A trait's default method implemented twice by one type, for two of
/// the trait's parameters, is two functions: one `Self`, two entries.
#[test]
fn a_generic_traits_default_method_keys_the_traits_parameters() {
    let _guard = setup();
    assert_eq!(<Both as Named<u8>>::describe(&Both, 7), "as-u8:7");
    assert_eq!(<Both as Named<u16>>::describe(&Both, 7), "as-u16:7");
    assert_eq!(<Both as Named<u8>>::describe(&Both, 7), "as-u8:7", "a hit");
    assert_ne!(
        <Both as Named<u8>>::describe_cache_key(7).unwrap(),
        <Both as Named<u16>>::describe_cache_key(7).unwrap()
    );
}

/// A parameter named like its function: the `_refresh` companion calls the
/// function, not the parameter.
#[cached(prefix = "named_like")]
fn user(user: u64) -> String {
    format!("user {user}")
}

#[test]
fn a_parameter_may_be_named_like_its_function() {
    let _guard = setup();
    assert_eq!(user(7), "user 7");
    assert_eq!(user_refresh(7), "user 7");
}

#[derive(serde::Serialize)]
struct Search {
    page: u32,
    #[serde(flatten)]
    filters: std::collections::BTreeMap<String, String>,
}

static SEARCH_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "flat_search")]
fn search(q: &Search) -> String {
    SEARCH_RUNS.fetch_add(1, SeqCst);
    format!("page={}", q.page)
}

/// Two arguments whose objects repeat a key (a flattened map holding a
/// field's name) once shared a key, the last value of the repeated key
/// winning: page 2 answered page 1's entry. Now they cannot be keyed, so
/// the calls run uncached and answer right.
#[test]
fn an_object_with_a_repeated_key_is_not_keyed() {
    let _guard = setup();
    let filters = std::collections::BTreeMap::from([("page".to_owned(), "x".to_owned())]);
    let (one, two) = (
        Search {
            page: 1,
            filters: filters.clone(),
        },
        Search { page: 2, filters },
    );
    assert!(search_cache_key(&one).is_err());
    for _ in 0..2 {
        assert_eq!(search(&one), "page=1");
        assert_eq!(search(&two), "page=2");
    }
    assert_eq!(SEARCH_RUNS.load(SeqCst), 4, "every call ran");
    let plain = Search {
        page: 3,
        filters: std::collections::BTreeMap::from([("lang".to_owned(), "en".to_owned())]),
    };
    assert_eq!(
        (search(&plain), search(&plain)),
        ("page=3".into(), "page=3".into())
    );
    assert_eq!(
        SEARCH_RUNS.load(SeqCst),
        5,
        "a plain flattened map is cached"
    );
}

struct Finder;

impl Finder {
    /// An associated function with neither a receiver nor `Self` in its
    /// signature: `where Self: Sized` tells the attribute it is in an
    /// `impl` (the documented way; without it, it does not compile).
    #[cached(prefix = "repo_find")]
    fn find(id: i64) -> String
    where
        Self: Sized,
    {
        format!("repo {id}")
    }
}

#[test]
fn an_associated_function_without_self_compiles_with_where_self_sized() {
    let _guard = setup();
    assert_eq!(Finder::find(4), "repo 4");
    assert_eq!(Finder::find_refresh(4), "repo 4");
    assert!(Finder::find_cache_key(4).is_ok());
}

trait Strategy {
    fn apply(&self, x: u32) -> u32;
}

struct Double;
struct Triple;

impl Strategy for Double {
    fn apply(&self, x: u32) -> u32 {
        x * 2
    }
}

impl Strategy for Triple {
    fn apply(&self, x: u32) -> u32 {
        x * 3
    }
}

#[cached(skip = "strategy", prefix = "priced")]
fn price<S: Strategy>(strategy: &S, x: u32) -> u32 {
    strategy.apply(x)
}

/// A type parameter that only a skipped argument uses stays in the key (its
/// type may decide the result), and the companions that take the key
/// arguments alone name it with a turbofish.
#[test]
fn a_type_parameter_of_a_skipped_argument_stays_in_the_key() {
    let _guard = setup();
    assert_eq!((price(&Double, 10), price(&Triple, 10)), (20, 30));
    assert_eq!((price(&Double, 10), price(&Triple, 10)), (20, 30), "hits");
    let (double, triple) = (
        price_cache_key::<Double>(10).unwrap(),
        price_cache_key::<Triple>(10).unwrap(),
    );
    assert_ne!(double, triple);
    assert!(price_invalidate::<Triple>(10).unwrap());
    assert!(raw().exists::<_, bool>(&double).unwrap());
    assert!(!raw().exists::<_, bool>(&triple).unwrap());
}

async fn async_handler(x: u32) -> u32 {
    #[cached]
    async fn helper(x: u32) -> u32 {
        x + 7
    }
    helper(x).await
}

/// A function nested in an `async fn` lives in a `{{closure}}` of it: its
/// default prefix names the enclosing function and holds no brace (braces
/// in a key are a Redis Cluster hash tag).
#[test]
fn a_function_nested_in_an_async_fn_has_a_plain_prefix() {
    let _guard = setup();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(async_handler(1)), 8);
    let keys = entry_keys("ident:function_identity.async_handler.*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("ident:function_identity.async_handler.closure.helper:"),
        "{keys:?}"
    );
}

/// The entry keys matching `pattern`: not the stats hashes, which a flush
/// may have written meanwhile.
fn entry_keys(pattern: &str) -> Vec<String> {
    let keys: Vec<String> = raw().keys(pattern).unwrap();
    keys.into_iter()
        .filter(|k| !k.ends_with(":stats"))
        .collect()
}

fn two_closures(x: u32) -> (u32, u32) {
    let first = |x: u32| {
        #[cached]
        fn helper(x: u32) -> u32 {
            x + 1
        }
        helper(x)
    };
    let second = |x: u32| {
        #[cached]
        fn helper(x: u32) -> u32 {
            x + 2
        }
        helper(x)
    };
    (first(x), second(x))
}

trait Service {
    fn call(&self, x: u32) -> u32;
}

struct Plus;
struct Times;

impl Service for Plus {
    fn call(&self, x: u32) -> u32 {
        #[cached]
        fn helper(x: u32) -> u32 {
            x + 10
        }
        helper(x)
    }
}

impl Service for Times {
    fn call(&self, x: u32) -> u32 {
        #[cached]
        fn helper(x: u32) -> u32 {
            x * 10
        }
        helper(x)
    }
}

/// Paths that agree (two closures of one function) or that do not start
/// with the module (trait methods) still tell nested functions apart.
#[test]
fn nested_functions_in_closures_and_trait_methods_are_apart() {
    let _guard = setup();
    assert_eq!(two_closures(5), (6, 7));
    assert_eq!(two_closures(5), (6, 7), "hits");
    assert_eq!((Plus.call(5), Times.call(5)), (15, 50));
    assert_eq!((Plus.call(5), Times.call(5)), (15, 50), "hits");
}

macro_rules! add_helper {
    ($n:expr) => {{
        #[cached]
        fn helper(x: u32) -> u32 {
            x + $n
        }
        helper(1)
    }};
}

macro_rules! both_helpers {
    () => {
        (add_helper!(2), add_helper!(3))
    };
}

fn from_one_macro() -> (u32, u32) {
    both_helpers!()
}

/// One macro writing two helpers of one name in one place (same path, line
/// and column): their bodies tell them apart.
#[test]
fn helpers_one_macro_writes_in_one_place_are_apart() {
    let _guard = setup();
    assert_eq!(from_one_macro(), (3, 4));
    assert_eq!(from_one_macro(), (3, 4), "hits");
}

/// Two blocks of one function each declaring an `S` with a cached method:
/// both types are `function_identity::two_local_types::S`, so their place
/// keeps them apart.
fn two_local_types() -> (u32, u32) {
    let first = {
        struct S;
        impl S {
            #[cached]
            fn get(&self, x: u32) -> u32 {
                x + 100
            }
        }
        S.get(1)
    };
    let second = {
        struct S;
        impl S {
            #[cached]
            fn get(&self, x: u32) -> u32 {
                x + 200
            }
        }
        S.get(1)
    };
    (first, second)
}

#[test]
fn methods_of_local_types_of_one_name_are_apart() {
    let _guard = setup();
    assert_eq!(two_local_types(), (101, 201));
    assert_eq!(two_local_types(), (101, 201), "hits");
    // Both keep the module's prefix.
    let keys = entry_keys("ident:function_identity.get:*");
    assert_eq!(keys.len(), 2, "{keys:?}");
}

static APPLY_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(skip = "f", prefix = "applied")]
fn apply<F: Fn(u32) -> u32>(f: F, x: u32) -> u32 {
    APPLY_RUNS.fetch_add(1, SeqCst);
    f(x)
}

/// Every closure of a function has one type name, so a closure type
/// parameter cannot keep two closures' entries apart: such calls run
/// uncached (they did share one entry).
#[test]
fn a_closure_type_parameter_runs_uncached() {
    let _guard = setup();
    let before = APPLY_RUNS.load(SeqCst);
    assert_eq!((apply(|x| x + 1, 1), apply(|x| x * 10, 1)), (2, 10));
    assert_eq!((apply(|x| x + 1, 1), apply(|x| x * 10, 1)), (2, 10));
    assert_eq!(APPLY_RUNS.load(SeqCst) - before, 4, "every call ran");
    assert!(entry_keys("ident:applied:*").is_empty());
    fn plus_one(x: u32) -> u32 {
        x + 1
    }
    // A named function's item type is its own: cached.
    assert_eq!((apply(plus_one, 1), apply(plus_one, 1)), (2, 2));
    assert_eq!(APPLY_RUNS.load(SeqCst) - before, 5);
    // A companion reached through generic code says why there is no key.
    fn invalidate_with<F: Fn(u32) -> u32>(_f: &F, x: u32) -> Result<bool, cached_redis::Error> {
        apply_invalidate::<F>(x)
    }
    let err = invalidate_with(&|x| x + 1, 1).unwrap_err().to_string();
    assert!(err.contains("no entry to invalidate"), "{err}");
}

#[cached(prefix = "ratios")]
fn ratio_label(ratio: f32, weights: std::collections::BTreeMap<String, Vec<f32>>) -> String {
    format!("{ratio} {weights:?}")
}

/// An `f32` argument is named by its decimal, as a database event carries
/// a `real` column (`0.1`), at every magnitude (where an f32 and an f64
/// print in exponent form differ too), and wherever it sits.
#[test]
fn invalidate_args_reaches_f32_arguments_as_json_writes_them() {
    let _guard = setup();
    let mut raw = raw();
    for x in [0.1f32, 1e14, 3e15, 1e-6, 1.234_567_9e8, -2.5e-7] {
        let weights: std::collections::BTreeMap<String, Vec<f32>> =
            [("a".to_owned(), vec![x, 0.3])].into();
        ratio_label(x, weights.clone());
        let key = ratio_label_cache_key(x, weights.clone()).unwrap();
        assert!(raw.exists::<_, bool>(&key).unwrap());
        // As an event sends it: JSON text (`1e14`, `0.1`), read by a JSON
        // parser, which holds an f64.
        let text = serde_json::to_string(&x).unwrap();
        let event: serde_json::Value =
            serde_json::from_str(&format!(r#"[{text}, {{"a": [{text}, 0.3]}}]"#)).unwrap();
        assert!(
            cached_redis::invalidate_args("ratios", &event)
                .await_blocking()
                .unwrap(),
            "{x}: {event}"
        );
        assert!(!raw.exists::<_, bool>(&key).unwrap(), "{x}");
    }
}
