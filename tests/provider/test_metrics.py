"""provider_svc's metrics and the upstream time it reports to the edge."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.provider.conftest import Harness

OPENAI_GPT_IMAGE = {"provider": "openai", "family": "gpt-image"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def upstream_counts() -> dict[str, float]:
    return {
        "ok": sample("quantized_provider_upstream_requests_total", **OPENAI_GPT_IMAGE, status="OK"),
        "failed": sample("quantized_provider_upstream_requests_total", **OPENAI_GPT_IMAGE,
                         status="UPSTREAM_UNAVAILABLE"),
        "retries": sample("quantized_provider_upstream_retries_total", **OPENAI_GPT_IMAGE),
        "attempts_timed": sample("quantized_provider_upstream_request_duration_seconds_count", **OPENAI_GPT_IMAGE),
        "bytes": sample("quantized_provider_upstream_received_image_bytes_total", **OPENAI_GPT_IMAGE),
        "calls": sample("quantized_provider_generate_calls_total", outcome="OK"),
        "attempt_seconds": sample("quantized_provider_upstream_request_duration_seconds_sum", **OPENAI_GPT_IMAGE),
    }


async def test_a_retried_call_counts_each_attempt_and_reports_its_upstream_time(harness: Harness) -> None:
    harness.openai.then(harness.openai.error("server_error"))
    before = upstream_counts()

    response = await harness.generate("gpt-image-1")

    after = upstream_counts()
    counted = {name: after[name] - before[name] for name in before}
    attempt_seconds = counted.pop("attempt_seconds")
    assert counted == {"ok": 1, "failed": 1, "retries": 1, "attempts_timed": 2,
                       "bytes": sum(len(image.image_data) for image in response.images), "calls": 1}
    # The edge is told the whole upstream time: both attempts and the pause between them.
    assert response.upstream_seconds >= attempt_seconds > 0
