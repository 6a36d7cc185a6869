//! The smallest useful program: one slow function, cached.
//!
//! ```text
//! cargo run --example quickstart                                  # embedded store, nothing installed
//! CACHED_REDIS_URL=redis://127.0.0.1:6379/0 cargo run --example quickstart   # Redis
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cached_redis::cached;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Forecast {
    city: String,
    celsius: Vec<f32>,
}

static QUERIES: AtomicUsize = AtomicUsize::new(0);

/// Stands for a slow database or search query: 300 ms per call.
#[cached(ttl = 60, prefix = "quickstart_forecast")]
async fn forecast(city: &str, days: u8) -> Result<Forecast, String> {
    QUERIES.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Forecast {
        city: city.to_owned(),
        celsius: (0..days).map(|d| 18.0 + f32::from(d) * 0.5).collect(),
    })
}

#[tokio::main]
async fn main() -> Result<(), cached_redis::Error> {
    let config = cached_redis::Config::from_env()?;
    let store = config
        .redis_url()
        .map_or("the embedded in-process store".to_owned(), |url| {
            // Redacted: a URL can carry a password.
            format!("Redis at {}", cached_redis::redact_url(url))
        });
    cached_redis::init(config)?;
    println!("caching in {store}");
    println!("key: {}", forecast_cache_key("Lisbon", 3)?);

    for _ in 0..3 {
        let before = QUERIES.load(Ordering::Relaxed);
        let started = Instant::now();
        let result = forecast("Lisbon", 3).await;
        let took = started.elapsed();
        let kind = if QUERIES.load(Ordering::Relaxed) > before {
            "miss"
        } else {
            "hit "
        };
        println!("{kind} in {:>10.3?}: {result:?}", took);
    }

    // Stats are gathered in-process and written to Redis every second;
    // write them now so `redis-cli HGETALL cached:quickstart_forecast:stats`
    // shows this run.
    cached_redis::flush_stats().await?;
    if let Some(s) = cached_redis::local_stats("quickstart_forecast") {
        println!(
            "stats: {} hits, {} misses, {} bytes stored",
            s.hits, s.misses, s.bytes_stored
        );
    }
    Ok(())
}
