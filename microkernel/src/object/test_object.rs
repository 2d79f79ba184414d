//! Host tests: kernel objects the test owns, at fixed addresses.

extern crate std;

use std::boxed::Box;

/// A kernel object for a host test. The kernel reaches objects through their addresses (queue
/// links, thread states, capabilities), so a test must not hold the object in a `Box` or behind a
/// long-lived reference, whose use would end the pointers the kernel made from the address. This
/// keeps one raw pointer, made visible to address-made pointers once, and hands out a fresh
/// reference for each use.
pub struct Obj<T>(*mut T);

impl<T> Obj<T> {
    pub fn new(value: T) -> Obj<T> {
        Obj::from_box(Box::new(value))
    }

    pub fn from_box(b: Box<T>) -> Obj<T> {
        let p = Box::into_raw(b);
        // The kernel's pointers to the object are made from its address.
        let _ = p.expose_provenance();
        Obj(p)
    }

    pub fn ptr(&self) -> *mut T {
        self.0
    }
}

impl<T> core::ops::Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the object lives until `drop`; the reference is the test's use of it.
        unsafe { &*self.0 }
    }
}

impl<T> core::ops::DerefMut for Obj<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the object lives until `drop`; the reference is the test's use of it.
        unsafe { &mut *self.0 }
    }
}

impl<T> Drop for Obj<T> {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `from_box`, freed once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}
