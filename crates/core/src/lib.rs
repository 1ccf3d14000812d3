//! rollgate's pure domain: the configuration model and its validation, the words of the
//! design (app, environment, version, alias, rollout), the blue/green rollout state machine
//! and the rules that judge live traffic.
//!
//! Nothing in this crate does I/O or needs an async runtime, so every decision the control
//! plane takes can be unit-tested here.

pub mod config;
pub mod model;
pub mod rollout;
pub mod rule;
pub mod signing;
pub mod stats;

pub use config::{AppConfig, Config, ConfigError, ConfigErrors, EnvConfig};
pub use model::{Alias, Outcome, Phase, Timestamp};
pub use rollout::{Action, Event, NewRollout, Pause, Rollout, Step, TransitionError};
pub use rule::{Rule, RuleVerdict, TrafficStats};
