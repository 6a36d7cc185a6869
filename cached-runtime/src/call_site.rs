//! The one `static` of a cached function ([`CallSite`]): what the
//! attribute wrote ([`SiteIdent`], [`SiteOptions`]), the type names its
//! calls carried, and its binding to the installed cache it uses. It sits
//! beside the engine, above the call flow, because the binding names the
//! engine: `site` below derives settings from a config without knowing
//! where it comes from.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use crate::engine::Engine;
use crate::site::{ResolvedSite, SiteIdent, SiteOptions, SiteTypes};

/// A cached function: one hidden `static` per function, shared by the
/// function and its companions.
#[derive(Debug)]
pub struct CallSite {
    pub(crate) ident: SiteIdent,
    pub(crate) options: SiteOptions,
    /// The installed cache this function uses and what it derives from
    /// that cache's config, bound on first use (see `engine::bind`): after
    /// that, one atomic load finds both.
    pub(crate) bound: OnceLock<(&'static Engine, Arc<ResolvedSite>)>,
    /// Whether the missing named cache was reported already.
    pub(crate) unbound_reported: AtomicBool,
    /// The type-name lists its calls carried.
    types: SiteTypes,
}

impl CallSite {
    /// A call site; `const` so that it can be a `static`.
    pub const fn new(ident: SiteIdent, options: SiteOptions) -> Self {
        Self {
            ident,
            options,
            bound: OnceLock::new(),
            unbound_reported: AtomicBool::new(false),
            types: SiteTypes::new(),
        }
    }

    /// Records the type names of a call (see [`SiteTypes::record`]).
    pub(crate) fn record_types(&self, names: &[&'static str]) {
        self.types.record(self.ident.fn_name, names);
    }

    /// The type-name lists seen so far (see [`SiteTypes::instantiations`]).
    pub(crate) fn instantiations(&self) -> Option<Vec<&'static [&'static str]>> {
        self.types.instantiations()
    }

    /// The prefix segment of its keys and stats hash.
    pub(crate) fn prefix(&self) -> String {
        crate::site::prefix(&self.ident, &self.options)
    }

    /// What this function derives from `engine`'s config.
    pub(crate) fn resolve(&self, engine: &Engine) -> ResolvedSite {
        ResolvedSite::new(
            &self.ident,
            &self.options,
            &engine.config,
            &engine.stats,
            engine.key_memo.clone(),
        )
    }
}
