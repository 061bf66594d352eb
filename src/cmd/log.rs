//! `defibus log verify|dump|scrub`: tools over stored queue data (`repair`, which writes, is in
//! `log_repair.rs`).
//!
//! `verify` and `dump` read segment files with plain blocking IO and never modify them, so
//! they are safe to run beside a live broker and on a copy taken from a damaged machine. They
//! judge a batch the way the broker's reads and scrub do: header, every checksum (the stamped
//! offset and time included) and offset continuity. `scrub` asks running brokers to verify
//! everything they store now.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use engine::log::skipped::uncovered;
use protocol::record::{BATCH_HEADER_LEN, BATCH_LEN_MAX, BatchHeader, BatchView, Property};

#[derive(Subcommand)]
pub enum LogCommand {
    /// Check every segment of a queue: checksums, layout and offset continuity.
    ///
    /// Judges every batch as the broker's reads and scrub do, and says what the broker does
    /// with what it finds. Exits 0 when the queue is intact, 1 when anything is damaged.
    Verify {
        /// The queue directory holding `<base-offset:020>.log` segments.
        dir: PathBuf,
    },
    /// Print the records of a queue.
    Dump(DumpArgs),
    /// Cut or skip damaged byte ranges and keep every intact batch after them (broker stopped).
    ///
    /// DIR is a queue directory, or a broker's data directory (every queue below it). Intact
    /// batches after damage move to new segments; lost offsets are recorded as skipped; lost or
    /// malformed indexes are rebuilt. Exits 0 when every queue is consistent afterwards.
    Repair(super::log_repair::RepairArgs),
    /// Ask running brokers to read and verify every batch they store, now, and report.
    ///
    /// Brokers also scrub in the background (`storage.scrub_bytes_per_sec`); this runs a pass
    /// at full speed. Damage found is recorded: the queue refuses to serve past it (consumers
    /// get a `stored data is damaged` error) until `defibus log repair`, and `admin topic
    /// stats` shows it. Exits 0 when every queue is intact, 1 when any is damaged or could
    /// not be read.
    Scrub(Box<ScrubArgs>),
}

#[derive(Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    bus: super::shared::BusArgs,
    /// Scrub this broker (host:port of any of its shards) instead of every broker the
    /// nameservers list.
    #[arg(long, value_name = "HOST:PORT")]
    broker: Option<String>,
    /// Scrub only this topic's queues.
    #[arg(long)]
    topic: Option<protocol::names::Topic>,
    /// How long to wait for each broker, seconds: it reads everything it stores.
    #[arg(long, default_value_t = 3600)]
    timeout_s: u64,
}

#[derive(Args)]
pub struct DumpArgs {
    /// The queue directory holding `<base-offset:020>.log` segments.
    dir: PathBuf,
    /// First offset to print.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Most records to print.
    #[arg(long, default_value_t = 20)]
    count: u64,
    /// How to show keys and values.
    #[arg(long, value_enum, default_value_t = ValueFormat::Text)]
    format: ValueFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum ValueFormat {
    /// UTF-8 text, invalid bytes replaced, cut at 200 characters.
    Text,
    /// Lowercase hex.
    Hex,
    /// Lengths only.
    None,
}

pub fn run(command: LogCommand) -> anyhow::Result<ExitCode> {
    match command {
        LogCommand::Verify { dir } => verify(&dir),
        LogCommand::Dump(args) => dump(&args),
        LogCommand::Scrub(args) => scrub(&args),
        LogCommand::Repair(args) => super::log_repair::repair(&args),
    }
}

fn scrub(args: &ScrubArgs) -> anyhow::Result<ExitCode> {
    let client = args.bus.connect()?;
    let admin = client::Admin::new(&client);
    let brokers = super::admin::brokers(&admin, args.broker.as_deref())?;
    let topic = args.topic.as_ref().map(ToString::to_string);
    let timeout = std::time::Duration::from_secs(args.timeout_s);
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for broker in &brokers {
        eprintln!("scrubbing {} ...", broker.id);
        let reply = admin
            .scrub(&broker.endpoint, topic.as_deref(), timeout)
            .with_context(|| format!("scrubbing {}", broker.id))?;
        for queue in &reply.queues {
            let name = format!("{} {}/{}", broker.id, queue.topic, queue.queue_id);
            let status = if !queue.error.is_empty() {
                problems.push(format!("{name}: scrub stopped: {}", queue.error));
                "ERROR".to_owned()
            } else if let Some(damage) = &queue.damage {
                problems.push(format!("{name}: {}", damage.detail));
                format!("DAMAGED@{}", damage.offset)
            } else {
                "ok".to_owned()
            };
            for problem in &queue.index_problems {
                problems.push(format!("{name}: index: {problem}"));
            }
            rows.push(vec![
                broker.id.clone(),
                queue.topic.clone(),
                queue.queue_id.to_string(),
                queue.segments.to_string(),
                queue.batches.to_string(),
                queue.bytes.to_string(),
                status,
            ]);
        }
    }
    print!(
        "{}",
        super::shared::table(
            &[
                "BROKER", "TOPIC", "QUEUE", "SEGMENTS", "BATCHES", "BYTES", "DATA"
            ],
            &rows
        )
    );
    for problem in &problems {
        println!("{problem}");
    }
    let damaged = rows.iter().filter(|r| r[6] != "ok").count();
    if damaged > 0 {
        eprintln!(
            "{damaged} queue(s) damaged or unreadable: offsets past the damage are not served until `defibus log repair` (broker stopped)"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The segments of a queue directory, ordered by base offset.
fn segments(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let base = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|stem| stem.len() == 20)
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(base) = base {
            found.push((base, path));
        }
    }
    found.sort();
    if found.is_empty() {
        bail!(
            "{} holds no segment files (<base-offset:020>.log)",
            dir.display()
        );
    }
    Ok(found)
}

/// Where and why a segment stops being valid.
struct Damage {
    position: u64,
    reason: String,
}

/// Walks the batches of one segment, stopping at the first invalid one.
struct SegmentReader {
    reader: BufReader<File>,
    position: u64,
    next_offset: u64,
    buf: Vec<u8>,
}

impl SegmentReader {
    fn open(path: &Path, base_offset: u64) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 20, file),
            position: 0,
            next_offset: base_offset,
            buf: Vec::new(),
        })
    }

    /// The next valid batch, `Ok(None)` at a clean end (end of file or zero padding), or the
    /// damage that recovery would cut from here on.
    fn next_batch(&mut self) -> io::Result<Result<Option<BatchView<'_>>, Damage>> {
        let damage = |position, reason: String| Ok(Err(Damage { position, reason }));
        self.buf.clear();
        self.buf.resize(BATCH_HEADER_LEN, 0);
        let got = read_full(&mut self.reader, &mut self.buf)?;
        if got == 0 || (self.buf[..got].iter().all(|&b| b == 0) && self.rest_is_zero()?) {
            return Ok(Ok(None));
        }
        if got < BATCH_HEADER_LEN {
            return damage(self.position, format!("torn batch header ({got} bytes)"));
        }
        let header = match BatchHeader::decode(&self.buf) {
            Ok(header) => header,
            Err(e) => return damage(self.position, e.to_string()),
        };
        if let Err(e) = header.validate(BATCH_LEN_MAX) {
            return damage(self.position, e.to_string());
        }
        let len = header.batch_len as usize;
        self.buf.resize(len, 0);
        let got = read_full(&mut self.reader, &mut self.buf[BATCH_HEADER_LEN..])?;
        if got < len - BATCH_HEADER_LEN {
            return damage(
                self.position,
                format!(
                    "torn batch: {} of {len} bytes present",
                    BATCH_HEADER_LEN + got
                ),
            );
        }
        let batch = match BatchView::parse(&self.buf, BATCH_LEN_MAX) {
            Ok(batch) => batch,
            Err(e) => return damage(self.position, e.to_string()),
        };
        if batch.base_offset() != self.next_offset {
            let reason = format!(
                "batch base offset {} breaks continuity (expected {})",
                batch.base_offset(),
                self.next_offset
            );
            return damage(self.position, reason);
        }
        self.position += len as u64;
        self.next_offset = batch.next_offset();
        Ok(Ok(Some(batch)))
    }

    /// True when everything left in the file is zero: DMA padding past the logical end.
    fn rest_is_zero(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.reader.read(&mut chunk)?;
            if n == 0 {
                return Ok(true);
            }
            if chunk[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
    }
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What `verify` found in one segment.
struct SegmentStatus {
    base_offset: u64,
    next_offset: u64,
    batches: u64,
    valid_bytes: u64,
    /// Offset at which the previous segment ended, when this one does not start there.
    gap_after: Option<u64>,
    damage: Option<(Damage, u64)>,
}

/// Walks every segment of a queue; the second element of `damage` is the bytes recovery cuts.
fn check_queue(dir: &Path) -> anyhow::Result<Vec<SegmentStatus>> {
    let mut statuses: Vec<SegmentStatus> = Vec::new();
    for (base, path) in segments(dir)? {
        let gap_after = statuses
            .last()
            .map(|s| s.next_offset)
            .filter(|&end| end != base);
        let mut reader = SegmentReader::open(&path, base)?;
        let mut batches = 0u64;
        let damage = loop {
            match reader
                .next_batch()
                .with_context(|| format!("reading {}", path.display()))?
            {
                Ok(Some(_)) => batches += 1,
                Ok(None) => break None,
                Err(damage) => {
                    let file_len = std::fs::metadata(&path)?.len();
                    let cut = file_len.saturating_sub(damage.position);
                    break Some((damage, cut));
                }
            }
        };
        statuses.push(SegmentStatus {
            base_offset: base,
            next_offset: reader.next_offset,
            batches,
            valid_bytes: reader.position,
            gap_after,
            damage,
        });
    }
    Ok(statuses)
}

fn verify(dir: &Path) -> anyhow::Result<ExitCode> {
    let (lines, intact) = verify_lines(dir)?;
    for line in lines {
        println!("{line}");
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What `log verify` prints for the queue in `dir`, and whether it is intact.
fn verify_lines(dir: &Path) -> anyhow::Result<(Vec<String>, bool)> {
    let mut lines = Vec::new();
    let statuses = check_queue(dir)?;
    let skipped = super::log_repair::skipped_ranges(dir)?;
    // After a clean close nothing in the tail is torn: what is invalid below its recorded
    // length is damage, and a tail that ends short lost acknowledged records.
    let tail_base = statuses.last().map(|t| t.base_offset);
    let clean = engine::log::closed::CleanClose::read_blocking(dir)
        .filter(|c| Some(c.tail_base) == tail_base);
    let short_tail = statuses.last().and_then(|t| {
        let clean = clean.filter(|c| t.damage.is_none() && t.next_offset < c.next_offset)?;
        Some(format!(
            "DAMAGED: ends at byte {} (offset {}), but held offsets up to {} ({} bytes) when the \
             log was closed cleanly; the broker refuses offsets from {} until `defibus log repair`",
            t.valid_bytes, t.next_offset, clean.next_offset, clean.tail_len, t.next_offset
        ))
    });
    lines.push(format!(
        "{:>20}  {:>20}  {:>9}  {:>12}  status",
        "base offset", "next offset", "batches", "bytes"
    ));
    for s in &statuses {
        if let Some(end) = s.gap_after {
            let recorded = uncovered(&skipped, end, s.base_offset).is_empty();
            lines.push(format!(
                "gap: previous segment ends at offset {end}, next starts at {}{}",
                s.base_offset,
                if recorded {
                    " (recorded as skipped)"
                } else {
                    " (NOT recorded: a segment is missing)"
                }
            ));
        }
        let status = match &s.damage {
            None if Some(s.base_offset) == tail_base && short_tail.is_some() => {
                short_tail.clone().unwrap_or_default()
            }
            None => "ok".to_owned(),
            Some((Damage { position, reason }, cut)) => {
                let tail = Some(s.base_offset) == tail_base;
                let torn = clean.is_none_or(|c| *position >= c.tail_len);
                let effect = if tail && torn && *position >= last_index_position(dir, s.base_offset)
                {
                    // Past the last index entry recovery verifies and cuts: a torn write.
                    format!("the broker's recovery cuts these {cut} bytes as a torn tail")
                } else {
                    format!(
                        "the broker serves offsets below {} and refuses the rest (DataDamaged) until `defibus log repair`",
                        s.next_offset
                    )
                };
                format!("DAMAGED at byte {position}: {reason}; {effect}")
            }
        };
        lines.push(format!(
            "{:>20}  {:>20}  {:>9}  {:>12}  {status}",
            s.base_offset, s.next_offset, s.batches, s.valid_bytes
        ));
    }
    // A gap the skipped journal records (async crash, repair) is part of a consistent queue.
    let intact = short_tail.is_none()
        && statuses.iter().all(|s| {
            s.damage.is_none()
                && s.gap_after
                    .is_none_or(|end| uncovered(&skipped, end, s.base_offset).is_empty())
        });
    Ok((lines, intact))
}

/// Position of the last well-formed entry of the segment's index (0 without one): where the
/// broker's recovery starts verifying its tail segment.
fn last_index_position(dir: &Path, base_offset: u64) -> u64 {
    let log_len =
        std::fs::metadata(engine::file::log_path(dir, base_offset)).map_or(0, |m| m.len());
    std::fs::read(engine::file::index_path(dir, base_offset))
        .ok()
        .and_then(|bytes| {
            let decoded = engine::log::index::decode_entries(&bytes, log_len);
            decoded.entries.last().map(|e| u64::from(e.position))
        })
        .unwrap_or(0)
}

fn dump(args: &DumpArgs) -> anyhow::Result<ExitCode> {
    let segments = segments(&args.dir)?;
    // Start at the last segment whose base offset is at or below `from`.
    let first = segments
        .iter()
        .rposition(|(base, _)| *base <= args.from)
        .unwrap_or(0);
    let mut printed = 0u64;
    for (base, path) in &segments[first..] {
        let mut reader = SegmentReader::open(path, *base)?;
        loop {
            let batch = match reader.next_batch()? {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(Damage { position, reason }) => {
                    bail!("{} is damaged at byte {position}: {reason}", path.display())
                }
            };
            let append_time_ms = batch.header().append_time_ms;
            for record in batch.records().filter(|r| r.offset() >= args.from) {
                if printed == args.count {
                    return Ok(ExitCode::SUCCESS);
                }
                let properties: Vec<String> = record
                    .properties()
                    .filter_map(Result::ok)
                    .map(show_property)
                    .collect();
                println!(
                    "offset={} timestamp_ms={} append_time_ms={append_time_ms} type={:?} key={} properties=[{}] value={}",
                    record.offset(),
                    record.timestamp_ms(),
                    record.message_type(),
                    show_bytes(record.key(), args.format),
                    properties.join(", "),
                    show_bytes(record.value(), args.format),
                );
                printed += 1;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show_property(property: Property<'_>) -> String {
    match property {
        Property::ReplyTo(v) => format!("reply_to={v}"),
        Property::CorrelationId(v) => format!("correlation_id={}", hex(v)),
        Property::DeadlineMs(v) => format!("deadline_ms={v}"),
        Property::Area(v) => format!("area={v}"),
        Property::Tag(v) => format!("tag={v}"),
        Property::TraceParent(v) => format!("traceparent={v}"),
        Property::TraceState(v) => format!("tracestate={v}"),
        Property::DeliverAtMs(v) => format!("deliver_at_ms={v}"),
        Property::HeldOrigin(v) => format!("held_origin={v}"),
        Property::TxnGroup(v) => format!("txn_group={v}"),
        Property::User { key, value } => format!("{key}={}", String::from_utf8_lossy(value)),
        Property::Retry(m) => format!(
            "retry=attempt {} of {}/{}/{} by {} due_ms {} reason {:?}",
            m.attempt, m.origin_topic, m.origin_queue, m.origin_offset, m.group, m.due_ms, m.reason
        ),
        Property::Unknown { tag, value } => format!("tag{tag}={}", hex(value)),
    }
}

fn show_bytes(bytes: &[u8], format: ValueFormat) -> String {
    match format {
        ValueFormat::Text => {
            let text = String::from_utf8_lossy(bytes);
            let cut: String = text.chars().take(200).collect();
            format!("{cut:?}")
        }
        ValueFormat::Hex => hex(bytes),
        ValueFormat::None => format!("<{} bytes>", bytes.len()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::record::{BatchBuilder, Record, stamp};
    use std::io::Write;

    fn batch(base_offset: u64, values: &[&str]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        for value in values {
            builder
                .push(&Record {
                    value: value.as_bytes(),
                    ..Record::default()
                })
                .unwrap();
        }
        let mut bytes = builder.finish().unwrap();
        stamp(&mut bytes, base_offset, 1).unwrap();
        bytes
    }

    fn write_segment(dir: &Path, base: u64, batches: &[Vec<u8>], padding: usize) -> PathBuf {
        let path = dir.join(format!("{base:020}.log"));
        let mut file = File::create(&path).unwrap();
        for b in batches {
            file.write_all(b).unwrap();
        }
        file.write_all(&vec![0; padding]).unwrap();
        path
    }

    #[test]
    fn intact_segments_with_padding_verify_clean() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(
            dir.path(),
            0,
            &[batch(0, &["a", "b"]), batch(2, &["c"])],
            4000,
        );
        write_segment(dir.path(), 3, &[batch(3, &["d"])], 0);
        let statuses = check_queue(dir.path()).unwrap();
        assert_eq!(statuses.len(), 2);
        assert!(
            statuses
                .iter()
                .all(|s| s.damage.is_none() && s.gap_after.is_none())
        );
        assert_eq!((statuses[0].batches, statuses[0].next_offset), (2, 3));
        assert_eq!(statuses[1].next_offset, 4);
    }

    #[test]
    fn torn_tails_corruption_and_gaps_are_reported_with_what_recovery_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let first = batch(0, &["a"]);
        let mut torn = batch(1, &["bbbbbbbb"]);
        torn.truncate(torn.len() - 3);
        let path = write_segment(dir.path(), 0, &[first.clone(), torn.clone()], 0);
        let statuses = check_queue(dir.path()).unwrap();
        let (damage, cut) = statuses[0].damage.as_ref().unwrap();
        assert_eq!(damage.position, first.len() as u64);
        assert!(damage.reason.contains("torn batch"), "{}", damage.reason);
        assert_eq!(*cut, torn.len() as u64);

        let mut corrupt = batch(1, &["b"]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x40;
        std::fs::write(&path, [first.clone(), corrupt].concat()).unwrap();
        let statuses = check_queue(dir.path()).unwrap();
        assert!(
            statuses[0]
                .damage
                .as_ref()
                .unwrap()
                .0
                .reason
                .contains("checksum")
        );

        std::fs::write(&path, [first, batch(7, &["b"])].concat()).unwrap();
        let statuses = check_queue(dir.path()).unwrap();
        assert!(
            statuses[0]
                .damage
                .as_ref()
                .unwrap()
                .0
                .reason
                .contains("continuity")
        );

        write_segment(dir.path(), 9, &[batch(9, &["x"])], 0);
        let statuses = check_queue(dir.path()).unwrap();
        assert_eq!(statuses[1].gap_after, Some(1));
    }

    #[test]
    fn a_cleanly_closed_tail_is_judged_damaged_where_a_crashed_one_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let first = batch(0, &["a"]);
        let mut corrupt = batch(1, &["b"]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x40;
        write_segment(dir.path(), 0, &[first.clone(), corrupt.clone()], 0);
        let (lines, intact) = verify_lines(dir.path()).unwrap();
        assert!(!intact);
        assert!(lines[1].contains("recovery cuts"), "{lines:?}");

        let clean = engine::log::closed::CleanClose {
            tail_base: 0,
            tail_len: (first.len() + corrupt.len()) as u64,
            next_offset: 2,
        };
        std::fs::write(engine::file::closed_path(dir.path()), clean.encode()).unwrap();
        let (lines, intact) = verify_lines(dir.path()).unwrap();
        assert!(!intact);
        assert!(lines[1].contains("refuses the rest"), "{lines:?}");

        // Intact but short of what the clean close recorded: acknowledged records are gone.
        write_segment(dir.path(), 0, &[first], 0);
        let (lines, intact) = verify_lines(dir.path()).unwrap();
        assert!(!intact);
        assert!(lines[1].contains("DAMAGED: ends at byte"), "{lines:?}");
    }

    #[test]
    fn an_empty_directory_is_an_error_not_an_empty_queue() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_queue(dir.path()).err().unwrap();
        assert!(err.to_string().contains("no segment files"), "{err}");
    }
}
