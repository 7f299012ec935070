"""Quarry's own Prometheus metrics, all under the `quarry_` prefix."""

from prometheus_client import Counter, Histogram

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
DOCUMENTS = Counter(
    "quarry_documents_total", "Documents by outcome", ["outcome", "reason"]
)
CHUNKS_EMBEDDED = Counter("quarry_chunks_embedded_total", "Chunks embedded")
EMBEDDING_SECONDS = Counter(
    "quarry_embedding_seconds_total", "Seconds spent computing embeddings"
)
AUDIT_WRITE_FAILURES = Counter(
    "quarry_audit_write_failures_total", "Audit entries that could not be written"
)
SEARCH_REQUESTS = Counter("quarry_search_requests_total", "Searches run", ["via"])
SEARCH_LATENCY = Histogram(
    "quarry_search_latency_seconds",
    "Time to answer a search",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, float("inf")),
)
