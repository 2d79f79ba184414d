//! Hostile tests of the store: power cuts at random writes, damaged and garbage images, a full
//! disk, quotas, wrong secrets, and the uniqueness of every (key, nonce) sealed with.

use std::collections::BTreeMap;

use crate::block::{BLOCK, BlockDevice, CrashDisk, MemDisk, Rng};
use crate::crypto::record;
use crate::store::{Damage, Error, MAX_VALUE, Op, Store};

const SECRET: [u8; 32] = [7; 32];

fn salt(n: u64) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}

fn value(rng: &mut Rng, max: usize) -> Vec<u8> {
    let n = rng.below(max as u64 + 1) as usize;
    let b = rng.next_u64() as u8;
    (0..n).map(|i| b.wrapping_add(i as u8)).collect()
}

#[test]
fn put_get_delete_list_commit() {
    let mut s = Store::format(MemDisk::new(256), &SECRET, salt(1)).unwrap();
    s.put("app", b"a", b"one").unwrap();
    s.put("app", b"b", &[9; 10_000]).unwrap();
    s.put("other", b"a", b"theirs").unwrap();
    assert_eq!(s.get("app", b"a").unwrap(), b"one");
    assert_eq!(s.get("app", b"b").unwrap(), vec![9; 10_000]);
    assert_eq!(s.get("other", b"a").unwrap(), b"theirs");
    assert_eq!(s.get("app", b"c"), Err(Error::NotFound));
    assert_eq!(s.get("nobody", b"a"), Err(Error::NotFound));
    s.put("app", b"", b"x").expect_err("empty key");
    assert_eq!(s.put("app", &[1; 65], b"x"), Err(Error::TooLarge));
    assert_eq!(s.put(&"n".repeat(33), b"k", b"x"), Err(Error::TooLarge));
    assert_eq!(s.put("app", b"k", &vec![0; MAX_VALUE + 1]), Err(Error::TooLarge));
    s.put("app", b"max", &vec![3; MAX_VALUE]).unwrap();
    s.put("app", b"empty", b"").unwrap();
    assert_eq!(s.get("app", b"empty").unwrap(), b"");
    let keys: Vec<Vec<u8>> = s.list("app", None, 10).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"empty".to_vec(), b"max".to_vec()]);
    let after: Vec<Vec<u8>> = s.list("app", Some(b"b"), 1).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(after, [b"empty".to_vec()]);
    // A commit is all or nothing: a delete of a missing key refuses the whole commit.
    let ops = [Op::Put { key: b"x".to_vec(), value: b"1".to_vec() }, Op::Delete { key: b"zz".to_vec() }];
    assert_eq!(s.commit("app", &ops), Err(Error::NotFound));
    assert_eq!(s.get("app", b"x"), Err(Error::NotFound));
    let ops = [
        Op::Put { key: b"x".to_vec(), value: b"1".to_vec() },
        Op::Delete { key: b"a".to_vec() },
        Op::Put { key: b"x".to_vec(), value: b"2".to_vec() },
        Op::Delete { key: b"x".to_vec() },
        Op::Put { key: b"y".to_vec(), value: b"3".to_vec() },
    ];
    s.commit("app", &ops).unwrap();
    assert_eq!(s.get("app", b"a"), Err(Error::NotFound));
    assert_eq!(s.get("app", b"x"), Err(Error::NotFound));
    assert_eq!(s.get("app", b"y").unwrap(), b"3");
    assert_eq!(s.delete("app", b"a"), Err(Error::NotFound));
    // Everything is still there after a reopen.
    let dev = s.into_device();
    let (mut s, rec) = Store::open(dev, &SECRET, salt(2)).unwrap();
    assert!(rec.dropped.is_empty(), "{rec:?}");
    assert_eq!(s.get("app", b"b").unwrap(), vec![9; 10_000]);
    assert_eq!(s.get("app", b"max").unwrap(), vec![3; MAX_VALUE]);
    assert_eq!(s.get("other", b"a").unwrap(), b"theirs");
    assert_eq!(s.usage("app").keys, 4);
    assert_eq!(s.usage_all().len(), 2);
    assert!(s.scrub().unwrap().damaged.is_empty());
}

#[test]
fn logs_are_hash_chained() {
    let mut s = Store::format(MemDisk::new(256), &SECRET, salt(1)).unwrap();
    for i in 0..10u64 {
        assert_eq!(s.log_append("studio", b"decisions", format!("record {i}").as_bytes()).unwrap(), i);
    }
    assert_eq!(s.log_append("studio", b"other", b"x").unwrap(), 0);
    let all = s.log_read("studio", b"decisions", 0, 100).unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(all[3], (3, b"record 3".to_vec()));
    let part = s.log_read("studio", b"decisions", 7, 2).unwrap();
    assert_eq!(part.iter().map(|r| r.0).collect::<Vec<_>>(), [7, 8]);
    assert_eq!(s.log_read("studio", b"decisions", 10, 5).unwrap(), []);
    assert_eq!(s.log_read("studio", b"decisions", 11, 5), Err(Error::NotFound));
    assert_eq!(s.log_read("studio", b"none", 0, 5), Err(Error::NotFound));
    // A record replaced by another (sealed correctly, chain not fixed) is the first broken link.
    s.forge_record("studio", b"decisions", 4, b"rewritten").unwrap();
    assert_eq!(s.log_read("studio", b"decisions", 0, 100), Err(Error::BrokenChain { seq: 4 }));
    assert_eq!(s.log_read("studio", b"decisions", 5, 100).unwrap().len(), 5);
    let dev = s.into_device();
    let (mut s, _) = Store::open(dev, &SECRET, salt(2)).unwrap();
    assert_eq!(s.log_read("studio", b"decisions", 2, 100), Err(Error::BrokenChain { seq: 4 }));
    let lost = Damage::Record { ns: "studio".into(), log: b"decisions".to_vec(), seq: 4 };
    assert_eq!(s.scrub().unwrap().damaged, [lost], "the broken link is reported");
}

#[test]
fn wrong_secret_blank_and_tiny_devices() {
    let s = Store::format(MemDisk::new(64), &SECRET, salt(1)).unwrap();
    let dev = s.into_device();
    assert!(matches!(Store::open(dev.clone(), &[8; 32], salt(2)), Err(Error::WrongKey)));
    assert!(matches!(Store::open(MemDisk::new(64), &SECRET, salt(2)), Err(Error::NotFormatted)));
    assert!(matches!(Store::open(MemDisk::new(0), &SECRET, salt(2)), Err(Error::NotFormatted)));
    assert!(matches!(Store::format(MemDisk::new(3), &SECRET, salt(2)), Err(Error::DiskFull)));
    assert!(Store::open(dev, &SECRET, salt(3)).is_ok());
}

/// A writer's model of what it was told is durable, and the operation in flight.
#[derive(Clone, Default)]
struct Model {
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    log: Vec<Vec<u8>>,
}

fn state_of<D: BlockDevice>(s: &mut Store<D>) -> Model {
    let mut m = Model::default();
    for (k, _) in s.list("w", None, usize::MAX).unwrap() {
        m.kv.insert(k.clone(), s.get("w", &k).unwrap());
    }
    let n = s.log_len("w", b"log");
    if n > 0 {
        m.log = s.log_read("w", b"log", 0, n as usize).unwrap().into_iter().map(|r| r.1).collect();
    }
    m
}

fn same(a: &Model, b: &Model) -> bool {
    a.kv == b.kv && a.log == b.log
}

/// One crash run: write, cut the power at a random write, reopen and check, several times.
fn crash_run(seed: u64, stats: &mut [u64; 5]) {
    let mut rng = Rng::new(seed);
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[8] = 0xa5;
    // Small disks fill up: a full disk in the middle of the runs is part of the test.
    let blocks = 40 + rng.below(216);
    let mut disk = CrashDisk::new(blocks, seed ^ 0x5555);
    // Half the runs use one salt for every open: the counters alone must keep nonces apart.
    let fixed_salt = rng.below(2) == 0;
    let mut opens = 0u64;
    let mut next_salt = || {
        opens += 1;
        if fixed_salt { salt(0) } else { salt(seed * 1000 + opens) }
    };
    let mut acked = Model::default();
    {
        let s = Store::format(&mut disk, &secret, next_salt()).unwrap();
        drop(s);
    }
    for _round in 0..3 {
        // Sometimes the power goes during the open itself (its nonce reservation).
        if rng.below(4) == 0 {
            let at = disk.requests() + rng.below(2);
            disk.cut_at(at);
            match Store::open(&mut disk, &secret, next_salt()) {
                Ok((s, _)) => drop(s),
                Err(Error::Io(_)) => stats[3] += 1,
                Err(e) => panic!("seed {seed}: {e:?}"),
            }
            disk.cut_power();
            disk.reboot();
        }
        let (mut s, _rec) = Store::open(&mut disk, &secret, next_salt()).unwrap();
        assert!(same(&state_of(&mut s), &acked), "seed {seed}: the state after open is what was acknowledged");
        let cut_after = rng.below(120);
        let mut s_dev_writes = 0;
        let mut in_flight: Option<Model> = None;
        for _ in 0..60 {
            let mut next = acked.clone();
            let key = |rng: &mut Rng| format!("k{}", rng.below(12)).into_bytes();
            let r = match rng.below(10) {
                0..=3 => {
                    let k = key(&mut rng);
                    let v = value(&mut rng, 9000);
                    next.kv.insert(k.clone(), v.clone());
                    s.put("w", &k, &v)
                }
                4 | 5 => {
                    let k = key(&mut rng);
                    if next.kv.remove(&k).is_none() {
                        assert_eq!(s.delete("w", &k), Err(Error::NotFound));
                        continue;
                    }
                    s.delete("w", &k)
                }
                6..=8 => {
                    let mut ops = Vec::new();
                    for _ in 0..1 + rng.below(5) {
                        let k = key(&mut rng);
                        if rng.below(3) == 0 && next.kv.contains_key(&k) {
                            next.kv.remove(&k);
                            ops.push(Op::Delete { key: k });
                        } else {
                            let v = value(&mut rng, 5000);
                            next.kv.insert(k.clone(), v.clone());
                            ops.push(Op::Put { key: k, value: v });
                        }
                    }
                    s.commit("w", &ops)
                }
                _ => {
                    let rec = value(&mut rng, 300);
                    next.log.push(rec.clone());
                    s.log_append("w", b"log", &rec).map(|_| ())
                }
            };
            s_dev_writes += 1;
            match r {
                Ok(()) => acked = next,
                Err(Error::DiskFull) => stats[4] += 1,
                Err(Error::Io(_)) => {
                    in_flight = Some(next);
                    break;
                }
                Err(e) => panic!("seed {seed}: unexpected {e:?}"),
            }
            if s_dev_writes == cut_after % 60 {
                // Power goes at one of the next writes.
                let at = s.device_mut().requests() + rng.below(40);
                s.device_mut().cut_at(at);
            }
        }
        drop(s);
        disk.cut_power();
        disk.reboot();
        stats[0] += 1;
        let (mut s, rec) = Store::open(&mut disk, &secret, next_salt()).unwrap();
        assert!(rec.dropped.is_empty(), "seed {seed}: a power cut loses nothing: {rec:?}");
        let got = state_of(&mut s);
        let ok = same(&got, &acked) || in_flight.as_ref().is_some_and(|n| same(&got, n));
        if let Some(n) = &in_flight {
            stats[1] += 1;
            if same(&got, n) && !same(n, &acked) {
                stats[2] += 1;
            }
        }
        assert!(ok, "seed {seed}: after the cut the store holds the acknowledged state (or the one in flight)");
        acked = got;
        assert!(s.scrub().unwrap().damaged.is_empty(), "seed {seed}");
    }
}

#[test]
fn crash_runs() {
    let runs: u64 = std::env::var("OZONE_STORE_CRASH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    // Power cuts; cuts in the middle of an operation; of those, operations found applied.
    // ... opens cut short; writes refused for a full disk.
    let mut stats = [0u64; 5];
    for seed in 0..runs {
        crash_run(seed, &mut stats);
    }
    let (seals, pairs) = record::counts();
    println!(
        "crash runs: {runs}, power cuts: {}, during an operation: {}, of which applied: {}, during an open: {}; \
         refused for a full disk: {}; seals: {seals}, distinct (key, nonce) pairs: {pairs}",
        stats[0], stats[1], stats[2], stats[3], stats[4]
    );
    assert_eq!(stats[0], 3 * runs);
    assert!(runs < 200 || (stats[1] > runs && stats[2] > 0 && stats[3] > 0 && stats[4] > 0), "every case was hit");
}

#[test]
fn bit_flips_lose_only_the_damaged_objects() {
    for seed in 0..40u64 {
        let mut rng = Rng::new(seed);
        let mut s = Store::format(MemDisk::new(256), &SECRET, salt(seed)).unwrap();
        let mut want = BTreeMap::new();
        for i in 0..30 {
            let k = format!("key{i}").into_bytes();
            let v = value(&mut rng, 6000);
            s.put("ns", &k, &v).unwrap();
            want.insert(k, v);
        }
        for i in 0..5 {
            s.log_append("ns", b"log", format!("r{i}").as_bytes()).unwrap();
        }
        let mut dev = s.into_device();
        // Flip bits in a few random blocks (not the superblocks: those are the next test's).
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            let lba = 2 + rng.below(254);
            let bit = rng.below((BLOCK * 8) as u64) as usize;
            dev.image_mut()[lba as usize * BLOCK + bit / 8] ^= 1 << (bit % 8);
        }
        let (mut s, rec) = match Store::open(dev, &SECRET, salt(seed + 100)) {
            Ok(x) => x,
            Err(e) => panic!("seed {seed}: mirrored metadata survives {flips} flips: {e:?}"),
        };
        assert!(rec.dropped.is_empty(), "seed {seed}: {rec:?}");
        let scrub = s.scrub().unwrap();
        for (k, v) in &want {
            match s.get("ns", k) {
                Ok(got) => assert_eq!(&got, v, "seed {seed}: never wrong data"),
                Err(Error::Corrupt(Damage::Value { ns, key })) => {
                    assert_eq!((ns.as_str(), &key), ("ns", k));
                    assert!(scrub.damaged.contains(&Damage::Value { ns, key }));
                }
                Err(e) => panic!("seed {seed}: {e:?}"),
            }
        }
        // The damaged can be deleted and the store goes on.
        for d in scrub.damaged {
            if let Damage::Value { ns, key } = d {
                s.delete(&ns, &key).unwrap();
            }
        }
        s.put("ns", b"after", b"fine").unwrap();
        assert_eq!(s.get("ns", b"after").unwrap(), b"fine");
    }
}

#[test]
fn a_damaged_value_is_named_and_a_moved_block_is_refused() {
    let mut s = Store::format(MemDisk::new(128), &SECRET, salt(1)).unwrap();
    s.put("ns", b"a", &[1; 1000]).unwrap();
    s.put("ns", b"b", &[2; 1000]).unwrap();
    s.put("ns", b"c", &[3; 1000]).unwrap();
    let a = s.value_blocks("ns", b"a")[0] as usize;
    let b = s.value_blocks("ns", b"b")[0] as usize;
    // Copy b's block over a's: a well-formed block, in the wrong place.
    let img = s.device_mut().image_mut();
    let copy = img[b * BLOCK..(b + 1) * BLOCK].to_vec();
    img[a * BLOCK..(a + 1) * BLOCK].copy_from_slice(&copy);
    assert_eq!(s.get("ns", b"a"), Err(Error::Corrupt(Damage::Value { ns: "ns".into(), key: b"a".to_vec() })));
    assert_eq!(s.get("ns", b"b").unwrap(), [2; 1000]);
    // An old version of a value at the same place is refused too: c rewritten, its new block
    // replaced by the old one's bytes written where the new one is.
    let c_old = s.value_blocks("ns", b"c")[0] as usize;
    let old = s.device_mut().image()[c_old * BLOCK..(c_old + 1) * BLOCK].to_vec();
    s.put("ns", b"c", &[4; 1000]).unwrap();
    let c_new = s.value_blocks("ns", b"c")[0] as usize;
    s.device_mut().image_mut()[c_new * BLOCK..(c_new + 1) * BLOCK].copy_from_slice(&old);
    assert!(matches!(s.get("ns", b"c"), Err(Error::Corrupt(_))));
    let h = s.scrub().unwrap();
    assert_eq!(h.damaged.len(), 2, "{:?}", h.damaged);
}

#[test]
fn damaged_superblocks_and_metadata() {
    let mut s = Store::format(MemDisk::new(128), &SECRET, salt(1)).unwrap();
    s.put("ns", b"k", b"v1").unwrap();
    s.put("ns", b"k", b"v2").unwrap();
    let dev = s.into_device();
    // The newest superblock damaged: the store opens at the one before (and says so).
    for slot in 0..2 {
        let mut d = dev.clone();
        d.image_mut()[slot * BLOCK + 100] ^= 1;
        let (mut s, rec) = Store::open(d, &SECRET, salt(10 + slot as u64)).unwrap();
        assert!(rec.damaged.contains(&Damage::Superblock { slot: slot as u8 }));
        let v = s.get("ns", b"k").unwrap();
        assert!(v == b"v2" || v == b"v1");
    }
    // Both: a clear error.
    let mut d = dev.clone();
    d.image_mut()[100] ^= 1;
    d.image_mut()[BLOCK + 100] ^= 1;
    assert!(matches!(Store::open(d, &SECRET, salt(2)), Err(Error::Corrupt(Damage::Superblock { .. }))));
    // Every metadata block damaged in one mirror only: nothing lost.
    let (mut s, _) = Store::open(dev.clone(), &SECRET, salt(3)).unwrap();
    s.put("ns", b"k2", b"x").unwrap();
    let mut d = s.into_device();
    let mut wiped = 0;
    for lba in 2..128 {
        let mut probe = d.clone();
        probe.image_mut()[lba * BLOCK..(lba + 1) * BLOCK].fill(0);
        if let Ok((mut p, _)) = Store::open(probe, &SECRET, salt(1000 + lba as u64))
            && p.get("ns", b"k").is_ok()
            && p.get("ns", b"k2").is_ok()
        {
            continue;
        }
        // A block whose loss alone matters is a value block or a superblock: never metadata.
        wiped += 1;
        let _ = &mut d;
    }
    assert!(wiped <= 2, "only the two value blocks matter alone: {wiped}");
}

#[test]
fn garbage_and_truncated_images_never_panic() {
    let mut rng = Rng::new(99);
    for i in 0..200 {
        let n = rng.below(40) as usize;
        let mut img: Vec<u8> = (0..n * BLOCK).map(|_| rng.next_u64() as u8).collect();
        if i % 2 == 0 && n >= 2 {
            img[..8].copy_from_slice(b"OZSTORE\0");
            img[BLOCK..BLOCK + 8].copy_from_slice(b"OZSTORE\0");
        }
        assert!(Store::open(MemDisk::from_image(img), &SECRET, salt(1)).is_err());
    }
    let mut s = Store::format(MemDisk::new(200), &SECRET, salt(1)).unwrap();
    for i in 0..40 {
        s.put("ns", format!("k{i}").as_bytes(), &[i as u8; 5000]).unwrap();
    }
    let img = s.into_device().image().to_vec();
    for n in 0..200 {
        let t = MemDisk::from_image(img[..n * BLOCK].to_vec());
        match Store::open(t, &SECRET, salt(2000 + n as u64)) {
            Ok(_) => panic!("a store on a device shorter than it was formatted on must not open"),
            Err(Error::Corrupt(Damage::Device { formatted: 200, present })) => assert_eq!(present, n as u64),
            Err(Error::NotFormatted) => assert!(n < 2),
            Err(e) => panic!("{n}: {e:?}"),
        }
    }
    // Random bit flips anywhere, superblocks included: open and reads never panic.
    for seed in 0..100 {
        let mut rng = Rng::new(seed);
        let mut d = MemDisk::from_image(img.clone());
        for _ in 0..1 + rng.below(20) {
            let at = rng.below(img.len() as u64) as usize;
            d.image_mut()[at] ^= 1 << rng.below(8);
        }
        // Every open of a copy is a rollback: each needs a salt of its own.
        if let Ok((mut s, _)) = Store::open(d, &SECRET, salt(3000 + seed)) {
            for i in 0..40 {
                if let Ok(v) = s.get("ns", format!("k{i}").as_bytes()) {
                    assert_eq!(v, [i as u8; 5000]);
                }
            }
            let _ = s.scrub();
        }
    }
}

#[test]
fn a_full_disk_refuses_and_loses_nothing_then_deletes_make_room() {
    let mut s = Store::format(MemDisk::new(64), &SECRET, salt(1)).unwrap();
    let mut stored = Vec::new();
    let mut full = false;
    for i in 0..100 {
        let k = format!("k{i}").into_bytes();
        match s.put("ns", &k, &[i as u8; 8000]) {
            Ok(()) => stored.push(k),
            Err(Error::DiskFull) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(full && !stored.is_empty());
    assert_eq!(s.log_append("ns", b"log", &[0; 9000]), Err(Error::DiskFull));
    for (i, k) in stored.iter().enumerate() {
        assert_eq!(s.get("ns", k).unwrap(), [i as u8; 8000]);
    }
    // Deletes always pass on a full disk, and give the room back.
    for k in &stored {
        s.delete("ns", k).unwrap();
    }
    for i in 0..stored.len() {
        s.put("ns", format!("k{i}").as_bytes(), &[1; 8000]).unwrap();
    }
    let dev = s.into_device();
    let (s, _) = Store::open(dev, &SECRET, salt(2)).unwrap();
    assert_eq!(s.usage("ns").keys, stored.len() as u64);
}

#[test]
fn quotas_refuse_growth_and_lose_nothing() {
    let mut s = Store::format(MemDisk::new(256), &SECRET, salt(1)).unwrap();
    s.set_quota("ns", Some(4 * BLOCK as u64));
    s.put("ns", b"a", &[1; 4000]).unwrap();
    s.put("ns", b"b", &[2; 8000]).unwrap();
    assert_eq!(s.usage("ns").bytes, 3 * BLOCK as u64);
    assert_eq!(
        s.put("ns", b"c", &[3; 5000]),
        Err(Error::QuotaExceeded { used: 5 * BLOCK as u64, quota: 4 * BLOCK as u64 })
    );
    assert!(matches!(s.log_append("ns", b"l", &[0; 5000]), Err(Error::QuotaExceeded { .. })));
    // Replacing within the quota passes; other namespaces are not charged.
    s.put("ns", b"b", &[5; 4000]).unwrap();
    s.put("ns", b"c", &[3; 4000]).unwrap();
    s.put("other", b"x", &[0; 60_000]).unwrap();
    assert_eq!(s.get("ns", b"a").unwrap(), [1; 4000]);
    // Lower the quota below the use: deletes and shrinking still pass, growth does not.
    s.set_quota("ns", Some(BLOCK as u64));
    assert!(matches!(s.put("ns", b"d", b"x"), Err(Error::QuotaExceeded { .. })));
    s.delete("ns", b"a").unwrap();
    assert_eq!(s.usage("ns").quota, Some(BLOCK as u64));
}

#[test]
fn space_is_reclaimed() {
    let mut s = Store::format(MemDisk::new(64), &SECRET, salt(1)).unwrap();
    for i in 0..2000u32 {
        s.put("ns", b"same", &i.to_le_bytes().repeat(1000)).unwrap();
        if i % 3 == 0 {
            s.put("ns", b"tmp", &[0; 5000]).unwrap();
            s.delete("ns", b"tmp").unwrap();
        }
    }
    assert!(s.used_blocks() < 16, "{}", s.used_blocks());
    assert_eq!(s.get("ns", b"same").unwrap(), 1999u32.to_le_bytes().repeat(1000));
}

#[test]
fn nonces_never_repeat_across_reformats_with_one_salt() {
    // Format twice over the same disk with the same secret and salt: the second format starts
    // above the first's counters (the recorder panics on any reuse for other plaintext).
    let mut s = Store::format(MemDisk::new(64), &[3; 32], salt(0)).unwrap();
    s.put("ns", b"k", b"first").unwrap();
    let dev = s.into_device();
    let mut s = Store::format(dev, &[3; 32], salt(0)).unwrap();
    s.put("ns", b"k", b"second").unwrap();
    let dev = s.into_device();
    let (mut s, _) = Store::open(dev, &[3; 32], salt(0)).unwrap();
    s.put("ns", b"k", b"third").unwrap();
    assert_eq!(s.get("ns", b"k").unwrap(), b"third");
}

/// Counts the writes that reach a device.
struct Counting<D>(D, u64);

impl<D: BlockDevice> BlockDevice for Counting<D> {
    fn blocks(&self) -> u64 {
        self.0.blocks()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8; BLOCK]) -> Result<(), crate::block::IoError> {
        self.0.read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8; BLOCK]) -> Result<(), crate::block::IoError> {
        self.1 += 1;
        self.0.write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), crate::block::IoError> {
        self.0.flush()
    }
}

#[test]
fn long_logs_append_in_bounded_writes_and_lose_only_a_damaged_segment() {
    let mut s = Store::format(Counting(MemDisk::new(2048), 0), &SECRET, salt(1)).unwrap();
    let mut per_append = Vec::new();
    for i in 0..700u64 {
        let before = s.device_mut().1;
        assert_eq!(s.log_append("studio", b"decisions", format!("decision {i}").as_bytes()).unwrap(), i);
        per_append.push(s.device_mut().1 - before);
    }
    // An append writes its record, the last segment, the namespace index, the root and a
    // superblock: the same at record 690 as at record 10 (not the whole log).
    assert!(per_append[690] <= per_append[10] + 4, "{} vs {}", per_append[690], per_append[10]);
    assert!(per_append[690] <= 16, "{}", per_append[690]);
    let all = s.log_read("studio", b"decisions", 0, 1000).unwrap();
    assert_eq!(all.len(), 700);
    assert_eq!(all[699].1, b"decision 699");
    // Segment 1 (records 256..512) lost in both mirrors: only its records are gone.
    let seg = s.segment_blocks("studio", b"decisions", 1);
    assert_eq!(seg.len(), 10, "five chain blocks of 256 records, mirrored");
    let mut dev = s.into_device().0;
    for lba in seg {
        dev.image_mut()[lba as usize * BLOCK + 50] ^= 0x10;
    }
    let (mut s, rec) = Store::open(dev, &SECRET, salt(2)).unwrap();
    let lost = Damage::Record { ns: "studio".into(), log: b"decisions".to_vec(), seq: 256 };
    assert_eq!(rec.dropped, [lost]);
    assert_eq!(s.log_read("studio", b"decisions", 0, 256).unwrap().len(), 256);
    assert_eq!(s.log_read("studio", b"decisions", 0, 1000), Err(Error::BrokenChain { seq: 256 }));
    assert_eq!(s.log_read("studio", b"decisions", 600, 1000).unwrap().len(), 100);
    // The log goes on.
    assert_eq!(s.log_append("studio", b"decisions", b"after").unwrap(), 700);
    assert_eq!(s.log_read("studio", b"decisions", 700, 1).unwrap()[0].1, b"after");
}

#[test]
fn a_lost_root_falls_back_without_touching_the_older_superblock() {
    let mut s = Store::format(MemDisk::new(128), &SECRET, salt(1)).unwrap();
    s.put("ns", b"k", b"v1").unwrap();
    let older_gen = s.generation();
    s.put("ns", b"k", b"v2").unwrap();
    let newest = s.generation();
    let root = s.root_blocks();
    let mut dev = s.into_device();
    for lba in root {
        dev.image_mut()[lba as usize * BLOCK + 60] ^= 4;
    }
    let older_slot = (older_gen % 2) as usize;
    let before = dev.image()[older_slot * BLOCK..(older_slot + 1) * BLOCK].to_vec();
    let (mut s, rec) = Store::open(dev, &SECRET, salt(2)).unwrap();
    assert_eq!(rec.dropped, [Damage::Generation { lost: newest }]);
    assert_eq!(rec.generation, older_gen);
    assert_eq!(s.get("ns", b"k").unwrap(), b"v1", "the previous generation, whole");
    let after = s.device_mut().image()[older_slot * BLOCK..(older_slot + 1) * BLOCK].to_vec();
    assert_eq!(before, after, "the open's reservation went over the damaged superblock");
    s.put("ns", b"k", b"v3").unwrap();
    let (mut s, rec) = Store::open(s.into_device(), &SECRET, salt(3)).unwrap();
    assert!(rec.dropped.is_empty());
    assert_eq!(s.get("ns", b"k").unwrap(), b"v3");
}

/// A device whose reads fail (a cable pulled, a controller error) after a switch.
struct Flaky(MemDisk, bool);

impl BlockDevice for Flaky {
    fn blocks(&self) -> u64 {
        self.0.blocks()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8; BLOCK]) -> Result<(), crate::block::IoError> {
        if self.1 && lba >= 2 { Err(crate::block::IoError::Failed) } else { self.0.read(lba, buf) }
    }
    fn write(&mut self, lba: u64, buf: &[u8; BLOCK]) -> Result<(), crate::block::IoError> {
        self.0.write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), crate::block::IoError> {
        self.0.flush()
    }
}

#[test]
fn device_errors_are_reported_as_such_never_as_damage() {
    let mut s = Store::format(Flaky(MemDisk::new(64), false), &SECRET, salt(1)).unwrap();
    s.put("ns", b"k", &[1; 1000]).unwrap();
    s.log_append("ns", b"l", b"r").unwrap();
    s.device_mut().1 = true;
    assert_eq!(s.get("ns", b"k"), Err(Error::Io(crate::block::IoError::Failed)));
    assert_eq!(s.log_read("ns", b"l", 0, 1), Err(Error::Io(crate::block::IoError::Failed)));
    assert_eq!(s.scrub(), Err(Error::Io(crate::block::IoError::Failed)));
    // An open that cannot read the tree fails; it never drops what it could not read.
    let dev = s.into_device();
    assert!(matches!(Store::open(dev, &SECRET, salt(2)), Err(Error::Io(_))));
}

#[test]
fn open_or_format_formats_only_a_blank_device() {
    let (mut s, rec) = Store::open_or_format(MemDisk::new(64), &SECRET, salt(1)).unwrap();
    assert!(rec.dropped.is_empty());
    s.put("ns", b"k", b"v").unwrap();
    let dev = s.into_device();
    let (mut s, _) = Store::open_or_format(dev, &SECRET, salt(2)).unwrap();
    assert_eq!(s.get("ns", b"k").unwrap(), b"v");
    let dev = s.into_device();
    // Another secret: refused, and the store is still there.
    let mut d = dev.clone();
    assert!(matches!(Store::open_or_format(&mut d, &[9; 32], salt(3)), Err(Error::WrongKey)));
    let (mut s, _) = Store::open(d, &SECRET, salt(4)).unwrap();
    assert_eq!(s.get("ns", b"k").unwrap(), b"v");
    // Both superblocks damaged: refused, never formatted over.
    drop(s);
    let mut d = dev;
    d.image_mut()[100] ^= 1;
    d.image_mut()[BLOCK + 100] ^= 1;
    let before = d.image().to_vec();
    assert!(matches!(Store::open_or_format(&mut d, &SECRET, salt(5)), Err(Error::Corrupt(_))));
    assert!(d.image() == &before[..], "untouched");
}

#[test]
fn small_values_live_in_the_index_and_are_charged() {
    let mut s = Store::format(MemDisk::new(64), &SECRET, salt(1)).unwrap();
    s.set_quota("ns", Some(1000));
    s.put("ns", b"k", b"").unwrap();
    s.put("ns", b"k2", &[7; 256]).unwrap();
    assert_eq!(s.usage("ns").bytes, (1 + 32) + (2 + 256 + 32));
    assert!(s.value_blocks("ns", b"k2").is_empty());
    // Empty values are not free: a client cannot fill the index at no charge.
    let mut refused = false;
    for i in 0..100 {
        match s.put("ns", format!("e{i}").as_bytes(), b"") {
            Ok(()) => {}
            Err(Error::QuotaExceeded { .. }) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused);
    // A value one byte longer takes a block, charged whole.
    s.set_quota("ns", None);
    s.put("ns", b"k3", &[1; 257]).unwrap();
    assert_eq!(s.value_blocks("ns", b"k3").len(), 1);
    let dev = s.into_device();
    let (mut s, _) = Store::open(dev, &SECRET, salt(2)).unwrap();
    assert_eq!(s.get("ns", b"k").unwrap(), b"");
    assert_eq!(s.get("ns", b"k2").unwrap(), [7; 256]);
    assert_eq!(s.get("ns", b"k3").unwrap(), [1; 257]);
}
