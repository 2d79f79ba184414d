//! Host tests of the shaper's bookkeeping against a model of Studio (`PROFILE_OF`, `SET_PROFILE`,
//! `ARM_PROFILE` with Studio's rules: runs that end, servers not shaped, never wider than in force
//! unless a relearn was allowed), the kernel (telemetry, per-thread profiles) and the servers (an
//! `rpc::Profiles` table per interface, which pulls the shaper's requests when Studio signalled
//! it, as the SDK's server loop does).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use alloc::{format, vec};

use ozone_abi::{Error, profile};
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::shaper::{Applied, Kept, MAX_PENDING, Mode, Profile, Pull, Restored, SavedPage};
use ozone_agent_sdk::protocol::studio::{ShapeOp, ThreadProfile, may_shape};
use ozone_agent_sdk::protocol::system::MAX_NAME;
use ozone_agent_sdk::rpc::{Profiles, Verdict};

use crate::shaper::{Answer, Ask, Env, MAX_QUEUED, RECONCILE_PASSES, RETRY_PASSES, Shaper, Thread};

const SHAPER: u64 = 3;
const WARMUP: u64 = 64;

struct Program {
    name: &'static str,
    server: bool,
    /// Holds the `admin` privilege (Studio lets it read and change others' profiles).
    admin: bool,
    /// Holds the `keeper` privilege (Studio lets it keep profiles across boots).
    keeper: bool,
    running: bool,
    /// Which start of it this is (Studio counts every start).
    run: u32,
    /// Studio allowed a relearn of this run (`MAY_SHAPE` for an admin): one widening.
    relearn: bool,
    syscalls: u64,
    used: u64,
    allowed: u64,
    /// The kernel's learning window: syscalls still learned (`None`: none armed).
    window: Option<u64>,
}

#[derive(Default)]
struct Model {
    programs: Vec<Program>,
    /// One server per remote interface (index 1..), or `None` while it is down.
    servers: Vec<Option<Profiles>>,
    /// Signals Studio sent for the shaper, per interface name.
    signals: Vec<String>,
    reports: Vec<String>,
    /// Studio's refusals of `MAY_SHAPE`, as logged.
    refusals: Vec<String>,
    /// Profile changes Studio refused the shaper (a server's, its own, wider than in force).
    changes_refused: u32,
    studio_refuses: bool,
}

impl Model {
    /// Programs: `echo` (server, id 1), `alpha` (agent, 2), the shaper (3), `beta` (agent with
    /// the `admin` privilege, as the shell has it, 4).
    fn new() -> Model {
        let p = |name, server| Program { admin: name == "beta", ..program(name, server, false) };
        Model {
            programs: vec![p("echo", true), p("alpha", false), p("shaper", true), p("beta", false)],
            servers: vec![None, Some(Profiles::new())],
            ..Model::default()
        }
    }

    fn prog(&mut self, id: u64) -> &mut Program {
        &mut self.programs[id as usize - 1]
    }

    /// Program `id` makes `n` syscalls of kind `bit` (the kernel's side of a profile, learning
    /// windows included: the syscall after a window's last narrows `allowed` first); the result
    /// of the last.
    fn syscalls(&mut self, id: u64, n: u64, bit: u32) -> Result<(), Error> {
        let p = self.prog(id);
        let mut result = Ok(());
        for _ in 0..n {
            p.syscalls += 1;
            match p.window {
                Some(0) => (p.window, p.allowed) = (None, p.used & p.allowed),
                Some(left) => p.window = Some(left - 1),
                None => {}
            }
            p.used |= profile::mask(bit);
            result = if p.allowed & profile::mask(bit) == 0 { Err(Error::Denied) } else { Ok(()) };
        }
        result
    }

    /// Program `id` calls `method` of the echo server (a Call, counted by the kernel).
    fn call_echo(&mut self, id: u64, method: u64) -> Verdict {
        self.syscalls(id, 1, profile::CALL).expect("the test's agents keep Call");
        self.servers[1].as_mut().expect("echo is up").check(id, method)
    }

    fn stop(&mut self, id: u64) {
        let p = self.prog(id);
        p.running = false;
    }

    fn start(&mut self, id: u64) {
        let p = self.prog(id);
        let run = p.run + 1;
        *p = Program {
            running: true,
            run,
            relearn: false,
            syscalls: 0,
            used: 0,
            allowed: profile::ALL,
            window: None,
            ..*p
        };
    }

    /// As Studio: a change of run `t`'s kernel profile to `allowed` — that run running, an
    /// agent, never the shaper itself, never wider than in force unless a relearn was allowed
    /// (used up by the widening).
    fn change(&mut self, t: Thread, allowed: u64) -> Result<&mut Program, ServiceError> {
        let p = self.programs.get_mut((t.id as usize).wrapping_sub(1)).ok_or(ServiceError::NotFound)?;
        if p.server || t.id == SHAPER {
            self.changes_refused += 1;
            return Err(ServiceError::Denied);
        }
        let p = &mut self.programs[t.id as usize - 1];
        if allowed & !p.allowed != 0 {
            if !p.relearn {
                self.changes_refused += 1;
                return Err(ServiceError::Denied);
            }
            p.relearn = false;
        }
        if !p.running || p.run != t.run {
            return Err(ServiceError::Busy);
        }
        Ok(p)
    }
}

impl Env for Model {
    fn program(&mut self, id: u64) -> Result<ThreadProfile, ServiceError> {
        if self.studio_refuses {
            return Err(ServiceError::Denied);
        }
        let p = self.programs.get((id as usize).wrapping_sub(1)).ok_or(ServiceError::NotFound)?;
        if !p.running {
            return Err(ServiceError::Busy);
        }
        Ok(ThreadProfile {
            name: p.name.to_string(),
            server: p.server,
            run: p.run,
            syscalls: p.syscalls,
            denied: 0,
            used: p.used,
            allowed: p.allowed,
            window: p.window,
        })
    }

    fn set_kernel_allowed(&mut self, t: Thread, allowed: u64) -> Result<(), ServiceError> {
        self.change(t, allowed).map(|p| (p.allowed, p.window) = (allowed, None))
    }

    fn arm_kernel(&mut self, t: Thread, allowed: u64, learn: u64) -> Result<(), ServiceError> {
        self.change(t, allowed).map(|p| (p.allowed, p.window) = (allowed, Some(learn)))
    }

    fn signal(&mut self, interface: &str) -> bool {
        self.signals.push(interface.to_string());
        self.servers[1].is_some()
    }

    fn report(&mut self, text: &str) {
        self.reports.push(text.to_string());
    }

    /// As Studio: the rule of `protocol::studio::may_shape`, every refusal logged.
    fn may_shape(&mut self, caller: u64, target: &str, op: ShapeOp) -> Result<(), ServiceError> {
        let p = self.programs.get((caller as usize).wrapping_sub(1)).ok_or(ServiceError::Denied)?;
        let privileged = if op == ShapeOp::Keep { p.keeper } else { p.admin };
        may_shape(p.name, privileged, target, op).map_err(|rule| {
            self.refusals.push(format!("refuse {}: {op} of {target} through the shaper: {rule}", p.name));
            ServiceError::Denied
        })?;
        if op == ShapeOp::Learn
            && let Some(t) = self.programs.iter_mut().find(|p| p.name == target && p.running)
        {
            t.relearn = true;
        }
        Ok(())
    }
}

/// The echo server's id (it provides `echo`).
const ECHO: u64 = 1;
/// The badge bit of a server's pull capability.
const PULL: u64 = ozone_agent_sdk::protocol::shaper::PULL_BADGE;

fn setup() -> (Model, Shaper, Profiles) {
    (Model::new(), Shaper::new(SHAPER, "shaper", WARMUP, "shaper", &[("echo", ECHO)]), Profiles::new())
}

/// The echo server, if it is up and was signalled, pulls as the SDK's server loop does: until
/// the shaper has nothing more. How many requests it carried out.
fn pump(s: &mut Shaper, m: &mut Model) -> usize {
    if m.servers[1].is_none() || m.signals.is_empty() {
        return 0;
    }
    m.signals.clear();
    let mut done = None;
    let mut n = 0;
    loop {
        let pull = Pull { interface: "echo".into(), done: done.take() };
        let Ok(Answer::Control(next)) = s.request(PULL | ECHO, Ask::Pull(pull), m, &mut Profiles::new()) else {
            panic!("the provider's pull is answered")
        };
        let Some(req) = next else { return n };
        let server = m.servers[1].as_mut().unwrap();
        done = Some(Applied { badge: req.badge(), profile: server.apply(&req).ok() });
        n += 1;
    }
}

/// A look of the shaper's, then the echo server's pulls.
fn tick(s: &mut Shaper, m: &mut Model, own: &mut Profiles) {
    s.tick(m, own);
    pump(s, m);
}

fn mode(s: &Shaper, id: u64) -> Mode {
    s.agents().iter().find(|a| a.id == id).map_or(Mode::NotRunning, |a| a.mode())
}

fn profile_of(
    s: &mut Shaper,
    m: &mut Model,
    own: &mut Profiles,
    caller: u64,
    name: &str,
) -> Result<Profile, ServiceError> {
    match s.request(caller, Ask::Profile(name.into()), m, own)? {
        Answer::Profile(p) => Ok(p),
        other => panic!("{other:?}"),
    }
}

#[test]
fn learning_then_enforcing_denies_what_was_not_learned() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 1), Mode::Unshaped, "servers are not shaped");
    assert_eq!(mode(&s, SHAPER), Mode::Unshaped, "nor is the shaper");
    assert_eq!(mode(&s, 2), Mode::Learning);
    assert_eq!(s.agents().len(), 4, "discovery stops where Studio says NotFound");

    // Warm-up: calls (bit CALL), yields, echo method 0, the shaper's own method 3.
    m.syscalls(2, 30, profile::CALL).unwrap();
    m.syscalls(2, 10, profile::YIELD).unwrap();
    assert_eq!(m.call_echo(2, 0), Verdict::Allow);
    assert_eq!(own.check(2, 3), Verdict::Allow);
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Learning, "41 syscalls: still in the window");
    assert!(m.reports.is_empty());

    m.syscalls(2, 23, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    let used = profile::mask(profile::CALL) | profile::mask(profile::YIELD);
    assert_eq!(m.prog(2).allowed, used, "kernel: allowed = used");
    assert_eq!(m.reports.len(), 1);
    assert_eq!(
        m.reports[0],
        "shaper: enforce alpha's profile (warm-up over after 64 syscalls): kernel call, yield; \
         `shaper` methods 3; `echo` told"
    );

    // Learned operations still work; new ones are denied in both halves.
    assert_eq!(m.syscalls(2, 1, profile::CALL), Ok(()));
    assert_eq!(m.syscalls(2, 1, profile::NB_RECV), Err(Error::Denied));
    assert_eq!(m.call_echo(2, 0), Verdict::Allow);
    assert_eq!(m.call_echo(2, 1), Verdict::Deny { report: true });
    assert_eq!(m.call_echo(2, 1), Verdict::Deny { report: false });
    assert_eq!(own.check(2, 3), Verdict::Allow);
    assert_eq!(own.check(2, 0), Verdict::Deny { report: true });

    // The other agent is untouched, and enforcement happens once.
    assert_eq!(mode(&s, 4), Mode::Learning);
    assert_eq!(m.prog(4).allowed, profile::ALL);
    tick(&mut s, &mut m, &mut own);
    assert_eq!(m.reports.len(), 1);

    // PROFILE shows both halves; the server's as it last reported it (each PROFILE asks it
    // again, for the next).
    let p = profile_of(&mut s, &mut m, &mut own, 4, "alpha").unwrap();
    let echo = p.interfaces[1].methods.unwrap();
    assert_eq!((echo.used, echo.allowed, echo.enforcing, echo.denied), (0b01, 0b01, true, 0), "as enforced");
    pump(&mut s, &mut m);
    let p = profile_of(&mut s, &mut m, &mut own, 4, "alpha").unwrap();
    assert_eq!(p.mode, Mode::Enforcing);
    assert_eq!((p.kernel_allowed, p.kernel_used & profile::mask(profile::NB_RECV) != 0), (used, true));
    assert_eq!(p.interfaces.len(), 2);
    assert_eq!(p.interfaces[1].interface, "echo");
    let echo = p.interfaces[1].methods.unwrap();
    assert_eq!((echo.used, echo.allowed, echo.enforcing, echo.denied), (0b11, 0b01, true, 2));
    assert_eq!(p.interfaces[0].methods.unwrap().allowed, 1 << 3);
}

#[test]
fn an_enforced_agent_that_restarts_keeps_its_profile() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);

    m.stop(2);
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::NotRunning);
    assert_eq!(profile_of(&mut s, &mut m, &mut own, 4, "alpha"), Err(ServiceError::Busy), "not running");

    // Restarted: noticed within RETRY_PASSES, and the kernel mask is back before any warm-up.
    m.start(2);
    for _ in 0..RETRY_PASSES {
        tick(&mut s, &mut m, &mut own);
    }
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert_eq!(m.prog(2).allowed, profile::mask(profile::CALL));
    assert!(m.reports.last().unwrap().starts_with("shaper: alpha restarted: its enforced profile applies again"));
}

#[test]
fn a_learning_agent_that_restarts_learns_from_its_new_start() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.syscalls(2, WARMUP - 1, profile::CALL).unwrap();
    // Stopped and started again between two looks: that run ended, so the shaper notices.
    m.stop(2);
    m.start(2);
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Learning);
    m.syscalls(2, 1, profile::YIELD).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Learning, "the new thread has made one syscall");
    m.syscalls(2, WARMUP, profile::YIELD).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(m.prog(2).allowed, profile::mask(profile::YIELD));
}

#[test]
fn programs_started_later_are_found() {
    let (mut m, mut s, mut own) = setup();
    m.stop(4);
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 4), Mode::NotRunning);
    assert!(s.agents()[3].name.is_none(), "Studio names running programs only");
    m.start(4);
    m.syscalls(4, WARMUP, profile::CALL).unwrap();
    for _ in 0..RETRY_PASSES + 1 {
        tick(&mut s, &mut m, &mut own);
    }
    assert_eq!(mode(&s, 4), Mode::Enforcing);
    assert_eq!(s.agents()[3].name.as_deref(), Some("beta"));
}

#[test]
fn requests_enforce_and_relearn_on_demand() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.syscalls(2, 5, profile::CALL).unwrap();
    m.call_echo(2, 2);
    let status = |s: &mut Shaper, m: &mut Model, own: &mut Profiles, id| s.request(id, Ask::Status, m, own);
    assert_eq!(status(&mut s, &mut m, &mut own, 2), Ok(Answer::Mode(Mode::Learning)));
    assert_eq!(status(&mut s, &mut m, &mut own, 1), Ok(Answer::Mode(Mode::Unshaped)));
    assert_eq!(status(&mut s, &mut m, &mut own, 99), Ok(Answer::Mode(Mode::Unshaped)));

    // An agent cannot change its own profile.
    assert_eq!(s.request(2, Ask::Enforce("alpha".into()), &mut m, &mut own), Err(ServiceError::Denied));
    assert_eq!(s.request(2, Ask::Learn("alpha".into()), &mut m, &mut own), Err(ServiceError::Denied));
    // An admin program can (the shell).
    let Ok(Answer::Profile(p)) = s.request(4, Ask::Enforce("alpha".into()), &mut m, &mut own) else { panic!() };
    assert_eq!((p.mode, p.kernel_allowed), (Mode::Enforcing, profile::mask(profile::CALL)));
    // The server's half: as it reports it, once it has pulled the request.
    assert!(!p.interfaces[1].methods.is_some_and(|e| e.enforcing), "not pulled yet");
    assert_eq!(pump(&mut s, &mut m), 2, "its Enforce, then the profile's Get");
    let p = profile_of(&mut s, &mut m, &mut own, 4, "alpha").unwrap();
    assert_eq!(p.interfaces[1].methods.unwrap().allowed, 1 << 2);
    assert_eq!(s.agents()[1].methods[1], Some(1 << 2));
    assert!(m.reports[0].contains("(asked by beta)"), "{:?}", m.reports);
    assert_eq!(status(&mut s, &mut m, &mut own, 2), Ok(Answer::Mode(Mode::Enforcing)));

    // Back to learning: the kernel allows everything, the servers forget, a new window opens.
    let Ok(Answer::Profile(p)) = s.request(4, Ask::Learn("alpha".into()), &mut m, &mut own) else { panic!() };
    assert_eq!(
        (p.mode, p.kernel_allowed, p.window_start),
        (Mode::Learning, profile::ALL, 6),
        "5 syscalls and one call to echo"
    );
    assert_eq!(s.agents()[1].methods, vec![None, None]);
    pump(&mut s, &mut m);
    let p = profile_of(&mut s, &mut m, &mut own, 4, "alpha").unwrap();
    let echo = p.interfaces[1].methods.unwrap();
    assert_eq!((echo.used, echo.enforcing), (0, false));
    assert_eq!(m.reports.last().unwrap(), "shaper: alpha back to learning: asked by beta");
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Learning, "the window counts from the relearn");
    m.syscalls(2, WARMUP, profile::RECV).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(m.prog(2).allowed, profile::mask(profile::CALL) | profile::mask(profile::RECV));

    // Mistakes.
    assert_eq!(s.request(4, Ask::Profile("nobody".into()), &mut m, &mut own), Err(ServiceError::NotFound));
    assert_eq!(s.request(4, Ask::Enforce("echo".into()), &mut m, &mut own), Err(ServiceError::InvalidArgument));
    assert_eq!(s.request(4, Ask::Learn("shaper".into()), &mut m, &mut own), Err(ServiceError::InvalidArgument));
    m.stop(2);
    tick(&mut s, &mut m, &mut own);
    assert_eq!(s.request(4, Ask::Learn("alpha".into()), &mut m, &mut own), Err(ServiceError::Busy));
    let p = profile_of(&mut s, &mut m, &mut own, 4, "echo").unwrap();
    assert_eq!(p.mode, Mode::Unshaped);
}

#[test]
fn a_server_that_restarted_is_told_again() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.call_echo(2, 4);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    // The echo server restarts: a fresh table, everyone learning; it is down for a while.
    m.servers[1] = None;
    let passes = RECONCILE_PASSES;
    for _ in 0..passes {
        tick(&mut s, &mut m, &mut own);
    }
    m.servers[1] = Some(Profiles::new());
    assert_eq!(m.call_echo(2, 1), Verdict::Allow, "the new server has not been told yet");
    for _ in 0..passes {
        tick(&mut s, &mut m, &mut own);
    }
    let p = m.servers[1].as_ref().unwrap().get(2).unwrap();
    assert_eq!((p.enforcing, p.allowed), (true, 1 << 4), "the learned mask, not what it saw since");
    assert_eq!(m.call_echo(2, 1), Verdict::Deny { report: true });
}

#[test]
fn a_restarted_shaper_adopts_the_profiles_in_force() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.call_echo(2, 0);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    // A new shaper (it knows no run, its own table is empty).
    let mut s = Shaper::new(SHAPER, "shaper", WARMUP, "shaper", &[("echo", ECHO)]);
    let mut own = Profiles::new();
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert_eq!(s.agents()[1].methods, vec![None, Some(1)]);
    assert_eq!(m.reports.len(), 1, "no second enforcement");
}

#[test]
fn without_the_privilege_nothing_is_shaped() {
    let (mut m, mut s, mut own) = setup();
    m.studio_refuses = true;
    for _ in 0..RETRY_PASSES {
        tick(&mut s, &mut m, &mut own);
    }
    assert!(s.agents().is_empty());
    assert_eq!(m.reports.len(), 1);
    assert!(m.reports[0].contains("no `profiles` privilege"));
    assert_eq!(s.request(2, Ask::Status, &mut m, &mut own), Ok(Answer::Mode(Mode::Unshaped)));
}

/// A hostile server (here the echo server) never pulls the shaper's requests: the shaper never
/// waits for it. Enforcement goes on (the kernel half), the shell's `PROFILE` is answered, what
/// the shaper keeps for the server stays bounded however often it is asked, and nobody but the
/// provider can take or answer the interface's requests.
#[test]
fn a_server_that_never_pulls_stalls_nothing() {
    let (mut m, mut s, mut own) = setup();
    s.tick(&mut m, &mut own);
    m.call_echo(2, 0);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    s.tick(&mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert_eq!(m.prog(2).allowed, profile::mask(profile::CALL), "the kernel half is enforced");
    assert!(m.reports[0].ends_with("`echo` told"), "{}", m.reports[0]);
    assert!(m.signals.iter().all(|i| i == "echo") && !m.signals.is_empty(), "Studio was asked to signal it");
    // The shell asks again and again: answered each time, the server's half unknown.
    for _ in 0..3 * MAX_QUEUED {
        let p = profile_of(&mut s, &mut m, &mut own, 4, "alpha").unwrap();
        assert_eq!((p.mode, p.interfaces[1].methods), (Mode::Enforcing, None));
    }
    for _ in 0..2 * RECONCILE_PASSES {
        s.tick(&mut m, &mut own);
    }
    let r = &s.remotes()[0];
    assert!(r.queue.len() <= MAX_QUEUED, "{} requests kept", r.queue.len());
    assert_eq!(r.queue.len(), 2, "the same requests are kept once: alpha's Enforce and Get");

    // Others cannot take its requests or answer them: another server, an agent, a forged id,
    // the provider through a client's capability, the right program naming an interface it does
    // not provide.
    let callers = [
        (PULL | SHAPER, "echo"),
        (PULL | 2, "echo"),
        (2, "echo"),
        (PULL | 4, "echo"),
        (PULL | 99, "echo"),
        (ECHO, "echo"),
        (PULL | ECHO, "secmem"),
    ];
    for (caller, interface) in callers {
        let forged = Applied { badge: 2, profile: Some(Default::default()) };
        let pull = Pull { interface: interface.into(), done: Some(forged) };
        assert_eq!(s.request(caller, Ask::Pull(pull), &mut m, &mut own), Err(ServiceError::Denied));
    }
    assert_eq!(s.remotes()[0].queue.len(), 2);
    assert_eq!(s.remotes()[0].known(2), None, "no forged outcome was taken");
    // An outcome the server sends for a request it was never handed is ignored too.
    let stray = Pull { interface: "echo".into(), done: Some(Applied { badge: 4, profile: Some(Default::default()) }) };
    let Ok(Answer::Control(Some(first))) = s.request(PULL | ECHO, Ask::Pull(stray), &mut m, &mut own) else { panic!() };
    assert_eq!(s.remotes()[0].known(4), None);
    // A server that takes a request and never answers it gets it again at its next pull.
    let again = Pull { interface: "echo".into(), done: None };
    let Ok(Answer::Control(Some(second))) = s.request(PULL | ECHO, Ask::Pull(again), &mut m, &mut own) else {
        panic!()
    };
    assert_eq!(first, second);
    // Once it pulls for real, its half is enforced and shown.
    m.signals.push("echo".into());
    pump(&mut s, &mut m);
    assert_eq!(m.call_echo(2, 1), Verdict::Deny { report: true });
    let p = profile_of(&mut s, &mut m, &mut own, 4, "alpha").unwrap();
    assert_eq!(p.interfaces[1].methods.map(|e| (e.allowed, e.enforcing)), Some((1, true)));
}

/// A server that restarted forgets its clients' profiles: the shaper notices from its reports
/// and tells it again, with the mask it had learned.
#[test]
fn a_server_that_forgot_is_told_again_when_it_reports() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.call_echo(2, 3);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(s.agents()[1].methods[1], Some(1 << 3));
    m.servers[1] = Some(Profiles::new());
    // The next PROFILE asks it; its answer says learning; the shaper tells it again.
    let _ = profile_of(&mut s, &mut m, &mut own, 4, "alpha").unwrap();
    pump(&mut s, &mut m);
    let p = m.servers[1].as_ref().unwrap().get(2).unwrap();
    assert_eq!((p.enforcing, p.allowed), (true, 1 << 3));
}

#[test]
fn ticks_come_from_unshaped_programs_only() {
    let (mut m, mut s, mut own) = setup();
    // The ticker (5): a server that provides nothing the shaper shapes.
    m.programs.push(program("ticker", true, false));
    m.syscalls(2, WARMUP - 1, profile::CALL).unwrap();
    // An agent cannot make the shaper look (nor end its own window early that way).
    assert_eq!(s.request(2, Ask::Tick, &mut m, &mut own), Err(ServiceError::Denied));
    assert_eq!(s.request(99, Ask::Tick, &mut m, &mut own), Err(ServiceError::Denied));
    assert_eq!(mode(&s, 2), Mode::Learning);
    assert_eq!(m.prog(2).window, Some(1), "armed when first seen, for what is left of the warm-up");
    // Nor can a server the shaper shapes (its capability to the shaper is for pulling), with
    // its pull capability or, were it a client, with its id; a pull capability asks nothing else.
    assert_eq!(s.request(ECHO, Ask::Tick, &mut m, &mut own), Err(ServiceError::Denied));
    for ask in [Ask::Tick, Ask::Status, Ask::Profile("echo".into()), Ask::Learn("alpha".into())] {
        assert_eq!(s.request(PULL | ECHO, ask, &mut m, &mut own), Err(ServiceError::Denied));
    }
    assert_eq!(mode(&s, 2), Mode::Learning);
    // Another server (the ticker is one) can.
    m.syscalls(2, 1, profile::CALL).unwrap();
    assert_eq!(s.request(5, Ask::Tick, &mut m, &mut own), Ok(Answer::Done));
    assert_eq!(mode(&s, 2), Mode::Enforcing);
}

#[test]
fn a_new_run_is_not_mistaken_for_the_one_the_shaper_knew() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    let first = s.agents()[1].thread.unwrap();
    assert_eq!(first, Thread { id: 2, run: 1 });
    // alpha stops and starts again before the shaper looks: a change naming the run it knew
    // never reaches the new one (Studio answers `Busy`).
    m.stop(2);
    m.start(2);
    m.syscalls(2, 3, profile::CALL).unwrap();
    assert_eq!(m.set_kernel_allowed(first, 0), Err(ServiceError::Busy));
    assert_eq!(m.prog(2).allowed, profile::ALL);
    // Its next request makes the shaper see the new run, whose window starts from its start.
    assert_eq!(s.request(2, Ask::Status, &mut m, &mut own), Ok(Answer::Mode(Mode::Learning)));
    assert_eq!(s.agents()[1].thread, Some(Thread { id: 2, run: 2 }));
    assert_eq!(m.prog(2).window, Some(WARMUP - 3));
    m.syscalls(2, WARMUP, profile::YIELD).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(m.prog(2).allowed, profile::mask(profile::CALL) | profile::mask(profile::YIELD));
    assert_eq!(m.changes_refused, 0, "the shaper keeps within Studio's rules");
}

#[test]
fn a_stopped_agent_is_noticed_when_asked_about() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.stop(2);
    // No tick since it stopped: the request itself finds out.
    assert_eq!(profile_of(&mut s, &mut m, &mut own, 4, "alpha"), Err(ServiceError::Busy));
    assert_eq!(s.request(4, Ask::Enforce("alpha".into()), &mut m, &mut own), Err(ServiceError::Busy));
    // Started again: found by the next request, not only by the next retry.
    m.start(2);
    let p = profile_of(&mut s, &mut m, &mut own, 4, "alpha").unwrap();
    assert_eq!(p.mode, Mode::Learning);
    // Servers show their counters, unshaped.
    let p = profile_of(&mut s, &mut m, &mut own, 4, "echo").unwrap();
    assert_eq!(p.mode, Mode::Unshaped);
}

/// A hostile agent (`gamma`, no `admin`) against an enforced victim (`alpha`): every attempt to
/// read or change another program's profile is refused by Studio's rule and logged, the victim's
/// denied operation stays denied, and the admin (`beta`, the shell) still may.
#[test]
fn only_studio_decides_who_reads_or_changes_a_profile() {
    let (mut m, mut s, mut own) = setup();
    m.programs.push(program("gamma", false, false));
    tick(&mut s, &mut m, &mut own);
    // The victim, alpha, warms up and is enforced; NB_RECV was never used, so it is denied.
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert_eq!(m.syscalls(2, 1, profile::NB_RECV), Err(Error::Denied));
    // The attacker, gamma (5), is still learning.
    assert_eq!(mode(&s, 5), Mode::Learning);

    for ask in [Ask::Learn("alpha".into()), Ask::Enforce("alpha".into()), Ask::Profile("alpha".into())] {
        assert_eq!(s.request(5, ask.clone(), &mut m, &mut own), Err(ServiceError::Denied), "{ask:?}");
    }
    // Enforcing another program early (beta, learning), reading the admin's profile, and names
    // that do not exist: refused alike (a refused caller cannot probe which programs exist).
    assert_eq!(s.request(5, Ask::Enforce("beta".into()), &mut m, &mut own), Err(ServiceError::Denied));
    assert_eq!(s.request(5, Ask::Profile("beta".into()), &mut m, &mut own), Err(ServiceError::Denied));
    assert_eq!(s.request(5, Ask::Learn("nobody".into()), &mut m, &mut own), Err(ServiceError::Denied));
    assert_eq!(m.refusals.len(), 6, "{:?}", m.refusals);
    assert!(m.refusals[0].starts_with("refuse gamma: relearning the profile of alpha through the shaper: "));
    assert!(m.refusals.iter().all(|r| r.contains("needs the `admin` privilege")), "{:?}", m.refusals);
    // Nothing changed: the victim is enforced and its denied operation still denied; beta learns.
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert_eq!(m.syscalls(2, 1, profile::NB_RECV), Err(Error::Denied));
    assert_eq!(m.prog(2).allowed, profile::mask(profile::CALL));
    assert_eq!(mode(&s, 4), Mode::Learning);
    assert!(!m.reports.iter().any(|r| r.contains("asked by gamma")), "{:?}", m.reports);

    // A program reads its own profile without asking Studio, and cannot change its own mode.
    let p = profile_of(&mut s, &mut m, &mut own, 5, "gamma").unwrap();
    assert_eq!((p.agent.as_str(), p.mode), ("gamma", Mode::Learning));
    assert_eq!(m.refusals.len(), 6);
    assert_eq!(s.request(2, Ask::Learn("alpha".into()), &mut m, &mut own), Err(ServiceError::Denied));
    assert!(m.refusals.last().unwrap().contains("no program changes its own syscall profile"));
    assert_eq!(mode(&s, 2), Mode::Enforcing);

    // The admin may do all of it.
    assert_eq!(profile_of(&mut s, &mut m, &mut own, 4, "alpha").unwrap().mode, Mode::Enforcing);
    assert!(matches!(s.request(4, Ask::Learn("alpha".into()), &mut m, &mut own), Ok(Answer::Profile(_))));
    assert_eq!(mode(&s, 2), Mode::Learning);
    assert_eq!(m.syscalls(2, 1, profile::NB_RECV), Ok(()));
    // Studio refused the shaper no change: the relearn's widening was the one Studio allowed.
    assert_eq!(m.changes_refused, 0);
    assert!(!m.prog(2).relearn, "used up");
}

#[test]
fn an_agent_that_never_lets_the_shaper_look_is_enforced_on_time_by_the_kernel() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(m.prog(2).window, Some(WARMUP), "the window is armed at the first look");
    assert_eq!(m.prog(4).window, Some(WARMUP));
    assert_eq!(m.prog(1).window, None, "servers get none");
    // It spins: WARMUP syscalls, no look in between.
    m.syscalls(2, WARMUP - 1, profile::CALL).unwrap();
    m.call_echo(2, 0);
    assert_eq!(m.prog(2).allowed, profile::ALL, "the last learned syscall is still learning");
    // The next syscall: the kernel narrows first, then denies what was never used.
    assert_eq!(m.syscalls(2, 1, profile::YIELD), Err(Error::Denied));
    assert_eq!(m.syscalls(2, 1, profile::CALL), Ok(()));
    let call = profile::mask(profile::CALL);
    assert_eq!(m.prog(2).allowed, call);
    assert!(m.reports.is_empty(), "nobody has looked yet");
    // The shaper's next look reports the kernel's decision and freezes the methods; it never
    // widens the kernel's mask to what the agent tried since (YIELD is in `used` now).
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert_eq!(m.prog(2).allowed, call);
    assert_eq!(
        m.reports,
        vec![
            "shaper: enforce alpha's profile (warm-up over after 64 syscalls): kernel call; `shaper` methods none; \
              `echo` told"
        ]
    );
    assert_eq!(m.call_echo(2, 1), Verdict::Deny { report: true });
    tick(&mut s, &mut m, &mut own);
    assert_eq!(m.reports.len(), 1, "reported once");
}

/// The kernel tells Studio when an agent's learning window ends, and Studio signals the shaper
/// before it resumes the agent: the shaper settles the agent at that signal (no tick, no idle
/// moment), and the servers, which outrank every agent, pull their half before it runs again.
#[test]
fn the_end_of_a_window_is_settled_at_studio_s_signal_methods_included() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.syscalls(2, WARMUP - 1, profile::CALL).unwrap();
    m.call_echo(2, 0);
    // The next syscall ends the window (the kernel narrows; the thread faults to Studio).
    assert_eq!(m.syscalls(2, 1, profile::CALL), Ok(()));
    assert_eq!(m.prog(2).window, None);
    // Studio's signal; then the servers' pulls (they outrank the agent); no tick in between.
    s.program_started(&mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert!(pump(&mut s, &mut m) >= 1);
    assert_eq!(m.call_echo(2, 1), Verdict::Deny { report: true }, "its methods are enforced before it runs again");
    assert_eq!(m.call_echo(2, 0), Verdict::Allow);
    assert_eq!(m.reports.len(), 1);
    assert!(m.reports[0].starts_with("shaper: enforce alpha's profile (warm-up over after 64 syscalls)"));
}

#[test]
fn a_program_started_later_is_armed_at_studio_s_signal_before_it_runs() {
    let (mut m, mut s, mut own) = setup();
    m.stop(4);
    tick(&mut s, &mut m, &mut own);
    m.start(4);
    // Studio's signal: the shaper looks at once; no tick comes while beta spins.
    s.program_started(&mut m, &mut own);
    assert_eq!((mode(&s, 4), m.prog(4).window), (Mode::Learning, Some(WARMUP)));
    m.syscalls(4, WARMUP, profile::YIELD).unwrap();
    assert_eq!(m.syscalls(4, 1, profile::SEND), Err(Error::Denied));
    assert_eq!(m.prog(4).allowed, profile::mask(profile::YIELD));
    // A signal with nothing new changes nothing (a window already armed is kept, not moved).
    m.stop(2);
    m.start(2);
    m.syscalls(2, 3, profile::CALL).unwrap();
    s.program_started(&mut m, &mut own);
    s.program_started(&mut m, &mut own);
    assert_eq!(m.prog(2).window, Some(WARMUP - 3), "counted from the thread's start");
    // A restarted enforced agent gets its mask back at the signal, not at an idle moment.
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 4), Mode::Enforcing);
    m.stop(4);
    m.start(4);
    s.program_started(&mut m, &mut own);
    assert_eq!((m.prog(4).allowed, m.prog(4).window), (profile::mask(profile::YIELD), None));
}

/// Order matters between a client's requests: `Learn`, `Enforce`, `Learn` for one agent, asked
/// before the server pulls, end with the agent learning in the server as in the shaper (a request
/// equal to one queued earlier is queued again when something else came between).
#[test]
fn a_clients_requests_keep_their_order_in_the_queue() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.call_echo(2, 2);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert_eq!(m.call_echo(2, 2), Verdict::Allow);
    // The admin (the shell, three commands before the echo server gets to run): relearn,
    // enforce, relearn.
    for ask in [Ask::Learn("alpha".into()), Ask::Enforce("alpha".into()), Ask::Learn("alpha".into())] {
        assert!(matches!(s.request(4, ask, &mut m, &mut own), Ok(Answer::Profile(_))));
    }
    assert_eq!(mode(&s, 2), Mode::Learning, "the shaper's last word: learning");
    pump(&mut s, &mut m);
    // What the echo server does must agree: alpha is learning, its method is allowed.
    let echo = m.servers[1].as_ref().unwrap().get(2).unwrap();
    assert!(!echo.enforcing, "echo enforces alpha (allowed {:#x}) while the shaper says learning", echo.allowed);
    assert_eq!(m.call_echo(2, 2), Verdict::Allow);
}

/// A shaped server that carries out an `Enforce` and restarts before it reports the outcome has
/// lost what the agent used there: the shaper cannot get that mask back. It does not replay the
/// `Enforce` on the new run's empty table as if nothing happened, nor leave the agent learning
/// there (a crash must not open a profile): the agent is allowed none of that server's methods,
/// and the log says so and how to learn them again.
#[test]
fn a_server_restarted_mid_request_fails_closed_and_says_so() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.call_echo(2, 2);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    // The window ends; the echo server pulls the Enforce, carries it out, and its run ends
    // before its next pull (the one that would bring the outcome).
    s.tick(&mut m, &mut own);
    m.signals.clear();
    let pull = Pull { interface: "echo".into(), done: None };
    let Ok(Answer::Control(Some(req))) = s.request(PULL | ECHO, Ask::Pull(pull), &mut m, &mut own) else { panic!() };
    assert_eq!(m.servers[1].as_mut().unwrap().apply(&req).map(|p| p.allowed), Ok(1 << 2));
    m.stop(ECHO);
    m.start(ECHO);
    m.servers[1] = Some(Profiles::new());
    m.call_echo(2, 2);
    // Studio's start signal: the shaper notices the new run and tells it.
    s.program_started(&mut m, &mut own);
    assert_eq!(pump(&mut s, &mut m), 1, "one Set, no replayed Enforce");
    let p = m.servers[1].as_ref().unwrap().get(2).unwrap();
    assert_eq!((p.enforcing, p.allowed), (true, 0), "enforced, allowing nothing it did not report");
    assert_eq!(m.call_echo(2, 2), Verdict::Deny { report: true });
    assert_eq!(
        m.reports.last().unwrap(),
        "shaper: `echo` restarted before it reported alpha's methods: it allows alpha none (`learn alpha` learns \
         them again)"
    );
    // The admin relearns it: learning everywhere again, then enforced with what it uses.
    assert!(matches!(s.request(4, Ask::Learn("alpha".into()), &mut m, &mut own), Ok(Answer::Profile(_))));
    pump(&mut s, &mut m);
    assert_eq!(m.call_echo(2, 2), Verdict::Allow);
}

/// A shaped server that restarts forgets its clients' method profiles. Studio signals the
/// shaper at every program start, the server's included: the shaper notices the server's new run
/// and has it told every enforced agent's mask at once, not at its reconciliation (which comes
/// only when the system is idle).
#[test]
fn a_restarted_server_enforces_again_from_its_start() {
    let (mut m, mut s, mut own) = setup();
    tick(&mut s, &mut m, &mut own);
    m.call_echo(2, 0);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(m.call_echo(2, 1), Verdict::Deny { report: true });
    // The echo server restarts; Studio signals the shaper, as at every program start.
    m.stop(ECHO);
    m.start(ECHO);
    m.servers[1] = Some(Profiles::new());
    s.program_started(&mut m, &mut own);
    pump(&mut s, &mut m);
    // A few looks (fewer than a reconciliation's period), as an idle moment or two gives.
    for _ in 0..3 {
        tick(&mut s, &mut m, &mut own);
    }
    let verdict = m.call_echo(2, 1);
    assert!(matches!(verdict, Verdict::Deny { .. }), "alpha's denied method works on the new run: {verdict:?}");
}

/// A server providing two shaped interfaces has one notification, so Studio's two
/// `CONTROL_SIGNAL`s for them would be one word, pulled for one interface only: the other's
/// requests would wait for good while the shaper said `Enforcing`. The shaper shapes the first
/// interface of each server only, and says which it leaves out.
#[test]
fn only_one_interface_of_a_server_is_shaped_and_the_log_says_so() {
    let mut m = Model::new();
    let mut s = Shaper::new(SHAPER, "shaper", WARMUP, "shaper", &[("echo", ECHO), ("echo2", ECHO)]);
    let mut own = Profiles::new();
    assert_eq!(s.interfaces(), ["shaper", "echo"]);
    tick(&mut s, &mut m, &mut own);
    assert_eq!(
        m.reports,
        ["shaper: `echo2` is not shaped: its server (program 1) provides `echo` too, and a server pulls the requests \
          of one interface per signal"]
    );
    m.call_echo(2, 0);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert_eq!(m.call_echo(2, 1), Verdict::Deny { report: true }, "the shaped interface is enforced");
    assert!(s.remotes().iter().all(|r| r.queue.is_empty()), "nothing waits for good");
}

/// The keeper's id in the tests that add it: a server with the `keeper` privilege, as the
/// journal is.
const KEEPER: u64 = 5;

fn program(name: &'static str, server: bool, keeper: bool) -> Program {
    Program {
        name,
        server,
        admin: false,
        keeper,
        running: true,
        run: 1,
        relearn: false,
        syscalls: 0,
        used: 0,
        allowed: profile::ALL,
        window: None,
    }
}

/// Page `index` of `SAVED` for `caller`.
fn page(s: &mut Shaper, m: &mut Model, own: &mut Profiles, caller: u64, index: u32) -> Result<SavedPage, ServiceError> {
    match s.request(caller, Ask::Saved(index), m, own)? {
        Answer::Kept(p) => Ok(p),
        other => panic!("{other:?}"),
    }
}

/// Every profile `SAVED` hands `caller`, paging as the journal does; every page carries the
/// digest of the list it pages through.
fn saved(s: &mut Shaper, m: &mut Model, own: &mut Profiles, caller: u64) -> Result<Vec<Kept>, ServiceError> {
    let mut all = Vec::new();
    let first = page(s, m, own, caller, 0)?.digest;
    for index in 0.. {
        let p = page(s, m, own, caller, index)?;
        assert_eq!(p.digest, first, "nothing changed while paging");
        match p.kept {
            Some(k) => all.push(k),
            None => {
                assert_eq!(Kept::digest(&all), first, "the digest is the list's");
                return Ok(all);
            }
        }
    }
    unreachable!()
}

fn restore(s: &mut Shaper, m: &mut Model, own: &mut Profiles, caller: u64, k: &Kept) -> Result<Restored, ServiceError> {
    match s.request(caller, Ask::Restore(k.clone()), m, own)? {
        Answer::Restored(r) => Ok(r),
        other => panic!("{other:?}"),
    }
}

/// Boot 1: alpha learns (calls, echo method 0) and is enforced; the keeper reads what is worth
/// keeping. Boot 2 (a new shaper, the same programs): the keeper hands it back before alpha has
/// started, and alpha is enforced from its first syscall, both halves; beta, already running and
/// learning, is narrowed at once. What boot 2 would keep is what boot 1 kept.
#[test]
fn profiles_kept_by_one_boot_apply_at_the_next_from_the_first_syscall() {
    let (mut m, mut s, mut own) = setup();
    m.programs.push(program("keeper", true, true));
    tick(&mut s, &mut m, &mut own);
    assert_eq!(m.call_echo(2, 0), Verdict::Allow);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    m.syscalls(4, 3, profile::YIELD).unwrap();
    s.tick(&mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    // Until the echo server has reported alpha's methods, they are unknown.
    let before = saved(&mut s, &mut m, &mut own, KEEPER).unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].methods, vec![("shaper".into(), Some(0)), ("echo".into(), None)]);
    pump(&mut s, &mut m);
    let kept = saved(&mut s, &mut m, &mut own, KEEPER).unwrap();
    let call = profile::mask(profile::CALL);
    let alpha = Kept {
        agent: "alpha".into(),
        kernel: call,
        methods: vec![("shaper".into(), Some(0)), ("echo".into(), Some(1))],
    };
    assert_eq!(kept, vec![alpha.clone()], "beta is still learning: nothing of it is kept");

    // Boot 2: alpha has not started yet; beta runs and learns.
    let (mut m, mut s, mut own) = setup();
    m.programs.push(program("keeper", true, true));
    m.stop(2);
    tick(&mut s, &mut m, &mut own);
    assert_eq!(mode(&s, 2), Mode::NotRunning);
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &alpha), Ok(Restored::AtStart));
    assert_eq!(saved(&mut s, &mut m, &mut own, KEEPER).unwrap(), vec![alpha.clone()], "kept while it waits");
    m.start(2);
    s.program_started(&mut m, &mut own);
    pump(&mut s, &mut m);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    assert_eq!(m.prog(2).syscalls, 0, "enforced before its first syscall");
    assert_eq!(m.prog(2).allowed, call);
    assert_eq!(m.syscalls(2, 1, profile::YIELD), Err(Error::Denied), "never learned: denied at once");
    assert_eq!(m.call_echo(2, 0), Verdict::Allow);
    assert_eq!(m.call_echo(2, 1), Verdict::Deny { report: true });
    assert_eq!(own.check(2, 3), Verdict::Deny { report: true }, "the shaper's own methods too");
    assert!(
        m.reports.iter().any(|r| r
            == "shaper: alpha's profile kept by an earlier boot applies: kernel call; \
             `shaper` methods none; `echo` methods 0"),
        "{:?}",
        m.reports
    );
    assert_eq!(saved(&mut s, &mut m, &mut own, KEEPER).unwrap(), vec![alpha.clone()], "the same profile again");

    // Beta runs, learning: a kept profile narrows it now, and its learning window is over.
    m.syscalls(4, 5, profile::CALL).unwrap();
    let beta = Kept {
        agent: "beta".into(),
        kernel: call,
        methods: vec![("echo".into(), Some(0)), ("shaper".into(), Some(1 << 3))],
    };
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &beta), Ok(Restored::Now));
    assert_eq!((m.prog(4).allowed, m.prog(4).window), (call, None));
    assert_eq!(mode(&s, 4), Mode::Enforcing);
    assert_eq!(own.check(4, 3), Verdict::Allow);
    assert_eq!(m.changes_refused, 0, "nothing the shaper did was wider than in force");
    for _ in 0..4 {
        tick(&mut s, &mut m, &mut own);
    }
    assert_eq!(m.prog(4).allowed, call, "no later look widens it");
}

/// The hostile side of keeping profiles: only a program with the `keeper` privilege reads or
/// restores them (not an agent, not the admin, not a server's pull capability), and a restore
/// never reaches past what it is for: never an agent this boot enforced or relearned, never a
/// server, the shaper or the keeper itself, never with interfaces other than those shaped, never
/// twice for one agent, never more than `MAX_PENDING` waiting.
#[test]
fn only_a_keeper_keeps_profiles_and_a_restore_only_narrows_a_learning_agent() {
    let (mut m, mut s, mut own) = setup();
    m.programs.push(program("keeper", true, true));
    // Program 6, not running yet: a server whose name the shaper does not know until it runs.
    m.programs.push(program("later", true, false));
    m.stop(6);
    tick(&mut s, &mut m, &mut own);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    pump(&mut s, &mut m);
    assert_eq!(mode(&s, 2), Mode::Enforcing);
    let call = profile::mask(profile::CALL);
    let kept = |agent: &str, kernel| Kept {
        agent: agent.into(),
        kernel,
        methods: vec![("shaper".into(), Some(u64::MAX)), ("echo".into(), Some(u64::MAX))],
    };

    // Without the privilege: refused, whoever asks, before anything is looked at.
    for caller in [2, 4, ECHO, PULL | ECHO, 99] {
        assert_eq!(s.request(caller, Ask::Saved(0), &mut m, &mut own), Err(ServiceError::Denied), "{caller}");
        let widen = kept("alpha", profile::ALL);
        assert_eq!(s.request(caller, Ask::Restore(widen), &mut m, &mut own), Err(ServiceError::Denied), "{caller}");
    }
    assert!(m.refusals.iter().all(|r| r.contains("needs the `keeper` privilege")), "{:?}", m.refusals);
    assert_eq!(m.refusals.len(), 6, "the pull capability and the unknown id never reach Studio: {:?}", m.refusals);

    // An agent this boot enforced keeps what it learned: a restore cannot widen it.
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &kept("alpha", profile::ALL)), Err(ServiceError::Busy));
    assert_eq!(m.prog(2).allowed, call);
    assert_eq!(m.syscalls(2, 1, profile::YIELD), Err(Error::Denied));
    // Nor one relearned this boot (the admin asked: what it learns now wins).
    assert!(matches!(s.request(4, Ask::Learn("alpha".into()), &mut m, &mut own), Ok(Answer::Profile(_))));
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &kept("alpha", call)), Err(ServiceError::Busy));
    // Servers, the shaper and the keeper itself are not shaped.
    for name in ["echo", "shaper", "keeper"] {
        let r = restore(&mut s, &mut m, &mut own, KEEPER, &kept(name, 0));
        assert_eq!(r, Err(ServiceError::InvalidArgument), "{name}");
    }
    // Interfaces other than exactly those shaped: the system changed; the agent learns again.
    let mut odd = kept("beta", call);
    for methods in [
        vec![("shaper".into(), Some(1))],
        vec![("shaper".into(), Some(1)), ("echo".into(), Some(1)), ("store".into(), Some(1))],
        vec![("shaper".into(), Some(1)), ("shaper".into(), None)],
        vec![("shaper".into(), Some(1)), ("secmem".into(), Some(1))],
    ] {
        odd.methods = methods;
        assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &odd), Err(ServiceError::InvalidArgument));
    }
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &kept("", 0)), Err(ServiceError::InvalidArgument));
    let long = "x".repeat(MAX_NAME + 1);
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &kept(&long, 0)), Err(ServiceError::InvalidArgument));
    assert_eq!(mode(&s, 4), Mode::Learning, "beta untouched by the refused restores");
    assert_eq!(m.prog(4).allowed, profile::ALL);

    // Programs not seen yet: held for them, once per name, at most MAX_PENDING.
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &kept("later", call)), Ok(Restored::AtStart));
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &kept("later", 0)), Err(ServiceError::Busy));
    for n in 1..MAX_PENDING {
        let r = restore(&mut s, &mut m, &mut own, KEEPER, &kept(&format!("p{n}"), 0));
        assert_eq!(r, Ok(Restored::AtStart));
    }
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &kept("one-more", 0)), Err(ServiceError::NoMemory));
    assert_eq!(saved(&mut s, &mut m, &mut own, KEEPER).unwrap().len(), MAX_PENDING);
    // A held profile whose program turns out to be a server is dropped, and the log says so.
    m.start(6);
    for _ in 0..RETRY_PASSES {
        tick(&mut s, &mut m, &mut own);
    }
    assert!(m.reports.iter().any(|r| r.contains("the profile kept for later is dropped")), "{:?}", m.reports);
    assert_eq!(saved(&mut s, &mut m, &mut own, KEEPER).unwrap().len(), MAX_PENDING - 1);
    assert_eq!(m.changes_refused, 0);
}

/// A shaper that restarted adopts the profiles in force (the kernel mask; the remote servers'
/// methods as they report them) but its own interface's table is new: what alpha may call of
/// it is unknown. SAVED still keeps alpha, with that interface unknown, so the keeper does not
/// drop every adopted profile from the store.
#[test]
fn a_restarted_shaper_keeps_the_profiles_it_adopted() {
    let (mut m, mut s, mut own) = setup();
    m.programs.push(program("keeper", true, true));
    tick(&mut s, &mut m, &mut own);
    assert_eq!(m.call_echo(2, 0), Verdict::Allow);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    pump(&mut s, &mut m);
    assert_eq!(saved(&mut s, &mut m, &mut own, KEEPER).unwrap().len(), 1);

    let mut s = Shaper::new(SHAPER, "shaper", WARMUP, "shaper", &[("echo", ECHO)]);
    let mut own = Profiles::new();
    for _ in 0..RECONCILE_PASSES {
        tick(&mut s, &mut m, &mut own);
    }
    assert_eq!(mode(&s, 2), Mode::Enforcing, "adopted");
    let after = saved(&mut s, &mut m, &mut own, KEEPER).unwrap();
    let call = profile::mask(profile::CALL);
    let methods = vec![("shaper".into(), None), ("echo".into(), Some(1))];
    assert_eq!(after, vec![Kept { agent: "alpha".into(), kernel: call, methods }]);
}

/// SAVED pages by index over a list that can change between two pages (the shell's `learn`,
/// served in between): every page carries the list's digest, so a keeper sees the change and
/// reads again instead of keeping a list with an entry skipped.
#[test]
fn a_list_that_changes_while_it_is_paged_is_seen_to_change() {
    let (mut m, mut s, mut own) = setup();
    m.programs.push(program("keeper", true, true));
    m.programs.push(program("gamma", false, false));
    tick(&mut s, &mut m, &mut own);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    m.syscalls(6, WARMUP, profile::CALL).unwrap();
    tick(&mut s, &mut m, &mut own);
    pump(&mut s, &mut m);
    let all = saved(&mut s, &mut m, &mut own, KEEPER).unwrap();
    assert_eq!(all.iter().map(|k| k.agent.as_str()).collect::<Vec<_>>(), vec!["alpha", "gamma"]);

    let first = page(&mut s, &mut m, &mut own, KEEPER, 0).unwrap();
    assert!(matches!(s.request(4, Ask::Learn("alpha".into()), &mut m, &mut own), Ok(Answer::Profile(_))));
    let second = page(&mut s, &mut m, &mut own, KEEPER, 1).unwrap();
    assert_eq!(second.kept, None, "gamma moved to index 0: paging on alone would miss it");
    assert_ne!(first.digest, second.digest, "the change shows");
    let again = saved(&mut s, &mut m, &mut own, KEEPER).unwrap();
    assert_eq!(again.iter().map(|k| k.agent.as_str()).collect::<Vec<_>>(), vec!["gamma"]);
}

/// When a shaped server restarts between the `Enforce` and its outcome, the shaper fails closed
/// for this boot (alpha's methods there: none). That stand-in is not what alpha learned: it is
/// kept as unknown, and restored as unknown (fail-closed again, with what alpha has used when
/// the server takes the request), never as a learned "none".
#[test]
fn a_fail_closed_stand_in_is_kept_as_unknown() {
    let (mut m, mut s, mut own) = setup();
    m.programs.push(program("keeper", true, true));
    tick(&mut s, &mut m, &mut own);
    m.call_echo(2, 2);
    m.syscalls(2, WARMUP, profile::CALL).unwrap();
    s.tick(&mut m, &mut own);
    m.signals.clear();
    let pull = Pull { interface: "echo".into(), done: None };
    let Ok(Answer::Control(Some(req))) = s.request(PULL | ECHO, Ask::Pull(pull), &mut m, &mut own) else { panic!() };
    m.servers[1].as_mut().unwrap().apply(&req).unwrap();
    m.stop(ECHO);
    m.start(ECHO);
    m.servers[1] = Some(Profiles::new());
    s.program_started(&mut m, &mut own);
    pump(&mut s, &mut m);
    assert_eq!(m.call_echo(2, 2), Verdict::Deny { report: true }, "fail-closed in this boot, as designed");
    let kept = saved(&mut s, &mut m, &mut own, KEEPER).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].methods[1], ("echo".into(), None), "{kept:?}");

    // Restored at the next boot before alpha starts: that interface is enforced with what alpha
    // has used when the server takes the request, and stays unknown in what is kept.
    let (mut m, mut s, mut own) = setup();
    m.programs.push(program("keeper", true, true));
    m.stop(2);
    tick(&mut s, &mut m, &mut own);
    assert_eq!(restore(&mut s, &mut m, &mut own, KEEPER, &kept[0]), Ok(Restored::AtStart));
    m.start(2);
    s.program_started(&mut m, &mut own);
    pump(&mut s, &mut m);
    assert_eq!(m.call_echo(2, 2), Verdict::Deny { report: true }, "fail-closed");
    assert!(m.reports.iter().any(|r| r.contains("`echo` methods unknown (enforced as used)")), "{:?}", m.reports);
    assert_eq!(saved(&mut s, &mut m, &mut own, KEEPER).unwrap(), kept, "still unknown, not a learned none");
}
