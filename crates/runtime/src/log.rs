//! The instance log file: opening it for a child, rollgate's marker lines, and reading its tail.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// How much of the end of a log file [`log_tail`] reads at most: enough for the last lines a
/// person needs, bounded so that a huge log never costs much.
const TAIL_WINDOW: u64 = 64 * 1024;

/// Returns the last `max_lines` lines of the file at `path` (fewer if the file is shorter),
/// oldest first, without their line endings. Only the last 64 KiB are read, so a line longer
/// than that comes back truncated at its start. Invalid UTF-8 is replaced, not an error.
pub fn log_tail(path: &Path, max_lines: usize) -> std::io::Result<Vec<String>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    // A window that starts mid-file most likely starts mid-line; that fragment misleads.
    if start > 0 && lines.len() > 1 {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(max_lines);
    Ok(lines[skip..].iter().map(|l| (*l).to_owned()).collect())
}

/// The tail used in error messages: at most `max_lines` lines and about `max_bytes`, keeping
/// the newest lines. An unreadable log gives a note instead of failing the caller.
pub(crate) fn tail_for_error(path: &Path, max_lines: usize, max_bytes: usize) -> String {
    let lines = match log_tail(path, max_lines) {
        Ok(lines) => lines,
        Err(err) => return format!("(log {} unreadable: {err})", path.display()),
    };
    let mut kept = Vec::new();
    let mut size = 0;
    for line in lines.iter().rev() {
        if size + line.len() + 1 > max_bytes {
            if kept.is_empty() {
                // Keep the end of an oversized last line rather than nothing.
                let cut = line.len().saturating_sub(max_bytes);
                let cut = (cut..line.len())
                    .find(|i| line.is_char_boundary(*i))
                    .unwrap_or(line.len());
                kept.push(&line[cut..]);
            }
            break;
        }
        size += line.len() + 1;
        kept.push(line.as_str());
    }
    kept.reverse();
    if kept.is_empty() {
        "(log is empty)".to_owned()
    } else {
        kept.join("\n")
    }
}

/// Opens (creating it and its parent directories) the log in append mode, so that restarts
/// and rollgate's marker lines interleave with the process output instead of overwriting it.
pub(crate) fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Appends one `--- rollgate: … ---` line.
pub(crate) fn write_marker(path: &Path, message: &str) -> std::io::Result<()> {
    let mut file = open_append(path)?;
    writeln!(file, "--- rollgate: {message} ---")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tail_returns_the_last_lines_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/app.log");
        let mut file = open_append(&path).unwrap();
        for i in 0..50 {
            writeln!(file, "line {i}").unwrap();
        }
        write_marker(&path, "hello").unwrap();
        let tail = log_tail(&path, 3).unwrap();
        assert_eq!(tail, ["line 48", "line 49", "--- rollgate: hello ---"]);
        assert_eq!(log_tail(&path, 1000).unwrap().len(), 51);
    }

    #[test]
    fn error_tail_is_bounded_in_bytes_and_keeps_the_newest_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut file = open_append(&path).unwrap();
        for i in 0..100 {
            writeln!(file, "{i:03} {}", "x".repeat(196)).unwrap();
        }
        let tail = tail_for_error(&path, 20, 2048);
        assert!(tail.len() <= 2048);
        assert!(tail.ends_with(&format!("099 {}", "x".repeat(196))));
        assert!(tail.lines().count() < 20);
        assert!(tail_for_error(&dir.path().join("missing"), 20, 2048).contains("unreadable"));
    }

    #[test]
    fn tail_of_a_huge_log_reads_only_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut file = open_append(&path).unwrap();
        for i in 0..20_000 {
            writeln!(file, "entry {i}").unwrap();
        }
        let tail = log_tail(&path, 100_000).unwrap();
        assert_eq!(tail.last().map(String::as_str), Some("entry 19999"));
        assert!(tail.len() < 20_000);
        assert!(tail[0].starts_with("entry "));
    }
}
