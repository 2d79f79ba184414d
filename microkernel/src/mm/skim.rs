//! The skim-window address-space layout (boot option `ozone.kpti`, docs/hardening.md): the parts
//! that do not touch the machine, so the host tests reach them.
//!
//! With the option on, a user address space maps in its top half one PML4 slot only, the
//! *trampoline*: a fixed, short list of supervisor pages (the entry and exit code, the IDT, the
//! GDT and TSS, the per-CPU entry stack, the IST stacks, the per-CPU data page) at the addresses
//! the kernel itself uses for them. Everything else of the kernel — its image, its heap, the direct
//! map of physical memory — is mapped only in the kernel's own PML4, which is loaded while the
//! kernel runs. [`check_top_half`] checks a PML4 against that description; the arch layer runs it
//! at boot on the PML4 every user PML4 copies its top half from.

/// The value of `ozone.kpti`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The kernel half is mapped in every address space (the default).
    Off,
    /// The skim window.
    On,
    /// On when the CPU may be subject to Meltdown: it does not report `RDCL_NO` and is not an
    /// AMD or Hygon processor (virtualised or not).
    Auto,
}

impl Mode {
    /// `off`, `on` or `auto`.
    pub fn parse(value: &str) -> Option<Mode> {
        match value {
            "off" => Some(Mode::Off),
            "on" => Some(Mode::On),
            "auto" => Some(Mode::Auto),
            _ => None,
        }
    }

    /// Whether the skim window is used, on a CPU that reports `rdcl_no` (not subject to rogue
    /// data cache load) and whose vendor's processors are not subject to it at all
    /// (`immune_vendor`: AMD, Hygon). Running under a hypervisor changes nothing: ring 3 of a
    /// guest reads the guest kernel's supervisor mappings speculatively just as on bare metal
    /// (the hypervisor's own page tables do not stop it), and a hypervisor on unaffected hardware
    /// passes `RDCL_NO` through.
    pub fn enabled(self, rdcl_no: bool, immune_vendor: bool) -> bool {
        match self {
            Mode::Off => false,
            Mode::On => true,
            Mode::Auto => !rdcl_no && !immune_vendor,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
            Mode::Auto => "auto",
        }
    }
}

/// Page-table entry bits the check looks at.
pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const HUGE: u64 = 1 << 7;
pub const NO_EXECUTE: u64 = 1 << 63;
/// Physical-address bits of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A page the trampoline maps, with the only access it may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrampolinePage {
    pub vaddr: u64,
    pub writable: bool,
    pub executable: bool,
    /// What it is (for the report).
    pub what: &'static str,
}

/// The PML4 slot of a top-half address.
pub const fn pml4_slot(vaddr: u64) -> usize {
    ((vaddr >> 39) & 0x1ff) as usize
}

/// Sign-extend a 48-bit address.
const fn canonical(vaddr: u64) -> u64 {
    if vaddr & (1 << 47) != 0 { vaddr | 0xffff_0000_0000_0000 } else { vaddr }
}

/// How a PML4's top half breaks the skim-window layout ([`check_top_half`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The trampoline's slot is not in the top half.
    SlotNotInTopHalf(usize),
    /// A top-half slot other than the trampoline's is mapped.
    OtherSlot { slot: usize, entry: u64 },
    /// A page is mapped that is not on the list.
    NotListed { vaddr: u64, entry: u64 },
    /// A listed page is mapped with another access than listed.
    WrongAccess { what: &'static str, vaddr: u64, writable: bool, executable: bool },
    /// A table or page grants user access.
    UserAccess { vaddr: u64, level: u32, entry: u64 },
    /// A 2 MiB or 1 GiB page.
    LargePage { vaddr: u64, entry: u64 },
    /// A mapped page lies in a forbidden range.
    Forbidden { what: &'static str, vaddr: u64, start: u64, end: u64 },
    /// A listed page is not mapped.
    Missing { what: &'static str, vaddr: u64 },
    /// The list names a page twice.
    ListedTwice { vaddr: u64 },
    /// A table cannot be read.
    Unreadable { table: u64 },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            LayoutError::SlotNotInTopHalf(slot) => write!(f, "the trampoline slot {slot} is not in the top half"),
            LayoutError::OtherSlot { slot, entry } => {
                write!(f, "PML4 slot {slot} is mapped ({entry:#x}); only the trampoline's slot may be")
            }
            LayoutError::NotListed { vaddr, entry } => {
                write!(f, "{vaddr:#x} is mapped ({entry:#x}) but is not a trampoline page")
            }
            LayoutError::WrongAccess { what, vaddr, writable, executable } => {
                write!(f, "{what} at {vaddr:#x} has the wrong access (writable {writable}, executable {executable})")
            }
            LayoutError::UserAccess { vaddr, level, entry } => {
                write!(f, "the entry for {vaddr:#x} (level {level}) grants user access: {entry:#x}")
            }
            LayoutError::LargePage { vaddr, entry } => {
                write!(f, "{vaddr:#x} is mapped by a large page ({entry:#x}); the trampoline maps 4 KiB pages only")
            }
            LayoutError::Forbidden { what, vaddr, start, end } => {
                write!(f, "{what} at {vaddr:#x} lies in a forbidden range [{start:#x}, {end:#x})")
            }
            LayoutError::Missing { what, vaddr } => write!(f, "{what} at {vaddr:#x} is not mapped"),
            LayoutError::ListedTwice { vaddr } => write!(f, "{vaddr:#x} is listed twice"),
            LayoutError::Unreadable { table } => write!(f, "the table at {table:#x} cannot be read"),
        }
    }
}

/// Check the top half of `pml4` against the skim-window layout: every top-half slot but `slot`
/// is empty; `slot` leads, through tables that grant no user access, to 4 KiB pages only, and
/// those are exactly `expected`, each with the access listed (read-only unless writable,
/// no-execute unless executable, never user); none lies in one of the `forbidden` ranges
/// (`[start, end)`: the direct map, the kernel heap). `read` gives the table at a physical
/// address. Returns the number of pages mapped.
pub fn check_top_half<'a>(
    pml4: &[u64; 512],
    slot: usize,
    expected: &[TrampolinePage],
    forbidden: &[(u64, u64)],
    read: &dyn Fn(u64) -> Option<&'a [u64; 512]>,
) -> Result<usize, LayoutError> {
    if !(256..512).contains(&slot) {
        return Err(LayoutError::SlotNotInTopHalf(slot));
    }
    for (i, &entry) in pml4.iter().enumerate().skip(256) {
        if i != slot && entry != 0 {
            return Err(LayoutError::OtherSlot { slot: i, entry });
        }
    }
    for (i, p) in expected.iter().enumerate() {
        if expected[..i].iter().any(|q| q.vaddr == p.vaddr) {
            return Err(LayoutError::ListedTwice { vaddr: p.vaddr });
        }
    }
    let leaf = |vaddr: u64, entry: u64| -> Result<(), LayoutError> {
        let Some(page) = expected.iter().find(|p| p.vaddr == vaddr) else {
            return Err(LayoutError::NotListed { vaddr, entry });
        };
        let writable = entry & WRITABLE != 0;
        let executable = entry & NO_EXECUTE == 0;
        if writable != page.writable || executable != page.executable {
            return Err(LayoutError::WrongAccess { what: page.what, vaddr, writable, executable });
        }
        if let Some(&(start, end)) = forbidden.iter().find(|&&(s, e)| (s..e).contains(&vaddr)) {
            return Err(LayoutError::Forbidden { what: page.what, vaddr, start, end });
        }
        Ok(())
    };
    let mut mapped = 0;
    walk(pml4[slot], 3, canonical((slot as u64) << 39), read, &mut |vaddr, entry| {
        mapped += 1;
        leaf(vaddr, entry)
    })?;
    // Every page mapped is a distinct listed page (a tree maps an address once, the list has no
    // duplicates): as many mapped as listed means every listed page is mapped.
    if mapped != expected.len() {
        for p in expected {
            let mut found = false;
            walk(pml4[slot], 3, canonical((slot as u64) << 39), read, &mut |vaddr, _| {
                found |= vaddr == p.vaddr;
                Ok(())
            })?;
            if !found {
                return Err(LayoutError::Missing { what: p.what, vaddr: p.vaddr });
            }
        }
    }
    Ok(mapped)
}

/// Visit the 4 KiB leaves under the entry `e` of a table of `level` (3: PML4 entry → PDPT,
/// 2: PDPT entry → PD, 1: PD entry → PT, 0: a PT entry, the page itself) covering `base`.
fn walk<'a>(
    e: u64,
    level: u32,
    base: u64,
    read: &dyn Fn(u64) -> Option<&'a [u64; 512]>,
    leaf: &mut dyn FnMut(u64, u64) -> Result<(), LayoutError>,
) -> Result<(), LayoutError> {
    if e & PRESENT == 0 {
        return Ok(());
    }
    if e & USER != 0 {
        return Err(LayoutError::UserAccess { vaddr: base, level, entry: e });
    }
    if level == 0 {
        return leaf(base, e);
    }
    if level < 3 && e & HUGE != 0 {
        return Err(LayoutError::LargePage { vaddr: base, entry: e });
    }
    let table = read(e & ADDR_MASK).ok_or(LayoutError::Unreadable { table: e & ADDR_MASK })?;
    let span = 1u64 << (12 + 9 * (level - 1));
    for (i, &child) in table.iter().enumerate() {
        walk(child, level - 1, base + i as u64 * span, read, leaf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SLOT: usize = 511;
    const TEXT: u64 = 0xffff_ffff_8020_0000;
    const STACK: u64 = 0xffff_ffff_8030_0000;

    /// Tables by fake physical address.
    struct Tables {
        pml4: [u64; 512],
        tables: HashMap<u64, Box<[u64; 512]>>,
        next: u64,
    }

    impl Tables {
        fn new() -> Tables {
            Tables { pml4: [0; 512], tables: HashMap::new(), next: 0x10_0000 }
        }
        fn table(&mut self) -> u64 {
            let a = self.next;
            self.next += 0x1000;
            self.tables.insert(a, Box::new([0; 512]));
            a
        }
        /// Map the 4 KiB page at `va` with leaf flags `flags` (tables PRESENT | WRITABLE).
        fn map(&mut self, va: u64, flags: u64) {
            let idx = |shift: u32| ((va >> shift) & 0x1ff) as usize;
            if self.pml4[idx(39)] == 0 {
                let t = self.table();
                self.pml4[idx(39)] = t | PRESENT | WRITABLE;
            }
            let mut at = self.pml4[idx(39)] & ADDR_MASK;
            for shift in [30, 21] {
                let e = self.tables[&at][idx(shift)];
                at = if e == 0 {
                    let t = self.table();
                    self.tables.get_mut(&at).unwrap()[idx(shift)] = t | PRESENT | WRITABLE;
                    t
                } else {
                    e & ADDR_MASK
                };
            }
            self.tables.get_mut(&at).unwrap()[idx(12)] = 0x4000_0000 | flags;
        }
        fn check(&self, expected: &[TrampolinePage], forbidden: &[(u64, u64)]) -> Result<usize, String> {
            check_top_half(&self.pml4, SLOT, expected, forbidden, &|a| self.tables.get(&a).map(|b| &**b))
                .map_err(|e| e.to_string())
        }
    }

    fn expected() -> [TrampolinePage; 2] {
        [
            TrampolinePage { vaddr: TEXT, writable: false, executable: true, what: "entry code" },
            TrampolinePage { vaddr: STACK, writable: true, executable: false, what: "entry stack" },
        ]
    }

    fn good() -> Tables {
        let mut t = Tables::new();
        t.map(TEXT, PRESENT);
        t.map(STACK, PRESENT | WRITABLE | NO_EXECUTE);
        t
    }

    #[test]
    fn the_listed_pages_with_their_access_pass() {
        assert_eq!(good().check(&expected(), &[]), Ok(2));
    }

    #[test]
    fn another_top_half_slot_fails() {
        let mut t = good();
        t.pml4[256] = 0x20_0000 | PRESENT;
        assert!(t.check(&expected(), &[]).unwrap_err().contains("PML4 slot 256"));
    }

    #[test]
    fn a_page_not_listed_fails() {
        let mut t = good();
        t.map(STACK + 0x1000, PRESENT | WRITABLE | NO_EXECUTE);
        assert!(t.check(&expected(), &[]).unwrap_err().contains("not a trampoline page"));
    }

    #[test]
    fn a_listed_page_missing_fails() {
        let mut t = Tables::new();
        t.map(TEXT, PRESENT);
        assert!(t.check(&expected(), &[]).unwrap_err().contains("entry stack"));
    }

    #[test]
    fn wrong_access_fails() {
        let mut t = Tables::new();
        t.map(TEXT, PRESENT | WRITABLE);
        t.map(STACK, PRESENT | WRITABLE | NO_EXECUTE);
        assert!(
            t.check(&expected(), &[])
                .unwrap_err()
                .contains("entry code at 0xffffffff80200000 has the wrong access (writable true, executable true)")
        );
        let mut t = Tables::new();
        t.map(TEXT, PRESENT);
        t.map(STACK, PRESENT | WRITABLE);
        assert!(
            t.check(&expected(), &[])
                .unwrap_err()
                .contains("entry stack at 0xffffffff80300000 has the wrong access (writable true, executable true)")
        );
    }

    #[test]
    fn user_access_fails() {
        let mut t = Tables::new();
        t.map(TEXT, PRESENT | USER);
        t.map(STACK, PRESENT | WRITABLE | NO_EXECUTE);
        assert!(t.check(&expected(), &[]).unwrap_err().contains("user access"));
    }

    #[test]
    fn a_large_page_fails() {
        let mut t = good();
        let pdpt = t.pml4[SLOT] & ADDR_MASK;
        let pd = t.tables[&pdpt][((TEXT >> 30) & 0x1ff) as usize] & ADDR_MASK;
        t.tables.get_mut(&pd).unwrap()[5] = 0x4000_0000 | PRESENT | HUGE;
        assert!(t.check(&expected(), &[]).unwrap_err().contains("large page"));
    }

    #[test]
    fn a_page_in_a_forbidden_range_fails() {
        let err = good().check(&expected(), &[(STACK, STACK + 0x1000)]).unwrap_err();
        assert!(err.contains("forbidden"), "{err}");
    }

    #[test]
    fn a_page_listed_twice_fails() {
        let mut list = expected().to_vec();
        list.push(list[0]);
        assert!(good().check(&list, &[]).unwrap_err().contains("listed twice"));
    }

    #[test]
    fn the_slot_must_be_in_the_top_half() {
        let t = good();
        assert!(check_top_half(&t.pml4, 3, &expected(), &[], &|_| None).is_err());
    }

    /// Under a hardware hypervisor (KVM, VMware, Hyper-V) on a processor subject to Meltdown,
    /// ring 3 of the guest reads the guest kernel's supervisor mappings as on bare metal: `auto`
    /// decides by `RDCL_NO` and the vendor alone, never by the hypervisor bit.
    #[test]
    fn auto_follows_rdcl_no_and_the_vendor_not_the_hypervisor_bit() {
        // An Intel processor that does not report RDCL_NO, on bare metal or in a guest.
        assert!(Mode::Auto.enabled(false, false));
        // RDCL_NO, or an AMD/Hygon processor: not subject to Meltdown.
        assert!(!Mode::Auto.enabled(true, false));
        assert!(!Mode::Auto.enabled(false, true));
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("on"), Some(Mode::On));
        assert_eq!(Mode::parse("off"), Some(Mode::Off));
        assert_eq!(Mode::parse("auto"), Some(Mode::Auto));
        assert_eq!(Mode::parse("yes"), None);
        assert!(Mode::On.enabled(true, true));
        assert!(!Mode::Off.enabled(false, false));
        // Auto: only on bare metal that may be subject to Meltdown.
        assert!(Mode::Auto.enabled(false, false));
        assert!(!Mode::Auto.enabled(true, false));
        assert!(!Mode::Auto.enabled(false, true));
    }
}
