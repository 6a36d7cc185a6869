//! The load demo's query mix: a fixed list of realistic searches over the
//! seeded vocabulary, drawn with a Zipf distribution (a few queries are
//! very popular, most are rare), from a seeded generator so every run
//! sends the same sequence.

use crate::db::{ADJECTIVES, CATEGORIES, MATERIALS, NOUNS};

/// A search: text and an optional category filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `q`.
    pub q: String,
    /// `category`.
    pub category: Option<&'static str>,
}

impl Query {
    /// The request path, query string encoded.
    pub fn path(&self) -> String {
        let mut path = format!("/search?q={}", encode(&self.q));
        if let Some(c) = self.category {
            path.push_str("&category=");
            path.push_str(c);
        }
        path
    }
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// SplitMix64: small, seeded, good enough for picking queries.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` distinct queries in popularity order (the first is the most
/// popular): single words, adjective + noun, material + noun, phrases,
/// exclusions, some within a category. Deterministic.
pub fn queries(n: usize) -> Vec<Query> {
    let mut all = Vec::new();
    for noun in NOUNS {
        all.push(Query {
            q: noun.to_owned(),
            category: None,
        });
    }
    for (i, adj) in ADJECTIVES.iter().enumerate() {
        for (j, noun) in NOUNS.iter().enumerate() {
            let category = ((i + j) % 5 == 0).then(|| CATEGORIES[(i * 3 + j) % CATEGORIES.len()]);
            all.push(Query {
                q: format!("{adj} {noun}"),
                category,
            });
        }
    }
    for (i, material) in MATERIALS.iter().enumerate() {
        for (j, noun) in NOUNS.iter().enumerate() {
            let q = match (i + j) % 3 {
                0 => format!("\"{material} {noun}\""),
                1 => format!(
                    "{material} {noun} -{}",
                    ADJECTIVES[(i + j) % ADJECTIVES.len()]
                ),
                _ => format!("{material} or {noun}"),
            };
            all.push(Query { q, category: None });
        }
    }
    // A fixed shuffle, so popularity is not alphabetical.
    let mut rng = Rng::new(0x5EED);
    for i in (1..all.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        all.swap(i, j);
    }
    all.truncate(n);
    all
}

/// Draws ranks 0..n with probability proportional to 1 / (rank + 1)^s.
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// A distribution over `n` ranks with exponent `s` (about 1 for web
    /// search logs).
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n.max(1))
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        Zipf {
            cumulative: cumulative.iter().map(|c| c / total).collect(),
        }
    }

    /// A rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cumulative
            .partition_point(|&c| c < u)
            .min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_distinct_and_deterministic() {
        let a = queries(1000);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, queries(1000));
        let mut paths: Vec<String> = a.iter().map(Query::path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 1000);
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        // P(rank 0) = 1 / H(1000) ≈ 13.4 %; rank 9 about a tenth of that.
        assert!((12_000..15_000).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[0] > 5 * counts[9]);
        assert!(counts.iter().filter(|&&c| c > 0).count() > 500);
    }
}
