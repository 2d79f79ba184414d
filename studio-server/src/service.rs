//! Studio's service: every request is decoded, its target found, the authorisation table asked
//! ([`policy`](mod@crate::policy)) — a refusal is logged with its rule and answered — and only then
//! carried out (by the lifecycle's mechanisms). Fault messages (badged with the fault bit) go to
//! the fault handler.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::println;
use ozone_agent_sdk::protocol::studio::{self as proto, AgentInfo, AgentState, CapInfo, method};
use ozone_agent_sdk::protocol::system::{Kind, Privilege};
use ozone_agent_sdk::protocol::{MAX_PAYLOAD, ServiceError};
use ozone_agent_sdk::rpc::{self, Incoming, Request, Response, Server};
use serde::de::DeserializeOwned;

use crate::funding;
use crate::lifecycle::FAULT_BIT;
use crate::policy::{self, Caller, Rule, Target};
use crate::state::{Studio, encoded_len, fitting};

/// A request's arguments, decoded on demand (a request off the endpoint, or in the host tests
/// bytes made by the test).
pub trait Args {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, ServiceError>;
}

impl Args for Request {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        Request::decode(self)
    }
}

impl Studio {
    pub fn serve(mut self) -> ! {
        let mut server = Server::with_key(self.ep, proto::INTERFACE, self.protocol_key);
        println!("[studio] serving");
        server.serve_raw(|incoming| match incoming {
            Incoming::Request(r) if r.badge & FAULT_BIT == 0 => self.request(r.badge, r.method, r),
            Incoming::Request(_) => None,
            Incoming::Other(m) if m.badge & FAULT_BIT != 0 => {
                self.fault(m.badge & !FAULT_BIT, m.msg.info.label(), m.msg.mrs)
            }
            Incoming::Other(_) => Some(Err(ServiceError::UnknownMethod)),
        })
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
    pub fn request(&mut self, badge: u64, m: u64, r: &impl Args) -> Option<Response> {
        let Some(i) = self.index_of_id(badge) else { return Some(Err(ServiceError::Denied)) };
        let Some(rule) = policy::rule_of(m) else { return Some(Err(ServiceError::UnknownMethod)) };
        if m == method::EXIT {
            let status: u64 = r.decode().unwrap_or(u64::MAX);
            let name = self.agents[i].prog.name.clone();
            self.ended(i, AgentState::Exited, &format!("{name} exited with status {status}"));
            return None;
        }
        Some(self.answer(i, rule, r))
    }

    fn answer(&mut self, i: usize, rule: &'static Rule, r: &impl Args) -> Response {
        let caller = self.agents[i].prog.name.clone();
        match rule.method {
            method::LOOKUP => {
                let l: proto::Lookup = r.decode()?;
                let usable = self.agents[i].may_use(&l.interface);
                self.allow(i, rule, Target::Interface { name: &l.interface, usable })?;
                rpc::ok(&self.give_interface(i, &l.interface)?)
            }
            method::MY_MEMORY => {
                self.allow(i, rule, Target::Nothing)?;
                let a = &self.agents[i];
                let lay = a.proc.map(|p| p.layout);
                rpc::ok(&proto::MemInfo {
                    quota: a.prog.memory_kib as u64 * 1024,
                    used: a.used(),
                    heap_base: lay.map_or(0, |l| l.heap_base),
                    heap_end: a.heap_end,
                })
            }
            method::GROW_HEAP => {
                let pages: u64 = r.decode()?;
                self.allow(i, rule, Target::Nothing)?;
                self.grow_heap(i, pages)
            }
            method::REPORT => {
                let text: String = r.decode()?;
                self.allow(i, rule, Target::Nothing)?;
                let id = self.agents[i].id;
                self.log.report(id, &caller, &text);
                rpc::ok(&())
            }
            method::LIST => {
                let from: u32 = r.decode()?;
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
                        priority: a.prog.priority,
                        quota: a.prog.memory_kib as u64 * 1024,
                        used: a.used(),
                        restarts: a.restarts,
                    })
                    .collect();
                rpc::ok(&fitting(list))
            }
            method::CAPS => {
                let name: String = r.decode()?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                let caps: Vec<CapInfo> =
                    self.agents[t].held.iter().map(|h| CapInfo { slot: h.slot, what: h.what.clone() }).collect();
                rpc::ok(&fitting(caps))
            }
            method::GRANT | method::REVOKE => {
                let g: proto::Grant = r.decode()?;
                let served = g.interface == proto::INTERFACE || self.desc.provider(&g.interface).is_some();
                self.allow(i, rule, Target::ProgramInterface { program: &g.agent, interface: &g.interface, served })?;
                let t = self.index_of(&g.agent).ok_or(ServiceError::NotFound)?;
                if rule.method == method::GRANT { self.grant(t, &g, &caller) } else { self.revoke(t, &g, &caller) }
            }
            method::KILL => {
                let name: String = r.decode()?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                if self.agents[t].state != AgentState::Running {
                    return Err(ServiceError::Busy);
                }
                self.stop(
                    t,
                    AgentState::Stopped,
                    format!("kill {name}: asked by {caller}; revoked everything, memory reclaimed"),
                );
                rpc::ok(&())
            }
            method::START => {
                let name: String = r.decode()?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                self.start(t, &format!("asked by {caller}"))?;
                rpc::ok(&self.agents[t].id)
            }
            method::LOG => {
                let from: u32 = r.decode()?;
                self.allow(i, rule, Target::Nothing)?;
                rpc::ok(&self.log.decisions(from, |p| encoded_len(&p) <= MAX_PAYLOAD))
            }
            method::REPORTS => {
                let from: u32 = r.decode()?;
                self.allow(i, rule, Target::Nothing)?;
                let page = self.log.reports(from, |id| self.name_of(id), |p| encoded_len(p) <= MAX_PAYLOAD);
                rpc::ok(&page)
            }
            method::MEMORY => {
                self.allow(i, rule, Target::Nothing)?;
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
            }
            method::TELEMETRY => {
                let name: String = r.decode()?;
                let t = self.allow_program(i, rule, self.index_of(&name), &name)?;
                let tcb = self.agents[t].proc.ok_or(ServiceError::Busy)?.tcb;
                rpc::ok(&self.k.telemetry(tcb).map_err(|_| ServiceError::KernelError)?)
            }
            method::SHUTDOWN => {
                let status: u8 = r.decode()?;
                self.allow(i, rule, Target::Nothing)?;
                // Printed by Studio itself: the machine goes off before the console could print it.
                self.log.set_echo(alloc::boxed::Box::new(crate::log::Serial));
                self.decide(format!("shutdown (status {status}): asked by {caller}"));
                self.k.power_off(status as u64);
                Err(ServiceError::KernelError)
            }
            method::VSPACE_OF => {
                let id: u64 = r.decode()?;
                let name = self.name_of(id);
                let t = self.allow_program(i, rule, self.index_of_id(id), &name)?;
                let vspace = self.agents[t].proc.ok_or(ServiceError::Busy)?.vspace;
                rpc::ok(&self.give_copy(i, vspace, &format!("address space of {name}"), id)?)
            }
            method::TCB_OF => {
                let id: u64 = r.decode()?;
                let name = self.name_of(id);
                let t = self.allow_program(i, rule, self.index_of_id(id), &name)?;
                let tcb = self.agents[t].proc.ok_or(ServiceError::Busy)?.tcb;
                let server = self.agents[t].prog.kind == Kind::Server;
                let slot = self.give_copy(i, tcb, &format!("thread of {name}"), id)?;
                rpc::ok(&(slot, name, server))
            }
            method::MAY_SHAPE => {
                let ask: proto::ShapeAsk = r.decode()?;
                // An id that names no program is no program's name either ("program N"), and holds
                // no privilege: it may do nothing.
                let asker = self.name_of(ask.caller);
                let asker_admin =
                    self.index_of_id(ask.caller).is_some_and(|a| self.agents[a].prog.has_privilege(Privilege::Admin));
                let who = self.index_of_id(ask.caller).unwrap_or(i);
                let target = Target::Shape { asker: &asker, asker_admin, target: &ask.target, op: ask.op };
                self.allow_for(i, who, rule, target)?;
                rpc::ok(&())
            }
            method::FOLLOW_LOG => {
                let is_console = self.log_signal.is_some_and(|(c, _, _)| c == i);
                self.allow(i, rule, Target::Console { is_console })?;
                rpc::ok(&self.follow_log(i).ok_or(ServiceError::Denied)?)
            }
            method::FUND => {
                let f: proto::Fund = r.decode()?;
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
                        }),
                    };
                    funding::fund(self.k, &f, &parties)
                };
                if let Err(refusal) = result {
                    let text = format!("refuse {caller}: fund {name} ({}): {} (rule FUND)", f.order, refusal.rule());
                    self.refused(i, text);
                    return Err(refusal.answer());
                }
                rpc::ok(&())
            }
            // `EXIT` is answered (not) in `request`; every other method of the table is above.
            _ => Err(ServiceError::UnknownMethod),
        }
    }

    fn grant(&mut self, t: usize, g: &proto::Grant, caller: &str) -> Response {
        self.agents[t].revoked.retain(|x| *x != g.interface);
        if !self.agents[t].granted.contains(&g.interface) {
            self.agents[t].granted.push(g.interface.clone());
        }
        let s = self.give_interface(t, &g.interface)?;
        self.decide(format!("grant {} `{}` (slot {s}): asked by {caller}", g.agent, g.interface));
        rpc::ok(&s)
    }

    fn revoke(&mut self, t: usize, g: &proto::Grant, caller: &str) -> Response {
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
        let what = deleted.map_or(String::from("held none; future lookups refused"), |s| {
            format!("capability in slot {s} deleted; future lookups refused")
        });
        self.decide(format!("revoke {} `{}`: {what}; asked by {caller}", g.agent, g.interface));
        rpc::ok(&())
    }
}
