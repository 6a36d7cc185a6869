//! Writing the gathered stats to Redis: one pipelined round trip per flush,
//! at `stats_flush_interval` on the crate's runtime and on demand through
//! [`crate::flush_stats`].
//!
//! Counters go in with `HINCRBY`. `miss_us_sumsq` can outgrow a 64-bit
//! integer over a service's life (a billion misses of ten seconds is 10^23
//! µs²), so it is kept as a decimal big integer, added to by a small Lua
//! script: exact, never overflowing, still readable with `HGET`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::error::Error;
use crate::stats::{self, StatsSnapshot};
use crate::store::RedisStore;

/// Adds ARGV[2] (a non-negative decimal integer) to the decimal integer in
/// field ARGV[1] of hash KEYS[1]; a field that is not a decimal integer is
/// an error, left untouched.
const ADD_DECIMAL: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
local inc = ARGV[2]
if not string.match(cur, '^%d+$') or not string.match(inc, '^%d+$') then
  return redis.error_reply('ERR field ' .. ARGV[1] .. ' is not a decimal integer')
end
local out, carry, i, j = {}, 0, #cur, #inc
while i > 0 or j > 0 or carry > 0 do
  local d = carry
  if i > 0 then d = d + string.byte(cur, i) - 48 end
  if j > 0 then d = d + string.byte(inc, j) - 48 end
  out[#out + 1] = string.char(48 + d % 10)
  carry = math.floor(d / 10)
  i, j = i - 1, j - 1
end
local s = string.reverse(table.concat(out)):gsub('^0+(%d)', '%1')
redis.call('HSET', KEYS[1], ARGV[1], s)
return s
"#;

/// What was last written for each prefix, so each flush sends only the
/// difference. Locked across the whole flush so that the interval flusher
/// and an explicit `flush_stats()` never send the same counts twice.
fn flushed() -> &'static tokio::sync::Mutex<HashMap<String, StatsSnapshot>> {
    static FLUSHED: OnceLock<tokio::sync::Mutex<HashMap<String, StatsSnapshot>>> = OnceLock::new();
    FLUSHED.get_or_init(Default::default)
}

/// Writes every prefix's counts since the last flush to
/// `{namespace}:{prefix}:stats`.
pub(crate) async fn flush(store: &RedisStore, namespace: &str) -> Result<(), Error> {
    let mut flushed = flushed().lock().await;
    let mut pipe = redis::pipe();
    let mut pending = Vec::new();
    for (prefix, counters) in stats::all() {
        let now = counters.snapshot();
        let delta = now.since(flushed.get(&prefix).unwrap_or(&StatsSnapshot::default()));
        if delta.is_empty() {
            continue;
        }
        let hash = format!("{namespace}:{prefix}:stats");
        for (field, inc) in delta.integer_fields() {
            pipe.cmd("HINCRBY").arg(&hash).arg(field).arg(inc).ignore();
        }
        if delta.miss_us_sumsq != 0 {
            pipe.cmd("EVAL")
                .arg(ADD_DECIMAL)
                .arg(1)
                .arg(&hash)
                .arg("miss_us_sumsq")
                .arg(delta.miss_us_sumsq.to_string())
                .ignore();
        }
        pending.push((prefix, now));
    }
    if pending.is_empty() {
        return Ok(());
    }
    store
        .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
        .await
        .map_err(Error::from)?;
    flushed.extend(pending);
    Ok(())
}

/// Starts the interval flusher once.
pub(crate) fn start_interval_flusher(interval: std::time::Duration) {
    static STARTED: Mutex<bool> = Mutex::new(false);
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if *started {
        return;
    }
    *started = true;
    crate::io::handle().spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let engine = crate::engine::engine();
            if let Some(store) = engine.redis() {
                if let Err(e) = flush(store, &engine.config.namespace).await {
                    tracing::debug!(error = %e, "stats flush failed; counts kept for the next one");
                }
            }
        }
    });
}
