//! What happens when the kernel itself faults: a full report on the console, then the machine
//! stops with [`ExitCode::KernelFault`].
//!
//! The report gives the vector and its name, the error code, RIP, CR2, every register and a
//! frame-pointer backtrace (the kernel is built with frame pointers). The backtrace only follows
//! frame pointers that lie inside one of the kernel's stacks, so a corrupt chain cannot fault
//! again.

use core::sync::atomic::{AtomicU64, Ordering};

use ozone_abi::ExitCode;
use x86_64::registers::control::Cr2;

use super::trap::TrapFrame;
use super::{gdt, serial};

/// The architectural name of an exception vector.
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range exceeded",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack-segment fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating-point",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating-point",
        20 => "#VE virtualization",
        21 => "#CP control protection",
        _ => "reserved exception",
    }
}

fn cr2() -> u64 {
    Cr2::read_raw()
}

macro_rules! emerg {
    ($($t:tt)*) => { serial::write_fmt_emergency(format_args!($($t)*)) };
}

/// Report a kernel-mode exception and stop the machine.
pub fn kernel_exception(frame: &TrapFrame) -> ! {
    emerg!(
        "\nozone: kernel exception: {} (vector {}) error={:#x} rip={:#018x} cr2={:#018x}\n",
        exception_name(frame.vector),
        frame.vector,
        frame.error_code,
        frame.rip,
        cr2()
    );
    let fault_addr = cr2();
    if gdt::guard_pages().iter().any(|g| (g.as_u64()..g.as_u64() + 4096).contains(&fault_addr)) {
        emerg!("  the fault address is a stack guard page: kernel stack overflow\n");
    }
    dump_registers(frame);
    backtrace(frame.rbp);
    super::power::exit(ExitCode::KernelFault)
}

/// NMIs taken so far.
static NMI_COUNT: AtomicU64 = AtomicU64::new(0);

/// How many NMIs arrived since boot.
pub fn nmi_count() -> u64 {
    NMI_COUNT.load(Ordering::Relaxed)
}

/// A non-maskable interrupt (from the platform: a watchdog, a front-panel button, QEMU's `nmi`):
/// nothing of the running thread's, which continues. It is counted and, when the console is
/// free (an NMI may interrupt a kernel print), reported.
pub fn nmi(frame: &TrapFrame) {
    let n = NMI_COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    let ring = frame.cs & 3;
    let written = super::serial::try_write_fmt(format_args!(
        "ozone: NMI #{n} (in ring {ring} at rip={:#x}): not a fault of the running code; continuing\n",
        frame.rip
    ));
    if !written {
        NMI_UNREPORTED.store(n, Ordering::Relaxed);
    }
}

/// The number of the last NMI that arrived while the console was held (0: none): reported by
/// [`report_deferred_nmi`] on the way out of the kernel.
static NMI_UNREPORTED: AtomicU64 = AtomicU64::new(0);

/// Report an NMI that could not be reported when it came (the console was being written).
/// Called where the kernel holds no lock: before it returns to ring 3 or idles.
#[inline(always)]
pub fn report_deferred_nmi() {
    if NMI_UNREPORTED.load(Ordering::Relaxed) != 0 {
        let n = NMI_UNREPORTED.swap(0, Ordering::Relaxed);
        crate::info!("NMI #{n} arrived while the console was busy: not a fault of the running code; continued");
    }
}

/// IA32_MCG_CAP, IA32_MCG_STATUS and their bits.
const MSR_MCG_STATUS: u32 = 0x17a;
const MCG_STATUS_RIPV: u64 = 1 << 0;
const MCG_STATUS_MCIP: u64 = 1 << 2;

/// A machine check: the hardware reports an error it detected. When the interrupted code can
/// continue (RIPV) the error was contained: it is reported and the code continues; otherwise
/// the machine cannot be trusted and stops, reporting a hardware error (never blaming or
/// suspending the thread that happened to run).
pub fn machine_check(frame: &TrapFrame) {
    // SAFETY: #MC is only delivered with CR4.MCE set on a CPU with the machine-check
    // architecture, which has IA32_MCG_STATUS.
    let status = unsafe { x86_64::registers::model_specific::Msr::new(MSR_MCG_STATUS).read() };
    if status & MCG_STATUS_RIPV != 0 {
        super::serial::try_write_fmt(format_args!(
            "ozone: machine check (recoverable, MCG_STATUS={status:#x}) in ring {} at rip={:#x}; continuing\n",
            frame.cs & 3,
            frame.rip
        ));
        // SAFETY: clearing MCIP says the machine check was handled (a second one while it is
        // set shuts the processor down).
        unsafe { x86_64::registers::model_specific::Msr::new(MSR_MCG_STATUS).write(status & !MCG_STATUS_MCIP) };
        return;
    }
    emerg!(
        "\nozone: machine check: unrecoverable hardware error (MCG_STATUS={status:#x}) in ring {} at rip={:#x}\n",
        frame.cs & 3,
        frame.rip
    );
    super::power::exit(ExitCode::KernelFault)
}

/// Print the saved registers.
pub fn dump_registers(f: &TrapFrame) {
    emerg!("  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n", f.rax, f.rbx, f.rcx, f.rdx);
    emerg!("  rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}\n", f.rsi, f.rdi, f.rbp, f.rsp);
    emerg!("  r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}\n", f.r8, f.r9, f.r10, f.r11);
    emerg!("  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}\n", f.r12, f.r13, f.r14, f.r15);
    emerg!("  cs={:#x} ss={:#x} rflags={:#x}\n", f.cs, f.ss, f.rflags);
}

fn on_kernel_stack(addr: u64, len: u64) -> bool {
    gdt::all_stacks()
        .iter()
        .any(|(bottom, top)| addr >= bottom.as_u64() && addr.checked_add(len).is_some_and(|end| end <= top.as_u64()))
}

/// Follow the frame-pointer chain from `rbp`, printing return addresses.
pub fn backtrace(mut rbp: u64) {
    emerg!("  backtrace:\n");
    for depth in 0..32 {
        if rbp == 0 || !rbp.is_multiple_of(8) || !on_kernel_stack(rbp, 16) {
            break;
        }
        // SAFETY: [rbp, rbp+16) lies inside a mapped kernel stack (checked above).
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            break;
        }
        emerg!("    #{depth:<2} {ret:#018x}\n");
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}

/// The kernel's panic handler: a report in the same style, then stop.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    emerg!("\nozone: kernel panic: {info}\n");
    let rbp: u64;
    // SAFETY: reads the frame pointer register; no memory is touched.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack)) };
    backtrace(rbp);
    super::power::exit(ExitCode::KernelFault)
}
