//! `sc-pipeline` (benign): a pipeline of agents calling each other. Started with an interface to
//! provide (`sc-stage1`, `sc-stage2`: [`stage`]), it is a stage: it transforms the numbers it is
//! given and hands them on — to the next stage, or, from the last, to `sc-rr` to be summed — and
//! ends when no work came for a while. Started without one, it is the head: it feeds jobs of
//! drawn numbers into the first stage and checks each answer.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::rpc;
use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::{entry, start};
use ozone_scenarios::stage::{self, id, method};
use ozone_scenarios::{Scenario, begin, lookup, pause, rr, serve_until_idle};

entry!(run);

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    let provided = start::info().and_then(|i| i.provided(0)).map(String::from);
    match provided.as_deref().and_then(stage::number) {
        Some(k) => serve_stage(&mut sc, k),
        None => head(&mut sc),
    }
}

/// Stage `k`: transform, hand on, answer the sum.
fn serve_stage(sc: &mut Scenario, k: u32) -> u64 {
    let name = stage::interface(k);
    let mut server = match rpc::Server::provided(&name) {
        Ok(s) => s,
        Err(e) => return sc.fail("cannot serve its stage", e),
    };
    let next_name = stage::next(k);
    let next = match &next_name {
        Some(n) => lookup(n),
        None => lookup(rr::INTERFACE),
    };
    let next = match next {
        Ok(c) => c,
        Err(e) => return sc.fail("looking up the next stage", e),
    };
    let idle = sc.millis(6_000, 9_000);
    let result = serve_until_idle(&mut server, idle, Duration::from_secs(120), |req| match req.method {
        id::PROCESS => rpc::handle(req, method::PROCESS, |items: Vec<u64>| {
            if items.len() > stage::MAX_ITEMS {
                return Err(ServiceError::InvalidArgument);
            }
            let out: Vec<u64> = items.iter().map(|x| stage::transform(k, *x)).collect();
            let sum = match next_name {
                Some(_) => next.call(method::PROCESS, &out),
                None => next.call(rr::method::SUM, &out),
            };
            sum.map_err(|_| ServiceError::NotRunning)
        }),
        _ => Err(ServiceError::UnknownMethod),
    });
    match result {
        Ok(n) => sc.end(&alloc::format!("stage {k}: {n} jobs")),
        Err(e) => sc.fail("serving", e),
    }
}

/// The head: jobs into stage 1, each answer checked.
fn head(sc: &mut Scenario) -> u64 {
    pause(sc.millis(200, 1_000));
    let first = match lookup(&stage::interface(1)) {
        Ok(c) => c,
        Err(e) => return sc.fail("looking up the first stage", e),
    };
    let jobs = sc.steps(30, 150);
    let mut wrong = 0u64;
    for j in 0..jobs {
        let items: Vec<u64> = (0..sc.rng.range(1, stage::MAX_ITEMS as u64)).map(|_| sc.rng.next_u64()).collect();
        match first.call(method::PROCESS, &items) {
            Ok(sum) if sum == stage::expected(1, &items) => {}
            Ok(_) => wrong += 1,
            Err(e) => return sc.fail(&alloc::format!("job {j}"), e),
        }
        pause(sc.millis(0, 60));
    }
    sc.end(&alloc::format!("{jobs} jobs through {} stages, {wrong} wrong sums", stage::STAGES))
}
