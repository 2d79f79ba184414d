//! Guest test agent: a virtio-blk driver. It claims its disk from the device manager, writes
//! distinct patterns to sectors across the disk, flushes, reads them back and compares; then,
//! holding its claim, it tries to reach past it (another kind, pages past its BARs, writes to its
//! BARs and header, another device's configuration space). Prints `PASS`, or `FAIL: ...` and
//! `FAILED`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::devices::{BarPage, ConfigWrite, method};
use ozone_agent_sdk::{AgentError, entry, println};
use ozone_virtio::blk::Blk;

entry!(run);

fn run() -> u64 {
    let mut blk = match Blk::open() {
        Ok(b) => b,
        Err(e) => {
            println!("FAIL: cannot open the disk: {e:?}");
            println!("FAILED");
            return 1;
        }
    };
    let sectors = blk.capacity();
    println!("disk: {sectors} sectors, GSI {:?}", blk.claimed.device.gsi);
    let mut ok = true;
    let mut fail = |what: String| {
        println!("FAIL: {what}");
        ok = false;
    };
    // Patterns at the start, the middle and the last 4 KiB of the disk.
    let spots = [0, sectors / 2, sectors.saturating_sub(8)];
    for (k, &s) in spots.iter().enumerate() {
        let buf: alloc::vec::Vec<u8> = (0..4096u32).map(|i| (i as u8) ^ (k as u8 * 37) ^ (s as u8)).collect();
        if let Err(e) = blk.write(s, &buf) {
            fail(alloc::format!("write at sector {s}: {e:?}"));
        }
    }
    if let Err(e) = blk.flush() {
        fail(alloc::format!("flush: {e:?}"));
    }
    for (k, &s) in spots.iter().enumerate() {
        let want: alloc::vec::Vec<u8> = (0..4096u32).map(|i| (i as u8) ^ (k as u8 * 37) ^ (s as u8)).collect();
        let mut got = vec![0u8; 4096];
        match blk.read(s, &mut got) {
            Ok(()) if got == want => {}
            Ok(()) => fail(alloc::format!("sector {s} reads back different bytes")),
            Err(e) => fail(alloc::format!("read at sector {s}: {e:?}")),
        }
    }
    // Past the end, odd lengths: errors, not crashes.
    let mut one = vec![0u8; 512];
    if blk.read(sectors, &mut one).is_ok() {
        fail(String::from("a read past the end succeeded"));
    }
    if blk.write(0, &[0u8; 100]).is_ok() {
        fail(String::from("a write of 100 bytes succeeded"));
    }
    println!("disk: {} patterns written, flushed and read back", spots.len());

    // The hostile half: everything else the manager could be asked for is refused.
    let d = &blk.claimed.devices;
    let refused = |r: ozone_agent_sdk::Result<()>, e: ServiceError| r == Err(AgentError::Service(e));
    let other = d.call(method::CLAIM, &String::from("virtio-net"));
    if other.as_ref().err() != Some(&AgentError::Service(ServiceError::Denied)) {
        fail(alloc::format!("claiming a kind not in its description: {other:?}"));
    }
    let again = d.call(method::CLAIM, &String::from("virtio-blk"));
    if again.as_ref().map(|x| x.device) != Ok(blk.claimed.device.device) {
        fail(alloc::format!("claiming its kind again did not answer its own device: {again:?}"));
    }
    for bar in &blk.claimed.device.bars {
        let past = (bar.size / 4096) as u32;
        if !refused(d.call(method::BAR_PAGE, &BarPage { bar: bar.index, page: past }), ServiceError::NotFound) {
            fail(alloc::format!("page {past} of BAR {} (past its end) was not refused", bar.index));
        }
    }
    for offset in [0x00u8, 0x08, 0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x30, 0x3c] {
        if !refused(
            d.call(method::CONFIG_WRITE, &ConfigWrite { offset, value: 0xffff_ffff }),
            ServiceError::InvalidArgument,
        ) {
            fail(alloc::format!("a configuration write at {offset:#x} was not refused"));
        }
    }
    // Every capability but the virtio ones: enabling MSI-X (whose table is in a BAR it maps)
    // would let its device send any interrupt message.
    let mut at = d.call(method::CONFIG_READ, &0x34u8).map_or(0, |p| p as u8 & 0xfc);
    let mut seen = 0;
    while at >= 0x40 && seen < 48 {
        let Ok(word) = d.call(method::CONFIG_READ, &at) else { break };
        if word as u8 != 0x09 {
            let enable = ConfigWrite { offset: at, value: word | 0x8001_0000 };
            if !refused(d.call(method::CONFIG_WRITE, &enable), ServiceError::InvalidArgument) {
                fail(alloc::format!("a write to capability {:#x} at {at:#x} was not refused", word as u8));
            }
        }
        at = (word >> 8) as u8 & 0xfc;
        seen += 1;
    }
    println!("disk: {seen} capabilities walked");
    for offset in [0x41u8, 0xff] {
        if d.call(method::CONFIG_READ, &offset).is_ok() {
            fail(alloc::format!("an unaligned configuration read at {offset:#x} was answered"));
        }
    }
    // Its BARs did not move: the data still reads back.
    let mut got = vec![0u8; 4096];
    if blk.read(spots[0], &mut got).is_err() {
        fail(String::from("the disk stopped answering after the refused requests"));
    }
    if ok {
        println!("disk: every reach past its own device refused");
        println!("PASS");
        0
    } else {
        println!("FAILED");
        1
    }
}
