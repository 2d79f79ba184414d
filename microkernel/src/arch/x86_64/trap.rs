//! Where the kernel is entered from an exception, an interrupt or a syscall.
//!
//! Every one of the 256 vectors has a 16-byte entry stub (generated below with `.rept`) that
//! pushes a zero error code where the CPU does not push one, then its vector number, and jumps to
//! one common path that saves the general-purpose registers into a [`TrapFrame`] and calls
//! [`trap_dispatch`]. The `syscall` entry (see `syscall.rs`) builds the same frame with
//! [`SYSCALL_VECTOR`], so the kernel has a single way in and a single way out (`trap_return`,
//! which ends in `iretq`).
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
pub const SYSCALL_VECTOR: u64 = 0x100;
/// First vector used by devices (the legacy PIC is remapped here and masked).
pub const PIC_BASE_VECTOR: u8 = 0x20;
/// The LAPIC timer.
pub const TIMER_VECTOR: u8 = 0x30;
/// The LAPIC spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// The registers saved on every kernel entry, in stack order (lowest address first).
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU (or by the syscall entry in the same shape).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// Did this entry come from ring 3?
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

global_asm!(
    r#"
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

    .balign 16
    .global trap_common
trap_common:
    push %rax
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
    cld
    /* Clear RFLAGS.AC: an interrupt does not, and ring 3 may have set it (SMAP). */
    pushfq
    andl $0xfffbffff, (%rsp)
    popfq
    mov %rsp, %rdi
    xor %ebp, %ebp
    call {dispatch}

    .global trap_return
trap_return:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq
    "#,
    dispatch = sym trap_dispatch,
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stubs: u8;
    static trap_return: u8;
}

/// The IDT: 256 interrupt gates.
#[repr(C, align(16))]
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
    let cs = gdt::selectors().kernel_code.0;
    let base = VirtAddr::from_ptr(&raw const trap_stubs).as_u64();
    // SAFETY: runs once on the boot CPU with interrupts disabled, before any other reference to
    // the table exists.
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
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<[[u64; 2]; 256]>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.0.get()),
    };
    // SAFETY: the table is 'static and every gate points at a valid stub.
    unsafe { lidt(&ptr) };
}

/// Load an empty IDT: the next exception becomes a triple fault (the `triple-fault` boot test).
pub fn load_empty_idt() {
    let ptr = DescriptorTablePointer { limit: 0, base: VirtAddr::zero() };
    // SAFETY: deliberately makes every exception fatal; used only by the boot test hook.
    unsafe { lidt(&ptr) };
}

/// Address of the common return path (restores a [`TrapFrame`] and `iretq`s).
pub fn trap_return_addr() -> u64 {
    VirtAddr::from_ptr(&raw const trap_return).as_u64()
}

/// Every kernel entry ends up here with the saved registers.
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        SYSCALL_VECTOR => crate::kmain::syscall(frame),
        v if v < 32 => {
            if frame.from_user() {
                crate::kmain::user_fault(frame)
            } else {
                super::fault::kernel_exception(frame)
            }
        }
        v if v == TIMER_VECTOR as u64 => super::apic::timer_interrupt(),
        v if v == SPURIOUS_VECTOR as u64 => {}
        v if (PIC_BASE_VECTOR as u64..PIC_BASE_VECTOR as u64 + 16).contains(&v) => {
            // A masked legacy PIC can still deliver a spurious IRQ 7 / 15; nothing to do.
            crate::debug!("spurious legacy PIC interrupt, vector {v:#x}");
        }
        v => {
            crate::warn!("unexpected interrupt vector {v:#x}");
            super::apic::eoi();
        }
    }
}

global_asm!(
    r#"
    .section .bss.trap, "aw", @nobits
    .balign 8
    .global USER_ENTRY_TSC
USER_ENTRY_TSC:
    .skip 8

    .section .text.trap, "ax"
    /* enter_user_asm(frame: *const TrapFrame on the kernel stack) */
    .global enter_user_asm
enter_user_asm:
    mov %rdi, %rsp
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, USER_ENTRY_TSC(%rip)
    jmp trap_return
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn enter_user_asm(frame: *const TrapFrame) -> !;
    /// TSC read by the last [`enter_user`] just before it returned to ring 3.
    pub static USER_ENTRY_TSC: u64;
}

/// Start running ring-3 code described by `frame` (whose `cs`/`ss` must be user selectors).
/// The kernel stack is reset: nothing on it survives.
pub fn enter_user(frame: &TrapFrame) -> ! {
    assert!(frame.from_user(), "enter_user needs a ring-3 frame");
    let top = gdt::kernel_stack().1.as_u64();
    let at = (top - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
    // SAFETY: `at` is the top of the kernel stack, which is reset here: the current Rust frames
    // below it are abandoned (this function never returns), and the copy is done before the
    // stack pointer moves there. `trap_return` pops exactly one TrapFrame and `iretq`s.
    unsafe {
        // The frame may itself live near the stack top: copy through a temporary.
        let copy = frame.clone();
        core::ptr::write(at, copy);
        enter_user_asm(at)
    }
}
