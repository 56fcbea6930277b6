//! Latency histogram.

/// Log-linear buckets: values below 64 µs are exact, above that each power of two is cut into
/// 32 buckets, so a percentile is at most 1/32 (3.1%) above the true value. Fixed size: recording
/// never allocates, whatever the number of messages.
pub struct Histogram {
    counts: Vec<u64>,
    pub total: u64,
    pub max: u64,
}

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const LINEAR: u64 = 2 << SUB_BITS;
const BUCKETS: usize = LINEAR as usize + (64 - SUB_BITS as usize - 1) * SUB;

impl Histogram {
    pub fn new() -> Histogram {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }

    fn bucket(v: u64) -> usize {
        if v < LINEAR {
            v as usize
        } else {
            let e = 63 - v.leading_zeros();
            let sub = (v >> (e - SUB_BITS)) as usize - SUB;
            LINEAR as usize + (e - SUB_BITS - 1) as usize * SUB + sub
        }
    }

    /// The largest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < LINEAR as usize {
            return i as u64;
        }
        let k = i - LINEAR as usize;
        let shift = (k / SUB) as u32 + 1;
        (((SUB + k % SUB) as u64) << shift) + ((1u64 << shift) - 1)
    }

    pub fn record(&mut self, v: u64) {
        self.counts[Self::bucket(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// The value at percentile `p` (0..=100), rounded up to its bucket's top; `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_exact_below_64_and_within_a_thirty_second_above() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(50.0), None);
        for v in 1..=50 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(25));
        assert_eq!(h.percentile(99.0), Some(50));
        assert_eq!(h.percentile(100.0), Some(50));
        assert_eq!(h.percentile(0.0), Some(1));

        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for p in [1.0, 10.0, 50.0, 90.0, 99.0, 99.9] {
            let truth = (p / 100.0 * 100_000.0) as u64;
            let got = h.percentile(p).unwrap();
            assert!(got >= truth && got as f64 <= truth as f64 * (1.0 + 1.0 / 32.0), "p{p}: {got} vs {truth}");
        }
        assert_eq!(h.percentile(100.0), Some(100_000));
    }

    #[test]
    fn histogram_percentiles_of_a_skewed_distribution() {
        // 990 fast messages and 10 slow ones: p99 is still fast, p99.9 and max are slow.
        let mut h = Histogram::new();
        for _ in 0..990 {
            h.record(40);
        }
        for _ in 0..10 {
            h.record(5_000);
        }
        assert_eq!(h.percentile(50.0), Some(40));
        assert_eq!(h.percentile(99.0), Some(40));
        let p999 = h.percentile(99.9).unwrap();
        assert!((5_000..=5_000 + 5_000 / 32).contains(&p999), "{p999}");
        assert_eq!(h.max, 5_000);
        assert_eq!(h.percentile(100.0), Some(5_000));
    }

    #[test]
    fn histogram_buckets_are_ordered_and_cover_every_value() {
        let mut last = 0;
        let values =
            (0..5000u64).chain((13..64).flat_map(|e| [(1u64 << e) - 1, 1 << e, (1 << e) + 1])).chain([u64::MAX]);
        for v in values {
            let i = Histogram::bucket(v);
            assert!(i < BUCKETS);
            assert!(Histogram::upper(i) >= v, "{v} above its bucket {i}");
            assert!(i == 0 || Histogram::upper(i - 1) < v, "{v} belongs lower than {i}");
            if v < 5000 {
                assert!(i >= last);
                last = i;
            }
        }
        assert_eq!(Histogram::upper(BUCKETS - 1), u64::MAX);
    }
}
