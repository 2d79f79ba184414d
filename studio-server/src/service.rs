//! Studio's service: every request is decoded, its target found, the authorisation table asked
//! ([`policy`](mod@crate::policy)) — a refusal is logged with its rule and answered — and only then
//! carried out (by the lifecycle's mechanisms). Fault messages (badged with the fault bit) go to
//! the fault handler.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::println;
use ozone_agent_sdk::protocol::studio::{self as proto, AgentInfo, AgentState, CapInfo, ShapeOp, id, method};
use ozone_agent_sdk::protocol::system::{Kind, Privilege};
use ozone_agent_sdk::protocol::{MAX_PAYLOAD, Permutation, ServiceError, block_of, devices, net, store, wire_label};
use ozone_agent_sdk::rpc::{Args, Incoming, Response, Server};

use crate::funding;
use crate::lifecycle::FAULT_BIT;
use crate::policy::{self, Caller, Rule, Target};
use crate::state::{Studio, encoded_len, fitting};

/// A server's answer as a method event keeps it: 0 for a success or no answer, else the
/// error's code.
fn answer_code(answer: Option<&Response>) -> u16 {
    match answer {
        Some(Err(e)) => *e as u16,
        _ => 0,
    }
}

impl Studio {
    pub fn serve(mut self) -> ! {
        let mut server = Server::with_key(self.ep, proto::INTERFACE, self.protocol_key);
        println!("[studio] serving");
        server.serve_raw(|incoming| self.incoming(incoming))
    }

    /// What the server loop received: a request (and the method event it is for the caller), a
    /// request the method profile refused (an event too), a fault message, Studio's tick, or
    /// anything else (a label that names no method: an event of the sender's, if it is a
    /// program's).
    pub fn incoming(&mut self, incoming: Incoming<'_>) -> Option<Response> {
        match incoming {
            Incoming::Request(r) if r.badge & FAULT_BIT == 0 => self.request(r.badge, r),
            Incoming::Request(_) => None,
            Incoming::Refused(r, answer) => {
                self.method_event(
                    r.badge,
                    Some(r.method),
                    wire_label(r.raw().msg.info.label()),
                    answer_code(Some(answer)),
                );
                None
            }
            Incoming::Other(m) if m.badge & FAULT_BIT != 0 => {
                self.fault(m.badge & !FAULT_BIT, m.msg.info.label(), m.msg.mrs)
            }
            // Studio's tick (a signal on its notification): read the agents' traces.
            Incoming::Other(m) if m.badge & ozone_agent_sdk::protocol::timer::STUDIO_TICK != 0 => {
                self.watch_tick();
                self.perf_tick();
                None
            }
            Incoming::Other(m) => {
                // A label that names no method: an event of the sender's, if the badge names a
                // program (a signal's names none: Studio's notification is signalled by the
                // timer only, with the tick's bit, taken above).
                let answer = Err(ServiceError::UnknownMethod);
                self.method_event(m.badge, None, wire_label(m.msg.info.label()), answer_code(Some(&answer)));
                Some(answer)
            }
        }
    }

    /// Whether server `i` may tell Studio of a refused request whose Call carried `label`: a
    /// label of an interface it serves, or of none of the instance's (a request no server takes,
    /// which the client may have sent any of them) — never one of another server's interface or
    /// of Studio's (`protocol::block_of`: a label says its interface). So a server's word binds
    /// to its client's requests to that server, not to the client's Calls elsewhere.
    ///
    /// Two interfaces whose blocks are the same (a 2⁻³² chance a pair, but a builder who knows
    /// the instance's seed could choose such names) are each "another interface" to the other's
    /// server: neither server is taken at its word about that block (`label_blocks` says so at
    /// boot).
    fn may_tell_of(&self, i: usize, label: u64) -> bool {
        let block = block_of(wire_label(label));
        !self.blocks.iter().any(|&(b, by)| b == block && by != Some(i))
    }

    /// The label blocks of Studio's interface and of every interface of the description, with
    /// their providers ([`Studio::blocks`]); a block two interfaces share is logged.
    pub(crate) fn label_blocks(&mut self) -> Vec<(u64, Option<usize>)> {
        let mut named: Vec<(u64, Option<usize>, &str)> = alloc::vec![(self.numbering.block(), None, proto::INTERFACE)];
        for (i, p) in self.desc.programs.iter().enumerate() {
            for s in &p.provides {
                named.push((Permutation::new(self.protocol_key, s).block(), Some(i), s.as_str()));
            }
        }
        let mut shared = Vec::new();
        for (n, (b, _, a)) in named.iter().enumerate() {
            for (c, _, d) in &named[n + 1..] {
                if b == c && a != d {
                    shared.push(format!("`{a}` and `{d}`"));
                }
            }
        }
        let blocks = named.iter().map(|&(b, by, _)| (b, by)).collect();
        for pair in shared {
            self.decide(format!(
                "system: interfaces {pair} share a label block on this instance (a 2^-32 chance): their servers may take each other's labels, and neither server's refusals of them are taken; another instance seed gives other blocks"
            ));
        }
        blocks
    }

    /// Ask the table whether program `i` may make the request of `rule` about `target`; a
    /// refusal is logged (within the caller's budget) with its rule, and becomes the answer.
    fn allow(&mut self, i: usize, rule: &'static Rule, target: Target) -> Result<(), ServiceError> {
        self.allow_for(i, i, rule, target)
    }

    /// [`allow`](Self::allow), with a refusal logged as program `who`'s (who asked the caller
    /// for it: the shaper asks `MAY_SHAPE` for its client).
    fn allow_for(&mut self, i: usize, who: usize, rule: &'static Rule, target: Target) -> Result<(), ServiceError> {
        let privileges: Vec<Privilege> = self.agents[i].prog.privileges.clone();
        let name = self.agents[i].prog.name.clone();
        let caller = Caller { name: &name, privileges: &privileges };
        rule.check(&caller, &target).map_err(|refusal| {
            let who_name = self.agents[who].prog.name.clone();
            self.refused(who, format!("refuse {who_name}: {} (rule {})", refusal.why, refusal.rule));
            refusal.answer
        })
    }

    /// Ask the table about a request of program `i` naming program `t` (`name`; `None`: no
    /// such program — answered `NotFound` once the table allowed the request).
    fn allow_program(
        &mut self,
        i: usize,
        rule: &'static Rule,
        t: Option<usize>,
        name: &str,
    ) -> Result<usize, ServiceError> {
        let is_caller = t == Some(i);
        let client_of_caller = t.is_some_and(|t| self.is_client_of(t, i));
        self.allow(i, rule, Target::Program { name, is_caller, client_of_caller })?;
        t.ok_or(ServiceError::NotFound)
    }

    /// One request from the program whose id is `badge`. `None`: no answer (the caller ended).
    /// The request and its answer are an event of the caller's (`watch`).
    pub fn request(&mut self, badge: u64, r: &impl Args) -> Option<Response> {
        let answer = self.request_answer(badge, r);
        let m = r.method();
        // EXIT ended the run: a restart may already have given the program a new watch.
        if m != id::EXIT {
            let label = self.numbering.label(m).unwrap_or(0);
            self.method_event(badge, Some(m), label, answer_code(answer.as_ref()));
        }
        answer
    }

    fn request_answer(&mut self, badge: u64, r: &impl Args) -> Option<Response> {
        let m = r.method();
        let Some(i) = self.index_of_id(badge) else { return Some(Err(ServiceError::Denied)) };
        let Some(rule) = policy::rule_of(m) else { return Some(Err(ServiceError::UnknownMethod)) };
        if m == id::EXIT {
            // Never answered; a status that does not decode is reported as `u64::MAX`.
            let status = r.decode_for(method::EXIT).map_or(u64::MAX, |(status, _)| status);
            let name = self.agents[i].prog.name.clone();
            self.exited(i, status, &format!("{name} exited with status {status}"));
            return None;
        }
        Some(self.answer(i, rule, r))
    }

    fn answer(&mut self, i: usize, rule: &'static Rule, r: &impl Args) -> Response {
        let caller = self.agents[i].prog.name.clone();
        match rule.method {
            id::LOOKUP => {
                let (l, reply) = r.decode_for(method::LOOKUP)?;
                let usable = self.agents[i].may_use(&l.interface);
                self.allow(i, rule, Target::Interface { name: &l.interface, usable })?;
                reply.ok(&self.give_interface(i, &l.interface)?)
            }
            id::MY_MEMORY => {
                let ((), reply) = r.decode_for(method::MY_MEMORY)?;
                self.allow(i, rule, Target::Nothing)?;
                let a = &self.agents[i];
                let lay = a.proc.map(|p| p.layout);
                reply.ok(&proto::MemInfo {
                    quota: a.prog.quota(),
                    used: a.used(),
                    heap_base: lay.map_or(0, |l| l.heap_base),
                    heap_end: a.heap_end,
                })
            }
            id::GROW_HEAP => {
                let (pages, reply) = r.decode_for(method::GROW_HEAP)?;
                self.allow(i, rule, Target::Nothing)?;
                reply.with(self.grow_heap(i, pages))
            }
            id::MY_SEED => self.my_seed(i, rule, r),
            id::REPORT => {
                let (text, reply) = r.decode_for(method::REPORT)?;
                self.allow(i, rule, Target::Nothing)?;
                let id = self.agents[i].id;
                self.log.report(id, &caller, &text);
                reply.ok(&())
            }
            id::LIST => {
                let (from, reply) = r.decode_for(method::LIST)?;
                self.allow(i, rule, Target::Nothing)?;
                let list: Vec<AgentInfo> = self
                    .agents
                    .iter()
                    .skip(from as usize)
                    .map(|a| AgentInfo {
                        id: a.id,
                        name: a.prog.name.clone(),
                        state: a.state,
                        server: a.prog.kind == Kind::Server,
                        priority: self.priority_now(a),
                        quota: a.prog.quota(),
                        used: a.used(),
                        restarts: a.restarts,
                    })
                    .collect();
                reply.ok(&fitting(list))
            }
            id::CAPS => {
                let (name, reply) = r.decode_for(method::CAPS)?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                let mut caps: Vec<CapInfo> =
                    self.agents[t].held.iter().map(|h| CapInfo { slot: h.slot, what: h.what.clone() }).collect();
                caps.sort_by_key(|c| c.slot);
                reply.ok(&fitting(caps))
            }
            id::GRANT => {
                let (g, reply) = r.decode_for(method::GRANT)?;
                let t = self.allow_grant(i, rule, &g)?;
                reply.with(self.grant(t, &g, &caller))
            }
            id::REVOKE => {
                let (g, reply) = r.decode_for(method::REVOKE)?;
                let t = self.allow_grant(i, rule, &g)?;
                reply.with(self.revoke(t, &g, &caller))
            }
            id::KILL => {
                let (name, reply) = r.decode_for(method::KILL)?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                if !matches!(self.agents[t].state, AgentState::Running | AgentState::Suspended) {
                    return Err(ServiceError::Busy);
                }
                self.stop(
                    t,
                    AgentState::Stopped,
                    format!("kill {name}: asked by {caller}; revoked everything, memory reclaimed"),
                );
                reply.ok(&())
            }
            id::START => {
                let (name, reply) = r.decode_for(method::START)?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                self.start(t, &format!("asked by {caller}"))?;
                reply.ok(&self.agents[t].id)
            }
            id::LOG => {
                let (from, reply) = r.decode_for(method::LOG)?;
                self.allow(i, rule, Target::Nothing)?;
                reply.ok(&self.log.decisions(from, |p| encoded_len(&p) <= MAX_PAYLOAD))
            }
            id::REPORTS => {
                let (from, reply) = r.decode_for(method::REPORTS)?;
                self.allow(i, rule, Target::Nothing)?;
                let page = self.log.reports(from, |id| self.name_of(id), |p| encoded_len(p) <= MAX_PAYLOAD);
                reply.ok(&page)
            }
            id::MEMORY => {
                let ((), reply) = r.decode_for(method::MEMORY)?;
                self.allow(i, rule, Target::Nothing)?;
                let free = self.kernel_free();
                if free != self.pool.free() {
                    println!(
                        "[studio] memory accounting differs: kernel {free} bytes free, Studio {}",
                        self.pool.free()
                    );
                }
                reply.ok(&proto::SystemMemory {
                    total: self.pool.total,
                    free,
                    used_by_programs: self.agents.iter().map(|a| a.used()).sum(),
                })
            }
            id::TELEMETRY => {
                let (name, reply) = r.decode_for(method::TELEMETRY)?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                let tcb = self.agents[t].proc.ok_or(ServiceError::Busy)?.tcb;
                reply.ok(&self.k.telemetry(tcb).map_err(|_| ServiceError::KernelError)?)
            }
            id::WATCH => {
                let (name, reply) = r.decode_for(method::WATCH)?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                if self.agents[t].proc.is_none() {
                    return Err(ServiceError::Busy);
                }
                let mut report = self.agents[t].watch.as_ref().map(crate::watch::Watch::report).unwrap_or_default();
                if report.traced {
                    report.limit = self.limit(t).name().into();
                }
                reply.ok(&report)
            }
            id::ALLOW => {
                let (name, reply) = r.decode_for(method::ALLOW)?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                let state = self.agents[t].state;
                let p = match (state, self.agents[t].proc) {
                    (AgentState::Running | AgentState::Suspended, Some(p)) => p,
                    _ => return Err(ServiceError::Busy),
                };
                if self.agents[t].watch.as_ref().is_none_or(|w| !w.judged_by_model()) {
                    return Err(ServiceError::Busy);
                }
                // A suspended agent is resumed first: if the kernel refuses, nothing changes (its
                // ladder stays where it was, and its time still runs out).
                let resumed = if state == AgentState::Suspended {
                    self.k.resume(p.tcb).map_err(|_| ServiceError::KernelError)?;
                    self.agents[t].state = AgentState::Running;
                    "; resumed"
                } else {
                    ""
                };
                let Some((windows, throttled)) = self.agents[t].watch.as_mut().and_then(|w| w.allow()) else {
                    return Err(ServiceError::Busy);
                };
                // Its next runs start from nothing too.
                self.agents[t].carried = ozone_cognition::respond::Level::Normal;
                let mut what =
                    format!("{windows} anomalous windows of this run accepted as normal; back to no response");
                if let Some(prio) = throttled {
                    // The throttle is gone: the priority it runs at now is the band, or perf's
                    // demotion of a CPU-bound agent (held back while it was throttled), which
                    // stays: perf lowers it only once, when it becomes CPU-bound.
                    let to = self.priority_now(&self.agents[t]);
                    let done = self.k.set_priority(p.tcb, u64::from(to));
                    if to == prio {
                        what.push_str(&format!("; priority {prio} restored ({done:?})"));
                    } else {
                        what.push_str(&format!(
                            "; priority {to} restored (perf holds it below {prio}: CPU-bound) ({done:?})"
                        ));
                    }
                }
                what.push_str(resumed);
                self.decide(format!("allow {name}: {what}; asked by {caller}"));
                reply.ok(&())
            }
            id::RESUME => {
                let (name, reply) = r.decode_for(method::RESUME)?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                let Some(p) = self.agents[t].proc.filter(|_| self.agents[t].state == AgentState::Suspended) else {
                    return Err(ServiceError::Busy);
                };
                if self.agents[t].watch.as_ref().is_none_or(|w| !w.judged_by_model()) {
                    return Err(ServiceError::Busy);
                }
                // The kernel first: if it refuses, nothing changes (the ladder stays at suspend,
                // and the time still runs out; a ladder moved back to revoke would never expire).
                self.k.resume(p.tcb).map_err(|_| ServiceError::KernelError)?;
                self.agents[t].state = AgentState::Running;
                let resumed = self.agents[t].watch.as_mut().is_some_and(|w| w.resume());
                debug_assert!(resumed, "a suspended agent's ladder is at suspend or kill");
                self.decide(format!(
                    "resume {name} (Ok(())): runs again at revoke (what it lost stays revoked; further anomalies suspend it again); asked by {caller}"
                ));
                reply.ok(&())
            }
            id::FOLLOW => {
                let (f, reply) = r.decode_for(method::FOLLOW)?;
                let t = self.allow_program(i, rule, self.index_of(&f.agent), &f.agent)?;
                if f.seconds > proto::MAX_FOLLOW_SECONDS {
                    return Err(ServiceError::InvalidArgument);
                }
                if self.agents[t].proc.is_none() {
                    return Err(ServiceError::Busy);
                }
                self.follow(t, f.seconds);
                reply.ok(&())
            }
            id::SHUTDOWN => {
                // Never answered: the machine is off.
                let (status, _) = r.decode_for(method::SHUTDOWN)?;
                self.allow(i, rule, Target::Nothing)?;
                // Printed by Studio itself: the machine goes off before the console could print it.
                self.log.set_echo(alloc::boxed::Box::new(crate::log::Serial));
                self.decide(format!("shutdown (status {status}): asked by {caller}"));
                self.k.power_off(status as u64);
                Err(ServiceError::KernelError)
            }
            id::VSPACE_OF => {
                let (id, reply) = r.decode_for(method::VSPACE_OF)?;
                let name = self.name_of(id);
                let t = self.allow_program(i, rule, self.index_of_id(id), &name)?;
                let vspace = self.agents[t].proc.ok_or(ServiceError::Busy)?.vspace;
                reply.ok(&self.give_copy(i, vspace, &format!("address space of {name}"), id)?)
            }
            id::CLIENT => {
                let (id, reply) = r.decode_for(method::CLIENT)?;
                let name = self.name_of(id);
                let t = self.allow_program(i, rule, self.index_of_id(id), &name)?;
                let p = &self.agents[t].prog;
                // Each field only to the server of the interface it is about.
                let serves = |interface: &str| self.agents[i].prog.provides.iter().any(|s| s == interface);
                let (devices, store, net) =
                    (serves(devices::INTERFACE), serves(store::INTERFACE), serves(net::INTERFACE));
                reply.ok(&proto::ClientInfo {
                    name,
                    pci: if devices { p.pci.clone() } else { Vec::new() },
                    store_kib: if store { p.store_kib } else { 0 },
                    net_listen: if net { p.net_listen.clone() } else { Vec::new() },
                    net_connect: if net { p.net_connect.clone() } else { Vec::new() },
                    admin: p.has_privilege(Privilege::Admin),
                    run: self.agents[t].run,
                })
            }
            id::REFUSED => {
                let (f, reply) = r.decode_for(method::REFUSED)?;
                let client = proto::program_of(f.client);
                let name = self.name_of(client);
                let t = self.allow_program(i, rule, self.index_of_id(client), &name)?;
                let refusals = [ServiceError::Denied, ServiceError::UnknownMethod, ServiceError::BadRequest];
                if !refusals.iter().any(|e| *e as u16 == f.code) || !self.may_tell_of(i, f.label) {
                    return Err(ServiceError::InvalidArgument);
                }
                // A word about a request of an earlier run (told after the client was
                // restarted) is answered and kept nowhere. A badge without run bits names no
                // run (a server that passes the program id alone): taken as the current one's.
                let run = proto::run_of(f.client);
                if run == 0 || run == proto::run_of(self.agents[t].client_badge()) {
                    self.refused_by_server(t, i, f.label, f.code);
                }
                reply.ok(&())
            }
            id::PROFILE_OF => {
                let (id, reply) = r.decode_for(method::PROFILE_OF)?;
                let name = self.name_of(id);
                let t = self.allow_program(i, rule, self.index_of_id(id), &name)?;
                let a = &self.agents[t];
                let tcb = a.proc.ok_or(ServiceError::Busy)?.tcb;
                let counters = self.k.telemetry(tcb).map_err(|_| ServiceError::KernelError)?;
                let (used, allowed, window) = self.k.profile(tcb).map_err(|_| ServiceError::KernelError)?;
                reply.ok(&proto::ThreadProfile {
                    name,
                    server: a.prog.kind == Kind::Server,
                    run: a.run,
                    syscalls: counters.syscalls,
                    denied: counters.denied,
                    used,
                    allowed,
                    window,
                })
            }
            id::SET_PROFILE => {
                let (c, reply) = r.decode_for(method::SET_PROFILE)?;
                let tcb = self.allow_profile_change(i, rule, c.id, c.run, c.allowed)?;
                reply.with(self.k.set_profile(tcb, c.allowed).map_err(|_| ServiceError::KernelError))
            }
            id::ARM_PROFILE => {
                let (c, reply) = r.decode_for(method::ARM_PROFILE)?;
                let tcb = self.allow_profile_change(i, rule, c.id, c.run, c.allowed)?;
                reply.with(self.k.arm_profile(tcb, c.allowed, c.learn).map_err(|_| ServiceError::KernelError))
            }
            id::MAY_SHAPE => {
                let (ask, reply) = r.decode_for(method::MAY_SHAPE)?;
                // An id that names no program is no program's name either ("program N"), and holds
                // no privilege: it may do nothing.
                let asker = self.name_of(ask.caller);
                let privileged =
                    self.index_of_id(ask.caller).is_some_and(|a| self.agents[a].prog.has_privilege(ask.op.privilege()));
                // A refusal is the asker's to answer for when the shaper (`profiles`) asks on its
                // behalf; anyone else asking is refused as itself, whatever id it names (it
                // cannot charge its refusals to another program's log budget).
                let who = if self.agents[i].prog.has_privilege(Privilege::Profiles) {
                    self.index_of_id(ask.caller).unwrap_or(i)
                } else {
                    i
                };
                let target = Target::Shape { asker: &asker, privileged, target: &ask.target, op: ask.op };
                self.allow_for(i, who, rule, target)?;
                // A relearn allowed: the shaper may widen that run's profile once (`ARM_PROFILE`).
                if ask.op == ShapeOp::Learn
                    && let Some(t) = self.index_of(&ask.target)
                    && self.agents[t].proc.is_some()
                {
                    self.agents[t].relearn = true;
                }
                reply.ok(&())
            }
            id::SHAPED => {
                let (named, reply) = r.decode_for(method::SHAPED)?;
                let a = &self.agents[i];
                let uses: Vec<String> = a.prog.uses.iter().filter(|u| a.may_use(u)).cloned().collect();
                let interfaces = match named {
                    Some(name) => {
                        let usable = uses.contains(&name);
                        self.allow(i, rule, Target::Interface { name: &name, usable })?;
                        alloc::vec![name]
                    }
                    None => {
                        self.allow(i, rule, Target::Nothing)?;
                        uses
                    }
                };
                let shaped = interfaces
                    .into_iter()
                    .map(|interface| {
                        let t = self.server_of(&interface);
                        let provider = t.map_or(0, |t| self.agents[t].id);
                        let signalled = t.is_some_and(|t| t != i && self.signal_control(t));
                        proto::Shaped { interface, provider, signalled }
                    })
                    .collect::<Vec<_>>();
                reply.ok(&shaped)
            }
            id::FOLLOW_LOG => {
                let ((), reply) = r.decode_for(method::FOLLOW_LOG)?;
                let is_console = self.log_signal.is_some_and(|(c, _, _)| c == i);
                self.allow(i, rule, Target::Console { is_console })?;
                reply.ok(&self.follow_log(i).ok_or(ServiceError::Denied)?)
            }
            id::FUND => {
                let (f, reply) = r.decode_for(method::FUND)?;
                let t = self.index_of_id(f.client);
                let name = self.name_of(f.client);
                // The table: a server funds only its own clients; then funding's rules.
                let t = self.allow_program(i, rule, t, &name)?;
                let result = {
                    let a = &self.agents[t];
                    let parties = funding::Parties {
                        provider: self.agents[i].prog.provides.iter().any(|x| x == funding::INTERFACE),
                        cnode: self.agents[i].proc.map(|p| p.cnode),
                        client: Some(funding::Client {
                            is_caller: t == i,
                            running: a.state == AgentState::Running,
                            may_use: a.may_use(funding::INTERFACE),
                            mem: a.mem.as_ref(),
                            funding: &a.funding,
                        }),
                    };
                    funding::fund(self.k, &f, &parties)
                };
                if let Err(refusal) = result {
                    let text = format!("refuse {caller}: fund {name} ({}): {} (rule FUND)", f.order, refusal.rule());
                    self.refused(i, text);
                    return Err(refusal.answer());
                }
                reply.ok(&())
            }
            // `EXIT` is answered (not) in `request`; every other method of the table is above.
            _ => Err(ServiceError::UnknownMethod),
        }
    }

    /// `MY_SEED`: the caller's `seed` from the system description (0 when it has none).
    fn my_seed(&mut self, i: usize, rule: &'static Rule, r: &impl Args) -> Response {
        let ((), reply) = r.decode_for(method::MY_SEED)?;
        self.allow(i, rule, Target::Nothing)?;
        reply.ok(&self.agents[i].prog.seed)
    }

    /// Ask the table about a change of program `id`'s kernel profile to `allowed` (by program
    /// `i`, for run `run`); the thread to change. A change that widens the mask in force uses up
    /// the relearn Studio allowed. Not running, or another run: `Busy`.
    fn allow_profile_change(
        &mut self,
        i: usize,
        rule: &'static Rule,
        id: u64,
        run: u32,
        allowed: u64,
    ) -> Result<u64, ServiceError> {
        let name = self.name_of(id);
        let t = self.index_of_id(id);
        let a = t.map(|t| &self.agents[t]);
        let tcb = a.and_then(|a| a.proc.filter(|_| a.run == run)).map(|p| p.tcb);
        let in_force = match tcb {
            Some(tcb) => Some(self.k.profile(tcb).map_err(|_| ServiceError::KernelError)?.1),
            None => None,
        };
        let target = Target::ProfileChange {
            name: &name,
            is_caller: t == Some(i),
            server: a.is_some_and(|a| a.prog.kind == Kind::Server),
            widens: in_force.is_some_and(|f| allowed & !f != 0),
            relearn: a.is_some_and(|a| a.relearn),
        };
        self.allow(i, rule, target)?;
        let t = t.ok_or(ServiceError::NotFound)?;
        let tcb = tcb.ok_or(ServiceError::Busy)?;
        if in_force.is_some_and(|f| allowed & !f != 0) {
            self.agents[t].relearn = false;
        }
        Ok(tcb)
    }

    /// Ask the table about a `GRANT` or `REVOKE` of program `i`; the target program.
    fn allow_grant(&mut self, i: usize, rule: &'static Rule, g: &proto::Grant) -> Result<usize, ServiceError> {
        let served = g.interface == proto::INTERFACE || self.desc.provider(&g.interface).is_some();
        self.allow(i, rule, Target::ProgramInterface { program: &g.agent, interface: &g.interface, served })?;
        self.index_of(&g.agent).ok_or(ServiceError::NotFound)
    }

    /// Record the grant (it holds from now on, across restarts, until revoked) and, if the
    /// program runs, put the capability in its CNode. Logged either way, like `revoke`.
    fn grant(&mut self, t: usize, g: &proto::Grant, caller: &str) -> Result<Option<u64>, ServiceError> {
        self.agents[t].revoked.retain(|x| *x != g.interface);
        if !self.agents[t].granted.contains(&g.interface) {
            self.agents[t].granted.push(g.interface.clone());
        }
        if self.agents[t].proc.is_none() {
            self.decide(format!(
                "grant {} `{}`: recorded; it is not running and may look the interface up once started; asked by {caller}",
                g.agent, g.interface
            ));
            return Ok(None);
        }
        match self.give_interface(t, &g.interface) {
            Ok(s) => {
                self.decide(format!("grant {} `{}` (slot {s}): asked by {caller}", g.agent, g.interface));
                Ok(Some(s))
            }
            Err(ServiceError::NotRunning) => {
                self.decide(format!(
                    "grant {} `{}`: recorded; the interface's server is not running, {} may look it up once it runs; asked by {caller}",
                    g.agent, g.interface, g.agent
                ));
                Ok(None)
            }
            Err(e) => {
                self.decide(format!(
                    "grant {} `{}`: recorded, but no capability could be placed now ({e}); it may look the interface up; asked by {caller}",
                    g.agent, g.interface
                ));
                Err(e)
            }
        }
    }

    pub(crate) fn revoke(&mut self, t: usize, g: &proto::Grant, caller: &str) -> Result<(), ServiceError> {
        self.agents[t].granted.retain(|x| *x != g.interface);
        if !self.agents[t].revoked.contains(&g.interface) {
            self.agents[t].revoked.push(g.interface.clone());
        }
        let k = self.k;
        let a = &mut self.agents[t];
        let mut deleted = None;
        if let (Some(p), Some(pos)) =
            (a.proc, a.held.iter().position(|h| h.interface.as_deref() == Some(g.interface.as_str())))
        {
            let h = a.held.remove(pos);
            k.delete_in(p.cnode, h.slot).map_err(|_| ServiceError::KernelError)?;
            deleted = Some(h.slot);
        }
        let mut what = deleted.map_or(String::from("held none; future lookups refused"), |s| {
            format!("capability in slot {s} deleted; future lookups refused")
        });
        // What a provider of the interface holds of the program (its address space, given to a
        // `vspaces` server for its clients) goes once the program is no longer its client.
        let id = self.agents[t].id;
        for j in 0..self.agents.len() {
            if j == t || !self.agents[j].prog.provides.contains(&g.interface) || self.is_client_of(t, j) {
                continue;
            }
            let Some(p) = self.agents[j].proc else { continue };
            let copies: Vec<u64> = self.agents[j].held.iter().filter(|h| h.from == Some(id)).map(|h| h.slot).collect();
            for s in &copies {
                let _ = k.delete_in(p.cnode, *s);
            }
            if !copies.is_empty() {
                self.agents[j].held.retain(|h| h.from != Some(id));
                what.push_str(&format!(
                    "; {} no longer holds its copies of {}'s objects",
                    self.agents[j].prog.name, g.agent
                ));
            }
        }
        self.decide(format!("revoke {} `{}`: {what}; asked by {caller}", g.agent, g.interface));
        Ok(())
    }
}
