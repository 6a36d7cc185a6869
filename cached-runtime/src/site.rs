//! One cached function as the runtime sees it: its identity and options as
//! written in the attribute, and what is derived from them once (prefix,
//! salt digest, stats slot).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::Config;
use crate::key::{self, SaltParts};
use crate::local::LocalLevel;
use crate::stats::{self, PrefixStats};

/// Where a cached function is: filled by the macro from `module_path!()`,
/// `env!("CARGO_PKG_NAME")` and friends in the calling crate.
#[derive(Debug, Clone, Copy)]
pub struct SiteIdent {
    /// `module_path!()` at the function.
    pub module_path: &'static str,
    /// The function's name.
    pub fn_name: &'static str,
    /// The calling crate's `CARGO_PKG_NAME`.
    pub crate_name: &'static str,
    /// The calling crate's `CARGO_PKG_VERSION`.
    pub crate_version: &'static str,
    /// `option_env!("CACHED_REDIS_GIT_SHA")` in the calling crate.
    pub git_sha: Option<&'static str>,
}

/// The attribute's options. The macro writes only those given, followed by
/// `..SiteOptions::DEFAULT`, so new options never break old expansions.
#[derive(Debug, Clone, Copy)]
pub struct SiteOptions {
    /// `ttl = N`: seconds; `None` for the config's default TTL.
    pub ttl_secs: Option<u64>,
    /// `prefix = "..."`; `None` for module path and function name.
    pub prefix: Option<&'static str>,
    /// `refresh = true`: every hit resets the TTL.
    pub refresh: bool,
    /// `version = "..."`: extra salt.
    pub version: &'static str,
    /// `lock = true`: one computation per key across processes.
    pub lock: bool,
    /// `stale = N`: seconds an entry is served past its TTL while one
    /// caller refreshes it.
    pub stale_secs: u64,
    /// `early = true`: probabilistic early refresh (XFetch).
    pub early: bool,
    /// `cache_none = N`: seconds a `None` is cached; `None` when it is not.
    pub cache_none_secs: Option<u64>,
    /// `local = N`: entries of the in-process level; `None` without one.
    pub local: Option<u64>,
}

impl SiteOptions {
    /// Every option at its default.
    pub const DEFAULT: SiteOptions = SiteOptions {
        ttl_secs: None,
        prefix: None,
        refresh: false,
        version: "",
        lock: false,
        stale_secs: 0,
        early: false,
        cache_none_secs: None,
        local: None,
    };
}

/// A cached function: a `static` in its body (and in each companion's).
#[derive(Debug)]
pub struct CallSite {
    pub(crate) ident: SiteIdent,
    pub(crate) options: SiteOptions,
    resolved: OnceLock<Arc<ResolvedSite>>,
    /// Whether calls carry type names (generic function, method of a
    /// generic type): their keys cannot be derived from arguments alone.
    typed: AtomicBool,
}

impl CallSite {
    /// A call site; `const` so that it can be a `static`.
    pub const fn new(ident: SiteIdent, options: SiteOptions) -> Self {
        Self {
            ident,
            options,
            resolved: OnceLock::new(),
            typed: AtomicBool::new(false),
        }
    }

    /// The derived state, computed on first use against the active config.
    pub(crate) fn resolve(&'static self, config: &Config) -> &'static Arc<ResolvedSite> {
        self.resolved.get_or_init(|| {
            // Known from now on to event-driven invalidation by arguments.
            crate::invalidate::register(self);
            Arc::new(ResolvedSite::new(self, config))
        })
    }

    /// Records that this function's calls carry type names.
    pub(crate) fn mark_typed(&self) {
        if !self.typed.load(Relaxed) {
            self.typed.store(true, Relaxed);
        }
    }

    /// Whether this function's keys depend on type names too.
    pub(crate) fn is_typed(&self) -> bool {
        self.typed.load(Relaxed)
    }

    /// The prefix segment of this function's keys and stats hash.
    pub(crate) fn prefix(&self) -> String {
        match self.options.prefix {
            Some(p) => p.to_owned(),
            // `::` would put colons into the key segment; dots keep
            // `{namespace}:{prefix}:{hash}` splittable.
            None => format!(
                "{}.{}",
                self.ident.module_path.replace("::", "."),
                self.ident.fn_name
            ),
        }
    }
}

/// What a [`CallSite`] resolves to under a config.
#[derive(Debug)]
pub(crate) struct ResolvedSite {
    /// The prefix segment.
    pub prefix: String,
    /// `{namespace}:{prefix}:`, the start of every key of this function.
    pub key_head: String,
    /// Salt digest for the non-generic case (no type names).
    pub salt_digest: [u8; 32],
    /// Time an entry is fresh.
    pub ttl: Duration,
    /// Time an entry is served past `ttl` while being refreshed.
    pub stale: Duration,
    /// Lifetime of a cached `None` (with `cache_none`).
    pub negative_ttl: Duration,
    /// Whether a hit resets the TTL.
    pub refresh: bool,
    /// One computation per key across processes.
    pub lock: bool,
    /// XFetch early refresh.
    pub early: bool,
    /// XFetch's β: above 1 favours earlier refreshes.
    pub early_beta: f64,
    /// The counters of this prefix.
    pub stats: Arc<PrefixStats>,
    /// The `local` level, with `local = N`.
    pub local: Option<Arc<LocalLevel>>,
    /// Moving average of the body's compute time in µs (0: never run),
    /// for lock leases.
    compute_avg_us: AtomicU64,
    /// Whether this function's values read back: [`UNCHECKED`],
    /// [`ROUND_TRIPS`] or [`UNREADABLE`].
    readback: AtomicU8,
}

/// No value of the function has been stored yet.
const UNCHECKED: u8 = 0;
/// Its first stored value decoded again.
const ROUND_TRIPS: u8 = 1;
/// Its first stored value did not decode: the type uses serde features
/// bincode cannot read back. The function runs uncached.
const UNREADABLE: u8 = 2;

impl ResolvedSite {
    /// With `refresh`, the lifetime a hit restarts.
    pub(crate) fn touch(&self) -> Option<Duration> {
        self.refresh.then_some(self.ttl + self.stale)
    }

    /// Counts a run of the body.
    pub(crate) fn record_miss(&self, key: &str, elapsed: Duration) {
        self.stats.miss(elapsed);
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        let avg = self.compute_avg_us.load(Relaxed);
        // Exponential moving average, weight 1/4 for the newest run; racing
        // updates may drop one sample, which an estimate can afford.
        let next = if avg == 0 {
            us.max(1)
        } else {
            (avg * 3 + us) / 4
        };
        self.compute_avg_us.store(next.max(1), Relaxed);
        tracing::debug!(
            prefix = %self.prefix,
            key,
            compute_us = us,
            "cache miss"
        );
    }

    /// Whether values of this function are known not to read back.
    pub(crate) fn is_unreadable(&self) -> bool {
        self.readback.load(Relaxed) == UNREADABLE
    }

    /// Checks, once per function, that an encoded value decodes again:
    /// a type that serializes but cannot be read back from bincode
    /// (untagged enums, `serde_json::Value`...) would otherwise be stored
    /// on every miss and never hit. False when it does not read back; the
    /// function then runs uncached from now on.
    pub(crate) fn check_readback(&self, decodes: impl FnOnce() -> Result<(), String>) -> bool {
        match self.readback.load(Relaxed) {
            ROUND_TRIPS => true,
            UNREADABLE => false,
            _ => match decodes() {
                Ok(()) => {
                    self.readback.store(ROUND_TRIPS, Relaxed);
                    true
                }
                Err(e) => {
                    self.mark_unreadable(&e);
                    false
                }
            },
        }
    }

    /// Takes this function out of caching for the rest of the process: its
    /// values cannot be encoded, or not read back (serde features such as
    /// `flatten`, untagged enums or `serde_json::Value` need a
    /// self-describing format). Logged once; every call then counts an
    /// error and runs uncached, without a lookup that could only miss.
    pub(crate) fn mark_unreadable(&self, reason: &str) {
        if self.readback.swap(UNREADABLE, Relaxed) != UNREADABLE {
            tracing::warn!(
                prefix = %self.prefix,
                error = %reason,
                "cache error: values of this function cannot be stored and read back \
                 (serde features such as flatten, untagged enums or serde_json::Value need a \
                 self-describing format); it runs uncached"
            );
        }
    }

    /// What the body usually costs, once it has run in this process.
    pub(crate) fn compute_estimate(&self) -> Option<Duration> {
        match self.compute_avg_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

impl ResolvedSite {
    fn new(site: &CallSite, config: &Config) -> Self {
        let prefix = site.prefix();
        let ttl = site
            .options
            .ttl_secs
            .map(Duration::from_secs)
            .unwrap_or(config.default_ttl);
        let options = &site.options;
        let key_head = format!("{}:{}:", config.namespace, prefix);
        let local = options.local.map(|entries| {
            let level = Arc::new(LocalLevel::new(
                entries,
                config.local_max_bytes,
                config.max_value_bytes as u64,
            ));
            crate::local::register(&key_head, level.clone());
            level
        });
        Self {
            key_head,
            local,
            salt_digest: key::salt_digest(&salt_parts(site, config)),
            ttl,
            stale: Duration::from_secs(options.stale_secs),
            negative_ttl: Duration::from_secs(options.cache_none_secs.unwrap_or(0)),
            refresh: options.refresh,
            lock: options.lock,
            early: options.early,
            early_beta: 1.0,
            stats: stats::for_prefix(&prefix),
            compute_avg_us: AtomicU64::new(0),
            readback: AtomicU8::new(UNCHECKED),
            prefix,
        }
    }
}

/// The salt of a call site without type names: the base that
/// [`key::with_type_names`] extends for generic calls.
fn salt_parts<'a>(site: &'a CallSite, config: &'a Config) -> SaltParts<'a> {
    SaltParts {
        config_salt: &config.salt,
        crate_name: site.ident.crate_name,
        crate_version: site.ident.crate_version,
        git_sha: site.ident.git_sha,
        version: site.options.version,
        type_names: &[],
    }
}
