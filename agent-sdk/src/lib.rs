//! The OZONE-OS agent SDK: what a userspace program (agent or server) is written against.
//!
//! - [`entry!`]: the program's entry point; the runtime records Studio's start information
//!   ([`start`]) and sets up the heap ([`heap`]) before `run` is called.
//! - [`rpc`]: requests to servers and server loops with postcard messages; [`protocol`]: the
//!   system servers' interfaces, the wire format and the system description.
//! - [`sys`]: the raw syscalls; [`kernel`]: typed invocations of every kernel object;
//!   [`caps`]: typed capability handles (`Endpoint`, `Frame`, ...) with those as methods.
//! - [`println!`]/[`info!`]/[`warn!`]/[`error!`]/[`debug!`] ([`log`]): output lines, sent to the
//!   console server, which attributes them to the program; [`AgentError`]: the one error type.
//! - [`timer`]: the clock, `sleep`, deadlines and tickers; [`signals`]: the notification
//!   bits one wait took for another.
//! - [`scenario`]: the program's seed, a deterministic generator and phase markers, for
//!   scenario programs (`agents/scenarios`).
//! - [`root`] and [`process`]: for the root task and Studio, which build other programs.
//!
//! Programs are built for `x86_64-unknown-none` as static position-independent executables;
//! the kernel (for the root task) or Studio (for everything else) loads and relocates them.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod caps;
pub mod console_client;
pub mod entropy;
pub mod error;
pub mod heap;
pub mod kernel;
pub mod log;
pub mod net;
pub mod process;
pub mod protocol;
pub mod root;
pub mod rpc;
pub mod scenario;
pub mod secmem;
pub mod signals;
pub mod slots;
pub mod start;
pub mod store;
pub mod sys;
pub mod timer;

#[cfg(target_os = "none")]
mod rt;

pub use error::{AgentError, Result};
pub use ozone_abi as abi;
pub use ozone_abi::Error;

/// Print a line (see [`log`]): to the console server, attributed `[name] ` by it, for a program
/// Studio started; to the kernel's debug channel for the root task and Studio. Text without a
/// newline still ends its line.
#[macro_export]
macro_rules! print {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) };
}

/// Print a line (see [`log`]); the same as [`info!`].
#[macro_export]
macro_rules! println {
    () => { $crate::log::write($crate::log::Level::Info, format_args!("")) };
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) };
}

/// Declare the program's entry point: `entry!(run);` with `fn run() -> u64` returning the exit
/// status. (On the host, where the program cannot run, the macro provides a `main` that says so.)
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        extern "C" fn ozone_main() -> u64 {
            let f: fn() -> u64 = $main;
            f()
        }
        #[cfg(not(target_os = "none"))]
        fn main() {
            let _never_run_on_the_host: fn() -> u64 = $main;
            eprintln!("this program runs on OZONE-OS: build and boot it with `cargo xtask qemu`");
            std::process::exit(2);
        }
    };
}

/// The SDK's modules import each other without a cycle: each can be read, tested and changed
/// knowing only those below it. Checked on the sources: a module's imports are the `crate::NAME`
/// paths in its code (comments left out); `protocol` is one module with its files.
#[cfg(test)]
mod layering {
    use alloc::string::String;
    use alloc::vec::Vec;

    const MODULES: &[(&str, &[&str])] = &[
        ("caps", &[include_str!("caps.rs")]),
        ("console_client", &[include_str!("console_client.rs")]),
        ("error", &[include_str!("error.rs")]),
        ("entropy", &[include_str!("entropy.rs")]),
        ("heap", &[include_str!("heap.rs")]),
        ("kernel", &[include_str!("kernel.rs")]),
        ("log", &[include_str!("log.rs")]),
        ("net", &[include_str!("net.rs")]),
        ("process", &[include_str!("process.rs")]),
        (
            "protocol",
            &[
                include_str!("protocol/mod.rs"),
                include_str!("protocol/console.rs"),
                include_str!("protocol/devices.rs"),
                include_str!("protocol/echo.rs"),
                include_str!("protocol/net.rs"),
                include_str!("protocol/root.rs"),
                include_str!("protocol/secmem.rs"),
                include_str!("protocol/shaper.rs"),
                include_str!("protocol/start.rs"),
                include_str!("protocol/store.rs"),
                include_str!("protocol/studio.rs"),
                include_str!("protocol/system.rs"),
                include_str!("protocol/timer.rs"),
            ],
        ),
        ("root", &[include_str!("root.rs")]),
        ("rpc", &[include_str!("rpc.rs")]),
        ("rt", &[include_str!("rt.rs")]),
        ("scenario", &[include_str!("scenario.rs")]),
        ("secmem", &[include_str!("secmem.rs")]),
        ("signals", &[include_str!("signals.rs")]),
        ("slots", &[include_str!("slots.rs")]),
        ("start", &[include_str!("start.rs")]),
        ("store", &[include_str!("store.rs")]),
        ("sys", &[include_str!("sys.rs")]),
        ("timer", &[include_str!("timer.rs")]),
    ];

    /// The modules of [`MODULES`] that `sources` name as `crate::NAME` (or in `crate::{A, B}`)
    /// outside comments.
    fn imports(sources: &[&str]) -> Vec<&'static str> {
        let mut found = Vec::new();
        for line in sources.iter().flat_map(|s| s.lines()) {
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                if code[..at].ends_with('$') {
                    continue; // `$crate::` in a macro: whoever expands it
                }
                let rest = &code[at + "crate::".len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
                    None => Vec::from([rest]),
                };
                for name in names {
                    let name = name.trim().split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("");
                    if let Some((module, _)) = MODULES.iter().find(|(m, _)| *m == name)
                        && !found.contains(module)
                    {
                        found.push(*module);
                    }
                }
            }
        }
        found
    }

    /// A cycle of imports through `from`, as `a -> b -> a`, if there is one.
    fn cycle(graph: &[(&'static str, Vec<&'static str>)], from: &'static str) -> Option<String> {
        fn walk(
            graph: &[(&'static str, Vec<&'static str>)],
            path: &mut Vec<&'static str>,
            target: &'static str,
        ) -> bool {
            let here = path[path.len() - 1];
            let next = graph.iter().find(|(m, _)| *m == here).map(|(_, n)| n.as_slice()).unwrap_or(&[]);
            for &n in next {
                if n == target {
                    path.push(n);
                    return true;
                }
                if !path.contains(&n) {
                    path.push(n);
                    if walk(graph, path, target) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        let mut path = Vec::from([from]);
        walk(graph, &mut path, from).then(|| path.join(" -> "))
    }

    #[test]
    fn no_module_imports_itself_through_others() {
        let graph: Vec<(&str, Vec<&str>)> = MODULES
            .iter()
            .map(|(m, sources)| (*m, imports(sources).into_iter().filter(|i| i != m).collect()))
            .collect();
        let cycles: Vec<String> = MODULES.iter().filter_map(|(m, _)| cycle(&graph, m)).collect();
        assert!(cycles.is_empty(), "import cycles: {cycles:?}");
        // The start information is read by everything and reads nothing but its format: the
        // runtime hands its heap to the allocator (this was the cycle heap -> rpc -> start -> heap).
        let (_, start) = graph.iter().find(|(m, _)| *m == "start").unwrap();
        assert_eq!(start, &["protocol"]);
    }

    #[test]
    fn every_module_file_is_checked() {
        for line in include_str!("lib.rs").lines() {
            let declared = line.trim().strip_prefix("pub mod ").or_else(|| line.trim().strip_prefix("mod "));
            if let Some(name) = declared.and_then(|d| d.strip_suffix(';')) {
                assert!(MODULES.iter().any(|(m, _)| *m == name), "module `{name}` is not in the layering check");
            }
        }
    }

    #[test]
    fn the_checker_sees_imports_and_cycles() {
        let a = "use crate::{rpc, sys::Msg};\n// crate::heap in a comment\nlet x = crate::start::info(); // crate::log\n$crate::console::print";
        let mut found = imports(&[a]);
        found.sort_unstable();
        assert_eq!(found, ["rpc", "start", "sys"]);
        let graph = [("heap", Vec::from(["rpc"])), ("rpc", Vec::from(["start"])), ("start", Vec::from(["heap"]))];
        assert_eq!(cycle(&graph, "heap").as_deref(), Some("heap -> rpc -> start -> heap"));
        let graph = [("heap", Vec::from(["rpc"])), ("rpc", Vec::from(["start"])), ("start", Vec::new())];
        assert_eq!(cycle(&graph, "heap"), None);
    }
}
