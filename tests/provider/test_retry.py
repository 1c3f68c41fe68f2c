"""The service's own retry: bounded, 429/5xx only, inside the request deadline."""

from __future__ import annotations

import pytest

from provider_svc.retry import RequestDeadline, with_retry
from provider_svc.upstream_errors import UpstreamError, rejected, unavailable
from quantized_runtime.errors import Reason


class Script:
    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)


async def test_retryable_failures_are_retried_until_success() -> None:
    attempt = Script(unavailable("x", "429", retryable=True), unavailable("x", "503", retryable=True), "ok")
    result = await with_retry(attempt, provider="x", deadline=RequestDeadline(5, 5), retries=2,
                              backoff_seconds=0.001)
    assert (result, attempt.calls) == ("ok", 3)


async def test_retries_are_bounded() -> None:
    attempt = Script(*[unavailable("x", "429", retryable=True)] * 5)
    with pytest.raises(UpstreamError):
        await with_retry(attempt, provider="x", deadline=RequestDeadline(5, 5), retries=1, backoff_seconds=0.001)
    assert attempt.calls == 2


@pytest.mark.parametrize("error", [unavailable("x", "bad key"), rejected("x", "invalid size")])
async def test_other_failures_are_not_retried(error: UpstreamError) -> None:
    attempt = Script(error, "ok")
    with pytest.raises(UpstreamError) as caught:
        await with_retry(attempt, provider="x", deadline=RequestDeadline(5, 5), retries=3, backoff_seconds=0.001)
    assert caught.value is error and attempt.calls == 1


async def test_no_attempt_starts_once_the_deadline_is_spent() -> None:
    attempt = Script("ok")
    with pytest.raises(UpstreamError) as caught:
        await with_retry(attempt, provider="x", deadline=RequestDeadline(0.0, 5), retries=3, backoff_seconds=0)
    assert caught.value.reason == Reason.UPSTREAM_UNAVAILABLE and caught.value.message == "x: upstream timed out"
    assert attempt.calls == 0


def test_each_attempt_is_capped_by_the_upstream_timeout() -> None:
    assert RequestDeadline(None, 3).remaining() == 3
    assert RequestDeadline(1, 3).remaining() <= 1
