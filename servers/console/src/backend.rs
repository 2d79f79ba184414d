//! The shell's backend on OZONE-OS: Studio's administration methods (the console has the `admin`
//! privilege), the kernel counters Studio reads for `profile`, and the TSC for `bench`.

use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::AgentError;
use ozone_agent_sdk::protocol::studio::{
    self as studio, AgentInfo, CapInfo, LogEntry, SystemMemory, Telemetry, method,
};
use ozone_agent_sdk::rpc::Client;
use ozone_console::shell::{Backend, Bench, Profile};

/// Studio, reached through the capability every program holds.
pub struct System {
    studio: Client,
}

impl System {
    pub fn new() -> System {
        System { studio: Client::studio() }
    }
}

/// The time-stamp counter.
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; every x86_64 CPU has it, and OZONE-OS
    // does not set CR4.TSD, so it is allowed in user mode.
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl Backend for System {
    fn list(&mut self, from: u32) -> Result<Vec<AgentInfo>, AgentError> {
        self.studio.call(method::LIST, &from)
    }

    fn caps(&mut self, agent: &str) -> Result<Vec<CapInfo>, AgentError> {
        self.studio.call(method::CAPS, &String::from(agent))
    }

    fn grant(&mut self, agent: &str, interface: &str) -> Result<u64, AgentError> {
        self.studio.call(method::GRANT, &studio::Grant { agent: agent.into(), interface: interface.into() })
    }

    fn revoke(&mut self, agent: &str, interface: &str) -> Result<(), AgentError> {
        self.studio.call(method::REVOKE, &studio::Grant { agent: agent.into(), interface: interface.into() })
    }

    fn kill(&mut self, agent: &str) -> Result<(), AgentError> {
        self.studio.call(method::KILL, &String::from(agent))
    }

    fn start(&mut self, agent: &str) -> Result<u64, AgentError> {
        self.studio.call(method::START, &String::from(agent))
    }

    fn log(&mut self, from: u32) -> Result<Vec<LogEntry>, AgentError> {
        self.studio.call(method::LOG, &from)
    }

    fn memory(&mut self) -> Result<SystemMemory, AgentError> {
        self.studio.call(method::MEMORY, &())
    }

    fn profile(&mut self, agent: &str) -> Result<Profile, AgentError> {
        let counters: Telemetry = self.studio.call(method::TELEMETRY, &String::from(agent))?;
        Ok(Profile::Counters { why: String::from("the syscall shaper is not running"), counters })
    }

    fn bench(&mut self, calls: u32) -> Result<Bench, AgentError> {
        let mut min = u64::MAX;
        let start = rdtsc();
        for _ in 0..calls {
            let t0 = rdtsc();
            let _: studio::MemInfo = self.studio.call(method::MY_MEMORY, &())?;
            min = min.min(rdtsc().wrapping_sub(t0));
        }
        let total = rdtsc().wrapping_sub(start);
        Ok(Bench { calls, total_cycles: total, min_cycles: if calls == 0 { 0 } else { min } })
    }

    fn shutdown(&mut self) -> AgentError {
        match self.studio.call::<u8, ()>(method::SHUTDOWN, &0) {
            Ok(()) => AgentError::BadReply,
            Err(e) => e,
        }
    }
}
