//! Configuration: where entries live and how they are written.
//!
//! Build one with [`Config::builder`] or [`Config::from_env`], then hand it to
//! [`crate::init`]. Every setting has a default that suits a web service.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::signing::SigningKeys;
use crate::store::target::{self, Topology};

/// The environment variable `name`: `None` when unset, and an error naming
/// it when it is set to text that is not UTF-8, which taken for unset would
/// silently mean another Redis, or none. [`Config::from_env`] and
/// `cached-stats` read the environment through it.
pub fn env_var(name: &str) -> Result<Option<String>, Error> {
    text_of(name, std::env::var_os(name))
}

/// [`env_var`] of a value already read.
fn text_of(name: &str, value: Option<std::ffi::OsString>) -> Result<Option<String>, Error> {
    value
        .map(|value| {
            value.into_string().map_err(|_| {
                Error::Config(format!(
                    "{name} is set to text that is not UTF-8; write a valid value or unset it"
                ))
            })
        })
        .transpose()
}

/// `url` with its password replaced by `***`, for a log or an error
/// message: in the user part (`redis://user:***@host`, a user part without
/// `:` is taken for a password), and in a `password=` or `pass=` query
/// parameter (Unix-socket URLs). Text that is not a URL at all comes back
/// as `<unparsable URL>`, since it may be anything, a password included.
///
/// ```
/// use cached_runtime::config::redact_url;
/// assert_eq!(redact_url("redis://app:s3cret@cache:6379/0"), "redis://app:***@cache:6379/0");
/// assert_eq!(redact_url("redis+unix:///run/redis.sock?pass=s3cret"), "redis+unix:///run/redis.sock?pass=***");
/// ```
pub fn redact_url(url: &str) -> String {
    target::redact(url)
}

/// The longest lifetime an entry can be given (`ttl`, `stale`,
/// `cache_none`, `default_ttl`): 100 years. The attribute refuses longer
/// ones; longer would overflow the clocks entries are timed with.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Environment variable naming the Redis to use (checked first).
pub const ENV_URL: &str = "CACHED_REDIS_URL";
/// Fallback environment variable naming the Redis to use.
pub const ENV_URL_FALLBACK: &str = "REDIS_URL";
/// Environment variable naming the first key segment.
pub const ENV_NAMESPACE: &str = "CACHED_REDIS_NAMESPACE";
/// Environment variable that turns caching off when set to `1` or `true`.
pub const ENV_DISABLE: &str = "CACHED_REDIS_DISABLE";
/// Environment variable choosing how entries are compressed: `zlib` (the
/// default) or `lz4`.
pub const ENV_COMPRESSION: &str = "CACHED_REDIS_COMPRESSION";
/// Environment variable choosing the zlib level, `1` (fastest) to `9`
/// (smallest): see [`ConfigBuilder::zlib_level`].
pub const ENV_ZLIB_LEVEL: &str = "CACHED_REDIS_ZLIB_LEVEL";

/// Environment variable setting the key memo's byte budget (`0`, or
/// anything under 4 KiB, turns it off): see
/// [`ConfigBuilder::key_memo_max_bytes`].
pub const ENV_KEY_MEMO_MAX_BYTES: &str = "CACHED_REDIS_KEY_MEMO_MAX_BYTES";

/// Environment variable holding the password the sentinels themselves
/// ask for (`requirepass` in `sentinel.conf`): see
/// [`ConfigBuilder::sentinel_password`].
pub const ENV_SENTINEL_PASSWORD: &str = "CACHED_REDIS_SENTINEL_PASSWORD";

/// Environment variable naming the ACL user the sentinels are asked as:
/// see [`ConfigBuilder::sentinel_username`].
pub const ENV_SENTINEL_USERNAME: &str = "CACHED_REDIS_SENTINEL_USERNAME";

/// The sentinel password a [`ENV_SENTINEL_PASSWORD`] value stands for,
/// as [`Config::from_env`] reads it (and `cached-stats`, through this):
/// none when blank; line breaks at either end dropped (a secret file's
/// last line); spaces kept, as a password may hold them.
///
/// ```
/// use cached_runtime::config::sentinel_password_in;
/// assert_eq!(sentinel_password_in(" pw \n"), Some(" pw "));
/// assert_eq!(sentinel_password_in(" \n"), None);
/// ```
pub fn sentinel_password_in(value: &str) -> Option<&str> {
    (!value.trim().is_empty()).then(|| value.trim_matches(['\r', '\n']))
}

/// [`ConfigBuilder::key_memo_max_bytes`]'s default: 4 MiB.
pub const DEFAULT_KEY_MEMO_MAX_BYTES: u64 = 4 << 20;

/// The zlib level of [`ConfigBuilder::zlib_level`]'s default.
pub const DEFAULT_ZLIB_LEVEL: u32 = 1;

/// How payloads of at least `compress_min_bytes` are compressed when they
/// are written ([`ConfigBuilder::compression`]).
///
/// Readers need no setting: an entry's header says how it was compressed,
/// and every process decodes both kinds whatever its own choice, so the
/// option can be changed one process at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// zlib (RFC 1950), at [`ConfigBuilder::zlib_level`]: the default,
    /// and what entries are documented to be.
    #[default]
    Zlib,
    /// LZ4 block format: inflating and compressing take a fraction of
    /// zlib's CPU, for entries about a tenth larger than zlib's level 1
    /// (measured on a 2 KB search response in BENCHMARKS.md). Versions of cached-redis that do
    /// not know it read such entries as misses.
    Lz4,
}

impl Compression {
    /// Its name in [`ENV_COMPRESSION`] (`zlib`, `lz4`).
    pub const fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Lz4 => "lz4",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;

    /// `zlib` or `lz4`, any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "zlib" => Ok(Compression::Zlib),
            "lz4" => Ok(Compression::Lz4),
            other => Err(Error::Config(format!(
                "compression {other:?}: expected \"zlib\" or \"lz4\""
            ))),
        }
    }
}

/// The settings of the cache. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// let config = cached_runtime::Config::builder()
///     .redis_url("redis://127.0.0.1:6379/0")
///     .namespace("cached")
///     .default_ttl(Duration::from_secs(300))
///     .build()
///     .unwrap();
/// assert_eq!(config.namespace(), "cached");
/// ```
///
/// Its `Debug` output shows the Redis URL with the password replaced by
/// `***`.
#[derive(Clone)]
pub struct Config {
    pub(crate) redis_url: Option<String>,
    pub(crate) namespace: String,
    pub(crate) salt: Vec<u8>,
    pub(crate) default_ttl: Duration,
    pub(crate) compress_min_bytes: usize,
    pub(crate) compression: Compression,
    pub(crate) zlib_level: u32,
    pub(crate) max_value_bytes: usize,
    pub(crate) stats_flush_interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) memory_max_entries: usize,
    pub(crate) memory_max_bytes: u64,
    pub(crate) local_max_bytes: u64,
    pub(crate) key_memo_max_bytes: u64,
    pub(crate) disabled: bool,
    pub(crate) tls: TlsOptions,
    /// Credentials of the sentinels; its `Debug` redacts the password.
    pub(crate) sentinel_auth: SentinelAuth,
    /// Entry MAC keys; its `Debug` redacts them.
    pub(crate) signing: SigningKeys,
}

/// TLS settings for `rediss` URLs, set on the builder.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsOptions {
    pub(crate) ca_file: Option<PathBuf>,
    /// Certificate chain and private key, PEM.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    pub(crate) insecure: bool,
}

impl TlsOptions {
    pub(crate) fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some() || self.insecure
    }
}

/// The credentials the sentinels themselves ask for, apart from the
/// master's (those are the URL's). Set on the builder or from the
/// environment; `Debug` shows no password.
#[derive(Clone, Default)]
pub(crate) struct SentinelAuth {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl SentinelAuth {
    pub(crate) fn is_set(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }
}

impl fmt::Debug for SentinelAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field is listed, so that a new one is not forgotten here;
        // the URL is the only one that can hold a secret.
        let Config {
            redis_url,
            namespace,
            salt,
            default_ttl,
            compress_min_bytes,
            compression,
            zlib_level,
            max_value_bytes,
            stats_flush_interval,
            timeout,
            connect_timeout,
            breaker_threshold,
            breaker_cooldown,
            memory_max_entries,
            memory_max_bytes,
            local_max_bytes,
            key_memo_max_bytes,
            disabled,
            tls,
            sentinel_auth,
            signing,
        } = self;
        f.debug_struct("Config")
            .field("redis_url", &redis_url.as_deref().map(target::redact))
            .field("namespace", namespace)
            .field("salt_bytes", &salt.len())
            .field("default_ttl", default_ttl)
            .field("compress_min_bytes", compress_min_bytes)
            .field("compression", compression)
            .field("zlib_level", zlib_level)
            .field("max_value_bytes", max_value_bytes)
            .field("stats_flush_interval", stats_flush_interval)
            .field("timeout", timeout)
            .field("connect_timeout", connect_timeout)
            .field("breaker_threshold", breaker_threshold)
            .field("breaker_cooldown", breaker_cooldown)
            .field("memory_max_entries", memory_max_entries)
            .field("memory_max_bytes", memory_max_bytes)
            .field("local_max_bytes", local_max_bytes)
            .field("key_memo_max_bytes", key_memo_max_bytes)
            .field("disabled", disabled)
            .field("tls", tls)
            .field("sentinel_auth", sentinel_auth)
            .field("signing", signing)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            redis_url: None,
            namespace: "cached".to_owned(),
            salt: Vec::new(),
            default_ttl: Duration::from_secs(300),
            compress_min_bytes: 256,
            compression: Compression::Zlib,
            zlib_level: DEFAULT_ZLIB_LEVEL,
            max_value_bytes: 8 << 20,
            stats_flush_interval: Duration::from_secs(1),
            timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_millis(500),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(2),
            memory_max_entries: 100_000,
            memory_max_bytes: 256 << 20,
            local_max_bytes: 64 << 20,
            key_memo_max_bytes: DEFAULT_KEY_MEMO_MAX_BYTES,
            disabled: false,
            tls: TlsOptions::default(),
            sentinel_auth: SentinelAuth::default(),
            signing: SigningKeys::default(),
        }
    }
}

impl Config {
    /// A builder starting from the defaults: embedded store, namespace
    /// `cached`, TTL 300 s, compression from 256 bytes, values up to 8 MiB,
    /// stats flushed every second, Redis timeout 250 ms.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// The configuration the environment describes:
    ///
    /// | variable | meaning |
    /// | --- | --- |
    /// | `CACHED_REDIS_URL` (else `REDIS_URL`) | the Redis to use; absent: the embedded in-process store |
    /// | `CACHED_REDIS_NAMESPACE` | first key segment, default `cached` |
    /// | `CACHED_REDIS_DISABLE=1` | caching off: every call runs the function |
    /// | `CACHED_REDIS_COMPRESSION` | `zlib` (default) or `lz4`: see [`ConfigBuilder::compression`] |
    /// | `CACHED_REDIS_ZLIB_LEVEL` | `1` to `9`: see [`ConfigBuilder::zlib_level`] |
    /// | `CACHED_REDIS_KEY_MEMO_MAX_BYTES` | bytes, `0` (or under 4 KiB) for none: see [`ConfigBuilder::key_memo_max_bytes`] |
    /// | `CACHED_REDIS_SENTINEL_PASSWORD` | the sentinels' own password: see [`ConfigBuilder::sentinel_password`] |
    /// | `CACHED_REDIS_SENTINEL_USERNAME` | the sentinels' ACL user: see [`ConfigBuilder::sentinel_username`] |
    ///
    /// Fails when a variable is set to something unusable (text that is not
    /// UTF-8, a namespace that is not one key segment, a URL of an unknown scheme, an unknown
    /// compression, a zlib level that is not a number from 1 to 9, a byte
    /// count that is not a number, sentinel credentials with a URL that
    /// names no sentinels, a sentinel user without a sentinel password).
    pub fn from_env() -> Result<Config, Error> {
        Self::from_env_with(env_var)
    }

    /// [`Config::from_env`] over any variable source (testable without
    /// touching the process environment). Only the variables it needs are
    /// read: `REDIS_URL` only when `CACHED_REDIS_URL` is unset or blank.
    pub(crate) fn from_env_with(
        var: impl Fn(&str) -> Result<Option<String>, Error>,
    ) -> Result<Config, Error> {
        let mut builder = Config::builder();
        // An empty variable counts as unset, so an empty CACHED_REDIS_URL
        // does not hide REDIS_URL (as in `cached-stats`).
        let set = |name| Ok::<_, Error>(var(name)?.filter(|u: &String| !u.trim().is_empty()));
        let url = match set(ENV_URL)? {
            Some(url) => Some(url),
            None => set(ENV_URL_FALLBACK)?,
        };
        if let Some(url) = url {
            builder = builder.redis_url(url.trim());
        }
        // Blank is unset, as for the URL: a deployment template that renders
        // `CACHED_REDIS_NAMESPACE=` means the default, not a broken config.
        if let Some(ns) = set(ENV_NAMESPACE)? {
            builder = builder.namespace(ns.trim());
        }
        if let Some(flag) = var(ENV_DISABLE)? {
            builder = builder.disabled(parse_flag(ENV_DISABLE, &flag)?);
        }
        if let Some(name) = var(ENV_COMPRESSION)? {
            let compression = name
                .parse()
                .map_err(|e| Error::Config(format!("{ENV_COMPRESSION}: {e}")))?;
            builder = builder.compression(compression);
        }
        if let Some(level) = var(ENV_ZLIB_LEVEL)? {
            let level = level.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "{ENV_ZLIB_LEVEL}: {level:?} is not a zlib level; write a number from 1 to 9"
                ))
            })?;
            builder = builder.zlib_level(level);
        }
        if let Some(bytes) = var(ENV_KEY_MEMO_MAX_BYTES)? {
            let bytes = bytes.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "{ENV_KEY_MEMO_MAX_BYTES}: {bytes:?} is not a byte count; write a whole \
                     number, 0 to turn the key memo off"
                ))
            })?;
            builder = builder.key_memo_max_bytes(bytes);
        }
        // Blank counts as unset, as for the URL: a deployment template
        // that renders an empty secret means "no sentinel password".
        if let Some(password) = var(ENV_SENTINEL_PASSWORD)?
            .as_deref()
            .and_then(sentinel_password_in)
        {
            builder = builder.sentinel_password(password);
        }
        if let Some(user) = set(ENV_SENTINEL_USERNAME)? {
            builder = builder.sentinel_username(user.trim());
        }
        builder.build()
    }

    /// The Redis URL, or `None` for the embedded in-process store. It may
    /// hold a password: do not log it, log [`redact_url`] of it (`Debug` of
    /// the config is safe too).
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref()
    }

    /// The first segment of every key.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The TTL of functions that set none.
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// Whether caching is off (every call runs the function).
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// How new entries are compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The zlib level new zlib entries are written at.
    pub fn zlib_level(&self) -> u32 {
        self.zlib_level
    }

    /// The key memo's byte budget, 0 when it is off.
    pub fn key_memo_max_bytes(&self) -> u64 {
        self.key_memo_max_bytes
    }
}

fn parse_flag(name: &str, value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        other => Err(Error::Config(format!(
            "{name}={other:?}: expected 1/true or 0/false"
        ))),
    }
}

/// Builds a [`Config`]; see [`Config::builder`]. Setters consume and return
/// the builder; [`ConfigBuilder::build`] validates. Its `Debug` output
/// shows no password.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// The Redis to use; without it the embedded in-process store serves.
    ///
    /// | URL | topology |
    /// | --- | --- |
    /// | `redis://[user:password@]host:port/db` | one server |
    /// | `rediss://...` | one server over TLS (see [`ConfigBuilder::tls_ca_file`]) |
    /// | `redis+cluster://[user:password@]host:port[,host:port...]` | Redis Cluster; one seed node is enough |
    /// | `rediss+cluster://...` | Redis Cluster over TLS |
    /// | `redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]` | the master of `service_name`, followed across failovers |
    /// | `rediss+sentinel://...` | the same over TLS (sentinels and master) |
    /// | `redis+unix:///path/to/socket` | a Unix socket |
    ///
    /// The user and password (percent-encoded where needed) are the ACL
    /// credentials of the data nodes; sentinels are asked without them,
    /// or with their own ([`ConfigBuilder::sentinel_password`]).
    /// The password never appears in logs, errors or `Debug` output.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.config.redis_url = Some(url.into());
        self
    }

    /// Use the embedded in-process store even if a URL was set before.
    pub fn embedded(mut self) -> Self {
        self.config.redis_url = None;
        self
    }

    /// The first key segment (default `cached`). Must be non-empty and
    /// contain no `:`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// Extra salt mixed into every key, e.g. the bytes of the service's
    /// configuration file, so that a new configuration never reads entries
    /// written under the old one.
    pub fn salt(mut self, salt: impl AsRef<[u8]>) -> Self {
        self.config.salt = salt.as_ref().to_vec();
        self
    }

    /// The TTL of functions that set no `ttl` (default 300 s). At least 1 ms.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = ttl;
        self
    }

    /// Payloads of at least this many bytes are compressed (default 256;
    /// zlib unless [`ConfigBuilder::compression`] says otherwise).
    pub fn compress_min_bytes(mut self, bytes: usize) -> Self {
        self.config.compress_min_bytes = bytes;
        self
    }

    /// How payloads of at least `compress_min_bytes` are compressed
    /// (default [`Compression::Zlib`]). [`Compression::Lz4`] trades about a
    /// tenth more bytes per entry than zlib's level 1 for much less CPU on
    /// every hit and store.
    /// Any process reads entries of either kind, so the setting can be
    /// rolled out one process at a time; processes of a version that does
    /// not know LZ4 treat LZ4 entries as misses (they recompute and
    /// overwrite them with zlib).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.config.compression = compression;
        self
    }

    /// The zlib level entries are written at, from 1 (fastest) to 9
    /// (smallest); default [`DEFAULT_ZLIB_LEVEL`], 1. Only writers use it:
    /// every level is the same zlib format, so processes may differ. On the
    /// 2 KB search response of BENCHMARKS.md, level 1 (zlib-rs's quick
    /// strategy, fixed Huffman codes) compresses 2.5 times as fast as
    /// level 3 and its entries inflate a third faster, for entries about a
    /// quarter larger; levels above 3 cost several times the CPU for a few
    /// percent fewer bytes. Set 3 or more when Redis memory costs more than
    /// the CPU of hits and stores.
    pub fn zlib_level(mut self, level: u32) -> Self {
        self.config.zlib_level = level;
        self
    }

    /// Largest encoded payload stored (default 8 MiB). A larger value is
    /// returned to the caller but not stored; decoding never accepts a
    /// payload claiming more.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.config.max_value_bytes = bytes;
        self
    }

    /// How often the gathered stats are written to Redis (default 1 s).
    pub fn stats_flush_interval(mut self, interval: Duration) -> Self {
        self.config.stats_flush_interval = interval;
        self
    }

    /// How long one Redis command may take before the call gives up on the
    /// cache and runs the function (default 250 ms). A sync (`fn`) call's
    /// blocking connection bounds each read of the socket by it, not the
    /// whole answer: a server that answers a byte at a time can hold such a
    /// call longer, and each answer that came later than this counts
    /// against the breaker, which then spares the next calls the wait.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// How long connecting to Redis may take (default 500 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// After this many consecutive Redis failures (default 3), Redis is not
    /// tried for [`ConfigBuilder::breaker_cooldown`]: a dead Redis then adds
    /// no latency at all.
    pub fn breaker_threshold(mut self, failures: u32) -> Self {
        self.config.breaker_threshold = failures;
        self
    }

    /// How long Redis is left alone once the breaker trips (default 2 s);
    /// then one call tries again.
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.breaker_cooldown = cooldown;
        self
    }

    /// Capacity of the embedded store in entries (default 100 000): the
    /// least useful entries (least recently and frequently read) make room
    /// for new ones, and once one of them was live while expired entries
    /// held room, the expired ones are swept out (at most once a second).
    pub fn memory_max_entries(mut self, entries: usize) -> Self {
        self.config.memory_max_entries = entries;
        self
    }

    /// TLS: trust the CA certificates in this PEM file (instead of the
    /// system's trust store) to verify the server. For `rediss` URLs only.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls.ca_file = Some(path.into());
        self
    }

    /// TLS: present this client certificate chain and private key (PEM
    /// files) to the server: mutual TLS. For `rediss` URLs only.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.config.tls.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// TLS without verifying the server's certificate or name, for
    /// development against self-signed servers only: anyone on the path
    /// can read and change the traffic. A warning is logged when it is
    /// used. For `rediss` URLs only.
    pub fn tls_insecure(mut self, insecure: bool) -> Self {
        self.config.tls.insecure = insecure;
        self
    }

    /// Sentinel: the password the sentinels themselves ask for
    /// (`requirepass` in `sentinel.conf`, or an ACL user's with
    /// [`ConfigBuilder::sentinel_username`]). The URL's credentials are the
    /// master's; many deployments give the sentinels the same password,
    /// which is then set twice. For `redis+sentinel://` and
    /// `rediss+sentinel://` URLs only. It never appears in logs, errors or
    /// `Debug` output. An empty password counts as none.
    ///
    /// ```
    /// let config = cached_runtime::Config::builder()
    ///     .redis_url("redis+sentinel://:master-secret@10.0.0.1:26379,10.0.0.2:26379/mymaster")
    ///     .sentinel_password("sentinel-secret")
    ///     .build()
    ///     .unwrap();
    /// assert!(!format!("{config:?}").contains("secret"));
    /// ```
    pub fn sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.config.sentinel_auth.password = Some(password.into()).filter(|p| !p.is_empty());
        self
    }

    /// Sentinel: the ACL user the sentinels are asked as (Redis 6.2+
    /// sentinels), with [`ConfigBuilder::sentinel_password`]; without it,
    /// the sentinels' default user. For sentinel URLs only.
    pub fn sentinel_username(mut self, username: impl Into<String>) -> Self {
        self.config.sentinel_auth.username = Some(username.into()).filter(|u| !u.is_empty());
        self
    }

    /// Byte budget of the embedded store (default 256 MiB): the encoded
    /// entries and their keys never add up to more; the least useful
    /// entries make room for new ones.
    pub fn memory_max_bytes(mut self, bytes: u64) -> Self {
        self.config.memory_max_bytes = bytes;
        self
    }

    /// Byte budget of each function's `local` level (default 64 MiB),
    /// besides its `local = N` entries. A held value weighs its encoded
    /// size (before compression) plus its key and `size_of::<T>()`: what
    /// the budget bounds, not the memory the decoded value takes, which is
    /// more (headers and allocator rounding of its strings and vectors;
    /// far more for large inline arrays that encode small). See the
    /// README's section on the `local` level.
    pub fn local_max_bytes(mut self, bytes: u64) -> Self {
        self.config.local_max_bytes = bytes;
        self
    }

    /// Byte budget of the key memo (default
    /// [`DEFAULT_KEY_MEMO_MAX_BYTES`], 4 MiB; `0`, or anything under 4 KiB,
    /// turns it off): one per
    /// cache, shared by its functions. It remembers the key of arguments
    /// seen lately, by an exact record of their serde calls, so that
    /// calling again with the same arguments skips writing and hashing
    /// their canonical JSON (a 1 KB query: about a quarter of the cost;
    /// BENCHMARKS.md). Keys are the same with or without it. Arguments
    /// whose record is over 16 KiB are not remembered. A new argument
    /// costs more with it than without (its record, then its canonical
    /// JSON from the record), so a function whose lookups mostly miss is
    /// keyed without it, but for one window of calls in eight that checks
    /// whether its arguments started repeating. Each thread also keeps
    /// the last four records it keyed (up to 4 KiB each) outside the
    /// budget, so that threads calling with one hot argument do not all
    /// take the memo's lock.
    pub fn key_memo_max_bytes(mut self, bytes: u64) -> Self {
        self.config.key_memo_max_bytes = bytes;
        self
    }

    /// Sign entries (opt-in): every entry written carries a keyed BLAKE3
    /// MAC over its Redis key, header and payload, and an entry read is
    /// decoded only if its MAC verifies. An entry with a wrong or missing
    /// MAC (written by someone without the key, tampered with, or written
    /// before signing was turned on) is a miss counted in `errors`, and is
    /// replaced. Protects a service whose Redis is shared or exposed from
    /// values injected into its deserializer.
    ///
    /// `secret` is at least 16 random bytes (the BLAKE3 key is derived from
    /// it, see `docs/FORMAT.md`); every process reading the same entries
    /// needs it. It never appears in `Debug` output or logs.
    ///
    /// To rotate: deploy the new key with the old one accepted
    /// ([`ConfigBuilder::signing_keys_accepted`]), so that processes still
    /// writing with the old key are understood; once every process writes
    /// with the new key (and old entries have expired), drop the old one.
    ///
    /// ```
    /// let config = cached_runtime::Config::builder()
    ///     .signing_key(b"new: 32 random bytes from a vault")
    ///     .signing_keys_accepted([b"old: 32 random bytes from a vault"])
    ///     .build()
    ///     .unwrap();
    /// assert!(!format!("{config:?}").contains("vault"));
    /// ```
    pub fn signing_key(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.config.signing.sign_with(secret.as_ref());
        self
    }

    /// Keys whose entries are still accepted besides the
    /// [`signing_key`](ConfigBuilder::signing_key), while rotating. Nothing
    /// is written with them. Needs a `signing_key`.
    pub fn signing_keys_accepted<K: AsRef<[u8]>>(
        mut self,
        secrets: impl IntoIterator<Item = K>,
    ) -> Self {
        for secret in secrets {
            self.config.signing.accept(secret.as_ref());
        }
        self
    }

    /// Turn caching off: every call runs the function and counts a skip.
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.config.disabled = disabled;
        self
    }

    /// Check the settings and return the [`Config`].
    pub fn build(self) -> Result<Config, Error> {
        let c = self.config;
        if c.namespace.is_empty()
            || c.namespace.contains(':')
            || c.namespace
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            return Err(Error::Config(format!(
                "namespace {:?}: must be non-empty and contain no ':', whitespace or control \
                 characters (it is the first segment of every key)",
                c.namespace
            )));
        }
        if let Some(url) = &c.redis_url {
            let target = target::parse(url).map_err(Error::Config)?;
            if c.tls.is_set() && !target.tls {
                return Err(Error::Config(format!(
                    "redis_url {:?}: TLS options are set but the URL is not rediss://, \
                     rediss+cluster:// or rediss+sentinel://",
                    target::redact(url)
                )));
            }
            // Checked only where a URL is used: with the embedded store
            // they are unused, as the TLS options are.
            if c.sentinel_auth.is_set() && !matches!(target.topology, Topology::Sentinel { .. }) {
                return Err(Error::Config(format!(
                    "redis_url {:?}: sentinel credentials are set ({ENV_SENTINEL_PASSWORD} / \
                     {ENV_SENTINEL_USERNAME}, or sentinel_password / sentinel_username) but \
                     the URL is not redis+sentinel:// or rediss+sentinel://; unset them, or \
                     name the sentinels",
                    target::redact(url)
                )));
            }
            if c.sentinel_auth.username.is_some() && c.sentinel_auth.password.is_none() {
                return Err(Error::Config(format!(
                    "the sentinels' user is set ({ENV_SENTINEL_USERNAME} or sentinel_username) \
                     without their password ({ENV_SENTINEL_PASSWORD} or sentinel_password): \
                     an ACL user logs in with both"
                )));
            }
        }
        if let Some(problem) = c.signing.problem() {
            return Err(Error::Config(problem));
        }
        if !(1..=9).contains(&c.zlib_level) {
            return Err(Error::Config(format!(
                "zlib_level {}: must be from 1 (fastest) to 9 (smallest)",
                c.zlib_level
            )));
        }
        if c.default_ttl > MAX_LIFETIME {
            return Err(Error::Config(format!(
                "default_ttl {:?}: at most {} s (100 years)",
                c.default_ttl,
                MAX_LIFETIME.as_secs()
            )));
        }
        let positive = [
            ("default_ttl", c.default_ttl),
            ("stats_flush_interval", c.stats_flush_interval),
            ("timeout", c.timeout),
            ("connect_timeout", c.connect_timeout),
        ];
        for (name, value) in positive {
            if value < Duration::from_millis(1) {
                return Err(Error::Config(format!("{name} must be at least 1 ms")));
            }
        }
        if c.max_value_bytes == 0
            || c.memory_max_entries == 0
            || c.memory_max_bytes == 0
            || c.local_max_bytes == 0
            || c.breaker_threshold == 0
        {
            return Err(Error::Config(
                "max_value_bytes, memory_max_entries, memory_max_bytes, local_max_bytes and \
                 breaker_threshold must be at least 1"
                    .into(),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Result<Option<String>, Error> {
        move |name| {
            Ok(pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string()))
        }
    }

    /// A variable that is not UTF-8 is refused, not taken for unset (which
    /// would mean `REDIS_URL`'s server, or the embedded store); one that is
    /// not read (`REDIS_URL` behind a `CACHED_REDIS_URL`) is not judged.
    #[test]
    fn a_variable_that_is_not_utf8_is_an_error() {
        use std::os::unix::ffi::OsStringExt;
        let bad = || Some(std::ffi::OsString::from_vec(b"redis://a:1/\xff".to_vec()));
        let vars = |name: &str| match name {
            ENV_URL => text_of(name, bad()),
            ENV_URL_FALLBACK => text_of(name, Some("redis://b:2/0".into())),
            _ => Ok(None),
        };
        let err = Config::from_env_with(vars).unwrap_err().to_string();
        assert!(err.contains(ENV_URL) && err.contains("UTF-8"), "{err}");
        let fine = |name: &str| match name {
            ENV_URL_FALLBACK => text_of(name, Some("redis://b:2/0".into())),
            _ => Ok(None),
        };
        assert_eq!(
            Config::from_env_with(fine).unwrap().redis_url(),
            Some("redis://b:2/0")
        );
        let unread = |name: &str| match name {
            ENV_URL => text_of(name, Some("redis://b:2/0".into())),
            ENV_URL_FALLBACK => text_of(name, bad()),
            _ => Ok(None),
        };
        assert_eq!(
            Config::from_env_with(unread).unwrap().redis_url(),
            Some("redis://b:2/0")
        );
    }

    #[test]
    fn from_env_prefers_cached_redis_url() {
        let c = Config::from_env_with(env(&[
            (ENV_URL, "redis://a:1/0"),
            (ENV_URL_FALLBACK, "redis://b:2/0"),
        ]))
        .unwrap();
        assert_eq!(c.redis_url(), Some("redis://a:1/0"));
        let c = Config::from_env_with(env(&[(ENV_URL_FALLBACK, "redis://b:2/0")])).unwrap();
        assert_eq!(c.redis_url(), Some("redis://b:2/0"));
        // An empty CACHED_REDIS_URL is unset: it does not hide REDIS_URL.
        for vars in [
            &[(ENV_URL, ""), (ENV_URL_FALLBACK, "redis://b:2/0")],
            &[(ENV_URL, "  "), (ENV_URL_FALLBACK, "redis://b:2/0")],
        ] {
            let c = Config::from_env_with(env(vars)).unwrap();
            assert_eq!(c.redis_url(), Some("redis://b:2/0"), "{vars:?}");
        }
    }

    #[test]
    fn namespaces_are_one_plain_key_segment() {
        let c = Config::from_env_with(env(&[(ENV_NAMESPACE, " svc\n")])).unwrap();
        assert_eq!(c.namespace(), "svc", "the variable is trimmed");
        for blank in [&[(ENV_NAMESPACE, "")], &[(ENV_NAMESPACE, " \n")]] {
            let c = Config::from_env_with(env(blank)).unwrap();
            assert_eq!(c.namespace(), "cached", "{blank:?} counts as unset");
        }
        for bad in ["", "a:b", "a b", "svc\n", "a\tb", "a\u{7f}b"] {
            let err = Config::builder().namespace(bad).build().unwrap_err();
            assert!(err.to_string().contains("namespace"), "{bad:?}: {err}");
        }
        assert!(Config::builder().namespace("svc-1.eu_west").build().is_ok());
    }

    #[test]
    fn lifetimes_are_bounded() {
        let build = |ttl| Config::builder().default_ttl(ttl).build();
        assert!(build(Duration::ZERO).is_err());
        assert!(build(MAX_LIFETIME).is_ok());
        let e = build(MAX_LIFETIME + Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("100 years"), "{e}");
    }

    #[test]
    fn no_url_means_embedded() {
        let c = Config::from_env_with(env(&[])).unwrap();
        assert_eq!(c.redis_url(), None);
        assert!(!c.is_disabled());
    }

    #[test]
    fn disable_flag_parses_and_rejects_garbage() {
        assert!(Config::from_env_with(env(&[(ENV_DISABLE, "1")]))
            .unwrap()
            .is_disabled());
        assert!(!Config::from_env_with(env(&[(ENV_DISABLE, "0")]))
            .unwrap()
            .is_disabled());
        let err = Config::from_env_with(env(&[(ENV_DISABLE, "maybe")])).unwrap_err();
        assert!(err.to_string().contains("CACHED_REDIS_DISABLE"), "{err}");
    }

    #[test]
    fn zlib_level_comes_from_the_builder_or_the_environment() {
        assert_eq!(Config::default().zlib_level(), DEFAULT_ZLIB_LEVEL);
        let c = Config::builder().zlib_level(1).build().unwrap();
        assert_eq!(c.zlib_level(), 1);
        let c = Config::from_env_with(env(&[(ENV_ZLIB_LEVEL, " 9 ")])).unwrap();
        assert_eq!(c.zlib_level(), 9);
        for bad in [0, 10] {
            let err = Config::builder().zlib_level(bad).build().unwrap_err();
            assert!(err.to_string().contains("zlib_level"), "{err}");
        }
        let err = Config::from_env_with(env(&[(ENV_ZLIB_LEVEL, "fast")])).unwrap_err();
        assert!(err.to_string().contains(ENV_ZLIB_LEVEL), "{err}");
        assert!(err.to_string().contains("1 to 9"), "{err}");
        let err = Config::from_env_with(env(&[(ENV_ZLIB_LEVEL, "12")])).unwrap_err();
        assert!(err.to_string().contains("1 (fastest) to 9"), "{err}");
    }

    #[test]
    fn key_memo_budget_comes_from_the_builder_or_the_environment() {
        assert_eq!(
            Config::default().key_memo_max_bytes(),
            DEFAULT_KEY_MEMO_MAX_BYTES
        );
        let c = Config::builder().key_memo_max_bytes(0).build().unwrap();
        assert_eq!(c.key_memo_max_bytes(), 0);
        let c = Config::from_env_with(env(&[(ENV_KEY_MEMO_MAX_BYTES, " 1048576 ")])).unwrap();
        assert_eq!(c.key_memo_max_bytes(), 1 << 20);
        let err = Config::from_env_with(env(&[(ENV_KEY_MEMO_MAX_BYTES, "4MiB")])).unwrap_err();
        assert!(err.to_string().contains(ENV_KEY_MEMO_MAX_BYTES), "{err}");
        assert!(err.to_string().contains("0 to turn"), "{err}");
    }

    #[test]
    fn compression_comes_from_the_environment() {
        let c = Config::from_env_with(env(&[])).unwrap();
        assert_eq!(c.compression(), Compression::Zlib);
        let c = Config::from_env_with(env(&[(ENV_COMPRESSION, " LZ4 ")])).unwrap();
        assert_eq!(c.compression(), Compression::Lz4);
        let c = Config::from_env_with(env(&[(ENV_COMPRESSION, "zlib")])).unwrap();
        assert_eq!(c.compression(), Compression::Zlib);
        let err = Config::from_env_with(env(&[(ENV_COMPRESSION, "zstd")])).unwrap_err();
        assert!(err.to_string().contains(ENV_COMPRESSION), "{err}");
        assert!(err.to_string().contains("zstd"), "{err}");
    }

    #[test]
    fn sentinel_credentials_come_from_the_builder_or_the_environment() {
        const URL: &str = "redis+sentinel://:master-pw@s1:26379,s2/mymaster";
        let c = Config::builder()
            .redis_url(URL)
            .sentinel_username("watcher")
            .sentinel_password("sentinel-pw")
            .build()
            .unwrap();
        assert_eq!(c.sentinel_auth.username.as_deref(), Some("watcher"));
        assert_eq!(c.sentinel_auth.password.as_deref(), Some("sentinel-pw"));
        let shown = format!("{c:?}");
        assert!(shown.contains("watcher"), "{shown}");
        assert!(!shown.contains("-pw"), "{shown}");
        let c = Config::from_env_with(env(&[
            (ENV_URL, URL),
            (ENV_SENTINEL_PASSWORD, " spaced pw "),
            (ENV_SENTINEL_USERNAME, " watcher "),
        ]))
        .unwrap();
        // A password keeps its spaces; a user name is trimmed.
        assert_eq!(c.sentinel_auth.password.as_deref(), Some(" spaced pw "));
        assert_eq!(c.sentinel_auth.username.as_deref(), Some("watcher"));
        let c = Config::from_env_with(env(&[(ENV_URL, URL), (ENV_SENTINEL_PASSWORD, "pw\r\n")]))
            .unwrap();
        assert_eq!(
            c.sentinel_auth.password.as_deref(),
            Some("pw"),
            "a secret file's line break"
        );
        // Blank means unset: an empty secret rendered by a template.
        let c =
            Config::from_env_with(env(&[(ENV_URL, URL), (ENV_SENTINEL_PASSWORD, " ")])).unwrap();
        assert!(!c.sentinel_auth.is_set());
        assert!(!Config::builder()
            .sentinel_password("")
            .config
            .sentinel_auth
            .is_set());
    }

    #[test]
    fn sentinel_credentials_need_sentinels_and_a_password() {
        for url in [
            "redis://x:6379/0",
            "redis+cluster://x:7000",
            "rediss://x:6380/0",
        ] {
            let err = Config::builder()
                .redis_url(url)
                .sentinel_password("sentinel-pw")
                .build()
                .unwrap_err()
                .to_string();
            assert!(err.contains("sentinel credentials are set"), "{err}");
            assert!(!err.contains("sentinel-pw"), "{err}");
        }
        let err = Config::from_env_with(env(&[
            (ENV_URL, "redis://x:6379/0"),
            (ENV_SENTINEL_PASSWORD, "sentinel-pw"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("redis+sentinel://"), "{err}");
        let err = Config::from_env_with(env(&[
            (ENV_URL, "redis+sentinel://s1/mymaster"),
            (ENV_SENTINEL_USERNAME, "watcher"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("without their password"), "{err}");
        assert!(err.to_string().contains(ENV_SENTINEL_PASSWORD), "{err}");
        // Over TLS too; with no URL (the embedded store) they are unused.
        Config::builder()
            .redis_url("rediss+sentinel://s1/mymaster")
            .sentinel_password("sentinel-pw")
            .build()
            .unwrap();
        Config::builder()
            .sentinel_password("sentinel-pw")
            .build()
            .unwrap();
        Config::builder()
            .sentinel_username("watcher")
            .build()
            .unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Config::builder().namespace("a:b").build().unwrap_err();
        assert!(err.to_string().contains("namespace"), "{err}");
        let err = Config::builder().redis_url("http://x").build().unwrap_err();
        assert!(err.to_string().contains("redis_url"), "{err}");
        let err = Config::builder()
            .redis_url("redis://x:6380")
            .tls_insecure(true)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        Config::builder()
            .redis_url("rediss://x:6380")
            .tls_ca_file("ca.pem")
            .build()
            .unwrap();
        let err = Config::builder()
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
    }
}
