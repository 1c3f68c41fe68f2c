"""Billing's own Prometheus metrics (the shared ones: quantized_runtime.metrics).

Every label is a word of the contract (an operation kind, an error reason, a
hold kind): never an account, key or request id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from quantized_runtime.metrics import LATENCY_BUCKETS

LEDGER_BATCH_OPERATIONS = Histogram(
    "quantized_billing_ledger_batch_operations",
    "Operations per Ledger batch (one stream message, one database transaction).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
LEDGER_COMMIT_SECONDS = Histogram(
    "quantized_billing_ledger_commit_duration_seconds",
    "Time one Ledger batch spent in its storage transaction, commit included.",
    buckets=LATENCY_BUCKETS)
LEDGER_OPERATIONS = Counter(
    "quantized_billing_ledger_operations",
    "Ledger operations answered, by operation and outcome (OK or the error reason).",
    ("operation", "outcome"))
HOLDS_OPEN = Gauge(
    "quantized_billing_holds_open",
    "Open holds by kind (request: an exact hold; lease: an edge's credit lease), counted each reaper round.",
    ("kind",))
HOLDS_EXPIRED = Counter(
    "quantized_billing_holds_expired",
    "Holds and leases the reaper closed because nobody settled or returned them in time.")
LATE_CHARGES = Counter(
    "quantized_billing_late_charges",
    "Charges applied to the balance because their lease could no longer take them.")


_ledger_operations: dict[tuple[str, str], Counter] = {}


def ledger_operation_answered(operation: str, outcome: str) -> None:
    child = _ledger_operations.get((operation, outcome))
    if child is None:
        child = _ledger_operations[(operation, outcome)] = LEDGER_OPERATIONS.labels(operation, outcome)
    child.inc()


def holds_open(counts: dict[str, int]) -> None:
    for kind in ("request", "lease"):
        HOLDS_OPEN.labels(kind).set(counts.get(kind, 0))
