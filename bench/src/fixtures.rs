//! The values the benchmarks cache, and the deterministic generator that
//! wrote `bench/fixtures/*.json` (run `cargo run --release --bin
//! gen_fixtures` in `bench/` to write them again; the result is byte for
//! byte the same, which `tests::committed_fixtures_are_reproducible`
//! checks).
//!
//! | file | type | compact JSON |
//! | --- | --- | --- |
//! | `user_200b.json` | [`UserDoc`] | ~200 B: a user document |
//! | `search_2kb.json` | [`SearchResponse`] | ~2 KB: a search-engine response page (the load test's value) |
//! | `rows_64kb.json` | [`RowSet`] | ~64 KB: a list of rows |
//! | `rows_1mb.json` | [`RowSet`] | ~1 MB: a long list of rows |
//! | `query_1kb.json` | `serde_json::Value` | ~1 KB: a search query (the load test's key argument) |
//!
//! Text is drawn from a fixed vocabulary by a seeded xorshift generator, so
//! it compresses like real prose-and-identifier data rather than like
//! random bytes (incompressible) or one repeated word (trivially so).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A user record, ~200 bytes of JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDoc {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub locale: String,
    pub created_at: String,
    pub roles: Vec<String>,
    pub verified: bool,
    pub karma: i64,
}

/// One page of a search engine's answer, ~2 KB of JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    pub took_ms: u32,
    pub timed_out: bool,
    pub total: u64,
    pub max_score: f64,
    pub hits: Vec<SearchHit>,
    pub facets: Vec<Facet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub id: String,
    pub score: f64,
    pub title: String,
    pub url: String,
    pub snippet: String,
    pub tags: Vec<String>,
    pub published_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facet {
    pub field: String,
    pub buckets: Vec<FacetBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FacetBucket {
    pub key: String,
    pub count: u64,
}

/// Rows of a table, as a database query would return them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowSet {
    pub table: String,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: u64,
    pub sku: String,
    pub name: String,
    pub category: String,
    pub price_cents: u64,
    pub quantity: u32,
    pub warehouse: String,
    pub updated_at: String,
    pub active: bool,
}

/// Every fixture, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixtures {
    pub user: UserDoc,
    pub search: SearchResponse,
    pub rows_64k: RowSet,
    pub rows_1m: RowSet,
    pub query: Value,
}

/// File names, in the order of [`Fixtures`]' fields.
pub const FILES: [&str; 5] = [
    "user_200b.json",
    "search_2kb.json",
    "rows_64kb.json",
    "rows_1mb.json",
    "query_1kb.json",
];

/// `bench/fixtures`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn read<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = dir().join(name);
    let text = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (write the fixtures with `cargo run --release --bin gen_fixtures` in bench/)",
            path.display()
        )
    });
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads the committed fixture files.
pub fn load() -> Fixtures {
    Fixtures {
        user: read(FILES[0]),
        search: read(FILES[1]),
        rows_64k: read(FILES[2]),
        rows_1m: read(FILES[3]),
        query: read(FILES[4]),
    }
}

/// The fixtures as the compact JSON files hold them, in [`FILES`] order.
pub fn to_files(f: &Fixtures) -> [(&'static str, Vec<u8>); 5] {
    let j = |v: &dyn erased::Json| v.json();
    [
        (FILES[0], j(&f.user)),
        (FILES[1], j(&f.search)),
        (FILES[2], j(&f.rows_64k)),
        (FILES[3], j(&f.rows_1m)),
        (FILES[4], j(&f.query)),
    ]
}

mod erased {
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            let mut v = serde_json::to_vec(self).expect("fixtures serialize");
            v.push(b'\n');
            v
        }
    }
}

/// xorshift64*: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
    fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| self.pick(WORDS))
            .collect::<Vec<_>>()
            .join(" ")
    }
    fn date(&mut self) -> String {
        format!(
            "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            18 + self.below(8),
            1 + self.below(12),
            1 + self.below(28),
            self.below(24),
            self.below(60),
            self.below(60)
        )
    }
    fn ident(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
    fn score(&mut self) -> f64 {
        (self.below(30_000) as f64) / 1000.0
    }
}

const WORDS: &[&str] = &[
    "cache", "redis", "latency", "search", "engine", "query", "index", "shard", "replica",
    "cluster", "memory", "thread", "async", "runtime", "future", "stream", "buffer", "socket",
    "server", "client", "request", "response", "header", "payload", "format", "codec", "compress",
    "decode", "encode", "schema", "table", "column", "row", "record", "document", "field", "value",
    "number", "string", "array", "object", "tree", "graph", "node", "edge", "weight", "score",
    "rank", "result", "page", "cursor", "offset", "limit", "filter", "facet", "bucket", "range",
    "date", "time", "zone", "region", "country", "city", "street", "house", "garden", "river",
    "mountain", "forest", "ocean", "island", "bridge", "tower", "castle", "market", "price",
    "order", "invoice", "payment", "account", "user", "profile", "session", "token", "login",
    "logout", "admin", "editor", "viewer", "owner", "member", "group", "team", "project", "task",
    "issue", "review", "commit", "branch", "release", "version", "build", "test", "deploy",
    "monitor", "alert", "metric", "trace", "log", "event", "signal", "the", "a", "of", "and", "to",
    "in", "is", "for", "on", "with", "as", "by", "at", "from", "fast", "slow", "small", "large",
    "new", "old", "hot", "cold", "warm", "fresh", "stale", "quick", "brown", "fox", "jumps",
    "over", "lazy", "dog", "rust", "tokio", "serde",
];

const NAMES: &[&str] = &[
    "Ada", "Grace", "Linus", "Barbara", "Ken", "Dennis", "Margaret", "Alan", "Edsger", "Frances",
    "Donald", "Radia", "John", "Sophie", "Guido", "Yukihiro",
];
const SURNAMES: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Ritchie",
    "Hamilton",
    "Turing",
    "Dijkstra",
    "Allen",
    "Knuth",
    "Perlman",
    "McCarthy",
    "Wilson",
    "Rossum",
    "Matsumoto",
];
const LOCALES: &[&str] = &[
    "en-GB", "en-US", "fr-FR", "de-DE", "pt-PT", "ja-JP", "nl-NL",
];
const ROLES: &[&str] = &["reader", "writer", "admin", "billing", "support", "auditor"];
const WAREHOUSES: &[&str] = &["LIS-1", "AMS-2", "FRA-1", "DUB-3", "MAD-1", "WAW-2"];
const CATEGORIES: &[&str] = &[
    "books",
    "garden",
    "kitchen",
    "electronics",
    "toys",
    "outdoor",
    "office",
    "audio",
];

fn json_len<T: Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).expect("serializes").len()
}

fn user(rng: &mut Rng, id: u64) -> UserDoc {
    let first = rng.pick(NAMES);
    let last = rng.pick(SURNAMES);
    UserDoc {
        id,
        name: format!("{first} {last}"),
        email: format!(
            "{}.{}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        locale: rng.pick(LOCALES).to_owned(),
        created_at: rng.date(),
        roles: (0..2).map(|_| rng.pick(ROLES).to_owned()).collect(),
        verified: rng.below(2) == 0,
        karma: rng.below(100_000) as i64 - 5_000,
    }
}

fn hit(rng: &mut Rng) -> SearchHit {
    let title = rng.words(6);
    SearchHit {
        id: rng.ident(20),
        score: rng.score(),
        url: format!(
            "https://docs.example.com/{}/{}",
            rng.pick(WORDS),
            title.replace(' ', "-")
        ),
        title,
        snippet: rng.words(22),
        tags: (0..3).map(|_| rng.pick(WORDS).to_owned()).collect(),
        published_at: rng.date(),
    }
}

fn search(rng: &mut Rng, target: usize) -> SearchResponse {
    let mut r = SearchResponse {
        took_ms: 12,
        timed_out: false,
        total: 48_213,
        max_score: 0.0,
        hits: Vec::new(),
        facets: ["category", "year"]
            .iter()
            .map(|field| Facet {
                field: (*field).to_owned(),
                buckets: (0..3)
                    .map(|_| FacetBucket {
                        key: rng.pick(WORDS).to_owned(),
                        count: rng.below(5_000),
                    })
                    .collect(),
            })
            .collect(),
    };
    while json_len(&r) < target {
        let h = hit(rng);
        r.max_score = r.max_score.max(h.score);
        r.hits.push(h);
    }
    r
}

fn row(rng: &mut Rng, id: u64) -> Row {
    Row {
        id,
        sku: format!("SKU-{}", rng.ident(8).to_uppercase()),
        name: rng.words(3),
        category: rng.pick(CATEGORIES).to_owned(),
        price_cents: 100 + rng.below(99_900),
        quantity: rng.below(500) as u32,
        warehouse: rng.pick(WAREHOUSES).to_owned(),
        updated_at: rng.date(),
        active: rng.below(10) != 0,
    }
}

fn rows(rng: &mut Rng, target: usize) -> RowSet {
    let mut set = RowSet {
        table: "inventory".to_owned(),
        rows: Vec::new(),
    };
    // Rows are alike in size: estimate, then top up one at a time.
    let mut size = json_len(&set);
    while size < target {
        let r = row(rng, 1_000 + set.rows.len() as u64);
        size += json_len(&r) + 1;
        set.rows.push(r);
    }
    set
}

fn query(rng: &mut Rng, target: usize) -> Value {
    let mut should = Vec::new();
    let mut q = json!({});
    while json_len(&q) < target {
        should.push(json!({
            "match": { "body": { "query": rng.words(3), "boost": rng.below(4) + 1 } }
        }));
        q = json!({
            "index": "docs-v7",
            "from": 0,
            "size": 10,
            "query": {
                "bool": {
                    "must": [ { "multi_match": { "query": "redis cache latency", "fields": ["title^3", "body"] } } ],
                    "filter": [
                        { "term": { "lang": "en" } },
                        { "range": { "published_at": { "gte": "2021-01-01", "lt": "2026-01-01" } } },
                        { "terms": { "tags": ["rust", "redis", "cache"] } }
                    ],
                    "should": should,
                    "minimum_should_match": 1
                }
            },
            "highlight": { "fields": { "body": { "fragment_size": 150 } } },
            "aggs": { "category": { "terms": { "field": "category" } }, "year": { "date_histogram": { "field": "published_at", "calendar_interval": "year" } } }
        });
    }
    q
}

/// The fixtures, from a fixed seed.
pub fn generate() -> Fixtures {
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    Fixtures {
        user: user(&mut rng, 4_242),
        search: search(&mut rng, 2_048),
        rows_64k: rows(&mut rng, 64 * 1024),
        rows_1m: rows(&mut rng, 1024 * 1024),
        query: query(&mut rng, 1_024),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_fixtures_are_reproducible() {
        for (name, bytes) in to_files(&generate()) {
            let committed = std::fs::read(dir().join(name)).expect(name);
            assert!(
                committed == bytes,
                "{name} differs from the generator's output"
            );
        }
    }

    #[test]
    fn sizes_are_as_named() {
        let f = generate();
        let size = |v: &dyn erased::Json| v.json().len();
        assert!((150..300).contains(&size(&f.user)), "{}", size(&f.user));
        assert!((2_000..2_600).contains(&size(&f.search)));
        assert!((64 * 1024..70 * 1024).contains(&size(&f.rows_64k)));
        assert!((1024 * 1024..1030 * 1024).contains(&size(&f.rows_1m)));
        assert!((1_000..1_300).contains(&size(&f.query)));
    }
}
