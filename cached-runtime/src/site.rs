//! One cached function as the runtime sees it: its identity and options as
//! written in the attribute, and what is derived from them once (prefix,
//! salt digest, stats slot).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::Config;
use crate::key::{self, SaltParts};
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
}

impl SiteOptions {
    /// Every option at its default.
    pub const DEFAULT: SiteOptions = SiteOptions {
        ttl_secs: None,
        prefix: None,
        refresh: false,
        version: "",
    };
}

/// A cached function: a `static` in its body (and in each companion's).
#[derive(Debug)]
pub struct CallSite {
    pub(crate) ident: SiteIdent,
    pub(crate) options: SiteOptions,
    resolved: OnceLock<Arc<ResolvedSite>>,
}

impl CallSite {
    /// A call site; `const` so that it can be a `static`.
    pub const fn new(ident: SiteIdent, options: SiteOptions) -> Self {
        Self {
            ident,
            options,
            resolved: OnceLock::new(),
        }
    }

    /// The derived state, computed on first use against the active config.
    pub(crate) fn resolve(&self, config: &Config) -> &Arc<ResolvedSite> {
        self.resolved.get_or_init(|| Arc::new(ResolvedSite::new(self, config)))
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
    /// `{namespace}:{prefix}:`, the start of every key of this function.
    pub key_head: String,
    /// Salt digest for the non-generic case (no type names).
    pub salt_digest: [u8; 32],
    /// Time to live of an entry.
    pub ttl: Duration,
    /// Whether a hit resets the TTL.
    pub refresh: bool,
    /// The counters of this prefix.
    pub stats: Arc<PrefixStats>,
}

impl ResolvedSite {
    fn new(site: &CallSite, config: &Config) -> Self {
        let prefix = site.prefix();
        let ttl = site
            .options
            .ttl_secs
            .map(Duration::from_secs)
            .unwrap_or(config.default_ttl);
        Self {
            key_head: format!("{}:{}:", config.namespace, prefix),
            salt_digest: key::salt_digest(&salt_parts(site, config, &[])),
            ttl,
            refresh: site.options.refresh,
            stats: stats::for_prefix(&prefix),
        }
    }
}

/// The salt of a call site, with the concrete type names of a generic call.
pub(crate) fn salt_parts<'a>(
    site: &'a CallSite,
    config: &'a Config,
    type_names: &'a [&'a str],
) -> SaltParts<'a> {
    SaltParts {
        config_salt: &config.salt,
        crate_name: site.ident.crate_name,
        crate_version: site.ident.crate_version,
        git_sha: site.ident.git_sha,
        version: site.options.version,
        type_names,
    }
}
