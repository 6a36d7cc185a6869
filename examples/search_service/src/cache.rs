//! The cached reads. Everything the service caches is here, with why each
//! function has the options it has.

use cached_redis::cached;

use crate::db::{Db, DbError, Product, SearchPage};

/// Prefix of [`product`]'s entries and stats: the trigger on `products`
/// names it.
pub const PRODUCT_PREFIX: &str = "product";
/// Prefix of [`search`]'s entries and stats.
pub const SEARCH_PREFIX: &str = "search";

/// A page of search results.
///
/// - `ttl = 60, stale = 240`: a product change reaches search results
///   within a minute (see the README's invalidation strategy); after that
///   minute a popular query keeps being answered from the old page while
///   one request recomputes it, so no request ever waits for a hot query.
/// - `lock = true`: a cold popular query (after a deploy, or a fresh
///   Redis) is computed by one instance of the service while the others
///   wait for its result, instead of every instance running the same
///   ranked full-text query at once.
/// - `db` is skipped: the pool is not part of the question.
#[cached(prefix = "search", ttl = 60, stale = 240, lock = true, skip = "db")]
pub async fn search(
    db: &Db,
    query: &str,
    category: Option<&str>,
    page: u32,
) -> Result<SearchPage, DbError> {
    db.search(query, category, page).await
}

/// One product by id.
///
/// - `cache_none = 30`: unknown ids (scanners, stale links) are answered
///   from the cache too, for 30 s, instead of reaching the database each
///   time.
/// - `ttl = 600`: long, because changes do not wait for it: the trigger on
///   `products` and the listener drop the entry of a product the moment
///   its row changes.
///
/// A database failure is not a value to cache, and `cache_none` needs an
/// `Option` return: the body panics on one, and the handler turns the
/// panic into `503` (nothing is stored).
#[cached(prefix = "product", ttl = 600, cache_none = 30, skip = "db")]
pub async fn product(db: &Db, id: i64) -> Option<Product> {
    match db.product(id).await {
        Ok(product) => product,
        Err(e) => panic!("product {id}: {e}"),
    }
}
