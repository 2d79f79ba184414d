//! QEMU tests of devices in userspace: the device manager enumerates PCI and hands a driver its
//! own device; a virtio-blk driver reads and writes a disk image through it, interrupt-driven,
//! and is refused everything past its device.

use std::time::Duration;

use super::{Ctx, Expect, Failure, SHUTDOWN, TestResult, success};

const TIMEOUT: Duration = Duration::from_secs(240);

/// A fresh disk image of `bytes` in the test's scratch directory.
pub fn scratch_disk(ctx: &Ctx, name: &str, bytes: u64) -> Result<std::path::PathBuf, Failure> {
    let path = ctx.scratch.join(name);
    std::fs::create_dir_all(&ctx.scratch).map_err(|e| format!("cannot make {}: {e}", ctx.scratch.display()))?;
    let f = std::fs::File::create(&path).map_err(|e| format!("cannot make {}: {e}", path.display()))?;
    f.set_len(bytes).map_err(|e| format!("cannot size {}: {e}", path.display()))?;
    Ok(path)
}

/// Two disks: the storage server claims the first; `blk-check` claims the other, writes,
/// flushes, reads back, and every reach past its device is refused (the storage server's disk
/// among them); the device manager listed both with their interrupt lines; the bytes are on the
/// second image afterwards, at the sectors the driver wrote.
pub fn virtio_blk(ctx: &Ctx) -> TestResult {
    let store = scratch_disk(ctx, "blk-store.img", 8 << 20)?;
    let disk = scratch_disk(ctx, "blk-check.img", 8 << 20)?;
    let mut run = ctx.system_script(&["start blk-check", "@wait [studio] blk-check ", SHUTDOWN])?;
    run.disks = vec![store, disk.clone()];
    run.timeout = Some(TIMEOUT);
    let result = run.run()?;
    let present = [
        "[devices] 00:",
        " 1af4:1042 class 010000 virtio-blk GSI ",
        "[devices] blk-check claims 00:",
        "[blk-check] disk: 16384 sectors",
        "[blk-check] disk: 3 patterns written, flushed and read back",
        "[blk-check] disk: every reach past its own device refused",
        "[blk-check] PASS",
        "[studio] blk-check exited with status 0",
    ];
    let absent = ["FAIL", "cannot make the frame"];
    let expect = Expect { outcome: success(), present: &present, absent: &absent, allow_panic: false };
    let mut problems = expect.problems(&result);
    // The first pattern is on the image: sector 0, byte i is i ^ 0 ^ 0.
    match std::fs::read(&disk) {
        Ok(bytes) if bytes.len() >= 4096 && (0..4096).all(|i| bytes[i] == i as u8) => {}
        Ok(_) => problems.push("the image does not hold the pattern written at sector 0".into()),
        Err(e) => problems.push(format!("cannot read the image back: {e}")),
    }
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(result)) }) }
}

/// A free TCP port of the host's loopback address (bound and let go: free a moment later).
fn free_port() -> Result<u16, Failure> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| format!("no free port: {e}"))?.port())
}

/// Connect to `port` on the host's loopback address until the guest's echo service answers
/// (QEMU accepts at once and drops the connection while nothing listens in the guest), send
/// `data` and read it back. Gives up after `patience`.
fn echo_through(port: u16, data: &[u8], patience: Duration) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    let mut last = String::from("never tried");
    while start.elapsed() < patience {
        let attempt = (|| -> std::io::Result<Vec<u8>> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            s.write_all(data)?;
            let mut got = vec![0u8; data.len()];
            s.read_exact(&mut got)?;
            Ok(got)
        })();
        match attempt {
            Ok(got) => return Ok(got),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("no echo within {patience:?}: {last}"))
}

/// A host TCP client talks to the guest's `tcp-echo` through QEMU's user network (`--net`): the
/// network server got an address by DHCP, the device manager handed it its card, and 3000
/// bytes come back as sent.
pub fn net_host_tcp(ctx: &Ctx) -> TestResult {
    let port = free_port()?;
    let mut run = ctx.system_script(&["@wait [tcp-echo] echoed 3000 bytes", "net", SHUTDOWN])?;
    run.net = Some(crate::qemu::NetLink::User { forward: vec![(port, 7)] });
    run.timeout = Some(TIMEOUT);
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
    let sent = data.clone();
    let client = std::thread::spawn(move || echo_through(port, &sent, Duration::from_secs(200)));
    let result = run.run()?;
    let echoed = client.join().map_err(|_| "the host client panicked".to_string())?;
    let present = [
        " 1af4:1041 class 020000 virtio-net GSI ",
        "[devices] net claims 00:",
        "[net] card 52:54:00:12:34:56",
        "[net] address 10.0.2.15/24 from DHCP",
        "[tcp-echo] listening on port 7",
        "[tcp-echo] echoed 3000 bytes to 10.0.2.2:",
        // The shell's `net`.
        "eth0: mac 52:54:00:12:34:56, rx ",
        "address 10.0.2.15/24 leased from DHCP server 10.0.2.2",
        "gateway 10.0.2.2",
    ];
    let absent = ["FAIL", "panicked"];
    let expect = Expect { outcome: success(), present: &present, absent: &absent, allow_panic: false };
    let mut problems = expect.problems(&result);
    // `net` names tcp-echo's row: its listener (and the connection, if not yet closed).
    if !shell_row(&result.serial, "tcp-echo", |cols| cols.first().is_some_and(|tcp| *tcp == "1" || *tcp == "2")) {
        problems.push("`net` shows no row for tcp-echo with its listener".into());
    }
    match echoed {
        Ok(got) if got == data => {}
        Ok(_) => problems.push("the echo differs from what was sent".into()),
        Err(e) => problems.push(format!("host client: {e}")),
    }
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(result)) }) }
}

/// Whether a line of the shell's output starts with `name` and its other columns pass `check`.
fn shell_row(serial: &str, name: &str, check: impl Fn(&[&str]) -> bool) -> bool {
    serial.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(name) && check(&words.collect::<Vec<_>>())
    })
}

/// Durable storage across power-offs: three boots on one disk image, `store-check` in each. The
/// first formats the disk and writes; the second and third read back everything every earlier
/// boot wrote (values of many sizes, a transaction whole, a hash-chained log); an over-quota
/// write is refused each time and loses nothing; a blob sealed at the first boot and kept in the
/// store unseals at the others.
pub fn store_persistence(ctx: &Ctx) -> TestResult {
    let disk = scratch_disk(ctx, "store-check.img", 16 << 20)?;
    let mut problems = Vec::new();
    let mut last = None;
    for boot in 0..3u32 {
        let mut run =
            ctx.system_script(&["start store-check", "@wait [studio] store-check exited", "disk", SHUTDOWN])?;
        run.disks = vec![disk.clone()];
        run.timeout = Some(TIMEOUT);
        let result = run.run()?;
        let opened = if boot == 0 {
            "[store] formatted an empty disk".to_string()
        } else {
            "[store] opened the store at generation ".to_string()
        };
        let read_back = if boot == 0 {
            "[store-check] fresh store: wrote 6 keys and a transaction of 3".to_string()
        } else {
            format!("[store-check] boot {boot}: 6 keys, the transaction and {boot} log records read back")
        };
        let present = [
            opened.as_str(),
            read_back.as_str(),
            if boot == 0 {
                "[store-check] fresh store"
            } else {
                "[store-check] the sealed blob kept in the store unseals"
            },
            "[store-check] over quota: refused (",
            "[store-check] PASS",
            "[studio] store-check exited with status 0",
            // The shell's `disk`.
            "health: writable, nothing damaged found",
        ];
        let absent = ["FAIL", "[store] damage:", "[store] cannot"];
        let expect = Expect { outcome: success(), present: &present, absent: &absent, allow_panic: false };
        for p in expect.problems(&result) {
            problems.push(format!("boot {boot}: {p}"));
        }
        // `disk` shows store-check's namespace with its 96 KiB quota, some bytes used, and one
        // log record per boot.
        let records = (boot + 1).to_string();
        if !shell_row(&result.serial, "store-check", |c| {
            c.len() == 4 && c[0] != "0" && c[1] == "98304" && c[3] == records
        }) {
            problems
                .push(format!("boot {boot}: `disk` shows no row for store-check with its quota and {records} records"));
        }
        last = Some(result);
        if !problems.is_empty() {
            break;
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: last.map(Box::new) }) }
}

/// A small deterministic generator for the crash instants and damaged blocks (xorshift64*),
/// seeded from the clock unless `OZONE_STORE_SEED` names a seed; the seed is in every failure.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("OZONE_STORE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        Rng(seed | 1)
    }
    fn seed(&self) -> u64 {
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// `[NAME] verified counter C: N intact, M corrupt, W wrong` from a run's log, as (C, N, M, W).
fn verified(serial: &str, name: &str) -> Option<(u64, u64, u64, u64)> {
    let prefix = format!("[{name}] verified counter ");
    let line = serial.lines().find_map(|l| l.find(&prefix).map(|at| &l[at + prefix.len()..]))?;
    let numbers: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).filter_map(|w| w.parse().ok()).collect();
    match numbers[..] {
        [c, n, m, w, ..] => Some((c, n, m, w)),
        _ => None,
    }
}

/// The last `[NAME] acked I` of a run's log.
fn last_acked(serial: &str, name: &str) -> Option<u64> {
    let prefix = format!("[{name}] acked ");
    serial
        .lines()
        .filter_map(|l| l.find(&prefix).map(|at| &l[at + prefix.len()..]))
        .filter_map(|r| r.trim().parse().ok())
        .max()
}

/// Crash consistency: `store-crash` commits transactions until QEMU is killed at a random
/// instant (boot, open, mid-commit: wherever it lands), then the machine boots again on the same
/// image. At every boot the store opens, every acknowledged transaction is there, the newest
/// keys read back exactly, and no transaction is half-applied. `OZONE_STORE_KILLS` sets the
/// number of kills (5 by default; 50 or more for a long run); `OZONE_STORE_SEED` replays one.
///
/// QEMU is stopped by a signal: writes it has taken reach the image file, so this tests the
/// store's ordering from the guest's side (a commit acknowledged only after its flushes) and
/// recovery after arbitrary instants; torn and lost writes of a volatile disk cache are
/// modelled by the host tests of `ozone-store` (`CrashDisk`).
pub fn store_crash(ctx: &Ctx) -> TestResult {
    let disk = scratch_disk(ctx, "store-crash.img", 16 << 20)?;
    let kills: u32 = std::env::var("OZONE_STORE_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut rng = Rng::new();
    let seed = rng.seed();
    let mut acked = 0u64;
    let mut problems = Vec::new();
    let mut last = None;
    let mut instants = Vec::new();
    for kill in 0..=kills {
        let killing = kill < kills;
        let script: &[&str] = if killing {
            &["start store-crash"]
        } else {
            &["start store-crash", "@wait [store-crash] verified counter", SHUTDOWN]
        };
        let mut run = ctx.system_script(script)?;
        run.disks = vec![disk.clone()];
        // The machine is at the prompt well within a second (TCG) and commits for the rest: an
        // early kill lands in the boot or in the store's opening.
        let instant = Duration::from_millis(300 + rng.below(3700));
        run.timeout = Some(if killing { instant } else { TIMEOUT });
        if killing {
            instants.push(instant.as_millis());
        }
        let result = run.run()?;
        let serial = &result.serial;
        for bad in ["panicked", "[store] cannot", "the disk was sealed by another instance"] {
            if serial.contains(bad) {
                problems.push(format!("boot {kill}: the log has `{bad}`"));
            }
        }
        match verified(serial, "store-crash") {
            Some((c, _, m, w)) => {
                if c < acked {
                    problems.push(format!("boot {kill}: counter {c} but transaction {acked} was acknowledged"));
                }
                if c > acked + 1 {
                    problems.push(format!(
                        "boot {kill}: counter {c} but only {acked} acknowledged (at most one more may land)"
                    ));
                }
                if m != 0 || w != 0 {
                    problems.push(format!("boot {kill}: after a crash {m} keys damaged, {w} wrong"));
                }
                acked = acked.max(c);
            }
            None if !killing => problems.push("the last boot did not verify the store".into()),
            None => {}
        }
        if let Some(a) = last_acked(serial, "store-crash") {
            acked = acked.max(a);
        }
        if !killing && !matches!(result.outcome, crate::qemu::Outcome::PowerOff | crate::qemu::Outcome::Exit(_)) {
            problems.push(format!("the last boot ended {:?}", result.outcome));
        }
        last = Some(result);
        if !problems.is_empty() {
            break;
        }
    }
    if problems.is_empty() && acked == 0 {
        problems.push("no transaction was acknowledged in any run: the kills came too early".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.push(format!("seed {seed} (OZONE_STORE_SEED), kills at {instants:?} ms"));
        Err(Failure { reason: problems.join("; "), run: last.map(Box::new) })
    }
}

/// Damage: `store-damage` writes 24 transactions; then copies of the image get one bit flipped
/// in one random used block each (past the superblocks; most used blocks are older copies the
/// store no longer reaches, so this mostly checks that stale damage costs nothing), one copy in
/// every other used block (sure to hit live values and metadata), and one in every used block. Each boots: the store never crashes; what reads back is exactly what was written
/// or refused as damaged (`Corrupt`), never different; one damaged block loses at most one key
/// (metadata is mirrored); with many damaged, some damage is reported, by the store at start-up
/// or as `Corrupt` for the keys it hit; with everything damaged, the store says so.
pub fn store_damage(ctx: &Ctx) -> TestResult {
    const BLOCK: usize = 4096;
    let base = scratch_disk(ctx, "store-damage.img", 16 << 20)?;
    let boot = |image: &std::path::Path| -> Result<crate::qemu::RunResult, Failure> {
        let mut run = ctx.system_script(&["start store-damage", "@wait [studio] store-damage exited", SHUTDOWN])?;
        run.disks = vec![image.to_path_buf()];
        run.timeout = Some(TIMEOUT);
        Ok(run.run()?)
    };
    let first = boot(&base)?;
    let present = [
        "[store] formatted an empty disk",
        "[store-damage] verified counter 0: 0 intact, 0 corrupt, 0 wrong",
        "[store-damage] acked 24",
        "[store-damage] done",
    ];
    let expect = Expect { outcome: success(), present: &present, absent: &["panicked"], allow_panic: false };
    let problems = expect.problems(&first);
    if !problems.is_empty() {
        return Err(Failure { reason: problems.join("; "), run: Some(Box::new(first)) });
    }
    let image = std::fs::read(&base).map_err(|e| format!("cannot read {}: {e}", base.display()))?;
    let used: Vec<usize> =
        (2..image.len() / BLOCK).filter(|&b| image[b * BLOCK..(b + 1) * BLOCK].iter().any(|&x| x != 0)).collect();
    if used.len() < 10 {
        return Err(format!("only {} blocks of the image are in use after 24 transactions", used.len()).into());
    }
    let mut rng = Rng::new();
    let seed = rng.seed();
    let mut trials: Vec<(String, Vec<usize>)> = (0..3)
        .map(|_| {
            let b = used[rng.below(used.len() as u64) as usize];
            (format!("block {b}"), vec![b])
        })
        .collect();
    let half: Vec<usize> = used.iter().copied().step_by(2).collect();
    trials.push((format!("every other used block ({})", half.len()), half));
    trials.push((format!("all {} used blocks", used.len()), used.clone()));
    let mut problems = Vec::new();
    for (what, blocks) in &trials {
        let mut damaged = image.clone();
        for &b in blocks {
            let bit = rng.below((BLOCK * 8) as u64) as usize;
            damaged[b * BLOCK + bit / 8] ^= 1 << (bit % 8);
        }
        let copy = ctx.scratch.join("store-damaged.img");
        std::fs::write(&copy, &damaged).map_err(|e| format!("cannot write {}: {e}", copy.display()))?;
        let result = boot(&copy)?;
        let serial = &result.serial;
        let mut trial = Vec::new();
        if serial.contains("panicked") {
            trial.push("a panic".to_string());
        }
        if !result.outcome.is_clean() {
            trial.push(format!("the machine ended {:?}", result.outcome));
        }
        let reported = serial.contains("[store] damage:") || serial.contains("[store] cannot open the store");
        match verified(serial, "store-damage") {
            Some((c, n, m, w)) => {
                if w != 0 {
                    trial.push(format!("{w} keys read back wrong"));
                }
                if blocks.len() == 1 && (c != 24 || m > 1 || n + m != 8) {
                    trial.push(format!(
                        "one damaged block: counter {c}, {n} intact, {m} corrupt (expected 24, and at most one lost)"
                    ));
                }
                if blocks.len() > 1 && !reported && m == 0 {
                    trial.push("every block damaged, and nothing reported".into());
                }
            }
            None if reported || serial.contains("[store-damage] no store") => {}
            None => trial.push("store-damage did not verify and the store reported nothing".into()),
        }
        if !trial.is_empty() {
            problems.push(format!("{what}: {}", trial.join(", ")));
            return Err(Failure {
                reason: format!("{}; seed {seed} (OZONE_STORE_SEED)", problems.join("; ")),
                run: Some(Box::new(result)),
            });
        }
    }
    Ok(())
}

/// Two instances joined by a QEMU socket network (`--peer`): neither has DHCP, so each takes its
/// static address (10.0.3.1 and 10.0.3.2). On the second, `net-check` is refused everything past
/// its rules (another port, another network, a listener, a datagram), then talks to `tcp-echo`
/// on the first; `net-nogrant`, without `net`, is refused the interface.
pub fn net_peers(ctx: &Ctx) -> TestResult {
    let port = free_port()?;
    let link = |listen: bool, mac: &str| crate::qemu::NetLink::Peer { listen, port, mac: mac.into() };
    let mut first = ctx.system_script(&["@wait [tcp-echo] echoed 2000 bytes", SHUTDOWN])?;
    first.net = Some(link(true, "52:54:00:0f:00:01"));
    first.timeout = Some(TIMEOUT);
    let mut second = ctx.system_script(&[
        "start net-nogrant",
        "@wait [studio] net-nogrant exited",
        "start net-check",
        "@wait [studio] net-check exited",
        SHUTDOWN,
    ])?;
    second.net = Some(link(false, "52:54:00:0f:00:02"));
    second.timeout = Some(TIMEOUT);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(move || first.run());
        // The listening side must be up before the other connects to it.
        std::thread::sleep(Duration::from_millis(1500));
        let b = second.run();
        (a.join(), b)
    });
    let a = a.map_err(|_| "the first instance's runner panicked".to_string())??;
    let b = b?;
    let first_present = [
        "[net] card 52:54:00:0f:00:01",
        "[net] no DHCP server: address 10.0.3.1/24",
        "[tcp-echo] echoed 2000 bytes to 10.0.3.2:",
    ];
    let second_present = [
        "[net] no DHCP server: address 10.0.3.2/24",
        "[net-nogrant] without the grant: refused (",
        "[net-check] refused: connect to port 8 of the peer",
        "[net-check] refused: connect to 10.0.4.1:7",
        "[net-check] refused: listen on port 80",
        "[net-check] refused: a datagram to port 9 of the peer",
        "[net-check] connected from 10.0.3.2:",
        "[net-check] the peer echoed 2000 bytes",
        "[net-check] PASS",
        "[studio] net-check exited with status 0",
    ];
    let absent = ["FAIL", "panicked"];
    let mut problems = Vec::new();
    let first_expect = Expect { outcome: success(), present: &first_present, absent: &absent, allow_panic: false };
    problems.extend(first_expect.problems(&a).into_iter().map(|p| format!("first instance: {p}")));
    let second_expect = Expect { outcome: success(), present: &second_present, absent: &absent, allow_panic: false };
    problems.extend(second_expect.problems(&b).into_iter().map(|p| format!("second instance: {p}")));
    if problems.is_empty() {
        Ok(())
    } else {
        let run = if second_expect.problems(&b).is_empty() { a } else { b };
        Err(Failure { reason: problems.join("; "), run: Some(Box::new(run)) })
    }
}

/// Studio's decisions and the shaper's learned profiles survive power-offs: the journal keeps
/// them in the store. Three boots on one disk; in each, once the journal has kept something
/// (`loglevel journal debug` shows its appends), the machine powers off. Each later boot counts
/// itself, finds more records than the boot before, and shows the last decision kept: one the
/// boot before logged.
///
/// Profiles: in boot 1 `shaper-victim` warms up and is enforced, and the journal keeps its
/// profile. In boots 2 and 3 the journal hands it back before the victim starts; started, the
/// victim is enforced from its first request, with the kernel operations boot 1 learned (its
/// never-used `echo` REVERSE and NBRecv denied at once), and never warms up again.
pub fn journal_persistence(ctx: &Ctx) -> TestResult {
    let disk = scratch_disk(ctx, "journal.img", 16 << 20)?;
    let mut problems = Vec::new();
    let mut last = None;
    let mut kept_before = 0u64;
    let mut previous_serial = String::new();
    let mut learned = None;
    for boot in 1..=3u64 {
        let script: &[&str] = if boot == 1 {
            &[
                "loglevel journal debug",
                "start shaper-victim",
                "@wait [shaper-victim] enforced after",
                "@wait [journal] debug: keeps the syscall profile of shaper-victim",
                "@wait [journal] debug: kept decisions up to",
                "reports 256",
                SHUTDOWN,
            ]
        } else {
            &[
                "loglevel journal debug",
                "start shaper-victim",
                "@wait [shaper-victim] after the attack",
                // Its end, not its last line: `reports` and the shutdown would race its exit.
                "@wait [studio] shaper-victim exited",
                "@wait [journal] debug: kept decisions up to",
                "reports 256",
                SHUTDOWN,
            ]
        };
        let mut run = ctx.system_script(script)?;
        run.disks = vec![disk.clone()];
        run.timeout = Some(TIMEOUT);
        let result = run.run()?;
        let serial = result.serial.clone();
        let counted = format!("[journal] boot {boot}: ");
        let expect = Expect {
            outcome: success(),
            present: &[counted.as_str()],
            absent: &[
                "panicked",
                "[journal] cannot",
                "[shaper-victim] FAIL",
                "the kept syscall profile of shaper-victim is not restored",
            ],
            allow_panic: false,
        };
        problems.extend(expect.problems(&result).into_iter().map(|p| format!("boot {boot}: {p}")));
        let kept = serial.lines().find_map(|l| {
            let rest = &l[l.find(&counted)? + counted.len()..];
            rest.split(' ').next()?.parse::<u64>().ok()
        });
        match kept {
            Some(k) if boot == 1 && k == 0 => {}
            Some(k) if boot > 1 && k > kept_before => {
                // The last decision kept: `BOOT SEQ TEXT` of the boot before, which logged TEXT.
                let prefix = "[journal] the last kept: ";
                let line = serial.lines().find_map(|l| l.find(prefix).map(|at| l[at + prefix.len()..].to_string()));
                match line.as_deref().map(|l| l.splitn(3, ' ').collect::<Vec<_>>()) {
                    Some(parts) if parts.len() == 3 && parts[0] == (boot - 1).to_string() => {
                        if !previous_serial.contains(&format!("[studio] {}", parts[2].trim_end())) {
                            problems.push(format!(
                                "boot {boot}: the last kept decision `{}` is not in the log of boot {}",
                                parts[2],
                                boot - 1
                            ));
                        }
                    }
                    other => problems.push(format!(
                        "boot {boot}: the last kept decision is {other:?}, not one of boot {}",
                        boot - 1
                    )),
                }
            }
            other => problems.push(format!("boot {boot}: {other:?} records kept (boot before: {kept_before})")),
        }
        problems
            .extend(profile_across_boots(boot, &serial, &mut learned).into_iter().map(|p| format!("boot {boot}: {p}")));
        kept_before = kept.unwrap_or(0);
        previous_serial = serial;
        last = Some(result);
        if !problems.is_empty() {
            break;
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: last.map(Box::new) }) }
}

/// What is wrong with `shaper-victim`'s profile in boot `boot`'s log: boot 1 learns it (its
/// kernel operations go to `learned`), later boots apply the kept one, with the same operations.
fn profile_across_boots(boot: u64, serial: &str, learned: &mut Option<String>) -> Vec<String> {
    let kernel_of = |prefix: &str| {
        serial.lines().find_map(|l| {
            let rest = &l[l.find(prefix)? + prefix.len()..];
            let ops = &rest[rest.find("kernel ")? + "kernel ".len()..];
            Some(ops.split(';').next().unwrap_or("").trim().to_string())
        })
    };
    // The shaper's reports, as the shell's `reports` shows them.
    let warmed = kernel_of("[shaper] shaper: enforce shaper-victim's profile (warm-up over");
    let applied = kernel_of("[shaper] shaper: shaper-victim's profile kept by an earlier boot applies:");
    let mut problems = Vec::new();
    if boot == 1 {
        match warmed {
            Some(ops) => *learned = Some(ops),
            None => problems.push("shaper-victim's warm-up did not end in an enforced profile".to_string()),
        }
        return problems;
    }
    if warmed.is_some() {
        problems.push("shaper-victim warmed up again: the kept profile was not applied".to_string());
    }
    match (applied, learned.as_ref()) {
        (Some(ops), Some(l)) if &ops == l => {}
        (applied, l) => problems.push(format!("the kept profile applied: kernel {applied:?}, boot 1 learned {l:?}")),
    }
    for expected in [
        "[journal] syscall profiles kept by earlier boots: ",
        "[shaper-victim] after the attack: still enforcing; echo REVERSE and nb-recv denied",
        "[studio] shaper-victim exited with status 0",
    ] {
        if !serial.contains(expected) {
            problems.push(format!("missing `{expected}`"));
        }
    }
    problems
}

/// The shell's `disk` and `net`, typed at the first prompt, while the store and the network
/// server are still starting: the console waits for their answers, and they, starting, print
/// lines. Were their lines Calls to the console (which waits for them), neither could go on and
/// the machine would never power off; they go one way (`log::set_nonblocking`), so both
/// commands answer and `shutdown` powers off. Three boots, on a fresh disk and then on the
/// formatted one.
pub fn shell_devices_at_boot(ctx: &Ctx) -> TestResult {
    let disk = scratch_disk(ctx, "early.img", 16 << 20)?;
    for boot in 1..=3 {
        let mut run = ctx.plain_system_script(&["disk", "net", SHUTDOWN])?;
        run.disks = vec![disk.clone()];
        run.net = Some(crate::qemu::NetLink::User { forward: Vec::new() });
        run.timeout = Some(TIMEOUT);
        let result = run.run()?;
        let present =
            ["PROGRAM                    USED B   QUOTA B   KEYS  RECORDS", "eth0: mac 52:54:00:12:34:56, rx "];
        let expect = Expect { outcome: success(), present: &present, absent: &["panicked"], allow_panic: false };
        let problems = expect.problems(&result);
        if !problems.is_empty() {
            return Err(Failure {
                reason: format!("boot {boot}: {}", problems.join("; ")),
                run: Some(Box::new(result)),
            });
        }
    }
    Ok(())
}
