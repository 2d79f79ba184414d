//! The console session: the UART driver, the line editor and the shell put together — what the
//! server does with an interrupt and with a client's `write`.
//!
//! An interrupt is handled as: read IIR, acknowledge the IRQ (the kernel masked the line when it
//! delivered the signal), then take and handle input for as long as the chip has some — bytes
//! that arrived while the line was masked raised no new edge, so they are picked up here rather
//! than waited for. Each complete line runs a shell command; its output, then the prompt, go to
//! the transmit ring. Bytes typed while a command runs wait in the UART's FIFO (the emulator holds
//! back more until there is room) and are handled after it, in order. The programs waiting for
//! the console are served before the input and after each command ([`Clients`]).

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use crate::line::{Event, LineEditor, MAX_LINE};
use crate::shell::{self, Backend, Outcome};
use crate::uart::{Ports, Uart};

/// The shell's prompt (the test harness types the next script line when it appears).
pub const PROMPT: &str = "ozone> ";

/// What erases the line the prompt is on before a program's line is printed there: back to its
/// start, then erase to the end of the line (as readline does). A prompt printed again after a
/// program's line follows a line that holds this (each program line printed at the prompt does),
/// which is how a reader tells it from a new one.
pub const ERASE_LINE: &str = "\r\x1b[K";

/// Printed once when the console starts, before the first prompt.
pub const BANNER: &str = "OZONE-OS console on COM1: type `help` for the commands\n";

/// Rounds of "take input, handle it" one interrupt may run (each takes up to
/// [`crate::uart::RECEIVE_BATCH`] bytes); a chip that claims data forever cannot hold the server.
const MAX_ROUNDS: usize = 1024;

/// The programs waiting for the console (Calls queued on its endpoint), as the session sees
/// them.
///
/// The kernel hands a receiving server the signal of its bound notification before any message
/// waiting on its endpoint (as seL4 does), and input keeps raising the serial interrupt: a
/// console that went back to its endpoint only once no input was left would make programs wait
/// for as long as someone types (a script typing each command at the prompt, or pasted lines),
/// and a `shutdown` among them would end the system with their lines never printed. So
/// [`Session::interrupt`] serves the programs already waiting before the input it took, and
/// again after each command it runs.
pub trait Clients<P: Ports, B: Backend> {
    /// Serve the requests waiting now (without waiting for one; at most a bounded number), their
    /// lines printed through `session`. Returns the notification signals (badge bits) taken
    /// meanwhile, which the caller still has to handle.
    fn serve_waiting(&mut self, session: &mut Session<P>, backend: &mut B) -> u64;
}

/// No programs (a session on its own, the host tests).
impl<P: Ports, B: Backend> Clients<P, B> for () {
    fn serve_waiting(&mut self, _session: &mut Session<P>, _backend: &mut B) -> u64 {
        0
    }
}

/// The console's state.
pub struct Session<P: Ports> {
    pub uart: Uart<P>,
    editor: LineEditor,
    /// Commands run so far.
    pub commands: u64,
    /// The prompt (and the input typed after it) is the last thing on the line.
    at_prompt: bool,
    /// Programs' lines still in the transmit ring: (program id, first byte, end), in the byte
    /// positions of [`Uart::gone`] (a line's bytes are in the ring while `gone` is below its end).
    in_ring: VecDeque<(u64, u64, u64)>,
}

impl<P: Ports> Session<P> {
    pub fn new(uart: Uart<P>) -> Session<P> {
        Session { uart, editor: LineEditor::new(), commands: 0, at_prompt: false, in_ring: VecDeque::new() }
    }

    /// Greet and show the first prompt.
    pub fn start(&mut self) {
        self.uart.queue(BANNER.as_bytes());
        self.prompt();
    }

    fn prompt(&mut self) {
        self.uart.queue(PROMPT.as_bytes());
        self.at_prompt = true;
    }

    /// Program `id`'s lines (a client's `LINE` or `WRITE`), printed as
    /// [`Session::program_lines`] prints them while they fit the transmit ring: above the part
    /// kept for the shell (a quarter of the ring, [`Session::reserve`]), and within the program's
    /// share of the rest (a quarter of it, [`Session::share`], counting its lines still in the
    /// ring). Those that do not fit are dropped, and their number returned (the caller counts them
    /// against the program, which is told). So no amount of programs' output makes the console
    /// wait for the serial line — on hardware, at 115200 baud, a full ring takes more than a
    /// second to send — the shell's answers, prompt and echo, and Studio's decisions, always find
    /// room, and one program's output cannot take the room of every other's.
    pub fn offer_program_lines(&mut self, id: u64, lines: &[alloc::string::String]) -> u64 {
        let gone = self.uart.gone();
        self.in_ring.retain(|&(_, _, end)| end > gone);
        let held: u64 = self.in_ring.iter().filter(|s| s.0 == id).map(|&(_, start, end)| end - start.max(gone)).sum();
        let mut need = if self.at_prompt { PROMPT.len() + self.editor.current().len() } else { 0 };
        let per_line = if self.at_prompt { ERASE_LINE.len() } else { 0 } + 2;
        let room = self.uart.room().saturating_sub(self.reserve());
        let share = self.share().saturating_sub(held as usize);
        let mut own = 0;
        let fit = lines
            .iter()
            .take_while(|l| {
                need += l.len() + per_line;
                own += l.len() + per_line;
                need <= room && own <= share
            })
            .count();
        let start = self.uart.gone() + self.uart.pending() as u64;
        self.program_lines(&lines[..fit]);
        let end = self.uart.gone() + self.uart.pending() as u64;
        if end > start {
            self.in_ring.push_back((id, start, end));
        }
        (lines.len() - fit) as u64
    }

    /// The most of the ring one program's lines may hold: a quarter of the programs' part.
    pub fn share(&self) -> usize {
        (self.uart.capacity() - self.reserve()) / 4
    }

    /// The part of the transmit ring programs' lines never take: a quarter of it.
    pub fn reserve(&self) -> usize {
        self.uart.capacity() / 4
    }

    /// Whole lines from programs (attributed and cleaned already: see [`crate::output`]). They
    /// go between the shell's lines: at the prompt, the prompt line is erased, the lines are
    /// printed, and the prompt and what was typed after it are printed again. A command's answer
    /// is queued whole before the console takes the next message, so nothing lands inside it.
    pub fn program_lines(&mut self, lines: &[alloc::string::String]) {
        if lines.is_empty() {
            return;
        }
        for line in lines {
            // Each line is printed over an erased one (after the first, an empty one): the line
            // before a prompt printed again always shows it.
            if self.at_prompt {
                self.uart.queue(ERASE_LINE.as_bytes());
            }
            self.uart.queue(line.as_bytes());
            self.uart.queue(b"\n");
        }
        if self.at_prompt {
            self.uart.queue(PROMPT.as_bytes());
            let typed = self.editor.current().to_vec();
            self.uart.queue(&typed);
        }
    }

    /// The UART interrupted; `ack` re-enables the IRQ line. Returns the notification signals
    /// `clients` took meanwhile (see [`Clients`]).
    pub fn interrupt<B: Backend, C: Clients<P, B>>(
        &mut self,
        backend: &mut B,
        clients: &mut C,
        ack: &mut dyn FnMut(),
    ) -> u64 {
        let mut input = Vec::new();
        self.uart.interrupt(&mut input);
        ack();
        // Those who were waiting before this input came go first.
        let mut signals = clients.serve_waiting(self, backend);
        for _ in 0..MAX_ROUNDS {
            if input.is_empty() {
                self.uart.receive(&mut input);
                if input.is_empty() {
                    break;
                }
            }
            for b in core::mem::take(&mut input) {
                if self.key(b, backend) {
                    // A command ran (it may have made programs wait): they go before the next.
                    signals |= clients.serve_waiting(self, backend);
                }
            }
        }
        self.uart.pump();
        signals
    }

    /// Handle one typed byte; whether it ran a command.
    fn key(&mut self, b: u8, backend: &mut dyn Backend) -> bool {
        let mut echo = Vec::new();
        let event = self.editor.feed(b, &mut echo);
        self.uart.queue(&echo);
        match event {
            Event::None => {}
            Event::Line(line) => {
                self.at_prompt = false;
                self.run(&line, backend);
                self.prompt();
                return true;
            }
            Event::TooLong => {
                let msg =
                    alloc::format!("error: the line is too long (at most {MAX_LINE} characters); nothing was run\n");
                self.uart.queue(msg.as_bytes());
                self.prompt();
            }
            Event::Cancelled => self.prompt(),
        }
        false
    }

    /// Run one command line and queue its output.
    fn run(&mut self, line: &str, backend: &mut dyn Backend) {
        let mut out = String::new();
        let outcome = shell::execute(line, backend, &mut out);
        if !line.trim().is_empty() {
            self.commands += 1;
        }
        self.uart.queue(out.as_bytes());
        // What Studio decided meanwhile (the command's own decisions among them), before the
        // next command: the signal that says so is seen only once this input is handled.
        for line in backend.decisions() {
            self.uart.queue(line.as_bytes());
            self.uart.queue(b"\n");
        }
        if outcome == Outcome::Shutdown {
            // Everything said so far reaches the line before the machine goes off.
            self.uart.flush();
            let e = backend.shutdown();
            let mut out = String::new();
            shell::shutdown_failed(&mut out, e);
            self.uart.queue(out.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::tests::Fake;
    use crate::uart::sim::SimUart;
    use crate::uart::{IER_RX, reg};

    fn session() -> Session<SimUart> {
        session_with(4096)
    }

    fn session_with(tx_capacity: usize) -> Session<SimUart> {
        let mut uart = Uart::new(SimUart::new(), tx_capacity);
        uart.init();
        let mut s = Session::new(uart);
        s.start();
        s
    }

    /// Type `text`, one interrupt per `chunk` bytes; returns the new output on the line.
    fn type_in(s: &mut Session<SimUart>, fake: &mut Fake, text: &[u8], chunk: usize) -> String {
        let before = line(s).len();
        let mut acks = 0;
        for piece in text.chunks(chunk) {
            s.uart_ports().rx.extend(piece);
            s.interrupt(fake, &mut (), &mut || acks += 1);
        }
        assert_eq!(acks, text.chunks(chunk).count(), "one ack per interrupt");
        String::from_utf8_lossy(&line(s)[before..]).into_owned()
    }

    fn line(s: &mut Session<SimUart>) -> Vec<u8> {
        s.uart.flush();
        let p = s.uart_ports();
        while !p.tx_fifo.is_empty() {
            let _ = p.read(reg::LSR);
        }
        p.line.clone()
    }

    impl Session<SimUart> {
        fn uart_ports(&mut self) -> &mut SimUart {
            self.uart.ports_mut()
        }
    }

    /// The decisions a command caused are printed right after its answer, before the next
    /// command runs, even when both commands arrive in one interrupt (the signal that Studio
    /// decided something is seen only after this input).
    #[test]
    fn a_commands_decisions_come_before_the_next_command() {
        let mut s = session();
        let mut fake = Fake::new();
        fake.agents[0].state = ozone_agent_sdk::protocol::studio::AgentState::Running;
        let out = type_in(&mut s, &mut fake, b"kill hello\rkill hello\r", 64);
        let killed = out.find("killed hello").expect("answered");
        let decided = out.find("[studio] kill hello: asked by console").expect("its decision printed");
        let second = out.find("error: busy").expect("the second command answered");
        assert!(killed < decided && decided < second, "{out:?}");
        assert_eq!(out.matches("[studio] kill hello").count(), 1, "printed once: {out:?}");
    }

    /// A program that floods, with the serial line stuck (nothing leaves the ring), fills the
    /// ring only up to the shell's part: the console never waits for the line, the rest of the
    /// flood is dropped and counted, and a command typed next is answered whole.
    #[test]
    fn programs_output_never_crowds_out_the_shell() {
        // The console's own ring size.
        let mut s = session_with(16 << 10);
        let mut fake = Fake::new();
        s.uart_ports().drain_per_poll = 0;
        let flood: Vec<String> = (0..200).map(|i| alloc::format!("[flooder] line {i:>4} {}", "x".repeat(80))).collect();
        let polls = s.uart_ports().lsr_reads;
        let dropped = s.offer_program_lines(9, &flood);
        assert!(dropped > 0 && dropped < 200, "{dropped} dropped");
        assert!(s.uart.pending() + s.reserve() <= s.uart.capacity(), "the shell's part is free");
        assert_eq!(s.uart.stats.dropped, 0, "nothing was lost in the ring");
        // A wait for the line polls it up to `STUCK_POLLS` times; queueing alone, a few per line.
        let polled = s.uart_ports().lsr_reads - polls;
        assert!(polled < 4 * flood.len(), "the console did not wait for the line: {polled} polls");
        // More of it: all dropped now.
        assert_eq!(s.offer_program_lines(9, &flood[..10]), 10);
        // The shell still answers in full: its answer fits the part kept for it.
        let before = s.uart.pending();
        s.uart_ports().rx.extend(b"help\r");
        s.interrupt(&mut fake, &mut (), &mut || {});
        let mut answer = String::new();
        shell::execute("help", &mut fake, &mut answer);
        assert!(answer.len() > 1000 && answer.len() < s.reserve(), "{}", answer.len());
        assert!(s.uart.pending() >= before + answer.len(), "the whole answer is queued");
        assert_eq!(s.uart.stats.dropped, 0);
        // Once the line moves, programs are printed again.
        s.uart_ports().drain_per_poll = 16;
        s.uart.flush();
        assert_eq!(s.offer_program_lines(9, &flood[..3]), 0);
    }

    /// One program's burst within its rate limit (`output::BURST` lines of up to `MAX_LINE`
    /// bytes) fills at most its share of the ring: another program's line that comes next is
    /// printed, and the drops are the flooder's.
    #[test]
    fn one_programs_burst_does_not_drop_anothers_line() {
        use crate::output::{BURST, Output};
        use ozone_agent_sdk::protocol::console::{Level, MAX_LINE};
        let mut s = session_with(16 << 10);
        // The serial line as it is at 115200 baud next to a CPU: nothing noticeable leaves the
        // ring while the requests are served.
        s.uart_ports().drain_per_poll = 0;
        let mut out = Output::new();
        let now = 1 << 40;
        // Long lines while they fit, then shorter ones into what is left: the programs' part of
        // the ring is full to the byte.
        let (mut size, mut sent, mut flood_dropped) = (MAX_LINE, 0, 0);
        while size > 0 && sent < BURST {
            let lines = out.lines(7, "flooder", Level::Info, &alloc::vec![b'x'; size], now);
            assert_eq!(lines.len(), 1, "within the flooder's rate limit");
            sent += 1;
            if s.offer_program_lines(7, &lines) > 0 {
                flood_dropped += 1;
                size /= 2;
            }
        }
        assert!(flood_dropped > 0 && sent <= BURST, "the flooder filled the programs' part of the ring");
        let lines = out.lines(8, "victim", Level::Info, b"the one line it ever sends", now);
        assert_eq!(lines.len(), 1, "within the victim's rate limit");
        let dropped = s.offer_program_lines(8, &lines);
        out.note_dropped(8, dropped, now);
        assert_eq!(
            dropped,
            0,
            "the victim's only line was dropped for the flooder's ({} of its own counted)",
            out.dropped(8)
        );
    }

    #[test]
    fn the_first_prompt_follows_the_banner() {
        let mut s = session();
        assert_eq!(line(&mut s), b"OZONE-OS console on COM1: type `help` for the commands\r\nozone> ");
        assert_eq!(s.uart_ports().ier, IER_RX);
    }

    #[test]
    fn a_command_is_echoed_run_and_followed_by_a_prompt() {
        let mut s = session();
        let mut fake = Fake::new();
        let out = type_in(&mut s, &mut fake, b"ps\r", 1);
        assert!(out.starts_with("ps\r\n ID  NAME"), "{out}");
        assert!(out.contains("2 programs, 1 running\r\n"), "{out}");
        assert!(out.ends_with("\r\nozone> "), "{out}");
        assert_eq!(out.matches(PROMPT).count(), 1);
        assert_eq!(s.commands, 1);
    }

    #[test]
    fn input_typed_ahead_runs_in_order() {
        let mut s = session();
        let mut fake = Fake::new();
        let out = type_in(&mut s, &mut fake, b"start hello\rkill hello\rbogus\r", 64);
        let started = out.find("started hello").unwrap();
        let killed = out.find("killed hello").unwrap();
        let unknown = out.find("error: unknown command `bogus`").unwrap();
        assert!(started < killed && killed < unknown, "{out}");
        assert_eq!(out.matches(PROMPT).count(), 3);
    }

    #[test]
    fn overlong_lines_and_ctrl_c_give_a_fresh_prompt() {
        let mut s = session();
        let mut fake = Fake::new();
        let mut long = alloc::vec![b'a'; MAX_LINE + 5];
        long.push(b'\r');
        let out = type_in(&mut s, &mut fake, &long, 16);
        assert!(out.contains("error: the line is too long (at most 200 characters)"), "{out}");
        assert!(out.ends_with(PROMPT));
        let out = type_in(&mut s, &mut fake, b"kill hel\x03", 4);
        assert_eq!(out, "kill hel^C\r\nozone> ");
        assert!(fake.asked.is_empty());
    }

    #[test]
    fn shutdown_flushes_then_asks_and_reports_a_failure() {
        let mut s = session();
        let mut fake = Fake::new();
        let out = type_in(&mut s, &mut fake, b"shutdown\r", 3);
        assert_eq!(fake.asked, ["shutdown"]);
        assert!(out.contains("shutting down\r\nerror: kernel operation failed"), "{out}");
        assert!(out.ends_with(PROMPT));
    }

    #[test]
    fn program_lines_go_between_the_shells_lines() {
        let mut s = session();
        let mut fake = Fake::new();
        let before = line(&mut s).len();
        // At an empty prompt: erased, the line, the prompt again.
        s.program_lines(&["[a] one".into(), "[a] two".into()]);
        let out = String::from_utf8_lossy(&line(&mut s)[before..]).into_owned();
        assert_eq!(out, "\r\x1b[K[a] one\r\n\r\x1b[K[a] two\r\nozone> ");
        // While a command is being typed: it is printed again after the prompt, and finishing it
        // runs the whole command.
        let typed = type_in(&mut s, &mut fake, b"kill he", 3);
        assert_eq!(typed, "kill he");
        let before = line(&mut s).len();
        s.program_lines(&["[b] ozone> fake".into()]);
        let out = String::from_utf8_lossy(&line(&mut s)[before..]).into_owned();
        assert_eq!(out, "\r\x1b[K[b] ozone> fake\r\nozone> kill he");
        let out = type_in(&mut s, &mut fake, b"llo\r", 1);
        assert!(out.starts_with("llo\r\nerror: busy"), "{out}");
        // Every prompt of the transcript either starts a line of its own or follows an erased one.
        let all = String::from_utf8_lossy(&line(&mut s)).into_owned();
        for l in all.split('\n') {
            let visible = l.rsplit("\x1b[K").next().unwrap_or(l);
            assert!(!visible.contains("[b]") || visible.starts_with("[b] "), "{l:?}");
        }
        // Nothing to print: nothing happens.
        let before = line(&mut s).len();
        s.program_lines(&[]);
        assert_eq!(line(&mut s).len(), before);
    }

    /// Programs waiting on the console's endpoint: each look at them records how many commands
    /// had run, and prints the next waiting line.
    struct Waiting {
        lines: Vec<String>,
        looked: Vec<u64>,
    }

    impl Clients<SimUart, Fake> for Waiting {
        fn serve_waiting(&mut self, session: &mut Session<SimUart>, _backend: &mut Fake) -> u64 {
            self.looked.push(session.commands);
            if !self.lines.is_empty() {
                let line = self.lines.remove(0);
                session.program_lines(&[line]);
            }
            0
        }
    }

    /// `console_restart`'s hang: a program's line was waiting when `ps` was typed, and the test
    /// typed `shutdown` at the next prompt; the console ran both before it looked at its endpoint
    /// again, and the system ended with the line never printed. Programs waiting are served
    /// before the input and after each command, so the line is printed before `shutdown` runs.
    #[test]
    fn waiting_programs_are_served_before_the_input_and_between_commands() {
        let mut s = session();
        let mut fake = Fake::new();
        let mut clients = Waiting { lines: vec!["[p] first".into(), "[p] second".into()], looked: Vec::new() };
        s.uart_ports().rx.extend(b"ps\rkill hello\rshutdown\r");
        s.interrupt(&mut fake, &mut clients, &mut || {});
        assert_eq!(clients.looked, [0, 1, 2, 3], "served before the input and after each command");
        let out = String::from_utf8_lossy(&line(&mut s)).into_owned();
        let at = |text: &str| out.find(text).unwrap_or_else(|| panic!("no `{text}` in {out:?}"));
        assert!(at("[p] first") < at("ps\r\n"), "{out}");
        assert!(at("ps\r\n") < at("[p] second") && at("[p] second") < at("kill hello"), "{out}");
        assert!(at("[p] second") < at("shutting down"), "{out}");
        assert_eq!(fake.asked.last().map(String::as_str), Some("shutdown"));
    }

    #[test]
    fn client_writes_and_binary_garbage() {
        let mut s = session();
        let mut fake = Fake::new();
        s.program_lines(&["[agent] hi".into()]);
        let garbage: Vec<u8> =
            (0..=255u8).filter(|b| !b"\r\n\x03\x15\x08\x7f".contains(b) && !b.is_ascii_graphic()).collect();
        let out = type_in(&mut s, &mut fake, &garbage, 7);
        assert!(String::from_utf8_lossy(&line(&mut s)).contains("[agent] hi\r\n"));
        assert!(!out.contains(PROMPT), "garbage is no line: {out:?}");
        let out = type_in(&mut s, &mut fake, b"\r", 1);
        assert!(out.ends_with(PROMPT));
    }
}
