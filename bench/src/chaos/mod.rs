//! The chaos run: cached functions under load while a redis-server
//! misbehaves, fault after fault, and the report of what callers saw
//! (RELIABILITY.md). Driven by `src/bin/chaos.rs`; `scripts/chaos.sh`
//! starts the servers and runs it.
//!
//! - `workload`: the cached functions and the workers calling them;
//! - `faults`: the faults themselves, shared with the test suite's
//!   chaos test (`cached-redis-tests/tests/chaos.rs`);
//! - `figures`: per-fault figures from the recorded calls and body runs;
//! - `report`: the markdown.

#[path = "../../../cached-redis-tests/tests/common/faults.rs"]
pub mod faults;
pub mod figures;
pub mod report;
pub mod workload;

pub use faults::{Fault, Injector, Target};
