//! Guest test agent: durable storage across boots. On a fresh store it writes keys of many sizes,
//! a multi-key transaction and a log record; at every later boot it checks that everything every
//! earlier boot wrote reads back (values, the transaction whole, the log's hash chain), then adds
//! this boot's record. It also meets its quota: an over-quota write is refused with a clear
//! error and loses nothing already stored. A blob sealed by secure memory at the first boot is
//! kept in the store and unseals at every later one (the sealing key is the instance's, the blob
//! bound to this program). Prints `PASS`, or `FAIL: ...` and `FAILED`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use ozone_agent_sdk::secmem::SecureMemory;
use ozone_agent_sdk::store::{Error, Fault, Store};
use ozone_agent_sdk::{entry, println};

entry!(run);

/// What is sealed at the first boot.
const SECRET: &[u8] = b"sealed at the first boot, unsealed at every later one";

/// The sizes of the keys' values: small, one message, several pieces, several blocks.
const SIZES: [usize; 6] = [1, 100, 800, 3000, 9000, 20000];

fn value(k: usize, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(k as u8 * 17 + 1)).collect()
}

fn run() -> u64 {
    let mut failures: Vec<String> = Vec::new();
    let st = match Store::connect() {
        Ok(s) => s,
        Err(e) => {
            println!("FAIL: no store: {e:?}");
            println!("FAILED");
            return 1;
        }
    };
    // Sealing first, while the shaper still learns what this agent uses (its warm-up) — and
    // unsealing once too: the profile learned here is kept across boots (the journal), and the
    // next boot, which unseals, runs under it from its first request.
    match st.get(b"sealed") {
        Ok(None) => match SecureMemory::connect().and_then(|m| Ok((m.seal(SECRET)?, m))) {
            Ok((blob, m)) => {
                match m.unseal(&blob) {
                    Ok(data) if data == SECRET => {}
                    other => failures.push(format!("unseal what was just sealed: {:?}", other.map(|d| d.len()))),
                }
                if let Err(e) = st.put(b"sealed", &blob) {
                    failures.push(format!("put the sealed blob: {e:?}"));
                }
            }
            Err(e) => failures.push(format!("seal: {e}")),
        },
        Ok(Some(blob)) => match SecureMemory::connect().and_then(|m| m.unseal(&blob)) {
            Ok(data) if data == SECRET => println!("the sealed blob kept in the store unseals"),
            other => failures.push(format!("unseal the kept blob: {:?}", other.map(|d| d.len()))),
        },
        Err(e) => failures.push(format!("the sealed blob: {e:?}")),
    }
    let boots = match st.get(b"boots") {
        Ok(Some(v)) if v.len() == 8 => u64::from_le_bytes(v.try_into().unwrap_or([0; 8])),
        Ok(None) => 0,
        other => {
            failures.push(format!("reading `boots`: {other:?}"));
            0
        }
    };
    if boots == 0 {
        for (k, &n) in SIZES.iter().enumerate() {
            if let Err(e) = st.put(format!("key-{k}").as_bytes(), &value(k, n)) {
                failures.push(format!("put key-{k} ({n} bytes): {e:?}"));
            }
        }
        let mut t = st.transaction();
        t.put(b"txn-a", b"alpha").put(b"txn-b", &value(9, 2000)).put(b"txn-c", b"gamma");
        if let Err(e) = t.commit() {
            failures.push(format!("transaction: {e:?}"));
        }
        println!("fresh store: wrote {} keys and a transaction of 3", SIZES.len());
    } else {
        let mut keys = 0;
        for (k, &n) in SIZES.iter().enumerate() {
            match st.get(format!("key-{k}").as_bytes()) {
                Ok(Some(v)) if v == value(k, n) => keys += 1,
                other => failures.push(format!("key-{k} after reboot: {:?}", other.map(|v| v.map(|v| v.len())))),
            }
        }
        let txn = [st.get(b"txn-a"), st.get(b"txn-b"), st.get(b"txn-c")];
        match txn {
            [Ok(Some(a)), Ok(Some(b)), Ok(Some(c))] if a == b"alpha" && b == value(9, 2000) && c == b"gamma" => {}
            _ => failures.push(String::from("the transaction did not read back whole")),
        }
        match st.log_read(b"boots", 0, 100) {
            Ok(records) if records.len() as u64 == boots => {
                for (i, (seq, r)) in records.iter().enumerate() {
                    if *seq != i as u64 || *r != format!("boot {i}").into_bytes() {
                        failures.push(format!("log record {i} reads {seq}: {r:?}"));
                    }
                }
            }
            other => failures.push(format!("the log after {boots} boots: {:?}", other.map(|r| r.len()))),
        }
        println!("boot {boots}: {keys} keys, the transaction and {boots} log records read back");
    }
    match st.log_append(b"boots", format!("boot {boots}").as_bytes()) {
        Ok(seq) if seq == boots => {}
        other => failures.push(format!("log append: {other:?}")),
    }
    if let Err(e) = st.put(b"boots", &(boots + 1).to_le_bytes()) {
        failures.push(format!("put boots: {e:?}"));
    }
    // Past the quota: a clear refusal, and what is stored stays.
    match st.put(b"too-big", &value(7, 60_000)) {
        Err(Error::Store(Fault::QuotaExceeded { used, quota })) => {
            println!("over quota: refused ({used} of {quota} bytes used)");
        }
        other => failures.push(format!("an over-quota write: {:?}", other.map(|_| ()))),
    }
    match st.get(b"key-5") {
        Ok(Some(v)) if v == value(5, SIZES[5]) => {}
        _ => failures.push(String::from("key-5 changed after the refused write")),
    }
    if let Ok(u) = st.usage() {
        println!("usage: {} bytes, {} keys, {} records", u.bytes, u.keys, u.records);
    }
    if failures.is_empty() {
        println!("PASS");
        0
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        println!("FAILED");
        1
    }
}
