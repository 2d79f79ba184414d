//! Where the kernel is entered: the three boot doors' entry points.
//!
//! * **PVH** (QEMU `-kernel`): the ELF note `XEN_ELFNOTE_PHYS32_ENTRY` names `pvh_start32`,
//!   entered in 32-bit protected mode, paging off, `ebx` = physical address of `hvm_start_info`.
//! * **Multiboot2** (GRUB): the header below names `mb2_start32` through its entry-address tag,
//!   entered in 32-bit protected mode, paging off, `eax` = magic, `ebx` = information structure.
//! * **Limine**: the ELF entry point `limine_entry`, entered in 64-bit mode on Limine's page
//!   tables and stack.
//!
//! PVH and multiboot2 share one trampoline: record the TSC and the loader's registers, build
//! early page tables (the first 4 GiB identity-mapped, and the first 1 GiB again at the kernel's
//! link address in the top 2 GiB), enable long mode and jump to [`crate::kmain::boot32_main`] on
//! the boot stack. All three doors record the TSC as their very first instruction so the kernel
//! can report its boot cost.
//!
//! Nothing here is Rust: this is the code that makes Rust possible. The 32-bit code runs at
//! physical addresses, so every absolute reference subtracts the link offset.

use core::arch::global_asm;

/// Which 32-bit door was taken (written by the trampoline).
pub const DOOR_PVH: u32 = 1;
/// Which 32-bit door was taken (written by the trampoline).
pub const DOOR_MULTIBOOT2: u32 = 2;

/// Values the trampoline records for Rust. Written once in 32-bit mode before any Rust runs.
#[repr(C)]
pub struct Boot32Scratch {
    /// [`DOOR_PVH`] or [`DOOR_MULTIBOOT2`].
    pub door: u32,
    /// `eax` at entry (the multiboot2 magic).
    pub eax: u32,
    /// `ebx` at entry (physical address of the loader's information structure).
    pub ebx: u32,
    pub _pad: u32,
}

unsafe extern "C" {
    /// Filled by the trampoline.
    pub static BOOT32_SCRATCH: Boot32Scratch;
    /// TSC at the first instruction of the kernel, whichever door was taken.
    pub static ENTRY_TSC: u64;
}

/// Size of the stack every door switches to before running Rust.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

global_asm!(
    r#"
    .set KERNEL_VMA, 0xffffffff80000000

    /* ---- multiboot2 header (in the first 32 KiB of the image) ---- */
    .section .multiboot2_header, "a"
    .balign 8
mb2_header_start:
    .long 0xe85250d6                      /* magic */
    .long 0                               /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header_start))
    .balign 8
    /* entry address tag: start in 32-bit mode at the physical address of mb2_start32 */
    .short 3
    .short 0
    .long 12
    .long mb2_start32 - KERNEL_VMA
    .balign 8
    /* end tag */
    .short 0
    .short 0
    .long 8
mb2_header_end:

    /* ---- PVH entry note ---- */
    .section .note.Xen, "a"
    .balign 4
    .long 4                               /* name size ("Xen\0") */
    .long 4                               /* descriptor size */
    .long 18                              /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32 - KERNEL_VMA
    .balign 4

    /* ---- data the trampoline fills ---- */
    .section .data.boot32, "aw"
    .balign 8
    .global BOOT32_SCRATCH
BOOT32_SCRATCH:
    .long 0, 0, 0, 0
    .global ENTRY_TSC
ENTRY_TSC:
    .quad 0

    /* A flat GDT good enough to reach 64-bit mode; the kernel loads its own later. */
    .section .rodata.boot32, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff              /* 0x08: 64-bit code, ring 0 */
    .quad 0x00cf92000000ffff              /* 0x10: data, ring 0 */
boot_gdt_end:
    .balign 8
boot_gdt_ptr32:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt - KERNEL_VMA

    .section .bss.boot32, "aw", @nobits
    .balign 4096
    /* PML4, low PDPT, high PDPT, four page directories: 7 pages. */
boot_page_tables:
    .skip 4096 * 7
    .balign 4096
    .global BOOT_STACK_GUARD
BOOT_STACK_GUARD:
    .skip 4096
    .global BOOT_STACK_BOTTOM
BOOT_STACK_BOTTOM:
    .skip {stack_size}
    .global BOOT_STACK_TOP
BOOT_STACK_TOP:

    /* ---- 32-bit trampoline ---- */
    .section .text.boot32, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    mov %eax, %esi
    rdtsc
    mov %eax, (ENTRY_TSC - KERNEL_VMA)
    mov %edx, (ENTRY_TSC - KERNEL_VMA + 4)
    movl ${door_pvh}, (BOOT32_SCRATCH - KERNEL_VMA)
    jmp boot32_common

    .global mb2_start32
mb2_start32:
    cli
    mov %eax, %esi
    rdtsc
    mov %eax, (ENTRY_TSC - KERNEL_VMA)
    mov %edx, (ENTRY_TSC - KERNEL_VMA + 4)
    movl ${door_mb2}, (BOOT32_SCRATCH - KERNEL_VMA)

boot32_common:
    cld
    mov %esi, (BOOT32_SCRATCH - KERNEL_VMA + 4)
    mov %ebx, (BOOT32_SCRATCH - KERNEL_VMA + 8)

    /* zero the 7 table pages */
    mov $(boot_page_tables - KERNEL_VMA), %edi
    xor %eax, %eax
    mov $(4096 * 7 / 4), %ecx
    rep stosl

    /* PML4[0] -> low PDPT, PML4[511] -> high PDPT */
    mov $(boot_page_tables - KERNEL_VMA), %edi
    lea 0x1003(%edi), %eax
    mov %eax, (%edi)
    lea 0x2003(%edi), %eax
    mov %eax, 511*8(%edi)
    /* low PDPT[0..4] -> PD0..PD3 (identity map of 4 GiB) */
    lea 0x3003(%edi), %eax
    mov %eax, 0x1000(%edi)
    lea 0x4003(%edi), %eax
    mov %eax, 0x1008(%edi)
    lea 0x5003(%edi), %eax
    mov %eax, 0x1010(%edi)
    lea 0x6003(%edi), %eax
    mov %eax, 0x1018(%edi)
    /* high PDPT[510] -> PD0 (the first GiB at KERNEL_VMA) */
    lea 0x3003(%edi), %eax
    mov %eax, 0x2000+510*8(%edi)
    /* PD0..PD3: 2048 entries of 2 MiB, present | writable | large */
    lea 0x3000(%edi), %ebx
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%ebx,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax
    mov %eax, 4(%ebx,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b

    /* CR4.PAE, CR3, EFER.LME, CR0.PG|WP */
    mov %cr4, %eax
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov %edi, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | (1 << 16) | 1), %eax
    mov %eax, %cr0

    lgdt (boot_gdt_ptr32 - KERNEL_VMA)
    ljmp $0x08, $(boot64_low - KERNEL_VMA)

    .code64
boot64_low:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $BOOT_STACK_TOP, %rsp
    xor %ebp, %ebp
    movabs ${boot32_main}, %rax
    call *%rax
2:
    hlt
    jmp 2b

    /* ---- Limine entry: 64-bit mode, Limine's page tables ---- */
    .section .text, "ax"
    .global limine_entry
limine_entry:
    cli
    rdtsc
    mov %eax, ENTRY_TSC(%rip)
    mov %edx, ENTRY_TSC+4(%rip)
    lea BOOT_STACK_TOP(%rip), %rsp
    xor %ebp, %ebp
    call {limine_main}
3:
    hlt
    jmp 3b
    "#,
    door_pvh = const DOOR_PVH,
    door_mb2 = const DOOR_MULTIBOOT2,
    stack_size = const BOOT_STACK_SIZE,
    boot32_main = sym crate::kmain::boot32_main,
    limine_main = sym crate::kmain::limine_main,
    options(att_syntax)
);
