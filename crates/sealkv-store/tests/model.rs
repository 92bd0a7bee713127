//! Model test: random puts, deletes, TTLs, GC, reads and scans against the store and against a
//! plain in-memory model, with encryption off, on from birth, and switched on mid-history (plus
//! rotations, rewrites and reopens along the way). Any disagreement fails the case.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use sealkv_store::{Direction, KeyRange, RewriteOptions, RewriteTarget, Store};

use common::*;

const KEYS: [&[u8]; 8] = [b"", b"\x00", b"a", b"a\x00", b"a\x00b", b"ab", b"b", b"\xff"];

#[derive(Debug, Clone)]
enum Op {
    Put {
        k: usize,
        v: Vec<u8>,
        ttl: Option<u64>,
    },
    Del {
        k: usize,
    },
    /// A put at an older timestamp than the newest one written (entries can reach apply out of
    /// timestamp order); it must not shadow a newer version of the same key.
    Late {
        k: usize,
        v: Vec<u8>,
        back: u64,
    },
    /// `superseded_only`: the GC servers run, which keeps every key's newest version.
    Gc {
        lag: u64,
        superseded_only: bool,
    },
    Get {
        k: usize,
        lag: u64,
    },
    Scan {
        lo: usize,
        hi: usize,
        lo_inc: bool,
        hi_inc: bool,
        reverse: bool,
        lag: u64,
    },
    Prefix {
        k: usize,
        reverse: bool,
    },
    Enable,
    Rotate,
    Rewrite,
    Reopen,
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        // Compressible values exercise compress-then-encrypt.
        (any::<u8>(), 64usize..300).prop_map(|(b, n)| vec![b; n]),
        Just(vec![0x01, 0x00, 0x00]),
        // Random values of 1 KiB and more live in blob files (key-value separation), which GC
        // must read only for the headers it needs.
        proptest::collection::vec(any::<u8>(), 1024..1300),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    prop_oneof![
        6 => (k.clone(), value(), proptest::option::of(1u64..6)).prop_map(|(k, v, ttl)| Op::Put { k, v, ttl }),
        2 => k.clone().prop_map(|k| Op::Del { k }),
        2 => (k.clone(), value(), 1u64..6).prop_map(|(k, v, back)| Op::Late { k, v, back }),
        2 => (0u64..6, any::<bool>()).prop_map(|(lag, superseded_only)| Op::Gc { lag, superseded_only }),
        4 => (k.clone(), 0u64..8).prop_map(|(k, lag)| Op::Get { k, lag }),
        2 => (k.clone(), k.clone(), any::<bool>(), any::<bool>(), any::<bool>(), 0u64..8)
            .prop_map(|(lo, hi, lo_inc, hi_inc, reverse, lag)| Op::Scan { lo, hi, lo_inc, hi_inc, reverse, lag }),
        1 => (k, any::<bool>()).prop_map(|(k, reverse)| Op::Prefix { k, reverse }),
        1 => Just(Op::Enable),
        1 => Just(Op::Rotate),
        1 => Just(Op::Rewrite),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Birth,
    Mid,
}

type Versions = Vec<(u64, Option<(Vec<u8>, u64)>)>;

#[derive(Default)]
struct Model {
    keys: BTreeMap<Vec<u8>, Versions>,
}

impl Model {
    fn read(&self, k: &[u8], ts: u64, now: u64) -> Option<Vec<u8>> {
        let (_, v) = self.keys.get(k)?.iter().filter(|(t, _)| *t <= ts).max_by_key(|(t, _)| *t)?;
        match v {
            Some((val, exp)) if *exp == 0 || *exp > now => Some(val.clone()),
            _ => None,
        }
    }

    /// `dead_at`: also drop an anchor that is a tombstone or expired then (`None`: keep it).
    fn gc(&mut self, horizon: u64, dead_at: Option<u64>) {
        for versions in self.keys.values_mut() {
            versions.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
            if let Some(anchor) = versions.iter().position(|(t, _)| *t <= horizon) {
                let drop_anchor = match (dead_at, &versions[anchor].1) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(now), Some((_, exp))) => *exp != 0 && *exp <= now,
                };
                versions.truncate(if drop_anchor { anchor } else { anchor + 1 });
            }
        }
    }

    fn newest_ts(&self, k: &[u8]) -> Option<u64> {
        self.keys.get(k)?.iter().map(|(t, _)| *t).max()
    }

    fn versions(&self) -> u64 {
        self.keys.values().map(|v| v.len() as u64).sum()
    }
}

fn scan(store: &Store, range: &KeyRange, ts: u64, now: u64, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let dir = if reverse { Direction::Reverse } else { Direction::Forward };
    store.scan(range, ts, now, dir).collect::<Result<_, _>>().unwrap()
}

fn run(mode: Mode, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let mut store = open(dir.path(), &keys, mode != Mode::Off);
    let mut model = Model::default();
    let (mut ts, mut index, mut horizon) = (0u64, 0u64, 0u64);
    let mut active = DEK_A;
    let mut encrypted = false;
    if mode == Mode::Birth {
        store.set_sealer(Some(sealer(&keys, active)));
        index += 1;
        enable(&store, index);
        encrypted = true;
    }
    let now = |ts: u64| ts * 10;
    for op in ops {
        match op {
            Op::Put { k, v, ttl } => {
                ts += 1;
                index += 1;
                let exp = ttl.map_or(0, |t| now(ts) + t * 10);
                put(&store, index, KEYS[k], ts, &v, exp);
                model.keys.entry(KEYS[k].to_vec()).or_default().push((ts, Some((v, exp))));
            }
            Op::Del { k } => {
                ts += 1;
                index += 1;
                delete(&store, index, KEYS[k], ts);
                model.keys.entry(KEYS[k].to_vec()).or_default().push((ts, None));
            }
            Op::Late { k, v, back } => {
                let t = ts.saturating_sub(back);
                let taken = model.keys.get(KEYS[k]).is_some_and(|vs| vs.iter().any(|(vt, _)| *vt == t));
                // Never below the GC horizon: GC has already settled what reads there see.
                if t > horizon && !taken {
                    index += 1;
                    put(&store, index, KEYS[k], t, &v, 0);
                    model.keys.entry(KEYS[k].to_vec()).or_default().push((t, Some((v, 0))));
                }
            }
            Op::Gc { lag, superseded_only } => {
                let h = ts.saturating_sub(lag).max(horizon);
                horizon = h;
                if superseded_only {
                    store.gc_superseded(h).unwrap();
                    model.gc(h, None);
                } else {
                    store.gc(h, now(ts)).unwrap();
                    model.gc(h, Some(now(ts)));
                }
                let c = store.value_counts().unwrap();
                let stored = c.cleartext + c.tombstones + c.by_key_id.values().sum::<u64>();
                prop_assert_eq!(stored, model.versions(), "GC removed a different set of versions");
                // What an apply reads (the newest version, tombstones and expired values included)
                // must not depend on whether this replica has run the servers' GC.
                for k in KEYS.iter().filter(|_| superseded_only) {
                    let newest = store.version(k, u64::MAX).unwrap().map(|v| v.ts);
                    prop_assert_eq!(newest, model.newest_ts(k), "newest version of {:?} after GC", k);
                }
            }
            Op::Get { k, lag } => {
                let rt = ts.saturating_sub(lag).max(horizon);
                let got = store.get(KEYS[k], rt, now(ts)).unwrap();
                prop_assert_eq!(got, model.read(KEYS[k], rt, now(ts)), "get {:?} at {}", KEYS[k], rt);
            }
            Op::Scan { lo, hi, lo_inc, hi_inc, reverse, lag } => {
                let rt = ts.saturating_sub(lag).max(horizon);
                let b = |i: usize, inc: bool| {
                    if inc { Bound::Included(KEYS[i].to_vec()) } else { Bound::Excluded(KEYS[i].to_vec()) }
                };
                let (lo_b, hi_b) = (b(lo, lo_inc), b(hi, hi_inc));
                let mut expected: Vec<_> = model
                    .keys
                    .keys()
                    .filter(|k| std::ops::RangeBounds::contains(&(lo_b.clone(), hi_b.clone()), *k))
                    .filter_map(|k| model.read(k, rt, now(ts)).map(|v| (k.clone(), v)))
                    .collect();
                if reverse {
                    expected.reverse();
                }
                let got = scan(&store, &KeyRange::Bounds(lo_b, hi_b), rt, now(ts), reverse);
                prop_assert_eq!(got, expected);
            }
            Op::Prefix { k, reverse } => {
                let p = KEYS[k];
                let mut expected: Vec<_> = model
                    .keys
                    .keys()
                    .filter(|key| key.starts_with(p))
                    .filter_map(|key| model.read(key, ts, now(ts)).map(|v| (key.clone(), v)))
                    .collect();
                if reverse {
                    expected.reverse();
                }
                prop_assert_eq!(scan(&store, &KeyRange::Prefix(p.to_vec()), ts, now(ts), reverse), expected);
            }
            Op::Enable if mode == Mode::Mid && !encrypted => {
                store.set_sealer(Some(sealer(&keys, active)));
                index += 1;
                enable(&store, index);
                encrypted = true;
                prop_assert_eq!(store.storage_envelope_since(), Some(ts));
            }
            Op::Rotate if encrypted => {
                active = if active == DEK_A { DEK_B } else { DEK_A };
                store.set_sealer(Some(sealer(&keys, active)));
            }
            Op::Rewrite if encrypted => {
                store.rewrite(RewriteOptions::new(RewriteTarget::AllButActive), |_| {}).unwrap();
                let c = store.value_counts().unwrap();
                prop_assert_eq!(c.cleartext, 0);
                prop_assert!(c.by_key_id.keys().all(|id| *id == active), "{:?}", c);
                prop_assert_eq!(store.storage_envelope_since(), Some(0));
            }
            Op::Reopen => {
                drop(store);
                store = open(dir.path(), &keys, mode != Mode::Off);
                if encrypted {
                    store.set_sealer(Some(sealer(&keys, active)));
                }
                prop_assert_eq!(store.applied().unwrap().map(|a| a.index), (index > 0).then_some(index));
            }
            Op::Enable | Op::Rotate | Op::Rewrite => {}
        }
    }
    // Final full comparison in both directions.
    let expected: Vec<_> =
        model.keys.keys().filter_map(|k| model.read(k, ts, now(ts)).map(|v| (k.clone(), v))).collect();
    prop_assert_eq!(&scan(&store, &KeyRange::all(), ts, now(ts), false), &expected);
    let mut rev = expected.clone();
    rev.reverse();
    prop_assert_eq!(scan(&store, &KeyRange::all(), ts, now(ts), true), rev);
    let counts = store.value_counts().unwrap();
    match mode {
        Mode::Off => prop_assert!(counts.by_key_id.is_empty()),
        Mode::Birth => prop_assert_eq!(counts.cleartext, 0, "a value was stored in cleartext"),
        Mode::Mid => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_model_encryption_off(ops in proptest::collection::vec(op(), 1..50)) {
        run(Mode::Off, ops)?;
    }

    #[test]
    fn agrees_with_model_encrypted_from_birth(ops in proptest::collection::vec(op(), 1..50)) {
        run(Mode::Birth, ops)?;
    }

    #[test]
    fn agrees_with_model_encryption_switched_on_mid_history(ops in proptest::collection::vec(op(), 1..50)) {
        run(Mode::Mid, ops)?;
    }
}
