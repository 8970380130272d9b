//! What each page shows: the rows read from the store (`*Data::read`, one database call
//! per page) and the view models the templates render (plain strings and numbers, already
//! formatted; the templates only place and escape them).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::render::{duration_ms, size, span, utc};
use super::{request_url, snapshot_diff_url, step_log_url, WebError};
use crate::publish::diff::{diff_entries, Build, ChangeKind};
use crate::store::{
    ChannelRow, Db, RequestRow, RequestState, SnapshotEntry, SnapshotRow, StateCounts, StepAttempt,
    StepRow, StepState, StoreError, WorkerRow,
};

/// How much of a log the page itself carries; the script fetches what comes after.
pub const PAGE_LOG_BYTES: u64 = 1 << 20;

/// Requests listed under "recent requests".
const RECENT_REQUESTS: u32 = 20;

fn count(counts: &StateCounts, state: StepState) -> u64 {
    counts
        .iter()
        .find(|(s, _)| *s == state)
        .map(|(_, n)| *n)
        .unwrap_or(0)
}

/// `3 succeeded, 1 failed (4 steps)`.
fn progress(counts: &StateCounts) -> String {
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "no steps".into();
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(
        "{} ({total} step{})",
        parts.join(", "),
        if total == 1 { "" } else { "s" }
    )
}

// ----- dashboard -----

pub struct DashboardData {
    channels: Vec<(ChannelRow, Option<SnapshotRow>)>,
    queue: StateCounts,
    in_progress: Vec<(RequestRow, StateCounts)>,
    running: Vec<StepRow>,
    workers: Vec<WorkerRow>,
    recent: Vec<RequestRow>,
}

impl DashboardData {
    pub fn read(db: &mut Db) -> Result<DashboardData, StoreError> {
        let mut channels = Vec::new();
        for channel in db.list_channels(None)? {
            let snapshot = db.snapshot(channel.snapshot_id)?;
            channels.push((channel, snapshot));
        }
        let mut in_progress = Vec::new();
        for request in db.unfinished_requests()? {
            let counts = db.request_state_counts(request.id)?;
            in_progress.push((request, counts));
        }
        Ok(DashboardData {
            channels,
            queue: db.queue_counts()?,
            in_progress,
            running: db.running_steps()?,
            workers: db.list_workers()?,
            recent: db.list_requests(RECENT_REQUESTS)?,
        })
    }
}

#[derive(Serialize)]
pub struct Dashboard {
    profiles: Vec<ProfileChannels>,
    queue: Queue,
    in_progress: Vec<RequestLine>,
    running: Vec<RunningStep>,
    workers: Vec<WorkerLine>,
    recent: Vec<RequestLine>,
}

#[derive(Serialize)]
struct ProfileChannels {
    name: String,
    channels: Vec<ChannelLine>,
    /// Diff stable -> testing, when both exist and differ.
    promote_diff_url: Option<String>,
}

#[derive(Serialize)]
struct ChannelLine {
    profile: String,
    /// First line of its profile (the profile name is shown once).
    first: bool,
    name: String,
    snapshot_id: i64,
    packages: String,
    size: String,
    created_utc: String,
    created_age: String,
    updated_utc: String,
    updated_age: String,
    diff_url: String,
}

#[derive(Serialize)]
struct Queue {
    queued: u64,
    ready: u64,
    running: u64,
    requests_in_progress: usize,
    /// `request` or `requests`.
    requests_word: &'static str,
}

#[derive(Serialize)]
struct RequestLine {
    id: i64,
    url: String,
    kind: String,
    profile: String,
    target: String,
    state: String,
    progress: String,
    created_utc: String,
    created_age: String,
    took: String,
}

#[derive(Serialize)]
struct RunningStep {
    id: i64,
    cpv: String,
    profile: String,
    worker: String,
    state: String,
    running_for: String,
    request_id: i64,
    request_url: String,
    log_url: String,
}

#[derive(Serialize)]
struct WorkerLine {
    name: String,
    host: String,
    profiles: String,
    heartbeat_age: String,
    heartbeat_utc: String,
    load: String,
    paused: bool,
    paused_reason: String,
}

fn request_line(r: &RequestRow, counts: Option<&StateCounts>, now: i64) -> RequestLine {
    RequestLine {
        id: r.id,
        url: request_url(r.id),
        kind: r.kind.to_string(),
        profile: r.profile.clone(),
        target: r.target.clone(),
        state: r.state.to_string(),
        progress: counts.map(progress).unwrap_or_default(),
        created_utc: utc(r.created_at),
        created_age: span(now - r.created_at),
        took: r
            .finished_at
            .map(|f| span(f - r.created_at))
            .unwrap_or_else(|| "…".into()),
    }
}

pub fn dashboard(data: &DashboardData, now: i64) -> Dashboard {
    let mut by_profile: BTreeMap<&str, Vec<&(ChannelRow, Option<SnapshotRow>)>> = BTreeMap::new();
    for entry in &data.channels {
        by_profile.entry(&entry.0.profile).or_default().push(entry);
    }
    let profiles = by_profile
        .into_iter()
        .map(|(profile, rows)| {
            let pointer = |name: &str| {
                rows.iter()
                    .find(|(c, _)| c.name == name)
                    .map(|(c, _)| c.snapshot_id)
            };
            let promote_diff_url = match (
                pointer(crate::publish::STABLE),
                pointer(crate::publish::TESTING),
            ) {
                (Some(stable), Some(testing)) if stable != testing => {
                    Some(snapshot_diff_url(profile, Some(stable), testing))
                }
                _ => None,
            };
            let channels = rows
                .iter()
                .enumerate()
                .map(|(i, (channel, snapshot))| ChannelLine {
                    profile: profile.to_owned(),
                    first: i == 0,
                    name: channel.name.clone(),
                    snapshot_id: channel.snapshot_id,
                    packages: snapshot
                        .as_ref()
                        .map(|s| s.packages.to_string())
                        .unwrap_or_else(|| "?".into()),
                    size: snapshot
                        .as_ref()
                        .map(|s| size(s.total_size))
                        .unwrap_or_else(|| "?".into()),
                    created_utc: snapshot
                        .as_ref()
                        .map(|s| utc(s.created_at))
                        .unwrap_or_default(),
                    created_age: snapshot
                        .as_ref()
                        .map(|s| span(now - s.created_at))
                        .unwrap_or_else(|| "?".into()),
                    updated_utc: utc(channel.updated_at),
                    updated_age: span(now - channel.updated_at),
                    diff_url: snapshot_diff_url(profile, None, channel.snapshot_id),
                })
                .collect();
            ProfileChannels {
                name: profile.to_owned(),
                channels,
                promote_diff_url,
            }
        })
        .collect();

    let worker_names: HashMap<i64, &str> = data
        .workers
        .iter()
        .map(|w| (w.id, w.name.as_str()))
        .collect();
    let running = data
        .running
        .iter()
        .map(|s| RunningStep {
            id: s.id,
            cpv: s.cpv.clone(),
            profile: s.profile.clone(),
            worker: s
                .lease_worker_id
                .and_then(|id| worker_names.get(&id).copied())
                .unwrap_or("?")
                .to_owned(),
            state: s.state.to_string(),
            running_for: s
                .started_at
                .map(|t| span(now - t))
                .unwrap_or_else(|| "?".into()),
            request_id: s.request_id,
            request_url: request_url(s.request_id),
            log_url: step_log_url(s.id),
        })
        .collect();
    let workers = data
        .workers
        .iter()
        .map(|w| WorkerLine {
            name: w.name.clone(),
            host: w
                .capabilities
                .get("host")
                .and_then(|h| h.as_str())
                .unwrap_or("")
                .to_owned(),
            profiles: w.profiles.join(", "),
            heartbeat_age: w
                .last_heartbeat
                .map(|t| format!("{} ago", span(now - t)))
                .unwrap_or_else(|| "never".into()),
            heartbeat_utc: w.last_heartbeat.map(utc).unwrap_or_default(),
            load: w
                .load_1min
                .map(|l| format!("{l:.2}"))
                .unwrap_or_else(|| "–".into()),
            paused: w.paused,
            paused_reason: w.paused_reason.clone().unwrap_or_default(),
        })
        .collect();
    Dashboard {
        profiles,
        queue: Queue {
            queued: count(&data.queue, StepState::Queued),
            ready: count(&data.queue, StepState::Ready),
            running: count(&data.queue, StepState::Leased)
                + count(&data.queue, StepState::Building),
            requests_in_progress: data.in_progress.len(),
            requests_word: if data.in_progress.len() == 1 {
                "request"
            } else {
                "requests"
            },
        },
        in_progress: data
            .in_progress
            .iter()
            .map(|(r, counts)| request_line(r, Some(counts), now))
            .collect(),
        running,
        workers,
        recent: data
            .recent
            .iter()
            .map(|r| request_line(r, None, now))
            .collect(),
    }
}

// ----- request -----

pub struct RequestData {
    request: RequestRow,
    steps: Vec<(StepRow, Vec<StepAttempt>, bool)>,
    counts: StateCounts,
    snapshot: Option<crate::store::RequestPublished>,
}

impl RequestData {
    /// `log_path` names a step's live log file (a step has a log if it or its blob exists).
    pub fn read(
        db: &mut Db,
        id: i64,
        log_path: impl Fn(i64) -> PathBuf,
    ) -> Result<RequestData, StoreError> {
        let request = db.request(id)?;
        let mut steps = Vec::new();
        for step in db.request_steps(id)? {
            let attempts = db.step_attempts(step.id)?;
            let has_log = step.log_blob.is_some() || log_path(step.id).exists();
            steps.push((step, attempts, has_log));
        }
        let snapshot = db.request_published(id)?;
        Ok(RequestData {
            request,
            steps,
            counts: db.request_state_counts(id)?,
            snapshot,
        })
    }
}

#[derive(Serialize)]
pub struct RequestPage {
    request: RequestView,
    progress: String,
    planning: bool,
    snapshot: Option<SnapshotLink>,
    failing: Vec<StepView>,
    steps: Vec<StepView>,
    api_url: String,
}

#[derive(Serialize)]
struct RequestView {
    id: i64,
    kind: String,
    profile: String,
    target: String,
    state: String,
    cancel_requested: bool,
    error: Option<String>,
    created_utc: String,
    created_age: String,
    finished_utc: Option<String>,
    took: String,
}

#[derive(Serialize)]
struct SnapshotLink {
    id: i64,
    /// Nothing changed: no snapshot was made, `testing` kept this one.
    unchanged: bool,
    diff_url: String,
}

#[derive(Serialize)]
struct StepView {
    id: i64,
    cpv: String,
    slot: String,
    state: String,
    reason: String,
    attempts: u32,
    max_attempts: u32,
    duration: String,
    worker: String,
    has_log: bool,
    live: bool,
    log_url: String,
}

fn step_view(step: &StepRow, attempts: &[StepAttempt], has_log: bool, now: i64) -> StepView {
    let duration = match (step.duration_ms, step.started_at) {
        (Some(ms), _) if step.state.is_terminal() || step.state == StepState::Ready => {
            duration_ms(ms)
        }
        (_, Some(started)) if step.state.is_leased() => format!("{} so far", span(now - started)),
        (Some(ms), _) => duration_ms(ms),
        _ => String::new(),
    };
    StepView {
        id: step.id,
        cpv: step.cpv.clone(),
        slot: step.slot.clone(),
        state: step.state.to_string(),
        reason: step.reason.clone().unwrap_or_default(),
        attempts: step.attempts,
        max_attempts: step.max_attempts,
        duration,
        worker: attempts
            .last()
            .map(|a| a.worker.clone())
            .unwrap_or_default(),
        // A leased step's log page follows the build even before its first line.
        has_log: has_log || step.state.is_leased(),
        live: step.state.is_leased(),
        log_url: step_log_url(step.id),
    }
}

pub fn request(data: &RequestData, now: i64) -> RequestPage {
    let r = &data.request;
    let steps: Vec<StepView> = data
        .steps
        .iter()
        .map(|(s, a, has_log)| step_view(s, a, *has_log, now))
        .collect();
    // What notifications of a failed request list: failed steps, then the blocked ones.
    let failing = data
        .steps
        .iter()
        .filter(|(s, _, _)| s.state == StepState::Failed)
        .chain(
            data.steps
                .iter()
                .filter(|(s, _, _)| s.state == StepState::Blocked),
        )
        .map(|(s, a, has_log)| step_view(s, a, *has_log, now))
        .collect();
    RequestPage {
        request: RequestView {
            id: r.id,
            kind: r.kind.to_string(),
            profile: r.profile.clone(),
            target: r.target.clone(),
            state: r.state.to_string(),
            cancel_requested: r.cancel_requested,
            error: r.error.clone(),
            created_utc: utc(r.created_at),
            created_age: span(now - r.created_at),
            finished_utc: r.finished_at.map(utc),
            took: r
                .finished_at
                .map(|f| span(f - r.created_at))
                .unwrap_or_default(),
        },
        progress: progress(&data.counts),
        planning: r.state == RequestState::Planning,
        snapshot: data.snapshot.map(|p| SnapshotLink {
            id: p.snapshot_id,
            unchanged: p.unchanged,
            diff_url: snapshot_diff_url(&r.profile, None, p.snapshot_id),
        }),
        failing,
        steps,
        api_url: format!("/api/v1/requests/{}", r.id),
    }
}

// ----- step log -----

/// The end of a log file as the page shows it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogTail {
    pub text: String,
    /// Byte offset just after `text`: where the script continues.
    pub offset: u64,
    /// Bytes at the start left out of `text`.
    pub skipped: u64,
}

/// Reads the last `max` bytes of a log (from a line start when cut), up to a whole UTF-8
/// character: a character half-written by a worker is left for the script to fetch.
/// A missing file is an empty log.
pub fn read_log_tail(path: &Path, max: u64) -> std::io::Result<LogTail> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogTail::default()),
        Err(e) => return Err(e),
    };
    // The file may grow while we read: read to the size seen first, the script does the rest.
    let size = file.metadata()?.len();
    let mut start = size.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(size - start).read_to_end(&mut bytes)?;
    if start > 0 {
        let cut = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        bytes.drain(..cut);
        start += cut as u64;
    }
    let keep = bytes.len() - incomplete_utf8_tail(&bytes);
    bytes.truncate(keep);
    Ok(LogTail {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        offset: start + bytes.len() as u64,
        skipped: start,
    })
}

/// Length of an unfinished UTF-8 sequence at the end of `bytes` (0 when none).
fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[derive(Serialize)]
pub struct StepLogPage {
    step: StepLogStep,
    /// Not `log`: that name is handlebars' logging helper.
    log_text: String,
    offset: u64,
    skipped: String,
    complete: bool,
    complete_header: &'static str,
    raw_url: String,
    step_api_url: String,
}

#[derive(Serialize)]
struct StepLogStep {
    id: i64,
    cpv: String,
    profile: String,
    state: String,
    reason: Option<String>,
    attempts: u32,
    max_attempts: u32,
    worker: Option<String>,
    request_id: i64,
    request_url: String,
}

pub fn step_log(step: &StepRow, worker: Option<String>, tail: LogTail) -> StepLogPage {
    StepLogPage {
        step: StepLogStep {
            id: step.id,
            cpv: step.cpv.clone(),
            profile: step.profile.clone(),
            state: step.state.to_string(),
            reason: step.reason.clone(),
            attempts: step.attempts,
            max_attempts: step.max_attempts,
            worker,
            request_id: step.request_id,
            request_url: request_url(step.request_id),
        },
        log_text: tail.text,
        offset: tail.offset,
        skipped: if tail.skipped > 0 {
            size(tail.skipped)
        } else {
            String::new()
        },
        // The log API's own rule: an attempt that ended (even one waiting for a retry).
        complete: step.state.is_terminal() || step.state == StepState::Ready,
        complete_header: crate::coordinator::LOG_COMPLETE_HEADER,
        raw_url: format!("/api/v1/steps/{}/log", step.id),
        step_api_url: format!("/api/v1/steps/{}", step.id),
    }
}

// ----- snapshot diff -----

/// Which snapshots to compare, as the query asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffChoice {
    /// None: the profile's newest snapshot.
    to: Option<i64>,
    from: FromChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FromChoice {
    /// The snapshot of the profile made before `to`.
    Previous,
    /// Compare with nothing: every package is added.
    Nothing,
    Snapshot(i64),
}

impl DiffChoice {
    pub fn parse(from: Option<&String>, to: Option<&String>) -> Result<DiffChoice, WebError> {
        let id = |name: &str, text: &str| {
            text.trim()
                .parse::<i64>()
                .map_err(|_| WebError::BadRequest(format!("{name}={text:?} is not a snapshot id")))
        };
        let to = match to.map(|t| t.trim()) {
            None | Some("") => None,
            Some(t) => Some(id("to", t)?),
        };
        let from = match from.map(|f| f.trim()) {
            None | Some("") => FromChoice::Previous,
            Some("none") => FromChoice::Nothing,
            Some(f) => FromChoice::Snapshot(id("from", f)?),
        };
        Ok(DiffChoice { to, from })
    }
}

pub struct DiffData {
    snapshots: Vec<SnapshotRow>,
    channels: Vec<ChannelRow>,
    from: Option<(SnapshotRow, Vec<SnapshotEntry>)>,
    to: (SnapshotRow, Vec<SnapshotEntry>),
}

impl DiffData {
    /// The profile's snapshots and the two compared (with their packages). The outer error
    /// is the database's, the inner one what the page answers (unknown snapshot...).
    pub fn read(
        db: &mut Db,
        profile: &str,
        choice: DiffChoice,
    ) -> Result<Result<DiffData, WebError>, StoreError> {
        let snapshots = db.list_snapshots(Some(profile))?;
        let find = |id: i64| snapshots.iter().position(|s| s.id == id);
        let to_index = match choice.to {
            None if snapshots.is_empty() => {
                return Ok(Err(WebError::not_found(format!(
                    "profile {profile:?} has no snapshots"
                ))))
            }
            None => snapshots.len() - 1,
            Some(id) => match find(id) {
                Some(i) => i,
                None => {
                    return Ok(Err(WebError::not_found(format!(
                        "profile {profile:?} has no snapshot {id}"
                    ))))
                }
            },
        };
        let from_index = match choice.from {
            FromChoice::Previous => to_index.checked_sub(1),
            FromChoice::Nothing => None,
            FromChoice::Snapshot(id) => match find(id) {
                Some(i) => Some(i),
                None => {
                    return Ok(Err(WebError::not_found(format!(
                        "profile {profile:?} has no snapshot {id}"
                    ))))
                }
            },
        };
        let with_entries = |db: &Db, s: &SnapshotRow| -> Result<_, StoreError> {
            Ok((s.clone(), db.snapshot_entries(s.id)?))
        };
        let to = with_entries(db, &snapshots[to_index])?;
        let from = match from_index {
            Some(i) => Some(with_entries(db, &snapshots[i])?),
            None => None,
        };
        let channels = db.list_channels(Some(profile))?;
        Ok(Ok(DiffData {
            snapshots,
            channels,
            from,
            to,
        }))
    }
}

#[derive(Serialize)]
pub struct DiffPage {
    form_action: String,
    snapshots: Vec<SnapshotOption>,
    from: Option<SnapshotSide>,
    to: SnapshotSide,
    summary: String,
    sections: Vec<DiffSection>,
}

#[derive(Serialize)]
struct SnapshotOption {
    id: i64,
    label: String,
    is_from: bool,
    is_to: bool,
}

#[derive(Serialize)]
struct SnapshotSide {
    id: i64,
    packages: u64,
    created_utc: String,
    /// The channels pointing at it (`testing, stable`), or empty.
    channels: String,
}

#[derive(Serialize)]
struct DiffSection {
    kind: &'static str,
    heading: &'static str,
    count: usize,
    changes: Vec<ChangeLine>,
}

#[derive(Serialize)]
struct ChangeLine {
    kind: &'static str,
    cp: String,
    slot: String,
    old: String,
    new: String,
}

/// `1.0-r1 (build 3)`: the version part of a CPV with its BUILD_ID.
fn describe(build: Option<&Build>) -> String {
    match build {
        Some(b) => {
            let pf = b.cpv.rsplit_once('/').map(|(_, pf)| pf).unwrap_or(&b.cpv);
            let version = crate::atom::Cpv::parse(&b.cpv)
                .map(|c| c.version().to_string())
                .unwrap_or_else(|_| pf.to_owned());
            format!("{version} (build {})", b.build_id)
        }
        None => "–".into(),
    }
}

pub fn snapshot_diff(profile: &str, data: &DiffData) -> DiffPage {
    let channels_of = |id: i64| -> String {
        data.channels
            .iter()
            .filter(|c| c.snapshot_id == id)
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let side = |s: &SnapshotRow| SnapshotSide {
        id: s.id,
        packages: s.packages,
        created_utc: utc(s.created_at),
        channels: channels_of(s.id),
    };
    let no_entries = Vec::new();
    let old = data.from.as_ref().map(|(_, e)| e).unwrap_or(&no_entries);
    let (changes, unchanged) = diff_entries(old, &data.to.1);
    let kinds = [
        (ChangeKind::Added, "Added"),
        (ChangeKind::Upgraded, "Upgraded"),
        (ChangeKind::Downgraded, "Downgraded"),
        (ChangeKind::Removed, "Removed"),
        (ChangeKind::Rebuilt, "Rebuilt"),
    ];
    let sections: Vec<DiffSection> = kinds
        .iter()
        .map(|(kind, heading)| {
            let lines: Vec<ChangeLine> = changes
                .iter()
                .filter(|c| c.kind == *kind)
                .map(|c| ChangeLine {
                    kind: kind.as_str(),
                    cp: c.cp.clone(),
                    slot: c.slot.clone(),
                    old: describe(c.old.as_ref()),
                    new: describe(c.new.as_ref()),
                })
                .collect();
            DiffSection {
                kind: kind.as_str(),
                heading,
                count: lines.len(),
                changes: lines,
            }
        })
        .filter(|s| s.count > 0)
        .collect();
    let mut summary: Vec<String> = kinds
        .iter()
        .map(|(kind, _)| {
            let n = changes.iter().filter(|c| c.kind == *kind).count();
            format!("{n} {}", kind.as_str())
        })
        .collect();
    summary.push(format!("{unchanged} unchanged"));
    let from_id = data.from.as_ref().map(|(s, _)| s.id);
    DiffPage {
        form_action: format!(
            "/snapshots/{}/diff",
            percent_encoding::utf8_percent_encode(profile, percent_encoding::NON_ALPHANUMERIC)
        ),
        snapshots: data
            .snapshots
            .iter()
            .rev()
            .map(|s| {
                let channels = channels_of(s.id);
                SnapshotOption {
                    id: s.id,
                    label: if channels.is_empty() {
                        utc(s.created_at)
                    } else {
                        format!("{} [{channels}]", utc(s.created_at))
                    },
                    is_from: Some(s.id) == from_id,
                    is_to: s.id == data.to.0.id,
                }
            })
            .collect(),
        from: data.from.as_ref().map(|(s, _)| side(s)),
        to: side(&data.to.0),
        summary: summary.join(", "),
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_cuts_at_lines_and_characters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        assert_eq!(
            read_log_tail(&path, 100).expect("missing log"),
            LogTail::default()
        );
        std::fs::write(&path, "first line\nsecond line\n").expect("write");
        let whole = read_log_tail(&path, 100).expect("read");
        assert_eq!(whole.text, "first line\nsecond line\n");
        assert_eq!((whole.offset, whole.skipped), (23, 0));
        // Only the last 15 bytes fit: the cut line is dropped.
        let tail = read_log_tail(&path, 15).expect("read");
        assert_eq!(tail.text, "second line\n");
        assert_eq!((tail.offset, tail.skipped), (23, 11));
        // "é" half-written: its first byte waits for the next poll.
        std::fs::write(&path, b"caf\xc3").expect("write");
        let half = read_log_tail(&path, 100).expect("read");
        assert_eq!((half.text.as_str(), half.offset), ("caf", 3));
    }

    #[test]
    fn utf8_tails() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(b"a\xe2\x82"), 2);
        assert_eq!(incomplete_utf8_tail(b"a\xf0\x9f\x98"), 3);
        assert_eq!(incomplete_utf8_tail("😀".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(b""), 0);
    }

    fn step_row(state: StepState) -> StepRow {
        StepRow {
            id: 7,
            request_id: 3,
            cpv: "app-misc/hello-1.0".into(),
            slot: "0".into(),
            repo: "farm-test".into(),
            profile: "x86-64-v3".into(),
            fingerprint: "f".into(),
            use_flags: Vec::new(),
            state,
            reason: Some("needs <libfoo>".into()),
            sched_rank: 0,
            estimated_ms: 0,
            attempts: 1,
            max_attempts: 3,
            next_attempt_at: 0,
            lease_id: Some(1),
            lease_worker_id: Some(1),
            lease_expires_at: None,
            build_id: Some(1),
            started_at: Some(100),
            finished_at: None,
            duration_ms: None,
            log_blob: None,
        }
    }

    #[test]
    fn log_page_carries_the_escaped_log_and_where_to_go_on() {
        let tail = LogTail {
            text: ">>> <b>compiling</b> & linking\n".into(),
            offset: 4242,
            skipped: 0,
        };
        let page = step_log(&step_row(StepState::Building), Some("w1".into()), tail);
        let html = super::super::render::render("step_log", "log", &page).expect("renders");
        assert!(
            html.contains("&gt;&gt;&gt; &lt;b&gt;compiling&lt;/b&gt; &amp; linking"),
            "{html}"
        );
        assert!(html.contains(r#"data-offset="4242""#), "{html}");
        assert!(html.contains(r#"data-complete="false""#), "{html}");
        assert!(html.contains(r#"data-src="/api/v1/steps/7/log""#), "{html}");
        assert!(html.contains("needs &lt;libfoo&gt;"), "{html}");
        let done = step_log(&step_row(StepState::Failed), None, LogTail::default());
        let html = super::super::render::render("step_log", "log", &done).expect("renders");
        assert!(html.contains(r#"data-complete="true""#), "{html}");
        assert!(html.contains("Log complete (failed)."), "{html}");
    }

    #[test]
    fn empty_dashboard_renders() {
        let data = DashboardData {
            channels: Vec::new(),
            queue: Vec::new(),
            in_progress: Vec::new(),
            running: Vec::new(),
            workers: Vec::new(),
            recent: Vec::new(),
        };
        let html = super::super::render::render("dashboard", "Farm status", &dashboard(&data, 0))
            .expect("renders");
        assert!(html.contains("No snapshot published yet."), "{html}");
        assert!(
            html.contains(r#"<span id="queue-requests">0</span> requests"#),
            "{html}"
        );
    }

    #[test]
    fn diff_choices() {
        let s = |t: &str| Some(t.to_string());
        assert_eq!(
            DiffChoice::parse(None, None).expect("defaults"),
            DiffChoice {
                to: None,
                from: FromChoice::Previous
            }
        );
        assert_eq!(
            DiffChoice::parse(s("none").as_ref(), s(" 7").as_ref()).expect("parse"),
            DiffChoice {
                to: Some(7),
                from: FromChoice::Nothing
            }
        );
        assert!(matches!(
            DiffChoice::parse(s("x<y").as_ref(), None),
            Err(WebError::BadRequest(_))
        ));
    }
}
