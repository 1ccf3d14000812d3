//! Scanner probes: the User-Agents of well-known attack and reconnaissance tools, and the paths
//! that scanners request on every host they find. Both lists are modest and documented here;
//! a service that really serves one of these paths excludes it per prefix.

use crate::decode::fold_for_match;
use crate::parse::contains;

/// Lower-case substrings of User-Agents sent by default by attack tools. Each names a tool
/// that announces itself unless reconfigured; browsers, crawlers, monitoring and HTTP libraries
/// (curl, python-requests, Go-http-client) are deliberately absent: they are legitimate clients.
const SCANNER_AGENTS: &[&str] = &[
    "sqlmap",                // SQL injection automation
    "nikto",                 // web server scanner
    "nmap scripting engine", // nmap NSE http scripts
    "nmap nse",
    "masscan",  // internet-wide port scanner, HTTP banner grabs
    "zgrab",    // ZMap's application-layer grabber
    "acunetix", // commercial DAST
    "netsparker",
    "wpscan",    // WordPress scanner
    "dirbuster", // content discovery
    "gobuster",
    "dirb/",
    "nuclei",  // template scanner
    "havij",   // SQL injection tool
    "arachni", // DAST framework
    "w3af",
    "openvas",
    "nessus",
    "jaeles",
    "fuzz faster u fool", // ffuf's default agent
];

/// Path segments that only scanners request: secrets and VCS metadata left in a web root.
/// Matched as a whole segment (case-insensitive); `.env.local` etc. count as `.env`.
const PROBE_SEGMENTS: &[&str] = &[
    ".env",
    ".git",
    ".svn",
    ".hg",
    ".ds_store",
    ".htaccess",
    ".htpasswd",
    ".aws",
    ".ssh",
    ".bash_history",
];

/// Path prefixes (lower case, after decoding) that scanners try against every host: admin and
/// setup pages of software rollgate's services do not run, and server internals.
const PROBE_PREFIXES: &[&str] = &[
    "/wp-admin/setup-config.php",
    "/wp-admin/install.php",
    "/wp-config.php",
    "/phpmyadmin",
    "/pma/",
    "/server-status",
    "/server-info",
    "/cgi-bin/",
    "/vendor/phpunit/",
    "/boaform/",
    "/hnap1",
];

/// True when a User-Agent names a scanner.
pub(crate) fn is_scanner_agent(user_agent: &[u8]) -> bool {
    let ua = fold_for_match(user_agent);
    SCANNER_AGENTS.iter().any(|s| contains(&ua, s.as_bytes()))
}

/// True when a decoded request path is a scanner probe.
pub(crate) fn is_probe_path(decoded_path: &[u8]) -> bool {
    let path = fold_for_match(decoded_path);
    if PROBE_PREFIXES
        .iter()
        .any(|p| path.starts_with(p.as_bytes()))
    {
        return true;
    }
    path.split(|&b| b == b'/').any(|segment| {
        PROBE_SEGMENTS.iter().any(|p| {
            let p = p.as_bytes();
            segment == p
                || (segment.starts_with(p) && matches!(segment.get(p.len()), Some(b'.' | b'~')))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_agents_in_any_case() {
        for ua in [
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
            "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:Port Check)",
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            "Mozilla/5.0 zgrab/0.x",
            "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
            "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
            "gobuster/3.6",
            "Fuzz Faster U Fool v2.1.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Nuclei - Open-source project",
        ] {
            assert!(is_scanner_agent(ua.as_bytes()), "{ua}");
        }
    }

    #[test]
    fn browsers_crawlers_and_libraries_are_not_scanners() {
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Go-http-client/1.1",
        ] {
            assert!(!is_scanner_agent(ua.as_bytes()), "{ua}");
        }
    }

    #[test]
    fn probe_paths_and_segments() {
        for p in [
            "/.env",
            "/app/.env.local",
            "/.git/config",
            "/.GIT/HEAD",
            "/wp-admin/setup-config.php?step=1",
            "/phpMyAdmin/index.php",
            "/server-status",
            "/cgi-bin/test-cgi",
            "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
        ] {
            assert!(is_probe_path(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn ordinary_paths_are_not_probes() {
        for p in [
            "/",
            "/api/users/42",
            "/.well-known/openid-configuration",
            "/docs/environment",
            "/static/app.env.js",
            "/gitlab/repos",
        ] {
            assert!(!is_probe_path(p.as_bytes()), "{p}");
        }
    }
}
