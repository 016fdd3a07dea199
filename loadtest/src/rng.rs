//! A tiny seeded PRNG (xoshiro256++ seeded through splitmix64), so runs are reproducible without pulling in `rand`.

/// One step of splitmix64; also used on its own to derive independent sub-seeds.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes several words into one seed so that (seed, stream, index) triples give unrelated streams.
/// Each word is mixed in fully before the next: folding them in with only splitmix's additive
/// step let (seed, index) pairs cancel out (seed 102's inputs were mostly seed 101's).
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut state: u64 = 0x6A09_E667_F3BC_C908;
    for &p in parts {
        let mut word = state ^ p;
        state = splitmix64(&mut word);
    }
    splitmix64(&mut state)
}

#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 expansion guarantees a non-zero state even for seed 0.
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); n must be non-zero. Multiply-shift keeps bias negligible for the small n used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Exponential with the given rate (mean 1/rate): Poisson-process inter-arrival gaps.
    pub fn exponential(&mut self, rate: f64) -> f64 {
        // 1 - u lies in (0, 1], so the log is finite.
        -(1.0 - self.next_f64()).ln() / rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn derived_seeds_of_nearby_seeds_and_indices_never_meet() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..64u64 {
            for index in 0..4096u64 {
                assert!(
                    seen.insert(derive_seed(&[seed, 0, index])),
                    "seed {seed}, index {index}"
                );
            }
        }
    }

    #[test]
    fn unit_interval_and_below_stay_in_range() {
        let mut r = Rng::new(3);
        for _ in 0..10_000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.below(10) < 10);
        }
    }

    #[test]
    fn poisson_interarrival_mean_matches_rate() {
        let mut r = Rng::new(42);
        let rate = 250.0;
        let n = 200_000;
        let mean = (0..n).map(|_| r.exponential(rate)).sum::<f64>() / n as f64;
        let expected = 1.0 / rate;
        assert!(
            (mean - expected).abs() / expected < 0.01,
            "mean {mean} expected {expected}"
        );
    }

    #[test]
    fn derived_seeds_differ() {
        assert_ne!(derive_seed(&[1, 0, 0]), derive_seed(&[1, 0, 1]));
        assert_eq!(derive_seed(&[5, 6]), derive_seed(&[5, 6]));
    }
}
