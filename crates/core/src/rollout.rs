//! The rollout state machine: `next(rollout, event, now) -> (rollout', actions)`.
//!
//! The controller persists the new rollout and its alias changes in one transaction, then
//! executes the actions. Every path out of a phase is here, so the invariants that keep users
//! safe are unit-tested in one place:
//!
//! - `live` moves to the candidate only after it was healthy and passed its smoke tests;
//! - a failure before the switch leaves `live` untouched and stops the candidate;
//! - a failure after the switch puts `live` back on the previous version and `blue` back on
//!   the version before it, both of which were kept running;
//! - the version before `blue` is stopped only once the new version has succeeded.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Alias, Phase, Timestamp};

/// One attempt to move `live` of an app in an environment to a new version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: u64,
    pub app: String,
    pub env: String,
    /// The candidate: `green` while the rollout runs.
    pub version: u64,
    /// `live` when the rollout started; becomes `blue` at the switch.
    pub from_version: Option<u64>,
    /// `blue` when the rollout started; kept warm until the rollout succeeds.
    pub prev_blue: Option<u64>,
    pub strategy: String,
    pub phase: Phase,
    /// Why the rollout ended (or the latest explanation while it runs).
    pub reason: Option<String>,
    /// Who started it.
    pub actor: String,
    pub started_at: Timestamp,
    pub phase_since: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Length of the monitor window after the switch, in milliseconds.
    pub monitor_ms: u64,
    /// End of the monitor window, once monitoring.
    pub monitor_until: Option<Timestamp>,
}

/// Something that happened to a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Every instance of the candidate passed its health check.
    InstancesHealthy,
    /// The candidate could not start or never became healthy.
    InstancesFailed {
        reason: String,
    },
    SmokePassed,
    SmokeFailed {
        reason: String,
    },
    /// `live` points at the candidate in the gateway.
    Switched,
    /// A rule or health check failed while watching the promoted version.
    MonitorFailed {
        reason: String,
    },
    /// The monitor window ended without a fault.
    MonitorElapsed,
    /// An operator stopped the rollout (abort before the switch, roll back after it).
    Cancel {
        by: String,
    },
    /// The control plane restarted while the rollout was active.
    Recovered,
}

/// What the controller must do after a transition, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Point an alias at a version, or clear it. Persisted with the rollout.
    SetAlias { alias: Alias, version: Option<u64> },
    /// Start the version's instances and wait until they are healthy.
    StartVersion { version: u64 },
    /// Run the smoke tests against the version's instances.
    RunSmoke { version: u64 },
    /// Apply the aliases to the gateway's routing table (one atomic swap).
    Route,
    /// Drain and stop the version's instances.
    StopVersion { version: u64 },
    /// Watch `live` until the given time.
    Monitor { until: Timestamp },
}

/// The alias changes among `actions`, in order: what the store persists with a transition.
pub fn alias_changes(actions: &[Action]) -> Vec<(Alias, Option<u64>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetAlias { alias, version } => Some((*alias, *version)),
            _ => None,
        })
        .collect()
}

/// An event that makes no sense in the rollout's phase.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rollout {id}: event {event} is not valid in phase {phase}")]
pub struct TransitionError {
    pub id: u64,
    pub phase: Phase,
    pub event: String,
}

/// What a new rollout needs to know.
#[derive(Clone, Debug)]
pub struct NewRollout {
    pub id: u64,
    pub app: String,
    pub env: String,
    pub version: u64,
    pub from_version: Option<u64>,
    pub prev_blue: Option<u64>,
    pub strategy: String,
    pub actor: String,
    pub monitor: Duration,
}

impl Rollout {
    /// A new rollout in `Deploying`, and its first actions: name the candidate `green`, start it.
    pub fn start(new: NewRollout, now: Timestamp) -> (Rollout, Vec<Action>) {
        let r = Rollout {
            id: new.id,
            app: new.app,
            env: new.env,
            version: new.version,
            from_version: new.from_version,
            prev_blue: new.prev_blue,
            strategy: new.strategy,
            phase: Phase::Deploying,
            reason: None,
            actor: new.actor,
            started_at: now,
            phase_since: now,
            finished_at: None,
            monitor_ms: u64::try_from(new.monitor.as_millis()).unwrap_or(u64::MAX),
            monitor_until: None,
        };
        let actions = vec![
            Action::SetAlias {
                alias: Alias::Green,
                version: Some(r.version),
            },
            Action::StartVersion { version: r.version },
        ];
        (r, actions)
    }

    /// The transition for `event` at `now`.
    pub fn next(
        &self,
        event: &Event,
        now: Timestamp,
    ) -> Result<(Rollout, Vec<Action>), TransitionError> {
        let green = self.version;
        let stop_green = || {
            vec![
                Action::SetAlias {
                    alias: Alias::Green,
                    version: None,
                },
                Action::Route,
                Action::StopVersion { version: green },
            ]
        };
        let (phase, reason, actions) = match (self.phase, event) {
            (Phase::Deploying, Event::InstancesHealthy) => (
                Phase::Verifying,
                None,
                vec![Action::RunSmoke { version: green }],
            ),
            (Phase::Deploying, Event::InstancesFailed { reason }) => (
                Phase::Failed,
                Some(format!(
                    "v{green} did not become healthy: {reason}; live was not changed"
                )),
                stop_green(),
            ),
            (Phase::Verifying, Event::SmokePassed) => {
                let mut actions = vec![Action::SetAlias {
                    alias: Alias::Live,
                    version: Some(green),
                }];
                if self.from_version.is_some() {
                    actions.push(Action::SetAlias {
                        alias: Alias::Blue,
                        version: self.from_version,
                    });
                }
                actions.push(Action::Route);
                (Phase::Shifting, None, actions)
            }
            (Phase::Verifying, Event::SmokeFailed { reason }) => (
                Phase::Failed,
                Some(format!(
                    "v{green} failed its smoke tests: {reason}; live was not changed"
                )),
                stop_green(),
            ),
            (Phase::Shifting, Event::Switched) => {
                let until = now.after(Duration::from_millis(self.monitor_ms));
                let mut r = self.moved(Phase::Monitoring, None, now);
                r.monitor_until = Some(until);
                return Ok((r, vec![Action::Monitor { until }]));
            }
            (Phase::Monitoring, Event::MonitorFailed { reason }) => self.back_to_blue(reason),
            (Phase::Monitoring, Event::MonitorElapsed) => {
                let mut actions = vec![Action::SetAlias {
                    alias: Alias::Green,
                    version: None,
                }];
                if let Some(old) = self
                    .prev_blue
                    .filter(|v| Some(*v) != self.from_version && *v != green)
                {
                    actions.push(Action::StopVersion { version: old });
                }
                let reason = format!(
                    "v{green} is live; v{} stays warm as blue",
                    self.from_version
                        .map_or_else(|| "-".to_string(), |v| v.to_string())
                );
                let reason = if self.from_version.is_some() {
                    reason
                } else {
                    format!("v{green} is live")
                };
                (Phase::Succeeded, Some(reason), actions)
            }
            (Phase::Deploying | Phase::Verifying | Phase::Shifting, Event::Cancel { by }) => (
                Phase::Aborted,
                Some(format!(
                    "aborted by {by} before v{green} took traffic; live was not changed"
                )),
                stop_green(),
            ),
            (Phase::Monitoring, Event::Cancel { by }) => {
                self.back_to_blue(&format!("rollback requested by {by}"))
            }
            (Phase::Deploying | Phase::Verifying | Phase::Shifting, Event::Recovered) => (
                Phase::RolledBack,
                Some(format!(
                    "the control plane restarted during {} before v{green} took traffic; live was not changed",
                    self.phase
                )),
                stop_green(),
            ),
            (Phase::Monitoring, Event::Recovered) => {
                let until = now.after(Duration::from_millis(self.monitor_ms));
                let mut r = self.moved(
                    Phase::Monitoring,
                    Some("resumed monitoring after a control-plane restart".to_string()),
                    now,
                );
                r.monitor_until = Some(until);
                return Ok((r, vec![Action::Route, Action::Monitor { until }]));
            }
            (phase, event) => {
                return Err(TransitionError {
                    id: self.id,
                    phase,
                    event: event_name(event).to_string(),
                });
            }
        };
        Ok((self.moved(phase, reason, now), actions))
    }

    fn back_to_blue(&self, why: &str) -> (Phase, Option<String>, Vec<Action>) {
        let green = self.version;
        match self.from_version {
            Some(blue) => (
                Phase::RolledBack,
                Some(format!("{why}; live is back on v{blue}")),
                vec![
                    Action::SetAlias {
                        alias: Alias::Live,
                        version: Some(blue),
                    },
                    Action::SetAlias {
                        alias: Alias::Blue,
                        version: self.prev_blue.filter(|v| *v != blue),
                    },
                    Action::SetAlias {
                        alias: Alias::Green,
                        version: None,
                    },
                    Action::Route,
                    Action::StopVersion { version: green },
                ],
            ),
            // The first release of an app has nothing to go back to: taking it down would
            // turn a degraded service into none at all, so it stays live and the rollout fails.
            None => (
                Phase::Failed,
                Some(format!(
                    "{why}; there is no previous version to roll back to, so v{green} stays live"
                )),
                vec![Action::SetAlias {
                    alias: Alias::Green,
                    version: None,
                }],
            ),
        }
    }

    fn moved(&self, phase: Phase, reason: Option<String>, now: Timestamp) -> Rollout {
        let mut r = self.clone();
        r.phase = phase;
        if reason.is_some() {
            r.reason = reason;
        }
        r.phase_since = now;
        if phase.is_terminal() {
            r.finished_at = Some(now);
            r.monitor_until = None;
        }
        r
    }
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::InstancesHealthy => "instances_healthy",
        Event::InstancesFailed { .. } => "instances_failed",
        Event::SmokePassed => "smoke_passed",
        Event::SmokeFailed { .. } => "smoke_failed",
        Event::Switched => "switched",
        Event::MonitorFailed { .. } => "monitor_failed",
        Event::MonitorElapsed => "monitor_elapsed",
        Event::Cancel { .. } => "cancel",
        Event::Recovered => "recovered",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(from: Option<u64>, prev_blue: Option<u64>) -> Rollout {
        Rollout::start(
            NewRollout {
                id: 7,
                app: "api".into(),
                env: "staging".into(),
                version: 3,
                from_version: from,
                prev_blue,
                strategy: "blue-green".into(),
                actor: "ada".into(),
                monitor: Duration::from_secs(30),
            },
            Timestamp(1_000),
        )
        .0
    }

    fn step(r: &Rollout, e: Event, at: u64) -> (Rollout, Vec<Action>) {
        r.next(&e, Timestamp(at)).unwrap()
    }

    fn aliases(actions: &[Action]) -> Vec<(Alias, Option<u64>)> {
        alias_changes(actions)
    }

    #[test]
    fn happy_path_switches_after_smoke_and_stops_the_version_before_blue() {
        let r = new(Some(2), Some(1));
        let (r, a) = step(&r, Event::InstancesHealthy, 2_000);
        assert_eq!(
            (r.phase, a),
            (Phase::Verifying, vec![Action::RunSmoke { version: 3 }])
        );
        let (r, a) = step(&r, Event::SmokePassed, 3_000);
        assert_eq!(r.phase, Phase::Shifting);
        assert_eq!(
            aliases(&a),
            vec![(Alias::Live, Some(3)), (Alias::Blue, Some(2))]
        );
        assert_eq!(a.last(), Some(&Action::Route));
        let (r, a) = step(&r, Event::Switched, 3_100);
        assert_eq!(r.monitor_until, Some(Timestamp(33_100)));
        assert_eq!(
            a,
            vec![Action::Monitor {
                until: Timestamp(33_100)
            }]
        );
        let (r, a) = step(&r, Event::MonitorElapsed, 33_100);
        assert_eq!(r.phase, Phase::Succeeded);
        assert_eq!(r.finished_at, Some(Timestamp(33_100)));
        assert!(a.contains(&Action::StopVersion { version: 1 }));
        assert!(
            !a.contains(&Action::StopVersion { version: 2 }),
            "blue stays warm"
        );
        assert!(r.reason.unwrap().contains("v2 stays warm"));
    }

    #[test]
    fn failures_before_the_switch_never_touch_live() {
        for (r, e) in [
            (
                new(Some(2), None),
                Event::InstancesFailed {
                    reason: "exit 1".into(),
                },
            ),
            (
                step(&new(Some(2), None), Event::InstancesHealthy, 2).0,
                Event::SmokeFailed {
                    reason: "GET / → 500".into(),
                },
            ),
            (new(Some(2), None), Event::Cancel { by: "ada".into() }),
            (
                step(&new(Some(2), None), Event::InstancesHealthy, 2).0,
                Event::Recovered,
            ),
        ] {
            let (after, a) = step(&r, e, 5);
            assert!(after.phase.is_terminal());
            assert!(
                aliases(&a).iter().all(|(alias, _)| *alias == Alias::Green),
                "{a:?}"
            );
            assert!(a.contains(&Action::StopVersion { version: 3 }));
            assert!(after.reason.unwrap().contains("live was not changed"));
        }
    }

    #[test]
    fn monitor_failure_restores_live_and_blue() {
        let r = new(Some(2), Some(1));
        let (r, _) = step(&r, Event::InstancesHealthy, 2);
        let (r, _) = step(&r, Event::SmokePassed, 3);
        let (r, _) = step(&r, Event::Switched, 4);
        let (r, a) = step(
            &r,
            Event::MonitorFailed {
                reason: "FAIL: error_rate > 5%".into(),
            },
            5,
        );
        assert_eq!(r.phase, Phase::RolledBack);
        assert_eq!(
            aliases(&a),
            vec![
                (Alias::Live, Some(2)),
                (Alias::Blue, Some(1)),
                (Alias::Green, None)
            ]
        );
        assert!(a.contains(&Action::StopVersion { version: 3 }));
        assert!(r.reason.unwrap().contains("live is back on v2"));
    }

    #[test]
    fn first_release_has_nothing_to_roll_back_to() {
        let r = new(None, None);
        let (r, _) = step(&r, Event::InstancesHealthy, 2);
        let (r, a) = step(&r, Event::SmokePassed, 3);
        assert_eq!(aliases(&a), vec![(Alias::Live, Some(3))]);
        let (r, _) = step(&r, Event::Switched, 4);
        let (r, a) = step(&r, Event::MonitorFailed { reason: "x".into() }, 5);
        assert_eq!(r.phase, Phase::Failed);
        assert!(!a.iter().any(|x| matches!(x, Action::StopVersion { .. })));
    }

    #[test]
    fn recovery_resumes_monitoring_with_a_fresh_window() {
        let r = new(Some(2), None);
        let (r, _) = step(&r, Event::InstancesHealthy, 2);
        let (r, _) = step(&r, Event::SmokePassed, 3);
        let (r, _) = step(&r, Event::Switched, 4);
        let (r, a) = step(&r, Event::Recovered, 100_000);
        assert_eq!(r.phase, Phase::Monitoring);
        assert_eq!(r.monitor_until, Some(Timestamp(130_000)));
        assert_eq!(
            a,
            vec![
                Action::Route,
                Action::Monitor {
                    until: Timestamp(130_000)
                }
            ]
        );
    }

    #[test]
    fn terminal_rollouts_accept_no_event() {
        let (done, _) = step(&new(None, None), Event::Cancel { by: "x".into() }, 2);
        for e in [
            Event::InstancesHealthy,
            Event::Recovered,
            Event::Cancel { by: "y".into() },
        ] {
            let err = done.next(&e, Timestamp(3)).unwrap_err();
            assert_eq!(err.phase, Phase::Aborted);
        }
        assert!(
            new(None, None)
                .next(&Event::Switched, Timestamp(3))
                .is_err()
        );
    }
}
