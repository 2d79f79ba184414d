//! `cargo xtask`: build, boot, test and benchmark OZONE-OS.
//!
//! This file holds the command-line interface: it parses the arguments by hand into a
//! [`Command`] and dispatches to the modules that do the work:
//!
//! - [`build`]: the cargo builds of the kernel and the userspace programs,
//! - [`check`]: the guardrails (rustfmt, clippy, rustdoc) behind `cargo xtask check`,
//! - [`system`]: the system description (`initrd/system.toml`) checked and compiled, alone and
//!   with its test overlay (`initrd/system-tests.toml`),
//! - [`initrd`]: the instance seed and the initrd archive,
//! - [`qemu`]: the QEMU runner and how a run's result is decoded,
//! - [`iso`]: the GRUB and Limine ISO images,
//! - [`deps`]: checking (and on Debian installing) the prerequisites,
//! - [`tests`]: the QEMU test list behind `cargo xtask test`,
//! - [`bench`](mod@bench): the in-guest benchmarks behind `cargo xtask bench`,
//! - [`new_agent`]: `cargo xtask new-agent`, a new agent or server in a crate of its own.
//!
//! Every error ends up as one line `xtask: <message>` on stderr (one such line per problem when
//! there are several, as for the system description) and a non-zero exit status.
//!
//! `unsafe` is denied here except for three libc calls, each allowed where it is made: the
//! effective user id (`deps`), QEMU's parent-death signal and the signals that stop it (`qemu`).
#![deny(unsafe_code)]

mod bench;
mod build;
mod check;
mod deps;
mod initrd;
mod iso;
mod new_agent;
mod qemu;
mod studio;
mod system;
mod tests;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use initrd::Seed;

/// Errors are plain messages: every one is printed as a single `xtask: ...` line.
pub type Result<T, E = String> = std::result::Result<T, E>;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  qemu   build everything and boot OZONE-OS in QEMU, serial console on stdio
         [--release] [--icount] [--gdb] [--iso] [--uefi] [--tcg]
         [--timeout SECS] [--append CMDLINE] [--seed HEX64] [--script FILE] [--tests]
         [--overlay FILE] [--fresh-disk] [--no-disk] [--net [HOST:GUEST,...]]
         [--peer listen|connect]
         --tests adds the test programs (initrd/system-tests.toml) to the system;
         --overlay adds the programs of another overlay of that form instead (the
         scenario programs: initrd/system-scenarios.toml);
         the disk is target/ozone-disk.img (64 MiB, made on first use; --fresh-disk
         makes it anew, --no-disk boots without one);
         --iso boots the GRUB ISO under SeaBIOS, --uefi boots it under OVMF;
         --script types FILE's lines at the console, each after an `ozone> ` prompt
         (blank lines and # comments skipped), then waits for the guest to end;
         exits 0 when the guest shuts down cleanly, 1 otherwise or when SECS pass
  iso    build the hybrid BIOS/UEFI GRUB ISO (target/ozone.iso)
         [--release] [--append CMDLINE] [--seed HEX64]
         [--limine DIR]   build target/ozone-limine.iso from a Limine 8.x binary release
  check  formatting, clippy and rustdoc, warnings as errors, for the host and the
         bare-metal target (what CI runs first; see docs/CONTRIBUTING.md)
  test   the checks, host tests, then the QEMU boot tests
         [--filter NAME]  only the QEMU tests whose name contains NAME (skips checks and
                          host tests)
         [--release] [--seed HEX64]
  bench  in-guest benchmarks under -icount (release build), one BENCH line each
         [--filter NAME]  only the benchmarks whose name contains NAME
         [--seed HEX64]
         [--append CMDLINE]  kernel command line of every benchmark boot (e.g.
                             \"ozone.fpu=eager ozone.spectre=ibpb\", docs/hardening.md)
  new-agent NAME   a new agent in agents/NAME/ (a workspace member), built with the
         system; prints its [[program]] block for initrd/system.toml
         [--server]       a server of the interface NAME, and its protocol crate
                          agents/NAME-protocol/ (the methods its clients call)
         [--uses IFACE]   an agent calling IFACE through the crate IFACE-protocol
         [--dir DIR]      the crate in DIR, outside the workspace (its own [workspace]);
                          the block names it with path = \"DIR\"
         [--add]          append the block to initrd/system.toml (checked first)
  studio record   boot the scenario programs (initrd/system-scenarios.toml) under
         -icount with Studio printing their event traces, and write each program's
         trace to target/studio/traces/run-R/ (every run with other seeds)
         [--runs N]       how many runs (boots), default 2
         [--from R]       record runs R..N only (the others' traces stay): two
                          recordings of different runs may go side by side
  studio train     train Studio's behaviour model (candle, on the host, deterministic) on
         the recorded traces' training lives; writes initrd/studio.model
  studio eval      score the model and the classical baseline (stide) side by side on the
         held-out lives (the last runs, and programs never trained on); draws their
         ROC curves into docs/studio-roc.svg
  studio compare   train the three architectures (embedding + MLP, 1-D convolution, GRU)
         the same way and judge each with Studio's detector on the held-out lives
  studio validate  judge Studio's detector under each frame length and spike count on the
         two runs before the held-out ones, with a throwaway model trained on the
         earlier runs (settings are chosen on this, never on the held-out lives)
         train, eval, compare and validate take [--held-out N]: the last N runs are
         held out (default 2), the runs before them trained on (runs recorded after
         a model was trained are judged with its training runs the same)
  help   print this message
";

/// `cargo xtask studio ...`.
#[derive(Debug, PartialEq, Eq)]
pub enum StudioCommand {
    Record {
        runs: u64,
        from: u64,
    },
    /// `held_out` in each: how many of the last runs are held out (judged by `eval` and
    /// `compare`; `validate` judges the two runs before them); the others are the training runs.
    Train {
        held_out: u64,
    },
    Eval {
        held_out: u64,
    },
    Compare {
        held_out: u64,
    },
    Validate {
        held_out: u64,
    },
}

/// Options of `cargo xtask qemu`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QemuArgs {
    pub release: bool,
    pub icount: bool,
    pub gdb: bool,
    pub iso: bool,
    pub uefi: bool,
    pub tcg: bool,
    pub timeout: Option<Duration>,
    pub append: String,
    pub seed: Option<Seed>,
    /// Lines to type at the serial console (`--script FILE`).
    pub script: Option<PathBuf>,
    /// Boot the system with the test overlay (`--tests`).
    pub tests: bool,
    /// Boot the system with this overlay instead (`--overlay FILE`).
    pub overlay: Option<PathBuf>,
    /// Start over with an empty disk image (`--fresh-disk`).
    pub fresh_disk: bool,
    /// Attach no disk (`--no-disk`).
    pub no_disk: bool,
    /// A network card and its link (`--net`, `--peer`).
    pub net: Option<qemu::NetLink>,
}

/// The host port two instances joined with `--peer` meet on (127.0.0.1).
pub const PEER_PORT: u16 = 47011;

/// `HOST:GUEST[,HOST:GUEST...]` port forwards.
fn parse_forwards(v: &str) -> Result<Vec<(u16, u16)>> {
    v.split(',')
        .map(|pair| {
            let bad = || format!("--net takes HOST:GUEST port pairs (e.g. 5555:7), not `{pair}`");
            let (h, g) = pair.split_once(':').ok_or_else(bad)?;
            let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
            Ok((port(h)?, port(g)?))
        })
        .collect()
}

/// Options of `cargo xtask iso`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IsoArgs {
    pub release: bool,
    pub limine: Option<PathBuf>,
    pub append: String,
    pub seed: Option<Seed>,
}

/// Options of `cargo xtask test`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestArgs {
    pub filter: Option<String>,
    pub release: bool,
    pub seed: Option<Seed>,
}

/// Options of `cargo xtask bench`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BenchArgs {
    /// Only the benchmarks whose name contains this.
    pub filter: Option<String>,
    pub seed: Option<Seed>,
    /// Kernel command line of every benchmark boot.
    pub append: String,
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Qemu(QemuArgs),
    Iso(IsoArgs),
    Test(TestArgs),
    Bench(BenchArgs),
    Check,
    NewAgent(new_agent::NewAgentArgs),
    /// `studio record|train|eval|compare|validate`.
    Studio(StudioCommand),
    Help,
}

/// The workspace this xtask belongs to, and the paths derived from it.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    /// The workspace root is the parent of this crate's manifest directory.
    pub fn locate() -> Workspace {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest.parent().map(Path::to_path_buf).unwrap_or(manifest);
        Workspace { root }
    }

    /// `<workspace>/target`: every file xtask produces lives below it.
    pub fn target(&self) -> PathBuf {
        self.root.join("target")
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("xtask: {message}");
            eprintln!("xtask: run `cargo xtask help` for usage");
            return ExitCode::from(2);
        }
    };
    let ws = Workspace::locate();
    let result = match command {
        Command::Help => {
            print!("{USAGE}");
            Ok(true)
        }
        Command::Qemu(args) => qemu::command(&ws, &args),
        Command::Iso(args) => iso::command(&ws, &args).map(|()| true),
        Command::Test(args) => tests::command(&ws, &args),
        Command::Check => check::run(&ws),
        Command::Bench(args) => bench::command(&ws, &args).map(|()| true),
        Command::NewAgent(args) => new_agent::command(&ws, &args).map(|()| true),
        Command::Studio(StudioCommand::Record { runs, from }) => studio::record(&ws, from..runs).map(|()| true),
        Command::Studio(StudioCommand::Train { held_out }) => studio::train(&ws, held_out).map(|()| true),
        Command::Studio(StudioCommand::Eval { held_out }) => studio::eval(&ws, held_out).map(|()| true),
        Command::Studio(StudioCommand::Compare { held_out }) => studio::compare(&ws, held_out).map(|()| true),
        Command::Studio(StudioCommand::Validate { held_out }) => studio::validate(&ws, held_out).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            for line in message.lines() {
                eprintln!("xtask: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Parse the arguments after `cargo xtask`.
pub fn parse_args(args: &[String]) -> Result<Command> {
    let Some((name, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    let mut opts = Options::new(name, rest);
    let command = match name.as_str() {
        "help" | "-h" | "--help" => Command::Help,
        "qemu" => {
            let mut a = QemuArgs::default();
            while let Some(opt) = opts.next_option()? {
                match opt.as_str() {
                    "--release" => a.release = true,
                    "--icount" => a.icount = true,
                    "--gdb" => a.gdb = true,
                    "--iso" => a.iso = true,
                    "--uefi" => a.uefi = true,
                    "--tcg" => a.tcg = true,
                    "--timeout" => a.timeout = Some(parse_timeout(&opts.value(&opt)?)?),
                    "--append" => a.append = parse_cmdline(&opts.value(&opt)?)?,
                    "--seed" => a.seed = Some(Seed::parse_hex(&opts.value(&opt)?)?),
                    "--script" => a.script = Some(PathBuf::from(opts.value(&opt)?)),
                    "--tests" => a.tests = true,
                    "--overlay" => a.overlay = Some(PathBuf::from(opts.value(&opt)?)),
                    "--fresh-disk" => a.fresh_disk = true,
                    "--no-disk" => a.no_disk = true,
                    "--net" => {
                        let forward = match opts.optional_value() {
                            Some(v) => parse_forwards(&v)?,
                            None => vec![(5555, 7)],
                        };
                        a.net = Some(qemu::NetLink::User { forward });
                    }
                    "--peer" => {
                        let listen = match opts.value(&opt)?.as_str() {
                            "listen" => true,
                            "connect" => false,
                            other => return Err(format!("--peer takes `listen` or `connect`, not `{other}`")),
                        };
                        let mac = if listen { "52:54:00:0f:00:01" } else { "52:54:00:0f:00:02" };
                        a.net = Some(qemu::NetLink::Peer { listen, port: PEER_PORT, mac: mac.into() });
                    }
                    _ => return Err(opts.unknown(&opt)),
                }
            }
            if a.tests && a.overlay.is_some() {
                return Err("--tests and --overlay do not go together (each adds an overlay)".into());
            }
            if a.fresh_disk && a.no_disk {
                return Err("--fresh-disk and --no-disk do not go together".into());
            }
            Command::Qemu(a)
        }
        "iso" => {
            let mut a = IsoArgs::default();
            while let Some(opt) = opts.next_option()? {
                match opt.as_str() {
                    "--release" => a.release = true,
                    "--limine" => a.limine = Some(PathBuf::from(opts.value(&opt)?)),
                    "--append" => a.append = parse_cmdline(&opts.value(&opt)?)?,
                    "--seed" => a.seed = Some(Seed::parse_hex(&opts.value(&opt)?)?),
                    _ => return Err(opts.unknown(&opt)),
                }
            }
            Command::Iso(a)
        }
        "test" => {
            let mut a = TestArgs::default();
            while let Some(opt) = opts.next_option()? {
                match opt.as_str() {
                    "--filter" => a.filter = Some(opts.value(&opt)?),
                    "--release" => a.release = true,
                    "--seed" => a.seed = Some(Seed::parse_hex(&opts.value(&opt)?)?),
                    _ => return Err(opts.unknown(&opt)),
                }
            }
            Command::Test(a)
        }
        "check" => {
            if let Some(opt) = opts.next_option()? {
                return Err(opts.unknown(&opt));
            }
            Command::Check
        }
        "bench" => {
            let mut a = BenchArgs::default();
            while let Some(opt) = opts.next_option()? {
                match opt.as_str() {
                    "--filter" => a.filter = Some(opts.value(&opt)?),
                    "--seed" => a.seed = Some(Seed::parse_hex(&opts.value(&opt)?)?),
                    "--append" => a.append = parse_cmdline(&opts.value(&opt)?)?,
                    _ => return Err(opts.unknown(&opt)),
                }
            }
            Command::Bench(a)
        }
        "new-agent" => {
            let mut a = new_agent::NewAgentArgs::default();
            let Some(name) = rest.first().filter(|n| !n.starts_with("--")) else {
                return Err("`cargo xtask new-agent` needs the program's name first: new-agent NAME [options]".into());
            };
            a.name = name.clone();
            let mut opts = Options::new("new-agent", &rest[1..]);
            while let Some(opt) = opts.next_option()? {
                match opt.as_str() {
                    "--server" => a.server = true,
                    "--uses" => {
                        if a.uses.is_some() {
                            return Err("--uses is given once (an agent made here calls one interface)".into());
                        }
                        a.uses = Some(opts.value(&opt)?);
                    }
                    "--dir" => a.dir = Some(PathBuf::from(opts.value(&opt)?)),
                    "--add" => a.add = true,
                    _ => return Err(opts.unknown(&opt)),
                }
            }
            Command::NewAgent(a)
        }
        "studio" => match rest.first().map(String::as_str) {
            Some("record") => {
                let (mut runs, mut from) = (2, 0);
                let mut opts = Options::new("studio record", &rest[1..]);
                while let Some(opt) = opts.next_option()? {
                    match opt.as_str() {
                        "--runs" => runs = opts.runs(&opt)?,
                        "--from" => {
                            from = opts.value(&opt)?.parse().map_err(|_| "--from takes a run number")?;
                        }
                        _ => return Err(opts.unknown(&opt)),
                    }
                }
                if from >= runs {
                    return Err(format!("--from {from} records nothing: the runs are 0..{runs}"));
                }
                Command::Studio(StudioCommand::Record { runs, from })
            }
            Some(sub @ ("eval" | "train" | "compare" | "validate")) => {
                let mut held_out = ozone_cognition::corpus::HELD_OUT_RUNS;
                let name = format!("studio {sub}");
                let mut opts = Options::new(&name, &rest[1..]);
                while let Some(opt) = opts.next_option()? {
                    match opt.as_str() {
                        "--held-out" => held_out = opts.runs(&opt)?,
                        _ => return Err(opts.unknown(&opt)),
                    }
                }
                Command::Studio(match sub {
                    "eval" => StudioCommand::Eval { held_out },
                    "train" => StudioCommand::Train { held_out },
                    "validate" => StudioCommand::Validate { held_out },
                    _ => StudioCommand::Compare { held_out },
                })
            }
            _ => return Err("`cargo xtask studio` needs record, train, eval, compare or validate".into()),
        },
        other => {
            return Err(format!(
                "unknown command `{other}` (expected qemu, iso, test, bench, check, new-agent, studio or help)"
            ));
        }
    };
    Ok(command)
}

/// A cursor over one command's options; understands `--opt value` and `--opt=value`.
struct Options<'a> {
    command: &'a str,
    rest: std::slice::Iter<'a, String>,
    inline_value: Option<String>,
}

impl<'a> Options<'a> {
    fn new(command: &'a str, rest: &'a [String]) -> Options<'a> {
        Options { command, rest: rest.iter(), inline_value: None }
    }

    /// The next option name, or `None` at the end.
    fn next_option(&mut self) -> Result<Option<String>> {
        if let Some(value) = self.inline_value.take() {
            return Err(format!("unexpected value `{value}`"));
        }
        let Some(arg) = self.rest.next() else {
            return Ok(None);
        };
        if !arg.starts_with("--") {
            return Err(format!("unexpected argument `{arg}` for `cargo xtask {}`", self.command));
        }
        match arg.split_once('=') {
            Some((name, value)) => {
                self.inline_value = Some(value.to_string());
                Ok(Some(name.to_string()))
            }
            None => Ok(Some(arg.clone())),
        }
    }

    /// The value of option `opt`.
    fn value(&mut self, opt: &str) -> Result<String> {
        if let Some(value) = self.inline_value.take() {
            return Ok(value);
        }
        match self.rest.next() {
            Some(v) => Ok(v.clone()),
            None => Err(format!("option {opt} needs a value")),
        }
    }

    /// The value of option `opt` as a number of runs (at least 1).
    fn runs(&mut self, opt: &str) -> Result<u64> {
        self.value(opt)?
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{opt} takes a number of runs, at least 1"))
    }

    /// The value of an option whose value may be left out: `--opt=v`, or `--opt v` when `v` is
    /// not an option itself.
    fn optional_value(&mut self) -> Option<String> {
        if let Some(value) = self.inline_value.take() {
            return Some(value);
        }
        match self.rest.as_slice().first() {
            Some(v) if !v.starts_with("--") => self.rest.next().cloned(),
            _ => None,
        }
    }

    fn unknown(&mut self, opt: &str) -> String {
        self.inline_value = None;
        format!("unknown option `{opt}` for `cargo xtask {}`", self.command)
    }
}

fn parse_timeout(text: &str) -> Result<Duration> {
    match text.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("invalid --timeout `{text}`: expected a whole number of seconds > 0")),
    }
}

fn parse_cmdline(text: &str) -> Result<String> {
    if text.contains(['\n', '\r', '\0']) {
        return Err("the kernel command line must be a single line".to_string());
    }
    Ok(text.trim().to_string())
}

/// Look for `program` in `PATH`; returns its full path.
pub fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Create `dir` and its parents, with a message naming it on failure.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Read a whole file, with a message naming it on failure.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Write a whole file (creating its directory), with a message naming it on failure.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Copy a file (creating the destination directory), with a message naming both on failure.
pub fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        create_dir(dir)?;
    }
    std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

/// For tests: an empty directory of its own under the system's temporary directory.
#[cfg(test)]
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod cli_tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_args(&args)
    }

    #[test]
    fn studio_commands() {
        assert_eq!(
            parse(&["studio", "record", "--runs", "3"]),
            Ok(Command::Studio(StudioCommand::Record { runs: 3, from: 0 }))
        );
        assert_eq!(
            parse(&["studio", "record", "--runs", "10", "--from", "5"]),
            Ok(Command::Studio(StudioCommand::Record { runs: 10, from: 5 }))
        );
        assert!(parse(&["studio", "record", "--runs", "4", "--from", "4"]).unwrap_err().contains("records nothing"));
        assert!(parse(&["studio", "record", "--from", "x"]).is_err());
        assert_eq!(parse(&["studio", "train"]), Ok(Command::Studio(StudioCommand::Train { held_out: 2 })));
        assert_eq!(
            parse(&["studio", "train", "--held-out", "20"]),
            Ok(Command::Studio(StudioCommand::Train { held_out: 20 }))
        );
        assert_eq!(parse(&["studio", "eval"]), Ok(Command::Studio(StudioCommand::Eval { held_out: 2 })));
        assert_eq!(
            parse(&["studio", "eval", "--held-out", "16"]),
            Ok(Command::Studio(StudioCommand::Eval { held_out: 16 }))
        );
        assert!(parse(&["studio", "eval", "--held-out", "0"]).is_err());
        assert_eq!(parse(&["studio", "compare"]), Ok(Command::Studio(StudioCommand::Compare { held_out: 2 })));
        assert_eq!(
            parse(&["studio", "validate", "--held-out=3"]),
            Ok(Command::Studio(StudioCommand::Validate { held_out: 3 }))
        );
        assert!(parse(&["studio", "compare", "--x"]).unwrap_err().contains("--x"));
        assert!(parse(&["studio", "record", "--runs", "0"]).is_err());
        assert!(parse(&["studio"]).unwrap_err().contains("record, train, eval, compare or validate"));
    }

    #[test]
    fn no_arguments_is_help() {
        assert_eq!(parse(&[]), Ok(Command::Help));
        assert_eq!(parse(&["help"]), Ok(Command::Help));
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
    }

    #[test]
    fn qemu_options() {
        let seed = "00".repeat(31) + "ff";
        let cmd = parse(&[
            "qemu",
            "--release",
            "--icount",
            "--gdb",
            "--iso",
            "--uefi",
            "--timeout",
            "20",
            "--append",
            "ozone.test=triple-fault",
            "--seed",
            &seed,
            "--script",
            "demo.txt",
            "--tests",
            "--fresh-disk",
            "--net",
            "5555:7,8080:80",
        ])
        .unwrap();
        let mut bytes = [0u8; 32];
        bytes[31] = 0xff;
        assert_eq!(
            cmd,
            Command::Qemu(QemuArgs {
                release: true,
                icount: true,
                gdb: true,
                iso: true,
                uefi: true,
                tcg: false,
                timeout: Some(Duration::from_secs(20)),
                append: "ozone.test=triple-fault".into(),
                seed: Some(Seed(bytes)),
                script: Some("demo.txt".into()),
                tests: true,
                overlay: None,
                fresh_disk: true,
                no_disk: false,
                net: Some(qemu::NetLink::User { forward: vec![(5555, 7), (8080, 80)] }),
            })
        );
    }

    #[test]
    fn disk_and_network_options() {
        let net = |args: &[&str]| match parse(args) {
            Ok(Command::Qemu(a)) => Ok(a.net),
            Ok(_) => panic!("not qemu"),
            Err(e) => Err(e),
        };
        assert_eq!(net(&["qemu", "--net"]), Ok(Some(qemu::NetLink::User { forward: vec![(5555, 7)] })));
        assert_eq!(net(&["qemu", "--net", "--tests"]), Ok(Some(qemu::NetLink::User { forward: vec![(5555, 7)] })));
        assert_eq!(net(&["qemu", "--net=1:2"]), Ok(Some(qemu::NetLink::User { forward: vec![(1, 2)] })));
        for bad in ["0:7", "5555", "a:b", "5555:70000", "1:2,"] {
            let e = net(&["qemu", &format!("--net={bad}")]).unwrap_err();
            assert!(e.contains("--net takes HOST:GUEST port pairs"), "{bad}: {e}");
        }
        match net(&["qemu", "--peer", "listen"]) {
            Ok(Some(qemu::NetLink::Peer { listen: true, port, .. })) => assert_eq!(port, PEER_PORT),
            other => panic!("{other:?}"),
        }
        assert!(net(&["qemu", "--peer", "both"]).unwrap_err().contains("--peer takes `listen` or `connect`"));
        assert!(parse(&["qemu", "--fresh-disk", "--no-disk"]).unwrap_err().contains("do not go together"));
    }

    #[test]
    fn another_overlay() {
        let Command::Qemu(a) = parse(&["qemu", "--overlay", "initrd/system-scenarios.toml"]).unwrap() else {
            panic!("not qemu")
        };
        assert_eq!((a.overlay, a.tests), (Some(PathBuf::from("initrd/system-scenarios.toml")), false));
        let e = parse(&["qemu", "--tests", "--overlay", "x.toml"]).unwrap_err();
        assert!(e.contains("--tests and --overlay do not go together"), "{e}");
        assert!(parse(&["qemu", "--overlay"]).is_err());
    }

    #[test]
    fn equals_form() {
        let cmd = parse(&["qemu", "--timeout=5", "--append=a b"]).unwrap();
        let Command::Qemu(a) = cmd else { panic!("not qemu") };
        assert_eq!(a.timeout, Some(Duration::from_secs(5)));
        assert_eq!(a.append, "a b");
    }

    #[test]
    fn test_and_iso_and_bench_options() {
        assert_eq!(
            parse(&["test", "--filter", "boot"]),
            Ok(Command::Test(TestArgs { filter: Some("boot".into()), ..Default::default() }))
        );
        assert_eq!(
            parse(&["iso", "--limine", "/opt/limine"]),
            Ok(Command::Iso(IsoArgs { limine: Some("/opt/limine".into()), ..Default::default() }))
        );
        assert_eq!(parse(&["bench"]), Ok(Command::Bench(BenchArgs::default())));
        assert_eq!(
            parse(&["bench", "--append", "ozone.fpu=eager ozone.spectre=ibpb"]),
            Ok(Command::Bench(BenchArgs { append: "ozone.fpu=eager ozone.spectre=ibpb".into(), ..Default::default() }))
        );
        assert_eq!(
            parse(&["bench", "--filter", "boot_to_shell"]),
            Ok(Command::Bench(BenchArgs { filter: Some("boot_to_shell".into()), ..Default::default() }))
        );
        assert_eq!(parse(&["check"]), Ok(Command::Check));
    }

    #[test]
    fn errors() {
        assert!(parse(&["frobnicate"]).unwrap_err().contains("unknown command `frobnicate`"));
        assert!(parse(&["qemu", "--bogus"]).unwrap_err().contains("unknown option `--bogus`"));
        assert!(parse(&["iso", "--icount"]).unwrap_err().contains("unknown option `--icount`"));
        assert!(parse(&["qemu", "--timeout"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["qemu", "--timeout", "soon"]).unwrap_err().contains("invalid --timeout"));
        assert!(parse(&["qemu", "--timeout", "0"]).unwrap_err().contains("invalid --timeout"));
        assert!(parse(&["qemu", "--seed", "abc"]).unwrap_err().contains("64 hex digits"));
        assert!(parse(&["qemu", "stray"]).unwrap_err().contains("unexpected argument `stray`"));
        assert!(parse(&["qemu", "--release=yes"]).unwrap_err().contains("unexpected value `yes`"));
        assert!(parse(&["qemu", "--append", "a\nb"]).unwrap_err().contains("single line"));
        assert!(parse(&["test", "--filter"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["check", "--fix"]).unwrap_err().contains("unknown option `--fix`"));
    }
}
