//! `cached-stats`: prints the hit/miss statistics that `cached-redis` keeps
//! in Redis, for people (a table), for scripts (`--json`) and for Prometheus
//! (`--prometheus`).
//!
//! ```text
//! cached-stats [--url URL] [--namespace NS] [--json | --prometheus] [--watch SECS] [PREFIX...]
//! ```
//!
//! * `--url URL`: the Redis to read. Default: `$CACHED_REDIS_URL`, else
//!   `$REDIS_URL`, else `redis://127.0.0.1:6379/0`.
//! * `--namespace NS`: the first key segment. Default:
//!   `$CACHED_REDIS_NAMESPACE`, else `cached`.
//! * `PREFIX...`: the prefixes to show, in the order given (a prefix
//!   without stats shows zeros). Without any, every `{NS}:{prefix}:stats`
//!   hash is discovered with `SCAN` (never `KEYS`) and shown sorted.
//! * `--json`: an array of objects, one per prefix, with every raw field
//!   and the derived numbers (`null` when undefined).
//! * `--prometheus`: the Prometheus text exposition format: counters
//!   `cached_<field>_total` and the histogram
//!   `cached_miss_duration_seconds`, labelled `namespace` and `prefix`.
//! * `--watch SECS`: clear the screen and print again every SECS seconds
//!   (fractions allowed) until Ctrl-C, like `top`. If Redis fails after the
//!   first successful read, the error is shown and the next refresh retries.
//!
//! The table shows, per prefix: hits, misses, hit ratio, skips, errors,
//! mean ± standard deviation of the compute time of misses (from
//! `miss_us_sum` and `miss_us_sumsq`), its p50/p90/p99 interpolated
//! linearly within the histogram's buckets, the mean stored size
//! (`bytes_stored / stores`) and the compression ratio
//! (`bytes_raw / bytes_stored`). `-` marks a number that is undefined (no
//! lookups, no timed misses, nothing stored). A percentile that falls in the
//! last, unbounded bucket is shown as `>10.0s`: the histogram only says it is
//! above the last finite bound (in JSON: `pXX_us` is that bound and
//! `pXX_capped` is true).
//!
//! Exit status: 0 on success; 1 when Redis cannot be reached or read (2 s
//! connect timeout) or a stats field is not a non-negative integer, with
//! one line on stderr saying what is wrong; 2 for a usage error.
//!
//! Unknown fields in a stats hash are ignored (a newer writer may add some).
//! Redis Cluster is not supported: discovery scans the one server given.

#[path = "cached_stats/model.rs"]
mod model;
#[path = "cached_stats/render.rs"]
mod render;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::RawStats;
use render::Row;

const USAGE: &str = "\
Usage: cached-stats [--url URL] [--namespace NS] [--json | --prometheus] [--watch SECS] [PREFIX...]

Prints the cache statistics that cached-redis keeps in Redis, one row per prefix:
hits, misses, hit ratio, skips, errors, miss time mean ± std dev, p50/p90/p99,
mean stored size and compression ratio.

Options:
  --url URL         Redis to read [default: $CACHED_REDIS_URL, else $REDIS_URL,
                    else redis://127.0.0.1:6379/0]
  --namespace NS    key namespace [default: $CACHED_REDIS_NAMESPACE, else cached]
  --json            JSON array, one object per prefix (raw fields and derived numbers)
  --prometheus      Prometheus text exposition format
  --watch SECS      refresh every SECS seconds until Ctrl-C
  -h, --help        print this help

Without PREFIX, every {NS}:{prefix}:stats hash is found with SCAN.
A percentile beyond the last histogram bucket (10 s) is shown as >10.0s.
Exit status: 0 ok, 1 Redis unreachable or a broken stats field, 2 usage error.
";

const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";
const DEFAULT_NAMESPACE: &str = "cached";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Prometheus,
}

#[derive(Debug, Clone, PartialEq)]
struct Options {
    url: String,
    namespace: String,
    format: Format,
    watch: Option<Duration>,
    prefixes: Vec<String>,
}

#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Run(Options),
}

/// Parses the arguments (without the program name); `env` reads the
/// environment. `Err` is a usage error message.
fn parse_args<I>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Command, String>
where
    I: IntoIterator<Item = OsString>,
{
    let mut url = None;
    let mut namespace = None;
    let mut format = None;
    let mut watch = None;
    let mut prefixes: Vec<String> = Vec::new();
    let mut only_prefixes = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        if only_prefixes || !arg.starts_with('-') || arg == "-" {
            prefixes.push(arg);
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .ok_or_else(|| format!("{name} needs a value"))?
                    .into_string()
                    .map_err(|a| format!("value {a:?} of {name} is not valid UTF-8")),
            }
        };
        let mut set_format = |f: Format| match format {
            Some(old) if old != f => Err("--json and --prometheus exclude each other".to_string()),
            _ => {
                format = Some(f);
                Ok(())
            }
        };
        match flag.as_str() {
            "--" if inline.is_none() => only_prefixes = true,
            "-h" | "--help" if inline.is_none() => return Ok(Command::Help),
            "--url" => url = Some(value("--url")?),
            "--namespace" => namespace = Some(value("--namespace")?),
            "--json" if inline.is_none() => set_format(Format::Json)?,
            "--prometheus" if inline.is_none() => set_format(Format::Prometheus)?,
            "--watch" => {
                let text = value("--watch")?;
                let secs: f64 = text
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 1e9)
                    .ok_or_else(|| {
                        format!("--watch needs a positive number of seconds, not {text:?}")
                    })?;
                watch = Some(Duration::from_secs_f64(secs));
            }
            _ if inline.is_some()
                && ["--json", "--prometheus", "--help", "--"].contains(&flag.as_str()) =>
            {
                return Err(format!("{flag} takes no value"));
            }
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    let url = url
        .or_else(|| env("CACHED_REDIS_URL").filter(|u| !u.is_empty()))
        .or_else(|| env("REDIS_URL").filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let namespace = namespace
        .or_else(|| env("CACHED_REDIS_NAMESPACE").filter(|n| !n.is_empty()))
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    if namespace.is_empty() || namespace.contains(':') {
        return Err(format!(
            "namespace {namespace:?} must be non-empty and without ':'"
        ));
    }
    let mut seen = BTreeSet::new();
    for prefix in &prefixes {
        if prefix.is_empty() || prefix.contains(':') {
            return Err(format!(
                "prefix {prefix:?} must be non-empty and without ':'"
            ));
        }
    }
    prefixes.retain(|p| seen.insert(p.clone()));
    Ok(Command::Run(Options {
        url,
        namespace,
        format: format.unwrap_or(Format::Table),
        watch,
        prefixes,
    }))
}

/// The URL without its password (or user), for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// An error text on one line.
fn one_line(text: impl std::fmt::Display) -> String {
    text.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Escapes the glob characters of `text` for a `SCAN MATCH` pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The prefix of a discovered key `{ns}:{prefix}:stats`, if it is one.
fn prefix_of_key<'a>(namespace: &str, key: &'a [u8]) -> Option<&'a [u8]> {
    let rest = key.strip_prefix(namespace.as_bytes())?.strip_prefix(b":")?;
    let prefix = rest.strip_suffix(b":stats")?;
    (!prefix.is_empty() && !prefix.contains(&b':')).then_some(prefix)
}

fn stats_key(namespace: &str, prefix: &[u8]) -> Vec<u8> {
    let mut key = format!("{namespace}:").into_bytes();
    key.extend_from_slice(prefix);
    key.extend_from_slice(b":stats");
    key
}

struct Reader {
    client: redis::Client,
    url: String,
    conn: Option<redis::Connection>,
}

impl Reader {
    fn new(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("invalid Redis URL {}: {}", redact(url), one_line(e)))?;
        Ok(Reader {
            client,
            url: redact(url),
            conn: None,
        })
    }

    fn connection(&mut self) -> Result<&mut redis::Connection, String> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .map_err(|e| format!("cannot connect to Redis at {}: {}", self.url, one_line(e)))?;
            // A server that stops answering must not hang us.
            let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
            let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connection just set"))
    }

    /// Reads the rows; drops the connection on failure so the next call
    /// reconnects.
    fn rows(&mut self, namespace: &str, prefixes: &[String]) -> Result<Vec<Row>, String> {
        let result = self.try_rows(namespace, prefixes);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn try_rows(&mut self, namespace: &str, prefixes: &[String]) -> Result<Vec<Row>, String> {
        let url = self.url.clone();
        let redis_error = |e: redis::RedisError| format!("Redis at {url}: {}", one_line(e));
        let conn = self.connection()?;
        let discovered = prefixes.is_empty();
        let wanted: Vec<Vec<u8>> = if discovered {
            let pattern = format!("{}:*:stats", glob_escape(namespace));
            let mut found = BTreeSet::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(conn)
                    .map_err(redis_error)?;
                found.extend(
                    keys.iter()
                        .filter_map(|k| prefix_of_key(namespace, k))
                        .map(<[u8]>::to_vec),
                );
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            found.into_iter().collect()
        } else {
            prefixes.iter().map(|p| p.as_bytes().to_vec()).collect()
        };
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for prefix in &wanted {
            pipe.cmd("HGETALL").arg(stats_key(namespace, prefix));
        }
        type Fields = Vec<(Vec<u8>, Vec<u8>)>;
        let replies: Vec<redis::RedisResult<Fields>> =
            pipe.ignore_errors().query(conn).map_err(redis_error)?;
        let mut rows = Vec::with_capacity(wanted.len());
        for (prefix, reply) in wanted.iter().zip(replies) {
            let key = String::from_utf8_lossy(&stats_key(namespace, prefix)).into_owned();
            let fields = match reply {
                Ok(fields) => fields,
                // A discovered key that is not a hash is not ours.
                Err(_) if discovered => continue,
                Err(e) => return Err(format!("cannot read {key}: {}", one_line(e))),
            };
            // Deleted between SCAN and HGETALL.
            if discovered && fields.is_empty() {
                continue;
            }
            let raw =
                RawStats::from_fields(fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                    .map_err(|bad| bad.message(&key))?;
            rows.push(Row::new(String::from_utf8_lossy(prefix).into_owned(), raw));
        }
        Ok(rows)
    }
}

fn render(options: &Options, rows: &[Row]) -> String {
    match options.format {
        Format::Table => render::table(rows),
        Format::Json => render::json(&options.namespace, rows),
        Format::Prometheus => render::prometheus(&options.namespace, rows),
    }
}

/// Writes to stdout; `false` when stdout is gone (e.g. a closed pipe).
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// Wall-clock time of day, UTC, `HH:MM:SS`.
fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

fn run(options: &Options) -> Result<(), String> {
    let mut reader = Reader::new(&options.url)?;
    let Some(every) = options.watch else {
        let rows = reader.rows(&options.namespace, &options.prefixes)?;
        emit(&render(options, &rows));
        return Ok(());
    };
    let mut first = true;
    loop {
        let body = match reader.rows(&options.namespace, &options.prefixes) {
            Ok(rows) => render(options, &rows),
            // A wrong URL or a broken field is reported at once; later
            // failures (Redis restarting) are shown and retried.
            Err(e) if first => return Err(e),
            Err(e) => format!("cached-stats: {e}\n(retrying every {:?})\n", every),
        };
        first = false;
        let mut screen = String::from("\x1b[H\x1b[2J");
        if options.format == Format::Table {
            screen.push_str(&format!(
                "cached-stats  namespace {}  {}  every {:?}  {}\n\n",
                options.namespace,
                reader.url,
                every,
                clock()
            ));
        }
        screen.push_str(&body);
        if !emit(&screen) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

fn main() -> ExitCode {
    let command = parse_args(std::env::args_os().skip(1), |name| std::env::var(name).ok());
    let options = match command {
        Ok(Command::Help) => {
            emit(USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(options)) => options,
        Err(message) => {
            eprintln!("cached-stats: {message} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cached-stats: {message}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Command, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_args(args.iter().map(OsString::from), move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn options(args: &[&str], env: &[(&str, &str)]) -> Options {
        match parse(args, env) {
            Ok(Command::Run(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_environment() {
        let o = options(&[], &[]);
        assert_eq!(o.url, DEFAULT_URL);
        assert_eq!(o.namespace, "cached");
        assert_eq!(o.format, Format::Table);
        assert_eq!(o.watch, None);
        assert!(o.prefixes.is_empty());
        let env = [
            ("REDIS_URL", "redis://b/1"),
            ("CACHED_REDIS_URL", "redis://a/0"),
            ("CACHED_REDIS_NAMESPACE", "svc"),
        ];
        let o = options(&[], &env);
        assert_eq!(
            (o.url.as_str(), o.namespace.as_str()),
            ("redis://a/0", "svc")
        );
        assert_eq!(options(&[], &env[..1]).url, "redis://b/1");
        let o = options(&["--url", "redis://c/2", "--namespace=x"], &env);
        assert_eq!((o.url.as_str(), o.namespace.as_str()), ("redis://c/2", "x"));
    }

    #[test]
    fn flags_and_prefixes() {
        let o = options(
            &["b", "--json", "a", "--watch", "0.5", "b", "--", "--odd"],
            &[],
        );
        assert_eq!(o.format, Format::Json);
        assert_eq!(o.watch, Some(Duration::from_millis(500)));
        assert_eq!(o.prefixes, ["b", "a", "--odd"]);
        assert_eq!(options(&["--prometheus"], &[]).format, Format::Prometheus);
        assert_eq!(parse(&["x", "--help"], &[]), Ok(Command::Help));
        assert_eq!(parse(&["-h"], &[]), Ok(Command::Help));
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["--bogus"][..],
            &["-x"],
            &["--json", "--prometheus"],
            &["--url"],
            &["--watch", "0"],
            &["--watch", "-1"],
            &["--watch", "soon"],
            &["--json=yes"],
            &["a:b"],
            &["--namespace", "a:b"],
            &["--namespace="],
        ] {
            assert!(parse(args, &[]).is_err(), "{args:?}");
        }
        assert_eq!(
            parse(&["--bogus"], &[]),
            Err("unknown option --bogus".to_string())
        );
    }

    #[test]
    fn keys_and_patterns() {
        assert_eq!(
            prefix_of_key("cached", b"cached:user:stats"),
            Some(&b"user"[..])
        );
        assert_eq!(prefix_of_key("cached", b"cached:a:b:stats"), None);
        assert_eq!(prefix_of_key("cached", b"cached::stats"), None);
        assert_eq!(prefix_of_key("cached", b"cachedx:user:stats"), None);
        assert_eq!(
            prefix_of_key("cached", b"cached:user:AAAAAAAAAAAAAAAAAAAAAA"),
            None
        );
        assert_eq!(stats_key("ns", b"p"), b"ns:p:stats");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn urls_are_redacted_and_errors_one_line() {
        assert_eq!(
            redact("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://u:p@ss@h/0"), "redis://***@h/0");
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(one_line("a\nb  c\n"), "a b c");
    }
}
