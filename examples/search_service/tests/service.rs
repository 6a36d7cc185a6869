//! The search service end to end: the real binary on a free port, against
//! the Redis and PostgreSQL of `scripts/test.sh` (`CACHED_REDIS_TEST_URL`,
//! `CACHED_REDIS_TEST_PG`), driven over HTTP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::Method;
use search_service::client::{HttpClient, Reply};

const TOKEN: &str = "trusted-caller-token";

/// The service process, killed if the test ends early.
struct Service {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{name} is not set: run the tests with scripts/test.sh"))
}

fn start(namespace: &str, redis_url: &str) -> Service {
    let tag = namespace.replace('-', "_");
    let mut child = Command::new(env!("CARGO_BIN_EXE_search-service"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", env("CACHED_REDIS_TEST_PG"))
        .env("CACHED_REDIS_URL", redis_url)
        .env("CACHED_REDIS_NAMESPACE", namespace)
        .env("SEARCH_SERVICE_ADDR", "127.0.0.1:0")
        .env("SEARCH_SERVICE_PRODUCTS", "5000")
        .env("SEARCH_SERVICE_SCHEMA", &tag)
        .env("SEARCH_SERVICE_CHANNEL", &tag)
        // Every caller of the test is on loopback: trust by token only,
        // so a caller without it is untrusted.
        .env("SEARCH_SERVICE_TRUST_LOOPBACK", "0")
        .env("SEARCH_SERVICE_TRUST_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("search-service starts");
    // Read on a thread of its own: a service that never says where it
    // listens fails the test after a minute instead of holding it.
    let stdout = child.stdout.take().unwrap();
    let (first_line, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = first_line.send(line);
    });
    let Ok(line) = read.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the service did not say where it listens within a minute");
    };
    let addr = line
        .trim()
        .strip_prefix("search-service listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Service { child, addr }
}

fn entry_keys(redis: &mut redis::Connection, namespace: &str, prefix: &str) -> Vec<String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{namespace}:{prefix}:*"))
        .query(redis)
        .unwrap();
    keys.into_iter()
        .filter(|k| !k.ends_with(":stats") && !k.ends_with(":lock"))
        .collect()
}

fn assert_cache(reply: &Reply, expected: &str) {
    assert_eq!(
        reply.header("x-cache"),
        Some(expected),
        "X-Cache of a {} reply: {:?}",
        reply.status,
        reply.headers
    );
}

fn metric(text: &str, name: &str, namespace: &str, prefix: &str) -> Option<u64> {
    let head = format!("{name}{{namespace=\"{namespace}\",prefix=\"{prefix}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_service_over_http() {
    let redis_url = env("CACHED_REDIS_TEST_URL");
    let namespace = format!("svc-test-{}", std::process::id());
    let service = start(&namespace, &redis_url);
    let mut redis = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut http = HttpClient::connect(service.addr).await.unwrap();

    // A miss, then a hit with the same value and entity tag.
    let first = http.get("/products/42", &[]).await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_cache(&first, "MISS");
    let etag = first
        .header("etag")
        .expect("ETag on a stored value")
        .to_owned();
    assert!(etag.starts_with('"') && etag.len() == 45, "{etag}");
    assert_eq!(first.header("cache-control"), Some("public, max-age=600"));
    assert!(first.header("last-modified").is_some());
    let product: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(product["id"], 42);

    let second = http.get("/products/42", &[]).await.unwrap();
    assert_cache(&second, "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), Some(etag.as_str()));
    assert_eq!(
        second.header("last-modified"),
        first.header("last-modified")
    );
    let max_age: u64 = second.header("cache-control").unwrap()["public, max-age=".len()..]
        .parse()
        .unwrap();
    assert!(max_age <= 600, "{max_age}");

    // If-None-Match naming the entry: 304 without the body.
    let not_modified = http
        .get("/products/42", &[("if-none-match", &etag)])
        .await
        .unwrap();
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_cache(&not_modified, "HIT");
    let other_tag = http
        .get("/products/42", &[("if-none-match", "\"something-else\"")])
        .await
        .unwrap();
    assert_eq!(other_tag.status, 200);
    assert_eq!(other_tag.body, first.body);

    // The skip header: honoured with the token, ignored without it.
    let trusted = http
        .get(
            "/products/42",
            &[("x-skip-redis-cache", "1"), ("x-cache-trust-token", TOKEN)],
        )
        .await
        .unwrap();
    assert_cache(&trusted, "SKIP");
    assert_eq!(trusted.body, first.body);
    assert_eq!(trusted.header("cache-control"), Some("no-cache"));
    let untrusted = http
        .get(
            "/products/42",
            &[
                ("x-skip-redis-cache", "1"),
                ("x-cache-trust-token", "guess"),
            ],
        )
        .await
        .unwrap();
    assert_cache(&untrusted, "HIT");

    // A PUT: the trigger and the listener drop the entry, the next GET
    // computes the new row.
    assert_eq!(entry_keys(&mut redis, &namespace, "product").len(), 1);
    let put = http
        .send(
            Method::PUT,
            "/products/42",
            &[],
            Bytes::from_static(br#"{"name":"Renamed Lamp","price_cents":12345}"#),
        )
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !entry_keys(&mut redis, &namespace, "product").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the product's entry is still there 10 s after the update"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = http.get("/products/42", &[]).await.unwrap();
    assert_cache(&after, "MISS");
    let updated: serde_json::Value = serde_json::from_slice(&after.body).unwrap();
    assert_eq!(updated["name"], "Renamed Lamp");
    assert_eq!(updated["price_cents"], 12345);
    assert_ne!(after.header("etag"), Some(etag.as_str()));

    // Unknown ids are cached too (cache_none).
    let unknown = http.get("/products/99999999", &[]).await.unwrap();
    assert_eq!(unknown.status, 404);
    assert_cache(&unknown, "MISS");
    let unknown = http.get("/products/99999999", &[]).await.unwrap();
    assert_eq!(unknown.status, 404);
    assert_cache(&unknown, "HIT");

    // A search, twice.
    let search = http
        .get("/search?q=lamp+-steel&category=home", &[])
        .await
        .unwrap();
    assert_eq!(search.status, 200, "{}", search.text());
    assert_cache(&search, "MISS");
    let page: serde_json::Value = serde_json::from_slice(&search.body).unwrap();
    assert!(page["total"].as_i64().unwrap() > 0, "{page}");
    for hit in page["hits"].as_array().unwrap() {
        assert_eq!(hit["category"], "home");
    }
    let again = http
        .get("/search?q=lamp+-steel&category=home", &[])
        .await
        .unwrap();
    assert_cache(&again, "HIT");
    assert_eq!(again.body, search.body);

    // product: misses 42, 42 after the update, the unknown id; hits: the
    // second GET, the 304, the other tag, the untrusted skip, the unknown
    // id again; one skip.
    let metrics = http.get("/metrics", &[]).await.unwrap();
    assert_cache(&metrics, "SKIP");
    let text = metrics.text();
    assert_eq!(
        metric(&text, "cached_hits_total", &namespace, "product"),
        Some(5),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cached_misses_total", &namespace, "product"),
        Some(3),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cached_skips_total", &namespace, "product"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cached_hits_total", &namespace, "search"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cached_misses_total", &namespace, "search"),
        Some(1),
        "{text}"
    );

    let page = http.get("/cache", &[]).await.unwrap();
    assert_eq!(page.status, 200);
    let html = page.text();
    // prefix, hit ratio 5/8, then hits, misses, skips, errors, stores.
    let row = html
        .split("<tr>")
        .find(|r| r.starts_with("<td>product</td>"))
        .unwrap_or_else(|| panic!("no product row in {html}"));
    assert!(row.contains("62.5%"), "{row}");
    assert!(
        row.contains("<td>5</td><td>3</td><td>1</td><td>0</td><td>3</td>"),
        "{row}"
    );
    assert!(html.contains("<td>search</td>"), "{html}");
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(!html.contains("<script"));

    // SIGTERM: a graceful stop that writes the stats of the last request.
    let last = http.get("/products/42", &[]).await.unwrap();
    assert_cache(&last, "HIT");
    drop(http);
    let status = Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut service = service;
    let stopping = Instant::now();
    let exit = loop {
        if let Some(exit) = service.child.try_wait().unwrap() {
            break exit;
        }
        // Dropping `service` kills it.
        assert!(
            stopping.elapsed() < Duration::from_secs(60),
            "the service did not stop within a minute of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let hits: u64 = redis::cmd("HGET")
        .arg(format!("{namespace}:product:stats"))
        .arg("hits")
        .query(&mut redis)
        .unwrap();
    assert_eq!(hits, 6);
}
