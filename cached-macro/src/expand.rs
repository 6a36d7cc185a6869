//! Code generation: the rewritten function and its three companions.
//!
//! Input:
//!
//! ```text
//! #[cached(ttl = 60, skip = "conn")]
//! pub async fn user<T: Serialize>(conn: &Db, id: T, name: &str) -> Result<User, DbError> { body }
//! ```
//!
//! Output, with `P` standing for `::cached_redis::__private` (or
//! `<crate = "...">::__private`):
//!
//! ```text
//! #[doc(hidden)] #[allow(dead_code)]          // one per function, shared by all below
//! fn __cached_site_user() -> &'static P::CallSite {            // in an impl: an associated fn
//!     fn scope() -> &'static str { ::core::any::type_name_of_val(&scope) }
//!     static SITE: P::CallSite = P::CallSite::new(
//!         P::SiteIdent {
//!             module_path: ::core::module_path!(),
//!             fn_name: "user",
//!             return_type: "Result < User , DbError >",          // tokens, one space apart
//!             crate_name: ::core::env!("CARGO_PKG_NAME"),
//!             crate_version: ::core::env!("CARGO_PKG_VERSION"),
//!             git_sha: ::core::option_env!("CACHED_REDIS_GIT_SHA"),
//!             scope: Some(scope),                                 // names enclosing fns, or Self
//!             in_impl: false,
//!             line: ::core::line!(), column: ::core::column!(),   // tell nested fns apart
//!             tokens: 0x1f2e_..._u64,                              // FNV-1a of the fn as written
//!         },
//!         P::SiteOptions { ttl_secs: Some(60), ..P::SiteOptions::DEFAULT },  // only the given options
//!     );
//!     &SITE
//! }
//!
//! pub async fn user<T: Serialize>(conn: &Db, id: T, name: &str) -> Result<User, DbError> {
//!     let __cached_site = __cached_site_user();                 // `Self::__cached_site_user()` in an impl
//!     let __cached_key = {                                    // KEY, below
//!         fn __cached_build_key<__A0: ?Sized + P::KeyArg, __A1: ?Sized + P::KeyArg>(
//!             site: &'static P::CallSite, a0: &__A0, a1: &__A1, type_names: &[&'static str],
//!         ) -> Result<P::CacheKey, ::cached_redis::Error> {
//!             P::build_key(site, &(a0, a1), type_names)
//!         }
//!         __cached_build_key(__cached_site, P::key_arg(&id), P::key_arg(name), &[::core::any::type_name::<T>()])
//!     };
//!     P::call_async(__cached_site, __cached_key, P::ResultShape, async move { body }).await
//!     // a sync fn: P::call_sync(__cached_site, __cached_key, Shape, move || -> Ret { body })
//!     // a plain return type (not named Result/Option) without `returns` first gets
//!     // `P::ShapeProbe::<Ret>::new().check();`, a compile error for a Result/Option alias
//! }
//!
//! /// The cache key ... of [`user`] ...
//! #[allow(dead_code)]
//! pub fn user_cache_key<T: Serialize>(id: T, name: &str) -> Result<String, ::cached_redis::Error> {
//!     let __cached_site = __cached_site_user();               // the same site
//!     KEY.map(P::CacheKey::into_string)
//! }
//!
//! /// Removes the cached result ...
//! #[allow(dead_code)]
//! pub async fn user_invalidate<T: Serialize>(id: T, name: &str) -> Result<bool, ::cached_redis::Error> {
//!     let __cached_site = __cached_site_user();
//!     let __cached_key = KEY;
//!     P::invalidate_async(__cached_site, __cached_key).await // a sync fn: P::invalidate_sync
//! }
//!
//! /// Calls [`user`] and stores its result whatever the cache holds ...
//! #[allow(dead_code)]
//! pub async fn user_refresh<T: Serialize>(conn: &Db, id: T, name: &str) -> Result<User, DbError> {
//!     P::force_refresh_async(user::<T>(conn, id, name)).await
//!     // a sync fn: P::force_refresh_sync(move || user::<T>(conn, id, name))
//! }
//! ```
//!
//! Methods: the receiver is never in the key; `_cache_key` and
//! `_invalidate` are associated functions without it, `_refresh` takes it
//! and calls `Self::user(self, ...)`.
//!
//! Key arguments: always a tuple (`&()` when there are none), each element
//! `&arg` (a reference argument as it is). `key_arg` and the helper both
//! require `KeyArg` (`Serialize`, with the runtime's
//! `#[diagnostic::on_unimplemented]` message). All their tokens are located
//! at the argument: rustc reports the unmet bound there, and drops the
//! helper's identical error at the identical span, so an argument that is
//! not `Serialize` gets exactly one error, naming it. Without the helper,
//! `build_key`'s own bound on the whole tuple would add a second error
//! pointing at the attribute.
//!
//! Type names: `Self` when the function is known to be in an `impl` (a
//! method of `impl<T> Repo<T>` is generic too), the generic type parameters
//! in declaration order, each const parameter's value (by a marker type
//! generic over it), then `type_name_of_val` of each key argument whose
//! type contains `impl Trait` (an anonymous type parameter). Lifetimes are
//! not included.
//!
//! Why `Self` is always named, even in a non-generic `impl`: the macro sees
//! the method, never its `impl` block, so it cannot tell `impl Repo` from
//! `impl<T> Repo<T>`, and one `static` serves every instantiation. The
//! `Self` name is what keeps `Repo<u8>` from `Repo<String>`, and two
//! `impl`s of one module with a same-named method, apart. The runtime
//! records each distinct list of type names a site is called with, so
//! `invalidate_args` rebuilds the key of every one it has seen: a method of
//! a non-generic `impl` has exactly one, and invalidates by arguments like
//! a free function.

use proc_macro2::{Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{Attribute, Meta};

use crate::ast::{unraw, Function, Param, Shape};

/// How many fields `SiteOptions` has; with all of them given, clippy calls
/// `..DEFAULT` needless.
const OPTION_FIELDS: usize = 11;
use crate::attr::{CodecName, Options};

/// The function rewritten, followed by its companions.
pub(crate) fn expand(options: &Options, func: &Function) -> TokenStream {
    let cx = Context::new(options, func);
    let site = cx.site_fn();
    let main = cx.main_fn();
    let cache_key = cx.cache_key_fn();
    let invalidate = cx.invalidate_fn();
    let refresh = cx.refresh_fn();
    quote! {
        #site
        #main
        #cache_key
        #invalidate
        #refresh
    }
}

struct Context<'a> {
    options: &'a Options,
    func: &'a Function,
    /// `::cached_redis` or the `crate = "..."` path.
    krate: TokenStream,
    /// `#krate::__private`.
    private: TokenStream,
    /// The parameters that make up the key, in order.
    key_params: Vec<&'a Param>,
    /// `__cached_key`, invisible to the body (mixed-site hygiene).
    key_local: Ident,
    /// `__cached_site`, the `&'static CallSite`, likewise.
    site_local: Ident,
    /// `__cached_site_<name>`, the hidden function owning the `static`.
    site_fn: Ident,
}

impl<'a> Context<'a> {
    fn new(options: &'a Options, func: &'a Function) -> Self {
        let krate = match &options.krate {
            Some(path) => path.to_token_stream(),
            None => quote!(::cached_redis),
        };
        let private = quote!(#krate::__private);
        let key_params = func
            .params
            .iter()
            .filter(|p| {
                let name = p.name.as_ref().expect("patterns are rejected by valid.rs");
                !options.skips(&unraw(name))
            })
            .collect();
        Context {
            options,
            func,
            krate,
            private,
            key_params,
            key_local: Ident::new("__cached_key", Span::mixed_site()),
            site_local: Ident::new("__cached_site", Span::mixed_site()),
            site_fn: format_ident!("__cached_site_{}", unraw(func.name())),
        }
    }

    /// The function as written, its body handed to the runtime.
    fn main_fn(&self) -> TokenStream {
        let Function {
            outer_attrs,
            inner_attrs,
            vis,
            sig,
            block,
            ..
        } = self.func;
        let p = &self.private;
        let site = self.site_binding();
        let site_local = &self.site_local;
        let key = &self.key_local;
        let build_key = self.build_key();
        let probe = self.shape_probe();

        // With `returns`, the return type is given to the runtime, so that a
        // shape it does not have is reported as such (`ReturnShape`'s
        // message) rather than inferred into a type mismatch.
        let declared = self
            .func
            .return_type()
            .filter(|_| self.func.shape_declared)
            .map(|ty| quote!(::<#ty, _, _>));
        // `local` needs values it can clone: its own entry points carry
        // that bound, so functions without it keep theirs unbounded.
        let local = self.options.local.is_some();
        // The call's path carries the span of the value type: a value type
        // the call's bounds refuse (not `Serialize`, not `Clone` with
        // `local`) is reported there, not at the attribute.
        let value_span = self
            .func
            .value_type()
            .map_or_else(Span::call_site, syn::spanned::Spanned::span);
        let p = &respan(p.clone(), value_span);
        // The shape too: rustc puts an unmet bound on the argument whose
        // type carries it.
        let shape = match self.func.shape {
            Shape::Plain => quote_spanned!(value_span=> #p::PlainShape),
            Shape::Option if self.options.cache_none.is_some() => {
                quote_spanned!(value_span=> #p::CacheNoneShape)
            }
            Shape::Option => quote_spanned!(value_span=> #p::OptionShape),
            Shape::Result => quote_spanned!(value_span=> #p::ResultShape),
        };
        let call = if self.func.is_async() {
            let call_async = if local {
                quote_spanned!(value_span=> #p::call_async_local)
            } else {
                quote_spanned!(value_span=> #p::call_async)
            };
            // `.await` included: the future's own bounds are checked there.
            quote_spanned!(value_span=> #call_async #declared (#site_local, #key, #shape, async move #block).await)
        } else {
            // The closure's return type is the function's, so `?` and
            // `return` in the body behave as they did.
            let output = &sig.output;
            let call_sync = if local {
                quote_spanned!(value_span=> #p::call_sync_local)
            } else {
                quote_spanned!(value_span=> #p::call_sync)
            };
            quote!(#call_sync #declared (#site_local, #key, #shape, move || #output #block))
        };
        // `expect` as `allow`: the expansion moves the body into a closure
        // or an async block, where an expected lint (`unused_async`,
        // `needless_pass_by_value`, ...) may no longer fire.
        let outer_attrs = outer_attrs.iter().map(main_attr);
        quote! {
            #(#outer_attrs)*
            #vis #sig {
                #(#inner_attrs)*
                #probe
                #site
                // The key reads every key argument, `_`-prefixed ones too.
                #[allow(clippy::used_underscore_binding)]
                let #key = #build_key;
                #call
            }
        }
    }

    /// `name_cache_key(<key args>) -> Result<String, Error>`.
    fn cache_key_fn(&self) -> TokenStream {
        let Context { krate, private, .. } = self;
        let name = self.func.name();
        let ident = format_ident!("{}_cache_key", name, span = name.span());
        let docs = doc(&[
            &format!(
                "The cache key (`{{namespace}}:{{prefix}}:{{hash}}`) a call of {} with these arguments uses.",
                self.link()
            ),
            "",
            "# Errors",
            "",
            "When the arguments cannot be made into a key: a NaN or infinite float, a failing",
            "`Serialize` implementation (such a call of the function runs uncached).",
        ]);
        let site = self.site_binding();
        let build_key = self.build_key();
        self.companion(
            &ident,
            docs,
            TokenStream::new(),
            &self.key_inputs(),
            quote!(-> ::core::result::Result<::std::string::String, #krate::Error>),
            quote! {
                #site
                #build_key.map(#private::CacheKey::into_string)
            },
        )
    }

    /// `name_invalidate(<key args>) -> Result<bool, Error>`, `async` when
    /// the function is.
    fn invalidate_fn(&self) -> TokenStream {
        let Context { krate, private, .. } = self;
        let name = self.func.name();
        let ident = format_ident!("{}_invalidate", name, span = name.span());
        let cache_key = format_ident!("{}_cache_key", name);
        let docs = doc(&[
            &format!(
                "Removes the cached result of a call of {} with these arguments; `true` if there was one.",
                self.link()
            ),
            "",
            "# Errors",
            "",
            &format!(
                "When the key cannot be built (see {}) or the store fails.",
                self.link_to(&cache_key)
            ),
        ]);
        let site = self.site_binding();
        let site_local = &self.site_local;
        let key = &self.key_local;
        let build_key = self.build_key();
        let (asyncness, invalidate) = if self.func.is_async() {
            (
                Some(quote!(async)),
                quote!(#private::invalidate_async(#site_local, #key).await),
            )
        } else {
            (None, quote!(#private::invalidate_sync(#site_local, #key)))
        };
        self.companion(
            &ident,
            docs,
            asyncness.unwrap_or_default(),
            &self.key_inputs(),
            quote!(-> ::core::result::Result<bool, #krate::Error>),
            quote! {
                #site
                let #key = #build_key;
                #invalidate
            },
        )
    }

    /// `name_refresh(<all args>) -> Ret`: calls the function with the
    /// runtime's force-refresh flag set.
    fn refresh_fn(&self) -> TokenStream {
        let p = &self.private;
        let func = self.func;
        let name = func.name();
        let ident = format_ident!("{}_refresh", name, span = name.span());
        let mut lines = vec![
            format!(
                "Calls {} and stores its result whatever the cache holds: write-through after",
                self.link()
            ),
            "a change, or warming the cache. Returns what the function returns.".to_owned(),
        ];
        let unsafety = &func.sig.unsafety;
        if unsafety.is_some() {
            lines.extend([
                String::new(),
                "# Safety".to_owned(),
                String::new(),
                format!("The same as for {}.", self.link()),
            ]);
        }
        let docs = doc(&lines.iter().map(String::as_str).collect::<Vec<_>>());

        let mut inputs = Vec::new();
        let mut args = Vec::new();
        if let Some(receiver) = &func.receiver {
            let mut receiver = receiver.clone();
            if receiver.reference.is_none() {
                // `mut self` is only passed on here.
                receiver.mutability = None;
            }
            inputs.push(receiver.into_token_stream());
            args.push(quote!(self));
        }
        for param in &func.params {
            inputs.push(param_input(param));
            let name = param.name.as_ref().expect("checked by valid.rs");
            args.push(name.to_token_stream());
        }
        let callee = if func.in_impl {
            quote!(Self::#name)
        } else {
            // Mixed-site: a parameter named like the function (`fn
            // user(user: u64)`) is a local of the call site and cannot
            // shadow the function here.
            let mut name = name.clone();
            name.set_span(Span::mixed_site().located_at(name.span()));
            quote!(#name)
        };
        let generics = func.turbofish_params();
        let turbofish = (!generics.is_empty()).then(|| quote!(::<#(#generics),*>));
        let mut call = quote!(#callee #turbofish(#(#args),*));
        if unsafety.is_some() {
            call = quote!(unsafe { #call });
        }
        // `allow(deprecated)`: calling a deprecated function is this
        // companion's job, not a use to warn of (its callers are warned).
        let (asyncness, body) = if func.is_async() {
            (
                Some(quote!(async)),
                quote!({
                    // The call goes straight into the scope's future: bound
                    // alone, it would take a second place in this state.
                    #[allow(deprecated)]
                    let __cached_refresh = #p::force_refresh_async(#call);
                    __cached_refresh.await
                }),
            )
        } else {
            (
                None,
                quote!({
                    #[allow(deprecated)]
                    let __cached_refresh = move || #call;
                    #p::force_refresh_sync(__cached_refresh)
                }),
            )
        };
        let output = &func.sig.output;
        self.companion(
            &ident,
            docs,
            quote!(#asyncness #unsafety),
            &inputs,
            output.to_token_stream(),
            body,
        )
    }

    /// A companion `fn` with the function's visibility, generics,
    /// where-clause and `cfg`/lint attributes.
    fn companion(
        &self,
        ident: &Ident,
        docs: TokenStream,
        qualifiers: TokenStream,
        inputs: &[TokenStream],
        output: TokenStream,
        body: TokenStream,
    ) -> TokenStream {
        let vis = &self.func.vis;
        let generics = &self.func.sig.generics;
        let where_clause = &generics.where_clause;
        let attrs = self.func.outer_attrs.iter().filter_map(companion_attr);
        quote! {
            #(#attrs)*
            #docs
            // A companion passes on the function's `_`-prefixed arguments.
            #[allow(dead_code, clippy::used_underscore_binding)]
            #vis #qualifiers fn #ident #generics (#(#inputs),*) #output #where_clause {
                #body
            }
        }
    }

    /// The key parameters as companion inputs.
    fn key_inputs(&self) -> Vec<TokenStream> {
        self.key_params.iter().map(|p| param_input(p)).collect()
    }

    /// `let __cached_site = __cached_site_<name>();` (`Self::` in an impl).
    fn site_binding(&self) -> TokenStream {
        let Context {
            private: p,
            site_local,
            site_fn,
            ..
        } = self;
        let callee = if self.func.in_impl {
            quote!(Self::#site_fn)
        } else {
            quote!(#site_fn)
        };
        quote!(let #site_local: &'static #p::CallSite = #callee();)
    }

    /// The hidden function owning the one `static CallSite` of the
    /// function, which the function and its companions share: beside the
    /// function (an associated function in an `impl`, where no `static`
    /// item may stand), naming the function and giving the options written
    /// in the attribute. Not generic: one `static` serves every
    /// instantiation, whose type names go into each call's key instead.
    fn site_fn(&self) -> TokenStream {
        let p = &self.private;
        let fn_name = unraw(self.func.name());
        let return_type = self
            .func
            .return_type()
            .map(|ty| type_as_written(&ty.to_token_stream()))
            .unwrap_or_default();
        let site_fn = &self.site_fn;
        let attrs = self
            .func
            .outer_attrs
            .iter()
            .filter(|a| a.path().is_ident("cfg"));
        let options = self.options;
        let mut fields = Vec::new();
        if let Some(ttl) = options.ttl {
            let ttl = Literal::u64_unsuffixed(ttl);
            fields.push(quote!(ttl_secs: ::core::option::Option::Some(#ttl)));
        }
        if let Some(prefix) = &options.prefix {
            fields.push(quote!(prefix: ::core::option::Option::Some(#prefix)));
        }
        if let Some(refresh) = options.refresh {
            fields.push(quote!(refresh: #refresh));
        }
        if let Some(version) = &options.version {
            fields.push(quote!(version: #version));
        }
        if let Some(lock) = options.lock {
            fields.push(quote!(lock: #lock));
        }
        if let Some(stale) = options.stale {
            let stale = Literal::u64_unsuffixed(stale);
            fields.push(quote!(stale_secs: #stale));
        }
        if let Some(early) = options.early {
            fields.push(quote!(early: #early));
        }
        if let Some((secs, _)) = options.cache_none {
            let secs = Literal::u64_unsuffixed(secs);
            fields.push(quote!(cache_none_secs: ::core::option::Option::Some(#secs)));
        }
        if let Some(entries) = options.local {
            let entries = Literal::u64_unsuffixed(entries);
            fields.push(quote!(local: ::core::option::Option::Some(#entries)));
        }
        if let Some(codec) = options.codec {
            let variant = match codec {
                CodecName::Bincode => quote!(Bincode),
                CodecName::Json => quote!(Json),
            };
            fields.push(quote!(codec: #p::CodecOption::#variant));
        }
        if let Some(cache) = &options.cache {
            fields.push(quote!(cache: ::core::option::Option::Some(#cache)));
        }
        // With every option given, `..DEFAULT` fills nothing today; it stays
        // so that options the runtime adds later cannot break expansions.
        let allow =
            (fields.len() == OPTION_FIELDS).then(|| quote!(#[allow(clippy::needless_update)]));
        // FNV-1a of the function as written: with its place, tells apart
        // nested functions one macro writes in one place.
        let text = self.func.sig.to_token_stream().to_string()
            + &self.func.block.to_token_stream().to_string();
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let tokens = Literal::u64_suffixed(hash);
        // A `fn` declared here has a type name whose path names any function
        // the cached one is nested in or, in an `impl`, the `Self` type.
        let in_impl = self.func.in_impl;
        quote! {
            #(#attrs)*
            #[doc(hidden)]
            #[allow(dead_code)]
            fn #site_fn() -> &'static #p::CallSite {
                fn scope() -> &'static str {
                    ::core::any::type_name_of_val(&scope)
                }
                #allow
                static SITE: #p::CallSite = #p::CallSite::new(
                    #p::SiteIdent {
                        module_path: ::core::module_path!(),
                        fn_name: #fn_name,
                        return_type: #return_type,
                        crate_name: ::core::env!("CARGO_PKG_NAME"),
                        crate_version: ::core::env!("CARGO_PKG_VERSION"),
                        git_sha: ::core::option_env!("CACHED_REDIS_GIT_SHA"),
                        scope: ::core::option::Option::Some(scope),
                        in_impl: #in_impl,
                        line: ::core::line!(),
                        column: ::core::column!(),
                        tokens: #tokens,
                    },
                    #p::SiteOptions {
                        #(#fields,)*
                        ..#p::SiteOptions::DEFAULT
                    },
                );
                &SITE
            }
        }
    }

    /// With a return type whose name says neither `Result` nor `Option`
    /// and no `returns` option: a check that it is not one of them under
    /// an alias (`type ApiResult<T> = Result<T, ApiError>`), whose `Err`
    /// or `None` would otherwise be cached as a plain value. A compile
    /// error at the return type names the `returns` option. Resolved by
    /// method lookup: an inherent `check` exists only for `Result` and
    /// `Option`, and its where-clause never holds; any other type (a
    /// generic parameter included) gets the trait's no-op.
    ///
    /// With a shape read from the name `Result` or `Option`: a check that
    /// the type is the standard one, not a type of the user's own so named.
    fn shape_probe(&self) -> Option<TokenStream> {
        if self.func.shape_declared {
            return None;
        }
        let ty = self.func.return_type()?;
        let span = syn::spanned::Spanned::span(ty);
        let p = respan(self.private.clone(), span);
        match self.func.shape {
            Shape::Result => return Some(quote_spanned!(span=> #p::named_result::<#ty>();)),
            Shape::Option => return Some(quote_spanned!(span=> #p::named_option::<#ty>();)),
            Shape::Plain => {}
        }
        Some(quote_spanned! {span=>
            {
                #[allow(unused_imports)]
                use #p::PlainShapeCheck as _;
                #p::ShapeProbe::<#ty>::new().check();
            }
        })
    }

    /// The key of the call: `P::build_key(site, &(key args,),
    /// &[type names])`, through a local helper when there are key
    /// arguments (see the module docs).
    fn build_key(&self) -> TokenStream {
        let Context {
            krate, private: p, ..
        } = self;
        // `Self` first: a method of `impl<T> Repo<T>` is generic too. Then
        // the method's own path, which alone names the trait's parameters
        // of a trait's default method (`<A as Named<u8>>::describe` and
        // `<A as Named<u16>>::describe` have one `Self`); not for a method
        // with an `impl Trait` argument, whose anonymous type parameter no
        // turbofish can name (README: declare a type parameter instead).
        let mut self_names = Vec::new();
        if self.func.in_impl {
            self_names.push(quote!(::core::any::type_name::<Self>()));
            if !self.func.params.iter().any(|p| p.impl_trait) {
                let name = self.func.name();
                let params = self.func.turbofish_params();
                let turbofish = (!params.is_empty()).then(|| quote!(::<#(#params),*>));
                // `allow(deprecated)`: the companions, which carry the
                // method's `deprecated`, name it too.
                self_names.push(quote!({
                    #[allow(deprecated)]
                    let method = &Self::#name #turbofish;
                    ::core::any::type_name_of_val(method)
                }));
            }
        }
        let generic_names = self
            .func
            .type_params()
            .map(|t| quote!(::core::any::type_name::<#t>()));
        // A const parameter's value, spelled by the type name of a marker
        // generic over it (`__CachedConst0<3>`): `f::<2>` and `f::<3>` are
        // two functions' worth of entries.
        let const_names = self
            .func
            .const_params()
            .enumerate()
            .map(|(i, (ident, ty))| {
                let marker = format_ident!("__CachedConst{}", i);
                quote!({
                    #[allow(dead_code)]
                    struct #marker<const V: #ty>;
                    ::core::any::type_name::<#marker<#ident>>()
                })
            });
        let impl_trait_names = self.key_params.iter().filter(|p| p.impl_trait).map(|p| {
            let ident = &p.name;
            quote!(::core::any::type_name_of_val(&#ident))
        });
        let type_names = self_names
            .into_iter()
            .chain(generic_names)
            .chain(const_names)
            .chain(impl_trait_names);
        let site_local = &self.site_local;
        if self.key_params.is_empty() {
            return quote!(#p::build_key(#site_local, &(), &[#(#type_names),*]));
        }
        let tys: Vec<Ident> = (0..self.key_params.len())
            .map(|i| format_ident!("__A{}", i))
            .collect();
        let params: Vec<Ident> = (0..self.key_params.len())
            .map(|i| format_ident!("a{}", i))
            .collect();
        let args = self.key_params.iter().map(|param| {
            let mut ident = param.name.clone().expect("checked by valid.rs");
            // Every token located at the argument, so that "not
            // `Serialize`" points there, once: rustc drops the helper's
            // identical error at the identical span.
            let span = Span::call_site().located_at(ident.span());
            ident.set_span(span);
            let p = respan(p.clone(), span);
            // A reference is passed as it is, so that an error names the
            // type behind it (the key is the same: serde sees through `&`).
            let borrow = (!param.is_ref).then(|| quote_spanned!(span=> &));
            quote_spanned!(span=> #p::key_arg(#borrow #ident))
        });
        quote!({
            fn __cached_build_key<#(#tys: ?::core::marker::Sized + #p::KeyArg),*>(
                site: &'static #p::CallSite,
                #(#params: &#tys,)*
                type_names: &[&'static str],
            ) -> ::core::result::Result<#p::CacheKey, #krate::Error> {
                #p::build_key(site, &(#(#params,)*), type_names)
            }
            __cached_build_key(#site_local, #(#args,)* &[#(#type_names),*])
        })
    }

    /// An intra-doc link to the function.
    fn link(&self) -> String {
        self.link_to(self.func.name())
    }

    fn link_to(&self, ident: &Ident) -> String {
        let name = unraw(ident);
        if self.func.in_impl {
            format!("[`{name}`](Self::{ident})")
        } else {
            format!("[`{name}`]({ident})")
        }
    }
}

/// A parameter as a companion's input: `name: Type`, without the `mut` or
/// `ref` of the pattern (the companion only passes it on).
fn param_input(param: &Param) -> TokenStream {
    let attrs = &param.attrs;
    let name = param.name.as_ref().expect("checked by valid.rs");
    let ty = &param.ty;
    quote!(#(#attrs)* #name: #ty)
}

/// An attribute of the function as the rewritten function carries it:
/// `expect` becomes `allow`, the others stay.
fn main_attr(attr: &Attribute) -> TokenStream {
    match &attr.meta {
        Meta::List(list) if attr.path().is_ident("expect") => {
            let tokens = &list.tokens;
            quote!(#[allow(#tokens)])
        }
        _ => attr.to_token_stream(),
    }
}

/// The attributes of the function that its companions get too: `cfg`,
/// `allow` (and `expect` as `allow`: a companion need not trigger the
/// expected lint), and `doc(hidden)`.
fn companion_attr(attr: &Attribute) -> Option<TokenStream> {
    let path = attr.path();
    // `deprecated`: the companions of a deprecated function are too, and
    // `_refresh`'s call of the function then warns no one.
    if path.is_ident("cfg") || path.is_ident("allow") || path.is_ident("deprecated") {
        return Some(attr.to_token_stream());
    }
    match &attr.meta {
        Meta::List(_) if path.is_ident("expect") => Some(main_attr(attr)),
        Meta::List(list) if path.is_ident("doc") && list.tokens.to_string() == "hidden" => {
            Some(attr.to_token_stream())
        }
        _ => None,
    }
}

/// A type's tokens as one string, each token once, separated by single
/// spaces (groups spelled with their delimiters): the same text whatever
/// the spacing in the source and whichever compiler prints it, because it
/// salts keys.
fn type_as_written(tokens: &TokenStream) -> String {
    let mut parts = Vec::new();
    for tt in tokens.clone() {
        parts.push(match tt {
            TokenTree::Group(g) => {
                let inner = type_as_written(&g.stream());
                let (open, close) = match g.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                    proc_macro2::Delimiter::Bracket => ("[", "]"),
                    proc_macro2::Delimiter::Brace => ("{", "}"),
                    proc_macro2::Delimiter::None => ("", ""),
                };
                if inner.is_empty() {
                    format!("{open}{close}")
                } else {
                    format!("{open} {inner} {close}")
                }
            }
            TokenTree::Ident(i) => i.to_string(),
            TokenTree::Punct(p) => p.as_char().to_string(),
            TokenTree::Literal(l) => l.to_string(),
        });
    }
    parts.join(" ")
}

/// `#[doc = " line"]` for each line, as `///` would write.
fn doc(lines: &[&str]) -> TokenStream {
    let lines = lines.iter().map(|line| {
        let line = if line.is_empty() {
            String::new()
        } else {
            format!(" {line}")
        };
        quote!(#[doc = #line])
    });
    quote!(#(#lines)*)
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    /// The expansion without whitespace, for `contains` checks.
    fn expand(attr: TokenStream, item: TokenStream) -> String {
        let out = crate::cached_impl(attr, item).unwrap_or_else(|e| panic!("{e}"));
        out.to_string().split_whitespace().collect()
    }

    fn has(out: &str, fragment: &str) -> bool {
        let fragment: String = fragment.split_whitespace().collect();
        out.contains(&fragment)
    }

    #[test]
    fn sync_free_function() {
        let out = expand(
            quote!(ttl = 60, skip = "conn"),
            quote!(
                pub fn f(conn: &mut Db, mut id: u64) -> Option<u8> {
                    None
                }
            ),
        );
        assert!(has(
            &out,
            "pub fn f(conn: &mut Db, mut id: u64) -> Option<u8>"
        ));
        assert!(has(&out, "ttl_secs: ::core::option::Option::Some(60), ..::cached_redis::__private::SiteOptions::DEFAULT"));
        assert!(has(
            &out,
            "__cached_build_key(__cached_site, ::cached_redis::__private::key_arg(&id), &[])"
        ));
        // One site, beside the function, named with its return type.
        assert_eq!(out.matches("staticSITE").count(), 1);
        assert!(has(
            &out,
            "fn __cached_site_f() -> &'static ::cached_redis::__private::CallSite"
        ));
        assert!(has(&out, "return_type: \"Option < u8 >\""));
        assert_eq!(
            out.matches(
                "let__cached_site:&'static::cached_redis::__private::CallSite=__cached_site_f();"
            )
            .count(),
            3
        );
        // `Option` by its name: no alias check.
        assert!(!has(&out, "ShapeProbe"));
        assert!(has(
            &out,
            "::cached_redis::__private::OptionShape, move || -> Option<u8> { None })"
        ));
        // Companions: key arguments only, without `mut`; refresh with all.
        assert!(has(&out, "pub fn f_cache_key(id: u64)"));
        assert!(has(&out, "pub fn f_invalidate(id: u64)"));
        assert!(has(&out, "invalidate_sync(__cached_site, __cached_key)"));
        assert!(has(
            &out,
            "pub fn f_refresh(conn: &mut Db, id: u64) -> Option<u8>"
        ));
        assert!(has(&out, "let __cached_refresh = move || f(conn, id)"));
        assert!(!has(&out, "needless_update"));
    }

    #[test]
    fn no_key_arguments_is_an_empty_tuple() {
        let out = expand(
            quote!(),
            quote!(
                async fn f() -> Vec<u8> {
                    vec![]
                }
            ),
        );
        assert!(has(&out, "build_key(__cached_site, &(), &[])"));
        assert!(has(&out, "return_type: \"Vec < u8 >\""));
        assert!(
            has(&out, "ShapeProbe::<Vec<u8> >::new().check();")
                || has(&out, "ShapeProbe::<Vec<u8>>::new().check();"),
            "{out}"
        );
        assert!(has(&out, "async move { vec![] }).await"));
        assert!(has(&out, "async fn f_invalidate()"));
        assert!(has(
            &out,
            "invalidate_async(__cached_site, __cached_key).await"
        ));
        assert!(has(
            &out,
            "let __cached_refresh = ::cached_redis::__private::force_refresh_async(f());"
        ));
        assert!(has(
            &out,
            "SiteOptions { ..::cached_redis::__private::SiteOptions::DEFAULT }"
        ));
    }

    #[test]
    fn every_option_allows_needless_update() {
        let out = expand(
            quote!(
                ttl = 1,
                prefix = "p",
                refresh = false,
                version = "v",
                crate = "my::c",
                lock = true,
                stale = 5,
                early = true,
                cache_none = 7,
                local = 3,
                codec = "json",
                cache = "named",
                returns = "option"
            ),
            quote!(
                fn f() -> Option<u8> {
                    None
                }
            ),
        );
        assert!(has(
            &out,
            "#[allow(clippy::needless_update)] static SITE: my::c::__private::CallSite"
        ));
        assert!(has(
            &out,
            "prefix: ::core::option::Option::Some(\"p\"), refresh: false, version: \"v\""
        ));
        assert!(has(&out, "-> ::core::result::Result<bool, my::c::Error>"));
        assert!(has(&out, "codec: my::c::__private::CodecOption::Json"));
        assert!(has(&out, "cache: ::core::option::Option::Some(\"named\")"));
        assert!(has(&out, "my::c::__private::CacheNoneShape"));
    }

    #[test]
    fn methods_use_self() {
        let out = expand(
            quote!(),
            quote!(
                fn get<T: Serialize>(&mut self, key: T) -> u8 {
                    0
                }
            ),
        );
        assert!(has(&out, "fn get_cache_key<T: Serialize>(key: T)"));
        assert!(has(
            &out,
            "fn get_refresh<T: Serialize>(&mut self, key: T) -> u8"
        ));
        assert!(has(&out, "move || Self::get::<T>(self, key)"));
        assert!(has(
            &out,
            "&[::core::any::type_name::<Self>(), { #[allow(deprecated)] let method = &Self::get::<T>; ::core::any::type_name_of_val(method) }, ::core::any::type_name::<T>()]"
        ));
        assert!(has(&out, "[`get`](Self::get)"));
        assert!(has(&out, "= Self::__cached_site_get();"));
    }

    #[test]
    fn returns_option_overrides_the_name() {
        let out = expand(
            quote!(returns = "result"),
            quote!(
                fn f() -> ApiResult<u8> {
                    Ok(0)
                }
            ),
        );
        assert!(has(
            &out,
            "call_sync::<ApiResult<u8>, _, _>(__cached_site, __cached_key, ::cached_redis::__private::ResultShape"
        ));
        assert!(!has(&out, "ShapeProbe"));
        let out = expand(
            quote!(),
            quote!(
                fn f() -> ApiResult<u8> {
                    Ok(0)
                }
            ),
        );
        assert!(has(&out, "::cached_redis::__private::PlainShape"));
        assert!(
            has(&out, "ShapeProbe::<ApiResult<u8> >::new().check();")
                || has(&out, "ShapeProbe::<ApiResult<u8>>::new().check();")
        );
    }

    #[test]
    fn type_as_written_is_spacing_free() {
        let a: TokenStream = "std::collections::HashMap<String,(u8, [i32; 3])>"
            .parse()
            .unwrap();
        let b: TokenStream = "std :: collections :: HashMap < String , ( u8 , [ i32 ; 3 ] ) >"
            .parse()
            .unwrap();
        let text = super::type_as_written(&a);
        assert_eq!(text, super::type_as_written(&b));
        assert_eq!(
            text,
            "std : : collections : : HashMap < String , ( u8 , [ i32 ; 3 ] ) >"
        );
    }

    #[test]
    fn unsafe_and_impl_trait() {
        let out = expand(
            quote!(skip = "log"),
            quote!(
                unsafe fn f<const N: usize>(log: impl Fn(), k: impl Serialize) -> u8 {
                    0
                }
            ),
        );
        assert!(has(
            &out,
            "unsafe fn f_refresh<const N: usize>(log: impl Fn(), k: impl Serialize) -> u8"
        ));
        assert!(has(&out, "move || unsafe { f::<N>(log, k) }"));
        assert!(has(&out, "# Safety"));
        assert!(has(
            &out,
            "&[{ #[allow(dead_code)] struct __CachedConst0<const V: usize>; \
             ::core::any::type_name::<__CachedConst0<N>>() }, \
             ::core::any::type_name_of_val(&k)]"
        ));
        assert!(has(
            &out,
            "fn f_cache_key<const N: usize>(k: impl Serialize)"
        ));
    }

    #[test]
    fn companion_attributes() {
        let out = expand(
            quote!(),
            quote!(
                /// Docs stay on the function.
                #[cfg(feature = "x")]
                #[inline]
                #[expect(clippy::too_many_arguments)]
                #[doc(hidden)]
                fn f() {
                    #![allow(unused)]
                }
            ),
        );
        assert_eq!(out.matches("#[cfg(feature=\"x\")]").count(), 5);
        assert_eq!(out.matches("#[inline]").count(), 1);
        // The function and its three companions: `expect` as `allow`.
        assert_eq!(
            out.matches("#[allow(clippy::too_many_arguments)]").count(),
            4
        );
        assert_eq!(out.matches("expect").count(), 0);
        assert_eq!(out.matches("#[doc(hidden)]").count(), 5);
        assert_eq!(out.matches("Docsstayonthefunction").count(), 1);
        assert!(has(
            &out,
            "fn f() { #![allow(unused)] let __cached_site: &'static ::cached_redis::__private::CallSite = __cached_site_f();"
        ));
    }
}
