//! A password given in a Redis URL, in any form, never appears in logs (at
//! any level), error messages and their `source()` chains, or the `Debug`
//! output of `Config`, `ConfigBuilder`, the store and errors. Everything
//! the library prints is captured and searched for a password unique to
//! this run.

mod common;

use std::time::Duration;

use cached_redis::{cached, Config, RedisStore};

fn password() -> String {
    format!("Pw{}x9Secret", std::process::id())
}

/// Display, Debug and every `source()` of `e`.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{e} {e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(" | {s} {s:?}"));
        source = s.source();
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    let pw = password();
    assert!(!text.contains(&pw), "{what} shows the password: {text}");
    // Percent-encoded spellings too (none here need encoding, but a
    // decoded-then-re-encoded echo must not slip through either).
    assert!(!text.to_lowercase().contains(&pw.to_lowercase()), "{what}");
}

/// Every URL form, valid and not, each holding the password.
fn urls(pw: &str) -> Vec<String> {
    let closed = common::free_port();
    vec![
        format!("redis://user:{pw}@127.0.0.1:{closed}/0"),
        format!("redis://{pw}@127.0.0.1:{closed}/0"),
        format!("redis://:{pw}@127.0.0.1:{closed}"),
        format!("rediss://user:{pw}@127.0.0.1:{closed}/0"),
        format!("redis+cluster://user:{pw}@127.0.0.1:{closed},127.0.0.1:{closed}"),
        format!("rediss+cluster://user:{pw}@127.0.0.1:{closed}"),
        format!("redis+sentinel://user:{pw}@127.0.0.1:{closed}/mymaster/0"),
        format!("rediss+sentinel://user:{pw}@127.0.0.1:{closed}/mymaster"),
        format!("redis+unix:///tmp/none.sock?db=0&pass={pw}"),
        // Invalid ones.
        format!("redis://user:{pw}@127.0.0.1:notaport/0"),
        format!("redis://user:{pw}@a:1,b:2/0"),
        format!("redis+cluster://user:{pw}@127.0.0.1:1/3"),
        format!("redis+sentinel://user:{pw}@127.0.0.1:1"),
        format!("http://user:{pw}@127.0.0.1:1"),
        format!("redis://user:{pw}@127.0.0.1:1/0?protocol=resp3"),
        format!("user:{pw}@127.0.0.1:1"),
        format!("redis://user:{pw}/with/slash@127.0.0.1:1/0"),
    ]
}

#[cached(ttl = 60, prefix = "secrets")]
async fn answer(x: u64) -> u64 {
    x + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_logs_errors_or_debug_output() {
    let logs = common::logs::logs();
    let pw = password();
    let mut shown = String::new();

    // An invalid environment: the first cached call logs why caching is
    // off (at error level) and still runs the function.
    std::env::set_var(
        "CACHED_REDIS_URL",
        format!("redis://user:{pw}@127.0.0.1:notaport/0"),
    );
    assert_eq!(answer(1).await, 2);
    let err = Config::from_env().unwrap_err();
    shown.push_str(&error_text(&err));
    std::env::remove_var("CACHED_REDIS_URL");
    assert!(
        logs.0.lock().unwrap().contains("configuration invalid"),
        "the invalid environment was logged"
    );

    for url in urls(&pw) {
        let builder = Config::builder()
            .redis_url(&url)
            .timeout(Duration::from_millis(100))
            .connect_timeout(Duration::from_millis(100));
        shown.push_str(&format!("{builder:?}"));
        let builder = if url.starts_with("rediss") {
            builder.tls_ca_file("/nonexistent/ca.pem")
        } else {
            builder
        };
        match builder.clone().build() {
            Err(e) => shown.push_str(&error_text(&e)),
            Ok(config) => {
                shown.push_str(&format!("{config:?}"));
                match RedisStore::open(&config) {
                    Err(e) => shown.push_str(&error_text(&e)),
                    Ok(store) => {
                        shown.push_str(&format!("{store:?}"));
                        // Nothing listens: connection errors of every kind.
                        let e = store
                            .query::<String>(&redis::cmd("PING"))
                            .await
                            .unwrap_err();
                        shown.push_str(&error_text(&e));
                        let e = cached_redis::Error::from(e);
                        shown.push_str(&error_text(&e));
                    }
                }
            }
        }
    }

    // A live server refusing the credentials.
    let url = common::redis_url().replacen("redis://", &format!("redis://nobody:{pw}@"), 1);
    let config = Config::builder().redis_url(&url).build().unwrap();
    shown.push_str(&format!("{config:?}"));
    let store = RedisStore::open(&config).unwrap();
    let e = store
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    shown.push_str(&error_text(&e));

    // The checks would catch a leak: the password is in the URLs given.
    assert!(urls(&pw).iter().all(|u| u.contains(&pw)));
    assert_clean("errors and Debug output", &shown);
    assert_clean("tracing output", &logs.0.lock().unwrap());
    assert!(shown.contains("***"), "URLs are shown redacted: {shown}");
}
