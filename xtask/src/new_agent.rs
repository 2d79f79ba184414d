//! `cargo xtask new-agent NAME`: a new agent or server in a crate of its own.
//!
//! | command | creates |
//! |---|---|
//! | `new-agent NAME` | `agents/NAME/`: an agent (one binary `NAME`) |
//! | `new-agent NAME --uses IFACE` | the same, depending on the protocol crate `IFACE-protocol` and calling it |
//! | `new-agent NAME --server` | `agents/NAME/`, a server of the interface `NAME`, and `agents/NAME-protocol/`, the interface's protocol crate (its methods, declared with the SDK's `methods!`) that the server and its clients share |
//! | `... --dir DIR` | the crate in `DIR` instead, outside the workspace: its own `[workspace]` (the protocol crate in `DIR/protocol/`), a path dependency to the SDK, the project's build settings (`.cargo/config.toml`, profiles, lints) and a copy of the workspace's `Cargo.lock` |
//! | `... --add` | appends the program's `[[program]]` block to `initrd/system.toml` (checked first) instead of printing it |
//!
//! Crates under `agents/` are workspace members through the `agents/*` glob of the workspace
//! `Cargo.toml`, so `cargo xtask` builds them with the other userspace programs. A crate outside
//! the workspace is named by its program's block in the system description,
//! `path = "DIR"` (relative to the workspace root), a key only xtask reads
//! ([`crate::build::Located`]): Studio never sees it.
//!
//! `NAME` follows the description's rules for a program name (1 to 24 of `a-z`, `0-9`, `-` and
//! `_`), starts with a letter (a crate name), and may not be taken: by a program of the system
//! description or its test overlay, by a workspace package, by a binary or an example that
//! xtask builds, by an interface (for `--server`), or by a name the system keeps (`studio`, the
//! root task, the Rust standard crates).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use ozone_agent_sdk::protocol::system::{MAX_NAME, STUDIO_INTERFACE};

use crate::build::{self, Located, Userspace};
use crate::{Result, Workspace, initrd, system};

/// Options of `cargo xtask new-agent`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NewAgentArgs {
    /// The program's (and crate's, and binary's) name; a server's interface name too.
    pub name: String,
    /// A server of the interface `name`, with its protocol crate.
    pub server: bool,
    /// The interface whose protocol crate `IFACE-protocol` an agent depends on.
    pub uses: Option<String>,
    /// Outside the workspace, in this directory.
    pub dir: Option<PathBuf>,
    /// Append the `[[program]]` block to `initrd/system.toml`.
    pub add: bool,
}

/// The directory of in-workspace agent crates, relative to the workspace root.
pub const AGENTS_DIR: &str = "agents";

/// The suffix of a protocol crate's package name.
pub const PROTOCOL_SUFFIX: &str = "-protocol";

/// Names no program may take: the crates every Rust program has, Studio's (its binary and its
/// interface), the root task's, and Rust's reserved crate names.
const TAKEN: [&str; 9] = ["core", "alloc", "std", "test", "proc_macro", "self", "crate", "super", STUDIO_INTERFACE];

/// A file to create: its path relative to the directory of the crates, and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub path: PathBuf,
    pub text: String,
}

/// Where the new crates go and how they reach the SDK and a used protocol crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The program's crate, absolute.
    pub crate_dir: PathBuf,
    /// The server's protocol crate, absolute (servers only).
    pub protocol_dir: Option<PathBuf>,
    /// The SDK's directory, as the program's `Cargo.toml` names it (relative to the crate).
    pub sdk_from_crate: String,
    /// The SDK, as the protocol crate's `Cargo.toml` names it.
    pub sdk_from_protocol: String,
    /// The used interface's protocol crate, as the agent's `Cargo.toml` names it.
    pub uses_from_crate: Option<String>,
    /// Outside the workspace (its own `[workspace]`).
    pub out_of_tree: bool,
    /// The `path` of the `[[program]]` block (out-of-tree crates), relative to the workspace
    /// root when the crate is below it, else absolute.
    pub description_path: Option<String>,
}

/// `cargo xtask new-agent`: check the name, create the crates, print or add the `[[program]]`
/// block.
pub fn command(ws: &Workspace, args: &NewAgentArgs) -> Result<()> {
    check_args(args)?;
    let existing = Existing::gather(ws)?;
    existing.check_name(args)?;
    let layout = layout(ws, args, &existing)?;
    for dir in std::iter::once(&layout.crate_dir).chain(&layout.protocol_dir) {
        if dir.exists()
            && std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?.count() > 0
        {
            return Err(format!("{} already exists and is not empty: choose another name or --dir", dir.display()));
        }
    }
    let snippet = program_block(args, layout.description_path.as_deref());
    // Check the block before anything is written: a bad --add leaves nothing behind.
    let added = if args.add { Some(with_block(ws, &snippet)?) } else { None };
    let lock = if layout.out_of_tree { Some(crate::read_file(&ws.root.join("Cargo.lock"))?) } else { None };
    let files = generate(args, &layout);
    for file in &files {
        crate::write_file(&file.path, file.text.as_bytes())?;
    }
    if let Some(lock) = lock {
        crate::write_file(&layout.crate_dir.join("Cargo.lock"), &lock)?;
    }
    let shown = |p: &Path| p.strip_prefix(&ws.root).map(Path::to_path_buf).unwrap_or_else(|_| p.to_path_buf());
    let name = &args.name;
    if args.server {
        println!("created {} (the `{name}` server)", shown(&layout.crate_dir).display());
        if let Some(p) = &layout.protocol_dir {
            println!(
                "created {} (the `{name}` interface: its clients depend on it; `cargo xtask new-agent CLIENT --uses {name}`)",
                shown(p).display()
            );
        }
    } else {
        println!("created {} (the agent `{name}`)", shown(&layout.crate_dir).display());
    }
    match added {
        Some(text) => {
            crate::write_file(&ws.root.join(system::SOURCE), text.as_bytes())?;
            println!("added to {}:\n\n{snippet}", system::SOURCE);
        }
        None => println!("add this to {} (or run with --add):\n\n{snippet}", system::SOURCE),
    }
    println!(
        "then `cargo xtask qemu` builds it with the system; Studio starts it at boot (the shell: `ps`, `kill {name}`, `start {name}`)"
    );
    Ok(())
}

/// The combinations of options that make sense.
fn check_args(args: &NewAgentArgs) -> Result<()> {
    if args.server && args.uses.is_some() {
        return Err("--uses is for agents: a server made with --server serves its own interface (add uses to its \
                    Cargo.toml and [[program]] block by hand if it also calls one)"
            .into());
    }
    validate_name(&args.name)?;
    if let Some(iface) = &args.uses {
        validate_name(iface).map_err(|e| format!("--uses {iface}: {e}"))?;
    }
    Ok(())
}

/// Check `name` against the rules of a program name that is also a crate's name.
pub fn validate_name(name: &str) -> Result<()> {
    let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
    if name.is_empty() || name.len() > MAX_NAME || !name.bytes().all(valid) {
        return Err(format!("invalid name `{name}`: a program name is 1 to {MAX_NAME} of a-z, 0-9, `-` and `_`"));
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err(format!("invalid name `{name}`: it must start with a letter (it is a crate's name too)"));
    }
    if name.ends_with(PROTOCOL_SUFFIX) {
        return Err(format!(
            "invalid name `{name}`: names ending in `{PROTOCOL_SUFFIX}` are those of protocol crates (--server makes one)"
        ));
    }
    if TAKEN.contains(&name) || name == initrd::ROOT_TASK {
        return Err(format!("the name `{name}` is taken by the system or by Rust"));
    }
    Ok(())
}

/// What already has a name: the programs of the description and its overlay, the workspace's
/// packages, the programs xtask builds, the interfaces provided, and the crates outside the
/// workspace the description names.
#[derive(Debug, Default)]
pub struct Existing {
    programs: BTreeSet<String>,
    packages: BTreeSet<String>,
    binaries: BTreeSet<String>,
    interfaces: BTreeSet<String>,
    /// Protocol crates by package name, with their directory (workspace members and crates
    /// outside the workspace).
    protocols: Vec<(String, PathBuf)>,
}

impl Existing {
    /// Read the description, its overlay, `cargo metadata` of the workspace and of the crates
    /// outside it.
    pub fn gather(ws: &Workspace) -> Result<Existing> {
        let mut existing = Existing::default();
        for file in [system::SOURCE, system::TEST_OVERLAY] {
            let text = std::fs::read_to_string(ws.root.join(file)).map_err(|e| format!("{file}: cannot read: {e}"))?;
            let (stripped, _) = Located::strip(file, &text)?;
            let table: toml::Table = toml::from_str(&stripped).map_err(|e| format!("{file}: {}", e.message()))?;
            for p in table.get("program").and_then(toml::Value::as_array).into_iter().flatten() {
                if let Some(name) = p.get("name").and_then(toml::Value::as_str) {
                    existing.programs.insert(name.to_string());
                }
                for i in p.get("provides").and_then(toml::Value::as_array).into_iter().flatten() {
                    existing.interfaces.extend(i.as_str().map(str::to_string));
                }
            }
        }
        let metadata = build::workspace_metadata(ws)?;
        existing.add_metadata(&metadata, true)?;
        let space = Userspace::from_metadata(&metadata)?;
        existing.binaries.extend(space.bins.iter().chain(&space.examples).cloned());
        for located in build::out_of_tree(ws)? {
            let metadata = build::crate_metadata(&located.dir)?;
            existing.add_metadata(&metadata, false)?;
        }
        Ok(existing)
    }

    /// The packages (workspace members only when `members`) and binaries of `cargo metadata`
    /// output.
    fn add_metadata(&mut self, json: &str, members: bool) -> Result<()> {
        for package in build::member_packages(json)? {
            if package.name.ends_with(PROTOCOL_SUFFIX) && package.bins.is_empty() {
                self.protocols.push((package.name.clone(), package.dir.clone()));
            }
            if !members {
                self.binaries.extend(package.bins.iter().cloned());
            }
            self.packages.insert(package.name);
        }
        Ok(())
    }

    /// Refuse a name that is taken, and a used interface without a protocol crate.
    pub fn check_name(&self, args: &NewAgentArgs) -> Result<()> {
        let name = &args.name;
        let taken = |what: &str| Err(format!("the name `{name}` is taken: {what}"));
        if self.programs.contains(name) {
            return taken(&format!("a program of {} or {} has it", system::SOURCE, system::TEST_OVERLAY));
        }
        if self.packages.contains(name) {
            return taken("a crate (package) of the workspace or outside it has it");
        }
        if self.binaries.contains(name) {
            return taken("a userspace binary or example xtask builds has it");
        }
        let protocol = format!("{name}{PROTOCOL_SUFFIX}");
        if args.server {
            if self.interfaces.contains(name) {
                return taken("an interface of that name is already provided");
            }
            if self.packages.contains(&protocol) {
                return taken(&format!("the protocol crate `{protocol}` exists"));
            }
        }
        if let Some(iface) = &args.uses
            && self.protocol(iface).is_none()
        {
            let found: Vec<&str> = self.protocols.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!(
                "--uses {iface}: no protocol crate `{iface}{PROTOCOL_SUFFIX}` (looked in the workspace members and in \
                 the crates outside it that {} or {} name with `path`; found: {})",
                system::SOURCE,
                system::TEST_OVERLAY,
                if found.is_empty() { "none".to_string() } else { found.join(", ") }
            ));
        }
        Ok(())
    }

    /// The directory of the protocol crate of `iface`.
    pub fn protocol(&self, iface: &str) -> Option<&Path> {
        let package = format!("{iface}{PROTOCOL_SUFFIX}");
        self.protocols.iter().find(|(n, _)| *n == package).map(|(_, d)| d.as_path())
    }
}

/// Where the crates of `args` go.
fn layout(ws: &Workspace, args: &NewAgentArgs, existing: &Existing) -> Result<Layout> {
    let root = absolute(&ws.root)?;
    let sdk = root.join("agent-sdk");
    let agents = root.join(AGENTS_DIR);
    let (crate_dir, protocol_dir, out_of_tree) = match &args.dir {
        None => {
            let protocol = args.server.then(|| agents.join(format!("{}{PROTOCOL_SUFFIX}", args.name)));
            (agents.join(&args.name), protocol, false)
        }
        Some(dir) => {
            let dir = absolute(dir)?;
            if dir.starts_with(&agents) {
                return Err(format!(
                    "--dir {}: the crates under {AGENTS_DIR}/ are workspace members; leave out --dir for those",
                    dir.display()
                ));
            }
            if dir == root || root.starts_with(&dir) {
                return Err(format!("--dir {}: that is the workspace itself or above it", dir.display()));
            }
            let protocol = args.server.then(|| dir.join("protocol"));
            (dir, protocol, true)
        }
    };
    let uses_from_crate = match &args.uses {
        Some(iface) => {
            let dir = existing.protocol(iface).ok_or_else(|| format!("--uses {iface}: no protocol crate"))?;
            Some(relative(&crate_dir, &absolute(dir)?))
        }
        None => None,
    };
    let description_path = out_of_tree.then(|| match crate_dir.strip_prefix(&root) {
        Ok(inside) => inside.display().to_string(),
        Err(_) => relative(&root, &crate_dir),
    });
    Ok(Layout {
        sdk_from_crate: relative(&crate_dir, &sdk),
        sdk_from_protocol: protocol_dir.as_ref().map(|p| relative(p, &sdk)).unwrap_or_default(),
        crate_dir,
        protocol_dir,
        uses_from_crate,
        out_of_tree,
        description_path,
    })
}

/// `path` made absolute against the current directory, with `.` and `..` resolved (through the
/// file system for the part that exists, so symbolic links agree with the workspace's path).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let joined = cwd.join(path);
    let mut existing = joined.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name().map(|n| n.to_os_string()));
        existing = existing.parent().ok_or_else(|| format!("no existing directory above {}", path.display()))?;
    }
    let mut out = existing.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", existing.display()))?;
    for part in rest.into_iter().rev() {
        match part {
            Some(name) => out.push(name),
            None => {
                out.pop();
            }
        }
    }
    Ok(out)
}

/// The path from the directory `from` to `to` (both absolute), `/`-separated, as Cargo.toml
/// path dependencies are written.
pub fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); from.len() - common];
    parts.extend(to[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()));
    if parts.is_empty() { ".".to_string() } else { parts.join("/") }
}

/// The `[[program]]` block of the new program, with `path` for a crate outside the workspace.
pub fn program_block(args: &NewAgentArgs, path: Option<&str>) -> String {
    let name = &args.name;
    let mut block = format!("[[program]]\nname = \"{name}\"\nbinary = \"{name}\"\n");
    if let Some(path) = path {
        let key = format!("path = \"{}\"", escape(path));
        block.push_str(&format!("{key:<25} # the crate (outside the workspace)\n"));
    }
    if args.server {
        block.push_str(&format!(
            "kind = \"server\"\npriority = 120\nmemory_kib = 1024\nprovides = [\"{name}\"]\nuses = [\"console\"]       # \
             its log lines go through the console server\nrestart = true\n"
        ));
    } else {
        let uses = match &args.uses {
            Some(iface) => format!("uses = [\"{iface}\", \"console\"]"),
            None => "uses = [\"console\"]".to_string(),
        };
        block.push_str(&format!("kind = \"agent\"\npriority = 100\nmemory_kib = 1024\n{uses}\n"));
    }
    block
}

/// `s` inside a TOML basic string.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `initrd/system.toml` with `block` appended, if the result is a valid description (every
/// binary assumed built: the crate is about to be) that the test overlay still merges into.
fn with_block(ws: &Workspace, block: &str) -> Result<String> {
    let read =
        |file: &str| std::fs::read_to_string(ws.root.join(file)).map_err(|e| format!("{file}: cannot read: {e}"));
    appended(&read(system::SOURCE)?, &read(system::TEST_OVERLAY)?, block)
}

/// The description `base` with `block` appended, if valid alone and with `overlay` merged in.
pub fn appended(base: &str, overlay: &str, block: &str) -> Result<String> {
    let separator = if base.ends_with("\n\n") || base.is_empty() {
        ""
    } else if base.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    let text = format!("{base}{separator}{block}");
    let problems = |errors: Vec<String>| {
        format!(
            "--add: the description would not be valid with the new block (nothing was created):\n{}",
            errors.join("\n")
        )
    };
    let (stripped, _) = Located::strip(system::SOURCE, &text)?;
    let description = system::parse(system::SOURCE, &stripped).map_err(|e| problems(vec![e]))?;
    description
        .validate(&|_| true)
        .map_err(|errors| problems(errors.into_iter().map(|e| format!("{}: {e}", system::SOURCE)).collect()))?;
    let (overlay_text, _) = Located::strip(system::TEST_OVERLAY, overlay)?;
    let overlay = system::parse_overlay(system::TEST_OVERLAY, &overlay_text).map_err(|e| problems(vec![e]))?;
    let merged = system::merge(&description, system::SOURCE, &overlay, system::TEST_OVERLAY).map_err(problems)?;
    merged.validate(&|_| true).map_err(|errors| {
        problems(errors.into_iter().map(|e| format!("{} + {}: {e}", system::SOURCE, system::TEST_OVERLAY)).collect())
    })?;
    Ok(text)
}

/// The files of the new crates (absolute paths).
pub fn generate(args: &NewAgentArgs, layout: &Layout) -> Vec<File> {
    let name = &args.name;
    let mut files = Vec::new();
    let file = |dir: &Path, path: &str, text: String| File { path: dir.join(path), text };
    let protocol_package = format!("{name}{PROTOCOL_SUFFIX}");
    let mut deps = format!("ozone-agent-sdk = {{ path = \"{}\" }}\n", layout.sdk_from_crate);
    if args.server {
        let dir = if layout.out_of_tree { "protocol".to_string() } else { format!("../{protocol_package}") };
        deps.push_str(&format!("{protocol_package} = {{ path = \"{dir}\" }}\n"));
    }
    if let (Some(iface), Some(path)) = (&args.uses, &layout.uses_from_crate) {
        deps.push_str(&format!("{iface}{PROTOCOL_SUFFIX} = {{ path = \"{path}\" }}\n"));
    }
    let what = if args.server { format!("The `{name}` server") } else { format!("The agent `{name}`") };
    let mut manifest = package_header(name, &what, layout.out_of_tree);
    manifest.push_str(&format!(
        "\n# One binary, the program: `binary = \"{name}\"` in the system description.\n[[bin]]\nname = \"{name}\"\npath = \"src/main.rs\"\ntest = false\nbench = false\n\n[dependencies]\n{deps}"
    ));
    if layout.out_of_tree {
        manifest.push_str(OUT_OF_TREE_WORKSPACE);
    }
    manifest.push_str(LINTS);
    files.push(file(&layout.crate_dir, "Cargo.toml", manifest));
    let main = if args.server {
        server_main(name)
    } else {
        match &args.uses {
            Some(iface) => client_main(name, iface),
            None => agent_main(name),
        }
    };
    files.push(file(&layout.crate_dir, "src/main.rs", main));
    if layout.out_of_tree {
        files.push(file(&layout.crate_dir, ".cargo/config.toml", cargo_config()));
        files.push(file(&layout.crate_dir, ".gitignore", "/target\n".to_string()));
    }
    if let Some(dir) = &layout.protocol_dir {
        let mut manifest = package_header(
            &protocol_package,
            &format!("The `{name}` interface: its methods and message types, shared by its server and clients"),
            layout.out_of_tree,
        );
        manifest.push_str(&format!(
            "\n[dependencies]\nozone-agent-sdk = {{ path = \"{}\" }}\n# Message types derive their encoding (no default features: no std).\nserde = {{ version = \"1\", default-features = false, features = [\"derive\", \"alloc\"] }}\n",
            layout.sdk_from_protocol
        ));
        manifest.push_str(LINTS);
        files.push(file(dir, "Cargo.toml", manifest));
        files.push(file(dir, "src/lib.rs", protocol_lib(name)));
    }
    files
}

/// `[package]` of a new crate: the workspace's settings inside it, the same spelled out outside.
fn package_header(package: &str, what: &str, out_of_tree: bool) -> String {
    let inherited = if out_of_tree {
        "edition = \"2024\"\nversion = \"0.1.0\"\nlicense = \"MIT OR Apache-2.0\"\nrust-version = \"1.95\""
    } else {
        "edition.workspace = true\nversion.workspace = true\nlicense.workspace = true"
    };
    format!(
        "[package]\nname = \"{package}\"\ndescription = \"{what} (made with `cargo xtask new-agent`).\"\n{inherited}\npublish = false\n"
    )
}

/// The workspace of a crate outside OZONE-OS's: the project's profiles and lints.
const OUT_OF_TREE_WORKSPACE: &str = r#"
# A workspace of its own, outside OZONE-OS's (a protocol crate in a subdirectory joins it as a
# path dependency). The settings are the OZONE-OS workspace's.
[workspace]

[workspace.lints.rust]
unsafe_op_in_unsafe_fn = "forbid"

[workspace.lints.clippy]
# Every `unsafe` block says why it is sound.
undocumented_unsafe_blocks = "deny"

[profile.dev]
panic = "abort"
opt-level = 1

[profile.release]
panic = "abort"
debug = 1
codegen-units = 1
lto = true
"#;

/// The lints section of every new crate: the workspace's.
const LINTS: &str = "\n[lints]\nworkspace = true\n";

/// `.cargo/config.toml` of a crate outside the workspace: `cargo build` there builds for the
/// guest with the flags `cargo xtask` uses.
fn cargo_config() -> String {
    let flags: Vec<String> =
        build::USER_RUSTFLAGS.split(' ').map(|f| format!("\"{}\"", f.replace('"', "\\\""))).collect();
    format!(
        "# OZONE-OS programs are built for the bare-metal target with the flags `cargo xtask` uses.\n[build]\ntarget = \"{}\"\n\n[target.{}]\nrustflags = [{}]\n",
        build::TARGET,
        build::TARGET,
        flags.join(", ")
    )
}

/// The Rust name of the protocol crate of `iface`.
fn protocol_crate(iface: &str) -> String {
    format!("{}{}", iface.replace('-', "_"), PROTOCOL_SUFFIX.replace('-', "_"))
}

/// The protocol crate's `lib.rs`: the interface name, a message type and two methods.
fn protocol_lib(name: &str) -> String {
    format!(
        r#"//! The `{name}` interface: its name, message types and methods, shared by the `{name}` server
//! and its clients (they depend on this crate), so both sides agree on every method's types at
//! compile time.
//!
//! A small key-value store to start from: change the methods to your interface's. A method's
//! number is below 64 and never reused for another meaning.
#![no_std]

extern crate alloc;

use alloc::string::String;
use serde::{{Deserialize, Serialize}};

/// The interface's name: the `provides` of the server's `[[program]]` block, and what clients
/// look up.
pub const INTERFACE: &str = "{name}";

/// The longest key, in bytes.
pub const MAX_KEY: usize = 64;

/// The most keys the server keeps.
pub const MAX_KEYS: usize = 256;

/// The request of `PUT`: a value to store under a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {{
    pub key: String,
    pub value: u64,
}}

ozone_agent_sdk::methods! {{
    /// `Put` → `Option<u64>`: store the value, answer the one it replaces. `InvalidArgument` for a
    /// key longer than [`MAX_KEY`], `QuotaExceeded` for a new key beyond [`MAX_KEYS`].
    PUT = 0: Put => Option<u64>;
    /// `String` key → `Option<u64>`: the value stored under it.
    GET = 1: String => Option<u64>;
}}
"#
    )
}

/// The server's `main.rs`: serves the interface from its protocol crate.
fn server_main(name: &str) -> String {
    let protocol = protocol_crate(name);
    let imports = imports(&[
        "use ozone_agent_sdk::protocol::ServiceError;".into(),
        "use ozone_agent_sdk::{entry, error, info, rpc};".into(),
        format!("use {protocol}::{{INTERFACE, MAX_KEY, MAX_KEYS, Put, id, method}};"),
    ]);
    format!(
        r#"//! The `{name}` server: serves the `{name}` interface (the `{name}-protocol` crate). Studio gives it
//! the interface's endpoint because its `[[program]]` block says `provides = ["{name}"]`; each
//! request carries the client's badge (its program id).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;

{imports}
entry!(run);

fn run() -> u64 {{
    // The endpoint where the description's `provides` puts the interface: a server whose
    // description does not provide `INTERFACE` stops here, saying so.
    let mut server = match rpc::Server::provided(INTERFACE) {{
        Ok(server) => server,
        Err(e) => {{
            error!("cannot serve `{{INTERFACE}}`: {{e}}");
            return 1;
        }}
    }};
    info!("serving `{{INTERFACE}}`");
    let mut store: BTreeMap<String, u64> = BTreeMap::new();
    server.serve(|req| match req.method {{
        id::PUT => rpc::handle(req, method::PUT, |put: Put| {{
            if put.key.len() > MAX_KEY {{
                return Err(ServiceError::InvalidArgument);
            }}
            if store.len() >= MAX_KEYS && !store.contains_key(&put.key) {{
                return Err(ServiceError::QuotaExceeded);
            }}
            Ok(store.insert(put.key, put.value))
        }}),
        id::GET => rpc::handle(req, method::GET, |key: String| Ok(store.get(&key).copied())),
        _ => Err(ServiceError::UnknownMethod),
    }})
}}
"#
    )
}

/// A client's `main.rs`: looks the interface up and calls its methods.
fn client_main(name: &str, iface: &str) -> String {
    let protocol = protocol_crate(iface);
    let imports = imports(&[
        "use ozone_agent_sdk::rpc::Client;".into(),
        "use ozone_agent_sdk::{AgentError, entry, error, info};".into(),
        format!("use {protocol}::{{INTERFACE, Put, method}};"),
    ]);
    format!(
        r#"//! The agent `{name}`: a client of the `{iface}` interface (the `{iface}-protocol` crate). Studio
//! lets it look the interface up because its `[[program]]` block lists `{iface}` in `uses`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

{imports}
entry!(run);

fn run() -> u64 {{
    match talk() {{
        Ok(()) => 0,
        Err(e) => {{
            error!("{{e}}");
            1
        }}
    }}
}}

fn talk() -> Result<(), AgentError> {{
    let server = Client::lookup(INTERFACE)?;
    let replaced = server.call(method::PUT, &Put {{ key: "answer".into(), value: 42 }})?;
    let value = server.call(method::GET, "answer")?;
    info!("stored 42 under `answer` (it replaced {{replaced:?}}), read back {{value:?}}");
    Ok(())
}}
"#
    )
}

/// `use` lines in the order rustfmt gives them (by path), one a line.
fn imports(lines: &[String]) -> String {
    let mut lines = lines.to_vec();
    lines.sort_by(|a, b| a.trim_end_matches(';').cmp(b.trim_end_matches(';')));
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A plain agent's `main.rs`: asks Studio (every program's first server) a typed question.
fn agent_main(name: &str) -> String {
    format!(
        r#"//! The agent `{name}`: asks Studio how much of its memory quota it uses, logs it and exits.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{{AgentError, entry, error, info}};

entry!(run);

fn run() -> u64 {{
    match work() {{
        Ok(()) => 0,
        Err(e) => {{
            error!("{{e}}");
            1
        }}
    }}
}}

fn work() -> Result<(), AgentError> {{
    let memory = Client::studio().call(method::MY_MEMORY, &())?;
    info!("hello from `{{}}`: {{}} of {{}} bytes of my quota used", ozone_agent_sdk::start::name(), memory.used, memory.quota);
    Ok(())
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str) -> NewAgentArgs {
        NewAgentArgs { name: name.into(), ..Default::default() }
    }

    fn ws() -> Workspace {
        Workspace::locate()
    }

    #[test]
    fn names_follow_the_description_and_crate_rules() {
        for good in ["kv", "weather", "a", "my-agent_2", &"x".repeat(MAX_NAME)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        let refused = |name: &str, why: &str| {
            let e = validate_name(name).unwrap_err();
            assert!(e.contains(why), "{name}: {e}");
            assert!(e.contains(&format!("`{name}`")), "the error names it: {e}");
        };
        refused("", "1 to 24");
        refused(&"x".repeat(MAX_NAME + 1), "1 to 24");
        refused("Weather", "a-z, 0-9");
        refused("kv store", "a-z, 0-9");
        refused("kv.store", "a-z, 0-9");
        refused("../evil", "a-z, 0-9");
        refused("évian", "a-z, 0-9");
        refused("2fast", "start with a letter");
        refused("-x", "start with a letter");
        refused("_x", "start with a letter");
        refused("kv-protocol", "protocol crates");
        for taken in ["studio", "core", "std", "alloc", "test", "root-task", "self"] {
            refused(taken, "taken");
        }
    }

    #[test]
    fn names_in_use_are_refused() {
        let existing = Existing::gather(&ws()).unwrap();
        let refused = |a: NewAgentArgs, why: &str| {
            let e = existing.check_name(&a).unwrap_err();
            assert!(e.contains(why), "{a:?}: {e}");
        };
        refused(args("echo"), "a program of initrd/system.toml");
        refused(args("kv"), "a program of");
        refused(args("hostile"), "a program of");
        refused(args("ozone-studio"), "a crate (package)");
        refused(args("xtask"), "a crate (package)");
        refused(args("echo-server"), "a userspace binary or example");
        refused(args("secmem-check"), "a userspace binary or example");
        let uses = |name: &str, iface: &str| NewAgentArgs {
            name: name.into(),
            uses: Some(iface.into()),
            ..Default::default()
        };
        let server = |name: &str| NewAgentArgs { name: name.into(), server: true, ..Default::default() };
        refused(uses("fresh", "nothing"), "no protocol crate `nothing-protocol`");
        // An interface's name is taken too (`mute` is provided by the test program `mute`).
        refused(server("mute"), "taken");
        assert_eq!(existing.check_name(&args("fresh")), Ok(()));
        assert_eq!(existing.check_name(&server("fresh")), Ok(()));
        assert_eq!(existing.check_name(&uses("fresh", "kv")), Ok(()));
        assert!(existing.protocol("kv").unwrap().ends_with("agents/kv-protocol"));
        let both = NewAgentArgs { name: "s".into(), server: true, uses: Some("kv".into()), ..Default::default() };
        assert!(check_args(&both).unwrap_err().contains("--uses is for agents"));
    }

    /// The example crates in the repository are exactly what the command makes: the `kv` pair
    /// under `agents/` and the agent outside the workspace in `tests/outside`.
    #[test]
    fn the_examples_are_what_the_command_makes() {
        let ws = ws();
        let existing = Existing::gather(&ws).unwrap();
        let cases = [
            NewAgentArgs { name: "kv".into(), server: true, ..Default::default() },
            NewAgentArgs { name: "kv-client".into(), uses: Some("kv".into()), ..Default::default() },
            NewAgentArgs { name: "outside".into(), dir: Some(ws.root.join("tests/outside")), ..Default::default() },
        ];
        for a in cases {
            let layout = layout(&ws, &a, &existing).unwrap();
            for file in generate(&a, &layout) {
                let on_disk =
                    std::fs::read_to_string(&file.path).unwrap_or_else(|e| panic!("{}: {e}", file.path.display()));
                assert_eq!(on_disk, file.text, "{} differs from what new-agent makes", file.path.display());
            }
        }
    }

    #[test]
    fn layouts_in_and_out_of_the_workspace() {
        let ws = ws();
        let root = absolute(&ws.root).unwrap();
        let existing = Existing::gather(&ws).unwrap();
        let a = NewAgentArgs { name: "w".into(), server: true, ..Default::default() };
        let inside = layout(&ws, &a, &existing).unwrap();
        assert_eq!(inside.crate_dir, root.join("agents/w"));
        assert_eq!(inside.protocol_dir, Some(root.join("agents/w-protocol")));
        assert_eq!(inside.sdk_from_crate, "../../agent-sdk");
        assert_eq!(inside.sdk_from_protocol, "../../agent-sdk");
        assert_eq!(inside.description_path, None);
        let dir = root.parent().unwrap().join("elsewhere/w");
        let a = NewAgentArgs { name: "w".into(), server: true, dir: Some(dir.clone()), ..Default::default() };
        let outside = layout(&ws, &a, &existing).unwrap();
        assert_eq!(outside.protocol_dir, Some(dir.join("protocol")));
        let up = format!("../../{}/agent-sdk", root.file_name().unwrap().to_str().unwrap());
        assert_eq!(outside.sdk_from_crate, up);
        assert_eq!(outside.sdk_from_protocol, format!("../{up}"));
        assert_eq!(outside.description_path.as_deref(), Some("../elsewhere/w"));
        let files = generate(&a, &outside);
        let manifest = &files.iter().find(|f| f.path == dir.join("Cargo.toml")).unwrap().text;
        assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
        assert!(manifest.contains("w-protocol = { path = \"protocol\" }"), "{manifest}");
        assert!(
            files.iter().any(|f| f.path == dir.join(".cargo/config.toml") && f.text.contains("x86_64-unknown-none"))
        );
        // Under agents/, the workspace itself, above it: refused.
        for bad in [root.join("agents/x"), root.clone(), root.parent().unwrap().to_path_buf()] {
            let a = NewAgentArgs { name: "x".into(), dir: Some(bad.clone()), ..Default::default() };
            assert!(layout(&ws, &a, &existing).is_err(), "{}", bad.display());
        }
    }

    #[test]
    fn relative_paths() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(relative(&p("/a/b/c"), &p("/a/d")), "../../d");
        assert_eq!(relative(&p("/a/b"), &p("/a/b/c")), "c");
        assert_eq!(relative(&p("/a"), &p("/a")), ".");
        assert_eq!(relative(&p("/x/y"), &p("/z")), "../../z");
    }

    #[test]
    fn program_blocks() {
        let server = program_block(&NewAgentArgs { name: "kv".into(), server: true, ..Default::default() }, None);
        assert!(server.contains("kind = \"server\"") && server.contains("provides = [\"kv\"]"), "{server}");
        let a = NewAgentArgs { name: "c".into(), uses: Some("kv".into()), ..Default::default() };
        let client = program_block(&a, Some("../c"));
        assert!(client.contains("uses = [\"kv\", \"console\"]") && client.contains("path = \"../c\""), "{client}");
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    const BASE: &str = "[system]\nmemory_mib = 8\n\n[[program]]\nname = \"console\"\nbinary = \"console\"\n\
                        kind = \"server\"\npriority = 150\nmemory_kib = 1024\nprovides = [\"console\"]\n";
    const OVERLAY: &str =
        "[[program]]\nname = \"t\"\nbinary = \"t\"\nkind = \"agent\"\npriority = 100\nmemory_kib = 512\n";

    #[test]
    fn add_checks_the_description_first() {
        let block = program_block(&args("fresh"), Some("../fresh"));
        let text = appended(BASE, OVERLAY, &block).unwrap();
        assert!(text.starts_with(BASE) && text.ends_with(&block));
        let d = system::parse(system::SOURCE, &text).unwrap();
        assert_eq!(d.programs.len(), 2, "the path is xtask's: the description parses without it");
        // A client of an interface nobody provides, a name the overlay has, no memory left.
        let a = NewAgentArgs { name: "c".into(), uses: Some("kv".into()), ..Default::default() };
        let e = appended(BASE, OVERLAY, &program_block(&a, None)).unwrap_err();
        assert!(e.contains("nothing was created") && e.contains("uses unknown interface `kv`"), "{e}");
        let e = appended(BASE, OVERLAY, &program_block(&args("t"), None)).unwrap_err();
        assert!(e.contains("program `t` is already defined"), "{e}");
        let small = BASE.replace("memory_mib = 8", "memory_mib = 1");
        let e = appended(&small, OVERLAY, &program_block(&args("fresh"), None)).unwrap_err();
        assert!(e.contains("memory quotas add up"), "{e}");
    }

    #[test]
    fn arguments() {
        let parse = |a: &[&str]| crate::parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let all = NewAgentArgs { name: "kv".into(), server: true, uses: None, dir: Some("../kv".into()), add: true };
        assert_eq!(
            parse(&["new-agent", "kv", "--server", "--dir", "../kv", "--add"]),
            Ok(crate::Command::NewAgent(all))
        );
        let client = NewAgentArgs { name: "c".into(), uses: Some("kv".into()), ..Default::default() };
        assert_eq!(parse(&["new-agent", "c", "--uses=kv"]), Ok(crate::Command::NewAgent(client)));
        assert!(parse(&["new-agent"]).unwrap_err().contains("needs the program's name"));
        assert!(parse(&["new-agent", "--server"]).unwrap_err().contains("needs the program's name"));
        assert!(parse(&["new-agent", "a", "b"]).unwrap_err().contains("unexpected argument `b`"));
        assert!(parse(&["new-agent", "a", "--uses"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["new-agent", "a", "--uses", "x", "--uses", "y"]).unwrap_err().contains("once"));
        let e = parse(&["new-agent", "a", "--frob"]).unwrap_err();
        assert!(e.contains("unknown option `--frob` for `cargo xtask new-agent`"), "{e}");
    }

    /// A server, its protocol crate and a client made outside the workspace in a scratch
    /// directory build for the guest target (`cargo check`, offline: the copied lock file pins
    /// what the workspace already has), and rustfmt would change none of their files.
    #[test]
    fn crates_made_outside_the_workspace_build() {
        let ws = ws();
        let scratch = crate::scratch_dir("new-agent");
        let mut existing = Existing::gather(&ws).unwrap();
        let store =
            NewAgentArgs { name: "store".into(), server: true, dir: Some(scratch.join("store")), ..Default::default() };
        // The client finds the interface's crate outside the workspace, as --uses does.
        existing.protocols.push(("store-protocol".into(), scratch.join("store/protocol")));
        let user = NewAgentArgs {
            name: "store-user".into(),
            uses: Some("store".into()),
            dir: Some(scratch.join("user")),
            ..Default::default()
        };
        for (a, dir) in [(&store, "store"), (&user, "user")] {
            let layout = layout(&ws, a, &existing).unwrap();
            for file in generate(a, &layout) {
                crate::write_file(&file.path, file.text.as_bytes()).unwrap();
            }
            crate::copy_file(&ws.root.join("Cargo.lock"), &scratch.join(dir).join("Cargo.lock")).unwrap();
        }
        for dir in ["store", "user"] {
            let cargo = |args: &[&str]| {
                std::process::Command::new(build::cargo_program())
                    .current_dir(scratch.join(dir))
                    .args(args)
                    .env("CARGO_TARGET_DIR", ws.target().join("new-agent-check"))
                    .env_remove("RUSTFLAGS")
                    .env_remove("CARGO_ENCODED_RUSTFLAGS")
                    .status()
                    .unwrap()
                    .success()
            };
            assert!(cargo(&["check", "--offline", "--workspace", "--quiet"]), "cargo check in {dir}");
            let fmt = ["fmt", "--all", "--check", "--", "--config", "max_width=120,use_small_heuristics=Max"];
            assert!(cargo(&fmt), "rustfmt would change files made in {dir}");
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
}
