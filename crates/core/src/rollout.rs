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
    /// The weight steps of a gradual shift (canary, linear); empty for blue/green. Copied at
    /// creation so that a configuration change never alters a running rollout.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Index of the current step while shifting.
    #[serde(default)]
    pub step: Option<usize>,
    /// The candidate's share of `live` traffic in units of 0.1 % (0–1000) while shifting.
    #[serde(default)]
    pub weight: u32,
    /// When the current step's pause ends (None while paused for an operator).
    #[serde(default)]
    pub step_until: Option<Timestamp>,
}

/// One step of a gradual shift: move the candidate to `weight`, then pause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The candidate's share in units of 0.1 % (1–1000).
    pub weight: u32,
    pub pause: Pause,
}

/// How long a step holds before the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pause {
    /// Hold this long, judging the candidate all along, then go on by itself.
    Millis(u64),
    /// Hold until an operator resumes (`rollgate resume`) or promotes.
    Manual,
}

/// `12.5%` from 125.
pub fn percent(weight: u32) -> String {
    if weight.is_multiple_of(10) {
        format!("{}%", weight / 10)
    } else {
        format!("{}.{}%", weight / 10, weight % 10)
    }
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
    /// The current step's pause ended and the analysis found no fault.
    StepElapsed,
    /// A rule or statistical judgment failed while the candidate had part of the traffic.
    AnalysisFailed {
        reason: String,
    },
    /// An operator skips the remaining steps (or the rest of the monitor window).
    Promote {
        by: String,
    },
    /// An operator holds the shift at its current weight.
    Pause {
        by: String,
    },
    /// An operator lets a paused shift go on with its next step.
    Resume {
        by: String,
    },
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
    /// Judge the candidate against its rules (and the baseline) until the given time, or until
    /// an operator acts when `None`.
    Analyze { until: Option<Timestamp> },
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
    /// Weight steps; empty for blue/green.
    pub steps: Vec<Step>,
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
            steps: new.steps,
            step: None,
            weight: 0,
            step_until: None,
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
            (Phase::Verifying, Event::SmokePassed) if self.is_gradual() => {
                return Ok(self.enter_step(0, None, now));
            }
            (Phase::Shifting, Event::StepElapsed) | (Phase::Paused, Event::Resume { .. }) => {
                let next = self.step.map_or(0, |i| i + 1);
                return Ok(if next < self.steps.len() {
                    self.enter_step(next, None, now)
                } else {
                    self.promote(None, now)
                });
            }
            (Phase::Shifting | Phase::Paused, Event::Promote { by }) => {
                return Ok(self.promote(Some(format!("promoted by {by}")), now));
            }
            (Phase::Shifting, Event::Pause { by }) if self.step.is_some() => {
                let mut r = self.moved(
                    Phase::Paused,
                    Some(format!("paused by {by} at {}", percent(self.weight))),
                    now,
                );
                r.step_until = None;
                return Ok((r, vec![Action::Analyze { until: None }]));
            }
            (Phase::Shifting | Phase::Paused, Event::AnalysisFailed { reason })
                if self.step.is_some() =>
            {
                return Ok(self.off_candidate(
                    Phase::RolledBack,
                    format!("{reason}; all traffic is back on {}", self.stable_name()),
                    now,
                ));
            }
            (Phase::Shifting | Phase::Paused, Event::Cancel { by }) if self.step.is_some() => {
                return Ok(self.off_candidate(
                    Phase::Aborted,
                    format!(
                        "aborted by {by} at {}; all traffic is back on {}",
                        percent(self.weight),
                        self.stable_name()
                    ),
                    now,
                ));
            }
            (Phase::Shifting, Event::Recovered) if self.step.is_some() => {
                let i = self.step.unwrap_or(0);
                return Ok(self.enter_step(
                    i,
                    Some(format!(
                        "resumed at {} after a control-plane restart",
                        percent(self.weight)
                    )),
                    now,
                ));
            }
            (Phase::Paused, Event::Recovered) => {
                let r = self.moved(
                    Phase::Paused,
                    Some(format!(
                        "still paused at {} after a control-plane restart",
                        percent(self.weight)
                    )),
                    now,
                );
                return Ok((r, vec![Action::Route, Action::Analyze { until: None }]));
            }
            (Phase::Monitoring, Event::Promote { by }) => {
                let (mut r, actions) = self.next(&Event::MonitorElapsed, now)?;
                r.reason = r
                    .reason
                    .map(|why| format!("{why} (monitor window cut short by {by})"));
                return Ok((r, actions));
            }
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

    /// True when the candidate takes traffic in steps against a stable version.
    fn is_gradual(&self) -> bool {
        !self.steps.is_empty() && self.from_version.is_some()
    }

    fn stable_name(&self) -> String {
        self.from_version
            .map_or_else(|| "the stable version".to_string(), |v| format!("v{v}"))
    }

    /// Moves to step `i`: its weight, then its pause (timed, or held for an operator).
    fn enter_step(
        &self,
        i: usize,
        reason: Option<String>,
        now: Timestamp,
    ) -> (Rollout, Vec<Action>) {
        let step = self.steps.get(i).cloned().unwrap_or(Step {
            weight: 1000,
            pause: Pause::Millis(0),
        });
        let (phase, until) = match step.pause {
            Pause::Millis(ms) => (Phase::Shifting, Some(now.after(Duration::from_millis(ms)))),
            Pause::Manual => (Phase::Paused, None),
        };
        let mut r = self.moved(phase, reason, now);
        r.step = Some(i);
        r.weight = step.weight;
        r.step_until = until;
        (r, vec![Action::Route, Action::Analyze { until }])
    }

    /// Full promotion: `live` moves to the candidate, the stable version becomes `blue`.
    fn promote(&self, reason: Option<String>, now: Timestamp) -> (Rollout, Vec<Action>) {
        let until = now.after(Duration::from_millis(self.monitor_ms));
        let mut r = self.moved(Phase::Monitoring, reason, now);
        r.step = None;
        r.step_until = None;
        r.weight = 1000;
        r.monitor_until = Some(until);
        let mut actions = vec![Action::SetAlias {
            alias: Alias::Live,
            version: Some(self.version),
        }];
        if self.from_version.is_some() {
            actions.push(Action::SetAlias {
                alias: Alias::Blue,
                version: self.from_version,
            });
        }
        actions.push(Action::Route);
        actions.push(Action::Monitor { until });
        (r, actions)
    }

    /// Takes every request off the candidate (live never left the stable version) and stops it.
    fn off_candidate(
        &self,
        phase: Phase,
        reason: String,
        now: Timestamp,
    ) -> (Rollout, Vec<Action>) {
        let mut r = self.moved(phase, Some(reason), now);
        r.step = None;
        r.step_until = None;
        r.weight = 0;
        let actions = vec![
            Action::SetAlias {
                alias: Alias::Green,
                version: None,
            },
            Action::Route,
            Action::StopVersion {
                version: self.version,
            },
        ];
        (r, actions)
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
        Event::StepElapsed => "step_elapsed",
        Event::AnalysisFailed { .. } => "analysis_failed",
        Event::Promote { .. } => "promote",
        Event::Pause { .. } => "pause",
        Event::Resume { .. } => "resume",
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
                steps: vec![],
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

    fn canary(steps: &[(u32, Pause)]) -> Rollout {
        let mut r = new(Some(2), Some(1));
        r.steps = steps
            .iter()
            .map(|(w, p)| Step {
                weight: *w,
                pause: *p,
            })
            .collect();
        let (r, _) = step(&r, Event::InstancesHealthy, 2);
        r
    }

    #[test]
    fn canary_walks_its_steps_then_promotes() {
        let r = canary(&[
            (100, Pause::Millis(1_000)),
            (500, Pause::Millis(1_000)),
            (1000, Pause::Millis(0)),
        ]);
        let (r, a) = step(&r, Event::SmokePassed, 10);
        assert_eq!(
            (r.phase, r.step, r.weight, r.step_until),
            (Phase::Shifting, Some(0), 100, Some(Timestamp(1_010)))
        );
        assert_eq!(
            a,
            vec![
                Action::Route,
                Action::Analyze {
                    until: Some(Timestamp(1_010))
                }
            ]
        );
        assert!(
            aliases(&a).is_empty(),
            "live stays on the stable version while shifting"
        );
        let (r, _) = step(&r, Event::StepElapsed, 1_010);
        assert_eq!((r.step, r.weight), (Some(1), 500));
        let (r, _) = step(&r, Event::StepElapsed, 2_010);
        assert_eq!((r.step, r.weight), (Some(2), 1000));
        let (r, a) = step(&r, Event::StepElapsed, 2_010);
        assert_eq!(r.phase, Phase::Monitoring);
        assert_eq!(
            aliases(&a),
            vec![(Alias::Live, Some(3)), (Alias::Blue, Some(2))]
        );
        assert!(a.contains(&Action::Monitor {
            until: Timestamp(32_010)
        }));
    }

    #[test]
    fn a_failing_analysis_takes_all_traffic_off_the_candidate() {
        let r = canary(&[(100, Pause::Millis(1_000)), (1000, Pause::Millis(0))]);
        let (r, _) = step(&r, Event::SmokePassed, 10);
        let (r, a) = step(
            &r,
            Event::AnalysisFailed {
                reason: "FAIL: error_rate > 5%".into(),
            },
            500,
        );
        assert_eq!((r.phase, r.weight, r.step), (Phase::RolledBack, 0, None));
        assert_eq!(
            aliases(&a),
            vec![(Alias::Green, None)],
            "live never left v2"
        );
        assert!(a.contains(&Action::Route) && a.contains(&Action::StopVersion { version: 3 }));
        assert!(r.reason.unwrap().contains("all traffic is back on v2"));
    }

    #[test]
    fn operators_pause_resume_promote_and_abort() {
        let r = canary(&[
            (100, Pause::Millis(1_000)),
            (250, Pause::Manual),
            (1000, Pause::Millis(0)),
        ]);
        let (r, _) = step(&r, Event::SmokePassed, 10);
        let (r, a) = step(&r, Event::Pause { by: "ada".into() }, 20);
        assert_eq!((r.phase, r.weight), (Phase::Paused, 100));
        assert_eq!(a, vec![Action::Analyze { until: None }]);
        // Resume goes on with the next step, which itself waits for an operator.
        let (r, _) = step(&r, Event::Resume { by: "ada".into() }, 30);
        assert_eq!(
            (r.phase, r.weight, r.step_until),
            (Phase::Paused, 250, None)
        );
        let (aborted, _) = step(&r, Event::Cancel { by: "bob".into() }, 40);
        assert_eq!((aborted.phase, aborted.weight), (Phase::Aborted, 0));
        assert!(aborted.reason.unwrap().contains("aborted by bob at 25%"));
        let (promoted, a) = step(&r, Event::Promote { by: "cy".into() }, 40);
        assert_eq!(promoted.phase, Phase::Monitoring);
        assert_eq!(aliases(&a)[0], (Alias::Live, Some(3)));
        let (done, _) = step(&promoted, Event::Promote { by: "cy".into() }, 50);
        assert_eq!(done.phase, Phase::Succeeded);
    }

    #[test]
    fn a_restart_resumes_the_current_step() {
        let r = canary(&[
            (100, Pause::Millis(1_000)),
            (500, Pause::Millis(60_000)),
            (1000, Pause::Millis(0)),
        ]);
        let (r, _) = step(&r, Event::SmokePassed, 10);
        let (r, _) = step(&r, Event::StepElapsed, 1_010);
        let (r, a) = step(&r, Event::Recovered, 100_000);
        assert_eq!((r.phase, r.step, r.weight), (Phase::Shifting, Some(1), 500));
        assert_eq!(
            a,
            vec![
                Action::Route,
                Action::Analyze {
                    until: Some(Timestamp(160_000))
                }
            ]
        );
    }

    #[test]
    fn a_first_release_with_a_canary_strategy_switches_at_once() {
        let mut r = new(None, None);
        r.steps = vec![Step {
            weight: 100,
            pause: Pause::Millis(1_000),
        }];
        let (r, _) = step(&r, Event::InstancesHealthy, 2);
        let (r, a) = step(&r, Event::SmokePassed, 3);
        assert_eq!(r.phase, Phase::Shifting);
        assert_eq!(aliases(&a), vec![(Alias::Live, Some(3))]);
    }

    #[test]
    fn percentages_read_well() {
        assert_eq!(percent(100), "10%");
        assert_eq!(percent(5), "0.5%");
        assert_eq!(percent(1000), "100%");
    }
}
