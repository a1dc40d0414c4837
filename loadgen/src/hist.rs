//! A latency histogram with log-linear buckets (32 per power of two, so a
//! percentile is off by at most about 3 %), cheap to record into, to
//! merge across tasks and processes, and to send as sparse JSON.

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two.
const SUB: u64 = 32;
const SUB_BITS: u32 = 5;

/// Recorded values (microseconds in this crate): counts per bucket, and the
/// exact count, sum and maximum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "Sparse", from = "Sparse")]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u64,
    max: u64,
}

/// The wire form: only non-empty buckets, as `[index, count]`.
#[derive(Serialize, Deserialize)]
struct Sparse {
    buckets: Vec<[u64; 2]>,
    count: u64,
    sum: u64,
    max: u64,
}

impl From<Histogram> for Sparse {
    fn from(h: Histogram) -> Sparse {
        Sparse {
            buckets: h
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| [i as u64, *c])
                .collect(),
            count: h.count,
            sum: h.sum,
            max: h.max,
        }
    }
}

impl From<Sparse> for Histogram {
    fn from(s: Sparse) -> Histogram {
        let mut h = Histogram {
            counts: Vec::new(),
            count: s.count,
            sum: s.sum,
            max: s.max,
        };
        for [i, c] in s.buckets {
            // A bucket index beyond any u64 value is garbage: skip it.
            let Ok(i) = usize::try_from(i) else { continue };
            if i > index(u64::MAX) {
                continue;
            }
            if h.counts.len() <= i {
                h.counts.resize(i + 1, 0);
            }
            h.counts[i] += c;
        }
        h
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let shift = exp - SUB_BITS;
    let mantissa = (v >> shift) - SUB;
    ((u64::from(shift) + 1) * SUB + mantissa) as usize
}

/// The middle of bucket `i`.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let low = (i % SUB + SUB) << shift;
    low + ((1u64 << shift) >> 1)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        let i = index(v);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean (exact), 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0..=1): the smallest bucket holding the
    /// `ceil(q * count)`-th value, never above the exact maximum (the
    /// last value is the maximum itself); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == self.count {
            return self.max;
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }

    /// p50, p90, p99, max and mean in milliseconds (values are µs), as JSON.
    pub fn summary_ms(&self) -> serde_json::Value {
        let ms = |us: u64| us as f64 / 1000.0;
        serde_json::json!({
            "count": self.count,
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "max": ms(self.max),
            "mean": self.mean() / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_three_percent() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.03, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.quantile(1.0), 100_000);
    }

    #[test]
    fn small_values_are_exact_and_merge_adds() {
        let mut a = Histogram::new();
        a.record(3);
        let mut b = Histogram::new();
        b.record(7);
        b.record(7);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.quantile(0.5), 7);
        assert_eq!(a.quantile(0.1), 3);
    }

    #[test]
    fn survives_json() {
        let mut h = Histogram::new();
        for v in [1, 10, 1_000, 1_000_000, u64::MAX] {
            h.record(v);
        }
        let back: Histogram =
            serde_json::from_str(&serde_json::to_string(&h).expect("json")).expect("parse");
        assert_eq!(back, h);
    }
}
