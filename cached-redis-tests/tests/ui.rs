//! Compile-time behaviour of `#[cached]`: every error case in `tests/ui/`
//! has the exact diagnostics in its `.stderr`, and every file in
//! `tests/ui/pass/` compiles and runs.
//!
//! After changing a message, regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p cached-redis-tests --test ui` and read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}

// The lint test is also compiled into this test target, so that
// `cargo clippy --all-targets -- -D warnings` checks the expansion too.
#[path = "ui/pass/lints.rs"]
mod lints;

#[test]
fn lints_expansion_runs() {
    lints::main();
}
