//! `/cache`: the stats hashes as a page, with no script: a table of every
//! prefix and each prefix's miss-time histogram as an inline SVG chart.
//!
//! [`StatsSource`] is the one place that reads the stats; everything else
//! here is a pure function of what it returns.

use std::fmt::Write as _;

use cached_redis::{StatsSnapshot, MISS_BUCKETS_US};

/// The stats of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRow {
    /// The prefix.
    pub prefix: String,
    /// Its counters.
    pub stats: StatsSnapshot,
}

/// Where the page reads the stats: the hashes in Redis (every process's
/// counts, as `cached-stats` shows them) or, with the embedded store, this
/// process's own counters.
pub struct StatsSource {
    redis: Option<redis::Client>,
    namespace: String,
    /// The prefixes shown with the embedded store (nothing to scan there).
    local_prefixes: Vec<String>,
}

impl StatsSource {
    /// Reads from the Redis at `redis_url` when given, else this process.
    pub fn new(
        redis_url: Option<&str>,
        namespace: &str,
        local_prefixes: &[&str],
    ) -> Result<StatsSource, redis::RedisError> {
        Ok(StatsSource {
            redis: redis_url.map(redis::Client::open).transpose()?,
            namespace: namespace.to_owned(),
            local_prefixes: local_prefixes.iter().map(|p| (*p).to_owned()).collect(),
        })
    }

    /// Every prefix's stats, sorted by prefix.
    pub async fn read(&self) -> Result<Vec<PrefixRow>, redis::RedisError> {
        let Some(client) = &self.redis else {
            return Ok(self
                .local_prefixes
                .iter()
                .map(|prefix| PrefixRow {
                    prefix: prefix.clone(),
                    stats: cached_redis::local_stats(prefix).unwrap_or_default(),
                })
                .collect());
        };
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut rows = read_hashes(&mut conn, &self.namespace).await?;
        rows.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        Ok(rows)
    }
}

/// Finds the `{namespace}:*:stats` hashes with SCAN and reads each.
///
/// This is the adapter to switch to the runtime's public stats reader (the
/// one `cached-stats` uses) once it is available; the page only needs
/// `Vec<PrefixRow>`.
async fn read_hashes(
    conn: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
) -> Result<Vec<PrefixRow>, redis::RedisError> {
    let head = format!("{namespace}:");
    let pattern = format!("{}*:stats", glob_escape(&head));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    let mut rows = Vec::with_capacity(keys.len());
    for key in keys {
        let fields: Vec<(String, String)> =
            redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
        let prefix = key[head.len()..key.len() - ":stats".len()].to_owned();
        rows.push(PrefixRow {
            prefix,
            stats: parse_fields(&fields),
        });
    }
    Ok(rows)
}

fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The counters of a stats hash (fields as in the API: `hits`, ...,
/// `miss_us_le_<bound>`); unknown or malformed fields are ignored.
pub fn parse_fields(fields: &[(String, String)]) -> StatsSnapshot {
    let mut s = StatsSnapshot::default();
    for (name, value) in fields {
        let Ok(n) = value.parse::<u128>() else {
            continue;
        };
        let small = u64::try_from(n).unwrap_or(u64::MAX);
        match name.as_str() {
            "hits" => s.hits = small,
            "misses" => s.misses = small,
            "skips" => s.skips = small,
            "errors" => s.errors = small,
            "stores" => s.stores = small,
            "bytes_raw" => s.bytes_raw = small,
            "bytes_stored" => s.bytes_stored = small,
            "miss_us_sum" => s.miss_us_sum = small,
            "miss_us_sumsq" => s.miss_us_sumsq = n,
            "miss_us_le_inf" => s.miss_buckets[MISS_BUCKETS_US.len()] = small,
            other => {
                let bound = other
                    .strip_prefix("miss_us_le_")
                    .and_then(|b| b.parse::<u64>().ok());
                if let Some(i) = bound.and_then(|b| MISS_BUCKETS_US.iter().position(|&x| x == b)) {
                    s.miss_buckets[i] = small;
                }
            }
        }
    }
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `1.2 KB`, `530 B`.
fn human_bytes(bytes: f64) -> String {
    if bytes >= 1_048_576.0 {
        format!("{:.1} MB", bytes / 1_048_576.0)
    } else if bytes >= 1024.0 {
        format!("{:.1} KB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

/// `850 µs`, `12.5 ms`, `2.00 s`.
fn human_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The label of histogram bucket `i`: its upper bound.
fn bucket_label(i: usize) -> String {
    match MISS_BUCKETS_US.get(i) {
        Some(&b) if b >= 1_000_000 => format!("{}s", b / 1_000_000),
        Some(&b) if b >= 1000 => format!("{}ms", b / 1000),
        Some(&b) => format!("{b}µs"),
        None => "∞".to_owned(),
    }
}

/// The miss-time histogram of `s` as an SVG bar chart: one bar per bucket,
/// labelled with its upper bound, its count above it.
pub fn histogram_svg(s: &StatsSnapshot) -> String {
    const W: usize = 680;
    const H: usize = 190;
    const LEFT: usize = 10;
    const TOP: usize = 18;
    const PLOT_H: usize = 130;
    let n = s.miss_buckets.len();
    let slot = (W - 2 * LEFT) / n;
    let max = s.miss_buckets.iter().copied().max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"miss-time histogram\">\
         <line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"#888\"/>",
        y = TOP + PLOT_H,
        x2 = W - LEFT
    );
    for (i, &count) in s.miss_buckets.iter().enumerate() {
        let x = LEFT + i * slot;
        let h = (count as f64 / max as f64 * PLOT_H as f64).round() as usize;
        let h = if count > 0 { h.max(2) } else { 0 };
        let _ = write!(
            svg,
            "<rect x=\"{bx}\" y=\"{by}\" width=\"{bw}\" height=\"{h}\" fill=\"#3b7dd8\"><title>≤ {label}: {count}</title></rect>",
            bx = x + 3,
            by = TOP + PLOT_H - h,
            bw = slot - 6,
            label = bucket_label(i),
        );
        if count > 0 {
            let _ = write!(
                svg,
                "<text x=\"{cx}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#222\">{count}</text>",
                cx = x + slot / 2,
                ty = TOP + PLOT_H - h - 4,
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{cx}\" y=\"{ly}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
            cx = x + slot / 2,
            ly = TOP + PLOT_H + 16,
            label = escape(&bucket_label(i)),
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{x}\" y=\"{y}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#555\">compute time of misses (bucket upper bound)</text></svg>",
        x = W / 2,
        y = H - 6
    );
    svg
}

/// The whole page.
pub fn render(rows: &[PrefixRow]) -> String {
    let mut html = String::from(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>cache stats</title><style>",
        "body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}",
        "table{border-collapse:collapse;background:#fff}",
        "th,td{padding:6px 12px;border-bottom:1px solid #ddd;text-align:right}",
        "th:first-child,td:first-child{text-align:left}",
        ".ratio{display:inline-block;width:90px;height:10px;background:#e4e4e4;margin-left:8px}",
        ".ratio span{display:block;height:10px;background:#2e9e5b}",
        "section{background:#fff;border:1px solid #ddd;padding:8px 16px;margin:16px 0;display:inline-block}",
        "h2{font-size:16px;margin:8px 0}",
        "</style></head><body><h1>Cache stats</h1>",
    ));
    if rows.is_empty() {
        html.push_str("<p>No cached call has been counted yet.</p></body></html>");
        return html;
    }
    html.push_str(
        "<table><thead><tr><th>prefix</th><th>hit ratio</th><th>hits</th><th>misses</th>\
         <th>skips</th><th>errors</th><th>stores</th><th>avg size</th><th>mean miss</th></tr></thead><tbody>",
    );
    for row in rows {
        let s = &row.stats;
        let lookups = s.hits + s.misses;
        let ratio = (lookups > 0).then(|| s.hits as f64 / lookups as f64);
        let avg = (s.stores > 0).then(|| s.bytes_stored as f64 / s.stores as f64);
        let mean = (s.misses > 0).then(|| s.miss_us_sum as f64 / s.misses as f64);
        let _ = write!(
            html,
            "<tr><td>{prefix}</td><td>{ratio_text}<span class=\"ratio\"><span style=\"width:{pct:.0}%\"></span></span></td>\
             <td>{hits}</td><td>{misses}</td><td>{skips}</td><td>{errors}</td><td>{stores}</td><td>{avg}</td><td>{mean}</td></tr>",
            prefix = escape(&row.prefix),
            ratio_text = ratio.map_or("–".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            pct = ratio.unwrap_or(0.0) * 100.0,
            hits = s.hits,
            misses = s.misses,
            skips = s.skips,
            errors = s.errors,
            stores = s.stores,
            avg = avg.map_or("–".to_owned(), human_bytes),
            mean = mean.map_or("–".to_owned(), human_us),
        );
    }
    html.push_str("</tbody></table>");
    for row in rows {
        let _ = write!(
            html,
            "<section><h2>{} — miss times</h2>{}</section><br>",
            escape(&row.prefix),
            histogram_svg(&row.stats)
        );
    }
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hash_fields() {
        let fields: Vec<(String, String)> = [
            ("hits", "7"),
            ("misses", "3"),
            ("miss_us_le_250", "2"),
            ("miss_us_le_inf", "1"),
            ("miss_us_sumsq", "340282366920938463463374607431768211455"),
            ("future_field", "x"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        let s = parse_fields(&fields);
        assert_eq!((s.hits, s.misses), (7, 3));
        assert_eq!(s.miss_buckets[1], 2);
        assert_eq!(s.miss_buckets[16], 1);
        assert_eq!(s.miss_us_sumsq, u128::MAX);
    }

    #[test]
    fn page_shows_ratio_and_one_bar_per_bucket() {
        let mut stats = StatsSnapshot {
            hits: 3,
            misses: 1,
            stores: 1,
            bytes_stored: 2048,
            miss_us_sum: 1500,
            ..StatsSnapshot::default()
        };
        stats.miss_buckets[4] = 1;
        let html = render(&[PrefixRow {
            prefix: "a<b".into(),
            stats,
        }]);
        assert!(html.contains("<td>a&lt;b</td>"));
        assert!(html.contains("75.0%"));
        assert!(html.contains("2.0 KB"));
        assert_eq!(html.matches("<rect ").count(), 17);
        assert!(!html.contains("<script"));
    }
}
