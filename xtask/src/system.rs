//! The system description: `initrd/system.toml` read, checked and compiled to `system.bin`, and
//! the test overlay `initrd/system-tests.toml` merged into it for the QEMU tests.
//!
//! The schema, the checks and the encoding live in the agent SDK
//! (`ozone_agent_sdk::protocol::system`), shared with Studio, which decodes the result. This
//! module adds what only the build knows: the file and its line numbers for syntax errors,
//! which binaries were built (a program naming any other is an error), the names xtask keeps
//! for itself in the initrd, the RAM of the QEMU machine the quotas must fit, and the overlay.
//!
//! **The default system is the system.** `initrd/system.toml` holds the system's own programs:
//! the servers and the agent SDK's examples, what `cargo xtask qemu` boots and `ps` lists. The
//! test programs (hostile agents, spinners, probes, checkers) are in the *test overlay*
//! [`TEST_OVERLAY`], which the QEMU tests (and `cargo xtask qemu --tests`) add: it holds
//! `[[program]]` blocks in the same form as the description's (moving a program there is a
//! cut and paste of its block) and at most one `[system]` value, `memory_mib`, the budget of the
//! merged system (never below the base's: an overlay adds, it takes nothing away). The merged
//! description is the base's programs unchanged, then the overlay's, in order ([`merge`]); a
//! name defined in both files is an error, and every check of the description applies to the
//! merged one ([`compile_with_overlay`]).
//!
//! Every problem is one line starting with the file's name; [`load`] joins them with newlines
//! and the caller prints each line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ozone_agent_sdk::protocol::system::{COMPILED_NAME, Program, SystemDescription};
use serde::Deserialize;

use crate::{Result, Workspace, initrd};

/// The description, relative to the workspace root.
pub const SOURCE: &str = "initrd/system.toml";

/// The test overlay, relative to the workspace root.
pub const TEST_OVERLAY: &str = "initrd/system-tests.toml";

/// Initrd entries xtask writes itself; no program's binary may be called that.
pub const RESERVED: [&str; 4] = [initrd::ROOT_TASK, initrd::SEED, initrd::STUDIO, COMPILED_NAME];

/// RAM of the machine that Studio cannot hand out as quotas: firmware and low memory, the kernel
/// and its object pool, the root task and Studio themselves (the kernel reports about 473 of
/// 512 MiB as the root task's untyped memory).
pub const RESERVED_MIB: u32 = 64;

/// A checked and compiled system description.
#[derive(Clone, Debug)]
pub struct System {
    /// Where it comes from: [`SOURCE`], or `SOURCE + TEST_OVERLAY`.
    pub source: String,
    pub description: SystemDescription,
    /// The description in postcard: `system.bin` in the initrd.
    pub compiled: Vec<u8>,
    /// Every binary the description names, once each in order of first mention: the initrd
    /// entry name (the `binary` field) and the built file.
    pub binaries: Vec<(String, PathBuf)>,
}

/// A test overlay: programs added to the system description, and the budget of the whole.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// The `[system]` values the overlay may set.
    #[serde(default)]
    pub system: OverlaySettings,
    /// The programs it adds, as `[[program]]` blocks of the description's form.
    #[serde(default, rename = "program")]
    pub programs: Vec<Program>,
    /// Interfaces it adds to the `uses` of programs of the base (`[[uses]]` blocks): how a test
    /// server joins the interfaces the shaper shapes, say. Nothing else of a base program changes.
    #[serde(default)]
    pub uses: Vec<ExtraUses>,
}

/// An `[[uses]]` block of the overlay: `interfaces` added to the `uses` of the base's `program`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraUses {
    pub program: String,
    pub interfaces: Vec<String>,
}

/// What an overlay may say about the whole system: its memory budget, which the added programs'
/// quotas need. Nothing else of `[system]` (the tests run the system's own settings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlaySettings {
    /// Replaces the base's `memory_mib`; at least the base's.
    pub memory_mib: Option<u32>,
}

/// Read `initrd/system.toml` and compile it against `programs`, the built userspace programs by
/// binary name, for a QEMU machine of `machine_mib` MiB. Errors are lines `initrd/system.toml: ...`.
pub fn load(ws: &Workspace, programs: &BTreeMap<String, PathBuf>, machine_mib: u32) -> Result<System> {
    let text = read(ws, SOURCE)?;
    compile(SOURCE, &text, programs, machine_mib).map_err(|errors| errors.join("\n"))
}

/// Read `initrd/system.toml` with the test overlay `initrd/system-tests.toml` merged into it, and
/// compile the result as [`load`] does. Errors name the file they are about.
pub fn load_with_tests(ws: &Workspace, programs: &BTreeMap<String, PathBuf>, machine_mib: u32) -> Result<System> {
    let base = read(ws, SOURCE)?;
    let overlay = read(ws, TEST_OVERLAY)?;
    compile_with_overlay((SOURCE, &base), (TEST_OVERLAY, &overlay), programs, machine_mib)
        .map_err(|errors| errors.join("\n"))
}

/// Read `initrd/system.toml` with another overlay merged into it (`cargo xtask qemu --overlay
/// FILE`: `initrd/system-scenarios.toml`, say), and compile the result as [`load`] does. `file`
/// is taken from the current directory if it is there, else from the workspace root; errors
/// name it as given. The overlay has the test overlay's form and rules (it may not name a crate
/// outside the workspace with `path`: only the two files' crates are built).
pub fn load_with_overlay(
    ws: &Workspace,
    file: &Path,
    programs: &BTreeMap<String, PathBuf>,
    machine_mib: u32,
) -> Result<System> {
    let label = file.display().to_string();
    let full = if file.is_absolute() || file.exists() { file.to_path_buf() } else { ws.root.join(file) };
    let overlay =
        std::fs::read_to_string(&full).map_err(|e| format!("{label}: cannot read {}: {e}", full.display()))?;
    if !crate::build::Located::strip(&label, &overlay)?.1.is_empty() {
        return Err(format!("{label}: `path` (a crate outside the workspace) is for {SOURCE} and {TEST_OVERLAY} only"));
    }
    let base = read(ws, SOURCE)?;
    compile_with_overlay((SOURCE, &base), (&label, &overlay), programs, machine_mib).map_err(|errors| errors.join("\n"))
}

/// The text of the file `relative` to the workspace root.
fn read(ws: &Workspace, relative: &str) -> Result<String> {
    let path = ws.root.join(relative);
    std::fs::read_to_string(&path).map_err(|e| format!("{relative}: cannot read {}: {e}", path.display()))
}

/// Parse, check and encode the description `text`, read from the file called `label`.
/// Returns every problem found, each one line starting with `label`.
pub fn compile(
    label: &str,
    text: &str,
    programs: &BTreeMap<String, PathBuf>,
    machine_mib: u32,
) -> Result<System, Vec<String>> {
    let description = parse(label, text).map_err(|e| vec![e])?;
    check(label.to_string(), description, &|_| label, programs, machine_mib)
}

/// Parse the description `base` and the overlay `overlay` (each a file's label and text), merge
/// them ([`merge`]), then check and encode the result as [`compile`] does. A problem with one
/// program is reported against the file that defines it; one with the whole (the memory budget,
/// the number of programs) against both, `base + overlay`.
pub fn compile_with_overlay(
    base: (&str, &str),
    overlay: (&str, &str),
    programs: &BTreeMap<String, PathBuf>,
    machine_mib: u32,
) -> Result<System, Vec<String>> {
    let (base_label, overlay_label) = (base.0, overlay.0);
    let base = parse(base_label, base.1);
    let overlay = parse_overlay(overlay_label, overlay.1);
    let (base, overlay) = match (base, overlay) {
        (Ok(base), Ok(overlay)) => (base, overlay),
        (base, overlay) => return Err(base.err().into_iter().chain(overlay.err()).collect()),
    };
    let merged = merge(&base, base_label, &overlay, overlay_label)?;
    let both = format!("{base_label} + {overlay_label}");
    let label_of = |error: &str| -> &str {
        let named = error.strip_prefix("program `").and_then(|rest| rest.split_once('`')).map(|(name, _)| name);
        match named {
            Some(name) if overlay.programs.iter().any(|p| p.name == name) => overlay_label,
            Some(name) if base.programs.iter().any(|p| p.name == name) => base_label,
            _ => &both,
        }
    };
    check(both.clone(), merged, &label_of, programs, machine_mib)
}

/// The description `base` with the overlay's programs added after its own and the overlay's
/// `memory_mib`, if it has one. Refused, with one line per problem: a program name both files
/// define, an overlay that adds no program, a budget below the base's.
pub fn merge(
    base: &SystemDescription,
    base_label: &str,
    overlay: &Overlay,
    overlay_label: &str,
) -> Result<SystemDescription, Vec<String>> {
    let mut errors = Vec::new();
    if overlay.programs.is_empty() {
        errors.push(format!("{overlay_label}: the overlay adds no programs"));
    }
    for p in &overlay.programs {
        if base.program(&p.name).is_some() {
            errors.push(format!(
                "{overlay_label}: program `{}` is already defined in {base_label} (an overlay adds programs; it \
                 cannot replace or change the system's own)",
                p.name
            ));
        }
    }
    let mut merged = base.clone();
    for extra in &overlay.uses {
        match merged.programs.iter_mut().find(|p| p.name == extra.program) {
            Some(p) => {
                for i in &extra.interfaces {
                    if !p.uses.contains(i) {
                        p.uses.push(i.clone());
                    }
                }
            }
            None => errors.push(format!(
                "{overlay_label}: [[uses]] names program `{}`, which {base_label} does not define (an overlay adds \
                 interfaces to the uses of the system's own programs only)",
                extra.program
            )),
        }
    }
    if let Some(memory_mib) = overlay.system.memory_mib {
        if memory_mib < base.system.memory_mib {
            errors.push(format!(
                "{overlay_label}: [system] memory_mib = {memory_mib} is below {base_label}'s {} (an overlay adds \
                 memory for its programs, it takes none from the system's)",
                base.system.memory_mib
            ));
        }
        merged.system.memory_mib = memory_mib;
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    merged.programs.extend(overlay.programs.iter().cloned());
    Ok(merged)
}

/// Check `description` (validation, the binaries built, the names xtask keeps, the machine's
/// memory) and encode it. Each problem becomes one line prefixed with the file `label_of` gives
/// for it; `source` names the whole.
fn check<'a>(
    source: String,
    description: SystemDescription,
    label_of: &dyn Fn(&str) -> &'a str,
    programs: &BTreeMap<String, PathBuf>,
    machine_mib: u32,
) -> Result<System, Vec<String>> {
    let mut errors: Vec<String> = Vec::new();
    let built = |binary: &str| programs.contains_key(binary);
    if let Err(found) = description.validate(&built) {
        errors.extend(found.iter().map(|e| format!("{}: {e}", label_of(e))));
    }
    if description.programs.iter().any(|p| !built(&p.binary)) {
        let names: Vec<&str> = programs.keys().map(String::as_str).collect();
        errors.push(format!("{source}: the userspace programs built are: {}", names.join(", ")));
    }
    for p in &description.programs {
        let e = format!(
            "program `{}`: binary `{}` is an initrd entry xtask writes itself ({})",
            p.name,
            p.binary,
            RESERVED.join(", ")
        );
        if RESERVED.contains(&p.binary.as_str()) {
            errors.push(format!("{}: {e}", label_of(&e)));
        }
    }
    let limit = machine_mib.saturating_sub(RESERVED_MIB);
    if description.system.memory_mib > limit {
        errors.push(format!(
            "{source}: [system] memory_mib = {} does not fit the {machine_mib} MiB QEMU machine: at most {limit} MiB \
             ({RESERVED_MIB} MiB go to the firmware, the kernel, the root task and Studio)",
            description.system.memory_mib
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let compiled = description.to_postcard();
    if SystemDescription::from_postcard(&compiled).as_ref() != Ok(&description) {
        return Err(vec![format!("{source}: the description does not survive its postcard encoding")]);
    }
    let mut binaries: Vec<(String, PathBuf)> = Vec::new();
    for p in &description.programs {
        if !binaries.iter().any(|(name, _)| *name == p.binary) {
            binaries.push((p.binary.clone(), programs[&p.binary].clone()));
        }
    }
    Ok(System { source, description, compiled, binaries })
}

/// Parse the overlay TOML of the file `label`; errors as [`parse`]'s.
pub fn parse_overlay(label: &str, text: &str) -> Result<Overlay> {
    // A program's `path` (a crate outside the workspace) is xtask's alone: see `build`.
    let (text, _) = crate::build::Located::strip(label, text)?;
    toml::from_str(&text).map_err(|e| toml_error(label, &text, &e))
}

/// Parse the TOML of the file `label`: a syntax or schema error becomes one line
/// `label:LINE:COLUMN: message`.
pub fn parse(label: &str, text: &str) -> Result<SystemDescription> {
    // A program's `path` (a crate outside the workspace) is xtask's alone: see `build`.
    let (text, _) = crate::build::Located::strip(label, text)?;
    toml::from_str(&text).map_err(|e| toml_error(label, &text, &e))
}

/// A TOML error of the file `label` as one line `label:LINE:COLUMN: message`.
fn toml_error(label: &str, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("{label}:{line}:{column}: {message}")
        }
        None => format!("{label}: {message}"),
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use ozone_agent_sdk::protocol::system::{Kind, Privilege, Restart};

    const LABEL: &str = "initrd/system.toml";

    fn programs(names: &[&str]) -> BTreeMap<String, PathBuf> {
        names.iter().map(|n| (n.to_string(), PathBuf::from(format!("/built/{n}")))).collect()
    }

    fn compile_ok(text: &str) -> System {
        match compile(LABEL, text, &programs(&["hello", "console", "shell", "studio"]), 512) {
            Ok(system) => system,
            Err(errors) => panic!("{errors:#?}"),
        }
    }

    fn compile_err(text: &str) -> Vec<String> {
        let errors = compile(LABEL, text, &programs(&["hello", "console", "shell", "studio"]), 512).unwrap_err();
        for e in &errors {
            assert!(e.starts_with(LABEL), "not prefixed with the file name: {e}");
            assert!(!e.contains('\n'), "not one line: {e}");
        }
        errors
    }

    fn has(errors: &[String], needle: &str) {
        assert!(errors.iter().any(|e| e.contains(needle)), "no `{needle}` in {errors:#?}");
    }

    const GOOD: &str = r#"
[system]
memory_mib = 192

[[program]]
name = "console"
binary = "console"
kind = "server"
priority = 150
memory_kib = 2048
provides = ["console"]
devices = ["serial"]

[[program]]
name = "shell"
binary = "shell"
kind = "server"
priority = 120
memory_kib = 2048
uses = ["console"]
privileges = ["admin"]
restart = true

[[program]]
name = "hello"
binary = "hello"
kind = "agent"
priority = 100
memory_kib = 1024

[[program]]
name = "hello-again"
binary = "hello"
kind = "agent"
priority = 100
memory_kib = 1024
start = false
"#;

    #[test]
    fn a_good_file_compiles_and_round_trips() {
        let system = compile_ok(GOOD);
        let d = &system.description;
        assert_eq!(d.system.memory_mib, 192);
        assert_eq!(d.system.shaper_warmup, 64, "the default warm-up");
        assert_eq!(d.programs.len(), 4);
        assert_eq!(d.programs[0].kind, Kind::Server);
        assert_eq!(d.programs[1].uses, ["console"]);
        assert!(d.programs[1].restart == Restart::Always && d.programs[1].has_privilege(Privilege::Admin));
        assert_eq!(d.programs[0].restart, Restart::Never, "the default");
        assert!(d.programs[2].start && !d.programs[3].start);
        assert_eq!(SystemDescription::from_postcard(&system.compiled).unwrap(), *d);
        // Each binary once, in order of first mention.
        let binaries: Vec<(&str, &str)> =
            system.binaries.iter().map(|(n, p)| (n.as_str(), p.to_str().unwrap())).collect();
        assert_eq!(binaries, [("console", "/built/console"), ("shell", "/built/shell"), ("hello", "/built/hello")]);
    }

    #[test]
    fn restart_takes_a_policy_or_a_boolean_and_nothing_else() {
        let with = |value: &str| GOOD.replace("restart = true", &format!("restart = {value}"));
        for (value, want) in [
            ("true", Restart::Always),
            ("false", Restart::Never),
            (r#""never""#, Restart::Never),
            (r#""on-failure""#, Restart::OnFailure),
            (r#""always""#, Restart::Always),
        ] {
            assert_eq!(parse("system.toml", &with(value)).unwrap().programs[1].restart, want, "{value}");
        }
        for bad in [r#""sometimes""#, r#""Always""#, "1", r#"["always"]"#] {
            let e = parse("system.toml", &with(bad)).unwrap_err();
            assert!(e.starts_with("system.toml:22:"), "{bad}: {e}");
            assert!(e.contains("restart policy"), "{bad}: {e}");
        }
        let e = parse("system.toml", &with(r#""sometimes""#)).unwrap_err();
        assert!(
            e.contains(r#"unknown restart policy `sometimes` (known: "never", "on-failure", "always", true, false)"#)
        );
    }

    #[test]
    fn the_committed_description_is_well_formed() {
        let text = std::fs::read_to_string(Workspace::locate().root.join(SOURCE)).unwrap();
        let d = parse(SOURCE, &text).unwrap();
        // Which binaries exist depends on the build; everything else must hold.
        assert_eq!(d.validate(&|_| true), Ok(()));
        assert!(d.system.memory_mib <= crate::qemu::MEMORY_MIB - RESERVED_MIB);
        // The system's own programs: the servers and the agent SDK's examples.
        for own in
            ["console", "secmem", "shaper", "shaper-tick", "timer", "echo", "hello", "echo-client", "memory-user"]
        {
            assert!(d.program(own).is_some(), "{own} not in {SOURCE}");
        }
    }

    #[test]
    fn every_validation_error_names_the_file() {
        let text = r#"
[system]
memory_mib = 1

[[program]]
name = "Bad Name"
binary = "missing"
kind = "agent"
priority = 0
memory_kib = 16
uses = ["nosuch"]
devices = ["gpu"]

[[program]]
name = "hello"
binary = "hello"
kind = "server"
priority = 100
memory_kib = 1024
provides = ["studio", "x"]
devices = ["serial"]

[[program]]
name = "hello"
binary = "studio"
kind = "server"
priority = 200
memory_kib = 1024
provides = ["x"]
devices = ["serial"]
"#;
        let errors = compile_err(text);
        for needle in [
            "program `Bad Name`: a name is 1 to",
            "unknown binary `missing`",
            "the userspace programs built are: console, hello, shell, studio",
            "priority 0 is outside",
            "priority 200 is outside",
            "memory_kib 16 is below the minimum",
            "uses unknown interface `nosuch`",
            "unknown device `gpu`",
            "duplicate name",
            "cannot provide an interface named `studio`",
            "interface `x` is already provided by `hello`",
            "device `serial` is already given",
            "binary `studio` is an initrd entry xtask writes itself",
            "beyond the system's memory_mib = 1",
        ] {
            has(&errors, needle);
        }
        assert!(compile_err("[system]\nmemory_mib = 1\n").iter().any(|e| e.contains("has no programs")));
    }

    #[test]
    fn an_unknown_privilege_stops_the_build_at_its_line() {
        let text = GOOD.replacen("privileges = [\"admin\"]", "privileges = [\"root\"]", 1);
        let errors = compile_err(&text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].starts_with("initrd/system.toml:21:15: "), "{errors:#?}");
        has(&errors, "unknown privilege `root` (known: admin, vspaces, profiles, clients, journal, keeper)");
    }

    #[test]
    fn an_agent_in_the_servers_band_stops_the_build() {
        // The agent that outranked every server and hung the shell: refused, with the bands.
        let text = GOOD.replacen("kind = \"agent\"\npriority = 100", "kind = \"agent\"\npriority = 199", 1);
        let errors = compile_err(&text);
        assert_eq!(
            errors,
            vec![format!(
                "{LABEL}: program `hello`: priority 199 is in the servers' band (120..=199); an agent's priority is \
                 1..=119"
            )]
        );
        compile_ok(&GOOD.replacen("kind = \"agent\"\npriority = 100", "kind = \"agent\"\npriority = 119", 1));
    }

    #[test]
    fn memory_must_fit_the_machine() {
        let text = GOOD.replace("memory_mib = 192", "memory_mib = 449");
        let errors = compile_err(&text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        has(&errors, "memory_mib = 449 does not fit the 512 MiB QEMU machine: at most 448 MiB");
        compile_ok(&GOOD.replace("memory_mib = 192", "memory_mib = 448"));
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let errors = compile_err("[system]\nmemory_mib = 192\n\n[[program]\nname = \"x\"\n");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].starts_with("initrd/system.toml:4:"), "{}", errors[0]);
        let errors = compile_err("[system]\nmemory_mib = \"lots\"\n");
        assert!(errors[0].starts_with("initrd/system.toml:2:14: "), "{}", errors[0]);
        has(&errors, "invalid type");
        // A missing field is reported where its table starts.
        let text = GOOD.replace("name = \"shell\"\nbinary = \"shell\"\n", "name = \"shell\"\n");
        let header = text.lines().position(|l| l == "name = \"shell\"").unwrap();
        let errors = compile_err(&text);
        assert!(errors[0].starts_with(&format!("initrd/system.toml:{header}:1: missing field `binary`")), "{errors:?}");
        let errors = compile_err(GOOD.trim_start().strip_prefix("[system]\nmemory_mib = 192\n").unwrap());
        has(&errors, "missing field `system`");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text =
            GOOD.replace("memory_kib = 1024\nstart = false", "memory_kib = 1024\nstart = false\ncolour = \"red\"");
        let errors = compile_err(&text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let line = text.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
        assert!(
            errors[0].starts_with(&format!("initrd/system.toml:{line}:1: unknown field `colour`")),
            "{}",
            errors[0]
        );
        has(&compile_err(&GOOD.replace("memory_mib = 192", "memory_mib = 192\nswap = 1")), "unknown field `swap`");
        has(&compile_err(&format!("{GOOD}\n[extra]\na = 1\n")), "unknown field `extra`");
    }

    const OVERLAY_LABEL: &str = "initrd/system-tests.toml";

    /// Two test programs; the budget raised for them.
    const OVERLAY: &str = r#"
[system]
memory_mib = 256

[[program]]
name = "spinner"
binary = "hello"
kind = "agent"
priority = 100
memory_kib = 512
start = false

[[program]]
name = "hostile"
binary = "hello"
kind = "agent"
priority = 100
memory_kib = 512
uses = ["console"]
privileges = ["admin"]
start = false
"#;

    fn overlay_ok(base: &str, overlay: &str) -> System {
        let built = programs(&["hello", "console", "shell", "studio"]);
        match compile_with_overlay((LABEL, base), (OVERLAY_LABEL, overlay), &built, 512) {
            Ok(system) => system,
            Err(errors) => panic!("{errors:#?}"),
        }
    }

    fn overlay_err(base: &str, overlay: &str) -> Vec<String> {
        let built = programs(&["hello", "console", "shell", "studio"]);
        let errors = compile_with_overlay((LABEL, base), (OVERLAY_LABEL, overlay), &built, 512).unwrap_err();
        for e in &errors {
            assert!(e.starts_with(LABEL) || e.starts_with(OVERLAY_LABEL), "not prefixed with a file name: {e}");
            assert!(!e.contains('\n'), "not one line: {e}");
        }
        errors
    }

    #[test]
    fn the_overlay_adds_its_programs_after_the_base_unchanged() {
        let base = compile_ok(GOOD);
        let merged = overlay_ok(GOOD, OVERLAY);
        let (b, m) = (&base.description, &merged.description);
        assert_eq!(merged.source, "initrd/system.toml + initrd/system-tests.toml");
        assert_eq!(base.source, "initrd/system.toml");
        // The base's programs first, each exactly as the base has it; then the overlay's, in order.
        assert_eq!(m.programs[..b.programs.len()], b.programs[..]);
        let added: Vec<&str> = m.programs[b.programs.len()..].iter().map(|p| p.name.as_str()).collect();
        assert_eq!(added, ["spinner", "hostile"]);
        let hostile = m.program("hostile").unwrap();
        assert!(
            hostile.has_privilege(ozone_agent_sdk::protocol::system::Privilege::Admin)
                && hostile.may_use("console")
                && !hostile.start
        );
        // The one [system] value the overlay may set; the rest stays the base's.
        assert_eq!(m.system.memory_mib, 256);
        assert_eq!(m.system.shaper_warmup, b.system.shaper_warmup);
        // The base compiled alone is untouched by the overlay: no test program in it.
        assert_eq!(b.system.memory_mib, 192);
        assert!(b.program("spinner").is_none() && b.program("hostile").is_none());
        assert_eq!(SystemDescription::from_postcard(&merged.compiled).unwrap(), *m);
        assert_ne!(base.compiled, merged.compiled);
        // Without a [system] table the base's budget holds.
        let no_system = OVERLAY.replace("[system]\nmemory_mib = 256\n", "");
        assert_eq!(overlay_ok(GOOD, &no_system).description.system.memory_mib, 192);
    }

    #[test]
    fn the_overlay_adds_interfaces_to_a_base_programs_uses_and_nothing_else() {
        let overlay = format!("{OVERLAY}\n[[uses]]\nprogram = \"hello\"\ninterfaces = [\"console\"]\n");
        let base = compile_ok(GOOD);
        let merged = overlay_ok(GOOD, &overlay);
        let (b, m) = (base.description.program("hello").unwrap(), merged.description.program("hello").unwrap());
        assert!(!b.may_use("console") && m.may_use("console"));
        let mut same = m.clone();
        same.uses.retain(|u| u != "console");
        assert_eq!(&same, b, "only its `uses` changed");
        // Not twice, if named twice.
        let twice = format!("{overlay}\n[[uses]]\nprogram = \"hello\"\ninterfaces = [\"console\"]\n");
        let m = overlay_ok(GOOD, &twice).description;
        assert_eq!(m.program("hello").unwrap().uses.iter().filter(|u| *u == "console").count(), 1);
        // A program the base does not define (the overlay's own say what they use themselves).
        for name in ["nosuch", "spinner"] {
            let bad = format!("{OVERLAY}\n[[uses]]\nprogram = \"{name}\"\ninterfaces = [\"console\"]\n");
            has(&overlay_err(GOOD, &bad), &format!("{OVERLAY_LABEL}: [[uses]] names program `{name}`, which"));
        }
        // An interface nobody provides: the description's own check.
        let unknown = format!("{OVERLAY}\n[[uses]]\nprogram = \"hello\"\ninterfaces = [\"nosuch\"]\n");
        has(&overlay_err(GOOD, &unknown), "program `hello`: uses unknown interface `nosuch`");
    }

    #[test]
    fn a_name_in_both_files_is_refused() {
        let overlay = OVERLAY.replace("name = \"hostile\"", "name = \"console\"");
        let errors = overlay_err(GOOD, &overlay);
        assert_eq!(
            errors,
            [format!(
                "{OVERLAY_LABEL}: program `console` is already defined in {LABEL} (an overlay adds programs; it \
                 cannot replace or change the system's own)"
            )]
        );
        // Twice in the overlay: the description's own check, against the overlay.
        let twice = OVERLAY.replace("name = \"hostile\"", "name = \"spinner\"");
        assert_eq!(overlay_err(GOOD, &twice), [format!("{OVERLAY_LABEL}: program `spinner`: duplicate name")]);
    }

    #[test]
    fn the_descriptions_checks_apply_to_the_merged_one() {
        // An agent of the overlay in the servers' band, an interface nobody provides, a binary
        // not built: each reported against the overlay.
        let overlay = OVERLAY
            .replacen("priority = 100", "priority = 150", 1)
            .replace("uses = [\"console\"]", "uses = [\"nosuch\"]")
            .replacen("binary = \"hello\"", "binary = \"missing\"", 1);
        let errors = overlay_err(GOOD, &overlay);
        for needle in [
            "initrd/system-tests.toml: program `spinner`: priority 150 is in the servers' band",
            "initrd/system-tests.toml: program `hostile`: uses unknown interface `nosuch`",
            "initrd/system-tests.toml: program `spinner`: unknown binary `missing`",
            "initrd/system.toml + initrd/system-tests.toml: the userspace programs built are: ",
        ] {
            has(&errors, needle);
        }
        // The quotas of the merged system must fit its budget: the base's 6 MiB and the
        // overlay's 1 MiB do not fit 6 MiB.
        let tight = GOOD.replace("memory_mib = 192", "memory_mib = 6");
        compile_ok(&tight);
        let errors = overlay_err(&tight, &OVERLAY.replace("memory_mib = 256", "memory_mib = 6"));
        assert_eq!(
            errors,
            [format!(
                "{LABEL} + {OVERLAY_LABEL}: the memory quotas add up to 7168 KiB, beyond the system's memory_mib = 6 \
                 (6144 KiB)"
            )]
        );
        // The merged budget must fit the machine.
        has(
            &overlay_err(GOOD, &OVERLAY.replace("memory_mib = 256", "memory_mib = 449")),
            "initrd/system.toml + initrd/system-tests.toml: [system] memory_mib = 449 does not fit the 512 MiB",
        );
        // A reserved binary name in the overlay.
        has(
            &overlay_err(GOOD, &OVERLAY.replacen("binary = \"hello\"", "binary = \"studio\"", 1)),
            "initrd/system-tests.toml: program `spinner`: binary `studio` is an initrd entry xtask writes itself",
        );
    }

    #[test]
    fn the_overlay_only_adds() {
        // A budget below the base's.
        has(
            &overlay_err(GOOD, &OVERLAY.replace("memory_mib = 256", "memory_mib = 128")),
            "initrd/system-tests.toml: [system] memory_mib = 128 is below initrd/system.toml's 192",
        );
        // No other [system] value, and nothing but [system] and [[program]].
        let warmup = OVERLAY.replace("memory_mib = 256", "memory_mib = 256\nshaper_warmup = 1");
        let errors = overlay_err(GOOD, &warmup);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].starts_with("initrd/system-tests.toml:4:1: unknown field `shaper_warmup`"), "{errors:?}");
        has(&overlay_err(GOOD, &format!("{OVERLAY}\n[extra]\na = 1\n")), "unknown field `extra`");
        // An overlay that adds nothing is a mistake, said so.
        assert_eq!(
            overlay_err(GOOD, "[system]\nmemory_mib = 256\n"),
            [format!("{OVERLAY_LABEL}: the overlay adds no programs")]
        );
        // Syntax errors in either file, each with its file, line and column.
        let errors = overlay_err("[system\n", "[[program]\n");
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].starts_with("initrd/system.toml:1:"), "{errors:?}");
        assert!(errors[1].starts_with("initrd/system-tests.toml:1:"), "{errors:?}");
    }

    #[test]
    fn the_committed_overlay_is_well_formed_and_adds_only_test_programs() {
        let root = Workspace::locate().root;
        let base = std::fs::read_to_string(root.join(SOURCE)).unwrap();
        let text = std::fs::read_to_string(root.join(TEST_OVERLAY)).unwrap();
        let overlay = parse_overlay(TEST_OVERLAY, &text).unwrap();
        let base = parse(SOURCE, &base).unwrap();
        let merged = merge(&base, SOURCE, &overlay, TEST_OVERLAY).unwrap();
        assert_eq!(merged.validate(&|_| true), Ok(()));
        assert!(merged.system.memory_mib <= crate::qemu::MEMORY_MIB - RESERVED_MIB);
        // What `cargo xtask qemu` boots holds no test program, and the tests' programs are there.
        for test_program in ["spinner", "hostile", "crasher", "lifecycle", "shaper-victim", "spawn-bench"] {
            assert!(base.program(test_program).is_none(), "{test_program} in {SOURCE}");
            assert!(merged.program(test_program).is_some(), "{test_program} not in {TEST_OVERLAY}");
        }
    }

    #[test]
    fn a_programs_seed_is_optional_and_reaches_the_compiled_description() {
        // None given: 0.
        let base = compile_ok(GOOD);
        assert!(base.description.programs.iter().all(|p| p.seed == 0));
        // Given, in decimal or hex: in `system.bin` as written.
        let text = GOOD.replacen("name = \"hello\"\n", "name = \"hello\"\nseed = 0x5eed_0001\n", 1);
        let seeded = compile_ok(&text);
        assert_eq!(seeded.description.program("hello").unwrap().seed, 0x5eed_0001);
        assert_eq!(seeded.description.program("console").unwrap().seed, 0);
        assert_eq!(SystemDescription::from_postcard(&seeded.compiled).unwrap(), seeded.description);
        assert_ne!(seeded.compiled, base.compiled);
        let biggest = GOOD.replacen("name = \"hello\"\n", "name = \"hello\"\nseed = 9223372036854775807\n", 1);
        assert_eq!(compile_ok(&biggest).description.program("hello").unwrap().seed, i64::MAX as u64);
        // Not a number, or negative: refused at its line.
        for bad in ["seed = \"lots\"", "seed = -1", "seed = 1.5"] {
            let text = GOOD.replacen("name = \"hello\"\n", &format!("name = \"hello\"\n{bad}\n"), 1);
            let line = text.lines().position(|l| l == bad).unwrap() + 1;
            let errors = compile_err(&text);
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert!(errors[0].starts_with(&format!("{LABEL}:{line}:")), "{bad}: {errors:?}");
        }
        // In an overlay too.
        let overlay = OVERLAY.replacen("name = \"spinner\"\n", "name = \"spinner\"\nseed = 77\n", 1);
        assert_eq!(overlay_ok(GOOD, &overlay).description.program("spinner").unwrap().seed, 77);
    }

    /// The scenario overlay, relative to the workspace root.
    const SCENARIOS: &str = "initrd/system-scenarios.toml";

    /// Every binary named by `texts`' `[[program]]` blocks, as if built.
    fn named_binaries(texts: &[&str]) -> BTreeMap<String, PathBuf> {
        let mut built = BTreeMap::new();
        for text in texts {
            let table: toml::Table = toml::from_str(&build::Located::strip("x", text).unwrap().0).unwrap();
            for p in table["program"].as_array().unwrap() {
                let b = p["binary"].as_str().unwrap();
                built.insert(b.to_string(), PathBuf::from(format!("/built/{b}")));
            }
        }
        built
    }

    #[test]
    fn the_scenario_overlay_compiles_with_the_system_and_gives_every_program_a_seed() {
        let ws = Workspace::locate();
        let base = std::fs::read_to_string(ws.root.join(SOURCE)).unwrap();
        let text = std::fs::read_to_string(ws.root.join(SCENARIOS)).unwrap();
        let built = named_binaries(&[&base, &text]);
        let system = load_with_overlay(&ws, Path::new(SCENARIOS), &built, crate::qemu::MEMORY_MIB).unwrap();
        assert_eq!(system.source, format!("{SOURCE} + {SCENARIOS}"));
        let added: Vec<&Program> = system.description.programs.iter().filter(|p| p.name.starts_with("sc-")).collect();
        assert!(added.len() >= 20, "{}", added.len());
        let mut seeds: Vec<u64> = added.iter().map(|p| p.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        assert_eq!(seeds.len(), added.len(), "one seed each, none twice");
        assert!(!seeds.contains(&0));
        // Every scenario binary is one of the scenario crate's, and an agent.
        let manifest = std::fs::read_to_string(ws.root.join("agents/scenarios/Cargo.toml")).unwrap();
        for p in &added {
            assert!(manifest.contains(&format!("name = \"{}\"", p.binary)), "{}: {}", p.name, p.binary);
            assert_eq!(p.kind, Kind::Agent, "{}", p.name);
        }
        // The system `cargo xtask qemu` boots is untouched.
        assert!(parse(SOURCE, &base).unwrap().programs.iter().all(|p| !p.name.starts_with("sc-")));
    }

    /// The overlay of QEMU test `studio_respond` compiles with the system, and its responses are
    /// read: the flood and the client answerable up to kill, everything else at the system's
    /// default (alert), suspended agents killed after the default 30 s.
    #[test]
    fn the_respond_overlay_compiles_and_sets_the_responses() {
        use ozone_agent_sdk::protocol::system::Response;
        const RESPOND: &str = "initrd/system-respond.toml";
        let ws = Workspace::locate();
        let base = std::fs::read_to_string(ws.root.join(SOURCE)).unwrap();
        let text = std::fs::read_to_string(ws.root.join(RESPOND)).unwrap();
        let built = named_binaries(&[&base, &text]);
        let system = load_with_overlay(&ws, Path::new(RESPOND), &built, crate::qemu::MEMORY_MIB).unwrap();
        let d = &system.description;
        assert_eq!((d.system.respond, d.system.suspend_seconds), (Response::Alert, 30));
        assert_eq!(d.program("resp-flood").unwrap().respond, Some(Response::Kill));
        assert_eq!(d.program("resp-client").unwrap().respond, Some(Response::Kill));
        assert_eq!(d.program("sc-rr-server").unwrap().respond, None);
        // A response that is none of the six is refused, naming the file.
        let dir = crate::scratch_dir("respond");
        let file = dir.join("bad.toml");
        std::fs::write(&file, text.replacen("respond = \"kill\"", "respond = \"maim\"", 1)).unwrap();
        let e = load_with_overlay(&ws, &file, &built, crate::qemu::MEMORY_MIB).err().unwrap();
        assert!(e.contains("maim") && e.contains("bad.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_overlay_is_read_named_and_checked_like_the_tests() {
        let ws = Workspace::locate();
        let base = std::fs::read_to_string(ws.root.join(SOURCE)).unwrap();
        let dir = crate::scratch_dir("overlay");
        let file = dir.join("extra.toml");
        let built = named_binaries(&[&base]);
        // A program of the base again: refused, naming the file as given.
        std::fs::write(
            &file,
            "[[program]]\nname = \"hello\"\nbinary = \"hello\"\nkind = \"agent\"\npriority = 100\nmemory_kib = 512\n",
        )
        .unwrap();
        let e = load_with_overlay(&ws, &file, &built, 512).unwrap_err();
        assert!(e.starts_with(&format!("{}: program `hello` is already defined in {SOURCE}", file.display())), "{e}");
        // A new one, with a seed: added.
        std::fs::write(&file, "[[program]]\nname = \"hi\"\nbinary = \"hello\"\nkind = \"agent\"\npriority = 100\nmemory_kib = 512\nseed = 5\n")
            .unwrap();
        let s = load_with_overlay(&ws, &file, &built, 512).unwrap();
        assert_eq!(s.description.program("hi").unwrap().seed, 5);
        // A crate outside the workspace: only the two files' crates are built.
        std::fs::write(&file, "[[program]]\nname = \"hi\"\nbinary = \"hello\"\npath = \"elsewhere\"\nkind = \"agent\"\npriority = 100\nmemory_kib = 512\n")
            .unwrap();
        assert!(
            load_with_overlay(&ws, &file, &built, 512).unwrap_err().contains("`path` (a crate outside the workspace)")
        );
        // No such file.
        let missing = dir.join("missing.toml");
        assert!(load_with_overlay(&ws, &missing, &built, 512).unwrap_err().contains("cannot read"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn line_columns() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("abc\ndef", 5), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        assert_eq!(line_column("éé", 3), (1, 2), "inside a character: its start");
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
