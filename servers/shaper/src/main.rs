//! The syscall shaper (`shaper`): learns each agent's syscall profile during a warm-up window,
//! then enforces it, and serves the `shaper` interface (`PROFILE`, `ENFORCE`, `LEARN`, `STATUS`;
//! `SAVED` and `RESTORE` for the keeper that keeps profiles across boots, the journal; see
//! `ozone_agent_sdk::protocol::shaper`). The logic is in the library ([`ozone_shaper`]).
//!
//! Studio starts it with the `profiles` privilege: it holds no thread capability of any program;
//! Studio reads programs' counters and kernel profiles for it (`PROFILE_OF`) and changes agents'
//! profiles on their own threads (`SET_PROFILE`, `ARM_PROFILE`), never wider than in force unless
//! Studio allowed a relearn (`docs/shaper.md`). The interfaces it shapes are its own and those of
//! its `uses` in the system description (Studio's `SHAPED` lists them).
//!
//! **It calls no server.** It holds no capability to any server's endpoint: its requests to a
//! server wait in a queue until that server pulls them (`PULL`), when Studio has signalled it
//! (`SHAPED`). Only Studio, which never blocks on a program, is ever called; a server that never
//! pulls can stall neither the shaper nor the shell that asks it.
//!
//! **No timer, and none needed for enforcement.** The shaper serves requests at an ordinary
//! server priority, blocking in Recv, so the shell's `profile AGENT` is answered at once even
//! while an agent spins. Studio signals its notification whenever a program starts; the shaper
//! then looks at once ([`Shaper::program_started`]) and arms the new agent's learning window in
//! the kernel (TCB ArmProfile), before the agent runs (every agent's priority is below the
//! shaper's). The kernel ends the window itself, exactly after the warm-up's syscalls, whether
//! or not anything else runs: an agent that never blocks is enforced on time. The shaper's
//! other looks ([`Shaper::tick`]) come on the `TICK` requests of its ticker (`shaper-tick`), a
//! program at the lowest priority, when the system is idle: they report what the kernel
//! decided to Studio's log, tell the servers to enforce the agent's methods, and notice stops.
//! The price of the ticker: the system is never idle, so the kernel's "nothing can run"
//! shutdown does not happen.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::shaper::{self as proto, WARMUP_SYSCALLS, id, method};
use ozone_agent_sdk::protocol::studio::{self, ShapeOp};
use ozone_agent_sdk::rpc::{self, Client, Polled, Request, Response, Server};
use ozone_agent_sdk::{AgentError, entry, println, start};
use ozone_shaper::shaper::{Answer, Ask, Env, Shaper, Thread};

entry!(run);

/// The shaper's effects, through Studio (the only program it calls).
struct System;

impl Env for System {
    fn program(&mut self, id: u64) -> Result<studio::ThreadProfile, ServiceError> {
        from_studio(Client::studio().call(studio::method::PROFILE_OF, &id))
    }

    fn set_kernel_allowed(&mut self, t: Thread, allowed: u64) -> Result<(), ServiceError> {
        from_studio(
            Client::studio().call(studio::method::SET_PROFILE, &studio::SetProfile { id: t.id, run: t.run, allowed }),
        )
    }

    fn arm_kernel(&mut self, t: Thread, allowed: u64, learn: u64) -> Result<(), ServiceError> {
        from_studio(
            Client::studio()
                .call(studio::method::ARM_PROFILE, &studio::ArmProfile { id: t.id, run: t.run, allowed, learn }),
        )
    }

    fn signal(&mut self, interface: &str) -> bool {
        let shaped = Client::studio().call(studio::method::SHAPED, &Some(String::from(interface)));
        shaped.is_ok_and(|s| s.iter().any(|s| s.signalled))
    }

    fn may_shape(&mut self, caller: u64, target: &str, op: ShapeOp) -> Result<(), ServiceError> {
        from_studio(
            Client::studio()
                .call(studio::method::MAY_SHAPE, &studio::ShapeAsk { caller, target: String::from(target), op }),
        )
    }

    /// Studio prints the report with its other decisions; if Studio refuses it, print it here.
    fn report(&mut self, text: &str) {
        if Client::studio().call(studio::method::REPORT, text).is_err() {
            println!("{text}");
        }
    }
}

/// Studio's answer; an error that is not Studio's (the call itself failed) is `KernelError`.
fn from_studio<T>(answer: Result<T, AgentError>) -> Result<T, ServiceError> {
    answer.map_err(|e| match e {
        AgentError::Service(s) => s,
        _ => ServiceError::KernelError,
    })
}

fn run() -> u64 {
    // The console's shell calls the shaper (`profile`): a Call from here to the console could
    // meet the console waiting for the shaper. Lines go one way, never waiting.
    ozone_agent_sdk::log::set_nonblocking();
    let Some(info) = start::info() else {
        println!("not started by Studio: no start information");
        return 1;
    };
    // The servers it shapes: those of its `uses` (Studio signals each, so a server that restarted
    // with the shaper pulls what this run of the shaper has for it: nothing yet).
    let shaped = match Client::studio().call(studio::method::SHAPED, &None::<String>) {
        Ok(list) => list,
        Err(e) => {
            println!("Studio lists no servers to shape ({e}): shaping only `{}`", proto::INTERFACE);
            Vec::new()
        }
    };
    let remotes: Vec<(&str, u64)> =
        shaped.iter().filter(|s| s.provider != 0).map(|s| (s.interface.as_str(), s.provider)).collect();
    let warmup = if info.shaper_warmup == 0 { WARMUP_SYSCALLS } else { info.shaper_warmup };
    let mut shaper = Shaper::new(info.id, info.name(), warmup, proto::INTERFACE, &remotes);
    let mut env = System;
    println!("shaping `{}` after a warm-up of {warmup} syscalls per agent", shaper.interfaces().join("`, `"));
    let mut server = match Server::provided(proto::INTERFACE) {
        Ok(s) => s,
        Err(e) => {
            println!("cannot serve `{}`: {e}", proto::INTERFACE);
            return 1;
        }
    };
    loop {
        match server.wait() {
            Polled::Request(r) => {
                let answer = handle(&mut shaper, &r, &mut env, &mut server);
                server.answer(Some(answer));
                // After a server's pull is answered (never while it waits for the answer).
                shaper.send_signals(&mut env);
            }
            // Studio's signal that a program started (through its unbadged capability to the
            // shaper's notification: badge 0, label 0, no words): look now, so a new agent's
            // learning window is armed before it runs. A client's message always carries its id
            // as the badge, so no client can make the shaper look.
            Polled::Other(m) if m.badge == 0 && m.msg.info.0 == 0 => {
                shaper.program_started(&mut env, server.profiles_mut())
            }
            // A Call with a label that is no method: say so.
            Polled::Other(_) => server.answer(Some(Err(ServiceError::UnknownMethod))),
            Polled::Answered | Polled::Nothing => {}
        }
    }
}

/// Decode a request of the `shaper` interface and answer it.
fn handle(shaper: &mut Shaper, r: &Request, env: &mut System, server: &mut Server) -> Response {
    let mut ask = |ask| shaper.request(r.badge, ask, env, server.profiles_mut());
    match r.method {
        id::PROFILE => rpc::handle(r, method::PROFILE, |agent| profile(ask(Ask::Profile(agent))?)),
        id::ENFORCE => rpc::handle(r, method::ENFORCE, |agent| profile(ask(Ask::Enforce(agent))?)),
        id::LEARN => rpc::handle(r, method::LEARN, |agent| profile(ask(Ask::Learn(agent))?)),
        id::STATUS => rpc::handle(r, method::STATUS, |()| match ask(Ask::Status)? {
            Answer::Mode(m) => Ok(m),
            _ => Err(ServiceError::KernelError),
        }),
        id::TICK => rpc::handle(r, method::TICK, |()| match ask(Ask::Tick)? {
            Answer::Done => Ok(()),
            _ => Err(ServiceError::KernelError),
        }),
        id::PULL => rpc::handle(r, method::PULL, |pull| match ask(Ask::Pull(pull))? {
            Answer::Control(c) => Ok(c),
            _ => Err(ServiceError::KernelError),
        }),
        id::SAVED => rpc::handle(r, method::SAVED, |index| match ask(Ask::Saved(index))? {
            Answer::Kept(k) => Ok(k),
            _ => Err(ServiceError::KernelError),
        }),
        id::RESTORE => rpc::handle(r, method::RESTORE, |kept| match ask(Ask::Restore(kept))? {
            Answer::Restored(how) => Ok(how),
            _ => Err(ServiceError::KernelError),
        }),
        _ => Err(ServiceError::UnknownMethod),
    }
}

/// The profile the shaper answered (any other answer to a profile request would be the
/// shaper's mistake: refused rather than sent as the wrong type).
fn profile(a: Answer) -> Result<proto::Profile, ServiceError> {
    match a {
        Answer::Profile(p) => Ok(p),
        _ => Err(ServiceError::KernelError),
    }
}
