"""Prometheus metrics of the server: requests, latency, batch sizes and times, texts labelled, queue length."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServerMetrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sentiment_lab_http_requests",
            "HTTP requests by path and status",
            ["path", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sentiment_lab_http_request_duration_seconds",
            "HTTP request latency by path",
            ["path"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "sentiment_lab_batch_size",
            "texts per forward pass of the micro-batcher",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "sentiment_lab_batch_duration_seconds",
            "seconds per forward pass of the micro-batcher",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.texts = Counter("sentiment_lab_texts_predicted", "texts labelled", registry=self.registry)
        self.queue = Gauge("sentiment_lab_queue_texts", "texts waiting or in the running batch", registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one forward pass (the batcher's on_batch hook)."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
