//! The kernel proper, from the first Rust instruction to the root task, and what it does when
//! userspace enters it.
//!
//! Boot order: console → CPU features → GDT/TSS/IDT (so every later fault is reported) → NX/WP →
//! heap → physical frames from the boot memory map → the kernel's own page tables (direct map,
//! W^X image, guard pages) → SMEP/SMAP/UMIP → `syscall` → ACPI → PIC off, LAPIC on, timer
//! calibrated and counted → initrd → `ozone: boot ok` → root task in ring 3 (`rootserver.rs`).
//!
//! From then on userspace makes every other thread (TCBs retyped from untyped memory) and the
//! scheduler (`sched.rs`) runs them; this file is the machine side of that. `syscall` takes the
//! IPC fastpath (`api/fastpath.rs`), an uncontended Yield and the debug calls itself and hands
//! everything else to `api::handle_syscall`; `user_fault` delivers ring-3 exceptions to the
//! thread's fault handler (or reports the thread and suspends it); `timer_tick` and
//! `device_interrupt` feed the scheduler and the notifications interrupts are routed to;
//! `fpu_trap` switches FPU state lazily. Every exit is `resume_user`: the scheduler's choice is
//! made current (`switch_to`: register area, address space, TLS base, FPU ownership) and resumed
//! with `sysretq` or `iretq`; with nothing to run the CPU halts until an interrupt. Two boot
//! options change what `switch_to` does (`hardening_options`, docs/hardening.md):
//! `ozone.fpu=eager` moves the FPU state with the thread instead of on first use, and
//! `ozone.spectre=ibpb` issues a branch prediction barrier and fills the return stack buffer
//! whenever the address space changes.
//! A third, `ozone.fastpath=off` (`fastpath_option`), keeps every Call and ReplyRecv off the
//! IPC fastpath, for the differential test of the two paths.
//!
//! The root task is the one thread the kernel treats specially: when it exits, or faults without
//! a fault handler, the kernel powers the machine off. So does a deadlock: no thread can run and
//! no interrupt is routed to a notification.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use ozone_abi::{Error, ExitCode, Syscall};
use x86_64::instructions::port::Port;

use crate::api::{Kernel, Platform};
use crate::arch::x86_64::{
    acpi, apic, boot32, cpu, fault, fpu, gdt, paging, power, serial, spectre, syscall as sysentry, trap,
};
use crate::boot::{BootInfo, PhysMemory, PhysRange};
use crate::initrd::Initrd;
use crate::mm::{frames, heap, memmap};
use crate::object::asid::AsidTable;
use crate::object::tcb::{Fault, TCB_VSPACE, Tcb, ThreadState};
use crate::object::{Cap, KERNEL_PHYS_OFFSET, vspace};
use crate::rootserver;
use crate::sched::{Next, Scheduler};
use crate::user::elf::ElfImage;
use crate::{info, warn};

/// Physical memory below this is never handed out (real-mode IVT, BIOS data, EBDA, option ROMs).
const LOW_MEMORY_END: u64 = 0x10_0000;
/// Name of the root-task ELF in the initrd.
const ROOT_TASK_FILE: &str = "root-task";
/// Name of the instance seed in the initrd.
const SEED_FILE: &str = "instance.seed";

/// Physical memory as left by the 32-bit trampoline: the first 4 GiB identity-mapped.
struct IdentityLow4G;

impl PhysMemory for IdentityLow4G {
    fn bytes(&self, phys: u64, len: usize) -> Option<&[u8]> {
        let end = phys.checked_add(len as u64)?;
        if phys == 0 || end > 1 << 32 {
            return None;
        }
        // SAFETY: the trampoline identity-maps [0, 4 GiB) and the loader's structures are not
        // modified while the parser reads them.
        Some(unsafe { core::slice::from_raw_parts(phys as *const u8, len) })
    }
}

/// Entered from the 32-bit trampoline (PVH or multiboot2) on the boot stack.
pub extern "C" fn boot32_main() -> ! {
    serial::init();
    // SAFETY: written by the trampoline before any Rust code ran; never written again.
    let (door, eax, ebx) = unsafe {
        let s = &boot32::BOOT32_SCRATCH;
        (s.door, s.eax, s.ebx)
    };
    let parsed = match door {
        boot32::DOOR_PVH => crate::boot::pvh::parse(&IdentityLow4G, ebx as u64),
        _ => crate::boot::multiboot2::parse(&IdentityLow4G, eax, ebx as u64),
    };
    match parsed {
        Ok(mut boot) => {
            boot.kernel_phys_base = paging::kernel_image().0 - paging::KERNEL_VMA;
            kernel_main(boot)
        }
        Err(e) => boot_failure(format_args!("bad boot information from the loader: {e:?}")),
    }
}

/// Entered from Limine in 64-bit mode, on the boot stack.
pub extern "C" fn limine_main() -> ! {
    serial::init();
    match crate::boot::limine::from_requests() {
        Ok(boot) => kernel_main(boot),
        Err(e) => boot_failure(format_args!("bad boot information from Limine: {e:?}")),
    }
}

fn boot_failure(why: core::fmt::Arguments<'_>) -> ! {
    crate::kprint!("ozone: {why}\nozone: boot failed\n");
    power::exit(ExitCode::BootFailure)
}

fn entry_tsc() -> u64 {
    // SAFETY: written once by the entry code before any Rust ran.
    unsafe { boot32::ENTRY_TSC }
}

fn kernel_main(boot: BootInfo) -> ! {
    if let Some(level) = boot.cmdline_value("ozone.log").and_then(crate::log::Level::parse) {
        crate::log::set_max_level(level);
    }
    info!("OZONE-OS {} via {} (cmdline \"{}\")", env!("CARGO_PKG_VERSION"), boot.protocol.name(), boot.cmdline());
    let features = cpu::Features::detect();
    gdt::init();
    trap::init();
    if !features.nx {
        boot_failure(format_args!("the CPU has no NX bit; OZONE-OS requires it"));
    }
    cpu::enable_nx_and_wp(&features);
    phase("cpu tables");
    heap::init();

    // Physical memory: every usable frame except low memory, the kernel image and the initrd.
    frames::set_phys_offset(boot.loader_phys_offset);
    let (image_start, image_end) = paging::kernel_image();
    let kernel_phys =
        PhysRange { start: boot.kernel_phys_base, end: boot.kernel_phys_base + (image_end - image_start) };
    let mut reserved = [PhysRange { start: 0, end: LOW_MEMORY_END }, kernel_phys, PhysRange { start: 0, end: 0 }];
    if let Some(initrd) = boot.initrd {
        reserved[2] = PhysRange { start: initrd.start & !0xfff, end: initrd.end.next_multiple_of(4096) };
    }
    // The first KERNEL_POOL bytes of free memory are the kernel's own (its page tables, the
    // root task's boot objects); everything else becomes untyped memory for the root task.
    let mut pool_left = KERNEL_POOL;
    let mut free_total = 0;
    // SAFETY: boot runs once, before anything else reads UNTYPED_RANGES.
    #[allow(clippy::deref_addrof)]
    let untyped = unsafe { &mut *(&raw mut UNTYPED_RANGES) };
    let mut n_untyped = 0;
    let split = memmap::for_each_free_range(boot.regions(), &reserved, &mut |r| {
        free_total += r.len();
        let take = pool_left.min(r.len());
        if take > 0 {
            frames::add_free_range(PhysRange { start: r.start, end: r.start + take });
            pool_left -= take;
        }
        if take < r.len() && n_untyped < untyped.len() {
            untyped[n_untyped] = PhysRange { start: r.start + take, end: r.end };
            n_untyped += 1;
        }
    });
    if let Err(e) = split {
        boot_failure(format_args!("cannot use the memory map: {e:?}"));
    }
    UNTYPED_COUNT.store(n_untyped, Ordering::Relaxed);
    info!(
        "memory: {} MiB free in {} regions; kernel pool {} MiB",
        free_total >> 20,
        boot.regions().len(),
        (frames::free_frames() * 4096) >> 20
    );

    phase("frame allocator");
    let mapped = match paging::init_kernel_space(&boot, &gdt::guard_pages(), features.page_1g) {
        Ok(top) => top,
        Err(e) => boot_failure(format_args!("cannot build the kernel page tables: {e:?}")),
    };
    phase("kernel page tables");
    cpu::enable_user_protections(&features);
    fpu::init(&features);
    if fpu::save_area_size() > crate::object::tcb::FPU_AREA_SIZE {
        boot_failure(format_args!("the FPU state needs {} bytes, more than a TCB holds", fpu::save_area_size()));
    }
    sysentry::init();
    info!(
        "cpu: nx smep={} smap={} umip={} pcid={} xsave={} ibpb={}; direct map of {} MiB",
        features.smep,
        features.smap,
        features.umip,
        features.pcid,
        features.xsave,
        features.ibpb,
        mapped >> 20
    );
    hardening_options(&boot, &features);
    fastpath_option(&boot);

    // Firmware tables, interrupt controllers, the timer.
    phase("syscall, cpu protections");
    let Some(root) = boot.acpi else { boot_failure(format_args!("the loader gave no ACPI tables")) };
    let platform = match acpi::discover(root) {
        Ok(p) => p,
        Err(e) => boot_failure(format_args!("cannot read the ACPI tables: {e:?}")),
    };
    if let Some(p) = platform.power_off {
        power::set_power_off(p);
    } else {
        warn!("no ACPI S5 sleep state found: power-off will halt instead");
    }
    phase("acpi");
    apic::disable_legacy_pic();
    if let Err(e) = apic::init(&platform) {
        boot_failure(format_args!("cannot map the APICs: {e:?}"));
    }
    phase("interrupt controllers");
    let lapic_hz = match apic::start_timer(&platform) {
        Ok(hz) => hz,
        Err(e) => boot_failure(format_args!("{e}")),
    };
    info!("timer: LAPIC {} kHz (calibrated against the ACPI PM timer), {} Hz tick", lapic_hz / 1000, apic::TIMER_HZ);

    // The initrd and the instance it describes.
    phase("timer calibration");
    let Some(initrd_range) = boot.initrd else { boot_failure(format_args!("no initrd was loaded")) };
    // SAFETY: the initrd's physical range is reserved above, so nothing else uses those frames;
    // it is reached through the direct map.
    let initrd_bytes =
        unsafe { core::slice::from_raw_parts(frames::phys_to_virt(initrd_range.start), initrd_range.len() as usize) };
    let initrd = match Initrd::new(initrd_bytes) {
        Ok(i) => i,
        Err(e) => boot_failure(format_args!("initrd: {e}")),
    };
    let instance = instance_id(initrd.file(SEED_FILE));

    phase("initrd");
    let boot_ticks = cpu::rdtsc() - entry_tsc();
    info!("boot ok instance={instance:016x} protocol={} ticks={boot_ticks}", boot.protocol.name());

    match boot.cmdline_value("ozone.test") {
        None => {}
        Some("kernel-exception") => {
            info!("test: deliberate kernel exception");
            // SAFETY: deliberately raises #UD, which the kernel reports and stops on.
            unsafe { core::arch::asm!("ud2") };
        }
        Some("triple-fault") => {
            info!("test: triple fault");
            trap::load_empty_idt();
            // SAFETY: with no IDT, this breakpoint escalates to a triple fault (machine reset).
            unsafe { core::arch::asm!("int3") };
        }
        Some("kernel-stack-overflow") => {
            info!("test: kernel stack overflow");
            info!("never printed: {}", recurse(0));
        }
        Some("write-kernel-text") => {
            info!("test: write to kernel text");
            let text = boot_failure as *const () as *mut u8;
            // SAFETY: deliberately writes to a read-only kernel page; the fault is reported.
            unsafe { core::ptr::write_volatile(text, 0xcc) };
        }
        Some("execute-kernel-data") => {
            info!("test: execute kernel data");
            static RET: [u8; 1] = [0xc3];
            // SAFETY: deliberately jumps into a no-execute page; the fault is reported.
            let f: extern "C" fn() = unsafe { core::mem::transmute(RET.as_ptr()) };
            f();
        }
        Some(other) => boot_failure(format_args!("unknown test hook ozone.test={other}")),
    }
    if boot.cmdline_value("ozone.test").is_some() {
        boot_failure(format_args!("test hook ozone.test did not fault"));
    }

    let Some(elf) = initrd.file(ROOT_TASK_FILE) else {
        boot_failure(format_args!("root task: no `{ROOT_TASK_FILE}` in the initrd"))
    };
    let image = match ElfImage::parse(elf) {
        Ok(i) => i,
        Err(e) => boot_failure(format_args!("root task: invalid ELF: {e}")),
    };
    // SAFETY: boot, once: nothing else uses the kernel state (or the ASID table, which from now
    // on only the kernel state refers to) yet.
    let k = unsafe {
        (*KERNEL.0.get()).write(Kernel {
            sched: Scheduler::new(),
            kernel_pml4: paging::kernel_pml4_kaddr(),
            irq_notification: [0; crate::api::MAX_IRQS],
            irq_issued: [false; crate::api::MAX_IRQS],
            platform: &PLATFORM,
            fpu_owner: 0,
            asids: &mut *ASIDS.0.get(),
        })
    };
    // SAFETY: written by the boot code above.
    #[allow(clippy::deref_addrof)]
    let all: &[PhysRange; 64] = unsafe { &*(&raw const UNTYPED_RANGES) };
    let ranges = &all[..UNTYPED_COUNT.load(Ordering::Relaxed)];
    // Device memory for userspace drivers: from the top of RAM in the 32-bit space up to the I/O
    // APIC and LAPIC pages the kernel keeps.
    let ram_top_32 = boot
        .regions()
        .iter()
        .filter(|r| r.kind != crate::boot::MemoryKind::Reserved && r.end() <= 1 << 32)
        .map(|r| r.end())
        .max()
        .unwrap_or(0);
    let device = PhysRange { start: ram_top_32.next_multiple_of(1 << 20), end: DEVICE_TOP };
    let root = match rootserver::create(k, &image, ranges, device, initrd_range, instance) {
        Ok(t) => t,
        Err(rootserver::RootError::Elf(e)) => boot_failure(format_args!("root task: invalid ELF: {e}")),
        Err(e) => boot_failure(format_args!("root task: cannot build it: {e}")),
    };
    ROOT_TCB.store(root as u64, Ordering::Relaxed);
    if let Some(check) = boot.cmdline_value("ozone.check") {
        configure_checker(check, root);
    }
    KERNEL_READY.store(true, Ordering::Relaxed);
    // SAFETY: the root TCB is live.
    unsafe { k.sched.set_current(root) };
    switch_to(k, root);
    trap::enter_user_first()
}

/// The hardware posture options of the command line (docs/hardening.md): `ozone.fpu=lazy|eager`
/// and `ozone.spectre=off|ibpb`. An unknown value stops the boot: a mistyped hardening option
/// must not quietly leave the machine without what was asked for.
fn hardening_options(boot: &BootInfo, features: &cpu::Features) {
    let fpu_mode = match boot.cmdline_value("ozone.fpu") {
        None => fpu::Switching::Lazy,
        Some(v) => fpu::Switching::parse(v)
            .unwrap_or_else(|| boot_failure(format_args!("unknown value ozone.fpu={v} (expected lazy or eager)"))),
    };
    fpu::set_switching(fpu_mode);
    let spectre_mode = match boot.cmdline_value("ozone.spectre") {
        None => spectre::Mode::Off,
        Some(v) => spectre::Mode::parse(v)
            .unwrap_or_else(|| boot_failure(format_args!("unknown value ozone.spectre={v} (expected off or ibpb)"))),
    };
    let active = spectre::init(spectre_mode, features);
    let on_switch = match (active.ibpb, active.rsb_fill) {
        (true, true) => "IBPB and RSB fill",
        (false, true) => "RSB fill",
        (true, false) => "IBPB",
        (false, false) => "nothing",
    };
    info!(
        "hardening: fpu={} (state switched {}); address-space switch: {on_switch}; kernel half and direct map mapped in every address space{}",
        fpu_mode.name(),
        match fpu_mode {
            fpu::Switching::Lazy => "on first use, CR0.TS and #NM",
            fpu::Switching::Eager => "with the thread",
        },
        if features.rdcl_no { " (the CPU reports RDCL_NO: not subject to Meltdown)" } else { "" },
    );
    if active.ibpb_missing {
        warn!(
            "hardening: ozone.spectre=ibpb, but the CPU does not advertise IBPB (CPUID 7:EDX[26], 0x80000008:EBX[12]): the return stack buffer is filled on address-space switches, no barrier is issued"
        );
    }
}

/// `ozone.fastpath=on|off` (default on): whether Call and ReplyRecv may take the IPC fastpath
/// (`api/fastpath.rs`); off, every IPC takes the general path, which gives the same results
/// (the differential test `ipc_fastpath_differential` checks that). An unknown value stops the
/// boot, as for the hardening options.
fn fastpath_option(boot: &BootInfo) {
    match boot.cmdline_value("ozone.fastpath") {
        None | Some("on") => info!("ipc fastpath: on (Call and ReplyRecv)"),
        Some("off") => {
            crate::object::tcb::Profile::disable_ipc_fastpaths();
            info!("ipc fastpath: off (ozone.fastpath=off: every IPC takes the general path)");
        }
        Some(v) => boot_failure(format_args!("unknown value ozone.fastpath={v} (expected on or off)")),
    }
}

/// `ozone.check=...`: the in-guest invariant checker (debug kernels only; see `checker`).
fn configure_checker(value: &str, root: *mut Tcb) {
    #[cfg(debug_assertions)]
    {
        // SAFETY: the root TCB was just made, with its CNode in its CSpace slot.
        let cnode = unsafe { (*root).slots[crate::object::tcb::TCB_CSPACE].cap };
        let span = crate::object::kmem::SlotSpan::of_cnode(&cnode);
        match span.map(|span| crate::checker::configure(value, span, root)) {
            Some(Ok(())) => {}
            Some(Err(e)) => boot_failure(format_args!("ozone.check={value}: {e}")),
            None => boot_failure(format_args!("ozone.check: the root task has no CNode")),
        }
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = root;
        boot_failure(format_args!("ozone.check={value}: the invariant checker is only in debug kernels"));
    }
}

/// Device untyped memory ends where the I/O APICs, HPET and local APIC begin (the kernel's).
const DEVICE_TOP: u64 = 0xfec0_0000;
/// Bytes of free memory the kernel keeps for itself.
const KERNEL_POOL: u64 = 32 << 20;
/// Free memory beyond the kernel pool, handed to the root task as untyped capabilities.
static mut UNTYPED_RANGES: [PhysRange; 64] = [PhysRange { start: 0, end: 0 }; 64];
static UNTYPED_COUNT: AtomicUsize = AtomicUsize::new(0);
/// The root task's TCB (its end ends the system).
static ROOT_TCB: AtomicU64 = AtomicU64::new(0);
/// The kernel state exists (the first thread is about to run): interrupts may reach it.
static KERNEL_READY: AtomicBool = AtomicBool::new(false);

/// The capability kernel's state. One CPU runs the kernel, with interrupts disabled, and the
/// kernel is not re-entered while it runs, so there is never more than one user of it.
struct KernelCell(UnsafeCell<MaybeUninit<Kernel>>);
// SAFETY: see above: one CPU, no re-entrance.
unsafe impl Sync for KernelCell {}
static KERNEL: KernelCell = KernelCell(UnsafeCell::new(MaybeUninit::uninit()));

/// The ASID table, reached only through the kernel state (`Kernel::asids`).
struct AsidCell(UnsafeCell<AsidTable>);
// SAFETY: as for `KernelCell`: one CPU, no re-entrance; only `Kernel` refers to it.
unsafe impl Sync for AsidCell {}
static ASIDS: AsidCell = AsidCell(UnsafeCell::new(AsidTable::new()));

fn kernel() -> &'static mut Kernel {
    // SAFETY: initialised at boot before the first entry from ring 3 (the only callers); not
    // re-entered (see KernelCell).
    unsafe { (*KERNEL.0.get()).assume_init_mut() }
}

/// The machine effects the capability kernel asks for.
struct X86Platform;
static PLATFORM: X86Platform = X86Platform;

impl Platform for X86Platform {
    fn flush_tlb(&self, pml4: u64, _vaddr: u64) {
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
    fn irq_enable(&self, irq: u8, enable: bool) {
        apic::ioapic_set(irq, !enable);
    }
    fn irq_ack(&self, irq: u8) {
        apic::ioapic_set(irq, false);
    }
    fn vspace_deleted(&self, pml4: u64) {
        if cpu::read_cr3() == pml4 - KERNEL_PHYS_OFFSET {
            load_address_space(kernel().kernel_pml4);
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
    // SAFETY: the TCB is live for as long as it is current (finalisation deschedules it).
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
        // A PML4 is a 4 KiB kernel object reached through the direct map, so its physical
        // address is `pml4 - KERNEL_PHYS_OFFSET`, page-aligned.
        // SAFETY: it maps the kernel as the kernel's own tables do, and stays alive while loaded
        // (`vspace_deleted` switches away first).
        unsafe { cpu::write_cr3(phys) };
        // `ozone.spectre=ibpb`: no branch prediction trained before this point steers the new
        // address space (every call the kernel makes from here to ring 3 returns, so the RSB
        // then holds the fill and nothing older).
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
    let k = kernel();
    fault::report_deferred_nmi();
    #[cfg(debug_assertions)]
    crate::checker::after_entry(k);
    loop {
        match k.sched.schedule() {
            Next::Run(t) => {
                switch_to(k, t);
                trap::return_to_user()
            }
            Next::Idle => idle(k),
        }
    }
}

/// Nothing is runnable: wait for an interrupt that can change that.
fn idle(k: &mut Kernel) {
    if k.irq_notification.iter().all(|&n| n == 0) {
        warn!("no thread can run and no interrupt can wake one: the system is deadlocked");
        ANY_FAILURE.store(true, Ordering::Relaxed);
        shutdown();
    }
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
    fault::report_deferred_nmi();
}

/// The running thread used the FPU while another thread's state was in it (#NM, lazy switching
/// only): switch the FPU state over and let the instruction run again.
pub fn fpu_trap() {
    let k = kernel();
    let t = k.sched.current();
    fpu::set_owned(true);
    if k.fpu_owner != t as u64 && !t.is_null() {
        // SAFETY: the current thread is live.
        take_fpu(k, t as u64, unsafe { &(*t).fpu });
    }
}

/// Make the thread `t` (a live TCB other than the owner, whose FPU area is `area`) the owner of
/// the FPU registers: the owner's state saved to its TCB, `t`'s loaded.
#[inline(never)]
fn take_fpu(k: &mut Kernel, t: u64, area: &crate::object::tcb::FpuArea) {
    // SAFETY: `fpu_owner` (the FPU owner) is cleared when its TCB is finalised; it is not `t`,
    // so this is the only reference to its area.
    let owner = (k.fpu_owner != 0).then(|| unsafe { &mut (*(k.fpu_owner as *mut Tcb)).fpu });
    fpu::hand_over(owner, area);
    k.fpu_owner = t;
}

/// A timer tick (from the trap layer).
pub fn timer_tick() {
    // The kernel state exists once the first thread runs; ticks before that only count.
    if KERNEL_READY.load(Ordering::Relaxed) {
        kernel().sched.tick();
    }
}

/// A device interrupt on line `irq` (from the trap layer).
pub fn device_interrupt(irq: u8) {
    if KERNEL_READY.load(Ordering::Relaxed) {
        crate::api::handle_interrupt(kernel(), irq);
    }
}

/// Unbounded recursion with a large frame (the `kernel-stack-overflow` test hook).
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut pad = [depth; 64];
    // Keep the frame alive across the call so it is not optimised into a loop.
    pad[(depth % 64) as usize] = recurse(core::hint::black_box(depth + 1));
    core::hint::black_box(&pad)[0]
}
static REPORTED_BOOT_COST: AtomicBool = AtomicBool::new(false);
static ANY_FAILURE: AtomicBool = AtomicBool::new(false);

/// With `ozone.log=debug`, print the TSC ticks since kernel entry at the end of a boot phase
/// (the breakdown recorded in docs/PERFORMANCE.md).
fn phase(name: &str) {
    if crate::log::enabled(crate::log::Level::Debug) {
        crate::debug!("phase done at {:>9} ticks: {name}", cpu::rdtsc() - entry_tsc());
    }
}

/// A stable identifier for this instance, derived from its seed (never the seed itself).
fn instance_id(seed: Option<&[u8]>) -> u64 {
    match seed {
        Some(seed) if !seed.is_empty() => {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(b"ozone instance id v1\0");
            h.update(seed);
            let d = h.finalize();
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        }
        _ => {
            warn!("the initrd has no `{SEED_FILE}`: this boot has no instance identity");
            0
        }
    }
}

/// Called on every kernel entry from ring 3: prints the boot cost the first time.
#[inline(always)]
fn report_boot_cost() {
    if !REPORTED_BOOT_COST.load(Ordering::Relaxed) {
        report_boot_cost_now();
    }
}

#[cold]
#[inline(never)]
fn report_boot_cost_now() {
    REPORTED_BOOT_COST.store(true, Ordering::Relaxed);
    // SAFETY: written by `enter_user_first` before ring 3 ran.
    let user = unsafe { (&raw const trap::USER_ENTRY_TSC).read() };
    let entry = entry_tsc();
    info!(
        "boot cost: {} tsc ticks from kernel entry to the root task's first instruction (kernel entry at tsc {entry})",
        user - entry
    );
}

/// A syscall from ring 3 (the caller's registers are in its TCB). The debug calls are served
/// here; everything else by the capability kernel.
#[inline(always)]
pub fn syscall(frame: &mut trap::TrapFrame) {
    let k = kernel();
    // SAFETY: the syscall's registers are the current thread's (in its TCB).
    let t = unsafe { &mut *k.sched.current() };
    t.counters.syscalls += 1;
    let number = frame.rdx as i64;
    #[cfg(debug_assertions)]
    crate::checker::note_syscall(number);
    // The IPC fastpaths first, by number: one comparison each on the way in. A fastpath that
    // took the syscall switched threads directly: no scheduling decision to make.
    if number == Syscall::Call as i64 {
        if crate::api::fastpath::call(k, t) {
            fast_return(k)
        }
    } else if number == Syscall::ReplyRecv as i64 && crate::api::fastpath::reply_recv(k, t) {
        fast_return(k)
    }
    match Syscall::from_raw(number) {
        // Allowed, and nobody else of this priority or above is ready: nothing to do.
        Some(Syscall::Yield)
            if t.profile.fast_allows(ozone_abi::profile::mask(ozone_abi::profile::YIELD))
                && k.sched.highest_ready().is_none_or(|p| p < t.priority) =>
        {
            frame.rax = 0;
            trap::return_to_user()
        }
        Some(Syscall::DebugWrite) => {
            // The boot cost was recorded at the first entry to ring 3; it is printed on the first
            // syscall that leaves the fast paths (the number does not depend on when).
            report_boot_cost();
            frame.rax = match debug_write(k, frame.rdi, frame.rsi) {
                Ok(()) => 0,
                Err(e) => e as u64,
            }
        }
        Some(Syscall::ThreadExit) => thread_exit(k, frame.rdi),
        _ => {
            report_boot_cost();
            crate::api::handle_syscall(k, number)
        }
    }
}

/// Return to the thread the fastpath made current. It was blocked in a syscall, so unless its
/// registers were rewritten since (then `vector` says so) it goes back with `sysretq` at once.
#[inline(always)]
fn fast_return(k: &mut Kernel) -> ! {
    #[cfg(debug_assertions)]
    crate::checker::after_entry(k);
    switch_to(k, k.sched.current());
    trap::return_after_syscall()
}

/// The most bytes one `DebugWrite` may print.
const DEBUG_WRITE_MAX: u64 = 4096;

/// Copy user memory of the current thread through the direct map (never through the user
/// mapping, so SMAP stays on); fails if any byte is not mapped user-accessible.
fn copy_from_user(k: &Kernel, vaddr: u64, out: &mut [u8]) -> Result<(), Error> {
    let t = k.sched.current();
    if t.is_null() {
        return Err(Error::IllegalOperation);
    }
    // SAFETY: the current thread is live.
    let Cap::Paging { ptr: pml4, .. } = (unsafe { &*t }).slots[TCB_VSPACE].cap else {
        return Err(Error::IllegalOperation);
    };
    let mut done = 0usize;
    while done < out.len() {
        let va = vaddr.checked_add(done as u64).ok_or(Error::InvalidUserBuffer)?;
        let (phys, _) = vspace::translate(pml4, va).ok_or(Error::InvalidUserBuffer)?;
        let n = ((4096 - (va & 0xfff)) as usize).min(out.len() - done);
        // SAFETY: [phys, phys+n) lies in one mapped user frame, reached via the direct map.
        unsafe { core::ptr::copy_nonoverlapping(frames::phys_to_virt(phys), out[done..].as_mut_ptr(), n) };
        done += n;
    }
    Ok(())
}

#[inline(never)]
fn debug_write(k: &Kernel, ptr: u64, len: u64) -> Result<(), Error> {
    if len > DEBUG_WRITE_MAX {
        return Err(Error::InvalidArgument);
    }
    let mut buf = [0u8; DEBUG_WRITE_MAX as usize];
    let buf = &mut buf[..len as usize];
    copy_from_user(k, ptr, buf)?;
    let text = core::str::from_utf8(buf).map_err(|_| Error::InvalidArgument)?;
    crate::kprint!("{text}");
    Ok(())
}

fn is_root(t: *mut Tcb) -> bool {
    t as u64 == ROOT_TCB.load(Ordering::Relaxed)
}

/// ThreadExit: the thread stops for good; the root task's exit ends the system.
fn thread_exit(k: &mut Kernel, status: u64) {
    let t = k.sched.current();
    if is_root(t) {
        info!("root task exited with status {status}");
        if status != 0 {
            ANY_FAILURE.store(true, Ordering::Relaxed);
        }
        root_ended();
    }
    crate::debug!("thread {t:p} exited with status {status}");
    crate::api::invoke::suspend_thread(k, t);
}

/// An exception in ring 3: to the thread's fault handler if it has one; otherwise reported, and
/// the thread is suspended.
pub fn user_fault(frame: &trap::TrapFrame) {
    #[cfg(debug_assertions)]
    crate::checker::note_fault();
    report_boot_cost();
    let k = kernel();
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
    crate::api::invoke::suspend_thread(k, t);
}

/// The root task is gone: the system ends.
fn root_ended() -> ! {
    info!("the root task has ended");
    shutdown()
}

fn shutdown() -> ! {
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
