//! Reads every envelope on a stopped node's disk, for the nonce-reuse audit: sealed store values
//! (through the store) and wrapped Raft log entries (above the cutover).

use sealkv_crypto::Purpose;
use sealkv_crypto::envelope::Header;
use sealkv_store::Store;

/// `(surface, key_id, nonce, tag)` of one envelope. Two envelopes with the same key id and nonce
/// but different tags would be a nonce reuse; identical ones are copies of one envelope
/// (replication, snapshots).
pub type Seen = (&'static str, u32, [u8; 12], Vec<u8>);

fn tag(envelope: &[u8]) -> Vec<u8> {
    envelope.get(envelope.len().saturating_sub(16)..).unwrap_or_default().to_vec()
}

/// Every envelope in `store`'s data keyspace and in its Raft log above `cutover`.
pub fn envelopes(store: &Store, cutover: u64) -> anyhow::Result<Vec<Seen>> {
    let mut out: Vec<Seen> =
        store.envelopes()?.into_iter().map(|(key_id, nonce, tag)| ("store", key_id, nonce, tag)).collect();
    if cutover == 0 {
        return Ok(out);
    }
    let log = sealkv_raft::log_store::LogStore::open(store.database())?;
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
