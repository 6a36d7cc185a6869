//! The attribute's options (`#[cached(ttl = 300, prefix = "users", ...)]`)
//! parsed into typed values.
//!
//! Each option takes one literal of one type; anything else is an error at
//! that literal saying what is expected. Checks that need the function
//! (does a skipped name exist?) are in `valid.rs`.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitStr, Meta, Path, UnOp};

use crate::errors::Errors;

/// The options this version understands, in the order the docs list them.
const OPTIONS: &[&str] = &[
    "ttl",
    "prefix",
    "skip",
    "refresh",
    "version",
    "crate",
    "lock",
    "stale",
    "early",
    "cache_none",
    "local",
    "codec",
    "cache",
    "returns",
];

/// Options of the API that this version does not implement yet: named in
/// their own error rather than as unknown.
const NOT_YET: &[&str] = &[];

/// The parsed options; `None` where the attribute does not give one.
#[derive(Default)]
pub(crate) struct Options {
    /// `ttl = 300`: seconds, at least 1.
    pub(crate) ttl: Option<u64>,
    /// `prefix = "users"`: non-empty, no `:`, no whitespace.
    pub(crate) prefix: Option<LitStr>,
    /// `skip = "conn, logger"`.
    pub(crate) skip: Option<Skip>,
    /// `refresh = true`.
    pub(crate) refresh: Option<bool>,
    /// `version = "2"`.
    pub(crate) version: Option<LitStr>,
    /// `crate = "my_cache"`.
    pub(crate) krate: Option<Path>,
    /// `lock = true`.
    pub(crate) lock: Option<bool>,
    /// `stale = 30`: seconds, at least 1.
    pub(crate) stale: Option<u64>,
    /// `early = true`.
    pub(crate) early: Option<bool>,
    /// `cache_none = 60`: seconds, at least 1; the literal, for errors about
    /// the function's return type.
    pub(crate) cache_none: Option<(u64, proc_macro2::Span)>,
    /// `local = 1000`: entries of the in-process level, at least 1.
    pub(crate) local: Option<u64>,
    /// `codec = "json"`: the value codec, forced.
    pub(crate) codec: Option<CodecName>,
    /// `cache = "sessions"`: the named cache, non-empty.
    pub(crate) cache: Option<LitStr>,
    /// `returns = "result"`: the return shape, declared; the literal, for
    /// errors about the function's return type.
    pub(crate) returns: Option<(Returns, LitStr)>,
}

/// A codec the `codec` option can force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodecName {
    Bincode,
    Json,
}

/// What `returns = "..."` declares the return type to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Returns {
    /// `"result"`: a `Result` (through an alias): `Ok` stored, `Err` never.
    Result,
    /// `"option"`: an `Option`: `Some` stored.
    Option,
    /// `"plain"`: any value, stored whole (a `Result` alias's `Err` too).
    Plain,
}

/// `skip = "a, b"`: the literal (errors about its names point at it) and
/// the names in it, trimmed, in order, without duplicates.
pub(crate) struct Skip {
    pub(crate) lit: LitStr,
    pub(crate) names: Vec<String>,
}

impl Options {
    /// Whether `name` (a parameter name, without `r#`) is listed in `skip`.
    pub(crate) fn skips(&self, name: &str) -> bool {
        self.skip
            .as_ref()
            .is_some_and(|skip| skip.names.iter().any(|n| n == name))
    }
}

/// Parses the attribute's arguments. Each comma-separated option is
/// parsed on its own: a syntax error (not `name = value`) is recorded and
/// that option left out, as is every other mistake, so that all errors of
/// the attribute are reported at once.
pub(crate) fn parse(args: TokenStream, errors: &mut Errors) -> Options {
    let mut options = Options::default();
    // Names given so far, valid or not: a repeated option is reported even
    // when its first value was refused.
    let mut seen = Vec::new();
    for (option, comma) in split_at_commas(args) {
        if let (true, Some(comma)) = (option.is_empty(), comma) {
            errors.push(syn::Error::new(
                comma,
                "no option before this `,`: remove it",
            ));
            continue;
        }
        match one_option.parse2(option) {
            Ok(meta) => parse_one(&meta, &mut options, &mut seen, errors),
            // syn says what token it expected ("expected `,`"); the user
            // needs the form of the whole list.
            Err(e) => errors.push(syn::Error::new(
                e.span(),
                format_args!(
                    "{e}: options are written `name = value`, separated by commas, \
                     like `#[cached(ttl = 300, prefix = \"users\")]`"
                ),
            )),
        }
    }
    options
}

/// The attribute's arguments cut at their top-level commas (a comma
/// inside brackets or a string belongs to its option), each with the
/// comma that ends it; a trailing comma adds no empty option, but an
/// empty option before a comma is kept, to be refused there.
fn split_at_commas(args: TokenStream) -> Vec<(TokenStream, Option<proc_macro2::Span>)> {
    let mut options = vec![(TokenStream::new(), None)];
    for token in args {
        match &token {
            proc_macro2::TokenTree::Punct(p) if p.as_char() == ',' => {
                options.last_mut().expect("never empty").1 = Some(p.span());
                options.push((TokenStream::new(), None));
            }
            _ => options.last_mut().expect("never empty").0.extend([token]),
        }
    }
    if options.last().is_some_and(|(option, _)| option.is_empty()) {
        options.pop();
    }
    options
}

/// One option: a `Meta` and nothing after it.
fn one_option(input: syn::parse::ParseStream<'_>) -> syn::Result<Meta> {
    let meta: Meta = input.parse()?;
    if !input.is_empty() {
        return Err(input.error("expected `,`"));
    }
    Ok(meta)
}

fn parse_one(meta: &Meta, options: &mut Options, seen: &mut Vec<String>, errors: &mut Errors) {
    let path = meta.path();
    let name = match path.get_ident() {
        Some(ident) => ident.to_string(),
        None => {
            errors.at(path, unknown_option(&quote::quote!(#path).to_string()));
            return;
        }
    };
    let Some(example) = example(&name) else {
        errors.at(path, unknown_option(&name));
        return;
    };
    if seen.contains(&name) {
        errors.at(path, format_args!("duplicate option `{name}`"));
        return;
    }
    seen.push(name.clone());
    let value = match meta {
        Meta::NameValue(nv) => &nv.value,
        Meta::Path(_) | Meta::List(_) => {
            errors.at(
                meta,
                format_args!("expected `{name} = ...`, like `{example}`"),
            );
            return;
        }
    };
    match name.as_str() {
        "ttl" => options.ttl = parse_seconds("ttl", value, errors),
        "stale" => options.stale = parse_seconds("stale", value, errors),
        "cache_none" => {
            options.cache_none = parse_seconds("cache_none", value, errors)
                .map(|secs| (secs, syn::spanned::Spanned::span(value)));
        }
        "local" => options.local = parse_entries(value, errors),
        "lock" => options.lock = parse_bool("lock", value, errors),
        "early" => options.early = parse_bool("early", value, errors),
        "prefix" => options.prefix = parse_prefix(value, errors),
        "skip" => options.skip = parse_skip(value, errors),
        "refresh" => options.refresh = parse_bool("refresh", value, errors),
        "version" => options.version = parse_version(value, errors),
        "codec" => options.codec = parse_codec(value, errors),
        "cache" => options.cache = parse_cache(value, errors),
        "returns" => options.returns = parse_returns(value, errors),
        _ => options.krate = parse_crate(value, errors),
    }
}

/// How each option is written, for error messages; `None` for an unknown
/// option.
fn example(name: &str) -> Option<&'static str> {
    Some(match name {
        "ttl" => "ttl = 300",
        "prefix" => "prefix = \"users\"",
        "skip" => "skip = \"conn, logger\"",
        "refresh" => "refresh = true",
        "version" => "version = \"2\"",
        "crate" => "crate = \"my_cache\"",
        "lock" => "lock = true",
        "stale" => "stale = 30",
        "early" => "early = true",
        "cache_none" => "cache_none = 60",
        "local" => "local = 1000",
        "codec" => "codec = \"json\"",
        "cache" => "cache = \"sessions\"",
        "returns" => "returns = \"result\"",
        _ => return None,
    })
}

fn unknown_option(name: &str) -> String {
    let valid = OPTIONS
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if NOT_YET.contains(&name) {
        format!("option `{name}` is not supported by this version of cached-redis yet; the supported options are {valid}")
    } else {
        format!("unknown option `{name}`; the options are {valid}")
    }
}

/// The literal `expr` is, looking through the invisible groups that
/// `macro_rules!` puts around `$x:expr`.
fn literal(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        Expr::Group(group) => literal(&group.expr),
        _ => None,
    }
}

/// A whole number of seconds, at least 1, for option `name`.
/// The longest `ttl`, `stale` or `cache_none`: 100 years (the runtime's
/// `MAX_LIFETIME`). Longer ones would overflow the clocks entries are
/// timed with.
const MAX_SECONDS: u64 = 100 * 365 * 24 * 3600;

fn parse_seconds(name: &str, value: &Expr, errors: &mut Errors) -> Option<u64> {
    let at_least_one = format!("`{name}` is a number of seconds and must be at least 1");
    let int = match (literal(value), value) {
        (Some(Lit::Int(int)), _) => int,
        (
            _,
            Expr::Unary(ExprUnary {
                op: UnOp::Neg(_), ..
            }),
        ) => {
            errors.at(value, at_least_one);
            return None;
        }
        _ => {
            let example = example(name).unwrap_or("ttl = 300");
            errors.at(
                value,
                format_args!("expected an integer number of seconds, like `{example}`"),
            );
            return None;
        }
    };
    // syn reads `-5` as one negative literal.
    if int.base10_digits().starts_with('-') {
        errors.at(int, at_least_one);
        return None;
    }
    if !suffix_fits(int, name, errors) {
        return None;
    }
    match int.base10_parse::<u64>() {
        Ok(0) => {
            errors.at(int, at_least_one);
            None
        }
        Ok(secs) if secs > MAX_SECONDS => {
            errors.at(
                int,
                format_args!(
                    "`{name}` is at most {MAX_SECONDS} seconds (100 years); \
                     for entries that should last, a year is `{name} = 31536000`"
                ),
            );
            None
        }
        Ok(secs) => Some(secs),
        Err(e) => {
            errors.at(int, format_args!("invalid `{name}`: {e}"));
            None
        }
    }
}

/// Whether `int`'s type suffix, if any, is one its value fits: `60u64`
/// is fine, `1000u8` is no `u8`, and nothing else would say so (the
/// option reads the digits). An error at it otherwise.
fn suffix_fits(int: &syn::LitInt, name: &str, errors: &mut Errors) -> bool {
    let max: u128 = match int.suffix() {
        "" | "u64" | "u128" | "usize" | "i128" => return true,
        "u8" => u8::MAX.into(),
        "u16" => u16::MAX.into(),
        "u32" => u32::MAX.into(),
        "i8" => i8::MAX as u128,
        "i16" => i16::MAX as u128,
        "i32" => i32::MAX as u128,
        "i64" | "isize" => i64::MAX as u128,
        _ => 0,
    };
    if int.base10_parse::<u128>().is_ok_and(|v| v <= max) {
        return true;
    }
    errors.at(
        int,
        format_args!(
            "`{}{}` does not fit its `{}` suffix: write `{name} = {}`, without the suffix",
            int.base10_digits(),
            int.suffix(),
            int.suffix(),
            int.base10_digits()
        ),
    );
    false
}

/// `local = N`: a whole number of entries, at least 1.
fn parse_entries(value: &Expr, errors: &mut Errors) -> Option<u64> {
    let at_least_one = "`local` is a number of entries and must be at least 1";
    let int = match literal(value) {
        Some(Lit::Int(int)) if !int.base10_digits().starts_with('-') => int,
        _ if matches!(
            value,
            Expr::Unary(ExprUnary {
                op: UnOp::Neg(_),
                ..
            })
        ) =>
        {
            errors.at(value, at_least_one);
            return None;
        }
        Some(Lit::Int(int)) => {
            errors.at(int, at_least_one);
            return None;
        }
        _ => {
            errors.at(
                value,
                "expected an integer number of entries, like `local = 1000`",
            );
            return None;
        }
    };
    if !suffix_fits(int, "local", errors) {
        return None;
    }
    match int.base10_parse::<u64>() {
        Ok(0) => {
            errors.at(int, at_least_one);
            None
        }
        Ok(entries) => Some(entries),
        Err(e) => {
            errors.at(int, format_args!("invalid `local`: {e}"));
            None
        }
    }
}

fn parse_prefix(value: &Expr, errors: &mut Errors) -> Option<LitStr> {
    let Some(Lit::Str(lit)) = literal(value) else {
        errors.at(value, "expected a string, like `prefix = \"users\"`");
        return None;
    };
    let text = lit.value();
    let problem = if text.is_empty() {
        "`prefix` cannot be empty; leave the option out for the default (module path and function name)"
    } else if text.contains(':') {
        "`prefix` cannot contain `:`, which separates the segments of a key (`{namespace}:{prefix}:{hash}`)"
    } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "`prefix` cannot contain whitespace or control characters"
    } else {
        return Some(lit.clone());
    };
    errors.at(lit, problem);
    None
}

fn parse_skip(value: &Expr, errors: &mut Errors) -> Option<Skip> {
    let Some(Lit::Str(lit)) = literal(value) else {
        errors.at(
            value,
            "expected a string of comma-separated parameter names, like `skip = \"conn, logger\"`",
        );
        return None;
    };
    let text = lit.value();
    let mut parts: Vec<&str> = text.split(',').map(str::trim).collect();
    // Tolerate one trailing comma, as Rust does in lists.
    if parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    // A mistake in the list is reported and the rest of the list kept, so
    // that the checks that follow see the skips meant (no "`conn` must be
    // skipped" beside "`conn` is listed twice").
    let mut names: Vec<String> = Vec::with_capacity(parts.len());
    for part in parts {
        // `r#type` names the parameter `type`.
        let name = part.strip_prefix("r#").unwrap_or(part);
        if part.is_empty() {
            errors.at(
                lit,
                "`skip` has an empty name; list parameter names separated by commas, like `skip = \"conn, logger\"`",
            );
        } else if names.iter().any(|n| n == name) {
            errors.at(lit, format_args!("`{part}` is listed twice in `skip`"));
        } else {
            names.push(name.to_owned());
        }
    }
    Some(Skip {
        lit: lit.clone(),
        names,
    })
}

/// `true` or `false`, for option `name`.
fn parse_bool(name: &str, value: &Expr, errors: &mut Errors) -> Option<bool> {
    match literal(value) {
        Some(Lit::Bool(b)) => Some(b.value),
        _ => {
            errors.at(
                value,
                format_args!("expected `true` or `false`, like `{name} = true`"),
            );
            None
        }
    }
}

fn parse_version(value: &Expr, errors: &mut Errors) -> Option<LitStr> {
    match literal(value) {
        Some(Lit::Str(lit)) => Some(lit.clone()),
        _ => {
            errors.at(value, "expected a string, like `version = \"2\"`");
            None
        }
    }
}

fn parse_codec(value: &Expr, errors: &mut Errors) -> Option<CodecName> {
    const EXPECTED: &str = "expected `codec = \"bincode\"` or `codec = \"json\"` (leave the option out to choose per function: bincode when the value type reads back from it, JSON otherwise)";
    let Some(Lit::Str(lit)) = literal(value) else {
        errors.at(value, EXPECTED);
        return None;
    };
    match lit.value().as_str() {
        "bincode" => Some(CodecName::Bincode),
        "json" => Some(CodecName::Json),
        _ => {
            errors.at(lit, EXPECTED);
            None
        }
    }
}

fn parse_cache(value: &Expr, errors: &mut Errors) -> Option<LitStr> {
    const EXPECTED: &str = "expected the name of a cache installed with `init_named`, like `cache = \"sessions\"` (leave the option out for the default cache)";
    match literal(value) {
        Some(Lit::Str(lit)) if !lit.value().is_empty() => Some(lit.clone()),
        Some(Lit::Str(lit)) => {
            errors.at(lit, EXPECTED);
            None
        }
        _ => {
            errors.at(value, EXPECTED);
            None
        }
    }
}

fn parse_returns(value: &Expr, errors: &mut Errors) -> Option<(Returns, LitStr)> {
    const EXPECTED: &str = "expected `returns = \"result\"` (`Ok` cached, `Err` never), `returns = \"option\"` (`Some` cached) or `returns = \"plain\"` (the whole value cached)";
    let Some(Lit::Str(lit)) = literal(value) else {
        errors.at(value, EXPECTED);
        return None;
    };
    let returns = match lit.value().as_str() {
        "result" => Returns::Result,
        "option" => Returns::Option,
        "plain" => Returns::Plain,
        _ => {
            errors.at(lit, EXPECTED);
            return None;
        }
    };
    Some((returns, lit.clone()))
}

fn parse_crate(value: &Expr, errors: &mut Errors) -> Option<Path> {
    let Some(Lit::Str(lit)) = literal(value) else {
        errors.at(
            value,
            "expected a path in a string, like `crate = \"my_cache\"`",
        );
        return None;
    };
    match lit.parse::<Path>() {
        Ok(path) => Some(path),
        Err(_) => {
            errors.at(
                lit,
                format_args!(
                    "`{}` is not a path; expected the path of the crate re-exporting cached-redis, like `crate = \"my_cache\"`",
                    lit.value()
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse_ok(args: TokenStream) -> Options {
        let mut errors = Errors::default();
        let options = parse(args, &mut errors);
        if let Err(e) = errors.finish() {
            panic!("unexpected error: {e}");
        }
        options
    }

    fn messages(args: TokenStream) -> Vec<String> {
        let mut errors = Errors::default();
        parse(args, &mut errors);
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn empty_attribute_is_all_defaults() {
        let o = parse_ok(quote!());
        assert!(o.ttl.is_none() && o.prefix.is_none() && o.skip.is_none());
        assert!(o.refresh.is_none() && o.version.is_none() && o.krate.is_none());
    }

    #[test]
    fn every_option() {
        let o = parse_ok(quote!(
            ttl = 300,
            prefix = "es_search",
            skip = "client, r#type,",
            refresh = true,
            version = "v2",
            crate = "my::cache",
        ));
        assert_eq!(o.ttl, Some(300));
        assert_eq!(o.prefix.unwrap().value(), "es_search");
        assert_eq!(o.skip.unwrap().names, ["client", "type"]);
        assert_eq!(o.refresh, Some(true));
        assert_eq!(o.version.unwrap().value(), "v2");
        let krate = o.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), "my :: cache");
    }

    #[test]
    fn unknown_option_lists_the_valid_ones() {
        let m = messages(quote!(tll = 3));
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("unknown option `tll`"), "{m:?}");
        assert!(m[0].contains("`ttl`, `prefix`, `skip`, `refresh`, `version`, `crate`"));
    }

    #[test]
    fn local_takes_a_positive_number_of_entries() {
        assert!(messages(quote!(local = 100)).is_empty());
        let m = messages(quote!(local = 0));
        assert_eq!(m, ["`local` is a number of entries and must be at least 1"]);
        let m = messages(quote!(local = true));
        assert_eq!(
            m,
            ["expected an integer number of entries, like `local = 1000`"]
        );
    }

    #[test]
    fn duplicate_option() {
        let m = messages(quote!(ttl = 1, ttl = 2));
        assert_eq!(m, ["duplicate option `ttl`"]);
    }

    #[test]
    fn wrong_literal_types() {
        let m = messages(quote!(
            ttl = "300",
            prefix = 3,
            refresh = 1,
            version = 2,
            crate = x
        ));
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!(
            m[0],
            "expected an integer number of seconds, like `ttl = 300`"
        );
        assert!(m[1].starts_with("expected a string"));
        assert!(m[2].starts_with("expected `true` or `false`"));
        assert!(m[3].starts_with("expected a string"));
        assert!(m[4].starts_with("expected a path in a string"));
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(messages(quote!(ttl = 0)).len(), 1);
        assert_eq!(
            messages(quote!(ttl = -5)),
            ["`ttl` is a number of seconds and must be at least 1"]
        );
        assert_eq!(messages(quote!(ttl = 99999999999999999999999)).len(), 1);
        assert_eq!(parse_ok(quote!(ttl = 60u64)).ttl, Some(60));
    }

    #[test]
    fn prefix_rules() {
        assert_eq!(messages(quote!(prefix = "")).len(), 1);
        assert!(messages(quote!(prefix = "a:b"))[0].contains("`:`"));
        assert!(messages(quote!(prefix = "a b"))[0].contains("whitespace"));
    }

    #[test]
    fn skip_rules() {
        assert!(messages(quote!(skip = "a,,b"))[0].contains("empty name"));
        assert!(messages(quote!(skip = ""))[0].contains("empty name"));
        assert_eq!(
            messages(quote!(skip = "a, a")),
            ["`a` is listed twice in `skip`"]
        );
        assert_eq!(
            messages(quote!(skip = "type, r#type")),
            ["`r#type` is listed twice in `skip`"]
        );
    }

    #[test]
    fn cache_names_a_cache() {
        let o = parse_ok(quote!(cache = "sessions"));
        assert_eq!(o.cache.map(|l| l.value()).as_deref(), Some("sessions"));
        for bad in [
            quote!(cache = ""),
            quote!(cache = sessions),
            quote!(cache = 1),
        ] {
            let m = messages(bad);
            assert_eq!(m.len(), 1);
            assert!(m[0].starts_with("expected the name of a cache"), "{m:?}");
        }
    }

    #[test]
    fn codec_and_returns() {
        let o = parse_ok(quote!(codec = "json", returns = "result"));
        assert_eq!(o.codec, Some(CodecName::Json));
        assert_eq!(o.returns.map(|r| r.0), Some(Returns::Result));
        let o = parse_ok(quote!(codec = "bincode", returns = "plain"));
        assert_eq!(o.codec, Some(CodecName::Bincode));
        assert_eq!(o.returns.map(|r| r.0), Some(Returns::Plain));
        let m = messages(quote!(codec = "cbor", returns = "either"));
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].starts_with("expected `codec = \"bincode\"` or"),
            "{m:?}"
        );
        assert!(m[1].contains("`returns = \"option\"`"), "{m:?}");
        assert_eq!(messages(quote!(codec = 1)).len(), 1);
    }

    #[test]
    fn option_without_value() {
        assert_eq!(
            messages(quote!(refresh)),
            ["expected `refresh = ...`, like `refresh = true`"]
        );
    }

    #[test]
    fn syntax_error_stops_the_parse() {
        assert_eq!(messages(quote!(ttl 300)).len(), 1);
    }
}
