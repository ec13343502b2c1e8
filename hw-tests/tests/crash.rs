//! The crash cases as `hw-tests --simulate` runs them: a failpoints-built
//! `sriov-dra` killed at each failpoint a macvlan stand-in reaches and at
//! random moments, restarted, nothing stranded; reported `simulated`.
//!
//! Needs root (network namespaces) and the binary, named by
//! `SRIOV_DRA_FAILPOINTS_BIN` (`.ci/run` builds it with
//! `cargo build -p sriov-dra --features failpoints`). Without either it
//! says so loudly, and fails under `CI=true`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hw_tests::cases::Outcome;
use hw_tests::crash::{Site, cases};
use sriov::testing::have_root;
use sriov_dra::testing::rng::Rng;

/// The failpoints-built driver, or `None` (after saying so; a failure
/// under CI).
fn failpoints_binary(test: &str) -> Option<PathBuf> {
    match std::env::var_os("SRIOV_DRA_FAILPOINTS_BIN") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: SRIOV_DRA_FAILPOINTS_BIN is not set under CI=true; \
                 build it with `cargo build -p sriov-dra --features failpoints` (see .ci/run)"
            );
            eprintln!(
                "!!!!! {test} NOT RUN: set SRIOV_DRA_FAILPOINTS_BIN to a sriov-dra built with --features failpoints"
            );
            None
        }
    }
}

#[test]
fn the_simulated_crash_cases_leave_nothing_stranded_and_never_pass() {
    let name = "the_simulated_crash_cases_leave_nothing_stranded_and_never_pass";
    if !have_root(name) {
        return;
    }
    let Some(binary) = failpoints_binary(name) else {
        return;
    };
    let seed = Rng::clock_seed();
    let started = Instant::now();
    let entries = cases(Some(&binary), Site::Simulated, seed);
    eprintln!("seed {seed}, {:.1?}", started.elapsed());
    let names: Vec<&str> = entries.iter().map(|e| e.case.as_str()).collect();
    assert_eq!(names, ["crash/mid-prepare", "crash/mid-attach"]);
    for e in &entries {
        let Outcome::Simulated(reason) = &e.outcome else {
            panic!("{}: {:?}", e.case, e.outcome);
        };
        assert!(
            reason.starts_with("macvlan stand-in VF: ")
                && reason.contains("nothing stranded after any restart"),
            "{}: {reason}",
            e.case
        );
        assert!(!reason.contains("never reached"), "{}: {reason}", e.case);
        eprintln!("{}: {reason} ({:.1?})", e.case, e.elapsed);
    }
}

#[test]
fn a_binary_that_does_not_say_failpoints_is_skipped_with_the_reason() {
    let name = "a_binary_that_does_not_say_failpoints_is_skipped_with_the_reason";
    if !have_root(name) {
        return;
    }
    for e in cases(Some(Path::new("/bin/true")), Site::Simulated, 1) {
        assert!(
            matches!(&e.outcome, Outcome::Skipped(r) if r.contains("/bin/true names no features")),
            "{}: {:?}",
            e.case,
            e.outcome
        );
    }
    for e in cases(None, Site::Simulated, 1) {
        assert!(
            matches!(&e.outcome, Outcome::Skipped(r) if r.contains("--driver-binary")),
            "{}: {:?}",
            e.case,
            e.outcome
        );
    }
}
