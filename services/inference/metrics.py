"""The inference service's Prometheus metrics, built on a registry it is given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Request latency buckets (seconds): loopback MQTT round trips are ~0.3-3 ms.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
#: Absolute forecast error buckets, in the field's unit: sized for temperatures (a good
#: forecaster is off by a few hundredths of a degree, a fire by several degrees).
ABS_ERROR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Relative forecast error buckets (|error| / |forecast|); 0.08 is the default alert rule.
RELATIVE_ERROR_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.08, 0.1, 0.25,
                          0.5, 1.0)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "edgeloop_inference_requests_total",
            "Prediction requests by model, transport (mqtt, http, aalto) and outcome "
            "(ok or an error code)", ["model", "transport", "outcome"], registry=r)
        self.predictions = Counter(
            "edgeloop_inference_predictions_total",
            "Rows predicted (a batched request counts each row)", ["model"], registry=r)
        self.latency = Histogram(
            "edgeloop_inference_request_duration_seconds",
            "Time from receiving a request to its reply being handed to the transport",
            ["model", "transport"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "edgeloop_inference_requests_in_flight",
            "Requests accepted and not yet answered", registry=r)
        self.queue_depth = Gauge(
            "edgeloop_inference_queue_depth", "Requests waiting in the work queue", registry=r)
        self.batch_rows = Histogram(
            "edgeloop_inference_batch_rows", "Rows per runtime invocation (dynamic batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 512, 4096), registry=r)
        self.model_info = Gauge(
            "edgeloop_model_info", "The model version serving under each name (value 1)",
            ["name", "version", "runtime"], registry=r)
        self.model_loads = Counter(
            "edgeloop_model_loads_total", "Models verified, tested and swapped in",
            ["name"], registry=r)
        self.model_load_failures = Counter(
            "edgeloop_model_load_failures_total",
            "Model updates refused, by reason (signature, sha256, bundle, runtime, "
            "test_vectors, download, ...)", ["name", "reason"], registry=r)
        self.alerts = Counter(
            "edgeloop_alerts_total", "Alerts raised by kind", ["kind"], registry=r)
        self.alerts_active = Gauge(
            "edgeloop_alerts_active", "Alerts currently raised, by kind", ["kind"], registry=r)
        self.events = Counter(
            "edgeloop_events_total", "Classification events by label", ["label"], registry=r)
        # No device label: error per model and field is what says whether a model still
        # fits, and a per-device histogram would multiply the series by the fleet size.
        self.forecast_abs_error = Histogram(
            "edgeloop_forecast_abs_error",
            "Live forecast error |reading - forecast|, in the field's unit",
            ["model", "field"], buckets=ABS_ERROR_BUCKETS, registry=r)
        self.forecast_relative_error = Histogram(
            "edgeloop_forecast_relative_error",
            "Live forecast error relative to the forecast, |reading - forecast| / |forecast|",
            ["model", "field"], buckets=RELATIVE_ERROR_BUCKETS, registry=r)
        self.readings = Counter(
            "edgeloop_stream_readings_total", "Telemetry readings processed", registry=r)
        self.readings_dropped = Counter(
            "edgeloop_stream_readings_dropped_total",
            "Telemetry readings not processed, by reason", ["reason"], registry=r)
        self.stream_lag = Gauge(
            "edgeloop_stream_lag_seconds",
            "Age of the last processed reading when it was processed", registry=r)
        self.quality = Counter(
            "edgeloop_data_quality_issues_total",
            "Data-quality findings against the model card's training ranges, by kind",
            ["kind"], registry=r)
        self.forward_bytes = Counter(
            "edgeloop_forward_bytes_total",
            "Bytes of telemetry seen (direction=raw) and sent upstream (direction=forwarded)",
            ["direction"], registry=r)
        self.forward_messages = Counter(
            "edgeloop_forward_messages_total", "Messages sent upstream by kind", ["kind"],
            registry=r)
        self.mqtt_connected = Gauge(
            "edgeloop_inference_mqtt_connected", "1 while connected to the broker", registry=r)
        self.replies_failed = Counter(
            "edgeloop_inference_replies_failed_total",
            "Replies that could not be handed to the broker", registry=r)
