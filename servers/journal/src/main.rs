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
//! It keeps the syscall shaper's learned profiles too (store key `profiles`): the shaper calls no
//! server, so with Studio's leave (`ShapeOp::Keep`, the `keeper` privilege) this program reads
//! them (`SAVED`) every period and stores them when they change; at start, before it stores
//! anything, it hands the kept ones back (`RESTORE`), so an agent that learned its profile in an
//! earlier boot is enforced from its first syscall instead of learning again. The shaper applies
//! a kept profile only to an agent still learning in this boot (`docs/shaper.md`).
//!
//! Without a store (no disk) it says so and ends; when its quota is full it says from which
//! decision on nothing is kept, and ends.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::time::Duration;

use ozone_agent_sdk::protocol::shaper::{self, Restored};
use ozone_agent_sdk::protocol::studio::{LogPage, method};
use ozone_agent_sdk::protocol::{ServiceError, system::MAX_PROGRAMS};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::store::{Error, Fault, Store};
use ozone_agent_sdk::{AgentError, debug, entry, println, timer};
use ozone_journal::{Batcher, PROFILES, Profiles, records};

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
    let mut keeper = Keeper::new(&st);
    let studio = Client::studio();
    let mut batcher = Batcher::new(boot);
    loop {
        keeper.turn(&st);
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

/// Keeps the shaper's profiles: hands back those of earlier boots once the shaper can be
/// reached, then stores what the shaper would keep whenever it changes. It never stores over
/// the kept profiles before every one of them has been handed back and answered, nor when they
/// could not be read for a reason that may pass (a store error: then not at all this boot).
struct Keeper {
    shaper: Option<Client>,
    /// The profiles of earlier boots not handed back yet.
    to_restore: Profiles,
    /// What is in the store now (its stored form).
    stored: Vec<u8>,
    /// Why the shaper cannot be reached, said once.
    said: Option<AgentError>,
    /// The store could not be read: nothing is stored this boot (it would overwrite what may
    /// still be there).
    hands_off: bool,
    /// A write failed (said once; tried again every turn).
    write_failed: bool,
    /// What became of the restores: now, when their agents start, refused.
    restored: [u32; 3],
}

/// Reads of `SAVED` that saw the list change, before a turn gives up until the next.
const MAX_REREADS: u32 = 4;

impl Keeper {
    fn new(st: &Store) -> Keeper {
        let mut hands_off = false;
        let (to_restore, stored) = match st.get(PROFILES) {
            Ok(Some(bytes)) => match Profiles::decode(&bytes) {
                Some(p) => (p, bytes),
                None => {
                    println!("the kept syscall profiles cannot be read: every agent learns its profile again");
                    (Profiles::default(), Vec::new())
                }
            },
            Ok(None) => (Profiles::default(), Vec::new()),
            Err(Error::Store(Fault::Corrupt)) => {
                println!("the kept syscall profiles are damaged: every agent learns its profile again");
                (Profiles::default(), Vec::new())
            }
            Err(e) => {
                println!(
                    "the kept syscall profiles cannot be read ({e:?}): agents learn again, and nothing is kept this boot"
                );
                hands_off = true;
                (Profiles::default(), Vec::new())
            }
        };
        Keeper { shaper: None, to_restore, stored, said: None, hands_off, write_failed: false, restored: [0; 3] }
    }

    /// One turn: reach the shaper if need be, hand back, keep.
    fn turn(&mut self, st: &Store) {
        if self.hands_off {
            return;
        }
        let Some(shaper) = self.reach() else { return };
        if !self.to_restore.0.is_empty() {
            if let Err(e) = self.restore(&shaper) {
                // The shaper stopped, or refuses the journal: what is left is handed back when it
                // can be, and nothing is stored over it meanwhile.
                self.lost(e);
                return;
            }
            let [now, later, refused] = self.restored;
            println!(
                "syscall profiles kept by earlier boots: {now} restored now, {later} when their agents start, {refused} not restored"
            );
        }
        let Some(now) = self.saved(&shaper) else { return };
        let bytes = now.encode();
        if bytes == self.stored {
            return;
        }
        match st.put(PROFILES, &bytes) {
            Ok(()) => {
                let before = Profiles::decode(&self.stored).unwrap_or_default();
                for k in now.0.iter().filter(|k| !before.0.contains(k)) {
                    debug!("keeps the syscall profile of {}", k.agent);
                }
                debug!("syscall profiles kept: {}", now.0.len());
                self.stored = bytes;
                self.write_failed = false;
            }
            Err(e) => {
                if !self.write_failed {
                    println!("cannot keep the syscall profiles ({e:?}): tried again every turn");
                }
                self.write_failed = true;
            }
        }
    }

    /// What the shaper would keep, read whole: `None` if it could not be read, or changed at
    /// every read of this turn.
    fn saved(&mut self, shaper: &Client) -> Option<Profiles> {
        'read: for _ in 0..MAX_REREADS {
            let mut now = Profiles::default();
            let mut digest = None;
            for index in 0..2 * MAX_PROGRAMS as u32 {
                let page = match shaper.call(shaper::method::SAVED, &index) {
                    Ok(p) => p,
                    Err(e) => {
                        // Stopped or restarted: looked up again at the next turn.
                        self.lost(e);
                        return None;
                    }
                };
                if *digest.get_or_insert(page.digest) != page.digest {
                    continue 'read;
                }
                match page.kept {
                    Some(k) => {
                        now.add(k);
                    }
                    None => return Some(now),
                }
            }
            return None;
        }
        None
    }

    /// Hand the profiles of earlier boots back, and say what became of each refused one. An
    /// error that is not the shaper's answer about that profile stops it (the rest are handed
    /// back at a later turn).
    fn restore(&mut self, shaper: &Client) -> Result<(), AgentError> {
        while let Some(k) = self.to_restore.0.first().cloned() {
            match shaper.call(shaper::method::RESTORE, &k) {
                Ok(Restored::Now) => self.restored[0] += 1,
                Ok(Restored::AtStart) => self.restored[1] += 1,
                Err(
                    e
                    @ AgentError::Service(ServiceError::Busy | ServiceError::InvalidArgument | ServiceError::NoMemory),
                ) => {
                    self.restored[2] += 1;
                    let why = match e {
                        AgentError::Service(ServiceError::Busy) => "it learned or was told its profile in this boot",
                        AgentError::Service(ServiceError::InvalidArgument) => {
                            "the system changed (not an agent, or other interfaces shaped): it learns again"
                        }
                        _ => "too many profiles wait for their agents",
                    };
                    println!("the kept syscall profile of {} is not restored ({e}): {why}", k.agent);
                }
                Err(e) => return Err(e),
            }
            self.to_restore.0.remove(0);
        }
        Ok(())
    }

    /// The shaper, looked up if need be; `None` (said once) if it cannot be reached now.
    fn reach(&mut self) -> Option<Client> {
        if self.shaper.is_some() {
            return self.shaper;
        }
        match Client::lookup(shaper::INTERFACE) {
            Ok(c) => {
                self.said = None;
                self.shaper = Some(c);
                Some(c)
            }
            Err(e) => {
                self.lost(e);
                None
            }
        }
    }

    fn lost(&mut self, e: AgentError) {
        self.shaper = None;
        if self.said.as_ref() != Some(&e) {
            println!("the syscall shaper cannot be reached ({e}): its profiles are kept when it can");
            self.said = Some(e);
        }
    }
}
