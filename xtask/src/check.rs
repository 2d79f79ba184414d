//! `cargo xtask check`: the guardrails — formatting, clippy and rustdoc, warnings as errors — over
//! every crate of the workspace, for each target it is built for.
//!
//! | step | what runs |
//! |---|---|
//! | `fmt` | `cargo fmt -- --check` over every workspace member |
//! | `clippy host` | `cargo clippy --all-targets -- -D warnings` over the members that build on the host (all but [`BARE_METAL_ONLY`]), with their tests and examples |
//! | `clippy kernel` | `cargo clippy --lib --bins --target x86_64-unknown-none -- -D warnings` for the kernel, with the kernel build's `RUSTFLAGS` and target directory |
//! | `clippy userspace` | the same for the userspace packages (the programs, their libraries, the SDK and its examples) with the userspace build's flags |
//! | `doc host`, `doc kernel`, `doc userspace` | `cargo doc --no-deps` with `RUSTDOCFLAGS=-D warnings`, over the same sets |
//!
//! The lints themselves are the workspace's (`[workspace.lints]` in the root `Cargo.toml`, which
//! every crate inherits) plus clippy's defaults. `cargo xtask test` runs these steps first (unless
//! `--filter` is given) and counts a failed step as a failure.
//!
//! A known failure in one crate that a change to that crate has to fix can be *gated* ([`GATES`]):
//! the step then runs without that crate, and once more for it alone, whose failure is shown but
//! not counted. Every gate names the file and line; a gated run that passes says the gate can go.

use std::process::Command;
use std::time::Instant;

use crate::build::{self, BARE_METAL_ONLY, KERNEL_RUSTFLAGS, SDK, TARGET, USER_RUSTFLAGS, Userspace};
use crate::{Result, Workspace, deps};

/// The kernel's package.
const KERNEL: &str = "ozone-kernel";

/// A crate left out of a step's count until the named problem is fixed.
struct Gate {
    step: &'static str,
    package: &'static str,
    /// Where and what (file:line).
    reason: &'static str,
}

/// The gated steps. A gate is for a failure found in a crate while someone else is changing it,
/// and goes with the fix.
const GATES: &[Gate] = &[];

/// One step: a cargo command over a set of packages.
struct Step {
    name: &'static str,
    packages: Vec<String>,
    command: fn(&Workspace, &[String]) -> Command,
}

/// Run every step; returns whether all passed. Output goes straight to the terminal, and each
/// step ends with one line `check <step> ... ok (N s)` or `... FAILED (N s)`.
pub fn run(ws: &Workspace) -> Result<bool> {
    deps::ensure_rust_target()?;
    deps::ensure_components(&["clippy", "rustfmt"])?;
    let start = Instant::now();
    let (mut passed, mut failed) = (0, Vec::new());
    for step in steps(ws)? {
        let gated: Vec<&Gate> =
            GATES.iter().filter(|g| g.step == step.name && step.packages.iter().any(|p| p == g.package)).collect();
        let counted: Vec<String> =
            step.packages.iter().filter(|p| !gated.iter().any(|g| g.package == **p)).cloned().collect();
        if !counted.is_empty() {
            if run_one(ws, &step, &counted, step.name) {
                passed += 1;
            } else {
                failed.push(step.name);
            }
        }
        for gate in gated {
            let label = format!("{} ({}, gated)", step.name, gate.package);
            if run_one(ws, &step, &[gate.package.to_string()], &label) {
                println!("    the gate on {} can go: {}", gate.package, gate.reason);
            } else {
                println!("    not counted: {}", gate.reason);
            }
        }
    }
    println!("checks took {:.1} s: {passed} passed, {} failed", start.elapsed().as_secs_f64(), failed.len());
    if !failed.is_empty() {
        println!("failed checks: {}", failed.join(", "));
    }
    Ok(failed.is_empty())
}

/// Run `step` over `packages`, printing the command and the result line under `label`.
fn run_one(ws: &Workspace, step: &Step, packages: &[String], label: &str) -> bool {
    let mut cmd = (step.command)(ws, packages);
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    eprintln!("xtask: check {label}: cargo {}", args.join(" "));
    let start = Instant::now();
    let ok = match cmd.status() {
        Ok(status) => status.success(),
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            false
        }
    };
    let verdict = if ok { "ok" } else { "FAILED" };
    println!("check {label} ... {verdict} ({:.1} s)", start.elapsed().as_secs_f64());
    ok
}

/// The steps, in the order they run: the cheapest first.
fn steps(ws: &Workspace) -> Result<Vec<Step>> {
    let members = members(ws)?;
    let host: Vec<String> = members.iter().filter(|m| !BARE_METAL_ONLY.contains(&m.as_str())).cloned().collect();
    let kernel = vec![KERNEL.to_string()];
    let mut userspace = Userspace::discover(ws)?.packages;
    if !userspace.iter().any(|p| p == SDK) {
        userspace.push(SDK.to_string());
    }
    Ok(vec![
        Step { name: "fmt", packages: members, command: fmt },
        Step { name: "clippy host", packages: host.clone(), command: clippy_host },
        Step { name: "clippy kernel", packages: kernel.clone(), command: clippy_kernel },
        Step { name: "clippy userspace", packages: userspace.clone(), command: clippy_user },
        Step { name: "doc host", packages: host, command: doc_host },
        Step { name: "doc kernel", packages: kernel, command: doc_kernel },
        Step { name: "doc userspace", packages: userspace, command: doc_user },
    ])
}

fn fmt(ws: &Workspace, packages: &[String]) -> Command {
    let mut cmd = host_cargo(ws, "fmt", packages);
    cmd.args(["--", "--check"]);
    cmd
}

fn clippy_host(ws: &Workspace, packages: &[String]) -> Command {
    let mut cmd = host_cargo(ws, "clippy", packages);
    cmd.args(["--all-targets", "--", "-D", "warnings"]);
    cmd
}

fn clippy_kernel(ws: &Workspace, packages: &[String]) -> Command {
    let mut cmd = bare_cargo(ws, "clippy", "kernel", KERNEL_RUSTFLAGS, packages);
    cmd.args(["--lib", "--bins", "--", "-D", "warnings"]);
    cmd
}

fn clippy_user(ws: &Workspace, packages: &[String]) -> Command {
    let mut cmd = bare_cargo(ws, "clippy", "user", USER_RUSTFLAGS, packages);
    // Not `--all-targets`: unit tests need `std`, which the bare-metal target does not have.
    cmd.args(["--lib", "--bins", "--examples", "--", "-D", "warnings"]);
    cmd
}

fn doc_host(ws: &Workspace, packages: &[String]) -> Command {
    let mut cmd = host_cargo(ws, "doc", packages);
    cmd.arg("--no-deps").env("RUSTDOCFLAGS", "-D warnings");
    cmd
}

fn doc_kernel(ws: &Workspace, packages: &[String]) -> Command {
    let mut cmd = bare_cargo(ws, "doc", "kernel", KERNEL_RUSTFLAGS, packages);
    cmd.arg("--no-deps").env("RUSTDOCFLAGS", "-D warnings");
    cmd
}

fn doc_user(ws: &Workspace, packages: &[String]) -> Command {
    let mut cmd = bare_cargo(ws, "doc", "user", USER_RUSTFLAGS, packages);
    cmd.arg("--no-deps").env("RUSTDOCFLAGS", "-D warnings");
    cmd
}

/// `cargo <subcommand> -p <package>...` for the host, in the workspace's usual target directory.
fn host_cargo(ws: &Workspace, subcommand: &str, packages: &[String]) -> Command {
    let mut cmd = Command::new(build::cargo_program());
    cmd.current_dir(&ws.root).arg(subcommand);
    for package in packages {
        cmd.args(["-p", package]);
    }
    cmd
}

/// `cargo <subcommand> -p <package>... --target x86_64-unknown-none` with the flags and the
/// target directory (`target/<dir>`) of the matching `cargo xtask` build, so that its build
/// scripts and procedural macros are reused.
fn bare_cargo(ws: &Workspace, subcommand: &str, dir: &str, rustflags: &str, packages: &[String]) -> Command {
    let mut cmd = build::cargo(ws, subcommand, &ws.target().join(dir), rustflags);
    for package in packages {
        cmd.args(["-p", package]);
    }
    cmd.args(["--target", TARGET]);
    cmd
}

/// The names of the workspace members, from `cargo metadata`.
fn members(ws: &Workspace) -> Result<Vec<String>> {
    members_from_metadata(&build::workspace_metadata(ws)?)
}

/// The member names in `cargo metadata --no-deps --format-version 1` output.
fn members_from_metadata(json: &str) -> Result<Vec<String>> {
    let bad = |what: &str| format!("unexpected `cargo metadata` output: {what}");
    let meta: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
    let ids = meta["workspace_members"].as_array().ok_or_else(|| bad("no `workspace_members`"))?;
    let packages = meta["packages"].as_array().ok_or_else(|| bad("no `packages`"))?;
    let names: Vec<String> = packages
        .iter()
        .filter(|p| ids.contains(&p["id"]))
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    if names.is_empty() { Err(bad("no workspace members")) } else { Ok(names) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_of_metadata() {
        let json = r#"{
          "packages": [{"id": "a", "name": "ozone-abi"}, {"id": "d", "name": "serde"}, {"id": "x", "name": "xtask"}],
          "workspace_members": ["a", "x"]
        }"#;
        assert_eq!(members_from_metadata(json).unwrap(), ["ozone-abi", "xtask"]);
        assert!(members_from_metadata("{}").unwrap_err().contains("no `workspace_members`"));
    }

    #[test]
    fn this_workspace_is_covered() {
        let ws = Workspace::locate();
        let steps = steps(&ws).unwrap();
        let covers =
            |step: &str, package: &str| steps.iter().any(|s| s.name == step && s.packages.iter().any(|p| p == package));
        // Every member is formatted; the kernel and every userspace program pass clippy and
        // rustdoc on the bare-metal target, the host crates on the host.
        for package in ["ozone-kernel", "ozone-guest-tests", "ozone-root-task", "xtask"] {
            assert!(covers("fmt", package), "{package}");
        }
        assert!(covers("clippy kernel", KERNEL) && covers("doc kernel", KERNEL));
        for package in ["ozone-root-task", "ozone-studio", "ozone-guest-tests", SDK] {
            assert!(covers("clippy userspace", package) && covers("doc userspace", package), "{package}");
        }
        for package in ["xtask", KERNEL, "ozone-abi", "ozone-loader", SDK, "ozone-studio"] {
            assert!(covers("clippy host", package) && covers("doc host", package), "{package}");
        }
        for package in BARE_METAL_ONLY {
            assert!(!covers("clippy host", package), "{package}");
        }
    }

    #[test]
    fn gates_name_a_step_a_crate_and_a_place() {
        let names =
            ["fmt", "clippy host", "clippy kernel", "clippy userspace", "doc host", "doc kernel", "doc userspace"];
        for gate in GATES {
            assert!(names.contains(&gate.step), "{}", gate.step);
            assert!(!gate.package.is_empty() && gate.reason.contains(".rs:"), "{}", gate.reason);
        }
    }
}
