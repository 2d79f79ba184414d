//! Host tests of the syscall layer: syscalls from threads whose CSpace is the fuzzing harness's
//! test [`World`] (root CNode of 64 slots, untypeds in slots 1–3, a copy of the root CNode in
//! slot 5), through [`handle_syscall`] and the fastpaths, with a machine that does nothing. They
//! cover what needs the whole layer: syscall profiles (recording, denial, the denied-operation
//! fault, the fastpaths' check) and Untyped GetInfo.

extern crate std;

use std::boxed::Box;
use std::format;
use std::vec::Vec;

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, IpcBuffer, MessageInfo, Syscall, fault, profile};

use super::{Kernel, MAX_IRQS, Platform, fastpath, handle_syscall};
use crate::object::asid::AsidTable;
use crate::object::endpoint::{EP_IDLE, EP_RECV, Endpoint};
use crate::object::harness::{ROOT_RADIX, SLOT_IRQ, SLOT_ROOT_COPY, SLOT_U_DEV, SLOT_U_MAIN, SLOT_U_SMALL, World};
use crate::object::tcb::{Fault, TCB_CSPACE, Tcb, ThreadState};
use crate::object::{Cap, mdb};
use crate::sched::Scheduler;

/// The machine of the host tests: it does nothing, and records what the kernel asked of it that
/// tests look at.
#[derive(Default)]
pub(super) struct NoMachine {
    /// The address space the kernel last asked the CPU to use.
    pub(super) space: core::cell::Cell<u64>,
    /// What DebugWrite printed.
    pub(super) console: core::cell::RefCell<String>,
    /// The physical range the machine calls device memory.
    pub(super) device: core::cell::Cell<(u64, u64)>,
    /// ThreadExit calls: (TCB, status).
    pub(super) exits: core::cell::RefCell<Vec<(u64, u64)>>,
    /// Interrupt lines the machine does not have (bit n: GSI n); every other line below
    /// `MAX_IRQS` exists.
    pub(super) absent_lines: core::cell::Cell<u64>,
    /// Interrupt lines the machine has unmasked (bit n: line n); all are masked at first.
    pub(super) unmasked: core::cell::Cell<u128>,
}

impl Platform for NoMachine {
    fn flush_tlb(&self, _pml4: u64, _vaddr: u64) {}
    fn port_in(&self, _port: u16, _size: u8) -> u32 {
        0
    }
    fn port_out(&self, _port: u16, _size: u8, _value: u32) {}
    fn irq_line(&self, irq: u8) -> bool {
        irq < 64 && self.absent_lines.get() & (1 << irq) == 0
    }
    fn msi_message(&self, irq: u8) -> Option<(u64, u64)> {
        crate::interrupts::is_msi(u64::from(irq)).then(|| (0xfee0_0000, 0x80 + u64::from(irq) - 64))
    }
    fn irq_enable(&self, irq: u8, enable: bool) {
        let bit = 1u128 << (irq % 128);
        self.unmasked.set(if enable { self.unmasked.get() | bit } else { self.unmasked.get() & !bit });
    }
    fn irq_ack(&self, irq: u8) {
        self.unmasked.set(self.unmasked.get() | 1 << (irq % 128));
    }
    fn set_tls_base(&self, _base: u64) {}
    fn vspace_deleted(&self, _pml4: u64) {}
    fn set_vspace(&self, pml4: u64) {
        self.space.set(pml4);
    }
    fn kernel_port(&self, first: u16, last: u16) -> bool {
        // The test machine's own port: 0x20.
        first <= 0x20 && 0x20 <= last
    }
    fn device_memory(&self, phys: u64) -> bool {
        let (start, end) = self.device.get();
        (start..end).contains(&phys)
    }
    fn console_write(&self, text: &str) {
        self.console.borrow_mut().push_str(text);
    }
    fn thread_exited(&self, tcb: u64, status: u64) {
        self.exits.borrow_mut().push((tcb, status));
    }
}

/// Where every test syscall is made from.
pub(super) const RIP: u64 = 0x40_1000;
const RSP: u64 = 0x7fff_0000;
/// Root CNode slot of the telemetry capability.
pub(super) const SLOT_TELEMETRY: u64 = 6;
const PRIO: u8 = 100;

/// The world, the kernel, and a driver thread (not an object of the world: a box) that makes
/// objects and invokes them.
pub(super) struct Fx {
    pub(super) w: World,
    pub(super) k: Box<Kernel>,
    /// From `Box::into_raw` (see `buffers`), freed when the fixture goes.
    driver: *mut Tcb,
    /// The threads' IPC buffers, from `Box::into_raw`.
    buffers: Vec<*mut IpcBuffer>,
    next_slot: u64,
    /// How many times a syscall of `sys` was preempted and restarted.
    pub(super) restarts: u64,
    /// How many times the invariant checker was asked for.
    checks: core::cell::Cell<u64>,
    /// The kernel's machine (leaked: the kernel holds a `'static` reference).
    pub(super) machine: &'static NoMachine,
    /// The slot of the I/O-port control capability, once made ([`Fx::io_port_control`]).
    io_control: Option<u64>,
}

fn zeroed_buffer() -> Box<IpcBuffer> {
    // SAFETY: an IPC buffer is plain words, for which all-zero bytes are a valid value.
    unsafe { Box::new_zeroed().assume_init() }
}

/// What a syscall left in the caller's registers.
#[derive(Debug)]
pub(super) struct Out {
    pub(super) rax: u64,
    pub(super) label: u64,
    pub(super) mrs: [u64; 8],
}

impl Drop for Fx {
    fn drop(&mut self) {
        for b in self.buffers.drain(..) {
            // SAFETY: made by `Box::into_raw` in `equip`, freed once, after every thread is done.
            drop(unsafe { Box::from_raw(b) });
        }
        // SAFETY: made by `Box::into_raw` in `new`, freed once.
        drop(unsafe { Box::from_raw(self.driver) });
    }
}

impl Fx {
    pub(super) fn new() -> Fx {
        let w = World::new();
        let machine: &'static NoMachine = Box::leak(Box::default());
        // The world's device untyped memory is the machine's device memory.
        let Cap::Untyped { ptr, size_bits, .. } = w.slot(SLOT_U_DEV).cap() else { panic!("device untyped") };
        machine.device.set((ptr, ptr + (1 << size_bits)));
        let k = Box::new(Kernel {
            sched: Scheduler::new(),
            kernel_pml4: 0,
            irq_notification: [0; MAX_IRQS],
            irq_badge: [0; MAX_IRQS],
            irq_issued: [false; MAX_IRQS],
            platform: machine,
            fpu_owner: 0,
            asids: Box::leak(Box::new(AsidTable::new())),
            last_refusal: None,
        });
        // SAFETY: slot 6 is empty; the telemetry capability names no memory.
        unsafe { mdb::insert_root_cap(w.slot(SLOT_TELEMETRY), Cap::Telemetry) };
        let mut fx = Fx {
            w,
            k,
            driver: Box::into_raw(Box::new(Tcb::initial())),
            buffers: Vec::new(),
            next_slot: 7,
            restarts: 0,
            checks: core::cell::Cell::new(0),
            machine,
            io_control: None,
        };
        let driver = fx.driver;
        fx.equip(driver);
        fx
    }

    /// Give `t` a CSpace (the root CNode with a guard, so capability pointer n is slot n and the
    /// fastpath's single-level lookup applies), an IPC buffer, and make it runnable.
    pub(super) fn equip(&mut self, t: *mut Tcb) {
        // SAFETY: `t` is a live TCB (a box of the fixture or a TCB object of the world).
        let t = unsafe { &mut *t };
        let Cap::CNode { ptr, radix, .. } = self.w.root() else { panic!("root CNode") };
        let guarded = Cap::CNode { ptr, radix, guard_size: 64 - ROOT_RADIX, guard: 0 };
        // SAFETY: `t` is a live TCB of the fixture.
        let dest = unsafe { Tcb::slots_of(t) }.slot(TCB_CSPACE as u64).expect("CSpace slot");
        mdb::cte_insert(guarded, self.w.root_slot, dest);
        // A raw pointer (never a moved `Box`, whose move would invalidate the pointer the
        // frame capability holds under Rust's aliasing rules); freed when the fixture goes.
        let buf = Box::into_raw(zeroed_buffer());
        Tcb::attach_test_ipc_buffer(t, buf);
        self.buffers.push(buf);
        t.state = ThreadState::Running;
        t.priority = PRIO;
        // Runnable threads wait in the ready queue (the driver is current whenever it invokes).
        let tp: *mut Tcb = t;
        // SAFETY: `tp` is live and runnable; the reference `t` is not used again.
        unsafe { self.k.sched.wake(tp) };
    }

    /// Syscall `s` from `t` on `cptr` with a message (`mrs`) and capability arguments; a
    /// preempted syscall is restarted until it completes.
    pub(super) fn sys(&mut self, t: *mut Tcb, s: Syscall, cptr: u64, label: u64, mrs: &[u64], caps: &[u64]) -> Out {
        {
            // A reference only for the set-up: none is held while the kernel runs (it reaches the
            // thread through its own pointers).
            let tr = tcb(t);
            tr.regs.rip = RIP;
            tr.regs.rsp = RSP;
            // As the syscall entry leaves them.
            tr.regs.vector = crate::object::tcb::SYSCALL_ENTRY;
            tr.regs.rdi = cptr;
            tr.regs.rsi = MessageInfo::new(label, 0, caps.len() as u64, mrs.len() as u64).0;
            // (A thread whose buffer is gone sends only the register words and no capabilities.)
            for (i, m) in mrs.iter().enumerate() {
                if i < 4 {
                    tr.regs.set_mr(i, *m);
                } else {
                    tr.set_ipc_msg(i, *m);
                }
            }
            for (i, c) in caps.iter().enumerate() {
                tr.set_ipc_cap_word(i, *c);
            }
        }
        loop {
            self.make_current(t);
            handle_syscall(&mut self.k, s as i64);
            let tr = tcb(t);
            if tr.regs.rip != RIP - 2 || tr.regs.vector != crate::object::tcb::SYSCALL_ENTRY {
                break;
            }
            self.restarts += 1;
            tr.regs.rip = RIP;
        }
        self.check(&format!("{s:?} on {cptr} label {label} by {t:p}"));
        self.out(t)
    }

    /// Switch to `t` as the scheduler does: the thread that ran goes back to the ready queue if it
    /// is still runnable, `t` leaves it and becomes current.
    pub(super) fn make_current(&mut self, t: *mut Tcb) {
        let prev = self.k.sched.current();
        // SAFETY: fixture threads are live; no reference to them is held here.
        unsafe {
            if !prev.is_null() && prev != t && (*prev).state.is_runnable() {
                self.k.sched.push_back(prev);
            }
            self.k.sched.remove(t);
            self.k.sched.set_current(t);
        }
    }

    /// Run the kernel-state invariant checker (`api::invariants`) over the world: every syscall
    /// of the fixture ends with it; a violation fails the test, naming the syscall.
    pub(super) fn check(&self, after: &str) {
        // Under Miri (which runs these tests to look for undefined behaviour, slowly) the checker
        // runs after every eighth syscall; natively after every one.
        let n = self.checks.get() + 1;
        self.checks.set(n);
        if cfg!(miri) && !n.is_multiple_of(8) {
            return;
        }
        let slots = self.w.scan().unwrap_or_else(|e| panic!("after {after}: {e}"));
        let caps = slots.iter().map(|s| s.cap());
        if let Err(e) = super::invariants::check(&self.k, caps, &[self.driver as u64]) {
            panic!("kernel invariant broken after {after}: {e}");
        }
    }

    pub(super) fn out(&self, t: *mut Tcb) -> Out {
        // SAFETY: `t` is a live TCB of the fixture, and no other reference to it is in use.
        let tr = unsafe { &*t };
        let mut mrs = [0; 8];
        for (i, m) in mrs.iter_mut().enumerate() {
            *m = if i < 4 { tr.regs.mr(i) } else { tr.ipc_msg(i).unwrap_or(0) };
        }
        Out { rax: tr.regs.rax, label: MessageInfo(tr.regs.rsi).label(), mrs }
    }

    pub(super) fn driver(&mut self) -> *mut Tcb {
        self.driver
    }

    /// An invocation by the driver.
    pub(super) fn invoke(&mut self, cptr: u64, label: u64, mrs: &[u64], caps: &[u64]) -> Out {
        let d = self.driver();
        self.sys(d, Syscall::Call, cptr, label, mrs, caps)
    }

    pub(super) fn free_slot(&mut self) -> u64 {
        self.next_slot += 1;
        self.next_slot - 1
    }

    /// One object of `ty` from untyped `ut`, into a new slot.
    pub(super) fn retype_from(&mut self, ut: u64, ty: ObjectType, size_bits: u64) -> u64 {
        let s = self.free_slot();
        let r = self.invoke(ut, inv::UNTYPED_RETYPE, &[ty as u64, size_bits, 0, 0, s, 1], &[SLOT_ROOT_COPY]);
        assert_eq!(r.rax, 0, "retype {ty:?}");
        s
    }

    pub(super) fn retype(&mut self, ty: ObjectType) -> u64 {
        self.retype_from(SLOT_U_MAIN, ty, 0)
    }

    /// A new thread (a TCB object of the world), runnable, with no fault handler.
    pub(super) fn thread(&mut self) -> (u64, *mut Tcb) {
        let s = self.retype(ObjectType::Tcb);
        let Cap::Tcb { ptr } = self.w.slot(s).cap() else { panic!("TCB cap") };
        self.equip(ptr as *mut Tcb);
        (s, ptr as *mut Tcb)
    }

    /// The I/O-port control capability (the authority over the debug channel), made on first
    /// use in a slot of its own.
    pub(super) fn io_port_control(&mut self) -> u64 {
        if let Some(s) = self.io_control {
            return s;
        }
        let s = self.free_slot();
        // SAFETY: the slot is fresh and empty; the I/O-port control capability names no memory.
        unsafe { mdb::insert_root_cap(self.w.slot(s), Cap::IoPortControl) };
        self.io_control = Some(s);
        s
    }

    /// Give the thread in `tcb_slot` the kernel's debug channel, as the root task does.
    pub(super) fn allow_debug_output(&mut self, tcb_slot: u64) {
        let control = self.io_port_control();
        assert_eq!(self.invoke(tcb_slot, inv::TCB_SET_DEBUG_OUTPUT, &[1], &[control]).rax, 0);
    }

    pub(super) fn set_allowed(&mut self, tcb_slot: u64, allowed: u64) {
        assert_eq!(self.invoke(tcb_slot, inv::TCB_SET_PROFILE, &[allowed], &[]).rax, 0);
    }

    /// SetFaultHandler of the thread in `tcb_slot`: the endpoint capability in slot `ep`, or
    /// none (0); the error code.
    pub(super) fn set_fault_handler(&mut self, tcb_slot: u64, ep: u64) -> u64 {
        let caps: &[u64] = if ep == 0 { &[] } else { &[ep] };
        self.invoke(tcb_slot, inv::TCB_SET_FAULT_HANDLER, &[], caps).rax
    }

    pub(super) fn profile(&mut self, tcb_slot: u64) -> (u64, u64) {
        let r = self.invoke(tcb_slot, inv::TCB_GET_PROFILE, &[], &[]);
        assert_eq!(r.rax, 0);
        (r.mrs[0], r.mrs[1])
    }

    pub(super) fn endpoint(&self, slot: u64) -> &Endpoint {
        let Cap::Endpoint { ptr, .. } = self.w.slot(slot).cap() else { panic!("endpoint cap") };
        // SAFETY: an endpoint capability names a live endpoint.
        unsafe { &*(ptr as *const Endpoint) }
    }
}

/// Where `va` leads in the address space of the PML4 at `pml4`.
fn translate(pml4: u64, va: u64) -> Option<(u64, bool)> {
    // SAFETY: the tests pass PML4s of their fixture's world (live for the whole test), or PML4s
    // whose memory stays in the world's arena (retyped or not: a walk reads only arena memory).
    unsafe { vspace::translate(pml4, va) }
}

pub(super) fn tcb<'a>(t: *mut Tcb) -> &'a mut Tcb {
    // SAFETY: the tests only pass TCBs of their fixture, alive for the whole test, and use the
    // reference before the next syscall.
    unsafe { &mut *t }
}

const fn without(bit: u32) -> u64 {
    profile::ALL & !profile::mask(bit)
}

// ---- Untyped GetInfo ----

fn get_info(fx: &mut Fx, ut: u64) -> (u64, u64, u64, u64) {
    let r = fx.invoke(ut, inv::UNTYPED_GET_INFO, &[], &[]);
    assert_eq!(r.rax, 0);
    assert_eq!(r.label, 0);
    (r.mrs[0], r.mrs[1], r.mrs[2], r.mrs[3])
}

#[test]
fn untyped_get_info_follows_retype_and_revoke() {
    let mut fx = Fx::new();
    let Cap::Untyped { ptr, size_bits, free_index, .. } = fx.w.slot(SLOT_U_SMALL).cap() else { panic!() };
    let size = 1u64 << size_bits;
    // Boot untypeds start with the watermark at 0 and all of the memory dirty: all of it is free.
    assert_eq!(free_index, 0);
    assert_eq!(get_info(&mut fx, SLOT_U_SMALL), (u64::from(size_bits), size, 0, ptr));

    // An endpoint (32 bytes), then a 4 KiB frame (aligned up past the endpoint).
    fx.retype_from(SLOT_U_SMALL, ObjectType::Endpoint, 0);
    assert_eq!(get_info(&mut fx, SLOT_U_SMALL), (u64::from(size_bits), size - 32, inv::UNTYPED_INFO_HAS_CHILDREN, ptr));
    let frame = fx.retype_from(SLOT_U_SMALL, ObjectType::Frame4K, 0);
    let (_, free, flags, _) = get_info(&mut fx, SLOT_U_SMALL);
    assert_eq!((free, flags), (size - 8192, inv::UNTYPED_INFO_HAS_CHILDREN));

    // Deleting one child gives nothing back while another lives (the watermark stays).
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[frame, u64::from(ROOT_RADIX)], &[]).rax, 0);
    assert_eq!(get_info(&mut fx, SLOT_U_SMALL).1, size - 8192);

    // Revoke: no children, all of it free again, and a Retype of the whole size fits.
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[SLOT_U_SMALL, u64::from(ROOT_RADIX)], &[]).rax, 0);
    assert_eq!(get_info(&mut fx, SLOT_U_SMALL), (u64::from(size_bits), size, 0, ptr));
    fx.retype_from(SLOT_U_SMALL, ObjectType::Untyped, u64::from(size_bits));
    assert_eq!(get_info(&mut fx, SLOT_U_SMALL).1, 0);
}

#[test]
fn untyped_get_info_device_copies_and_errors() {
    let mut fx = Fx::new();
    let Cap::Untyped { ptr, size_bits, .. } = fx.w.slot(SLOT_U_DEV).cap() else { panic!() };
    let size = 1u64 << size_bits;
    assert_eq!(get_info(&mut fx, SLOT_U_DEV), (u64::from(size_bits), size, inv::UNTYPED_INFO_DEVICE, ptr));

    // A copy of a childless untyped fills the original (objects are made through one of them).
    let copy = fx.free_slot();
    let r = fx.invoke(
        SLOT_ROOT_COPY,
        inv::CNODE_COPY,
        &[copy, u64::from(ROOT_RADIX), SLOT_U_DEV, u64::from(ROOT_RADIX), ozone_abi::rights::ALL],
        &[SLOT_ROOT_COPY],
    );
    assert_eq!(r.rax, 0);
    let flags = inv::UNTYPED_INFO_DEVICE | inv::UNTYPED_INFO_HAS_CHILDREN;
    assert_eq!(get_info(&mut fx, SLOT_U_DEV), (u64::from(size_bits), 0, flags, ptr));
    assert_eq!(get_info(&mut fx, copy), (u64::from(size_bits), size, inv::UNTYPED_INFO_DEVICE, ptr));

    // Only untyped capabilities have the method; GetInfo takes no arguments and ignores extras.
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::UNTYPED_GET_INFO, &[], &[]).rax, Error::IllegalOperation as u64);
    assert_eq!(fx.invoke(copy, inv::UNTYPED_GET_INFO, &[1, 2, 3, 4, 5], &[]).rax, 0);
}

// ---- profiles: recording ----

#[test]
fn profiles_start_unrestricted_and_record_every_class_used() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    let ntfn = fx.retype(ObjectType::Notification);
    assert_eq!(fx.profile(ts), (0, profile::ALL));

    // IPC on an endpoint and a notification: the syscall bits only.
    assert_eq!(fx.sys(t, Syscall::NbSend, ep, 0, &[], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::Send, ntfn, 0, &[], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::NbRecv, ntfn, 0, &[], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::Reply, 0, 0, &[], &[]).rax, 0);
    let ipc = profile::mask(profile::NB_SEND)
        | profile::mask(profile::SEND)
        | profile::mask(profile::NB_RECV)
        | profile::mask(profile::YIELD)
        | profile::mask(profile::REPLY);
    assert_eq!(fx.profile(ts).0, ipc);

    // An invocation: the syscall bit and the object's; failed syscalls count too.
    assert_eq!(fx.sys(t, Syscall::Call, SLOT_U_SMALL, inv::UNTYPED_GET_INFO, &[], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::NbSend, SLOT_ROOT_COPY, 9999, &[], &[]).rax, Error::IllegalOperation as u64);
    assert_eq!(fx.sys(t, Syscall::Recv, 63, 0, &[], &[]).rax, Error::InvalidCapability as u64);
    let objects = profile::mask(profile::CALL) | profile::mask(profile::UNTYPED) | profile::mask(profile::CNODE);
    assert_eq!(fx.profile(ts).0, ipc | objects | profile::mask(profile::RECV));

    // Telemetry Read carries `used` as MR7, after the seven counters.
    let used = fx.profile(ts).0;
    let r = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_READ, &[], &[ts]);
    assert_eq!(r.rax, 0);
    assert_eq!(r.mrs[ozone_abi::telemetry::PROFILE_USED], used);
    assert_eq!(r.mrs[5], 2, "two syscalls failed");
    assert_eq!(r.mrs[6], 0, "no timer tick found it running");
    // The driver's own invocations are recorded in its profile.
    let d = tcb(fx.driver()).profile.used();
    assert_eq!(
        d,
        profile::mask(profile::CALL)
            | profile::mask(profile::UNTYPED)
            | profile::mask(profile::TCB)
            | profile::mask(profile::TELEMETRY)
    );
}

#[test]
fn every_invocable_kind_has_its_own_bit() {
    use super::object_profile_bit;
    use crate::object::{FrameSize, PagingLevel, Rights};
    let caps = [
        (
            Cap::Untyped { ptr: 0, size_bits: 12, free_index: 0, dirty_from: 0, dirty_top: 0, device: false },
            profile::UNTYPED,
        ),
        (Cap::CNode { ptr: 0, radix: 1, guard_size: 0, guard: 0 }, profile::CNODE),
        (Cap::Tcb { ptr: 0 }, profile::TCB),
        (Cap::Paging { ptr: 0, level: PagingLevel::Pml4, mapped: None }, profile::PAGING),
        (Cap::Paging { ptr: 0, level: PagingLevel::PageTable, mapped: None }, profile::PAGING),
        (
            Cap::Frame { ptr: 0, size: FrameSize::Large, rights: Rights::ALL, device: false, mapped: None },
            profile::FRAME,
        ),
        (Cap::IrqControl, profile::IRQ_CONTROL),
        (Cap::IrqHandler { irq: 1 }, profile::IRQ_HANDLER),
        (Cap::IoPortControl, profile::IO_PORT_CONTROL),
        (Cap::IoPort { first: 1, last: 2 }, profile::IO_PORT),
        (Cap::Telemetry, profile::TELEMETRY),
    ];
    for (cap, bit) in caps {
        assert_eq!(object_profile_bit(&cap), Some(bit), "{cap:?}");
        assert_ne!(profile::OBJECTS & profile::mask(bit), 0);
    }
    for cap in [
        Cap::Null,
        Cap::Endpoint { ptr: 0, badge: 0, rights: Rights::ALL },
        Cap::Notification { ptr: 0, badge: 0, rights: Rights::ALL },
        Cap::Reply { tcb: 0, can_grant: false },
    ] {
        assert_eq!(object_profile_bit(&cap), None, "{cap:?}");
    }
}

// ---- profiles: denial ----

#[test]
fn a_denied_syscall_does_nothing_and_returns_denied() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let (_, receiver) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    // A receiver waits; the thread may not Send.
    fx.sys(receiver, Syscall::Recv, ep, 0, &[], &[]);
    assert_eq!(fx.endpoint(ep).state, EP_RECV);
    fx.set_allowed(ts, without(profile::SEND));
    let before = tcb(t).counters;
    let r = fx.sys(t, Syscall::Send, ep, 7, &[1], &[]);
    assert_eq!(r.rax, Error::Denied as u64);
    assert_eq!(fx.endpoint(ep).state, EP_RECV, "the receiver still waits");
    assert!(matches!(tcb(receiver).state, ThreadState::BlockedOnReceive { .. }));
    assert_eq!(tcb(t).state, ThreadState::Running);
    assert_eq!(tcb(t).counters.denied, before.denied + 1);
    assert_eq!(tcb(t).counters.faults, before.faults, "without a handler nothing is raised");
    assert_eq!(tcb(t).counters.ipc_sent, before.ipc_sent);
    // The attempt is recorded; other syscalls still work.
    assert_eq!(fx.profile(ts), (profile::mask(profile::SEND), without(profile::SEND)));
    assert_eq!(fx.sys(t, Syscall::NbSend, ep, 7, &[1], &[]).rax, 0);
    assert_eq!(fx.endpoint(ep).state, EP_IDLE);

    // The syscall bit is checked before the capability is looked up.
    assert_eq!(fx.sys(t, Syscall::Send, 63, 0, &[], &[]).rax, Error::Denied as u64);

    // Restoring the profile restores the syscall.
    fx.set_allowed(ts, profile::ALL);
    assert_eq!(fx.sys(t, Syscall::Send, 63, 0, &[], &[]).rax, Error::InvalidCapability as u64);
}

#[test]
fn invocations_are_denied_by_object_kind() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    fx.set_allowed(ts, without(profile::UNTYPED));
    let dest = fx.free_slot();
    let args = [ObjectType::Endpoint as u64, 0, 0, 0, dest, 1];
    let r = fx.sys(t, Syscall::Call, SLOT_U_MAIN, inv::UNTYPED_RETYPE, &args, &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, Error::Denied as u64);
    assert!(fx.w.slot(dest).is_empty(), "nothing was made");
    assert_eq!(tcb(t).counters.invocations, 0);
    // Other objects, and IPC Calls, are still allowed.
    assert_eq!(fx.sys(t, Syscall::NbSend, ep, 0, &[], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::Call, SLOT_ROOT_COPY, 9999, &[], &[]).rax, Error::IllegalOperation as u64);
    let used = fx.profile(ts).0;
    assert_eq!(
        used,
        profile::mask(profile::CALL)
            | profile::mask(profile::UNTYPED)
            | profile::mask(profile::NB_SEND)
            | profile::mask(profile::CNODE)
    );
    // A thread allowed no Call at all cannot invoke anything, whatever the object bits say.
    fx.set_allowed(ts, without(profile::CALL));
    assert_eq!(fx.sys(t, Syscall::Call, SLOT_U_MAIN, inv::UNTYPED_GET_INFO, &[], &[]).rax, Error::Denied as u64);
    // Send of an invocation: the Send bit and the object's.
    assert_eq!(fx.sys(t, Syscall::Send, SLOT_U_MAIN, inv::UNTYPED_GET_INFO, &[], &[]).rax, 0);
}

/// The end of a learning window is told to the thread's fault handler, before the syscall that
/// ended it runs: the handler (Studio) hears of the new mask while the thread waits, and its
/// label-0 reply makes the thread execute that syscall then, under the new mask. Without a
/// handler the syscall goes on at once.
#[test]
fn a_window_that_ends_is_told_to_the_handler_before_the_next_syscall_runs() {
    let mut fx = Fx::new();
    let fault_ep = fx.retype(ObjectType::Endpoint);
    let (_, handler) = fx.thread();
    let (ts, t) = fx.thread();
    assert_eq!(fx.set_fault_handler(ts, fault_ep), 0);
    assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[profile::ALL, 2], &[]).rax, 0);
    // Two learned syscalls: Yield only.
    for _ in 0..2 {
        assert_eq!(fx.sys(t, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    }
    let yield_only = profile::mask(profile::YIELD);
    // The third (an NBSend, never used) ends the window: the thread sends the handler a
    // window-ended fault and the NBSend has not run.
    fx.sys(handler, Syscall::Recv, fault_ep, 0, &[], &[]);
    let other_ep = fx.retype(ObjectType::Endpoint);
    fx.sys(t, Syscall::NbSend, other_ep, 3, &[1], &[]);
    assert_eq!(tcb(t).state, ThreadState::BlockedOnReply { interruptible: false });
    assert_eq!(tcb(t).fault, Fault::WindowEnded { number: Syscall::NbSend as i64 as u64, allowed: yield_only });
    assert_eq!((tcb(t).profile.allowed(), tcb(t).profile.window()), (yield_only, None));
    assert_eq!((tcb(t).counters.denied, tcb(t).counters.faults), (0, 0), "not a fault of the thread's");
    let m = fx.out(handler);
    assert_eq!((m.rax, m.label), (0, fault::WINDOW_ENDED));
    assert_eq!(m.mrs[..4], [RIP - 2, RSP, Syscall::NbSend as i64 as u64, yield_only]);
    // Label 0: the thread resumes at its `syscall` instruction; executed again, the NBSend is
    // denied by the new mask (a denied-operation fault, to the same handler).
    fx.sys(handler, Syscall::Reply, 0, 0, &[], &[]);
    assert_eq!((tcb(t).state, tcb(t).fault, tcb(t).regs.rip), (ThreadState::Running, Fault::None, RIP - 2));
    fx.sys(handler, Syscall::Recv, fault_ep, 0, &[], &[]);
    fx.sys(t, Syscall::NbSend, other_ep, 3, &[1], &[]);
    assert_eq!(fx.out(handler).label, fault::DENIED);
    fx.sys(handler, Syscall::Reply, 0, 0, &[], &[]);
    // A learned syscall goes on as before, with no message to anyone.
    assert_eq!(fx.sys(t, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    assert_eq!(tcb(t).state, ThreadState::Running);

    // Without a handler, the window ends and the syscall runs at once.
    let (us, u) = fx.thread();
    assert_eq!(fx.invoke(us, inv::TCB_ARM_PROFILE, &[profile::ALL, 1], &[]).rax, 0);
    assert_eq!(fx.sys(u, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    assert_eq!(fx.sys(u, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    assert_eq!((tcb(u).profile.allowed(), tcb(u).state), (yield_only, ThreadState::Running));
    assert_eq!(fx.sys(u, Syscall::NbSend, other_ep, 3, &[1], &[]).rax, Error::Denied as u64);
}

/// A window-ended fault that is taken out of its delivery (the thread suspended and resumed
/// while the fault waits for the handler, or the handler's endpoint deleted) is owed again: the
/// syscall executed again on resume raises it once more, before it runs, as a page fault would
/// be taken again ("a fault being delivered is taken again when the thread restarts").
#[test]
fn a_window_ended_fault_cancelled_while_pending_is_taken_again() {
    let mut fx = Fx::new();
    let fault_ep = fx.retype(ObjectType::Endpoint);
    let (_, handler) = fx.thread();
    let (ts, t) = fx.thread();
    assert_eq!(fx.set_fault_handler(ts, fault_ep), 0);
    assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[profile::ALL, 1], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    // The second syscall ends the window; the handler is not receiving yet, so the fault waits
    // in the endpoint's send queue.
    fx.sys(t, Syscall::Yield, 0, 0, &[], &[]);
    assert!(matches!(tcb(t).state, ThreadState::BlockedOnSend { .. }));
    assert!(matches!(tcb(t).fault, Fault::WindowEnded { .. }));
    // Suspended and resumed before the handler took it: the thread is to execute its syscall
    // again (registers rewound once).
    assert_eq!(fx.invoke(ts, inv::TCB_SUSPEND, &[], &[]).rax, 0);
    assert_eq!(fx.invoke(ts, inv::TCB_RESUME, &[], &[]).rax, 0);
    assert_eq!(tcb(t).regs.rip, RIP - 2);
    // The handler now listens; the thread executes its Yield again.
    fx.sys(handler, Syscall::Recv, fault_ep, 0, &[], &[]);
    fx.sys(t, Syscall::Yield, 0, 0, &[], &[]);
    // Expected: the handler hears that the window ended before the syscall runs.
    assert_eq!(tcb(handler).state, ThreadState::Running, "the handler never heard that the window ended");
    assert_eq!(fx.out(handler).label, fault::WINDOW_ENDED);
}

#[test]
fn a_thread_with_a_handler_faults_and_the_reply_decides() {
    let mut fx = Fx::new();
    let fault_ep = fx.retype(ObjectType::Endpoint);
    let other_ep = fx.retype(ObjectType::Endpoint);
    let (_, handler) = fx.thread();
    let (ts, t) = fx.thread();
    assert_eq!(fx.set_fault_handler(ts, fault_ep), 0);
    fx.set_allowed(ts, without(profile::NB_SEND) & without(profile::FRAME));

    // The denied NBSend becomes a fault message, a Call from the thread.
    fx.sys(handler, Syscall::Recv, fault_ep, 0, &[], &[]);
    fx.sys(t, Syscall::NbSend, other_ep, 3, &[1, 2], &[]);
    assert_eq!(tcb(t).state, ThreadState::BlockedOnReply { interruptible: false });
    assert_eq!(tcb(t).fault, Fault::Denied { number: Syscall::NbSend as i64 as u64, bit: profile::NB_SEND });
    assert_eq!((tcb(t).counters.denied, tcb(t).counters.faults), (1, 0));
    let m = fx.out(handler);
    assert_eq!((m.rax, m.label), (0, fault::DENIED));
    assert_eq!(m.mrs[..4], [RIP, RSP, Syscall::NbSend as i64 as u64, u64::from(profile::NB_SEND)]);
    assert_eq!(tcb(handler).caller, t as u64);
    assert_eq!(fx.endpoint(other_ep).state, EP_IDLE);

    // Label 0 resumes it after the syscall, which returns Denied.
    fx.sys(handler, Syscall::Reply, 0, 0, &[], &[]);
    assert_eq!((tcb(t).state, tcb(t).fault), (ThreadState::Running, Fault::None));
    assert_eq!((tcb(t).regs.rax, tcb(t).regs.rip), (Error::Denied as u64, RIP));

    // An invocation denied by its object bit: MR3 says which.
    tcb(t).state = ThreadState::Running;
    fx.sys(handler, Syscall::Recv, fault_ep, 0, &[], &[]);
    let frame = fx.retype(ObjectType::Frame4K);
    fx.sys(t, Syscall::Call, frame, inv::FRAME_GET_ADDRESS, &[], &[]);
    let m = fx.out(handler);
    assert_eq!(m.label, fault::DENIED);
    assert_eq!(m.mrs[2..4], [Syscall::Call as i64 as u64, u64::from(profile::FRAME)]);

    // Any other label leaves it suspended; resumed later (TCB Resume), the syscall returns Denied.
    fx.sys(handler, Syscall::Reply, 0, 1, &[], &[]);
    assert_eq!((tcb(t).state, tcb(t).fault), (ThreadState::Inactive, Fault::None));
    assert_eq!((tcb(t).regs.rax, tcb(t).regs.rip), (Error::Denied as u64, RIP));
    assert_eq!(tcb(t).counters.denied, 2);
}

#[test]
fn the_debug_calls_and_unknown_syscalls_are_not_profiled() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    fx.allow_debug_output(ts);
    fx.set_allowed(ts, 0);
    // The debug calls are answered whatever the profile (this thread has no address space, so
    // DebugWrite fails, but not with Denied).
    assert_eq!(fx.sys(t, Syscall::DebugWrite, 0, 0, &[], &[]).rax, Error::IllegalOperation as u64);
    assert_eq!(Syscall::DebugWrite.profile_bit(), None);
    // An unknown number stays an unknown-syscall fault (here: no handler).
    fx.make_current(t);
    handle_syscall(&mut fx.k, 0x4242);
    assert_eq!(tcb(t).regs.rax, Error::UnknownSyscall as u64);
    assert_eq!(fx.profile(ts).0, 0);
    // Everything else is denied.
    for s in Syscall::IPC {
        assert_eq!(fx.sys(t, s, 0, 0, &[], &[]).rax, Error::Denied as u64, "{s:?}");
    }
    assert_eq!(fx.profile(ts).0, profile::IPC);
}

/// A debug call by `t` with RDI and RSI as given; its RAX.
pub(super) fn debug_call(fx: &mut Fx, t: *mut Tcb, s: Syscall, rdi: u64, rsi: u64) -> u64 {
    fx.make_current(t);
    tcb(t).regs.rdi = rdi;
    tcb(t).regs.rsi = rsi;
    handle_syscall(&mut fx.k, s as i64);
    fx.check(&format!("{s:?}"));
    tcb(t).regs.rax
}

#[test]
fn debug_write_prints_only_mapped_user_text_and_thread_exit_stops_the_thread() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    fx.allow_debug_output(ts);
    fx.set_allowed(ts, 0);
    let [pml4, ..] = fx.address_space(SLOT_U_MAIN);
    let frame = fx.retype(ObjectType::Frame4K);
    assert_eq!(fx.map_frame(frame, pml4, VA), 0);
    let text = b"hello from ring 3\n\xff";
    // SAFETY: the frame is 4 KiB of the world's arena, mapped only in this test's address space.
    unsafe { core::ptr::copy_nonoverlapping(text.as_ptr(), (fx.ptr(frame) + 0xff0) as *mut u8, text.len()) };
    // SAFETY: `t` is a live TCB of the fixture.
    let dest = unsafe { Tcb::slots_of(t) }.slot(crate::object::tcb::TCB_VSPACE as u64).unwrap();
    mdb::cte_insert(fx.w.slot(pml4).cap(), fx.w.slot(pml4), dest);

    // Text that crosses into the next, unmapped page: nothing printed.
    assert_eq!(debug_call(&mut fx, t, Syscall::DebugWrite, VA + 0xff0, 17), Error::InvalidUserBuffer as u64);
    assert_eq!(fx.machine.console.borrow().as_str(), "");
    // Text in one page: printed, whatever the profile.
    let text_va = VA + 0xff0 - 0x10;
    // SAFETY: as above.
    unsafe { core::ptr::copy_nonoverlapping(text.as_ptr(), (fx.ptr(frame) + 0xfe0) as *mut u8, text.len()) };
    assert_eq!(debug_call(&mut fx, t, Syscall::DebugWrite, text_va, 18), 0);
    assert_eq!(fx.machine.console.borrow().as_str(), "hello from ring 3\n");
    // Not UTF-8, too long, not user memory, a wrapping address: refused, nothing printed.
    for (ptr, len, e) in [
        (text_va, 19, Error::InvalidArgument),
        (text_va, 4097, Error::InvalidArgument),
        (ozone_abi::USER_TOP - 8, 8, Error::InvalidUserBuffer),
        (0xffff_8000_0000_0000, 8, Error::InvalidUserBuffer),
        (u64::MAX - 2, 8, Error::InvalidUserBuffer),
    ] {
        assert_eq!(debug_call(&mut fx, t, Syscall::DebugWrite, ptr, len), e as u64, "{ptr:#x}+{len}");
    }
    assert_eq!(fx.machine.console.borrow().as_str(), "hello from ring 3\n");
    assert_eq!(fx.profile(ts).0, 0, "the debug calls record no profile bit");

    // ThreadExit: the machine is told, and the thread stops.
    debug_call(&mut fx, t, Syscall::ThreadExit, 7, 0);
    assert_eq!(fx.machine.exits.borrow().as_slice(), &[(t as u64, 7)]);
    assert_eq!(tcb(t).state, ThreadState::Inactive);
    assert!(!tcb(t).queued);
}

#[test]
fn debug_write_never_reads_device_memory() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    fx.allow_debug_output(ts);
    let [pml4, ..] = fx.address_space(SLOT_U_MAIN);
    let dev = fx.retype_from(SLOT_U_DEV, ObjectType::Frame4K, 0);
    assert!(matches!(fx.w.slot(dev).cap(), Cap::Frame { device: true, .. }));
    assert_eq!(fx.map_frame(dev, pml4, VA), 0);
    // SAFETY: the "device" frame is arena memory in the host tests.
    unsafe { core::ptr::copy_nonoverlapping(b"mmio".as_ptr(), fx.ptr(dev) as *mut u8, 4) };
    // SAFETY: `t` is a live TCB of the fixture.
    let dest = unsafe { Tcb::slots_of(t) }.slot(crate::object::tcb::TCB_VSPACE as u64).unwrap();
    mdb::cte_insert(fx.w.slot(pml4).cap(), fx.w.slot(pml4), dest);
    assert_eq!(debug_call(&mut fx, t, Syscall::DebugWrite, VA, 4), Error::InvalidUserBuffer as u64);
    assert_eq!(fx.machine.console.borrow().as_str(), "", "the kernel read a device frame for DebugWrite");
}

/// The debug channel is an authority: a new thread may not print through it; only the I/O-port
/// control capability switches it on or off. A hostile thread holding everything a program can
/// get (TCB capabilities to itself and others, an issued I/O-port range, endpoints, frames) cannot
/// switch it on, learns nothing about its arguments from a refused DebugWrite, and prints nothing.
#[test]
fn debug_write_is_refused_to_threads_not_given_the_debug_channel() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    assert!(!tcb(t).debug_output, "a new thread starts without the debug channel");
    let [pml4, ..] = fx.address_space(SLOT_U_MAIN);
    let frame = fx.retype(ObjectType::Frame4K);
    assert_eq!(fx.map_frame(frame, pml4, VA), 0);
    // SAFETY: the frame is 4 KiB of the world's arena, mapped only in this test's address space.
    unsafe { core::ptr::copy_nonoverlapping(b"ozone> fake\n".as_ptr(), fx.ptr(frame) as *mut u8, 12) };
    // SAFETY: `t` is a live TCB of the fixture.
    let dest = unsafe { Tcb::slots_of(t) }.slot(crate::object::tcb::TCB_VSPACE as u64).unwrap();
    mdb::cte_insert(fx.w.slot(pml4).cap(), fx.w.slot(pml4), dest);
    let denied_before = tcb(t).counters.denied;

    // Good text, and arguments that would otherwise be refused for other reasons: all Denied.
    for (ptr, len) in [(VA, 12), (VA, 4097), (0x1000, 8), (0xffff_8000_0000_0000, 8), (u64::MAX - 2, 8), (0, 0)] {
        assert_eq!(debug_call(&mut fx, t, Syscall::DebugWrite, ptr, len), Error::Denied as u64, "{ptr:#x}+{len}");
    }
    assert_eq!(fx.machine.console.borrow().as_str(), "", "a refused DebugWrite printed");
    assert_eq!(tcb(t).counters.denied, denied_before, "a refused debug call is no profile denial");

    // Every authority a program can hold, as the would-be authority: refused, nothing changes.
    let control = fx.io_port_control();
    let ports = fx.free_slot();
    let r = fx.invoke(
        control,
        inv::IO_PORT_CONTROL_ISSUE,
        &[0x3f8, 0x3ff, ports, u64::from(ROOT_RADIX)],
        &[SLOT_ROOT_COPY],
    );
    assert_eq!(r.rax, 0);
    let ep = fx.retype(ObjectType::Endpoint);
    let (other, _) = fx.thread();
    for authority in [ts, other, ports, ep, frame, SLOT_U_MAIN, SLOT_ROOT_COPY, SLOT_IRQ, SLOT_TELEMETRY] {
        let r = fx.sys(t, Syscall::Call, ts, inv::TCB_SET_DEBUG_OUTPUT, &[1], &[authority]);
        assert_eq!(r.rax, Error::InvalidCapability as u64, "authority in slot {authority}");
        let why = fx.k.last_refusal.expect("the refusal is recorded");
        assert_eq!(why.why, "the authority argument is not the I/O-port control capability");
        assert!(!tcb(t).debug_output);
    }
    // No authority at all; a switch that is neither 0 nor 1 (even with the authority).
    assert_eq!(fx.sys(t, Syscall::Call, ts, inv::TCB_SET_DEBUG_OUTPUT, &[1], &[]).rax, Error::InvalidCapability as u64);
    let r = fx.invoke(ts, inv::TCB_SET_DEBUG_OUTPUT, &[2], &[control]);
    assert_eq!(r.rax, Error::InvalidArgument as u64);
    assert!(!tcb(t).debug_output);
    assert_eq!(debug_call(&mut fx, t, Syscall::DebugWrite, VA, 12), Error::Denied as u64);

    // With the authority: on, and the thread prints; off again, and it is refused again.
    assert_eq!(fx.invoke(ts, inv::TCB_SET_DEBUG_OUTPUT, &[1], &[control]).rax, 0);
    assert!(tcb(t).debug_output);
    assert_eq!(debug_call(&mut fx, t, Syscall::DebugWrite, VA, 12), 0);
    assert_eq!(fx.machine.console.borrow().as_str(), "ozone> fake\n");
    assert_eq!(fx.invoke(ts, inv::TCB_SET_DEBUG_OUTPUT, &[0], &[control]).rax, 0);
    assert_eq!(debug_call(&mut fx, t, Syscall::DebugWrite, VA, 12), Error::Denied as u64);
    assert_eq!(fx.machine.console.borrow().as_str(), "ozone> fake\n");
    // Another thread was never touched.
    let Cap::Tcb { ptr } = fx.w.slot(other).cap() else { panic!("TCB cap") };
    assert!(!tcb(ptr as *mut Tcb).debug_output);
}

#[test]
fn thread_exit_leaves_rax_as_the_thread_had_it() {
    let mut fx = Fx::new();
    let (_, t) = fx.thread();
    fx.make_current(t);
    tcb(t).regs.rax = 0x1234;
    tcb(t).regs.rdi = 3;
    handle_syscall(&mut fx.k, Syscall::ThreadExit as i64);
    assert_eq!(tcb(t).state, ThreadState::Inactive);
    assert_eq!(tcb(t).regs.rax, 0x1234, "a thread resumed after its exit finds its own RAX");
}

// ---- profiles: the fastpaths ----

#[test]
fn the_fastpaths_take_only_recorded_allowed_syscalls() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let (cs, client) = fx.thread();
    let (ss, server) = fx.thread();
    fx.sys(server, Syscall::Recv, ep, 0, &[], &[]);

    // A first Call is not taken by the fastpath (its bit is not recorded yet); the general path
    // records it.
    let call = |fx: &mut Fx, label: u64| {
        fx.make_current(client);
        let c = tcb(client);
        c.regs.rdi = ep;
        c.regs.rsi = MessageInfo::new(label, 0, 0, 1).0;
        c.regs.r10 = label * 10;
        fastpath::call(&mut fx.k, c)
    };
    let reply_recv = |fx: &mut Fx| {
        fx.make_current(server);
        let s = tcb(server);
        s.regs.rdi = ep;
        s.regs.rsi = MessageInfo::new(0, 0, 0, 1).0;
        fastpath::reply_recv(&mut fx.k, s)
    };
    assert!(!call(&mut fx, 1));
    assert_eq!(fx.profile(cs).0, 0);
    fx.sys(client, Syscall::Call, ep, 1, &[10], &[]);
    assert_eq!(tcb(client).state, ThreadState::BlockedOnReply { interruptible: false });
    assert!(!reply_recv(&mut fx));
    fx.sys(server, Syscall::ReplyRecv, ep, 0, &[11], &[]);
    assert_eq!(tcb(client).state, ThreadState::Running);

    // From now on both directions take the fastpath.
    assert!(call(&mut fx, 2));
    assert_eq!((tcb(server).regs.r10, tcb(client).state), (20, ThreadState::BlockedOnReply { interruptible: false }));
    assert!(reply_recv(&mut fx));
    assert_eq!(tcb(client).state, ThreadState::Running);
    assert_eq!(fx.profile(cs).0, profile::mask(profile::CALL));
    assert_eq!(fx.profile(ss).0, profile::mask(profile::RECV) | profile::mask(profile::REPLY_RECV));

    // Denied: the fastpath leaves it to the general path, which denies.
    fx.set_allowed(cs, without(profile::CALL));
    assert!(!call(&mut fx, 3));
    fx.sys(client, Syscall::Call, ep, 3, &[30], &[]);
    assert_eq!(tcb(client).regs.rax, Error::Denied as u64);
    assert_eq!(fx.endpoint(ep).state, EP_RECV, "the server still waits");
    fx.set_allowed(cs, profile::ALL);
    assert!(call(&mut fx, 4));
    fx.set_allowed(ss, without(profile::REPLY_RECV));
    assert!(!reply_recv(&mut fx));
    fx.sys(server, Syscall::ReplyRecv, ep, 0, &[], &[]);
    assert_eq!(tcb(server).regs.rax, Error::Denied as u64);
    assert_eq!(tcb(client).state, ThreadState::BlockedOnReply { interruptible: false }, "no reply went out");
}

// ---- address spaces: ASIDs, and mappings that outlive their address space ----

use crate::object::PagingLevel;
use crate::object::asid::ASID_COUNT;
use crate::object::vspace::{self, Table};

/// Where the address-space tests map their frame: PML4, PDPT, PD and PT index 1 each.
pub(super) const VA: u64 = (1 << 39) | (1 << 30) | (1 << 21) | (1 << 12);
const RW: u64 = ozone_abi::rights::READ | ozone_abi::rights::WRITE;
const DEPTH: u64 = ROOT_RADIX as u64;
/// A present, writable, user entry.
const TABLE_FLAGS: u64 = 0x7;

impl Fx {
    fn delete(&mut self, s: u64) -> u64 {
        self.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[s, DEPTH], &[]).rax
    }

    fn revoke(&mut self, s: u64) -> u64 {
        self.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[s, DEPTH], &[]).rax
    }

    /// A copy of the capability in `src`, in a new slot.
    fn copy(&mut self, src: u64) -> u64 {
        let d = self.free_slot();
        let r = self.invoke(
            SLOT_ROOT_COPY,
            inv::CNODE_COPY,
            &[d, DEPTH, src, DEPTH, ozone_abi::rights::ALL],
            &[SLOT_ROOT_COPY],
        );
        assert_eq!(r.rax, 0, "copy of slot {src}");
        d
    }

    fn map_table(&mut self, table: u64, pml4: u64, va: u64) -> u64 {
        self.invoke(table, inv::PAGING_MAP, &[va], &[pml4]).rax
    }

    pub(super) fn map_frame(&mut self, frame: u64, pml4: u64, va: u64) -> u64 {
        self.invoke(frame, inv::FRAME_MAP, &[va, RW, 0], &[pml4]).rax
    }

    /// The kernel address of the object the capability in slot `s` names.
    pub(super) fn ptr(&self, s: u64) -> u64 {
        match self.w.slot(s).cap() {
            Cap::Frame { ptr, .. } | Cap::Paging { ptr, .. } | Cap::Untyped { ptr, .. } => ptr,
            c => panic!("no object pointer in {c:?}"),
        }
    }

    /// A PML4 with a PDPT, a PD and a PT covering `VA`, all from untyped `ut`: their slots.
    pub(super) fn address_space(&mut self, ut: u64) -> [u64; 4] {
        let pml4 = self.retype_from(ut, ObjectType::Pml4, 0);
        let mut slots = [pml4, 0, 0, 0];
        for (i, ty) in [ObjectType::Pdpt, ObjectType::PageDirectory, ObjectType::PageTable].into_iter().enumerate() {
            slots[i + 1] = self.retype_from(ut, ty, 0);
            assert_eq!(self.map_table(slots[i + 1], pml4, VA), 0, "map {ty:?}");
        }
        slots
    }

    /// A new untyped of `2^bits` bytes carved from the main one.
    fn chunk(&mut self, bits: u64) -> u64 {
        self.retype_from(SLOT_U_MAIN, ObjectType::Untyped, bits)
    }

    /// All of the world's "physical memory", byte for byte.
    fn arena(&self) -> Vec<u8> {
        let (base, len) = (self.w.arena.base(), self.w.arena.size() as usize);
        // SAFETY: the arena is the world's live allocation of `len` initialised bytes; nothing
        // writes it while this copy is made.
        unsafe { core::slice::from_raw_parts(base as *const u8, len) }.to_vec()
    }
}

fn table_at<'a>(kaddr: u64) -> &'a mut Table {
    // SAFETY: the tests pass addresses of 4 KiB, 4 KiB-aligned pieces of the world's arena (live
    // paging objects or frames, or memory freed by paging objects that no object uses yet), and
    // use the reference before the next syscall.
    unsafe { &mut *(kaddr as *mut Table) }
}

/// Index of `VA` in a table of `level`.
fn va_index(level: PagingLevel) -> usize {
    let shift = match level {
        PagingLevel::Pml4 => 39,
        PagingLevel::Pdpt => 30,
        PagingLevel::PageDirectory => 21,
        PagingLevel::PageTable => 12,
    };
    ((VA >> shift) & 0x1ff) as usize
}

fn asid_of(fx: &Fx, pml4: u64) -> crate::object::Asid {
    match fx.w.slot(pml4).cap() {
        Cap::Paging { level: PagingLevel::Pml4, mapped: Some(m), .. } => m.asid,
        c => panic!("a PML4 with an ASID: {c:?}"),
    }
}

#[test]
fn every_pml4_gets_an_asid_and_copies_share_it() {
    let mut fx = Fx::new();
    let free = fx.k.asids.free_count();
    let p = fx.retype(ObjectType::Pml4);
    let a = asid_of(&fx, p);
    assert_eq!(fx.k.asids.lookup(a), Some(fx.ptr(p)));
    assert_eq!(fx.k.asids.free_count(), free - 1);
    // A copy carries it; deleting the copy (not the last capability) keeps it.
    let c = fx.copy(p);
    assert_eq!(asid_of(&fx, c), a);
    assert_eq!(fx.delete(c), 0);
    assert_eq!(fx.k.asids.lookup(a), Some(fx.ptr(p)));
    // Unmap of a PML4 does nothing (it is mapped into nothing) and keeps the ASID.
    assert_eq!(fx.invoke(p, inv::PAGING_UNMAP, &[], &[]).rax, 0);
    assert_eq!(asid_of(&fx, p), a);
    // The last capability takes it away.
    assert_eq!(fx.delete(p), 0);
    assert_eq!(fx.k.asids.lookup(a), None);
    assert_eq!(fx.k.asids.free_count(), free);
}

#[test]
fn retype_of_pml4s_fails_cleanly_when_no_asid_is_free() {
    let mut fx = Fx::new();
    // Leave one ASID.
    while fx.k.asids.free_count() > 1 {
        fx.k.asids.assign(0x1000).expect("free ASID");
    }
    let before = fx.w.slot(SLOT_U_SMALL).cap();
    let s = fx.free_slot();
    fx.free_slot();
    let r = fx.invoke(SLOT_U_SMALL, inv::UNTYPED_RETYPE, &[ObjectType::Pml4 as u64, 0, 0, 0, s, 2], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, Error::DeleteFirst as u64);
    // Nothing changed: no objects, the watermark where it was (not even reset).
    assert!(fx.w.slot(s).cap().is_null() && fx.w.slot(s + 1).cap().is_null());
    assert_eq!(fx.w.slot(SLOT_U_SMALL).cap(), before);
    assert!(matches!(before, Cap::Untyped { size_bits: ARENA_SMALL_BITS, .. }));
    // One fits; other objects do not need ASIDs.
    let p = fx.retype_from(SLOT_U_SMALL, ObjectType::Pml4, 0);
    assert_eq!(fx.k.asids.free_count(), 0);
    let r =
        fx.invoke(SLOT_U_SMALL, inv::UNTYPED_RETYPE, &[ObjectType::Pml4 as u64, 0, 0, 0, s + 1, 1], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, Error::DeleteFirst as u64);
    fx.retype_from(SLOT_U_SMALL, ObjectType::PageTable, 0);
    // Deleting the PML4 gives its ASID back.
    assert_eq!(fx.delete(p), 0);
    assert_eq!(fx.k.asids.free_count(), 1);
    fx.retype_from(SLOT_U_SMALL, ObjectType::Pml4, 0);
}

/// log2 of the size of the world's small untyped (`SLOT_U_SMALL`).
const ARENA_SMALL_BITS: u8 = crate::object::harness::ARENA_BITS - 2;

/// The scenario of the bug ASIDs fix: a frame capability mapped into an address space that is
/// then destroyed (Studio hands the secure-memory server a copy of a program's PML4 capability,
/// the server maps its own frame into the program, the program is killed). Its later Unmap, and
/// its deletion, must not walk the freed PML4 — here the freed memory holds a crafted chain of
/// "tables" leading to an "entry" for the frame, which a walk would clear — and must touch no
/// memory at all.
#[test]
fn unmapping_from_a_deleted_address_space_touches_no_memory() {
    let mut fx = Fx::new();
    // The program: its address space in an untyped chunk of its own.
    let chunk = fx.chunk(16);
    let [pml4, pdpt, pd, pt] = fx.address_space(chunk);
    let objs = [pml4, pdpt, pd, pt].map(|s| fx.ptr(s));
    // The server's frame (from other memory), mapped through a copy of the program's PML4 cap.
    let frame = fx.retype_from(SLOT_U_SMALL, ObjectType::Frame4K, 0);
    let f = fx.ptr(frame);
    let mapped_copy = fx.copy(frame);
    let server_pml4 = fx.copy(pml4);
    assert_eq!(fx.map_frame(mapped_copy, server_pml4, VA), 0);
    assert_eq!(translate(objs[0], VA), Some((f, true)));
    // Also a second frame capability mapped, to be deleted rather than unmapped.
    let mapped_other = fx.copy(frame);
    assert_eq!(fx.map_frame(mapped_other, server_pml4, VA + 0x1000), 0);

    // The program is killed: its chunk revoked (the PML4's last capability in the program's
    // space goes), then the server's copy of the PML4 capability is deleted too.
    assert_eq!(fx.revoke(chunk), 0);
    assert_eq!(fx.delete(server_pml4), 0);
    assert!(matches!(fx.w.slot(mapped_copy).cap(), Cap::Frame { mapped: Some(_), .. }));

    // The freed memory, as a walk from the old PML4 would see it: a chain of present entries
    // down to an entry for the frame at VA, and at VA + 4 KiB, among a filler pattern.
    for (i, &t) in objs.iter().enumerate() {
        let tab = table_at(t);
        tab.0.fill(0x5a5a_5a5a_5a5a_5a5a);
        let level = [PagingLevel::Pml4, PagingLevel::Pdpt, PagingLevel::PageDirectory, PagingLevel::PageTable][i];
        if i < 3 {
            tab.0[va_index(level)] = objs[i + 1] | TABLE_FLAGS;
        } else {
            tab.0[va_index(level)] = f | TABLE_FLAGS;
            tab.0[va_index(level) + 1] = f | TABLE_FLAGS;
        }
    }
    let before = fx.arena();

    // Unmap one, delete the other: both are forgotten, no byte of memory changes.
    assert_eq!(fx.invoke(mapped_copy, inv::FRAME_UNMAP, &[], &[]).rax, 0);
    assert!(matches!(fx.w.slot(mapped_copy).cap(), Cap::Frame { mapped: None, .. }));
    assert_eq!(fx.delete(mapped_other), 0);
    assert!(fx.arena() == before, "a mapping into a deleted address space touched memory");
    // The unmapped capability maps again, anywhere.
    let p2 = fx.address_space(SLOT_U_SMALL)[0];
    assert_eq!(fx.map_frame(mapped_copy, p2, VA), 0);
    assert_eq!(translate(fx.ptr(p2), VA), Some((f, true)));
}

/// As above, with the memory reused by new objects (frames the user fills) rather than left free;
/// and paging-structure capabilities that outlive their address space.
#[test]
fn new_objects_over_a_deleted_address_space_stay_intact() {
    let mut fx = Fx::new();
    let chunk = fx.chunk(16);
    let [pml4, ..] = fx.address_space(chunk);
    let old = fx.ptr(pml4);
    // A table from other memory, mapped into the doomed address space too, with a frame in it.
    let survivor_pt = fx.retype_from(SLOT_U_SMALL, ObjectType::PageTable, 0);
    let pd_va = VA + (1 << 21);
    assert_eq!(fx.map_table(survivor_pt, pml4, pd_va), 0);
    let frame = fx.retype_from(SLOT_U_SMALL, ObjectType::Frame4K, 0);
    let f = fx.ptr(frame);
    let in_survivor = fx.copy(frame);
    assert_eq!(fx.map_frame(in_survivor, pml4, pd_va), 0);
    let mapped = fx.copy(frame);
    assert_eq!(fx.map_frame(mapped, pml4, VA), 0);
    assert_eq!(fx.revoke(chunk), 0);

    // New objects in the same memory: four frames, where the PML4 and its tables were, filled
    // with what a walk from the old PML4 would follow.
    let news: Vec<u64> = (0..4).map(|_| fx.retype_from(chunk, ObjectType::Frame4K, 0)).collect();
    assert_eq!(fx.ptr(news[0]), old, "the new frames reuse the memory");
    for (i, &s) in news.iter().enumerate() {
        let tab = table_at(fx.ptr(s));
        tab.0.fill(0x0123_4567_89ab_cdef);
        let level = [PagingLevel::Pml4, PagingLevel::Pdpt, PagingLevel::PageDirectory, PagingLevel::PageTable][i];
        tab.0[va_index(level)] = if i < 3 { fx.ptr(news[i + 1]) } else { f } | TABLE_FLAGS;
        if level == PagingLevel::PageDirectory {
            tab.0[va_index(level) + 1] = fx.ptr(survivor_pt) | TABLE_FLAGS;
        }
    }
    let before = fx.arena();
    assert_eq!(fx.invoke(mapped, inv::FRAME_UNMAP, &[], &[]).rax, 0);
    assert_eq!(fx.delete(in_survivor), 0);
    // The table whose address space is gone: Unmap forgets the mapping and empties the table
    // (its own memory; nothing else)...
    assert_eq!(fx.invoke(survivor_pt, inv::PAGING_UNMAP, &[], &[]).rax, 0);
    let t = fx.ptr(survivor_pt);
    let mut expected = before.clone();
    let off = (t - fx.w.arena.base()) as usize;
    expected[off..off + 4096].fill(0);
    assert!(fx.arena() == expected, "only the unmapped table itself changed");
    // ... and it maps again, empty.
    let p2 = fx.address_space(SLOT_U_SMALL)[0];
    assert_eq!(fx.map_table(survivor_pt, p2, pd_va), 0);
    assert_eq!(translate(fx.ptr(p2), pd_va), None);
    // Deleting a table capability mapped into a dead address space touches nothing either.
    let chunk2 = fx.chunk(14);
    let p3 = fx.retype_from(chunk2, ObjectType::Pml4, 0);
    let pdpt = fx.retype_from(SLOT_U_SMALL, ObjectType::Pdpt, 0);
    assert_eq!(fx.map_table(pdpt, p3, VA), 0);
    assert_eq!(fx.revoke(chunk2), 0);
    let before = fx.arena();
    assert_eq!(fx.delete(pdpt), 0);
    assert!(fx.arena() == before);
}

/// ASIDs are reused with a new generation: a capability mapped under the old one cannot unmap
/// anything in the new address space, even the same frame at the same address.
#[test]
fn a_reused_asid_does_not_reach_the_new_address_space() {
    let mut fx = Fx::new();
    // Use up the fresh ASIDs, so that the next PML4 gets the one given back.
    while fx.k.asids.free_count() > 1 {
        fx.k.asids.assign(0x1000).expect("free ASID");
    }
    let chunk = fx.chunk(16);
    let [p1, ..] = fx.address_space(chunk);
    let a1 = asid_of(&fx, p1);
    let old_pml4 = fx.ptr(p1);
    let frame = fx.retype_from(SLOT_U_SMALL, ObjectType::Frame4K, 0);
    let (old, new) = (fx.copy(frame), fx.copy(frame));
    assert_eq!(fx.map_frame(old, p1, VA), 0);
    assert_eq!(fx.revoke(chunk), 0);
    let [p2, ..] = fx.address_space(chunk);
    let a2 = asid_of(&fx, p2);
    assert_eq!((a2.index(), a2.generation()), (a1.index(), a1.generation() + 1));
    assert_eq!(fx.ptr(p2), old_pml4, "same memory too");
    assert_eq!(fx.map_frame(new, p2, VA), 0);
    let f = fx.ptr(frame);
    assert_eq!(fx.invoke(old, inv::FRAME_UNMAP, &[], &[]).rax, 0);
    assert_eq!(translate(fx.ptr(p2), VA), Some((f, true)), "the stale capability unmapped nothing");
    assert_eq!(fx.delete(new), 0);
    assert_eq!(translate(fx.ptr(p2), VA), None);
}

/// Tables in a live address space: Unmap needs the last capability and empties the table, so an
/// entry left in a table that was out of the address space (its frame deleted meanwhile) never
/// comes back.
#[test]
fn unmapped_tables_come_back_empty() {
    let mut fx = Fx::new();
    let [p, _pdpt, pd, pt] = fx.address_space(SLOT_U_MAIN);
    let pml4 = fx.ptr(p);
    let frame = fx.retype_from(SLOT_U_SMALL, ObjectType::Frame4K, 0);
    assert_eq!(fx.map_frame(frame, p, VA), 0);
    assert!(translate(pml4, VA).is_some());

    // A copy of a mapped table shares the mapping: neither may Unmap while the other exists.
    let pt_copy = fx.copy(pt);
    assert_eq!(fx.invoke(pt, inv::PAGING_UNMAP, &[], &[]).rax, Error::DeleteFirst as u64);
    assert_eq!(fx.invoke(pt_copy, inv::PAGING_UNMAP, &[], &[]).rax, Error::DeleteFirst as u64);
    assert!(translate(pml4, VA).is_some());
    assert_eq!(fx.delete(pt_copy), 0);

    // The page directory leaves: the page table below it still holds the frame's entry.
    assert_eq!(fx.invoke(pd, inv::PAGING_UNMAP, &[], &[]).rax, 0);
    assert_eq!(translate(pml4, VA), None);
    assert!(table_at(fx.ptr(pd)).0.iter().all(|&e| e == 0), "the unmapped directory is empty");
    // The frame is deleted: its entry cannot be reached to be cleared.
    assert_eq!(fx.delete(frame), 0);
    assert_ne!(table_at(fx.ptr(pt)).0[va_index(PagingLevel::PageTable)], 0);
    // The directory comes back empty, not with the page table (and the freed frame) below it.
    assert_eq!(fx.map_table(pd, p, VA), 0);
    assert_eq!(translate(pml4, VA), None);
    // The page table must be unmapped before it maps again, which empties it.
    assert_eq!(fx.map_table(pt, p, VA), Error::IllegalOperation as u64);
    assert_eq!(fx.invoke(pt, inv::PAGING_UNMAP, &[], &[]).rax, 0);
    assert!(table_at(fx.ptr(pt)).0.iter().all(|&e| e == 0));
    assert_eq!(fx.map_table(pt, p, VA), 0);
    assert_eq!(translate(pml4, VA), None);
    // Unmap of an unmapped table is nothing.
    let spare = fx.retype_from(SLOT_U_SMALL, ObjectType::PageTable, 0);
    assert_eq!(fx.invoke(spare, inv::PAGING_UNMAP, &[], &[]).rax, 0);
}

#[test]
fn a_vspace_must_be_a_pml4_with_an_asid() {
    let mut fx = Fx::new();
    let p = fx.retype(ObjectType::Pml4);
    let frame = fx.retype(ObjectType::Frame4K);
    let pt = fx.retype(ObjectType::PageTable);
    // A PML4 capability without an ASID (only the object layer's tests make those) is refused.
    let Cap::Paging { ptr, .. } = fx.w.slot(p).cap() else { panic!() };
    let bare = fx.free_slot();
    // SAFETY: test only: a second, underived capability to a live PML4, deleted below before the
    // PML4 itself (its finalisation only asks the machine to stop using the address space).
    unsafe {
        mdb::insert_root_cap(fx.w.slot(bare), Cap::Paging { ptr, level: PagingLevel::Pml4, mapped: None });
    }
    assert_eq!(fx.map_frame(frame, bare, VA), Error::InvalidCapability as u64);
    assert_eq!(fx.map_table(pt, bare, VA), Error::InvalidCapability as u64);
    let (ts, _) = fx.thread();
    let r = fx.invoke(ts, inv::TCB_SET_SPACE, &[0], &[SLOT_ROOT_COPY, bare]);
    assert_eq!(r.rax, Error::IllegalOperation as u64);
    assert_eq!(fx.invoke(ts, inv::TCB_SET_SPACE, &[0], &[SLOT_ROOT_COPY, p]).rax, 0);
    // A capability with a made-up ASID is refused the same way.
    let Cap::Paging { mapped: Some(m), .. } = fx.w.slot(p).cap() else { panic!() };
    fx.w.slot(bare).set_cap(Cap::Paging {
        ptr,
        level: PagingLevel::Pml4,
        mapped: Some(crate::object::Mapping {
            asid: crate::object::Asid::from_raw(m.asid.raw() + ASID_COUNT as u64),
            vaddr: 0,
        }),
    });
    assert_eq!(fx.map_table(pt, bare, VA), Error::InvalidCapability as u64);
    fx.w.slot(bare).set_cap(Cap::Paging { ptr, level: PagingLevel::Pml4, mapped: None });
    assert_eq!(fx.delete(bare), 0);
}

/// A table mapped in a live address space whose upper table was deleted (and its memory reused):
/// the recorded walk stops where the deleted table's entry was cleared, so Unmap and deletion
/// below it touch nothing but the table being unmapped.
#[test]
fn tables_below_a_deleted_table_unmap_safely() {
    let mut fx = Fx::new();
    let p = fx.retype_from(SLOT_U_SMALL, ObjectType::Pml4, 0);
    let pdpt = fx.retype_from(SLOT_U_SMALL, ObjectType::Pdpt, 0);
    assert_eq!(fx.map_table(pdpt, p, VA), 0);
    // The page directory in a chunk of its own; the page table and frame elsewhere.
    let chunk = fx.chunk(14);
    let pd = fx.retype_from(chunk, ObjectType::PageDirectory, 0);
    let old_pd = fx.ptr(pd);
    assert_eq!(fx.map_table(pd, p, VA), 0);
    let pt = fx.retype_from(SLOT_U_SMALL, ObjectType::PageTable, 0);
    assert_eq!(fx.map_table(pt, p, VA), 0);
    let frame = fx.retype_from(SLOT_U_SMALL, ObjectType::Frame4K, 0);
    assert_eq!(fx.map_frame(frame, p, VA), 0);
    let pdpt_entry = table_at(fx.ptr(pdpt)).0[va_index(PagingLevel::Pdpt)];
    assert_eq!(pdpt_entry & !0xfff, old_pd);
    // The directory goes (its entry in the PDPT with it); a frame takes its memory and holds a
    // copy of what the directory held.
    assert_eq!(fx.revoke(chunk), 0);
    assert_eq!(table_at(fx.ptr(pdpt)).0[va_index(PagingLevel::Pdpt)], 0);
    let g = fx.retype_from(chunk, ObjectType::Frame4K, 0);
    assert_eq!(fx.ptr(g), old_pd);
    table_at(old_pd).0[va_index(PagingLevel::PageDirectory)] = fx.ptr(pt) | TABLE_FLAGS;
    let before = fx.arena();
    // The frame below: forgotten, nothing written (the page table keeps its now unreachable entry).
    assert_eq!(fx.invoke(frame, inv::FRAME_UNMAP, &[], &[]).rax, 0);
    assert!(fx.arena() == before);
    // The page table: only its own memory is cleared.
    assert_eq!(fx.invoke(pt, inv::PAGING_UNMAP, &[], &[]).rax, 0);
    let mut expected = before;
    let off = (fx.ptr(pt) - fx.w.arena.base()) as usize;
    expected[off..off + 4096].fill(0);
    assert!(fx.arena() == expected);
    assert_eq!(translate(fx.ptr(p), VA), None);
}

// ---- refused invocations name their rule ----

#[test]
fn every_refused_invocation_names_the_rule_that_refused_it() {
    let mut fx = Fx::new();
    let (ts, _) = fx.thread();
    let frame = fx.retype(ObjectType::Frame4K);
    let refused = |fx: &mut Fx, cptr: u64, label: u64, mrs: &[u64], caps: &[u64]| {
        fx.k.last_refusal = None;
        let r = fx.invoke(cptr, label, mrs, caps);
        let why = fx.k.last_refusal.unwrap_or_else(|| panic!("label {label} on {cptr}: no refusal recorded"));
        assert_eq!(r.rax, why.error as u64, "the caller gets the recorded error");
        assert!(!why.why.is_empty());
        why
    };
    // An unknown method, on every kind of object the driver holds.
    for (cptr, object) in [
        (SLOT_U_MAIN, "Untyped"),
        (SLOT_ROOT_COPY, "CNode"),
        (ts, "TCB"),
        (frame, "frame"),
        (SLOT_TELEMETRY, "telemetry"),
    ] {
        let r = refused(&mut fx, cptr, 0x3f, &[], &[]);
        assert_eq!((r.object, r.error, r.why), (object, Error::IllegalOperation, "the object has no such method"));
    }
    // Too few arguments; a missing capability argument.
    let r = refused(&mut fx, ts, inv::TCB_SET_PRIORITY, &[], &[]);
    assert_eq!((r.error, r.why), (Error::InvalidArgument, "the message is shorter than the method's arguments"));
    let r = refused(&mut fx, ts, inv::TCB_SET_PRIORITY, &[1], &[]);
    assert_eq!((r.error, r.why), (Error::InvalidCapability, "a capability argument is missing"));
    // A method's own rules.
    let r = refused(&mut fx, ts, inv::TCB_SET_PRIORITY, &[300], &[ts]);
    assert_eq!((r.error, r.why), (Error::RangeError, "the priority is above the authority's maximum"));
    let r = refused(&mut fx, ts, inv::TCB_SET_TLS_BASE, &[ozone_abi::USER_TOP], &[]);
    assert_eq!((r.error, r.why), (Error::InvalidArgument, "the TLS base is not a user address"));
    let r = refused(&mut fx, frame, inv::FRAME_MAP, &[0x1000, 0, 0], &[ts]);
    assert_eq!((r.error, r.why), (Error::InvalidCapability, "the address-space argument is not a live PML4"));
    // A refusal from a lower layer is explained by its error.
    let r =
        refused(&mut fx, SLOT_U_MAIN, inv::UNTYPED_RETYPE, &[ObjectType::Tcb as u64, 0, 0, 0, 1, 1], &[SLOT_ROOT_COPY]);
    assert_eq!((r.error, r.why), (Error::DeleteFirst, "the destination is occupied or the object is in use"));
    // A successful invocation records nothing.
    fx.k.last_refusal = None;
    assert_eq!(fx.invoke(frame, inv::FRAME_GET_ADDRESS, &[], &[]).rax, 0);
    assert_eq!(fx.k.last_refusal, None);
}
