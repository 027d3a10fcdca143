//! Cache sizes of this CPU, detected once: Linux sysfs first, then `cpuid` on x86-64, then fallbacks.
//! The GEMM derives its blocking from them ([`crate::linear`]).

use std::sync::OnceLock;

/// Data cache sizes in bytes, per core (the last level: this core's share of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    pub l1d: usize,
    pub l2: usize,
    /// The last-level cache divided by the number of cores sharing it.
    pub l3_per_core: usize,
    /// Where the figures came from: `"sysfs"`, `"cpuid"` or `"fallback"`.
    pub source: &'static str,
}

/// Used where nothing can be detected: a small modern core (32 KiB L1d, 512 KiB L2, 2 MiB of L3 per core).
pub const FALLBACK: CacheSizes = CacheSizes {
    l1d: 32 << 10,
    l2: 512 << 10,
    l3_per_core: 2 << 20,
    source: "fallback",
};

impl CacheSizes {
    /// This CPU's caches (detected on first use).
    pub fn get() -> CacheSizes {
        static SIZES: OnceLock<CacheSizes> = OnceLock::new();
        *SIZES.get_or_init(|| {
            let found = from_sysfs().or_else(from_cpuid).unwrap_or(FALLBACK);
            found.sane()
        })
    }

    /// Each level clamped to a plausible range (a VM can report zeros or nonsense), the fallback where missing.
    fn sane(self) -> CacheSizes {
        let clamp = |v: usize, lo: usize, hi: usize, fb: usize| if v == 0 { fb } else { v.clamp(lo, hi) };
        CacheSizes {
            l1d: clamp(self.l1d, 16 << 10, 256 << 10, FALLBACK.l1d),
            l2: clamp(self.l2, 128 << 10, 32 << 20, FALLBACK.l2),
            l3_per_core: clamp(self.l3_per_core, 256 << 10, 512 << 20, FALLBACK.l3_per_core),
            source: self.source,
        }
    }
}

/// `"32K"`, `"1024K"`, `"32M"` as sysfs writes them.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok().map(|n| n * mult)
}

/// Number of CPUs in a sysfs list such as `"0-3,8"`.
fn count_cpus(list: &str) -> usize {
    list.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum::<usize>()
        .max(1)
}

fn from_sysfs() -> Option<CacheSizes> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let mut sizes = CacheSizes {
        l1d: 0,
        l2: 0,
        l3_per_core: 0,
        source: "sysfs",
    };
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else {
            continue;
        };
        if kind.trim() == "Instruction" {
            continue;
        }
        let Some(size) = parse_size(&size) else {
            continue;
        };
        match level.trim() {
            "1" => sizes.l1d = size,
            "2" => sizes.l2 = size,
            "3" => {
                let sharing = read("shared_cpu_list").map_or(1, |l| count_cpus(&l));
                sizes.l3_per_core = size / sharing;
            }
            _ => {}
        }
    }
    (sizes.l1d > 0 && sizes.l2 > 0).then_some(sizes)
}

/// Deterministic cache parameters (Intel leaf 4, AMD leaf 0x8000_001D): size = ways × partitions × line × sets.
#[cfg(target_arch = "x86_64")]
fn from_cpuid() -> Option<CacheSizes> {
    use std::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};
    if cfg!(miri) {
        return None; // Miri cannot run `cpuid`
    }
    // `cpuid` exists on every x86-64 CPU.
    let max_basic = __cpuid(0).eax;
    let max_ext = __cpuid(0x8000_0000).eax;
    let leaf = if max_ext >= 0x8000_001D && __cpuid_count(0x8000_001D, 0).eax & 0x1f != 0 {
        0x8000_001D
    } else if max_basic >= 4 {
        4
    } else {
        return None;
    };
    let mut sizes = CacheSizes {
        l1d: 0,
        l2: 0,
        l3_per_core: 0,
        source: "cpuid",
    };
    for sub in 0..16 {
        let CpuidResult { eax, ebx, ecx, .. } = __cpuid_count(leaf, sub);
        let kind = eax & 0x1f; // 0 none, 1 data, 2 instruction, 3 unified
        if kind == 0 {
            break;
        }
        if kind == 2 {
            continue;
        }
        let level = (eax >> 5) & 0x7;
        let sharing = (((eax >> 14) & 0xfff) + 1) as usize;
        let ways = ((ebx >> 22) & 0x3ff) as usize + 1;
        let parts = ((ebx >> 12) & 0x3ff) as usize + 1;
        let line = (ebx & 0xfff) as usize + 1;
        let sets = ecx as usize + 1;
        let size = ways * parts * line * sets;
        match level {
            1 => sizes.l1d = size,
            2 => sizes.l2 = size,
            // `sharing` counts logical processors; with SMT two share a core, which only makes this a lower bound.
            3 => sizes.l3_per_core = size / sharing.max(1),
            _ => {}
        }
    }
    (sizes.l1d > 0 && sizes.l2 > 0).then_some(sizes)
}

#[cfg(not(target_arch = "x86_64"))]
fn from_cpuid() -> Option<CacheSizes> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_values() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("1024K"), Some(1 << 20));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
        assert_eq!(count_cpus("0-3,8\n"), 5);
        assert_eq!(count_cpus("0"), 1);
        assert_eq!(count_cpus(""), 1);
    }

    #[test]
    fn detected_sizes_are_sane() {
        let c = CacheSizes::get();
        assert!(
            c.l1d >= 16 << 10 && c.l2 >= c.l1d && c.l3_per_core >= 256 << 10,
            "{c:?}"
        );
        let z = CacheSizes {
            l1d: 0,
            l2: 1,
            l3_per_core: usize::MAX,
            source: "test",
        }
        .sane();
        assert_eq!((z.l1d, z.l2, z.l3_per_core), (FALLBACK.l1d, 128 << 10, 512 << 20));
    }
}
