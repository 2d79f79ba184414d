//! The system description: `initrd/system.toml` read, checked and compiled to `system.bin`.
//!
//! The schema, the checks and the encoding live in the agent SDK
//! (`ozone_agent_sdk::protocol::system`), shared with Studio, which decodes the result. This
//! module adds what only the build knows: the file and its line numbers for syntax errors,
//! which binaries were built (a program naming any other is an error), the names xtask keeps
//! for itself in the initrd, and the RAM of the QEMU machine the quotas must fit.
//!
//! Every problem is one line starting with the file's name; [`load`] joins them with newlines
//! and the caller prints each line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ozone_agent_sdk::protocol::system::{COMPILED_NAME, SystemDescription};

use crate::{Result, Workspace, initrd};

/// The description, relative to the workspace root.
pub const SOURCE: &str = "initrd/system.toml";

/// Initrd entries xtask writes itself; no program's binary may be called that.
pub const RESERVED: [&str; 4] = [initrd::ROOT_TASK, initrd::SEED, initrd::STUDIO, COMPILED_NAME];

/// RAM of the machine that Studio cannot hand out as quotas: firmware and low memory, the kernel
/// and its object pool, the root task and Studio themselves (the kernel reports about 473 of
/// 512 MiB as the root task's untyped memory).
pub const RESERVED_MIB: u32 = 64;

/// A checked and compiled system description.
#[derive(Clone, Debug)]
pub struct System {
    pub description: SystemDescription,
    /// The description in postcard: `system.bin` in the initrd.
    pub compiled: Vec<u8>,
    /// Every binary the description names, once each in order of first mention: the initrd
    /// entry name (the `binary` field) and the built file.
    pub binaries: Vec<(String, PathBuf)>,
}

/// Read `initrd/system.toml` and compile it against `programs`, the built userspace programs by
/// binary name, for a QEMU machine of `machine_mib` MiB. Errors are lines `initrd/system.toml: ...`.
pub fn load(ws: &Workspace, programs: &BTreeMap<String, PathBuf>, machine_mib: u32) -> Result<System> {
    let path = ws.root.join(SOURCE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{SOURCE}: cannot read {}: {e}", path.display()))?;
    compile(SOURCE, &text, programs, machine_mib).map_err(|errors| errors.join("\n"))
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
    let mut errors: Vec<String> = Vec::new();
    let built = |binary: &str| programs.contains_key(binary);
    if let Err(found) = description.validate(&built) {
        errors.extend(found.iter().map(|e| format!("{label}: {e}")));
    }
    if description.programs.iter().any(|p| !built(&p.binary)) {
        let names: Vec<&str> = programs.keys().map(String::as_str).collect();
        errors.push(format!("{label}: the userspace programs built are: {}", names.join(", ")));
    }
    for p in &description.programs {
        if RESERVED.contains(&p.binary.as_str()) {
            errors.push(format!(
                "{label}: program `{}`: binary `{}` is an initrd entry xtask writes itself ({})",
                p.name,
                p.binary,
                RESERVED.join(", ")
            ));
        }
    }
    let limit = machine_mib.saturating_sub(RESERVED_MIB);
    if description.system.memory_mib > limit {
        errors.push(format!(
            "{label}: [system] memory_mib = {} does not fit the {machine_mib} MiB QEMU machine: at most {limit} MiB \
             ({RESERVED_MIB} MiB go to the firmware, the kernel, the root task and Studio)",
            description.system.memory_mib
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let compiled = description.to_postcard();
    if SystemDescription::from_postcard(&compiled).as_ref() != Ok(&description) {
        return Err(vec![format!("{label}: the description does not survive its postcard encoding")]);
    }
    let mut binaries: Vec<(String, PathBuf)> = Vec::new();
    for p in &description.programs {
        if !binaries.iter().any(|(name, _)| *name == p.binary) {
            binaries.push((p.binary.clone(), programs[&p.binary].clone()));
        }
    }
    Ok(System { description, compiled, binaries })
}

/// Parse the TOML of the file `label`: a syntax or schema error becomes one line
/// `label:LINE:COLUMN: message`.
pub fn parse(label: &str, text: &str) -> Result<SystemDescription> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', "; ");
        match e.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!("{label}:{line}:{column}: {message}")
            }
            None => format!("{label}: {message}"),
        }
    })
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
    use ozone_agent_sdk::protocol::system::{Kind, Privilege};

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
        assert!(d.programs[1].restart && d.programs[1].has_privilege(Privilege::Admin));
        assert!(d.programs[2].start && !d.programs[3].start);
        assert_eq!(SystemDescription::from_postcard(&system.compiled).unwrap(), *d);
        // Each binary once, in order of first mention.
        let binaries: Vec<(&str, &str)> =
            system.binaries.iter().map(|(n, p)| (n.as_str(), p.to_str().unwrap())).collect();
        assert_eq!(binaries, [("console", "/built/console"), ("shell", "/built/shell"), ("hello", "/built/hello")]);
    }

    #[test]
    fn the_committed_description_is_well_formed() {
        let text = std::fs::read_to_string(Workspace::locate().root.join(SOURCE)).unwrap();
        let d = parse(SOURCE, &text).unwrap();
        // Which binaries exist depends on the build; everything else must hold.
        assert_eq!(d.validate(&|_| true), Ok(()));
        assert!(d.system.memory_mib <= crate::qemu::MEMORY_MIB - RESERVED_MIB);
        assert!(d.program("hello").is_some());
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
        has(&errors, "unknown privilege `root` (known: admin, vspaces, profiles)");
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

    #[test]
    fn line_columns() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("abc\ndef", 5), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        assert_eq!(line_column("éé", 3), (1, 2), "inside a character: its start");
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
