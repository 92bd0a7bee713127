//! The disk's raw synchronous-write latency, measured the way the cluster uses it: a small
//! append followed by `fdatasync`, one at a time, in the directory the cluster's data lives in.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stats::{Summary, summarize};

/// Appends `size`-byte records with `fdatasync` after each, for `duration`.
pub fn measure(dir: &Path, size: usize, duration: Duration) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe.bin");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let record = vec![0xA5u8; size];
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        f.write_all(&record)?;
        f.sync_data()?;
        samples.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    let window = start.elapsed();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(summarize(samples, window, 0))
}
