//! End-to-end tests: the real `rollgate` binary, real child processes, real HTTP on
//! 127.0.0.1 with OS-chosen ports, and concurrent clients counting what they saw.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod alarms;
mod canary;
mod crash;
mod edge;
mod polyglot;
mod releases;
mod secrets;
// Each test module uses a different part of the harness.
#[allow(dead_code)]
mod util;
