//! The whole service on the kernel model (`fake.rs`): requests go in as postcard bytes through
//! [`SecMem::handle`] and answers come out as the client would decode them; the tests then look
//! at the programs' address spaces and the physical memory the way the programs would.

use alloc::vec;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::secmem::*;
use ozone_agent_sdk::protocol::start::{SHARE_WINDOW, SHARE_WINDOW_SIZE};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fake::{Fake, OWN_VSPACE, POOL};
use crate::seal::Sealer;
use crate::service::{Config, Payload, SecMem};
use crate::window::GUARD_PAGES;

const A: u64 = 101;
const B: u64 = 102;
const C: u64 = 103;
const P: u64 = PAGE_SIZE;

/// A request payload as it arrives: postcard bytes.
struct Bytes(Vec<u8>);

impl Payload for Bytes {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        postcard::from_bytes(&self.0).map_err(|_| ServiceError::BadRequest)
    }
}

fn server_with(pool_bits: u8, secret: [u8; 32]) -> SecMem<Fake> {
    let cfg = Config {
        pool: POOL,
        pool_size: 1 << pool_bits,
        own_vspace: OWN_VSPACE,
        slots: (crate::STUDIO_SLOTS_END, 4096),
        window: (SHARE_WINDOW, SHARE_WINDOW_SIZE),
    };
    SecMem::new(Fake::new(pool_bits, &[A, B, C]), cfg, Sealer::new(&secret, [0x3c; 32]))
}

/// A server with a 4 MiB pool.
fn server() -> SecMem<Fake> {
    server_with(22, [9; 32])
}

fn call<Req: Serialize, Resp: DeserializeOwned>(
    sm: &mut SecMem<Fake>,
    caller: u64,
    m: u64,
    req: &Req,
) -> Result<Resp, ServiceError> {
    let payload = Bytes(postcard::to_allocvec(req).unwrap());
    let answer = sm.handle(caller, m, &payload)?;
    let bytes = postcard::to_allocvec(&answer).unwrap();
    Ok(postcard::from_bytes(&bytes).expect("the answer decodes as the method's response type"))
}

fn alloc(sm: &mut SecMem<Fake>, who: u64, pages: u32) -> Result<Region, ServiceError> {
    call(sm, who, method::ALLOC, &Alloc { pages })
}

fn free(sm: &mut SecMem<Fake>, who: u64, id: u64) -> Result<(), ServiceError> {
    call(sm, who, method::FREE, &Free { id })
}

fn share(sm: &mut SecMem<Fake>, who: u64, id: u64, peer: u64, writable: bool) -> Result<u64, ServiceError> {
    call(sm, who, method::SHARE, &Share { id, peer, writable })
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

/// Everything the server holds that must come back: pool pages (plus pages held as paging
/// structures), capabilities in its CNode.
fn snapshot(sm: &mut SecMem<Fake>) -> (u64, usize, usize) {
    let pages = sm.free_pages() + sm.table_pages() as u64;
    let caps = sm.kernel().cap_count();
    (pages, caps, sm.table_pages())
}

#[test]
fn the_model_notices_memory_that_is_not_zeroed() {
    use crate::kernel::{Kernel, Object};
    let mut k = Fake::new(16, &[A]);
    k.retype(POOL, Object::Frame, 300).unwrap();
    k.retype(POOL, Object::PageTable, 301).unwrap();
    k.retype(POOL, Object::PageDirectory, 302).unwrap();
    k.retype(POOL, Object::Pdpt, 303).unwrap();
    for t in [303, 302, 301] {
        k.map_table(t, OWN_VSPACE, SHARE_WINDOW).unwrap();
    }
    k.map_frame(300, OWN_VSPACE, SHARE_WINDOW, true).unwrap();
    assert_eq!(k.map_frame(300, OWN_VSPACE, SHARE_WINDOW + P, true), Err(ozone_abi::Error::DeleteFirst));
    // SAFETY: (the model checks the mapping itself.)
    unsafe { k.zero_own(SHARE_WINDOW, 16) };
    k.revoke(POOL).unwrap();
    assert_eq!(k.destroyed.len(), 1);
    assert_eq!(k.mapped_pages(0), 0, "revoke unmapped it");
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
}

#[test]
fn free_unmaps_zeroes_and_gives_the_memory_back() {
    let mut sm = server();
    // A's first region also makes A's paging structures, which stay: prime them.
    let warm = alloc(&mut sm, A, 1).unwrap();
    free(&mut sm, A, warm.id).unwrap();
    let destroyed = sm.kernel().destroyed.len();
    let before = snapshot(&mut sm);
    let r = alloc(&mut sm, A, 5).unwrap();
    assert!(sm.kernel().write(A, r.addr, &[0xa5; 5 * 4096]));
    assert_eq!(sm.free_pages(), before.0 - before.2 as u64 - 5);
    free(&mut sm, A, r.id).unwrap();
    let k = sm.kernel();
    assert_eq!(k.read(A, r.addr, 1), None, "unmapped");
    assert_eq!(k.destroyed.len(), destroyed + 5);
    assert!(k.destroyed.iter().all(|&(_, zero)| zero), "every frame was zero when destroyed");
    assert_eq!(k.mapped_pages(0), 0, "the scratch page is unmapped again");
    assert_eq!(snapshot(&mut sm), before, "every page and every capability slot is back");
    assert_eq!(free(&mut sm, A, r.id), Err(ServiceError::NotFound), "freed twice");
    // The space is reused, and zero again.
    let again = alloc(&mut sm, A, 5).unwrap();
    assert_eq!(again.addr, r.addr);
    assert_ne!(again.id, r.id);
    assert_eq!(sm.kernel().read(A, again.addr, 5 * 4096), Some(vec![0; 5 * 4096]));
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
    // Share again after unsharing.
    let again = share(&mut sm, A, r.id, B, true).unwrap();
    assert_eq!(sm.kernel().read(B, again, 5).as_deref(), Some(&b"hello"[..]));
    // Free takes it from everyone.
    free(&mut sm, A, r.id).unwrap();
    let k = sm.kernel();
    for (p, a) in [(A, r.addr), (B, again), (C, at_c)] {
        assert_eq!(k.read(p, a, 1), None, "still mapped in {p}");
    }
    assert!(k.destroyed.iter().all(|&(_, zero)| zero));
}

#[test]
fn share_rules() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 1).unwrap();
    assert_eq!(share(&mut sm, A, r.id, A, true), Err(ServiceError::InvalidArgument), "with itself");
    assert_eq!(share(&mut sm, A, r.id, 0, true), Err(ServiceError::InvalidArgument));
    assert_eq!(share(&mut sm, A, r.id, 999, true), Err(ServiceError::NotFound), "no such program");
    share(&mut sm, A, r.id, B, true).unwrap();
    assert_eq!(share(&mut sm, A, r.id, B, false), Err(ServiceError::Busy), "already shared");
    // The peer cannot pass it on, free it or take it from others.
    assert_eq!(share(&mut sm, B, r.id, C, true), Err(ServiceError::Denied));
    assert_eq!(free(&mut sm, B, r.id), Err(ServiceError::Denied));
    assert_eq!(unshare(&mut sm, B, r.id, B), Err(ServiceError::Denied));
    assert_eq!(sm.kernel().mapped_pages(A), 1, "refused requests changed nothing");
    assert_eq!(sm.kernel().mapped_pages(B), 1);
}

#[test]
fn only_the_owner_may_touch_a_region() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 1).unwrap();
    assert!(sm.kernel().write(A, r.addr, b"A's"));
    assert_eq!(free(&mut sm, B, r.id), Err(ServiceError::Denied));
    assert_eq!(free(&mut sm, A, r.id + 1), Err(ServiceError::NotFound));
    assert_eq!(share(&mut sm, C, r.id, B, true), Err(ServiceError::Denied));
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
    let u: Usage = call(&mut sm, A, method::USAGE, &()).unwrap();
    assert_eq!(u, Usage { pages: QUOTA_PAGES, quota: QUOTA_PAGES, regions: u.regions, shared_with_me: 0 });
    assert!(alloc(&mut sm, B, 1).is_ok(), "quotas are per program");
    for _ in 0..MAX_REGIONS {
        alloc(&mut sm, C, 1).unwrap();
    }
    assert_eq!(alloc(&mut sm, C, 1), Err(ServiceError::QuotaExceeded), "too many regions");
}

#[test]
fn the_pool_runs_out_cleanly_and_comes_back() {
    // A 64 KiB pool: 16 pages, some of which become paging structures.
    let mut sm = server_with(16, [9; 32]);
    let warm = alloc(&mut sm, A, 1).unwrap();
    free(&mut sm, A, warm.id).unwrap();
    let before = snapshot(&mut sm);
    let mut regions = Vec::new();
    loop {
        match alloc(&mut sm, A, 3) {
            Ok(r) => regions.push(r),
            Err(e) => {
                assert_eq!(e, ServiceError::NoMemory);
                break;
            }
        }
    }
    assert!(!regions.is_empty());
    // Smaller requests may still fit; then nothing does.
    while let Ok(r) = alloc(&mut sm, A, 1) {
        regions.push(r);
    }
    assert_eq!(sm.free_pages(), 0);
    for r in regions {
        free(&mut sm, A, r.id).unwrap();
    }
    assert_eq!(snapshot(&mut sm), before);
    assert!(alloc(&mut sm, A, 3).is_ok(), "freed memory is usable again");
}

#[test]
fn failures_half_way_leak_nothing() {
    // Fail the n-th retype of an ALLOC (split, frame or paging structure) and of a SHARE: the
    // request fails, and everything the server held is back.
    for n in 0..12 {
        let mut sm = server();
        let r = alloc(&mut sm, A, 1).unwrap();
        // Prime B's address space so its paging structures are not counted as a leak.
        let warm = alloc(&mut sm, B, 1).unwrap();
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
    }
}

#[test]
fn malformed_requests_are_refused_without_effect() {
    let mut sm = server();
    let r = alloc(&mut sm, A, 1).unwrap();
    let before = snapshot(&mut sm);
    // USAGE takes `()`, which any payload decodes as (postcard ignores trailing bytes).
    for m in 0..7 {
        for junk in [&[][..], &[0xff; 12][..], &[0x80, 0x80, 0x80][..]] {
            let e = sm.handle(A, m, &Bytes(junk.to_vec())).err();
            assert!(
                matches!(e, Some(ServiceError::BadRequest | ServiceError::InvalidArgument | ServiceError::NotFound)),
                "method {m}, {junk:?}: {e:?}"
            );
        }
    }
    assert_eq!(sm.handle(A, 40, &Bytes(vec![])).err(), Some(ServiceError::UnknownMethod));
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
    let mut other = server_with(22, [10; 32]);
    assert_eq!(unseal(&mut other, A, &blob), Err(ServiceError::Tampered));
    let mut none = server_with(22, [0; 32]);
    assert_eq!(seal(&mut none, A, b"x"), Err(ServiceError::Denied));
    assert_eq!(unseal(&mut none, A, &blob), Err(ServiceError::Denied));
}

#[test]
fn list_and_usage() {
    let mut sm = server();
    let a1 = alloc(&mut sm, A, 1).unwrap();
    let a2 = alloc(&mut sm, A, 2).unwrap();
    let b1 = alloc(&mut sm, B, 1).unwrap();
    let at = share(&mut sm, B, b1.id, A, false).unwrap();
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
    let u: Usage = call(&mut sm, A, method::USAGE, &()).unwrap();
    assert_eq!(u, Usage { pages: 3, quota: QUOTA_PAGES, regions: 2, shared_with_me: 1 });
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
fn a_restarted_program_starts_afresh() {
    let mut sm = server();
    let before = snapshot(&mut sm);
    let r = alloc(&mut sm, A, 4).unwrap();
    assert!(sm.kernel().write(A, r.addr, b"old life"));
    let at = share(&mut sm, A, r.id, B, false).unwrap();
    let blob = seal(&mut sm, A, b"kept").unwrap();
    // Studio kills A and starts it again under the same id.
    sm.kernel().kill(A);
    sm.kernel().start(A);
    let fresh = alloc(&mut sm, A, 1).unwrap();
    assert_eq!(sm.stats().forgotten, 1);
    assert_eq!(sm.kernel().read(A, fresh.addr, 4), Some(vec![0; 4]));
    assert_eq!(sm.kernel().read(B, at, 1), None, "the old region is gone from its peer too");
    assert_eq!(free(&mut sm, A, r.id), Err(ServiceError::NotFound));
    assert!(sm.kernel().destroyed.iter().all(|&(_, zero)| zero), "and was zeroed");
    assert_eq!(unseal(&mut sm, A, &blob).unwrap(), b"kept", "blobs follow the program id");
    free(&mut sm, A, fresh.id).unwrap();
    let after = snapshot(&mut sm);
    assert_eq!(after.0, before.0, "all memory back");
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
    let mut sm = server_with(20, [9; 32]);
    let before = snapshot(&mut sm);
    let programs = [A, B, C];
    // (owner, region, [(peer, address there)])
    type Live = (u64, Region, Vec<(u64, u64)>);
    let mut live: Vec<Live> = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for step in 0..600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let who = programs[(x % 3) as usize];
        match (x >> 8) % 5 {
            0 | 1 => {
                if let Ok(r) = alloc(&mut sm, who, 1 + ((x >> 16) % 9) as u32) {
                    let tag = step as u8;
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
                    unshare(&mut sm, *owner, r.id, peer).unwrap();
                    assert_eq!(sm.kernel().read(peer, a, 1), None);
                }
            }
            _ => {}
        }
    }
    for (owner, r, _) in live {
        free(&mut sm, owner, r.id).unwrap();
    }
    let after = snapshot(&mut sm);
    assert_eq!(after.0, before.0, "every page is back");
    assert!(sm.kernel().destroyed.iter().all(|&(_, zero)| zero), "every frame was zeroed");
    for p in programs {
        assert_eq!(sm.kernel().mapped_pages(p), 0);
    }
}
