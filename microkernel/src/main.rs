//! The kernel executable. Everything lives in the `ozone_kernel` library; this file only exists
//! so the linker produces `ozone-kernel` for `x86_64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
use ozone_kernel as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("ozone-kernel runs on bare metal only: build and boot it with `cargo xtask qemu`");
    std::process::exit(2);
}
