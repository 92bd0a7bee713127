//! The persistent writer registry behind the crypto crate's `RegistryStore` trait: an apply batch
//! reads its own writes (so `plan` checks a whole entry correctly), rows land atomically with the
//! applied index, a dropped batch leaves nothing, and rows survive a reopen.

mod common;

use sealkv_crypto::registry::{self, RegistryStore, Row, RowKey};
use sealkv_crypto::wire::Registration;
use sealkv_store::Durability;

use common::*;

fn reg(dek_id: u32, node: &str, epoch: u16) -> Registration {
    Registration { dek_id, full_node_id: sealkv_crypto::full_node_id(node), local_epoch: epoch }
}

#[test]
fn batch_reads_its_own_writes_and_commits_rows_with_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, true);

    let mut b = store.batch();
    let regs = [reg(7, "n1", 1), reg(7, "n2", 1), reg(8, "n1", 1)];
    for (k, row) in registry::plan(&b, &regs).unwrap() {
        RegistryStore::put(&mut b, k, row).unwrap();
    }
    // A later registration in the same entry sees the rows above: an epoch bump, not an insert.
    let writes = registry::plan(&b, &[reg(7, "n1", 2)]).unwrap();
    assert_eq!(writes.len(), 1);
    assert_eq!((writes[0].1.first_seen_epoch, writes[0].1.last_seen_epoch), (1, 2));
    // And an epoch rollback is refused against the batch's own rows.
    assert!(registry::plan(&b, &[reg(7, "n1", 0)]).is_err());
    assert_eq!(RegistryStore::rows(&b).unwrap().len(), 3);
    // Nothing is visible before the commit; a dropped batch leaves nothing.
    assert!(store.registry_rows().unwrap().is_empty());
    drop(b);
    assert!(store.registry_rows().unwrap().is_empty());
    assert_eq!(store.applied().unwrap(), None);

    let mut b = store.batch();
    for (k, row) in registry::plan(&b, &regs).unwrap() {
        RegistryStore::put(&mut b, k, row).unwrap();
    }
    b.commit(&applied(5), Durability::Buffered).unwrap();
    assert_eq!(store.registry_rows().unwrap().len(), 3);

    // retire-dek removes every row of one DEK, including rows written earlier in the same batch.
    let mut b = store.batch();
    let n3 = RowKey { dek_id: 7, node16: sealkv_crypto::node16(sealkv_crypto::full_node_id("n3")) };
    RegistryStore::put(
        &mut b,
        n3,
        Row { full_node_id: sealkv_crypto::full_node_id("n3"), first_seen_epoch: 1, last_seen_epoch: 1 },
    )
    .unwrap();
    b.remove_dek(7).unwrap();
    assert_eq!(b.get(n3).unwrap(), None);
    let left = RegistryStore::rows(&b).unwrap();
    assert_eq!(left.iter().map(|(k, _)| k.dek_id).collect::<Vec<_>>(), vec![8]);
    b.commit(&applied(6), Durability::Synced).unwrap();
    drop(store);

    let store = open(dir.path(), &keys, true);
    let rows = store.registry_rows().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0.dek_id, 8);
    assert_eq!(store.applied().unwrap().unwrap().index, 6);
}
