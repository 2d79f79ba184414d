//! Guest test agent: crash consistency and damage, end to end through the storage server.
//!
//! Its history is a chain of transactions: transaction `i` sets `counter` to `i`, puts `k{i}`
//! (sizes cycling from 40 bytes to 12 KB, several messages and several blocks) and deletes
//! `k{i - WINDOW}`, all at once. At start it checks what the store holds against that history:
//! - `counter` reads back (absent on a fresh store: 0);
//! - each `k{j}` of the window `c - WINDOW < j <= c` reads back exactly as written (`intact`), or
//!   the store refuses it as damaged (`corrupt`: the clear error for a damaged object); a value
//!   that reads back different, or a key of the window that is missing, is `wrong`;
//! - `k{c + 1}` and `k{c - WINDOW}` are absent (a half-applied transaction would show them):
//!   otherwise `wrong`.
//!
//! It prints `verified counter C: N intact, M corrupt, W wrong`, then writes transactions from
//! `C + 1`, printing `acked I` once each commit has returned (the store acknowledges only durable
//! commits). The host kills the machine at random instants and checks at the next boot that `C`
//! is at least the last `I` acknowledged. As `store-crash` it writes until it is killed; as
//! `store-damage` it writes up to transaction 24, prints `done` and exits (status 1 if anything
//! was wrong).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use ozone_agent_sdk::store::{Error, Fault, Store};
use ozone_agent_sdk::{entry, println, start};

entry!(run);

/// How many of the newest keys are kept.
const WINDOW: u64 = 8;
/// The value sizes, by `i % 5`.
const SIZES: [usize; 5] = [100, 900, 3000, 12000, 40];
/// `store-damage` writes up to this transaction.
const DAMAGE_TARGET: u64 = 24;

fn value(i: u64) -> Vec<u8> {
    let n = SIZES[(i % 5) as usize];
    let mut rng = ozone_guest_tests::Rng(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..n).map(|_| rng.next() as u8).collect()
}

fn key(i: u64) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

/// What reading a key found.
enum Found {
    Intact,
    Corrupt,
    Wrong,
}

fn check(st: &Store, i: u64, expected: Option<&[u8]>) -> Found {
    match (st.get(&key(i)), expected) {
        (Ok(Some(v)), Some(e)) if v == e => Found::Intact,
        (Ok(None), None) => Found::Intact,
        (Err(Error::Store(Fault::Corrupt)), _) => Found::Corrupt,
        (other, _) => {
            println!("k{i}: {:?}", other.map(|v| v.map(|v| v.len())));
            Found::Wrong
        }
    }
}

fn run() -> u64 {
    let target = match start::info().map(|i| i.name()) {
        Some("store-damage") => DAMAGE_TARGET,
        _ => u64::MAX,
    };
    let st = match Store::connect() {
        Ok(s) => s,
        Err(e) => {
            println!("no store: {e:?}");
            return 1;
        }
    };
    let counter = match st.get(b"counter") {
        Ok(Some(v)) if v.len() == 8 => Some(u64::from_le_bytes(v.try_into().unwrap_or([0; 8]))),
        Ok(None) => Some(0),
        other => {
            println!("counter: {:?}", other.map(|v| v.map(|v| v.len())));
            None
        }
    };
    let Some(c) = counter else {
        println!("verified counter ?: 0 intact, 0 corrupt, 1 wrong");
        return 1;
    };
    let (mut intact, mut corrupt, mut wrong) = (0u64, 0u64, 0u64);
    let first = c.saturating_sub(WINDOW - 1).max(1);
    let mut tally = |f: Found| match f {
        Found::Intact => intact += 1,
        Found::Corrupt => corrupt += 1,
        Found::Wrong => wrong += 1,
    };
    for j in first..=c {
        tally(check(&st, j, Some(&value(j))));
    }
    // Neither the next transaction's key nor the one the last transaction deleted.
    for j in [Some(c + 1), c.checked_sub(WINDOW)].into_iter().flatten().filter(|&j| j >= 1) {
        if !matches!(check(&st, j, None), Found::Intact) {
            wrong += 1;
        }
    }
    println!("verified counter {c}: {intact} intact, {corrupt} corrupt, {wrong} wrong");
    let mut i = c + 1;
    while i <= target {
        let mut t = st.transaction();
        let v = value(i);
        let k = key(i);
        t.put(b"counter", &i.to_le_bytes()).put(&k, &v);
        let old_key = key(i.saturating_sub(WINDOW));
        if i > WINDOW {
            t.delete(&old_key);
        }
        match t.commit() {
            Ok(()) => println!("acked {i}"),
            Err(e) => {
                println!("transaction {i} refused: {e:?}");
                return 1;
            }
        }
        i += 1;
    }
    println!("done");
    u64::from(wrong > 0)
}
