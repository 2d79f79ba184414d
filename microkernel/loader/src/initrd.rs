//! The initrd: a ustar (POSIX tar) archive of the programs and data the system starts with.
//!
//! The build writes it; the kernel (and later Studio) reads it from memory. [`Initrd::new`]
//! validates the whole archive once, up front, with the `tar-no-std` crate (block layout, every
//! header checksum and type, every entry's size inside the archive, the two-zero-block end
//! marker) and then checks what this reader adds: every regular file's name is UTF-8, fits the
//! 100-byte ustar name field (the ustar `prefix` extension for longer paths is rejected rather
//! than silently mis-named), is not empty, and appears only once. After that, look-ups cannot
//! fail and nothing is parsed twice.
//!
//! Names are compared without any leading `./` (as `tar -C dir .` writes them), on both sides:
//! `file("./init")` and `file("init")` find the same entry. Only regular files are visible;
//! directories, links and PAX metadata records are skipped (PAX attributes are not applied).
//! An archive consisting of nothing but zero blocks is a valid, empty initrd; a zero-length one
//! is not an archive.

use core::fmt;

use tar_no_std::{CorruptDataError, PosixHeader, TarArchiveRef};

/// The tar block size.
const BLOCKSIZE: usize = 512;

/// Why an initrd was rejected. `block` is the 512-byte block index of the offending header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitrdError {
    /// Zero bytes.
    Empty,
    /// The length is not a multiple of 512 bytes.
    BadLength,
    /// Shorter than a header and the end marker.
    TooShort,
    BadChecksum {
        block: usize,
    },
    UnknownEntryType {
        block: usize,
    },
    BadSize {
        block: usize,
    },
    EntryPastEnd {
        block: usize,
    },
    /// The archive does not end with two zero blocks.
    MissingEndMarker,
    NameNotUtf8 {
        block: usize,
    },
    /// The name uses the ustar prefix field (longer than 100 bytes).
    NameTooLong {
        block: usize,
    },
    EmptyName {
        block: usize,
    },
    DuplicateName {
        block: usize,
    },
}

impl fmt::Display for InitrdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use InitrdError::*;
        match *self {
            Empty => f.write_str("initrd is empty"),
            BadLength => f.write_str("initrd length is not a multiple of 512 bytes"),
            TooShort => f.write_str("initrd too short to be a tar archive"),
            BadChecksum { block } => write!(f, "bad tar header checksum at block {block}"),
            UnknownEntryType { block } => write!(f, "unknown tar entry type at block {block}"),
            BadSize { block } => write!(f, "bad tar entry size at block {block}"),
            EntryPastEnd { block } => write!(f, "tar entry at block {block} runs past the end"),
            MissingEndMarker => f.write_str("tar archive has no end marker"),
            NameNotUtf8 { block } => write!(f, "file name at block {block} is not UTF-8"),
            NameTooLong { block } => {
                write!(f, "file name at block {block} longer than 100 bytes")
            }
            EmptyName { block } => write!(f, "empty file name at block {block}"),
            DuplicateName { block } => write!(f, "duplicate file name at block {block}"),
        }
    }
}

impl core::error::Error for InitrdError {}

impl From<CorruptDataError> for InitrdError {
    fn from(e: CorruptDataError) -> Self {
        match e {
            CorruptDataError::EmptyArchive => InitrdError::Empty,
            CorruptDataError::InvalidBlockSize => InitrdError::BadLength,
            CorruptDataError::TooShort { .. } => InitrdError::TooShort,
            CorruptDataError::InvalidChecksum { block_index } => InitrdError::BadChecksum { block: block_index },
            CorruptDataError::InvalidTypeFlag { block_index } => InitrdError::UnknownEntryType { block: block_index },
            CorruptDataError::InvalidPayloadSize { block_index } => InitrdError::BadSize { block: block_index },
            CorruptDataError::PayloadExtendsBeyondArchive { block_index } => {
                InitrdError::EntryPastEnd { block: block_index }
            }
            CorruptDataError::MissingTerminator => InitrdError::MissingEndMarker,
        }
    }
}

/// A validated initrd archive, borrowing its bytes.
#[derive(Clone)]
pub struct Initrd<'a> {
    bytes: &'a [u8],
    /// `None` for an archive of zero blocks only.
    archive: Option<TarArchiveRef<'a>>,
}

impl fmt::Debug for Initrd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initrd").field("len", &self.bytes.len()).field("files", &self.files().count()).finish()
    }
}

/// `name` without leading `./` components.
fn normalize(mut name: &str) -> &str {
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name
}

/// The regular file described by the header at `block`: `Ok(None)` for other entry types.
fn regular_file<'a>(
    bytes: &'a [u8],
    block: usize,
    hdr: &'a PosixHeader,
) -> Result<Option<(&'a str, &'a [u8])>, InitrdError> {
    if !hdr.typeflag.try_to_type_flag().is_ok_and(|t| t.is_regular_file()) {
        return Ok(None);
    }
    let is_ustar = hdr.magic.as_str() == Ok("ustar") && hdr.version.as_str() == Ok("00");
    if is_ustar && !hdr.prefix.is_empty() {
        return Err(InitrdError::NameTooLong { block });
    }
    let name = hdr.name.as_str().map_err(|_| InitrdError::NameNotUtf8 { block })?;
    let name = normalize(name);
    if name.is_empty() {
        return Err(InitrdError::EmptyName { block });
    }
    let size: usize = hdr.size.as_number().map_err(|_| InitrdError::BadSize { block })?;
    let start =
        block.checked_add(1).and_then(|b| b.checked_mul(BLOCKSIZE)).ok_or(InitrdError::EntryPastEnd { block })?;
    let end = start.checked_add(size).ok_or(InitrdError::EntryPastEnd { block })?;
    let data = bytes.get(start..end).ok_or(InitrdError::EntryPastEnd { block })?;
    Ok(Some((name, data)))
}

impl<'a> Initrd<'a> {
    /// Validate `bytes` as a ustar archive (see the module documentation for what is checked).
    pub fn new(bytes: &'a [u8]) -> Result<Initrd<'a>, InitrdError> {
        if bytes.is_empty() {
            return Err(InitrdError::Empty);
        }
        if !bytes.len().is_multiple_of(BLOCKSIZE) {
            return Err(InitrdError::BadLength);
        }
        // The smallest valid archive is the end marker alone, which tar-no-std rejects as too
        // short: accept an all-zero archive here as empty.
        if bytes.len() >= 2 * BLOCKSIZE && bytes.iter().all(|&b| b == 0) {
            return Ok(Initrd { bytes, archive: None });
        }
        let archive = TarArchiveRef::new(bytes)?;
        let initrd = Initrd { bytes, archive: Some(archive) };
        // Every regular file must be well formed, and names unique.
        for (i, (block, hdr)) in initrd.headers().enumerate() {
            let Some((name, _)) = regular_file(bytes, block, hdr)? else {
                continue;
            };
            for (earlier_block, earlier) in initrd.headers().take(i) {
                if let Ok(Some((earlier_name, _))) = regular_file(bytes, earlier_block, earlier)
                    && earlier_name == name
                {
                    return Err(InitrdError::DuplicateName { block });
                }
            }
        }
        Ok(initrd)
    }

    fn headers(&self) -> impl Iterator<Item = (usize, &'a PosixHeader)> + use<'a> {
        self.archive.clone().into_iter().flat_map(|a| a.headers())
    }

    /// The contents of the regular file `name` (a leading `./` is ignored).
    pub fn file(&self, name: &str) -> Option<&'a [u8]> {
        let name = normalize(name);
        self.files().find(|&(n, _)| n == name).map(|(_, data)| data)
    }

    /// Every regular file as `(name, contents)`, in archive order, names without leading `./`.
    pub fn files(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + use<'a> {
        let bytes = self.bytes;
        // Validated in `new`: the error arm is never taken.
        self.headers().filter_map(move |(block, hdr)| regular_file(bytes, block, hdr).ok().flatten())
    }

    /// The whole archive.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    /// Write one ustar header block.
    fn header(name: &str, size: usize, typeflag: u8, prefix: &str) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0"); // mode
        h[108..116].copy_from_slice(b"0000000\0"); // uid
        h[116..124].copy_from_slice(b"0000000\0"); // gid
        h[124..136].copy_from_slice(std::format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0"); // mtime
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        fix_checksum(&mut h);
        h
    }

    fn fix_checksum(h: &mut [u8]) {
        h[148..156].fill(b' ');
        let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(std::format!("{sum:06o}\0 ").as_bytes());
    }

    /// A tiny ustar writer: `(name, typeflag, contents)` entries, then the end marker.
    fn tar(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(name, typeflag, data) in entries {
            out.extend_from_slice(&header(name, data.len(), typeflag, ""));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn sample() -> Vec<u8> {
        let big: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        tar(&[
            ("./", b'5', b""),
            ("./root-task", b'0', b"\x7fELF root"),
            ("./bin/", b'5', b""),
            ("./bin/studio", b'0', &big),
            ("system.bin", 0, b"sys"),
            ("empty", b'0', b""),
            ("link", b'2', b""),
        ])
    }

    #[test]
    fn lists_and_finds_regular_files() {
        let bytes = sample();
        let initrd = Initrd::new(&bytes).unwrap();
        let names: Vec<&str> = initrd.files().map(|(n, _)| n).collect();
        assert_eq!(names, ["root-task", "bin/studio", "system.bin", "empty"]);
        assert_eq!(initrd.file("root-task"), Some(&b"\x7fELF root"[..]));
        assert_eq!(initrd.file("./root-task"), Some(&b"\x7fELF root"[..]));
        assert_eq!(initrd.file("system.bin"), Some(&b"sys"[..]));
        assert_eq!(initrd.file("empty"), Some(&b""[..]));
        let studio = initrd.file("bin/studio").unwrap();
        assert_eq!(studio.len(), 1500);
        assert!(studio.iter().enumerate().all(|(i, &b)| b == i as u8));
        assert_eq!(initrd.file("bin"), None);
        assert_eq!(initrd.file("link"), None);
        assert_eq!(initrd.file("missing"), None);
        assert_eq!(initrd.as_bytes().len(), bytes.len());
        assert_eq!(std::format!("{initrd:?}"), std::format!("Initrd {{ len: {}, files: 4 }}", bytes.len()));
    }

    #[test]
    fn empty_archives() {
        assert_eq!(Initrd::new(&[]).unwrap_err(), InitrdError::Empty);
        for blocks in [2, 3, 20] {
            let zeros = std::vec![0u8; blocks * 512];
            let initrd = Initrd::new(&zeros).unwrap();
            assert_eq!(initrd.files().count(), 0);
            assert_eq!(initrd.file("x"), None);
        }
        assert_eq!(Initrd::new(&[0u8; 512]).unwrap_err(), InitrdError::TooShort);
        assert_eq!(Initrd::new(&[0u8; 100]).unwrap_err(), InitrdError::BadLength);
        // Directories only: valid, no files.
        let bytes = tar(&[("./", b'5', b"")]);
        assert_eq!(Initrd::new(&bytes).unwrap().files().count(), 0);
    }

    #[test]
    fn corrupt_checksum_is_rejected() {
        let mut bytes = sample();
        let second = 512; // header of ./root-task
        bytes[second + 5] ^= 1;
        assert_eq!(Initrd::new(&bytes).unwrap_err(), InitrdError::BadChecksum { block: 1 });
        let mut bytes = sample();
        bytes[148] = b'x';
        assert_eq!(Initrd::new(&bytes).unwrap_err(), InitrdError::BadChecksum { block: 0 });
    }

    #[test]
    fn bad_headers_are_rejected() {
        // Entry larger than the archive.
        let mut bytes = tar(&[("a", b'0', b"abc")]);
        bytes[124..136].copy_from_slice(b"00000100000\0");
        fix_checksum(&mut bytes[..512]);
        assert_eq!(Initrd::new(&bytes).unwrap_err(), InitrdError::EntryPastEnd { block: 0 });
        // Unparseable size.
        bytes[124..136].copy_from_slice(b"0000000009z\0");
        fix_checksum(&mut bytes[..512]);
        assert_eq!(Initrd::new(&bytes).unwrap_err(), InitrdError::BadSize { block: 0 });
        // Unknown type (a GNU long-name record).
        let bytes = tar(&[("a", b'L', b"abc")]);
        assert_eq!(Initrd::new(&bytes).unwrap_err(), InitrdError::UnknownEntryType { block: 0 });
        // Non-UTF-8 name, empty name, duplicate name, ustar prefix.
        let bytes = tar(&[("a\u{80}", b'0', b"")]);
        let mut bad = bytes.clone();
        bad[1] = 0xff;
        fix_checksum(&mut bad[..512]);
        assert_eq!(Initrd::new(&bad).unwrap_err(), InitrdError::NameNotUtf8 { block: 0 });
        let bytes = tar(&[("./", b'0', b"x")]);
        assert_eq!(Initrd::new(&bytes).unwrap_err(), InitrdError::EmptyName { block: 0 });
        let bytes = tar(&[("a", b'0', b"x"), ("b", b'0', b"y"), ("./a", b'0', b"z")]);
        assert_eq!(Initrd::new(&bytes).unwrap_err(), InitrdError::DuplicateName { block: 4 });
        let mut bytes = tar(&[("a", b'0', b"x")]);
        bytes[..512].copy_from_slice(&header("a", 1, b'0', "some/long/dir"));
        assert_eq!(Initrd::new(&bytes).unwrap_err(), InitrdError::NameTooLong { block: 0 });
        // No end marker.
        let mut bytes = tar(&[("a", b'0', b"x")]);
        bytes.truncate(1024);
        bytes.resize(2048, 0);
        bytes[1536] = 1; // one zero block, then not a second one
        assert_eq!(Initrd::new(&bytes).unwrap_err(), InitrdError::MissingEndMarker);
        for e in [InitrdError::Empty, InitrdError::DuplicateName { block: 3 }] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn truncation_never_panics() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let r = Initrd::new(&bytes[..len]);
            // Any block-aligned prefix long enough to hold the file blocks but cut before the
            // end marker must fail; other lengths fail on the length check.
            assert!(r.is_err(), "prefix of {len} bytes accepted");
        }
        assert!(Initrd::new(&bytes).is_ok());
    }

    use crate::test_rng::Rng;

    fn exercise(bytes: &[u8]) {
        if let Ok(initrd) = Initrd::new(bytes) {
            for (name, data) in initrd.files() {
                assert_eq!(initrd.file(name).map(<[u8]>::len), Some(data.len()));
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..2000 {
            let len = (rng.next() % 8) as usize * 512 + if rng.next().is_multiple_of(8) { 3 } else { 0 };
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            exercise(&bytes);
        }
    }

    #[test]
    fn mutated_archives_never_panic() {
        let valid = sample();
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for _ in 0..5000 {
            let mut bytes = valid.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % bytes.len();
                bytes[i] = rng.next() as u8;
            }
            // Half the time repair the checksums so the mutation reaches the deeper checks.
            if rng.next().is_multiple_of(2) {
                for block in (0..bytes.len()).step_by(512) {
                    if bytes[block + 257..block + 262] == *b"ustar" {
                        fix_checksum(&mut bytes[block..block + 512]);
                    }
                }
            }
            exercise(&bytes);
        }
    }
}
