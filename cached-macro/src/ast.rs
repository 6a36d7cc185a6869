//! The function under `#[cached]`, as the other phases need to see it: its
//! receiver, its parameters (plain names or patterns), the shape of its
//! return type and whether it sits in an `impl` block.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::visit::Visit;
use syn::{
    AttrStyle, Attribute, Block, FnArg, GenericParam, ItemFn, Pat, PatIdent, Receiver, ReturnType,
    Signature, TraitItemFn, Type, TypeImplTrait, Visibility,
};

/// A function `#[cached]` is applied to.
pub(crate) struct Function {
    /// `#[...]` before the function.
    pub(crate) outer_attrs: Vec<Attribute>,
    /// `#![...]` at the start of its body.
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    /// The signature, kept as written.
    pub(crate) sig: Signature,
    pub(crate) block: Block,
    /// `self`, `&self`, `&mut self`, `self: Box<Self>`...
    pub(crate) receiver: Option<Receiver>,
    /// The parameters after the receiver.
    pub(crate) params: Vec<Param>,
    /// What the return type tells the runtime about storing it: by its
    /// name, or as the `returns` option declares.
    pub(crate) shape: Shape,
    /// Whether `shape` was declared with `returns` rather than read from
    /// the return type's name.
    pub(crate) shape_declared: bool,
    /// Whether the function is known to be in an `impl` block (it has a
    /// receiver or names `Self` in its signature): calls to it and doc links
    /// then go through `Self::`.
    pub(crate) in_impl: bool,
}

/// One parameter other than the receiver.
pub(crate) struct Param {
    pub(crate) attrs: Vec<Attribute>,
    /// The pattern as written (`id`, `mut id`, `(a, b)`).
    pub(crate) pat: Pat,
    /// The bound name when the pattern is a plain name (`id`, `mut id`,
    /// `ref id`); `None` for destructuring patterns and `_`.
    pub(crate) name: Option<Ident>,
    pub(crate) ty: Type,
    /// Whether the type is or contains `impl Trait`.
    pub(crate) impl_trait: bool,
    /// Whether the type is a reference (`&T`, `&mut T`).
    pub(crate) is_ref: bool,
}

impl Param {
    /// The first `&mut` in the parameter's type, if any (`&mut T`,
    /// `Option<&mut T>`, `(&mut A, B)`...).
    pub(crate) fn mut_ref(&self) -> Option<&syn::TypeReference> {
        struct Finder<'a>(Option<&'a syn::TypeReference>);
        impl<'a> Visit<'a> for Finder<'a> {
            fn visit_type_reference(&mut self, r: &'a syn::TypeReference) {
                if r.mutability.is_some() && self.0.is_none() {
                    self.0 = Some(r);
                }
                syn::visit::visit_type_reference(self, r);
            }
            // `fn(&mut T)` and `dyn FnMut(&mut T)` take a `&mut`, they are
            // not one.
            fn visit_type_bare_fn(&mut self, _: &'a syn::TypeBareFn) {}
            fn visit_parenthesized_generic_arguments(
                &mut self,
                _: &'a syn::ParenthesizedGenericArguments,
            ) {
            }
        }
        let mut finder = Finder(None);
        finder.visit_type(&self.ty);
        finder.0
    }
}

/// How the runtime maps a return value to a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `T`: always stored.
    Plain,
    /// `Option<T>`: `Some` stored.
    Option,
    /// `Result<T, E>` (or an alias named `Result`, like `io::Result<T>`):
    /// `Ok` stored.
    Result,
}

impl Function {
    /// Parses the item under the attribute; an error when it is not a
    /// function with a body.
    pub(crate) fn parse(item: TokenStream) -> syn::Result<Self> {
        let ItemFn {
            attrs,
            vis,
            sig,
            block,
        } = syn::parse2(item.clone()).map_err(|e| not_a_function(item, e))?;
        let (inner_attrs, outer_attrs) = attrs
            .into_iter()
            .partition(|a| matches!(a.style, AttrStyle::Inner(_)));
        let mut receiver = None;
        let mut params = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(r) => receiver = Some(r.clone()),
                FnArg::Typed(typed) => params.push(Param {
                    attrs: typed.attrs.clone(),
                    pat: (*typed.pat).clone(),
                    name: plain_name(&typed.pat),
                    ty: (*typed.ty).clone(),
                    impl_trait: contains_impl_trait(&typed.ty),
                    is_ref: matches!(strip(&typed.ty), Type::Reference(_)),
                }),
            }
        }
        let shape = match &sig.output {
            ReturnType::Default => Shape::Plain,
            ReturnType::Type(_, ty) => shape_of(ty),
        };
        let in_impl = receiver.is_some() || mentions_self(sig.to_token_stream());
        Ok(Function {
            outer_attrs,
            inner_attrs,
            vis,
            sig,
            block: *block,
            receiver,
            params,
            shape,
            shape_declared: false,
            in_impl,
        })
    }

    pub(crate) fn name(&self) -> &Ident {
        &self.sig.ident
    }

    pub(crate) fn is_async(&self) -> bool {
        self.sig.asyncness.is_some()
    }

    /// The return type as written; `None` for `()` left implicit.
    pub(crate) fn return_type(&self) -> Option<&Type> {
        match &self.sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some(ty),
        }
    }

    /// The type of the value the cache stores, as written: `T` of a
    /// `Result<T, E>` or an `Option<T>` (also when `returns` names the
    /// shape of an alias written with its value type first), else the
    /// whole return type. Where its errors point.
    pub(crate) fn value_type(&self) -> Option<&Type> {
        let ty = self.return_type()?;
        if self.shape == Shape::Plain {
            return Some(ty);
        }
        let first_arg = match strip(ty) {
            Type::Path(p) if p.qself.is_none() => {
                match p.path.segments.last().map(|s| &s.arguments) {
                    Some(syn::PathArguments::AngleBracketed(args)) => {
                        args.args.iter().find_map(|a| match a {
                            syn::GenericArgument::Type(t) => Some(t),
                            _ => None,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        Some(first_arg.unwrap_or(ty))
    }

    /// The generic type parameters, in declaration order.
    pub(crate) fn type_params(&self) -> impl Iterator<Item = &Ident> {
        self.sig.generics.params.iter().filter_map(|p| match p {
            GenericParam::Type(t) => Some(&t.ident),
            _ => None,
        })
    }

    /// The const generic parameters, with their types.
    pub(crate) fn const_params(&self) -> impl Iterator<Item = (&Ident, &syn::Type)> {
        self.sig.generics.params.iter().filter_map(|p| match p {
            GenericParam::Const(c) => Some((&c.ident, &c.ty)),
            _ => None,
        })
    }

    /// The generic parameters a turbofish names: types and consts, in
    /// declaration order (lifetimes are left to inference).
    pub(crate) fn turbofish_params(&self) -> Vec<&Ident> {
        self.sig
            .generics
            .params
            .iter()
            .filter_map(|p| match p {
                GenericParam::Type(t) => Some(&t.ident),
                GenericParam::Const(c) => Some(&c.ident),
                GenericParam::Lifetime(_) => None,
            })
            .collect()
    }

    /// The names of the parameters that have one, for error messages.
    pub(crate) fn param_names(&self) -> Vec<String> {
        self.params
            .iter()
            .filter_map(|p| p.name.as_ref().map(unraw))
            .collect()
    }
}

/// The error for an item that does not parse as a function with a body.
fn not_a_function(item: TokenStream, parse_error: syn::Error) -> syn::Error {
    if let Ok(decl) = syn::parse2::<TraitItemFn>(item.clone()) {
        if decl.default.is_none() {
            return syn::Error::new_spanned(
                decl.sig,
                "`#[cached]` needs the function's body: it goes on a `fn` with one, not on a declaration",
            );
        }
    }
    // Another item that parses (`type F = fn(u32);`, a `static` of a
    // function pointer) is not a function, whatever `fn` it holds.
    let other_item = syn::parse2::<syn::Item>(item.clone()).is_ok();
    let has_fn = !other_item
        && item
            .into_iter()
            .any(|tt| matches!(&tt, TokenTree::Ident(i) if i == "fn"));
    if has_fn {
        // A function with a syntax error: say where, as rustc would.
        parse_error
    } else {
        syn::Error::new(
            Span::call_site(),
            "`#[cached]` goes on a `fn` or `async fn` with a body (a free function or a method)",
        )
    }
}

/// An identifier's name without `r#`.
pub(crate) fn unraw(ident: &Ident) -> String {
    let s = ident.to_string();
    match s.strip_prefix("r#") {
        Some(rest) => rest.to_owned(),
        None => s,
    }
}

fn plain_name(pat: &Pat) -> Option<Ident> {
    match pat {
        Pat::Ident(PatIdent {
            ident,
            subpat: None,
            ..
        }) => Some(ident.clone()),
        _ => None,
    }
}

/// The shape a return type has by its last path segment: `Option` and
/// `Result` (any path, any alias of that name) are recognised.
fn shape_of(ty: &Type) -> Shape {
    match strip(ty) {
        Type::Path(p) if p.qself.is_none() => match p.path.segments.last() {
            Some(seg) if seg.ident == "Option" => Shape::Option,
            Some(seg) if seg.ident == "Result" => Shape::Result,
            _ => Shape::Plain,
        },
        _ => Shape::Plain,
    }
}

/// `ty` without parentheses and the invisible groups of `macro_rules!`.
pub(crate) fn strip(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => strip(&p.elem),
        Type::Group(g) => strip(&g.elem),
        _ => ty,
    }
}

fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl Visit<'_> for Finder {
        fn visit_type_impl_trait(&mut self, _: &TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}

/// Whether `tokens` name `Self` anywhere (then the function is in an
/// `impl` block, where a bare call to it would not resolve).
fn mentions_self(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(ident) => ident == "Self",
        TokenTree::Group(group) => mentions_self(group.stream()),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(item: TokenStream) -> Function {
        Function::parse(item).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn shapes() {
        assert_eq!(
            parse(quote!(
                fn f() {}
            ))
            .shape,
            Shape::Plain
        );
        assert_eq!(
            parse(quote!(
                fn f() -> u8 {
                    0
                }
            ))
            .shape,
            Shape::Plain
        );
        assert_eq!(
            parse(quote!(
                fn f() -> Option<u8> {
                    None
                }
            ))
            .shape,
            Shape::Option
        );
        assert_eq!(
            parse(quote!(
                fn f() -> std::io::Result<u8> {
                    Ok(0)
                }
            ))
            .shape,
            Shape::Result
        );
        assert_eq!(
            parse(quote!(
                fn f() -> (Result<u8, ()>) {
                    Ok(0)
                }
            ))
            .shape,
            Shape::Result
        );
    }

    #[test]
    fn params_and_receiver() {
        let f = parse(quote!(
            fn f(&mut self, mut a: u8, (b, c): (u8, u8), _: u8, d: impl Sized) {}
        ));
        assert!(f.receiver.is_some() && f.in_impl);
        let names: Vec<_> = f
            .params
            .iter()
            .map(|p| p.name.as_ref().map(unraw))
            .collect();
        assert_eq!(
            names,
            [Some("a".to_owned()), None, None, Some("d".to_owned())]
        );
        assert!(f.params[3].impl_trait && !f.params[0].impl_trait);
    }

    #[test]
    fn inner_attributes_are_separated() {
        let f = parse(quote!(
            #[inline]
            fn f() {
                #![allow(unused)]
            }
        ));
        assert_eq!(f.outer_attrs.len(), 1);
        assert_eq!(f.inner_attrs.len(), 1);
    }

    #[test]
    fn in_impl_detection() {
        assert!(
            !parse(quote!(
                fn f(x: u8) -> u8 {
                    x
                }
            ))
            .in_impl
        );
        assert!(
            parse(quote!(
                fn new(x: u8) -> Self {
                    todo!()
                }
            ))
            .in_impl
        );
        assert!(
            parse(quote!(
                fn get(x: Vec<Self>) {}
            ))
            .in_impl
        );
    }

    #[test]
    fn generic_params() {
        let f = parse(quote!(
            fn f<'a, T: Clone, const N: usize, U>(x: &'a T) {}
        ));
        let types: Vec<_> = f.type_params().map(ToString::to_string).collect();
        assert_eq!(types, ["T", "U"]);
        let fish: Vec<_> = f
            .turbofish_params()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(fish, ["T", "N", "U"]);
    }

    #[test]
    fn not_a_function() {
        assert!(Function::parse(quote!(
            struct S;
        ))
        .is_err());
        assert!(Function::parse(quote!(
            fn f(&self);
        ))
        .is_err());
    }
}
