//! The secure memory server (`secmem`): serves the `secmem` interface on its service endpoint.
//!
//! Studio starts it with the `vspaces` privilege, which gives it its own CNode
//! (`caps::own_cnode()`), the right to ask for clients' address spaces (`VSPACE_OF`), and the
//! per-instance secret it seals with (`StartInfo::secret`); as the provider of `secmem` it may ask
//! Studio to fund it for a client from that client's quota (`FUND`). It makes nothing for clients
//! from its own memory (the pool the privilege also gives it stays unused). The logic is in the
//! library ([`ozone_secmem`]); this file gathers the boot entropy and runs the loop.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_agent_sdk::protocol::start::{SHARE_WINDOW, SHARE_WINDOW_SIZE};
use ozone_agent_sdk::rpc::Server;
use ozone_agent_sdk::{caps, entry, println, start};
use ozone_secmem::kernel::Sel4;
use ozone_secmem::seal::{Sealer, hmac_sha256, wipe};
use ozone_secmem::service::{Config, SecMem};

entry!(run);

fn run() -> u64 {
    let Some(info) = start::info() else {
        println!("not started by Studio: no start information");
        return 1;
    };
    let cfg = Config {
        own_id: info.id,
        slots: ozone_secmem::server_slots(info.cnode_radix),
        window: (SHARE_WINDOW, SHARE_WINDOW_SIZE),
    };
    let Some(cnode) = caps::own_cnode() else {
        println!("no CNode of its own (the `vspaces` privilege): cannot serve");
        return 1;
    };
    let mut secret = info.secret;
    let sealer = Sealer::new(&secret, boot_entropy(&secret));
    wipe(&mut secret);
    if sealer.is_none() {
        println!("no instance secret: sealing is off");
    }
    let mut sm = SecMem::new(Sel4 { cnode }, cfg, sealer);
    println!("ready: each client's pages come from its own quota");
    let interface = ozone_agent_sdk::protocol::secmem::INTERFACE;
    match Server::provided(interface) {
        Ok(mut server) => server.serve(|req| sm.handle(req.badge, req)),
        Err(e) => {
            println!("cannot serve `{interface}`: {e}");
            1
        }
    }
}

/// This boot's entropy for nonces: RDRAND when the CPU has it, the TSC, and the instance secret
/// (so two instances never share it even without RDRAND).
fn boot_entropy(secret: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(secret, &[b"ozone-secmem boot entropy", &ozone_agent_sdk::entropy::boot_bytes()])
}
