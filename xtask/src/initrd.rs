//! The instance seed and the initrd archive.
//!
//! Every instance of OZONE-OS has a 32-byte seed from which the kernel and the servers derive
//! layouts and keys. It is created once from the OS's random source, kept in
//! `target/instance.seed` so the instance is reproducible, and can be overridden for one run with
//! `--seed HEX64`.
//!
//! The initrd is a ustar archive of regular files (names without `./`): `root-task`, the ELF the
//! kernel starts as the first user thread, and `instance.seed`, the 32 raw seed bytes. The full
//! system's initrd ([`write_system_initrd`]) adds `studio`, which the root task starts,
//! `system.bin`, the compiled system description (see [`crate::system`]), and every binary the
//! description names, under its `binary` name; its ELFs are stripped to what a loader reads
//! ([`strip_elf`]), which keeps the initrd, and the root task's count of initrd frame
//! capabilities, small (a debug build is mostly debug info). Guest test programs boot as the root task with
//! Studio beside them ([`write_initrd_from`]). Entries have mode 0644, owner 0 and mtime 0, so
//! the same inputs give the same archive bytes.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use ozone_agent_sdk::protocol::system::COMPILED_NAME;

use crate::build::Artifacts;
use crate::system::System;
use crate::{Result, Workspace};

/// Name of the root-task ELF inside the initrd.
pub const ROOT_TASK: &str = "root-task";
/// Name of the seed inside the initrd.
pub const SEED: &str = "instance.seed";

/// A 32-byte instance seed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub [u8; 32]);

impl Seed {
    /// Parse exactly 64 hex digits.
    pub fn parse_hex(text: &str) -> Result<Seed> {
        let text = text.trim();
        let bad = || format!("invalid seed `{text}`: expected 64 hex digits (32 bytes)");
        if text.len() != 64 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Seed(bytes))
    }

    /// The seed as 64 lowercase hex digits (what `--seed` accepts).
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// 32 fresh bytes from the OS's random source.
    pub fn random() -> Result<Seed> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
        Ok(Seed(bytes))
    }

    /// The seed stored at `path`, creating it (with fresh random bytes) if there is none.
    /// Returns the seed and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Seed, bool)> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    format!(
                        "{} holds {} bytes, expected 32; delete it to create a new instance seed",
                        path.display(),
                        bytes.len()
                    )
                })?;
                Ok((Seed(bytes), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed = Seed::random()?;
                // Write under a temporary name, then link it into place: a concurrent run never
                // sees half a seed, and the link fails if another run created the seed first.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                crate::write_file(&tmp, &seed.0)?;
                let linked = std::fs::hard_link(&tmp, path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok((seed, true)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Seed::load_or_create(path),
                    Err(e) => Err(format!("cannot create {}: {e}", path.display())),
                }
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seed({})", self.to_hex())
    }
}

/// Where the instance seed is kept.
pub fn seed_path(ws: &Workspace) -> PathBuf {
    ws.target().join("instance.seed")
}

/// The seed for this run: the `--seed` override, or the stored instance seed.
pub fn resolve_seed(ws: &Workspace, override_seed: Option<Seed>) -> Result<Seed> {
    if let Some(seed) = override_seed {
        return Ok(seed);
    }
    let path = seed_path(ws);
    let (seed, created) = Seed::load_or_create(&path)?;
    if created {
        eprintln!("xtask: created a new instance seed in {}", path.display());
    }
    Ok(seed)
}

/// The bytes of a ustar archive holding `entries` (name, contents) in order.
pub fn archive(entries: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).map_err(|e| format!("bad initrd entry name `{name}`: {e}"))?;
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *data).map_err(|e| format!("cannot build the initrd: {e}"))?;
    }
    builder.into_inner().map_err(|e| format!("cannot build the initrd: {e}"))
}

/// The bytes of an initrd whose root task is `root_task`.
pub fn initrd_bytes(root_task: &[u8], seed: &Seed) -> Result<Vec<u8>> {
    archive(&[(ROOT_TASK, root_task), (SEED, &seed.0)])
}

/// Write `target/initrd/<name>.tar` with `root_task` as the root task; returns its path.
pub fn write_initrd(ws: &Workspace, name: &str, root_task: &[u8], seed: &Seed) -> Result<PathBuf> {
    write_archive(ws, name, &initrd_bytes(root_task, seed)?)
}

/// Write `bytes` to `target/initrd/<name>.tar`; returns the path.
fn write_archive(ws: &Workspace, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = ws.target().join("initrd").join(format!("{name}.tar"));
    crate::write_file(&path, bytes)?;
    Ok(path)
}

/// Write `target/initrd/<name>.tar` with the ELF at `elf` as the root task, and Studio (`studio`,
/// built next to it) when it is there.
pub fn write_initrd_from(ws: &Workspace, name: &str, elf: &Path, seed: &Seed) -> Result<PathBuf> {
    let root_task = crate::read_file(elf)?;
    let studio_path = elf.with_file_name(STUDIO);
    let bytes = if studio_path.is_file() {
        let studio = crate::read_file(&studio_path)?;
        archive(&[(ROOT_TASK, &root_task), (SEED, &seed.0), (STUDIO, &studio)])?
    } else {
        initrd_bytes(&root_task, seed)?
    };
    write_archive(ws, name, &bytes)
}

/// Name of Studio's ELF in the initrd (and of its binary).
pub const STUDIO: &str = "studio";

/// Name of Studio's behaviour model in the initrd (`studio.model`, from [`crate::studio::MODEL`]).
pub const MODEL: &str = "studio.model";

/// The bytes of the full system's initrd: the root task, the seed, Studio, the compiled
/// description, Studio's behaviour model if there is one, and the binaries the description names
/// (read from where they were built and stripped).
pub fn system_initrd_bytes(
    root_task: &[u8],
    studio: &[u8],
    system: &System,
    seed: &Seed,
    model: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let binaries: Vec<(&str, Vec<u8>)> =
        system.binaries.iter().map(|(name, path)| Ok((name.as_str(), read_elf(path)?))).collect::<Result<_>>()?;
    let mut entries: Vec<(&str, &[u8])> =
        vec![(ROOT_TASK, root_task), (SEED, &seed.0), (STUDIO, studio), (COMPILED_NAME, &system.compiled)];
    if let Some(model) = model {
        entries.push((MODEL, model));
    }
    for (name, bytes) in &binaries {
        if entries.iter().any(|(n, _)| n == name) {
            return Err(format!("two initrd entries are called `{name}`"));
        }
        entries.push((name, bytes));
    }
    archive(&entries)
}

/// Write `target/initrd/<name>.tar` holding the full system `system` (the plain system of
/// `artifacts` or its test system) with the root task and Studio of `artifacts`, its ELFs
/// stripped; returns its path.
pub fn write_system_initrd(
    ws: &Workspace,
    name: &str,
    artifacts: &Artifacts,
    system: &System,
    seed: &Seed,
) -> Result<PathBuf> {
    let root_task = read_elf(&artifacts.root_task)?;
    let studio = read_elf(&artifacts.studio)?;
    // The trained model (`cargo xtask studio train`), committed with the tree; without it Studio
    // says so and watches with stide alone.
    let model_path = ws.root.join(crate::studio::MODEL);
    let model = std::fs::read(&model_path).ok();
    write_archive(ws, name, &system_initrd_bytes(&root_task, &studio, system, seed, model.as_deref())?)
}

/// A root task that is no ELF at all: 4 KiB of 0xAB.
pub fn garbage_root_task() -> Vec<u8> {
    vec![0xAB; 4096]
}

/// A valid ELF cut in half: at half the end of its loadable data, so the ELF and program headers
/// are intact but the segments reach past the end of the file. (Cutting the file itself in half
/// would mostly cut debug info, which a loader rightly ignores.) Falls back to half the file if
/// `elf` is no ELF64 we can read.
pub fn truncated_root_task(elf: &[u8]) -> Vec<u8> {
    let cut = match elf64_extents(elf) {
        Some(Extents { headers, load: Some(load), .. }) if headers < load / 2 => load / 2,
        _ => elf.len() / 2,
    };
    elf[..cut].to_vec()
}

/// Where the parts of a little-endian ELF64 end in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extents {
    /// The end of the program header table (at least the end of the ELF header).
    headers: usize,
    /// The end of the file data of the `PT_LOAD` segments (`None` without any).
    load: Option<usize>,
    /// The end of the file data of all segments.
    segments: usize,
}

/// The [`Extents`] of `elf`, if it is an ELF64 whose headers we can read.
fn elf64_extents(elf: &[u8]) -> Option<Extents> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?) as usize);
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| usize::try_from(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?)).ok();
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?);
    let headers = phoff.checked_add(phentsize.checked_mul(phnum)?)?.max(ELF64_HEADER);
    let (mut load, mut segments) = (None, headers);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let end = u64_at(ph + 8)?.checked_add(u64_at(ph + 32)?)?;
        segments = segments.max(end);
        if u32_at(ph)? == 1 {
            load = Some(load.unwrap_or(0).max(end));
        }
    }
    Some(Extents { headers, load, segments })
}

/// Size of the ELF64 file header.
const ELF64_HEADER: usize = 64;

/// `elf` with only what a loader reads: the headers and the segments' file data. What follows
/// the last segment (debug info, symbol tables, section headers: most of a debug build) is cut
/// and the section header fields cleared. The ELFs under `target/` keep all of it for debuggers.
pub fn strip_elf(elf: &[u8]) -> Option<Vec<u8>> {
    let extents = elf64_extents(elf)?;
    let mut stripped = elf.get(..extents.segments)?.to_vec();
    stripped[0x28..0x30].fill(0); // e_shoff
    stripped[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    Some(stripped)
}

/// Read the ELF at `path` for the initrd, stripped ([`strip_elf`]).
fn read_elf(path: &Path) -> Result<Vec<u8>> {
    let elf = crate::read_file(path)?;
    strip_elf(&elf).ok_or_else(|| format!("{} is no ELF64 file whose segments lie within it", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(bytes: &[u8]) -> Vec<(String, Vec<u8>, tar::Header)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let header = entry.header().clone();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (name, data, header)
            })
            .collect()
    }

    #[test]
    fn initrd_layout() {
        let elf = b"\x7fELF not really".to_vec();
        let seed = Seed([7; 32]);
        let bytes = initrd_bytes(&elf, &seed).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let entries = read_back(&bytes);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "root-task");
        assert_eq!(entries[0].1, elf);
        assert_eq!(entries[1].0, "instance.seed");
        assert_eq!(entries[1].1, vec![7; 32]);
        for (_, _, header) in &entries {
            assert!(header.as_ustar().is_some(), "not a ustar header");
            assert_eq!(header.entry_type(), tar::EntryType::Regular);
            assert_eq!(header.mode().unwrap(), 0o644);
            assert_eq!(header.mtime().unwrap(), 0);
        }
        // Raw header: the name has no "./" and the magic is POSIX ustar.
        assert_eq!(&bytes[..10], b"root-task\0");
        assert_eq!(&bytes[257..263], b"ustar\0");
    }

    /// An ELF64 header, one program header (PT_LOAD of the first `loaded` bytes), then
    /// `loaded - 120` bytes of `fill`, then 1000 bytes of "debug info" and section headers.
    fn fake_elf(loaded: u64, fill: u8) -> Vec<u8> {
        let mut elf = vec![fill; loaded as usize + 1000];
        elf[..120].fill(0);
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[0x28..0x30].copy_from_slice(&(loaded + 500).to_le_bytes()); // e_shoff
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[0x3c..0x40].copy_from_slice(&[7, 0, 6, 0]); // e_shnum, e_shstrndx
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        elf[64 + 32..64 + 40].copy_from_slice(&loaded.to_le_bytes()); // p_filesz
        elf
    }

    #[test]
    fn stripping_keeps_headers_and_segments() {
        let elf = fake_elf(0x400, 0x5a);
        let stripped = strip_elf(&elf).unwrap();
        assert_eq!(stripped.len(), 0x400);
        assert_eq!(stripped[..0x28], elf[..0x28]);
        assert_eq!(stripped[0x28..0x30], [0; 8], "no section header table");
        assert_eq!(stripped[0x30..0x3c], elf[0x30..0x3c]);
        assert_eq!(stripped[0x3c..0x40], [0; 4]);
        assert_eq!(stripped[0x40..], elf[0x40..0x400]);
        assert_eq!(strip_elf(&stripped).unwrap(), stripped, "stripping twice changes nothing");
        // A segment reaching past the end of the file, and no ELF at all.
        assert_eq!(strip_elf(&elf[..0x300]), None);
        assert_eq!(strip_elf(b"hello"), None);
    }

    #[test]
    fn system_initrd_layout() {
        let dir = crate::scratch_dir("system-initrd");
        let (hello, shell) = (fake_elf(0x200, 1), fake_elf(0x300, 2));
        std::fs::write(dir.join("hello"), &hello).unwrap();
        std::fs::write(dir.join("shell"), &shell).unwrap();
        let text = "[system]\nmemory_mib = 64\n\n[[program]]\nname = \"hello\"\nbinary = \"hello\"\nkind = \"agent\"\npriority = 100\nmemory_kib = 1024\n\n[[program]]\nname = \"shell\"\nbinary = \"shell\"\nkind = \"server\"\npriority = 100\nmemory_kib = 1024\n";
        let programs = ["hello", "shell"].into_iter().map(|n| (n.to_string(), dir.join(n))).collect();
        let system = crate::system::compile("system.toml", text, &programs, 512).unwrap();
        let bytes = system_initrd_bytes(b"root elf", b"studio elf", &system, &Seed([3; 32]), Some(b"weights")).unwrap();
        let entries: Vec<(String, Vec<u8>)> = read_back(&bytes).into_iter().map(|(n, d, _)| (n, d)).collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["root-task", "instance.seed", "studio", "system.bin", "studio.model", "hello", "shell"]);
        assert_eq!(entries[2].1, b"studio elf");
        assert_eq!(entries[3].1, system.compiled);
        assert_eq!(entries[4].1, b"weights");
        assert_eq!(entries[5].1, strip_elf(&hello).unwrap());
        assert_eq!(entries[6].1, strip_elf(&shell).unwrap());
        std::fs::write(dir.join("shell"), b"no elf").unwrap();
        let err = system_initrd_bytes(b"root elf", b"studio elf", &system, &Seed([3; 32]), None).unwrap_err();
        assert!(err.ends_with("shell is no ELF64 file whose segments lie within it"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn initrd_is_reproducible() {
        let seed = Seed([1; 32]);
        assert_eq!(initrd_bytes(b"abc", &seed).unwrap(), initrd_bytes(b"abc", &seed).unwrap());
        assert_ne!(initrd_bytes(b"abc", &seed).unwrap(), initrd_bytes(b"abc", &Seed([2; 32])).unwrap());
    }

    #[test]
    fn malformed_root_tasks() {
        let garbage = garbage_root_task();
        assert_eq!(garbage.len(), 4096);
        assert!(garbage.iter().all(|&b| b == 0xAB));
        // Not an ELF: half the bytes.
        let bytes: Vec<u8> = (0..1001u32).map(|i| i as u8).collect();
        assert_eq!(truncated_root_task(&bytes), bytes[..500].to_vec());
    }

    #[test]
    fn truncation_cuts_the_loadable_data() {
        // ELF64 header, two program headers at 64: PT_LOAD [0x1000, 0x3000), PT_NOTE, then
        // 0x10000 bytes of "debug info".
        let mut elf = vec![0u8; 0x13000];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let phdr = |elf: &mut Vec<u8>, at: usize, kind: u32, offset: u64, size: u64| {
            elf[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            elf[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            elf[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        };
        phdr(&mut elf, 64, 1, 0x1000, 0x2000);
        phdr(&mut elf, 120, 4, 0x12000, 0x100);
        assert_eq!(elf64_extents(&elf), Some(Extents { headers: 176, load: Some(0x3000), segments: 0x12100 }));
        let cut = truncated_root_task(&elf);
        assert_eq!(cut.len(), 0x1800);
        assert_eq!(cut[..], elf[..0x1800]);
        // A program header table pointing outside the file: fall back to half the file.
        elf[0x20..0x28].copy_from_slice(&0x20000u64.to_le_bytes());
        assert_eq!(elf64_extents(&elf), None);
        assert_eq!(truncated_root_task(&elf).len(), elf.len() / 2);
    }

    #[test]
    fn seed_hex_round_trip() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 8) as u8;
        }
        let seed = Seed(bytes);
        let hex = seed.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("0008101820"));
        assert_eq!(Seed::parse_hex(&hex), Ok(seed));
        assert_eq!(Seed::parse_hex(&hex.to_uppercase()), Ok(seed));
    }

    #[test]
    fn seed_hex_errors() {
        assert!(Seed::parse_hex("").is_err());
        assert!(Seed::parse_hex(&"0".repeat(63)).is_err());
        assert!(Seed::parse_hex(&"0".repeat(66)).is_err());
        assert!(Seed::parse_hex(&"g".repeat(64)).is_err());
        assert!(Seed::parse_hex(&"+1".repeat(32)).is_err());
        assert!(Seed::parse_hex(&"é".repeat(32)).is_err());
    }

    #[test]
    fn seed_is_created_once_and_reused() {
        let dir = crate::scratch_dir("seed");
        let path = dir.join("instance.seed");
        let (first, created) = Seed::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(std::fs::read(&path).unwrap(), first.0.to_vec());
        let (second, created) = Seed::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first, second);
        // Two random seeds differ (with overwhelming probability).
        assert_ne!(Seed::random().unwrap(), Seed::random().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_seed_file_is_an_error() {
        let dir = crate::scratch_dir("badseed");
        let path = dir.join("instance.seed");
        std::fs::write(&path, b"short").unwrap();
        let err = Seed::load_or_create(&path).unwrap_err();
        assert!(err.contains("holds 5 bytes, expected 32"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn override_wins() {
        let ws = Workspace { root: crate::scratch_dir("override") };
        let seed = Seed([9; 32]);
        assert_eq!(resolve_seed(&ws, Some(seed)), Ok(seed));
        assert!(!seed_path(&ws).exists(), "an override must not create the seed file");
        std::fs::remove_dir_all(&ws.root).unwrap();
    }
}
