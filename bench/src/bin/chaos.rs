//! The chaos run: 64 callers of cached functions under load while a
//! redis-server is killed, hung, cut off, filled, demoted and fed garbage,
//! then RELIABILITY.md.
//!
//! ```text
//! chaos --port PORT --master-port PORT --dir DIR [--out ../RELIABILITY.md]
//!       [--tasks 64] [--quick]
//! ```
//!
//! Normally run by `scripts/chaos.sh`, which starts the two throwaway
//! servers: the one under test on `--port` (its directory `--dir`, where a
//! restarted server's pid is written to `chaos-restarted.pid`), and the
//! master for the replica fault on `--master-port`. Both are flushed and
//! misused: never point this at a Redis that holds anything (port 6379 is
//! refused).

use std::error::Error;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cached_redis_bench::chaos::figures::{self, FaultTimes};
use cached_redis_bench::chaos::report::{self, Setup};
use cached_redis_bench::chaos::workload::{self, Workers};
use cached_redis_bench::chaos::{Fault, Injector, Target};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

struct Args {
    port: u16,
    master_port: u16,
    dir: PathBuf,
    out: PathBuf,
    tasks: usize,
    quick: bool,
}

fn args() -> Res<Args> {
    let mut a = Args {
        port: 0,
        master_port: 0,
        dir: std::env::temp_dir(),
        out: PathBuf::from("../RELIABILITY.md"),
        tasks: 64,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => a.port = value()?.parse()?,
            "--master-port" => a.master_port = value()?.parse()?,
            "--dir" => a.dir = value()?.into(),
            "--out" => a.out = value()?.into(),
            "--tasks" => a.tasks = value()?.parse()?,
            "--quick" => a.quick = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if a.port == 0 || a.master_port == 0 {
        return Err("--port and --master-port are required".into());
    }
    if [a.port, a.master_port].contains(&6379) {
        return Err("refusing port 6379: the chaos run wipes and breaks its servers".into());
    }
    if a.tasks < 4 || a.tasks % 4 != 0 {
        return Err("--tasks must be a multiple of 4 (four kinds of function)".into());
    }
    Ok(a)
}

/// The server on `--port` after a `kill -9`: started by this process,
/// with the settings `scripts/throwaway-redis.sh` uses.
struct Restarted {
    child: Option<Child>,
}

impl Restarted {
    fn start(&mut self, port: u16, dir: &std::path::Path) -> Result<(), String> {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis-restarted.log"))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        // For the script's cleanup, should this process die first.
        let _ = std::fs::write(dir.join("chaos-restarted.pid"), child.id().to_string());
        self.child = Some(child);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

fn now_us() -> u64 {
    workload::since_start_us()
}

fn main() -> Res<()> {
    let a = args()?;
    let start = workload::epoch();
    let (warmup, before, during, after) = if a.quick {
        (2.0, 1.0, 1.5, 2.0)
    } else {
        (5.0, 3.0, 3.0, 7.0)
    };
    let url = format!("redis://127.0.0.1:{}/0", a.port);
    let mut c = redis::Client::open(url.as_str())?.get_connection()?;
    redis::cmd("FLUSHALL").query::<()>(&mut c)?;
    redis::cmd("FLUSHALL").query::<()>(
        &mut redis::Client::open(format!("redis://127.0.0.1:{}/0", a.master_port))?
            .get_connection()?,
    )?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut c)?;
    let redis_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    drop(c);

    let namespace = "chaos";
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(url)
            .namespace(namespace)
            .build()?,
    )?;
    let mut injector = Injector::new(Target {
        port: a.port,
        namespace: namespace.into(),
        master_port: a.master_port,
    });
    let mut restarted = Restarted { child: None };
    let load_before = load_average();
    let date = sh("date -u '+%Y-%m-%d %H:%M UTC'");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let workers = Workers::start(rt.handle(), a.tasks / 4);
    let secs = |s: f64| Duration::from_secs_f64(s);
    eprintln!("chaos: {} callers, warming up for {warmup} s", a.tasks);
    std::thread::sleep(secs(warmup));

    let mut times = Vec::new();
    let mut failure = None;
    for fault in Fault::ALL {
        eprintln!("chaos: {}", fault.name());
        let before_us = now_us();
        std::thread::sleep(secs(before));
        let step = (|| -> Result<FaultTimes, String> {
            let start_us = now_us();
            let mut notes = vec![injector.start(fault)?];
            let mut actions_us = vec![start_us];
            let until = Instant::now() + secs(during);
            while Instant::now() < until {
                let next = Instant::now() + Duration::from_millis(500);
                std::thread::sleep(next.min(until).saturating_duration_since(Instant::now()));
                if fault.repeats() && Instant::now() < until {
                    actions_us.push(now_us());
                    notes.push(injector.repeat(fault)?);
                }
            }
            let end_us = now_us();
            let dir = a.dir.clone();
            notes.push(injector.end(fault, &mut || restarted.start(a.port, &dir))?);
            actions_us.push(end_us);
            std::thread::sleep(secs(after));
            Ok(FaultTimes {
                fault,
                before_us,
                start_us,
                actions_us,
                end_us,
                after_us: now_us(),
                notes,
            })
        })();
        match step {
            Ok(t) => times.push(t),
            Err(e) => {
                failure = Some(format!("{}: {e}", fault.name()));
                break;
            }
        }
    }
    let calls = workers.stop(&rt);
    let runs = workload::take_runs();
    restarted.stop();
    if let Some(f) = failure {
        return Err(
            format!("a fault could not be injected or lifted, no report written: {f}").into(),
        );
    }

    let per_fault: Vec<_> = times
        .into_iter()
        .map(|t| figures::figures(&calls, &runs, t))
        .collect();
    let setup = Setup {
        date,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_before,
        load_after: load_average(),
        redis_version,
        tasks: a.tasks,
        seconds: start.elapsed().as_secs_f64(),
        warmup_s: warmup,
        before_s: before,
        during_s: during,
        after_s: after,
        quick: a.quick,
    };
    let previous = std::fs::read_to_string(&a.out).unwrap_or_default();
    let md = report::render(
        &setup,
        &per_fault,
        &figures::per_kind(&calls),
        &report::fuzz_section(&previous),
    );
    std::fs::write(&a.out, md)?;
    let failed: u64 = figures::per_kind(&calls).iter().map(|k| k.2).sum();
    eprintln!(
        "chaos: {} calls, {failed} failed; wrote {}",
        calls.len(),
        a.out.display()
    );
    Ok(())
}
