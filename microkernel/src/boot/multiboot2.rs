//! Multiboot2 boot door: GRUB's boot information structure.
//!
//! GRUB enters the kernel in 32-bit protected mode with `eax` = [`MAGIC`] and `ebx` = the
//! physical address of the boot information: an 8-byte header (`u32 total_size`,
//! `u32 reserved`) followed by 8-byte-aligned tags (`u32 type`, `u32 size`, payload), ended by a
//! tag of type 0. This parser reads the header first, then the whole structure as one byte
//! slice, and walks the tags it needs:
//!
//! | tag | contents | kept as |
//! |-----|----------|---------|
//! | 1 command line | NUL-terminated string | [`BootInfo::cmdline`] |
//! | 3 module | `u32 mod_start, mod_end`, string | [`BootInfo::initrd`] (at most one module) |
//! | 6 memory map | `u32 entry_size, entry_version`, entries `u64 base, u64 len, u32 type` | regions |
//! | 8 framebuffer | `u64 addr, u32 pitch, width, height, u8 bpp, u8 type` | framebuffer (direct RGB only) |
//! | 14 / 15 ACPI | a copy of the RSDP (v1 / v2) | [`AcpiRoot::Rsdt`] (15 preferred) |
//!
//! Tag and memory-type numbers come from the `multiboot2` crate ([`TagType`],
//! [`MemoryAreaType`]), but the walk itself is written here rather than with
//! `multiboot2::BootInformation`, for two reasons:
//!
//! * the crate loads the structure only from a raw pointer (`unsafe BootInformation::load`) that
//!   must be 8-byte aligned, while this parser works on the byte slices [`PhysMemory`] hands out
//!   (so it runs unchanged in host tests over plain buffers);
//! * the crate's typed tag accessors `assert!` on malformed sizes (a memory-map tag whose size is
//!   not a whole number of entries, an `entry_size` other than 24, a module or framebuffer tag
//!   shorter than its fixed part). Boot information must never be able to panic the kernel, so
//!   every field here is a bounds-checked little-endian read that turns into
//!   [`BootInfoError::Malformed`] instead.
//!
//! The ACPI tags carry a *copy* of the RSDP, not its address, so the parser validates the copy
//! (signature, checksum, and for revision 2 or later the length and extended checksum) and
//! records the RSDT or XSDT it points to. A v1-sized copy (tag 14 from GRUB on ACPI 2+ firmware
//! keeps only the first 20 bytes) is recorded as revision 0 with its RSDT.

use multiboot2::{MemoryAreaType, TagType};

use super::info::{Framebuffer, MAX_MEMORY_REGIONS};
use super::{AcpiRoot, BootInfo, BootInfoError, BootProtocol, MemoryKind, MemoryRegion, PhysMemory, PhysRange};
use super::{le_u32, le_u64};

/// The value GRUB leaves in `eax` for a multiboot2 kernel.
pub const MAGIC: u32 = 0x36d7_6289;
const _: () = assert!(MAGIC == multiboot2::MAGIC);

/// Size of the boot information header and of every tag header.
const HEADER_SIZE: usize = 8;
/// Tags start on 8-byte boundaries (relative to the start of the structure).
const TAG_ALIGN: usize = 8;
/// Size of one memory-map entry as defined by the specification (`entry_size` may be larger).
const MMAP_ENTRY_SIZE: usize = 24;
/// Framebuffer tag: bytes up to and including `framebuffer_type`.
const FRAMEBUFFER_MIN_SIZE: usize = 30;
/// `framebuffer_type` value for a direct-colour RGB framebuffer.
const FRAMEBUFFER_TYPE_RGB: u8 = 1;
/// Size of an ACPI 1.0 RSDP and of an ACPI 2.0+ RSDP.
const RSDP_V1_SIZE: usize = 20;
const RSDP_V2_SIZE: usize = 36;

/// Parse the multiboot2 boot information at physical address `mbi_phys`, given the `magic`
/// value the loader passed in `eax`.
///
/// Errors: a wrong `magic` is [`BootInfoError::BadMagic`]; no memory-map tag (or one with no
/// non-empty entry) is [`BootInfoError::NoMemoryMap`]; more than one module tag is
/// [`BootInfoError::TooManyModules`]; more than [`MAX_MEMORY_REGIONS`] non-empty memory-map
/// entries is [`BootInfoError::TooManyRegions`]; an over-long command line is
/// [`BootInfoError::CmdlineTooLong`]; an unreadable or inconsistent structure, or an invalid
/// RSDP copy, is [`BootInfoError::Malformed`].
pub fn parse(mem: &dyn PhysMemory, magic: u32, mbi_phys: u64) -> Result<BootInfo, BootInfoError> {
    if magic != MAGIC {
        return Err(BootInfoError::BadMagic);
    }
    let header =
        mem.bytes(mbi_phys, HEADER_SIZE).ok_or(BootInfoError::Malformed("multiboot2: boot information unreadable"))?;
    let total_size = le_u32(header, 0).ok_or(BootInfoError::Malformed("multiboot2: header truncated"))?;
    let total_size =
        usize::try_from(total_size).map_err(|_| BootInfoError::Malformed("multiboot2: total_size too large"))?;
    if total_size < HEADER_SIZE + HEADER_SIZE {
        return Err(BootInfoError::Malformed("multiboot2: total_size too small"));
    }
    let mbi =
        mem.bytes(mbi_phys, total_size).ok_or(BootInfoError::Malformed("multiboot2: boot information truncated"))?;

    let mut info = BootInfo::new(BootProtocol::Multiboot2);
    info.loader_phys_offset = 0;
    let mut modules = 0usize;
    let mut have_mmap = false;
    let mut acpi_old: Option<&[u8]> = None;
    let mut acpi_new: Option<&[u8]> = None;

    let mut offset = HEADER_SIZE;
    loop {
        let (typ, tag) = tag_at(mbi, offset)?;
        match TagType::from_val(typ) {
            TagType::End => break,
            TagType::Cmdline => info.set_cmdline(payload(tag))?,
            TagType::Module => {
                modules += 1;
                if modules > 1 {
                    return Err(BootInfoError::TooManyModules);
                }
                info.initrd = Some(parse_module(tag)?);
            }
            // The specification has one memory map and one framebuffer; later copies are ignored.
            TagType::Mmap if !have_mmap => {
                parse_mmap(tag, &mut info)?;
                have_mmap = true;
            }
            TagType::Framebuffer if info.framebuffer.is_none() => info.framebuffer = parse_framebuffer(tag)?,
            TagType::AcpiV1 => acpi_old = acpi_old.or(Some(payload(tag))),
            TagType::AcpiV2 => acpi_new = acpi_new.or(Some(payload(tag))),
            _ => {}
        }
        // `tag_at` checked that the tag lies inside `mbi`, so this cannot overflow.
        offset += align_up(tag.len());
    }

    if !have_mmap || info.regions().is_empty() {
        return Err(BootInfoError::NoMemoryMap);
    }
    info.acpi = match (acpi_new, acpi_old) {
        (Some(copy), _) => Some(parse_rsdp_copy(copy, true)?),
        (None, Some(copy)) => Some(parse_rsdp_copy(copy, false)?),
        (None, None) => None,
    };
    Ok(info)
}

/// Map a multiboot2 memory-map entry type onto [`MemoryKind`].
pub fn memory_kind(ty: u32) -> MemoryKind {
    match MemoryAreaType::from_val(ty) {
        MemoryAreaType::Available => MemoryKind::Usable,
        MemoryAreaType::AcpiAvailable => MemoryKind::AcpiReclaimable,
        MemoryAreaType::ReservedHibernate => MemoryKind::AcpiNvs,
        MemoryAreaType::Defective => MemoryKind::Defective,
        MemoryAreaType::Reserved | MemoryAreaType::Custom(_) => MemoryKind::Reserved,
    }
}

/// The type and bytes (header included, padding excluded) of the tag at `offset` in `mbi`.
fn tag_at(mbi: &[u8], offset: usize) -> Result<(u32, &[u8]), BootInfoError> {
    let typ = le_u32(mbi, offset).ok_or(BootInfoError::Malformed("multiboot2: no end tag"))?;
    let size = le_u32(mbi, offset.saturating_add(4)).ok_or(BootInfoError::Malformed("multiboot2: no end tag"))?;
    let size = usize::try_from(size).map_err(|_| BootInfoError::Malformed("multiboot2: tag overruns total_size"))?;
    if size < HEADER_SIZE {
        return Err(BootInfoError::Malformed("multiboot2: tag smaller than its header"));
    }
    let tag = offset
        .checked_add(size)
        .and_then(|end| mbi.get(offset..end))
        .ok_or(BootInfoError::Malformed("multiboot2: tag overruns total_size"))?;
    Ok((typ, tag))
}

/// The bytes of a tag after its 8-byte header.
fn payload(tag: &[u8]) -> &[u8] {
    tag.get(HEADER_SIZE..).unwrap_or(&[])
}

/// `size` rounded up to the tag alignment (saturating; a saturated offset fails the next read).
fn align_up(size: usize) -> usize {
    size.saturating_add(TAG_ALIGN - 1) & !(TAG_ALIGN - 1)
}

fn parse_module(tag: &[u8]) -> Result<PhysRange, BootInfoError> {
    let malformed = BootInfoError::Malformed("multiboot2: module tag truncated");
    let start = le_u32(tag, 8).ok_or(malformed)?;
    let end = le_u32(tag, 12).ok_or(malformed)?;
    if end < start {
        return Err(BootInfoError::Malformed("multiboot2: module ends before it starts"));
    }
    Ok(PhysRange { start: u64::from(start), end: u64::from(end) })
}

fn parse_mmap(tag: &[u8], info: &mut BootInfo) -> Result<(), BootInfoError> {
    let malformed = BootInfoError::Malformed("multiboot2: memory map tag truncated");
    let entry_size = le_u32(tag, 8).ok_or(malformed)?;
    let entry_size = usize::try_from(entry_size).map_err(|_| malformed)?;
    if entry_size < MMAP_ENTRY_SIZE {
        return Err(BootInfoError::Malformed("multiboot2: memory map entry_size too small"));
    }
    let entries = tag.get(16..).ok_or(malformed)?;
    if entries.len() % entry_size != 0 {
        return Err(BootInfoError::Malformed("multiboot2: memory map is not a whole number of entries"));
    }
    if entries.len() / entry_size > MAX_MEMORY_REGIONS {
        return Err(BootInfoError::TooManyRegions);
    }
    for entry in entries.chunks_exact(entry_size) {
        let base = le_u64(entry, 0).ok_or(malformed)?;
        let len = le_u64(entry, 8).ok_or(malformed)?;
        let ty = le_u32(entry, 16).ok_or(malformed)?;
        info.push_region(MemoryRegion { base, len, kind: memory_kind(ty) })?;
    }
    Ok(())
}

/// A direct-colour framebuffer; indexed-colour and EGA text modes are not kept (the kernel has no
/// use for them and [`Framebuffer`] cannot describe them).
fn parse_framebuffer(tag: &[u8]) -> Result<Option<Framebuffer>, BootInfoError> {
    if tag.len() < FRAMEBUFFER_MIN_SIZE {
        return Err(BootInfoError::Malformed("multiboot2: framebuffer tag truncated"));
    }
    let malformed = BootInfoError::Malformed("multiboot2: framebuffer tag truncated");
    let phys_addr = le_u64(tag, 8).ok_or(malformed)?;
    let pitch = le_u32(tag, 16).ok_or(malformed)?;
    let width = le_u32(tag, 20).ok_or(malformed)?;
    let height = le_u32(tag, 24).ok_or(malformed)?;
    let bpp = *tag.get(28).ok_or(malformed)?;
    let fb_type = *tag.get(29).ok_or(malformed)?;
    if fb_type != FRAMEBUFFER_TYPE_RGB {
        return Ok(None);
    }
    Ok(Some(Framebuffer { phys_addr, width, height, pitch, bpp }))
}

/// Validate the RSDP copy held by an ACPI tag and record the table it points to. `new_tag` is
/// true for tag 15, which must hold a full ACPI 2.0+ RSDP.
fn parse_rsdp_copy(copy: &[u8], new_tag: bool) -> Result<AcpiRoot, BootInfoError> {
    let v1 = copy.get(..RSDP_V1_SIZE).ok_or(BootInfoError::Malformed("multiboot2: RSDP copy truncated"))?;
    if v1.get(..8) != Some(b"RSD PTR ".as_slice()) {
        return Err(BootInfoError::Malformed("multiboot2: bad RSDP signature"));
    }
    if checksum(v1) != 0 {
        return Err(BootInfoError::Malformed("multiboot2: bad RSDP checksum"));
    }
    let revision = *v1.get(15).ok_or(BootInfoError::Malformed("multiboot2: RSDP copy truncated"))?;
    let rsdt = le_u32(v1, 16).ok_or(BootInfoError::Malformed("multiboot2: RSDP copy truncated"))?;
    if new_tag && copy.len() < RSDP_V2_SIZE {
        return Err(BootInfoError::Malformed("multiboot2: new RSDP tag truncated"));
    }
    if revision < 2 || copy.len() < RSDP_V2_SIZE {
        return Ok(AcpiRoot::Rsdt { revision: 0, phys: u64::from(rsdt) });
    }
    let malformed = BootInfoError::Malformed("multiboot2: bad RSDP length");
    let length = le_u32(copy, 20).ok_or(malformed)?;
    let length = usize::try_from(length).map_err(|_| malformed)?;
    let full = if length >= RSDP_V2_SIZE { copy.get(..length).ok_or(malformed)? } else { return Err(malformed) };
    if checksum(full) != 0 {
        return Err(BootInfoError::Malformed("multiboot2: bad RSDP extended checksum"));
    }
    let xsdt = le_u64(full, 24).ok_or(malformed)?;
    Ok(AcpiRoot::Rsdt { revision, phys: xsdt })
}

/// The byte sum of `bytes`, which is 0 for a valid ACPI checksum.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::info::MAX_CMDLINE;
    use crate::boot::testing::{Rng, TestMem};

    const MBI: u64 = 0x9000;

    /// Builds a boot information structure tag by tag, the way GRUB lays it out.
    struct Builder {
        bytes: Vec<u8>,
    }

    impl Builder {
        fn new() -> Builder {
            Builder { bytes: vec![0; 8] }
        }

        /// Append a tag with `payload` after its header, padded to 8 bytes.
        fn tag(mut self, typ: u32, payload: &[u8]) -> Builder {
            let size = (8 + payload.len()) as u32;
            self.bytes.extend_from_slice(&typ.to_le_bytes());
            self.bytes.extend_from_slice(&size.to_le_bytes());
            self.bytes.extend_from_slice(payload);
            while !self.bytes.len().is_multiple_of(8) {
                self.bytes.push(0);
            }
            self
        }

        fn cmdline(self, s: &[u8]) -> Builder {
            let mut p = s.to_vec();
            p.push(0);
            self.tag(1, &p)
        }

        fn module(self, start: u32, end: u32, s: &str) -> Builder {
            let mut p = Vec::new();
            p.extend_from_slice(&start.to_le_bytes());
            p.extend_from_slice(&end.to_le_bytes());
            p.extend_from_slice(s.as_bytes());
            p.push(0);
            self.tag(3, &p)
        }

        fn mmap(self, entries: &[(u64, u64, u32)]) -> Builder {
            let mut p = Vec::new();
            p.extend_from_slice(&24u32.to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            for &(base, len, ty) in entries {
                p.extend_from_slice(&base.to_le_bytes());
                p.extend_from_slice(&len.to_le_bytes());
                p.extend_from_slice(&ty.to_le_bytes());
                p.extend_from_slice(&0u32.to_le_bytes());
            }
            self.tag(6, &p)
        }

        fn framebuffer(self, addr: u64, pitch: u32, width: u32, height: u32, bpp: u8, fb_type: u8) -> Builder {
            let mut p = Vec::new();
            p.extend_from_slice(&addr.to_le_bytes());
            p.extend_from_slice(&pitch.to_le_bytes());
            p.extend_from_slice(&width.to_le_bytes());
            p.extend_from_slice(&height.to_le_bytes());
            p.push(bpp);
            p.push(fb_type);
            p.extend_from_slice(&0u16.to_le_bytes());
            // Direct-colour info: red/green/blue field position and mask size.
            p.extend_from_slice(&[16, 8, 8, 8, 0, 8]);
            self.tag(8, &p)
        }

        fn end(self) -> Vec<u8> {
            let mut b = self.tag(0, &[]).bytes;
            let total = b.len() as u32;
            b[0..4].copy_from_slice(&total.to_le_bytes());
            b
        }
    }

    /// An ACPI 1.0 RSDP with a valid checksum.
    fn rsdp_v1(rsdt: u32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(b"RSD PTR ");
        r.push(0);
        r.extend_from_slice(b"BOCHS ");
        r.push(0);
        r.extend_from_slice(&rsdt.to_le_bytes());
        r[8] = 0u8.wrapping_sub(checksum(&r));
        r
    }

    /// An ACPI 2.0 RSDP with valid checksums.
    fn rsdp_v2(rsdt: u32, xsdt: u64) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(b"RSD PTR ");
        r.push(0);
        r.extend_from_slice(b"BOCHS ");
        r.push(2);
        r.extend_from_slice(&rsdt.to_le_bytes());
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&xsdt.to_le_bytes());
        r.push(0);
        r.extend_from_slice(&[0; 3]);
        r[8] = 0u8.wrapping_sub(checksum(&r[..20]));
        r[32] = 0u8.wrapping_sub(checksum(&r));
        r
    }

    const MAP: [(u64, u64, u32); 6] = [
        (0, 0x9_fc00, 1),
        (0x9_fc00, 0x400, 2),
        (0x10_0000, 0x7fee_0000, 1),
        (0x7ffe_0000, 0x1_0000, 3),
        (0x7fff_0000, 0x1_0000, 4),
        (0xfffc_0000, 0x4_0000, 2),
    ];

    fn grub_like() -> Vec<u8> {
        Builder::new()
            .cmdline(b"ozone.test=boot quiet")
            .tag(2, b"GRUB 2.06\0")
            .module(0x20_0000, 0x21_3000, "/boot/initrd.tar")
            .tag(4, &[0x7f, 2, 0, 0, 0x80, 0xfb, 1, 0])
            .mmap(&MAP)
            .framebuffer(0xfd00_0000, 4096, 1024, 768, 32, 1)
            .tag(14, &rsdp_v1(0x7ffe_1234))
            .tag(15, &rsdp_v2(0x7ffe_1234, 0x7ffe_5678))
            .end()
    }

    fn mem_with(bytes: Vec<u8>) -> TestMem {
        TestMem { base: MBI, data: bytes }
    }

    #[test]
    fn parses_a_grub_like_structure() {
        let info = parse(&mem_with(grub_like()), MAGIC, MBI).unwrap();
        assert_eq!(info.protocol, BootProtocol::Multiboot2);
        assert_eq!(info.loader_phys_offset, 0);
        assert_eq!(info.cmdline(), "ozone.test=boot quiet");
        assert_eq!(info.initrd, Some(PhysRange { start: 0x20_0000, end: 0x21_3000 }));
        assert_eq!(
            info.framebuffer,
            Some(Framebuffer { phys_addr: 0xfd00_0000, width: 1024, height: 768, pitch: 4096, bpp: 32 })
        );
        assert_eq!(info.acpi, Some(AcpiRoot::Rsdt { revision: 2, phys: 0x7ffe_5678 }));
        let kinds: Vec<_> = info.regions().iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                MemoryKind::Usable,
                MemoryKind::Reserved,
                MemoryKind::Usable,
                MemoryKind::AcpiReclaimable,
                MemoryKind::AcpiNvs,
                MemoryKind::Reserved
            ]
        );
        assert_eq!(info.regions()[2], MemoryRegion { base: 0x10_0000, len: 0x7fee_0000, kind: MemoryKind::Usable });
    }

    #[test]
    fn minimal_structure_and_old_rsdp() {
        let b = Builder::new().mmap(&MAP).tag(14, &rsdp_v1(0xe_0000)).end();
        let info = parse(&mem_with(b), MAGIC, MBI).unwrap();
        assert_eq!(info.cmdline(), "");
        assert_eq!(info.initrd, None);
        assert_eq!(info.framebuffer, None);
        assert_eq!(info.acpi, Some(AcpiRoot::Rsdt { revision: 0, phys: 0xe_0000 }));

        // GRUB on ACPI 2.0 firmware: tag 14 holds the first 20 bytes of a revision-2 RSDP.
        let b = Builder::new().mmap(&MAP).tag(14, &rsdp_v2(0xe_0000, 0xe_1000)[..20]).end();
        let info = parse(&mem_with(b), MAGIC, MBI).unwrap();
        assert_eq!(info.acpi, Some(AcpiRoot::Rsdt { revision: 0, phys: 0xe_0000 }));

        let b = Builder::new().mmap(&MAP).end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap().acpi, None);
    }

    #[test]
    fn every_memory_type_is_mapped() {
        assert_eq!(memory_kind(1), MemoryKind::Usable);
        assert_eq!(memory_kind(2), MemoryKind::Reserved);
        assert_eq!(memory_kind(3), MemoryKind::AcpiReclaimable);
        assert_eq!(memory_kind(4), MemoryKind::AcpiNvs);
        assert_eq!(memory_kind(5), MemoryKind::Defective);
        assert_eq!(memory_kind(0), MemoryKind::Reserved);
        assert_eq!(memory_kind(7), MemoryKind::Reserved);
        assert_eq!(memory_kind(u32::MAX), MemoryKind::Reserved);
    }

    #[test]
    fn non_rgb_framebuffers_are_not_kept() {
        let b = Builder::new().mmap(&MAP).framebuffer(0xb_8000, 160, 80, 25, 16, 2).end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap().framebuffer, None);
        let b = Builder::new().mmap(&MAP).tag(8, &[0; 12]).end();
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
    }

    #[test]
    fn larger_entry_size_is_stepped_over() {
        let mut p = Vec::new();
        p.extend_from_slice(&32u32.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        for &(base, len, ty) in &MAP[..2] {
            p.extend_from_slice(&base.to_le_bytes());
            p.extend_from_slice(&len.to_le_bytes());
            p.extend_from_slice(&ty.to_le_bytes());
            p.extend_from_slice(&[0xff; 12]);
        }
        let b = Builder::new().tag(6, &p).end();
        let info = parse(&mem_with(b), MAGIC, MBI).unwrap();
        assert_eq!(info.regions().len(), 2);
        assert_eq!(info.regions()[1], MemoryRegion { base: 0x9_fc00, len: 0x400, kind: MemoryKind::Reserved });
    }

    #[test]
    fn bad_magic_and_unreadable_addresses() {
        let mem = mem_with(grub_like());
        assert_eq!(parse(&mem, 0x2bad_b002, MBI).unwrap_err(), BootInfoError::BadMagic);
        assert!(matches!(parse(&mem, MAGIC, 0).unwrap_err(), BootInfoError::Malformed(_)));
        assert!(matches!(parse(&mem, MAGIC, u64::MAX - 2).unwrap_err(), BootInfoError::Malformed(_)));
    }

    #[test]
    fn truncated_structures() {
        // total_size larger than readable memory.
        let mut b = grub_like();
        let n = b.len();
        b.truncate(n - 8);
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
        // total_size too small to hold an end tag.
        let mut b = grub_like();
        b[0..4].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
        // total_size cuts the tag list before the end tag.
        let mut b = grub_like();
        let n = b.len() as u32;
        b[0..4].copy_from_slice(&(n - 8).to_le_bytes());
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
        // A tag whose size runs past total_size, and one smaller than its header.
        let mut b = grub_like();
        b[12..16].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
        let mut b = grub_like();
        b[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
        // Truncated module and memory-map tags.
        let b = Builder::new().mmap(&MAP).tag(3, &[0; 4]).end();
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
        let b = Builder::new().tag(6, &[24, 0, 0, 0]).end();
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
        let mut mmap_bad = Builder::new().mmap(&MAP[..1]).bytes;
        mmap_bad[16..20].copy_from_slice(&16u32.to_le_bytes());
        let b = Builder { bytes: mmap_bad }.end();
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
        let b = Builder::new().tag(6, &[24, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]).end();
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
        // A module ending before it starts.
        let b = Builder::new().mmap(&MAP).module(0x3000, 0x2000, "").end();
        assert!(matches!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::Malformed(_)));
    }

    #[test]
    fn no_memory_map() {
        let b = Builder::new().cmdline(b"x").module(0x1000, 0x2000, "").end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::NoMemoryMap);
        let b = Builder::new().mmap(&[]).end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::NoMemoryMap);
        let b = Builder::new().mmap(&[(0x1000, 0, 1)]).end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::NoMemoryMap);
    }

    #[test]
    fn too_many_modules() {
        let b = Builder::new().mmap(&MAP).module(0x1000, 0x2000, "a").module(0x3000, 0x4000, "b").end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::TooManyModules);
    }

    #[test]
    fn too_many_regions() {
        let full: Vec<_> = (0..MAX_MEMORY_REGIONS as u64).map(|i| (i << 12, 0x1000, 1)).collect();
        let b = Builder::new().mmap(&full).end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap().regions().len(), MAX_MEMORY_REGIONS);
        let mut over = full.clone();
        over.push((1 << 40, 0x1000, 1));
        let b = Builder::new().mmap(&over).end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::TooManyRegions);
    }

    #[test]
    fn cmdline_too_long() {
        let b = Builder::new().cmdline(&[b'a'; MAX_CMDLINE]).mmap(&MAP).end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap().cmdline().len(), MAX_CMDLINE);
        let b = Builder::new().cmdline(&[b'a'; MAX_CMDLINE + 1]).mmap(&MAP).end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap_err(), BootInfoError::CmdlineTooLong);
    }

    #[test]
    fn invalid_rsdp_copies() {
        let with_new = |r: &[u8]| Builder::new().mmap(&MAP).tag(15, r).end();
        let malformed = |b: Vec<u8>| matches!(parse(&mem_with(b), MAGIC, MBI), Err(BootInfoError::Malformed(_)));

        let mut r = rsdp_v2(0x1000, 0x2000);
        r[8] = r[8].wrapping_add(1);
        assert!(malformed(with_new(&r)), "bad checksum");
        let mut r = rsdp_v2(0x1000, 0x2000);
        r[32] = r[32].wrapping_add(1);
        assert!(malformed(with_new(&r)), "bad extended checksum");
        let mut r = rsdp_v2(0x1000, 0x2000);
        r[0] = b'X';
        r[8] = r[8].wrapping_sub(b'X' - b'R');
        assert!(malformed(with_new(&r)), "bad signature");
        let r = rsdp_v2(0x1000, 0x2000);
        assert!(malformed(with_new(&r[..20])), "new tag with a v1-sized copy");
        let mut r = rsdp_v2(0x1000, 0x2000);
        r[20..24].copy_from_slice(&0x1000u32.to_le_bytes());
        r[32] = 0;
        r[32] = 0u8.wrapping_sub(checksum(&r));
        assert!(malformed(with_new(&r)), "length past the copy");

        let mut r = rsdp_v1(0x1000);
        r[16] ^= 1;
        let b = Builder::new().mmap(&MAP).tag(14, &r).end();
        assert!(malformed(b), "bad v1 checksum");
        let b = Builder::new().mmap(&MAP).tag(14, &rsdp_v1(0x1000)[..12]).end();
        assert!(malformed(b), "truncated v1 copy");

        // Tag 15 wins even when it comes first and tag 14 is broken.
        let mut broken = rsdp_v1(0x1000);
        broken[9] ^= 0xff;
        let b = Builder::new().tag(15, &rsdp_v2(0x1000, 0x2000)).mmap(&MAP).tag(14, &broken).end();
        assert_eq!(parse(&mem_with(b), MAGIC, MBI).unwrap().acpi, Some(AcpiRoot::Rsdt { revision: 2, phys: 0x2000 }));
    }

    /// xorshift64*: a small deterministic generator for the fuzz loops.
    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = Rng(0x6d62_3262_6f6f_7421);
        let template = grub_like();
        let mut parsed = 0;
        for round in 0..20_000 {
            let mut bytes = template.clone();
            if round % 4 == 0 {
                for b in bytes.iter_mut().skip(8) {
                    *b = rng.next() as u8;
                }
                // Keep a plausible total size half of the time, so the walk gets going.
                if rng.next().is_multiple_of(2) {
                    let n = (rng.next() as usize % bytes.len()) as u32;
                    bytes[0..4].copy_from_slice(&n.to_le_bytes());
                }
            } else {
                for _ in 0..1 + rng.next() % 6 {
                    let i = rng.next() as usize % bytes.len();
                    bytes[i] = rng.next() as u8;
                }
                // Sometimes make a tag size field hostile.
                if rng.next().is_multiple_of(4) {
                    let i = 8 * (1 + rng.next() as usize % (bytes.len() / 8 - 1)) + 4;
                    let v = [0u32, 7, 8, 9, 0xffff_fff8, u32::MAX][(rng.next() % 6) as usize];
                    bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            let n = bytes.len();
            bytes.truncate(n - rng.next() as usize % 12);
            if let Ok(info) = parse(&mem_with(bytes), MAGIC, MBI) {
                parsed += 1;
                assert!(info.regions().len() <= MAX_MEMORY_REGIONS);
                assert!(info.cmdline().len() <= MAX_CMDLINE);
            }
        }
        // The mutations must leave some structures intact enough to parse, or the loop tests
        // only the first checks.
        assert!(parsed > 100, "only {parsed} inputs parsed");
    }
}
