//! Segmentation, the TSS and the kernel's stacks.
//!
//! The GDT layout is fixed by `syscall`/`sysret`: kernel code, kernel data, then user data and
//! user code so that `STAR` can name both pairs. The TSS gives ring-0 entries from ring 3 their
//! stack (RSP0) and gives the double-fault, NMI and machine-check handlers stacks of their own
//! (IST1..3), so a kernel stack overflow is reported instead of triple-faulting.
//!
//! Every kernel stack sits in `.bss` right above a guard page that the kernel's page tables leave
//! unmapped (see [`guard_pages`]): running off the end of a stack faults at once.

use core::cell::UnsafeCell;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

pub const PAGE: usize = 4096;
const IST_STACK_SIZE: usize = 16 * 1024;

/// IST slot numbers as the IDT names them (1-based in hardware, 0-based in the TSS array).
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;

/// A stack preceded by a guard page.
#[repr(C, align(4096))]
pub struct GuardedStack<const N: usize> {
    guard: UnsafeCell<[u8; PAGE]>,
    stack: UnsafeCell<[u8; N]>,
}

// SAFETY: the stack memory is only ever used as a CPU stack by the one CPU the kernel runs on;
// Rust code never reads or writes it through this type.
unsafe impl<const N: usize> Sync for GuardedStack<N> {}

impl<const N: usize> Default for GuardedStack<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> GuardedStack<N> {
    pub const fn new() -> Self {
        GuardedStack { guard: UnsafeCell::new([0; PAGE]), stack: UnsafeCell::new([0; N]) }
    }
    pub fn guard_page(&self) -> VirtAddr {
        VirtAddr::from_ptr(self.guard.get())
    }
    pub fn bottom(&self) -> VirtAddr {
        VirtAddr::from_ptr(self.stack.get())
    }
    pub fn top(&self) -> VirtAddr {
        self.bottom() + N as u64
    }
}

static DOUBLE_FAULT_STACK: GuardedStack<IST_STACK_SIZE> = GuardedStack::new();
static NMI_STACK: GuardedStack<IST_STACK_SIZE> = GuardedStack::new();
static MACHINE_CHECK_STACK: GuardedStack<IST_STACK_SIZE> = GuardedStack::new();

unsafe extern "C" {
    /// The boot stack (set up by the boot trampoline) is also the kernel stack that traps
    /// from ring 3 land on. A guard page lies right below it.
    static BOOT_STACK_GUARD: u8;
    static BOOT_STACK_BOTTOM: u8;
    static BOOT_STACK_TOP: u8;
}

/// The kernel stack: `[bottom, top)`.
pub fn kernel_stack() -> (VirtAddr, VirtAddr) {
    (VirtAddr::from_ptr(&raw const BOOT_STACK_BOTTOM), VirtAddr::from_ptr(&raw const BOOT_STACK_TOP))
}

/// Every stack the kernel may run on, as `[bottom, top)` pairs (used to bound backtraces).
pub fn all_stacks() -> [(VirtAddr, VirtAddr); 4] {
    [
        kernel_stack(),
        (DOUBLE_FAULT_STACK.bottom(), DOUBLE_FAULT_STACK.top()),
        (NMI_STACK.bottom(), NMI_STACK.top()),
        (MACHINE_CHECK_STACK.bottom(), MACHINE_CHECK_STACK.top()),
    ]
}

/// The IST stacks (double fault, NMI, machine check) as `[bottom, top)`, without their guard
/// pages: the skim window maps them in every address space (`kpti.rs`).
pub fn ist_stacks() -> [(VirtAddr, VirtAddr); 3] {
    [
        (DOUBLE_FAULT_STACK.bottom(), DOUBLE_FAULT_STACK.top()),
        (NMI_STACK.bottom(), NMI_STACK.top()),
        (MACHINE_CHECK_STACK.bottom(), MACHINE_CHECK_STACK.top()),
    ]
}

/// A copy of the TSS (its IST pointers), for the skim window's own TSS (`kpti.rs`).
pub fn tss_copy() -> TaskStateSegment {
    // SAFETY: a read of the TSS, which is written only at boot and by `set_kernel_entry_stack`,
    // on this CPU with interrupts disabled (so not during this read).
    unsafe { *TSS.0.get() }
}

/// The guard pages the kernel's page tables must leave unmapped.
pub fn guard_pages() -> [VirtAddr; 4] {
    [
        VirtAddr::from_ptr(&raw const BOOT_STACK_GUARD),
        DOUBLE_FAULT_STACK.guard_page(),
        NMI_STACK.guard_page(),
        MACHINE_CHECK_STACK.guard_page(),
    ]
}

#[derive(Clone, Copy, Debug)]
pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_data: SegmentSelector,
    pub user_code: SegmentSelector,
    pub tss: SegmentSelector,
}

/// The TSS, written at boot and then only its RSP0 (by [`set_kernel_entry_stack`]).
struct Tss(UnsafeCell<TaskStateSegment>);

// SAFETY: one CPU; written only with interrupts disabled (boot, and the kernel, which is not
// preemptible); the CPU reads it on ring transitions.
unsafe impl Sync for Tss {}

static TSS: Tss = Tss(UnsafeCell::new(TaskStateSegment::new()));
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

/// Load the GDT and TSS and reload every segment register.
pub fn init() {
    // SAFETY: boot, interrupts disabled, before the TSS is loaded: nothing else refers to it.
    let tss: &'static TaskStateSegment = unsafe {
        let tss = &mut *TSS.0.get();
        tss.privilege_stack_table[0] = kernel_stack().1;
        tss.interrupt_stack_table[(IST_DOUBLE_FAULT - 1) as usize] = DOUBLE_FAULT_STACK.top();
        tss.interrupt_stack_table[(IST_NMI - 1) as usize] = NMI_STACK.top();
        tss.interrupt_stack_table[(IST_MACHINE_CHECK - 1) as usize] = MACHINE_CHECK_STACK.top();
        &*TSS.0.get()
    };
    let (gdt, sel) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let kernel_code = gdt.append(Descriptor::kernel_code_segment());
        let kernel_data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { kernel_code, kernel_data, user_data, user_code, tss })
    });
    gdt.load();
    // SAFETY: the selectors name the descriptors just loaded; the data selectors are valid for
    // every data segment register; FS/GS bases are set through MSRs, not descriptors.
    unsafe {
        CS::set_reg(sel.kernel_code);
        SS::set_reg(sel.kernel_data);
        DS::set_reg(sel.kernel_data);
        ES::set_reg(sel.kernel_data);
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
        load_tss(sel.tss);
    }
}

/// Where the CPU pushes the interrupt frame when ring 3 is interrupted: the top of the current
/// thread's saved-register area (see `trap::UserContext`). With the skim window on
/// (`ozone.kpti`), the CPU uses `kpti.rs`'s TSS, whose RSP0 is the entry stack for good: this
/// one is still written, and not read.
pub fn set_kernel_entry_stack(top: VirtAddr) {
    // SAFETY: one 8-byte store into the TSS with interrupts disabled (unaligned: the TSS is
    // packed, the field is only 4-byte aligned); the CPU reads RSP0 on the next ring-3 -> ring-0
    // transition.
    unsafe { core::ptr::addr_of_mut!((*TSS.0.get()).privilege_stack_table[0]).write_unaligned(top) };
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// The selectors (after [`init`]).
pub fn selectors() -> Selectors {
    GDT.get().expect("gdt::init runs first during boot").1
}
