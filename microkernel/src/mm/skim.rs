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

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The value of `ozone.kpti`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The kernel half is mapped in every address space (the default).
    Off,
    /// The skim window.
    On,
    /// On when the CPU may be subject to Meltdown: it does not report `RDCL_NO` and it is not
    /// virtualised (CPUID's hypervisor bit clear).
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
    /// data cache load) and `hypervisor` (`CPUID.1:ECX[31]`: running under a hypervisor, which
    /// decides for itself what the guest's kernel mappings expose).
    pub fn enabled(self, rdcl_no: bool, hypervisor: bool) -> bool {
        match self {
            Mode::Off => false,
            Mode::On => true,
            Mode::Auto => !rdcl_no && !hypervisor,
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
) -> Result<usize, String> {
    if !(256..512).contains(&slot) {
        return Err(format!("the trampoline slot {slot} is not in the top half"));
    }
    for (i, &e) in pml4.iter().enumerate().skip(256) {
        if i != slot && e != 0 {
            return Err(format!("PML4 slot {i} is mapped ({e:#x}); only the trampoline's slot {slot} may be"));
        }
    }
    let mut leaves: Vec<(u64, u64)> = Vec::new();
    walk(pml4[slot], 3, canonical((slot as u64) << 39), read, &mut leaves)?;
    for &(va, e) in &leaves {
        let Some(page) = expected.iter().find(|p| p.vaddr == va) else {
            return Err(format!("{va:#x} is mapped ({e:#x}) but is not a trampoline page"));
        };
        if (e & WRITABLE != 0) != page.writable {
            return Err(format!(
                "{} at {va:#x}: writable is {}, must be {}",
                page.what,
                e & WRITABLE != 0,
                page.writable
            ));
        }
        if (e & NO_EXECUTE == 0) != page.executable {
            return Err(format!(
                "{} at {va:#x}: executable is {}, must be {}",
                page.what,
                e & NO_EXECUTE == 0,
                page.executable
            ));
        }
        if let Some(&(s, end)) = forbidden.iter().find(|&&(s, end)| (s..end).contains(&va)) {
            return Err(format!("{} at {va:#x} lies in a forbidden range [{s:#x}, {end:#x})", page.what));
        }
    }
    for p in expected {
        match leaves.iter().filter(|&&(va, _)| va == p.vaddr).count() {
            1 => {}
            0 => return Err(format!("{} at {:#x} is not mapped", p.what, p.vaddr)),
            n => return Err(format!("{} at {:#x} is mapped {n} times", p.what, p.vaddr)),
        }
    }
    Ok(leaves.len())
}

/// Collect the 4 KiB leaves under the entry `e` of a table of `level` (3: PML4 entry → PDPT,
/// 2: PDPT entry → PD, 1: PD entry → PT, 0: a PT entry, the page itself) covering `base`.
fn walk<'a>(
    e: u64,
    level: u32,
    base: u64,
    read: &dyn Fn(u64) -> Option<&'a [u64; 512]>,
    leaves: &mut Vec<(u64, u64)>,
) -> Result<(), String> {
    if e & PRESENT == 0 {
        return Ok(());
    }
    if e & USER != 0 {
        return Err(format!("the entry for {base:#x} (level {level}) grants user access: {e:#x}"));
    }
    if level == 0 {
        leaves.push((base, e));
        return Ok(());
    }
    if level < 3 && e & HUGE != 0 {
        return Err(format!("{base:#x} is mapped by a large page ({e:#x}); the trampoline maps 4 KiB pages only"));
    }
    let table = read(e & ADDR_MASK).ok_or_else(|| format!("the table at {:#x} cannot be read", e & ADDR_MASK))?;
    let span = 1u64 << (12 + 9 * (level - 1));
    for (i, &child) in table.iter().enumerate() {
        walk(child, level - 1, base + i as u64 * span, read, leaves)?;
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
        assert!(t.check(&expected(), &[]).unwrap_err().contains("writable"));
        let mut t = Tables::new();
        t.map(TEXT, PRESENT);
        t.map(STACK, PRESENT | WRITABLE);
        assert!(t.check(&expected(), &[]).unwrap_err().contains("executable"));
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
    fn the_slot_must_be_in_the_top_half() {
        let t = good();
        assert!(check_top_half(&t.pml4, 3, &expected(), &[], &|_| None).is_err());
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
