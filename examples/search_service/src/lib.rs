//! An HTTP search API over PostgreSQL full-text search, cached with
//! cached-redis: the example of the README's "A real service" section.
//!
//! | module | owns |
//! | --- | --- |
//! | [`db`] | the schema, its deterministic seed, the SQL |
//! | [`cache`] | the `#[cached]` reads and why each has its options |
//! | [`http`] | routes, handlers, the trusted skip header, HTTP caching headers |
//! | [`stats_page`] | `/cache`: the stats hashes as HTML with SVG charts |
//! | [`client`] | a small HTTP/1.1 client for the load demo and the tests |
//! | [`zipf`] | the load demo's query mix |

pub mod cache;
pub mod client;
pub mod db;
pub mod http;
pub mod stats_page;
pub mod zipf;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusBuilder;

/// What the service needs to start, usually from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PostgreSQL to use (`DATABASE_URL`): a URL or a libpq key=value string.
    pub database_url: String,
    /// Where to listen (`SEARCH_SERVICE_ADDR`, default `127.0.0.1:3000`;
    /// port 0 picks a free one).
    pub addr: SocketAddr,
    /// Products to seed (`SEARCH_SERVICE_PRODUCTS`, default 100,000).
    pub products: u32,
    /// PostgreSQL schema of the service's table (`SEARCH_SERVICE_SCHEMA`,
    /// default `search_service`); dropped and re-seeded on start.
    pub schema: String,
    /// `NOTIFY` channel of the invalidation trigger
    /// (`SEARCH_SERVICE_CHANNEL`, default `search_service_cache`).
    pub channel: String,
    /// Connections to PostgreSQL (`SEARCH_SERVICE_DB_CONNECTIONS`, default 4).
    pub db_connections: usize,
    /// Who may skip the cache (`SEARCH_SERVICE_TRUST_LOOPBACK`, default 1;
    /// `SEARCH_SERVICE_TRUST_TOKEN`, default none).
    pub trust: http::Trust,
}

/// A setting that could not be read.
#[derive(Debug)]
pub struct SettingsError(pub String);

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingsError {}

impl Settings {
    /// From the environment variables named on each field.
    pub fn from_env() -> Result<Settings, SettingsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let parse = |name: &str, default: &str| -> Result<String, SettingsError> {
            Ok(var(name).unwrap_or_else(|| default.to_owned()))
        };
        let bad = |name: &str, e: &dyn std::fmt::Display| SettingsError(format!("{name}: {e}"));
        Ok(Settings {
            database_url: var("DATABASE_URL").ok_or_else(|| {
                SettingsError(
                    "DATABASE_URL is required, e.g. postgresql://postgres@127.0.0.1:5432/postgres"
                        .into(),
                )
            })?,
            addr: parse("SEARCH_SERVICE_ADDR", "127.0.0.1:3000")?
                .parse()
                .map_err(|e| bad("SEARCH_SERVICE_ADDR", &e))?,
            products: parse("SEARCH_SERVICE_PRODUCTS", "100000")?
                .parse()
                .map_err(|e| bad("SEARCH_SERVICE_PRODUCTS", &e))?,
            schema: parse("SEARCH_SERVICE_SCHEMA", "search_service")?,
            channel: parse("SEARCH_SERVICE_CHANNEL", "search_service_cache")?,
            db_connections: parse("SEARCH_SERVICE_DB_CONNECTIONS", "4")?
                .parse()
                .map_err(|e| bad("SEARCH_SERVICE_DB_CONNECTIONS", &e))?,
            trust: http::Trust {
                loopback: !matches!(
                    var("SEARCH_SERVICE_TRUST_LOOPBACK").as_deref(),
                    Some("0" | "false")
                ),
                token: var("SEARCH_SERVICE_TRUST_TOKEN"),
            },
        })
    }
}

/// Any start-up failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starts the service: installs the Prometheus recorder, initializes the
/// cache from the environment (`CACHED_REDIS_URL`; the embedded store
/// without it), seeds the database, starts the invalidation listener and
/// serves until `shutdown` completes. Then it finishes the requests in
/// flight and writes the stats to Redis.
///
/// `on_listening` is told the address once the socket is bound.
pub async fn run(
    settings: Settings,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    // Before the first cached call: the cache binds its metrics to the
    // recorder installed at that moment.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let cache_config = cached_redis::Config::from_env()?;
    cached_redis::init(cache_config)?;

    let db = db::Db::connect(
        &settings.database_url,
        &settings.schema,
        settings.db_connections,
    )
    .await?;
    let started = std::time::Instant::now();
    db.seed(settings.products, &settings.channel, cache::PRODUCT_PREFIX)
        .await?;
    tracing::info!(
        products = settings.products,
        seconds = started.elapsed().as_secs_f64(),
        "database ready"
    );

    // Registers `product` with the runtime so a notification about one id
    // drops exactly that entry (not the whole prefix).
    let _ = cache::product_cache_key(0);
    let listener = cached_redis::postgres::listen(&settings.database_url, &settings.channel)?;
    listener.wait_listening().await;

    let state = http::AppState {
        db,
        metrics,
        trust: Arc::new(settings.trust),
    };
    let socket = tokio::net::TcpListener::bind(settings.addr).await?;
    on_listening(socket.local_addr()?);
    axum::serve(
        socket,
        http::router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;

    listener.stop();
    if let Err(e) = cached_redis::flush_stats().await {
        tracing::warn!(error = %e, "last stats flush failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
