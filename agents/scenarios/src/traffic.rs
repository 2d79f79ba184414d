//! A request/response client's ordinary traffic to `sc-rr`: each [`Traffic::round`] is one call
//! of a method drawn from the generator, with drawn arguments, and its answer checked. The rr
//! client, the bursty client and the mimic all talk this way.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use ozone_agent_sdk::AgentError;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::scenario::Rng;

use crate::rr::{self, Hash, Put, method};

/// A client of `sc-rr` and what it expects the server to keep for it.
pub struct Traffic {
    client: Client,
    /// Calls made.
    pub calls: u64,
    /// Answers that were not what the client expected.
    pub mismatches: u64,
    kept: BTreeMap<u32, u64>,
}

impl Traffic {
    /// Look `sc-rr` up.
    pub fn connect() -> Result<Traffic, AgentError> {
        Ok(Traffic { client: crate::lookup(rr::INTERFACE)?, calls: 0, mismatches: 0, kept: BTreeMap::new() })
    }

    /// The client (for steps that call it otherwise).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every method once (for the syscall shaper's warm-up: a program uses early what it
    /// will use later).
    pub fn every_method(&mut self, rng: &mut Rng) -> Result<(), AgentError> {
        for m in 0..6 {
            self.call(m, rng)?;
        }
        Ok(())
    }

    /// One call of a method drawn from `rng`.
    pub fn round(&mut self, rng: &mut Rng) -> Result<(), AgentError> {
        // ECHO and GET most often, STATS rarely.
        let m = match rng.range(0, 99) {
            0..=29 => 0,
            30..=44 => 1,
            45..=59 => 2,
            60..=74 => 3,
            75..=96 => 4,
            _ => 5,
        };
        self.call(m, rng)
    }

    fn call(&mut self, m: u64, rng: &mut Rng) -> Result<(), AgentError> {
        self.calls += 1;
        let ok = match m {
            0 => {
                let mut data = alloc::vec![0u8; rng.range(0, 512) as usize];
                rng.fill(&mut data);
                self.client.call(method::ECHO, &data)? == data
            }
            1 => {
                let items: Vec<u64> = (0..rng.range(1, 32)).map(|_| rng.range(0, 1 << 20)).collect();
                self.client.call(method::SUM, &items)? == items.iter().fold(0u64, |a, x| a.wrapping_add(*x))
            }
            2 => {
                let mut data = alloc::vec![0u8; rng.range(1, 128) as usize];
                rng.fill(&mut data);
                let rounds = rng.range(0, rr::MAX_ROUNDS as u64) as u32;
                let want = rr::hash(&data, rounds);
                self.client.call(method::HASH, &Hash { data, rounds })? == want
            }
            3 => {
                let put = Put { key: rng.range(0, rr::MAX_KEYS as u64 / 2) as u32, value: rng.next_u64() };
                let old = self.client.call(method::PUT, &put)?;
                old == self.kept.insert(put.key, put.value)
            }
            4 => {
                let key = rng.range(0, rr::MAX_KEYS as u64 / 2) as u32;
                self.client.call(method::GET, &key)? == self.kept.get(&key).copied()
            }
            _ => self.client.call(method::STATS, &())?.served > 0,
        };
        if !ok {
            self.mismatches += 1;
        }
        Ok(())
    }
}
