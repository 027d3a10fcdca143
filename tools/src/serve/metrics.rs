//! `/metrics`: Prometheus counters, gauges and histograms of the server (the `prometheus` crate's text format).

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// By endpoint and HTTP status.
    pub requests: IntCounterVec,
    pub prompt_tokens: IntCounter,
    pub generated_tokens: IntCounter,
    /// Sequences waiting for a row of the batch.
    pub queue_depth: IntGauge,
    /// Sequences in the batch.
    pub running: IntGauge,
    /// Requests admitted and not finished (queued, running, or being answered).
    pub in_flight: IntGauge,
    pub ttft: Histogram,
    pub inter_token: Histogram,
    /// Sources translated per grouped `translate` call.
    pub translate_batch: Histogram,
}

/// Latency buckets in seconds: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("qkv_requests_total", "HTTP requests answered, by endpoint and status"),
            &["endpoint", "status"],
        )?;
        let prompt_tokens = IntCounter::new("qkv_prompt_tokens_total", "Prompt tokens of admitted requests")?;
        let generated_tokens = IntCounter::new("qkv_generated_tokens_total", "Tokens generated")?;
        let queue_depth = IntGauge::new("qkv_queue_depth", "Sequences waiting for a row of the batch")?;
        let running = IntGauge::new(
            "qkv_running_sequences",
            "Sequences in the batch (prefilling or decoding)",
        )?;
        let in_flight = IntGauge::new("qkv_requests_in_flight", "Requests admitted and not finished")?;
        let hist = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        };
        let ttft = hist(
            "qkv_time_to_first_token_seconds",
            "From a request's arrival to its first generated token",
            LATENCY_BUCKETS,
        )?;
        let inter_token = hist(
            "qkv_inter_token_latency_seconds",
            "Between consecutive generated tokens of one request",
            LATENCY_BUCKETS,
        )?;
        let translate_batch = hist(
            "qkv_translate_batch_sources",
            "Sources per grouped translate call",
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(prompt_tokens.clone()))?;
        registry.register(Box::new(generated_tokens.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(running.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(ttft.clone()))?;
        registry.register(Box::new(inter_token.clone()))?;
        registry.register(Box::new(translate_batch.clone()))?;
        Ok(Self {
            registry,
            requests,
            prompt_tokens,
            generated_tokens,
            queue_depth,
            running,
            in_flight,
            ttft,
            inter_token,
            translate_batch,
        })
    }

    /// Count one answered request.
    pub fn answered(&self, endpoint: &str, status: u16) {
        self.requests.with_label_values(&[endpoint, &status.to_string()]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a metric family the encoder refuses is left out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
