//! Limine boot door: the Limine boot protocol, base revisions 3 and 2, through the `limine`
//! crate (0.5).
//!
//! Unlike PVH and multiboot2, Limine does not hand the kernel one structure: the kernel ELF
//! carries *request* statics (`requests`, in the `.requests` section between the
//! `.requests_start_marker` and `.requests_end_marker` sections, which the linker script keeps),
//! and the loader fills in a *response* pointer in each before jumping to the ELF entry point in
//! 64-bit mode with its own page tables, which include the higher-half direct map (HHDM) of
//! physical memory at a fixed offset.
//!
//! The work is split in four steps so that everything but the first runs in host tests:
//!
//! 1. `from_requests` (bare metal only) reads the base revision tag into a [`RevisionTag`] and
//!    collects the responses into [`LimineResponses`];
//! 2. [`RevisionTag::effective`] says which base revision the loader used;
//! 3. [`LimineBoot::from_responses`] copies what the responses say into plain values;
//! 4. [`parse`] turns those values into a [`BootInfo`].
//!
//! # Base revisions
//!
//! The kernel asks for base revision 3 ([`BASE_REVISION`]). A loader that offers it (Limine 8.3
//! and later) sets the tag's requested revision to 0 and, from Limine 8.3.2 on, its loaded
//! revision to 3. A loader that predates revision 3 leaves both untouched and loads the kernel
//! with a revision of its own choosing: Limine up to 8.2 chooses revision 2, its highest, and so
//! do we when the tag says nothing. What differs between 2 and 3 for this kernel:
//!
//! * the RSDP address is physical under revision 3 and an HHDM virtual address under 2 (the
//!   SMBIOS and EFI system table addresses change the same way; the kernel asks for neither);
//! * the HHDM of revision 3 maps only usable, bootloader-reclaimable, executable-and-modules and
//!   framebuffer memory; that of revision 2 also maps the first 4 GiB whole and every other
//!   region but reserved and bad memory. Until it has its own page tables, the kernel reaches
//!   through the HHDM (`loader_phys_offset`) only its frame pool, which is usable memory, so
//!   either is enough; the ACPI tables are read through the kernel's own direct map;
//! * under revision 3 the memory map may call the page at 0 usable; the kernel never uses low
//!   memory.
//!
//! In both, memory-map bases and the executable's physical base are physical; module and
//! framebuffer addresses are HHDM virtual addresses, converted to physical by subtracting the
//! HHDM offset. Any other revision the loader reports is [`BootInfoError::UnsupportedBaseRevision`].
//! The command line comes from the executable-command-line response (Limine 9.0 and later), or,
//! for loaders that do not answer that request, from the executable-file response's string.

use limine::memory_map::{Entry, EntryType};
use limine::response::{
    ExecutableAddressResponse, ExecutableCmdlineResponse, ExecutableFileResponse, FramebufferResponse, HhdmResponse,
    MemoryMapResponse, ModuleResponse, RsdpResponse,
};

use super::info::Framebuffer;
use super::{AcpiRoot, BootInfo, BootInfoError, BootProtocol, MemoryKind, MemoryRegion, PhysRange};

/// The Limine base revision the kernel asks for.
pub const BASE_REVISION: u64 = 3;

/// The oldest base revision the kernel reads: what loaders before revision 3 use.
pub const OLDEST_BASE_REVISION: u64 = 2;

/// The request statics the kernel ELF carries for the loader to answer.
#[cfg(target_os = "none")]
pub mod requests {
    use limine::BaseRevision;
    use limine::request::{
        ExecutableAddressRequest, ExecutableCmdlineRequest, ExecutableFileRequest, FramebufferRequest, HhdmRequest,
        MemoryMapRequest, ModuleRequest, RequestsEndMarker, RequestsStartMarker, RsdpRequest,
    };

    #[used]
    #[unsafe(link_section = ".requests_start_marker")]
    pub static START_MARKER: RequestsStartMarker = RequestsStartMarker::new();

    #[used]
    #[unsafe(link_section = ".requests")]
    pub static BASE_REVISION: BaseRevision = BaseRevision::with_revision(super::BASE_REVISION);

    #[used]
    #[unsafe(link_section = ".requests")]
    pub static MEMORY_MAP: MemoryMapRequest = MemoryMapRequest::new();

    #[used]
    #[unsafe(link_section = ".requests")]
    pub static HHDM: HhdmRequest = HhdmRequest::new();

    #[used]
    #[unsafe(link_section = ".requests")]
    pub static MODULES: ModuleRequest = ModuleRequest::new();

    #[used]
    #[unsafe(link_section = ".requests")]
    pub static RSDP: RsdpRequest = RsdpRequest::new();

    /// The kernel's physical (and virtual) base: Limine may load it anywhere in physical memory.
    #[used]
    #[unsafe(link_section = ".requests")]
    pub static EXECUTABLE_ADDRESS: ExecutableAddressRequest = ExecutableAddressRequest::new();

    /// The kernel command line (newer loaders).
    #[used]
    #[unsafe(link_section = ".requests")]
    pub static EXECUTABLE_CMDLINE: ExecutableCmdlineRequest = ExecutableCmdlineRequest::new();

    /// The kernel file, whose string is the command line on loaders without the request above.
    #[used]
    #[unsafe(link_section = ".requests")]
    pub static EXECUTABLE_FILE: ExecutableFileRequest = ExecutableFileRequest::new();

    #[used]
    #[unsafe(link_section = ".requests")]
    pub static FRAMEBUFFER: FramebufferRequest = FramebufferRequest::new();

    #[used]
    #[unsafe(link_section = ".requests_end_marker")]
    pub static END_MARKER: RequestsEndMarker = RequestsEndMarker::new();
}

/// Read the base revision tag and the loader's responses to [`requests`], and build the
/// [`BootInfo`].
///
/// Logs the base revision in use; the errors are those of [`parse`] (a revision other than 2 or
/// 3 is [`BootInfoError::UnsupportedBaseRevision`], and is also logged in words).
#[cfg(target_os = "none")]
pub fn from_requests() -> Result<BootInfo, BootInfoError> {
    use requests as r;
    let tag = RevisionTag { accepted: r::BASE_REVISION.is_supported(), loaded: r::BASE_REVISION.loaded_revision() };
    let revision = tag.effective();
    match revision {
        BASE_REVISION => crate::info!("limine: base revision {revision}"),
        OLDEST_BASE_REVISION => crate::info!(
            "limine: base revision {revision} (the loader does not offer {BASE_REVISION}{})",
            if tag.loaded.is_none() { " and, predating it, does not report the revision it used" } else { "" }
        ),
        _ => crate::error!(
            "Limine loaded the kernel with base revision {revision}; OZONE-OS needs base revision \
             {OLDEST_BASE_REVISION} or {BASE_REVISION}"
        ),
    }
    let responses = LimineResponses {
        memory_map: r::MEMORY_MAP.get_response(),
        hhdm: r::HHDM.get_response(),
        modules: r::MODULES.get_response(),
        rsdp: r::RSDP.get_response(),
        executable_address: r::EXECUTABLE_ADDRESS.get_response(),
        executable_cmdline: r::EXECUTABLE_CMDLINE.get_response(),
        executable_file: r::EXECUTABLE_FILE.get_response(),
        framebuffer: r::FRAMEBUFFER.get_response(),
    };
    parse(&LimineBoot::from_responses(&responses, revision))
}

/// What the base revision tag says once the loader has seen it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevisionTag {
    /// The loader set the requested revision to 0: it loaded the kernel with [`BASE_REVISION`].
    pub accepted: bool,
    /// The revision the loader says it loaded the kernel with. Limine fills this in from 8.3.2
    /// on; loaders that predate base revision 3 never do.
    pub loaded: Option<u64>,
}

impl RevisionTag {
    /// The base revision the loader used: the one it reports; else [`BASE_REVISION`] if it
    /// accepted that; else [`OLDEST_BASE_REVISION`], which is what loaders that predate revision 3
    /// (and so report nothing) use when asked for a revision they do not offer.
    pub fn effective(self) -> u64 {
        match (self.loaded, self.accepted) {
            (Some(loaded), _) => loaded,
            (None, true) => BASE_REVISION,
            (None, false) => OLDEST_BASE_REVISION,
        }
    }
}

/// The responses the loader gave (`None` where it did not answer a request).
#[derive(Clone, Copy, Default)]
pub struct LimineResponses<'a> {
    pub memory_map: Option<&'a MemoryMapResponse>,
    pub hhdm: Option<&'a HhdmResponse>,
    pub modules: Option<&'a ModuleResponse>,
    pub rsdp: Option<&'a RsdpResponse>,
    pub executable_address: Option<&'a ExecutableAddressResponse>,
    pub executable_cmdline: Option<&'a ExecutableCmdlineResponse>,
    pub executable_file: Option<&'a ExecutableFileResponse>,
    pub framebuffer: Option<&'a FramebufferResponse>,
}

/// One Limine module, as the loader describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimineModule {
    /// HHDM virtual address of the first byte.
    pub addr: u64,
    pub size: u64,
}

/// The framebuffer, as the loader describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimineFramebuffer {
    /// HHDM virtual address of the first pixel.
    pub addr: u64,
    pub width: u64,
    pub height: u64,
    /// Bytes per row.
    pub pitch: u64,
    /// Bits per pixel.
    pub bpp: u16,
}

/// What the Limine responses said, as plain values: the host-testable input of [`parse`].
#[derive(Clone, Copy)]
pub struct LimineBoot<'a> {
    /// The base revision the loader used ([`RevisionTag::effective`]).
    pub base_revision: u64,
    /// The HHDM offset (required).
    pub hhdm_offset: Option<u64>,
    /// The memory map (required), in the crate's protocol layout.
    pub memory_map: Option<&'a [&'a Entry]>,
    /// Physical base of the kernel image (required).
    pub kernel_phys_base: Option<u64>,
    /// How many modules the loader passed.
    pub module_count: usize,
    /// The first module, if any.
    pub first_module: Option<LimineModule>,
    /// Address of the RSDP as the loader gave it: physical under base revision 3, HHDM virtual
    /// under 2 (0 or `None`: no ACPI).
    pub rsdp: Option<u64>,
    /// The kernel command line, without its NUL.
    pub cmdline: Option<&'a [u8]>,
    /// The first framebuffer, if any.
    pub framebuffer: Option<LimineFramebuffer>,
}

impl<'a> LimineBoot<'a> {
    /// Copy what the responses say, for a loader that used base revision `base_revision`. This
    /// only reads the responses; all checks and address conversions are in [`parse`].
    ///
    /// The crate's accessors follow the pointers inside the responses (entry and module arrays,
    /// strings, framebuffers); they are valid because the loader wrote them, which is the only
    /// safe way to obtain a response reference. These pointers are HHDM virtual addresses under
    /// every base revision.
    pub fn from_responses(r: &LimineResponses<'a>, base_revision: u64) -> LimineBoot<'a> {
        let modules = r.modules.map(|m| m.modules()).unwrap_or(&[]);
        let cmdline = match (r.executable_cmdline, r.executable_file) {
            (Some(c), _) => Some(c.cmdline().to_bytes()),
            (None, Some(f)) => Some(f.file().string().to_bytes()),
            (None, None) => None,
        };
        let framebuffer = r.framebuffer.and_then(|f| f.framebuffers().next()).map(|fb| LimineFramebuffer {
            addr: fb.addr().addr() as u64,
            width: fb.width(),
            height: fb.height(),
            pitch: fb.pitch(),
            bpp: fb.bpp(),
        });
        LimineBoot {
            base_revision,
            hhdm_offset: r.hhdm.map(|h| h.offset()),
            memory_map: r.memory_map.map(|m| m.entries()),
            kernel_phys_base: r.executable_address.map(|a| a.physical_base()),
            module_count: modules.len(),
            first_module: modules.first().map(|f| LimineModule { addr: f.addr().addr() as u64, size: f.size() }),
            rsdp: r.rsdp.map(|a| a.address() as u64),
            cmdline,
            framebuffer,
        }
    }
}

/// Build the [`BootInfo`] from what the Limine responses said.
///
/// Errors: a base revision other than 2 or 3 is [`BootInfoError::UnsupportedBaseRevision`]; no
/// HHDM or no executable-address response is [`BootInfoError::Malformed`]; no memory map (or one
/// with no non-empty entry) is [`BootInfoError::NoMemoryMap`]; more than one module is
/// [`BootInfoError::TooManyModules`]; too many regions or too long a command line are
/// [`BootInfoError::TooManyRegions`] and [`BootInfoError::CmdlineTooLong`]; a module,
/// framebuffer or (under revision 2) RSDP outside the HHDM, or impossible sizes, are
/// [`BootInfoError::Malformed`].
pub fn parse(input: &LimineBoot<'_>) -> Result<BootInfo, BootInfoError> {
    let revision = input.base_revision;
    if revision != BASE_REVISION && revision != OLDEST_BASE_REVISION {
        return Err(BootInfoError::UnsupportedBaseRevision(revision));
    }
    let hhdm = input.hhdm_offset.ok_or(BootInfoError::Malformed("limine: no HHDM response"))?;
    let map = input.memory_map.ok_or(BootInfoError::NoMemoryMap)?;
    let kernel_phys_base =
        input.kernel_phys_base.ok_or(BootInfoError::Malformed("limine: no executable address response"))?;

    let mut info = BootInfo::new(BootProtocol::Limine);
    info.loader_phys_offset = hhdm;
    info.kernel_phys_base = kernel_phys_base;

    for entry in map {
        info.push_region(MemoryRegion { base: entry.base, len: entry.length, kind: memory_kind(entry.entry_type) })?;
    }
    if info.regions().is_empty() {
        return Err(BootInfoError::NoMemoryMap);
    }

    if let Some(cmdline) = input.cmdline {
        info.set_cmdline(cmdline)?;
    }

    info.initrd = match (input.module_count, input.first_module) {
        (0, _) => None,
        (1, Some(module)) => {
            let start = hhdm_to_phys(module.addr, hhdm, "limine: module outside the HHDM")?;
            let end = start.checked_add(module.size).ok_or(BootInfoError::Malformed("limine: module wraps"))?;
            Some(PhysRange { start, end })
        }
        (1, None) => return Err(BootInfoError::Malformed("limine: module missing")),
        _ => return Err(BootInfoError::TooManyModules),
    };

    info.acpi = match input.rsdp {
        Some(0) | None => None,
        Some(phys) if revision == BASE_REVISION => Some(AcpiRoot::Rsdp(phys)),
        Some(virt) => Some(AcpiRoot::Rsdp(hhdm_to_phys(virt, hhdm, "limine: RSDP outside the HHDM")?)),
    };

    if let Some(fb) = input.framebuffer {
        let bad = BootInfoError::Malformed("limine: framebuffer geometry out of range");
        info.framebuffer = Some(Framebuffer {
            phys_addr: hhdm_to_phys(fb.addr, hhdm, "limine: framebuffer outside the HHDM")?,
            width: u32::try_from(fb.width).map_err(|_| bad)?,
            height: u32::try_from(fb.height).map_err(|_| bad)?,
            pitch: u32::try_from(fb.pitch).map_err(|_| bad)?,
            bpp: u8::try_from(fb.bpp).map_err(|_| bad)?,
        });
    }
    Ok(info)
}

/// Map a Limine memory-map entry type onto [`MemoryKind`].
pub fn memory_kind(ty: EntryType) -> MemoryKind {
    match ty {
        EntryType::USABLE => MemoryKind::Usable,
        EntryType::ACPI_RECLAIMABLE => MemoryKind::AcpiReclaimable,
        EntryType::ACPI_NVS => MemoryKind::AcpiNvs,
        EntryType::BAD_MEMORY => MemoryKind::Defective,
        EntryType::BOOTLOADER_RECLAIMABLE => MemoryKind::BootloaderReclaimable,
        EntryType::EXECUTABLE_AND_MODULES => MemoryKind::KernelAndModules,
        EntryType::FRAMEBUFFER => MemoryKind::Framebuffer,
        // RESERVED and types newer than this kernel.
        _ => MemoryKind::Reserved,
    }
}

/// The physical address behind HHDM virtual address `virt`.
fn hhdm_to_phys(virt: u64, hhdm: u64, what: &'static str) -> Result<u64, BootInfoError> {
    virt.checked_sub(hhdm).ok_or(BootInfoError::Malformed(what))
}

#[cfg(test)]
mod tests {
    use core::ffi::c_char;
    use core::mem::{align_of, size_of};

    use limine::file::File;
    use limine::framebuffer::VideoMode;

    use super::*;
    use crate::boot::info::{MAX_CMDLINE, MAX_MEMORY_REGIONS};
    use crate::boot::testing::Rng;

    const HHDM: u64 = 0xffff_8000_0000_0000;
    const KERNEL_PHYS: u64 = 0x7fd0_0000;

    fn entry(base: u64, length: u64, entry_type: EntryType) -> Entry {
        Entry { base, length, entry_type }
    }

    /// What Limine 8 reports for a 2 GiB QEMU machine under SeaBIOS.
    fn qemu_map() -> Vec<Entry> {
        vec![
            entry(0x1000, 0x9_e000, EntryType::USABLE),
            entry(0x9_fc00, 0x400, EntryType::RESERVED),
            entry(0xf_0000, 0x1_0000, EntryType::RESERVED),
            entry(0x10_0000, 0x7fb0_0000, EntryType::USABLE),
            entry(0x7fc0_0000, 0x10_0000, EntryType::BOOTLOADER_RECLAIMABLE),
            entry(KERNEL_PHYS, 0x20_0000, EntryType::EXECUTABLE_AND_MODULES),
            entry(0x7ffe_0000, 0x1_0000, EntryType::ACPI_RECLAIMABLE),
            entry(0x7fff_0000, 0x1_0000, EntryType::ACPI_NVS),
            entry(0xfd00_0000, 0x30_0000, EntryType::FRAMEBUFFER),
            entry(0xfffc_0000, 0x4_0000, EntryType::RESERVED),
        ]
    }

    const RSDP: u64 = 0xf_52a0;

    /// What a loader using base revision 3 reports: the RSDP address is physical.
    fn boot<'a>(map: &'a [&'a Entry]) -> LimineBoot<'a> {
        LimineBoot {
            base_revision: 3,
            hhdm_offset: Some(HHDM),
            memory_map: Some(map),
            kernel_phys_base: Some(KERNEL_PHYS),
            module_count: 1,
            first_module: Some(LimineModule { addr: HHDM + 0x7fe0_0000, size: 0x1_2345 }),
            rsdp: Some(RSDP),
            cmdline: Some(b"ozone.test=limine"),
            framebuffer: Some(LimineFramebuffer {
                addr: HHDM + 0xfd00_0000,
                width: 1280,
                height: 800,
                pitch: 5120,
                bpp: 32,
            }),
        }
    }

    #[test]
    fn parses_plain_values() {
        let map = qemu_map();
        let refs: Vec<&Entry> = map.iter().collect();
        let info = parse(&boot(&refs)).unwrap();
        assert_eq!(info.protocol, BootProtocol::Limine);
        assert_eq!(info.loader_phys_offset, HHDM);
        assert_eq!(info.kernel_phys_base, KERNEL_PHYS);
        assert_eq!(info.cmdline(), "ozone.test=limine");
        // The module address is converted from the HHDM to physical.
        assert_eq!(info.initrd, Some(PhysRange { start: 0x7fe0_0000, end: 0x7fe1_2345 }));
        assert_eq!(info.acpi, Some(AcpiRoot::Rsdp(RSDP)));
        assert_eq!(
            info.framebuffer,
            Some(Framebuffer { phys_addr: 0xfd00_0000, width: 1280, height: 800, pitch: 5120, bpp: 32 })
        );
        assert_eq!(info.regions().len(), map.len());
        assert_eq!(info.regions()[3], MemoryRegion { base: 0x10_0000, len: 0x7fb0_0000, kind: MemoryKind::Usable });
        assert_eq!(info.regions()[4].kind, MemoryKind::BootloaderReclaimable);
        assert_eq!(info.regions()[5].kind, MemoryKind::KernelAndModules);
    }

    #[test]
    fn optional_parts_may_be_missing() {
        let map = qemu_map();
        let refs: Vec<&Entry> = map.iter().collect();
        let input = LimineBoot {
            module_count: 0,
            first_module: None,
            rsdp: Some(0),
            cmdline: None,
            framebuffer: None,
            ..boot(&refs)
        };
        let info = parse(&input).unwrap();
        assert_eq!(info.initrd, None);
        assert_eq!(info.acpi, None);
        assert_eq!(info.cmdline(), "");
        assert_eq!(info.framebuffer, None);
        assert_eq!(parse(&LimineBoot { rsdp: None, ..input }).unwrap().acpi, None);
        // A null RSDP is no RSDP under base revision 2 as well.
        let revision_2 = LimineBoot { base_revision: 2, ..input };
        assert_eq!(parse(&revision_2).unwrap().acpi, None);
        assert_eq!(parse(&LimineBoot { rsdp: None, ..revision_2 }).unwrap().acpi, None);
    }

    #[test]
    fn revision_tag() {
        let tag = |accepted, loaded| RevisionTag { accepted, loaded }.effective();
        // Limine 8.3.2 and later: accepted, and the loaded revision reported.
        assert_eq!(tag(true, Some(3)), 3);
        // Accepted without the loaded revision (Limine made reporting it mandatory in 8.3.2).
        assert_eq!(tag(true, None), 3);
        // Limine 8.2 and older: not accepted, nothing reported; they load with revision 2.
        assert_eq!(tag(false, None), 2);
        // A reported revision is the one used, whatever else the tag says.
        assert_eq!(tag(false, Some(2)), 2);
        assert_eq!(tag(false, Some(1)), 1);
        assert_eq!(tag(true, Some(4)), 4);
    }

    #[test]
    fn revision_2_gives_the_rsdp_in_the_hhdm() {
        let map = qemu_map();
        let refs: Vec<&Entry> = map.iter().collect();
        let revision_3 = parse(&boot(&refs)).unwrap();
        let input = LimineBoot { base_revision: 2, rsdp: Some(HHDM + RSDP), ..boot(&refs) };
        let info = parse(&input).unwrap();
        assert_eq!(info.acpi, Some(AcpiRoot::Rsdp(RSDP)));
        // Everything else reads the same as under revision 3.
        assert_eq!(info.loader_phys_offset, revision_3.loader_phys_offset);
        assert_eq!(info.kernel_phys_base, revision_3.kernel_phys_base);
        assert_eq!(info.initrd, revision_3.initrd);
        assert_eq!(info.framebuffer, revision_3.framebuffer);
        assert_eq!(info.regions(), revision_3.regions());
        assert_eq!(info.cmdline(), revision_3.cmdline());
        // A physical RSDP address under revision 2 is below the HHDM: not one the loader gives.
        let physical = LimineBoot { rsdp: Some(RSDP), ..input };
        assert_eq!(parse(&physical).unwrap_err(), BootInfoError::Malformed("limine: RSDP outside the HHDM"));
        // Under revision 3 the address is taken as it is.
        let high = LimineBoot { base_revision: 3, rsdp: Some(HHDM + RSDP), ..input };
        assert_eq!(parse(&high).unwrap().acpi, Some(AcpiRoot::Rsdp(HHDM + RSDP)));
    }

    #[test]
    fn revision_3_may_report_page_zero_usable() {
        let mut map = qemu_map();
        map[0] = entry(0, 0x9_f000, EntryType::USABLE);
        let refs: Vec<&Entry> = map.iter().collect();
        let info = parse(&boot(&refs)).unwrap();
        assert_eq!(info.regions()[0], MemoryRegion { base: 0, len: 0x9_f000, kind: MemoryKind::Usable });
    }

    #[test]
    fn other_revisions_are_refused() {
        let map = qemu_map();
        let refs: Vec<&Entry> = map.iter().collect();
        for revision in [0, 1, 4, 5, u64::MAX] {
            let input = LimineBoot { base_revision: revision, ..boot(&refs) };
            assert_eq!(parse(&input).unwrap_err(), BootInfoError::UnsupportedBaseRevision(revision));
        }
        // The revision is checked before anything else.
        let empty = LimineBoot { base_revision: 1, hhdm_offset: None, memory_map: None, ..boot(&refs) };
        assert_eq!(parse(&empty).unwrap_err(), BootInfoError::UnsupportedBaseRevision(1));
    }

    #[test]
    fn every_memory_type_is_mapped() {
        assert_eq!(memory_kind(EntryType::USABLE), MemoryKind::Usable);
        assert_eq!(memory_kind(EntryType::RESERVED), MemoryKind::Reserved);
        assert_eq!(memory_kind(EntryType::ACPI_RECLAIMABLE), MemoryKind::AcpiReclaimable);
        assert_eq!(memory_kind(EntryType::ACPI_NVS), MemoryKind::AcpiNvs);
        assert_eq!(memory_kind(EntryType::BAD_MEMORY), MemoryKind::Defective);
        assert_eq!(memory_kind(EntryType::BOOTLOADER_RECLAIMABLE), MemoryKind::BootloaderReclaimable);
        assert_eq!(memory_kind(EntryType::EXECUTABLE_AND_MODULES), MemoryKind::KernelAndModules);
        assert_eq!(memory_kind(EntryType::FRAMEBUFFER), MemoryKind::Framebuffer);
        // SAFETY: `EntryType` is `#[repr(transparent)]` over `u64` and every `u64` is a valid
        // value; this builds a type number newer than the crate knows.
        let unknown: EntryType = unsafe { core::mem::transmute::<u64, EntryType>(0x1234) };
        assert_eq!(memory_kind(unknown), MemoryKind::Reserved);
    }

    #[test]
    fn required_responses() {
        let map = qemu_map();
        let refs: Vec<&Entry> = map.iter().collect();
        let good = boot(&refs);
        assert!(matches!(parse(&LimineBoot { hhdm_offset: None, ..good }), Err(BootInfoError::Malformed(_))));
        assert_eq!(parse(&LimineBoot { memory_map: None, ..good }).unwrap_err(), BootInfoError::NoMemoryMap);
        assert!(matches!(parse(&LimineBoot { kernel_phys_base: None, ..good }), Err(BootInfoError::Malformed(_))));
        let empty: [&Entry; 0] = [];
        assert_eq!(parse(&LimineBoot { memory_map: Some(&empty), ..good }).unwrap_err(), BootInfoError::NoMemoryMap);
    }

    #[test]
    fn module_errors() {
        let map = qemu_map();
        let refs: Vec<&Entry> = map.iter().collect();
        let good = boot(&refs);
        assert_eq!(parse(&LimineBoot { module_count: 2, ..good }).unwrap_err(), BootInfoError::TooManyModules);
        assert!(matches!(parse(&LimineBoot { first_module: None, ..good }), Err(BootInfoError::Malformed(_))));
        // A physical (not HHDM) module address cannot be converted.
        let low = Some(LimineModule { addr: 0x7fe0_0000, size: 0x1000 });
        assert!(matches!(parse(&LimineBoot { first_module: low, ..good }), Err(BootInfoError::Malformed(_))));
        let wraps = Some(LimineModule { addr: u64::MAX - 10, size: u64::MAX - 0x1000 });
        assert!(matches!(parse(&LimineBoot { first_module: wraps, ..good }), Err(BootInfoError::Malformed(_))));
    }

    #[test]
    fn limits_and_framebuffer_errors() {
        let many: Vec<Entry> =
            (0..=MAX_MEMORY_REGIONS as u64).map(|i| entry(i << 12, 0x1000, EntryType::USABLE)).collect();
        let refs: Vec<&Entry> = many.iter().collect();
        assert_eq!(parse(&boot(&refs[..MAX_MEMORY_REGIONS])).unwrap().regions().len(), MAX_MEMORY_REGIONS);
        assert_eq!(parse(&boot(&refs)).unwrap_err(), BootInfoError::TooManyRegions);

        let map = qemu_map();
        let refs: Vec<&Entry> = map.iter().collect();
        let good = boot(&refs);
        let long = [b'x'; MAX_CMDLINE + 1];
        assert_eq!(parse(&LimineBoot { cmdline: Some(&long), ..good }).unwrap_err(), BootInfoError::CmdlineTooLong);
        assert_eq!(parse(&LimineBoot { cmdline: Some(&long[1..]), ..good }).unwrap().cmdline().len(), MAX_CMDLINE);

        let fb = good.framebuffer.unwrap();
        for bad in [
            LimineFramebuffer { addr: 0xfd00_0000, ..fb },
            LimineFramebuffer { width: 1 << 32, ..fb },
            LimineFramebuffer { pitch: u64::MAX, ..fb },
            LimineFramebuffer { bpp: 256, ..fb },
        ] {
            let input = LimineBoot { framebuffer: Some(bad), ..good };
            assert!(matches!(parse(&input), Err(BootInfoError::Malformed(_))), "{bad:?}");
        }
    }

    // #[repr(C)] mirrors of the crate's protocol structures, whose fields are private. Each has the
    // layout the Limine protocol (and the crate) defines for the structure it stands in for.

    #[repr(C)]
    struct HhdmMirror {
        revision: u64,
        offset: u64,
    }

    #[repr(C)]
    struct MemoryMapMirror {
        revision: u64,
        entry_ct: u64,
        entries: *const *const Entry,
    }

    #[repr(C)]
    struct FileMirror {
        revision: u64,
        addr: *mut u8,
        size: u64,
        path: *const c_char,
        string: *const c_char,
        media_type: u32,
        unused: u32,
        tftp_ip: u32,
        tftp_port: u32,
        partition_idx: u32,
        mbr_disk_id: u32,
        gpt_disk_id: [u32; 4],
        gpt_partition_id: [u32; 4],
        partition_uuid: [u32; 4],
    }

    #[repr(C)]
    struct ModuleMirror {
        revision: u64,
        module_ct: u64,
        modules: *const *const FileMirror,
    }

    #[repr(C)]
    struct RsdpMirror {
        revision: u64,
        address: usize,
    }

    #[repr(C)]
    struct ExecutableAddressMirror {
        revision: u64,
        physical_base: u64,
        virtual_base: u64,
    }

    #[repr(C)]
    struct ExecutableCmdlineMirror {
        revision: u64,
        cmdline: *const c_char,
    }

    #[repr(C)]
    struct ExecutableFileMirror {
        revision: u64,
        file: *const FileMirror,
    }

    /// The crate's `RawFramebuffer` union: the revision-1 layout (80 bytes), the larger variant.
    #[repr(C)]
    struct RawFramebufferMirror {
        addr: *mut u8,
        width: u64,
        height: u64,
        pitch: u64,
        bpp: u16,
        memory_model: u8,
        masks: [u8; 6],
        unused: [u8; 7],
        edid_size: u64,
        edid: *const u8,
        mode_ct: u64,
        modes: *const *const VideoMode,
    }

    #[repr(C)]
    struct FramebufferMirror {
        revision: u64,
        framebuffer_ct: u64,
        framebuffers: *const *const RawFramebufferMirror,
    }

    /// View a mirror as the crate type it mirrors.
    ///
    /// # Safety
    ///
    /// `M` must have the field layout of `T`, and every pointer inside `m` must stay valid, for the
    /// types the crate reads through it, for as long as the returned reference is used.
    unsafe fn view<M, T>(m: &M) -> &T {
        assert_eq!(size_of::<M>(), size_of::<T>());
        assert_eq!(align_of::<M>(), align_of::<T>());
        // SAFETY: same size and alignment (checked above) and the same field layout (the
        // caller's promise), so the bytes of `m` are a valid `T` for the lifetime of `m`.
        unsafe { &*(m as *const M).cast::<T>() }
    }

    fn file(addr: u64, size: u64, string: &'static core::ffi::CStr) -> FileMirror {
        FileMirror {
            revision: 0,
            addr: addr as *mut u8,
            size,
            path: c"/boot/initrd.tar".as_ptr(),
            string: string.as_ptr(),
            media_type: 0,
            unused: 0,
            tftp_ip: 0,
            tftp_port: 0,
            partition_idx: 1,
            mbr_disk_id: 0,
            gpt_disk_id: [0; 4],
            gpt_partition_id: [0; 4],
            partition_uuid: [0; 4],
        }
    }

    #[test]
    fn responses_are_converted() {
        assert_eq!(size_of::<FileMirror>(), size_of::<File>());
        assert_eq!(size_of::<RawFramebufferMirror>(), 80);

        let map = qemu_map();
        let entry_ptrs: Vec<*const Entry> = map.iter().map(|e| e as *const Entry).collect();
        let mmap = MemoryMapMirror { revision: 0, entry_ct: map.len() as u64, entries: entry_ptrs.as_ptr() };
        let hhdm = HhdmMirror { revision: 0, offset: HHDM };
        let initrd = file(HHDM + 0x7fe0_0000, 0x1_2345, c"initrd");
        let module_ptrs = [&initrd as *const FileMirror];
        let modules = ModuleMirror { revision: 1, module_ct: 1, modules: module_ptrs.as_ptr() };
        // Base revision 3: the RSDP address is physical.
        let rsdp = RsdpMirror { revision: 0, address: RSDP as usize };
        let address =
            ExecutableAddressMirror { revision: 0, physical_base: KERNEL_PHYS, virtual_base: 0xffff_ffff_8000_0000 };
        let cmdline = ExecutableCmdlineMirror { revision: 0, cmdline: c"ozone.test=cmdline-request".as_ptr() };
        let kernel = file(HHDM + KERNEL_PHYS, 0x20_0000, c"ozone.test=file-string");
        let kernel_file = ExecutableFileMirror { revision: 0, file: &kernel };
        let raw_fb = RawFramebufferMirror {
            addr: (HHDM + 0xfd00_0000) as *mut u8,
            width: 1024,
            height: 768,
            pitch: 4096,
            bpp: 32,
            memory_model: 1,
            masks: [8, 16, 8, 8, 8, 0],
            unused: [0; 7],
            edid_size: 0,
            edid: core::ptr::null(),
            mode_ct: 0,
            modes: core::ptr::null(),
        };
        let fb_ptrs = [&raw_fb as *const RawFramebufferMirror];
        let framebuffer = FramebufferMirror { revision: 0, framebuffer_ct: 1, framebuffers: fb_ptrs.as_ptr() };

        // SAFETY: each mirror has the protocol layout of the response it is viewed as, and every
        // pointer in them (entry, module, file, string and framebuffer arrays) points to live
        // locals of this test that outlive `responses`.
        let responses = unsafe {
            LimineResponses {
                memory_map: Some(view::<_, MemoryMapResponse>(&mmap)),
                hhdm: Some(view::<_, HhdmResponse>(&hhdm)),
                modules: Some(view::<_, ModuleResponse>(&modules)),
                rsdp: Some(view::<_, RsdpResponse>(&rsdp)),
                executable_address: Some(view::<_, ExecutableAddressResponse>(&address)),
                executable_cmdline: Some(view::<_, ExecutableCmdlineResponse>(&cmdline)),
                executable_file: Some(view::<_, ExecutableFileResponse>(&kernel_file)),
                framebuffer: Some(view::<_, FramebufferResponse>(&framebuffer)),
            }
        };

        let input = LimineBoot::from_responses(&responses, 3);
        assert_eq!(input.base_revision, 3);
        assert_eq!(input.hhdm_offset, Some(HHDM));
        assert_eq!(input.kernel_phys_base, Some(KERNEL_PHYS));
        assert_eq!(input.memory_map.map(<[_]>::len), Some(map.len()));
        assert_eq!(input.module_count, 1);
        assert_eq!(input.first_module, Some(LimineModule { addr: HHDM + 0x7fe0_0000, size: 0x1_2345 }));
        assert_eq!(input.rsdp, Some(RSDP));
        assert_eq!(input.cmdline, Some(b"ozone.test=cmdline-request".as_slice()));
        assert_eq!(
            input.framebuffer,
            Some(LimineFramebuffer { addr: HHDM + 0xfd00_0000, width: 1024, height: 768, pitch: 4096, bpp: 32 })
        );

        let info = parse(&input).unwrap();
        assert_eq!(info.initrd, Some(PhysRange { start: 0x7fe0_0000, end: 0x7fe1_2345 }));
        assert_eq!(info.loader_phys_offset, HHDM);
        assert_eq!(info.kernel_phys_base, KERNEL_PHYS);
        assert_eq!(info.framebuffer.map(|f| f.phys_addr), Some(0xfd00_0000));
        assert_eq!(info.regions()[0], MemoryRegion { base: 0x1000, len: 0x9_e000, kind: MemoryKind::Usable });
        assert_eq!(info.cmdline_value("ozone.test"), Some("cmdline-request"));
        assert_eq!(info.acpi, Some(AcpiRoot::Rsdp(RSDP)));

        // Base revision 2 (Limine 8.2): the RSDP address is in the HHDM; the rest is the same.
        let rsdp_hhdm = RsdpMirror { revision: 0, address: (HHDM + RSDP) as usize };
        // SAFETY: `RsdpMirror` has `RsdpResponse`'s layout, and `rsdp_hhdm` outlives the view.
        let revision_2 = LimineResponses { rsdp: Some(unsafe { view::<_, RsdpResponse>(&rsdp_hhdm) }), ..responses };
        let input = LimineBoot::from_responses(&revision_2, 2);
        assert_eq!(input.base_revision, 2);
        assert_eq!(input.rsdp, Some(HHDM + RSDP));
        let info_2 = parse(&input).unwrap();
        assert_eq!(info_2.acpi, Some(AcpiRoot::Rsdp(RSDP)));
        assert_eq!(info_2.initrd, info.initrd);
        assert_eq!(info_2.framebuffer, info.framebuffer);
        assert_eq!(info_2.regions(), info.regions());
        assert_eq!(info_2.cmdline(), info.cmdline());
        // The revision decides how the address is read: a physical one is refused under 2.
        let wrong = parse(&LimineBoot::from_responses(&responses, 2)).unwrap_err();
        assert_eq!(wrong, BootInfoError::Malformed("limine: RSDP outside the HHDM"));
        assert_eq!(
            parse(&LimineBoot::from_responses(&responses, 1)).unwrap_err(),
            BootInfoError::UnsupportedBaseRevision(1)
        );

        // Without the command-line response, the kernel file's string is the command line.
        let fallback = LimineResponses { executable_cmdline: None, ..responses };
        let info = parse(&LimineBoot::from_responses(&fallback, 3)).unwrap();
        assert_eq!(info.cmdline_value("ozone.test"), Some("file-string"));

        // Two modules.
        let second = file(HHDM + 0x7ff0_0000, 0x1000, c"");
        let two_ptrs = [&initrd as *const FileMirror, &second as *const FileMirror];
        let two = ModuleMirror { revision: 1, module_ct: 2, modules: two_ptrs.as_ptr() };
        // SAFETY: `ModuleMirror` has `ModuleResponse`'s layout, and `two_ptrs`, `initrd` and
        // `second` outlive the view.
        let two_modules = LimineResponses { modules: Some(unsafe { view::<_, ModuleResponse>(&two) }), ..responses };
        assert_eq!(parse(&LimineBoot::from_responses(&two_modules, 3)).unwrap_err(), BootInfoError::TooManyModules);

        // Unanswered requests.
        let none = LimineResponses::default();
        let input = LimineBoot::from_responses(&none, 3);
        assert_eq!(input.module_count, 0);
        assert_eq!(input.cmdline, None);
        assert!(matches!(parse(&input), Err(BootInfoError::Malformed(_))));
        let no_map = LimineResponses { memory_map: None, ..responses };
        assert_eq!(parse(&LimineBoot::from_responses(&no_map, 3)).unwrap_err(), BootInfoError::NoMemoryMap);
        let no_hhdm = LimineResponses { hhdm: None, ..responses };
        assert!(matches!(parse(&LimineBoot::from_responses(&no_hhdm, 3)), Err(BootInfoError::Malformed(_))));
    }

    #[test]
    fn random_values_never_panic() {
        let mut rng = Rng(0x6c69_6d69_6e65_2121);
        let types = [
            EntryType::USABLE,
            EntryType::RESERVED,
            EntryType::ACPI_RECLAIMABLE,
            EntryType::ACPI_NVS,
            EntryType::BAD_MEMORY,
            EntryType::BOOTLOADER_RECLAIMABLE,
            EntryType::EXECUTABLE_AND_MODULES,
            EntryType::FRAMEBUFFER,
        ];
        let mut parsed = 0;
        for _ in 0..20_000 {
            let n = rng.next() as usize % (MAX_MEMORY_REGIONS + 8);
            let map: Vec<Entry> = (0..n)
                .map(|_| {
                    let len = if rng.next().is_multiple_of(8) { 0 } else { rng.next() };
                    entry(rng.next(), len, types[rng.next() as usize % types.len()])
                })
                .collect();
            let refs: Vec<&Entry> = map.iter().collect();
            let cmdline = vec![b'a'; rng.next() as usize % (MAX_CMDLINE + 8)];
            let module_count = (rng.next() % 3) as usize;
            // Mostly small values, so that conversions both succeed and fail.
            let mut val = |small: u64| if !rng.next().is_multiple_of(8) { rng.next() % small } else { rng.next() };
            let hhdm = val(1 << 48);
            // Mostly 2 and 3, the revisions the kernel reads.
            let base_revision = val(5);
            let rsdp = val(1 << 20);
            let rsdp = if base_revision == 2 && !rsdp.is_multiple_of(8) { hhdm.wrapping_add(rsdp) } else { rsdp };
            let input = LimineBoot {
                base_revision,
                hhdm_offset: Some(hhdm),
                memory_map: Some(&refs),
                kernel_phys_base: Some(val(1 << 40)),
                module_count,
                first_module: Some(LimineModule { addr: hhdm.wrapping_add(val(1 << 40)), size: val(1 << 40) }),
                rsdp: Some(rsdp),
                cmdline: Some(&cmdline),
                framebuffer: Some(LimineFramebuffer {
                    addr: hhdm.wrapping_add(val(1 << 40)),
                    width: val(1 << 16),
                    height: val(1 << 16),
                    pitch: val(1 << 18),
                    bpp: val(64) as u16,
                }),
            };
            if let Ok(info) = parse(&input) {
                parsed += 1;
                assert!(info.regions().len() <= MAX_MEMORY_REGIONS);
                assert_eq!(info.loader_phys_offset, hhdm);
                assert!(base_revision == 2 || base_revision == 3);
            }
        }
        assert!(parsed > 100, "only {parsed} inputs parsed");
    }
}
