//! Instruction sets, detected once at run time.

use std::fmt;

/// The SIMD instruction set a [`crate::Kernels`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, every CPU.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F + BW + VL (+ BF16 / VNNI where present, see [`Isa::has_avx512_bf16`]).
    Avx512,
    /// AArch64 NEON.
    Neon,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IsaError {
    #[error("QKV_ISA={0:?} is not an instruction set qkv knows (use scalar, avx2, avx512 or neon)")]
    Unknown(String),
    #[error("instruction set {0} was asked for, but this CPU does not support it")]
    Unsupported(Isa),
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    pub fn parse(s: &str) -> Result<Isa, IsaError> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| IsaError::Unknown(s.to_string()))
    }

    /// Whether this CPU can run `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    pub fn check_supported(self) -> Result<(), IsaError> {
        if self.is_supported() {
            Ok(())
        } else {
            Err(IsaError::Unsupported(self))
        }
    }

    /// AVX-512 BF16 (`vdpbf16ps`) is present.
    pub fn has_avx512_bf16() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            Isa::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// AVX-512 VNNI is present (for int8 kernels).
    pub fn has_avx512_vnni() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            Isa::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The best ISA this CPU supports.
    pub fn best() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|i| i.is_supported())
            .unwrap_or(Isa::Scalar)
    }

    /// Every ISA this CPU supports, scalar first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// `QKV_ISA` if set (checked against the CPU), else [`Isa::best`].
    pub fn from_env() -> Result<Isa, IsaError> {
        match std::env::var("QKV_ISA") {
            Ok(v) if !v.trim().is_empty() => {
                let isa = Isa::parse(&v)?;
                isa.check_supported()?;
                Ok(isa)
            }
            _ => Ok(Isa::best()),
        }
    }
}

/// Per-ISA call counters: every dispatch to an ISA path adds one (tests check a forced ISA really ran).
static EXERCISED: [std::sync::atomic::AtomicU64; 4] = [const { std::sync::atomic::AtomicU64::new(0) }; 4];

fn isa_index(isa: Isa) -> usize {
    match isa {
        Isa::Scalar => 0,
        Isa::Avx2 => 1,
        Isa::Avx512 => 2,
        Isa::Neon => 3,
    }
}

/// How many kernel calls were dispatched to `isa` in this process so far.
pub fn exercised(isa: Isa) -> u64 {
    EXERCISED[isa_index(isa)].load(std::sync::atomic::Ordering::Relaxed)
}

/// Count one dispatch to `isa` (called by [`crate::simd::dispatch!`] and the hand-written wrappers).
#[inline]
pub(crate) fn note_exercised(isa: Isa) {
    EXERCISED[isa_index(isa)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}
