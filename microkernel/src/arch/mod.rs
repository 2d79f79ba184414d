//! The machine layer. Only x86_64 exists; everything architecture-specific lives below it.

pub mod x86_64;
