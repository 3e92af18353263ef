//! Which implementation runs: detected once from the CPU, overridable by `AUTOQAT_KERNEL`.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces a kernel path: `portable`, `avx2`, `avx512` (with VNNI
/// when the CPU has it), `avx512bw` (never VNNI). A path the CPU lacks falls back to the best
/// one below it; an unknown value is ignored.
pub const KERNEL_ENV: &str = "AUTOQAT_KERNEL";

/// An implementation of the kernels, slowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelPath {
    /// Scalar Rust, any CPU; also the only path for group sizes that are not multiples of 64.
    Portable,
    /// AVX2 + FMA (256-bit `maddubs`).
    Avx2,
    /// AVX-512 F + BW (512-bit `maddubs`), no VNNI.
    Avx512,
    /// AVX-512 F + BW + VNNI (`vpdpbusd`).
    Avx512Vnni,
}

impl KernelPath {
    /// Every path, slowest first.
    pub const ALL: [KernelPath; 4] = [Self::Portable, Self::Avx2, Self::Avx512, Self::Avx512Vnni];

    /// The lowercase name (`portable`, `avx2`, `avx512`, `avx512-vnni`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Avx512Vnni => "avx512-vnni",
        }
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = || is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 = || avx2() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
            match self {
                Self::Portable => true,
                Self::Avx2 => avx2(),
                Self::Avx512 => avx512(),
                Self::Avx512Vnni => avx512() && is_x86_feature_detected!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Self::Portable
        }
    }

    /// The paths this CPU supports, slowest first (tests run each).
    pub fn available() -> Vec<KernelPath> {
        Self::ALL.into_iter().filter(|p| p.supported()).collect()
    }

    /// The fastest supported path.
    pub fn best() -> KernelPath {
        Self::ALL.into_iter().rev().find(|p| p.supported()).unwrap_or(Self::Portable)
    }

    /// The fastest supported path not above `self`.
    pub fn or_below(self) -> KernelPath {
        Self::ALL.into_iter().rev().find(|p| *p <= self && p.supported()).unwrap_or(Self::Portable)
    }

    /// The path to use by default: [`KERNEL_ENV`] if set and known, else [`KernelPath::best`].
    pub fn default_path() -> KernelPath {
        static CHOSEN: OnceLock<KernelPath> = OnceLock::new();
        *CHOSEN.get_or_init(|| match std::env::var(KERNEL_ENV).ok().as_deref().map(str::trim) {
            Some("portable") => Self::Portable,
            Some("avx2") => Self::Avx2.or_below(),
            Some("avx512bw") => Self::Avx512.or_below(),
            Some("avx512" | "avx512-vnni" | "avx512vnni") => Self::Avx512Vnni.or_below(),
            _ => Self::best(),
        })
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of the path [`crate::Kernels::new`] uses (see [`KernelPath::default_path`]).
pub fn kernel_path() -> &'static str {
    KernelPath::default_path().name()
}
