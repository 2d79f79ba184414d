//! Cargo builds of the kernel and the userspace programs for `x86_64-unknown-none`.
//!
//! The kernel and userspace need different `RUSTFLAGS` (the kernel is linked static at a fixed
//! address, userspace is static-PIE), so each gets its own target directory below `target/`:
//! switching between them never forces a rebuild.

use std::path::PathBuf;
use std::process::Command;

use crate::{Result, Workspace};

/// The bare-metal target everything in the guest is built for.
pub const TARGET: &str = "x86_64-unknown-none";

/// Debug or release build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release_flag(release: bool) -> Profile {
        if release { Profile::Release } else { Profile::Debug }
    }

    /// The directory name cargo uses for this profile.
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// The guest binaries of one build.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub kernel: PathBuf,
    pub root_task: PathBuf,
    /// Guest test program: takes a deliberate user fault.
    pub user_fault: PathBuf,
    /// Guest test program: checks syscall behaviour and prints `[syscall-checks] PASS`.
    pub syscall_checks: PathBuf,
    /// Guest test program: reads kernel memory from ring 3 (must fault).
    pub read_kernel_memory: PathBuf,
    /// The in-guest benchmarks (`bench: name=... median=...` lines).
    pub bench: PathBuf,
    /// The in-guest kernel test suite.
    pub kernel_tests: PathBuf,
    /// The in-guest syscall fuzzer with its sentinel.
    pub syscall_fuzzer: PathBuf,
}

/// Build the kernel and all userspace programs.
pub fn build_all(ws: &Workspace, profile: Profile) -> Result<Artifacts> {
    let kernel = build_kernel(ws, profile)?;
    let user_dir = build_user(ws, profile)?;
    let artifacts = Artifacts {
        kernel,
        root_task: user_dir.join("ozone-root-task"),
        user_fault: user_dir.join("user-fault"),
        syscall_checks: user_dir.join("syscall-checks"),
        read_kernel_memory: user_dir.join("read-kernel-memory"),
        bench: user_dir.join("bench"),
        kernel_tests: user_dir.join("kernel-tests"),
        syscall_fuzzer: user_dir.join("syscall-fuzzer"),
    };
    for path in [&artifacts.root_task, &artifacts.user_fault, &artifacts.syscall_checks, &artifacts.read_kernel_memory]
    {
        if !path.is_file() {
            return Err(format!("the userspace build did not produce {}", path.display()));
        }
    }
    Ok(artifacts)
}

/// Build the kernel ELF; returns its path.
pub fn build_kernel(ws: &Workspace, profile: Profile) -> Result<PathBuf> {
    let target_dir = ws.target().join("kernel");
    let mut cmd = cargo(ws, "build", &target_dir, "-C relocation-model=static -C force-frame-pointers=yes");
    cmd.args(["-p", "ozone-kernel", "--bin", "ozone-kernel", "--target", TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    run_cargo(cmd, "kernel")?;
    let elf = target_dir.join(TARGET).join(profile.dir()).join("ozone-kernel");
    if !elf.is_file() {
        return Err(format!("the kernel build did not produce {}", elf.display()));
    }
    Ok(elf)
}

/// Build the root task and the guest test programs; returns their output directory.
pub fn build_user(ws: &Workspace, profile: Profile) -> Result<PathBuf> {
    let target_dir = ws.target().join("user");
    let mut cmd = cargo(ws, "build", &target_dir, "-C force-frame-pointers=yes");
    cmd.args(["-p", "ozone-root-task", "-p", "ozone-studio", "-p", "ozone-guest-tests", "--target", TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    run_cargo(cmd, "userspace")?;
    Ok(target_dir.join(TARGET).join(profile.dir()))
}

/// Run the host tests: everything in the workspace that is not a bare-metal program.
/// Returns whether they passed. Output goes straight to the terminal.
pub fn host_tests(ws: &Workspace) -> Result<bool> {
    let mut cmd = Command::new(cargo_program());
    cmd.current_dir(&ws.root).args([
        "test",
        "--workspace",
        "--exclude",
        "ozone-root-task",
        "--exclude",
        "ozone-guest-tests",
        "--exclude",
        "ozone-studio",
    ]);
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    Ok(status.success())
}

/// The cargo that runs us (`CARGO`), so the toolchain stays the same.
fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("cargo"))
}

/// A `cargo <subcommand>` for the guest target with its own target directory and flags.
fn cargo(ws: &Workspace, subcommand: &str, target_dir: &std::path::Path, rustflags: &str) -> Command {
    let mut cmd = Command::new(cargo_program());
    cmd.current_dir(&ws.root)
        .arg(subcommand)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("RUSTFLAGS", rustflags)
        // It would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

fn run_cargo(mut cmd: Command, what: &str) -> Result<()> {
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("building the {what} failed ({status})")) }
}
