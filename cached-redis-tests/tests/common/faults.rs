//! The faults of the chaos run, injected into a live redis-server on
//! loopback, each checked to have taken effect (a fault that silently did
//! nothing would make a clean result meaningless).
//!
//! Shared by the chaos test (`tests/chaos.rs`) and the chaos benchmark
//! (`bench/src/bin/chaos.rs`, which includes this file), so that both inject
//! exactly the same faults. Uses only `std` and the `redis` crate's sync API.

use std::process::Command;
use std::time::{Duration, Instant};

/// One fault, injected by [`Injector::start`] and lifted by [`Injector::end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of the server, then a new, empty one on the same port.
    Kill9,
    /// `SIGSTOP` (a hung server: connections stay open, nothing answers),
    /// then `SIGCONT`.
    Stop,
    /// `CLIENT KILL TYPE normal SKIPME yes`: every client connection but
    /// the injector's own is closed by the server, repeatedly.
    ClientKill,
    /// `maxmemory` under the data size with `noeviction`: every write
    /// fails with `OOM`, reads work; then the old settings.
    Oom,
    /// `REPLICAOF` another server: a read-only replica (writes fail with
    /// `READONLY`; its data is replaced by the master's, empty), then
    /// `REPLICAOF NO ONE`.
    ReadOnlyReplica,
    /// Random bytes written over every live entry of the namespace (`SCAN`,
    /// `SET ... KEEPTTL`), repeatedly.
    Garbage,
}

impl Fault {
    /// Every fault, in the order the chaos run injects them.
    pub const ALL: [Fault; 6] = [
        Fault::Kill9,
        Fault::Stop,
        Fault::ClientKill,
        Fault::Oom,
        Fault::ReadOnlyReplica,
        Fault::Garbage,
    ];

    /// Short name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill -9, restart",
            Fault::Stop => "SIGSTOP, SIGCONT",
            Fault::ClientKill => "CLIENT KILL",
            Fault::Oom => "maxmemory, noeviction (OOM)",
            Fault::ReadOnlyReplica => "REPLICAOF (READONLY)",
            Fault::Garbage => "garbage under live keys",
        }
    }

    /// Whether the fault's action is repeated while it lasts.
    pub fn repeats(self) -> bool {
        matches!(self, Fault::ClientKill | Fault::Garbage)
    }
}

/// The server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The library's namespace (the garbage goes under `{namespace}:*`).
    pub namespace: String,
    /// Port of another redis-server on 127.0.0.1, the master for
    /// [`Fault::ReadOnlyReplica`].
    pub master_port: u16,
}

/// Injects faults into the [`Target`]; remembers what it must restore.
pub struct Injector {
    target: Target,
    /// The pid of the stopped server (it cannot be asked while stopped).
    stopped_pid: Option<u32>,
    /// `maxmemory` and `maxmemory-policy` before [`Fault::Oom`].
    saved_memory: Option<(String, String)>,
    rng: u64,
}

type Res<T> = Result<T, String>;

fn err(what: &str) -> impl Fn(redis::RedisError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The number of keys, or `?`.
fn dbsize(c: &mut redis::Connection) -> String {
    redis::cmd("DBSIZE")
        .query::<u64>(c)
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

impl Injector {
    /// An injector for `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            stopped_pid: None,
            saved_memory: None,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.target.port)
    }

    /// A fresh connection of the injector's own, with short timeouts.
    fn conn(&self) -> Res<redis::Connection> {
        let client = redis::Client::open(self.url()).map_err(err("client"))?;
        let c = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .map_err(err("connect"))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(err("timeout"))?;
        c.set_write_timeout(Some(Duration::from_secs(2)))
            .map_err(err("timeout"))?;
        Ok(c)
    }

    /// Waits until the server answers `PING`.
    pub fn wait_ready(&self, within: Duration) -> Res<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(mut c) = self.conn() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("port {} did not answer PING", self.target.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's pid, from `INFO server`.
    pub fn server_pid(&self) -> Res<u32> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.conn()?)
            .map_err(err("INFO"))?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| "no process_id in INFO".to_owned())
    }

    fn signal(pid: u32, sig: &str) -> Res<()> {
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?
            .success();
        ok.then_some(())
            .ok_or_else(|| format!("kill {sig} {pid} failed"))
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Injects `fault`; returns what was checked.
    pub fn start(&mut self, fault: Fault) -> Res<String> {
        match fault {
            Fault::Kill9 => {
                let pid = self.server_pid()?;
                Self::signal(pid, "-9")?;
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::net::TcpStream::connect(("127.0.0.1", self.target.port)).is_ok() {
                    if Instant::now() > deadline {
                        return Err("the killed server still accepts connections".into());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(format!("pid {pid} killed, port refuses connections"))
            }
            Fault::Stop => {
                let pid = self.server_pid()?;
                Self::signal(pid, "-STOP")?;
                self.stopped_pid = Some(pid);
                // The kernel still accepts connections; nothing answers.
                let answered = (|| -> std::io::Result<bool> {
                    use std::io::{Read, Write};
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", self.target.port))?;
                    s.set_read_timeout(Some(Duration::from_millis(300)))?;
                    s.write_all(b"PING\r\n")?;
                    Ok(s.read(&mut [0u8; 16]).is_ok_and(|n| n > 0))
                })()
                .unwrap_or(false);
                if answered {
                    return Err("the stopped server answered PING".into());
                }
                Ok(format!("pid {pid} stopped, PING unanswered"))
            }
            Fault::ClientKill => self.repeat(fault),
            Fault::Garbage => match self.garble()? {
                0 => Err("no live entry to write garbage over".into()),
                n => Ok(format!("{n} entries overwritten with random bytes")),
            },
            Fault::Oom => {
                let mut c = self.conn()?;
                let get = |c: &mut redis::Connection, name: &str| -> Res<String> {
                    let (_, v): (String, String) = redis::cmd("CONFIG")
                        .arg("GET")
                        .arg(name)
                        .query(c)
                        .map_err(err("CONFIG GET"))?;
                    Ok(v)
                };
                let saved = (get(&mut c, "maxmemory")?, get(&mut c, "maxmemory-policy")?);
                self.saved_memory = Some(saved);
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query(&mut c)
                    .map_err(err("INFO"))?;
                let used: u64 = info
                    .lines()
                    .find_map(|l| l.strip_prefix("used_memory:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("no used_memory in INFO")?;
                let limit = (used / 2).max(1);
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("maxmemory-policy")
                    .arg("noeviction")
                    .arg("maxmemory")
                    .arg(limit)
                    .query::<()>(&mut c)
                    .map_err(err("CONFIG SET"))?;
                match redis::cmd("SET")
                    .arg("chaos:probe")
                    .arg("x")
                    .query::<()>(&mut c)
                {
                    Err(e) if e.to_string().contains("OOM") => Ok(format!(
                        "maxmemory {limit} B under {used} B used; SET answers OOM"
                    )),
                    other => Err(format!("SET under maxmemory: {other:?}, not OOM")),
                }
            }
            Fault::ReadOnlyReplica => {
                let mut c = self.conn()?;
                redis::cmd("REPLICAOF")
                    .arg("127.0.0.1")
                    .arg(self.target.master_port)
                    .query::<()>(&mut c)
                    .map_err(err("REPLICAOF"))?;
                match redis::cmd("SET")
                    .arg("chaos:probe")
                    .arg("x")
                    .query::<()>(&mut c)
                {
                    // The redis crate spells the error kind `ReadOnly`.
                    Err(e)
                        if ["READONLY", "READ ONLY"]
                            .iter()
                            .any(|m| e.to_string().to_ascii_uppercase().contains(m)) =>
                    {
                        Ok(format!(
                            "replica of the second server ({} keys); SET answers READONLY",
                            dbsize(&mut c)
                        ))
                    }
                    other => Err(format!("SET on the replica: {other:?}, not READONLY")),
                }
            }
        }
    }

    /// Repeats the action of a fault that [`Fault::repeats`] while it lasts.
    pub fn repeat(&mut self, fault: Fault) -> Res<String> {
        match fault {
            Fault::ClientKill => {
                let mut c = self.conn()?;
                let own: i64 = redis::cmd("CLIENT")
                    .arg("ID")
                    .query(&mut c)
                    .map_err(err("CLIENT ID"))?;
                let killed: i64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .arg("SKIPME")
                    .arg("yes")
                    .query(&mut c)
                    .map_err(err("CLIENT KILL"))?;
                // The injector's own connection survives its kill.
                let still: i64 = redis::cmd("CLIENT")
                    .arg("ID")
                    .query(&mut c)
                    .map_err(|e| format!("the injector's connection was killed too: {e}"))?;
                if still != own {
                    return Err("the injector's connection changed".into());
                }
                Ok(format!("{killed} connections killed"))
            }
            Fault::Garbage => {
                let garbled = self.garble()?;
                Ok(format!("{garbled} entries overwritten with random bytes"))
            }
            _ => Ok(String::new()),
        }
    }

    /// Overwrites every live entry of the namespace with random bytes,
    /// keeping its TTL; how many.
    fn garble(&mut self) -> Res<usize> {
        let mut c = self.conn()?;
        let pattern = format!("{}:*", self.target.namespace);
        let mut cursor = 0u64;
        let mut garbled = 0usize;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .arg("TYPE")
                .arg("string")
                .query(&mut c)
                .map_err(err("SCAN"))?;
            let mut pipe = redis::pipe();
            let before = garbled;
            for key in keys.iter().filter(|k| !k.ends_with(":lock")) {
                let len = 1 + (self.next_random() % 200) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| self.next_random() as u8).collect();
                pipe.cmd("SET").arg(key).arg(bytes).arg("KEEPTTL").ignore();
                garbled += 1;
            }
            if garbled > before {
                pipe.query::<()>(&mut c).map_err(err("SET garbage"))?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(garbled)
    }

    /// Lifts `fault`. For [`Fault::Kill9`], `restart` starts a new server on
    /// the same port.
    pub fn end(&mut self, fault: Fault, restart: &mut dyn FnMut() -> Res<()>) -> Res<String> {
        match fault {
            Fault::Kill9 => {
                restart()?;
                self.wait_ready(Duration::from_secs(10))?;
                Ok("a new server answers on the same port".into())
            }
            Fault::Stop => {
                let pid = self.stopped_pid.take().ok_or("no stopped server")?;
                Self::signal(pid, "-CONT")?;
                self.wait_ready(Duration::from_secs(10))?;
                Ok(format!("pid {pid} continued"))
            }
            Fault::ClientKill | Fault::Garbage => Ok(String::new()),
            Fault::Oom => {
                let (max, policy) = self.saved_memory.take().ok_or("no saved maxmemory")?;
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("maxmemory")
                    .arg(&max)
                    .arg("maxmemory-policy")
                    .arg(&policy)
                    .query::<()>(&mut self.conn()?)
                    .map_err(err("CONFIG SET"))?;
                Ok(format!("maxmemory {max}, {policy} again"))
            }
            Fault::ReadOnlyReplica => {
                let mut c = self.conn()?;
                let keys = dbsize(&mut c);
                redis::cmd("REPLICAOF")
                    .arg("NO")
                    .arg("ONE")
                    .query::<()>(&mut c)
                    .map_err(err("REPLICAOF NO ONE"))?;
                redis::cmd("SET")
                    .arg("chaos:probe")
                    .arg("x")
                    .arg("PX")
                    .arg(1)
                    .query::<()>(&mut c)
                    .map_err(err("SET after REPLICAOF NO ONE"))?;
                Ok(format!(
                    "a master again ({keys} keys when lifted); SET works"
                ))
            }
        }
    }
}
