//! For tests that run a kernel path on every ISA the host has: which ISAs and features to exercise, and a
//! visible line for each one skipped because this CPU lacks it (a test never fails for what the CPU lacks).
//!
//! Lines go straight to the process's stderr, past the test harness's output capture, so `cargo test`
//! shows them: `ran: <test> on scalar, avx2, avx512` and `skipped: AVX512_VNNI not on this CPU (<test>; lacks
//! avx512vnni)`. `.ci/run` gathers them into the ISA matrix of the run. `QKV_TEST_ISAS=avx2` narrows the ISAs to
//! those named (`excluded: avx512 by QKV_TEST_ISAS` lines).

use std::collections::HashSet;
use std::io::Write;
use std::sync::Mutex;

use crate::isa::{Feature, Isa};
use crate::Kernels;

/// Write one line to stderr, uncaptured, the first time this process reports it (a test that loops over
/// shapes reports its ISAs once).
pub fn report(line: &str) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.get_or_insert_with(HashSet::new).insert(line.to_string()) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}

/// Report `feature` as skipped by `test`.
pub fn skip(test: &str, feature: Feature) {
    report(&format!(
        "skipped: {feature} not on this CPU ({test}; lacks {})",
        feature.missing().join(", ")
    ));
}

/// Whether `feature` is present (and its ISA not excluded by `QKV_TEST_ISAS`); if not, report it as skipped by
/// `test`.
pub fn require(test: &str, feature: Feature) -> bool {
    let present = feature.is_present();
    if !present {
        skip(test, feature);
    } else if !selected(feature.isa()) {
        excluded(test, feature.isa());
        return false;
    }
    present
}

/// `QKV_TEST_ISAS` (e.g. `avx2`): the only ISAs the per-ISA tests run, of those the CPU has. CI sets it to re-run
/// the engine's tests on one ISA natively (its AVX2 lane on an AVX-512 host) instead of under an emulator.
fn selected(isa: Isa) -> bool {
    match std::env::var("QKV_TEST_ISAS") {
        Ok(v) if !v.trim().is_empty() => v.split(',').any(|n| n.trim().eq_ignore_ascii_case(isa.name())),
        _ => true,
    }
}

fn excluded(test: &str, isa: Isa) {
    report(&format!("excluded: {} by QKV_TEST_ISAS ({test})", isa.name()));
}

/// Report that `test` ran on `isas`.
pub fn ran(test: &str, isas: &[Isa]) {
    let names: Vec<&str> = isas.iter().map(|i| i.name()).collect();
    report(&format!("ran: {test} on {}", names.join(", ")));
}

/// The ISAs of this CPU (scalar first), with a `skipped:` line for each ISA of this architecture it lacks.
pub fn isas(test: &str) -> Vec<Isa> {
    for f in Feature::of_this_arch() {
        if f.is_isa() && !f.is_present() {
            skip(test, f);
        }
    }
    let (run, out): (Vec<Isa>, Vec<Isa>) = Isa::available().into_iter().partition(|&i| selected(i));
    for isa in out {
        excluded(test, isa);
    }
    run
}

/// The kernels of every ISA from [`isas`], reported as run by `test` (for tests that loop over them and check
/// [`crate::isa::exercised`] themselves).
pub fn kernels(test: &str) -> Vec<Kernels> {
    let isas = isas(test);
    ran(test, &isas);
    isas.into_iter()
        .map(|i| Kernels::new(i).expect("an available ISA"))
        .collect()
}

/// Run `f` with the kernels of every ISA from [`isas`]; when `must_dispatch`, check each call reached its ISA
/// ([`crate::isa::exercised`]); report the ISAs it ran on.
pub fn each_isa(test: &str, must_dispatch: bool, mut f: impl FnMut(Kernels)) {
    let isas = isas(test);
    for &isa in &isas {
        let k = Kernels::new(isa).expect("an available ISA");
        let before = crate::isa::exercised(isa);
        f(k);
        if must_dispatch {
            assert!(
                crate::isa::exercised(isa) > before,
                "{test}: the {isa} path was not exercised"
            );
        }
    }
    ran(test, &isas);
}
