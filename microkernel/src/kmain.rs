//! The kernel's boot, from the first Rust instruction to the root task: the loader's handoff
//! (`boot32_main` for PVH and multiboot2, `limine_main` for Limine), then `kernel_main`.
//!
//! Boot order: console → CPU features → GDT/TSS/IDT (so every later fault is reported) → NX/WP →
//! heap → physical frames from the boot memory map → the kernel's own page tables (direct map,
//! W^X image, guard pages) → SMEP/SMAP/UMIP → `syscall` → the hardening options of the command
//! line (`hardening_options`, docs/hardening.md) and `ozone.fastpath=off` (`fastpath_option`,
//! which keeps every Call and ReplyRecv off the IPC fastpath, for the differential test) → ACPI → PIC off, LAPIC on, timer calibrated and
//! counted → initrd → `ozone: boot ok` → the kernel state and the root task (`rootserver.rs`),
//! which `entry::run_root_task` starts in ring 3.
//!
//! From then on the kernel runs only when ring 3 enters it: `entry.rs` is that surface.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ozone_abi::ExitCode;

use crate::arch::x86_64::{
    acpi, apic, boot32, cpu, fpu, gdt, kpti, paging, power, serial, spectre, syscall as sysentry, trap,
};
use crate::boot::{BootInfo, PhysMemory, PhysRange};
use crate::initrd::Initrd;
use crate::mm::{frames, heap, memmap, skim};
use crate::object::tcb::Tcb;
use crate::rootserver;
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
    // With the skim window on, user PML4s copy their top half from its template (the trampoline
    // alone), and a thread without a VSpace runs on it.
    crate::entry::init_kernel(kpti::template().unwrap_or_else(paging::kernel_pml4_kaddr));
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
    // And the high space (64-bit BARs): above everything the direct map covers, up to the CPU's
    // physical address width, minus every region of the memory map (`mm/device.rs`).
    let mut device = [PhysRange { start: 0, end: 0 }; 1 + crate::mm::device::MAX_HIGH_RANGES];
    device[0] = PhysRange { start: ram_top_32.next_multiple_of(1 << 20), end: DEVICE_TOP };
    let (high, n_high, dropped) =
        crate::mm::device::high_ranges(boot.regions(), paging::direct_map_top(), features.phys_bits);
    device[1..1 + n_high].copy_from_slice(&high[..n_high]);
    let device = &device[..1 + n_high];
    if dropped > 0 {
        warn!("device memory: {dropped} range(s) above 4 GiB past the kernel's table, not handed out");
    }
    info!(
        "device memory: {:#x}-{:#x}, and {} range(s) above 4 GiB up to 2^{} ({}-bit physical addresses)",
        device[0].start,
        device[0].end,
        n_high,
        features.phys_bits.min(crate::mm::device::MAX_PHYS_BITS),
        features.phys_bits
    );
    crate::entry::set_device_memory(device);
    let made = crate::entry::with_kernel(|k| rootserver::create(k, &image, ranges, device, initrd_range, instance));
    let root = match made {
        Ok(t) => t,
        Err(rootserver::RootError::Elf(e)) => boot_failure(format_args!("root task: invalid ELF: {e}")),
        Err(e) => boot_failure(format_args!("root task: cannot build it: {e}")),
    };
    if let Some(check) = boot.cmdline_value("ozone.check") {
        configure_checker(check, root);
    }
    crate::entry::run_root_task(root)
}

/// The hardware posture options of the command line (docs/hardening.md): `ozone.fpu=lazy|eager`,
/// `ozone.spectre=off|ibpb` and `ozone.kpti=off|on|auto`. An unknown value stops the boot: a mistyped hardening option
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
    let kpti_mode = match boot.cmdline_value("ozone.kpti") {
        None => skim::Mode::Off,
        Some(v) => skim::Mode::parse(v)
            .unwrap_or_else(|| boot_failure(format_args!("unknown value ozone.kpti={v} (expected off, on or auto)"))),
    };
    let skim_pages = if kpti_mode.enabled(features.rdcl_no, features.meltdown_immune_vendor) {
        match kpti::init() {
            Ok(n) => Some(n),
            Err(e) => {
                boot_failure(format_args!("ozone.kpti={}: cannot set up the skim window: {e:?}", kpti_mode.name()))
            }
        }
    } else {
        None
    };
    let layout = KptiLayout { mode: kpti_mode, pages: skim_pages, pcid: features.pcid };
    info!(
        "hardening: fpu={} (state switched {}); address-space switch: {on_switch}; {layout}{}",
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

/// The address-space layout part of the hardening line.
struct KptiLayout {
    mode: skim::Mode,
    /// The trampoline's pages, with the skim window on.
    pages: Option<usize>,
    pcid: bool,
}

impl core::fmt::Display for KptiLayout {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mode = self.mode.name();
        match self.pages {
            None => write!(f, "kpti={mode}: kernel half and direct map mapped in every address space"),
            Some(n) => write!(
                f,
                "kpti={mode}: skim window, user address spaces map {n} kernel pages (the trampoline), CR3 switched on every entry and exit, {}",
                if self.pcid { "no PCID used" } else { "no PCID" }
            ),
        }
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
pub(crate) fn report_boot_cost() {
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
