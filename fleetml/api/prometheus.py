"""Prometheus metrics of the API, collected by a pure ASGI middleware.

A pure ASGI middleware (rather than Starlette's ``BaseHTTPMiddleware``) adds no task or memory
stream per request and does not buffer streamed responses. Requests are labelled by the route
*template* (``/v1/accounts/{account_id}``), never the raw path, so the number of series stays
bounded whatever ids clients send.

Each app gets its own ``CollectorRegistry`` so several apps (tests) can live in one process.
With several uvicorn workers each process reports its own numbers.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """The collectors the API updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fleetml_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fleetml_http_request_duration_seconds",
            "Time to answer HTTP requests (until the last body byte), by route and status.",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.samples_ingested = Counter(
            "fleetml_samples_ingested",
            "Metric samples durably stored through the API.",
            registry=self.registry,
        )
        self.values_ingested = Counter(
            "fleetml_metric_values_ingested",
            "Non-null metric values durably stored through the API.",
            registry=self.registry,
        )
        self.events_ingested = Counter(
            "fleetml_events_ingested",
            "Events durably stored through the API.",
            registry=self.registry,
        )
        self.rejected_batches = Counter(
            "fleetml_rejected_batches",
            "Ingest batches refused whole (invalid items, too large, not JSON), by endpoint.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.db_errors = Counter(
            "fleetml_database_errors",
            "Requests that failed on a database error, by error class.",
            ["error"],
            registry=self.registry,
        )


class WriterCollector:
    """Exports the group-commit writer's totals (mean group size = batches / commits)."""

    def __init__(self, writer) -> None:
        self.writer = writer

    def describe(self):
        return []

    def collect(self):
        commits = CounterMetricFamily(
            "fleetml_ingest_commits", "Ingest transactions committed by the group-commit writer."
        )
        commits.add_metric([], self.writer.commits)
        batches = CounterMetricFamily(
            "fleetml_ingest_committed_batches", "Ingest batches carried by those transactions."
        )
        batches.add_metric([], self.writer.batches)
        yield commits
        yield batches


class PrometheusMiddleware:
    """Counts and times every HTTP request by route template and status."""

    def __init__(self, app, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            labels = (scope.get("method", ""), template, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
