//! What the loop tells its user as it goes, as events: the console prints them (a line per
//! note and per finished experiment, or one JSON record per experiment); a caller that wants
//! them elsewhere (a UI, a test) passes its own [`Reporter`] to [`super::Driver::with_reporter`].

use crate::prompt;
use crate::results::Record;

/// One thing that happened.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A progress note (resuming, setting an interrupted experiment aside).
    Note(&'a str),
    /// An experiment finished and its row was written.
    Finished(&'a Record),
}

/// Receives the loop's events.
pub trait Reporter {
    /// Called for each event, in order.
    fn event(&mut self, event: Event<'_>);
}

/// Prints events on stdout: a line each, or JSON records only with `json`, nothing with `quiet`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Console {
    /// One JSON record per finished experiment, notes left out.
    pub json: bool,
    /// Print nothing (benchmarks, tests).
    pub quiet: bool,
}

impl Reporter for Console {
    fn event(&mut self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        match event {
            Event::Note(line) if !self.json => println!("{line}"),
            Event::Note(_) => {}
            // A record that cannot be printed says so on stderr rather than printing an empty line.
            Event::Finished(rec) if self.json => match serde_json::to_string(rec) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("cannot print experiment {} as JSON: {e}", rec.exp),
            },
            Event::Finished(rec) => println!("{}", prompt::record_line(rec)),
        }
    }
}
