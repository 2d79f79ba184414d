//! Host tests of the lifecycle and the service, against the kernel model (`fake.rs`): what a
//! started program holds, that stopping one gives back every object and byte it had, the restart
//! policy, and the authorisation table applied to real requests — each attempt by a program that
//! holds everything it can legitimately get.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::start::slot as pslot;
use ozone_agent_sdk::protocol::studio::{self as proto, AgentState, ShapeAsk, ShapeOp, method};
use ozone_agent_sdk::protocol::system::{
    Kind, Privilege, Program, Response, Restart, SystemDescription, SystemSettings,
};
use ozone_agent_sdk::protocol::{Encodes, Method, ServiceError};
use ozone_agent_sdk::rpc::{self, Args};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fake::{Fake, GIVEN, Obj};
use crate::kernel::Kernel;
use crate::lifecycle::{Boot, FAULT_BIT, MAX_RESTARTS};
use crate::log::tests::Lines;
use crate::state::Studio;

static IMAGE: [u8; 8192] = [0x7f; 8192];

/// A request, encoded as a client would: its method number and postcard bytes.
struct Encoded(u64, Vec<u8>);

/// A request of `m`, encoded as the method's request type.
fn args<Req: Serialize, Resp, Q: Encodes<Req> + ?Sized>(m: Method<Req, Resp>, v: &Q) -> Encoded {
    Encoded(m.id(), postcard::to_allocvec(v).unwrap())
}

/// A request of method number `m` carrying any bytes (for numbers and payloads no client of the
/// typed protocol would send).
fn raw_args<T: Serialize>(m: u64, v: &T) -> Encoded {
    Encoded(m, postcard::to_allocvec(v).unwrap())
}

impl Args for Encoded {
    fn method(&self) -> u64 {
        self.0
    }

    fn payload<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        postcard::from_bytes(&self.1).map_err(|_| ServiceError::BadRequest)
    }
}

fn program(name: &str, kind: Kind) -> Program {
    Program {
        name: name.into(),
        binary: name.into(),
        kind,
        priority: if kind == Kind::Server { 150 } else { 100 },
        memory_kib: 512,
        provides: vec![],
        uses: vec![],
        devices: vec![],
        privileges: vec![],
        restart: Restart::Never,
        start: true,
        signals_clients: false,
        pci: vec![],
        store_kib: 0,
        net_listen: vec![],
        net_connect: vec![],
        seed: 0,
        respond: None,
    }
}

/// console (admin, serial), echo, secmem (vspaces), shaper (profiles), client (uses echo and
/// secmem), hostile (nothing; started on demand), crasher (restart = always).
pub(crate) fn description() -> SystemDescription {
    let mut console = program("console", Kind::Server);
    console.provides = vec!["console".into()];
    console.devices = vec!["serial".into()];
    console.privileges = vec![Privilege::Admin];
    let mut echo = program("echo", Kind::Server);
    echo.provides = vec!["echo".into()];
    let mut secmem = program("secmem", Kind::Server);
    secmem.provides = vec!["secmem".into()];
    secmem.privileges = vec![Privilege::Vspaces];
    secmem.memory_kib = 4096;
    let mut shaper = program("shaper", Kind::Server);
    shaper.provides = vec!["shaper".into()];
    shaper.uses = vec!["echo".into()];
    shaper.privileges = vec![Privilege::Profiles];
    let mut client = program("client", Kind::Agent);
    client.uses = vec!["echo".into(), "secmem".into()];
    client.seed = 0x5eed_0000_cafe;
    let mut hostile = program("hostile", Kind::Agent);
    hostile.start = false;
    let mut crasher = program("crasher", Kind::Agent);
    crasher.restart = Restart::Always;
    crasher.start = false;
    SystemDescription {
        system: SystemSettings { shaper_warmup: 8, ..SystemSettings::new(32) },
        programs: vec![console, echo, secmem, shaper, client, hostile, crasher],
    }
}

pub(crate) fn boot() -> (Studio, &'static Fake, Lines) {
    boot_with_model(None)
}

/// [`boot`], with `model` as the initrd's `studio.model`.
pub(crate) fn boot_with_model(model: Option<&'static [u8]>) -> (Studio, &'static Fake, Lines) {
    boot_desc(description(), model)
}

/// Studio booted with `desc` and `model`.
pub(crate) fn boot_desc(desc: SystemDescription, model: Option<&'static [u8]>) -> (Studio, &'static Fake, Lines) {
    // The host tests of the watch and the ladder count windows for a frame of 8; the frame's own
    // behaviour (any length) is detect.rs's to test, Studio's default frame the QEMU tests'
    // (`studio_respond`).
    boot_detect(desc, model, ozone_cognition::detect::Config { frame: 8, ..ozone_cognition::detect::Config::default() })
}

/// Studio booted with `desc`, `model` and the detector settings `detect`.
fn boot_detect(
    desc: SystemDescription,
    model: Option<&'static [u8]>,
    detect: ozone_cognition::detect::Config,
) -> (Studio, &'static Fake, Lines) {
    assert_eq!(desc.validate(&|_| true), Ok(()));
    let fake: &'static Fake = Box::leak(Box::new(Fake::new(&[(100, 32 << 20), (101, 16 << 20)], &GIVEN)));
    let images = desc.programs.iter().map(|p| (p.binary.clone(), &IMAGE[..])).collect();
    let boot = Boot {
        desc,
        images,
        seed: [7; 32],
        untyped: vec![(100, 25), (101, 24)],
        device: vec![],
        empty: (1000, 4000),
        model,
        detect,
    };
    let lines = Lines::default();
    let studio = Studio::new(fake, boot, Box::new(lines.clone())).unwrap_or_else(|e| panic!("{e}"));
    (studio, fake, lines)
}

pub(crate) fn id(s: &Studio, name: &str) -> u64 {
    s.agents[s.index_of(name).unwrap()].id
}

/// Program `who` asks `m` of Studio; Studio's answer, decoded as the method's answer type.
pub(crate) fn call<Req: Serialize, Resp: DeserializeOwned, Q: Encodes<Req> + ?Sized>(
    s: &mut Studio,
    who: &str,
    m: Method<Req, Resp>,
    v: &Q,
) -> Result<Resp, ServiceError> {
    let badge = id(s, who);
    rpc::answer_of(m, &s.request(badge, &args(m, v)).expect("answered"))
}

/// [`call`], for whether it was answered or refused.
pub(crate) fn ask<Req: Serialize, Resp: DeserializeOwned, Q: Encodes<Req> + ?Sized>(
    s: &mut Studio,
    who: &str,
    m: Method<Req, Resp>,
    v: &Q,
) -> Result<(), ServiceError> {
    call(s, who, m, v).map(|_| ())
}

pub(crate) fn decisions(s: &Studio) -> Vec<String> {
    s.log.decisions(0, |_| true).into_iter().map(|e| e.text).collect()
}

fn free(s: &Studio) -> u64 {
    s.kernel_free()
}

#[test]
fn boot_starts_the_description_with_its_capabilities() {
    let (s, fake, lines) = boot();
    for a in &s.agents {
        let running = a.prog.start;
        assert_eq!(a.state == AgentState::Running, running, "{}: {:#?}", a.prog.name, decisions(&s));
    }
    let d = decisions(&s);
    assert!(d[0].starts_with("system: 7 programs"));
    for name in ["console", "echo", "secmem", "shaper", "client"] {
        assert!(d.iter().any(|t| t.starts_with(&format!("start {name} (id {}", id(&s, name)))), "{d:#?}");
    }
    assert!(lines.0.borrow().iter().all(|l| l.starts_with("[studio] ")));
    // What each holds: Studio's capability badged with its id (and nothing with the fault bit:
    // its fault endpoint is in its thread's fault-handler slot only), its service endpoints;
    // devices and privileges only where the description says.
    for a in s.agents.iter().filter(|a| a.state == AgentState::Running) {
        let p = a.proc.unwrap();
        let caps = fake.caps_in(p.cnode);
        let badge = |at| caps.iter().find(|c| c.0 == at).map(|c| c.1);
        assert_eq!(badge(pslot::STUDIO), Some(a.id));
        assert!(caps.iter().all(|c| c.1 & FAULT_BIT == 0), "{}: {caps:?}", a.prog.name);
        assert_eq!(caps.iter().any(|c| c.0 == pslot::SERIAL_PORTS), a.prog.name == "console");
        assert_eq!(caps.iter().any(|c| c.0 == pslot::POOL), a.prog.name == "secmem");
        // Nobody holds the kernel's telemetry capability or another program's thread: the shaper
        // reads and changes profiles through Studio.
        assert!(!caps.iter().any(|c| c.0 == pslot::TELEMETRY), "{}", a.prog.name);
        assert!(a.held.iter().all(|h| h.from.is_none()), "{}", a.prog.name);
        assert_eq!(caps.iter().any(|c| c.0 == pslot::SERVICE), !a.prog.provides.is_empty());
        match fake.obj_at(p.tcb) {
            Some(Obj::Tcb { priority, mcp, fault_ep, running }) => {
                assert_eq!(
                    (priority, mcp, fault_ep, running),
                    (a.prog.priority as u64, a.prog.priority as u64, FAULT_BIT | a.id, true)
                );
            }
            other => panic!("{other:?}"),
        }
        // Studio's bookkeeping says what the CNode holds.
        for h in &a.held {
            assert!(caps.iter().any(|c| c.0 == h.slot), "{}: {}", a.prog.name, h.what);
        }
    }
}

/// `MY_SEED` answers the caller's own `seed` from the description (0 when it has none), and
/// nobody else's; no program holds anything in slot 0, the slot scenario programs' phase
/// markers call (`ozone_agent_sdk::scenario::phase`).
#[test]
fn my_seed_is_the_callers_own_and_slot_zero_stays_empty() {
    let (mut s, fake, _) = boot();
    assert_eq!(call(&mut s, "client", method::MY_SEED, &()), Ok(0x5eed_0000_cafe));
    assert_eq!(call(&mut s, "console", method::MY_SEED, &()), Ok(0));
    ask(&mut s, "console", method::START, &String::from("hostile")).unwrap();
    assert_eq!(call(&mut s, "hostile", method::MY_SEED, &()), Ok(0));
    // A badge that is no program's.
    assert_eq!(s.request(999, &args(method::MY_SEED, &())), Some(Err(ServiceError::Denied)));
    for a in s.agents.iter().filter(|a| a.state == AgentState::Running) {
        let caps = fake.caps_in(a.proc.unwrap().cnode);
        assert!(!caps.iter().any(|c| c.0 == 0), "{}: {caps:?}", a.prog.name);
    }
}

#[test]
fn stopping_a_program_gives_back_everything() {
    let (mut s, fake, _) = boot();
    let (objects, caps, before) = (fake.live(), fake.cap_count(), free(&s));
    assert_eq!(before, s.pool.free());
    for round in 0..3 {
        ask(&mut s, "console", method::START, &String::from("hostile")).unwrap();
        let h = s.index_of("hostile").unwrap();
        let p = s.agents[h].proc.unwrap();
        // Others hold copies of its objects: secmem (once it is a client) its address space. The
        // shaper reads its profile through Studio, and holds nothing of it.
        {
            let t = id(&s, "hostile");
            ask(&mut s, "shaper", method::PROFILE_OF, &t)
        }
        .unwrap();
        ask(&mut s, "console", method::GRANT, &proto::Grant { agent: "hostile".into(), interface: "secmem".into() })
            .unwrap();
        {
            let t = id(&s, "hostile");
            ask(&mut s, "secmem", method::VSPACE_OF, &t)
        }
        .unwrap();
        ask(&mut s, "hostile", method::GROW_HEAP, &4u64).unwrap();
        assert!(free(&s) < before);
        ask(&mut s, "console", method::KILL, &String::from("hostile")).unwrap();
        assert_eq!(s.agents[h].state, AgentState::Stopped);
        assert!(fake.obj_at(p.tcb).is_none() && fake.obj_at(p.cnode).is_none(), "round {round}");
        assert!(s.agents.iter().all(|a| a.held.iter().all(|x| x.from != Some(s.agents[h].id))));
        ask(&mut s, "console", method::REVOKE, &proto::Grant { agent: "hostile".into(), interface: "secmem".into() })
            .unwrap();
        // Every object and byte is back (the copies given to others too).
        assert_eq!(free(&s), before, "round {round}");
        assert_eq!(free(&s), s.pool.free());
        // The one object more is the chunk, kept free for the next program of its size (the
        // next round reuses it).
        assert_eq!((fake.live(), fake.cap_count()), (objects + 1, caps + 1), "round {round}");
    }
}

#[test]
fn a_start_that_fails_leaves_nothing_behind() {
    let (mut s, fake, _) = boot();
    let (objects, before) = (fake.live(), free(&s));
    let h = s.index_of("hostile").unwrap();
    s.images.retain(|(n, _)| n != "hostile");
    assert_eq!(ask(&mut s, "console", method::START, &String::from("hostile")), Err(ServiceError::KernelError));
    assert!(decisions(&s).last().unwrap().starts_with("cannot start hostile: no binary `hostile`"));
    assert_eq!(s.agents[h].state, AgentState::Stopped);
    // A quota too small for the program: out of memory while building it.
    s.images.push((String::from("hostile"), &IMAGE[..]));
    s.agents[h].prog.memory_kib = 16;
    assert_eq!(ask(&mut s, "console", method::START, &String::from("hostile")), Err(ServiceError::QuotaExceeded));
    // Every byte is back; the one object more is the chunk, kept free for the next start.
    assert_eq!(free(&s), before);
    assert_eq!(fake.live(), objects + 1);
}

#[test]
fn faults_stop_and_restart_within_the_limit() {
    let (mut s, fake, _) = boot();
    let before = free(&s);
    ask(&mut s, "console", method::START, &String::from("crasher")).unwrap();
    let c = s.index_of("crasher").unwrap();
    let crasher = s.agents[c].id;
    for n in 0..MAX_RESTARTS {
        assert!(s.fault(crasher, 1, [0x1000, 0x10, 6, 0]).is_none());
        assert_eq!((s.agents[c].state, s.agents[c].restarts), (AgentState::Running, n + 1));
    }
    assert!(s.fault(crasher, 3, [0x1000, 13, 0, 0]).is_none());
    assert_eq!((s.agents[c].state, s.agents[c].restarts), (AgentState::Faulted, MAX_RESTARTS));
    assert!(decisions(&s).last().unwrap().contains("not restarting (restart limit reached)"));
    assert_eq!(free(&s), before);
    // A fault message for a program that is not running changes nothing.
    let live = fake.live();
    assert!(s.fault(crasher, 1, [0; 4]).is_none());
    assert!(s.fault(999, 1, [0; 4]).is_none());
    assert_eq!(fake.live(), live);
    // An exit ends a program without an answer, and with its status in the log.
    let client = id(&s, "client");
    assert!(s.request(client, &args(method::EXIT, &3u64)).is_none());
    assert!(decisions(&s).last().unwrap().starts_with("client exited with status 3: revoked everything"));
}

/// A plain agent tries everything Studio serves: nothing about another program or the system
/// works, every refusal is logged with its rule, and Studio's state is unchanged.
#[test]
fn a_plain_agent_gets_nothing_beyond_itself() {
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &String::from("hostile")).unwrap();
    let (objects, before) = (fake.live(), free(&s));
    let name = || String::from("console");
    let grant = proto::Grant { agent: "hostile".into(), interface: "echo".into() };
    let shape = ShapeAsk { caller: id(&s, "hostile"), target: "console".into(), op: ShapeOp::Learn };
    let tries: Vec<(u64, &str, Result<(), ServiceError>)> = vec![
        (method::LIST.id(), "LIST needs the `admin` privilege", ask(&mut s, "hostile", method::LIST, &0u32)),
        (method::CAPS.id(), "CAPS needs", ask(&mut s, "hostile", method::CAPS, &name())),
        (method::GRANT.id(), "GRANT needs", ask(&mut s, "hostile", method::GRANT, &grant)),
        (method::REVOKE.id(), "REVOKE needs", ask(&mut s, "hostile", method::REVOKE, &grant)),
        (method::KILL.id(), "KILL needs", ask(&mut s, "hostile", method::KILL, &name())),
        (method::START.id(), "START needs", ask(&mut s, "hostile", method::START, &String::from("crasher"))),
        (method::LOG.id(), "LOG needs", ask(&mut s, "hostile", method::LOG, &0u32)),
        (method::REPORTS.id(), "REPORTS needs", ask(&mut s, "hostile", method::REPORTS, &0u32)),
        (method::MEMORY.id(), "MEMORY needs", ask(&mut s, "hostile", method::MEMORY, &())),
        (method::SHUTDOWN.id(), "SHUTDOWN needs", ask(&mut s, "hostile", method::SHUTDOWN, &0u8)),
        (method::TELEMETRY.id(), "TELEMETRY needs", ask(&mut s, "hostile", method::TELEMETRY, &name())),
        (method::VSPACE_OF.id(), "VSPACE_OF needs the `vspaces`", ask(&mut s, "hostile", method::VSPACE_OF, &1u64)),
        (method::PROFILE_OF.id(), "PROFILE_OF needs the `profiles`", ask(&mut s, "hostile", method::PROFILE_OF, &1u64)),
        (method::SET_PROFILE.id(), "SET_PROFILE needs the `profiles`", {
            let c = proto::SetProfile { id: id(&s, "client"), run: 1, allowed: 0 };
            ask(&mut s, "hostile", method::SET_PROFILE, &c)
        }),
        (method::ARM_PROFILE.id(), "ARM_PROFILE needs the `profiles`", {
            let c = proto::ArmProfile { id: id(&s, "client"), run: 1, allowed: 0, learn: 1 };
            ask(&mut s, "hostile", method::ARM_PROFILE, &c)
        }),
        (method::MAY_SHAPE.id(), "MAY_SHAPE needs the `profiles`", ask(&mut s, "hostile", method::MAY_SHAPE, &shape)),
        (method::FUND.id(), "FUND needs the `vspaces`", {
            let f = proto::Fund { client: id(&s, "console"), order: 0, slot: 300 };
            ask(&mut s, "hostile", method::FUND, &f)
        }),
        (method::LOOKUP.id(), "lookup of `echo`, which it may not use", {
            ask(&mut s, "hostile", method::LOOKUP, &proto::Lookup { interface: "echo".into() })
        }),
    ];
    let d = decisions(&s);
    for (m, why, r) in tries {
        assert_eq!(r, Err(ServiceError::Denied), "method {m}");
        let rule = crate::policy::rule_of(m).unwrap().name;
        assert!(
            d.iter().any(|t| t.starts_with("refuse hostile: ")
                && t.contains(why)
                && t.ends_with(&format!("(rule {rule})"))),
            "method {m}: {d:#?}"
        );
    }
    assert_eq!(fake.s.borrow().powered_off, None);
    assert_eq!((fake.live(), free(&s)), (objects, before));
    // Unknown methods and badges, and garbage arguments.
    assert_eq!(s.request(id(&s, "hostile"), &raw_args(40, &())), Some(Err(ServiceError::UnknownMethod)));
    assert_eq!(s.request(999, &args(method::MY_MEMORY, &())), Some(Err(ServiceError::Denied)));
    assert_eq!(s.request(0, &args(method::MY_MEMORY, &())), Some(Err(ServiceError::Denied)));
    let hostile = id(&s, "hostile");
    let garbage = raw_args(method::GROW_HEAP.id(), &[0xffu8; 12]);
    assert_eq!(s.request(hostile, &garbage), Some(Err(ServiceError::BadRequest)));
    assert_eq!(ask(&mut s, "hostile", method::GROW_HEAP, &(1u64 << 40)), Err(ServiceError::InvalidArgument));
    // Its own requests work: memory, reports, the interfaces it may use.
    ask(&mut s, "hostile", method::MY_MEMORY, &()).unwrap();
    ask(&mut s, "hostile", method::LOOKUP, &proto::Lookup { interface: "studio".into() }).unwrap();
    ask(&mut s, "hostile", method::REPORT, &"a line\n[studio] kill console").unwrap();
    let page = s.log.reports(0, |i| s.name_of(i), |_| true);
    assert_eq!(page.entries.last().unwrap().from, "hostile");
    assert_eq!(page.entries.last().unwrap().text, "a line [studio] kill console");
}

#[test]
fn privileged_requests_stay_within_their_rows() {
    let (mut s, _, _) = boot();
    // An administrator cannot kill itself; it can kill others, and start them again.
    assert_eq!(ask(&mut s, "console", method::KILL, &String::from("console")), Err(ServiceError::InvalidArgument));
    assert!(decisions(&s).last().unwrap().starts_with("refuse console: KILL of itself (rule KILL)"));
    assert_eq!(ask(&mut s, "console", method::KILL, &String::from("nosuch")), Err(ServiceError::NotFound));
    assert_eq!(
        ask(&mut s, "console", method::GRANT, &proto::Grant { agent: "client".into(), interface: "nosuch".into() }),
        Err(ServiceError::NotFound)
    );
    // `vspaces` reaches its clients' address spaces only.
    assert_eq!(
        {
            let t = id(&s, "client");
            ask(&mut s, "secmem", method::VSPACE_OF, &t)
        },
        Ok(())
    );
    for other in ["console", "echo", "shaper", "secmem"] {
        assert_eq!(
            {
                let t = id(&s, other);
                ask(&mut s, "secmem", method::VSPACE_OF, &t)
            },
            Err(ServiceError::Denied),
            "{other}"
        );
    }
    assert!(
        decisions(&s).iter().any(|t| t.starts_with("refuse secmem: VSPACE_OF of console, which uses no interface"))
    );
    // `profiles`: any program's profile; past the last program, `NotFound`.
    assert_eq!(
        {
            let t = id(&s, "console");
            ask(&mut s, "shaper", method::PROFILE_OF, &t)
        },
        Ok(())
    );
    assert_eq!(ask(&mut s, "shaper", method::PROFILE_OF, &99u64), Err(ServiceError::NotFound));
    // MAY_SHAPE: the asker's rights decide, and a refusal is logged as the asker's.
    let q = |caller: u64, target: &str, op| ShapeAsk { caller, target: target.into(), op };
    let (client, console) = (id(&s, "client"), id(&s, "console"));
    assert_eq!(ask(&mut s, "shaper", method::MAY_SHAPE, &q(client, "client", ShapeOp::Profile)), Ok(()));
    assert_eq!(ask(&mut s, "shaper", method::MAY_SHAPE, &q(console, "client", ShapeOp::Learn)), Ok(()));
    assert_eq!(ask(&mut s, "shaper", method::MAY_SHAPE, &q(client, "echo", ShapeOp::Learn)), Err(ServiceError::Denied));
    assert!(
        decisions(&s).last().unwrap().starts_with(
            "refuse client: relearning the profile of echo through the shaper: changing another program's"
        )
    );
    assert_eq!(ask(&mut s, "shaper", method::MAY_SHAPE, &q(99, "client", ShapeOp::Profile)), Err(ServiceError::Denied));
    // A program without `profiles` naming another as the asker is refused as itself.
    assert_eq!(
        ask(&mut s, "hostile", method::MAY_SHAPE, &q(console, "client", ShapeOp::Learn)),
        Err(ServiceError::Denied)
    );
    let last = decisions(&s).last().unwrap().clone();
    assert!(last.starts_with("refuse hostile:"), "{last}");
    // Granting makes a lookup work; revoking deletes the capability and refuses the next lookup.
    let lookup = proto::Lookup { interface: "console".into() };
    assert_eq!(ask(&mut s, "client", method::LOOKUP, &lookup), Err(ServiceError::Denied));
    ask(&mut s, "console", method::GRANT, &proto::Grant { agent: "client".into(), interface: "console".into() })
        .unwrap();
    ask(&mut s, "client", method::LOOKUP, &lookup).unwrap();
    ask(&mut s, "console", method::REVOKE, &proto::Grant { agent: "client".into(), interface: "console".into() })
        .unwrap();
    assert!(decisions(&s).last().unwrap().contains("deleted; future lookups refused"));
    assert_eq!(ask(&mut s, "client", method::LOOKUP, &lookup), Err(ServiceError::Denied));
    // Shutdown: the root task is asked.
    let _ = ask(&mut s, "console", method::SHUTDOWN, &0u8);
    assert!(decisions(&s).last().unwrap().starts_with("shutdown (status 0): asked by console"));
}

#[test]
fn the_heap_grows_within_the_quota_only() {
    let (mut s, _, _) = boot();
    let c = s.index_of("client").unwrap();
    let quota = s.agents[c].prog.memory_kib as u64 * 1024;
    let used = s.agents[c].used();
    ask(&mut s, "client", method::GROW_HEAP, &2u64).unwrap();
    assert!(s.agents[c].used() > used && s.agents[c].used() <= quota);
    let pages = (quota - s.agents[c].used()) / 4096 + 1;
    assert_eq!(ask(&mut s, "client", method::GROW_HEAP, &pages), Err(ServiceError::QuotaExceeded));
    assert!(decisions(&s).last().unwrap().contains("more heap pages would exceed its quota"));
    assert!(s.agents[c].used() <= quota);
    assert_eq!(ask(&mut s, "client", method::GROW_HEAP, &0u64), Err(ServiceError::InvalidArgument));
}

#[test]
fn every_start_after_the_shaper_s_rings_its_notification_and_only_its() {
    let (mut s, fake, _) = boot();
    let shaper = s.index_of("shaper").unwrap();
    let n = s.agents[shaper].notification.expect("the shaper is a server: it has a notification");
    let ntfn_obj = fake.s.borrow().caps[&(crate::fake::STUDIO_CNODE, n)].obj;
    // At boot: once for each program started after the shaper (client), never for itself.
    assert_eq!(fake.s.borrow().signals, vec![(ntfn_obj, 0)]);
    // A program started later (here by the admin console) rings it too.
    let hostile = s.index_of("hostile").unwrap();
    s.start(hostile, "test").unwrap();
    assert_eq!(fake.s.borrow().signals, vec![(ntfn_obj, 0), (ntfn_obj, 0)]);
    // A stopped shaper is rung by nobody: its slot is forgotten with its memory.
    s.stop(shaper, AgentState::Stopped, "test".into());
    assert_eq!(s.agents[shaper].notification, None);
    s.stop(hostile, AgentState::Stopped, "test".into());
    s.start(hostile, "test").unwrap();
    assert_eq!(fake.s.borrow().signals.len(), 2);
}

/// The kernel's window-ended fault (label 5) is no fault of the program's: Studio signals the
/// shaper, resumes the program (a label-0 reply) and logs nothing.
#[test]
fn a_window_that_ended_rings_the_shaper_and_resumes_the_program() {
    let (mut s, fake, _) = boot();
    let shaper = s.index_of("shaper").unwrap();
    let n = s.agents[shaper].notification.unwrap();
    let ntfn_obj = fake.s.borrow().caps[&(crate::fake::STUDIO_CNODE, n)].obj;
    let client = id(&s, "client");
    let before = (fake.s.borrow().signals.len(), decisions(&s).len());
    let reply = s.fault(client, ozone_abi::fault::WINDOW_ENDED, [0x40_1000, 0x7000, 7, 0b1]);
    assert_eq!(reply.map(|r| r.map(|m| m.info.label())), Some(Ok(0)), "resumed");
    assert_eq!(s.agents[s.index_of("client").unwrap()].state, AgentState::Running);
    assert_eq!(fake.s.borrow().signals[before.0..], [(ntfn_obj, 0)]);
    assert_eq!(decisions(&s).len(), before.1, "nothing logged");
}

/// The shaper's control of servers' method profiles: only servers providing an interface in the
/// shaper's `uses` get its endpoint (badged with their id, in slot `SHAPER`); `SHAPED` signals
/// exactly those servers, with the control badge, for the `profiles` program only, and only
/// for interfaces of its own `uses`.
#[test]
fn the_shaper_signals_the_servers_it_shapes_and_only_those() {
    use ozone_agent_sdk::protocol::shaper::{CONTROL_SIGNAL, PULL_BADGE};
    use ozone_agent_sdk::protocol::start::slot;
    let (mut s, fake, _) = boot();
    let shaper = s.index_of("shaper").unwrap();
    let shaper_ep = s.agents[shaper].endpoints[0].1;
    let ep_obj = fake.s.borrow().caps[&(crate::fake::STUDIO_CNODE, shaper_ep)].obj;
    for name in ["console", "echo", "secmem", "shaper", "client"] {
        let t = s.index_of(name).unwrap();
        let cnode = s.agents[t].proc.unwrap().cnode;
        let c = fake.s.borrow().cnode_of(cnode).unwrap().0;
        let held = fake.s.borrow().caps.get(&(c, slot::SHAPER)).map(|cap| (cap.obj, cap.badge));
        if name == "echo" {
            assert_eq!(held, Some((ep_obj, PULL_BADGE | s.agents[t].id)), "echo is shaped (in the shaper's `uses`)");
        } else {
            assert_eq!(held, None, "{name} has no capability to the shaper in slot SHAPER");
        }
    }
    let echo = s.index_of("echo").unwrap();
    let n = s.agents[echo].notification.unwrap();
    let echo_ntfn = fake.s.borrow().caps[&(crate::fake::STUDIO_CNODE, n)].obj;
    let before = fake.s.borrow().signals.len();
    let all = call(&mut s, "shaper", method::SHAPED, &None::<String>).unwrap();
    assert_eq!(all, vec![proto::Shaped { interface: "echo".into(), provider: id(&s, "echo"), signalled: true }]);
    let one = call(&mut s, "shaper", method::SHAPED, &Some(String::from("echo"))).unwrap();
    assert_eq!(one, all);
    let signals = fake.s.borrow().signals[before..].to_vec();
    assert_eq!(signals, vec![(echo_ntfn, CONTROL_SIGNAL), (echo_ntfn, CONTROL_SIGNAL)]);
    // The badged copy was for the signal only.
    assert!(!fake.s.borrow().caps.keys().any(|k| fake.s.borrow().caps[k].badge == CONTROL_SIGNAL));
    // Not in its `uses`: refused, logged, nobody signalled.
    for other in ["secmem", "console", "shaper", "nosuch"] {
        let e = call(&mut s, "shaper", method::SHAPED, &Some(String::from(other)));
        assert_eq!(e, Err(ServiceError::Denied), "{other}");
    }
    assert!(decisions(&s).iter().any(|d| d.contains("SHAPED of `secmem`, which is not in its `uses`")));
    // Without the `profiles` privilege: refused, whatever its `uses`.
    for who in ["client", "console", "echo"] {
        assert_eq!(call(&mut s, who, method::SHAPED, &None::<String>), Err(ServiceError::Denied), "{who}");
        assert_eq!(call(&mut s, who, method::SHAPED, &Some(String::from("echo"))), Err(ServiceError::Denied));
    }
    assert_eq!(fake.s.borrow().signals.len(), before + 2);
    // While the shaper is stopped no server holds a capability to pull from it, and a pull
    // waiting on its endpoint is cancelled (the server's Call runs again and fails): no server
    // waits for a shaper that is not running. Its next run gives them their capability again.
    let echo_cnode = fake.s.borrow().cnode_of(s.agents[echo].proc.unwrap().cnode).unwrap().0;
    let held = |fake: &crate::fake::Fake| fake.s.borrow().caps.get(&(echo_cnode, slot::SHAPER)).map(|c| c.badge);
    s.stop(shaper, AgentState::Stopped, "test".into());
    assert_eq!(held(fake), None);
    // The pull first; then every client's call waiting on the stopped server's endpoint.
    let cancelled = fake.s.borrow().cancelled.clone();
    assert_eq!(cancelled[0], (ep_obj, PULL_BADGE | id(&s, "echo")));
    assert!(cancelled[1..].iter().all(|&(o, b)| o == ep_obj && b & PULL_BADGE == 0));
    s.start(shaper, "test").unwrap();
    assert_eq!(held(fake), Some(PULL_BADGE | id(&s, "echo")));
    // A stopped server is not signalled; it is signalled again once restarted, and keeps its
    // capability to the shaper across the restart.
    s.stop(echo, AgentState::Stopped, "test".into());
    let down = call(&mut s, "shaper", method::SHAPED, &None::<String>).unwrap();
    assert!(!down[0].signalled);
    assert_eq!(fake.s.borrow().signals.len(), before + 2);
    s.start(echo, "test").unwrap();
    let up = call(&mut s, "shaper", method::SHAPED, &None::<String>).unwrap();
    assert!(up[0].signalled);
    let cnode = s.agents[echo].proc.unwrap().cnode;
    let c = fake.s.borrow().cnode_of(cnode).unwrap().0;
    assert_eq!(fake.s.borrow().caps.get(&(c, slot::SHAPER)).map(|cap| cap.obj), Some(ep_obj));
}

/// The capability a shaped server is given to pull with (slot `SHAPER`) carries a badge no
/// client capability has (`PULL_BADGE | id`): the shaper takes `PULL` on it and nothing else, so
/// it makes no server a client of the shaper (`echo`'s description does not let it use `shaper`).
#[test]
fn the_pull_capability_is_no_client_capability() {
    use ozone_agent_sdk::protocol::start::slot;
    use ozone_agent_sdk::protocol::system::MAX_PROGRAMS;
    let (s, fake, _) = boot();
    let echo = s.index_of("echo").unwrap();
    assert!(!s.agents[echo].may_use("shaper"), "the description does not let echo use the shaper");
    let cnode = s.agents[echo].proc.unwrap().cnode;
    let c = fake.s.borrow().cnode_of(cnode).unwrap().0;
    let badge = fake.s.borrow().caps.get(&(c, slot::SHAPER)).map(|cap| cap.badge).expect("echo is shaped");
    assert!(
        !(1..=MAX_PROGRAMS as u64).contains(&badge),
        "echo's pull capability has badge {badge}, a client's badge (its id): the shaper serves it every method"
    );
}

/// A plain agent cannot make Studio record decisions at will: a GROW_HEAP beyond its quota and
/// its reports are refusals charged to its own log budget (never decisions of Studio's own, which
/// refill every budget), so its lines stay within the budget and Studio's own decisions stay in
/// the decision log.
#[test]
fn an_agent_cannot_flood_the_decision_log_through_refusals() {
    let (mut s, _, lines) = boot();
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    let printed_before = lines.0.borrow().len();
    let mut reports_logged = 0;
    for n in 0..1000 {
        assert_eq!(ask(&mut s, "hostile", method::GROW_HEAP, &(1u64 << 18)), Err(ServiceError::QuotaExceeded));
        ask(&mut s, "hostile", method::REPORT, &alloc::format!("report {n}")).unwrap();
        if lines.0.borrow().last().is_some_and(|l| l.contains(&alloc::format!("report {n}"))) {
            reports_logged += 1;
        }
    }
    let printed = lines.0.borrow().len() - printed_before;
    assert!(reports_logged <= proto::REPORT_BUDGET as usize + 1, "{reports_logged} reports logged");
    assert!(printed <= 2 * proto::REPORT_BUDGET as usize + 2, "{printed} lines printed for it");
    assert!(decisions(&s).iter().any(|d| d.starts_with("start console")), "real decisions were pushed out");
}

/// GRANT to a program that is not running is recorded and logged like any other (and answers
/// that no capability was placed): once started, the program may look the interface up. CAPS
/// lists by slot.
#[test]
fn grant_before_start_is_recorded_and_logged() {
    let (mut s, _fake, _) = boot();
    let h = s.index_of("hostile").unwrap();
    assert!(s.agents[h].proc.is_none(), "hostile is not started at boot");
    let grant = proto::Grant { agent: "hostile".into(), interface: "secmem".into() };
    assert_eq!(call(&mut s, "console", method::GRANT, &grant), Ok(None));
    let last = decisions(&s).last().unwrap().clone();
    assert!(last.starts_with("grant hostile `secmem`: recorded; it is not running"), "{last}");
    assert!(last.ends_with("asked by console"), "{last}");
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    let lookup = proto::Lookup { interface: "secmem".into() };
    let slot = call(&mut s, "hostile", method::LOOKUP, &lookup).unwrap();
    // A grant while it runs places the capability at once, and says where.
    let console = proto::Grant { agent: "hostile".into(), interface: "console".into() };
    let at = call(&mut s, "console", method::GRANT, &console).unwrap().expect("running: a slot");
    assert!(decisions(&s).last().unwrap().starts_with(&format!("grant hostile `console` (slot {at})")));
    let caps = call(&mut s, "console", method::CAPS, &String::from("hostile")).unwrap();
    assert!(caps.windows(2).all(|w| w[0].slot < w[1].slot), "CAPS by slot: {caps:?}");
    assert!(caps.iter().any(|c| c.slot == slot) && caps.iter().any(|c| c.slot == at));
    // Revoking a stopped program is recorded and logged the same way.
    ask(&mut s, "console", method::KILL, &String::from("hostile")).unwrap();
    ask(&mut s, "console", method::REVOKE, &grant).unwrap();
    assert!(decisions(&s).last().unwrap().starts_with("revoke hostile `secmem`: held none"));
}

/// REVOKE takes the capability Studio gave and every copy the program made of it (a program
/// with its own CNode capability can copy what it looked up before it is revoked).
#[test]
fn revoke_takes_the_copies_a_program_made() {
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    let grant = || proto::Grant { agent: "hostile".into(), interface: "secmem".into() };
    let at = call(&mut s, "console", method::GRANT, &grant()).unwrap().expect("running: a slot");
    let cnode = s.agents[s.index_of("hostile").unwrap()].proc.unwrap().cnode;
    // The program copies it to a slot of its own (the kernel records the copy as a child).
    {
        let mut st = fake.s.borrow_mut();
        let c = st.caps.iter().find(|(k, _)| k.1 == cnode && k.0 == 0).map(|(_, c)| c.obj).unwrap();
        let given = *st.caps.get(&(c, at)).unwrap();
        st.caps.insert((c, 400), crate::fake::Cap { parent: Some((c, at)), ..given });
    }
    assert!(fake.holds_cap(cnode, 400));
    ask(&mut s, "console", method::REVOKE, &grant()).unwrap();
    assert!(!fake.holds_cap(cnode, at) && !fake.holds_cap(cnode, 400), "a copy outlived REVOKE");
}

/// The `profiles` privilege (the shaper's) reaches programs' kernel profiles through Studio only:
/// it holds no thread capability of anyone (the old `TCB_OF` is no method), reads any program's
/// profile, changes agents' profiles only (never a server's, never its own thread's), only
/// narrows them — unless Studio allowed a relearn asked for an `admin` program, and then once —
/// and a change naming an earlier run of a program never reaches the current one.
#[test]
fn the_shaper_changes_agents_profiles_through_studio_only_within_its_rules() {
    use ozone_abi::profile::ALL;
    let (mut s, fake, _) = boot();
    let client = id(&s, "client");
    let shaper = id(&s, "shaper");
    let in_kernel = |s: &Studio, name: &str| {
        let tcb = s.agents[s.index_of(name).unwrap()].proc.unwrap().tcb;
        let st = fake.s.borrow();
        st.profiles.get(&st.tcb_obj(tcb).unwrap()).copied().unwrap_or_default()
    };
    let set = |id, run, allowed| proto::SetProfile { id, run, allowed };
    let arm = |id, run, allowed| proto::ArmProfile { id, run, allowed, learn: 8 };
    let last = |s: &Studio| decisions(s).last().unwrap().clone();

    // Reading: any program, servers and itself included.
    let p = call(&mut s, "shaper", method::PROFILE_OF, &client).unwrap();
    assert_eq!((p.name.as_str(), p.server, p.run, p.allowed, p.window), ("client", false, 1, ALL, None));
    for who in ["console", "secmem", "shaper"] {
        let t = id(&s, who);
        assert!(call(&mut s, "shaper", method::PROFILE_OF, &t).unwrap().server, "{who}");
    }
    // Studio is no program: nothing names its thread.
    assert_eq!(ask(&mut s, "shaper", method::PROFILE_OF, &0u64), Err(ServiceError::NotFound));
    assert_eq!(ask(&mut s, "shaper", method::SET_PROFILE, &set(0, 1, 0)), Err(ServiceError::NotFound));

    // Arming a window within what is allowed, then narrowing: done on the agent's own thread.
    ask(&mut s, "shaper", method::ARM_PROFILE, &arm(client, 1, ALL)).unwrap();
    assert_eq!(in_kernel(&s, "client").window, Some(8));
    ask(&mut s, "shaper", method::SET_PROFILE, &set(client, 1, 0b1011)).unwrap();
    assert_eq!((in_kernel(&s, "client").allowed, in_kernel(&s, "client").window), (0b1011, None));
    ask(&mut s, "shaper", method::SET_PROFILE, &set(client, 1, 0b0011)).unwrap();

    // Widening is refused, logged with the rule, and changes nothing.
    assert_eq!(ask(&mut s, "shaper", method::SET_PROFILE, &set(client, 1, 0b0111)), Err(ServiceError::Denied));
    assert!(last(&s).starts_with("refuse shaper: SET_PROFILE of client wider than its profile"), "{}", last(&s));
    assert!(last(&s).ends_with("(rule SET_PROFILE)"));
    assert_eq!(ask(&mut s, "shaper", method::ARM_PROFILE, &arm(client, 1, ALL)), Err(ServiceError::Denied));
    assert!(last(&s).starts_with("refuse shaper: ARM_PROFILE of client wider than its profile"), "{}", last(&s));
    assert_eq!(in_kernel(&s, "client").allowed, 0b0011);

    // A relearn refused to a plain agent opens nothing; one allowed for the admin console lets
    // the shaper widen once.
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    let ask_learn = |caller| ShapeAsk { caller, target: "client".into(), op: ShapeOp::Learn };
    let hostile = id(&s, "hostile");
    assert_eq!(ask(&mut s, "shaper", method::MAY_SHAPE, &ask_learn(hostile)), Err(ServiceError::Denied));
    assert_eq!(ask(&mut s, "shaper", method::ARM_PROFILE, &arm(client, 1, ALL)), Err(ServiceError::Denied));
    let console = id(&s, "console");
    ask(&mut s, "shaper", method::MAY_SHAPE, &ask_learn(console)).unwrap();
    ask(&mut s, "shaper", method::ARM_PROFILE, &arm(client, 1, ALL)).unwrap();
    assert_eq!((in_kernel(&s, "client").allowed, in_kernel(&s, "client").window), (ALL, Some(8)));
    ask(&mut s, "shaper", method::SET_PROFILE, &set(client, 1, 0b1)).unwrap();
    assert_eq!(ask(&mut s, "shaper", method::SET_PROFILE, &set(client, 1, 0b11)), Err(ServiceError::Denied), "once");

    // Servers are not shaped, and the shaper does not change its own thread.
    for who in ["console", "secmem", "echo"] {
        let t = id(&s, who);
        assert_eq!(ask(&mut s, "shaper", method::SET_PROFILE, &set(t, 1, 0)), Err(ServiceError::Denied), "{who}");
        assert!(last(&s).contains(&format!("SET_PROFILE of {who}, a server: servers are not shaped")));
        assert_eq!(ask(&mut s, "shaper", method::ARM_PROFILE, &arm(t, 1, 0)), Err(ServiceError::Denied), "{who}");
        assert_eq!(in_kernel(&s, who).allowed, ALL, "{who}");
    }
    assert_eq!(ask(&mut s, "shaper", method::SET_PROFILE, &set(shaper, 1, 0)), Err(ServiceError::Denied));
    assert!(last(&s).contains("SET_PROFILE of its own thread"));

    // A change for an earlier run never reaches the next one; a program not running is `Busy`;
    // a relearn allowed for one run does not outlive it.
    ask(&mut s, "shaper", method::MAY_SHAPE, &ask_learn(console)).unwrap();
    ask(&mut s, "console", method::KILL, &"client").unwrap();
    assert_eq!(ask(&mut s, "shaper", method::PROFILE_OF, &client), Err(ServiceError::Busy));
    assert_eq!(ask(&mut s, "shaper", method::SET_PROFILE, &set(client, 1, 0)), Err(ServiceError::Busy));
    ask(&mut s, "console", method::START, &"client").unwrap();
    assert_eq!(call(&mut s, "shaper", method::PROFILE_OF, &client).unwrap().run, 2);
    assert_eq!(ask(&mut s, "shaper", method::SET_PROFILE, &set(client, 1, 0)), Err(ServiceError::Busy));
    assert_eq!(in_kernel(&s, "client").allowed, ALL);
    ask(&mut s, "shaper", method::SET_PROFILE, &set(client, 2, 0b1)).unwrap();
    assert_eq!(ask(&mut s, "shaper", method::ARM_PROFILE, &arm(client, 2, ALL)), Err(ServiceError::Denied));

    // No method of Studio hands the shaper a thread capability: the old `TCB_OF` (25) is no
    // method, and after all of the above its CNode holds no thread.
    assert_eq!(s.request(shaper, &raw_args(25, &client)), Some(Err(ServiceError::UnknownMethod)));
    let cnode = s.agents[s.index_of("shaper").unwrap()].proc.unwrap().cnode;
    let st = fake.s.borrow();
    for (slot, _, obj) in fake.caps_in(cnode) {
        assert!(!matches!(st.objs[obj], Some(Obj::Tcb { .. })), "a thread in the shaper's slot {slot}");
    }
}

/// The provider of `secmem` gets a CNode with a slice of the server's slots for every program of
/// the description that may use it (the server serves one client per slice), never less than
/// 2^12 slots.
#[test]
fn the_secure_memory_servers_cnode_has_a_slice_per_client() {
    use crate::lifecycle::provider_cnode_radix;
    use ozone_agent_sdk::protocol::secmem::CLIENT_SLOTS;
    for clients in 0..40usize {
        let r = provider_cnode_radix(clients);
        let slices = ((1u64 << r) - crate::funding::FIRST_SERVER_SLOT) / CLIENT_SLOTS;
        assert!(r >= 12 && slices >= clients as u64, "{clients} clients: radix {r}");
        assert!(r == 12 || ((1u64 << (r - 1)) - crate::funding::FIRST_SERVER_SLOT) / CLIENT_SLOTS < clients as u64);
    }
    assert_eq!(provider_cnode_radix(1), 12);
    assert_eq!(provider_cnode_radix(10), 13);
}

/// Hostile (found in review, when funds were retyped from the client's chunk directly): funds
/// Studio retypes into the secure memory server's CNode were charged to the client for as long
/// as the client ran, even after the server that held them was gone. Each stop of the server (crash, kill,
/// restart) leaks the client's funded quota until the client itself restarts; a few server
/// restarts (or a server that funds itself without the client asking) leave the client unable to
/// grow its heap.
#[test]
fn funds_do_not_outlive_the_server() {
    let (mut s, _, _) = boot();
    let c = s.index_of("client").unwrap();
    let client = id(&s, "client");
    let before = s.agents[c].used();
    let f = proto::Fund { client, order: 4, slot: 300 };
    ask(&mut s, "secmem", method::FUND, &f).unwrap();
    let funded = s.agents[c].used();
    assert!(funded > before);
    // The server stops (here killed by the admin; a crash with restart = true does the same).
    ask(&mut s, "console", method::KILL, &"secmem").unwrap();
    ask(&mut s, "console", method::START, &"secmem").unwrap();
    std::println!("client used: {before} before, {funded} funded, {} after the server restarted", s.agents[c].used());
    assert_eq!(s.agents[c].used(), before, "the dead server's funds are still charged to the client");
}

/// Hostile: a provider funds itself from a client that asked for nothing, again and again, and
/// is restarted again and again. It takes at most the client's share (half its quota); each of
/// its lives is funded from the same carved memory, so restarts leak nothing; the client can
/// still use the rest of its quota; and when the client stops, all of it comes back.
#[test]
fn a_provider_takes_at_most_the_clients_share_and_restarts_leak_nothing() {
    use crate::funding::SHARE_DIVISOR;
    let (mut s, _, _) = boot();
    let c = s.index_of("client").unwrap();
    let client = id(&s, "client");
    let quota = s.agents[c].prog.memory_kib as u64 * 1024;
    let before = s.agents[c].used();
    let mut carved = 0;
    for life in 0..4 {
        let mut funded = 0u64;
        for n in 0..64 {
            let f = proto::Fund { client, order: 2, slot: 300 + n };
            match ask(&mut s, "secmem", method::FUND, &f) {
                Ok(()) => funded += 16 << 10,
                Err(e) => {
                    assert_eq!(e, ServiceError::QuotaExceeded);
                    break;
                }
            }
        }
        let f = s.agents[c].funding.borrow();
        assert!(f.carved() <= quota / SHARE_DIVISOR, "life {life}: {} carved of a {quota}-byte quota", f.carved());
        assert!(funded > 0 && funded <= quota / SHARE_DIVISOR);
        if life == 0 {
            carved = f.carved();
        }
        assert_eq!(f.carved(), carved, "life {life}: the same memory funds every life");
        drop(f);
        assert_eq!(s.agents[c].used(), before + funded);
        ask(&mut s, "console", method::KILL, &"secmem").unwrap();
        assert_eq!(s.agents[c].used(), before, "life {life}: given back");
        ask(&mut s, "console", method::START, &"secmem").unwrap();
    }
    // The rest of the quota is the client's own: its heap still grows.
    assert_eq!(ask(&mut s, "client", method::GROW_HEAP, &4u64), Ok(()));
    let free_before_stop = free(&s);
    ask(&mut s, "console", method::KILL, &"client").unwrap();
    assert_eq!(s.agents[c].funding.borrow().carved(), 0);
    assert!(free(&s) > free_before_stop);
}

/// `REVOKE` of `secmem` from a client also takes from the secure memory server the copy of the
/// client's address space `VSPACE_OF` gave it (the program is no longer its client).
#[test]
fn revoke_takes_the_providers_copies_of_the_clients_objects() {
    let (mut s, fake, _) = boot();
    let client = id(&s, "client");
    let slot = call(&mut s, "secmem", method::VSPACE_OF, &client).unwrap();
    let cnode = s.agents[s.index_of("secmem").unwrap()].proc.unwrap().cnode;
    assert!(fake.holds_cap(cnode, slot));
    ask(&mut s, "console", method::REVOKE, &proto::Grant { agent: "client".into(), interface: "secmem".into() })
        .unwrap();
    assert_eq!(ask(&mut s, "secmem", method::VSPACE_OF, &client), Err(ServiceError::Denied));
    assert!(!fake.holds_cap(cnode, slot), "the provider still holds the address space of a former client");
}

/// When the shaper stops, every server Studio gave a capability to pull loses it, and a pull
/// waiting on the kept endpoint is cancelled, even if the shaper may no longer use the server's
/// interface (an admin's `REVOKE shaper echo` since).
#[test]
fn the_pull_capability_goes_with_the_shaper_even_after_a_revoked_use() {
    use ozone_agent_sdk::protocol::shaper::PULL_BADGE;
    use ozone_agent_sdk::protocol::start::slot;
    let (mut s, fake, _) = boot();
    let shaper = s.index_of("shaper").unwrap();
    let echo = s.index_of("echo").unwrap();
    let shaper_ep = s.agents[shaper].endpoints[0].1;
    let ep_obj = fake.s.borrow().caps[&(crate::fake::STUDIO_CNODE, shaper_ep)].obj;
    let echo_cnode = fake.s.borrow().cnode_of(s.agents[echo].proc.unwrap().cnode).unwrap().0;
    let held = |fake: &crate::fake::Fake| fake.s.borrow().caps.get(&(echo_cnode, slot::SHAPER)).map(|c| c.badge);
    let badge = PULL_BADGE | id(&s, "echo");
    assert_eq!(held(fake), Some(badge), "echo is shaped at boot");
    // The admin takes the shaper's use of echo away while both run.
    ask(&mut s, "console", method::REVOKE, &proto::Grant { agent: "shaper".into(), interface: "echo".into() }).unwrap();
    s.stop(shaper, AgentState::Stopped, "test".into());
    assert_eq!(s.agents[shaper].state, AgentState::Stopped);
    assert_eq!(held(fake), None, "echo still holds a capability to pull from the stopped shaper");
    assert_eq!(fake.s.borrow().cancelled[0], (ep_obj, badge), "echo's waiting pull was not cancelled");
}

/// The capabilities to `interface` in program `who`'s CNode: (slot, badge).
fn caps_to(s: &Studio, fake: &Fake, who: &str, interface: &str) -> Vec<(u64, u64)> {
    let server = s.agents.iter().find(|a| a.endpoints.iter().any(|(n, _)| n == interface)).unwrap();
    let ep = server.endpoints.iter().find(|(n, _)| n == interface).unwrap().1;
    let ep_obj = fake.s.borrow().caps[&(crate::fake::STUDIO_CNODE, ep)].obj;
    let Some(p) = s.agents[s.index_of(who).unwrap()].proc else { return Vec::new() };
    fake.caps_in(p.cnode).into_iter().filter(|c| c.2 == ep_obj).map(|(slot, badge, _)| (slot, badge)).collect()
}

/// A server that stops takes every capability to it with it: its clients' lookups are revoked
/// (and what they derived from them), their waiting calls cancelled, a lookup meanwhile is
/// answered `NotRunning` (no capability to a server that is not there), and only a new lookup
/// reaches the next incarnation.
#[test]
fn a_stopped_server_takes_its_clients_capabilities_with_it() {
    let (mut s, fake, _) = boot();
    let lookup = proto::Lookup { interface: "echo".into() };
    let slot = call(&mut s, "client", method::LOOKUP, &lookup).unwrap();
    let client = client_badge_of(&s, "client");
    assert_eq!(caps_to(&s, fake, "client", "echo"), [(slot, client)], "badged with its id and run");
    let echo_ep = s.agents[s.index_of("echo").unwrap()].endpoints[0].1;
    let echo_obj = fake.s.borrow().caps[&(crate::fake::STUDIO_CNODE, echo_ep)].obj;
    let caps_before = fake.cap_count();

    ask(&mut s, "console", method::KILL, &String::from("echo")).unwrap();
    assert_eq!(caps_to(&s, fake, "client", "echo"), [], "the client's capability was revoked");
    let c = s.index_of("client").unwrap();
    assert!(s.agents[c].held.iter().all(|h| h.interface.as_deref() != Some("echo")), "and forgotten");
    assert!(fake.s.borrow().cancelled.contains(&(echo_obj, client)), "its waiting calls were cancelled");
    // Studio's scratch capabilities for the cancellations are all gone again.
    assert!(fake.cap_count() < caps_before);
    let kill = decisions(&s).into_iter().find(|d| d.starts_with("kill echo")).unwrap();
    assert!(kill.contains("`echo`: 1 client capabilities revoked, waiting calls cancelled"), "{kill}");

    // While it is down: a clear answer, no capability that would wait for a later incarnation.
    assert_eq!(call(&mut s, "client", method::LOOKUP, &lookup), Err(ServiceError::NotRunning));
    assert_eq!(caps_to(&s, fake, "client", "echo"), []);

    // The next incarnation: reached through a new lookup only.
    ask(&mut s, "console", method::START, &String::from("echo")).unwrap();
    assert_eq!(caps_to(&s, fake, "client", "echo"), []);
    let again = call(&mut s, "client", method::LOOKUP, &lookup).unwrap();
    assert_eq!(caps_to(&s, fake, "client", "echo"), [(again, client)]);
    // Looking up again while it runs gives the same capability.
    assert_eq!(call(&mut s, "client", method::LOOKUP, &lookup), Ok(again));
}

/// A server that faults and is restarted by its policy is a new incarnation too: its clients'
/// capabilities go at the fault, before the restart.
#[test]
fn a_restarted_server_is_reached_only_by_a_new_lookup() {
    let (mut s, fake, _) = boot();
    let e = s.index_of("echo").unwrap();
    s.agents[e].prog.restart = Restart::OnFailure;
    let lookup = proto::Lookup { interface: "echo".into() };
    call(&mut s, "client", method::LOOKUP, &lookup).unwrap();
    let echo = id(&s, "echo");
    assert!(s.fault(echo, 1, [0x1000, 0x10, 6, 0]).is_none());
    assert_eq!((s.agents[e].state, s.agents[e].restarts), (AgentState::Running, 1));
    assert_eq!(caps_to(&s, fake, "client", "echo"), []);
    let d = decisions(&s);
    let fault = d.iter().find(|d| d.starts_with("echo faulted")).unwrap();
    assert!(
        fault.ends_with(
            "revoked everything, memory reclaimed; `echo`: 1 client capabilities revoked, waiting calls \
             cancelled (clients look it up again); restarting (restart = on-failure)"
        ),
        "{fault}"
    );
    let again = call(&mut s, "client", method::LOOKUP, &lookup).unwrap();
    assert_eq!(caps_to(&s, fake, "client", "echo"), [(again, client_badge_of(&s, "client"))]);
}

/// The restart policy, for each way a program ends: a fault, an exit with status 0 or another,
/// and an operator's kill (never restarted).
#[test]
fn the_restart_policy_decides_by_how_the_program_ended() {
    enum End {
        Fault,
        Exit(u64),
        Kill,
    }
    let cases = [
        (Restart::Never, End::Fault, false, "not restarting (restart = never)"),
        (Restart::Never, End::Exit(1), false, "not restarting (restart = never)"),
        (Restart::OnFailure, End::Fault, true, "restarting (restart = on-failure)"),
        (Restart::OnFailure, End::Exit(3), true, "restarting (restart = on-failure)"),
        (Restart::OnFailure, End::Exit(0), false, "not restarting (restart = on-failure: it exited with status 0)"),
        (Restart::Always, End::Exit(0), true, "restarting (restart = always)"),
        (Restart::Always, End::Fault, true, "restarting (restart = always)"),
        (Restart::Always, End::Kill, false, "not restarted: a kill stops it whatever its policy (restart = always)"),
        (Restart::OnFailure, End::Kill, false, "(restart = on-failure)"),
        (Restart::Never, End::Kill, false, "asked by console; revoked everything, memory reclaimed"),
    ];
    for (policy, end, restarted, words) in cases {
        let (mut s, _, _) = boot();
        let before = free(&s);
        let c = s.index_of("crasher").unwrap();
        s.agents[c].prog.restart = policy;
        ask(&mut s, "console", method::START, &String::from("crasher")).unwrap();
        let crasher = id(&s, "crasher");
        let (state, how) = match end {
            End::Fault => {
                assert!(s.fault(crasher, 1, [0x1000, 0x10, 6, 0]).is_none());
                (AgentState::Faulted, String::from("fault"))
            }
            End::Exit(status) => {
                assert!(s.request(crasher, &args(method::EXIT, &status)).is_none(), "an exit is never answered");
                (AgentState::Exited, alloc::format!("exit {status}"))
            }
            End::Kill => {
                ask(&mut s, "console", method::KILL, &String::from("crasher")).unwrap();
                (AgentState::Stopped, String::from("kill"))
            }
        };
        let want = if restarted { (AgentState::Running, 1) } else { (state, 0) };
        assert_eq!((s.agents[c].state, s.agents[c].restarts), want, "{policy} after {how}");
        let d = decisions(&s);
        let last = d.iter().rev().find(|d| !d.starts_with("start crasher")).unwrap();
        assert!(last.contains(words), "{policy} after {how}: {last}");
        if !restarted {
            assert_eq!(free(&s), before, "{policy} after {how}: its memory is back");
            assert!(s.agents[c].proc.is_none());
        }
    }
}

/// A timer server (`pit` device, `signals_clients`), a client of it and a program that is not.
fn timer_boot() -> (Studio, &'static Fake) {
    let mut timer = program("timer", Kind::Server);
    timer.provides = vec!["timer".into()];
    timer.devices = vec!["pit".into()];
    timer.signals_clients = true;
    timer.restart = Restart::Always;
    let mut sleeper = program("sleeper", Kind::Agent);
    sleeper.uses = vec!["timer".into()];
    let other = program("other", Kind::Agent);
    let mut admin = program("admin", Kind::Agent);
    admin.privileges = vec![Privilege::Admin];
    let desc = SystemDescription {
        system: SystemSettings { shaper_warmup: 8, ..SystemSettings::new(32) },
        programs: vec![timer, sleeper, other, admin],
    };
    assert_eq!(desc.validate(&|_| true), Ok(()));
    let fake: &'static Fake = Box::leak(Box::new(Fake::new(&[(100, 32 << 20)], &GIVEN)));
    let images = desc.programs.iter().map(|p| (p.binary.clone(), &IMAGE[..])).collect();
    let boot = Boot {
        desc,
        images,
        seed: [9; 32],
        untyped: vec![(100, 25)],
        device: vec![],
        empty: (1000, 4000),
        model: None,
        detect: ozone_cognition::detect::Config::default(),
    };
    let studio = Studio::new(fake, boot, Box::new(Lines::default())).unwrap_or_else(|e| panic!("{e}"));
    (studio, fake)
}

/// Every program has a notification bound to its thread; the timer server gets the PIT's ports
/// and interrupt; a client given the `timer` interface gets a signal-only copy of its
/// notification, badged `TIMER_SIGNAL`, in the timer server's CNode at its id's slot — gone when
/// the client stops or loses the interface, given again when the timer server restarts.
#[test]
fn the_timer_server_may_signal_its_clients_and_only_them() {
    use ozone_agent_sdk::protocol::timer::TIMER_SIGNAL;
    let (mut s, fake) = timer_boot();
    let t = s.index_of("timer").unwrap();
    for a in &s.agents {
        let caps = fake.caps_in(a.proc.unwrap().cnode);
        assert!(caps.iter().any(|c| c.0 == pslot::NOTIFICATION), "{} has no notification", a.prog.name);
        assert!(a.notification.is_some());
        assert_eq!(caps.iter().any(|c| c.0 == pslot::DEVICE_IRQ), a.prog.name == "timer");
        assert_eq!(caps.iter().any(|c| c.0 == pslot::DEVICE_PORTS), a.prog.name == "timer");
    }
    let sleeper = id(&s, "sleeper");
    let at = pslot::client_signal(sleeper).unwrap();
    let timer_cnode = |s: &Studio| s.agents[s.index_of("timer").unwrap()].proc.unwrap().cnode;
    let signal = |s: &Studio| fake.caps_in(timer_cnode(s)).into_iter().find(|c| c.0 == at).map(|c| c.1);
    assert_eq!(signal(&s), None, "no copy before the client holds the interface");
    // A program that may not use the timer gets neither the interface nor a signal.
    assert_eq!(
        ask(&mut s, "other", method::LOOKUP, &proto::Lookup { interface: "timer".into() }),
        Err(ServiceError::Denied)
    );
    let other_at = pslot::client_signal(id(&s, "other")).unwrap();
    assert!(!fake.caps_in(timer_cnode(&s)).iter().any(|c| c.0 == other_at));

    ask(&mut s, "sleeper", method::LOOKUP, &proto::Lookup { interface: "timer".into() }).unwrap();
    assert_eq!(signal(&s), Some(TIMER_SIGNAL));
    assert!(s.agents[t].held.iter().any(|h| h.slot == at && h.from == Some(sleeper)));
    // A second lookup changes nothing.
    ask(&mut s, "sleeper", method::LOOKUP, &proto::Lookup { interface: "timer".into() }).unwrap();
    assert_eq!(fake.caps_in(timer_cnode(&s)).iter().filter(|c| c.0 == at).count(), 1);

    // The timer server restarts: a new incarnation, which no old capability reaches. The client
    // looks it up again, and the copy is given with the interface.
    // Its client is woken once with the timer's bit (a sleep would otherwise wait for ever).
    let woken = |s: &Studio| {
        let n = s.agents[s.index_of("sleeper").unwrap()].notification.unwrap();
        let obj = fake.s.borrow().caps[&(crate::fake::STUDIO_CNODE, n)].obj;
        fake.s.borrow().signals.iter().filter(|x| **x == (obj, TIMER_SIGNAL)).count()
    };
    let before = woken(&s);
    s.stop(t, AgentState::Stopped, "test".into());
    assert_eq!(woken(&s), before + 1, "the client of a stopped timer server is not woken");
    s.start(t, "test").unwrap();
    assert_eq!(signal(&s), None, "a client that has not looked the new incarnation up yet");
    ask(&mut s, "sleeper", method::LOOKUP, &proto::Lookup { interface: "timer".into() }).unwrap();
    assert_eq!(signal(&s), Some(TIMER_SIGNAL), "a restarted timer server has no signal for its client");

    // The client stops: the copy goes with its notification.
    ask(&mut s, "admin", method::KILL, &"sleeper").unwrap();
    assert_eq!(signal(&s), None, "the timer server still signals a stopped client");
    assert!(!s.agents[t].held.iter().any(|h| h.slot == at));
    ask(&mut s, "admin", method::START, &"sleeper").unwrap();
    ask(&mut s, "sleeper", method::LOOKUP, &proto::Lookup { interface: "timer".into() }).unwrap();
    assert_eq!(signal(&s), Some(TIMER_SIGNAL));

    // The interface is revoked: the copy goes too.
    ask(&mut s, "admin", method::REVOKE, &proto::Grant { agent: "sleeper".into(), interface: "timer".into() }).unwrap();
    assert_eq!(signal(&s), None, "the timer server still signals a former client");
}

/// The device manager (`pci` device, `clients` privilege), a driver (`pci` claims) and an agent
/// beside them, over a fake kernel with one device untyped (slot 102).
fn boot_with_devices() -> (Studio, &'static Fake) {
    let mut desc = description();
    let mut devices = program("devices", Kind::Server);
    devices.provides = vec!["devices".into()];
    devices.devices = vec!["pci".into()];
    devices.privileges = vec![Privilege::Clients];
    devices.memory_kib = 2048;
    let mut driver = program("driver", Kind::Server);
    driver.uses = vec!["devices".into()];
    driver.pci = vec!["virtio-blk".into()];
    driver.store_kib = 64;
    driver.net_listen = vec!["7".into()];
    driver.memory_kib = 2048;
    desc.system.memory_mib = 48;
    desc.programs.push(devices);
    desc.programs.push(driver);
    assert_eq!(desc.validate(&|_| true), Ok(()));
    let fake: &'static Fake =
        Box::leak(Box::new(Fake::new(&[(100, 32 << 20), (101, 16 << 20), (102, 1 << 20)], &GIVEN)));
    let images = desc.programs.iter().map(|p| (p.binary.clone(), &IMAGE[..])).collect();
    let boot = Boot {
        desc,
        images,
        seed: [7; 32],
        untyped: vec![(100, 25), (101, 24)],
        device: vec![(102, 0xfe00_0000, 20)],
        empty: (1000, 4000),
        model: None,
        detect: ozone_cognition::detect::Config::default(),
    };
    let studio = Studio::new(fake, boot, Box::new(Lines::default())).unwrap_or_else(|e| panic!("{e}"));
    (studio, fake)
}

/// The device manager holds the PCI ports, every PCI interrupt line and the device memory; a
/// driver holds a pool of its own and none of those; a plain agent neither.
#[test]
fn the_pci_device_goes_to_the_device_manager_alone() {
    use ozone_agent_sdk::protocol::start::slot as pslot;
    let (mut s, _) = boot_with_devices();
    let held = |s: &Studio, who: &str| -> Vec<(u64, String)> {
        let a = &s.agents[s.agents.iter().position(|a| a.prog.name == who).unwrap()];
        a.held.iter().map(|h| (h.slot, h.what.clone())).collect()
    };
    let mgr = held(&s, "devices");
    assert!(mgr.contains(&(pslot::DEVICE_PORTS, "PCI configuration ports 0xcf8-0xcff".into())), "{mgr:?}");
    for (k, gsi) in (16..24).enumerate() {
        assert!(mgr.contains(&(pslot::PCI_IRQS + k as u64, format!("PCI interrupt (GSI {gsi})"))), "{mgr:?}");
    }
    assert!(mgr.contains(&(pslot::DEVICE_UNTYPED, "device memory 0xfe000000+0x100000".into())), "{mgr:?}");
    assert!(mgr.iter().any(|h| h.1 == "memory pool"), "{mgr:?}");
    let drv = held(&s, "driver");
    assert!(drv.iter().any(|h| h.1 == "memory pool") && drv.iter().any(|h| h.1 == "own cnode"), "{drv:?}");
    for who in ["driver", "client", "echo"] {
        let h = held(&s, who);
        assert!(
            !h.iter().any(|(_, w)| w.starts_with("PCI") || w.starts_with("device memory")),
            "{who} holds a piece of the PCI device: {h:?}"
        );
    }
    assert!(!held(&s, "client").iter().any(|h| h.1 == "memory pool"));
    // The manager learns what the driver may claim; nothing of programs that are not its
    // clients; the driver (no `clients` privilege) learns nothing of anyone.
    let (driver, client, echo) = (id(&s, "driver"), id(&s, "client"), id(&s, "echo"));
    let info = call(&mut s, "devices", method::CLIENT, &driver).unwrap();
    assert_eq!(info.name, "driver");
    assert_eq!(info.pci, vec![String::from("virtio-blk")]);
    // Only what serving it needs: the manager learns its PCI kinds, not its store quota or
    // network rules (those are for the storage and network servers).
    assert_eq!((info.store_kib, info.net_listen.clone(), info.net_connect.clone()), (0, vec![], vec![]));
    // Which start of the driver this is, so its servers drop what an earlier run left.
    assert_eq!(info.run, s.agents[driver as usize - 1].run);
    assert!(info.run >= 1);
    assert_eq!(call(&mut s, "devices", method::CLIENT, &client), Err(ServiceError::Denied));
    assert_eq!(call(&mut s, "devices", method::CLIENT, &999u64), Err(ServiceError::Denied));
    assert_eq!(call(&mut s, "driver", method::CLIENT, &driver), Err(ServiceError::Denied));
    assert_eq!(call(&mut s, "client", method::CLIENT, &echo), Err(ServiceError::Denied));
}

/// A driver's memory stays its own after it stops: the device it drove may go on writing (DMA)
/// into the frames it gave the device until the next run resets it, and no capability stops a
/// device. So a driver's chunk never goes back to the pool for another program; its next run
/// gets it again.
#[test]
fn a_stopped_drivers_memory_goes_to_no_other_program() {
    let (mut s, _) = boot_with_devices();
    let d = s.index_of("driver").unwrap();
    if s.agents[d].proc.is_none() {
        ask(&mut s, "console", method::START, &String::from("driver")).unwrap();
    }
    let chunk = s.agents[d].chunk.unwrap();
    ask(&mut s, "console", method::KILL, &String::from("driver")).unwrap();
    assert_eq!(s.agents[d].state, AgentState::Stopped);
    assert!(!s.pool.free_chunks.contains(&chunk), "a stopped driver's chunk is free for anyone");
    ask(&mut s, "console", method::START, &String::from("driver")).unwrap();
    assert_eq!(s.agents[d].chunk, Some(chunk), "the next run gets it back");
    // Not a driver: its chunk is free again once it stops.
    ask(&mut s, "console", method::START, &String::from("hostile")).unwrap();
    let h = s.index_of("hostile").unwrap();
    let chunk = s.agents[h].chunk.unwrap();
    ask(&mut s, "console", method::KILL, &String::from("hostile")).unwrap();
    assert!(s.pool.free_chunks.contains(&chunk));
}

// ---- the watch: agents' event traces ----

/// The fake's record list of the trace of program `name`'s thread.
pub(crate) fn trace_of<'a>(fake: &'a Fake, s: &Studio, name: &str) -> core::cell::RefMut<'a, Vec<[u64; 2]>> {
    let p = s.agents[s.index_of(name).unwrap()].proc.expect("running");
    let t = fake.s.borrow().tcb_obj(p.tcb).unwrap();
    core::cell::RefMut::map(fake.s.borrow_mut(), |st| &mut st.traces.get_mut(&t).expect("traced").1)
}

/// The badge of `name`'s capabilities to servers in its current run.
pub(crate) fn client_badge_of(s: &Studio, name: &str) -> u64 {
    let a = &s.agents[s.index_of(name).unwrap()];
    proto::client_badge(a.id, a.run)
}

/// A syscall record (`ozone_abi::trace`): Call on an endpoint with `label`, result 0.
pub(crate) fn call_record(label: u64, tick: u32) -> [u64; 2] {
    let w0 = ozone_abi::trace::syscall_word(ozone_abi::profile::CALL, ozone_abi::trace::ObjectKind::Endpoint);
    [w0 | (u64::from(tick) << 32), label << 12]
}

/// The kernel's record of a Call on an endpoint with the raw message-info label `label` and
/// `len` message words.
pub(crate) fn call_with(label: u64, len: u64, tick: u32) -> [u64; 2] {
    let w0 = ozone_abi::trace::syscall_word(ozone_abi::profile::CALL, ozone_abi::trace::ObjectKind::Endpoint);
    [w0 | (u64::from(tick) << 32), ozone_abi::MessageInfo::new(label, 0, 0, len).0]
}

#[test]
fn agents_are_traced_from_their_start_and_a_change_of_behaviour_is_logged_with_its_reasons() {
    let (mut s, fake, _) = boot();
    let client = s.index_of("client").unwrap();
    let echo = s.index_of("echo").unwrap();
    assert!(s.agents[client].watch.is_some(), "an agent is traced");
    assert!(s.agents[echo].watch.is_none(), "a server is not");
    // Its warm-up: a request loop of four methods.
    {
        let mut t = trace_of(fake, &s, "client");
        for n in 0..super::watch::WARMUP_EVENTS as u64 + 200 {
            t.push(call_record(n % 4, (n / 100) as u32));
        }
    }
    s.watch_tick();
    let w = s.agents[client].watch.as_ref().unwrap();
    assert_eq!((w.read, w.stretches), (super::watch::WARMUP_EVENTS as u64 + 200, 0), "all read, nothing unusual");
    assert!(!decisions(&s).iter().any(|d| d.contains("watch client")));
    // Then methods it never used, in a burst: the watch says so, with the count and the features.
    {
        let mut t = trace_of(fake, &s, "client");
        for n in 0..40u64 {
            t.push(call_record(40 + n % 7, 30));
        }
    }
    s.watch_tick();
    let said: Vec<String> = decisions(&s).into_iter().filter(|d| d.contains("watch client")).collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("behaves unlike its warm-up")
            && said[0].contains("threshold 4")
            && said[0].contains("moved most"),
        "{}",
        said[0]
    );
    // The shell's `studio explain`: what the watch knows, for `admin` only.
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert!(report.traced && report.anomalous && report.stretches == 1, "{report:?}");
    assert_eq!(
        (report.learned, report.warmup),
        (super::watch::WARMUP_EVENTS as u64, super::watch::WARMUP_EVENTS as u64)
    );
    assert!(report.lines.len() == 1 && report.lines[0].contains("behaves unlike"), "{report:?}");
    assert_eq!(ask(&mut s, "hostile", method::WATCH, &String::from("client")), Err(ServiceError::Denied));
    assert_eq!(call(&mut s, "console", method::WATCH, &String::from("echo")).map(|r| r.traced), Ok(false), "a server");
    // Back to normal: the end of the stretch is logged too.
    {
        let mut t = trace_of(fake, &s, "client");
        for n in 0..(super::watch::QUIET as u64 + 50) {
            t.push(call_record(n % 4, 31));
        }
    }
    s.watch_tick();
    assert!(decisions(&s).iter().any(|d| d.contains("watch client: behaves as in its warm-up again")));
    // Its last records, written after the last tick, are read when it stops, before its memory
    // goes: a second burst there is seen.
    {
        let mut t = trace_of(fake, &s, "client");
        for n in 0..40u64 {
            t.push(call_record(60 + n % 7, 40));
        }
    }
    s.stop(client, AgentState::Stopped, "test".into());
    let unlike = decisions(&s).iter().filter(|d| d.contains("watch client: behaves unlike")).count();
    assert_eq!(unlike, 2, "the records written after the last tick were read at the stop");
    // Stopped: its watch went with its memory, and a tick reads nothing of it (the fake fails
    // the test if Studio reads a ring whose frame is gone).
    assert!(s.agents[client].watch.is_none());
    s.watch_tick();
}

/// The watch's lines are caused by the agent at will: it picks its own warm-up, then alternates
/// a burst of unseen sequences with `QUIET` normal ones, and each start and end of a stretch is
/// a line. They must not be decisions of Studio's own (each of which gives every program a line
/// of log budget back, and pushes a real decision out of the kept ring): an agent's reports and
/// the watch's lines about it stay within its budget, and Studio's own decisions stay in the log.
#[test]
fn an_agent_cannot_flood_the_decision_log_through_the_watch() {
    let (mut s, fake, lines) = boot();
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    // Its warm-up, chosen by itself: four methods in a loop.
    {
        let mut t = trace_of(fake, &s, "hostile");
        for n in 0..super::watch::WARMUP_EVENTS as u64 {
            t.push(call_record(n % 4, 0));
        }
    }
    s.watch_tick();
    let printed_before = lines.0.borrow().len();
    let mut reports_logged = 0;
    // Then, a few hundred ticks: every tick at most a ring's worth of records (256), a burst of
    // methods it never used or half the quiet that ends the stretch, and one report.
    for n in 0..600u64 {
        {
            let mut t = trace_of(fake, &s, "hostile");
            if n % 3 == 0 {
                for m in 0..12u64 {
                    t.push(call_record(40 + m % 7, 1));
                }
            } else {
                for m in 0..(super::watch::QUIET as u64 / 2 + 20) {
                    t.push(call_record(m % 4, 1));
                }
            }
        }
        s.watch_tick();
        ask(&mut s, "hostile", method::REPORT, &alloc::format!("report {n}")).unwrap();
        if lines.0.borrow().last().is_some_and(|l| l.contains(&alloc::format!("report {n}"))) {
            reports_logged += 1;
        }
    }
    let watched = decisions(&s).iter().filter(|d| d.contains("watch hostile")).count();
    let printed = lines.0.borrow().len() - printed_before;
    assert!(watched > 0, "the watch saw the bursts");
    assert!(reports_logged <= proto::REPORT_BUDGET as usize + 1, "{reports_logged} reports logged");
    assert!(printed <= 2 * proto::REPORT_BUDGET as usize + 2, "{printed} lines printed for it");
    assert!(decisions(&s).iter().any(|d| d.starts_with("start console")), "real decisions were pushed out");
}

/// Phase markers are the recorder's convention for scenario programs (a Call on an empty slot
/// labelled `PHASE_BENIGN` or `PHASE_HOSTILE`); the dump carries them anyway. The watch must not
/// let any agent hide events behind them: a scan of empty capability slots (the probing of a
/// hostile program) made with the marker's label is as unseen as any other.
#[test]
fn an_agent_cannot_hide_a_slot_scan_behind_phase_markers() {
    use ozone_abi::trace::{ObjectKind, syscall_word};
    use ozone_cognition::token::PHASE_HOSTILE;
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    {
        let mut t = trace_of(fake, &s, "hostile");
        for n in 0..super::watch::WARMUP_EVENTS as u64 {
            t.push(call_record(n % 4, 0));
        }
    }
    s.watch_tick();
    // Its scan: a Call on each of 200 slots, every one empty (failed lookup), all with the label
    // of a marker.
    {
        let mut t = trace_of(fake, &s, "hostile");
        let w0 = syscall_word(ozone_abi::profile::CALL, ObjectKind::Invalid)
            | ((ozone_abi::Error::FailedLookup as u64) << 16)
            | (1 << 32);
        for _ in 0..200 {
            t.push([w0, PHASE_HOSTILE << 12]);
        }
    }
    s.watch_tick();
    let h = s.index_of("hostile").unwrap();
    assert_eq!(s.agents[h].watch.as_ref().unwrap().read, super::watch::WARMUP_EVENTS as u64 + 200);
    assert!(
        decisions(&s).iter().any(|d| d.contains("watch hostile: behaves unlike its warm-up")),
        "200 failed lookups after a warm-up of none went unseen"
    );
}

/// A ring holds 256 records between two ticks: an agent that makes 256 ordinary syscalls just
/// after a tick has everything else it does in that tick dropped by the kernel, unseen. An
/// agent that does so tick after tick hides all but a sample it chooses; that it does is itself
/// behaviour the watch must report (a human then knows the watch sees little of it).
#[test]
fn an_agent_cannot_hide_its_behaviour_by_filling_its_ring_every_tick() {
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    let h = s.index_of("hostile").unwrap();
    let t = fake.s.borrow().tcb_obj(s.agents[h].proc.unwrap().tcb).unwrap();
    {
        let mut tr = trace_of(fake, &s, "hostile");
        for n in 0..super::watch::WARMUP_EVENTS as u64 {
            tr.push(call_record(n % 4, 0));
        }
    }
    s.watch_tick();
    // Every tick for ten seconds (2000 ticks): 256 records of its warm-up's loop, then 2,000
    // events (whatever they are) the kernel drops.
    for n in 0..2000u64 {
        {
            let mut tr = trace_of(fake, &s, "hostile");
            for m in 0..ozone_abi::trace::RING_RECORDS as u64 {
                tr.push(call_record(m % 4, n as u32));
            }
        }
        *fake.s.borrow_mut().trace_dropped.entry(t).or_default() += 2_000;
        s.watch_tick();
    }
    assert_eq!(s.agents[h].watch.as_ref().unwrap().dropped, 4_000_000);
    assert!(
        decisions(&s).iter().any(|d| d.contains("watch hostile")),
        "4,000,000 of its events went unseen (514,048 read) and nothing was said"
    );
}

/// What a ring holds between two ticks (the module docs of `watch`: "an agent that makes more
/// syscalls than that between two ticks loses the excess"). Studio acknowledges a batch only at
/// the tick after it read it, so the batch still takes the ring's room while the agent runs: an
/// agent that makes 300 syscalls a tick fills the ring in one tick, and everything it does in the
/// next is dropped, unseen — the watch sees every other tick of a busy agent, not a sample of each.
#[test]
fn a_busy_agent_is_seen_at_every_tick() {
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    let h = s.index_of("hostile").unwrap();
    let t = fake.s.borrow().tcb_obj(s.agents[h].proc.unwrap().tcb).unwrap();
    let ticks = 100u64;
    for n in 0..ticks {
        for m in 0..300u64 {
            fake.s.borrow_mut().emit(t, call_record(m % 4, n as u32));
        }
        s.watch_tick();
    }
    let read = s.agents[h].watch.as_ref().unwrap().read;
    let ring = ozone_abi::trace::RING_RECORDS as u64;
    assert!(read >= (ticks - 1) * ring, "{read} records read in {ticks} ticks of 300 syscalls each");
}

/// The kernel records a traced thread's ThreadExit (its ring tells everything it did): the end
/// of its life, which the watch reads past without judging it, while a DebugWrite is an event
/// like any other.
#[test]
fn a_thread_exit_record_is_read_and_not_judged() {
    use ozone_abi::trace::{DEBUG_WRITE, ObjectKind, THREAD_EXIT, syscall_word};
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    let h = s.index_of("hostile").unwrap();
    {
        let mut t = trace_of(fake, &s, "hostile");
        for m in 0..10 {
            t.push(call_record(m % 3, 1));
        }
        t.push([syscall_word(DEBUG_WRITE.into(), ObjectKind::None) | 1 << 32, 0]);
        t.push([syscall_word(THREAD_EXIT.into(), ObjectKind::None) | 1 << 32, 0]);
    }
    s.watch_tick();
    let r = s.agents[h].watch.as_ref().unwrap().report();
    assert_eq!((r.read, r.learned), (12, 11), "all read; the calls and the DebugWrite learned, not the exit");
}

/// An agent that faults and is restarted under the same id gets its ring at the same address:
/// each run's watch reads only its own run's ring, from its first record, and nothing of a ring
/// that is gone (the model fails the test if Studio reads one), through every restart and after
/// the last.
#[test]
fn a_restarted_agent_is_watched_afresh_at_the_same_address() {
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &String::from("crasher")).unwrap();
    let c = s.index_of("crasher").unwrap();
    let crasher = s.agents[c].id;
    let va = s.agents[c].watch.as_ref().unwrap().va;
    for n in 0..=MAX_RESTARTS as u64 {
        {
            let mut t = trace_of(fake, &s, "crasher");
            for m in 0..(10 + n) {
                t.push(call_record(m, 0));
            }
        }
        s.watch_tick();
        let w = s.agents[c].watch.as_ref().unwrap();
        assert_eq!((w.va, w.read), (va, 10 + n), "run {n} reads its own records only");
        assert!(s.fault(crasher, 1, [0x1000, 0x10, 6, 0]).is_none());
        s.watch_tick();
    }
    assert_eq!(s.agents[c].state, AgentState::Faulted);
    assert!(s.agents[c].watch.is_none());
    s.watch_tick();
}

/// Whatever words a ring holds (the kernel writes only valid records, but the watch must not
/// rely on it for its own safety): garbage, words no record has, wrapping ticks, all fault
/// labels, every syscall number — the watch reads on and Studio neither panics nor stops.
#[test]
fn odd_records_never_crash_the_watch() {
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &"hostile").unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for tick in 0..200u64 {
        {
            let mut t = trace_of(fake, &s, "hostile");
            for _ in 0..256 {
                let (a, b) = (next(), next());
                let w0 = match a % 4 {
                    // Kind forced to syscall or fault, the rest random (the object may be invalid).
                    0 => (a & !0xf00) | 0x100,
                    1 => (a & !0xf00) | 0x200,
                    // A valid record with a tick about to wrap.
                    2 => (a & 0xffff_00ff) | 0x100 | (((u32::MAX - 3) as u64 + tick) << 32),
                    _ => a,
                };
                t.push([w0, b]);
            }
        }
        s.watch_tick();
    }
    let h = s.index_of("hostile").unwrap();
    assert_eq!(s.agents[h].watch.as_ref().unwrap().read, 200 * 256);
}

/// A model that scores a window 1 when it holds the token of a Call with label 45, about 0
/// otherwise: embedding dimension 0 is 1 for that token only, hidden unit 0 reads the max pool's
/// dimension 0.
pub(crate) fn model_of_label_45() -> &'static [u8] {
    model_of_token(ozone_cognition::token::token(&ozone_abi::trace::Record::from_words(call_record(45, 0)).unwrap()))
}

/// A model that scores a window 1 when it holds token `t`, about 0 otherwise.
pub(crate) fn model_of_token(t: ozone_cognition::token::Token) -> &'static [u8] {
    use ozone_cognition::model::{D, POOLED, Weights};
    let mut w = Weights::zeroed();
    w.embedding_mut()[t as usize * D] = 1.0;
    w.w1_mut()[D] = 1.0; // hidden 0 reads max[0]
    let _ = POOLED;
    w.w2_mut()[0] = 20.0;
    *w.b2_mut() = -8.0;
    Box::leak(w.to_bytes().into_boxed_slice())
}

#[test]
fn the_model_judges_agents_from_their_first_windows_and_says_why() {
    let (mut s, fake, _) = boot_with_model(Some(model_of_label_45()));
    assert!(
        decisions(&s).iter().any(|d| d.starts_with("behaviour model loaded (studio.model")),
        "{:#?}",
        decisions(&s)
    );
    // Normal work, far less than stide's warm-up, a few records a tick (batches within
    // `MODEL_PER_TICK` are judged whole): the model judges it, and finds it normal.
    for tick in 0..10u64 {
        {
            let mut t = trace_of(fake, &s, "client");
            for n in 0..30u64 {
                t.push(call_record((tick * 30 + n) % 4, 1));
            }
        }
        s.watch_tick();
    }
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert!(report.model && report.windows == 300 - 15, "{report:?}");
    assert!(report.learned < report.warmup, "stide is still warming up");
    assert!(!report.model_anomalous && report.peak < 100, "{report:?}");
    assert!(!decisions(&s).iter().any(|d| d.contains("watch client")));
    // Then the label the model knows as hostile, over and over.
    for _ in 0..2 {
        {
            let mut t = trace_of(fake, &s, "client");
            for _ in 0..20u64 {
                t.push(call_record(45, 2));
            }
        }
        s.watch_tick();
    }
    let said: Vec<String> = decisions(&s).into_iter().filter(|d| d.contains("watch client: the model")).collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("the model finds it anomalous from event 304:"), "{}", said[0]);
    assert!(said[0].contains("over threshold") && said[0].contains("moved most"), "{}", said[0]);
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert!(report.model_anomalous && report.model_stretches == 1 && report.score > report.threshold, "{report:?}");
    assert!(report.peak > 900, "{report:?}");
    // Back to normal for long enough: said too.
    for tick in 0..(super::watch::QUIET as u64 / 30 + 2) {
        {
            let mut t = trace_of(fake, &s, "client");
            for n in 0..30u64 {
                t.push(call_record((tick * 30 + n) % 4, 3));
            }
        }
        s.watch_tick();
    }
    assert!(decisions(&s).iter().any(|d| d.contains("watch client: the model finds it normal again")));
}

/// An agent hostile from its first syscall, repeating the one window the model knows as
/// hostile (a flood): its first window is diluted by the frame's zeros, but must not be learned
/// as its normal behaviour, or every later one counts 0 and the model never says a word.
#[test]
fn the_model_alarms_on_an_agent_hostile_from_its_first_syscall() {
    let (mut s, fake, _) = boot_with_model(Some(model_of_label_45()));
    {
        let mut t = trace_of(fake, &s, "client");
        for _ in 0..200u64 {
            t.push(call_record(45, 1));
        }
    }
    s.watch_tick();
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert!(report.peak > 800 && report.model_anomalous, "{report:?}");
    assert!(decisions(&s).iter().any(|d| d.contains("watch client: the model finds it anomalous")));
}

/// The count of lines about a run only grows, at a pace the agent sets (a stretch's start, then
/// `QUIET` normal windows, its end): it must saturate, not overflow (a panic in Studio in a
/// build with overflow checks), and stay past the budget.
#[test]
fn the_line_count_of_a_run_saturates() {
    let (mut s, fake, _) = boot_with_model(Some(model_of_label_45()));
    let client = s.index_of("client").unwrap();
    {
        let mut t = trace_of(fake, &s, "client");
        for n in 0..100u64 {
            t.push(call_record(n % 4, 1));
        }
    }
    s.watch_tick();
    s.agents[client].watch.as_mut().unwrap().lines = u32::MAX - 1;
    for round in 0..3u32 {
        {
            let mut t = trace_of(fake, &s, "client");
            for _ in 0..40u64 {
                t.push(call_record(45, 2 + round));
            }
            for n in 0..(super::watch::QUIET as u64 + 20) {
                t.push(call_record(n % 4, 2 + round));
            }
        }
        s.watch_tick();
    }
    let w = s.agents[client].watch.as_ref().unwrap();
    assert_eq!(w.lines, u32::MAX);
    // (The graded responses are decisions of their own, at most one per level and run.)
    assert!(
        !decisions(&s).iter().any(|d| d.contains("watch client: the model") || d.contains("watch client: behaves")),
        "past the budget nothing is logged"
    );
}

#[test]
fn a_bad_or_missing_model_is_said_and_the_watch_runs_stide_alone() {
    let (s, _, _) = boot();
    assert!(decisions(&s).iter().any(|d| d.contains("no behaviour model (studio.model) in the initrd")));
    let client = s.index_of("client").unwrap();
    assert!(s.agents[client].watch.as_ref().is_some_and(|w| !w.report().model));
    let mut bad = model_of_label_45().to_vec();
    bad.truncate(1000);
    let (s, _, _) = boot_with_model(Some(Box::leak(bad.into_boxed_slice())));
    let said: Vec<String> = decisions(&s).into_iter().filter(|d| d.contains("behaviour model")).collect();
    assert!(said.len() == 1 && said[0].contains("is refused") && said[0].contains("expected"), "{said:?}");
    assert!(s.agents[client].watch.as_ref().is_some_and(|w| !w.report().model));
    let mut nan = model_of_label_45().to_vec();
    let at = nan.len() - 4;
    nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    let (s, _, _) = boot_with_model(Some(Box::leak(nan.into_boxed_slice())));
    assert!(decisions(&s).iter().any(|d| d.contains("is refused") && d.contains("not finite")));
}

/// An agent that fills its ring every tick cannot make Studio run the model on every window: a
/// batch larger than `MODEL_PER_TICK` is sampled (about that many judged), and a burst it hides
/// in a full batch is still seen in the sample.
#[test]
fn the_model_judges_a_sample_of_a_flooding_agent_and_still_sees_its_burst() {
    let (mut s, fake, _) = boot_with_model(Some(model_of_label_45()));
    let per_tick = super::watch::MODEL_PER_TICK;
    for tick in 0..10u64 {
        {
            let mut t = trace_of(fake, &s, "client");
            for n in 0..256u64 {
                t.push(call_record(n % 4, tick as u32));
            }
        }
        s.watch_tick();
    }
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert_eq!(report.read, 2560);
    // The first batch has 241 windows; each judged with probability 32/256.
    assert!(report.windows >= 5 * per_tick && report.windows <= 20 * per_tick, "{report:?}");
    assert!(!report.model_anomalous);
    // A hostile burst of 200 records hidden in a full batch: the sample sees it.
    {
        let mut t = trace_of(fake, &s, "client");
        for n in 0..256u64 {
            t.push(call_record(if (20..220).contains(&n) { 45 } else { n % 4 }, 11));
        }
    }
    s.watch_tick();
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert!(report.model_stretches == 1, "{report:?}");
    assert!(decisions(&s).iter().any(|d| d.contains("watch client: the model finds it anomalous")));
}

// ---- the graded responses ----

/// The fake kernel's view of a program's thread: (priority, running).
fn thread_of(fake: &Fake, s: &Studio, name: &str) -> (u64, bool) {
    let p = s.agents[s.index_of(name).unwrap()].proc.expect("has a thread");
    let t = fake.s.borrow().tcb_obj(p.tcb).unwrap();
    match fake.s.borrow().objs[t] {
        Some(crate::fake::Obj::Tcb { priority, running, .. }) => (priority, running),
        _ => panic!("no thread"),
    }
}

/// `records` Calls with `label` into `name`'s ring, `per_tick` a tick (Studio's tick after each).
pub(crate) fn feed(s: &mut Studio, fake: &Fake, name: &str, label: impl Fn(u64) -> u64, records: u64, per_tick: u64) {
    feed_words(s, fake, name, |n| (label(n), 0), records, per_tick);
}

/// [`feed`] with Calls of `(label, message words)`.
pub(crate) fn feed_words(
    s: &mut Studio,
    fake: &Fake,
    name: &str,
    call: impl Fn(u64) -> (u64, u64),
    records: u64,
    per_tick: u64,
) {
    let mut n = 0;
    while n < records {
        {
            let mut t = trace_of(fake, s, name);
            for _ in 0..per_tick.min(records - n) {
                let (label, words) = call(n);
                t.push(call_with(label, words, 1));
                n += 1;
            }
        }
        s.watch_tick();
    }
}

/// The description with `client` (uses echo and secmem) and `hostile` (nothing) allowed every
/// response up to kill, suspended agents killed after one second.
fn responding() -> SystemDescription {
    let mut d = description();
    d.system.suspend_seconds = 1;
    for p in &mut d.programs {
        if p.name == "client" || p.name == "hostile" {
            p.respond = Some(Response::Kill);
        }
    }
    d
}

#[test]
fn graded_responses_climb_one_level_at_a_time_each_logged_with_its_reasons_and_spare_the_benign() {
    let (mut s, fake, _) = boot_desc(responding(), Some(model_of_label_45()));
    call(&mut s, "console", method::START, &String::from("hostile")).unwrap();
    let ep: u64 = call(&mut s, "client", method::LOOKUP, &proto::Lookup { interface: "echo".into() }).unwrap();
    let cnode = s.agents[s.index_of("client").unwrap()].proc.unwrap().cnode;
    assert!(fake.holds_cap(cnode, ep));
    assert_eq!(thread_of(fake, &s, "client"), (100, true));
    // Both work normally for a while, a few records a tick.
    feed(&mut s, fake, "client", |n| n % 4, 300, 30);
    feed(&mut s, fake, "hostile", |n| n % 3, 300, 30);
    // Then `client` makes the calls the model knows as hostile; `hostile` goes on as before.
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    feed(&mut s, fake, "hostile", |n| n % 3, 60, 30);
    let said: Vec<String> = decisions(&s).into_iter().filter(|d| d.starts_with("watch client: ")).collect();
    let steps: Vec<&str> = said.iter().filter_map(|d| d["watch client: ".len()..].split([':', ' ']).next()).collect();
    assert_eq!(steps, ["the", "alert", "throttle", "revoke", "suspend"], "{said:#?}");
    for d in &said[1..] {
        assert!(d.contains("over threshold") && d.contains("moved most"), "{d}");
    }
    // Each step's effect on the kernel: priority down by 16, the echo capability deleted (and
    // its lookups refused from now on), the thread stopped with its memory kept.
    assert!(said[2].contains("priority 100 -> 84"), "{}", said[2]);
    assert_eq!(thread_of(fake, &s, "client"), (84, false));
    assert!(!fake.holds_cap(cnode, ep), "the echo capability went");
    assert!(decisions(&s).iter().any(|d| d.starts_with("revoke client `echo`: capability in slot")));
    let c = s.index_of("client").unwrap();
    assert_eq!(s.agents[c].state, AgentState::Suspended);
    assert!(s.agents[c].chunk.is_some(), "its memory is kept for inspection");
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert_eq!((report.level.as_str(), report.limit.as_str()), ("suspend", "kill"));
    assert_eq!(
        ask(&mut s, "client", method::LOOKUP, &proto::Lookup { interface: "echo".into() }),
        Err(ServiceError::Denied),
        "a revoked interface stays revoked"
    );
    // The benign agent beside it was never touched.
    assert!(!decisions(&s).iter().any(|d| d.starts_with("watch hostile: ")), "{:#?}", decisions(&s));
    assert_eq!(thread_of(fake, &s, "hostile"), (100, true));
    // A human resumes it: it runs again at revoke; more of the same suspends it again, and
    // left suspended past `suspend_seconds` it is killed.
    assert_eq!(ask(&mut s, "hostile", method::RESUME, &String::from("client")), Err(ServiceError::Denied));
    call(&mut s, "console", method::RESUME, &String::from("client")).unwrap();
    assert_eq!(s.agents[c].state, AgentState::Running);
    assert!(thread_of(fake, &s, "client").1);
    assert_eq!(call(&mut s, "console", method::RESUME, &String::from("client")), Err(ServiceError::Busy));
    feed(&mut s, fake, "client", |_| 45, 16, 8);
    assert_eq!(s.agents[c].state, AgentState::Suspended);
    for _ in 0..150 {
        s.watch_tick();
    }
    assert_eq!(s.agents[c].state, AgentState::Suspended, "not before its time");
    for _ in 0..60 {
        s.watch_tick();
    }
    assert_eq!(s.agents[c].state, AgentState::Stopped);
    assert!(s.agents[c].proc.is_none() && s.agents[c].chunk.is_none(), "killed and reclaimed");
    assert!(
        decisions(&s)
            .iter()
            .any(|d| d.starts_with("watch client: kill: suspended for 1 s without an allow or a resume"))
    );
}

#[test]
fn studio_allow_stops_a_false_alarm_and_the_limit_is_respected() {
    let (mut s, fake) = responding_client(Response::Throttle);
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    let said: Vec<String> = decisions(&s).into_iter().filter(|d| d.starts_with("watch client: ")).collect();
    assert!(said.iter().any(|d| d.starts_with("watch client: throttle: priority 100 -> 84")), "{said:#?}");
    assert!(
        said.iter().any(|d| d.starts_with("watch client: would revoke (") && d.contains("its respond is throttle"))
    );
    let c = s.index_of("client").unwrap();
    assert_eq!(s.agents[c].state, AgentState::Running, "throttle is as far as it goes");
    assert_eq!(thread_of(fake, &s, "client"), (84, true));
    let listed = |s: &mut Studio| {
        let list: Vec<proto::AgentInfo> = call(s, "console", method::LIST, &0u32).unwrap();
        list.iter().find(|a| a.name == "client").unwrap().priority
    };
    assert_eq!(listed(&mut s), 84, "LIST (the shell's ps) shows the priority it runs at");
    // A human says it is fine: the priority comes back, and the same behaviour no longer alarms.
    assert_eq!(ask(&mut s, "hostile", method::ALLOW, &String::from("client")), Err(ServiceError::Denied));
    call(&mut s, "console", method::ALLOW, &String::from("client")).unwrap();
    assert!(decisions(&s).iter().any(|d| d.starts_with("allow client: ") && d.contains("priority 100 restored")));
    assert_eq!(thread_of(fake, &s, "client"), (100, true));
    assert_eq!(listed(&mut s), 100);
    let before = decisions(&s).len();
    feed(&mut s, fake, "client", |_| 45, 64, 8);
    let after: Vec<String> = decisions(&s)[before..].to_vec();
    assert!(!after.iter().any(|d| d.starts_with("watch client: alert")), "{after:#?}");
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert_eq!(report.level, "normal");
    // Not running: nothing to allow.
    assert_eq!(call(&mut s, "console", method::ALLOW, &String::from("crasher")), Err(ServiceError::Busy));
}

#[test]
fn the_system_limit_applies_and_off_says_nothing() {
    let mut d = description();
    d.system.respond = Response::Off;
    let (mut s, fake, _) = boot_desc(d, Some(model_of_label_45()));
    feed(&mut s, fake, "client", |n| n % 4, 300, 30);
    feed(&mut s, fake, "client", |_| 45, 40, 8);
    assert!(!decisions(&s).iter().any(|d| d.starts_with("watch client: alert") || d.contains("would ")));
    assert_eq!(thread_of(fake, &s, "client"), (100, true));
    // The model's own line still says what it found.
    assert!(decisions(&s).iter().any(|d| d.starts_with("watch client: the model finds it anomalous")));
}

// ---- performance: CPU-bound agents ----

/// Set the kernel counters the fake reports for `name`'s thread.
/// `name`'s counters: caught running at `cpu_ticks` ticks, `received` messages received (and a
/// send and a receive syscall for each).
fn set_counters(fake: &Fake, s: &Studio, name: &str, cpu_ticks: u64, received: u64) {
    set_telemetry(
        fake,
        s,
        name,
        proto::Telemetry { cpu_ticks, ipc_received: received, syscalls: 2 * received, ..Default::default() },
    );
}

fn set_telemetry(fake: &Fake, s: &Studio, name: &str, counters: proto::Telemetry) {
    let p = s.agents[s.index_of(name).unwrap()].proc.unwrap();
    let t = fake.s.borrow().tcb_obj(p.tcb).unwrap();
    fake.s.borrow_mut().cpu.insert(t, counters);
}

/// One classification period of Studio's ticks.
fn period(s: &mut Studio) {
    for _ in 0..crate::perf::PERIOD_TICKS {
        s.watch_tick();
        s.perf_tick();
    }
}

#[test]
fn a_cpu_bound_agent_goes_down_its_band_and_comes_back_when_it_waits_again() {
    let (mut s, fake, _) = boot();
    call(&mut s, "console", method::START, &String::from("hostile")).unwrap();
    set_counters(fake, &s, "client", 0, 0);
    set_counters(fake, &s, "hostile", 0, 0);
    period(&mut s);
    // `client` spins (caught at 8 of 10 ticks, no message); `hostile` serves (many requests,
    // hardly ever caught running).
    set_counters(fake, &s, "client", 8, 0);
    set_counters(fake, &s, "hostile", 1, 900);
    period(&mut s);
    let said: Vec<String> = decisions(&s).into_iter().filter(|d| d.starts_with("perf ")).collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(said[0].starts_with(
        "perf client: CPU-bound (running at 8 of the last 10 timer ticks, 0 messages received, 0 syscalls): priority 100 -> 92"
    ));
    assert_eq!(thread_of(fake, &s, "client").0, 92);
    assert_eq!(thread_of(fake, &s, "hostile").0, 100);
    // A server is never adjusted, however it runs.
    let echo = s.agents[s.index_of("echo").unwrap()].proc.unwrap().tcb;
    let t = fake.s.borrow().tcb_obj(echo).unwrap();
    fake.s.borrow_mut().cpu.insert(t, proto::Telemetry { cpu_ticks: 1000, ..Default::default() });
    // It then waits for work: three calm periods and it is back.
    for n in 1..=3 {
        set_counters(fake, &s, "client", 8 + n, 100 * n);
        period(&mut s);
    }
    assert_eq!(thread_of(fake, &s, "client").0, 100);
    assert!(decisions(&s).iter().any(|d| d.starts_with("perf client: interactive again (3 periods")));
    assert_eq!(thread_of(fake, &s, "echo").0, 150);
    assert!(!decisions(&s).iter().any(|d| d.starts_with("perf echo")));
}

#[test]
fn adapt_off_leaves_priorities_alone_and_the_watch_throttle_outranks_it() {
    let mut d = description();
    d.system.adapt = false;
    let (mut s, fake, _) = boot_desc(d, None);
    set_counters(fake, &s, "client", 0, 0);
    period(&mut s);
    set_counters(fake, &s, "client", 9, 0);
    period(&mut s);
    assert_eq!(thread_of(fake, &s, "client").0, 100);
    assert!(!decisions(&s).iter().any(|d| d.starts_with("perf ")));
    // With the watch's throttle in force, perf leaves the priority as the throttle set it.
    let (mut s, fake) = responding_client(Response::Throttle);
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    assert_eq!(thread_of(fake, &s, "client").0, 84);
    set_counters(fake, &s, "client", 0, 0);
    period(&mut s);
    set_counters(fake, &s, "client", 9, 0);
    period(&mut s);
    for n in 1..=4 {
        set_counters(fake, &s, "client", 9 + n, 100 * n);
        period(&mut s);
    }
    assert_eq!(thread_of(fake, &s, "client").0, 84, "the throttle holds");
}

// ---- attacks on the responses and perf ----

/// `client` watched by the label-45 model with `limit`, its normal behaviour learned.
fn responding_client(limit: Response) -> (Studio, &'static Fake) {
    let mut d = description();
    d.system.suspend_seconds = 1;
    for p in &mut d.programs {
        if p.name == "client" {
            p.respond = Some(limit);
        }
    }
    let (mut s, fake, _) = boot_desc(d, Some(model_of_label_45()));
    feed(&mut s, fake, "client", |n| n % 4, 300, 30);
    (s, fake)
}

#[test]
fn a_kill_reached_in_the_same_batch_as_the_suspend_is_still_carried_out() {
    // One tick's batch of hostile calls (32: all judged) takes the ladder from normal through
    // suspend to kill (1 + 3 + 5 + 8 + 8 = 25 windows). The kill must not be lost behind the
    // suspension: the agent is killed, now or when its suspension runs out, never left
    // suspended for ever with a ladder that no allow, resume or expiry can move.
    let (mut s, fake) = responding_client(Response::Kill);
    feed(&mut s, fake, "client", |_| 45, 32, 32);
    let c = s.index_of("client").unwrap();
    for _ in 0..250 {
        s.watch_tick();
    }
    assert_eq!(s.agents[c].state, AgentState::Stopped, "{:#?}", decisions(&s));
    assert!(s.agents[c].proc.is_none() && s.agents[c].chunk.is_none(), "killed and reclaimed");
}

#[test]
fn a_suspended_agent_stays_allowable_when_its_limit_stops_the_kill() {
    // respond = "suspend": once its time is up Studio would kill it but may not; the agent stays
    // suspended, and the human must still be able to allow or resume it.
    let (mut s, fake) = responding_client(Response::Suspend);
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    let c = s.index_of("client").unwrap();
    assert_eq!(s.agents[c].state, AgentState::Suspended);
    for _ in 0..250 {
        s.watch_tick();
    }
    assert_eq!(s.agents[c].state, AgentState::Suspended, "its limit stops the kill");
    assert!(decisions(&s).iter().any(|d| d.starts_with("watch client: would kill (")), "{:#?}", decisions(&s));
    call(&mut s, "console", method::RESUME, &String::from("client")).unwrap();
    assert_eq!(s.agents[c].state, AgentState::Running);
    assert!(thread_of(fake, &s, "client").1);
    // The same in one batch (the kill reached before Studio acts) and an allow.
    let (mut s, fake) = responding_client(Response::Suspend);
    feed(&mut s, fake, "client", |_| 45, 32, 32);
    assert_eq!(s.agents[c].state, AgentState::Suspended);
    call(&mut s, "console", method::ALLOW, &String::from("client")).unwrap();
    assert_eq!(s.agents[c].state, AgentState::Running);
    assert_eq!(thread_of(fake, &s, "client"), (100, true));
}

#[test]
fn start_of_a_suspended_agent_is_busy_and_leaks_nothing() {
    let (mut s, fake) = responding_client(Response::Suspend);
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    let c = s.index_of("client").unwrap();
    assert_eq!(s.agents[c].state, AgentState::Suspended);
    let (before_proc, before_chunk, before_run) = (s.agents[c].proc.map(|p| p.tcb), s.agents[c].chunk, s.agents[c].run);
    let free_before = free(&s);
    assert_eq!(call(&mut s, "console", method::START, &String::from("client")), Err(ServiceError::Busy));
    assert_eq!(
        (s.agents[c].proc.map(|p| p.tcb), s.agents[c].chunk, s.agents[c].run),
        (before_proc, before_chunk, before_run)
    );
    assert_eq!(free(&s), free_before, "no second instance");
    // A kill then gives back everything.
    call(&mut s, "console", method::KILL, &String::from("client")).unwrap();
    assert!(s.agents[c].chunk.is_none());
}

#[test]
fn revoke_also_refuses_the_interfaces_the_agent_had_not_looked_up_yet() {
    // `client` may use echo and secmem; it looked up echo only. At revoke, a hostile agent must
    // not keep the interfaces it saved for later: a lookup of secmem is refused too.
    let (mut s, fake) = responding_client(Response::Revoke);
    call(&mut s, "client", method::LOOKUP, &proto::Lookup { interface: "echo".into() }).unwrap();
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    assert!(decisions(&s).iter().any(|d| d.starts_with("watch client: revoke: ")), "{:#?}", decisions(&s));
    for interface in ["echo", "secmem"] {
        assert_eq!(
            ask(&mut s, "client", method::LOOKUP, &proto::Lookup { interface: interface.into() }),
            Err(ServiceError::Denied),
            "{interface}"
        );
    }
    // Its studio capability stays (it is how it is allowed, refused and ended).
    assert!(call(&mut s, "client", method::MY_MEMORY, &()).is_ok());
}

#[test]
fn allow_gives_back_the_throttled_priority_not_the_one_perf_took() {
    // CPU-bound: perf puts it at 92. Throttled: 84. Allowed: the throttle's 16 come back, perf's
    // 8 stay while it is still CPU-bound (perf believes it demoted, and would never lower it
    // again while it stays CPU-bound).
    let (mut s, fake) = responding_client(Response::Throttle);
    set_counters(fake, &s, "client", 0, 0);
    period(&mut s);
    set_counters(fake, &s, "client", 9, 0);
    period(&mut s);
    assert_eq!(thread_of(fake, &s, "client").0, 92);
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    assert_eq!(thread_of(fake, &s, "client").0, 84);
    call(&mut s, "console", method::ALLOW, &String::from("client")).unwrap();
    for n in 2..=5 {
        set_counters(fake, &s, "client", 9 * n, 0);
        period(&mut s);
    }
    assert_eq!(thread_of(fake, &s, "client").0, 92, "{:#?}", decisions(&s));
}

#[test]
fn the_ladder_clock_survives_the_tick_counter_wrapping() {
    // When the ladder's clock (hundredths, 32 bits) wraps, a suspended agent is still given its
    // `suspend_seconds`, not killed at once. (With a 32-bit tick count, halved into hundredths,
    // the clock went from 2^31 - 1 back to 0 after 248 days.)
    let (mut s, fake) = responding_client(Response::Kill);
    for at in [u64::from(u32::MAX) - 50, (1 << 33) - 50] {
        s.watch_ticks = at;
        assert_eq!(s.clock(), ((at / 2) % (1 << 32)) as u32);
    }
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    let c = s.index_of("client").unwrap();
    assert_eq!(s.agents[c].state, AgentState::Suspended);
    for _ in 0..100 {
        s.watch_tick();
    }
    assert_eq!(s.agents[c].state, AgentState::Suspended, "not before its second: {:#?}", decisions(&s));
    for _ in 0..150 {
        s.watch_tick();
    }
    assert_eq!(s.agents[c].state, AgentState::Stopped);
}

#[test]
fn a_spinner_cannot_pass_for_interactive_by_making_cheap_syscalls() {
    // Caught running at every timer tick of the period, with 50 syscalls a tick (a poll of its
    // own notification in the loop) and no message: it hogs the CPU all the same.
    let (mut s, fake, _) = boot();
    set_counters(fake, &s, "client", 0, 0);
    period(&mut s);
    set_telemetry(fake, &s, "client", proto::Telemetry { cpu_ticks: 10, syscalls: 500, ..Default::default() });
    period(&mut s);
    assert_eq!(thread_of(fake, &s, "client").0, 92, "{:#?}", decisions(&s));
    assert!(
        decisions(&s)
            .iter()
            .any(|d| d
                .contains("CPU-bound (running at 10 of the last 10 timer ticks, 0 messages received, 500 syscalls)")),
        "{:#?}",
        decisions(&s)
    );
}

/// Ending itself is no way down the ladder: an agent that exits while throttled (its restart
/// policy starts it again) is throttled again from its new run's first instruction, with the
/// level it had; a human's `allow` clears what is carried.
#[test]
fn a_restart_does_not_reset_the_ladder() {
    let mut d = responding();
    for p in &mut d.programs {
        if p.name == "client" {
            p.restart = Restart::Always;
            p.respond = Some(Response::Throttle);
        }
    }
    let (mut s, fake, _) = boot_desc(d, Some(model_of_label_45()));
    feed(&mut s, fake, "client", |n| n % 4, 300, 30);
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    assert_eq!(thread_of(fake, &s, "client").0, 84);
    let c = s.index_of("client").unwrap();
    s.exited(c, 1, "client exited with status 1");
    assert_eq!(s.agents[c].state, AgentState::Running, "restarted");
    assert_eq!(thread_of(fake, &s, "client").0, 84, "throttled again from its first instruction");
    assert!(decisions(&s).iter().any(|d| d.starts_with("watch client: this run starts at ")), "{:#?}", decisions(&s));
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert_ne!(report.level, "normal");
    // A human allows it: priority back, and the next run starts from nothing.
    call(&mut s, "console", method::ALLOW, &String::from("client")).unwrap();
    assert_eq!(thread_of(fake, &s, "client").0, 100);
    s.exited(c, 1, "client exited with status 1");
    assert_eq!(thread_of(fake, &s, "client").0, 100);
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert_eq!(report.level, "normal");
}

/// An ALLOW whose resume the kernel refuses changes nothing: the agent stays suspended at its
/// level, and its time still runs out.
#[test]
fn an_allow_the_kernel_cannot_carry_out_changes_nothing() {
    a_refused_resume_changes_nothing(|s| ask(s, "console", method::ALLOW, &String::from("client")));
}

/// `client` suspended by its ladder, then the human's `way_down` (ALLOW or RESUME) with the
/// kernel refusing to resume the thread: refused, nothing changed, and killed when its time
/// runs out.
fn a_refused_resume_changes_nothing(way_down: impl Fn(&mut Studio) -> Result<(), ServiceError>) {
    let (mut s, fake, _) = boot_desc(responding(), Some(model_of_label_45()));
    feed(&mut s, fake, "client", |n| n % 4, 300, 30);
    feed(&mut s, fake, "client", |_| 45, 24, 8);
    let c = s.index_of("client").unwrap();
    assert_eq!(s.agents[c].state, AgentState::Suspended);
    fake.s.borrow_mut().refuse_resume = true;
    assert_eq!(way_down(&mut s), Err(ServiceError::KernelError));
    assert_eq!(s.agents[c].state, AgentState::Suspended);
    let report = call(&mut s, "console", method::WATCH, &String::from("client")).unwrap();
    assert_eq!(report.level, "suspend");
    for _ in 0..250 {
        s.watch_tick();
    }
    assert_eq!(s.agents[c].state, AgentState::Stopped, "killed when its time ran out");
}

/// An agent that serves requests is left alone by perf: a client could otherwise get it demoted
/// with two requests a period, each sent just before a timer tick (so that it is caught running
/// serving them at 2 ticks, with 2 messages).
#[test]
fn a_client_cannot_get_the_agent_serving_it_demoted() {
    let mut d = description();
    for p in &mut d.programs {
        if p.name == "client" {
            p.provides = vec!["rr".into()];
            p.priority = 110;
        }
    }
    let (mut s, fake, _) = boot_desc(d, None);
    set_counters(fake, &s, "client", 0, 0);
    period(&mut s);
    set_counters(fake, &s, "client", 2, 2);
    period(&mut s);
    set_counters(fake, &s, "client", 12, 2);
    period(&mut s);
    assert_eq!(thread_of(fake, &s, "client").0, 110);
    assert!(!decisions(&s).iter().any(|d| d.starts_with("perf client")), "{:#?}", decisions(&s));
}

/// A run is judged from its first instruction: a spinner started now is demoted at the end of
/// its first period, not given one at full priority (and another after every restart).
#[test]
fn the_first_period_of_a_run_is_judged() {
    let (mut s, fake, _) = boot();
    call(&mut s, "console", method::START, &String::from("hostile")).unwrap();
    set_counters(fake, &s, "hostile", 10, 0);
    period(&mut s);
    assert_eq!(thread_of(fake, &s, "hostile").0, 92, "{:#?}", decisions(&s));
}

/// An agent that swings between spinning and waiting gets a bounded number of perf lines per
/// run, so it cannot push every other decision out of the log (256 kept).
#[test]
fn an_oscillating_agent_cannot_flush_the_decision_log_through_perf() {
    let (mut s, fake, _) = boot();
    let (mut cpu, mut rx) = (0, 0);
    set_counters(fake, &s, "client", cpu, rx);
    period(&mut s);
    for _ in 0..130 {
        cpu += 10;
        set_counters(fake, &s, "client", cpu, rx);
        period(&mut s);
        for _ in 0..3 {
            rx += 1000;
            set_counters(fake, &s, "client", cpu, rx);
            period(&mut s);
        }
    }
    let d = decisions(&s);
    assert!(d.iter().any(|l| l.starts_with("system: ")), "the boot's decisions are still there");
    let perf: Vec<&String> = d.iter().filter(|l| l.starts_with("perf client: ")).collect();
    assert_eq!(perf.len(), crate::perf::LINES_PER_RUN as usize + 1, "{perf:#?}");
    assert_eq!(perf.last().unwrap().as_str(), "perf client: further lines about this run are not logged");
    // It still works, unlogged: it ends the last swing calm, priority back.
    assert_eq!(thread_of(fake, &s, "client").0, 100);
}

/// A RESUME the kernel refuses changes nothing either: the ladder stays at suspend (moved back
/// to revoke, it would never expire, and the agent would stay suspended for good).
#[test]
fn a_resume_the_kernel_cannot_carry_out_changes_nothing() {
    a_refused_resume_changes_nothing(|s| ask(s, "console", method::RESUME, &String::from("client")));
}

// ---- method events: requests to Studio are events of the caller's ----

/// The wire label of Studio's method `m` in this boot (what the caller's Call record carries).
pub(crate) fn studio_label(s: &Studio, m: u64) -> u64 {
    ozone_agent_sdk::protocol::Permutation::new(s.protocol_key, proto::INTERFACE).label(m).unwrap()
}

pub(crate) fn token_of(words: [u64; 2]) -> ozone_cognition::token::Token {
    ozone_cognition::token::token(&ozone_abi::trace::Record::from_words(words).unwrap())
}

/// The token of Studio's answer `code` to method `m` (`NOT_A_METHOD`: a label naming none).
pub(crate) fn method_token(m: u64, code: u16) -> ozone_cognition::token::Token {
    use ozone_abi::trace::{Kind as EventKind, ObjectKind, Record};
    ozone_cognition::token::token(&Record {
        kind: EventKind::Method,
        what: 0,
        object: ObjectKind::None,
        result: code,
        tick: 0,
        info: m,
    })
}

/// Every token the watch of `name` has taken.
pub(crate) fn taken(s: &Studio, name: &str) -> Vec<ozone_cognition::token::Token> {
    s.agents[s.index_of(name).unwrap()].watch.as_ref().expect("watched").taken.clone()
}

#[test]
fn a_request_to_studio_is_an_event_of_the_callers_right_after_its_call() {
    let (mut s, fake, _) = boot();
    let (list, memory) = (studio_label(&s, proto::id::LIST), studio_label(&s, proto::id::MY_MEMORY));
    // The kernel's records: a Call to another server, the Call of LIST (refused: `client` is no
    // admin), a Call with the same label to another server, the Call of MY_MEMORY (answered).
    {
        let mut t = trace_of(fake, &s, "client");
        for label in [3, list, list, memory] {
            t.push(call_record(label, 1));
        }
    }
    assert_eq!(ask(&mut s, "client", method::LIST, &0u32), Err(ServiceError::Denied));
    assert!(ask(&mut s, "client", method::MY_MEMORY, &()).is_ok());
    s.watch_tick();
    let want = [
        token_of(call_record(3, 1)),
        token_of(call_record(list, 1)),
        method_token(proto::id::LIST, ServiceError::Denied as u16),
        token_of(call_record(list, 1)),
        token_of(call_record(memory, 1)),
        method_token(proto::id::MY_MEMORY, 0),
    ];
    assert_eq!(taken(&s, "client"), want);
    let c = s.index_of("client").unwrap();
    assert_eq!(s.agents[c].watch.as_ref().unwrap().read, 4, "the kernel's records are counted, not Studio's");
    // A request whose Call was read at an earlier tick (or dropped): its event comes after the
    // next batch's records.
    assert!(ask(&mut s, "client", method::MY_MEMORY, &()).is_ok());
    trace_of(fake, &s, "client").push(call_record(9, 2));
    s.watch_tick();
    assert_eq!(taken(&s, "client")[6..], [token_of(call_record(9, 2)), method_token(proto::id::MY_MEMORY, 0)]);
    // The same kernel records and another answer: another token (what a privilege probe is).
    assert_ne!(method_token(proto::id::LIST, 0), method_token(proto::id::LIST, ServiceError::Denied as u16));
}

#[test]
fn labels_naming_no_method_and_refused_requests_are_events_strangers_are_not() {
    use ozone_agent_sdk::rpc::{Incoming, Request};
    use ozone_agent_sdk::sys::{Msg, Received};
    let (mut s, fake, _) = boot();
    let client = id(&s, "client");
    trace_of(fake, &s, "client").push(call_record(0x9999, 1));
    // A label that names no method of Studio's (a protocol fuzzer's).
    let odd = Received { badge: client, msg: Msg::new(0x9999, &[]) };
    assert_eq!(s.incoming(Incoming::Other(&odd)), Some(Err(ServiceError::UnknownMethod)));
    // A request the method profile refused (answered by the server loop, told to Studio).
    let refused = Request::new(client, proto::id::LIST, Received { badge: client, msg: Msg::new(0x150, &[]) });
    assert_eq!(s.incoming(Incoming::Refused(&refused, &Err(ServiceError::Denied))), None);
    // Label 0 is no method either (signals reach Studio with the tick's bit only, taken first).
    let zero = Received { badge: client, msg: Msg::default() };
    assert_eq!(s.incoming(Incoming::Other(&zero)), Some(Err(ServiceError::UnknownMethod)));
    // No events: a badge that names no program.
    let stranger = Received { badge: 999, msg: Msg::new(0x9999, &[]) };
    assert_eq!(s.incoming(Incoming::Other(&stranger)), Some(Err(ServiceError::UnknownMethod)));
    s.watch_tick();
    assert_eq!(
        taken(&s, "client"),
        [
            token_of(call_record(0x9999, 1)),
            method_token(ozone_abi::trace::NOT_A_METHOD, ServiceError::UnknownMethod as u16),
            method_token(proto::id::LIST, ServiceError::Denied as u16),
            method_token(ozone_abi::trace::NOT_A_METHOD, ServiceError::UnknownMethod as u16),
        ]
    );
}

/// A program that calls Studio as fast as it can: Studio keeps a bounded number of its events
/// a tick and counts the rest; and a ring cannot bring method events in (the kernel writes
/// none: a record of that kind there is not taken).
#[test]
fn a_flood_of_requests_keeps_a_bounded_number_of_events_and_a_ring_cannot_forge_them() {
    let (mut s, fake, _) = boot();
    for _ in 0..1000 {
        assert!(ask(&mut s, "client", method::MY_MEMORY, &()).is_ok());
    }
    {
        let mut t = trace_of(fake, &s, "client");
        t.push(call_record(1, 1));
        let forged = ozone_abi::trace::Record {
            kind: ozone_abi::trace::Kind::Method,
            what: 0,
            object: ozone_abi::trace::ObjectKind::None,
            result: 0,
            tick: 1,
            info: 5,
        };
        t.push(forged.to_words());
    }
    s.watch_tick();
    let c = s.index_of("client").unwrap();
    let w = s.agents[c].watch.as_ref().unwrap();
    assert_eq!(w.methods_dropped, 1000 - super::watch::PENDING_METHODS as u64);
    assert_eq!(w.read, 2, "both ring records read");
    let t = taken(&s, "client");
    assert_eq!(t.len(), 1 + super::watch::PENDING_METHODS, "the forged record is not taken");
    assert!(!t.contains(&method_token(5, 0)));
    assert!(
        decisions(&s).iter().any(|d| d.contains("watch client: makes more than 64 requests of Studio a tick: 936")),
        "{:#?}",
        decisions(&s)
    );
    // The next tick starts afresh.
    assert!(ask(&mut s, "client", method::MY_MEMORY, &()).is_ok());
    s.watch_tick();
    assert_eq!(taken(&s, "client").len(), 2 + super::watch::PENDING_METHODS);
    // Refusals cannot be hidden behind cheap requests: they take the answered ones' places.
    for n in 0..200 {
        if n % 20 == 19 {
            assert_eq!(ask(&mut s, "client", method::LIST, &0u32), Err(ServiceError::Denied));
        } else {
            assert!(ask(&mut s, "client", method::MY_MEMORY, &()).is_ok());
        }
    }
    s.watch_tick();
    let denied = method_token(proto::id::LIST, ServiceError::Denied as u16);
    let t = taken(&s, "client");
    assert_eq!(t.len(), 2 + 2 * super::watch::PENDING_METHODS);
    assert_eq!(t.iter().filter(|&&x| x == denied).count(), 10, "every refusal kept");
}

/// The model sees what the kernel cannot: the same Calls, refused, are a privilege probe.
#[test]
fn the_model_judges_refused_requests_the_kernel_records_do_not_show() {
    let (mut s, fake, _) =
        boot_with_model(Some(model_of_token(method_token(proto::id::LIST, ServiceError::Denied as u16))));
    let list = studio_label(&s, proto::id::LIST);
    for tick in 0..3 {
        for _ in 0..10 {
            trace_of(fake, &s, "client").push(call_record(list, tick));
            assert_eq!(ask(&mut s, "client", method::LIST, &0u32), Err(ServiceError::Denied));
        }
        s.watch_tick();
    }
    let said: Vec<String> = decisions(&s).into_iter().filter(|d| d.contains("watch client: the model")).collect();
    assert!(said.len() == 1 && said[0].contains("anomalous from event 10"), "{said:?}");
}

#[test]
fn method_event_codes_and_numbers_are_the_protocols() {
    use ozone_cognition::token::{METHODS_KEPT, service};
    assert_eq!(METHODS_KEPT, ozone_agent_sdk::protocol::MAX_METHODS);
    assert_eq!(service::BAD_REQUEST, ServiceError::BadRequest as u16);
    assert_eq!(service::UNKNOWN_METHOD, ServiceError::UnknownMethod as u16);
    assert_eq!(service::DENIED, ServiceError::Denied as u16);
}

/// A hostile step now and then among ordinary work: with a frame long enough that no frame's
/// mean rises past the threshold, the third run of sure windows within the horizon is the
/// anomaly, and the log says it is the spikes, not the frame.
#[test]
fn rare_sure_windows_are_an_anomaly_said_as_such() {
    let detect = ozone_cognition::detect::Config { frame: 64, spikes: 3, ..ozone_cognition::detect::Config::DEFAULT };
    let (mut s, fake, _) = boot_detect(description(), Some(model_of_label_45()), detect);
    feed(&mut s, fake, "client", |n| if n % 100 == 50 { 45 } else { n % 4 }, 400, 30);
    let said: Vec<String> =
        decisions(&s).into_iter().filter(|d| d.starts_with("watch client: the model finds it anomalous")).collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].contains("from event 250: 3 spikes (windows scoring 0.95 or more) in its last 512 windows"),
        "{}",
        said[0]
    );
    // A human allows it: the spikes counted so far are forgotten, so the next one is no alarm.
    call(&mut s, "console", method::ALLOW, &String::from("client")).unwrap();
    // (Other windows than the allowed ones: the step comes at another point of the loop.)
    feed(&mut s, fake, "client", |n| if n % 100 == 77 { 45 } else { n % 4 }, 120, 30);
    let again: Vec<String> =
        decisions(&s).into_iter().filter(|d| d.starts_with("watch client: the model finds it anomalous")).collect();
    assert_eq!(again.len(), 1, "{again:#?}");
}

// ---- other servers' refusals (`REFUSED`): events of the client's, on the server's word ----

/// The test description with `echo` holding the `clients` privilege.
fn description_echo_tells() -> SystemDescription {
    let mut d = description();
    let echo = d.programs.iter_mut().find(|p| p.name == "echo").unwrap();
    echo.privileges = vec![Privilege::Clients];
    d
}

/// The token of another server's refusal answered `code`.
fn refused_token(code: ServiceError) -> ozone_cognition::token::Token {
    use ozone_abi::trace::{Kind as EventKind, ObjectKind, Record};
    let r = Record {
        kind: EventKind::Method,
        what: ozone_abi::trace::BY_SERVER,
        object: ObjectKind::None,
        result: code as u16,
        tick: 0,
        info: ozone_abi::trace::NOT_A_METHOD,
    };
    ozone_cognition::token::token(&r)
}

fn refused(client: u64, label: u64, code: ServiceError) -> proto::Refused {
    proto::Refused { client, label, code: code as u16 }
}

#[test]
fn a_server_s_refusal_is_an_event_of_its_client_s_right_after_the_call_it_refused() {
    let (mut s, fake, _) = boot_desc(description_echo_tells(), None);
    let client = id(&s, "client");
    {
        let mut t = trace_of(fake, &s, "client");
        for label in [0x141, 0x150, 0x141] {
            t.push(call_record(label, 1));
        }
    }
    // The server got the label with its payload's padding bits (the high bits above the
    // protocol's label): Studio takes them off.
    let padded = 0x150 | (3 << ozone_agent_sdk::protocol::LABEL_MASK.count_ones());
    assert_eq!(ask(&mut s, "echo", method::REFUSED, &refused(client, padded, ServiceError::BadRequest)), Ok(()));
    assert_eq!(ask(&mut s, "echo", method::REFUSED, &refused(client, 0x141, ServiceError::UnknownMethod)), Ok(()));
    s.watch_tick();
    assert_eq!(
        taken(&s, "client"),
        [
            token_of(call_record(0x141, 1)),
            refused_token(ServiceError::UnknownMethod),
            token_of(call_record(0x150, 1)),
            refused_token(ServiceError::BadRequest),
            token_of(call_record(0x141, 1)),
        ]
    );
    // A refusal told after its Call was read (the tick came between): after the next batch,
    // once; the Call it goes with is then used up.
    trace_of(fake, &s, "client").push(call_record(0x160, 2));
    s.watch_tick();
    assert_eq!(ask(&mut s, "echo", method::REFUSED, &refused(client, 0x160, ServiceError::Denied)), Ok(()));
    assert_eq!(ask(&mut s, "echo", method::REFUSED, &refused(client, 0x160, ServiceError::Denied)), Ok(()));
    trace_of(fake, &s, "client").push(call_record(0x170, 3));
    s.watch_tick();
    assert_eq!(
        taken(&s, "client")[5..],
        [token_of(call_record(0x160, 2)), token_of(call_record(0x170, 3)), refused_token(ServiceError::Denied)]
    );
    let c = s.index_of("client").unwrap();
    let w = s.agents[c].watch.as_ref().unwrap();
    assert_eq!((w.refused, w.refusals_unplaced), (3, 1), "the second had no Call left");
    let report = w.report();
    assert_eq!((report.refused, report.refusals_unplaced), (3, 1));
    // The log says once which server speaks of the client.
    let told: Vec<String> =
        decisions(&s).into_iter().filter(|d| d.contains("echo says it refused a request of its")).collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].starts_with("watch client: echo says it refused a request of its (did not decode)"), "{told:?}");
    // Another server's refusal and Studio's own answer of the same class are apart.
    assert_ne!(refused_token(ServiceError::Denied), method_token(proto::id::LIST, ServiceError::Denied as u16));
}

/// The hostile side: a server may speak only of its own clients, only of refusals, only with
/// the privilege, and only of Calls the client made — one event per Call, however many it tells.
#[test]
fn a_server_cannot_frame_a_program_that_is_not_its_client_nor_invent_requests() {
    // Without the privilege: refused, nothing queued.
    let (mut s, fake, _) = boot();
    let client = id(&s, "client");
    trace_of(fake, &s, "client").push(call_record(0x141, 1));
    let r = refused(client, 0x141, ServiceError::Denied);
    assert_eq!(ask(&mut s, "echo", method::REFUSED, &r), Err(ServiceError::Denied));
    assert_eq!(ask(&mut s, "client", method::REFUSED, &r), Err(ServiceError::Denied), "a client of nothing");
    s.watch_tick();
    // The client's own try is an event of its (Studio's refusal), and no refusal on the Call.
    assert_eq!(
        taken(&s, "client"),
        [token_of(call_record(0x141, 1)), method_token(proto::id::REFUSED, ServiceError::Denied as u16)]
    );
    assert!(decisions(&s).iter().any(|d| d.contains("REFUSED") && d.contains("clients")), "{:?}", decisions(&s));

    // With it: not of a program that does not use its interface, not of itself, not of no one,
    // not an answer that is no refusal.
    let (mut s, fake, _) = boot_desc(description_echo_tells(), None);
    let (client, console, echo) = (id(&s, "client"), id(&s, "console"), id(&s, "echo"));
    trace_of(fake, &s, "client").push(call_record(0x141, 1));
    for who in [console, echo, 0, 999, u64::MAX] {
        let r = refused(who, 0x141, ServiceError::Denied);
        assert!(ask(&mut s, "echo", method::REFUSED, &r).is_err(), "about {who}");
    }
    for code in [0u16, ServiceError::NotFound as u16, ServiceError::Busy as u16, 999, u16::MAX] {
        let r = proto::Refused { client, label: 0x141, code };
        assert_eq!(ask(&mut s, "echo", method::REFUSED, &r), Err(ServiceError::InvalidArgument), "code {code}");
    }
    // Of requests never made: a label no Call carried, and more refusals than Calls.
    for _ in 0..1000 {
        let _ = ask(&mut s, "echo", method::REFUSED, &refused(client, 0x141, ServiceError::Denied));
        let _ = ask(&mut s, "echo", method::REFUSED, &refused(client, 0x999, ServiceError::Denied));
    }
    s.watch_tick();
    assert_eq!(
        taken(&s, "client"),
        [token_of(call_record(0x141, 1)), refused_token(ServiceError::Denied)],
        "one event, after the one Call"
    );
    let c = s.index_of("client").unwrap();
    let w = s.agents[c].watch.as_ref().unwrap();
    // The queue stays bounded: what did not fit, and what it held that no Call took, are
    // counted as the server's unplaced word, not as the client's requests.
    assert_eq!((w.refusals_unplaced, w.methods_dropped), (1999, 0));
    // Nor through a Call whose Studio request already took its event: a Call answers once.
    let memory = studio_label(&s, proto::id::MY_MEMORY);
    trace_of(fake, &s, "client").push(call_record(memory, 2));
    assert!(ask(&mut s, "client", method::MY_MEMORY, &()).is_ok());
    // (A label of Studio's is no request of echo's: refused at the door.)
    assert_eq!(
        ask(&mut s, "echo", method::REFUSED, &refused(client, memory, ServiceError::Denied)),
        Err(ServiceError::InvalidArgument)
    );
    s.watch_tick();
    assert_eq!(taken(&s, "client")[2..], [token_of(call_record(memory, 2)), method_token(proto::id::MY_MEMORY, 0)]);
}

/// The watch's revoke takes what the refused requests used: the interfaces of the servers that
/// refused them in the anomalous windows (`echo` here: the model flags its refusals), not the
/// others the agent may use (`secmem`); without refusals or requests naming an interface,
/// every interface (`revoke_also_refuses_the_interfaces_the_agent_had_not_looked_up_yet`).
#[test]
fn revoke_takes_the_interfaces_of_the_servers_that_refused_the_agent() {
    let mut d = description_echo_tells();
    d.system.suspend_seconds = 1;
    d.programs.iter_mut().find(|p| p.name == "client").unwrap().respond = Some(Response::Revoke);
    let (mut s, fake, _) = boot_desc(d, Some(model_of_token(refused_token(ServiceError::BadRequest))));
    feed(&mut s, fake, "client", |n| n % 4, 300, 30);
    let client = id(&s, "client");
    call(&mut s, "client", method::LOOKUP, &proto::Lookup { interface: "echo".into() }).unwrap();
    // Requests echo refuses (bad ones, each told of).
    let bad = ozone_agent_sdk::protocol::Permutation::new(s.protocol_key, "echo").label(40).unwrap();
    let revoked = |s: &Studio| decisions(s).iter().any(|d| d.starts_with("watch client: revoke: "));
    for tick in 0..64 {
        if revoked(&s) {
            break;
        }
        trace_of(fake, &s, "client").push(call_record(bad, tick));
        assert_eq!(ask(&mut s, "echo", method::REFUSED, &refused(client, bad, ServiceError::BadRequest)), Ok(()));
        s.watch_tick();
    }
    let c = s.index_of("client").unwrap();
    assert_eq!(s.agents[c].watch.as_ref().unwrap().anomalous_refusers, [id(&s, "echo")]);
    let said: Vec<String> = decisions(&s).into_iter().filter(|d| d.starts_with("watch client: revoke: ")).collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(said[0].starts_with(
        "watch client: revoke: the interfaces its anomalous requests used or whose servers refused them (echo): "
    ));
    let lookup = |s: &mut Studio, interface: &str| {
        ask(s, "client", method::LOOKUP, &proto::Lookup { interface: interface.into() })
    };
    assert_eq!(lookup(&mut s, "echo"), Err(ServiceError::Denied));
    assert_eq!(lookup(&mut s, "secmem"), Ok(()), "what no refused request used stays");
}

/// The watch's revoke takes the interfaces the requests ending the anomalous windows used (a
/// label names its interface): `echo` here, whose Calls the model flags, not `secmem`, which
/// the agent used only before. A request in those windows whose label does not name where it
/// went — Studio's label on a request Studio did not answer, no interface's label, an interface
/// the agent may not use — makes the revoke take every interface
/// (`placement_review_tests`: `a_flood_under_another_interface_s_labels_...`,
/// `an_old_refusal_does_not_narrow_...`).
#[test]
fn revoke_takes_the_interfaces_the_anomalous_requests_used() {
    use crate::refused_review_tests::label_of;
    let mut d = description();
    d.system.suspend_seconds = 1;
    d.programs.iter_mut().find(|p| p.name == "client").unwrap().respond = Some(Response::Revoke);
    // A model that flags a Call of a large message (17 to 63 words): what the test's echo
    // Calls carry.
    let flagged = call_with(0x100, 20, 0);
    let model = model_of_token(ozone_cognition::token::token(&ozone_abi::trace::Record::from_words(flagged).unwrap()));
    let (mut s, fake, _) = boot_desc(d, Some(model));
    let (echo, secmem) = (label_of(&s, "echo", 5), label_of(&s, "secmem", 5));
    // Normal windows with Calls to secmem (one word), anomalous ones with Calls to echo (20
    // words).
    feed_words(&mut s, fake, "client", |n| if n % 2 == 0 { (secmem, 1) } else { (n % 4, 0) }, 300, 30);
    feed_words(&mut s, fake, "client", |_| (echo, 20), 24, 8);
    let said: Vec<String> = decisions(&s).into_iter().filter(|d| d.starts_with("watch client: revoke: ")).collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].starts_with(
            "watch client: revoke: the interfaces its anomalous requests used or whose servers refused them (echo): "
        ),
        "{said:#?}"
    );
    let c = s.index_of("client").unwrap();
    let used = &s.agents[c].watch.as_ref().unwrap().anomalous_blocks;
    assert_eq!(
        used,
        &[ozone_agent_sdk::protocol::block_of(echo)],
        "secmem's Calls were in the anomalous windows, made before them"
    );
    let lookup = |s: &mut Studio, interface: &str| {
        ask(s, "client", method::LOOKUP, &proto::Lookup { interface: interface.into() })
    };
    assert_eq!(lookup(&mut s, "echo"), Err(ServiceError::Denied));
    assert_eq!(lookup(&mut s, "secmem"), Ok(()), "what no anomalous request used stays");
}

/// `FOLLOW` (the shell's `studio watch AGENT [SECONDS]`): `admin` only, a running program, at
/// most `MAX_FOLLOW_SECONDS`. Studio then notes the agent's scores once a second when they
/// changed (never twice the same line in a row, never more than one a second), and says when it
/// stops: the time is up, a new follow replaced it, 0 asked, or the run ended.
#[test]
fn follow_notes_the_scores_live_once_a_second_when_they_change_and_says_when_it_ends() {
    let (mut s, fake, _) = boot_with_model(Some(model_of_label_45()));
    let follow = |agent: &str, seconds: u32| proto::Follow { agent: agent.into(), seconds };
    assert_eq!(ask(&mut s, "hostile", method::FOLLOW, &follow("client", 5)), Err(ServiceError::Denied));
    assert_eq!(ask(&mut s, "console", method::FOLLOW, &follow("nosuch", 5)), Err(ServiceError::NotFound));
    assert_eq!(
        ask(&mut s, "console", method::FOLLOW, &follow("client", proto::MAX_FOLLOW_SECONDS + 1)),
        Err(ServiceError::InvalidArgument)
    );
    assert!(s.following.is_none(), "nothing followed after refusals");
    let live = |s: &Studio| -> Vec<String> { decisions(s).into_iter().filter(|d| d.contains(" live: ")).collect() };
    assert_eq!(ask(&mut s, "console", method::FOLLOW, &follow("client", 3)), Ok(()));
    assert_eq!(live(&s).len(), 2, "the start, and the scores at once: {:#?}", live(&s));
    assert!(live(&s)[0].starts_with("watch client live: its scores each second they change, for 3 s"));
    assert!(live(&s)[1].starts_with("watch client live: frame score 0.000"), "{:#?}", live(&s));
    // Half a second of ticks with new windows: no line before the second is up.
    let ticks_a_second = 1_000_000 / ozone_agent_sdk::protocol::timer::STUDIO_TICK_US;
    for tick in 0..ticks_a_second / 2 {
        trace_of(fake, &s, "client").push(call_record(tick % 4, 1));
        s.watch_tick();
    }
    assert_eq!(live(&s).len(), 2);
    for _ in 0..ticks_a_second / 2 {
        s.watch_tick();
    }
    let lines = live(&s);
    assert_eq!(lines.len(), 3, "one line at the second: {lines:#?}");
    assert!(lines[2].contains(" windows judged; response normal (up to "), "{lines:#?}");
    assert_ne!(lines[2], lines[1], "the windows judged changed");
    // A second with nothing new: no line.
    for _ in 0..ticks_a_second {
        s.watch_tick();
    }
    assert_eq!(live(&s).len(), 3, "the same line is not noted again");
    // The time is up at 3 s.
    for _ in 0..ticks_a_second {
        s.watch_tick();
    }
    let lines = live(&s);
    assert_eq!(lines.last().map(String::as_str), Some("watch client live: ends (its time is up)"), "{lines:#?}");
    assert!(s.following.is_none());
    for _ in 0..3 * ticks_a_second {
        s.watch_tick();
    }
    assert_eq!(live(&s).len(), lines.len(), "nothing after the end");

    // A new follow replaces the last (said); 0 ends it; a run that ends ends it.
    assert_eq!(ask(&mut s, "console", method::FOLLOW, &follow("client", 60)), Ok(()));
    assert_eq!(ask(&mut s, "console", method::FOLLOW, &follow("echo", 60)), Ok(()));
    assert!(live(&s).iter().any(|l| l == "watch client live: ends (asked)"));
    assert_eq!(live(&s).last().map(String::as_str), Some("watch echo live: not traced"), "a server");
    assert_eq!(ask(&mut s, "console", method::FOLLOW, &follow("echo", 0)), Ok(()));
    assert_eq!(live(&s).last().map(String::as_str), Some("watch echo live: ends (asked)"));
    assert!(s.following.is_none());
    assert_eq!(ask(&mut s, "console", method::FOLLOW, &follow("client", 60)), Ok(()));
    assert_eq!(ask(&mut s, "console", method::KILL, &String::from("client")), Ok(()));
    assert_eq!(ask(&mut s, "console", method::FOLLOW, &follow("client", 60)), Err(ServiceError::Busy), "not running");
    for _ in 0..ticks_a_second {
        s.watch_tick();
    }
    assert_eq!(live(&s).last().map(String::as_str), Some("watch client live: ends (its run ended)"));
    assert!(s.following.is_none());
}
