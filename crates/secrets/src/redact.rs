//! Keeping secret values out of logs, errors and listings.

use std::fmt;

/// A value that must not be printed: `Debug` and `Display` show `***`. Wrap secret values in
/// it before they can reach a `tracing` field, an error or a derived `Debug`, so that a
/// forgotten field cannot leak.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T> Redacted<T> {
    /// The wrapped value, for the one place that really needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Redacted<T> {
        Redacted(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What listings show instead of a value: `****` and the length, e.g. `**** (16 bytes)`, so an
/// operator can tell an empty or truncated value from a real one without seeing it.
pub fn mask(value: &[u8]) -> String {
    match value.len() {
        1 => "**** (1 byte)".to_string(),
        n => format!("**** ({n} bytes)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)] // The fields exist to be printed by the derived Debug.
    struct Config {
        user: String,
        password: Redacted<String>,
    }

    #[test]
    fn redacted_prints_stars_in_debug_display_and_derived_debug() {
        let c = Config {
            user: "ada".into(),
            password: Redacted("s3cr3t-value".into()),
        };
        let shown = format!("{c:?} {c:#?} {}", c.password);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("***") && shown.contains("ada"), "{shown}");
        assert_eq!(c.password.expose(), "s3cr3t-value");
    }

    #[test]
    fn mask_hides_the_value_and_hints_its_length() {
        assert_eq!(mask(b"hunter2"), "**** (7 bytes)");
        assert_eq!(mask(b"x"), "**** (1 byte)");
        assert_eq!(mask(b""), "**** (0 bytes)");
    }
}
