//! A model of the kernel for the host tests: capabilities in CNodes with a derivation tree,
//! untyped memory with watermarks, and objects that go when their last capability does.
//!
//! It follows the rules the real kernel documents (docs/abi.md, docs/capabilities.md): Retype
//! places an object at the untyped's aligned watermark (reset first when the untyped has no
//! children); copy, mint and move need an empty destination (`DeleteFirst`) and a source
//! (`FailedLookup`); revoke deletes every descendant; an object whose last capability is deleted
//! is destroyed, and with a CNode every capability in it. `build` makes what `process::build`
//! makes (a CNode, an address space, one frame per page of the image, stack, heap, IPC buffer and
//! information page, a few page tables, a thread) from the program's allocator, so quotas and
//! reclamation are exercised.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::RefCell;

use ozone_abi::Error;
use ozone_abi::bootinfo::slot;
use ozone_abi::object::ObjectType;
use ozone_agent_sdk::process::{Alloc, Layout, Process, SpawnError};
use ozone_agent_sdk::protocol::studio::Telemetry;

use crate::kernel::Kernel;
use crate::pool::object_size;

/// Studio's own CNode object.
pub(crate) const STUDIO_CNODE: usize = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Obj {
    CNode {
        radix: u64,
    },
    Untyped {
        size: u64,
        watermark: u64,
    },
    Tcb {
        priority: u64,
        mcp: u64,
        fault_ep: u64,
        running: bool,
    },
    Other(ObjectType),
    IoPorts,
    Irq(u64),
    /// Studio's endpoint, its pool untyped and everything else the root task gave it.
    Given,
}

#[derive(Clone, Copy, Debug)]
pub struct Cap {
    pub obj: usize,
    pub badge: u64,
    pub parent: Option<(usize, u64)>,
}

#[derive(Default)]
pub struct State {
    /// `None`: destroyed.
    pub objs: Vec<Option<Obj>>,
    /// (CNode object, slot) → capability.
    pub caps: BTreeMap<(usize, u64), Cap>,
    /// (address-space object, page address) → frame object.
    pub mapped: BTreeMap<(usize, u64), usize>,
    pub powered_off: Option<u64>,
    /// Threads given the kernel's debug channel (objects).
    pub debug_output: Vec<usize>,
    /// The notification objects signalled, with the badge of the capability used, in order.
    pub signals: Vec<(usize, u64)>,
    /// The sends cancelled (CancelBadgedSends): (endpoint object, badge), in order.
    pub cancelled: Vec<(usize, u64)>,
    /// Threads' syscall profiles (thread object → profile; a thread not here has the profile a
    /// new thread has: nothing used, everything allowed, no window).
    pub profiles: BTreeMap<usize, ThreadProfile>,
    /// Traced threads: thread object → (ring frame object, the records the test made it write).
    pub traces: BTreeMap<usize, (usize, Vec<[u64; 2]>)>,
    /// Rings mapped in Studio's address space: address → ring frame object.
    pub rings: BTreeMap<u64, usize>,
    /// Records the kernel dropped from a traced thread's full ring (thread object → count; the
    /// test says how many).
    pub trace_dropped: BTreeMap<usize, u64>,
    /// What the reader last acknowledged of a traced thread's ring (thread object → records).
    pub trace_acked: BTreeMap<usize, u64>,
    /// Threads' counters as the test sets them (thread object → counters; others read as one
    /// syscall and nothing else).
    pub cpu: BTreeMap<usize, ozone_agent_sdk::protocol::studio::Telemetry>,
    /// Resume fails (as the kernel's would for a thread it cannot resume).
    pub refuse_resume: bool,
}

/// A thread's syscall profile, as the kernel keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadProfile {
    pub used: u64,
    pub allowed: u64,
    pub window: Option<u64>,
}

impl Default for ThreadProfile {
    fn default() -> Self {
        ThreadProfile { used: 0, allowed: ozone_abi::profile::ALL, window: None }
    }
}

pub struct Fake {
    pub s: RefCell<State>,
}

impl Fake {
    /// A kernel where Studio's CNode holds `untyped` (slot, size in bytes) and the capabilities in
    /// `given` (Studio's own thread, the telemetry capability, ...).
    pub fn new(untyped: &[(u64, u64)], given: &[u64]) -> Fake {
        let mut s = State { objs: alloc::vec![Some(Obj::CNode { radix: 12 })], ..State::default() };
        for &(at, size) in untyped {
            s.objs.push(Some(Obj::Untyped { size, watermark: 0 }));
            s.caps.insert((STUDIO_CNODE, at), Cap { obj: s.objs.len() - 1, badge: 0, parent: None });
        }
        for &at in given {
            s.objs.push(Some(Obj::Given));
            s.caps.insert((STUDIO_CNODE, at), Cap { obj: s.objs.len() - 1, badge: 0, parent: None });
        }
        Fake { s: RefCell::new(s) }
    }

    /// The object Studio's `at` names, if it holds one.
    pub fn obj_at(&self, at: u64) -> Option<Obj> {
        let s = self.s.borrow();
        s.caps.get(&(STUDIO_CNODE, at)).and_then(|c| s.objs[c.obj].clone())
    }

    /// The capabilities in the program CNode Studio's `cnode` names: (slot, badge, object).
    pub fn caps_in(&self, cnode: u64) -> Vec<(u64, u64, usize)> {
        let s = self.s.borrow();
        let Some(c) = s.caps.get(&(STUDIO_CNODE, cnode)) else { return Vec::new() };
        s.caps.iter().filter(|((o, _), _)| *o == c.obj).map(|((_, at), cap)| (*at, cap.badge, cap.obj)).collect()
    }

    /// Live objects.
    pub fn live(&self) -> usize {
        self.s.borrow().objs.iter().filter(|o| o.is_some()).count()
    }

    /// Capabilities anywhere.
    pub fn cap_count(&self) -> usize {
        self.s.borrow().caps.len()
    }

    /// Retype from Studio's `untyped` into slot `dest` of the CNode `(cnode, radix)`.
    fn retype_at(
        &self,
        untyped: u64,
        ty: ObjectType,
        size_bits: u64,
        (cnode, radix): (usize, u64),
        dest: u64,
    ) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let u = *s.caps.get(&(STUDIO_CNODE, untyped)).ok_or(Error::FailedLookup)?;
        s.empty(cnode, radix, dest)?;
        let fresh = !s.has_children((STUDIO_CNODE, untyped));
        let Some(Obj::Untyped { size, watermark }) = s.objs[u.obj].as_mut() else {
            return Err(Error::InvalidCapability);
        };
        if fresh {
            *watermark = 0;
        }
        let bytes = object_size(ty, size_bits);
        let at = watermark.next_multiple_of(bytes);
        if at + bytes > *size {
            return Err(Error::NotEnoughMemory);
        }
        *watermark = at + bytes;
        let obj = match ty {
            ObjectType::Untyped => Obj::Untyped { size: bytes, watermark: 0 },
            ObjectType::CNode => Obj::CNode { radix: size_bits },
            ObjectType::Tcb => Obj::Tcb { priority: 0, mcp: 0, fault_ep: 0, running: false },
            other => Obj::Other(other),
        };
        s.new_obj(obj, (cnode, dest), (STUDIO_CNODE, untyped));
        Ok(())
    }
}

impl State {
    /// The traced thread `t` makes an event: written to its ring as the kernel does, or dropped
    /// if the ring holds 256 records not yet acknowledged.
    pub fn emit(&mut self, t: usize, words: [u64; 2]) {
        let acked = self.trace_acked.get(&t).copied().unwrap_or(0);
        let records = &mut self.traces.get_mut(&t).expect("traced").1;
        if records.len() as u64 - acked >= ozone_abi::trace::RING_RECORDS as u64 {
            *self.trace_dropped.entry(t).or_default() += 1;
        } else {
            records.push(words);
        }
    }

    /// Delete every capability derived from the one at `at` (objects without capabilities go).
    fn revoke_at(&mut self, at: (usize, u64)) -> Result<(), Error> {
        if !self.caps.contains_key(&at) {
            return Err(Error::FailedLookup);
        }
        loop {
            let mut below = alloc::vec![at];
            let mut i = 0;
            while i < below.len() {
                let p = below[i];
                below.extend(self.caps.iter().filter(|(_, c)| c.parent == Some(p)).map(|(k, _)| *k));
                i += 1;
            }
            if below.len() == 1 {
                return Ok(());
            }
            for k in &below[1..] {
                self.caps.remove(k);
            }
            self.collect();
        }
    }

    pub fn cnode_of(&self, cnode: u64) -> Result<(usize, u64), Error> {
        let c = self.caps.get(&(STUDIO_CNODE, cnode)).ok_or(Error::FailedLookup)?;
        match self.objs[c.obj] {
            Some(Obj::CNode { radix }) => Ok((c.obj, radix)),
            _ => Err(Error::InvalidCapability),
        }
    }

    fn empty(&self, cnode: usize, radix: u64, at: u64) -> Result<(), Error> {
        if at >= 1 << radix {
            return Err(Error::RangeError);
        }
        if self.caps.contains_key(&(cnode, at)) { Err(Error::DeleteFirst) } else { Ok(()) }
    }

    fn has_children(&self, at: (usize, u64)) -> bool {
        self.caps.values().any(|c| c.parent == Some(at))
    }

    /// Delete the capability at `at`; its children become its parent's.
    fn delete(&mut self, at: (usize, u64)) {
        if let Some(cap) = self.caps.remove(&at) {
            for c in self.caps.values_mut() {
                if c.parent == Some(at) {
                    c.parent = cap.parent;
                }
            }
        }
        self.collect();
    }

    /// Destroy objects nobody holds, and with a CNode what it held.
    fn collect(&mut self) {
        loop {
            let held: alloc::collections::BTreeSet<usize> = self.caps.values().map(|c| c.obj).collect();
            let dead: Vec<usize> =
                (1..self.objs.len()).filter(|o| self.objs[*o].is_some() && !held.contains(o)).collect();
            if dead.is_empty() {
                return;
            }
            for o in dead {
                self.objs[o] = None;
                self.caps.retain(|(cnode, _), _| *cnode != o);
                self.mapped.retain(|(vspace, _), frame| *vspace != o && *frame != o);
            }
        }
    }

    fn new_obj(&mut self, obj: Obj, dest: (usize, u64), parent: (usize, u64)) -> usize {
        self.objs.push(Some(obj));
        let o = self.objs.len() - 1;
        self.caps.insert(dest, Cap { obj: o, badge: 0, parent: Some(parent) });
        o
    }

    /// The thread object in Studio's slot `at`.
    pub fn tcb_obj(&self, at: u64) -> Result<usize, Error> {
        let c = *self.caps.get(&(STUDIO_CNODE, at)).ok_or(Error::FailedLookup)?;
        match self.objs[c.obj] {
            Some(Obj::Tcb { .. }) => Ok(c.obj),
            _ => Err(Error::InvalidCapability),
        }
    }

    fn tcb(&mut self, at: u64) -> Result<&mut Obj, Error> {
        let c = *self.caps.get(&(STUDIO_CNODE, at)).ok_or(Error::FailedLookup)?;
        match self.objs[c.obj].as_mut() {
            Some(t @ Obj::Tcb { .. }) => Ok(t),
            _ => Err(Error::InvalidCapability),
        }
    }
}

impl Kernel for Fake {
    fn retype(&self, untyped: u64, ty: ObjectType, size_bits: u64, dest: u64) -> Result<(), Error> {
        self.retype_at(untyped, ty, size_bits, (STUDIO_CNODE, 12), dest)
    }

    fn retype_into(&self, untyped: u64, ty: ObjectType, size_bits: u64, cnode: u64, dest: u64) -> Result<(), Error> {
        let at = self.s.borrow().cnode_of(cnode)?;
        self.retype_at(untyped, ty, size_bits, at, dest)
    }

    fn untyped_free(&self, untyped: u64) -> Result<(u64, bool), Error> {
        let s = self.s.borrow();
        let u = s.caps.get(&(STUDIO_CNODE, untyped)).ok_or(Error::FailedLookup)?;
        let children = s.has_children((STUDIO_CNODE, untyped));
        match s.objs[u.obj] {
            Some(Obj::Untyped { size, watermark }) => Ok((if children { size - watermark } else { size }, children)),
            _ => Err(Error::InvalidCapability),
        }
    }

    fn revoke(&self, at: u64) -> Result<(), Error> {
        self.s.borrow_mut().revoke_at((STUDIO_CNODE, at))
    }

    fn delete_in(&self, cnode: u64, at: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let (c, _) = s.cnode_of(cnode)?;
        s.revoke_at((c, at))?;
        s.delete((c, at));
        Ok(())
    }

    fn copy_into(&self, cnode: u64, dest: u64, src: u64, _rights: u64) -> Result<(), Error> {
        self.mint_into(cnode, dest, src, _rights, 0)
    }

    fn mint_own(&self, dest: u64, src: u64, _rights: u64, badge: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let from = *s.caps.get(&(STUDIO_CNODE, src)).ok_or(Error::FailedLookup)?;
        s.empty(STUDIO_CNODE, 12, dest)?;
        s.caps.insert((STUDIO_CNODE, dest), Cap { obj: from.obj, badge, parent: Some((STUDIO_CNODE, src)) });
        Ok(())
    }

    fn cancel_badged_sends(&self, ep: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let cap = *s.caps.get(&(STUDIO_CNODE, ep)).ok_or(Error::FailedLookup)?;
        s.cancelled.push((cap.obj, cap.badge));
        Ok(())
    }

    fn delete_own(&self, at: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        if !s.caps.contains_key(&(STUDIO_CNODE, at)) {
            return Err(Error::FailedLookup);
        }
        s.delete((STUDIO_CNODE, at));
        Ok(())
    }

    fn mint_into(&self, cnode: u64, dest: u64, src: u64, _rights: u64, badge: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let (c, radix) = s.cnode_of(cnode)?;
        let from = *s.caps.get(&(STUDIO_CNODE, src)).ok_or(Error::FailedLookup)?;
        s.empty(c, radix, dest)?;
        s.caps.insert((c, dest), Cap { obj: from.obj, badge, parent: Some((STUDIO_CNODE, src)) });
        Ok(())
    }

    fn move_into(&self, cnode: u64, dest: u64, src: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let (c, radix) = s.cnode_of(cnode)?;
        let cap = *s.caps.get(&(STUDIO_CNODE, src)).ok_or(Error::FailedLookup)?;
        s.empty(c, radix, dest)?;
        s.caps.remove(&(STUDIO_CNODE, src));
        s.caps.insert((c, dest), cap);
        for k in s.caps.values_mut() {
            if k.parent == Some((STUDIO_CNODE, src)) {
                k.parent = Some((c, dest));
            }
        }
        Ok(())
    }

    fn holds_cap(&self, cnode: u64, at: u64) -> bool {
        let s = self.s.borrow();
        s.cnode_of(cnode).is_ok_and(|(c, _)| s.caps.contains_key(&(c, at)))
    }

    fn build(
        &self,
        child: &dyn Alloc,
        _own: &dyn Alloc,
        image: &[u8],
        layout: Layout,
        cnode_radix: u64,
        priority: u64,
        fault_ep: u64,
        info: &[u8],
    ) -> Result<Process, SpawnError> {
        if info.len() > 4096 {
            return Err(SpawnError::TooLarge);
        }
        let cnode = child.retype(ObjectType::CNode, cnode_radix)?;
        let vspace = child.retype(ObjectType::Pml4, 0)?;
        let pages = image.len().div_ceil(4096) as u64 + (layout.stack_size + layout.heap_size) / 4096 + 2;
        for _ in 0..4 {
            child.retype(ObjectType::PageTable, 0)?;
        }
        let mut ipc_frame = 0;
        for _ in 0..pages {
            ipc_frame = child.retype(ObjectType::Frame4K, 0)?;
        }
        let tcb = child.retype(ObjectType::Tcb, 0)?;
        // The kernel copies the fault endpoint Studio names into the thread's fault-handler slot:
        // the model keeps that copy's badge.
        let badge =
            self.s.borrow().caps.get(&(STUDIO_CNODE, fault_ep)).ok_or(SpawnError::Kernel(Error::FailedLookup))?.badge;
        if let Ok(Obj::Tcb { priority: p, fault_ep: f, .. }) = self.s.borrow_mut().tcb(tcb) {
            *p = priority;
            *f = badge;
        }
        Ok(Process { tcb, cnode, vspace, ipc_frame, entry: layout.bias + 0x1000, layout })
    }

    fn set_mc_priority(&self, tcb: u64, to: u64) -> Result<(), Error> {
        if let Obj::Tcb { mcp, .. } = self.s.borrow_mut().tcb(tcb)? {
            *mcp = to;
        }
        Ok(())
    }

    fn set_priority(&self, tcb: u64, to: u64) -> Result<(), Error> {
        if let Obj::Tcb { priority, .. } = self.s.borrow_mut().tcb(tcb)? {
            *priority = to;
        }
        Ok(())
    }

    fn suspend(&self, tcb: u64) -> Result<(), Error> {
        if let Obj::Tcb { running, .. } = self.s.borrow_mut().tcb(tcb)? {
            *running = false;
        }
        Ok(())
    }

    fn resume(&self, tcb: u64) -> Result<(), Error> {
        if self.s.borrow().refuse_resume {
            return Err(Error::IllegalOperation);
        }
        if let Obj::Tcb { running, .. } = self.s.borrow_mut().tcb(tcb)? {
            *running = true;
        }
        Ok(())
    }

    fn bind_notification(&self, tcb: u64, _ntfn: u64) -> Result<(), Error> {
        // Studio's own thread is one of the capabilities the root task gave it.
        if tcb == slot::TCB {
            return Ok(());
        }
        self.s.borrow_mut().tcb(tcb).map(|_| ())
    }

    fn signal(&self, ntfn: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let cap = s.caps.get(&(STUDIO_CNODE, ntfn)).ok_or(Error::InvalidCapability)?;
        let signal = (cap.obj, cap.badge);
        s.signals.push(signal);
        Ok(())
    }

    fn issue_io_ports(&self, _first: u64, _last: u64, cnode: u64, dest: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let (c, radix) = s.cnode_of(cnode)?;
        s.empty(c, radix, dest)?;
        s.objs.push(Some(Obj::IoPorts));
        let o = s.objs.len() - 1;
        s.caps.insert((c, dest), Cap { obj: o, badge: 0, parent: None });
        Ok(())
    }

    fn irq_handler(&self, irq: u64, dest: u64, _ntfn: Option<u64>) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        if s.objs.contains(&Some(Obj::Irq(irq))) {
            return Err(Error::DeleteFirst);
        }
        s.empty(STUDIO_CNODE, 12, dest)?;
        s.objs.push(Some(Obj::Irq(irq)));
        let o = s.objs.len() - 1;
        s.caps.insert((STUDIO_CNODE, dest), Cap { obj: o, badge: 0, parent: None });
        Ok(())
    }

    fn start(&self, p: &Process) -> Result<(), Error> {
        if let Obj::Tcb { running, .. } = self.s.borrow_mut().tcb(p.tcb)? {
            *running = true;
        }
        Ok(())
    }

    fn map_frame(&self, mem: &dyn Alloc, frame: u64, vspace: u64, va: u64) -> Result<(), Error> {
        let (f, v) = {
            let s = self.s.borrow();
            let f = s.caps.get(&(STUDIO_CNODE, frame)).ok_or(Error::FailedLookup)?.obj;
            let v = s.caps.get(&(STUDIO_CNODE, vspace)).ok_or(Error::FailedLookup)?.obj;
            (f, v)
        };
        if va.is_multiple_of(2 << 20) {
            mem.retype(ObjectType::PageTable, 0)?;
        }
        let mut s = self.s.borrow_mut();
        if s.mapped.contains_key(&(v, va)) {
            return Err(Error::DeleteFirst);
        }
        s.mapped.insert((v, va), f);
        Ok(())
    }

    fn telemetry(&self, tcb: u64) -> Result<Telemetry, Error> {
        self.s.borrow_mut().tcb(tcb)?;
        let t = self.s.borrow().tcb_obj(tcb)?;
        Ok(self.s.borrow().cpu.get(&t).copied().unwrap_or(Telemetry { syscalls: 1, ..Telemetry::default() }))
    }

    fn profile(&self, tcb: u64) -> Result<(u64, u64, Option<u64>), Error> {
        let s = self.s.borrow();
        let p = s.profiles.get(&s.tcb_obj(tcb)?).copied().unwrap_or_default();
        Ok((p.used, p.allowed, p.window))
    }

    fn set_profile(&self, tcb: u64, allowed: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let t = s.tcb_obj(tcb)?;
        let p = s.profiles.entry(t).or_default();
        (p.allowed, p.window) = (allowed, None);
        Ok(())
    }

    fn arm_profile(&self, tcb: u64, allowed: u64, learn: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let t = s.tcb_obj(tcb)?;
        let p = s.profiles.entry(t).or_default();
        (p.allowed, p.window) = (allowed, Some(learn));
        Ok(())
    }

    fn power_off(&self, status: u64) {
        self.s.borrow_mut().powered_off = Some(status);
    }

    fn set_debug_output(&self, tcb: u64, on: bool) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let t = s.caps.get(&(STUDIO_CNODE, tcb)).ok_or(Error::FailedLookup)?.obj;
        if !matches!(s.objs[t], Some(Obj::Tcb { .. })) {
            return Err(Error::InvalidCapability);
        }
        s.debug_output.retain(|x| *x != t);
        if on {
            s.debug_output.push(t);
        }
        Ok(())
    }

    fn map_ring(&self, mem: &dyn Alloc, ring: u64, va: u64) -> Result<(), Error> {
        let f = self.s.borrow().caps.get(&(STUDIO_CNODE, ring)).ok_or(Error::FailedLookup)?.obj;
        if va.is_multiple_of(2 << 20) {
            mem.retype(ObjectType::PageTable, 0)?;
        }
        let mut s = self.s.borrow_mut();
        // A frame that is gone is no longer mapped (its capability's deletion unmapped it).
        if s.rings.get(&va).is_some_and(|&old| s.objs.get(old).is_some_and(Option::is_some)) {
            return Err(Error::DeleteFirst);
        }
        s.rings.insert(va, f);
        Ok(())
    }

    fn trace(&self, tcb: u64, ring: u64) -> Result<(), Error> {
        let mut s = self.s.borrow_mut();
        let t = s.tcb_obj(tcb)?;
        let f = s.caps.get(&(STUDIO_CNODE, ring)).ok_or(Error::FailedLookup)?.obj;
        s.traces.insert(t, (f, Vec::new()));
        Ok(())
    }

    fn trace_ack(&self, tcb: u64, upto: u64) -> Result<(u64, u64), Error> {
        let mut s = self.s.borrow_mut();
        let t = s.tcb_obj(tcb)?;
        // A ring whose frame is gone traces nothing any more.
        let (f, records) = s.traces.get(&t).ok_or(Error::IllegalOperation)?;
        if s.objs.get(*f).is_none_or(Option::is_none) {
            return Err(Error::IllegalOperation);
        }
        let written = records.len() as u64;
        if upto > written {
            return Err(Error::RangeError);
        }
        s.trace_acked.insert(t, upto);
        Ok((written, s.trace_dropped.get(&t).copied().unwrap_or(0)))
    }

    fn ring_record(&self, va: u64, seq: u64) -> [u64; 2] {
        // (The records are kept whole, not in a ring of 256: a test that wants the kernel's
        // drops makes them with `State::emit`.)
        let s = self.s.borrow();
        let f = s.rings.get(&va).expect("Studio reads only rings it mapped");
        assert!(s.objs.get(*f).is_some_and(Option::is_some), "Studio read a ring whose frame is gone");
        s.traces.values().find(|(r, _)| r == f).and_then(|(_, recs)| recs.get(seq as usize).copied()).unwrap_or([0, 0])
    }
}

/// Studio's slots that hold what the root task gave it (its thread, address space, telemetry).
pub const GIVEN: [u64; 4] = [slot::TCB, slot::VSPACE, slot::TELEMETRY, slot::CNODE];
