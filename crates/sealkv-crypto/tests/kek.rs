//! File and env KEK providers: loading rules and identity binding of wraps.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sealkv_crypto::Purpose;
use sealkv_crypto::kek::{DekIdentity, EnvKek, FileKek, KekError, KekProvider, WRAPPED_LEN};

fn write_kek(path: &Path, bytes: &[u8], mode: u32) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

const ID: DekIdentity = DekIdentity { purpose: Purpose::Storage, dek_id: 0x1234 };

#[test]
fn file_kek_wraps_and_unwraps() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kek.bin");
    write_kek(&p, &[7; 32], 0o600);
    let kek = FileKek::open(&p).unwrap();
    let w = kek.wrap(ID, &[9; 32]).unwrap();
    assert_eq!(w.len(), WRAPPED_LEN);
    assert_eq!(*kek.unwrap(ID, &w).unwrap(), [9; 32]);
    // Random wrap nonces: two wraps of the same DEK differ.
    assert_ne!(kek.wrap(ID, &[9; 32]).unwrap(), w);
    // 0400 is fine too.
    write_kek(&p, &[7; 32], 0o400);
    assert!(FileKek::open(&p).is_ok());
    assert!(kek.describe().contains("kek.bin"));
}

#[test]
fn wrap_is_bound_to_purpose_and_id() {
    let kek = EnvKek::from_value("K", &"ab".repeat(32)).unwrap();
    let w = kek.wrap(ID, &[9; 32]).unwrap();
    let moved_id = DekIdentity { dek_id: 0x1235, ..ID };
    let moved_purpose = DekIdentity { purpose: Purpose::Raft, ..ID };
    assert!(matches!(kek.unwrap(moved_id, &w), Err(KekError::Unwrap { dek_id: 0x1235, .. })));
    assert!(matches!(kek.unwrap(moved_purpose, &w), Err(KekError::Unwrap { .. })));
    for i in 0..w.len() {
        let mut t = w.clone();
        t[i] ^= 1;
        assert!(kek.unwrap(ID, &t).is_err(), "byte {i}");
    }
    assert!(matches!(kek.unwrap(ID, &w[..59]), Err(KekError::WrappedLength { len: 59, .. })));
    let other = EnvKek::from_value("K", &"cd".repeat(32)).unwrap();
    assert!(matches!(other.unwrap(ID, &w), Err(KekError::Unwrap { .. })), "another KEK must not unwrap");
}

#[test]
fn kek_wrap_aad_layout_pin() {
    assert_eq!(&ID.aad(), b"sealkv/dek/v1\x01\x00\x00\x12\x34");
}

#[test]
fn file_kek_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kek.bin");
    for mode in [0o640, 0o604, 0o644, 0o660, 0o601] {
        write_kek(&p, &[7; 32], mode);
        let err = FileKek::open(&p).unwrap_err();
        assert!(matches!(err, KekError::Permissions { .. }), "mode {mode:o}: {err}");
        assert!(err.to_string().contains("chmod 600"));
    }
    for len in [0usize, 31, 33, 64] {
        write_kek(&p, &vec![7; len], 0o600);
        let err = FileKek::open(&p).unwrap_err();
        assert!(matches!(err, KekError::WrongLength { .. }), "len {len}: {err}");
    }
    assert!(matches!(FileKek::open(&dir.path().join("missing")), Err(KekError::Io { .. })));
    // A directory.
    let d = dir.path().join("d");
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(matches!(FileKek::open(&d), Err(KekError::NotRegularFile { .. })));
}

#[test]
fn fifo_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kek.fifo");
    let st = std::process::Command::new("mkfifo").arg("-m").arg("600").arg(&p).status().unwrap();
    assert!(st.success());
    // With no writer, a blocking open would hang forever; run it on a thread and bound the wait.
    let (tx, rx) = std::sync::mpsc::channel();
    let p2 = p.clone();
    std::thread::spawn(move || {
        let _ = tx.send(FileKek::open(&p2).map(|_| ()).map_err(|e| e.to_string()));
    });
    let res = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("opening a FIFO KEK hung");
    assert!(res.unwrap_err().contains("not a regular file"));
}

#[test]
fn env_kek_decoding() {
    assert!(EnvKek::from_value("K", &"0f".repeat(32)).is_ok());
    assert!(EnvKek::from_value("K", &format!("  {}\n", "0F".repeat(32))).is_ok());
    let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let a = EnvKek::from_value("K", b64).unwrap();
    // base64 and hex of the same bytes are the same KEK.
    let h = EnvKek::from_value("K", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap();
    assert_eq!(*h.unwrap(ID, &a.wrap(ID, &[5; 32]).unwrap()).unwrap(), [5; 32]);
    for bad in ["", "zz", &"0g".repeat(32), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", &"00".repeat(31)] {
        assert!(EnvKek::from_value("K", bad).is_err(), "{bad:?}");
    }
    let err = EnvKek::from_value("SEALKV_KEK", "zz").unwrap_err().to_string();
    assert!(err.contains("SEALKV_KEK") && !err.contains("zz"), "errors name the variable, never the value: {err}");
}

#[test]
fn debug_output_never_contains_kek_bytes() {
    let kek = EnvKek::from_value("K", &"ab".repeat(32)).unwrap();
    let text = format!("{kek:?}");
    assert!(!text.contains("ab") || text.contains("redacted"), "{text}");
    assert!(!text.contains("171"), "{text}");
}
