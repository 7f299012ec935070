"""Quarry's own Prometheus metrics, all under the `quarry_` prefix.

Every process on a host writes these into the prometheus_client multiprocess
directory (PROMETHEUS_MULTIPROC_DIR, set by the settings before this module
can be imported); `webui.metrics` adds them up for one scrape. Gauges are
`livesum`, so a process that dies stops counting once it is marked dead.
The queue gauges are read from the database at scrape time (`webui.metrics`).
README.md ("Metrics") lists every metric with its labels.
"""

import threading

from prometheus_client import Counter, Gauge, Histogram

OPERATIONS_STARTED = Counter(
    "quarry_operations_started_total", "Operations claimed by a worker", ["type"]
)
OPERATIONS_FINISHED = Counter(
    "quarry_operations_finished_total", "Operations ended", ["type", "outcome"]
)
OPERATION_DURATION = Histogram(
    "quarry_operation_duration_seconds",
    "Time from claim to end",
    ["type"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, float("inf")),
)
OPERATIONS_ACTIVE = Gauge(
    "quarry_operations_active",
    "Operations a worker process on this host is running now",
    ["type"],
    multiprocess_mode="livesum",
)
DOCUMENTS = Counter(
    "quarry_documents_total", "Documents by outcome", ["outcome", "reason"]
)
CHUNKS_EMBEDDED = Counter("quarry_chunks_embedded_total", "Chunks embedded")
EMBEDDING_SECONDS = Counter(
    "quarry_embedding_seconds_total", "Seconds spent computing embeddings"
)
EVENTS_RELAYED = Counter(
    "quarry_events_relayed_total",
    "Operation events sent to WebSocket clients",
    ["event"],
)
SOCKETS_CONNECTED = Gauge(
    "quarry_sockets_connected",
    "Signed-in WebSocket clients connected to live events",
    multiprocess_mode="livesum",
)
AUDIT_WRITE_FAILURES = Counter(
    "quarry_audit_write_failures_total", "Audit entries that could not be written"
)
PROGRESS_WRITE_FAILURES = Counter(
    "quarry_progress_write_failures_total",
    "Progress writes of running operations that could not be recorded",
)
SEARCH_REQUESTS = Counter("quarry_search_requests_total", "Searches run", ["via"])
SEARCH_LATENCY = Histogram(
    "quarry_search_latency_seconds",
    "Time to answer a search",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, float("inf")),
)

# Operations this process claimed and has not ended. An operation may be ended
# by another process (the sweeper, a user's cancel), which must not lower this
# process's share of the gauge.
_running_here: set[str] = set()
_running_lock = threading.Lock()


def operation_claimed(operation_id, type: str) -> None:
    """Count an operation as running in this process until `operation_ended`."""
    with _running_lock:
        if str(operation_id) in _running_here:
            return
        _running_here.add(str(operation_id))
    OPERATIONS_ACTIVE.labels(type).inc()


def operation_ended(operation_id, type: str) -> None:
    """Stop counting an operation, if this process was the one running it."""
    with _running_lock:
        if str(operation_id) not in _running_here:
            return
        _running_here.discard(str(operation_id))
    OPERATIONS_ACTIVE.labels(type).dec()
