//! The system description: which servers and agents Studio starts, with what priority and memory
//! quota, which interfaces they provide and may use, and which devices and privileges they get.
//!
//! It is written in TOML (`initrd/system.toml`); the build (`cargo xtask`) reads it, checks it
//! with [`SystemDescription::validate`] and stores it postcard-encoded in the initrd as
//! [`COMPILED_NAME`], so the running system parses no TOML. Studio decodes it with
//! [`SystemDescription::from_postcard`] and checks it again against the memory it really has.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Name of the compiled description inside the initrd.
pub const COMPILED_NAME: &str = "system.bin";

/// The interface every program may use: Studio itself.
pub const STUDIO_INTERFACE: &str = "studio";

/// The longest program or interface name.
pub const MAX_NAME: usize = 24;

/// The most programs in one description.
pub const MAX_PROGRAMS: usize = 64;

/// The smallest memory quota (image, stack, IPC buffer, page tables and a little heap).
pub const MIN_MEMORY_KIB: u32 = 256;

/// Priorities above this belong to Studio (it runs at 200).
pub const MAX_PRIORITY: u8 = 199;

/// The lowest priority of the servers' band, `SERVER_PRIORITY_MIN..=MAX_PRIORITY`. Agents stay
/// below it ([`AGENT_PRIORITY_MAX`]), so an agent that never blocks cannot keep a server from
/// running: the shell, secure memory, the shaper and every other server outrank every agent.
/// A server may sit lower than its band (the shaper's ticker runs at 1, when all else is idle).
pub const SERVER_PRIORITY_MIN: u8 = 120;

/// The highest priority an agent may have: the top of the agents' band, `1..=AGENT_PRIORITY_MAX`.
pub const AGENT_PRIORITY_MAX: u8 = SERVER_PRIORITY_MIN - 1;

/// Devices a program may be given (at most one each: a device's I/O ports and interrupt handler
/// take the fixed slots [`DEVICE_PORTS`](super::start::slot::DEVICE_PORTS) and
/// [`DEVICE_IRQ`](super::start::slot::DEVICE_IRQ)):
///
/// - `serial`: COM1, I/O ports 0x3f8..=0x3ff and interrupt line 4;
/// - `pit`: the 8254 programmable interval timer, I/O ports 0x40..=0x43 and interrupt line 2.
///
/// - `pci`: the PCI bus, for the device manager: the configuration-space ports 0xcf8..=0xcff,
///   the handlers of the PCI interrupt lines (GSIs [`PCI_GSI_FIRST`]`..`[`PCI_GSI_END`], at
///   [`PCI_IRQS`](super::start::slot::PCI_IRQS)), and every device untyped capability (the
///   physical space that is not RAM, where BARs live, from
///   [`DEVICE_UNTYPED`](super::start::slot::DEVICE_UNTYPED)). It hands each driver its own
///   device only (`docs/devices.md`).
///
/// Interrupt lines are the kernel's: global system interrupts (GSIs) of the I/O APIC, with no
/// ISA interrupt-source override applied. The PIT is ISA IRQ 0, which every PC firmware
/// (QEMU's MADT included) overrides to GSI 2; COM1 (ISA IRQ 4) has no override, so its GSI is 4.
pub const DEVICES: [&str; 3] = ["serial", "pit", "pci"];

/// The PCI interrupt lines the `pci` device holds: on the q35 machine the chipset wires PIRQA..H
/// to the I/O APIC's inputs 16..=23.
pub const PCI_GSI_FIRST: u8 = 16;
/// One past the last PCI interrupt line.
pub const PCI_GSI_END: u8 = 24;

/// The kinds of PCI device a driver may claim from the device manager (a program's `pci`).
pub const PCI_KINDS: [&str; 2] = ["virtio-blk", "virtio-net"];

/// A privilege a program may be given in the description, each named after the Studio method
/// family it unlocks (Studio's authorisation table, `studio-server/src/policy.rs`, says which
/// method needs which). In the TOML and in `system.bin` a privilege is its name; a name that is
/// not one of these does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    /// Administer agents through Studio (list, grant, revoke, kill, start, read the logs, shut
    /// down).
    Admin,
    /// Receive copies of client programs' address-space capabilities (to map memory into them),
    /// with a memory pool of its own.
    Vspaces,
    /// Read programs' kernel counters and syscall profiles, and have Studio narrow agents'
    /// profiles (through Studio, never with a thread capability); ask Studio whether a program
    /// may shape another's syscall profile.
    Profiles,
    /// Read what the description says about its clients that a server needs to serve them
    /// (their names, PCI claims, store quotas, network rules: Studio's `CLIENT`), and tell
    /// Studio of the requests of theirs it refuses (`REFUSED`: events of the client's that
    /// Studio's watch judges — a server given this privilege is trusted to tell the truth about
    /// its clients).
    Clients,
    /// Read Studio's decision log (`LOG`): the console, to print it, and the journal, to keep it
    /// on disk.
    Journal,
    /// Keep the syscall shaper's profiles across boots: read every agent's (`SAVED`) and hand
    /// those of an earlier boot back (`RESTORE`), as Studio's `MAY_SHAPE` allows. The journal's.
    Keeper,
}

impl Privilege {
    /// Every privilege, in the order the description's documentation lists them.
    pub const ALL: [Privilege; 6] = [
        Privilege::Admin,
        Privilege::Vspaces,
        Privilege::Profiles,
        Privilege::Clients,
        Privilege::Journal,
        Privilege::Keeper,
    ];

    /// Its name in the description.
    pub const fn name(self) -> &'static str {
        match self {
            Privilege::Admin => "admin",
            Privilege::Vspaces => "vspaces",
            Privilege::Profiles => "profiles",
            Privilege::Clients => "clients",
            Privilege::Journal => "journal",
            Privilege::Keeper => "keeper",
        }
    }

    /// The privilege called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Privilege> {
        Privilege::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl core::fmt::Display for Privilege {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Privilege {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Every privilege's name, as an error message lists them.
struct Known;

impl core::fmt::Display for Known {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, p) in Privilege::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.name())?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Privilege {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Privilege, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Privilege;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("a privilege name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Privilege, E> {
                Privilege::from_name(v)
                    .ok_or_else(|| E::custom(format_args!("unknown privilege `{v}` (known: {})", Known)))
            }
        }
        d.deserialize_str(Name)
    }
}

/// When Studio starts a program again after it ended on its own (the description's `restart`).
///
/// An operator's `kill` (Studio's `KILL`) is never followed by a restart, whatever the policy:
/// it is how a program is stopped on purpose (`start` runs it again). Restarts are limited per
/// program (Studio's `MAX_RESTARTS`).
///
/// In the description: `restart = "never" | "on-failure" | "always"`; `false` is `"never"` and
/// `true` is `"always"` (restart after any fault or exit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    /// Never restarted (the default).
    #[default]
    Never,
    /// Restarted after a fault, or an exit with a status other than 0.
    OnFailure,
    /// Restarted after a fault or any exit.
    Always,
}

impl Restart {
    /// Every policy.
    pub const ALL: [Restart; 3] = [Restart::Never, Restart::OnFailure, Restart::Always];

    /// Its name in the description.
    pub const fn name(self) -> &'static str {
        match self {
            Restart::Never => "never",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }

    /// The policy called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Restart> {
        Restart::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether a program that ended this way is restarted: `exit` is its exit status, `None` for
    /// a fault. (A `kill` is no end of the program's own: never restarted.)
    pub const fn restarts_after(self, exit: Option<u64>) -> bool {
        match self {
            Restart::Never => false,
            Restart::OnFailure => !matches!(exit, Some(0)),
            Restart::Always => true,
        }
    }
}

impl core::fmt::Display for Restart {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Restart {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Restart {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Restart, D::Error> {
        struct Policy;
        impl serde::de::Visitor<'_> for Policy {
            type Value = Restart;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(r#"a restart policy: "never", "on-failure", "always", true or false"#)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Restart, E> {
                Ok(if v { Restart::Always } else { Restart::Never })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Restart, E> {
                Restart::from_name(v).ok_or_else(|| {
                    E::custom(format_args!(
                        r#"unknown restart policy `{v}` (known: "never", "on-failure", "always", true, false)"#
                    ))
                })
            }
        }
        // The TOML may say `true`/`false`; the compiled form (postcard) holds the name only.
        if d.is_human_readable() { d.deserialize_any(Policy) } else { d.deserialize_str(Policy) }
    }
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemDescription {
    pub system: SystemSettings,
    #[serde(default, rename = "program")]
    pub programs: Vec<Program>,
}

/// Settings of the whole system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSettings {
    /// Memory Studio may hand out as quotas, in MiB; the quotas together must fit.
    pub memory_mib: u32,
    /// The syscall shaper's warm-up window: requests an agent makes before its profile is enforced.
    #[serde(default = "default_warmup")]
    pub shaper_warmup: u32,
    /// Studio traces every agent it starts (the kernel's per-thread event trace,
    /// `ozone_abi::trace`) and watches its behaviour. On unless set to `false`.
    #[serde(default = "default_trace")]
    pub trace: bool,
    /// Studio prints every traced record to the serial console (`[studio] trace ...` lines),
    /// for `cargo xtask studio record`. Off unless set.
    #[serde(default)]
    pub trace_dump: bool,
    /// The highest graded response Studio's watch carries out when its behaviour model finds an
    /// agent anomalous (a program's own `respond` overrides it); the levels above are decided
    /// and logged, not done. `"alert"` unless set.
    #[serde(default)]
    pub respond: Response,
    /// How long a suspended agent waits for a human (`studio allow`, `studio resume`) before
    /// Studio kills it, in seconds. 30 unless set.
    #[serde(default = "default_suspend_seconds")]
    pub suspend_seconds: u32,
    /// Studio lowers a CPU-bound agent's priority within its band (and restores it once the agent
    /// waits for work again), so that interactive agents of its priority run as soon as their
    /// work arrives. On unless set to `false`.
    #[serde(default = "default_trace")]
    pub adapt: bool,
}

impl SystemSettings {
    /// The settings a description that gives only `memory_mib` has (every other field's
    /// default, as the parser fills it in).
    pub fn new(memory_mib: u32) -> SystemSettings {
        SystemSettings {
            memory_mib,
            shaper_warmup: default_warmup(),
            trace: default_trace(),
            trace_dump: false,
            respond: Response::default(),
            suspend_seconds: default_suspend_seconds(),
            adapt: default_trace(),
        }
    }
}

fn default_suspend_seconds() -> u32 {
    30
}

/// The graded responses of Studio's watch, in order (docs/studio.md, "Responses"): each
/// includes the ones before it. In the description: `respond = "off" | "alert" | "throttle" |
/// "revoke" | "suspend" | "kill"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// Nothing, not even the log line.
    Off,
    /// Log the decision and its reasons.
    #[default]
    Alert,
    /// Also lower the agent's priority within its band.
    Throttle,
    /// Also take back every interface it holds or may look up (future lookups refused).
    Revoke,
    /// Also stop its thread, its memory kept for inspection, until a human decides.
    Suspend,
    /// Also kill it and reclaim everything.
    Kill,
}

impl Response {
    /// The response's name in the description (and in Studio's reports).
    pub const fn name(self) -> &'static str {
        match self {
            Response::Off => "off",
            Response::Alert => "alert",
            Response::Throttle => "throttle",
            Response::Revoke => "revoke",
            Response::Suspend => "suspend",
            Response::Kill => "kill",
        }
    }
}

fn default_trace() -> bool {
    true
}

fn default_warmup() -> u32 {
    64
}

/// Whether a program serves others or is an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Server,
    Agent,
}

/// One server or agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// Unique name (the name service and the shell use it).
    pub name: String,
    /// The ELF's name in the initrd.
    pub binary: String,
    pub kind: Kind,
    /// Scheduling priority: 1..=119 for an agent ([`AGENT_PRIORITY_MAX`]), 1..=199 for a server
    /// (its band is [`SERVER_PRIORITY_MIN`] and up). Studio also makes it the thread's maximum
    /// controlled priority, so no holder of the thread's capability can raise a thread with it
    /// above this.
    pub priority: u8,
    /// Memory quota in KiB: everything the program's objects and pages take.
    pub memory_kib: u32,
    /// Interfaces this program serves (it gets one endpoint; clients reach it by these names).
    #[serde(default)]
    pub provides: Vec<String>,
    /// Interfaces this program may look up by name at start (more can be granted later).
    #[serde(default)]
    pub uses: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default)]
    pub privileges: Vec<Privilege>,
    /// Restart the program when it faults or exits ([`Restart`]; `kill` never restarts it).
    #[serde(default)]
    pub restart: Restart,
    /// Start it at boot (otherwise it waits for `start NAME`).
    #[serde(default = "yes")]
    pub start: bool,
    /// Servers: Studio puts a signal-only copy of each client's notification (badged with the
    /// interface's signal bit, e.g. `timer::TIMER_SIGNAL`) in this server's CNode, at
    /// [`client_signal`](super::start::slot::client_signal)`(client id)`, while the client runs
    /// and holds one of its interfaces (the timer server wakes its clients this way).
    #[serde(default)]
    pub signals_clients: bool,
    /// Drivers: the kinds of PCI device ([`PCI_KINDS`]) this program may claim from the device
    /// manager (the program with the `pci` device), which hands it that device's BARs and
    /// interrupt and nothing else. A driver gets a memory pool of its own (for its mappings and
    /// its devices' DMA memory).
    #[serde(default)]
    pub pci: Vec<String>,
    /// Its quota in the storage server (`store` interface), in KiB; 0: no namespace there.
    #[serde(default)]
    pub store_kib: u32,
    /// The ports it may listen on through the network server (`net` interface), as the network
    /// server parses them (`docs/network.md`): e.g. `"8080"`, `"7000-7010"`.
    #[serde(default)]
    pub net_listen: Vec<String>,
    /// The peers it may reach through the network server, e.g. `"10.0.2.2/32:8000-8100"`.
    #[serde(default)]
    pub net_connect: Vec<String>,
    /// A number the program may ask Studio for (`studio::method::MY_SEED`,
    /// `ozone_agent_sdk::process::my_seed`) and use as it likes: a scenario program chooses
    /// what it does from it, so two blocks of one binary with different seeds behave
    /// differently, and one block behaves the same on every boot. 0 (the default) means none
    /// was given. TOML integers are signed: `0..=0x7fff_ffff_ffff_ffff`.
    #[serde(default)]
    pub seed: u64,
    /// The highest graded response Studio's watch carries out for this program, instead of the
    /// system's `respond`.
    #[serde(default)]
    pub respond: Option<Response>,
}

fn yes() -> bool {
    true
}

impl Program {
    /// Its memory quota in bytes (`memory_kib`).
    pub fn quota(&self) -> u64 {
        u64::from(self.memory_kib) * 1024
    }

    pub fn has_privilege(&self, p: Privilege) -> bool {
        self.privileges.contains(&p)
    }

    pub fn has_device(&self, d: &str) -> bool {
        self.devices.iter().any(|x| x == d)
    }

    /// Whether Studio gives it a memory pool, its own CNode and its own address space: programs
    /// that map memory for others (`vspaces`), the device manager (`pci` device: it makes BAR
    /// frames from device memory) and drivers (`pci` claims: they map BARs and DMA memory).
    pub fn has_pool(&self) -> bool {
        self.has_privilege(Privilege::Vspaces) || self.has_device("pci") || !self.pci.is_empty()
    }

    pub fn may_use(&self, interface: &str) -> bool {
        interface == STUDIO_INTERFACE || self.uses.iter().any(|x| x == interface)
    }
}

impl SystemDescription {
    /// Check the description; `binary_exists` says whether the initrd will hold a binary.
    /// Returns every problem found, each a sentence naming the program and the field.
    pub fn validate(&self, binary_exists: &dyn Fn(&str) -> bool) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.programs.is_empty() {
            errors.push(String::from("the description has no programs"));
        }
        if self.programs.len() > MAX_PROGRAMS {
            errors.push(format!("{} programs: at most {MAX_PROGRAMS} are supported", self.programs.len()));
        }
        let mut interfaces: Vec<(&str, &str)> = Vec::new();
        for (i, p) in self.programs.iter().enumerate() {
            let who = format!("program `{}`", p.name);
            if p.name.is_empty() || p.name.len() > MAX_NAME || !p.name.bytes().all(name_byte) {
                errors.push(format!("{who}: a name is 1 to {MAX_NAME} of a-z, 0-9, `-` and `_`"));
            }
            if self.programs[..i].iter().any(|q| q.name == p.name) {
                errors.push(format!("{who}: duplicate name"));
            }
            if !binary_exists(&p.binary) {
                errors.push(format!("{who}: unknown binary `{}`", p.binary));
            }
            if p.priority == 0 || p.priority > MAX_PRIORITY {
                errors.push(format!("{who}: priority {} is outside 1..={MAX_PRIORITY}", p.priority));
            } else if p.kind == Kind::Agent && p.priority > AGENT_PRIORITY_MAX {
                errors.push(format!(
                    "{who}: priority {} is in the servers' band ({SERVER_PRIORITY_MIN}..={MAX_PRIORITY}); \
                     an agent's priority is 1..={AGENT_PRIORITY_MAX}",
                    p.priority
                ));
            }
            if p.memory_kib < MIN_MEMORY_KIB {
                errors.push(format!("{who}: memory_kib {} is below the minimum of {MIN_MEMORY_KIB}", p.memory_kib));
            }
            if p.kind == Kind::Agent && !p.provides.is_empty() && p.provides.iter().any(|s| s == STUDIO_INTERFACE) {
                errors.push(format!("{who}: `{STUDIO_INTERFACE}` is Studio's own interface"));
            }
            if p.provides.len() > super::start::slot::MAX_SERVICES {
                errors.push(format!(
                    "{who}: provides {} interfaces, at most {}",
                    p.provides.len(),
                    super::start::slot::MAX_SERVICES
                ));
            }
            for s in &p.provides {
                if s.is_empty() || s.len() > MAX_NAME || !s.bytes().all(name_byte) || s == STUDIO_INTERFACE {
                    errors.push(format!("{who}: cannot provide an interface named `{s}`"));
                } else if let Some((_, other)) = interfaces.iter().find(|(n, _)| n == s) {
                    errors.push(format!("{who}: interface `{s}` is already provided by `{other}`"));
                } else {
                    interfaces.push((s, &p.name));
                }
            }
            for d in &p.devices {
                if !DEVICES.contains(&d.as_str()) {
                    errors.push(format!("{who}: unknown device `{d}` (known: {})", DEVICES.join(", ")));
                } else if self.programs[..i].iter().any(|q| q.has_device(d)) {
                    errors.push(format!("{who}: device `{d}` is already given to another program"));
                }
            }
            if p.devices.len() > 1 {
                errors.push(format!("{who}: {} devices, at most one per program", p.devices.len()));
            }
            if p.signals_clients {
                if p.kind != Kind::Server || p.provides.is_empty() {
                    errors.push(format!("{who}: `signals_clients` is for a server that provides an interface"));
                }
                if p.has_pool() {
                    errors.push(format!(
                        "{who}: `signals_clients` does not go with the `vspaces` privilege, the `pci` device or \
                         `pci` claims (all use the slots from 256 up)"
                    ));
                }
            }
            for (k, d) in p.pci.iter().enumerate() {
                if !PCI_KINDS.contains(&d.as_str()) {
                    errors.push(format!("{who}: unknown PCI device kind `{d}` (known: {})", PCI_KINDS.join(", ")));
                } else if p.pci[..k].contains(d) {
                    errors.push(format!("{who}: PCI device kind `{d}` is named twice"));
                }
            }
            if !p.pci.is_empty() && p.has_device("pci") {
                errors.push(format!("{who}: the device manager (`pci` device) claims no device of its own"));
            }
            for (k, x) in p.privileges.iter().enumerate() {
                if p.privileges[..k].contains(x) {
                    errors.push(format!("{who}: privilege `{x}` is given twice"));
                }
            }
        }
        for p in &self.programs {
            for u in &p.uses {
                if u != STUDIO_INTERFACE && !interfaces.iter().any(|(n, _)| n == u) {
                    errors.push(format!("program `{}`: uses unknown interface `{u}`", p.name));
                }
            }
        }
        let total: u64 = self.programs.iter().map(|p| p.memory_kib as u64).sum();
        if total > self.system.memory_mib as u64 * 1024 {
            errors.push(format!(
                "the memory quotas add up to {} KiB, beyond the system's memory_mib = {} ({} KiB)",
                total,
                self.system.memory_mib,
                self.system.memory_mib as u64 * 1024
            ));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    pub fn to_postcard(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn from_postcard(bytes: &[u8]) -> Result<SystemDescription, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The program that provides `interface`.
    pub fn provider(&self, interface: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.provides.iter().any(|s| s == interface))
    }
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn program(name: &str) -> Program {
        Program {
            name: name.into(),
            binary: name.into(),
            kind: Kind::Agent,
            priority: 100,
            memory_kib: 1024,
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

    fn system(programs: Vec<Program>) -> SystemDescription {
        SystemDescription { system: SystemSettings { shaper_warmup: 8, ..SystemSettings::new(64) }, programs }
    }

    fn errors(s: &SystemDescription) -> Vec<String> {
        s.validate(&|b| b != "missing").err().unwrap_or_default()
    }

    #[test]
    fn a_good_description_passes_and_round_trips() {
        let mut echo = program("echo");
        echo.kind = Kind::Server;
        echo.provides = vec!["echo".into()];
        let mut client = program("client");
        client.uses = vec!["echo".into()];
        let s = system(vec![echo, client]);
        assert_eq!(errors(&s), Vec::<String>::new());
        assert_eq!(SystemDescription::from_postcard(&s.to_postcard()).unwrap(), s);
        assert_eq!(s.provider("echo").unwrap().name, "echo");
        assert!(s.program("client").unwrap().may_use("studio"));
    }

    #[test]
    fn every_mistake_is_named() {
        let mut a = program("a");
        a.binary = "missing".into();
        let b = program("a");
        let mut c = program("c");
        c.uses = vec!["nosuch".into()];
        c.devices = vec!["gpu".into()];
        c.privileges = vec![Privilege::Admin, Privilege::Profiles, Privilege::Admin];
        c.priority = 250;
        c.memory_kib = 16;
        let mut d = program("D!");
        d.memory_kib = 70 * 1024;
        let e = errors(&system(vec![a, b, c, d]));
        let has = |needle: &str| assert!(e.iter().any(|x| x.contains(needle)), "no `{needle}` in {e:?}");
        has("unknown binary `missing`");
        has("duplicate name");
        has("unknown interface `nosuch`");
        has("unknown device `gpu`");
        has("privilege `admin` is given twice");
        has("priority 250");
        has("below the minimum");
        has("a name is 1 to");
        has("beyond the system's memory_mib");
    }

    #[test]
    fn agents_stay_below_the_servers_band() {
        let mut top = program("top");
        top.priority = AGENT_PRIORITY_MAX;
        let mut server = program("server");
        server.kind = Kind::Server;
        server.priority = MAX_PRIORITY;
        let mut low_server = program("ticker");
        low_server.kind = Kind::Server;
        low_server.priority = 1;
        assert_eq!(errors(&system(vec![top, server, low_server])), Vec::<String>::new());

        for priority in [SERVER_PRIORITY_MIN, 150, MAX_PRIORITY] {
            let mut a = program("greedy");
            a.priority = priority;
            let e = errors(&system(vec![a]));
            assert_eq!(
                e,
                vec![format!(
                    "program `greedy`: priority {priority} is in the servers' band (120..=199); an agent's \
                     priority is 1..=119"
                )]
            );
        }
        // Out of every band: one error, not two.
        let mut a = program("studio-level");
        a.priority = 200;
        assert_eq!(
            errors(&system(vec![a])),
            vec![String::from("program `studio-level`: priority 200 is outside 1..=199")]
        );
        assert_eq!(SERVER_PRIORITY_MIN, AGENT_PRIORITY_MAX + 1);
    }

    #[test]
    fn privileges_are_names_and_nothing_else() {
        use serde::de::value::{Error as ValueError, StrDeserializer};
        for p in Privilege::ALL {
            assert_eq!(Privilege::from_name(p.name()), Some(p));
            let d = StrDeserializer::<ValueError>::new(p.name());
            assert_eq!(Privilege::deserialize(d), Ok(p));
        }
        for bad in ["root", "Admin", "admin ", "", "vspace"] {
            assert_eq!(Privilege::from_name(bad), None);
            let e = Privilege::deserialize(StrDeserializer::<ValueError>::new(bad)).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("unknown privilege `{bad}` (known: admin, vspaces, profiles, clients, journal, keeper)")
            );
        }
        // In the compiled description too: a privilege is its name, and an unknown one does not
        // decode.
        let mut a = program("a");
        a.privileges = vec![Privilege::Vspaces];
        let s = system(vec![a]);
        let bytes = s.to_postcard();
        assert_eq!(SystemDescription::from_postcard(&bytes).unwrap(), s);
        let at = bytes.windows(7).position(|w| w == b"vspaces").unwrap();
        let mut forged = bytes.clone();
        forged[at..at + 7].copy_from_slice(b"vspacez");
        assert!(SystemDescription::from_postcard(&forged).is_err());
    }

    #[test]
    fn interfaces_have_one_provider() {
        let mut a = program("a");
        a.provides = vec!["x".into()];
        let mut b = program("b");
        b.provides = vec!["x".into(), "studio".into()];
        let e = errors(&system(vec![a, b]));
        assert!(e.iter().any(|x| x.contains("already provided by `a`")));
        assert!(e.iter().any(|x| x.contains("cannot provide an interface named `studio`")));
    }

    #[test]
    fn restart_policies_round_trip_and_decide() {
        for r in Restart::ALL {
            let mut a = program("a");
            a.restart = r;
            let s = system(vec![a]);
            assert_eq!(SystemDescription::from_postcard(&s.to_postcard()).unwrap(), s);
            assert_eq!(Restart::from_name(r.name()), Some(r));
        }
        // A forged policy name does not decode.
        let mut a = program("a");
        a.restart = Restart::Always;
        let bytes = system(vec![a]).to_postcard();
        let at = bytes.windows(6).position(|w| w == b"always").unwrap();
        let mut forged = bytes.clone();
        forged[at..at + 6].copy_from_slice(b"alwayz");
        assert!(SystemDescription::from_postcard(&forged).is_err());
        // Which ends restart: a fault is `None`, an exit its status.
        let table = [
            (Restart::Never, [false, false, false]),
            (Restart::OnFailure, [true, false, true]),
            (Restart::Always, [true, true, true]),
        ];
        for (r, want) in table {
            assert_eq!([r.restarts_after(None), r.restarts_after(Some(0)), r.restarts_after(Some(3))], want, "{r}");
        }
    }

    #[test]
    fn devices_and_client_signals_are_checked() {
        let mut timer = program("timer");
        timer.kind = Kind::Server;
        timer.provides = vec!["timer".into()];
        timer.devices = vec!["pit".into()];
        timer.signals_clients = true;
        let mut client = program("client");
        client.uses = vec!["timer".into()];
        let s = system(vec![timer.clone(), client]);
        assert_eq!(errors(&s), Vec::<String>::new());
        assert_eq!(SystemDescription::from_postcard(&s.to_postcard()).unwrap(), s);

        let mut two = timer.clone();
        two.name = "two".into();
        two.provides = vec!["other".into()];
        two.devices = vec!["serial".into(), "pit".into()];
        let mut agent = program("agent");
        agent.signals_clients = true;
        let mut pooled = timer.clone();
        pooled.name = "pooled".into();
        pooled.provides = vec!["third".into()];
        pooled.devices = vec![];
        pooled.privileges = vec![Privilege::Vspaces];
        let e = errors(&system(vec![timer, two, agent, pooled]));
        let has = |needle: &str| assert!(e.iter().any(|x| x.contains(needle)), "no `{needle}` in {e:?}");
        has("program `two`: 2 devices, at most one per program");
        has("program `two`: device `pit` is already given to another program");
        has("program `agent`: `signals_clients` is for a server that provides an interface");
        has("program `pooled`: `signals_clients` does not go with the `vspaces` privilege");
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(SystemDescription::from_postcard(&[0xff; 7]).is_err());
        assert!(SystemDescription::from_postcard(&[]).is_err());
    }
}
