//! `/cache`: the stats as a page, with no script: a table of every prefix
//! and each prefix's miss-time histogram as an inline SVG chart.
//!
//! The stats come from `cached_redis::report::read_all`, the reader
//! `cached-stats` uses too (with Redis: every process's flushed counts; with
//! the embedded store: this process's). Everything here is a pure function
//! of its reports.

use std::fmt::Write as _;

use cached_redis::report::{Bucket, PrefixReport};

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

/// The label of a histogram bucket: its upper bound.
fn bucket_label(bucket: &Bucket) -> String {
    match bucket.upto_us {
        // f64's Display: 2.5 stays "2.5", 10.0 becomes "10".
        Some(b) if b >= 1_000_000 => format!("{}s", b as f64 / 1e6),
        Some(b) if b >= 1000 => format!("{}ms", b as f64 / 1e3),
        Some(b) => format!("{b}µs"),
        None => "∞".to_owned(),
    }
}

/// The miss-time histogram of `report` as an SVG bar chart: one bar per
/// bucket, labelled with its upper bound, its count above it.
pub fn histogram_svg(report: &PrefixReport) -> String {
    const W: usize = 680;
    const H: usize = 190;
    const LEFT: usize = 10;
    const TOP: usize = 18;
    const PLOT_H: usize = 130;
    let buckets: Vec<Bucket> = report.histogram().collect();
    let slot = (W - 2 * LEFT) / buckets.len().max(1);
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"miss-time histogram\">\
         <line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"#888\"/>",
        y = TOP + PLOT_H,
        x2 = W - LEFT
    );
    for (i, bucket) in buckets.iter().enumerate() {
        let count = bucket.count;
        let x = LEFT + i * slot;
        let h = (count as f64 / max as f64 * PLOT_H as f64).round() as usize;
        let h = if count > 0 { h.max(2) } else { 0 };
        let _ = write!(
            svg,
            "<rect x=\"{bx}\" y=\"{by}\" width=\"{bw}\" height=\"{h}\" fill=\"#3b7dd8\"><title>≤ {label}: {count}</title></rect>",
            bx = x + 3,
            by = TOP + PLOT_H - h,
            bw = slot - 6,
            label = bucket_label(bucket),
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
            label = escape(&bucket_label(bucket)),
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
pub fn render(reports: &[PrefixReport]) -> String {
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
    if reports.is_empty() {
        html.push_str("<p>No cached call has been counted yet.</p></body></html>");
        return html;
    }
    html.push_str(
        "<table><thead><tr><th>prefix</th><th>hit ratio</th><th>hits</th><th>misses</th>\
         <th>skips</th><th>errors</th><th>stores</th><th>avg size</th><th>miss p50</th><th>miss p99</th></tr></thead><tbody>",
    );
    for report in reports {
        let s = &report.counters;
        let ratio = report.hit_ratio;
        let _ = write!(
            html,
            "<tr><td>{prefix}</td><td>{ratio_text}<span class=\"ratio\"><span style=\"width:{pct:.0}%\"></span></span></td>\
             <td>{hits}</td><td>{misses}</td><td>{skips}</td><td>{errors}</td><td>{stores}</td><td>{avg}</td><td>{p50}</td><td>{p99}</td></tr>",
            prefix = escape(&report.prefix),
            ratio_text = ratio.map_or("–".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            pct = ratio.unwrap_or(0.0) * 100.0,
            hits = s.hits,
            misses = s.misses,
            skips = s.skips,
            errors = s.errors,
            stores = s.stores,
            avg = report.mean_stored_bytes.map_or("–".to_owned(), human_bytes),
            p50 = report.p50.map_or("–".to_owned(), |p| human_us(p.us)),
            p99 = report.p99.map_or("–".to_owned(), |p| human_us(p.us)),
        );
    }
    html.push_str("</tbody></table>");
    for report in reports {
        let _ = write!(
            html,
            "<section><h2>{} — miss times</h2>{}</section><br>",
            escape(&report.prefix),
            histogram_svg(report)
        );
    }
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use cached_redis::StatsSnapshot;

    #[test]
    fn page_shows_ratio_and_one_bar_per_bucket() {
        let mut counters = StatsSnapshot {
            hits: 3,
            misses: 1,
            stores: 1,
            bytes_stored: 2048,
            miss_us_sum: 1500,
            ..StatsSnapshot::default()
        };
        counters.miss_buckets[4] = 1;
        let html = render(&[PrefixReport::from_counters("a<b", counters)]);
        assert!(html.contains("<td>a&lt;b</td>"));
        assert!(html.contains("75.0%"));
        assert!(html.contains("2.0 KB"));
        assert_eq!(html.matches("<rect ").count(), 17);
        assert!(html.contains(">2.5ms</text>"));
        assert!(html.contains(">10s</text>"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn no_stats_yet() {
        assert!(render(&[]).contains("No cached call"));
    }
}
