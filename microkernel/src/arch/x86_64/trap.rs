//! Where the kernel is entered from an exception, an interrupt or a syscall.
//!
//! Every one of the 256 vectors has a 16-byte entry stub (generated below with `.rept`) that
//! pushes a zero error code where the CPU does not push one, then its vector number, and jumps to
//! one common path that saves the general-purpose registers into a [`TrapFrame`] and calls
//! `trap_dispatch_user` or `trap_dispatch_kernel` (NMI, machine check and double fault go to
//! `trap_dispatch_machine` on their own IST stacks and return from there). The `syscall` entry
//! (see `syscall.rs`) builds the same frame with [`SYSCALL_VECTOR`]. Every return to ring 3
//! goes through [`return_to_user`]: `sysretq` for a context the syscall entry saved, `iretq`
//! otherwise, each checking that RIP is canonical and sanitising RFLAGS.
//!
//! The IDT is a flat array of interrupt gates written here rather than with the `x86_64` crate's
//! `InterruptDescriptorTable`, whose typed entries are built around the nightly-only
//! `x86-interrupt` ABI; with uniform naked stubs a plain gate array is simpler and clearer.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

use super::gdt;

/// The vector number the syscall entry records in its [`TrapFrame`] (not an IDT vector).
pub const SYSCALL_VECTOR: u64 = crate::object::tcb::SYSCALL_ENTRY;
/// First vector used by devices (the legacy PIC is remapped here and masked).
pub const PIC_BASE_VECTOR: u8 = 0x20;
/// The LAPIC timer.
pub const TIMER_VECTOR: u8 = 0x30;
/// The LAPIC spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// The registers saved on every kernel entry, in stack order (lowest address first). From
/// ring 3 they are saved straight into the current thread's TCB.
pub use crate::object::tcb::Registers as TrapFrame;

global_asm!(
    gpr_macros!(),
    r#"
    /* Clear RFLAGS.AC through a word of the current stack. */
    .macro CLEAR_AC
    pushfq
    andl $0xfffbffff, (%rsp)
    popfq
    .endm

    .section .text.trap, "ax"
    .balign 16
    .global trap_stubs
trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    push $0
    .endif
    push $vec
    jmp trap_common
    .set vec, vec + 1
    .endr

    /*
     * From ring 3 the CPU pushed the interrupt frame at RSP0, the top of the current thread's
     * UserContext, so the registers land in the thread's context. From ring 0 (a kernel fault,
     * or a timer tick while the kernel waits with `hlt`) everything is on the kernel stack.
     */
    .balign 16
    .global trap_common
trap_common:
    PUSH_GPRS
    cld
    mov %rsp, %rdi
    xor %ebp, %ebp
    /*
     * NMI and machine check arrive on their own IST stacks, from ring 3 or ring 0, at any
     * instruction: they are the machine's, not the running thread's. Their frame stays on the
     * IST stack and they return straight to what they interrupted. A double fault (IST too) is
     * the kernel's and fatal, whichever ring it came from.
     */
    cmpq $2, {vector_offset}(%rsp)
    je 2f
    cmpq $18, {vector_offset}(%rsp)
    je 2f
    cmpq $8, {vector_offset}(%rsp)
    je 2f
    testb $3, {cs_offset}(%rsp)
    jz 1f
    /*
     * From ring 3 the frame is the thread's register area in its TCB: nothing may be pushed
     * below it (that is the TCB's last capability slot). RFLAGS.AC is cleared (an interrupt
     * does not clear it, and ring 3 may have set it: SMAP) only on the kernel stack, through a
     * word of that stack.
     */
    movabs ${stack_top}, %rsp
    CLEAR_AC
    call {dispatch_user}
    ud2
1:
    CLEAR_AC
    call {dispatch_kernel}
    jmp iret_from_frame
2:
    CLEAR_AC
    call {dispatch_machine}
    jmp iret_from_frame

    /*
     * return_via_iret(ctx: *const TrapFrame) -> !
     * Its first five bytes (`mov %rdi, %rsp; pop %r15`) are replaced by a jump when the skim
     * window is on (`kpti.rs`), so nothing jumps into them: the kernel's own returns have their
     * own copy below.
     */
    .global return_via_iret
return_via_iret:
    mov %rdi, %rsp
    POP_GPRS
    add $16, %rsp
    iretq
iret_from_frame:
    POP_GPRS
    add $16, %rsp
    iretq

    /*
     * return_via_sysret(ctx: *const TrapFrame) -> !
     * For a context saved by `syscall`. Starts with `mov %rdi, %rsp; pop %r15` (five bytes,
     * replaced by a jump when the skim window is on, `kpti.rs`). Its RIP is checked here (`sysretq` to a non-canonical
     * RIP faults in ring 0 on Intel): rcx and r11 are
     * clobbered by the syscall ABI, so they carry RIP and RFLAGS back. RFLAGS is sanitised here
     * as on the `iretq` exit: only the bits a thread may control, IF set (never IOPL, NT, RF, VM).
     */
    .global return_via_sysret
return_via_sysret:
    mov %rdi, %rsp
    POP_GPRS
    mov 16(%rsp), %rcx
    mov %rcx, %r11
    shr $47, %r11
    jnz 3f
    mov 32(%rsp), %r11
    and ${rflags_mask}, %r11
    or $0x202, %r11
    mov 40(%rsp), %rsp
    sysretq
3:
    /* A non-canonical RIP (only a kernel bug could leave one): 0 instead, by `iretq`. */
    movq $0, 16(%rsp)
    andq ${rflags_mask}, 32(%rsp)
    orq $0x202, 32(%rsp)
    add $16, %rsp
    iretq

    .section .bss.trap, "aw", @nobits
    .balign 8
    .global USER_ENTRY_TSC
USER_ENTRY_TSC:
    .skip 8
    .purgem CLEAR_AC
    "#,
    gpr_macros_end!(),
    cs_offset = const core::mem::offset_of!(TrapFrame, cs),
    vector_offset = const core::mem::offset_of!(TrapFrame, vector),
    dispatch_machine = sym trap_dispatch_machine,
    rflags_mask = const USER_RFLAGS_MASK,
    stack_top = sym BOOT_STACK_TOP,
    dispatch_user = sym trap_dispatch_user,
    dispatch_kernel = sym trap_dispatch_kernel,
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stubs: u8;
    static BOOT_STACK_TOP: u8;
    fn return_via_iret(ctx: *const TrapFrame) -> !;
    fn return_via_sysret(ctx: *const TrapFrame) -> !;
    /// TSC read by the first return to ring 3 (the boot-cost measurement).
    pub static mut USER_ENTRY_TSC: u64;
}

/// The IDT: 256 interrupt gates, exactly one page (the skim window maps it on its own).
#[repr(C, align(4096))]
struct Idt(UnsafeCell<[[u64; 2]; 256]>);

// SAFETY: written only by `init` on the single boot CPU before interrupts are enabled.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([[0; 2]; 256]));

/// An interrupt gate (interrupts disabled on entry), DPL 0, present.
fn gate(handler: u64, selector: u16, ist: u8) -> [u64; 2] {
    let low = (handler & 0xffff)
        | ((selector as u64) << 16)
        | (((ist & 7) as u64) << 32)
        | (0x8e << 40)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// Fill and load the IDT.
pub fn init() {
    set_stubs(VirtAddr::from_ptr(&raw const trap_stubs).as_u64());
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<[[u64; 2]; 256]>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.0.get()),
    };
    // SAFETY: the table is 'static and every gate points at a valid stub.
    unsafe { lidt(&ptr) };
}

/// Point the 256 gates at the 16-byte stubs from `base` on (this file's, or the skim window's in
/// `kpti.rs`, which follow the same layout).
pub fn set_stubs(base: u64) {
    let cs = gdt::selectors().kernel_code.0;
    // SAFETY: boot, on the one CPU with interrupts disabled: no other reference to the table
    // exists, and no interrupt reads a gate while it is rewritten.
    let table = unsafe { &mut *IDT.0.get() };
    for (v, entry) in table.iter_mut().enumerate() {
        let ist = match v {
            8 => gdt::IST_DOUBLE_FAULT,
            2 => gdt::IST_NMI,
            18 => gdt::IST_MACHINE_CHECK,
            _ => 0,
        };
        *entry = gate(base + 16 * v as u64, cs, ist);
    }
}

/// The IDT's address (one page).
pub fn idt_address() -> u64 {
    IDT.0.get() as u64
}

/// The two exits to ring 3.
#[derive(Clone, Copy, Debug)]
pub enum Exit {
    Sysret,
    Iret,
}

/// Where an exit's code starts (`kpti.rs` redirects it).
pub fn exit_address(exit: Exit) -> u64 {
    match exit {
        Exit::Sysret => return_via_sysret as *const () as u64,
        Exit::Iret => return_via_iret as *const () as u64,
    }
}

/// Load an empty IDT: the next exception becomes a triple fault (the `triple-fault` boot test).
pub fn load_empty_idt() {
    let ptr = DescriptorTablePointer { limit: 0, base: VirtAddr::zero() };
    // SAFETY: deliberately makes every exception fatal; used only by the boot test hook.
    unsafe { lidt(&ptr) };
}

/// An entry from ring 0: a kernel fault (fatal) or an interrupt while the kernel waits.
extern "C" fn trap_dispatch_kernel(frame: &mut TrapFrame) {
    match frame.vector {
        v if v < 32 => super::fault::kernel_exception(frame),
        v => interrupt(v),
    }
}

/// An NMI or a machine check, from either ring, on its IST stack: handled by the machine layer,
/// and the interrupted code (a thread in ring 3, or the kernel) continues unchanged. A double
/// fault (also on an IST stack, from either ring) is a kernel failure: reported, the machine
/// stops.
pub(super) extern "C" fn trap_dispatch_machine(frame: &mut TrapFrame) {
    match frame.vector {
        2 => super::fault::nmi(frame),
        8 => super::fault::kernel_exception(frame),
        _ => super::fault::machine_check(frame),
    }
}

/// An entry from ring 3 (exception or interrupt; syscalls come through `syscall_dispatch`).
/// `ctx` is the current thread's saved context, inside its TCB; the kernel runs on its own
/// stack. A raw pointer: the kernel reaches the same registers through the TCB while it works.
pub(super) extern "C" fn trap_dispatch_user(ctx: *mut TrapFrame) -> ! {
    // SAFETY: the entry stub passes the current thread's saved context, just written; one read.
    let vector = unsafe { (&raw const (*ctx).vector).read() };
    match vector {
        // Device not available: the lazily switched FPU (see `fpu.rs`).
        7 => crate::entry::fpu_trap(),
        // SAFETY: `ctx` is the current thread's saved context.
        v if v < 32 => unsafe { crate::entry::user_fault(ctx) },
        v => interrupt(v),
    }
    crate::entry::resume_user()
}

/// The `syscall` entry lands here, with the caller's registers saved in its context, when the
/// caller is not traced (the entry calls the thread's [`Tcb::syscall_handler`]).
///
/// [`Tcb::syscall_handler`]: crate::object::tcb::Tcb::syscall_handler
extern "C" fn syscall_dispatch(ctx: *mut TrapFrame) -> ! {
    // SAFETY: the syscall entry passes the current thread's saved context.
    unsafe { crate::entry::syscall::<false>(ctx) };
    crate::entry::resume_user()
}

/// The same for a traced caller: the syscall path's traced copy, which writes the thread's
/// records (`api/fastpath.rs`).
extern "C" fn syscall_dispatch_traced(ctx: *mut TrapFrame) -> ! {
    // SAFETY: as above.
    unsafe { crate::entry::syscall::<true>(ctx) };
    crate::entry::resume_user()
}

/// The address of the code the `syscall` entry calls for a thread traced or not
/// ([`crate::object::tcb::syscall_handler`]).
pub fn syscall_handler(traced: bool) -> u64 {
    let f: extern "C" fn(*mut TrapFrame) -> ! = if traced { syscall_dispatch_traced } else { syscall_dispatch };
    f as usize as u64
}

fn interrupt(vector: u64) {
    match vector {
        v if v == TIMER_VECTOR as u64 => {
            super::apic::timer_interrupt();
            crate::object::trace::set_tick(super::apic::ticks());
            crate::entry::timer_tick();
        }
        v if v == SPURIOUS_VECTOR as u64 => {}
        v if (PIC_BASE_VECTOR as u64..PIC_BASE_VECTOR as u64 + 16).contains(&v) => {
            // A masked legacy PIC can still deliver a spurious IRQ 7 / 15; nothing to do.
            crate::debug!("spurious legacy PIC interrupt, vector {v:#x}");
        }
        v if (super::apic::IRQ_BASE_VECTOR as u64
            ..super::apic::IRQ_BASE_VECTOR as u64 + crate::interrupts::MAX_LINES as u64)
            .contains(&v) =>
        {
            let irq = (v - super::apic::IRQ_BASE_VECTOR as u64) as u8;
            // Masked until its handler acknowledges it, and before the EOI: a level-triggered
            // line still asserted does not fire again.
            super::apic::ioapic_set(irq, true);
            super::apic::eoi();
            crate::entry::device_interrupt(irq);
        }
        v if (super::apic::MSI_BASE_VECTOR as u64
            ..super::apic::MSI_BASE_VECTOR as u64 + crate::interrupts::MAX_MSIS as u64)
            .contains(&v) =>
        {
            // Masked (by the kernel: the device cannot be) until its handler acknowledges it.
            let line = super::apic::msi_arrived((v - super::apic::MSI_BASE_VECTOR as u64) as usize);
            super::apic::eoi();
            if let Some(line) = line {
                crate::entry::device_interrupt(line);
            }
        }
        v => {
            crate::warn!("unexpected interrupt vector {v:#x}");
            super::apic::eoi();
        }
    }
}

/// The saved registers of the thread that runs next in ring 3 (null before the first one).
static CURRENT_CONTEXT: core::sync::atomic::AtomicPtr<TrapFrame> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// The context the next return to ring 3 restores.
#[inline(always)]
pub fn current_context() -> *mut TrapFrame {
    CURRENT_CONTEXT.load(core::sync::atomic::Ordering::Relaxed)
}

/// Make `ctx` the context the next return to ring 3 restores and the next entry from ring 3
/// saves into.
///
/// # Safety
/// `ctx` must stay valid (not moved, not freed) for as long as it is current, and be a TCB's
/// `regs`: the `syscall` entry calls the handler the TCB holds at
/// [`SYSCALL_HANDLER_FROM_REGS`](crate::object::tcb::SYSCALL_HANDLER_FROM_REGS) from it.
pub unsafe fn set_current_context(ctx: *mut TrapFrame) {
    CURRENT_CONTEXT.store(ctx, core::sync::atomic::Ordering::Relaxed);
    let top = ctx as u64 + core::mem::size_of::<TrapFrame>() as u64;
    gdt::set_kernel_entry_stack(VirtAddr::new(top));
    super::syscall::set_entry_context_top(top);
}

/// Resume the current thread in ring 3: `sysretq` when it entered by `syscall` (and its return
/// address is a user address, so `sysretq` cannot fault in ring 0), `iretq` otherwise
/// (interrupted, faulted, or registers written by the kernel). Both exits sanitise: RFLAGS keeps
/// only the bits a thread may control, the selectors are the user ones, and a non-canonical RIP
/// (which only a kernel bug could leave: every write of a user RIP checks it) becomes 0,
/// so the thread faults in ring 3 rather than the kernel faulting on `iretq`/`sysretq`.
pub fn return_to_user() -> ! {
    let ctx = CURRENT_CONTEXT.load(core::sync::atomic::Ordering::Relaxed);
    assert!(!ctx.is_null(), "return to ring 3 with no current thread");
    // SAFETY: `set_current_context` guarantees the pointer is valid; the kernel stack is
    // abandoned here (every entry from ring 3 starts it afresh).
    unsafe {
        let c = &mut *ctx;
        if !is_canonical_user(c.rip) {
            c.rip = 0;
        }
        if c.vector == SYSCALL_VECTOR {
            return_via_sysret(ctx)
        }
        let (cs, ss) = super::syscall::user_selectors();
        c.cs = cs;
        c.ss = ss;
        c.rflags = (c.rflags & USER_RFLAGS_MASK) | 0x202;
        return_via_iret(ctx)
    }
}

/// Resume the current thread after a fastpath: straight to `sysretq` when its context was saved
/// by the syscall entry and its RIP is a user address (always, unless the kernel rewrote them);
/// otherwise the general exit.
#[inline(always)]
pub fn return_after_syscall() -> ! {
    let ctx = CURRENT_CONTEXT.load(core::sync::atomic::Ordering::Relaxed);
    // SAFETY: set by `set_current_context`, valid while current.
    if unsafe { (*ctx).vector } == SYSCALL_VECTOR {
        // SAFETY: a context saved by the syscall entry (`return_via_sysret` checks its RIP).
        unsafe { return_via_sysret(ctx) }
    }
    return_to_user()
}

/// In the lower canonical half (a RIP `sysretq`/`iretq` can return to without faulting in ring 0).
const fn is_canonical_user(addr: u64) -> bool {
    addr >> 47 == 0
}

/// RFLAGS bits a thread may control (the same mask WriteRegisters applies).
const USER_RFLAGS_MASK: u64 = crate::object::tcb::USER_RFLAGS;

/// Enter ring 3 for the first time in the current context, recording the TSC for the boot-cost
/// report.
pub fn enter_user_first() -> ! {
    // SAFETY: a single store to a kernel static before ring 3 runs.
    unsafe { (&raw mut USER_ENTRY_TSC).write(super::cpu::rdtsc()) };
    return_to_user()
}
