//! Prerequisites: the Rust target and the Debian packages the commands need.
//!
//! Every command checks what it needs before it needs it. What is missing is installed when that
//! can be done without asking (`rustup target add`; `apt-get install` when apt-get exists and we
//! are root or have passwordless sudo), saying what runs. Otherwise the command stops with one
//! line naming what is missing and how to install it.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::build::TARGET;
use crate::{Result, which};

/// A group of prerequisites a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `qemu-system-x86_64`.
    Qemu,
    /// Everything `grub-mkrescue` needs for a hybrid BIOS + UEFI ISO.
    GrubIso,
    /// `xorriso` alone (the Limine ISO).
    Xorriso,
    /// The OVMF UEFI firmware.
    Ovmf,
}

/// One checkable prerequisite and the Debian package providing it.
struct Item {
    what: &'static str,
    package: &'static str,
    present: fn() -> bool,
}

fn items(need: Need) -> Vec<Item> {
    let qemu = Item {
        what: "qemu-system-x86_64",
        package: "qemu-system-x86",
        present: || which("qemu-system-x86_64").is_some(),
    };
    let xorriso = Item { what: "xorriso", package: "xorriso", present: || which("xorriso").is_some() };
    match need {
        Need::Qemu => vec![qemu],
        Need::Xorriso => vec![xorriso],
        Need::GrubIso => vec![
            Item { what: "grub-mkrescue", package: "grub-common", present: || which("grub-mkrescue").is_some() },
            xorriso,
            Item { what: "mformat (mtools)", package: "mtools", present: || which("mformat").is_some() },
            Item {
                what: "GRUB BIOS modules (/usr/lib/grub/i386-pc)",
                package: "grub-pc-bin",
                present: || Path::new("/usr/lib/grub/i386-pc").is_dir(),
            },
            Item {
                what: "GRUB UEFI modules (/usr/lib/grub/x86_64-efi)",
                package: "grub-efi-amd64-bin",
                present: || Path::new("/usr/lib/grub/x86_64-efi").is_dir(),
            },
        ],
        Need::Ovmf => vec![Item {
            what: "OVMF firmware (/usr/share/OVMF/OVMF_CODE_4M.fd)",
            package: "ovmf",
            present: || crate::qemu::Ovmf::find().is_some(),
        }],
    }
}

/// The one-line error for missing OVMF files.
pub fn ovmf_missing() -> String {
    missing_message(&["OVMF firmware (/usr/share/OVMF/OVMF_CODE_4M.fd)"], &["ovmf"])
}

fn missing_message(what: &[&str], packages: &[&str]) -> String {
    format!("missing {}; install it with: sudo apt-get install {}", what.join(", "), packages.join(" "))
}

/// Make sure everything in `needs` is there, installing the Debian packages if we can.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let missing = || -> (Vec<&'static str>, Vec<&'static str>) {
        let mut what = Vec::new();
        let mut packages = Vec::new();
        for item in needs.iter().flat_map(|&n| items(n)) {
            if !(item.present)() && !what.contains(&item.what) {
                what.push(item.what);
                if !packages.contains(&item.package) {
                    packages.push(item.package);
                }
            }
        }
        (what, packages)
    };
    let (what, packages) = missing();
    if what.is_empty() {
        return Ok(());
    }
    let Some(sudo) = apt_privilege() else {
        return Err(missing_message(&what, &packages));
    };
    let apt = |args: &[&str]| -> Result<()> {
        let mut argv: Vec<&str> = sudo.iter().copied().collect();
        argv.push("apt-get");
        argv.extend_from_slice(args);
        eprintln!("xtask: running: {}", argv.join(" "));
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
        if status.success() { Ok(()) } else { Err(format!("`{}` failed ({status})", argv.join(" "))) }
    };
    apt(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(&packages);
    apt(&install)?;
    let (what, packages) = missing();
    if what.is_empty() { Ok(()) } else { Err(missing_message(&what, &packages)) }
}

/// How we may run apt-get: `Some(None)` as root, `Some(Some("sudo"))` with passwordless sudo,
/// `None` if we cannot (or there is no apt-get).
fn apt_privilege() -> Option<Option<&'static str>> {
    which("apt-get")?;
    if is_root() {
        return Some(None);
    }
    let sudo_works = which("sudo").is_some()
        && Command::new("sudo")
            .args(["-n", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    sudo_works.then_some(Some("sudo"))
}

/// Whether we run as root (effective user id 0).
#[allow(unsafe_code)] // One of the three places xtask calls libc (docs/CONTRIBUTING.md).
fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Make sure the Rust target `x86_64-unknown-none` is installed.
pub fn ensure_rust_target() -> Result<()> {
    let hint = || format!("missing the Rust target {TARGET}; install it with: rustup target add {TARGET}");
    if which("rustup").is_none() {
        // Not a rustup toolchain: look into the sysroot directly.
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
        let sysroot = Command::new(rustc)
            .args(["--print", "sysroot"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        return match sysroot {
            Some(root) if Path::new(&root).join("lib/rustlib").join(TARGET).is_dir() => Ok(()),
            _ => Err(hint()),
        };
    }
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if installed.status.success() && target_listed(&String::from_utf8_lossy(&installed.stdout)) {
        return Ok(());
    }
    eprintln!("xtask: running: rustup target add {TARGET}");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() { Ok(()) } else { Err(hint()) }
}

/// Make sure the toolchain has the `components` (rustup's names: `clippy`, `rustfmt`).
pub fn ensure_components(components: &[&str]) -> Result<()> {
    let hint = |missing: &[&str]| {
        format!("missing {}; install it with: rustup component add {}", missing.join(", "), missing.join(" "))
    };
    if which("rustup").is_none() {
        // Not a rustup toolchain: ask cargo whether the subcommands are there.
        let missing: Vec<&str> = components
            .iter()
            .copied()
            .filter(|&c| {
                let subcommand = if c == "rustfmt" { "fmt" } else { c };
                !Command::new(crate::build::cargo_program())
                    .args([subcommand, "--version"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .collect();
        return if missing.is_empty() { Ok(()) } else { Err(hint(&missing)) };
    }
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    let list = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> =
        components.iter().copied().filter(|c| !installed.status.success() || !component_listed(&list, c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: running: rustup component add {}", missing.join(" "));
    let status = Command::new("rustup")
        .args(["component", "add"])
        .args(&missing)
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() { Ok(()) } else { Err(hint(&missing)) }
}

/// Whether `rustup component list --installed` output lists `component` (as `clippy` or
/// `clippy-x86_64-unknown-linux-gnu`).
fn component_listed(list: &str, component: &str) -> bool {
    list.lines()
        .map(str::trim)
        .any(|line| line == component || line.strip_prefix(component).is_some_and(|rest| rest.starts_with('-')))
}

/// Whether `rustup target list --installed` output lists our target.
fn target_listed(list: &str) -> bool {
    list.lines().any(|line| line.trim() == TARGET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_list_parsing() {
        assert!(target_listed("x86_64-unknown-linux-gnu\nx86_64-unknown-none\n"));
        assert!(!target_listed("x86_64-unknown-linux-gnu\n"));
        assert!(!target_listed("x86_64-unknown-none-softfloat\n"));
    }

    #[test]
    fn component_list_parsing() {
        let list = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrust-std-x86_64-unknown-none\n";
        assert!(component_listed(list, "clippy"));
        assert!(!component_listed(list, "rustfmt"));
        assert!(!component_listed(list, "clip"));
        assert!(component_listed("rustfmt\n", "rustfmt"));
    }

    #[test]
    fn missing_message_is_one_line() {
        let message = missing_message(&["qemu-system-x86_64", "xorriso"], &["qemu-system-x86", "xorriso"]);
        assert_eq!(
            message,
            "missing qemu-system-x86_64, xorriso; install it with: sudo apt-get install qemu-system-x86 xorriso"
        );
        assert!(!ovmf_missing().contains('\n'));
    }

    #[test]
    fn every_need_names_a_debian_package() {
        for need in [Need::Qemu, Need::GrubIso, Need::Xorriso, Need::Ovmf] {
            for item in items(need) {
                assert!(!item.package.is_empty() && !item.what.is_empty());
            }
        }
    }
}
