//! Studio's authorisation table: for every method of the `studio` interface, the privilege the
//! caller needs and the targets it may name — as data ([`TABLE`]), checked by one function
//! ([`Rule::check`]) before the service does anything. A refusal names its rule, and the service
//! logs it with that rule (`docs/studio.md` shows the table; a host test keeps the two equal).
//!
//! The caller is who the kernel says it is: the badge of its Studio capability, which Studio
//! minted with the program's id. Nothing a caller sends can change who it is or what it holds.

use alloc::format;
use alloc::string::String;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::studio::{ShapeOp, id, may_shape};
use ozone_agent_sdk::protocol::system::Privilege;

/// What a request may be about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The caller itself only (its memory, its exit, its report): it names no other program.
    Caller,
    /// The system as a whole (all programs, the logs, memory, power).
    System,
    /// Any program of the description, the caller included.
    AnyProgram,
    /// Any program but the caller.
    OtherProgram,
    /// A program that may use an interface the caller provides (one of the caller's clients).
    ClientOfCaller,
    /// An interface the caller may use: in its description's `uses`, or granted and not revoked.
    UsableInterface,
    /// A program and an interface some program provides (or Studio's own).
    ProgramAndServedInterface,
    /// The caller itself, if it is the console server (the program Studio gave the `serial`
    /// device and the log signal).
    ConsoleServer,
    /// A change to a program's kernel syscall profile, which Studio makes on the program's own
    /// thread for the shaper: an agent only (servers are not shaped), never the caller, and
    /// never wider than the mask in force unless a relearn of that run was allowed.
    ShapedAgent,
    /// A syscall-profile operation, decided by the shaping rule
    /// ([`may_shape`]): its own profile may be read, another's needs `admin`.
    ShapeRule,
    /// The interfaces of the caller's own `uses` (all of them, or one it names).
    OwnUses,
}

impl Scope {
    /// How the documentation names the scope.
    pub const fn describe(self) -> &'static str {
        match self {
            Scope::Caller => "the caller itself",
            Scope::System => "the system",
            Scope::AnyProgram => "any program",
            Scope::OtherProgram => "any program but the caller",
            Scope::ClientOfCaller => "a client of the caller (uses an interface it provides)",
            Scope::UsableInterface => "an interface the caller may use",
            Scope::ProgramAndServedInterface => "any program, an interface some program provides",
            Scope::ConsoleServer => "the caller itself, if it is the console server (`serial` device)",
            Scope::ShapedAgent => {
                "an agent, not the caller; no wider than its profile in force, unless a relearn was allowed"
            }
            Scope::ShapeRule => {
                "its own profile: read; another's: `admin` (of the asker); every agent's, to keep across boots: `keeper`"
            }
            Scope::OwnUses => "the interfaces in the caller's `uses` (all, or one named)",
        }
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Rule {
    /// The method number (`protocol::studio::method`).
    pub method: u64,
    /// The method's name in the log and the documentation.
    pub name: &'static str,
    /// The privilege the caller needs, if any.
    pub needs: Option<Privilege>,
    /// What it may name.
    pub scope: Scope,
}

const fn rule(method: u64, name: &'static str, needs: Option<Privilege>, scope: Scope) -> Rule {
    Rule { method, name, needs, scope }
}

use Privilege::{Admin, Clients, Journal, Profiles, Vspaces};

/// The table: every method Studio serves is here, and nothing else is served.
pub const TABLE: &[Rule] = &[
    rule(id::LOOKUP, "LOOKUP", None, Scope::UsableInterface),
    rule(id::MY_MEMORY, "MY_MEMORY", None, Scope::Caller),
    rule(id::GROW_HEAP, "GROW_HEAP", None, Scope::Caller),
    rule(id::REPORT, "REPORT", None, Scope::Caller),
    rule(id::EXIT, "EXIT", None, Scope::Caller),
    rule(id::MY_SEED, "MY_SEED", None, Scope::Caller),
    rule(id::LIST, "LIST", Some(Admin), Scope::System),
    rule(id::CAPS, "CAPS", Some(Admin), Scope::AnyProgram),
    rule(id::GRANT, "GRANT", Some(Admin), Scope::ProgramAndServedInterface),
    rule(id::REVOKE, "REVOKE", Some(Admin), Scope::ProgramAndServedInterface),
    rule(id::KILL, "KILL", Some(Admin), Scope::OtherProgram),
    rule(id::START, "START", Some(Admin), Scope::AnyProgram),
    rule(id::LOG, "LOG", Some(Journal), Scope::System),
    rule(id::REPORTS, "REPORTS", Some(Admin), Scope::System),
    rule(id::MEMORY, "MEMORY", Some(Admin), Scope::System),
    rule(id::SHUTDOWN, "SHUTDOWN", Some(Admin), Scope::System),
    rule(id::TELEMETRY, "TELEMETRY", Some(Admin), Scope::AnyProgram),
    rule(id::WATCH, "WATCH", Some(Admin), Scope::AnyProgram),
    rule(id::ALLOW, "ALLOW", Some(Admin), Scope::AnyProgram),
    rule(id::RESUME, "RESUME", Some(Admin), Scope::AnyProgram),
    rule(id::FOLLOW, "FOLLOW", Some(Admin), Scope::AnyProgram),
    rule(id::VSPACE_OF, "VSPACE_OF", Some(Vspaces), Scope::ClientOfCaller),
    rule(id::PROFILE_OF, "PROFILE_OF", Some(Profiles), Scope::AnyProgram),
    rule(id::SET_PROFILE, "SET_PROFILE", Some(Profiles), Scope::ShapedAgent),
    rule(id::ARM_PROFILE, "ARM_PROFILE", Some(Profiles), Scope::ShapedAgent),
    rule(id::MAY_SHAPE, "MAY_SHAPE", Some(Profiles), Scope::ShapeRule),
    rule(id::FUND, "FUND", Some(Vspaces), Scope::ClientOfCaller),
    rule(id::FOLLOW_LOG, "FOLLOW_LOG", None, Scope::ConsoleServer),
    rule(id::SHAPED, "SHAPED", Some(Profiles), Scope::OwnUses),
    rule(id::CLIENT, "CLIENT", Some(Clients), Scope::ClientOfCaller),
    rule(id::REFUSED, "REFUSED", Some(Clients), Scope::ClientOfCaller),
];

/// The rule of `method`, if Studio serves it.
pub fn rule_of(method: u64) -> Option<&'static Rule> {
    TABLE.iter().find(|r| r.method == method)
}

/// Who is asking: its name and privileges, from its badge.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    pub name: &'a str,
    pub privileges: &'a [Privilege],
}

/// What a request names, as the service found it (the facts the rule needs, nothing more).
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// Nothing beyond the caller or the system.
    Nothing,
    /// A program of the description.
    Program {
        name: &'a str,
        /// It is the caller.
        is_caller: bool,
        /// It may use an interface the caller provides.
        client_of_caller: bool,
    },
    /// An interface, and whether the caller may use it now.
    Interface { name: &'a str, usable: bool },
    /// A program and an interface, and whether some program provides the interface (or it is
    /// Studio's own).
    ProgramInterface { program: &'a str, interface: &'a str, served: bool },
    /// The caller, and whether it is the console server.
    Console { is_console: bool },
    /// A change to program `name`'s kernel profile: is it the caller, a server; would the new
    /// mask allow something the mask in force does not; was a relearn of this run allowed.
    ProfileChange { name: &'a str, is_caller: bool, server: bool, widens: bool, relearn: bool },
    /// A shaping operation the shaper asks about: `asker` wants to do `op` to `target`.
    Shape { asker: &'a str, privileged: bool, target: &'a str, op: ShapeOp },
}

/// Why a rule refused: the rule, the words for the log, and the answer for the caller.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub why: String,
    pub answer: ServiceError,
}

impl Rule {
    /// Whether `caller` may ask this of `target`. A target of another shape than the rule's scope
    /// is refused (the service names every target; a mismatch is refused, never allowed).
    pub fn check(&'static self, caller: &Caller, target: &Target) -> Result<(), Refusal> {
        let refuse = |why: String, answer| Err(Refusal { rule: self.name, why, answer });
        if let Some(p) = self.needs.filter(|p| !caller.privileges.contains(p)) {
            return refuse(format!("{} needs the `{p}` privilege", self.name), ServiceError::Denied);
        }
        match (self.scope, *target) {
            (Scope::Caller | Scope::System, Target::Nothing) => Ok(()),
            (Scope::AnyProgram, Target::Program { .. }) => Ok(()),
            (Scope::OtherProgram, Target::Program { is_caller, .. }) => {
                if is_caller {
                    refuse(format!("{} of itself", self.name), ServiceError::InvalidArgument)
                } else {
                    Ok(())
                }
            }
            (Scope::ClientOfCaller, Target::Program { name, client_of_caller, .. }) => {
                if client_of_caller {
                    Ok(())
                } else {
                    let why =
                        format!("{} of {}, which uses no interface {} provides", self.name, clip(name), caller.name);
                    refuse(why, ServiceError::Denied)
                }
            }
            (Scope::OwnUses, Target::Nothing) => Ok(()),
            (Scope::OwnUses, Target::Interface { name, usable }) => {
                if usable {
                    Ok(())
                } else {
                    let why = format!("{} of `{}`, which is not in its `uses`", self.name, clip(name));
                    refuse(why, ServiceError::Denied)
                }
            }
            (Scope::UsableInterface, Target::Interface { name, usable }) => {
                if usable {
                    Ok(())
                } else {
                    let why = format!("{} of `{}`, which it may not use", self.name.to_ascii_lowercase(), clip(name));
                    refuse(why, ServiceError::Denied)
                }
            }
            (Scope::ProgramAndServedInterface, Target::ProgramInterface { program, interface, served }) => {
                if served {
                    Ok(())
                } else {
                    let why =
                        format!("{} of `{}` for {}: no program provides it", self.name, clip(interface), clip(program));
                    refuse(why, ServiceError::NotFound)
                }
            }
            (Scope::ConsoleServer, Target::Console { is_console }) => {
                if is_console {
                    Ok(())
                } else {
                    refuse(format!("{} by a program that is not the console server", self.name), ServiceError::Denied)
                }
            }
            (Scope::ShapedAgent, Target::ProfileChange { name, is_caller, server, widens, relearn }) => {
                let name = clip(name);
                if is_caller {
                    refuse(format!("{} of its own thread", self.name), ServiceError::Denied)
                } else if server {
                    refuse(format!("{} of {name}, a server: servers are not shaped", self.name), ServiceError::Denied)
                } else if widens && !relearn {
                    let why = format!(
                        "{} of {name} wider than its profile in force: only a relearn Studio allowed widens it",
                        self.name
                    );
                    refuse(why, ServiceError::Denied)
                } else {
                    Ok(())
                }
            }
            (Scope::ShapeRule, Target::Shape { asker, privileged, target, op }) => {
                may_shape(asker, privileged, target, op).or_else(|why| {
                    refuse(format!("{op} of {} through the shaper: {why}", clip(target)), ServiceError::Denied)
                })
            }
            (scope, _) => refuse(format!("{} names no {}", self.name, scope.describe()), ServiceError::Denied),
        }
    }
}

/// A name from a request, cut for the log (the log strips control characters itself).
pub fn clip(s: &str) -> &str {
    const MAX: usize = 48;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const NOTHING: &[Privilege] = &[];

    fn caller(privileges: &[Privilege]) -> Caller<'_> {
        Caller { name: "caller", privileges }
    }

    /// For every scope: the targets it allows and those it refuses (with the answer).
    fn cases(scope: Scope) -> (Vec<Target<'static>>, Vec<(Target<'static>, ServiceError)>) {
        let me = Target::Program { name: "caller", is_caller: true, client_of_caller: false };
        let other = Target::Program { name: "victim", is_caller: false, client_of_caller: false };
        let client = Target::Program { name: "client", is_caller: false, client_of_caller: true };
        let usable = Target::Interface { name: "echo", usable: true };
        let unusable = Target::Interface { name: "secret", usable: false };
        let served = Target::ProgramInterface { program: "victim", interface: "echo", served: true };
        let unserved = Target::ProgramInterface { program: "victim", interface: "nosuch", served: false };
        let own_profile = Target::Shape { asker: "agent", privileged: false, target: "agent", op: ShapeOp::Profile };
        let admin_shapes = Target::Shape { asker: "console", privileged: true, target: "agent", op: ShapeOp::Learn };
        let others_profile =
            Target::Shape { asker: "agent", privileged: false, target: "victim", op: ShapeOp::Profile };
        let relearn_own = Target::Shape { asker: "agent", privileged: true, target: "agent", op: ShapeOp::Learn };
        let enforce_other = Target::Shape { asker: "agent", privileged: false, target: "victim", op: ShapeOp::Enforce };
        let keeper_keeps =
            Target::Shape { asker: "journal", privileged: true, target: "every agent", op: ShapeOp::Keep };
        let agent_keeps = Target::Shape { asker: "agent", privileged: false, target: "every agent", op: ShapeOp::Keep };
        let agent_keeps_own = Target::Shape { asker: "agent", privileged: false, target: "agent", op: ShapeOp::Keep };
        let change = |is_caller, server, widens, relearn| Target::ProfileChange {
            name: "victim",
            is_caller,
            server,
            widens,
            relearn,
        };
        let d = ServiceError::Denied;
        match scope {
            Scope::Caller | Scope::System => (vec![Target::Nothing], vec![(other, d), (usable, d)]),
            Scope::AnyProgram => (vec![me, other, client], vec![(Target::Nothing, d), (usable, d)]),
            Scope::OtherProgram => {
                (vec![other, client], vec![(me, ServiceError::InvalidArgument), (Target::Nothing, d)])
            }
            Scope::ClientOfCaller => (vec![client], vec![(other, d), (me, d), (Target::Nothing, d)]),
            Scope::UsableInterface => (vec![usable], vec![(unusable, d), (other, d)]),
            Scope::ProgramAndServedInterface => {
                (vec![served], vec![(unserved, ServiceError::NotFound), (other, d), (usable, d)])
            }
            Scope::ConsoleServer => (
                vec![Target::Console { is_console: true }],
                vec![(Target::Console { is_console: false }, d), (Target::Nothing, d), (other, d)],
            ),
            Scope::ShapedAgent => (
                vec![
                    change(false, false, false, false),
                    change(false, false, false, true),
                    change(false, false, true, true),
                ],
                vec![
                    (change(false, false, true, false), d),
                    (change(false, true, false, false), d),
                    (change(false, true, true, true), d),
                    (change(true, false, false, false), d),
                    (change(true, false, true, true), d),
                    (other, d),
                    (Target::Nothing, d),
                ],
            ),
            Scope::ShapeRule => (
                vec![own_profile, admin_shapes, keeper_keeps],
                vec![
                    (others_profile, d),
                    (relearn_own, d),
                    (enforce_other, d),
                    (agent_keeps, d),
                    (agent_keeps_own, d),
                    (other, d),
                ],
            ),
            Scope::OwnUses => (vec![Target::Nothing, usable], vec![(unusable, d), (other, d), (me, d)]),
        }
    }

    use alloc::vec;

    /// Every row, allowed and refused: with its privilege (and every other privilege too) the
    /// scope decides; without it, every target is refused with `Denied`, naming the privilege.
    #[test]
    fn every_row_allows_and_refuses() {
        let everything: &[Privilege] = &Privilege::ALL;
        for r in TABLE {
            let (allowed, refused) = cases(r.scope);
            assert!(!allowed.is_empty() && !refused.is_empty(), "{}: no cases", r.name);
            for t in &allowed {
                assert_eq!(r.check(&caller(everything), t), Ok(()), "{} {t:?}", r.name);
                if let Some(p) = r.needs {
                    assert_eq!(r.check(&caller(&[p]), t), Ok(()), "{} {t:?} with `{p}` alone", r.name);
                    let others: Vec<Privilege> = Privilege::ALL.into_iter().filter(|q| *q != p).collect();
                    for privileges in [NOTHING, &others[..]] {
                        let e = r.check(&caller(privileges), t).unwrap_err();
                        assert_eq!(e.answer, ServiceError::Denied, "{} {t:?}", r.name);
                        assert_eq!(e.rule, r.name);
                        assert_eq!(e.why, format!("{} needs the `{p}` privilege", r.name));
                    }
                } else {
                    assert_eq!(r.check(&caller(NOTHING), t), Ok(()), "{} {t:?} needs nothing", r.name);
                }
            }
            for (t, answer) in &refused {
                let e = r.check(&caller(everything), t).unwrap_err();
                assert_eq!((e.rule, e.answer), (r.name, *answer), "{} {t:?}: {}", r.name, e.why);
                assert!(!e.why.is_empty() && !e.why.contains('\n'));
            }
        }
    }

    #[test]
    fn the_table_is_complete_and_unambiguous() {
        let methods = [
            id::LOOKUP,
            id::MY_MEMORY,
            id::GROW_HEAP,
            id::REPORT,
            id::EXIT,
            id::MY_SEED,
            id::LIST,
            id::CAPS,
            id::GRANT,
            id::REVOKE,
            id::KILL,
            id::START,
            id::LOG,
            id::REPORTS,
            id::MEMORY,
            id::SHUTDOWN,
            id::TELEMETRY,
            id::WATCH,
            id::ALLOW,
            id::RESUME,
            id::FOLLOW,
            id::VSPACE_OF,
            id::PROFILE_OF,
            id::SET_PROFILE,
            id::ARM_PROFILE,
            id::MAY_SHAPE,
            id::FUND,
            id::FOLLOW_LOG,
            id::SHAPED,
            id::CLIENT,
            id::REFUSED,
        ];
        assert_eq!(TABLE.len(), methods.len());
        for m in methods {
            assert_eq!(TABLE.iter().filter(|r| r.method == m).count(), 1, "method {m}");
        }
        for (i, r) in TABLE.iter().enumerate() {
            assert!(!TABLE[..i].iter().any(|q| q.name == r.name), "{} twice", r.name);
        }
        // Numbers nobody serves: unknown, never allowed by default.
        for m in [6, 7, 19, 23, 25, 63, 64, u64::MAX] {
            assert!(rule_of(m).is_none(), "method {m}");
        }
    }

    /// What an agent with no privileges can do at all: its own requests and the interfaces it
    /// may use, nothing about any other program.
    #[test]
    fn a_plain_agent_reaches_nothing_beyond_itself() {
        let agent = caller(NOTHING);
        for r in TABLE {
            let (allowed, _) = cases(r.scope);
            for t in allowed {
                let ok = r.check(&agent, &t).is_ok();
                let about_others = match t {
                    Target::Program { is_caller, .. } => !is_caller,
                    Target::ProgramInterface { .. } => true,
                    Target::Shape { asker, target, .. } => asker != target,
                    Target::ProfileChange { is_caller, .. } => !is_caller,
                    Target::Nothing => r.scope == Scope::System,
                    Target::Interface { .. } | Target::Console { .. } => false,
                };
                assert!(!(ok && about_others), "{} allows a plain agent {t:?}", r.name);
            }
        }
    }

    /// The table as `docs/studio.md` shows it: one row per method.
    fn markdown() -> String {
        let mut out = String::new();
        for r in TABLE {
            let needs = r.needs.map_or(String::from("—"), |p| format!("`{p}`"));
            out.push_str(&format!("| `{}` | {needs} | {} |\n", r.name, r.scope.describe()));
        }
        out
    }

    /// `docs/studio.md` shows the code's table: the rows after the marker are exactly these.
    #[test]
    fn the_documented_table_is_the_code() {
        let doc = include_str!("../../docs/studio.md");
        let marker = "<!-- table: generated from studio-server/src/policy.rs";
        let at = doc.find(marker).expect("docs/studio.md has the table marker");
        let rows: String =
            doc[at..].lines().skip(3).take_while(|l| l.starts_with('|')).map(|l| format!("{l}\n")).collect();
        assert_eq!(rows, markdown(), "docs/studio.md's table differs from the code's; it should read:\n{}", markdown());
    }

    #[test]
    fn names_in_refusals_are_clipped() {
        let long = "x".repeat(500);
        let t = Target::Interface { name: &long, usable: false };
        let e = rule_of(id::LOOKUP).unwrap().check(&caller(NOTHING), &t).unwrap_err();
        assert!(e.why.len() < 100, "{}", e.why);
        assert_eq!(clip("äöü"), "äöü");
        assert_eq!(clip(&"é".repeat(60)).chars().count(), 48);
    }
}
