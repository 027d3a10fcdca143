//! Instruction sets, detected once at run time.

use std::fmt;

/// The SIMD instruction set a [`crate::Kernels`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, every CPU.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F + BW + VL (+ BF16 / VNNI where present, see [`Feature`]).
    Avx512,
    /// AArch64 NEON.
    Neon,
}

/// A CPU capability some kernel path needs: an [`Isa`] or an extension used inside one.
/// Tests ask for features with [`Feature::is_present`] and report the absent ones as skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The [`Isa::Avx2`] path (AVX2, FMA, F16C).
    Avx2,
    /// The [`Isa::Avx512`] path (AVX-512 F, BW, VL on top of AVX2).
    Avx512,
    /// `vdpbf16ps` inside the AVX-512 path ([`crate::Bf16Gemv::DotBf16`]).
    Avx512Bf16,
    /// `vpdpwssd` inside the AVX-512 path ([`crate::I8Gemv::DotI16`]) and `vpdpbusd` (the int8 x int8 GEMM).
    Avx512Vnni,
    /// The [`Isa::Neon`] path.
    Neon,
    /// `sdot` (Armv8.2 dot product) inside the NEON path: the int8 x int8 GEMM.
    NeonDot,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IsaError {
    #[error("QKV_ISA={0:?} is not an instruction set qkv knows (use scalar, avx2, avx512 or neon)")]
    Unknown(String),
    /// `missing` names the CPU flags this machine lacks (on another architecture: the architecture).
    #[error("instruction set {isa} cannot run on this CPU: missing {}", missing.join(", "))]
    Unsupported { isa: Isa, missing: Vec<&'static str> },
    /// As `Unsupported`, for the ISA `QKV_ISA` forces.
    #[error("QKV_ISA={isa} cannot run on this CPU: missing {}", missing.join(", "))]
    EnvUnsupported { isa: Isa, missing: Vec<&'static str> },
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this CPU has the x86 feature `flag` (as `is_x86_feature_detected!` spells it).
#[cfg(target_arch = "x86_64")]
fn cpu_has(flag: &str) -> bool {
    use std::arch::is_x86_feature_detected as has;
    match flag {
        "avx2" => has!("avx2"),
        "fma" => has!("fma"),
        "f16c" => has!("f16c"),
        "avx512f" => has!("avx512f"),
        "avx512bw" => has!("avx512bw"),
        "avx512vl" => has!("avx512vl"),
        "avx512bf16" => has!("avx512bf16"),
        "avx512vnni" => has!("avx512vnni"),
        _ => false,
    }
}

#[cfg(target_arch = "aarch64")]
fn cpu_has(flag: &str) -> bool {
    match flag {
        "neon" => std::arch::is_aarch64_feature_detected!("neon"),
        "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
        _ => false,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has(_flag: &str) -> bool {
    false
}

/// The architecture an ISA belongs to, and the one this build runs on.
fn arch_of(isa: Isa) -> Option<&'static str> {
    match isa {
        Isa::Scalar => None,
        Isa::Avx2 | Isa::Avx512 => Some("x86_64"),
        Isa::Neon => Some("aarch64"),
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

    /// The CPU flags this path is compiled for (the `#[target_feature]`s of its wrappers).
    pub fn cpu_flags(self) -> &'static [&'static str] {
        match self {
            Isa::Scalar => &[],
            Isa::Avx2 => &["avx2", "fma", "f16c"],
            Isa::Avx512 => &["avx512f", "avx512bw", "avx512vl", "avx2", "fma", "f16c"],
            Isa::Neon => &["neon"],
        }
    }

    /// What this CPU lacks to run `self`: its missing CPU flags, or the architecture when the path belongs to
    /// another one. Empty when supported.
    pub fn missing(self) -> Vec<&'static str> {
        match arch_of(self) {
            Some("aarch64") if std::env::consts::ARCH != "aarch64" => vec!["an aarch64 CPU (neon)"],
            Some("x86_64") if std::env::consts::ARCH != "x86_64" => vec!["an x86-64 CPU"],
            _ => self.cpu_flags().iter().copied().filter(|f| !cpu_has(f)).collect(),
        }
    }

    /// Whether this CPU can run `self`.
    pub fn is_supported(self) -> bool {
        match arch_of(self) {
            Some(arch) if arch != std::env::consts::ARCH => false,
            _ => self.cpu_flags().iter().all(|f| cpu_has(f)),
        }
    }

    pub fn check_supported(self) -> Result<(), IsaError> {
        let missing = self.missing();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(IsaError::Unsupported { isa: self, missing })
        }
    }

    /// AVX-512 BF16 (`vdpbf16ps`) is present.
    pub fn has_avx512_bf16() -> bool {
        Feature::Avx512Bf16.is_present()
    }

    /// AVX-512 VNNI is present (for int8 kernels).
    pub fn has_avx512_vnni() -> bool {
        Feature::Avx512Vnni.is_present()
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
                match isa.check_supported() {
                    Err(IsaError::Unsupported { isa, missing }) => Err(IsaError::EnvUnsupported { isa, missing }),
                    _ => Ok(isa),
                }
            }
            _ => Ok(Isa::best()),
        }
    }
}

impl Feature {
    pub const ALL: [Feature; 6] = [
        Feature::Avx2,
        Feature::Avx512,
        Feature::Avx512Bf16,
        Feature::Avx512Vnni,
        Feature::Neon,
        Feature::NeonDot,
    ];

    /// The name tests print when they skip it (`AVX512_VNNI`, as CPU vendors spell it).
    pub fn name(self) -> &'static str {
        match self {
            Feature::Avx2 => "AVX2",
            Feature::Avx512 => "AVX-512",
            Feature::Avx512Bf16 => "AVX512_BF16",
            Feature::Avx512Vnni => "AVX512_VNNI",
            Feature::Neon => "NEON",
            Feature::NeonDot => "NEON_DOTPROD",
        }
    }

    /// Whether this feature is a whole ISA (not an extension used inside one).
    pub fn is_isa(self) -> bool {
        matches!(self, Feature::Avx2 | Feature::Avx512 | Feature::Neon)
    }

    /// The ISA this feature is part of.
    pub fn isa(self) -> Isa {
        match self {
            Feature::Avx2 => Isa::Avx2,
            Feature::Avx512 | Feature::Avx512Bf16 | Feature::Avx512Vnni => Isa::Avx512,
            Feature::Neon | Feature::NeonDot => Isa::Neon,
        }
    }

    /// The CPU flag this feature needs beyond its ISA's.
    fn extra_flag(self) -> Option<&'static str> {
        match self {
            Feature::Avx512Bf16 => Some("avx512bf16"),
            Feature::Avx512Vnni => Some("avx512vnni"),
            Feature::NeonDot => Some("dotprod"),
            _ => None,
        }
    }

    /// What this CPU lacks for this feature (empty when present).
    pub fn missing(self) -> Vec<&'static str> {
        let mut missing = self.isa().missing();
        if let Some(flag) = self.extra_flag() {
            if arch_of(self.isa()) == Some(std::env::consts::ARCH) && !cpu_has(flag) {
                missing.push(flag);
            }
        }
        missing
    }

    pub fn is_present(self) -> bool {
        self.isa().is_supported() && self.extra_flag().is_none_or(cpu_has)
    }

    /// The features of this CPU's architecture, present or not (what a test run can exercise or must skip).
    pub fn of_this_arch() -> Vec<Feature> {
        Feature::ALL
            .into_iter()
            .filter(|f| arch_of(f.isa()) == Some(std::env::consts::ARCH))
            .collect()
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
