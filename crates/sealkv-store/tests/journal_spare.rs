//! The pre-zeroed spare journal (sealkv's patch to fjall, `vendor/fjall/SEALKV.md`): a busy
//! journal gets a zeroed, allocated successor; a spare left by a crash is never reused; and a
//! store killed with SIGKILL while spares are zeroed, taken and written keeps its applied index
//! and its data in agreement.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealkv_store::{Direction, Durability, KeyRange, Store};

use common::*;

/// Bytes per value: incompressible, so each one reaches the journal at full size.
const VALUE: usize = 256 * 1024;
/// Keys the writers cycle through, so the store stays small however long they run.
const KEYS: u64 = 48;
/// fjall's journal preallocation, which a spare covers entirely.
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

const SPARE: &str = "journal.spare";
/// A file a spare was being zeroed in, as a process killed mid-way leaves it.
const SPARE_TMP: &str = "journal.spare.4242-7.tmp";

fn key(i: u64) -> Vec<u8> {
    format!("k{:02}", i % KEYS).into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    sealkv_testkit::incompressible(i, VALUE)
}

/// Batch `i` writes `value(i)` at `key(i)` with commit timestamp `i`, fsynced.
fn apply(store: &Store, i: u64) {
    let mut b = store.batch();
    b.put(&key(i), i, &value(i), 0).unwrap();
    b.commit(&applied(i), Durability::Synced).unwrap();
}

/// Checks that every key holds the value of the last batch up to the applied index that wrote it.
fn verify(store: &Store) -> u64 {
    let at = store.applied().unwrap().map_or(0, |a| a.index);
    let mut model = BTreeMap::new();
    for i in at.saturating_sub(KEYS - 1).max(1)..=at {
        model.insert(key(i), value(i));
    }
    let got: BTreeMap<_, _> =
        store.scan(&KeyRange::all(), u64::MAX, 0, Direction::Forward).collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len(), model.len(), "key count disagrees with applied index {at}");
    for (k, v) in &model {
        assert!(got.get(k) == Some(v), "key {} disagrees with applied index {at}", String::from_utf8_lossy(k));
    }
    at
}

/// The folder fjall keeps its journals in, under the store's directory.
fn journal_folder(dir: &Path) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "jnl") {
                return d;
            }
        }
    }
    panic!("no journal under {}", dir.display());
}

/// The active journal: the one with the highest id.
fn active_journal(folder: &Path) -> PathBuf {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .max_by_key(|p| p.file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap())
        .unwrap()
}

/// Bytes the filesystem has allocated to a file (a sparse file has few).
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The spare and the files spares are being zeroed in.
fn spare_files(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(SPARE))
        .collect()
}

/// A new cleartext store, its keystore, and the folder of its journals.
fn fresh() -> (tempfile::TempDir, std::sync::Arc<sealkv_crypto::Keystore>, Store, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, false);
    let folder = journal_folder(dir.path());
    (dir, keys, store, folder)
}

/// Waits for the spare to be ready and checks it: 64 MiB, all allocated on disk.
fn wait_for_spare(folder: &Path) -> std::fs::Metadata {
    wait_until("the spare", || folder.join(SPARE).exists());
    let spare = std::fs::metadata(folder.join(SPARE)).unwrap();
    assert_eq!(spare.len(), JOURNAL_BYTES);
    assert!(spare.blocks() * 512 >= JOURNAL_BYTES, "the spare is not allocated on disk");
    spare
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_busy_journal_gets_a_zeroed_spare_and_the_next_journal_takes_it() {
    let (dir, keys, store, folder) = fresh();
    let first = active_journal(&folder);
    assert!(allocated(&first) < JOURNAL_BYTES / 2, "a new journal is sparse, as fjall creates it");

    // A light journal asks for no spare: small databases never pay for 64 MiB of zeros.
    apply(&store, 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(spare_files(&folder), Vec::<String>::new(), "a spare for a light journal");

    // 8 MiB into the journal, a spare is zeroed in the background.
    for i in 2..=40 {
        apply(&store, i);
    }
    let spare = wait_for_spare(&folder);

    // The first journal is sparse, so it rotates onto the spare at the next flush, long before
    // fjall's 64 MB.
    store.flush().unwrap();
    let second = active_journal(&folder);
    assert_ne!(second, first, "the sparse first journal did not rotate onto the ready spare");
    assert_eq!(std::fs::metadata(&second).unwrap().ino(), spare.ino(), "the new journal is not the spare");
    assert!(allocated(&second) >= JOURNAL_BYTES);
    assert!(!folder.join(SPARE).exists(), "the taken spare kept its name");

    // A journal on a spare rotates where fjall always does, at the first flush after 64 MB, and
    // its successor is the next spare.
    for i in 41..=80 {
        apply(&store, i);
    }
    let next = wait_for_spare(&folder);
    store.flush().unwrap();
    assert_eq!(active_journal(&folder), second, "a journal on a spare rotated before 64 MB");
    for i in 81..=300 {
        apply(&store, i);
    }
    store.flush().unwrap();
    let third = active_journal(&folder);
    assert_ne!(third, second, "no journal rotation after 68 MB");
    assert_eq!(std::fs::metadata(&third).unwrap().ino(), next.ino(), "the third journal is not the second spare");

    for i in 301..=310 {
        apply(&store, i);
    }
    assert_eq!(verify(&store), 310);
    drop(store);
    let store = open(dir.path(), &keys, false);
    assert_eq!(verify(&store), 310, "what was written into the taken spare did not survive a reopen");
}

#[test]
fn a_spare_left_linked_to_the_journal_by_a_crash_is_discarded_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, false);
    for i in 1..=10 {
        apply(&store, i);
    }
    drop(store);
    // A crash between the link of the spare to the new journal's name and the unlink of the
    // spare's: the spare is the journal, full of entries. A leftover temporary file too.
    let folder = journal_folder(dir.path());
    std::fs::hard_link(active_journal(&folder), folder.join(SPARE)).unwrap();
    std::fs::write(folder.join(SPARE_TMP), b"half-zeroed").unwrap();

    let store = open(dir.path(), &keys, false);
    assert!(!folder.join(SPARE).exists(), "a spare from before the crash survived the open");
    assert_eq!(
        spare_files(&folder),
        Vec::<String>::new(),
        "a half-zeroed spare from before the crash survived the open"
    );
    assert_eq!(verify(&store), 10);

    // Rotations after it start from clean journals: nothing of the old one comes back.
    for i in 11..=50 {
        apply(&store, i);
    }
    store.flush().unwrap();
    for i in 51..=60 {
        apply(&store, i);
    }
    drop(store);
    let store = open(dir.path(), &keys, false);
    assert_eq!(verify(&store), 60);
}

#[test]
fn a_spare_that_cannot_be_taken_stops_spares_instead_of_rotating_at_every_flush() {
    let (dir, keys, store, folder) = fresh();
    // A directory cannot be hard-linked, as a spare cannot be on a filesystem without hard links.
    std::fs::create_dir(folder.join(SPARE)).unwrap();
    for i in 1..=40 {
        apply(&store, i);
    }
    // The sparse journal sees a "ready" spare and rotates once; taking it fails.
    store.flush().unwrap();
    let after_failure = active_journal(&folder);
    assert!(allocated(&after_failure) < JOURNAL_BYTES / 2, "a journal on a spare that could not be taken");
    // From then on journals rotate where fjall always does, not at every flush.
    for round in 0..3 {
        for i in 41 + round * 40..41 + (round + 1) * 40 {
            apply(&store, i);
        }
        store.flush().unwrap();
        assert_eq!(active_journal(&folder), after_failure, "the journal rotated again at a flush after a failed take");
    }
    assert_eq!(verify(&store), 160);
    drop(store);
    std::fs::remove_dir(folder.join(SPARE)).unwrap();
    assert_eq!(verify(&open(dir.path(), &keys, false)), 160);
}

#[test]
fn closing_and_reopening_while_a_spare_is_zeroed_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let mut next = 1;
    for _ in 0..3 {
        // Each open writes 10 MiB, so a spare is being zeroed when the store closes, and the next
        // open's thread zeroes another while the old one may still run.
        let store = open(dir.path(), &keys, false);
        assert_eq!(verify(&store), next - 1);
        for i in next..next + 40 {
            apply(&store, i);
        }
        next += 40;
        store.flush().unwrap();
        assert_eq!(verify(&store), next - 1);
    }
    let store = open(dir.path(), &keys, false);
    let folder = journal_folder(dir.path());
    for i in next..next + 40 {
        apply(&store, i);
    }
    next += 40;
    wait_for_spare(&folder);
    store.flush().unwrap();
    for i in next..next + 10 {
        apply(&store, i);
    }
    next += 10;
    assert_eq!(verify(&store), next - 1);
    drop(store);
    assert_eq!(verify(&open(dir.path(), &keys, false)), next - 1);
}

/// Child mode: writes batches forever from the applied index and flushes every 48 batches
/// (12 MiB). fjall rotates its journal at the first flush after 64 MB, so a spare is requested,
/// zeroed and taken every ~260 batches. In a normal run the
/// same writer runs in-process for a while and is verified.
#[test]
fn journal_spare_child_or_inprocess() {
    let run = |store: &Store, from: u64, to: u64| {
        for i in from..=to {
            apply(store, i);
            if i % 48 == 0 {
                store.flush().unwrap();
            }
        }
    };
    match std::env::var_os("SEALKV_SPARE_CRASH_DIR") {
        Some(dir) => {
            let store = open(Path::new(&dir), &keystore(), false);
            let at = store.applied().unwrap().map_or(0, |a| a.index);
            println!("ready {at}");
            run(&store, at + 1, u64::MAX);
        }
        None => {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), &keystore(), false);
            run(&store, 1, 150);
            assert_eq!(verify(&store), 150);
        }
    }
}

#[test]
fn sigkill_while_spares_are_zeroed_and_taken_keeps_applied_index_and_data_in_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut last = 0;
    for _ in 0..8 {
        let (mut child, mut lines) = spawn_child(
            "journal_spare_child_or_inprocess",
            &[("SEALKV_SPARE_CRASH_DIR", dir.path().display().to_string())],
        );
        let ready: u64 = wait_for(&mut lines, "ready ").parse().unwrap();
        assert_eq!(ready, last, "the child resumed from a different applied index than the parent verified");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(200 + seed % 1500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = open(dir.path(), &keystore(), false);
        last = verify(&store);
    }
    let rotations =
        active_journal(&journal_folder(dir.path())).file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap();
    assert!(rotations >= 2, "the runs rotated the journal {rotations} times; spares were never taken (applied {last})");
}
