//! Integration tests of the host: the real components built by `cargo xtask test`,
//! loaded into the real runtime, and a real server on a random port.

mod access;
mod admin;
mod authority;
mod brokers;
mod cache;
mod claims;
mod console;
mod crash;
mod deadlines;
mod faults;
mod fleet;
mod folder;
mod helpers;
mod hooks;
mod hostile;
mod outbound;
mod polyglot;
mod racers;
mod recordings;
mod replay;
mod resilience;
mod rollouts;
mod saga;
mod sandbox;
mod steps;
mod swap;
mod templates;
mod timers;
mod traces;
mod watcher;
