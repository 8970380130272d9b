//! Reads the mirror's atomic counters into the exposition at scrape time.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::mirror::MirrorMetrics;

#[derive(Debug)]
pub(super) struct MirrorCollector(pub(super) Arc<MirrorMetrics>);

impl Collector for MirrorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "binfarm_mirror_requests",
            "Mirror responses by request method and status class.",
            None,
            MetricType::Counter,
        )?;
        for cell in self.0.requests() {
            let labels = [("method", cell.method), ("status_class", cell.status_class)];
            ConstCounter::new(cell.count).encode(family.encode_family(&labels)?)?;
        }
        let bytes = ConstCounter::new(self.0.bytes_sent());
        let metric = encoder.encode_descriptor(
            "binfarm_mirror_sent",
            "Mirror response body bytes streamed to clients.",
            Some(&Unit::Bytes),
            bytes.metric_type(),
        )?;
        bytes.encode(metric)
    }
}
