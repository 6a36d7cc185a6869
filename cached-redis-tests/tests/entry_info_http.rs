//! HTTP caching from the cache: `with_entry_info` in an axum handler gives
//! `X-Cache`, `ETag` (the BLAKE3 of the stored payload), `Last-Modified`,
//! `Cache-Control: max-age`, and `304 Not Modified` for a matching
//! `If-None-Match`, against the real Redis.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cached_redis::{cached, with_entry_info, CacheStatus, SkipCacheLayer, SKIP_CACHE_HEADER};
use http_body_util::BodyExt;
use redis::Commands;
use tower::ServiceExt;

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "entry_info_article", ttl = 120)]
async fn article(id: u32) -> Result<String, String> {
    RUNS.fetch_add(1, SeqCst);
    if id == 0 {
        return Err("no article 0".into());
    }
    Ok(format!("article {id}: {}", "text ".repeat(100)))
}

/// What a service writes: the value, and the entry's facts as headers.
async fn handler(Path(id): Path<u32>, headers: HeaderMap) -> Response {
    let (value, info) = with_entry_info(article(id)).await;
    let Ok(body) = value else {
        let status = info.map_or("none", |i| i.status.as_str());
        return (StatusCode::NOT_FOUND, [("x-cache", status)]).into_response();
    };
    let info = info.expect("a cached call ran");
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert("x-cache", info.status.as_str().parse().unwrap());
    if let Some(etag) = info.etag() {
        h.insert(header::ETAG, etag.parse().unwrap());
        let max_age = info.max_age.unwrap().as_secs();
        h.insert(
            header::CACHE_CONTROL,
            format!("max-age={max_age}").parse().unwrap(),
        );
        let created = info.created_at.unwrap();
        h.insert(header::LAST_MODIFIED, unix_ms(created).parse().unwrap());
        let inm = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if inm.is_some_and(|inm| info.matches_if_none_match(inm)) {
            let mut not_modified = Response::new(Body::empty());
            *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
            *not_modified.headers_mut() = response.headers().clone();
            return not_modified;
        }
    }
    response
}

/// Milliseconds since the epoch: exact, so two responses compare exactly
/// (a service formats an HTTP date instead).
fn unix_ms(t: std::time::SystemTime) -> String {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string()
}

fn app() -> Router {
    Router::new()
        .route("/articles/{id}", get(handler))
        .layer(SkipCacheLayer::new())
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn get_article(path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().uri(path);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let resp = app()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn etag_last_modified_max_age_and_304_through_an_axum_router() {
    common::init_once("entry_info_http");
    let key = article_cache_key(7).unwrap();

    let miss = get_article("/articles/7", &[]).await;
    assert_eq!(miss.status, StatusCode::OK);
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(miss.header("cache-control"), Some("max-age=120"));
    // The tag is the BLAKE3 of the stored payload (the bytes after the
    // 20-byte header), base64url.
    let stored: Vec<u8> = common::raw().get(&key).unwrap();
    let expected = format!(
        "\"{}\"",
        URL_SAFE_NO_PAD.encode(blake3::hash(&stored[20..]).as_bytes())
    );
    assert_eq!(miss.header("etag"), Some(expected.as_str()));
    let created_ms = u64::from_le_bytes(stored[4..12].try_into().unwrap());
    assert_eq!(miss.header("last-modified"), Some(&*created_ms.to_string()));

    let hit = get_article("/articles/7", &[]).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.body, miss.body);
    assert_eq!(hit.header("etag"), miss.header("etag"));
    assert_eq!(hit.header("last-modified"), miss.header("last-modified"));
    let max_age: u64 = hit.header("cache-control").unwrap()["max-age=".len()..]
        .parse()
        .unwrap();
    assert!(max_age <= 120);
    assert_eq!(RUNS.load(SeqCst), 1);

    // A matching If-None-Match: 304, no body; a different one: the body.
    let not_modified = get_article("/articles/7", &[("if-none-match", &expected)]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(expected.as_str()));
    let weak = format!("\"other\", W/{expected}");
    let weak_match = get_article("/articles/7", &[("if-none-match", &weak)]).await;
    assert_eq!(weak_match.status, StatusCode::NOT_MODIFIED);
    let modified = get_article("/articles/7", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(modified.status, StatusCode::OK);
    assert_eq!(modified.body, miss.body);

    // Skipped: no entry, so no tag.
    let skipped = get_article("/articles/7", &[(SKIP_CACHE_HEADER, "1")]).await;
    assert_eq!(skipped.status, StatusCode::OK);
    assert_eq!(skipped.header("x-cache"), Some("SKIP"));
    assert_eq!(skipped.header("etag"), None);

    // Recomputed after an invalidation, the same value keeps its tag.
    assert!(article_invalidate(7).await.unwrap());
    let recomputed = get_article("/articles/7", &[]).await;
    assert_eq!(recomputed.header("x-cache"), Some("MISS"));
    assert_eq!(recomputed.header("etag"), Some(expected.as_str()));

    // An Err is not stored: a miss without an entry.
    let err = get_article("/articles/0", &[]).await;
    assert_eq!(err.status, StatusCode::NOT_FOUND);
    assert_eq!(err.header("x-cache"), Some("MISS"));
}

#[tokio::test]
async fn no_cached_call_no_info_and_statuses_print() {
    common::init_once("entry_info_http");
    let (value, info) = with_entry_info(async { 5 }).await;
    assert_eq!((value, info), (5, None));
    assert_eq!(CacheStatus::Miss.to_string(), "MISS");
    assert_eq!(CacheStatus::Skip.as_str(), "SKIP");
}

#[cached(
    prefix = "entry_info_missing",
    ttl = 300,
    cache_none = 2,
    refresh = true
)]
async fn missing(id: u32) -> Option<String> {
    (id < 100).then(|| id.to_string())
}

/// A cached `None` (a 404, say) is fresh for `cache_none`, not `ttl`, in
/// what the handler is told: a `Cache-Control` built from it must not let
/// clients keep a negative answer longer than the cache does.
#[tokio::test]
async fn a_cached_none_reports_its_own_lifetime() {
    common::init_once("entry_info_http");
    let (value, info) = with_entry_info(missing(404)).await;
    assert_eq!(value, None);
    let info = info.unwrap();
    assert_eq!(info.status, CacheStatus::Miss);
    assert!(info.max_age.unwrap() <= Duration::from_secs(2));
    let (value, info) = with_entry_info(missing(404)).await;
    assert_eq!(value, None);
    let info = info.unwrap();
    assert_eq!(info.status, CacheStatus::Hit);
    assert!(
        info.max_age.unwrap() <= Duration::from_secs(2),
        "a cached None is fresh for {:?}",
        info.max_age
    );
}

#[cached(prefix = "entry_info_skew", ttl = 60)]
async fn skewed(id: u32) -> String {
    format!("v{id}")
}

/// An entry written by a process whose clock runs an hour ahead: its
/// header dates it in the future. A hit reports at most the function's
/// `ttl` as `max_age` and no `created_at` later than now, or a CDN would
/// keep the value an hour too long and `Last-Modified` would be ahead of
/// the reply.
#[tokio::test]
async fn an_entry_dated_in_the_future_reports_at_most_its_ttl() {
    common::init_once("entry_info_http");
    let (_, info) = with_entry_info(skewed(1)).await;
    assert_eq!(info.expect("recorded").status, CacheStatus::Miss);
    let key = skewed_cache_key(1).expect("key");
    let mut conn = common::raw();
    let mut bytes: Vec<u8> = conn.get(&key).expect("GET");
    let now = std::time::SystemTime::now();
    let ahead = now + Duration::from_secs(3600);
    let ahead_ms = ahead
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    // The creation time: bytes 4..12 of the header (docs/FORMAT.md).
    bytes[4..12].copy_from_slice(&ahead_ms.to_le_bytes());
    let _: () = conn.pset_ex(&key, bytes, 60_000).expect("PSETEX");
    let (_, info) = with_entry_info(skewed(1)).await;
    let info = info.expect("recorded");
    assert_eq!(info.status, CacheStatus::Hit);
    let max_age = info.max_age.expect("max_age");
    assert!(
        max_age <= Duration::from_secs(60),
        "max_age {max_age:?} is over the function's ttl of 60 s"
    );
    let created_at = info.created_at.expect("created_at");
    assert!(
        created_at <= std::time::SystemTime::now(),
        "created_at {created_at:?} is in the future"
    );
}

static UNWRITTEN_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "entry_info_unwritten", cache = "entry_info_nowrite")]
async fn unwritten(id: u32) -> String {
    UNWRITTEN_RUNS.fetch_add(1, SeqCst);
    // Slow enough for a second call to join this one.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    format!("v{id}")
}

/// The named cache `entry_info_nowrite`, on a server of its own whose ACL
/// refuses every write; and that server's admin connection.
fn nowrite() -> redis::Connection {
    static SERVER: std::sync::OnceLock<common::RedisServer> = std::sync::OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let server = common::RedisServer::start();
        let mut admin = redis::Client::open(server.url())
            .expect("url")
            .get_connection()
            .expect("connect");
        let _: () = redis::cmd("ACL")
            .arg(
                &[
                    "SETUSER",
                    "ei_nowrite",
                    "on",
                    "nopass",
                    "~*",
                    "&*",
                    "+@all",
                    "-@write",
                ][..],
            )
            .query(&mut admin)
            .expect("ACL SETUSER");
        let url = server.url().replace("redis://", "redis://ei_nowrite:x@");
        cached_redis::init_named(
            "entry_info_nowrite",
            cached_redis::Config::builder()
                .redis_url(url)
                .namespace(common::namespace("entry_info_nowrite"))
                .build()
                .expect("config"),
        )
        .expect("init_named");
        server
    });
    redis::Client::open(server.url())
        .expect("url")
        .get_connection()
        .expect("connect")
}

/// A value the store refuses to write has no entry: `with_entry_info`
/// gives no `ETag`, `Last-Modified` or `max-age` for it, neither to the
/// call that computed it (a miss) nor to a call of the same key that
/// waited for it and was handed the value (a hit).
#[tokio::test]
async fn a_refused_write_reports_no_entry() {
    let mut admin = nowrite();
    let leader = tokio::spawn(with_entry_info(unwritten(1)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let follower = tokio::spawn(with_entry_info(unwritten(1)));
    for (who, joined, status) in [
        ("leader", leader, CacheStatus::Miss),
        ("follower", follower, CacheStatus::Hit),
    ] {
        let (value, info) = joined.await.expect("call");
        assert_eq!(value, "v1", "{who}");
        let info = info.expect("recorded");
        assert_eq!(info.status, status, "{who}: {info:?}");
        assert_eq!(info.content_hash, None, "{who}: {info:?}");
        assert_eq!(info.created_at, None, "{who}: {info:?}");
        assert_eq!(info.max_age, None, "{who}: {info:?}");
    }
    assert_eq!(
        UNWRITTEN_RUNS.load(SeqCst),
        1,
        "the follower was handed the value"
    );
    let key = unwritten_cache_key(1).expect("key");
    assert!(!admin.exists::<_, bool>(&key).expect("EXISTS"), "written");
}
