//! Measures this disk's fdatasync latency the way the log uses it: append a small record,
//! then `fdatasync`. Prints one JSON line with the median, p99 and count.
//!
//! `cargo run --release -p spoor-log --example fsync_probe -- DIR [COUNT]`

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
    let path = std::path::Path::new(&dir).join("fsync-probe.tmp");
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    let record = [b'x'; 600];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        file.write_all(&record)?;
        let start = Instant::now();
        file.sync_data()?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    std::fs::remove_file(&path)?;
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"fdatasync_ms_p50\": {:.3}, \"fdatasync_ms_p99\": {:.3}, \"count\": {count}}}",
        at(0.5),
        at(0.99)
    );
    Ok(())
}
