//! The x86_64 machine layer: boot entry, CPU setup, traps, paging, interrupt controllers,
//! syscall entry and power control. Everything that needs `unsafe` hardware access lives here.

/// Assembler macros shared by the kernel entry and exit paths (`trap.rs`, `syscall.rs`): saving
/// and restoring the general-purpose registers in `TrapFrame` order. Each `global_asm!` block that
/// uses them starts with this text and ends with [`gpr_macros_end`], so the macros are defined
/// once per block whichever object file the blocks land in.
macro_rules! gpr_macros {
    () => {
        r#"
    .macro PUSH_GPRS
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
    .endm
    .macro POP_GPRS
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
    .endm
"#
    };
}

/// Forget the macros of [`gpr_macros`] at the end of a block.
macro_rules! gpr_macros_end {
    () => {
        "\n    .purgem PUSH_GPRS\n    .purgem POP_GPRS\n"
    };
}

pub mod acpi;
pub mod apic;
pub mod boot32;
pub mod cpu;
pub mod fault;
pub mod fpu;
pub mod gdt;
pub mod kpti;
pub mod paging;
pub mod power;
pub mod serial;
pub mod spectre;
pub mod syscall;
pub mod trap;
