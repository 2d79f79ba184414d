//! The root task: the first thread, holding every initial capability. It finds Studio in the
//! initrd, starts it in an address space and CSpace of its own — loaded at an address chosen
//! from the instance seed — with an endpoint back to the root task, waits for Studio to report
//! in, and answers.
//!
//! Handing Studio the rest of the authority (untyped memory, device and interrupt capabilities)
//! and stepping aside is the next step (see the issues).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_abi::object::ObjectType;
use ozone_abi::rights;
use ozone_agent_sdk::root::{self, Root};
use ozone_agent_sdk::sys::{self, Msg};
use ozone_agent_sdk::{entry, println, process};
use ozone_loader::initrd::Initrd;

entry!(run);

static ROOT: Root = Root::new();

/// Studio's CNode: 2^10 slots.
const STUDIO_CNODE_RADIX: u64 = 10;

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
    // Studio's load address differs per instance: a 2 MiB-aligned slot in [1 GiB, 1.5 GiB).
    let bias = 0x4000_0000 + (info.instance_id % 256) * 0x20_0000;
    let Ok(ep) = ROOT.retype(ObjectType::Endpoint, 0) else {
        println!("[root] out of memory");
        return 1;
    };
    let grants = [(ep, rights::WRITE | rights::GRANT_REPLY, 0x5710)];
    let started = process::spawn(&ROOT, studio, bias, STUDIO_CNODE_RADIX, 200, &grants);
    let studio_proc = match started {
        Ok(p) => p,
        Err(e) => {
            println!("[root] cannot start studio: {e:?}");
            return 1;
        }
    };
    println!("[root] started studio at {:#x}", studio_proc.entry);
    match sys::recv(ep) {
        Ok(r) if r.badge == 0x5710 && r.msg.info.label() == 1 => {
            println!("[root] studio reported in from {:#x}", r.msg.mrs[0]);
            let _ = sys::reply(Msg::new(0, &[]));
        }
        other => {
            println!("[root] unexpected message: {other:?}");
            return 1;
        }
    }
    // Let Studio finish its report before the system ends.
    let _ =
        ozone_agent_sdk::kernel::tcb_set_priority(ozone_abi::bootinfo::slot::TCB, ozone_abi::bootinfo::slot::TCB, 100);
    0
}
