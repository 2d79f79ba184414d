//! Finding the ACPI S5 ("soft off") sleep type in the DSDT, so the kernel can power off.
//!
//! The value lives in the DSDT's AML as `Name (_S5, Package () { SLP_TYPa, SLP_TYPb, ... })`.
//! Evaluating AML needs a full interpreter; this module only recognises that one declaration, a
//! technique that works on the firmware we boot on (SeaBIOS, OVMF, common PC firmware). A DSDT
//! that computes `_S5` with a method is not understood and power-off falls back to halting.

/// `(SLP_TYPa, SLP_TYPb)` from the `_S5_` package in `aml`, if it is declared as a plain name.
pub fn find_s5_sleep_types(aml: &[u8]) -> Option<(u8, u8)> {
    let mut i = 0;
    while i + 4 <= aml.len() {
        if &aml[i..i + 4] == b"_S5_"
            && is_name_decl(aml, i)
            && let Some(v) = parse_package(&aml[i + 4..])
        {
            return Some(v);
        }
        i += 1;
    }
    None
}

/// Is the name at `at` the object of a `NameOp` (0x08), possibly with a root (`\`) prefix?
fn is_name_decl(aml: &[u8], at: usize) -> bool {
    match at {
        0 => false,
        _ if aml[at - 1] == 0x08 => true,
        1 => false,
        _ => aml[at - 1] == b'\\' && aml[at - 2] == 0x08,
    }
}

/// `PackageOp PkgLength NumElements elem0 elem1 ...` → the first two integer elements.
fn parse_package(p: &[u8]) -> Option<(u8, u8)> {
    if *p.first()? != 0x12 {
        return None;
    }
    // PkgLength: the top two bits of the lead byte say how many more bytes follow.
    let lead = *p.get(1)?;
    let extra = (lead >> 6) as usize;
    let mut at = 2 + extra;
    let _num_elements = *p.get(at)?;
    at += 1;
    let (a, used) = parse_int(p.get(at..)?)?;
    at += used;
    let (b, _) = parse_int(p.get(at..)?).unwrap_or((a, 0));
    Some((a, b))
}

/// A small AML integer: ZeroOp, OneOp, or BytePrefix + byte. Returns (value, bytes used).
fn parse_int(p: &[u8]) -> Option<(u8, usize)> {
    match *p.first()? {
        0x00 => Some((0, 1)),
        0x01 => Some((1, 1)),
        0x0a => Some((*p.get(1)?, 2)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_byte_prefixed_values() {
        // Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
        let aml = [0x10, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x0a, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00];
        assert_eq!(find_s5_sleep_types(&aml), Some((5, 5)));
    }

    #[test]
    fn finds_zero_ops_and_root_prefix() {
        let aml = [0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(find_s5_sleep_types(&aml), Some((0, 0)));
    }

    #[test]
    fn ignores_references_and_garbage() {
        // A method body mentioning _S5_ without NameOp is not a declaration.
        assert_eq!(find_s5_sleep_types(&[0x70, b'_', b'S', b'5', b'_', 0x12, 0x06]), None);
        assert_eq!(find_s5_sleep_types(b""), None);
        assert_eq!(find_s5_sleep_types(&[0x08, b'_', b'S', b'5', b'_']), None);
        assert_eq!(find_s5_sleep_types(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x40]), None);
        // Pseudo-random bytes never panic.
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut buf = [0u8; 512];
        for _ in 0..2000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            buf[100..104].copy_from_slice(b"_S5_");
            buf[99] = 0x08;
            let _ = find_s5_sleep_types(&buf);
            let _ = find_s5_sleep_types(&buf[..(x as usize % 512)]);
        }
    }
}
