"""Deploying billing or provider_svc under load: a successor starts on the same port,
the old one stops as on SIGTERM, and the callers notice nothing. Every request is
answered 200 and charged exactly once; no credits stay held."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow

OPENING_CREDITS = 100_000_000
CALLERS = 6
GRACE_SECONDS = 10.0
PROGRESS_TIMEOUT_SECONDS = 60.0
BODY = {"model": "sandbox-image-1", "prompt": "a hedgehog", "size": "64x64"}


class Load:
    """CALLERS threads posting one request after another until stopped."""

    def __init__(self, stack: Stack, api_key: str) -> None:
        self._stack = stack
        self._api_key = api_key
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.statuses: list[int] = []
        self.credits_used = 0
        self.failures: list[str] = []

    def _caller(self) -> None:
        with httpx.Client(base_url=self._stack.base_url, timeout=60,
                          headers={"Authorization": f"Bearer {self._api_key}"}) as client:
            while not self._stop.is_set():
                reply = client.post("/images/generations", json=BODY)
                with self._lock:
                    self.statuses.append(reply.status_code)
                    if reply.status_code == 200:
                        self.credits_used += reply.json()["usage"]["credits_used"]
                    else:
                        self.failures.append(reply.text)

    def count(self) -> int:
        with self._lock:
            return len(self.statuses)

    def during(self, action: Callable[[], None]) -> None:
        """Run `action` while the callers post, with requests before and after it."""
        with ThreadPoolExecutor(CALLERS) as pool:
            callers = [pool.submit(self._caller) for _ in range(CALLERS)]
            try:
                self._wait_for(self.count() + 3 * CALLERS)
                action()
                self._wait_for(self.count() + 3 * CALLERS)
            finally:
                self._stop.set()
            for caller in callers:
                caller.result()

    def _wait_for(self, requests: int) -> None:
        give_up = time.monotonic() + PROGRESS_TIMEOUT_SECONDS
        while self.count() < requests and not self.failures:
            assert time.monotonic() < give_up, "the callers stopped making progress"
            time.sleep(0.01)


@pytest.mark.parametrize("roll", ["billing", "provider"])
def test_a_rolling_restart_under_load_fails_no_request_and_charges_each_once(stack: Stack, roll: str) -> None:
    account = stack.create_account(OPENING_CREDITS)
    load = Load(stack, account.api_key)

    if roll == "billing":
        load.during(lambda: stack.roll_billing(GRACE_SECONDS))
    else:
        load.during(lambda: stack.roll_provider(GRACE_SECONDS))

    assert load.failures == []
    assert set(load.statuses) == {200} and len(load.statuses) >= 6 * CALLERS
    shown = stack.account(account.account_id)
    # Credits granted minus charged: the edge's credit lease may still hold some aside.
    shown_spendable = shown.account.balance_micro_credits + shown.account.held_micro_credits
    assert shown_spendable == OPENING_CREDITS - load.credits_used
