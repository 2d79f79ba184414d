//! Programs' lives: Studio's start-up ([`Studio::boot`] on the machine, [`Studio::new`] over any
//! [`Kernel`]), starting a program (`spawn`: its memory chunk, CNode, address space, thread and
//! the capabilities its description gives), stopping it (`reclaim`: revoke the chunk, and
//! everything goes), faults and exits with the restart policy, and what Studio puts into a
//! running program's CNode later (lookups, grants, copies for privileged servers, heap).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;

use ozone_abi::bootinfo::BootInfo;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, rights};
use ozone_agent_sdk::println;
use ozone_agent_sdk::process::{self, Alloc};
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::shaper as shaper_proto;
use ozone_agent_sdk::protocol::start::{START_MAGIC, StartInfo, slot as pslot};
use ozone_agent_sdk::protocol::studio::{self as proto, AgentState};
use ozone_agent_sdk::protocol::system::{
    COMPILED_NAME, Kind, PCI_GSI_END, PCI_GSI_FIRST, Privilege::*, Restart, SystemDescription,
};
use ozone_agent_sdk::protocol::timer as timer_proto;
use ozone_agent_sdk::root::{self, Root};
use ozone_agent_sdk::rpc::Response;
use ozone_agent_sdk::slots::Slots;
use ozone_agent_sdk::sys::{self, Msg};
use ozone_loader::initrd::Initrd;

use crate::funding::Funding;
use crate::kernel::{Kernel, ROOT_EP, ROOT_HELLO, Sel4};
use crate::log::{Echo, Log, Serial};
use crate::objects::{ChunkAlloc, OwnAlloc};
use crate::pool::{Pool, PoolUntyped, Tally, chunk_bits};
use crate::state::{Agent, CNODE_RADIX, Held, Studio, carve};
use crate::{keys, layout};

/// Badge bit of fault messages (the rest is the program's id).
pub const FAULT_BIT: u64 = 1 << 32;
/// Studio's own memory: endpoints, notifications, its scratch page tables.
const OWN_BITS: u8 = 23;
/// Programs with their own pool (`vspaces`) manage the slots from 256 up themselves: 2^12 slots
/// at least (the provider of `secmem` more: [`provider_cnode_radix`]).
const POOL_CNODE_RADIX: u64 = 12;

/// The CNode of a program with a pool that provides `secmem`: room above Studio's slots for a
/// slice of [`CLIENT_SLOTS`](ozone_agent_sdk::protocol::secmem::CLIENT_SLOTS) for each of the
/// `clients` programs of the description that may use it (the server serves one client per
/// slice, so no client's slots are ever another's).
pub fn provider_cnode_radix(clients: usize) -> u64 {
    use ozone_agent_sdk::protocol::secmem::CLIENT_SLOTS;
    let need = crate::funding::FIRST_SERVER_SLOT + clients as u64 * CLIENT_SLOTS;
    let mut r = POOL_CNODE_RADIX;
    while (1u64 << r) < need && r < ozone_abi::object::MAX_CNODE_RADIX as u64 {
        r += 1;
    }
    r
}
/// Every program's stack.
const STACK_SIZE: u64 = 64 << 10;
/// Restarts allowed per program before Studio gives up on it.
pub const MAX_RESTARTS: u32 = 5;
/// COM1.
const SERIAL_FIRST_PORT: u64 = 0x3f8;
const SERIAL_LAST_PORT: u64 = 0x3ff;
const SERIAL_IRQ: u64 = 4;
/// The 8254 PIT (the `pit` device): its four ports, and its interrupt line as the kernel numbers
/// lines — a GSI of the I/O APIC, with no ISA override applied: the PIT is ISA IRQ 0, which the
/// firmware's MADT (QEMU's included) overrides to GSI 2.
const PIT_FIRST_PORT: u64 = 0x40;
/// The PCI configuration mechanism's ports (address 0xcf8, data 0xcfc..=0xcff).
const PCI_FIRST_PORT: u64 = 0xcf8;
const PCI_LAST_PORT: u64 = 0xcff;
const PIT_LAST_PORT: u64 = 0x43;
const PIT_IRQ: u64 = 2;

static ROOT: Root = Root::new();
static SEL4: Sel4 = Sel4;

/// Why a program could not be started: the answer for whoever asked, and the words for the log.
pub struct StartFailure {
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

/// What Studio starts from, whatever the kernel: the description and the binaries it names, the
/// instance seed, the pool's untyped capabilities and Studio's free slots.
pub struct Boot {
    pub desc: SystemDescription,
    pub images: Vec<(String, &'static [u8])>,
    pub seed: [u8; 32],
    /// The pool: untyped capabilities (slot, size in bits).
    pub untyped: Vec<(u64, u8)>,
    /// Device memory: untyped capabilities (slot, physical address, size in bits), for the
    /// device manager.
    pub device: Vec<(u64, u64, u8)>,
    pub empty: (u64, u64),
    /// The behaviour model's weights file (`studio.model` in the initrd), if there is one.
    pub model: Option<&'static [u8]>,
    /// The model's detector settings for every agent (`detect::Config::default()` on the
    /// machine).
    pub detect: ozone_cognition::detect::Config,
}

impl Studio {
    /// Start-up on the machine: the root task's boot information, the initrd, the description.
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
        let images = desc.programs.iter().filter_map(|p| Some((p.binary.clone(), initrd.file(&p.binary)?))).collect();
        // Memory: every non-device untyped is the pool.
        let untyped = (0..(info.untyped.end - info.untyped.start) as usize)
            .filter(|&i| info.untyped_list[i].is_device == 0)
            .map(|i| (info.untyped.start + i as u64, info.untyped_list[i].size_bits))
            .collect();
        let device = (0..(info.untyped.end - info.untyped.start) as usize)
            .filter(|&i| info.untyped_list[i].is_device != 0)
            .map(|i| (info.untyped.start + i as u64, info.untyped_list[i].paddr, info.untyped_list[i].size_bits))
            .take(pslot::MAX_DEVICE_UNTYPED as usize)
            .collect();
        let model = initrd.file(crate::watch::MODEL_FILE);
        let empty = (info.empty.start, info.empty.end);
        let detect = ozone_cognition::detect::Config::default();
        let boot = Boot { desc, images, seed, untyped, device, empty, model, detect };
        Studio::new(&SEL4, boot, Box::new(crate::log::Serial))
    }

    /// Start-up over the kernel `k`: the pool, Studio's own objects, one endpoint per interface,
    /// then every program marked to start.
    pub fn new(k: &'static dyn Kernel, boot: Boot, echo: Box<dyn Echo>) -> Result<Studio, String> {
        let Boot { desc, images, seed, untyped: pool_slots, device: device_untyped, empty, model, detect } = boot;
        let mut untyped = Vec::new();
        for (slot, size_bits) in pool_slots {
            let mut tally = Tally::new(1 << size_bits);
            // The root task built Studio from one of them: start from what the kernel says.
            let (free, has_children) = k.untyped_free(slot).map_err(|e| format!("untyped {slot}: {e:?}"))?;
            if has_children {
                tally.watermark = tally.size.saturating_sub(free);
            }
            untyped.push(PoolUntyped { slot, tally });
        }
        let mut pool = Pool::new(untyped);
        let slots: &'static RefCell<Slots> = Box::leak(Box::new(RefCell::new(Slots::new(empty.0, empty.1))));
        let own_chunk = carve(k, &mut pool, slots, OWN_BITS).map_err(|e| format!("no memory for Studio: {e:?}"))?;
        let own = OwnAlloc { k, slots, untyped: own_chunk, tally: RefCell::new(Tally::new(1 << OWN_BITS)) };
        let quotas: u64 = desc.programs.iter().map(|p| p.quota()).sum();
        if quotas > pool.free() {
            return Err(format!("the quotas need {} KiB but only {} KiB are free", quotas >> 10, pool.free() >> 10));
        }
        let ep = own.retype(ObjectType::Endpoint, 0).map_err(oom)?;
        let mut studio = Studio {
            k,
            protocol_key: keys::derive_u64(&seed, "protocol"),
            numbering: ozone_agent_sdk::protocol::Permutation::new(
                keys::derive_u64(&seed, "protocol"),
                proto::INTERFACE,
            ),
            layout_key: keys::derive_u64(&seed, "layout"),
            blocks: Vec::new(),
            desc,
            images,
            seed,
            slots,
            own,
            pool,
            device_untyped,
            agents: Vec::new(),
            log: Log::new(echo),
            ep,
            log_signal: None,
            tick: None,
            model: None,
            detect,
            watch_ticks: 0,
            following: None,
        };
        studio.tick = studio.make_tick();
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
                run: 0,
                relearn: false,
                chunk: None,
                kept_chunk: None,
                mem: None,
                proc: None,
                held: Vec::new(),
                granted: Vec::new(),
                revoked: Vec::new(),
                heap_end: 0,
                endpoints,
                notification: None,
                funding: RefCell::new(Funding::default()),
                watch: None,
                perf: crate::perf::Perf::default(),
                carried: ozone_cognition::respond::Level::Normal,
            });
        }
        studio.blocks = studio.label_blocks();
        studio.decide(format!(
            "system: {} programs, {} MiB of memory, {} KiB free for quotas",
            studio.agents.len(),
            studio.pool.total >> 20,
            studio.pool.free() >> 10
        ));
        studio.model = studio.load_model(model);
        for i in 0..studio.agents.len() {
            if studio.agents[i].prog.start {
                let _ = studio.start(i, "in the system description");
            }
        }
        Ok(studio)
    }

    /// Start program `i`.
    pub(crate) fn start(&mut self, i: usize, why: &str) -> Result<(), ServiceError> {
        // A suspended program still has its thread, memory and capabilities: a second start
        // would build another instance over them (and lose the first's chunk).
        if matches!(self.agents[i].state, AgentState::Running | AgentState::Suspended) {
            return Err(ServiceError::Busy);
        }
        let name = self.agents[i].prog.name.clone();
        match self.spawn(i) {
            Ok(entry) => {
                self.agents[i].state = AgentState::Running;
                if self.is_console(i) {
                    self.console_up(true);
                }
                if self.is_shaper(i) {
                    self.shaper_up(true);
                }
                let a = &self.agents[i];
                self.decide(format!(
                    "start {name} (id {}, priority {}, quota {} KiB, {} KiB of it left once built, entry {entry:#x}): {why}",
                    a.id,
                    a.prog.priority,
                    a.prog.memory_kib,
                    a.prog.quota().saturating_sub(a.used()) >> 10
                ));
                self.ring_shaper(i);
                Ok(())
            }
            Err(e) => {
                self.reclaim(i);
                self.decide(format!("cannot start {name}: {}", e.why));
                Err(e.answer)
            }
        }
    }

    /// Program `i` has started, or its learning window has ended: signal the notification of the
    /// program holding the `profiles` privilege (the shaper), which then looks at once — arms the
    /// newcomer's learning window before it runs, or settles the profile of the agent whose
    /// window ended before it runs again (the shaper's priority is above every agent's). A
    /// signal never blocks.
    fn ring_shaper(&self, i: usize) {
        let shaper = self.agents.iter().find(|a| a.state == AgentState::Running && a.prog.has_privilege(Profiles));
        if let Some(n) = shaper.filter(|s| s.id != self.agents[i].id).and_then(|s| s.notification) {
            let _ = self.k.signal(n);
        }
    }

    /// The shaper (the program with the `profiles` privilege) and its endpoint, if the
    /// description has one that provides the `shaper` interface.
    fn shaper_endpoint(&self) -> Option<(usize, u64)> {
        let s = self.agents.iter().position(|a| a.prog.has_privilege(Profiles))?;
        let ep = self.agents[s].endpoints.iter().find(|(n, _)| n == shaper_proto::INTERFACE)?.1;
        Some((s, ep))
    }

    /// Whether program `i` provides an interface the shaper shapes (one in the shaper's `uses`).
    pub(crate) fn shaped_server(&self, i: usize) -> Option<u64> {
        let (s, ep) = self.shaper_endpoint()?;
        let a = &self.agents[i];
        let shaped = s != i && a.prog.kind == Kind::Server && a.prog.provides.iter().any(|x| self.agents[s].may_use(x));
        shaped.then_some(ep)
    }

    /// The server providing `interface`, if a program of the description does and is a server.
    pub(crate) fn server_of(&self, interface: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.prog.kind == Kind::Server && a.prog.provides.iter().any(|x| x == interface))
    }

    /// Signal [`shaper_proto::CONTROL_SIGNAL`] on server `t`'s notification: it has the shaper's
    /// requests to pull. A badged copy is made for the signal and dropped after it. Whether it
    /// was signalled (it runs and has a notification).
    pub(crate) fn signal_control(&self, t: usize) -> bool {
        self.signal_bits(t, shaper_proto::CONTROL_SIGNAL)
    }

    /// Signal `bits` on program `t`'s notification through a badged copy made for the signal
    /// and dropped after it. Whether it was signalled (it runs and has a notification).
    fn signal_bits(&self, t: usize, bits: u64) -> bool {
        let Some(n) = self.agents[t].notification.filter(|_| self.agents[t].proc.is_some()) else { return false };
        let Ok(s) = self.own.slot() else { return false };
        let k = self.k;
        let signalled = k.mint_own(s, n, rights::WRITE, bits).and_then(|()| k.signal(s));
        let _ = k.delete_own(s);
        self.own.free_slot(s);
        signalled.is_ok()
    }

    pub(crate) fn spawn(&mut self, i: usize) -> Result<u64, StartFailure> {
        let k = self.k;
        let prog = self.agents[i].prog.clone();
        let id = self.agents[i].id;
        self.agents[i].run += 1;
        self.agents[i].perf = crate::perf::Perf::starting();
        self.agents[i].relearn = false;
        let image =
            self.image(&prog.binary).ok_or_else(|| StartFailure::other(format!("no binary `{}`", prog.binary)))?;
        let quota = prog.quota();
        let bits = chunk_bits(quota);
        // A driver runs again in its own old chunk (its device may still write there).
        let chunk = match self.agents[i].kept_chunk.take() {
            Some((c, b)) if b == bits => c,
            kept => {
                if let Some((c, b)) = kept {
                    // Its size changed: kept aside for good, never given to anyone.
                    self.agents[i].kept_chunk = Some((c, b));
                }
                carve(self.k, &mut self.pool, self.slots, bits)
                    .map_err(|e| StartFailure::kernel(e, "no memory for the quota"))?
            }
        };
        self.agents[i].chunk = Some((chunk, bits));
        let mem = ChunkAlloc::new(self.k, self.slots, chunk, quota);
        // A pool of its own (half the quota) for programs that map memory for others, the
        // device manager and drivers.
        let pool = if prog.has_pool() {
            let pool_bits = bits - 1;
            let pool = if (1u64 << pool_bits) <= quota / 2 { pool_bits } else { pool_bits - 1 };
            Some((mem.retype(ObjectType::Untyped, pool as u64)?, 1u64 << pool))
        } else {
            None
        };
        let heap_size = (quota / 4).clamp(64 << 10, 1 << 20) & !0xfff;
        let radix = match pool {
            Some(_) if prog.provides.iter().any(|x| x == crate::funding::INTERFACE) => {
                let clients = self.desc.programs.iter().filter(|p| p.may_use(crate::funding::INTERFACE)).count();
                provider_cnode_radix(clients)
            }
            Some(_) => POOL_CNODE_RADIX,
            // Room for a signal capability per client above Studio's slots.
            None if prog.signals_clients => CNODE_RADIX.max(pslot::CLIENT_SIGNALS_RADIX),
            None => CNODE_RADIX,
        };
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
            shaper_id: self.agents.iter().find(|a| a.prog.has_privilege(Profiles)).map_or(0, |a| a.id),
            shaper_warmup: if prog.has_privilege(Profiles) { self.desc.system.shaper_warmup as u64 } else { 0 },
            secret: [0; 32],
            provides: Default::default(),
            provides_len: [0; ozone_agent_sdk::protocol::start::slot::MAX_SERVICES],
        };
        start.name[..prog.name.len()].copy_from_slice(prog.name.as_bytes());
        start.set_provides(prog.provides.iter().map(String::as_str));
        if prog.has_pool() {
            start.secret = keys::derive(&self.seed, "secret", &prog.name);
        }
        // SAFETY: `StartInfo` is plain `repr(C)` data; its bytes are copied into the program's page.
        let info_bytes = unsafe {
            core::slice::from_raw_parts(&start as *const StartInfo as *const u8, core::mem::size_of::<StartInfo>())
        };
        self.agents[i].mem = Some(mem);
        let mem = self.agents[i].mem.as_ref().expect("just set");
        // Its fault endpoint goes into its thread's fault-handler slot only (the kernel keeps
        // the copy): the program holds no capability that reaches Studio with the fault badge.
        let fault = self.own.slot()?;
        let minted = k.mint_own(fault, self.ep, rights::WRITE | rights::GRANT_REPLY, FAULT_BIT | id);
        let built = minted
            .map_err(process::SpawnError::Kernel)
            .and_then(|()| k.build(mem, &self.own, image, lay, radix, prog.priority as u64, fault, info_bytes));
        k.delete_own(fault).map_err(|e| StartFailure::kernel(e, "dropping its fault endpoint"))?;
        self.own.free_slot(fault);
        let p = built.map_err(|e| match e {
            process::SpawnError::Kernel(e) => StartFailure::kernel(e, "building it"),
            e => StartFailure::other(format!("{e:?}")),
        })?;
        // Its priority is also its thread's ceiling: nothing it makes, and no holder of a copy of
        // its thread capability, can raise a thread above the program's own priority, which the
        // description keeps in the program's band.
        k.set_mc_priority(p.tcb, prog.priority as u64)
            .map_err(|e| StartFailure::kernel(e, "setting its maximum controlled priority"))?;
        let c = p.cnode;
        let mut held = Vec::new();
        let notification;
        let mut put = |slot: u64, what: &str, r: Result<(), Error>| -> Result<(), StartFailure> {
            r.map_err(|e| StartFailure::kernel(e, &format!("cannot give {what}")))?;
            held.push(Held { slot, what: what.to_string(), interface: None, from: None });
            Ok(())
        };
        let call_rights = rights::WRITE | rights::GRANT_REPLY;
        put(pslot::STUDIO, "studio", k.mint_into(c, pslot::STUDIO, self.ep, call_rights, id))?;
        // Every program but the console server logs through the console, badged with its id and
        // run as every capability to a server, while the console runs (`console_up` gives it to
        // those started before).
        if let Some(console) = self.console_endpoint().filter(|_| self.console_running()) {
            let badge = self.agents[i].client_badge();
            put(pslot::LOG, LOG_CAP, k.mint_into(c, pslot::LOG, console, call_rights, badge))?;
        }
        // The device manager answers with capabilities (BAR frames, interrupt handlers): its
        // endpoint has the grant right, which lets its replies carry them.
        let serve_rights = if prog.has_device("pci") {
            rights::READ | rights::WRITE | rights::GRANT
        } else {
            rights::READ | rights::WRITE
        };
        for (n, (name, ep)) in self.agents[i].endpoints.iter().enumerate() {
            let s = pslot::service(n as u64);
            put(s, &format!("serves {name}"), k.copy_into(c, s, *ep, serve_rights))?;
        }
        // A server the shaper shapes pulls its profile-control requests from the shaper (the
        // shaper never calls it): the shaper's endpoint, badged for pulling, while the shaper
        // runs (`shaper_up` gives it to those started before).
        if let Some(shaper) = self.shaped_server(i).filter(|_| self.shaper_running()) {
            let badge = shaper_proto::PULL_BADGE | id;
            put(pslot::SHAPER, SHAPER_CAP, k.mint_into(c, pslot::SHAPER, shaper, call_rights, badge))?;
        }
        // Every program has a notification bound to its thread: interrupts and events for
        // servers, the timer server's wake-ups for every program (`signals_clients`).
        {
            let n = mem.retype(ObjectType::Notification, 0)?;
            put(pslot::NOTIFICATION, "notification", k.copy_into(c, pslot::NOTIFICATION, n, rights::ALL))?;
            notification = Some(n);
            k.bind_notification(p.tcb, n)?;
            if prog.has_device("pit") {
                let r = k.issue_io_ports(PIT_FIRST_PORT, PIT_LAST_PORT, c, pslot::DEVICE_PORTS);
                put(pslot::DEVICE_PORTS, "pit ports 0x40-0x43", r)?;
                let h = self.own.slot()?;
                let badged = self.own.slot()?;
                let r = k
                    .mint_own(badged, n, rights::WRITE, timer_proto::PIT_SIGNAL)
                    .and_then(|()| k.irq_handler(PIT_IRQ, h, Some(badged)));
                let _ = k.delete_own(badged);
                self.own.free_slot(badged);
                let r = r.and_then(|()| k.move_into(c, pslot::DEVICE_IRQ, h));
                self.own.free_slot(h);
                put(pslot::DEVICE_IRQ, "pit interrupt (ISA IRQ 0, GSI 2)", r)?;
                // Studio's tick, on which it reads the agents' traces (`watch`).
                if let Some(tick) = self.tick.filter(|_| prog.signals_clients) {
                    let at = timer_proto::STUDIO_TICK_SLOT;
                    let r = k.mint_into(c, at, tick, rights::WRITE, timer_proto::STUDIO_TICK);
                    put(at, "signal to Studio (its tick)", r)?;
                }
            }
            if prog.has_device("pci") {
                let r = k.issue_io_ports(PCI_FIRST_PORT, PCI_LAST_PORT, c, pslot::DEVICE_PORTS);
                put(pslot::DEVICE_PORTS, "PCI configuration ports 0xcf8-0xcff", r)?;
                for (n, gsi) in (PCI_GSI_FIRST..PCI_GSI_END).enumerate() {
                    let h = self.own.slot()?;
                    let r =
                        k.irq_handler(gsi as u64, h, None).and_then(|()| k.move_into(c, pslot::PCI_IRQS + n as u64, h));
                    self.own.free_slot(h);
                    put(pslot::PCI_IRQS + n as u64, &format!("PCI interrupt (GSI {gsi})"), r)?;
                }
                for (n, (slot, paddr, bits)) in self.device_untyped.iter().enumerate() {
                    let at = pslot::DEVICE_UNTYPED + n as u64;
                    let what = format!("device memory {paddr:#x}+{:#x}", 1u64 << bits);
                    put(at, &what, k.copy_into(c, at, *slot, rights::ALL))?;
                }
            }
            if prog.has_device("serial") {
                let r = k.issue_io_ports(SERIAL_FIRST_PORT, SERIAL_LAST_PORT, c, pslot::SERIAL_PORTS);
                put(pslot::SERIAL_PORTS, "serial ports 0x3f8-0x3ff", r)?;
                // The interrupt signals its own badge, above every client's id.
                let h = self.own.slot()?;
                let badged = self.own.slot()?;
                let r = k
                    .mint_own(badged, n, rights::WRITE, proto::SERIAL_SIGNAL)
                    .and_then(|()| k.irq_handler(SERIAL_IRQ, h, Some(badged)));
                let _ = k.delete_own(badged);
                self.own.free_slot(badged);
                let r = r.and_then(|()| k.move_into(c, pslot::SERIAL_IRQ, h));
                self.own.free_slot(h);
                put(pslot::SERIAL_IRQ, "serial interrupt (IRQ 4)", r)?;
                // The console server may print through the kernel's debug channel (its own
                // lines and crash reports), and is told when Studio has a decision to print.
                k.set_debug_output(p.tcb, true).map_err(|e| StartFailure::kernel(e, "giving it the debug channel"))?;
                let s = self.own.slot()?;
                match k.mint_own(s, n, rights::WRITE, proto::LOG_SIGNAL) {
                    Ok(()) => self.log_signal = Some((i, s, false)),
                    Err(e) => {
                        self.own.free_slot(s);
                        return Err(StartFailure::kernel(e, "minting its log signal"));
                    }
                }
            }
        }
        if let Some((pool_slot, _)) = pool {
            put(pslot::POOL, "memory pool", k.move_into(c, pslot::POOL, pool_slot))?;
            mem.free_slot(pool_slot);
            put(pslot::OWN_CNODE, "own cnode", k.copy_into(c, pslot::OWN_CNODE, p.cnode, rights::ALL))?;
            put(pslot::OWN_VSPACE, "own vspace", k.copy_into(c, pslot::OWN_VSPACE, p.vspace, rights::ALL))?;
        }
        let a = &mut self.agents[i];
        a.held = held;
        a.notification = notification;
        a.heap_end = lay.heap_base + heap_size;
        a.proc = Some(p);
        // An agent is traced from its first instruction (`watch`).
        if let Some(mem) = self.agents[i].mem.take() {
            let watched = self.start_watch(i, &mem, p.tcb);
            self.agents[i].mem = Some(mem);
            watched.map_err(StartFailure::other)?;
        }
        // The interfaces it may use at start are looked up on demand (`LOOKUP`).
        k.start(&p)?;
        Ok(p.entry)
    }

    /// Stop program `i`: revoke its chunk (its thread, address space, CNode and every capability
    /// in it, and everything derived from them go), and take the memory back.
    pub(crate) fn reclaim(&mut self, i: usize) {
        let k = self.k;
        // Its ring goes with its memory: its last records are read now, and never again.
        self.drain(i);
        if let Some(w) = self.agents[i].watch.take() {
            self.agents[i].carried = self.agents[i].carried.max(w.level());
        }
        if self.is_console(i) && self.agents[i].proc.is_some() {
            self.console_up(false);
        }
        if self.is_shaper(i) && self.agents[i].proc.is_some() {
            self.shaper_up(false);
        }
        if let Some((c, signal, _)) = self.log_signal
            && c == i
        {
            // The copy goes with the console's notification: Studio prints its decisions again.
            self.log_signal = None;
            self.log.set_echo(Box::new(Serial));
            let _ = k.delete_own(signal);
            self.own.free_slot(signal);
        }
        let a = &mut self.agents[i];
        if let Some((chunk, bits)) = a.chunk.take() {
            if let Err(e) = k.revoke(chunk) {
                println!("[studio] revoking {}'s memory failed: {e:?}", a.prog.name);
            }
            // Its funding untypeds went with its chunk (their slots are among the chunk's).
            a.funding.borrow_mut().forget();
            if let Some(m) = a.mem.take() {
                m.release();
            }
            if a.prog.pci.is_empty() {
                self.pool.give_back(chunk, bits);
            } else {
                // A driver's device is not stopped by revoking capabilities: it may go on
                // writing (DMA) into the frames the driver gave it until the next run resets
                // it. Those frames are the next run's, and no other program's.
                a.kept_chunk = Some((chunk, bits));
            }
        }
        if a.prog.provides.iter().any(|x| x == crate::funding::INTERFACE) {
            // The secure memory server is gone: what it was funded with goes back to its clients.
            for other in &self.agents {
                other.funding.borrow_mut().reset(k);
            }
        }
        let a = &mut self.agents[i];
        a.proc = None;
        a.relearn = false;
        a.held.clear();
        a.notification = None;
        // Copies of its objects held by others went with its memory.
        let id = a.id;
        for other in &mut self.agents {
            other.held.retain(|h| h.from != Some(id));
        }
    }

    /// Stop program `i` (it ran) and log `why`: everything it had goes, and every capability to
    /// the interfaces it serves ([`take_down`](Self::take_down)). A stop in state `Stopped` is an
    /// operator's kill: never followed by a restart, whatever the restart policy (logged).
    pub(crate) fn stop(&mut self, i: usize, state: AgentState, why: String) {
        let clients = self.take_down(i, state);
        let policy = self.agents[i].prog.restart;
        let kill = if state == AgentState::Stopped && policy != Restart::Never {
            format!("; not restarted: a kill stops it whatever its policy (restart = {policy})")
        } else {
            String::new()
        };
        self.decide(format!("{why}{clients}{kill}"));
    }

    /// Stop program `i` in `state`: [`reclaim`](Self::reclaim) everything it had, and
    /// [`disconnect_clients`](Self::disconnect_clients). Returns the words for the log about its
    /// clients.
    fn take_down(&mut self, i: usize, state: AgentState) -> String {
        // The clients a `signals_clients` server could signal (its copies go with it).
        let signalled: Vec<u64> = if self.agents[i].prog.signals_clients {
            self.agents[i]
                .held
                .iter()
                .filter_map(|h| h.from.filter(|&id| pslot::client_signal(id) == Some(h.slot)))
                .collect()
        } else {
            Vec::new()
        };
        self.reclaim(i);
        let clients = self.disconnect_clients(i);
        self.agents[i].state = state;
        // Wake them once: a client waiting for the server's signal (a sleep) would wait for ever;
        // woken, it asks the server again and learns it is gone (the SDK's `sleep` re-arms).
        for id in signalled {
            if let Some(j) = self.index_of_id(id) {
                self.signal_bits(j, timer_proto::TIMER_SIGNAL);
            }
        }
        clients
    }

    /// Server `i` stopped: every capability Studio gave to the interfaces it provides (lookups,
    /// grants, the console's log capabilities, the shaper's pull capabilities) and everything
    /// derived from them is revoked, and every Call waiting in its endpoints' queues is cancelled
    /// (it runs again and finds its slot empty: the SDK's `AgentError::ServerGone`). The next
    /// incarnation is reached only through a new lookup: no message or capability of a client of
    /// the old one reaches it. Returns the words for the log (empty if it provides nothing).
    pub(crate) fn disconnect_clients(&mut self, i: usize) -> String {
        let k = self.k;
        let mut words = String::new();
        for (name, ep) in self.agents[i].endpoints.clone() {
            let held = self
                .agents
                .iter()
                .filter(|a| a.held.iter().any(|h| h.interface.as_deref() == Some(name.as_str())))
                .count();
            let revoked = k.revoke(ep);
            for a in &mut self.agents {
                a.held.retain(|h| h.interface.as_deref() != Some(name.as_str()));
            }
            // The badge of every capability Studio gives to an interface is the client's id and
            // run: each waiting sender with one is cancelled (a sender of an earlier run is gone
            // with its thread). (The shaper's pull badges are cancelled by `shaper_up`.)
            let badges: Vec<u64> = self.agents.iter().map(crate::state::Agent::client_badge).collect();
            let mut cancelled = Ok(());
            for badge in badges {
                let r = self.own.slot().and_then(|s| {
                    let r = k.mint_own(s, ep, rights::ALL, badge).and_then(|()| {
                        let r = k.cancel_badged_sends(s);
                        let _ = k.delete_own(s);
                        r
                    });
                    self.own.free_slot(s);
                    r
                });
                if cancelled.is_ok() {
                    cancelled = r;
                }
            }
            match (revoked, cancelled) {
                (Ok(()), Ok(())) => words.push_str(&format!(
                    "; `{name}`: {held} client capabilities revoked, waiting calls cancelled (clients look it up again)"
                )),
                (r, c) => words.push_str(&format!(
                    "; `{name}`: revoking its clients' capabilities failed ({:?}, {:?})",
                    r.err(),
                    c.err()
                )),
            }
        }
        words
    }

    /// A fault message from program `id`. Returns the reply (for denied operations, which resume
    /// the thread with an error, and for the end of a learning window, which resumes it where it
    /// was).
    ///
    /// The end of a learning window (the kernel narrowed the thread's profile before its next
    /// syscall) is told to the shaper at once: Studio signals it, then resumes the program; the
    /// shaper outranks every agent, so it settles the agent's profile — the servers' method
    /// profiles included, which they pull at their own priority, above every agent's — before the
    /// agent makes another syscall. Not a fault of the program's: nothing is logged.
    pub(crate) fn fault(&mut self, id: u64, label: u64, m: [u64; 4]) -> Option<Response> {
        let i = self.index_of_id(id)?;
        if self.agents[i].state != AgentState::Running {
            return None;
        }
        let name = self.agents[i].prog.name.clone();
        let what = match label {
            1 => format!("page fault at {:#x} (rip {:#x}, error {:#x})", m[1], m[0], m[2]),
            2 => format!("unknown syscall {} (rip {:#x})", m[2] as i64, m[0]),
            3 => format!("exception {} (rip {:#x}, error {:#x})", m[2], m[0], m[3]),
            4 => {
                // Charged to the denied program's log budget: it causes these at will.
                let text = format!("deny {name}: operation {} is outside its syscall profile (rip {:#x})", m[3], m[0]);
                self.refused(i, text);
                return Some(Ok(Msg::new(0, &[])));
            }
            5 => {
                self.ring_shaper(i);
                return Some(Ok(Msg::new(0, &[])));
            }
            l => format!("fault message {l}"),
        };
        self.ended(i, AgentState::Faulted, &format!("{name} faulted: {what}"));
        None
    }

    /// Program `i` ended (a fault, or `state` without an exit status): stop it, and restart it
    /// if its restart policy says so.
    pub(crate) fn ended(&mut self, i: usize, state: AgentState, what: &str) {
        self.ended_with(i, state, None, what);
    }

    /// Program `i` exited with `status`: stop it, and restart it if its restart policy says so
    /// (`on-failure`: only for a status other than 0).
    pub(crate) fn exited(&mut self, i: usize, status: u64, what: &str) {
        self.ended_with(i, AgentState::Exited, Some(status), what);
    }

    fn ended_with(&mut self, i: usize, state: AgentState, exit: Option<u64>, what: &str) {
        let policy = self.agents[i].prog.restart;
        let wanted = policy.restarts_after(exit);
        let restart = wanted && self.agents[i].restarts < MAX_RESTARTS;
        let decision = if restart {
            format!("restarting (restart = {policy})")
        } else if wanted {
            String::from("not restarting (restart limit reached)")
        } else if policy == Restart::Never {
            String::from("not restarting (restart = never)")
        } else {
            format!("not restarting (restart = {policy}: it exited with status 0)")
        };
        let clients = self.take_down(i, state);
        self.decide(format!("{what}: revoked everything, memory reclaimed{clients}; {decision}"));
        if restart {
            self.agents[i].restarts += 1;
            let _ = self.start(i, "restart policy");
        }
    }

    /// Put a capability to `interface` (badged with the caller's id) in program `i`'s CNode.
    pub(crate) fn give_interface(&mut self, i: usize, interface: &str) -> Result<u64, ServiceError> {
        if let Some(h) = self.agents[i].held.iter().find(|h| h.interface.as_deref() == Some(interface)) {
            return Ok(h.slot);
        }
        if interface == proto::INTERFACE {
            return Ok(pslot::STUDIO);
        }
        let (server, ep) = self
            .agents
            .iter()
            .find_map(|a| a.endpoints.iter().find(|(n, _)| n == interface).map(|(_, e)| (a, *e)))
            .ok_or(ServiceError::NotFound)?;
        // No capability to a server that is not running: a call through it would wait for a
        // later incarnation (see `disconnect_clients`).
        if server.state != AgentState::Running {
            return Err(ServiceError::NotRunning);
        }
        let a = &self.agents[i];
        let cnode = a.proc.as_ref().ok_or(ServiceError::Busy)?.cnode;
        let s = a.free_child_slot().ok_or(ServiceError::NoMemory)?;
        // Badged with its id and run: a server's word about a request names the run that made it.
        self.k
            .mint_into(cnode, s, ep, rights::WRITE | rights::GRANT_REPLY, a.client_badge())
            .map_err(|_| ServiceError::KernelError)?;
        self.agents[i].held.push(Held {
            slot: s,
            what: format!("interface {interface}"),
            interface: Some(interface.to_string()),
            from: None,
        });
        if let Some(server) = self.server_of(interface).filter(|&p| self.agents[p].prog.signals_clients) {
            self.give_signal(server, i);
        }
        Ok(s)
    }

    /// Server `p` signals its clients (`signals_clients`): put a signal-only copy of program
    /// `i`'s notification, badged with the interface's signal bit, at
    /// [`client_signal`](pslot::client_signal)`(id)` of `p`'s CNode, if both run and it is not
    /// there yet. The copy is recorded as `i`'s object in `p` (`from`): it goes when `i` stops
    /// (with its memory), when `i` is no longer `p`'s client (`REVOKE`), and with `p`'s CNode.
    /// Best effort. A server that stops takes every client's capability to it with it, so a
    /// restarted server gets each copy again when the client looks it up again (`reconnect`).
    fn give_signal(&mut self, p: usize, i: usize) {
        let (id, name) = (self.agents[i].id, self.agents[i].prog.name.clone());
        let (Some(server), Some(n), Some(at)) =
            (self.agents[p].proc, self.agents[i].notification, pslot::client_signal(id))
        else {
            return;
        };
        if p == i || self.agents[p].held.iter().any(|h| h.slot == at) {
            return;
        }
        // The one bit of every such copy: the timer's (the timer server is the one server that
        // signals its clients; another would share the bit, its clients telling the two apart
        // by asking).
        if self.k.mint_into(server.cnode, at, n, rights::WRITE, timer_proto::TIMER_SIGNAL).is_ok() {
            self.agents[p].held.push(Held {
                slot: at,
                what: format!("signal to {name}"),
                interface: None,
                from: Some(id),
            });
        }
    }

    /// Put a copy of Studio's capability `src` into program `i`'s CNode; returns the slot.
    pub(crate) fn give_copy(&mut self, i: usize, src: u64, what: &str, from: u64) -> Result<u64, ServiceError> {
        if let Some(h) = self.agents[i].held.iter().find(|h| h.what == what) {
            // Still there? (copies of a program's objects go when that program stops.)
            let p = self.agents[i].proc.ok_or(ServiceError::Busy)?;
            if self.k.holds_cap(p.cnode, h.slot) {
                return Ok(h.slot);
            }
            let s = h.slot;
            self.agents[i].held.retain(|h| h.slot != s);
        }
        let a = &self.agents[i];
        let cnode = a.proc.ok_or(ServiceError::Busy)?.cnode;
        let s = a.free_child_slot().ok_or(ServiceError::NoMemory)?;
        self.k.copy_into(cnode, s, src, rights::ALL).map_err(|_| ServiceError::KernelError)?;
        self.agents[i].held.push(Held { slot: s, what: what.to_string(), interface: None, from: Some(from) });
        let name = self.agents[i].prog.name.clone();
        self.decide(format!("give {name} a copy of the {what} (slot {s}): its privilege allows it"));
        Ok(s)
    }

    /// Free memory as the kernel reports it: what each pool untyped can still give (all of it
    /// once it has no children) plus the free chunks (whole again once revoked).
    pub(crate) fn kernel_free(&self) -> u64 {
        let info = |slot: u64| self.k.untyped_free(slot).map_or(0, |(free, _)| free);
        self.pool.untyped.iter().map(|u| info(u.slot)).sum::<u64>()
            + self.pool.free_chunks.iter().map(|&(s, _)| info(s)).sum::<u64>()
    }

    /// Map `pages` more heap pages for program `i`, from its quota.
    pub(crate) fn grow_heap(&mut self, i: usize, pages: u64) -> Result<u64, ServiceError> {
        if pages == 0 || pages > 1 << 18 {
            return Err(ServiceError::InvalidArgument);
        }
        let a = &self.agents[i];
        let (Some(p), Some(mem)) = (a.proc, a.mem.as_ref()) else { return Err(ServiceError::Busy) };
        let quota = a.prog.quota();
        // Frames plus, at worst, one page table per 2 MiB.
        let need = pages * 4096 + pages.div_ceil(512) * 4096 + 4096;
        if mem.used() + need > quota {
            let text = format!(
                "refuse {}: {pages} more heap pages would exceed its quota ({} of {} KiB used)",
                a.prog.name,
                mem.used() >> 10,
                quota >> 10
            );
            // A refusal the program asks for at will: within its log budget, never a decision
            // of Studio's own (which would refill every budget).
            self.refused(i, text);
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
            if self.k.map_frame(mem, f, p.vspace, end).is_err() {
                result = Err(ServiceError::QuotaExceeded);
                break;
            }
            end += 4096;
        }
        self.agents[i].heap_end = end;
        result?;
        Ok(end)
    }
}

fn run_address() -> u64 {
    run_address as *const () as u64
}

/// What `caps` calls the console log capability in the `LOG` slot.
pub const LOG_CAP: &str = "log (console)";

/// What `caps` calls a shaped server's capability to pull from the shaper (slot `SHAPER`).
pub const SHAPER_CAP: &str = "shaper (profile control)";

/// Where Studio's lines go while the console server prints them: the console is told (a signal
/// never blocks Studio; the console pulls the decisions with `LOG`).
pub struct ConsoleSignal {
    pub k: &'static dyn Kernel,
    pub slot: u64,
}

impl Echo for ConsoleSignal {
    fn line(&mut self, _text: &str) {
        // A signal never blocks; a console gone meanwhile is noticed at its reclaim.
        let _ = self.k.signal(self.slot);
    }
}

impl Studio {
    pub(crate) fn is_shaper(&self, i: usize) -> bool {
        self.agents[i].prog.has_privilege(Profiles)
    }

    fn shaper_running(&self) -> bool {
        (0..self.agents.len()).any(|i| self.is_shaper(i) && self.agents[i].state == AgentState::Running)
    }

    /// The shaper started (`up`) or is stopping: the servers it shapes get their capability to
    /// pull from it, or lose it. A pull waiting on the stopped shaper's endpoint (Studio keeps it
    /// for the next run) is cancelled: the server's Call runs again, finds no capability, and
    /// its server loop goes on serving. So no server waits for a shaper that is not running.
    /// (A pull the shaper had received and not answered when it stopped ends too: the kernel
    /// wakes a caller whose server died with `ReplyLost`, and the server loop goes on.)
    fn shaper_up(&mut self, up: bool) {
        let k = self.k;
        let Some((_, ep)) = self.shaper_endpoint() else { return };
        for j in 0..self.agents.len() {
            // Given: to the servers it shapes now. Taken: from every program Studio gave one,
            // whatever its `uses` say now (a REVOKE may have changed them since).
            let has = self.agents[j].held.iter().any(|h| h.slot == pslot::SHAPER);
            if up && self.shaped_server(j).is_none() {
                continue;
            }
            let a = &mut self.agents[j];
            let Some(p) = a.proc else { continue };
            let badge = shaper_proto::PULL_BADGE | a.id;
            if up && !has {
                let r = k.mint_into(p.cnode, pslot::SHAPER, ep, rights::WRITE | rights::GRANT_REPLY, badge);
                if r.is_ok() {
                    a.held.push(Held {
                        slot: pslot::SHAPER,
                        what: SHAPER_CAP.to_string(),
                        interface: None,
                        from: None,
                    });
                }
            } else if !up && has {
                let _ = k.delete_in(p.cnode, pslot::SHAPER);
                a.held.retain(|h| h.slot != pslot::SHAPER);
                // Its pull waiting on the endpoint, if any, runs again and fails.
                if let Ok(s) = self.own.slot() {
                    if k.mint_own(s, ep, rights::ALL, badge).is_ok() {
                        let _ = k.cancel_badged_sends(s);
                        let _ = k.delete_own(s);
                    }
                    self.own.free_slot(s);
                }
            }
        }
    }

    /// The endpoint of the `console` interface, if the description has a console server.
    fn console_endpoint(&self) -> Option<u64> {
        self.agents.iter().find_map(|a| a.endpoints.iter().find(|(n, _)| n == "console").map(|(_, e)| *e))
    }

    pub(crate) fn is_console(&self, i: usize) -> bool {
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
        let k = self.k;
        for j in 0..self.agents.len() {
            if self.is_console(j) {
                continue;
            }
            let a = &mut self.agents[j];
            let Some(p) = a.proc else { continue };
            let has = a.held.iter().any(|h| h.slot == pslot::LOG);
            if up && !has {
                let r =
                    k.mint_into(p.cnode, pslot::LOG, console, rights::WRITE | rights::GRANT_REPLY, a.client_badge());
                if r.is_ok() {
                    a.held.push(Held { slot: pslot::LOG, what: LOG_CAP.to_string(), interface: None, from: None });
                }
            } else if !up && has {
                let _ = k.delete_in(p.cnode, pslot::LOG);
                a.held.retain(|h| h.slot != pslot::LOG);
            }
        }
    }

    /// `FOLLOW_LOG` from the console server `i`: from now on it prints Studio's decisions, and
    /// Studio signals it instead of printing them. Returns the next decision's number.
    pub(crate) fn follow_log(&mut self, i: usize) -> Option<u32> {
        match &mut self.log_signal {
            Some((c, slot, follows)) if *c == i => {
                *follows = true;
                let echo = ConsoleSignal { k: self.k, slot: *slot };
                self.log.set_echo(Box::new(echo));
                Some(self.log.next())
            }
            _ => None,
        }
    }
}
