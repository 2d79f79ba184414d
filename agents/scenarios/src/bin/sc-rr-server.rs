//! `sc-rr-server` (benign): serves the request/response interface `sc-rr` ([`rr`]) to the
//! scenario clients, answering each request by its method, and ends when no request came for a
//! while (the idle time drawn from its seed) or after two minutes.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use core::time::Duration;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::{entry, rpc};
use ozone_scenarios::rr::{self, Hash, Put, Stats, id, method};
use ozone_scenarios::{begin, serve_until_idle};

entry!(run);

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    let mut server = match rpc::Server::provided(rr::INTERFACE) {
        Ok(s) => s,
        Err(e) => return sc.fail("cannot serve `sc-rr`", e),
    };
    let idle = sc.millis(6_000, 10_000);
    // Values per client (badge) and key.
    let mut kept: BTreeMap<(u64, u32), u64> = BTreeMap::new();
    let mut served = 0u64;
    let result = serve_until_idle(&mut server, idle, Duration::from_secs(120), |req| {
        served += 1;
        let badge = req.badge;
        match req.method {
            id::ECHO => rpc::handle(req, method::ECHO, |data: alloc::vec::Vec<u8>| Ok(data)),
            id::SUM => rpc::handle(req, method::SUM, |items: alloc::vec::Vec<u64>| {
                Ok(items.iter().fold(0u64, |a, x| a.wrapping_add(*x)))
            }),
            id::HASH => rpc::handle(req, method::HASH, |h: Hash| {
                if h.rounds > rr::MAX_ROUNDS {
                    return Err(ServiceError::InvalidArgument);
                }
                Ok(rr::hash(&h.data, h.rounds))
            }),
            id::PUT => rpc::handle(req, method::PUT, |p: Put| {
                let mine = kept.range((badge, 0)..=(badge, u32::MAX)).count();
                if mine >= rr::MAX_KEYS && !kept.contains_key(&(badge, p.key)) {
                    return Err(ServiceError::QuotaExceeded);
                }
                Ok(kept.insert((badge, p.key), p.value))
            }),
            id::GET => rpc::handle(req, method::GET, |key: u32| Ok(kept.get(&(badge, key)).copied())),
            id::STATS => rpc::handle(req, method::STATS, |()| {
                let keys = kept.range((badge, 0)..=(badge, u32::MAX)).count() as u32;
                Ok(Stats { served, keys })
            }),
            _ => Err(ServiceError::UnknownMethod),
        }
    });
    match result {
        Ok(n) => sc.end(&alloc::format!("served {n} requests; idle for {} ms", idle.as_millis())),
        Err(e) => sc.fail("serving", e),
    }
}
