//! openraft's own storage conformance suite against our log store and state machine (spec 04:
//! "run it"). Each case gets a fresh store in a temp dir; the dir lives as long as the case.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use sealkv_crypto::Keystore;
use sealkv_crypto::applier::Applier;
use sealkv_raft::log_store::LogStore;
use sealkv_raft::state_machine::{Shared, StateMachine};
use sealkv_raft::types::{StorageError, TypeConfig};
use sealkv_store::{Store, StoreOptions};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let keystore = Arc::new(Keystore::new());
        let store = Arc::new(
            Store::open(
                dir.path().join("store"),
                StoreOptions {
                    keystore: keystore.clone(),
                    encryption_enabled: false,
                    cache_bytes: 8 << 20,
                    memtable_bytes: 4 << 20,
                    row_cache_bytes: 1 << 20,
                    ..StoreOptions::default()
                },
            )
            .unwrap(),
        );
        let log = LogStore::open(store.database()).unwrap();
        let shared = Shared::new(store, keystore, Arc::new(Applier::unwired()), 1, dir.path()).unwrap();
        let sm = StateMachine::new(shared)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

/// The append path reports its progress: what the Redis proposer paces its entries by.
#[tokio::test]
async fn appends_report_how_far_they_have_got() {
    let (_dir, log, sm) = Builder.build().await.unwrap();
    let progress = log.flush_progress();
    assert_eq!(progress.started_to(), 0);
    // Appends entries 1..=10, purges, then appends 11: every append goes through `append`.
    Suite::<TypeConfig, LogStore, StateMachine, Builder, tempfile::TempDir>::append_to_log(log, sm).await.unwrap();
    assert_eq!(progress.started_to(), 11);
    tokio::time::timeout(std::time::Duration::from_secs(5), progress.flushed(11))
        .await
        .expect("the append of entry 11 was reported as fsynced");
}
