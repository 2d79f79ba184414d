//! The root task: the first thread, holding every initial capability. It builds Studio — its own
//! CSpace, address space (loaded at an address chosen from the instance seed), heap and thread —
//! hands it the system's authority (all untyped memory, interrupt and I/O-port control, the
//! telemetry capability and the initrd) and steps aside.
//!
//! It stays as a minimal process with one job: ending the system. Studio holds a badged
//! endpoint to it; on `shutdown(status)` the root task returns `status`, and the kernel powers
//! the machine off when the root task ends.
//!
//! Studio's CNode mirrors the root task's own layout (`ozone_abi::bootinfo::slot`), and it gets a
//! boot-information page of its own at the same address, describing the slots it holds — so
//! Studio starts from the same kind of information the kernel gives the root task.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_abi::bootinfo::{BootInfo, SlotRange, slot};
use ozone_abi::{ROOT_STACK_SIZE, ROOT_STACK_TOP, rights};
use ozone_agent_sdk::AgentError;
use ozone_agent_sdk::caps::{Endpoint, Frame, Untyped, boot};
use ozone_agent_sdk::process::{self, Layout};
use ozone_agent_sdk::root::{self, BOOTINFO_VADDR, HEAP_BASE, Root, STUDIO_HEAP};
use ozone_agent_sdk::sys::Msg;
use ozone_agent_sdk::{entry, println};
use ozone_loader::initrd::Initrd;

entry!(run);

static ROOT: Root = Root::new();

/// Studio's CNode: 2^14 slots.
const STUDIO_CNODE_RADIX: u64 = 14;
/// Studio's priority: above every program it starts.
const STUDIO_PRIORITY: u64 = 200;
/// Studio's IPC buffer.
const STUDIO_IPC_BUFFER: u64 = 0x20_0000;
// Studio's endpoint to the root task, its badge, and the messages Studio sends on it.
use ozone_agent_sdk::protocol::root::{HELLO, SHUTDOWN, STUDIO_BADGE, STUDIO_ROOT_EP};

fn run() -> u64 {
    println!("{}", ozone_agent_sdk::abi::markers::ROOT_HELLO);
    let Some(info) = root::boot_info() else {
        println!("[root] no boot information");
        return 1;
    };
    if ROOT.init(info).is_err() {
        println!("[root] cannot set up the IPC buffer");
        return 1;
    }
    // SAFETY: the kernel maps the initrd read-only at `initrd_vaddr` for `initrd_size` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(info.initrd_vaddr as *const u8, info.initrd_size as usize) };
    let initrd = match Initrd::new(bytes) {
        Ok(i) => i,
        Err(e) => {
            println!("[root] bad initrd: {e}");
            return 1;
        }
    };
    let Some(studio) = initrd.file("studio") else {
        println!("[root] no studio in the initrd: nothing more to start");
        return 0;
    };
    let ep = match start_studio(info, studio) {
        Ok(ep) => ep,
        Err(e) => {
            println!("[root] cannot start studio: {e}");
            return 1;
        }
    };
    serve(ep)
}

/// Answer Studio until it asks for the system to end; returns the exit status.
fn serve(ep: Endpoint) -> u64 {
    let mut reply: Option<Msg> = None;
    loop {
        let r = match reply.take() {
            Some(m) => ep.reply_recv(m),
            None => ep.recv(),
        };
        match r {
            Ok(r) if r.badge == STUDIO_BADGE && r.msg.info.label() == HELLO => {
                println!("[root] studio reported in from {:#x}", r.msg.mrs[0]);
                reply = Some(Msg::new(0, &[]));
            }
            Ok(r) if r.badge == STUDIO_BADGE && r.msg.info.label() == SHUTDOWN => {
                let status = r.msg.mrs[0];
                println!("[root] shutdown requested by studio (status {status})");
                return status;
            }
            Ok(r) => {
                println!("[root] unexpected message (label {}) ignored", r.msg.info.label());
                reply = Some(Msg::new(ozone_abi::Error::InvalidArgument as u64, &[]));
            }
            Err(e) => println!("[root] receive failed: {e:?}"),
        }
    }
}

/// Build Studio, hand it the authority, start it. Returns the endpoint Studio calls.
fn start_studio(info: &BootInfo, image: &[u8]) -> Result<Endpoint, &'static str> {
    let oom = |_| "out of memory or slots";
    let ep: Endpoint = ROOT.make(0).map_err(oom)?;
    // Studio's slots: fixed ones as in the root task, then the untyped, then the initrd frames.
    let n_untyped = info.untyped.end - info.untyped.start;
    let n_initrd = info.initrd_frames.end - info.initrd_frames.start;
    let first = slot::FIRST_FREE;
    let mut studio_info = *info;
    studio_info.cnode_radix = STUDIO_CNODE_RADIX;
    studio_info.untyped = SlotRange { start: first, end: first + n_untyped };
    studio_info.initrd_frames = SlotRange { start: first + n_untyped, end: first + n_untyped + n_initrd };
    studio_info.empty = SlotRange { start: studio_info.initrd_frames.end, end: 1 << STUDIO_CNODE_RADIX };
    studio_info.user_image_frames = SlotRange { start: 0, end: 0 };
    studio_info.user_image_paging = SlotRange { start: 0, end: 0 };
    studio_info.ipc_buffer = STUDIO_IPC_BUFFER;
    // Studio's load address differs per instance: a 2 MiB-aligned slot in [1 GiB, 1.5 GiB).
    let layout = Layout {
        bias: 0x4000_0000 + (info.instance_id % 256) * 0x20_0000,
        stack_top: ROOT_STACK_TOP,
        stack_size: ROOT_STACK_SIZE,
        ipc_buffer: STUDIO_IPC_BUFFER,
        heap_base: HEAP_BASE,
        heap_size: STUDIO_HEAP,
        info_page: BOOTINFO_VADDR,
    };
    // SAFETY: `BootInfo` is plain `repr(C)` data without padding-dependent meaning; viewing it as
    // bytes to copy it into Studio's page is sound.
    let info_bytes = unsafe {
        core::slice::from_raw_parts(&studio_info as *const BootInfo as *const u8, core::mem::size_of::<BootInfo>())
    };
    let p = process::build(
        &ROOT,
        &ROOT,
        boot::VSPACE.slot(),
        boot::TCB.slot(),
        image,
        layout,
        STUDIO_CNODE_RADIX,
        STUDIO_PRIORITY,
        0,
        info_bytes,
    )
    .map_err(|e| match e {
        process::SpawnError::Elf(_) => "its ELF image is invalid",
        process::SpawnError::TooLarge => "its image is too large",
        process::SpawnError::Kernel(_) => "a kernel operation failed (out of memory?)",
    })?;
    let (tcb, c) = (p.thread(), p.cspace());
    // Studio may give priorities up to its own.
    tcb.set_mc_priority(boot::TCB, STUDIO_PRIORITY).map_err(|_| "cannot set its maximum controlled priority")?;
    // Studio prints through the kernel's debug channel until the console server is up (and
    // when it is not); no other program gets the channel from the root task.
    tcb.set_debug_output(boot::IO_PORT_CONTROL, true).map_err(|_| "cannot give it the debug channel")?;
    let own = boot::CNODE;
    give(c.copy_in(slot::TCB, own, tcb, rights::ALL))?;
    give(c.copy_in(slot::CNODE, own, c, rights::ALL))?;
    give(c.copy_in(slot::VSPACE, own, p.address_space(), rights::ALL))?;
    give(c.copy_in(slot::IPC_BUFFER, own, p.ipc_buffer_frame(), rights::ALL))?;
    give(c.mint_in(STUDIO_ROOT_EP, own, ep, rights::WRITE | rights::GRANT_REPLY, STUDIO_BADGE))?;
    // The initrd, read-only at the same address as here.
    // One slot of ours is reused for every frame: copy, map into Studio, move to Studio.
    let scratch = ROOT.slot().map_err(oom)?;
    for i in 0..n_initrd {
        let frame = Frame::from_slot(info.initrd_frames.start + i);
        let copy = give(own.copy(frame, scratch, rights::READ))?;
        ROOT.map_frame_with_tables(copy.slot(), p.vspace, (info.initrd_vaddr & !0xfff) + i * 4096, rights::READ, false)
            .map_err(|e| {
                println!("[root] mapping initrd page {i} for studio failed: {e:?}");
                "cannot map the initrd"
            })?;
        give(c.move_in(studio_info.initrd_frames.start + i, own, copy))?;
    }
    // Everything else: interrupts, I/O ports, telemetry and all untyped memory. The root task
    // keeps nothing to make objects with from here on.
    give(c.move_in(slot::IRQ_CONTROL, own, boot::IRQ_CONTROL))?;
    give(c.move_in(slot::IO_PORT_CONTROL, own, boot::IO_PORT_CONTROL))?;
    give(c.move_in(slot::TELEMETRY, own, boot::TELEMETRY))?;
    for i in 0..n_untyped {
        give(c.move_in(first + i, own, Untyped::from_slot(info.untyped.start + i)))?;
    }
    process::start(&p).map_err(|_| "cannot start its thread")?;
    println!("[root] started studio at {:#x}; authority handed over", p.entry);
    Ok(ep)
}

/// A capability handed to Studio, or why not (printed).
fn give<T>(r: Result<T, AgentError>) -> Result<T, &'static str> {
    r.map_err(|e| {
        println!("[root] handing over a capability failed: {e}");
        "cannot hand over a capability"
    })
}
