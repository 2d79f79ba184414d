//! The skim window (boot option `ozone.kpti=off|on|auto`): user address spaces that do not map
//! the kernel, against Meltdown (rogue data cache load). docs/hardening.md has the design and
//! the figures.
//!
//! With the option on, the kernel runs on its own PML4 (the one `paging::init_kernel_space`
//! builds: the image, the direct map, the MMIO window) and every user PML4 maps, in its top half,
//! only the **trampoline**: one PML4 slot (the image's, 511) whose tables map, at the kernel's
//! own addresses, the pages the CPU or the entry code touch before the kernel's CR3 is loaded and
//! after the user's is: the entry and exit code (`.text.kpti`, below), the IDT, a GDT and TSS of
//! their own, a per-CPU entry stack (`TSS.RSP0` points at it for good), the NMI, machine-check and
//! double-fault IST stacks, and a per-CPU data page ([`PerCpu`]). [`init`] builds those tables
//! once, in a PML4 of their own, the *template*: it becomes `Kernel::kernel_pml4`, so every new
//! user PML4 copies its top half from it (`vspace::init_pml4`) and a thread without a VSpace
//! runs on it; and it checks them with [`crate::mm::skim::check_top_half`] before the first
//! thread runs.
//!
//! * `syscall` (`kpti_syscall_entry`) parks the user RSP in the per-CPU page, loads the
//!   kernel's CR3 through RSP (the only free register), and goes on as the ordinary entry.
//! * An interrupt or exception from ring 3 lands on the entry stack; its stub saves RAX there,
//!   loads the kernel's CR3 and copies the frame (RAX, vector, error code, and the CPU's five
//!   words) into the current thread's register area, then saves the rest there as the ordinary
//!   entry does. From ring 0 the kernel's CR3 is loaded already: the ordinary path.
//! * NMI, machine check and double fault come on their IST stacks with either CR3 loaded: they
//!   save CR3, load the kernel's and put the saved one back on the way out ("paranoid" entry).
//! * The exits restore the registers from the thread's area, then load the user CR3 kept in the
//!   per-CPU page and leave touching only trampoline pages: `sysretq` with the user RSP from the
//!   per-CPU page, `iretq` from a frame copied onto the entry stack.
//!
//! The ordinary paths keep their cost: the gates and `LSTAR` are pointed at the stubs here, the
//! GDT and TSS here are loaded instead of the ordinary ones (whose RSP0 the thread switch keeps
//! writing, unread), and the first instruction of each ordinary exit is overwritten with a jump
//! to the exit here (`patch_exit`), so with the option off nothing tests it on the way in or
//! out. An address-space switch records the thread's PML4 in the per-CPU page instead of loading
//! it (`entry::load_address_space`, through the same test the Spectre option uses).
//!
//! No PCID: every entry and exit writes CR3, which flushes the TLB (the kernel's mappings are not
//! global either: CR4.PGE stays off). That also flushes every user translation at each exit, so
//! an unmap in a space that is not loaded needs no flush of its own.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::VirtAddr;
use x86_64::instructions::tables::{lgdt, load_tss};
use x86_64::registers::model_specific::LStar;
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::{Descriptor, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use super::trap::{SYSCALL_VECTOR, TrapFrame};
use super::{gdt, paging, trap};
use crate::mm::skim::{self, TrampolinePage};

const PAGE: u64 = 4096;

/// What the entry and exit code keep where the user's page tables reach it. One CPU runs the
/// kernel, so there is one.
#[repr(C, align(4096))]
pub struct PerCpu {
    /// CR3 of the kernel's own PML4 (loaded on every entry).
    kernel_cr3: u64,
    /// CR3 of the address space the current thread runs in (loaded on every exit).
    user_cr3: u64,
    /// The user RSP between `syscall` and the switch to the thread's register area, and between
    /// the restore of the registers and `sysretq`.
    user_rsp: u64,
    _rest: [u64; 509],
}

struct Shared<T>(UnsafeCell<T>);
// SAFETY: one CPU runs the kernel, with interrupts disabled; these pages are written by `init`
// before the first thread runs, then only by the entry and exit code (the CPU's own accesses)
// and by `set_user_cr3`, which runs in the kernel with interrupts disabled. An NMI does not
// touch them but to read the kernel CR3.
unsafe impl<T> Sync for Shared<T> {}

static PERCPU: Shared<PerCpu> =
    Shared(UnsafeCell::new(PerCpu { kernel_cr3: 0, user_cr3: 0, user_rsp: 0, _rest: [0; 509] }));

/// Where the CPU pushes an interrupt's frame when ring 3 is interrupted (`TSS.RSP0`).
#[repr(C, align(4096))]
struct EntryStack([u8; PAGE as usize]);
static ENTRY_STACK: Shared<EntryStack> = Shared(UnsafeCell::new(EntryStack([0; PAGE as usize])));

/// The GDT (same layout as `gdt.rs`'s, with the TSS below) and TSS loaded with the option on: in
/// a page of their own, mapped read-only in the trampoline.
#[repr(C, align(4096))]
struct CpuTables {
    gdt: [u64; 8],
    tss: TaskStateSegment,
}
static CPU_TABLES: Shared<CpuTables> = Shared(UnsafeCell::new(CpuTables { gdt: [0; 8], tss: TaskStateSegment::new() }));

/// The skim window is in use.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Kernel address of the template PML4 (0 when off).
static TEMPLATE: AtomicU64 = AtomicU64::new(0);

global_asm!(
    gpr_macros!(),
    r#"
    .section .text.kpti, "ax"
    .balign 4096
    .global kpti_text_start
kpti_text_start:

    /* The 256 vector stubs, as trap.rs's. */
    .balign 16
    .global kpti_trap_stubs
kpti_trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    push $0
    .endif
    push $vec
    jmp kpti_trap_common
    .set vec, vec + 1
    .endr

    /* rsp -> vector, error code, rip, cs, rflags, rsp, ss */
    .balign 16
kpti_trap_common:
    cmpq $2, (%rsp)
    je kpti_paranoid
    cmpq $18, (%rsp)
    je kpti_paranoid
    cmpq $8, (%rsp)
    je kpti_paranoid
    testb $3, 24(%rsp)
    /* From ring 0 the kernel's CR3 and stack are in use already. */
    jz trap_common
    /* From ring 3, on the entry stack. RFLAGS.AC cleared (SMAP), DF too. */
    cld
    pushfq
    andl $0xfffbffff, (%rsp)
    popfq
    push %rax
    mov {percpu}(%rip), %rax
    mov %rax, %cr3
    /* The kernel is mapped: copy the frame into the thread's register area and save the rest. */
    mov %rsp, %rax
    mov SYSCALL_CONTEXT_TOP(%rip), %rsp
    pushq 56(%rax)
    pushq 48(%rax)
    pushq 40(%rax)
    pushq 32(%rax)
    pushq 24(%rax)
    pushq 16(%rax)
    pushq 8(%rax)
    pushq (%rax)
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    xor %ebp, %ebp
    movabs ${stack_top}, %rsp
    call {dispatch_user}
    ud2

    /*
     * NMI, machine check, double fault: on an IST stack, from either ring, with either CR3
     * loaded. The CR3 found is kept in r12 (callee-saved) and put back on the way out.
     */
kpti_paranoid:
    PUSH_GPRS
    cld
    pushfq
    andl $0xfffbffff, (%rsp)
    popfq
    mov %cr3, %r12
    mov {percpu}(%rip), %rax
    mov %rax, %cr3
    mov %rsp, %rdi
    xor %ebp, %ebp
    call {dispatch_machine}
    mov %r12, %cr3
    POP_GPRS
    /* The IST stack is mapped in every address space: the 15 registers just restored (a ring-3
       thread's, or the kernel's) do not stay on it. */
    movq $0, -8(%rsp)
    movq $0, -16(%rsp)
    movq $0, -24(%rsp)
    movq $0, -32(%rsp)
    movq $0, -40(%rsp)
    movq $0, -48(%rsp)
    movq $0, -56(%rsp)
    movq $0, -64(%rsp)
    movq $0, -72(%rsp)
    movq $0, -80(%rsp)
    movq $0, -88(%rsp)
    movq $0, -96(%rsp)
    movq $0, -104(%rsp)
    movq $0, -112(%rsp)
    movq $0, -120(%rsp)
    add $16, %rsp
    iretq

    .balign 16
    .global kpti_syscall_entry
kpti_syscall_entry:
    mov %rsp, {percpu}+16(%rip)
    mov {percpu}(%rip), %rsp
    mov %rsp, %cr3
    mov SYSCALL_CONTEXT_TOP(%rip), %rsp
    push ${user_ss}
    push {percpu}+16(%rip)
    push %r11
    push ${user_cs}
    push %rcx
    push $0
    push ${vector}
    PUSH_GPRS
    mov %rsp, %rdi
    movabs ${stack_top}, %rsp
    xor %ebp, %ebp
    call *{handler_off}(%rdi)
    ud2

    /* kpti_return_via_sysret(ctx): as trap.rs's return_via_sysret, CR3 switched last. */
    .balign 16
    .global kpti_return_via_sysret
kpti_return_via_sysret:
    mov {rsp_off}(%rdi), %rax
    mov %rax, {percpu}+16(%rip)
    mov %rdi, %rsp
    POP_GPRS
    mov 16(%rsp), %rcx
    mov %rcx, %r11
    shr $47, %r11
    jnz 3f
    mov 32(%rsp), %r11
    and ${rflags_mask}, %r11
    or $0x202, %r11
    mov {percpu}+8(%rip), %rsp
    mov %rsp, %cr3
    mov {percpu}+16(%rip), %rsp
    sysretq
3:
    /* A non-canonical RIP (only a kernel bug could leave one): 0 instead, by `iretq`. */
    movq $0, 16(%rsp)
    andq ${rflags_mask}, 32(%rsp)
    orq $0x202, 32(%rsp)
    lea -{vector_off}(%rsp), %rdi
    jmp kpti_return_via_iret

    /*
     * kpti_return_via_iret(ctx): the iretq frame and RAX go onto the entry stack; the other
     * registers come straight from the thread's area, RDI last; then the user CR3, RAX, iretq.
     */
    .balign 16
    .global kpti_return_via_iret
kpti_return_via_iret:
    lea {entry_stack}+{page}(%rip), %rsp
    pushq {ss_off}(%rdi)
    pushq {rsp_off}(%rdi)
    pushq {rflags_off}(%rdi)
    pushq {cs_off}(%rdi)
    pushq {rip_off}(%rdi)
    pushq {rax_off}(%rdi)
    mov 0(%rdi), %r15
    mov 8(%rdi), %r14
    mov 16(%rdi), %r13
    mov 24(%rdi), %r12
    mov 32(%rdi), %r11
    mov 40(%rdi), %r10
    mov 48(%rdi), %r9
    mov 56(%rdi), %r8
    mov 64(%rdi), %rbp
    mov 80(%rdi), %rsi
    mov 88(%rdi), %rdx
    mov 96(%rdi), %rcx
    mov 104(%rdi), %rbx
    mov 72(%rdi), %rdi
    mov {percpu}+8(%rip), %rax
    mov %rax, %cr3
    pop %rax
    iretq

    .balign 4096
    .global kpti_text_end
kpti_text_end:
    "#,
    gpr_macros_end!(),
    percpu = sym PERCPU,
    entry_stack = sym ENTRY_STACK,
    page = const PAGE,
    stack_top = sym BOOT_STACK_TOP,
    dispatch_user = sym trap::trap_dispatch_user,
    dispatch_machine = sym trap::trap_dispatch_machine,
    handler_off = const crate::object::tcb::SYSCALL_HANDLER_FROM_REGS,
    user_ss = const super::syscall::user_selectors().1,
    user_cs = const super::syscall::user_selectors().0,
    vector = const SYSCALL_VECTOR,
    rflags_mask = const crate::object::tcb::USER_RFLAGS,
    vector_off = const core::mem::offset_of!(TrapFrame, vector),
    rip_off = const core::mem::offset_of!(TrapFrame, rip),
    cs_off = const core::mem::offset_of!(TrapFrame, cs),
    rflags_off = const core::mem::offset_of!(TrapFrame, rflags),
    rsp_off = const core::mem::offset_of!(TrapFrame, rsp),
    ss_off = const core::mem::offset_of!(TrapFrame, ss),
    rax_off = const core::mem::offset_of!(TrapFrame, rax),
    options(att_syntax)
);

unsafe extern "C" {
    static kpti_text_start: u8;
    static kpti_text_end: u8;
    static kpti_trap_stubs: u8;
    static kpti_syscall_entry: u8;
    static kpti_return_via_sysret: u8;
    static kpti_return_via_iret: u8;
    static BOOT_STACK_TOP: u8;
}

// The register-restoring moves of `kpti_return_via_iret` name the offsets of `TrapFrame`.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(TrapFrame, r15) == 0 && offset_of!(TrapFrame, r14) == 8 && offset_of!(TrapFrame, r13) == 16);
    assert!(offset_of!(TrapFrame, r12) == 24 && offset_of!(TrapFrame, r11) == 32 && offset_of!(TrapFrame, r10) == 40);
    assert!(offset_of!(TrapFrame, r9) == 48 && offset_of!(TrapFrame, r8) == 56 && offset_of!(TrapFrame, rbp) == 64);
    assert!(offset_of!(TrapFrame, rdi) == 72 && offset_of!(TrapFrame, rsi) == 80 && offset_of!(TrapFrame, rdx) == 88);
    assert!(offset_of!(TrapFrame, rcx) == 96 && offset_of!(TrapFrame, rbx) == 104 && offset_of!(TrapFrame, rax) == 112);
    assert!(offset_of!(TrapFrame, vector) == 120);
    assert!(core::mem::size_of::<PerCpu>() == PAGE as usize);
    assert!(core::mem::size_of::<CpuTables>() == PAGE as usize);
};

/// The skim window is in use.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Kernel address of the PML4 user PML4s copy their top half from, with the option on.
pub fn template() -> Option<u64> {
    match TEMPLATE.load(Ordering::Relaxed) {
        0 => None,
        t => Some(t),
    }
}

/// Make the address space at physical `pml4` the one the next exit to ring 3 loads; false if it
/// already was.
#[inline(always)]
pub fn set_user_cr3(pml4: u64) -> bool {
    let p = PERCPU.0.get();
    // SAFETY: the per-CPU page is a static; the kernel runs with interrupts disabled, and the exit
    // code reads the field only after the kernel is done (see `Shared`).
    unsafe {
        if (*p).user_cr3 == pml4 {
            return false;
        }
        (*p).user_cr3 = pml4;
        // Another address space runs next: what the last one left where every address space
        // maps it goes — its user RSP from the `syscall` path, and the words its last interrupt
        // or exception entry pushed on the entry stack (the hardware frame, error code, vector
        // and the scratch register: the top 64 bytes; 128 are cleared).
        (*p).user_rsp = 0;
    }
    // SAFETY: the entry stack is a static page; the kernel runs on its own stack now (the entry
    // copied the frame into the TCB before anything else), and the next exit writes its frame
    // after this.
    unsafe { core::ptr::write_bytes((ENTRY_STACK.0.get() as *mut u8).add(PAGE as usize - 128), 0, 128) };
    true
}

/// The physical PML4 the next exit to ring 3 loads (0 when off).
pub fn user_cr3() -> u64 {
    // SAFETY: a read of a static the kernel alone writes, with interrupts disabled.
    unsafe { (*PERCPU.0.get()).user_cr3 }
}

/// Why [`init`] could not turn the option on.
#[derive(Debug)]
pub enum InitError {
    Paging(paging::PagingError),
    /// An ordinary exit does not start with the instructions `patch_exit` replaces.
    UnexpectedCode(&'static str),
    /// The trampoline's tables are not what they must be.
    Layout(skim::LayoutError),
    /// More trampoline pages than [`MAX_PAGES`].
    TooManyPages,
}

/// The most pages the trampoline may map (18 under QEMU: two of code, the IDT, the GDT and TSS,
/// the entry stack, the per-CPU page, twelve of IST stacks).
pub const MAX_PAGES: usize = 32;

/// The trampoline's pages, in a fixed array (the boot path allocates nothing from the heap).
struct PageList {
    pages: [TrampolinePage; MAX_PAGES],
    len: usize,
    overflow: bool,
}

impl PageList {
    fn add(&mut self, start: u64, end: u64, writable: bool, executable: bool, what: &'static str) {
        let mut v = start;
        while v < end {
            match self.pages.get_mut(self.len) {
                Some(slot) => *slot = TrampolinePage { vaddr: v, writable, executable, what },
                None => self.overflow = true,
            }
            self.len = (self.len + 1).min(MAX_PAGES);
            v += PAGE;
        }
    }

    fn as_slice(&self) -> &[TrampolinePage] {
        &self.pages[..self.len]
    }
}

/// What the trampoline maps, with the access each page gets.
fn trampoline_pages() -> Result<PageList, InitError> {
    let none = TrampolinePage { vaddr: 0, writable: false, executable: false, what: "" };
    let mut list = PageList { pages: [none; MAX_PAGES], len: 0, overflow: false };
    let mut add = |start: u64, end: u64, writable: bool, executable: bool, what: &'static str| {
        list.add(start, end, writable, executable, what)
    };
    let text = (&raw const kpti_text_start) as u64;
    add(text, (&raw const kpti_text_end) as u64, false, true, "entry and exit code");
    let idt = trap::idt_address();
    add(idt, idt + PAGE, false, false, "IDT");
    let tables = CPU_TABLES.0.get() as u64;
    add(tables, tables + PAGE, false, false, "GDT and TSS");
    let stack = ENTRY_STACK.0.get() as u64;
    add(stack, stack + PAGE, true, false, "entry stack");
    let percpu = PERCPU.0.get() as u64;
    add(percpu, percpu + PAGE, true, false, "per-CPU data");
    for (bottom, top) in gdt::ist_stacks() {
        add(bottom.as_u64(), top.as_u64(), true, false, "IST stack");
    }
    if list.overflow { Err(InitError::TooManyPages) } else { Ok(list) }
}

/// Turn the skim window on: at boot, after the kernel's page tables, the GDT, the IDT and the
/// `syscall` MSRs are set up, before the first thread runs (interrupts disabled). Returns the
/// number of pages the trampoline maps.
pub fn init() -> Result<usize, InitError> {
    let list = trampoline_pages()?;
    let pages = list.as_slice();
    let template = paging::build_trampoline(pages).map_err(InitError::Paging)?;
    // Check the layout before anything depends on it: exactly the listed pages, none in the direct
    // map or the kernel heap.
    let forbidden = [(paging::PHYS_MAP_BASE, paging::MMIO_BASE), crate::mm::heap::range()];
    let n = check_template(template, pages, &forbidden)?;

    let kernel_cr3 = paging::kernel_pml4_kaddr() - paging::PHYS_MAP_BASE;
    let template_cr3 = template - paging::PHYS_MAP_BASE;
    // SAFETY: boot, one CPU, interrupts disabled: nothing else uses the per-CPU page yet.
    unsafe {
        let p = &mut *PERCPU.0.get();
        p.kernel_cr3 = kernel_cr3;
        p.user_cr3 = template_cr3;
    }
    load_tables();
    // Entries from here on come through the stubs here.
    trap::set_stubs((&raw const kpti_trap_stubs) as u64);
    LStar::write(VirtAddr::from_ptr(&raw const kpti_syscall_entry));
    // Exits too.
    patch_exit(trap::exit_address(trap::Exit::Sysret), (&raw const kpti_return_via_sysret) as u64, "sysret")?;
    patch_exit(trap::exit_address(trap::Exit::Iret), (&raw const kpti_return_via_iret) as u64, "iret")?;
    // The kernel's mappings carry the G bit (`paging.rs`); a loader may leave CR4.PGE set
    // (Limine leaves CR4 undefined but PAE), and then kernel translations would survive the CR3
    // write of every exit. Clearing PGE makes G ignored and flushes global entries too.
    // SAFETY: only changes which TLB entries survive a CR3 write.
    unsafe { x86_64::registers::control::Cr4::update(|f| f.remove(x86_64::registers::control::Cr4Flags::PAGE_GLOBAL)) };
    TEMPLATE.store(template, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    super::spectre::set_skim_window();
    Ok(n)
}

/// Check the template PML4 (a kernel address) against the trampoline's page list.
fn check_template(template: u64, pages: &[TrampolinePage], forbidden: &[(u64, u64)]) -> Result<usize, InitError> {
    let read = |phys: u64| -> Option<&[u64; 512]> {
        // Only page-table frames of the kernel pool are read: the trampoline's, just built.
        (phys.is_multiple_of(PAGE) && phys < paging::direct_map_top()).then(|| {
            // SAFETY: `phys` is mapped by the direct map (below its top), 4 KiB-aligned, and
            // read only, while nothing writes the tables (boot, one CPU).
            unsafe { &*((phys + paging::PHYS_MAP_BASE) as *const [u64; 512]) }
        })
    };
    // SAFETY: the template is a page-table frame just built, in the direct map.
    let pml4 = unsafe { &*(template as *const [u64; 512]) };
    let slot = skim::pml4_slot((&raw const kpti_text_start) as u64);
    skim::check_top_half(pml4, slot, pages, forbidden, &read).map_err(InitError::Layout)
}

/// Load the GDT and TSS of this module: the same descriptors as `gdt.rs`'s, and a TSS with the
/// same IST stacks whose RSP0 is the entry stack.
fn load_tables() {
    let sel = gdt::selectors();
    let raw = |d: Descriptor| match d {
        Descriptor::UserSegment(v) => (v, 0),
        Descriptor::SystemSegment(lo, hi) => (lo, hi),
    };
    let tables = CPU_TABLES.0.get();
    // SAFETY: boot, one CPU, interrupts disabled: nothing else refers to the tables yet (the
    // ordinary GDT and TSS are loaded until `lgdt`/`ltr` below).
    unsafe {
        let t = &mut *tables;
        t.tss = gdt::tss_copy();
        t.tss.privilege_stack_table[0] = VirtAddr::new(ENTRY_STACK.0.get() as u64 + PAGE);
    }
    // SAFETY: the TSS is a static, so it outlives the descriptor.
    let tss = unsafe { Descriptor::tss_segment_unchecked(&raw const (*tables).tss) };
    let entries = [
        (sel.kernel_code, Descriptor::kernel_code_segment()),
        (sel.kernel_data, Descriptor::kernel_data_segment()),
        (sel.user_data, Descriptor::user_data_segment()),
        (sel.user_code, Descriptor::user_code_segment()),
        (sel.tss, tss),
    ];
    // SAFETY: as above: boot, one CPU, the tables not yet loaded.
    let gdt_entries = unsafe { &mut (*tables).gdt };
    for (selector, d) in entries {
        let i = selector.index() as usize;
        let (lo, hi) = raw(d);
        gdt_entries[i] = lo;
        if matches!(d, Descriptor::SystemSegment(..)) {
            gdt_entries[i + 1] = hi;
        }
    }
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<[u64; 8]>() - 1) as u16,
        base: VirtAddr::new(gdt_entries.as_ptr() as u64),
    };
    // SAFETY: the new GDT has every descriptor of the one loaded, at the same indices (so the
    // segment registers stay valid), is a static, and is only read from now on (the CPU sets the
    // TSS busy bit during `ltr`, in the kernel's address space, where the page is writable).
    unsafe { lgdt(&ptr) };
    // SAFETY: the selector names an available 64-bit TSS descriptor in the GDT just loaded.
    unsafe { load_tss(SegmentSelector(sel.tss.0)) };
}

/// Overwrite the first five bytes of the ordinary exit at `at` — `mov %rdi, %rsp` and
/// `pop %r15`, which start both exits — with `jmp target` (through the direct map: the text is
/// read-only in the image's own mapping).
fn patch_exit(at: u64, target: u64, what: &'static str) -> Result<(), InitError> {
    const EXPECTED: [u8; 5] = [0x48, 0x89, 0xfc, 0x41, 0x5f];
    let phys = paging::kernel_translate(at).ok_or(InitError::UnexpectedCode(what))?;
    let alias = (phys + paging::PHYS_MAP_BASE) as *mut [u8; 5];
    // SAFETY: the five bytes at `at` are kernel text (the exit's first instructions), mapped
    // through the direct map at `alias`; reading them has no side effect.
    let current = unsafe { alias.read_unaligned() };
    if current != EXPECTED {
        return Err(InitError::UnexpectedCode(what));
    }
    let rel = (target as i64 - (at as i64 + 5)) as i32;
    let r = rel.to_le_bytes();
    // SAFETY: rewrites two whole instructions at the start of a function no code jumps into past
    // its first byte, on the one CPU, before any thread ran (nothing executes them now); `jmp
    // rel32` is five bytes, the two instructions replaced are five bytes.
    unsafe { alias.write_unaligned([0xe9, r[0], r[1], r[2], r[3]]) };
    // Serialise, so the patched code is fetched afresh (cross-modifying code).
    let _ = core::arch::x86_64::__cpuid(0);
    Ok(())
}
