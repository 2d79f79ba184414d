//! Per-instance address-space layouts: where a program's image, stack, heap, IPC buffer and
//! start-information page go, chosen from the instance seed and the program's name — different
//! on every instance, the same on every boot of one instance.
//!
//! Regions are 2 MiB-aligned slots in separate 1 GiB bands below the secure-memory share window,
//! so they never overlap each other or the window:
//!
//! | band | what |
//! |---|---|
//! | 1–63 GiB | image (load bias) |
//! | 64–127 GiB | IPC buffer, then start information one page later |
//! | 128–1023 GiB | heap (room to grow up to 1 GiB) |
//! | 1–2 TiB | stack (top of the slot) |

use ozone_agent_sdk::process::Layout;
use ozone_agent_sdk::protocol::start::SHARE_WINDOW;
use ozone_agent_sdk::protocol::{fnv1a, mix};

const GIB: u64 = 1 << 30;
const SLOT: u64 = 2 << 20;

/// A random 2 MiB-aligned address in `[lo, hi)` leaving `room` bytes before `hi`.
fn pick(r: u64, lo: u64, hi: u64, room: u64) -> u64 {
    let slots = (hi - lo - room) / SLOT;
    lo + (r % slots) * SLOT
}

/// The layout of program `name` on the instance with layout key `key`.
pub fn layout(key: u64, name: &str, stack_size: u64, heap_size: u64) -> Layout {
    let mut r = mix(key ^ fnv1a(name.as_bytes()));
    let mut next = || {
        r = mix(r);
        r
    };
    let bias = pick(next(), GIB, 64 * GIB, GIB);
    let ipc_buffer = pick(next(), 64 * GIB, 128 * GIB, SLOT);
    let heap_base = pick(next(), 128 * GIB, 1024 * GIB, GIB);
    let stack_slot = pick(next(), 1024 * GIB, 2048 * GIB, SLOT);
    Layout {
        bias,
        stack_top: stack_slot + SLOT,
        stack_size,
        ipc_buffer,
        heap_base,
        heap_size,
        info_page: ipc_buffer + 4096,
    }
}

const _: () = assert!(2048 * GIB <= SHARE_WINDOW);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_disjoint_deterministic_and_differ_per_instance() {
        for key in [1u64, 2, 0xfeed, u64::MAX] {
            for name in ["console", "shell", "hello", "echo-server"] {
                let l = layout(key, name, 64 << 10, 256 << 10);
                assert_eq!(l, layout(key, name, 64 << 10, 256 << 10));
                assert!(l.bias >= GIB && l.bias + GIB <= 64 * GIB);
                assert!(l.ipc_buffer >= 64 * GIB && l.info_page + 4096 <= 128 * GIB);
                assert!(l.heap_base >= 128 * GIB && l.heap_base + GIB <= 1024 * GIB);
                assert!(l.stack_top - l.stack_size >= 1024 * GIB && l.stack_top <= 2048 * GIB);
                assert_eq!(l.bias % SLOT, 0);
            }
        }
        let a = layout(1, "hello", 4096, 4096);
        let b = layout(2, "hello", 4096, 4096);
        let c = layout(1, "shell", 4096, 4096);
        assert!(a.bias != b.bias || a.heap_base != b.heap_base || a.stack_top != b.stack_top);
        assert!(a.bias != c.bias || a.heap_base != c.heap_base || a.stack_top != c.stack_top);
    }
}
