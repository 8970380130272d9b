//! Prometheus metrics (text exposition format 0.0.4, with the `prometheus-client` crate).
//!
//! [`FarmMetrics`] owns the coordinator's registry: histograms and counters that code paths
//! observe (builds, uploads, publishing), gauges filled from the store when `/metrics` is
//! scraped (queue, steps, requests, workers), and the mirror's atomic counters, read by a
//! collector at scrape time so that serving files never touches the registry.
//!
//! Metric names (all prefixed `binfarm_`):
//! - `queue_depth{state="ready"|"queued"}`, `steps{state}`, `requests{state}`,
//!   `workers_registered`, `workers_seen`, `workers_paused` (gauges)
//! - `build_duration_seconds{profile,result}` (histogram, worker-measured build time of
//!   each completed step)
//! - `upload_duration_seconds` (histogram, received + checked + signed + stored),
//!   `upload_received_bytes_total`, `uploads_total{result="stored"|"refused"}`
//! - `publish_duration_seconds{target}`, `publishes_total{target,result}` (`target` is
//!   `local` for the channel tree, `ftp:<host:port>` for an FTP mirror)
//! - `mirror_requests_total{method,status_class}`, `mirror_sent_bytes_total`

mod http;
mod mirror;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use http::router;
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

use crate::mirror::MirrorMetrics;
use crate::store::FarmGauges;

/// A worker counts as seen when its last heartbeat is at most this old.
pub const WORKER_SEEN_SECONDS: i64 = 60;

/// Builds take seconds to hours.
const BUILD_BUCKETS: [f64; 14] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0,
];
/// Uploads and publishing take milliseconds (a small package, a warm tree) to many minutes.
const TRANSFER_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    profile: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetResultLabels {
    target: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    kind: &'static str,
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The coordinator's metrics and their registry.
pub struct FarmMetrics {
    registry: Registry,
    queue_depth: Family<StateLabels, Gauge>,
    steps: Family<StateLabels, Gauge>,
    requests: Family<StateLabels, Gauge>,
    workers_registered: Gauge,
    workers_seen: Gauge,
    workers_paused: Gauge,
    build_duration: HistogramFamily<BuildLabels>,
    upload_duration: Histogram,
    upload_bytes: Counter,
    uploads: Family<ResultLabels, Counter>,
    publish_duration: HistogramFamily<TargetLabels>,
    publishes: Family<TargetResultLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    /// Counted by the mirror the coordinator serves.
    pub mirror: Arc<MirrorMetrics>,
}

impl std::fmt::Debug for FarmMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmMetrics").finish_non_exhaustive()
    }
}

impl Default for FarmMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn build_histogram() -> Histogram {
    Histogram::new(BUILD_BUCKETS)
}

fn transfer_histogram() -> Histogram {
    Histogram::new(TRANSFER_BUCKETS)
}

impl FarmMetrics {
    pub fn new() -> FarmMetrics {
        let mut registry = Registry::default();
        let queue_depth = Family::<StateLabels, Gauge>::default();
        registry.register(
            "binfarm_queue_depth",
            "Steps waiting for a worker: ready (can be leased now) or queued (waiting for their dependencies)",
            queue_depth.clone(),
        );
        let steps = Family::<StateLabels, Gauge>::default();
        registry.register("binfarm_steps", "Steps by state", steps.clone());
        let requests = Family::<StateLabels, Gauge>::default();
        registry.register("binfarm_requests", "Requests by state", requests.clone());
        let workers_registered = Gauge::default();
        registry.register(
            "binfarm_workers_registered",
            "Workers with a token",
            workers_registered.clone(),
        );
        let workers_seen = Gauge::default();
        registry.register(
            "binfarm_workers_seen",
            "Workers that sent a heartbeat in the last minute",
            workers_seen.clone(),
        );
        let workers_paused = Gauge::default();
        registry.register(
            "binfarm_workers_paused",
            "Workers that get no new leases",
            workers_paused.clone(),
        );
        let build_duration: HistogramFamily<BuildLabels> =
            Family::new_with_constructor(build_histogram);
        registry.register_with_unit(
            "binfarm_build_duration",
            "Build time of completed steps as the worker measured it, by profile and result",
            Unit::Seconds,
            build_duration.clone(),
        );
        let upload_duration = transfer_histogram();
        registry.register_with_unit(
            "binfarm_upload_duration",
            "Time to receive, check, sign and store a worker's binpkg upload",
            Unit::Seconds,
            upload_duration.clone(),
        );
        let upload_bytes = Counter::default();
        registry.register_with_unit(
            "binfarm_upload_received",
            "Binpkg bytes received from workers (whole uploads that matched their sha512)",
            Unit::Bytes,
            upload_bytes.clone(),
        );
        let uploads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "binfarm_uploads",
            "Binpkg uploads by result (stored, or refused)",
            uploads.clone(),
        );
        let publish_duration: HistogramFamily<TargetLabels> =
            Family::new_with_constructor(transfer_histogram);
        registry.register_with_unit(
            "binfarm_publish_duration",
            "Time to publish a finished request's snapshot, by target (local tree, FTP mirror)",
            Unit::Seconds,
            publish_duration.clone(),
        );
        let publishes = Family::<TargetResultLabels, Counter>::default();
        registry.register(
            "binfarm_publishes",
            "Publishes of finished requests by target and result (ok, error)",
            publishes.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "binfarm_notifications",
            "Notifications of finished requests by kind (command, webhook) and result (ok, error)",
            notifications.clone(),
        );
        // Counters that exist from the start (zeros), so rates work from the first scrape;
        // families labelled by profile or FTP target appear with their first observation.
        for result in ["stored", "refused"] {
            let _ = uploads.get_or_create(&ResultLabels { result });
        }
        for result in ["ok", "error"] {
            let _ = publishes.get_or_create(&TargetResultLabels {
                target: "local".into(),
                result,
            });
        }
        for kind in ["command", "webhook"] {
            for result in ["ok", "error"] {
                let _ = notifications.get_or_create(&NotificationLabels { kind, result });
            }
        }
        let mirror = Arc::new(MirrorMetrics::default());
        registry.register_collector(Box::new(mirror::MirrorCollector(mirror.clone())));
        FarmMetrics {
            registry,
            queue_depth,
            steps,
            requests,
            workers_registered,
            workers_seen,
            workers_paused,
            build_duration,
            upload_duration,
            upload_bytes,
            uploads,
            publish_duration,
            publishes,
            notifications,
            mirror,
        }
    }

    /// Sets the gauges that come from the store (at scrape time).
    pub fn set_store_gauges(&self, gauges: &FarmGauges) {
        for (state, count) in &gauges.steps {
            let labels = StateLabels {
                state: state.as_str(),
            };
            self.steps.get_or_create(&labels).set(to_gauge(*count));
            if matches!(
                state,
                crate::store::StepState::Ready | crate::store::StepState::Queued
            ) {
                self.queue_depth
                    .get_or_create(&labels)
                    .set(to_gauge(*count));
            }
        }
        for (state, count) in &gauges.requests {
            self.requests
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(to_gauge(*count));
        }
        self.workers_registered
            .set(to_gauge(gauges.workers_registered));
        self.workers_seen.set(to_gauge(gauges.workers_seen));
        self.workers_paused.set(to_gauge(gauges.workers_paused));
    }

    /// A step completed: `succeeded` or not, after `duration` of building on the worker.
    pub fn observe_build(&self, profile: &str, succeeded: bool, duration: Duration) {
        self.build_duration
            .get_or_create(&BuildLabels {
                profile: profile.to_owned(),
                result: if succeeded { "succeeded" } else { "failed" },
            })
            .observe(duration.as_secs_f64());
    }

    /// `bytes` of an upload arrived whole (and matched the sha512 sent ahead).
    pub fn count_upload_bytes(&self, bytes: u64) {
        self.upload_bytes.inc_by(bytes);
    }

    /// An upload ended: stored (its duration is observed) or refused.
    pub fn observe_upload(&self, stored: bool, duration: Duration) {
        let result = if stored { "stored" } else { "refused" };
        self.uploads.get_or_create(&ResultLabels { result }).inc();
        if stored {
            self.upload_duration.observe(duration.as_secs_f64());
        }
    }

    /// A publish to `target` (`local`, `ftp:<host:port>`) ended after `duration`.
    pub fn observe_publish(&self, target: &str, ok: bool, duration: Duration) {
        self.publish_duration
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .observe(duration.as_secs_f64());
        self.publishes
            .get_or_create(&TargetResultLabels {
                target: target.to_owned(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// A notification of `kind` (`command`, `webhook`) went out, or failed.
    pub fn count_notification(&self, kind: &'static str, ok: bool) {
        self.notifications
            .get_or_create(&NotificationLabels {
                kind,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

fn to_gauge(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The metrics of a mirror served alone (`binfarm mirror`): its request and byte counters.
pub fn encode_mirror(metrics: &Arc<MirrorMetrics>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(mirror::MirrorCollector(metrics.clone())));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RequestState, StepState};

    #[test]
    fn exposition_has_every_family_with_its_type() {
        let metrics = FarmMetrics::new();
        metrics.set_store_gauges(&FarmGauges {
            steps: vec![(StepState::Ready, 3), (StepState::Queued, 2)],
            requests: vec![(RequestState::Running, 1)],
            workers_registered: 2,
            workers_seen: 1,
            workers_paused: 0,
        });
        metrics.observe_build("amd64", true, Duration::from_secs(42));
        metrics.count_upload_bytes(1000);
        metrics.observe_upload(true, Duration::from_millis(20));
        metrics.observe_upload(false, Duration::from_millis(1));
        metrics.observe_publish("local", true, Duration::from_millis(300));
        metrics.mirror.count(
            &axum::http::Method::GET,
            axum::http::StatusCode::NOT_MODIFIED,
        );
        let text = metrics.encode().unwrap();
        for line in [
            "# TYPE binfarm_queue_depth gauge",
            "binfarm_queue_depth{state=\"ready\"} 3",
            "binfarm_queue_depth{state=\"queued\"} 2",
            "binfarm_steps{state=\"ready\"} 3",
            "binfarm_requests{state=\"running\"} 1",
            "binfarm_workers_registered 2",
            "binfarm_workers_seen 1",
            "# TYPE binfarm_build_duration_seconds histogram",
            "binfarm_build_duration_seconds_count{profile=\"amd64\",result=\"succeeded\"} 1",
            "binfarm_build_duration_seconds_sum{profile=\"amd64\",result=\"succeeded\"} 42.0",
            "# TYPE binfarm_upload_received_bytes_total counter",
            "binfarm_upload_received_bytes_total 1000",
            "binfarm_uploads_total{result=\"stored\"} 1",
            "binfarm_uploads_total{result=\"refused\"} 1",
            "binfarm_upload_duration_seconds_count 1",
            "binfarm_publish_duration_seconds_count{target=\"local\"} 1",
            "binfarm_publishes_total{target=\"local\",result=\"ok\"} 1",
            "# TYPE binfarm_mirror_requests_total counter",
            "binfarm_mirror_requests_total{method=\"GET\",status_class=\"3xx\"} 1",
            "binfarm_mirror_sent_bytes_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn mirror_alone() {
        let metrics = Arc::new(MirrorMetrics::default());
        metrics.count(&axum::http::Method::HEAD, axum::http::StatusCode::OK);
        let text = encode_mirror(&metrics).unwrap();
        assert!(
            text.contains("binfarm_mirror_requests_total{method=\"HEAD\",status_class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(!text.contains("binfarm_steps"), "{text}");
    }
}
