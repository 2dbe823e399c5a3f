//! The fuzz targets' seeds as regression tests: every file under
//! `fuzz/seeds/<target>/` goes through the same check the target runs
//! (`fuzz_checks::<target>`), on stable, in CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

#[test]
fn every_seed_passes_its_check() {
    let mut total = 0;
    for target in fuzz_checks::TARGETS {
        let dir = seeds_dir().join(target);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .collect();
        entries.sort();
        assert!(
            !entries.is_empty(),
            "no seeds for {target} in {}",
            dir.display()
        );
        for path in entries {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| fuzz_checks::run(target, &data));
            assert!(outcome.is_ok(), "seed {} fails its check", path.display());
            total += 1;
        }
    }
    eprintln!("{total} seeds passed");
}

#[test]
fn every_target_has_a_seed_directory_and_a_fuzz_target() {
    for target in fuzz_checks::TARGETS {
        assert!(seeds_dir().join(target).is_dir(), "fuzz/seeds/{target}");
        assert!(
            seeds_dir()
                .join(format!("../fuzz_targets/{target}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{target}.rs"
        );
    }
}

/// Inputs the fuzzers found that still fail their check, kept in
/// `fuzz/crashes/<target>/` until the code is fixed (then they move to
/// `fuzz/seeds/<target>/`).
#[test]
fn known_crashes_pass_their_checks() {
    let crashes = seeds_dir().join("../crashes");
    for target in fuzz_checks::TARGETS {
        let Ok(entries) = std::fs::read_dir(crashes.join(target)) else {
            continue;
        };
        for path in entries.map(|entry| entry.unwrap().path()) {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| fuzz_checks::run(target, &data));
            assert!(outcome.is_ok(), "{} still fails its check", path.display());
        }
    }
}
