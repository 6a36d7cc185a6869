//! One cached function as the runtime sees it: its identity and options as
//! written in the attribute, what is derived from them under a config
//! (prefix, salt digest, stats slot, codec choice), and the type names its
//! calls have been seen with (for invalidation by arguments). The `static`
//! holding them, and its binding to a cache, is `call_site`'s, a layer up.

use crate::config::MAX_LIFETIME;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::codec_choice::{CodecChoice, CodecOption};
use crate::config::Config;
use crate::key::{self, KeyMemo, MemoGate, SaltParts};
use crate::local::LocalLevel;
use crate::stats::{PrefixStats, StatsRegistry};

/// Most distinct type-name lists remembered per function; a function
/// instantiated with more is invalidated by prefix instead of by arguments.
const MAX_INSTANTIATIONS: usize = 256;

/// Where a cached function is: filled by the macro from `module_path!()`,
/// `env!("CARGO_PKG_NAME")` and friends in the calling crate.
#[derive(Debug, Clone, Copy)]
pub struct SiteIdent {
    /// `module_path!()` at the function.
    pub module_path: &'static str,
    /// The function's name.
    pub fn_name: &'static str,
    /// The return type as written (`stringify!`), empty when there is none.
    pub return_type: &'static str,
    /// The calling crate's `CARGO_PKG_NAME`.
    pub crate_name: &'static str,
    /// The calling crate's `CARGO_PKG_VERSION`.
    pub crate_version: &'static str,
    /// `option_env!("CACHED_REDIS_GIT_SHA")` in the calling crate.
    pub git_sha: Option<&'static str>,
    /// The type name of a `fn` the macro declares inside the function's
    /// site, whose path, unlike `module_path!()`, names a function the
    /// cached one is nested in, or in an `impl`, its `Self` type
    /// ([`nesting`]).
    pub scope: Option<fn() -> &'static str>,
    /// Whether the function is a method (its site an associated function
    /// of the `impl`).
    pub in_impl: bool,
    /// `line!()` and `column!()` at the attribute: tells apart nested
    /// functions whose paths agree (one name in two closures or blocks of
    /// one function).
    pub line: u32,
    /// See [`SiteIdent::line`].
    pub column: u32,
    /// A hash of the function's tokens (signature and body, as the
    /// attribute saw them): tells apart nested functions that one macro
    /// expands in one place with different bodies.
    pub tokens: u64,
}

/// Where a cached function declared in another item's body is: the path
/// of that item (from [`SiteIdent::scope`]: `app::api::handler` for `fn
/// helper` in `fn handler`, `<app::S as app::Svc>::call` in a trait
/// method, `app::api::handler::{{closure}}` in an async fn) and the place
/// of its declaration. `None` for a function declared in a module (its
/// path is its module's). Two nested functions of one name are two
/// functions: this keeps their entries apart.
///
/// A method is told apart by its `Self` type's name, which is enough for a
/// type named in its module (`app::api::S` for `impl S` in `app::api`).
/// A type declared in a function's body is not: two blocks of one function
/// may each declare an `S` with its own `impl`, and both are
/// `app::api::handler::S`. Such methods, and those of a type named
/// elsewhere (`impl super::S`), get their place in the salt (not in the
/// prefix, which stays `{module}.{name}`).
pub(crate) fn nesting(ident: &SiteIdent) -> Option<Nesting> {
    let path = (ident.scope?)();
    // `{enclosing}::__cached_site_{name}::scope`: the enclosing item, or
    // in an `impl`, the `Self` type.
    let enclosing = path.rsplitn(3, "::").nth(2)?;
    // `module_path!()` keeps `r#` (`app::r#async`), type names do not.
    let module_path = ident.module_path.replace("r#", "");
    let place = |what: &str| {
        format!(
            "{what}{enclosing} at {}:{} tokens {:016x}",
            ident.line, ident.column, ident.tokens
        )
    };
    if ident.in_impl {
        // An `impl` that rustc names by its place (`app::f::<impl app::T>`,
        // `app::child::<impl app::Parent>`) or a type it names in full
        // (`<dyn app::Tr>`): mostly a type two blocks cannot both declare.
        // (A local type whose `impl` stands in another item than the type,
        // `app::f::{{closure}}::<impl app::f::S>`, reads the same as an
        // `impl child::S` in `app`, whose keys must not move: left to the
        // type's name, as documented.)
        if enclosing.starts_with('<') || enclosing.contains("::<impl ") {
            return None;
        }
        // `app::api::handler::S`, `app::api::handler::Page<_>`: the path
        // before any type arguments has items between the module and the
        // type's name, the functions (or closures) it is declared in.
        let bare = enclosing.split('<').next().unwrap_or_default();
        let in_function = bare.rsplit_once("::").is_some_and(|(parent, _)| {
            parent
                .strip_prefix(module_path.as_str())
                .is_some_and(|rest| rest.starts_with("::"))
        });
        return in_function.then(|| Nesting {
            enclosing: None,
            salt: place("impl "),
        });
    }
    (enclosing != module_path).then(|| Nesting {
        enclosing: Some(enclosing),
        salt: place(""),
    })
}

/// See [`nesting`].
pub(crate) struct Nesting {
    /// The enclosing item's path, as `type_name` writes it, for the
    /// prefix; `None` for a method, whose prefix is its module's.
    pub enclosing: Option<&'static str>,
    /// The path and the declaration's line and column, for the salt.
    pub salt: String,
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
    /// `codec = "..."`.
    pub codec: CodecOption,
    /// `cache = "..."`: the named cache (see `init_named`); `None` for the
    /// default cache.
    pub cache: Option<&'static str>,
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
        codec: CodecOption::Auto,
        cache: None,
    };
}

/// The type-name lists a function's calls were seen with (methods:
/// `Self`; generic functions: their type parameters), for invalidation by
/// arguments. `const`-constructible, to live in the function's `static`.
#[derive(Debug)]
pub(crate) struct SiteTypes {
    /// The first list, without a lock: most functions, methods of a
    /// non-generic `impl` included, only ever have this one.
    first: OnceLock<&'static [&'static str]>,
    /// Further lists, up to [`MAX_INSTANTIATIONS`] in all.
    more: Mutex<Vec<&'static [&'static str]>>,
}

impl SiteTypes {
    pub(crate) const fn new() -> Self {
        Self {
            first: OnceLock::new(),
            more: Mutex::new(Vec::new()),
        }
    }

    /// Records the type names of a call of `fn_name` (its instantiation),
    /// so that invalidation by arguments can rebuild the keys of every one
    /// seen. Cheap when seen before: a comparison with the first list, no
    /// lock.
    pub(crate) fn record(&self, fn_name: &str, names: &[&'static str]) {
        if names.is_empty() {
            return;
        }
        let first = *self.first.get_or_init(|| leak(names));
        if first == names {
            return;
        }
        let mut more = self.more.lock().unwrap_or_else(|e| e.into_inner());
        if more.contains(&names) {
            return;
        }
        if more.len() + 1 < MAX_INSTANTIATIONS {
            more.push(leak(names));
        } else if more.len() + 1 == MAX_INSTANTIATIONS {
            // One placeholder marks the overflow.
            more.push(&[]);
            tracing::warn!(
                function = fn_name,
                "over {MAX_INSTANTIATIONS} instantiations of a cached generic function; \
                 invalidate_args cannot name them all, invalidate its prefix instead"
            );
        }
    }

    /// The type-name lists seen so far: `Some(vec![])` when calls carry
    /// none (a free, non-generic function), `None` when too many were seen
    /// to list them all.
    pub(crate) fn instantiations(&self) -> Option<Vec<&'static [&'static str]>> {
        let Some(first) = self.first.get() else {
            return Some(Vec::new());
        };
        let more = self.more.lock().unwrap_or_else(|e| e.into_inner());
        if more.iter().any(|names| names.is_empty()) {
            return None;
        }
        Some(
            std::iter::once(*first)
                .chain(more.iter().copied())
                .collect(),
        )
    }
}

/// The prefix segment of a function's keys and stats hash.
pub(crate) fn prefix(ident: &SiteIdent, options: &SiteOptions) -> String {
    prefix_nested(ident, options, nesting(ident).as_ref())
}

/// [`prefix`], with the function's [`nesting`] already found.
fn prefix_nested(ident: &SiteIdent, options: &SiteOptions, nesting: Option<&Nesting>) -> String {
    match options.prefix {
        Some(p) => p.to_owned(),
        // `::` would put colons into the key segment; dots keep
        // `{namespace}:{prefix}:{hash}` splittable.
        None => match nesting.and_then(|n| n.enclosing) {
            None => format!("{}.{}", ident.module_path.replace("::", "."), ident.fn_name),
            // The enclosing item's path instead of the module's: `{{closure}}`
            // (an async fn, a closure) becomes `closure`, since braces in a
            // key are a Redis Cluster hash tag (every such function would
            // share one slot), and whitespace (`<S as Svc>`) `_`.
            Some(enclosing) => {
                let path: String = enclosing
                    .replace("::", ".")
                    .chars()
                    .filter(|c| !matches!(c, '{' | '}'))
                    .map(|c| if c.is_whitespace() { '_' } else { c })
                    .collect();
                format!("{path}.{}", ident.fn_name)
            }
        },
    }
}

/// What a function (its [`SiteIdent`] and [`SiteOptions`]) resolves to
/// under a config.
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
    /// The cache's key memo, unless it has none.
    pub key_memo: Option<Arc<KeyMemo>>,
    /// Whether this function's keys go through it now.
    pub key_memo_gate: MemoGate,
    /// Moving average of the body's compute time in µs (0: never run),
    /// for lock leases.
    compute_avg_us: AtomicU64,
    /// The codec its values are written with.
    pub codec: CodecChoice,
}

impl ResolvedSite {
    /// With `refresh`, the lifetime a hit restarts.
    pub(crate) fn touch(&self) -> Option<Duration> {
        self.refresh.then_some(self.ttl + self.stale)
    }

    /// [`ResolvedSite::touch`] for reads that learn what was left: no
    /// restart of an entry in its stale window, which keeps running (the
    /// entry is judged stale by the same rule, `freshness::sliding_age`),
    /// so that a refresh that fails is tried again and the entry ends with
    /// its window.
    pub(crate) fn touch_unless_stale(&self) -> Option<crate::store::Touch> {
        self.touch().map(|to| crate::store::Touch {
            to,
            unless_below: self.stale,
        })
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

    /// What the body usually costs, once it has run in this process.
    pub(crate) fn compute_estimate(&self) -> Option<Duration> {
        match self.compute_avg_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

impl ResolvedSite {
    /// What a function derives from `config`; its counters come from
    /// `stats` and its keys go through `key_memo` (the cache's own).
    pub(crate) fn new(
        ident: &SiteIdent,
        options: &SiteOptions,
        config: &Config,
        stats: &StatsRegistry,
        key_memo: Option<Arc<KeyMemo>>,
    ) -> Self {
        let nesting = nesting(ident);
        let prefix = prefix_nested(ident, options, nesting.as_ref());
        // The attribute and the config refuse longer lifetimes; options
        // built otherwise are held to the same bound.
        let lifetime = |secs: u64| Duration::from_secs(secs).min(MAX_LIFETIME);
        let ttl = options
            .ttl_secs
            .map(lifetime)
            .unwrap_or(config.default_ttl)
            .min(MAX_LIFETIME);
        let key_head = format!("{}:{}:", config.namespace, prefix);
        let local = options.local.map(|entries| {
            let level = Arc::new(LocalLevel::new(
                entries,
                config.local_max_bytes,
                config.max_value_bytes as u64,
            ));
            crate::local::register(&key_head, &level);
            level
        });
        Self {
            key_head,
            local,
            key_memo,
            key_memo_gate: MemoGate::default(),
            salt_digest: key::salt_digest(&salt_parts(
                ident,
                options,
                config,
                nesting.as_ref().map(|n| n.salt.as_str()),
            )),
            ttl,
            stale: lifetime(options.stale_secs),
            negative_ttl: lifetime(options.cache_none_secs.unwrap_or(0)),
            refresh: options.refresh,
            lock: options.lock,
            early: options.early,
            early_beta: 1.0,
            stats: stats.for_prefix(&prefix),
            compute_avg_us: AtomicU64::new(0),
            codec: CodecChoice::new(options.codec),
            prefix,
        }
    }
}

/// The salt of a call site without type names: the base that
/// [`key::with_type_names`] extends for generic calls.
fn salt_parts<'a>(
    ident: &'a SiteIdent,
    options: &'a SiteOptions,
    config: &'a Config,
    nesting: Option<&'a str>,
) -> SaltParts<'a> {
    SaltParts {
        nesting,
        config_salt: &config.salt,
        crate_name: ident.crate_name,
        crate_version: ident.crate_version,
        git_sha: ident.git_sha,
        module_path: ident.module_path,
        fn_name: ident.fn_name,
        return_type: ident.return_type,
        version: options.version,
        type_names: &[],
    }
}

/// A type-name list kept for the life of the process (at most
/// [`MAX_INSTANTIATIONS`] per function, each a few pointers).
fn leak(names: &[&'static str]) -> &'static [&'static str] {
    Box::leak(names.to_vec().into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(scope: fn() -> &'static str) -> SiteIdent {
        SiteIdent {
            module_path: "app::api",
            fn_name: "helper",
            return_type: "u32",
            crate_name: "app",
            crate_version: "1.0.0",
            git_sha: None,
            scope: Some(scope),
            in_impl: false,
            line: 12,
            column: 5,
            tokens: 7,
        }
    }

    fn prefix_of(ident: &SiteIdent) -> String {
        prefix(ident, &SiteOptions::DEFAULT)
    }

    #[test]
    fn nesting_names_the_enclosing_item() {
        let top = ident(|| "app::api::__cached_site_helper::scope");
        assert!(nesting(&top).is_none());
        assert_eq!(prefix_of(&top), "app.api.helper");
        let nested = ident(|| "app::api::handler::__cached_site_helper::scope");
        let n = nesting(&nested).unwrap();
        assert_eq!(n.enclosing, Some("app::api::handler"));
        assert_eq!(n.salt, "app::api::handler at 12:5 tokens 0000000000000007");
        assert_eq!(prefix_of(&nested), "app.api.handler.helper");
        // An anonymous const is an item of its own: not the module.
        let in_const = ident(|| "app::api::_::__cached_site_helper::scope");
        assert_eq!(prefix_of(&in_const), "app.api._.helper");
        // In an async fn or a closure: no braces (a Redis Cluster hash tag).
        let in_async = ident(|| "app::api::handler::{{closure}}::__cached_site_helper::scope");
        assert_eq!(prefix_of(&in_async), "app.api.handler.closure.helper");
        // In a trait method: its qualified path, no whitespace.
        let in_trait =
            ident(|| "<app::api::S1 as app::api::Svc>::call::__cached_site_helper::scope");
        assert_eq!(
            prefix_of(&in_trait),
            "<app.api.S1_as_app.api.Svc>.call.helper"
        );
        // In a module declared in a function's body.
        let in_mod = ident(|| "app::handler::api::__cached_site_helper::scope");
        assert_eq!(prefix_of(&in_mod), "app.handler.api.helper");
        // A raw identifier in the module: `module_path!()` spells `r#`,
        // type names do not; still a function of the module.
        let raw = SiteIdent {
            module_path: "app::r#async",
            ..ident(|| "app::async::__cached_site_helper::scope")
        };
        assert!(nesting(&raw).is_none());
        assert_eq!(prefix_of(&raw), "app.r#async.helper");
        // Methods: a type named in the module is its name; one declared in
        // a function's body (or named elsewhere) gets its place in the
        // salt, and keeps the module's prefix.
        let method = |scope| SiteIdent {
            in_impl: true,
            ..ident(scope)
        };
        for named in [
            method(|| "app::api::S::__cached_site_helper::scope"),
            method(|| "app::api::Page<_>::__cached_site_helper::scope"),
            SiteIdent {
                module_path: "app::r#async",
                ..method(|| "app::async::S::__cached_site_helper::scope")
            },
        ] {
            assert!(nesting(&named).is_none());
        }
        let local = method(|| "app::api::handler::S::__cached_site_helper::scope");
        let n = nesting(&local).unwrap();
        assert_eq!(n.enclosing, None);
        assert_eq!(
            n.salt,
            "impl app::api::handler::S at 12:5 tokens 0000000000000007"
        );
        assert_eq!(prefix_of(&local), "app.api.helper");
        let in_closure =
            method(|| "app::api::handler::{{closure}}::S::__cached_site_helper::scope");
        assert!(nesting(&in_closure).is_some());
        // Types named elsewhere keep their keys: an `impl` in a function's
        // body or a child module (rustc names it by its place), a `dyn`
        // type, a module declared in a function (`module_path!()` leaves
        // the function out).
        for kept in [
            method(|| "app::api::holder::<impl app::api::Top>::__cached_site_helper::scope"),
            method(|| "app::api::<impl app::Parent>::__cached_site_helper::scope"),
            method(|| "<dyn app::api::Tr>::__cached_site_helper::scope"),
            SiteIdent {
                module_path: "app::inner",
                ..method(|| "app::holder::inner::T::__cached_site_helper::scope")
            },
        ] {
            assert!(nesting(&kept).is_none(), "{}", (kept.scope.unwrap())());
        }
        // An explicit prefix is kept as written.
        let named = SiteOptions {
            prefix: Some("users"),
            ..SiteOptions::DEFAULT
        };
        assert_eq!(prefix(&in_async, &named), "users");
    }

    /// One name in two closures of one function: the same path, two
    /// places, two salts.
    #[test]
    fn the_place_tells_apart_what_the_path_does_not() {
        let config = Config::default();
        let a = ident(|| "app::api::handler::{{closure}}::__cached_site_helper::scope");
        let b = SiteIdent { line: 20, ..a };
        // One macro expanding two bodies in one place.
        let c = SiteIdent { tokens: 8, ..a };
        let salt = |i: &SiteIdent| {
            let nesting = nesting(i).unwrap();
            key::salt_digest(&salt_parts(
                i,
                &SiteOptions::DEFAULT,
                &config,
                Some(&nesting.salt),
            ))
        };
        assert_eq!(prefix_of(&a), prefix_of(&b));
        assert_ne!(salt(&a), salt(&b));
        assert_ne!(salt(&a), salt(&c));
    }
}
