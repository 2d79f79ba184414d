//! Capability-level fuzzing against the reference model (see [`harness`](super::harness)):
//! proptest sequences (shrinking to a minimal failing sequence) and a deterministic long run over
//! fixed seeds. `OZONE_FUZZ_OPS=<n>` sets the long run's total number of operations (default one
//! million); `OZONE_FUZZ_SEED=<n>` adds that seed to the fixed ones.

use super::delete::coverage;
use super::harness::{Harness, Mode, RawOp, Stats, run_seed};
use proptest::prelude::*;

fn raw_op() -> impl Strategy<Value = RawOp> {
    (any::<u8>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(kind, a, b, c)| RawOp { kind, a, b, c })
}

fn run(mode: Mode, ops: &[RawOp]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(mode);
    h.zero_check_every = 8;
    for (i, &op) in ops.iter().enumerate() {
        h.step(op).map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?;
    }
    h.compare_or_check().and_then(|()| h.teardown()).map_err(|e| TestCaseError::fail(format!("at the end: {e}")))
}

proptest! {
    // 256 sequences each unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// Short sequences, implementation and model compared after every operation.
    #[test]
    fn fuzz_against_model(ops in prop::collection::vec(raw_op(), 1..120)) {
        run(Mode::Model, &ops)?;
    }

    /// Short sequences with preempted operations abandoned half-way; invariants after every
    /// operation, full reclamation at the end.
    #[test]
    fn fuzz_interleaved_preemption(ops in prop::collection::vec(raw_op(), 1..120)) {
        run(Mode::Interleaved, &ops)?;
    }
}

/// Total operations of the long run (all four parts together).
fn total_ops() -> u64 {
    std::env::var("OZONE_FUZZ_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// One quarter of the long run: `seeds` fixed seeds (plus `OZONE_FUZZ_SEED`), worlds of 5000
/// operations, full comparison after every operation.
fn long_run(mode: Mode, seeds: &[u64]) -> Stats {
    let mut seeds = seeds.to_vec();
    if let Some(s) = std::env::var("OZONE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()) {
        seeds.push(s);
    }
    let per_seed = (total_ops() / 4).div_ceil(seeds.len() as u64);
    let start = std::time::Instant::now();
    let mut total = Stats::default();
    for &seed in &seeds {
        let s = run_seed(seed, per_seed, 5_000, mode, 1);
        total.ops += s.ops;
        total.ok += s.ok;
        total.errors += s.errors;
        total.preemptions += s.preemptions;
        total.skipped += s.skipped;
        total.max_zombies = total.max_zombies.max(s.max_zombies);
    }
    std::eprintln!("{mode:?} {seeds:?}: {total:?} in {:?}", start.elapsed());
    total
}

#[test]
fn long_run_model_a() {
    let s = long_run(Mode::Model, &[0x0202_0001, 0x0202_0002]);
    assert!(s.ok * 4 > s.ops, "too few operations succeed: {s:?}");
    assert!(s.preemptions > 0);
}

#[test]
fn long_run_model_b() {
    long_run(Mode::Model, &[0x0202_0003, 0x0202_0004]);
}

#[test]
fn long_run_interleaved_a() {
    let s = long_run(Mode::Interleaved, &[0x0202_0005, 0x0202_0006]);
    assert!(s.max_zombies > 0, "no operation was ever left half-done: {s:?}");
}

#[test]
fn long_run_interleaved_b() {
    long_run(Mode::Interleaved, &[0x0202_0007, 0x0202_0008]);
}

/// The rare deletion paths are reached by random operations, not only by the unit tests.
#[test]
fn fuzzing_reaches_cycles_and_zombies() {
    let before = coverage::snapshot();
    for seed in 0..4 {
        run_seed(0x0303_0000 + seed, 20_000, 5_000, Mode::Interleaved, 16);
        run_seed(0x0404_0000 + seed, 20_000, 5_000, Mode::Model, 16);
    }
    let after = coverage::snapshot();
    std::eprintln!("coverage (zombies, pins, cycles broken, self skips): before {before:?}, after {after:?}");
    assert!(after.0 - before.0 >= 100, "too few zombies");
    assert!(after.1 - before.1 >= 10, "too few pinned slots");
    assert!(after.2 - before.2 >= 10, "too few cycles broken");
    assert!(after.3 - before.3 >= 10, "too few self-contained zombies");
}

/// `OZONE_FUZZ_HISTOGRAM=1 cargo test -p ozone-kernel --lib fuzz_histogram -- --ignored
/// --nocapture` prints how often each operation gives each result (for tuning the generator).
#[test]
#[ignore]
fn fuzz_histogram() {
    use super::harness::Rng;
    for mode in [Mode::Model, Mode::Interleaved] {
        let mut h = Harness::new(mode);
        h.histogram = Some(Default::default());
        let mut rng = Rng::new(1);
        for _ in 0..20_000 {
            h.step(rng.raw_op()).expect("step");
        }
        std::eprintln!("{mode:?}: {:?}", h.stats);
        for (k, v) in h.histogram.iter().flatten() {
            std::eprintln!("  {k:?}: {v}");
        }
    }
}

/// Short runs in a small world (64 KiB): cheap enough to run under Miri, which checks the raw
/// memory accesses of the capability core for undefined behaviour:
/// `MIRIFLAGS=-Zmiri-permissive-provenance cargo +nightly miri test -p ozone-kernel --lib small_world`.
#[test]
fn small_world_runs() {
    use super::harness::Rng;
    for (seed, mode) in [(0x0505_0001, Mode::Model), (0x0505_0002, Mode::Interleaved), (0x0505_0003, Mode::Model)] {
        let mut h = Harness::with_arena(mode, 16);
        // Full comparisons are the slow part under Miri; results are still compared every time.
        h.check_every = 20;
        h.zero_check_every = 100;
        let mut rng = Rng::new(seed);
        for i in 0..300 {
            h.step(rng.raw_op()).unwrap_or_else(|e| panic!("seed {seed:#x}, step {i}: {e}"));
        }
        h.compare_or_check().and_then(|()| h.teardown()).unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
    }
}
