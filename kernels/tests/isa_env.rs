//! `QKV_ISA` naming an instruction set this CPU cannot run is a one-line error that names what is missing.
//! (Its own test binary: it sets `QKV_ISA` for the whole process.)

use kernels::{Feature, Isa, IsaError, Kernels};

#[test]
fn forced_isa_the_cpu_lacks_is_a_one_line_error_naming_the_missing_features() {
    // Every build has at least one ISA of another architecture (NEON on x86-64, AVX2/AVX-512 on AArch64).
    let lacking: Vec<Isa> = Isa::ALL.into_iter().filter(|i| !i.is_supported()).collect();
    assert!(!lacking.is_empty(), "no ISA of another architecture in {:?}", Isa::ALL);
    for isa in lacking {
        std::env::set_var("QKV_ISA", isa.name());
        let err = Kernels::detect().expect_err("an ISA this CPU lacks must be refused");
        let IsaError::EnvUnsupported { isa: got, ref missing } = err else {
            panic!("QKV_ISA={isa}: wrong error {err:?}");
        };
        assert_eq!(got, isa);
        assert!(!missing.is_empty(), "QKV_ISA={isa}: nothing named as missing");
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "not one line: {msg:?}");
        assert!(msg.starts_with(&format!("QKV_ISA={isa} ")), "{msg}");
        for m in missing {
            assert!(msg.contains(m), "{msg} does not name {m}");
        }
        assert_eq!(missing, &isa.missing());
        // The same ISA asked for in code names the same features.
        let direct = Kernels::new(isa).expect_err("refused").to_string();
        assert!(
            direct.contains(isa.name()) && missing.iter().all(|m| direct.contains(m)),
            "{direct}"
        );
        eprintln!("QKV_ISA={isa}: {msg}");
    }
    // An ISA this CPU has is accepted, and so are unknown names refused by name.
    std::env::set_var("QKV_ISA", Isa::best().name());
    assert_eq!(Kernels::detect().unwrap().isa(), Isa::best());
    std::env::set_var("QKV_ISA", "avx1024");
    assert!(Kernels::detect().unwrap_err().to_string().contains("\"avx1024\""));
    std::env::remove_var("QKV_ISA");
}

#[test]
fn features_of_this_arch_agree_with_the_isa_detection() {
    for f in Feature::of_this_arch() {
        assert_eq!(f.is_present(), f.missing().is_empty(), "{f}");
        if !f.isa().is_supported() {
            assert!(!f.is_present(), "{f} present without its ISA {}", f.isa());
        }
        kernels::testing::report(&format!(
            "cpu: {f} {}",
            if f.is_present() { "present" } else { "absent" }
        ));
    }
}
