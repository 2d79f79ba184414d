//! Model-based fuzzing of the syscall layer's IPC (see [`model`](super::model)): proptest
//! sequences, shrinking to a minimal failing sequence, and a deterministic long run over fixed
//! seeds. `OZONE_IPC_FUZZ_OPS=<n>` sets the long run's total number of operations (default
//! 100,000); `OZONE_IPC_FUZZ_SEED=<n>` adds that seed to the fixed ones.

extern crate std;

use std::format;
use std::vec::Vec;

use proptest::prelude::*;

use super::model::{Coverage, ENDPOINTS, FRAMES, Op, RECV_SLOTS, SYSCALLS, Sim, THREADS, length, run_seed};

fn sys_op() -> impl Strategy<Value = Op> {
    (
        any::<u8>(),
        0..SYSCALLS.len() as u8,
        any::<u8>(),
        prop_oneof![1 => Just(0u16), 3 => 0..256u16],
        any::<u8>().prop_map(length),
        any::<u64>(),
        prop_oneof![1 => Just(0u8), 1 => 1..4u8],
        any::<[u8; 3]>(),
        0..8u8,
    )
        .prop_map(|(t, call, cap, label, len, seed, ncaps, caps, recv)| Op::Sys {
            t,
            call,
            cap,
            label,
            len,
            seed,
            ncaps,
            caps,
            recv,
        })
}

/// Operations in the mix of [`super::model::random_op`].
fn op() -> impl Strategy<Value = Op> {
    let t = 0..THREADS as u8;
    prop_oneof![
        46 => sys_op(),
        10 => t.clone().prop_map(Op::Run),
        10 => (0..2 * THREADS as u8).prop_map(Op::Suspend),
        7 => t.clone().prop_map(Op::Resume),
        2 => (t.clone(), 0..FRAMES as u8, 0..4u8).prop_map(|(t, f, off)| Op::SetBuffer { t, frame: Some(f), off }),
        1 => t.clone().prop_map(|t| Op::SetBuffer { t, frame: None, off: 0 }),
        1 => (0..FRAMES as u8).prop_map(Op::RevokeFrame),
        1 => (0..FRAMES as u8).prop_map(Op::DeleteFrame),
        1 => (0..FRAMES as u8).prop_map(Op::RecreateFrame),
        1 => (0..ENDPOINTS as u8).prop_map(Op::DeleteEndpoint),
        2 => (0..ENDPOINTS as u8).prop_map(Op::RecreateEndpoint),
        2 => any::<u8>().prop_map(Op::CancelBadged),
        1 => t.clone().prop_map(Op::DeleteThread),
        2 => (t.clone(), 0..FRAMES as u8, 0..4u8).prop_map(|(t, frame, off)| Op::NewThread { t, frame, off }),
        5 => (0..3u8).prop_map(Op::Signal),
        1 => t.clone().prop_map(Op::Bind),
        1 => t.clone().prop_map(Op::Unbind),
        3 => (0..2 * RECV_SLOTS as u8).prop_map(Op::ClearRecv),
        2 => (t.clone(), any::<u8>()).prop_map(|(t, cap)| Op::SetFaultHandler { t, cap }),
        3 => t.prop_map(Op::Fault),
    ]
}

fn run(ops: &[Op]) -> Result<Coverage, TestCaseError> {
    let mut sim = Sim::new();
    for (i, op) in ops.iter().enumerate() {
        sim.step(op).map_err(|e| TestCaseError::fail(format!("step {i} ({op:?}): {e}")))?;
    }
    Ok(sim.m.cov.clone())
}

proptest! {
    // 64 sequences unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// Short sequences, kernel and model compared after every operation (shorter under Miri,
    /// which runs this to check the syscall layer's raw memory accesses, slowly).
    #[test]
    fn ipc_against_model(ops in prop::collection::vec(op(), 1..if cfg!(miri) { 12 } else { 50 })) {
        run(&ops)?;
    }
}

/// Total operations of the long run (both parts together).
fn total_ops() -> u64 {
    std::env::var("OZONE_IPC_FUZZ_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

/// Half of the long run: `seeds` (plus `OZONE_IPC_FUZZ_SEED`), worlds of 2000 operations.
fn long_run(seeds: &[u64]) -> Coverage {
    let mut seeds: Vec<u64> = seeds.to_vec();
    if let Some(s) = std::env::var("OZONE_IPC_FUZZ_SEED").ok().and_then(|v| v.parse().ok()) {
        seeds.push(s);
    }
    let per_seed = (total_ops() / 2).div_ceil(seeds.len() as u64);
    let start = std::time::Instant::now();
    let mut cov = Coverage::default();
    for &seed in &seeds {
        match run_seed(seed, per_seed, 2_000) {
            Ok(c) => cov.add(&c),
            Err(e) => panic!("{e}"),
        }
    }
    std::eprintln!("IPC model {seeds:#x?}: {} operations in {:?}\n{}", cov.total(), start.elapsed(), cov.report());
    let missing = cov.missing();
    assert!(missing.is_empty(), "never reached: {missing:?}");
    cov
}

#[test]
fn long_run_ipc_model_a() {
    long_run(&[0x1bc0_0001, 0x1bc0_0002]);
}

#[test]
fn long_run_ipc_model_b() {
    long_run(&[0x1bc0_0003, 0x1bc0_0004]);
}

/// How often the run reached the case named (a prefix of) `name`.
fn event(sim: &Sim, name: &str) -> u64 {
    let i = super::model::EVENT_NAMES.iter().position(|n| n.starts_with(name)).expect("a case name");
    sim.m.cov.events[i]
}

/// A syscall op: the `t`-th runnable thread makes `SYSCALLS[call]` on endpoint 0's capability with
/// every right (`cap` 0), one word.
fn sys(t: u8, call: u8) -> Op {
    Op::Sys { t, call, cap: 0, label: 7, len: 1, seed: 0x5eed, ncaps: 0, caps: [0; 3], recv: 7 }
}

/// The scenario the reply right's lifetime is about, step by step, the model and the kernel
/// compared after each: a caller suspended while it waits for the reply is rewound; resumed, it
/// Calls again; the server's late Reply reaches nobody.
#[test]
fn a_late_reply_reaches_nobody_and_the_caller_calls_again() {
    use super::model::St;
    let (recv, call, reply) = (3, 2, 5);
    let mut sim = Sim::new();
    let step = |sim: &mut Sim, op: Op| sim.step(&op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    // Thread 1 waits on the endpoint; thread 2 (now the second runnable one) calls it.
    step(&mut sim, sys(1, recv));
    step(&mut sim, sys(1, call));
    assert_eq!((sim.m.th[1].caller, sim.m.th[2].st), (Some(2), St::Reply { intr: false }));
    // Thread 2, the only blocked thread, is suspended and resumed: rewound, nobody may reply.
    step(&mut sim, Op::Suspend(0));
    assert!(sim.m.th[2].regs.rewound && sim.m.th[1].caller.is_none());
    step(&mut sim, Op::Resume(0));
    assert_eq!(sim.m.th[2].st, St::Restart);
    // The server's Reply reaches nobody.
    step(&mut sim, sys(1, reply));
    assert_eq!(event(&sim, "late reply"), 1);
    assert_eq!(sim.m.th[2].st, St::Restart);
    // Thread 2 runs: its Call is executed again and waits for a receiver.
    step(&mut sim, Op::Run(0));
    assert_eq!(event(&sim, "rewound syscall"), 1);
    assert!(matches!(sim.m.th[2].st, St::Send { e: 0, call: true, .. }));
    assert!(!sim.m.th[2].regs.rewound);
}

/// A receive completed by a signal on the bound notification is not executed again, even when
/// the thread is then suspended and resumed.
#[test]
fn a_receive_completed_by_a_bound_signal_is_not_run_again() {
    use super::model::St;
    let mut sim = Sim::new();
    let step = |sim: &mut Sim, op: Op| sim.step(&op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    // Thread 0 (the notification is bound to it) waits on the endpoint; a signal with badge 1.
    step(&mut sim, sys(0, 3));
    step(&mut sim, Op::Signal(1));
    assert_eq!((sim.m.th[0].st, sim.m.th[0].regs.rdi, sim.m.th[0].regs.rewound), (St::Running, 1, false));
    // Suspended while running (`THREADS + 0`: thread 0 itself), resumed, run: nothing repeated.
    step(&mut sim, Op::Suspend(super::model::THREADS as u8));
    step(&mut sim, Op::Resume(0));
    step(&mut sim, Op::Run(0));
    assert_eq!(sim.m.th[0].st, St::Running);
    assert_eq!((event(&sim, "receive completed by a bound signal:"), event(&sim, "rewound syscall")), (1, 0));
}

/// A sender's buffer revoked while it waits: its long message arrives cut to the register words,
/// and the revoked frame is never read or written again.
#[test]
fn a_buffer_revoked_mid_ipc_cuts_the_message() {
    let mut sim = Sim::new();
    let step = |sim: &mut Sim, op: Op| sim.step(&op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    // Thread 1 (buffer: frame 1) sends 20 words on the endpoint and waits.
    step(&mut sim, Op::Sys { t: 1, call: 0, cap: 0, label: 9, len: 20, seed: 1, ncaps: 0, caps: [0; 3], recv: 7 });
    step(&mut sim, Op::RevokeFrame(1));
    assert_eq!((sim.m.th[1].buffer, event(&sim, "buffer revoked")), (None, 1));
    // Thread 2 (the second runnable one) receives: four words.
    step(&mut sim, sys(1, 3));
    assert_eq!(ozone_abi::MessageInfo(sim.m.th[2].regs.rsi).length(), 4);
    assert_eq!(event(&sim, "long message cut"), 1);
}

/// A CallInterruptible interrupted while waiting for its reply (the server's late reply goes
/// nowhere), then an ordinary Call whose server is suspended (the caller gets `ReplyLost`), step
/// by step, the model and the kernel compared after each.
#[test]
fn an_interrupted_call_and_a_lost_reply() {
    use super::model::St;
    use ozone_abi::Error;
    let (recv, call, reply, call_interruptible) = (3, 2, 5, 7);
    let mut sim = Sim::new();
    let step = |sim: &mut Sim, op: Op| sim.step(&op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    // Thread 1 waits on the endpoint; thread 0 (the notification is bound to it) calls it.
    step(&mut sim, sys(1, recv));
    step(&mut sim, sys(0, call_interruptible));
    assert_eq!((sim.m.th[0].st, sim.m.th[1].caller), (St::Reply { intr: true }, Some(0)));
    // A signal with badge 1 ends the Call; the link is cut.
    step(&mut sim, Op::Signal(1));
    let r = sim.m.th[0].regs;
    assert_eq!((sim.m.th[0].st, r.rax, r.rdi), (St::Running, Error::Interrupted as u64, 1));
    assert_eq!(sim.m.th[1].caller, None);
    // The server's late reply goes nowhere.
    step(&mut sim, sys(1, reply));
    assert_eq!(event(&sim, "late reply after an interrupt"), 1);
    // Thread 2 waits, thread 0 Calls (ordinarily); thread 2 is suspended: ReplyLost.
    step(&mut sim, sys(2, recv));
    step(&mut sim, sys(0, call));
    assert_eq!(sim.m.th[2].caller, Some(0));
    step(&mut sim, Op::Suspend(THREADS as u8 + 2));
    assert_eq!((sim.m.th[0].st, sim.m.th[0].regs.rax), (St::Running, Error::ReplyLost as u64));
    assert_eq!(event(&sim, "caller woken with ReplyLost: the replier suspended"), 1);
}
