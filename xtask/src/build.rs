//! Cargo builds of the kernel and the userspace programs for `x86_64-unknown-none`.
//!
//! The kernel and userspace need different `RUSTFLAGS` (the kernel is linked static at a fixed
//! address, userspace is static-PIE), so each gets its own target directory below `target/`:
//! switching between them never forces a rebuild.
//!
//! Which packages are userspace programs comes from `cargo metadata`: the workspace members that
//! are not default members (the default members are the host crates and the kernel) and have a
//! binary. A server added to the workspace that way is built with the rest, with no list here to
//! update. The agent SDK's examples are userspace programs too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::system::{self, System};
use crate::{Result, Workspace};

/// The bare-metal target everything in the guest is built for.
pub const TARGET: &str = "x86_64-unknown-none";

/// `RUSTFLAGS` of the kernel build: linked static at its higher-half address.
pub const KERNEL_RUSTFLAGS: &str = "-C relocation-model=static -C force-frame-pointers=yes";

/// `RUSTFLAGS` of the userspace build. The bare-metal target is soft-float: LLVM cannot build
/// poly1305's SIMD backends for it (the compiler crashes), so the portable one is chosen.
pub const USER_RUSTFLAGS: &str = "-C force-frame-pointers=yes --cfg poly1305_backend=\"soft\"";

/// Workspace members that build only for [`TARGET`] (the host tests, clippy and rustdoc on the
/// host leave them out).
pub const BARE_METAL_ONLY: [&str; 2] = ["ozone-root-task", "ozone-guest-tests"];

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
    /// The differential IPC program (the same random IPC with the fastpath on and off).
    pub ipc_diff: PathBuf,
    /// Studio's ELF.
    pub studio: PathBuf,
    /// `initrd/system.toml`, checked against the userspace programs built and compiled: the
    /// system `cargo xtask qemu` boots.
    pub system: System,
    /// The same with the test overlay `initrd/system-tests.toml` merged in: the system the
    /// QEMU tests boot.
    pub test_system: System,
}

/// Build the kernel and all userspace programs, and compile the system description, alone and
/// with the test overlay (both are checked on every build).
pub fn build_all(ws: &Workspace, profile: Profile) -> Result<Artifacts> {
    let kernel = build_kernel(ws, profile)?;
    let programs = build_user(ws, profile)?;
    let program =
        |name: &str| programs.get(name).cloned().ok_or_else(|| format!("the userspace build has no program `{name}`"));
    let system = system::load(ws, &programs, crate::qemu::MEMORY_MIB)?;
    let test_system = system::load_with_tests(ws, &programs, crate::qemu::MEMORY_MIB)?;
    Ok(Artifacts {
        kernel,
        root_task: program("ozone-root-task")?,
        user_fault: program("user-fault")?,
        syscall_checks: program("syscall-checks")?,
        read_kernel_memory: program("read-kernel-memory")?,
        bench: program("bench")?,
        kernel_tests: program("kernel-tests")?,
        syscall_fuzzer: program("syscall-fuzzer")?,
        ipc_diff: program("ipc-diff")?,
        studio: program(crate::initrd::STUDIO)?,
        system,
        test_system,
    })
}

/// Build the kernel ELF; returns its path.
pub fn build_kernel(ws: &Workspace, profile: Profile) -> Result<PathBuf> {
    let target_dir = ws.target().join("kernel");
    let mut cmd = cargo(ws, "build", &target_dir, KERNEL_RUSTFLAGS);
    cmd.args(["-p", "ozone-kernel", "--bin", "ozone-kernel", "--target", TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    // The workspace's release profile links userspace with LTO in one unit (the SDK's message
    // code inlines into each program); the kernel keeps ordinary units, which measure fewer
    // instructions on its IPC fastpath (see docs/PERFORMANCE.md).
    cmd.env("CARGO_PROFILE_RELEASE_LTO", "false").env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
    run_cargo(cmd, "kernel")?;
    let elf = target_dir.join(TARGET).join(profile.dir()).join("ozone-kernel");
    if !elf.is_file() {
        return Err(format!("the kernel build did not produce {}", elf.display()));
    }
    Ok(elf)
}

/// The package whose examples are userspace programs too (agents an author can start from).
pub const SDK: &str = "ozone-agent-sdk";

/// What the userspace build builds, from `cargo metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Userspace {
    /// The userspace packages: the workspace members that are not default members (those are
    /// the host crates and the kernel, see the workspace `Cargo.toml`) and have a binary.
    pub packages: Vec<String>,
    /// Their binaries.
    pub bins: Vec<String>,
    /// The agent SDK's examples.
    pub examples: Vec<String>,
}

impl Userspace {
    /// Read `cargo metadata --no-deps --format-version 1` output.
    pub fn from_metadata(json: &str) -> Result<Userspace> {
        let bad = |what: &str| format!("unexpected `cargo metadata` output: {what}");
        let meta: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
        let ids = |key: &str| -> Result<Vec<&str>> {
            meta[key]
                .as_array()
                .ok_or_else(|| bad(&format!("no `{key}`")))?
                .iter()
                .map(|id| id.as_str().ok_or_else(|| bad(&format!("a non-string in `{key}`"))))
                .collect()
        };
        let members = ids("workspace_members")?;
        let defaults = ids("workspace_default_members")?;
        let packages = meta["packages"].as_array().ok_or_else(|| bad("no `packages`"))?;
        let mut space = Userspace::default();
        for package in packages {
            let id = package["id"].as_str().ok_or_else(|| bad("a package without an id"))?;
            let name = package["name"].as_str().ok_or_else(|| bad("a package without a name"))?;
            if !members.contains(&id) {
                continue;
            }
            let targets = package["targets"].as_array().ok_or_else(|| bad("a package without targets"))?;
            let of_kind = |kind: &str| -> Vec<String> {
                targets
                    .iter()
                    .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == kind)))
                    .filter_map(|t| t["name"].as_str().map(str::to_string))
                    .collect()
            };
            if name == SDK {
                space.examples = of_kind("example");
            }
            let bins = of_kind("bin");
            if !defaults.contains(&id) && !bins.is_empty() {
                space.packages.push(name.to_string());
                space.bins.extend(bins);
            }
        }
        Ok(space)
    }

    /// The workspace's userspace packages, binaries and examples.
    pub fn discover(ws: &Workspace) -> Result<Userspace> {
        Userspace::from_metadata(&workspace_metadata(ws)?)
    }

    /// Where each program lands in the build's output directory `dir`, by binary name.
    pub fn programs(&self, dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
        let mut programs = BTreeMap::new();
        let files = self.bins.iter().map(|b| (b, dir.join(b)));
        let examples = self.examples.iter().map(|e| (e, dir.join("examples").join(e)));
        for (name, path) in files.chain(examples) {
            if programs.insert(name.clone(), path).is_some() {
                return Err(format!(
                    "two userspace programs are called `{name}` (binaries of the workspace's userspace packages and examples of {SDK} share one name space)"
                ));
            }
        }
        Ok(programs)
    }
}

/// Build every userspace program: the binaries of the workspace's userspace packages (the root
/// task, Studio, the servers, the guest test programs) and the agent SDK's examples. Returns
/// them by binary name.
pub fn build_user(ws: &Workspace, profile: Profile) -> Result<BTreeMap<String, PathBuf>> {
    let space = Userspace::discover(ws)?;
    if space.packages.is_empty() {
        return Err("cargo metadata shows no userspace packages (workspace members outside default-members)".into());
    }
    let target_dir = ws.target().join("user");
    let mut cmd = cargo(ws, "build", &target_dir, USER_RUSTFLAGS);
    for package in &space.packages {
        cmd.args(["-p", package]);
    }
    cmd.args(["--target", TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    run_cargo(cmd, "userspace")?;
    if !space.examples.is_empty() {
        let mut cmd = cargo(ws, "build", &target_dir, USER_RUSTFLAGS);
        cmd.args(["-p", SDK, "--examples", "--target", TARGET]);
        if profile == Profile::Release {
            cmd.arg("--release");
        }
        run_cargo(cmd, "agent SDK examples")?;
    }
    let programs = space.programs(&target_dir.join(TARGET).join(profile.dir()))?;
    for path in programs.values() {
        if !path.is_file() {
            return Err(format!("the userspace build did not produce {}", path.display()));
        }
    }
    Ok(programs)
}

/// Run the host tests: everything in the workspace that is not a bare-metal program.
/// Returns whether they passed. Output goes straight to the terminal.
pub fn host_tests(ws: &Workspace) -> Result<bool> {
    let mut cmd = Command::new(cargo_program());
    cmd.current_dir(&ws.root).args(["test", "--workspace"]);
    for package in BARE_METAL_ONLY {
        cmd.args(["--exclude", package]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    Ok(status.success())
}

/// The cargo that runs us (`CARGO`), so the toolchain stays the same.
pub fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("cargo"))
}

/// A `cargo <subcommand>` for the guest target with its own target directory and flags.
pub fn cargo(ws: &Workspace, subcommand: &str, target_dir: &Path, rustflags: &str) -> Command {
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

/// `cargo metadata --no-deps --format-version 1` of the workspace (its JSON).
pub fn workspace_metadata(ws: &Workspace) -> Result<String> {
    let output = Command::new(cargo_program())
        .current_dir(&ws.root)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed ({})", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trimmed `cargo metadata` output: a host crate, the SDK with an example, the kernel (a
    /// default member with a binary), two userspace packages, and a dependency outside the
    /// workspace.
    const METADATA: &str = r#"{
      "packages": [
        {"id": "k", "name": "ozone-kernel", "targets": [{"name": "ozone_kernel", "kind": ["lib"]}, {"name": "ozone-kernel", "kind": ["bin"]}]},
        {"id": "abi", "name": "ozone-abi", "targets": [{"name": "ozone_abi", "kind": ["lib"]}]},
        {"id": "sdk", "name": "ozone-agent-sdk", "targets": [{"name": "ozone_agent_sdk", "kind": ["lib"]}, {"name": "hello", "kind": ["example"]}]},
        {"id": "root", "name": "ozone-root-task", "targets": [{"name": "ozone-root-task", "kind": ["bin"]}]},
        {"id": "shell", "name": "ozone-shell", "targets": [{"name": "ozone_shell", "kind": ["lib"]}, {"name": "shell", "kind": ["bin"]}, {"name": "build-script-build", "kind": ["custom-build"]}]},
        {"id": "proto", "name": "ozone-protocols", "targets": [{"name": "ozone_protocols", "kind": ["lib"]}]},
        {"id": "x", "name": "xtask", "targets": [{"name": "xtask", "kind": ["bin"]}]},
        {"id": "dep", "name": "serde", "targets": [{"name": "serde", "kind": ["lib"]}]}
      ],
      "workspace_members": ["k", "abi", "sdk", "root", "shell", "proto", "x"],
      "workspace_default_members": ["k", "abi", "sdk", "x"]
    }"#;

    #[test]
    fn userspace_from_metadata() {
        let space = Userspace::from_metadata(METADATA).unwrap();
        assert_eq!(space.packages, ["ozone-root-task", "ozone-shell"]);
        assert_eq!(space.bins, ["ozone-root-task", "shell"]);
        assert_eq!(space.examples, ["hello"]);
        let programs = space.programs(Path::new("/out")).unwrap();
        let listed: Vec<(&str, &str)> = programs.iter().map(|(n, p)| (n.as_str(), p.to_str().unwrap())).collect();
        assert_eq!(
            listed,
            [("hello", "/out/examples/hello"), ("ozone-root-task", "/out/ozone-root-task"), ("shell", "/out/shell")]
        );
    }

    #[test]
    fn program_names_are_unique() {
        let space =
            Userspace { packages: vec!["a".into()], bins: vec!["hello".into()], examples: vec!["hello".into()] };
        assert!(space.programs(Path::new("/out")).unwrap_err().contains("two userspace programs are called `hello`"));
    }

    #[test]
    fn bad_metadata() {
        assert!(Userspace::from_metadata("not json").unwrap_err().contains("unexpected `cargo metadata` output"));
        assert!(Userspace::from_metadata("{}").unwrap_err().contains("no `workspace_members`"));
    }

    #[test]
    fn this_workspace() {
        let space = Userspace::discover(&Workspace::locate()).unwrap();
        for package in ["ozone-root-task", "ozone-studio", "ozone-guest-tests"] {
            assert!(space.packages.iter().any(|p| p == package), "{space:?}");
        }
        assert!(!space.packages.iter().any(|p| p == "ozone-kernel" || p == "xtask"), "{space:?}");
        assert!(space.examples.iter().any(|e| e == "hello"), "{space:?}");
    }
}
