//! Shellshock (CVE-2014-6271): a bash function definition, `() {`, at the start of a value
//! that a CGI-style backend would export into a shell's environment.

/// True when the value (leading whitespace ignored) starts with `(`, optional spaces, `)`,
/// spaces and `{` — the shape bash reads as a function definition. Elsewhere in a value the
/// same characters are ordinary text.
pub(crate) fn check(value: &[u8]) -> bool {
    let rest = value.trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b"(") else {
        return false;
    };
    let Some(rest) = rest.trim_ascii_start().strip_prefix(b")") else {
        return false;
    };
    rest.trim_ascii_start().starts_with(b"{")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_definitions_at_the_start() {
        assert!(check(b"() { :;}; /bin/bash -c 'cat /etc/passwd'"));
        assert!(check(b"  ( ) {ignored;}; echo x"));
        assert!(check(b"(){ :; }; ping -c 1 x"));
    }

    #[test]
    fn parentheses_elsewhere_are_clean() {
        assert!(!check(b"Mozilla/5.0 (X11; Linux x86_64) () {"));
        assert!(!check(b"f() { }"));
        assert!(!check(b"(x) {"));
        assert!(!check(b""));
    }
}
