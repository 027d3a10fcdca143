//! Opening a large safetensors file is mmap-based: no weight is copied at open, the open takes
//! milliseconds, and resident memory grows only as pages are touched.
//!
//! One test in its own binary, so no other test's allocations disturb the process RSS it reads.

use std::io::Write;
use std::time::Instant;

use loaders::safetensors::SafeTensors;

/// 50 tensors of [1024, 1024] f32: 200 MiB of data.
const N_TENSORS: usize = 50;
const ROWS: usize = 1024;
const COLS: usize = 1024;
const TENSOR_BYTES: usize = ROWS * COLS * 4;
const FILE_MIB: usize = (N_TENSORS * TENSOR_BYTES) >> 20;
/// Opening parses a small JSON header and maps the file: far below a second even on a loaded machine.
const MAX_OPEN_SECONDS: f64 = 0.5;
/// RSS may grow by the header, the tensor table and allocator noise at open, never by the data.
const MAX_RSS_GROWTH_AT_OPEN_MIB: f64 = 16.0;
/// Reading one whole tensor must fault in (nearly) all of its pages.
const MIN_TOUCHED_FRACTION: f64 = 0.9;

/// Resident set size of this process in MiB, from /proc/self/statm (field 2, in pages).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let resident_pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm field 2");
    resident_pages * page_size() as f64 / (1024.0 * 1024.0)
}

/// The page size, from the kernel's per-mapping view of this process (KernelPageSize in /proc/self/smaps).
fn page_size() -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    smaps
        .lines()
        .find_map(|l| l.strip_prefix("KernelPageSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .expect("KernelPageSize in smaps")
}

/// The value written at element `i` of tensor `t`: exact in f32.
fn value(t: usize, i: usize) -> f32 {
    (t * 1000 + i % 997) as f32
}

#[test]
fn large_file_opens_by_mmap_without_copying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.safetensors");

    // Write the file in 4 MiB chunks so this process never holds the data itself.
    {
        let entries: Vec<String> = (0..N_TENSORS)
            .map(|t| {
                format!(
                    r#""layer.{t:02}.weight":{{"dtype":"F32","shape":[{ROWS},{COLS}],"data_offsets":[{},{}]}}"#,
                    t * TENSOR_BYTES,
                    (t + 1) * TENSOR_BYTES
                )
            })
            .collect();
        let mut header = format!("{{{}}}", entries.join(","));
        while !header.len().is_multiple_of(8) {
            header.push(' ');
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        let mut chunk = vec![0u8; TENSOR_BYTES];
        for t in 0..N_TENSORS {
            for (i, b) in chunk.chunks_exact_mut(4).enumerate() {
                b.copy_from_slice(&value(t, i).to_le_bytes());
            }
            f.write_all(&chunk).unwrap();
        }
        f.flush().unwrap();
    }
    let file_mib = std::fs::metadata(&path).unwrap().len() as f64 / (1024.0 * 1024.0);
    assert!(file_mib >= FILE_MIB as f64);

    // Open and take every tensor: no data is read.
    let rss_before = rss_mib();
    let start = Instant::now();
    let st = SafeTensors::open(&path).expect("open");
    let open_seconds = start.elapsed().as_secs_f64();
    let tensors: Vec<_> = st.names().iter().map(|n| st.get(n).expect("get")).collect();
    let rss_open = rss_mib();
    println!(
        "opened {file_mib:.0} MiB ({} tensors) in {:.3} ms; RSS {rss_before:.1} -> {rss_open:.1} MiB",
        tensors.len(),
        open_seconds * 1e3
    );
    assert_eq!(tensors.len(), N_TENSORS);
    assert!(tensors.iter().all(|t| t.is_mapped()), "every tensor must view the map");
    assert!(open_seconds < MAX_OPEN_SECONDS, "open took {open_seconds:.3} s");
    assert!(
        rss_open - rss_before < MAX_RSS_GROWTH_AT_OPEN_MIB,
        "RSS grew by {:.1} MiB at open of a {file_mib:.0} MiB file",
        rss_open - rss_before
    );

    // Touch one tensor: RSS grows by about its size, and it holds what was written.
    let t = 17;
    let data = tensors[t].as_f32().expect("f32");
    let mismatches = data.iter().enumerate().filter(|&(i, &v)| v != value(t, i)).count();
    let rss_touched = rss_mib();
    let tensor_mib = TENSOR_BYTES as f64 / (1024.0 * 1024.0);
    println!("touched 1 tensor ({tensor_mib:.0} MiB): RSS {rss_open:.1} -> {rss_touched:.1} MiB");
    assert_eq!(mismatches, 0);
    assert!(
        rss_touched - rss_open >= MIN_TOUCHED_FRACTION * tensor_mib,
        "reading a {tensor_mib:.0} MiB tensor should fault its pages in: RSS grew by {:.1} MiB",
        rss_touched - rss_open
    );
    assert!(rss_touched - rss_before < MAX_RSS_GROWTH_AT_OPEN_MIB + 2.0 * tensor_mib);
}
