//! Access log in the combined log format, written by a background thread so a slow
//! disk never holds up a response.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;

use super::MirrorError;

#[derive(Clone)]
pub struct AccessLog {
    lines: mpsc::Sender<String>,
}

impl AccessLog {
    /// Appends to `path` (created if missing).
    pub fn open(path: &Path) -> Result<Self, MirrorError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| MirrorError::AccessLog {
                path: path.to_owned(),
                source,
            })?;
        let (lines, receiver) = mpsc::channel::<String>();
        let log_path = path.to_owned();
        std::thread::Builder::new()
            .name("mirror-access-log".into())
            .spawn(move || write_lines(BufWriter::new(file), receiver, &log_path))
            .map_err(|source| MirrorError::AccessLog {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self { lines })
    }

    pub fn record(&self, line: String) {
        // The writer thread only stops when the process does; a lost line is not an error.
        let _ = self.lines.send(line);
    }
}

fn write_lines(mut out: BufWriter<std::fs::File>, receiver: mpsc::Receiver<String>, path: &Path) {
    let report = |err: std::io::Error| tracing::warn!("access log {}: {err}", path.display());
    while let Ok(line) = receiver.recv() {
        if let Err(err) = writeln!(out, "{line}") {
            report(err);
        }
        // Drain what is queued, then flush: one write per burst, lines never linger.
        while let Ok(line) = receiver.try_recv() {
            if let Err(err) = writeln!(out, "{line}") {
                report(err);
            }
        }
        if let Err(err) = out.flush() {
            report(err);
        }
    }
}
