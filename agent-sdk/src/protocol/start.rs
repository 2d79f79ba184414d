//! What Studio tells a program it starts: the start-information page, whose address arrives in
//! `rdi` at the program's first instruction, and the fixed slots of a program's CNode.

/// `StartInfo::magic`.
pub const START_MAGIC: u64 = 0x6f7a_6f6e_6553_5431;

/// Slots of every program's CNode.
pub mod slot {
    /// A badged endpoint to Studio (the badge is the program's id).
    pub const STUDIO: u64 = 1;
    /// Servers: the endpoint they receive requests on (clients hold badged copies).
    pub const SERVICE: u64 = 2;
    /// Every program: a notification bound to its thread (interrupts, events, the timer's
    /// wake-ups: `crate::timer`, `crate::signals`).
    pub const NOTIFICATION: u64 = 3;
    /// `serial` device: the I/O port range of COM1 (0x3f8..0x400).
    pub const SERIAL_PORTS: u64 = 4;
    /// `serial` device: the IRQ handler of COM1 (IRQ 4), delivering to `NOTIFICATION`.
    pub const SERIAL_IRQ: u64 = 5;
    /// A program's device (at most one per program): its I/O port range (`SERIAL_PORTS` for
    /// `serial`, ports 0x40..=0x43 for `pit`).
    pub const DEVICE_PORTS: u64 = 4;
    /// A program's device: the handler of its interrupt line, delivering to `NOTIFICATION`
    /// (`SERIAL_IRQ` for `serial`, line 2 for `pit`).
    pub const DEVICE_IRQ: u64 = 5;
    /// Programs with their own pool (`vspaces` privilege): an untyped capability to allocate from.
    pub const POOL: u64 = 6;
    /// Programs with their own pool: their own CNode (to retype into and to manage their slots).
    pub const OWN_CNODE: u64 = 7;
    /// Programs with their own pool: their own address space (to map what they allocate).
    pub const OWN_VSPACE: u64 = 8;
    /// Unused: Studio gives no program the kernel telemetry capability (the shaper reads
    /// counters through Studio's `PROFILE_OF`).
    pub const TELEMETRY: u64 = 9;
    /// Servers providing an interface the syscall shaper shapes (one in the shaper's `uses`): a
    /// capability to the shaper's endpoint, badged with the server's id, on which it pulls the
    /// shaper's profile-control requests (`shaper::method::PULL`) when signalled
    /// (`shaper::CONTROL_SIGNAL`). (A program's fault endpoint is not in its CNode but in its
    /// thread's fault-handler slot, where only the kernel uses it.)
    pub const SHAPER: u64 = 15;
    /// Servers: the endpoint of the `k`-th interface they provide (`SERVICE` for the first,
    /// then slots 10 to 14).
    pub const fn service(k: u64) -> u64 {
        if k == 0 { SERVICE } else { 9 + k }
    }
    /// The most interfaces one program can provide.
    pub const MAX_SERVICES: usize = 6;
    /// Every program but the console server: a badged capability to the console server's
    /// endpoint, for log lines (`ozone_agent_sdk::log`); the badge is the program's id, which
    /// the console prints as the program's name.
    pub const LOG: u64 = 16;
    /// Slots from here up are free; Studio puts capabilities it grants here (name lookups).
    pub const FIRST_FREE: u64 = 17;
    /// Servers with `signals_clients`: the first slot of the clients' signal capabilities
    /// ([`client_signal`]); Studio's own slots end below it.
    pub const CLIENT_SIGNALS: u64 = 256;
    /// Servers with `signals_clients`: their CNode's radix (room for [`client_signal`] of every
    /// program id of a description).
    pub const CLIENT_SIGNALS_RADIX: u64 = 9;
    /// Servers with `signals_clients`: the slot of the signal-only capability to the
    /// notification of the client with program id `id` (`None` for an id no description has).
    pub const fn client_signal(id: u64) -> Option<u64> {
        if id == 0 || id > crate::protocol::system::MAX_PROGRAMS as u64 { None } else { Some(CLIENT_SIGNALS + id) }
    }
    const _: () = assert!(CLIENT_SIGNALS + crate::protocol::system::MAX_PROGRAMS as u64 <= 1 << CLIENT_SIGNALS_RADIX);
    /// The device manager (the `pci` device): the handlers of the PCI interrupt lines, GSI
    /// [`PCI_GSI_FIRST`](crate::protocol::system::PCI_GSI_FIRST)` + k` at `PCI_IRQS + k`, with no
    /// notification set (the driver that gets one sets its own).
    pub const PCI_IRQS: u64 = 256;
    /// The device manager: copies of the device untyped capabilities (the physical space that is
    /// not RAM), from here up, one after another, at most [`MAX_DEVICE_UNTYPED`]; the first
    /// empty slot ends them.
    pub const DEVICE_UNTYPED: u64 = 264;
    /// The most device untyped capabilities the device manager gets.
    pub const MAX_DEVICE_UNTYPED: u64 = 64;
    /// The device manager: its own slots start here.
    pub const DEVICE_FIRST_FREE: u64 = DEVICE_UNTYPED + MAX_DEVICE_UNTYPED;
}

/// The start-information page (read-only for the program).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    pub magic: u64,
    /// The program's id: the badge on its capabilities to Studio and to servers.
    pub id: u64,
    /// The program's name (`name_len` bytes of UTF-8).
    pub name: [u8; 32],
    pub name_len: u64,
    /// The heap Studio mapped (from the program's quota).
    pub heap_base: u64,
    pub heap_size: u64,
    /// The program's IPC buffer (also its TLS base).
    pub ipc_buffer: u64,
    /// Top of its stack.
    pub stack_top: u64,
    /// The instance's protocol key: method numbers are permuted with it ([`super::Permutation`]).
    pub protocol_key: u64,
    /// log2 of the number of slots of its CNode.
    pub cnode_radix: u64,
    /// Its memory quota in bytes.
    pub quota: u64,
    /// Programs with a pool (`slot::POOL`): its size in bytes.
    pub pool_size: u64,
    /// `vspaces` programs: the first address of the window they may map into other programs.
    pub share_window: u64,
    /// The id (badge) of the syscall shaper (the program with the `profiles` privilege), 0 if
    /// there is none.
    pub shaper_id: u64,
    /// For the shaper: the system description's `[system] shaper_warmup` (syscalls an agent
    /// makes before its profile is enforced); 0 for other programs.
    pub shaper_warmup: u64,
    /// A per-instance secret derived by Studio from the instance seed and the program's name;
    /// zero for programs that are not given one. The secure memory server seals blobs under a
    /// key derived from it, so it must never leave the program it was given to.
    pub secret: [u8; 32],
    /// The interfaces the program provides, in the order of its description's `provides`: the
    /// `k`-th is served on [`slot::service`]`(k)`. `provides_len[k]` bytes of UTF-8 each; an empty
    /// entry ends the list.
    pub provides: [[u8; super::system::MAX_NAME]; slot::MAX_SERVICES],
    pub provides_len: [u8; slot::MAX_SERVICES],
}

impl StartInfo {
    pub fn name(&self) -> &str {
        let n = (self.name_len as usize).min(self.name.len());
        core::str::from_utf8(&self.name[..n]).unwrap_or("?")
    }

    /// The `k`-th interface the program provides, if it provides that many.
    pub fn provided(&self, k: usize) -> Option<&str> {
        let n = (*self.provides_len.get(k)? as usize).min(super::system::MAX_NAME);
        if n == 0 {
            return None;
        }
        core::str::from_utf8(&self.provides[k][..n]).ok()
    }

    /// Where the program serves `interface`: the `k` with `provided(k) == Some(interface)`.
    pub fn service_index(&self, interface: &str) -> Option<usize> {
        (0..slot::MAX_SERVICES).find(|&k| self.provided(k) == Some(interface))
    }

    /// Record the interfaces of `names` (at most [`slot::MAX_SERVICES`], each at most
    /// [`super::system::MAX_NAME`] bytes: the description's checks; longer ones are left out).
    pub fn set_provides<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        for (k, name) in names.into_iter().take(slot::MAX_SERVICES).enumerate() {
            if name.len() <= super::system::MAX_NAME {
                self.provides[k][..name.len()].copy_from_slice(name.as_bytes());
                self.provides_len[k] = name.len() as u8;
            }
        }
    }
}

const _: () = assert!(core::mem::size_of::<StartInfo>() <= 4096);

/// Where in every program's address space a `vspaces` server (secure memory) maps shared regions:
/// Studio never places anything there.
pub const SHARE_WINDOW: u64 = 0x300_0000_0000;
pub const SHARE_WINDOW_SIZE: u64 = 0x10_0000_0000;
