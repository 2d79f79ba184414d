//! The journal (`journal`): keeps Studio's decision log in the store, across reboots.
//!
//! Studio keeps its decisions in a bounded log in memory and calls no server (it answers, it
//! never asks), so keeping them is pulled: with the `journal` privilege this program reads
//! Studio's `LOG` every 200 ms from where it stopped, and appends what is new to its store log
//! `decisions` as records of lines `BOOT SEQ TEXT` (see the library). A store log is append-only
//! and hash-chained (`docs/storage.md`): a record changed, removed or reordered on disk is
//! reported when read. At start it counts the boot, says how many records earlier boots kept, and
//! shows the last of them (so a crash's last decisions are on the screen after the reboot).
//!
//! Without a store (no disk) it says so and ends; when its quota is full it says from which
//! decision on nothing is kept, and ends.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::time::Duration;

use ozone_agent_sdk::protocol::studio::{LogPage, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::store::{Error, Fault, Store};
use ozone_agent_sdk::{debug, entry, println, timer};
use ozone_journal::{Batcher, records};

entry!(run);

/// The store log the decisions go to.
const LOG: &[u8] = b"decisions";
/// How often Studio's log is read.
const PERIOD: Duration = Duration::from_millis(200);

fn run() -> u64 {
    let st = match Store::connect() {
        Ok(s) => s,
        Err(e) => {
            println!("no store ({e:?}): Studio's decisions are not kept");
            return 0;
        }
    };
    let boot = match st.get(b"boot") {
        Ok(Some(v)) if v.len() == 8 => u64::from_le_bytes(v.try_into().unwrap_or([0; 8])).saturating_add(1),
        Ok(None) => 1,
        Ok(Some(_)) | Err(Error::Store(Fault::Corrupt)) => {
            println!("the boot counter is damaged: counting from 1 again");
            1
        }
        Err(e) => {
            println!("no store ({e:?}): Studio's decisions are not kept");
            return 0;
        }
    };
    if let Err(e) = st.put(b"boot", &boot.to_le_bytes()) {
        println!("cannot count this boot ({e:?}): Studio's decisions are not kept");
        return 0;
    }
    earlier(&st, boot);
    let studio = Client::studio();
    let mut batcher = Batcher::new(boot);
    loop {
        let mut lines = Vec::new();
        // Bounded: Studio keeps a bounded log, and a page is never empty before its end.
        for _ in 0..64 {
            let page: LogPage = match studio.call(method::LOG, &batcher.next()) {
                Ok(p) => p,
                Err(e) => {
                    println!("cannot read Studio's log ({e}): decisions from {} on are not kept", batcher.next());
                    return 1;
                }
            };
            let new = batcher.lines(&page);
            if new.is_empty() {
                break;
            }
            lines.extend(new);
        }
        for record in records(&lines) {
            match st.log_append(LOG, &record) {
                Ok(seq) => debug!("kept decisions up to {} (record {seq})", batcher.next().saturating_sub(1)),
                Err(e) => {
                    // The batcher is past the whole pull: name the first decision not kept.
                    let from = ozone_journal::first_decision(&record).unwrap_or(batcher.next());
                    println!(
                        "cannot keep Studio's decisions ({e:?}): nothing from boot {boot}'s decision {from} on is kept"
                    );
                    return 1;
                }
            }
        }
        if let Err(e) = timer::sleep(PERIOD) {
            println!("no timer ({e}): decisions from {} on are not kept", batcher.next());
            return 1;
        }
    }
}

/// Say what earlier boots kept, and the last decision of them.
fn earlier(st: &Store, boot: u64) {
    let kept = match st.log_len(LOG) {
        Ok(n) => n,
        Err(e) => {
            println!("boot {boot}: the decisions of earlier boots cannot be read ({e:?})");
            return;
        }
    };
    println!("boot {boot}: {kept} records of Studio's decisions kept from earlier boots");
    if kept == 0 {
        return;
    }
    match st.log_read(LOG, kept - 1, 1) {
        Ok(r) => {
            if let Some((_, record)) = r.first() {
                let text = core::str::from_utf8(record).unwrap_or("(not text)");
                println!("the last kept: {}", text.rsplit('\n').next().unwrap_or(""));
            }
        }
        // The chain is checked as the store reads: a record changed on disk is named.
        Err(e) => println!("the last kept record cannot be read ({e:?})"),
    }
}
