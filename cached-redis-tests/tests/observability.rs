//! The ecosystem's own channels: with the `metrics` feature the counters
//! and the miss-time histogram reach the installed `metrics` recorder,
//! labelled by namespace and prefix, and
//! hits, misses and errors are `tracing` events at debug level carrying the
//! prefix.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use cached_redis::cached;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// A recorder keeping every counter and histogram sample by name and labels.
#[derive(Default)]
struct Captured {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    samples: Mutex<HashMap<String, Arc<Mutex<Vec<f64>>>>>,
}

struct CounterCell(Arc<AtomicU64>);
impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, SeqCst);
    }
}

struct Samples(Arc<Mutex<Vec<f64>>>);
impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

fn id(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for &'static Captured {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = self
            .counters
            .lock()
            .unwrap()
            .entry(id(key))
            .or_default()
            .clone();
        Counter::from_arc(Arc::new(CounterCell(cell)))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let cell = self
            .samples
            .lock()
            .unwrap()
            .entry(id(key))
            .or_default()
            .clone();
        Histogram::from_arc(Arc::new(Samples(cell)))
    }
}

/// Debug events with their `prefix` field, from every thread.
#[derive(Default)]
struct Events(Mutex<Vec<(tracing::Level, String, Option<String>)>>);

struct Fields {
    message: String,
    prefix: Option<String>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "prefix" => self.prefix = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl tracing::Subscriber for &'static Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields {
            message: String::new(),
            prefix: None,
        };
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.message, fields.prefix));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[cached(prefix = "observed")]
fn observed(x: f64) -> f64 {
    std::thread::sleep(std::time::Duration::from_millis(3));
    x * 2.0
}

#[test]
fn counters_histogram_and_events_reach_the_ecosystem() {
    let captured: &'static Captured = Box::leak(Box::default());
    metrics::set_global_recorder(captured).unwrap();
    let events: &'static Events = Box::leak(Box::default());
    tracing::subscriber::set_global_default(events).unwrap();
    cached_redis::init(cached_redis::Config::builder().embedded().build().unwrap()).unwrap();

    observed(1.0); // miss
    observed(1.0); // hit
    observed(1.0); // hit
    observed(f64::NAN); // error: NaN cannot be keyed
    cached_redis::skip_cache_sync(|| observed(2.0)); // skip
                                                     // A cache of another namespace in the same process: its own series.
    let other = cached_redis::Cache::new(
        cached_redis::Config::builder()
            .embedded()
            .namespace("other")
            .build()
            .unwrap(),
    )
    .unwrap();
    other.in_scope(|| observed(1.0)); // miss, in `other`

    let counters = captured.counters.lock().unwrap();
    let count_in = |namespace: &str, name: &str| {
        counters
            .get(&format!("{name}{{namespace={namespace},prefix=observed}}"))
            .map_or(0, |c| c.load(SeqCst))
    };
    let count = |name: &str| count_in("cached", name);
    assert_eq!(count("cached_hits_total"), 2);
    assert_eq!(count("cached_misses_total"), 1);
    assert_eq!(count("cached_errors_total"), 1);
    assert_eq!(count("cached_skips_total"), 1);
    assert_eq!(count("cached_stores_total"), 1);
    assert_eq!(count_in("other", "cached_misses_total"), 1);
    assert_eq!(count_in("other", "cached_stores_total"), 1);
    assert_eq!(count_in("other", "cached_hits_total"), 0);
    assert_eq!(
        count("cached_bytes_stored_total"),
        cached_redis::local_stats("observed").unwrap().bytes_stored
    );
    let samples = captured.samples.lock().unwrap();
    let misses = samples["cached_miss_duration_seconds{namespace=cached,prefix=observed}"]
        .lock()
        .unwrap()
        .clone();
    assert_eq!(misses.len(), 1);
    assert!(misses[0] >= 0.003, "seconds: {misses:?}");

    let events = events.0.lock().unwrap();
    let with = |needle: &str| {
        events
            .iter()
            .filter(|(level, message, prefix)| {
                *level == tracing::Level::DEBUG
                    && message.contains(needle)
                    && prefix.as_deref() == Some("observed")
            })
            .count()
    };
    assert_eq!(with("cache hit"), 2, "{events:?}");
    // One miss in each cache.
    assert_eq!(with("cache miss"), 2, "{events:?}");
    assert_eq!(with("cache error"), 1, "{events:?}");
}
