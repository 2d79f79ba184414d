//! Guest benchmark program, for `cargo xtask bench` (under `-icount` a TSC tick is one guest
//! instruction, and the time the machine waits for the emulated card is counted as well): the
//! raw device path of the network, below the network server.
//!
//! - `nic_arp_roundtrip`: one frame out and its answer in, through the virtio-net driver
//!   (`ozone_virtio::net`) on this program's own card, joined to a QEMU user network of its own:
//!   an ARP request for the gateway (10.0.2.2), which QEMU's user network answers at once. What a
//!   frame pays to cross the card both ways, against which the network server's exchanges
//!   (`net_*`, at the instance's own address: its loopback path, no card) are to be read.
//!
//! The answer is polled for (the program asks the driver again at once): no interrupt, no
//! scheduling, only the driver and the device. Prints
//! `bench: name=NAME median=N p90=N samples=K`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::{entry, println, timer};
use ozone_virtio::net::{BUFFER, Net};

entry!(run);

const SAMPLES: usize = 41;
/// Asks of the driver for the answer before an exchange counts as failed.
const PATIENCE: u32 = 1_000_000;
/// The address this program's frames claim, and the gateway's, on QEMU's user network.
const OWN_IP: [u8; 4] = [10, 0, 2, 15];
const GATEWAY: [u8; 4] = [10, 0, 2, 2];

/// An ARP request from `mac`/`OWN_IP` for `GATEWAY`, broadcast.
fn arp_request(mac: [u8; 6]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&OWN_IP);
    f[38..42].copy_from_slice(&GATEWAY);
    f
}

/// Whether `frame` is the gateway's ARP reply to `mac`.
fn is_reply(frame: &[u8], mac: [u8; 6]) -> bool {
    frame.len() >= 42
        && frame[0..6] == mac
        && frame[12..14] == [0x08, 0x06]
        && frame[20..22] == [0, 2]
        && frame[28..32] == GATEWAY
        && frame[32..38] == mac
}

fn run() -> u64 {
    let mut nic = match Net::open() {
        Ok(n) => n,
        Err(e) => {
            println!("FAIL: no card of its own: {e:?}");
            return 1;
        }
    };
    let mac = nic.mac();
    let request = arp_request(mac);
    let mut buf = [0u8; BUFFER];
    let exchange = |_: usize| {
        if nic.transmit(&request).is_err() {
            return false;
        }
        for _ in 0..PATIENCE {
            if let Some(n) = nic.receive(&mut buf)
                && is_reply(&buf[..n], mac)
            {
                return true;
            }
        }
        false
    };
    if ozone_guest_tests::measure("nic_arp_roundtrip", SAMPLES, timer::now, |a| println!("{a}"), exchange) {
        println!("done");
        0
    } else {
        1
    }
}
