//! The parts of the `lookout` binary (`src/main.rs` wires them): configuration, the live
//! configuration path, logging, the plugin folder and the config file, the plugin CLI, the policy
//! test. A library so the fuzz targets (`tests/fuzz`) can reach the config parser; not an API
//! of its own.

pub mod config;
pub mod config_file;
pub mod diff;
pub mod kept;
pub mod live;
pub mod logging;
pub mod plugin_cli;
pub mod policy_test;
pub mod watch;
