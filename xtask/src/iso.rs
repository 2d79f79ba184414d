//! Bootable ISO images.
//!
//! - GRUB (`target/ozone.iso`): a hybrid BIOS + UEFI image made by `grub-mkrescue`; GRUB loads
//!   the kernel with `multiboot2` and the initrd with `module2 ... initrd`. The serial console is
//!   GRUB's terminal, so the whole boot shows up on the serial log.
//! - Limine (`target/ozone-limine.iso`, `--limine DIR`): made from a Limine 8.x binary release
//!   (the `v8.x-binary` branch of the Limine repository) with `xorriso`, then `limine
//!   bios-install`. Limine loads the same kernel ELF through the Limine protocol and the initrd
//!   as a module with the command line `initrd`.
//!
//! Both images hold `boot/ozone-kernel` and `boot/initrd.tar`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::{self, Profile};
use crate::deps::{self, Need};
use crate::{IsoArgs, Result, Workspace, copy_file, create_dir, initrd, write_file};

/// Files a Limine 8.x binary release provides (besides the `limine` host tool).
pub const LIMINE_FILES: [&str; 4] = ["limine-bios.sys", "limine-bios-cd.bin", "limine-uefi-cd.bin", "BOOTX64.EFI"];

/// `cargo xtask iso`.
pub fn command(ws: &Workspace, args: &IsoArgs) -> Result<()> {
    // Check the Limine directory before anything slow happens.
    let limine = args.limine.as_deref().map(Limine::check).transpose()?;
    deps::ensure_rust_target()?;
    deps::ensure(&[if limine.is_some() { Need::Xorriso } else { Need::GrubIso }])?;
    let artifacts = build::build_all(ws, Profile::from_release_flag(args.release))?;
    let seed = initrd::resolve_seed(ws, args.seed)?;
    let initrd = initrd::write_system_initrd(ws, "default", &artifacts, &artifacts.system, &seed)?;
    let iso = match limine {
        Some(limine) => build_limine_iso(ws, &limine, &artifacts.kernel, &initrd, &args.append)?,
        None => build_grub_iso(ws, &artifacts.kernel, &initrd, &args.append)?,
    };
    println!("{}", iso.display());
    Ok(())
}

/// Quote one word of the kernel command line for grub.cfg, or reject it.
fn grub_word(word: &str) -> Result<String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.,=:/+@%".contains(c);
    if word.chars().all(plain) {
        Ok(word.to_string())
    } else if !word.contains(['\'', '\\']) && !word.chars().any(char::is_control) {
        Ok(format!("'{word}'"))
    } else {
        Err(format!("cannot put `{word}` on GRUB's kernel command line (no quotes or backslashes)"))
    }
}

/// The grub.cfg for a kernel command line.
pub fn grub_cfg(cmdline: &str) -> Result<String> {
    let mut kernel_line = String::from("multiboot2 /boot/ozone-kernel");
    for word in cmdline.split_whitespace() {
        kernel_line.push(' ');
        kernel_line.push_str(&grub_word(word)?);
    }
    Ok(format!(
        "\
set timeout=0
set default=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console

menuentry \"OZONE-OS\" {{
    {kernel_line}
    module2 /boot/initrd.tar initrd
    boot
}}
"
    ))
}

/// The limine.conf (Limine 8 syntax) for a kernel command line.
pub fn limine_conf(cmdline: &str) -> Result<String> {
    if cmdline.contains(['\n', '\r']) {
        return Err("the kernel command line must be a single line".to_string());
    }
    let mut conf = String::from(
        "\
timeout: 0
serial: yes

/OZONE-OS
    protocol: limine
    kernel_path: boot():/boot/ozone-kernel
    module_path: boot():/boot/initrd.tar
    module_cmdline: initrd
",
    );
    let cmdline = cmdline.trim();
    if !cmdline.is_empty() {
        conf.push_str(&format!("    cmdline: {cmdline}\n"));
    }
    Ok(conf)
}

/// A fresh, empty directory for an ISO's file tree.
fn fresh_root(ws: &Workspace, name: &str) -> Result<PathBuf> {
    let root = ws.target().join("iso").join(name);
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| format!("cannot clear {}: {e}", root.display()))?;
    }
    create_dir(&root)?;
    Ok(root)
}

/// Build `target/ozone.iso` with GRUB; returns its path.
pub fn build_grub_iso(ws: &Workspace, kernel: &Path, initrd: &Path, cmdline: &str) -> Result<PathBuf> {
    let root = fresh_root(ws, "grub-root")?;
    copy_file(kernel, &root.join("boot/ozone-kernel"))?;
    copy_file(initrd, &root.join("boot/initrd.tar"))?;
    write_file(&root.join("boot/grub/grub.cfg"), grub_cfg(cmdline)?.as_bytes())?;
    let iso = ws.target().join("ozone.iso");
    let mut cmd = Command::new("grub-mkrescue");
    cmd.arg("-o").arg(&iso).arg(&root);
    run_quiet(cmd, "grub-mkrescue")?;
    Ok(iso)
}

/// A checked Limine 8.x binary release directory.
#[derive(Debug)]
pub struct Limine {
    pub dir: PathBuf,
    /// The `limine` host tool (built from `limine.c` by [`Limine::check`] when needed).
    pub tool: PathBuf,
}

impl Limine {
    /// Check that `dir` holds a Limine 8.x binary release; build the `limine` tool with `make`
    /// if only its source is there. Missing files give one error naming them.
    pub fn check(dir: &Path) -> Result<Limine> {
        let tool = dir.join("limine");
        let mut missing = missing_limine_files(dir);
        let build_tool = !tool.is_file() && dir.join("limine.c").is_file();
        if !tool.is_file() && !build_tool {
            missing.push("limine (or limine.c to build it)".to_string());
        }
        if !missing.is_empty() {
            return Err(format!(
                "missing in {}: {} (expected a Limine 8.x binary release, the v8.x-binary branch)",
                dir.display(),
                missing.join(", ")
            ));
        }
        if build_tool {
            eprintln!("xtask: running: make -C {}", dir.display());
            let mut cmd = Command::new("make");
            cmd.arg("-C").arg(dir);
            run_quiet(cmd, "make (building the limine tool)")?;
            if !tool.is_file() {
                return Err(format!("`make -C {}` did not build {}", dir.display(), tool.display()));
            }
        }
        Ok(Limine { dir: dir.to_path_buf(), tool })
    }
}

/// The names of the Limine release files missing from `dir`.
pub fn missing_limine_files(dir: &Path) -> Vec<String> {
    LIMINE_FILES.iter().filter(|f| !dir.join(f).is_file()).map(|f| f.to_string()).collect()
}

/// Build `target/ozone-limine.iso`; returns its path.
pub fn build_limine_iso(
    ws: &Workspace,
    limine: &Limine,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
) -> Result<PathBuf> {
    let root = fresh_root(ws, "limine-root")?;
    copy_file(kernel, &root.join("boot/ozone-kernel"))?;
    copy_file(initrd, &root.join("boot/initrd.tar"))?;
    write_file(&root.join("boot/limine/limine.conf"), limine_conf(cmdline)?.as_bytes())?;
    for file in ["limine-bios.sys", "limine-bios-cd.bin", "limine-uefi-cd.bin"] {
        copy_file(&limine.dir.join(file), &root.join("boot/limine").join(file))?;
    }
    copy_file(&limine.dir.join("BOOTX64.EFI"), &root.join("EFI/BOOT/BOOTX64.EFI"))?;
    let iso = ws.target().join("ozone-limine.iso");
    let mut cmd = Command::new("xorriso");
    cmd.args(["-as", "mkisofs", "-R", "-r", "-J", "-b", "boot/limine/limine-bios-cd.bin"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "-hfsplus"])
        .args(["-apm-block-size", "2048", "--efi-boot", "boot/limine/limine-uefi-cd.bin"])
        .args(["-efi-boot-part", "--efi-boot-image", "--protective-msdos-label"])
        .arg(&root)
        .arg("-o")
        .arg(&iso);
    run_quiet(cmd, "xorriso")?;
    let mut cmd = Command::new(&limine.tool);
    cmd.arg("bios-install").arg(&iso);
    run_quiet(cmd, "limine bios-install")?;
    Ok(iso)
}

/// Run a chatty tool, showing its output only when it fails.
fn run_quiet(mut cmd: Command, what: &str) -> Result<()> {
    let output = cmd.output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&output.stderr));
    eprint!("{log}");
    Err(format!("{what} failed ({})", output.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_default() {
        let cfg = grub_cfg("").unwrap();
        let lines: Vec<&str> = cfg.lines().map(str::trim).collect();
        for expected in [
            "set timeout=0",
            "set default=0",
            "serial --unit=0 --speed=115200",
            "terminal_input serial console",
            "terminal_output serial console",
            "multiboot2 /boot/ozone-kernel",
            "module2 /boot/initrd.tar initrd",
            "boot",
        ] {
            assert!(lines.contains(&expected), "missing `{expected}` in\n{cfg}");
        }
        let serial = lines.iter().position(|l| l.starts_with("serial ")).unwrap();
        let menu = lines.iter().position(|l| l.starts_with("menuentry ")).unwrap();
        assert!(serial < menu);
        assert_eq!(cfg.matches('{').count(), cfg.matches('}').count());
    }

    #[test]
    fn grub_cfg_command_line() {
        let cfg = grub_cfg("ozone.test=kernel-exception  log=debug").unwrap();
        assert!(cfg.contains("    multiboot2 /boot/ozone-kernel ozone.test=kernel-exception log=debug\n"));
        let cfg = grub_cfg("a;b").unwrap();
        assert!(cfg.contains("multiboot2 /boot/ozone-kernel 'a;b'\n"));
        assert!(grub_cfg("it's").is_err());
        assert!(grub_cfg("back\\slash").is_err());
    }

    #[test]
    fn limine_conf_generation() {
        let conf = limine_conf("ozone.test=triple-fault").unwrap();
        assert_eq!(
            conf,
            "timeout: 0\nserial: yes\n\n/OZONE-OS\n    protocol: limine\n    kernel_path: boot():/boot/ozone-kernel\n    module_path: boot():/boot/initrd.tar\n    module_cmdline: initrd\n    cmdline: ozone.test=triple-fault\n"
        );
        assert!(!limine_conf("").unwrap().contains("cmdline: \n"));
        assert!(!limine_conf(" ").unwrap().contains("    cmdline:"));
        assert!(limine_conf("a\nb").is_err());
    }

    #[test]
    fn limine_directory_checks() {
        let dir = crate::scratch_dir("limine");
        let err = Limine::check(&dir).unwrap_err();
        for name in LIMINE_FILES {
            assert!(err.contains(name), "{err}");
        }
        assert!(err.contains("limine (or limine.c to build it)"), "{err}");
        assert!(!err.contains('\n'));

        for name in ["limine-bios.sys", "limine-bios-cd.bin", "BOOTX64.EFI"] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        assert_eq!(missing_limine_files(&dir), vec!["limine-uefi-cd.bin".to_string()]);
        std::fs::write(dir.join("limine-uefi-cd.bin"), b"x").unwrap();
        std::fs::write(dir.join("limine"), b"#!/bin/sh\n").unwrap();
        let limine = Limine::check(&dir).unwrap();
        assert_eq!(limine.tool, dir.join("limine"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
