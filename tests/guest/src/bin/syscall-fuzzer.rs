//! The in-guest syscall fuzzer, booted as the root task.
//!
//! **Who runs.** Four *workers* make seeded random syscalls: two in the root task's address space
//! and two in a second one (a second copy of this program, loaded from the initrd). Their CSpace
//! reaches the *playground* CNode P, which holds everything the fuzzer may touch: its own untyped
//! memory, endpoints, notifications, frames, paging structures, CNodes, an IRQ handler, an I/O
//! port range over harmless ports, the telemetry capability, a write-only badged endpoint to the
//! server, and eight *victim* threads in a third address space (built from the fuzzer's memory)
//! that loop on one IPC syscall each — blocked sending, receiving, waiting for a reply or for a
//! notification, or faulting to the fault endpoint — so the workers' TCB invocations, deletions
//! and revocations meet threads in the middle of IPC. A *server* answers Calls and brokers
//! IRQControl Get and IOPortControl Issue for the fuzzer (it holds the control capabilities and
//! refuses COM1's line and every port outside the harmless range), and a *sentinel* keeps
//! calling the server with full-length messages and checking the replies and its own memory.
//! The root task also sets the PIT ticking at 1 kHz, for the fuzzer's handler of its line.
//!
//! **Epochs.** The run is cut into epochs of [`EPOCH_SYSCALLS`] syscalls. The root task (the
//! controller) builds P and everything in it from the fuzzer's untyped at the start of each
//! epoch, lets the workers run, takes a worker out of a syscall that blocks for too long (it then
//! returns [`shared::RESCUED`]), and at the end revokes the fuzzer's untyped — every object the
//! fuzzer made or held, victims and all, whatever they are blocked on — and checks that all of
//! its memory is back: one untyped of its full size can be retyped again. The kernel's invariant
//! checker, if the kernel command line turned it on, meanwhile checks everything reachable.
//!
//! **Parameters.** The initrd file `fuzz.args` (written by `cargo xtask test`): `seed=` (hex
//! with `0x`, or decimal) and `syscalls=`. Without it: the seed comes from the instance id and
//! the run is [`DEFAULT_SYSCALLS`] long. Under `-icount` a run is deterministic, and numbers
//! whose width depends on the run's length are printed at a fixed width (so that two lengths
//! run alike up to the shorter one's end).
//!
//! **Output.** `[fuzz] seed=...`, one line per epoch, `[fuzz] syscalls=N ...`, statistics, one
//! `[fuzz] coverage Type/Label calls=N ok=N` line per invocation label, per object type retyped
//! and per syscall, three summary lines, then `[fuzz] PASS` or `[fuzz] FAIL: why`. Which labels
//! must be reached and succeed is decided by the QEMU test (`xtask/src/tests.rs`).
//!
//! **Raw on purpose.** It fuzzes the kernel's ABI, so it speaks raw syscalls and invocations on raw
//! slot numbers (`ozone_agent_sdk::kernel`, `sys`, `process`), not the typed handles of `caps`:
//! random capability pointers, labels and arguments are exactly what no typed method would produce.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[path = "syscall-fuzzer/shared.rs"]
mod shared;
#[path = "syscall-fuzzer/worker.rs"]
mod worker;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ozone_abi::bootinfo::slot;
use ozone_abi::object::ObjectType;
use ozone_abi::{IpcBuffer, MessageInfo, Syscall, invocation as inv, rights};
use ozone_agent_sdk::kernel::{self as k, UserRegisters};
use ozone_agent_sdk::process::{self, Layout};
use ozone_agent_sdk::root::{self, Root, Stacks};
use ozone_agent_sdk::sys::{self, Msg, Received};
use ozone_agent_sdk::{entry, println};
use ozone_guest_tests::Rng;
use ozone_loader::elf::ElfImage;
use ozone_loader::initrd::Initrd;

use shared::*;
use worker::{
    BROKER_IOPORT, BROKER_IRQ, BROKER_MSI, BROKER_OK, FZ_SYSCALL_SPAN, fz_syscall, victim_buffer, victim_info,
    victim_syscall,
};

entry!(run);

unsafe extern "C" {
    /// The program's entry point (the SDK's runtime): where this copy of the image was loaded.
    fn _start() -> !;
}

/// Syscalls of a run without `fuzz.args`.
const DEFAULT_SYSCALLS: u64 = 200_000;
/// Syscalls per epoch (all workers together).
const EPOCH_SYSCALLS: u64 = 5_000;
/// The fuzzer's untyped: 2^25 bytes; P's main untyped 2^23, its small one 2^16.
const FUZZ_UNTYPED_BITS: u64 = 25;
const UT_BITS: u64 = 23;
const UT_SMALL_BITS: u64 = 16;
/// Worker, victim and sentinel priority; the server's; the controller's while it builds.
const PRIO: u64 = 100;
const SERVER_PRIO: u64 = 200;
const TOP_PRIO: u64 = 255;
/// Badges on the server's endpoint: the fuzzer's (workers and victims) and the sentinel's.
const FUZZ_BADGE: u64 = 0xf022;
const SENTINEL_BADGE: u64 = 0x5e17;
/// Interrupt lines the controller hands the fuzzer, one per epoch in turn: every other one the
/// PIT's line 2, which the root task sets ticking at 1 kHz (the kernel does not use the PIT);
/// the others have no device behind them here, and signal in every way the kernel programs a
/// line: 3 edge-triggered (ISA default), 5 and 10 level-triggered active-high (QEMU's MADT
/// overrides), 17 level-triggered active-low (a PCI INTx line).
const IRQ_LINES: [u64; 8] = [2, 3, 2, 5, 2, 17, 2, 10];
/// The PIT's I/O ports and the divisor of its 1.193182 MHz clock for 1 kHz.
const PIT_PORTS: (u64, u64) = (0x40, 0x43);
const PIT_DIVISOR: u64 = 1193;

/// Where things are in the root task's address space (inside the page table of its IPC buffer).
const A_WORKER_BUFFERS: [u64; 2] = [0x3f_0000, 0x3f_1000];
const SCRATCH_VA: u64 = 0x3f_c000;
/// The second address space: this program again, at the same addresses.
const B_IPC_BUFFER: u64 = 0x20_0000;
const B_WORKER_BUFFER: u64 = 0x20_1000;

/// Watchdog: controller rounds (each one yield) a worker may sit in a syscall without progress
/// before it is taken out; rounds without progress outside a syscall, or without a sentinel
/// round, that mean something is broken.
const RESCUE_ROUNDS: u64 = 48;
const STOPPED_ROUNDS: u64 = 400_000;

static ROOT: Root = Root::new();
/// Stacks: server, sentinel, two workers here; the second address space's workers use the
/// fifth and sixth of its own copy.
static STACKS: Stacks<8, { 16 * 1024 }> = Stacks::new();

static FINISH: AtomicBool = AtomicBool::new(false);
static SENTINEL_ROUNDS: AtomicU64 = AtomicU64::new(0);
static SENTINEL_BAD: AtomicU64 = AtomicU64::new(0);
/// What the sentinel saw first: 1 the Call failed, 2 wrong reply, 3 memory changed.
static SENTINEL_WHY: AtomicU64 = AtomicU64::new(0);
static SENTINEL_DETAIL: AtomicU64 = AtomicU64::new(0);
/// The server's copy of P (root CNode slot), for the broker.
static P_SLOT: AtomicU64 = AtomicU64::new(0);

// ---- the server (and broker) and the sentinel ----

/// Answers every Call on its endpoint: the sentinel's with a transformed echo, the fuzzer's
/// broker requests by invoking IRQ control or I/O port control, anything else with an empty
/// reply.
extern "C" fn server(ep: u64) -> ! {
    let mut r = sys::recv(ep);
    loop {
        let reply = match r {
            Ok(m) => serve(&m),
            Err(_) => Msg::new(0, &[]),
        };
        r = sys::reply_recv(ep, reply);
    }
}

fn echo(w: u64) -> u64 {
    !w.rotate_left(17)
}

fn serve(m: &Received) -> Msg {
    let label = m.msg.info.label();
    match m.badge {
        SENTINEL_BADGE => {
            let len = m.msg.info.length().min(120);
            let buf = k::ipc_buffer();
            for w in buf.msg.iter_mut().take(len as usize).skip(4) {
                *w = echo(*w);
            }
            let mut mrs = m.msg.mrs;
            for w in mrs.iter_mut() {
                *w = echo(*w);
            }
            Msg { info: MessageInfo::new(0, 0, 0, len), mrs }
        }
        FUZZ_BADGE if label == BROKER_IRQ => {
            let [irq, index, depth, msi] = m.msg.mrs;
            let r = if msi == BROKER_MSI {
                k::invoke(
                    slot::IRQ_CONTROL,
                    inv::IRQ_CONTROL_GET_MSI,
                    &[index, depth],
                    &[P_SLOT.load(Ordering::Relaxed)],
                )
            } else if irq == IRQ_REFUSED {
                Err(ozone_abi::Error::IllegalOperation)
            } else {
                k::invoke(
                    slot::IRQ_CONTROL,
                    inv::IRQ_CONTROL_GET,
                    &[irq, index, depth],
                    &[P_SLOT.load(Ordering::Relaxed)],
                )
            };
            Msg::new(0, &[r.err().map_or(0, |e| e as u64), BROKER_OK, 0, 0])
        }
        FUZZ_BADGE if label == BROKER_IOPORT => {
            let [first, last, index, depth] = m.msg.mrs;
            // Only the harmless range, or ranges the kernel must refuse anyway.
            let harmless = (IOPORT_FIRST..=IOPORT_LAST).contains(&first) && (first..=IOPORT_LAST).contains(&last);
            let refused = first > last || last > 0xffff;
            let r = if harmless || refused {
                let p = P_SLOT.load(Ordering::Relaxed);
                k::invoke(slot::IO_PORT_CONTROL, inv::IO_PORT_CONTROL_ISSUE, &[first, last, index, depth], &[p])
            } else {
                Err(ozone_abi::Error::IllegalOperation)
            };
            Msg::new(0, &[r.err().map_or(0, |e| e as u64), BROKER_OK, 0, 0])
        }
        _ => Msg::new(0, &[]),
    }
}

fn sentinel_bad(why: u64, detail: u64) {
    if SENTINEL_BAD.fetch_add(1, Ordering::SeqCst) == 0 {
        SENTINEL_WHY.store(why, Ordering::SeqCst);
        SENTINEL_DETAIL.store(detail, Ordering::SeqCst);
    }
}

/// Keeps calling the server — full-length messages every other round — and checking the
/// transformed echo, and checking a block of its own memory.
extern "C" fn sentinel(ep: u64) -> ! {
    let mut memory = [0u64; 512];
    let pattern = |i: usize| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5e17;
    for (i, m) in memory.iter_mut().enumerate() {
        *m = pattern(i);
    }
    let mut rng = Rng(0x5e17_1e55_0000_0001);
    let mut round = 0u64;
    while !FINISH.load(Ordering::SeqCst) {
        let len = if round.is_multiple_of(2) { 120 } else { 1 + rng.below(4) };
        let mut words = [0u64; 120];
        for w in words.iter_mut() {
            *w = rng.next();
        }
        let buf = k::ipc_buffer();
        let end = (len as usize).max(4);
        buf.msg[4..end].copy_from_slice(&words[4..end]);
        let msg = Msg { info: MessageInfo::new(1, 0, 0, len), mrs: [words[0], words[1], words[2], words[3]] };
        match sys::call(ep, msg) {
            Err(e) => sentinel_bad(1, e as u64),
            Ok(r) => {
                let buf = k::ipc_buffer();
                let got = |i: usize| if i < 4 { r.msg.mrs[i] } else { buf.msg[i] };
                if r.msg.info.label() != 0 || r.msg.info.length() != len {
                    sentinel_bad(2, r.msg.info.0);
                } else if let Some(i) = (0..len as usize).find(|&i| got(i) != echo(words[i])) {
                    sentinel_bad(2, 0x1000 + i as u64);
                }
            }
        }
        if let Some(i) = memory.iter().enumerate().position(|(i, m)| core::hint::black_box(*m) != pattern(i)) {
            sentinel_bad(3, i as u64);
        }
        round += 1;
        SENTINEL_ROUNDS.store(round, Ordering::SeqCst);
        sys::yield_now();
    }
    sys::thread_exit(0)
}

// ---- the fuzzer's world ----

/// The root task's capabilities for the fuzzer.
struct World {
    /// The fuzzer's untyped (all of its memory).
    ut: u64,
    /// The server's endpoint.
    ep: u64,
    /// The victims' code (root memory; a copy is mapped in each epoch's victim space).
    vcode: u64,
    /// Where this epoch's P is made, and P with its guard (also the server's copy).
    raw: u64,
    cnp: u64,
    /// For the memory check.
    whole: u64,
    /// Consecutive scratch slots for objects set up before they move into P.
    tmp: u64,
    /// The workers' TCBs and address spaces.
    workers: [(u64, u64); WORKERS],
}

const TMP_SLOTS: u64 = 24;
/// Offsets in the scratch range.
const T_PML4: u64 = 0;
const T_PDPT: u64 = 1;
const T_PD: u64 = 2;
const T_PT: u64 = 3;
const T_CODE: u64 = 4;
const T_BUF: u64 = 5; // and 6
const T_COPY: u64 = 7;
const T_VICTIMS: u64 = 8; // .. 16
const T_AUTH: u64 = 16;
const T_IRQ: u64 = 17;
const T_R: u64 = 18;
const T_I: u64 = 19;
const T_RW: u64 = 20;

/// `Err(what)` for a failed setup step.
fn step<T>(r: Result<T, ozone_abi::Error>, what: &'static str) -> Result<T, &'static str> {
    r.map_err(|e| {
        println!("[fuzz] {what}: {e:?}");
        what
    })
}

impl World {
    /// Retype from the fuzzer's untyped straight into slot `dest` (and on) of P.
    fn make_in_p(&self, ty: ObjectType, bits: u64, dest: u64, count: u64) -> Result<(), ozone_abi::Error> {
        k::untyped_retype(self.ut, ty, bits, self.cnp, 0, 0, dest, count)
    }

    /// Retype from the fuzzer's untyped into scratch slot `i` of the root CNode.
    fn make_in_tmp(&self, ty: ObjectType, i: u64, count: u64) -> Result<u64, ozone_abi::Error> {
        k::untyped_retype(self.ut, ty, 0, slot::CNODE, 0, 0, self.tmp + i, count).map(|()| self.tmp + i)
    }

    fn move_to_p(&self, dest: u64, src: u64) -> Result<(), ozone_abi::Error> {
        process::move_into(self.cnp, dest, slot::CNODE, src)
    }

    /// Build epoch `epoch`'s P: the fuzzer's objects, the victims' address space and the
    /// victims, started; the workers' CSpace is the new P.
    fn build(&self, epoch: u64, rng: &mut Rng) -> Result<(), &'static str> {
        let sh = shared();
        step(k::untyped_retype(self.ut, ObjectType::CNode, P_RADIX, slot::CNODE, 0, 0, self.raw, 1), "P")?;
        step(k::cnode_mutate(slot::CNODE, self.cnp, self.raw, 64 - P_RADIX), "P's guard")?;
        let cnp = self.cnp;
        // Memory first, largest first (each object is aligned to its size).
        step(self.make_in_p(ObjectType::Untyped, UT_BITS, S_UT, 1), "the fuzzer's untyped")?;
        step(self.make_in_p(ObjectType::Frame2M, 0, S_FRAME2M, 1), "a 2 MiB frame")?;
        step(self.make_in_p(ObjectType::Untyped, UT_SMALL_BITS, S_UT_SMALL, 1), "the small untyped")?;
        step(process::copy_into(cnp, S_CN, slot::CNODE, cnp, rights::ALL), "P in P")?;
        let w = rights::WRITE | rights::GRANT | rights::GRANT_REPLY;
        step(process::mint_into(cnp, S_SERVER, slot::CNODE, self.ep, w, FUZZ_BADGE), "the server's endpoint")?;
        step(self.make_in_p(ObjectType::Endpoint, 0, S_FAULT, 1), "the fault endpoint")?;
        step(self.make_in_p(ObjectType::Endpoint, 0, S_EP[0], 2), "endpoints")?;
        for (b, (&dest, &src)) in EP_BADGES.iter().zip(S_EP_BADGED.iter().zip(S_EP.iter())) {
            step(process::mint_into(cnp, dest, cnp, src, rights::ALL, *b), "badged endpoints")?;
        }
        step(self.make_in_p(ObjectType::Notification, 0, S_NTFN, N_NTFN), "notifications")?;
        step(process::copy_into(cnp, S_TELEMETRY, slot::CNODE, slot::TELEMETRY, rights::ALL), "telemetry")?;
        // The epoch's interrupt line, routed to the last notification from the start.
        let line = IRQ_LINES[(epoch as usize) % IRQ_LINES.len()];
        sh.irq_line.store(line, Ordering::SeqCst);
        let (irq, ntfn) = (self.tmp + T_IRQ, self.tmp + T_COPY);
        step(k::invoke(slot::IRQ_CONTROL, inv::IRQ_CONTROL_GET, &[line, irq, 64], &[slot::CNODE]), "IRQ handler")?;
        step(process::copy_into(slot::CNODE, ntfn, cnp, S_NTFN + N_NTFN - 1, rights::ALL), "copy a notification")?;
        step(k::invoke(irq, inv::IRQ_HANDLER_SET_NOTIFICATION, &[], &[ntfn]), "route the interrupt")?;
        step(k::cnode_delete(slot::CNODE, ntfn), "delete the copy")?;
        step(self.move_to_p(S_IRQ, irq), "move the IRQ handler into P")?;
        let ports = [IOPORT_FIRST, IOPORT_LAST, S_IOPORT, 64];
        step(k::invoke(slot::IO_PORT_CONTROL, inv::IO_PORT_CONTROL_ISSUE, &ports, &[cnp]), "I/O ports")?;
        step(self.make_in_p(ObjectType::Frame4K, 0, S_FRAMES, N_FRAMES), "frames")?;
        step(self.make_in_p(ObjectType::CNode, SUBCN_RADIX, S_SUBCN, 1), "a small CNode")?;
        step(self.make_in_p(ObjectType::Pml4, 0, S_PML4, 1), "a PML4")?;
        step(self.make_in_p(ObjectType::Pdpt, 0, S_PDPT, 1), "a PDPT")?;
        step(self.make_in_p(ObjectType::PageDirectory, 0, S_PD, 1), "a page directory")?;
        step(self.make_in_p(ObjectType::PageTable, 0, S_PT, 1), "a page table")?;
        let auth = step(self.make_in_tmp(ObjectType::Tcb, T_AUTH, 1), "the authority thread")?;
        step(k::tcb_set_mc_priority(auth, slot::TCB, PRIO), "its MCP")?;
        step(self.move_to_p(S_AUTH, auth), "move it into P")?;

        // The victims' address space: their code and IPC buffers.
        let pml4 = step(self.make_in_tmp(ObjectType::Pml4, T_PML4, 1), "victim PML4")?;
        for (i, ty) in [(T_PDPT, ObjectType::Pdpt), (T_PD, ObjectType::PageDirectory), (T_PT, ObjectType::PageTable)] {
            let t = step(self.make_in_tmp(ty, i, 1), "victim paging structures")?;
            step(k::paging_map(t, pml4, VCODE_VA), "map the victims' paging structures")?;
        }
        let code = self.tmp + T_CODE;
        // Read-only: a writable copy could be a victim's IPC buffer, and messages would land in
        // the victims' code.
        step(k::cnode_copy(slot::CNODE, code, self.vcode, rights::READ), "victim code")?;
        step(k::frame_map(code, pml4, VCODE_VA, rights::READ, true), "map the victim code")?;
        let bufs = step(self.make_in_tmp(ObjectType::Frame4K, T_BUF, 2), "victim buffers")?;
        for page in 0..2 {
            let f = bufs + page;
            step(k::frame_map(f, pml4, VBUF_VA + page * 0x1000, rights::READ | rights::WRITE, false), "map buffers")?;
            self.fill_victim_buffers(f, page, rng)?;
        }
        // The victims: each loops on one IPC syscall; between them, every way to be blocked.
        let victims = step(self.make_in_tmp(ObjectType::Tcb, T_VICTIMS, VICTIMS), "victims")?;
        let loops: [(Syscall, u64); VICTIMS as usize] = [
            (Syscall::Call, S_EP[0]),
            (Syscall::ReplyRecv, S_EP[0]),
            (Syscall::Send, S_EP_BADGED[1]),
            (Syscall::Recv, S_NTFN),
            (Syscall::Call, S_EP_BADGED[0]),
            (Syscall::Recv, S_EP[1]),
            (Syscall::Recv, S_NTFN + 1),
            (Syscall::Call, S_FAULT),
        ];
        // Their fault handler: copied from P's fault endpoint through a slot of ours (the kernel
        // keeps each victim's copy in its TCB), so revoking P's endpoint takes it away.
        let fault = self.tmp + T_COPY;
        step(process::copy_into(slot::CNODE, fault, cnp, S_FAULT, rights::ALL), "copy the fault endpoint")?;
        for (i, (number, cap)) in loops.into_iter().enumerate() {
            let v = victims + i as u64;
            let page = bufs + i as u64 / 4;
            step(k::tcb_configure(v, fault, cnp, pml4, victim_buffer(i as u64), page), "configure a victim")?;
            step(k::tcb_set_priority(v, slot::TCB, PRIO), "victim priority")?;
            step(k::tcb_set_mc_priority(v, slot::TCB, PRIO), "victim MCP")?;
            step(k::tcb_set_profile(v, ozone_abi::profile::IPC), "victim profile")?;
            // The first victim sends the longest message with three capabilities.
            let info = if i == 0 { MessageInfo::new(7, 0, 3, 120).0 } else { victim_info(rng) };
            let number = if rng.below(8) == 0 { victim_syscall(rng) } else { number as i64 };
            let regs = UserRegisters {
                rip: VCODE_VA,
                rflags: 0x202,
                rbx: number as u64,
                r12: cap,
                r13: info,
                r8: rng.next(),
                r9: rng.next(),
                r10: rng.next(),
                r15: rng.next(),
                ..Default::default()
            };
            step(k::tcb_write_registers(v, true, &regs), "start a victim")?;
        }
        step(k::cnode_delete(slot::CNODE, fault), "drop our copy of the fault endpoint")?;
        for (dest, src) in [
            (S_VSPACE, pml4),
            (S_VPDPT, self.tmp + T_PDPT),
            (S_VPD, self.tmp + T_PD),
            (S_VPT, self.tmp + T_PT),
            (S_VCODE, code),
            (S_VBUF, bufs),
            (S_VBUF + 1, bufs + 1),
        ] {
            step(self.move_to_p(dest, src), "move into P")?;
        }
        for i in 0..VICTIMS {
            step(self.move_to_p(S_VICTIMS + i, victims + i), "move a victim into P")?;
        }

        // What the workers know of P.
        for s in 0..P_SLOTS as u64 {
            sh.set_kind(s, Kind::Empty);
        }
        let known: [(u64, u64, Kind); 23] = [
            (S_AUTH, 1, Kind::Tcb),
            (S_CN, 1, Kind::CNode),
            (S_UT, 2, Kind::Untyped),
            (S_SERVER, 1, Kind::Endpoint),
            (S_FAULT, 1, Kind::Endpoint),
            (S_EP[0], 4, Kind::Endpoint),
            (S_NTFN, N_NTFN, Kind::Notification),
            (S_TELEMETRY, 1, Kind::Telemetry),
            (S_IRQ, 1, Kind::IrqHandler),
            (S_IOPORT, 1, Kind::IoPort),
            (S_VSPACE, 1, Kind::Pml4),
            (S_VPDPT, 1, Kind::Pdpt),
            (S_VPD, 1, Kind::Pd),
            (S_VPT, 1, Kind::Pt),
            (S_VCODE, 1, Kind::Frame4K),
            (S_VICTIMS, VICTIMS, Kind::Tcb),
            (S_VBUF, 2, Kind::Frame4K),
            (S_FRAMES, N_FRAMES, Kind::Frame4K),
            (S_SUBCN, 1, Kind::CNode),
            (S_PML4, 1, Kind::Pml4),
            (S_PDPT, 1, Kind::Pdpt),
            (S_PD, 1, Kind::Pd),
            (S_PT, 1, Kind::Pt),
        ];
        for (first, n, kind) in known {
            for s in first..first + n {
                sh.set_kind(s, kind);
            }
        }
        sh.set_kind(S_FRAME2M, Kind::Frame2M);

        // The workers' CSpace: R, holding I (holding P with its guard) and P (see `shared`).
        let (r, i, rw) = (self.tmp + T_R, self.tmp + T_I, self.tmp + T_RW);
        step(k::untyped_retype(self.ut, ObjectType::CNode, 1, slot::CNODE, 0, 0, r, 1), "the workers' CSpace root")?;
        step(k::untyped_retype(self.ut, ObjectType::CNode, 1, slot::CNODE, 0, 0, i, 1), "its CNode for P")?;
        step(k::invoke(i, inv::CNODE_COPY, &[1, 1, cnp, 64, rights::ALL], &[slot::CNODE]), "P in I")?;
        step(k::invoke(r, inv::CNODE_MINT, &[0, 1, i, 64, rights::ALL, I_GUARD], &[slot::CNODE]), "I in R")?;
        step(k::invoke(r, inv::CNODE_MINT, &[1, 1, cnp, 64, rights::ALL, 0], &[slot::CNODE]), "P in R")?;
        step(k::cnode_mint(slot::CNODE, rw, r, rights::ALL, R_GUARD), "R with its guard")?;
        for &(tcb, vspace) in &self.workers {
            step(k::invoke(tcb, inv::TCB_SET_SPACE, &[0], &[rw, vspace]), "a worker's CSpace")?;
        }
        Ok(())
    }

    /// Write the four victim IPC buffers in frame `f` (page `page`): capabilities to send and
    /// where to receive them, and message words.
    fn fill_victim_buffers(&self, f: u64, page: u64, rng: &mut Rng) -> Result<(), &'static str> {
        let copy = self.tmp + T_COPY;
        step(k::cnode_copy(slot::CNODE, copy, f, rights::ALL), "copy a victim buffer")?;
        step(k::frame_map(copy, slot::VSPACE, SCRATCH_VA, rights::READ | rights::WRITE, false), "map it here")?;
        for j in 0..4u64 {
            let i = page * 4 + j;
            // SAFETY: the frame is mapped at SCRATCH_VA, writable; buffer j is its j-th KiB.
            let b = unsafe { &mut *((SCRATCH_VA + j * 1024) as *mut IpcBuffer) };
            for m in b.msg.iter_mut() {
                *m = rng.next();
            }
            // The first victim sends a badged capability to its own endpoint (unwrapped on the
            // way), a notification and the telemetry capability.
            b.caps_or_badges = if i == 0 {
                [S_EP_BADGED[0], S_NTFN + 2, S_TELEMETRY]
            } else {
                [worker::victim_target(rng), FIRST_SCRATCH + rng.below(8), S_FRAMES + rng.below(N_FRAMES)]
            };
            b.receive_cnode = S_CN;
            b.receive_index = VICTIM_RECEIVE + i;
            b.receive_depth = 64;
        }
        step(k::frame_unmap(copy), "unmap the victim buffer")?;
        step(k::cnode_delete(slot::CNODE, copy), "delete its copy")?;
        Ok(())
    }

    /// End an epoch: revoke the fuzzer's untyped, which deletes everything the fuzzer made or
    /// held; all of its memory must be back.
    fn teardown(&self) -> Result<(), &'static str> {
        step(k::cnode_revoke(slot::CNODE, self.ut), "revoke the fuzzer's untyped")?;
        let info = step(k::untyped_get_info(self.ut), "the fuzzer's untyped")?;
        if info.has_children || info.free != 1 << FUZZ_UNTYPED_BITS {
            println!("[fuzz] after the revoke: {info:?}");
            return Err("the fuzzer's untyped still has children or used memory");
        }
        let whole = ObjectType::Untyped;
        step(
            k::untyped_retype(self.ut, whole, FUZZ_UNTYPED_BITS, slot::CNODE, 0, 0, self.whole, 1),
            "the fuzzer's untyped is not whole again",
        )?;
        step(k::cnode_delete(slot::CNODE, self.whole), "delete the whole untyped")?;
        Ok(())
    }
}

// ---- the controller ----

/// Take worker `w` out of its syscall if it is blocked in one (its RIP at the `syscall` of
/// [`fz_syscall`]): the syscall returns [`RESCUED`]. Otherwise leave it as it was.
fn rescue(tcb: u64, w: usize) -> Result<bool, &'static str> {
    let sh = shared();
    let mut regs = step(k::tcb_read_registers(tcb, true), "read a worker's registers")?;
    let start = fz_syscall as *const () as u64;
    let inside = (start..start + FZ_SYSCALL_SPAN).contains(&regs.rip);
    // SAFETY: the RIP lies in `fz_syscall`, code of this program (at the same address in the
    // second address space), mapped readable.
    let at_syscall = inside && unsafe { core::ptr::read_volatile(regs.rip as *const [u8; 2]) } == [0x0f, 0x05];
    if sh.blocking[w].load(Ordering::SeqCst) == 1 && at_syscall {
        regs.rip += 2;
        regs.rax = RESCUED;
        step(k::tcb_write_registers(tcb, true, &regs), "rescue a worker")?;
        sh.bump(stat::RESCUES);
        Ok(true)
    } else {
        step(k::tcb_resume(tcb), "resume a worker")?;
        Ok(false)
    }
}

/// Run epoch `epoch` until every worker has made its syscalls, rescuing blocked ones.
fn watch(world: &World, epoch: u64) -> Result<(), &'static str> {
    let sh = shared();
    let mut last = [u64::MAX; WORKERS];
    let mut still = [0u64; WORKERS];
    let mut sentinel_last = SENTINEL_ROUNDS.load(Ordering::SeqCst);
    let mut sentinel_still = 0u64;
    loop {
        sys::yield_now();
        if SENTINEL_BAD.load(Ordering::SeqCst) != 0 {
            return Err("the sentinel saw damage");
        }
        let s = SENTINEL_ROUNDS.load(Ordering::SeqCst);
        sentinel_still = if s == sentinel_last { sentinel_still + 1 } else { 0 };
        sentinel_last = s;
        if sentinel_still > STOPPED_ROUNDS {
            return Err("the sentinel stopped");
        }
        let mut all_done = true;
        for w in 0..WORKERS {
            if sh.done[w].load(Ordering::SeqCst) == epoch {
                continue;
            }
            all_done = false;
            let p = sh.progress[w].load(Ordering::SeqCst);
            if p != last[w] {
                last[w] = p;
                still[w] = 0;
                continue;
            }
            still[w] += 1;
            let blocked = sh.blocking[w].load(Ordering::SeqCst) == 1;
            if blocked && still[w] >= RESCUE_ROUNDS {
                rescue(world.workers[w].0, w)?;
                still[w] = 0;
            } else if still[w] >= STOPPED_ROUNDS {
                let r = k::tcb_read_registers(world.workers[w].0, false);
                println!("[fuzz] worker {w} stopped outside its syscalls: {r:?}");
                return Err("a worker stopped");
            }
        }
        if all_done {
            return Ok(());
        }
    }
}

fn fail(why: &str) -> u64 {
    let sh = shared();
    for w in 0..WORKERS {
        let l = &sh.last[w];
        println!(
            "[fuzz] worker {w}: syscalls={} last syscall {} cptr={:#x} info={:#x} mr0={:#x}",
            sh.progress[w].load(Ordering::SeqCst),
            l[0].load(Ordering::SeqCst) as i64,
            l[1].load(Ordering::SeqCst),
            l[2].load(Ordering::SeqCst),
            l[3].load(Ordering::SeqCst)
        );
    }
    println!("[fuzz] FAIL: {why}");
    1
}

/// `seed=` and `syscalls=` from the initrd's `fuzz.args`.
fn parameters(initrd: &Initrd<'_>, instance: u64) -> (u64, u64) {
    let mut seed = instance ^ 0x0207_a11c_e5ee_d5ee;
    let mut syscalls = DEFAULT_SYSCALLS;
    let text = initrd.file("fuzz.args").and_then(|b| core::str::from_utf8(b).ok()).unwrap_or("");
    for line in text.split(|c: char| c == '\n' || c.is_whitespace()) {
        let Some((key, value)) = line.split_once('=') else { continue };
        let v = match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => value.parse().ok(),
        };
        match (key, v) {
            ("seed", Some(v)) => seed = v,
            ("syscalls", Some(v)) => syscalls = v,
            _ => {}
        }
    }
    (seed, syscalls)
}

/// Start worker `idx` (already configured with its address space and IPC buffer) at
/// [`worker::worker`] with the stack whose top is `stack`.
fn start_worker(tcb: u64, idx: usize, buffer: u64, stack: u64) -> Result<(), &'static str> {
    step(k::tcb_set_priority(tcb, slot::TCB, PRIO), "worker priority")?;
    // A new thread starts with its maker's ceiling (ours, 255): a worker gets none, so the
    // threads it makes (and its own TCB as an authority) give no priority above 0.
    step(k::tcb_set_mc_priority(tcb, slot::TCB, 0), "worker MCP")?;
    step(k::tcb_set_tls_base(tcb, buffer), "worker TLS")?;
    // The workers may use the debug channel, so DebugWrite's argument checks are reached (their
    // calls print nothing: see the worker's DebugWrite arguments).
    step(k::tcb_set_debug_output(tcb, slot::IO_PORT_CONTROL, true), "worker debug channel")?;
    let regs = UserRegisters {
        rip: worker::worker as *const () as u64,
        rsp: stack,
        rflags: 0x202,
        rdi: buffer | idx as u64,
        ..Default::default()
    };
    step(k::tcb_write_registers(tcb, true, &regs), "start a worker")
}

/// Everything before the first epoch: the server and sentinel, the shared page, the second
/// address space, the workers (waiting for the first epoch).
fn setup(image: &[u8], seed: u64) -> Result<World, &'static str> {
    let ut = step(ROOT.retype(ObjectType::Untyped, FUZZ_UNTYPED_BITS), "the fuzzer's untyped")?;
    let ep = step(ROOT.retype(ObjectType::Endpoint, 0), "endpoint")?;
    let sentinel_ep = step(ROOT.slot(), "slot")?;
    step(k::cnode_mint(slot::CNODE, sentinel_ep, ep, rights::ALL, SENTINEL_BADGE), "the sentinel's endpoint")?;
    let limbo = step(ROOT.retype(ObjectType::CNode, 1), "a CNode")?;
    let raw = step(ROOT.slot(), "slot")?;
    let cnp = step(ROOT.slot(), "slot")?;
    let whole = step(ROOT.slot(), "slot")?;
    P_SLOT.store(cnp, Ordering::SeqCst);
    let tmp = ROOT.peek_slot();
    for _ in 0..TMP_SLOTS {
        step(ROOT.slot(), "slot")?;
    }

    // The victim code, written once.
    let vcode = step(ROOT.retype(ObjectType::Frame4K, 0), "frame")?;
    step(ROOT.map_frame_with_tables(vcode, slot::VSPACE, SCRATCH_VA, rights::READ | rights::WRITE, false), "map")?;
    // SAFETY: just mapped there, writable, 4 KiB.
    unsafe { core::ptr::copy_nonoverlapping(VICTIM_CODE.as_ptr(), SCRATCH_VA as *mut u8, VICTIM_CODE.len()) };
    step(k::frame_unmap(vcode), "unmap")?;

    // The shared page, here and (below) in the second address space.
    let page = step(ROOT.retype(ObjectType::Frame4K, 0), "frame")?;
    let page_b = step(ROOT.slot(), "slot")?;
    step(k::cnode_copy(slot::CNODE, page_b, page, rights::ALL), "copy the shared page")?;
    step(ROOT.map_frame_with_tables(page, slot::VSPACE, SHARED_VA, rights::READ | rights::WRITE, false), "map")?;
    let sh = shared();
    sh.seed.store(seed, Ordering::SeqCst);

    // The PIT at 1 kHz (mode 2, rate generator, on channel 0): interrupts for the fuzzer's
    // handler of line 2.
    let pit = step(ROOT.slot(), "slot")?;
    let ports = [PIT_PORTS.0, PIT_PORTS.1, pit, 64];
    step(k::invoke(slot::IO_PORT_CONTROL, inv::IO_PORT_CONTROL_ISSUE, &ports, &[slot::CNODE]), "the PIT's ports")?;
    for (port, value) in [(PIT_PORTS.1, 0x34), (PIT_PORTS.0, PIT_DIVISOR & 0xff), (PIT_PORTS.0, PIT_DIVISOR >> 8)] {
        step(k::invoke(pit, inv::IO_PORT_OUT8, &[port, value], &[]), "program the PIT")?;
    }
    step(k::cnode_delete(slot::CNODE, pit), "delete the PIT's ports")?;

    // Server (above everyone) and sentinel.
    step(ROOT.spawn(server, ep, SERVER_PRIO, 0, STACKS.next_top()), "server")?;
    step(ROOT.spawn(sentinel, sentinel_ep, PRIO, 0, STACKS.next_top()), "sentinel")?;

    // Two workers here.
    let mut workers = [(0, 0); WORKERS];
    for (idx, &buffer) in A_WORKER_BUFFERS.iter().enumerate() {
        let tcb = step(ROOT.retype(ObjectType::Tcb, 0), "worker")?;
        let frame = step(ROOT.retype(ObjectType::Frame4K, 0), "frame")?;
        step(k::frame_map(frame, slot::VSPACE, buffer, rights::READ | rights::WRITE, false), "map a buffer")?;
        step(k::tcb_configure(tcb, 0, limbo, slot::VSPACE, buffer, frame), "configure a worker")?;
        start_worker(tcb, idx, buffer, STACKS.next_top())?;
        workers[idx] = (tcb, slot::VSPACE);
    }

    // The second address space: this program again, at the same addresses (so the workers'
    // entry point, stacks and the shared page are where they are here).
    let Ok(elf) = ElfImage::parse(image) else { return Err("the root task's ELF") };
    let start = _start as *const () as u64;
    let layout = Layout {
        bias: if elf.is_position_independent() { start.wrapping_sub(elf.entry(0)) } else { 0 },
        stack_top: ozone_abi::ROOT_STACK_TOP,
        stack_size: 0x1000,
        ipc_buffer: B_IPC_BUFFER,
        heap_base: 0,
        heap_size: 0,
        info_page: 0,
    };
    let p = process::build(&ROOT, &ROOT, slot::VSPACE, slot::TCB, image, layout, 1, PRIO, 0, &[]).map_err(|e| {
        println!("[fuzz] cannot build the second address space: {e:?}");
        "the second address space"
    })?;
    step(ROOT.map_frame_with_tables(page_b, p.vspace, SHARED_VA, rights::READ | rights::WRITE, false), "map")?;
    start_worker(p.tcb, 2, B_IPC_BUFFER, STACKS.next_top())?;
    workers[2] = (p.tcb, p.vspace);
    let tcb = step(ROOT.retype(ObjectType::Tcb, 0), "worker")?;
    let frame = step(ROOT.retype(ObjectType::Frame4K, 0), "frame")?;
    step(ROOT.map_frame_with_tables(frame, p.vspace, B_WORKER_BUFFER, rights::READ | rights::WRITE, false), "map")?;
    step(k::tcb_configure(tcb, 0, limbo, p.vspace, B_WORKER_BUFFER, frame), "configure a worker")?;
    start_worker(tcb, 3, B_WORKER_BUFFER, STACKS.next_top())?;
    workers[3] = (tcb, p.vspace);
    Ok(World { ut, ep, vcode, raw, cnp, whole, tmp, workers })
}

fn run() -> u64 {
    let Some(info) = root::boot_info() else { return fail("no boot information") };
    if ROOT.init(info).is_err() {
        return fail("setup");
    }
    // SAFETY: the kernel maps the initrd read-only at `initrd_vaddr` for `initrd_size` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(info.initrd_vaddr as *const u8, info.initrd_size as usize) };
    let Ok(initrd) = Initrd::new(bytes) else { return fail("bad initrd") };
    let Some(image) = initrd.file("root-task") else { return fail("no root-task in the initrd") };
    let (seed, syscalls) = parameters(&initrd, info.instance_id);
    let epochs = syscalls.div_ceil(EPOCH_SYSCALLS).max(1);
    println!(
        "[fuzz] seed={seed:#x} syscalls={syscalls:<12} epochs={epochs:<8} workers={WORKERS} in 2 address spaces, {VICTIMS} victims"
    );
    let world = match setup(image, seed) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let sh = shared();
    let mut rng = Rng(seed ^ 0xc0de_0000_0000_0001);
    let mut remaining = syscalls;
    for epoch in 1..=epochs {
        if let Err(e) = world.build(epoch, &mut rng) {
            return fail(e);
        }
        let this = remaining.min(EPOCH_SYSCALLS);
        remaining -= this;
        // Every worker makes the same number; the last epoch rounds up.
        sh.quota.store(this.div_ceil(WORKERS as u64), Ordering::SeqCst);
        sh.go.store(epoch, Ordering::SeqCst);
        if k::tcb_set_priority(slot::TCB, slot::TCB, PRIO).is_err() {
            return fail("priority");
        }
        let watched = watch(&world, epoch);
        let _ = k::tcb_set_priority(slot::TCB, slot::TCB, TOP_PRIO);
        if let Err(e) = watched {
            println!("[fuzz] in epoch {epoch}");
            return fail(e);
        }
        if let Err(e) = world.teardown() {
            println!("[fuzz] at the end of epoch {epoch}");
            return fail(e);
        }
        let made: u64 = sh.progress.iter().map(|p| p.load(Ordering::SeqCst)).sum();
        println!(
            "[fuzz] epoch {epoch}/{epochs:<8} syscalls={made} rescues={} sentinel_rounds={}; all memory back",
            sh.stats[stat::RESCUES].load(Ordering::SeqCst),
            SENTINEL_ROUNDS.load(Ordering::SeqCst)
        );
    }
    sh.go.store(STOP, Ordering::SeqCst);
    FINISH.store(true, Ordering::SeqCst);
    for &(tcb, _) in &world.workers {
        let _ = k::tcb_suspend(tcb);
    }
    report(syscalls)
}

/// The summary, the coverage lines, and the verdict on the system's health.
fn report(syscalls: u64) -> u64 {
    let sh = shared();
    let made: u64 = sh.progress.iter().map(|p| p.load(Ordering::SeqCst)).sum();
    let ok: u64 = sh.sys.iter().map(|s| s[1].load(Ordering::SeqCst)).sum();
    let st = |i: usize| sh.stats[i].load(Ordering::SeqCst);
    println!(
        "[fuzz] syscalls={made} ok={ok} rescues={} sentinel_rounds={} sentinel_bad={}",
        st(stat::RESCUES),
        SENTINEL_ROUNDS.load(Ordering::SeqCst),
        SENTINEL_BAD.load(Ordering::SeqCst)
    );
    println!(
        "[fuzz] victims found inside blocking IPC by ReadRegisters={} (Call={} Send={} Recv/ReplyRecv={}); \
         victim faults received={} answered={}",
        st(stat::VICTIM_IN_IPC),
        st(stat::VICTIM_IN_CALL),
        st(stat::VICTIM_IN_SEND),
        st(stat::VICTIM_IN_RECV),
        st(stat::FAULTS_RECEIVED),
        st(stat::FAULT_REPLIES),
    );
    println!(
        "[fuzz] live threads, endpoints, notifications, frames, paging structures and CNodes deleted or revoked={}; \
         interrupts received={}",
        st(stat::DELETED_LIVE),
        st(stat::INTERRUPTS)
    );
    println!(
        "[fuzz] messages of 120 words={}, with 3 capabilities={}; capabilities received={}, badges unwrapped={}",
        st(stat::MAX_LENGTH),
        st(stat::THREE_CAPS),
        st(stat::CAPS_RECEIVED),
        st(stat::BADGES_UNWRAPPED)
    );
    let line = |name: &dyn core::fmt::Display, c: &[AtomicU64; 2]| {
        println!("[fuzz] coverage {name} calls={} ok={}", c[0].load(Ordering::SeqCst), c[1].load(Ordering::SeqCst));
        (c[0].load(Ordering::SeqCst) > 0, c[1].load(Ordering::SeqCst) > 0)
    };
    struct Name<'a>(&'a str, &'a str, &'a str);
    impl core::fmt::Display for Name<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "{}{}{}", self.0, self.1, self.2)
        }
    }
    let (mut reached, mut succeeded) = (0, 0);
    for (e, c) in INVOCATIONS.iter().zip(sh.inv.iter()) {
        let (r, s) = line(&Name(e.ty, "/", e.name), c);
        reached += r as usize;
        succeeded += s as usize;
    }
    let (mut types, mut types_ok) = (0, 0);
    for (name, c) in TYPE_NAMES.iter().zip(sh.retype.iter()) {
        let (r, s) = line(&Name("Untyped/Retype(", name, ")"), c);
        types += r as usize;
        types_ok += s as usize;
    }
    let (mut calls, mut calls_ok) = (0, 0);
    for (name, c) in SYSCALLS.iter().zip(sh.sys.iter()) {
        let (r, s) = line(&Name("syscall/", name, ""), c);
        calls += r as usize;
        calls_ok += s as usize;
    }
    println!("[fuzz] coverage: {reached} of {N_INV} invocation labels reached ({succeeded} succeeded at least once)");
    println!("[fuzz] coverage: {types} of {} object types retyped ({types_ok} made at least once)", TYPE_NAMES.len());
    println!("[fuzz] coverage: {calls} of {N_SYS} syscalls made ({calls_ok} succeeded at least once)");
    if made < syscalls {
        return fail("the workers made fewer syscalls than asked");
    }
    if SENTINEL_BAD.load(Ordering::SeqCst) != 0 || SENTINEL_ROUNDS.load(Ordering::SeqCst) == 0 {
        println!(
            "[fuzz] sentinel: first problem {} detail {:#x}",
            SENTINEL_WHY.load(Ordering::SeqCst),
            SENTINEL_DETAIL.load(Ordering::SeqCst)
        );
        return fail("the sentinel saw damage or never ran");
    }
    println!("[fuzz] PASS");
    0
}
