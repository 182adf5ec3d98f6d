//! The benchmark (not a timed test). Run it explicitly:
//!
//! ```sh
//! cargo test --release --test bench -- --ignored --nocapture
//! ```
//!
//! `archive_throughput_and_memory` produces `KAFKA_STORE_BENCH_MB` (default
//! 1024) MB of 1 KiB JSON-like records over 8 partitions into the test
//! broker, archives them with the release binary into a local directory
//! (`kafka-store run --until-caught-up`), and prints MB/s, records/s, peak
//! RSS, peak open descriptors and the size ratio; then, in the same run, the
//! throughput of compressing the same bytes with the same codec in memory
//! on as many threads as the archiver has encoders: the ceiling (for deflate
//! both libdeflate, which the archiver uses, and zlib-rs). Knobs:
//! `KAFKA_STORE_BENCH_CODEC` (deflate), `..._LEVEL`, `..._PRODUCER_CODEC`
//! (lz4). Then it restores the archive into a new topic (`kafka-store
//! restore`) and proves it (`verify --deep`), each with MB/s, records/s and
//! peak RSS (`KAFKA_STORE_BENCH_RESTORE=0` skips both).
//! `KAFKA_STORE_BENCH_LOG=1` prints the binary's log of each archive,
//! restore and verify run.
//! `KAFKA_STORE_BENCH_S3=0` skips the S3 part (the same into the S3 test
//! server, 16 MiB and 128 MiB files). `KAFKA_STORE_BENCH_GCS=0` skips the
//! GCS part, which archives
//! the same topic into the GCS emulator twice (16 MiB and 128 MiB files) and
//! prints MB/s and peak RSS.
//!
//! `many_partitions` creates `KAFKA_STORE_BENCH_PARTITIONS` (default
//! 10,000) partitions with a few records each and runs `kafka-store run`
//! (the service, `idle_flush` long so that every file stays open) against
//! the GCS emulator, once per codec (`KAFKA_STORE_BENCH_CODECS`, default
//! `deflate,zstandard,snappy`): seconds until every partition has a file
//! open in the spool, peak RSS and peak open descriptors, then SIGTERM.

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Rec, Rng, Setup};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Each benchmark measures the whole machine: the test harness runs tests
/// in parallel, so they take turns.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
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
/// `threads` threads with `encoder`; returns MB/s of input and the bytes
/// compressed.
fn ceiling(data: &[u8], threads: usize, encoder: &str, level: i32) -> (f64, u64) {
    let share = data.len().div_ceil(threads);
    let started = Instant::now();
    let compressed: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = data
            .chunks(share)
            .map(|part| {
                s.spawn(move || {
                    let mut out = Vec::with_capacity(2 << 20);
                    let mut total = 0u64;
                    let mut libdeflate = libdeflater::Compressor::new(
                        libdeflater::CompressionLvl::new(level.clamp(0, 12)).unwrap(),
                    );
                    for block in part.chunks(1 << 20) {
                        out.clear();
                        match encoder {
                            "libdeflate" => {
                                out.resize(libdeflate.deflate_compress_bound(block.len()), 0);
                                let n = libdeflate.deflate_compress(block, &mut out).unwrap();
                                out.truncate(n);
                            }
                            "zlib-rs" => {
                                let mut e = flate2::write::DeflateEncoder::new(
                                    &mut out,
                                    flate2::Compression::new(level as u32),
                                );
                                e.write_all(block).unwrap();
                                e.finish().unwrap();
                            }
                            "zstandard" => out = zstd::bulk::compress(block, level).unwrap(),
                            "snappy" => {
                                out = snap::raw::Encoder::new().compress_vec(block).unwrap()
                            }
                            _ => out.extend_from_slice(block),
                        }
                        total += out.len() as u64;
                        std::hint::black_box(&out);
                    }
                    total
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let mbs = data.len() as f64 / 1e6 / started.elapsed().as_secs_f64();
    (mbs, compressed)
}

#[test]
#[ignore = "a benchmark: run with --release --ignored --nocapture"]
fn archive_throughput_and_memory() {
    let _machine = one_at_a_time();
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
    let encoders_of = if codec == "deflate" {
        vec!["libdeflate", "zlib-rs"]
    } else {
        vec![codec.as_str()]
    };
    // The ceilings are measured before and after the archive run, and
    // averaged: the speed of this machine drifts over a minute.
    let ceilings = || -> Vec<(f64, u64)> {
        encoders_of
            .iter()
            .map(|e| ceiling(&sample, encoders, e, level))
            .collect()
    };
    // One unmeasured run first, into an archive of its own: the broker's
    // JIT compiles its fetch path while it serves the first consumer (a
    // twentieth of the machine in the first run, by perf), and a broker in
    // production has long done that.
    measure(&Setup::new(
        &[&topic],
        &support::unique("bench"),
        "",
        &files,
    ));
    settle();
    let before = ceilings();
    let m = measure(&setup);
    let after = ceilings();
    let secs = m.secs;
    let archived: u64 = support::snapshot(&setup.archive)
        .values()
        .map(|b| b.len() as u64)
        .sum();

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
        "  peak RSS         {:.1} MiB (polled), {} (reported at exit)",
        m.peak_kib as f64 / 1024.0,
        m.reported
    );
    println!("  peak open fds    {}", m.peak_fds);
    println!(
        "  archive size     {:.1} MB ({:.2}x smaller than the values)",
        archived as f64 / 1e6,
        bytes / archived as f64
    );
    for (e, (b, a)) in encoders_of.iter().zip(before.iter().zip(&after)) {
        let ceiling_mbs = (b.0 + a.0) / 2.0;
        println!(
            "  ceiling {e:<10} {ceiling_mbs:.1} MB/s ({:.1} before, {:.1} after), {:.1} MB: {e} of the same values in memory, 1 MiB blocks, {encoders} threads",
            b.0,
            a.0,
            a.1 as f64 / 1e6
        );
        println!("    the archive runs at {:.2}x it", mbs / ceiling_mbs);
    }

    // The archive back into Kafka, and proven against itself.
    if std::env::var("KAFKA_STORE_BENCH_RESTORE").as_deref() != Ok("0") {
        let target = support::unique("bench-restored");
        support::create_topic(&target, partitions, &[]);
        let args = ["restore", "--topic", &topic, "--to-topic", &target];
        let m = measure_command(&setup, &args);
        println!(
            "  restore          {:.1} s  {:.1} MB/s  {:.0} records/s  peak RSS {:.1} MiB (lz4 batches, acks=all)",
            m.secs,
            bytes / 1e6 / m.secs,
            n as f64 / m.secs,
            m.peak_kib as f64 / 1024.0
        );
        support::delete_topic(&target);
        let m = measure_command(&setup, &["verify", "--topic", &topic, "--deep"]);
        println!(
            "  verify --deep    {:.1} s  {:.1} MB/s  {:.0} records/s  peak RSS {:.1} MiB",
            m.secs,
            bytes / 1e6 / m.secs,
            n as f64 / m.secs,
            m.peak_kib as f64 / 1024.0
        );
    }

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
            let m = measure(&s);
            println!(
                "  to gs:// emulator  max_file_bytes {max_file}: {:.1} s  {:.1} MB/s  peak RSS {:.1} MiB",
                m.secs,
                bytes / 1e6 / m.secs,
                m.peak_kib as f64 / 1024.0
            );
        }
    }
    // And into the S3 test server (s3s-fs, on the same cores and disk),
    // single PUTs up to part_bytes (16 MiB) and multipart uploads above.
    if std::env::var("KAFKA_STORE_BENCH_S3").as_deref() != Ok("0") {
        for max_file in ["16MiB", "128MiB"] {
            let bucket = support::s3_bucket();
            let files = format!("{files}max_file_bytes = \"{max_file}\"\n");
            let s = Setup::s3(
                &[&topic],
                &support::unique("bench"),
                &bucket,
                support::S3_ENDPOINT,
                &files,
                "",
            );
            let m = measure(&s);
            println!(
                "  to s3:// (s3s-fs) max_file_bytes {max_file}: {:.1} s  {:.1} MB/s  peak RSS {:.1} MiB",
                m.secs,
                bytes / 1e6 / m.secs,
                m.peak_kib as f64 / 1024.0
            );
        }
    }
    support::delete_topic(&topic);
}

/// Waits until the machine is quiet: producing leaves dirty pages and a busy
/// broker behind for a while, and a ceiling measured meanwhile would run
/// slow (and flatter the archive). Writes the dirty pages back, then waits
/// for a second with less than 10% of the CPUs busy (at most 30 s).
fn settle() {
    fn cpu() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let idle = fields.get(3).unwrap_or(&0) + fields.get(4).unwrap_or(&0);
        (fields.iter().sum(), idle)
    }
    let started = Instant::now();
    let _ = std::process::Command::new("sync").status();
    let mut busy = 1.0;
    while started.elapsed() < Duration::from_secs(30) {
        let (total, idle) = cpu();
        std::thread::sleep(Duration::from_secs(1));
        let (total2, idle2) = cpu();
        busy = 1.0 - (idle2 - idle) as f64 / (total2 - total).max(1) as f64;
        if busy < 0.10 {
            break;
        }
    }
    eprintln!(
        "settled in {:.1} s ({:.0}% of the CPUs busy in the last second)",
        started.elapsed().as_secs_f64(),
        busy * 100.0
    );
}

/// What one run of the binary measured.
struct Measured {
    secs: f64,
    /// Peak RSS polled from /proc (KiB).
    peak_kib: u64,
    /// The peak the binary reported at exit.
    reported: String,
    peak_fds: usize,
}

/// The process's peak RSS so far (KiB) and its open descriptors now.
fn poll(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (kib, fds)
}

/// Runs `kafka-store run --until-caught-up`.
fn measure(setup: &Setup) -> Measured {
    measure_child(setup.spawn(&["--until-caught-up"]))
}

/// Runs another command of the binary, e.g. `restore`, against `setup`.
fn measure_command(setup: &Setup, args: &[&str]) -> Measured {
    let mut all = vec![args[0], "--config", setup.config.to_str().unwrap()];
    all.extend_from_slice(&args[1..]);
    let child = setup
        .command(&all)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    measure_child(child)
}

/// Polls a running binary's memory and descriptors until it exits. The
/// exit is waited for, not polled, so the time is exact; polling is sparse
/// (VmHWM is the peak anyway) to take little of the machine measured.
fn measure_child(mut child: std::process::Child) -> Measured {
    let stderr = support::drain(child.stderr.take());
    let pid = child.id();
    let started = Instant::now();
    let exited = AtomicBool::new(false);
    let (secs, status, (peak_kib, peak_fds)) = std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let (mut peak_kib, mut peak_fds) = (0, 0);
            while !exited.load(Ordering::Relaxed) {
                let (kib, fds) = poll(pid);
                peak_kib = peak_kib.max(kib);
                peak_fds = peak_fds.max(fds);
                std::thread::sleep(Duration::from_millis(50));
            }
            (peak_kib, peak_fds)
        });
        let status = child.wait().unwrap();
        let secs = started.elapsed().as_secs_f64();
        exited.store(true, Ordering::Relaxed);
        (secs, status, poller.join().unwrap())
    });
    let stderr = stderr.join().unwrap();
    let log = String::from_utf8_lossy(&stderr);
    assert!(status.success(), "{log}");
    if std::env::var("KAFKA_STORE_BENCH_LOG").as_deref() == Ok("1") {
        eprintln!("{log}");
    }
    let reported = log
        .lines()
        .find_map(|l| l.split("peak memory ").nth(1))
        .unwrap_or("?")
        .to_string();
    Measured {
        secs,
        peak_kib,
        reported,
        peak_fds,
    }
}

#[test]
#[ignore = "a benchmark: run with --release --ignored --nocapture"]
fn many_partitions() {
    let _machine = one_at_a_time();
    let _broker = support::shared_broker();
    let partitions: i32 = env_or("KAFKA_STORE_BENCH_PARTITIONS", 10_000);
    let codecs: String = env_or(
        "KAFKA_STORE_BENCH_CODECS",
        "deflate,zstandard,snappy".to_string(),
    );
    let per_partition = 3;
    let topic = support::unique("bench-many");
    let created = Instant::now();
    // A KRaft controller takes at most 10,000 records in one operation:
    // create the partitions a few thousand at a time.
    const STEP: i32 = 4000;
    support::create_topic(&topic, partitions.min(STEP), &[]);
    for total in (2 * STEP..partitions + STEP).step_by(STEP as usize) {
        support::add_partitions(&topic, total.min(partitions));
    }
    support::wait_for_partitions(&topic, partitions as usize);
    let mut rng = Rng::new(7);
    let recs: Vec<Rec> = (0..partitions * per_partition)
        .map(|i| Rec {
            partition: i % partitions,
            timestamp: 1_700_000_000_000 + i64::from(i),
            key: None,
            value: Some(event(&mut rng, i as u64, 1000)),
            headers: vec![],
        })
        .collect();
    for slice in recs.chunks(20_000) {
        support::produce(&topic, slice, "lz4");
    }
    eprintln!(
        "{partitions} partitions, {} records, created and produced in {:.1}s",
        recs.len(),
        created.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "kafka-store bench: {partitions} partitions with a file open each ({per_partition} records of 1 KB), `run` against the GCS emulator"
    );
    for codec in codecs.split(',') {
        let bucket = support::gcs_bucket();
        let s = Setup::gcs(
            &[&topic],
            &support::unique("bench-many"),
            &bucket,
            support::GCS_EMULATOR,
            &format!("codec = \"{codec}\"\nidle_flush = \"1h\"\n"),
            "",
        );
        let spool = s.dir.path().join("spool");
        let mut child = s.spawn(&[]);
        let stderr = support::drain(child.stderr.take());
        let pid = child.id();
        let started = Instant::now();
        let (mut peak_kib, mut peak_fds) = (0, 0);
        let mut all_open = None;
        loop {
            assert!(child.try_wait().unwrap().is_none(), "kafka-store exited");
            let (kib, fds) = poll(pid);
            peak_kib = peak_kib.max(kib);
            peak_fds = peak_fds.max(fds);
            let now = started.elapsed().as_secs_f64();
            match all_open {
                // A few seconds more with every file open.
                Some(at) if now > at + 3.0 => break,
                None if support::open_spool_files(&spool) == partitions as usize => {
                    all_open = Some(now)
                }
                None if now > 600.0 => break,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        support::signal(&child, "-TERM");
        let status = support::wait_with_timeout(child, Duration::from_secs(60)).status;
        let log = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
        let all_open = all_open.unwrap_or_else(|| panic!("not every partition started: {log}"));
        assert!(status.success(), "{log}");
        println!(
            "  {codec:<10} all started in {all_open:.1} s  peak RSS {:.1} MiB  peak open fds {peak_fds}",
            peak_kib as f64 / 1024.0
        );
    }
    support::delete_topic(&topic);
}
