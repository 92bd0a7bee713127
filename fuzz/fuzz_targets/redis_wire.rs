//! The Redis frontend's decoders: client requests (RESP), command batches (bare and levelled), meta and count
//! records, reply lists. Never panic; a decoded command batch or reply list re-encodes to the
//! same bytes (both codecs are canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkv_redis::layout::{Counts, Meta};
use sealkv_redis::reply_list::{decode_replies, encode_replies};
use sealkv_redis::{entry, resp};

fuzz_target!(|data: &[u8]| {
    let _ = resp::parse(data, &resp::Limits::default());
    let _ = Meta::decode(data);
    let _ = Counts::decode(data);
    if let Ok(groups) = entry::decode(data) {
        assert_eq!(entry::encode(&groups), data);
    }
    if let Ok((rules, groups)) = entry::decode_entry(data) {
        assert_eq!(entry::encode_entry(rules, &groups), data);
    }
    if let Ok(replies) = decode_replies(data) {
        assert_eq!(encode_replies(&replies), data);
    }
});
