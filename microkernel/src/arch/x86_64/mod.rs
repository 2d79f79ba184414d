//! The x86_64 machine layer: boot entry, CPU setup, traps, paging, interrupt controllers,
//! syscall entry and power control. Everything that needs `unsafe` hardware access lives here.

pub mod acpi;
pub mod apic;
pub mod boot32;
pub mod cpu;
pub mod fault;
pub mod fpu;
pub mod gdt;
pub mod paging;
pub mod power;
pub mod serial;
pub mod syscall;
pub mod trap;
