//! In-guest benchmarks, booted as the root task by `cargo xtask bench` under `-icount`, where the
//! TSC counts guest instructions. Each benchmark prints one line
//! `bench: name=<id> median=<n> p90=<n> samples=<n>`, which the xtask turns into a `BENCH` line.
//!
//! Method (as sel4bench): read the TSC right before and right after the operation — for one-way
//! IPC, before the syscall in the sender and after the syscall returns in the receiver — subtract
//! the cost of an empty pair of TSC reads (measured the same way), take the median and 90th
//! percentile over many samples after a warm-up. Client and server threads share one address
//! space, except for `ipc_roundtrip_interas`, whose server has an address space of its own.
//!
//! **Raw on purpose.** Its IPC loops measure the kernel's ABI, so they use raw syscalls on raw slot
//! numbers (`ozone_agent_sdk::sys`, `kernel`), not the typed handles of `caps`: the measurement is
//! of the syscall itself, with nothing of the SDK's in between (`sdk_roundtrip` measures the SDK's
//! client apart).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use core::cell::UnsafeCell;

use ozone_abi::bootinfo::{BootInfo, slot};
use ozone_abi::object::ObjectType;
use ozone_abi::{MessageInfo, Syscall, rights};
use ozone_agent_sdk::kernel as k;
use ozone_agent_sdk::protocol::{Method, ServiceError};
use ozone_agent_sdk::root::{self, Root, Stacks};
use ozone_agent_sdk::sys::{self, Msg};

use ozone_agent_sdk::{entry, println};

entry!(run);

const WARMUP: usize = 16;
const SAMPLES: usize = 1000;

static ROOT: Root = Root::new();
static STACKS: Stacks<4, { 16 * 1024 }> = Stacks::new();

/// Samples written by one thread and read by another (never at the same time: the IPC between
/// them orders the accesses).
struct Shared(UnsafeCell<[u64; SAMPLES]>);
// SAFETY: see above.
unsafe impl Sync for Shared {}
static SERVER_SAMPLES: Shared = Shared(UnsafeCell::new([0; SAMPLES]));

#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC is allowed in ring 3 (CR4.TSD is clear) and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The IPC syscalls as bare instructions (no result decoding), as a benchmark wants them:
/// `rdi` = capability, `rsi` = message info, `r10` = MR0; returns (rsi, r10).
#[inline(always)]
fn raw_ipc(number: Syscall, cap: u64, info: u64, mr0: u64) -> (u64, u64) {
    let (rsi, r10): (u64, u64);
    // SAFETY: a syscall that only uses and changes the registers named here.
    unsafe {
        core::arch::asm!(
            "syscall",
            in("rdx") number as i64,
            inout("rdi") cap => _,
            inout("rsi") info => rsi,
            inout("r10") mr0 => r10,
            out("r8") _, out("r9") _, out("r15") _,
            lateout("rax") _, out("rcx") _, out("r11") _,
            options(nostack),
        );
    }
    (rsi, r10)
}

fn percentile(sorted: &[u64], pct: usize) -> u64 {
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn report(name: &str, samples: &mut [u64], overhead: u64) {
    samples.sort_unstable();
    println!(
        "bench: name={name} median={} p90={} samples={}",
        percentile(samples, 50).saturating_sub(overhead),
        percentile(samples, 90).saturating_sub(overhead),
        samples.len()
    );
}

/// Time `op` SAMPLES times after a warm-up.
fn measure(samples: &mut [u64; SAMPLES], mut op: impl FnMut()) {
    for _ in 0..WARMUP {
        op();
    }
    for s in samples.iter_mut() {
        let start = rdtsc();
        op();
        *s = rdtsc() - start;
    }
}

/// The server of the IPC benchmarks: records, for every Call it receives, the TSC at its arrival
/// minus the client's TSC in MR0 (one-way Call), and replies with its own TSC taken just before
/// its ReplyRecv (for the client to compute the one-way ReplyRecv).
extern "C" fn server(ep: u64) -> ! {
    let (mut info, mut sent) = raw_ipc(Syscall::Recv, ep, 0, 0);
    let mut i = 0usize;
    loop {
        let arrived = rdtsc();
        let msg = MessageInfo(info);
        if msg.label() == 1 {
            // SAFETY: the client reads the samples only after the run (ordered by the IPC).
            unsafe { (*SERVER_SAMPLES.0.get())[i % SAMPLES] = arrived.wrapping_sub(sent) };
            i += 1;
        }
        let reply = MessageInfo::new(0, 0, 0, msg.length().min(4)).0;
        let start = rdtsc();
        (info, sent) = raw_ipc(Syscall::ReplyRecv, ep, reply, start);
    }
}

/// The samples of `ipc_roundtrip_traced` (see `run`); fails if a record was dropped.
fn traced_roundtrip(
    samples: &mut [u64; SAMPLES],
    ep: u64,
    server_tcb: u64,
    info: u64,
) -> Result<(), ozone_agent_sdk::Error> {
    let rings = [ROOT.retype(ObjectType::Frame4K, 0)?, ROOT.retype(ObjectType::Frame4K, 0)?];
    let threads = [slot::TCB, server_tcb];
    for (t, f) in threads.iter().zip(rings) {
        k::telemetry_trace(slot::TELEMETRY, *t, f)?;
    }
    let mut read = [0u64; 2];
    let ack = |read: &mut [u64; 2]| -> Result<(), ozone_agent_sdk::Error> {
        for (t, r) in threads.iter().zip(read.iter_mut()) {
            *r = k::telemetry_trace_ack(slot::TELEMETRY, *t, *r)?.0;
        }
        Ok(())
    };
    for i in 0..WARMUP + SAMPLES {
        if i % 64 == 0 {
            ack(&mut read)?;
        }
        let start = rdtsc();
        let _ = raw_ipc(Syscall::Call, ep, info, start);
        let end = rdtsc();
        if i >= WARMUP {
            samples[i - WARMUP] = end - start;
        }
    }
    let mut dropped = 0;
    for t in threads {
        dropped += k::telemetry_trace_off(slot::TELEMETRY, t)?.1;
    }
    if dropped != 0 {
        println!("bench: ipc_roundtrip_traced: {dropped} records dropped");
        return Err(ozone_agent_sdk::Error::RangeError);
    }
    Ok(())
}

extern "C" fn waiter(ntfn: u64) -> ! {
    loop {
        let _ = sys::recv(ntfn);
        let arrived = rdtsc();
        // SAFETY: as for the server; the signaller stored its TSC in slot 0 before signalling.
        unsafe {
            let s = &mut *SERVER_SAMPLES.0.get();
            let i = s[0] as usize;
            s[1 + i % (SAMPLES - 1)] = arrived.wrapping_sub(SIGNAL_TSC.load(core::sync::atomic::Ordering::SeqCst));
            s[0] += 1;
        }
    }
}

static SIGNAL_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn run() -> u64 {
    let Some(info) = root::boot_info() else { return 1 };
    if ROOT.init(info).is_err() {
        return 1;
    }
    let mut samples = [0u64; SAMPLES];

    // The cost of the measurement itself: an empty pair of TSC reads.
    measure(&mut samples, || {});
    samples.sort_unstable();
    let overhead = percentile(&samples, 50);
    println!("bench: timestamp pair costs {overhead} ticks (subtracted below)");

    // The cheapest round trip through the kernel: Yield with no other thread to run.
    measure(&mut samples, || {
        let _ = raw_ipc(Syscall::Yield, 0, 0, 0);
    });
    report("null_syscall", &mut samples, overhead);

    // IPC between two threads of one address space, both at the highest priority.
    let Ok(ep) = ROOT.retype(ObjectType::Endpoint, 0) else { return 1 };
    let Ok(server_tcb) = ROOT.spawn(server, ep, 255, 0, STACKS.next_top()) else {
        return 1;
    };
    let mut replyrecv = [0u64; SAMPLES];
    let call_once = |len: u64| -> u64 {
        let start = rdtsc();
        let _ = raw_ipc(Syscall::Call, ep, MessageInfo::new(1, 0, 0, len).0, start);
        rdtsc() - start
    };
    for _ in 0..WARMUP {
        call_once(1);
    }
    let one_word = MessageInfo::new(1, 0, 0, 1).0;
    for (rt, rr) in samples.iter_mut().zip(replyrecv.iter_mut()) {
        let start = rdtsc();
        let (_, server_start) = raw_ipc(Syscall::Call, ep, one_word, start);
        let end = rdtsc();
        *rt = end - start;
        *rr = end.wrapping_sub(server_start);
    }
    report("ipc_roundtrip", &mut samples, overhead);
    report("ipc_replyrecv", &mut replyrecv, overhead);
    // SAFETY: the server wrote these during the Calls above; it is blocked in ReplyRecv now.
    let mut one_way = unsafe { *SERVER_SAMPLES.0.get() };
    report("ipc_call", &mut one_way, overhead);

    // Longer messages go through the IPC buffers.
    measure(&mut samples, || {
        call_once(10);
    });
    report("ipc_call_10words", &mut samples, overhead);
    measure(&mut samples, || {
        call_once(5);
    });
    report("ipc_roundtrip_slowpath", &mut samples, overhead);

    // `ipc_roundtrip` with both threads traced: every Call and ReplyRecv writes a record into its
    // thread's ring. The rings are acknowledged between samples (as a reader would, one call per
    // batch), outside the timed Calls, so that no record is dropped.
    if let Err(e) = traced_roundtrip(&mut samples, ep, server_tcb, one_word) {
        println!("bench: ipc_roundtrip_traced failed: {e:?}");
        return 1;
    }
    report("ipc_roundtrip_traced", &mut samples, overhead);

    // Signal a notification a higher-priority thread waits on: signal to wake-up.
    let Ok(ntfn) = ROOT.retype(ObjectType::Notification, 0) else { return 1 };
    if k::tcb_set_priority(slot::TCB, slot::TCB, 100).is_err()
        || ROOT.spawn(waiter, ntfn, 200, 0, STACKS.next_top()).is_err()
    {
        return 1;
    }
    // SAFETY: the waiter only writes while we are preempted by it.
    unsafe { (*SERVER_SAMPLES.0.get())[0] = 0 };
    for _ in 0..SAMPLES {
        SIGNAL_TSC.store(rdtsc(), core::sync::atomic::Ordering::SeqCst);
        let _ = sys::send(ntfn, Msg::default());
    }
    let _ = k::tcb_set_priority(slot::TCB, slot::TCB, 255);
    // SAFETY: the waiter is blocked again.
    let mut sig = unsafe { *SERVER_SAMPLES.0.get() };
    report("notify_signal_wait", &mut sig[1..], overhead);

    // Retype one 4 KiB frame; map it (page tables already there), unmap it.
    let mut map = [0u64; 200];
    let mut retype_t = [0u64; 200];
    for (m, r) in map.iter_mut().zip(retype_t.iter_mut()) {
        let Ok(s) = ROOT.slot() else { return 1 };
        let t0 = rdtsc();
        let ok = k::untyped_retype(ROOT.untyped(), ObjectType::Frame4K, 0, slot::CNODE, 0, 0, s, 1).is_ok();
        let t1 = rdtsc();
        *r = t1 - t0;
        let va = 0x3f_f000;
        let t2 = rdtsc();
        let mapped = k::frame_map(s, slot::VSPACE, va, rights::READ | rights::WRITE, false).is_ok();
        let t3 = rdtsc();
        *m = t3 - t2;
        if !ok || !mapped || k::frame_unmap(s).is_err() {
            return 1;
        }
    }
    report("retype_4k", &mut retype_t, overhead);
    report("map_4k", &mut map, overhead);

    // Revoke an endpoint with 1000 derived copies (the same 1000 slots each time).
    let mut copies = [0u64; 1000];
    for c in copies.iter_mut() {
        let Ok(s) = ROOT.slot() else { return 1 };
        *c = s;
    }
    let mut revoke = [0u64; 5];
    for r in revoke.iter_mut() {
        let Ok(ep) = ROOT.retype(ObjectType::Endpoint, 0) else { return 1 };
        for &s in &copies {
            if k::cnode_copy(slot::CNODE, s, ep, rights::ALL).is_err() {
                return 1;
            }
        }
        let t0 = rdtsc();
        if k::cnode_revoke(slot::CNODE, ep).is_err() {
            return 1;
        }
        *r = rdtsc() - t0;
    }
    report("revoke_1000", &mut revoke, overhead);
    if shaper_bench(overhead).is_err() {
        return 1;
    }
    if let Err(e) = infer_bench(overhead) {
        println!("bench: studio_infer failed: {e:?}");
        return 1;
    }
    // Last, so that nothing it makes changes the figures above.
    if let Err((step, e)) = interas_bench(info, overhead) {
        println!("bench: ipc_roundtrip_interas failed: {step}: {e:?}");
        return 1;
    }
    0
}

/// Studio's behaviour model (`ozone_cognition::model`): `studio_infer` is one window's score,
/// the forward pass Studio runs on every window of every traced agent (embedding, pooling, the
/// hidden layer, the sigmoid) in fixed point (`model::Quantised`), built as Studio is (soft
/// float on this target, for the few floating-point steps left); `studio_infer_f32` the same
/// pass in `f32` (`Weights::score`, the trainer's arithmetic); `studio_judge` is
/// the whole per-window step of Studio's detector (`detect::Detector::push`: the window's hash,
/// the score, the frame, the adapted threshold). On seeded weights of the real dimensions and
/// windows of random tokens (the pass does the same work whatever the tokens).
fn infer_bench(overhead: u64) -> Result<(), ozone_abi::Error> {
    extern crate alloc;
    use ozone_cognition::detect::{Config, Detector};
    use ozone_cognition::model::{Quantised, Weights};
    use ozone_cognition::token::{Token, VOCAB};
    use ozone_cognition::window::Window;

    // The weights (219 KiB) and the windows live on the heap, as in Studio.
    ROOT.map_heap(128)?;
    let weights = Weights::seeded(1);
    let model = Quantised::new(&weights);
    let mut rng = ozone_cognition::Rng::new(2);
    let windows: alloc::vec::Vec<Window> = (0..64)
        .map(|_| Window {
            tokens: core::array::from_fn(|_| rng.below(VOCAB as u64) as Token),
            first_tick: 0,
            last_tick: 0,
        })
        .collect();
    let mut samples = [0u64; SAMPLES];
    let mut i = 0;
    measure(&mut samples, || {
        core::hint::black_box(model.score(core::hint::black_box(&windows[i % windows.len()].tokens)));
        i += 1;
    });
    report("studio_infer", &mut samples, overhead);
    measure(&mut samples, || {
        core::hint::black_box(weights.score(core::hint::black_box(&windows[i % windows.len()].tokens)));
        i += 1;
    });
    report("studio_infer_f32", &mut samples, overhead);
    let mut detector = Detector::new(Config::default());
    measure(&mut samples, || {
        core::hint::black_box(detector.push(&model, core::hint::black_box(&windows[i % windows.len()])));
        i += 1;
    });
    report("studio_judge", &mut samples, overhead);
    Ok(())
}

/// Where the server of `ipc_roundtrip_interas` keeps, in its own address space, its IPC buffer,
/// its stack (one page below the top) and its one-way samples (as [`server`] keeps its own in
/// `SERVER_SAMPLES`; nobody reads them).
const INTERAS_IPC_BUFFER: u64 = 0x20_0000;
const INTERAS_STACK_TOP: u64 = 0x7fff_ffff_0000;
const INTERAS_SAMPLES: u64 = 0x30_0000;
/// The radix of the server's own CNode (it holds one endpoint capability, in slot 1).
const INTERAS_CNODE_RADIX: u64 = 4;
const INTERAS_EP: u64 = 1;

/// `ipc_roundtrip_interas`: `ipc_roundtrip` with the server in an address space of its own, so
/// that every direction of the round trip switches CR3 (seL4's reference figure is measured
/// between two address spaces). The server's address space is built here from the root task's
/// authority: a PML4 of its own where this program's image frames (the boot information's
/// `user_image_frames`) are mapped at the addresses they have here, read-only (executable where
/// the segment is), and fresh frames for its stack, IPC buffer and samples; a CNode of its own
/// holding the endpoint. Client and server run at priority 255 as in `ipc_roundtrip`, the server
/// runs the same instructions as [`server`], and the client measures the same way.
fn interas_bench(info: &BootInfo, overhead: u64) -> Result<(), (&'static str, ozone_abi::Error)> {
    use ozone_abi::Error;
    let at = |step: &'static str| move |e: Error| (step, e);

    let ep = ROOT.retype(ObjectType::Endpoint, 0).map_err(at("endpoint"))?;
    let pml4 = ROOT.retype(ObjectType::Pml4, 0).map_err(at("PML4"))?;
    // The kernel made the image's frames in program-header order, page by page through each
    // loadable segment, then the stack's: name each by its address. (The range also holds the
    // paging structures the kernel made on the way; only a frame answers Frame GetAddress.)
    let image = info.user_image_frames;
    let is_frame = |s: u64| k::frame_get_address(s).is_ok();
    let mut next = image.start;
    for_each_image_page(|va, exec| {
        while next < image.end && !is_frame(next) {
            next += 1;
        }
        if next == image.end {
            return Err(Error::InvalidArgument);
        }
        let copy = ROOT.slot()?;
        k::cnode_copy(slot::CNODE, copy, next, rights::READ)?;
        next += 1;
        ROOT.map_frame_with_tables(copy, pml4, va, rights::READ, exec)
    })
    .map_err(at("image frames"))?;
    if (next..image.end).filter(|&s| is_frame(s)).count() as u64 != ozone_abi::ROOT_STACK_SIZE / 4096 {
        return Err(("image frames: not as many as the segments' pages and the stack's", Error::InvalidArgument));
    }
    let rw = rights::READ | rights::WRITE;
    for va in [INTERAS_STACK_TOP - 4096, INTERAS_SAMPLES, INTERAS_SAMPLES + 4096] {
        let f = ROOT.retype(ObjectType::Frame4K, 0).map_err(at("stack and samples"))?;
        ROOT.map_frame_with_tables(f, pml4, va, rw, false).map_err(at("stack and samples"))?;
    }
    const _: () = assert!(SAMPLES * 8 <= 2 * 4096);
    let buffer = ROOT.retype(ObjectType::Frame4K, 0).map_err(at("IPC buffer"))?;
    ROOT.map_frame_with_tables(buffer, pml4, INTERAS_IPC_BUFFER, rw, false).map_err(at("IPC buffer"))?;
    let raw = ROOT.retype(ObjectType::CNode, INTERAS_CNODE_RADIX).map_err(at("CNode"))?;
    let cnode = ROOT.slot().map_err(at("CNode"))?;
    k::cnode_mutate(slot::CNODE, cnode, raw, 64 - INTERAS_CNODE_RADIX).map_err(at("CNode guard"))?;
    ozone_agent_sdk::process::copy_into(cnode, INTERAS_EP, slot::CNODE, ep, rights::ALL)
        .map_err(at("endpoint into the CNode"))?;
    let tcb = ROOT.retype(ObjectType::Tcb, 0).map_err(at("TCB"))?;
    k::tcb_configure(tcb, 0, cnode, pml4, INTERAS_IPC_BUFFER, buffer).map_err(at("TCB configure"))?;
    k::tcb_set_priority(tcb, slot::TCB, 255).map_err(at("TCB priority"))?;
    k::tcb_set_tls_base(tcb, INTERAS_IPC_BUFFER).map_err(at("TCB TLS base"))?;
    let entry: extern "C" fn(u64) -> ! = interas_server;
    let regs = k::UserRegisters {
        rip: entry as usize as u64,
        rsp: INTERAS_STACK_TOP,
        rflags: 0x202,
        rdi: INTERAS_EP,
        ..Default::default()
    };
    k::tcb_write_registers(tcb, true, &regs).map_err(at("TCB registers"))?;

    // As `ipc_roundtrip`: a warm-up, then one-word Calls timed from before the Call to after it
    // returns. The first Call waits for the server to reach its Recv.
    let mut samples = [0u64; SAMPLES];
    for _ in 0..WARMUP {
        let start = rdtsc();
        let (reply, _) = raw_ipc(Syscall::Call, ep, MessageInfo::new(1, 0, 0, 1).0, start);
        if MessageInfo(reply).length() != 1 {
            return Err(("no answer from the server", Error::InvalidArgument));
        }
    }
    let one_word = MessageInfo::new(1, 0, 0, 1).0;
    for rt in samples.iter_mut() {
        let start = rdtsc();
        let _ = raw_ipc(Syscall::Call, ep, one_word, start);
        let end = rdtsc();
        *rt = end - start;
    }
    report("ipc_roundtrip_interas", &mut samples, overhead);
    Ok(())
}

/// Call `f(va, executable)` for every page of this program's loadable segments, in program
/// header order, at the addresses they are loaded at (read from the ELF and program headers the
/// first segment maps).
fn for_each_image_page(mut f: impl FnMut(u64, bool) -> Result<(), ozone_abi::Error>) -> Result<(), ozone_abi::Error> {
    const PT_LOAD: u32 = 1;
    const PT_PHDR: u32 = 6;
    const PF_X: u32 = 1;
    unsafe extern "C" {
        /// The ELF header (defined by the linker: the first loadable segment maps it).
        static __ehdr_start: u8;
    }
    let ehdr = (&raw const __ehdr_start) as u64;
    let read = |at: u64, size: usize| -> u64 {
        // SAFETY: the ELF header and the program headers are mapped, read-only, where the linker
        // placed them (in the first loadable segment); the reads need no alignment.
        unsafe {
            match size {
                2 => u64::from(core::ptr::read_unaligned(at as *const u16)),
                4 => u64::from(core::ptr::read_unaligned(at as *const u32)),
                _ => core::ptr::read_unaligned(at as *const u64),
            }
        }
    };
    let phdrs = ehdr + read(ehdr + 32, 8);
    let (entry_size, count) = (read(ehdr + 54, 2), read(ehdr + 56, 2));
    let ph = |i: u64| phdrs + i * entry_size;
    // The load bias: where the program headers are minus where the ELF says they are.
    let bias = (0..count)
        .find(|&i| read(ph(i), 4) as u32 == PT_PHDR)
        .map(|i| phdrs.wrapping_sub(read(ph(i) + 16, 8)))
        .ok_or(ozone_abi::Error::InvalidArgument)?;
    for i in 0..count {
        let (kind, flags) = (read(ph(i), 4) as u32, read(ph(i) + 4, 4) as u32);
        let (vaddr, memsz) = (read(ph(i) + 16, 8).wrapping_add(bias), read(ph(i) + 40, 8));
        if kind != PT_LOAD || memsz == 0 {
            continue;
        }
        let mut va = vaddr & !0xfff;
        while va < vaddr + memsz {
            f(va, flags & PF_X != 0)?;
            va += 4096;
        }
    }
    Ok(())
}

/// [`server`] in an address space of its own: the same instructions, with its one-way samples
/// in its own memory at `INTERAS_SAMPLES` (it cannot write this program's, mapped read-only).
/// (The samples' address goes through `black_box` so that it is in a register, as the static's
/// is in [`server`]: otherwise the compiler keeps a constant of the loop in that register
/// instead, and the server's path through the round trip is one instruction shorter.)
extern "C" fn interas_server(ep: u64) -> ! {
    let samples = core::hint::black_box(INTERAS_SAMPLES as *mut [u64; SAMPLES]);
    let (mut info, mut sent) = raw_ipc(Syscall::Recv, ep, 0, 0);
    let mut i = 0usize;
    loop {
        let arrived = rdtsc();
        let msg = MessageInfo(info);
        if msg.label() == 1 {
            // SAFETY: `interas_bench` mapped SAMPLES words there, writable, for this thread alone.
            unsafe { (*samples)[i % SAMPLES] = arrived.wrapping_sub(sent) };
            i += 1;
        }
        let reply = MessageInfo::new(0, 0, 0, msg.length().min(4)).0;
        let start = rdtsc();
        (info, sent) = raw_ipc(Syscall::ReplyRecv, ep, reply, start);
    }
}

/// The protocol key of the shaper benchmarks (any non-zero key: labels are permuted as on a real
/// instance).
const SHAPER_KEY: u64 = 0x5eed_5eed;
/// The badge of the benchmark's client: a program id, so the server keeps a profile for it.
const SHAPED_BADGE: u64 = 5;

/// The syscall shaper's cost per request (see docs/PERFORMANCE.md, "Syscall shaper"):
/// `shaper_check` is the check every `rpc::Server` makes before its handler — the client's
/// profile enforcing, the method allowed — timed alone; the `shaper_call_*` figures are whole SDK
/// round trips (`rpc::Client::call` of `echo` ECHO, one word each way, to an `rpc::Server` thread)
/// from a client whose profile is enforced and allows the method, from a badge the server keeps
/// no profile for, and of a method the profile denies (answered before the handler).
fn shaper_bench(overhead: u64) -> Result<(), ozone_abi::Error> {
    use ozone_agent_sdk::protocol::echo::method as echo_method;
    use ozone_agent_sdk::protocol::shaper::Control;
    use ozone_agent_sdk::rpc::{Client, Profiles};

    let mut samples = [0u64; SAMPLES];
    let mut profiles = Profiles::new();
    let set = Control::Set { badge: SHAPED_BADGE, allowed: 1 << echo_method::ECHO.id(), name: Default::default() };
    if profiles.apply(&set).is_err() {
        return Err(ozone_abi::Error::InvalidArgument);
    }
    measure(&mut samples, || {
        core::hint::black_box(
            profiles.check(core::hint::black_box(SHAPED_BADGE), core::hint::black_box(echo_method::ECHO.id())),
        );
    });
    report("shaper_check", &mut samples, overhead);

    let ep = ROOT.retype(ObjectType::Endpoint, 0)?;
    ROOT.spawn(rpc_server, ep, 255, 0, STACKS.next_top())?;
    let call_rights = rights::WRITE | rights::GRANT_REPLY;
    let shaped = ROOT.slot()?;
    k::cnode_mint(slot::CNODE, shaped, ep, call_rights, SHAPED_BADGE)?;
    let unprofiled = ROOT.slot()?;
    k::cnode_mint(slot::CNODE, unprofiled, ep, call_rights, 1000)?;
    let echo = ozone_agent_sdk::protocol::echo::INTERFACE;
    for (name, cap, method) in [
        // The SDK round trip of the issue: `rpc::Client::call` to an `rpc::Server`, postcard
        // both ways (a client the server keeps no profile for).
        ("sdk_roundtrip", unprofiled, echo_method::ECHO),
        ("shaper_call_enforced", shaped, echo_method::ECHO),
        ("shaper_call_unprofiled", unprofiled, echo_method::ECHO),
        // COUNT, sent with ECHO's request so every figure moves the same message: the profile
        // denies it before any decoding.
        ("shaper_call_denied", shaped, Method::<u64, u64>::new(echo_method::COUNT.id())),
    ] {
        let client = Client::with_key(cap, echo, SHAPER_KEY);
        let expected = if method == echo_method::ECHO { Ok(7) } else { Err(ServiceError::Denied.into()) };
        if client.call(method, &7) != expected {
            println!("bench: {name}: unexpected answer");
            return Err(ozone_abi::Error::InvalidArgument);
        }
        measure(&mut samples, || {
            let _ = core::hint::black_box(client.call(method, &7));
        });
        report(name, &mut samples, overhead);
    }
    Ok(())
}

/// An `echo` server on `ep` whose client `SHAPED_BADGE` is enforced to ECHO alone.
extern "C" fn rpc_server(ep: u64) -> ! {
    use ozone_agent_sdk::protocol::echo::{self, method as echo_method};
    use ozone_agent_sdk::protocol::shaper::Control;
    use ozone_agent_sdk::rpc::{self, Server};

    let mut server = Server::with_key(ep, ozone_agent_sdk::protocol::echo::INTERFACE, SHAPER_KEY);
    let set = Control::Set { badge: SHAPED_BADGE, allowed: 1 << echo_method::ECHO.id(), name: Default::default() };
    let _ = server.profiles_mut().apply(&set);
    server.serve(|r| match r.method {
        echo::id::ECHO => rpc::handle(r, echo_method::ECHO, Ok),
        _ => Err(ServiceError::UnknownMethod),
    })
}
