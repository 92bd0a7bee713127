//! The store seals an apply batch's values when the batch commits. A seal that fails there is an
//! apply failure like any other: the state machine halts, records why, and names an index the
//! applied index stays just below.

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

struct Node {
    _dir: tempfile::TempDir,
    keystore: Arc<Keystore>,
    store: Arc<Store>,
    shared: Arc<Shared>,
    sm: StateMachine,
}

/// A state machine over an encrypted store that has applied entry 1 (cleartext) and, with the
/// storage envelope on, entry 2 (sealed); its sealer's nonce space is then spent, so puts are
/// still accepted and the next commit's seal fails.
async fn node_with_a_spent_sealer() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let keystore = Arc::new(Keystore::new());
    keystore.install(DEK, Purpose::Storage, &[0x42; 32]).unwrap();
    keystore.set_active(Purpose::Storage, DEK).unwrap();
    let opts = StoreOptions { keystore: keystore.clone(), encryption_enabled: true, ..StoreOptions::default() };
    let store = Arc::new(Store::open(dir.path().join("store"), opts).unwrap());
    let shared = Shared::new(store.clone(), keystore.clone(), Arc::new(Applier::unwired()), 1, dir.path()).unwrap();
    let mut sm = StateMachine::new(shared.clone()).unwrap();
    sm.apply([entry(1, put(b"first", 10))]).await.unwrap();
    let applied = store.applied().unwrap().unwrap();
    let mut b = store.batch();
    b.enable_storage_envelope();
    b.commit(&applied, Durability::Synced).unwrap();
    let working = NonceFactory::new(1, 1).unwrap();
    store.set_sealer(Some(Arc::new(Sealer::new(keystore.get(DEK).unwrap(), working))));
    sm.apply([entry(2, put(b"second", 20))]).await.unwrap();
    assert_eq!(store.get(b"second", u64::MAX, 0).unwrap(), Some(b"v".to_vec()));
    let spent = NonceFactory::resume(1, 2, u64::MAX).unwrap();
    store.set_sealer(Some(Arc::new(Sealer::new(keystore.get(DEK).unwrap(), spent))));
    Node { _dir: dir, keystore, store, shared, sm }
}

fn assert_nothing_after_2(n: &Node) {
    assert_eq!(n.store.applied().unwrap().unwrap().index, 2, "the applied index must not move");
    assert_eq!(n.store.get(b"third", u64::MAX, 0).unwrap(), None);
    assert_eq!(n.store.get(b"fourth", u64::MAX, 0).unwrap(), None);
    assert_eq!(n.store.get(b"second", u64::MAX, 0).unwrap(), Some(b"v".to_vec()));
    assert_eq!(n.keystore.active_id(Purpose::Storage), DEK);
}

#[tokio::test]
async fn a_seal_that_fails_at_commit_halts_at_the_batchs_first_entry() {
    let mut n = node_with_a_spent_sealer().await;
    let err =
        n.sm.apply([entry(3, EntryPayload::Blank), entry(4, put(b"third", 30)), entry(5, put(b"fourth", 40))]).await;
    assert!(err.is_err(), "the apply must fail");
    let halt = n.shared.halted().expect("a seal failure at commit is recorded as a halt");
    assert_eq!((halt.index, halt.key_id), (3, DEK), "{halt}");
    assert!(halt.reason.contains("sealing") && halt.reason.contains("nonce"), "{halt}");
    assert_nothing_after_2(&n);
}

/// Entry 5 halts on its own (a reserved opcode); the entries before it are re-applied and
/// committed, and that commit's seal fails. Nothing of the batch is applied, so the halt names
/// entry 3, not 5, and keeps entry 5's reason.
#[tokio::test]
async fn when_the_entries_before_a_halt_cannot_be_sealed_the_halt_moves_to_the_batchs_first_entry() {
    let mut n = node_with_a_spent_sealer().await;
    let reserved = EntryPayload::Normal(Payload(vec![0x07]));
    let err = n.sm.apply([entry(3, put(b"third", 30)), entry(4, put(b"fourth", 40)), entry(5, reserved)]).await;
    assert!(err.is_err(), "the apply must fail");
    let halt = n.shared.halted().expect("recorded as a halt");
    assert_eq!(halt.index, 3, "{halt}");
    assert!(halt.reason.contains("reserved"), "{halt}");
    assert_nothing_after_2(&n);
}
