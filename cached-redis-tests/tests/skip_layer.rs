//! The skip flag end to end: an axum `Router` with `SkipCacheLayer`, and
//! the task- and thread-local APIs.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Extension;
use axum::Router;
use cached_redis::{cached, SkipCacheLayer, SKIP_CACHE_HEADER};
use http_body_util::BodyExt;
use redis::Commands;
use tower::ServiceExt;

fn setup() {
    common::init_once("skip");
}

static RENDERS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "render")]
async fn render(page: u32) -> String {
    RENDERS.fetch_add(1, SeqCst);
    format!("page {page}")
}

async fn handler() -> String {
    render(1).await
}

static GUARDED_RENDERS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "render_guarded")]
async fn render_guarded(page: u32) -> String {
    GUARDED_RENDERS.fetch_add(1, SeqCst);
    format!("page {page}")
}

/// Loopback and private addresses: callers inside the network.
fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// A router that honours the header only from internal peers, reached by a
/// client at `peer` (as `into_make_service_with_connect_info` reports it).
fn guarded_app(peer: &str) -> Router {
    Router::new()
        .route("/", get(|| render_guarded(1)))
        .layer(
            SkipCacheLayer::new().allow_if(|req: &axum::http::Request<Body>| {
                req.extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .is_some_and(|ConnectInfo(peer)| internal(peer.ip()))
            }),
        )
        // What `into_make_service_with_connect_info` puts in each request.
        .layer(Extension(ConnectInfo(peer.parse::<SocketAddr>().unwrap())))
}

#[tokio::test]
async fn allow_if_honours_the_header_only_for_trusted_callers() {
    setup();
    let trusted = guarded_app("10.1.2.3:40000");
    let untrusted = guarded_app("203.0.113.9:40000");
    let key = render_guarded_cache_key(1).unwrap();

    // An outside client's header is ignored: the first call is the miss
    // that stores the entry, the rest are hits.
    for _ in 0..3 {
        assert_eq!(request(&untrusted, Some("1")).await, "page 1");
    }
    assert_eq!(GUARDED_RENDERS.load(SeqCst), 1, "untrusted: cached");
    let exists: bool = common::raw().exists(&key).unwrap();
    assert!(exists, "the untrusted request was served through the cache");
    let stats = cached_redis::local_stats("render_guarded").unwrap();
    assert_eq!((stats.skips, stats.hits), (0, 2));

    // An internal caller's header is honoured.
    for _ in 0..2 {
        assert_eq!(request(&trusted, Some("1")).await, "page 1");
    }
    assert_eq!(GUARDED_RENDERS.load(SeqCst), 3, "trusted: skipped");
    assert_eq!(
        cached_redis::local_stats("render_guarded").unwrap().skips,
        2
    );
    // Without the header the trusted caller is cached like anyone.
    assert_eq!(request(&trusted, None).await, "page 1");
    assert_eq!(GUARDED_RENDERS.load(SeqCst), 3);
}

async fn request(app: &Router, header: Option<&str>) -> String {
    let mut req = axum::http::Request::builder().uri("/");
    if let Some(value) = header {
        req = req.header(SKIP_CACHE_HEADER, value);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn the_header_bypasses_the_cache_through_an_axum_router() {
    setup();
    let app = Router::new()
        .route("/", get(handler))
        .layer(SkipCacheLayer::new());
    let key = render_cache_key(1).unwrap();

    // Skipped requests run the function every time and write nothing.
    for value in ["1", "true", "yes"] {
        assert_eq!(request(&app, Some(value)).await, "page 1");
    }
    assert_eq!(RENDERS.load(SeqCst), 3);
    let exists: bool = common::raw().exists(&key).unwrap();
    assert!(!exists, "a skipped call stores nothing");
    assert_eq!(cached_redis::local_stats("render").unwrap().skips, 3);

    // Without the header, or with 0/false: cached.
    assert_eq!(request(&app, None).await, "page 1");
    assert_eq!(request(&app, Some("0")).await, "page 1");
    assert_eq!(request(&app, Some("false")).await, "page 1");
    assert_eq!(request(&app, None).await, "page 1");
    assert_eq!(RENDERS.load(SeqCst), 4, "one miss, then hits");

    // A skipped request does not read the entry either.
    assert_eq!(request(&app, Some("1")).await, "page 1");
    assert_eq!(RENDERS.load(SeqCst), 5);
}

static TASK_RENDERS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "render_task")]
async fn render_task(page: u32) -> String {
    TASK_RENDERS.fetch_add(1, SeqCst);
    format!("page {page}")
}

static SYNC_RENDERS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "render_sync")]
fn render_sync(page: u32) -> String {
    SYNC_RENDERS.fetch_add(1, SeqCst);
    format!("page {page}")
}

#[tokio::test]
async fn skip_cache_and_skip_cache_sync() {
    setup();
    assert!(!cached_redis::is_cache_skipped());
    cached_redis::skip_cache(async {
        assert!(cached_redis::is_cache_skipped());
        render_task(2).await;
        render_task(2).await;
        // Sync code called from a skipped task is skipped too.
        render_sync(2);
    })
    .await;
    assert!(!cached_redis::is_cache_skipped());
    assert_eq!(TASK_RENDERS.load(SeqCst), 2);
    let exists: bool = common::raw()
        .exists(render_task_cache_key(2).unwrap())
        .unwrap();
    assert!(!exists, "nothing written under skip_cache");
    cached_redis::skip_cache_sync(|| {
        assert!(cached_redis::is_cache_skipped());
        render_sync(2);
        render_sync(2);
    });
    assert_eq!(SYNC_RENDERS.load(SeqCst), 3);
    let exists: bool = common::raw()
        .exists(render_sync_cache_key(2).unwrap())
        .unwrap();
    assert!(!exists, "nothing written under skip_cache_sync");
    render_sync(2);
    render_sync(2);
    assert_eq!(
        SYNC_RENDERS.load(SeqCst),
        4,
        "outside the flag: cached again"
    );
    render_task(2).await;
    render_task(2).await;
    assert_eq!(TASK_RENDERS.load(SeqCst), 3);
}

static EAGER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "skip_eager")]
fn lookup_eager(id: u32) -> u32 {
    EAGER_RUNS.fetch_add(1, SeqCst);
    id
}

fn bare_request(skip: bool) -> axum::http::Request<()> {
    let mut builder = axum::http::Request::builder().uri("/");
    if skip {
        builder = builder.header(SKIP_CACHE_HEADER, "1");
    }
    builder.body(()).unwrap()
}

/// A service may do its work in `call` and return a ready future (a
/// `service_fn` closure, a hand-written `Service`): that work is the
/// request's too.
#[tokio::test]
async fn the_flag_covers_work_a_service_does_in_call() {
    setup();
    let svc = tower::Layer::layer(
        &SkipCacheLayer::new(),
        tower::service_fn(|_req: axum::http::Request<()>| {
            let seen = cached_redis::is_cache_skipped();
            let value = lookup_eager(7);
            std::future::ready(Ok::<_, std::convert::Infallible>((seen, value)))
        }),
    );
    let (seen, _) = svc.clone().oneshot(bare_request(false)).await.unwrap();
    assert!(!seen);
    assert_eq!(EAGER_RUNS.load(SeqCst), 1);
    let (seen, _) = svc.clone().oneshot(bare_request(true)).await.unwrap();
    assert!(seen, "the flag is off while the inner service's call runs");
    assert_eq!(EAGER_RUNS.load(SeqCst), 2, "served from the cache");
}

static NESTED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "skip_nested")]
async fn nested_render(id: u32) -> u32 {
    NESTED_RUNS.fetch_add(1, SeqCst);
    id
}

/// An inner layer that does not honour the header for a request keeps the
/// flag an outer one set: layers compose.
#[tokio::test]
async fn an_inner_layer_keeps_the_flag_an_outer_one_set() {
    setup();
    let handler = tower::service_fn(|_req: axum::http::Request<()>| async {
        Ok::<_, std::convert::Infallible>((
            cached_redis::is_cache_skipped(),
            nested_render(1).await,
        ))
    });
    let inner = tower::Layer::layer(
        &SkipCacheLayer::new().allow_if(|_: &axum::http::Request<()>| false),
        handler,
    );
    let svc = tower::Layer::layer(&SkipCacheLayer::new(), inner);
    nested_render(1).await;
    assert_eq!(NESTED_RUNS.load(SeqCst), 1);
    let (seen, _) = svc.oneshot(bare_request(true)).await.unwrap();
    assert!(seen, "the inner layer turned the outer layer's flag off");
    assert_eq!(NESTED_RUNS.load(SeqCst), 2, "served from the cache");
}

/// `skip_cache_sync(|| rt.block_on(..))` on a current-thread runtime also
/// polls the tasks spawned on it: other requests, which keep their cache.
#[test]
fn skip_cache_sync_does_not_reach_other_tasks_its_thread_polls() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let other_saw_it = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = other_saw_it.clone();
    rt.spawn(async move {
        for _ in 0..20 {
            if cached_redis::is_cache_skipped() {
                seen.store(true, SeqCst);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let root_saw_it = cached_redis::skip_cache_sync(|| {
        rt.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            cached_redis::is_cache_skipped()
        })
    });
    assert!(root_saw_it, "the future skip_cache_sync drives is skipped");
    assert!(
        !other_saw_it.load(SeqCst),
        "another task the thread polled meanwhile saw the flag"
    );
}
