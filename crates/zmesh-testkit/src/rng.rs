//! A seeded random source for tests: deterministic, so a failure reproduces
//! from its seed.

/// xorshift64*.
pub struct SeededRng(u64);

impl SeededRng {
    /// A source from `seed` (any value but 0 gives a full cycle; 0 is
    /// nudged to 1).
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fewer than `max` bytes, each drawn from `alphabet`.
    pub fn bytes(&mut self, alphabet: &[u8], max: usize) -> Vec<u8> {
        let n = (self.next_u64() as usize) % max;
        (0..n)
            .map(|_| alphabet[(self.next_u64() as usize) % alphabet.len()])
            .collect()
    }
}
