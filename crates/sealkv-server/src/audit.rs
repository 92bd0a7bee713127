//! Reads every envelope on a stopped node's disk, for the nonce-reuse audit: sealed store values
//! (data keyspace) and wrapped Raft log entries (above the cutover).

use anyhow::Context;
use fjall::KeyspaceCreateOptions;
use sealkv_crypto::Purpose;
use sealkv_crypto::envelope::Header;
use sealkv_store::Store;
use sealkv_store::value::{EncryptionState, ValueHeader};

/// `(surface, key_id, nonce, tag)` of one envelope. Two envelopes with the same key id and nonce
/// but different tags would be a nonce reuse; identical ones are copies of one envelope
/// (replication, snapshots).
pub type Seen = (&'static str, u32, [u8; 12], Vec<u8>);

fn tag(envelope: &[u8]) -> Vec<u8> {
    envelope.get(envelope.len().saturating_sub(16)..).unwrap_or_default().to_vec()
}

/// Every envelope in `store`'s data keyspace and in its Raft log above `cutover`.
pub fn envelopes(store: &Store, cutover: u64) -> anyhow::Result<Vec<Seen>> {
    let db = store.database();
    let mut out = Vec::new();
    let data = db.keyspace("data", KeyspaceCreateOptions::default).context("cannot open the data keyspace")?;
    for guard in data.iter() {
        let (_, v) = guard.into_inner()?;
        let Ok((vh, _, body)) = ValueHeader::split(&v) else { continue };
        if !vh.tombstone
            && vh.state == EncryptionState::Envelope
            && let Ok(h) = Header::parse(body, Purpose::Storage)
        {
            out.push(("store", h.key_id, h.nonce, tag(body)));
        }
    }
    if cutover == 0 {
        return Ok(out);
    }
    let log = sealkv_raft::log_store::LogStore::open(db)?;
    log.scan(cutover, u64::MAX, &mut |e| {
        if let openraft::EntryPayload::Normal(p) = &e.payload
            && let Ok(h) = Header::parse(&p.0, Purpose::Raft)
        {
            out.push(("raft", h.key_id, h.nonce, tag(&p.0)));
        }
        true
    })?;
    Ok(out)
}
