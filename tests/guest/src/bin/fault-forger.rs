//! Guest test agent: tries to make Studio believe it faulted. A fault reaches Studio as a Call on
//! Studio's endpoint with a fault badge and a fault label (1-4, `ozone_abi::fault`); the kernel
//! sends it through the capability in the thread's fault-handler slot, which the program does not
//! hold. So it scans every slot of its CNode and, through every capability it finds:
//!
//! 1. tries to change a thread's fault handler or to widen a thread's syscall profile (its own
//!    main thread's above all: it holds no capability to it, so every attempt must fail);
//! 2. Calls (and NBSends) with each fault label and a payload shaped like that fault's message
//!    (RIP, the address or RSP, the error code, syscall number or vector, the profile bit).
//!
//! None of it may look like a fault to Studio: the Calls reach Studio (slot 1) only with the
//! program's own badge, as ordinary messages that Studio refuses as unknown methods. The QEMU test
//! checks that Studio logged no fault and no denial for it, that it is still running, and that the
//! shell still answers. Afterwards it yields forever (at the lowest agent priority), so that `ps`
//! shows it running.
//!
//! Every line starts with `[fault-forger]`; it ends with `[fault-forger] N attempts not contained`
//! and `[fault-forger] done`.
//!
//! **Raw on purpose.** It invokes slots whose contents it does not know, with hand-made fault
//! messages, and must see the reply's label (a server refusing a message answers with an error
//! label, which the typed handles of `caps` do not report for a thread operation), so it speaks
//! `ozone_agent_sdk::kernel` / `sys` on raw slot numbers.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

use ozone_abi::invocation as inv;
use ozone_abi::{MessageInfo, fault, profile};
use ozone_agent_sdk::caps;
use ozone_agent_sdk::kernel as k;
use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::sys::{self, Msg};
use ozone_agent_sdk::{entry, println, start};

entry!(run);

/// A fault message's words, as the kernel would write them for fault `label`.
fn payload(label: u64) -> [u64; 4] {
    let rip = run as *const () as u64;
    let rsp = 0x7fff_f000;
    match label {
        fault::VM_FAULT => [rip, 0x10, 6, 0],
        fault::UNKNOWN_SYSCALL => [rip, rsp, 99, 0],
        fault::USER_EXCEPTION => [rip, rsp, 13, 0],
        _ => [rip, rsp, -1i64 as u64, u64::from(profile::UNTYPED)],
    }
}

/// Whether an invocation or Call was turned away: refused by the kernel, or answered with an
/// error label by whoever received it.
fn refused(r: &Result<sys::Received, ozone_abi::Error>) -> bool {
    match r {
        Err(_) => true,
        Ok(m) => m.msg.info.label() != 0,
    }
}

fn run() -> u64 {
    let Some(info) = start::info() else {
        println!("FAIL: no start information");
        return 1;
    };
    // What it does afterwards (Yield) is learned in its warm-up, which the kernel ends on time
    // in the middle of its scan: the log must show no denial of its own making.
    sys::yield_now();
    let slots = 1u64 << info.cnode_radix;
    let mut failures = 0u32;
    let mut held = 0u64;
    let mut forged = 0u64;
    for s in 0..slots {
        // What the slot holds, if anything: an empty slot refuses any Call at once.
        let probe = k::invoke(s, inv::TCB_GET_PROFILE, &[], &[]);
        if probe == Err(ozone_abi::Error::InvalidCapability) {
            continue;
        }
        held += 1;
        // 1. A thread's fault handler and profile, through whatever this is.
        for (what, r) in [
            ("remove a thread's fault handler", k::invoke(s, inv::TCB_SET_FAULT_HANDLER, &[], &[])),
            ("point a thread's fault handler at this slot", k::invoke(s, inv::TCB_SET_FAULT_HANDLER, &[], &[s])),
            ("widen a thread's syscall profile", k::invoke(s, inv::TCB_SET_PROFILE, &[profile::ALL], &[])),
        ] {
            if !refused(&r) {
                println!("{what} through slot {s}: NOT CONTAINED ({r:?})");
                failures += 1;
            }
        }
        // 2. Fault-shaped messages, with each fault label.
        for label in [fault::VM_FAULT, fault::UNKNOWN_SYSCALL, fault::USER_EXCEPTION, fault::DENIED] {
            let msg = Msg { info: MessageInfo::new(label, 0, 0, 4), mrs: payload(label) };
            forged += 2;
            let r = sys::call(s, msg);
            if !refused(&r) {
                println!("a Call with fault label {label} through slot {s}: NOT CONTAINED ({r:?})");
                failures += 1;
            }
            // A Send cannot be answered; nothing to check but that Studio says nothing of it.
            let _ = sys::nb_send(s, msg);
        }
    }
    println!("{held} capabilities held, {forged} fault-shaped messages sent through them");
    if held == 0 {
        println!("FAIL: it holds not even its capability to Studio (slot {})", caps::studio().slot());
        failures += 1;
    }
    // Studio still serves it as an ordinary program.
    if Client::studio().call(method::MY_MEMORY, &()).is_err() {
        println!("FAIL: Studio does not answer");
        failures += 1;
    }
    println!("{failures} attempts not contained");
    println!("done");
    loop {
        sys::yield_now();
    }
}
