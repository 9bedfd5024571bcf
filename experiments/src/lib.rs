//! # meshsim-experiments
//!
//! The `meshsim` command line and everything at the edge of the simulator: trace tools,
//! replays, result files (JSON, Parquet, figures), progress bars. The simulator crates below it
//! (`meshsim-traces`, `meshsim-models`, `meshsim-sim`) do no I/O of their own.

pub mod bench;
pub mod calibrate_cmd;
pub mod cli;
pub mod coldstart_cmd;
pub mod figures;
pub mod output;
pub mod progress;
pub mod replay;
pub mod reproduce;
pub mod sweep;
pub mod trace_cmd;
pub mod xds_sizes;

/// `println!` for command output that ends the process quietly when stdout is closed (for
/// example `meshsim replay | head`), instead of panicking on a broken pipe.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}
