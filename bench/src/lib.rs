//! Shared parts of the cached-redis benchmarks: the fixtures, the latency
//! histogram, the results' data model, and the report (markdown, chart)
//! the load binary writes; the chaos run (`chaos`).

pub mod chaos;
pub mod coherence;
pub mod fixtures;
pub mod hist;
pub mod report;
pub mod report_local;
pub mod results;
pub mod topologies;
