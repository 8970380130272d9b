//! Progress of long work (indexing, publishing, uploads), as library code reports it.
//!
//! Library code never prints: it asks a [`Progress`] for a [`Task`] and advances it. The
//! command line plugs in terminal bars (`cli::progress`); everywhere else the default
//! [`Progress`] has no sink and every call is a no-op.

use std::fmt;
use std::sync::Arc;

/// What a task counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Packages, files: whole things.
    Items,
    Bytes,
}

/// Where progress goes: implemented by the command line's terminal bars (and by tests).
pub trait ProgressSink: Send + Sync {
    /// A task starts: `label` names it; `total` (in `unit`) is None when unknown.
    fn start(&self, label: &str, unit: Unit, total: Option<u64>) -> Box<dyn TaskSink>;
}

/// One running task of a [`ProgressSink`].
pub trait TaskSink: Send + Sync {
    /// `amount` more units are done.
    fn advance(&self, amount: u64);
    /// What the task is doing now (a file name, a state).
    fn set_message(&self, message: &str);
    /// The task is over (done or abandoned); called once, when its [`Task`] is dropped.
    fn finish(&self);
}

/// A handle that starts tasks on a sink, or on nothing (the default). Cheap to clone.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn ProgressSink>>);

impl Progress {
    pub fn new(sink: Arc<dyn ProgressSink>) -> Progress {
        Progress(Some(sink))
    }

    /// Reports nowhere.
    pub fn none() -> Progress {
        Progress(None)
    }

    pub fn is_active(&self) -> bool {
        self.0.is_some()
    }

    /// Starts a task; it ends when the returned [`Task`] is dropped.
    pub fn task(&self, label: &str, unit: Unit, total: Option<u64>) -> Task {
        Task(self.0.as_ref().map(|sink| sink.start(label, unit, total)))
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(active)"
        } else {
            "Progress(none)"
        })
    }
}

/// A running task; usable from several threads at once (`&Task` is enough to advance it).
pub struct Task(Option<Box<dyn TaskSink>>);

impl Task {
    /// A task that reports nowhere.
    pub fn none() -> Task {
        Task(None)
    }

    pub fn advance(&self, amount: u64) {
        if let Some(sink) = &self.0 {
            sink.advance(amount);
        }
    }

    pub fn set_message(&self, message: &str) {
        if let Some(sink) = &self.0 {
            sink.set_message(message);
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(sink) = &self.0 {
            sink.finish();
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Task")
    }
}

/// A sink that records what it is told, for tests of library code. Clones share the record.
#[derive(Debug, Default, Clone)]
pub struct RecordingSink {
    events: Arc<std::sync::Mutex<Vec<Event>>>,
}

/// One call a [`RecordingSink`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start {
        label: String,
        unit: Unit,
        total: Option<u64>,
    },
    Advance {
        label: String,
        amount: u64,
    },
    Message {
        label: String,
        message: String,
    },
    Finish {
        label: String,
    },
}

impl RecordingSink {
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The sum of the advances of tasks labelled `label`.
    pub fn advanced(&self, label: &str) -> u64 {
        self.events()
            .iter()
            .map(|e| match e {
                Event::Advance { label: l, amount } if l == label => *amount,
                _ => 0,
            })
            .sum()
    }

    fn record(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }
}

impl ProgressSink for RecordingSink {
    fn start(&self, label: &str, unit: Unit, total: Option<u64>) -> Box<dyn TaskSink> {
        self.record(Event::Start {
            label: label.to_owned(),
            unit,
            total,
        });
        Box::new(RecordingTask {
            sink: self.clone(),
            label: label.to_owned(),
        })
    }
}

struct RecordingTask {
    sink: RecordingSink,
    label: String,
}

impl TaskSink for RecordingTask {
    fn advance(&self, amount: u64) {
        self.sink.record(Event::Advance {
            label: self.label.clone(),
            amount,
        });
    }

    fn set_message(&self, message: &str) {
        self.sink.record(Event::Message {
            label: self.label.clone(),
            message: message.to_owned(),
        });
    }

    fn finish(&self) {
        self.sink.record(Event::Finish {
            label: self.label.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_report_to_the_sink_and_finish_on_drop() {
        let sink = RecordingSink::default();
        let progress = Progress::new(Arc::new(sink.clone()));
        {
            let task = progress.task("index", Unit::Items, Some(2));
            task.advance(1);
            task.set_message("a/b-1.gpkg.tar");
            task.advance(1);
        }
        assert_eq!(
            sink.events(),
            vec![
                Event::Start {
                    label: "index".into(),
                    unit: Unit::Items,
                    total: Some(2)
                },
                Event::Advance {
                    label: "index".into(),
                    amount: 1
                },
                Event::Message {
                    label: "index".into(),
                    message: "a/b-1.gpkg.tar".into()
                },
                Event::Advance {
                    label: "index".into(),
                    amount: 1
                },
                Event::Finish {
                    label: "index".into()
                },
            ]
        );
        assert_eq!(sink.advanced("index"), 2);
    }

    #[test]
    fn no_sink_is_a_no_op() {
        let progress = Progress::default();
        assert!(!progress.is_active());
        let task = progress.task("x", Unit::Bytes, None);
        task.advance(10);
        task.set_message("y");
        assert_eq!(format!("{progress:?}"), "Progress(none)");
    }
}
