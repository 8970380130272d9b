//! Access log in the combined log format. Requests append their line to a shared buffer;
//! a background thread writes the buffer out every 100 ms (sooner when it fills), so a
//! request costs no system call and no thread wake-up, and a slow disk never holds up a
//! response. If the disk falls far behind, lines are dropped (and counted) rather than
//! letting memory grow.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::MirrorError;

/// How often buffered lines are written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered bytes that wake the writer before the interval ends.
const WAKE_AT: usize = 256 * 1024;
/// Buffered bytes past which new lines are dropped.
const PENDING_MAX: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Handle>,
}

/// Owned by the `AccessLog` clones only: dropping the last one writes what is left.
struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    path: PathBuf,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    dropped: u64,
    closed: bool,
}

impl AccessLog {
    /// Appends to `path` (created if missing).
    pub fn open(path: &Path) -> Result<Self, MirrorError> {
        let error = |source| MirrorError::AccessLog {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(error)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            path: path.to_owned(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mirror-access-log".into())
                .spawn(move || write_lines(file, &shared))
                .map_err(error)?
        };
        Ok(Self {
            inner: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Queues one line (without its newline).
    pub fn record(&self, line: &str) {
        let shared = &self.inner.shared;
        let mut pending = lock(&shared.pending);
        if pending.lines.len() + line.len() + 1 > PENDING_MAX {
            pending.dropped += 1;
            return;
        }
        pending.lines.extend_from_slice(line.as_bytes());
        pending.lines.push(b'\n');
        if pending.lines.len() >= WAKE_AT {
            shared.wake.notify_one();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.shared.pending).closed = true;
        self.shared.wake.notify_one();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

/// A poisoned lock only means another thread panicked mid-append: the buffer is still
/// bytes, keep using it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lines(mut file: File, shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        let (dropped, closed) = {
            let mut pending = lock(&shared.pending);
            if pending.lines.len() < WAKE_AT && !pending.closed {
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_INTERVAL)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            }
            // Swap buffers: requests keep appending while this batch is written.
            std::mem::swap(&mut batch, &mut pending.lines);
            (std::mem::take(&mut pending.dropped), pending.closed)
        };
        if !batch.is_empty() {
            if let Err(err) = file.write_all(&batch) {
                tracing::warn!("access log {}: {err}", shared.path.display());
            }
            batch.clear();
            // Keep a burst's buffer from pinning memory for the rest of the run.
            batch.shrink_to(WAKE_AT);
        }
        if dropped > 0 {
            tracing::warn!(
                "access log {}: {dropped} lines dropped (the disk did not keep up)",
                shared.path.display()
            );
        }
        if closed {
            return;
        }
    }
}
