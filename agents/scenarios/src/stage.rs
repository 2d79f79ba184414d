//! The pipeline stages' interface: `sc-pipeline` started with an interface to provide is a
//! stage (`sc-stage1`, `sc-stage2`, ...); each transforms the numbers it is given and hands them
//! to the next stage, and the last one to `sc-rr` (`SUM`). Started without one, `sc-pipeline` is
//! the pipeline's head, an agent feeding the first stage.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The stages' interface names are this and the stage's number, from 1.
pub const PREFIX: &str = "sc-stage";

/// The number of stages; the last hands its work to [`crate::rr`].
pub const STAGES: u32 = 2;

/// The most numbers one request carries.
pub const MAX_ITEMS: usize = 64;

ozone_agent_sdk::methods! {
    /// `Vec<u64>` → the sum, after this stage and every later one transformed the numbers.
    PROCESS = 0: Vec<u64> => u64;
}

/// The interface of stage `k` (from 1).
pub fn interface(k: u32) -> String {
    format!("{PREFIX}{k}")
}

/// The stage number of the interface `name`, if it is a stage's.
pub fn number(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.parse().ok().filter(|k| (1..=STAGES).contains(k))
}

/// What stage `k` does to a number.
pub fn transform(k: u32, x: u64) -> u64 {
    x.wrapping_mul(2 * k as u64 + 1).wrapping_add(k as u64).rotate_left(k)
}

/// Where stage `k` hands its numbers: the next stage, or `None` for the last (which asks `sc-rr`).
pub fn next(k: u32) -> Option<String> {
    (k < STAGES).then(|| interface(k + 1))
}

/// What the whole pipeline answers for `items` from stage `from` on (for checking it).
pub fn expected(from: u32, items: &[u64]) -> u64 {
    let mut v: Vec<u64> = items.to_vec();
    for k in from..=STAGES {
        v.iter_mut().for_each(|x| *x = transform(k, *x));
    }
    v.iter().fold(0u64, |a, x| a.wrapping_add(*x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_numbered_and_chained() {
        assert_eq!(number(&interface(1)), Some(1));
        assert_eq!(number("sc-stage0"), None);
        assert_eq!(number("sc-stage9"), None);
        assert_eq!(number("sc-rr"), None);
        assert_eq!(next(1).as_deref(), Some("sc-stage2"));
        assert_eq!(next(STAGES), None);
        assert_eq!(expected(STAGES + 1, &[1, 2, 3]), 6);
        assert_eq!(expected(STAGES, &[1]), transform(STAGES, 1));
    }
}
