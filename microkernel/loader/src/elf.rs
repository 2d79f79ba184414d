//! A validating ELF64 loader for user programs.
//!
//! The kernel uses it to start the root task and Studio uses it for every other program, so it
//! trusts nothing in the file: [`ElfImage::parse`] checks every header field the loader relies on
//! and reports the first problem as a precise [`ElfError`]; after a successful parse, loading can
//! only fail on a bad load bias or on an error of the [`LoadTarget`].
//!
//! What is accepted:
//!
//! * ELF64, little endian, version 1, `EM_X86_64`;
//! * `ET_EXEC` (fixed addresses, the bias must be 0) or `ET_DYN` (position independent: the
//!   static-PIE executables `x86_64-unknown-none` produces by default, loaded at any page-aligned
//!   bias);
//! * at most [`MAX_PROGRAM_HEADERS`] program headers, of which at most [`MAX_LOAD_SEGMENTS`] are
//!   `PT_LOAD`. Every `PT_LOAD` has its file bytes inside the file, `p_filesz <= p_memsz`, no
//!   address overflow, `p_align` 0, 1 or a power of two, `p_vaddr ≡ p_offset (mod 4096)`, is not
//!   both writable and executable and shares no 4 KiB page with another `PT_LOAD`. Empty
//!   (`p_memsz == 0`) `PT_LOAD`s are checked and then ignored;
//! * the entry point lies inside an executable segment;
//! * relocations from `PT_DYNAMIC` (`DT_RELA`/`DT_RELASZ`/`DT_RELAENT`) of type `R_X86_64_NONE`
//!   and `R_X86_64_RELATIVE` only, each 8-byte target inside one writable segment.
//!
//! What is rejected: `PT_INTERP` (a dynamically linked program), `DT_NEEDED`, `DT_REL`,
//! `DT_RELR`, PLT relocations (`DT_JMPREL`), text relocations (`DT_TEXTREL`, `DF_TEXTREL`) and
//! any other relocation type. Other program header types (`PT_NOTE`, `PT_PHDR`, `PT_TLS`,
//! `PT_GNU_STACK`, `PT_GNU_RELRO`, ...) are ignored: thread-local storage is the program
//! runtime's business, stacks are never executable and RELRO is not enforced yet.
//!
//! Placement: the biased image must lie entirely below [`ozone_abi::USER_TOP`] and must not touch
//! page 0, which stays unmapped so that null-pointer dereferences fault.
//!
//! Header structures and constants come from the `object` crate (its ELF types are
//! alignment-free, so the image may sit at any address); the checks are written here.

use core::fmt;

use object::elf::{
    DF_TEXTREL, DT_FLAGS, DT_JMPREL, DT_NEEDED, DT_NULL, DT_PLTRELSZ, DT_REL, DT_RELA, DT_RELAENT, DT_RELASZ, DT_RELR,
    DT_RELRSZ, DT_RELSZ, DT_TEXTREL, Dyn64, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, ET_DYN, ET_EXEC, EV_CURRENT,
    FileHeader64, PF_R, PF_W, PF_X, PT_DYNAMIC, PT_INTERP, PT_LOAD, ProgramHeader64, R_X86_64_NONE, R_X86_64_RELATIVE,
    Rela64,
};
use object::endian::LittleEndian as LE;
use ozone_abi::USER_TOP;

/// The page size the loader aligns segments to.
pub const PAGE_SIZE: u64 = 4096;
/// The most program headers accepted.
pub const MAX_PROGRAM_HEADERS: usize = 64;
/// The most non-empty `PT_LOAD` segments accepted.
pub const MAX_LOAD_SEGMENTS: usize = 16;

const PHDR_SIZE: usize = core::mem::size_of::<ProgramHeader64<LE>>();
const RELA_SIZE: usize = core::mem::size_of::<Rela64<LE>>();
const DYN_SIZE: usize = core::mem::size_of::<Dyn64<LE>>();

/// Why an ELF file was rejected. Segment numbers are program header indices (as `readelf -l`
/// counts them); relocation numbers are indices into the `DT_RELA` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    NotElf,
    HeaderTruncated,
    Not64Bit,
    NotLittleEndian,
    BadVersion,
    NotX86_64,
    NotExecutable,
    BadProgramHeaderSize,
    TooManyProgramHeaders,
    ProgramHeadersOutOfBounds,
    HasInterpreter,
    TooManyLoadSegments,
    NoLoadSegments,
    SegmentOutOfFile { segment: usize },
    FileSizeExceedsMemSize { segment: usize },
    AddressOverflow { segment: usize },
    BadAlignment { segment: usize },
    OffsetAddressMismatch { segment: usize },
    WritableAndExecutable { segment: usize },
    SegmentsOverlap { segment: usize, other: usize },
    EntryNotExecutable,
    ImageTooLarge,
    MultipleDynamicSegments,
    DynamicOutOfFile,
    NeedsSharedLibraries,
    RelNotSupported,
    RelrNotSupported,
    PltRelocationsNotSupported,
    TextRelocations,
    BadRelocationTable,
    UnsupportedRelocation { r_type: u32 },
    RelocationOutsideSegments { index: usize },
    RelocationInReadOnlySegment { index: usize },
    BiasNotPageAligned,
    FixedAddressNeedsZeroBias,
    SegmentAtPageZero { segment: usize },
    SegmentOutsideUserSpace { segment: usize },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ElfError::*;
        match *self {
            NotElf => f.write_str("not an ELF file"),
            HeaderTruncated => f.write_str("ELF header truncated"),
            Not64Bit => f.write_str("not a 64-bit ELF file"),
            NotLittleEndian => f.write_str("not little endian"),
            BadVersion => f.write_str("unsupported ELF version"),
            NotX86_64 => f.write_str("not x86_64"),
            NotExecutable => f.write_str("not an executable (ET_EXEC or ET_DYN)"),
            BadProgramHeaderSize => f.write_str("unexpected program header entry size"),
            TooManyProgramHeaders => write!(f, "more than {MAX_PROGRAM_HEADERS} program headers"),
            ProgramHeadersOutOfBounds => f.write_str("program header table out of file bounds"),
            HasInterpreter => f.write_str("dynamically linked (has an interpreter); only static programs load"),
            TooManyLoadSegments => write!(f, "more than {MAX_LOAD_SEGMENTS} loadable segments"),
            NoLoadSegments => f.write_str("no loadable segments"),
            SegmentOutOfFile { segment } => {
                write!(f, "segment {segment} file data out of file bounds")
            }
            FileSizeExceedsMemSize { segment } => {
                write!(f, "segment {segment} has more file bytes than memory bytes")
            }
            AddressOverflow { segment } => write!(f, "segment {segment} address range overflows"),
            BadAlignment { segment } => {
                write!(f, "segment {segment} alignment is not a power of two")
            }
            OffsetAddressMismatch { segment } => {
                write!(f, "segment {segment} file offset and address differ modulo the page size")
            }
            WritableAndExecutable { segment } => {
                write!(f, "segment {segment} is both writable and executable")
            }
            SegmentsOverlap { segment, other } => {
                write!(f, "segment {segment} overlaps segment {other}")
            }
            EntryNotExecutable => f.write_str("entry point outside executable segments"),
            ImageTooLarge => f.write_str("image larger than the user address space"),
            MultipleDynamicSegments => f.write_str("more than one dynamic segment"),
            DynamicOutOfFile => f.write_str("dynamic segment out of file bounds"),
            NeedsSharedLibraries => f.write_str("needs shared libraries"),
            RelNotSupported => f.write_str("REL relocations unsupported (only RELA)"),
            RelrNotSupported => f.write_str("packed (RELR) relocations unsupported"),
            PltRelocationsNotSupported => f.write_str("PLT relocations unsupported"),
            TextRelocations => f.write_str("text relocations unsupported"),
            BadRelocationTable => f.write_str("malformed relocation table"),
            UnsupportedRelocation { r_type } => write!(f, "unsupported relocation type {r_type}"),
            RelocationOutsideSegments { index } => {
                write!(f, "relocation {index} target outside loadable segments")
            }
            RelocationInReadOnlySegment { index } => {
                write!(f, "relocation {index} targets a read-only segment")
            }
            BiasNotPageAligned => f.write_str("load bias not page-aligned"),
            FixedAddressNeedsZeroBias => f.write_str("fixed-address executable (ET_EXEC) needs load bias 0"),
            SegmentAtPageZero { segment } => write!(f, "segment {segment} maps page 0"),
            SegmentOutsideUserSpace { segment } => {
                write!(f, "segment {segment} outside user address space")
            }
        }
    }
}

impl core::error::Error for ElfError {}

/// Access rights of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentFlags {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

/// One loadable segment, with the load bias applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Biased virtual address of the first byte (not necessarily page-aligned).
    pub vaddr: u64,
    /// Bytes of memory the segment occupies from `vaddr`.
    pub mem_size: u64,
    /// The bytes to copy to `vaddr`; the rest up to `mem_size` is zero. `len <= mem_size`.
    pub data: &'a [u8],
    pub flags: SegmentFlags,
}

impl Segment<'_> {
    /// The page-aligned range `[start, end)` covering the segment.
    pub fn page_range(&self) -> (u64, u64) {
        let start = page_floor(self.vaddr);
        let end = self.vaddr.saturating_add(self.mem_size);
        (start, page_ceil(end).unwrap_or(page_floor(u64::MAX)))
    }
}

/// Where a program is loaded to: an address space under construction.
pub trait LoadTarget {
    type Error;
    /// Make `[vaddr, vaddr + size)` (both page-aligned by the loader) present, zero-filled, with
    /// `flags`.
    fn map(&mut self, vaddr: u64, size: u64, flags: SegmentFlags) -> Result<(), Self::Error>;
    /// Write bytes at a user virtual address inside something already mapped (the range may
    /// span several pages). The loader writes into read-only segments too (file contents), so
    /// this must write through the loader's own view of the memory, not the user mapping.
    fn write(&mut self, vaddr: u64, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// Why loading failed: the image (only a bad bias, after a successful parse) or the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError<E> {
    Elf(ElfError),
    Target(E),
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Elf(e) => e.fmt(f),
            LoadError::Target(e) => write!(f, "loading failed: {e}"),
        }
    }
}

/// A validated ELF executable, borrowing the file bytes.
#[derive(Clone, Copy)]
pub struct ElfImage<'a> {
    bytes: &'a [u8],
    phdrs: &'a [ProgramHeader64<LE>],
    relocs: &'a [Rela64<LE>],
    entry: u64,
    pie: bool,
}

impl fmt::Debug for ElfImage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElfImage")
            .field("len", &self.bytes.len())
            .field("entry", &self.entry)
            .field("pie", &self.pie)
            .field("program_headers", &self.phdrs.len())
            .field("relocations", &self.relocs.len())
            .finish()
    }
}

/// A `PT_LOAD` header, decoded.
#[derive(Clone, Copy)]
struct Load {
    index: usize,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    flags: SegmentFlags,
}

impl Load {
    /// One past the last byte (checked at parse time not to overflow).
    fn end(&self) -> u64 {
        self.vaddr.saturating_add(self.memsz)
    }
    fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.vaddr && addr.checked_add(len).is_some_and(|e| e <= self.end())
    }
}

const fn page_floor(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

const fn page_ceil(x: u64) -> Option<u64> {
    match x.checked_add(PAGE_SIZE - 1) {
        Some(v) => Some(page_floor(v)),
        None => None,
    }
}

fn decode_flags(p_flags: u32) -> SegmentFlags {
    SegmentFlags { read: p_flags & PF_R.0 != 0, write: p_flags & PF_W.0 != 0, exec: p_flags & PF_X.0 != 0 }
}

/// Every `PT_LOAD` header with non-zero memory size, decoded (no validation).
fn loads<'p>(phdrs: &'p [ProgramHeader64<LE>]) -> impl Iterator<Item = Load> + 'p {
    phdrs.iter().enumerate().filter_map(|(index, ph)| {
        if ph.p_type.get(LE) != PT_LOAD {
            return None;
        }
        let load = Load {
            index,
            offset: ph.p_offset.get(LE),
            vaddr: ph.p_vaddr.get(LE),
            filesz: ph.p_filesz.get(LE),
            memsz: ph.p_memsz.get(LE),
            flags: decode_flags(ph.p_flags.get(LE).0),
        };
        (load.memsz != 0).then_some(load)
    })
}

/// `bytes[offset .. offset + len]`, if inside.
fn file_range(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(len).ok()?;
    bytes.get(start..start.checked_add(len)?)
}

impl<'a> ElfImage<'a> {
    /// Validate `bytes` as a loadable executable. Everything that does not depend on the load
    /// bias is checked here; a fixed-address (`ET_EXEC`) image is also checked for placement.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        let (header, phdrs) = parse_headers(bytes)?;
        let pie = header.e_type.get(LE) == ET_DYN;

        let mut load_count = 0usize;
        let mut dynamic = None;
        for (index, ph) in phdrs.iter().enumerate() {
            let p_type = ph.p_type.get(LE);
            if p_type == PT_INTERP {
                return Err(ElfError::HasInterpreter);
            } else if p_type == PT_DYNAMIC {
                if dynamic.is_some() {
                    return Err(ElfError::MultipleDynamicSegments);
                }
                dynamic = Some(ph);
            } else if p_type == PT_LOAD {
                check_load_header(bytes, index, ph)?;
                if ph.p_memsz.get(LE) != 0 {
                    load_count += 1;
                    if load_count > MAX_LOAD_SEGMENTS {
                        return Err(ElfError::TooManyLoadSegments);
                    }
                }
            }
        }
        if load_count == 0 {
            return Err(ElfError::NoLoadSegments);
        }

        // Pairwise: no two segments share a page. At most MAX_LOAD_SEGMENTS², so quadratic is fine.
        for a in loads(phdrs) {
            let (a_start, a_end) = page_span(&a)?;
            for b in loads(phdrs).filter(|b| b.index < a.index) {
                let (b_start, b_end) = page_span(&b)?;
                if a_start < b_end && b_start < a_end {
                    return Err(ElfError::SegmentsOverlap { segment: a.index, other: b.index });
                }
            }
        }

        let entry = header.e_entry.get(LE);
        if !loads(phdrs).any(|l| l.flags.exec && l.contains(entry, 1)) {
            return Err(ElfError::EntryNotExecutable);
        }

        let relocs = match dynamic {
            Some(ph) => parse_dynamic(bytes, phdrs, ph)?,
            None => &[],
        };
        check_relocations(phdrs, relocs)?;

        let image = ElfImage { bytes, phdrs, relocs, entry, pie };
        if pie {
            let (lo, hi) = image.vaddr_range();
            // Some bias must place [lo, hi) inside [PAGE_SIZE, USER_TOP).
            if hi.saturating_sub(lo) > USER_TOP - PAGE_SIZE {
                return Err(ElfError::ImageTooLarge);
            }
        } else {
            image.check_bias(0)?;
        }
        Ok(image)
    }

    /// Whether the image is position independent (`ET_DYN`) and so can take any page-aligned
    /// bias; otherwise the bias must be 0.
    pub fn is_position_independent(&self) -> bool {
        self.pie
    }

    /// The entry point once loaded at `bias`.
    pub fn entry(&self, bias: u64) -> u64 {
        self.entry.wrapping_add(bias)
    }

    /// The unbiased, page-aligned address range `[start, end)` the loadable segments span.
    /// A position-independent image fits at bias `b` when `start + b >= PAGE_SIZE` and
    /// `end + b <= USER_TOP`, with `b` page-aligned.
    pub fn vaddr_range(&self) -> (u64, u64) {
        let mut lo = u64::MAX;
        let mut hi = 0;
        for l in loads(self.phdrs) {
            if let Ok((s, e)) = page_span(&l) {
                lo = lo.min(s);
                hi = hi.max(e);
            }
        }
        (lo.min(hi), hi)
    }

    /// The number of relocations that will be applied (including `R_X86_64_NONE` entries).
    pub fn relocation_count(&self) -> usize {
        self.relocs.len()
    }

    /// Check that the image may be loaded at `bias`: page-aligned, 0 for a fixed-address image,
    /// and every segment inside `[PAGE_SIZE, USER_TOP)` once biased.
    pub fn check_bias(&self, bias: u64) -> Result<(), ElfError> {
        if !bias.is_multiple_of(PAGE_SIZE) {
            return Err(ElfError::BiasNotPageAligned);
        }
        if !self.pie && bias != 0 {
            return Err(ElfError::FixedAddressNeedsZeroBias);
        }
        for l in loads(self.phdrs) {
            let segment = l.index;
            let (start, end) = page_span(&l)?;
            let outside = ElfError::SegmentOutsideUserSpace { segment };
            let start = start.checked_add(bias).ok_or(outside)?;
            let end = end.checked_add(bias).ok_or(outside)?;
            if start < PAGE_SIZE {
                return Err(ElfError::SegmentAtPageZero { segment });
            }
            if end > USER_TOP {
                return Err(outside);
            }
        }
        Ok(())
    }

    /// The loadable segments, in program header order, with `bias` added to their addresses
    /// (wrapping: call [`ElfImage::check_bias`] first if `bias` is not known to be good).
    pub fn segments(&self, bias: u64) -> impl Iterator<Item = Segment<'a>> + use<'a> {
        let bytes = self.bytes;
        loads(self.phdrs).map(move |l| Segment {
            vaddr: l.vaddr.wrapping_add(bias),
            mem_size: l.memsz,
            data: file_range(bytes, l.offset, l.filesz).unwrap_or(&[]),
            flags: l.flags,
        })
    }

    /// Load the image into `target` at `bias`: map every segment's page range, copy its file
    /// bytes, apply the relocations. Returns the biased entry point.
    pub fn load<T: LoadTarget>(&self, bias: u64, target: &mut T) -> Result<u64, LoadError<T::Error>> {
        self.check_bias(bias).map_err(LoadError::Elf)?;
        for seg in self.segments(bias) {
            let (start, end) = seg.page_range();
            target.map(start, end.saturating_sub(start), seg.flags).map_err(LoadError::Target)?;
            if !seg.data.is_empty() {
                target.write(seg.vaddr, seg.data).map_err(LoadError::Target)?;
            }
        }
        for (index, rela) in self.relocs.iter().enumerate() {
            if rela.r_type(LE, false) != R_X86_64_RELATIVE {
                continue; // R_X86_64_NONE: parse accepted nothing else.
            }
            let at = rela
                .r_offset
                .get(LE)
                .checked_add(bias)
                .ok_or(LoadError::Elf(ElfError::RelocationOutsideSegments { index }))?;
            let value = bias.wrapping_add(rela.r_addend.get(LE) as u64);
            target.write(at, &value.to_le_bytes()).map_err(LoadError::Target)?;
        }
        Ok(self.entry(bias))
    }
}

/// The file header and program header table, with the identification checks done.
fn parse_headers(bytes: &[u8]) -> Result<(&FileHeader64<LE>, &[ProgramHeader64<LE>]), ElfError> {
    if bytes.get(..4) != Some(&ELFMAG[..]) {
        return Err(ElfError::NotElf);
    }
    let (header, _) = object::pod::from_bytes::<FileHeader64<LE>>(bytes).map_err(|_| ElfError::HeaderTruncated)?;
    let ident = &header.e_ident;
    if ident.class != ELFCLASS64 {
        return Err(ElfError::Not64Bit);
    }
    if ident.data != ELFDATA2LSB {
        return Err(ElfError::NotLittleEndian);
    }
    if ident.version != EV_CURRENT || header.e_version.get(LE) != 1 {
        return Err(ElfError::BadVersion);
    }
    if header.e_machine.get(LE) != EM_X86_64 {
        return Err(ElfError::NotX86_64);
    }
    let e_type = header.e_type.get(LE);
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(ElfError::NotExecutable);
    }
    let phnum = usize::from(header.e_phnum.get(LE));
    if phnum == 0 {
        return Err(ElfError::NoLoadSegments);
    }
    if phnum > MAX_PROGRAM_HEADERS {
        return Err(ElfError::TooManyProgramHeaders);
    }
    if usize::from(header.e_phentsize.get(LE)) != PHDR_SIZE {
        return Err(ElfError::BadProgramHeaderSize);
    }
    let table_len = phnum.checked_mul(PHDR_SIZE).ok_or(ElfError::TooManyProgramHeaders)?;
    let table =
        file_range(bytes, header.e_phoff.get(LE), table_len as u64).ok_or(ElfError::ProgramHeadersOutOfBounds)?;
    let phdrs = object::pod::slice_from_all_bytes::<ProgramHeader64<LE>>(table)
        .map_err(|_| ElfError::ProgramHeadersOutOfBounds)?;
    Ok((header, phdrs))
}

/// The checks on one `PT_LOAD` header that need no other header.
fn check_load_header(bytes: &[u8], segment: usize, ph: &ProgramHeader64<LE>) -> Result<(), ElfError> {
    let offset = ph.p_offset.get(LE);
    let vaddr = ph.p_vaddr.get(LE);
    let filesz = ph.p_filesz.get(LE);
    let memsz = ph.p_memsz.get(LE);
    let align = ph.p_align.get(LE);
    let flags = decode_flags(ph.p_flags.get(LE).0);
    if filesz > memsz {
        return Err(ElfError::FileSizeExceedsMemSize { segment });
    }
    if file_range(bytes, offset, filesz).is_none() {
        return Err(ElfError::SegmentOutOfFile { segment });
    }
    if vaddr.checked_add(memsz).and_then(page_ceil).is_none() {
        return Err(ElfError::AddressOverflow { segment });
    }
    if align > 1 && !align.is_power_of_two() {
        return Err(ElfError::BadAlignment { segment });
    }
    if vaddr % PAGE_SIZE != offset % PAGE_SIZE {
        return Err(ElfError::OffsetAddressMismatch { segment });
    }
    if flags.write && flags.exec {
        return Err(ElfError::WritableAndExecutable { segment });
    }
    Ok(())
}

/// The page-aligned span of a load segment.
fn page_span(l: &Load) -> Result<(u64, u64), ElfError> {
    let end = l.vaddr.checked_add(l.memsz).and_then(page_ceil).ok_or(ElfError::AddressOverflow { segment: l.index })?;
    Ok((page_floor(l.vaddr), end))
}

/// Read `PT_DYNAMIC`, reject what is not supported, return the `DT_RELA` table.
fn parse_dynamic<'a>(
    bytes: &'a [u8],
    phdrs: &[ProgramHeader64<LE>],
    dynamic: &ProgramHeader64<LE>,
) -> Result<&'a [Rela64<LE>], ElfError> {
    let data =
        file_range(bytes, dynamic.p_offset.get(LE), dynamic.p_filesz.get(LE)).ok_or(ElfError::DynamicOutOfFile)?;
    let whole = data.len() / DYN_SIZE * DYN_SIZE;
    let entries = data
        .get(..whole)
        .and_then(|d| object::pod::slice_from_all_bytes::<Dyn64<LE>>(d).ok())
        .ok_or(ElfError::DynamicOutOfFile)?;

    let (mut rela, mut relasz, mut relaent) = (None, None, None);
    for d in entries {
        let tag = d.d_tag.get(LE);
        let val = d.d_val.get(LE);
        if tag == DT_NULL {
            break;
        } else if tag == DT_NEEDED {
            return Err(ElfError::NeedsSharedLibraries);
        } else if tag == DT_REL || (tag == DT_RELSZ && val != 0) {
            return Err(ElfError::RelNotSupported);
        } else if tag == DT_RELR || (tag == DT_RELRSZ && val != 0) {
            return Err(ElfError::RelrNotSupported);
        } else if tag == DT_JMPREL || (tag == DT_PLTRELSZ && val != 0) {
            return Err(ElfError::PltRelocationsNotSupported);
        } else if tag == DT_TEXTREL || (tag == DT_FLAGS && val & DF_TEXTREL.0 != 0) {
            return Err(ElfError::TextRelocations);
        } else if tag == DT_RELA {
            rela = Some(val);
        } else if tag == DT_RELASZ {
            relasz = Some(val);
        } else if tag == DT_RELAENT {
            relaent = Some(val);
        }
    }

    let (addr, size) = match (rela, relasz) {
        (None, None) | (None, Some(0)) => return Ok(&[]),
        (Some(_), Some(0)) => return Ok(&[]),
        (Some(addr), Some(size)) => (addr, size),
        _ => return Err(ElfError::BadRelocationTable),
    };
    if relaent != Some(RELA_SIZE as u64) || size % RELA_SIZE as u64 != 0 {
        return Err(ElfError::BadRelocationTable);
    }
    // The table is addressed by virtual address: find the file bytes through the load segments.
    let l = loads(phdrs)
        .find(|l| addr >= l.vaddr && addr.checked_add(size).is_some_and(|e| e <= l.vaddr.saturating_add(l.filesz)))
        .ok_or(ElfError::BadRelocationTable)?;
    let offset = l.offset.checked_add(addr.saturating_sub(l.vaddr)).ok_or(ElfError::BadRelocationTable)?;
    let table = file_range(bytes, offset, size).ok_or(ElfError::BadRelocationTable)?;
    object::pod::slice_from_all_bytes::<Rela64<LE>>(table).map_err(|_| ElfError::BadRelocationTable)
}

/// Every relocation is `NONE` or a `RELATIVE` whose 8 bytes lie in one writable segment.
fn check_relocations(phdrs: &[ProgramHeader64<LE>], relocs: &[Rela64<LE>]) -> Result<(), ElfError> {
    for (index, rela) in relocs.iter().enumerate() {
        let r_type = rela.r_type(LE, false);
        if r_type == R_X86_64_NONE {
            continue;
        }
        if r_type != R_X86_64_RELATIVE {
            return Err(ElfError::UnsupportedRelocation { r_type: r_type.0 });
        }
        let at = rela.r_offset.get(LE);
        let l = loads(phdrs).find(|l| l.contains(at, 8)).ok_or(ElfError::RelocationOutsideSegments { index })?;
        if !l.flags.write {
            return Err(ElfError::RelocationInReadOnlySegment { index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    const R: u32 = 4;
    const W: u32 = 2;
    const X: u32 = 1;

    /// One program header, as the builder writes it.
    #[derive(Clone, Copy)]
    struct Ph {
        p_type: u32,
        flags: u32,
        offset: u64,
        vaddr: u64,
        filesz: u64,
        memsz: u64,
        align: u64,
    }

    fn load(flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Ph {
        Ph { p_type: PT_LOAD.0, flags, offset, vaddr, filesz, memsz, align: PAGE_SIZE }
    }

    /// A small ELF64 writer: header fields, program headers, and byte blobs at file offsets.
    #[derive(Clone)]
    struct Spec {
        ident: [u8; 16],
        e_type: u16,
        machine: u16,
        version: u32,
        entry: u64,
        phoff: u64,
        phentsize: u16,
        phnum: Option<u16>,
        phdrs: Vec<Ph>,
        blobs: Vec<(usize, Vec<u8>)>,
        len: usize,
    }

    impl Spec {
        fn new(e_type: u16, entry: u64, phdrs: Vec<Ph>, len: usize) -> Spec {
            let mut ident = [0u8; 16];
            ident[..4].copy_from_slice(&ELFMAG);
            ident[4] = 2; // ELFCLASS64
            ident[5] = 1; // little endian
            ident[6] = 1; // EV_CURRENT
            Spec {
                ident,
                e_type,
                machine: EM_X86_64.0,
                version: 1,
                entry,
                phoff: 64,
                phentsize: 56,
                phnum: None,
                phdrs,
                blobs: Vec::new(),
                len,
            }
        }

        fn blob(mut self, offset: usize, bytes: &[u8]) -> Spec {
            self.blobs.push((offset, bytes.to_vec()));
            self
        }

        fn build(&self) -> Vec<u8> {
            let mut out = vec![0u8; self.len];
            let mut put = |off: usize, bytes: &[u8]| {
                if out.len() < off + bytes.len() {
                    out.resize(off + bytes.len(), 0);
                }
                out[off..off + bytes.len()].copy_from_slice(bytes);
            };
            let mut h = Vec::new();
            h.extend_from_slice(&self.ident);
            h.extend_from_slice(&self.e_type.to_le_bytes());
            h.extend_from_slice(&self.machine.to_le_bytes());
            h.extend_from_slice(&self.version.to_le_bytes());
            h.extend_from_slice(&self.entry.to_le_bytes());
            h.extend_from_slice(&self.phoff.to_le_bytes());
            h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
            h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
            h.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
            h.extend_from_slice(&self.phentsize.to_le_bytes());
            let phnum = self.phnum.unwrap_or(self.phdrs.len() as u16);
            h.extend_from_slice(&phnum.to_le_bytes());
            h.extend_from_slice(&[0u8; 6]); // shentsize, shnum, shstrndx
            assert_eq!(h.len(), 64);
            put(0, &h);
            for (i, ph) in self.phdrs.iter().enumerate() {
                let mut p = Vec::new();
                p.extend_from_slice(&ph.p_type.to_le_bytes());
                p.extend_from_slice(&ph.flags.to_le_bytes());
                for v in [ph.offset, ph.vaddr, ph.vaddr, ph.filesz, ph.memsz, ph.align] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
                put(self.phoff as usize + i * 56, &p);
            }
            for (off, bytes) in &self.blobs {
                put(*off, bytes);
            }
            out
        }
    }

    /// A fixed-address executable: text at 0x20_0000, data + bss at 0x20_1000.
    fn exec_spec() -> Spec {
        Spec::new(
            ET_EXEC.0,
            0x20_0010,
            vec![load(R | X, 0x1000, 0x20_0000, 0x20, 0x20), load(R | W, 0x2010, 0x20_1010, 0x10, 0x3000)],
            0x2020,
        )
        .blob(0x1000, &[0x90; 0x20])
        .blob(0x2010, b"0123456789abcdef")
    }

    fn dyn_entry(tag: i64, val: u64) -> Vec<u8> {
        let mut v = tag.to_le_bytes().to_vec();
        v.extend_from_slice(&val.to_le_bytes());
        v
    }

    fn rela(offset: u64, r_type: u32, addend: i64) -> Vec<u8> {
        let mut v = offset.to_le_bytes().to_vec();
        v.extend_from_slice(&u64::from(r_type).to_le_bytes());
        v.extend_from_slice(&addend.to_le_bytes());
        v
    }

    const DYN_OFFSET: usize = 0x2100;

    fn dynamic(entries: &[(i64, u64)]) -> Vec<u8> {
        let mut v: Vec<u8> = entries.iter().flat_map(|&(t, x)| dyn_entry(t, x)).collect();
        v.extend_from_slice(&dyn_entry(0, 0));
        v
    }

    /// A static-PIE: headers + relocations (R) at 0, text (RX) at 0x1000, data (RW) at 0x2000
    /// holding a pointer table the relocations fill in and the dynamic section.
    fn dyn_spec_with(relocs: &[Vec<u8>], dyn_entries: &[(i64, u64)]) -> Spec {
        let table: Vec<u8> = relocs.concat();
        let mut entries = vec![(DT_RELA.0, 0x200), (DT_RELASZ.0, table.len() as u64), (DT_RELAENT.0, 24)];
        entries.extend_from_slice(dyn_entries);
        let dynamic = dynamic(&entries);
        let mut dyn_ph = load(R | W, DYN_OFFSET as u64, 0x2100, dynamic.len() as u64, dynamic.len() as u64);
        dyn_ph.p_type = PT_DYNAMIC.0;
        dyn_ph.align = 8;
        Spec::new(
            ET_DYN.0,
            0x1000,
            vec![
                load(R, 0, 0, 0x400, 0x400),
                load(R | X, 0x1000, 0x1000, 0x10, 0x10),
                load(R | W, 0x2000, 0x2000, 0x200, 0x1800),
                dyn_ph,
            ],
            0x2200,
        )
        .blob(0x200, &table)
        .blob(0x1000, &[0xcc; 0x10])
        .blob(DYN_OFFSET, &dynamic)
    }

    fn standard_relocs() -> Vec<Vec<u8>> {
        vec![
            rela(0x2000, R_X86_64_RELATIVE.0, 0x1000),
            rela(0x2008, R_X86_64_NONE.0, 0),
            rela(0x2010, R_X86_64_RELATIVE.0, 0x2018),
            rela(0x3000, R_X86_64_RELATIVE.0, -8), // in the bss part of the data segment
        ]
    }

    fn dyn_spec() -> Spec {
        dyn_spec_with(&standard_relocs(), &[])
    }

    /// Records what the loader does; writes must land inside earlier maps.
    #[derive(Default)]
    struct Recorder {
        maps: Vec<(u64, u64, SegmentFlags)>,
        writes: Vec<(u64, Vec<u8>)>,
        keep_bytes: bool,
    }

    impl LoadTarget for Recorder {
        type Error = &'static str;
        fn map(&mut self, vaddr: u64, size: u64, flags: SegmentFlags) -> Result<(), &'static str> {
            assert_eq!(vaddr % PAGE_SIZE, 0);
            assert_eq!(size % PAGE_SIZE, 0);
            assert!(size > 0);
            let end = vaddr.checked_add(size).unwrap();
            assert!(vaddr >= PAGE_SIZE && end <= USER_TOP);
            for &(v, s, _) in &self.maps {
                assert!(end <= v || v + s <= vaddr, "overlapping maps");
            }
            self.maps.push((vaddr, size, flags));
            Ok(())
        }
        fn write(&mut self, vaddr: u64, bytes: &[u8]) -> Result<(), &'static str> {
            let end = vaddr.checked_add(bytes.len() as u64).unwrap();
            assert!(self.maps.iter().any(|&(v, s, _)| vaddr >= v && end <= v + s), "write outside mapped memory");
            self.writes.push((vaddr, if self.keep_bytes { bytes.to_vec() } else { Vec::new() }));
            Ok(())
        }
    }

    impl Recorder {
        fn read_u64(&self, vaddr: u64) -> u64 {
            // The last write covering the 8 bytes wins.
            let mut value = None;
            for (at, bytes) in &self.writes {
                let end = at + bytes.len() as u64;
                if vaddr >= *at && vaddr + 8 <= end {
                    let i = (vaddr - at) as usize;
                    value = Some(u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap()));
                }
            }
            value.expect("never written")
        }
    }

    fn parse_err(spec: &Spec) -> ElfError {
        ElfImage::parse(&spec.build()).expect_err("image should be rejected")
    }

    const RX: SegmentFlags = SegmentFlags { read: true, write: false, exec: true };
    const RW: SegmentFlags = SegmentFlags { read: true, write: true, exec: false };
    const RO: SegmentFlags = SegmentFlags { read: true, write: false, exec: false };

    #[test]
    fn loads_fixed_address_executable() {
        let bytes = exec_spec().build();
        let image = ElfImage::parse(&bytes).unwrap();
        assert!(!image.is_position_independent());
        assert_eq!(image.entry(0), 0x20_0010);
        assert_eq!(image.vaddr_range(), (0x20_0000, 0x20_5000));
        let segs: Vec<_> = image.segments(0).collect();
        assert_eq!(segs.len(), 2);
        assert_eq!((segs[0].vaddr, segs[0].mem_size, segs[0].flags), (0x20_0000, 0x20, RX));
        assert_eq!(segs[0].data, &[0x90; 0x20]);
        assert_eq!((segs[1].vaddr, segs[1].mem_size, segs[1].flags), (0x20_1010, 0x3000, RW));
        assert_eq!(segs[1].data, b"0123456789abcdef");

        let mut rec = Recorder { keep_bytes: true, ..Default::default() };
        assert_eq!(image.load(0, &mut rec), Ok(0x20_0010));
        assert_eq!(rec.maps, [(0x20_0000, 0x1000, RX), (0x20_1000, 0x4000, RW)]);
        assert_eq!(rec.writes.len(), 2);
        assert_eq!(rec.writes[1], (0x20_1010, b"0123456789abcdef".to_vec()));

        // The bias of a fixed-address image must be 0.
        assert_eq!(
            image.load(0x1000, &mut Recorder::default()),
            Err(LoadError::Elf(ElfError::FixedAddressNeedsZeroBias))
        );
    }

    #[test]
    fn loads_static_pie_and_applies_relocations() {
        let bytes = dyn_spec().build();
        let image = ElfImage::parse(&bytes).unwrap();
        assert!(image.is_position_independent());
        assert_eq!(image.relocation_count(), 4);
        assert_eq!(image.vaddr_range(), (0, 0x4000));
        for bias in [0x40_0000u64, 0x1000, USER_TOP - 0x4000] {
            let mut rec = Recorder { keep_bytes: true, ..Default::default() };
            assert_eq!(image.load(bias, &mut rec), Ok(bias + 0x1000));
            assert_eq!(rec.maps, [(bias, 0x1000, RO), (bias + 0x1000, 0x1000, RX), (bias + 0x2000, 0x2000, RW)]);
            assert_eq!(rec.read_u64(bias + 0x2000), bias + 0x1000);
            assert_eq!(rec.read_u64(bias + 0x2010), bias + 0x2018);
            assert_eq!(rec.read_u64(bias + 0x3000), bias.wrapping_sub(8));
            // The NONE relocation wrote nothing: the file byte (zero) stays.
            assert_eq!(rec.read_u64(bias + 0x2008), 0);
            assert_eq!(rec.writes.len(), 3 + 3);
        }
        // Bias checks.
        let mut rec = Recorder::default();
        assert_eq!(image.load(0, &mut rec), Err(LoadError::Elf(ElfError::SegmentAtPageZero { segment: 0 })));
        assert_eq!(image.load(0x1800, &mut rec), Err(LoadError::Elf(ElfError::BiasNotPageAligned)));
        assert_eq!(
            image.load(USER_TOP - 0x3000, &mut rec),
            Err(LoadError::Elf(ElfError::SegmentOutsideUserSpace { segment: 2 }))
        );
        assert_eq!(image.load(!0xfff, &mut rec), Err(LoadError::Elf(ElfError::SegmentOutsideUserSpace { segment: 0 })));
        assert!(rec.maps.is_empty());
    }

    #[test]
    fn target_errors_are_passed_on() {
        struct Full;
        impl LoadTarget for Full {
            type Error = u32;
            fn map(&mut self, _: u64, _: u64, _: SegmentFlags) -> Result<(), u32> {
                Err(7)
            }
            fn write(&mut self, _: u64, _: &[u8]) -> Result<(), u32> {
                Ok(())
            }
        }
        let bytes = dyn_spec().build();
        let image = ElfImage::parse(&bytes).unwrap();
        assert_eq!(image.load(0x10000, &mut Full), Err(LoadError::Target(7)));
    }

    #[test]
    fn rejects_bad_identification() {
        let mut s = exec_spec();
        s.ident[0] = 0;
        assert_eq!(parse_err(&s), ElfError::NotElf);
        assert_eq!(ElfImage::parse(b"").unwrap_err(), ElfError::NotElf);
        assert_eq!(ElfImage::parse(b"\x7fELF\x02\x01\x01").unwrap_err(), ElfError::HeaderTruncated);
        let mut s = exec_spec();
        s.ident[4] = 1;
        assert_eq!(parse_err(&s), ElfError::Not64Bit);
        let mut s = exec_spec();
        s.ident[5] = 2;
        assert_eq!(parse_err(&s), ElfError::NotLittleEndian);
        let mut s = exec_spec();
        s.ident[6] = 0;
        assert_eq!(parse_err(&s), ElfError::BadVersion);
        let mut s = exec_spec();
        s.version = 2;
        assert_eq!(parse_err(&s), ElfError::BadVersion);
        let mut s = exec_spec();
        s.machine = 3; // EM_386
        assert_eq!(parse_err(&s), ElfError::NotX86_64);
        for e_type in [0u16, 1, 4, 0xfe00] {
            let mut s = exec_spec();
            s.e_type = e_type;
            assert_eq!(parse_err(&s), ElfError::NotExecutable);
        }
    }

    #[test]
    fn rejects_bad_program_header_tables() {
        let mut s = exec_spec();
        s.phentsize = 64;
        assert_eq!(parse_err(&s), ElfError::BadProgramHeaderSize);
        let mut s = exec_spec();
        s.phnum = Some(0);
        assert_eq!(parse_err(&s), ElfError::NoLoadSegments);
        let mut s = exec_spec();
        s.phnum = Some(0xffff); // PN_XNUM
        assert_eq!(parse_err(&s), ElfError::TooManyProgramHeaders);
        let mut s = exec_spec();
        s.phnum = Some(MAX_PROGRAM_HEADERS as u16 + 1);
        assert_eq!(parse_err(&s), ElfError::TooManyProgramHeaders);
        let mut s = exec_spec();
        s.phnum = Some(40); // 40 * 56 bytes from offset 64 run past the 0x2020-byte file... almost
        s.len = 64 + 39 * 56;
        s.blobs.clear();
        assert_eq!(parse_err(&s), ElfError::ProgramHeadersOutOfBounds);
        for phoff in [0x2000, u64::MAX - 10, u64::MAX] {
            let mut s = exec_spec();
            s.phoff = 64;
            let bytes = {
                let mut b = s.build();
                b[32..40].copy_from_slice(&phoff.to_le_bytes());
                b
            };
            assert_eq!(ElfImage::parse(&bytes).unwrap_err(), ElfError::ProgramHeadersOutOfBounds);
        }
        // Only non-LOAD headers.
        let mut s = exec_spec();
        for ph in &mut s.phdrs {
            ph.p_type = 4; // PT_NOTE
        }
        assert_eq!(parse_err(&s), ElfError::NoLoadSegments);
        // Only empty LOAD headers.
        let mut s = exec_spec();
        for ph in &mut s.phdrs {
            ph.filesz = 0;
            ph.memsz = 0;
        }
        assert_eq!(parse_err(&s), ElfError::NoLoadSegments);
    }

    #[test]
    fn rejects_interpreter_and_too_many_segments() {
        let mut s = exec_spec();
        s.phdrs.push(Ph { p_type: PT_INTERP.0, flags: R, offset: 0x1000, vaddr: 0, filesz: 4, memsz: 4, align: 1 });
        assert_eq!(parse_err(&s), ElfError::HasInterpreter);

        let phdrs: Vec<Ph> = (0..MAX_LOAD_SEGMENTS as u64 + 1)
            .map(|i| load(if i == 0 { R | X } else { R }, 0, 0x10_0000 + i * PAGE_SIZE, 0, 8))
            .collect();
        let s = Spec::new(ET_EXEC.0, 0x10_0000, phdrs.clone(), 0x1000);
        assert_eq!(parse_err(&s), ElfError::TooManyLoadSegments);
        let s = Spec::new(ET_EXEC.0, 0x10_0000, phdrs[..MAX_LOAD_SEGMENTS].to_vec(), 0x1000);
        assert!(ElfImage::parse(&s.build()).is_ok());
    }

    #[test]
    fn rejects_bad_load_segments() {
        let mut s = exec_spec();
        s.phdrs[1].filesz = 0x4000;
        assert_eq!(parse_err(&s), ElfError::FileSizeExceedsMemSize { segment: 1 });
        let mut s = exec_spec();
        s.phdrs[1].filesz = 0x11;
        assert_eq!(parse_err(&s), ElfError::SegmentOutOfFile { segment: 1 });
        let mut s = exec_spec();
        s.phdrs[1].offset = u64::MAX - 0x1000 + 0x10;
        assert_eq!(parse_err(&s), ElfError::SegmentOutOfFile { segment: 1 });
        let mut s = exec_spec();
        s.phdrs[1].vaddr = u64::MAX - 0xfff;
        s.phdrs[1].offset = 0;
        s.phdrs[1].filesz = 0;
        assert_eq!(parse_err(&s), ElfError::AddressOverflow { segment: 1 });
        let mut s = exec_spec();
        s.phdrs[1].vaddr = u64::MAX - 0x10;
        assert_eq!(parse_err(&s), ElfError::AddressOverflow { segment: 1 });
        let mut s = exec_spec();
        s.phdrs[0].align = 0x3000;
        assert_eq!(parse_err(&s), ElfError::BadAlignment { segment: 0 });
        for align in [0, 1, 8, 0x20_0000] {
            let mut s = exec_spec();
            s.phdrs[0].align = align;
            assert!(ElfImage::parse(&s.build()).is_ok(), "align {align}");
        }
        let mut s = exec_spec();
        s.phdrs[1].vaddr += 8;
        assert_eq!(parse_err(&s), ElfError::OffsetAddressMismatch { segment: 1 });
        let mut s = exec_spec();
        s.phdrs[1].flags = R | W | X;
        assert_eq!(parse_err(&s), ElfError::WritableAndExecutable { segment: 1 });
    }

    #[test]
    fn rejects_overlapping_segments() {
        // Same page, different bytes: still an overlap.
        let mut s = exec_spec();
        s.phdrs[1].vaddr = 0x20_0010 + 0x10 - 0x10 + 0x1000 - 0x1000 + 0x20 - 0x10; // 0x20_0020
        s.phdrs[1].offset = 0x2020;
        s.phdrs[1].filesz = 0;
        assert_eq!(parse_err(&s), ElfError::SegmentsOverlap { segment: 1, other: 0 });
        // Data's bss runs into a third segment's page.
        let mut s = exec_spec();
        s.phdrs.push(load(R, 0, 0x20_4000, 0, 0x10));
        assert_eq!(parse_err(&s), ElfError::SegmentsOverlap { segment: 2, other: 1 });
        // A segment inside another.
        let mut s = exec_spec();
        s.phdrs.push(load(R, 0, 0x20_2000, 0, 0x10));
        assert_eq!(parse_err(&s), ElfError::SegmentsOverlap { segment: 2, other: 1 });
        // Touching pages are fine.
        let mut s = exec_spec();
        s.phdrs.push(load(R, 0, 0x20_5000, 0, 0x10));
        assert!(ElfImage::parse(&s.build()).is_ok());
    }

    #[test]
    fn rejects_entry_outside_executable_segments() {
        for entry in [0, 0x20_0000 - 1, 0x20_0020, 0x20_1010, u64::MAX] {
            let mut s = exec_spec();
            s.entry = entry;
            assert_eq!(parse_err(&s), ElfError::EntryNotExecutable, "entry {entry:#x}");
        }
        let mut s = exec_spec();
        s.entry = 0x20_001f;
        assert!(ElfImage::parse(&s.build()).is_ok());
    }

    #[test]
    fn rejects_fixed_address_images_outside_user_space() {
        let mut s = exec_spec();
        s.phdrs[0].vaddr = 0x10;
        s.phdrs[0].offset = 0x10;
        s.entry = 0x10;
        assert_eq!(parse_err(&s), ElfError::SegmentAtPageZero { segment: 0 });
        let mut s = exec_spec();
        s.phdrs[1].vaddr = USER_TOP - 0x1000 + 0x10;
        assert_eq!(parse_err(&s), ElfError::SegmentOutsideUserSpace { segment: 1 });
        let mut s = exec_spec();
        s.phdrs[1].vaddr = 0xffff_8000_0000_0010;
        assert_eq!(parse_err(&s), ElfError::SegmentOutsideUserSpace { segment: 1 });
    }

    #[test]
    fn rejects_images_larger_than_user_space() {
        let mut s = dyn_spec();
        s.phdrs[2].memsz = USER_TOP;
        assert_eq!(parse_err(&s), ElfError::ImageTooLarge);
        let mut s = dyn_spec();
        s.phdrs[2].memsz = USER_TOP - 0x3000; // span exactly USER_TOP - PAGE_SIZE: fits at 0x1000
        let bytes = s.build();
        let image = ElfImage::parse(&bytes).unwrap();
        assert_eq!(image.check_bias(0x1000), Ok(()));
        assert_eq!(image.check_bias(0x2000), Err(ElfError::SegmentOutsideUserSpace { segment: 2 }));
    }

    #[test]
    fn rejects_unsupported_relocations() {
        for r_type in [1u32, 2, 6, 7, 37, 0xffff_ffff] {
            let s = dyn_spec_with(&[rela(0x2000, r_type, 0)], &[]);
            assert_eq!(parse_err(&s), ElfError::UnsupportedRelocation { r_type });
        }
        assert_eq!(ElfError::UnsupportedRelocation { r_type: 7 }.to_string(), "unsupported relocation type 7");
        // Targets must be inside a writable segment, all 8 bytes.
        for (at, err) in [
            (0x4000u64, ElfError::RelocationOutsideSegments { index: 1 }),
            (0x37fc, ElfError::RelocationOutsideSegments { index: 1 }),
            (u64::MAX - 3, ElfError::RelocationOutsideSegments { index: 1 }),
            (0x1000, ElfError::RelocationInReadOnlySegment { index: 1 }),
            (0x100, ElfError::RelocationInReadOnlySegment { index: 1 }),
        ] {
            let s = dyn_spec_with(&[rela(0x2000, 8, 0), rela(at, 8, 0)], &[]);
            assert_eq!(parse_err(&s), err, "target {at:#x}");
        }
        // Reaching the last byte of the segment is fine.
        let s = dyn_spec_with(&[rela(0x37f8, 8, 0)], &[]);
        assert!(ElfImage::parse(&s.build()).is_ok());
    }

    #[test]
    fn rejects_unsupported_dynamic_entries() {
        let cases: [((i64, u64), ElfError); 9] = [
            ((DT_NEEDED.0, 1), ElfError::NeedsSharedLibraries),
            ((DT_REL.0, 0x200), ElfError::RelNotSupported),
            ((DT_RELSZ.0, 24), ElfError::RelNotSupported),
            ((DT_RELR.0, 0x200), ElfError::RelrNotSupported),
            ((DT_RELRSZ.0, 8), ElfError::RelrNotSupported),
            ((DT_JMPREL.0, 0x200), ElfError::PltRelocationsNotSupported),
            ((DT_PLTRELSZ.0, 24), ElfError::PltRelocationsNotSupported),
            ((DT_TEXTREL.0, 0), ElfError::TextRelocations),
            ((DT_FLAGS.0, DF_TEXTREL.0), ElfError::TextRelocations),
        ];
        for (entry, err) in cases {
            let s = dyn_spec_with(&standard_relocs(), &[entry]);
            assert_eq!(parse_err(&s), err, "{entry:?}");
        }
        // Zero sizes and unrelated flags are harmless.
        let s = dyn_spec_with(&standard_relocs(), &[(DT_RELSZ.0, 0), (DT_PLTRELSZ.0, 0), (DT_FLAGS.0, 8)]);
        assert!(ElfImage::parse(&s.build()).is_ok());
        // Entries after DT_NULL are not read.
        let mut s = dyn_spec();
        let mut tail = dynamic(&[]);
        tail.extend_from_slice(&dyn_entry(DT_NEEDED.0, 1));
        s.blobs.push((DYN_OFFSET + 3 * 16, tail));
        assert!(ElfImage::parse(&s.build()).is_ok());
    }

    #[test]
    fn rejects_malformed_relocation_tables() {
        let relocs = standard_relocs();
        let n = relocs.concat().len() as u64;
        for extra in [
            vec![(DT_RELAENT.0, 16)],
            vec![(DT_RELASZ.0, n - 1)],
            vec![(DT_RELA.0, 0x3f0)],  // runs past the file part of segment 0
            vec![(DT_RELA.0, 0x21b0)], // starts in segment 2's file part, runs past it
            vec![(DT_RELA.0, 0x9000)], // in no segment
        ] {
            let s = dyn_spec_with(&relocs, &extra);
            assert_eq!(parse_err(&s), ElfError::BadRelocationTable, "{extra:?}");
        }
        // DT_RELASZ without DT_RELA.
        let mut s = dyn_spec();
        let d = dynamic(&[(DT_RELASZ.0, 24), (DT_RELAENT.0, 24)]);
        s.phdrs[3].filesz = d.len() as u64;
        s.blobs.push((DYN_OFFSET, d));
        assert_eq!(parse_err(&s), ElfError::BadRelocationTable);
        // No relocations at all is fine.
        let mut s = dyn_spec();
        let d = dynamic(&[]);
        s.phdrs[3].filesz = d.len() as u64;
        s.blobs.push((DYN_OFFSET, d));
        let bytes = s.build();
        assert_eq!(ElfImage::parse(&bytes).unwrap().relocation_count(), 0);
        // Dynamic segment problems.
        let mut s = dyn_spec();
        s.phdrs[3].offset = 0x10_0000;
        assert_eq!(parse_err(&s), ElfError::DynamicOutOfFile);
        let mut s = dyn_spec();
        s.phdrs.push(s.phdrs[3]);
        assert_eq!(parse_err(&s), ElfError::MultipleDynamicSegments);
    }

    #[test]
    fn error_messages_are_phrases() {
        assert_eq!(ElfError::NotElf.to_string(), "not an ELF file");
        assert_eq!(ElfError::NotX86_64.to_string(), "not x86_64");
        assert_eq!(ElfError::SegmentsOverlap { segment: 2, other: 1 }.to_string(), "segment 2 overlaps segment 1");
        assert_eq!(
            ElfError::WritableAndExecutable { segment: 3 }.to_string(),
            "segment 3 is both writable and executable"
        );
        assert_eq!(ElfError::EntryNotExecutable.to_string(), "entry point outside executable segments");
        assert_eq!(ElfError::ProgramHeadersOutOfBounds.to_string(), "program header table out of file bounds");
        assert_eq!(
            ElfError::SegmentOutsideUserSpace { segment: 0 }.to_string(),
            "segment 0 outside user address space"
        );
        let e: LoadError<&str> = LoadError::Target("out of frames");
        assert_eq!(e.to_string(), "loading failed: out of frames");
    }

    #[test]
    fn truncation_never_panics() {
        for spec in [exec_spec(), dyn_spec()] {
            let bytes = spec.build();
            assert!(ElfImage::parse(&bytes).is_ok());
            for len in 0..bytes.len() {
                // The last segment's file bytes reach the end of the file, so every prefix fails.
                assert!(ElfImage::parse(&bytes[..len]).is_err(), "prefix of {len} bytes accepted");
            }
        }
    }

    use crate::test_rng::Rng;

    /// Parse, and when that succeeds load at a few biases into a checking recorder.
    fn exercise(bytes: &[u8]) -> bool {
        let Ok(image) = ElfImage::parse(bytes) else {
            return false;
        };
        for bias in [0u64, 0x1000, 0x40_0000, 0x7fff_0000_0000, 0x123] {
            let mut rec = Recorder::default();
            if let Ok(entry) = image.load(bias, &mut rec) {
                assert!(rec.maps.iter().any(|&(v, s, f)| f.exec && entry >= v && entry < v + s));
                assert!(rec.maps.iter().all(|&(_, _, f)| !(f.write && f.exec)));
            }
        }
        true
    }

    #[test]
    fn random_mutations_never_panic() {
        for (seed, spec) in [(0x1234_5678_9abc_def0u64, exec_spec()), (0x0fed_cba9_8765_4321, dyn_spec())] {
            let valid = spec.build();
            let mut rng = Rng(seed);
            let mut accepted = 0;
            for _ in 0..4000 {
                let mut bytes = valid.clone();
                for _ in 0..1 + rng.next() % 6 {
                    // Mostly the headers, the relocation table and the dynamic section.
                    let hot = [0usize..0x200, 0x200..0x260, DYN_OFFSET..DYN_OFFSET + 0x50];
                    let r = &hot[(rng.next() % 3) as usize];
                    let i = (r.start + (rng.next() as usize) % (r.end - r.start)).min(bytes.len() - 1);
                    bytes[i] = match rng.next() % 4 {
                        0 => 0,
                        1 => 0xff,
                        _ => rng.next() as u8,
                    };
                }
                if exercise(&bytes) {
                    accepted += 1;
                }
            }
            // Some mutations hit unused bytes and stay valid; most do not.
            assert!(accepted > 0 && accepted < 4000, "{accepted}");
        }
        // Pure noise, with a valid magic half the time.
        let mut rng = Rng(42);
        for _ in 0..2000 {
            let len = (rng.next() % 0x400) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len >= 4 && rng.next().is_multiple_of(2) {
                bytes[..4].copy_from_slice(&ELFMAG);
            }
            exercise(&bytes);
        }
    }

    #[test]
    fn unaligned_image_bytes_parse() {
        let bytes = dyn_spec().build();
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        let image = ElfImage::parse(&shifted[1..]).unwrap();
        assert_eq!(image.relocation_count(), 4);
    }

    #[test]
    fn host_executable_is_handled() {
        let Ok(path) = std::env::current_exe() else {
            return;
        };
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        match ElfImage::parse(&bytes) {
            // A Linux test binary is dynamically linked or uses other relocation types.
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        ElfError::HasInterpreter
                            | ElfError::NeedsSharedLibraries
                            | ElfError::UnsupportedRelocation { .. }
                            | ElfError::NotElf
                            | ElfError::NotX86_64
                    ),
                    "unexpected rejection: {e}"
                );
            }
            Ok(image) => {
                let bias = if image.is_position_independent() { 0x1000_0000 } else { 0 };
                let _ = image.load(bias, &mut Recorder::default());
            }
        }
    }
}
