//! The words of the design as types: timestamps, aliases, rollout phases and outcomes, and
//! the rule for names of apps and environments.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. The domain never reads a clock: callers pass `now`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This timestamp plus a duration, saturating.
    pub fn after(self, d: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A name that points at versions of an app in an environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alias {
    /// What users get.
    Live,
    /// The last good live version, kept warm as the rollback target.
    Blue,
    /// The candidate of the rollout in progress.
    Green,
}

impl Alias {
    /// Every alias, in display order.
    pub const ALL: [Alias; 3] = [Alias::Live, Alias::Blue, Alias::Green];

    /// The name used in the store, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Alias::Live => "live",
            Alias::Blue => "blue",
            Alias::Green => "green",
        }
    }

    /// Parses `live`, `blue` or `green`.
    pub fn parse(s: &str) -> Option<Alias> {
        Alias::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rollout is. The first four are active; the rest are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Starting the candidate's instances and waiting for them to be healthy.
    Deploying,
    /// Running the smoke tests against the candidate before it gets user traffic.
    Verifying,
    /// Moving traffic to the candidate: one atomic routing change (blue/green), or weight steps
    /// (canary, linear), each watched by the analysis.
    Shifting,
    /// A gradual shift held at its current weight until an operator resumes or promotes it.
    Paused,
    /// Watching the promoted version; `blue` stays warm.
    Monitoring,
    /// Promoted and watched without fault.
    Succeeded,
    /// Traffic was put back on (or never left) the previous version because of a fault.
    RolledBack,
    /// The candidate never became ready; `live` was never touched.
    Failed,
    /// Stopped by an operator before it finished.
    Aborted,
}

impl Phase {
    /// The name used in the store, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Deploying => "deploying",
            Phase::Verifying => "verifying",
            Phase::Shifting => "shifting",
            Phase::Paused => "paused",
            Phase::Monitoring => "monitoring",
            Phase::Succeeded => "succeeded",
            Phase::RolledBack => "rolled_back",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        }
    }

    /// Parses a name produced by [`Phase::as_str`].
    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Deploying,
            Phase::Verifying,
            Phase::Shifting,
            Phase::Paused,
            Phase::Monitoring,
            Phase::Succeeded,
            Phase::RolledBack,
            Phase::Failed,
            Phase::Aborted,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// True once the rollout can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::RolledBack | Phase::Failed | Phase::Aborted
        )
    }

    /// The outcome a terminal phase stands for.
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            Phase::Succeeded => Some(Outcome::Succeeded),
            Phase::RolledBack => Some(Outcome::RolledBack),
            Phase::Failed => Some(Outcome::Failed),
            Phase::Aborted => Some(Outcome::Aborted),
            _ => None,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a finished rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    RolledBack,
    Failed,
    Aborted,
}

/// Checks the name of an app or an environment: 1–63 characters of `a-z`, `0-9`, `-`, `_`,
/// starting with a letter or digit. Names become parts of file names and URLs.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok_len = !name.is_empty() && name.len() <= 63;
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok_len && ok_chars && ok_start {
        Ok(())
    } else {
        Err(format!(
            "expected a name of 1-63 characters from a-z, 0-9, '-' and '_' starting with a letter or digit, got {name:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_round_trip() {
        for p in [
            Phase::Deploying,
            Phase::Verifying,
            Phase::Shifting,
            Phase::Paused,
            Phase::Monitoring,
            Phase::Succeeded,
            Phase::RolledBack,
            Phase::Failed,
            Phase::Aborted,
        ] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
            assert_eq!(p.is_terminal(), p.outcome().is_some());
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("api").is_ok());
        assert!(valid_name("api-v2_x").is_ok());
        assert!(valid_name("").is_err());
        assert!(valid_name("Api").is_err());
        assert!(valid_name("-api").is_err());
        assert!(valid_name("a/b").is_err());
        assert!(valid_name(&"a".repeat(64)).is_err());
    }
}
