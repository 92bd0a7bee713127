//! The storage engine's own log lines, in the node's log.
//!
//! Why: fjall and lsm-tree log through the `log` crate, and the node logs through `tracing`, so
//! without this a failed flush, a failed compaction or a journal spare that could not be made
//! was logged nowhere, while the runbook sends operators to the node's log for exactly those.
//!
//! Only warnings and errors pass. The engine logs at debug and trace level on its hot paths;
//! with the `log` crate's maximum level at warn, those macros stop at a level check and format
//! nothing. What passes names files, ids and errors. Two lsm-tree errors also name a stored key
//! (a blob that a compaction cannot find, a blob pointer that does not decode), as sealkv's own
//! integrity errors do: key names are cleartext on disk by design (docs/redis.md, Storage
//! layout). No value bytes and no key material reach these lines.

/// Forwards `log` records at warn and above to `tracing`, under the target `fjall`.
struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        let module = record.module_path().unwrap_or_else(|| record.target());
        match record.level() {
            log::Level::Error => tracing::error!(target: "fjall", module, "{}", record.args()),
            log::Level::Warn => tracing::warn!(target: "fjall", module, "{}", record.args()),
            _ => {}
        }
    }

    fn flush(&self) {}
}

static BRIDGE: Bridge = Bridge;

/// Installs the bridge once per process; a second call (or another logger already installed)
/// leaves things as they are.
pub fn install() {
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn warnings_and_errors_reach_tracing_and_nothing_below() {
        super::install();
        super::install(); // a second install is harmless
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            log::error!(target: "fjall::flush", "Flush error: disk full");
            log::warn!("spare journal could not be made");
            log::info!("info line");
            log::debug!("debug line");
            log::trace!("trace line");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("ERROR fjall: Flush error: disk full"), "{out}");
        assert!(out.contains("WARN fjall: spare journal could not be made"), "{out}");
        assert!(out.contains("module="), "the engine module is named: {out}");
        for dropped in ["info line", "debug line", "trace line"] {
            assert!(!out.contains(dropped), "{dropped} passed: {out}");
        }
        assert_eq!(log::max_level(), log::LevelFilter::Warn);
    }
}
