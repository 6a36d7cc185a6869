//! Tests of `cached-redis`, in a package of their own so that the root
//! package's examples build without the test dependencies.
//!
//! - `tests/`: the integration tests (run by `scripts/test.sh`, which starts
//!   the Redis servers and PostgreSQL they need), the compile-error cases
//!   of `#[cached]` (`tests/ui/`) and the property tests (`tests/fuzz_*.rs`).
//! - This library: the README's code blocks, compiled here as doc tests
//!   (they use axum and other crates the root package does not depend on).

/// The README's examples, compiled (and those not marked `no_run` run) as
/// doc tests of this package.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
