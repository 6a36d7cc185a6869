//! What `#[cached]` cannot support, and how the options must fit the
//! function: each check records an error at the offending token and goes
//! on, so that all of them are reported together.

use syn::visit::Visit;
use syn::{
    BoundLifetimes, GenericArgument, Lifetime, ParenthesizedGenericArguments, PathArguments, Type,
    TypeBareFn, TypeImplTrait, TypeMacro, TypeReference,
};

use crate::ast::{strip, unraw, Function, Shape};
use crate::attr::Options;
use crate::errors::Errors;

/// Runs every check of `func` and of `options` against it.
pub(crate) fn check(options: &Options, func: &Function, errors: &mut Errors) {
    if let Some(const_token) = &func.sig.constness {
        errors.at(
            const_token,
            "`#[cached]` cannot be used on a `const fn`: the cache is looked up at run time; remove `const`",
        );
    }
    for attr in &func.outer_attrs {
        if attr.path().is_ident("track_caller") {
            errors.at(
                attr,
                "`#[track_caller]` cannot be kept under `#[cached]`: the body runs inside the cache's \
                 call, so `Location::caller()` would name the function itself; remove it",
            );
        }
    }
    match func.return_type().map(strip) {
        Some(Type::Never(never)) => errors.at(
            never,
            "a function that never returns has nothing to cache; remove `#[cached]`",
        ),
        Some(ty) => check_return_type(ty, func.shape, errors),
        None => {}
    }
    for param in &func.params {
        for attr in &param.attrs {
            if makes_conditional(attr) {
                errors.at(
                    attr,
                    "a cached function's parameters cannot be conditional: its key and companions \
                     name every parameter; write the function twice, each under its own `#[cfg]`",
                );
            }
        }
        let Some(name) = &param.name else {
            if matches!(param.pat, syn::Pat::Wild(_)) {
                errors.at(
                    &param.pat,
                    "name this argument, like `_unused: u8`: `#[cached]` names each argument, to put it \
                     into the cache key or leave it out with `skip = \"_unused\"`",
                );
            } else {
                errors.at(
                    &param.pat,
                    "use a plain name for key arguments, like `point: (i32, i32)`, and destructure in the body: \
                     `#[cached]` names each argument, to put it into the cache key or leave it out with `skip`",
                );
            }
            continue;
        };
        let name = unraw(name);
        if options.skips(&name) {
            continue;
        }
        if let Some(reference) = param.mut_ref() {
            errors.at(
                reference,
                format_args!(
                    "`{name}` is a `&mut` argument, so it cannot be part of the cache key: a cache hit \
                     skips the function body, and the caller's `{name}` would silently not be changed. \
                     If the function only uses it to reach something (a connection, a client), leave it \
                     out of the key with `skip = \"{name}\"`; otherwise take it by value or by `&` (or do \
                     not cache this function)"
                ),
            );
        }
    }
    if let (Some((_, lit)), None) = (&options.returns, func.return_type()) {
        errors.at(
            lit,
            "`returns` says how to cache the return type, but this function returns `()`; remove `returns`",
        );
    }
    check_skip(options, func, errors);
    if let Some((_, span)) = options.cache_none {
        if func.shape != Shape::Option {
            errors.push(syn::Error::new(
                span,
                "`cache_none` caches `None` results, but this function does not return an `Option`; remove `cache_none`",
            ));
        }
    }
}

/// Whether `attr` may remove what it is on: `#[cfg]`, or a `#[cfg_attr]`
/// that gives one (`#[cfg_attr(p, allow(unused))]` only adds a lint level).
fn makes_conditional(attr: &syn::Attribute) -> bool {
    if attr.path().is_ident("cfg") {
        return true;
    }
    if !attr.path().is_ident("cfg_attr") {
        return false;
    }
    let Ok(list) = attr.meta.require_list() else {
        return true;
    };
    let parser = syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated;
    match syn::parse::Parser::parse2(parser, list.tokens.clone()) {
        // The first is the predicate; the others are the attributes given.
        Ok(metas) => metas.iter().skip(1).any(|meta| {
            meta.path().is_ident("cfg")
                || (meta.path().is_ident("cfg_attr")
                    && makes_conditional(&syn::parse_quote!(#[#meta])))
        }),
        // Not ours to judge: rustc reports a malformed `cfg_attr`.
        Err(_) => false,
    }
}

/// Every name in `skip` must be a parameter, and not `self`.
fn check_skip(options: &Options, func: &Function, errors: &mut Errors) {
    let Some(skip) = &options.skip else { return };
    let params = func.param_names();
    for name in &skip.names {
        if name == "self" {
            errors.at(
                &skip.lit,
                "`self` is never part of the cache key; remove it from `skip`",
            );
        } else if !params.contains(name) {
            let listed = if params.is_empty() {
                "it has no named parameters".to_owned()
            } else {
                let names: Vec<String> = params.iter().map(|p| format!("`{p}`")).collect();
                format!("its parameters are {}", names.join(", "))
            };
            errors.at(
                &skip.lit,
                format_args!(
                    "`skip` names `{name}`, but `{}` has no parameter `{name}`; {listed}",
                    unraw(func.name())
                ),
            );
        }
    }
}

/// The return value is stored and read back, so it cannot borrow, and it
/// needs a nameable type. The error type of a `Result`, which is never
/// stored, may borrow (`Result<T, &'static str>`, `Result<T, ParseError<'a>>`).
fn check_return_type(ty: &Type, shape: Shape, errors: &mut Errors) {
    let mut strict = ReturnCheck {
        errors,
        borrows_ok: false,
        static_refs_ok: false,
    };
    let ty = strip(ty);
    let Type::Path(path) = ty else {
        strict.visit_type(ty);
        return;
    };
    if shape != Shape::Result || path.qself.is_some() {
        strict.visit_type(ty);
        return;
    }
    // `Result<T, E>`: `T` strictly, the rest (`E`) allowing borrows. Only
    // `&'static` under another name: an alias may put `T` anywhere.
    let segments = &path.path.segments;
    let Some(last) = segments.last() else { return };
    let named_result = last.ident == "Result";
    for seg in segments.iter().take(segments.len() - 1) {
        strict.visit_path_segment(seg);
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        strict.visit_path_arguments(&last.arguments);
        return;
    };
    let mut seen_type = false;
    for arg in &args.args {
        let is_type = matches!(arg, GenericArgument::Type(_));
        strict.static_refs_ok = is_type && seen_type;
        strict.borrows_ok = strict.static_refs_ok && named_result;
        seen_type |= is_type;
        strict.visit_generic_argument(arg);
    }
}

const OWNED: &str = "its result is stored and read back later, so return an owned type such as `String` or `Vec<T>`";

struct ReturnCheck<'e> {
    errors: &'e mut Errors,
    /// Whether references and borrowing types are acceptable here.
    borrows_ok: bool,
    /// Whether `&'static T` is acceptable here.
    static_refs_ok: bool,
}

impl Visit<'_> for ReturnCheck<'_> {
    fn visit_type_reference(&mut self, r: &TypeReference) {
        let is_static = r.lifetime.as_ref().is_some_and(|l| l.ident == "static");
        if !(self.borrows_ok || (self.static_refs_ok && is_static)) {
            self.errors.at(
                r.and_token,
                format_args!("a cached function cannot return a reference: {OWNED}"),
            );
        }
        // The lifetime is part of this error; look only inside.
        self.visit_type(&r.elem);
    }

    fn visit_lifetime(&mut self, lifetime: &Lifetime) {
        if lifetime.ident != "static" && !self.borrows_ok {
            self.errors.at(
                lifetime,
                format_args!(
                    "a cached function cannot return a type that borrows (`{lifetime}`): {OWNED}"
                ),
            );
        }
    }

    fn visit_type_impl_trait(&mut self, i: &TypeImplTrait) {
        self.errors.at(
            i.impl_token,
            "a cached function cannot return `impl Trait`: the cached value needs a concrete type \
             that implements `Serialize` and `Deserialize`; write that type",
        );
    }

    // Borrows in function signatures (`fn(&str)`, `dyn Fn(&str)`,
    // `for<'a>`) are not borrows of the value; such a value is not
    // serializable anyway, which the runtime's trait bound reports.
    fn visit_type_bare_fn(&mut self, _: &TypeBareFn) {}
    fn visit_parenthesized_generic_arguments(&mut self, _: &ParenthesizedGenericArguments) {}
    fn visit_bound_lifetimes(&mut self, _: &BoundLifetimes) {}
    fn visit_type_macro(&mut self, _: &TypeMacro) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::TokenStream;
    use quote::quote;

    fn messages(attr: TokenStream, item: TokenStream) -> Vec<String> {
        let mut errors = Errors::default();
        let options = crate::attr::parse(attr, &mut errors);
        let func = Function::parse(item).unwrap();
        check(&options, &func, &mut errors);
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    /// A mistake in `skip` is the only error: the names it lists are still
    /// taken as skipped by the checks that follow.
    #[test]
    fn a_repeated_skip_is_one_error() {
        let m = messages(
            quote!(skip = "conn, conn"),
            quote!(
                fn f(conn: &mut Db, id: u8) -> u8 {
                    id
                }
            ),
        );
        assert_eq!(m, ["`conn` is listed twice in `skip`"]);
    }

    #[test]
    fn accepted_functions() {
        for item in [
            quote!(
                fn f() {}
            ),
            quote!(
                async fn f(&self, x: u8) -> Result<String, &'static str> {
                    todo!()
                }
            ),
            quote!(
                unsafe fn f(mut x: u8) -> Option<Cow<'static, str>> {
                    todo!()
                }
            ),
            quote!(
                fn f(x: impl Serialize) -> Box<dyn Fn(&str) -> u8> {
                    todo!()
                }
            ),
            quote!(
                fn f<T>(x: T) -> io::Result<Vec<T>> {
                    todo!()
                }
            ),
        ] {
            assert_eq!(
                messages(quote!(), item.clone()),
                Vec::<String>::new(),
                "{item}"
            );
        }
    }

    #[test]
    fn references_and_borrows_in_return_type() {
        let m = messages(
            quote!(),
            quote!(
                fn f(x: &str) -> &str {
                    x
                }
            ),
        );
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("cannot return a reference"));
        let m = messages(
            quote!(),
            quote!(
                fn f<'a>(x: &'a str) -> Cow<'a, str> {
                    todo!()
                }
            ),
        );
        assert!(m[0].contains("borrows (`'a`)"), "{m:?}");
        let m = messages(
            quote!(),
            quote!(
                fn f(x: &str) -> Result<u8, &str> {
                    todo!()
                }
            ),
        );
        assert!(
            m.is_empty(),
            "an error may borrow: it is never stored: {m:?}"
        );
        // Under another name, an alias may store its second parameter.
        let e = crate::cached_impl(
            quote!(returns = "result"),
            quote!(
                fn f<'a>(s: &'a str) -> Flipped<String, &'a str> {
                    todo!()
                }
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot return a reference"), "{e}");
        let m = messages(
            quote!(),
            quote!(
                fn f() -> Result<&'static str, ()> {
                    todo!()
                }
            ),
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn impl_trait_return() {
        let m = messages(
            quote!(),
            quote!(
                fn f() -> impl Iterator<Item = u8> {
                    todo!()
                }
            ),
        );
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("`impl Trait`"));
    }

    #[test]
    fn const_fn_and_patterns() {
        let m = messages(
            quote!(),
            quote!(
                const fn f((a, b): (u8, u8), _: u8) -> u8 {
                    a
                }
            ),
        );
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("`const fn`"));
        assert!(m[1].contains("use a plain name for key arguments"));
    }

    #[test]
    fn mut_ref_key_arguments() {
        let m = messages(
            quote!(skip = "conn"),
            quote!(
                fn f(
                    &mut self,
                    conn: &mut Conn,
                    n: &mut u32,
                    o: Option<&mut u8>,
                    g: fn(&mut u8),
                    ok: &u8,
                ) {
                }
            ),
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("`n` is a `&mut` argument"), "{m:?}");
        assert!(m[0].contains("`skip = \"n\"`"), "{m:?}");
        assert!(m[1].starts_with("`o` is a `&mut` argument"), "{m:?}");
    }

    #[test]
    fn returns_needs_a_return_type() {
        let m = messages(
            quote!(returns = "plain"),
            quote!(
                fn f() {}
            ),
        );
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("returns `()`"), "{m:?}");
    }

    #[test]
    fn skip_names() {
        let m = messages(
            quote!(skip = "self, conn, nope, r#type"),
            quote!(
                fn f(&self, conn: u8, r#type: u8) {}
            ),
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("`self` is never part of the cache key"));
        assert_eq!(
            m[1],
            "`skip` names `nope`, but `f` has no parameter `nope`; its parameters are `conn`, `type`"
        );
        let m = messages(
            quote!(skip = "x"),
            quote!(
                fn g() {}
            ),
        );
        assert!(m[0].ends_with("it has no named parameters"));
    }
}
