//! Lints on the engine's layout, run as a test.
//!
//! The runtime (glommio) is named in one module, `engine::rt`, and in the file IO behind the
//! log's `Storage` seam, so moving to another io_uring runtime is a change of those two
//! files. Any other mention, in code or in a comment, fails here with its file and line.

use std::path::{Path, PathBuf};

/// The files allowed to name the runtime, relative to `engine/src`.
const RUNTIME_SEAM: [&str; 2] = ["rt.rs", "log/storage.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_runtime_seam_names_glommio() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > RUNTIME_SEAM.len(),
        "no sources found under {}",
        src.display()
    );
    let mut found = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let relative = relative.to_string_lossy().replace('\\', "/");
        if RUNTIME_SEAM.contains(&relative.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (number, line) in text.lines().enumerate() {
            if line.to_lowercase().contains("glommio") {
                found.push(format!(
                    "engine/src/{relative}:{}: {}",
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "glommio is named outside engine/src/rt.rs and engine/src/log/storage.rs (use `crate::rt`, \
         and say \"the runtime\" in comments):\n{}",
        found.join("\n")
    );
}
