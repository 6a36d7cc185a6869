//! The public stats reader against a real Redis: hashes written by hand
//! and by the cache itself read back as typed reports; discovery by `SCAN`
//! in a namespace full of glob metacharacters; broken hashes.

mod common;

use cached_redis::cached;
use cached_redis::report::{self, StatsReader};
use cached_redis::{Config, Error};
use redis::Commands;

/// Keys written by a test, deleted when it ends (even when it fails).
struct Written {
    conn: redis::Connection,
    keys: Vec<String>,
}

impl Written {
    fn new() -> Self {
        Written {
            conn: common::raw(),
            keys: Vec::new(),
        }
    }

    fn hash(&mut self, key: &str, fields: &[(&str, &str)]) {
        let _: () = self.conn.hset_multiple(key, fields).unwrap();
        self.keys.push(key.to_string());
    }

    fn string(&mut self, key: &str, value: &str) {
        let _: () = self.conn.set(key, value).unwrap();
        self.keys.push(key.to_string());
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        for key in &self.keys {
            let _: Result<(), _> = self.conn.del(key);
        }
    }
}

fn reader(namespace: &str) -> StatsReader {
    let config = Config::builder()
        .redis_url(common::redis_url())
        .namespace(namespace)
        .build()
        .unwrap();
    StatsReader::new(&config).unwrap()
}

#[tokio::test]
async fn discovery_matches_the_namespace_literally() {
    // Every glob metacharacter in the namespace; the decoy matches the
    // pattern an unescaped namespace would give (`*` any run, `?` one
    // character, `[c]` the letter c, `\^` a caret).
    let pid = std::process::id();
    let ns = format!("t-report-{pid}-a*b?[c]\\^-x");
    let decoy = format!("t-report-{pid}-aZZbQc^-x");
    let mut w = Written::new();
    w.hash(
        &format!("{ns}:alpha:stats"),
        &[
            ("hits", "300"),
            ("misses", "100"),
            ("miss_us_sum", "40000"),
            ("miss_us_sumsq", "17000000"),
            ("miss_us_le_100", "10"),
            ("miss_us_le_250", "30"),
            ("miss_us_le_500", "40"),
            ("miss_us_le_1000", "20"),
        ],
    );
    w.hash(&format!("{ns}:beta:stats"), &[("hits", "7")]);
    // Not stats hashes of a prefix: an entry, a string, a nested key.
    w.string(&format!("{ns}:alpha:AAAAAAAAAAAAAAAAAAAAAA"), "entry");
    w.string(&format!("{ns}:delta:stats"), "not a hash");
    w.hash(&format!("{ns}:a:b:stats"), &[("hits", "1")]);
    w.hash(&format!("{decoy}:omega:stats"), &[("hits", "1")]);

    let reader = reader(&ns);
    let all = reader.all().await.unwrap();
    let prefixes: Vec<&str> = all.iter().map(|r| r.prefix.as_str()).collect();
    assert_eq!(prefixes, ["alpha", "beta"]);
    let alpha = &all[0];
    assert_eq!((alpha.counters.hits, alpha.counters.misses), (300, 100));
    assert_eq!(alpha.hit_ratio, Some(0.75));
    assert_eq!(alpha.miss_us_mean, Some(400.0));
    assert_eq!(alpha.miss_us_stddev, Some(100.0));
    assert_eq!(alpha.p90.map(|p| p.us), Some(750.0));
    assert_eq!(alpha.histogram().map(|b| b.count).sum::<u64>(), 100);

    // Named prefixes: in the order given, zeros for one without stats.
    let named = reader.prefixes(&["beta", "nothing", "beta"]).await.unwrap();
    let names: Vec<&str> = named.iter().map(|r| r.prefix.as_str()).collect();
    assert_eq!(names, ["beta", "nothing"]);
    assert_eq!(named[1].counters, Default::default());
    assert_eq!(reader.prefix("beta").await.unwrap().counters.hits, 7);
    // A named key that is not a hash is an error, not zeros.
    let err = reader.prefix("delta").await.unwrap_err();
    assert!(matches!(err, Error::StatsField(_)), "{err}");
}

#[tokio::test]
async fn a_broken_field_names_the_key_and_field() {
    let ns = format!("t-report-{}-broken", std::process::id());
    let mut w = Written::new();
    w.hash(
        &format!("{ns}:foo:stats"),
        &[("hits", "2"), ("miss_us_le_100", "abc")],
    );
    let err = reader(&ns).all().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::StatsField(_)), "{text}");
    assert!(text.contains(&format!("{ns}:foo:stats")), "{text}");
    assert!(
        text.contains("miss_us_le_100") && text.contains("\"abc\""),
        "{text}"
    );
}

#[tokio::test]
async fn unreachable_redis_is_a_store_error() {
    let config = Config::builder()
        .redis_url(format!("redis://127.0.0.1:{}/0", common::free_port()))
        .build()
        .unwrap();
    let err = StatsReader::new(&config).unwrap().all().await.unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err}");
    // The embedded store has no hashes to read.
    assert!(StatsReader::new(&Config::builder().build().unwrap()).is_err());
}

#[cached(prefix = "report_e2e")]
async fn doubled(x: u64) -> u64 {
    x * 2
}

#[tokio::test]
async fn the_cache_s_own_counts_read_back() {
    common::init_once("stats_report");
    for x in [1, 2, 1, 1] {
        doubled(x).await;
    }
    cached_redis::flush_stats().await.unwrap();
    let r = report::read_prefix("report_e2e").await.unwrap();
    assert_eq!((r.counters.hits, r.counters.misses), (2, 2));
    assert_eq!(r.hit_ratio, Some(0.5));
    assert_eq!(r.histogram().map(|b| b.count).sum::<u64>(), 2);
    assert_eq!(r.counters.stores, 2);
    let all = report::read_all().await.unwrap();
    assert!(all.iter().any(|r| r.prefix == "report_e2e"), "{all:?}");
    // The same numbers through a reader of the same namespace.
    let config = Config::builder()
        .redis_url(common::redis_url())
        .namespace(common::namespace("stats_report"))
        .build()
        .unwrap();
    let again = StatsReader::new(&config)
        .unwrap()
        .prefix("report_e2e")
        .await
        .unwrap();
    assert_eq!(again, r);
}
