//! PVH boot door: the Xen/QEMU `hvm_start_info` structure.
//!
//! QEMU's `-kernel` direct boot (and Xen) enter the kernel through the `XEN_ELFNOTE_PHYS32_ENTRY`
//! ELF note in 32-bit protected mode with `ebx` holding the physical address of an
//! `hvm_start_info` (Xen's `public/arch-x86/hvm/start_info.h`). All fields are little-endian:
//!
//! ```text
//! hvm_start_info            hvm_modlist_entry (32 B)   hvm_memmap_table_entry (24 B)
//!  0 u32 magic 0x336ec578    0 u64 paddr                0 u64 addr
//!  4 u32 version             8 u64 size                 8 u64 size
//!  8 u32 flags              16 u64 cmdline_paddr       16 u32 type (E820)
//! 12 u32 nr_modules         24 u64 reserved            20 u32 reserved
//! 16 u64 modlist_paddr
//! 24 u64 cmdline_paddr
//! 32 u64 rsdp_paddr
//! 40 u64 memmap_paddr       (version 1 and later)
//! 48 u32 memmap_entries     (version 1 and later)
//! 52 u32 reserved
//! ```
//!
//! Version 0 has no memory map, which this kernel cannot boot without ([`BootInfoError::NoMemoryMap`]).
//! At most one module is accepted: it is the initrd. Every field is read from byte slices through
//! [`PhysMemory`] with bounds-checked little-endian reads, so no input can make the parser panic.
//! The kernel image's own physical base is not part of the start info; it stays 0 here (the
//! image is loaded at its link address).

use super::info::{MAX_CMDLINE, MAX_MEMORY_REGIONS};
use super::{AcpiRoot, BootInfo, BootInfoError, BootProtocol, MemoryKind, MemoryRegion, PhysMemory, PhysRange};
use super::{le_u32, le_u64};

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;

/// Size of the version-1 `hvm_start_info`.
const START_INFO_SIZE: usize = 56;
/// Size of one `hvm_modlist_entry`.
const MODLIST_ENTRY_SIZE: usize = 32;
/// Size of one `hvm_memmap_table_entry`.
const MEMMAP_ENTRY_SIZE: usize = 24;

// `hvm_memmap_table_entry.type` values: the E820 / ACPI address-range types.
const TYPE_RAM: u32 = 1;
const TYPE_RESERVED: u32 = 2;
const TYPE_ACPI: u32 = 3;
const TYPE_NVS: u32 = 4;
const TYPE_UNUSABLE: u32 = 5;
const TYPE_DISABLED: u32 = 6;
const TYPE_PMEM: u32 = 7;

/// Parse the `hvm_start_info` at physical address `start_info_phys`.
///
/// Errors: wrong magic is [`BootInfoError::BadMagic`]; version 0 or a memory map with no
/// non-empty entry is [`BootInfoError::NoMemoryMap`]; more than one module is
/// [`BootInfoError::TooManyModules`]; more than [`MAX_MEMORY_REGIONS`] memory-map entries is
/// [`BootInfoError::TooManyRegions`]; a command line over [`MAX_CMDLINE`] bytes is
/// [`BootInfoError::CmdlineTooLong`]; unreadable or inconsistent structures are
/// [`BootInfoError::Malformed`].
pub fn parse(mem: &dyn PhysMemory, start_info_phys: u64) -> Result<BootInfo, BootInfoError> {
    let head = mem.bytes(start_info_phys, 8).ok_or(BootInfoError::Malformed("pvh: start info unreadable"))?;
    if le_u32(head, 0) != Some(MAGIC) {
        return Err(BootInfoError::BadMagic);
    }
    let version = le_u32(head, 4).ok_or(BootInfoError::Malformed("pvh: start info truncated"))?;
    if version == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let si =
        mem.bytes(start_info_phys, START_INFO_SIZE).ok_or(BootInfoError::Malformed("pvh: start info truncated"))?;
    let field32 = |off| le_u32(si, off).ok_or(BootInfoError::Malformed("pvh: start info truncated"));
    let field64 = |off| le_u64(si, off).ok_or(BootInfoError::Malformed("pvh: start info truncated"));
    let nr_modules = field32(12)?;
    let modlist_paddr = field64(16)?;
    let cmdline_paddr = field64(24)?;
    let rsdp_paddr = field64(32)?;
    let memmap_paddr = field64(40)?;
    let memmap_entries = field32(48)?;

    let mut info = BootInfo::new(BootProtocol::Pvh);
    info.loader_phys_offset = 0;

    if cmdline_paddr != 0 {
        info.set_cmdline(read_cstr(mem, cmdline_paddr)?)?;
    }

    info.initrd = match nr_modules {
        0 => None,
        1 => Some(read_module(mem, modlist_paddr)?),
        _ => return Err(BootInfoError::TooManyModules),
    };

    if rsdp_paddr != 0 {
        info.acpi = Some(AcpiRoot::Rsdp(rsdp_paddr));
    }

    if memmap_paddr == 0 || memmap_entries == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let count = usize::try_from(memmap_entries).map_err(|_| BootInfoError::TooManyRegions)?;
    if count > MAX_MEMORY_REGIONS {
        return Err(BootInfoError::TooManyRegions);
    }
    // `count` is at most MAX_MEMORY_REGIONS, so this cannot overflow.
    let table = mem
        .bytes(memmap_paddr, count * MEMMAP_ENTRY_SIZE)
        .ok_or(BootInfoError::Malformed("pvh: memory map unreadable"))?;
    for entry in table.chunks_exact(MEMMAP_ENTRY_SIZE) {
        let malformed = BootInfoError::Malformed("pvh: memory map entry truncated");
        let base = le_u64(entry, 0).ok_or(malformed)?;
        let len = le_u64(entry, 8).ok_or(malformed)?;
        let ty = le_u32(entry, 16).ok_or(malformed)?;
        info.push_region(MemoryRegion { base, len, kind: memory_kind(ty) })?;
    }
    if info.regions().is_empty() {
        // Every entry had length 0.
        return Err(BootInfoError::NoMemoryMap);
    }
    Ok(info)
}

/// Map a PVH (E820) memory type onto [`MemoryKind`].
pub fn memory_kind(ty: u32) -> MemoryKind {
    match ty {
        TYPE_RAM => MemoryKind::Usable,
        TYPE_ACPI => MemoryKind::AcpiReclaimable,
        TYPE_NVS => MemoryKind::AcpiNvs,
        TYPE_UNUSABLE => MemoryKind::Defective,
        // Disabled memory, persistent memory (not ordinary RAM) and unknown types are kept away
        // from the allocator.
        TYPE_RESERVED | TYPE_DISABLED | TYPE_PMEM => MemoryKind::Reserved,
        _ => MemoryKind::Reserved,
    }
}

/// The single module (the initrd) described by the `hvm_modlist_entry` at `modlist_paddr`.
fn read_module(mem: &dyn PhysMemory, modlist_paddr: u64) -> Result<PhysRange, BootInfoError> {
    let entry =
        mem.bytes(modlist_paddr, MODLIST_ENTRY_SIZE).ok_or(BootInfoError::Malformed("pvh: module list unreadable"))?;
    let malformed = BootInfoError::Malformed("pvh: module list entry truncated");
    let start = le_u64(entry, 0).ok_or(malformed)?;
    let size = le_u64(entry, 8).ok_or(malformed)?;
    let end = start.checked_add(size).ok_or(BootInfoError::Malformed("pvh: module wraps the address space"))?;
    Ok(PhysRange { start, end })
}

/// The NUL-terminated string at `phys`, as at most `MAX_CMDLINE + 1` bytes (including the NUL
/// when it fits). If that window is not all readable, the string may still end just before the
/// end of readable memory, so it is then probed byte by byte for its NUL.
fn read_cstr(mem: &dyn PhysMemory, phys: u64) -> Result<&[u8], BootInfoError> {
    const WINDOW: usize = MAX_CMDLINE + 1;
    if let Some(bytes) = mem.bytes(phys, WINDOW) {
        // `BootInfo::set_cmdline` stops at the NUL, or rejects the window if it has none.
        return Ok(bytes);
    }
    for len in 0..WINDOW {
        let unreadable = BootInfoError::Malformed("pvh: command line runs past readable memory");
        let addr = phys.checked_add(len as u64).ok_or(unreadable)?;
        match mem.bytes(addr, 1) {
            Some([0]) => return mem.bytes(phys, len + 1).ok_or(unreadable),
            Some(_) => {}
            None => return Err(unreadable),
        }
    }
    Err(BootInfoError::CmdlineTooLong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testing::{Rng, TestMem};

    const BASE: u64 = 0x1000;
    const START_INFO: u64 = BASE;
    const MODLIST: u64 = BASE + 0x100;
    const CMDLINE: u64 = BASE + 0x200;
    const MEMMAP: u64 = BASE + 0x400;

    fn put32(mem: &mut TestMem, phys: u64, v: u32) {
        let off = (phys - mem.base) as usize;
        mem.data[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put64(mem: &mut TestMem, phys: u64, v: u64) {
        let off = (phys - mem.base) as usize;
        mem.data[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn put_bytes(mem: &mut TestMem, phys: u64, bytes: &[u8]) {
        let off = (phys - mem.base) as usize;
        mem.data[off..off + bytes.len()].copy_from_slice(bytes);
    }

    fn write_memmap(mem: &mut TestMem, entries: &[(u64, u64, u32)]) {
        for (i, &(addr, size, ty)) in entries.iter().enumerate() {
            let at = MEMMAP + (i * MEMMAP_ENTRY_SIZE) as u64;
            put64(mem, at, addr);
            put64(mem, at + 8, size);
            put32(mem, at + 16, ty);
            put32(mem, at + 20, 0);
        }
        put64(mem, START_INFO + 40, MEMMAP);
        put32(mem, START_INFO + 48, entries.len() as u32);
    }

    /// What QEMU 7.2 hands a `-kernel` PVH guest with `-m 512 -initrd ... -append ...`.
    fn qemu_like() -> TestMem {
        let mut mem = TestMem { base: BASE, data: vec![0; 0x2000] };
        put32(&mut mem, START_INFO, MAGIC);
        put32(&mut mem, START_INFO + 4, 1);
        put32(&mut mem, START_INFO + 8, 0);
        put32(&mut mem, START_INFO + 12, 1);
        put64(&mut mem, START_INFO + 16, MODLIST);
        put64(&mut mem, START_INFO + 24, CMDLINE);
        put64(&mut mem, START_INFO + 32, 0xf_52a0);
        put64(&mut mem, MODLIST, 0x1fd0_0000);
        put64(&mut mem, MODLIST + 8, 0x2_3400);
        put_bytes(&mut mem, CMDLINE, b"console=ttyS0 ozone.test=ipc\0");
        write_memmap(
            &mut mem,
            &[
                (0, 0x9_fc00, TYPE_RAM),
                (0x9_fc00, 0x400, TYPE_RESERVED),
                (0xf_0000, 0x1_0000, TYPE_RESERVED),
                (0x10_0000, 0x1fee_0000, TYPE_RAM),
                (0x1ffe_0000, 0x2_0000, TYPE_RESERVED),
                (0xfeff_c000, 0x4000, TYPE_RESERVED),
                (0xfffc_0000, 0x4_0000, TYPE_RESERVED),
            ],
        );
        mem
    }

    #[test]
    fn parses_a_qemu_like_start_info() {
        let mem = qemu_like();
        let info = parse(&mem, START_INFO).unwrap();
        assert_eq!(info.protocol, BootProtocol::Pvh);
        assert_eq!(info.loader_phys_offset, 0);
        assert_eq!(info.cmdline(), "console=ttyS0 ozone.test=ipc");
        assert_eq!(info.cmdline_value("ozone.test"), Some("ipc"));
        assert_eq!(info.initrd, Some(PhysRange { start: 0x1fd0_0000, end: 0x1fd2_3400 }));
        assert_eq!(info.acpi, Some(AcpiRoot::Rsdp(0xf_52a0)));
        assert_eq!(info.framebuffer, None);
        let regions = info.regions();
        assert_eq!(regions.len(), 7);
        assert_eq!(regions[0], MemoryRegion { base: 0, len: 0x9_fc00, kind: MemoryKind::Usable });
        assert_eq!(regions[1].kind, MemoryKind::Reserved);
        assert_eq!(regions[3], MemoryRegion { base: 0x10_0000, len: 0x1fee_0000, kind: MemoryKind::Usable });
        assert_eq!(regions[6].end(), 0x1_0000_0000);
    }

    #[test]
    fn no_module_no_cmdline_no_rsdp() {
        let mut mem = qemu_like();
        put32(&mut mem, START_INFO + 12, 0);
        put64(&mut mem, START_INFO + 24, 0);
        put64(&mut mem, START_INFO + 32, 0);
        let info = parse(&mem, START_INFO).unwrap();
        assert_eq!(info.initrd, None);
        assert_eq!(info.cmdline(), "");
        assert_eq!(info.acpi, None);
    }

    #[test]
    fn every_memory_type_is_mapped() {
        assert_eq!(memory_kind(TYPE_RAM), MemoryKind::Usable);
        assert_eq!(memory_kind(TYPE_RESERVED), MemoryKind::Reserved);
        assert_eq!(memory_kind(TYPE_ACPI), MemoryKind::AcpiReclaimable);
        assert_eq!(memory_kind(TYPE_NVS), MemoryKind::AcpiNvs);
        assert_eq!(memory_kind(TYPE_UNUSABLE), MemoryKind::Defective);
        assert_eq!(memory_kind(TYPE_DISABLED), MemoryKind::Reserved);
        assert_eq!(memory_kind(TYPE_PMEM), MemoryKind::Reserved);
        assert_eq!(memory_kind(0), MemoryKind::Reserved);
        assert_eq!(memory_kind(0xdead_beef), MemoryKind::Reserved);

        let mut mem = qemu_like();
        write_memmap(&mut mem, &[(0, 0x1000, 3), (0x1000, 0x1000, 4), (0x2000, 0x1000, 5), (0x3000, 0, 1)]);
        let info = parse(&mem, START_INFO).unwrap();
        let kinds: Vec<_> = info.regions().iter().map(|r| r.kind).collect();
        // The zero-length entry is dropped.
        assert_eq!(kinds, [MemoryKind::AcpiReclaimable, MemoryKind::AcpiNvs, MemoryKind::Defective]);
    }

    #[test]
    fn bad_magic_and_unreadable_start_info() {
        let mut mem = qemu_like();
        put32(&mut mem, START_INFO, 0x336e_c579);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::BadMagic);
        let mem = qemu_like();
        assert!(matches!(parse(&mem, 0).unwrap_err(), BootInfoError::Malformed(_)));
        assert!(matches!(parse(&mem, u64::MAX - 3).unwrap_err(), BootInfoError::Malformed(_)));
        // Magic readable, rest of the structure past the end of memory.
        let end = BASE + mem.data.len() as u64;
        let mut short = TestMem { base: end - 16, data: vec![0; 16] };
        put32(&mut short, end - 16, MAGIC);
        put32(&mut short, end - 12, 1);
        assert!(matches!(parse(&short, end - 16).unwrap_err(), BootInfoError::Malformed(_)));
    }

    #[test]
    fn version_0_has_no_memory_map() {
        let mut mem = qemu_like();
        put32(&mut mem, START_INFO + 4, 0);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::NoMemoryMap);
        let mut mem = qemu_like();
        put32(&mut mem, START_INFO + 48, 0);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::NoMemoryMap);
        let mut mem = qemu_like();
        put64(&mut mem, START_INFO + 40, 0);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::NoMemoryMap);
        let mut mem = qemu_like();
        write_memmap(&mut mem, &[(0, 0, TYPE_RAM), (0x1000, 0, TYPE_RAM)]);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::NoMemoryMap);
    }

    #[test]
    fn module_errors() {
        let mut mem = qemu_like();
        put32(&mut mem, START_INFO + 12, 2);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::TooManyModules);
        put32(&mut mem, START_INFO + 12, u32::MAX);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::TooManyModules);

        let mut mem = qemu_like();
        put64(&mut mem, START_INFO + 16, 0x10_0000);
        assert!(matches!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::Malformed(_)));

        let mut mem = qemu_like();
        put64(&mut mem, MODLIST, u64::MAX - 10);
        assert!(matches!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::Malformed(_)));
    }

    #[test]
    fn memory_map_errors() {
        let mut mem = TestMem { base: BASE, data: vec![0; 0x1_0000] };
        put32(&mut mem, START_INFO, MAGIC);
        put32(&mut mem, START_INFO + 4, 1);
        let full: Vec<_> = (0..MAX_MEMORY_REGIONS as u64).map(|i| (i << 12, 0x1000, TYPE_RAM)).collect();
        write_memmap(&mut mem, &full);
        assert_eq!(parse(&mem, START_INFO).unwrap().regions().len(), MAX_MEMORY_REGIONS);

        let mut over = full.clone();
        over.push((1 << 40, 0x1000, TYPE_RAM));
        write_memmap(&mut mem, &over);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::TooManyRegions);
        put32(&mut mem, START_INFO + 48, u32::MAX);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::TooManyRegions);

        // The table runs past the end of readable memory.
        write_memmap(&mut mem, &full[..2]);
        let end = BASE + mem.data.len() as u64;
        put64(&mut mem, START_INFO + 40, end - 30);
        assert!(matches!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::Malformed(_)));
    }

    #[test]
    fn cmdline_limits() {
        let mut mem = qemu_like();
        let mut long = vec![b'x'; MAX_CMDLINE];
        long.push(0);
        put_bytes(&mut mem, CMDLINE, &long);
        assert_eq!(parse(&mem, START_INFO).unwrap().cmdline().len(), MAX_CMDLINE);

        long[MAX_CMDLINE] = b'x';
        long.push(0);
        put_bytes(&mut mem, CMDLINE, &long);
        assert_eq!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::CmdlineTooLong);

        // Unreadable command line.
        put64(&mut mem, START_INFO + 24, 0x10_0000);
        assert!(matches!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::Malformed(_)));
    }

    #[test]
    fn cmdline_ending_near_the_end_of_memory() {
        let mut mem = qemu_like();
        let end = BASE + mem.data.len() as u64;
        // "quiet\0" in the last six readable bytes: the 257-byte window is not readable.
        put_bytes(&mut mem, end - 6, b"quiet\0");
        put64(&mut mem, START_INFO + 24, end - 6);
        assert_eq!(parse(&mem, START_INFO).unwrap().cmdline(), "quiet");
        // Only the empty string fits.
        put_bytes(&mut mem, end - 1, b"\0");
        put64(&mut mem, START_INFO + 24, end - 1);
        assert_eq!(parse(&mem, START_INFO).unwrap().cmdline(), "");
        // No NUL before the end of memory.
        put_bytes(&mut mem, end - 6, b"quiet!");
        put64(&mut mem, START_INFO + 24, end - 6);
        assert!(matches!(parse(&mem, START_INFO).unwrap_err(), BootInfoError::Malformed(_)));
    }

    /// xorshift64*: a small deterministic generator for the fuzz loops.
    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = Rng(0x0ddc_0ffe_e123_4567);
        let template = qemu_like();
        let mut parsed = 0;
        for round in 0..20_000 {
            let mut mem = TestMem { base: BASE, data: template.data.clone() };
            if round % 4 == 0 {
                // Pure noise, but with a valid magic so the parser goes past the first check.
                for b in mem.data.iter_mut() {
                    *b = rng.next() as u8;
                }
                put32(&mut mem, START_INFO, MAGIC);
            } else {
                // A handful of byte flips, biased towards the header, module and map fields.
                for _ in 0..1 + rng.next() % 8 {
                    let span = if rng.next().is_multiple_of(2) { 64 } else { mem.data.len() };
                    let i = (rng.next() as usize) % span;
                    mem.data[i] = rng.next() as u8;
                }
                // Sometimes point fields at the edges of memory.
                if rng.next().is_multiple_of(4) {
                    let field = [16u64, 24, 32, 40][(rng.next() % 4) as usize];
                    let end = BASE + mem.data.len() as u64;
                    put64(&mut mem, START_INFO + field, end - rng.next() % 64);
                }
            }
            let len = mem.data.len();
            mem.data.truncate(len - (rng.next() as usize % 16));
            if let Ok(info) = parse(&mem, START_INFO) {
                parsed += 1;
                assert!(info.regions().len() <= MAX_MEMORY_REGIONS);
                assert!(info.cmdline().len() <= MAX_CMDLINE);
            }
        }
        // The mutations must leave some start infos intact enough to parse, or the loop tests
        // only the first checks.
        assert!(parsed > 100, "only {parsed} inputs parsed");
    }
}
