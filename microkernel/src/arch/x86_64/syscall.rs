//! Where the kernel is entered from userspace by `syscall`.
//!
//! The entry stub saves the caller's registers straight into the current thread's TCB: it builds
//! there the same [`TrapFrame`] an interrupt from ring 3 would (user RIP from `rcx`, RFLAGS from
//! `r11`, vector [`SYSCALL_VECTOR`]), at `SYSCALL_CONTEXT_TOP`, which the trap layer points at the
//! current thread's register area whenever it changes ([`set_entry_context_top`]). It then
//! switches to the kernel stack and calls the thread's own handler, whose address its TCB holds
//! beside the registers just saved (`Tcb::syscall_handler`: `trap::syscall_dispatch`, or the
//! traced copy for a traced thread, so that tracing costs an untraced thread nothing):
//! `entry::syscall` decides, and `entry::resume_user` leaves.
//!
//! The IPC fastpath (`api/fastpath.rs`, after seL4's) is the first thing `entry::syscall` tries:
//! a Call to a server already waiting on the endpoint, or a ReplyRecv whose caller waits for the
//! reply on an endpoint with no sender queued; at most the four register words, no capabilities,
//! the syscall allowed by the thread's profile, nobody more important ready. It moves the words,
//! makes the other thread current in one straight line and returns with `sysretq`
//! (`trap::return_after_syscall`) without passing the scheduler. Everything else takes the
//! general path, `api::handle_syscall`. A thread that entered by `syscall` leaves by `sysretq`
//! unless the kernel has rewritten its saved registers since (then `iretq`).
//!
//! `SFMASK` clears IF, TF, DF, AC and NT on entry: the kernel runs with interrupts off and SMAP
//! enforced from the first instruction. Only one CPU runs the kernel, so the user stack pointer
//! is parked in a plain static while the stack is switched.
//!
//! [`TrapFrame`]: super::trap::TrapFrame

use core::arch::global_asm;

use x86_64::VirtAddr;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;

use super::gdt;
use super::trap::SYSCALL_VECTOR;

global_asm!(
    gpr_macros!(),
    r#"
    .section .bss.syscall, "aw", @nobits
    .balign 8
syscall_user_rsp:
    .skip 8
    .global SYSCALL_CONTEXT_TOP
SYSCALL_CONTEXT_TOP:
    .skip 8

    .section .text.syscall, "ax"
    .balign 16
    .global syscall_entry
syscall_entry:
    /* Save the registers straight into the current thread's context. */
    mov %rsp, syscall_user_rsp(%rip)
    mov SYSCALL_CONTEXT_TOP(%rip), %rsp
    push ${user_ss}
    push syscall_user_rsp(%rip)
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
    "#,
    gpr_macros_end!(),
    stack_top = sym BOOT_STACK_TOP,
    user_ss = const USER_SS,
    user_cs = const USER_CS,
    vector = const SYSCALL_VECTOR,
    handler_off = const crate::object::tcb::SYSCALL_HANDLER_FROM_REGS,
    options(att_syntax)
);

unsafe extern "C" {
    static syscall_entry: u8;
    static BOOT_STACK_TOP: u8;
    static mut SYSCALL_CONTEXT_TOP: u64;
}

/// Where the next `syscall` saves the caller's registers (top of its context).
pub fn set_entry_context_top(top: u64) {
    // SAFETY: one CPU, interrupts disabled in the kernel; read only by the entry stub.
    unsafe { (&raw mut SYSCALL_CONTEXT_TOP).write(top) };
}

/// User selectors with RPL 3, as the GDT in `gdt.rs` lays them out.
const USER_SS: u64 = 0x18 | 3;
const USER_CS: u64 = 0x20 | 3;

/// Program the `syscall` MSRs.
pub fn init() {
    let sel = gdt::selectors();
    debug_assert_eq!(sel.user_data.0 as u64, USER_SS);
    debug_assert_eq!(sel.user_code.0 as u64, USER_CS);
    Star::write(sel.user_code, sel.user_data, sel.kernel_code, sel.kernel_data)
        .expect("the GDT is laid out for syscall/sysret");
    LStar::write(VirtAddr::from_ptr(&raw const syscall_entry));
    SFMask::write(
        RFlags::INTERRUPT_FLAG
            | RFlags::TRAP_FLAG
            | RFlags::DIRECTION_FLAG
            | RFlags::ALIGNMENT_CHECK
            | RFlags::NESTED_TASK,
    );
    // SAFETY: enabling `syscall` once LSTAR/STAR/SFMASK are valid.
    unsafe { Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS)) };
}

/// The selectors and RFLAGS a thread starts ring 3 with.
pub const fn user_selectors() -> (u64, u64) {
    (USER_CS, USER_SS)
}
