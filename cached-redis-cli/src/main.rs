//! `cached-stats`: prints the hit/miss statistics that `cached-redis` keeps
//! in Redis, for people (a table; with one prefix named, its miss-time
//! histogram as bars too), for scripts (`--json`) and for Prometheus
//! (`--prometheus`). Run `cached-stats --help` for the options.
//!
//! The stats are read through `cached_runtime::report`, the same reader a
//! service's own dashboard uses, over the runtime's Redis connection (same
//! URL forms, same key enumeration); this crate only parses arguments and
//! renders.
//!
//! Exit status: 0 on success; 1 when Redis cannot be reached or read or a
//! stats field is not a non-negative integer, with one line on stderr
//! saying what is wrong; 2 for a usage error (a bad flag, or a URL,
//! namespace or variable the library refuses).

mod render;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cached_runtime::config::{
    sentinel_password_in, ENV_NAMESPACE, ENV_SENTINEL_PASSWORD, ENV_SENTINEL_USERNAME, ENV_URL,
    ENV_URL_FALLBACK,
};
use cached_runtime::report::{PrefixReport, StatsReader};
use cached_runtime::Config;
use clap::{CommandFactory, Parser, Subcommand};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";
const DEFAULT_NAMESPACE: &str = "cached";
/// Generous next to a cache's own timeouts: a person waits for an answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints the cache statistics that cached-redis keeps in Redis.
///
/// One row per prefix: hits, misses, hit ratio, skips, errors, miss time
/// mean ± std dev, p50/p90/p99, mean stored size and compression ratio.
/// With exactly one PREFIX, the table is followed by that prefix's
/// miss-time histogram, drawn as bars.
#[derive(Debug, Parser)]
#[command(
    name = "cached-stats",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Without PREFIX, every {NS}:{prefix}:stats hash is found with SCAN.\n\
                  Sentinels that ask for a password: $CACHED_REDIS_SENTINEL_PASSWORD\n\
                  (and $CACHED_REDIS_SENTINEL_USERNAME), as the library reads them.\n\
                  A percentile beyond the last histogram bucket (10 s) is shown as >10.0s.\n\
                  Exit status: 0 ok, 1 Redis unreachable or a broken stats field, 2 usage error (a bad flag, URL, namespace or variable)."
)]
struct Cli {
    /// Redis to read [default: $CACHED_REDIS_URL, else $REDIS_URL, else
    /// redis://127.0.0.1:6379/0]
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Key namespace [default: $CACHED_REDIS_NAMESPACE, else cached]
    #[arg(long, value_name = "NS", value_parser = segment)]
    namespace: Option<String>,
    /// JSON array, one object per prefix (raw fields and derived numbers)
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Prometheus text exposition format
    #[arg(long)]
    prometheus: bool,
    /// Refresh every SECS seconds (from 0.1; fractions allowed) until Ctrl-C
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    watch: Option<Duration>,
    /// For rediss:// URLs: trust the CA certificates in this PEM file
    /// (instead of the system's roots)
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// For rediss:// URLs: present this client certificate (PEM; mutual
    /// TLS), with --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// For rediss:// URLs: do not verify the server's certificate (testing
    /// only)
    #[arg(long, conflicts_with = "tls_ca")]
    tls_insecure: bool,
    /// Prefixes to show, in this order (one without stats shows zeros)
    #[arg(value_name = "PREFIX", value_parser = segment)]
    prefixes: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints a shell completion script (e.g. `cached-stats completions bash
    /// > /etc/bash_completion.d/cached-stats`)
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
}

/// A key segment: non-empty, without `:`.
fn segment(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(':') {
        Err(format!("{text:?} must be non-empty and without ':'"))
    } else {
        Ok(text.to_string())
    }
}

/// A positive number of seconds.
fn seconds(text: &str) -> Result<Duration, String> {
    // From a tenth of a second: anything shorter reads the stats hashes
    // back to back, a load on Redis for a screen no one can read that fast.
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.1 && *s <= 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("needs a number of seconds from 0.1, not {text:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Prometheus,
}

/// What to read and how to show it, the environment applied.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    url: String,
    namespace: String,
    format: Format,
    watch: Option<Duration>,
    prefixes: Vec<String>,
    tls: Tls,
    sentinel: SentinelLogin,
}

/// The sentinels' own credentials, from the environment as the library
/// reads them; `Debug` shows no password.
#[derive(Clone, Default, PartialEq)]
struct SentinelLogin {
    username: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for SentinelLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelLogin")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// How to connect to a `rediss://` server, as the runtime's
/// [`cached_runtime::ConfigBuilder`] takes it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tls {
    ca: Option<PathBuf>,
    /// Certificate and key, both or neither (clap enforces it).
    client: Option<(PathBuf, PathBuf)>,
    insecure: bool,
}

impl Options {
    /// `env` reads a variable: `Err` with a message when it is set to text
    /// that is not UTF-8. Only the variables the flags leave to be read are
    /// read, as the library reads them: a blank URL counts as unset (so an
    /// empty `CACHED_REDIS_URL` does not hide `REDIS_URL`), a blank
    /// namespace is the default one, any other is trimmed and then checked
    /// like any other.
    fn new(cli: Cli, env: impl Fn(&str) -> Result<Option<String>, String>) -> Result<Self, String> {
        // Trimmed, blank counting as unset (as the library reads them).
        let set_var = |name: &str| -> Result<Option<String>, String> {
            Ok(env(name)?
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()))
        };
        let url = match cli.url {
            Some(url) => url,
            None => match set_var(ENV_URL)? {
                Some(url) => url,
                None => set_var(ENV_URL_FALLBACK)?.unwrap_or_else(|| DEFAULT_URL.to_string()),
            },
        };
        let namespace = match cli.namespace {
            Some(namespace) => namespace,
            None => set_var(ENV_NAMESPACE)?.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        };
        let format = match (cli.json, cli.prometheus) {
            (true, _) => Format::Json,
            (_, true) => Format::Prometheus,
            _ => Format::Table,
        };
        let sentinel = SentinelLogin {
            username: set_var(ENV_SENTINEL_USERNAME)?,
            password: env(ENV_SENTINEL_PASSWORD)?
                .as_deref()
                .and_then(sentinel_password_in)
                .map(str::to_owned),
        };
        let mut prefixes = cli.prefixes;
        let mut seen = std::collections::BTreeSet::new();
        prefixes.retain(|p| seen.insert(p.clone()));
        Ok(Options {
            url,
            namespace,
            format,
            watch: cli.watch,
            prefixes,
            tls: Tls {
                ca: cli.tls_ca,
                client: cli.tls_cert.zip(cli.tls_key),
                insecure: cli.tls_insecure,
            },
            sentinel,
        })
    }
}

/// The URL without its password, for messages: the library's redaction,
/// which knows every place a Redis URL carries one.
fn redact(url: &str) -> String {
    cached_runtime::config::redact_url(url)
}

/// An error and its causes on one line, the URL's password never in it.
fn one_line(error: &dyn std::error::Error, url: &str) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text.replace(url, &redact(url))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads the stats, on a runtime of its own.
struct Reader {
    runtime: tokio::runtime::Runtime,
    stats: StatsReader,
    url: String,
}

impl Reader {
    fn new(options: &Options) -> Result<Self, String> {
        let invalid = |e: &dyn std::error::Error| one_line(e, &options.url);
        let mut builder = Config::builder()
            .redis_url(&options.url)
            .namespace(&options.namespace)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(IO_TIMEOUT)
            .tls_insecure(options.tls.insecure);
        if let Some(ca) = &options.tls.ca {
            builder = builder.tls_ca_file(ca);
        }
        if let Some((cert, key)) = &options.tls.client {
            builder = builder.tls_client_cert(cert, key);
        }
        if let Some(user) = &options.sentinel.username {
            builder = builder.sentinel_username(user);
        }
        if let Some(password) = &options.sentinel.password {
            builder = builder.sentinel_password(password);
        }
        let config = builder.build().map_err(|e| invalid(&e))?;
        let stats = StatsReader::new(&config).map_err(|e| invalid(&e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start: {e}"))?;
        Ok(Reader {
            runtime,
            stats,
            url: options.url.clone(),
        })
    }

    fn read(&self, prefixes: &[String]) -> Result<Vec<PrefixReport>, String> {
        let result = self.runtime.block_on(async {
            if prefixes.is_empty() {
                self.stats.all().await
            } else {
                let names: Vec<&str> = prefixes.iter().map(String::as_str).collect();
                self.stats.prefixes(&names).await
            }
        });
        result.map_err(|e| {
            format!(
                "reading stats from {}: {}",
                redact(&self.url),
                one_line(&e, &self.url)
            )
        })
    }
}

fn render(options: &Options, reports: &[PrefixReport]) -> String {
    match options.format {
        Format::Table => {
            let mut text = render::table(reports);
            // One prefix asked for by name: its histogram too.
            if let ([one], [_]) = (reports, options.prefixes.as_slice()) {
                text.push_str(&render::histogram(one));
            }
            text
        }
        Format::Json => render::json(&options.namespace, reports),
        Format::Prometheus => render::prometheus(&options.namespace, reports),
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

fn run(options: &Options, reader: &Reader) -> Result<(), String> {
    let Some(every) = options.watch else {
        let reports = reader.read(&options.prefixes)?;
        emit(&render(options, &reports));
        return Ok(());
    };
    let mut first = true;
    // A table redraws the screen; JSON and Prometheus text go out as one
    // document per refresh, unadorned, for whatever reads them, with
    // errors on stderr.
    let table = options.format == Format::Table;
    loop {
        let body = match reader.read(&options.prefixes) {
            Ok(reports) => render(options, &reports),
            // A wrong URL or a broken field is reported at once; later
            // failures (Redis restarting) are shown and retried.
            Err(e) if first => return Err(e),
            Err(e) if table => format!("cached-stats: {e}\n(retrying every {every:?})\n"),
            Err(e) => {
                eprintln!("cached-stats: {e} (retrying every {every:?})");
                first = false;
                std::thread::sleep(every);
                continue;
            }
        };
        first = false;
        let mut screen = String::new();
        if table {
            screen.push_str("\x1b[H\x1b[2J");
            screen.push_str(&format!(
                "cached-stats  namespace {}  {}  every {:?}  {}\n\n",
                options.namespace,
                redact(&options.url),
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap says what is wrong before a blank line (over several
            // lines for a list of missing arguments); the rest repeats the
            // usage, which --help gives in full.
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let what = what.join(" ");
            let what = what.strip_prefix("error: ").unwrap_or(&what);
            eprintln!("cached-stats: {what} (see --help)");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Completions { shell }) = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "cached-stats", &mut script);
        emit(&String::from_utf8_lossy(&script));
        return ExitCode::SUCCESS;
    }
    // Read as the library reads it: a variable that is not UTF-8 is
    // refused, not taken for unset (which would mean another server).
    let env = |name: &str| cached_runtime::config::env_var(name).map_err(|e| e.to_string());
    let options = match Options::new(cli, env) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("cached-stats: {message}");
            return ExitCode::from(2);
        }
    };
    // A URL or namespace the library refuses is a usage error too, as a
    // bad flag is: nothing was tried.
    let reader = match Reader::new(&options) {
        Ok(reader) => reader,
        Err(message) => {
            eprintln!("cached-stats: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&options, &reader) {
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

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cached-stats").chain(args.iter().copied()))
    }

    fn options(args: &[&str], env: &[(&str, &str)]) -> Options {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::new(parse(args).unwrap(), move |name| {
            Ok(env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        })
        .unwrap()
    }

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
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
        assert_eq!(options(&[], &[("CACHED_REDIS_URL", "")]).url, DEFAULT_URL);
        let blank = [("CACHED_REDIS_NAMESPACE", " ")];
        assert_eq!(options(&[], &blank).namespace, "cached", "blank is unset");
        let o = options(&["--url", "redis://c/2", "--namespace=x"], &env);
        assert_eq!((o.url.as_str(), o.namespace.as_str()), ("redis://c/2", "x"));
    }

    #[test]
    fn sentinel_credentials_from_the_environment() {
        let o = options(&[], &[]);
        assert_eq!(o.sentinel, SentinelLogin::default());
        let env = [
            ("CACHED_REDIS_SENTINEL_PASSWORD", " pw \n"),
            ("CACHED_REDIS_SENTINEL_USERNAME", " watcher "),
        ];
        let o = options(&[], &env);
        assert_eq!(o.sentinel.password.as_deref(), Some(" pw "));
        assert_eq!(o.sentinel.username.as_deref(), Some("watcher"));
        assert!(!format!("{o:?}").contains("pw"), "{o:?}");
        let blank = options(&[], &[("CACHED_REDIS_SENTINEL_PASSWORD", " \n")]);
        assert_eq!(blank.sentinel.password, None);
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
        // A prefix named like the subcommand is still reachable after `--`.
        assert_eq!(
            options(&["--", "completions"], &[]).prefixes,
            ["completions"]
        );
        assert!(matches!(
            parse(&["completions", "bash"]).unwrap().command,
            Some(Command::Completions {
                shell: clap_complete::Shell::Bash
            })
        ));
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["--bogus"][..],
            &["-x"],
            &["--json", "--prometheus"],
            &["--url"],
            &["--watch", "0"],
            &["--watch", "1e-9"],
            &["--watch", "-1"],
            &["--watch", "soon"],
            &["--json=yes"],
            &["a:b"],
            &["--namespace", "a:b"],
            &["--namespace="],
            &["completions", "tcsh-ish"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn urls_are_redacted_and_errors_one_line() {
        assert_eq!(
            redact("redis://:secret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact("redis://u:p@ss@h/0"), "redis://u:***@h/0");
        // A password holding `/`, and one in the query of a socket URL.
        assert_eq!(redact("redis://:se/cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(
            redact("redis+unix:///tmp/r.sock?pass=hunter2"),
            "redis+unix:///tmp/r.sock?pass=***"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        let url = "redis://:secret@h/0";
        let e = std::io::Error::other(format!("bad {url}\n  twice"));
        assert_eq!(one_line(&e, url), "bad redis://:***@h/0 twice");
    }
}
