//! A redis-server in sentinel mode of the test's own.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A sentinel watching a master as `mymaster` (quorum 1), stopped on drop
/// (and by a watchdog if the test process dies first).
pub struct Sentinel {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    /// Its `requirepass`, if it asks for one.
    password: Option<String>,
}

impl Sentinel {
    /// Watching the master on `master`, with the further `sentinel.conf`
    /// lines of `settings` (each ending in a newline). Returns once it
    /// names that master.
    pub fn start(master: u16, settings: &str) -> Self {
        Self::start_as(master, settings, None)
    }

    /// [`Sentinel::start`] for a sentinel that asks its clients for
    /// `password` (`requirepass`); the harness logs in with it.
    pub fn start_protected(master: u16, settings: &str, password: &str) -> Self {
        let settings = format!("requirepass {password}\n{settings}");
        Self::start_as(master, &settings, Some(password))
    }

    fn start_as(master: u16, settings: &str, password: Option<&str>) -> Self {
        let port = super::free_port();
        let dir = std::env::temp_dir().join(format!(
            "cached-redis-test-{}-sentinel-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master} 1\n{settings}",
                dir.display()
            ),
        )
        .unwrap();
        let child = super::watched(&format!(
            "redis-server '{}' --sentinel --daemonize no",
            conf.display()
        ));
        let sentinel = Self {
            port,
            child: Some(child),
            dir,
            password: password.map(str::to_owned),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sentinel.master_port() != Some(master) {
            assert!(
                Instant::now() < deadline,
                "the sentinel on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sentinel
    }

    pub fn conn(&self) -> redis::RedisResult<redis::Connection> {
        let login = self
            .password
            .as_ref()
            .map_or(String::new(), |password| format!(":{password}@"));
        let c = redis::Client::open(format!("redis://{login}127.0.0.1:{}", self.port))?
            .get_connection_with_timeout(Duration::from_secs(1))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(c)
    }

    /// The port of the master it names now, if it answers.
    pub fn master_port(&self) -> Option<u16> {
        let named = self.conn().and_then(|mut c| {
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg("mymaster")
                .query::<Option<(String, u16)>>(&mut c)
        });
        named.ok().flatten().map(|(_, port)| port)
    }

    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/mymaster", self.port)
    }

    /// Freezes the sentinel; it runs again when the guard is dropped.
    pub fn hang(&self) -> super::Hung {
        super::freeze(super::server_pid(
            &mut self.conn().expect("sentinel reachable"),
        ))
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
