//! Hostile host tests of the kernel's device support: interrupt lines (issuing lines past the
//! kernel's range or lines the machine lacks, issuing one twice, level-triggered semantics:
//! masked from delivery to `Ack`, never unmasked by an `Ack` on a line with no notification) and
//! device untyped memory above 4 GiB (retyped into frames and untyped without the kernel ever
//! touching the memory, refused as anything else, never read by DebugWrite). Each runs the real
//! syscall layer on the fixture of `tests`, with the invariant checker after every syscall; the
//! fixture's machine records which lines are unmasked.

extern crate std;

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, Syscall};

use super::tests::{Fx, VA, debug_call};
use super::{MAX_IRQS, handle_interrupt};
use crate::object::harness::{ROOT_RADIX, SLOT_IRQ, SLOT_ROOT_COPY, SLOT_U_MAIN};
use crate::object::notification::Notification;
use crate::object::tcb::Tcb;
use crate::object::{Cap, KERNEL_PHYS_OFFSET, mdb};

const DEPTH: u64 = ROOT_RADIX as u64;

/// IRQControl Get of `line` into a fresh slot: the error code and the slot.
fn get(fx: &mut Fx, line: u64) -> (u64, u64) {
    let dest = fx.free_slot();
    (fx.invoke(SLOT_IRQ, inv::IRQ_CONTROL_GET, &[line, dest, DEPTH], &[SLOT_ROOT_COPY]).rax, dest)
}

fn unmasked(fx: &Fx, line: u8) -> bool {
    fx.machine.unmasked.get() & (1 << line) != 0
}

fn word(fx: &Fx, ntfn: u64) -> u64 {
    let Cap::Notification { ptr, .. } = fx.w.slot(ntfn).cap() else { panic!("notification") };
    // SAFETY: the notification is a live object of the world; read only.
    unsafe { (*(ptr as *const Notification)).word }
}

/// The line fires: the machine layer masks it, then the kernel delivers it.
fn fire(fx: &mut Fx, line: u8) {
    assert!(unmasked(fx, line), "a masked line cannot fire");
    fx.machine.unmasked.set(fx.machine.unmasked.get() & !(1 << line));
    handle_interrupt(&mut fx.k, line);
    fx.check("an interrupt");
}

#[test]
fn lines_past_the_range_and_lines_the_machine_lacks_are_refused() {
    let mut fx = Fx::new();
    // Line 30 exists in the kernel's range but no I/O APIC input has it.
    fx.machine.absent_lines.set(1 << 30);
    let msi = crate::interrupts::MAX_LINES as u64;
    for line in [msi, MAX_IRQS as u64, 255, 256, 1 << 32, u64::MAX, 30] {
        let (rax, dest) = get(&mut fx, line);
        assert_eq!(rax, Error::RangeError as u64, "line {line}");
        assert!(fx.w.slot(dest).is_empty(), "nothing issued for line {line}");
    }
    assert!(fx.k.irq_issued.iter().all(|&i| !i));
    // The highest GSI of the range, and a PCI line (GSI >= 16), are issued.
    assert_eq!(get(&mut fx, msi - 1).0, 0);
    let (rax, h) = get(&mut fx, 19);
    assert_eq!(rax, 0);
    assert_eq!(fx.w.slot(h).cap(), Cap::IrqHandler { irq: 19 });
}

#[test]
fn a_line_is_issued_once_until_its_handler_is_deleted() {
    let mut fx = Fx::new();
    let (rax, h) = get(&mut fx, 20);
    assert_eq!(rax, 0);
    let (rax, dest) = get(&mut fx, 20);
    assert_eq!(rax, Error::DeleteFirst as u64);
    assert!(fx.w.slot(dest).is_empty());
    // A copy of the handler is not a second issue; deleting one copy keeps the line issued.
    let copy = fx.free_slot();
    let r =
        fx.invoke(SLOT_ROOT_COPY, inv::CNODE_COPY, &[copy, DEPTH, h, DEPTH, ozone_abi::rights::ALL], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, 0);
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[copy, DEPTH], &[]).rax, 0);
    assert_eq!(get(&mut fx, 20).0, Error::DeleteFirst as u64);
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[h, DEPTH], &[]).rax, 0);
    assert!(!fx.k.irq_issued[20]);
    assert_eq!(get(&mut fx, 20).0, 0, "issued again once its handler is gone");
}

#[test]
fn a_level_triggered_line_is_masked_from_delivery_to_ack() {
    let mut fx = Fx::new();
    let (_, h) = get(&mut fx, 22);
    let ntfn = fx.retype(ObjectType::Notification);
    // Ack before any routing unmasks nothing.
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_ACK, &[], &[]).rax, 0);
    assert!(!unmasked(&fx, 22));
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_SET_NOTIFICATION, &[], &[ntfn]).rax, 0);
    assert!(unmasked(&fx, 22));
    // The device holds the line asserted: one delivery per Ack, the line masked in between.
    for round in 1..=3 {
        fire(&mut fx, 22);
        assert!(!unmasked(&fx, 22), "round {round}: masked until Ack");
        assert_eq!(word(&fx, ntfn), 1 << 22);
        let d = fx.driver();
        assert_eq!(fx.sys(d, Syscall::NbRecv, ntfn, 0, &[], &[]).rax, 0);
        assert_eq!(word(&fx, ntfn), 0);
        assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_ACK, &[], &[]).rax, 0);
        assert!(unmasked(&fx, 22), "round {round}: Ack unmasks");
    }
    // Clear masks; an Ack of the cleared line leaves it masked (no storm of undelivered
    // interrupts); so does a delivery already on its way.
    fire(&mut fx, 22);
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_CLEAR, &[], &[]).rax, 0);
    assert!(!unmasked(&fx, 22));
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_ACK, &[], &[]).rax, 0);
    assert!(!unmasked(&fx, 22), "an Ack of a cleared line unmasked it");
    handle_interrupt(&mut fx.k, 22);
    assert!(!unmasked(&fx, 22));
    // Routed again, then its handler deleted: masked.
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_SET_NOTIFICATION, &[], &[ntfn]).rax, 0);
    assert!(unmasked(&fx, 22));
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[h, DEPTH], &[]).rax, 0);
    assert!(!unmasked(&fx, 22));
    fx.check("the handler's deletion");
}

#[test]
fn a_line_whose_notification_is_deleted_stays_masked_after_it_fires() {
    let mut fx = Fx::new();
    let (_, h) = get(&mut fx, 17);
    let ntfn = fx.retype(ObjectType::Notification);
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_SET_NOTIFICATION, &[], &[ntfn]).rax, 0);
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[ntfn, DEPTH], &[]).rax, 0);
    assert_eq!(fx.k.irq_notification[17], 0);
    fire(&mut fx, 17);
    assert!(!unmasked(&fx, 17));
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_ACK, &[], &[]).rax, 0);
    assert!(!unmasked(&fx, 17), "nothing to deliver to: the line stays masked");
}

/// Physical address of the high device untyped: 512 GiB, which the host tests never map (a
/// kernel access to it would crash the test).
const HIGH: u64 = 0x80_0000_0000;

/// A device untyped of 2^39 bytes at [`HIGH`] in a fresh slot, as the root task gets it.
fn high_device_untyped(fx: &mut Fx) -> u64 {
    let s = fx.free_slot();
    let cap = Cap::Untyped {
        ptr: HIGH + KERNEL_PHYS_OFFSET,
        size_bits: 39,
        free_index: 0,
        dirty_from: 0,
        dirty_top: 0,
        device: true,
    };
    // SAFETY: an empty slot; the memory is no other capability's.
    unsafe { mdb::insert_root_cap(fx.w.slot(s), cap) };
    fx.machine.device.set((HIGH, HIGH + (1 << 39)));
    s
}

#[test]
fn device_untyped_above_4_gib_makes_frames_without_touching_them() {
    let mut fx = Fx::new();
    let ut = high_device_untyped(&mut fx);
    let info = fx.invoke(ut, inv::UNTYPED_GET_INFO, &[], &[]);
    assert_eq!(info.rax, 0);
    assert_eq!(
        (info.mrs[0], info.mrs[2] & inv::UNTYPED_INFO_DEVICE, info.mrs[3]),
        (39, inv::UNTYPED_INFO_DEVICE, HIGH)
    );
    // Anything but frames and untyped is refused (the kernel would have to write it).
    for ty in [ObjectType::Tcb, ObjectType::CNode, ObjectType::Endpoint, ObjectType::Notification, ObjectType::Pml4] {
        let s = fx.free_slot();
        let r = fx.invoke(ut, inv::UNTYPED_RETYPE, &[ty as u64, 4, 0, 0, s, 1], &[SLOT_ROOT_COPY]);
        assert_eq!(r.rax, Error::InvalidArgument as u64, "{ty:?}");
    }
    // Frames (4 KiB and 2 MiB) and a child untyped of 1 GiB, at their physical addresses.
    let f4 = fx.retype_from(ut, ObjectType::Frame4K, 0);
    let f2 = fx.retype_from(ut, ObjectType::Frame2M, 0);
    let child = fx.retype_from(ut, ObjectType::Untyped, 30);
    assert_eq!(fx.invoke(f4, inv::FRAME_GET_ADDRESS, &[], &[]).mrs[0], HIGH);
    assert_eq!(fx.invoke(f2, inv::FRAME_GET_ADDRESS, &[], &[]).mrs[0], HIGH + (1 << 21));
    assert!(matches!(fx.w.slot(child).cap(), Cap::Untyped { device: true, size_bits: 30, .. }));
    let f_child = fx.retype_from(child, ObjectType::Frame4K, 0);
    assert_eq!(fx.invoke(f_child, inv::FRAME_GET_ADDRESS, &[], &[]).mrs[0], HIGH + (1 << 30));
    // Mapped in a thread's address space; DebugWrite from it is refused, never read.
    let (ts, t) = fx.thread();
    fx.allow_debug_output(ts);
    let [pml4, _, _, pt] = fx.address_space(SLOT_U_MAIN);
    assert_eq!(fx.map_frame(f4, pml4, VA), 0);
    // Mapped uncacheable (PCD and PWT), unlike a frame of RAM.
    let ram = fx.retype(ObjectType::Frame4K);
    assert_eq!(fx.map_frame(ram, pml4, VA + 0x1000), 0);
    let pte = |i: usize| {
        // SAFETY: the page table is a live object of the world; entries read only.
        unsafe { *(fx.ptr(pt) as *const u64).add(i) }
    };
    let index = ((VA >> 12) & 511) as usize;
    assert_eq!((pte(index) & 0x18, pte(index + 1) & 0x18), (0x18, 0));
    // SAFETY: `t` is a live TCB of the fixture.
    let dest = unsafe { Tcb::slots_of(t) }.slot(crate::object::tcb::TCB_VSPACE as u64).unwrap();
    mdb::cte_insert(fx.w.slot(pml4).cap(), fx.w.slot(pml4), dest);
    assert_eq!(debug_call(&mut fx, t, Syscall::DebugWrite, VA, 4), Error::InvalidUserBuffer as u64);
    assert_eq!(fx.machine.console.borrow().as_str(), "");
    // As an IPC buffer: refused (the kernel would write it).
    let r = fx.invoke(ts, inv::TCB_SET_IPC_BUFFER, &[VA], &[f4]);
    assert_ne!(r.rax, 0, "a device frame became an IPC buffer");
    // Revoked and retyped again: the reset zeroes nothing either.
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[ut, DEPTH], &[]).rax, 0);
    let again = fx.retype_from(ut, ObjectType::Frame2M, 0);
    assert_eq!(fx.invoke(again, inv::FRAME_GET_ADDRESS, &[], &[]).mrs[0], HIGH);
    fx.check("the last retype");
}

/// IRQControl GetMsi into a fresh slot: the error code, the slot and the answer.
fn get_msi(fx: &mut Fx) -> (u64, u64, [u64; 3]) {
    let dest = fx.free_slot();
    let r = fx.invoke(SLOT_IRQ, inv::IRQ_CONTROL_GET_MSI, &[dest, DEPTH], &[SLOT_ROOT_COPY]);
    (r.rax, dest, [r.mrs[0], r.mrs[1], r.mrs[2]])
}

#[test]
fn msi_lines_are_chosen_by_the_kernel_and_run_out_cleanly() {
    use crate::interrupts::{MAX_LINES, MAX_MSIS};
    let mut fx = Fx::new();
    // Get cannot name an MSI line: only GetMsi issues them.
    let dest = fx.free_slot();
    for line in MAX_LINES as u64..MAX_IRQS as u64 {
        let r = fx.invoke(SLOT_IRQ, inv::IRQ_CONTROL_GET, &[line, dest, DEPTH], &[SLOT_ROOT_COPY]);
        assert_eq!(r.rax, Error::RangeError as u64, "line {line}");
    }
    let mut slots = std::vec::Vec::new();
    for i in 0..MAX_MSIS as u64 {
        let (rax, dest, [line, address, data]) = get_msi(&mut fx);
        assert_eq!(rax, 0);
        assert_eq!((line, address, data), (MAX_LINES as u64 + i, 0xfee0_0000, 0x80 + i));
        assert_eq!(fx.w.slot(dest).cap(), Cap::IrqHandler { irq: line as u8 });
        slots.push(dest);
    }
    let (rax, dest, _) = get_msi(&mut fx);
    assert_eq!(rax, Error::DeleteFirst as u64, "every MSI line is taken");
    assert!(fx.w.slot(dest).is_empty());
    // An occupied destination: refused, nothing issued.
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[slots[5], DEPTH], &[]).rax, 0);
    let r = fx.invoke(SLOT_IRQ, inv::IRQ_CONTROL_GET_MSI, &[slots[6], DEPTH], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, Error::DeleteFirst as u64);
    assert!(!fx.k.irq_issued[MAX_LINES + 5]);
    // The freed line is the one issued next.
    let (rax, _, [line, _, data]) = get_msi(&mut fx);
    assert_eq!((rax, line, data), (0, MAX_LINES as u64 + 5, 0x85));
}

#[test]
fn an_msi_line_is_masked_from_delivery_to_ack() {
    let mut fx = Fx::new();
    let (_, h, [line, ..]) = get_msi(&mut fx);
    let line = line as u8;
    let ntfn = fx.retype(ObjectType::Notification);
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_ACK, &[], &[]).rax, 0);
    assert!(!unmasked(&fx, line), "Ack before routing");
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_SET_NOTIFICATION, &[], &[ntfn]).rax, 0);
    fire(&mut fx, line);
    assert!(!unmasked(&fx, line));
    assert_eq!(word(&fx, ntfn), 1 << (line % 64));
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_ACK, &[], &[]).rax, 0);
    assert!(unmasked(&fx, line));
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_CLEAR, &[], &[]).rax, 0);
    assert!(!unmasked(&fx, line));
    assert_eq!(fx.invoke(h, inv::IRQ_HANDLER_ACK, &[], &[]).rax, 0);
    assert!(!unmasked(&fx, line), "an Ack of a cleared MSI line unmasked it");
}
