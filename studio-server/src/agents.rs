//! Studio's state and its service: programs (start, stop, restart), the name service, grants and
//! revocations, faults, memory and the decision log.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;

use ozone_abi::bootinfo::{BootInfo, slot};
use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, rights};
use ozone_agent_sdk::kernel as k;
use ozone_agent_sdk::println;
use ozone_agent_sdk::process::{self, Alloc, Process, copy_into, mint_into, move_into};
use ozone_agent_sdk::protocol::start::{START_MAGIC, StartInfo, slot as pslot};
use ozone_agent_sdk::protocol::studio::{self as proto, AgentInfo, AgentState, CapInfo, method};
use ozone_agent_sdk::protocol::system::{COMPILED_NAME, Kind, Program, SystemDescription};
use ozone_agent_sdk::protocol::{MAX_PAYLOAD, ServiceError};
use ozone_agent_sdk::root::{self, Root};
use ozone_agent_sdk::rpc::{self, Incoming, Request, Response, Server};
use ozone_agent_sdk::sys::{self, Msg, Received};
use ozone_loader::initrd::Initrd;

use crate::log::Log;
use crate::objects::{ChunkAlloc, OwnAlloc};
use crate::pool::{Pool, PoolUntyped, Tally, chunk_bits};
use crate::{keys, layout};
use ozone_agent_sdk::slots::Slots;

/// Studio's endpoint to the root task (see the root task).
const ROOT_EP: u64 = 9;
/// Messages to the root task.
const ROOT_HELLO: u64 = 1;
const ROOT_SHUTDOWN: u64 = 2;
/// Badge bit of fault messages (the rest is the program's id).
const FAULT_BIT: u64 = 1 << 32;
/// What `caps` calls the console log capability in the `LOG` slot.
const LOG_CAP: &str = "log (console)";
/// Studio's own memory: endpoints, notifications, its scratch page tables.
const OWN_BITS: u8 = 23;
/// Every program's CNode: 2^8 slots (Studio uses slots below 256 for what it gives).
const CNODE_RADIX: u64 = 8;
/// Programs with their own pool (`vspaces`) manage the slots from 256 up themselves: 2^12 slots.
const POOL_CNODE_RADIX: u64 = 12;
/// Every program's stack.
const STACK_SIZE: u64 = 64 << 10;
/// Restarts allowed per program before Studio gives up on it.
const MAX_RESTARTS: u32 = 5;
/// COM1.
const SERIAL_FIRST_PORT: u64 = 0x3f8;
const SERIAL_LAST_PORT: u64 = 0x3ff;
const SERIAL_IRQ: u64 = 4;

static ROOT: Root = Root::new();

/// A capability Studio put in a program's CNode, for `caps` and `revoke`.
struct Held {
    slot: u64,
    what: String,
    /// The interface, for endpoint capabilities obtained by lookup or grant.
    interface: Option<String>,
    /// For copies of another program's objects: that program's id (the copy goes with it).
    from: Option<u64>,
}

/// One program of the description.
struct Agent {
    id: u64,
    prog: Program,
    state: AgentState,
    restarts: u32,
    /// The chunk (slot, size_bits) while it runs.
    chunk: Option<(u64, u8)>,
    mem: Option<ChunkAlloc<'static>>,
    proc: Option<Process>,
    held: Vec<Held>,
    /// Interfaces granted at run time beyond the description's `uses`.
    granted: Vec<String>,
    /// Interfaces revoked at run time (they override the description).
    revoked: Vec<String>,
    heap_end: u64,
    /// One endpoint per interface it provides (Studio's slots; they outlive restarts).
    endpoints: Vec<(String, u64)>,
}

impl Agent {
    fn may_use(&self, interface: &str) -> bool {
        !self.revoked.iter().any(|r| r == interface)
            && (self.prog.may_use(interface) || self.granted.iter().any(|g| g == interface))
    }

    fn used(&self) -> u64 {
        self.mem.as_ref().map_or(0, |m| m.used())
    }

    /// A slot of its CNode Studio has not used (Studio uses slots below 2^8 only).
    fn free_child_slot(&self) -> Option<u64> {
        (pslot::FIRST_FREE..1 << CNODE_RADIX).find(|s| !self.held.iter().any(|h| h.slot == *s))
    }
}

pub struct Studio {
    desc: SystemDescription,
    initrd: Initrd<'static>,
    seed: [u8; 32],
    protocol_key: u64,
    layout_key: u64,
    slots: &'static RefCell<Slots>,
    own: OwnAlloc<'static>,
    pool: Pool,
    agents: Vec<Agent>,
    log: Log,
    /// Studio's endpoint (programs hold badged copies).
    ep: u64,
    /// The console server (the program with the `serial` device) and Studio's badged copy of its
    /// notification ([`proto::LOG_SIGNAL`]), while it runs; `true` once it prints Studio's
    /// decisions ([`method::FOLLOW_LOG`]), after which Studio signals instead of printing them.
    log_signal: Option<(usize, u64, bool)>,
}

/// Why a program could not be started: the answer for whoever asked, and the words for the log.
struct StartFailure {
    answer: ServiceError,
    why: String,
}

impl StartFailure {
    /// A kernel operation failed while doing `what`: out of memory means the quota is used up.
    fn kernel(e: Error, what: &str) -> StartFailure {
        let answer = if e == Error::NotEnoughMemory { ServiceError::QuotaExceeded } else { ServiceError::KernelError };
        StartFailure { answer, why: format!("{what}: {e:?}") }
    }

    fn other(why: String) -> StartFailure {
        StartFailure { answer: ServiceError::KernelError, why }
    }
}

impl From<Error> for StartFailure {
    fn from(e: Error) -> StartFailure {
        StartFailure::kernel(e, "a kernel operation")
    }
}

fn oom(e: Error) -> String {
    format!("{e:?}")
}

/// Ask the root task to end the system with `status`.
pub fn shutdown(status: u64) {
    let _ = sys::call(ROOT_EP, Msg::new(ROOT_SHUTDOWN, &[status]));
}

impl Studio {
    pub fn boot() -> Result<Studio, String> {
        let info: &'static BootInfo = root::boot_info().ok_or("no boot information")?;
        ROOT.init(info).map_err(|e| format!("cannot set up the IPC buffer: {e:?}"))?;
        // SAFETY: the root task mapped Studio's heap, writable, for Studio alone.
        unsafe { ozone_agent_sdk::heap::init(root::HEAP_BASE, root::STUDIO_HEAP) };
        match sys::call(ROOT_EP, Msg::new(ROOT_HELLO, &[run_address()])) {
            Ok(r) if r.msg.info.label() == 0 => println!("[studio] the root task answered"),
            other => return Err(format!("no answer from the root task: {other:?}")),
        }
        // SAFETY: the root task mapped the initrd read-only at this address for this many bytes,
        // for as long as Studio runs.
        let bytes: &'static [u8] =
            unsafe { core::slice::from_raw_parts(info.initrd_vaddr as *const u8, info.initrd_size as usize) };
        let initrd = Initrd::new(bytes).map_err(|e| format!("bad initrd: {e}"))?;
        let seed: [u8; 32] = initrd
            .file("instance.seed")
            .and_then(|s| s.try_into().ok())
            .ok_or("the initrd has no 32-byte instance.seed")?;
        let desc_bytes = initrd.file(COMPILED_NAME).ok_or("the initrd has no system description (system.bin)")?;
        let desc = SystemDescription::from_postcard(desc_bytes)
            .map_err(|e| format!("the system description does not decode: {e}"))?;
        desc.validate(&|b| initrd.file(b).is_some()).map_err(|errs| errs.join("; "))?;
        // Memory: every non-device untyped is the pool.
        let mut untyped = Vec::new();
        for i in 0..(info.untyped.end - info.untyped.start) as usize {
            let u = info.untyped_list[i];
            if u.is_device == 0 {
                let slot = info.untyped.start + i as u64;
                let mut tally = Tally::new(1 << u.size_bits);
                // The root task built Studio from one of them: start from what the kernel says.
                let ki = k::untyped_get_info(slot).map_err(|e| format!("untyped {slot}: {e:?}"))?;
                if ki.has_children {
                    tally.watermark = tally.size - ki.free;
                }
                untyped.push(PoolUntyped { slot, tally });
            }
        }
        let mut pool = Pool::new(untyped);
        let slots: &'static RefCell<Slots> =
            Box::leak(Box::new(RefCell::new(Slots::new(info.empty.start, info.empty.end))));
        let own_chunk = carve(&mut pool, slots, OWN_BITS).map_err(|e| format!("no memory for Studio: {e:?}"))?;
        let own = OwnAlloc { slots, untyped: own_chunk, tally: RefCell::new(Tally::new(1 << OWN_BITS)) };
        let quotas: u64 = desc.programs.iter().map(|p| p.memory_kib as u64 * 1024).sum();
        if quotas > pool.free() {
            return Err(format!("the quotas need {} KiB but only {} KiB are free", quotas >> 10, pool.free() >> 10));
        }
        let ep = own.retype(ObjectType::Endpoint, 0).map_err(oom)?;
        let mut studio = Studio {
            protocol_key: keys::derive_u64(&seed, "protocol"),
            layout_key: keys::derive_u64(&seed, "layout"),
            desc,
            initrd,
            seed,
            slots,
            own,
            pool,
            agents: Vec::new(),
            log: Log::new(),
            ep,
            log_signal: None,
        };
        for (i, p) in studio.desc.programs.clone().into_iter().enumerate() {
            let mut endpoints = Vec::new();
            for name in &p.provides {
                endpoints.push((name.clone(), studio.own.retype(ObjectType::Endpoint, 0).map_err(oom)?));
            }
            studio.agents.push(Agent {
                id: i as u64 + 1,
                prog: p,
                state: AgentState::Stopped,
                restarts: 0,
                chunk: None,
                mem: None,
                proc: None,
                held: Vec::new(),
                granted: Vec::new(),
                revoked: Vec::new(),
                heap_end: 0,
                endpoints,
            });
        }
        studio.decide(format!(
            "system: {} programs, {} MiB of memory, {} KiB free for quotas",
            studio.agents.len(),
            studio.pool.total >> 20,
            studio.pool.free() >> 10
        ));
        for i in 0..studio.agents.len() {
            if studio.agents[i].prog.start {
                let _ = studio.start(i, "in the system description");
            }
        }
        Ok(studio)
    }

    /// Record a decision with its reason.
    fn decide(&mut self, text: String) {
        // Once the console prints the decisions, it is told (a signal never blocks Studio);
        // before, and whenever it is down, Studio prints them through the kernel's channel.
        match self.log_signal {
            Some((_, signal, true)) => {
                self.log.record(text);
                let _ = sys::send(signal, Msg::new(0, &[]));
            }
            _ => {
                println!("[studio] {text}");
                self.log.record(text);
            }
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.prog.name == name)
    }

    fn index_of_id(&self, id: u64) -> Option<usize> {
        let i = id.checked_sub(1)? as usize;
        (i < self.agents.len()).then_some(i)
    }

    /// Start program `i`.
    fn start(&mut self, i: usize, why: &str) -> Result<(), ServiceError> {
        if self.agents[i].state == AgentState::Running {
            return Err(ServiceError::Busy);
        }
        let name = self.agents[i].prog.name.clone();
        match self.spawn(i) {
            Ok(entry) => {
                self.agents[i].state = AgentState::Running;
                if self.is_console(i) {
                    self.console_up(true);
                }
                let a = &self.agents[i];
                self.decide(format!(
                    "start {name} (id {}, priority {}, quota {} KiB, entry {entry:#x}): {why}",
                    a.id, a.prog.priority, a.prog.memory_kib
                ));
                Ok(())
            }
            Err(e) => {
                self.reclaim(i);
                self.decide(format!("cannot start {name}: {}", e.why));
                Err(e.answer)
            }
        }
    }

    fn spawn(&mut self, i: usize) -> Result<u64, StartFailure> {
        let prog = self.agents[i].prog.clone();
        let id = self.agents[i].id;
        let image = self
            .initrd
            .file(&prog.binary)
            .ok_or_else(|| StartFailure::other(format!("no binary `{}`", prog.binary)))?;
        let quota = prog.memory_kib as u64 * 1024;
        let bits = chunk_bits(quota);
        let chunk =
            carve(&mut self.pool, self.slots, bits).map_err(|e| StartFailure::kernel(e, "no memory for the quota"))?;
        self.agents[i].chunk = Some((chunk, bits));
        let mem = ChunkAlloc::new(self.slots, chunk, quota);
        // A pool of its own (half the quota) for programs that map memory for others.
        let pool = if prog.has_privilege("vspaces") {
            let pool_bits = bits - 1;
            let pool = if (1u64 << pool_bits) <= quota / 2 { pool_bits } else { pool_bits - 1 };
            Some((mem.retype(ObjectType::Untyped, pool as u64)?, 1u64 << pool))
        } else {
            None
        };
        let heap_size = (quota / 4).clamp(64 << 10, 1 << 20) & !0xfff;
        let radix = if pool.is_some() { POOL_CNODE_RADIX } else { CNODE_RADIX };
        let lay = layout::layout(self.layout_key, &prog.name, STACK_SIZE, heap_size);
        let mut start = StartInfo {
            magic: START_MAGIC,
            id,
            name: [0; 32],
            name_len: prog.name.len() as u64,
            heap_base: lay.heap_base,
            heap_size,
            ipc_buffer: lay.ipc_buffer,
            stack_top: lay.stack_top,
            protocol_key: self.protocol_key,
            cnode_radix: radix,
            quota,
            pool_size: pool.map_or(0, |p| p.1),
            share_window: ozone_agent_sdk::protocol::start::SHARE_WINDOW,
            shaper_id: self.agents.iter().find(|a| a.prog.has_privilege("profiles")).map_or(0, |a| a.id),
            shaper_warmup: if prog.has_privilege("profiles") { self.desc.system.shaper_warmup as u64 } else { 0 },
            secret: [0; 32],
        };
        start.name[..prog.name.len()].copy_from_slice(prog.name.as_bytes());
        if prog.has_privilege("vspaces") {
            start.secret = keys::derive(&self.seed, "secret", &prog.name);
        }
        // SAFETY: `StartInfo` is plain `repr(C)` data; its bytes are copied into the program's page.
        let info_bytes = unsafe {
            core::slice::from_raw_parts(&start as *const StartInfo as *const u8, core::mem::size_of::<StartInfo>())
        };
        self.agents[i].mem = Some(mem);
        let mem = self.agents[i].mem.as_ref().expect("just set");
        let p = process::build(
            mem,
            &self.own,
            slot::VSPACE,
            slot::TCB,
            image,
            lay,
            radix,
            prog.priority as u64,
            pslot::FAULT,
            info_bytes,
        )
        .map_err(|e| match e {
            process::SpawnError::Kernel(e) => StartFailure::kernel(e, "building it"),
            e => StartFailure::other(format!("{e:?}")),
        })?;
        // Its priority is also its thread's ceiling: whoever holds a copy of its thread capability
        // (the shaper) cannot use it to raise a thread above the program's own priority, which the
        // description keeps in the program's band.
        k::tcb_set_mc_priority(p.tcb, slot::TCB, prog.priority as u64)
            .map_err(|e| StartFailure::kernel(e, "setting its maximum controlled priority"))?;
        let c = p.cnode;
        let mut held = Vec::new();
        let mut put = |slot: u64, what: &str, r: Result<(), Error>| -> Result<(), StartFailure> {
            r.map_err(|e| StartFailure::kernel(e, &format!("cannot give {what}")))?;
            held.push(Held { slot, what: what.to_string(), interface: None, from: None });
            Ok(())
        };
        let call_rights = rights::WRITE | rights::GRANT_REPLY;
        put(pslot::STUDIO, "studio", mint_into(c, pslot::STUDIO, slot::CNODE, self.ep, call_rights, id))?;
        // Every program but the console server logs through the console, badged with its id,
        // while the console runs (`console_up` gives it to those started before).
        if let Some(console) = self.console_endpoint().filter(|_| self.console_running()) {
            put(pslot::LOG, LOG_CAP, mint_into(c, pslot::LOG, slot::CNODE, console, call_rights, id))?;
        }
        put(
            pslot::FAULT,
            "fault endpoint",
            mint_into(c, pslot::FAULT, slot::CNODE, self.ep, call_rights, FAULT_BIT | id),
        )?;
        for (k, (name, ep)) in self.agents[i].endpoints.iter().enumerate() {
            let s = pslot::service(k as u64);
            put(s, &format!("serves {name}"), copy_into(c, s, slot::CNODE, *ep, rights::READ | rights::WRITE))?;
        }
        if prog.kind == Kind::Server || !prog.devices.is_empty() {
            let n = mem.retype(ObjectType::Notification, 0)?;
            put(pslot::NOTIFICATION, "notification", copy_into(c, pslot::NOTIFICATION, slot::CNODE, n, rights::ALL))?;
            k::tcb_bind_notification(p.tcb, n)?;
            if prog.has_device("serial") {
                let r = k::invoke(
                    slot::IO_PORT_CONTROL,
                    inv::IO_PORT_CONTROL_ISSUE,
                    &[SERIAL_FIRST_PORT, SERIAL_LAST_PORT, pslot::SERIAL_PORTS, 64],
                    &[c],
                )
                .map(|_| ());
                put(pslot::SERIAL_PORTS, "serial ports 0x3f8-0x3ff", r)?;
                let h = self.own.slot()?;
                let r = k::invoke(slot::IRQ_CONTROL, inv::IRQ_CONTROL_GET, &[SERIAL_IRQ, h, 64], &[slot::CNODE])
                    .and_then(|_| k::invoke(h, inv::IRQ_HANDLER_SET_NOTIFICATION, &[], &[n]))
                    .map(|_| ());
                let r = r.and_then(|()| move_into(c, pslot::SERIAL_IRQ, slot::CNODE, h));
                self.own.free_slot(h);
                put(pslot::SERIAL_IRQ, "serial interrupt (IRQ 4)", r)?;
                // The console server may print through the kernel's debug channel (its own
                // lines and crash reports), and is told when Studio has a decision to print.
                k::tcb_set_debug_output(p.tcb, slot::IO_PORT_CONTROL, true)
                    .map_err(|e| StartFailure::kernel(e, "giving it the debug channel"))?;
                let s = self.own.slot()?;
                match mint_into(slot::CNODE, s, slot::CNODE, n, rights::WRITE, proto::LOG_SIGNAL) {
                    Ok(()) => self.log_signal = Some((i, s, false)),
                    Err(e) => {
                        self.own.free_slot(s);
                        return Err(StartFailure::kernel(e, "minting its log signal"));
                    }
                }
            }
        }
        if let Some((pool_slot, _)) = pool {
            put(pslot::POOL, "memory pool", move_into(c, pslot::POOL, slot::CNODE, pool_slot))?;
            mem.free_slot(pool_slot);
            put(pslot::OWN_CNODE, "own cnode", copy_into(c, pslot::OWN_CNODE, slot::CNODE, p.cnode, rights::ALL))?;
            put(pslot::OWN_VSPACE, "own vspace", copy_into(c, pslot::OWN_VSPACE, slot::CNODE, p.vspace, rights::ALL))?;
        }
        if prog.has_privilege("profiles") {
            put(
                pslot::TELEMETRY,
                "telemetry",
                copy_into(c, pslot::TELEMETRY, slot::CNODE, slot::TELEMETRY, rights::ALL),
            )?;
        }
        let a = &mut self.agents[i];
        a.held = held;
        a.heap_end = lay.heap_base + heap_size;
        a.proc = Some(p);
        // The interfaces it may use at start are looked up on demand (`LOOKUP`).
        process::start(&p)?;
        Ok(p.entry)
    }

    /// The endpoint of the `console` interface, if the description has a console server.
    fn console_endpoint(&self) -> Option<u64> {
        self.agents.iter().find_map(|a| a.endpoints.iter().find(|(n, _)| n == "console").map(|(_, e)| *e))
    }

    fn is_console(&self, i: usize) -> bool {
        self.agents[i].prog.provides.iter().any(|p| p == "console")
    }

    fn console_running(&self) -> bool {
        (0..self.agents.len()).any(|i| self.is_console(i) && self.agents[i].state == AgentState::Running)
    }

    /// The console server runs (`up`) or stopped: every other running program gets its log
    /// capability, or loses it — a Call to a console that is not there would wait for good (and
    /// for a program that restarts the console, forever), so its lines are dropped and counted
    /// instead.
    fn console_up(&mut self, up: bool) {
        let Some(console) = self.console_endpoint() else { return };
        for j in 0..self.agents.len() {
            if self.is_console(j) {
                continue;
            }
            let a = &mut self.agents[j];
            let Some(p) = a.proc else { continue };
            let has = a.held.iter().any(|h| h.slot == pslot::LOG);
            if up && !has {
                let r = mint_into(p.cnode, pslot::LOG, slot::CNODE, console, rights::WRITE | rights::GRANT_REPLY, a.id);
                if r.is_ok() {
                    a.held.push(Held { slot: pslot::LOG, what: LOG_CAP.to_string(), interface: None, from: None });
                }
            } else if !up && has {
                let _ = k::cnode_delete(p.cnode, pslot::LOG);
                a.held.retain(|h| h.slot != pslot::LOG);
            }
        }
    }

    /// Stop program `i`: revoke its chunk (its thread, address space, CNode and every capability
    /// in it, and everything derived from them go), and take the memory back.
    fn reclaim(&mut self, i: usize) {
        if self.is_console(i) && self.agents[i].proc.is_some() {
            self.console_up(false);
        }
        if let Some((c, signal, _)) = self.log_signal
            && c == i
        {
            // The copy went with the console's notification: Studio prints its decisions again.
            self.log_signal = None;
            let _ = k::cnode_delete(slot::CNODE, signal);
            self.own.free_slot(signal);
        }
        let a = &mut self.agents[i];
        if let Some((chunk, bits)) = a.chunk.take() {
            if let Err(e) = k::cnode_revoke(slot::CNODE, chunk) {
                println!("[studio] revoking {}'s memory failed: {e:?}", a.prog.name);
            }
            if let Some(m) = a.mem.take() {
                m.release();
            }
            self.pool.give_back(chunk, bits);
        }
        a.proc = None;
        a.held.clear();
        // Copies of its objects held by others went with its memory.
        let id = a.id;
        for other in &mut self.agents {
            other.held.retain(|h| h.from != Some(id));
        }
    }

    fn stop(&mut self, i: usize, state: AgentState, why: String) {
        self.reclaim(i);
        self.agents[i].state = state;
        self.decide(why);
    }

    /// A fault message from program `id`. Returns the reply (only for denied operations, which
    /// resume the thread with an error).
    fn fault(&mut self, id: u64, msg: &Received) -> Option<Response> {
        let i = self.index_of_id(id)?;
        if self.agents[i].state != AgentState::Running {
            return None;
        }
        let m = msg.msg.mrs;
        let name = self.agents[i].prog.name.clone();
        let what = match msg.msg.info.label() {
            1 => format!("page fault at {:#x} (rip {:#x}, error {:#x})", m[1], m[0], m[2]),
            2 => format!("unknown syscall {} (rip {:#x})", m[2] as i64, m[0]),
            3 => format!("exception {} (rip {:#x}, error {:#x})", m[2], m[0], m[3]),
            4 => {
                self.decide(format!(
                    "deny {name}: operation {} is outside its syscall profile (rip {:#x})",
                    m[3], m[0]
                ));
                return Some(Ok(Msg::new(0, &[])));
            }
            l => format!("fault message {l}"),
        };
        self.ended(i, AgentState::Faulted, &format!("{name} faulted: {what}"));
        None
    }

    /// Program `i` ended (fault or exit): stop it, and restart it if its description says so.
    fn ended(&mut self, i: usize, state: AgentState, what: &str) {
        let restart = self.agents[i].prog.restart && self.agents[i].restarts < MAX_RESTARTS;
        let policy = if restart {
            "revoked everything, memory reclaimed; restarting (restart = true)"
        } else if self.agents[i].prog.restart {
            "revoked everything, memory reclaimed; not restarting (restart limit reached)"
        } else {
            "revoked everything, memory reclaimed"
        };
        self.stop(i, state, format!("{what}: {policy}"));
        if restart {
            self.agents[i].restarts += 1;
            let _ = self.start(i, "restart policy");
        }
    }

    /// Put a capability to `interface` (badged with the caller's id) in program `i`'s CNode.
    fn give_interface(&mut self, i: usize, interface: &str) -> Result<u64, ServiceError> {
        if let Some(h) = self.agents[i].held.iter().find(|h| h.interface.as_deref() == Some(interface)) {
            return Ok(h.slot);
        }
        if interface == proto::INTERFACE {
            return Ok(pslot::STUDIO);
        }
        let ep = self
            .agents
            .iter()
            .find_map(|a| a.endpoints.iter().find(|(n, _)| n == interface).map(|(_, e)| *e))
            .ok_or(ServiceError::NotFound)?;
        let a = &self.agents[i];
        let cnode = a.proc.as_ref().ok_or(ServiceError::Busy)?.cnode;
        let s = a.free_child_slot().ok_or(ServiceError::NoMemory)?;
        mint_into(cnode, s, slot::CNODE, ep, rights::WRITE | rights::GRANT_REPLY, a.id)
            .map_err(|_| ServiceError::KernelError)?;
        self.agents[i].held.push(Held {
            slot: s,
            what: format!("interface {interface}"),
            interface: Some(interface.to_string()),
            from: None,
        });
        Ok(s)
    }

    fn request(&mut self, r: &Request) -> Option<Response> {
        let Some(i) = self.index_of_id(r.badge) else { return Some(Err(ServiceError::Denied)) };
        let caller = self.agents[i].prog.clone();
        let admin = caller.has_privilege("admin");
        let needs = |p: bool| if p { Ok(()) } else { Err(ServiceError::Denied) };
        Some(match r.method {
            method::LOOKUP => (|| {
                let l: proto::Lookup = r.decode()?;
                if !self.agents[i].may_use(&l.interface) {
                    self.decide(format!("refuse {}: lookup of `{}`, which it may not use", caller.name, l.interface));
                    return Err(ServiceError::Denied);
                }
                rpc::ok(&self.give_interface(i, &l.interface)?)
            })(),
            method::EXIT => {
                let status: u64 = r.decode().unwrap_or(u64::MAX);
                let state = AgentState::Exited;
                self.ended(i, state, &format!("{} exited with status {status}", caller.name));
                return None;
            }
            method::MY_MEMORY => {
                let a = &self.agents[i];
                let lay = a.proc.map(|p| p.layout);
                rpc::ok(&proto::MemInfo {
                    quota: a.prog.memory_kib as u64 * 1024,
                    used: a.used(),
                    heap_base: lay.map_or(0, |l| l.heap_base),
                    heap_end: a.heap_end,
                })
            }
            method::GROW_HEAP => (|| {
                let pages: u64 = r.decode()?;
                self.grow_heap(i, pages)
            })(),
            method::REPORT => (|| {
                let text: String = r.decode()?;
                self.decide(format!("report from {}: {text}", caller.name));
                rpc::ok(&())
            })(),
            method::LIST => needs(admin).and_then(|()| {
                let from: u32 = r.decode()?;
                let list: Vec<AgentInfo> = self
                    .agents
                    .iter()
                    .skip(from as usize)
                    .map(|a| AgentInfo {
                        id: a.id,
                        name: a.prog.name.clone(),
                        state: a.state,
                        server: a.prog.kind == Kind::Server,
                        priority: a.prog.priority,
                        quota: a.prog.memory_kib as u64 * 1024,
                        used: a.used(),
                        restarts: a.restarts,
                    })
                    .collect();
                rpc::ok(&fitting(list))
            }),
            method::CAPS => needs(admin).and_then(|()| {
                let name: String = r.decode()?;
                let a = &self.agents[self.index_of(&name).ok_or(ServiceError::NotFound)?];
                let caps: Vec<CapInfo> =
                    a.held.iter().map(|h| CapInfo { slot: h.slot, what: h.what.clone() }).collect();
                rpc::ok(&fitting(caps))
            }),
            method::GRANT => needs(admin).and_then(|()| {
                let g: proto::Grant = r.decode()?;
                let t = self.index_of(&g.agent).ok_or(ServiceError::NotFound)?;
                if g.interface != proto::INTERFACE && self.desc.provider(&g.interface).is_none() {
                    return Err(ServiceError::NotFound);
                }
                self.agents[t].revoked.retain(|x| *x != g.interface);
                if !self.agents[t].granted.contains(&g.interface) {
                    self.agents[t].granted.push(g.interface.clone());
                }
                let s = self.give_interface(t, &g.interface)?;
                self.decide(format!("grant {} `{}` (slot {s}): asked by {}", g.agent, g.interface, caller.name));
                rpc::ok(&s)
            }),
            method::REVOKE => needs(admin).and_then(|()| {
                let g: proto::Grant = r.decode()?;
                let t = self.index_of(&g.agent).ok_or(ServiceError::NotFound)?;
                self.agents[t].granted.retain(|x| *x != g.interface);
                if !self.agents[t].revoked.contains(&g.interface) {
                    self.agents[t].revoked.push(g.interface.clone());
                }
                let a = &mut self.agents[t];
                let mut deleted = None;
                if let (Some(p), Some(pos)) =
                    (a.proc, a.held.iter().position(|h| h.interface.as_deref() == Some(g.interface.as_str())))
                {
                    let h = a.held.remove(pos);
                    k::cnode_delete(p.cnode, h.slot).map_err(|_| ServiceError::KernelError)?;
                    deleted = Some(h.slot);
                }
                let what = deleted.map_or(String::from("held none; future lookups refused"), |s| {
                    format!("capability in slot {s} deleted; future lookups refused")
                });
                self.decide(format!("revoke {} `{}`: {what}; asked by {}", g.agent, g.interface, caller.name));
                rpc::ok(&())
            }),
            method::KILL => needs(admin).and_then(|()| {
                let name: String = r.decode()?;
                let t = self.index_of(&name).ok_or(ServiceError::NotFound)?;
                if t == i {
                    return Err(ServiceError::InvalidArgument);
                }
                if self.agents[t].state != AgentState::Running {
                    return Err(ServiceError::Busy);
                }
                self.stop(
                    t,
                    AgentState::Stopped,
                    format!("kill {name}: asked by {}; revoked everything, memory reclaimed", caller.name),
                );
                rpc::ok(&())
            }),
            method::START => needs(admin).and_then(|()| {
                let name: String = r.decode()?;
                let t = self.index_of(&name).ok_or(ServiceError::NotFound)?;
                self.start(t, &format!("asked by {}", caller.name))?;
                rpc::ok(&self.agents[t].id)
            }),
            method::LOG => needs(admin).and_then(|()| {
                let from: u32 = r.decode()?;
                rpc::ok(&self.log.page(from, |p| encoded_len(&p) <= MAX_PAYLOAD))
            }),
            method::FOLLOW_LOG => match &mut self.log_signal {
                Some((c, _, follows)) if *c == i => {
                    *follows = true;
                    rpc::ok(&self.log.next())
                }
                _ => Err(ServiceError::Denied),
            },
            method::MEMORY => needs(admin).and_then(|()| {
                let free = self.kernel_free();
                if free != self.pool.free() {
                    println!(
                        "[studio] memory accounting differs: kernel {free} bytes free, Studio {}",
                        self.pool.free()
                    );
                }
                rpc::ok(&proto::SystemMemory {
                    total: self.pool.total,
                    free,
                    used_by_programs: self.agents.iter().map(|a| a.used()).sum(),
                })
            }),
            method::TELEMETRY => needs(admin).and_then(|()| {
                let name: String = r.decode()?;
                let t = self.index_of(&name).ok_or(ServiceError::NotFound)?;
                let tcb = self.agents[t].proc.ok_or(ServiceError::Busy)?.tcb;
                let rep = k::invoke(slot::TELEMETRY, inv::TELEMETRY_READ, &[], &[tcb])
                    .map_err(|_| ServiceError::KernelError)?;
                let w = |n| k::reply_word(&rep, n);
                rpc::ok(&proto::Telemetry {
                    syscalls: w(0),
                    invocations: w(1),
                    ipc_sent: w(2),
                    ipc_received: w(3),
                    faults: w(4),
                    denied: w(5),
                })
            }),
            method::SHUTDOWN => needs(admin).and_then(|()| {
                let status: u8 = r.decode()?;
                // Printed here: the machine goes off before the console could print it.
                let text = format!("shutdown (status {status}): asked by {}", caller.name);
                println!("[studio] {text}");
                self.log.record(text);
                shutdown(status as u64);
                Err(ServiceError::KernelError)
            }),
            method::VSPACE_OF => needs(caller.has_privilege("vspaces")).and_then(|()| {
                let id: u64 = r.decode()?;
                let t = self.index_of_id(id).ok_or(ServiceError::NotFound)?;
                let vspace = self.agents[t].proc.ok_or(ServiceError::Busy)?.vspace;
                rpc::ok(&self.give_copy(
                    i,
                    vspace,
                    &format!("address space of {}", self.agents[t].prog.name.clone()),
                    id,
                )?)
            }),
            method::TCB_OF => needs(caller.has_privilege("profiles")).and_then(|()| {
                let id: u64 = r.decode()?;
                let t = self.index_of_id(id).ok_or(ServiceError::NotFound)?;
                let tcb = self.agents[t].proc.ok_or(ServiceError::Busy)?.tcb;
                let name = self.agents[t].prog.name.clone();
                let server = self.agents[t].prog.kind == Kind::Server;
                let slot = self.give_copy(i, tcb, &format!("thread of {name}"), id)?;
                rpc::ok(&(slot, name, server))
            }),
            method::MAY_SHAPE => needs(caller.has_privilege("profiles")).and_then(|()| {
                let ask: proto::ShapeAsk = r.decode()?;
                let asker = self.index_of_id(ask.caller).ok_or(ServiceError::Denied)?;
                let who = &self.agents[asker].prog;
                match proto::may_shape(&who.name, who.has_privilege("admin"), &ask.target, ask.op) {
                    Ok(()) => rpc::ok(&()),
                    Err(rule) => {
                        let text =
                            format!("refuse {}: {} of {} through the shaper: {rule}", who.name, ask.op, ask.target);
                        self.decide(text);
                        Err(ServiceError::Denied)
                    }
                }
            }),
            _ => Err(ServiceError::UnknownMethod),
        })
    }

    /// Put a copy of Studio's capability `src` into program `i`'s CNode; returns the slot.
    fn give_copy(&mut self, i: usize, src: u64, what: &str, from: u64) -> Result<u64, ServiceError> {
        if let Some(h) = self.agents[i].held.iter().find(|h| h.what == what) {
            // Still there? (copies of a program's objects go when that program stops.)
            let p = self.agents[i].proc.ok_or(ServiceError::Busy)?;
            if slot_holds_cap(p.cnode, h.slot) {
                return Ok(h.slot);
            }
            let s = h.slot;
            self.agents[i].held.retain(|h| h.slot != s);
        }
        let a = &self.agents[i];
        let cnode = a.proc.ok_or(ServiceError::Busy)?.cnode;
        let s = a.free_child_slot().ok_or(ServiceError::NoMemory)?;
        copy_into(cnode, s, slot::CNODE, src, rights::ALL).map_err(|_| ServiceError::KernelError)?;
        self.agents[i].held.push(Held { slot: s, what: what.to_string(), interface: None, from: Some(from) });
        let name = self.agents[i].prog.name.clone();
        self.decide(format!("give {name} a copy of the {what} (slot {s}): its privilege allows it"));
        Ok(s)
    }

    /// Free memory as the kernel reports it: what each pool untyped can still give (all of it
    /// once it has no children) plus the free chunks (whole again once revoked).
    fn kernel_free(&self) -> u64 {
        let info = |slot: u64| k::untyped_get_info(slot).map_or(0, |i| i.free);
        self.pool.untyped.iter().map(|u| info(u.slot)).sum::<u64>()
            + self.pool.free_chunks.iter().map(|&(s, _)| info(s)).sum::<u64>()
    }

    /// Map `pages` more heap pages for program `i`, from its quota.
    fn grow_heap(&mut self, i: usize, pages: u64) -> Response {
        if pages == 0 || pages > 1 << 18 {
            return Err(ServiceError::InvalidArgument);
        }
        let a = &self.agents[i];
        let (Some(p), Some(mem)) = (a.proc, a.mem.as_ref()) else { return Err(ServiceError::Busy) };
        let quota = a.prog.memory_kib as u64 * 1024;
        // Frames plus, at worst, one page table per 2 MiB.
        let need = pages * 4096 + pages.div_ceil(512) * 4096 + 4096;
        if mem.used() + need > quota {
            let text = format!(
                "refuse {}: {pages} more heap pages would exceed its quota ({} of {} KiB used)",
                a.prog.name,
                mem.used() >> 10,
                quota >> 10
            );
            self.decide(text);
            return Err(ServiceError::QuotaExceeded);
        }
        let mut end = a.heap_end;
        let mut result = Ok(());
        for _ in 0..pages {
            let f = match mem.retype(ObjectType::Frame4K, 0) {
                Ok(f) => f,
                Err(_) => {
                    result = Err(ServiceError::QuotaExceeded);
                    break;
                }
            };
            if process::map_frame_with_tables(mem, f, p.vspace, end, rights::READ | rights::WRITE, false).is_err() {
                result = Err(ServiceError::QuotaExceeded);
                break;
            }
            end += 4096;
        }
        self.agents[i].heap_end = end;
        result?;
        rpc::ok(&end)
    }

    pub fn serve(mut self) -> ! {
        let mut server = Server::with_key(self.ep, proto::INTERFACE, self.protocol_key);
        println!("[studio] serving");
        server.serve_raw(|incoming| match incoming {
            Incoming::Request(r) if r.badge & FAULT_BIT == 0 => self.request(r),
            Incoming::Request(_) => None,
            Incoming::Other(m) if m.badge & FAULT_BIT != 0 => self.fault(m.badge & !FAULT_BIT, m),
            Incoming::Other(_) => Some(Err(ServiceError::UnknownMethod)),
        })
    }
}

/// Carve a chunk of `2^bits` bytes from the pool into a new Studio slot.
fn carve(pool: &mut Pool, slots: &RefCell<Slots>, bits: u8) -> Result<u64, Error> {
    pool.chunk(bits, |untyped, bits| {
        let s = slots.borrow_mut().alloc().ok_or(Error::NotEnoughMemory)?;
        k::untyped_retype(untyped, ObjectType::Untyped, bits as u64, slot::CNODE, 0, 0, s, 1).inspect_err(|_| {
            slots.borrow_mut().free(s);
        })?;
        Ok(s)
    })
}

fn encoded_len<T: serde::Serialize>(v: &T) -> usize {
    let mut buf = [0u8; MAX_PAYLOAD];
    postcard::to_slice(v, &mut buf).map_or(usize::MAX, |b| b.len())
}

/// As many items as fit one reply.
fn fitting<T: serde::Serialize>(mut v: Vec<T>) -> Vec<T> {
    while !v.is_empty() && encoded_len(&v) > MAX_PAYLOAD {
        v.pop();
    }
    v
}

/// Whether slot `s` of the CNode `cnode` (a Studio slot) holds a capability: copying it onto
/// itself fails with `DeleteFirst` exactly when it does.
fn slot_holds_cap(cnode: u64, s: u64) -> bool {
    // Moving a slot onto itself: FailedLookup if empty, DeleteFirst if it holds a capability.
    matches!(move_into(cnode, s, cnode, s), Err(Error::DeleteFirst))
}

fn run_address() -> u64 {
    run_address as *const () as u64
}
