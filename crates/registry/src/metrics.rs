//! Prometheus counters for `/metrics` (text exposition format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// The registry's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
    /// Requests being served now.
    pub in_flight: AtomicI64,
    /// Response body bytes announced by Content-Length.
    pub bytes_sent: AtomicU64,
    /// Upload bytes received.
    pub bytes_received: AtomicU64,
    /// Blobs committed from uploads.
    pub blobs_committed: AtomicU64,
    /// GC runs finished.
    pub gc_runs: AtomicU64,
    /// Blobs removed by GC.
    pub gc_blobs_deleted: AtomicU64,
    /// Manifests removed by GC (untagged policy).
    pub gc_manifests_deleted: AtomicU64,
    /// Upload sessions removed by GC.
    pub gc_uploads_deleted: AtomicU64,
    /// Upload sessions removed after `limits.upload_idle_timeout_secs`.
    pub uploads_expired: AtomicU64,
}

impl Metrics {
    /// Counts one finished request.
    pub fn record(&self, method: &str, status: u16, seconds: f64) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry((method.to_string(), status)).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += seconds;
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP berth_registry_requests_total HTTP requests served.\n# TYPE berth_registry_requests_total counter\n");
        for ((method, code), (n, _)) in m.iter() {
            let _ = writeln!(
                out,
                "berth_registry_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP berth_registry_request_seconds_sum Time spent serving requests.\n# TYPE berth_registry_request_seconds_sum counter\n");
        for ((method, code), (_, s)) in m.iter() {
            let _ = writeln!(
                out,
                "berth_registry_request_seconds_sum{{method=\"{method}\",code=\"{code}\"}} {s}"
            );
        }
        drop(m);
        let gauges: [(&str, &str, i64); 1] = [(
            "berth_registry_requests_in_flight",
            "Requests being served.",
            self.in_flight.load(Ordering::Relaxed),
        )];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let counters = [
            (
                "berth_registry_bytes_sent_total",
                "Response body bytes sent.",
                &self.bytes_sent,
            ),
            (
                "berth_registry_bytes_received_total",
                "Upload bytes received.",
                &self.bytes_received,
            ),
            (
                "berth_registry_blobs_committed_total",
                "Blobs committed from uploads.",
                &self.blobs_committed,
            ),
            (
                "berth_registry_gc_runs_total",
                "Garbage collection runs.",
                &self.gc_runs,
            ),
            (
                "berth_registry_gc_blobs_deleted_total",
                "Blobs deleted by GC.",
                &self.gc_blobs_deleted,
            ),
            (
                "berth_registry_gc_manifests_deleted_total",
                "Untagged manifests deleted by GC.",
                &self.gc_manifests_deleted,
            ),
            (
                "berth_registry_gc_uploads_deleted_total",
                "Stale uploads deleted by GC.",
                &self.gc_uploads_deleted,
            ),
            (
                "berth_registry_uploads_expired_total",
                "Abandoned upload sessions removed.",
                &self.uploads_expired,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}
