"""How `quantized dev` paces restarts and counts crashes, without starting processes."""

from __future__ import annotations

import signal
from pathlib import Path

from quantized_cli.dev_stack import (
    FIRST_RESTART_DELAY_SECONDS,
    MAX_RESTART_DELAY_SECONDS,
    STABLE_UPTIME_SECONDS,
    Child,
    describe_exit,
)


def _child() -> Child:
    return Child("provider", "127.0.0.1:50053", "127.0.0.1:9463", Path("provider.log"))


def test_the_delay_doubles_up_to_its_cap():
    child = _child()
    delays = [child.next_restart_delay(now=1.0) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert delays[0] == FIRST_RESTART_DELAY_SECONDS and delays[-1] == MAX_RESTART_DELAY_SECONDS


def test_a_child_that_stayed_healthy_is_restarted_after_the_first_delay_again():
    child = _child()
    for _ in range(4):
        child.next_restart_delay(now=0.0)
    child.healthy_since = 100.0
    assert child.next_restart_delay(now=100.0 + STABLE_UPTIME_SECONDS - 1) == 5.0
    assert child.next_restart_delay(now=100.0 + STABLE_UPTIME_SECONDS) == FIRST_RESTART_DELAY_SECONDS


def test_only_crashes_within_the_window_count():
    child = _child()
    assert [child.record_crash(now, window_seconds=60) for now in (0, 10, 59)] == [1, 2, 3]
    assert child.record_crash(60, window_seconds=60) == 3  # the crash at 0 has left the window
    assert child.record_crash(200, window_seconds=60) == 1


def test_exits_are_described_by_status_or_signal():
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-40) == "killed by signal 40"
