"""What `GET /metrics` says, in Prometheus' text format (prometheus_client, on a registry of our own).

Counters and histograms are the standard kinds; latency percentiles and images/s are computed over a
sliding window (the last ``WINDOW`` requests, the last ``RATE_WINDOW_S`` seconds) and exported as gauges,
so a plain `curl` shows p50/p99 without a Prometheus server doing the quantile maths.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

WINDOW = 2048
RATE_WINDOW_S = 10.0
QUANTILES = (0.5, 0.9, 0.99)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def percentile(values, q: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


class Metrics:
    def __init__(self, state=None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mdl_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.images = Counter("mdl_images", "Images classified.", registry=r)
        self.passes = Counter("mdl_forward_passes", "Network forward passes (one per network per batch).", registry=r)
        self.batch_size = Histogram("mdl_batch_size", "Images per dynamic batch.", buckets=BATCH_BUCKETS, registry=r)
        self.batch_domains = Histogram("mdl_batch_domains", "Distinct domains per dynamic batch.",
                                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=r)
        self.latency = Histogram("mdl_request_latency_seconds", "POST /v1/predict latency.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self._lock = threading.Lock()
        self._latencies: deque = deque(maxlen=WINDOW)
        self._done: deque = deque()  # (time, images) of finished batches within RATE_WINDOW_S
        self._state = state  # callable -> dict of gauges (served domains, refused versions, queue depth)
        r.register(_WindowCollector(self))

    def observe_request(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if seconds is not None:
            self.latency.observe(seconds)
            with self._lock:
                self._latencies.append(seconds)

    def observe_batch(self, images: int, domains: int, passes: int) -> None:
        self.images.inc(images)
        self.passes.inc(passes)
        self.batch_size.observe(images)
        self.batch_domains.observe(domains)
        now = time.monotonic()
        with self._lock:
            self._done.append((now, images))
            while self._done and self._done[0][0] < now - RATE_WINDOW_S:
                self._done.popleft()

    def window(self) -> dict:
        now = time.monotonic()
        with self._lock:
            lat = list(self._latencies)
            while self._done and self._done[0][0] < now - RATE_WINDOW_S:
                self._done.popleft()
            recent = sum(n for _, n in self._done)
        return {"latency": {q: percentile(lat, q) for q in QUANTILES} if lat else {},
                "images_per_s": recent / RATE_WINDOW_S}

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _WindowCollector:
    def __init__(self, metrics: Metrics):
        self.m = metrics

    def collect(self):
        w = self.m.window()
        lat = GaugeMetricFamily("mdl_request_latency_window_seconds",
                                f"POST /v1/predict latency percentiles over the last {WINDOW} requests.",
                                labels=["quantile"])
        for q, v in w["latency"].items():
            lat.add_metric([f"{q:g}"], v)
        yield lat
        yield GaugeMetricFamily("mdl_images_per_second", f"Images classified per second over the last "
                                f"{RATE_WINDOW_S:g} s.", value=w["images_per_s"])
        if self.m._state is not None:
            for name, (doc, value) in self.m._state().items():
                yield GaugeMetricFamily(name, doc, value=value)
