//! An agent that exercises the secure memory server from the outside, for boot tests: it looks
//! `secmem` up, allocates a region, checks it is zero and writable, checks the refusals (bad
//! sizes, someone else's region, sharing with itself), seals and unseals (and checks a tampered
//! blob is refused), frees the region, and prints `[secmem-check] passed` (or the first failure).
//!
//! If its name (from the system description) ends in `-fault`, it then touches the region it
//! freed, which must fault: Studio's log then shows the page fault at the region's address.
//!
//! Sharing takes two programs: one named `...-share`, and right after it in the system
//! description (so its program id is one more) one named `...-peer`. The first shares a region
//! holding `shared hello` writable with the second, which finds it with `LIST`, checks it, writes
//! `ack` into it and keeps reading it; the first waits for the `ack`, unshares, and the peer's
//! next read faults (Studio logs the page fault at the shared address).
//!
//! System description entry (the program must be allowed to use `secmem`):
//! ```toml
//! [[program]]
//! name = "secmem-check"
//! binary = "secmem-check"
//! kind = "agent"
//! priority = 100
//! memory_kib = 1024
//! uses = ["secmem"]
//! ```
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::secmem::SecureMemory;
use ozone_agent_sdk::{AgentError, entry, println, start};

entry!(run);

fn run() -> u64 {
    if start::name().ends_with("-peer") {
        return peer();
    }
    if start::name().ends_with("-share")
        && let Err(what) = share_with_next()
    {
        println!("FAILED: {what}");
        return 1;
    }
    match check() {
        Ok(freed) => {
            println!("passed");
            if start::name().ends_with("-fault") {
                println!("touching the freed region at {freed:#x}: this must fault");
                // SAFETY: deliberately not safe: the page is unmapped, the access faults and
                // Studio ends this program. Volatile, so the access really happens.
                let v = unsafe { core::ptr::read_volatile(freed as *const u8) };
                println!("FAILED: read {v} from a freed region");
                return 1;
            }
            0
        }
        Err(what) => {
            println!("FAILED: {what}");
            1
        }
    }
}

/// Fail with `what` unless `ok`.
fn ensure(ok: bool, what: &'static str) -> Result<(), &'static str> {
    if ok { Ok(()) } else { Err(what) }
}

fn refused(r: Result<impl Sized, AgentError>, e: ServiceError) -> bool {
    matches!(r, Err(AgentError::Service(x)) if x == e)
}

/// Returns the address of the region it freed.
fn check() -> Result<u64, &'static str> {
    let me = start::info().ok_or("not started by Studio")?.id;
    let sm = SecureMemory::connect().map_err(|_| "cannot look up secmem")?;
    let r = sm.alloc(3).map_err(|_| "alloc(3) failed")?;
    println!("region {} at {:#x}, {} bytes", r.id, r.addr, r.len);
    ensure(r.len == 3 * 4096, "wrong length")?;
    // SAFETY: the region was just mapped read-write here and nothing else refers to it.
    let bytes = unsafe { r.bytes_mut() };
    ensure(bytes.iter().all(|&b| b == 0), "a new region is not zero")?;
    bytes[..5].copy_from_slice(b"hello");
    bytes[bytes.len() - 1] = 0xee;
    ensure(&bytes[..5] == b"hello" && bytes[bytes.len() - 1] == 0xee, "the region does not hold what was written")?;

    ensure(refused(sm.alloc(0), ServiceError::InvalidArgument), "alloc(0) was not refused")?;
    ensure(refused(sm.alloc(100_000), ServiceError::InvalidArgument), "a huge alloc was not refused")?;
    ensure(refused(sm.free_id(r.id + 1000), ServiceError::NotFound), "freeing no region was not refused")?;
    ensure(refused(sm.share(r.id, me, true), ServiceError::InvalidArgument), "sharing with itself was not refused")?;
    let listed = sm.list().map_err(|_| "list failed")?;
    ensure(listed.len() == 1 && listed[0].addr == r.addr, "list does not show the region")?;

    let blob = sm.seal(b"the agent's api token").map_err(|_| "seal failed")?;
    let back = sm.unseal(&blob).map_err(|_| "unseal failed")?;
    ensure(back == b"the agent's api token", "unseal gave other data")?;
    let mut bad = blob.clone();
    bad[blob.len() / 2] ^= 1;
    ensure(refused(sm.unseal(&bad), ServiceError::Tampered), "a tampered blob was not refused")?;
    println!("sealed {} bytes into a {}-byte blob; tampering detected", back.len(), blob.len());

    sm.free(r).map_err(|_| "free failed")?;
    ensure(refused(sm.free(r), ServiceError::NotFound), "freeing twice was not refused")?;
    let u = sm.usage().map_err(|_| "usage failed")?;
    ensure(u.pages == 0 && u.regions == 0, "usage after free is not zero")?;
    // The memory is reused, zeroed.
    let again = sm.alloc(3).map_err(|_| "alloc after free failed")?;
    // SAFETY: `again` was just mapped read-write here and nothing else refers to it; the slice
    // from the first region is dead (that region was freed above).
    let bytes = unsafe { again.bytes_mut() };
    ensure(bytes.iter().all(|&b| b == 0), "a reused region is not zero")?;
    sm.free(again).map_err(|_| "second free failed")?;
    Ok(again.addr)
}

/// Rounds of yielding before giving up on the other program.
const PATIENCE: u32 = 100_000;

/// The `-share` side: share a region with the next program, wait for its `ack`, unshare.
fn share_with_next() -> Result<(), &'static str> {
    let peer = start::info().ok_or("not started by Studio")?.id + 1;
    let sm = SecureMemory::connect().map_err(|_| "cannot look up secmem")?;
    let r = sm.alloc(1).map_err(|_| "alloc for sharing failed")?;
    // SAFETY: the region was just mapped read-write here; the peer only writes after `ack`'s
    // first byte, which this side only reads (volatile).
    unsafe { core::ptr::copy_nonoverlapping(b"shared hello".as_ptr(), r.addr as *mut u8, 12) };
    // A blob sealed here, for the peer to try (it must not open for another program): its
    // length at offset 64, the bytes from 66.
    let blob = sm.seal(b"for my eyes only").map_err(|_| "seal for the peer failed")?;
    if blob.len() > 4096 - 66 {
        return Err("the sealed blob does not fit the page");
    }
    // SAFETY: the region is one page mapped read-write here; 66 + blob.len() fits it.
    unsafe {
        core::ptr::write_volatile((r.addr + 64) as *mut u16, blob.len() as u16);
        core::ptr::copy_nonoverlapping(blob.as_ptr(), (r.addr + 66) as *mut u8, blob.len());
    }
    // The peer is started right after this program; until it runs, there is no one to share with.
    let mut tries = 0;
    let at = loop {
        match sm.share(r.id, peer, true) {
            Ok(at) => break at,
            Err(_) if tries < PATIENCE => {
                tries += 1;
                ozone_agent_sdk::sys::yield_now();
            }
            Err(_) => return Err("share failed"),
        }
    };
    println!("shared region {} with program {peer} at {at:#x}", r.id);
    let ack = r.addr + 16;
    // SAFETY: `ack` lies inside the page `r`, still mapped read-write here (it is freed only after
    // the loop); volatile because the peer writes it through its own mapping.
    let acked = || unsafe { core::ptr::read_volatile(ack as *const [u8; 3]) } == *b"ack";
    let mut n = 0;
    while !acked() {
        n += 1;
        if n > PATIENCE {
            return Err("the peer never wrote `ack`");
        }
        ozone_agent_sdk::sys::yield_now();
    }
    println!("the peer wrote ack; unsharing");
    sm.unshare(r.id, peer).map_err(|_| "unshare failed")?;
    ensure(refused(sm.unshare(r.id, peer), ServiceError::NotFound), "unsharing twice was not refused")?;
    println!("unshared");
    sm.free(r).map_err(|_| "free of the shared region failed")?;
    Ok(())
}

/// The `-peer` side: find the region shared with it, check it, write `ack`, keep reading.
fn peer() -> u64 {
    let Ok(sm) = SecureMemory::connect() else {
        println!("FAILED: cannot look up secmem");
        return 1;
    };
    let mut n = 0;
    let m = loop {
        match sm.list().ok().and_then(|l| l.into_iter().next()) {
            Some(m) => break m,
            None if n > PATIENCE => {
                println!("FAILED: nothing was shared with it");
                return 1;
            }
            None => {
                n += 1;
                ozone_agent_sdk::sys::yield_now();
            }
        }
    };
    // SAFETY: the owner mapped it here writable (per `m`); it may unmap it at any moment, and
    // then an access faults, which is what this program waits for.
    let text = unsafe { core::ptr::read_volatile(m.addr as *const [u8; 12]) };
    if &text != b"shared hello" || !m.writable {
        println!("FAILED: the shared region holds other bytes");
        return 1;
    }
    println!("region {} of program {} at {:#x} holds `shared hello`", m.id, m.owner, m.addr);
    // The owner's sealed blob must not open here.
    // SAFETY: offset 64 lies inside the shared page, mapped here per `m`; the owner wrote the
    // length before sharing. If the owner unmaps the page the read faults, ending this program.
    let len = unsafe { core::ptr::read_volatile((m.addr + 64) as *const u16) } as usize;
    let mut blob = alloc::vec![0u8; len.min(4096 - 66)];
    // SAFETY: `blob` holds at most 4096 - 66 bytes, so the source lies inside the shared page,
    // mapped here per `m` (an unmapped page faults, ending this program); `blob` is a fresh
    // allocation that does not overlap it.
    unsafe { core::ptr::copy_nonoverlapping((m.addr + 66) as *const u8, blob.as_mut_ptr(), blob.len()) };
    match sm.unseal(&blob) {
        Err(AgentError::Service(ServiceError::Tampered)) => {
            println!("the owner's sealed blob does not unseal here: refused")
        }
        Ok(_) => {
            println!("FAILED: unsealed another program's blob");
            return 1;
        }
        Err(e) => {
            println!("FAILED: unsealing another program's blob gave {e}");
            return 1;
        }
    }
    // SAFETY: offset 16 lies inside the shared page, mapped writable here (`m.writable` was
    // checked); the owner only reads these bytes (volatile).
    unsafe { core::ptr::write_volatile((m.addr + 16) as *mut [u8; 3], *b"ack") };
    println!("wrote ack; reading until the owner unshares (this must fault)");
    loop {
        // SAFETY: the shared page is mapped here until the owner unshares it; after that the read
        // faults, which is what this loop waits for (Studio then ends this program).
        let _ = unsafe { core::ptr::read_volatile(m.addr as *const u8) };
        ozone_agent_sdk::sys::yield_now();
    }
}
