//! A one-line progress bar on standard error, drawn only when it is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const WIDTH: usize = 30;

pub struct ProgressBar {
    label: String,
    total: u64,
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
}

impl ProgressBar {
    pub fn new(label: &str, total: u64) -> ProgressBar {
        ProgressBar {
            label: label.to_string(),
            total,
            enabled: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
        }
    }

    /// Redraws (at most ten times a second) with `done` of the total and a detail text.
    pub fn set(&mut self, done: u64, detail: &str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now - t < Duration::from_millis(100)) && done < self.total {
            return;
        }
        self.last_draw = Some(now);
        let line = render(&self.label, done, self.total, self.started.elapsed(), detail);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// Ends the bar's line so that what follows starts on a new one.
    pub fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// `label [#######.......]  45%  450/1000  123/s  detail`
fn render(label: &str, done: u64, total: u64, elapsed: Duration, detail: &str) -> String {
    let fraction = if total == 0 { 1.0 } else { (done.min(total) as f64) / (total as f64) };
    let filled = ((fraction * WIDTH as f64).round() as usize).min(WIDTH);
    let rate = if elapsed.as_secs_f64() > 0.0 { done as f64 / elapsed.as_secs_f64() } else { 0.0 };
    format!(
        "{label} [{}{}] {:>3.0}% {done}/{total} {rate:.0}/s {detail}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        fraction * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fraction_and_rate() {
        let line = render("flush", 5, 10, Duration::from_secs(1), "x");
        assert_eq!(line, "flush [###############...............]  50% 5/10 5/s x");
        assert!(render("a", 0, 0, Duration::ZERO, "").contains("100%"));
    }
}
