//! Cargo builds of the kernel and the userspace programs for `x86_64-unknown-none`.
//!
//! The kernel and userspace need different `RUSTFLAGS` (the kernel is linked static at a fixed
//! address, userspace is static-PIE), so each gets its own target directory below `target/`:
//! switching between them never forces a rebuild.
//!
//! Which packages are userspace programs comes from `cargo metadata`: the workspace members that
//! are not default members (the default members are the host crates and the kernel) and have a
//! binary. A server added to the workspace that way is built with the rest, with no list here to
//! update (the crates under `agents/` are members through a glob). The agent SDK's examples are
//! userspace programs too.
//!
//! **Crates outside the workspace.** A program's block in the system description (or its test
//! overlay) may name the directory of a crate outside the workspace, `path = "DIR"` (relative to
//! the workspace root, or absolute): a key only xtask reads ([`Located::strip`] blanks it out
//! before the description is parsed, so the compiled description and Studio never see it). Every
//! binary of that crate's workspace is built (with its own `Cargo.lock` and `.cargo/config.toml`,
//! in the same target directory) and joins the programs by binary name; that program's binary
//! must be one of them. A description naming a binary no crate provides is refused with the
//! program, the file and every place xtask looked ([`missing_binaries`]).

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
    /// Every userspace program built, by binary name (what another overlay is compiled against:
    /// `cargo xtask qemu --overlay`).
    pub programs: BTreeMap<String, PathBuf>,
}

/// Build the kernel and all userspace programs, and compile the system description, alone and
/// with the test overlay (both are checked on every build).
pub fn build_all(ws: &Workspace, profile: Profile) -> Result<Artifacts> {
    let kernel = build_kernel(ws, profile)?;
    let programs = build_user(ws, profile)?;
    missing_binaries(ws, &programs)?;
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
        programs,
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
    let out_dir = target_dir.join(TARGET).join(profile.dir());
    let mut programs = space.programs(&out_dir)?;
    // The crate (its directory, resolved) each out-of-tree binary came from.
    let mut providers: BTreeMap<String, PathBuf> = BTreeMap::new();
    for located in out_of_tree(ws)? {
        let bins = located.bins()?;
        // Refused before the crate is built: its binaries land in the directory the others' are in.
        add_out_of_tree_bins(&mut programs, &mut providers, &space, &located, &bins, &out_dir)?;
        let mut cmd = cargo(ws, "build", &target_dir, USER_RUSTFLAGS);
        // Its own configuration (`.cargo/config.toml`) and lock file apply.
        cmd.current_dir(&located.dir).args(["--workspace", "--bins", "--target", TARGET]);
        if profile == Profile::Release {
            cmd.arg("--release");
        }
        run_cargo(cmd, &format!("crate at `{}` ({} program `{}`)", located.path, located.file, located.program))?;
    }
    for path in programs.values() {
        if !path.is_file() {
            return Err(format!("the userspace build did not produce {}", path.display()));
        }
    }
    Ok(programs)
}

/// Add the binaries `bins` of the out-of-tree crate `located` to `programs` (all land in
/// `out_dir`). A binary name already taken — by a workspace package, an example, or another
/// out-of-tree crate (`providers`: the resolved directory of the crate each came from) — is an
/// error: one build would overwrite the other's file, and a program would run the wrong crate's
/// code. The same crate named twice (two spellings of one directory) is no conflict.
fn add_out_of_tree_bins(
    programs: &mut BTreeMap<String, PathBuf>,
    providers: &mut BTreeMap<String, PathBuf>,
    space: &Userspace,
    located: &Located,
    bins: &[String],
    out_dir: &Path,
) -> Result<()> {
    let dir = std::fs::canonicalize(&located.dir).unwrap_or_else(|_| located.dir.clone());
    for bin in bins {
        let same_crate = providers.get(bin).is_some_and(|d| *d == dir);
        if programs.contains_key(bin) && !same_crate {
            let other = match providers.get(bin) {
                Some(d) => format!("the crate at {}", d.display()),
                None if space.bins.contains(bin) => String::from("a userspace package of the workspace"),
                None => format!("an example of {SDK}"),
            };
            return Err(format!(
                "{}: program `{}`: the crate at `{}` has a binary `{bin}`, and so has {other} (binaries share one \
                 name space)",
                located.file, located.program, located.path
            ));
        }
        programs.insert(bin.clone(), out_dir.join(bin));
        providers.insert(bin.clone(), dir.clone());
    }
    Ok(())
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
    crate_metadata(&ws.root)
}

/// `cargo metadata --no-deps --format-version 1` of the workspace `dir` belongs to (its JSON).
pub fn crate_metadata(dir: &Path) -> Result<String> {
    if !dir.join("Cargo.toml").is_file() {
        return Err(format!("no Cargo.toml in {}", dir.display()));
    }
    let output = Command::new(cargo_program())
        .current_dir(dir)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed ({})", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A workspace member of `cargo metadata` output: its name, directory and binaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    /// The directory of its `Cargo.toml`.
    pub dir: PathBuf,
    pub bins: Vec<String>,
}

/// The workspace members of `cargo metadata --no-deps` output `json`.
pub fn member_packages(json: &str) -> Result<Vec<Package>> {
    let bad = |what: &str| format!("unexpected `cargo metadata` output: {what}");
    let meta: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .ok_or_else(|| bad("no `workspace_members`"))?
        .iter()
        .filter_map(|id| id.as_str())
        .collect();
    let mut found = Vec::new();
    for package in meta["packages"].as_array().ok_or_else(|| bad("no `packages`"))? {
        let id = package["id"].as_str().ok_or_else(|| bad("a package without an id"))?;
        if !members.contains(&id) {
            continue;
        }
        let name = package["name"].as_str().ok_or_else(|| bad("a package without a name"))?;
        let manifest = package["manifest_path"].as_str().ok_or_else(|| bad("a package without a manifest_path"))?;
        let dir = Path::new(manifest).parent().map(Path::to_path_buf).unwrap_or_default();
        let bins = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect();
        found.push(Package { name: name.to_string(), dir, bins });
    }
    Ok(found)
}

/// A crate outside the workspace, named by a program's `path` in a description file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The description file (relative to the workspace root).
    pub file: String,
    /// The program whose block names it.
    pub program: String,
    /// The program's binary.
    pub binary: String,
    /// As written.
    pub path: String,
    /// Resolved against the workspace root.
    pub dir: PathBuf,
}

/// A `path` key found in a description's text: the program it belongs to, its binary, its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub program: String,
    pub binary: String,
    pub path: String,
}

impl Located {
    /// `text` (the description file `label`) with the `path` key of every `[[program]]` block
    /// blanked out (spaces, so every other line and column stays where it was), and the keys
    /// found. A `path` that is not a non-empty string, or in a block without a `name`, is an
    /// error `label:LINE:COLUMN: ...`. Text that is no TOML comes back unchanged, for the
    /// description's parser to report.
    pub fn strip(label: &str, text: &str) -> Result<(String, Vec<PathKey>)> {
        use toml::de::{DeTable, DeValue};
        let at = |offset: usize| {
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
            format!("{label}:{line}:{column}")
        };
        // A syntax error is the description parser's to report (with the same place).
        let Ok(table) = DeTable::parse(text) else { return Ok((text.to_string(), Vec::new())) };
        let mut blanks: Vec<std::ops::Range<usize>> = Vec::new();
        let mut keys = Vec::new();
        let programs = table.get_ref().iter().find(|(k, _)| k.get_ref() == "program").map(|(_, v)| v.get_ref());
        if let Some(DeValue::Array(programs)) = programs {
            for program in programs.iter() {
                let DeValue::Table(block) = program.get_ref() else { continue };
                let field = |name: &str| block.iter().find(|(k, _)| k.get_ref() == name);
                let Some((key, value)) = field("path") else { continue };
                let string = |v: Option<(&_, &toml::Spanned<DeValue>)>| match v.map(|(_, v)| v.get_ref()) {
                    Some(DeValue::String(s)) => Some(s.to_string()),
                    _ => None,
                };
                let Some(name) = string(field("name")) else {
                    return Err(format!("{}: a program with a `path` needs a `name`", at(key.span().start)));
                };
                let path = match value.get_ref() {
                    DeValue::String(s) if !s.trim().is_empty() => s.to_string(),
                    _ => {
                        return Err(format!(
                            "{}: program `{name}`: `path` is the directory of the program's crate, a non-empty string",
                            at(value.span().start)
                        ));
                    }
                };
                let binary = string(field("binary")).unwrap_or_default();
                let mut range = key.span().start..value.span().end;
                // In an inline table, the comma that went with it.
                let after = text[range.end..].find(|c: char| c != ' ' && c != '\t').map(|i| range.end + i);
                let before = text[..range.start].rfind(|c: char| c != ' ' && c != '\t');
                if let Some(i) = after.filter(|&i| text[i..].starts_with(',')) {
                    range.end = i + 1;
                } else if let Some(i) = before.filter(|&i| text[i..].starts_with(',')) {
                    range.start = i;
                }
                blanks.push(range);
                keys.push(PathKey { program: name, binary, path });
            }
        }
        let mut out = text.to_string();
        // From the end, so the ranges before stay valid; a character becomes one space (the
        // columns after it on its line stay where they were), a newline stays.
        for range in blanks.into_iter().rev() {
            let spaces: String = text[range.clone()].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
            out.replace_range(range, &spaces);
        }
        Ok((out, keys))
    }

    /// The binaries of the crate's workspace (every member's).
    pub fn bins(&self) -> Result<Vec<String>> {
        let metadata = crate_metadata(&self.dir).map_err(|e| self.problem(&e))?;
        Ok(member_packages(&metadata)?.into_iter().flat_map(|p| p.bins).collect())
    }

    /// `message` about this crate, naming the file and the program.
    fn problem(&self, message: &str) -> String {
        format!("{}: program `{}`: path `{}`: {message}", self.file, self.program, self.path)
    }
}

/// The crates outside the workspace that the description and its test overlay name with
/// `path`, once each (by directory), in order of first mention.
pub fn out_of_tree(ws: &Workspace) -> Result<Vec<Located>> {
    let mut found: Vec<Located> = Vec::new();
    for file in [system::SOURCE, system::TEST_OVERLAY] {
        let full = ws.root.join(file);
        let text =
            std::fs::read_to_string(&full).map_err(|e| format!("{file}: cannot read {}: {e}", full.display()))?;
        for key in Located::strip(file, &text)?.1 {
            let dir = ws.root.join(&key.path);
            let located =
                Located { file: file.to_string(), program: key.program, binary: key.binary, path: key.path, dir };
            if !located.dir.join("Cargo.toml").is_file() {
                return Err(
                    located.problem(&format!("no crate there (no {})", located.dir.join("Cargo.toml").display()))
                );
            }
            if !found.iter().any(|l| l.dir == located.dir) {
                found.push(located);
            }
        }
    }
    Ok(found)
}

/// Refuse, before the description is checked, a program whose binary no crate provides, naming
/// the program, its file and where xtask looked; and one whose `path` crate does not provide it.
pub fn missing_binaries(ws: &Workspace, programs: &BTreeMap<String, PathBuf>) -> Result<()> {
    let space = Userspace::discover(ws)?;
    let located = out_of_tree(ws)?;
    let mut errors = Vec::new();
    for file in [system::SOURCE, system::TEST_OVERLAY] {
        let text = std::fs::read_to_string(ws.root.join(file)).map_err(|e| format!("{file}: cannot read: {e}"))?;
        let (stripped, keys) = Located::strip(file, &text)?;
        let Ok(table) = toml::from_str::<toml::Table>(&stripped) else { continue };
        for p in table.get("program").and_then(toml::Value::as_array).into_iter().flatten() {
            let (Some(name), Some(binary)) =
                (p.get("name").and_then(toml::Value::as_str), p.get("binary").and_then(toml::Value::as_str))
            else {
                continue;
            };
            let key = keys.iter().find(|k| k.program == name);
            errors.extend(missing_binary(file, name, binary, key, &space, &located, programs, ws));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors.join("\n")) }
}

/// The error about program `name` of `file`, if its `binary` is not among `programs`, or not a
/// binary of the crate its `path` names.
#[allow(clippy::too_many_arguments)]
fn missing_binary(
    file: &str,
    name: &str,
    binary: &str,
    key: Option<&PathKey>,
    space: &Userspace,
    located: &[Located],
    programs: &BTreeMap<String, PathBuf>,
    ws: &Workspace,
) -> Option<String> {
    if let Some(key) = key {
        let dir = ws.root.join(&key.path);
        let crate_bins: Vec<String> =
            located.iter().find(|l| l.dir == dir).and_then(|l| l.bins().ok()).unwrap_or_default();
        if crate_bins.iter().any(|b| b == binary) {
            return None;
        }
        return Some(format!(
            "{file}: program `{name}`: binary `{binary}` is not a binary of the crate at path `{}` (its binaries: {})",
            key.path,
            if crate_bins.is_empty() { "none".to_string() } else { crate_bins.join(", ") }
        ));
    }
    if programs.contains_key(binary) {
        return None;
    }
    let paths: Vec<String> = located.iter().map(|l| format!("`{}`", l.path)).collect();
    Some(format!(
        "{file}: program `{name}`: no crate provides its binary `{binary}`: looked at the binaries of the \
         workspace's userspace packages ({}), the examples of {SDK} ({}) and the crates outside the workspace \
         named with `path` ({}); a crate outside the workspace is named by `path = \"DIR\"` in the program's block",
        space.packages.join(", "),
        space.examples.join(", "),
        if paths.is_empty() { "none".to_string() } else { paths.join(", ") }
    ))
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
    fn out_of_tree_binaries_never_share_a_name() {
        let space =
            Userspace { packages: vec!["a".into()], bins: vec!["timer".into()], examples: vec!["hello".into()] };
        let out = Path::new("/out");
        let mut programs = space.programs(out).unwrap();
        let mut providers = BTreeMap::new();
        let at = |path: &str, program: &str| Located {
            file: "f.toml".into(),
            program: program.into(),
            binary: program.into(),
            path: path.into(),
            dir: PathBuf::from("/nonexistent").join(path),
        };
        let bins = |b: &[&str]| b.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // A system program's binary, an example's: refused.
        let e = add_out_of_tree_bins(&mut programs, &mut providers, &space, &at("evil", "x"), &bins(&["timer"]), out);
        assert!(e.unwrap_err().contains("a userspace package of the workspace"));
        let e = add_out_of_tree_bins(&mut programs, &mut providers, &space, &at("evil", "x"), &bins(&["hello"]), out);
        assert!(e.unwrap_err().contains("an example of"));
        // Two different out-of-tree crates with one binary name: the second would overwrite the
        // first's file, and the first's program would run the second crate's code.
        add_out_of_tree_bins(&mut programs, &mut providers, &space, &at("one", "kv"), &bins(&["kv"]), out).unwrap();
        let e = add_out_of_tree_bins(&mut programs, &mut providers, &space, &at("two", "other"), &bins(&["kv"]), out);
        assert!(e.unwrap_err().contains("and so has the crate at /nonexistent/one"), "refused");
        // The same crate again is no conflict.
        add_out_of_tree_bins(&mut programs, &mut providers, &space, &at("one", "kv2"), &bins(&["kv"]), out).unwrap();
        assert_eq!(programs["kv"], out.join("kv"));
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

    #[test]
    fn path_keys_are_blanked_in_place() {
        let text = "[system]\nmemory_mib = 8\n\n[[program]]\nname = \"w\"\nbinary = \"w\"\npath = \"../w\"   # out\nkind = \"agent\"\n\n[[program]]\nname = \"v\"\nbinary = \"v\"\n";
        let (stripped, keys) = Located::strip("f.toml", text).unwrap();
        assert_eq!(keys, [PathKey { program: "w".into(), binary: "w".into(), path: "../w".into() }]);
        assert_eq!(stripped.lines().count(), text.lines().count(), "lines stay where they were");
        assert!(stripped.contains("\n                # out\nkind"), "{stripped}");
        assert!(!stripped.contains("path"));
        // Inline tables: the comma goes with the key, before or after it.
        for text in [
            "program = [{ name = \"w\", path = \"d\", binary = \"w\" }]",
            "program = [{ name = \"w\", binary = \"w\", path = \"d\" }]",
            "program = [{ path = \"d\", name = \"w\", binary = \"w\" }]",
        ] {
            let (stripped, keys) = Located::strip("f.toml", text).unwrap();
            assert_eq!(keys.len(), 1, "{text}");
            let table: toml::Table = toml::from_str(&stripped).unwrap_or_else(|e| panic!("{stripped}: {e}"));
            let program = &table["program"][0];
            assert_eq!((program["name"].as_str(), program.get("path")), (Some("w"), None), "{stripped}");
        }
        // Nothing to strip: the text is unchanged; no TOML: unchanged, for the parser to report.
        assert_eq!(Located::strip("f.toml", "a = 1\n").unwrap(), ("a = 1\n".to_string(), vec![]));
        assert_eq!(Located::strip("f.toml", "[[program]\n").unwrap().0, "[[program]\n");
    }

    #[test]
    fn bad_path_keys_are_errors_with_their_place() {
        let e = Located::strip("f.toml", "[[program]]\nname = \"w\"\npath = 3\n").unwrap_err();
        assert_eq!(e, "f.toml:3:8: program `w`: `path` is the directory of the program's crate, a non-empty string");
        let e = Located::strip("f.toml", "[[program]]\nname = \"w\"\npath = \" \"\n").unwrap_err();
        assert!(e.starts_with("f.toml:3:8: program `w`"), "{e}");
        let e = Located::strip("f.toml", "[[program]]\npath = \"d\"\n").unwrap_err();
        assert_eq!(e, "f.toml:2:1: a program with a `path` needs a `name`");
    }

    #[test]
    fn the_overlay_names_the_crate_outside_the_workspace() {
        let ws = Workspace::locate();
        let found = out_of_tree(&ws).unwrap();
        let outside = found.iter().find(|l| l.program == "outside").expect("tests/outside in the overlay");
        assert_eq!((outside.file.as_str(), outside.path.as_str()), (system::TEST_OVERLAY, "tests/outside"));
        assert_eq!(outside.bins().unwrap(), ["outside"]);
        assert!(found.iter().all(|l| l.dir.join("Cargo.toml").is_file()));
    }

    #[test]
    fn a_binary_no_crate_provides_is_named_with_where_xtask_looked() {
        let ws = Workspace::locate();
        let space = Userspace {
            packages: vec!["ozone-console".into()],
            bins: vec!["console".into()],
            examples: vec!["hello".into()],
        };
        let located = out_of_tree(&ws).unwrap();
        let programs: BTreeMap<String, PathBuf> = [("console".to_string(), PathBuf::from("/out/console"))].into();
        let e = missing_binary("f.toml", "weather", "weather", None, &space, &located, &programs, &ws).unwrap();
        assert!(e.starts_with("f.toml: program `weather`: no crate provides its binary `weather`"), "{e}");
        assert!(
            e.contains("userspace packages (ozone-console)") && e.contains("examples of ozone-agent-sdk (hello)"),
            "{e}"
        );
        assert!(e.contains("named with `path` (`tests/outside`)") && e.contains("path = \"DIR\""), "{e}");
        assert_eq!(missing_binary("f.toml", "c", "console", None, &space, &located, &programs, &ws), None);
        // A `path` crate must provide the binary itself.
        let key = PathKey { program: "o".into(), binary: "console".into(), path: "tests/outside".into() };
        let e = missing_binary("f.toml", "o", "console", Some(&key), &space, &located, &programs, &ws).unwrap();
        assert_eq!(
            e,
            "f.toml: program `o`: binary `console` is not a binary of the crate at path `tests/outside` (its binaries: outside)"
        );
        let key = PathKey { binary: "outside".into(), ..key };
        assert_eq!(missing_binary("f.toml", "o", "outside", Some(&key), &space, &located, &programs, &ws), None);
    }
}
