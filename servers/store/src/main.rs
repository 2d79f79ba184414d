//! The storage server (`store`): a virtio-blk driver and the crash-safe encrypted store on it.
//!
//! Studio starts it with a `virtio-blk` claim (a pool, its own CNode and address space), the
//! `devices` interface to claim its disk from the device manager, the `clients` privilege to
//! learn each client's namespace and quota (`CLIENT`: its program name and `store_kib`), and the
//! per-instance secret its keys derive from. At start it opens the store (formatting an empty
//! disk, refusing a disk sealed by another instance), reports what recovery found, then serves
//! the `store` interface. Without a disk it says so and ends.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use ozone_agent_sdk::protocol::studio::method as studio;
use ozone_agent_sdk::rpc::{Client, Server};
use ozone_agent_sdk::{entropy, entry, println, start};
use ozone_store::block::{BLOCK, BlockDevice, IoError};
use ozone_store::service::{ClientPolicy, Directory, Service};
use ozone_store::store::{Error, Store};
use ozone_virtio::blk::Blk;

entry!(run);

/// Sectors of 512 bytes in a store block.
const SECTORS: u64 = (BLOCK / 512) as u64;

/// The disk as the store sees it: 4 KiB blocks. (Borrowed, so a failed open gives it back for
/// a format.)
struct Disk<'a>(&'a mut Blk);

impl BlockDevice for Disk<'_> {
    fn blocks(&self) -> u64 {
        self.0.capacity() / SECTORS
    }
    fn read(&mut self, lba: u64, buf: &mut [u8; BLOCK]) -> Result<(), IoError> {
        if lba >= self.blocks() {
            return Err(IoError::OutOfRange);
        }
        self.0.read(lba * SECTORS, buf).map_err(|_| IoError::Failed)
    }
    fn write(&mut self, lba: u64, buf: &[u8; BLOCK]) -> Result<(), IoError> {
        if lba >= self.blocks() {
            return Err(IoError::OutOfRange);
        }
        self.0.write(lba * SECTORS, buf).map_err(|_| IoError::Failed)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.0.flush().map_err(|_| IoError::Failed)
    }
}

/// Clients as Studio describes them: the namespace is the program's name, the quota its
/// `store_kib`; a program with no quota has no namespace.
struct Studio(Client);

impl Studio {
    fn info(&mut self, badge: u64) -> Option<ozone_agent_sdk::protocol::studio::ClientInfo> {
        self.0.call(studio::CLIENT, &badge).ok()
    }
}

impl Directory for Studio {
    fn client(&mut self, badge: u64) -> Option<ClientPolicy> {
        let c = self.info(badge)?;
        (c.store_kib > 0).then(|| ClientPolicy {
            namespace: c.name,
            quota_bytes: c.store_kib as u64 * 1024,
            run: c.run,
        })
    }
    fn is_admin(&mut self, badge: u64) -> bool {
        self.info(badge).is_some_and(|c| c.admin)
    }
}

fn run() -> u64 {
    // The console's shell calls the store (`disk`): a Call from here to the console could meet
    // the console waiting for the store's answer, and neither would ever go on. Lines go one
    // way, never waiting (dropped if the console is busy at that moment).
    ozone_agent_sdk::log::set_nonblocking();
    let Some(info) = start::info() else {
        println!("not started by Studio: no start information");
        return 1;
    };
    let blk = match Blk::open() {
        Ok(b) => b,
        Err(e) => {
            println!("no disk to serve ({e:?}): the store is off");
            return 0;
        }
    };
    let salt = salt();
    let blk: &'static mut Blk = alloc::boxed::Box::leak(alloc::boxed::Box::new(blk));
    println!("disk: {} blocks of 4 KiB", blk.capacity() / SECTORS);
    let opened = Store::open(Disk(&mut *blk), &info.secret, salt);
    let store = match opened {
        Ok((s, r)) => {
            println!(
                "opened the store at generation {}: {} damaged, {} lost",
                r.generation,
                r.damaged.len(),
                r.dropped.len()
            );
            for d in r.damaged.iter().chain(&r.dropped) {
                println!("damage: {d:?}");
            }
            s
        }
        Err(Error::NotFormatted) => match Store::format(Disk(blk), &info.secret, salt) {
            Ok(s) => {
                println!("formatted an empty disk");
                s
            }
            Err(e) => {
                println!("cannot format the disk: {e:?}");
                return 1;
            }
        },
        Err(Error::WrongKey) => {
            println!("the disk was sealed by another instance (or its superblocks are damaged): refusing to serve it");
            return 1;
        }
        Err(e) => {
            println!("cannot open the store: {e:?}");
            return 1;
        }
    };
    let mut service = Service::new(store, Studio(Client::studio()));
    let interface = ozone_agent_sdk::protocol::store::INTERFACE;
    match Server::provided(interface) {
        Ok(mut server) => server.serve(|req| service.handle(req.badge, req)),
        Err(e) => {
            println!("cannot serve `{interface}`: {e}");
            1
        }
    }
}

/// A fresh salt for this open: this moment's entropy (RDRAND, the TSC), folded to 16 bytes.
/// The salt may be written to the disk in the clear: nothing secret goes into it.
fn salt() -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in entropy::boot_bytes().iter().enumerate() {
        out[i % 16] ^= b.rotate_left((i / 16) as u32);
    }
    out
}
