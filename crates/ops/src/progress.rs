//! Progress of long operations (backup, restore, rebalance, add, remove): a bar with rate and ETA
//! on a terminal, plain log lines where stderr is not one (cron, systemd, CI), nothing with
//! `--quiet`. Always on stderr, so that what a verb prints on stdout stays its result.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// How often a plain progress line is written at most (a line at the start and at the end too).
const LINE_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown, for the whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// A line now and then (stderr is a file or a pipe).
    Lines,
    /// Nothing (`--quiet`).
    Quiet,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Sets the mode from `--quiet` and whether stderr is a terminal; called once by `main`.
pub fn init(quiet: bool) {
    let mode = match (quiet, std::io::stderr().is_terminal()) {
        (true, _) => Mode::Quiet,
        (false, true) => Mode::Bar,
        (false, false) => Mode::Lines,
    };
    let _ = MODE.set(mode);
}

/// The mode in force (plain lines when `init` was not called, as in library use).
pub fn mode() -> Mode {
    *MODE.get_or_init(|| Mode::Lines)
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Slots,
    Keys,
}

/// The progress of one operation of `total` units.
#[derive(Debug)]
pub struct Progress {
    label: String,
    unit: Unit,
    /// `None` when the total is not known beforehand (a snapshot streamed by a master).
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
    mode: Mode,
}

impl Progress {
    /// Starts showing the progress of `label` (e.g. `rebalance`) over `total` units.
    pub fn new(label: &str, total: u64, unit: Unit) -> Progress {
        Progress::start(label, Some(total), unit)
    }

    /// Starts showing the progress of `label` when the total is not known: how much so far and
    /// how fast, no ETA.
    pub fn open_ended(label: &str, unit: Unit) -> Progress {
        Progress::start(label, None, unit)
    }

    fn start(label: &str, total: Option<u64>, unit: Unit) -> Progress {
        let mode = mode();
        let bar = (mode == Mode::Bar).then(|| {
            let template = match (unit, total) {
                (Unit::Bytes, Some(_)) => "{prefix}: [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, ETA {eta} {msg}",
                (Unit::Slots | Unit::Keys, Some(_)) => "{prefix}: [{bar:30}] {pos}/{len} {per_sec}, ETA {eta} {msg}",
                (Unit::Bytes, None) => "{prefix}: {spinner} {bytes} {bytes_per_sec} {msg}",
                (Unit::Slots | Unit::Keys, None) => "{prefix}: {spinner} {pos} {per_sec} {msg}",
            };
            let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = match total {
                Some(total) => ProgressBar::new(total).with_style(style.progress_chars("=> ")),
                None => ProgressBar::new_spinner().with_style(style),
            };
            bar.set_prefix(label.to_owned());
            bar
        });
        let now = Instant::now();
        let progress =
            Progress { label: label.to_owned(), unit, total, done: 0, started: now, last_line: now, bar, mode };
        if mode == Mode::Lines {
            match total {
                Some(total) => eprintln!("{}: {} to do", progress.label, progress.amount(total)),
                None => eprintln!("{}: started", progress.label),
            }
        }
        progress
    }

    /// `n` more units done; `note` says what (shown with the bar, and in the next line).
    pub fn add(&mut self, n: u64, note: &str) {
        self.done += n;
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_position(self.done);
                bar.set_message(note.to_owned());
            }
            (None, Mode::Lines) if self.last_line.elapsed() >= LINE_EVERY => {
                match note {
                    "" => eprintln!("{}", self.line(false)),
                    note => eprintln!("{} ({note})", self.line(false)),
                }
                self.last_line = Instant::now();
            }
            _ => {}
        }
    }

    /// Ends the display: the bar is cleared, and a last line says what was done and how fast.
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.mode != Mode::Quiet {
            eprintln!("{}, done in {:.1?}", self.line(true), self.started.elapsed());
        }
    }

    /// Ends the display without the closing line: the work failed, and its error says so.
    pub fn abandon(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// `rebalance: 1200 of 5461 slots (21%), 300 slots/s, ETA 14s`; an open-ended count says how
    /// much `so far`, except in its `closing` line, where that is the total.
    fn line(&self, closing: bool) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let per_second = self.done as f64 / elapsed;
        let rate = match self.unit {
            Unit::Bytes => format!("{}/s", HumanBytes(per_second as u64)),
            Unit::Slots => format!("{per_second:.0} slots/s"),
            Unit::Keys => format!("{per_second:.0} keys/s"),
        };
        let Some(total) = self.total else {
            let so_far = if closing { "" } else { " so far" };
            return format!("{}: {}{so_far}, {rate}", self.label, self.amount(self.done));
        };
        let percent = self.done.saturating_mul(100).checked_div(total).unwrap_or(100);
        let left = total.saturating_sub(self.done);
        let eta = if per_second > 0.0 { format!("{:.0}s", left as f64 / per_second) } else { "?".to_owned() };
        format!("{}: {} of {} ({percent}%), {rate}, ETA {eta}", self.label, self.count(self.done), self.amount(total))
    }

    fn count(&self, n: u64) -> String {
        match self.unit {
            Unit::Bytes => HumanBytes(n).to_string(),
            Unit::Slots | Unit::Keys => n.to_string(),
        }
    }

    fn amount(&self, n: u64) -> String {
        match self.unit {
            Unit::Bytes => HumanBytes(n).to_string(),
            Unit::Slots => format!("{n} slots"),
            Unit::Keys => format!("{n} keys"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_says_how_much_of_what_how_fast_and_how_long_yet() {
        let mut progress = Progress::new("rebalance", 200, Unit::Slots);
        progress.add(50, "slot 7");
        let line = progress.line(false);
        assert!(line.starts_with("rebalance: 50 of 200 slots (25%), "), "{line}");
        assert!(line.contains(" slots/s, ETA "), "{line}");
        let bytes = Progress::new("backup", 3 << 20, Unit::Bytes);
        assert!(bytes.line(false).starts_with("backup: 0 B of 3.00 MiB (0%)"), "{}", bytes.line(false));
        let empty = Progress::new("restore", 0, Unit::Keys);
        assert!(empty.line(false).contains("(100%)"), "{}", empty.line(false));
        let mut streamed = Progress::open_ended("backup", Unit::Bytes);
        streamed.add(2 << 20, "");
        assert!(streamed.line(false).starts_with("backup: 2.00 MiB so far, "), "{}", streamed.line(false));
        assert!(streamed.line(true).starts_with("backup: 2.00 MiB, "), "{}", streamed.line(true));
    }
}
