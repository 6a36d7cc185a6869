//! Invalidation from PostgreSQL `NOTIFY` (feature `postgres`), against a
//! real PostgreSQL (`CACHED_REDIS_TEST_PG`, set by `scripts/test.sh`) and a
//! real Redis.
//!
//! Every test works in a schema of its own (`cr_test_<pid>_<test>`), which
//! holds its table and its copy of the trigger function from
//! `sql/cached_redis_notify.sql`, and is dropped at the end; its listener
//! uses a channel and an `application_name` of its own.
#![cfg(feature = "postgres")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::cached;
use cached_redis::postgres::tokio_postgres::{self, Client, NoTls};
use cached_redis::postgres::{listen, ListenerHandle};

/// The trigger function under test.
const TRIGGER_SQL: &str = include_str!("../../sql/cached_redis_notify.sql");

/// How long an invalidation may take after the commit before the test
/// counts it lost: a bound for a loaded machine, not a speed claim (the
/// delay each took is printed).
const WITHIN: Duration = Duration::from_secs(10);

fn setup() {
    common::init_once("postgres_notify");
}

/// The PostgreSQL under test. A run without one fails rather than passing
/// untested: `scripts/test.sh` starts a throwaway cluster and sets it.
fn pg_config() -> Option<String> {
    match std::env::var("CACHED_REDIS_TEST_PG") {
        Ok(config) if !config.is_empty() => Some(config),
        _ => panic!(
            "CACHED_REDIS_TEST_PG is not set: run the tests with scripts/test.sh, \
             which starts a throwaway PostgreSQL and sets it"
        ),
    }
}

async fn connect(config: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(config, NoTls)
        .await
        .expect("PostgreSQL under test reachable");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// One test's schema, table `<schema>.users (id bigint, name text)` with
/// the trigger, channel and listener name. Drops the schema on drop.
struct Fixture {
    config: String,
    client: Client,
    schema: String,
    table: String,
    channel: String,
    application_name: String,
}

impl Fixture {
    /// Creates the schema, the trigger function in it, the table with
    /// `rows`, then the trigger for `events` sending `prefix` and the `id`
    /// column. The rows are inserted before the trigger exists: they send
    /// nothing.
    async fn new(test: &str, prefix: &str, events: &str, rows: &[(i64, &str)]) -> Fixture {
        let config = pg_config().expect("checked by the caller");
        let pid = std::process::id();
        let schema = format!("cr_test_{pid}_{test}");
        let fixture = Fixture {
            client: connect(&config).await,
            table: format!("{schema}.users"),
            channel: format!("cr_{pid}_{test}"),
            application_name: format!("cr_test_{pid}_{test}"),
            schema,
            config,
        };
        let (schema, table) = (&fixture.schema, &fixture.table);
        fixture
            .client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE;
                 CREATE SCHEMA {schema};
                 SET search_path TO {schema};"
            ))
            .await
            .unwrap();
        // Installed into the first schema of the search path: ours.
        fixture.client.batch_execute(TRIGGER_SQL).await.unwrap();
        fixture
            .client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL)"
            ))
            .await
            .unwrap();
        for (id, name) in rows {
            fixture
                .client
                .execute(
                    &format!("INSERT INTO {table} (id, name) VALUES ($1, $2)"),
                    &[id, name],
                )
                .await
                .unwrap();
        }
        fixture
            .client
            .batch_execute(&format!(
                "CREATE TRIGGER users_cache AFTER {events} ON {table} FOR EACH ROW
                 EXECUTE FUNCTION {schema}.cached_redis_notify('{}', '{prefix}', 'id')",
                fixture.channel
            ))
            .await
            .unwrap();
        fixture
    }

    /// A listener on this fixture's channel, listening when returned.
    async fn listen(&self) -> ListenerHandle {
        Self::listening(self.start_listener()).await
    }

    /// A listener on this fixture's channel started inside `cache`'s scope
    /// (it invalidates in that cache), listening when returned.
    async fn listen_in(&self, cache: &cached_redis::Cache) -> ListenerHandle {
        Self::listening(cache.in_scope(|| self.start_listener())).await
    }

    fn start_listener(&self) -> ListenerHandle {
        let config = format!("{} application_name={}", self.config, self.application_name);
        listen(&config, &self.channel).unwrap()
    }

    /// `listener`, once it listens (its first session).
    async fn listening(listener: ListenerHandle) -> ListenerHandle {
        let started = Instant::now();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), listener.wait_listening())
                .await
                .expect("listening within 10 s")
        );
        eprintln!("listening after {:?}", started.elapsed());
        assert_eq!(listener.sessions(), 1);
        listener
    }

    async fn exec(&self, sql: &str) -> u64 {
        self.client.execute(sql, &[]).await.unwrap()
    }

    async fn notify(&self, payload: &str) {
        self.client
            .execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload])
            .await
            .unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Async cleanup from a destructor: a thread with a runtime of its
        // own, so that it also runs when the test panicked.
        let (config, schema) = (self.config.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let client = connect(&config).await;
                    client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await
                        .unwrap();
                });
        })
        .join();
    }
}

fn exists(conn: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(conn)
        .expect("redis EXISTS")
        == 1
}

/// Polls until `key` is gone; how long that took, measured from `since`.
fn gone_after(conn: &mut redis::Connection, key: &str, since: Instant) -> Option<Duration> {
    loop {
        if !exists(conn, key) {
            return Some(since.elapsed());
        }
        if since.elapsed() > WITHIN {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs the statement, then asserts that every key is gone within
/// [`WITHIN`]; prints the delay.
async fn assert_invalidated(what: &str, keys: &[String], trigger: impl std::future::Future) {
    let mut conn = common::raw();
    for key in keys {
        assert!(
            exists(&mut conn, key),
            "{what}: {key} not cached beforehand"
        );
    }
    trigger.await;
    let since = Instant::now();
    // Polled on a blocking thread: the runtime's workers stay free for
    // whatever the test runs on them.
    let keys = keys.to_vec();
    let delays = tokio::task::spawn_blocking(move || {
        keys.into_iter()
            .map(|key| (gone_after(&mut conn, &key, since), key))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (delay, key) in delays {
        match delay {
            Some(delay) => eprintln!("{what}: {key} gone {delay:?} after the commit"),
            None => panic!("{what}: {key} still cached {WITHIN:?} after the commit"),
        }
    }
}

static USER_NAME_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "pgn_user", skip = "client, table")]
async fn user_name(client: &Client, table: &str, id: i64) -> Option<String> {
    USER_NAME_CALLS.fetch_add(1, SeqCst);
    read_name(client, table, id).await
}

async fn read_name(client: &Client, table: &str, id: i64) -> Option<String> {
    client
        .query_opt(&format!("SELECT name FROM {table} WHERE id = $1"), &[&id])
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test]
async fn update_and_delete_drop_the_entry_of_the_row() {
    let Some(_) = pg_config() else { return };
    setup();
    let f = Fixture::new(
        "row",
        "pgn_user",
        "UPDATE OR DELETE",
        &[(1, "alice"), (2, "bob")],
    )
    .await;
    let _listener = f.listen().await;
    let (c, t) = (&f.client, f.table.as_str());

    // Miss, then hit.
    assert_eq!(user_name(c, t, 1).await.as_deref(), Some("alice"));
    assert_eq!(user_name(c, t, 1).await.as_deref(), Some("alice"));
    assert_eq!(user_name(c, t, 2).await.as_deref(), Some("bob"));
    assert_eq!(USER_NAME_CALLS.load(SeqCst), 2, "the second call is a hit");
    let (key1, key2) = (
        user_name_cache_key(1).unwrap(),
        user_name_cache_key(2).unwrap(),
    );

    assert_invalidated(
        "UPDATE",
        std::slice::from_ref(&key1),
        f.exec(&format!("UPDATE {t} SET name = 'alicia' WHERE id = 1")),
    )
    .await;
    // Only that row's entry: the arguments were mapped to its key.
    assert!(
        exists(&mut common::raw(), &key2),
        "the other row's entry was dropped"
    );
    assert_eq!(user_name(c, t, 1).await.as_deref(), Some("alicia"));
    assert_eq!(USER_NAME_CALLS.load(SeqCst), 3);

    assert_invalidated(
        "DELETE",
        std::slice::from_ref(&key1),
        f.exec(&format!("DELETE FROM {t} WHERE id = 1")),
    )
    .await;
    assert_eq!(user_name(c, t, 1).await, None);
    assert!(exists(&mut common::raw(), &key2));

    // A transaction that rolls back notifies nothing: once a later
    // committed change of row 1 has been acted upon (notifications arrive in
    // commit order), row 2's entry is still there.
    f.exec(&format!("INSERT INTO {t} VALUES (1, 'alice')"))
        .await; // INSERT: no event
    assert_eq!(user_name(c, t, 1).await.as_deref(), Some("alice"));
    f.client
        .batch_execute(&format!(
            "BEGIN; UPDATE {t} SET name = 'robert' WHERE id = 2; ROLLBACK;"
        ))
        .await
        .unwrap();
    assert_invalidated(
        "UPDATE after a ROLLBACK",
        std::slice::from_ref(&key1),
        f.exec(&format!("UPDATE {t} SET name = 'alice2' WHERE id = 1")),
    )
    .await;
    assert!(
        exists(&mut common::raw(), &key2),
        "a rolled-back change dropped an entry"
    );
    assert_eq!(user_name(c, t, 2).await.as_deref(), Some("bob"));
}

/// The DAO pattern: the cached function is a method.
struct UserDao<'a> {
    client: &'a Client,
    table: &'a str,
}

impl UserDao<'_> {
    #[cached(prefix = "pgn_dao")]
    async fn name(&self, id: i64) -> Option<String> {
        read_name(self.client, self.table, id).await
    }
}

/// Regression: a method used to count as generic (`Self` is in its key), so
/// every changed row dropped the DAO's whole prefix. Now the row's entry
/// alone goes, as for a free function.
#[tokio::test]
async fn a_dao_method_loses_the_entry_of_the_row_only() {
    let Some(_) = pg_config() else { return };
    setup();
    let f = Fixture::new(
        "dao",
        "pgn_dao",
        "UPDATE OR DELETE",
        &[(1, "ann"), (2, "ben")],
    )
    .await;
    let _listener = f.listen().await;
    let dao = UserDao {
        client: &f.client,
        table: f.table.as_str(),
    };
    assert_eq!(dao.name(1).await.as_deref(), Some("ann"));
    assert_eq!(dao.name(2).await.as_deref(), Some("ben"));
    let (key1, key2) = (
        UserDao::name_cache_key(1).unwrap(),
        UserDao::name_cache_key(2).unwrap(),
    );
    assert_invalidated(
        "UPDATE through a DAO method",
        std::slice::from_ref(&key1),
        f.exec(&format!(
            "UPDATE {} SET name = 'anna' WHERE id = 1",
            f.table
        )),
    )
    .await;
    assert!(
        exists(&mut common::raw(), &key2),
        "the whole prefix was dropped, not the row's entry"
    );
    assert_eq!(dao.name(1).await.as_deref(), Some("anna"));
}

#[cached(prefix = "pgn_maybe", skip = "client, table", cache_none = 60)]
async fn maybe_name(client: &Client, table: &str, id: i64) -> Option<String> {
    read_name(client, table, id).await
}

#[tokio::test]
async fn insert_drops_a_cached_absence_and_a_key_change_both_entries() {
    let Some(_) = pg_config() else { return };
    setup();
    let f = Fixture::new("insert", "pgn_maybe", "INSERT OR UPDATE OR DELETE", &[]).await;
    let _listener = f.listen().await;
    let (c, t) = (&f.client, f.table.as_str());

    assert_eq!(maybe_name(c, t, 3).await, None);
    assert_invalidated(
        "INSERT",
        &[maybe_name_cache_key(3).unwrap()],
        f.exec(&format!("INSERT INTO {t} VALUES (3, 'carol')")),
    )
    .await;
    assert_eq!(maybe_name(c, t, 3).await.as_deref(), Some("carol"));

    // id 3 becomes id 4: the entry of 3 (now absent) and the cached absence
    // of 4 are both stale.
    assert_eq!(maybe_name(c, t, 4).await, None);
    assert_invalidated(
        "UPDATE of the key",
        &[
            maybe_name_cache_key(3).unwrap(),
            maybe_name_cache_key(4).unwrap(),
        ],
        f.exec(&format!("UPDATE {t} SET id = 4 WHERE id = 3")),
    )
    .await;
    assert_eq!(maybe_name(c, t, 3).await, None);
    assert_eq!(maybe_name(c, t, 4).await.as_deref(), Some("carol"));
}

#[cached(prefix = "pgn_all", skip = "client, table")]
async fn all_name(client: &Client, table: &str, id: i64) -> Option<String> {
    read_name(client, table, id).await
}

#[cached(prefix = "pgn_keep", skip = "client, table")]
async fn kept_name(client: &Client, table: &str, id: i64) -> Option<String> {
    read_name(client, table, id).await
}

#[tokio::test]
async fn prefix_payloads_drop_every_entry_of_the_prefix() {
    let Some(_) = pg_config() else { return };
    setup();
    let rows = [(1, "a"), (2, "b"), (3, "c")];
    let f = Fixture::new("prefix", "pgn_all", "UPDATE OR DELETE", &rows).await;
    let listener = f.listen().await;
    let (c, t) = (&f.client, f.table.as_str());
    let keys: Vec<String> = rows
        .iter()
        .map(|(id, _)| all_name_cache_key(*id).unwrap())
        .collect();
    let kept = kept_name_cache_key(1).unwrap();

    for payload in [
        r#"{"prefix":"pgn_all"}"#,
        "pgn_all",
        r#"{"prefix":"pgn_all","args":null}"#,
    ] {
        for (id, _) in rows {
            all_name(c, t, id).await.unwrap();
        }
        kept_name(c, t, 1).await.unwrap();
        assert_invalidated(payload, &keys, f.notify(payload)).await;
        assert!(
            exists(&mut common::raw(), &kept),
            "{payload}: another prefix was dropped"
        );
    }

    // Unreadable payloads are ignored and the listener goes on.
    for (id, _) in rows {
        all_name(c, t, id).await.unwrap();
    }
    for garbage in [
        "{not json",
        r#"{"args":[1]}"#,
        r#"{"prefix":"a:b"}"#,
        "two words",
        "[1]",
        "",
    ] {
        f.notify(garbage).await;
    }
    assert_invalidated(
        "UPDATE after garbage",
        &keys[..1],
        f.exec(&format!("UPDATE {t} SET name = 'z' WHERE id = 1")),
    )
    .await;
    let mut conn = common::raw();
    assert!(keys[1..].iter().all(|k| exists(&mut conn, k)));
    assert_eq!(
        listener.sessions(),
        1,
        "garbage must not cost a reconnection"
    );
}

#[tokio::test]
async fn arguments_of_an_unknown_prefix_drop_the_whole_prefix() {
    let Some(_) = pg_config() else { return };
    setup();
    let f = Fixture::new("unknown", "pgn_unknown", "UPDATE", &[]).await;
    let _listener = f.listen().await;
    // Entries of a function this process never called or keyed: written by
    // "another service". The stats hash is not an entry and stays.
    let ns = common::namespace("postgres_notify");
    let entries = [
        format!("{ns}:pgn_unknown:AAAAAAAAAAAAAAAAAAAAAA"),
        format!("{ns}:pgn_unknown:BBBBBBBBBBBBBBBBBBBBBB"),
    ];
    let stats = format!("{ns}:pgn_unknown:stats");
    let mut conn = common::raw();
    for key in entries.iter().chain([&stats]) {
        redis::cmd("SET")
            .arg(key)
            .arg("x")
            .query::<()>(&mut conn)
            .unwrap();
    }
    assert_invalidated(
        "args of an unregistered prefix",
        &entries,
        f.notify(r#"{"prefix":"pgn_unknown","args":[7]}"#),
    )
    .await;
    assert!(exists(&mut conn, &stats), "the stats hash was dropped");
}

#[cached(prefix = "pgn_reconnect", skip = "client, table")]
async fn reconnect_name(client: &Client, table: &str, id: i64) -> Option<String> {
    read_name(client, table, id).await
}

#[tokio::test]
async fn the_listener_reconnects_after_its_backend_is_terminated() {
    let Some(_) = pg_config() else { return };
    setup();
    let f = Fixture::new(
        "reconnect",
        "pgn_reconnect",
        "UPDATE OR DELETE",
        &[(1, "x")],
    )
    .await;
    let listener = f.listen().await;
    let (c, t) = (&f.client, f.table.as_str());

    for round in 1..=2u64 {
        // Our listener only: its application_name is unique to this test.
        let killed: i64 = c
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 AND query LIKE 'LISTEN%'",
                &[&f.application_name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(killed, 1, "exactly our listener's backend");
        let since = Instant::now();
        assert!(
            tokio::time::timeout(Duration::from_secs(15), listener.wait_sessions(round + 1))
                .await
                .expect("listening again within 15 s")
        );
        eprintln!(
            "round {round}: listening again {:?} after the termination",
            since.elapsed()
        );

        reconnect_name(c, t, 1).await.unwrap();
        assert_invalidated(
            "UPDATE after a reconnection",
            &[reconnect_name_cache_key(1).unwrap()],
            f.exec(&format!("UPDATE {t} SET name = 'x{round}' WHERE id = 1")),
        )
        .await;
        assert_eq!(
            reconnect_name(c, t, 1).await.as_deref(),
            Some(format!("x{round}").as_str())
        );
    }

    // Stopped: the backend goes away.
    listener.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&f.application_name],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped listener's session stays"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sessions ended as soon as they listen (a pooler, a job terminating
/// idle sessions) do not make the listener reconnect in a tight loop: the
/// pause goes on growing until a session lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_ended_at_once_do_not_make_the_listener_reconnect_in_a_loop() {
    let Some(_) = pg_config() else { return };
    setup();
    let f = Fixture::new("churn", "pgn_churn", "UPDATE", &[(1, "x")]).await;
    let listener = f.listen().await;
    let killer = connect(&f.config).await;
    let churn = Duration::from_secs(5);
    let started = Instant::now();
    // Each session is ended once it listens (not while it connects, which
    // would not count as a session that worked, with or without the rule).
    while started.elapsed() < churn {
        let seen = listener.sessions();
        killer
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&f.application_name],
            )
            .await
            .unwrap();
        let left = churn.saturating_sub(started.elapsed());
        let _ = tokio::time::timeout(left, listener.wait_sessions(seen + 1)).await;
    }
    let sessions = listener.sessions() - 1;
    eprintln!("{sessions} sessions in {churn:?} of sessions ended at once");
    // 100 ms doubling: about 6 in 5 s; without the rule, one every ~150 ms.
    assert!(
        sessions <= 10,
        "{sessions} sessions in {churn:?}: the listener reconnects in a loop"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(15), listener.wait_listening())
            .await
            .expect("listening again within 15 s once sessions are left alone")
    );
}

/// A plain `LISTEN` session of the test's own: what the trigger sends,
/// payload by payload.
async fn raw_listener(
    config: &str,
    channel: &str,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(config, NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .unwrap();
    (client, rx)
}

#[tokio::test]
async fn the_trigger_sends_the_documented_payloads() {
    let Some(config) = pg_config() else { return };
    let f = Fixture::new("payloads", "pgn_unused", "DELETE", &[]).await;
    let (schema, channel) = (&f.schema, &f.channel);
    f.client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.items (id bigint PRIMARY KEY, tenant text, name text);
             CREATE TRIGGER items_rows AFTER UPDATE OR DELETE ON {schema}.items FOR EACH ROW
                 EXECUTE FUNCTION {schema}.cached_redis_notify('{channel}', 'item', 'tenant', 'id');
             CREATE TRIGGER items_bad AFTER INSERT ON {schema}.items FOR EACH ROW
                 EXECUTE FUNCTION {schema}.cached_redis_notify('{channel}', 'item_bad', 'nope');
             CREATE TRIGGER items_truncate AFTER TRUNCATE ON {schema}.items FOR EACH STATEMENT
                 EXECUTE FUNCTION {schema}.cached_redis_notify('{channel}', 'item_all', 'id');"
        ))
        .await
        .unwrap();
    let (_session, mut payloads) = raw_listener(&config, channel).await;
    let items = format!("{schema}.items");
    let mut expect = async |sql: String, want: &[&str]| {
        f.client.batch_execute(&sql).await.unwrap();
        for want in want {
            let got = tokio::time::timeout(Duration::from_secs(5), payloads.recv())
                .await
                .unwrap_or_else(|_| panic!("{sql}: no notification, expected {want}"))
                .unwrap();
            assert_eq!(&got, want, "{sql}");
        }
    };

    // A column the table does not have: the whole prefix (and a WARNING).
    expect(
        format!("INSERT INTO {items} VALUES (1, 't1', 'a')"),
        &[r#"{"prefix":"item_bad"}"#],
    )
    .await;
    // Key columns in trigger order, as JSON.
    expect(
        format!("UPDATE {items} SET name = 'b' WHERE id = 1"),
        &[r#"{"prefix":"item","args":["t1",1]}"#],
    )
    .await;
    // A key column changes: the old key and the new one.
    expect(
        format!("UPDATE {items} SET id = 2 WHERE id = 1"),
        &[
            r#"{"prefix":"item","args":["t1",1]}"#,
            r#"{"prefix":"item","args":["t1",2]}"#,
        ],
    )
    .await;
    // A NULL key column is JSON null (an `Option` argument's `None`);
    // quotes in values are escaped. (Both statements are one implicit
    // transaction, so the twice-sent [null,2] arrives once.)
    expect(
        format!("UPDATE {items} SET tenant = NULL WHERE id = 2; UPDATE {items} SET tenant = 'say \"hi\"' WHERE id = 2"),
        &[
            r#"{"prefix":"item","args":["t1",2]}"#,
            r#"{"prefix":"item","args":[null,2]}"#,
            r#"{"prefix":"item","args":["say \"hi\"",2]}"#,
        ],
    )
    .await;
    // Too long for pg_notify (8000 bytes): the whole prefix instead.
    expect(
        format!(
            "UPDATE {items} SET tenant = '{}' WHERE id = 2",
            "x".repeat(9000)
        ),
        &[
            r#"{"prefix":"item","args":["say \"hi\"",2]}"#,
            r#"{"prefix":"item"}"#,
        ],
    )
    .await;
    // One transaction, the same row twice: delivered once.
    expect(
        format!(
            "BEGIN; UPDATE {items} SET tenant = 't3' WHERE id = 2; UPDATE {items} SET name = 'c' WHERE id = 2;
             UPDATE {items} SET name = 'd' WHERE id = 2; COMMIT;"
        ),
        &[r#"{"prefix":"item"}"#, r#"{"prefix":"item","args":["t3",2]}"#],
    )
    .await;
    expect(
        format!("DELETE FROM {items} WHERE id = 2"),
        &[r#"{"prefix":"item","args":["t3",2]}"#],
    )
    .await;
    // A statement trigger: the whole prefix.
    expect(format!("TRUNCATE {items}"), &[r#"{"prefix":"item_all"}"#]).await;

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(payloads.try_recv().ok(), None, "an unexpected notification");
}

/// A TCP proxy in front of the PostgreSQL under test, to cut the network:
/// `down` closes every connection through it and refuses new ones, `up`
/// accepts again on the same port.
struct Proxy {
    port: u16,
    target: String,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

/// What the proxy does with a new connection.
const FORWARD: u8 = 0;
/// Accepts it and never answers (a hung server, a proxy whose backend is
/// gone).
const SILENT: u8 = 1;
/// Forwards the startup and login, then nothing from the client's first
/// query on (the listener's `LISTEN`).
const SILENT_AFTER_LOGIN: u8 = 2;

impl Proxy {
    async fn start(target: String) -> Proxy {
        Self::start_in(target, FORWARD).await
    }

    async fn start_in(target: String, mode: u8) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(mode));
        let serving = tokio::spawn(Self::serve(listener, target.clone(), mode.clone()));
        Proxy {
            port,
            target,
            mode,
            serving: Some(serving),
        }
    }

    /// How connections accepted from now on are served.
    fn set_mode(&self, mode: u8) {
        self.mode.store(mode, SeqCst);
    }

    async fn serve(
        listener: tokio::net::TcpListener,
        target: String,
        mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Dropped (when the task is aborted): every connection is aborted.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let target = target.clone();
            let mode = mode.load(SeqCst);
            connections.spawn(async move {
                if mode == SILENT {
                    let mut buf = [0u8; 1024];
                    while matches!(inbound.read(&mut buf).await, Ok(n) if n > 0) {}
                    return;
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                // As PostgreSQL and its clients do: without it, Nagle's
                // algorithm holds small messages back for ~40 ms.
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                if mode == FORWARD {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
                // Client to server until the first simple query ('Q'), then
                // silence both ways; the connections stay open.
                let (mut from_server, mut to_client) = outbound.into_split();
                let (mut from_client, mut to_server) = inbound.into_split();
                let (stalled_tx, stalled) = tokio::sync::watch::channel(false);
                let replies = async move {
                    let mut buf = vec![0u8; 8192];
                    while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                        if !*stalled.borrow() && to_client.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                let requests = async move {
                    let mut buf = vec![0u8; 8192];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        if buf[0] == b'Q' {
                            let _ = stalled_tx.send(true);
                        }
                        if !*stalled_tx.borrow() && to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                tokio::join!(replies, requests);
            });
        }
    }

    fn down(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy's port is free again");
        self.serving = Some(tokio::spawn(Self::serve(
            listener,
            self.target.clone(),
            self.mode.clone(),
        )));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

#[cached(prefix = "pgn_network", skip = "client, table")]
async fn network_name(client: &Client, table: &str, id: i64) -> Option<String> {
    read_name(client, table, id).await
}

// Several workers: the proxy must forward while the test polls Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_survives_a_network_outage_and_misses_what_happened_during_it() {
    let Some(config) = pg_config() else { return };
    setup();
    let f = Fixture::new("network", "pgn_network", "UPDATE OR DELETE", &[(1, "a")]).await;
    let (c, t) = (&f.client, f.table.as_str());
    let Some((target, pg)) = tcp_target(&config) else {
        eprintln!("skipped: CACHED_REDIS_TEST_PG is not a TCP address");
        return;
    };
    let mut proxy = Proxy::start(target).await;
    let listener = listen(&through(&proxy, &pg, &f.application_name), &f.channel).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), listener.wait_listening())
            .await
            .expect("listening within 10 s")
    );
    let key = network_name_cache_key(1).unwrap();
    network_name(c, t, 1).await.unwrap();

    // The network goes: the listener notices and keeps retrying, refused.
    proxy.down();
    let deadline = Instant::now() + Duration::from_secs(5);
    while listener.is_listening() {
        assert!(
            Instant::now() < deadline,
            "the cut connection went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A change meanwhile is not heard of (documented: PostgreSQL keeps no
    // backlog), so the entry stays.
    f.exec(&format!("UPDATE {t} SET name = 'b' WHERE id = 1"))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        exists(&mut common::raw(), &key),
        "entry dropped without a connection?"
    );
    assert_eq!(listener.sessions(), 1);

    // The network comes back: within the backoff (at most 5 s) it listens
    // again, and changes are acted upon again.
    proxy.up().await;
    let since = Instant::now();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), listener.wait_sessions(2))
            .await
            .expect("listening again within 10 s")
    );
    eprintln!(
        "listening again {:?} after the network came back",
        since.elapsed()
    );
    assert_eq!(
        network_name(c, t, 1).await.as_deref(),
        Some("a"),
        "the stale entry"
    );
    assert_invalidated(
        "UPDATE after the outage",
        std::slice::from_ref(&key),
        f.exec(&format!("UPDATE {t} SET name = 'c' WHERE id = 1")),
    )
    .await;
    assert_eq!(network_name(c, t, 1).await.as_deref(), Some("c"));
}

/// The PostgreSQL under test as `host:port`, and its config; `None` when it
/// is not reached over TCP.
fn tcp_target(config: &str) -> Option<(String, tokio_postgres::Config)> {
    let pg: tokio_postgres::Config = config.parse().unwrap();
    match (&pg.get_hosts()[0], pg.get_ports().first()) {
        (tokio_postgres::config::Host::Tcp(host), port) => {
            Some((format!("{host}:{}", port.copied().unwrap_or(5432)), pg))
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// A listener's connection string to the PostgreSQL under test (`pg`)
/// through `proxy`.
fn through(proxy: &Proxy, pg: &tokio_postgres::Config, application_name: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={} dbname={} application_name={application_name}",
        proxy.port,
        pg.get_user().unwrap_or("postgres"),
        pg.get_dbname().unwrap_or("postgres"),
    )
}

#[cached(prefix = "pgn_silent", skip = "client, table")]
async fn silent_name(client: &Client, table: &str, id: i64) -> Option<String> {
    read_name(client, table, id).await
}

/// A server that accepts the connection and then says nothing, at login
/// or at `LISTEN`: the attempt is given up and retried, so the listener
/// listens once the server answers again (it used to wait for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_says_nothing_is_retried() {
    let Some(config) = pg_config() else { return };
    setup();
    let f = Fixture::new("silent", "pgn_silent", "UPDATE OR DELETE", &[(1, "a")]).await;
    let (c, t) = (&f.client, f.table.as_str());
    let Some((target, pg)) = tcp_target(&config) else {
        eprintln!("skipped: CACHED_REDIS_TEST_PG is not a TCP address");
        return;
    };
    for (mode, what) in [(SILENT, "at login"), (SILENT_AFTER_LOGIN, "at LISTEN")] {
        let proxy = Proxy::start_in(target.clone(), mode).await;
        let config = through(&proxy, &pg, &f.application_name) + " connect_timeout=2";
        let listener = listen(&config, &f.channel).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!listener.is_listening());
        proxy.set_mode(FORWARD);
        let since = Instant::now();
        // Connecting gets `connect_timeout` + 10 s, `LISTEN` 10 s, then
        // the first retry comes 100 ms later.
        let listening = tokio::time::timeout(Duration::from_secs(25), listener.wait_listening())
            .await
            .is_ok();
        assert!(
            listening,
            "silent {what}: not listening 25 s after the server answered again"
        );
        eprintln!(
            "silent {what}: listening {:?} after the server answered again",
            since.elapsed()
        );
        let key = silent_name_cache_key(1).unwrap();
        silent_name(c, t, 1).await.unwrap();
        assert_invalidated(
            &format!("UPDATE after a server silent {what}"),
            std::slice::from_ref(&key),
            f.exec(&format!("UPDATE {t} SET name = '{}' WHERE id = 1", mode)),
        )
        .await;
        listener.stop();
    }
}

#[test]
fn invalid_settings_are_config_errors() {
    assert!(matches!(
        listen("host=127.0.0.1 port=notaport", "c"),
        Err(cached_redis::Error::Config(_))
    ));
    assert!(matches!(
        listen("host=127.0.0.1", &"c".repeat(64)),
        Err(cached_redis::Error::Config(_))
    ));
}

static SCOPED_NAME_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "pgn_scoped", skip = "client, table")]
async fn scoped_name(client: &Client, table: &str, id: i64) -> Option<String> {
    SCOPED_NAME_CALLS.fetch_add(1, SeqCst);
    read_name(client, table, id).await
}

/// A listener started inside a `Cache` scope invalidates in that cache,
/// where the scope's calls stored their entries.
#[tokio::test]
async fn a_listener_started_in_a_scope_invalidates_in_that_cache() {
    let Some(_) = pg_config() else { return };
    setup();
    let f = Fixture::new("scoped", "pgn_scoped", "UPDATE", &[(1, "alice")]).await;
    let cache = cached_redis::Cache::new(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(common::namespace("pgn-scope"))
            .build()
            .unwrap(),
    )
    .unwrap();
    let listener = f.listen_in(&cache).await;
    let (c, t) = (&f.client, f.table.as_str());
    let key = cache
        .scope(async {
            assert_eq!(scoped_name(c, t, 1).await.as_deref(), Some("alice"));
            assert_eq!(scoped_name(c, t, 1).await.as_deref(), Some("alice"));
            scoped_name_cache_key(1).unwrap()
        })
        .await;
    assert_eq!(
        SCOPED_NAME_CALLS.load(SeqCst),
        1,
        "the second call is a hit"
    );
    // The entry is in the scope's namespace, not the default cache's.
    assert!(key.starts_with(&format!("{}:", common::namespace("pgn-scope"))));
    assert_invalidated(
        "update in a scope",
        &[key],
        f.exec(&format!("UPDATE {t} SET name = 'alicia' WHERE id = 1")),
    )
    .await;
    let name = cache.scope(scoped_name(c, t, 1)).await;
    assert_eq!(name.as_deref(), Some("alicia"));
    assert_eq!(SCOPED_NAME_CALLS.load(SeqCst), 2);
    drop(listener);
    cache.invalidate_prefix("pgn_scoped").await.unwrap();
}

#[cached(prefix = "pgn_outage", skip = "client, table")]
async fn outage_name(client: &Client, table: &str, id: i64) -> Option<String> {
    read_name(client, table, id).await
}

/// A notification that arrives while Redis refuses the listener (the
/// cache's breaker cooling down after Redis stopped answering) is applied
/// once Redis takes it, however long the cool-down, instead of being
/// dropped after a few tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_refused_by_redis_is_applied_once_redis_takes_it() {
    const COOLDOWN: Duration = Duration::from_secs(6);
    let Some(_) = pg_config() else { return };
    setup();
    let f = Fixture::new("outage", "pgn_outage", "UPDATE", &[(1, "alice")]).await;
    let server = common::RedisServer::start();
    let cache = cached_redis::Cache::new(
        cached_redis::Config::builder()
            .redis_url(server.url())
            .namespace(common::namespace("pgn-outage"))
            .timeout(Duration::from_millis(300))
            .breaker_threshold(1)
            .breaker_cooldown(COOLDOWN)
            .build()
            .unwrap(),
    )
    .unwrap();
    let logs = common::logs::logs();
    let listener = f.listen_in(&cache).await;
    // A second listener, dropped while it owes: what it gives up is said.
    let quitter = f.listen_in(&cache).await;
    let (c, t) = (&f.client, f.table.as_str());
    let key = cache
        .scope(async {
            assert_eq!(outage_name(c, t, 1).await.as_deref(), Some("alice"));
            outage_name_cache_key(1).unwrap()
        })
        .await;
    let mut conn = server.connect();
    assert!(exists(&mut conn, &key), "cached beforehand");

    // Redis stops answering one call, which opens the breaker (threshold
    // 1) for the cool-down; then it answers again, the entry still there.
    {
        let _hung = server.hang();
        assert_eq!(
            cache.scope(outage_name(c, t, 1)).await.as_deref(),
            Some("alice")
        );
    }
    f.exec(&format!("UPDATE {t} SET name = 'alicia' WHERE id = 1"))
        .await;
    let since = Instant::now();
    // The breaker refuses the listener at first: the outage is real.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        exists(&mut conn, &key),
        "the invalidation went through at once: the breaker did not open"
    );
    assert_eq!(listener.owed_prefixes(), 1, "{listener:?}");
    assert_eq!(quitter.owed_prefixes(), 1, "{quitter:?}");
    drop(quitter);
    let given_up = logs.0.lock().unwrap().lines().any(|line| {
        line.starts_with("WARN")
            && line.contains("stopped with invalidations Redis has not taken yet")
            && line.contains(&format!("channel={}", f.channel))
            && line.contains("prefixes=1")
    });
    assert!(given_up, "dropping a listener that owed said nothing");
    // Its first try after the cool-down may fail and open the breaker
    // again: two cool-downs and the longest pause, then some slack.
    let deadline = COOLDOWN * 2 + Duration::from_secs(5) + WITHIN;
    let gone = tokio::task::spawn_blocking(move || loop {
        if !exists(&mut conn, &key) {
            return Some(since.elapsed());
        }
        if since.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    })
    .await
    .unwrap();
    match gone {
        Some(delay) => eprintln!("outage: the entry gone {delay:?} after the commit"),
        None => panic!(
            "the entry was still cached {deadline:?} after the commit: the invalidation \
             the breaker refused was dropped"
        ),
    }
    // The handle hears of it once the round that removed it ends.
    let settled = Instant::now();
    while listener.owed_prefixes() != 0 {
        assert!(
            settled.elapsed() < WITHIN,
            "the entry is gone but the listener still owes: {listener:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(listener);
}
