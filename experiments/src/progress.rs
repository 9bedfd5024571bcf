//! Progress bars on a terminal; silence in CI and in pipes.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Whether progress should be drawn: stderr is a terminal and `CI` is not set.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// A progress bar that is hidden when not [`interactive`].
#[derive(Debug)]
pub struct Progress(ProgressBar);

impl Progress {
    pub fn new(total: u64, label: &str) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if interactive() {
                ProgressDrawTarget::stderr_with_hz(10)
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:40}] {pos}/{len} ({percent}%, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_owned());
        Self(bar)
    }
    pub fn set(&self, done: u64) {
        self.0.set_position(done);
    }
    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
