//! The one early boot-information structure every boot door fills.
//!
//! Each boot protocol (PVH, multiboot2, Limine) has a small parser that reads the loader's own
//! structures and fills a [`BootInfo`]. The rest of the kernel sees only this type. It is
//! heap-free (fixed-capacity arrays) so it can be filled before the kernel has an allocator, and
//! it copies everything it keeps (memory map, command line), so the loader's structures may be
//! overwritten once parsing is done. Only the initrd and the ACPI tables are referred to by
//! physical address.

/// The most memory-map entries kept; a firmware map longer than this is reported as an error.
pub const MAX_MEMORY_REGIONS: usize = 128;
/// The longest kernel command line kept; a longer one is reported as an error.
pub const MAX_CMDLINE: usize = 256;

/// Which boot door the kernel came in through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    Pvh,
    Multiboot2,
    Limine,
}

impl BootProtocol {
    pub const fn name(self) -> &'static str {
        match self {
            BootProtocol::Pvh => "pvh",
            BootProtocol::Multiboot2 => "multiboot2",
            BootProtocol::Limine => "limine",
        }
    }
}

/// OS-neutral type of a physical memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Free RAM the kernel may use.
    Usable,
    /// RAM holding ACPI tables; reclaimable once the tables have been read.
    AcpiReclaimable,
    /// ACPI non-volatile storage; never usable.
    AcpiNvs,
    /// Known-bad RAM.
    Defective,
    /// RAM the boot loader used (its own data, page tables, boot info); usable once boot info has
    /// been copied. Only Limine reports this kind.
    BootloaderReclaimable,
    /// The kernel image or modules as reported by the loader.
    KernelAndModules,
    /// Framebuffer memory.
    Framebuffer,
    /// Anything else: firmware, MMIO holes, unknown types.
    Reserved,
}

/// One physical memory region `[base, base + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub base: u64,
    pub len: u64,
    pub kind: MemoryKind,
}

impl MemoryRegion {
    pub const EMPTY: MemoryRegion = MemoryRegion { base: 0, len: 0, kind: MemoryKind::Reserved };

    /// One past the last byte, saturating at `u64::MAX`.
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }
}

/// A physical byte range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Where the ACPI tables start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiRoot {
    /// Physical address of the RSDP (PVH and Limine give this).
    Rsdp(u64),
    /// The root system description table itself: multiboot2 hands over a *copy* of the RSDP
    /// inside its information structure, so its parser validates that copy and records the table
    /// it points to. `revision` 0 means `phys` is an RSDT; 2 or more means an XSDT.
    Rsdt { revision: u8, phys: u64 },
}

/// A linear framebuffer, if the loader set one up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    pub phys_addr: u64,
    pub width: u32,
    pub height: u32,
    /// Bytes per row.
    pub pitch: u32,
    pub bpp: u8,
}

/// Why a boot door could not produce a [`BootInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// The loader's magic number or version is not the one this parser understands.
    BadMagic,
    /// Limine loaded the kernel with this base revision of its protocol; the kernel reads
    /// revisions 2 and 3 only.
    UnsupportedBaseRevision(u64),
    /// A structure is truncated, misaligned or has an impossible size.
    Malformed(&'static str),
    /// More memory-map entries than [`MAX_MEMORY_REGIONS`].
    TooManyRegions,
    /// The command line is longer than [`MAX_CMDLINE`].
    CmdlineTooLong,
    /// The loader gave no memory map.
    NoMemoryMap,
    /// More than one module was given where one initrd is expected.
    TooManyModules,
}

/// Everything the kernel needs from the boot loader, in one heap-free structure.
#[derive(Clone, Debug)]
pub struct BootInfo {
    pub protocol: BootProtocol,
    regions: [MemoryRegion; MAX_MEMORY_REGIONS],
    region_count: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// Physical range of the initrd, if the loader passed one.
    pub initrd: Option<PhysRange>,
    /// Where the ACPI tables start, if the loader said.
    pub acpi: Option<AcpiRoot>,
    pub framebuffer: Option<Framebuffer>,
    /// Added to a physical address to reach it through the mapping the loader left behind
    /// (0 for the identity map of the PVH/multiboot2 trampoline, Limine's HHDM offset otherwise).
    pub loader_phys_offset: u64,
    /// Physical address the kernel image was loaded at (Limine may relocate it).
    pub kernel_phys_base: u64,
}

impl BootInfo {
    /// An empty structure for `protocol`.
    pub const fn new(protocol: BootProtocol) -> BootInfo {
        BootInfo {
            protocol,
            regions: [MemoryRegion::EMPTY; MAX_MEMORY_REGIONS],
            region_count: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            initrd: None,
            acpi: None,
            framebuffer: None,
            loader_phys_offset: 0,
            kernel_phys_base: 0,
        }
    }

    /// Append a memory region. Zero-length regions are dropped.
    pub fn push_region(&mut self, region: MemoryRegion) -> Result<(), BootInfoError> {
        if region.len == 0 {
            return Ok(());
        }
        if self.region_count == MAX_MEMORY_REGIONS {
            return Err(BootInfoError::TooManyRegions);
        }
        self.regions[self.region_count] = region;
        self.region_count += 1;
        Ok(())
    }

    /// The memory map, in the order the loader gave it.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// Set the command line (bytes up to the first NUL, if any).
    pub fn set_cmdline(&mut self, bytes: &[u8]) -> Result<(), BootInfoError> {
        let bytes = match bytes.iter().position(|&b| b == 0) {
            Some(n) => &bytes[..n],
            None => bytes,
        };
        if bytes.len() > MAX_CMDLINE {
            return Err(BootInfoError::CmdlineTooLong);
        }
        self.cmdline[..bytes.len()].copy_from_slice(bytes);
        self.cmdline_len = bytes.len();
        Ok(())
    }

    /// The kernel command line as given (non-UTF-8 bytes make it empty).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// The value of `key=value` on the command line, if present.
    pub fn cmdline_value(&self, key: &str) -> Option<&str> {
        self.cmdline().split_ascii_whitespace().find_map(|word| {
            let (k, v) = word.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_bounded_and_empty_ones_dropped() {
        let mut b = BootInfo::new(BootProtocol::Pvh);
        b.push_region(MemoryRegion { base: 0, len: 0, kind: MemoryKind::Usable }).unwrap();
        assert!(b.regions().is_empty());
        for i in 0..MAX_MEMORY_REGIONS as u64 {
            b.push_region(MemoryRegion { base: i << 12, len: 4096, kind: MemoryKind::Usable }).unwrap();
        }
        assert_eq!(
            b.push_region(MemoryRegion { base: 1 << 40, len: 4096, kind: MemoryKind::Usable }),
            Err(BootInfoError::TooManyRegions)
        );
        assert_eq!(b.regions().len(), MAX_MEMORY_REGIONS);
    }

    #[test]
    fn cmdline_stops_at_nul_and_finds_values() {
        let mut b = BootInfo::new(BootProtocol::Multiboot2);
        b.set_cmdline(b"ozone.test=triple-fault quiet\0garbage").unwrap();
        assert_eq!(b.cmdline(), "ozone.test=triple-fault quiet");
        assert_eq!(b.cmdline_value("ozone.test"), Some("triple-fault"));
        assert_eq!(b.cmdline_value("quiet"), None);
        assert_eq!(b.cmdline_value("missing"), None);
        assert_eq!(b.set_cmdline(&[b'a'; MAX_CMDLINE + 1]), Err(BootInfoError::CmdlineTooLong));
    }
}
