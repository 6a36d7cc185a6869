//! The `#[cached]` attribute of [cached-redis](https://docs.rs/cached-redis).
//!
//! Use it through `cached-redis`, which re-exports it as
//! `cached_redis::cached` together with the runtime the expansion calls;
//! this crate alone is of no use.
//!
//! The macro works in phases, one module each:
//!
//! | module | phase |
//! | --- | --- |
//! | `attr` | the attribute's options, parsed into typed values |
//! | `ast` | the function: receiver, parameters, return shape, generics |
//! | `valid` | what cannot be supported, and the options checked against the function |
//! | `expand` | the generated code (its module doc shows input and output) |
//! | `errors` | errors gathered across the phases, reported together |
//!
//! Every mistake in one attribute is reported at once, each at its own
//! token; the function is then emitted unchanged, so that no second wave of
//! errors follows.
//!
//! Generated code reaches the runtime only through the doc-hidden module
//! `::cached_redis::__private` (or `<crate>::__private` with
//! `crate = "..."`), which is not a public API.

#![warn(missing_docs)]

mod ast;
mod attr;
mod errors;
mod expand;
mod valid;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;

use crate::errors::Errors;

/// Caches the results of a function in Redis (or in the in-process store).
///
/// ```ignore
/// use cached_redis::cached;
///
/// #[cached(ttl = 300, skip = "client", prefix = "es_search")]
/// async fn search(client: &EsClient, query: &serde_json::Value) -> Result<SearchPage, EsError> {
///     // ...
/// }
/// ```
///
/// # Options
///
/// | option | meaning | default |
/// | --- | --- | --- |
/// | `ttl = <seconds>` | lifetime of an entry, an integer from 1 to 3153600000 (100 years; `stale` and `cache_none` too) | the config's `default_ttl` (300 s) |
/// | `prefix = "<text>"` | the key segment naming this function's entries and its stats; not empty, no `:`, no whitespace | module path and function name: two functions never share entries |
/// | `skip = "a, b"` | arguments left out of the key (connections, clients, loggers); a name that is not a parameter is a compile error | none |
/// | `refresh = true` | every hit resets the TTL (sliding expiry) | `false` |
/// | `version = "<text>"` | extra salt for this function: bump it to drop its old entries | none |
/// | `lock = true` | one computation per key across all processes; other callers wait for its result (distributed lock) | `false` |
/// | `stale = <seconds>` | after `ttl` (with `refresh = true`: `ttl` without a read), keep serving the old value for this long while one caller recomputes, and when recomputing fails | `0` |
/// | `early = true` | probabilistic early recomputation (XFetch) driven by the measured compute time | `false` |
/// | `cache_none = <seconds>` | also cache `None` (negative caching) with its own TTL; only on functions returning `Option` | `None` is not cached |
/// | `codec = "bincode" \| "json"` | force the value codec | per function: bincode when the value reads back from it, JSON otherwise (every store verified) |
/// | `local = <entries>` | an in-process first level of at most this many decoded values (and at most the config's `local_max_bytes`), kept coherent across processes; the value type must be `Clone + Send + Sync + 'static` | no local level |
/// | `cache = "<name>"` | the named cache (`init_named`) this function uses instead of the default one | the default cache |
/// | `returns = "result" \| "option" \| "plain"` | the return shape, for a `Result` or `Option` behind a type alias: `Ok` only, `Some` only, or the whole value | read from the return type's name |
/// | `crate = "<path>"` | where cached-redis is, for crates that re-export it | `::cached_redis` |
///
/// Values are literals of one type each: `ttl = "300"` or `refresh = 1` is
/// an error saying what is expected.
///
/// # Functions it accepts
///
/// - `fn`, `async fn` and `unsafe fn`; free functions and methods. The
///   receiver (`self`, `&self`, `&mut self`, ...) is never part of the key.
/// - Each argument not in `skip` is a key argument: it must have a plain
///   name (not a pattern such as `(a, b): (i32, i32)`) and implement
///   `serde::Serialize`; one that does not is reported at the argument.
///   It cannot be (or hold) a `&mut`: a hit skips the body, so the caller's
///   mutation would silently never happen. A skipped `&mut` (a connection)
///   is fine. `&mut self` is allowed and never in the key; on a hit the
///   body does not run, so nothing in `self` changes: cache such a method
///   only when it needs `&mut self` for access, not to update state.
/// - Generic functions: the concrete type names of the generic type
///   parameters (and of `impl Trait` key arguments) enter the key, so
///   `f::<u8>(1)` and `f::<u32>(1)` never share an entry; so does `Self`
///   for a method, so that `Repo<u8>` and `Repo<String>` (or two `impl`s
///   with a same-named method) never share one; the values of const
///   generic parameters enter it too (`f::<2>` and `f::<3>`). A type
///   parameter that only a skipped argument uses stays in the key (its type
///   may decide the result): the companions that take the key arguments
///   alone name it, `user_cache_key::<PgPool>(id)`. The function's
///   module path, name and return type are in every key, and so are, for a
///   function declared in another item's body (a function, a closure, a
///   trait method) or for a method of a type declared in one, that item's
///   path, the attribute's line and column and a hash of the function's
///   tokens: two functions never share an entry, whatever their `prefix`.
///   Type parameters enter by their `type_name`, which all closures of one
///   function share: a call whose type parameter is a closure runs
///   uncached; two types of one name declared in two blocks of one
///   function share a generic function's entries (name them apart). A
///   skipped `impl Trait` argument's type is not in the key: when it
///   decides the result, declare a type parameter instead. (That path is `std::any::type_name`'s, which
///   a new compiler may spell otherwise, and the place moves with edits
///   above it: such functions' keys may change with the compiler or an
///   edit; builds salted with their git commit change keys on every commit
///   anyway.)
/// - A generic return type (`-> T`) is cached as a plain value, even when a
///   caller picks `T = Result<..>` or `Option<..>`: their `Err` and `None`
///   are cached too. Return `Result<T, E>` to leave errors out.
/// - Key arguments are keyed in their serialization order, apart from
///   object keys (a `HashMap` keys the same in any order): a `HashSet`'s
///   order changes from process to process, so key by a `BTreeSet`. An
///   object that serializes one key twice (a `flatten`ed map holding a
///   field's name) cannot be keyed: its calls run uncached.
/// - The return type: `T` is always cached; `Option<T>` when `Some`;
///   `Result<T, E>` (recognised by the name `Result`, so `io::Result<T>`
///   too) when `Ok`, and `E` needs no traits. The cached type needs
///   `Serialize` and `DeserializeOwned`; every type that round-trips
///   through serde_json is cached. Without a return type, `()` is cached.
///   A `Result` or `Option` behind a type alias (`type ApiResult<T> =
///   Result<T, ApiError>`) is a compile error asking for `returns = "..."`.
///
/// Compile errors: a `const fn`, a return type that borrows (`&T`, `'a`;
/// return an owned type such as `String` or `Vec<T>`), `impl Trait` in the
/// return type, a key argument that is a pattern or a `&mut` or not
/// `Serialize` (reported at the argument), a cached type that is not
/// `Serialize` and `Deserialize`, or not `Clone` with `local` (reported at
/// that type: `Page` in `Result<Page, E>`), a `Result` or `Option` alias
/// without `returns` (or with the other shape's), a function that never
/// returns (`-> !`), a parameter under `#[cfg]` (the key and companions
/// name every parameter: write the function twice instead),
/// `#[track_caller]` (the body runs inside the cache's call), and every
/// mistake in the options. A `#[deprecated]` function's companions are
/// deprecated too.
///
/// # Generated companions
///
/// Next to `fn name(...)`, with its visibility, generics, where-clause and
/// `cfg` attributes (inside an `impl` block, as associated functions beside
/// the method):
///
/// | item | does |
/// | --- | --- |
/// | `name_cache_key(<key args>) -> Result<String, cached_redis::Error>` | the Redis key a call with these arguments uses |
/// | `name_invalidate(<key args>) -> Result<bool, cached_redis::Error>` | removes that entry (`true` if one was there); `async` when `name` is |
/// | `name_refresh(<all args>) -> <return type>` | runs the function and stores the result whatever the cache holds; a `None` that is not cached (no `cache_none`), or a value too large to store (`max_value_bytes`), removes the entry instead |
///
/// `<key args>` are the parameters minus the receiver and the skipped ones,
/// with the same types.
///
/// # Limitations
///
/// - Because companions are generated next to the function, the attribute
///   cannot go on a method of a trait implementation (the companions would
///   not be members of the trait).
/// - The attribute learns that a function is in an `impl` from its
///   receiver or a `Self` in its signature. An associated function without
///   either (`impl Repo { fn find(id: i64) -> User }`) does not compile
///   (`cannot find function __cached_site_find`): add `where Self: Sized`
///   to its signature, or make it a free function.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    match cached_impl(args.into(), item.clone()) {
        Ok(expanded) => expanded.into(),
        Err(error) => {
            // The function unchanged keeps its callers and IDEs working.
            let error = error.to_compile_error();
            quote!(#item #error).into()
        }
    }
}

/// The phases in order; every error of the attribute and the function is
/// gathered before giving up.
fn cached_impl(args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let mut errors = Errors::default();
    let options = attr::parse(args, &mut errors);
    match ast::Function::parse(item) {
        Ok(mut func) => {
            if let Some((returns, _)) = &options.returns {
                func.shape = match returns {
                    attr::Returns::Result => ast::Shape::Result,
                    attr::Returns::Option => ast::Shape::Option,
                    attr::Returns::Plain => ast::Shape::Plain,
                };
                func.shape_declared = true;
            }
            valid::check(&options, &func, &mut errors);
            errors.finish()?;
            Ok(expand::expand(&options, &func))
        }
        Err(error) => Err(errors.and(error)),
    }
}
