//! A user thread and its address space, as the kernel runs them before the capability kernel
//! exists: loaded from an ELF image, entered in ring 3, ended by exit or fault.

use alloc::boxed::Box;
use core::fmt;

use ozone_abi::{ROOT_STACK_SIZE, ROOT_STACK_TOP};

use crate::arch::x86_64::paging::{AddressSpace, PagingError, UserFlags};
use crate::arch::x86_64::{syscall, trap::TrapFrame};
use crate::user::elf::{ElfImage, LoadError, LoadTarget, SegmentFlags};

/// Why a task could not be made.
#[derive(Debug)]
pub enum TaskError {
    Load(LoadError<PagingError>),
    Paging(PagingError),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Load(LoadError::Elf(e)) => write!(f, "invalid ELF: {e}"),
            TaskError::Load(LoadError::Target(e)) | TaskError::Paging(e) => write!(f, "{e:?}"),
        }
    }
}

struct Loader<'a>(&'a mut AddressSpace);

impl LoadTarget for Loader<'_> {
    type Error = PagingError;

    fn map(&mut self, vaddr: u64, size: u64, flags: SegmentFlags) -> Result<(), PagingError> {
        let f = UserFlags { write: flags.write, exec: flags.exec };
        let mut v = vaddr;
        while v < vaddr + size {
            self.0.map_new_page(v, f)?;
            v += 4096;
        }
        Ok(())
    }

    fn write(&mut self, vaddr: u64, bytes: &[u8]) -> Result<(), PagingError> {
        self.0.write_user(vaddr, bytes).map_err(|_| PagingError::NotMapped)
    }
}

pub struct Task {
    name: &'static str,
    space: AddressSpace,
    /// The thread's saved user registers; kernel entries from this thread save into it.
    context: Box<TrapFrame>,
}

impl Task {
    /// Build a task from `image` loaded at `bias`, with a stack below [`ROOT_STACK_TOP`].
    pub fn load(name: &'static str, image: &ElfImage<'_>, bias: u64) -> Result<Task, TaskError> {
        let mut space = AddressSpace::new().map_err(TaskError::Paging)?;
        let entry = image.load(bias, &mut Loader(&mut space)).map_err(TaskError::Load)?;
        let mut v = ROOT_STACK_TOP - ROOT_STACK_SIZE;
        while v < ROOT_STACK_TOP {
            space.map_new_page(v, UserFlags { write: true, exec: false }).map_err(TaskError::Paging)?;
            v += 4096;
        }
        let (cs, ss) = syscall::user_selectors();
        let context =
            Box::new(TrapFrame { rip: entry, cs, ss, rsp: ROOT_STACK_TOP, rflags: 0x202, ..TrapFrame::default() });
        Ok(Task { name, space, context })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn space(&self) -> &AddressSpace {
        &self.space
    }

    pub fn activate(&self) {
        self.space.activate()
    }

    /// The saved-register area (stable: it is boxed).
    pub fn context_ptr(&mut self) -> *mut TrapFrame {
        &mut *self.context
    }
}

/// A 64-bit identifier derived one-way from an instance seed (SHA-256, domain-separated).
pub fn instance_id(seed: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ozone instance id v1\0");
    h.update(seed);
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}
