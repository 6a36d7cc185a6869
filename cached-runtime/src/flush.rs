//! Writing the gathered stats to Redis: one pipelined round trip per flush,
//! at `stats_flush_interval` on the crate's runtime and on demand through
//! [`crate::flush_stats`].
//!
//! A small Lua script adds each prefix's counts, all or nothing, as exact
//! decimal sums. Counters stay within a 64-bit signed integer (as
//! `HINCRBY` would keep them); `miss_us_sumsq` can outgrow that over a
//! service's life (a billion misses of ten seconds is 10^23 µs²), so it is
//! a decimal big integer: exact, never overflowing, still readable with
//! `HGET`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::engine::Engine;
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::stats::{StatsRegistry, StatsSnapshot};
use crate::store::RedisStore;

/// Adds a prefix's counts to its hash, all or nothing. ARGV holds
/// `field, increment` pairs. Every field it touches must hold a
/// non-negative integer (or be absent), and every sum but
/// `miss_us_sumsq`'s must stay within a 64-bit signed integer (what
/// `HINCRBY` and readers take), else nothing is written and the error names
/// the field: a script is not rolled back, so a write that failed half-way
/// would be sent again whole by the next flush. The sums are exact decimal
/// additions (Lua numbers are doubles), digit by digit; `miss_us_sumsq`
/// has no bound.
const ADD_STATS: &str = r#"
local function add(cur, inc)
  local out, carry, a, b = {}, 0, #cur, #inc
  while a > 0 or b > 0 or carry > 0 do
    local d = carry
    if a > 0 then d = d + string.byte(cur, a) - 48 end
    if b > 0 then d = d + string.byte(inc, b) - 48 end
    out[#out + 1] = string.char(48 + d % 10)
    carry = math.floor(d / 10)
    a, b = a - 1, b - 1
  end
  return (string.gsub(string.reverse(table.concat(out)), '^0+(%d)', '%1'))
end
local h = KEYS[1]
local sums = {}
for i = 1, #ARGV, 2 do
  local field, inc = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', h, field) or '0'
  if not string.match(cur, '^%d+$') then
    return redis.error_reply('ERR field ' .. field .. ' of ' .. h .. ' is not a non-negative integer')
  end
  local sum = add(cur, inc)
  if field ~= 'miss_us_sumsq' and (#sum > 19 or (#sum == 19 and sum > '9223372036854775807')) then
    return redis.error_reply('ERR field ' .. field .. ' of ' .. h .. ' would pass 2^63 - 1')
  end
  sums[#sums + 1] = field
  sums[#sums + 1] = sum
end
if #sums > 0 then
  redis.call('HSET', h, unpack(sums))
end
return 1
"#;

/// What a cache last wrote for each prefix, so each flush sends only the
/// difference. Locked across the whole flush so that the interval flusher
/// and an explicit `flush_stats()` never send the same counts twice.
pub(crate) type Flushed = tokio::sync::Mutex<HashMap<String, StatsSnapshot>>;

/// The commands that add every prefix's counts since `flushed` to Redis,
/// and the snapshots to remember once they went through; `None` when there
/// is nothing to send.
type Batch = (redis::Pipeline, Vec<(String, StatsSnapshot)>);

fn batch(
    namespace: &str,
    counters: &StatsRegistry,
    flushed: &HashMap<String, StatsSnapshot>,
) -> Option<Batch> {
    let mut pipe = redis::pipe();
    // One script call per prefix; a failing one must not hide the others'
    // results, which are remembered separately.
    pipe.ignore_errors();
    let mut pending = Vec::new();
    for (prefix, counters) in counters.all() {
        let now = counters.snapshot();
        let last = flushed.get(&prefix);
        let delta = now.since(last.unwrap_or(&StatsSnapshot::default()));
        if delta.is_empty() {
            continue;
        }
        let cmd = pipe
            .cmd("EVAL")
            .arg(ADD_STATS)
            .arg(1)
            .arg(format!("{namespace}:{prefix}:stats"));
        // A prefix's first write from this process names every field, zero
        // or not, so that `HGET` of any field and `HGETALL` find them all
        // (`0`, not nil) without a reader knowing the schema; later ones
        // send only what changed.
        let fields = if last.is_none() {
            delta.all_integer_fields()
        } else {
            delta.integer_fields()
        };
        for (field, inc) in fields {
            cmd.arg(field).arg(inc);
        }
        if delta.miss_us_sumsq != 0 || last.is_none() {
            cmd.arg("miss_us_sumsq")
                .arg(delta.miss_us_sumsq.to_string());
        }
        pending.push((prefix, now));
    }
    (!pending.is_empty()).then_some((pipe, pending))
}

/// What became of one prefix's counts in a flush.
enum Outcome {
    /// Added to its hash.
    Written,
    /// Not added (Redis refused the script, or it was never sent): sent
    /// again by the next flush.
    NotWritten(Error),
    /// Sent, and no answer came in time: Redis may have added them, and
    /// may yet (a slow server runs the script late). Counted as written:
    /// sent again, they would be counted twice.
    InDoubt(Error),
}

impl Outcome {
    /// A connection that failed is taken for one that never delivered the
    /// command (it was closed before: a restart, a kill, a failover, the
    /// common case) and the counts are sent again; a timeout, for a slow
    /// server that will run it.
    fn of(result: Result<(), Error>) -> Self {
        match result {
            Ok(()) => Outcome::Written,
            Err(Error::Store(e)) if e.may_have_run() && e.kind() == StoreErrorKind::Timeout => {
                Outcome::InDoubt(Error::Store(e))
            }
            Err(e) => Outcome::NotWritten(e),
        }
    }

    /// The outcome of one script's reply within an answered pipeline.
    fn of_reply(reply: redis::RedisResult<redis::Value>) -> Self {
        match reply {
            Ok(_) => Outcome::Written,
            Err(e) => Outcome::NotWritten(Error::Store(
                crate::error::StoreError::new(
                    crate::error::StoreErrorKind::Response,
                    e.to_string(),
                )
                .not_run(),
            )),
        }
    }
}

/// Remembers what went through, or may have; the first failure, if any,
/// is the result.
fn settle(
    flushed: &mut HashMap<String, StatsSnapshot>,
    pending: Vec<(String, StatsSnapshot)>,
    outcomes: impl IntoIterator<Item = Outcome>,
) -> Result<(), Error> {
    let mut first_error = None;
    for ((prefix, snapshot), outcome) in pending.into_iter().zip(outcomes) {
        match outcome {
            Outcome::Written => {
                flushed.insert(prefix, snapshot);
            }
            Outcome::NotWritten(e) => {
                tracing::warn!(prefix = %prefix, error = %e, "stats not written; kept for the next flush");
                first_error.get_or_insert(e);
            }
            Outcome::InDoubt(e) => {
                tracing::warn!(
                    prefix = %prefix,
                    error = %e,
                    "stats sent without an answer; not sent again (they may be missing from the hash, never counted twice)"
                );
                flushed.insert(prefix, snapshot);
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The outcomes of a whole pipeline: its replies, or its failure for each
/// of its `n` scripts.
fn pipeline_outcomes(
    answer: Result<Vec<redis::RedisResult<redis::Value>>, crate::error::StoreError>,
    n: usize,
) -> Vec<Outcome> {
    match answer {
        Ok(replies) => replies.into_iter().map(Outcome::of_reply).collect(),
        Err(e) => (0..n)
            .map(|_| Outcome::of(Err(Error::Store(e.clone()))))
            .collect(),
    }
}

/// Writes every prefix's counts since the last flush of `engine` to
/// `{namespace}:{prefix}:stats` in its Redis, in one round trip. Without
/// Redis (or with caching off) this does nothing.
pub(crate) async fn flush(engine: &Engine) -> Result<(), Error> {
    let Some(store) = engine.redis() else {
        return Ok(());
    };
    flush_to(
        store,
        &engine.config.namespace,
        &engine.stats,
        &engine.flushed,
    )
    .await
}

/// [`flush`] on the crate's own runtime, awaited: what `flush_stats`
/// runs. Its caller may drop this future (a shutdown under a timeout)
/// after the pipeline went out; run in the caller's future, the flush
/// would then never note what it sent, and the next flush (the exit
/// hook's, say) would send the same counts again. The task finishes and
/// notes it, whatever becomes of the caller.
pub(crate) async fn flush_detached(engine: Arc<Engine>) -> Result<(), Error> {
    match crate::io::handle()
        .spawn(async move { flush(&engine).await })
        .await
    {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only if the crate's runtime is shutting down: nothing was sent.
        Err(e) => Err(Error::Store(
            StoreError::new(
                StoreErrorKind::Connection,
                format!("stats flush not run: {e}"),
            )
            .not_run(),
        )),
    }
}

/// [`flush`] of a cache's parts: also what a dropped cache sends last.
pub(crate) async fn flush_to(
    store: &RedisStore,
    namespace: &str,
    stats: &StatsRegistry,
    flushed: &Flushed,
) -> Result<(), Error> {
    let mut flushed = flushed.lock().await;
    let Some((pipe, pending)) = batch(namespace, stats, &flushed) else {
        return Ok(());
    };
    let outcomes = if store.is_cluster() {
        // Each prefix's hash lives in its own slot, maybe on its own master:
        // a pipeline must not cross slots, so one command each.
        let mut outcomes = Vec::with_capacity(pending.len());
        for cmd in pipe.cmd_iter() {
            let result = store.query::<redis::Value>(cmd).await;
            outcomes.push(Outcome::of(result.map(drop).map_err(Error::from)));
        }
        outcomes
    } else {
        let n = pending.len();
        let answer = store
            .run(|mut c| async move {
                pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut c)
                    .await
            })
            .await;
        pipeline_outcomes(answer, n)
    };
    settle(&mut flushed, pending, outcomes)
}

/// [`flush`] without a runtime, for the exit hook. Another flush under way
/// sends only the counts of its snapshot: this one waits for it (within
/// twice the command timeout, and never more than [`EXIT_WAIT_MAX`], then
/// gives up) and sends the rest.
fn flush_blocking(engine: &Engine) -> Result<(), Error> {
    let Some(store) = engine.redis() else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + exit_wait(engine.config.timeout);
    let mut flushed = loop {
        match engine.flushed.try_lock() {
            Ok(flushed) => break flushed,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return Ok(()),
        }
    };
    let Some((pipe, pending)) = batch(&engine.config.namespace, &engine.stats, &flushed) else {
        return Ok(());
    };
    let outcomes = if store.is_cluster() {
        pipe.cmd_iter()
            .map(|cmd| {
                let result = store.run_sync(|c| cmd.query::<redis::Value>(c));
                Outcome::of(result.map(drop).map_err(Error::from))
            })
            .collect()
    } else {
        let n = pending.len();
        let answer = store.run_sync(|c| pipe.query::<Vec<redis::RedisResult<redis::Value>>>(c));
        pipeline_outcomes(answer, n)
    };
    settle(&mut flushed, pending, outcomes)
}

/// The longest the exit hook waits for a flush under way (and, twice
/// that, for all its work): a process must not hang at exit on a cache
/// configured with a very long timeout, or on a Redis that stopped
/// answering.
const EXIT_WAIT_MAX: Duration = Duration::from_secs(5);

/// How long the exit hook waits for a flush under way, for a cache whose
/// commands time out after `timeout` (which may be `Duration::MAX`).
fn exit_wait(timeout: Duration) -> Duration {
    timeout.saturating_mul(2).min(EXIT_WAIT_MAX)
}

/// The exit hook's flushes, on a thread of their own, waited for at most
/// [`exit_budget`]: a Redis that stops answering would otherwise hold the
/// exit for a command timeout per prefix (the blocking client reads every
/// reply of a pipeline, each within the timeout). Past the budget the
/// process exits, and the counts not sent are lost.
fn flush_all_at_exit() {
    let engines = crate::engine::started();
    let budget = exit_budget(engines.iter().map(|e| e.config.timeout));
    let flush_all = move || {
        for engine in engines {
            if let Err(e) = flush_blocking(&engine) {
                tracing::debug!(error = %e, "stats flush at exit failed");
            }
        }
    };
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("cached-redis-exit-flush".into())
        .spawn(move || {
            flush_all();
            let _ = done.send(());
        });
    match spawned {
        Ok(_) => {
            if finished.recv_timeout(budget).is_err() {
                tracing::debug!(
                    ?budget,
                    "stats flush at exit unfinished; exiting without it"
                );
            }
        }
        // No thread to spare: skipped, since a bounded exit matters more
        // than the last counts.
        Err(_) => tracing::debug!("no thread for the stats flush at exit; skipped"),
    }
}

/// How long the exit hook waits for its flushes, for caches whose commands
/// time out after `timeouts`: a wait for a flush under way and a flush of
/// its own for each cache, one after the other, and never more than twice
/// [`EXIT_WAIT_MAX`] (a wait and a flush).
fn exit_budget(timeouts: impl Iterator<Item = Duration>) -> Duration {
    timeouts
        .map(|timeout| exit_wait(timeout).saturating_mul(2))
        .fold(Duration::ZERO, Duration::saturating_add)
        .min(EXIT_WAIT_MAX.saturating_mul(2))
}

/// Flushes once more when the process exits normally (`main` returns or
/// `std::process::exit`), so a short-lived program loses no counts. A
/// process killed by a signal skips it: call [`crate::flush_stats`] from the
/// shutdown path of a service that handles signals.
pub(crate) fn flush_at_exit() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        unsafe extern "C" {
            fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
        }
        extern "C" fn on_exit() {
            // Never unwind into C, whatever happens on the way out.
            let _ = std::panic::catch_unwind(flush_all_at_exit);
        }
        // SAFETY: `atexit` is the C library's; the callback is a plain
        // `extern "C" fn` that catches every panic.
        let rc = unsafe { atexit(on_exit) };
        if rc != 0 {
            tracing::debug!("cannot register the stats flush at exit");
        }
    });
}

/// Starts `engine`'s interval flusher (once per engine: the engine calls
/// this when it starts). It holds the engine weakly, so that a dropped
/// cache is not kept alive by it, and ends when the engine is gone (the
/// engine also aborts it when dropped).
pub(crate) fn start_interval_flusher(
    engine: Weak<Engine>,
    interval: Duration,
) -> tokio::task::AbortHandle {
    crate::io::handle()
        .spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                if let Err(e) = flush(&engine).await {
                    tracing::debug!(error = %e, "stats flush failed; counts kept for the next one");
                }
            }
        })
        .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_wait_is_bounded_whatever_the_timeout() {
        assert_eq!(
            exit_wait(Duration::from_millis(250)),
            Duration::from_millis(500)
        );
        assert_eq!(exit_wait(Duration::from_secs(60)), EXIT_WAIT_MAX);
        assert_eq!(exit_wait(Duration::MAX), EXIT_WAIT_MAX);
    }

    #[test]
    fn the_exit_budget_covers_every_cache_within_the_cap() {
        let ms = Duration::from_millis;
        assert_eq!(exit_budget([ms(250), ms(100)].into_iter()), ms(1_400));
        assert_eq!(
            exit_budget([ms(250), Duration::MAX].into_iter()),
            EXIT_WAIT_MAX * 2
        );
        assert_eq!(exit_budget(std::iter::empty()), Duration::ZERO);
    }
}
