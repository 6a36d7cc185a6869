//! PostgreSQL: the schema, its deterministic seed, and the three queries
//! the service runs (search, one product, update).
//!
//! Products live in their own schema. `document` is a generated `tsvector`
//! over name and description with a GIN index; searches parse the user's
//! text with `websearch_to_tsquery` (quotes, `or`, `-word`), rank with
//! `ts_rank` and page by 20.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

/// Results per search page.
pub const PAGE_SIZE: i64 = 20;

/// The trigger function of cached-redis (`sql/cached_redis_notify.sql`).
const NOTIFY_SQL: &str = include_str!("../../../sql/cached_redis_notify.sql");

/// Words the generator builds products from; the load demo draws its
/// queries from them too.
pub const ADJECTIVES: [&str; 24] = [
    "classic",
    "compact",
    "rugged",
    "vintage",
    "modern",
    "portable",
    "premium",
    "quiet",
    "bright",
    "slim",
    "heavy",
    "smart",
    "wireless",
    "foldable",
    "waterproof",
    "ergonomic",
    "handmade",
    "organic",
    "sturdy",
    "elegant",
    "minimal",
    "deluxe",
    "solar",
    "electric",
];
/// Materials of generated products.
pub const MATERIALS: [&str; 16] = [
    "oak",
    "steel",
    "bamboo",
    "leather",
    "cotton",
    "wool",
    "glass",
    "ceramic",
    "copper",
    "walnut",
    "linen",
    "aluminium",
    "carbon",
    "granite",
    "silicone",
    "canvas",
];
/// Nouns of generated products.
pub const NOUNS: [&str; 32] = [
    "lamp",
    "chair",
    "desk",
    "kettle",
    "backpack",
    "jacket",
    "speaker",
    "keyboard",
    "mug",
    "blanket",
    "knife",
    "tent",
    "bottle",
    "watch",
    "camera",
    "headphones",
    "table",
    "shelf",
    "pan",
    "scarf",
    "boots",
    "wallet",
    "clock",
    "router",
    "monitor",
    "mouse",
    "sofa",
    "rug",
    "bicycle",
    "helmet",
    "drill",
    "grill",
];
/// Categories of generated products.
pub const CATEGORIES: [&str; 8] = [
    "home", "kitchen", "outdoor", "office", "audio", "fashion", "sports", "tools",
];
const USES: [&str; 8] = [
    "everyday use",
    "long trips",
    "small apartments",
    "the workshop",
    "gifts",
    "cold evenings",
    "busy mornings",
    "the garden",
];

/// A product row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Primary key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// A sentence or two.
    pub description: String,
    /// One of [`CATEGORIES`].
    pub category: String,
    /// Price in cents.
    pub price_cents: i64,
}

impl Product {
    /// A row with the columns `id, name, description, category, price_cents`.
    fn from_row(row: &tokio_postgres::Row) -> Self {
        Product {
            id: row.get("id"),
            name: row.get("name"),
            description: row.get("description"),
            category: row.get("category"),
            price_cents: row.get("price_cents"),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Product id.
    pub id: i64,
    /// Product name.
    pub name: String,
    /// Product category.
    pub category: String,
    /// Price in cents.
    pub price_cents: i64,
    /// `ts_rank` of the product for the query.
    pub rank: f32,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchPage {
    /// Products matching the query (and category) in all pages.
    pub total: i64,
    /// 1-based page number.
    pub page: u32,
    /// This page's results, best first.
    pub hits: Vec<Hit>,
}

/// A database failure, as the handlers report it.
#[derive(Debug)]
pub struct DbError(pub tokio_postgres::Error);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres says only "db error" for server errors; the
        // server's message is in the source.
        match self.0.as_db_error() {
            Some(db) => write!(f, "database error: {}: {}", db.severity(), db.message()),
            None => write!(f, "database error: {}", self.0),
        }
    }
}

impl std::error::Error for DbError {}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError(e)
    }
}

/// A few connections used in turn (tokio-postgres pipelines the queries of
/// concurrent callers on each).
#[derive(Clone)]
pub struct Db {
    clients: Arc<Vec<Client>>,
    next: Arc<AtomicUsize>,
    schema: Arc<str>,
}

impl Db {
    /// Opens `connections` connections to `url` (a libpq key=value string
    /// or a `postgresql://` URL) whose `search_path` is `schema`.
    pub async fn connect(url: &str, schema: &str, connections: usize) -> Result<Db, DbError> {
        let mut clients = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(error = %e, "PostgreSQL connection ended");
                }
            });
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {0}; SET search_path = {0}",
                    ident(schema)
                ))
                .await?;
            clients.push(client);
        }
        Ok(Db {
            clients: Arc::new(clients),
            next: Arc::new(AtomicUsize::new(0)),
            schema: schema.into(),
        })
    }

    fn client(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// (Re)creates the products table in this schema with `products`
    /// deterministic rows, its full-text index, and the trigger that
    /// announces changes of a product on `channel` for the cached function
    /// with prefix `product_prefix`. Everything is generated inside
    /// PostgreSQL (`generate_series`): 100,000 rows take a few seconds.
    pub async fn seed(
        &self,
        products: u32,
        channel: &str,
        product_prefix: &str,
    ) -> Result<(), DbError> {
        let list = |words: &[&str]| {
            let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
            format!("ARRAY[{}]", quoted.join(","))
        };
        let client = self.client();
        client.batch_execute(NOTIFY_SQL).await?;
        // Every column is a function of `i` alone: the same rows on every
        // machine and every start. `x` and `y` are multiplicative hashes
        // of `i` modulo a prime; each word takes other digits of them, so
        // words combine independently.
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS products;
                 CREATE TABLE products (
                     id bigint PRIMARY KEY,
                     name text NOT NULL,
                     description text NOT NULL,
                     category text NOT NULL,
                     price_cents bigint NOT NULL,
                     document tsvector GENERATED ALWAYS AS
                         (to_tsvector('english', name || ' ' || description)) STORED
                 );
                 INSERT INTO products (id, name, description, category, price_cents)
                 SELECT i,
                        initcap(a[1 + x % {na}] || ' ' || m[1 + (x / {na}) % {nm}] || ' ' || n[1 + (x / ({na} * {nm})) % {nn}]),
                        'This ' || a[1 + y % {na}] || ' ' || n[1 + (x / ({na} * {nm})) % {nn}] || ' is made of '
                            || m[1 + (y / {na}) % {nm}] || ' for ' || u[1 + (y / ({na} * {nm})) % {nu}]
                            || '. Pairs well with a ' || a[1 + (y / 7919) % {na}] || ' ' || n[1 + (y / 104729) % {nn}] || '.',
                        c[1 + (x / ({na} * {nm} * {nn})) % {nc}],
                        199 + (y / 13) % 49800
                 FROM generate_series(1, {products}::bigint) AS i,
                      LATERAL (SELECT (i * 2654435761) % 4294967291 AS x,
                                      (i * 40503 + 2166136261) % 4294967279 AS y) AS h,
                      (SELECT {a} AS a, {m} AS m, {n} AS n, {c} AS c, {u} AS u) AS w;
                 SET maintenance_work_mem = '128MB';
                 CREATE INDEX products_document ON products USING gin (document);
                 CREATE INDEX products_category ON products (category);
                 ANALYZE products;
                 CREATE TRIGGER products_cache AFTER INSERT OR UPDATE OR DELETE ON products
                     FOR EACH ROW EXECUTE FUNCTION cached_redis_notify({channel}, {prefix}, 'id');",
                na = ADJECTIVES.len(),
                nm = MATERIALS.len(),
                nn = NOUNS.len(),
                nc = CATEGORIES.len(),
                nu = USES.len(),
                a = list(&ADJECTIVES),
                m = list(&MATERIALS),
                n = list(&NOUNS),
                c = list(&CATEGORIES),
                u = list(&USES),
                channel = literal(channel),
                prefix = literal(product_prefix),
            ))
            .await?;
        tracing::info!(products, schema = %self.schema, "products seeded");
        Ok(())
    }

    /// Page `page` (1-based) of the products matching `query`, optionally
    /// within `category`, best ranked first.
    pub async fn search(
        &self,
        query: &str,
        category: Option<&str>,
        page: u32,
    ) -> Result<SearchPage, DbError> {
        let offset = i64::from(page.max(1) - 1) * PAGE_SIZE;
        let rows = self
            .client()
            .query(
                "SELECT id, name, category, price_cents, ts_rank(document, q) AS rank,
                        count(*) OVER () AS total
                 FROM products, websearch_to_tsquery('english', $1) AS q
                 WHERE document @@ q AND ($2::text IS NULL OR category = $2)
                 ORDER BY rank DESC, id
                 LIMIT $3 OFFSET $4",
                &[&query, &category, &PAGE_SIZE, &offset],
            )
            .await?;
        let total = match rows.first() {
            Some(row) => row.get("total"),
            // Past the last page the window count is not there: count.
            None if offset > 0 => self.count(query, category).await?,
            None => 0,
        };
        Ok(SearchPage {
            total,
            page: page.max(1),
            hits: rows
                .iter()
                .map(|row| Hit {
                    id: row.get("id"),
                    name: row.get("name"),
                    category: row.get("category"),
                    price_cents: row.get("price_cents"),
                    rank: row.get("rank"),
                })
                .collect(),
        })
    }

    async fn count(&self, query: &str, category: Option<&str>) -> Result<i64, DbError> {
        let row = self
            .client()
            .query_one(
                "SELECT count(*) FROM products, websearch_to_tsquery('english', $1) AS q
                 WHERE document @@ q AND ($2::text IS NULL OR category = $2)",
                &[&query, &category],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The product with this id, if there is one.
    pub async fn product(&self, id: i64) -> Result<Option<Product>, DbError> {
        let row = self
            .client()
            .query_opt(
                "SELECT id, name, description, category, price_cents FROM products WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(Product::from_row))
    }

    /// Updates the fields given; the updated row, `None` for an unknown id.
    pub async fn update(
        &self,
        id: i64,
        change: &ProductUpdate,
    ) -> Result<Option<Product>, DbError> {
        let row = self
            .client()
            .query_opt(
                "UPDATE products SET
                     name = coalesce($2, name),
                     description = coalesce($3, description),
                     category = coalesce($4, category),
                     price_cents = coalesce($5, price_cents)
                 WHERE id = $1
                 RETURNING id, name, description, category, price_cents",
                &[
                    &id,
                    &change.name,
                    &change.description,
                    &change.category,
                    &change.price_cents,
                ],
            )
            .await?;
        Ok(row.as_ref().map(Product::from_row))
    }
}

/// The body of `PUT /products/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProductUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New price in cents.
    pub price_cents: Option<i64>,
}

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a quoted SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
