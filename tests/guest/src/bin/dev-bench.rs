//! Guest benchmark program, for `cargo xtask bench` (under `-icount` a TSC tick is one guest
//! instruction, and the time the machine waits for the emulated disk is counted as well): the
//! cost of each layer between a program and the disk.
//!
//! - `blk_read_4k`, `blk_write_4k`: one 4 KiB request through the virtio-blk driver (this
//!   program's own disk): queue, notify, interrupt, completion. `blk_write_flush_4k` adds the
//!   flush that makes it durable: the raw device path a durable store write has to beat.
//! - `store_put_4k`: one 4 KiB value put through the storage server, acknowledged durable (a
//!   call, encryption, the copy-on-write commit and its two flushes); `store_get_4k` reads back
//!   one such value not read before (a call, the index, the block read, authentication and
//!   decryption).
//!
//! Prints `bench: name=NAME median=N p90=N samples=K` for each.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use ozone_agent_sdk::store::Store;
use ozone_agent_sdk::{entry, println, timer};
use ozone_virtio::blk::Blk;

entry!(run);

const SAMPLES: usize = 41;

/// Time `op` [`SAMPLES`] times (after two untimed runs); `op` gets the run's index.
fn measure(name: &str, op: impl FnMut(usize) -> bool) -> bool {
    ozone_guest_tests::measure(name, SAMPLES, timer::now, |a| println!("{a}"), op)
}

fn run() -> u64 {
    let mut blk = match Blk::open() {
        Ok(b) => b,
        Err(e) => {
            println!("FAIL: no disk: {e:?}");
            return 1;
        }
    };
    let mut buf = vec![0x5au8; 4096];
    // Sectors spread over the disk, 4 KiB apart.
    let sector = |i: usize| ((i as u64 * 7919) % 2000) * 8;
    let ok = measure("blk_write_4k", |i| blk.write(sector(i), &buf).is_ok())
        && measure("blk_read_4k", |i| blk.read(sector(i), &mut buf).is_ok())
        && measure("blk_write_flush_4k", |i| blk.write(sector(i), &buf).is_ok() && blk.flush().is_ok());
    if !ok {
        return 1;
    }
    let st = match Store::connect() {
        Ok(s) => s,
        Err(e) => {
            println!("FAIL: no store: {e:?}");
            return 1;
        }
    };
    let value: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
    let key = |i: usize| format!("bench-{i}").into_bytes();
    let ok = measure("store_put_4k", |i| st.put(&key(i), &value).is_ok())
        && measure("store_get_4k", |i| st.get(&key(i)).ok().flatten().is_some_and(|v| v == value));
    if ok {
        println!("done");
        0
    } else {
        1
    }
}
