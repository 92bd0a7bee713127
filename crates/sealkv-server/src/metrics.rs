//! Prometheus metrics on `--listen-metrics` (`GET /metrics`, text exposition 0.0.4, prefix
//! `sealkv_`), spec 03 §7. Every figure is read at scrape time from the state the node already
//! keeps (raft metrics, the sidecar, the sealers' nonce counters, the row cache, the crypto
//! layer's refusal counters, the write path's stage timings), so serving metrics adds nothing to
//! the request path; recording the stage timings costs two relaxed atomic adds per entry, RPC or
//! Redis run where they are taken. Labels carry key ids, purposes and reasons only: never key
//! bytes, wrapped or not.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use openraft::ServerState;
use sealkv_crypto::envelope::decrypt_failures;
use sealkv_raft::timing::Timing;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::encryption;
use crate::node::App;
use crate::redis::conn::Frontend;

/// Scrapers served at once; more wait for a slot, so a flood of connections cannot grow memory.
const MAX_CONNECTIONS: usize = 64;
/// A scraper that has not sent its request head by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a scrape reads: the node, and its Redis frontend when it runs one.
pub struct Sources {
    pub(crate) app: Arc<App>,
    pub(crate) redis: Option<Arc<Frontend>>,
}

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, sources: Arc<Sources>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning on the error.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(respond(&sources, &req)) }
            });
            // One request per connection: an idle keep-alive connection would hold a slot.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
        });
    }
}

fn respond<B>(sources: &Sources, req: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", render(sources))
        }
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET /metrics\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "sealkv serves Prometheus metrics on /metrics\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// The exposition text of one scrape.
pub fn render(sources: &Sources) -> String {
    let app = &sources.app;
    let mut out = Exposition::default();
    let m = app.raft.metrics().borrow().clone();
    out.gauge("raft_term", "Current Raft term.", m.current_term);
    out.gauge("raft_is_leader", "1 on the leader, 0 elsewhere.", u64::from(m.state == ServerState::Leader));
    out.gauge("raft_last_log_index", "Index of the last entry in this node's log.", m.last_log_index.unwrap_or(0));
    out.gauge(
        "raft_last_applied_index",
        "Index of the last entry applied here.",
        m.last_applied.map_or(0, |l| l.index),
    );
    out.gauge("raft_snapshot_index", "Last index the newest snapshot covers.", m.snapshot.map_or(0, |l| l.index));
    out.gauge("raft_purged_index", "Last index purged from the log.", m.purged.map_or(0, |l| l.index));
    out.gauge("raft_voters", "Voters in the applied membership.", m.membership_config.membership().voter_ids().count());
    let log = app.log.sizes(|s| s.usage());
    out.gauge("raft_log_entries", "Entries held in the Raft log.", log.entries);
    out.gauge("raft_log_bytes", "Encoded bytes held in the Raft log.", log.bytes);
    // Where a write's time goes, stage by stage (mean = rate(_sum) / rate(_count)).
    out.timing(
        "raft_log_append_seconds",
        "Raft log appends on this node: the journal write and its fsync, before the entries count as stored.",
        app.log.append_timing(),
    );
    out.timing(
        "raft_append_entries_seconds",
        "AppendEntries this node sent while leading, round trip (the follower's log append included).",
        &app.append_rpcs,
    );
    out.timing(
        "raft_apply_seconds",
        "Apply calls on this node: each evaluates a run of committed entries and writes them as one store batch.",
        app.shared.apply_timing(),
    );
    out.timing(
        "raft_propose_seconds",
        "Proposals this node made while leading, until applied here (log append, replication, commit, apply).",
        app.coordinator.propose_timing(),
    );
    out.timing(
        "redis_write_seconds",
        "Redis writes this node ran as leader, a connection's pipelined run once: group-commit wait, proposal, apply.",
        &app.redis.writes,
    );
    out.timing(
        "redis_read_seconds",
        "Redis reads this node ran as leader, a connection's pipelined run once: read barrier (or lease), evaluation.",
        &app.redis.reads,
    );
    out.timing(
        "redis_long_read_seconds",
        "The evaluation of Redis reads that may take long (KEYS, SCAN, whole-collection reads, long pipelines), run off the async workers.",
        &app.redis.long_reads,
    );
    out.gauge(
        "apply_halted",
        "1 when apply stopped on an error (see the log and the runbook); nothing is applied past it.",
        u64::from(app.shared.halted().is_some()),
    );

    if let Some(fe) = &sources.redis {
        out.gauge("redis_connected_clients", "Open Redis connections.", fe.clients.len());
        out.counter(
            "redis_commands_processed_total",
            "Redis commands answered by this node.",
            fe.commands_processed.load(Ordering::Relaxed),
        );
    }

    let rows = app.shared.store.row_cache_stats();
    out.counter("row_cache_hits_total", "Newest-version lookups answered by the row cache.", rows.hits);
    out.counter("row_cache_misses_total", "Newest-version lookups that read the LSM.", rows.misses);
    out.gauge("row_cache_bytes", "Bytes held by the row cache.", rows.bytes);

    let engine = app.shared.store.engine_stats();
    out.gauge("store_memtable_bytes", "Bytes in memtables, not yet written to tables.", engine.memtable_bytes);
    out.gauge("store_flushes_pending", "Sealed memtables waiting for a flush.", engine.flushes_pending);
    out.gauge("store_compactions_running", "Compactions running now.", engine.compactions_running);
    out.counter(
        "store_compactions_completed_total",
        "Compactions finished since the node started.",
        engine.compactions_completed,
    );
    out.gauge("store_journal_files", "Journal files on disk.", engine.journal_files);

    let e = encryption::local_state(app);
    out.gauge("encryption_enabled", "1 when this node runs with a KEK.", u64::from(e.enabled));
    out.gauge("encryption_storage_envelope", "1 once new versions are sealed at rest.", u64::from(e.storage_envelope));
    out.gauge(
        "encryption_raft_cutover_index",
        "Log index from which Raft payloads are sealed (0: not yet).",
        e.raft_cutover_index,
    );
    out.gauge(
        "encryption_sidecar_applied_index",
        "Raft index the key sidecar has applied encryption entries up to.",
        e.sidecar_applied_index,
    );
    out.family(
        "encryption_active_dek_id",
        "Key id of the active DEK per purpose (0: none).",
        "gauge",
        [("purpose", "storage".to_owned(), e.active_storage), ("purpose", "raft".to_owned(), e.active_raft)]
            .into_iter()
            .map(|(l, v, n)| (l, v, u64::from(n))),
    );
    out.family(
        "encryption_local_epoch",
        "This node's process-load counter per DEK (the nonce prefix; 65535 means rotate).",
        "gauge",
        e.keys.iter().map(|k| ("key_id", k.id.to_string(), u64::from(k.local_epoch))),
    );
    out.family(
        "encryption_last_proposed_index",
        "Per raft DEK, the newest log index this node proposed under it while it led (this process).",
        "gauge",
        app.coordinator.last_proposed().into_iter().map(|(id, index)| ("key_id", id.to_string(), index)),
    );
    out.timing(
        "encryption_kek_unwrap_seconds",
        "Time the KEK took to unwrap DEKs during this process load (start, rotations), failures included.",
        &app.kek_unwraps,
    );
    let sealers = [app.shared.store.sealer(), app.shared.raft_sealer()];
    out.family(
        "encryption_writes_total",
        "Seals under each active DEK during this process load (nonces issued).",
        "counter",
        sealers.iter().flatten().map(|s| ("key_id", s.key_id().to_string(), s.nonces().issued())),
    );
    out.family(
        "encryption_decrypt_failures_total",
        "Envelopes this process refused to open, per reason.",
        "counter",
        decrypt_failures().into_iter().map(|(r, n)| ("reason", r.as_str().to_owned(), n)),
    );
    out.text
}

/// Prometheus text format, one family at a time.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP sealkv_{name} {}", escape(help, false));
        let _ = writeln!(self.text, "# TYPE sealkv_{name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl TryInto<u64>) {
        self.head(name, help, "gauge");
        let _ = writeln!(self.text, "sealkv_{name} {}", value.try_into().unwrap_or(u64::MAX));
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, help, "counter");
        let _ = writeln!(self.text, "sealkv_{name} {value}");
    }

    /// A [`Timing`] as a summary without quantiles.
    fn timing(&mut self, name: &str, help: &str, t: &Timing) {
        self.summary(name, help, t.seconds(), t.count());
    }

    /// A summary without quantiles: its sum and count.
    fn summary(&mut self, name: &str, help: &str, sum: f64, count: u64) {
        self.head(name, help, "summary");
        let _ = writeln!(self.text, "sealkv_{name}_sum {sum}");
        let _ = writeln!(self.text, "sealkv_{name}_count {count}");
    }

    /// A family with one label; the header is written even when there is no sample, so a
    /// dashboard sees the family exists.
    fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        samples: impl IntoIterator<Item = (&'static str, String, u64)>,
    ) {
        self.head(name, help, kind);
        for (label, value, n) in samples {
            let _ = writeln!(self.text, "sealkv_{name}{{{label}=\"{}\"}} {n}", escape(&value, true));
        }
    }
}

/// Escapes help text (backslash, newline) and label values (also the double quote).
fn escape(s: &str, label: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_format_is_pinned() {
        let mut e = Exposition::default();
        e.gauge("raft_term", "Current Raft term.", 7u64);
        e.counter("x_total", "a \\ b\nc", 3);
        e.family("f", "F.", "gauge", [("key_id", "12".to_owned(), 1), ("key_id", "a\"b\\c\nd".to_owned(), 2)]);
        e.family("empty", "None yet.", "counter", []);
        e.summary("s_seconds", "S.", 0.25, 2);
        assert_eq!(
            e.text,
            "# HELP sealkv_raft_term Current Raft term.\n# TYPE sealkv_raft_term gauge\nsealkv_raft_term 7\n\
             # HELP sealkv_x_total a \\\\ b\\nc\n# TYPE sealkv_x_total counter\nsealkv_x_total 3\n\
             # HELP sealkv_f F.\n# TYPE sealkv_f gauge\nsealkv_f{key_id=\"12\"} 1\nsealkv_f{key_id=\"a\\\"b\\\\c\\nd\"} 2\n\
             # HELP sealkv_empty None yet.\n# TYPE sealkv_empty counter\n\
             # HELP sealkv_s_seconds S.\n# TYPE sealkv_s_seconds summary\nsealkv_s_seconds_sum 0.25\nsealkv_s_seconds_count 2\n"
        );
    }
}
