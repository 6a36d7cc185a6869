//! The HTTP API: routes, handlers, and the two middlewares that make the
//! cache visible over HTTP (the trusted skip header, and the caching
//! headers).
//!
//! Layers, outermost first:
//!
//! ```text
//! trusted_skip ── strips X-Skip-Redis-Cache from callers it does not trust
//! SkipCacheLayer ─ runs the request under skip_cache when the header is left
//! http_cache ──── with_entry_info around the handler: X-Cache, ETag,
//!                 Last-Modified, Cache-Control, and 304 for If-None-Match
//! handler
//! ```

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use crate::db::{Db, ProductUpdate};
use crate::{cache, stats_page};

/// The response header saying where the response's value came from.
pub const X_CACHE: &str = "x-cache";
/// The request header that makes a caller trusted when it carries the
/// configured token.
pub const TRUST_TOKEN_HEADER: &str = "x-cache-trust-token";

/// Who may use the skip header.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Callers on a loopback address (the machine itself: operators,
    /// sidecars, health checks).
    pub loopback: bool,
    /// Callers sending this value in [`TRUST_TOKEN_HEADER`] (internal
    /// services); `None`: no token is accepted.
    pub token: Option<String>,
}

impl Trust {
    fn trusts(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
        if self.loopback && peer.is_some_and(|p| p.ip().is_loopback()) {
            return true;
        }
        match (&self.token, headers.get(TRUST_TOKEN_HEADER)) {
            (Some(token), Some(sent)) => constant_time_eq(token.as_bytes(), sent.as_bytes()),
            _ => false,
        }
    }
}

/// Compares without stopping at the first difference, so response times
/// do not reveal how much of a guessed token is right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Who may skip the cache.
    pub trust: Arc<Trust>,
}

/// The service's routes and middlewares.
pub fn router(state: AppState) -> Router {
    let trust = state.trust.clone();
    Router::new()
        .route("/search", get(search))
        .route("/products/{id}", get(product).put(update_product))
        .route("/metrics", get(metrics))
        .route("/cache", get(cache_page))
        .layer(middleware::from_fn(http_cache))
        .layer(cached_redis::SkipCacheLayer::new())
        .layer(middleware::from_fn(move |req, next| {
            trusted_skip(trust.clone(), req, next)
        }))
        .with_state(state)
}

/// Removes the skip header from requests of callers the service does not
/// trust, so an anonymous client cannot send every request to the
/// database. (Once `SkipCacheLayer::allow_if` is available, this is its
/// predicate.)
async fn trusted_skip(trust: Arc<Trust>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if !trust.trusts(peer, req.headers()) {
        req.headers_mut().remove(cached_redis::SKIP_CACHE_HEADER);
    }
    next.run(req).await
}

/// Runs the handler under `with_entry_info` and turns what the cache says
/// about the value into HTTP: `X-Cache` on every response; on successful
/// GETs of a stored value, `ETag` (the entry's content hash),
/// `Last-Modified` (its creation time) and `Cache-Control: max-age` (its
/// remaining lifetime); and `304 Not Modified`, without the body, when the
/// client's `If-None-Match` names the entry.
///
/// A route that makes no cached call says `X-Cache: SKIP`, as does a
/// request under the skip header; responses without an entry are marked
/// `no-cache` for clients.
async fn http_cache(req: Request, next: Next) -> Response {
    let cacheable_method = matches!(*req.method(), Method::GET | Method::HEAD);
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (mut response, info) = cached_redis::with_entry_info(next.run(req)).await;
    let status = info
        .as_ref()
        .map_or(cached_redis::CacheStatus::Skip, |i| i.status);
    let success = response.status().is_success();
    let headers = response.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(status.as_str()));
    let entry = info.filter(|i| i.content_hash.is_some());
    let (Some(entry), true, true) = (entry, cacheable_method, success) else {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return response;
    };
    let etag = entry.etag().expect("filtered on content_hash");
    let max_age = entry.max_age.unwrap_or(Duration::ZERO).as_secs();
    set(headers, header::ETAG, &etag);
    set(
        headers,
        header::CACHE_CONTROL,
        &format!("public, max-age={max_age}"),
    );
    if let Some(created) = entry.created_at {
        set(
            headers,
            header::LAST_MODIFIED,
            &httpdate::fmt_http_date(created),
        );
    }
    if if_none_match.is_some_and(|inm| entry.matches_if_none_match(&inm)) {
        let mut not_modified = Response::new(Body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            header::ETAG,
            header::CACHE_CONTROL,
            header::LAST_MODIFIED,
            header::VARY,
        ] {
            if let Some(value) = response.headers().get(&name) {
                not_modified.headers_mut().insert(name, value.clone());
            }
        }
        not_modified
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(status.as_str()));
        return not_modified;
    }
    response
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Runs a cached read; a panic (the database failing under `product`)
/// becomes `503`.
async fn guarded<T>(read: impl std::future::Future<Output = T>) -> Result<T, Response> {
    AssertUnwindSafe(read)
        .catch_unwind()
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response())
}

/// Query string of `/search`.
#[derive(Debug, Deserialize)]
pub struct SearchParams {
    /// The user's text, in `websearch_to_tsquery` syntax.
    #[serde(default)]
    pub q: String,
    /// Only this category.
    pub category: Option<String>,
    /// 1-based page.
    pub page: Option<u32>,
}

async fn search(State(state): State<AppState>, Query(params): Query<SearchParams>) -> Response {
    let q = params.q.trim();
    if q.is_empty() {
        return (StatusCode::BAD_REQUEST, "q is required\n").into_response();
    }
    let category = params.category.as_deref().filter(|c| !c.is_empty());
    let page = params.page.unwrap_or(1).clamp(1, 500);
    match guarded(cache::search(&state.db, q, category, page)).await {
        Ok(Ok(page)) => Json(page).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "search failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
        Err(response) => response,
    }
}

async fn product(State(state): State<AppState>, Path(id): Path<i64>) -> Response {
    match guarded(cache::product(&state.db, id)).await {
        Ok(Some(product)) => Json(product).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such product\n").into_response(),
        Err(response) => response,
    }
}

/// Updates the row. The cache needs no call here: the trigger on
/// `products` announces the change when the transaction commits and the
/// listener drops the product's entry.
async fn update_product(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(change): Json<ProductUpdate>,
) -> Response {
    match state.db.update(id, &change).await {
        Ok(Some(product)) => Json(product).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such product\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "update failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn cache_page() -> Response {
    // This process's counts first, so the page includes them.
    if let Err(e) = cached_redis::flush_stats().await {
        tracing::warn!(error = %e, "stats flush failed; the page may lag");
    }
    match cached_redis::report::read_all().await {
        Ok(reports) => Html(stats_page::render(&reports)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "stats unreadable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("stats unreadable: {e}\n"),
            )
                .into_response()
        }
    }
}
