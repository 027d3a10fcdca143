//! Nothing is allocated on the decode path: once a session has run its first steps (which size its scratch, the
//! kernels' thread-local GEMM and attention buffers, rayon's threads), a decode step of every family — decoder-only
//! (Llama GQA, GPT-2, a rotary family with fused q/k/v and gate/up, Gemma's sandwich norms) and encoder-decoder
//! (Marian: self- and cross-attention) — at batch 1 and 4, on every ISA of the host, makes no heap allocation on any
//! thread. Counted by a global allocator that counts every `alloc`/`realloc` of the process while the steps run
//! (this test binary runs its one test alone, so nothing else allocates meanwhile). The steps are called from a
//! thread of rayon's pool: called from outside it, a step enters the pool through rayon's injector queue, which
//! allocates one block of job slots per 63 calls (crossbeam's `Injector`) — rayon's, not the step's.

mod decoder_support;
#[path = "hash_weights/mod.rs"]
mod hash_weights;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use qkv::{LoadOptions, LogitsFor, Model, Session};

/// A family fixture's model directory, its weights rebuilt (as `tests/families.rs` does) under the target dir.
fn family_dir(name: &str) -> PathBuf {
    let fixture = loaders::paths::fixture("families").join(name);
    let meta = decoder_support::json(&fixture.join("reference.json"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("alloc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    hash_weights::write_model_dir(&dir, &fixture, hash_weights::hash_init_tensors(&meta));
    dir
}

/// Counts allocations made on the test pool's threads while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the threads of the test's pool (const-initialized, no destructor: reading it never allocates).
    static POOL_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Count one allocation if counting is on and this is a thread of the test's pool.
fn count() {
    if COUNTING.load(Ordering::Relaxed) && POOL_THREAD.with(|p| p.get()) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Warm-up steps before counting (the first steps size every buffer).
const WARM_STEPS: usize = 3;
/// Steps counted.
const COUNTED_STEPS: usize = 4;

/// Allocations made by `COUNTED_STEPS` decode steps of `s` (after `WARM_STEPS` of warm-up), batch `batch`.
fn decode_allocs(s: &mut Session<'_>, vocab: usize, batch: usize) -> usize {
    let mut logits = vec![0.0f32; batch * vocab];
    let tokens: Vec<u32> = (0..batch as u32).map(|b| 1 + b % 3).collect();
    for _ in 0..WARM_STEPS {
        s.step(&tokens, 1, LogitsFor::Last, &mut logits).unwrap();
    }
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..COUNTED_STEPS {
        s.step(&tokens, 1, LogitsFor::Last, &mut logits).unwrap();
    }
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

#[test]
fn decode_steps_allocate_nothing() {
    let pool = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| POOL_THREAD.with(|p| p.set(true)))
        .build()
        .unwrap();
    pool.install(|| {
        counter_sees_pool_allocations();
        check_every_family()
    });
}

/// The counter is live on the pool's threads (so a zero below is a measurement, not a blind counter).
fn counter_sees_pool_allocations() {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let v = std::hint::black_box(vec![1u8; 100]);
    COUNTING.store(false, Ordering::SeqCst);
    drop(v);
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        1,
        "the counting allocator missed an allocation on a pool thread"
    );
}

fn check_every_family() {
    let fixtures = loaders::paths::fixture("");
    let decoders = [
        fixtures.join("llama-tiny-gqa"),
        fixtures.join("gpt2-tiny"),
        family_dir("phi3"),
        family_dir("gemma2"),
    ];
    for k in kernels::testing::kernels("decode_steps_allocate_nothing") {
        let opts = LoadOptions {
            kernels: Some(k),
            ..Default::default()
        };
        for dir in &decoders {
            let name = dir.file_name().unwrap().to_string_lossy();
            let model = Model::load_with(dir, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
            let vocab = model.info().vocab_size;
            for batch in [1, 4] {
                let mut s = model.session(batch, 32).unwrap();
                let prompt: Vec<u32> = (0..batch * 5).map(|i| 1 + (i % 7) as u32).collect();
                let mut last = vec![0.0f32; batch * vocab];
                s.step(&prompt, 5, LogitsFor::Last, &mut last).unwrap();
                let n = decode_allocs(&mut s, vocab, batch);
                assert_eq!(
                    n,
                    0,
                    "{name} on {}, batch {batch}: {n} allocations in {COUNTED_STEPS} steps",
                    k.isa()
                );
            }
        }
        let marian = Model::load_with(fixtures.join("marian-tiny"), &opts).unwrap();
        let vocab = marian.info().vocab_size;
        let start = marian.info().decoder_start_token_id.unwrap();
        for batch in [1, 4] {
            let sources: Vec<Vec<u32>> = (0..batch).map(|b| vec![3 + b as u32, 4, 5, 0]).collect();
            let refs: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
            let mut s = marian.encode(&refs, batch, 16).unwrap();
            let mut logits = vec![0.0f32; batch * vocab];
            s.step(&vec![start; batch], 1, LogitsFor::Last, &mut logits).unwrap();
            let n = decode_allocs(&mut s, vocab, batch);
            assert_eq!(
                n,
                0,
                "marian-tiny on {}, batch {batch}: {n} allocations in {COUNTED_STEPS} steps",
                k.isa()
            );
        }
    }
    for dir in &decoders[2..] {
        std::fs::remove_dir_all(dir).ok();
    }
}
