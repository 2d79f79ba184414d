//! Isolation regressions: each test sets up, from ring 3, one way a thread could reach memory,
//! capabilities or control flow that are no longer (or never were) its own, and checks the
//! kernel's answer. The semantics are seL4's where seL4 has them:
//!
//! - an IPC buffer lives only as long as its frame: once every capability to the frame is gone,
//!   the thread has no IPC buffer and a long message to it is cut to the register words;
//! - the right to reply dies with the Call it answers: a cancelled Call, or a caller that is
//!   deleted, leaves the server's late Reply with nobody to answer;
//! - a thread whose address space is deleted runs in no address space at all (it faults);
//! - user addresses end at `0x7fff_ffff_f000` (as Linux's `TASK_SIZE`): the last page below the
//!   canonical hole cannot be mapped, and a fault handler cannot give a thread a RIP outside user
//!   memory (it becomes 0, as seL4 sanitises it);
//! - a thread whose IPC is cancelled (endpoint deleted, badged sends cancelled, Suspend then
//!   Resume) *restarts* its syscall: it runs the syscall again rather than returning "success";
//! - an NMI is an event of the machine, not a fault of whichever thread runs: the kernel logs it
//!   and carries on.
//!
//! Some tests fill new objects with bytes crafted to look, to the kernel that was current when
//! they were written, like live kernel state (a capability slot, a TCB blocked on a reply), so
//! that a kernel still writing through a stale pointer shows it plainly; a kernel that does not
//! keep such pointers never reads them, whatever its own layout.

use super::*;
use ozone_agent_sdk::println;

/// Stacks for the threads these tests start (apart from the suite's, so that no thread of another
/// test shares one). Every test stops and deletes its threads before it returns.
static REG_STACKS: Stacks<8, { 16 * 1024 }> = Stacks::new();

/// Start `entry(arg)` at `prio` sharing our CSpace and VSpace, with `fault_ep` (0: none).
fn start(entry: extern "C" fn(u64) -> !, arg: u64, prio: u64, fault_ep: u64) -> Result<u64, Error> {
    ROOT.spawn(entry, arg, prio, fault_ep, REG_STACKS.next_top())
}

/// Start `entry(arg)` at `prio` in a TCB made from the untyped `ut` (so that we know where it
/// lives), sharing our CSpace and VSpace, with no IPC buffer and no fault handler.
fn start_in(ut: u64, entry: extern "C" fn(u64) -> !, arg: u64, prio: u64) -> Result<u64, Error> {
    let tcb = slot();
    k::untyped_retype(ut, ObjectType::Tcb, 0, CNODE, 0, 0, tcb, 1)?;
    k::tcb_configure(tcb, 0, CNODE, VSPACE, 0, 0)?;
    k::tcb_set_priority(tcb, TCB, prio)?;
    let regs = UserRegisters {
        rip: entry as *const () as u64,
        rsp: REG_STACKS.next_top(),
        rflags: 0x202,
        rdi: arg,
        ..Default::default()
    };
    k::tcb_write_registers(tcb, true, &regs)?;
    Ok(tcb)
}

/// Stop a thread and delete its (only) TCB capability.
fn stop(tcb: u64) {
    let _ = k::tcb_suspend(tcb);
    let _ = k::cnode_delete(CNODE, tcb);
}

/// Let every thread above priority 1 run until it blocks, then take the CPU back.
fn let_others_run() {
    let _ = k::tcb_set_priority(TCB, TCB, 1);
    let _ = k::tcb_set_priority(TCB, TCB, 255);
}

fn err_code<T>(r: &Result<T, Error>) -> u64 {
    match r {
        Ok(_) => 0,
        Err(e) => *e as u64,
    }
}

// ---- 1. an IPC buffer does not outlive its frame ----

/// What the receiver saw: label, length, error code; then 1 when it is done.
static BUF_RX: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

extern "C" fn buffer_receiver(ep: u64) -> ! {
    let r = sys::recv(ep);
    BUF_RX[0].store(r.map_or(u64::MAX, |r| r.msg.info.label()), Ordering::SeqCst);
    BUF_RX[1].store(r.map_or(u64::MAX, |r| r.msg.info.length()), Ordering::SeqCst);
    BUF_RX[2].store(err_code(&r), Ordering::SeqCst);
    BUF_RX[3].store(1, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// Where the receiver's IPC buffer is said to be (the kernel needs no mapping there).
const DOOMED_BUFFER_VA: u64 = 0x6300_0000;
/// A CNode of radix 6 is one 4 KiB page: 64 slots.
const PAGE_CNODE_RADIX: u64 = 6;
/// The slot of the new CNode that message words 7..15 of a buffer at the start of the page
/// cover: words `i` sit at byte `8 + 8 i`, slot 1 at bytes 64..128.
const FORGED_SLOT_FIRST_WORD: usize = 7;
/// The first word of a slot holding a capability to every I/O port (`IoPort 0..=0xffff`), as the
/// kernel this test was written against lays slots out; the other seven words zero (no links).
const FORGED_IO_PORT_CAP: u64 = 0x0000_ffff_0000_000d;

/// Receiver R's IPC buffer frame is revoked away (with the copy R's TCB holds) and its memory
/// becomes a CNode; then a 20-word message reaches R. R has no IPC buffer any more: it must see
/// only the 4 register words, and the CNode must stay empty. (A kernel that kept R's buffer
/// pointer writes the message into the CNode's slots: the crafted words make slot 1 a capability
/// to every I/O port.)
pub fn test_ipc_buffer_dies_with_its_frame() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(ut) = retype(ObjectType::Untyped, 12) else { return false };
    let Ok(base) = k::untyped_get_info(ut).map(|i| i.paddr) else { return false };
    let frame = slot();
    check!(k::untyped_retype(ut, ObjectType::Frame4K, 0, CNODE, 0, 0, frame, 1).is_ok(), "retype the frame");
    check_eq!(k::frame_get_address(frame), Ok(base));
    for w in &BUF_RX {
        w.store(0, Ordering::SeqCst);
    }
    let Ok(r) = start(buffer_receiver, ep, 100, 0) else { return false };
    check!(
        k::invoke(r, ozone_abi::invocation::TCB_SET_IPC_BUFFER, &[DOOMED_BUFFER_VA], &[frame]).is_ok(),
        "SetIPCBuffer"
    );
    let_others_run(); // R blocks in Recv
    check_eq!(BUF_RX[3].load(Ordering::SeqCst), 0);

    // Every capability to the frame goes (ours and the copy in R's TCB), and its memory becomes a
    // CNode of 64 slots.
    check!(k::cnode_revoke(CNODE, ut).is_ok(), "revoke the untyped");
    check_eq!(k::frame_get_address(frame), Err(Error::InvalidCapability));
    let cn = slot();
    check!(
        k::untyped_retype(ut, ObjectType::CNode, PAGE_CNODE_RADIX, CNODE, 0, 0, cn, 1).is_ok(),
        "retype a CNode over the frame's memory"
    );

    // A long message with crafted words.
    let buf = k::ipc_buffer();
    for w in buf.msg[4..20].iter_mut() {
        *w = 0;
    }
    buf.msg[FORGED_SLOT_FIRST_WORD] = FORGED_IO_PORT_CAP;
    let info = MessageInfo::new(0x1b, 0, 0, 20);
    let sent = sys::send(ep, Msg { info, mrs: [1, 2, 3, 4] });
    buf.msg[FORGED_SLOT_FIRST_WORD] = 0;
    let_others_run(); // R takes the message and exits
    let seen = [0, 1, 2, 3].map(|i| BUF_RX[i].load(Ordering::SeqCst));

    // Every slot of the CNode must still be empty: copying out of it fails.
    let probe = slot();
    let mut occupied = None;
    for i in 0..1u64 << PAGE_CNODE_RADIX {
        let copied =
            k::invoke(CNODE, ozone_abi::invocation::CNODE_COPY, &[probe, 64, i, PAGE_CNODE_RADIX, rights::ALL], &[cn]);
        if copied.is_ok() {
            occupied.get_or_insert(i);
            let _ = k::cnode_delete(CNODE, probe);
        }
    }
    stop(r);
    let _ = k::cnode_revoke(CNODE, ut);

    check!(sent.is_ok(), "the long Send failed: {:?}", sent);
    check!(seen[3] == 1, "the receiver never got the message");
    check!(
        occupied.is_none(),
        "slot {} of the CNode made over the revoked IPC buffer frame holds a capability: the message was \
         written into the CNode (the receiver saw length {})",
        occupied.unwrap_or(0),
        seen[1]
    );
    check!(
        seen[1] == 4,
        "the receiver, whose IPC buffer frame is gone, saw a message of length {} (expected the 4 register words)",
        seen[1]
    );
    check_eq!((seen[0], seen[2]), (0x1b, 0));
    true
}

// ---- 2. the right to reply dies with the Call ----

/// Shared by the late-reply tests: word 0 the label server S received, word 1 S's Reply result + 1
/// (0: not replied yet), words 2 to 4 what the second Call returned (error code, label, word 0),
/// word 5 is 1 once it returned.
static LATE: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
/// The notification S waits on before it replies, and the label of its reply.
static LATE_GO: AtomicU64 = AtomicU64::new(0);
static LATE_LABEL: AtomicU64 = AtomicU64::new(0);
const LATE_WORD: u64 = 0x5151;

fn late_reset(go: u64, label: u64) {
    for w in &LATE {
        w.store(0, Ordering::SeqCst);
    }
    LATE_GO.store(go, Ordering::SeqCst);
    LATE_LABEL.store(label, Ordering::SeqCst);
}

/// Server S: takes one Call, waits for the go signal, then replies (late).
extern "C" fn late_server(ep: u64) -> ! {
    let r = sys::recv(ep);
    LATE[0].store(r.map_or(u64::MAX, |r| r.msg.info.label()), Ordering::SeqCst);
    let _ = sys::recv(LATE_GO.load(Ordering::SeqCst));
    let replied = sys::reply(Msg::new(LATE_LABEL.load(Ordering::SeqCst), &[LATE_WORD]));
    LATE[1].store(err_code(&replied) + 1, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// Client C's first Call, to S (it never returns in these tests).
extern "C" fn late_first_call(ep: u64) -> ! {
    let _ = sys::call(ep, Msg::new(1, &[0xc1]));
    sys::thread_exit(0)
}

/// Client C's second Call, to S2: records the answer.
extern "C" fn late_second_call(ep2: u64) -> ! {
    let r = sys::call(ep2, Msg::new(2, &[0xc2]));
    LATE[2].store(err_code(&r), Ordering::SeqCst);
    LATE[3].store(r.map_or(u64::MAX, |r| r.msg.info.label()), Ordering::SeqCst);
    LATE[4].store(r.map_or(u64::MAX, |r| r.msg.mrs[0]), Ordering::SeqCst);
    LATE[5].store(1, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// What went wrong at the end of a late-reply test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Late {
    /// The Call to S2 never came.
    NoCall,
    /// S's late Reply reached the thread waiting for S2.
    Delivered,
    /// S's late Reply did not return success.
    ReplyFailed,
    /// S2's answer did not arrive intact.
    WrongAnswer,
}

/// The common end of the late-reply tests: C (or whoever now lives where C was) has Called S2
/// on `ep2`; we take that Call as S2, signal S to reply late, check that reached nobody, then
/// answer as S2. Prints the details of what went wrong.
fn late_reply_then_answer(ep2: u64, go: u64) -> Result<(), Late> {
    let got = sys::nb_recv(ep2).map(|r| r.msg.info.label());
    if got != Ok(2) {
        println!("[kernel-tests]      the second Call did not reach S2: {:?}", got);
        return Err(Late::NoCall);
    }
    // S's late Reply.
    let _ = sys::send(go, Msg::default());
    let_others_run();
    let late = LATE[1].load(Ordering::SeqCst);
    if LATE[5].load(Ordering::SeqCst) != 0 {
        println!(
            "[kernel-tests]      the Call to S2 returned S's late Reply: error {}, label {:#x}, word {:#x}",
            LATE[2].load(Ordering::SeqCst),
            LATE[3].load(Ordering::SeqCst),
            LATE[4].load(Ordering::SeqCst)
        );
        return Err(Late::Delivered);
    }
    if late != 1 {
        println!(
            "[kernel-tests]      S's late Reply returned error {} (expected success, having done nothing)",
            late - 1
        );
        return Err(Late::ReplyFailed);
    }
    // Our answer, as S2.
    let answered = sys::reply(Msg::new(0x22, &[0x2222]));
    let_others_run();
    let second = [2, 3, 4, 5].map(|i| LATE[i].load(Ordering::SeqCst));
    if answered.is_err() || second != [0, 0x22, 0x2222, 1] {
        println!(
            "[kernel-tests]      S2's reply {:?}; the Call to S2 got [error, label, word, done] = {:x?}",
            answered, second
        );
        return Err(Late::WrongAnswer);
    }
    Ok(())
}

/// C Calls S, S takes the Call (and the right to reply); C's Call is cancelled (TCB Suspend) and
/// C is restarted (WriteRegisters with resume) at a new Call, to S2. S's late Reply must find
/// nobody: it returns success and C keeps waiting, then gets S2's answer.
pub fn test_late_reply_after_a_cancelled_call() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(ep2) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(go) = retype(ObjectType::Notification, 0) else { return false };
    late_reset(go, 5);
    let Ok(s) = start(late_server, ep, 100, 0) else { return false };
    let Ok(c) = start(late_first_call, ep, 100, 0) else { return false };
    let_others_run(); // S takes C's Call and waits for the go signal
    let took = LATE[0].load(Ordering::SeqCst);
    let suspended = k::tcb_suspend(c);
    let regs = UserRegisters {
        rip: late_second_call as *const () as u64,
        rsp: REG_STACKS.next_top(),
        rflags: 0x202,
        rdi: ep2,
        ..Default::default()
    };
    let restarted = k::tcb_write_registers(c, true, &regs);
    let_others_run(); // C Calls S2 and waits
    let setup = took == 1 && suspended.is_ok() && restarted.is_ok();
    let end = if setup { late_reply_then_answer(ep2, go) } else { Ok(()) };
    stop(s);
    stop(c);
    check!(setup, "S took label {}; suspend {:?}; restart {:?}", took, suspended, restarted);
    check!(end != Err(Late::Delivered), "S's late Reply answered C, whose Call to S had been cancelled");
    check_eq!(end, Ok(()));
    true
}

/// C (a TCB in an untyped of its own) Calls S, S takes the Call; C's last capability is deleted
/// and a new thread C' is made in the same memory, which Calls S2. S's late Reply must not reach
/// C': it returns success and C' keeps waiting for S2's answer.
pub fn test_late_reply_to_a_deleted_caller_reused_as_a_thread() -> bool {
    let Ok(ut) = retype(ObjectType::Untyped, ozone_abi::object::TCB_BITS as u64) else { return false };
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(ep2) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(go) = retype(ObjectType::Notification, 0) else { return false };
    late_reset(go, 5);
    let Ok(s) = start(late_server, ep, 100, 0) else { return false };
    let Ok(c) = start_in(ut, late_first_call, ep, 100) else { return false };
    let_others_run();
    check_eq!(LATE[0].load(Ordering::SeqCst), 1);
    // C goes; C' takes its memory (the untyped holds exactly one TCB) and Calls S2.
    check!(k::cnode_delete(CNODE, c).is_ok(), "delete C");
    let Ok(c2) = start_in(ut, late_second_call, ep2, 100) else { return false };
    let_others_run();
    let end = late_reply_then_answer(ep2, go);
    stop(s);
    stop(c2);
    let _ = k::cnode_revoke(CNODE, ut);
    check!(end != Err(Late::Delivered), "S's late Reply to its deleted caller reached C', made in its memory");
    check_eq!(end, Ok(()));
    true
}

/// Where the frame made over the deleted caller is mapped, to fill and read it.
const CALLER_FRAME_VA: u64 = 0x6400_0000;
/// Word indices, in a TCB of the kernel this test was written against, of the thread state
/// (tag 5: blocked on a reply) and of the pending fault (tag 1: a VM fault, then three words).
const TCB_STATE_WORD: usize = 1408 / 8;
const TCB_FAULT_WORD: usize = 1520 / 8;

fn caller_pattern(i: usize) -> u64 {
    match i {
        TCB_STATE_WORD => 5,
        TCB_FAULT_WORD => 1,
        w if w > TCB_FAULT_WORD && w <= TCB_FAULT_WORD + 3 => 0xdead_0000 + w as u64,
        _ => 0x5a5a_0000_0000_0000 | i as u64,
    }
}

/// C Calls S, S takes the Call; C is deleted and its memory becomes a frame, filled with a
/// pattern (that looks like a thread waiting for the reply to a fault). S's late Reply (label 1)
/// must return success and change nothing: the frame stays byte for byte as we filled it.
pub fn test_late_reply_to_a_deleted_caller_reused_as_a_frame() -> bool {
    let Ok(ut) = retype(ObjectType::Untyped, 12) else { return false };
    let Ok(base) = k::untyped_get_info(ut).map(|i| i.paddr) else { return false };
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(go) = retype(ObjectType::Notification, 0) else { return false };
    late_reset(go, 1);
    let Ok(s) = start(late_server, ep, 100, 0) else { return false };
    let Ok(c) = start_in(ut, late_first_call, ep, 100) else { return false };
    let_others_run();
    check_eq!(LATE[0].load(Ordering::SeqCst), 1);
    check!(k::cnode_delete(CNODE, c).is_ok(), "delete C");
    // C's memory (the first 2 KiB of the untyped) becomes a frame, filled with the pattern.
    let frame = slot();
    check!(k::untyped_retype(ut, ObjectType::Frame4K, 0, CNODE, 0, 0, frame, 1).is_ok(), "retype a frame");
    check_eq!(k::frame_get_address(frame), Ok(base));
    check!(
        ROOT.map_frame_with_tables(frame, VSPACE, CALLER_FRAME_VA, rights::READ | rights::WRITE, false).is_ok(),
        "map the frame"
    );
    // SAFETY: the frame was just mapped here, writable, and is used for nothing else.
    let page = unsafe { &mut *(CALLER_FRAME_VA as *mut [u64; 512]) };
    for (i, w) in page.iter_mut().enumerate() {
        *w = caller_pattern(i);
    }
    let _ = sys::send(go, Msg::default());
    let_others_run(); // S replies late and exits
    let replied = LATE[1].load(Ordering::SeqCst);
    let changed = (0..512).find(|&i| page[i] != caller_pattern(i));
    let word = changed.map_or(0, |i| page[i]);
    let _ = k::frame_unmap(frame);
    stop(s);
    let _ = k::cnode_revoke(CNODE, ut);
    check!(
        changed.is_none(),
        "S's late Reply wrote into the frame made where its deleted caller was: word {} is {:#x}, was {:#x}",
        changed.unwrap_or(0),
        word,
        caller_pattern(changed.unwrap_or(0))
    );
    check!(replied == 1, "S's late Reply returned {} (expected success)", replied);
    true
}

// ---- 3. a thread whose address space is deleted runs in none ----

/// The thread's code page, the counter page it increments (a different frame in each address
/// space), a view of its own counter frame for us, and where we write its code.
const T_CODE_VA: u64 = 0x6500_0000;
const T_DATA_VA: u64 = 0x6500_1000;
const T_VIEW_VA: u64 = 0x6500_2000;
const T_WRITE_VA: u64 = 0x6500_3000;

/// `mov rax, T_DATA_VA; 1: inc qword ptr [rax]; jmp 1b` — no stack, no syscalls.
fn counter_loop_code() -> [u8; 15] {
    let mut code = [0u8; 15];
    code[0..2].copy_from_slice(&[0x48, 0xb8]);
    code[2..10].copy_from_slice(&T_DATA_VA.to_le_bytes());
    code[10..15].copy_from_slice(&[0x48, 0xff, 0x00, 0xeb, 0xfb]);
    code
}

fn read_word(va: u64) -> u64 {
    // SAFETY: callers pass addresses they mapped readable.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

/// Thread T runs, in an address space of its own, a loop incrementing the word at T_DATA_VA;
/// the same code page is mapped at the same place in ours, where T_DATA_VA is another frame, FS.
/// While T is runnable (not running) every capability to its PML4 is deleted. When T runs again
/// it must have no address space: its next instruction fetch faults (a VM fault for its
/// handler, us) and FS never changes. (A kernel that leaves the previous thread's page tables
/// loaded runs T in our address space, where it increments FS.)
pub fn test_thread_of_a_deleted_vspace_runs_nowhere() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let rw = rights::READ | rights::WRITE;
    // Frames: T's code, FT (T's counter), FS (ours at the same address).
    let Ok(code) = retype(ObjectType::Frame4K, 0) else { return false };
    let (code_ours, code_theirs, view) = (slot(), slot(), slot());
    let Ok(ft) = retype(ObjectType::Frame4K, 0) else { return false };
    let Ok(fs) = retype(ObjectType::Frame4K, 0) else { return false };
    check!(k::cnode_copy(CNODE, code_ours, code, rights::ALL).is_ok(), "copy");
    check!(k::cnode_copy(CNODE, code_theirs, code, rights::ALL).is_ok(), "copy");
    check!(k::cnode_copy(CNODE, view, ft, rights::ALL).is_ok(), "copy");
    check!(ROOT.map_frame_with_tables(code, VSPACE, T_WRITE_VA, rw, false).is_ok(), "map the code to write it");
    // SAFETY: just mapped there, writable, 4 KiB.
    unsafe {
        core::ptr::copy_nonoverlapping(counter_loop_code().as_ptr(), T_WRITE_VA as *mut u8, 15);
    }
    check!(k::frame_unmap(code).is_ok(), "unmap");
    check!(ROOT.map_frame_with_tables(code_ours, VSPACE, T_CODE_VA, rights::READ, true).is_ok(), "map code here");
    check!(ROOT.map_frame_with_tables(fs, VSPACE, T_DATA_VA, rw, false).is_ok(), "map FS");
    check!(ROOT.map_frame_with_tables(view, VSPACE, T_VIEW_VA, rw, false).is_ok(), "map FT's view");

    // T's address space.
    let Ok(pml4) = retype(ObjectType::Pml4, 0) else { return false };
    let mut tables = [0u64; 3];
    for (t, ty) in tables.iter_mut().zip([ObjectType::Pdpt, ObjectType::PageDirectory, ObjectType::PageTable]) {
        let Ok(s) = retype(ty, 0) else { return false };
        check!(k::paging_map(s, pml4, T_CODE_VA).is_ok(), "map {:?} for T", ty);
        *t = s;
    }
    check!(k::frame_map(code_theirs, pml4, T_CODE_VA, rights::READ, true).is_ok(), "map T's code");
    check!(k::frame_map(ft, pml4, T_DATA_VA, rw, false).is_ok(), "map FT");

    let Ok(t) = retype(ObjectType::Tcb, 0) else { return false };
    check!(k::tcb_configure(t, ep, CNODE, pml4, 0, 0).is_ok(), "configure T");
    check!(k::tcb_set_priority(t, TCB, 100).is_ok(), "T's priority");
    let regs = UserRegisters { rip: T_CODE_VA, rflags: 0x202, ..Default::default() };
    check!(k::tcb_write_registers(t, true, &regs).is_ok(), "start T");

    // Share the CPU with T (same priority, round robin) until it has counted in its own space.
    let _ = k::tcb_set_priority(TCB, TCB, 100);
    let mut rounds = 0;
    while read_word(T_VIEW_VA) == 0 && rounds < 50 {
        sys::yield_now();
        rounds += 1;
    }
    let counted = read_word(T_VIEW_VA);
    // T is runnable and we run: its address space goes (the copy in its TCB, then ours).
    let revoked = k::cnode_revoke(CNODE, pml4);
    let deleted = k::cnode_delete(CNODE, pml4);
    let fs_before = read_word(T_DATA_VA);
    let ft_before = read_word(T_VIEW_VA);
    let mut fault = None;
    for _ in 0..20 {
        sys::yield_now();
        if let Ok(r) = sys::nb_recv(ep)
            && r.msg.info.label() != 0
        {
            fault = Some(r);
            break;
        }
        if read_word(T_DATA_VA) != fs_before {
            break;
        }
    }
    let _ = k::tcb_set_priority(TCB, TCB, 255);
    let _ = k::tcb_suspend(t);
    let (fs_after, ft_after) = (read_word(T_DATA_VA), read_word(T_VIEW_VA));
    stop(t);
    for s in [code, code_ours, code_theirs, view, ft, fs, tables[2], tables[1], tables[0]] {
        let _ = k::cnode_delete(CNODE, s);
    }

    check!(counted != 0, "T never ran in its own address space");
    check!(revoked.is_ok() && deleted.is_ok(), "delete T's PML4: {:?} {:?}", revoked, deleted);
    check!(
        fs_after == fs_before,
        "T kept running after its address space was deleted, in ours: FS went from {} to {} (FT from {} to {})",
        fs_before,
        fs_after,
        ft_before,
        ft_after
    );
    let Some(f) = fault else {
        println!("[kernel-tests]      T neither faulted nor wrote FS (FT from {ft_before} to {ft_after})");
        return false;
    };
    // An instruction fetch (error code bit 4) at the instruction of its loop T was at.
    let [ip, addr, error, _] = f.msg.mrs;
    check_eq!(f.msg.info.label(), ozone_abi::fault::VM_FAULT);
    check!(
        ip == addr && (T_CODE_VA..T_CODE_VA + 15).contains(&ip) && error & 0x10 != 0,
        "T's fault: ip {:#x}, address {:#x}, error {:#x} (expected a fetch of T's code)",
        ip,
        addr,
        error
    );
    true
}

// ---- 4. user memory ends below the canonical hole ----

/// The last user page, just below the non-canonical hole: a `syscall` there would return to
/// 0x8000_0000_0000.
const LAST_PAGE: u64 = 0x7fff_ffff_f000;
const NON_CANONICAL: u64 = 0x8000_0000_0000;

/// A 4 KiB frame cannot be mapped at 0x7fff_ffff_f000 (user memory ends there, as Linux's
/// TASK_SIZE); the page below it can (its page table is the root stack's).
pub fn test_the_page_below_the_hole_cannot_be_mapped() -> bool {
    let Ok(f) = retype(ObjectType::Frame4K, 0) else { return false };
    let Ok(g) = retype(ObjectType::Frame4K, 0) else { return false };
    let rw = rights::READ | rights::WRITE;
    let below = k::frame_map(g, VSPACE, LAST_PAGE - 0x1000, rw, false);
    let last = k::frame_map(f, VSPACE, LAST_PAGE, rw, false);
    let last_exec = k::frame_map(f, VSPACE, LAST_PAGE, rights::READ, true);
    let _ = k::frame_unmap(f);
    let _ = k::frame_unmap(g);
    check!(below.is_ok(), "map at {:#x}: {:?}", LAST_PAGE - 0x1000, below);
    check!(last == Err(Error::InvalidArgument), "map at {:#x}: {:?} (expected InvalidArgument)", LAST_PAGE, last);
    check!(
        last_exec == Err(Error::InvalidArgument),
        "executable map at {:#x}: {:?} (expected InvalidArgument)",
        LAST_PAGE,
        last_exec
    );
    true
}

/// I/O-port control never issues a port the kernel drives: the legacy PICs, their aliases and
/// edge/level registers (a program that re-initialised them could put device interrupts on
/// exception vectors) and the ports the kernel
/// ends the run with (QEMU's debug exit at 0xf4; ACPI's PM1 control). Ranges beside them are
/// issued.
pub fn test_io_port_control_never_issues_the_kernels_ports() -> bool {
    let issue = |first: u64, last: u64| {
        let dest = slot();
        let r = k::invoke(
            slot::IO_PORT_CONTROL,
            ozone_abi::invocation::IO_PORT_CONTROL_ISSUE,
            &[first, last, dest, 64],
            &[CNODE],
        );
        if r.is_ok() {
            let _ = k::cnode_delete(CNODE, dest);
        }
        r.map(|_| ())
    };
    let kernels = [
        (0x20, 0x21),
        (0xa1, 0xa1),
        (0x24, 0x25),
        (0x22, 0x23),
        (0x3c, 0x3f),
        (0xbc, 0xbd),
        (0x4d0, 0x4d0),
        (0x00, 0xff),
        (0xf4, 0xf4),
        (0xf7, 0xf8),
        (0, 0xffff),
    ];
    for (first, last) in kernels {
        let r = issue(first, last);
        check!(r == Err(Error::IllegalOperation), "issue {first:#x}..={last:#x}: {r:?} (expected IllegalOperation)");
    }
    for (first, last) in [(0x40, 0x43), (0x3f8, 0x3ff), (0x40, 0x9f), (0xc0, 0xf3), (0xf8, 0xff), (0x4d2, 0x4d3)] {
        let r = issue(first, last);
        check!(r.is_ok(), "issue {first:#x}..={last:#x}: {r:?}");
    }
    true
}

extern "C" fn foreign_syscall(ep: u64) -> ! {
    let _ = sys::raw(0x4243, 0, 0);
    // Not reached: the handler's reply moves us elsewhere.
    let _ = sys::send(ep, Msg::new(9, &[]));
    sys::thread_exit(0)
}

/// A thread makes an unknown syscall; its handler replies label 0 with MR0 = result and MR1 =
/// 0x8000_0000_0000, a non-canonical new RIP. The kernel must sanitise it to 0 (as seL4 does):
/// first read back with ReadRegisters before the thread runs; then, for a second thread, let it
/// run: it takes a VM fault at ip 0, which its handler receives.
pub fn test_fault_reply_cannot_set_a_non_user_rip() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(t1) = start(foreign_syscall, ep, 100, ep) else { return false };
    let first = sys::recv(ep);
    let replied = sys::reply(Msg::new(0, &[0, NON_CANONICAL]));
    let regs = k::tcb_read_registers(t1, true);
    stop(t1);
    check_eq!(first.map(|r| (r.msg.info.label(), r.msg.mrs[2])), Ok((ozone_abi::fault::UNKNOWN_SYSCALL, 0x4243)));
    check!(replied.is_ok(), "reply: {:?}", replied);
    check!(regs.is_ok(), "read registers: {:?}", regs);
    let rip = regs.map_or(u64::MAX, |r| r.rip);
    check!(rip == 0, "the handler's reply set the thread's RIP to {:#x} (expected it sanitised to 0)", rip);

    // Let it run: a fetch from address 0.
    let Ok(t2) = start(foreign_syscall, ep, 100, ep) else { return false };
    let second = sys::recv(ep);
    check_eq!(second.map(|r| r.msg.info.label()), Ok(ozone_abi::fault::UNKNOWN_SYSCALL));
    check!(sys::reply(Msg::new(0, &[0, NON_CANONICAL])).is_ok(), "reply");
    let f = sys::recv(ep);
    stop(t2);
    check!(f.is_ok(), "receive the next fault: {:?}", f);
    let f = f.unwrap_or_default();
    check_eq!((f.msg.info.label(), f.msg.mrs[0], f.msg.mrs[1]), (ozone_abi::fault::VM_FAULT, 0, 0));
    true
}

/// WriteRegisters refuses every RIP outside user memory (a guard: this already holds).
pub fn test_write_registers_refuses_non_user_rips() -> bool {
    let Ok(t) = retype(ObjectType::Tcb, 0) else { return false };
    let good = UserRegisters { rip: 0x40_1000, rsp: 0x7000, rflags: 0x202, ..Default::default() };
    for rip in [NON_CANONICAL, NON_CANONICAL + 0x1000, 0xffff_8000_0000_0000, 0x8000_0000_0000_0000, u64::MAX] {
        let r = k::tcb_write_registers(t, false, &UserRegisters { rip, ..good });
        check!(r == Err(Error::InvalidArgument), "WriteRegisters with rip {:#x}: {:?}", rip, r);
    }
    check_eq!(k::tcb_write_registers(t, false, &good), Ok(()));
    let _ = k::cnode_delete(CNODE, t);
    true
}

// ---- 5. a cancelled IPC restarts its syscall ----

/// What a waiting thread reported: its error code, badge, label and word 0 of what its
/// syscall returned.
static WAITER_EP: AtomicU64 = AtomicU64::new(0);
static REPORT_EP: AtomicU64 = AtomicU64::new(0);

/// The report a waiter sends on REPORT_EP: label 9, [error, badge, label, word 0].
const REPORT_LABEL: u64 = 9;

extern "C" fn recv_then_report(_: u64) -> ! {
    let r = sys::recv(WAITER_EP.load(Ordering::SeqCst));
    let words =
        [err_code(&r), r.map_or(0, |r| r.badge), r.map_or(0, |r| r.msg.info.label()), r.map_or(0, |r| r.msg.mrs[0])];
    let _ = sys::send(REPORT_EP.load(Ordering::SeqCst), Msg::new(REPORT_LABEL, &words));
    sys::thread_exit(0)
}

extern "C" fn send_then_report(cap: u64) -> ! {
    let r = sys::send(cap, Msg::new(3, &[0x33]));
    let _ = sys::send(REPORT_EP.load(Ordering::SeqCst), Msg::new(REPORT_LABEL, &[err_code(&r), 0, 0, 0]));
    sys::thread_exit(0)
}

/// A report, if one is waiting: the four words.
fn take_report(report: u64) -> Option<[u64; 4]> {
    match sys::nb_recv(report) {
        Ok(r) if r.msg.info.label() == REPORT_LABEL => Some(r.msg.mrs),
        _ => None,
    }
}

/// W waits in Recv on E; every capability to E is deleted. W's Recv restarts and fails with
/// InvalidCapability (its capability is gone); it must not return success with a made-up badge.
pub fn test_recv_on_a_deleted_endpoint_restarts_and_fails() -> bool {
    let Ok(e) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(report) = retype(ObjectType::Endpoint, 0) else { return false };
    WAITER_EP.store(e, Ordering::SeqCst);
    REPORT_EP.store(report, Ordering::SeqCst);
    let Ok(w) = start(recv_then_report, 0, 100, 0) else { return false };
    let_others_run(); // W waits on E
    let early = take_report(report);
    let deleted = k::cnode_delete(CNODE, e);
    let_others_run();
    let got = take_report(report);
    stop(w);
    check!(early.is_none(), "W's Recv returned before anything happened: {:x?}", early);
    check!(deleted.is_ok(), "delete E: {:?}", deleted);
    let Some(got) = got else {
        println!("[kernel-tests]      W's Recv neither failed nor returned after E was deleted");
        return false;
    };
    check!(
        got[0] == Error::InvalidCapability as u64,
        "W's Recv on the deleted endpoint returned error {} with badge {:#x} (expected InvalidCapability = {})",
        got[0],
        got[1],
        Error::InvalidCapability as u64
    );
    true
}

/// S waits in Send on E through a badged capability B; B is deleted, then the sends with B's
/// badge are cancelled (CNode CancelBadgedSends on another capability with that badge). S's Send
/// restarts and fails with InvalidCapability (B is gone); it must not return success.
pub fn test_cancelled_badged_send_restarts_and_fails() -> bool {
    let Ok(e) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(report) = retype(ObjectType::Endpoint, 0) else { return false };
    REPORT_EP.store(report, Ordering::SeqCst);
    let (b, b2) = (slot(), slot());
    check!(k::cnode_mint(CNODE, b, e, rights::ALL, 0xb0b).is_ok(), "mint B");
    check!(k::cnode_mint(CNODE, b2, e, rights::ALL, 0xb0b).is_ok(), "mint B2");
    let Ok(s) = start(send_then_report, b, 100, 0) else { return false };
    let_others_run(); // S waits to send on E
    let early = take_report(report);
    let deleted = k::cnode_delete(CNODE, b);
    let cancelled = k::cnode_cancel_badged_sends(CNODE, b2);
    let_others_run();
    let got = take_report(report);
    // Nothing arrived on E.
    let on_e = sys::nb_recv(e).map(|r| r.msg.info.label());
    stop(s);
    check!(early.is_none(), "S's Send returned before anything happened: {:x?}", early);
    check!(deleted.is_ok() && cancelled.is_ok(), "delete B: {:?}; cancel: {:?}", deleted, cancelled);
    check_eq!(on_e, Ok(0));
    let Some(got) = got else {
        println!("[kernel-tests]      S's Send neither failed nor returned after its sends were cancelled");
        return false;
    };
    check!(
        got[0] == Error::InvalidCapability as u64,
        "S's cancelled Send through the deleted capability returned error {} (expected InvalidCapability = {})",
        got[0],
        Error::InvalidCapability as u64
    );
    true
}

/// W waits in Recv on E; it is suspended and resumed. Its Recv restarts: W waits again (nothing
/// returns), and a later Send with a known badge and message reaches it intact.
pub fn test_recv_restarts_after_suspend_and_resume() -> bool {
    let Ok(e) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(report) = retype(ObjectType::Endpoint, 0) else { return false };
    WAITER_EP.store(e, Ordering::SeqCst);
    REPORT_EP.store(report, Ordering::SeqCst);
    let badged = slot();
    check!(k::cnode_mint(CNODE, badged, e, rights::ALL, 0x77).is_ok(), "mint");
    let Ok(w) = start(recv_then_report, 0, 100, 0) else { return false };
    let_others_run(); // W waits on E
    let suspended = k::tcb_suspend(w);
    let resumed = k::tcb_resume(w);
    let_others_run(); // W runs: it must wait on E again
    let early = take_report(report);
    let sent = if early.is_none() { sys::nb_send(badged, Msg::new(5, &[42])) } else { Ok(()) };
    let_others_run();
    let got = take_report(report);
    stop(w);
    check!(suspended.is_ok() && resumed.is_ok(), "suspend {:?} resume {:?}", suspended, resumed);
    check!(
        early.is_none(),
        "W's Recv returned as soon as W was resumed: [error, badge, label, word] = {:x?}",
        early.unwrap_or_default()
    );
    check!(sent.is_ok(), "send: {:?}", sent);
    check_eq!(got, Some([0, 0x77, 5, 42]));
    true
}

// ---- 6. NMIs ----

/// The line after which the test runner injects an NMI through the QEMU monitor, then types one
/// byte at COM1 (`cargo xtask test`, QEMU test `kernel_suite`).
pub const NMI_MARKER: &str = "[kernel-tests] nmi: inject now";

const COM1: u64 = 0x3f8;
const SERIAL_IRQ: u64 = 4;

/// COM1's receive interrupt routed to a notification, to wait for the runner's byte.
struct SerialWait {
    ports: u64,
    handler: u64,
    ntfn: u64,
    mcr: u64,
}

impl SerialWait {
    fn new() -> Result<SerialWait, Error> {
        let ntfn = retype(ObjectType::Notification, 0)?;
        let (handler, ports) = (slot(), slot());
        k::invoke(slot::IRQ_CONTROL, ozone_abi::invocation::IRQ_CONTROL_GET, &[SERIAL_IRQ, handler, 64], &[CNODE])?;
        k::invoke(handler, ozone_abi::invocation::IRQ_HANDLER_SET_NOTIFICATION, &[], &[ntfn])?;
        k::invoke(
            slot::IO_PORT_CONTROL,
            ozone_abi::invocation::IO_PORT_CONTROL_ISSUE,
            &[COM1, COM1 + 7, ports, 64],
            &[CNODE],
        )?;
        let mut w = SerialWait { ports, handler, ntfn, mcr: 0 };
        w.mcr = w.in8(4);
        w.drain();
        // MCR.OUT2 gates the UART's interrupt line; IER.ERBFI: "received data available".
        w.out8(4, w.mcr | 0x08);
        w.out8(1, 0x01);
        Ok(w)
    }

    fn in8(&self, reg: u64) -> u64 {
        k::invoke(self.ports, ozone_abi::invocation::IO_PORT_IN8, &[COM1 + reg], &[]).map_or(0, |r| r.msg.mrs[0])
    }

    fn out8(&self, reg: u64, v: u64) {
        let _ = k::invoke(self.ports, ozone_abi::invocation::IO_PORT_OUT8, &[COM1 + reg, v], &[]);
    }

    /// Read whatever has arrived; how many bytes.
    fn drain(&self) -> u32 {
        let mut n = 0;
        while self.in8(5) & 1 != 0 && n < 64 {
            let _ = self.in8(0);
            n += 1;
        }
        n
    }

    /// Print the marker and block until a byte arrives (the runner's NMI comes first); returns
    /// whether the wait ended by the serial interrupt.
    fn marker_then_wait(&self, what: &str) -> bool {
        println!("{NMI_MARKER} ({what})");
        let got = sys::recv(self.ntfn).map(|r| r.badge);
        let bytes = self.drain();
        let _ = k::invoke(self.handler, ozone_abi::invocation::IRQ_HANDLER_ACK, &[], &[]);
        got == Ok(1 << SERIAL_IRQ) && bytes > 0
    }
}

impl Drop for SerialWait {
    fn drop(&mut self) {
        self.out8(1, 0);
        self.out8(4, self.mcr);
        let _ = k::cnode_delete(CNODE, self.handler);
        let _ = k::cnode_delete(CNODE, self.ports);
    }
}

static NMI_SPIN: AtomicU64 = AtomicU64::new(0);

extern "C" fn nmi_spinner(_: u64) -> ! {
    loop {
        NMI_SPIN.fetch_add(1, Ordering::SeqCst);
    }
}

/// An NMI arrives while a thread spins in ring 3 (we wait for the runner's byte, the spinner is
/// the only runnable thread). It is not the spinner's fault: its handler gets nothing and it
/// keeps counting. (The kernel's line about the NMI is checked by the runner.)
pub fn test_nmi_while_a_thread_spins() -> bool {
    let Ok(fault_ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(serial) = SerialWait::new() else {
        println!("[kernel-tests]      cannot route COM1's interrupt");
        return false;
    };
    NMI_SPIN.store(0, Ordering::SeqCst);
    let Ok(spinner) = start(nmi_spinner, 0, 100, fault_ep) else { return false };
    let woke = serial.marker_then_wait("a thread spins in ring 3");
    let fault = sys::nb_recv(fault_ep).map(|r| (r.msg.info.label(), r.msg.mrs));
    let before = NMI_SPIN.load(Ordering::SeqCst);
    // Share the CPU with the spinner (same priority, round robin) until it has counted again or
    // for 20 turns: it must still count. (One turn may be all but empty: the spinner's timeslice
    // may be at its end, and a tick pending, when it gets the CPU.)
    let _ = k::tcb_set_priority(TCB, TCB, 100);
    for _ in 0..20 {
        sys::yield_now();
        if NMI_SPIN.load(Ordering::SeqCst) != before {
            break;
        }
    }
    let _ = k::tcb_set_priority(TCB, TCB, 255);
    let after = NMI_SPIN.load(Ordering::SeqCst);
    stop(spinner);
    drop(serial);
    check!(woke, "the wait for the runner's byte did not end with the serial interrupt");
    check!(before > 0, "the spinner never ran");
    let (label, words) = fault.unwrap_or_default();
    check!(
        fault == Ok((0, [0; 4])),
        "the NMI was delivered to the spinner's fault handler as its fault: label {}, words {:x?}",
        label,
        words
    );
    check!(after > before, "the spinner stopped counting after the NMI ({} then {})", before, after);
    true
}

/// An NMI arrives while every thread is blocked and the kernel idles (we wait for the runner's
/// byte). The kernel logs it and goes on idling: the byte then wakes us.
pub fn test_nmi_while_the_kernel_idles() -> bool {
    let Ok(serial) = SerialWait::new() else {
        println!("[kernel-tests]      cannot route COM1's interrupt");
        return false;
    };
    let woke = serial.marker_then_wait("every thread blocked");
    drop(serial);
    check!(woke, "the wait for the runner's byte did not end with the serial interrupt");
    true
}
