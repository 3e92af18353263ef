//! The two stable non-cryptographic primitives the project uses everywhere: FNV-1a for
//! content keys (the same on every Rust version and machine, unlike `DefaultHasher`) and
//! SplitMix64, a generator whose whole state is one checkpointable integer.

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// 64-bit FNV-1a of `bytes`, as 16 hex digits.
pub fn fnv1a_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a64(bytes))
}

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, fast, and its state is one `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64 {
    /// The generator state (checkpointed by the trial's data sampler).
    pub state: u64,
}

impl SplitMix64 {
    /// A generator whose state is `state` as given (callers mix their seed first).
    pub fn from_state(state: u64) -> Self {
        Self { state }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; modulo bias is below 2^-40 for the sizes used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        // Reference values of the published algorithms.
        assert_eq!(super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a_hex(b"a"), "af63dc4c8601ec8c");
        let mut r = super::SplitMix64::from_state(1234567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }
}
