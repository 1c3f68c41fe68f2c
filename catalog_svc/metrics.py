"""The catalog's own Prometheus metrics (the shared ones: quantized_runtime.metrics).

No label carries a caller's input: a resolution is counted by its outcome only,
since an unknown model name is whatever the caller sent.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ROUTE_RESOLUTIONS = Counter(
    "quantized_catalog_route_resolutions",
    "ResolveRoute answers, by outcome (OK or the error reason).",
    ("outcome",))
SNAPSHOT_REFRESHES = Counter(
    "quantized_catalog_snapshot_refreshes",
    "Checks of the stored catalog revision, by result: rebuilt (the in-memory snapshot was "
    "replaced), unchanged, or failed (the previous snapshot is still served).",
    ("result",))
SNAPSHOT_REVISION = Gauge(
    "quantized_catalog_snapshot_revision", "Revision of the catalog snapshot this replica serves.")

RESOLVED = ROUTE_RESOLUTIONS.labels("OK")
REBUILT = SNAPSHOT_REFRESHES.labels("rebuilt")
UNCHANGED = SNAPSHOT_REFRESHES.labels("unchanged")
FAILED = SNAPSHOT_REFRESHES.labels("failed")


def resolution_refused(reason: str) -> None:
    ROUTE_RESOLUTIONS.labels(reason).inc()
