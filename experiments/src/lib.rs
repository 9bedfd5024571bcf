//! # meshsim-experiments
//!
//! The `meshsim` command line and everything at the edge of the simulator: trace tools,
//! replays, result files (JSON, Parquet, figures), progress bars. The simulator crates below it
//! (`meshsim-traces`, `meshsim-models`, `meshsim-sim`) do no I/O of their own.

pub mod bench;
pub mod cli;
pub mod figures;
pub mod output;
pub mod progress;
pub mod replay;
pub mod trace_cmd;
