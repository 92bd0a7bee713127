//! The store seals an apply batch's values when the batch commits. A seal that fails there is an
//! apply failure like any other: the state machine halts at the batch's first entry and records
//! why, and nothing of the batch is applied.

use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use sealkv_crypto::applier::Applier;
use sealkv_crypto::{Keystore, NonceFactory, Purpose, Sealer};
use sealkv_raft::command::{Command, Op};
use sealkv_raft::state_machine::{Shared, StateMachine};
use sealkv_raft::types::{Payload, TypeConfig};
use sealkv_store::{Durability, Store, StoreOptions};

const DEK: u32 = 7;

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload }
}

fn put(key: &[u8], ts: u64) -> EntryPayload<TypeConfig> {
    let cmd = Command { ts, ops: vec![Op::Put { key: key.to_vec(), value: b"v".to_vec(), expire_at_ms: 0 }] };
    EntryPayload::Normal(Payload(cmd.encode().unwrap()))
}

#[tokio::test]
async fn a_seal_that_fails_at_commit_halts_at_the_batchs_first_entry() {
    let dir = tempfile::tempdir().unwrap();
    let keystore = Arc::new(Keystore::new());
    keystore.install(DEK, Purpose::Storage, &[0x42; 32]).unwrap();
    keystore.set_active(Purpose::Storage, DEK).unwrap();
    let opts = StoreOptions { keystore: keystore.clone(), encryption_enabled: true, ..StoreOptions::default() };
    let store = Arc::new(Store::open(dir.path().join("store"), opts).unwrap());
    let shared = Shared::new(store.clone(), keystore.clone(), Arc::new(Applier::unwired()), 1, dir.path()).unwrap();
    let mut sm = StateMachine::new(shared.clone()).unwrap();

    // Entry 1 applies; then the storage envelope goes on under a sealer that works.
    sm.apply([entry(1, put(b"first", 10))]).await.unwrap();
    let applied = store.applied().unwrap().unwrap();
    let mut b = store.batch();
    b.enable_storage_envelope();
    b.commit(&applied, Durability::Synced).unwrap();
    let working = NonceFactory::new(1, 1).unwrap();
    store.set_sealer(Some(Arc::new(Sealer::new(keystore.get(DEK).unwrap(), working))));
    sm.apply([entry(2, put(b"second", 20))]).await.unwrap();
    assert_eq!(store.get(b"second", u64::MAX, 0).unwrap(), Some(b"v".to_vec()));

    // A sealer whose nonce space is spent: puts are accepted, the commit's seal fails.
    let spent = NonceFactory::resume(1, 2, u64::MAX).unwrap();
    store.set_sealer(Some(Arc::new(Sealer::new(keystore.get(DEK).unwrap(), spent))));
    let err =
        sm.apply([entry(3, EntryPayload::Blank), entry(4, put(b"third", 30)), entry(5, put(b"fourth", 40))]).await;
    assert!(err.is_err(), "the apply must fail");
    let halt = shared.halted().expect("a seal failure at commit is recorded as a halt");
    assert_eq!((halt.index, halt.key_id), (3, DEK), "{halt}");
    assert!(halt.reason.contains("sealing") && halt.reason.contains("nonce"), "{halt}");
    assert_eq!(store.applied().unwrap().unwrap().index, 2, "the applied index must not move");
    assert_eq!(store.get(b"third", u64::MAX, 0).unwrap(), None);
    assert_eq!(store.get(b"fourth", u64::MAX, 0).unwrap(), None);
    assert_eq!(store.get(b"second", u64::MAX, 0).unwrap(), Some(b"v".to_vec()));
}
