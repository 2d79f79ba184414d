//! The QEMU runner: builds QEMU's command line, runs it under a hard timeout, captures the serial
//! console and decodes how the guest ended.
//!
//! The guest reports its end through `isa-debug-exit` (port [`ozone_abi::DEBUG_EXIT_PORT`]):
//! writing code `c` makes QEMU exit with status `(c << 1) | 1`, decoded by
//! [`ozone_abi::ExitCode::from_qemu_status`]. QEMU also exits with status 0 when the guest powers
//! off through ACPI (the kernel prints [`ozone_abi::markers::POWER_OFF`] first) and, because we run
//! with `-no-reboot`, when the guest resets, e.g. after a triple fault. See [`decode`].
//!
//! A run can type a script at the guest's serial console ([`Run::script`]): a thread watches the
//! captured serial output and, each time the shell's prompt [`PROMPT`] appears, writes the next
//! line followed by `\r` to QEMU's standard input, which `-serial stdio` connects to the guest's
//! COM1. The run then goes on until QEMU exits or the timeout, and the result holds the whole
//! transcript ([`RunResult::serial`]) and how many lines were typed ([`RunResult::typed`]).
//!
//! A run can also inject NMIs ([`Run::nmi`]): QEMU's human monitor then listens on a Unix
//! socket, and each time the guest prints the marker line, the runner sends the monitor's `nmi`
//! command, waits for it to complete, and types a byte at COM1 so that the guest (which waits for
//! it) knows the NMI has been delivered. [`RunResult::nmis`] counts the NMIs injected.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ozone_abi::{ExitCode, markers};

use crate::build::{self, Profile};
use crate::deps::{self, Need};
use crate::initrd;
use crate::{QemuArgs, Result, Workspace};

/// The QEMU binary we run.
pub const QEMU: &str = "qemu-system-x86_64";

/// RAM of the QEMU machine, in MiB (the system description's `memory_mib` must fit in it).
pub const MEMORY_MIB: u32 = 512;

/// The shell's prompt on the serial console: a script's next line is typed when it appears.
pub const PROMPT: &str = "ozone> ";

/// What the console sends before a program's line while its prompt is shown: back to the start
/// of the line and erase it (`servers/console/src/session.rs`); the prompt is printed again after
/// the program's lines.
pub const ERASE_LINE: &str = "\r\x1b[K";

/// Whether the prompt at byte `at` of `log` is a new one: it starts its line, and is not the
/// console printing its prompt again after programs' lines (then the line before it holds the
/// erase sequence). `ozone> ` inside a line is a program's text (the console attributes it).
pub fn is_new_prompt(log: &[u8], at: usize) -> bool {
    let before = &log[..at.min(log.len())];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if line_start != at {
        return false;
    }
    let previous_start = before[..line_start.saturating_sub(1)].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let erase = &ERASE_LINE.as_bytes()[1..];
    line_start == 0 || !before[previous_start..line_start].windows(erase.len()).any(|w| w == erase)
}

/// Where the shell's new prompts start in `log` (prompts printed again are left out).
pub fn fresh_prompts(log: &str) -> Vec<usize> {
    log.match_indices(PROMPT).map(|(i, _)| i).filter(|&i| is_new_prompt(log.as_bytes(), i)).collect()
}

/// How a QEMU run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote an exit code to `isa-debug-exit`.
    Exit(ExitCode),
    /// QEMU exited with status 0 after the kernel printed the power-off marker: ACPI power-off.
    PowerOff,
    /// QEMU exited with status 0 without the power-off marker: with `-no-reboot` that is a reset,
    /// most likely a triple fault.
    GuestReset,
    /// QEMU itself failed: an unknown exit status, or it was killed by a signal.
    QemuError(String),
    /// The guest was still running when the timeout passed; QEMU was killed.
    Timeout(Duration),
}

impl Outcome {
    /// Whether the guest shut down cleanly: exit code Success, or an ACPI power-off.
    pub fn is_clean(&self) -> bool {
        matches!(self, Outcome::Exit(ExitCode::Success) | Outcome::PowerOff)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Exit(code) => {
                write!(f, "guest exit code {code:?} (QEMU status {})", code.qemu_status())
            }
            Outcome::PowerOff => write!(f, "guest powered off through ACPI"),
            Outcome::GuestReset => write!(f, "guest reset (triple fault?)"),
            Outcome::QemuError(message) => write!(f, "QEMU error: {message}"),
            Outcome::Timeout(after) => {
                write!(f, "hang: the guest was still running after {} s; QEMU killed", after.as_secs())
            }
        }
    }
}

/// Decode how QEMU ended: its exit status (`None` if a signal killed it) and the serial log.
pub fn decode(status: Option<i32>, signal: Option<i32>, serial: &str) -> Outcome {
    match status {
        Some(0) if serial.contains(markers::POWER_OFF) => Outcome::PowerOff,
        Some(0) => Outcome::GuestReset,
        Some(status) => match ExitCode::from_qemu_status(status) {
            Some(code) => Outcome::Exit(code),
            None => Outcome::QemuError(format!("QEMU exited with status {status}")),
        },
        None => match signal {
            Some(signal) => Outcome::QemuError(format!("QEMU was killed by signal {signal}")),
            None => Outcome::QemuError("QEMU ended without an exit status".to_string()),
        },
    }
}

/// Hardware acceleration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's software emulator: works everywhere; the only choice for `-icount`.
    Tcg,
    /// KVM with the host CPU model.
    Kvm,
}

impl Accel {
    /// KVM only where the CPU really offers hardware virtualization (`vmx` or `svm` in
    /// `/proc/cpuinfo`) and `/dev/kvm` exists; TCG everywhere else.
    pub fn detect() -> Accel {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if cpu_has_virtualization(&cpuinfo) && Path::new("/dev/kvm").exists() { Accel::Kvm } else { Accel::Tcg }
    }
}

/// Whether the `flags` lines of a `/proc/cpuinfo` text contain `vmx` or `svm`.
pub fn cpu_has_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| key.trim() == "flags")
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The OVMF firmware files: read-only code and a template for the writable variable store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars: PathBuf,
}

impl Ovmf {
    /// The 4 MiB build (Debian bookworm and later), else the older 2 MiB one.
    pub fn find() -> Option<Ovmf> {
        [("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"), ("OVMF_CODE.fd", "OVMF_VARS.fd")]
            .into_iter()
            .map(|(code, vars)| Ovmf {
                code: Path::new("/usr/share/OVMF").join(code),
                vars: Path::new("/usr/share/OVMF").join(vars),
            })
            .find(|ovmf| ovmf.code.is_file() && ovmf.vars.is_file())
    }
}

/// What QEMU boots.
#[derive(Clone, Debug)]
pub enum Boot {
    /// PVH direct boot of the kernel ELF with an initrd and a command line.
    Pvh { kernel: PathBuf, initrd: PathBuf, cmdline: String },
    /// An ISO image from the CD-ROM drive, under SeaBIOS or (with `Some(ovmf)`) under OVMF.
    Iso { iso: PathBuf, uefi: Option<Ovmf> },
}

/// Where the serial console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// Echo the serial output to our stdout (and QEMU's stderr to ours) while capturing it; QEMU
    /// reads our stdin and stays in our process group so it can use the terminal.
    Interactive,
    /// Echo the serial output to our stdout (and QEMU's stderr to ours) while capturing it, but
    /// leave the terminal alone: QEMU gets no input (or the script) and runs in its own process
    /// group. What `cargo xtask qemu --script` uses.
    Echo,
    /// Capture only; QEMU gets no input (or the script) and runs in its own process group.
    Capture,
}

/// The disk `cargo xtask qemu` attaches, under `target/`.
pub const DISK_IMAGE: &str = "ozone-disk.img";
/// Its size: 64 MiB.
pub const DISK_BYTES: u64 = 64 << 20;

/// The disk image at `path`, made (sparse, all zeros: an unformatted disk the storage server
/// formats) if it does not exist or `fresh` asks for a new one.
pub fn disk_image(path: &Path, fresh: bool) -> Result<PathBuf> {
    if fresh || !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        }
        let f = std::fs::File::create(path).map_err(|e| format!("cannot make {}: {e}", path.display()))?;
        f.set_len(DISK_BYTES).map_err(|e| format!("cannot size {}: {e}", path.display()))?;
        println!("xtask: made an empty {} MiB disk at {}", DISK_BYTES >> 20, path.display());
    }
    Ok(path.to_path_buf())
}

/// One QEMU run.
#[derive(Clone, Debug)]
pub struct Run {
    pub boot: Boot,
    pub accel: Accel,
    /// `-icount shift=0,align=off,sleep=off`: one TSC tick per guest instruction.
    pub icount: bool,
    /// `-s -S`: wait for GDB on port 1234.
    pub gdb: bool,
    /// Add the `isa-debug-exit` device (without it the kernel has to power off through ACPI).
    pub debug_exit: bool,
    pub timeout: Option<Duration>,
    pub console: Console,
    /// Lines to type at the serial console: line k after the k-th [`PROMPT`] (with
    /// [`Console::Echo`] or [`Console::Capture`]).
    pub script: Option<Vec<String>>,
    /// Directory for the writable copy of the OVMF variable store (and the monitor socket).
    pub scratch: PathBuf,
    /// Inject an NMI each time the guest prints a marker (not with a script).
    pub nmi: Option<NmiInjection>,
    /// Raw disk images attached as virtio-blk PCI devices, in order (modern, write-back cache:
    /// writes are durable when the guest flushes).
    pub disks: Vec<PathBuf>,
    /// A virtio-net PCI device (modern) and what it is joined to.
    pub net: Option<NetLink>,
    /// More virtio-net PCI devices, after `net`, each on a QEMU user network of its own: cards
    /// for programs that drive one themselves (benchmarks of the raw device path).
    pub raw_nics: usize,
}

/// What the guest's network card is joined to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetLink {
    /// QEMU's user network (10.0.2.0/24, the host at 10.0.2.2, DHCP), with TCP ports of the
    /// host's loopback address forwarded to the guest: (host port, guest port).
    User { forward: Vec<(u16, u16)> },
    /// A point-to-point link to another instance over a TCP socket on the host's loopback
    /// address: one instance listens on `port`, the other connects to it. `mac` tells the two
    /// cards apart.
    Peer { listen: bool, port: u16, mac: String },
}

/// NMIs on cue: each time `marker` appears on the serial console, the runner sends `nmi` to QEMU's
/// monitor and, once the command has completed, types `ack` at COM1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NmiInjection {
    pub marker: String,
    pub ack: String,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub outcome: Outcome,
    /// Everything the guest wrote to the serial port (lossily decoded as UTF-8).
    pub serial: String,
    /// What QEMU itself wrote to stderr.
    pub stderr: String,
    pub elapsed: Duration,
    /// The command line, for messages.
    pub command: String,
    /// How many lines of the script were typed (each after its prompt appeared).
    pub typed: usize,
    /// How many NMIs were injected ([`Run::nmi`]).
    pub nmis: usize,
}

impl Run {
    /// A PVH boot under TCG with the debug-exit device, capturing the serial console.
    pub fn pvh(kernel: &Path, initrd: &Path, cmdline: &str, timeout: Duration, scratch: &Path) -> Run {
        Run {
            boot: Boot::Pvh {
                kernel: kernel.to_path_buf(),
                initrd: initrd.to_path_buf(),
                cmdline: cmdline.to_string(),
            },
            accel: Accel::Tcg,
            icount: false,
            gdb: false,
            debug_exit: true,
            timeout: Some(timeout),
            console: Console::Capture,
            script: None,
            scratch: scratch.to_path_buf(),
            nmi: None,
            disks: Vec::new(),
            net: None,
            raw_nics: 0,
        }
    }

    /// The writable copy of the OVMF variable store a UEFI boot uses (one per xtask process, so
    /// concurrent runs do not share it).
    pub fn vars_copy(&self) -> PathBuf {
        self.scratch.join(format!("ovmf-vars-{}.fd", std::process::id()))
    }

    /// The Unix socket QEMU's monitor listens on when the run injects NMIs (one per xtask
    /// process; runs of one process are sequential).
    pub fn monitor_socket(&self) -> PathBuf {
        self.scratch.join(format!("monitor-{}.sock", std::process::id()))
    }

    /// QEMU's arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-machine",
            "q35",
            "-m",
            &format!("{MEMORY_MIB}M"),
            "-smp",
            "1",
            "-display",
            "none",
            "-nic",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        match &self.nmi {
            Some(_) => {
                let monitor = format!("unix:{},server=on,wait=off", self.monitor_socket().display());
                push(&["-monitor", &monitor]);
            }
            None => push(&["-monitor", "none"]),
        }
        match self.accel {
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        }
        if self.debug_exit {
            let device = format!("isa-debug-exit,iobase={:#x},iosize=0x04", ozone_abi::DEBUG_EXIT_PORT);
            push(&["-device", &device]);
        }
        if self.icount {
            push(&["-icount", "shift=0,align=off,sleep=off"]);
        }
        if self.gdb {
            push(&["-s", "-S"]);
        }
        for (k, disk) in self.disks.iter().enumerate() {
            let drive = format!("file={},if=none,id=disk{k},format=raw,cache=writeback", disk.display());
            let device = format!("virtio-blk-pci,drive=disk{k},disable-legacy=on");
            push(&["-drive", &drive, "-device", &device]);
        }
        match &self.net {
            Some(NetLink::User { forward }) => {
                let mut netdev = String::from("user,id=net0");
                for (host, guest) in forward {
                    netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
                }
                push(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0,disable-legacy=on"]);
            }
            Some(NetLink::Peer { listen, port, mac }) => {
                let how = if *listen { "listen" } else { "connect" };
                let netdev = format!("socket,id=net0,{how}=127.0.0.1:{port}");
                let device = format!("virtio-net-pci,netdev=net0,disable-legacy=on,mac={mac}");
                push(&["-netdev", &netdev, "-device", &device]);
            }
            None => {}
        }
        for k in 0..self.raw_nics {
            let netdev = format!("user,id=raw{k}");
            let device = format!("virtio-net-pci,netdev=raw{k},disable-legacy=on");
            push(&["-netdev", &netdev, "-device", &device]);
        }
        match &self.boot {
            Boot::Pvh { kernel, initrd, cmdline } => {
                push(&["-kernel", &kernel.to_string_lossy(), "-initrd", &initrd.to_string_lossy()]);
                if !cmdline.is_empty() {
                    push(&["-append", cmdline]);
                }
            }
            Boot::Iso { iso, uefi } => {
                if let Some(ovmf) = uefi {
                    let code = format!("if=pflash,format=raw,unit=0,readonly=on,file={}", ovmf.code.display());
                    let vars = format!("if=pflash,format=raw,unit=1,file={}", self.vars_copy().display());
                    push(&["-drive", &code, "-drive", &vars]);
                }
                push(&["-cdrom", &iso.to_string_lossy(), "-boot", "d"]);
            }
        }
        args
    }

    /// The command line as one printable string.
    pub fn render(&self) -> String {
        std::iter::once(QEMU.to_string())
            .chain(self.args().iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Run QEMU to the end (or the timeout) and decode the result.
    pub fn run(&self) -> Result<RunResult> {
        let qemu = crate::which(QEMU).ok_or_else(|| {
            format!("{QEMU} not found in PATH; install it with: sudo apt-get install qemu-system-x86")
        })?;
        let vars_copy = match &self.boot {
            Boot::Iso { uefi: Some(ovmf), .. } => {
                let copy = self.vars_copy();
                crate::copy_file(&ovmf.vars, &copy)?;
                Some(copy)
            }
            _ => None,
        };
        if self.nmi.is_some() {
            crate::create_dir(&self.scratch)?;
            let _ = std::fs::remove_file(self.monitor_socket());
        }
        let result = self.run_program(&qemu, &self.args());
        if let Some(copy) = vars_copy {
            let _ = std::fs::remove_file(copy);
        }
        if self.nmi.is_some() {
            let _ = std::fs::remove_file(self.monitor_socket());
        }
        result
    }

    /// Run `program` (QEMU, or a stand-in in tests) with `args` as the guest.
    fn run_program(&self, program: &Path, args: &[String]) -> Result<RunResult> {
        if self.script.is_some() && self.console == Console::Interactive {
            return Err(
                "a scripted run cannot use the interactive console (QEMU reads the script, not the terminal)".into()
            );
        }
        if self.nmi.is_some() && (self.script.is_some() || self.console == Console::Interactive) {
            return Err("a run that injects NMIs types at the console itself: no script, no interactive console".into());
        }
        let mut cmd = Command::new(program);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        match (&self.script, self.console) {
            (Some(_), _) => cmd.stdin(Stdio::piped()),
            (None, _) if self.nmi.is_some() => cmd.stdin(Stdio::piped()),
            (None, Console::Interactive) => cmd.stdin(Stdio::inherit()),
            (None, _) => cmd.stdin(Stdio::null()),
        };
        let own_group = self.console != Console::Interactive;
        if own_group {
            cmd.process_group(0);
        }
        // This makes QEMU get SIGTERM (which it handles by shutting down cleanly, restoring the
        // terminal) if xtask dies first, so no QEMU is left behind.
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
        // which is async-signal-safe.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                Ok(())
            });
        }
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let echo = self.console != Console::Capture;
        let serial = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (watcher, typist) = match (&self.script, &self.nmi) {
            (Some(lines), _) => {
                let (prompts, seen) = mpsc::channel();
                let mut counter = MarkerCounter::prompts();
                let watcher: Watcher = Box::new(move |log: &[u8]| {
                    for _ in 0..counter.update(log) {
                        // The typist has stopped if this fails: QEMU closed its input.
                        let _ = prompts.send(());
                    }
                });
                (Some(watcher), Some(type_script(child.stdin.take(), lines.clone(), seen, serial.clone())))
            }
            (None, Some(nmi)) => {
                let (cues, seen) = mpsc::channel();
                let mut counter = MarkerCounter::lines(&nmi.marker);
                let watcher: Watcher = Box::new(move |log: &[u8]| {
                    for _ in 0..counter.update(log) {
                        let _ = cues.send(());
                    }
                });
                let injector =
                    inject_nmis(child.stdin.take(), self.monitor_socket(), nmi.ack.clone(), seen, stderr.clone());
                (Some(watcher), Some(injector))
            }
            (None, None) => (None, None),
        };
        let readers = [
            tee(child.stdout.take(), echo.then(|| Box::new(std::io::stdout()) as Sink), &serial, watcher),
            tee(child.stderr.take(), echo.then(|| Box::new(std::io::stderr()) as Sink), &stderr, None),
        ];

        let (status, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (Some(status), false),
                Ok(None) => {}
                Err(e) => {
                    stop(&mut child, own_group);
                    return Err(format!("cannot wait for QEMU: {e}"));
                }
            }
            if self.timeout.is_some_and(|t| start.elapsed() >= t) {
                break (stop(&mut child, own_group), true);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = start.elapsed();
        for reader in readers {
            let _ = reader.join();
        }
        // The serial reader has ended and dropped the prompt (or marker) channel, so the typist
        // (or the NMI injector) ends too.
        let count = typist.map_or(0, |t| t.join().unwrap_or(0));
        let (typed, nmis) = if self.nmi.is_some() { (0, count) } else { (count, 0) };
        let serial = String::from_utf8_lossy(&serial.lock().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        let outcome = match (timed_out, self.timeout) {
            (true, Some(timeout)) => Outcome::Timeout(timeout),
            _ => decode(status.and_then(|s| s.code()), status.and_then(|s| s.signal()), &serial),
        };
        Ok(RunResult { outcome, serial, stderr, elapsed, command: self.render(), typed, nmis })
    }
}

/// Counts the occurrences of a marker (the shell's [`PROMPT`], an NMI cue) in a growing serial
/// log.
#[derive(Debug)]
pub struct MarkerCounter {
    marker: String,
    /// Count a marker only once the line it is on has ended.
    whole_lines: bool,
    /// Count new prompts only ([`is_new_prompt`]).
    skip_reprints: bool,
    /// Where the search goes on: just past the last marker, or where a marker cut off at the end
    /// of the log so far could start.
    scanned: usize,
    /// Markers seen so far.
    pub seen: usize,
}

impl MarkerCounter {
    pub fn new(marker: &str) -> MarkerCounter {
        MarkerCounter { marker: marker.to_string(), whole_lines: false, skip_reprints: false, seen: 0, scanned: 0 }
    }

    /// Counts lines holding `marker`, each once it has ended (its `\n` has arrived).
    pub fn lines(marker: &str) -> MarkerCounter {
        MarkerCounter { whole_lines: true, ..MarkerCounter::new(marker) }
    }

    /// Counts the shell's new prompts ([`is_new_prompt`]): not a prompt the console prints again
    /// after programs' lines, nor `ozone> ` in the middle of a line.
    pub fn prompts() -> MarkerCounter {
        MarkerCounter { skip_reprints: true, ..MarkerCounter::new(PROMPT) }
    }

    /// Look at the log so far (it only ever grows); returns how many new markers it shows.
    pub fn update(&mut self, log: &[u8]) -> usize {
        let prompt = self.marker.as_bytes();
        let mut new = 0;
        while let Some(at) =
            log.get(self.scanned..).and_then(|rest| rest.windows(prompt.len()).position(|w| w == prompt))
        {
            let end = self.scanned + at + prompt.len();
            if self.whole_lines {
                let Some(newline) = log[end..].iter().position(|&b| b == b'\n') else {
                    // Come back to this marker when its line is complete.
                    self.scanned += at;
                    self.seen += new;
                    return new;
                };
                self.scanned = end + newline + 1;
            } else {
                self.scanned = end;
            }
            if self.skip_reprints && !is_new_prompt(log, end - prompt.len()) {
                continue;
            }
            new += 1;
        }
        self.scanned = self.scanned.max(log.len().saturating_sub(prompt.len() - 1));
        self.seen += new;
        new
    }
}

/// A script line that is not typed: `@wait TEXT` holds the next line back until `TEXT` appears
/// on the serial console after the line typed last, for commands whose effect comes later than
/// the prompt (a program started in the background).
pub const WAIT_DIRECTIVE: &str = "@wait ";

/// On a thread: type the script's lines into `input`, each when the next prompt is reported on
/// `prompts` (and, after an `@wait TEXT` line, once `TEXT` shows in `serial`); keep `input` open
/// until the reports end (QEMU's output closed). Returns how many lines were typed.
fn type_script(
    input: Option<ChildStdin>,
    lines: Vec<String>,
    prompts: Receiver<()>,
    serial: Arc<Mutex<Vec<u8>>>,
) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let Some(mut input) = input else { return 0 };
        let (mut typed, mut next, mut pending) = (0, 0, 0usize);
        // Where the serial log stood when the last line was typed: `@wait` looks from there on.
        let mut mark = 0;
        loop {
            if pending == 0 {
                match prompts.recv() {
                    Ok(()) => pending += 1,
                    Err(_) => return typed, // QEMU's output closed
                }
            }
            while let Some(text) = lines.get(next).and_then(|l| l.strip_prefix(WAIT_DIRECTIVE)) {
                let seen = || {
                    serial.lock().is_ok_and(|s| {
                        s.get(mark..).is_some_and(|s| s.windows(text.len()).any(|w| w == text.as_bytes()))
                    })
                };
                while !seen() {
                    match prompts.try_recv() {
                        Ok(()) => pending += 1,
                        Err(mpsc::TryRecvError::Disconnected) => return typed,
                        Err(mpsc::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
                next += 1;
            }
            pending -= 1;
            let Some(line) = lines.get(next) else { continue };
            let keys = format!("{line}\r");
            mark = serial.lock().map_or(mark, |s| s.len());
            if input.write_all(keys.as_bytes()).and_then(|()| input.flush()).is_err() {
                return typed; // QEMU is gone
            }
            next += 1;
            typed += 1;
        }
    })
}

/// How long the runner tries to reach QEMU's monitor, and waits for one command to complete.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after the guest's cue line the NMI comes: the guest goes on to block (or to let a
/// thread spin) right after printing it, and should be there when the NMI arrives.
const NMI_DELAY: Duration = Duration::from_millis(100);

/// The human monitor's prompt: it follows the banner, and each command's output.
const MONITOR_PROMPT: &[u8] = b"(qemu) ";

/// Read from the monitor until its prompt has appeared `count` times in what was read.
fn read_monitor_prompts(monitor: &mut UnixStream, count: usize) -> Result<()> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 512];
    let mut counter = MarkerCounter::new(std::str::from_utf8(MONITOR_PROMPT).unwrap_or("(qemu) "));
    while counter.seen < count {
        match monitor.read(&mut chunk) {
            Ok(0) => return Err("QEMU's monitor closed the connection".into()),
            Ok(n) => {
                seen.extend_from_slice(&chunk[..n]);
                counter.update(&seen);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading QEMU's monitor: {e}")),
        }
    }
    Ok(())
}

/// Connect to QEMU's monitor at `socket` (QEMU creates it at start: retry until it is there) and
/// read up to its first prompt.
fn connect_monitor(socket: &Path) -> Result<UnixStream> {
    let start = Instant::now();
    let mut monitor = loop {
        match UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(e) if start.elapsed() >= MONITOR_TIMEOUT => {
                return Err(format!("cannot connect to QEMU's monitor at {}: {e}", socket.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    monitor.set_read_timeout(Some(MONITOR_TIMEOUT)).map_err(|e| format!("monitor socket: {e}"))?;
    read_monitor_prompts(&mut monitor, 1)?;
    Ok(monitor)
}

/// On a thread: for each cue on `cues` (the guest printed the marker line), wait [`NMI_DELAY`],
/// send `nmi` to QEMU's monitor at `socket`, wait for the command to complete, then type `ack`
/// into `input` (COM1).
/// Problems are written to `stderr` (QEMU's captured standard error, shown with a failing run).
/// Returns how many NMIs were injected.
fn inject_nmis(
    input: Option<ChildStdin>,
    socket: PathBuf,
    ack: String,
    cues: Receiver<()>,
    stderr: Arc<Mutex<Vec<u8>>>,
) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let Some(mut input) = input else { return 0 };
        let mut monitor = None;
        let mut injected = 0;
        // Keep `input` open until the cues end (QEMU's output closed).
        while cues.recv().is_ok() {
            std::thread::sleep(NMI_DELAY);
            let step = (|| -> Result<()> {
                if monitor.is_none() {
                    monitor = Some(connect_monitor(&socket)?);
                }
                let m = monitor.as_mut().ok_or("no monitor")?;
                m.write_all(b"nmi\n").map_err(|e| format!("writing to QEMU's monitor: {e}"))?;
                read_monitor_prompts(m, 1)?;
                input
                    .write_all(ack.as_bytes())
                    .and_then(|()| input.flush())
                    .map_err(|e| format!("typing at the console: {e}"))
            })();
            match step {
                Ok(()) => injected += 1,
                Err(e) => {
                    if let Ok(mut log) = stderr.lock() {
                        log.extend_from_slice(format!("xtask: NMI injection {}: {e}\n", injected + 1).as_bytes());
                    }
                    monitor = None;
                }
            }
        }
        injected
    })
}

/// The lines of a script for [`Run::script`]: blank lines and lines starting with `#` are
/// skipped; `label` names the script in errors.
pub fn script_lines(label: &str, text: &str) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(format!("{label}:{}: the line holds the control character {c:?}", i + 1));
        }
        lines.push(line.to_string());
    }
    if lines.is_empty() {
        return Err(format!("{label}: the script has no lines to type (blank lines and # comments are skipped)"));
    }
    Ok(lines)
}

/// Read the script file at `path` ([`script_lines`]).
pub fn read_script(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the script {}: {e}", path.display()))?;
    script_lines(&path.display().to_string(), &text)
}

/// Sees the whole captured log after each read (used to count prompts).
type Watcher = Box<dyn FnMut(&[u8]) + Send>;

type Sink = Box<dyn Write + Send>;

/// Copy everything from `source` into `buffer` (and to `echo`) on a thread; show `watcher` the
/// whole buffer after each read.
fn tee<R: Read + Send + 'static>(
    source: Option<R>,
    mut echo: Option<Sink>,
    buffer: &Arc<Mutex<Vec<u8>>>,
    mut watcher: Option<Watcher>,
) -> JoinHandle<()> {
    let buffer = Arc::clone(buffer);
    std::thread::spawn(move || {
        let Some(mut source) = source else { return };
        let mut chunk = [0u8; 4096];
        loop {
            match source.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let mut buffer = buffer.lock().unwrap();
                    buffer.extend_from_slice(&chunk[..n]);
                    if let Some(watcher) = watcher.as_mut() {
                        watcher(&buffer);
                    }
                    drop(buffer);
                    if let Some(echo) = echo.as_mut() {
                        let _ = echo.write_all(&chunk[..n]);
                        let _ = echo.flush();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })
}

/// Stop QEMU: SIGTERM (QEMU shuts down and restores the terminal), then SIGKILL if it is still
/// there after two seconds. With `group`, the signals go to QEMU's whole process group.
fn stop(child: &mut Child, group: bool) -> Option<std::process::ExitStatus> {
    let pid = child.id() as libc::pid_t;
    let target = if group { -pid } else { pid };
    let signal = |sig| {
        // SAFETY: kill(2) has no memory-safety preconditions. `target` is QEMU's pid (or its
        // process group, which it leads), and it cannot have been reused: we have not reaped it.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(target, sig);
        }
    };
    signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            if group {
                signal(libc::SIGKILL); // anything QEMU left behind in its group
            }
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(libc::SIGKILL);
    child.wait().ok()
}

/// Quote `arg` for display in a shell-like command line.
fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `cargo xtask qemu`: build, boot the full system (with `--tests`, with the test overlay; with
/// `--overlay FILE`, with that overlay) with
/// the serial console on stdio (or type the `--script` at it); `Ok(true)` when the guest shut
/// down cleanly (and the whole script was typed).
pub fn command(ws: &Workspace, args: &QemuArgs) -> Result<bool> {
    let script = args.script.as_deref().map(read_script).transpose()?;
    let use_iso = args.iso || args.uefi;
    let mut needs = vec![Need::Qemu];
    if use_iso {
        needs.push(Need::GrubIso);
    }
    if args.uefi {
        needs.push(Need::Ovmf);
    }
    deps::ensure_rust_target()?;
    deps::ensure(&needs)?;

    let artifacts = build::build_all(ws, Profile::from_release_flag(args.release))?;
    let seed = initrd::resolve_seed(ws, args.seed)?;
    let overlaid;
    let (system, initrd_name) = if let Some(file) = &args.overlay {
        overlaid = crate::system::load_with_overlay(ws, file, &artifacts.programs, MEMORY_MIB)?;
        (&overlaid, "default-overlay")
    } else if args.tests {
        (&artifacts.test_system, "default-tests")
    } else {
        (&artifacts.system, "default")
    };
    let initrd = initrd::write_system_initrd(ws, initrd_name, &artifacts, system, &seed)?;
    let boot = if use_iso {
        let iso = crate::iso::build_grub_iso(ws, &artifacts.kernel, &initrd, &args.append)?;
        let uefi = if args.uefi { Some(Ovmf::find().ok_or_else(deps::ovmf_missing)?) } else { None };
        Boot::Iso { iso, uefi }
    } else {
        Boot::Pvh { kernel: artifacts.kernel.clone(), initrd, cmdline: args.append.clone() }
    };
    let accel = if args.tcg || args.icount { Accel::Tcg } else { Accel::detect() };
    let run = Run {
        boot,
        accel,
        icount: args.icount,
        gdb: args.gdb,
        debug_exit: true,
        timeout: args.timeout,
        console: if script.is_some() { Console::Echo } else { Console::Interactive },
        script,
        scratch: ws.target().join("qemu"),
        nmi: None,
        disks: if args.no_disk {
            Vec::new()
        } else {
            vec![disk_image(&ws.target().join(DISK_IMAGE), args.fresh_disk)?]
        },
        net: args.net.clone(),
        raw_nics: 0,
    };
    let programs: Vec<&str> = system.description.programs.iter().map(|p| p.name.as_str()).collect();
    eprintln!("xtask: instance seed {}", seed.to_hex());
    eprintln!("xtask: programs of {}: {}", system.source, programs.join(", "));
    eprintln!("xtask: running: {}", run.render());
    if args.gdb {
        eprintln!(
            "xtask: QEMU waits for a debugger on localhost:1234; attach with:\n  gdb {} -ex 'target remote localhost:1234'",
            artifacts.kernel.display()
        );
    }
    if let Some(lines) = &run.script {
        eprintln!("xtask: typing {} script lines, each after a `{PROMPT}` prompt", lines.len());
    }
    let result = run.run()?;
    eprintln!("xtask: {}", result.outcome);
    if let Outcome::QemuError(_) = result.outcome {
        eprintln!("xtask: command: {}", result.command);
    }
    let mut whole_script = true;
    let to_type = run.script.as_ref().map(|l| l.iter().filter(|l| !l.starts_with(WAIT_DIRECTIVE)).count());
    if let Some(to_type) = to_type
        && result.typed < to_type
    {
        eprintln!(
            "xtask: the guest showed only {} `{PROMPT}` prompts: {} of the {} script lines were not typed",
            result.typed,
            to_type - result.typed,
            to_type
        );
        whole_script = false;
    }
    Ok(result.outcome.is_clean() && whole_script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_exit_statuses() {
        assert_eq!(decode(Some(33), None, ""), Outcome::Exit(ExitCode::Success));
        assert_eq!(decode(Some(35), None, ""), Outcome::Exit(ExitCode::KernelFault));
        assert_eq!(decode(Some(37), None, ""), Outcome::Exit(ExitCode::BootFailure));
        assert_eq!(decode(Some(39), None, ""), Outcome::Exit(ExitCode::UserFault));
        assert!(decode(Some(33), None, "").is_clean());
        assert!(!decode(Some(39), None, "").is_clean());
    }

    #[test]
    fn status_zero_needs_the_power_off_marker() {
        let log = format!("ozone: boot ok\n{}\n", markers::POWER_OFF);
        assert_eq!(decode(Some(0), None, &log), Outcome::PowerOff);
        assert!(decode(Some(0), None, &log).is_clean());
        assert_eq!(decode(Some(0), None, "ozone: test: triple fault\n"), Outcome::GuestReset);
        assert!(!Outcome::GuestReset.is_clean());
        assert_eq!(Outcome::GuestReset.to_string(), "guest reset (triple fault?)");
    }

    #[test]
    fn other_statuses_are_qemu_errors() {
        for status in [1, 2, 3, 31, 41, 255] {
            let outcome = decode(Some(status), None, markers::POWER_OFF);
            assert!(matches!(outcome, Outcome::QemuError(_)), "status {status}: {outcome:?}");
        }
        let killed = decode(None, Some(9), "");
        assert_eq!(killed, Outcome::QemuError("QEMU was killed by signal 9".into()));
        assert!(!killed.is_clean());
    }

    #[test]
    fn timeout_is_a_hang() {
        let outcome = Outcome::Timeout(Duration::from_secs(60));
        assert!(!outcome.is_clean());
        assert!(outcome.to_string().starts_with("hang:"));
    }

    #[test]
    fn virtualization_flags() {
        assert!(cpu_has_virtualization("processor : 0\nflags\t\t: fpu vme vmx sse\n"));
        assert!(cpu_has_virtualization("flags : fpu svm\n"));
        assert!(!cpu_has_virtualization("flags : fpu vme sse hypervisor\n"));
        assert!(!cpu_has_virtualization("model name : vmx svm\nflags : fpu\n"));
    }

    #[test]
    fn pvh_command_line() {
        let mut run = Run::pvh(
            Path::new("k.elf"),
            Path::new("i.tar"),
            "ozone.test=triple-fault",
            Duration::from_secs(1),
            Path::new("/tmp"),
        );
        let args = run.args().join(" ");
        for part in [
            "-machine q35",
            "-accel tcg -cpu max",
            "-m 512M",
            "-smp 1",
            "-display none",
            "-no-reboot",
            "-serial stdio",
            "-device isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel k.elf -initrd i.tar -append ozone.test=triple-fault",
        ] {
            assert!(args.contains(part), "missing `{part}` in `{args}`");
        }
        assert!(!args.contains("-icount"));
        run.icount = true;
        run.gdb = true;
        run.debug_exit = false;
        run.accel = Accel::Kvm;
        if let Boot::Pvh { cmdline, .. } = &mut run.boot {
            cmdline.clear();
        }
        let args = run.args().join(" ");
        assert!(args.contains("-icount shift=0,align=off,sleep=off"));
        assert!(args.contains("-s -S"));
        assert!(args.contains("-accel kvm -cpu host"));
        assert!(!args.contains("isa-debug-exit"));
        assert!(!args.contains("-append"));
        assert!(args.contains("-monitor none"));
        run.nmi = Some(NmiInjection { marker: "cue".into(), ack: "n".into() });
        run.scratch = PathBuf::from("/scratch");
        let args = run.args().join(" ");
        assert!(!args.contains("-monitor none"));
        let monitor = format!("-monitor unix:/scratch/monitor-{}.sock,server=on,wait=off", std::process::id());
        assert!(args.contains(&monitor), "{args}");
    }

    #[test]
    fn iso_command_lines() {
        let mut run = Run::pvh(Path::new("k"), Path::new("i"), "", Duration::from_secs(1), Path::new("/tmp"));
        run.boot = Boot::Iso { iso: PathBuf::from("os.iso"), uefi: None };
        let args = run.args().join(" ");
        assert!(args.contains("-cdrom os.iso"));
        assert!(!args.contains("pflash"));
        assert!(!args.contains("-kernel"));
        let ovmf = Ovmf { code: "/fw/CODE.fd".into(), vars: "/fw/VARS.fd".into() };
        run.boot = Boot::Iso { iso: PathBuf::from("os.iso"), uefi: Some(ovmf) };
        run.scratch = PathBuf::from("/scratch");
        let args = run.args().join(" ");
        assert!(args.contains("-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"));
        assert!(args.contains("-drive if=pflash,format=raw,unit=1,file=/scratch/ovmf-vars-"));
    }

    #[test]
    fn prompts_are_counted_once_even_when_cut() {
        let mut counter = MarkerCounter::new(PROMPT);
        let mut log = b"ozone: boot ok\n".to_vec();
        assert_eq!(counter.update(&log), 0);
        log.extend_from_slice(b"ozo");
        assert_eq!(counter.update(&log), 0);
        log.extend_from_slice(b"ne");
        assert_eq!(counter.update(&log), 0);
        log.extend_from_slice(b"> ");
        assert_eq!(counter.update(&log), 1, "a prompt cut across three reads");
        assert_eq!(counter.update(&log), 0, "no prompt is counted twice");
        log.extend_from_slice(b"ls\r\nagents\nozone> ozone> ");
        assert_eq!(counter.update(&log), 2);
        log.extend_from_slice(b"ozone>");
        assert_eq!(counter.update(&log), 0, "`ozone>` without its space is no prompt yet");
        assert_eq!(counter.seen, 3);
    }

    #[test]
    fn prompts_printed_again_after_programs_lines_are_not_new() {
        let mut counter = MarkerCounter::prompts();
        let mut log = b"OZONE-OS console\r\nozone> ".to_vec();
        assert_eq!(counter.update(&log), 1);
        log.extend_from_slice(b"\r\x1b[K[a] one\r\n\r\x1b[K[a] two\r\nozo");
        assert_eq!(counter.update(&log), 0);
        log.extend_from_slice(b"ne> ps\r\n ID NAME\r\nozone> ");
        assert_eq!(counter.update(&log), 1, "the prompt after the answer is new, the reprint is not");
        log.extend_from_slice(b"\r\x1b[K[b] ozone> fake\r\nozone> \r\nozone> ");
        assert_eq!(counter.update(&log), 1, "after an empty line; `ozone> ` inside a line is none");
        let text = String::from_utf8(log).unwrap();
        assert_eq!(fresh_prompts(&text).len(), 3);
        assert_eq!(text.matches(PROMPT).count(), 6);
    }

    #[test]
    fn marker_lines_are_counted_once_complete() {
        let mut counter = MarkerCounter::lines("cue");
        let mut log = b"a cue".to_vec();
        assert_eq!(counter.update(&log), 0, "the line has not ended");
        log.extend_from_slice(b" (spinning)");
        assert_eq!(counter.update(&log), 0);
        log.extend_from_slice(b"\nother\ncue 2\ncu");
        assert_eq!(counter.update(&log), 2);
        log.extend_from_slice(b"e 3\n");
        assert_eq!(counter.update(&log), 1);
        assert_eq!(counter.update(&log), 0);
        assert_eq!(counter.seen, 3);
    }

    #[test]
    fn script_files() {
        let text = "# a demo\n\nlist\r\n   \n  # indented comment\ngrant shell console \n\tshow  x\n";
        assert_eq!(script_lines("demo.txt", text).unwrap(), ["list", "grant shell console ", "\tshow  x"]);
        let err = script_lines("demo.txt", "list\nbad\x1b[A\n").unwrap_err();
        assert_eq!(err, "demo.txt:2: the line holds the control character '\\u{1b}'");
        assert!(script_lines("demo.txt", "# nothing\n\n").unwrap_err().contains("no lines to type"));
        assert!(read_script(Path::new("/nonexistent/demo.txt")).unwrap_err().starts_with("cannot read the script"));
    }

    #[test]
    fn quoting_for_display() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}

/// End-to-end checks of the runner against tiny hand-made PVH kernels (skipped without QEMU).
#[cfg(test)]
mod runner_tests {
    use super::*;

    /// Where the image is loaded and where its code, message and empty IDT descriptor are.
    const BASE: u32 = 0x10_0000;
    const CODE: u32 = 0x100;
    const MESSAGE: u32 = 0x180;
    const EMPTY_IDTR: u32 = 0x1c0;
    const MULTIBOOT2: usize = 0x1e0;

    /// A 32-bit ELF with a PVH entry note whose code prints `message` to COM1 and then runs
    /// `action` (32-bit machine code).
    fn pvh_elf(message: &str, action: &[u8]) -> Vec<u8> {
        let mut code = vec![0xBE]; // mov esi, message
        code.extend_from_slice(&(BASE + MESSAGE).to_le_bytes());
        code.extend_from_slice(&[
            0xAC, // lodsb
            0x84, 0xC0, // test al, al
            0x74, 0x07, // jz done
            0x66, 0xBA, 0xF8, 0x03, // mov dx, 0x3f8
            0xEE, // out dx, al
            0xEB, 0xF4, // jmp lodsb
        ]);
        code.extend_from_slice(action); // done:
        assert!(code.len() <= (MESSAGE - CODE) as usize && message.len() < 0x3f);

        let mut elf = vec![0u8; 0x200];
        let put = |elf: &mut Vec<u8>, at: usize, bytes: &[u8]| elf[at..at + bytes.len()].copy_from_slice(bytes);
        let u16s = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        // ELF header: ELFCLASS32, little endian, ET_EXEC, EM_386, two program headers at 52.
        put(&mut elf, 0, &[0x7f, b'E', b'L', b'F', 1, 1, 1]);
        put(&mut elf, 16, &u16s(&[2, 3]));
        put(&mut elf, 20, &u32s(&[1, BASE + CODE, 52, 0, 0]));
        put(&mut elf, 40, &u16s(&[52, 32, 2, 40, 0, 0]));
        // PT_LOAD of the whole file at BASE (R+X), then PT_NOTE of the PVH note at 116.
        put(&mut elf, 52, &u32s(&[1, 0, BASE, BASE, 0x200, 0x200, 5, 0x1000]));
        put(&mut elf, 84, &u32s(&[4, 116, BASE + 116, BASE + 116, 20, 20, 4, 4]));
        // XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", the 32-bit entry point.
        put(&mut elf, 116, &u32s(&[4, 4, 18]));
        put(&mut elf, 128, b"Xen\0");
        put(&mut elf, 132, &(BASE + CODE).to_le_bytes());
        put(&mut elf, CODE as usize, &code);
        put(&mut elf, MESSAGE as usize, message.as_bytes());
        // A multiboot2 header too, so GRUB boots the same image: magic, i386, length, checksum,
        // end tag.
        let (magic, length) = (0xE852_50D6u32, 24u32);
        let checksum = 0u32.wrapping_sub(magic).wrapping_sub(length);
        put(&mut elf, MULTIBOOT2, &u32s(&[magic, 0, length, checksum, 0, 8]));
        elf
    }

    /// Exit through isa-debug-exit with `code`, then halt.
    fn exit_with(code: ExitCode) -> Vec<u8> {
        let mut action = vec![0x66, 0xBA, 0xF4, 0x00, 0xB8]; // mov dx, 0xf4; mov eax, code
        action.extend_from_slice(&(code as u32).to_le_bytes());
        action.extend_from_slice(&[0xEF, 0xF4, 0xEB, 0xFD]); // out dx, eax; hlt; jmp hlt
        action
    }

    /// ACPI power-off on q35: SLP_TYP 0 | SLP_EN to PM1a_CNT (0x604).
    const POWER_OFF: &[u8] = &[0x66, 0xBA, 0x04, 0x06, 0x66, 0xB8, 0x00, 0x20, 0x66, 0xEF, 0xF4, 0xEB, 0xFD];
    /// cli; hlt forever.
    const HANG: &[u8] = &[0xFA, 0xF4, 0xEB, 0xFD];

    /// lidt of an empty IDT, then int3: #GP, #DF, triple fault.
    fn triple_fault() -> Vec<u8> {
        let mut action = vec![0x0F, 0x01, 0x1D];
        action.extend_from_slice(&(BASE + EMPTY_IDTR).to_le_bytes());
        action.push(0xCC);
        action
    }

    fn boot(name: &str, elf: &[u8], debug_exit: bool, timeout: u64) -> Option<RunResult> {
        if crate::which(QEMU).is_none() {
            eprintln!("skipping: {QEMU} is not installed");
            return None;
        }
        let dir = crate::scratch_dir(&format!("runner-{name}"));
        let kernel = dir.join("kernel.elf");
        let initrd = dir.join("initrd.tar");
        std::fs::write(&kernel, elf).unwrap();
        std::fs::write(&initrd, crate::initrd::initrd_bytes(b"x", &crate::initrd::Seed([0; 32])).unwrap()).unwrap();
        let mut run = Run::pvh(&kernel, &initrd, "ozone.test=none", Duration::from_secs(timeout), &dir);
        run.debug_exit = debug_exit;
        let result = run.run().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        Some(result)
    }

    #[test]
    fn success_exit_and_serial_capture() {
        let elf = pvh_elf("ozone: boot ok\n", &exit_with(ExitCode::Success));
        let Some(result) = boot("success", &elf, true, 60) else {
            return;
        };
        assert_eq!(result.outcome, Outcome::Exit(ExitCode::Success), "{result:?}");
        assert_eq!(result.serial, "ozone: boot ok\n");
    }

    #[test]
    fn kernel_fault_exit() {
        let elf = pvh_elf("ozone: kernel exception\n", &exit_with(ExitCode::KernelFault));
        let Some(result) = boot("fault", &elf, true, 60) else {
            return;
        };
        assert_eq!(result.outcome, Outcome::Exit(ExitCode::KernelFault), "{result:?}");
    }

    #[test]
    fn triple_fault_is_a_reset() {
        let elf = pvh_elf("ozone: test: triple fault\n", &triple_fault());
        let Some(result) = boot("reset", &elf, true, 60) else {
            return;
        };
        assert_eq!(result.outcome, Outcome::GuestReset, "{result:?}");
        assert!(result.serial.contains("triple fault"));
    }

    #[test]
    fn acpi_power_off() {
        let elf = pvh_elf(&format!("{}\n", markers::POWER_OFF), POWER_OFF);
        let Some(result) = boot("poweroff", &elf, false, 60) else {
            return;
        };
        assert_eq!(result.outcome, Outcome::PowerOff, "{result:?}");
    }

    #[test]
    fn hang_times_out() {
        let elf = pvh_elf("ozone: boot ok\n", HANG);
        let Some(result) = boot("hang", &elf, true, 3) else {
            return;
        };
        assert_eq!(result.outcome, Outcome::Timeout(Duration::from_secs(3)), "{result:?}");
        assert_eq!(result.serial, "ozone: boot ok\n");
        assert!(result.elapsed < Duration::from_secs(10), "{:?}", result.elapsed);
    }

    /// A stand-in for QEMU with a shell on its "serial console": it fails if anything was typed
    /// before its prompt, echoes each line it reads up to `\r`, and powers off at `shutdown`.
    const FAKE_GUEST: &str = r#"
printf 'ozone: boot ok\n'
sleep 0.2
while :; do
    if read -t 0; then printf 'typed before the prompt\n'; exit 3; fi
    printf 'ozone> '
    IFS= read -r -d $'\r' line || exit 4
    printf '%s\n' "$line"
    case $line in shutdown) printf 'ozone: power off (status Success)\n'; exit 0 ;; esac
    sleep 0.1
done
"#;

    fn fake_run(script: &[&str], timeout: u64) -> Option<RunResult> {
        let Some(bash) = crate::which("bash") else {
            eprintln!("skipping: no bash for the fake guest");
            return None;
        };
        let mut run = Run::pvh(Path::new("k"), Path::new("i"), "", Duration::from_secs(timeout), Path::new("/tmp"));
        run.script = Some(script.iter().map(|l| l.to_string()).collect());
        Some(run.run_program(&bash, &["-c".to_string(), FAKE_GUEST.to_string()]).unwrap())
    }

    #[test]
    fn script_lines_are_typed_at_prompts() {
        let Some(result) = fake_run(&["list", "grant shell console", "shutdown", "never typed"], 30) else {
            return;
        };
        assert_eq!(result.outcome, Outcome::PowerOff, "{result:?}");
        assert_eq!(result.typed, 3, "{result:?}");
        assert_eq!(
            result.serial,
            "ozone: boot ok\nozone> list\nozone> grant shell console\nozone> shutdown\nozone: power off (status Success)\n"
        );
    }

    #[test]
    fn a_script_without_enough_prompts_times_out() {
        // `one` is no shutdown: the fake guest prints its next prompt and waits for a line.
        let Some(result) = fake_run(&["one"], 2) else {
            return;
        };
        assert_eq!(result.outcome, Outcome::Timeout(Duration::from_secs(2)), "{result:?}");
        assert_eq!(result.typed, 1);
        assert_eq!(result.serial, "ozone: boot ok\nozone> one\nozone> ");
    }

    #[test]
    fn nmi_injection_needs_the_console_to_itself() {
        let mut run = Run::pvh(Path::new("k"), Path::new("i"), "", Duration::from_secs(1), Path::new("/tmp"));
        run.nmi = Some(NmiInjection { marker: "cue".into(), ack: "n".into() });
        run.script = Some(vec!["x".into()]);
        let err = run.run_program(Path::new("/bin/true"), &[]).unwrap_err();
        assert!(err.contains("injects NMIs"), "{err}");
        run.script = None;
        run.console = Console::Interactive;
        assert!(run.run_program(Path::new("/bin/true"), &[]).unwrap_err().contains("injects NMIs"));
    }

    #[test]
    fn a_script_needs_a_captured_console() {
        let mut run = Run::pvh(Path::new("k"), Path::new("i"), "", Duration::from_secs(1), Path::new("/tmp"));
        run.console = Console::Interactive;
        run.script = Some(vec!["x".into()]);
        let err = run.run_program(Path::new("/bin/true"), &[]).unwrap_err();
        assert!(err.contains("cannot use the interactive console"), "{err}");
    }

    /// The GRUB ISO boots the kernel image under SeaBIOS and under OVMF.
    #[test]
    fn grub_iso_boots() {
        let tools = ["grub-mkrescue", "xorriso", "mformat"];
        if crate::which(QEMU).is_none() || tools.iter().any(|t| crate::which(t).is_none()) {
            eprintln!("skipping: {QEMU} or the GRUB ISO tools are not installed");
            return;
        }
        let root = crate::scratch_dir("runner-iso");
        let ws = Workspace { root: root.clone() };
        let kernel = root.join("kernel.elf");
        let initrd = root.join("initrd.tar");
        crate::write_file(&kernel, &pvh_elf("ozone: boot ok\n", &exit_with(ExitCode::Success))).unwrap();
        crate::write_file(&initrd, b"initrd").unwrap();
        let iso = crate::iso::build_grub_iso(&ws, &kernel, &initrd, "").unwrap();
        let firmwares = [None].into_iter().chain(Ovmf::find().map(Some));
        for uefi in firmwares {
            let mut run = Run::pvh(&kernel, &initrd, "", Duration::from_secs(120), &root);
            run.boot = Boot::Iso { iso: iso.clone(), uefi: uefi.clone() };
            let result = run.run().unwrap();
            eprintln!("{} in {:?}", if uefi.is_some() { "OVMF" } else { "SeaBIOS" }, result.elapsed);
            assert_eq!(result.outcome, Outcome::Exit(ExitCode::Success), "{uefi:?}: {result:?}");
            assert!(result.serial.contains("ozone: boot ok\n"), "{uefi:?}: {result:?}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
