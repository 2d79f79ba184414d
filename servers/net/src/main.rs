//! The network server (`net`): a virtio-net driver and the smoltcp stack on it.
//!
//! Studio starts it with a `virtio-net` claim (a pool, its own CNode and address space), the
//! `devices` interface to claim its card from the device manager, `timer` to wake for the
//! stack's timers, and the `clients` privilege to learn each client's rules (`CLIENT`: its
//! `net_listen` and `net_connect`). The interface asks DHCP for an address; if no server answers
//! within [`DHCP_PATIENCE_MS`] (two instances joined point to point have none), it takes
//! 10.0.3.N/24, N the last byte of its MAC address. Without a card it says so and ends.
//!
//! The loop: a request is handled at once (the service never blocks); the card's interrupt and
//! the timer wake it to poll the stack; the timer is armed for the stack's next deadline.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::studio::method as studio;
use ozone_agent_sdk::protocol::timer::TIMER_SIGNAL;
use ozone_agent_sdk::rpc::{Client, Polled, Server};
use ozone_agent_sdk::timer::{self, Deadline};
use ozone_agent_sdk::{entropy, entry, println};
use ozone_net::nic::{Nic, NicError};
use ozone_net::rules::NetRules;
use ozone_net::service::{Directory, NetService};
use ozone_net::stack::{IpConfig, Limits, Stack};
use ozone_virtio::device::DEVICE_SIGNAL;
use ozone_virtio::net::{Net, NetError};

entry!(run);

/// How long DHCP may take before the fixed address.
const DHCP_PATIENCE_MS: u64 = 3000;
/// The longest the loop sleeps without a request or a frame.
const MAX_SLEEP_MS: u64 = 1000;

/// The card as the stack sees it.
struct Card(Net);

impl Nic for Card {
    fn mac(&self) -> [u8; 6] {
        self.0.mac()
    }
    fn transmit(&mut self, frame: &[u8]) -> Result<(), NicError> {
        self.0.transmit(frame).map_err(|e| match e {
            NetError::TooLong => NicError::TooLong,
            _ => NicError::Device,
        })
    }
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.0.receive(buf)
    }
}

/// Clients' rules as Studio gives them; a client whose rules do not parse gets none (and the
/// server says why once per request, which is rare: xtask checks the description).
struct Rules(Client);

impl Directory for Rules {
    fn rules(&mut self, badge: u64) -> Option<(NetRules, u32)> {
        let c = self.0.call(studio::CLIENT, &badge).ok()?;
        match NetRules::parse(c.net_listen.iter().map(|s| s.as_str()), c.net_connect.iter().map(|s| s.as_str())) {
            Ok(r) => Some((r, c.run)),
            Err(e) => {
                println!("{}: its network rules do not parse: {e:?}", c.name);
                None
            }
        }
    }
    fn sees_all(&mut self, badge: u64) -> bool {
        self.0.call(studio::CLIENT, &badge).is_ok_and(|c| c.admin)
    }
}

fn run() -> u64 {
    // The console's shell calls the network server (`net`): a Call from here to the console
    // could meet the console waiting for this server's answer. Lines go one way, never waiting.
    ozone_agent_sdk::log::set_nonblocking();
    let net = match Net::open() {
        Ok(n) => n,
        Err(e) => {
            println!("no network card ({e:?}): the network is off");
            return 0;
        }
    };
    let hz = match timer::tsc_hz() {
        Ok(hz) if hz >= 1000 => hz,
        other => {
            println!("no clock from the timer server ({other:?}): cannot run the stack");
            return 1;
        }
    };
    let now_ms = || timer::now() / (hz / 1000);
    let mac = net.mac();
    let interrupt = net.has_interrupt();
    println!(
        "card {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}{}",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5],
        if interrupt { "" } else { " (no interrupt line: polling)" }
    );
    let seed = u64::from_le_bytes(entropy::boot_bytes()[8..16].try_into().unwrap_or([0; 8])) ^ entropy::tsc();
    let started = now_ms();
    let stack = match Stack::new(Card(net), IpConfig::Dhcp, seed, Limits::default(), started) {
        Ok(s) => s,
        Err(e) => {
            println!("cannot start the stack: {e:?}");
            return 1;
        }
    };
    let mut service = NetService::new(stack, Rules(Client::studio()));
    let mut server = match Server::provided(ozone_agent_sdk::protocol::net::INTERFACE) {
        Ok(s) => s,
        Err(e) => {
            println!("cannot serve `net`: {e}");
            return 1;
        }
    };
    let mut answer = None;
    let mut armed: Option<u64> = None;
    let mut told = false;
    loop {
        let now = now_ms();
        service.poll(now);
        if !told {
            if let Some(lease) = service.stack().lease() {
                let a = lease.address.addr;
                println!("address {}.{}.{}.{}/{} from DHCP", a[0], a[1], a[2], a[3], lease.address.prefix);
                told = true;
            } else if now.saturating_sub(started) >= DHCP_PATIENCE_MS {
                let fixed = [10, 0, 3, mac[5]];
                match service.stack_mut().fall_back_to_static(fixed, 24) {
                    Ok(_) => println!("no DHCP server: address 10.0.3.{}/24", mac[5]),
                    Err(e) => println!("no DHCP server, and no fixed address: {e:?}"),
                }
                told = true;
            }
        }
        // Wake for the stack's next deadline (or to check on DHCP), not later than MAX_SLEEP_MS.
        let sleep = service.next_poll(now).unwrap_or(MAX_SLEEP_MS).min(if told { MAX_SLEEP_MS } else { 100 });
        let due = timer::now().saturating_add(sleep.max(1) * (hz / 1000));
        if armed.is_none_or(|a| due < a || a <= timer::now()) && timer::arm(Deadline(due)).is_ok() {
            armed = Some(due);
        }
        match server.answer_and_wait(answer.take()) {
            Polled::Request(r) => answer = Some(service.handle(now_ms(), r.badge, &r)),
            Polled::Other(m) => {
                if m.badge & DEVICE_SIGNAL != 0 {
                    service.stack_mut().nic_mut().0.interrupted();
                }
                if m.badge & TIMER_SIGNAL != 0 {
                    armed = None;
                }
                if m.badge & (DEVICE_SIGNAL | TIMER_SIGNAL) == 0 && m.badge != 0 {
                    answer = Some(Err(ServiceError::UnknownMethod));
                }
            }
            Polled::Answered | Polled::Nothing => {}
        }
    }
}
