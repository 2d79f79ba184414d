//! The kernel proper, from the first Rust instruction to the root task, and what it does when
//! userspace enters it.
//!
//! Boot order: console → CPU features → GDT/TSS/IDT (so every later fault is reported) → NX/WP →
//! heap → physical frames from the boot memory map → the kernel's own page tables (direct map,
//! W^X image, guard pages) → SMEP/SMAP/UMIP → `syscall` → ACPI → PIC off, LAPIC on, timer
//! calibrated and counted → initrd → `ozone: boot ok` → root task in ring 3.
//!
//! Until the capability kernel exists there is exactly one user thread, the root task; when it
//! exits or dies the kernel powers the machine off.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ozone_abi::{Error, ExitCode, Syscall};
use spin::Mutex;

use crate::arch::x86_64::{acpi, apic, boot32, cpu, fault, fpu, gdt, paging, power, serial, syscall as sysentry, trap};
use crate::boot::{BootInfo, PhysMemory, PhysRange};
use crate::initrd::Initrd;
use crate::mm::{frames, heap, memmap};
use crate::user::elf::ElfImage;
use crate::user::task::{self, Task};
use crate::{info, warn};

/// Physical memory below this is never handed out (real-mode IVT, BIOS data, EBDA, option ROMs).
const LOW_MEMORY_END: u64 = 0x10_0000;
/// Name of the root-task ELF in the initrd.
const ROOT_TASK_FILE: &str = "root-task";
/// Name of the instance seed in the initrd.
const SEED_FILE: &str = "instance.seed";
/// Where a position-independent root task is loaded.
const ROOT_TASK_BIAS: u64 = 0x40_0000;

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
    if let Err(e) = memmap::for_each_free_range(boot.regions(), &reserved, &mut |r| frames::add_free_range(r)) {
        boot_failure(format_args!("cannot use the memory map: {e:?}"));
    }
    let free_at_boot = frames::free_frames();
    info!("memory: {} MiB free in {} regions", (free_at_boot * 4096) >> 20, boot.regions().len());

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
        "cpu: nx smep={} smap={} umip={} pcid={} xsave={}; direct map of {} MiB",
        features.smep,
        features.smap,
        features.umip,
        features.pcid,
        features.xsave,
        mapped >> 20
    );

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
    let bias = if image.is_position_independent() { ROOT_TASK_BIAS } else { 0 };
    FREE_BEFORE_ROOT.store(frames::free_frames(), Ordering::Relaxed);
    let t = match Task::load("root", &image, bias) {
        Ok(t) => t,
        Err(e) => boot_failure(format_args!("root task: cannot load: {e}")),
    };
    info!("root task: {} frames for its address space", t.space().user_frames() + 1);
    let mut t = t;
    t.activate();
    let ctx = t.context_ptr();
    *CURRENT.lock() = Some(t);
    // SAFETY: the context is boxed inside the task, which stays in CURRENT until it ends.
    unsafe { trap::set_current_context(ctx) };
    trap::enter_user_first()
}

static CURRENT: Mutex<Option<Task>> = Mutex::new(None);

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
/// Free frames after the root task was built (to check its memory all comes back).
static FREE_BEFORE_ROOT: AtomicUsize = AtomicUsize::new(0);

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
        Some(seed) if !seed.is_empty() => task::instance_id(seed),
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
    info!("boot cost: {} tsc ticks from kernel entry to the root task's first instruction", user - entry_tsc());
}

/// A syscall from ring 3. The common cases are decided here; the rest go to out-of-line
/// handlers so the hot path keeps a small stack frame.
#[inline(always)]
pub fn syscall(frame: &mut trap::TrapFrame) {
    report_boot_cost();
    let result: Result<(), Error> = match Syscall::from_raw(frame.rdx as i64) {
        // The only user thread: there is nobody to yield to.
        Some(Syscall::Yield) => Ok(()),
        Some(Syscall::DebugWrite) => debug_write(frame.rdi, frame.rsi),
        Some(Syscall::ThreadExit) => exit_current(frame.rdi, None),
        Some(_) => Err(Error::NotImplemented),
        None => Err(Error::UnknownSyscall),
    };
    frame.rax = match result {
        Ok(()) => 0,
        Err(e) => e as u64,
    };
}

/// The most bytes one `DebugWrite` may print.
const DEBUG_WRITE_MAX: u64 = 4096;

#[inline(never)]
fn debug_write(ptr: u64, len: u64) -> Result<(), Error> {
    if len > DEBUG_WRITE_MAX {
        return Err(Error::InvalidArgument);
    }
    let mut buf = [0u8; DEBUG_WRITE_MAX as usize];
    let buf = &mut buf[..len as usize];
    let guard = CURRENT.lock();
    let t = guard.as_ref().ok_or(Error::IllegalOperation)?;
    t.space().copy_from_user(ptr, buf).map_err(|_| Error::InvalidUserBuffer)?;
    let text = core::str::from_utf8(buf).map_err(|_| Error::InvalidArgument)?;
    crate::kprint!("{text}");
    Ok(())
}

/// An exception in ring 3: report it and end the thread.
pub fn user_fault(frame: &trap::TrapFrame) {
    report_boot_cost();
    let name = CURRENT.lock().as_ref().map_or("?", |t| t.name());
    info!(
        "user fault in task {name}: {} (vector {}) error={:#x} rip={:#x} cr2={:#x}; task killed",
        fault::exception_name(frame.vector),
        frame.vector,
        frame.error_code,
        frame.rip,
        x86_64::registers::control::Cr2::read_raw()
    );
    fault::dump_registers(frame);
    let _ = exit_current(u64::MAX, Some(()));
}

/// End the current thread; with none left, power off.
fn exit_current(status: u64, faulted: Option<()>) -> Result<(), Error> {
    let task = CURRENT.lock().take();
    let mut task_frames = 0;
    if let Some(t) = task {
        task_frames = t.space().user_frames() + 1;
        if faulted.is_none() {
            info!("task {} exited with status {status}", t.name());
        }
        if faulted.is_some() || status != 0 {
            ANY_FAILURE.store(true, Ordering::Relaxed);
        }
        drop(t);
    }
    let now = frames::free_frames();
    let before = FREE_BEFORE_ROOT.load(Ordering::Relaxed);
    if now == before {
        info!("user memory reclaimed: all {task_frames} frames");
    } else {
        warn!("user memory leak: {now} frames free, {before} before the root task was built");
    }
    info!("all user threads have exited");
    shutdown()
}

fn shutdown() -> ! {
    let code = if ANY_FAILURE.load(Ordering::Relaxed) { ExitCode::UserFault } else { ExitCode::Success };
    // Show the periodic timer is alive (a short-lived root task may finish within one tick).
    apic::wait_ticks(2);
    info!("timer ticks counted: {}; free frames: {}", apic::ticks(), frames::free_frames());
    info!("power off (status {code:?})");
    power::exit(code)
}
