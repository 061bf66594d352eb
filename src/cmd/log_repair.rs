//! `defibus log repair DIR`: cuts or skips damaged byte ranges of a stopped queue and keeps
//! every intact batch after them (`engine::log::repair`), for one queue directory or every
//! queue under a broker's data directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use engine::file;
use engine::log::repair::{RepairOptions, RepairReport, repair_queue_blocking};
use engine::log::skipped::{self, SkippedRange};

/// How deep below DIR queue directories are looked for (data dir / topic / queue, and some).
const QUEUE_SEARCH_DEPTH_MAX: usize = 6;

#[derive(Args)]
pub struct RepairArgs {
    /// A queue directory, or a broker's data directory: every queue directory below it.
    dir: PathBuf,
    /// Say what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Repairs every queue found; exits 0 only when all are consistent afterwards (for a dry run:
/// when none needs repair).
pub fn repair(args: &RepairArgs) -> anyhow::Result<ExitCode> {
    let queues = queue_dirs(&args.dir)?;
    if queues.is_empty() {
        bail!(
            "no queue directory (segment files or a LOCK) in or below {}",
            args.dir.display()
        );
    }
    let mut consistent = true;
    for (i, dir) in queues.iter().enumerate() {
        println!("[{}/{}] {}", i + 1, queues.len(), dir.display());
        let mut progress = |line: String| eprintln!("  ... {line}");
        let report = repair_queue_blocking(
            dir,
            RepairOptions {
                dry_run: args.dry_run,
            },
            &mut progress,
        )
        .with_context(|| format!("repairing {}", dir.display()))?;
        print_report(&report);
        consistent &= report.consistent;
    }
    Ok(if consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(report: &RepairReport) {
    let verb = |done: &'static str, would: &'static str| if report.dry_run { would } else { done };
    for segment in &report.segments {
        let scan = &segment.scan;
        let base = scan.base;
        if scan.is_intact() && !segment.index_rewritten && segment.empty_successor.is_none() {
            println!(
                "  {base:>20}  ok: {} batches, offsets {}..{}",
                scan.runs.first().map_or(0, |r| r.batches),
                base,
                scan.next_offset()
            );
            continue;
        }
        if scan.is_intact() {
            if segment.index_rewritten {
                println!(
                    "  {base:>20}  index {}",
                    verb("rebuilt", "would be rebuilt")
                );
            }
            if let Some(next) = segment.empty_successor {
                println!(
                    "  {base:>20}  ends at offset {}, short of {next} at its clean close; empty tail segment {} {}",
                    scan.next_offset(),
                    file::log_file_name(next),
                    verb("made", "would be made")
                );
            }
            continue;
        }
        println!("  {base:>20}  DAMAGED ({} bytes)", scan.file_len);
        for run in &scan.runs {
            println!(
                "  {:>20}    intact: bytes {}..{}, offsets {}..{}, {} batches",
                "", run.start, run.end, run.first_offset, run.next_offset, run.batches
            );
        }
        for damage in &scan.damage {
            println!(
                "  {:>20}    damaged: bytes {}..{} ({} bytes){}: {}",
                "",
                damage.start,
                damage.end,
                damage.end - damage.start,
                if damage.truncated {
                    ", file ends mid-batch"
                } else {
                    ""
                },
                damage.reason
            );
        }
        if let Some(len) = segment.truncated_to {
            println!("  {:>20}    {} at byte {len}", "", verb("cut", "would cut"));
        }
        if segment.removed {
            println!("  {:>20}    {}", "", verb("removed", "would be removed"));
        }
        for new in &segment.new_segments {
            println!(
                "  {:>20}    intact batches {} to new segment {}",
                "",
                verb("moved", "would move"),
                file::log_file_name(*new)
            );
        }
        if let Some(next) = segment.empty_successor {
            println!(
                "  {:>20}    empty tail segment {} {} (the log's next offset at its clean close)",
                "",
                file::log_file_name(next),
                verb("made", "would be made")
            );
        }
    }
    for range in &report.skipped {
        println!(
            "  skipped offsets {}..{} ({} offsets): {} ({})",
            range.from,
            range.to,
            range.to - range.from,
            range.reason,
            verb("recorded", "would be recorded")
        );
    }
    let state = match (report.dry_run, report.consistent) {
        (true, true) => "consistent, nothing to repair",
        (true, false) => "needs repair (dry run: nothing changed)",
        (false, true) => {
            if report.changed() {
                "repaired, consistent"
            } else {
                "consistent, nothing to repair"
            }
        }
        (false, false) => "STILL INCONSISTENT after repair",
    };
    println!("  {state}");
}

/// The skipped ranges recorded in the queue directory `dir` (none without a journal).
pub fn skipped_ranges(dir: &Path) -> anyhow::Result<Vec<SkippedRange>> {
    let path = file::skipped_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(skipped::decode(&bytes).entries),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `dir` itself if it is a queue directory, else every queue directory below it, sorted.
fn queue_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, 0, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut subdirs = Vec::new();
    let mut is_queue = false;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if file::parse_segment_file_name(&name).is_some() || name == file::LOCK_FILE_NAME {
            is_queue = true;
        } else if entry.file_type()?.is_dir() {
            subdirs.push(entry.path());
        }
    }
    if is_queue {
        out.push(dir.to_path_buf());
    } else if depth < QUEUE_SEARCH_DEPTH_MAX {
        for sub in subdirs {
            walk(&sub, depth + 1, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Parser;
    use engine::log::skipped::{SkipReason, decode};
    use protocol::record::{BATCH_LEN_MAX, BatchBuilder, Record, stamp};

    use super::*;

    fn batch(base_offset: u64, value: &str) -> Vec<u8> {
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        builder
            .push(&Record {
                value: value.as_bytes(),
                ..Record::default()
            })
            .unwrap();
        let mut bytes = builder.finish().unwrap();
        stamp(&mut bytes, base_offset, 1).unwrap();
        bytes
    }

    /// Writes a segment of one-record batches from `base`; returns each batch's position.
    fn write_segment(dir: &Path, base: u64, count: u64) -> Vec<usize> {
        std::fs::create_dir_all(dir).unwrap();
        let mut file = std::fs::File::create(file::log_path(dir, base)).unwrap();
        let mut positions = Vec::new();
        let mut at = 0;
        for offset in base..base + count {
            let bytes = batch(offset, &format!("record {offset} of the repair CLI test"));
            positions.push(at);
            at += bytes.len();
            file.write_all(&bytes).unwrap();
        }
        positions
    }

    /// Runs `defibus ARGS...` through the real argument parser and command dispatch.
    fn defibus(args: &[&str]) -> ExitCode {
        let cli =
            crate::Cli::try_parse_from(std::iter::once("defibus").chain(args.iter().copied()))
                .unwrap();
        match cli.command {
            crate::Command::Log(command) => crate::cmd::log::run(command).unwrap(),
            _ => unreachable!("a log command was parsed"),
        }
    }

    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name().is_some_and(|n| n != file::LOCK_FILE_NAME) {
                    let bytes = std::fs::read(&path).unwrap();
                    files.push((path, bytes));
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn repair_of_a_broker_data_dir_cuts_damage_and_keeps_the_rest() {
        let data = tempfile::tempdir().unwrap();
        let damaged = data.path().join("orders").join("0");
        let intact = data.path().join("orders").join("1");
        let positions = write_segment(&damaged, 0, 3);
        write_segment(&damaged, 3, 3);
        write_segment(&intact, 0, 4);
        // A flipped payload byte in the batch at offset 1 of a sealed segment.
        let path = file::log_path(&damaged, 0);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[positions[1] + 90] ^= 0xFF;
        std::fs::write(&path, bytes).unwrap();
        let dir = data.path().to_str().unwrap();

        let before = snapshot(data.path());
        assert_eq!(
            defibus(&["log", "repair", "--dry-run", dir]),
            ExitCode::from(1)
        );
        assert_eq!(snapshot(data.path()), before, "a dry run changed files");

        assert_eq!(defibus(&["log", "repair", dir]), ExitCode::SUCCESS);
        let skipped = decode(&std::fs::read(file::skipped_path(&damaged)).unwrap());
        let ranges: Vec<_> = skipped
            .entries
            .iter()
            .map(|r| (r.from, r.to, r.reason))
            .collect();
        assert_eq!(ranges, vec![(1, 2, SkipReason::Damaged)]);
        assert!(
            file::log_path(&damaged, 2).exists(),
            "batch 2 moved to its own segment"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            positions[1] as u64,
            "segment 0 is cut after its intact batch"
        );
        assert!(
            !file::skipped_path(&intact).exists(),
            "nothing skipped in the intact queue"
        );
        // Consistent now: a dry run finds nothing to do, and verify agrees.
        assert_eq!(
            defibus(&["log", "repair", "--dry-run", dir]),
            ExitCode::SUCCESS
        );
        // verify agrees: the gap repair left is recorded.
        for queue in [&damaged, &intact] {
            assert_eq!(
                defibus(&["log", "verify", queue.to_str().unwrap()]),
                ExitCode::SUCCESS
            );
        }
    }
}
