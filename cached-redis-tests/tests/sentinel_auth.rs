//! Sentinels that ask for a password of their own (`requirepass`, or an
//! ACL user of theirs), apart from the master's: the URL's credentials go
//! to the master, `sentinel_password` (and `sentinel_username`) to the
//! sentinels, on every path that asks them something: the async and
//! blocking connections, the invalidation channel, and the watch that
//! follows their master switches. The test owns its topology (a master
//! with a password and a sentinel with another, on free ports).

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::{cached, Cache, Config, RedisStore};
use common::sentinel::Sentinel;
use common::RedisServer;

/// Bounds for a loaded machine, not speed claims.
const WITHIN: Duration = Duration::from_secs(15);

const MASTER_PASSWORD: &str = "master-pw";
const SENTINEL_PASSWORD: &str = "sentinel-pw";
/// An ACL user of the sentinel's, whose password is not the default
/// user's: logging in with it proves the user name is sent. Its rights
/// are the README's for a sentinel user ([`readme_rights`]).
const SENTINEL_USER: (&str, &str) = ("watcher", "watcher-pw");
/// A user with the same commands but no channel: it finds the master,
/// and cannot follow its switches.
const NO_CHANNEL_USER: (&str, &str) = ("lookup", "lookup-pw");

/// The rights the README's `ACL SETUSER` line for a sentinel user grants
/// (what follows its password).
fn readme_rights() -> String {
    let readme = include_str!("../../README.md");
    let line = readme
        .lines()
        .find(|l| l.trim_start().starts_with("ACL SETUSER cache-sentinel "))
        .expect("the README gives the sentinel user's ACL SETUSER line");
    let words: Vec<&str> = line.split_whitespace().collect();
    let after_password = words
        .iter()
        .position(|w| w.starts_with('>'))
        .expect("the line sets a password")
        + 1;
    words[after_password..].join(" ")
}

static RUNS: AtomicU64 = AtomicU64::new(0);
static SYNC_RUNS: AtomicU64 = AtomicU64::new(0);
static SOURCE: AtomicU64 = AtomicU64::new(1);

#[cached(ttl = 600, prefix = "sentinel_auth")]
async fn value(id: u64) -> u64 {
    RUNS.fetch_add(1, SeqCst);
    id * 10
}

#[cached(ttl = 600, prefix = "sentinel_auth_sync")]
fn sync_value(id: u64) -> u64 {
    SYNC_RUNS.fetch_add(1, SeqCst);
    id * 100
}

/// The `local` level goes live only once its invalidation channel is
/// subscribed on the master the sentinels name.
#[cached(local = 10, ttl = 600, prefix = "sentinel_auth_local")]
async fn local_value(id: u64) -> u64 {
    SOURCE.load(SeqCst) * 1000 + id
}

fn cache(sentinel: &Sentinel, ns: &str, login: Option<(Option<&str>, &str)>) -> Cache {
    let url = format!(
        "redis+sentinel://:{MASTER_PASSWORD}@127.0.0.1:{}/mymaster",
        sentinel.port
    );
    let mut config = Config::builder()
        .redis_url(url)
        .namespace(ns)
        // Generous: each timeout would count an error on a loaded machine.
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(5));
    if let Some((user, password)) = login {
        if let Some(user) = user {
            config = config.sentinel_username(user);
        }
        config = config.sentinel_password(password);
    }
    Cache::new(config.build().unwrap()).unwrap()
}

/// Two calls of the async and of the blocking function through `cache`:
/// how many times each body ran.
async fn run_twice(cache: &Cache, id: u64) -> (u64, u64) {
    let (runs, sync_runs) = (RUNS.load(SeqCst), SYNC_RUNS.load(SeqCst));
    for _ in 0..2 {
        assert_eq!(cache.scope(value(id)).await, id * 10);
        let c = cache.clone();
        let answer = tokio::task::spawn_blocking(move || c.in_scope(|| sync_value(id)))
            .await
            .unwrap();
        assert_eq!(answer, id * 100);
    }
    (RUNS.load(SeqCst) - runs, SYNC_RUNS.load(SeqCst) - sync_runs)
}

/// Whether a connection logged in to the sentinel as `user` is
/// subscribed there: the watch that follows its master switches (nothing
/// else subscribes on a sentinel).
fn watched_as(sentinel: &Sentinel, user: &str) -> bool {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut sentinel.conn().unwrap())
        .unwrap();
    clients.lines().any(|client| {
        let fields: Vec<&str> = client.split(' ').collect();
        fields.contains(&"sub=1") && fields.contains(&format!("user={user}").as_str())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_a_password_of_their_own() {
    let logs = common::logs::logs();
    let master_server = RedisServer::start();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(MASTER_PASSWORD)
        .query::<()>(&mut master_server.connect())
        .unwrap();
    let (user, user_password) = SENTINEL_USER;
    let (lookup, lookup_password) = NO_CHANNEL_USER;
    let rights = readme_rights();
    assert!(rights.contains("&+switch-master "), "{rights}");
    let sentinel = Sentinel::start_protected(
        master_server.port,
        &format!(
            "sentinel auth-pass mymaster {MASTER_PASSWORD}\n\
             user {user} on >{user_password} {rights}\n\
             user {lookup} on >{lookup_password} {}\n",
            rights.replace("&+switch-master ", "")
        ),
        SENTINEL_PASSWORD,
    );
    let master = RedisStore::open(
        &Config::builder()
            .redis_url(format!(
                "redis://:{MASTER_PASSWORD}@127.0.0.1:{}/0",
                master_server.port
            ))
            .build()
            .unwrap(),
    )
    .unwrap();
    let exists = |key: String| {
        let master = &master;
        async move {
            let n: i64 = master.query(redis::cmd("EXISTS").arg(key)).await.unwrap();
            n == 1
        }
    };

    // Without the sentinels' password: nothing is cached, every call
    // answers, and the sentinels' refusal is what the log says.
    let ns = common::namespace("sentinel_auth_none");
    let refused = cache(&sentinel, &ns, None);
    assert_eq!(run_twice(&refused, 1).await, (2, 2), "each call runs");
    let key = refused.in_scope(|| value_cache_key(1)).unwrap();
    assert!(!exists(key).await);
    common::eventually("the refusal told at warn", || {
        logs.0.lock().unwrap().lines().any(|line| {
            line.starts_with("WARN") && line.contains("a sentinel refused this process's login")
        })
    })
    .await;
    drop(refused);

    // With it: entries on the master, hits, the switches followed.
    let ns = common::namespace("sentinel_auth_password");
    let cached = cache(&sentinel, &ns, Some((None, SENTINEL_PASSWORD)));
    assert_eq!(run_twice(&cached, 2).await, (1, 1), "the second calls hit");
    let key = cached.in_scope(|| value_cache_key(2)).unwrap();
    assert!(exists(key).await, "stored on the master");
    common::eventually("the switches followed", || watched_as(&sentinel, "default")).await;
    let key = cached.in_scope(|| local_value_cache_key(1)).unwrap();
    let call = || cached.scope(local_value(1));
    assert!(
        common::level_serves(&master, &key, &SOURCE, call, true, WITHIN).await,
        "the level never went live"
    );
    drop(cached);

    // As the sentinels' ACL user: the same.
    let ns = common::namespace("sentinel_auth_user");
    let as_user = cache(&sentinel, &ns, Some((Some(user), user_password)));
    assert_eq!(run_twice(&as_user, 3).await, (1, 1), "the second calls hit");
    common::eventually("the switches followed as the user", || {
        watched_as(&sentinel, user)
    })
    .await;
    drop(as_user);

    // A user refused the channel: the master is found, and the refusal
    // of the switch watch is told.
    let ns = common::namespace("sentinel_auth_lookup");
    let lookup_only = cache(&sentinel, &ns, Some((Some(lookup), lookup_password)));
    assert_eq!(
        run_twice(&lookup_only, 4).await,
        (1, 1),
        "the second calls hit"
    );
    common::eventually("the refused command told at warn", || {
        logs.0
            .lock()
            .unwrap()
            .lines()
            .any(|line| line.starts_with("WARN") && line.contains("a sentinel refused a command"))
    })
    .await;

    // No password in what was logged, at any level.
    let logs = logs.0.lock().unwrap();
    for secret in [
        MASTER_PASSWORD,
        SENTINEL_PASSWORD,
        user_password,
        lookup_password,
    ] {
        assert!(!logs.contains(secret), "{secret} logged");
    }
}
