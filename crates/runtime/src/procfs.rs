//! Process identity on Linux through `/proc`, and the pid files that record it.
//!
//! A pid alone is not an identity: pids are reused. A pid file holds `pid start_ticks`
//! (field 22 of `/proc/<pid>/stat`, the start time in clock ticks since boot), and a process
//! is "the same" only when both match.

use std::path::{Path, PathBuf};

/// The fields of `/proc/<pid>/stat` this crate uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: R, S, D, Z, T, …
    pub state: char,
    /// Field 5.
    pub pgrp: i32,
    /// Field 22.
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process (or it cannot be parsed).
pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// True while a process that has not exited (zombies do not count) is in group `pgid`.
///
/// Zombies are skipped because in a container pid 1 may never reap reparented children,
/// and waiting for those would stall every stop until its grace ran out.
pub(crate) fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .any(|s| s.pgrp == pgid && s.state != 'Z' && s.state != 'X')
}

/// Where the pid file of instance `id` lives.
pub(crate) fn pid_file_path(run_dir: &Path, id: &str) -> PathBuf {
    run_dir.join(format!("{id}.pid"))
}

/// A pid file's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PidRecord {
    pub pid: u32,
    pub start_ticks: u64,
}

impl PidRecord {
    /// Records the current identity of `pid`; `None` when the process is already gone.
    pub(crate) fn of(pid: u32) -> Option<PidRecord> {
        stat(pid).map(|s| PidRecord {
            pid,
            start_ticks: s.start_ticks,
        })
    }

    pub(crate) fn parse(text: &str) -> Option<PidRecord> {
        let mut parts = text.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        let start_ticks = parts.next()?.parse().ok()?;
        Some(PidRecord { pid, start_ticks })
    }

    /// True when the recorded process still runs (or is an unreaped zombie) as the same
    /// process, not a newer one that reused the pid.
    pub(crate) fn is_live(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start_ticks == self.start_ticks)
    }

    /// Writes the file atomically (temp file + rename) so that a crash never leaves half a
    /// record for the next control plane to misread.
    pub(crate) fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{} {}\n", self.pid, self.start_ticks))?;
        std::fs::rename(&tmp, path)
    }
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_the_name() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgrp, 1234);
        assert_eq!(stat.start_ticks, 987654);
    }

    #[test]
    fn own_process_is_live_and_a_different_start_time_is_not() {
        let me = PidRecord::of(std::process::id()).unwrap();
        assert!(me.is_live());
        let impostor = PidRecord {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!impostor.is_live());
        assert_eq!(
            PidRecord::parse("42 7\n"),
            Some(PidRecord {
                pid: 42,
                start_ticks: 7
            })
        );
        assert_eq!(PidRecord::parse("42"), None);
    }
}
