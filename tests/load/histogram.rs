//! Latencies in a fixed-size log-linear histogram: a few million deliveries cost the same 60 KiB
//! as a hundred, and any percentile is read back within 1 % (128 steps per power of two).

/// Steps per power of two, as a power of two: 2^7 = 128, so a bucket spans under 0.8 % of its value.
const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;
/// Enough buckets for any u64: values under `SUB` exactly, then `SUB` buckets per power of two.
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    pub fn record(&mut self, value: u64) {
        self.counts[index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0.5 for the median), as the lower edge of its bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return lower_edge(i).min(self.max);
            }
        }
        self.max
    }

    /// "p50 / p99" in milliseconds, for a table (the values are microseconds).
    pub fn p50_p99_ms(&self) -> String {
        format!(
            "{:.2} / {:.2}",
            self.quantile(0.5) as f64 / 1000.0,
            self.quantile(0.99) as f64 / 1000.0
        )
    }
}

fn index(value: u64) -> usize {
    if value < SUB as u64 {
        return value as usize;
    }
    let shift = 63 - value.leading_zeros() - SUB_BITS;
    let step = (value >> shift) as usize & (SUB - 1);
    SUB + shift as usize * SUB + step
}

fn lower_edge(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let shift = (index - SUB) / SUB;
    let step = (index - SUB) % SUB;
    ((SUB + step) as u64) << shift
}

/// Checked by the smoke run (`cargo test --bench load`): a bench without a harness runs no `#[test]`.
pub fn self_check() {
    for v in [0, 1, 127, 128, 255, 256, 1000, 123_456, 10_000_000_000] {
        let edge = lower_edge(index(v));
        assert!(edge <= v && v - edge <= v / 100, "{v} -> {edge}");
    }
}
