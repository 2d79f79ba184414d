//! The kernel's entry and exit surface: what the arch layer (`arch/x86_64/trap.rs`,
//! `syscall.rs`) calls when ring 3 enters the kernel, and the one way back to ring 3.
//!
//! `syscall` takes the IPC fastpath (`api/fastpath.rs`) and an uncontended Yield itself and hands
//! everything else to `api::handle_syscall`, which asks [`Platform`] (here `X86Platform`) for
//! the machine effects: TLB flushes, I/O ports, interrupt routing, the console for DebugWrite,
//! the end of the system when the root task exits. `user_fault` delivers ring-3 exceptions to the
//! thread's fault handler (or reports the thread and suspends it); `timer_tick` and
//! `device_interrupt` feed the scheduler and the notifications interrupts are routed to;
//! `fpu_trap` switches FPU state lazily. Every exit is `resume_user`: the scheduler's choice is
//! made current (`switch_to`: register area, address space, TLS base, FPU ownership) and resumed
//! with `sysretq` or `iretq`; with nothing to run the CPU halts until an interrupt. Three boot
//! options change what `switch_to` does (docs/hardening.md): `ozone.fpu=eager` moves the FPU
//! state with the thread instead of on first use, `ozone.spectre=ibpb` issues a branch
//! prediction barrier and fills the return stack buffer whenever the address space changes, and
//! `ozone.kpti=on` (the skim window, `arch/x86_64/kpti.rs`) keeps the kernel's own page tables
//! loaded while the kernel runs and records the thread's address space for the exit to load.
//!
//! The root task is the one thread the kernel treats specially: when it exits, or faults without
//! a fault handler, the kernel powers the machine off. So does a deadlock: no thread can run and
//! no interrupt is routed to a notification.

use crate::object::kptr::kptr;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ozone_abi::{ExitCode, Syscall};
use x86_64::instructions::port::Port;

use crate::api::{Kernel, Platform};
use crate::arch::x86_64::{apic, cpu, fault, fpu, kpti, paging, power, spectre, trap};
use crate::kmain::report_boot_cost;
use crate::mm::frames;
use crate::object::KERNEL_PHYS_OFFSET;
use crate::object::asid::AsidTable;
use crate::object::tcb::{Fault, Tcb, ThreadState};
use crate::sched::{Next, Scheduler};
use crate::{info, warn};

/// The root task's TCB (its end ends the system).
static ROOT_TCB: AtomicU64 = AtomicU64::new(0);
/// The most device memory ranges (the 32-bit hole and the high ranges of `mm/device.rs`).
const MAX_DEVICE_RANGES: usize = 1 + crate::mm::device::MAX_HIGH_RANGES;
/// The device memory handed to the root task as device untyped memory: `[start, end)` pairs
/// (empty ones unused).
static DEVICE_MEMORY: [[AtomicU64; 2]; MAX_DEVICE_RANGES] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_DEVICE_RANGES];

/// Boot: the device memory ranges given to the root task (see `Platform::device_memory`); those
/// past [`MAX_DEVICE_RANGES`] are not recorded (the caller never passes more).
pub(crate) fn set_device_memory(ranges: &[crate::boot::PhysRange]) {
    for (slot, r) in DEVICE_MEMORY.iter().zip(ranges) {
        slot[0].store(r.start, Ordering::Relaxed);
        slot[1].store(r.end, Ordering::Relaxed);
    }
}

/// The kernel state exists (the first thread is about to run): interrupts may reach it.
static KERNEL_READY: AtomicBool = AtomicBool::new(false);

/// The capability kernel's state, reached only through [`with_kernel`]. One CPU runs the kernel,
/// with interrupts disabled, and the kernel is not re-entered while it uses the state (checked
/// in debug kernels), so there is never more than one user of it.
struct KernelCell(UnsafeCell<MaybeUninit<Kernel>>);
// SAFETY: see above: one CPU, no re-entrance.
unsafe impl Sync for KernelCell {}
static KERNEL: KernelCell = KernelCell(UnsafeCell::new(MaybeUninit::uninit()));

/// The ASID table, reached only through the kernel state (`Kernel::asids`).
struct AsidCell(UnsafeCell<AsidTable>);
// SAFETY: as for `KernelCell`: one CPU, no re-entrance; only `Kernel` refers to it.
unsafe impl Sync for AsidCell {}
static ASIDS: AsidCell = AsidCell(UnsafeCell::new(AsidTable::new()));

/// Debug kernels: a kernel path holds the kernel state (inside [`with_kernel`]).
#[cfg(debug_assertions)]
static HELD: AtomicBool = AtomicBool::new(false);

/// Run `f` with the kernel state. The reference lives only as long as `f`: the entry points take
/// it for their work and give it back before they leave for ring 3 or halt. In debug kernels a
/// second taker while it is held — an interrupt handler inside a kernel operation, a `Platform`
/// callback reaching back — is a kernel bug, reported and stopped at (release kernels, which
/// keep the entry paths short, rely on the same structure without the check).
#[inline(always)]
pub(crate) fn with_kernel<R>(f: impl FnOnce(&mut Kernel) -> R) -> R {
    #[cfg(debug_assertions)]
    if HELD.swap(true, Ordering::Acquire) {
        kernel_reentered();
    }
    // SAFETY: written by `init_kernel` at boot before any caller (interrupts reach this only
    // once KERNEL_READY is set, after it); one CPU, interrupts disabled while the kernel runs,
    // and no other holder (checked above in debug kernels).
    let r = f(unsafe { (*KERNEL.0.get()).assume_init_mut() });
    #[cfg(debug_assertions)]
    HELD.store(false, Ordering::Release);
    r
}

#[cfg(debug_assertions)]
#[cold]
#[inline(never)]
fn kernel_reentered() -> ! {
    panic!("the kernel state was taken while a kernel path held it (re-entrance)")
}

/// The machine effects the capability kernel asks for.
struct X86Platform;
static PLATFORM: X86Platform = X86Platform;

impl Platform for X86Platform {
    fn flush_tlb(&self, pml4: u64, _vaddr: u64) {
        // With the skim window on (`ozone.kpti`), the kernel's CR3 is loaded here and this flushes
        // nothing: the exit to ring 3 writes CR3, without PCID a full flush of user translations.
        let (cur, _) = x86_64::registers::control::Cr3::read();
        if cur.start_address().as_u64() == pml4 - KERNEL_PHYS_OFFSET {
            x86_64::instructions::tlb::flush_all();
        }
    }
    fn port_in(&self, port: u16, size: u8) -> u32 {
        // SAFETY: the port is inside an I/O port capability's range, checked by the caller.
        unsafe {
            match size {
                1 => u32::from(Port::<u8>::new(port).read()),
                2 => u32::from(Port::<u16>::new(port).read()),
                _ => Port::<u32>::new(port).read(),
            }
        }
    }
    fn port_out(&self, port: u16, size: u8, value: u32) {
        // SAFETY: as for `port_in`.
        unsafe {
            match size {
                1 => Port::<u8>::new(port).write(value as u8),
                2 => Port::<u16>::new(port).write(value as u16),
                _ => Port::<u32>::new(port).write(value),
            }
        }
    }
    fn irq_line(&self, irq: u8) -> bool {
        apic::irq_line(irq)
    }
    fn msi_message(&self, irq: u8) -> Option<(u64, u64)> {
        apic::msi_message(irq)
    }
    fn irq_enable(&self, irq: u8, enable: bool) {
        apic::line_set(irq, !enable, !enable);
    }
    fn irq_ack(&self, irq: u8) {
        apic::line_set(irq, false, false);
    }
    fn vspace_deleted(&self, pml4: u64) {
        let phys = pml4 - KERNEL_PHYS_OFFSET;
        // With the skim window on, the kernel's CR3 is loaded and the deleted space may be the
        // one the next exit would load: the template (the trampoline alone) replaces it, as the
        // kernel's PML4 does without the option.
        if cpu::read_cr3() == phys || (kpti::enabled() && kpti::user_cr3() == phys) {
            load_address_space(kpti::template().unwrap_or_else(paging::kernel_pml4_kaddr));
        }
    }
    fn set_vspace(&self, pml4: u64) {
        load_address_space(pml4);
    }
    fn set_tls_base(&self, base: u64) {
        load_fs_base(base);
    }
    fn thread_deleted(&self, tcb: u64) {
        // The root task's TCB may be deleted (by whoever was given its capability); a thread
        // later made in the same memory is not the root task.
        let _ = ROOT_TCB.compare_exchange(tcb, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
    fn kernel_port(&self, first: u16, last: u16) -> bool {
        /// The legacy interrupt controllers, masked at boot and kept masked: both 8259 PICs with
        /// the aliases chipsets decode for them (every even/odd pair of 0x20-0x3f and 0xa0-0xbf),
        /// which also covers the IMCR (0x22-0x23, the APIC/PIC mode switch of older chipsets),
        /// and the PICs' edge/level control registers (ELCR, 0x4d0-0x4d1).
        const PICS: [(u16, u16); 3] = [(0x20, 0x3f), (0xa0, 0xbf), (0x4d0, 0x4d1)];
        let overlaps = |(a, b): (u16, u16)| first <= b && a <= last;
        PICS.into_iter().any(overlaps) || power::kernel_ports().into_iter().flatten().any(overlaps)
    }
    fn device_memory(&self, phys: u64) -> bool {
        // Anything past the direct map counts too: the kernel cannot read it through that map.
        phys >= paging::direct_map_top()
            || DEVICE_MEMORY
                .iter()
                .any(|r| (r[0].load(Ordering::Relaxed)..r[1].load(Ordering::Relaxed)).contains(&phys))
    }
    fn console_write(&self, text: &str) {
        crate::kprint!("{text}");
    }
    fn thread_exited(&self, tcb: u64, status: u64) {
        // The root task's exit ends the system.
        if is_root(kptr::<Tcb>(tcb)) {
            info!("root task exited with status {status}");
            if status != 0 {
                ANY_FAILURE.store(true, Ordering::Relaxed);
            }
            root_ended();
        }
    }
}

/// Make `t` the thread on the CPU: its registers are where the next kernel entry saves, its
/// address space and FPU state are loaded.
#[inline(always)]
fn switch_to(k: &mut Kernel, t: *mut Tcb) {
    // SAFETY: the scheduler only hands out live TCBs.
    let tr = unsafe { &mut *t };
    if tr.state == ThreadState::Restart {
        tr.state = ThreadState::Running;
    }
    if trap::current_context() == &raw mut tr.regs {
        return;
    }
    // Lazily: CR0.TS set unless `t` owns the FPU registers. Eagerly (`ozone.fpu=eager`): the
    // owner's state saved and `t`'s loaded now, unless `t` is the owner.
    fpu::switch(k.fpu_owner == t as u64, || take_fpu(k, t as u64, &tr.fpu));
    // If the TCB is deleted later the pointer stays until the next switch, but nothing saves
    // through it meanwhile: only an entry from ring 3 does, and the thread (Inactive, no longer
    // the scheduler's current) does not run again before the next `switch_to` replaces it.
    // SAFETY: the TCB is live now, and (above) the pointer is not used after it dies.
    unsafe { trap::set_current_context(&mut tr.regs) };
    load_address_space(crate::api::address_space_of(k, tr));
    load_fs_base(tr.tls_base);
}

/// Make the address space rooted at `pml4` (the kernel's PML4, or a PML4 whose top half is the
/// kernel's, copied at creation; a kernel address) the CPU's, if it is not already: CR3 itself
/// says which one is loaded.
#[inline(always)]
fn load_address_space(pml4: u64) {
    let phys = pml4 - KERNEL_PHYS_OFFSET;
    if cpu::read_cr3() != phys {
        // The options' paths are marked cold so the plain CR3 write stays the straight path.
        match spectre::switch_kind() {
            spectre::SwitchKind::Plain => {
                // A PML4 is a 4 KiB kernel object reached through the direct map, so its
                // physical address is `pml4 - KERNEL_PHYS_OFFSET`, page-aligned.
                // SAFETY: it maps the kernel as the kernel's own tables do, and stays alive while
                // loaded (`vspace_deleted` switches away first).
                unsafe { cpu::write_cr3(phys) };
            }
            spectre::SwitchKind::Barriers => {
                core::hint::cold_path();
                // `phys` is a PML4 kernel object's physical address, as above.
                // SAFETY: it maps the kernel as the kernel's own tables do, and stays alive while
                // loaded (`vspace_deleted` switches away first).
                unsafe { cpu::write_cr3(phys) };
                // `ozone.spectre=ibpb`: no branch prediction trained before this point steers
                // the new address space (every call the kernel makes from here to ring 3
                // returns, so the RSB then holds the fill and nothing older).
                spectre::barriers();
            }
            spectre::SwitchKind::Skim => {
                core::hint::cold_path();
                skim_address_space_switch(phys);
            }
        }
    }
}

/// An address-space switch with the skim window on (`ozone.kpti`): the kernel keeps its own CR3
/// and the next exit to ring 3 loads `phys`; the barriers of `ozone.spectre` if that changed the
/// address space. Cold, so the plain CR3 write stays the path the compiler lays out straight.
#[cold]
#[inline(never)]
fn skim_address_space_switch(phys: u64) {
    if kpti::set_user_cr3(phys) {
        spectre::address_space_switched();
    }
}

/// IA32_FS_BASE.
const MSR_FS_BASE: u32 = 0xc000_0100;

/// Make `base` the FS base (TLS) of the thread about to run.
#[inline(always)]
fn load_fs_base(base: u64) {
    // SAFETY: a thread's TLS base is 0 or a user address SetTLSBase checked (canonical, so the
    // write cannot fault); FS is used by ring 3 only.
    unsafe { x86_64::registers::model_specific::Msr::new(MSR_FS_BASE).write(base) };
}

/// Leave the kernel: run the scheduler's choice, or idle until an interrupt gives it one.
pub fn resume_user() -> ! {
    loop {
        let run = with_kernel(|k| {
            fault::report_deferred_nmi();
            #[cfg(debug_assertions)]
            crate::checker::after_entry(k);
            match k.sched.schedule() {
                Next::Run(t) => {
                    switch_to(k, t);
                    true
                }
                Next::Idle => {
                    if k.irq_notification.iter().all(|&n| n == 0) {
                        warn!("no thread can run and no interrupt can wake one: the system is deadlocked");
                        ANY_FAILURE.store(true, Ordering::Relaxed);
                        shutdown();
                    }
                    false
                }
            }
        });
        if run {
            trap::return_to_user()
        }
        // Nothing is runnable: wait for an interrupt that can change that (its handler takes the
        // kernel state, which is not held here).
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
}

/// The running thread used the FPU while another thread's state was in it (#NM, lazy switching
/// only): switch the FPU state over and let the instruction run again.
pub fn fpu_trap() {
    with_kernel(|k| {
        let t = k.sched.current();
        fpu::set_owned(true);
        if k.fpu_owner != t as u64 && !t.is_null() {
            // SAFETY: the current thread is live.
            take_fpu(k, t as u64, unsafe { &(*t).fpu });
        }
    })
}

/// Make the thread `t` (a live TCB other than the owner, whose FPU area is `area`) the owner of
/// the FPU registers: the owner's state saved to its TCB, `t`'s loaded.
#[inline(never)]
fn take_fpu(k: &mut Kernel, t: u64, area: &crate::object::tcb::FpuArea) {
    // SAFETY: `fpu_owner` (the FPU owner) is cleared when its TCB is finalised; it is not `t`,
    // so this is the only reference to its area.
    let owner = (k.fpu_owner != 0).then(|| unsafe { &mut (*(kptr::<Tcb>(k.fpu_owner))).fpu });
    fpu::hand_over(owner, area);
    k.fpu_owner = t;
}

/// A timer tick (from the trap layer).
pub fn timer_tick() {
    // The kernel state exists once the first thread runs; ticks before that only count.
    if KERNEL_READY.load(Ordering::Relaxed) {
        with_kernel(|k| k.sched.tick());
    }
}

/// A device interrupt on line `irq` (from the trap layer).
pub fn device_interrupt(irq: u8) {
    if KERNEL_READY.load(Ordering::Relaxed) {
        with_kernel(|k| crate::api::handle_interrupt(k, irq));
    }
}

static ANY_FAILURE: AtomicBool = AtomicBool::new(false);

/// How a syscall leaves the kernel.
enum SyscallExit {
    /// A fastpath switched threads: straight back to ring 3 with `sysretq`, unless the new
    /// thread's registers were rewritten since it blocked (then `vector` says so).
    Switched,
    /// An uncontended Yield: back to the caller at once.
    Yielded,
    /// Through the scheduler (`resume_user`).
    Scheduled,
}

/// A syscall from ring 3 (the caller's registers are in its TCB): the IPC fastpaths and an
/// uncontended Yield here; everything else, the debug calls included, by `api::handle_syscall`.
/// `TRACED`: the copy a traced thread's syscalls enter (its TCB's handler says which), whose
/// fastpaths write the thread's records; the untraced copy has no trace test at all.
///
/// # Safety
/// `frame` is the current thread's saved context (the arch layer's syscall entry passes it).
#[inline(always)]
pub unsafe fn syscall<const TRACED: bool>(frame: *mut trap::TrapFrame) {
    // SAFETY: `frame` is the current thread's saved context (in its TCB), just written by the
    // entry; read and written here only while no reference to the thread is live.
    let number = unsafe { (&raw const (*frame).rdx).read() } as i64;
    match with_kernel(|k| syscall_with::<TRACED>(k, number)) {
        SyscallExit::Switched => trap::return_after_syscall(),
        SyscallExit::Yielded => {
            // SAFETY: as above; the thread is still the current one.
            unsafe { (&raw mut (*frame).rax).write(0) };
            trap::return_to_user()
        }
        SyscallExit::Scheduled => {}
    }
}

#[inline(always)]
fn syscall_with<const TRACED: bool>(k: &mut Kernel, number: i64) -> SyscallExit {
    // SAFETY: the syscall's registers are the current thread's (in its TCB).
    let t = unsafe { &mut *k.sched.current() };
    t.counters.syscalls += 1;
    #[cfg(debug_assertions)]
    crate::checker::note_syscall(number);
    // The IPC fastpaths first, by number: one comparison each on the way in. A fastpath that
    // took the syscall switched threads directly: no scheduling decision to make. A traced
    // thread's are the copies that write its records (were an untraced copy ever to run for a
    // traced thread, its first test would fail, and the general path would write the record).
    use crate::api::fastpath;
    let switched = if number == Syscall::Call as i64 {
        if TRACED { fastpath::traced_call(k, t) } else { fastpath::call(k, t) }
    } else {
        number == Syscall::ReplyRecv as i64
            && if TRACED { fastpath::traced_reply_recv(k, t) } else { fastpath::reply_recv(k, t) }
    };
    if switched {
        #[cfg(debug_assertions)]
        crate::checker::after_entry(k);
        switch_to(k, k.sched.current());
        return SyscallExit::Switched;
    }
    // Yield, allowed, and nobody else of this priority or above is ready: nothing to do (a
    // traced thread's Yield takes the general path, which writes its record).
    if !TRACED
        && number == Syscall::Yield as i64
        && t.profile.fast_allows(ozone_abi::profile::mask(ozone_abi::profile::YIELD))
        && k.sched.highest_ready().is_none_or(|p| p < t.priority)
    {
        return SyscallExit::Yielded;
    }
    report_boot_cost();
    crate::api::handle_syscall(k, number);
    SyscallExit::Scheduled
}

fn is_root(t: *mut Tcb) -> bool {
    t as u64 == ROOT_TCB.load(Ordering::Relaxed)
}

/// An exception in ring 3: to the thread's fault handler if it has one; otherwise reported, and
/// the thread is suspended.
///
/// # Safety
/// `frame` is the current thread's saved context (the arch layer's entry passes it).
pub unsafe fn user_fault(frame: *const trap::TrapFrame) {
    // A copy: the kernel reaches the same registers through the thread's TCB while it works.
    // SAFETY: `frame` is the current thread's saved context, just written by the entry.
    let frame = &unsafe { (*frame).clone() };
    #[cfg(debug_assertions)]
    crate::checker::note_fault();
    report_boot_cost();
    with_kernel(|k| user_fault_with(k, frame));
}

fn user_fault_with(k: &mut Kernel, frame: &trap::TrapFrame) {
    let t = k.sched.current();
    if t.is_null() {
        return;
    }
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    let fault = if frame.vector == 14 {
        Fault::VmFault { addr: cr2, error: frame.error_code, ip: frame.rip }
    } else {
        Fault::UserException { vector: frame.vector, error: frame.error_code, ip: frame.rip }
    };
    if crate::api::raise_fault(k, t, fault) {
        return;
    }
    let name = if is_root(t) { "root" } else { "thread" };
    info!(
        "user fault in task {name}: {} (vector {}) error={:#x} rip={:#x} cr2={:#x}; no fault handler, thread suspended",
        fault::exception_name(frame.vector),
        frame.vector,
        frame.error_code,
        frame.rip,
        cr2
    );
    fault::dump_registers(frame);
    if is_root(t) {
        ANY_FAILURE.store(true, Ordering::Relaxed);
        root_ended();
    }
    crate::object::tcb::suspend_thread(k, t);
}

/// The root task is gone: the system ends.
fn root_ended() -> ! {
    info!("the root task has ended");
    shutdown()
}

fn shutdown() -> ! {
    // From here on interrupts only count (the timer ticks below): the kernel state may be held
    // by the path that ends the system.
    KERNEL_READY.store(false, Ordering::Relaxed);
    let code = if ANY_FAILURE.load(Ordering::Relaxed) { ExitCode::UserFault } else { ExitCode::Success };
    // Show the periodic timer is alive (a short-lived root task may finish within one tick).
    apic::wait_ticks(2);
    info!("timer ticks counted: {}; kernel pool frames free: {}", apic::ticks(), frames::free_frames());
    if let Some((call, reply_recv)) = crate::api::fastpath::hits() {
        let state = if crate::object::tcb::Profile::ipc_fastpaths_enabled() { "on" } else { "off" };
        info!("ipc fastpath hits: call={call} reply_recv={reply_recv} (fastpath {state})");
    }
    info!("power off (status {code:?})");
    power::exit(code)
}

/// Make the kernel state (boot, once): the capability kernel's, over the kernel's own PML4 at
/// `kernel_pml4`. From now on it is reached through [`with_kernel`].
pub(crate) fn init_kernel(kernel_pml4: u64) {
    // SAFETY: boot, once: nothing else uses the kernel state (or the ASID table, which from now
    // on only the kernel state refers to) yet.
    unsafe {
        (*KERNEL.0.get()).write(Kernel {
            sched: Scheduler::new(),
            kernel_pml4,
            irq_notification: [0; crate::api::MAX_IRQS],
            irq_badge: [0; crate::api::MAX_IRQS],
            irq_issued: [false; crate::api::MAX_IRQS],
            platform: &PLATFORM,
            fpu_owner: 0,
            asids: &mut *ASIDS.0.get(),
            last_refusal: None,
        });
    }
}

/// Run the root task `root` (boot's last step): it is the thread whose end ends the system, and
/// from now on interrupts reach the kernel state.
pub(crate) fn run_root_task(root: *mut Tcb) -> ! {
    ROOT_TCB.store(root as u64, Ordering::Relaxed);
    with_kernel(|k| {
        // SAFETY: the root TCB is live.
        unsafe { k.sched.set_current(root) };
        switch_to(k, root);
    });
    KERNEL_READY.store(true, Ordering::Relaxed);
    trap::enter_user_first()
}
