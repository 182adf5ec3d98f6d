//! The throughput benchmark (not a timed test). Run it explicitly:
//!
//! ```sh
//! cargo test --release --test bench -- --ignored --nocapture
//! ```
//!
//! It produces `KAFKA_STORE_BENCH_MB` (default 1024) MB of 1 KiB JSON-like
//! records over 8 partitions into the test broker, archives them with the
//! release binary into a local directory (`kafka-store run
//! --until-caught-up`), and prints MB/s, records/s and peak RSS; then, in
//! the same run, the throughput of compressing the same bytes with the same
//! codec in memory on as many threads as the archiver has encoders: the
//! ceiling. Knobs: `KAFKA_STORE_BENCH_CODEC` (deflate), `..._LEVEL`,
//! `..._PARTITIONS` (8), `..._PRODUCER_CODEC` (lz4); `KAFKA_STORE_BENCH_GCS=0`
//! skips the second part, which archives the same topic into the GCS
//! emulator twice (16 MiB and 128 MiB files) and prints MB/s and peak RSS.

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::{Rec, Rng, Setup};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A JSON-like event of about `size` bytes (compresses like real events).
fn event(rng: &mut Rng, seq: u64, size: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "checkout", "click", "view", "search", "cart", "login", "logout", "error", "mobile",
        "desktop", "eu-west", "us-east", "premium", "trial", "referral", "organic",
    ];
    let mut s = format!(
        r#"{{"seq":{seq},"user":"u{:06}","session":"{:016x}","ts":{},"event":"{}","device":"{}","region":"{}","plan":"{}","items":["#,
        rng.below(200_000),
        rng.next(),
        1_700_000_000_000u64 + seq * 3,
        WORDS[rng.below(8) as usize],
        WORDS[8 + rng.below(2) as usize],
        WORDS[10 + rng.below(2) as usize],
        WORDS[12 + rng.below(4) as usize],
    );
    while s.len() < size - 40 {
        s.push_str(&format!(
            r#"{{"sku":"SKU-{:05}","qty":{},"price":{}.{:02}}},"#,
            rng.below(30_000),
            1 + rng.below(4),
            rng.below(500),
            rng.below(100)
        ));
    }
    s.push_str(r#"{"end":true}],"ok":true}"#);
    s.truncate(size);
    s.into_bytes()
}

/// Compresses `data` in 1 MiB blocks (like the archiver's Avro blocks) on
/// `threads` threads; returns MB/s of input.
fn ceiling(data: &[u8], threads: usize, codec: &str, level: i32) -> f64 {
    let share = data.len().div_ceil(threads);
    let started = Instant::now();
    std::thread::scope(|s| {
        for part in data.chunks(share) {
            s.spawn(move || {
                let mut out = Vec::with_capacity(1 << 20);
                for block in part.chunks(1 << 20) {
                    out.clear();
                    match codec {
                        "deflate" => {
                            let mut e = flate2::write::DeflateEncoder::new(
                                &mut out,
                                flate2::Compression::new(level as u32),
                            );
                            e.write_all(block).unwrap();
                            e.finish().unwrap();
                        }
                        "zstandard" => {
                            out = zstd::bulk::compress(block, level).unwrap();
                        }
                        "snappy" => {
                            out = snap::raw::Encoder::new().compress_vec(block).unwrap();
                        }
                        _ => out.extend_from_slice(block),
                    }
                    std::hint::black_box(&out);
                }
            });
        }
    });
    data.len() as f64 / 1e6 / started.elapsed().as_secs_f64()
}

#[test]
#[ignore = "a benchmark: run with --release --ignored --nocapture"]
fn archive_throughput_and_memory() {
    let _broker = support::shared_broker();
    let mb: usize = env_or("KAFKA_STORE_BENCH_MB", 1024);
    let partitions: i32 = env_or("KAFKA_STORE_BENCH_PARTITIONS", 8);
    let codec: String = env_or("KAFKA_STORE_BENCH_CODEC", "deflate".to_string());
    let level: i32 = env_or(
        "KAFKA_STORE_BENCH_LEVEL",
        if codec == "zstandard" { 3 } else { 6 },
    );
    let producer_codec: String = env_or("KAFKA_STORE_BENCH_PRODUCER_CODEC", "lz4".to_string());
    let record_size = 1024;
    let n = mb * 1_000_000 / record_size;

    // Produce in slices so the test never holds the whole volume twice.
    let topic = support::unique("bench");
    support::create_topic(&topic, partitions, &[]);
    let mut rng = Rng::new(42);
    let mut sample = Vec::with_capacity(mb * 1_000_000);
    let produce_started = Instant::now();
    let slice = 50_000;
    for start in (0..n).step_by(slice) {
        let recs: Vec<Rec> = (start..(start + slice).min(n))
            .map(|i| {
                let value = event(&mut rng, i as u64, record_size - 16);
                sample.extend_from_slice(&value);
                Rec {
                    partition: (i as i32) % partitions,
                    timestamp: 1_700_000_000_000 + i as i64,
                    key: Some(format!("user-{:08}", i % 100_000).into_bytes()),
                    value: Some(value),
                    headers: vec![],
                }
            })
            .collect();
        support::produce(&topic, &recs, &producer_codec);
    }
    let bytes = (n * record_size) as f64;
    eprintln!(
        "produced {n} records ({:.0} MB, producer codec {producer_codec}) in {:.1}s",
        bytes / 1e6,
        produce_started.elapsed().as_secs_f64()
    );

    let encoders = std::thread::available_parallelism().map_or(2, |n| n.get());
    let level_key = if codec == "deflate" || codec == "zstandard" {
        format!("compression_level = {level}\n")
    } else {
        String::new()
    };
    let files = format!("codec = \"{codec}\"\n{level_key}");
    let setup = Setup::new(&[&topic], &support::unique("bench"), "", &files);
    let (secs, peak_kib, reported) = measure(&setup);
    let archived: u64 = support::snapshot(&setup.archive)
        .values()
        .map(|b| b.len() as u64)
        .sum();

    let ceiling_mbs = ceiling(&sample, encoders, &codec, level);
    let mbs = bytes / 1e6 / secs;
    println!();
    let level_note = if level_key.is_empty() {
        String::new()
    } else {
        format!(" level {level}")
    };
    println!(
        "kafka-store bench: {n} records of {record_size} B over {partitions} partitions, codec {codec}{level_note}, {encoders} encoder threads"
    );
    println!(
        "  archive run      {secs:.1} s  {mbs:.1} MB/s  {:.0} records/s",
        n as f64 / secs
    );
    println!(
        "  peak RSS         {:.1} MiB (polled), {reported} (reported at exit)",
        peak_kib as f64 / 1024.0
    );
    println!(
        "  archive size     {:.1} MB ({:.2}x smaller)",
        archived as f64 / 1e6,
        bytes / archived as f64
    );
    println!(
        "  ceiling          {ceiling_mbs:.1} MB/s ({codec} of the same values in memory, {encoders} threads)"
    );
    println!("  of the ceiling   {:.0}%", 100.0 * mbs / ceiling_mbs);

    // The same topic into the GCS emulator (a Python server on the same
    // cores, so far slower than GCS): memory must not grow with file size,
    // since uploads stream from the spool file chunk by chunk.
    if std::env::var("KAFKA_STORE_BENCH_GCS").as_deref() != Ok("0") {
        for max_file in ["16MiB", "128MiB"] {
            let bucket = support::gcs_bucket();
            let files = format!("{files}max_file_bytes = \"{max_file}\"\n");
            let s = Setup::gcs(
                &[&topic],
                &support::unique("bench"),
                &bucket,
                support::GCS_EMULATOR,
                &files,
                "",
            );
            let (secs, peak_kib, _) = measure(&s);
            println!(
                "  to gs:// emulator  max_file_bytes {max_file}: {secs:.1} s  {:.1} MB/s  peak RSS {:.1} MiB",
                bytes / 1e6 / secs,
                peak_kib as f64 / 1024.0
            );
        }
    }
}

/// Runs `kafka-store run --until-caught-up`: seconds, peak RSS polled from
/// /proc (KiB), and the peak the binary reported at exit.
fn measure(setup: &Setup) -> (f64, u64, String) {
    let mut child = setup.spawn(&["--until-caught-up"]);
    let stderr = support::drain(child.stderr.take());
    let pid = child.id();
    let started = Instant::now();
    let mut peak_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok());
        peak_kib = peak_kib.max(kib.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let status = child.wait().unwrap();
    let stderr = stderr.join().unwrap();
    let log = String::from_utf8_lossy(&stderr);
    assert!(status.success(), "{log}");
    let reported = log
        .lines()
        .find_map(|l| l.split("peak memory ").nth(1))
        .unwrap_or("?")
        .to_string();
    (secs, peak_kib, reported)
}
