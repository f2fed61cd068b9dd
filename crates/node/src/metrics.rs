//! What a node tells Prometheus (`GET /metrics` on the admin listener, `crate::admin`), in the text format,
//! under Prometheus' naming conventions: base units (seconds, bytes), `_total` for counters, labels only
//! from bounded sets (stream names, rule ids, method names known from the proto, status codes, problem
//! kinds). No label ever carries a child id, a person, or any field of an event.
//!
//! Counters and histograms move where the work happens (each call through [`CallLayer`], each AUDIT write
//! through the audit writer's observer, each applied batch, each breach and signal). Gauges of state (lag,
//! quarantine, checkpoints, clock, sled) are read at scrape time by [`Metrics::render`], from what the
//! node already holds and one NATS listing, so a scrape shows the state as it is then.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tonic::codegen::http;
use tracing::Instrument;

/// The header that carries a call's request id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// Every family a node exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// One scrape at a time sets the gauges of state and encodes them.
    render_lock: std::sync::Mutex<()>,
    /// gRPC paths (`/package.Service/Method`) of the node's own API: any other path is counted as `other`,
    /// so a caller cannot mint label values.
    methods: HashSet<String>,
    pub calls: IntCounterVec,
    pub call_seconds: HistogramVec,
    pub calls_shed: IntCounter,
    pub watchers: IntGauge,
    pub projected: IntCounterVec,
    pub apply_seconds: HistogramVec,
    pub audit_write_seconds: Histogram,
    pub audit_records_per_write: Histogram,
    pub audit_write_failures: IntCounter,
    pub audit_records: IntCounter,
    pub breaches: IntCounterVec,
    pub signals: IntCounterVec,
    pub reloads: IntCounterVec,
    pub rebuilding: IntGauge,
    lag_events: IntGaugeVec,
    lag_seconds: GaugeVec,
    applied_sequence: IntGaugeVec,
    quarantined: IntGaugeVec,
    checkpoint_sequence: IntGaugeVec,
    checkpoint_age: GaugeVec,
    clock_offset: Gauge,
    sled_bytes: IntGauge,
    ready: IntGauge,
    build_info: IntGaugeVec,
}

/// What the node's build and configuration are (the `halcyon_build_info` labels).
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: String,
    pub policy_version: String,
    /// A digest of the configuration's fingerprint (every node of a deployment should show the same).
    pub fingerprint: String,
}

impl BuildInfo {
    /// The build info of a node with this policy version and configuration fingerprint (by part).
    pub fn new(policy_version: &str, fingerprint: &BTreeMap<String, String>) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            policy_version: policy_version.to_owned(),
            fingerprint: crate::peers::fingerprint_digest(fingerprint, &[]),
        }
    }
}

/// Buckets for call and write latencies, seconds: 250 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new(build: &BuildInfo) -> Self {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let fgauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            reg(
                &registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                    .expect("valid metric"),
            )
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            reg(
                &registry,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
                    .expect("valid metric"),
            )
        };
        let metrics = Self {
            render_lock: std::sync::Mutex::new(()),
            methods: api_methods(),
            calls: counter_vec(
                "halcyon_grpc_calls_total",
                "gRPC calls answered, by method and status code.",
                &["method", "code"],
            ),
            call_seconds: histogram_vec(
                "halcyon_grpc_call_duration_seconds",
                "Time from a call's arrival to its response headers (the whole answer, for unary calls), by method.",
                &["method"],
                LATENCY_BUCKETS,
            ),
            calls_shed: reg(
                &registry,
                IntCounter::new(
                    "halcyon_grpc_calls_shed_total",
                    "Calls refused with RESOURCE_EXHAUSTED at the concurrency limit.",
                )
                .expect("valid metric"),
            ),
            watchers: reg(
                &registry,
                IntGauge::new("halcyon_watchers", "Watch streams open now.").expect("valid metric"),
            ),
            projected: counter_vec(
                "halcyon_projected_messages_total",
                "Stream messages applied to the read models, by stream.",
                &["stream"],
            ),
            apply_seconds: histogram_vec(
                "halcyon_projection_apply_duration_seconds",
                "Time to apply one batch of a stream's messages to the read models, by stream.",
                &["stream"],
                LATENCY_BUCKETS,
            ),
            audit_write_seconds: histogram(
                "halcyon_audit_write_duration_seconds",
                "Time from an AUDIT write's start to its acknowledgement (or to giving up).",
                LATENCY_BUCKETS,
            ),
            audit_records_per_write: histogram(
                "halcyon_audit_records_per_write",
                "Access records carried by one AUDIT write (group commit).",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            audit_write_failures: reg(
                &registry,
                IntCounter::new(
                    "halcyon_audit_write_failures_total",
                    "AUDIT writes not acknowledged in time: every call they covered failed closed.",
                )
                .expect("valid metric"),
            ),
            audit_records: reg(
                &registry,
                IntCounter::new(
                    "halcyon_audit_records_total",
                    "Access records acknowledged by the AUDIT stream.",
                )
                .expect("valid metric"),
            ),
            breaches: counter_vec(
                "halcyon_deadline_breaches_total",
                "Statutory deadline breaches this node recorded, by timescale rule.",
                &["rule"],
            ),
            signals: counter_vec(
                "halcyon_signals_total",
                "Multi-agency signals derived on this node (fired or outcome recorded), by signal rule.",
                &["rule"],
            ),
            reloads: counter_vec(
                "halcyon_reloads_total",
                "Reloads of the TLS material and the tokens file (SIGHUP or a file changed), by outcome (ok, failed).",
                &["outcome"],
            ),
            rebuilding: reg(
                &registry,
                IntGauge::new(
                    "halcyon_read_models_rebuilding",
                    "1 while the node rebuilds its read models online (answering from the old ones), else 0.",
                )
                .expect("valid metric"),
            ),
            lag_events: gauge_vec(
                "halcyon_stream_lag_events",
                "Messages in the stream that this node has not applied yet.",
                &["stream"],
            ),
            lag_seconds: fgauge_vec(
                "halcyon_stream_lag_seconds",
                "How long the oldest message this node has not applied has been in the stream (0 when caught up).",
                &["stream"],
            ),
            applied_sequence: gauge_vec(
                "halcyon_stream_applied_sequence",
                "The last stream sequence applied to this node's read models.",
                &["stream"],
            ),
            quarantined: gauge_vec(
                "halcyon_quarantined_events",
                "Messages set aside as invalid (kept in the stream, not projected), by stream and problem kind.",
                &["stream", "reason"],
            ),
            checkpoint_sequence: gauge_vec(
                "halcyon_checkpoint_last_sequence",
                "The last stream sequence covered by a signed checkpoint.",
                &["stream"],
            ),
            checkpoint_age: fgauge_vec(
                "halcyon_checkpoint_age_seconds",
                "Time since the stream's last signed checkpoint was made.",
                &["stream"],
            ),
            clock_offset: reg(
                &registry,
                Gauge::new(
                    "halcyon_clock_offset_seconds",
                    "This node's clock minus NATS time at its last heartbeat.",
                )
                .expect("valid metric"),
            ),
            sled_bytes: reg(
                &registry,
                IntGauge::new("halcyon_sled_size_bytes", "The read models' size on disk.")
                    .expect("valid metric"),
            ),
            ready: reg(
                &registry,
                IntGauge::new(
                    "halcyon_ready",
                    "1 while the node is ready (/readyz answers 200), else 0.",
                )
                .expect("valid metric"),
            ),
            build_info: gauge_vec(
                "halcyon_build_info",
                "Always 1: the node's version, policy version and configuration fingerprint.",
                &["version", "policy_version", "fingerprint"],
            ),
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[&build.version, &build.policy_version, &build.fingerprint])
            .set(1);
        metrics
    }

    /// Starts the series a fresh node has not moved yet at 0, so that they are exported from the first
    /// scrape and a first increase shows as one (`increase`/`delta` need a sample before it): calls (OK) and
    /// their latency for every method of the API, breaches and signals for every configured rule.
    pub fn start_at_zero<'a>(
        &self,
        timescale_rules: impl IntoIterator<Item = &'a str>,
        signal_rules: impl IntoIterator<Item = &'a str>,
    ) {
        let methods: std::collections::BTreeSet<String> =
            self.methods.iter().map(|p| self.method_label(p)).collect();
        for method in &methods {
            self.calls.with_label_values(&[method.as_str(), "OK"]);
            self.call_seconds.with_label_values(&[method.as_str()]);
        }
        for outcome in ["ok", "failed"] {
            self.reloads.with_label_values(&[outcome]);
        }
        for rule in timescale_rules {
            self.breaches.with_label_values(&[rule]);
        }
        for rule in signal_rules {
            self.signals.with_label_values(&[rule]);
        }
    }

    /// The method label for a gRPC path: `Service/Method` for the node's own API, `other` for anything else.
    pub fn method_label(&self, path: &str) -> String {
        if self.methods.contains(path) {
            // `/package.Service/Method` → `Service/Method`; the FHIR path is its own label.
            let path = path.trim_start_matches('/');
            path.rsplit_once('.')
                .map_or(path, |(_, service_method)| service_method)
                .to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// An AUDIT write, as the audit writer reports it.
    pub fn audit_written(&self, report: &halcyon_bus::audit::WriteReport) {
        self.audit_write_seconds.observe(report.latency.as_secs_f64());
        self.audit_records_per_write.observe(report.records as f64);
        if report.written {
            self.audit_records.inc_by(report.records as u64);
        } else {
            self.audit_write_failures.inc();
        }
    }

    /// One applied batch.
    pub fn applied(&self, stream: &str, messages: usize, took: Duration) {
        self.projected
            .with_label_values(&[stream])
            .inc_by(messages as u64);
        self.apply_seconds
            .with_label_values(&[stream])
            .observe(took.as_secs_f64());
    }

    /// Counts a watch stream while the guard lives.
    pub fn watching(self: &Arc<Self>) -> Watching {
        self.watchers.inc();
        Watching(self.clone())
    }

    /// The text exposition of every family, after setting the gauges of state from `state`.
    pub fn render(&self, state: &Sampled) -> String {
        let _one_at_a_time = self.render_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.lag_events.reset();
        self.lag_seconds.reset();
        self.applied_sequence.reset();
        for (stream, s) in &state.streams {
            self.lag_events.with_label_values(&[stream]).set(clamp(s.behind));
            self.lag_seconds.with_label_values(&[stream]).set(s.behind_secs);
            self.applied_sequence
                .with_label_values(&[stream])
                .set(clamp(s.applied));
        }
        self.quarantined.reset();
        // Every stream with every kind, at 0 where none: a first quarantined message shows as growth.
        for stream in state.streams.keys() {
            for reason in halcyon_schema::Problem::KINDS {
                self.quarantined
                    .with_label_values(&[stream.as_str(), reason])
                    .set(0);
            }
        }
        for ((stream, reason), n) in &state.quarantined {
            self.quarantined
                .with_label_values(&[stream, reason])
                .set(clamp(*n));
        }
        self.checkpoint_sequence.reset();
        self.checkpoint_age.reset();
        for (stream, (sequence, age)) in &state.checkpoints {
            self.checkpoint_sequence
                .with_label_values(&[stream])
                .set(clamp(*sequence));
            self.checkpoint_age.with_label_values(&[stream]).set(*age);
        }
        self.clock_offset.set(state.clock_offset_secs);
        self.sled_bytes.set(clamp(state.sled_bytes));
        self.ready.set(i64::from(state.ready));
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# metrics could not be encoded: {e}\n"))
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The state a scrape shows (read by `crate::admin` from the node).
#[derive(Debug, Clone, Default)]
pub struct Sampled {
    pub streams: BTreeMap<String, StreamSample>,
    /// Quarantined messages by (stream, problem kind).
    pub quarantined: BTreeMap<(String, String), u64>,
    /// Last checkpointed sequence and its age in seconds, by stream.
    pub checkpoints: BTreeMap<String, (u64, f64)>,
    pub clock_offset_secs: f64,
    pub sled_bytes: u64,
    pub ready: bool,
}

/// One stream as a scrape sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamSample {
    pub applied: u64,
    pub behind: u64,
    pub behind_secs: f64,
}

/// A watch stream counted in `halcyon_watchers` until dropped.
#[derive(Debug)]
pub struct Watching(Arc<Metrics>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watchers.dec();
    }
}

/// Every `/package.Service/Method` path the node's API declares (from the embedded descriptor set).
fn api_methods() -> HashSet<String> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(halcyon_grpc::pb::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set is valid");
    let mut paths = HashSet::from([crate::fhir::FLAG_PATH.to_owned()]);
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                paths.insert(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths
}

/// A request id for a call: the caller's `x-request-id` when it is a plain token (1–64 of letters, digits
/// and `._:-`), so a calling system can join its own logs to ours; otherwise a new UUIDv7.
pub fn request_id(headers: &http::HeaderMap) -> http::HeaderValue {
    let given = headers.get(REQUEST_ID).filter(|v| {
        let b = v.as_bytes();
        (1..=64).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
    });
    match given {
        Some(v) => v.clone(),
        None => http::HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .expect("a UUID is a valid header value"),
    }
}

/// Around every gRPC call: gives it a request id (in its metadata, its log lines' span, its access record
/// and the response headers), counts it by method and status code, and times it.
#[derive(Debug, Clone)]
pub struct CallLayer {
    pub metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for CallLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Calls<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Calls<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let id = request_id(request.headers());
        request.headers_mut().insert(REQUEST_ID, id.clone());
        let method = self.metrics.method_label(request.uri().path());
        let span = tracing::info_span!(
            "call",
            request_id = id.to_str().unwrap_or_default(),
            method = %method
        );
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let started = Instant::now();
        Box::pin(
            async move {
                let result = inner.call(request).await;
                if let Ok(response) = &result {
                    // An error answer is headers only and carries its status there; a successful unary
                    // answer carries `grpc-status: 0` in its trailers.
                    // A FHIR answer names the gRPC code it stands for in its extensions.
                    let code = response
                        .extensions()
                        .get::<tonic::Code>()
                        .copied()
                        .unwrap_or_else(|| {
                            response
                                .headers()
                                .get("grpc-status")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<i32>().ok())
                                .map_or(tonic::Code::Ok, tonic::Code::from_i32)
                        });
                    metrics
                        .calls
                        .with_label_values(&[&method, code_label(code)])
                        .inc();
                    metrics
                        .call_seconds
                        .with_label_values(&[&method])
                        .observe(started.elapsed().as_secs_f64());
                }
                result.map(|mut response| {
                    response.headers_mut().insert(REQUEST_ID, id);
                    response
                })
            }
            .instrument(span),
        )
    }
}

/// A status code as gRPC's own libraries name it in metrics (`OK`, `PermissionDenied`, …).
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_apis_own_methods_become_labels() {
        let m = Metrics::new(&BuildInfo::new("p-1", &BTreeMap::new()));
        assert_eq!(
            m.method_label("/halcyon.v1.QueryService/GetChildView"),
            "QueryService/GetChildView"
        );
        assert_eq!(m.method_label("/halcyon.v1.QueryService/Nope"), "other");
        assert_eq!(m.method_label("/fhir/R4/Flag"), "fhir/R4/Flag");
        assert_eq!(m.method_label("/fhir/R4/Patient"), "other");
        assert_eq!(m.method_label("/anything/at/all"), "other");
    }

    #[test]
    fn a_callers_request_id_is_kept_only_when_it_is_a_plain_token() {
        let mut h = http::HeaderMap::new();
        h.insert(REQUEST_ID, http::HeaderValue::from_static("case-sys:42.a_b-c"));
        assert_eq!(request_id(&h), "case-sys:42.a_b-c");
        h.insert(REQUEST_ID, http::HeaderValue::from_static("has space"));
        let made = request_id(&h);
        assert!(uuid::Uuid::parse_str(made.to_str().unwrap()).is_ok(), "{made:?}");
        h.insert(REQUEST_ID, http::HeaderValue::from_str(&"x".repeat(65)).unwrap());
        assert_ne!(request_id(&h), "x".repeat(65));
    }
}
