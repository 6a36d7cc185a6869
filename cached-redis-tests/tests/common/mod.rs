//! Shared test support: the Redis the tests talk to, and throwaway servers
//! for the tests that kill one.
#![allow(dead_code)]

pub mod faults;
pub mod holding_proxy;
pub mod logs;
pub mod sentinel;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Redis under test: `CACHED_REDIS_TEST_URL` (set by `scripts/test.sh`),
/// else a server started for this test process.
pub fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("CACHED_REDIS_TEST_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let server = RedisServer::start();
            let url = server.url();
            // Lives as long as the test process; its watchdog stops it after.
            std::mem::forget(server);
            url
        }
    })
    .clone()
}

/// A namespace of this test process, so runs never see each other's keys.
pub fn namespace(test_file: &str) -> String {
    format!("t-{test_file}-{}", std::process::id())
}

/// A raw connection to the Redis under test.
pub fn raw() -> redis::Connection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .expect("redis under test reachable")
}

/// The entry keys under `{namespace}:{prefix}:` in the Redis under test
/// (its stats hash left out).
pub fn entry_keys(namespace: &str, prefix: &str) -> Vec<String> {
    use redis::Commands;
    let keys: Vec<String> = raw()
        .scan_match::<_, String>(format!("{namespace}:{prefix}:*"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    keys.into_iter()
        .filter(|k| !k.ends_with(":stats"))
        .collect()
}

/// The stats hash of `prefix` in `namespace`, field by field.
pub fn stats_hash(namespace: &str, prefix: &str) -> std::collections::HashMap<String, String> {
    use redis::Commands;
    raw()
        .hgetall(format!("{namespace}:{prefix}:stats"))
        .unwrap()
}

/// Runs the server `command` (a shell command line) under a shell that
/// waits for it and stops it once this test process is gone, so that no
/// server outlives a crashed test; killing the returned shell (`TERM`)
/// stops the server too, and the shell ends once the server has (a
/// server started again on its files finds them free). Stopping sends
/// `CONT` first: a server frozen by a test (`SIGSTOP`) would not act on
/// `TERM` before it. A server that
/// ended by itself is not signalled (its pid may be another's by then).
pub fn watched(command: &str) -> Child {
    let script = format!(
        "{command} >/dev/null 2>&1 & \
         srv=$!; trap 'kill -CONT $srv 2>/dev/null; kill $srv 2>/dev/null; wait $srv; exit 0' TERM; \
         while kill -0 {parent} 2>/dev/null && kill -0 $srv 2>/dev/null; do sleep 0.2; done; \
         kill -0 {parent} 2>/dev/null || {{ kill -CONT $srv 2>/dev/null; kill $srv 2>/dev/null; }}",
        parent = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .spawn()
        .expect("sh available")
}

/// Runs `command` to its end like [`Command::output`], but kills it once
/// it has run for `limit`: a child test that hangs fails its parent
/// instead of holding the whole run. The second value says whether it was
/// killed. (What it printed is waited for only a few seconds after it
/// ended: a process it started may hold its pipes open.)
pub fn output_within(command: &mut Command, limit: Duration) -> (std::process::Output, bool) {
    use std::io::Read;
    use std::sync::mpsc;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the child starts");
    fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
        let (bytes, read) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            let _ = bytes.send(buf);
        });
        read
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let finished = wait_within(&mut child, limit);
    let killed = finished.is_none();
    // A killed child has been waited for: its status is kept.
    let status = finished.unwrap_or_else(|| child.wait().expect("the killed child's status"));
    let printed = |read: mpsc::Receiver<Vec<u8>>| {
        read.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| b"(output still held open by another process)".to_vec())
    };
    let output = std::process::Output {
        status,
        stdout: printed(stdout),
        stderr: printed(stderr),
    };
    (output, killed)
}

/// Waits for `child` to end, killing it once `limit` has passed: `None`
/// then. A child that hangs fails its test instead of holding the run.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long a child test process may run before it counts as hung.
pub const CHILD_LIMIT: Duration = Duration::from_secs(180);

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of the test's own, stopped on drop (and by a watchdog if
/// the test process dies first).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    options: String,
}

impl RedisServer {
    /// A server on a free port. The port can be taken between its lookup
    /// and the server's bind (by another test's server, or as the local
    /// port of a connection): a server that exits at start is started
    /// again on another port.
    pub fn start() -> Self {
        for _ in 0..4 {
            let port = free_port();
            let mut server = Self::unstarted(port, "");
            if server.started() {
                return server;
            }
            eprintln!("redis-server on port {port} exited at start; trying another port");
        }
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, "")
    }

    /// A server on `port` with more options (`--name value ...`), run in
    /// its own directory (a cluster node writes its nodes file there).
    pub fn start_with(port: u16, options: &str) -> Self {
        let mut server = Self::unstarted(port, options);
        server.wait_ready();
        server
    }

    /// Its process launched on `port`, not yet waited for.
    fn unstarted(port: u16, options: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cached-redis-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            child: None,
            dir,
            options: options.to_owned(),
        };
        server.launch();
        server
    }

    /// Starts the process (again) and waits until it answers.
    fn run(&mut self) {
        self.launch();
        self.wait_ready();
    }

    fn launch(&mut self) {
        self.child = Some(watched(&format!(
            "redis-server --port {} --bind 127.0.0.1 --save '' --appendonly no --dir '{}' --daemonize no {}",
            self.port,
            self.dir.display(),
            self.options
        )));
    }

    /// Stops the server and starts it again on its port, in its directory,
    /// with its options: it finds what it keeps there (a cluster node's
    /// nodes file), and no entry.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn wait_ready(&mut self) {
        assert!(
            self.started(),
            "redis-server on port {} exited at start (its port taken?)",
            self.port
        );
    }

    /// Waits until it answers (true), or until it has exited (false: its
    /// watching shell ends with it); fails the test if it does neither.
    fn started(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).unwrap();
        while Instant::now() < deadline {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return true;
                }
            }
            let watcher = self.child.as_mut().expect("launched");
            if watcher.try_wait().ok().flatten().is_some() {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis-server on port {} did not start (is redis-server installed?)",
            self.port
        );
    }

    /// A plain connection to this server.
    pub fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .expect("server reachable")
    }

    /// How many `GET`s this server has answered.
    pub fn gets_answered(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connect())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// The redis-server process id (the child is the shell watching it).
    pub fn pid(&self) -> u32 {
        server_pid(&mut self.connect())
    }

    /// Freezes the server with `SIGSTOP`: connections stay open, nothing
    /// answers. It runs again when the guard is dropped, whatever happens
    /// in between (a failing assertion included).
    pub fn hang(&self) -> Hung {
        freeze(self.pid())
    }

    /// Stops the server and waits until the port refuses connections. A
    /// server that is not running is left alone, and so is its port: one
    /// that exited at start may have found it taken by another process.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `done` holds, or fails naming `what` after 15 s.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A Redis Cluster of the test's own: one master per entry of `buses`
/// (no replicas), each serving an equal share of the slots. Each entry is
/// the node's cluster-bus port and the bus port it announces and is met at
/// (a proxy's, to cut its inbound links; else its own). Its nodes stop
/// when the servers are dropped.
pub fn start_cluster(buses: &[(u16, u16)], node_timeout_ms: u32) -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = buses
        .iter()
        .map(|&(bus, announced)| {
            RedisServer::start_with(
                free_port(),
                &format!(
                    "--cluster-enabled yes --cluster-config-file nodes.conf \
                     --cluster-node-timeout {node_timeout_ms} --cluster-port {bus} \
                     --cluster-announce-bus-port {announced}"
                ),
            )
        })
        .collect();
    let conn = |port: u16| {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection())
            .unwrap()
    };
    let n = nodes.len();
    for (i, node) in nodes.iter().enumerate() {
        // A distinct config epoch each, as `redis-cli --cluster create`
        // gives: nodes that all start at 0 settle the collision by gossip
        // over the first seconds, and a slot moved meanwhile can be taken
        // back by a stale claim that outranks the importing node's.
        let _: () = redis::cmd("CLUSTER")
            .arg("SET-CONFIG-EPOCH")
            .arg(i + 1)
            .query(&mut conn(node.port))
            .unwrap();
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(i * 16384 / n)
            .arg((i + 1) * 16384 / n - 1)
            .query(&mut conn(node.port))
            .unwrap();
    }
    for (node, &(_, announced)) in nodes.iter().zip(buses).skip(1) {
        let _: () = redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(node.port)
            .arg(announced)
            .query(&mut conn(nodes[0].port))
            .unwrap();
    }
    for node in &nodes {
        until_cluster_ok(node, n);
    }
    nodes
}

/// Waits (30 s at most) until `node` counts itself in a healthy cluster
/// of `nodes` nodes.
pub fn until_cluster_ok(node: &RedisServer, nodes: usize) {
    let formed = format!("cluster_known_nodes:{nodes}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut node.connect())
            .unwrap();
        if info.contains("cluster_state:ok") && info.contains(&formed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} is not in a healthy cluster of {nodes}",
            node.port
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Configures the library for this process on the cluster whose node
/// `seed` is the only seed (the invalidation channel's subscriber listens
/// there), in `test_file`'s namespace; and a store of the test's own on
/// that cluster.
pub fn init_on_cluster(seed: u16, test_file: &str) -> cached_redis::RedisStore {
    let url = format!("redis+cluster://127.0.0.1:{seed}");
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(&url)
            .namespace(namespace(test_file))
            .build()
            .unwrap(),
    )
    .unwrap();
    let config = cached_redis::Config::builder().redis_url(&url).build();
    cached_redis::RedisStore::open(&config.unwrap()).unwrap()
}

/// Until `within`, calls `value` (a `local` function whose entry is `key`
/// and whose body answers from `source`) after removing its entry from
/// Redis and changing what the body returns: the answer is the old value
/// only when the level served it. Returns whether the level served.
pub async fn level_serves<F, Fut>(
    store: &cached_redis::RedisStore,
    key: &str,
    source: &std::sync::atomic::AtomicU64,
    mut value: F,
    serving: bool,
    within: Duration,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = Instant::now() + within;
    loop {
        let held = value().await;
        let _: i64 = store.query(redis::cmd("DEL").arg(key)).await.unwrap_or(0);
        source.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let served = value().await == held;
        if served == serving || Instant::now() >= deadline {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies the ACL `rule` (`-info`, `+cluster|slots`, ...) to the default
/// user on every one of `servers`: its connections are refused the
/// commands it takes away from then on.
pub fn set_default_user_rule(servers: &[RedisServer], rule: &str) {
    for server in servers {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg(rule)
            .query::<()>(&mut server.connect())
            .unwrap();
    }
}

/// The index of the node of `servers` that serves `key`'s slot (the
/// others answer `MOVED`).
pub fn owner_of(servers: &[RedisServer], key: &str) -> usize {
    servers
        .iter()
        .position(|server| {
            redis::cmd("GET")
                .arg(key)
                .query::<Option<Vec<u8>>>(&mut server.connect())
                .is_ok()
        })
        .expect("a node serves the key")
}

/// Initializes cached-redis once for this test process, against the Redis
/// under test and in this process's own namespace for `test_file`.
pub fn init_once(test_file: &str) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        cached_redis::init(
            cached_redis::Config::builder()
                .redis_url(redis_url())
                .namespace(namespace(test_file))
                .build()
                .unwrap(),
        )
        .unwrap();
    });
}

/// The process id of the server (or sentinel) behind `conn`.
pub fn server_pid(conn: &mut redis::Connection) -> u32 {
    let info: String = redis::cmd("INFO").arg("server").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .expect("INFO server names the process id")
}

/// Freezes process `pid` with `SIGSTOP` until the guard is dropped.
pub fn freeze(pid: u32) -> Hung {
    signal("STOP", pid);
    Hung { pid }
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill available");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A server frozen by [`freeze`]; dropping this resumes it.
pub struct Hung {
    pid: u32,
}

impl Drop for Hung {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid.to_string())
            .status();
    }
}
