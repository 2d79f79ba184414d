//! An agent that exercises the secure memory server from the outside, for boot tests: it looks
//! `secmem` up, allocates a region, checks it is zero and writable, checks the refusals (bad
//! sizes, someone else's region, sharing with itself), seals and unseals (and checks a tampered
//! blob is refused), frees the region, and prints `[secmem-check] passed` (or the first failure).
//!
//! If its name (from the system description) ends in `-fault`, it then touches the region it
//! freed, which must fault: Studio's log then shows the page fault at the region's address.
//!
//! Sharing takes two programs: one named `...-share`, and right after it in the system
//! description (so its program id is one more) one named `...-peer`. The first offers a region
//! holding `shared hello` writable to the second, which finds the offer with `OFFERS`, accepts
//! it, checks it, writes `ack` into it and keeps reading it; the first waits for the `ack`,
//! unshares, and the peer's next read faults (Studio logs the page fault at the shared address).
//!
//! The hostile tests (`tests/` of the system description's test programs):
//!
//! - `...-hogs` (with `admin`) starts `secmem-check-hog-1` and `-hog-2` (right after it, ids one
//!   and two more), which allocate until their own quota is used up; each then offers its first
//!   region, holding the pages it got and was funded with, to `...-hogs`, which accepts, checks
//!   that Studio counts the funds in the hog's quota, allocates two regions of the largest size
//!   itself, kills both hogs and checks that all their memory is back and their region gone from
//!   its own address space;
//! - `...-hostile` and `...-victim` (one more): the hostile offers a region to every program
//!   (only the server itself refuses), the victim sees the offer mapped nowhere and declines it,
//!   then offers the hostile a region, which the hostile tries to accept everywhere but inside its
//!   share window (all refused) before accepting it properly; the victim then revokes it and the
//!   hostile sees it gone.
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
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::secmem::SecureMemory;
use ozone_agent_sdk::{AgentError, entry, println, start, sys};

entry!(run);

/// One side of a hostile test.
type Check = fn() -> Result<(), &'static str>;

fn run() -> u64 {
    warm_up();
    let name = start::name();
    let side: Option<Check> = if name.ends_with("-hogs") {
        Some(hogs as Check)
    } else if name.ends_with("-hog-1") || name.ends_with("-hog-2") {
        Some(hog as Check)
    } else if name.ends_with("-hostile") {
        Some(hostile as Check)
    } else if name.ends_with("-victim") {
        Some(victim as Check)
    } else {
        None
    };
    if let Some(f) = side {
        return match f() {
            Ok(()) => {
                println!("PASS");
                0
            }
            Err(what) => {
                println!("FAILED: {what}");
                1
            }
        };
    }
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

/// Show the syscall shaper, during the warm-up window (the first 64 syscalls), everything the
/// checks use later: the shaper enforces both halves of a profile as soon as the window ends
/// (the kernel tells Studio, Studio the shaper, the shaper the servers), so what a program has
/// not used by then is denied to it. Each `secmem` method once (with arguments it refuses, so
/// nothing changes), and the kernel operations it polls with later.
fn warm_up() {
    use ozone_agent_sdk::protocol::secmem::{self as p, method};
    let Ok(sm) = Client::lookup(p::INTERFACE) else { return };
    let none = u64::MAX;
    let _ = sm.call(method::FREE, &p::Free { id: none });
    let _ = sm.call(method::OFFER, &p::Offer { id: none, peer: none, writable: false });
    let _ = sm.call(method::UNSHARE, &p::Unshare { id: none, peer: none });
    let _ = sm.call(method::SEAL, &p::Seal { data: alloc::vec::Vec::new() });
    let _ = sm.call(method::UNSEAL, &p::Unseal { blob: alloc::vec::Vec::new() });
    let _ = sm.call(method::LIST, &u32::MAX);
    let _ = sm.call(method::USAGE, &());
    let _ = sm.call(method::ACCEPT, &p::Accept { id: none, at: 0 });
    let _ = sm.call(method::DROP, &p::DropShare { id: none });
    let _ = sm.call(method::OFFERS, &u32::MAX);
    let _ = sm.call(method::ALLOC, &p::Alloc { pages: 0 });
    sys::yield_now();
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
    ensure(refused(sm.offer(r.id, me, true), ServiceError::InvalidArgument), "offering to itself was not refused")?;
    ensure(refused(sm.offer(r.id, 0, true), ServiceError::InvalidArgument), "offering to program 0 was not refused")?;
    ensure(refused(sm.accept(r.id, 0), ServiceError::NotFound), "accepting its own region was not refused")?;
    ensure(refused(sm.drop_share(r.id), ServiceError::NotFound), "dropping its own region was not refused")?;
    let u = sm.usage().map_err(|_| "usage failed")?;
    ensure(u.pages == 3 && u.funded >= 3, "the region is not paid from its own funds")?;
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
    // The peer is started right after this program; until it runs, there is no one to offer to.
    let mut tries = 0;
    loop {
        match sm.offer(r.id, peer, true) {
            Ok(()) => break,
            Err(_) if tries < PATIENCE => {
                tries += 1;
                ozone_agent_sdk::sys::yield_now();
            }
            Err(_) => return Err("offer failed"),
        }
    }
    println!("offered region {} to program {peer}", r.id);
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
    let Some(o) = wait_for_offer(&sm) else {
        println!("FAILED: nothing was offered to it");
        return 1;
    };
    if sm.list().map(|l| l.is_empty()) != Ok(true) {
        println!("FAILED: something is mapped before it accepted");
        return 1;
    }
    let m = match sm.accept(o.id, 0).and_then(|_| sm.list()) {
        Ok(l) if l.len() == 1 => l[0],
        _ => {
            println!("FAILED: accepting the offer did not map it");
            return 1;
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

/// The first offer to this program, waiting for one to come.
fn wait_for_offer(sm: &SecureMemory) -> Option<ozone_agent_sdk::secmem::Offered> {
    for _ in 0..PATIENCE {
        if let Some(o) = sm.offers().ok().and_then(|l| l.into_iter().next()) {
            return Some(o);
        }
        ozone_agent_sdk::sys::yield_now();
    }
    None
}

/// A hog: allocate until its own quota is used up, then offer its first region, holding the
/// pages it got and the pages it was funded with, to the program that started it; then wait to
/// be killed.
fn hog() -> Result<(), &'static str> {
    let info = start::info().ok_or("not started by Studio")?;
    let back = if start::name().ends_with("-1") { 1 } else { 2 };
    let sm = SecureMemory::connect().map_err(|_| "cannot look up secmem")?;
    let first = sm.alloc(1).map_err(|_| "the first page was refused")?;
    let mut got = 1u64;
    for size in [16, 4, 1] {
        loop {
            match sm.alloc(size) {
                Ok(_) => got += size as u64,
                Err(AgentError::Service(ServiceError::QuotaExceeded)) => break,
                Err(_) => return Err("an allocation failed other than by the quota"),
            }
        }
    }
    let u = sm.usage().map_err(|_| "usage failed")?;
    ensure(u.pages as u64 == got, "usage does not match the pages allocated")?;
    ensure(u.funded as u64 >= got, "fewer pages funded than allocated")?;
    ensure(u.funded as u64 * 4096 <= info.quota, "funded beyond the quota")?;
    println!("{} exhausted its own quota: {got} pages, {} funded", start::name(), u.funded);
    // SAFETY: `first` is one page mapped read-write here, and nothing else refers to it.
    unsafe {
        core::ptr::write_volatile(first.addr as *mut [u64; 2], [got, u.funded as u64]);
    }
    sm.offer(first.id, info.id - back, false).map_err(|_| "offering the report failed")?;
    loop {
        ozone_agent_sdk::sys::yield_now();
    }
}

/// The hogs' test (needs `admin`): see the module documentation.
fn hogs() -> Result<(), &'static str> {
    use alloc::string::String;
    use ozone_agent_sdk::protocol::studio::{AgentInfo, SystemMemory, method};
    use ozone_agent_sdk::rpc::Client;
    let studio = Client::studio();
    let sm = SecureMemory::connect().map_err(|_| "cannot look up secmem")?;
    let before: SystemMemory = studio.call(method::MEMORY, &()).map_err(|_| "MEMORY failed")?;
    let names = ["secmem-check-hog-1", "secmem-check-hog-2"];
    let mut seen = [false; 2];
    for n in names {
        let _: u64 = studio.call(method::START, &String::from(n)).map_err(|_| "cannot start a hog")?;
    }
    // Each hog reports by offering a region; accept it and read the report.
    let mut reports = 0;
    for _ in 0..PATIENCE {
        for o in sm.offers().map_err(|_| "offers failed")? {
            let at = sm.accept(o.id, 0).map_err(|_| "accepting a hog's report failed")?;
            // SAFETY: the hog's page was just mapped here (read-only) by the accept; it is read
            // before the hog is killed.
            let [got, funded] = unsafe { core::ptr::read_volatile(at as *const [u64; 2]) };
            let list: alloc::vec::Vec<AgentInfo> = studio.call(method::LIST, &0u32).map_err(|_| "LIST failed")?;
            let hog = list.iter().find(|a| a.id == o.owner).ok_or("the hog is not listed")?;
            let i = names.iter().position(|n| *n == hog.name).ok_or("an offer from another program")?;
            println!(
                "[secmem-hogs] {} got {got} pages ({funded} funded); Studio counts {} of its {} KiB",
                hog.name,
                hog.used >> 10,
                hog.quota >> 10
            );
            ensure(hog.used >= funded * 4096, "the hog's funds are not counted in its quota")?;
            ensure(hog.used <= hog.quota, "the hog used more than its quota")?;
            ensure(got * 4096 >= hog.quota / 4, "the hog got less than a quarter of its quota")?;
            seen[i] = true;
            reports += 1;
        }
        if reports == 2 {
            break;
        }
        ozone_agent_sdk::sys::yield_now();
    }
    ensure(seen == [true, true], "the hogs did not both report")?;
    // Another program's large allocations still succeed.
    let a = sm.alloc(128).map_err(|_| "a large allocation after the hogs was refused")?;
    let b = sm.alloc(128).map_err(|_| "a second large allocation after the hogs was refused")?;
    println!("two regions of 128 pages after the hogs: allocated");
    sm.free(a).map_err(|_| "free failed")?;
    sm.free(b).map_err(|_| "free failed")?;
    for n in names {
        let () = studio.call(method::KILL, &String::from(n)).map_err(|_| "cannot kill a hog")?;
    }
    let after: SystemMemory = studio.call(method::MEMORY, &()).map_err(|_| "MEMORY failed")?;
    println!("free memory {} bytes before the hogs, {} after they were killed", before.free, after.free);
    ensure(after.free == before.free, "the hogs' memory did not all come back")?;
    let l = sm.list().map_err(|_| "list failed")?;
    ensure(l.is_empty(), "a dead hog's region is still listed here")?;
    ensure(sm.usage().map(|u| u.shared_with_me) == Ok(0), "a dead hog's region is still counted")?;
    Ok(())
}

/// The hostile side: see the module documentation.
fn hostile() -> Result<(), &'static str> {
    let me = start::info().ok_or("not started by Studio")?.id;
    let victim = me + 1;
    let sm = SecureMemory::connect().map_err(|_| "cannot look up secmem")?;
    let r = sm.alloc(1).map_err(|_| "alloc failed")?;
    // SAFETY: the region was just mapped read-write here and nothing else refers to it.
    unsafe { core::ptr::copy_nonoverlapping(b"hostile".as_ptr(), r.addr as *mut u8, 7) };
    // Offer it to every program: offers to itself and to the server are refused (the server
    // never maps anything into itself), and so are offers to programs that may not use secure
    // memory (Studio gives the server the address spaces of its own clients only); any other
    // offer maps nothing until accepted.
    let mut refused_ids = 0;
    for id in 1..=64u64 {
        if id == me || id == victim {
            continue;
        }
        match sm.offer(r.id, id, true) {
            Ok(()) => sm.unshare(r.id, id).map_err(|_| "withdrawing an offer failed")?,
            Err(AgentError::Service(ServiceError::InvalidArgument)) => refused_ids += 1,
            Err(AgentError::Service(ServiceError::NotFound | ServiceError::Busy | ServiceError::Denied)) => {}
            Err(_) => return Err("an offer failed unexpectedly"),
        }
    }
    ensure(refused_ids == 1, "offers to exactly one program (the server) must be refused")?;
    println!("offers into the server itself: refused");
    // The victim starts right after this program: offer until it runs.
    let mut tries = 0;
    while sm.offer(r.id, victim, true).is_err() {
        tries += 1;
        if tries > PATIENCE {
            return Err("the offer to the victim failed");
        }
        ozone_agent_sdk::sys::yield_now();
    }
    // The victim offers a region back. Try to take it anywhere but inside the share window.
    let o = wait_for_offer(&sm).ok_or("the victim offered nothing")?;
    let local = 0u64;
    let window = ozone_agent_sdk::protocol::start::SHARE_WINDOW;
    let end = window + ozone_agent_sdk::protocol::start::SHARE_WINDOW_SIZE;
    let places = [
        0x1000,
        run as *const () as u64 & !0xfff,
        &local as *const u64 as u64 & !0xfff,
        start::info().map_or(0, |i| i.heap_base),
        start::info().map_or(0, |i| i.ipc_buffer),
        window - 4096,
        window,
        window + 4097,
        end - 4096,
        end,
        r.addr,
        r.addr + 4096,
        !0xfff,
    ];
    for at in places {
        ensure(
            refused(sm.accept(o.id, at), ServiceError::InvalidArgument),
            "an accept outside the window was not refused",
        )?;
    }
    ensure(sm.list().map(|l| l.len()) == Ok(1), "a refused accept mapped something")?;
    println!("{} accepts outside its share window: refused", places.len());
    let at = sm.accept(o.id, 0).map_err(|_| "the proper accept failed")?;
    // SAFETY: the victim's page was just mapped here writable; the victim only reads it.
    unsafe { core::ptr::write_volatile((at + 8) as *mut [u8; 3], *b"got") };
    // The victim revokes it: it disappears from here.
    for _ in 0..PATIENCE {
        if sm.list().map(|l| l.len()) == Ok(1) {
            println!("the victim revoked its region: gone from here");
            return sm.free(r).map_err(|_| "free failed");
        }
        ozone_agent_sdk::sys::yield_now();
    }
    Err("the victim's region was never taken back")
}

/// The victim side: see the module documentation.
fn victim() -> Result<(), &'static str> {
    let me = start::info().ok_or("not started by Studio")?.id;
    let sm = SecureMemory::connect().map_err(|_| "cannot look up secmem")?;
    let o = wait_for_offer(&sm).ok_or("the hostile offered nothing")?;
    ensure(o.owner == me - 1, "an offer from someone else")?;
    ensure(sm.list().map(|l| l.is_empty()) == Ok(true), "something is mapped without its consent")?;
    let u = sm.usage().map_err(|_| "usage failed")?;
    ensure(u.shared_with_me == 0 && u.offers == 1, "the offer is counted as a mapping")?;
    sm.drop_share(o.id).map_err(|_| "declining failed")?;
    ensure(sm.offers().map(|l| l.is_empty()) == Ok(true), "the declined offer is still there")?;
    println!("an offer not accepted mapped nothing; declined");
    let r = sm.alloc(1).map_err(|_| "alloc failed")?;
    sm.offer(r.id, o.owner, true).map_err(|_| "offering to the hostile failed")?;
    for _ in 0..PATIENCE {
        // SAFETY: the region is one page mapped read-write here; the hostile writes these bytes
        // through its own mapping, so they are read volatile.
        if unsafe { core::ptr::read_volatile((r.addr + 8) as *const [u8; 3]) } == *b"got" {
            sm.unshare(r.id, o.owner).map_err(|_| "revoking failed")?;
            ensure(refused(sm.unshare(r.id, o.owner), ServiceError::NotFound), "revoked twice")?;
            println!("revoked the region from the hostile");
            return sm.free(r).map_err(|_| "free failed");
        }
        ozone_agent_sdk::sys::yield_now();
    }
    Err("the hostile never wrote into the region")
}
