//! The whole service on the kernel model (`fake.rs`): requests go in as postcard bytes through
//! [`SecMem::handle`] and answers come out as the client would decode them; the tests then look
//! at the programs' address spaces and the physical memory the way the programs would.

use alloc::vec;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::secmem::*;
use ozone_agent_sdk::protocol::start::{SHARE_WINDOW, SHARE_WINDOW_SIZE};
use ozone_agent_sdk::protocol::{Method, ServiceError};
use ozone_agent_sdk::rpc::{self, Args};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fake::{Fake, OWN_VSPACE, POOL};
use crate::funds::MIN_GRANT_ORDER;
use crate::seal::Sealer;
use crate::service::{Config, SecMem};
use crate::window::GUARD_PAGES;

const A: u64 = 101;
const B: u64 = 102;
const C: u64 = 103;
/// The server's own program id.
const SELF: u64 = 7;
const P: u64 = PAGE_SIZE;

/// A request as it arrives: its method number and postcard bytes.
struct Bytes(u64, Vec<u8>);

impl Args for Bytes {
    fn method(&self) -> u64 {
        self.0
    }

    fn payload<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        postcard::from_bytes(&self.1).map_err(|_| ServiceError::BadRequest)
    }
}

fn server_on(k: Fake, secret: [u8; 32]) -> SecMem<Fake> {
    let cfg =
        Config { own_id: SELF, slots: (crate::STUDIO_SLOTS_END, 4096), window: (SHARE_WINDOW, SHARE_WINDOW_SIZE) };
    SecMem::new(k, cfg, Sealer::new(&secret, [0x3c; 32]))
}

fn server_with(secret: [u8; 32]) -> SecMem<Fake> {
    server_on(Fake::new(16, &[A, B, C, SELF]), secret)
}

/// A server; programs A, B and C (and the server itself) running with 4 MiB quotas.
fn server() -> SecMem<Fake> {
    server_with([9; 32])
}

/// A server where program `p` has a quota of `2^bits` bytes.
fn server_with_quota(p: u64, bits: u8) -> SecMem<Fake> {
    let mut k = Fake::new(16, &[]);
    k.set_quota_bits(p, bits);
    for q in [A, B, C, SELF] {
        k.start(q);
    }
    server_on(k, [9; 32])
}

/// Call `m` as a client would: the request encoded as the method's request type, the server's
/// response decoded as its answer type (through the SDK's message encoding).
fn call<Req: Serialize, Resp: DeserializeOwned>(
    sm: &mut SecMem<Fake>,
    caller: u64,
    m: Method<Req, Resp>,
    req: &Req,
) -> Result<Resp, ServiceError> {
    let payload = Bytes(m.id(), postcard::to_allocvec(req).unwrap());
    rpc::answer_of(m, &sm.handle(caller, &payload))
}

fn alloc(sm: &mut SecMem<Fake>, who: u64, pages: u32) -> Result<Region, ServiceError> {
    call(sm, who, method::ALLOC, &Alloc { pages })
}

fn free(sm: &mut SecMem<Fake>, who: u64, id: u64) -> Result<(), ServiceError> {
    call(sm, who, method::FREE, &Free { id })
}

fn offer(sm: &mut SecMem<Fake>, who: u64, id: u64, peer: u64, writable: bool) -> Result<(), ServiceError> {
    call(sm, who, method::OFFER, &Offer { id, peer, writable })
}

fn accept(sm: &mut SecMem<Fake>, who: u64, id: u64, at: u64) -> Result<u64, ServiceError> {
    call(sm, who, method::ACCEPT, &Accept { id, at })
}

fn drop_share(sm: &mut SecMem<Fake>, who: u64, id: u64) -> Result<(), ServiceError> {
    call(sm, who, method::DROP, &DropShare { id })
}

fn offers(sm: &mut SecMem<Fake>, who: u64) -> Vec<Offered> {
    call(sm, who, method::OFFERS, &0u32).unwrap()
}

fn usage(sm: &mut SecMem<Fake>, who: u64) -> Usage {
    call(sm, who, method::USAGE, &()).unwrap()
}

/// Offer, and the peer accepts wherever the server finds room: the address in the peer.
fn share(sm: &mut SecMem<Fake>, who: u64, id: u64, peer: u64, writable: bool) -> Result<u64, ServiceError> {
    offer(sm, who, id, peer, writable)?;
    accept(sm, peer, id, 0)
}

fn unshare(sm: &mut SecMem<Fake>, who: u64, id: u64, peer: u64) -> Result<(), ServiceError> {
    call(sm, who, method::UNSHARE, &Unshare { id, peer })
}

fn seal(sm: &mut SecMem<Fake>, who: u64, data: &[u8]) -> Result<Vec<u8>, ServiceError> {
    call(sm, who, method::SEAL, &Seal { data: data.into() })
}

fn unseal(sm: &mut SecMem<Fake>, who: u64, blob: &[u8]) -> Result<Vec<u8>, ServiceError> {
    call(sm, who, method::UNSEAL, &Unseal { blob: blob.into() })
}

/// Everything the server holds that must come back: its free slots and the capabilities in its
/// CNode (not counting the one each grant of funds takes for good), and the pages in use of each
/// client's funds.
fn snapshot(sm: &mut SecMem<Fake>) -> (u64, usize, [u64; 3]) {
    let grants: u64 = [A, B, C].iter().map(|&p| sm.grants(p) as u64).sum();
    let used = [A, B, C].map(|p| sm.funds(p).0 - sm.funds(p).1);
    (sm.free_slots() + grants, sm.kernel().cap_count() - grants as usize, used)
}

/// The accounting invariant: every page the server holds for a program comes from that program's
/// funds, and the funds are exactly what Studio granted from its quota.
fn check_accounting(sm: &mut SecMem<Fake>) {
    for p in [A, B, C] {
        let (granted, free) = sm.funds(p);
        let u = usage(sm, p);
        let held = u.pages as u64 + sm.table_pages(p) as u64;
        assert!(held + free <= granted, "program {p}: {held} held + {free} free > {granted} granted");
        assert_eq!(sm.kernel().funded.get(&p).copied().unwrap_or(0), granted, "program {p}: funds = grants");
        assert_eq!(u.funded as u64, granted);
    }
    assert_eq!(sm.kernel().mapped_pages(0), 0, "the server never maps anything into itself");
}

#[test]
fn the_model_notices_memory_that_is_not_zeroed() {
    use crate::kernel::{Kernel, Object};
    let mut k = Fake::new(16, &[A]);
    k.retype(POOL, Object::Frame, 300).unwrap();
    k.retype(POOL, Object::PageTable, 301).unwrap();
    k.retype(POOL, Object::PageDirectory, 302).unwrap();
    k.retype(POOL, Object::Pdpt, 303).unwrap();
    // The level the server names must be the object's.
    assert_eq!(k.map_table(Object::PageTable, 303, OWN_VSPACE, SHARE_WINDOW), Err(ozone_abi::Error::InvalidCapability));
    assert_eq!(k.map_table(Object::Frame, 300, OWN_VSPACE, SHARE_WINDOW), Err(ozone_abi::Error::InvalidArgument));
    for (level, t) in [(Object::Pdpt, 303), (Object::PageDirectory, 302), (Object::PageTable, 301)] {
        k.map_table(level, t, OWN_VSPACE, SHARE_WINDOW).unwrap();
    }
    k.map_frame(300, OWN_VSPACE, SHARE_WINDOW, true).unwrap();
    assert_eq!(k.map_frame(300, OWN_VSPACE, SHARE_WINDOW + P, true), Err(ozone_abi::Error::DeleteFirst));
    assert!(k.write(0, 0, b"x") || k.mapped_pages(0) == 1);
    k.revoke(POOL).unwrap();
    assert_eq!(k.destroyed.len(), 1);
    assert_eq!(k.mapped_pages(0), 0, "revoke unmapped it");
    // Data left in a frame is seen as dirty until something covering it is made.
    k.retype(POOL, Object::Frame, 300).unwrap();
    assert_eq!(k.dirty_pages(), 0, "a new frame is zero");
    k.start(B);
    assert!(k.holds(POOL) && !k.holds(299));
}

#[test]
fn alloc_maps_zeroed_pages_between_guard_pages() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 3).unwrap();
    assert_eq!(r.len, 3 * P);
    assert!(r.addr >= SHARE_WINDOW + GUARD_PAGES * P && r.addr + r.len < SHARE_WINDOW + SHARE_WINDOW_SIZE);
    let k = sm.kernel();
    assert_eq!(k.read(A, r.addr, r.len as usize), Some(vec![0; r.len as usize]), "zero-filled");
    assert!(k.write(A, r.addr, b"secret"), "writable");
    assert!(k.write(A, r.addr + r.len - 1, b"x"));
    assert_eq!(k.read(A, r.addr - 1, 1), None, "guard page below");
    assert_eq!(k.read(A, r.addr + r.len, 1), None, "guard page above");
    assert_eq!(k.read(B, r.addr, 1), None, "not in anyone else");
    // A second region does not touch the first.
    let r2 = alloc(&mut sm, A, 1).unwrap();
    assert!(r2.addr >= r.addr + r.len + P);
    assert_eq!(sm.kernel().read(A, r2.addr - 1, 1), None);
    assert_ne!(r.id, r2.id);
    check_accounting(&mut sm);
}

#[test]
fn pages_are_paid_from_the_callers_own_quota() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 3).unwrap();
    let k = sm.kernel();
    let granted = k.funded[&A];
    // 3 frames and 3 paging structures, in one grant of the smallest size.
    assert_eq!(granted, 1 << MIN_GRANT_ORDER);
    assert_eq!(k.funded[&B], 0, "nothing of B's");
    assert_eq!(sm.funds(A), (granted, granted - 6));
    let u = usage(&mut sm, A);
    assert_eq!((u.pages, u.funded as u64), (3, granted));
    // The next regions use what is left before asking Studio again.
    let calls = sm.kernel().fund_calls;
    alloc(&mut sm, A, 8).unwrap();
    assert_eq!(sm.kernel().fund_calls, calls, "no new grant");
    alloc(&mut sm, A, 4).unwrap();
    assert_eq!(sm.kernel().fund_calls, calls + 1, "a new grant");
    check_accounting(&mut sm);
    free(&mut sm, A, r.id).unwrap();
    check_accounting(&mut sm);
}

#[test]
fn a_hog_exhausts_only_itself() {
    // A has 256 KiB (64 pages); B and C have 4 MiB.
    let mut sm = server_with_quota(A, 18);
    let mut got = 0u32;
    let err = loop {
        match alloc(&mut sm, A, 8) {
            Ok(_) => got += 8,
            Err(e) => break e,
        }
    };
    assert_eq!(err, ServiceError::QuotaExceeded, "the hog runs into its own quota");
    while alloc(&mut sm, A, 1).is_ok() {
        got += 1;
    }
    assert_eq!(alloc(&mut sm, A, 1), Err(ServiceError::QuotaExceeded));
    assert!(got >= 56, "most of its quota is usable: {got} pages");
    assert!(sm.funds(A).0 <= 64);
    check_accounting(&mut sm);
    // Others are not affected: the largest regions still come, twice.
    for p in [B, C] {
        let big = alloc(&mut sm, p, MAX_REGION_PAGES).unwrap();
        assert!(sm.kernel().write(p, big.addr + big.len - 4, b"mine"));
        alloc(&mut sm, p, MAX_REGION_PAGES).unwrap();
    }
    check_accounting(&mut sm);
}

#[test]
fn a_quota_too_small_for_a_whole_grant_still_pays_exactly() {
    // 16 KiB: 4 pages, not enough for a grant of 16; one frame and three paging structures fit.
    let mut sm = server_with_quota(A, 14);
    let r = alloc(&mut sm, A, 1).unwrap();
    assert_eq!(sm.funds(A), (4, 0));
    assert_eq!(alloc(&mut sm, A, 1), Err(ServiceError::QuotaExceeded));
    free(&mut sm, A, r.id).unwrap();
    assert_eq!(sm.funds(A), (4, 1), "the frame's page is free for the next region");
    alloc(&mut sm, A, 1).unwrap();
    check_accounting(&mut sm);
}

#[test]
fn free_unmaps_and_the_kernel_zeroes_the_memory() {
    let mut sm = server();
    // A's first region also makes A's paging structures, which stay: prime them.
    let warm = alloc(&mut sm, A, 1).unwrap();
    free(&mut sm, A, warm.id).unwrap();
    let before = snapshot(&mut sm);
    let r = alloc(&mut sm, A, 5).unwrap();
    assert!(sm.kernel().write(A, r.addr, &[0xa5; 5 * 4096]));
    assert_eq!(sm.funds(A).0 - sm.funds(A).1, before.2[0] + 5);
    free(&mut sm, A, r.id).unwrap();
    let k = sm.kernel();
    assert_eq!(k.read(A, r.addr, 1), None, "unmapped");
    assert_eq!(k.dirty_pages(), 0, "the kernel zeroed every page that held data");
    assert_eq!(k.mapped_pages(0), 0, "the server never mapped the memory into itself");
    assert_eq!(snapshot(&mut sm), before, "every page and every capability slot is back");
    assert_eq!(sm.stats().scrub_failures, 0);
    assert_eq!(free(&mut sm, A, r.id), Err(ServiceError::NotFound), "freed twice");
    // The space is reused, and zero again.
    let again = alloc(&mut sm, A, 5).unwrap();
    assert_eq!(again.addr, r.addr);
    assert_ne!(again.id, r.id);
    assert_eq!(sm.kernel().read(A, again.addr, 5 * 4096), Some(vec![0; 5 * 4096]));
}

#[test]
fn an_offer_maps_nothing_until_accepted() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 2).unwrap();
    assert!(sm.kernel().write(A, r.addr, b"hello"));
    offer(&mut sm, A, r.id, B, false).unwrap();
    assert_eq!(sm.kernel().mapped_pages(B), 0, "nothing in B");
    let l: Vec<Mapping> = call(&mut sm, B, method::LIST, &0u32).unwrap();
    assert!(l.is_empty(), "nothing listed as mapped");
    assert_eq!(offers(&mut sm, B), [Offered { id: r.id, owner: A, len: 2 * P, writable: false }]);
    assert!(offers(&mut sm, C).is_empty(), "only the peer sees it");
    assert_eq!(usage(&mut sm, B).offers, 1);
    let at = accept(&mut sm, B, r.id, 0).unwrap();
    let k = sm.kernel();
    assert_eq!(k.read(B, at, 5).as_deref(), Some(&b"hello"[..]));
    assert!(!k.write(B, at, b"x"), "read-only for B");
    assert_eq!(k.mapped_pages(B), 2);
    assert!(offers(&mut sm, B).is_empty());
    assert_eq!(accept(&mut sm, B, r.id, 0), Err(ServiceError::Busy), "accepted twice");
    check_accounting(&mut sm);
}

#[test]
fn share_and_unshare() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 2).unwrap();
    assert!(sm.kernel().write(A, r.addr, b"hello"));
    let at_b = share(&mut sm, A, r.id, B, false).unwrap();
    let at_c = share(&mut sm, A, r.id, C, true).unwrap();
    let k = sm.kernel();
    assert_eq!(k.read(B, at_b, 5).as_deref(), Some(&b"hello"[..]));
    assert!(!k.write(B, at_b, b"x"), "read-only for B");
    assert_eq!(k.read(B, at_b - 1, 1), None, "guard pages in the peer too");
    assert_eq!(k.read(B, at_b + 2 * P, 1), None);
    assert!(k.write(C, at_c + P, b"from C"), "writable for C");
    assert_eq!(k.read(A, r.addr + P, 6).as_deref(), Some(&b"from C"[..]), "the same memory");
    assert_eq!(k.read(B, at_b + P, 6).as_deref(), Some(&b"from C"[..]));
    // Unshare: B loses the mapping at once; C keeps it.
    unshare(&mut sm, A, r.id, B).unwrap();
    let k = sm.kernel();
    assert_eq!(k.read(B, at_b, 1), None);
    assert_eq!(k.mapped_pages(B), 0);
    assert_eq!(k.read(C, at_c, 5).as_deref(), Some(&b"hello"[..]));
    assert_eq!(unshare(&mut sm, A, r.id, B), Err(ServiceError::NotFound), "not shared any more");
    assert_eq!(accept(&mut sm, B, r.id, 0), Err(ServiceError::NotFound), "no offer left to accept");
    // C lets it go itself.
    drop_share(&mut sm, C, r.id).unwrap();
    assert_eq!(sm.kernel().read(C, at_c, 1), None, "dropped by the peer");
    assert_eq!(drop_share(&mut sm, C, r.id), Err(ServiceError::NotFound));
    assert_eq!(unshare(&mut sm, A, r.id, C), Err(ServiceError::NotFound));
    // Share again; free takes it from everyone.
    let again = share(&mut sm, A, r.id, B, true).unwrap();
    assert_eq!(sm.kernel().read(B, again, 5).as_deref(), Some(&b"hello"[..]));
    offer(&mut sm, A, r.id, C, true).unwrap();
    free(&mut sm, A, r.id).unwrap();
    let k = sm.kernel();
    for (p, a) in [(A, r.addr), (B, again), (C, at_c)] {
        assert_eq!(k.read(p, a, 1), None, "still mapped in {p}");
    }
    assert_eq!(k.dirty_pages(), 0);
    assert!(offers(&mut sm, C).is_empty(), "the offer went with the region");
    check_accounting(&mut sm);
}

#[test]
fn offers_and_declines() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 1).unwrap();
    // The peer declines: the offer is gone, the owner can offer again.
    offer(&mut sm, A, r.id, B, true).unwrap();
    drop_share(&mut sm, B, r.id).unwrap();
    assert!(offers(&mut sm, B).is_empty());
    assert_eq!(accept(&mut sm, B, r.id, 0), Err(ServiceError::NotFound));
    // The owner withdraws an offer before it is accepted.
    offer(&mut sm, A, r.id, B, true).unwrap();
    unshare(&mut sm, A, r.id, B).unwrap();
    assert_eq!(accept(&mut sm, B, r.id, 0), Err(ServiceError::NotFound), "withdrawn");
    assert_eq!(sm.kernel().mapped_pages(B), 0);
    let s = sm.stats();
    assert_eq!((s.offers, s.accepts, s.drops, s.unshares), (2, 0, 1, 1));
}

#[test]
fn share_refusals() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 1).unwrap();
    let b_own = alloc(&mut sm, B, 2).unwrap();
    assert_eq!(offer(&mut sm, A, r.id, A, true), Err(ServiceError::InvalidArgument), "with itself");
    assert_eq!(offer(&mut sm, A, r.id, 0, true), Err(ServiceError::InvalidArgument));
    assert_eq!(offer(&mut sm, A, r.id, SELF, true), Err(ServiceError::InvalidArgument), "into the server");
    assert_eq!(offer(&mut sm, A, r.id, 999, true), Err(ServiceError::NotFound), "no such program");
    offer(&mut sm, A, r.id, B, true).unwrap();
    assert_eq!(offer(&mut sm, A, r.id, B, false), Err(ServiceError::Busy), "already offered");
    // Nobody else can pass it on, free it, take it or accept it.
    assert_eq!(offer(&mut sm, B, r.id, C, true), Err(ServiceError::Denied));
    assert_eq!(free(&mut sm, B, r.id), Err(ServiceError::Denied));
    assert_eq!(unshare(&mut sm, B, r.id, B), Err(ServiceError::Denied));
    assert_eq!(accept(&mut sm, C, r.id, 0), Err(ServiceError::NotFound), "not offered to C");
    assert_eq!(drop_share(&mut sm, C, r.id), Err(ServiceError::NotFound));
    assert_eq!(accept(&mut sm, A, r.id, 0), Err(ServiceError::NotFound), "the owner accepts nothing");
    // Only into B's share window, never over anything B has there.
    let end = SHARE_WINDOW + SHARE_WINDOW_SIZE;
    for at in [
        P,                    // far below the window
        0x40_0000,            // where programs have code
        SHARE_WINDOW - P,     // just below it
        SHARE_WINDOW,         // its first page is a guard
        SHARE_WINDOW + P + 1, // unaligned
        end - P,              // its last page is a guard
        end,                  // just above it
        end + 0x1000_0000,    // far above
        b_own.addr,           // B's own region
        b_own.addr + P,       // inside it
        b_own.addr + 3 * P,   // its guard page would be B's region's
        !(P - 1),             // no room for anything
    ] {
        assert_eq!(accept(&mut sm, B, r.id, at), Err(ServiceError::InvalidArgument), "at {at:#x}");
    }
    assert_eq!(sm.kernel().mapped_pages(B), 2, "refused requests changed nothing");
    assert_eq!(sm.kernel().mapped_pages(A), 1);
    // A place of B's choice that is free works.
    let at = b_own.addr + 4 * P;
    assert_eq!(accept(&mut sm, B, r.id, at), Ok(at));
    assert!(sm.kernel().write(B, at, b"B chose"));
    assert_eq!(sm.kernel().read(A, r.addr, 7).as_deref(), Some(&b"B chose"[..]));
    assert_eq!(sm.kernel().mapped_pages(0), 0, "never in the server");
    check_accounting(&mut sm);
}

#[test]
fn only_the_owner_may_touch_a_region() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 1).unwrap();
    assert!(sm.kernel().write(A, r.addr, b"A's"));
    assert_eq!(free(&mut sm, B, r.id), Err(ServiceError::Denied));
    assert_eq!(free(&mut sm, A, r.id + 1), Err(ServiceError::NotFound));
    assert_eq!(offer(&mut sm, C, r.id, B, true), Err(ServiceError::Denied));
    assert_eq!(unshare(&mut sm, C, r.id, B), Err(ServiceError::Denied));
    assert_eq!(sm.kernel().read(A, r.addr, 3).as_deref(), Some(&b"A's"[..]));
    free(&mut sm, A, r.id).unwrap();
}

#[test]
fn limits() {
    let mut sm = server();
    assert_eq!(alloc(&mut sm, A, 0), Err(ServiceError::InvalidArgument));
    assert_eq!(alloc(&mut sm, A, MAX_REGION_PAGES + 1), Err(ServiceError::InvalidArgument));
    assert_eq!(alloc(&mut sm, A, u32::MAX), Err(ServiceError::InvalidArgument));
    let mut got = 0;
    while got < QUOTA_PAGES {
        let n = MAX_REGION_PAGES.min(QUOTA_PAGES - got);
        alloc(&mut sm, A, n).unwrap();
        got += n;
    }
    assert_eq!(alloc(&mut sm, A, 1), Err(ServiceError::QuotaExceeded));
    let u = usage(&mut sm, A);
    assert_eq!((u.pages, u.quota), (QUOTA_PAGES, QUOTA_PAGES));
    assert!(alloc(&mut sm, B, 1).is_ok(), "limits are per program");
    for _ in 0..MAX_REGIONS {
        alloc(&mut sm, C, 1).unwrap();
    }
    assert_eq!(alloc(&mut sm, C, 1), Err(ServiceError::QuotaExceeded), "too many regions");
    // Accepted pages are limited too.
    let regions: Vec<u64> =
        call::<_, Vec<Mapping>>(&mut sm, A, method::LIST, &0u32).unwrap().iter().map(|m| m.id).collect();
    for &id in &regions {
        offer(&mut sm, A, id, B, false).unwrap();
    }
    let mut accepted = 0;
    for &id in &regions {
        match accept(&mut sm, B, id, 0) {
            Ok(_) => accepted += 1,
            Err(e) => assert_eq!(e, ServiceError::QuotaExceeded),
        }
    }
    assert!(accepted > 0 && usage(&mut sm, B).shared_with_me == accepted);
    check_accounting(&mut sm);
}

#[test]
fn failures_half_way_leak_nothing() {
    // Fail the n-th retype of an ALLOC (split, frame, paging structure or scrub) and of an
    // ACCEPT: the request fails, and everything the server held is back.
    for n in 0..14 {
        let mut sm = server();
        let r = alloc(&mut sm, A, 1).unwrap();
        // Prime B's address space and funds so its paging structures are not counted as a leak.
        let warm = alloc(&mut sm, B, 7).unwrap();
        free(&mut sm, B, warm.id).unwrap();
        let before = snapshot(&mut sm);
        sm.kernel().fail_retype_in = Some(n);
        match alloc(&mut sm, B, 7) {
            Ok(x) => free(&mut sm, B, x.id).unwrap(),
            Err(e) => assert_eq!(e, ServiceError::NoMemory),
        }
        sm.kernel().fail_retype_in = None;
        let after = snapshot(&mut sm);
        assert_eq!(after, before, "pages and capabilities, failing retype {n}");
        assert_eq!(sm.kernel().mapped_pages(B), 0);
        // The server still works.
        let at = share(&mut sm, A, r.id, C, true).unwrap();
        assert!(sm.kernel().write(C, at, b"ok"));
        check_accounting(&mut sm);
    }
}

#[test]
fn malformed_requests_are_refused_without_effect() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 1).unwrap();
    let before = snapshot(&mut sm);
    // USAGE takes `()`, which any payload decodes as (postcard ignores trailing bytes).
    for m in (0..11).filter(|&m| m != method::USAGE.id()) {
        for junk in [&[][..], &[0xff; 12][..], &[0x80, 0x80, 0x80][..]] {
            let e = sm.handle(A, &Bytes(m, junk.to_vec())).err();
            assert!(
                matches!(e, Some(ServiceError::BadRequest | ServiceError::InvalidArgument | ServiceError::NotFound)),
                "method {m}, {junk:?}: {e:?}"
            );
        }
    }
    assert_eq!(sm.handle(A, &Bytes(40, vec![])).err(), Some(ServiceError::UnknownMethod));
    assert_eq!(snapshot(&mut sm), before);
    assert_eq!(sm.kernel().mapped_pages(A), 1);
    free(&mut sm, A, r.id).unwrap();
}

#[test]
fn sealing_through_the_service() {
    let mut sm = server();
    let blob = seal(&mut sm, A, b"A's api token").unwrap();
    assert_eq!(blob.len(), 13 + blob::OVERHEAD);
    assert_eq!(unseal(&mut sm, A, &blob).unwrap(), b"A's api token");
    assert_eq!(unseal(&mut sm, B, &blob), Err(ServiceError::Tampered), "another program");
    let mut bad = blob.clone();
    bad[20] ^= 4;
    assert_eq!(unseal(&mut sm, A, &bad), Err(ServiceError::Tampered));
    assert_eq!(seal(&mut sm, A, &[1; MAX_SEAL_DATA + 1]), Err(ServiceError::InvalidArgument));
    assert_eq!(unseal(&mut sm, A, &[1; MAX_BLOB + 1]), Err(ServiceError::InvalidArgument));
    assert_eq!(seal(&mut sm, A, &[7; MAX_SEAL_DATA]).unwrap().len(), MAX_BLOB);
    assert_eq!(sm.stats().tampered, 2);
    // The same instance after a reboot (other entropy) still unseals.
    let mut rebooted = server();
    assert_eq!(unseal(&mut rebooted, A, &blob).unwrap(), b"A's api token");
    // Another instance does not; an instance without a secret does not seal at all.
    let mut other = server_with([10; 32]);
    assert_eq!(unseal(&mut other, A, &blob), Err(ServiceError::Tampered));
    let mut none = server_with([0; 32]);
    assert_eq!(seal(&mut none, A, b"x"), Err(ServiceError::Denied));
    assert_eq!(unseal(&mut none, A, &blob), Err(ServiceError::Denied));
}

#[test]
fn list_and_usage() {
    let mut sm = server();
    let a1 = alloc(&mut sm, A, 1).unwrap();
    let a2 = alloc(&mut sm, A, 2).unwrap();
    let b1 = alloc(&mut sm, B, 1).unwrap();
    let b2 = alloc(&mut sm, B, 1).unwrap();
    let at = share(&mut sm, B, b1.id, A, false).unwrap();
    offer(&mut sm, B, b2.id, A, true).unwrap();
    let l: Vec<Mapping> = call(&mut sm, A, method::LIST, &0u32).unwrap();
    assert_eq!(
        l,
        [
            Mapping { id: a1.id, owner: A, addr: a1.addr, len: P, writable: true },
            Mapping { id: a2.id, owner: A, addr: a2.addr, len: 2 * P, writable: true },
            Mapping { id: b1.id, owner: B, addr: at, len: P, writable: false },
        ]
    );
    let rest: Vec<Mapping> = call(&mut sm, A, method::LIST, &2u32).unwrap();
    assert_eq!(rest.len(), 1);
    let u = usage(&mut sm, A);
    let funded = sm.funds(A).0 as u32;
    assert_eq!(u, Usage { pages: 3, quota: QUOTA_PAGES, regions: 2, shared_with_me: 1, offers: 1, funded });
    // Pages of LIST_PAGE.
    for _ in 0..LIST_PAGE {
        alloc(&mut sm, C, 1).unwrap();
    }
    let first: Vec<Mapping> = call(&mut sm, C, method::LIST, &0u32).unwrap();
    assert_eq!(first.len(), LIST_PAGE);
    let second: Vec<Mapping> = call(&mut sm, C, method::LIST, &(LIST_PAGE as u32)).unwrap();
    assert!(second.is_empty());
}

#[test]
fn address_spaces_are_asked_for_once() {
    let mut sm = server();
    for _ in 0..5 {
        alloc(&mut sm, A, 1).unwrap();
    }
    assert_eq!(sm.kernel().vspace_calls, 1);
    let r = alloc(&mut sm, A, 1).unwrap();
    share(&mut sm, A, r.id, B, true).unwrap();
    assert_eq!(sm.kernel().vspace_calls, 2);
}

#[test]
fn a_stopped_owner_leaves_nothing_behind() {
    let mut sm = server();
    // B's and C's windows are primed so that only A's state is compared.
    for p in [B, C] {
        let warm = alloc(&mut sm, p, 1).unwrap();
        free(&mut sm, p, warm.id).unwrap();
    }
    let before = snapshot(&mut sm);
    let r = alloc(&mut sm, A, 4).unwrap();
    assert!(sm.kernel().write(A, r.addr, b"old life"));
    let at = share(&mut sm, A, r.id, B, false).unwrap();
    let r2 = alloc(&mut sm, A, 2).unwrap();
    offer(&mut sm, A, r2.id, C, false).unwrap();
    let blob = seal(&mut sm, A, b"kept").unwrap();
    assert!(sm.kernel().caps_from(A) > 0);
    // Studio stops A: its chunk is revoked, with the funds and everything made from them.
    sm.kernel().kill(A);
    assert_eq!(sm.kernel().read(B, at, 1), None, "the region is gone from its peer at once");
    assert_eq!(sm.kernel().caps_from(A), 0);
    // The peer's next request finds A gone and drops A's state.
    let l: Vec<Mapping> = call(&mut sm, B, method::LIST, &0u32).unwrap();
    assert!(l.is_empty(), "nothing recorded as shared from the dead A");
    assert!(offers(&mut sm, C).is_empty(), "A's offer went with it");
    assert_eq!(accept(&mut sm, C, r2.id, 0), Err(ServiceError::NotFound));
    assert_eq!(sm.stats().forgotten, 1);
    assert!(!sm.knows(A), "nothing of A left");
    assert_eq!(sm.funds(A), (0, 0));
    assert_eq!(snapshot(&mut sm), before, "every slot and capability is back");
    assert_eq!(sm.kernel().mapped_pages(0), 0);
    // A in a new life starts afresh, with fresh funds; its blobs follow its id.
    sm.kernel().start(A);
    assert_eq!(free(&mut sm, A, r.id), Err(ServiceError::NotFound));
    let fresh = alloc(&mut sm, A, 1).unwrap();
    assert_eq!(sm.kernel().read(A, fresh.addr, 4), Some(vec![0; 4]));
    assert_eq!(unseal(&mut sm, A, &blob).unwrap(), b"kept", "blobs follow the program id");
    check_accounting(&mut sm);
}

#[test]
fn a_stopped_owner_is_found_by_its_own_next_request() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 4).unwrap();
    sm.kernel().kill(A);
    sm.kernel().start(A);
    // The server has not heard of it yet; the first request of the new life finds out.
    assert_eq!(free(&mut sm, A, r.id), Err(ServiceError::NotFound));
    assert_eq!(sm.stats().forgotten, 1);
    assert_eq!(sm.funds(A), (0, 0));
    assert_eq!(sm.stats().scrub_failures, 0, "nothing of the dead A was touched");
}

#[test]
fn a_stopped_receiver_leaves_nothing_behind() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 2).unwrap();
    let before = snapshot(&mut sm);
    let at = share(&mut sm, A, r.id, B, true).unwrap();
    assert!(sm.kernel().write(B, at, b"B"));
    sm.kernel().kill(B);
    // The owner's region is untouched; the server's copies for B go when it finds B gone.
    assert_eq!(sm.kernel().read(A, r.addr, 1).as_deref(), Some(&b"B"[..]));
    sm.kernel().start(B);
    assert_eq!(usage(&mut sm, B).shared_with_me, 0);
    assert_eq!(unshare(&mut sm, A, r.id, B), Err(ServiceError::NotFound), "B's share was dropped");
    let after = snapshot(&mut sm);
    assert_eq!((after.0, after.1), (before.0, before.1), "slots and capabilities back");
    // B in its new life can be offered the region again.
    let again = share(&mut sm, A, r.id, B, false).unwrap();
    assert_eq!(sm.kernel().read(B, again, 1).as_deref(), Some(&b"B"[..]));
    check_accounting(&mut sm);
}

#[test]
fn a_dead_peer_whose_slot_studio_reuses_is_forgotten() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 1).unwrap();
    let at_b = share(&mut sm, A, r.id, B, true).unwrap();
    // B dies; Studio then gives the server C's address space in the slot B's was in.
    sm.kernel().kill(B);
    let at_c = share(&mut sm, A, r.id, C, true).unwrap();
    assert_eq!(sm.stats().forgotten, 1, "B's state was dropped when its slot came back for C");
    let l: Vec<Mapping> = call(&mut sm, B, method::LIST, &0u32).unwrap();
    assert!(l.is_empty(), "nothing is recorded as shared with the dead B");
    assert!(sm.kernel().write(C, at_c, b"C"));
    assert_eq!(sm.kernel().read(A, r.addr, 1).as_deref(), Some(&b"C"[..]));
    // B restarted: it gets nothing from its previous life, and can be shared with again.
    sm.kernel().start(B);
    let again = share(&mut sm, A, r.id, B, false).unwrap();
    assert_eq!(again, at_b, "B's window starts afresh");
    assert_eq!(sm.kernel().read(B, again, 1).as_deref(), Some(&b"C"[..]));
}

#[test]
fn churn_keeps_everything_consistent() {
    let mut sm = server();
    let programs = [A, B, C];
    // Prime every program's window, so what comes back at the end is comparable.
    for p in programs {
        let w = alloc(&mut sm, p, 1).unwrap();
        free(&mut sm, p, w.id).unwrap();
    }
    let before = snapshot(&mut sm);
    // (owner, region, [(peer, address there)])
    type Live = (u64, Region, Vec<(u64, u64)>);
    let mut live: Vec<Live> = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for step in 0..600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let who = programs[(x % 3) as usize];
        match (x >> 8) % 6 {
            0 | 1 => {
                if let Ok(r) = alloc(&mut sm, who, 1 + ((x >> 16) % 9) as u32) {
                    let tag = step as u8 | 1;
                    assert!(sm.kernel().write(who, r.addr, &[tag; 16]));
                    live.push((who, r, Vec::new()));
                }
            }
            2 if !live.is_empty() => {
                let i = (x >> 20) as usize % live.len();
                let (owner, r, shares) = live.swap_remove(i);
                free(&mut sm, owner, r.id).unwrap();
                for (p, a) in shares.into_iter().chain([(owner, r.addr)]) {
                    assert_eq!(sm.kernel().read(p, a, 1), None);
                }
            }
            3 if !live.is_empty() => {
                let i = (x >> 20) as usize % live.len();
                let (owner, r, shares) = &mut live[i];
                let peer = programs[((x >> 30) % 3) as usize];
                let expect = sm.kernel().read(*owner, r.addr, 16);
                match share(&mut sm, *owner, r.id, peer, true) {
                    Ok(a) => {
                        assert_eq!(sm.kernel().read(peer, a, 16), expect);
                        shares.push((peer, a));
                    }
                    Err(e) => assert!(
                        matches!(e, ServiceError::InvalidArgument | ServiceError::Busy | ServiceError::NoMemory),
                        "{e:?}"
                    ),
                }
            }
            4 if !live.is_empty() => {
                let i = (x >> 20) as usize % live.len();
                let (owner, r, shares) = &mut live[i];
                if let Some((peer, a)) = shares.pop() {
                    if x & (1 << 40) == 0 {
                        unshare(&mut sm, *owner, r.id, peer).unwrap();
                    } else {
                        drop_share(&mut sm, peer, r.id).unwrap();
                    }
                    assert_eq!(sm.kernel().read(peer, a, 1), None);
                }
            }
            5 => check_accounting(&mut sm),
            _ => {}
        }
    }
    for (owner, r, _) in live {
        free(&mut sm, owner, r.id).unwrap();
    }
    check_accounting(&mut sm);
    assert_eq!(snapshot(&mut sm), before, "every page and slot is back");
    assert_eq!(sm.kernel().dirty_pages(), 0, "every page that held data was zeroed");
    for p in programs {
        assert_eq!(sm.kernel().mapped_pages(p), 0);
    }
}

#[test]
fn churn_with_programs_stopping_keeps_the_accounting() {
    let mut sm = server();
    let programs = [A, B, C];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..400 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let who = programs[(x % 3) as usize];
        let other = programs[((x >> 4) % 3) as usize];
        match (x >> 8) % 8 {
            0..=2 => {
                let _ = alloc(&mut sm, who, 1 + ((x >> 16) % 16) as u32);
            }
            3 => {
                let mine: Vec<Mapping> = call(&mut sm, who, method::LIST, &0u32).unwrap();
                if let Some(m) = mine.iter().find(|m| m.owner == who) {
                    let _ = offer(&mut sm, who, m.id, other, true);
                }
            }
            4 => {
                if let Some(o) = offers(&mut sm, who).first() {
                    let _ = accept(&mut sm, who, o.id, 0);
                }
            }
            5 => {
                let mine: Vec<Mapping> = call(&mut sm, who, method::LIST, &0u32).unwrap();
                if let Some(m) = mine.iter().find(|m| m.owner == who) {
                    free(&mut sm, who, m.id).unwrap();
                }
            }
            6 if (x >> 20).is_multiple_of(4) => {
                sm.kernel().kill(who);
                sm.kernel().start(who);
                // Its next request (or a peer's) finds it gone; nothing of it is left after.
                let u = usage(&mut sm, who);
                assert_eq!((u.pages, u.regions, u.funded), (0, 0, 0), "nothing of its previous life");
                assert_eq!(sm.funds(who), (0, 0));
            }
            _ => check_accounting(&mut sm),
        }
    }
    check_accounting(&mut sm);
    assert_eq!(sm.kernel().mapped_pages(0), 0);
}
/// Hostile (found in review, when the server's slots were one pool shared by every client):
/// five hogs each allocate their full `QUOTA_PAGES` in small regions of two pieces each and
/// accept each other's regions. Each runs out of its own slice of slots; an innocent client's
/// one-page ALLOC still succeeds.
#[test]
fn hogs_exhaust_only_their_own_slots() {
    const D: u64 = 104;
    const E: u64 = 105;
    const V: u64 = 106;
    let mut k = Fake::new(20, &[]);
    for q in [A, B, C, D, E, V, SELF] {
        k.set_quota_bits(q, 23);
        k.start(q);
    }
    let mut sm = server_on(k, [9; 32]);
    let start = sm.free_slots();
    let hogs = [A, B, C, D, E];
    let mut ids: Vec<(u64, u64)> = Vec::new();
    for &h in &hogs {
        // 64 regions, the most allowed: 3- and 5-page regions (two buddy pieces each), 256 pages.
        for n in 0..MAX_REGIONS {
            let pages = if n % 2 == 0 { 3 } else { 5 };
            match alloc(&mut sm, h, pages) {
                Ok(r) => ids.push((h, r.id)),
                Err(e) => {
                    std::println!("hog {h}: region {n} refused: {e:?}");
                    break;
                }
            }
        }
    }
    std::println!("slots after the allocations: {}", sm.free_slots());
    // Each hog offers every region to the next hog, which accepts (up to MAX_ACCEPTED_PAGES).
    for &(h, id) in &ids {
        let peer = hogs[(hogs.iter().position(|&x| x == h).unwrap() + 1) % hogs.len()];
        if offer(&mut sm, h, id, peer, true).is_ok() {
            let _ = accept(&mut sm, peer, id, 0);
        }
    }
    std::println!("slots: {start} at start, {} left", sm.free_slots());
    // The victim has its own quota untouched, yet cannot get one page.
    assert_eq!(alloc(&mut sm, V, 1).map(|_| ()), Ok(()), "the victim is refused secure memory");
}

/// Hostile: a client that takes every slot of its slice (its own regions in small pieces and
/// everything a peer offers it) is refused on its own; its peer and a third program are served,
/// it gets slots back as it frees, and its slice comes back whole when it stops.
#[test]
fn a_client_out_of_slots_exhausts_only_itself() {
    let mut k = Fake::new(20, &[]);
    for q in [A, B, C, SELF] {
        k.set_quota_bits(q, 23);
        k.start(q);
    }
    let mut sm = server_on(k, [9; 32]);
    let start = sm.free_slots();
    let mut mine = Vec::new();
    for n in 0..MAX_REGIONS {
        mine.push(alloc(&mut sm, A, if n % 2 == 0 { 3 } else { 5 }).unwrap().id);
    }
    let mut refused = None;
    for n in 0..MAX_REGIONS {
        let r = alloc(&mut sm, B, 4).unwrap();
        offer(&mut sm, B, r.id, A, false).unwrap();
        if let Err(e) = accept(&mut sm, A, r.id, 0) {
            refused = Some((n, e));
            break;
        }
    }
    let (n, e) = refused.expect("the slice ran out");
    assert_eq!(e, ServiceError::NoMemory);
    assert!(n > 0, "some accepted first");
    assert!(sm.client_free_slots(A).unwrap() < 4, "A used up its own slice");
    // Everyone else is served as before.
    assert!(alloc(&mut sm, C, 1).is_ok());
    let one_page = sm.client_free_slots(C);
    assert!(alloc(&mut sm, B, 1).is_ok());
    // A's own frees give A its slots back.
    free(&mut sm, A, mine[0]).unwrap();
    free(&mut sm, A, mine[1]).unwrap();
    assert!(alloc(&mut sm, A, 1).is_ok());
    check_accounting(&mut sm);
    // A stops: its slice is whole again (once the server notices, on A's next life).
    sm.kernel().kill(A);
    sm.kernel().start(A);
    assert!(alloc(&mut sm, A, 1).is_ok());
    assert_eq!(sm.client_free_slots(A), one_page, "A's new life has a whole slice, as C had");
    // B's copies in A's old life went with it; B's own slots are all accounted for.
    let (b_regions, b_used) = (usage(&mut sm, B).regions, CLIENT_SLOTS - sm.client_free_slots(B).unwrap());
    assert!(b_used >= b_regions as u64, "B's frames are in B's slice");
    assert!(sm.free_slots() < start);
}

/// A slice per client and no more: with every slice taken a further client is refused, and the
/// slice of a client that stopped is reused without anyone touching the dead client first.
#[test]
fn clients_beyond_the_slices_wait_for_one_that_stopped() {
    const D: u64 = 104;
    let mut k = Fake::new(20, &[]);
    for q in [A, B, C, D, SELF] {
        k.start(q);
    }
    // Room for two slices (and a part of a third, never used).
    let end = crate::STUDIO_SLOTS_END + 2 * CLIENT_SLOTS + CLIENT_SLOTS / 2;
    let cfg = Config { own_id: SELF, slots: (crate::STUDIO_SLOTS_END, end), window: (SHARE_WINDOW, SHARE_WINDOW_SIZE) };
    let mut sm = SecMem::new(k, cfg, None);
    alloc(&mut sm, A, 1).unwrap();
    alloc(&mut sm, B, 1).unwrap();
    assert_eq!(alloc(&mut sm, C, 1).map(|_| ()), Err(ServiceError::NoMemory));
    assert!(!sm.knows(C));
    sm.kernel().kill(A);
    alloc(&mut sm, C, 1).unwrap();
    assert!(!sm.knows(A) && sm.knows(C));
    assert_eq!(alloc(&mut sm, D, 1).map(|_| ()), Err(ServiceError::NoMemory));
    alloc(&mut sm, B, 2).unwrap();
}
