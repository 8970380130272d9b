//! Terminal progress bars (indicatif) for the library's [`crate::progress`] tasks.
//!
//! Bars are drawn on stderr only when stderr is a terminal; otherwise every bar is hidden,
//! so scripts and tests get the same clean output as before. Log lines go through
//! [`LogWriter`], which lifts the bars while a line is written.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{Progress, ProgressSink, TaskSink, Unit};

/// The one set of bars of this process (on stderr, or hidden).
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        MultiProgress::with_draw_target(target)
    })
}

/// Whether bars are drawn at all (stderr is a terminal).
pub fn drawing() -> bool {
    !bars().is_hidden()
}

/// A [`Progress`] that draws terminal bars (or nothing when stderr is not a terminal).
pub fn terminal() -> Progress {
    if drawing() {
        Progress::new(Arc::new(TerminalBars))
    } else {
        Progress::none()
    }
}

/// Runs `f` (which writes to the terminal) with the bars lifted, so its output does not
/// mix with them.
pub fn above_bars<R>(f: impl FnOnce() -> R) -> R {
    bars().suspend(f)
}

/// A spinner for work of unknown length (`logs --follow`); hidden without a terminal,
/// cleared when dropped.
pub struct Spinner(ProgressBar);

impl Spinner {
    pub fn new(label: &str) -> Spinner {
        let bar = bars().add(ProgressBar::new_spinner());
        bar.set_style(style("{spinner} {prefix} {msg}"));
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner(bar)
    }

    pub fn set_message(&self, message: String) {
        self.0.set_message(message);
    }

    pub fn is_hidden(&self) -> bool {
        self.0.is_hidden()
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
        bars().remove(&self.0);
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

struct TerminalBars;

impl ProgressSink for TerminalBars {
    fn start(&self, label: &str, unit: Unit, total: Option<u64>) -> Box<dyn TaskSink> {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        let bar = bars().add(bar);
        bar.set_style(style(match (unit, total) {
            (Unit::Items, Some(_)) => "{prefix} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}",
            (Unit::Bytes, Some(_)) => {
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}"
            }
            (Unit::Items, None) => "{spinner} {prefix} {pos} {elapsed} {wide_msg}",
            (Unit::Bytes, None) => "{spinner} {prefix} {bytes} {bytes_per_sec} {wide_msg}",
        }));
        bar.set_prefix(label.to_owned());
        if total.is_none() {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Box::new(TerminalBar(bar))
    }
}

struct TerminalBar(ProgressBar);

impl TaskSink for TerminalBar {
    fn advance(&self, amount: u64) {
        self.0.inc(amount);
    }

    fn set_message(&self, message: &str) {
        self.0.set_message(message.to_owned());
    }

    fn finish(&self) {
        // The command prints its own summary: a finished bar only takes room.
        self.0.finish_and_clear();
        bars().remove(&self.0);
    }
}

/// Log output (tracing's writer): stderr, with the bars lifted while a line is written.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        above_bars(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_nothing_is_drawn() {
        // `cargo test` captures stderr: not a terminal.
        if std::io::stderr().is_terminal() {
            return;
        }
        assert!(!drawing());
        assert!(!terminal().is_active());
        let hidden = Spinner::new("step 1");
        assert!(hidden.is_hidden());
        let mut writer = LogWriter;
        assert_eq!(writer.write(b"").unwrap(), 0);
    }
}
