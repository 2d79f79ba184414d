//! Typed kernel-object pointers: the one place where a kernel address — a `u64` in a capability,
//! a queue link, a reply link, a TCB field — becomes a pointer to an object of a given type.
//!
//! Kernel objects name each other by kernel address (`u64`, 0 meaning none), as capabilities do,
//! so that a slot or a link is plain data the derivation tree and the checkers can compare and
//! copy. Code that needs the object asks [`kptr`] for a pointer of the object's type; only the
//! kernel-object types ([`KernelObject`]) can be asked for, so an address cannot be taken for
//! something else by a stray cast. Making the pointer is safe; dereferencing it is not, and every
//! dereference says (in its `// SAFETY:` comment) why the object is alive there.

use super::endpoint::Endpoint;
use super::notification::Notification;
use super::tcb::Tcb;
use super::vspace::Table;

/// A type of kernel object, named by kernel address.
pub trait KernelObject {}

impl KernelObject for Tcb {}
impl KernelObject for Endpoint {}
impl KernelObject for Notification {}
impl KernelObject for Table {}

/// The object of type `T` at kernel address `addr` (null for 0).
#[inline(always)]
pub const fn kptr<T: KernelObject>(addr: u64) -> *mut T {
    addr as *mut T
}
